//! Greedy generation exactly as mlx-lm's `generate_step` runs it: the prompt except
//! its last token is prefilled into a fresh KV cache in chunks, then the last token
//! is run, then one token at a time is decoded (argmax of the log-probabilities of
//! the last position, in float32), each step evaluated before the next.
//!
//! Sampled, streaming generation ([`Generator`], [`TokenGenerator`], [`generate`]) runs
//! mlx-lm's `generate_step`/`stream_generate`: the same prefill, logits processors and
//! sampler ([`crate::sampling`]), log-probabilities in the model's dtype, one step
//! queued ahead with `async_eval`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mlx::{Array, Dtype};
use serde::{Deserialize, Serialize};

use crate::models::{KvCache, LanguageModel};
use crate::sampling::{
    KeySequence, LogitsProcessors, ProcessorParams, Sampler, SamplerParams, SamplingError,
};
use crate::tokenizer::{StreamingDetokenizer, Tokenizer, TokenizerError};
use crate::weights::{ModelError, Result};

/// Prompt tokens run per forward pass while prefilling.
pub const DEFAULT_PREFILL_STEP: usize = 512;

pub(crate) fn tokens_array(ids: &[u32]) -> Result<Array> {
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

// ---------------------------------------------------------------------------------
// Sampled, streaming generation (mlx-lm's `generate_step` + `stream_generate`).
// ---------------------------------------------------------------------------------

/// mlx-lm's `generate_step` default prefill chunk.
pub const MLX_LM_PREFILL_STEP: usize = 2048;

/// Everything that steers one generation. Defaults are mlx-lm's (`temp` 0 = greedy,
/// penalty context 20, prefill step 2048, stop ids = the tokenizer's EOS ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub temp: f32,
    pub top_p: f32,
    pub top_k: usize,
    pub min_p: f32,
    pub min_tokens_to_keep: usize,
    pub repetition_penalty: Option<f32>,
    pub repetition_context_size: usize,
    pub presence_penalty: Option<f32>,
    pub presence_context_size: usize,
    pub frequency_penalty: Option<f32>,
    pub frequency_context_size: usize,
    pub logit_bias: BTreeMap<u32, f32>,
    /// Fixes the random draws; `None` picks a seed from the clock.
    pub seed: Option<u64>,
    /// Text that ends generation; it is never emitted.
    pub stop: Vec<String>,
    /// Ids that end generation (not emitted); `None` = the tokenizer's EOS ids.
    pub stop_token_ids: Option<Vec<u32>>,
    /// `Some(k)`: report each token's log-probability and the `k` most likely
    /// alternatives (the chosen token's log-probability is always reported).
    pub logprobs: Option<usize>,
    pub prefill_step: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        let s = SamplerParams::default();
        let p = ProcessorParams::default();
        GenerateParams {
            max_tokens: 256,
            temp: s.temp,
            top_p: s.top_p,
            top_k: s.top_k,
            min_p: s.min_p,
            min_tokens_to_keep: s.min_tokens_to_keep,
            repetition_penalty: p.repetition_penalty,
            repetition_context_size: p.repetition_context_size,
            presence_penalty: p.presence_penalty,
            presence_context_size: p.presence_context_size,
            frequency_penalty: p.frequency_penalty,
            frequency_context_size: p.frequency_context_size,
            logit_bias: p.logit_bias,
            seed: None,
            stop: Vec::new(),
            stop_token_ids: None,
            logprobs: None,
            prefill_step: MLX_LM_PREFILL_STEP,
        }
    }
}

impl GenerateParams {
    pub fn sampler_params(&self) -> SamplerParams {
        SamplerParams {
            temp: self.temp,
            top_p: self.top_p,
            min_p: self.min_p,
            min_tokens_to_keep: self.min_tokens_to_keep,
            top_k: self.top_k,
        }
    }

    pub fn processor_params(&self) -> ProcessorParams {
        ProcessorParams {
            logit_bias: self.logit_bias.clone(),
            repetition_penalty: self.repetition_penalty,
            repetition_context_size: self.repetition_context_size,
            presence_penalty: self.presence_penalty,
            presence_context_size: self.presence_context_size,
            frequency_penalty: self.frequency_penalty,
            frequency_context_size: self.frequency_context_size,
        }
    }
}

/// Errors of generation.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Mlx(#[from] mlx::Error),
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("{0}")]
    Invalid(String),
}

/// One sampled token, read back from the device.
#[derive(Debug)]
pub struct SampledToken {
    pub id: u32,
    /// Log-probability of `id` (after the logits processors, before the sampler's
    /// filters and temperature — what mlx-lm yields).
    pub logprob: f32,
    /// The most likely alternatives, most likely first (empty unless asked for).
    pub top_logprobs: Vec<(u32, f32)>,
    /// All log-probabilities `[V]`, in the model's dtype (evaluated).
    pub logprobs: Array,
}

/// One sampled position, still lazy (queued with `async_eval`).
pub(crate) struct Step {
    pub(crate) token: Array,
    logprobs: Array,
    token_logprob: Array,
    top: Option<(Array, Array)>,
}

impl Step {
    /// Reads the token (and its log-probabilities) back from the device.
    pub(crate) fn read(self) -> std::result::Result<SampledToken, GenerateError> {
        let id = self.token.item::<i32>()? as u32;
        let logprob = self.token_logprob.item::<f32>()?;
        let top_logprobs = match &self.top {
            Some((idx, vals)) => {
                let idx = idx.to_vec::<i32>()?;
                let vals = vals.to_vec::<f32>()?;
                let mut top: Vec<(u32, f32)> =
                    idx.into_iter().map(|i| i as u32).zip(vals).collect();
                top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                top
            }
            None => Vec::new(),
        };
        let v = self.logprobs.dim(-1);
        Ok(SampledToken {
            id,
            logprob,
            top_logprobs,
            logprobs: self.logprobs.reshape(&[v])?,
        })
    }
}

/// The per-sequence half of a step, shared by [`TokenGenerator`] and the batched
/// decoder: the logits processors over the sequence's history, log-probabilities,
/// the sampler with the sequence's own key, the reported log-probabilities.
pub(crate) struct RowSampling<'a> {
    pub(crate) sampler: &'a Sampler,
    pub(crate) processors: &'a LogitsProcessors,
    pub(crate) keys: Option<&'a mut KeySequence>,
    pub(crate) history: &'a mut Option<Array>,
    pub(crate) top_logprobs: usize,
}

impl RowSampling<'_> {
    /// `input` `[L]` int32: the tokens just run (they extend the history);
    /// `logits` `[1, V]` of the last position. Returns the step and what to evaluate.
    pub(crate) fn sample(
        &mut self,
        input: &Array,
        mut logits: Array,
    ) -> std::result::Result<(Step, Vec<Array>), GenerateError> {
        let v = logits.dim(-1);
        let mut to_eval = Vec::new();
        if !self.processors.is_empty() {
            let context = self.processors.context_size() as i32;
            let history = match self.history.take() {
                Some(h) => mlx::concatenate(&[&h, input], 0)?,
                None => input.clone(),
            };
            let n = history.dim(0);
            let history = if n > context {
                history.slice_axis(0, n - context, n)?
            } else {
                history
            };
            logits = self.processors.apply(&history, &logits)?;
            to_eval.push(history.clone());
            *self.history = Some(history);
        }
        let logprobs = logits.sub(&logits.logsumexp(-1, true)?)?;
        let key = match self.keys.as_mut() {
            Some(k) => Some(k.next()?),
            None => None,
        };
        let token = self
            .sampler
            .sample(&logprobs, key.as_ref())?
            .as_type(Dtype::Int32)?;
        let token_logprob = logprobs
            .take_along_axis(&token.reshape(&[1, 1])?, -1)?
            .as_type(Dtype::Float32)?;
        let top = if self.top_logprobs > 0 {
            let k = (self.top_logprobs as i32).min(v);
            let idx = logprobs
                .negative()?
                .argpartition(k - 1, -1)?
                .slice_axis(-1, 0, k)?;
            let vals = logprobs
                .take_along_axis(&idx, -1)?
                .as_type(Dtype::Float32)?;
            Some((idx.as_type(Dtype::Int32)?, vals))
        } else {
            None
        };
        to_eval.extend([token.clone(), logprobs.clone(), token_logprob.clone()]);
        if let Some((i, x)) = &top {
            to_eval.extend([i.clone(), x.clone()]);
        }
        Ok((
            Step {
                token,
                logprobs,
                token_logprob,
                top,
            },
            to_eval,
        ))
    }
}

/// Token-level generation, mlx-lm's `generate_step`: prefill `prompt[..n-1]` in chunks,
/// then one token per step, each step's graph built and started (`async_eval`) before
/// the previous token is read back, so the host overlaps the device.
///
/// MLX graphs must be evaluated on the thread that built them: build and drive a
/// generator on one thread (it is not `Send`); what it yields is plain data.
pub struct TokenGenerator<'m> {
    model: &'m dyn LanguageModel,
    cache: Vec<KvCache>,
    sampler: Sampler,
    processors: LogitsProcessors,
    keys: Option<KeySequence>,
    history: Option<Array>,
    prompt: Vec<u32>,
    prefill_step: usize,
    top_logprobs: usize,
    pending: Option<Step>,
    started: bool,
    produced: usize,
    max_tokens: usize,
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Checks a prompt and parameters against the model; the sampler, the logits
/// processors and the key sequence (`None` when greedy) of one generation.
pub(crate) fn sampling_state(
    model: &dyn LanguageModel,
    prompt: &[u32],
    params: &GenerateParams,
) -> std::result::Result<(Sampler, LogitsProcessors, Option<KeySequence>), GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::Invalid("the prompt is empty".into()));
    }
    let vocab = model.config().vocab_size;
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(GenerateError::Invalid(format!(
            "prompt token {bad} is outside the vocabulary (size {vocab})"
        )));
    }
    if let Some(&bad) = params.logit_bias.keys().find(|&&t| t as usize >= vocab) {
        return Err(GenerateError::Invalid(format!(
            "logit_bias token {bad} is outside the vocabulary (size {vocab})"
        )));
    }
    let sampler = Sampler::new(params.sampler_params())?;
    let processors = LogitsProcessors::new(params.processor_params())?;
    let keys = if sampler.params().is_greedy() {
        None
    } else {
        Some(KeySequence::new(params.seed.unwrap_or_else(clock_seed))?)
    };
    Ok((sampler, processors, keys))
}

impl<'m> TokenGenerator<'m> {
    /// Checks the parameters; nothing runs until the first [`TokenGenerator::next_token`].
    pub fn new(
        model: &'m dyn LanguageModel,
        prompt: &[u32],
        params: &GenerateParams,
    ) -> std::result::Result<TokenGenerator<'m>, GenerateError> {
        let (sampler, processors, keys) = sampling_state(model, prompt, params)?;
        Ok(TokenGenerator {
            model,
            cache: model.make_cache(),
            sampler,
            processors,
            keys,
            history: None,
            prompt: prompt.to_vec(),
            prefill_step: params.prefill_step.max(1),
            top_logprobs: params.logprobs.unwrap_or(0),
            pending: None,
            started: false,
            produced: 0,
            max_tokens: params.max_tokens,
        })
    }

    pub fn cache(&self) -> &[KvCache] {
        &self.cache
    }

    /// Tokens produced so far.
    pub fn produced(&self) -> usize {
        self.produced
    }

    fn step(&mut self, input: &Array) -> std::result::Result<Step, GenerateError> {
        let l = input.dim(0);
        let logits = self
            .model
            .forward(&input.reshape(&[1, l])?, &mut self.cache)?;
        let (s, v) = (logits.dim(1), logits.dim(-1));
        let logits = logits.slice_axis(1, s - 1, s)?.reshape(&[1, v])?;
        let mut rows = RowSampling {
            sampler: &self.sampler,
            processors: &self.processors,
            keys: self.keys.as_mut(),
            history: &mut self.history,
            top_logprobs: self.top_logprobs,
        };
        let (step, to_eval) = rows.sample(input, logits)?;
        mlx::async_eval(&to_eval)?;
        Ok(step)
    }

    fn start(&mut self) -> std::result::Result<(), GenerateError> {
        self.started = true;
        let (&last, head) = self.prompt.split_last().expect("checked non-empty");
        prefill(self.model, &mut self.cache, head, self.prefill_step)?;
        if !self.processors.is_empty() && !head.is_empty() {
            let context = self.processors.context_size().max(1);
            let tail = &head[head.len().saturating_sub(context)..];
            self.history = Some(tokens_array(tail)?.reshape(&[-1])?);
        }
        let step = self.step(&tokens_array(&[last])?.reshape(&[1])?)?;
        self.pending = Some(step);
        Ok(())
    }

    /// The next token, or `None` once `max_tokens` have been produced. Stop tokens do
    /// not stop it: the caller decides.
    pub fn next_token(&mut self) -> std::result::Result<Option<SampledToken>, GenerateError> {
        if self.produced >= self.max_tokens {
            return Ok(None);
        }
        if !self.started {
            self.start()?;
        }
        let cur = self.pending.take().expect("a step is always pending");
        self.produced += 1;
        if self.produced < self.max_tokens {
            // Queue the next step before reading this one back.
            let next = self.step(&cur.token)?;
            self.pending = Some(next);
        }
        Ok(Some(cur.read()?))
    }
}

/// Holds back streamed text that could be the start of a stop string, and cuts the
/// text at the first stop string (which is never emitted).
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds `piece`; returns the text safe to emit and whether a stop string was hit
    /// (then the returned text is everything before it, and the rest is dropped).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        if let Some(pos) = self.first_stop() {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self.partial_suffix_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// At the end of the stream: everything still held (it held no stop string).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    fn first_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.held.find(s)).min()
    }

    /// The longest suffix of the held text that is a proper prefix of a stop string.
    fn partial_suffix_len(&self) -> usize {
        let text = &self.held;
        for (i, _) in text.char_indices() {
            let suffix = &text[i..];
            if self
                .stops
                .iter()
                .any(|s| s.len() > suffix.len() && s.starts_with(suffix))
            {
                return suffix.len();
            }
        }
        0
    }
}

/// A generated token as the stream reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenEvent {
    pub id: u32,
    /// New text (complete UTF-8; may be empty while text is held back).
    pub text_delta: String,
    pub logprob: f32,
    pub top_logprobs: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// The end of a generation, with mlx-lm's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    pub reason: FinishReason,
    /// Text released at the end (held-back text, the detokenizer's tail).
    pub text_delta: String,
    /// The stop token that ended generation, if one did.
    pub stop_token: Option<u32>,
    pub prompt_tokens: usize,
    /// Tokens sampled, the stop token included (as mlx-lm counts).
    pub generation_tokens: usize,
    /// Prompt tokens over the time to the first token.
    pub prompt_tps: f64,
    /// Generated tokens over the time since the first token.
    pub generation_tps: f64,
    /// MLX's peak memory (bytes) since start or the last reset.
    pub peak_memory: usize,
}

impl Finished {
    pub fn peak_memory_gb(&self) -> f64 {
        self.peak_memory as f64 / 1e9
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GenerationEvent {
    Token(TokenEvent),
    Finished(Finished),
}

/// Text-level streaming generation (mlx-lm's `stream_generate`): an iterator of
/// [`GenerationEvent`]s, tokens then one `Finished`. Concatenating every `text_delta`
/// (the `Finished` one included) gives the decoded text, cut before a stop string.
///
/// Build and drive it on one thread (see [`TokenGenerator`]); send the events, which
/// are plain data, wherever they are needed.
pub struct Generator<'m> {
    tokens: TokenGenerator<'m>,
    detokenizer: StreamingDetokenizer,
    stop_ids: Vec<u32>,
    stops: StopMatcher,
    cancel: Option<Arc<AtomicBool>>,
    prompt_tokens: usize,
    generated: Vec<u32>,
    sampled: usize,
    started_at: Option<Instant>,
    first_token_at: Option<Instant>,
    prompt_tps: f64,
    stop_pending: bool,
    done: bool,
}

impl<'m> Generator<'m> {
    pub fn new(
        model: &'m dyn LanguageModel,
        tokenizer: &Tokenizer,
        prompt: &[u32],
        params: &GenerateParams,
    ) -> std::result::Result<Generator<'m>, GenerateError> {
        Ok(Generator {
            tokens: TokenGenerator::new(model, prompt, params)?,
            detokenizer: tokenizer.detokenizer(false),
            stop_ids: params
                .stop_token_ids
                .clone()
                .unwrap_or_else(|| tokenizer.eos_token_ids().to_vec()),
            stops: StopMatcher::new(&params.stop),
            cancel: None,
            prompt_tokens: prompt.len(),
            generated: Vec::new(),
            sampled: 0,
            started_at: None,
            first_token_at: None,
            prompt_tps: 0.0,
            stop_pending: false,
            done: false,
        })
    }

    /// Stops generation (reason `Cancelled`) at the next step once `flag` is set.
    pub fn with_cancel(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Generated ids so far (stop token excluded).
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    fn finish(
        &mut self,
        mut reason: FinishReason,
        stop_token: Option<u32>,
    ) -> std::result::Result<GenerationEvent, GenerateError> {
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
        let now = Instant::now();
        let generation_tps = match self.first_token_at {
            Some(t) if self.sampled > 0 => {
                self.sampled as f64 / now.duration_since(t).as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        };
        Ok(GenerationEvent::Finished(Finished {
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

    fn advance(&mut self) -> std::result::Result<GenerationEvent, GenerateError> {
        if self.stop_pending {
            return self.finish(FinishReason::Stop, None);
        }
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return self.finish(FinishReason::Cancelled, None);
        }
        let started_at = *self.started_at.get_or_insert_with(Instant::now);
        let Some(tok) = self.tokens.next_token()? else {
            return self.finish(FinishReason::Length, None);
        };
        self.sampled += 1;
        if self.first_token_at.is_none() {
            let now = Instant::now();
            let secs = now.duration_since(started_at).as_secs_f64().max(1e-9);
            self.prompt_tps = self.prompt_tokens as f64 / secs;
            self.first_token_at = Some(now);
        }
        if self.stop_ids.contains(&tok.id) {
            return self.finish(FinishReason::Stop, Some(tok.id));
        }
        self.generated.push(tok.id);
        let piece = self.detokenizer.add_token(tok.id)?.unwrap_or_default();
        let (text_delta, hit) = self.stops.push(&piece);
        if hit {
            self.stop_pending = true;
        }
        Ok(GenerationEvent::Token(TokenEvent {
            id: tok.id,
            text_delta,
            logprob: tok.logprob,
            top_logprobs: tok.top_logprobs,
        }))
    }
}

impl Iterator for Generator<'_> {
    type Item = std::result::Result<GenerationEvent, GenerateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let event = self.advance();
        if event.is_err() {
            self.done = true;
        }
        Some(event)
    }
}

/// The whole result of [`generate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationOutput {
    /// Generated ids (a stop token excluded).
    pub token_ids: Vec<u32>,
    pub text: String,
    pub tokens: Vec<TokenEvent>,
    pub finished: Finished,
}

/// Runs a [`Generator`] to the end and collects it.
pub fn generate(
    model: &dyn LanguageModel,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
) -> std::result::Result<GenerationOutput, GenerateError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    for event in Generator::new(model, tokenizer, prompt, params)? {
        match event? {
            GenerationEvent::Token(t) => {
                text.push_str(&t.text_delta);
                tokens.push(t);
            }
            GenerationEvent::Finished(f) => {
                text.push_str(&f.text_delta);
                return Ok(GenerationOutput {
                    token_ids: tokens.iter().map(|t| t.id).collect(),
                    text,
                    tokens,
                    finished: f,
                });
            }
        }
    }
    Err(GenerateError::Invalid(
        "generation ended without a Finished event".into(),
    ))
}
