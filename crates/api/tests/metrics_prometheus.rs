//! `GET /metrics` over real HTTP: the exposition's families and HELP lines,
//! counters that follow what the test did, the `x-request-id` header; then a
//! real Prometheus (Debian's `prometheus`) scraping the hub every second and
//! answering a query for a counter the test moved.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api::server::{ServeOptions, serve_on_with};
use serde_json::{Value, json};

struct Served {
    base: String,
    addr: std::net::SocketAddr,
    http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    _db: common::TestDb,
}

async fn serve() -> Served {
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = hub::HubConfig::with_data_dir(dir.path().join("data"));
    config.database_url = db.url.clone();
    let store = hub::Store::connect(&db.url).await.unwrap();
    let hub = hub::Hub::with_store(config, store).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(serve_on_with(
        hub,
        listener,
        ServeOptions::default(),
        async move {
            let _ = stop_rx.changed().await;
        },
    ));
    Served {
        base: format!("http://{addr}"),
        addr,
        http: reqwest::Client::new(),
        stop,
        _dir: dir,
        _db: db,
    }
}

impl Served {
    async fn metrics(&self) -> String {
        let resp = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        resp.text().await.unwrap()
    }
}

/// The value of the sample whose line starts with `series ` (name and labels
/// exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn metrics_exposition_follows_requests() {
    let s = serve().await;
    for _ in 0..3 {
        let r = s
            .http
            .get(format!("{}/api/models", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // a fresh request id on every response
        assert_eq!(r.headers()["x-request-id"].len(), 32);
    }
    let r = s
        .http
        .post(format!("{}/api/models", s.base))
        .header("x-request-id", "client-chosen-id")
        .json(&json!({"name": "m1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["x-request-id"], "client-chosen-id");
    let r = s
        .http
        .get(format!("{}/api/models/nope", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .http
        .get(format!("{}/no/such/route", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let text = s.metrics().await;
    let get_models =
        r#"mlx_hub_http_requests_total{method="GET",route="/api/models",status="200"}"#;
    assert_eq!(sample(&text, get_models), Some(3.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"mlx_hub_http_requests_total{method="POST",route="/api/models",status="201"}"#
        ),
        Some(1.0)
    );
    // the route pattern, not the path
    assert_eq!(
        sample(
            &text,
            r#"mlx_hub_http_requests_total{method="GET",route="/api/models/{name}",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"mlx_hub_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"mlx_hub_http_request_duration_seconds_count{method="GET",route="/api/models",status="200"}"#
        ),
        Some(3.0)
    );
    assert_eq!(sample(&text, "mlx_hub_models"), Some(1.0));
    assert_eq!(
        sample(&text, r#"mlx_hub_model_versions{status="ready"}"#),
        Some(0.0)
    );
    assert_eq!(sample(&text, r#"mlx_hub_jobs{state="queued"}"#), Some(0.0));
    assert_eq!(sample(&text, "mlx_hub_datasets"), Some(0.0));
    assert_eq!(
        sample(
            &text,
            r#"mlx_hub:time_to_first_token_seconds_bucket{le="+Inf"}"#
        ),
        Some(0.0)
    );
    assert_eq!(sample(&text, "mlx_hub:generation_tokens_total"), Some(0.0));
    assert_eq!(sample(&text, "mlx_hub:num_requests_running"), Some(0.0));
    assert!(sample(&text, "mlx_hub_process_resident_memory_bytes").unwrap() > 1e6);
    assert!(sample(&text, "mlx_hub_mlx_active_memory_bytes").is_some());
    let build = text
        .lines()
        .find(|l| l.starts_with("mlx_hub_build_info{"))
        .expect("build info");
    assert!(build.ends_with(" 1"), "{build}");
    assert!(build.contains(r#"mlx_version="0.32.4""#), "{build}");
    assert!(build.contains("blas=\""), "{build}");

    // every family has HELP and TYPE, and names carry their unit
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert!(families.len() >= 20, "{families:?}");
    for f in &families {
        let (name, kind) = f.split_once(' ').unwrap();
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# HELP {name} ")) && l.len() > name.len() + 12),
            "no HELP for {name}"
        );
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{name}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
            _ => {}
        }
    }
    let _ = s.stop.send(true);
}

/// Kills the child on drop (test failures included).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn real_prometheus_scrapes_the_hub() {
    test_support::require!(
        Command::new("prometheus")
            .arg("--version")
            .output()
            .map_err(
                |_| "prometheus is not installed (scripts/setup-test-deps.sh installs it)"
                    .to_string()
            )
    );
    let s = serve().await;
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: mlx-hub\n    static_configs:\n      - targets: ['{}']\n",
            s.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus"),
    );

    for _ in 0..5 {
        let r = s
            .http
            .get(format!("{}/api/datasets", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let query = r#"mlx_hub_http_requests_total{job="mlx-hub",method="GET",route="/api/datasets",status="200"}"#;
    let t0 = Instant::now();
    let value = loop {
        let got: Option<Value> = async {
            let r = s
                .http
                .get(format!("http://127.0.0.1:{port}/api/v1/query"))
                .query(&[("query", query)])
                .send()
                .await
                .ok()?;
            r.json().await.ok()
        }
        .await;
        if let Some(v) = got
            .as_ref()
            .and_then(|b| b["data"]["result"][0]["value"][1].as_str())
        {
            break v.parse::<f64>().unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "prometheus never had {query}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "prometheus answered {query} = {value} after {:.1?}",
        t0.elapsed()
    );
    assert_eq!(value, 5.0);
    let _ = s.stop.send(true);
}
