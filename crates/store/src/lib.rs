//! The hub's metadata store: one schema on SQLite (default) or PostgreSQL,
//! through sqlx's `Any` driver.
//!
//! Conventions: integer columns are 64-bit, timestamps are unix milliseconds
//! (`*_ms`), JSON is stored as TEXT. Every time the store writes comes from its
//! [`Clock`], so tests can step time (`ManualClock`). Writes that need several
//! statements run in one transaction (`BEGIN IMMEDIATE` on SQLite, so two
//! writers never dead-lock on a lock upgrade).

#![forbid(unsafe_code)]

mod clock;
mod datasets;
mod error;
mod jobs;
mod mlflow;
mod models;
mod records;
mod runs;
mod versions;
mod workers;

pub use clock::{Clock, ManualClock, SystemClock};
pub use datasets::{Dataset, NewDataset};
pub use error::{Entity, StoreError, StoreResult, database_unreachable};
pub use jobs::{Job, JobFilter, JobKind, JobState, LeaseInfo, NewJob, ReapOutcome, ReapedJob};
pub use mlflow::{OutboxEntry, OutboxKind, OutboxStatus, UnsyncedMetric};
pub use models::{Model, ModelFilter, ModelUpdate, NewModel};
pub use records::{ArtifactRecord, Tier};
pub use runs::{Metric, MetricPoint, NewRun, Run, RunStatus};
pub use versions::{
    ADAPTER_FORMAT, Lineage, ModelVersion, NewVersion, VersionAlias, VersionFile, VersionRef,
    VersionStatus, VersionUpdate, check_relative_path,
};
pub use workers::{DeviceKind, JobRequirements, WorkerCapabilities, WorkerInfo};

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyPool, Connection, Executor, SqlSafeStr, Transaction};

pub(crate) use error::{Violation, violation};
pub use models::check_model_name;
pub use versions::check_alias;

/// Counts of what the registry holds ([`Store::inventory`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub models: i64,
    /// (status, versions), for the statuses that have any.
    pub versions_by_status: Vec<(String, i64)>,
    /// Distinct dataset names.
    pub datasets: i64,
    pub dataset_versions: i64,
}

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Picks the backend from a database URL (`sqlite:` or `postgres:`/`postgresql:`).
    pub fn from_url(url: &str) -> StoreResult<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::invalid(
                "database_url",
                "must start with sqlite: or postgres://",
            ))
        }
    }
}

/// Options for [`Store::connect_with`].
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Pool size (default 8).
    pub max_connections: u32,
    /// How long to wait for a pooled connection (default 30 s).
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the write lock (default 30 s).
    pub sqlite_busy_timeout: Duration,
    /// Source of time for every timestamp and lease (default: the system clock).
    pub clock: Arc<dyn Clock>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
            sqlite_busy_timeout: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }
}

/// The metadata store. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// The URL of a SQLite database file (created when missing).
pub fn sqlite_url(path: &Path) -> String {
    let mut out = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            ' ' => out.push_str("%20"),
            c => out.push(c),
        }
    }
    out.push_str("?mode=rwc");
    out
}

impl Store {
    /// Connects with default options. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str) -> StoreResult<Store> {
        Self::connect_with(url, StoreOptions::default()).await
    }

    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path, options: StoreOptions) -> StoreResult<Store> {
        Self::connect_with(&sqlite_url(path), options).await
    }

    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`). SQLite is
    /// switched to WAL once, and every connection gets `foreign_keys=ON` and a
    /// busy timeout.
    pub async fn connect_with(url: &str, options: StoreOptions) -> StoreResult<Store> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let connect_options: AnyConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::invalid("database_url", e.to_string()))?;
        let busy_ms = options.sqlite_busy_timeout.as_millis();
        if backend == Backend::Sqlite {
            // journal_mode is persistent and needs an exclusive lock: set it
            // once, on its own connection, before the pool opens more. SQLite can
            // answer "database is locked" at once (without its busy handler) when
            // several processes open a fresh file together: retry, bounded.
            let mut attempt = 1u64;
            loop {
                match set_wal(&connect_options, busy_ms).await {
                    Ok(()) => break,
                    Err(e) if attempt < 10 => {
                        tracing::debug!(error = %e, attempt, "enabling WAL failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(AssertSql(format!(
                            "PRAGMA foreign_keys = ON; PRAGMA busy_timeout = {busy_ms};"
                        )))
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect_options)
            .await?;
        Ok(Store {
            pool,
            backend,
            clock: options.clock,
        })
    }

    /// Applies every embedded migration not yet applied (idempotent; safe to
    /// call at every start). On PostgreSQL concurrent callers are serialised
    /// by an advisory lock.
    pub async fn migrate(&self) -> StoreResult<()> {
        let migrator = migrator(self.backend);
        // SQLite has no migration lock: when several processes migrate a fresh
        // file at once, a loser fails ("table exists", "database is locked")
        // while a winner commits. Trying again converges once the winner is done;
        // the attempts are bounded so a real error still surfaces.
        let attempts = if self.backend == Backend::Sqlite {
            10
        } else {
            1
        };
        let mut attempt = 1;
        loop {
            match migrator.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < attempts => {
                    tracing::debug!(error = %e, attempt, "migration failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The versions of the embedded migrations, in order.
    pub fn migration_versions() -> Vec<i64> {
        migrator(Backend::Sqlite)
            .iter()
            .map(|m| m.version)
            .collect()
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The underlying pool (for health checks and tests).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// True when the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// What the registry holds, for `/metrics`.
    pub async fn inventory(&self) -> StoreResult<Inventory> {
        let models: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM models")
            .fetch_one(&self.pool)
            .await?;
        let versions_by_status: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM model_versions GROUP BY status")
                .fetch_all(&self.pool)
                .await?;
        let (datasets, dataset_versions): (i64, i64) =
            sqlx::query_as("SELECT COUNT(DISTINCT name), COUNT(*) FROM datasets")
                .fetch_one(&self.pool)
                .await?;
        Ok(Inventory {
            models,
            versions_by_status,
            datasets,
            dataset_versions,
        })
    }

    /// The current time of the store's clock, in unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite).
    pub(crate) async fn begin_write(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }
}

/// The embedded migrations of `backend`. Both folders carry the same versions.
fn migrator(backend: Backend) -> Migrator {
    let files: &[(i64, &str, &'static str)] = match backend {
        Backend::Sqlite => &[
            (
                1,
                "init",
                include_str!("../migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "mlflow outbox",
                include_str!("../migrations/sqlite/0002_mlflow_outbox.sql"),
            ),
            (
                3,
                "registration owners",
                include_str!("../migrations/sqlite/0003_registration_owners.sql"),
            ),
            (
                4,
                "workers",
                include_str!("../migrations/sqlite/0004_workers.sql"),
            ),
        ],
        Backend::Postgres => &[
            (
                1,
                "init",
                include_str!("../migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "mlflow outbox",
                include_str!("../migrations/postgres/0002_mlflow_outbox.sql"),
            ),
            (
                3,
                "registration owners",
                include_str!("../migrations/postgres/0003_registration_owners.sql"),
            ),
            (
                4,
                "workers",
                include_str!("../migrations/postgres/0004_workers.sql"),
            ),
        ],
    };
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// A dynamically built SQL string the code vouches for (no user input is ever
/// spliced into SQL: values always go through binds).
pub(crate) struct AssertSql(pub String);

impl SqlSafeStr for AssertSql {
    fn into_sql_str(self) -> sqlx::SqlStr {
        sqlx::AssertSqlSafe(self.0).into_sql_str()
    }
}

pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("serialising plain data to JSON cannot fail")
}

pub(crate) fn from_json<T: DeserializeOwned>(
    entity: &'static str,
    field: &'static str,
    text: &str,
) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        entity,
        field,
        message: e.to_string(),
    })
}

/// Checks a name-like field: non-empty, at most `max` bytes, printable,
/// no leading/trailing space.
pub(crate) fn check_name(field: &'static str, value: &str, max: usize) -> StoreResult<()> {
    if value.is_empty() {
        return Err(StoreError::invalid(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(StoreError::invalid(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    if value.trim() != value {
        return Err(StoreError::invalid(
            field,
            "must not start or end with whitespace",
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(StoreError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

pub(crate) fn check_tags(tags: &[String]) -> StoreResult<()> {
    for t in tags {
        check_name("tags", t, 128)?;
    }
    Ok(())
}

/// Sorted, deduplicated tags.
pub(crate) fn normalise_tags(tags: &[String]) -> Vec<String> {
    let mut v = tags.to_vec();
    v.sort();
    v.dedup();
    v
}

pub(crate) fn check_sha256(field: &'static str, sha: &str) -> StoreResult<()> {
    if sha.len() == 64
        && sha
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(StoreError::invalid(
            field,
            "must be 64 lowercase hexadecimal digits",
        ))
    }
}

/// Switches a SQLite database to WAL on a connection of its own.
async fn set_wal(options: &AnyConnectOptions, busy_ms: u128) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::AnyConnection::connect_with(options).await?;
    conn.execute(AssertSql(format!("PRAGMA busy_timeout = {busy_ms}")))
        .await?;
    let mode: (String,) = sqlx::query_as("PRAGMA journal_mode = WAL")
        .fetch_one(&mut conn)
        .await?;
    if !mode.0.eq_ignore_ascii_case("wal") && !mode.0.eq_ignore_ascii_case("memory") {
        tracing::warn!(mode = %mode.0, "SQLite refused WAL journal mode");
    }
    conn.close().await
}
