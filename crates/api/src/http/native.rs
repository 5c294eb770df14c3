//! The hub-native generation API, Ollama-like: `POST /api/generate` and
//! `POST /api/chat`. Streaming by default as newline-delimited JSON
//! (`application/x-ndjson`, one object per line); `"stream": false` gives one
//! JSON object.
//!
//! Request: `model`, `prompt` (generate; a string or token ids) or `messages`
//! (chat), `system` (generate: sent as a system message through the chat
//! template; with `raw: true` the prompt is used as it is), `options`
//! (`temperature` (default 0.8), `top_p`, `top_k`, `min_p`, `seed`,
//! `num_predict` (default 512), `stop`, `repeat_penalty`, `presence_penalty`,
//! `frequency_penalty`), `keep_alive`. Each line: `model`, `created_at`,
//! `response` (generate) or `message` `{role, content}` (chat), `done`; the
//! last line (`done: true`) adds `done_reason` (`stop`|`length`),
//! `prompt_eval_count`, `prompt_cached_count` (prefix-cache hit),
//! `eval_count`, `total_duration`, `load_duration` (0), `prompt_eval_duration`,
//! `eval_duration` (nanoseconds). An error after the stream started is a line
//! `{"error": {…}}`.

use crate::error::ApiError;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use engine::generate::Finished;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::openai::{Fields, Running, common, start};
use crate::extract::ApiJson;
use hub::error::ErrorCode;
use hub::error::HubError;
use hub::service::Hub;
use hub::serving::{Event, Prompt, ServingError};

/// Ollama's default temperature.
const DEFAULT_TEMPERATURE: f64 = 0.8;

#[derive(Clone, Copy)]
enum Kind {
    Generate,
    Chat,
}

/// Maps the native request onto the OpenAI fields [`common`] reads.
fn openai_fields(f: &Fields) -> Result<Fields, HubError> {
    let mut m = Map::new();
    for key in ["model", "keep_alive"] {
        if let Some(v) = f.raw(key) {
            m.insert(key.into(), v.clone());
        }
    }
    m.insert("stream".into(), json!(false));
    let options: Map<String, Value> = f.get("options")?.unwrap_or_default();
    m.insert("temperature".into(), json!(DEFAULT_TEMPERATURE));
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "top_p"),
        ("top_k", "top_k"),
        ("min_p", "min_p"),
        ("seed", "seed"),
        ("stop", "stop"),
        ("repeat_penalty", "repetition_penalty"),
        ("presence_penalty", "presence_penalty"),
        ("frequency_penalty", "frequency_penalty"),
    ] {
        if let Some(v) = options.get(from).filter(|v| !v.is_null()) {
            m.insert(to.into(), v.clone());
        }
    }
    Ok(Fields(m))
}

fn max_tokens(f: &Fields) -> Result<Option<u64>, HubError> {
    let options: Map<String, Value> = f.get("options")?.unwrap_or_default();
    match options.get("num_predict") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            // Ollama: -1 = until a stop (bounded here by a large number)
            Some(-1) => Ok(Some(1 << 20)),
            Some(n) if n > 0 => Ok(Some(n as u64)),
            _ => Err(HubError::invalid(
                "options",
                "`options.num_predict`: must be a positive integer or -1",
            )),
        },
    }
}

pub(crate) async fn generate(
    State(hub): State<Hub>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    Ok(run(hub, body, Kind::Generate).await?)
}

pub(crate) async fn chat(
    State(hub): State<Hub>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    Ok(run(hub, body, Kind::Chat).await?)
}

async fn run(hub: Hub, body: Value, kind: Kind) -> Result<Response, ServingError> {
    let t0 = Instant::now();
    let f = Fields::new(body)?;
    let stream = f.get::<bool>("stream")?.unwrap_or(true);
    let c = common(&openai_fields(&f)?, max_tokens(&f)?, None)?;
    let prompt = match kind {
        Kind::Chat => Prompt::Chat(super::openai::chat::messages(&f)?),
        Kind::Generate => {
            let raw = f.get::<bool>("raw")?.unwrap_or(false);
            match (f.get::<String>("system")?, raw) {
                (Some(system), false) => {
                    let text: String = f
                        .get("prompt")?
                        .ok_or_else(|| HubError::invalid("prompt", "`prompt`: is required"))?;
                    Prompt::Chat(vec![
                        json!({"role": "system", "content": system}),
                        json!({"role": "user", "content": text}),
                    ])
                }
                _ => super::openai::completions::prompt(&f)?,
            }
        }
    };
    let running = start(&hub, &c, prompt, false).await?;
    let mut state = Lines {
        running,
        kind,
        model: c.model.clone(),
        t0,
        first_token: None,
        text: String::new(),
    };
    if !stream {
        loop {
            match state.running.rx.recv().await {
                Some(Event::Token(t)) => {
                    state.first_token.get_or_insert_with(Instant::now);
                    state.text.push_str(&t.text);
                }
                Some(Event::Finished(f)) => {
                    let mut text = std::mem::take(&mut state.text);
                    text.push_str(&f.text_delta);
                    return Ok(Json(state.last(&text, &f)).into_response());
                }
                Some(Event::Error(e)) => return Err(e),
                Some(Event::Started { .. }) => {}
                None => {
                    return Err(HubError::Internal("the model worker stopped".into()));
                }
            }
        }
    }
    let body = futures_util::stream::unfold(Some(state), |st| async move {
        let mut st = st?;
        loop {
            let line = match st.running.rx.recv().await {
                Some(Event::Token(t)) => {
                    st.first_token.get_or_insert_with(Instant::now);
                    if t.text.is_empty() {
                        continue;
                    }
                    Some(st.piece(&t.text))
                }
                Some(Event::Finished(f)) => {
                    let v = st.last(&f.text_delta, &f);
                    return Some((ndjson(&v), None));
                }
                Some(Event::Error(e)) => {
                    return Some((ndjson(&json!({"error": e.body()})), None));
                }
                Some(Event::Started { .. }) => None,
                None => {
                    let e = HubError::Internal("the model worker stopped".into());
                    return Some((ndjson(&json!({"error": e.body()})), None));
                }
            };
            if let Some(v) = line {
                return Some((ndjson(&v), Some(st)));
            }
        }
    })
    .map(Ok::<_, std::convert::Infallible>);
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response())
}

fn ndjson(v: &Value) -> String {
    let mut s = v.to_string();
    s.push('\n');
    s
}

/// The state of one native response (dropping it cancels the generation).
struct Lines {
    running: Running,
    kind: Kind,
    model: String,
    t0: Instant,
    first_token: Option<Instant>,
    text: String,
}

impl Lines {
    fn base(&self, text: &str, done: bool) -> Value {
        let mut v = json!({
            "model": self.model,
            "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "done": done,
        });
        match self.kind {
            Kind::Generate => v["response"] = json!(text),
            Kind::Chat => v["message"] = json!({"role": "assistant", "content": text}),
        }
        v
    }

    fn piece(&self, text: &str) -> Value {
        self.base(text, false)
    }

    fn last(&self, text: &str, f: &Finished) -> Value {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let mut v = self.base(text, true);
        let extra = json!({
            "done_reason": f.reason.as_str(),
            "prompt_eval_count": self.running.prompt_ids.len(),
            "prompt_cached_count": self.running.cached_tokens,
            "eval_count": f.generation_tokens,
            "total_duration": now.duration_since(self.t0).as_nanos() as u64,
            "load_duration": 0,
            "prompt_eval_duration": first.duration_since(self.t0).as_nanos() as u64,
            "eval_duration": now.duration_since(first).as_nanos() as u64,
        });
        if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
            a.extend(b);
        }
        v
    }
}
