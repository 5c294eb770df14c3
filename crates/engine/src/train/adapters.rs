//! LoRA / DoRA / full fine-tune parameters as mlx-lm's `tuner` makes them, and the
//! adapter folder it writes: `adapters.safetensors` (the trainable parameters by
//! mlx-lm name, e.g. `model.layers.3.self_attn.q_proj.lora_a`) and `adapter_config.json`
//! (`fine_tune_type`, `num_layers`, `lora_parameters {rank, scale, dropout[, keys]}`, and
//! the rest of the run's arguments, keys sorted, as `mlx_lm.lora` saves `vars(args)`).

use std::collections::BTreeMap;
use std::path::Path;

use mlx::random::Key;
use mlx::{Array, Dtype, Params};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Result, TrainError};
use crate::models::Llama;

pub const ADAPTER_FILE: &str = "adapters.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FineTuneType {
    Lora,
    Dora,
    Full,
}

impl FineTuneType {
    pub fn parse(s: &str) -> Result<FineTuneType> {
        match s {
            "lora" => Ok(FineTuneType::Lora),
            "dora" => Ok(FineTuneType::Dora),
            "full" => Ok(FineTuneType::Full),
            other => Err(TrainError::Invalid(format!(
                "unknown fine-tune type `{other}` (lora, dora, full)"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            FineTuneType::Lora => "lora",
            FineTuneType::Dora => "dora",
            FineTuneType::Full => "full",
        }
    }
}

/// mlx-lm's `lora_parameters`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraParameters {
    pub rank: usize,
    pub scale: f32,
    pub dropout: f32,
    /// Module names relative to a block (`self_attn.q_proj`); `None`: every linear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

impl Default for LoraParameters {
    fn default() -> LoraParameters {
        LoraParameters {
            rank: 8,
            scale: 20.0,
            dropout: 0.0,
            keys: None,
        }
    }
}

/// What is trained: the type, how many of the last blocks (-1: all), LoRA settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    pub fine_tune_type: FineTuneType,
    pub num_layers: i32,
    pub lora: LoraParameters,
}

impl Default for AdapterSpec {
    fn default() -> AdapterSpec {
        AdapterSpec {
            fine_tune_type: FineTuneType::Lora,
            num_layers: 16,
            lora: LoraParameters::default(),
        }
    }
}

impl AdapterSpec {
    /// Indices of the trained blocks: the last `num_layers` (all when -1).
    pub fn blocks(&self, model: &Llama) -> Result<std::ops::Range<usize>> {
        let n = model.num_layers();
        if self.num_layers > n as i32 {
            return Err(TrainError::Invalid(format!(
                "requested to train {} layers but the model only has {n} layers",
                self.num_layers
            )));
        }
        let k = if self.num_layers < 0 {
            n
        } else {
            self.num_layers as usize
        };
        Ok(n - k..n)
    }

    /// The fresh trainable parameters, by mlx-lm name. LoRA: `lora_a` `(in, r)`
    /// uniform in ±1/√in, `lora_b` `(r, out)` zeros; DoRA adds `m`, the row norms of
    /// the (dequantized) weight; full: the blocks' own weights (float layers only).
    /// The random draws are a function of `seed`.
    pub fn init(&self, model: &Llama, seed: u64) -> Result<Params> {
        let mut out = Params::new();
        let blocks = self.blocks(model)?;
        if self.fine_tune_type == FineTuneType::Full {
            for i in blocks {
                out.extend(model.block_parameters(i)?);
            }
            return Ok(out);
        }
        let mut key = Key::new(seed)?;
        for i in blocks {
            for (name, lin) in model.block_linears(i) {
                if let Some(keys) = &self.lora.keys
                    && !keys.iter().any(|k| k == name)
                {
                    continue;
                }
                let (k, next) = key.split()?;
                key = next;
                let (fan_in, fan_out, r) = (lin.in_dims(), lin.out_dims(), self.lora.rank as i32);
                let bound = 1.0 / (fan_in as f32).sqrt();
                let p = format!("model.layers.{i}.{name}");
                out.insert(
                    format!("{p}.lora_a"),
                    mlx::random::uniform(-bound, bound, &[fan_in, r], Dtype::Float32, Some(&k))?,
                );
                out.insert(
                    format!("{p}.lora_b"),
                    mlx::zeros(&[r, fan_out], Dtype::Float32)?,
                );
                if self.fine_tune_type == FineTuneType::Dora {
                    let w = lin.dense_weight()?.as_type(Dtype::Float32)?;
                    out.insert(format!("{p}.m"), w.square()?.sum(1, false)?.sqrt()?);
                }
            }
        }
        if let Some(keys) = &self.lora.keys
            && out.is_empty()
        {
            return Err(TrainError::Invalid(format!(
                "no layer of the trained blocks matches the LoRA keys {keys:?}"
            )));
        }
        mlx::eval(out.values())?;
        Ok(out)
    }
}

/// The contents of `adapter_config.json`: the fields mlx-lm reads, and every other
/// field kept as is.
#[derive(Debug, Clone)]
pub struct AdapterConfig {
    pub spec: AdapterSpec,
    pub extra: Map<String, Value>,
}

impl AdapterConfig {
    pub fn to_json(&self) -> Value {
        let mut m: BTreeMap<String, Value> = self.extra.clone().into_iter().collect();
        m.insert(
            "fine_tune_type".into(),
            Value::String(self.spec.fine_tune_type.name().into()),
        );
        m.insert("num_layers".into(), Value::from(self.spec.num_layers));
        let lora = if self.spec.fine_tune_type == FineTuneType::Full {
            Value::Null
        } else {
            serde_json::to_value(&self.spec.lora).unwrap_or(Value::Null)
        };
        m.insert("lora_parameters".into(), lora);
        Value::Object(m.into_iter().collect())
    }

    pub fn from_json(v: &Value, file: &Path) -> Result<AdapterConfig> {
        let bad = |m: String| TrainError::Invalid(format!("{}: {m}", file.display()));
        let Value::Object(obj) = v else {
            return Err(bad("expected a JSON object".into()));
        };
        let fine_tune_type = match obj.get("fine_tune_type") {
            None | Some(Value::Null) => FineTuneType::Lora,
            Some(Value::String(s)) => FineTuneType::parse(s).map_err(|e| bad(e.to_string()))?,
            Some(other) => return Err(bad(format!("`fine_tune_type` is not a string: {other}"))),
        };
        let num_layers =
            obj.get("num_layers")
                .and_then(Value::as_i64)
                .ok_or_else(|| bad("missing integer `num_layers`".into()))? as i32;
        let lora = match obj.get("lora_parameters") {
            None | Some(Value::Null) if fine_tune_type == FineTuneType::Full => {
                LoraParameters::default()
            }
            None | Some(Value::Null) => return Err(bad("missing `lora_parameters`".into())),
            Some(v) => {
                if v.get("scale").is_none() {
                    return Err(bad(
                        "`lora_parameters` is missing `scale` (mlx-lm uses `scale`, not `alpha`)"
                            .into(),
                    ));
                }
                serde_json::from_value(v.clone())
                    .map_err(|e| bad(format!("`lora_parameters`: {e}")))?
            }
        };
        let mut extra = obj.clone();
        for k in ["fine_tune_type", "num_layers", "lora_parameters"] {
            extra.remove(k);
        }
        Ok(AdapterConfig {
            spec: AdapterSpec {
                fine_tune_type,
                num_layers,
                lora,
            },
            extra,
        })
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(ADAPTER_CONFIG);
        let text = serde_json::to_string_pretty(&self.to_json()).expect("a JSON value");
        let tmp = dir.join(format!(".{ADAPTER_CONFIG}.tmp"));
        std::fs::write(&tmp, text + "\n").map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    }

    pub fn read(dir: &Path) -> Result<AdapterConfig> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| TrainError::Invalid(format!("{}: invalid JSON: {e}", path.display())))?;
        AdapterConfig::from_json(&v, &path)
    }
}

fn io(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes trainable parameters as a safetensors file (atomically).
pub fn save_params(path: &Path, params: &Params) -> Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    mlx::io::save_safetensors(
        path,
        params.iter().map(|(k, v)| (k.as_str(), v)),
        &BTreeMap::new(),
    )?;
    Ok(())
}

/// An adapter folder as loaded: its config and its parameters.
#[derive(Debug, Clone)]
pub struct Adapters {
    pub config: AdapterConfig,
    pub params: Params,
}

/// Reads an adapter folder and checks every tensor against the parameters the spec
/// makes for `model` (names and shapes), as mlx-lm's `load_adapters` does.
pub fn load_adapters(dir: &Path, model: &Llama) -> Result<Adapters> {
    let config = AdapterConfig::read(dir)?;
    let file = dir.join(ADAPTER_FILE);
    let params = mlx::io::load_safetensors(&file)
        .map_err(|e| TrainError::Invalid(format!("{}: {e}", file.display())))?
        .tensors;
    check_against(&config.spec, model, &params, &file)?;
    Ok(Adapters { config, params })
}

fn check_against(spec: &AdapterSpec, model: &Llama, params: &Params, file: &Path) -> Result<()> {
    let expected = expected_shapes(spec, model)?;
    let mut errors = Vec::new();
    for (name, w) in params {
        match expected.get(name) {
            None => errors.push(format!("  {name}: not an adapter parameter in the model")),
            Some(shape) if *shape != w.shape() => errors.push(format!(
                "  {name}: adapter shape {:?} does not match model parameter shape {shape:?}",
                w.shape()
            )),
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TrainError::Invalid(format!(
            "adapter at {} contains incompatible tensors:\n{}",
            file.display(),
            errors.join("\n")
        )))
    }
}

fn expected_shapes(spec: &AdapterSpec, model: &Llama) -> Result<BTreeMap<String, Vec<i32>>> {
    let mut out = BTreeMap::new();
    if spec.fine_tune_type == FineTuneType::Full {
        // Any float parameter of any block may be in a full fine-tune's file.
        for i in 0..model.num_layers() {
            if let Ok(p) = model.block_parameters(i) {
                out.extend(p.into_iter().map(|(k, v)| (k, v.shape())));
            }
        }
        if let Ok(p) = model.outer_parameters() {
            out.extend(p.into_iter().map(|(k, v)| (k, v.shape())));
        }
        return Ok(out);
    }
    for i in spec.blocks(model)? {
        for (name, lin) in model.block_linears(i) {
            if let Some(keys) = &spec.lora.keys
                && !keys.iter().any(|k| k == name)
            {
                continue;
            }
            let (fi, fo, r) = (lin.in_dims(), lin.out_dims(), spec.lora.rank as i32);
            let p = format!("model.layers.{i}.{name}");
            out.insert(format!("{p}.lora_a"), vec![fi, r]);
            out.insert(format!("{p}.lora_b"), vec![r, fo]);
            out.insert(format!("{p}.m"), vec![fo]);
        }
    }
    Ok(out)
}

/// Applies a loaded adapter folder to `model`: LoRA/DoRA unfused (every forward pass
/// adds the low-rank term), full fine-tune weights replacing the model's.
pub fn apply_adapters(model: &mut Llama, adapters: &Adapters) -> Result<()> {
    let spec = &adapters.config.spec;
    match spec.fine_tune_type {
        FineTuneType::Full => model.set_parameters(&adapters.params)?,
        _ => model.set_adapters(adapters.params.clone(), spec.lora.scale),
    }
    Ok(())
}

/// Loads an adapter folder into `model` (see [`load_adapters`], [`apply_adapters`]).
pub fn load_into(model: &mut Llama, dir: &Path) -> Result<AdapterConfig> {
    let a = load_adapters(dir, model)?;
    apply_adapters(model, &a)?;
    Ok(a.config)
}

/// `W + scale · Bᵀ Aᵀ` for one LoRA layer (mlx-lm's `LoRALinear.fuse`, before any
/// re-quantization), in the weight's dtype.
pub fn fused_weight(weight: &Array, a: &Array, b: &Array, scale: f32) -> Result<Array> {
    let delta = b
        .t()?
        .mul(scale)?
        .matmul(&a.t()?)?
        .as_type(weight.dtype())?;
    Ok(weight.add(&delta)?)
}

/// Merges LoRA/DoRA adapters into `model`'s weights, as mlx-lm's `fuse`
/// (`LoRALinear.fuse` / `DoRALinear.fuse`): a quantized layer is dequantized, merged
/// and re-quantized with its own group size and bits unless `dequantize`. Full
/// fine-tune weights simply replace the model's.
pub fn fuse(model: &mut Llama, adapters: &Adapters, dequantize: bool) -> Result<()> {
    let spec = &adapters.config.spec;
    if spec.fine_tune_type == FineTuneType::Full {
        model.set_parameters(&adapters.params)?;
        return Ok(());
    }
    let p = &adapters.params;
    for i in 0..model.num_layers() {
        let names: Vec<&'static str> = model.block_linears(i).into_iter().map(|(n, _)| n).collect();
        for name in names {
            let path = format!("model.layers.{i}.{name}");
            let (Some(a), Some(b)) = (
                p.get(&format!("{path}.lora_a")),
                p.get(&format!("{path}.lora_b")),
            ) else {
                continue;
            };
            let lin = model
                .block_linear_mut(i, name)
                .expect("a name from block_linears");
            let weight = lin.dense_weight()?;
            let mut w = fused_weight(&weight, a, b, spec.lora.scale)?;
            if let Some(m) = p.get(&format!("{path}.m")) {
                let norm = w.square()?.sum(1, false)?.sqrt()?;
                w = m.div(&norm)?.expand_dims(&[1])?.multiply(&w)?;
            }
            let bias = lin.bias().cloned();
            *lin = match lin {
                crate::nn::Linear::Quantized { q, .. } if !dequantize => {
                    crate::nn::Linear::Quantized {
                        q: mlx::quantization::quantize(&w, q.spec)?,
                        bias,
                    }
                }
                _ => crate::nn::Linear::Float { weight: w, bias },
            };
        }
    }
    model.set_adapters(Params::new(), 0.0);
    Ok(())
}
