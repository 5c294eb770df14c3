//! Model configuration: `config.json` (+ `generation_config.json`) in the mlx-lm /
//! Hugging Face layout, parsed into a typed [`ModelConfig`].
//!
//! Defaults mirror mlx-lm's `ModelArgs` per architecture exactly (see each field),
//! because a folder must load here the way it loads in mlx-lm:
//!
//! | key                      | llama / mistral | qwen2     | qwen3     |
//! |--------------------------|-----------------|-----------|-----------|
//! | `num_key_value_heads`    | = heads         | required  | required  |
//! | `head_dim`               | or hidden/heads | hidden/heads (key ignored) | required |
//! | `rope_theta`             | 10000           | 1000000   | required (or `rope_parameters.rope_theta`) |
//! | `rope_traditional`       | false           | false     | always false (key ignored) |
//! | `tie_word_embeddings`    | true            | true      | required  |
//! | `max_position_embeddings`| optional        | 32768     | required  |
//! | q/k/v bias, o bias, mlp bias | `attention_bias`, `attention_bias`, `mlp_bias` | true, false, false | false |
//! | q/k RMSNorm              | no              | no        | yes       |

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Everything that can go wrong reading a model's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: expected a JSON object at the top level, found {found}")]
    NotAnObject { file: String, found: String },
    #[error("{file}: missing required key `{key}` for model_type `{model_type}`")]
    MissingKey {
        file: String,
        key: String,
        model_type: String,
    },
    #[error("{file}: key `{key}` has the wrong type: expected {expected}, found {found}")]
    WrongType {
        file: String,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("{file}: invalid value for `{key}`: {message}")]
    InvalidValue {
        file: String,
        key: String,
        message: String,
    },
    #[error(
        "{file}: unsupported model_type `{model_type}` (supported: llama, mistral, qwen2, qwen3)"
    )]
    UnsupportedModelType { file: String, model_type: String },
    #[error(
        "{file}: unsupported rope_scaling type `{rope_type}` (supported: default, linear, llama3)"
    )]
    UnsupportedRopeScaling { file: String, rope_type: String },
    #[error(
        "{file}: unsupported quantization_config quant_method `{method}` without an mlx \
         `quantization` block (convert the model with mlx-lm or mlx-hub first)"
    )]
    UnsupportedQuantization { file: String, method: String },
}

/// The model family that `model_type` selects (mlx-lm remaps `mistral` to `llama`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Architecture {
    Llama,
    Qwen2,
    Qwen3,
}

impl Architecture {
    /// Map a `config.json` `model_type` onto an architecture, as mlx-lm's
    /// `MODEL_REMAPPING` does.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "qwen3" => Some(Self::Qwen3),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Qwen3 => "qwen3",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parameters of llama3-style RoPE scaling (mlx-lm's `Llama3RoPE`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    /// Default 1.0.
    pub low_freq_factor: f64,
    /// Default 4.0.
    pub high_freq_factor: f64,
    /// Default 8192.
    pub original_max_position_embeddings: u64,
}

/// `rope_scaling` after mlx-lm's `initialize_rope` reading of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// Positions are multiplied by `1/factor` (mlx `nn.RoPE(scale=1/factor)`).
    Linear {
        factor: f64,
    },
    Llama3(Llama3RopeScaling),
}

/// One set of quantization parameters, as `nn.quantize` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantParams {
    pub group_size: u32,
    pub bits: u32,
    /// `"affine"` unless the config says otherwise.
    pub mode: String,
}

impl QuantParams {
    /// mlx's defaults for affine quantization: group size 64, 4 bits.
    pub fn affine_default() -> Self {
        Self {
            group_size: 64,
            bits: 4,
            mode: "affine".to_string(),
        }
    }
}

/// A per-module entry of the `quantization` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerQuantization {
    /// `false`: the module stays unquantized.
    Skip,
    /// `true`: quantized with the block's default parameters.
    Default,
    /// An object: quantized with these parameters (missing keys take mlx's defaults for
    /// the mode, as `to_quantized(**params)` does).
    Params(QuantParams),
}

/// The `quantization` block of `config.json`, as mlx-lm writes and reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizationConfig {
    pub default: QuantParams,
    /// Per-module overrides keyed by module path (e.g. `model.layers.0.mlp.down_proj`).
    pub overrides: BTreeMap<String, LayerQuantization>,
}

impl QuantizationConfig {
    /// The parameters to quantize the module at `path` with, or `None` if an override
    /// says it stays unquantized. Like mlx-lm, a module without an override is
    /// quantized only if its `.scales` tensor exists: that check is the loader's.
    pub fn for_module(&self, path: &str) -> Option<QuantParams> {
        match self.overrides.get(path) {
            Some(LayerQuantization::Skip) => None,
            Some(LayerQuantization::Params(p)) => Some(p.clone()),
            Some(LayerQuantization::Default) | None => Some(self.default.clone()),
        }
    }
}

/// A parsed `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// `model_type` exactly as written (`mistral` stays `mistral`).
    pub model_type: String,
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub vocab_size: usize,
    pub rope_theta: f64,
    pub rope_traditional: bool,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v projections.
    pub attention_qkv_bias: bool,
    /// Bias on the attention output projection.
    pub attention_out_bias: bool,
    pub mlp_bias: bool,
    /// RMSNorm on per-head queries and keys (qwen3).
    pub qk_norm: bool,
    pub max_position_embeddings: Option<usize>,
    pub bos_token_id: Option<u32>,
    /// From `generation_config.json` when it has a (truthy) `eos_token_id`, else
    /// from `config.json`.
    pub eos_token_ids: Vec<u32>,
    pub quantization: Option<QuantizationConfig>,
    /// The full JSON object (after the generation_config eos override), for writers.
    pub raw: Map<String, Value>,
}

const CONFIG_FILE: &str = "config.json";
const GENERATION_CONFIG_FILE: &str = "generation_config.json";

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => {
            if n.is_f64() {
                format!("float {n}")
            } else {
                format!("integer {n}")
            }
        }
        Value::String(s) => {
            let mut shown: String = s.chars().take(40).collect();
            if shown.len() < s.len() {
                shown.push('…');
            }
            format!("string {shown:?}")
        }
        Value::Array(a) => format!("array of {} items", a.len()),
        Value::Object(_) => "object".into(),
    }
}

pub(crate) fn json_error(file: &str, e: &serde_json::Error) -> ConfigError {
    ConfigError::Json {
        file: file.to_string(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    }
}

/// Reads typed fields out of one JSON object, naming the file and key in errors.
struct Fields<'a> {
    file: &'a str,
    model_type: &'a str,
    obj: &'a Map<String, Value>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    fn key(&self, k: &str) -> String {
        if self.prefix.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.prefix)
        }
    }

    /// The value of `k`, treating JSON `null` as absent.
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.obj.get(k).filter(|v| !v.is_null())
    }

    fn wrong(&self, k: &str, expected: &'static str, v: &Value) -> ConfigError {
        ConfigError::WrongType {
            file: self.file.to_string(),
            key: self.key(k),
            expected,
            found: type_name(v),
        }
    }

    fn missing(&self, k: &str) -> ConfigError {
        ConfigError::MissingKey {
            file: self.file.to_string(),
            key: self.key(k),
            model_type: self.model_type.to_string(),
        }
    }

    fn opt_u64(&self, k: &str) -> Result<Option<u64>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.wrong(k, "a non-negative integer", v)),
        }
    }

    fn opt_usize(&self, k: &str) -> Result<Option<usize>, ConfigError> {
        self.opt_u64(k)?
            .map(|n| {
                usize::try_from(n).map_err(|_| ConfigError::InvalidValue {
                    file: self.file.to_string(),
                    key: self.key(k),
                    message: format!("{n} is too large"),
                })
            })
            .transpose()
    }

    fn usize(&self, k: &str) -> Result<usize, ConfigError> {
        self.opt_usize(k)?.ok_or_else(|| self.missing(k))
    }

    fn positive(&self, k: &str) -> Result<usize, ConfigError> {
        let n = self.usize(k)?;
        if n == 0 {
            return Err(ConfigError::InvalidValue {
                file: self.file.to_string(),
                key: self.key(k),
                message: "must be greater than 0".into(),
            });
        }
        Ok(n)
    }

    fn opt_f64(&self, k: &str) -> Result<Option<f64>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong(k, "a number", v)),
        }
    }

    fn f64(&self, k: &str) -> Result<f64, ConfigError> {
        self.opt_f64(k)?.ok_or_else(|| self.missing(k))
    }

    fn opt_bool(&self, k: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.wrong(k, "a boolean", v)),
        }
    }

    fn opt_str(&self, k: &str) -> Result<Option<&'a str>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.wrong(k, "a string", v)),
        }
    }

    fn opt_object(&self, k: &str) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_object()
                .map(Some)
                .ok_or_else(|| self.wrong(k, "an object", v)),
        }
    }

    /// A token id or a list of token ids (`eos_token_id` may be either).
    fn opt_token_ids(&self, k: &str) -> Result<Option<Vec<u32>>, ConfigError> {
        const EXPECTED: &str = "a token id or a list of token ids";
        let Some(v) = self.get(k) else {
            return Ok(None);
        };
        let one = |x: &Value| -> Option<u32> { x.as_u64().and_then(|n| u32::try_from(n).ok()) };
        match v {
            Value::Array(items) => items
                .iter()
                .map(|x| one(x).ok_or_else(|| self.wrong(k, EXPECTED, x)))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            _ => one(v)
                .map(|id| Some(vec![id]))
                .ok_or_else(|| self.wrong(k, EXPECTED, v)),
        }
    }
}

fn check_positive(file: &str, key: &str, x: f64) -> Result<f64, ConfigError> {
    if !(x.is_finite() && x > 0.0) {
        return Err(ConfigError::InvalidValue {
            file: file.into(),
            key: key.into(),
            message: format!("must be a finite number greater than 0, found {x}"),
        });
    }
    Ok(x)
}

fn parse_rope_scaling(
    file: &str,
    model_type: &str,
    obj: &Map<String, Value>,
) -> Result<Option<RopeScaling>, ConfigError> {
    let f = Fields {
        file,
        model_type,
        obj,
        prefix: "rope_scaling",
    };
    // mlx-lm: `scaling_config.get("type") or scaling_config.get("rope_type", "default")`.
    let rope_type = match f.opt_str("type")? {
        Some(t) if !t.is_empty() => t,
        _ => f.opt_str("rope_type")?.unwrap_or("default"),
    };
    match rope_type {
        "default" => Ok(None),
        "linear" => {
            let factor = check_positive(file, "rope_scaling.factor", f.f64("factor")?)?;
            Ok(Some(RopeScaling::Linear { factor }))
        }
        "llama3" => {
            let factor = check_positive(file, "rope_scaling.factor", f.f64("factor")?)?;
            let low = f.opt_f64("low_freq_factor")?.unwrap_or(1.0);
            let high = f.opt_f64("high_freq_factor")?.unwrap_or(4.0);
            let orig = f
                .opt_u64("original_max_position_embeddings")?
                .unwrap_or(8192);
            check_positive(file, "rope_scaling.low_freq_factor", low)?;
            if high == low {
                return Err(ConfigError::InvalidValue {
                    file: file.into(),
                    key: "rope_scaling.high_freq_factor".into(),
                    message: "must differ from low_freq_factor".into(),
                });
            }
            if orig == 0 {
                return Err(ConfigError::InvalidValue {
                    file: file.into(),
                    key: "rope_scaling.original_max_position_embeddings".into(),
                    message: "must be greater than 0".into(),
                });
            }
            Ok(Some(RopeScaling::Llama3(Llama3RopeScaling {
                factor,
                low_freq_factor: low,
                high_freq_factor: high,
                original_max_position_embeddings: orig,
            })))
        }
        other => Err(ConfigError::UnsupportedRopeScaling {
            file: file.into(),
            rope_type: other.into(),
        }),
    }
}

fn parse_quant_params(
    f: &Fields<'_>,
    defaults: &QuantParams,
    require: bool,
) -> Result<QuantParams, ConfigError> {
    let get_u32 =
        |k: &str, default: u32| -> Result<u32, ConfigError> {
            match f.opt_u64(k)? {
                Some(n) => u32::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                    ConfigError::InvalidValue {
                        file: f.file.into(),
                        key: f.key(k),
                        message: format!("must be a positive 32-bit integer, found {n}"),
                    }
                }),
                None if require => Err(f.missing(k)),
                None => Ok(default),
            }
        };
    Ok(QuantParams {
        group_size: get_u32("group_size", defaults.group_size)?,
        bits: get_u32("bits", defaults.bits)?,
        mode: f
            .opt_str("mode")?
            .map(str::to_string)
            .unwrap_or_else(|| defaults.mode.clone()),
    })
}

/// Parse a `quantization` block (as mlx-lm writes it).
pub fn parse_quantization(
    file: &str,
    model_type: &str,
    obj: &Map<String, Value>,
) -> Result<QuantizationConfig, ConfigError> {
    let f = Fields {
        file,
        model_type,
        obj,
        prefix: "quantization",
    };
    // mlx-lm reads `quantization["group_size"]` and `["bits"]` (KeyError if absent),
    // `mode` defaults to "affine".
    let default = parse_quant_params(&f, &QuantParams::affine_default(), true)?;
    let mut overrides = BTreeMap::new();
    for (path, v) in obj {
        if matches!(path.as_str(), "group_size" | "bits" | "mode") {
            continue;
        }
        match v {
            Value::Bool(false) => {
                overrides.insert(path.clone(), LayerQuantization::Skip);
            }
            Value::Bool(true) => {
                overrides.insert(path.clone(), LayerQuantization::Default);
            }
            Value::Object(o) => {
                let prefix = format!("quantization.{path}");
                let lf = Fields {
                    file,
                    model_type,
                    obj: o,
                    prefix: &prefix,
                };
                // Like `to_quantized(**params)`: missing keys take the mode's defaults.
                let p = parse_quant_params(&lf, &QuantParams::affine_default(), false)?;
                overrides.insert(path.clone(), LayerQuantization::Params(p));
            }
            // Other entries (strings, numbers) never match a module path in mlx-lm.
            _ => {}
        }
    }
    Ok(QuantizationConfig { default, overrides })
}

impl ModelConfig {
    /// Parse the text of a `config.json` (errors name `config.json`, the key and the line).
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(text).map_err(|e| json_error(CONFIG_FILE, &e))?;
        Self::from_json_value(&v)
    }

    /// Parse an already-decoded `config.json`.
    pub fn from_json_value(v: &Value) -> Result<Self, ConfigError> {
        let file = CONFIG_FILE;
        let obj = v.as_object().ok_or_else(|| ConfigError::NotAnObject {
            file: file.into(),
            found: type_name(v),
        })?;
        Self::from_object(file, obj.clone())
    }

    /// Read `dir/config.json`, and `dir/generation_config.json` when present (its
    /// `eos_token_id` wins, as in mlx-lm's `load_config`).
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let dir = dir.as_ref();
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| json_error(CONFIG_FILE, &e))?;
        let Value::Object(mut obj) = v else {
            return Err(ConfigError::NotAnObject {
                file: CONFIG_FILE.into(),
                found: type_name(&v),
            });
        };
        if let Some(eos) = generation_config_eos_value(dir)? {
            obj.insert("eos_token_id".into(), eos);
        }
        Self::from_object(CONFIG_FILE, obj)
    }

    fn from_object(file: &str, obj: Map<String, Value>) -> Result<Self, ConfigError> {
        let model_type = match obj.get("model_type") {
            None | Some(Value::Null) => {
                return Err(ConfigError::MissingKey {
                    file: file.into(),
                    key: "model_type".into(),
                    model_type: "unknown".into(),
                });
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(ConfigError::WrongType {
                    file: file.into(),
                    key: "model_type".into(),
                    expected: "a string",
                    found: type_name(other),
                });
            }
        };
        let architecture = Architecture::from_model_type(&model_type).ok_or_else(|| {
            ConfigError::UnsupportedModelType {
                file: file.into(),
                model_type: model_type.clone(),
            }
        })?;
        let f = Fields {
            file,
            model_type: &model_type,
            obj: &obj,
            prefix: "",
        };

        let hidden_size = f.positive("hidden_size")?;
        let num_hidden_layers = f.positive("num_hidden_layers")?;
        let intermediate_size = f.positive("intermediate_size")?;
        let num_attention_heads = f.positive("num_attention_heads")?;
        let rms_norm_eps = f.f64("rms_norm_eps")?;
        let vocab_size = f.positive("vocab_size")?;

        let (
            num_key_value_heads,
            head_dim,
            rope_theta,
            rope_traditional,
            tie_word_embeddings,
            max_position_embeddings,
        );
        let (attention_qkv_bias, attention_out_bias, mlp_bias, qk_norm);
        match architecture {
            Architecture::Llama => {
                num_key_value_heads = f
                    .opt_usize("num_key_value_heads")?
                    .unwrap_or(num_attention_heads);
                head_dim = f
                    .opt_usize("head_dim")?
                    .unwrap_or(hidden_size / num_attention_heads);
                rope_theta = f.opt_f64("rope_theta")?.unwrap_or(10000.0);
                rope_traditional = f.opt_bool("rope_traditional")?.unwrap_or(false);
                tie_word_embeddings = f.opt_bool("tie_word_embeddings")?.unwrap_or(true);
                max_position_embeddings = f.opt_usize("max_position_embeddings")?;
                let attention_bias = f.opt_bool("attention_bias")?.unwrap_or(false);
                attention_qkv_bias = attention_bias;
                attention_out_bias = attention_bias;
                mlp_bias = f.opt_bool("mlp_bias")?.unwrap_or(false);
                qk_norm = false;
            }
            Architecture::Qwen2 => {
                num_key_value_heads = f.usize("num_key_value_heads")?;
                // mlx-lm's qwen2 ignores any `head_dim` key.
                head_dim = hidden_size / num_attention_heads;
                rope_theta = f.opt_f64("rope_theta")?.unwrap_or(1_000_000.0);
                rope_traditional = f.opt_bool("rope_traditional")?.unwrap_or(false);
                tie_word_embeddings = f.opt_bool("tie_word_embeddings")?.unwrap_or(true);
                max_position_embeddings =
                    Some(f.opt_usize("max_position_embeddings")?.unwrap_or(32768));
                attention_qkv_bias = true;
                attention_out_bias = false;
                mlp_bias = false;
                qk_norm = false;
            }
            Architecture::Qwen3 => {
                num_key_value_heads = f.usize("num_key_value_heads")?;
                head_dim = f.positive("head_dim")?;
                // `rope_parameters.rope_theta` (newer HF configs) overrides `rope_theta`.
                let from_params = match f.opt_object("rope_parameters")? {
                    Some(p) => {
                        let pf = Fields {
                            file,
                            model_type: &model_type,
                            obj: p,
                            prefix: "rope_parameters",
                        };
                        Some(pf.opt_f64("rope_theta")?.unwrap_or(100_000.0))
                    }
                    None => None,
                };
                rope_theta = match from_params {
                    Some(t) => t,
                    None => f.f64("rope_theta")?,
                };
                // mlx-lm's qwen3 always uses non-traditional RoPE.
                rope_traditional = false;
                tie_word_embeddings = f
                    .opt_bool("tie_word_embeddings")?
                    .ok_or_else(|| f.missing("tie_word_embeddings"))?;
                max_position_embeddings = Some(f.usize("max_position_embeddings")?);
                attention_qkv_bias = false;
                attention_out_bias = false;
                mlp_bias = false;
                qk_norm = true;
            }
        }
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(ConfigError::InvalidValue {
                file: file.into(),
                key: "num_key_value_heads".into(),
                message: format!(
                    "{num_key_value_heads} does not divide num_attention_heads \
                     ({num_attention_heads})"
                ),
            });
        }
        if head_dim == 0 {
            return Err(ConfigError::InvalidValue {
                file: file.into(),
                key: "head_dim".into(),
                message: format!(
                    "is 0 (hidden_size {hidden_size} / num_attention_heads \
                     {num_attention_heads})"
                ),
            });
        }
        check_positive(file, "rope_theta", rope_theta)?;
        check_positive(file, "rms_norm_eps", rms_norm_eps)?;

        let rope_scaling = match f.opt_object("rope_scaling")? {
            Some(rs) => parse_rope_scaling(file, &model_type, rs)?,
            None => None,
        };

        let bos_token_id = match f.opt_token_ids("bos_token_id")? {
            Some(ids) => ids.first().copied(),
            None => None,
        };
        let eos_token_ids = f.opt_token_ids("eos_token_id")?.unwrap_or_default();

        let quantization = match f.opt_object("quantization")? {
            Some(q) => Some(parse_quantization(file, &model_type, q)?),
            None => match f.opt_object("quantization_config")? {
                Some(qc) => {
                    let method = qc.get("quant_method").and_then(Value::as_str);
                    match method {
                        Some(m) => {
                            return Err(ConfigError::UnsupportedQuantization {
                                file: file.into(),
                                method: m.into(),
                            });
                        }
                        // mlx-lm writes `quantization_config` as a copy of `quantization`.
                        None if qc.contains_key("group_size") && qc.contains_key("bits") => {
                            Some(parse_quantization(file, &model_type, qc)?)
                        }
                        None => None,
                    }
                }
                None => None,
            },
        };

        Ok(Self {
            model_type,
            architecture,
            hidden_size,
            num_hidden_layers,
            intermediate_size,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            rms_norm_eps,
            vocab_size,
            rope_theta,
            rope_traditional,
            rope_scaling,
            tie_word_embeddings,
            attention_qkv_bias,
            attention_out_bias,
            mlp_bias,
            qk_norm,
            max_position_embeddings,
            bos_token_id,
            eos_token_ids,
            quantization,
            raw: obj,
        })
    }

    /// RoPE frequencies for `mx.fast.rope(freqs=…)` when the scaling needs them
    /// (llama3); `None` means plain RoPE with `base = rope_theta` and
    /// `scale = 1/factor` for linear scaling (see [`ModelConfig::rope_scale`]).
    pub fn rope_freqs(&self) -> Option<Vec<f32>> {
        match self.rope_scaling {
            Some(RopeScaling::Llama3(s)) => {
                Some(llama3_rope_freqs(self.head_dim, self.rope_theta, &s))
            }
            _ => None,
        }
    }

    /// The `scale` argument of plain RoPE: `1/factor` for linear scaling, else 1.
    pub fn rope_scale(&self) -> f32 {
        match self.rope_scaling {
            Some(RopeScaling::Linear { factor }) => (1.0 / factor) as f32,
            _ => 1.0,
        }
    }
}

/// `eos_token_id` of `dir/generation_config.json` if the file exists, parses and has a
/// truthy value (mlx-lm ignores a file that is not valid JSON, and an `eos_token_id`
/// of `0`, `[]` or `null`).
pub fn generation_config_eos(dir: impl AsRef<Path>) -> Result<Option<Vec<u32>>, ConfigError> {
    let Some(v) = generation_config_eos_value(dir.as_ref())? else {
        return Ok(None);
    };
    let mut obj = Map::new();
    obj.insert("eos_token_id".into(), v);
    let f = Fields {
        file: GENERATION_CONFIG_FILE,
        model_type: "",
        obj: &obj,
        prefix: "",
    };
    f.opt_token_ids("eos_token_id")
}

fn generation_config_eos_value(dir: &Path) -> Result<Option<Value>, ConfigError> {
    let path = dir.join(GENERATION_CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConfigError::Io { path, source }),
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring invalid generation_config.json");
            return Ok(None);
        }
    };
    let eos = v.get("eos_token_id").cloned();
    let truthy = match &eos {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64() != Some(0.0),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::String(s)) => !s.is_empty(),
        Some(_) => true,
    };
    if !truthy {
        return Ok(None);
    }
    // Validate the type now so that the error names generation_config.json.
    let mut obj = Map::new();
    obj.insert("eos_token_id".into(), eos.clone().unwrap_or(Value::Null));
    Fields {
        file: GENERATION_CONFIG_FILE,
        model_type: "",
        obj: &obj,
        prefix: "",
    }
    .opt_token_ids("eos_token_id")?;
    Ok(eos)
}

/// The RoPE frequencies of mlx-lm's `Llama3RoPE`, computed in `f32` step by step as
/// MLX does (so that the values equal mlx-lm's bit for bit up to `powf` rounding).
/// Returns `dims / 2` values to pass as `freqs` to `mx.fast.rope`.
pub fn llama3_rope_freqs(dims: usize, base: f64, scaling: &Llama3RopeScaling) -> Vec<f32> {
    let factor = scaling.factor as f32;
    let low_freq_factor = scaling.low_freq_factor as f32;
    let old_context_len = scaling.original_max_position_embeddings as f64;
    // Python floats, later used as weak scalars against float32 arrays.
    let low_freq_wavelen = (old_context_len / scaling.low_freq_factor) as f32;
    let high_freq_wavelen = (old_context_len / scaling.high_freq_factor) as f32;
    let smooth_denominator = (scaling.high_freq_factor - scaling.low_freq_factor) as f32;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    let base = base as f32;
    let old_context_len = old_context_len as f32;

    (0..dims)
        .step_by(2)
        .map(|i| {
            let exponent = i as f32 / dims as f32;
            let freq = base.powf(exponent);
            let wavelen = two_pi * freq;
            let freq = if wavelen > low_freq_wavelen {
                freq * factor
            } else {
                freq
            };
            let is_medium = wavelen > high_freq_wavelen && wavelen < low_freq_wavelen;
            if is_medium {
                let smooth = (old_context_len / wavelen - low_freq_factor) / smooth_denominator;
                freq / ((1.0 - smooth) / factor + smooth)
            } else {
                freq
            }
        })
        .collect()
}
