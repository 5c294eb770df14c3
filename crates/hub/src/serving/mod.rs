//! Serving: the pool of loaded models and their model threads (first slice of the
//! inference service).
//!
//! - [`Pool`]: only registered versions are served — a request names a model
//!   (`name`, `name:3`, `name:alias`, `name@alias`), the store resolves it,
//!   the version's files are checked out once (`checkout_version`: hard links by sha) into
//!   `<data-dir>/cache/models/<version-id>/` (no path from a request ever
//!   reaches the file system), and a [`model_thread`] owns the model and its
//!   tokenizer. Models load on first use, stay for their keep-alive (default
//!   5 minutes; per request `keep_alive`: 0 unloads after the request, negative
//!   keeps forever), and the least recently used idle models unload when a load
//!   would pass the memory budget (estimate: the weight files' sizes). A model
//!   larger than the budget is refused with the numbers.
//! - Scheduling: continuous batching per model thread (up to `max_running`
//!   sequences share each decode step, chunked prefill, a prefix cache; see
//!   [`model_thread`]); the waiting queue is bounded and a full queue is a `503`
//!   with `Retry-After`.
//! - [`metrics::ServingMetrics`]: latency histograms, token counters, gauges,
//!   prefix-cache figures, for the exporter ([`Pool::metrics`]).
//!
//! Configuration (environment only in this slice): `MLX_HUB_SERVING_MEMORY_BYTES`
//! (default: 75% of physical memory, else 8 GiB), `MLX_HUB_SERVING_QUEUE`
//! (waiting requests per model, default 64), `MLX_HUB_SERVING_MAX_RUNNING`
//! (sequences batched per model, default 8), `MLX_HUB_SERVING_PREFILL_CHUNK`
//! (prompt tokens per prefill chunk, default 512),
//! `MLX_HUB_PREFIX_CACHE_BYTES` (prefix cache per model, default 256 MiB; 0
//! turns it off), `MLX_HUB_SERVING_WEIGHTS` (`auto`, `native` or `float32`,
//! see [`WeightsPolicy`]; `MLX_HUB_SERVING_DENSE_F32=1` is an alias of
//! `float32`), `MLX_HUB_KEEP_ALIVE` (default `5m`).
//!
//! Adapter versions (a trained LoRA/DoRA/full fine-tune registered with its
//! base version in its lineage) are served as their base version's weights
//! with the adapter applied unfused, as the engine's own adapted model
//! computes them; the pool entry is the adapter version's.

pub mod metrics;
pub mod model_thread;
mod prefix_cache;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tracing::Instrument;

use crate::artifacts::Artifacts;
use crate::error::HubError;
use crate::store::{Store, VersionStatus};

pub use model_thread::{Event, Job, Prompt, TokenOut, generate_span};

/// Default keep-alive of a loaded model.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(300);
/// Default bound on the waiting requests of one model.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;
/// Default bound on the sequences one model decodes together.
pub const DEFAULT_MAX_RUNNING: usize = 8;
/// Default prompt tokens per prefill chunk.
pub const DEFAULT_PREFILL_CHUNK: usize = 512;
/// Default prefix-cache size per model.
pub const DEFAULT_PREFIX_CACHE_BYTES: usize = 256 << 20;

/// Settings of the pool.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    /// Sum of the loaded models' weight sizes may not pass this.
    pub memory_budget_bytes: u64,
    pub keep_alive: KeepAlive,
    /// Requests waiting per model (the running ones not counted).
    pub queue_capacity: usize,
    /// Sequences decoded together per model (prefilling ones included).
    pub max_running: usize,
    /// Prompt tokens per prefill chunk (interleaved with decode steps).
    pub prefill_chunk: usize,
    /// Bytes of KV cache kept per model for prefix reuse (0: off).
    pub prefix_cache_bytes: usize,
    /// Which weights a loaded model keeps (see [`WeightsPolicy`]).
    pub weights: WeightsPolicy,
    /// `Retry-After` of a 503, in seconds.
    pub retry_after_secs: u64,
    /// How often expired models are looked for.
    pub reap_interval: Duration,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            memory_budget_bytes: crate::host::default_memory_budget(),
            keep_alive: KeepAlive::For(DEFAULT_KEEP_ALIVE),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_running: DEFAULT_MAX_RUNNING,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            prefix_cache_bytes: DEFAULT_PREFIX_CACHE_BYTES,
            weights: WeightsPolicy::Auto,
            retry_after_secs: 1,
            reap_interval: Duration::from_millis(500),
        }
    }
}

impl ServingConfig {
    /// The defaults overridden by the `MLX_HUB_SERVING_*`, `MLX_HUB_PREFIX_CACHE_BYTES`
    /// and `MLX_HUB_KEEP_ALIVE` values `env` gives (the config layer passes the
    /// process environment). A value that does not parse names its variable.
    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut c = ServingConfig::default();
        let var = |k: &str| env(k).filter(|v| !v.is_empty());
        let number = |key: &str, v: &str| format!("{key}: {v:?} is not a number");
        if let Some(v) = var("MLX_HUB_SERVING_MEMORY_BYTES") {
            c.memory_budget_bytes = v
                .parse()
                .map_err(|_| number("MLX_HUB_SERVING_MEMORY_BYTES", &v))?;
        }
        for (key, slot) in [
            ("MLX_HUB_SERVING_QUEUE", &mut c.queue_capacity),
            ("MLX_HUB_SERVING_MAX_RUNNING", &mut c.max_running),
            ("MLX_HUB_SERVING_PREFILL_CHUNK", &mut c.prefill_chunk),
            ("MLX_HUB_PREFIX_CACHE_BYTES", &mut c.prefix_cache_bytes),
        ] {
            if let Some(v) = var(key) {
                *slot = v.parse::<usize>().map_err(|_| number(key, &v))?;
            }
        }
        if let Some(v) = var("MLX_HUB_SERVING_DENSE_F32")
            && matches!(v.as_str(), "1" | "true" | "yes" | "on")
        {
            c.weights = WeightsPolicy::Float32;
        }
        if let Some(v) = var("MLX_HUB_SERVING_WEIGHTS") {
            c.weights = WeightsPolicy::parse(&v).ok_or_else(|| {
                format!("MLX_HUB_SERVING_WEIGHTS: {v:?} is not auto, native or float32")
            })?;
        }
        if let Some(v) = var("MLX_HUB_KEEP_ALIVE") {
            c.keep_alive = KeepAlive::parse(&serde_json::Value::String(v.clone()))
                .map_err(|e| format!("MLX_HUB_KEEP_ALIVE: {v:?}: {e}"))?;
        }
        Ok(c)
    }
}

/// Which weights a served model keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsPolicy {
    /// Dense float32 on MLX's CPU device when the float32 size fits the memory
    /// budget (a float32 matmul is BLAS there, several times faster than a
    /// quantized or half-precision one, and a batch shares one weight pass);
    /// else the weights as stored.
    #[default]
    Auto,
    /// The weights as stored: mlx-lm's numerics (quantized path included).
    Native,
    /// Always dense float32 (quantized and half-precision weights converted at
    /// load): up to 8× the memory of a 4-bit model, and numerically not
    /// mlx-lm's quantized path.
    Float32,
}

impl WeightsPolicy {
    pub fn parse(s: &str) -> Option<WeightsPolicy> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(WeightsPolicy::Auto),
            "native" => Some(WeightsPolicy::Native),
            "float32" | "f32" => Some(WeightsPolicy::Float32),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WeightsPolicy::Auto => "auto",
            WeightsPolicy::Native => "native",
            WeightsPolicy::Float32 => "float32",
        }
    }

    /// Whether to densify, and why (`"float32 (auto: cpu, fits budget)"`),
    /// for a model of `native_bytes` stored and `float32_bytes` dense on
    /// `device` under `budget`. `quantized_kernel`: the CPU kernel that runs the
    /// model's quantized layers when it has them and it is ours (not MLX's own).
    pub fn decide(
        self,
        device: &str,
        native_bytes: u64,
        float32_bytes: u64,
        budget: u64,
        quantized_kernel: Option<&str>,
    ) -> (bool, String) {
        match self {
            WeightsPolicy::Native => (false, "native (configured)".into()),
            WeightsPolicy::Float32 => (true, "float32 (configured)".into()),
            WeightsPolicy::Auto if device != "cpu" => {
                (false, format!("native (auto: {device} device)"))
            }
            // Decode is memory-bound: 4-bit weights read ~1/6 of float32's bytes per
            // token, and prefill dequantizes tiles for sgemm, so quantized stays.
            WeightsPolicy::Auto if quantized_kernel.is_some() => (
                false,
                format!(
                    "native (auto: cpu, quantized layers run the {} kernel)",
                    quantized_kernel.unwrap_or_default()
                ),
            ),
            WeightsPolicy::Auto if float32_bytes > budget => (
                false,
                format!(
                    "native (auto: cpu, float32 needs {float32_bytes} bytes, over the \
                     {budget}-byte budget)"
                ),
            ),
            WeightsPolicy::Auto if float32_bytes <= native_bytes => {
                (true, "float32 (auto: cpu, stored as float32)".into())
            }
            WeightsPolicy::Auto => (true, "float32 (auto: cpu, fits budget)".into()),
        }
    }
}

/// Bytes of a model's weights in dense float32: its parameters (quantized
/// matrices unpacked, as mlx-lm's `get_total_parameters` counts) × 4.
pub fn float32_weight_bytes(c: &engine::config::ModelConfig) -> u64 {
    let (h, layers, inter) = (
        c.hidden_size as u64,
        c.num_hidden_layers as u64,
        c.intermediate_size as u64,
    );
    let (q, kv) = (
        (c.num_attention_heads * c.head_dim) as u64,
        (c.num_key_value_heads * c.head_dim) as u64,
    );
    let vocab = c.vocab_size as u64;
    let mut block = h * q + 2 * h * kv + q * h + 3 * h * inter + 2 * h;
    if c.attention_qkv_bias {
        block += q + 2 * kv;
    }
    if c.attention_out_bias {
        block += h;
    }
    if c.mlp_bias {
        block += 2 * inter + h;
    }
    if c.qk_norm {
        block += 2 * c.head_dim as u64;
    }
    let head = if c.tie_word_embeddings { 0 } else { vocab * h };
    (vocab * h + head + layers * block + h) * 4
}

/// How long a model stays loaded after its last request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    For(Duration),
    Forever,
}

impl KeepAlive {
    /// Ollama's forms: a number of seconds (negative = forever) or a string
    /// `"300"`, `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"-1"`.
    pub fn parse(v: &serde_json::Value) -> Result<KeepAlive, String> {
        let secs = match v {
            serde_json::Value::Number(n) => n.as_f64().ok_or("not a number")?,
            serde_json::Value::String(s) => {
                let s = s.trim();
                let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
                    (n, 0.001)
                } else if let Some(n) = s.strip_suffix('s') {
                    (n, 1.0)
                } else if let Some(n) = s.strip_suffix('m') {
                    (n, 60.0)
                } else if let Some(n) = s.strip_suffix('h') {
                    (n, 3600.0)
                } else {
                    (s, 1.0)
                };
                num.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("{s:?} is not a duration (e.g. 30s, 5m, 1h, -1)"))?
                    * scale
            }
            _ => return Err("must be a number of seconds or a duration string".into()),
        };
        if !secs.is_finite() {
            return Err("must be finite".into());
        }
        if secs < 0.0 {
            return Ok(KeepAlive::Forever);
        }
        Ok(KeepAlive::For(Duration::from_secs_f64(secs.min(1e9))))
    }
}

/// Serving's errors are [`HubError`]s: the 503s (a full queue with
/// `Retry-After`, a model over the memory budget) are rows of its table.
pub type ServingError = HubError;

/// A request's model name split into the model and the version reference.
pub fn parse_model_ref(s: &str) -> Result<(&str, &str), HubError> {
    let s = s.trim();
    let split = s.rfind([':', '@']);
    let (name, vref) = match split {
        Some(i) if i > 0 && i + 1 < s.len() => (&s[..i], &s[i + 1..]),
        Some(_) => {
            return Err(HubError::invalid(
                "model",
                format!("{s:?} is not `name`, `name:version` or `name@alias`"),
            ));
        }
        None => (s, "latest"),
    };
    if name.is_empty() {
        return Err(HubError::invalid("model", "the model name is empty"));
    }
    Ok((name, vref))
}

/// A loaded model as `GET /api/ps` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct LoadedInfo {
    /// `name:number`.
    pub model: String,
    pub name: String,
    pub version: i64,
    pub version_id: i64,
    /// Estimate: the weight files' sizes, or the float32 size when densified
    /// (plus an adapter's files).
    pub size_bytes: u64,
    /// The weights kept and why, e.g. `"float32 (auto: cpu, fits budget)"`.
    pub weights: String,
    /// For an adapter version: the base version it runs over (`name:number`).
    pub base_model: Option<String>,
    pub loaded_at_ms: i64,
    /// When it unloads if no request comes; `null`: never (or busy).
    pub expires_at_ms: Option<i64>,
    /// Running plus waiting requests.
    pub active_requests: usize,
}

struct Entry {
    name: String,
    version: i64,
    version_id: i64,
    size_bytes: u64,
    weights: String,
    base_model: Option<String>,
    loaded_at_ms: i64,
    worker: Arc<model_thread::ModelThread>,
}

impl Entry {
    fn info(&self) -> LoadedInfo {
        let active = self.worker.active();
        let expires_at_ms = match (active, self.worker.keep_alive()) {
            (0, KeepAlive::For(d)) => {
                let idle = self.worker.last_used().elapsed();
                Some(now_ms() + d.as_millis() as i64 - idle.as_millis() as i64)
            }
            _ => None,
        };
        LoadedInfo {
            model: format!("{}:{}", self.name, self.version),
            name: self.name.clone(),
            version: self.version,
            version_id: self.version_id,
            size_bytes: self.size_bytes,
            weights: self.weights.clone(),
            base_model: self.base_model.clone(),
            loaded_at_ms: self.loaded_at_ms,
            expires_at_ms,
            active_requests: active,
        }
    }

    fn expired(&self, now: Instant) -> bool {
        self.worker.active() == 0
            && match self.worker.keep_alive() {
                KeepAlive::For(d) => now.duration_since(self.worker.last_used()) >= d,
                KeepAlive::Forever => false,
            }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

struct Inner {
    store: Store,
    artifacts: Artifacts,
    cache_dir: PathBuf,
    config: ServingConfig,
    /// Loaded models by version id.
    loaded: Mutex<HashMap<i64, Entry>>,
    /// Serialises loads (budget accounting, one materialisation at a time).
    load_lock: tokio::sync::Mutex<()>,
    reaper_started: AtomicBool,
    metrics: Arc<metrics::ServingMetrics>,
}

/// The pool of loaded models. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.inner.config)
            .field("loaded", &self.loaded_count())
            .finish()
    }
}

/// A reserved slot on a model's worker: the request counts as active until
/// it is submitted and finished (or the reservation is dropped).
pub struct Reservation {
    worker: Arc<model_thread::ModelThread>,
    metrics: Arc<metrics::ServingMetrics>,
    retry_after_secs: u64,
    pub model: String,
    submitted: bool,
}

impl Reservation {
    /// Queues `job`; a full queue is [`ServingError::Overloaded`].
    pub fn submit(mut self, job: Job) -> Result<(), ServingError> {
        // counted before the worker can see (and uncount) the job
        metrics::ServingMetrics::add(&self.metrics.num_requests_waiting, 1);
        let sent = self.worker.try_send(job);
        if sent.is_err() {
            metrics::ServingMetrics::sub(&self.metrics.num_requests_waiting, 1);
        }
        match sent {
            Ok(()) => {
                self.submitted = true;
                Ok(())
            }
            Err(model_thread::SendError::Full) => Err(ServingError::Overloaded {
                message: format!(
                    "model {} has {} requests waiting, the most it queues; retry later",
                    self.model,
                    self.worker.queue_capacity()
                ),
                retry_after_secs: self.retry_after_secs,
            }),
            Err(model_thread::SendError::Gone) => Err(HubError::Internal(format!(
                "the worker of model {} has stopped",
                self.model
            ))),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // a submitted job is released by the worker when it finishes
        if !self.submitted {
            self.worker.release();
        }
    }
}

impl Pool {
    pub fn new(
        store: Store,
        artifacts: impl Into<Artifacts>,
        data_dir: &Path,
        config: ServingConfig,
    ) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                store,
                artifacts: artifacts.into(),
                cache_dir: data_dir.join("cache").join("models"),
                config,
                loaded: Mutex::new(HashMap::new()),
                load_lock: tokio::sync::Mutex::new(()),
                reaper_started: AtomicBool::new(false),
                metrics: Arc::default(),
            }),
        }
    }

    pub fn config(&self) -> &ServingConfig {
        &self.inner.config
    }

    /// The serving metrics of every model of this pool.
    pub fn metrics(&self) -> &metrics::ServingMetrics {
        &self.inner.metrics
    }

    fn loaded_count(&self) -> usize {
        self.inner.loaded.lock().map_or(0, |m| m.len())
    }

    /// Loaded models, most recently used first.
    pub fn ps(&self) -> Vec<LoadedInfo> {
        let map = self.inner.loaded.lock().expect("pool lock");
        let mut v: Vec<(&Entry, Instant)> =
            map.values().map(|e| (e, e.worker.last_used())).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v.into_iter().map(|(e, _)| e.info()).collect()
    }

    /// Resolves `model` to a registered, ready version.
    pub async fn resolve(
        &self,
        model: &str,
    ) -> Result<(crate::store::Model, crate::store::ModelVersion), ServingError> {
        let (name, vref) = parse_model_ref(model)?;
        let m = self.inner.store.get_model_by_name(name).await?;
        let v = self.inner.store.resolve_version(m.id, vref).await?;
        if v.status != VersionStatus::Ready {
            return Err(HubError::invalid(
                "model",
                format!(
                    "version {} of model {} is {}, not ready",
                    v.number,
                    m.name,
                    v.status.as_str()
                ),
            ));
        }
        Ok((m, v))
    }

    /// Loads `model` (when not loaded) and reserves a request slot on it.
    pub async fn reserve(
        &self,
        model: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Reservation, ServingError> {
        let (m, v) = self.resolve(model).await?;
        let label = format!("{}:{}", m.name, v.number);
        let worker = self.load_version(&m.name, &v, keep_alive).await?;
        Ok(Reservation {
            worker,
            metrics: self.inner.metrics.clone(),
            retry_after_secs: self.inner.config.retry_after_secs,
            model: label,
            submitted: false,
        })
    }

    /// `POST /api/models/{name}/load`.
    pub async fn load(
        &self,
        model: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<LoadedInfo, ServingError> {
        let r = self.reserve(model, keep_alive).await?;
        let id = r.worker.version_id();
        drop(r);
        let map = self.inner.loaded.lock().expect("pool lock");
        map.get(&id)
            .map(Entry::info)
            .ok_or_else(|| HubError::Internal("the model unloaded while loading".into()))
    }

    /// `POST /api/models/{name}/unload`: the resolved version's entry, if it
    /// was loaded. Running and queued requests still finish; the model's
    /// memory is freed after them.
    pub async fn unload(&self, model: &str) -> Result<Option<LoadedInfo>, ServingError> {
        let (_, v) = self.resolve(model).await?;
        let mut map = self.inner.loaded.lock().expect("pool lock");
        Ok(map.remove(&v.id).map(|e| e.info()))
    }

    async fn load_version(
        &self,
        name: &str,
        v: &crate::store::ModelVersion,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Arc<model_thread::ModelThread>, ServingError> {
        if let Some(w) = self.hit(v.id, keep_alive) {
            return Ok(w);
        }
        self.start_reaper();
        let _guard = self.inner.load_lock.lock().await;
        if let Some(w) = self.hit(v.id, keep_alive) {
            return Ok(w);
        }
        // a child of the request that needs the model
        let span = tracing::info_span!(
            "model.load",
            model = %format!("{name}:{}", v.number),
            purpose = "serve",
            weights_policy = self.inner.config.weights.as_str(),
            weights = tracing::field::Empty,
            bytes = tracing::field::Empty,
            duration_seconds = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let t0 = Instant::now();
        let loaded = self
            .load_new(name, v, keep_alive, &span)
            .instrument(span.clone())
            .await;
        span.record("duration_seconds", t0.elapsed().as_secs_f64());
        if let Err(e) = &loaded {
            span.record("otel.status_code", "error");
            span.record("error", e.to_string().as_str());
        }
        loaded
    }

    /// [`Pool::load_version`] once the model is known not to be loaded (under
    /// the load lock).
    async fn load_new(
        &self,
        name: &str,
        v: &crate::store::ModelVersion,
        keep_alive: Option<KeepAlive>,
        span: &tracing::Span,
    ) -> Result<Arc<model_thread::ModelThread>, ServingError> {
        // An adapter version runs over its base version's weights.
        let (base, adapter) =
            crate::artifacts::checkout::weights_and_adapter(&self.inner.store, v).await?;
        let base_label = match &adapter {
            Some(_) => {
                let base_model = self.inner.store.get_model(base.model_id).await?;
                Some(format!("{}:{}", base_model.name, base.number))
            }
            None => None,
        };
        let adapter = adapter.as_ref();
        // checked out first: the sizes come from the files, the float32 size from the config
        let dir = self.inner.cache_dir.join(base.id.to_string());
        let adapter_dir = adapter.map(|a| self.inner.cache_dir.join(a.id.to_string()));
        let checkout = |v, d| {
            crate::artifacts::checkout::checkout_version(
                &self.inner.store,
                &self.inner.artifacts,
                v,
                d,
            )
        };
        let files = checkout(&base, &dir).await?;
        let adapter_files = match (adapter, &adapter_dir) {
            (Some(a), Some(d)) => checkout(a, d).await?,
            _ => Vec::new(),
        };
        let weights: u64 = files
            .iter()
            .filter(|f| f.path.ends_with(".safetensors"))
            .map(|f| f.size_bytes.max(0) as u64)
            .sum();
        let native_size = if weights > 0 {
            weights
        } else {
            files.iter().map(|f| f.size_bytes.max(0) as u64).sum()
        };
        let adapter_size: u64 = adapter_files
            .iter()
            .map(|f| f.size_bytes.max(0) as u64)
            .sum();
        let config_dir = dir.clone();
        let config = tokio::task::spawn_blocking(move || {
            engine::config::ModelConfig::from_dir(&config_dir)
                .map_err(|e| HubError::Internal(format!("the model's config.json: {e}")))
        })
        .await
        .map_err(|e| HubError::Internal(format!("config task failed: {e}")))??;

        let budget = self.inner.config.memory_budget_bytes;
        let device = mlx::system::default_device().name();
        let float32_size = float32_weight_bytes(&config);
        let (densify, weights_choice) = self.inner.config.weights.decide(
            device,
            native_size,
            float32_size,
            budget,
            {
                // Ours covers affine 4/8-bit; other quantizations stay MLX's.
                let kernel = mlx::quantization::cpu_kernel().name;
                config
                    .quantization
                    .as_ref()
                    .filter(|q| q.default.mode == "affine" && matches!(q.default.bits, 4 | 8))
                    .filter(|_| kernel != "mlx")
                    .map(|_| kernel)
            }
            .as_deref(),
        );
        // densified: the float32 copies (the files' size when already float32)
        let size = if densify {
            float32_size.max(native_size)
        } else {
            native_size
        } + adapter_size;
        tracing::info!(
            model = %format!("{name}:{}", v.number),
            base = ?base_label,
            weights = %weights_choice,
            native_bytes = native_size,
            float32_bytes = float32_size,
            budget_bytes = budget,
            "serving weights chosen"
        );
        span.record("weights", weights_choice.as_str());
        span.record("bytes", size as i64);
        if size > budget {
            return Err(ServingError::InsufficientMemory {
                message: format!(
                    "model {name}:{} needs about {size} bytes of weights ({weights_choice}), \
                     more than the memory budget of {budget} bytes",
                    v.number
                ),
            });
        }
        self.make_room(size, budget)?;
        crate::host::wire_gpu_memory(size);

        let keep = keep_alive.unwrap_or(self.inner.config.keep_alive);
        let label = format!("{name}:{}", v.number);
        let c = &self.inner.config;
        let settings = model_thread::ModelThreadSettings {
            queue_capacity: c.queue_capacity,
            max_running: c.max_running.max(1),
            prefill_chunk: c.prefill_chunk.max(1),
            prefix_cache_bytes: c.prefix_cache_bytes,
            dense_float32: densify,
            adapter_dir,
            metrics: self.inner.metrics.clone(),
        };
        let worker =
            model_thread::ModelThread::spawn(label, v.id, dir, settings, keep, span.clone())
                .await?;
        // another load may have happened meanwhile only through this lock
        let mut map = self.inner.loaded.lock().expect("pool lock");
        worker.acquire();
        map.insert(
            v.id,
            Entry {
                name: name.to_string(),
                version: v.number,
                version_id: v.id,
                size_bytes: size,
                weights: weights_choice,
                base_model: base_label,
                loaded_at_ms: now_ms(),
                worker: worker.clone(),
            },
        );
        Ok(worker)
    }

    /// A loaded worker with a slot reserved, its keep-alive updated.
    fn hit(
        &self,
        id: i64,
        keep_alive: Option<KeepAlive>,
    ) -> Option<Arc<model_thread::ModelThread>> {
        let map = self.inner.loaded.lock().expect("pool lock");
        let e = map.get(&id)?;
        e.worker.acquire();
        if let Some(k) = keep_alive {
            e.worker.set_keep_alive(k);
        }
        Some(e.worker.clone())
    }

    /// Unloads least-recently-used idle models until `size` more bytes fit.
    fn make_room(&self, size: u64, budget: u64) -> Result<(), ServingError> {
        let mut map = self.inner.loaded.lock().expect("pool lock");
        loop {
            let used: u64 = map.values().map(|e| e.size_bytes).sum();
            if used + size <= budget {
                return Ok(());
            }
            let victim = map
                .values()
                .filter(|e| e.worker.active() == 0)
                .min_by_key(|e| e.worker.last_used())
                .map(|e| e.version_id);
            match victim {
                Some(id) => {
                    if let Some(e) = map.remove(&id) {
                        tracing::info!(model = %e.info().model, "unloading (memory budget)");
                    }
                }
                None => {
                    return Err(ServingError::Overloaded {
                        message: format!(
                            "loading needs {size} bytes but {used} of the {budget}-byte memory \
                             budget are held by models serving requests; retry later"
                        ),
                        retry_after_secs: self.inner.config.retry_after_secs,
                    });
                }
            }
        }
    }

    /// Starts the keep-alive reaper (once, on the first load; needs a tokio runtime).
    fn start_reaper(&self) {
        if self.inner.reaper_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = self.inner.config.reap_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let mut map = inner.loaded.lock().expect("pool lock");
                let expired: Vec<i64> = map
                    .values()
                    .filter(|e| e.expired(now))
                    .map(|e| e.version_id)
                    .collect();
                for id in expired {
                    if let Some(e) = map.remove(&id) {
                        tracing::info!(model = %e.info().model, "unloading (keep-alive expired)");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_refs() {
        assert_eq!(parse_model_ref("llama").unwrap(), ("llama", "latest"));
        assert_eq!(parse_model_ref("llama:3").unwrap(), ("llama", "3"));
        assert_eq!(
            parse_model_ref("org/llama@prod").unwrap(),
            ("org/llama", "prod")
        );
        assert!(parse_model_ref("llama:").is_err());
        assert!(parse_model_ref(":3").is_err());
    }

    #[test]
    fn float32_size_of_smollm2_135m() {
        // SmolLM2-135M: 134,515,008 parameters (tied embeddings)
        let c = engine::config::ModelConfig::from_json_str(
            r#"{"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
                "intermediate_size": 1536, "num_attention_heads": 9,
                "num_key_value_heads": 3, "rms_norm_eps": 1e-5, "vocab_size": 49152,
                "tie_word_embeddings": true}"#,
        )
        .unwrap();
        assert_eq!(float32_weight_bytes(&c), 134_515_008 * 4);
    }

    #[test]
    fn weights_policy() {
        let p = |s| WeightsPolicy::parse(s).unwrap();
        assert_eq!(p("auto"), WeightsPolicy::Auto);
        assert_eq!(p("Native"), WeightsPolicy::Native);
        assert_eq!(p("float32"), WeightsPolicy::Float32);
        assert!(WeightsPolicy::parse("fp16").is_none());
        let auto = WeightsPolicy::Auto;
        assert_eq!(
            auto.decide("cpu", 100, 400, 1000, None),
            (true, "float32 (auto: cpu, fits budget)".into())
        );
        assert!(!auto.decide("cpu", 100, 400, 399, None).0);
        assert!(
            auto.decide("cpu", 100, 400, 399, None)
                .1
                .contains("over the 399-byte budget")
        );
        assert_eq!(
            auto.decide("gpu", 100, 400, 1000, Some("avx2-fma")),
            (false, "native (auto: gpu device)".into())
        );
        assert_eq!(
            auto.decide("cpu", 410, 400, 1000, None).1,
            "float32 (auto: cpu, stored as float32)"
        );
        assert!(!WeightsPolicy::Native.decide("cpu", 100, 400, 1000, None).0);
        assert!(WeightsPolicy::Float32.decide("gpu", 100, 400, 1, None).0);
        // Quantized layers with our CPU kernel: stay quantized; forced float32 still wins.
        assert_eq!(
            auto.decide("cpu", 100, 400, 1000, Some("avx2-fma")),
            (
                false,
                "native (auto: cpu, quantized layers run the avx2-fma kernel)".into()
            )
        );
        assert!(
            WeightsPolicy::Float32
                .decide("cpu", 100, 400, 1000, Some("avx2-fma"))
                .0
        );
    }

    #[test]
    fn keep_alive_forms() {
        let d = |s| KeepAlive::For(Duration::from_secs(s));
        assert_eq!(KeepAlive::parse(&json!(0)).unwrap(), d(0));
        assert_eq!(KeepAlive::parse(&json!("5m")).unwrap(), d(300));
        assert_eq!(KeepAlive::parse(&json!("30s")).unwrap(), d(30));
        assert_eq!(KeepAlive::parse(&json!("1h")).unwrap(), d(3600));
        assert_eq!(KeepAlive::parse(&json!(-1)).unwrap(), KeepAlive::Forever);
        assert_eq!(KeepAlive::parse(&json!("-1")).unwrap(), KeepAlive::Forever);
        assert!(KeepAlive::parse(&json!("soon")).is_err());
        assert!(KeepAlive::parse(&json!(true)).is_err());
    }
}
