//! Generation, mlx-lm's `generate_step` + `stream_generate`. There is one decode loop,
//! the continuous-batching one of [`crate::batch`] (a [`crate::batch::Sequence`] per
//! sequence, [`crate::batch::decode_step`] per step); [`Generator`] is that loop with a
//! batch of one, streaming text events, as the command line's `generate` runs it. The
//! pieces of a step live here once: [`GenerateParams`], the per-row sampling (logits
//! processors, sampler, log-probabilities), [`StopMatcher`] and the finish figures; the
//! text side of a sequence (streaming detokenizer, stop ids and strings) is
//! [`crate::batch::TextStream`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mlx::{Array, Dtype};
use serde::{Deserialize, Serialize};

use crate::batch::{PendingStep, Sequence, TextEvent, TextStream, decode_step};
use crate::models::LanguageModel;
use crate::tokenizer::Tokenizer;
use crate::weights::{ModelError, Result};

use crate::decode::tokens_array;
pub use crate::decode::{
    DEFAULT_PREFILL_STEP, FinishReason, Finished, GenerateError, GenerateParams, GenerationEvent,
    MLX_LM_PREFILL_STEP, SampledToken, StopMatcher, TokenEvent, prefill,
};

/// Text-level streaming generation (mlx-lm's `stream_generate`): an iterator of
/// [`GenerationEvent`]s, tokens then one `Finished`. Concatenating every `text_delta`
/// (the `Finished` one included) gives the decoded text, cut before a stop string.
///
/// It is the batched decode loop with a batch of one: the prompt is prefilled in chunks
/// of `prefill_step`, then each step is queued (`async_eval`) before the previous
/// token is read back, so the host overlaps the device.
///
/// MLX graphs must be evaluated on the thread that built them: build and drive a
/// generator on one thread (it is not `Send`); send the events, which are plain data,
/// wherever they are needed.
pub struct Generator<'m> {
    model: &'m dyn LanguageModel,
    sequence: Sequence,
    text: TextStream,
    prefill_step: usize,
    cancel: Option<Arc<AtomicBool>>,
    started: bool,
    pending: Option<PendingStep>,
    /// Events made but not yet yielded (a token and the finish it caused).
    queued: VecDeque<GenerationEvent>,
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
            model,
            sequence: Sequence::new(model, prompt, params, None)?,
            text: TextStream::new(tokenizer, params, prompt.len(), Instant::now()),
            prefill_step: params.prefill_step.max(1),
            cancel: None,
            started: false,
            pending: None,
            queued: VecDeque::new(),
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
        self.text.generated()
    }

    /// Queues the next decode step when the sequence wants one.
    fn queue_step(&mut self) -> std::result::Result<(), GenerateError> {
        if self.sequence.wants_step() {
            self.pending = Some(decode_step(self.model, &mut [&mut self.sequence])?);
        }
        Ok(())
    }

    fn advance(&mut self) -> std::result::Result<(), GenerateError> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            let finished = self.text.cancel()?;
            self.queued.push_back(GenerationEvent::Finished(finished));
            return Ok(());
        }
        if !self.started {
            // the prompt rate counts from the first request for a token
            self.started = true;
            self.text.restart_clock(Instant::now());
            while self.sequence.max_tokens() > 0 && self.sequence.prefill_remaining() > 0 {
                self.sequence.prefill_chunk(self.model, self.prefill_step)?;
            }
            self.queue_step()?;
        }
        let Some(current) = self.pending.take() else {
            let finished = self.text.finish_length()?;
            self.queued.push_back(GenerationEvent::Finished(finished));
            return Ok(());
        };
        // Queue the next step before reading this one back.
        self.queue_step()?;
        for token in current.read()? {
            for event in self.text.push(&token)? {
                self.queued.push_back(match event {
                    TextEvent::Token(t) => GenerationEvent::Token(t),
                    TextEvent::Finished(f) => GenerationEvent::Finished(f),
                });
            }
        }
        Ok(())
    }
}

impl Iterator for Generator<'_> {
    type Item = std::result::Result<GenerationEvent, GenerateError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                if matches!(event, GenerationEvent::Finished(_)) {
                    self.done = true;
                    self.queued.clear();
                }
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.advance() {
                self.done = true;
                return Some(Err(e));
            }
        }
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

/// Runs one sequence of the decode loop for `params.max_tokens` steps, token level:
/// stop tokens and strings do not end it. Every sampled token, in order.
pub fn decode_tokens(
    model: &dyn LanguageModel,
    prompt: &[u32],
    params: &GenerateParams,
) -> std::result::Result<Vec<SampledToken>, GenerateError> {
    let mut sequence = Sequence::new(model, prompt, params, None)?;
    while sequence.prefill_remaining() > 0 {
        sequence.prefill_chunk(model, params.prefill_step.max(1))?;
    }
    let mut out = Vec::with_capacity(params.max_tokens);
    let mut pending = None;
    loop {
        let next = if sequence.wants_step() {
            Some(decode_step(model, &mut [&mut sequence])?)
        } else {
            None
        };
        if let Some(current) = pending.take() {
            out.extend(PendingStep::read(current)?);
        }
        match next {
            Some(n) => pending = Some(n),
            None => return Ok(out),
        }
    }
}

/// Greedy tokens for `prompt`, `max_tokens` of them (EOS does not stop it), the
/// prompt prefilled in chunks of `prefill_step`.
pub fn greedy_tokens(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_tokens: usize,
    prefill_step: usize,
) -> std::result::Result<Vec<u32>, GenerateError> {
    let params = GenerateParams {
        max_tokens,
        prefill_step,
        ..GenerateParams::default()
    };
    Ok(decode_tokens(model, prompt, &params)?
        .into_iter()
        .map(|t| t.id)
        .collect())
}

/// Greedy tokens for `prompt`, `max_tokens` of them (EOS does not stop it).
pub fn generate_greedy(
    model: &dyn LanguageModel,
    prompt: &[u32],
    max_tokens: usize,
) -> std::result::Result<Vec<u32>, GenerateError> {
    greedy_tokens(model, prompt, max_tokens, DEFAULT_PREFILL_STEP)
}

/// The float32 logits `[V]` of the first generated position: `prompt[..n-1]`
/// prefilled in chunks of `prefill_step` into a fresh cache, then the last token run
/// (what the decode loop's first step samples from, before any logits processor).
pub fn first_step_logits(
    model: &dyn LanguageModel,
    prompt: &[u32],
    prefill_step: usize,
) -> Result<Array> {
    let Some((&last, head)) = prompt.split_last() else {
        return Err(ModelError::Invalid("the prompt is empty".into()));
    };
    let mut cache = model.make_cache();
    prefill(model, &mut cache, head, prefill_step)?;
    let logits = model.forward(&tokens_array(&[last])?, &mut cache)?;
    let v = logits.dim(-1);
    let logits = logits.reshape(&[v])?.as_type(Dtype::Float32)?;
    mlx::eval([&logits])?;
    Ok(logits)
}
