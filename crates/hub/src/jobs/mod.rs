//! Jobs: submitting them ([`SubmitJob`]: the request, mlx-lm's hyperparameter
//! defaults and the checks made before a job is queued — base version exists and
//! is ready, dataset exists, values in range), admitting them under the memory
//! budget ([`admission`]), and running them ([`runner::JobRunner`]: claims
//! jobs with a lease and runs [`train`] or [`evaluate`]).

pub mod admission;
pub mod context;
pub mod evaluate;
pub mod runner;
pub mod train;

pub use crate::store::ADAPTER_FORMAT;
pub use context::{
    DEFAULT_LEASE, DEFAULT_POLL_INTERVAL, HEARTBEAT_INTERVAL, JobOutcome, JobRunner, Provenance,
    default_worker_id,
};

use serde::{Deserialize, Serialize};

use crate::error::{HubError, HubResult};
use crate::service::Hub;
use crate::store::{Job, JobKind, JobRequirements, NewJob, StoreError, VersionStatus};

/// LoRA parameters (mlx-lm: rank 8, dropout 0.0, scale 20.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraParameters {
    pub rank: u32,
    pub dropout: f64,
    pub scale: f64,
}

impl Default for LoraParameters {
    fn default() -> Self {
        LoraParameters {
            rank: 8,
            dropout: 0.0,
            scale: 20.0,
        }
    }
}

/// Training hyperparameters, named and defaulted as in `mlx_lm.lora`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `lora`, `dora` or `full`.
    pub fine_tune_type: String,
    /// `adam`, `adamw`, `sgd`, `adafactor`.
    pub optimizer: String,
    pub seed: u64,
    /// Blocks to adapt, counted from the last; -1 for all.
    pub num_layers: i64,
    pub batch_size: u32,
    pub iters: u32,
    pub val_batches: i64,
    pub learning_rate: f64,
    pub steps_per_report: u32,
    pub steps_per_eval: u32,
    pub save_every: u32,
    pub max_seq_length: u32,
    pub grad_checkpoint: bool,
    pub mask_prompt: bool,
    pub lora_parameters: LoraParameters,
    /// Also produce a fused model (hub extension; not supported by jobs yet:
    /// `true` is refused at submission, naming `config.fuse`).
    pub fuse: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            fine_tune_type: "lora".into(),
            optimizer: "adam".into(),
            seed: 0,
            num_layers: 16,
            batch_size: 4,
            iters: 1000,
            val_batches: 25,
            learning_rate: 1e-5,
            steps_per_report: 10,
            steps_per_eval: 200,
            save_every: 100,
            max_seq_length: 2048,
            grad_checkpoint: false,
            mask_prompt: false,
            lora_parameters: LoraParameters::default(),
            fuse: false,
        }
    }
}

impl TrainConfig {
    /// Range checks; errors name the field (`config.<field>`).
    pub fn validate(&self) -> HubResult<()> {
        let bad = |field: &'static str, m: &str| Err(HubError::invalid(field, m.to_string()));
        if !matches!(self.fine_tune_type.as_str(), "lora" | "dora" | "full") {
            return bad("config.fine_tune_type", "must be one of lora, dora, full");
        }
        if !matches!(
            self.optimizer.as_str(),
            "adam" | "adamw" | "sgd" | "adafactor"
        ) {
            return bad(
                "config.optimizer",
                "must be one of adam, adamw, sgd, adafactor",
            );
        }
        if self.num_layers < -1 || self.num_layers == 0 {
            return bad(
                "config.num_layers",
                "must be positive, or -1 for all layers",
            );
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return bad("config.batch_size", "must be between 1 and 4096");
        }
        if self.iters == 0 {
            return bad("config.iters", "must be at least 1");
        }
        if self.val_batches < -1 {
            return bad("config.val_batches", "must be -1 (all) or more");
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0)
        {
            return bad("config.learning_rate", "must be a number in (0, 1)");
        }
        if self.steps_per_report == 0 || self.steps_per_eval == 0 || self.save_every == 0 {
            return bad(
                "config.steps_per_report",
                "steps_per_report, steps_per_eval and save_every must be at least 1",
            );
        }
        if self.max_seq_length < 8 || self.max_seq_length > 1 << 20 {
            return bad("config.max_seq_length", "must be between 8 and 1048576");
        }
        if self.fuse {
            return bad(
                "config.fuse",
                "jobs do not fuse yet: train, then run `mlx-hub fuse` on the trained version",
            );
        }
        let l = &self.lora_parameters;
        if l.rank == 0 || l.rank > 4096 {
            return bad("config.lora_parameters.rank", "must be between 1 and 4096");
        }
        if !(l.dropout.is_finite() && (0.0..1.0).contains(&l.dropout)) {
            return bad("config.lora_parameters.dropout", "must be in [0, 1)");
        }
        if !l.scale.is_finite() {
            return bad("config.lora_parameters.scale", "must be a finite number");
        }
        Ok(())
    }
}

/// Settings of an evaluation job (`kind: "evaluate"`), named after
/// `mlx_lm.lora --test` where it has them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// The dataset split to evaluate on (`test`, `valid` or `train`).
    pub split: String,
    pub batch_size: u32,
    /// Batches for the loss (-1: the whole split; mlx-lm's `test_batches`).
    pub num_batches: i64,
    pub max_seq_length: u32,
    /// Leave the prompt out of the loss (prompt/completion and chat data).
    pub mask_prompt: bool,
    /// Rows generated greedily for exact-match accuracy (prompt/completion
    /// and chat data only; 0 to skip).
    pub max_examples: u32,
    /// Tokens generated per row at most (the reference's length bounds it too).
    pub max_new_tokens: u32,
    pub seed: u64,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            split: "test".into(),
            batch_size: 4,
            num_batches: -1,
            max_seq_length: 2048,
            mask_prompt: false,
            max_examples: 100,
            max_new_tokens: 256,
            seed: 0,
        }
    }
}

impl EvalConfig {
    pub fn validate(&self) -> HubResult<()> {
        let bad = |field: &'static str, m: &str| Err(HubError::invalid(field, m.to_string()));
        if !matches!(self.split.as_str(), "train" | "valid" | "test") {
            return bad("eval.split", "must be one of train, valid, test");
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            return bad("eval.batch_size", "must be between 1 and 4096");
        }
        if self.num_batches < -1 || self.num_batches == 0 {
            return bad("eval.num_batches", "must be -1 (all) or at least 1");
        }
        if self.max_seq_length < 8 || self.max_seq_length > 1 << 20 {
            return bad("eval.max_seq_length", "must be between 8 and 1048576");
        }
        if self.max_new_tokens == 0 || self.max_new_tokens > 8192 {
            return bad("eval.max_new_tokens", "must be between 1 and 8192");
        }
        Ok(())
    }
}

/// A training job's record (`training_jobs.config`): written once by
/// submission with everything resolved, read back by the runner. Old rows
/// (any subset of these keys) still read: every field has a default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainJobSpec {
    pub base_model: String,
    pub base_version: i64,
    pub base_version_id: Option<i64>,
    pub dataset: String,
    pub dataset_version: i64,
    pub dataset_hash: String,
    pub train: TrainConfig,
    /// The model the trained adapter is registered under (default `<base>-lora`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_model: Option<String>,
    /// Estimated peak memory (`null` without a config.json to estimate from).
    pub memory_estimate: Option<admission::MemoryEstimate>,
}

fn default_version() -> String {
    "latest".into()
}

fn default_attempts() -> i64 {
    3
}

/// `POST /api/jobs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// `train` (default) or `evaluate`.
    #[serde(default = "default_kind")]
    pub kind: JobKind,
    /// Name of the base model (of an evaluation: the model evaluated; an
    /// adapter version is evaluated on top of its base version).
    pub base_model: String,
    /// `3`, `v3`, `latest` or an alias (default `latest`).
    #[serde(default = "default_version")]
    pub base_version: String,
    /// Name of the dataset.
    pub dataset: String,
    /// Dataset version (default: the newest).
    #[serde(default)]
    pub dataset_version: Option<i64>,
    #[serde(default)]
    pub config: TrainConfig,
    /// The model the trained adapter is registered under, created when missing
    /// (default: `<base_model>-lora`).
    #[serde(default)]
    pub output_model: Option<String>,
    /// Settings of an evaluation job.
    #[serde(default)]
    pub eval: EvalConfig,
    #[serde(default = "default_attempts")]
    pub max_attempts: i64,
    #[serde(default)]
    pub priority: i64,
    /// What the worker must offer: `{"device": "cpu"|"gpu", "min_memory_bytes": N}`.
    #[serde(default)]
    pub requirements: JobRequirements,
}

fn default_kind() -> JobKind {
    JobKind::Train
}

impl Hub {
    /// Validates and enqueues a training job. The stored config is the full
    /// resolved one (defaults filled in, base and dataset named and numbered).
    pub async fn submit_job(&self, req: &SubmitJob) -> HubResult<Job> {
        if req.kind == JobKind::Evaluate {
            return self.submit_evaluation(req).await;
        }
        req.config.validate()?;
        if let Some(name) = &req.output_model {
            crate::store::check_model_name(name).map_err(|e| match e {
                StoreError::InvalidInput { message, .. } => {
                    HubError::invalid("output_model", message)
                }
                e => e.into(),
            })?;
        }
        req.requirements.validate()?;
        if !(1..=100).contains(&req.max_attempts) {
            return Err(HubError::invalid(
                "max_attempts",
                "must be between 1 and 100",
            ));
        }
        let model = self
            .store
            .get_model_by_name(&req.base_model)
            .await
            .map_err(|e| refers("base_model", e))?;
        let version = self
            .store
            .resolve_version(model.id, &req.base_version)
            .await
            .map_err(|e| refers("base_version", e))?;
        if version.status != VersionStatus::Ready {
            return Err(HubError::invalid(
                "base_version",
                format!(
                    "version {} of {} is {}, not ready",
                    version.number, model.name, version.status
                ),
            ));
        }
        // num_layers against the base model, peak memory against the budget
        let estimate = self.admit_training(&version, &req.config).await?;
        let dataset = self
            .store
            .get_dataset_by_name(&req.dataset, req.dataset_version)
            .await
            .map_err(|e| refers("dataset", e))?;
        if !dataset.splits.contains_key("train") {
            return Err(HubError::invalid(
                "dataset",
                "the dataset has no train split",
            ));
        }
        let config = serde_json::to_value(TrainJobSpec {
            base_model: model.name,
            base_version: version.number,
            base_version_id: Some(version.id),
            dataset: dataset.name,
            dataset_version: dataset.version,
            dataset_hash: dataset.content_hash,
            train: req.config.clone(),
            output_model: req.output_model.clone(),
            memory_estimate: estimate,
        })
        .map_err(|e| HubError::Internal(format!("encoding the job's config: {e}")))?;
        Ok(self
            .store
            .enqueue_with(
                &NewJob {
                    kind: req.kind,
                    config,
                    base_version_id: Some(version.id),
                    dataset_id: Some(dataset.id),
                    max_attempts: req.max_attempts,
                    priority: req.priority,
                },
                &req.requirements,
            )
            .await?)
    }
}

impl Hub {
    /// Validates and enqueues an evaluation job: the version (ready or
    /// archived) and a dataset with the split asked for.
    async fn submit_evaluation(&self, req: &SubmitJob) -> HubResult<Job> {
        req.eval.validate()?;
        req.requirements.validate()?;
        if !(1..=100).contains(&req.max_attempts) {
            return Err(HubError::invalid(
                "max_attempts",
                "must be between 1 and 100",
            ));
        }
        let model = self
            .store
            .get_model_by_name(&req.base_model)
            .await
            .map_err(|e| refers("base_model", e))?;
        let version = self
            .store
            .resolve_version(model.id, &req.base_version)
            .await
            .map_err(|e| refers("base_version", e))?;
        if !matches!(
            version.status,
            VersionStatus::Ready | VersionStatus::Archived
        ) {
            return Err(HubError::invalid(
                "base_version",
                format!(
                    "version {} of {} is {}: only a ready version can be evaluated",
                    version.number, model.name, version.status
                ),
            ));
        }
        let dataset = self
            .store
            .get_dataset_by_name(&req.dataset, req.dataset_version)
            .await
            .map_err(|e| refers("dataset", e))?;
        if !dataset.splits.contains_key(&req.eval.split) {
            return Err(HubError::invalid(
                "eval.split",
                format!(
                    "dataset {} v{} has no {} split (it has: {})",
                    dataset.name,
                    dataset.version,
                    req.eval.split,
                    dataset
                        .splits
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let config = serde_json::json!({
            "model": model.name,
            "version": version.number,
            "version_id": version.id,
            "dataset": dataset.name,
            "dataset_version": dataset.version,
            "dataset_hash": dataset.content_hash,
            "eval": req.eval,
        });
        Ok(self
            .store
            .enqueue_with(
                &NewJob {
                    kind: JobKind::Evaluate,
                    config,
                    base_version_id: Some(version.id),
                    dataset_id: Some(dataset.id),
                    max_attempts: req.max_attempts,
                    priority: req.priority,
                },
                &req.requirements,
            )
            .await?)
    }
}

/// A reference in a request body to something missing is a 422 naming the
/// field, not a 404 of the endpoint.
fn refers(field: &'static str, e: StoreError) -> HubError {
    match e {
        StoreError::NotFound { entity, key } => {
            HubError::invalid(field, format!("{entity} {key} not found"))
        }
        e => e.into(),
    }
}
