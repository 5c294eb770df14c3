//! Conversion into mlx-lm's model-folder layout: GGUF import ([`convert_gguf`]) and
//! re-typing / quantizing / dequantizing an mlx-lm folder ([`convert_model`], like
//! `mlx_lm.convert`).
//!
//! Both write exactly what mlx-lm writes: `config.json` (keys sorted, 4-space indent,
//! `quantization` + `quantization_config` when quantized), the weights as
//! `model.safetensors` (or `model-0000k-of-0000N.safetensors` shards of at most 5 GB)
//! with `{"format": "mlx"}` header metadata, `model.safetensors.index.json`, and the
//! tokenizer files. Everything is written into a temporary folder beside the output and
//! renamed into place at the end; an existing output folder is never overwritten, and a
//! failed conversion leaves nothing behind.

mod gguf;
mod model;
mod writer;

use std::path::PathBuf;

pub use gguf::{
    GgufImportOptions, check_tensor_directory, convert_gguf, convert_gguf_with_progress,
};
pub use model::{ConvertOptions, convert_model, convert_model_with_progress};
pub use writer::MAX_SHARD_BYTES;
// For `train::fuse_to_dir`, which writes a merged model the same way.
pub(crate) use model::{dequantize_all, load_folder, quant_spec, write_folder};

use crate::config::ConfigError;
use crate::gguf_meta::GgufError;
use crate::weights::ModelError;

/// Everything that can go wrong converting a model.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error(
        "output folder {} already exists: delete it or choose another --mlx-path",
        .0.display()
    )]
    OutputExists(PathBuf),
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Gguf {
        path: PathBuf,
        #[source]
        source: GgufError,
    },
    #[error(
        "GGUF tensor `{name}` has type {type_name}, which cannot be imported (supported: F32, F16, Q4_0, Q4_1, Q8_0)"
    )]
    UnsupportedTensorType { name: String, type_name: String },
    #[error("GGUF tensor `{name}` is not a tensor of a llama model (no mlx-lm name for it)")]
    UnknownTensor { name: String },
    #[error(
        "GGUF file {} is truncated: tensor `{name}` needs bytes up to {needed}, the file has {len}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        name: String,
        needed: u64,
        len: u64,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Mlx(#[from] mlx::Error),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, ConvertError>;

/// What a conversion is doing, for progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvertEvent {
    /// A step begins (`"reading GGUF"`, `"quantizing"`, …).
    Stage(String),
    /// Shard `index` (1-based) of `count`, `bytes` long, is being written.
    Shard {
        index: usize,
        count: usize,
        name: String,
        bytes: u64,
    },
}

/// What a finished conversion wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConvertReport {
    pub output: PathBuf,
    /// Files of the output folder, by name.
    pub files: Vec<String>,
    pub tensors: usize,
    /// Bytes of tensor data (the index file's `total_size`).
    pub total_size: u64,
    /// The index file's `total_parameters` (quantized weights counted unpacked).
    pub total_parameters: u64,
    /// The `quantization` block of the written `config.json`, if any.
    pub quantization: Option<serde_json::Value>,
}
