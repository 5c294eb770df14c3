//! Shared by the tests that drive the built `mlx-hub` binary (fixtures and
//! ports come from the `test-support` crate).

#![allow(dead_code)]

use std::path::PathBuf;

#[allow(unused_imports)]
pub use test_support::free_port;

/// The `mlx-hub` binary cargo built for this test run.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mlx-hub")
}

/// The tiny llama made by mlx-lm (`scripts/setup-test-deps.sh` writes the
/// parity fixtures). Missing: `None` with a printed reason, or a failure
/// under `CI`.
pub fn tiny_model() -> Option<PathBuf> {
    test_support::require("tiny model", test_support::tiny_model())
}
