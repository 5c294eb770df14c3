//! The key/value cache of one attention layer, as mlx-lm's `KVCache`: keys and values
//! `[B, Hkv, S, D]` pre-allocated in steps of 256 positions and filled in place with
//! `slice_update`, so decoding does not reallocate per token. The fused decode path
//! ([`mlx::quantization::decode_layer`]) writes its one position into the buffers in place.

use std::sync::Arc;

use mlx::{Array, Dtype};

use crate::weights::Result;

#[derive(Debug, Default, Clone)]
pub struct KvCache {
    keys: Option<Array>,
    values: Option<Array>,
    offset: i32,
    /// Shared by the clones of this cache that share its buffers (a prefix cache keeps
    /// clones): a fused decode step writes in place only when no clone exists.
    owner: Arc<()>,
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
        let (ks, vs) = (keys.shape(), values.shape());
        self.reserve(l, [ks[0], ks[1], ks[3]], vs[3], keys.dtype())?;
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
        // slice_update never writes into a buffer another array still reads: ours are ours.
        self.owner = Arc::new(());
        Ok(out)
    }

    /// Makes room for `l` more positions: `[b, hkv, _, d]` keys, `[b, hkv, _, dv]` values.
    fn reserve(&mut self, l: i32, [b, hkv, d]: [i32; 3], dv: i32, dtype: Dtype) -> Result<()> {
        let prev = self.offset;
        let capacity = self.keys.as_ref().map_or(0, |k| k.dim(2));
        if self.keys.is_some() && prev + l <= capacity {
            return Ok(());
        }
        let n = (Self::STEP + l - 1) / Self::STEP * Self::STEP;
        let new_k = mlx::zeros(&[b, hkv, n, d], dtype)?;
        let new_v = mlx::zeros(&[b, hkv, n, dv], dtype)?;
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
        // Fresh buffers, shared with no clone.
        self.owner = Arc::new(());
        Ok(())
    }

    /// The dtype of the held keys (`None` while empty).
    pub fn dtype(&self) -> Option<Dtype> {
        self.keys.as_ref().map(Array::dtype)
    }

    /// For a fused decode step of one sequence: room for one more position in float32
    /// buffers `[1, kv_heads, _, head_dim]`; returns the buffers, the position to write
    /// and whether they may be shared with a clone (then the step must copy them).
    /// Hand the step's buffers back with [`KvCache::commit_one`].
    pub fn reserve_one(
        &mut self,
        kv_heads: i32,
        head_dim: i32,
    ) -> Result<(Array, Array, i32, bool)> {
        self.reserve(1, [1, kv_heads, head_dim], head_dim, Dtype::Float32)?;
        let k = self.keys.clone().expect("reserved above");
        let v = self.values.clone().expect("reserved above");
        Ok((k, v, self.offset, Arc::strong_count(&self.owner) > 1))
    }

    /// Takes the buffers a fused decode step returned (one position written).
    pub fn commit_one(&mut self, keys: Array, values: Array) {
        self.keys = Some(keys);
        self.values = Some(values);
        self.offset += 1;
        self.owner = Arc::new(());
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
