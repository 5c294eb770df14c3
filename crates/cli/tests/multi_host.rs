//! Several hosts with real network separation on one machine (issue 11): the
//! test builds network namespaces joined by a bridge (see `netns/mod.rs` for
//! the topology), reaches PostgreSQL only through a forwarder inside the `db`
//! namespace, runs `s3s-fs` (a real S3 server over a directory) in `s3`, two
//! `mlx-hub worker`s in `w1`/`w2` and `mlx-hub serve --no-worker` in `serve`,
//! each with its own data directory. It then:
//!
//! - registers a base model and a dataset through `serve`'s HTTP API, runs
//!   LoRA jobs on the workers and chats with a trained version through `serve`;
//! - cuts the link of the worker running a job: its lease lapses, the job
//!   finishes on the other worker, and the cut worker, back online, writes
//!   nothing of it (its late writes are refused: it logs the lost lease);
//! - corrupts the base model's weights object in the S3 server's directory:
//!   the next job's download is refused by the sha256 check, the job fails
//!   with that reason and registers nothing.
//!
//! Needs root and `ip netns`; skipped otherwise, but fails under `CI`. Linux only
//! (network namespaces): on other systems this test binary is empty.
#![cfg(target_os = "linux")]

mod netns;

use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netns::{Forwarder, Net, Proc, http, wait_for, wait_tcp};
use serde_json::{Value, json};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const TOKEN: &str = "netns-test-token";
const SERVE_PORT: u16 = 8000;
const PG_PORT: u16 = 5432;
const LEASE_SECONDS: &str = "3";
const S3_PORT: u16 = 9000;
const S3_KEY: &str = "netnstestkey";
const S3_SECRET: &str = "netnstestsecret";
const BUCKET: &str = "mlx-hub";
const PREFIX: &str = "netns";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mlx-hub")
}

/// Skips (prints why) or, under CI, fails.
fn skip(reason: &str) {
    test_support::require::<()>("multi_host", Err(reason.to_string()));
}

fn pg_admin_url() -> String {
    std::env::var("HUB_TEST_DATABASE_URL").unwrap_or_else(|_| PG.to_string())
}

/// `postgres://user@host:port/db?…` → (`postgres://user@`, `host:port`).
fn split_pg_url(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("postgres URL");
    let (auth, rest) = match rest.split_once('@') {
        Some((a, r)) => (format!("{a}@"), r),
        None => (String::new(), rest),
    };
    let host = rest.split(['/', '?']).next().unwrap();
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:5432")
    };
    (format!("{scheme}://{auth}"), host)
}

fn psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The run's own database on the root namespace's PostgreSQL; dropped on drop.
struct Database {
    admin: String,
    name: String,
    /// The URL from the root namespace (127.0.0.1).
    local_url: String,
}

impl Database {
    fn create() -> Result<Database, String> {
        let admin = pg_admin_url();
        // databases of dead runs
        let stale = psql(
            &admin,
            "SELECT datname FROM pg_database WHERE datname LIKE 'mlxhub\\_netns\\_%'",
        )?;
        for name in stale.lines() {
            let pid: Option<u32> = name.rsplit('_').next().and_then(|p| p.parse().ok());
            if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                let _ = psql(
                    &admin,
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                );
            }
        }
        let name = format!("mlxhub_netns_{}", std::process::id());
        let _ = psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql(&admin, &format!("CREATE DATABASE {name}"))?;
        let (prefix, host) = split_pg_url(&admin);
        Ok(Database {
            local_url: format!("{prefix}{host}/{name}"),
            admin,
            name,
        })
    }

    /// Rows of `sql` as JSON objects.
    fn rows(&self, sql: &str) -> Vec<Value> {
        let out = psql(
            &self.local_url,
            &format!("SELECT coalesce(json_agg(t), '[]') FROM ({sql}) t"),
        )
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        match serde_json::from_str(&out).unwrap() {
            Value::Array(a) => a,
            v => panic!("{v}"),
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/parity-fixtures/llama-tied-f32")
}

/// What the test needs beyond the binary, or why it cannot run.
fn preflight() -> Option<String> {
    if let Some(r) = netns::unavailable() {
        return Some(r);
    }
    if !fixture().join("config.json").is_file() {
        return Some(format!("{} is missing", fixture().display()));
    }
    match Command::new("s3s-fs").arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => return Some("s3s-fs is not installed (scripts/setup-test-deps.sh)".into()),
    }
    if let Err(e) = psql(&pg_admin_url(), "SELECT 1") {
        return Some(format!(
            "PostgreSQL at {} is unreachable: {e}",
            pg_admin_url()
        ));
    }
    None
}

/// The processes of the cluster and how to reach them.
struct Cluster {
    serve: Proc,
    _s3: Proc,
    workers: Vec<Proc>,
    serve_addr: SocketAddr,
}

impl Cluster {
    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        let r = http(
            self.serve_addr,
            method,
            path,
            Some(TOKEN),
            bytes.as_deref().map(|b| ("application/json", b)),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        };
        (r.status, v)
    }

    fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.api(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    fn job(&self, id: i64) -> Value {
        self.ok("GET", &format!("/api/jobs/{id}"), None)
    }

    fn submit(&self, model: &str, iters: u32, steps_per_report: u32) -> i64 {
        let job = self.ok(
            "POST",
            "/api/jobs",
            Some(json!({
                "base_model": model,
                "dataset": "text",
                "max_attempts": 3,
                "config": {
                    "num_layers": -1, "batch_size": 1, "iters": iters,
                    "steps_per_report": steps_per_report, "steps_per_eval": 100000,
                    "val_batches": 1, "max_seq_length": 24, "seed": 1
                }
            })),
        );
        job["id"].as_i64().unwrap()
    }

    fn worker(&mut self, name: &str) -> &mut Proc {
        self.workers.iter_mut().find(|w| w.name == name).unwrap()
    }

    fn check_alive(&mut self) {
        self.serve.assert_running();
        for w in &mut self.workers {
            w.assert_running();
        }
    }

    /// Polls a job until `done(job)`; records every lease owner seen.
    fn watch(
        &mut self,
        id: i64,
        timeout: Duration,
        owners: &mut Vec<String>,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let t0 = Instant::now();
        loop {
            let j = self.job(id);
            if let Some(o) = j["lease_owner"].as_str()
                && !owners.iter().any(|x| x == o)
            {
                owners.push(o.to_string());
            }
            if done(&j) {
                return j;
            }
            assert!(
                t0.elapsed() < timeout,
                "job {id} not done after {timeout:?}: {j}\n{}",
                self.logs()
            );
            self.check_alive();
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for p in std::iter::once(&self.serve).chain(&self.workers) {
            s += &format!("--- {} ---\n{}\n", p.name, p.tail(30));
        }
        s
    }
}

/// Lines of `log` that say `needle`.
fn log_lines(log: &str, needle: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.to_string())
        .collect()
}

/// Jobs a worker's log says it claimed.
fn claimed_jobs(log: &str) -> Vec<i64> {
    log_lines(log, "claimed job")
        .iter()
        .filter_map(|l| {
            let rest = &l[l.find("job_id=")? + "job_id=".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn dataset_rows() -> String {
    let mut rows = String::new();
    for i in 0..8 {
        rows += &json!({"text": format!("row {i}: a short line of text {i}.")}).to_string();
        rows.push('\n');
    }
    rows
}

#[test]
fn jobs_run_on_workers_in_separate_namespaces_and_survive_faults() {
    if let Some(reason) = preflight() {
        skip(&reason);
        return;
    }
    let t0 = Instant::now();
    let removed = netns::remove_stale();
    if !removed.is_empty() {
        eprintln!("removed leftovers of dead runs: {removed:?}");
    }
    let net = Net::create(&["db", "s3", "w1", "w2", "serve"]).expect("topology");
    let db = Database::create().expect("database");
    let (pg_prefix, pg_host) = split_pg_url(&db.admin);
    let pg_target: SocketAddr = pg_host.parse().expect("PostgreSQL host:port");
    let fwd = Forwarder::start(
        &net.node("db").ns,
        SocketAddrV4::new(net.addr("db"), PG_PORT),
        pg_target,
    );
    let db_url = format!("{pg_prefix}{}/{}", fwd.listen, db.name);

    let dir = tempfile::Builder::new()
        .prefix("mlx-hub-netns-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let import = root.join("import");
    std::fs::create_dir_all(&import).unwrap();

    // the S3 server, over its own directory; the bucket is a folder of it
    let s3_root = root.join("s3");
    std::fs::create_dir_all(s3_root.join(BUCKET)).unwrap();
    let s3_addr = SocketAddr::V4(SocketAddrV4::new(net.addr("s3"), S3_PORT));
    let mut cmd = net.command("s3", "s3s-fs");
    cmd.arg("--host")
        .arg(net.addr("s3").to_string())
        .args(["--port", &S3_PORT.to_string()])
        .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
        .arg(&s3_root)
        .env("RUST_LOG", "warn");
    let mut s3 = Proc::spawn("s3s-fs", cmd, root.join("s3s-fs.log"));
    wait_tcp(s3_addr, Duration::from_secs(30), &mut s3);

    // every mlx-hub process: its own data dir, the DB through the forwarder,
    // artifacts in the S3 server
    let hub = |node: &str, args: &[&str]| {
        let mut cmd = net.command(node, bin());
        cmd.args(args)
            .arg("--data-dir")
            .arg(root.join(node))
            .arg("--database-url")
            .arg(&db_url)
            .args(["--artifact-store", &format!("s3://{BUCKET}/{PREFIX}")])
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", format!("http://{s3_addr}"))
            .env("AWS_ALLOW_HTTP", "true")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info");
        cmd
    };

    // serve first: it migrates the database
    let serve_addr = SocketAddr::V4(SocketAddrV4::new(net.addr("serve"), SERVE_PORT));
    let mut cmd = hub("serve", &["serve", "--no-worker"]);
    cmd.args(["--port", &SERVE_PORT.to_string()])
        .arg("--host")
        .arg(net.addr("serve").to_string())
        .arg("--import-root")
        .arg(&import)
        .env("MLX_HUB_API_TOKEN", TOKEN);
    let mut serve = Proc::spawn("serve", cmd, root.join("serve.log"));
    wait_tcp(serve_addr, Duration::from_secs(60), &mut serve);

    let mut workers = Vec::new();
    for w in ["w1", "w2"] {
        let mut cmd = hub(w, &["worker", "--lease-seconds", LEASE_SECONDS]);
        cmd.args(["--poll-ms", "100", "--id", w]);
        workers.push(Proc::spawn(w, cmd, root.join(format!("{w}.log"))));
    }
    let mut c = Cluster {
        serve,
        workers,
        serve_addr,
        _s3: s3,
    };
    eprintln!(
        "topology:\n{}  PostgreSQL: forwarder listening in {} on {} -> {} (root namespace)\n  \
         s3s-fs in {} at http://{s3_addr} (artifact store s3://{BUCKET}/{PREFIX})\n  \
         serve API at http://{serve_addr}, workers w1/w2 with --lease-seconds {LEASE_SECONDS}; \
         each mlx-hub process has its own data dir",
        net.describe(),
        net.node("db").ns,
        fwd.listen,
        pg_target,
        net.node("s3").ns,
    );

    // the base model and a dataset, through serve's API
    let model_dir = import.join("tiny");
    std::fs::create_dir_all(&model_dir).unwrap();
    for f in std::fs::read_dir(fixture()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), model_dir.join(f.file_name())).unwrap();
    }
    c.ok("POST", "/api/models", Some(json!({"name": "tiny"})));
    let base = c.ok(
        "POST",
        "/api/models/tiny/versions",
        Some(json!({"path": model_dir})),
    );
    assert_eq!(base["status"], "ready", "{base}");
    let rows = dataset_rows();
    let r = http(
        serve_addr,
        "POST",
        "/api/datasets/text/upload",
        Some(TOKEN),
        Some(("application/x-ndjson", rows.as_bytes())),
    )
    .unwrap();
    assert!(
        r.status == 201 || r.status == 200,
        "{} {}",
        r.status,
        r.text()
    );
    let setup_done = t0.elapsed();

    // 1. two jobs at once: one per worker
    let mut owners = Vec::new();
    let first: Vec<i64> = (0..2).map(|_| c.submit("tiny", 40, 5)).collect();
    let t = Instant::now();
    loop {
        let jobs: Vec<Value> = first.iter().map(|&id| c.job(id)).collect();
        for j in &jobs {
            if let Some(o) = j["lease_owner"].as_str()
                && !owners.iter().any(|x| x == o)
            {
                owners.push(o.to_string());
            }
            assert!(j["state"] != "failed", "{j}\n{}", c.logs());
        }
        if jobs.iter().all(|j| j["state"] == "succeeded") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{jobs:?}\n{}",
            c.logs()
        );
        c.check_alive();
        std::thread::sleep(Duration::from_millis(20));
    }
    let by_worker: Vec<(String, Vec<i64>)> = c
        .workers
        .iter()
        .map(|w| (w.name.clone(), claimed_jobs(&w.log_text())))
        .collect();
    for (w, jobs) in &by_worker {
        assert!(!jobs.is_empty(), "{w} claimed no job: {by_worker:?}");
    }
    owners.sort();
    assert_eq!(owners, ["w1", "w2"], "lease owners seen");
    let phase1 = t0.elapsed();
    eprintln!("jobs {first:?} ran on both workers (claimed: {by_worker:?})");

    // 2. cut the link of the worker running a job
    let long = c.submit("tiny", 400, 2);
    let mut owners = Vec::new();
    let j = c.watch(long, Duration::from_secs(60), &mut owners, |j| {
        j["state"] == "running" && j["progress"].as_f64().unwrap_or(0.0) > 0.0
    });
    let cut = j["lease_owner"].as_str().unwrap().to_string();
    let other = if cut == "w1" { "w2" } else { "w1" }.to_string();
    net.set_link(&cut, false);
    let cut_at = Instant::now();
    eprintln!(
        "fault 1: job {long} running on {cut} (progress {}), its link {} taken down",
        j["progress"],
        net.node(&cut).host_if
    );
    let mut after = Vec::new();
    let taken = c.watch(long, Duration::from_secs(60), &mut after, |j| {
        j["lease_owner"].as_str() == Some(other.as_str())
    });
    let reclaimed_after = cut_at.elapsed();
    assert_eq!(taken["attempts"], 2, "{taken}");
    let done = c.watch(long, Duration::from_secs(180), &mut after, |j| {
        j["state"] != "queued" && j["state"] != "running"
    });
    assert_eq!(done["state"], "succeeded", "{done}\n{}", c.logs());
    let finished_after = cut_at.elapsed();
    net.set_link(&cut, true);
    let restored_at = Instant::now();
    // back online, the cut worker learns it lost the lease and stops
    let lost = wait_for(
        &format!("{cut} to notice its lost lease"),
        Duration::from_secs(90),
        || {
            c.worker(&cut).assert_running();
            let lines = log_lines(&c.worker(&cut).log_text(), "lease lost");
            (!lines.is_empty()).then_some(lines)
        },
    );
    let noticed_after = restored_at.elapsed();
    // let it finish writing whatever it still tries to write
    wait_for(
        &format!("{cut} to end job {long}"),
        Duration::from_secs(30),
        || {
            let l = c.worker(&cut).log_text();
            log_lines(&l, "job done")
                .iter()
                .any(|x| x.contains(&format!("job_id={long}")))
                .then_some(())
        },
    );
    let version_id = done["result_version_id"].as_i64().expect("result version");
    // the DB rows: one version from this job, ready, made by the attempt-2 run
    let versions = db.rows(&format!(
        "SELECT id, status, lineage FROM model_versions \
         WHERE (lineage::json->>'job_id')::bigint = {long}"
    ));
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0]["id"], version_id);
    assert_eq!(versions[0]["status"], "ready");
    let lineage = match &versions[0]["lineage"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(),
    };
    let runs = db.rows(&format!(
        "SELECT id, name, status FROM runs WHERE job_id = {long} ORDER BY id"
    ));
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1]["name"], format!("job-{long}-attempt-2"));
    assert_eq!(runs[1]["status"], "finished");
    assert_eq!(lineage["run_id"], runs[1]["id"]);
    assert_ne!(runs[0]["status"], "finished", "{runs:?}");
    let job_row = &db.rows(&format!(
        "SELECT state, attempts, result_version_id, lease_owner FROM training_jobs WHERE id = {long}"
    ))[0];
    assert_eq!(job_row["state"], "succeeded");
    assert_eq!(job_row["result_version_id"], version_id);
    assert_eq!(job_row["lease_owner"], Value::Null);
    let cut_log = c.worker(&cut).log_text();
    let refused: Vec<String> = cut_log
        .lines()
        .filter(|l| l.contains(&format!("job_id={long}")) && l.contains("WARN"))
        .map(|l| l.to_string())
        .collect();
    eprintln!(
        "fault 1: lease lapsed, job reclaimed by {other} {reclaimed_after:?} after the cut, \
         succeeded there {finished_after:?} after the cut (version {version_id}); link restored, \
         {cut} noticed {noticed_after:?} later:\n  {}\n  runs: {runs:?}\n  \
         {cut}'s refused writes:\n  {}",
        lost.join("\n  "),
        refused.join("\n  ")
    );
    let phase2 = t0.elapsed();

    // 3. serve answers with the trained version
    let number = version_number(&c, version_id);
    let chat = c.ok(
        "POST",
        "/v1/chat/completions",
        Some(json!({
            "model": format!("tiny-lora:{number}"),
            "messages": [{"role": "user", "content": "Hello"}],
            "max_tokens": 8, "temperature": 0
        })),
    );
    assert!(
        chat["choices"][0]["message"]["content"].is_string(),
        "{chat}"
    );
    assert!(
        chat["usage"]["completion_tokens"].as_i64().unwrap() > 0,
        "{chat}"
    );
    let phase3 = t0.elapsed();
    eprintln!(
        "serve answered with tiny-lora:{number}: {:?}",
        chat["choices"][0]["message"]["content"]
    );

    // 4. a corrupt object: another base model (weights differ by one bit, so
    // no machine has them cached yet), its weights object damaged in place
    let variant = import.join("tiny-b");
    std::fs::create_dir_all(&variant).unwrap();
    for f in std::fs::read_dir(fixture()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), variant.join(f.file_name())).unwrap();
    }
    let weights = variant.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 4] ^= 1; // the lowest mantissa bit of the last f32
    std::fs::write(weights, bytes).unwrap();
    c.ok("POST", "/api/models", Some(json!({"name": "tiny-b"})));
    let b = c.ok(
        "POST",
        "/api/models/tiny-b/versions",
        Some(json!({"path": variant})),
    );
    let sha = b["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "model.safetensors")
        .and_then(|f| f["sha256"].as_str())
        .unwrap()
        .to_string();
    let object = s3_root
        .join(BUCKET)
        .join(PREFIX)
        .join("blobs/sha256")
        .join(&sha[..2])
        .join(&sha);
    let mut stored = std::fs::read(&object)
        .unwrap_or_else(|e| panic!("the weights object {}: {e}", object.display()));
    let mid = stored.len() / 2;
    for b in &mut stored[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&object, stored).unwrap();
    let bad = c.submit("tiny-b", 10, 5);
    let mut seen = Vec::new();
    let failed = c.watch(bad, Duration::from_secs(60), &mut seen, |j| {
        j["state"] != "queued" && j["state"] != "running"
    });
    assert_eq!(failed["state"], "failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.contains("integrity check") && error.contains(&sha),
        "the job's error names the hash check and the blob: {error}"
    );
    assert_eq!(
        failed["attempts"], 1,
        "a refused download is not retried: {failed}"
    );
    let registered = db.rows(&format!(
        "SELECT id, status FROM model_versions \
         WHERE (lineage::json->>'job_id')::bigint = {bad}"
    ));
    assert!(registered.is_empty(), "{registered:?}");
    assert!(
        db.rows("SELECT id FROM models WHERE name = 'tiny-b-lora'")
            .is_empty(),
        "nothing registered from the corrupt base"
    );
    for w in ["w1", "w2"] {
        let cached = find_named(&root.join(w), &sha);
        assert!(cached.is_empty(), "{w} kept the corrupt blob: {cached:?}");
    }
    eprintln!(
        "fault 2: flipped 16 bytes of object {} (model.safetensors of tiny-b); job {bad} on {:?}: \
         failed, attempts 1, error: {error}; no version registered, nothing cached",
        object.strip_prefix(&s3_root).unwrap().display(),
        c.workers
            .iter()
            .filter(|w| claimed_jobs(&w.log_text()).contains(&bad))
            .map(|w| w.name.as_str())
            .collect::<Vec<_>>()
    );
    let phase4 = t0.elapsed();

    c.check_alive();
    eprintln!(
        "timings: setup {setup_done:?}, two jobs {phase1:?}, link fault {phase2:?}, \
         chat {phase3:?}, corrupt object {phase4:?}"
    );
}

/// Files under `dir` whose name contains `needle`.
fn find_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find_named(&p, needle));
        } else if e.file_name().to_string_lossy().contains(needle) {
            out.push(p);
        }
    }
    out
}

/// The version number of version `id` of `tiny-lora`.
fn version_number(c: &Cluster, id: i64) -> i64 {
    let list = c.ok("GET", "/api/models/tiny-lora/versions", None);
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == id)
        .and_then(|v| v["number"].as_i64())
        .unwrap_or_else(|| panic!("version {id} not in {list}"))
}
