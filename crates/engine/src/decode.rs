//! The pieces of one decode step, defined once for the engine's only decode loop
//! ([`crate::batch`]): [`GenerateParams`], the per-row sampling (logits processors,
//! sampler, log-probabilities), prefill, [`StopMatcher`], the token events and the
//! finish figures.

use std::collections::BTreeMap;

use mlx::{Array, Dtype};
use serde::{Deserialize, Serialize};

use crate::models::{KvCache, LanguageModel};
use crate::sampling::{
    KeySequence, LogitsProcessors, ProcessorParams, Sampler, SamplerParams, SamplingError,
};
use crate::tokenizer::TokenizerError;
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

/// The per-sequence half of a decode step ([`crate::batch::decode_step`]): the
/// logits processors over the sequence's history, log-probabilities,
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
