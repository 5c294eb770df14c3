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

/// Loads a model folder (`config.json` + safetensors) in mlx-lm's layout.
pub fn load_model(dir: impl AsRef<Path>) -> Result<Box<dyn LanguageModel + Send>> {
    Ok(Box::new(Llama::load(dir)?))
}
