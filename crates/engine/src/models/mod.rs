//! Model families. Every supported `model_type` (`llama`, `mistral`, `qwen2`, `qwen3`)
//! is one implementation, [`llama::Llama`], steered by the flags of [`ModelConfig`],
//! as mlx-lm's `llama.py`, `qwen2.py` and `qwen3.py` compute them.

pub mod cache;
pub mod llama;

use std::path::Path;

use mlx::Array;

pub use cache::KvCache;
pub use llama::Llama;

use crate::config::ModelConfig;
use crate::weights::Result;

/// A causal language model over a per-layer KV cache.
pub trait LanguageModel {
    /// `tokens` `[B, L]` int32 → logits `[B, L, V]`, appending to `cache` (one per layer).
    fn forward(&self, tokens: &Array, cache: &mut [KvCache]) -> Result<Array>;
    /// A fresh, empty cache: one [`KvCache`] per layer.
    fn make_cache(&self) -> Vec<KvCache>;
    fn config(&self) -> &ModelConfig;
}

/// Loads a model folder (`config.json` + safetensors) in mlx-lm's layout.
pub fn load_model(dir: impl AsRef<Path>) -> Result<Box<dyn LanguageModel + Send>> {
    Ok(Box::new(Llama::load(dir)?))
}
