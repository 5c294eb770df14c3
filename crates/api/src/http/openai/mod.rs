//! The OpenAI-compatible API and the pool's own endpoints, one file per
//! endpoint:
//!
//! | route | file |
//! |---|---|
//! | `GET /v1/models`, `GET /v1/models/{id}` | [`models`] |
//! | `POST /v1/chat/completions` | [`chat`] |
//! | `POST /v1/completions` | [`completions`] |
//! | `GET /api/ps`, `POST /api/models/{name}/load`, `POST /api/models/{name}/unload` | [`ps`] |
//!
//! Request fields: `model` (`name`, `name:version`, `name@alias`), `messages` /
//! `prompt`, `max_tokens` (chat also `max_completion_tokens`; default 512),
//! `temperature` (default 1), `top_p`, `top_k` (extension), `min_p`, `seed`,
//! `stop` (string or list), `presence_penalty`, `frequency_penalty`,
//! `repetition_penalty` (extension), `logit_bias`, `logprobs`/`top_logprobs`,
//! `n` (1 only), `stream`, `stream_options.include_usage`, `keep_alive`
//! (extension, Ollama's forms) and `return_token_ids` (extension, as vLLM:
//! `prompt_token_ids` and per-choice `token_ids`). Unknown fields are ignored.
//!
//! Streams are SSE: `data: {chunk}\n\n` … `data: [DONE]\n\n`; an error after
//! the stream started is an `event: error` with the error body, and ends it.
//! Errors are the hub's `{"error": {message, type, code}}`; a full queue is a
//! 503 with `Retry-After`.

pub(crate) mod chat;
pub(crate) mod completions;
pub(crate) mod models;
pub(crate) mod ps;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use engine::generate::{Finished, GenerateParams};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc::UnboundedReceiver;

use hub::error::ErrorCode;
use hub::error::HubError;
use hub::service::Hub;
use hub::serving::{Event, Job, KeepAlive, Prompt, ServingError, TokenOut};

/// `max_tokens` when the request gives none (mlx-lm's server default).
pub const DEFAULT_MAX_TOKENS: usize = 512;
/// Most alternatives per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// A request body as a JSON object, read field by field so each error names
/// its field.
pub(crate) struct Fields(pub Map<String, Value>);

impl Fields {
    pub(crate) fn new(body: Value) -> Result<Fields, HubError> {
        match body {
            Value::Object(m) => Ok(Fields(m)),
            _ => Err(HubError::BadRequest {
                code: hub::error::Code::BadRequest,
                message: "the request body must be a JSON object".into(),
            }),
        }
    }

    /// The field, `None` when absent or null.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, HubError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| HubError::invalid(key, format!("`{key}`: {e}"))),
        }
    }

    pub(crate) fn raw(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
}

fn invalid(field: &'static str, message: impl std::fmt::Display) -> HubError {
    HubError::invalid(field, format!("`{field}`: {message}"))
}

/// What both completion endpoints share.
pub(crate) struct Common {
    pub model: String,
    pub params: GenerateParams,
    pub stream: bool,
    pub include_usage: bool,
    pub keep_alive: Option<KeepAlive>,
    pub return_token_ids: bool,
}

/// Reads the shared fields. `max_tokens` is given by the caller (the two
/// endpoints name it differently); `logprobs` too.
pub(crate) fn common(
    f: &Fields,
    max_tokens: Option<u64>,
    logprobs: Option<usize>,
) -> Result<Common, HubError> {
    let model: String = f
        .get("model")?
        .ok_or_else(|| invalid("model", "is required"))?;
    if let Some(n) = f.get::<i64>("n")?
        && n != 1
    {
        return Err(HubError::BadRequest {
            code: hub::error::Code::UnsupportedParameter,
            message: format!("`n`: only n = 1 is supported, got {n}"),
        });
    }
    let mut p = GenerateParams {
        max_tokens: match max_tokens {
            Some(0) => return Err(invalid("max_tokens", "must be at least 1")),
            Some(n) => n as usize,
            None => DEFAULT_MAX_TOKENS,
        },
        ..GenerateParams::default()
    };
    p.temp = f.get("temperature")?.unwrap_or(1.0);
    if !(p.temp.is_finite() && p.temp >= 0.0) {
        return Err(invalid("temperature", "must be a number >= 0"));
    }
    p.top_p = f.get("top_p")?.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&p.top_p) {
        return Err(invalid("top_p", "must be in [0, 1]"));
    }
    p.min_p = f.get("min_p")?.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&p.min_p) {
        return Err(invalid("min_p", "must be in [0, 1]"));
    }
    let top_k: i64 = f.get("top_k")?.unwrap_or(0);
    // -1 is "off" in vLLM's dialect
    p.top_k = if top_k <= 0 { 0 } else { top_k as usize };
    p.seed = f.get::<i64>("seed")?.map(|s| s as u64);
    p.stop = match f.raw("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(_) => f.get::<Vec<String>>("stop")?.unwrap_or_default(),
    };
    let penalty = |key: &'static str, neutral: f32| -> Result<Option<f32>, HubError> {
        match f.get::<f32>(key)? {
            Some(v) if !v.is_finite() => Err(invalid(key, "must be finite")),
            Some(v) if v == neutral => Ok(None),
            other => Ok(other),
        }
    };
    p.presence_penalty = penalty("presence_penalty", 0.0)?;
    p.frequency_penalty = penalty("frequency_penalty", 0.0)?;
    p.repetition_penalty = penalty("repetition_penalty", 1.0)?;
    if let Some(r) = p.repetition_penalty
        && r <= 0.0
    {
        return Err(invalid("repetition_penalty", "must be > 0"));
    }
    if let Some(bias) = f.get::<Map<String, Value>>("logit_bias")? {
        for (k, v) in bias {
            let id: u32 = k
                .parse()
                .map_err(|_| invalid("logit_bias", format!("key {k:?} is not a token id")))?;
            let b = v
                .as_f64()
                // finite as the f32 the sampler adds, too (1e300 is not)
                .filter(|b| (*b as f32).is_finite())
                .ok_or_else(|| invalid("logit_bias", format!("value of {k} is not a number")))?;
            p.logit_bias.insert(id, b as f32);
        }
    }
    p.logprobs = logprobs;
    let stream = f.get("stream")?.unwrap_or(false);
    let include_usage = match f.get::<Map<String, Value>>("stream_options")? {
        Some(o) => match o.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(invalid("stream_options", "include_usage must be a boolean")),
        },
        None => false,
    };
    let keep_alive = match f.raw("keep_alive") {
        None => None,
        Some(v) => Some(KeepAlive::parse(v).map_err(|e| invalid("keep_alive", e))?),
    };
    Ok(Common {
        model,
        params: p,
        stream,
        include_usage,
        keep_alive,
        return_token_ids: f.get("return_token_ids")?.unwrap_or(false),
    })
}

/// Sets the cancel flag when dropped (the response or the stream went away).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A started generation: the prompt is encoded and the parameters accepted.
pub(crate) struct Running {
    pub(crate) rx: UnboundedReceiver<Event>,
    pub prompt_ids: Vec<u32>,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    _cancel: CancelOnDrop,
}

/// Loads the model when needed, queues the job and waits until it starts (so
/// parameter errors are plain HTTP errors, not stream events).
pub(crate) async fn start(
    hub: &Hub,
    c: &Common,
    prompt: Prompt,
    token_texts: bool,
) -> Result<Running, ServingError> {
    let reservation = hub.serving.reserve(&c.model, c.keep_alive).await?;
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(cancel.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let span = hub::serving::generate_span(&reservation.model);
    reservation.submit(Job {
        span,
        prompt,
        params: c.params.clone(),
        token_texts,
        cancel,
        events: tx,
        queued_at: std::time::Instant::now(),
    })?;
    match rx.recv().await {
        Some(Event::Started {
            prompt_ids,
            cached_tokens,
        }) => Ok(Running {
            rx,
            prompt_ids,
            cached_tokens,
            _cancel: guard,
        }),
        Some(Event::Error(e)) => Err(e),
        _ => Err(HubError::Internal("the model worker stopped".into())),
    }
}

/// A whole (non-streamed) generation.
pub(crate) struct Collected {
    pub cached_tokens: usize,
    pub text: String,
    pub tokens: Vec<TokenOut>,
    pub finished: Finished,
    pub prompt_ids: Vec<u32>,
}

pub(crate) async fn collect(mut r: Running) -> Result<Collected, ServingError> {
    let mut text = String::new();
    let mut tokens = Vec::new();
    loop {
        match r.rx.recv().await {
            Some(Event::Token(t)) => {
                text.push_str(&t.text);
                tokens.push(t);
            }
            Some(Event::Finished(f)) => {
                text.push_str(&f.text_delta);
                return Ok(Collected {
                    cached_tokens: r.cached_tokens,
                    text,
                    tokens,
                    finished: f,
                    prompt_ids: std::mem::take(&mut r.prompt_ids),
                });
            }
            Some(Event::Error(e)) => return Err(e),
            Some(Event::Started { .. }) => {}
            None => return Err(HubError::Internal("the model worker stopped".into())),
        }
    }
}

pub(crate) fn usage(prompt_tokens: usize, cached_tokens: usize, f: &Finished) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": f.generation_tokens,
        "total_tokens": prompt_tokens + f.generation_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    })
}

/// How an endpoint shapes its stream chunks.
pub(crate) trait ChunkFormat: Send + 'static {
    /// Sent before any token (chat: the assistant role).
    fn head(&self) -> Option<Value>;
    /// A token's chunk; `None` skips it (no text, no logprobs).
    fn token(&self, t: &TokenOut) -> Option<Value>;
    /// The last chunks: held-back text, then the finish reason.
    fn finish(&self, f: &Finished) -> Vec<Value>;
    /// The usage chunk (empty choices).
    fn usage(&self, usage: Value) -> Value;
}

fn data(v: &Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

fn error_event(e: ServingError) -> SseEvent {
    tracing::warn!(error = %e, "stream ended by an error");
    SseEvent::default()
        .event("error")
        .data(json!({ "error": e.body() }).to_string())
}

struct StreamState<F> {
    running: Running,
    format: F,
    include_usage: bool,
    done: bool,
}

/// The SSE response of a started generation. Dropping it (client gone)
/// cancels the generation.
pub(crate) fn sse<F: ChunkFormat>(running: Running, format: F, include_usage: bool) -> Response {
    let head: Vec<SseEvent> = format.head().iter().map(data).collect();
    let state = StreamState {
        running,
        format,
        include_usage,
        done: false,
    };
    let body = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let events = match st.running.rx.recv().await {
            Some(Event::Token(t)) => st.format.token(&t).iter().map(data).collect(),
            Some(Event::Finished(f)) => {
                st.done = true;
                let mut out: Vec<SseEvent> = st.format.finish(&f).iter().map(data).collect();
                if st.include_usage {
                    let u = usage(st.running.prompt_ids.len(), st.running.cached_tokens, &f);
                    out.push(data(&st.format.usage(u)));
                }
                out.push(SseEvent::default().data("[DONE]"));
                out
            }
            Some(Event::Error(e)) => {
                st.done = true;
                vec![error_event(e)]
            }
            Some(Event::Started { .. }) => Vec::new(),
            None => {
                st.done = true;
                vec![error_event(HubError::Internal(
                    "the model worker stopped".into(),
                ))]
            }
        };
        Some((futures_util::stream::iter(events), st))
    })
    .flatten();
    let all = futures_util::stream::iter(head)
        .chain(body)
        .map(Ok::<_, Infallible>);
    Sse::new(all).into_response()
}

/// A unique-enough response id (`chatcmpl-…`, `cmpl-…`).
pub(crate) fn response_id(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let h = Sha256::digest(format!("{t}:{n}:{}", std::process::id()));
    format!("{prefix}-{}", &hex::encode(h)[..24])
}

pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token's text for logprobs (its own decode, else empty).
pub(crate) fn token_text(t: &Option<String>) -> &str {
    t.as_deref().unwrap_or("")
}
