//! Test databases: a fresh SQLite file, or a fresh PostgreSQL schema.
//!
//! PostgreSQL: `HUB_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test gets its own schema
//! (selected with `search_path` in the connection options), dropped at the
//! end, so tests run in parallel. When the server is unreachable the test is
//! skipped with a printed reason, unless `CI` is set: then it fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::{Connection, Executor};
use store::{ManualClock, Store, StoreOptions, sqlite_url};

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Start of the manual clock in every test (2025-01-01T00:00:00Z).
pub const T0: i64 = 1_735_689_600_000;

pub struct TestDb {
    pub store: Store,
    pub clock: Arc<ManualClock>,
    /// URL of this test's database (for a second store or raw connections).
    pub url: String,
    pub kind: &'static str,
    _guard: Guard,
}

enum Guard {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Postgres { admin_url, schema } = self {
            let (url, schema) = (admin_url.clone(), schema.clone());
            // async clean-up from a sync Drop: its own thread and runtime
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    sqlx::any::install_default_drivers();
                    if let Ok(mut c) = sqlx::AnyConnection::connect(&url).await {
                        let _ = c
                            .execute(sqlx::AssertSqlSafe(format!(
                                "DROP SCHEMA IF EXISTS {schema} CASCADE"
                            )))
                            .await;
                        let _ = c.close().await;
                    }
                });
            })
            .join();
        }
    }
}

impl TestDb {
    /// Another store on the same database (another "process").
    pub async fn second_store(&self) -> Store {
        let store = Store::connect_with(&self.url, options(self.clock.clone()))
            .await
            .expect("connect second store");
        store.migrate().await.expect("migrate second store");
        store
    }

    /// A raw connection to the same database, bypassing the store.
    pub async fn raw(&self) -> sqlx::AnyConnection {
        let mut c = sqlx::AnyConnection::connect(&self.url)
            .await
            .expect("raw connect");
        if self.kind == "sqlite" {
            c.execute("PRAGMA foreign_keys = ON").await.unwrap();
        }
        c
    }
}

fn options(clock: Arc<ManualClock>) -> StoreOptions {
    StoreOptions {
        max_connections: 10,
        clock,
        ..StoreOptions::default()
    }
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = sqlite_url(&dir.path().join("hub.db"));
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::connect_with(&url, options(clock.clone()))
        .await
        .expect("open sqlite");
    store.migrate().await.expect("migrate sqlite");
    TestDb {
        store,
        clock,
        url,
        kind: "sqlite",
        _guard: Guard::Sqlite(dir),
    }
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A store on a fresh PostgreSQL schema, or `None` (skipped) when no server
/// answers and `CI` is unset.
pub async fn postgres(test: &str) -> Option<TestDb> {
    sqlx::any::install_default_drivers();
    let admin_url =
        std::env::var("HUB_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string());
    let mut admin = match tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::AnyConnection::connect(&admin_url),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return skip(test, &admin_url, &e.to_string()),
        Err(_) => return skip(test, &admin_url, "connection timed out"),
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let schema = format!(
        "hubtest_{}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst),
        nanos
    );
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .await
        .expect("create schema");
    admin.close().await.ok();
    let sep = if admin_url.contains('?') { '&' } else { '?' };
    let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
    let guard = Guard::Postgres { admin_url, schema };
    let clock = Arc::new(ManualClock::new(T0));
    let store = Store::connect_with(&url, options(clock.clone()))
        .await
        .expect("connect postgres");
    store.migrate().await.expect("migrate postgres");
    Some(TestDb {
        store,
        clock,
        url,
        kind: "postgres",
        _guard: guard,
    })
}

fn skip(test: &str, url: &str, why: &str) -> Option<TestDb> {
    crate::require(
        &format!("{test} on PostgreSQL"),
        Err(format!("{url} is unreachable ({why})")),
    )
}

/// Creates model `name` with one `ready` mlx version holding a one-byte
/// placeholder file, through the store alone: for tests that need the
/// records (job validation, registry reads, tags), not real weights.
pub async fn seed_ready_version(store: &Store, name: &str) -> (store::Model, store::ModelVersion) {
    use store::{NewModel, NewVersion, VersionFile};
    let model = store
        .create_model(&NewModel {
            name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let version = store
        .create_version(
            model.id,
            &NewVersion {
                format: "mlx".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    store
        .add_version_files(
            version.id,
            &[VersionFile {
                path: "model.safetensors".into(),
                size_bytes: 1,
                sha256: "a".repeat(64),
            }],
        )
        .await
        .unwrap();
    let version = store.mark_version_ready(version.id).await.unwrap();
    (model, version)
}
