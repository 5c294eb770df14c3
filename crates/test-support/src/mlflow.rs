//! A real `mlflow server` (PyPI `mlflow`, see scripts/requirements-test.txt)
//! on a free port with a SQLite backend store, killed when dropped.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct MlflowServer {
    pub uri: String,
    pub port: u16,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for MlflowServer {
    /// `mlflow server` starts uvicorn and job consumers as children: kill
    /// its whole process group.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the `mlflow` command exists; when not, prints why the test is
/// skipped (or panics under `CI`).
pub fn mlflow_available(test: &str) -> bool {
    let ok = Command::new("mlflow")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let why = "no `mlflow` command (pip install -r scripts/requirements-test.txt)";
    crate::require(test, if ok { Ok(()) } else { Err(why.to_string()) }).is_some()
}

impl MlflowServer {
    /// Starts `mlflow server` on `port` and waits until it answers.
    pub async fn start(port: u16) -> MlflowServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_in(port, dir.path()).await;
        server._dir = Some(dir);
        server
    }

    /// Starts `mlflow server` on `port` with its backend store and artifacts
    /// in `dir` (kept: a restart in the same folder finds the same data).
    pub async fn start_in(port: u16, dir: &std::path::Path) -> MlflowServer {
        let db = dir.join("mlflow.db");
        let child = Command::new("mlflow")
            .args(["server", "--host", "127.0.0.1", "--workers", "1"])
            .arg("--port")
            .arg(port.to_string())
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", db.display()))
            .arg("--default-artifact-root")
            .arg(dir.join("artifacts"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // no background job runner: nothing the tests need, and its
            // consumers outlive a killed server
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .process_group(0)
            .spawn()
            .expect("spawn mlflow server");
        let server = MlflowServer {
            uri: format!("http://127.0.0.1:{port}"),
            port,
            child,
            _dir: None,
        };
        let http = reqwest::Client::new();
        let t = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/health", server.uri)).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(90),
                "mlflow server did not answer on port {port} within 90 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("mlflow server up on port {port} in {:?}", t.elapsed());
        server
    }

    /// GET `<uri>/api/2.0/mlflow/<endpoint>`.
    pub async fn get(&self, endpoint: &str, query: &[(&str, &str)]) -> Value {
        let r = reqwest::Client::new()
            .get(format!("{}/api/2.0/mlflow/{endpoint}", self.uri))
            .query(query)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{endpoint}: {status} {v}");
        v
    }

    /// POST `<uri>/api/2.0/mlflow/<endpoint>`.
    pub async fn post(&self, endpoint: &str, body: Value) -> Value {
        let r = reqwest::Client::new()
            .post(format!("{}/api/2.0/mlflow/{endpoint}", self.uri))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{endpoint}: {status} {v}");
        v
    }
}
