//! GGUF (llama.cpp / Ollama) import into an mlx-lm folder.
//!
//! Metadata comes from the pure-Rust reader in [`crate::gguf_meta`] (which also builds
//! `config.json`, `tokenizer.json` and `tokenizer_config.json`); tensors from MLX's GGUF
//! loader, which hands Q4_0/Q4_1/Q8_0 tensors over as affine `weight`/`scales`/`biases`
//! triples with groups of 32. Names are mapped from llama.cpp's to mlx-lm's.
//!
//! llama.cpp's converter permutes the rows of `attn_q` / `attn_k` (per head, the two
//! rotary halves are interleaved) for its RoPE layout. We undo that permutation — rows
//! only, so it applies alike to a float weight, a quantized weight and its scales and
//! biases, and to a bias — and keep `rope_traditional: false`, as in the original
//! Hugging Face checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use mlx::Array;
use serde_json::{Map, Value, json};

use super::model::{ConvertOptions, convert_inner};
use super::writer::{self, Staging, check_output_free, io_err};
use super::{ConvertError, ConvertEvent, ConvertReport, Result};
use crate::config::ModelConfig;
use crate::gguf_meta::{self, GgufConfigOptions, GgufFile, GgufTensorInfo};
use crate::models::Llama;
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;

/// GGUF import takes the same options as [`super::convert_model`]; they are applied
/// after the import (with `quantize`, the GGUF's own quantization is undone first).
pub type GgufImportOptions = ConvertOptions;

/// The group size of every GGUF block format MLX imports (Q4_0, Q4_1, Q8_0).
const GGUF_GROUP_SIZE: i32 = 32;

/// Bytes of a tensor of `n` elements in ggml type `ty`, for the supported types.
/// `Some(None)`: a supported type whose size overflows 64 bits (a corrupt file).
fn ggml_bytes(ty: u32, n: u64) -> Option<Option<u64>> {
    Some(match ty {
        0 => n.checked_mul(4),         // F32
        1 => n.checked_mul(2),         // F16
        2 => (n / 32).checked_mul(18), // Q4_0: f16 scale + 16 bytes
        3 => (n / 32).checked_mul(20), // Q4_1: f16 scale + f16 min + 16 bytes
        8 => (n / 32).checked_mul(34), // Q8_0: f16 scale + 32 bytes
        _ => return None,
    })
}

/// Which of q/k a tensor is, for the RoPE un-permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rope {
    Q,
    K,
}

/// llama.cpp module name → (mlx-lm module path, q/k).
fn map_module(name: &str) -> Option<(String, Option<Rope>)> {
    Some(match name {
        "token_embd" => ("model.embed_tokens".into(), None),
        "output_norm" => ("model.norm".into(), None),
        "output" => ("lm_head".into(), None),
        _ => {
            let rest = name.strip_prefix("blk.")?;
            let (n, part) = rest.split_once('.')?;
            let n: usize = n.parse().ok()?;
            let (sub, rope) = match part {
                "attn_norm" => ("input_layernorm", None),
                "ffn_norm" => ("post_attention_layernorm", None),
                "attn_q" => ("self_attn.q_proj", Some(Rope::Q)),
                "attn_k" => ("self_attn.k_proj", Some(Rope::K)),
                "attn_v" => ("self_attn.v_proj", None),
                "attn_output" => ("self_attn.o_proj", None),
                "ffn_gate" => ("mlp.gate_proj", None),
                "ffn_up" => ("mlp.up_proj", None),
                "ffn_down" => ("mlp.down_proj", None),
                _ => return None,
            };
            (format!("model.layers.{n}.{sub}"), rope)
        }
    })
}

/// Undoes llama.cpp's q/k row permutation: GGUF rows, viewed as
/// `[n_head, head_dim/2, 2, …]`, are HF's `[n_head, 2, head_dim/2, …]` with the middle
/// axes swapped (llama.cpp's `permute` in `convert_hf_to_gguf.py`).
fn unpermute_rows(a: &Array, n_head: i32) -> mlx::Result<Array> {
    let shape = a.shape();
    let rows = shape[0];
    let mut view = vec![n_head, rows / n_head / 2, 2];
    view.extend_from_slice(&shape[1..]);
    a.reshape(&view)?.swapaxes(1, 2)?.reshape(&shape)
}

/// Checks the file against its tensor directory: supported types, and data present.
fn check_tensors(path: &Path, file: &GgufFile) -> Result<()> {
    let len = std::fs::metadata(path).map_err(|e| io_err(path, e))?.len();
    check_tensor_directory(path, file, len)
}

/// [`check_tensors`] for a file of `len` bytes (`path` names it in errors): the
/// pure part, which the GGUF fuzz target runs.
pub fn check_tensor_directory(path: &Path, file: &GgufFile, len: u64) -> Result<()> {
    for t in &file.tensors {
        if t.name == "rope_freqs.weight" {
            return Err(ConvertError::Invalid(format!(
                "{}: GGUF tensor `rope_freqs.weight` (llama3-style RoPE scaling) is not supported yet",
                path.display()
            )));
        }
        // Sizes and offsets come from the file: overflow means corrupt, not a panic.
        let overflow = || {
            ConvertError::Invalid(format!(
                "{}: GGUF tensor `{}` has dimensions {:?} and offset {} past 64 bits (corrupt file)",
                path.display(),
                t.name,
                t.dims,
                t.offset
            ))
        };
        let n = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        let bytes = ggml_bytes(t.ggml_type, n.unwrap_or(u64::MAX)).ok_or_else(|| {
            ConvertError::UnsupportedTensorType {
                name: t.name.clone(),
                type_name: t.type_name(),
            }
        })?;
        let needed = n
            .and(bytes)
            .and_then(|b| file.data_offset.checked_add(t.offset)?.checked_add(b))
            .ok_or_else(overflow)?;
        if needed > len {
            return Err(ConvertError::Truncated {
                path: path.to_path_buf(),
                name: t.name.clone(),
                needed,
                len,
            });
        }
        let module = t.name.rsplit_once('.').map_or(t.name.as_str(), |(m, _)| m);
        if map_module(module).is_none() {
            return Err(ConvertError::UnknownTensor {
                name: t.name.clone(),
            });
        }
    }
    Ok(())
}

fn has_tensor(tensors: &[GgufTensorInfo], name: &str) -> bool {
    tensors.iter().any(|t| t.name == name)
}

/// Imports a GGUF file (llama architecture, gpt2-style BPE vocabulary; tensors F32,
/// F16, Q4_0, Q4_1, Q8_0) into the mlx-lm folder `out`, which must not exist.
pub fn convert_gguf(
    gguf_path: impl AsRef<Path>,
    out: impl AsRef<Path>,
    options: &ConvertOptions,
) -> Result<ConvertReport> {
    convert_gguf_with_progress(gguf_path, out, options, &mut |_| {})
}

/// [`convert_gguf`], reporting what it does to `progress`.
pub fn convert_gguf_with_progress(
    gguf_path: impl AsRef<Path>,
    out: impl AsRef<Path>,
    options: &ConvertOptions,
    progress: &mut dyn FnMut(ConvertEvent),
) -> Result<ConvertReport> {
    let path = gguf_path.as_ref();
    let out = out.as_ref();
    options.validate()?;
    check_output_free(out)?;
    if options.is_plain() {
        let staging = Staging::new(out, "tmp")?;
        let (tensors, total_parameters, total_size, config) =
            import_into(path, staging.path(), progress)?;
        let output = staging.commit()?;
        progress(ConvertEvent::Stage("done".into()));
        return writer::report(output, &tensors, total_size, total_parameters, &config);
    }
    // Import into a scratch folder, then convert from it into `out`.
    let scratch = Staging::new(out, "gguf")?;
    import_into(path, scratch.path(), progress)?;
    convert_inner(
        scratch.path(),
        out,
        options,
        options.quantize.is_some(),
        progress,
    )
}

type Imported = (BTreeMap<String, Array>, u64, u64, Map<String, Value>);

fn import_into(
    path: &Path,
    dir: &Path,
    progress: &mut dyn FnMut(ConvertEvent),
) -> Result<Imported> {
    let gguf_err = |source| ConvertError::Gguf {
        path: path.to_path_buf(),
        source,
    };
    progress(ConvertEvent::Stage(format!(
        "reading GGUF metadata of {}",
        path.display()
    )));
    let file = gguf_meta::read_gguf(path).map_err(gguf_err)?;
    let m = &file.metadata;
    let mut config = match gguf_meta::config_json_from_gguf(
        m,
        GgufConfigOptions::from_tensors(&file.tensors, false),
    )
    .map_err(gguf_err)?
    {
        Value::Object(c) => c,
        _ => unreachable!("config_json_from_gguf builds an object"),
    };
    let tokenizer_json = gguf_meta::tokenizer_json_from_gguf(m).map_err(gguf_err)?;
    let tokenizer_config = gguf_meta::tokenizer_config_from_gguf(m).map_err(gguf_err)?;
    check_tensors(path, &file)?;
    if has_tensor(&file.tensors, "blk.0.attn_q.bias") {
        config.insert("attention_bias".into(), json!(true));
    }
    let heads = config["num_attention_heads"].as_i64().unwrap_or(1) as i32;
    let kv_heads = config["num_key_value_heads"].as_i64().unwrap_or(1) as i32;

    progress(ConvertEvent::Stage(format!(
        "loading {} GGUF tensors",
        file.tensors.len()
    )));
    let gg = mlx::io::load_gguf(path)?;
    let mut tensors = BTreeMap::new();
    for (name, a) in gg.tensors {
        let (module, suffix) = name
            .rsplit_once('.')
            .ok_or_else(|| ConvertError::UnknownTensor { name: name.clone() })?;
        if !matches!(suffix, "weight" | "scales" | "biases" | "bias") {
            return Err(ConvertError::UnknownTensor { name });
        }
        let (target, rope) =
            map_module(module).ok_or_else(|| ConvertError::UnknownTensor { name: name.clone() })?;
        let a = match rope {
            Some(Rope::Q) => unpermute_rows(&a, heads)?,
            Some(Rope::K) => unpermute_rows(&a, kv_heads)?,
            None => a,
        };
        tensors.insert(format!("{target}.{suffix}"), a);
    }

    // Quantized modules: bits from the packed width (groups of 32 in every block type).
    let mut bits: BTreeMap<String, i32> = BTreeMap::new();
    for (name, scales) in &tensors {
        let Some(module) = name.strip_suffix(".scales") else {
            continue;
        };
        let w = tensors
            .get(&format!("{module}.weight"))
            .ok_or_else(|| ConvertError::Invalid(format!("`{module}.scales` without a weight")))?;
        let in_dims = scales.dim(-1) * GGUF_GROUP_SIZE;
        let b = w.dim(-1) * 32 / in_dims.max(1);
        if !matches!(b, 4 | 8) || w.dim(-1) * 32 != b * in_dims {
            return Err(ConvertError::Invalid(format!(
                "`{module}`: packed width {} does not fit {} groups of {GGUF_GROUP_SIZE}",
                w.dim(-1),
                scales.dim(-1)
            )));
        }
        bits.insert(module.to_string(), b);
    }
    if !bits.is_empty() {
        let count = |b: i32| bits.values().filter(|&&x| x == b).count();
        let default_bits = if count(8) > count(4) { 8 } else { 4 };
        let mut q = Map::new();
        q.insert("group_size".into(), json!(GGUF_GROUP_SIZE));
        q.insert("bits".into(), json!(default_bits));
        q.insert("mode".into(), json!("affine"));
        for (module, &b) in &bits {
            if b != default_bits {
                q.insert(
                    module.clone(),
                    json!({"group_size": GGUF_GROUP_SIZE, "bits": b, "mode": "affine"}),
                );
            }
        }
        config.insert("quantization".into(), Value::Object(q.clone()));
        config.insert("quantization_config".into(), Value::Object(q));
    }

    // Validate before writing: the model must build from exactly these tensors.
    progress(ConvertEvent::Stage(
        "checking tensors against config.json".into(),
    ));
    let parsed = ModelConfig::from_json_value(&Value::Object(config.clone()))?;
    Llama::from_weights(parsed, Weights::from_map(tensors.clone()))?;

    let mut generation = Map::new();
    for key in ["bos_token_id", "eos_token_id"] {
        if let Some(v) = config.get(key) {
            generation.insert(key.into(), v.clone());
        }
    }
    writer::write_config(dir, &config)?;
    writer::write_file(&dir.join("tokenizer.json"), &tokenizer_json)?;
    writer::write_file(
        &dir.join("tokenizer_config.json"),
        &writer::to_json_indent4(&tokenizer_config)?,
    )?;
    if !generation.is_empty() {
        writer::write_file(
            &dir.join("generation_config.json"),
            &writer::to_json_indent4(&generation)?,
        )?;
    }
    Tokenizer::from_dir(dir).map_err(|e| {
        ConvertError::Invalid(format!(
            "the tokenizer built from the GGUF does not load: {e}"
        ))
    })?;

    let bits_of = |m: &str| bits.get(m).map(|&b| b as u32);
    let total_parameters = writer::total_parameters(&tensors, &bits_of);
    let (total_size, _) = writer::write_weights(dir, &tensors, total_parameters, progress)?;
    Ok((tensors, total_parameters, total_size, config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF file (v3) with no metadata and one tensor directory entry.
    fn gguf_with_tensor(dims: &[u64], ggml_type: u32, offset: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&0u64.to_le_bytes()); // metadata
        let name = b"blk.0.attn_q.weight";
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&ggml_type.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b
    }

    fn check(bytes: &[u8]) -> Result<()> {
        let file = crate::gguf_meta::parse_gguf(bytes, Some(bytes.len() as u64)).unwrap();
        check_tensor_directory(Path::new("x.gguf"), &file, bytes.len() as u64)
    }

    /// Dimensions, sizes and offsets of a corrupt directory overflowed u64 (a
    /// panic with overflow checks, a wrong size without): now a clean error.
    #[test]
    fn overflowing_tensor_directory_is_an_error() {
        for (dims, ty, offset) in [
            (&[1u64 << 33, 1 << 33][..], 0, 0), // element count
            (&[1u64 << 62][..], 0, 0),          // F32 bytes
            (&[u64::MAX, 2][..], 8, 0),         // Q8_0
            (&[4][..], 1, u64::MAX - 2),        // offset + size
        ] {
            let err = check(&gguf_with_tensor(dims, ty, offset)).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("past 64 bits"), "{dims:?} {ty}: {msg}");
        }
        // unsupported types still say so, whatever their size
        let err = check(&gguf_with_tensor(&[u64::MAX, u64::MAX], 14, 0)).unwrap_err();
        assert!(
            matches!(err, ConvertError::UnsupportedTensorType { .. }),
            "{err}"
        );
        // a sane entry past the end is still `Truncated`
        let err = check(&gguf_with_tensor(&[8, 8], 0, 0)).unwrap_err();
        assert!(matches!(err, ConvertError::Truncated { .. }), "{err}");
    }
}
