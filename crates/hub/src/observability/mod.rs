//! Observability of the services: training figures and step-group spans
//! ([`training`]), the log format and OTLP trace export ([`telemetry`]). The
//! HTTP side (the `GET /metrics` exposition, request spans, request ids and
//! HTTP metrics) lives in the `api` crate's `observability`.
//!
//! The serving pool, the store and MLX keep their own figures; they are read
//! at scrape time, so nothing here sits on the hot path but one counter
//! increment and one histogram observation per HTTP request (and a few per
//! training report).
//!
//! Spans (OpenTelemetry names; exported over OTLP when configured):
//!
//! | span | where | attributes |
//! |---|---|---|
//! | `METHOD /route/{pattern}` (server) | every HTTP request | `http.request.method`, `http.route`, `http.response.status_code`, `url.path`, `request_id`; error status on 5xx |
//! | `model.load` | a model loaded for serving (child of the request that needed it) or for training | `model`, `weights_policy`, `weights`, `bytes`, `duration_seconds` |
//! | `generate` | one generation (child of its request; runs on the model's worker thread) | `model`, `prompt_tokens`, `cached_tokens`, `generated_tokens`, `queue_seconds`, `ttft_seconds`, `finish_reason` |
//! | `job.run` | every job a worker runs | `job_id`, `kind`, `attempt`, `worker`, `state`, `run_id` |
//! | `train.steps` | one training report interval (child of `job.run`) | `first_step`, `last_step`, `steps`, `loss`, `learning_rate`, `tokens`, `tokens_per_second`, `step_seconds`, `peak_memory_bytes` |

pub mod telemetry;
pub mod training;

pub use training::TrainingMetrics;
