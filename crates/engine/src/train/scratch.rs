//! A model with fresh weights from a `config.json`, initialised as mlx-lm's modules
//! initialise themselves: `nn.Linear` weights (and biases) uniform in ±1/√in,
//! `nn.Embedding` normal with standard deviation 1/√dims, `nn.RMSNorm` ones. The
//! draws are a function of `seed`, in the order of the tensor names.

use std::collections::BTreeMap;

use mlx::random::Key;
use mlx::{Array, Dtype};

use super::{Result, TrainError};
use crate::config::ModelConfig;
use crate::models::Llama;
use crate::weights::Weights;

/// Fresh float32 weights for `config` by mlx-lm name (no `lm_head` when tied).
pub fn random_weights(config: &ModelConfig, seed: u64) -> Result<BTreeMap<String, Array>> {
    let c = config;
    if c.quantization.is_some() {
        return Err(TrainError::Invalid(
            "a model trained from scratch cannot be quantized: remove `quantization` from config.json"
                .into(),
        ));
    }
    let (dim, hidden, d) = (
        c.hidden_size as i32,
        c.intermediate_size as i32,
        c.head_dim as i32,
    );
    let (h, hkv) = (c.num_attention_heads as i32, c.num_key_value_heads as i32);
    let mut shapes: Vec<(String, Vec<i32>, Init)> = Vec::new();
    let linear = |shapes: &mut Vec<_>, p: String, i: i32, o: i32, bias: bool| {
        let b = 1.0 / (i as f32).sqrt();
        shapes.push((format!("{p}.weight"), vec![o, i], Init::Uniform(b)));
        if bias {
            shapes.push((format!("{p}.bias"), vec![o], Init::Uniform(b)));
        }
    };
    shapes.push((
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size as i32, dim],
        Init::Normal((1.0 / dim as f32).sqrt()),
    ));
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        let qkv = c.attention_qkv_bias;
        linear(
            &mut shapes,
            format!("{p}.self_attn.q_proj"),
            dim,
            h * d,
            qkv,
        );
        linear(
            &mut shapes,
            format!("{p}.self_attn.k_proj"),
            dim,
            hkv * d,
            qkv,
        );
        linear(
            &mut shapes,
            format!("{p}.self_attn.v_proj"),
            dim,
            hkv * d,
            qkv,
        );
        linear(
            &mut shapes,
            format!("{p}.self_attn.o_proj"),
            h * d,
            dim,
            c.attention_out_bias,
        );
        linear(
            &mut shapes,
            format!("{p}.mlp.gate_proj"),
            dim,
            hidden,
            c.mlp_bias,
        );
        linear(
            &mut shapes,
            format!("{p}.mlp.up_proj"),
            dim,
            hidden,
            c.mlp_bias,
        );
        linear(
            &mut shapes,
            format!("{p}.mlp.down_proj"),
            hidden,
            dim,
            c.mlp_bias,
        );
        for n in ["input_layernorm", "post_attention_layernorm"] {
            shapes.push((format!("{p}.{n}.weight"), vec![dim], Init::Ones));
        }
        if c.qk_norm {
            for n in ["self_attn.q_norm", "self_attn.k_norm"] {
                shapes.push((format!("{p}.{n}.weight"), vec![d], Init::Ones));
            }
        }
    }
    shapes.push(("model.norm.weight".into(), vec![dim], Init::Ones));
    if !c.tie_word_embeddings {
        linear(
            &mut shapes,
            "lm_head".into(),
            dim,
            c.vocab_size as i32,
            false,
        );
    }
    shapes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut key = Key::new(seed)?;
    let mut out = BTreeMap::new();
    for (name, shape, init) in shapes {
        let (k, next) = key.split()?;
        key = next;
        let a = match init {
            Init::Ones => mlx::ones(&shape, Dtype::Float32)?,
            Init::Uniform(b) => mlx::random::uniform(-b, b, &shape, Dtype::Float32, Some(&k))?,
            Init::Normal(s) => mlx::random::normal(&shape, Dtype::Float32, 0.0, s, Some(&k))?,
        };
        out.insert(name, a);
    }
    mlx::eval(out.values())?;
    Ok(out)
}

enum Init {
    Ones,
    Uniform(f32),
    Normal(f32),
}

/// A [`Llama`] with fresh weights for `config` (see [`random_weights`]); train it
/// with a full fine-tune of every block (`num_layers: -1`).
pub fn llama_from_config_random(config: ModelConfig, seed: u64) -> Result<Llama> {
    let w = random_weights(&config, seed)?;
    Ok(Llama::from_weights(config, Weights::from_map(w))?)
}
