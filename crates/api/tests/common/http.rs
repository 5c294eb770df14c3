//! Driving the real router in-process (tower `oneshot`), with a fresh data
//! directory per test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use hub::{Hub, HubConfig};
use serde_json::Value;
use tower::ServiceExt;

use super::TestDb;

pub struct TestHub {
    pub hub: Hub,
    pub app: Router,
    pub data_dir: PathBuf,
    pub import_root: PathBuf,
    pub db: TestDb,
    _dir: tempfile::TempDir,
}

impl TestHub {
    pub fn new(db: TestDb) -> TestHub {
        Self::with(db, |b| b)
    }

    pub fn with(
        db: TestDb,
        f: impl FnOnce(api::router::RouterBuilder) -> api::router::RouterBuilder,
    ) -> TestHub {
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("data");
        let mut config = HubConfig::with_data_dir(&data_dir);
        config.database_url = db.url.clone();
        config.max_body_bytes = 64 * 1024;
        let hub = Hub::with_store(config, db.store.clone()).expect("hub");
        let import_root = hub.import_root().expect("import root");
        let app = f(api::router::RouterBuilder::new(hub.clone())).build();
        TestHub {
            hub,
            app,
            data_dir,
            import_root,
            db,
            _dir: dir,
        }
    }

    /// Sends a request; returns the status and the JSON body (Null if empty).
    pub async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(serde_json::to_vec(&v).unwrap())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self
            .app
            .clone()
            .oneshot(req)
            .await
            .expect("router never fails");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "non-JSON body ({e}) for status {status}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, v)
    }

    /// Blobs in a tier.
    pub fn blobs(&self, tier: hub::Tier) -> Vec<String> {
        self.hub.artifacts.list_sync(tier).unwrap()
    }

    /// Files in this process's temp folder, other than its lock.
    pub fn temp_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(self.hub.artifacts.tmp_dir(), &mut out);
        out.retain(|p| p.file_name().is_some_and(|n| n != ".lock"));
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.push(p.clone());
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
}

/// Asserts the error body shape and returns its code.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "body: {body}");
    let e = body
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no error object in {body}"));
    assert_eq!(e.len(), 3, "error has exactly message/type/code: {body}");
    for k in ["message", "type", "code"] {
        assert!(
            e.get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "error.{k} missing or empty: {body}"
        );
    }
    assert_eq!(e["code"], want_code, "body: {body}");
}

/// The tiny model folder the parity fixtures provide, or None (skipped with a
/// printed reason unless `CI` is set).
pub fn tiny_model(test: &str) -> Option<PathBuf> {
    test_support::require(test, test_support::tiny_model())
}

pub use test_support::copy_dir;

impl TestHub {
    /// Registers the model folder `src` (copied into the import root) as
    /// `name`, creating the model.
    pub async fn register_model_copy(&self, name: &str, src: &Path) -> hub::store::ModelVersion {
        copy_dir(src, &self.import_root.join(name));
        self.hub
            .register_model_folder_creating(
                name,
                &hub::registry::RegisterFolder {
                    path: name.into(),
                    ..Default::default()
                },
                &self.import_root,
            )
            .await
            .expect("register the model")
    }

    /// Registers the import root's folder `data`, after `write` filled it, as
    /// dataset `name`.
    pub async fn register_data_folder(
        &self,
        name: &str,
        write: impl FnOnce(&Path),
    ) -> hub::store::Dataset {
        let data = self.import_root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        write(&data);
        self.hub
            .register_dataset_folder(
                &hub::dataset_import::RegisterDataset {
                    name: name.into(),
                    path: "data".into(),
                    description: String::new(),
                },
                &self.import_root,
            )
            .await
            .expect("register the dataset")
            .0
    }
}
