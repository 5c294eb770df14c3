//! The Llama family as mlx-lm computes it (`llama.py`, which also serves `mistral`;
//! `qwen2.py`: q/k/v biases; `qwen3.py`: per-head q/k RMSNorm before RoPE and an
//! explicit `head_dim`). Differences are flags of [`ModelConfig`].

use std::path::Path;

use mlx::fast::{AttentionMask, RopeOffset};
use mlx::quantization::{DecodeLayer, DecodeLinear, DecodeRow};

use crate::config::{ModelConfig, QuantizationConfig};
use crate::models::{KvCache, LanguageModel};
use mlx::{Array, Params};

use crate::nn::{Adapt, Embedding, Linear, RmsNorm};
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
    path: String,
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
            path: p.to_string(),
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

    /// Queries, keys and values `[B, H, L, Dh]` of `x` `[B, L, D]` (q/k norms applied).
    fn project_qkv(&self, x: &Array, ad: &Adapt<'_>) -> Result<(Array, Array, Array)> {
        let p = &self.path;
        let s = x.shape();
        let (b, l) = (s[0], s[1]);
        let heads = |y: Array, n: i32, norm: Option<(&RmsNorm, &str)>| -> Result<Array> {
            let mut y = y.reshape(&[b, l, n, -1])?;
            if let Some((norm, name)) = norm {
                y = norm.forward_adapted(&y, &format!("{p}.{name}"), ad)?;
            }
            Ok(y.transpose(&[0, 2, 1, 3])?)
        };
        let lin = |layer: &Linear, name: &str| layer.forward_adapted(x, &format!("{p}.{name}"), ad);
        let queries = heads(
            lin(&self.q_proj, "q_proj")?,
            self.n_heads,
            self.q_norm.as_ref().map(|n| (n, "q_norm")),
        )?;
        let keys = heads(
            lin(&self.k_proj, "k_proj")?,
            self.n_kv_heads,
            self.k_norm.as_ref().map(|n| (n, "k_norm")),
        )?;
        let values = heads(lin(&self.v_proj, "v_proj")?, self.n_kv_heads, None)?;
        Ok((queries, keys, values))
    }

    fn forward(
        &self,
        x: &Array,
        mask: AttentionMask<'_>,
        cache: Option<&mut KvCache>,
        ad: &Adapt<'_>,
    ) -> Result<Array> {
        let p = &self.path;
        let s = x.shape();
        let (b, l) = (s[0], s[1]);
        let (queries, keys, values) = self.project_qkv(x, ad)?;

        let offset = cache.as_ref().map_or(0, |c| c.offset());
        let queries = self.rope.forward(&queries, offset)?;
        let keys = self.rope.forward(&keys, offset)?;
        let (keys, values) = match cache {
            Some(cache) => cache.update_and_fetch(&keys, &values)?,
            None => (keys, values),
        };

        let out =
            mlx::fast::scaled_dot_product_attention(&queries, &keys, &values, self.scale, mask)?;
        let out = out.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?;
        self.o_proj
            .forward_adapted(&out, &format!("{p}.o_proj"), ad)
    }

    /// One decode position for each of `B` sequences (`x` `[B, 1, D]`): the
    /// projections run batched, RoPE, the cache update and attention per row
    /// (each row has its own offset and cache length), so each row computes
    /// exactly what a batch of one computes.
    fn forward_rows(
        &self,
        x: &Array,
        caches: &mut [&mut KvCache],
        ad: &Adapt<'_>,
    ) -> Result<Array> {
        let p = &self.path;
        let s = x.shape();
        let (b, l) = (s[0], s[1]);
        let (queries, keys, values) = self.project_qkv(x, ad)?;
        let mut outs = Vec::with_capacity(b as usize);
        for (i, cache) in caches.iter_mut().enumerate() {
            let i = i as i32;
            let offset = cache.offset();
            let q = self
                .rope
                .forward(&queries.slice_axis(0, i, i + 1)?, offset)?;
            let k = self.rope.forward(&keys.slice_axis(0, i, i + 1)?, offset)?;
            let (k, v) = cache.update_and_fetch(&k, &values.slice_axis(0, i, i + 1)?)?;
            outs.push(mlx::fast::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                self.scale,
                AttentionMask::None,
            )?);
        }
        let refs: Vec<&Array> = outs.iter().collect();
        let out = mlx::concatenate(&refs, 0)?;
        let out = out.transpose(&[0, 2, 1, 3])?.reshape(&[b, l, -1])?;
        self.o_proj
            .forward_adapted(&out, &format!("{p}.o_proj"), ad)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    path: String,
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
            path: p.to_string(),
            gate_proj: Linear::load(w, &format!("{p}.gate_proj"), dim, hidden, bias, q)?,
            up_proj: Linear::load(w, &format!("{p}.up_proj"), dim, hidden, bias, q)?,
            down_proj: Linear::load(w, &format!("{p}.down_proj"), hidden, dim, bias, q)?,
        })
    }

    fn forward(&self, x: &Array, ad: &Adapt<'_>) -> Result<Array> {
        let p = &self.path;
        // swiglu: silu(gate) * up
        let g = self
            .gate_proj
            .forward_adapted(x, &format!("{p}.gate_proj"), ad)?
            .silu()?;
        let h = g.multiply(
            self.up_proj
                .forward_adapted(x, &format!("{p}.up_proj"), ad)?,
        )?;
        self.down_proj
            .forward_adapted(&h, &format!("{p}.down_proj"), ad)
    }
}

#[derive(Debug, Clone)]
struct Block {
    path: String,
    self_attn: Attention,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl Block {
    fn forward(
        &self,
        x: &Array,
        mask: AttentionMask<'_>,
        cache: Option<&mut KvCache>,
        ad: &Adapt<'_>,
    ) -> Result<Array> {
        let p = &self.path;
        let n = self
            .input_layernorm
            .forward_adapted(x, &format!("{p}.input_layernorm"), ad)?;
        let r = self.self_attn.forward(&n, mask, cache, ad)?;
        let h = x.add(&r)?;
        let n = self.post_attention_layernorm.forward_adapted(
            &h,
            &format!("{p}.post_attention_layernorm"),
            ad,
        )?;
        let r = self.mlp.forward(&n, ad)?;
        Ok(h.add(&r)?)
    }

    /// [`Block::forward`] (no cache, causal) under MLX's checkpoint transform. The
    /// block's trainable parameters are explicit inputs so their gradients flow; the
    /// closure owns a clone of the block (array handles) because MLX calls it again
    /// in the backward pass, after this returns.
    fn forward_checkpointed(&self, x: &Array, ad: &Adapt<'_>) -> Result<Array> {
        let prefix = format!("{}.", self.path);
        let (names, trained): (Vec<String>, Vec<Array>) = ad
            .params
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .unzip();
        let block = self.clone();
        let (lora_scale, dropout) = (ad.lora_scale, ad.dropout);
        let run = mlx::checkpoint(move |xs: &[Array]| {
            let params: Params = names.iter().cloned().zip(xs[1..].iter().cloned()).collect();
            let ad = Adapt {
                params: Some(&params),
                lora_scale,
                dropout,
            };
            let x = &xs[0];
            let mask = if x.dim(1) > 1 {
                AttentionMask::Causal
            } else {
                AttentionMask::None
            };
            let h = block
                .forward(x, mask, None, &ad)
                .map_err(|e| mlx::Error::Mlx(e.to_string()))?;
            Ok(vec![h])
        })?;
        let mut inputs = Vec::with_capacity(trained.len() + 1);
        inputs.push(x.clone());
        inputs.extend(trained);
        let mut out = run.call(&inputs)?;
        Ok(out.remove(0))
    }

    /// [`Block::forward`] for one decode position of `B` sequences.
    fn forward_rows(
        &self,
        x: &Array,
        caches: &mut [&mut KvCache],
        ad: &Adapt<'_>,
    ) -> Result<Array> {
        let p = &self.path;
        let n = self
            .input_layernorm
            .forward_adapted(x, &format!("{p}.input_layernorm"), ad)?;
        let r = self.self_attn.forward_rows(&n, caches, ad)?;
        let h = x.add(&r)?;
        let n = self.post_attention_layernorm.forward_adapted(
            &h,
            &format!("{p}.post_attention_layernorm"),
            ad,
        )?;
        let r = self.mlp.forward(&n, ad)?;
        Ok(h.add(&r)?)
    }

    /// This block as one fused decode node ([`mlx::quantization::decode_layer`]): `None`
    /// unless all seven projections are affine 4/8-bit and the norms, biases and RoPE
    /// frequencies float32 (then the block's math is float32, as the kernel's is).
    fn decode_layer(&self, c: &ModelConfig) -> Option<DecodeLayer<'_>> {
        let a = &self.self_attn;
        fn f32(x: &Array) -> bool {
            x.dtype() == mlx::Dtype::Float32
        }
        fn lin(l: &Linear) -> Option<DecodeLinear<'_>> {
            match l {
                Linear::Quantized { q, bias }
                    if matches!(q.spec.bits, 4 | 8) && bias.as_ref().is_none_or(f32) =>
                {
                    Some(DecodeLinear {
                        q,
                        bias: bias.as_ref(),
                    })
                }
                _ => None,
            }
        }
        let norms_f32 = [&self.input_layernorm, &self.post_attention_layernorm]
            .into_iter()
            .chain(a.q_norm.as_ref())
            .chain(a.k_norm.as_ref())
            .all(|n| f32(&n.weight));
        if !norms_f32 || a.rope.freqs.as_ref().is_some_and(|f| !f32(f)) {
            return None;
        }
        let qk_norm = match (&a.q_norm, &a.k_norm) {
            (Some(q), Some(k)) => Some((&q.weight, &k.weight)),
            (None, None) => None,
            _ => return None,
        };
        Some(DecodeLayer {
            n_heads: a.n_heads,
            n_kv_heads: a.n_kv_heads,
            head_dim: c.head_dim as i32,
            eps: self.input_layernorm.eps,
            attn_scale: a.scale,
            rope_dims: a.rope.dims,
            rope_traditional: a.rope.traditional,
            rope_base: a.rope.base.unwrap_or(0.0),
            rope_scale: a.rope.scale,
            rope_freqs: a.rope.freqs.as_ref(),
            input_norm: &self.input_layernorm.weight,
            post_norm: &self.post_attention_layernorm.weight,
            qk_norm,
            linears: [
                lin(&a.q_proj)?,
                lin(&a.k_proj)?,
                lin(&a.v_proj)?,
                lin(&a.o_proj)?,
                lin(&self.mlp.gate_proj)?,
                lin(&self.mlp.up_proj)?,
                lin(&self.mlp.down_proj)?,
            ],
        })
    }

    fn linears(&self) -> [(&'static str, &Linear); 7] {
        [
            ("self_attn.q_proj", &self.self_attn.q_proj),
            ("self_attn.k_proj", &self.self_attn.k_proj),
            ("self_attn.v_proj", &self.self_attn.v_proj),
            ("self_attn.o_proj", &self.self_attn.o_proj),
            ("mlp.gate_proj", &self.mlp.gate_proj),
            ("mlp.down_proj", &self.mlp.down_proj),
            ("mlp.up_proj", &self.mlp.up_proj),
        ]
    }

    /// Every parameter of the block by its mlx-lm name (float layers only).
    fn parameters(&self) -> Result<Params> {
        let p = &self.path;
        let mut out = Params::new();
        for (name, l) in self.linears() {
            match l {
                Linear::Float { weight, bias } => {
                    out.insert(format!("{p}.{name}.weight"), weight.clone());
                    if let Some(b) = bias {
                        out.insert(format!("{p}.{name}.bias"), b.clone());
                    }
                }
                Linear::Quantized { .. } => {
                    return Err(ModelError::Invalid(format!(
                        "{p}.{name} is quantized: full fine-tuning needs an unquantized model \
                         (use LoRA, which trains adapters on top of quantized layers)"
                    )));
                }
            }
        }
        let mut norm = |name: &str, n: &RmsNorm| {
            out.insert(format!("{p}.{name}.weight"), n.weight.clone());
        };
        norm("input_layernorm", &self.input_layernorm);
        norm("post_attention_layernorm", &self.post_attention_layernorm);
        if let Some(n) = &self.self_attn.q_norm {
            norm("self_attn.q_norm", n);
        }
        if let Some(n) = &self.self_attn.k_norm {
            norm("self_attn.k_norm", n);
        }
        Ok(out)
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
    /// LoRA/DoRA adapters applied by every forward pass (see [`Llama::set_adapters`]).
    adapters: Option<(Params, f32)>,
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
                path: p.clone(),
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
            adapters: None,
        })
    }
}

impl Llama {
    /// Applies LoRA/DoRA adapters (`….lora_a`, `….lora_b`, `….m` by mlx-lm name, with
    /// the LoRA `scale`) in every later forward pass, unfused (as mlx-lm's `load_adapters`).
    pub fn set_adapters(&mut self, params: Params, scale: f32) {
        self.adapters = if params.is_empty() {
            None
        } else {
            Some((params, scale))
        };
    }

    /// Number of parameters, quantized matrices counted unpacked (mlx-lm's
    /// `get_total_parameters`).
    pub fn num_parameters(&self) -> usize {
        let lin = |l: &Linear| {
            l.in_dims() as usize * l.out_dims() as usize + l.bias().map_or(0, |b| b.size())
        };
        let mut n = match &self.embed_tokens {
            Embedding::Float(w) => w.size(),
            Embedding::Quantized(q) => q.weight.size() * 32 / q.spec.bits as usize,
        };
        n += self.norm.weight.size() + self.lm_head.as_ref().map_or(0, lin);
        for b in &self.layers {
            n += b.linears().iter().map(|(_, l)| lin(l)).sum::<usize>();
            n += b.input_layernorm.weight.size() + b.post_attention_layernorm.weight.size();
            n += [&b.self_attn.q_norm, &b.self_attn.k_norm]
                .iter()
                .filter_map(|x| x.as_ref())
                .map(|x| x.weight.size())
                .sum::<usize>();
        }
        n
    }

    /// Number of transformer blocks.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The linear layers of block `i`, named relative to the block as mlx-lm's
    /// `named_modules` does (`self_attn.q_proj`, …, `mlp.up_proj`).
    pub fn block_linears(&self, i: usize) -> Vec<(&'static str, &Linear)> {
        self.layers
            .get(i)
            .map_or(Vec::new(), |b| b.linears().to_vec())
    }

    /// The linear layer `name` (relative to the block, e.g. `mlp.up_proj`) of block `i`.
    pub fn block_linear_mut(&mut self, i: usize, name: &str) -> Option<&mut Linear> {
        let b = self.layers.get_mut(i)?;
        Some(match name {
            "self_attn.q_proj" => &mut b.self_attn.q_proj,
            "self_attn.k_proj" => &mut b.self_attn.k_proj,
            "self_attn.v_proj" => &mut b.self_attn.v_proj,
            "self_attn.o_proj" => &mut b.self_attn.o_proj,
            "mlp.gate_proj" => &mut b.mlp.gate_proj,
            "mlp.up_proj" => &mut b.mlp.up_proj,
            "mlp.down_proj" => &mut b.mlp.down_proj,
            _ => return None,
        })
    }

    /// Every parameter of block `i` by mlx-lm name (`model.layers.{i}.mlp.up_proj.weight`);
    /// an error when a layer of the block is quantized.
    pub fn block_parameters(&self, i: usize) -> Result<Params> {
        match self.layers.get(i) {
            Some(b) => b.parameters(),
            None => Err(ModelError::Invalid(format!("no block {i}"))),
        }
    }

    /// Logits `[B, L, V]` for `tokens` `[B, L]` without a KV cache (causal mask),
    /// with trainable overrides (full weights, LoRA/DoRA adapters) from `adapt`.
    /// This is what training differentiates.
    pub fn forward_adapted(&self, tokens: &Array, adapt: &Adapt<'_>) -> Result<Array> {
        self.forward_adapted_with(tokens, adapt, false)
    }

    /// [`Llama::forward_adapted`]; with `grad_checkpoint`, every block runs under
    /// MLX's checkpoint transform (mlx-lm's `grad_checkpoint`): a gradient pass keeps
    /// only the blocks' inputs and recomputes their insides, trading compute for memory.
    pub fn forward_adapted_with(
        &self,
        tokens: &Array,
        adapt: &Adapt<'_>,
        grad_checkpoint: bool,
    ) -> Result<Array> {
        if tokens.ndim() != 2 {
            return Err(ModelError::Invalid(format!(
                "tokens must be [batch, length], got shape {:?}",
                tokens.shape()
            )));
        }
        // A trained embedding (from scratch) replaces the model's, tied head included.
        let embed = adapt.weight("model.embed_tokens");
        let mut h = match embed {
            Some(w) => w.take(tokens, Some(0))?,
            None => self.embed_tokens.forward(tokens)?,
        };
        let mask = if tokens.dim(1) > 1 {
            AttentionMask::Causal
        } else {
            AttentionMask::None
        };
        for layer in &self.layers {
            h = if grad_checkpoint {
                layer.forward_checkpointed(&h, adapt)?
            } else {
                layer.forward(&h, mask, None, adapt)?
            };
        }
        let h = self.norm.forward_adapted(&h, "model.norm", adapt)?;
        match (&self.lm_head, embed) {
            (Some(head), _) => head.forward_adapted(&h, "lm_head", adapt),
            (None, Some(w)) => Ok(h.matmul(&w.t()?)?),
            (None, None) => self.embed_tokens.as_linear(&h),
        }
    }

    /// The parameters outside the blocks by mlx-lm name: the token embedding, the
    /// final norm and the untied output layer; an error when one is quantized.
    pub fn outer_parameters(&self) -> Result<Params> {
        let mut out = Params::new();
        match &self.embed_tokens {
            Embedding::Float(w) => out.insert("model.embed_tokens.weight".into(), w.clone()),
            Embedding::Quantized(_) => {
                return Err(ModelError::Invalid(
                    "model.embed_tokens is quantized: it cannot be trained".into(),
                ));
            }
        };
        out.insert("model.norm.weight".into(), self.norm.weight.clone());
        match &self.lm_head {
            Some(Linear::Float { weight, .. }) => {
                out.insert("lm_head.weight".into(), weight.clone());
            }
            Some(Linear::Quantized { .. }) => {
                return Err(ModelError::Invalid(
                    "lm_head is quantized: it cannot be trained".into(),
                ));
            }
            None => {}
        }
        Ok(out)
    }

    /// Replaces the weights of linear layers and norms by name (a fused or fully
    /// fine-tuned model): `model.layers.{i}.{module}.weight` / `.bias`, and the
    /// [`Llama::outer_parameters`].
    pub fn set_parameters(&mut self, params: &Params) -> Result<()> {
        for (name, value) in params {
            match name.as_str() {
                "model.embed_tokens.weight" => {
                    self.embed_tokens = Embedding::Float(value.clone());
                    continue;
                }
                "model.norm.weight" => {
                    self.norm.weight = value.clone();
                    continue;
                }
                "lm_head.weight" if self.lm_head.is_some() => {
                    self.lm_head = Some(Linear::Float {
                        weight: value.clone(),
                        bias: None,
                    });
                    continue;
                }
                _ => {}
            }
            let (module, leaf) = name
                .rsplit_once('.')
                .ok_or_else(|| ModelError::Invalid(format!("bad parameter name `{name}`")))?;
            let Some(rest) = module.strip_prefix("model.layers.") else {
                return Err(ModelError::UnexpectedTensor { name: name.clone() });
            };
            let (idx, sub) = rest
                .split_once('.')
                .ok_or_else(|| ModelError::UnexpectedTensor { name: name.clone() })?;
            let block = idx
                .parse::<usize>()
                .ok()
                .and_then(|i| self.layers.get_mut(i))
                .ok_or_else(|| ModelError::UnexpectedTensor { name: name.clone() })?;
            let norm = match sub {
                "input_layernorm" => Some(&mut block.input_layernorm),
                "post_attention_layernorm" => Some(&mut block.post_attention_layernorm),
                "self_attn.q_norm" => block.self_attn.q_norm.as_mut(),
                "self_attn.k_norm" => block.self_attn.k_norm.as_mut(),
                _ => None,
            };
            if let Some(n) = norm {
                n.weight = value.clone();
                continue;
            }
            let lin = match sub {
                "self_attn.q_proj" => &mut block.self_attn.q_proj,
                "self_attn.k_proj" => &mut block.self_attn.k_proj,
                "self_attn.v_proj" => &mut block.self_attn.v_proj,
                "self_attn.o_proj" => &mut block.self_attn.o_proj,
                "mlp.gate_proj" => &mut block.mlp.gate_proj,
                "mlp.up_proj" => &mut block.mlp.up_proj,
                "mlp.down_proj" => &mut block.mlp.down_proj,
                _ => return Err(ModelError::UnexpectedTensor { name: name.clone() }),
            };
            match leaf {
                "weight" => {
                    let bias = lin.bias().cloned();
                    *lin = Linear::Float {
                        weight: value.clone(),
                        bias,
                    };
                }
                "bias" => match lin {
                    Linear::Float { bias, .. } | Linear::Quantized { bias, .. } => {
                        *bias = Some(value.clone())
                    }
                },
                _ => return Err(ModelError::UnexpectedTensor { name: name.clone() }),
            }
        }
        Ok(())
    }
}

fn dense_linear(l: &Linear, dtype: mlx::Dtype) -> Result<Linear> {
    Ok(match l {
        Linear::Float { weight, bias } => Linear::Float {
            weight: weight.as_type(dtype)?,
            bias: bias.as_ref().map(|b| b.as_type(dtype)).transpose()?,
        },
        Linear::Quantized { q, bias } => Linear::Float {
            weight: mlx::quantization::dequantize(q, Some(dtype))?,
            bias: bias.as_ref().map(|b| b.as_type(dtype)).transpose()?,
        },
    })
}

impl Llama {
    /// The adapters of inference (no dropout).
    fn inference_adapt(&self) -> Adapt<'_> {
        match &self.adapters {
            Some((params, scale)) => Adapt {
                params: Some(params),
                lora_scale: *scale,
                dropout: 0.0,
            },
            None => Adapt::default(),
        }
    }
}

static FUSED_DECODE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns the fused decode step (see [`Llama`]'s `forward`) on or off process-wide; the
/// default is on ([`crate::runtime::RuntimeSettings`] carries the caller's choice,
/// e.g. `MLX_HUB_FUSED_DECODE=0`). Both compute the same tokens.
pub fn set_fused_decode(on: bool) {
    FUSED_DECODE.store(on, std::sync::atomic::Ordering::Relaxed);
}

fn fused_decode_enabled() -> bool {
    FUSED_DECODE.load(std::sync::atomic::Ordering::Relaxed)
}

impl Llama {
    /// Every block as a fused decode node, when a one-token step can run that way: no
    /// adapters, MLX's CPU device with our kernels, quantized blocks (see
    /// [`Block::decode_layer`]) and float32 (or empty) caches. Decode is then one MLX
    /// node per block instead of ~35, which is most of the time of a small model.
    fn fused_decode_layers<'c>(
        &self,
        mut cache: impl Iterator<Item = &'c KvCache>,
    ) -> Option<Vec<DecodeLayer<'_>>> {
        if self.adapters.is_some()
            || !fused_decode_enabled()
            || !mlx::quantization::decode_layer_available()
            || cache.any(|c| c.dtype().is_some_and(|d| d != mlx::Dtype::Float32))
        {
            return None;
        }
        self.layers
            .iter()
            .map(|b| b.decode_layer(&self.config))
            .collect()
    }
}

/// One fused decode node (see [`mlx::quantization::decode_layer`]) for the rows of `h`
/// `[B, 1, D]`, row `i` appending to `caches[i]`.
fn fused_step(h: &Array, caches: &mut [&mut KvCache], layer: &DecodeLayer<'_>) -> Result<Array> {
    let reserved = caches
        .iter_mut()
        .map(|c| c.reserve_one(layer.n_kv_heads, layer.head_dim))
        .collect::<Result<Vec<_>>>()?;
    let rows: Vec<DecodeRow<'_>> = reserved
        .iter()
        .map(|(keys, values, offset, shared)| DecodeRow {
            keys,
            values,
            offset: *offset,
            copy_cache: *shared,
        })
        .collect();
    let (y, written) = mlx::quantization::decode_layer(h, &rows, layer)?;
    for (c, (k, v)) in caches.iter_mut().zip(written) {
        c.commit_one(k, v);
    }
    Ok(y)
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
        let ad = self.inference_adapt();
        let fused = (tokens.shape() == [1, 1])
            .then(|| self.fused_decode_layers(cache.iter()))
            .flatten();
        if let Some(fused) = fused {
            for (layer, c) in fused.iter().zip(cache.iter_mut()) {
                h = fused_step(&h, &mut [c], layer)?;
            }
        } else {
            for (layer, c) in self.layers.iter().zip(cache.iter_mut()) {
                h = layer.forward(&h, mask, Some(c), &ad)?;
            }
        }
        let h = self.norm.forward_adapted(&h, "model.norm", &ad)?;
        match &self.lm_head {
            Some(head) => head.forward_adapted(&h, "lm_head", &ad),
            None => self.embed_tokens.as_linear(&h),
        }
    }

    fn forward_batch(&self, tokens: &Array, caches: &mut [&mut [KvCache]]) -> Result<Array> {
        let s = tokens.shape();
        if s.len() != 2 || s[1] != 1 || s[0] as usize != caches.len() {
            return Err(ModelError::Invalid(format!(
                "batched decode needs tokens [B, 1] with one cache per row, got shape {s:?} \
                 and {} caches",
                caches.len()
            )));
        }
        if let Some(c) = caches.iter().find(|c| c.len() != self.layers.len()) {
            return Err(ModelError::Invalid(format!(
                "cache has {} layers, the model {}",
                c.len(),
                self.layers.len()
            )));
        }
        let ad = self.inference_adapt();
        let mut h = self.embed_tokens.forward(tokens)?;
        let fused = self.fused_decode_layers(caches.iter().flat_map(|c| c.iter()));
        for (li, layer) in self.layers.iter().enumerate() {
            let mut layer_caches: Vec<&mut KvCache> =
                caches.iter_mut().map(|c| &mut c[li]).collect();
            h = match &fused {
                Some(f) => fused_step(&h, &mut layer_caches, &f[li])?,
                None => layer.forward_rows(&h, &mut layer_caches, &ad)?,
            };
        }
        let h = self.norm.forward_adapted(&h, "model.norm", &ad)?;
        match &self.lm_head {
            Some(head) => head.forward_adapted(&h, "lm_head", &ad),
            None => self.embed_tokens.as_linear(&h),
        }
    }

    fn densify(&mut self, dtype: mlx::Dtype) -> Result<Option<usize>> {
        let mut all = Vec::new();
        self.embed_tokens = match &self.embed_tokens {
            Embedding::Float(w) => Embedding::Float(w.as_type(dtype)?),
            Embedding::Quantized(q) => {
                Embedding::Float(mlx::quantization::dequantize(q, Some(dtype))?)
            }
        };
        if let Embedding::Float(w) = &self.embed_tokens {
            all.push(w.clone());
        }
        if let Some(head) = &self.lm_head {
            self.lm_head = Some(dense_linear(head, dtype)?);
        }
        self.norm.weight = self.norm.weight.as_type(dtype)?;
        all.push(self.norm.weight.clone());
        for b in &mut self.layers {
            for l in [
                &mut b.self_attn.q_proj,
                &mut b.self_attn.k_proj,
                &mut b.self_attn.v_proj,
                &mut b.self_attn.o_proj,
                &mut b.mlp.gate_proj,
                &mut b.mlp.up_proj,
                &mut b.mlp.down_proj,
            ] {
                *l = dense_linear(l, dtype)?;
            }
            for n in [&mut b.input_layernorm, &mut b.post_attention_layernorm]
                .into_iter()
                .chain(b.self_attn.q_norm.as_mut())
                .chain(b.self_attn.k_norm.as_mut())
            {
                n.weight = n.weight.as_type(dtype)?;
            }
        }
        for b in &self.layers {
            for (_, l) in b.linears() {
                if let Linear::Float { weight, bias } = l {
                    all.push(weight.clone());
                    all.extend(bias.iter().cloned());
                }
            }
            all.push(b.input_layernorm.weight.clone());
            all.push(b.post_attention_layernorm.weight.clone());
        }
        if let Some(Linear::Float { weight, .. }) = &self.lm_head {
            all.push(weight.clone());
        }
        mlx::eval(&all)?;
        Ok(Some(all.iter().map(|a| a.nbytes()).sum()))
    }

    fn make_cache(&self) -> Vec<KvCache> {
        (0..self.layers.len()).map(|_| KvCache::new()).collect()
    }

    fn config(&self) -> &ModelConfig {
        &self.config
    }
}
