//! The binary starts without LD_LIBRARY_PATH and reports what MLX sees.
use std::process::Command;

#[test]
fn doctor_json_reports_mlx_blas_and_memory() {
    let out = Command::new(env!("CARGO_BIN_EXE_mlx-hub"))
        .args(["doctor", "--json"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mlx_version"], r["mlx_pinned"]);
    assert!(["cpu", "gpu"].contains(&r["default_device"].as_str().unwrap()));
    let blas = r["blas"].as_str().unwrap();
    assert!(["openblas", "accelerate", "reference", "other"].contains(&blas));
    if r["openblas_linked"] == true {
        assert_eq!(blas, "openblas");
        assert!(r["blas_threads"].as_i64().unwrap() >= 1);
    }
    assert!(r["memory_limit_bytes"].as_u64().unwrap() > 0);
    let version = Command::new(env!("CARGO_BIN_EXE_mlx-hub"))
        .arg("--version")
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(
        line.contains(&format!("MLX {}", r["mlx_version"].as_str().unwrap())),
        "{line}"
    );
}

#[test]
fn blas_benchmark_runs_and_compares() {
    let out = Command::new(env!("CARGO_BIN_EXE_mlx-hub"))
        .args([
            "bench",
            "--blas",
            "--sizes",
            "64,128",
            "--repeats",
            "1",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|row| row["linked_gflops"].as_f64().unwrap() > 0.0)
    );
    if r["stock_blas"].is_string() {
        assert_eq!(
            r["stock_blas"], "reference",
            "the stock run binds the wheel's BLAS"
        );
        assert!(rows.iter().all(|row| row["ratio"].as_f64().unwrap() > 0.0));
    }
}
