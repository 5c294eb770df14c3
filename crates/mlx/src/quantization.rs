//! Affine quantization as MLX (and mlx-lm) store it: per group of `group_size`
//! consecutive elements of the last axis, `w ≈ scale · q + bias`, with q packed
//! `32 / bits` to a uint32.

use std::ffi::CString;

use crate::array::RawVec;
use crate::error::{Error, Result, check};
use crate::{Array, Dtype, ffi};

/// Bits and group size of an affine quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantSpec {
    pub group_size: i32,
    pub bits: i32,
}

impl QuantSpec {
    pub fn new(group_size: i32, bits: i32) -> Result<QuantSpec> {
        if !matches!(group_size, 32 | 64 | 128) {
            return Err(Error::InvalidArgument(format!(
                "group size {group_size} is not one of 32, 64, 128"
            )));
        }
        if !matches!(bits, 2..=8) {
            return Err(Error::InvalidArgument(format!(
                "{bits} bits is not between 2 and 8"
            )));
        }
        Ok(QuantSpec { group_size, bits })
    }
}

impl Default for QuantSpec {
    /// mlx-lm's default: 4 bits, groups of 64.
    fn default() -> QuantSpec {
        QuantSpec {
            group_size: 64,
            bits: 4,
        }
    }
}

/// A quantized matrix: packed weights, and per-group scales and biases.
#[derive(Debug, Clone)]
pub struct Quantized {
    pub weight: Array,
    pub scales: Array,
    pub biases: Array,
    pub spec: QuantSpec,
}

fn affine() -> CString {
    CString::new("affine").expect("static string")
}

/// Quantizes `w` along its last axis (which must be a multiple of the group size).
pub fn quantize(w: &Array, spec: QuantSpec) -> Result<Quantized> {
    let out = RawVec::new();
    let mode = affine();
    check(unsafe {
        ffi::mlxs_quantize(w.as_ptr(), spec.group_size, spec.bits, mode.as_ptr(), out.0)
    })?;
    let mut parts = out.to_arrays()?.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(weight), Some(scales), Some(biases)) => Ok(Quantized {
            weight,
            scales,
            biases,
            spec,
        }),
        _ => Err(Error::Mlx(
            "affine quantize did not return weight, scales and biases".into(),
        )),
    }
}

/// Unpacks a quantized matrix; `dtype` defaults to the scales' dtype.
pub fn dequantize(q: &Quantized, dtype: Option<Dtype>) -> Result<Array> {
    let mode = affine();
    Array::from_raw(unsafe {
        ffi::mlxs_dequantize(
            q.weight.as_ptr(),
            q.scales.as_ptr(),
            q.biases.as_ptr(),
            q.spec.group_size,
            q.spec.bits,
            mode.as_ptr(),
            dtype.map_or(-1, |d| d as i32),
        )
    })
}

/// `x @ dequantize(w).T` (or `x @ dequantize(w)` when `transpose` is false) without
/// materialising the dequantized matrix.
///
/// On the CPU, the transposed product with 4- or 8-bit weights and groups of 32, 64
/// or 128 (what quantized Linear layers compute) runs our own kernels ([`cpu_kernel`]);
/// everything else, and every GPU stream, runs MLX's. Both are lazy, compile, and give
/// the gradient with respect to `x` (and to scales and biases, as MLX does).
/// [`configure_cpu_kernels`] can turn our kernels off.
pub fn quantized_matmul(x: &Array, q: &Quantized, transpose: bool) -> Result<Array> {
    qmm(ffi::mlxs_quantized_matmul, x, q, transpose)
}

/// [`quantized_matmul`] always with MLX's own kernels: the reference ours are
/// tested and benchmarked against.
pub fn quantized_matmul_reference(x: &Array, q: &Quantized, transpose: bool) -> Result<Array> {
    qmm(ffi::mlxs_quantized_matmul_mlx, x, q, transpose)
}

type QmmFn = unsafe extern "C" fn(
    *const ffi::mlxs_array,
    *const ffi::mlxs_array,
    *const ffi::mlxs_array,
    *const ffi::mlxs_array,
    std::os::raw::c_int,
    std::os::raw::c_int,
    std::os::raw::c_int,
    *const std::os::raw::c_char,
) -> *mut ffi::mlxs_array;

fn qmm(f: QmmFn, x: &Array, q: &Quantized, transpose: bool) -> Result<Array> {
    let mode = affine();
    Array::from_raw(unsafe {
        f(
            x.as_ptr(),
            q.weight.as_ptr(),
            q.scales.as_ptr(),
            q.biases.as_ptr(),
            transpose as i32,
            q.spec.group_size,
            q.spec.bits,
            mode.as_ptr(),
        )
    })
}

/// Which of our CPU quantized-matmul kernels runs here, and on how many threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuKernel {
    /// `avx2-fma`, `neon`, `scalar` (portable), or `mlx` when turned off
    /// ([`CpuKernelSettings::mlx_quantized_matmul`]).
    pub name: String,
    /// [`CpuKernelSettings::threads`], else the CPUs this process may run on.
    pub threads: i32,
}

/// How our CPU kernels run, chosen by the caller's configuration (the hub reads
/// `MLX_HUB_CPU_THREADS` and `MLX_HUB_QMM`) and given once at start-up with
/// [`configure_cpu_kernels`]; the default is what runs when nobody configures them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuKernelSettings {
    /// Threads of the kernels' pool (capped at 256); `None`: the CPUs this process may use.
    pub threads: Option<usize>,
    /// MLX's own quantized matmul everywhere instead of ours.
    pub mlx_quantized_matmul: bool,
}

/// Applies `settings` process-wide. The thread count counts only before the kernels'
/// pool first runs (it starts once); the kernel choice takes effect at the next op.
pub fn configure_cpu_kernels(settings: CpuKernelSettings) {
    let threads = settings.threads.map_or(0, |n| n.min(256) as i32);
    unsafe { ffi::mlxs_qmm_configure(threads, (!settings.mlx_quantized_matmul) as i32) }
}

pub fn cpu_kernel() -> CpuKernel {
    CpuKernel {
        name: unsafe { std::ffi::CStr::from_ptr(ffi::mlxs_qmm_kernel()) }
            .to_string_lossy()
            .into_owned(),
        threads: unsafe { ffi::mlxs_qmm_threads() },
    }
}

/// Runs the portable scalar kernel instead of the SIMD one (process-wide), so tests
/// and benchmarks can check and compare both on one machine.
pub fn force_portable_kernel(on: bool) {
    unsafe { ffi::mlxs_qmm_force_portable(on as i32) }
}

/// How many products our CPU kernels have computed in this process (tests use it to
/// see the fast path really ran).
pub fn cpu_kernel_calls() -> u64 {
    unsafe { ffi::mlxs_qmm_calls() }
}

/// Runs `rounds` back-to-back jobs of changing sizes on the CPU kernels' thread pool and
/// returns how many chunks did not run exactly once (0 when the pool is sound).
pub fn cpu_pool_self_check(rounds: i32) -> i64 {
    unsafe { ffi::mlxs_qmm_pool_self_check(rounds) }
}

/// One quantized projection of a [`DecodeLayer`]: the matrix and an optional float32 bias.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLinear<'a> {
    pub q: &'a Quantized,
    pub bias: Option<&'a Array>,
}

/// The weights and shape of one Llama block for [`decode_layer`]. Float32 norms, biases
/// and RoPE frequencies; affine 4/8-bit projections with groups of 32, 64 or 128.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLayer<'a> {
    pub n_heads: i32,
    pub n_kv_heads: i32,
    pub head_dim: i32,
    pub eps: f32,
    pub attn_scale: f32,
    pub rope_dims: i32,
    pub rope_traditional: bool,
    pub rope_base: f32,
    pub rope_scale: f32,
    /// llama3-style RoPE frequencies `[rope_dims / 2]` (then `rope_base` is unused).
    pub rope_freqs: Option<&'a Array>,
    pub input_norm: &'a Array,
    pub post_norm: &'a Array,
    /// Per-head RMSNorm weights of queries and keys (qwen3).
    pub qk_norm: Option<(&'a Array, &'a Array)>,
    /// q, k, v, o, gate, up, down.
    pub linears: [DecodeLinear<'a>; 7],
}

/// Whether [`decode_layer`] runs here: MLX's default device is the CPU and our kernels
/// are on (not turned off by [`configure_cpu_kernels`]).
pub fn decode_layer_available() -> bool {
    unsafe { ffi::mlxs_decode_layer_available() != 0 }
}

/// How many [`decode_layer`] nodes have run in this process.
pub fn decode_layer_calls() -> u64 {
    unsafe { ffi::mlxs_decode_layer_calls() }
}

/// One sequence of a [`decode_layer`] step: its float32 KV buffers `[1, Hkv, capacity, D]`
/// and the position `offset` (< capacity) to write and attend from. With `copy_cache`
/// false the step writes into these buffers (the returned ones share them): only for a
/// cache nobody else reads past `offset`.
#[derive(Debug, Clone, Copy)]
pub struct DecodeRow<'a> {
    pub keys: &'a Array,
    pub values: &'a Array,
    pub offset: i32,
    pub copy_cache: bool,
}

/// One decode position of a Llama block for each of `rows` sequences as a single MLX node
/// (our CPU kernels, float32; every weight read once for all rows): `x` `[rows, 1, dim]`.
/// Returns the block's output and each row's buffers with its position written. Computes
/// what mlx-lm's block computes for each sequence alone, op for op, in float32.
pub fn decode_layer(
    x: &Array,
    rows: &[DecodeRow<'_>],
    layer: &DecodeLayer<'_>,
) -> Result<(Array, Vec<(Array, Array)>)> {
    let mut spec = ffi::mlxs_decode_spec {
        dim: layer.input_norm.size() as i32,
        n_heads: layer.n_heads,
        n_kv_heads: layer.n_kv_heads,
        head_dim: layer.head_dim,
        hidden: layer.linears[4].q.weight.dim(0),
        eps: layer.eps,
        attn_scale: layer.attn_scale,
        rope_dims: layer.rope_dims,
        rope_traditional: layer.rope_traditional as i32,
        rope_base: layer.rope_base,
        rope_scale: layer.rope_scale,
        rope_has_freqs: layer.rope_freqs.is_some() as i32,
        qk_norm: layer.qk_norm.is_some() as i32,
        ..Default::default()
    };
    let inputs = RawVec::from_arrays([x]);
    for r in rows {
        inputs.push(r.keys);
        inputs.push(r.values);
    }
    inputs.push(layer.input_norm);
    inputs.push(layer.post_norm);
    for (l, s) in layer.linears.iter().zip(spec.lin.iter_mut()) {
        *s = ffi::mlxs_linear_spec {
            bits: l.q.spec.bits,
            group_size: l.q.spec.group_size,
            has_bias: l.bias.is_some() as i32,
        };
        for a in [&l.q.weight, &l.q.scales, &l.q.biases]
            .into_iter()
            .chain(l.bias)
        {
            inputs.push(a);
        }
    }
    if let Some((qn, kn)) = layer.qk_norm {
        inputs.push(qn);
        inputs.push(kn);
    }
    if let Some(f) = layer.rope_freqs {
        inputs.push(f);
    }
    let offsets: Vec<i32> = rows.iter().map(|r| r.offset).collect();
    let copy: Vec<i32> = rows.iter().map(|r| r.copy_cache as i32).collect();
    let out = RawVec::new();
    check(unsafe {
        ffi::mlxs_decode_layer(
            inputs.0,
            &spec,
            offsets.as_ptr(),
            copy.as_ptr(),
            rows.len() as i32,
            out.0,
        )
    })?;
    let mut parts = out.to_arrays()?.into_iter();
    let y = parts
        .next()
        .ok_or_else(|| Error::Mlx("decode_layer returned nothing".into()))?;
    let mut caches = Vec::with_capacity(rows.len());
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        caches.push((k, v));
    }
    if caches.len() != rows.len() {
        return Err(Error::Mlx(
            "decode_layer returned the wrong number of caches".into(),
        ));
    }
    Ok((y, caches))
}
