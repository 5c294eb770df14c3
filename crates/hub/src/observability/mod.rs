//! Observability: the Prometheus `GET /metrics` exposition ([`metrics`]), and
//! per-request tracing spans, request ids and HTTP metrics ([`http`]), the
//! log format and OTLP trace export ([`telemetry`]).
//!
//! The serving pool, the store and MLX keep their own figures; they are read
//! at scrape time, so nothing here sits on the hot path but one counter
//! increment and one histogram observation per HTTP request.

pub mod http;
pub mod metrics;
pub mod telemetry;

pub use http::HttpMetrics;
