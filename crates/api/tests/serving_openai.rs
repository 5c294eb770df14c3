//! Serving: the OpenAI-compatible API over the model pool, with the tiny parity
//! fixture registered through the HTTP API (SQLite). Skipped with a printed
//! reason when the fixtures are missing, unless `CI` is set.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestDb;
use common::http::{assert_error, copy_dir, tiny_model};
use futures_util::StreamExt;
use hub::serving::{ServingConfig, WeightsPolicy};
use hub::{Hub, HubConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Served {
    app: Router,
    fixture: PathBuf,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

/// A hub with its own pool settings and the fixture registered as `tiny`
/// (version 1).
async fn served(test: &str, config: ServingConfig) -> Option<Served> {
    let fixture = tiny_model(test)?;
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut hc = HubConfig::with_data_dir(dir.path().join("data"));
    hc.database_url = db.url.clone();
    hc.serving = config;
    let hub = Hub::with_store(hc, db.store.clone()).unwrap();
    copy_dir(&fixture, &hub.import_root().unwrap().join("tiny"));
    let app = api::router::router(hub);
    let s = Served {
        app,
        fixture,
        _db: db,
        _dir: dir,
    };
    let (st, b) = s
        .call("POST", "/api/models", Some(json!({"name": "tiny"})))
        .await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = s
        .call(
            "POST",
            "/api/models/tiny/versions",
            Some(json!({"path": "tiny"})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(b["status"], "ready", "{b}");
    Some(s)
}

fn post(uri: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

impl Served {
    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = match body {
            Some(b) => {
                let mut r = post(uri, &b);
                *r.method_mut() = method.parse().unwrap();
                r
            }
            None => Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::empty())
                .unwrap(),
        };
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, v)
    }

    async fn response(&self, uri: &str, body: &Value) -> axum::response::Response {
        self.app.clone().oneshot(post(uri, body)).await.unwrap()
    }

    /// A whole SSE stream: the `data:` payloads in order (event name kept as
    /// `event:NAME ` prefix for non-default events).
    async fn stream(&self, uri: &str, body: &Value) -> Vec<String> {
        let resp = self.response(uri, body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "text/event-stream",
            "SSE content type"
        );
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        sse_payloads(std::str::from_utf8(&bytes).unwrap())
    }

    async fn ps(&self) -> Vec<Value> {
        let (s, b) = self.call("GET", "/api/ps", None).await;
        assert_eq!(s, 200, "{b}");
        b["models"].as_array().unwrap().clone()
    }

    async fn wait_active(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ps = self.ps().await;
            let active = ps
                .first()
                .and_then(|m| m["active_requests"].as_u64())
                .unwrap_or(0);
            if active == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "active_requests never reached {n}: {ps:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn sse_payloads(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = Some(e.trim().to_string());
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        out.push(match event {
            Some(e) => format!("event:{e} {data}"),
            None => data,
        });
    }
    out
}

fn reference(fixture: &std::path::Path, prompt: &str) -> Value {
    let path = fixture.with_file_name(format!(
        "{}.reference.json",
        fixture.file_name().unwrap().to_str().unwrap()
    ));
    let r: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    r["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == prompt)
        .unwrap()
        .clone()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// Generated ids equal the reference's (a prefix of them if EOS stopped early).
#[track_caller]
fn assert_prefix(got: &[u64], want: &[u64], finish: &Value) {
    assert!(!got.is_empty(), "no tokens");
    assert_eq!(got, &want[..got.len()], "tokens differ from mlx-lm's");
    if got.len() < want.len() {
        assert_eq!(finish, "stop", "shorter only when EOS stopped it");
    } else {
        assert_eq!(finish, "length");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_matches_reference_streamed_and_not() {
    // mlx-lm's numerics: the weights as stored
    let config = ServingConfig {
        weights: WeightsPolicy::Native,
        ..ServingConfig::default()
    };
    let Some(s) = served("greedy_matches_reference", config).await else {
        return;
    };
    let chat = reference(&s.fixture, "chat");
    let body = json!({
        "model": "tiny",
        "messages": chat["messages"],
        "temperature": 0,
        "max_tokens": 20,
        "return_token_ids": true,
    });
    let (st, b) = s
        .call("POST", "/v1/chat/completions", Some(body.clone()))
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["object"], "chat.completion");
    assert_eq!(b["model"], "tiny");
    assert_eq!(ids(&b["prompt_token_ids"]), ids(&chat["prompt_ids"]));
    let choice = &b["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    let got = ids(&choice["token_ids"]);
    assert_prefix(&got, &ids(&chat["generated_ids"]), &choice["finish_reason"]);
    let n_prompt = chat["prompt_ids"].as_array().unwrap().len() as u64;
    assert_eq!(b["usage"]["prompt_tokens"], n_prompt);
    let completion = b["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion == got.len() as u64 || completion == got.len() as u64 + 1);
    assert_eq!(b["usage"]["total_tokens"], n_prompt + completion);
    let text = choice["message"]["content"].as_str().unwrap().to_string();

    // streamed: same text, usage in the last chunk, [DONE] last
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    sb["stream_options"] = json!({"include_usage": true});
    let events = s.stream("/v1/chat/completions", &sb).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|_| panic!("not JSON: {e}")))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text);
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    // the same counts; the second run's prompt comes from the prefix cache
    let mut streamed_usage = usage_chunk["usage"].clone();
    let details = streamed_usage
        .as_object_mut()
        .unwrap()
        .remove("prompt_tokens_details")
        .unwrap();
    assert_eq!(details["cached_tokens"], n_prompt - 1);
    let mut first_usage = b["usage"].clone();
    first_usage
        .as_object_mut()
        .unwrap()
        .remove("prompt_tokens_details");
    assert_eq!(streamed_usage, first_usage);
    let finish = &chunks[chunks.len() - 2]["choices"][0]["finish_reason"];
    assert_eq!(finish, &choice["finish_reason"]);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );

    // text completion of a plain prompt
    let fox = reference(&s.fixture, "fox");
    let (st, b) = s
        .call(
            "POST",
            "/v1/completions",
            Some(json!({
                "model": "tiny:1",
                "prompt": fox["prompt"],
                "temperature": 0.0,
                "max_tokens": 20,
                "logprobs": 2,
                "return_token_ids": true,
            })),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["object"], "text_completion");
    assert_eq!(ids(&b["prompt_token_ids"]), ids(&fox["prompt_ids"]));
    let choice = &b["choices"][0];
    let got = ids(&choice["token_ids"]);
    assert_prefix(&got, &ids(&fox["generated_ids"]), &choice["finish_reason"]);
    let lps = choice["logprobs"]["token_logprobs"].as_array().unwrap();
    assert_eq!(lps.len(), got.len());
    for (lp, want) in lps
        .iter()
        .zip(fox["generated_logprobs"].as_array().unwrap())
    {
        let (lp, want) = (lp.as_f64().unwrap(), want.as_f64().unwrap());
        assert!((lp - want).abs() < 1e-3, "logprob {lp} vs mlx-lm {want}");
    }
    assert_eq!(
        choice["logprobs"]["top_logprobs"][0]
            .as_object()
            .unwrap()
            .len(),
        2
    );

    // streamed text completion == non-streamed
    let events = s
        .stream(
            "/v1/completions",
            &json!({"model": "tiny", "prompt": fox["prompt"], "temperature": 0,
                    "max_tokens": 20, "stream": true}),
        )
        .await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, choice["text"].as_str().unwrap());

    // two concurrent requests both complete
    let a = s.call("POST", "/v1/chat/completions", Some(body.clone()));
    let b2 = s.call("POST", "/v1/chat/completions", Some(body.clone()));
    let ((sa, ba), (sb2, bb)) = tokio::join!(a, b2);
    assert_eq!(sa, 200, "{ba}");
    assert_eq!(sb2, 200, "{bb}");
    assert_eq!(ba["choices"][0]["token_ids"], bb["choices"][0]["token_ids"]);

    // /v1/models lists it
    let (st, b) = s.call("GET", "/v1/models", None).await;
    assert_eq!(st, 200);
    assert_eq!(b["object"], "list");
    assert_eq!(b["data"][0]["id"], "tiny");
    let (st, b) = s.call("GET", "/v1/models/tiny:1", None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["id"], "tiny:1");
}

fn long_request(stream: bool) -> Value {
    // EOS suppressed so it runs until cancelled
    json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": "go on"}],
        "temperature": 0,
        "max_tokens": 1_000_000,
        "logit_bias": {"2": -100},
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_503_and_disconnect_frees_the_worker() {
    // one running sequence: the second request waits in the queue
    let config = ServingConfig {
        queue_capacity: 1,
        max_running: 1,
        retry_after_secs: 2,
        ..ServingConfig::default()
    };
    let Some(s) = served("queue_full_503", config).await else {
        return;
    };
    // A runs (streaming; we read one chunk and keep the body)
    let resp = s
        .response("/v1/chat/completions", &long_request(true))
        .await;
    assert_eq!(resp.status(), 200);
    let mut a = resp.into_body().into_data_stream();
    a.next().await.unwrap().unwrap();
    s.wait_active(1).await;

    // B waits in the queue (its response comes only once it starts)
    let app = s.app.clone();
    let b = tokio::spawn(async move {
        let resp = app
            .oneshot(post("/v1/chat/completions", &long_request(true)))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body().into_data_stream();
        body.next().await.unwrap().unwrap();
        body // dropped by the caller: a disconnect
    });
    s.wait_active(2).await;

    // C: the queue is full
    let resp = s
        .response("/v1/chat/completions", &long_request(false))
        .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_error(
        StatusCode::SERVICE_UNAVAILABLE,
        &body,
        503,
        "server_overloaded",
    );

    // A disconnects: B starts promptly
    let t = Instant::now();
    drop(a);
    let b_body = tokio::time::timeout(Duration::from_secs(20), b)
        .await
        .expect("B started after A's disconnect")
        .unwrap();
    eprintln!("B started {:?} after A's disconnect", t.elapsed());
    drop(b_body);
    s.wait_active(0).await;

    // and a following request completes promptly
    let t = Instant::now();
    let (st, b) = s
        .call(
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 5, "temperature": 0}),
            ),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_ps_load_unload_keep_alive_budget() {
    let Some(s) = served("pool_ps_load_unload", ServingConfig::default()).await else {
        return;
    };
    assert!(s.ps().await.is_empty(), "nothing loads before a request");
    let (st, b) = s
        .call(
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"model": "tiny@latest", "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 3}),
            ),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    let ps = s.ps().await;
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(ps[0]["model"], "tiny:1");
    assert_eq!(ps[0]["active_requests"], 0);
    let weights = std::fs::metadata(s.fixture.join("model.safetensors"))
        .unwrap()
        .len();
    assert_eq!(ps[0]["size_bytes"], weights);
    // auto: the fixture is float32 already, densifying costs nothing on a CPU
    let choice = ps[0]["weights"].as_str().unwrap();
    assert!(
        [
            "float32 (auto: cpu, stored as float32)",
            "native (auto: gpu device)"
        ]
        .contains(&choice),
        "{choice}"
    );
    assert!(ps[0]["base_model"].is_null());
    assert!(ps[0]["expires_at_ms"].as_i64().unwrap() > ps[0]["loaded_at_ms"].as_i64().unwrap());

    let (st, b) = s.call("POST", "/api/models/tiny/unload", None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["unloaded"], true);
    assert!(s.ps().await.is_empty());
    let (st, b) = s.call("POST", "/api/models/tiny:1/unload", None).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["unloaded"], false);

    // load with keep_alive 0: loaded, then unloaded by the reaper
    let (st, b) = s
        .call(
            "POST",
            "/api/models/tiny:1/load",
            Some(json!({"keep_alive": 0})),
        )
        .await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["model"], "tiny:1");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.ps().await.is_empty() {
        assert!(Instant::now() < deadline, "keep_alive 0 never unloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, b) = s.call("POST", "/api/models/nope/load", None).await;
    assert_error(st, &b, 404, "model_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_refusal_names_the_numbers() {
    let config = ServingConfig {
        memory_budget_bytes: 1000,
        ..ServingConfig::default()
    };
    let Some(s) = served("budget_refusal", config).await else {
        return;
    };
    let (st, b) = s
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})),
        )
        .await;
    assert_error(st, &b, 503, "insufficient_memory");
    let msg = b["error"]["message"].as_str().unwrap();
    assert!(msg.contains("1000"), "{msg}");
    assert!(s.ps().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors() {
    let Some(s) = served("request_errors", ServingConfig::default()).await else {
        return;
    };
    let hi = json!([{"role": "user", "content": "hi"}]);
    let (st, b) = s
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "missing", "messages": hi})),
        )
        .await;
    assert_error(st, &b, 404, "model_not_found");
    let (st, b) = s
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "tiny:7", "messages": hi})),
        )
        .await;
    assert_error(st, &b, 404, "version_not_found");
    let (st, b) = s
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "tiny", "messages": hi, "n": 2})),
        )
        .await;
    assert_error(st, &b, 400, "unsupported_parameter");
    assert!(b["error"]["message"].as_str().unwrap().contains("`n`"));
    for (field, value) in [
        ("temperature", json!("hot")),
        ("top_p", json!(2.0)),
        ("max_tokens", json!(-1)),
        ("stop", json!(3)),
        ("logit_bias", json!({"x": 1})),
        ("messages", json!("hi")),
    ] {
        let mut body = json!({"model": "tiny", "messages": hi});
        body[field] = value;
        let (st, b) = s.call("POST", "/v1/chat/completions", Some(body)).await;
        assert_error(st, &b, 422, "invalid_input");
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{field}: {msg}");
    }
    let (st, b) = s
        .call(
            "POST",
            "/v1/completions",
            Some(json!({"model": "tiny", "prompt": ["a", "b"]})),
        )
        .await;
    assert_error(st, &b, 400, "unsupported_parameter");
    // an out-of-vocabulary logit_bias is refused before any stream starts
    let (st, b) = s
        .call(
            "POST",
            "/v1/chat/completions",
            Some(json!({"model": "tiny", "messages": hi, "stream": true,
                        "logit_bias": {"999999": 1}})),
        )
        .await;
    assert_error(st, &b, 400, "invalid_parameter");
}
