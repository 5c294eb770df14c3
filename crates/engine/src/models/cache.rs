//! The key/value cache of one attention layer, as mlx-lm's `KVCache`: keys and values
//! `[B, Hkv, S, D]` pre-allocated in steps of 256 positions and filled in place with
//! `slice_update`, so decoding does not reallocate per token.

use mlx::Array;

use crate::weights::Result;

#[derive(Debug, Default, Clone)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
}

impl KvCache {
    /// Positions are allocated in multiples of this.
    pub const STEP: i32 = 256;

    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Number of positions held.
    pub fn offset(&self) -> i32 {
        self.offset
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_none()
    }

    /// Appends `keys`/`values` `[B, Hkv, L, D]` and returns everything held so far.
    pub fn update_and_fetch(&mut self, keys: &Array, values: &Array) -> Result<(Array, Array)> {
        let prev = self.offset;
        let l = keys.dim(2);
        let capacity = self.keys.as_ref().map_or(0, |k| k.dim(2));
        if self.keys.is_none() || prev + l > capacity {
            let (ks, vs) = (keys.shape(), values.shape());
            let n = (Self::STEP + l - 1) / Self::STEP * Self::STEP;
            let new_k = mlx::zeros(&[ks[0], ks[1], n, ks[3]], keys.dtype())?;
            let new_v = mlx::zeros(&[vs[0], vs[1], n, vs[3]], values.dtype())?;
            match (self.keys.take(), self.values.take()) {
                (Some(mut k), Some(mut v)) => {
                    if prev % Self::STEP != 0 {
                        k = k.slice_axis(2, 0, prev)?;
                        v = v.slice_axis(2, 0, prev)?;
                    }
                    self.keys = Some(mlx::concatenate(&[&k, &new_k], 2)?);
                    self.values = Some(mlx::concatenate(&[&v, &new_v], 2)?);
                }
                _ => {
                    self.keys = Some(new_k);
                    self.values = Some(new_v);
                }
            }
        }
        self.offset += l;
        let k = self.keys.as_ref().expect("allocated above");
        let v = self.values.as_ref().expect("allocated above");
        let k = write(k, keys, prev, self.offset)?;
        let v = write(v, values, prev, self.offset)?;
        let out = if self.offset < k.dim(2) {
            (
                k.slice_axis(2, 0, self.offset)?,
                v.slice_axis(2, 0, self.offset)?,
            )
        } else {
            (k.clone(), v.clone())
        };
        self.keys = Some(k);
        self.values = Some(v);
        Ok(out)
    }

    /// The arrays to evaluate to materialise the cache (mlx-lm's `state`).
    pub fn state(&self) -> Vec<&Array> {
        self.keys.iter().chain(self.values.iter()).collect()
    }

    /// Forgets the last `n` positions (at most all of them); returns how many.
    pub fn trim(&mut self, n: i32) -> i32 {
        let n = n.min(self.offset).max(0);
        self.offset -= n;
        n
    }

    /// Bytes held by the pre-allocated buffers.
    pub fn nbytes(&self) -> usize {
        self.state().iter().map(|a| a.nbytes()).sum()
    }
}

fn write(buf: &Array, update: &Array, start: i32, stop: i32) -> Result<Array> {
    let s = buf.shape();
    Ok(buf.slice_update(
        update,
        &[0, 0, start, 0],
        &[s[0], s[1], stop, s[3]],
        &[1, 1, 1, 1],
    )?)
}
