//! GGUF metadata: a small pure-Rust reader of a GGUF file's header, key/value section and
//! tensor directory (no tensor data), and the builders that turn llama.cpp metadata into
//! the mlx-lm / Hugging Face files: `config.json`, `tokenizer.json` and
//! `tokenizer_config.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// One metadata value. Integer types of every width become `Int`, `f32`/`f64` become
/// `Float` (an `f32` is widened through its shortest decimal form, so `1e-5f32` reads
/// as `1e-5`), arrays of booleans become `IntList` of 0/1.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    Str(String),
    StrList(Vec<String>),
    Int(i64),
    Float(f64),
    Bool(bool),
    IntList(Vec<i64>),
    FloatList(Vec<f64>),
}

impl GgufValue {
    /// A short description of the kind of value, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Str(_) => "string",
            Self::StrList(_) => "array of strings",
            Self::Int(_) => "integer",
            Self::Float(_) => "float",
            Self::Bool(_) => "boolean",
            Self::IntList(_) => "array of integers",
            Self::FloatList(_) => "array of floats",
        }
    }
}

/// GGUF metadata keyed by name (`general.architecture`, `llama.block_count`, …).
pub type GgufMetadata = BTreeMap<String, GgufValue>;

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// Dimensions as GGUF stores them (fastest-varying first, i.e. reversed from
    /// the row-major shape).
    pub dims: Vec<u64>,
    /// The ggml type id (0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, …).
    pub ggml_type: u32,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
}

impl GgufTensorInfo {
    /// The name of the ggml type, or `"type N"` for an unknown id.
    pub fn type_name(&self) -> String {
        ggml_type_name(self.ggml_type)
            .map(str::to_string)
            .unwrap_or_else(|| format!("type {}", self.ggml_type))
    }
}

/// The name of a ggml tensor type id.
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        30 => "BF16",
        _ => return None,
    })
}

/// A GGUF file's header, metadata and tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: GgufMetadata,
    pub tensors: Vec<GgufTensorInfo>,
    /// Absolute file offset where tensor data starts (aligned to `general.alignment`).
    pub data_offset: u64,
}

/// Everything that can go wrong reading GGUF metadata or building files from it.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic is {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    #[error("GGUF file is truncated or corrupt: {what} at byte {offset}")]
    Truncated { what: String, offset: u64 },
    #[error("GGUF {what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("GGUF key `{key}` has unknown value type {type_id}")]
    UnknownValueType { key: String, type_id: u32 },
    #[error("GGUF key `{key}`: nested arrays are not supported")]
    NestedArray { key: String },
    #[error("GGUF {what} claims {len} bytes/items, more than the file holds")]
    TooLarge { what: String, len: u64 },
    #[error("GGUF metadata has no `{key}`")]
    MissingKey { key: String },
    #[error("GGUF metadata `{key}`: expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("GGUF metadata `{key}`: {message}")]
    InvalidValue { key: String, message: String },
    #[error("unsupported GGUF architecture `{0}` (supported: llama)")]
    UnsupportedArchitecture(String),
    #[error("unsupported GGUF tokenizer model `{0}` (supported: gpt2)")]
    UnsupportedTokenizerModel(String),
    #[error(
        "unsupported GGUF pre-tokenizer `{0}` (supported: default, gpt2, smollm, starcoder, \
         refact, codeshell, llama-bpe, llama3, qwen2)"
    )]
    UnsupportedPreTokenizer(String),
    #[error("GGUF merge #{index} {merge:?} is not two space-separated tokens")]
    InvalidMerge { index: usize, merge: String },
}

// ---------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------

const GGUF_MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

struct Cursor<R> {
    inner: R,
    pos: u64,
    /// Total length of the input, when known: bounds every length before allocating.
    len: Option<u64>,
}

impl<R: Read> Cursor<R> {
    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos,
            })?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    /// Check that `count` items of at least `min_size` bytes can still be in the input.
    fn check_len(&self, what: &str, count: u64, min_size: u64) -> Result<(), GgufError> {
        let need = count.saturating_mul(min_size.max(1));
        let limit = match self.len {
            Some(len) => len.saturating_sub(self.pos),
            None => 1 << 32,
        };
        if need > limit {
            return Err(GgufError::TooLarge {
                what: what.to_string(),
                len: count,
            });
        }
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        self.check_len(what, n, 1)?;
        let start = self.pos;
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| GgufError::Truncated {
                what: what.to_string(),
                offset: start,
            })?;
        self.pos += n;
        String::from_utf8(buf).map_err(|_| GgufError::InvalidUtf8 {
            what: what.to_string(),
            offset: start,
        })
    }
}

/// Widen an `f32` through its shortest decimal representation.
fn widen_f32(x: f32) -> f64 {
    if x.is_finite() {
        x.to_string().parse().unwrap_or(x as f64)
    } else {
        x as f64
    }
}

fn scalar_size(type_id: u32) -> Option<u64> {
    Some(match type_id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        8 => 8, // a string: at least its 8-byte length
        _ => return None,
    })
}

enum Scalar {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

fn read_scalar<R: Read>(c: &mut Cursor<R>, key: &str, type_id: u32) -> Result<Scalar, GgufError> {
    let what = format!("value of `{key}`");
    Ok(match type_id {
        0 => Scalar::Int(c.bytes::<1>(&what)?[0] as i64),
        1 => Scalar::Int(c.bytes::<1>(&what)?[0] as i8 as i64),
        2 => Scalar::Int(u16::from_le_bytes(c.bytes(&what)?) as i64),
        3 => Scalar::Int(i16::from_le_bytes(c.bytes(&what)?) as i64),
        4 => Scalar::Int(c.u32(&what)? as i64),
        5 => Scalar::Int(i32::from_le_bytes(c.bytes(&what)?) as i64),
        6 => Scalar::Float(widen_f32(f32::from_le_bytes(c.bytes(&what)?))),
        7 => Scalar::Bool(c.bytes::<1>(&what)?[0] != 0),
        8 => Scalar::Str(c.string(&what)?),
        10 => {
            let v = c.u64(&what)?;
            Scalar::Int(i64::try_from(v).map_err(|_| GgufError::InvalidValue {
                key: key.to_string(),
                message: format!("{v} does not fit in a signed 64-bit integer"),
            })?)
        }
        11 => Scalar::Int(i64::from_le_bytes(c.bytes(&what)?)),
        12 => Scalar::Float(f64::from_le_bytes(c.bytes(&what)?)),
        _ => {
            return Err(GgufError::UnknownValueType {
                key: key.to_string(),
                type_id,
            });
        }
    })
}

fn read_value<R: Read>(c: &mut Cursor<R>, key: &str) -> Result<GgufValue, GgufError> {
    let type_id = c.u32(&format!("value type of `{key}`"))?;
    if type_id != 9 {
        return Ok(match read_scalar(c, key, type_id)? {
            Scalar::Int(i) => GgufValue::Int(i),
            Scalar::Float(f) => GgufValue::Float(f),
            Scalar::Bool(b) => GgufValue::Bool(b),
            Scalar::Str(s) => GgufValue::Str(s),
        });
    }
    let item_type = c.u32(&format!("array item type of `{key}`"))?;
    let count = c.u64(&format!("array length of `{key}`"))?;
    if item_type == 9 {
        return Err(GgufError::NestedArray {
            key: key.to_string(),
        });
    }
    let size = scalar_size(item_type).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_string(),
        type_id: item_type,
    })?;
    c.check_len(&format!("array `{key}`"), count, size)?;
    let n = count as usize;
    Ok(match item_type {
        8 => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push(c.string(&format!("string in array `{key}`"))?);
            }
            GgufValue::StrList(v)
        }
        6 | 12 => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                match read_scalar(c, key, item_type)? {
                    Scalar::Float(f) => v.push(f),
                    _ => unreachable!("float item types read floats"),
                }
            }
            GgufValue::FloatList(v)
        }
        _ => {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                match read_scalar(c, key, item_type)? {
                    Scalar::Int(i) => v.push(i),
                    Scalar::Bool(b) => v.push(b as i64),
                    _ => unreachable!("integer item types read integers"),
                }
            }
            GgufValue::IntList(v)
        }
    })
}

/// Parse GGUF header, metadata and tensor directory from a reader. `total_len` (the
/// file size, when known) bounds every length field so a corrupt file can't make us
/// allocate more than it holds.
pub fn parse_gguf<R: Read>(reader: R, total_len: Option<u64>) -> Result<GgufFile, GgufError> {
    let mut c = Cursor {
        inner: reader,
        pos: 0,
        len: total_len,
    };
    let magic: [u8; 4] = c.bytes("magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let tensor_count = c.u64("tensor count")?;
    let kv_count = c.u64("metadata count")?;
    // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes.
    c.check_len("metadata section", kv_count, 13)?;
    let mut metadata = GgufMetadata::new();
    for i in 0..kv_count {
        let key = c.string(&format!("key #{i}"))?;
        let value = read_value(&mut c, &key)?;
        metadata.insert(key, value);
    }
    // Each tensor info takes at least 8 (name length) + 4 + 4 + 8 bytes.
    c.check_len("tensor directory", tensor_count, 24)?;
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    for i in 0..tensor_count {
        let name = c.string(&format!("name of tensor #{i}"))?;
        let n_dims = c.u32(&format!("dimension count of tensor `{name}`"))?;
        if n_dims > 8 {
            return Err(GgufError::InvalidValue {
                key: name,
                message: format!("{n_dims} dimensions (at most 8 are allowed)"),
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64(&format!("dimensions of tensor `{name}`"))?);
        }
        let ggml_type = c.u32(&format!("type of tensor `{name}`"))?;
        let offset = c.u64(&format!("offset of tensor `{name}`"))?;
        tensors.push(GgufTensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    let alignment = match metadata.get("general.alignment") {
        Some(GgufValue::Int(a)) if *a > 0 && (*a as u64).is_power_of_two() => *a as u64,
        Some(other) => {
            return Err(GgufError::InvalidValue {
                key: "general.alignment".into(),
                message: format!("must be a positive power of two, found {other:?}"),
            });
        }
        None => DEFAULT_ALIGNMENT,
    };
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    Ok(GgufFile {
        version,
        metadata,
        tensors,
        data_offset,
    })
}

/// Read the header, metadata and tensor directory of the GGUF file at `path`.
pub fn read_gguf(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
    let path = path.as_ref();
    let io = |source| GgufError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    parse_gguf(BufReader::with_capacity(1 << 20, file), Some(len))
}

// ---------------------------------------------------------------------------------------
// Typed access
// ---------------------------------------------------------------------------------------

fn get<'a>(m: &'a GgufMetadata, key: &str) -> Result<&'a GgufValue, GgufError> {
    m.get(key).ok_or_else(|| GgufError::MissingKey {
        key: key.to_string(),
    })
}

fn wrong(key: &str, expected: &'static str, v: &GgufValue) -> GgufError {
    GgufError::WrongType {
        key: key.to_string(),
        expected,
        found: v.kind(),
    }
}

fn get_str<'a>(m: &'a GgufMetadata, key: &str) -> Result<&'a str, GgufError> {
    match get(m, key)? {
        GgufValue::Str(s) => Ok(s),
        v => Err(wrong(key, "a string", v)),
    }
}

fn opt_str<'a>(m: &'a GgufMetadata, key: &str) -> Result<Option<&'a str>, GgufError> {
    match m.get(key) {
        None => Ok(None),
        Some(GgufValue::Str(s)) => Ok(Some(s)),
        Some(v) => Err(wrong(key, "a string", v)),
    }
}

fn opt_uint(m: &GgufMetadata, key: &str) -> Result<Option<u64>, GgufError> {
    match m.get(key) {
        None => Ok(None),
        Some(GgufValue::Int(i)) => {
            u64::try_from(*i)
                .map(Some)
                .map_err(|_| GgufError::InvalidValue {
                    key: key.to_string(),
                    message: format!("must not be negative, found {i}"),
                })
        }
        Some(v) => Err(wrong(key, "an integer", v)),
    }
}

fn get_positive(m: &GgufMetadata, key: &str) -> Result<u64, GgufError> {
    match opt_uint(m, key)? {
        Some(0) => Err(GgufError::InvalidValue {
            key: key.to_string(),
            message: "must be greater than 0".into(),
        }),
        Some(n) => Ok(n),
        None => Err(GgufError::MissingKey {
            key: key.to_string(),
        }),
    }
}

fn opt_float(m: &GgufMetadata, key: &str) -> Result<Option<f64>, GgufError> {
    match m.get(key) {
        None => Ok(None),
        Some(GgufValue::Float(f)) => Ok(Some(*f)),
        Some(GgufValue::Int(i)) => Ok(Some(*i as f64)),
        Some(v) => Err(wrong(key, "a number", v)),
    }
}

fn opt_bool(m: &GgufMetadata, key: &str) -> Result<Option<bool>, GgufError> {
    match m.get(key) {
        None => Ok(None),
        Some(GgufValue::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(wrong(key, "a boolean", v)),
    }
}

fn get_str_list<'a>(m: &'a GgufMetadata, key: &str) -> Result<&'a [String], GgufError> {
    match get(m, key)? {
        GgufValue::StrList(v) => Ok(v),
        v => Err(wrong(key, "an array of strings", v)),
    }
}

// ---------------------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------------------

/// Choices the tensor converter makes that the metadata can't tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgufConfigOptions {
    /// True when the GGUF has no `output.weight` (the head is the embedding).
    pub tie_word_embeddings: bool,
    /// True to keep llama.cpp's permuted q/k layout and rotate adjacent pairs;
    /// false when the converter un-permutes q/k back to the Hugging Face layout.
    pub rope_traditional: bool,
}

impl GgufConfigOptions {
    /// Options inferred from the tensor directory: tied when there is no `output.weight`;
    /// `rope_traditional` as given.
    pub fn from_tensors(tensors: &[GgufTensorInfo], rope_traditional: bool) -> Self {
        Self {
            tie_word_embeddings: !tensors.iter().any(|t| t.name == "output.weight"),
            rope_traditional,
        }
    }
}

/// Build an mlx-lm `config.json` object from GGUF metadata (`general.architecture`
/// must be `llama`).
pub fn config_json_from_gguf(
    m: &GgufMetadata,
    options: GgufConfigOptions,
) -> Result<Value, GgufError> {
    let arch = get_str(m, "general.architecture")?;
    if arch != "llama" {
        return Err(GgufError::UnsupportedArchitecture(arch.to_string()));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let hidden = get_positive(m, &k("embedding_length"))?;
    let layers = get_positive(m, &k("block_count"))?;
    let ffn = get_positive(m, &k("feed_forward_length"))?;
    let heads = get_positive(m, &k("attention.head_count"))?;
    let kv_heads = opt_uint(m, &k("attention.head_count_kv"))?.unwrap_or(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(GgufError::InvalidValue {
            key: k("attention.head_count_kv"),
            message: format!("{kv_heads} does not divide the head count {heads}"),
        });
    }
    let eps = opt_float(m, &k("attention.layer_norm_rms_epsilon"))?.ok_or_else(|| {
        GgufError::MissingKey {
            key: k("attention.layer_norm_rms_epsilon"),
        }
    })?;
    let rope_theta = opt_float(m, &k("rope.freq_base"))?.unwrap_or(10000.0);
    let head_dim = match opt_uint(m, &k("attention.key_length"))? {
        Some(n) => n,
        None => match opt_uint(m, &k("rope.dimension_count"))? {
            Some(n) => n,
            None => hidden / heads,
        },
    };
    let vocab_size = match m.get("tokenizer.ggml.tokens") {
        Some(GgufValue::StrList(t)) => t.len() as u64,
        Some(v) => return Err(wrong("tokenizer.ggml.tokens", "an array of strings", v)),
        None => get_positive(m, &k("vocab_size"))?,
    };

    let mut c = Map::new();
    c.insert("architectures".into(), json!(["LlamaForCausalLM"]));
    c.insert("model_type".into(), json!("llama"));
    c.insert("hidden_size".into(), json!(hidden));
    c.insert("num_hidden_layers".into(), json!(layers));
    c.insert("intermediate_size".into(), json!(ffn));
    c.insert("num_attention_heads".into(), json!(heads));
    c.insert("num_key_value_heads".into(), json!(kv_heads));
    c.insert("head_dim".into(), json!(head_dim));
    c.insert("rms_norm_eps".into(), json!(eps));
    c.insert("rope_theta".into(), json!(rope_theta));
    c.insert("rope_traditional".into(), json!(options.rope_traditional));
    c.insert("vocab_size".into(), json!(vocab_size));
    c.insert(
        "tie_word_embeddings".into(),
        json!(options.tie_word_embeddings),
    );
    c.insert("attention_bias".into(), json!(false));
    c.insert("mlp_bias".into(), json!(false));
    c.insert("hidden_act".into(), json!("silu"));
    if let Some(ctx) = opt_uint(m, &k("context_length"))? {
        c.insert("max_position_embeddings".into(), json!(ctx));
    }
    if let Some(t) = opt_str(m, &k("rope.scaling.type"))? {
        match t {
            "none" => {}
            "linear" => {
                let factor = opt_float(m, &k("rope.scaling.factor"))?.ok_or_else(|| {
                    GgufError::MissingKey {
                        key: k("rope.scaling.factor"),
                    }
                })?;
                c.insert(
                    "rope_scaling".into(),
                    json!({"type": "linear", "factor": factor}),
                );
            }
            other => {
                return Err(GgufError::InvalidValue {
                    key: k("rope.scaling.type"),
                    message: format!("unsupported RoPE scaling `{other}` (supported: linear)"),
                });
            }
        }
    }
    if let Some(id) = opt_uint(m, "tokenizer.ggml.bos_token_id")? {
        c.insert("bos_token_id".into(), json!(id));
    }
    if let Some(id) = opt_uint(m, "tokenizer.ggml.eos_token_id")? {
        c.insert("eos_token_id".into(), json!(id));
    }
    Ok(Value::Object(c))
}

// ---------------------------------------------------------------------------------------
// tokenizer.json / tokenizer_config.json
// ---------------------------------------------------------------------------------------

/// llama.cpp token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
    pub const UNUSED: i64 = 5;
    pub const BYTE: i64 = 6;
}

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool, trim_offsets: bool) -> Value {
    json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": trim_offsets,
        "use_regex": use_regex,
    })
}

fn split_isolated(pattern: &str) -> Value {
    json!({
        "type": "Split",
        "pattern": {"Regex": pattern},
        "behavior": "Isolated",
        "invert": false,
    })
}

/// (normalizer, pre_tokenizer, ignore_merges) for a `tokenizer.ggml.pre` value, the way
/// the matching Hugging Face `tokenizer.json` files define them.
fn pre_tokenizer_for(pre: &str) -> Result<(Value, Value, bool), GgufError> {
    Ok(match pre {
        // GPT-2 style: the byte-level pre-tokenizer's own regex.
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" => {
            (Value::Null, byte_level(true, true), false)
        }
        // StarCoder style (llama.cpp: `\p{N}` then the GPT-2 regex): digits one by one.
        "smollm" | "starcoder" | "refact" | "codeshell" => (
            Value::Null,
            json!({
                "type": "Sequence",
                "pretokenizers": [
                    {"type": "Digits", "individual_digits": true},
                    byte_level(true, true),
                ],
            }),
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => (
            Value::Null,
            json!({
                "type": "Sequence",
                "pretokenizers": [split_isolated(LLAMA3_REGEX), byte_level(false, true)],
            }),
            true,
        ),
        "qwen2" => (
            json!({"type": "NFC"}),
            json!({
                "type": "Sequence",
                "pretokenizers": [split_isolated(QWEN2_REGEX), byte_level(false, false)],
            }),
            false,
        ),
        other => return Err(GgufError::UnsupportedPreTokenizer(other.to_string())),
    })
}

fn token_at<'a>(tokens: &'a [String], key: &str, id: u64) -> Result<&'a str, GgufError> {
    tokens
        .get(id as usize)
        .map(String::as_str)
        .ok_or_else(|| GgufError::InvalidValue {
            key: key.to_string(),
            message: format!(
                "token id {id} is out of range (vocabulary has {})",
                tokens.len()
            ),
        })
}

/// The `single` and `pair` templates of a TemplateProcessing that wraps each sequence
/// in `bos … eos` (either optional).
pub(crate) fn template_pieces(bos: Option<&str>, eos: Option<&str>) -> (Vec<Value>, Vec<Value>) {
    let seq = |id: &str, type_id: u32| {
        let mut out = Vec::new();
        if let Some(b) = bos {
            out.push(json!({"SpecialToken": {"id": b, "type_id": type_id}}));
        }
        out.push(json!({"Sequence": {"id": id, "type_id": type_id}}));
        if let Some(e) = eos {
            out.push(json!({"SpecialToken": {"id": e, "type_id": type_id}}));
        }
        out
    };
    let single = seq("A", 0);
    let mut pair = seq("A", 0);
    pair.extend(seq("B", 1));
    (single, pair)
}

/// Build a Hugging Face `tokenizer.json` (as a JSON string) from GGUF tokenizer
/// metadata. Supports `tokenizer.ggml.model = gpt2` (byte-level BPE).
pub fn tokenizer_json_from_gguf(m: &GgufMetadata) -> Result<String, GgufError> {
    let model = get_str(m, "tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(GgufError::UnsupportedTokenizerModel(model.to_string()));
    }
    let pre = opt_str(m, "tokenizer.ggml.pre")?.unwrap_or("default");
    let (normalizer, pre_tokenizer, ignore_merges) = pre_tokenizer_for(pre)?;

    let tokens = get_str_list(m, "tokenizer.ggml.tokens")?;
    let types: Vec<i64> = match m.get("tokenizer.ggml.token_type") {
        None => vec![token_type::NORMAL; tokens.len()],
        Some(GgufValue::IntList(t)) if t.len() == tokens.len() => t.clone(),
        Some(GgufValue::IntList(t)) => {
            return Err(GgufError::InvalidValue {
                key: "tokenizer.ggml.token_type".into(),
                message: format!("has {} entries for {} tokens", t.len(), tokens.len()),
            });
        }
        Some(v) => {
            return Err(wrong(
                "tokenizer.ggml.token_type",
                "an array of integers",
                v,
            ));
        }
    };
    let merges_in = match m.get("tokenizer.ggml.merges") {
        None => &[][..],
        Some(GgufValue::StrList(v)) => v.as_slice(),
        Some(v) => return Err(wrong("tokenizer.ggml.merges", "an array of strings", v)),
    };

    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (id, (tok, ty)) in tokens.iter().zip(&types).enumerate() {
        // Duplicate strings (seen in some GGUFs) keep their first id.
        if !vocab.contains_key(tok) {
            vocab.insert(tok.clone(), json!(id));
        }
        let special = match *ty {
            token_type::CONTROL | token_type::UNKNOWN => true,
            token_type::USER_DEFINED => false,
            _ => continue,
        };
        added.push(json!({
            "id": id,
            "content": tok,
            "single_word": false,
            "lstrip": false,
            "rstrip": false,
            "normalized": false,
            "special": special,
        }));
    }

    let mut merges = Vec::with_capacity(merges_in.len());
    for (index, merge) in merges_in.iter().enumerate() {
        let mut parts = merge.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push(json!([a, b]));
            }
            _ => {
                return Err(GgufError::InvalidMerge {
                    index,
                    merge: merge.clone(),
                });
            }
        }
    }

    let add_bos = opt_bool(m, "tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    let add_eos = opt_bool(m, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let byte_level_post = json!({
        "type": "ByteLevel",
        "add_prefix_space": true,
        "trim_offsets": false,
        "use_regex": true,
    });
    let post_processor = if add_bos || add_eos {
        let mut special_tokens = Map::new();
        let mut special = |key: &str| -> Result<Option<String>, GgufError> {
            let Some(id) = opt_uint(m, key)? else {
                return Ok(None);
            };
            let tok = token_at(tokens, key, id)?.to_string();
            special_tokens.insert(
                tok.clone(),
                json!({"id": tok, "ids": [id], "tokens": [tok]}),
            );
            Ok(Some(tok))
        };
        let bos = if add_bos {
            special("tokenizer.ggml.bos_token_id")?
        } else {
            None
        };
        let eos = if add_eos {
            special("tokenizer.ggml.eos_token_id")?
        } else {
            None
        };
        let (single, pair) = template_pieces(bos.as_deref(), eos.as_deref());
        json!({
            "type": "Sequence",
            "processors": [
                byte_level_post,
                {
                    "type": "TemplateProcessing",
                    "single": single,
                    "pair": pair,
                    "special_tokens": special_tokens,
                },
            ],
        })
    } else {
        byte_level_post
    };

    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": true,
            "trim_offsets": true,
            "use_regex": true,
        },
        "model": {
            "type": "BPE",
            "dropout": null,
            "unk_token": null,
            "continuing_subword_prefix": null,
            "end_of_word_suffix": null,
            "fuse_unk": false,
            "byte_fallback": false,
            "ignore_merges": ignore_merges,
            "vocab": vocab,
            "merges": merges,
        },
    });
    Ok(tokenizer.to_string())
}

/// Build a Hugging Face `tokenizer_config.json` object from GGUF metadata: special
/// tokens from `tokenizer.ggml.{bos,eos,padding,unknown}_token_id`, `add_bos_token` /
/// `add_eos_token`, and the chat template(s) from `tokenizer.chat_template`
/// (+ named `tokenizer.chat_template.NAME` ones, written as HF's list form).
pub fn tokenizer_config_from_gguf(m: &GgufMetadata) -> Result<Value, GgufError> {
    let tokens = get_str_list(m, "tokenizer.ggml.tokens")?;
    let mut c = Map::new();
    let add_bos = opt_bool(m, "tokenizer.ggml.add_bos_token")?.unwrap_or(false);
    let add_eos = opt_bool(m, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    c.insert("add_bos_token".into(), json!(add_bos));
    c.insert("add_eos_token".into(), json!(add_eos));
    for (key, name) in [
        ("tokenizer.ggml.bos_token_id", "bos_token"),
        ("tokenizer.ggml.eos_token_id", "eos_token"),
        ("tokenizer.ggml.padding_token_id", "pad_token"),
        ("tokenizer.ggml.unknown_token_id", "unk_token"),
    ] {
        if let Some(id) = opt_uint(m, key)? {
            c.insert(name.into(), json!(token_at(tokens, key, id)?));
        }
    }

    let default_template = opt_str(m, "tokenizer.chat_template")?;
    let mut named: BTreeMap<&str, &str> = BTreeMap::new();
    let prefix = "tokenizer.chat_template.";
    for (key, v) in m.range(prefix.to_string()..) {
        let Some(name) = key.strip_prefix(prefix) else {
            break;
        };
        match v {
            GgufValue::Str(t) => {
                named.insert(name, t);
            }
            // `tokenizer.chat_templates` lists the names; skip anything not a string.
            _ => continue,
        }
    }
    if named.is_empty() {
        if let Some(t) = default_template {
            c.insert("chat_template".into(), json!(t));
        }
    } else {
        let mut list = Vec::new();
        if let Some(t) = default_template {
            list.push(json!({"name": "default", "template": t}));
        }
        for (name, t) in named {
            list.push(json!({"name": name, "template": t}));
        }
        c.insert("chat_template".into(), Value::Array(list));
    }
    c.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(arch) = opt_str(m, "general.architecture")?
        && let Some(ctx) = opt_uint(m, &format!("{arch}.context_length"))?
    {
        c.insert("model_max_length".into(), json!(ctx));
    }
    c.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    Ok(Value::Object(c))
}

/// The ids of the special (control/unknown) tokens of a GGUF vocabulary.
pub fn special_token_ids(m: &GgufMetadata) -> BTreeSet<u32> {
    match m.get("tokenizer.ggml.token_type") {
        Some(GgufValue::IntList(t)) => t
            .iter()
            .enumerate()
            .filter(|(_, ty)| matches!(**ty, token_type::CONTROL | token_type::UNKNOWN))
            .map(|(i, _)| i as u32)
            .collect(),
        _ => BTreeSet::new(),
    }
}
