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
/// `MLX_HUB_QMM=mlx` turns our kernels off.
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
    /// `avx2-fma`, `neon`, `scalar` (portable), or `mlx` when `MLX_HUB_QMM=mlx`.
    pub name: String,
    /// `MLX_HUB_CPU_THREADS`, else the CPUs this process may run on.
    pub threads: i32,
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
