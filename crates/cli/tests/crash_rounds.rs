//! Crash-safety rounds against the built binary: each round starts
//! `mlx-hub serve` (API + in-process worker, 2 s leases), checks the
//! invariants recovery must restore, then runs a LoRA job and registers a
//! large model folder over HTTP at the same time and SIGKILLs the server at a
//! random moment (seeded; the seed is printed: `CRASH_SEED=…` replays it).
//!
//! Invariants after each restart:
//! - every `ready` version has all its files, with their recorded size and
//!   sha256 (content-addressed blobs or linked files);
//! - no temporary file of a dead process is left (`tmp/` holds only the live
//!   server's own folder; no `.tmp*` staging anywhere in the data dir);
//! - no API registration is left `registering` once the server has restarted
//!   (its owner process is dead: recovery fails it at once, no stale window);
//! - no job is `running` past its lease once a lease and a poll have passed;
//! - jobs follow their attempt policy: never more attempts than allowed, a job
//!   killed on its last attempt ends `failed`, the others are re-queued and in
//!   the end every job is `succeeded` or `failed` that way.
//!
//! `CRASH_ROUNDS` (default 10), `CRASH_BIG_MB` (size of the registered folder,
//! default 96), `CRASH_SEED`. `scripts/crash-rounds.sh` runs more and larger
//! rounds.

mod common;

use common::{bin, free_port, tiny_model};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hub::store::{JobFilter, JobState, ModelFilter, Store, VersionStatus};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const LEASE_SECS: u64 = 2;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// splitmix64: a seeded sequence for kill times and file contents.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn copy_flat(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
}

/// A valid safetensors file of `len` pseudo-random bytes (one U8 tensor).
fn write_shard(path: &Path, len: usize, rng: &mut Rng) {
    let header = json!({"pad": {"dtype": "U8", "shape": [len], "data_offsets": [0, len]}})
        .to_string()
        .into_bytes();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    f.write_all(&header).unwrap();
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for w in chunk.chunks_mut(8) {
            let r = rng.next().to_le_bytes();
            w.copy_from_slice(&r[..w.len()]);
        }
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}

/// One HTTP/1.1 request with `Connection: close`; (status, JSON body).
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Server {
    child: Child,
    port: u16,
}

/// A test that fails leaves no server behind.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Server {
    let port = free_port();
    let child = Command::new(bin())
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--port", &port.to_string()])
        .args(["--lease-seconds", &LEASE_SECS.to_string()])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mlx-hub serve");
    let t = Instant::now();
    while http(port, "GET", "/health", None).map(|r| r.0) != Ok(200) {
        assert!(t.elapsed() < Duration::from_secs(60), "serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, port }
}

fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Paths under `dir` (not under `skip`) whose name starts with `.tmp`.
fn stray_temp_files(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p == skip {
            continue;
        }
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(".tmp") || name.ends_with(".incomplete") {
            out.push(p.clone());
        }
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            stray_temp_files(&p, skip, out);
        }
    }
}

/// What a check saw.
#[derive(Default, Debug)]
struct Seen {
    ready_versions: usize,
    registering_versions: usize,
    jobs: BTreeMap<i64, (JobState, i64)>,
}

/// The invariants, on the database and the disk (the server may be running).
async fn check(store: &Store, dir: &Path, live_server: bool, round: usize) -> Seen {
    let mut seen = Seen::default();
    let mut verified: BTreeSet<String> = BTreeSet::new();
    for m in store.list_models(&ModelFilter::default()).await.unwrap() {
        for v in store.list_versions(m.id, None).await.unwrap() {
            if v.status == VersionStatus::Registering {
                seen.registering_versions += 1;
                // at a round's start, the live server has just recovered and
                // nothing registers yet: an API registration of a killed
                // server is failed, not waiting for a stale window
                assert!(
                    !live_server || v.lineage.job_id.is_some(),
                    "round {round}: {}:{} is still registering after the restart",
                    m.name,
                    v.number
                );
            }
            if v.status != VersionStatus::Ready {
                continue;
            }
            seen.ready_versions += 1;
            let files = store.version_files(v.id).await.unwrap();
            assert!(
                !files.is_empty(),
                "round {round}: ready version {}:{} has no files",
                m.name,
                v.number
            );
            let linked = v
                .artifact_uri
                .as_deref()
                .and_then(|u| u.strip_prefix("file://"))
                .map(PathBuf::from);
            for f in files {
                let path = match &linked {
                    Some(base) => base.join(&f.path),
                    None => {
                        if verified.contains(&f.sha256) {
                            continue;
                        }
                        let active = dir.join("active").join(&f.sha256[..2]).join(&f.sha256);
                        if active.is_file() {
                            active
                        } else {
                            dir.join("archive").join(&f.sha256[..2]).join(&f.sha256)
                        }
                    }
                };
                let (sha, size) = sha256_file(&path).unwrap_or_else(|e| {
                    panic!(
                        "round {round}: ready version {}:{} misses {} ({}): {e}",
                        m.name,
                        v.number,
                        f.path,
                        path.display()
                    )
                });
                assert_eq!(
                    (sha.as_str(), size as i64),
                    (f.sha256.as_str(), f.size_bytes),
                    "round {round}: {}:{} file {} differs from its record",
                    m.name,
                    v.number,
                    f.path
                );
                verified.insert(f.sha256.clone());
            }
        }
    }
    // temporary files: only the live server's own folder
    let tmp: Vec<PathBuf> = std::fs::read_dir(dir.join("tmp"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    if live_server {
        assert!(
            tmp.len() <= 1,
            "round {round}: temp folders of dead processes left: {tmp:?}"
        );
    }
    let mut stray = Vec::new();
    stray_temp_files(dir, &dir.join("import"), &mut stray);
    if live_server {
        // the live server's own temp folder may hold its current work
        stray.retain(|p| !tmp.iter().any(|t| p.starts_with(t)));
    }
    assert!(
        stray.is_empty(),
        "round {round}: stray temp files {stray:?}"
    );
    let now = now_ms();
    let filter = JobFilter {
        limit: 1000,
        ..JobFilter::default()
    };
    for j in store.list_jobs(&filter).await.unwrap() {
        assert!(
            j.attempts <= j.max_attempts,
            "round {round}: job {} ran {} times, at most {} allowed",
            j.id,
            j.attempts,
            j.max_attempts
        );
        if j.state == JobState::Running && live_server {
            let expires = j.lease_expires_at_ms.unwrap_or(0);
            assert!(
                expires >= now - 500,
                "round {round}: job {} is running past its lease ({} ms ago)",
                j.id,
                now - expires
            );
        }
        if j.state == JobState::Failed {
            assert_eq!(
                j.attempts, j.max_attempts,
                "round {round}: job {} failed before its last attempt: {:?}",
                j.id, j.error
            );
        }
        if j.state == JobState::Succeeded {
            let v = store
                .get_version(j.result_version_id.expect("a succeeded job has a version"))
                .await
                .unwrap();
            assert_eq!(
                v.status,
                VersionStatus::Ready,
                "round {round}: job {}",
                j.id
            );
        }
        seen.jobs.insert(j.id, (j.state, j.attempts));
    }
    seen
}

const JOB_CONFIG: &str = r#"{"num_layers": -1, "batch_size": 2, "iters": 150, "steps_per_report": 5,
    "steps_per_eval": 100000, "val_batches": 1, "max_seq_length": 32, "seed": 5}"#;

#[test]
fn crash_rounds() {
    let Some(model) = tiny_model() else {
        return;
    };
    let rounds = env_num("CRASH_ROUNDS", 10) as usize;
    let big_mb = env_num("CRASH_BIG_MB", 96) as usize;
    let seed = env_num(
        "CRASH_SEED",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!("crash rounds: {rounds} rounds, {big_mb} MB folder, CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let t0 = Instant::now();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let import = dir.join("import");
    copy_flat(&model, &import.join("tiny"));
    copy_flat(&model, &import.join("big"));
    let shards = 3;
    for i in 0..shards {
        write_shard(
            &import.join(format!("big/extra-{i}.safetensors")),
            big_mb * (1 << 20) / shards,
            &mut Rng(seed ^ (i as u64 + 1)),
        );
    }
    let data = import.join("text");
    std::fs::create_dir_all(&data).unwrap();
    let rows: String = (0..16)
        .map(|i| {
            json!({"text": format!("row {i}: the river crosses the stone {i} times.")}).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(data.join("train.jsonl"), &rows).unwrap();
    let valid: String = rows.lines().take(4).map(|l| format!("{l}\n")).collect();
    std::fs::write(data.join("valid.jsonl"), valid).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db_url = hub::store::sqlite_url(&dir.join("hub.db"));

    let mut srv = start(&dir);
    for (path, body) in [
        ("/api/models", json!({"name": "tiny"})),
        ("/api/models", json!({"name": "big"})),
        ("/api/models/tiny/versions", json!({"path": "tiny"})),
        ("/api/datasets", json!({"name": "text", "path": "text"})),
    ] {
        let (s, b) = http(srv.port, "POST", path, Some(&body)).unwrap();
        assert!(s == 201, "{path}: {s} {b}");
    }

    let mut killed_on_last_attempt: BTreeSet<i64> = BTreeSet::new();
    let mut registrations_done = 0;
    let mut kill_points = Vec::new();
    for round in 0..rounds {
        // the workload: a job when none is pending, and a registration
        let store = rt.block_on(Store::connect(&db_url)).unwrap();
        let seen = rt.block_on(check(&store, &dir, true, round));
        rt.block_on(store.close());
        let pending = seen
            .jobs
            .values()
            .any(|(s, _)| matches!(s, JobState::Queued | JobState::Running));
        if !pending {
            // both attempt policies: re-queued until done, or failed when
            // killed on its only attempt
            let max_attempts = if seen.jobs.len().is_multiple_of(2) {
                3
            } else {
                1
            };
            let (s, b) = http(
                srv.port,
                "POST",
                "/api/jobs",
                Some(
                    &json!({"base_model": "tiny", "dataset": "text", "max_attempts": max_attempts,
                             "config": serde_json::from_str::<Value>(JOB_CONFIG).unwrap()}),
                ),
            )
            .unwrap();
            assert_eq!(s, 201, "{b}");
        }
        // new content in one shard each round: the registration copies it
        // (content-addressed blobs of the other shards are only hashed)
        write_shard(
            &import.join("big/extra-0.safetensors"),
            big_mb * (1 << 20) / shards,
            &mut Rng(seed ^ (1000 + round as u64)),
        );
        let port = srv.port;
        let reg = std::thread::spawn(move || {
            http(
                port,
                "POST",
                "/api/models/big/versions",
                Some(&json!({"path": "big"})),
            )
        });
        // even rounds aim at the registration (hundreds of ms), odd ones anywhere
        let window = if round.is_multiple_of(2) { 300 } else { 2500 };
        let delay = Duration::from_millis(rng.next() % window);
        std::thread::sleep(delay);
        // what the job was doing when killed
        let store = rt.block_on(Store::connect(&db_url)).unwrap();
        let jobs = rt
            .block_on(store.list_jobs(&JobFilter {
                state: Some(JobState::Running),
                limit: 100,
                offset: 0,
            }))
            .unwrap();
        srv.child.kill().unwrap(); // SIGKILL
        srv.child.wait().unwrap();
        let killed_at = Instant::now();
        rt.block_on(store.close());
        for j in &jobs {
            if j.attempts == j.max_attempts {
                killed_on_last_attempt.insert(j.id);
            }
        }
        let reg = reg.join().unwrap();
        if matches!(reg, Ok((201, _))) {
            registrations_done += 1;
        }
        let what = format!(
            "round {round}: killed after {delay:?}; job(s) running: {:?}; registration {}",
            jobs.iter()
                .map(|j| (j.id, j.attempts, (j.progress * 100.0).round()))
                .collect::<Vec<_>>(),
            match &reg {
                Ok((s, _)) => format!("answered {s}"),
                Err(_) => "cut".into(),
            }
        );
        eprintln!("{what}");
        kill_points.push(what);

        // nothing runs: the database and disk as the crash left them
        let store = rt.block_on(Store::connect(&db_url)).unwrap();
        rt.block_on(check(&store, &dir, false, round));
        rt.block_on(store.close());

        // restart; wait a lease and a poll so the reaper has run
        srv = start(&dir);
        let settle = Duration::from_secs(LEASE_SECS) + Duration::from_millis(1500);
        if let Some(left) = settle.checked_sub(killed_at.elapsed()) {
            std::thread::sleep(left);
        }
    }

    // after the last round: everything finishes as its attempt policy says
    let t = Instant::now();
    let seen = loop {
        let store = rt.block_on(Store::connect(&db_url)).unwrap();
        let seen = rt.block_on(check(&store, &dir, true, rounds));
        rt.block_on(store.close());
        let done = seen
            .jobs
            .values()
            .all(|(s, _)| matches!(s, JobState::Succeeded | JobState::Failed));
        if done {
            break seen;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "jobs did not finish: {:?}",
            seen.jobs
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let (s, b) = http(
        srv.port,
        "POST",
        "/api/models/big/versions",
        Some(&json!({"path": "big"})),
    )
    .unwrap();
    assert_eq!(s, 201, "a registration after the crashes completes: {b}");
    for (id, (state, attempts)) in &seen.jobs {
        if killed_on_last_attempt.contains(id) {
            assert_eq!(
                *state,
                JobState::Failed,
                "job {id} was killed on its last attempt"
            );
        }
        eprintln!("job {id}: {state:?} after {attempts} attempt(s)");
    }
    // stop cleanly (SIGTERM) and look once more
    let _ = Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status();
    let _ = srv.child.wait();
    let store = rt.block_on(Store::connect(&db_url)).unwrap();
    let last = rt.block_on(check(&store, &dir, false, rounds + 1));
    rt.block_on(store.close());
    eprintln!(
        "crash rounds: {rounds} rounds survived (CRASH_SEED={seed}) in {:?}: \
         {} ready versions, {} left registering (by jobs killed mid-registration), \
         {registrations_done} registrations \
         answered before a kill, jobs {:?}",
        t0.elapsed(),
        last.ready_versions,
        last.registering_versions,
        last.jobs
    );
}
