//! Serving metrics, kept for the observability exporter: latency histograms
//! (time to first token, inter-token latency, end-to-end, queue time), token
//! counters, running/waiting gauges and prefix-cache queries/hits. Plain
//! atomics (no exporter dependency here); names are vLLM's, as an exporter
//! should publish them (`mlx_hub:time_to_first_token_seconds`, …), see
//! [`ServingMetrics::snapshot`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds (seconds) of the latency buckets (vLLM's TTFT buckets).
pub const LATENCY_BUCKETS: [f64; 18] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0,
];

/// A cumulative histogram over [`LATENCY_BUCKETS`] (plus `+Inf`).
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                cumulative += b.load(Ordering::Relaxed);
                (
                    LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                    cumulative,
                )
            })
            .collect();
        HistogramSnapshot {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram as Prometheus exposes it: `(le, cumulative count)`, count, sum.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// Every model's serving figures together (one per pool).
#[derive(Debug, Default)]
pub struct ServingMetrics {
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_request_latency: Histogram,
    pub queue_time: Histogram,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub requests_finished: AtomicU64,
    pub num_requests_running: AtomicU64,
    pub num_requests_waiting: AtomicU64,
    pub prefix_cache_queries: AtomicU64,
    pub prefix_cache_hits: AtomicU64,
    /// Prompt tokens served from the prefix cache.
    pub prefix_cache_hit_tokens: AtomicU64,
    /// Decode steps run, and the sequences they stepped (their ratio is the
    /// mean batch size).
    pub decode_steps: AtomicU64,
    pub decode_rows: AtomicU64,
}

/// A point-in-time copy, keyed by the exported metric names.
#[derive(Debug, Clone, Serialize)]
pub struct MetricsSnapshot {
    pub histograms: Vec<(&'static str, HistogramSnapshot)>,
    pub counters: Vec<(&'static str, u64)>,
    pub gauges: Vec<(&'static str, u64)>,
}

impl ServingMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            histograms: vec![
                (
                    "mlx_hub:time_to_first_token_seconds",
                    self.time_to_first_token.snapshot(),
                ),
                (
                    "mlx_hub:inter_token_latency_seconds",
                    self.inter_token_latency.snapshot(),
                ),
                (
                    "mlx_hub:e2e_request_latency_seconds",
                    self.e2e_request_latency.snapshot(),
                ),
                (
                    "mlx_hub:request_queue_time_seconds",
                    self.queue_time.snapshot(),
                ),
            ],
            counters: vec![
                ("mlx_hub:prompt_tokens_total", c(&self.prompt_tokens)),
                (
                    "mlx_hub:generation_tokens_total",
                    c(&self.generation_tokens),
                ),
                ("mlx_hub:request_success_total", c(&self.requests_finished)),
                (
                    "mlx_hub:prefix_cache_queries_total",
                    c(&self.prefix_cache_queries),
                ),
                (
                    "mlx_hub:prefix_cache_hits_total",
                    c(&self.prefix_cache_hits),
                ),
                (
                    "mlx_hub:prefix_cache_hit_tokens_total",
                    c(&self.prefix_cache_hit_tokens),
                ),
                ("mlx_hub:decode_steps_total", c(&self.decode_steps)),
                ("mlx_hub:decode_rows_total", c(&self.decode_rows)),
            ],
            gauges: vec![
                (
                    "mlx_hub:num_requests_running",
                    c(&self.num_requests_running),
                ),
                (
                    "mlx_hub:num_requests_waiting",
                    c(&self.num_requests_waiting),
                ),
            ],
        }
    }

    pub(crate) fn add(a: &AtomicU64, n: u64) {
        a.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(a: &AtomicU64, n: u64) {
        // gauges never go below zero even if a path double-counts
        let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }
}
