//! Multi-worker proof on PostgreSQL with the built binary: 3 `mlx-hub
//! worker` processes share one queue; 30 short LoRA jobs each run exactly
//! once to success; a long job's worker is SIGKILLed mid-job and the job
//! finishes on another worker after its lease lapses.

mod common;

use common::bin;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn pg_admin_url() -> String {
    std::env::var("HUB_TEST_DATABASE_URL").unwrap_or_else(|_| PG.to_string())
}

fn psql(sql: &str) -> bool {
    Command::new("psql")
        .arg(pg_admin_url())
        .args(["-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Env {
    dir: PathBuf,
    url: String,
    schema: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        psql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Env {
    fn hub(&self, command: &str, args: &[&str]) -> Output {
        let out = Command::new(bin())
            .arg(command)
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--database-url")
            .arg(&self.url)
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run mlx-hub");
        assert!(
            out.status.success(),
            "mlx-hub {command} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn json(&self, command: &str, args: &[&str]) -> Value {
        serde_json::from_slice(&self.hub(command, args).stdout).expect("JSON")
    }

    fn worker(&self, id: &str) -> Child {
        Command::new(bin())
            .args(["worker", "--data-dir"])
            .arg(&self.dir)
            .arg("--database-url")
            .arg(&self.url)
            .args(["--lease-seconds", "5", "--poll-ms", "50", "--id", id])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn worker")
    }
}

fn setup() -> Option<Env> {
    let model = test_support::require("multi_worker", test_support::tiny_model())?;
    let schema = format!("hubmw_{}", std::process::id());
    let reachable = if psql(&format!("CREATE SCHEMA {schema}")) {
        Ok(())
    } else {
        Err(format!(
            "PostgreSQL at {} is unreachable (psql)",
            pg_admin_url()
        ))
    };
    test_support::require("multi_worker", reachable)?;
    let admin = pg_admin_url();
    let sep = if admin.contains('?') { '&' } else { '?' };
    let env = Env {
        dir: std::env::temp_dir().join(format!("mlx-hub-mw-{}", std::process::id())),
        url: format!("{admin}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    };
    let _ = std::fs::remove_dir_all(&env.dir);
    std::fs::create_dir_all(env.dir.join("data")).unwrap();
    let mut rows = String::new();
    for i in 0..8 {
        rows +=
            &serde_json::json!({"text": format!("row {i}: a short line of text {i}.")}).to_string();
        rows.push('\n');
    }
    std::fs::write(env.dir.join("data/train.jsonl"), rows).unwrap();
    env.hub("models", &["register", "tiny", model.to_str().unwrap()]);
    env.hub(
        "datasets",
        &["register", "text", env.dir.join("data").to_str().unwrap()],
    );
    Some(env)
}

#[test]
fn three_workers_thirty_jobs_one_killed() {
    let Some(env) = setup() else {
        return;
    };
    let t0 = Instant::now();
    let submit = |iters: u32| -> i64 {
        let config = format!(
            r#"{{"num_layers": -1, "batch_size": 1, "iters": {iters}, "steps_per_report": 1,
               "steps_per_eval": 100000, "val_batches": 1, "max_seq_length": 24, "seed": 1}}"#
        );
        env.json(
            "jobs",
            &[
                "submit",
                "--model",
                "tiny",
                "--dataset",
                "text",
                "--config",
                &config,
                "--max-attempts",
                "3",
                "--json",
            ],
        )["id"]
            .as_i64()
            .unwrap()
    };
    // The long job first: the first worker to poll takes it.
    let long = submit(300);
    let short: Vec<i64> = (0..30).map(|_| submit(2)).collect();
    let submitted = t0.elapsed();

    let mut workers: Vec<(String, Child)> = (1..=3)
        .map(|i| (format!("w{i}"), env.worker(&format!("w{i}"))))
        .collect();
    // Kill whoever runs the long job, once it has made progress.
    let t = Instant::now();
    let owner = loop {
        let j = env.json("jobs", &["show", &long.to_string(), "--json"]);
        if j["state"] == "running" && j["progress"].as_f64().unwrap() > 0.0 {
            break j["lease_owner"].as_str().unwrap().to_string();
        }
        assert_ne!(
            j["state"], "succeeded",
            "the long job finished before the kill"
        );
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "long job never ran: {j}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let idx = workers.iter().position(|(id, _)| *id == owner).unwrap();
    let (_, mut victim) = workers.remove(idx);
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at = t0.elapsed();

    // Everything finishes on the two survivors.
    let t = Instant::now();
    let jobs = loop {
        let jobs = env.json("jobs", &["list", "--json"]);
        let arr = jobs.as_array().unwrap();
        if arr.iter().all(|j| j["state"] == "succeeded") {
            break arr.clone();
        }
        assert!(
            arr.iter()
                .all(|j| j["state"] != "failed" && j["state"] != "cancelled"),
            "{jobs}"
        );
        assert!(t.elapsed() < Duration::from_secs(240), "not done: {jobs}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let done = t0.elapsed();
    for (_, mut w) in workers {
        w.kill().unwrap();
        w.wait().unwrap();
    }
    assert_eq!(jobs.len(), 31);
    for j in &jobs {
        let id = j["id"].as_i64().unwrap();
        let want = if id == long { 2 } else { 1 };
        assert_eq!(
            j["attempts"].as_i64(),
            Some(want),
            "job {id} ran {} times",
            j["attempts"]
        );
    }
    assert!(short.iter().all(|id| jobs.iter().any(|j| j["id"] == *id)));
    // one adapter version per job, all ready, each from a distinct job
    let shown = env.json("models", &["show", "tiny-lora", "--json"]);
    let versions = shown["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 31, "{shown}");
    let mut from_jobs: Vec<i64> = versions
        .iter()
        .map(|v| {
            assert_eq!(v["status"], "ready");
            v["lineage"]["job_id"].as_i64().unwrap()
        })
        .collect();
    from_jobs.sort();
    from_jobs.dedup();
    assert_eq!(from_jobs.len(), 31);
    eprintln!(
        "multi-worker: 31 jobs submitted in {submitted:?}, worker {owner} killed at {killed_at:?}, \
         all done at {done:?}"
    );
}
