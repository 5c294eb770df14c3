//! Shared by the tests that drive the built `mlx-hub` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The `mlx-hub` binary cargo built for this test run.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mlx-hub")
}

/// The tiny llama made by mlx-lm (`scripts/setup-test-deps.sh` writes the
/// parity fixtures). Missing: `None` with a printed reason, or a failure
/// under `CI`.
pub fn tiny_model() -> Option<PathBuf> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/parity-fixtures/llama-tied-f32");
    if dir.join("config.json").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing and CI is set",
        dir.display()
    );
    eprintln!("SKIPPED: {} is missing", dir.display());
    None
}

/// A loopback port free at the time of the call.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
