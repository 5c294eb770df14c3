//! `engine::convert::convert_model` (like `mlx_lm.convert`): the SmolLM2 GGUF imported,
//! dequantized, then quantized by us to 8 and 4 bits; each folder must load in mlx-lm
//! with greedy tokens identical to ours, and our quantized weights must equal what
//! `mlx_lm.convert -q` writes from the same float folder.
//!
//! Tests that need the GGUF or Python mlx-lm skip (with the reason printed) when either
//! is absent, unless `CI` is set, where they fail.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use engine::convert::{ConvertError, ConvertOptions, convert_gguf, convert_model};
use engine::models::load_model;
use mlx::Dtype;
use mlx::quantization::QuantSpec;
use serde_json::{Value, json};

mod convert_common;
use convert_common::*;

/// The imported-then-dequantized SmolLM2 (float16), shared by the tests.
struct Float {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

fn float_model() -> Option<&'static Float> {
    static CELL: OnceLock<Option<Float>> = OnceLock::new();
    CELL.get_or_init(|| {
        let gguf = smollm2_gguf()?;
        let tmp = tempfile::tempdir().unwrap();
        let imported = tmp.path().join("imported");
        convert_gguf(&gguf, &imported, &ConvertOptions::default()).expect("import");
        let dir = tmp.path().join("float");
        let t0 = Instant::now();
        let r = convert_model(
            &imported,
            &dir,
            &ConvertOptions {
                dequantize: true,
                ..Default::default()
            },
        )
        .expect("dequantize");
        eprintln!(
            "dequantized in {:.2}s: {} bytes of weights",
            t0.elapsed().as_secs_f64(),
            r.total_size
        );
        let config = read_json(&dir.join("config.json"));
        assert!(config.get("quantization").is_none());
        assert!(config.get("quantization_config").is_none());
        Some(Float { _tmp: tmp, dir })
    })
    .as_ref()
}

/// Quantizes the float model with `spec`, checks layout and parity with mlx-lm.
fn quantized_round_trip(spec: QuantSpec) {
    let Some(float) = float_model() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp
        .path()
        .join(format!("q{}-g{}", spec.bits, spec.group_size));
    let t0 = Instant::now();
    let report = convert_model(
        &float.dir,
        &out,
        &ConvertOptions {
            quantize: Some(spec),
            ..Default::default()
        },
    )
    .expect("quantize");
    eprintln!(
        "{}-bit (group {}) in {:.2}s: {} bytes of weights, {} parameters",
        spec.bits,
        spec.group_size,
        t0.elapsed().as_secs_f64(),
        report.total_size,
        report.total_parameters
    );
    let q = json!({"group_size": spec.group_size, "bits": spec.bits, "mode": "affine"});
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["quantization"], q);
    assert_eq!(config["quantization_config"], q);
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(out.join(f).is_file(), "{f} not copied");
    }
    let st = mlx::io::load_safetensors(out.join("model.safetensors")).unwrap();
    assert_eq!(st.metadata["format"], "mlx");
    // Embedding (tied lm_head) and every linear layer are quantized.
    for m in ["model.embed_tokens", "model.layers.0.mlp.down_proj"] {
        assert!(st.tensors.contains_key(&format!("{m}.scales")), "{m}");
    }

    let (prompt, generated, text) = ours(&out);
    eprintln!("ours {}-bit: {generated:?} {text:?}", spec.bits);
    if !python_mlx_lm() {
        return;
    }
    let reference = mlx_lm_reference(&out);
    assert_eq!(prompt, ids(&reference["prompt_ids"]));
    assert_eq!(
        generated,
        ids(&reference["generated_ids"]),
        "{}-bit: greedy tokens differ from mlx-lm's (mlx-lm text {:?})",
        spec.bits,
        reference["text"]
    );
    // The same weights as mlx-lm's own quantizer writes from the same float folder.
    let theirs = tmp.path().join("mlx-lm");
    let status = Command::new("python3")
        .args(["-m", "mlx_lm", "convert", "--hf-path"])
        .arg(&float.dir)
        .arg("--mlx-path")
        .arg(&theirs)
        .args(["-q", "--q-bits"])
        .arg(spec.bits.to_string())
        .arg("--q-group-size")
        .arg(spec.group_size.to_string())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("run mlx_lm convert");
    if !status.status.success() {
        panic!(
            "mlx_lm convert failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
    }
    let their_config = read_json(&theirs.join("config.json"));
    assert_eq!(their_config["quantization"], config["quantization"]);
    let theirs_st = mlx::io::load_safetensors(theirs.join("model.safetensors")).unwrap();
    assert_eq!(
        theirs_st.tensors.keys().collect::<Vec<_>>(),
        st.tensors.keys().collect::<Vec<_>>()
    );
    for (name, a) in &st.tensors {
        let b = &theirs_st.tensors[name];
        assert_eq!(a.shape(), b.shape(), "{name}");
        assert_eq!(a.dtype(), b.dtype(), "{name}");
        let same = a
            .equal(b)
            .and_then(|e| e.all(mlx::Axes::All, false))
            .and_then(|e| e.item::<bool>())
            .unwrap();
        assert!(same, "{name} differs from mlx-lm's");
    }
    let index: Value = read_json(&out.join("model.safetensors.index.json"));
    let their_index: Value = read_json(&theirs.join("model.safetensors.index.json"));
    assert_eq!(index, their_index, "index files differ");
}

#[test]
fn eight_bit_round_trip_matches_mlx_lm() {
    quantized_round_trip(QuantSpec::new(64, 8).unwrap());
}

#[test]
fn four_bit_round_trip_matches_mlx_lm() {
    quantized_round_trip(QuantSpec::new(64, 4).unwrap());
}

#[test]
fn dequantized_model_matches_mlx_lm() {
    let Some(float) = float_model() else { return };
    let (_, generated, text) = ours(&float.dir);
    assert!(text.contains("Paris"), "{text:?}");
    if !python_mlx_lm() {
        return;
    }
    let reference = mlx_lm_reference(&float.dir);
    assert_eq!(generated, ids(&reference["generated_ids"]));
}

#[test]
fn dtype_cast_writes_the_requested_type() {
    let Some(float) = float_model() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bf16");
    convert_model(
        &float.dir,
        &out,
        &ConvertOptions {
            dtype: Some(Dtype::Bfloat16),
            ..Default::default()
        },
    )
    .unwrap();
    let st = mlx::io::load_safetensors(out.join("model.safetensors")).unwrap();
    let not_bf16: Vec<&String> = st
        .tensors
        .iter()
        .filter(|(_, a)| a.dtype() != Dtype::Bfloat16)
        .map(|(k, _)| k)
        .collect();
    assert!(not_bf16.is_empty(), "not bfloat16: {not_bf16:?}");
    load_model(&out).expect("bf16 model loads");
}

#[test]
fn bad_option_combinations_are_refused() {
    let Some(float) = float_model() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let both = ConvertOptions {
        quantize: Some(QuantSpec::default()),
        dequantize: true,
        ..Default::default()
    };
    let msg = convert_model(&float.dir, &out, &both)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not both"), "{msg}");

    // Quantizing an already-quantized folder.
    let q = tmp.path().join("q");
    let quant = ConvertOptions {
        quantize: Some(QuantSpec::default()),
        ..Default::default()
    };
    convert_model(&float.dir, &q, &quant).unwrap();
    let msg = convert_model(&q, &out, &quant).unwrap_err().to_string();
    assert!(msg.contains("already quantized"), "{msg}");

    // An existing output folder.
    let err = convert_model(&float.dir, &q, &ConvertOptions::default()).unwrap_err();
    assert!(matches!(err, ConvertError::OutputExists(_)), "{err}");
    let mut left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["q"], "nothing but the finished folder is left");
}
