//! MLflow sync against a real `mlflow server`: a training job's run (params,
//! metrics by step, status, tags), its adapter version and aliases appear in
//! MLflow, read back through MLflow's REST API; log-batch limits are kept
//! (2,500 metrics, 150 params); MLflow being down fails no job, shows in the
//! status, and the sync catches up once MLflow is back.

mod common;

use test_support::store_test;

use std::time::{Duration, Instant};

use common::TestDb;
use common::http::{TestHub, tiny_model};
use common::mlflow::{MlflowServer, mlflow_available};
use hub::jobs::JobRunner;
use hub::mlflow::MlflowSync;
use hub::store::{JobKind, JobState, MetricPoint, NewJob, NewRun, RunStatus};
use serde_json::{Value, json};
use test_support::free_port;

struct Fixture {
    th: TestHub,
    base_version_id: i64,
    dataset_id: i64,
}

async fn setup(db: TestDb, test: &str) -> Option<Fixture> {
    let model = tiny_model(test)?;
    if !mlflow_available(test) {
        return None;
    }
    let th = TestHub::new(db);
    let v = th.register_model_copy("tiny", &model).await;
    let d = th
        .register_data_folder("text", |data| {
            test_support::write_text_rows(&data.join("train.jsonl"), 12);
            test_support::write_text_rows(&data.join("valid.jsonl"), 4);
        })
        .await;
    Some(Fixture {
        th,
        base_version_id: v.id,
        dataset_id: d.id,
    })
}

/// Runs one tiny LoRA job (6 steps, reports every 2) to success.
async fn train(f: &Fixture) -> (i64, i64) {
    let mut t = serde_json::to_value(hub::jobs::TrainConfig::default()).unwrap();
    for (k, v) in [
        ("num_layers", json!(-1)),
        ("batch_size", json!(2)),
        ("iters", json!(6)),
        ("steps_per_report", json!(2)),
        ("steps_per_eval", json!(100)),
        ("val_batches", json!(1)),
        ("max_seq_length", json!(32)),
        ("seed", json!(3)),
    ] {
        t[k] = v;
    }
    let job =
        f.th.db
            .store
            .enqueue(&NewJob {
                base_version_id: Some(f.base_version_id),
                dataset_id: Some(f.dataset_id),
                ..NewJob::new(
                    JobKind::Train,
                    json!({ "base_version_id": f.base_version_id, "train": t }),
                )
            })
            .await
            .unwrap();
    let out = JobRunner::for_hub(&f.th.hub, "w1")
        .run_once()
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(out.state, JobState::Succeeded, "{out:?}");
    assert_eq!(out.job_id, job.id);
    (out.run_id.unwrap(), out.version_id.unwrap())
}

/// Drains until nothing is pending (bounded).
async fn drain_all(sync: &MlflowSync, f: &Fixture) {
    for _ in 0..10 {
        let r = sync.drain_once().await.unwrap();
        let st = f.th.db.store.mlflow_status().await.unwrap();
        if st.pending == 0 {
            return;
        }
        assert_eq!(r.failed, 0, "sync failed: {st:?}");
    }
    panic!(
        "outbox not drained: {:?}",
        f.th.db.store.mlflow_status().await.unwrap()
    );
}

async fn mlflow_run_of(server: &MlflowServer, experiment: &str, run_id: i64) -> Value {
    let exp = server
        .get(
            "experiments/get-by-name",
            &[("experiment_name", experiment)],
        )
        .await;
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let found = server
        .post(
            "runs/search",
            json!({"experiment_ids": [exp_id], "filter": format!("tags.mlx_hub.run_id = '{run_id}'")}),
        )
        .await;
    let runs = found["runs"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        runs.len(),
        1,
        "exactly one MLflow run for hub run {run_id}: {found}"
    );
    runs[0].clone()
}

fn tag<'a>(run: &'a Value, key: &str) -> Option<&'a str> {
    run["data"]["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)?["value"]
        .as_str()
}

async fn mirrors_everything(db: TestDb) {
    let Some(f) = setup(db, "mlflow_mirrors_everything").await else {
        return;
    };
    let t0 = Instant::now();
    let server = MlflowServer::start(free_port()).await;
    let store = &f.th.db.store;
    let (run_id, version_id) = train(&f).await;
    let version = store.get_version(version_id).await.unwrap();
    let model = store.get_model(version.model_id).await.unwrap();
    store.set_alias(model.id, "prod", version_id).await.unwrap();

    // A hand-made run beyond log-batch's limits: 2,500 metrics, 150 params.
    let params: serde_json::Map<String, Value> =
        (0..150).map(|i| (format!("p{i:03}"), json!(i))).collect();
    let big = store
        .create_run(&NewRun {
            model_version_id: Some(f.base_version_id),
            name: "big".into(),
            params: Value::Object(params),
            ..NewRun::default()
        })
        .await
        .unwrap();
    let points: Vec<MetricPoint> = (0..2500)
        .map(|s| MetricPoint {
            key: "m".into(),
            step: s,
            value: s as f64 * 0.5,
            timestamp_ms: None,
        })
        .collect();
    store.log_metrics(big.id, &points).await.unwrap();
    store.end_run(big.id, RunStatus::Finished).await.unwrap();

    let before = store.mlflow_status().await.unwrap();
    assert!(
        before.pending >= 3 && before.unsynced_metrics >= 2500,
        "{before:?}"
    );
    let sync = MlflowSync::new(store.clone(), &server.uri).unwrap();
    drain_all(&sync, &f).await;
    let after = store.mlflow_status().await.unwrap();
    assert_eq!((after.pending, after.unsynced_metrics), (0, 0), "{after:?}");

    // The training run: in the base model's experiment, with params, the
    // metrics of every reported step, FINISHED, the hub commit.
    let run = mlflow_run_of(&server, "tiny", run_id).await;
    assert_eq!(run["info"]["status"], "FINISHED");
    assert!(tag(&run, "mlflow.source.git.commit").is_some_and(|c| !c.is_empty()));
    let mlflow_run_id = run["info"]["run_id"].as_str().unwrap().to_string();
    let params = run["data"]["params"].as_array().unwrap();
    let iters = params.iter().find(|p| p["key"] == "train.iters").unwrap();
    assert_eq!(iters["value"], "6");
    let history = server
        .get(
            "metrics/get-history",
            &[("run_id", &mlflow_run_id), ("metric_key", "train_loss")],
        )
        .await;
    let mut got: Vec<(i64, f64)> = history["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["step"].as_i64().unwrap(), m["value"].as_f64().unwrap()))
        .collect();
    got.sort_by_key(|x| x.0);
    let want: Vec<(i64, f64)> = store
        .metric_history(run_id, "train_loss", None)
        .await
        .unwrap()
        .iter()
        .map(|m| (m.step, m.value))
        .collect();
    assert_eq!(got, want);
    assert_eq!(want.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 4, 6]);

    // The big run: every metric and param arrived.
    let big_run = mlflow_run_of(&server, "tiny", big.id).await;
    assert_eq!(big_run["data"]["params"].as_array().unwrap().len(), 150);
    let big_id = big_run["info"]["run_id"].as_str().unwrap().to_string();
    let h = server
        .get(
            "metrics/get-history",
            &[("run_id", &big_id), ("metric_key", "m")],
        )
        .await;
    assert_eq!(h["metrics"].as_array().unwrap().len(), 2500);

    // The version: registered under the adapter's model, linked to its run,
    // carrying the alias.
    let rm = server
        .get("registered-models/get", &[("name", &model.name)])
        .await;
    let aliases = rm["registered_model"]["aliases"].as_array().unwrap();
    assert_eq!(aliases.len(), 1, "{rm}");
    assert_eq!(aliases[0]["alias"], "prod");
    let mv = server
        .get(
            "model-versions/get",
            &[
                ("name", &model.name),
                ("version", aliases[0]["version"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(mv["model_version"]["run_id"], mlflow_run_id.as_str());
    let tags = &mv["model_version"]["tags"];
    assert!(
        tags.as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "mlx_hub.version_id"
                && t["value"].as_str() == Some(&*version_id.to_string())),
        "{mv}"
    );

    // Moving the alias off: MLflow follows.
    store.remove_alias(model.id, "prod").await.unwrap();
    drain_all(&sync, &f).await;
    let rm = server
        .get("registered-models/get", &[("name", &model.name)])
        .await;
    assert!(
        rm["registered_model"]["aliases"]
            .as_array()
            .is_none_or(|a| a.is_empty()),
        "{rm}"
    );

    // Draining again creates nothing new (idempotent).
    store.mlflow_retry_all_now().await.unwrap();
    let _ = sync.drain_once().await.unwrap();
    mlflow_run_of(&server, "tiny", run_id).await;
    eprintln!(
        "mlflow_mirrors_everything ({}): {:?}",
        f.th.db.kind,
        t0.elapsed()
    );
}
store_test!(mirrors_everything);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mlflow_down_fails_no_job_and_sync_catches_up() {
    let Some(f) = setup(common::sqlite().await, "mlflow_down").await else {
        return;
    };
    let port = free_port();
    let uri = format!("http://127.0.0.1:{port}");
    let store = &f.th.db.store;
    let sync = MlflowSync::new(store.clone(), &uri)
        .unwrap()
        .with_backoff(Duration::from_secs(1), Duration::from_secs(4));

    // MLflow is down: the job succeeds all the same, the sync records why.
    let (run_id, _) = train(&f).await;
    let r = sync.drain_once().await.unwrap();
    assert!(r.failed >= 1 && r.pushed == 0, "{r:?}");
    let st = store.mlflow_status().await.unwrap();
    assert!(st.pending >= 2 && st.failing >= 1, "{st:?}");
    assert!(st.unsynced_metrics > 0, "{st:?}");
    assert!(
        st.errors[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("unreachable"),
        "{st:?}"
    );
    // Not due again before its backoff.
    assert_eq!(sync.drain_once().await.unwrap(), Default::default());

    // The status endpoint shows it.
    let mut config = (*f.th.hub.config).clone();
    config.mlflow_uri = Some(uri.clone());
    let hub2 = hub::Hub::with_store(config, store.clone()).unwrap();
    let app = api::router::router(hub2);
    use tower::ServiceExt;
    let resp = app
        .oneshot(
            axum::http::Request::get("/api/mlflow/status")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["enabled"], true);
    assert_eq!(body["in_sync"], false);
    assert!(body["outbox"]["pending"].as_i64().unwrap() >= 2, "{body}");

    // MLflow comes back: once the backoff lapses, everything arrives.
    let server = MlflowServer::start(port).await;
    f.th.db.clock.advance(5_000);
    drain_all(&sync, &f).await;
    let run = mlflow_run_of(&server, "tiny", run_id).await;
    assert_eq!(run["info"]["status"], "FINISHED");
    let mlflow_run_id = run["info"]["run_id"].as_str().unwrap().to_string();
    let h = server
        .get(
            "metrics/get-history",
            &[("run_id", &mlflow_run_id), ("metric_key", "train_loss")],
        )
        .await;
    assert_eq!(h["metrics"].as_array().unwrap().len(), 3);
    let st = store.mlflow_status().await.unwrap();
    assert_eq!((st.pending, st.failing), (0, 0), "{st:?}");
}

/// The steps of `train_loss` in an MLflow run, sorted (duplicates kept).
async fn loss_steps(server: &MlflowServer, mlflow_run: &str) -> Vec<i64> {
    let h = server
        .get(
            "metrics/get-history",
            &[("run_id", mlflow_run), ("metric_key", "train_loss")],
        )
        .await;
    let mut steps: Vec<i64> = h["metrics"]
        .as_array()
        .map(|a| a.iter().map(|m| m["step"].as_i64().unwrap()).collect())
        .unwrap_or_default();
    steps.sort();
    steps
}

/// GET `/health` through the hub's router.
async fn health(hub: &hub::Hub) -> u16 {
    use tower::ServiceExt;
    api::router::router(hub.clone())
        .oneshot(
            axum::http::Request::get("/health")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// MLflow restarts while the hub runs (same backend store): metrics logged
/// while it is down arrive once it is back, each exactly once, and the hub
/// stays healthy throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mlflow_restart_delivers_metrics_logged_while_down_once() {
    let Some(f) = setup(common::sqlite().await, "mlflow_restart").await else {
        return;
    };
    let t0 = Instant::now();
    let port = free_port();
    let mlflow_dir = tempfile::tempdir().unwrap();
    let server = MlflowServer::start_in(port, mlflow_dir.path()).await;
    let store = &f.th.db.store;
    let sync = MlflowSync::new(store.clone(), &server.uri)
        .unwrap()
        .with_backoff(Duration::from_secs(1), Duration::from_secs(4));
    let run = store
        .create_run(&NewRun {
            job_id: None,
            model_version_id: Some(f.base_version_id),
            name: "restart".into(),
            params: json!({"lr": 0.001}),
        })
        .await
        .unwrap();
    let points = |steps: std::ops::Range<i64>| -> Vec<MetricPoint> {
        steps
            .map(|s| MetricPoint {
                key: "train_loss".into(),
                step: s,
                value: 5.0 - s as f64 * 0.25,
                timestamp_ms: None,
            })
            .collect()
    };
    // MLflow up: the first half arrives
    store.log_metrics(run.id, &points(0..5)).await.unwrap();
    drain_all(&sync, &f).await;
    let mlflow_run = mlflow_run_of(&server, "tiny", run.id).await["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        loss_steps(&server, &mlflow_run).await,
        (0..5).collect::<Vec<_>>()
    );

    // MLflow goes down (its data stays in mlflow_dir)
    drop(server);
    let down_at = Instant::now();
    store.log_metrics(run.id, &points(5..10)).await.unwrap();
    store.end_run(run.id, RunStatus::Finished).await.unwrap();
    let r = sync.drain_once().await.unwrap();
    assert!(r.failed >= 1 && r.pushed == 0, "{r:?}");
    let st = store.mlflow_status().await.unwrap();
    assert!(st.unsynced_metrics >= 5 && st.failing >= 1, "{st:?}");
    assert_eq!(
        health(&f.th.hub).await,
        200,
        "the hub is healthy while MLflow is down"
    );

    // back on the same port and store: everything arrives, once
    let server = MlflowServer::start_in(port, mlflow_dir.path()).await;
    let outage = down_at.elapsed();
    f.th.db.clock.advance(5_000);
    drain_all(&sync, &f).await;
    let after = mlflow_run_of(&server, "tiny", run.id).await;
    assert_eq!(
        after["info"]["run_id"], mlflow_run,
        "the same MLflow run, not a second one"
    );
    assert_eq!(after["info"]["status"], "FINISHED");
    assert_eq!(
        loss_steps(&server, &mlflow_run).await,
        (0..10).collect::<Vec<_>>(),
        "every step exactly once"
    );
    let st = store.mlflow_status().await.unwrap();
    assert_eq!(
        (st.pending, st.failing, st.unsynced_metrics),
        (0, 0, 0),
        "{st:?}"
    );
    assert_eq!(health(&f.th.hub).await, 200);
    eprintln!(
        "mlflow restart: outage {:.1} s (restart included), all 10 steps delivered once, \
         test {:.1} s",
        outage.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
