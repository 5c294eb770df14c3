//! Running one evaluation job: a version (an adapter version on top of its
//! base) on a dataset split → `test_loss` (mlx-lm's `evaluate`: the
//! token-weighted mean loss), `test_ppl` (its exponential) and, for
//! prompt/completion and chat data, `exact_match` (greedy generation of each
//! row's completion compared, trimmed, with the reference), recorded as a run
//! linked to the version.

use std::path::Path;
use std::sync::atomic::Ordering;

use engine::models::{LoadError, LoadOptions, Loaded};
use engine::tokenizer::Tokenizer;
use engine::train::data::load_split;
use engine::train::{DataFormat, DataOptions, FineTuneType, NumpyRng, evaluate};
use tokio::sync::watch;

use super::context::{Control, Failure, JobOutcome, JobRunner, fail};
use crate::jobs::EvalConfig;
use crate::store::{Job, JobState, MetricPoint, NewRun, RunStatus};

/// What an evaluation measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    pub loss: f64,
    pub perplexity: f64,
    /// Rows generated for exact match, and how many matched.
    pub examples: usize,
    pub matches: usize,
}

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
    let lost = ctl.lease_lost.load(Ordering::SeqCst);
    let (written, status) = match result {
        Ok(_) if !lost => (
            w.store.complete(job.id, &w.id, None).await,
            RunStatus::Finished,
        ),
        _ if lost => {
            out.error = Some("the worker lost the job's lease".into());
            (w.store.get_job(job.id).await, RunStatus::Failed)
        }
        Err(Failure::Cancelled { .. }) if ctl.released.load(Ordering::SeqCst) => {
            (w.store.release(job.id, &w.id).await, RunStatus::Killed)
        }
        Err(Failure::Cancelled { .. }) => (w.store.cancel(job.id, &w.id).await, RunStatus::Killed),
        Err(Failure::NonFinite { loss, .. }) => {
            let msg = format!("the evaluation loss is {loss}");
            out.error = Some(msg.clone());
            (w.store.fail(job.id, &w.id, &msg).await, RunStatus::Failed)
        }
        Err(Failure::Error(msg)) => {
            out.error = Some(msg.clone());
            (w.store.fail(job.id, &w.id, &msg).await, RunStatus::Failed)
        }
        Ok(_) => unreachable!("handled above"),
    };
    match written {
        Ok(j) => out.state = j.state,
        Err(e) => {
            tracing::warn!(job_id = job.id, error = %e, "could not record the job's result");
            out.lease_lost = true;
            out.state = JobState::Running;
        }
    }
    if lost {
        out.lease_lost = true;
    }
    if let Some(run_id) = out.run_id
        && let Err(e) = w.store.end_run(run_id, status).await
    {
        tracing::warn!(run_id, error = %e, "could not end the run");
    }
    out
}

async fn attempt(
    w: &JobRunner,
    job: &Job,
    ctl: &Control,
    out: &mut JobOutcome,
) -> Result<EvalResult, Failure> {
    let version_id = job
        .base_version_id
        .ok_or_else(|| fail("the job names no version to evaluate"))?;
    let dataset_id = job
        .dataset_id
        .ok_or_else(|| fail("the job names no dataset"))?;
    let cfg: EvalConfig = serde_json::from_value(job.config["eval"].clone())
        .map_err(|e| fail(format!("the job's eval settings: {e}")))?;
    let run = w
        .store
        .create_run(&NewRun {
            job_id: Some(job.id),
            model_version_id: Some(version_id),
            name: format!("eval-job-{}-attempt-{}", job.id, job.attempts),
            params: job.config.clone(),
        })
        .await?;
    out.run_id = Some(run.id);
    let version = w.store.get_version(version_id).await?;
    let (base, adapter) =
        crate::artifacts::checkout::weights_and_adapter(&w.store, &version).await?;
    let dataset = w.store.get_dataset(dataset_id).await?;
    let dataset_dir = w
        .artifacts
        .ensure_dataset(&dataset.content_hash, Path::new(&dataset.location))
        .await?;
    let split_file = dataset_dir.join(format!("{}.jsonl", cfg.split));

    let workdir = tempfile::Builder::new()
        .prefix(&format!("job-{}-", job.id))
        .tempdir_in(w.artifacts.tmp_dir())?;
    let model_dir = workdir.path().join("model");
    let adapter_dir = workdir.path().join("adapter");
    let checkout =
        |v, dir| crate::artifacts::checkout::checkout_version(&w.store, &w.artifacts, v, dir);
    checkout(&base, &model_dir)
        .await
        .map_err(|e| fail(format!("checking out the model: {e}")))?;
    if let Some(a) = &adapter {
        checkout(a, &adapter_dir)
            .await
            .map_err(|e| fail(format!("checking out the adapter: {e}")))?;
    }

    let cancel = ctl.cancel.clone();
    let has_adapter = adapter.is_some();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(format!("eval-job-{}", job.id))
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                evaluate_on_thread(
                    &model_dir,
                    has_adapter.then_some(adapter_dir.as_path()),
                    &split_file,
                    &cfg,
                    &|| cancel.load(Ordering::SeqCst),
                )
            }))
            .unwrap_or_else(|_| Err(fail("the evaluation panicked")));
            let _ = tx.send(r);
        })
        .map_err(|e| fail(format!("cannot start the evaluation thread: {e}")))?;
    let result = rx
        .await
        .map_err(|_| fail("the evaluation thread died without a result"))??;
    drop(workdir);

    let mut points = vec![
        MetricPoint {
            key: "test_loss".into(),
            step: 0,
            value: result.loss,
            timestamp_ms: None,
        },
        MetricPoint {
            key: "test_ppl".into(),
            step: 0,
            value: result.perplexity,
            timestamp_ms: None,
        },
    ];
    if result.examples > 0 {
        points.push(MetricPoint {
            key: "exact_match".into(),
            step: 0,
            value: result.matches as f64 / result.examples as f64,
            timestamp_ms: None,
        });
        points.push(MetricPoint {
            key: "exact_match_examples".into(),
            step: 0,
            value: result.examples as f64,
            timestamp_ms: None,
        });
    }
    points.retain(|p| p.value.is_finite());
    w.store.log_metrics(run.id, &points).await?;
    if !result.loss.is_finite() {
        return Err(Failure::NonFinite {
            step: 0,
            loss: result.loss as f32,
        });
    }
    Ok(result)
}

/// Runs on the evaluation thread: loads the model (and adapter), computes
/// the loss, then generates greedily for exact match.
fn evaluate_on_thread(
    model_dir: &Path,
    adapter_dir: Option<&Path>,
    split_file: &Path,
    cfg: &EvalConfig,
    cancelled: &dyn Fn() -> bool,
) -> Result<EvalResult, Failure> {
    // The adapter is applied at load: the loss below passes LoRA/DoRA explicitly
    // (`Adapt`, which the training forward pass uses alone), generation uses the
    // applied ones; a full fine-tune's weights replace the base's.
    let options = LoadOptions {
        adapter: adapter_dir,
        ..LoadOptions::default()
    };
    let Loaded {
        model, adapters, ..
    } = engine::models::load(model_dir, &options).map_err(|e| match e {
        LoadError::Model(e) => fail(format!("loading the model: {e}")),
        adapter @ LoadError::Adapter(_) => fail(adapter.to_string()),
    })?;
    let tokenizer =
        Tokenizer::from_dir(model_dir).map_err(|e| fail(format!("loading the tokenizer: {e}")))?;
    let split = load_split(
        split_file,
        &tokenizer,
        &DataOptions {
            mask_prompt: cfg.mask_prompt,
            ..DataOptions::default()
        },
    )
    .map_err(|e| fail(format!("loading the {} split: {e}", cfg.split)))?;
    // LoRA/DoRA enter the loss through `Adapt`; a full fine-tune replaces weights.
    let full = adapters
        .as_ref()
        .is_some_and(|a| a.config.spec.fine_tune_type == FineTuneType::Full);
    let adapt = engine::nn::Adapt {
        params: adapters.as_ref().filter(|_| !full).map(|a| &a.params),
        lora_scale: adapters.as_ref().map_or(0.0, |a| a.config.spec.lora.scale),
        dropout: 0.0,
    };
    let loss = evaluate(
        &model,
        &adapt,
        &split,
        cfg.batch_size as usize,
        cfg.num_batches,
        cfg.max_seq_length as usize,
        &mut NumpyRng::new(cfg.seed as u32),
    )
    .map_err(|e| fail(format!("evaluating: {e}")))? as f64;
    let mut result = EvalResult {
        loss,
        perplexity: loss.exp(),
        examples: 0,
        matches: 0,
    };
    if cfg.max_examples == 0 || split.format == DataFormat::Text {
        return Ok(result);
    }
    if cancelled() {
        return Err(Failure::Cancelled { step: 0 });
    }
    // The prompt/completion boundary: the same rows with the prompt masked.
    let masked = load_split(
        split_file,
        &tokenizer,
        &DataOptions {
            mask_prompt: true,
            ..DataOptions::default()
        },
    )
    .map_err(|e| fail(format!("loading the {} split: {e}", cfg.split)))?;
    let eos = tokenizer.eos_token_ids().to_vec();
    let until_eos = |ids: &[u32]| -> Vec<u32> {
        ids.iter()
            .copied()
            .take_while(|t| !eos.contains(t))
            .collect()
    };
    let text = |ids: &[u32]| -> Result<String, Failure> {
        Ok(tokenizer
            .decode(&until_eos(ids), true)
            .map_err(|e| fail(format!("decoding: {e}")))?
            .trim()
            .to_string())
    };
    for ex in masked.examples.iter().take(cfg.max_examples as usize) {
        if cancelled() {
            return Err(Failure::Cancelled { step: 0 });
        }
        if ex.offset == 0 || ex.offset >= ex.tokens.len() {
            continue;
        }
        let (prompt, reference) = ex.tokens.split_at(ex.offset);
        let want = text(reference)?;
        let n = (until_eos(reference).len() + 1).min(cfg.max_new_tokens as usize);
        let got = engine::generate::generate_greedy(&model, prompt, n)
            .map_err(|e| fail(format!("generating: {e}")))?;
        result.examples += 1;
        if text(&got)? == want {
            result.matches += 1;
        }
    }
    Ok(result)
}
