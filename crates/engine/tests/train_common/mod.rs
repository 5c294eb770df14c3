//! Shared helpers of the training tests: fixtures, datasets written in the test,
//! and the mlx-lm reference script.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const TRAIN_TEXT: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be or not to be, that is the question.",
    "All that glitters is not gold.",
    "Hello world, this is a tiny dataset for training.",
    "The rain in Spain stays mainly in the plain.",
    "Early to bed and early to rise.",
    "Knowledge is power, and power is knowledge of the world.",
    "Time flies like an arrow; fruit flies like a banana.",
    "She sells sea shells by the sea shore.",
    "Practice makes perfect when the practice is good.",
    "An apple a day keeps the doctor away.",
];

pub const VALID_TEXT: &[&str] = &[
    "The lazy dog sleeps in the sun.",
    "A single step starts the journey.",
    "Gold is not all that glitters.",
    "The world says hello to the fox.",
];

/// Which BLAS MLX calls (`openblas`, `reference`, …). Calling it also keeps the
/// shim's reference to OpenBLAS in the test binary: without one, the linker's
/// `--as-needed` drops libopenblas and MLX falls back to the wheel's reference BLAS
/// (~20× slower sgemm), as `ldd` on a test binary shows.
pub fn blas_kind() -> &'static str {
    mlx::system::blas().kind
}

fn skip(reason: &str) -> Option<PathBuf> {
    test_support::require("train", Err(reason.to_string()))
}

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny float model of the parity fixtures, or `None` (skip) when absent.
pub fn fixture_model(name: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("MLX_HUB_PARITY_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => workspace().join("target/parity-fixtures"),
    };
    let m = dir.join(name);
    if m.join("config.json").is_file() {
        Some(m)
    } else {
        skip(&format!(
            "fixture model {} not found (python3 scripts/parity/make_fixtures.py target/parity-fixtures)",
            m.display()
        ))
    }
}

/// `Some(())` when python3 with mlx_lm is available.
pub fn python_ok() -> Option<()> {
    let ok = Command::new("python3")
        .args(["-c", "import mlx_lm"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if ok {
        Some(())
    } else {
        skip("python3 with mlx_lm is not available").map(|_| ())
    }
}

pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// A text dataset folder (train + valid) in `dir`.
pub fn text_dataset(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let rows = |t: &[&str]| -> Vec<serde_json::Value> {
        t.iter().map(|s| serde_json::json!({ "text": s })).collect()
    };
    write_jsonl(&dir.join("train.jsonl"), &rows(TRAIN_TEXT));
    write_jsonl(&dir.join("valid.jsonl"), &rows(VALID_TEXT));
}

/// Runs `scripts/parity/lora_reference.py` with `args`; returns its stdout.
pub fn reference(args: &[&str]) -> String {
    let script = workspace().join("scripts/parity/lora_reference.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "reference script failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
