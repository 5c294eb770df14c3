//! What these HTTP tests share: the `test-support` crate's databases, fixtures
//! and MLflow server, and [`http::TestHub`] (the real router driven in-process).

#![allow(dead_code, unused_imports)]

pub mod http;

pub use test_support::db::*;
pub use test_support::mlflow;
