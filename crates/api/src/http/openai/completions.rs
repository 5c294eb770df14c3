//! `POST /v1/completions` (legacy text completions).

use crate::error::ApiError;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine::generate::Finished;
use serde_json::{Value, json};

use super::{ChunkFormat, Common, Fields, collect, common, response_id, sse, start};
use super::{token_text, unix_secs, usage};
use crate::extract::ApiJson;
use hub::error::HubError;
use hub::service::Hub;
use hub::serving::{Prompt, TokenOut};

/// Most alternatives per token (OpenAI's limit for this endpoint).
const MAX_LOGPROBS: usize = 5;

pub(crate) async fn create(
    State(hub): State<Hub>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let CompletionRequest {
        common: c,
        prompt,
        logprobs,
    } = decode(body)?;
    let running = start(&hub, &c, prompt, logprobs.is_some()).await?;
    let id = response_id("cmpl");
    let created = unix_secs();
    if c.stream {
        let format = TextChunks {
            id,
            created,
            model: c.model.clone(),
            logprobs: logprobs.is_some(),
        };
        return Ok(sse(running, format, c.include_usage));
    }
    let out = collect(running).await?;
    let mut choice = json!({
        "index": 0,
        "text": out.text,
        "logprobs": if logprobs.is_some() { logprobs_block(&out.tokens, 0) } else { Value::Null },
        "finish_reason": out.finished.reason.as_str(),
    });
    let mut resp = json!({
        "id": id,
        "object": "text_completion",
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

/// A validated completions request.
pub(crate) struct CompletionRequest {
    pub common: Common,
    pub prompt: Prompt,
    pub logprobs: Option<usize>,
}

/// Reads and validates a completions request body (no model is touched).
pub(crate) fn decode(body: Value) -> Result<CompletionRequest, HubError> {
    let f = Fields::new(body)?;
    let logprobs = f.get::<usize>("logprobs")?;
    if let Some(n) = logprobs
        && n > MAX_LOGPROBS
    {
        return Err(HubError::invalid(
            "logprobs",
            format!("`logprobs`: at most {MAX_LOGPROBS}, got {n}"),
        ));
    }
    if f.get::<bool>("echo")?.unwrap_or(false) {
        return Err(HubError::BadRequest {
            code: hub::error::Code::UnsupportedParameter,
            message: "`echo`: not supported".into(),
        });
    }
    let common = common(&f, f.get::<u64>("max_tokens")?, logprobs)?;
    let prompt = prompt(&f)?;
    Ok(CompletionRequest {
        common,
        prompt,
        logprobs,
    })
}

/// `prompt`: a string, or a list holding one string or token ids.
pub(crate) fn prompt(f: &Fields) -> Result<Prompt, HubError> {
    let bad = |m: &str| HubError::invalid("prompt", format!("`prompt`: {m}"));
    match f.raw("prompt") {
        None => Err(bad("is required")),
        Some(Value::String(s)) => Ok(Prompt::Text(s.clone())),
        Some(Value::Array(items)) => {
            if items.iter().all(Value::is_u64) && !items.is_empty() {
                let ids = items
                    .iter()
                    .map(|v| u32::try_from(v.as_u64().unwrap_or(u64::MAX)))
                    .collect::<Result<Vec<u32>, _>>()
                    .map_err(|_| bad("token ids must fit in 32 bits"))?;
                return Ok(Prompt::Tokens(ids));
            }
            match items.as_slice() {
                [Value::String(s)] => Ok(Prompt::Text(s.clone())),
                [Value::Array(_)] => match f.get::<Vec<Vec<u32>>>("prompt")? {
                    Some(mut v) if v.len() == 1 => Ok(Prompt::Tokens(v.remove(0))),
                    _ => Err(bad("a list of token ids is expected")),
                },
                [] => Err(bad("must not be empty")),
                _ => Err(HubError::BadRequest {
                    code: hub::error::Code::UnsupportedParameter,
                    message: "`prompt`: one prompt per request is supported".into(),
                }),
            }
        }
        Some(_) => Err(bad("must be a string, a list of one string, or token ids")),
    }
}

/// OpenAI's completions `logprobs` object; `offset` is where the first token's
/// text starts.
fn logprobs_block(tokens: &[TokenOut], offset: usize) -> Value {
    let mut at = offset;
    let mut offsets = Vec::with_capacity(tokens.len());
    for t in tokens {
        offsets.push(at);
        at += t.text.len();
    }
    json!({
        "tokens": tokens.iter().map(|t| token_text(&t.token_text)).collect::<Vec<_>>(),
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tokens.iter().map(|t| {
            let m: serde_json::Map<String, Value> = t.top.iter()
                .map(|(_, s, lp)| (token_text(s).to_string(), json!(lp)))
                .collect();
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "text_offset": offsets,
    })
}

struct TextChunks {
    id: String,
    created: u64,
    model: String,
    logprobs: bool,
}

impl TextChunks {
    fn chunk(&self, text: &str, logprobs: Value, finish: Value) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish,
            }],
        })
    }
}

impl ChunkFormat for TextChunks {
    fn head(&self) -> Option<Value> {
        None
    }

    fn token(&self, t: &TokenOut) -> Option<Value> {
        if t.text.is_empty() && !self.logprobs {
            return None;
        }
        let lp = if self.logprobs {
            logprobs_block(std::slice::from_ref(t), 0)
        } else {
            Value::Null
        };
        Some(self.chunk(&t.text, lp, Value::Null))
    }

    fn finish(&self, f: &Finished) -> Vec<Value> {
        vec![self.chunk(&f.text_delta, Value::Null, json!(f.reason.as_str()))]
    }

    fn usage(&self, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        })
    }
}
