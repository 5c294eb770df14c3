use std::ffi::CStr;
use std::fmt;
use std::ptr::NonNull;

use crate::error::{Error, Result, check};
use crate::ffi;
use crate::{Dtype, Element};

/// An MLX array: a reference-counted handle to a lazily evaluated tensor.
///
/// Cloning is cheap (it shares the graph node). Arrays are `Send` but not `Sync`;
/// evaluate an array before sending it to another thread (see the crate docs on
/// threads: graphs run on the streams of the thread that built them).
pub struct Array {
    raw: NonNull<ffi::mlxs_array>,
}

// SAFETY: an mlx::core::array is a shared_ptr to its description; moving the handle
// between threads is sound (atomic refcount), and MLX reports an unevaluated graph
// used on a foreign thread as an error. Concurrent use of one array from two
// threads is prevented by Array not being Sync.
unsafe impl Send for Array {}

impl Array {
    /// Takes ownership of a handle returned by the shim; NULL means an MLX error.
    pub(crate) fn from_raw(raw: *mut ffi::mlxs_array) -> Result<Array> {
        match NonNull::new(raw) {
            Some(raw) => Ok(Array { raw }),
            None => Err(crate::error::take_pending().unwrap_or_else(Error::last)),
        }
    }

    pub(crate) fn as_ptr(&self) -> *const ffi::mlxs_array {
        self.raw.as_ptr()
    }

    /// An array with a copy of `data`, in row-major order with the given shape.
    pub fn from_slice<T: Element>(data: &[T], shape: &[i32]) -> Result<Array> {
        let expected: i64 = shape.iter().map(|&d| d as i64).product();
        if shape.iter().any(|&d| d < 0) || expected != data.len() as i64 {
            return Err(Error::InvalidArgument(format!(
                "{} elements do not fill shape {shape:?}",
                data.len()
            )));
        }
        // SAFETY: data holds exactly product(shape) elements of T's dtype.
        Array::from_raw(unsafe {
            ffi::mlxs_array_from_data(
                data.as_ptr().cast(),
                shape.as_ptr(),
                shape.len(),
                T::DTYPE as i32,
            )
        })
    }

    /// A one-dimensional array holding a copy of `data`.
    pub fn from_vec<T: Element>(data: &[T]) -> Result<Array> {
        Array::from_slice(data, &[data.len() as i32])
    }

    /// A zero-dimensional array.
    pub fn scalar<T: Element>(value: T) -> Result<Array> {
        Array::from_slice(&[value], &[])
    }

    /// A zero-dimensional array of `dtype` holding `value` (converted).
    pub fn scalar_as(value: f64, dtype: Dtype) -> Result<Array> {
        Array::from_raw(unsafe { ffi::mlxs_array_scalar(value, dtype as i32) })
    }

    pub fn ndim(&self) -> usize {
        unsafe { ffi::mlxs_array_ndim(self.as_ptr()) }
    }

    pub fn shape(&self) -> Vec<i32> {
        let mut out = vec![0i32; self.ndim()];
        unsafe { ffi::mlxs_array_shape(self.as_ptr(), out.as_mut_ptr()) };
        out
    }

    /// The size of one axis; negative axes count from the end.
    pub fn dim(&self, axis: i32) -> i32 {
        let shape = self.shape();
        let n = shape.len() as i32;
        let axis = if axis < 0 { axis + n } else { axis };
        shape[axis as usize]
    }

    /// Number of elements.
    pub fn size(&self) -> usize {
        unsafe { ffi::mlxs_array_size(self.as_ptr()) }
    }

    pub fn dtype(&self) -> Dtype {
        Dtype::from_code(unsafe { ffi::mlxs_array_dtype(self.as_ptr()) })
    }

    /// Bytes the elements take (size × element size).
    pub fn nbytes(&self) -> usize {
        unsafe { ffi::mlxs_array_nbytes(self.as_ptr()) }
    }

    /// Evaluates the array (and the graph it depends on).
    pub fn eval(&self) -> Result<()> {
        eval([self])
    }

    /// Evaluates and copies the elements out, in row-major order. The element type
    /// must be the array's dtype (use [`Array::as_type`] first to convert).
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if self.dtype() != T::DTYPE {
            return Err(Error::DtypeMismatch {
                actual: self.dtype(),
                requested: T::DTYPE,
            });
        }
        let n = self.size();
        let mut out: Vec<T> = Vec::with_capacity(n);
        // SAFETY: the shim writes exactly n * size_of::<T>() bytes or fails.
        check(unsafe {
            ffi::mlxs_array_copy_out(
                self.as_ptr(),
                out.as_mut_ptr().cast(),
                n * std::mem::size_of::<T>(),
            )
        })?;
        unsafe { out.set_len(n) };
        Ok(out)
    }

    /// The single element of a size-1 array.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::InvalidArgument(format!(
                "item() needs an array of one element, this one has shape {:?}",
                self.shape()
            )));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// Converts to `f32` and copies out: handy for tests and metrics.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        if self.dtype() == Dtype::Float32 {
            self.to_vec()
        } else {
            self.as_type(Dtype::Float32)?.to_vec()
        }
    }

    /// The single element converted to `f32`.
    pub fn item_f32(&self) -> Result<f32> {
        if self.size() != 1 {
            return self.item::<f32>();
        }
        Ok(self.to_f32_vec()?[0])
    }
}

impl Clone for Array {
    fn clone(&self) -> Array {
        // Copying a shared_ptr can only fail on allocation failure.
        Array::from_raw(unsafe { ffi::mlxs_array_clone(self.as_ptr()) })
            .expect("out of memory while cloning an array handle")
    }
}

impl Drop for Array {
    fn drop(&mut self) {
        unsafe { ffi::mlxs_array_free(self.raw.as_ptr()) }
    }
}

impl fmt::Debug for Array {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Printing evaluates the array; MLX prints the values, shape and dtype.
        let raw = unsafe { ffi::mlxs_array_to_string(self.as_ptr()) };
        let text = unsafe { CStr::from_ptr(raw) }
            .to_string_lossy()
            .into_owned();
        unsafe { ffi::mlxs_string_free(raw) };
        f.write_str(&text)
    }
}

/// Evaluates several arrays together (sharing their common graph).
pub fn eval<'a>(arrays: impl IntoIterator<Item = &'a Array>) -> Result<()> {
    let ptrs: Vec<*const ffi::mlxs_array> = arrays.into_iter().map(Array::as_ptr).collect();
    check(unsafe { ffi::mlxs_eval(ptrs.as_ptr(), ptrs.len()) })
}

/// Starts evaluating arrays in the background; a later `eval` or read waits for them.
pub fn async_eval<'a>(arrays: impl IntoIterator<Item = &'a Array>) -> Result<()> {
    let ptrs: Vec<*const ffi::mlxs_array> = arrays.into_iter().map(Array::as_ptr).collect();
    check(unsafe { ffi::mlxs_async_eval(ptrs.as_ptr(), ptrs.len()) })
}

/// A `std::vector<array>` owned on the C++ side, for passing lists across FFI.
pub(crate) struct RawVec(pub(crate) *mut ffi::mlxs_vec);

impl RawVec {
    pub(crate) fn new() -> RawVec {
        RawVec(unsafe { ffi::mlxs_vec_new() })
    }
    pub(crate) fn from_arrays<'a>(arrays: impl IntoIterator<Item = &'a Array>) -> RawVec {
        let v = RawVec::new();
        for a in arrays {
            unsafe { ffi::mlxs_vec_push(v.0, a.as_ptr()) };
        }
        v
    }
    pub(crate) fn push(&self, a: &Array) {
        unsafe { ffi::mlxs_vec_push(self.0, a.as_ptr()) };
    }
    pub(crate) fn to_arrays(&self) -> Result<Vec<Array>> {
        read_vec(self.0)
    }
}

impl Drop for RawVec {
    fn drop(&mut self) {
        unsafe { ffi::mlxs_vec_free(self.0) }
    }
}

pub(crate) fn read_vec(v: *const ffi::mlxs_vec) -> Result<Vec<Array>> {
    let n = unsafe { ffi::mlxs_vec_len(v) };
    (0..n)
        .map(|i| Array::from_raw(unsafe { ffi::mlxs_vec_get(v, i) }))
        .collect()
}

/// A `std::vector<std::string>` owned on the C++ side.
pub(crate) struct RawStrings(pub(crate) *mut ffi::mlxs_strings);

impl RawStrings {
    pub(crate) fn new() -> RawStrings {
        RawStrings(unsafe { ffi::mlxs_strings_new() })
    }
    pub(crate) fn push(&self, s: &str) {
        unsafe { ffi::mlxs_strings_push(self.0, s.as_ptr().cast(), s.len()) };
    }
    pub(crate) fn to_strings(&self) -> Vec<String> {
        let n = unsafe { ffi::mlxs_strings_len(self.0) };
        (0..n)
            .map(|i| {
                let mut len = 0usize;
                let p = unsafe { ffi::mlxs_strings_get(self.0, i, &mut len) };
                let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
                String::from_utf8_lossy(bytes).into_owned()
            })
            .collect()
    }
}

impl Drop for RawStrings {
    fn drop(&mut self) {
        unsafe { ffi::mlxs_strings_free(self.0) }
    }
}
