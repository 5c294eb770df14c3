//! The Llama family as mlx-lm computes it (`llama.py`, which also serves `mistral`;
//! `qwen2.py`: q/k/v biases; `qwen3.py`: per-head q/k RMSNorm before RoPE and an
//! explicit `head_dim`). Differences are flags of [`ModelConfig`].

use std::path::Path;

use mlx::Array;
use mlx::fast::{AttentionMask, RopeOffset};

use crate::config::{ModelConfig, QuantizationConfig};
use crate::models::{KvCache, LanguageModel};
use crate::nn::{Embedding, Linear, RmsNorm};
use crate::weights::{ModelError, Result, Weights};

/// Rotary embedding: plain (`base`, `scale`) or with explicit frequencies (llama3).
#[derive(Debug, Clone)]
struct Rope {
    dims: i32,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    freqs: Option<Array>,
}

impl Rope {
    fn new(config: &ModelConfig) -> Result<Rope> {
        let dims = config.head_dim as i32;
        Ok(match config.rope_freqs() {
            Some(f) => Rope {
                dims,
                traditional: config.rope_traditional,
                base: None,
                scale: 1.0,
                freqs: Some(Array::from_vec(&f)?),
            },
            None => Rope {
                dims,
                traditional: config.rope_traditional,
                base: Some(config.rope_theta as f32),
                scale: config.rope_scale(),
                freqs: None,
            },
        })
    }

    fn forward(&self, x: &Array, offset: i32) -> Result<Array> {
        Ok(mlx::fast::rope(
            x,
            self.dims,
            self.traditional,
            self.base,
            self.scale,
            RopeOffset::Fixed(offset),
            self.freqs.as_ref(),
        )?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    n_heads: i32,
    n_kv_heads: i32,
    scale: f32,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    rope: Rope,
}

impl Attention {
    fn load(
        w: &mut Weights,
        p: &str,
        c: &ModelConfig,
        q: Option<&QuantizationConfig>,
    ) -> Result<Attention> {
        let (h, hkv, d, dim) = (
            c.num_attention_heads,
            c.num_key_value_heads,
            c.head_dim,
            c.hidden_size,
        );
        let qkv_bias = c.attention_qkv_bias;
        let (q_norm, k_norm) = if c.qk_norm {
            (
                Some(RmsNorm::load(w, &format!("{p}.q_norm"), d, c.rms_norm_eps)?),
                Some(RmsNorm::load(w, &format!("{p}.k_norm"), d, c.rms_norm_eps)?),
            )
        } else {
            (None, None)
        };
        Ok(Attention {
            n_heads: h as i32,
            n_kv_heads: hkv as i32,
            scale: (d as f32).powf(-0.5),
            q_proj: Linear::load(w, &format!("{p}.q_proj"), dim, h * d, qkv_bias, q)?,
            k_proj: Linear::load(w, &format!("{p}.k_proj"), dim, hkv * d, qkv_bias, q)?,
            v_proj: Linear::load(w, &format!("{p}.v_proj"), dim, hkv * d, qkv_bias, q)?,
            o_proj: Linear::load(
                w,
                &format!("{p}.o_proj"),
                h * d,
                dim,
                c.attention_out_bias,
                q,
            )?,
            q_norm,
            k_norm,
            rope: Rope::new(c)?,
        })
    }

    fn forward(&self, x: &Array, mask: AttentionMask<'_>, cache: &mut KvCache) -> Result<Array> {
        let s = x.shape();
        let (b, l) = (s[0], s[1]);
        let heads = |y: Array, n: i32, norm: &Option<RmsNorm>| -> Result<Array> {
            let mut y = y.reshape(&[b, l, n, -1])?;
            if let Some(norm) = norm {
                y = norm.forward(&y)?;
            }
            Ok(y.transpose(&[0, 2, 1, 3])?)
        };
        let queries = heads(self.q_proj.forward(x)?, self.n_heads, &self.q_norm)?;
        let keys = heads(self.k_proj.forward(x)?, self.n_kv_heads, &self.k_norm)?;
        let values = heads(self.v_proj.forward(x)?, self.n_kv_heads, &None)?;

        let offset = cache.offset();
        let queries = self.rope.forward(&queries, offset)?;
        let keys = self.rope.forward(&keys, offset)?;
        let (keys, values) = cache.update_and_fetch(&keys, &values)?;

        let out =
            mlx::fast::scaled_dot_product_attention(&queries, &keys, &values, self.scale, mask)?;
        let out = out.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?;
        self.o_proj.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn load(
        w: &mut Weights,
        p: &str,
        c: &ModelConfig,
        q: Option<&QuantizationConfig>,
    ) -> Result<Mlp> {
        let (dim, hidden, bias) = (c.hidden_size, c.intermediate_size, c.mlp_bias);
        Ok(Mlp {
            gate_proj: Linear::load(w, &format!("{p}.gate_proj"), dim, hidden, bias, q)?,
            up_proj: Linear::load(w, &format!("{p}.up_proj"), dim, hidden, bias, q)?,
            down_proj: Linear::load(w, &format!("{p}.down_proj"), hidden, dim, bias, q)?,
        })
    }

    fn forward(&self, x: &Array) -> Result<Array> {
        // swiglu: silu(gate) * up
        let g = self.gate_proj.forward(x)?.silu()?;
        let h = g.multiply(self.up_proj.forward(x)?)?;
        self.down_proj.forward(&h)
    }
}

#[derive(Debug, Clone)]
struct Block {
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl Block {
    fn forward(&self, x: &Array, mask: AttentionMask<'_>, cache: &mut KvCache) -> Result<Array> {
        let r = self
            .self_attn
            .forward(&self.input_layernorm.forward(x)?, mask, cache)?;
        let h = x.add(&r)?;
        let r = self
            .mlp
            .forward(&self.post_attention_layernorm.forward(&h)?)?;
        Ok(h.add(&r)?)
    }
}

/// A Llama-family causal language model (llama, mistral, qwen2, qwen3).
#[derive(Debug, Clone)]
pub struct Llama {
    config: ModelConfig,
    embed_tokens: Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    /// `None` when the output layer is the tied embedding.
    lm_head: Option<Linear>,
}

impl Llama {
    /// Loads `config.json` and the weights of a model folder.
    pub fn load(dir: impl AsRef<Path>) -> Result<Llama> {
        let dir = dir.as_ref();
        let config = ModelConfig::from_dir(dir)?;
        let weights = Weights::load_dir(dir)?;
        Llama::from_weights(config, weights)
    }

    /// Builds the model from `weights`, which must hold exactly its tensors (apart
    /// from those mlx-lm's `sanitize` drops: rotary `inv_freq`, and `lm_head` when tied).
    pub fn from_weights(config: ModelConfig, mut w: Weights) -> Result<Llama> {
        let c = &config;
        if c.num_key_value_heads == 0
            || !c.num_attention_heads.is_multiple_of(c.num_key_value_heads)
        {
            return Err(ModelError::Invalid(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                c.num_attention_heads, c.num_key_value_heads
            )));
        }
        w.discard_matching("self_attn.rotary_emb.inv_freq");
        if c.tie_word_embeddings {
            w.discard("lm_head.weight");
        }
        let q = c.quantization.as_ref();
        let embed_tokens =
            Embedding::load(&mut w, "model.embed_tokens", c.vocab_size, c.hidden_size, q)?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(Block {
                self_attn: Attention::load(&mut w, &format!("{p}.self_attn"), c, q)?,
                mlp: Mlp::load(&mut w, &format!("{p}.mlp"), c, q)?,
                input_layernorm: RmsNorm::load(
                    &mut w,
                    &format!("{p}.input_layernorm"),
                    c.hidden_size,
                    c.rms_norm_eps,
                )?,
                post_attention_layernorm: RmsNorm::load(
                    &mut w,
                    &format!("{p}.post_attention_layernorm"),
                    c.hidden_size,
                    c.rms_norm_eps,
                )?,
            });
        }
        let norm = RmsNorm::load(&mut w, "model.norm", c.hidden_size, c.rms_norm_eps)?;
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(Linear::load(
                &mut w,
                "lm_head",
                c.hidden_size,
                c.vocab_size,
                false,
                q,
            )?)
        };
        w.finish()?;
        Ok(Llama {
            config,
            embed_tokens,
            layers,
            norm,
            lm_head,
        })
    }
}

impl LanguageModel for Llama {
    fn forward(&self, tokens: &Array, cache: &mut [KvCache]) -> Result<Array> {
        if tokens.ndim() != 2 {
            return Err(ModelError::Invalid(format!(
                "tokens must be [batch, length], got shape {:?}",
                tokens.shape()
            )));
        }
        if cache.len() != self.layers.len() {
            return Err(ModelError::Invalid(format!(
                "cache has {} layers, the model {}",
                cache.len(),
                self.layers.len()
            )));
        }
        let mut h = self.embed_tokens.forward(tokens)?;
        let mask = if tokens.dim(1) > 1 {
            AttentionMask::Causal
        } else {
            AttentionMask::None
        };
        for (layer, c) in self.layers.iter().zip(cache.iter_mut()) {
            h = layer.forward(&h, mask, c)?;
        }
        let h = self.norm.forward(&h)?;
        match &self.lm_head {
            Some(head) => head.forward(&h),
            None => self.embed_tokens.as_linear(&h),
        }
    }

    fn make_cache(&self) -> Vec<KvCache> {
        (0..self.layers.len()).map(|_| KvCache::new()).collect()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }
}
