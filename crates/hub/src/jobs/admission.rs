//! Job admission: checks made against the base model at submission, before a
//! job is queued: `num_layers` within the model's blocks, and the estimated
//! peak memory within the configured budget (`--memory-budget-gb`).
//!
//! The estimate is an upper bound in the spirit of mlx-lm's LoRA training
//! on a transformer with `L` blocks, hidden size `h`, MLP size `i`, KV size
//! `kv`, vocabulary `V`, batch `B`, sequence `S`, `A` adapted blocks:
//!
//! - weights: the version's bytes on disk (quantised weights stay quantised);
//! - adapters (LoRA/DoRA, every linear of an adapted block, rank `r`, f32):
//!   `A · r · (in + out)` summed over q, k, v, o, gate, up, down; full
//!   fine-tuning trains every parameter (as f32);
//! - optimizer state and gradients: Adam/AdamW keep 2 f32 moments and a
//!   gradient per trainable parameter (SGD 1 + gradient, Adafactor ≈ 1);
//! - activations kept for the backward pass (f32): per adapted block
//!   `B·S·(10h + 3i + 2kv)` plus attention scores `2·B·heads·S²`; with
//!   gradient checkpointing only the block inputs `B·S·h` are kept, plus one
//!   block's worth; logits with their softmax and gradient `3·B·S·V`.

use serde::Serialize;

use crate::artifacts::ArtifactStore;
use crate::error::{HubError, HubResult};
use crate::jobs::TrainConfig;
use crate::service::Hub;
use crate::store::ModelVersion;

/// Estimated peak memory of a training job, by part (bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub adapters: u64,
    pub optimizer: u64,
    pub activations: u64,
    pub total: u64,
}

/// The shape of a model that the estimate needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub layers: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub heads: u64,
    pub kv_dim: u64,
    pub vocab: u64,
    /// Parameters of the whole model.
    pub parameters: u64,
}

impl ModelShape {
    pub fn from_config(c: &engine::config::ModelConfig) -> ModelShape {
        let (h, i, l, v) = (
            c.hidden_size as u64,
            c.intermediate_size as u64,
            c.num_hidden_layers as u64,
            c.vocab_size as u64,
        );
        let kv = (c.num_key_value_heads * c.head_dim) as u64;
        let q = (c.num_attention_heads * c.head_dim) as u64;
        let per_block = h * q + 2 * h * kv + q * h + 3 * h * i;
        let embed = if c.tie_word_embeddings {
            v * h
        } else {
            2 * v * h
        };
        ModelShape {
            layers: l,
            hidden: h,
            intermediate: i,
            heads: c.num_attention_heads as u64,
            kv_dim: kv,
            vocab: v,
            parameters: l * per_block + embed,
        }
    }
}

const F32: u64 = 4;

/// The estimate for training `shape` (weights of `weight_bytes`) with `t`.
pub fn estimate(shape: &ModelShape, weight_bytes: u64, t: &TrainConfig) -> MemoryEstimate {
    let adapted = if t.num_layers < 0 {
        shape.layers
    } else {
        (t.num_layers as u64).min(shape.layers)
    };
    let (h, i, kv) = (shape.hidden, shape.intermediate, shape.kv_dim);
    let r = u64::from(t.lora_parameters.rank);
    let trainable = if t.fine_tune_type == "full" {
        shape.parameters
    } else {
        // q (h→h), k, v (h→kv), o (h→h), gate, up (h→i), down (i→h)
        let dims = 2 * h + 2 * (h + kv) + 2 * h + 3 * (h + i);
        let dora_magnitudes = if t.fine_tune_type == "dora" {
            2 * h + 2 * kv + 2 * i + h
        } else {
            0
        };
        adapted * (r * dims + dora_magnitudes)
    };
    let adapters = trainable * F32;
    let optimizer_copies = match t.optimizer.as_str() {
        "adam" | "adamw" => 3,
        "sgd" => 2,
        _ => 2,
    };
    let optimizer = trainable * F32 * optimizer_copies;
    let (b, s) = (u64::from(t.batch_size), u64::from(t.max_seq_length));
    let block = b * s * (10 * h + 3 * i + 2 * kv) + 2 * b * shape.heads * s * s;
    let kept = if t.grad_checkpoint {
        adapted * b * s * h + block
    } else {
        adapted * block
    };
    let logits = 3 * b * s * shape.vocab;
    let activations = (kept + logits) * F32;
    MemoryEstimate {
        weights: weight_bytes,
        adapters,
        optimizer,
        activations,
        total: weight_bytes + adapters + optimizer + activations,
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl Hub {
    /// The parsed `config.json` of a version, or `None` when it has none
    /// (an adapter, say).
    pub async fn version_model_config(
        &self,
        version: &ModelVersion,
    ) -> HubResult<Option<engine::config::ModelConfig>> {
        let files = self.store.version_files(version.id).await?;
        let Some(file) = files.iter().find(|f| f.path == "config.json") else {
            return Ok(None);
        };
        let path = match version.artifact_uri.as_deref() {
            Some(uri) if uri.starts_with("file://") => {
                std::path::PathBuf::from(&uri["file://".len()..]).join(&file.path)
            }
            _ => match self.artifacts.local_path(&file.sha256).await? {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        let text = tokio::fs::read_to_string(&path).await?;
        engine::config::ModelConfig::from_json_str(&text)
            .map(Some)
            .map_err(|source| HubError::ModelConfig { path, source })
    }

    /// Checks a training config against its base version: `num_layers` and
    /// the memory budget. Returns the estimate (when the base has a config).
    pub async fn admit_training(
        &self,
        base: &ModelVersion,
        t: &TrainConfig,
    ) -> HubResult<Option<MemoryEstimate>> {
        let Some(config) = self.version_model_config(base).await? else {
            return Ok(None);
        };
        let layers = config.num_hidden_layers as i64;
        if t.num_layers > layers {
            return Err(HubError::invalid(
                "config.num_layers",
                format!(
                    "{} is more than the {layers} layers of the base model (use -1 for all)",
                    t.num_layers
                ),
            ));
        }
        let shape = ModelShape::from_config(&config);
        let est = estimate(&shape, base.size_bytes.max(0) as u64, t);
        if let Some(budget) = self.config.memory_budget_bytes
            && est.total > budget
        {
            return Err(HubError::OverMemoryBudget {
                message: format!(
                    "estimated peak memory {} bytes ({}: weights {} + adapters {} + optimizer \
                     state {} + activations {} for batch {}×{} tokens) exceeds the memory budget \
                     of {budget} bytes ({})",
                    est.total,
                    gib(est.total),
                    gib(est.weights),
                    gib(est.adapters),
                    gib(est.optimizer),
                    gib(est.activations),
                    t.batch_size,
                    t.max_seq_length,
                    gib(budget)
                ),
                estimate_bytes: est.total,
                budget_bytes: budget,
            });
        }
        Ok(Some(est))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_grows_with_batch_and_rank() {
        let shape = ModelShape {
            layers: 30,
            hidden: 576,
            intermediate: 1536,
            heads: 9,
            kv_dim: 192,
            vocab: 49152,
            parameters: 134_515_008,
        };
        let t = TrainConfig::default();
        let a = estimate(&shape, 100 << 20, &t);
        assert_eq!(
            a.total,
            a.weights + a.adapters + a.optimizer + a.activations
        );
        assert_eq!(a.optimizer, 3 * a.adapters);
        let b = estimate(
            &shape,
            100 << 20,
            &TrainConfig {
                batch_size: 8,
                ..t.clone()
            },
        );
        assert!(b.activations > a.activations && b.adapters == a.adapters);
        let full = estimate(
            &shape,
            100 << 20,
            &TrainConfig {
                fine_tune_type: "full".into(),
                ..t.clone()
            },
        );
        assert_eq!(full.adapters, shape.parameters * 4);
        let ckpt = estimate(
            &shape,
            100 << 20,
            &TrainConfig {
                grad_checkpoint: true,
                ..t
            },
        );
        assert!(ckpt.activations < a.activations);
    }
}
