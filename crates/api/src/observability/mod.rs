//! The HTTP side of observability: the Prometheus `GET /metrics` exposition
//! ([`metrics`]) and per-request tracing spans, request ids, trace context and
//! HTTP metrics ([`http`]). Spans and figures of the services themselves are
//! in `hub::observability`.

pub mod http;
pub mod metrics;

pub use http::HttpMetrics;
