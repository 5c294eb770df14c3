//! Admission at submission (num_layers against the base model, estimated
//! peak memory against the budget → 422 with both numbers), and start-up
//! recovery of versions left `registering` by a dead process.

mod common;

use test_support::store_test;

use common::TestDb;
use common::http::{TestHub, assert_error, copy_dir, tiny_model};
use hub::registry::RegisterFolder;
use hub::store::{JobKind, Lineage, NewJob, NewModel, NewVersion, VersionFile, VersionStatus};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(app: &axum::Router, uri: &str, body: Value) -> (u16, Value) {
    let req = axum::http::Request::post(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn admission(db: TestDb) {
    let Some(model) = tiny_model("admission") else {
        return;
    };
    let th = TestHub::new(db);
    let root = th.import_root.clone();
    copy_dir(&model, &root.join("tiny"));
    th.hub
        .register_model_folder_creating(
            "tiny",
            &RegisterFolder {
                path: "tiny".into(),
                ..RegisterFolder::default()
            },
            &root,
        )
        .await
        .unwrap();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("train.jsonl"), "{\"text\": \"hello there\"}\n").unwrap();
    let (s, b) = th
        .call(
            "POST",
            "/api/datasets",
            Some(json!({"name": "d", "path": "data"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let layers =
        serde_json::from_str::<Value>(&std::fs::read_to_string(model.join("config.json")).unwrap())
            .unwrap()["num_hidden_layers"]
            .as_i64()
            .unwrap();
    let job = |config: Value| json!({"base_model": "tiny", "dataset": "d", "config": config});

    // num_layers beyond the base model's blocks: refused, naming the field.
    let (s, b) = th
        .call(
            "POST",
            "/api/jobs",
            Some(job(json!({"num_layers": layers + 1}))),
        )
        .await;
    assert_error(s, &b, 422, "invalid_input");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("config.num_layers") && msg.contains(&format!("{layers} layers")),
        "{b}"
    );

    // Within a budget of 1 GiB: accepted, the estimate recorded with the job.
    let mut config = (*th.hub.config).clone();
    config.memory_budget_bytes = Some(1 << 30);
    let app =
        api::router::router(hub::Hub::with_store(config.clone(), th.db.store.clone()).unwrap());
    let small = job(json!({"num_layers": -1, "batch_size": 1, "max_seq_length": 64}));
    let (s, b) = call(&app, "/api/jobs", small).await;
    assert_eq!(s, 201, "{b}");
    let est = &b["config"]["memory_estimate"];
    let total = est["total"].as_u64().unwrap();
    assert_eq!(
        total,
        ["weights", "adapters", "optimizer", "activations"]
            .iter()
            .map(|k| est[*k].as_u64().unwrap())
            .sum::<u64>()
    );
    assert!(est["weights"].as_u64().unwrap() > 0, "{est}");

    // A big batch × sequence blows the budget: 422 with estimate and budget.
    let big = job(json!({"num_layers": -1, "batch_size": 64, "max_seq_length": 4096}));
    let (s, b) = call(&app, "/api/jobs", big).await;
    assert_error(
        axum::http::StatusCode::from_u16(s).unwrap(),
        &b,
        422,
        "over_memory_budget",
    );
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("{} bytes", 1u64 << 30)), "{msg}");
    assert!(
        msg.contains("estimated peak memory") && msg.contains("activations"),
        "{msg}"
    );
    let jobs = th.db.store.list_jobs(&Default::default()).await.unwrap();
    assert_eq!(jobs.len(), 1, "only the admitted job is queued");
}
store_test!(admission);

async fn recovery(db: TestDb) {
    let th = TestHub::new(db);
    let s = &th.db.store;
    let m = s
        .create_model(&NewModel {
            name: "m".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // A blob only the interrupted version references.
    let src = th.data_dir.join("w.bin");
    std::fs::write(&src, b"half-registered weights").unwrap();
    let put = hub::ArtifactStore::put_file(&th.hub.artifacts, &src)
        .await
        .unwrap();
    s.record_artifact(&put.sha256, put.size_bytes as i64)
        .await
        .unwrap();
    let new_version = |lineage: Lineage| NewVersion {
        format: "mlx".into(),
        lineage,
        ..Default::default()
    };
    let old = s
        .create_version(m.id, &new_version(Lineage::default()))
        .await
        .unwrap();
    s.add_version_files(
        old.id,
        &[VersionFile {
            path: "w.bin".into(),
            size_bytes: put.size_bytes as i64,
            sha256: put.sha256.clone(),
        }],
    )
    .await
    .unwrap();
    // A version of a job that is still running (its worker is alive).
    let job = s
        .enqueue(&NewJob::new(JobKind::Train, json!({})))
        .await
        .unwrap();
    s.claim("w-live", std::time::Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let live = s
        .create_version(
            m.id,
            &new_version(Lineage {
                job_id: Some(job.id),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    th.db.clock.advance(2 * 3600 * 1000);
    // A fresh hand registration (another process may be copying files).
    let fresh = s
        .create_version(m.id, &new_version(Lineage::default()))
        .await
        .unwrap();

    let r = th
        .hub
        .recover_stale_registrations(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(r.failed_versions, vec![old.id]);
    assert_eq!(r.deleted_blobs, 1);
    assert_eq!(
        s.get_version(old.id).await.unwrap().status,
        VersionStatus::Failed
    );
    assert!(
        hub::ArtifactStore::local_path(&th.hub.artifacts, &put.sha256)
            .await
            .unwrap()
            .is_none()
    );
    for id in [live.id, fresh.id] {
        assert_eq!(
            s.get_version(id).await.unwrap().status,
            VersionStatus::Registering
        );
    }
    // Once the job is no longer running, its version is stale too.
    s.fail(job.id, "w-live", "worker gave up").await.unwrap();
    let r = th
        .hub
        .recover_stale_registrations(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(r.failed_versions, vec![live.id]);
}
store_test!(recovery);
