//! The deployment files (deploy/) checked against the hub itself: the compose
//! file's services point the hub at its PostgreSQL and MLflow and Prometheus
//! at the hub, every file it mounts exists, Prometheus' config is valid
//! (`promtool`), Grafana's provisioning names the dashboard folder and the
//! datasource the panels use, the dashboard's PromQL is valid (`promtool
//! check rules`), and every metric name in it appears in a real `/metrics`
//! scrape of a hub that served a chat completion and ran a training job
//! (its in-process worker). The per-job training gauges are seen while the job
//! runs and are gone once it ended. Docker is not needed: nothing is run
//! from the compose file.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use api::server::{ServeOptions, WorkerOptions, serve_on_with};
use common::http::{TestHub, copy_dir, tiny_model};
use hub::dataset_import::RegisterDataset;
use hub::registry::RegisterFolder;
use serde_json::{Value, json};
use serde_yaml_ng::Value as Yaml;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn s<'a>(v: &'a Yaml, path: &[&str]) -> &'a str {
    let mut cur = v;
    for k in path {
        cur = &cur[*k];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("{path:?} is not a string: {cur:?}"))
}

/// Whether `promtool` is installed (the `prometheus` package); under CI it must be.
fn promtool() -> bool {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .map(drop)
        .map_err(|_| {
            "promtool is not installed (scripts/setup-test-deps.sh installs prometheus): \
             PromQL and config syntax not checked"
                .to_string()
        });
    test_support::require("promtool", found).is_some()
}

/// The dashboard's PromQL expressions with Grafana's variables filled in.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(panels: &[Value], out: &mut Vec<String>) {
        for p in panels {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_owned());
                }
            }
            walk(p["panels"].as_array().map_or(&[], |v| v), out);
        }
    }
    walk(dashboard["panels"].as_array().unwrap(), &mut out);
    out.into_iter()
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("$job", "mlx-hub")
        })
        .collect()
}

/// Metric names in a PromQL expression: identifiers that are not functions,
/// keywords, label names or inside strings, ranges or label matchers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // keywords, and the aggregation operators (they may precede `by (…)`, not `(`)
    const KEYWORDS: [&str; 25] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut depth_braces, mut after_grouping) = (0, 0usize, false);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' => {
                depth_braces += 1;
                i += 1;
            }
            '}' => {
                depth_braces -= 1;
                i += 1;
            }
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                i += 1;
            }
            '(' if after_grouping => {
                // by (...) / without (...): label names
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                after_grouping = false;
                i += 1;
            }
            c if c.is_ascii_digit()
                || (c == '.' && i + 1 < chars.len() && chars[i + 1].is_ascii_digit()) =>
            {
                // a number, with its exponent
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric()
                        || chars[i] == '.'
                        || ((chars[i] == '-' || chars[i] == '+')
                            && matches!(chars[i - 1], 'e' | 'E')))
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
                let is_call = j < chars.len() && chars[j] == '(';
                let lower = word.to_ascii_lowercase();
                if lower == "by" || lower == "without" || lower == "on" || lower == "ignoring" {
                    after_grouping = true;
                } else if depth_braces == 0 && !is_call && !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn promql_metric_names_are_found() {
    let got = metric_names(
        r#"histogram_quantile(0.95, sum by (le, route) (rate(mlx_hub:ttft_seconds_bucket{job="x",route=~"a|b"}[1m]))) / clamp_min(sum without (a) (up), 1e-9) > bool 2"#,
    );
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        ["mlx_hub:ttft_seconds_bucket", "up"]
    );
}

#[test]
fn compose_prometheus_and_grafana_files_agree() {
    let dir = deploy_dir();
    let compose = yaml(&dir.join("compose.yaml"));
    let services = compose["services"].as_mapping().expect("services");
    for name in ["postgres", "mlflow", "prometheus", "grafana", "hub"] {
        assert!(
            services.contains_key(name),
            "compose.yaml has no service {name}"
        );
    }
    // every bind-mounted file or folder exists
    for (name, svc) in services {
        for v in svc["volumes"].as_sequence().into_iter().flatten() {
            let src = v.as_str().unwrap().split(':').next().unwrap();
            if src.starts_with('.') || src.starts_with('/') {
                assert!(
                    dir.join(src).exists(),
                    "service {name:?} mounts {src}, which does not exist"
                );
            }
        }
    }
    // the hub: built from this repository, pointed at PostgreSQL and MLflow
    let hub = &compose["services"]["hub"];
    let context = dir.join(s(hub, &["build", "context"]));
    assert!(context.join(s(hub, &["build", "dockerfile"])).is_file());
    assert!(
        context.join("Cargo.toml").is_file(),
        "context is the repository root"
    );
    let db = s(hub, &["environment", "MLX_HUB_DATABASE_URL"]);
    let pg_db = s(
        &compose,
        &["services", "postgres", "environment", "POSTGRES_DB"],
    );
    assert!(
        db.starts_with("postgres://") && db.contains("@postgres:5432/") && db.ends_with(pg_db),
        "{db}"
    );
    let mlflow_port = compose["services"]["mlflow"]["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .find_map(|a| a.as_str()?.strip_prefix("--port="))
        .expect("mlflow --port=");
    assert_eq!(
        s(hub, &["environment", "MLX_HUB_MLFLOW_URI"]),
        format!("http://mlflow:{mlflow_port}")
    );
    // listening beyond loopback needs a token: a secret, shared with Prometheus
    assert_eq!(s(hub, &["environment", "MLX_HUB_HOST"]), "0.0.0.0");
    let token_file = s(hub, &["environment", "MLX_HUB_API_TOKEN_FILE"]);
    let secret = token_file
        .strip_prefix("/run/secrets/")
        .expect("a compose secret");
    assert!(
        compose["secrets"][secret].is_mapping(),
        "secret {secret} declared"
    );
    for svc in ["hub", "prometheus"] {
        assert!(
            compose["services"][svc]["secrets"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|v| v.as_str() == Some(secret)),
            "{svc} gets the token secret"
        );
    }
    let hub_port = s(hub, &["environment", "MLX_HUB_PORT"]);

    // Prometheus scrapes the hub's /metrics with that token
    let prom_path = dir.join("prometheus/prometheus.yml");
    let prom = yaml(&prom_path);
    let job = &prom["scrape_configs"][0];
    assert_eq!(s(job, &["job_name"]), "mlx-hub");
    assert_eq!(s(job, &["metrics_path"]), "/metrics");
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some(format!("hub:{hub_port}").as_str())
    );
    assert_eq!(s(job, &["authorization", "credentials_file"]), token_file);
    let mounted = compose["services"]["prometheus"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .any(|v| v.starts_with("./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml"));
    assert!(
        mounted,
        "prometheus mounts deploy/prometheus/prometheus.yml"
    );
    if promtool() {
        let out = Command::new("promtool")
            .args(["check", "config", "--syntax-only"])
            .arg(&prom_path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Grafana: the datasource the panels name, the folder the dashboards are mounted at
    let ds = yaml(&dir.join("grafana/provisioning/datasources/prometheus.yaml"));
    let ds = &ds["datasources"][0];
    assert_eq!(s(ds, &["type"]), "prometheus");
    assert_eq!(s(ds, &["url"]), "http://prometheus:9090");
    let provider = yaml(&dir.join("grafana/provisioning/dashboards/mlx-hub.yaml"));
    let path = s(&provider["providers"][0], &["options", "path"]);
    let grafana_mounts: Vec<&str> = compose["services"]["grafana"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        grafana_mounts.contains(&format!("./grafana/dashboards:{path}:ro").as_str()),
        "{grafana_mounts:?}"
    );
    assert!(grafana_mounts.contains(&"./grafana/provisioning:/etc/grafana/provisioning:ro"));
    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(dir.join("grafana/dashboards/mlx-hub.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(dashboard["uid"], "mlx-hub");
    let mut panels = 0;
    for p in dashboard["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        panels += 1;
        assert_eq!(
            p["datasource"]["uid"].as_str(),
            Some(s(ds, &["uid"])),
            "{}",
            p["title"]
        );
        assert!(
            p["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            p["title"]
        );
    }
    assert!(panels >= 20, "{panels} panels");

    // the PromQL parses
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 30, "{} queries", queries.len());
    if promtool() {
        let rules = tempfile::NamedTempFile::new().unwrap();
        let groups = json!({"groups": [{
            "name": "dashboard",
            "rules": queries.iter().enumerate()
                .map(|(i, q)| json!({"record": format!("dashboard:query_{i}"), "expr": q}))
                .collect::<Vec<_>>(),
        }]});
        std::fs::write(rules.path(), serde_yaml_ng::to_string(&groups).unwrap()).unwrap();
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(rules.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Sample names of a scrape (`name` of `name{labels} value`).
fn sample_names(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_metrics_exist_in_a_real_scrape() {
    let Some(fixture) = tiny_model("dashboard_metrics_exist_in_a_real_scrape") else {
        return;
    };
    let dashboard: Value = serde_json::from_slice(
        &std::fs::read(deploy_dir().join("grafana/dashboards/mlx-hub.json")).unwrap(),
    )
    .unwrap();
    let wanted: BTreeSet<String> = dashboard_queries(&dashboard)
        .iter()
        .flat_map(|q| metric_names(q))
        .collect();
    assert!(wanted.len() >= 30, "{wanted:?}");

    // a hub with the tiny model, a dataset and its in-process worker
    let th = TestHub::new(common::sqlite().await);
    let root = th.import_root.clone();
    copy_dir(&fixture, &root.join("tiny"));
    th.hub
        .register_model_folder_creating(
            "tiny",
            &RegisterFolder {
                path: "tiny".into(),
                ..RegisterFolder::default()
            },
            &root,
        )
        .await
        .unwrap();
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let rows = |n: usize| {
        (0..n)
            .map(|i| {
                json!({"text": format!("row {i}: the river crosses the stone {i} times.")})
                    .to_string()
                    + "\n"
            })
            .collect::<String>()
    };
    std::fs::write(data.join("train.jsonl"), rows(16)).unwrap();
    std::fs::write(data.join("valid.jsonl"), rows(4)).unwrap();
    th.hub
        .register_dataset_folder(
            &RegisterDataset {
                name: "rows".into(),
                path: "data".into(),
                description: String::new(),
            },
            &root,
        )
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(serve_on_with(
        th.hub.clone(),
        listener,
        ServeOptions {
            worker: Some(WorkerOptions {
                poll_interval: Duration::from_millis(100),
                ..WorkerOptions::default()
            }),
        },
        async move {
            let _ = stop_rx.changed().await;
        },
    ));
    let http = reqwest::Client::new();
    let scrape = || async {
        let r = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    };

    // a little traffic: a chat completion, a stream, an error
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    let r = http
        .get(format!("{base}/api/models/none"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // a training job that runs until cancelled: its gauges while it runs
    let r = http
        .post(format!("{base}/api/jobs"))
        .json(&json!({
            "base_model": "tiny",
            "dataset": "rows",
            "config": {
                "num_layers": -1, "batch_size": 2, "iters": 100000, "steps_per_report": 1,
                "steps_per_eval": 2, "val_batches": 1, "max_seq_length": 32,
                "learning_rate": 1e-4, "seed": 3,
            },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let job: Value = r.json().await.unwrap();
    let job_id = job["id"].as_i64().unwrap();
    let gauge = |name: &str| format!(r#"{name}{{job_id="{job_id}",model="tiny"}}"#);
    let mut seen = HashSet::new();
    let t0 = Instant::now();
    let running = loop {
        let text = scrape().await;
        seen.extend(sample_names(&text));
        let all = [
            "mlx_hub_training_loss",
            "mlx_hub_training_validation_loss",
            "mlx_hub_training_learning_rate",
            "mlx_hub_training_tokens_per_second",
            "mlx_hub_training_peak_memory_bytes",
            "mlx_hub_training_step",
        ];
        if all.iter().all(|n| sample(&text, &gauge(n)).is_some())
            && sample(&text, &gauge("mlx_hub_training_step")).unwrap() >= 3.0
        {
            break text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the job's gauges never all showed: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let loss = sample(&running, &gauge("mlx_hub_training_loss")).unwrap();
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    assert!(sample(&running, &gauge("mlx_hub_training_peak_memory_bytes")).unwrap() > 1e5);
    assert!(sample(&running, "mlx_hub_training_steps_total").unwrap() >= 3.0);
    assert!(sample(&running, "mlx_hub_training_step_duration_seconds_count").unwrap() >= 3.0);
    assert_eq!(
        sample(
            &running,
            r#"mlx_hub_job_queue_wait_seconds_count{kind="train"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&running, r#"mlx_hub_jobs{state="running"}"#),
        Some(1.0)
    );

    let r = http
        .post(format!("{base}/api/jobs/{job_id}/cancel"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let t0 = Instant::now();
    let ended = loop {
        let text = scrape().await;
        seen.extend(sample_names(&text));
        if sample(
            &text,
            r#"mlx_hub_jobs_finished_total{kind="train",state="cancelled"}"#,
        ) == Some(1.0)
        {
            break text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the job did not end: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(&ended, &gauge("mlx_hub_training_loss")),
        None,
        "removed at the end"
    );
    assert_eq!(
        sample(&ended, r#"mlx_hub_jobs{state="cancelled"}"#),
        Some(1.0)
    );
    assert!(sample(&ended, "mlx_hub:generation_tokens_total").unwrap() >= 2.0);
    assert_eq!(
        sample(
            &ended,
            r#"mlx_hub_http_requests_total{method="POST",route="/v1/chat/completions",status="200"}"#
        ),
        Some(2.0)
    );

    let missing: Vec<&String> = wanted.iter().filter(|n| !seen.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard uses metrics no scrape had: {missing:?}\nexported: {:?}",
        seen.iter().collect::<BTreeSet<_>>()
    );
    let families: BTreeSet<&str> = ended
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    eprintln!("exported metric families ({}):", families.len());
    for f in &families {
        eprintln!("  {f}");
    }
    let _ = stop.send(true);
    served.await.unwrap().unwrap();
}
