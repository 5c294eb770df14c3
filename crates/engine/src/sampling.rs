//! Sampling and logits processing exactly as mlx-lm's `sample_utils.py` does it
//! (`make_sampler`, `make_logits_processors`, mlx-lm 0.32).
//!
//! - Logits processors run on the raw logits of the last position, in this order:
//!   logit bias, repetition penalty, presence penalty, frequency penalty. Each
//!   penalty looks at the last `context_size` tokens of the history (prompt +
//!   generated so far).
//! - The sampler then takes the log-probabilities (`logits - logsumexp(logits)`):
//!   `temp == 0` is argmax; otherwise top-p, then min-p, then top-k filter
//!   (filtered tokens become `-inf`), then a categorical draw from
//!   `logprobs * (1 / temp)`.
//!
//! Everything stays lazy (MLX graphs); randomness comes from explicit [`Key`]s, so a
//! seed fixes the draws. [`KeySequence`] advances a key exactly as MLX's global
//! random state does (`split`, keep the first, use the second), so with the same seed
//! the draws are the ones `mx.random.seed(seed)` gives mlx-lm.

use std::collections::BTreeMap;

use mlx::random::Key;
use mlx::{Array, Dtype};

/// Errors of sampling: bad parameters or an MLX failure.
#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("invalid sampling parameter: {0}")]
    Invalid(String),
    #[error(transparent)]
    Mlx(#[from] mlx::Error),
}

pub type Result<T> = std::result::Result<T, SamplingError>;

/// How the next token is picked from the log-probabilities (mlx-lm's `make_sampler`).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerParams {
    /// 0 means argmax.
    pub temp: f32,
    /// Nucleus sampling; off unless `0 < top_p < 1`.
    pub top_p: f32,
    /// Keep tokens with `p >= min_p * p_max`; off when 0.
    pub min_p: f32,
    /// Tokens that min-p never removes (the most likely ones).
    pub min_tokens_to_keep: usize,
    /// Keep only the `top_k` most likely tokens; off when 0 (or `>=` the vocabulary).
    pub top_k: usize,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temp: 0.0,
            top_p: 0.0,
            min_p: 0.0,
            min_tokens_to_keep: 1,
            top_k: 0,
        }
    }
}

impl SamplerParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temp.is_finite() && self.temp >= 0.0) {
            return Err(SamplingError::Invalid(format!(
                "temp must be a finite number >= 0, got {}",
                self.temp
            )));
        }
        if !(0.0..=1.0).contains(&self.top_p) {
            return Err(SamplingError::Invalid(format!(
                "top_p must be in [0, 1], got {}",
                self.top_p
            )));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(SamplingError::Invalid(format!(
                "min_p must be in [0, 1], got {}",
                self.min_p
            )));
        }
        if self.min_tokens_to_keep < 1 {
            return Err(SamplingError::Invalid(
                "min_tokens_to_keep must be at least 1".into(),
            ));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temp == 0.0
    }
}

fn neg_inf(like: &Array) -> Result<Array> {
    Ok(Array::scalar_as(f64::NEG_INFINITY, like.dtype())?)
}

/// mlx-lm's `apply_top_p`: drops the least likely tokens while the more likely ones
/// still hold at least `top_p` of the mass. `logprobs` is `[..., V]`.
pub fn apply_top_p(logprobs: &Array, top_p: f32) -> Result<Array> {
    let sorted = logprobs.sort(-1)?;
    let sorted_probs = sorted.as_type(Dtype::Float32)?.exp()?;
    let mass_above = sorted_probs.cumsum(-1, true, false)?;
    let total = mass_above
        .slice_axis(-1, 0, 1)?
        .add(&sorted_probs.slice_axis(-1, 0, 1)?)?;
    let num_dropped = mass_above
        .greater_equal(&total.mul(top_p)?)?
        .as_type(Dtype::Int32)?
        .sum(vec![-1], true)?;
    let threshold = sorted.take_along_axis(&num_dropped, -1)?;
    Ok(mlx::where_(
        &logprobs.less(&threshold)?,
        &neg_inf(logprobs)?,
        logprobs,
    )?)
}

/// mlx-lm's `apply_min_p`: drops tokens with `p < min_p * p_max`, keeping at least the
/// `min_tokens_to_keep` most likely.
pub fn apply_min_p(logprobs: &Array, min_p: f32, min_tokens_to_keep: usize) -> Result<Array> {
    let top = logprobs.max(vec![-1], true)?;
    let scaled = top.add((min_p as f64).ln())?;
    let mut remove = logprobs.less(&scaled)?;
    let v = logprobs.dim(-1);
    if min_tokens_to_keep > 1 {
        let k = (min_tokens_to_keep as i32).min(v);
        let idx = logprobs.argpartition(v - k, -1)?.slice_axis(-1, v - k, v)?;
        remove = remove.put_along_axis(&idx, &Array::scalar(false)?, -1)?;
    }
    Ok(mlx::where_(&remove, &neg_inf(logprobs)?, logprobs)?)
}

/// mlx-lm's `apply_top_k`: keeps the `top_k` most likely tokens (no-op when `top_k`
/// is 0 or at least the vocabulary size).
pub fn apply_top_k(logprobs: &Array, top_k: usize) -> Result<Array> {
    let v = logprobs.dim(-1);
    if top_k == 0 || top_k >= v as usize {
        return Ok(logprobs.clone());
    }
    let k = top_k as i32;
    let mask_idx = logprobs
        .negative()?
        .argpartition(k - 1, -1)?
        .slice_axis(-1, k, v)?;
    Ok(logprobs.put_along_axis(&mask_idx, &neg_inf(logprobs)?, -1)?)
}

/// mlx-lm's `categorical_sampling`: a draw from `logprobs * (1 / temp)`.
pub fn categorical_sampling(logprobs: &Array, temp: f32, key: Option<&Key>) -> Result<Array> {
    let scaled = logprobs.mul(1.0f32 / temp)?;
    Ok(mlx::random::categorical(&scaled, -1, key)?)
}

/// The token sampler: `[..., V]` log-probabilities → `[...]` token ids (uint32).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplerParams,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Result<Sampler> {
        params.validate()?;
        Ok(Sampler { params })
    }

    pub fn params(&self) -> &SamplerParams {
        &self.params
    }

    /// The filters of mlx-lm's chain (top-p, min-p, top-k), without the draw.
    pub fn filter(&self, logprobs: &Array) -> Result<Array> {
        let p = &self.params;
        let mut lp = logprobs.clone();
        if 0.0 < p.top_p && p.top_p < 1.0 {
            lp = apply_top_p(&lp, p.top_p)?;
        }
        if p.min_p != 0.0 {
            lp = apply_min_p(&lp, p.min_p, p.min_tokens_to_keep)?;
        }
        if p.top_k > 0 {
            lp = apply_top_k(&lp, p.top_k)?;
        }
        Ok(lp)
    }

    /// Picks tokens. `key` is used only when `temp > 0` (`None`: MLX's global key).
    pub fn sample(&self, logprobs: &Array, key: Option<&Key>) -> Result<Array> {
        if self.params.is_greedy() {
            return Ok(logprobs.argmax(Some(-1), false)?);
        }
        categorical_sampling(&self.filter(logprobs)?, self.params.temp, key)
    }
}

/// A stream of keys from one seed, advanced as MLX's global random state is.
#[derive(Debug, Clone)]
pub struct KeySequence {
    key: Key,
}

impl KeySequence {
    pub fn new(seed: u64) -> Result<KeySequence> {
        Ok(KeySequence {
            key: Key::new(seed)?,
        })
    }

    /// The next key (lazy; nothing is evaluated).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Key> {
        let (keep, out) = self.key.split()?;
        self.key = keep;
        Ok(out)
    }
}

/// What mlx-lm's `make_logits_processors` configures.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorParams {
    /// Added to the logits of the given tokens.
    pub logit_bias: BTreeMap<u32, f32>,
    /// Sign-aware multiplicative penalty (`l < 0 ? l * p : l / p`); off when `None` or 0.
    pub repetition_penalty: Option<f32>,
    pub repetition_context_size: usize,
    /// Subtracted once from each token present in the context; off when `None` or 0.
    pub presence_penalty: Option<f32>,
    pub presence_context_size: usize,
    /// Subtracted once per occurrence in the context; off when `None` or 0.
    pub frequency_penalty: Option<f32>,
    pub frequency_context_size: usize,
}

impl Default for ProcessorParams {
    fn default() -> Self {
        ProcessorParams {
            logit_bias: BTreeMap::new(),
            repetition_penalty: None,
            repetition_context_size: 20,
            presence_penalty: None,
            presence_context_size: 20,
            frequency_penalty: None,
            frequency_context_size: 20,
        }
    }
}

fn active(p: Option<f32>) -> Option<f32> {
    p.filter(|&v| v != 0.0)
}

/// The logits processors: `(history, logits [1, V]) → logits [1, V]`.
#[derive(Debug, Clone)]
pub struct LogitsProcessors {
    params: ProcessorParams,
}

impl LogitsProcessors {
    pub fn new(params: ProcessorParams) -> Result<LogitsProcessors> {
        if let Some(p) = params.repetition_penalty
            && !(p.is_finite() && p >= 0.0)
        {
            return Err(SamplingError::Invalid(format!(
                "repetition_penalty must be a non-negative number, got {p}"
            )));
        }
        for (name, p) in [
            ("presence_penalty", params.presence_penalty),
            ("frequency_penalty", params.frequency_penalty),
        ] {
            if let Some(p) = p
                && !p.is_finite()
            {
                return Err(SamplingError::Invalid(format!(
                    "{name} must be finite, got {p}"
                )));
            }
        }
        if params.logit_bias.values().any(|b| b.is_nan()) {
            return Err(SamplingError::Invalid("logit_bias holds NaN".into()));
        }
        Ok(LogitsProcessors { params })
    }

    pub fn params(&self) -> &ProcessorParams {
        &self.params
    }

    /// Whether any processor is configured (mlx-lm then keeps no history at all).
    pub fn is_empty(&self) -> bool {
        let p = &self.params;
        p.logit_bias.is_empty()
            && active(p.repetition_penalty).is_none()
            && active(p.presence_penalty).is_none()
            && active(p.frequency_penalty).is_none()
    }

    /// How many trailing history tokens the processors look at.
    pub fn context_size(&self) -> usize {
        let p = &self.params;
        [
            active(p.repetition_penalty).map(|_| p.repetition_context_size),
            active(p.presence_penalty).map(|_| p.presence_context_size),
            active(p.frequency_penalty).map(|_| p.frequency_context_size),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
    }

    /// Applies every processor in mlx-lm's order. `history` is int32 `[n]` (prompt and
    /// generated tokens; only its last `context_size()` matter), `logits` `[1, V]`.
    pub fn apply(&self, history: &Array, logits: &Array) -> Result<Array> {
        let p = &self.params;
        let mut logits = logits.clone();
        if !p.logit_bias.is_empty() {
            let ids: Vec<i32> = p.logit_bias.keys().map(|&t| t as i32).collect();
            let vals: Vec<f32> = p.logit_bias.values().copied().collect();
            let n = ids.len() as i32;
            let idx = Array::from_slice(&ids, &[1, n])?;
            let vals = Array::from_slice(&vals, &[1, n])?.as_type(logits.dtype())?;
            logits = logits.scatter_add_axis(&idx, &vals, 1)?;
        }
        let n = history.dim(0);
        if n == 0 {
            return Ok(logits);
        }
        let tail = |size: usize| -> Result<Array> {
            let size = (size as i32).min(n);
            Ok(history.slice_axis(0, n - size, n)?.reshape(&[1, -1])?)
        };
        if let Some(penalty) = active(p.repetition_penalty) {
            let idx = tail(p.repetition_context_size)?;
            let sel = logits.take_along_axis(&idx, 1)?;
            let sel = mlx::where_(&sel.less(0.0f32)?, &sel.mul(penalty)?, &sel.div(penalty)?)?;
            logits = logits.put_along_axis(&idx, &sel, 1)?;
        }
        if let Some(penalty) = active(p.presence_penalty) {
            let idx = tail(p.presence_context_size)?;
            let sel = logits.take_along_axis(&idx, 1)?.sub(penalty)?;
            logits = logits.put_along_axis(&idx, &sel, 1)?;
        }
        if let Some(penalty) = active(p.frequency_penalty) {
            let idx = tail(p.frequency_context_size)?;
            let vals = mlx::full(&idx.shape(), &Array::scalar(-penalty)?, logits.dtype())?;
            logits = logits.scatter_add_axis(&idx, &vals, 1)?;
        }
        Ok(logits)
    }
}
