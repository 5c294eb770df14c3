//! Traces and JSON logs of real requests, received over OTLP/HTTP by a
//! receiver in this test (axum on `/v1/traces`, decoding the
//! `opentelemetry-proto` protobuf):
//!
//! - a 404 on a known route: a root server span named `GET /api/models/{name}`
//!   with the route, method, path, an integer status and the request id;
//!   an unknown path: a span named after the method alone;
//! - one chat completion sent with a W3C `traceparent`: its server span
//!   continues the caller's trace (same trace id, the caller's span as parent),
//!   the response returns a `traceparent` of that trace, and the span's
//!   children are the on-demand `model.load` and the `generate` span with the
//!   prompt and generated token counts the response reports, TTFT and finish
//!   reason;
//! - a streamed chat completion: its server span ends after the stream's
//!   generation does;
//! - the JSON log lines of the chat request carry its request id, trace id and
//!   the current span's id.
//!
//! One test in this binary: it installs the process-wide subscriber and sets
//! `OTEL_EXPORTER_OTLP_ENDPOINT` before any other thread exists.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, header};
use common::http::{TestHub, copy_dir, tiny_model};
use hub::registry::RegisterFolder;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtelStatus;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn str_attr(span: &Span, key: &str) -> Option<String> {
    match attr(span, key)? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

/// An integer attribute (exported as an integer, not a string).
fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        AnyValue::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn f64_attr(span: &Span, key: &str) -> Option<f64> {
    match attr(span, key)? {
        AnyValue::DoubleValue(v) => Some(*v),
        _ => None,
    }
}

fn resource_attr(rs: &[KeyValue], key: &str) -> Option<String> {
    rs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}

/// Log lines, as the subscriber writes them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: log line {l}")))
            .collect()
    }
}

/// Every span received so far, by span id.
struct Received {
    rx: tokio::sync::mpsc::UnboundedReceiver<ResourceSpans>,
    spans: HashMap<Vec<u8>, Span>,
    resource: Vec<KeyValue>,
}

impl Received {
    /// Waits until a span satisfies `pred` (at most 30 s); returns it.
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Span) -> bool) -> Span {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.spans.values().find(|s| pred(s)) {
                return s.clone();
            }
            let left = Duration::from_secs(30).saturating_sub(t0.elapsed());
            let rs = tokio::time::timeout(left, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no span {what} within 30 s: {:?}", self.names()))
                .unwrap();
            if let Some(r) = rs.resource {
                self.resource = r.attributes;
            }
            for s in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                self.spans.insert(s.span_id.clone(), s);
            }
        }
    }

    fn names(&self) -> Vec<&str> {
        self.spans.values().map(|s| s.name.as_str()).collect()
    }

    fn children(&self, parent: &Span) -> Vec<&Span> {
        let mut v: Vec<&Span> = self
            .spans
            .values()
            .filter(|s| s.parent_span_id == parent.span_id)
            .collect();
        v.sort_by_key(|s| s.start_time_unix_nano);
        v
    }
}

/// `name (duration) key=value …` without the code/thread attributes.
fn summary(span: &Span) -> String {
    let ms = (span.end_time_unix_nano - span.start_time_unix_nano) as f64 / 1e6;
    let attrs: Vec<String> = span
        .attributes
        .iter()
        .filter(|kv| {
            !(kv.key.starts_with("code.") || kv.key.starts_with("thread.") || kv.key == "target")
        })
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => format!("{s:?}"),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::DoubleValue(d)) => format!("{d:.4}"),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            format!("{}={v}", kv.key)
        })
        .collect();
    format!("{} ({ms:.1} ms) {}", span.name, attrs.join(" "))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn traces_and_logs_of_requests() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    // SAFETY: the only test of this binary, before it starts any thread.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
        std::env::remove_var("OTEL_SERVICE_NAME");
        std::env::remove_var("RUST_LOG");
    }
    let logs = Captured::default();
    let writer = logs.clone();
    let telemetry = hub::observability::telemetry::init_with_writer(
        hub::observability::telemetry::LogFormat::Json,
        tracing_subscriber::fmt::writer::BoxMakeWriter::new(move || writer.clone()),
    )
    .unwrap();
    assert!(telemetry.exporting());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<ResourceSpans>();
        let receiver = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let tx = tx.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for rs in req.resource_spans {
                        let _ = tx.send(rs);
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tokio::spawn(async move { axum::serve(listener, receiver).await });
        let mut got = Received {
            rx,
            spans: HashMap::new(),
            resource: Vec::new(),
        };

        let th = TestHub::new(common::sqlite().await);
        let app = th.app.clone();
        let send = |req: Request<Body>| {
            let app = app.clone();
            async move {
                let resp = app.oneshot(req).await.unwrap();
                let (parts, body) = resp.into_parts();
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                (parts, bytes)
            }
        };

        // 1. a 404 from a known route, and an unknown path
        let (parts, _) = send(
            Request::get("/api/models/missing-model")
                .header("x-request-id", "trace-me-1")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(parts.status, 404);
        assert_eq!(parts.headers["x-request-id"], "trace-me-1");
        let (parts, _) = send(
            Request::get("/no/such/path")
                .header("x-request-id", "trace-me-2")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(parts.status, 404);

        // 2. one chat completion, loading the model on demand, in the caller's trace
        let Some(fixture) = tiny_model("traces_and_logs_of_requests") else {
            return;
        };
        copy_dir(&fixture, &th.import_root.join("tiny"));
        th.hub
            .register_model_folder_creating(
                "tiny",
                &RegisterFolder {
                    path: "tiny".into(),
                    ..RegisterFolder::default()
                },
                &th.import_root,
            )
            .await
            .expect("register tiny");
        let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller_span = "00f067aa0ba902b7";
        let chat = json!({
            "model": "tiny",
            "messages": [{"role": "user", "content": "Hello there"}],
            "max_tokens": 6,
            "temperature": 0,
        });
        let (parts, bytes) = send(
            Request::post("/v1/chat/completions")
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-request-id", "chat-1")
                .header("traceparent", format!("00-{caller_trace}-{caller_span}-01"))
                .body(Body::from(chat.to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&bytes));
        let reply: Value = serde_json::from_slice(&bytes).unwrap();
        let traceparent = parts.headers["traceparent"].to_str().unwrap().to_owned();
        let tp: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(tp.len(), 4, "{traceparent}");
        assert_eq!(tp[1], caller_trace, "the response names the caller's trace");
        assert_ne!(tp[2], caller_span, "…and the hub's own span in it");

        // 3. the same, streamed
        let mut streamed = chat.clone();
        streamed["stream"] = json!(true);
        let (parts, bytes) = send(
            Request::post("/v1/chat/completions")
                .header(header::CONTENT_TYPE, "application/json")
                .header("x-request-id", "chat-stream")
                .body(Body::from(streamed.to_string()))
                .unwrap(),
        )
        .await;
        assert_eq!(parts.status, 200);
        assert!(String::from_utf8_lossy(&bytes).ends_with("data: [DONE]\n\n"));

        telemetry.flush();
        let by_request =
            |id: &'static str| move |s: &Span| str_attr(s, "request_id").as_deref() == Some(id);

        // the 404s
        let s404 = got.wait_for("trace-me-1", by_request("trace-me-1")).await;
        assert_eq!(s404.name, "GET /api/models/{name}");
        assert_eq!(s404.kind, SpanKind::Server as i32);
        assert!(s404.parent_span_id.is_empty(), "a root span");
        assert_eq!(s404.trace_id.len(), 16);
        assert_eq!(
            str_attr(&s404, "http.route").as_deref(),
            Some("/api/models/{name}")
        );
        assert_eq!(
            str_attr(&s404, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(
            str_attr(&s404, "url.path").as_deref(),
            Some("/api/models/missing-model")
        );
        assert_eq!(int_attr(&s404, "http.response.status_code"), Some(404));
        assert!(s404.end_time_unix_nano >= s404.start_time_unix_nano);
        let unknown = got.wait_for("trace-me-2", by_request("trace-me-2")).await;
        assert_eq!(unknown.name, "GET", "no route: the method alone");
        assert_eq!(str_attr(&unknown, "http.route"), None);
        assert_eq!(
            resource_attr(&got.resource, "service.name").as_deref(),
            Some("mlx-hub")
        );

        // the chat request's tree
        let http = got.wait_for("chat-1", by_request("chat-1")).await;
        let load = got
            .wait_for("model.load", |s| {
                s.name == "model.load" && s.parent_span_id == http.span_id
            })
            .await;
        let generate = got
            .wait_for("generate", |s| {
                s.name == "generate" && s.parent_span_id == http.span_id
            })
            .await;
        eprintln!("the chat request's spans:");
        for (depth, span) in [(0, &http), (1, &load), (1, &generate)] {
            eprintln!("{}{}", "  ".repeat(depth), summary(span));
        }
        assert_eq!(http.name, "POST /v1/chat/completions");
        assert_eq!(http.kind, SpanKind::Server as i32);
        assert_eq!(
            hex(&http.trace_id),
            caller_trace,
            "continues the caller's trace"
        );
        assert_eq!(
            hex(&http.parent_span_id),
            caller_span,
            "under the caller's span"
        );
        assert_eq!(
            hex(&http.span_id),
            tp[2],
            "the traceparent returned names this span"
        );
        assert_eq!(int_attr(&http, "http.response.status_code"), Some(200));
        let children: Vec<&str> = got
            .children(&http)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(
            children,
            ["model.load", "generate"],
            "the request's children"
        );

        assert_eq!(load.trace_id, http.trace_id);
        assert_eq!(str_attr(&load, "model").as_deref(), Some("tiny:1"));
        assert_eq!(str_attr(&load, "purpose").as_deref(), Some("serve"));
        assert_eq!(str_attr(&load, "weights_policy").as_deref(), Some("auto"));
        assert!(str_attr(&load, "weights").is_some_and(|w| !w.is_empty()));
        assert!(int_attr(&load, "bytes").is_some_and(|b| b > 0), "{load:?}");
        assert!(f64_attr(&load, "duration_seconds").is_some_and(|d| d > 0.0));
        assert!(load.end_time_unix_nano <= generate.start_time_unix_nano + 1_000_000);

        let usage = &reply["usage"];
        assert_eq!(str_attr(&generate, "model").as_deref(), Some("tiny:1"));
        assert_eq!(
            int_attr(&generate, "prompt_tokens"),
            usage["prompt_tokens"].as_i64()
        );
        assert_eq!(
            int_attr(&generate, "generated_tokens"),
            usage["completion_tokens"].as_i64()
        );
        assert_eq!(int_attr(&generate, "cached_tokens"), Some(0));
        assert_eq!(
            str_attr(&generate, "finish_reason").as_deref(),
            reply["choices"][0]["finish_reason"].as_str()
        );
        let ttft = f64_attr(&generate, "ttft_seconds").expect("ttft_seconds");
        let generate_secs =
            (generate.end_time_unix_nano - generate.start_time_unix_nano) as f64 / 1e9;
        assert!(
            ttft > 0.0 && ttft <= generate_secs,
            "ttft {ttft} of {generate_secs} s"
        );
        assert!(f64_attr(&generate, "queue_seconds").is_some());
        assert!(generate.start_time_unix_nano >= http.start_time_unix_nano);
        assert!(generate.end_time_unix_nano <= http.end_time_unix_nano);
        assert_ne!(
            generate.status.as_ref().map(|s| s.code),
            Some(OtelStatus::Error as i32)
        );

        // the streamed request: the model is loaded; its span lasts to the stream's end
        let stream_http = got.wait_for("chat-stream", by_request("chat-stream")).await;
        let stream_gen = got
            .wait_for("streamed generate", |s| {
                s.name == "generate" && s.parent_span_id == stream_http.span_id
            })
            .await;
        let names: Vec<&str> = got
            .children(&stream_http)
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names, ["generate"], "no load: the model stayed loaded");
        assert!(stream_http.parent_span_id.is_empty());
        assert!(
            stream_http.end_time_unix_nano >= stream_gen.end_time_unix_nano,
            "the server span of a stream ends with its last chunk"
        );

        // JSON log lines of the chat request: request id, trace id, span id
        let lines = logs.lines();
        let chosen = lines
            .iter()
            .find(|l| l["fields"]["message"] == "serving weights chosen")
            .unwrap_or_else(|| panic!("no 'serving weights chosen' line in {lines:#?}"));
        assert_eq!(chosen["request_id"], "chat-1", "{chosen}");
        assert_eq!(chosen["trace_id"], caller_trace, "{chosen}");
        assert_eq!(chosen["span_id"], hex(&load.span_id), "{chosen}");
        assert_eq!(chosen["level"], "INFO");
        for l in lines.iter().filter(|l| l["request_id"] == "chat-1") {
            assert_eq!(l["trace_id"], caller_trace, "{l}");
        }
    });
}
