//! Greedy generation exactly as mlx-lm's `generate_step` runs it: the prompt except
//! its last token is prefilled into a fresh KV cache in chunks, then the last token
//! is run, then one token at a time is decoded (argmax of the log-probabilities of
//! the last position, in float32), each step evaluated before the next.

use mlx::{Array, Dtype};

use crate::models::{KvCache, LanguageModel};
use crate::weights::{ModelError, Result};

/// Prompt tokens run per forward pass while prefilling.
pub const DEFAULT_PREFILL_STEP: usize = 512;

fn tokens_array(ids: &[u32]) -> Result<Array> {
    let v: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
    Ok(Array::from_slice(&v, &[1, v.len() as i32])?)
}

/// Runs `ids` through the model into `cache`, in chunks of at most `step` tokens,
/// evaluating the cache after each chunk. Returns nothing: the logits are dropped.
pub fn prefill(
    model: &dyn LanguageModel,
    cache: &mut [KvCache],
    ids: &[u32],
    step: usize,
) -> Result<()> {
    for chunk in ids.chunks(step.max(1)) {
        model.forward(&tokens_array(chunk)?, cache)?;
        mlx::eval(cache.iter().flat_map(KvCache::state))?;
    }
    Ok(())
}

/// A greedy decoder: an iterator of generated token ids (it never stops on EOS by
/// itself; the caller checks stop tokens).
pub struct GreedyGenerator<'m> {
    model: &'m dyn LanguageModel,
    cache: Vec<KvCache>,
    next_input: u32,
    remaining: usize,
    last_logprobs: Option<Array>,
}

impl<'m> GreedyGenerator<'m> {
    /// Prefills `prompt[..len-1]` and prepares to generate up to `max_tokens` tokens.
    pub fn new(
        model: &'m dyn LanguageModel,
        prompt: &[u32],
        max_tokens: usize,
        prefill_step: usize,
    ) -> Result<GreedyGenerator<'m>> {
        let Some((&last, head)) = prompt.split_last() else {
            return Err(ModelError::Invalid("the prompt is empty".into()));
        };
        let mut cache = model.make_cache();
        prefill(model, &mut cache, head, prefill_step)?;
        Ok(GreedyGenerator {
            model,
            cache,
            next_input: last,
            remaining: max_tokens,
            last_logprobs: None,
        })
    }

    /// Log-probabilities `[V]` (float32) of the step that produced the last token.
    pub fn last_logprobs(&self) -> Option<&Array> {
        self.last_logprobs.as_ref()
    }

    pub fn cache(&self) -> &[KvCache] {
        &self.cache
    }

    /// Runs one step: returns the next token and the float32 logits `[V]` it came from.
    pub fn step(&mut self) -> Result<(u32, Array)> {
        let logits = self
            .model
            .forward(&tokens_array(&[self.next_input])?, &mut self.cache)?;
        let v = logits.dim(-1);
        let logits = logits
            .slice_axis(1, logits.dim(1) - 1, logits.dim(1))?
            .reshape(&[1, v])?
            .as_type(Dtype::Float32)?;
        let logprobs = logits.sub(&logits.logsumexp(-1, true)?)?;
        let token = logprobs.argmax(Some(-1), false)?;
        mlx::eval([&token, &logprobs, &logits])?;
        let token = token.as_type(Dtype::Int32)?.item::<i32>()? as u32;
        self.next_input = token;
        self.last_logprobs = Some(logprobs.reshape(&[v])?);
        Ok((token, logits.reshape(&[v])?))
    }
}

impl Iterator for GreedyGenerator<'_> {
    type Item = Result<u32>;

    fn next(&mut self) -> Option<Result<u32>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        match self.step() {
            Ok((t, _)) => Some(Ok(t)),
            Err(e) => {
                self.remaining = 0;
                Some(Err(e))
            }
        }
    }
}

/// Greedy tokens for `prompt`, `max_tokens` of them (EOS does not stop it).
pub fn generate_greedy(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_tokens: usize,
) -> Result<Vec<u32>> {
    GreedyGenerator::new(model, prompt, max_tokens, DEFAULT_PREFILL_STEP)?.collect()
}
