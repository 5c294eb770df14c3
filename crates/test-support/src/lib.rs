//! What the workspace's tests share: [`require`] (skip with a printed reason
//! locally, fail under `CI`), fixture finders ([`fixtures`]), test databases
//! on SQLite and PostgreSQL ([`db`], [`store_test!`]), a real MLflow server
//! ([`mlflow`]).

#![forbid(unsafe_code)]

pub mod db;
pub mod fixtures;
pub mod mlflow;

pub use db::{TestDb, postgres, sqlite};
pub use fixtures::{
    copy_dir, free_port, parity_fixtures, smollm2_gguf, tiny_model, workspace_root, write_text_rows,
};

/// True under CI (`CI` set): a missing prerequisite is then a failure.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some()
}

/// `Some(value)` if the prerequisite is there; otherwise `None` after printing
/// `SKIPPED {test}: {why}`, or a panic when `CI` is set (CI must run every
/// test).
pub fn require<T>(test: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(v) => Some(v),
        Err(why) => {
            if in_ci() {
                panic!("{test}: {why}, and CI is set");
            }
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// `let x = require!(finder);` inside a test: the value, or return from the
/// test (skipped with a reason; a failure under `CI`). The test's name is the
/// enclosing function's.
#[macro_export]
macro_rules! require {
    ($found:expr) => {
        match $crate::require(
            {
                fn f() {}
                let name = std::any::type_name_of_val(&f);
                name.strip_suffix("::f").unwrap_or(name)
            },
            $found,
        ) {
            Some(v) => v,
            None => return Default::default(),
        }
    };
}

/// Declares `$name::sqlite` and `$name::postgres` tests running
/// `async fn $name(db: TestDb)`.
#[macro_export]
macro_rules! store_test {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name($crate::db::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                if let Some(db) = $crate::db::postgres(stringify!($name)).await {
                    super::$name(db).await;
                }
            }
        }
    };
}
