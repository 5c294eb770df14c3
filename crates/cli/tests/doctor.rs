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
    // physical memory and the device's name, from MLX's device info (and /proc or sysctl)
    assert!(r["host"]["memory_bytes"].as_u64().unwrap() > 1 << 28, "{r}");
    assert!(r["host"]["device_name"].is_string(), "{r}");
    assert_eq!(r["host"]["gpu_available"], r["gpu_available"]);
    assert_eq!(r["host"]["gpu"].is_object(), r["gpu_available"] == true);
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

/// `--device` (and `MLX_HUB_DEVICE`) choose MLX's device; `cpu` always exists, `gpu`
/// only where MLX has one (else a clear error, not a silent CPU run).
#[test]
fn device_is_a_setting() {
    let doctor = |args: &[&str], env: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mlx-hub"));
        c.args(args).args(["doctor", "--json"]);
        match env {
            Some(v) => c.env("MLX_HUB_DEVICE", v),
            None => c.env_remove("MLX_HUB_DEVICE"),
        };
        c.output().unwrap()
    };
    let json = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let auto = json(&doctor(&[], None));
    let want = if auto["gpu_available"] == true {
        "gpu"
    } else {
        "cpu"
    };
    assert_eq!(
        auto["default_device"], want,
        "auto = the GPU when MLX has one"
    );
    assert_eq!(
        json(&doctor(&["--device", "cpu"], None))["default_device"],
        "cpu"
    );
    assert_eq!(json(&doctor(&[], Some("cpu")))["default_device"], "cpu");
    // the flag wins over the environment
    assert_eq!(
        json(&doctor(&["--device", "auto"], Some("cpu")))["default_device"],
        want
    );
    let gpu = doctor(&["--device", "gpu"], None);
    if auto["gpu_available"] == true {
        assert_eq!(json(&gpu)["default_device"], "gpu");
    } else {
        assert!(!gpu.status.success());
        let err = String::from_utf8_lossy(&gpu.stderr);
        assert!(err.contains("no GPU backend"), "{err}");
    }
    let bad = doctor(&[], Some("tpu"));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("MLX_HUB_DEVICE"));
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
