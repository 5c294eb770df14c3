//! Per-request observation: a tracing span (an OpenTelemetry server span named
//! `METHOD /route/{pattern}`, continuing the caller's W3C `traceparent`), the
//! request id echoed in `x-request-id` (and the trace in `traceparent` when
//! spans are exported), and the HTTP request counter and duration histogram
//! of `/metrics`.
//!
//! Two layers, because axum only knows the matched route inside routing:
//! [`observe`] (the outermost layer) creates the span without entering it and
//! hands it on in the request's extensions; [`mark_route`] (a `route_layer`)
//! names it after the matched route pattern, enters it around the handler and
//! copies [`MatchedPath`] onto the response. A span is named only until it is
//! first entered (OpenTelemetry starts it then), hence this order.
//!
//! Requests answered before routing — 401 from the token check, 404 for an
//! unknown path — are labelled `route="unmatched"` (span name: the method
//! alone, as OpenTelemetry's HTTP conventions say). That is deliberate: the
//! token check runs before routing so that an unauthenticated client cannot
//! tell known paths from unknown ones, and the label keeps its cardinality
//! bounded whatever paths clients send.
//!
//! Durations run to the end of the response body, so a streamed (SSE/NDJSON)
//! response is timed to its last chunk, and its span ends there too; a client
//! that goes away ends both when the body is dropped.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; longer (or non-printable) ones
/// are replaced by a fresh id.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Upper bounds (seconds) of the HTTP duration buckets: registry and job
/// calls take milliseconds; generations (streamed ones timed to their last
/// chunk) take seconds to minutes.
pub const HTTP_DURATION_BUCKETS: [f64; 17] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

/// Label set of the HTTP metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

type HistogramFamily = Family<HttpLabels, Histogram, fn() -> Histogram>;

/// The HTTP request metrics of one router (cheap to clone: shared counters).
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    pub requests: Family<HttpLabels, Counter>,
    pub duration: HistogramFamily,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            Histogram::new(HTTP_DURATION_BUCKETS)
        }
        HttpMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(histogram as fn() -> Histogram),
        }
    }
}

/// The request's span, from [`observe`] to [`mark_route`].
#[derive(Clone)]
struct RequestSpan(tracing::Span);

/// `route_layer`: names the request's span after the matched route, runs the
/// handler inside it, and hands the matched route pattern to [`observe`].
pub async fn mark_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let span = req
        .extensions()
        .get::<RequestSpan>()
        .map_or_else(tracing::Span::none, |s| s.0.clone());
    if let Some(m) = &matched {
        span.record(
            "otel.name",
            format!("{} {}", req.method(), m.as_str()).as_str(),
        );
        span.record("http.route", m.as_str());
    }
    let mut resp = next.run(req).instrument(span).await;
    if let Some(m) = matched {
        resp.extensions_mut().insert(m);
    }
    resp
}

/// Outermost layer: span, request id, trace context, HTTP metrics.
pub async fn observe(State(metrics): State<HttpMetrics>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    // `otel.*` fields are read by tracing-opentelemetry: span name, kind and
    // status; the rest become attributes (OpenTelemetry's HTTP names).
    let span = tracing::info_span!(
        "http.request",
        otel.name = Empty,
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = Empty,
        http.response.status_code = Empty,
        url.path = %req.uri().path(),
        request_id = %request_id,
        "error.type" = Empty,
    );
    continue_trace(&span, req.headers());
    req.extensions_mut().insert(RequestSpan(span.clone()));
    let resp = next.run(req).await;

    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let status = resp.status().as_u16();
    if route.is_none() {
        span.record("otel.name", method.as_str());
    }
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
        span.record("error.type", status.to_string().as_str());
    }
    let (mut parts, body) = resp.into_parts();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        parts.headers.insert(REQUEST_ID_HEADER, v);
    }
    echo_trace(&span, &mut parts.headers);
    let end = EndOfResponse {
        metrics,
        labels: HttpLabels {
            method,
            route: route.unwrap_or_else(|| "unmatched".to_owned()),
            status,
        },
        start,
        span,
    };
    let mut body = ObservedBody {
        inner: body,
        end: Some(end),
    };
    if http_body::Body::is_end_stream(&body.inner) {
        body.finish();
    }
    Response::from_parts(parts, Body::new(body))
}

/// Makes `span` a child of the caller's trace when the request carries a
/// valid W3C `traceparent` (and `tracestate`). A no-op without OTel export.
fn continue_trace(span: &tracing::Span, headers: &HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        // fails only when no OpenTelemetry layer is installed
        let _ = span.set_parent(cx);
    }
}

/// Returns the request's trace as `traceparent` (only when spans are
/// exported: otherwise the span context is not valid).
fn echo_trace(span: &tracing::Span, headers: &mut HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
    }
}

/// What is recorded when a response's body ends (or is dropped).
struct EndOfResponse {
    metrics: HttpMetrics,
    labels: HttpLabels,
    start: Instant,
    span: tracing::Span,
}

/// A response body that records the request's metrics at its end and polls
/// its inner body inside the request's span (so the span ends there).
struct ObservedBody {
    inner: Body,
    end: Option<EndOfResponse>,
}

impl ObservedBody {
    fn finish(&mut self) {
        let Some(end) = self.end.take() else { return };
        let elapsed = end.start.elapsed();
        end.span.in_scope(|| {
            tracing::debug!(
                latency_ms = elapsed.as_secs_f64() * 1e3,
                status = end.labels.status,
                "request finished"
            )
        });
        end.metrics.requests.get_or_create(&end.labels).inc();
        end.metrics
            .duration
            .get_or_create(&end.labels)
            .observe(elapsed.as_secs_f64());
    }
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let span = this.end.as_ref().map(|e| e.span.clone());
        let _entered = span.as_ref().map(tracing::Span::enter);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            // before the last bytes go out: a client that has read the whole
            // response sees it counted
            this.finish();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // the client went away before the end (or the body was never polled)
        self.finish();
    }
}

fn is_valid_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.bytes().all(|b| b.is_ascii_graphic())
}

fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(is_valid_request_id("abc-123"));
        assert!(!is_valid_request_id(""));
        assert!(!is_valid_request_id("has space"));
        assert!(!is_valid_request_id(&"x".repeat(129)));
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_request_id());
    }
}
