//! Exposure: CORS closed by default and open to configured origins only,
//! per-route body limits, timeouts for slow clients (header and body read,
//! over a real TCP server), and tokens never written to the logs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, header};
use common::http::{TestHub, assert_error};
use hub::Hub;
use hub::config::{ConfigOverrides, HubConfig, Secret};
use serde_json::json;

const TOKEN: &str = "exposure-token-0123456789abcdef";

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method("OPTIONS")
        .uri("/api/models")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .body(Body::empty())
        .unwrap()
}

async fn raw_response(
    app: &axum::Router,
    req: Request<Body>,
) -> axum::http::Response<axum::body::Body> {
    use tower::ServiceExt;
    app.clone().oneshot(req).await.unwrap()
}

#[tokio::test]
async fn cors_is_closed_by_default() {
    let t = TestHub::new(common::sqlite().await);
    let r = raw_response(&t.app, preflight("https://evil.example")).await;
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none(),
        "{:?}",
        r.headers()
    );
    let get = Request::get("/api/models")
        .header(header::ORIGIN, "https://evil.example")
        .body(Body::empty())
        .unwrap();
    let r = raw_response(&t.app, get).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app_origin = "https://app.example:8443";
    let t = TestHub::with(common::sqlite().await, |b| {
        b.cors_origins(vec![app_origin.into(), "http://localhost:3000".into()])
            .api_token(Some(Secret::new(TOKEN)))
    });
    // a preflight carries no credentials: answered before the token check
    let r = raw_response(&t.app, preflight(app_origin)).await;
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], app_origin);
    let methods = h[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap();
    assert!(
        methods.contains("POST") && methods.contains("DELETE"),
        "{methods}"
    );
    let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    // another origin gets nothing
    let r = raw_response(&t.app, preflight("https://evil.example")).await;
    assert!(
        r.headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none()
    );
    // the real request still needs the token; the answer is readable by the origin
    let get = |auth: bool| {
        let mut r = Request::get("/api/models").header(header::ORIGIN, app_origin);
        if auth {
            r = r.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        }
        r.body(Body::empty()).unwrap()
    };
    let r = raw_response(&t.app, get(false)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], app_origin);
    let r = raw_response(&t.app, get(true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], app_origin);
    let exposed = r.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
}

#[test]
fn cors_and_timeout_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let o = ConfigOverrides {
        data_dir: Some(dir.path().into()),
        ..Default::default()
    };
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let c = HubConfig::load_with_env(o.clone(), |_| None).unwrap();
    assert!(c.cors_origins.is_empty());
    assert_eq!(c.header_timeout, Duration::from_secs(30));
    assert_eq!(c.body_timeout, Duration::from_secs(60));
    let c = HubConfig::load_with_env(
        o.clone(),
        env(&[
            (
                "MLX_HUB_CORS_ORIGINS",
                "https://a.example, http://localhost:3000",
            ),
            ("MLX_HUB_HEADER_TIMEOUT_SECS", "5"),
            ("MLX_HUB_BODY_TIMEOUT_SECS", "7"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.cors_origins,
        vec!["https://a.example", "http://localhost:3000"]
    );
    assert_eq!(c.header_timeout, Duration::from_secs(5));
    assert_eq!(c.body_timeout, Duration::from_secs(7));
    // the flag wins over the environment
    let c = HubConfig::load_with_env(
        ConfigOverrides {
            cors_origins: vec!["https://flag.example".into()],
            ..o.clone()
        },
        env(&[("MLX_HUB_CORS_ORIGINS", "https://a.example")]),
    )
    .unwrap();
    assert_eq!(c.cors_origins, vec!["https://flag.example"]);
    for bad in ["a.example", "ftp://a.example", "https://a.example/path"] {
        let err = HubConfig::load_with_env(
            ConfigOverrides {
                cors_origins: vec![bad.into()],
                ..o.clone()
            },
            |_| None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("CORS origin"), "{bad}: {err}");
    }
    let err =
        HubConfig::load_with_env(o, env(&[("MLX_HUB_BODY_TIMEOUT_SECS", "soon")])).unwrap_err();
    assert!(
        err.to_string().contains("MLX_HUB_BODY_TIMEOUT_SECS"),
        "{err}"
    );
}

#[tokio::test]
async fn body_limits_are_per_route() {
    // TestHub: 64 KiB JSON limit, the default 1 GiB upload cap
    let t = TestHub::new(common::sqlite().await);
    let big = json!({"name": "m", "description": "d".repeat(64 * 1024)});
    let (s, b) = t.call("POST", "/api/models", Some(big)).await;
    assert_error(s, &b, 413, "payload_too_large");
    // an upload 4× the JSON limit is fine
    let rows: String = (0..8000)
        .map(|i| json!({"text": format!("row {i} with some padding")}).to_string() + "\n")
        .collect();
    assert!(rows.len() > 4 * 64 * 1024);
    let (s, b) = t
        .send(
            Request::post("/api/datasets/big/upload")
                .body(Body::from(rows))
                .unwrap(),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    // a declared length over the upload cap is refused before any byte is read
    let (s, b) = t
        .send(
            Request::post("/api/datasets/huge/upload")
                .header(header::CONTENT_LENGTH, (2u64 << 30).to_string())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_error(s, &b, 413, "payload_too_large");
    assert!(t.temp_files().is_empty(), "{:?}", t.temp_files());
}

/// A real server on a free loopback port with short timeouts.
struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _db: common::TestDb,
    _dir: tempfile::TempDir,
}

async fn server(configure: impl FnOnce(&mut HubConfig)) -> Server {
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = HubConfig::with_data_dir(dir.path().join("data"));
    config.database_url = db.url.clone();
    configure(&mut config);
    let hub = Hub::with_store(config, db.store.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        api::server::serve_on(hub, listener, async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server {
        addr,
        stop: Some(tx),
        task,
        _db: db,
        _dir: dir,
    }
}

impl Server {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}

/// Reads until the peer closes or `limit` passes; returns what came and when.
fn read_all(s: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                // one response is enough when the server keeps the connection
                if String::from_utf8_lossy(&out).contains("\"error\"") {
                    break;
                }
            }
            Err(_) => break,
        }
        if t.elapsed() > limit {
            break;
        }
    }
    (String::from_utf8_lossy(&out).to_string(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_time_out() {
    let srv = server(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = srv.addr;
    tokio::task::spawn_blocking(move || {
        // headers that never end: the connection is closed
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
        let (_, took) = read_all(&mut s, Duration::from_secs(10));
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(8),
            "closed after {took:?}"
        );
        // a JSON body that stops half-way: 408
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /api/models HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"name\": ",
        )
        .unwrap();
        let (text, took) = read_all(&mut s, Duration::from_secs(10));
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("request_timeout"), "{text}");
        assert!(took < Duration::from_secs(8), "{took:?}");
        // an upload that stalls: 408 too
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST /api/datasets/slow/upload HTTP/1.1\r\nHost: x\r\n\
              Content-Length: 100000\r\n\r\n{\"text\": \"a\"}\n",
        )
        .unwrap();
        let (text, took) = read_all(&mut s, Duration::from_secs(10));
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(took < Duration::from_secs(8), "{took:?}");
        // and the server still answers
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let (text, _) = read_all(&mut s, Duration::from_secs(10));
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    })
    .await
    .unwrap();
    srv.stop().await;
}

/// Everything every test in this binary logs, at TRACE, as text and JSON.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b1 = buf.clone();
        let b2 = buf.clone();
        let text = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || Writer(b1.clone()));
        let json = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(move || Writer(b2.clone()));
        let sub = tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::TRACE)
            .with(text)
            .with(json);
        tracing::subscriber::set_global_default(sub).unwrap();
        buf
    })
    .clone()
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_never_logged() {
    let logs = captured_logs();
    let srv = server(|c| c.api_token = Some(Secret::new(TOKEN))).await;
    let base = format!("http://{}", srv.addr);
    let http = reqwest::Client::new();
    let wrong = "wrong-token-fedcba9876543210";
    let mut seen = Vec::new();
    for (method, path, token, body) in [
        ("GET", "/api/models", TOKEN, None),
        ("GET", "/api/models/nope", TOKEN, None),
        ("POST", "/api/models", TOKEN, Some(json!({"name": 5}))),
        ("POST", "/api/models", TOKEN, Some(json!({"name": "m"}))),
        ("GET", "/api/models", wrong, None),
        ("GET", "/metrics", TOKEN, None),
        (
            "POST",
            "/v1/chat/completions",
            TOKEN,
            Some(json!({"model": "m", "messages": []})),
        ),
    ] {
        let mut r = http
            .request(method.parse().unwrap(), format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        seen.push(resp.status().as_u16());
    }
    assert_eq!(seen, vec![200, 404, 422, 201, 401, 200, 422]);
    // the token in a config's Debug output is redacted too
    let cfg = HubConfig {
        api_token: Some(Secret::new(TOKEN)),
        ..HubConfig::with_data_dir("/tmp/x")
    };
    tracing::info!(config = ?cfg, "config");
    srv.stop().await;
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).to_string();
    // the requests were logged (so the check below means something)
    assert!(text.contains("http.request"), "nothing logged");
    assert!(
        text.contains("/api/models/nope"),
        "request paths are logged"
    );
    for secret in [TOKEN, wrong, &TOKEN[..16]] {
        assert!(
            !text.contains(secret),
            "a token was logged: {}",
            text.lines()
                .filter(|l| l.contains(secret))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
