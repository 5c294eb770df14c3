//! Random numbers from explicit keys (`Key`), so results are a function of the seed.
//! Functions taking `Option<&Key>` fall back to MLX's global key when `None`.

use crate::error::Result;
use crate::{Array, Dtype, ffi};

/// A PRNG key (MLX's two-word threefry key).
#[derive(Debug, Clone)]
pub struct Key(Array);

impl Key {
    pub fn new(seed: u64) -> Result<Key> {
        Ok(Key(Array::from_raw(unsafe { ffi::mlxs_random_key(seed) })?))
    }

    /// Two independent keys derived from this one.
    pub fn split(&self) -> Result<(Key, Key)> {
        let mut keys = self.split_n(2)?.into_iter();
        let a = keys.next().expect("split_n(2) returns two keys");
        let b = keys.next().expect("split_n(2) returns two keys");
        Ok((a, b))
    }

    /// `n` independent keys derived from this one.
    pub fn split_n(&self, n: i32) -> Result<Vec<Key>> {
        let keys = Array::from_raw(unsafe { ffi::mlxs_random_split(self.0.as_ptr(), n) })?;
        (0..n)
            .map(|i| {
                let idx = Array::scalar(i)?;
                Ok(Key(keys.take(&idx, Some(0))?))
            })
            .collect()
    }

    pub fn as_array(&self) -> &Array {
        &self.0
    }
}

fn key_ptr(key: Option<&Key>) -> *const ffi::mlxs_array {
    key.map_or(std::ptr::null(), |k| k.0.as_ptr())
}

/// Seeds MLX's global key.
pub fn seed(seed: u64) {
    unsafe { ffi::mlxs_random_seed(seed) }
}

/// Samples of `N(loc, scale²)`.
pub fn normal(
    shape: &[i32],
    dtype: Dtype,
    loc: f32,
    scale: f32,
    key: Option<&Key>,
) -> Result<Array> {
    Array::from_raw(unsafe {
        ffi::mlxs_random_normal(
            shape.as_ptr(),
            shape.len(),
            dtype as i32,
            loc,
            scale,
            key_ptr(key),
        )
    })
}

/// Samples uniform in `[low, high)`.
pub fn uniform(
    low: f32,
    high: f32,
    shape: &[i32],
    dtype: Dtype,
    key: Option<&Key>,
) -> Result<Array> {
    let lo = Array::scalar(low)?;
    let hi = Array::scalar(high)?;
    Array::from_raw(unsafe {
        ffi::mlxs_random_uniform(
            lo.as_ptr(),
            hi.as_ptr(),
            shape.as_ptr(),
            shape.len(),
            dtype as i32,
            key_ptr(key),
        )
    })
}

/// Integers uniform in `[low, high)`.
pub fn randint(low: i32, high: i32, shape: &[i32], key: Option<&Key>) -> Result<Array> {
    let lo = Array::scalar(low)?;
    let hi = Array::scalar(high)?;
    Array::from_raw(unsafe {
        ffi::mlxs_random_randint(
            lo.as_ptr(),
            hi.as_ptr(),
            shape.as_ptr(),
            shape.len(),
            Dtype::Int32 as i32,
            key_ptr(key),
        )
    })
}

/// Booleans that are true with probability `p` (broadcast to `shape`).
pub fn bernoulli(p: &Array, shape: &[i32], key: Option<&Key>) -> Result<Array> {
    Array::from_raw(unsafe {
        ffi::mlxs_random_bernoulli(p.as_ptr(), shape.as_ptr(), shape.len(), key_ptr(key))
    })
}

/// Samples indices from the unnormalised log-probabilities `logits` along `axis`.
pub fn categorical(logits: &Array, axis: i32, key: Option<&Key>) -> Result<Array> {
    Array::from_raw(unsafe { ffi::mlxs_random_categorical(logits.as_ptr(), axis, 0, key_ptr(key)) })
}

/// `num_samples` draws per distribution from `logits` along `axis`.
pub fn categorical_n(
    logits: &Array,
    axis: i32,
    num_samples: i32,
    key: Option<&Key>,
) -> Result<Array> {
    Array::from_raw(unsafe {
        ffi::mlxs_random_categorical(logits.as_ptr(), axis, num_samples, key_ptr(key))
    })
}

/// Samples of the standard Gumbel distribution.
pub fn gumbel(shape: &[i32], dtype: Dtype, key: Option<&Key>) -> Result<Array> {
    Array::from_raw(unsafe {
        ffi::mlxs_random_gumbel(shape.as_ptr(), shape.len(), dtype as i32, key_ptr(key))
    })
}

/// A random permutation of `0..n`.
pub fn permutation(n: i32, key: Option<&Key>) -> Result<Array> {
    Array::from_raw(unsafe { ffi::mlxs_random_permutation(n, key_ptr(key)) })
}
