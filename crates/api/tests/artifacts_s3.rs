//! The S3-compatible artifact store against a real S3 server (`s3s-fs`, an S3
//! implementation over a local directory, started per test on a free
//! loopback port): round trip, dedup, tiers, the read-through cache and its
//! LRU bound with pins, integrity checks on download (a corrupted object is
//! refused, nothing cached, a training job fails with the reason and registers
//! nothing), a model registered on one "machine" and served on another, a job
//! trained by a worker that pulls base and dataset through its cache, and job
//! requirements (device, memory) gating claims on SQLite and PostgreSQL.
//!
//! Without `s3s-fs` on the PATH (or in ~/.cargo/bin) the S3 tests skip with a
//! printed reason, unless `CI` is set: then they fail.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestDb;
use common::http::{copy_dir, tiny_model};
use hub::artifacts::cache::BlobCache;
use hub::artifacts::{ArtifactStore, Artifacts, Tier, sha256_bytes};
use hub::dataset_import::RegisterDataset;
use hub::jobs::JobRunner;
use hub::registry::RegisterFolder;
use hub::store::{DeviceKind, JobKind, JobRequirements, JobState, NewJob, WorkerCapabilities};
use hub::{Hub, HubConfig, StoreError};
use serde_json::{Value, json};
use tower::ServiceExt;

const ACCESS_KEY: &str = "hubtestaccess";
const SECRET_KEY: &str = "hubtestsecret-0123456789";
const BUCKET: &str = "mlx-hub";

/// A running s3s-fs server over a temp directory.
struct S3Server {
    child: Child,
    root: tempfile::TempDir,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs_binary(test: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("s3s-fs")));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/s3s-fs"));
    }
    test_support::require(
        test,
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| "s3s-fs is not installed (scripts/setup-test-deps.sh)".to_string()),
    )
}

impl S3Server {
    async fn start(test: &str) -> Option<S3Server> {
        let bin = s3s_fs_binary(test)?;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(BUCKET)).unwrap();
        let port = test_support::free_port();
        let child = Command::new(bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let s = S3Server {
            child,
            root,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(s)
    }

    fn env(&self) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: HashMap<&'static str, String> = HashMap::from([
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]);
        move |k| vars.get(k).cloned()
    }

    /// The file s3s-fs keeps an object in.
    fn object_file(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    async fn store(&self, prefix: &str, data_dir: &Path, cache_max: u64) -> Artifacts {
        Artifacts::open(
            Some(&format!("s3://{BUCKET}/{prefix}")),
            data_dir,
            cache_max,
            self.env(),
        )
        .await
        .expect("open the S3 store")
    }
}

fn blob_key(prefix: &str, sha: &str) -> String {
    format!("{prefix}/blobs/sha256/{}/{sha}", &sha[..2])
}

/// Flips every byte of a stored object (same length: only the hash tells).
fn corrupt(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn put_locate_open_archive_restore_delete_round_trip() {
    let Some(s3) = S3Server::start("s3_round_trip").await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let store = s3.store("rt", data.path(), 1 << 30).await;
    assert_eq!(store.kind(), "s3");

    let put = store.put_bytes(b"hello artifacts".to_vec()).await.unwrap();
    assert!(put.created);
    assert_eq!(put.sha256, sha256_bytes(b"hello artifacts"));
    assert_eq!(put.size_bytes, 15);
    // the object is where the layout says, content-addressed
    let obj = s3.object_file(&blob_key("rt", &put.sha256));
    assert_eq!(std::fs::read(&obj).unwrap(), b"hello artifacts");
    // dedup: the same content again writes nothing
    let again = store.put_bytes(b"hello artifacts".to_vec()).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.sha256, put.sha256);

    // a file, bigger than one multipart part (16 MiB): a multipart upload
    let big = data.path().join("big.bin");
    let content: Vec<u8> = (0..(17u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&big, &content).unwrap();
    let putf = store.put_file(&big).await.unwrap();
    assert!(putf.created);
    assert_eq!(putf.sha256, sha256_bytes(&content));
    assert!(!store.put_file(&big).await.unwrap().created);

    assert_eq!(store.locate(&put.sha256).await.unwrap(), Some(Tier::Active));
    let mut f = store.open(&put.sha256).await.unwrap();
    let mut got = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut f, &mut got)
        .await
        .unwrap();
    assert_eq!(got, b"hello artifacts");
    // read through the cache: now a local file, named by its sha
    let local = store.local_path(&putf.sha256).await.unwrap().unwrap();
    assert!(local.starts_with(data.path().canonicalize().unwrap().join("cache/blobs")));
    assert_eq!(std::fs::read(&local).unwrap(), content);

    store.archive(&put.sha256).await.unwrap();
    store.archive(&put.sha256).await.unwrap();
    assert_eq!(
        store.locate(&put.sha256).await.unwrap(),
        Some(Tier::Archive)
    );
    assert_eq!(
        store.list(Tier::Archive).await.unwrap(),
        vec![put.sha256.clone()]
    );
    assert_eq!(
        store.list(Tier::Active).await.unwrap(),
        vec![putf.sha256.clone()]
    );
    // archived blobs stay readable
    assert!(store.open(&put.sha256).await.is_ok());
    store.restore(&put.sha256).await.unwrap();
    assert_eq!(store.locate(&put.sha256).await.unwrap(), Some(Tier::Active));
    // putting archived content brings it back to active
    store.archive(&put.sha256).await.unwrap();
    assert!(
        !store
            .put_bytes(b"hello artifacts".to_vec())
            .await
            .unwrap()
            .created
    );
    assert_eq!(store.locate(&put.sha256).await.unwrap(), Some(Tier::Active));

    store.delete(&put.sha256).await.unwrap();
    assert_eq!(store.locate(&put.sha256).await.unwrap(), None);
    assert!(!obj.exists());
    assert!(matches!(
        store.delete(&put.sha256).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.open(&put.sha256).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.local_path(&put.sha256).await.unwrap().is_none());
    assert!(matches!(
        store.archive(&"0".repeat(64)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.locate("not-a-sha").await,
        Err(StoreError::InvalidInput { .. })
    ));
    // no temp file left behind
    assert!(files_under(store.tmp_dir()).is_empty());
}

#[tokio::test]
async fn bad_settings_are_refused_and_a_missing_bucket_is_named() {
    let Some(s3) = S3Server::start("s3_settings").await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    for url in ["s3://", "s3://B", "file:///x", "s3://ok-bucket/../x"] {
        let err = Artifacts::open(Some(url), data.path(), 1 << 20, s3.env())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::InvalidInput {
                    field: "artifact_store",
                    ..
                }
            ),
            "{url}: {err}"
        );
    }
    let env = s3.env();
    let no_http = move |k: &str| {
        if k == "AWS_ALLOW_HTTP" { None } else { env(k) }
    };
    let err = Artifacts::open(Some("s3://mlx-hub"), data.path(), 1 << 20, no_http)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("AWS_ALLOW_HTTP"), "{err}");
    let err = Artifacts::open(
        Some("s3://no-such-bucket/p"),
        data.path(),
        1 << 20,
        s3.env(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, StoreError::ObjectStore { .. }) && err.to_string().contains("no-such-bucket"),
        "{err}"
    );
    // the secret never shows in errors or Debug output
    let settings = hub::artifacts::s3::S3Settings::from_url("s3://mlx-hub/p", s3.env()).unwrap();
    assert!(!format!("{settings:?}").contains(SECRET_KEY));
    assert!(!err.to_string().contains(SECRET_KEY));
}

#[tokio::test]
async fn corrupt_object_is_refused_naming_sha_and_key_and_nothing_is_cached() {
    let Some(s3) = S3Server::start("s3_corrupt").await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let store = s3.store("c", data.path(), 1 << 30).await;
    let put = store.put_bytes(vec![7u8; 4096]).await.unwrap();
    let key = blob_key("c", &put.sha256);
    corrupt(&s3.object_file(&key));
    let err = store.open(&put.sha256).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::IntegrityMismatch { .. }), "{msg}");
    assert!(msg.contains(&put.sha256) && msg.contains(&key), "{msg}");
    let herr = hub::HubError::from(err);
    assert_eq!(herr.status(), 502);
    assert_eq!(herr.code(), "artifact_corrupt");
    assert!(matches!(
        store.local_path(&put.sha256).await,
        Err(StoreError::IntegrityMismatch { .. })
    ));
    // nothing reached the cache, no temp file is left
    let s3store = store.s3().unwrap();
    assert!(s3store.cache().list().unwrap().is_empty());
    assert!(files_under(store.tmp_dir()).is_empty());
}

#[tokio::test]
async fn cache_is_bounded_evicting_least_recently_used_but_never_pinned_blobs() {
    let Some(s3) = S3Server::start("s3_cache_lru").await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    // room for two blobs of 1000 bytes, not three
    let store = s3.store("lru", data.path(), 2500).await;
    let s = store.s3().unwrap().clone();
    let mut shas = Vec::new();
    for b in [1u8, 2, 3] {
        shas.push(store.put_bytes(vec![b; 1000]).await.unwrap().sha256);
    }
    let (a, b, c) = (&shas[0], &shas[1], &shas[2]);
    let pinned_a = s.fetch(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(s.fetch(b).await.unwrap());
    tokio::time::sleep(Duration::from_millis(30)).await;
    // a is the least recently used but pinned: b goes
    drop(s.fetch(c).await.unwrap());
    let mut want = vec![a.clone(), c.clone()];
    want.sort();
    assert_eq!(s.cache().list().unwrap(), want);
    assert!(s.cache().size_bytes().unwrap() <= 2500);
    // the pinned file is intact and readable
    assert_eq!(std::fs::read(&pinned_a.path).unwrap(), vec![1u8; 1000]);
    drop(pinned_a);
    tokio::time::sleep(Duration::from_millis(30)).await;
    // b again: now a (oldest, unpinned) goes
    drop(s.fetch(b).await.unwrap());
    let mut want = vec![b.clone(), c.clone()];
    want.sort();
    assert_eq!(s.cache().list().unwrap(), want);

    // another process's pin (a second cache over the same directory) holds too
    let other = BlobCache::open(data.path().join("cache/blobs"), 2500).unwrap();
    let held = other.pin(b).unwrap().expect("b is cached");
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(s.fetch(c).await.unwrap());
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(s.fetch(a).await.unwrap());
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(s.cache().list().unwrap(), want, "c went, b was pinned");
    drop(held);
}

/// A hub over `db` whose artifacts live in the S3 server (its own data dir:
/// one "machine").
async fn s3_hub(s3: &S3Server, db: &TestDb, data: &Path) -> Hub {
    let mut config = HubConfig::with_data_dir(data);
    config.database_url = db.url.clone();
    let artifacts = s3.store("hub", data, 1 << 30).await;
    Hub::with_artifacts(config, db.store.clone(), artifacts).unwrap()
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(serde_json::to_vec(&v).unwrap())
        }
        None => Body::empty(),
    };
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
    };
    (status, v)
}

async fn register_tiny(hub: &Hub, model: &Path) -> hub::store::ModelVersion {
    let root = hub.import_root().unwrap();
    copy_dir(model, &root.join("tiny"));
    hub.register_model_folder_creating(
        "tiny",
        &RegisterFolder {
            path: "tiny".into(),
            ..RegisterFolder::default()
        },
        &root,
    )
    .await
    .expect("register tiny model")
}

#[tokio::test]
async fn a_model_registered_on_one_machine_is_served_on_another_through_the_cache() {
    let Some(model) = tiny_model("s3_serve") else {
        return;
    };
    let Some(s3) = S3Server::start("s3_serve").await else {
        return;
    };
    let db = common::sqlite().await;
    let (m1, m2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let h1 = s3_hub(&s3, &db, m1.path()).await;
    let v = register_tiny(&h1, &model).await;
    // the files are in the bucket, not in machine 1's data dir
    let files = db.store.version_files(v.id).await.unwrap();
    for f in &files {
        assert!(
            s3.object_file(&blob_key("hub", &f.sha256)).is_file(),
            "{}",
            f.path
        );
    }
    assert!(!m1.path().join("active").exists());

    let h2 = s3_hub(&s3, &db, m2.path()).await;
    let app = api::router::router(h2.clone());
    let (st, b) = call(
        &app,
        "POST",
        "/v1/completions",
        Some(json!({"model": "tiny:1", "prompt": "hello", "max_tokens": 4, "temperature": 0.0})),
    )
    .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["object"], "text_completion", "{b}");
    // machine 2 pulled every blob into its cache, hash-checked
    let cached = h2.artifacts.s3().unwrap().cache().list().unwrap();
    for f in &files {
        assert!(cached.contains(&f.sha256), "{} not cached", f.path);
        let p = h2.artifacts.blob_path(Tier::Active, &f.sha256);
        assert_eq!(hub::artifacts::sha256_file(&p).unwrap().0, f.sha256);
    }
    let (st, b) = call(&app, "GET", "/api/ps", None).await;
    assert_eq!(st, 200, "{b}");
}

async fn register_dataset(hub: &Hub) -> hub::store::Dataset {
    let root = hub.import_root().unwrap();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut s = String::new();
    for i in 0..20 {
        s += &json!({"text": format!("row {i}: the river crosses the stone {i} times.")})
            .to_string();
        s.push('\n');
    }
    std::fs::write(data.join("train.jsonl"), &s).unwrap();
    std::fs::write(
        data.join("valid.jsonl"),
        s.lines().take(4).collect::<Vec<_>>().join("\n") + "\n",
    )
    .unwrap();
    let (d, _) = hub
        .register_dataset_folder(
            &RegisterDataset {
                name: "text20".into(),
                path: "data".into(),
                description: String::new(),
            },
            &root,
        )
        .await
        .expect("register dataset");
    d
}

async fn enqueue_training(db: &TestDb, base_version_id: i64, d: &hub::store::Dataset) -> i64 {
    let mut t = serde_json::to_value(hub::jobs::TrainConfig::default()).unwrap();
    for (k, v) in [
        ("num_layers", json!(-1)),
        ("batch_size", json!(2)),
        ("iters", json!(4)),
        ("steps_per_report", json!(2)),
        ("steps_per_eval", json!(4)),
        ("val_batches", json!(1)),
        ("max_seq_length", json!(64)),
        ("learning_rate", json!(1e-3)),
        ("seed", json!(7)),
    ] {
        t[k] = v;
    }
    let config = json!({
        "base_model": "tiny",
        "base_version": 1,
        "base_version_id": base_version_id,
        "dataset": d.name,
        "dataset_version": d.version,
        "dataset_hash": d.content_hash,
        "train": t,
    });
    db.store
        .enqueue(&NewJob {
            base_version_id: Some(base_version_id),
            dataset_id: Some(d.id),
            max_attempts: 1,
            ..NewJob::new(JobKind::Train, config)
        })
        .await
        .unwrap()
        .id
}

/// Machine 1 registers the base model and the dataset (uploaded to the
/// bucket), then forgets its local dataset copy; a worker on machine 2 pulls
/// both through its cache, trains, uploads the adapter and registers it.
/// Then the base's weights are corrupted in the bucket: a worker on a third
/// machine (empty cache) fails the next job with the integrity error and
/// registers nothing.
#[tokio::test]
async fn workers_pull_through_the_cache_and_a_corrupt_base_fails_the_job() {
    let Some(model) = tiny_model("s3_train") else {
        return;
    };
    let Some(s3) = S3Server::start("s3_train").await else {
        return;
    };
    let db = common::sqlite().await;
    let (m1, m2, m3) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let h1 = s3_hub(&s3, &db, m1.path()).await;
    let base = register_tiny(&h1, &model).await;
    let d = register_dataset(&h1).await;
    std::fs::remove_dir_all(&d.location).unwrap();
    assert!(
        s3.object_file(&format!("hub/datasets/{}.json", d.content_hash))
            .is_file()
    );

    let h2 = s3_hub(&s3, &db, m2.path()).await;
    // a machine that never had the dataset previews it (fetched from the bucket)
    let (st, b) = call(
        &api::router::router(h2.clone()),
        "GET",
        &format!("/api/datasets/{}/preview?limit=2", d.name),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    assert_eq!(b["data"].as_array().unwrap().len(), 2, "{b}");
    assert_eq!(b["data"][0]["line"], 1, "{b}");
    let job = enqueue_training(&db, base.id, &d).await;
    let out = JobRunner::for_hub(&h2, "machine-2")
        .run_once()
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(out.job_id, job);
    assert_eq!(out.state, JobState::Succeeded, "{:?}", out.error);
    let adapter = db.store.get_version(out.version_id.unwrap()).await.unwrap();
    for f in db.store.version_files(adapter.id).await.unwrap() {
        assert!(
            s3.object_file(&blob_key("hub", &f.sha256)).is_file(),
            "{}",
            f.path
        );
    }
    // the dataset was materialised on machine 2 from the bucket
    assert!(
        m2.path()
            .join("datasets")
            .join(&d.content_hash)
            .join("train.jsonl")
            .is_file()
    );

    let weights = db
        .store
        .version_files(base.id)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.path.ends_with(".safetensors"))
        .unwrap();
    let key = blob_key("hub", &weights.sha256);
    corrupt(&s3.object_file(&key));
    let versions_before = db.store.registering_version_ids().await.unwrap().len();
    let h3 = s3_hub(&s3, &db, m3.path()).await;
    let job2 = enqueue_training(&db, base.id, &d).await;
    let out = JobRunner::for_hub(&h3, "machine-3")
        .run_once()
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(out.job_id, job2);
    assert_eq!(out.state, JobState::Failed);
    assert!(out.version_id.is_none());
    let err = out.error.unwrap();
    assert!(
        err.contains(&weights.sha256) && err.contains(&key) && err.contains("integrity"),
        "{err}"
    );
    let j = db.store.get_job(job2).await.unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert!(j.error.unwrap().contains(&weights.sha256));
    assert!(j.result_version_id.is_none());
    assert_eq!(
        db.store.registering_version_ids().await.unwrap().len(),
        versions_before
    );
    // the adapter model still has exactly the one version machine 2 made
    let lora = db.store.get_model(adapter.model_id).await.unwrap();
    let vs = db.store.list_versions(lora.id, None).await.unwrap();
    assert_eq!(vs.len(), 1, "{vs:?}");
    // nothing corrupt was cached on machine 3
    let cached = h3.artifacts.s3().unwrap().cache().list().unwrap();
    assert!(!cached.contains(&weights.sha256));
}

fn caps(device: DeviceKind, memory_bytes: u64) -> WorkerCapabilities {
    WorkerCapabilities {
        device,
        memory_bytes,
        mlx_version: "test".into(),
    }
}

async fn requirements_gate_claims(db: TestDb) {
    let s = &db.store;
    let gpu_job = s
        .enqueue_with(
            &NewJob::new(JobKind::Train, json!({})),
            &JobRequirements {
                device: Some(DeviceKind::Gpu),
                min_memory_bytes: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(gpu_job.requirements.device, Some(DeviceKind::Gpu));
    let big_job = s
        .enqueue_with(
            &NewJob::new(JobKind::Train, json!({})),
            &JobRequirements {
                device: None,
                min_memory_bytes: Some(64 << 30),
            },
        )
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let small_cpu = caps(DeviceKind::Cpu, 8 << 30);
    // a small cpu worker fits neither
    assert!(
        s.claim_fitting("cpu-small", lease, Some(&small_cpu))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.get_job(gpu_job.id).await.unwrap().state, JobState::Queued);
    assert_eq!(s.get_job(big_job.id).await.unwrap().state, JobState::Queued);
    // a big cpu worker takes the memory-hungry one, not the gpu one
    let got = s
        .claim_fitting("cpu-big", lease, Some(&caps(DeviceKind::Cpu, 128 << 30)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, big_job.id);
    assert!(
        s.claim_fitting("cpu-big-2", lease, Some(&caps(DeviceKind::Cpu, 128 << 30)))
            .await
            .unwrap()
            .is_none()
    );
    let got = s
        .claim_fitting("gpu", lease, Some(&caps(DeviceKind::Gpu, 8 << 30)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.id, gpu_job.id);
    // validation
    let err = s
        .enqueue_with(
            &NewJob::new(JobKind::Train, json!({})),
            &JobRequirements {
                device: None,
                min_memory_bytes: Some(0),
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidInput {
                field: "requirements.min_memory_bytes",
                ..
            }
        ),
        "{err}"
    );

    // a worker advertises itself and claims only what fits
    let _queued = s
        .enqueue_with(
            &NewJob::new(JobKind::Train, json!({})),
            &JobRequirements {
                device: Some(DeviceKind::Gpu),
                min_memory_bytes: Some(1 << 30),
            },
        )
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let artifacts = hub::LocalArtifactStore::open(data.path()).unwrap();
    let w = JobRunner::new(s.clone(), artifacts, "cpu-worker").with_capabilities(small_cpu.clone());
    assert!(
        w.run_once().await.unwrap().is_none(),
        "a gpu job is not claimed by a cpu worker"
    );
    let workers = s.list_workers().await.unwrap();
    let me = workers.iter().find(|w| w.id == "cpu-worker").unwrap();
    assert_eq!(me.device, DeviceKind::Cpu);
    assert_eq!(me.memory_bytes, 8 << 30);
    assert_eq!(me.mlx_version, "test");
}

#[tokio::test]
async fn requirements_gate_claims_sqlite() {
    requirements_gate_claims(common::sqlite().await).await;
}

#[tokio::test]
async fn requirements_gate_claims_postgres() {
    let Some(db) = common::postgres("requirements_gate_claims_postgres").await else {
        return;
    };
    requirements_gate_claims(db).await;
}

#[tokio::test]
async fn job_requirements_over_http_are_validated_and_workers_listed() {
    let th = common::http::TestHub::new(common::sqlite().await);
    for (req, field) in [
        (json!({"device": "tpu"}), "device"),
        (json!({"min_memory_bytes": -1}), "min_memory_bytes"),
        (
            json!({"min_memory_bytes": 0}),
            "requirements.min_memory_bytes",
        ),
        (json!({"cores": 4}), "cores"),
    ] {
        let (st, b) = th
            .call(
                "POST",
                "/api/jobs",
                Some(json!({"base_model": "none", "dataset": "none", "requirements": req})),
            )
            .await;
        assert_eq!(st, 422, "{req}: {b}");
        assert!(
            b["error"]["message"].as_str().unwrap().contains(field),
            "{req}: {b}"
        );
    }
    let w = JobRunner::for_hub(&th.hub, "listed-worker");
    assert!(w.run_once().await.unwrap().is_none());
    let (st, b) = th.call("GET", "/api/workers", None).await;
    assert_eq!(st, 200, "{b}");
    let me = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["id"] == "listed-worker")
        .cloned()
        .unwrap();
    assert!(me["device"] == "cpu" || me["device"] == "gpu", "{me}");
    assert!(me["memory_bytes"].as_u64().unwrap() > 0, "{me}");
    assert!(!me["mlx_version"].as_str().unwrap().is_empty());
}
