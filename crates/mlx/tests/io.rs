//! safetensors and GGUF: round trips, a GGUF written byte by byte, and bad files.
mod common;
use common::*;
use mlx::io::{GgufValue, load_gguf, load_safetensors, save_safetensors};
use mlx::quantization::{QuantSpec, Quantized, dequantize};
use mlx::{Array, Dtype};
use std::collections::BTreeMap;

#[test]
fn safetensors_round_trip_all_dtypes_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let base = arr(&[1.0, -2.0, 3.0, 4.0, 0.0, 6.0], &[2, 3]);
    let dtypes = [
        Dtype::Float32,
        Dtype::Float16,
        Dtype::Bfloat16,
        Dtype::Int8,
        Dtype::Int16,
        Dtype::Int32,
        Dtype::Int64,
        Dtype::Uint8,
        Dtype::Uint16,
        Dtype::Uint32,
        Dtype::Uint64,
        Dtype::Bool,
    ];
    let tensors: Vec<(String, Array)> = dtypes
        .iter()
        .map(|&d| {
            let src = if matches!(
                d,
                Dtype::Uint8 | Dtype::Uint16 | Dtype::Uint32 | Dtype::Uint64
            ) {
                base.abs().unwrap()
            } else {
                base.clone()
            };
            (format!("t.{d}"), src.as_type(d).unwrap())
        })
        .collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "mlx".to_string());
    meta.insert("note".to_string(), "ünïcode ✓".to_string());
    save_safetensors(&path, tensors.iter().map(|(k, v)| (k.as_str(), v)), &meta).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the final file remains: {leftovers:?}"
    );
    let loaded = load_safetensors(&path).unwrap();
    assert_eq!(loaded.metadata, meta);
    assert_eq!(loaded.tensors.len(), dtypes.len());
    for (name, want) in &tensors {
        let got = &loaded.tensors[name];
        assert_eq!(got.dtype(), want.dtype(), "{name}");
        assert_eq!(got.shape(), vec![2, 3], "{name}");
        assert_eq!(vals(got), vals(want), "{name}");
    }
    // MLX's safetensors writer has no float64: an error, and no file left behind.
    if skip_float64_on_gpu("saving a float64 array") {
        return;
    }
    let f64_path = dir.path().join("f64.safetensors");
    let wide = base.as_type(Dtype::Float64).unwrap();
    let err = save_safetensors(&f64_path, [("x", &wide)], &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("f64.safetensors"), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temporary file left"
    );
}

#[test]
fn bad_safetensors_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let w = arr(&[1.0; 64], &[8, 8]);
    save_safetensors(&good, [("w", &w)], &BTreeMap::new()).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let missing = dir.path().join("missing.safetensors");
    let err = load_safetensors(&missing).unwrap_err().to_string();
    assert!(err.contains("missing.safetensors"), "{err}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot json").unwrap();
    let err = load_safetensors(&garbage).unwrap_err().to_string();
    assert!(err.contains("garbage.safetensors"), "{err}");

    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let result = load_safetensors(&truncated).and_then(|st| {
        let t = &st.tensors["w"];
        t.eval()?;
        Ok(())
    });
    let err = result.unwrap_err().to_string();
    assert!(err.contains("truncated.safetensors"), "{err}");

    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(
        load_safetensors(&empty)
            .unwrap_err()
            .to_string()
            .contains("empty.safetensors")
    );
}

/// A GGUF v3 file written by hand, with the block layouts llama.cpp uses.
struct GgufWriter {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    data: Vec<u8>,
    n_tensors: u64,
}

impl GgufWriter {
    fn new() -> Self {
        GgufWriter {
            kv: vec![],
            n_kv: 0,
            infos: vec![],
            data: vec![],
            n_tensors: 0,
        }
    }
    fn string(buf: &mut Vec<u8>, s: &str) {
        buf.extend((s.len() as u64).to_le_bytes());
        buf.extend(s.as_bytes());
    }
    fn kv_str(&mut self, k: &str, v: &str) {
        Self::string(&mut self.kv, k);
        self.kv.extend(8u32.to_le_bytes());
        Self::string(&mut self.kv, v);
        self.n_kv += 1;
    }
    fn kv_u32(&mut self, k: &str, v: u32) {
        Self::string(&mut self.kv, k);
        self.kv.extend(4u32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.n_kv += 1;
    }
    fn kv_f32(&mut self, k: &str, v: f32) {
        Self::string(&mut self.kv, k);
        self.kv.extend(6u32.to_le_bytes());
        self.kv.extend(v.to_le_bytes());
        self.n_kv += 1;
    }
    fn kv_str_list(&mut self, k: &str, v: &[&str]) {
        Self::string(&mut self.kv, k);
        self.kv.extend(9u32.to_le_bytes());
        self.kv.extend(8u32.to_le_bytes());
        self.kv.extend((v.len() as u64).to_le_bytes());
        for s in v {
            Self::string(&mut self.kv, s);
        }
        self.n_kv += 1;
    }
    /// `shape` in row-major order; GGUF stores dimensions fastest-first.
    fn tensor(&mut self, name: &str, shape: &[u64], ggml_type: u32, bytes: &[u8]) {
        while !self.data.len().is_multiple_of(32) {
            self.data.push(0);
        }
        Self::string(&mut self.infos, name);
        self.infos.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            self.infos.extend(d.to_le_bytes());
        }
        self.infos.extend(ggml_type.to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
        self.n_tensors += 1;
    }
    fn finish(self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(self.kv);
        out.extend(self.infos);
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(self.data);
        out
    }
}

fn f16(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

#[test]
fn gguf_written_by_hand_loads_with_metadata_and_quantized_blocks() {
    let mut g = GgufWriter::new();
    g.kv_str("general.architecture", "llama");
    g.kv_u32("llama.block_count", 2);
    g.kv_f32("llama.rope.freq_base", 10000.0);
    g.kv_str_list("tokenizer.ggml.tokens", &["<s>", "a", "b"]);
    // F32 [2, 3]
    let f: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    g.tensor("token_embd.weight", &[2, 3], 0, &f);
    // Q8_0 [1, 32]: value = d * q, d = 0.5, q = i - 16.
    let mut q8 = f16(0.5).to_vec();
    q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
    g.tensor("blk.0.ffn_down.weight", &[1, 32], 8, &q8);
    // Q4_0 [1, 32]: value = d * (q - 8); element j in the low nibble of byte j, j+16 in the high one.
    let mut q4 = f16(0.25).to_vec();
    q4.extend((0..16u8).map(|j| (j % 16) | (((15 - j) % 16) << 4)));
    g.tensor("blk.0.attn_q.weight", &[1, 32], 2, &q4);
    // Q4_1 [1, 32]: value = d * q + m.
    let mut q41 = f16(0.1).to_vec();
    q41.extend(f16(-1.0));
    q41.extend((0..16u8).map(|j| j | (j << 4)));
    g.tensor("blk.0.attn_k.weight", &[1, 32], 3, &q41);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, g.finish()).unwrap();

    let loaded = load_gguf(&path).unwrap();
    match &loaded.metadata["general.architecture"] {
        GgufValue::String(s) => assert_eq!(s, "llama"),
        other => panic!("architecture: {other:?}"),
    }
    match &loaded.metadata["llama.block_count"] {
        GgufValue::Array(a) => {
            assert_eq!(a.as_type(Dtype::Int64).unwrap().item::<i64>().unwrap(), 2)
        }
        other => panic!("block_count: {other:?}"),
    }
    match &loaded.metadata["llama.rope.freq_base"] {
        GgufValue::Array(a) => assert_eq!(a.item_f32().unwrap(), 10000.0),
        other => panic!("freq_base: {other:?}"),
    }
    match &loaded.metadata["tokenizer.ggml.tokens"] {
        GgufValue::Strings(v) => assert_eq!(v, &["<s>", "a", "b"]),
        other => panic!("tokens: {other:?}"),
    }
    let emb = &loaded.tensors["token_embd.weight"];
    assert_eq!(emb.shape(), vec![2, 3]);
    assert_eq!(vals(emb), vec![1., 2., 3., 4., 5., 6.]);

    let deq = |stem: &str, bits: i32| {
        let q = Quantized {
            weight: loaded.tensors[&format!("{stem}.weight")].clone(),
            scales: loaded.tensors[&format!("{stem}.scales")].clone(),
            biases: loaded.tensors[&format!("{stem}.biases")].clone(),
            spec: QuantSpec::new(32, bits).unwrap(),
        };
        vals(&dequantize(&q, Some(Dtype::Float32)).unwrap())
    };
    let want_q8: Vec<f32> = (0..32).map(|i| 0.5 * (i as f32 - 16.0)).collect();
    assert_close(&deq("blk.0.ffn_down", 8), &want_q8, 1e-3);
    let want_q4: Vec<f32> = (0..32)
        .map(|i| {
            let q = if i < 16 { i % 16 } else { (15 - (i - 16)) % 16 };
            0.25 * (q as f32 - 8.0)
        })
        .collect();
    assert_close(&deq("blk.0.attn_q", 4), &want_q4, 1e-3);
    let want_q41: Vec<f32> = (0..32).map(|i| 0.1 * (i % 16) as f32 - 1.0).collect();
    assert_close(&deq("blk.0.attn_k", 4), &want_q41, 2e-3);
}

#[test]
fn bad_gguf_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = GgufWriter::new();
    g.kv_str("general.architecture", "llama");
    let f: Vec<u8> = (0..64).flat_map(|x| (x as f32).to_le_bytes()).collect();
    g.tensor("w", &[8, 8], 0, &f);
    let bytes = g.finish();
    for (name, content) in [
        ("truncated.gguf", bytes[..bytes.len() - 40].to_vec()),
        ("header-only.gguf", bytes[..20].to_vec()),
        (
            "not-gguf.gguf",
            b"GGML this is not a gguf file at all".to_vec(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let err = load_gguf(&path).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
    let err = load_gguf(dir.path().join("absent.gguf"))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.gguf"), "{err}");
}

/// A binary that never asks which BLAS is in use still loads OpenBLAS ahead of
/// libmlx (the linker's --as-needed once dropped it from test binaries, which then
/// ran on the wheel's reference BLAS). Reads the process's mappings, not `blas()`,
/// which would itself keep the library.
#[test]
#[cfg(target_os = "linux")]
fn openblas_is_loaded_without_being_asked_for() {
    if !mlx::system::OPENBLAS_LINKED {
        eprintln!("skipped: built without OpenBLAS");
        return;
    }
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    assert!(
        maps.contains("libopenblas"),
        "libopenblas is not mapped into this test binary"
    );
}
