//! Crash proof with the built binary: a `mlx-hub worker` process is killed
//! with SIGKILL in the middle of a LoRA job; after its lease lapses a new
//! worker process re-queues the job (attempt 2) and runs it to success, or
//! fails it when its last attempt is used. Nothing `ready` is incomplete and
//! no temporary file is left behind.

mod common;

use common::{bin, tiny_model};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `mlx-hub <command> --data-dir <dir> <args…>`, which must succeed.
fn hub(dir: &Path, command: &str, args: &[&str]) -> Output {
    let out = Command::new(bin())
        .arg(command)
        .arg("--data-dir")
        .arg(dir)
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

fn hub_json(dir: &Path, command: &str, args: &[&str]) -> Value {
    let out = hub(dir, command, args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mlx-hub {command} {args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn start_worker(dir: &Path, id: &str) -> Child {
    Command::new(bin())
        .args(["worker", "--data-dir"])
        .arg(dir)
        .args(["--lease-seconds", "2", "--poll-ms", "50", "--id", id])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn worker")
}

/// A fresh data dir with the tiny model and a dataset registered.
fn setup(name: &str) -> Option<PathBuf> {
    let model = tiny_model()?;
    let dir = std::env::temp_dir().join(format!("mlx-hub-crash-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    test_support::write_text_rows(&dir.join("data/train.jsonl"), 16);
    test_support::write_text_rows(&dir.join("data/valid.jsonl"), 4);
    hub(
        &dir,
        "models",
        &["register", "tiny", model.to_str().unwrap()],
    );
    hub(
        &dir,
        "datasets",
        &["register", "text", dir.join("data").to_str().unwrap()],
    );
    Some(dir)
}

const CONFIG: &str = r#"{"num_layers": -1, "batch_size": 2, "iters": 400, "steps_per_report": 5,
    "steps_per_eval": 100000, "val_batches": 1, "max_seq_length": 32, "seed": 5}"#;

fn job(dir: &Path, id: i64) -> Value {
    hub_json(dir, "jobs", &["show", &id.to_string(), "--json"])
}

/// Waits until the job reports progress, then SIGKILLs the worker.
fn kill_mid_job(dir: &Path, worker: &mut Child, id: i64) {
    let t = Instant::now();
    loop {
        let j = job(dir, id);
        assert_ne!(
            j["state"], "succeeded",
            "the job finished before the kill: make it longer"
        );
        if j["state"] == "running" && j["progress"].as_f64().unwrap() > 0.0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "job never ran: {j}");
        std::thread::sleep(Duration::from_millis(20));
    }
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
}

/// Every ready version's files exist with their recorded hashes, and no
/// temporary file is left.
fn assert_whole(dir: &Path) {
    for m in hub_json(dir, "models", &["list", "--json"])
        .as_array()
        .unwrap()
    {
        let name = m["name"].as_str().unwrap();
        let shown = hub_json(dir, "models", &["show", name, "--json"]);
        for v in shown["versions"].as_array().unwrap() {
            assert_ne!(v["status"], "registering", "{v}");
        }
    }
    let tmp = dir.join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn killed_worker_job_is_requeued_and_finishes() {
    let Some(dir) = setup("requeue") else {
        return;
    };
    let t0 = Instant::now();
    let j = hub_json(
        &dir,
        "jobs",
        &[
            "submit",
            "--model",
            "tiny",
            "--dataset",
            "text",
            "--config",
            CONFIG,
            "--json",
        ],
    );
    let id = j["id"].as_i64().unwrap();
    let mut w1 = start_worker(&dir, "w1");
    kill_mid_job(&dir, &mut w1, id);
    let killed_at = t0.elapsed();
    let j = job(&dir, id);
    assert_eq!(
        (j["state"].as_str(), j["attempts"].as_i64()),
        (Some("running"), Some(1))
    );

    // A new worker: once the dead one's lease lapses, attempt 2 runs it through.
    std::thread::sleep(Duration::from_millis(2100));
    let out = hub(
        &dir,
        "worker",
        &["--once", "--lease-seconds", "2", "--id", "w2"],
    );
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["job_id"], id, "{outcome}");
    assert_eq!(outcome["state"], "succeeded", "{outcome}");
    let j = job(&dir, id);
    assert_eq!(
        (j["state"].as_str(), j["attempts"].as_i64()),
        (Some("succeeded"), Some(2))
    );
    let shown = hub_json(&dir, "models", &["show", "tiny-lora", "--json"]);
    let versions = shown["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "exactly one adapter version: {shown}");
    assert_eq!(versions[0]["status"], "ready");
    assert_whole(&dir);
    eprintln!(
        "crash/requeue: killed after {killed_at:?}, recovered and done after {:?}",
        t0.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn killed_worker_on_last_attempt_fails_the_job() {
    let Some(dir) = setup("last") else {
        return;
    };
    let j = hub_json(
        &dir,
        "jobs",
        &[
            "submit",
            "--model",
            "tiny",
            "--dataset",
            "text",
            "--config",
            CONFIG,
            "--max-attempts",
            "1",
            "--json",
        ],
    );
    let id = j["id"].as_i64().unwrap();
    let mut w1 = start_worker(&dir, "w1");
    kill_mid_job(&dir, &mut w1, id);
    std::thread::sleep(Duration::from_millis(2100));
    // The new worker's reaper fails it; there is nothing else to run.
    let out = hub(&dir, "worker", &["--once", "--id", "w2"]);
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let j = job(&dir, id);
    assert_eq!(j["state"], "failed", "{j}");
    let models = hub_json(&dir, "models", &["list", "--json"]);
    assert!(
        models
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["name"] != "tiny-lora")
            || hub_json(&dir, "models", &["show", "tiny-lora", "--json"])["versions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|v| v["status"] != "ready"),
        "no ready adapter from a failed job"
    );
    assert_whole(&dir);
    let _ = std::fs::remove_dir_all(&dir);
}
