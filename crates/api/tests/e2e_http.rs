//! End-to-end over real HTTP (a TCP listener, `serve_on_with` with the
//! in-process worker, as `mlx-hub serve` runs): register a model folder and a
//! dataset → submit a LoRA job → the in-process worker runs it → metrics by
//! step → a new version with complete lineage → evaluation of that version →
//! a generation answered. On SQLite and PostgreSQL, with timings printed.

mod common;

use test_support::store_test;

use std::time::{Duration, Instant};

use api::server::{ServeOptions, WorkerOptions, serve_on_with};
use common::TestDb;
use common::http::{copy_dir, tiny_model};
use serde_json::{Value, json};

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(url),
            "POST" => self.http.post(url),
            "PUT" => self.http.put(url),
            _ => unreachable!(),
        };
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, b) = self.call(method, path, body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {b}");
        b
    }

    /// Polls a job until it ends.
    async fn wait_job(&self, id: i64) -> Value {
        let t = Instant::now();
        loop {
            let j = self.ok("GET", &format!("/api/jobs/{id}"), None).await;
            if matches!(
                j["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "job {id} stuck: {j}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn end_to_end(db: TestDb) {
    let Some(model) = tiny_model("end_to_end") else {
        return;
    };
    let kind = db.kind;
    let dir = tempfile::tempdir().unwrap();
    let mut config = hub::HubConfig::with_data_dir(dir.path().join("data"));
    config.database_url = db.url.clone();
    // The store of a real server runs on the system clock.
    let store = hub::Store::connect(&db.url).await.unwrap();
    let hub = hub::Hub::with_store(config, store).unwrap();
    let root = hub.import_root().unwrap();
    copy_dir(&model, &root.join("tiny"));
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut rows = String::new();
    for i in 0..12 {
        rows +=
            &json!({"prompt": format!("Count to {i}."), "completion": format!("{i}")}).to_string();
        rows.push('\n');
    }
    std::fs::write(data.join("train.jsonl"), &rows).unwrap();
    std::fs::write(data.join("valid.jsonl"), &rows).unwrap();
    std::fs::write(data.join("test.jsonl"), &rows).unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = Api {
        base: format!("http://{}", listener.local_addr().unwrap()),
        http: reqwest::Client::new(),
    };
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let options = ServeOptions {
        worker: Some(WorkerOptions {
            id: "in-process".into(),
            poll_interval: Duration::from_millis(20),
            ..WorkerOptions::default()
        }),
    };
    let server = tokio::spawn(serve_on_with(hub, listener, options, async move {
        let _ = stop_rx.changed().await;
    }));
    let mut timings = Vec::new();
    let t0 = Instant::now();
    let mut lap = |what: &str, t: &mut Instant| {
        timings.push(format!("{what} {:.0?}", t.elapsed()));
        *t = Instant::now();
    };
    let mut t = Instant::now();

    api.ok("POST", "/api/models", Some(json!({"name": "tiny"})))
        .await;
    let v = api
        .ok(
            "POST",
            "/api/models/tiny/versions",
            Some(json!({"path": "tiny"})),
        )
        .await;
    assert_eq!(v["status"], "ready", "{v}");
    lap("register", &mut t);
    api.ok(
        "POST",
        "/api/datasets",
        Some(json!({"name": "count", "path": "data"})),
    )
    .await;
    lap("dataset", &mut t);
    let job = api
        .ok(
            "POST",
            "/api/jobs",
            Some(json!({"base_model": "tiny", "dataset": "count", "config": {
                "num_layers": -1, "batch_size": 2, "iters": 8, "steps_per_report": 2,
                "steps_per_eval": 4, "val_batches": 1, "max_seq_length": 48,
                "learning_rate": 1e-3, "seed": 2}})),
        )
        .await;
    let job = api.wait_job(job["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    lap("train (queue → succeeded)", &mut t);

    let run_id = job["runs"][0]["id"].as_i64().unwrap();
    let m = api
        .ok(
            "GET",
            &format!("/api/runs/{run_id}/metrics?key=train_loss"),
            None,
        )
        .await;
    let steps: Vec<i64> = m["metrics"]["train_loss"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [2, 4, 6, 8]);

    let v = api
        .ok("GET", "/api/models/tiny-lora/versions/latest", None)
        .await;
    assert_eq!(v["status"], "ready");
    assert_eq!(v["id"], job["result_version_id"]);
    let lin = &v["lineage"];
    for key in [
        "base_version_id",
        "dataset_id",
        "dataset_hash",
        "job_id",
        "run_id",
        "config",
        "seed",
        "hub_commit",
        "mlx_version",
        "device",
        "lockfile_hash",
    ] {
        assert!(!lin[key].is_null(), "lineage lacks {key}: {lin}");
    }
    assert_eq!(lin["run_id"], run_id);

    let eval = api
        .ok(
            "POST",
            "/api/jobs",
            Some(
                json!({"kind": "evaluate", "base_model": "tiny-lora", "dataset": "count",
                        "eval": {"max_seq_length": 48, "max_new_tokens": 4, "max_examples": 4}}),
            ),
        )
        .await;
    let eval = api.wait_job(eval["id"].as_i64().unwrap()).await;
    assert_eq!(eval["state"], "succeeded", "{eval}");
    let v = api
        .ok("GET", "/api/models/tiny-lora/versions/latest", None)
        .await;
    let metrics = &v["evaluations"][0]["metrics"];
    assert!(metrics["test_loss"].as_f64().unwrap().is_finite(), "{v}");
    lap("evaluate", &mut t);

    // Generation: the base version, then the adapter version (its base's
    // weights with the adapter applied), whose greedy tokens must be the
    // engine's own adapted model's.
    let (s, gen_body) = api
        .call(
            "POST",
            "/v1/completions",
            Some(json!({"model": "tiny", "prompt": "Count to 3.", "max_tokens": 4, "temperature": 0})),
        )
        .await;
    assert_eq!(s, 200, "{gen_body}");
    assert!(gen_body["choices"][0]["text"].is_string(), "{gen_body}");
    let max_tokens = 8;
    let chat = api
        .ok(
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"model": "tiny-lora:1", "temperature": 0, "max_tokens": max_tokens,
                        "return_token_ids": true,
                        "messages": [{"role": "user", "content": "Count to 3."}]}),
            ),
        )
        .await;
    let ids = |v: &Value| -> Vec<u32> {
        v.as_array()
            .unwrap_or_else(|| panic!("not token ids: {chat}"))
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect()
    };
    let (prompt_ids, got) = (
        ids(&chat["prompt_token_ids"]),
        ids(&chat["choices"][0]["token_ids"]),
    );
    let ps = api.ok("GET", "/api/ps", None).await;
    let entry = ps["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "tiny-lora:1")
        .unwrap_or_else(|| panic!("tiny-lora:1 not in /api/ps: {ps}"))
        .clone();
    assert_eq!(entry["base_model"], "tiny:1", "{entry}");
    assert!(entry["weights"].is_string(), "{entry}");
    let adapter_dir = dir
        .path()
        .join("data/cache/models")
        .join(entry["version_id"].to_string());
    let base_dir = model.clone();
    let want = std::thread::spawn(move || {
        let mut m = engine::models::Llama::load(&base_dir).unwrap();
        let a = engine::train::load_adapters(&adapter_dir, &m).unwrap();
        engine::train::apply_adapters(&mut m, &a).unwrap();
        engine::generate::generate_greedy(&m, &prompt_ids, max_tokens).unwrap()
    })
    .join()
    .unwrap();
    assert!(!got.is_empty(), "{chat}");
    assert_eq!(
        got,
        want[..got.len()],
        "served adapter tokens differ: {chat}"
    );
    if got.len() < max_tokens {
        assert_eq!(chat["choices"][0]["finish_reason"], "stop", "{chat}");
    }
    // the base's tokens differ from the adapted model's (the adapter is applied)
    let base_chat = api
        .ok(
            "POST",
            "/v1/chat/completions",
            Some(
                json!({"model": "tiny", "temperature": 0, "max_tokens": max_tokens,
                        "return_token_ids": true,
                        "messages": [{"role": "user", "content": "Count to 3."}]}),
            ),
        )
        .await;
    let base_got = ids(&base_chat["choices"][0]["token_ids"]);
    assert_ne!(got, base_got, "the adapter changed nothing");
    eprintln!(
        "adapter tokens {got:?} ({}), base tokens {base_got:?}",
        entry["weights"]
    );
    lap("generate", &mut t);

    let _ = stop_tx.send(true);
    server.await.unwrap().unwrap();
    eprintln!(
        "end_to_end ({kind}): {} — total {:.1?}",
        timings.join(", "),
        t0.elapsed()
    );
}
store_test!(end_to_end);
