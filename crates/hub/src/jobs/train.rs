//! Running one training job: base version files → temp folder, dataset,
//! trainer on its own thread, metrics into the run, the adapter registered
//! as a new version with its lineage.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use engine::tokenizer::Tokenizer;
use engine::train::adapters::{ADAPTER_CONFIG, ADAPTER_FILE};
use engine::train::{
    AdapterSpec, DataOptions, FineTuneType, LoraParameters, OptimizerKind, TrainError, TrainEvent,
    load_dataset, train,
};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::context::{Control, Failure, JobOutcome, JobRunner, fail};
use crate::jobs::{TrainConfig as JobTrainConfig, TrainJobSpec};
use crate::observability::training::TrainingObserver;
use crate::store::{
    Job, JobState, Lineage, MetricPoint, ModelVersion, NewRun, NewVersion, RunStatus, StoreError,
};

pub(super) async fn run(
    w: &JobRunner,
    job: Job,
    shutdown: Option<watch::Receiver<bool>>,
) -> JobOutcome {
    let ctl = Control::default();
    let guards = ctl.guard(w, job.id, shutdown);
    let mut out = JobOutcome::new(job.id);
    let result = attempt(w, &job, &ctl, &mut out).await;
    guards.stop();
    finish(w, &job, &ctl, result, &mut out).await;
    out
}

/// Writes the job's and the run's final state.
async fn finish(
    w: &JobRunner,
    job: &Job,
    ctl: &Control,
    result: Result<ModelVersion, Failure>,
    out: &mut JobOutcome,
) {
    let (written, run_status) = match result {
        Ok(v) => {
            out.version_id = Some(v.id);
            out.state = JobState::Succeeded;
            (Ok(()), RunStatus::Finished)
        }
        Err(_) if ctl.lease_lost.load(Ordering::SeqCst) => {
            out.error = Some("the worker lost the job's lease".into());
            (Ok(()), RunStatus::Failed)
        }
        Err(Failure::Cancelled { step }) => {
            out.stopped_at_step = Some(step);
            let r = if ctl.released.load(Ordering::SeqCst) {
                w.store.release(job.id, &w.id).await
            } else {
                w.store.cancel(job.id, &w.id).await
            };
            (r.map(|j| out.state = j.state), RunStatus::Killed)
        }
        Err(Failure::NonFinite { step, loss }) => {
            out.stopped_at_step = Some(step);
            let msg = format!(
                "loss became {loss} at step {step}: training stopped, no version registered"
            );
            out.error = Some(msg.clone());
            let r = w.store.fail(job.id, &w.id, &msg).await;
            (r.map(|j| out.state = j.state), RunStatus::Failed)
        }
        Err(Failure::Error(msg)) => {
            out.error = Some(msg.clone());
            let r = w.store.fail(job.id, &w.id, &msg).await;
            (r.map(|j| out.state = j.state), RunStatus::Failed)
        }
    };
    if let Err(e) = written {
        tracing::warn!(job_id = job.id, error = %e, "could not record the job's result");
        out.lease_lost = true;
    }
    if ctl.lease_lost.load(Ordering::SeqCst) || out.lease_lost {
        out.lease_lost = true;
        out.state = w
            .store
            .get_job(job.id)
            .await
            .map(|j| j.state)
            .unwrap_or(JobState::Running);
    }
    if let Some(run_id) = out.run_id
        && let Err(e) = w.store.end_run(run_id, run_status).await
    {
        tracing::warn!(run_id, error = %e, "could not end the run");
    }
}

/// The job's record, typed; its base version from the job's column when set.
fn parse_spec(job: &Job) -> Result<(TrainJobSpec, i64, i64), Failure> {
    let spec: TrainJobSpec = serde_json::from_value(job.config.clone())
        .map_err(|e| fail(format!("invalid training config: {e}")))?;
    let base_version_id = job
        .base_version_id
        .or(spec.base_version_id)
        .ok_or_else(|| fail("the job names no base version"))?;
    let dataset_id = job
        .dataset_id
        .ok_or_else(|| fail("the job names no dataset"))?;
    Ok((spec, base_version_id, dataset_id))
}

fn engine_config(
    t: &JobTrainConfig,
    adapter_dir: &Path,
) -> Result<engine::train::TrainConfig, Failure> {
    let as_usize = |v: u32| v as usize;
    let mut extra = serde_json::Map::new();
    // the temp folder means nothing once registered
    extra.insert("adapter_path".into(), Value::from("."));
    Ok(engine::train::TrainConfig {
        adapter: AdapterSpec {
            fine_tune_type: FineTuneType::parse(&t.fine_tune_type)?,
            num_layers: i32::try_from(t.num_layers).map_err(|_| fail("num_layers out of range"))?,
            lora: LoraParameters {
                rank: t.lora_parameters.rank as usize,
                scale: t.lora_parameters.scale as f32,
                dropout: t.lora_parameters.dropout as f32,
                keys: None,
            },
        },
        optimizer: OptimizerKind::by_name(&t.optimizer)?,
        learning_rate: t.learning_rate as f32,
        schedule: None,
        batch_size: as_usize(t.batch_size),
        iters: as_usize(t.iters),
        val_batches: t.val_batches,
        steps_per_report: as_usize(t.steps_per_report),
        steps_per_eval: as_usize(t.steps_per_eval),
        save_every: as_usize(t.save_every),
        max_seq_length: as_usize(t.max_seq_length),
        seed: t.seed,
        adapter_path: Some(adapter_dir.to_path_buf()),
        resume: None,
        extra_config: extra,
        compile: true,
        // admission budgeted memory for it
        grad_checkpoint: t.grad_checkpoint,
        ..engine::train::TrainConfig::default()
    })
}

/// Everything up to (and including, on success) the job's completion.
async fn attempt(
    w: &JobRunner,
    job: &Job,
    ctl: &Control,
    out: &mut JobOutcome,
) -> Result<ModelVersion, Failure> {
    let run = w
        .store
        .create_run(&NewRun {
            job_id: Some(job.id),
            model_version_id: None,
            name: format!("job-{}-attempt-{}", job.id, job.attempts),
            params: job.config.clone(),
        })
        .await?;
    out.run_id = Some(run.id);
    let (spec, base_version_id, dataset_id) = parse_spec(job)?;
    let base = w.store.get_version(base_version_id).await?;
    let base_model = w.store.get_model(base.model_id).await?;
    let dataset = w.store.get_dataset(dataset_id).await?;

    let workdir = tempfile::Builder::new()
        .prefix(&format!("job-{}-", job.id))
        .tempdir_in(w.artifacts.tmp_dir())?;
    let model_dir = workdir.path().join("model");
    let adapter_dir = workdir.path().join("adapters");
    let base_files =
        crate::artifacts::checkout::checkout_version(&w.store, &w.artifacts, &base, &model_dir)
            .await
            .map_err(|e| fail(format!("checking out the base model: {e}")))?;

    let cfg = engine_config(&spec.train, &adapter_dir)?;
    let iters = cfg.iters.max(1);
    let mask_prompt = spec.train.mask_prompt;
    // on another machine than the one it was registered on: fetched from the store
    let data_dir = w
        .artifacts
        .ensure_dataset(&dataset.content_hash, Path::new(&dataset.location))
        .await?;

    // the trainer, on its own thread
    let (tx, mut rx) = mpsc::unbounded_channel::<TrainEvent>();
    let (done_tx, done_rx) = oneshot::channel::<Result<usize, Failure>>();
    let handle = tokio::runtime::Handle::current();
    let (store, job_id, cancel) = (w.store.clone(), job.id, ctl.cancel.clone());
    let md = model_dir.clone();
    let weight_bytes: i64 = base_files
        .iter()
        .filter(|f| f.path.ends_with(".safetensors"))
        .map(|f| f.size_bytes.max(0))
        .sum();
    // the job's span (`job.run`) is the parent of the thread's spans
    let job_span = tracing::Span::current();
    let load_span = tracing::info_span!(
        "model.load",
        model = %format!("{}:{}", base_model.name, base.number),
        purpose = "train",
        weights_policy = "native",
        bytes = weight_bytes,
        duration_seconds = tracing::field::Empty,
    );
    let mut observer = TrainingObserver::new(job.id, &base_model.name, iters, job_span.clone());
    std::thread::Builder::new()
        .name(format!("train-job-{}", job.id))
        .spawn(move || {
            let _in_job = job_span.enter();
            // Each job reports its own peak (MLX's counter is process-wide; a serving
            // model in the same process sees its peak restart here too).
            mlx::system::reset_peak_memory();
            let mut on_event = |ev: &TrainEvent| {
                observer.on_event(ev);
                let _ = tx.send(ev.clone());
                if matches!(ev, TrainEvent::Train { .. })
                    && !cancel.load(Ordering::SeqCst)
                    && let Ok(j) = handle.block_on(store.get_job(job_id))
                    && j.cancel_requested
                {
                    cancel.store(true, Ordering::SeqCst);
                }
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                train_on_thread(
                    &md,
                    load_span,
                    &data_dir,
                    &cfg,
                    mask_prompt,
                    &cancel,
                    &mut on_event,
                )
            }))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(fail(format!("the trainer panicked: {msg}")))
            });
            // the job's gauges go before its end is reported
            drop(observer);
            drop(tx);
            let _ = done_tx.send(r);
        })
        .map_err(|e| fail(format!("cannot start the training thread: {e}")))?;

    // its events → metrics (whatever accumulated while the last write ran);
    // points the database refused (it is restarting) go with the next write
    let mut last_progress = -1.0f64;
    let mut points: Vec<MetricPoint> = Vec::new();
    while let Some(ev) = rx.recv().await {
        let mut step = None;
        let mut push = |ev: TrainEvent| {
            step = step.max(add_points(&ev, &mut points));
        };
        push(ev);
        while let Ok(ev) = rx.try_recv() {
            push(ev);
        }
        flush_metrics(w, run.id, &mut points).await;
        if let Some(s) = step {
            out.last_reported_step = Some(s);
            let p = (s as f64 / iters as f64).clamp(0.0, 1.0);
            if p > last_progress {
                last_progress = p;
                if let Err(e) = w.store.set_progress(job.id, &w.id, p).await {
                    tracing::warn!(job_id = job.id, error = %e, "could not record progress");
                }
            }
        }
    }
    // the last points the database refused: retried for about a lease
    let flush_until = std::time::Instant::now() + w.lease;
    while !points.is_empty() && std::time::Instant::now() < flush_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        flush_metrics(w, run.id, &mut points).await;
    }
    let trainable = done_rx
        .await
        .map_err(|_| fail("the training thread died without a result"))??;
    if ctl.lease_lost.load(Ordering::SeqCst) {
        return Err(fail("the worker lost the job's lease"));
    }

    // the adapter → a new version
    let model_name = spec
        .output_model
        .clone()
        .unwrap_or_else(|| format!("{}-lora", base_model.name));
    let lineage = Lineage {
        base_version_id: Some(base.id),
        dataset_id: Some(dataset.id),
        dataset_hash: Some(dataset.content_hash.clone()),
        job_id: Some(job.id),
        run_id: Some(run.id),
        config: Some(job.config.clone()),
        seed: Some(spec.train.seed),
        hub_commit: Some(w.provenance.hub_commit.clone()),
        mlx_version: Some(w.provenance.mlx_version.clone()),
        device: Some(w.provenance.device.clone()),
        blas: w.provenance.blas.clone(),
        lockfile_hash: Some(w.provenance.lockfile_hash.clone()),
        source: Some(format!("job {}", job.id)),
    };
    let version = crate::registry::register_version(
        &w.store,
        &w.artifacts,
        crate::registry::NewRegistration {
            model_name,
            create_model: Some(format!("Adapters trained from {}", base_model.name)),
            version: NewVersion {
                format: crate::store::ADAPTER_FORMAT.into(),
                architecture: base.architecture.clone(),
                parameter_count: Some(trainable as i64),
                dtype: base.dtype.clone(),
                quantization: None,
                artifact_uri: Some("cas://".into()),
                description: format!(
                    "adapter trained by job {} from {} v{}",
                    job.id, base_model.name, base.number
                ),
                tags: Vec::new(),
                lineage,
            },
            files: [ADAPTER_CONFIG, ADAPTER_FILE]
                .into_iter()
                .map(|name| (name.to_string(), adapter_dir.join(name)))
                .collect(),
            link: false,
            alias: None,
            owner: None,
            publish: crate::registry::Publish::CompletingJob {
                job_id: job.id,
                worker_id: w.id.clone(),
            },
        },
    )
    .await
    .inspect_err(
        |e| tracing::warn!(job_id = job.id, error = %e, "registering the adapter failed"),
    )?;
    drop(workdir);
    Ok(version)
}

/// Adds metric points for one event; returns its step for Train events.
/// Writes `points`, emptying it; on a database error keeps them (stamped
/// with their time) for the next call.
async fn flush_metrics(w: &JobRunner, run_id: i64, points: &mut Vec<MetricPoint>) {
    if points.is_empty() {
        return;
    }
    match w.store.log_metrics(run_id, points).await {
        Ok(()) => points.clear(),
        // a bad point (non-finite, bad key) would be refused forever
        Err(StoreError::InvalidInput { .. }) => points.clear(),
        Err(e) => {
            tracing::warn!(run_id, error = %e, pending = points.len(), "could not log metrics; will retry");
            let now = w.store.now_ms();
            for p in points.iter_mut() {
                p.timestamp_ms.get_or_insert(now);
            }
        }
    }
}

fn add_points(ev: &TrainEvent, points: &mut Vec<MetricPoint>) -> Option<usize> {
    let mut put = |key: &str, step: usize, value: f64| {
        if value.is_finite() {
            points.push(MetricPoint {
                key: key.to_string(),
                step: step as i64,
                value,
                timestamp_ms: None,
            });
        }
    };
    match ev {
        TrainEvent::Train {
            iteration,
            train_loss,
            learning_rate,
            iterations_per_second,
            tokens_per_second,
            trained_tokens,
            peak_memory_gb,
        } => {
            let s = *iteration;
            put("train_loss", s, *train_loss as f64);
            put("learning_rate", s, *learning_rate as f64);
            put("iterations_per_second", s, *iterations_per_second);
            put("tokens_per_second", s, *tokens_per_second);
            put("trained_tokens", s, *trained_tokens as f64);
            put("peak_memory_gb", s, *peak_memory_gb);
            Some(s)
        }
        TrainEvent::Val {
            iteration,
            val_loss,
            val_time,
        } => {
            put("val_loss", *iteration, *val_loss as f64);
            put("val_time", *iteration, *val_time);
            None
        }
        TrainEvent::Start { .. } | TrainEvent::Saved { .. } => None,
    }
}

/// Runs on the training thread: loads everything MLX touches, trains.
/// Returns the number of trainable parameters.
fn train_on_thread(
    model_dir: &Path,
    load_span: tracing::Span,
    data_dir: &Path,
    cfg: &engine::train::TrainConfig,
    mask_prompt: bool,
    cancel: &AtomicBool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<usize, Failure> {
    let t0 = std::time::Instant::now();
    crate::host::wire_gpu_memory_for(model_dir);
    let model = load_span
        .in_scope(|| engine::models::load(model_dir, &engine::models::LoadOptions::default()))
        .map_err(|e| fail(format!("loading the base model: {e}")))?
        .model;
    load_span.record("duration_seconds", t0.elapsed().as_secs_f64());
    drop(load_span);
    let tokenizer =
        Tokenizer::from_dir(model_dir).map_err(|e| fail(format!("loading the tokenizer: {e}")))?;
    let data = load_dataset(
        data_dir,
        &tokenizer,
        &DataOptions {
            mask_prompt,
            ..DataOptions::default()
        },
    )
    .map_err(|e| fail(format!("loading the dataset: {e}")))?;
    let mut trainable = 0usize;
    let mut on = |ev: &TrainEvent| {
        if let TrainEvent::Start {
            trainable_parameters,
            ..
        } = ev
        {
            trainable = *trainable_parameters;
        }
        on_event(ev);
    };
    match train(&model, &data, cfg, Some(cancel), &mut on) {
        Ok(_) => Ok(trainable),
        Err(TrainError::Cancelled { step }) => Err(Failure::Cancelled { step }),
        Err(TrainError::NonFinite { step, loss }) => Err(Failure::NonFinite { step, loss }),
        Err(e) => Err(fail(format!("training failed: {e}"))),
    }
}
