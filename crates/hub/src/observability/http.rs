//! Per-request observation: a tracing span (method, matched route, status,
//! request id), the request id echoed in `x-request-id`, and the HTTP request
//! counter and duration histogram of `/metrics`.
//!
//! Two layers, because axum only knows the matched route inside routing:
//! [`mark_route`] (a `route_layer`) copies [`MatchedPath`] onto the response,
//! and [`observe`] (the outermost layer) reads it back. Requests answered
//! before routing (401 from the token check, 404 fallback) are labelled
//! `route="unmatched"`, which keeps the label's cardinality bounded.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::Instrument;
use tracing::field::Empty;

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id kept; longer (or non-printable) ones
/// are replaced by a fresh id.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Upper bounds (seconds) of the HTTP duration buckets: registry and job
/// calls take milliseconds; non-streamed generations take seconds. Streamed
/// responses are timed to their headers (the serving histograms time the
/// tokens).
pub const HTTP_DURATION_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
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

/// `route_layer`: hands the matched route pattern to [`observe`].
pub async fn mark_route(req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let mut resp = next.run(req).await;
    if let Some(m) = matched {
        resp.extensions_mut().insert(m);
    }
    resp
}

/// Outermost layer: span, request id, HTTP metrics.
pub async fn observe(State(metrics): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let request_id = req
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid_request_id(v))
        .map(str::to_owned)
        .unwrap_or_else(new_request_id);
    // `otel.kind` marks the span as a server span in OpenTelemetry exports;
    // route and status are only known once the router has answered.
    let span = tracing::info_span!(
        "http.request",
        otel.kind = "server",
        http.request.method = %method,
        http.route = Empty,
        http.response.status_code = Empty,
        url.path = %req.uri().path(),
        request_id = %request_id,
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let route = resp
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = resp.status().as_u16();
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", status);
    span.in_scope(|| {
        tracing::debug!(
            latency_ms = elapsed.as_secs_f64() * 1e3,
            status,
            "request finished"
        )
    });
    let labels = HttpLabels {
        method,
        route,
        status,
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
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
