//! Neural-network layers as mlx's `mlx.nn` computes them: linear (float or affine
//! quantized), embedding (float or quantized, usable as a tied output layer) and
//! RMSNorm. Each layer loads itself from [`Weights`] under its module path, the way
//! mlx-lm names tensors (`model.layers.0.self_attn.q_proj.weight`).

use mlx::quantization::{QuantSpec, Quantized, dequantize, quantized_matmul};
use mlx::{Array, Params};

use crate::config::{QuantParams, QuantizationConfig};
use crate::weights::{ModelError, Result, Weights};

fn spec_of(path: &str, p: &QuantParams) -> Result<QuantSpec> {
    if p.mode != "affine" {
        return Err(ModelError::Invalid(format!(
            "{path}: quantization mode `{}` is not supported (only affine)",
            p.mode
        )));
    }
    QuantSpec::new(p.group_size as i32, p.bits as i32)
        .map_err(|e| ModelError::Invalid(format!("{path}: {e}")))
}

/// The quantization of the module at `path`, or `None` when it stays float. Like
/// mlx-lm's loader: quantized when the config allows it and `path.scales` exists.
fn quant_for(
    weights: &Weights,
    path: &str,
    quant: Option<&QuantizationConfig>,
) -> Result<Option<QuantSpec>> {
    let Some(q) = quant else { return Ok(None) };
    if !weights.contains(&format!("{path}.scales")) {
        return Ok(None);
    }
    match q.for_module(path) {
        Some(p) => spec_of(path, &p).map(Some),
        None => Ok(None),
    }
}

fn load_quantized(
    weights: &mut Weights,
    path: &str,
    rows: i32,
    cols: i32,
    spec: QuantSpec,
) -> Result<Quantized> {
    if cols % spec.group_size != 0 {
        return Err(ModelError::Invalid(format!(
            "{path}: input size {cols} is not a multiple of the group size {}",
            spec.group_size
        )));
    }
    let packed = cols * spec.bits / 32;
    let groups = cols / spec.group_size;
    Ok(Quantized {
        weight: weights.take(&format!("{path}.weight"), &[rows, packed])?,
        scales: weights.take(&format!("{path}.scales"), &[rows, groups])?,
        biases: weights.take(&format!("{path}.biases"), &[rows, groups])?,
        spec,
    })
}

/// A linear layer `y = x Wᵀ + b`, with `W` `[out, in]` float or affine quantized.
#[derive(Debug, Clone)]
pub enum Linear {
    Float { weight: Array, bias: Option<Array> },
    Quantized { q: Quantized, bias: Option<Array> },
}

impl Linear {
    /// Loads `path.weight` (+ `.scales`/`.biases` when quantized, `.bias` when `bias`).
    pub fn load(
        weights: &mut Weights,
        path: &str,
        in_dims: usize,
        out_dims: usize,
        bias: bool,
        quant: Option<&QuantizationConfig>,
    ) -> Result<Linear> {
        let (i, o) = (in_dims as i32, out_dims as i32);
        let b = if bias {
            Some(weights.take(&format!("{path}.bias"), &[o])?)
        } else {
            None
        };
        match quant_for(weights, path, quant)? {
            Some(spec) => Ok(Linear::Quantized {
                q: load_quantized(weights, path, o, i, spec)?,
                bias: b,
            }),
            None => Ok(Linear::Float {
                weight: weights.take(&format!("{path}.weight"), &[o, i])?,
                bias: b,
            }),
        }
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self, Linear::Quantized { .. })
    }

    /// Input features (for a quantized layer, unpacked).
    pub fn in_dims(&self) -> i32 {
        match self {
            Linear::Float { weight, .. } => weight.dim(1),
            Linear::Quantized { q, .. } => q.weight.dim(1) * 32 / q.spec.bits,
        }
    }

    /// Output features.
    pub fn out_dims(&self) -> i32 {
        match self {
            Linear::Float { weight, .. } => weight.dim(0),
            Linear::Quantized { q, .. } => q.weight.dim(0),
        }
    }

    /// The weight as a float `[out, in]` array (dequantized when quantized).
    pub fn dense_weight(&self) -> Result<Array> {
        Ok(match self {
            Linear::Float { weight, .. } => weight.clone(),
            Linear::Quantized { q, .. } => dequantize(q, None)?,
        })
    }

    pub fn bias(&self) -> Option<&Array> {
        match self {
            Linear::Float { bias, .. } | Linear::Quantized { bias, .. } => bias.as_ref(),
        }
    }

    /// The forward pass with trainable overrides taken from `adapt` under `path`:
    /// `path.weight`/`path.bias` replace the layer's (full fine-tune); `path.lora_a`
    /// and `path.lora_b` add mlx-lm's LoRA term `scale · (dropout(x) A B)`; with
    /// `path.m` too, DoRA as mlx-lm's `DoRALinear`.
    pub fn forward_adapted(&self, x: &Array, path: &str, adapt: &Adapt<'_>) -> Result<Array> {
        let Some(params) = adapt.params.filter(|p| !p.is_empty()) else {
            return self.forward(x);
        };
        let get = |leaf: &str| params.get(&format!("{path}.{leaf}"));
        if let Some(w) = get("weight") {
            let bias = get("bias").or(self.bias());
            let y = x.matmul(&w.t()?)?;
            return Ok(match bias {
                Some(b) => y.add(b)?,
                None => y,
            });
        }
        let (Some(a), Some(b)) = (get("lora_a"), get("lora_b")) else {
            return self.forward(x);
        };
        let xd = match adapt.dropout {
            p if p > 0.0 => {
                let keep = Array::scalar(1.0f32 - p)?;
                let m = mlx::random::bernoulli(&keep, &x.shape(), None)?;
                x.multiply(m.as_type(x.dtype())?)?.div(1.0 - p)?
            }
            _ => x.clone(),
        };
        let z = xd.matmul(a)?.matmul(b)?;
        let z = z.mul(adapt.lora_scale)?.as_type(x.dtype())?;
        match get("m") {
            None => Ok(self.forward(x)?.add(&z)?),
            Some(m) => {
                // DoRA: (x Wᵀ + s·x A B) · m / ‖W + s·Bᵀ Aᵀ‖ (row norms, no gradient) + bias.
                let w = self.dense_weight()?;
                let y = x.matmul(&w.t()?)?.add(&z)?;
                let adapted = w.add(&b.t()?.mul(adapt.lora_scale)?.matmul(&a.t()?)?)?;
                let denom = adapted.square()?.sum(1, false)?.sqrt()?.stop_gradient()?;
                let out = m.div(&denom)?.as_type(x.dtype())?.multiply(&y)?;
                Ok(match self.bias() {
                    Some(bias) => out.add(bias)?,
                    None => out,
                })
            }
        }
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(match self {
            Linear::Float { weight, bias: None } => x.matmul(&weight.t()?)?,
            Linear::Float {
                weight,
                bias: Some(b),
            } => mlx::addmm(b, x, &weight.t()?, 1.0, 1.0)?,
            Linear::Quantized { q, bias } => {
                let y = quantized_matmul(x, q, true)?;
                match bias {
                    Some(b) => y.add(b)?,
                    None => y,
                }
            }
        })
    }
}

/// Trainable parameters (by mlx-lm name) to use in place of, or on top of, a
/// model's own in a forward pass, with the LoRA scale and dropout.
#[derive(Debug, Clone, Copy, Default)]
pub struct Adapt<'a> {
    pub params: Option<&'a Params>,
    pub lora_scale: f32,
    pub dropout: f32,
}

impl Adapt<'_> {
    /// The overriding `path.weight`, if any.
    pub fn weight(&self, path: &str) -> Option<&Array> {
        self.params
            .filter(|p| !p.is_empty())
            .and_then(|p| p.get(&format!("{path}.weight")))
    }
}

/// A token embedding `[vocab, dims]`, float or affine quantized.
#[derive(Debug, Clone)]
pub enum Embedding {
    Float(Array),
    Quantized(Quantized),
}

impl Embedding {
    pub fn load(
        weights: &mut Weights,
        path: &str,
        vocab: usize,
        dims: usize,
        quant: Option<&QuantizationConfig>,
    ) -> Result<Embedding> {
        let (v, d) = (vocab as i32, dims as i32);
        match quant_for(weights, path, quant)? {
            Some(spec) => Ok(Embedding::Quantized(load_quantized(
                weights, path, v, d, spec,
            )?)),
            None => Ok(Embedding::Float(
                weights.take(&format!("{path}.weight"), &[v, d])?,
            )),
        }
    }

    /// Rows for integer `ids` of any shape: `[..., dims]`.
    pub fn forward(&self, ids: &Array) -> Result<Array> {
        Ok(match self {
            Embedding::Float(w) => w.take(ids, Some(0))?,
            Embedding::Quantized(q) => {
                let rows = Quantized {
                    weight: q.weight.take(ids, Some(0))?,
                    scales: q.scales.take(ids, Some(0))?,
                    biases: q.biases.take(ids, Some(0))?,
                    spec: q.spec,
                };
                dequantize(&rows, None)?
            }
        })
    }

    /// `x Eᵀ`: the embedding used as the output layer (tied word embeddings).
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        Ok(match self {
            Embedding::Float(w) => x.matmul(&w.t()?)?,
            Embedding::Quantized(q) => quantized_matmul(x, q, true)?,
        })
    }
}

/// RMS normalisation over the last axis with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    pub weight: Array,
    pub eps: f32,
}

impl RmsNorm {
    pub fn load(weights: &mut Weights, path: &str, dims: usize, eps: f64) -> Result<RmsNorm> {
        Ok(RmsNorm {
            weight: weights.take(&format!("{path}.weight"), &[dims as i32])?,
            eps: eps as f32,
        })
    }

    pub fn forward(&self, x: &Array) -> Result<Array> {
        Ok(mlx::fast::rms_norm(x, Some(&self.weight), self.eps)?)
    }

    /// [`RmsNorm::forward`] with `path.weight` taken from `adapt` when present.
    pub fn forward_adapted(&self, x: &Array, path: &str, adapt: &Adapt<'_>) -> Result<Array> {
        let w = adapt.weight(path).unwrap_or(&self.weight);
        Ok(mlx::fast::rms_norm(x, Some(w), self.eps)?)
    }
}
