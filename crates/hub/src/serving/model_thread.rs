//! A model thread: one OS thread that loads a model and its tokenizer and
//! serves the model's request queue for its whole life (MLX graphs must be
//! evaluated on the thread that built them, and the weights load lazily).
//!
//! Scheduling: continuous batching. A [`Job`] carries its prompt, parameters,
//! cancel flag and an event channel; the worker answers with
//! [`Event::Started`] (or [`Event::Error`]), then [`Event::Token`]s, then
//! [`Event::Finished`]. Each loop iteration the worker
//! 1. admits waiting jobs while fewer than `max_running` are in flight (the
//!    prompt is encoded, the prefix cache consulted, parameters checked);
//! 2. prefills one chunk (`prefill_chunk` tokens) of the oldest admitted
//!    prompt, so a long prompt never stalls running streams for long;
//! 3. queues one decode step over every decoding sequence (`[B, 1]`, see
//!    [`engine::batch`]) and, while it runs, reads the previous step back and
//!    sends each sequence's token;
//! 4. retires the finished and the cancelled (a cancel flag or a closed event
//!    channel), whose caches go to the prefix cache or are freed.
//!
//! The waiting queue is the bounded channel in front of the worker: jobs stay
//! there until admitted, and a full channel is a 503.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine::batch::{PendingStep, Sequence, TextEvent, TextStream, decode_step};
use engine::generate::{FinishReason, Finished, GenerateError, GenerateParams};
use engine::models::LanguageModel;
use engine::tokenizer::{Tokenizer, TokenizerError};
use tokio::sync::mpsc::UnboundedSender;

use super::KeepAlive;
use super::metrics::ServingMetrics;
use super::prefix_cache::PrefixCache;
use crate::error::HubError;

/// What to generate from.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// Chat messages, rendered with the model's chat template.
    Chat(Vec<serde_json::Value>),
    /// Text, encoded with the tokenizer's special tokens (e.g. a bos).
    Text(String),
    /// Token ids as given.
    Tokens(Vec<u32>),
}

/// One request for a worker.
pub struct Job {
    pub prompt: Prompt,
    pub params: GenerateParams,
    /// Decode each token's own text (and its alternatives') for logprobs.
    pub token_texts: bool,
    pub cancel: Arc<AtomicBool>,
    pub events: UnboundedSender<Event>,
    /// When the request was queued (queue time, end-to-end latency).
    pub queued_at: Instant,
    /// The generation's `generate` span (a child of its request's span):
    /// the worker records the token counts, TTFT and finish reason on it,
    /// and it ends when the generation does. See [`generate_span`].
    pub span: tracing::Span,
}

/// The span of one generation, in the current (request's) span: its
/// token counts, queue time, TTFT and finish reason are recorded by the
/// worker thread.
pub fn generate_span(model: &str) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        "generate",
        model,
        prompt_tokens = Empty,
        cached_tokens = Empty,
        generated_tokens = Empty,
        queue_seconds = Empty,
        ttft_seconds = Empty,
        finish_reason = Empty,
        otel.status_code = Empty,
        error = Empty,
    )
}

/// One generated token.
#[derive(Debug, Clone)]
pub struct TokenOut {
    pub id: u32,
    /// New text (may be empty while text is held back).
    pub text: String,
    pub logprob: f32,
    /// The token's own text (when asked for).
    pub token_text: Option<String>,
    /// Alternatives: id, text (when asked for), log-probability.
    pub top: Vec<(u32, Option<String>, f32)>,
}

/// What a worker reports about a job.
#[derive(Debug)]
pub enum Event {
    /// The prompt is encoded and the parameters are accepted.
    Started {
        prompt_ids: Vec<u32>,
        /// Prompt tokens whose KV came from the prefix cache.
        cached_tokens: usize,
    },
    Token(TokenOut),
    Finished(Finished),
    Error(HubError),
}

pub(crate) enum SendError {
    Full,
    Gone,
}

/// The handle of a worker thread. The thread ends once every handle is dropped
/// and its queue is drained.
pub(crate) struct ModelThread {
    label: String,
    version_id: i64,
    tx: SyncSender<Job>,
    queue_capacity: usize,
    active: Arc<AtomicUsize>,
    last_used: Arc<Mutex<Instant>>,
    keep_alive: Mutex<KeepAlive>,
}

impl ModelThread {
    /// Starts the thread and waits until the model and tokenizer are loaded.
    /// The thread loads inside `load_span` (the pool's `model.load`).
    pub(crate) async fn spawn(
        label: String,
        version_id: i64,
        dir: PathBuf,
        settings: ModelThreadSettings,
        keep_alive: KeepAlive,
        load_span: tracing::Span,
    ) -> Result<Arc<ModelThread>, HubError> {
        let queue_capacity = settings.queue_capacity;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue_capacity);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let active = Arc::new(AtomicUsize::new(0));
        let last_used = Arc::new(Mutex::new(Instant::now()));
        let (a, l, name) = (active.clone(), last_used.clone(), label.clone());
        std::thread::Builder::new()
            .name(format!("model-{version_id}"))
            .spawn(move || run(name, dir, rx, ready_tx, a, l, settings, load_span))
            .map_err(|e| HubError::Internal(format!("cannot start a model worker: {e}")))?;
        ready_rx.await.map_err(|_| {
            HubError::Internal(format!("the worker of {label} died while loading"))
        })??;
        Ok(Arc::new(ModelThread {
            label,
            version_id,
            tx,
            queue_capacity,
            active,
            last_used,
            keep_alive: Mutex::new(keep_alive),
        }))
    }

    pub(crate) fn version_id(&self) -> i64 {
        self.version_id
    }

    pub(crate) fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// Running plus waiting (and reserved) requests.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub(crate) fn acquire(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.touch();
    }

    pub(crate) fn release(&self) {
        self.touch();
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    fn touch(&self) {
        *self.last_used.lock().expect("lock") = Instant::now();
    }

    pub(crate) fn last_used(&self) -> Instant {
        *self.last_used.lock().expect("lock")
    }

    pub(crate) fn keep_alive(&self) -> KeepAlive {
        *self.keep_alive.lock().expect("lock")
    }

    pub(crate) fn set_keep_alive(&self, k: KeepAlive) {
        *self.keep_alive.lock().expect("lock") = k;
    }

    pub(crate) fn try_send(&self, job: Job) -> Result<(), SendError> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SendError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Gone),
        }
    }
}

impl Drop for ModelThread {
    fn drop(&mut self) {
        tracing::debug!(model = %self.label, "worker handle dropped");
    }
}

/// How a worker schedules.
#[derive(Debug, Clone)]
pub(crate) struct ModelThreadSettings {
    pub queue_capacity: usize,
    pub max_running: usize,
    pub prefill_chunk: usize,
    pub prefix_cache_bytes: usize,
    pub dense_float32: bool,
    /// An adapter folder applied (unfused) over the model.
    pub adapter_dir: Option<PathBuf>,
    pub metrics: Arc<ServingMetrics>,
}

type Ready = tokio::sync::oneshot::Sender<Result<(), HubError>>;

#[allow(clippy::too_many_arguments)]
fn run(
    label: String,
    dir: PathBuf,
    rx: Receiver<Job>,
    ready: Ready,
    active: Arc<AtomicUsize>,
    last_used: Arc<Mutex<Instant>>,
    settings: ModelThreadSettings,
    load_span: tracing::Span,
) {
    let dense = settings.dense_float32;
    let loaded = load_span.in_scope(|| {
        load_model(&dir, settings.adapter_dir.as_deref(), dense, &label)
            .map_err(|source| HubError::Load {
                what: label.clone(),
                source,
            })
            .and_then(|m| {
                // the tokenizer files (chat template included) are the user's
                // input: a broken one is a 4xx naming the problem
                Tokenizer::from_dir(&dir).map(|t| (m, t)).map_err(|e| {
                    HubError::InvalidModelFolder {
                        path: PathBuf::from(&label),
                        message: format!("cannot load its tokenizer: {e}"),
                    }
                })
            })
    });
    drop(load_span);
    let (model, tokenizer) = match loaded {
        Ok(x) => {
            let _ = ready.send(Ok(()));
            x
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    tracing::info!(model = %label, "model loaded");
    let mut scheduler = Scheduler {
        model: model.as_ref(),
        tokenizer: &tokenizer,
        prefix_cache: PrefixCache::new(settings.prefix_cache_bytes),
        active,
        last_used,
        settings,
        prefilling: VecDeque::new(),
        decoding: Vec::new(),
        pending: None,
        next_id: 0,
    };
    loop {
        let run = std::panic::AssertUnwindSafe(|| scheduler.iterate(&rx));
        match std::panic::catch_unwind(run) {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => scheduler.fail_all(&format!("generation on {label} panicked")),
        }
    }
    tracing::info!(model = %label, "model unloaded");
}

/// Loads the model with its adapter and densified ([`engine::models::load`]).
fn load_model(
    dir: &std::path::Path,
    adapter_dir: Option<&std::path::Path>,
    dense: bool,
    label: &str,
) -> Result<Box<dyn LanguageModel + Send>, engine::models::LoadError> {
    let options = engine::models::LoadOptions {
        adapter: adapter_dir,
        densify: dense.then_some(engine::models::Dtype::Float32),
    };
    let loaded = engine::models::load(dir, &options)?;
    if loaded.adapters.is_some() {
        tracing::info!(model = %label, "adapter applied");
    }
    if dense {
        let bytes = loaded.densified_bytes;
        tracing::info!(model = %label, bytes = ?bytes, "weights densified to float32");
    }
    Ok(Box::new(loaded.model))
}

fn tokenizer_error(e: TokenizerError) -> HubError {
    HubError::invalid("messages", e.to_string())
}

fn generate_error(e: GenerateError) -> HubError {
    match e {
        GenerateError::Invalid(m) => HubError::BadRequest {
            code: crate::error::Code::InvalidParameter,
            message: m,
        },
        GenerateError::Sampling(engine::sampling::SamplingError::Invalid(m)) => {
            HubError::BadRequest {
                code: crate::error::Code::InvalidParameter,
                message: m,
            }
        }
        other => HubError::Internal(format!("generation failed: {other}")),
    }
}

/// An admitted request.
struct Running {
    id: u64,
    seq: Sequence,
    text: TextStream,
    token_texts: bool,
    cancel: Arc<AtomicBool>,
    events: UnboundedSender<Event>,
    queued_at: Instant,
    last_token_at: Option<Instant>,
    /// Ends (is dropped) with the request.
    span: tracing::Span,
}

impl Running {
    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed) || self.events.is_closed()
    }
}

struct Scheduler<'m> {
    model: &'m dyn LanguageModel,
    tokenizer: &'m Tokenizer,
    prefix_cache: PrefixCache,
    active: Arc<AtomicUsize>,
    last_used: Arc<Mutex<Instant>>,
    settings: ModelThreadSettings,
    /// Admitted, prompt not fully in the cache yet (oldest first).
    prefilling: VecDeque<Running>,
    decoding: Vec<Running>,
    /// The queued decode step and the ids of its rows.
    pending: Option<(Vec<u64>, PendingStep)>,
    next_id: u64,
}

impl Scheduler<'_> {
    fn in_flight(&self) -> usize {
        self.prefilling.len() + self.decoding.len()
    }

    /// One scheduling round; `false` once every handle is gone and all work is done.
    fn iterate(&mut self, rx: &Receiver<Job>) -> bool {
        // 1. admit
        if self.in_flight() == 0 && self.pending.is_none() {
            match rx.recv() {
                Ok(job) => self.admit(job),
                Err(_) => return false,
            }
        }
        while self.in_flight() < self.settings.max_running.max(1) {
            match rx.try_recv() {
                Ok(job) => self.admit(job),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => break,
            }
        }
        self.retire_cancelled();
        // 2. one prefill chunk
        if let Some(mut r) = self.prefilling.pop_front() {
            match r.seq.prefill_chunk(self.model, self.settings.prefill_chunk) {
                Ok(_) if r.seq.prefill_remaining() == 0 => self.decoding.push(r),
                Ok(_) => self.prefilling.push_front(r),
                Err(e) => self.retire(r, Some(Event::Error(generate_error(e))), None),
            }
        }
        // 3. queue the next step, then read the previous one back
        let next = self.queue_step();
        let previous = std::mem::replace(&mut self.pending, next);
        if let Some((ids, step)) = previous {
            match step.read() {
                Ok(tokens) => {
                    for (id, tok) in ids.into_iter().zip(tokens) {
                        self.deliver(id, &tok);
                    }
                }
                Err(e) => {
                    let msg = format!("generation failed: {e}");
                    self.pending = None;
                    self.fail_all(&msg);
                }
            }
        }
        true
    }

    fn queue_step(&mut self) -> Option<(Vec<u64>, PendingStep)> {
        let mut rows: Vec<&mut Running> = self
            .decoding
            .iter_mut()
            .filter(|r| r.seq.wants_step() && !r.text.is_done())
            .collect();
        if rows.is_empty() {
            return None;
        }
        let ids: Vec<u64> = rows.iter().map(|r| r.id).collect();
        let mut seqs: Vec<&mut Sequence> = rows.iter_mut().map(|r| &mut r.seq).collect();
        match decode_step(self.model, &mut seqs) {
            Ok(step) => {
                let m = &self.settings.metrics;
                ServingMetrics::add(&m.decode_steps, 1);
                ServingMetrics::add(&m.decode_rows, ids.len() as u64);
                Some((ids, step))
            }
            Err(e) => {
                let msg = format!("generation failed: {e}");
                self.fail_all(&msg);
                None
            }
        }
    }

    fn admit(&mut self, job: Job) {
        let metrics = &self.settings.metrics;
        ServingMetrics::sub(&metrics.num_requests_waiting, 1);
        if job.cancel.load(Ordering::Relaxed) || job.events.is_closed() {
            job.span.record("finish_reason", "cancelled");
            self.release();
            return;
        }
        let waited = job.queued_at.elapsed();
        metrics.queue_time.observe(waited);
        job.span.record("queue_seconds", waited.as_secs_f64());
        let ids = match job.prompt {
            Prompt::Chat(messages) => self.tokenizer.encode_chat(&messages, true, None),
            Prompt::Text(text) => self.tokenizer.encode(&text, true),
            Prompt::Tokens(ids) => Ok(ids),
        };
        let refuse = |s: &mut Self, e: HubError| {
            s.release();
            job.span.record("otel.status_code", "error");
            job.span.record("error", e.to_string().as_str());
            let _ = job.events.send(Event::Error(e));
        };
        let ids = match ids {
            Ok(ids) if ids.is_empty() => {
                return refuse(
                    self,
                    HubError::BadRequest {
                        code: crate::error::Code::InvalidParameter,
                        message: "the prompt is empty".into(),
                    },
                );
            }
            Ok(ids) => ids,
            Err(e) => return refuse(self, tokenizer_error(e)),
        };
        ServingMetrics::add(&metrics.prefix_cache_queries, 1);
        let reuse = self.prefix_cache.lookup(&ids);
        let seq = match Sequence::new(self.model, &ids, &job.params, reuse) {
            Ok(s) => s,
            Err(e) => return refuse(self, generate_error(e)),
        };
        let cached_tokens = seq.cached_tokens();
        if cached_tokens > 0 {
            ServingMetrics::add(&metrics.prefix_cache_hits, 1);
            ServingMetrics::add(&metrics.prefix_cache_hit_tokens, cached_tokens as u64);
        }
        ServingMetrics::add(&metrics.prompt_tokens, ids.len() as u64);
        job.span.record("prompt_tokens", ids.len() as i64);
        job.span.record("cached_tokens", cached_tokens as i64);
        let started = Event::Started {
            prompt_ids: ids.clone(),
            cached_tokens,
        };
        if job.events.send(started).is_err() {
            self.release();
            return;
        }
        ServingMetrics::add(&metrics.num_requests_running, 1);
        self.next_id += 1;
        let r = Running {
            id: self.next_id,
            text: TextStream::new(self.tokenizer, &job.params, ids.len(), Instant::now()),
            seq,
            token_texts: job.token_texts,
            cancel: job.cancel,
            events: job.events,
            queued_at: job.queued_at,
            last_token_at: None,
            span: job.span,
        };
        if r.seq.prefill_remaining() == 0 {
            self.decoding.push(r);
        } else {
            self.prefilling.push_back(r);
        }
    }

    /// Sends a sampled token to its sequence (if still running).
    fn deliver(&mut self, id: u64, tok: &engine::generate::SampledToken) {
        let Some(i) = self.decoding.iter().position(|r| r.id == id) else {
            return; // retired while this step ran
        };
        let r = &mut self.decoding[i];
        if r.text.is_done() {
            return;
        }
        let now = Instant::now();
        let metrics = &self.settings.metrics;
        match r.last_token_at {
            None => {
                let ttft = now - r.queued_at;
                metrics.time_to_first_token.observe(ttft);
                r.span.record("ttft_seconds", ttft.as_secs_f64());
            }
            Some(t) => metrics.inter_token_latency.observe(now - t),
        }
        r.last_token_at = Some(now);
        ServingMetrics::add(&metrics.generation_tokens, 1);
        let events = match r.text.push(tok) {
            Ok(ev) => ev,
            Err(e) => {
                let r = self.decoding.swap_remove(i);
                return self.retire(r, Some(Event::Error(generate_error(e))), None);
            }
        };
        let text_of = |id: u32| self.tokenizer.decode(&[id], false).ok();
        let mut finished = None;
        for ev in events {
            match ev {
                TextEvent::Token(t) => {
                    let out = Event::Token(TokenOut {
                        id: t.id,
                        text: t.text_delta,
                        logprob: t.logprob,
                        token_text: if r.token_texts { text_of(t.id) } else { None },
                        top: t
                            .top_logprobs
                            .into_iter()
                            .map(|(id, lp)| {
                                (id, if r.token_texts { text_of(id) } else { None }, lp)
                            })
                            .collect(),
                    });
                    if r.events.send(out).is_err() {
                        r.cancel.store(true, Ordering::Relaxed);
                    }
                }
                TextEvent::Finished(f) => finished = Some(f),
            }
        }
        if let Some(f) = finished {
            let r = self.decoding.swap_remove(i);
            self.retire(r, None, Some(f));
        }
    }

    fn retire_cancelled(&mut self) {
        let mut i = 0;
        while i < self.decoding.len() {
            if self.decoding[i].cancelled() {
                let r = self.decoding.swap_remove(i);
                self.retire(r, None, None);
            } else {
                i += 1;
            }
        }
        let (gone, keep): (Vec<Running>, Vec<Running>) =
            self.prefilling.drain(..).partition(Running::cancelled);
        self.prefilling = keep.into();
        for r in gone {
            self.retire(r, None, None);
        }
    }

    /// Releases the request's slot (before its last event goes out: a client
    /// that has seen the end of its request sees the model idle).
    fn release(&self) {
        *self.last_used.lock().expect("lock") = Instant::now();
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Ends a running request: `error` or `finished` is its last event (none
    /// when cancelled); a finished sequence's cache goes to the prefix cache.
    fn retire(&mut self, mut r: Running, error: Option<Event>, finished: Option<Finished>) {
        let metrics = &self.settings.metrics;
        ServingMetrics::sub(&metrics.num_requests_running, 1);
        let span = std::mem::replace(&mut r.span, tracing::Span::none());
        let last = match (error, finished) {
            (Some(e), _) => {
                span.record("otel.status_code", "error");
                if let Event::Error(err) = &e {
                    span.record("error", err.to_string().as_str());
                }
                span.record("generated_tokens", r.text.generated().len() as i64);
                Some(e)
            }
            (None, Some(f)) => {
                span.record("generated_tokens", f.generation_tokens as i64);
                span.record("finish_reason", f.reason.as_str());
                metrics.e2e_request_latency.observe(r.queued_at.elapsed());
                ServingMetrics::add(&metrics.requests_finished, 1);
                // the cache holds the prompt and the tokens fed back so far
                let held = r.seq.cache().first().map_or(0, |c| c.offset()) as usize;
                let mut tokens = r.seq.prompt().to_vec();
                let fed = held.saturating_sub(tokens.len());
                tokens.extend(
                    r.text
                        .generated()
                        .iter()
                        .chain(f.stop_token.iter())
                        .take(fed),
                );
                if tokens.len() == held {
                    self.prefix_cache.insert(tokens, r.seq.cache().to_vec());
                }
                (f.reason != FinishReason::Cancelled).then_some(Event::Finished(f))
            }
            (None, None) => {
                span.record("generated_tokens", r.text.generated().len() as i64);
                span.record("finish_reason", "cancelled");
                let _ = r.text.cancel();
                None
            }
        };
        self.release();
        // the generation's span ends here, before its last event goes out
        drop(span);
        if let Some(ev) = last {
            let _ = r.events.send(ev);
        }
    }

    /// Ends every request with an internal error (the step failed or panicked).
    fn fail_all(&mut self, message: &str) {
        tracing::error!(error = message, "serving step failed");
        self.pending = None;
        let all: Vec<Running> = self
            .decoding
            .drain(..)
            .chain(self.prefilling.drain(..))
            .collect();
        for r in all {
            let e = Event::Error(HubError::Internal(message.to_string()));
            self.retire(r, Some(e), None);
        }
    }
}
