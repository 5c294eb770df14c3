//! Disk faults: the data directory on a small tmpfs that fills up, and on a
//! tmpfs remounted read-only. Registrations and uploads fail with a 507 that
//! says so (`insufficient_storage`: `No space left on device`;
//! `read_only_storage`: `Read-only file system`), never a 500, leave
//! no ready version, no dataset row, no temporary file; after a full disk,
//! the space is given back (a small registration then succeeds).
//!
//! Mounting needs root: as another user the test is skipped with a printed
//! reason, except under `CI` where it fails (CI runs as root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::body::Body;
use axum::http::Request;
use common::http::{copy_dir, tiny_model};
use hub::store::{ModelFilter, VersionStatus};
use hub::{Hub, HubConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A tmpfs of `size` mounted on `dir`, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    /// Lays a read-only bind mount of the folder over itself (a plain
    /// `remount,ro` is refused while the hub holds files open for writing).
    fn read_only(&self) {
        for args in [&["--bind"][..], &["-o", "remount,bind,ro"][..]] {
            let ok = Command::new("mount")
                .args(args)
                .arg(&self.0)
                .arg(&self.0)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount {args:?} {}", self.0.display());
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // the read-only bind mount, then the tmpfs (lazily if something still
        // holds a file open there)
        for _ in 0..2 {
            let ok = Command::new("umount")
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

fn can_mount(test: &str) -> bool {
    let root = if is_root() {
        Ok(())
    } else {
        Err("needs root to mount a tmpfs".to_string())
    };
    test_support::require(test, root).is_some()
}

async fn send(app: &axum::Router, req: Request<Body>) -> (u16, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A valid safetensors file of `len` bytes of data (one U8 tensor).
fn shard(path: &Path, len: usize) {
    let header = json!({"pad": {"dtype": "U8", "shape": [len], "data_offsets": [0, len]}})
        .to_string()
        .into_bytes();
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    bytes.extend((0..len).map(|i| (i * 7919 % 251) as u8));
    std::fs::write(path, bytes).unwrap();
}

/// Files under `dir` but the temp folders' locks.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir.join("tmp")) else {
        return out;
    };
    for d in rd.flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            if f.file_name() != ".lock" {
                out.push(f.path());
            }
        }
    }
    out
}

struct Setup {
    app: axum::Router,
    hub: Hub,
    data: PathBuf,
    fs: Tmpfs,
    _db: common::TestDb,
    _dir: tempfile::TempDir,
}

/// A hub whose data dir is a `size` tmpfs; the import root (outside it)
/// holds `tiny` and `big` (tiny + a `big_mb` shard).
async fn setup(fixture: &Path, size: &str, big_mb: usize) -> Setup {
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fs = Tmpfs::mount(&data, size);
    let import = dir.path().join("import");
    copy_dir(fixture, &import.join("tiny"));
    copy_dir(fixture, &import.join("big"));
    shard(&import.join("big/extra.safetensors"), big_mb << 20);
    let mut config = HubConfig::with_data_dir(&data);
    config.database_url = db.url.clone();
    config.import_root = import;
    let hub = Hub::with_store(config, db.store.clone()).unwrap();
    let app = api::router::router(hub.clone());
    for m in ["tiny", "big"] {
        let (s, b) = send(&app, post("/api/models", json!({"name": m}))).await;
        assert_eq!(s, 201, "{b}");
    }
    Setup {
        app,
        hub,
        data,
        fs,
        _db: db,
        _dir: dir,
    }
}

async fn versions(hub: &Hub) -> Vec<(String, VersionStatus)> {
    let mut out = Vec::new();
    for m in hub
        .store
        .list_models(&ModelFilter::default())
        .await
        .unwrap()
    {
        for v in hub.store.list_versions(m.id, None).await.unwrap() {
            out.push((m.name.clone(), v.status));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_fails_cleanly_and_frees_the_space() {
    if !can_mount("disk_full") {
        return;
    }
    let Some(fixture) = tiny_model("disk_full") else {
        return;
    };
    let s = setup(&fixture, "4m", 8).await;
    // an 8 MiB folder into a 4 MiB data dir
    let (st, b) = send(
        &s.app,
        post("/api/models/big/versions", json!({"path": "big"})),
    )
    .await;
    let msg = b["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        st == 507
            && b["error"]["code"] == "insufficient_storage"
            && msg.contains("No space left on device"),
        "{st} {b}"
    );
    assert_eq!(
        versions(&s.hub).await,
        vec![("big".to_string(), VersionStatus::Failed)],
        "the version is failed, not ready"
    );
    assert!(temp_files(&s.data).is_empty(), "{:?}", temp_files(&s.data));
    assert!(
        s.hub
            .artifacts
            .list_sync(hub::Tier::Active)
            .unwrap()
            .is_empty(),
        "the blobs the failed registration wrote are removed"
    );
    // an upload larger than the space left
    let rows: String = (0..120_000)
        .map(|i| format!("{{\"text\": \"row {i} of an upload that does not fit\"}}\n"))
        .collect();
    assert!(rows.len() > 4 << 20);
    let (st, b) = send(
        &s.app,
        Request::post("/api/datasets/big-data/upload")
            .body(Body::from(rows))
            .unwrap(),
    )
    .await;
    let msg = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        st == 507
            && b["error"]["code"] == "insufficient_storage"
            && msg.contains("No space left on device"),
        "{st} {b}"
    );
    assert!(s.hub.store.list_datasets(None).await.unwrap().is_empty());
    assert!(temp_files(&s.data).is_empty(), "{:?}", temp_files(&s.data));
    // the space came back: a small registration goes through
    let (st, b) = send(
        &s.app,
        post("/api/models/tiny/versions", json!({"path": "tiny"})),
    )
    .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_data_dir_fails_cleanly() {
    if !can_mount("read_only") {
        return;
    }
    let Some(fixture) = tiny_model("read_only") else {
        return;
    };
    let s = setup(&fixture, "16m", 1).await;
    s.fs.read_only();
    let (st, b) = send(
        &s.app,
        post("/api/models/tiny/versions", json!({"path": "tiny"})),
    )
    .await;
    let msg = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        st == 507
            && b["error"]["code"] == "read_only_storage"
            && msg.contains("Read-only file system"),
        "{st} {b}"
    );
    assert!(
        versions(&s.hub)
            .await
            .iter()
            .all(|(_, v)| *v == VersionStatus::Failed),
        "no ready or registering version"
    );
    let (st, b) = send(
        &s.app,
        Request::post("/api/datasets/ro/upload")
            .body(Body::from("{\"text\": \"a\"}\n"))
            .unwrap(),
    )
    .await;
    let msg = b["error"]["message"].as_str().unwrap_or_default();
    assert!(
        st == 507
            && b["error"]["code"] == "read_only_storage"
            && msg.contains("Read-only file system"),
        "{st} {b}"
    );
    assert!(s.hub.store.list_datasets(None).await.unwrap().is_empty());
    // the API still answers
    let (st, _) = send(&s.app, Request::get("/health").body(Body::empty()).unwrap()).await;
    assert_eq!(st, 200);
}
