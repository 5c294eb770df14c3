//! A model worker: one OS thread that loads a model and its tokenizer and
//! serves the model's request queue for its whole life (MLX graphs must be
//! evaluated on the thread that built them, and the weights load lazily).
//!
//! Scheduling, first slice: requests are served one at a time, FIFO, from a
//! bounded queue. The protocol is built so continuous batching can replace the
//! loop body without touching the HTTP side: a [`Job`] carries its prompt,
//! parameters, cancel flag and an event channel; the worker answers with
//! [`Event::Started`] (or [`Event::Error`]), then [`Event::Token`]s, then
//! [`Event::Finished`]. A batching worker admits queued jobs into a running
//! batch after their prefill, steps every running sequence once per loop
//! iteration, and retires the finished and the cancelled — the same events per
//! job. A cancelled job stops within one step.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use engine::generate::{
    FinishReason, Finished, GenerateError, GenerateParams, GenerationEvent, Generator,
};
use engine::models::LanguageModel;
use engine::tokenizer::{Tokenizer, TokenizerError};
use tokio::sync::mpsc::UnboundedSender;

use super::KeepAlive;
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
pub(crate) struct Worker {
    label: String,
    version_id: i64,
    tx: SyncSender<Job>,
    queue_capacity: usize,
    active: Arc<AtomicUsize>,
    last_used: Arc<Mutex<Instant>>,
    keep_alive: Mutex<KeepAlive>,
}

impl Worker {
    /// Starts the thread and waits until the model and tokenizer are loaded.
    pub(crate) async fn spawn(
        label: String,
        version_id: i64,
        dir: PathBuf,
        queue_capacity: usize,
        keep_alive: KeepAlive,
    ) -> Result<Arc<Worker>, HubError> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(queue_capacity);
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let active = Arc::new(AtomicUsize::new(0));
        let last_used = Arc::new(Mutex::new(Instant::now()));
        let (a, l, name) = (active.clone(), last_used.clone(), label.clone());
        std::thread::Builder::new()
            .name(format!("model-{version_id}"))
            .spawn(move || run(name, dir, rx, ready_tx, a, l))
            .map_err(|e| HubError::Internal(format!("cannot start a model worker: {e}")))?;
        ready_rx.await.map_err(|_| {
            HubError::Internal(format!("the worker of {label} died while loading"))
        })??;
        Ok(Arc::new(Worker {
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

impl Drop for Worker {
    fn drop(&mut self) {
        tracing::debug!(model = %self.label, "worker handle dropped");
    }
}

type Ready = tokio::sync::oneshot::Sender<Result<(), HubError>>;

fn run(
    label: String,
    dir: PathBuf,
    rx: Receiver<Job>,
    ready: Ready,
    active: Arc<AtomicUsize>,
    last_used: Arc<Mutex<Instant>>,
) {
    let loaded = engine::models::load_model(&dir)
        .map_err(|e| HubError::Internal(format!("cannot load {label}: {e}")))
        .and_then(|m| {
            Tokenizer::from_dir(&dir).map(|t| (m, t)).map_err(|e| {
                HubError::Internal(format!("cannot load the tokenizer of {label}: {e}"))
            })
        });
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
    // One sequence at a time (see the module doc for the batching follow-up).
    while let Ok(job) = rx.recv() {
        let events = job.events.clone();
        let last = if job.cancel.load(Ordering::Relaxed) {
            None
        } else {
            let run = std::panic::AssertUnwindSafe(|| serve(model.as_ref(), &tokenizer, job));
            std::panic::catch_unwind(run).unwrap_or_else(|_| {
                Some(Event::Error(HubError::Internal(format!(
                    "generation on {label} panicked"
                ))))
            })
        };
        // released before the last event goes out: a client that has seen
        // the end of its request sees the model idle
        *last_used.lock().expect("lock") = Instant::now();
        active.fetch_sub(1, Ordering::SeqCst);
        if let Some(ev) = last {
            let _ = events.send(ev);
        }
    }
    tracing::info!(model = %label, "model unloaded");
}

fn tokenizer_error(e: TokenizerError) -> HubError {
    HubError::invalid("messages", e.to_string())
}

fn generate_error(e: GenerateError) -> HubError {
    match e {
        GenerateError::Invalid(m) => HubError::BadRequest {
            code: "invalid_parameter",
            message: m,
        },
        GenerateError::Sampling(engine::sampling::SamplingError::Invalid(m)) => {
            HubError::BadRequest {
                code: "invalid_parameter",
                message: m,
            }
        }
        other => HubError::Internal(format!("generation failed: {other}")),
    }
}

/// Runs one job; returns its last event (finished or error) for the caller
/// to send, `None` when cancelled.
fn serve(model: &dyn LanguageModel, tokenizer: &Tokenizer, job: Job) -> Option<Event> {
    let Job {
        prompt,
        params,
        token_texts,
        cancel,
        events,
    } = job;
    let ids = match prompt {
        Prompt::Chat(messages) => tokenizer.encode_chat(&messages, true, None),
        Prompt::Text(text) => tokenizer.encode(&text, true),
        Prompt::Tokens(ids) => Ok(ids),
    };
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => return Some(Event::Error(tokenizer_error(e))),
    };
    if ids.is_empty() {
        return Some(Event::Error(HubError::BadRequest {
            code: "invalid_parameter",
            message: "the prompt is empty".into(),
        }));
    }
    let generator = match Generator::new(model, tokenizer, &ids, &params) {
        Ok(g) => g.with_cancel(cancel.clone()),
        Err(e) => return Some(Event::Error(generate_error(e))),
    };
    if events.send(Event::Started { prompt_ids: ids }).is_err() {
        return None;
    }
    let text_of = |id: u32| tokenizer.decode(&[id], false).ok();
    for ev in generator {
        let out = match ev {
            Ok(GenerationEvent::Token(t)) => Event::Token(TokenOut {
                id: t.id,
                text: t.text_delta,
                logprob: t.logprob,
                token_text: if token_texts { text_of(t.id) } else { None },
                top: t
                    .top_logprobs
                    .into_iter()
                    .map(|(id, lp)| (id, if token_texts { text_of(id) } else { None }, lp))
                    .collect(),
            }),
            Ok(GenerationEvent::Finished(f)) => {
                return (f.reason != FinishReason::Cancelled).then_some(Event::Finished(f));
            }
            Err(e) => return Some(Event::Error(generate_error(e))),
        };
        if events.send(out).is_err() {
            // the receiver is gone: stop at the next step
            cancel.store(true, Ordering::Relaxed);
        }
    }
    None
}
