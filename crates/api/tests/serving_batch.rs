//! Serving: continuous batching, the prefix cache, chunked prefill and the
//! hub-native API, over the tiny parity fixture registered through the HTTP
//! API (SQLite). Skipped with a printed reason when the fixtures are missing,
//! unless `CI` is set.

mod common;

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::TestDb;
use common::http::{copy_dir, tiny_model};
use futures_util::StreamExt;
use hub::serving::{Pool, ServingConfig};
use hub::{Hub, HubConfig};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Served {
    app: Router,
    pool: Pool,
    _db: TestDb,
    _dir: tempfile::TempDir,
}

/// A hub with its own pool settings and the fixture registered as `tiny`.
async fn served(test: &str, config: ServingConfig) -> Option<Served> {
    let fixture = tiny_model(test)?;
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut hc = HubConfig::with_data_dir(dir.path().join("data"));
    hc.database_url = db.url.clone();
    hc.serving = config;
    let hub = Hub::with_store(hc, db.store.clone()).unwrap();
    copy_dir(&fixture, &hub.import_root().unwrap().join("tiny"));
    let pool = hub.serving.clone();
    let s = Served {
        app: api::router::router(hub),
        pool,
        _db: db,
        _dir: dir,
    };
    let (st, b) = s.call("/api/models", json!({"name": "tiny"})).await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = s
        .call("/api/models/tiny/versions", json!({"path": "tiny"}))
        .await;
    assert_eq!(st, 201, "{b}");
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
    async fn call(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        let resp = self.app.clone().oneshot(post(uri, &body)).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        (status, v)
    }

    /// The streamed text of a chat completion (SSE), and its finish reason.
    async fn stream_text(&self, body: &Value) -> (String, String) {
        let resp = self
            .app
            .clone()
            .oneshot(post("/v1/chat/completions", body))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        let mut out = String::new();
        let mut finish = String::new();
        for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
            if data == "[DONE]" {
                continue;
            }
            let c: Value = serde_json::from_str(data).unwrap();
            if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
                out.push_str(t);
            }
            if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
        (out, finish)
    }

    fn counter(&self, name: &str) -> u64 {
        let snap = self.pool.metrics().snapshot();
        snap.counters
            .iter()
            .chain(snap.gauges.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no metric {name}"))
    }
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 24,
        "stream": true,
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Mixed sampling parameters: greedy, penalties, logit bias, stop strings and
/// seeded sampling with each filter.
fn mixed_requests() -> Vec<Value> {
    vec![
        chat("What is the capital of France?", json!({"temperature": 0})),
        chat(
            "Tell me a story about a fox.",
            json!({"temperature": 0, "max_tokens": 40}),
        ),
        chat(
            "hi",
            json!({"temperature": 0, "repetition_penalty": 1.3, "presence_penalty": 0.5,
                   "frequency_penalty": 0.3, "logit_bias": {"2": -100}}),
        ),
        chat(
            "Count to ten.",
            json!({"temperature": 0.9, "top_p": 0.9, "seed": 7, "logit_bias": {"2": -100}}),
        ),
        chat(
            "Name a colour.",
            json!({"temperature": 1.2, "top_k": 20, "min_p": 0.05, "seed": 11, "max_tokens": 32}),
        ),
        chat(
            "What is the capital of France?",
            json!({"temperature": 0.7, "seed": 3, "stop": ["e"]}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_match_their_solo_runs() {
    let config = ServingConfig {
        prefix_cache_bytes: 0,
        ..ServingConfig::default()
    };
    let Some(s) = served("concurrent_streams_match", config).await else {
        return;
    };
    let requests = mixed_requests();
    let mut solo = Vec::new();
    for r in &requests {
        solo.push(s.stream_text(r).await);
    }
    let (steps, rows) = (
        s.counter("mlx_hub:decode_steps_total"),
        s.counter("mlx_hub:decode_rows_total"),
    );
    assert_eq!(steps, rows, "solo runs decode one sequence per step");

    let t = Instant::now();
    let together = futures_util::future::join_all(requests.iter().map(|r| s.stream_text(r))).await;
    eprintln!("{} concurrent streams in {:?}", requests.len(), t.elapsed());
    for (i, (a, b)) in solo.iter().zip(&together).enumerate() {
        assert_eq!(a, b, "request {i} differs in a batch: {}", requests[i]);
        assert!(!a.1.is_empty(), "request {i} has a finish reason");
    }
    let steps = s.counter("mlx_hub:decode_steps_total") - steps;
    let rows = s.counter("mlx_hub:decode_rows_total") - rows;
    eprintln!("batched: {rows} rows in {steps} steps");
    assert!(
        rows > steps,
        "the concurrent requests shared decode steps ({rows} rows, {steps} steps)"
    );
    assert_eq!(s.counter("mlx_hub:num_requests_running"), 0);
    assert_eq!(s.counter("mlx_hub:num_requests_waiting"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_in_a_batch_frees_its_slot_and_others_finish() {
    let Some(s) = served("disconnect_in_a_batch", ServingConfig::default()).await else {
        return;
    };
    // a stream that runs until cancelled
    let endless = chat(
        "go on",
        json!({"temperature": 0, "max_tokens": 1_000_000, "logit_bias": {"2": -100}}),
    );
    let resp = s
        .app
        .clone()
        .oneshot(post("/v1/chat/completions", &endless))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body().into_data_stream();
    for _ in 0..3 {
        body.next().await.unwrap().unwrap();
    }
    // another request finishes alongside it, with its solo output
    let short = chat("hi", json!({"temperature": 0}));
    let with_endless = s.stream_text(&short).await;
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.counter("mlx_hub:num_requests_running") != 0 {
        assert!(Instant::now() < deadline, "the cancelled stream never left");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.stream_text(&short).await, with_endless);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_cache_hits_are_reported_and_change_nothing() {
    let Some(s) = served("prefix_cache_hits", ServingConfig::default()).await else {
        return;
    };
    let Some(cold) = served(
        "prefix_cache_hits_cold",
        ServingConfig {
            prefix_cache_bytes: 0,
            ..ServingConfig::default()
        },
    )
    .await
    else {
        return;
    };
    let system = "You are a careful assistant who answers in short sentences and \
                  never repeats the question.";
    let ask = |q: &str| {
        json!({
            "model": "tiny",
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
            "max_tokens": 16,
            "temperature": 0,
            "return_token_ids": true,
        })
    };
    let (st, a) = s
        .call(
            "/v1/chat/completions",
            ask("What is the capital of France?"),
        )
        .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let n_prompt = a["usage"]["prompt_tokens"].as_u64().unwrap();

    // the same prompt again: all but its last token come from the cache
    let (_, b) = s
        .call(
            "/v1/chat/completions",
            ask("What is the capital of France?"),
        )
        .await;
    assert_eq!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"],
        n_prompt - 1
    );
    assert_eq!(b["choices"][0]["token_ids"], a["choices"][0]["token_ids"]);

    // a different question shares the system prompt
    let (_, c) = s
        .call("/v1/chat/completions", ask("Name a large river."))
        .await;
    let cached = c["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(
        cached > 10 && cached < c["usage"]["prompt_tokens"].as_u64().unwrap(),
        "{c}"
    );
    let (_, c_cold) = cold
        .call("/v1/chat/completions", ask("Name a large river."))
        .await;
    assert_eq!(c_cold["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        c["choices"][0]["token_ids"],
        c_cold["choices"][0]["token_ids"]
    );

    assert_eq!(s.counter("mlx_hub:prefix_cache_queries_total"), 3);
    assert_eq!(s.counter("mlx_hub:prefix_cache_hits_total"), 2);
    assert_eq!(cold.counter("mlx_hub:prefix_cache_hits_total"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_prefill_gives_the_same_tokens() {
    let chunked = ServingConfig {
        prefill_chunk: 64,
        prefix_cache_bytes: 0,
        ..ServingConfig::default()
    };
    let whole = ServingConfig {
        prefill_chunk: 4096,
        prefix_cache_bytes: 0,
        ..ServingConfig::default()
    };
    let (Some(a), Some(b)) = (
        served("chunked_prefill_64", chunked).await,
        served("chunked_prefill_whole", whole).await,
    ) else {
        return;
    };
    // a 700-token prompt of token ids
    let prompt: Vec<u32> = (0..700u32).map(|i| 3 + (i * 37) % 600).collect();
    let body = json!({"model": "tiny", "prompt": prompt, "max_tokens": 12,
                      "temperature": 0, "return_token_ids": true});
    let (st, x) = a.call("/v1/completions", body.clone()).await;
    assert_eq!(st, 200, "{x}");
    let (_, y) = b.call("/v1/completions", body.clone()).await;
    assert_eq!(x["choices"][0]["token_ids"], y["choices"][0]["token_ids"]);

    // a stream that runs while the long prompt prefills keeps its output
    let short = chat("hi", json!({"temperature": 0}));
    let alone = a.stream_text(&short).await;
    let (long, during) = tokio::join!(a.call("/v1/completions", body), a.stream_text(&short));
    assert_eq!(
        long.1["choices"][0]["token_ids"],
        x["choices"][0]["token_ids"]
    );
    assert_eq!(during, alone);
}

/// NDJSON lines of a native streaming response.
async fn ndjson(s: &Served, uri: &str, body: &Value) -> Vec<Value> {
    let resp = s.app.clone().oneshot(post(uri, body)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/x-ndjson");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_generate_and_chat() {
    let Some(s) = served("native_api", ServingConfig::default()).await else {
        return;
    };
    let prompt = "The quick brown fox";
    let (_, openai) = s
        .call(
            "/v1/completions",
            json!({"model": "tiny", "prompt": prompt, "max_tokens": 10, "temperature": 0}),
        )
        .await;
    let want = openai["choices"][0]["text"].as_str().unwrap();

    // streamed by default: text lines, then a done line with the counts
    let body = json!({"model": "tiny", "prompt": prompt, "raw": true,
                      "options": {"temperature": 0, "num_predict": 10}});
    let lines = ndjson(&s, "/api/generate", &body).await;
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true, "{last}");
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
    let text: String = lines
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, want);
    assert_eq!(last["done_reason"], openai["choices"][0]["finish_reason"]);
    assert_eq!(
        last["eval_count"], openai["usage"]["completion_tokens"],
        "{last}"
    );
    assert_eq!(last["prompt_eval_count"], openai["usage"]["prompt_tokens"]);
    assert!(last["total_duration"].as_u64().unwrap() > 0);

    // stream: false → one object
    let mut one = body.clone();
    one["stream"] = json!(false);
    let (st, b) = s.call("/api/generate", one).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["response"], want);
    assert_eq!(b["done"], true);

    // chat: the same as /v1/chat/completions
    let messages = json!([{"role": "user", "content": "What is the capital of France?"}]);
    let (_, oc) = s
        .call(
            "/v1/chat/completions",
            json!({"model": "tiny", "messages": messages, "max_tokens": 12, "temperature": 0}),
        )
        .await;
    let lines = ndjson(
        &s,
        "/api/chat",
        &json!({"model": "tiny", "messages": messages,
                "options": {"temperature": 0, "num_predict": 12}}),
    )
    .await;
    let text: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(text, oc["choices"][0]["message"]["content"]);
    assert!(lines.iter().all(|l| l["message"]["role"] == "assistant"));

    // errors are the hub's error shape before the stream starts
    let (st, b) = s
        .call(
            "/api/chat",
            json!({"model": "tiny", "messages": messages, "options": {"num_predict": 0}}),
        )
        .await;
    assert_eq!(st, 422, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("num_predict")
    );
    let (st, _) = s
        .call("/api/generate", json!({"model": "nope", "prompt": "x"}))
        .await;
    assert_eq!(st, 404);
}
