//! Continuous batching, engine side: many independent sequences share decode
//! steps. Each [`Sequence`] owns its KV cache (one [`KvCache`] per layer), its
//! sampler, logits processors, key sequence and history; a [`decode_step`] runs
//! one forward pass over the batch (`[B, 1]`: projections and MLP batched,
//! RoPE and attention per row at the row's own offset — see
//! [`LanguageModel::forward_batch`]) and samples each row with its own
//! parameters. Rows never see each other, so a sequence decodes the same tokens
//! in any batch as alone.
//!
//! Per-sequence caches merged per step rather than mlx-lm's left-padded
//! `BatchKVCache`: joining and leaving cost nothing (no re-padding, no mask), a
//! prefix-cache hit is a cache clone, and per-row attention at B ≤ 8 is a small
//! share of a CPU step next to the batched matmuls.
//!
//! This is the engine's only decode loop: [`crate::generate::Generator`] (the command
//! line's `generate`) runs it with a batch of one, the hub's serving scheduler with
//! many. A batch of one runs the model's single-sequence forward pass, so one
//! sequence computes exactly what it computes alone.
//!
//! [`TextStream`] is the text half of mlx-lm's `stream_generate` for one
//! sequence (detokenizer, stop ids, stop strings), shared by the generator and the
//! hub's scheduler.

use std::time::Instant;

use mlx::Array;

use crate::decode::{
    FinishReason, Finished, GenerateError, GenerateParams, RowSampling, SampledToken, Step,
    StopMatcher, TokenEvent, prefill, sampling_state, tokens_array,
};
use crate::models::{KvCache, LanguageModel};
use crate::sampling::{KeySequence, LogitsProcessors, Sampler};
use crate::tokenizer::{StreamingDetokenizer, Tokenizer};

type GResult<T> = std::result::Result<T, GenerateError>;

/// One sequence of a batch: prefilled in chunks, then decoded a token per step.
pub struct Sequence {
    cache: Vec<KvCache>,
    prompt: Vec<u32>,
    /// Prompt positions already in the cache (the last prompt token is never
    /// prefilled: it is the input of the first decode step).
    prefilled: usize,
    cached_tokens: usize,
    sampler: Sampler,
    processors: LogitsProcessors,
    keys: Option<KeySequence>,
    history: Option<Array>,
    top_logprobs: usize,
    max_tokens: usize,
    /// Decode steps built (queued) so far.
    scheduled: usize,
    /// The input of the next step: the last sampled token (lazy), `None` before
    /// the first step.
    next_input: Option<Array>,
}

impl Sequence {
    /// Checks the prompt and the parameters. `reuse`: a cache holding the KV of
    /// `prompt[..n]` (e.g. from a prefix cache); `n` is capped at `len - 1`, the
    /// cache trimmed to it.
    pub fn new(
        model: &dyn LanguageModel,
        prompt: &[u32],
        params: &GenerateParams,
        reuse: Option<(Vec<KvCache>, usize)>,
    ) -> GResult<Sequence> {
        let (sampler, processors, keys) = sampling_state(model, prompt, params)?;
        let (cache, cached) = match reuse {
            Some((mut cache, n)) if n > 0 && cache.len() == model.make_cache().len() => {
                let n = n.min(prompt.len() - 1);
                for c in &mut cache {
                    let extra = c.offset() - n as i32;
                    c.trim(extra);
                }
                (cache, n)
            }
            _ => (model.make_cache(), 0),
        };
        Ok(Sequence {
            cache,
            prompt: prompt.to_vec(),
            prefilled: cached,
            cached_tokens: cached,
            sampler,
            processors,
            keys,
            history: None,
            top_logprobs: params.logprobs.unwrap_or(0),
            max_tokens: params.max_tokens,
            scheduled: 0,
            next_input: None,
        })
    }

    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    /// Prompt tokens whose KV came from a reused cache.
    pub fn cached_tokens(&self) -> usize {
        self.cached_tokens
    }

    /// Prompt tokens still to prefill.
    pub fn prefill_remaining(&self) -> usize {
        self.prompt.len() - 1 - self.prefilled
    }

    /// Whether another decode step may be queued (fewer than `max_tokens` are).
    pub fn wants_step(&self) -> bool {
        self.prefill_remaining() == 0 && self.scheduled < self.max_tokens
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The cache (one per layer) and how many positions it holds.
    pub fn cache(&self) -> &[KvCache] {
        &self.cache
    }

    /// Runs up to `chunk` more prompt tokens into the cache (evaluated); returns
    /// how many ran.
    pub fn prefill_chunk(&mut self, model: &dyn LanguageModel, chunk: usize) -> GResult<usize> {
        let head_len = self.prompt.len() - 1;
        let n = (head_len - self.prefilled).min(chunk.max(1));
        if n > 0 {
            let ids = &self.prompt[self.prefilled..self.prefilled + n];
            prefill(model, &mut self.cache, ids, n)?;
            self.prefilled += n;
        }
        Ok(n)
    }

    fn input(&mut self) -> GResult<Array> {
        if let Some(t) = self.next_input.take() {
            return Ok(t);
        }
        // the first step: seed the processors' history with the prompt's tail
        let (&last, head) = self.prompt.split_last().expect("checked non-empty");
        if !self.processors.is_empty() && !head.is_empty() {
            let context = self.processors.context_size().max(1);
            let tail = &head[head.len().saturating_sub(context)..];
            self.history = Some(tokens_array(tail)?.reshape(&[-1])?);
        }
        Ok(tokens_array(&[last])?.reshape(&[1])?)
    }
}

/// Evaluates caches (materialises lazy updates, so they stop holding graphs).
pub fn eval_caches(caches: &[KvCache]) -> GResult<()> {
    Ok(mlx::eval(caches.iter().flat_map(KvCache::state))?)
}

/// A queued decode step of a batch; [`PendingStep::read`] waits for it.
pub struct PendingStep {
    rows: Vec<Step>,
}

impl PendingStep {
    /// Rows in the order of the sequences given to [`decode_step`].
    pub fn read(self) -> GResult<Vec<SampledToken>> {
        self.rows.into_iter().map(Step::read).collect()
    }
}

/// Builds one decode step for every sequence (each must [`Sequence::wants_step`])
/// and queues it (`async_eval`): the caller reads the previous step back while
/// this one runs, as mlx-lm's `generate_step` does.
pub fn decode_step(model: &dyn LanguageModel, seqs: &mut [&mut Sequence]) -> GResult<PendingStep> {
    if seqs.is_empty() {
        return Ok(PendingStep { rows: Vec::new() });
    }
    if let Some(s) = seqs.iter().find(|s| !s.wants_step()) {
        return Err(GenerateError::Invalid(format!(
            "a sequence of {} prompt tokens is not ready for a decode step",
            s.prompt.len()
        )));
    }
    let inputs: Vec<Array> = seqs.iter_mut().map(|s| s.input()).collect::<GResult<_>>()?;
    let refs: Vec<&Array> = inputs.iter().collect();
    let b = seqs.len() as i32;
    let tokens = mlx::concatenate(&refs, 0)?.reshape(&[b, 1])?;
    let logits = match seqs {
        // alone, a sequence runs the single-sequence forward pass (bit for bit what
        // it computed before batching existed)
        [only] => model.forward(&tokens, &mut only.cache)?,
        _ => {
            let mut caches: Vec<&mut [KvCache]> =
                seqs.iter_mut().map(|s| s.cache.as_mut_slice()).collect();
            model.forward_batch(&tokens, &mut caches)?
        }
    };
    let v = logits.dim(-1);
    let mut rows = Vec::with_capacity(seqs.len());
    let mut to_eval = Vec::new();
    for (i, (seq, input)) in seqs.iter_mut().zip(&inputs).enumerate() {
        let i = i as i32;
        let row = logits.slice_axis(0, i, i + 1)?.reshape(&[1, v])?;
        let mut sampling = RowSampling {
            sampler: &seq.sampler,
            processors: &seq.processors,
            keys: seq.keys.as_mut(),
            history: &mut seq.history,
            top_logprobs: seq.top_logprobs,
        };
        let (step, eval) = sampling.sample(input, row)?;
        to_eval.extend(eval);
        seq.next_input = Some(step.token.reshape(&[1])?);
        seq.scheduled += 1;
        rows.push(step);
    }
    mlx::async_eval(&to_eval)?;
    Ok(PendingStep { rows })
}

/// What [`TextStream::push`] made of a token.
#[derive(Debug)]
pub enum TextEvent {
    Token(TokenEvent),
    Finished(Finished),
}

/// The text side of one sequence (mlx-lm's `stream_generate`): detokenizes,
/// ends on a stop id (not emitted), a stop string (cut) or `max_tokens`, and
/// counts the figures of [`Finished`].
pub struct TextStream {
    detokenizer: StreamingDetokenizer,
    stop_ids: Vec<u32>,
    stops: StopMatcher,
    max_tokens: usize,
    prompt_tokens: usize,
    generated: Vec<u32>,
    sampled: usize,
    started_at: Instant,
    first_token_at: Option<Instant>,
    prompt_tps: f64,
    stop_pending: bool,
    done: bool,
}

impl TextStream {
    /// `started_at`: when the request was admitted (for the prompt rate).
    pub fn new(
        tokenizer: &Tokenizer,
        params: &GenerateParams,
        prompt_tokens: usize,
        started_at: Instant,
    ) -> TextStream {
        TextStream {
            detokenizer: tokenizer.detokenizer(false),
            stop_ids: params
                .stop_token_ids
                .clone()
                .unwrap_or_else(|| tokenizer.eos_token_ids().to_vec()),
            stops: StopMatcher::new(&params.stop),
            max_tokens: params.max_tokens,
            prompt_tokens,
            generated: Vec::new(),
            sampled: 0,
            started_at,
            first_token_at: None,
            prompt_tps: 0.0,
            stop_pending: false,
            done: false,
        }
    }

    /// Generated ids so far (a stop token excluded).
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next sampled token: its token event, then (when it ends the
    /// sequence) the finish event.
    pub fn push(&mut self, tok: &SampledToken) -> GResult<Vec<TextEvent>> {
        let mut out = Vec::new();
        if self.done {
            return Ok(out);
        }
        self.sampled += 1;
        if self.first_token_at.is_none() {
            let now = Instant::now();
            let secs = now.duration_since(self.started_at).as_secs_f64().max(1e-9);
            self.prompt_tps = self.prompt_tokens as f64 / secs;
            self.first_token_at = Some(now);
        }
        if self.stop_ids.contains(&tok.id) {
            out.push(self.finish(FinishReason::Stop, Some(tok.id))?);
            return Ok(out);
        }
        self.generated.push(tok.id);
        let piece = self.detokenizer.add_token(tok.id)?.unwrap_or_default();
        let (text_delta, hit) = self.stops.push(&piece);
        if hit {
            self.stop_pending = true;
        }
        out.push(TextEvent::Token(TokenEvent {
            id: tok.id,
            text_delta,
            logprob: tok.logprob,
            top_logprobs: tok.top_logprobs.clone(),
        }));
        if self.stop_pending {
            out.push(self.finish(FinishReason::Stop, None)?);
        } else if self.sampled >= self.max_tokens {
            out.push(self.finish(FinishReason::Length, None)?);
        }
        Ok(out)
    }

    /// Restarts the prompt-rate clock (`started_at` of [`TextStream::new`]).
    pub fn restart_clock(&mut self, started_at: Instant) {
        self.started_at = started_at;
    }

    /// Ends the stream when no token is left to sample (`max_tokens` of 0).
    pub fn finish_length(&mut self) -> GResult<Finished> {
        match self.finish(FinishReason::Length, None)? {
            TextEvent::Finished(f) => Ok(f),
            TextEvent::Token(_) => unreachable!("finish returns Finished"),
        }
    }

    /// Ends the stream early (cancelled): the finish event.
    pub fn cancel(&mut self) -> GResult<Finished> {
        match self.finish(FinishReason::Cancelled, None)? {
            TextEvent::Finished(f) => Ok(f),
            TextEvent::Token(_) => unreachable!("finish returns Finished"),
        }
    }

    fn finish(&mut self, mut reason: FinishReason, stop_token: Option<u32>) -> GResult<TextEvent> {
        self.done = true;
        let mut text = String::new();
        if !self.stop_pending {
            if let Some(tail) = self.detokenizer.flush()? {
                let (out, hit) = self.stops.push(&tail);
                text.push_str(&out);
                if hit {
                    reason = FinishReason::Stop;
                }
            }
            if reason != FinishReason::Stop || stop_token.is_some() {
                text.push_str(&self.stops.finish());
            }
        }
        let generation_tps = match self.first_token_at {
            Some(t) if self.sampled > 0 => {
                self.sampled as f64 / t.elapsed().as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        };
        Ok(TextEvent::Finished(Finished {
            reason,
            text_delta: text,
            stop_token,
            prompt_tokens: self.prompt_tokens,
            generation_tokens: self.sampled,
            prompt_tps: self.prompt_tps,
            generation_tps,
            peak_memory: mlx::system::memory_stats().peak,
        }))
    }
}
