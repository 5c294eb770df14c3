//! `GET /metrics`: the Prometheus text exposition (format 0.0.4), built with
//! `prometheus-client` at each scrape from
//!
//! - the HTTP request counter and duration histogram ([`HttpMetrics`]);
//! - the serving pool's snapshot (vLLM's names: `mlx_hub:time_to_first_token_seconds`, …);
//! - jobs by state and registry counts (a few `COUNT(*)` queries);
//! - training: step durations, queue wait, per-running-job loss, learning
//!   rate, tokens/s, peak memory ([`super::training`]);
//! - MLX active/peak/cache memory, process resident memory;
//! - `mlx_hub_build_info{version, commit, mlx_version, blas} 1`.

use std::sync::OnceLock;

use axum::extract::{Extension, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::http::HttpMetrics;
use crate::error::ApiResult;
use hub::error::HubError;
use hub::service::Hub;
use hub::serving::metrics::MetricsSnapshot;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
    mlx_version: String,
    blas: String,
}

/// The handler of `GET /metrics`.
pub(crate) async fn scrape(
    State(hub): State<Hub>,
    Extension(http): Extension<HttpMetrics>,
) -> ApiResult<Response> {
    let body = render(&hub, &http).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        body,
    )
        .into_response())
}

/// Every metric of this hub, in the Prometheus text format.
pub async fn render(hub: &Hub, http: &HttpMetrics) -> ApiResult<String> {
    let mut registry = Registry::default();
    registry.register(
        "mlx_hub_http_requests",
        "HTTP requests answered, by method, matched route pattern and status",
        http.requests.clone(),
    );
    registry.register(
        "mlx_hub_http_request_duration_seconds",
        "Time from request to the end of the response body (streams: their last chunk), by method, matched route pattern and status",
        http.duration.clone(),
    );
    registry.register_collector(Box::new(ServingCollector(hub.serving.metrics().snapshot())));

    let jobs = Family::<StateLabel, Gauge>::default();
    for (state, n) in hub.store.count_jobs_by_state().await? {
        jobs.get_or_create(&StateLabel {
            state: state.as_str().to_owned(),
        })
        .set(n);
    }
    registry.register("mlx_hub_jobs", "Training jobs in each state", jobs);
    hub::observability::training::TrainingMetrics::global().register(&mut registry);

    let inventory = hub.store.inventory().await?;
    registry.register(
        "mlx_hub_models",
        "Models in the registry",
        ConstGauge::new(inventory.models),
    );
    let versions = Family::<StatusLabel, Gauge>::default();
    for status in ["registering", "ready", "failed", "archived"] {
        versions
            .get_or_create(&StatusLabel {
                status: status.to_owned(),
            })
            .set(0);
    }
    for (status, n) in inventory.versions_by_status {
        versions.get_or_create(&StatusLabel { status }).set(n);
    }
    registry.register(
        "mlx_hub_model_versions",
        "Model versions in the registry, by status",
        versions,
    );
    let (datasets, dataset_versions) = (inventory.datasets, inventory.dataset_versions);
    registry.register(
        "mlx_hub_datasets",
        "Datasets (distinct names) in the registry",
        ConstGauge::new(datasets),
    );
    registry.register(
        "mlx_hub_dataset_versions",
        "Dataset versions in the registry",
        ConstGauge::new(dataset_versions),
    );

    let mem = mlx::system::memory_stats();
    for (name, help, bytes) in [
        (
            "mlx_hub_mlx_active_memory_bytes",
            "Memory held by live MLX arrays",
            mem.active,
        ),
        (
            "mlx_hub_mlx_peak_memory_bytes",
            "Most memory MLX arrays have held since start",
            mem.peak,
        ),
        (
            "mlx_hub_mlx_cache_memory_bytes",
            "Freed MLX buffers kept for reuse",
            mem.cache,
        ),
        (
            "mlx_hub_mlx_memory_limit_bytes",
            "The memory limit MLX tries to stay under",
            mem.limit,
        ),
    ] {
        registry.register(name, help, ConstGauge::new(bytes as i64));
    }
    if let Some(m) = memory_stats::memory_stats() {
        registry.register(
            "mlx_hub_process_resident_memory_bytes",
            "Resident memory of the hub process",
            ConstGauge::new(m.physical_mem as i64),
        );
    }

    let build = Family::<BuildLabels, Gauge>::default();
    build.get_or_create(build_labels()).set(1);
    registry.register(
        "mlx_hub_build_info",
        "Always 1; the labels tell the hub version, its commit, the MLX version and the BLAS MLX calls",
        build,
    );

    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        .map_err(|e| HubError::Internal(format!("encoding metrics: {e}")))?;
    Ok(out)
}

fn build_labels() -> &'static BuildLabels {
    // the BLAS probe asks the dynamic loader: once per process is enough
    static LABELS: OnceLock<BuildLabels> = OnceLock::new();
    LABELS.get_or_init(|| BuildLabels {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        commit: hub::host::GIT_COMMIT.to_owned(),
        mlx_version: hub::host::HostInfo::detect().mlx_version,
        blas: mlx::system::blas().kind.to_owned(),
    })
}

/// The serving pool's snapshot, under the names it gives.
#[derive(Debug)]
struct ServingCollector(MetricsSnapshot);

impl Collector for ServingCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (name, h) in &self.0.histograms {
            let help = serving_help(name);
            let metric = encoder.encode_descriptor(name, &help, None, MetricType::Histogram)?;
            // the snapshot is cumulative; the encoder wants per-bucket counts
            let mut previous = 0;
            let buckets: Vec<(f64, u64)> = h
                .buckets
                .iter()
                .map(|&(le, cumulative)| {
                    let n = cumulative - previous;
                    previous = cumulative;
                    (le, n)
                })
                .collect();
            let mut metric = metric;
            metric.encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)?;
        }
        for (name, v) in &self.0.counters {
            // the encoder appends `_total` to counters itself
            let base = name.strip_suffix("_total").unwrap_or(name);
            let help = serving_help(name);
            let counter = ConstCounter::new(*v);
            let metric = encoder.encode_descriptor(base, &help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        for (name, v) in &self.0.gauges {
            let help = serving_help(name);
            let gauge = ConstGauge::new(*v as i64);
            let metric = encoder.encode_descriptor(name, &help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

/// HELP text of the serving metrics (by their snapshot names).
fn serving_help(name: &str) -> String {
    let known = match name.trim_start_matches("mlx_hub:") {
        "time_to_first_token_seconds" => "Time from request arrival to its first generated token",
        "inter_token_latency_seconds" => "Time between consecutive generated tokens",
        "e2e_request_latency_seconds" => "Time from request arrival to its last token",
        "request_queue_time_seconds" => "Time a request waited before its prefill started",
        "prompt_tokens_total" => "Prompt tokens processed",
        "generation_tokens_total" => "Tokens generated",
        "request_success_total" => "Generation requests finished",
        "prefix_cache_queries_total" => "Prefix-cache lookups",
        "prefix_cache_hits_total" => "Prefix-cache lookups that reused cached tokens",
        "prefix_cache_hit_tokens_total" => "Prompt tokens served from the prefix cache",
        "decode_steps_total" => "Batched decode steps run",
        "decode_rows_total" => {
            "Sequences stepped by decode steps (divide by steps for mean batch size)"
        }
        "num_requests_running" => "Generation requests being decoded",
        "num_requests_waiting" => "Generation requests waiting for a slot",
        _ => "",
    };
    if known.is_empty() {
        format!("Serving metric {name}")
    } else {
        known.to_owned()
    }
}
