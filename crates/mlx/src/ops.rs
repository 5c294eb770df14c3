//! Array operations. Every operation is lazy: it records a graph node and returns at
//! once; shape and dtype errors are reported immediately as `Err`.

use std::borrow::Cow;
use std::ffi::c_int;

use crate::array::{Array, RawVec};
use crate::error::{Result, check};
use crate::{Dtype, ffi};

/// Something that can stand on the right of a binary operation: an array, or a
/// Rust scalar. Scalars take the dtype of the array they meet when it is floating
/// (as Python scalars do in MLX), so `x.mul(0.5)` keeps a float16 `x` float16.
pub trait Operand {
    fn to_operand(&self, like: Dtype) -> Result<Cow<'_, Array>>;
}

impl Operand for Array {
    fn to_operand(&self, _: Dtype) -> Result<Cow<'_, Array>> {
        Ok(Cow::Borrowed(self))
    }
}
impl Operand for &Array {
    fn to_operand(&self, _: Dtype) -> Result<Cow<'_, Array>> {
        Ok(Cow::Borrowed(*self))
    }
}
impl Operand for f32 {
    fn to_operand(&self, like: Dtype) -> Result<Cow<'_, Array>> {
        let dtype = if like.is_float() {
            like
        } else {
            Dtype::Float32
        };
        Ok(Cow::Owned(Array::scalar_as(*self as f64, dtype)?))
    }
}
impl Operand for f64 {
    fn to_operand(&self, like: Dtype) -> Result<Cow<'_, Array>> {
        let dtype = if like.is_float() {
            like
        } else {
            Dtype::Float32
        };
        Ok(Cow::Owned(Array::scalar_as(*self, dtype)?))
    }
}
impl Operand for i32 {
    fn to_operand(&self, like: Dtype) -> Result<Cow<'_, Array>> {
        let dtype = if like == Dtype::Bool {
            Dtype::Int32
        } else {
            like
        };
        Ok(Cow::Owned(Array::scalar_as(*self as f64, dtype)?))
    }
}

/// Which axes a reduction runs over.
#[derive(Debug, Clone)]
pub enum Axes {
    All,
    Some(Vec<i32>),
}

impl From<i32> for Axes {
    fn from(axis: i32) -> Axes {
        Axes::Some(vec![axis])
    }
}
impl From<&[i32]> for Axes {
    fn from(axes: &[i32]) -> Axes {
        Axes::Some(axes.to_vec())
    }
}
impl<const N: usize> From<[i32; N]> for Axes {
    fn from(axes: [i32; N]) -> Axes {
        Axes::Some(axes.to_vec())
    }
}
impl From<Vec<i32>> for Axes {
    fn from(axes: Vec<i32>) -> Axes {
        Axes::Some(axes)
    }
}

fn opt_ptr(a: Option<&Array>) -> *const ffi::mlxs_array {
    a.map_or(std::ptr::null(), Array::as_ptr)
}

macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident = $code:expr;)*) => {
        impl Array {
            $($(#[$doc])* pub fn $name(&self) -> Result<Array> { self.unary($code) })*
        }
    };
}

macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident = $code:expr;)*) => {
        impl Array {
            $($(#[$doc])* pub fn $name(&self, other: impl Operand) -> Result<Array> {
                self.binary($code, other)
            })*
        }
    };
}

macro_rules! reductions {
    ($($(#[$doc:meta])* $name:ident = $code:expr;)*) => {
        impl Array {
            $($(#[$doc])* pub fn $name(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
                self.reduce($code, axes.into(), keepdims)
            })*
        }
    };
}

unary_ops! {
    abs = 0; negative = 1; sign = 2; sqrt = 3; rsqrt = 4; exp = 5; log = 6; log1p = 7;
    sin = 8; cos = 9; tanh = 10; sigmoid = 11; erf = 12; floor = 13; ceil = 14;
    square = 15; reciprocal = 16; logical_not = 17;
    /// Blocks gradients from flowing through this value.
    stop_gradient = 18;
    is_nan = 19; is_inf = 20; is_finite = 21; expm1 = 22; erfinv = 23; log2 = 24;
    /// `x * sigmoid(x)`, as `mlx.nn.silu`.
    silu = 25;
    /// Exact GELU, `x * (1 + erf(x / √2)) / 2`, as `mlx.nn.gelu`.
    gelu = 26;
    /// Tanh-approximated GELU, as `mlx.nn.gelu_approx`.
    gelu_approx = 27;
    relu = 28;
    /// A copy of the array (a new graph node).
    copy = 29;
    tan = 30;
}

binary_ops! {
    add = 0; subtract = 1; multiply = 2; divide = 3; maximum = 4; minimum = 5; power = 6;
    equal = 7; not_equal = 8; less = 9; less_equal = 10; greater = 11; greater_equal = 12;
    logical_and = 13; logical_or = 14; remainder = 15; floor_divide = 16; logaddexp = 17;
    arctan2 = 18; bitwise_and = 19; bitwise_or = 20; left_shift = 21; right_shift = 22;
}

reductions! {
    sum = 0; mean = 1; max = 2; min = 3; prod = 4;
    /// `log(sum(exp(x)))`, computed stably.
    logsumexp = 5;
    all = 6; any = 7;
}

impl Array {
    fn unary(&self, op: c_int) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_unary(op, self.as_ptr()) })
    }

    fn binary(&self, op: c_int, other: impl Operand) -> Result<Array> {
        let other = other.to_operand(self.dtype())?;
        Array::from_raw(unsafe { ffi::mlxs_binary(op, self.as_ptr(), other.as_ptr()) })
    }

    fn reduce(&self, op: c_int, axes: Axes, keepdims: bool) -> Result<Array> {
        let (all, axes) = match axes {
            Axes::All => (1, Vec::new()),
            Axes::Some(v) => (0, v),
        };
        Array::from_raw(unsafe {
            ffi::mlxs_reduce(
                op,
                self.as_ptr(),
                axes.as_ptr(),
                axes.len(),
                all,
                keepdims as c_int,
            )
        })
    }

    /// Shorthand for `self - other`.
    pub fn sub(&self, other: impl Operand) -> Result<Array> {
        self.subtract(other)
    }
    /// Shorthand for `self * other`.
    pub fn mul(&self, other: impl Operand) -> Result<Array> {
        self.multiply(other)
    }
    /// Shorthand for `self / other`.
    pub fn div(&self, other: impl Operand) -> Result<Array> {
        self.divide(other)
    }
    /// Shorthand for `-self`.
    pub fn neg(&self) -> Result<Array> {
        self.negative()
    }

    /// Index of the largest element along `axis` (`None`: of the flattened array).
    pub fn argmax(&self, axis: Option<i32>, keepdims: bool) -> Result<Array> {
        self.arg_reduce(0, axis, keepdims)
    }
    /// Index of the smallest element along `axis` (`None`: of the flattened array).
    pub fn argmin(&self, axis: Option<i32>, keepdims: bool) -> Result<Array> {
        self.arg_reduce(1, axis, keepdims)
    }
    fn arg_reduce(&self, op: c_int, axis: Option<i32>, keepdims: bool) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_arg_reduce(
                op,
                self.as_ptr(),
                axis.unwrap_or(0),
                axis.is_none() as c_int,
                keepdims as c_int,
            )
        })
    }

    /// Variance over `axes` with `ddof` delta degrees of freedom.
    pub fn var(&self, axes: &[i32], keepdims: bool, ddof: i32) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_var(
                self.as_ptr(),
                axes.as_ptr(),
                axes.len(),
                keepdims as c_int,
                ddof,
            )
        })
    }

    /// Softmax over `axes`; `precise` accumulates in float32 for half inputs.
    pub fn softmax(&self, axes: &[i32], precise: bool) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_softmax(self.as_ptr(), axes.as_ptr(), axes.len(), precise as c_int)
        })
    }

    /// Cumulative sum along `axis`.
    pub fn cumsum(&self, axis: i32, reverse: bool, inclusive: bool) -> Result<Array> {
        self.scan(0, axis, reverse, inclusive)
    }
    /// Cumulative product along `axis`.
    pub fn cumprod(&self, axis: i32, reverse: bool, inclusive: bool) -> Result<Array> {
        self.scan(1, axis, reverse, inclusive)
    }
    /// Cumulative maximum along `axis`.
    pub fn cummax(&self, axis: i32, reverse: bool, inclusive: bool) -> Result<Array> {
        self.scan(2, axis, reverse, inclusive)
    }
    fn scan(&self, op: c_int, axis: i32, reverse: bool, inclusive: bool) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_scan(
                op,
                self.as_ptr(),
                axis,
                reverse as c_int,
                inclusive as c_int,
            )
        })
    }

    /// Converts the elements to `dtype`.
    pub fn as_type(&self, dtype: Dtype) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_astype(self.as_ptr(), dtype as i32) })
    }

    /// Clamps to `[lo, hi]`; either bound may be absent.
    pub fn clip(&self, lo: Option<&Array>, hi: Option<&Array>) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_clip(self.as_ptr(), opt_ptr(lo), opt_ptr(hi)) })
    }

    pub fn round(&self, decimals: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_round(self.as_ptr(), decimals) })
    }

    pub fn matmul(&self, other: &Array) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_matmul(self.as_ptr(), other.as_ptr()) })
    }

    pub fn reshape(&self, shape: &[i32]) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_reshape(self.as_ptr(), shape.as_ptr(), shape.len()) })
    }

    /// Permutes the axes; an empty `axes` reverses them.
    pub fn transpose(&self, axes: &[i32]) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_transpose(
                self.as_ptr(),
                axes.as_ptr(),
                axes.len(),
                axes.is_empty() as c_int,
            )
        })
    }

    /// Transpose of the last two axes.
    pub fn t(&self) -> Result<Array> {
        self.swapaxes(-1, -2)
    }

    pub fn swapaxes(&self, axis1: i32, axis2: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_swapaxes(self.as_ptr(), axis1, axis2) })
    }

    pub fn expand_dims(&self, axes: &[i32]) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_expand_dims(self.as_ptr(), axes.as_ptr(), axes.len()) })
    }

    /// Removes size-1 axes (`None`: all of them).
    pub fn squeeze(&self, axes: Option<&[i32]>) -> Result<Array> {
        let a = axes.unwrap_or(&[]);
        Array::from_raw(unsafe {
            ffi::mlxs_squeeze(self.as_ptr(), a.as_ptr(), a.len(), axes.is_none() as c_int)
        })
    }

    pub fn broadcast_to(&self, shape: &[i32]) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_broadcast_to(self.as_ptr(), shape.as_ptr(), shape.len())
        })
    }

    /// Flattens axes `start..=end` into one.
    pub fn flatten(&self, start: i32, end: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_flatten(self.as_ptr(), start, end) })
    }

    /// `self[start[0]:stop[0]:strides[0], …]` over all leading axes given.
    pub fn slice(&self, start: &[i32], stop: &[i32], strides: &[i32]) -> Result<Array> {
        check_lens(&[start.len(), stop.len(), strides.len()])?;
        Array::from_raw(unsafe {
            ffi::mlxs_slice(
                self.as_ptr(),
                start.as_ptr(),
                stop.as_ptr(),
                strides.as_ptr(),
                start.len(),
            )
        })
    }

    /// `self[..., start:stop, ...]` on one axis; negative bounds count from the end.
    pub fn slice_axis(&self, axis: i32, start: i32, stop: i32) -> Result<Array> {
        let shape = self.shape();
        let n = shape.len() as i32;
        let ax = if axis < 0 { axis + n } else { axis };
        if ax < 0 || ax >= n {
            return Err(crate::Error::InvalidArgument(format!(
                "axis {axis} is out of range for an array of {n} dimensions"
            )));
        }
        let len = shape[ax as usize];
        let fix = |i: i32| if i < 0 { (i + len).max(0) } else { i.min(len) };
        let mut lo = vec![0; shape.len()];
        let mut hi = shape.clone();
        lo[ax as usize] = fix(start);
        hi[ax as usize] = fix(stop);
        let strides = vec![1; shape.len()];
        self.slice(&lo, &hi, &strides)
    }

    /// A copy of `self` with `self[start:stop:strides] = update`.
    pub fn slice_update(
        &self,
        update: &Array,
        start: &[i32],
        stop: &[i32],
        strides: &[i32],
    ) -> Result<Array> {
        check_lens(&[start.len(), stop.len(), strides.len()])?;
        Array::from_raw(unsafe {
            ffi::mlxs_slice_update(
                self.as_ptr(),
                update.as_ptr(),
                start.as_ptr(),
                stop.as_ptr(),
                strides.as_ptr(),
                start.len(),
            )
        })
    }

    /// Splits into `sections` equal parts along `axis`.
    pub fn split(&self, sections: i32, axis: i32) -> Result<Vec<Array>> {
        let out = RawVec::new();
        check(unsafe {
            ffi::mlxs_split(self.as_ptr(), std::ptr::null(), 0, sections, axis, out.0)
        })?;
        out.to_arrays()
    }

    /// Splits along `axis` before each of `indices`.
    pub fn split_at(&self, indices: &[i32], axis: i32) -> Result<Vec<Array>> {
        let out = RawVec::new();
        check(unsafe {
            ffi::mlxs_split(
                self.as_ptr(),
                indices.as_ptr(),
                indices.len(),
                0,
                axis,
                out.0,
            )
        })?;
        out.to_arrays()
    }

    /// Gathers `indices` along `axis` (`None`: from the flattened array).
    pub fn take(&self, indices: &Array, axis: Option<i32>) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_take(
                self.as_ptr(),
                indices.as_ptr(),
                axis.unwrap_or(0),
                axis.is_none() as c_int,
            )
        })
    }

    pub fn take_along_axis(&self, indices: &Array, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_take_along_axis(self.as_ptr(), indices.as_ptr(), axis) })
    }

    /// A copy of `self` with `values` written at `indices` along `axis`.
    pub fn put_along_axis(&self, indices: &Array, values: &Array, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_put_along_axis(self.as_ptr(), indices.as_ptr(), values.as_ptr(), axis)
        })
    }

    /// A copy of `self` with `values` added at `indices` along `axis` (repeats add up).
    pub fn scatter_add_axis(&self, indices: &Array, values: &Array, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe {
            ffi::mlxs_scatter_add_axis(self.as_ptr(), indices.as_ptr(), values.as_ptr(), axis)
        })
    }

    pub fn sort(&self, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_sort(self.as_ptr(), axis, 0) })
    }
    pub fn argsort(&self, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_sort(self.as_ptr(), axis, 1) })
    }
    /// Partially sorts so that the element at `kth` is in its sorted place.
    pub fn partition(&self, kth: i32, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_partition(self.as_ptr(), kth, axis, 0) })
    }
    /// Indices that partition the array around `kth` (see [`Array::partition`]).
    pub fn argpartition(&self, kth: i32, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_partition(self.as_ptr(), kth, axis, 1) })
    }
    /// The `k` largest values along `axis`, in no particular order.
    pub fn topk(&self, k: i32, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_topk(self.as_ptr(), k, axis) })
    }

    /// Pads `axes[i]` with `low[i]` before and `high[i]` after, with `value`.
    pub fn pad(&self, axes: &[i32], low: &[i32], high: &[i32], value: &Array) -> Result<Array> {
        check_lens(&[axes.len(), low.len(), high.len()])?;
        Array::from_raw(unsafe {
            ffi::mlxs_pad(
                self.as_ptr(),
                axes.as_ptr(),
                low.as_ptr(),
                high.as_ptr(),
                axes.len(),
                value.as_ptr(),
            )
        })
    }

    pub fn repeat(&self, repeats: i32, axis: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_repeat(self.as_ptr(), repeats, axis) })
    }

    pub fn tile(&self, reps: &[i32]) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_tile(self.as_ptr(), reps.as_ptr(), reps.len()) })
    }

    /// Lower triangle (elements above diagonal `k` zeroed).
    pub fn tril(&self, k: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_tri(self.as_ptr(), k, 0) })
    }
    /// Upper triangle (elements below diagonal `k` zeroed).
    pub fn triu(&self, k: i32) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_tri(self.as_ptr(), k, 1) })
    }

    /// A row-contiguous copy when the layout is not already row-contiguous.
    pub fn contiguous(&self) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_contiguous(self.as_ptr()) })
    }
}

fn check_lens(lens: &[usize]) -> Result<()> {
    if lens.windows(2).any(|w| w[0] != w[1]) {
        return Err(crate::Error::InvalidArgument(format!(
            "argument lists differ in length: {lens:?}"
        )));
    }
    Ok(())
}

/// `cond ? a : b`, element-wise with broadcasting.
pub fn where_(cond: &Array, a: &Array, b: &Array) -> Result<Array> {
    Array::from_raw(unsafe { ffi::mlxs_where(cond.as_ptr(), a.as_ptr(), b.as_ptr()) })
}

/// Joins arrays along an existing axis.
pub fn concatenate(arrays: &[&Array], axis: i32) -> Result<Array> {
    let ptrs: Vec<_> = arrays.iter().map(|a| a.as_ptr()).collect();
    Array::from_raw(unsafe { ffi::mlxs_concatenate(ptrs.as_ptr(), ptrs.len(), axis) })
}

/// Joins arrays along a new axis.
pub fn stack(arrays: &[&Array], axis: i32) -> Result<Array> {
    let ptrs: Vec<_> = arrays.iter().map(|a| a.as_ptr()).collect();
    Array::from_raw(unsafe { ffi::mlxs_stack(ptrs.as_ptr(), ptrs.len(), axis) })
}

/// `alpha * (a @ b) + beta * c`.
pub fn addmm(c: &Array, a: &Array, b: &Array, alpha: f32, beta: f32) -> Result<Array> {
    Array::from_raw(unsafe { ffi::mlxs_addmm(c.as_ptr(), a.as_ptr(), b.as_ptr(), alpha, beta) })
}

/// An array of `shape` filled with `value`, as `dtype`.
pub fn full(shape: &[i32], value: &Array, dtype: Dtype) -> Result<Array> {
    Array::from_raw(unsafe {
        ffi::mlxs_full(shape.as_ptr(), shape.len(), value.as_ptr(), dtype as i32)
    })
}

pub fn zeros(shape: &[i32], dtype: Dtype) -> Result<Array> {
    full(shape, &Array::scalar_as(0.0, dtype)?, dtype)
}

pub fn ones(shape: &[i32], dtype: Dtype) -> Result<Array> {
    full(shape, &Array::scalar_as(1.0, dtype)?, dtype)
}

/// `start, start + step, …` up to (not including) `stop`.
pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
    Array::from_raw(unsafe { ffi::mlxs_arange(start, stop, step, dtype as i32) })
}

pub fn linspace(start: f64, stop: f64, num: i32, dtype: Dtype) -> Result<Array> {
    Array::from_raw(unsafe { ffi::mlxs_linspace(start, stop, num, dtype as i32) })
}

/// An `n × m` matrix with ones on diagonal `k`.
pub fn eye(n: i32, m: i32, k: i32, dtype: Dtype) -> Result<Array> {
    Array::from_raw(unsafe { ffi::mlxs_eye(n, m, k, dtype as i32) })
}
