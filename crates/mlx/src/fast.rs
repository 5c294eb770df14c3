//! MLX's fused kernels (`mlx.core.fast`). On the CPU they fall back to composed ops.

use std::ffi::CString;

use crate::Array;
use crate::error::Result;
use crate::ffi;

fn opt_ptr(a: Option<&Array>) -> *const ffi::mlxs_array {
    a.map_or(std::ptr::null(), Array::as_ptr)
}

/// RMS normalisation over the last axis, scaled by `weight` when given.
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    Array::from_raw(unsafe { ffi::mlxs_fast_rms_norm(x.as_ptr(), opt_ptr(weight), eps) })
}

/// Layer normalisation over the last axis.
pub fn layer_norm(
    x: &Array,
    weight: Option<&Array>,
    bias: Option<&Array>,
    eps: f32,
) -> Result<Array> {
    Array::from_raw(unsafe {
        ffi::mlxs_fast_layer_norm(x.as_ptr(), opt_ptr(weight), opt_ptr(bias), eps)
    })
}

/// Where a rotary embedding's positions start.
#[derive(Clone, Copy)]
pub enum RopeOffset<'a> {
    Fixed(i32),
    /// A scalar (or per-batch vector) array: lets compiled graphs reuse one trace.
    Array(&'a Array),
}

/// Rotary position embedding of the first `dims` features of the last axis.
///
/// `traditional` rotates adjacent pairs (x0,x1),(x2,x3)… instead of the two halves.
/// Either `base` (θ; frequencies `base^(-2i/dims)`) or explicit `freqs` is given.
pub fn rope(
    x: &Array,
    dims: i32,
    traditional: bool,
    base: Option<f32>,
    scale: f32,
    offset: RopeOffset<'_>,
    freqs: Option<&Array>,
) -> Result<Array> {
    let (fixed, arr) = match offset {
        RopeOffset::Fixed(o) => (o, std::ptr::null()),
        RopeOffset::Array(a) => (0, a.as_ptr()),
    };
    Array::from_raw(unsafe {
        ffi::mlxs_fast_rope(
            x.as_ptr(),
            dims,
            traditional as i32,
            base.unwrap_or(f32::NAN),
            scale,
            fixed,
            arr,
            opt_ptr(freqs),
        )
    })
}

/// The attention mask for [`scaled_dot_product_attention`].
#[derive(Clone, Copy)]
pub enum AttentionMask<'a> {
    None,
    /// Causal, aligned to the end: query i sees keys up to `i + (kv_len - q_len)`.
    Causal,
    /// A boolean (keep = true) or additive mask broadcastable to the scores.
    Array(&'a Array),
}

/// `softmax(q kᵀ · scale + mask) v` with q `[B, Hq, L, D]`, k/v `[B, Hkv, S, D]`
/// (grouped-query attention when `Hq` is a multiple of `Hkv`).
pub fn scaled_dot_product_attention(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f32,
    mask: AttentionMask<'_>,
) -> Result<Array> {
    let (mode, arr) = match mask {
        AttentionMask::None => ("", std::ptr::null()),
        AttentionMask::Causal => ("causal", std::ptr::null()),
        AttentionMask::Array(a) => ("array", a.as_ptr()),
    };
    let mode = CString::new(mode).expect("static string");
    Array::from_raw(unsafe {
        ffi::mlxs_fast_sdpa(
            q.as_ptr(),
            k.as_ptr(),
            v.as_ptr(),
            scale,
            mode.as_ptr(),
            arr,
        )
    })
}
