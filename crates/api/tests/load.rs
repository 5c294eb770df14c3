//! Bounded load on loopback against a real server (`api::server::serve_on`):
//!
//! 1. registry reads at a fixed rate (`LOAD_RPS`, 200/s) for `LOAD_SECS`
//!    (10 s; 60 s for the figure): every request answers 200; p50,
//!    p99 and the achieved rate are printed;
//! 2. 500 concurrent streamed chat completions (`LOAD_STREAMS`) against the
//!    tiny fixture model: each one completes (`data: [DONE]`, no error event)
//!    or is refused with 503 + `Retry-After`; nothing else; afterwards MLX's
//!    active memory is back at its baseline and the process RSS near it.
//!
//! The figures are printed, not asserted (speed targets live in scripts).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::http::{copy_dir, tiny_model};
use hub::{Hub, HubConfig};
use serde_json::json;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `name value` of a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

struct Server {
    base: String,
    hub: Hub,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _db: common::TestDb,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = HubConfig::with_data_dir(dir.path().join("data"));
    config.database_url = db.url.clone();
    let hub = Hub::with_store(config, db.store.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let h = hub.clone();
    let task = tokio::spawn(async move {
        api::server::serve_on(h, listener, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        base,
        hub,
        stop: Some(tx),
        task,
        _db: db,
        _dir: dir,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task).await;
    }
}

async fn registry_reads(srv: &Server) {
    let s = &srv.hub.store;
    for i in 0..20 {
        common::seed_ready_version(s, &format!("model-{i}")).await;
    }
    let rps = env_num("LOAD_RPS", 200);
    let secs = env_num("LOAD_SECS", 10);
    let total = rps * secs;
    let http = reqwest::Client::new();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rps as f64));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        interval.tick().await;
        let url = match i % 4 {
            0 => format!("{}/api/models?limit=50", srv.base),
            1 => format!("{}/api/models/model-{}", srv.base, i % 20),
            2 => format!("{}/api/models/model-{}/versions/latest", srv.base, i % 20),
            _ => format!("{}/v1/models", srv.base),
        };
        let http = http.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = http.get(&url).send().await;
            let ok = match r {
                Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (t.elapsed(), ok, url)
        }));
    }
    let sent_in = t0.elapsed();
    let mut lat = Vec::with_capacity(tasks.len());
    let mut errors = Vec::new();
    for t in tasks {
        let (d, ok, url) = t.await.unwrap();
        lat.push(d);
        if !ok {
            errors.push(url);
        }
    }
    let wall = t0.elapsed();
    lat.sort();
    eprintln!(
        "registry reads: {total} requests at {rps}/s target ({:.1}/s sent over {:.1} s), \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, errors {}",
        total as f64 / sent_in.as_secs_f64(),
        wall.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.9).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3,
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} errors, e.g. {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
}

async fn memory(http: &reqwest::Client, base: &str) -> (f64, f64) {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (
        metric(&text, "mlx_hub_mlx_active_memory_bytes"),
        metric(&text, "mlx_hub_process_resident_memory_bytes"),
    )
}

async fn chat_streams(srv: &Server) {
    let Some(fixture) = tiny_model("load::chat_streams") else {
        return;
    };
    copy_dir(&fixture, &srv.hub.import_root().unwrap().join("tiny"));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{}{path}", srv.base)).json(&body).send()
    };
    assert_eq!(
        post("/api/models", json!({"name": "tiny"}))
            .await
            .unwrap()
            .status(),
        201
    );
    let r = post("/api/models/tiny/versions", json!({"path": "tiny"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body = json!({"model": "tiny", "stream": true, "max_tokens": 8, "temperature": 0,
                      "messages": [{"role": "user", "content": "Count to ten."}]});
    // warm-up: loads the model, fills the prefix cache
    let r = post("/v1/chat/completions", body.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("[DONE]"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (active0, rss0) = memory(&http, &srv.base).await;

    let n = env_num("LOAD_STREAMS", 500) as usize;
    let start = Arc::new(tokio::sync::Barrier::new(n));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let (http, url, body, start) = (
            http.clone(),
            format!("{}/v1/chat/completions", srv.base),
            body.clone(),
            start.clone(),
        );
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let t = Instant::now();
            let r = match http.post(url).json(&body).send().await {
                Ok(r) => r,
                Err(e) => return Err(format!("transport: {e}")),
            };
            match r.status().as_u16() {
                200 => {
                    let text = r.text().await.map_err(|e| format!("stream cut: {e}"))?;
                    if text.contains("event: error") || !text.trim_end().ends_with("data: [DONE]") {
                        return Err(format!("incomplete stream: {text}"));
                    }
                    Ok((true, t.elapsed()))
                }
                503 => {
                    let retry = r.headers().get("retry-after").cloned();
                    match retry {
                        Some(v) if v.to_str().unwrap_or("").parse::<u64>().is_ok() => {
                            Ok((false, t.elapsed()))
                        }
                        _ => Err("503 without Retry-After".into()),
                    }
                }
                s => Err(format!(
                    "status {s}: {}",
                    r.text().await.unwrap_or_default()
                )),
            }
        }));
    }
    let (mut done, mut refused, mut bad) = (Vec::new(), 0usize, Vec::new());
    for t in tasks {
        match tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("every stream ends within 300 s")
            .unwrap()
        {
            Ok((true, d)) => done.push(d),
            Ok((false, _)) => refused += 1,
            Err(e) => bad.push(e),
        }
    }
    let wall = t0.elapsed();
    done.sort();
    // memory back: the sequences' KV caches are freed
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (active1, rss1) = memory(&http, &srv.base).await;
    let mib = |b: f64| b / (1 << 20) as f64;
    eprintln!(
        "chat streams: {n} concurrent in {:.1} s: {} completed (p50 {:.0} ms, p99 {:.0} ms), \
         {refused} refused with 503 + Retry-After, {} other; MLX active {:.1} → {:.1} MiB, \
         RSS {:.1} → {:.1} MiB",
        wall.as_secs_f64(),
        done.len(),
        percentile(&done, 0.5).as_secs_f64() * 1e3,
        percentile(&done, 0.99).as_secs_f64() * 1e3,
        bad.len(),
        mib(active0),
        mib(active1),
        mib(rss0),
        mib(rss1),
    );
    assert!(
        bad.is_empty(),
        "{} bad answers, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    assert!(!done.is_empty(), "some streams complete");
    assert_eq!(done.len() + refused, n);
    assert!(
        active1 <= active0 + 4.0 * (1 << 20) as f64,
        "MLX active memory did not return to its baseline: {active0} → {active1}"
    );
    assert!(
        rss1 <= rss0 + 256.0 * (1 << 20) as f64,
        "RSS grew from {:.1} to {:.1} MiB",
        mib(rss0),
        mib(rss1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load() {
    let srv = server().await;
    registry_reads(&srv).await;
    chat_streams(&srv).await;
    srv.stop().await;
}
