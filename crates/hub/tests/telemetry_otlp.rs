//! OTLP/HTTP export of request spans: a receiver in this test (axum on
//! `/v1/traces`, decoding `opentelemetry-proto` protobuf) gets the
//! `http.request` span of one API call, with its route pattern, status,
//! method, request id, server kind and the `mlx-hub` service name.
//!
//! One test in this binary: it installs the process-wide subscriber and sets
//! `OTEL_EXPORTER_OTLP_ENDPOINT` before any other thread exists.

mod common;

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::Request;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tower::ServiceExt;

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        AnyValue::IntValue(i) => Some(*i),
        AnyValue::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

#[test]
fn request_span_reaches_an_otlp_receiver() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    // SAFETY: the only test of this binary, before it starts any thread.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"));
        std::env::remove_var("OTEL_SERVICE_NAME");
    }
    let telemetry =
        hub::observability::telemetry::init(hub::observability::telemetry::LogFormat::Json)
            .unwrap();
    assert!(telemetry.exporting());

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Vec<Span>, Vec<KeyValue>)>();
        let receiver = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let tx = tx.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    for rs in req.resource_spans {
                        let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
                        let spans = rs.scope_spans.into_iter().flat_map(|s| s.spans).collect();
                        let _ = tx.send((spans, resource));
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

        let db = common::sqlite().await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = hub::HubConfig::with_data_dir(dir.path().join("data"));
        config.database_url = db.url.clone();
        let hub = hub::Hub::with_store(config, db.store.clone()).unwrap();
        let router = hub::http::router(hub);
        let resp = router
            .oneshot(
                Request::get("/api/models/missing-model")
                    .header("x-request-id", "trace-me-1")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 404);
        assert_eq!(resp.headers()["x-request-id"], "trace-me-1");

        let t0 = Instant::now();
        telemetry.flush();
        let (span, resource) =
            loop {
                let got = tokio::time::timeout(Duration::from_secs(20), rx.recv())
                    .await
                    .expect("no OTLP export within 20 s")
                    .unwrap();
                if let Some(s) = got.0.into_iter().find(|s| {
                    string_attr(&s.attributes, "request_id").as_deref() == Some("trace-me-1")
                }) {
                    break (s, got.1);
                }
            };
        eprintln!("span received {:.1?} after flush: {span:?}", t0.elapsed());
        assert_eq!(span.name, "http.request");
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert!(span.parent_span_id.is_empty(), "a root span");
        assert_eq!(span.trace_id.len(), 16);
        assert_eq!(
            string_attr(&span.attributes, "http.route").as_deref(),
            Some("/api/models/{name}")
        );
        assert_eq!(
            string_attr(&span.attributes, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(
            string_attr(&span.attributes, "url.path").as_deref(),
            Some("/api/models/missing-model")
        );
        assert_eq!(
            int_attr(&span.attributes, "http.response.status_code"),
            Some(404)
        );
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        assert_eq!(
            string_attr(&resource, "service.name").as_deref(),
            Some("mlx-hub")
        );
    });
}
