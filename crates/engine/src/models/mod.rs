//! Model families. Every supported `model_type` (`llama`, `mistral`, `qwen2`, `qwen3`)
//! is one implementation, [`llama::Llama`], steered by the flags of [`ModelConfig`],
//! as mlx-lm's `llama.py`, `qwen2.py` and `qwen3.py` compute them.

pub mod cache;
pub mod llama;

use std::path::Path;

use mlx::Array;

pub use cache::KvCache;
pub use llama::{Llama, set_fused_decode};
/// The dtype of [`LanguageModel::densify`].
pub use mlx::Dtype;

use crate::config::ModelConfig;
use crate::weights::Result;

/// A causal language model over a per-layer KV cache.
pub trait LanguageModel {
    /// `tokens` `[B, L]` int32 → logits `[B, L, V]`, appending to `cache` (one per layer).
    fn forward(&self, tokens: &Array, cache: &mut [KvCache]) -> Result<Array>;
    /// A fresh, empty cache: one [`KvCache`] per layer.
    fn make_cache(&self) -> Vec<KvCache>;
    fn config(&self) -> &ModelConfig;

    /// Replaces quantized and half-precision weights by dense `dtype` copies
    /// (evaluated), trading memory for speed: on MLX's CPU backend a float32
    /// matmul (BLAS) is far faster than a quantized or float16 one, and a batch
    /// of rows shares one weight pass. Returns the bytes of weights now held;
    /// `None` when the model does not support it.
    fn densify(&mut self, dtype: mlx::Dtype) -> Result<Option<usize>> {
        let _ = dtype;
        Ok(None)
    }

    /// One decode step of `B` independent sequences: `tokens` `[B, 1]` int32 →
    /// logits `[B, 1, V]`, row `i` appending to `caches[i]` (each at its own
    /// offset). Row `i` computes what [`LanguageModel::forward`] computes for it
    /// alone. The default runs the rows one by one.
    fn forward_batch(&self, tokens: &Array, caches: &mut [&mut [KvCache]]) -> Result<Array> {
        let b = tokens.dim(0);
        let mut rows = Vec::with_capacity(b as usize);
        for (i, cache) in caches.iter_mut().enumerate() {
            let i = i as i32;
            rows.push(self.forward(&tokens.slice_axis(0, i, i + 1)?, cache)?);
        }
        let refs: Vec<&Array> = rows.iter().collect();
        Ok(mlx::concatenate(&refs, 0)?)
    }
}

/// Loads a model folder (`config.json` + safetensors) in mlx-lm's layout, as
/// [`load`] with no options does.
pub fn load_model(dir: impl AsRef<Path>) -> Result<Box<dyn LanguageModel + Send>> {
    Ok(Box::new(load(dir.as_ref(), &LoadOptions::default())?.model))
}

/// What [`load`] does besides reading the model folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'a> {
    /// An adapter folder (`adapters.safetensors` + `adapter_config.json`), checked
    /// against the model (names and shapes) and applied: LoRA/DoRA unfused (every
    /// forward pass adds the low-rank term), a full fine-tune's weights replacing the
    /// model's.
    pub adapter: Option<&'a Path>,
    /// After the adapter: dense copies of quantized and half-precision weights in this
    /// dtype (see [`LanguageModel::densify`]).
    pub densify: Option<Dtype>,
}

/// A model as [`load`] made it.
#[derive(Debug)]
pub struct Loaded {
    pub model: Llama,
    /// The adapter folder as read (already applied to `model`).
    pub adapters: Option<crate::train::Adapters>,
    /// Bytes of weights held after [`LoadOptions::densify`], when it ran.
    pub densified_bytes: Option<usize>,
}

/// Why [`load`] failed: the model folder, or the adapter over it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Model(#[from] crate::weights::ModelError),
    #[error("the adapter: {0}")]
    Adapter(crate::train::TrainError),
}

impl From<LoadError> for crate::weights::ModelError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Model(e) => e,
            adapter @ LoadError::Adapter(_) => {
                crate::weights::ModelError::Invalid(adapter.to_string())
            }
        }
    }
}

impl From<LoadError> for crate::train::TrainError {
    /// The underlying error, unprefixed.
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Model(e) => e.into(),
            LoadError::Adapter(e) => e,
        }
    }
}

/// The one way to load a model, with or without an adapter over it: reads the model
/// folder, then the adapter, then densifies (so a full fine-tune's weights are
/// densified too).
pub fn load(dir: &Path, options: &LoadOptions<'_>) -> std::result::Result<Loaded, LoadError> {
    let mut model = Llama::load(dir)?;
    let adapters = match options.adapter {
        Some(adapter_dir) => {
            let adapters =
                crate::train::load_adapters(adapter_dir, &model).map_err(LoadError::Adapter)?;
            crate::train::apply_adapters(&mut model, &adapters).map_err(LoadError::Adapter)?;
            Some(adapters)
        }
        None => None,
    };
    let densified_bytes = match options.densify {
        Some(dtype) => model.densify(dtype)?,
        None => None,
    };
    Ok(Loaded {
        model,
        adapters,
        densified_bytes,
    })
}
