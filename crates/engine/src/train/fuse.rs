//! `mlx_lm.fuse` on disk: a base model folder plus an adapter folder become a new
//! mlx-lm model folder with the adapters merged into the weights. A quantized layer
//! is dequantized, merged and re-quantized with its own group size and bits (as
//! `LoRALinear.fuse(dequantize=False)`); with `dequantize`, every quantized layer is
//! written as floating point and `quantization` leaves `config.json`. Tokenizer files
//! are copied; the folder is staged and renamed into place by the convert writer.

use std::path::Path;

use mlx::quantization::{Quantized, dequantize, quantize};
use mlx::{Array, Dtype};

use super::adapters::FineTuneType;
use super::{Result, TrainError};
use crate::convert::{self, ConvertEvent, ConvertReport};

/// Merges the adapters of `adapter_dir` into the model of `base` and writes the
/// result to `out` (which must not exist).
pub fn fuse_to_dir(
    base: &Path,
    adapter_dir: &Path,
    out: &Path,
    dequantize_all: bool,
    progress: &mut dyn FnMut(ConvertEvent),
) -> Result<ConvertReport> {
    if out.exists() || out.symlink_metadata().is_ok() {
        return Err(TrainError::Invalid(format!(
            "output folder {} already exists: delete it or choose another --save-path",
            out.display()
        )));
    }
    progress(ConvertEvent::Stage(format!("loading {}", base.display())));
    // Loading checks the adapters against the model (names and shapes); the fused
    // weights are computed from the folder's tensors, not from this model.
    let loaded = crate::models::load(
        base,
        &crate::models::LoadOptions {
            adapter: Some(adapter_dir),
            ..Default::default()
        },
    )?;
    let adapters = loaded.adapters.expect("an adapter was asked for");
    drop(loaded.model);
    let (mut config, parsed, mut tensors) = convert::load_folder(base)?;
    let spec = &adapters.config.spec;
    progress(ConvertEvent::Stage(format!(
        "fusing {} adapters from {}",
        spec.fine_tune_type.name(),
        adapter_dir.display()
    )));
    if spec.fine_tune_type == FineTuneType::Full {
        for (name, w) in &adapters.params {
            match tensors.get(name) {
                Some(old) if old.shape() == w.shape() => {
                    tensors.insert(name.clone(), w.as_type(old.dtype())?);
                }
                _ => {
                    return Err(TrainError::Invalid(format!(
                        "{}: `{name}` is not a float tensor of the base model",
                        adapter_dir.display()
                    )));
                }
            }
        }
    } else {
        let modules: Vec<String> = adapters
            .params
            .keys()
            .filter_map(|k| k.strip_suffix(".lora_a").map(str::to_string))
            .collect();
        for m in modules {
            let p = &adapters.params;
            let (a, b) = (&p[&format!("{m}.lora_a")], &p[&format!("{m}.lora_b")]);
            let missing = |t: &str| TrainError::Invalid(format!("base model has no `{m}.{t}`"));
            let weight_name = format!("{m}.weight");
            let weight = tensors
                .remove(&weight_name)
                .ok_or_else(|| missing("weight"))?;
            // mlx-lm merges in the layer's dtype (the scales' for a quantized layer).
            let (dense, dtype, qspec) = match tensors.remove(&format!("{m}.scales")) {
                Some(scales) => {
                    let biases = tensors
                        .remove(&format!("{m}.biases"))
                        .ok_or_else(|| missing("biases"))?;
                    let params = parsed
                        .quantization
                        .as_ref()
                        .and_then(|q| q.for_module(&m))
                        .ok_or_else(|| {
                            TrainError::Invalid(format!(
                                "`{m}` has scales but config.json's quantization says it is not quantized"
                            ))
                        })?;
                    let dtype = scales.dtype();
                    let q = Quantized {
                        weight,
                        scales,
                        biases,
                        spec: convert::quant_spec(&m, &params)?,
                    };
                    (dequantize(&q, None)?, dtype, Some(q.spec))
                }
                None => {
                    let dtype = weight.dtype();
                    (weight, dtype, None)
                }
            };
            let mut w = merged_weight(&dense, a, b, spec.lora.scale, dtype)?;
            if let Some(mag) = p.get(&format!("{m}.m")) {
                // DoRA: rows rescaled to the learned magnitudes.
                let norm = w.square()?.sum(1, false)?.sqrt()?;
                w = mag.div(&norm)?.expand_dims(&[1])?.multiply(&w)?;
            }
            match qspec {
                Some(qs) if !dequantize_all => {
                    let r = quantize(&w, qs)?;
                    tensors.insert(weight_name, r.weight);
                    tensors.insert(format!("{m}.scales"), r.scales);
                    tensors.insert(format!("{m}.biases"), r.biases);
                }
                _ => {
                    tensors.insert(weight_name, w);
                }
            }
        }
    }
    if dequantize_all {
        progress(ConvertEvent::Stage("dequantizing".into()));
        convert::dequantize_all(&mut tensors, &mut config, &parsed)?;
    }
    Ok(convert::write_folder(
        base, out, &config, &tensors, progress,
    )?)
}

/// mlx-lm's `LoRALinear.fuse`: `W + (scale · Bᵀ).astype(dtype) @ Aᵀ.astype(dtype)`.
fn merged_weight(weight: &Array, a: &Array, b: &Array, scale: f32, dtype: Dtype) -> Result<Array> {
    let lb = b.t()?.mul(scale)?.as_type(dtype)?;
    let la = a.t()?.as_type(dtype)?;
    Ok(weight.add(&lb.matmul(&la)?)?)
}
