//! `POST /v1/chat/completions`.

use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine::generate::Finished;
use serde_json::{Map, Value, json};

use super::{
    ChunkFormat, Common, Fields, MAX_TOP_LOGPROBS, collect, common, response_id, sse, start,
};
use super::{token_text, unix_secs, usage};
use crate::extract::ApiJson;
use hub::error::HubError;
use hub::service::Hub;
use hub::serving::{Prompt, TokenOut};

pub(crate) async fn create(
    State(hub): State<Hub>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let ChatRequest {
        common: c,
        messages,
        logprobs,
    } = decode(body)?;
    let running = start(&hub, &c, Prompt::Chat(messages), logprobs).await?;
    let id = response_id("chatcmpl");
    let created = unix_secs();
    if c.stream {
        let format = ChatChunks {
            id,
            created,
            model: c.model.clone(),
            logprobs,
        };
        return Ok(sse(running, format, c.include_usage));
    }
    let out = collect(running).await?;
    let mut choice = json!({
        "index": 0,
        "message": {"role": "assistant", "content": out.text},
        "logprobs": if logprobs {
            json!({"content": out.tokens.iter().map(logprob_entry).collect::<Vec<_>>()})
        } else {
            Value::Null
        },
        "finish_reason": out.finished.reason.as_str(),
    });
    let mut resp = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": c.model,
        "choices": [],
        "usage": usage(out.prompt_ids.len(), out.cached_tokens, &out.finished),
    });
    if c.return_token_ids {
        choice["token_ids"] = json!(out.tokens.iter().map(|t| t.id).collect::<Vec<_>>());
        resp["prompt_token_ids"] = json!(out.prompt_ids);
    }
    resp["choices"] = json!([choice]);
    Ok(Json(resp).into_response())
}

/// A validated chat request.
pub(crate) struct ChatRequest {
    pub common: Common,
    pub messages: Vec<Value>,
    pub logprobs: bool,
}

/// Reads and validates a chat request body (no model is touched).
pub(crate) fn decode(body: Value) -> Result<ChatRequest, HubError> {
    let f = Fields::new(body)?;
    let max_tokens = match f.get::<u64>("max_completion_tokens")? {
        Some(n) => Some(n),
        None => f.get::<u64>("max_tokens")?,
    };
    let logprobs = f.get::<bool>("logprobs")?.unwrap_or(false);
    let top = f.get::<usize>("top_logprobs")?.unwrap_or(0);
    if top > MAX_TOP_LOGPROBS {
        return Err(HubError::invalid(
            "top_logprobs",
            format!("`top_logprobs`: at most {MAX_TOP_LOGPROBS}, got {top}"),
        ));
    }
    let common = common(&f, max_tokens, logprobs.then_some(top))?;
    let messages = messages(&f)?;
    Ok(ChatRequest {
        common,
        messages,
        logprobs,
    })
}

/// `messages`, each `{role, content}` with `content` a string or text parts
/// (joined); other keys are passed to the chat template as they are.
pub(crate) fn messages(f: &Fields) -> Result<Vec<Value>, HubError> {
    let list: Vec<Map<String, Value>> = f
        .get("messages")?
        .ok_or_else(|| HubError::invalid("messages", "`messages`: is required"))?;
    if list.is_empty() {
        return Err(HubError::invalid(
            "messages",
            "`messages`: must not be empty",
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, mut m) in list.into_iter().enumerate() {
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(HubError::invalid(
                "messages",
                format!("`messages[{i}].role`: must be a string"),
            ));
        }
        let content = match m.remove("content") {
            None | Some(Value::Null) => Value::String(String::new()),
            Some(Value::String(s)) => Value::String(s),
            Some(Value::Array(parts)) => {
                let mut text = String::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.get("type").and_then(Value::as_str), p.get("text")) {
                        (Some("text"), Some(Value::String(s))) => text.push_str(s),
                        (t, _) => {
                            return Err(HubError::invalid(
                                "messages",
                                format!(
                                    "`messages[{i}].content[{j}]`: only text parts are \
                                     supported, got type {}",
                                    t.unwrap_or("(none)")
                                ),
                            ));
                        }
                    }
                }
                Value::String(text)
            }
            Some(_) => {
                return Err(HubError::invalid(
                    "messages",
                    format!("`messages[{i}].content`: must be a string or a list of text parts"),
                ));
            }
        };
        m.insert("content".into(), content);
        out.push(Value::Object(m));
    }
    Ok(out)
}

fn logprob_entry(t: &TokenOut) -> Value {
    let text = token_text(&t.token_text);
    json!({
        "token": text,
        "logprob": t.logprob,
        "bytes": text.as_bytes(),
        "top_logprobs": t.top.iter().map(|(_, s, lp)| {
            let s = token_text(s);
            json!({"token": s, "logprob": lp, "bytes": s.as_bytes()})
        }).collect::<Vec<_>>(),
    })
}

struct ChatChunks {
    id: String,
    created: u64,
    model: String,
    logprobs: bool,
}

impl ChatChunks {
    fn chunk(&self, delta: Value, logprobs: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "delta": delta,
                "logprobs": logprobs,
                "finish_reason": finish,
            }],
        })
    }
}

impl ChunkFormat for ChatChunks {
    fn head(&self) -> Option<Value> {
        Some(self.chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
            Value::Null,
        ))
    }

    fn token(&self, t: &TokenOut) -> Option<Value> {
        if t.text.is_empty() && !self.logprobs {
            return None;
        }
        let lp = if self.logprobs {
            json!({"content": [logprob_entry(t)]})
        } else {
            Value::Null
        };
        Some(self.chunk(json!({"content": t.text}), lp, Value::Null))
    }

    fn finish(&self, f: &Finished) -> Vec<Value> {
        let mut out = Vec::new();
        if !f.text_delta.is_empty() {
            out.push(self.chunk(json!({"content": f.text_delta}), Value::Null, Value::Null));
        }
        out.push(self.chunk(json!({}), Value::Null, json!(f.reason.as_str())));
        out
    }

    fn usage(&self, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
    }
}
