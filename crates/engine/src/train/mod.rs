//! Fine-tuning as mlx-lm's `mlx_lm.lora` does it: JSONL datasets ([`data`], their
//! formats and row rules in [`format`]),
//! LoRA / DoRA / full fine-tune parameters and the adapter folder ([`adapters`]),
//! optimizers and schedules ([`optim`]), and the training loop ([`trainer`]).

pub mod adapters;
pub mod data;
pub mod format;
pub mod fuse;
pub mod optim;
pub mod scratch;
pub mod trainer;

use std::path::PathBuf;

pub use adapters::{
    AdapterConfig, AdapterSpec, Adapters, FineTuneType, LoraParameters, apply_adapters,
    load_adapters, load_into,
};
pub use data::{
    Batch, BatchPlan, DataFormat, DataKeys, DataOptions, Dataset, NumpyRng, Split, load_dataset,
};
pub use fuse::fuse_to_dir;
pub use optim::{Optimizer, OptimizerKind, Schedule};
pub use scratch::{llama_from_config_random, random_weights};
pub use trainer::{
    GradOptions, TrainConfig, TrainEvent, TrainOutcome, clip_grad_norm, default_loss, evaluate,
    train, train_with, training_loss,
};

/// Everything that can go wrong preparing or running a training job.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{file}, line {line}: {message}")]
    Data {
        file: String,
        line: usize,
        message: String,
    },
    #[error(
        "loss became {loss} at step {step}: training stopped (nothing from this step was saved)"
    )]
    NonFinite { step: usize, loss: f32 },
    #[error("training cancelled at step {step}")]
    Cancelled { step: usize },
    #[error("cannot access {path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] crate::weights::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Mlx(#[from] mlx::Error),
    #[error(transparent)]
    Convert(#[from] crate::convert::ConvertError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, TrainError>;
