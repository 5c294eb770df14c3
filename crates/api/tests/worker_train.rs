//! The worker running real training jobs (the tiny parity fixture model) on
//! SQLite and PostgreSQL: success with metrics and a fully traced adapter
//! version, cancellation, NaN loss, and a dead worker's job re-run elsewhere.

mod common;

use test_support::store_test;

use std::path::Path;
use std::time::{Duration, Instant};

use common::TestDb;
use common::http::{TestHub, tiny_model};
use hub::artifacts::{ArtifactStore, sha256_file};
use hub::jobs::{JobOutcome, JobRunner};
use hub::store::{Job, JobKind, JobState, NewJob, RunStatus, VersionStatus};
use serde_json::{Value, json};

/// MLX's memory counters are per process: the tests of this file train one at a
/// time so that each job's peak is its own (the 20-jobs test compares them).
static MLX_MEMORY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Fixture {
    th: TestHub,
    base_version_id: i64,
    dataset_id: i64,
    dataset_hash: String,
}

async fn setup(db: TestDb, test: &str) -> Option<Fixture> {
    let model = tiny_model(test)?;
    let th = TestHub::new(db);
    let v = th.register_model_copy("tiny", &model).await;
    let d = th
        .register_data_folder("text20", |data| {
            write_rows(&data.join("train.jsonl"), 20);
            write_rows(&data.join("valid.jsonl"), 4);
        })
        .await;
    Some(Fixture {
        th,
        base_version_id: v.id,
        dataset_id: d.id,
        dataset_hash: d.content_hash,
    })
}

fn write_rows(path: &Path, n: usize) {
    let words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light"];
    let mut s = String::new();
    for i in 0..n {
        let text = format!(
            "row {i}: the {} {} crosses the {} {} times.",
            words[i % 7],
            words[(i * 3 + 1) % 7],
            words[(i * 5 + 2) % 7],
            i + 1
        );
        s += &json!({ "text": text }).to_string();
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

/// Enqueues a job as `POST /api/jobs` would store it, with `train` overrides
/// (no range checks: the NaN test needs a learning rate the API refuses).
async fn enqueue(f: &Fixture, train: Value) -> Job {
    let mut t = serde_json::to_value(hub::jobs::TrainConfig::default()).unwrap();
    t["num_layers"] = json!(-1);
    t["batch_size"] = json!(2);
    t["iters"] = json!(10);
    t["steps_per_report"] = json!(2);
    t["steps_per_eval"] = json!(5);
    t["val_batches"] = json!(1);
    t["max_seq_length"] = json!(64);
    t["learning_rate"] = json!(1e-3);
    t["seed"] = json!(7);
    for (k, v) in train.as_object().unwrap() {
        t[k] = v.clone();
    }
    let config = json!({
        "base_model": "tiny",
        "base_version": 1,
        "base_version_id": f.base_version_id,
        "dataset": "text20",
        "dataset_version": 1,
        "dataset_hash": f.dataset_hash,
        "train": t,
    });
    f.th.db
        .store
        .enqueue(&NewJob {
            base_version_id: Some(f.base_version_id),
            dataset_id: Some(f.dataset_id),
            ..NewJob::new(JobKind::Train, config)
        })
        .await
        .expect("enqueue")
}

fn worker(f: &Fixture, id: &str) -> JobRunner {
    JobRunner::for_hub(&f.th.hub, id).with_lease(Duration::from_secs(30))
}

/// No job temp folder is left in the artifact store's temp dir.
fn assert_no_job_dirs(f: &Fixture) {
    let left: Vec<_> = std::fs::read_dir(f.th.hub.artifacts.tmp_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("job-"))
        .collect();
    assert!(left.is_empty(), "temp folders left: {left:?}");
}

async fn train_succeeds(db: TestDb) {
    let _one_at_a_time = MLX_MEMORY.lock().await;
    let Some(f) = setup(db, "train_succeeds").await else {
        return;
    };
    let job = enqueue(&f, json!({})).await;
    let w = worker(&f, "w1");
    let t = Instant::now();
    let out = w.run_once().await.unwrap().expect("a job");
    eprintln!("train_succeeds: {:?} in {:?}", out.state, t.elapsed());
    assert_eq!(out.state, JobState::Succeeded, "{out:?}");
    let store = &f.th.db.store;
    let j = store.get_job(job.id).await.unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.progress, 1.0);
    let vid = j.result_version_id.expect("result version");
    assert_eq!(out.version_id, Some(vid));

    // the run and its metrics, by reported step
    let run = store.get_run(out.run_id.unwrap()).await.unwrap();
    assert_eq!(run.status, RunStatus::Finished);
    assert_eq!(run.job_id, Some(job.id));
    assert_eq!(run.params, j.config);
    for key in [
        "train_loss",
        "learning_rate",
        "tokens_per_second",
        "iterations_per_second",
        "peak_memory_gb",
    ] {
        let steps: Vec<i64> = store
            .metric_history(run.id, key, None)
            .await
            .unwrap()
            .iter()
            .map(|m| m.step)
            .collect();
        assert_eq!(steps, vec![2, 4, 6, 8, 10], "{key}");
    }
    let val: Vec<i64> = store
        .metric_history(run.id, "val_loss", None)
        .await
        .unwrap()
        .iter()
        .map(|m| m.step)
        .collect();
    // mlx-lm evaluates before steps 1, 5 and 10 and reports them as 0, 4, 9
    assert_eq!(val, vec![0, 4, 9]);

    // the version: ready, its files content-addressed, lineage complete
    let v = store.get_version(vid).await.unwrap();
    assert_eq!(v.status, VersionStatus::Ready);
    assert_eq!(v.format, "mlx-lora-adapter");
    let model = store.get_model(v.model_id).await.unwrap();
    assert_eq!(model.name, "tiny-lora");
    let files = store.version_files(vid).await.unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(names, ["adapter_config.json", "adapters.safetensors"]);
    for file in &files {
        let p =
            f.th.hub
                .artifacts
                .local_path(&file.sha256)
                .await
                .unwrap()
                .expect("blob stored");
        let (sha, size) = sha256_file(&p).unwrap();
        assert_eq!(sha, file.sha256);
        assert_eq!(size as i64, file.size_bytes);
        store.get_artifact(&file.sha256).await.unwrap();
    }
    let l = &v.lineage;
    assert_eq!(l.base_version_id, Some(f.base_version_id));
    assert_eq!(l.dataset_id, Some(f.dataset_id));
    assert_eq!(l.dataset_hash.as_deref(), Some(f.dataset_hash.as_str()));
    assert_eq!(l.job_id, Some(job.id));
    assert_eq!(l.run_id, Some(run.id));
    assert_eq!(l.seed, Some(7));
    assert_eq!(l.config.as_ref(), Some(&j.config));
    assert!(!l.hub_commit.as_deref().unwrap().is_empty());
    assert_eq!(l.lockfile_hash.as_deref().unwrap().len(), 64);
    assert!(l.mlx_version.is_some() && l.device.is_some());
    // the adapter config is mlx-lm's
    let cfg_blob =
        f.th.hub
            .artifacts
            .local_path(&files[0].sha256)
            .await
            .unwrap()
            .unwrap();
    let cfg: Value = serde_json::from_slice(&std::fs::read(cfg_blob).unwrap()).unwrap();
    assert_eq!(cfg["fine_tune_type"], "lora");
    assert_eq!(cfg["iters"], 10);
    assert_no_job_dirs(&f);
    // the queue is empty now
    assert!(w.run_once().await.unwrap().is_none());
}
store_test!(train_succeeds);

async fn cancel_while_running(db: TestDb) {
    let _one_at_a_time = MLX_MEMORY.lock().await;
    let Some(f) = setup(db, "cancel_while_running").await else {
        return;
    };
    let job = enqueue(
        &f,
        json!({"iters": 100000, "steps_per_report": 1, "steps_per_eval": 100000, "save_every": 100000}),
    )
    .await;
    let w = worker(&f, "w1");
    let task = tokio::spawn(async move { w.run_once().await });
    let store = f.th.db.store.clone();
    // wait for the run's first metrics
    let deadline = Instant::now() + Duration::from_secs(120);
    let run_id = loop {
        assert!(Instant::now() < deadline, "training never reported");
        if let Some(run) = store.list_runs_of_job(job.id).await.unwrap().first()
            && !store
                .metric_history(run.id, "train_loss", None)
                .await
                .unwrap()
                .is_empty()
        {
            break run.id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    store.request_cancel(job.id).await.unwrap();
    let logged = store
        .metric_history(run_id, "train_loss", None)
        .await
        .unwrap()
        .last()
        .unwrap()
        .step as usize;
    let t = Instant::now();
    let out: JobOutcome = task.await.unwrap().unwrap().expect("a job");
    let stopped = out.stopped_at_step.expect("stopped at a step");
    eprintln!(
        "cancel: last logged step {logged} at request, stopped at step {stopped}, {:?} later",
        t.elapsed()
    );
    assert_eq!(out.state, JobState::Cancelled, "{out:?}");
    assert!(
        stopped <= logged + 10,
        "cancel took {} steps",
        stopped - logged
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    let j = store.get_job(job.id).await.unwrap();
    assert_eq!(j.state, JobState::Cancelled);
    assert_eq!(j.result_version_id, None);
    assert_eq!(
        store.get_run(run_id).await.unwrap().status,
        RunStatus::Killed
    );
    assert!(store.get_model_by_name("tiny-lora").await.is_err());
    assert!(store.unreferenced_artifacts().await.unwrap().is_empty());
    assert_no_job_dirs(&f);
}
store_test!(cancel_while_running);

async fn nan_loss_fails(db: TestDb) {
    let _one_at_a_time = MLX_MEMORY.lock().await;
    let Some(f) = setup(db, "nan_loss_fails").await else {
        return;
    };
    let job = enqueue(&f, json!({"learning_rate": 1e30, "steps_per_report": 1})).await;
    let out = worker(&f, "w1").run_once().await.unwrap().expect("a job");
    assert_eq!(out.state, JobState::Failed, "{out:?}");
    let step = out.stopped_at_step.expect("the step");
    let store = &f.th.db.store;
    let j = store.get_job(job.id).await.unwrap();
    let err = j.error.expect("error message");
    eprintln!("nan: {err}");
    assert!(err.contains(&format!("at step {step}")), "{err}");
    assert!(err.contains("NaN") || err.contains("inf"), "{err}");
    assert_eq!(j.result_version_id, None);
    let run = store.get_run(out.run_id.unwrap()).await.unwrap();
    assert_eq!(run.status, RunStatus::Failed);
    assert!(store.get_model_by_name("tiny-lora").await.is_err());
    assert!(store.unreferenced_artifacts().await.unwrap().is_empty());
    assert_no_job_dirs(&f);
}
store_test!(nan_loss_fails);

async fn dead_worker_job_runs_elsewhere(db: TestDb) {
    let _one_at_a_time = MLX_MEMORY.lock().await;
    let Some(f) = setup(db, "dead_worker_job_runs_elsewhere").await else {
        return;
    };
    let job = enqueue(&f, json!({"iters": 4})).await;
    let store = f.th.db.store.clone();
    // a worker claims it with a short lease, then dies (never renews)
    let claimed = store
        .claim("dead-worker", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!(claimed.id, job.id);
    // nothing to do for another worker while the lease holds
    let w2 = worker(&f, "w2");
    assert!(w2.run_once().await.unwrap().is_none());
    f.th.db.clock.advance(6_000);
    // the next poll reaps the lapsed lease, claims the job and completes it
    let out = w2.run_once().await.unwrap().expect("the requeued job");
    assert_eq!(out.job_id, job.id);
    assert_eq!(out.state, JobState::Succeeded, "{out:?}");
    let j = store.get_job(job.id).await.unwrap();
    assert_eq!(j.state, JobState::Succeeded);
    assert_eq!(j.attempts, 2);
    let v = store
        .get_version(j.result_version_id.unwrap())
        .await
        .unwrap();
    assert_eq!(v.status, VersionStatus::Ready);
    // the dead worker can no longer write anything
    assert!(store.fail(job.id, "dead-worker", "late").await.is_err());
    assert_no_job_dirs(&f);
}
store_test!(dead_worker_job_runs_elsewhere);

/// The seed's stability criterion: 20 training jobs in a row on one worker all
/// succeed, and the last one's peak memory is within 10% of the first's (nothing
/// accumulates from job to job: caches, compiled graphs, model copies). The jobs
/// are identical (same seed, so the same batches) for their peaks to be comparable.
async fn twenty_jobs_in_a_row(db: TestDb) {
    let _one_at_a_time = MLX_MEMORY.lock().await;
    let Some(f) = setup(db, "twenty_jobs_in_a_row").await else {
        return;
    };
    let w = worker(&f, "w-seq");
    let store = &f.th.db.store;
    let mut peaks = Vec::new();
    let t = Instant::now();
    for i in 0..20 {
        let job = enqueue(&f, json!({"iters": 4, "steps_per_report": 4})).await;
        let out = w.run_once().await.unwrap().expect("a job");
        assert_eq!(out.state, JobState::Succeeded, "job {i}: {out:?}");
        assert_eq!(out.job_id, job.id);
        let peak = store
            .metric_history(out.run_id.unwrap(), "peak_memory_gb", None)
            .await
            .unwrap()
            .last()
            .expect("a peak memory report")
            .value;
        peaks.push(peak);
    }
    eprintln!(
        "twenty_jobs_in_a_row: {:?}; peak memory GB first {:.4}, last {:.4}, max {:.4}",
        t.elapsed(),
        peaks[0],
        peaks[19],
        peaks.iter().cloned().fold(0.0, f64::max)
    );
    assert!(
        peaks[19] <= peaks[0] * 1.10,
        "peak memory grew from {} GB (job 1) to {} GB (job 20): {peaks:?}",
        peaks[0],
        peaks[19]
    );
    assert_no_job_dirs(&f);
}
store_test!(twenty_jobs_in_a_row);
