//! `scripts/start.sh --prometheus` with the built binary: the hub answers,
//! the Prometheus it started scrapes it (a query for the hub's build info
//! answers), and SIGTERM to the script stops both.

mod common;

use common::free_port;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn installed(cmd: &str) -> bool {
    let ok = Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let found = if ok {
        Ok(())
    } else {
        Err(format!(
            "{cmd} is not installed (scripts/setup-test-deps.sh installs it)"
        ))
    };
    test_support::require(cmd, found).is_some()
}

/// `curl -fsS URL` as JSON, or None while it does not answer.
fn get_json(url: &str) -> Option<Value> {
    let out = Command::new("curl").args(["-fsS", url]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Sends SIGTERM to the script on drop (test failures included): it stops
/// what it started.
struct Script(Child);

impl Script {
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            self.terminate();
            let _ = self.0.wait();
        }
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn start_script_runs_the_hub_and_prometheus() {
    if !installed("prometheus") || !installed("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, prom_port) = (free_port(), free_port());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/start.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .args(["--prometheus", "--bin", env!("CARGO_BIN_EXE_mlx-hub")])
        .args(["--port", &port.to_string()])
        .args(["--prometheus-port", &prom_port.to_string()])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for var in [
        "MLX_HUB_API_TOKEN",
        "MLX_HUB_API_TOKEN_FILE",
        "MLX_HUB_HOST",
        "MLX_HUB_DATABASE_URL",
        "MLX_HUB_START_MLFLOW",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        cmd.env_remove(var);
    }
    let mut script = Script(cmd.spawn().expect("start scripts/start.sh"));

    let t0 = Instant::now();
    let health = loop {
        if let Some(h) = get_json(&format!("http://127.0.0.1:{port}/health")) {
            break h;
        }
        assert!(
            script.0.try_wait().unwrap().is_none(),
            "start.sh exited early"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the hub never answered"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health["status"], "ok", "{health}");
    let query = format!(
        "http://127.0.0.1:{prom_port}/api/v1/query?query=mlx_hub_build_info%7Bjob%3D%22mlx-hub%22%7D"
    );
    let value = loop {
        if let Some(v) = get_json(&query).and_then(|b| {
            b["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_owned)
        }) {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "prometheus never had the hub's build info"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(value, "1");
    eprintln!(
        "hub and prometheus up and scraping after {:.1?}",
        t0.elapsed()
    );

    script.terminate();
    let t1 = Instant::now();
    let status = loop {
        if let Some(s) = script.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t1.elapsed() < Duration::from_secs(30),
            "start.sh did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
    assert!(!port_open(port), "the hub still listens");
    assert!(!port_open(prom_port), "prometheus still listens");
}
