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
pub fn quantized_matmul(x: &Array, q: &Quantized, transpose: bool) -> Result<Array> {
    let mode = affine();
    Array::from_raw(unsafe {
        ffi::mlxs_quantized_matmul(
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
