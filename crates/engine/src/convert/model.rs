//! `mlx_lm.convert` for a local mlx-lm folder: cast (`--dtype`), quantize (`-q`,
//! `--q-bits`, `--q-group-size`) or dequantize (`--dequantize`), written in mlx-lm's
//! layout with the tokenizer files copied.

use std::collections::BTreeMap;
use std::path::Path;

use mlx::quantization::{QuantSpec, Quantized, dequantize, quantize};
use mlx::{Array, Dtype};
use serde_json::{Map, Value, json};

use super::writer::{self, Staging, check_output_free, io_err};
use super::{ConvertError, ConvertEvent, ConvertReport, Result};
use crate::config::ModelConfig;
use crate::models::Llama;
use crate::weights::{Weights, weight_files};

/// Options of [`convert_model`], as `mlx_lm.convert` takes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Quantize every Linear and Embedding (`lm_head` included) whose input size is a
    /// multiple of the group size (mlx-lm's `-q --q-bits --q-group-size`).
    pub quantize: Option<QuantSpec>,
    /// Cast every floating-point tensor (float16, bfloat16 or float32). Without it,
    /// `config.json`'s `torch_dtype` is used when it names one of those, like mlx-lm.
    pub dtype: Option<Dtype>,
    /// Unpack every quantized layer to floating point and drop `quantization`.
    pub dequantize: bool,
}

impl ConvertOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        if self.quantize.is_some() && self.dequantize {
            return Err(ConvertError::Invalid(
                "choose either quantize or dequantize, not both".into(),
            ));
        }
        if let Some(d) = self.dtype
            && !matches!(d, Dtype::Float16 | Dtype::Bfloat16 | Dtype::Float32)
        {
            return Err(ConvertError::Invalid(format!(
                "dtype {} is not one of float16, bfloat16, float32",
                d.name()
            )));
        }
        Ok(())
    }

    /// No conversion asked for beyond the layout itself.
    pub(crate) fn is_plain(&self) -> bool {
        self.quantize.is_none() && self.dtype.is_none() && !self.dequantize
    }
}

/// Tokenizer and generation files copied beside the weights (what
/// `tokenizer.save_pretrained` writes, plus `generation_config.json`).
const COPIED_FILES: &[&str] = &[
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
];

/// Converts the mlx-lm folder `in_dir` into `out` (which must not exist).
pub fn convert_model(
    in_dir: impl AsRef<Path>,
    out: impl AsRef<Path>,
    options: &ConvertOptions,
) -> Result<ConvertReport> {
    convert_model_with_progress(in_dir, out, options, &mut |_| {})
}

/// [`convert_model`], reporting what it does to `progress`.
pub fn convert_model_with_progress(
    in_dir: impl AsRef<Path>,
    out: impl AsRef<Path>,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(ConvertEvent),
) -> Result<ConvertReport> {
    convert_inner(in_dir.as_ref(), out.as_ref(), options, false, progress)
}

fn read_config(dir: &Path) -> Result<Map<String, Value>> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ConvertError::Invalid(format!(
            "{}: not a JSON object",
            path.display()
        ))),
        Err(e) => Err(ConvertError::Invalid(format!("{}: {e}", path.display()))),
    }
}

/// The dtype mlx-lm's convert casts to when `--dtype` is not given.
fn config_dtype(config: &Map<String, Value>) -> Option<Dtype> {
    let name = config
        .get("torch_dtype")
        .and_then(Value::as_str)
        .or_else(|| {
            config
                .get("text_config")
                .and_then(|t| t.get("dtype"))
                .and_then(Value::as_str)
        })?;
    match name {
        "float16" => Some(Dtype::Float16),
        "bfloat16" => Some(Dtype::Bfloat16),
        "float32" => Some(Dtype::Float32),
        _ => None,
    }
}

pub(crate) fn quant_spec(path: &str, p: &crate::config::QuantParams) -> Result<QuantSpec> {
    if p.mode != "affine" {
        return Err(ConvertError::Invalid(format!(
            "{path}: quantization mode `{}` is not supported (only affine)",
            p.mode
        )));
    }
    QuantSpec::new(p.group_size as i32, p.bits as i32)
        .map_err(|e| ConvertError::Invalid(format!("{path}: {e}")))
}

/// Dequantizes every module with `.scales` (per its entry in `quantization`).
pub(crate) fn dequantize_all(
    tensors: &mut BTreeMap<String, Array>,
    config: &mut Map<String, Value>,
    parsed: &ModelConfig,
) -> Result<()> {
    let Some(q) = parsed.quantization.as_ref() else {
        return Ok(());
    };
    let modules: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".scales").map(str::to_string))
        .collect();
    for m in modules {
        let params = q.for_module(&m).ok_or_else(|| {
            ConvertError::Invalid(format!(
                "`{m}` has scales but config.json's quantization says it is not quantized"
            ))
        })?;
        let spec = quant_spec(&m, &params)?;
        let take = |t: &mut BTreeMap<String, Array>, s: &str| {
            t.remove(&format!("{m}.{s}"))
                .ok_or_else(|| ConvertError::Invalid(format!("missing tensor `{m}.{s}`")))
        };
        let qz = Quantized {
            weight: take(tensors, "weight")?,
            scales: take(tensors, "scales")?,
            biases: take(tensors, "biases")?,
            spec,
        };
        tensors.insert(format!("{m}.weight"), dequantize(&qz, None)?);
    }
    config.remove("quantization");
    config.remove("quantization_config");
    Ok(())
}

/// Quantizes every 2-D floating `.weight` (Linear and Embedding layers in the supported
/// families) whose last dimension is a multiple of the group size, like mlx-lm's
/// `quantize_model`; writes the `quantization` block.
fn quantize_all(
    tensors: &mut BTreeMap<String, Array>,
    config: &mut Map<String, Value>,
    spec: QuantSpec,
) -> Result<()> {
    let modules: Vec<String> = tensors
        .iter()
        .filter(|(k, a)| {
            k.ends_with(".weight") && a.ndim() == 2 && a.dtype().is_float() && {
                let m = &k[..k.len() - ".weight".len()];
                !tensors.contains_key(&format!("{m}.scales"))
            }
        })
        .filter(|(_, a)| a.dim(-1) % spec.group_size == 0)
        .map(|(k, _)| k[..k.len() - ".weight".len()].to_string())
        .collect();
    for m in modules {
        let w = tensors
            .remove(&format!("{m}.weight"))
            .expect("listed above");
        let q = quantize(&w, spec)?;
        tensors.insert(format!("{m}.weight"), q.weight);
        tensors.insert(format!("{m}.scales"), q.scales);
        tensors.insert(format!("{m}.biases"), q.biases);
    }
    let q = json!({"group_size": spec.group_size, "bits": spec.bits, "mode": "affine"});
    config.insert("quantization".into(), q.clone());
    config.insert("quantization_config".into(), q);
    Ok(())
}

pub(crate) fn convert_inner(
    in_dir: &Path,
    out: &Path,
    options: &ConvertOptions,
    dequantize_first: bool,
    progress: &mut dyn FnMut(ConvertEvent),
) -> Result<ConvertReport> {
    options.validate()?;
    check_output_free(out)?;
    if !in_dir.is_dir() {
        return Err(ConvertError::Invalid(format!(
            "{} is not a model folder",
            in_dir.display()
        )));
    }
    progress(ConvertEvent::Stage(format!("loading {}", in_dir.display())));
    let (mut config, parsed, mut tensors) = load_folder(in_dir)?;

    if let Some(dtype) = options.dtype.or_else(|| config_dtype(&config)) {
        progress(ConvertEvent::Stage(format!("casting to {}", dtype.name())));
        for a in tensors.values_mut() {
            if a.dtype().is_float() && a.dtype() != dtype {
                *a = a.as_type(dtype)?;
            }
        }
    }
    if options.dequantize || dequantize_first {
        progress(ConvertEvent::Stage("dequantizing".into()));
        dequantize_all(&mut tensors, &mut config, &parsed)?;
    }
    if let Some(spec) = options.quantize {
        if config.contains_key("quantization") {
            return Err(ConvertError::Invalid(format!(
                "{} is already quantized: dequantize it first (--dequantize), then quantize",
                in_dir.display()
            )));
        }
        progress(ConvertEvent::Stage(format!(
            "quantizing to {} bits, group size {}",
            spec.bits, spec.group_size
        )));
        quantize_all(&mut tensors, &mut config, spec)?;
    }

    write_folder(in_dir, out, &config, &tensors, progress)
}

/// A loaded model folder: `config.json` as a map and parsed, and the tensors.
pub(crate) type LoadedFolder = (Map<String, Value>, ModelConfig, BTreeMap<String, Array>);

/// A model folder's `config.json` (as a map and parsed) and its tensors, after
/// mlx-lm's `sanitize` (rotary `inv_freq` and a tied `lm_head` dropped).
pub(crate) fn load_folder(in_dir: &Path) -> Result<LoadedFolder> {
    let config = read_config(in_dir)?;
    let parsed = ModelConfig::from_json_value(&Value::Object(config.clone()))?;
    let mut tensors: BTreeMap<String, Array> = BTreeMap::new();
    for file in weight_files(in_dir)? {
        for (name, a) in mlx::io::load_safetensors(&file)?.tensors {
            if tensors.insert(name.clone(), a).is_some() {
                return Err(crate::weights::ModelError::DuplicateTensor { name }.into());
            }
        }
    }
    // mlx-lm's `sanitize`: drop precomputed rotary frequencies, and lm_head when tied.
    tensors.retain(|k, _| !k.contains("self_attn.rotary_emb.inv_freq"));
    if parsed.tie_word_embeddings {
        tensors.retain(|k, _| !k.starts_with("lm_head."));
    }
    Ok((config, parsed, tensors))
}

/// Writes `tensors` and `config` as an mlx-lm folder at `out` (which must not
/// exist), with the tokenizer files of `in_dir`, after checking that the model
/// builds from exactly these tensors; staged and renamed into place.
pub(crate) fn write_folder(
    in_dir: &Path,
    out: &Path,
    config: &Map<String, Value>,
    tensors: &BTreeMap<String, Array>,
    progress: &mut dyn FnMut(ConvertEvent),
) -> Result<ConvertReport> {
    progress(ConvertEvent::Stage(
        "checking tensors against config.json".into(),
    ));
    let new_parsed = ModelConfig::from_json_value(&Value::Object(config.clone()))?;
    Llama::from_weights(new_parsed.clone(), Weights::from_map(tensors.clone()))?;

    let staging = Staging::new(out, "tmp")?;
    let dir = staging.path();
    let q = new_parsed.quantization.clone();
    let bits_of = |m: &str| q.as_ref().and_then(|q| q.for_module(m)).map(|p| p.bits);
    let total_parameters = writer::total_parameters(tensors, &bits_of);
    let (total_size, _) = writer::write_weights(dir, tensors, total_parameters, progress)?;
    writer::write_config(dir, config)?;
    for name in COPIED_FILES {
        let src = in_dir.join(name);
        if src.is_file() {
            let dst = dir.join(name);
            std::fs::copy(&src, &dst).map_err(|e| io_err(&dst, e))?;
        }
    }
    let output = staging.commit()?;
    progress(ConvertEvent::Stage("done".into()));
    writer::report(output, tensors, total_size, total_parameters, config)
}
