//! PostgreSQL restarts while the hub runs. The test starts its own PostgreSQL
//! (`initdb` of `/usr/lib/postgresql/*/bin` in a temp folder, run as the
//! `postgres` OS user when we are root, on a free port) — never the shared
//! server other tests use — and a real hub on it (HTTP on loopback, the
//! in-process worker). With a model registered and a LoRA job running, it
//! stops PostgreSQL (`pg_ctl stop -m fast`) and starts it again:
//!
//! - requests during the outage answer 503 `database_unavailable` with
//!   `Retry-After` within the pool's acquire timeout (no 500, no hang);
//! - after the restart the hub reconnects by itself (sqlx pool);
//! - nothing is lost: the rows written before are there, the job finishes,
//!   and every metric the job reported during the outage is recorded.
//!
//! Skipped (with a printed reason) without `initdb`, or failed under `CI`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::server::{ServeOptions, WorkerOptions};
use common::http::{copy_dir, tiny_model};
use hub::store::StoreOptions;
use hub::{Hub, HubConfig};
use serde_json::{Value, json};

/// The newest `/usr/lib/postgresql/<major>/bin`, or None (skip; fail under CI).
fn pg_bin(test: &str) -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    test_support::require(
        test,
        found
            .pop()
            .map(|(_, b)| b)
            .ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb".to_string()),
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL instance of our own, stopped when dropped.
struct OwnPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

impl OwnPostgres {
    fn cmd(&self, tool: &str) -> Command {
        let path = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .cmd(tool)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn init(bin: PathBuf) -> OwnPostgres {
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        // the postgres user must reach its data folder
        Command::new("chmod")
            .arg("755")
            .arg(dir.path())
            .status()
            .unwrap();
        let data = dir.path().join("pg");
        std::fs::create_dir(&data).unwrap();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&data)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown {}", data.display());
        }
        let pg = OwnPostgres {
            bin,
            port: test_support::free_port(),
            data,
            as_postgres,
            _dir: dir,
        };
        let data = pg.data.to_string_lossy().to_string();
        pg.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        pg
    }

    fn start(&self) {
        let data = self.data.to_string_lossy().to_string();
        let log = self.data.join("server.log").to_string_lossy().to_string();
        let opts = format!(
            "-p {} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start",
            ],
        );
    }

    fn stop(&self) {
        let data = self.data.to_string_lossy().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        let _ = self
            .cmd("pg_ctl")
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

async fn call(http: &reqwest::Client, method: &str, url: &str, body: Option<Value>) -> Answer {
    let t = Instant::now();
    let mut req = http.request(method.parse().unwrap(), url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the hub answers");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
        took: t.elapsed(),
    }
}

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
const ITERS: i64 = 300;
const REPORT_EVERY: i64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restart_while_the_hub_runs() {
    let test = "postgres_restart";
    let Some(model) = tiny_model(test) else {
        return;
    };
    let Some(bin) = pg_bin(test) else {
        return;
    };
    let t0 = Instant::now();
    let pg = OwnPostgres::init(bin);
    pg.start();

    let dir = tempfile::tempdir().unwrap();
    let mut config = HubConfig::with_data_dir(dir.path().join("data"));
    config.database_url = pg.url();
    let hub = Hub::open_with(
        config,
        StoreOptions {
            acquire_timeout: ACQUIRE_TIMEOUT,
            ..StoreOptions::default()
        },
    )
    .await
    .expect("open the hub on our PostgreSQL");
    let import = hub.import_root().unwrap();
    copy_dir(&model, &import.join("tiny"));
    std::fs::create_dir_all(import.join("text")).unwrap();
    test_support::write_text_rows(&import.join("text/train.jsonl"), 16);
    test_support::write_text_rows(&import.join("text/valid.jsonl"), 4);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        worker: Some(WorkerOptions {
            id: "pg-restart-worker".into(),
            lease: Duration::from_secs(15),
            poll_interval: Duration::from_millis(200),
            ..WorkerOptions::default()
        }),
    };
    let server = tokio::spawn(api::server::serve_on_with(
        hub,
        listener,
        options,
        async move {
            let _ = stop_rx.await;
        },
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = |p: &str| format!("{base}{p}");

    // work before the restart
    for (path, body) in [
        ("/api/models", json!({"name": "tiny"})),
        ("/api/models/tiny/versions", json!({"path": "tiny"})),
        ("/api/datasets", json!({"name": "text", "path": "text"})),
    ] {
        let a = call(&http, "POST", &url(path), Some(body)).await;
        assert_eq!(a.status, 201, "{path}: {}", a.body);
    }
    let a = call(
        &http,
        "POST",
        &url("/api/jobs"),
        Some(
            json!({"base_model": "tiny", "dataset": "text", "max_attempts": 1,
                    "config": {"num_layers": -1, "batch_size": 2, "iters": ITERS,
                               "steps_per_report": REPORT_EVERY, "steps_per_eval": 100000,
                               "val_batches": 1, "max_seq_length": 32, "seed": 5}}),
        ),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let job_id = a.body["id"].as_i64().unwrap();
    // the job runs and has reported
    let t = Instant::now();
    loop {
        let a = call(&http, "GET", &url(&format!("/api/jobs/{job_id}")), None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        if a.body["state"] == "running" && a.body["progress"].as_f64().unwrap_or(0.0) > 0.0 {
            break;
        }
        assert!(
            !matches!(a.body["state"].as_str(), Some("succeeded" | "failed")),
            "the job ended before the restart: {}",
            a.body
        );
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "job did not start: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // PostgreSQL goes away
    let down = Instant::now();
    pg.stop();
    let stopped_in = down.elapsed();
    let mut outage = Vec::new();
    for (method, path, body) in [
        ("GET", "/api/models", None),
        ("GET", "/api/models/tiny", None),
        (
            "POST",
            "/api/models",
            Some(json!({"name": "during-outage"})),
        ),
        ("GET", &format!("/api/jobs/{job_id}")[..], None),
    ] {
        let a = call(&http, method, &url(path), body).await;
        assert_eq!(
            (a.status, a.body["error"]["code"].as_str()),
            (503, Some("database_unavailable")),
            "{method} {path} during the outage: {}",
            a.body
        );
        assert!(a.retry_after.is_some(), "{method} {path}: no Retry-After");
        assert!(
            a.took < ACQUIRE_TIMEOUT + Duration::from_secs(5),
            "{method} {path} took {:?}",
            a.took
        );
        outage.push(format!(
            "{method} {path} → {} in {:.1} s",
            a.status,
            a.took.as_secs_f64()
        ));
    }
    let h = call(&http, "GET", &url("/health"), None).await;
    assert_eq!(h.status, 503, "{}", h.body);
    assert_eq!(h.body["database"]["ok"], false);

    // ... and comes back
    let restart = Instant::now();
    pg.start();
    let start_took = restart.elapsed();
    let outage_secs = down.elapsed();
    let t = Instant::now();
    let reconnect = loop {
        let a = call(&http, "GET", &url("/api/models"), None).await;
        if a.status == 200 {
            break t.elapsed();
        }
        assert_eq!(a.status, 503, "{}", a.body);
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the hub did not reconnect"
        );
    };
    let a = call(
        &http,
        "POST",
        &url("/api/models"),
        Some(json!({"name": "after"})),
    )
    .await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(call(&http, "GET", &url("/health"), None).await.status, 200);

    // the job finishes, with every reported metric
    let t = Instant::now();
    let job = loop {
        let a = call(&http, "GET", &url(&format!("/api/jobs/{job_id}")), None).await;
        assert_eq!(a.status, 200, "{}", a.body);
        if matches!(a.body["state"].as_str(), Some("succeeded" | "failed")) {
            break a.body;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "job did not finish: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "one attempt: the restart cost no retry");
    let run_id = job["runs"][0]["id"].as_i64().unwrap();
    let m = call(
        &http,
        "GET",
        &url(&format!("/api/runs/{run_id}/metrics?key=train_loss")),
        None,
    )
    .await;
    assert_eq!(m.status, 200, "{}", m.body);
    let steps: Vec<i64> = m.body["metrics"]["train_loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    let want: Vec<i64> = (1..=ITERS / REPORT_EVERY)
        .map(|i| i * REPORT_EVERY)
        .collect();
    assert_eq!(
        steps, want,
        "every reported step recorded, none lost in the outage"
    );

    // the rows from before are all there
    let a = call(&http, "GET", &url("/api/models/tiny"), None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let versions = a.body["versions"].as_array().unwrap();
    assert!(
        versions.iter().any(|v| v["status"] == "ready"),
        "{}",
        a.body
    );
    assert_eq!(
        call(&http, "GET", &url("/api/datasets/text"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&http, "GET", &url("/api/models/after"), None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&http, "GET", &url("/api/models/during-outage"), None)
            .await
            .status,
        404,
        "a refused request wrote nothing"
    );

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    eprintln!(
        "postgres restart: stop took {:.1} s, outage {:.1} s (start took {:.1} s); during it: \
         {}; /health 503; reconnected {:.2} s after the start; job {job_id} succeeded \
         ({} steps, {} loss points, none lost); test {:.1} s",
        stopped_in.as_secs_f64(),
        outage_secs.as_secs_f64(),
        start_took.as_secs_f64(),
        outage.join(", "),
        reconnect.as_secs_f64(),
        ITERS,
        steps.len(),
        t0.elapsed().as_secs_f64()
    );
}
