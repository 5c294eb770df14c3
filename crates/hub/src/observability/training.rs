//! Training figures for `/metrics` and the spans of a training job's step
//! groups.
//!
//! The figures are process-wide (like MLX's memory counters): the worker that
//! trains — the one `mlx-hub serve` runs in its process — records them, and
//! the hub's `/metrics` shows them. A worker started as its own process
//! (`mlx-hub worker`) keeps them in that process; its runs' metrics still reach
//! the database (and the hub's runs API) as before.
//!
//! - per running job (labels `job_id`, `model`; removed when the job ends, so the
//!   series count is the number of running jobs): loss, validation loss,
//!   learning rate, tokens/s, peak memory, current step;
//! - histograms of the step duration (each step of a report interval counts
//!   once at the interval's mean: the trainer times steps per report) and of
//!   the queue wait (submitted → first claim), by job kind;
//! - counters of steps and tokens trained, and of jobs finished by kind and
//!   state.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use engine::train::TrainEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::field::Empty;

/// Upper bounds (seconds) of the step-duration buckets: a LoRA step of a
/// small model on a GPU takes tens of milliseconds, a full fine-tune of a
/// larger one on a CPU tens of seconds.
pub const STEP_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Upper bounds (seconds) of the queue-wait buckets: from a poll interval to
/// a day behind other jobs.
pub const QUEUE_WAIT_BUCKETS: [f64; 13] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 14400.0, 86400.0,
];

/// Labels of the per-job gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// The job id (not `job`: Prometheus gives that label the scrape job).
    pub job_id: String,
    /// The base model's name.
    pub model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobEndLabels {
    pub kind: String,
    pub state: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;
type Gauges = Family<JobLabels, F64Gauge>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The process's training figures (cheap to clone: shared values).
#[derive(Debug, Clone)]
pub struct TrainingMetrics {
    pub step_duration: Histogram,
    pub queue_wait: Histograms<KindLabel>,
    pub steps: Counter,
    pub tokens: Counter,
    pub jobs_finished: Family<JobEndLabels, Counter>,
    pub loss: Gauges,
    pub val_loss: Gauges,
    pub learning_rate: Gauges,
    pub tokens_per_second: Gauges,
    pub peak_memory: Gauges,
    pub step: Gauges,
}

impl Default for TrainingMetrics {
    fn default() -> Self {
        fn queue_wait() -> Histogram {
            Histogram::new(QUEUE_WAIT_BUCKETS)
        }
        TrainingMetrics {
            step_duration: Histogram::new(STEP_DURATION_BUCKETS),
            queue_wait: Family::new_with_constructor(queue_wait as fn() -> Histogram),
            steps: Counter::default(),
            tokens: Counter::default(),
            jobs_finished: Family::default(),
            loss: Gauges::default(),
            val_loss: Gauges::default(),
            learning_rate: Gauges::default(),
            tokens_per_second: Gauges::default(),
            peak_memory: Gauges::default(),
            step: Gauges::default(),
        }
    }
}

impl TrainingMetrics {
    /// The process's figures.
    pub fn global() -> &'static TrainingMetrics {
        static GLOBAL: OnceLock<TrainingMetrics> = OnceLock::new();
        GLOBAL.get_or_init(TrainingMetrics::default)
    }

    /// Adds the training families to a scrape's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "mlx_hub_training_step_duration_seconds",
            "Duration of a training step (each step of a report interval at the interval's mean)",
            self.step_duration.clone(),
        );
        registry.register(
            "mlx_hub_job_queue_wait_seconds",
            "Time from a job's submission to its first claim by a worker, by job kind",
            self.queue_wait.clone(),
        );
        registry.register(
            "mlx_hub_training_steps",
            "Training steps (optimizer updates) run by this process",
            self.steps.clone(),
        );
        registry.register(
            "mlx_hub_training_tokens",
            "Tokens trained on by this process",
            self.tokens.clone(),
        );
        registry.register(
            "mlx_hub_jobs_finished",
            "Jobs this process's worker finished, by kind and final state",
            self.jobs_finished.clone(),
        );
        for (name, help, family) in [
            (
                "mlx_hub_training_loss",
                "Training loss of a running job at its last report (mean over the interval)",
                &self.loss,
            ),
            (
                "mlx_hub_training_validation_loss",
                "Validation loss of a running job at its last evaluation",
                &self.val_loss,
            ),
            (
                "mlx_hub_training_learning_rate",
                "Learning rate of a running job at its last report",
                &self.learning_rate,
            ),
            (
                "mlx_hub_training_tokens_per_second",
                "Tokens trained per second by a running job over its last report interval",
                &self.tokens_per_second,
            ),
            (
                "mlx_hub_training_peak_memory_bytes",
                "Peak MLX memory of a running job so far",
                &self.peak_memory,
            ),
            (
                "mlx_hub_training_step",
                "Last step a running job reported",
                &self.step,
            ),
        ] {
            registry.register(name, help, family.clone());
        }
    }

    /// A job was claimed `waited` after its submission.
    pub fn queued(&self, kind: &str, waited: Duration) {
        self.queue_wait
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .observe(waited.as_secs_f64());
    }

    /// A job ended in `state`.
    pub fn finished(&self, kind: &str, state: &str) {
        self.jobs_finished
            .get_or_create(&JobEndLabels {
                kind: kind.to_owned(),
                state: state.to_owned(),
            })
            .inc();
    }

    fn remove(&self, labels: &JobLabels) {
        for f in [
            &self.loss,
            &self.val_loss,
            &self.learning_rate,
            &self.tokens_per_second,
            &self.peak_memory,
            &self.step,
        ] {
            f.remove(labels);
        }
    }
}

/// Follows one training job's events on its training thread: the per-job
/// gauges (removed when dropped), the step histogram and counters, and one
/// `train.steps` span per report interval (a child of `parent`, the job's
/// span) with the interval's steps, loss, learning rate, tokens/s and peak
/// memory.
pub struct TrainingObserver {
    metrics: &'static TrainingMetrics,
    labels: JobLabels,
    parent: tracing::Span,
    /// The open interval's span and its first step.
    group: Option<(tracing::Span, usize)>,
    last_step: usize,
    last_tokens: usize,
    /// The job's last step (no interval opens after it).
    iters: usize,
}

impl TrainingObserver {
    pub fn new(job_id: i64, model: &str, iters: usize, parent: tracing::Span) -> TrainingObserver {
        TrainingObserver {
            metrics: TrainingMetrics::global(),
            labels: JobLabels {
                job_id: job_id.to_string(),
                model: model.to_owned(),
            },
            parent,
            group: None,
            last_step: 0,
            last_tokens: 0,
            iters,
        }
    }

    fn open_group(&mut self, first_step: usize) {
        let span = tracing::info_span!(
            parent: &self.parent,
            "train.steps",
            first_step = first_step as i64,
            last_step = Empty,
            steps = Empty,
            loss = Empty,
            learning_rate = Empty,
            tokens = Empty,
            tokens_per_second = Empty,
            step_seconds = Empty,
            peak_memory_bytes = Empty,
            stopped = Empty,
        );
        self.group = Some((span, first_step));
    }

    pub fn on_event(&mut self, ev: &TrainEvent) {
        let m = self.metrics;
        match ev {
            TrainEvent::Start { .. } => self.open_group(1),
            TrainEvent::Train {
                iteration,
                train_loss,
                learning_rate,
                iterations_per_second,
                tokens_per_second,
                trained_tokens,
                peak_memory_gb,
            } => {
                let steps = iteration.saturating_sub(self.last_step);
                let tokens = trained_tokens.saturating_sub(self.last_tokens);
                self.last_step = *iteration;
                self.last_tokens = *trained_tokens;
                let step_seconds =
                    (*iterations_per_second > 0.0).then(|| 1.0 / iterations_per_second);
                if let Some(s) = step_seconds {
                    for _ in 0..steps {
                        m.step_duration.observe(s);
                    }
                }
                m.steps.inc_by(steps as u64);
                m.tokens.inc_by(tokens as u64);
                let peak_bytes = peak_memory_gb * 1e9;
                let l = &self.labels;
                m.loss.get_or_create(l).set(f64::from(*train_loss));
                m.learning_rate
                    .get_or_create(l)
                    .set(f64::from(*learning_rate));
                m.tokens_per_second.get_or_create(l).set(*tokens_per_second);
                m.peak_memory.get_or_create(l).set(peak_bytes);
                m.step.get_or_create(l).set(*iteration as f64);
                if let Some((span, _)) = self.group.take() {
                    span.record("last_step", *iteration as i64);
                    span.record("steps", steps as i64);
                    span.record("loss", f64::from(*train_loss));
                    span.record("learning_rate", f64::from(*learning_rate));
                    span.record("tokens", tokens as i64);
                    span.record("tokens_per_second", *tokens_per_second);
                    if let Some(s) = step_seconds {
                        span.record("step_seconds", s);
                    }
                    span.record("peak_memory_bytes", peak_bytes as i64);
                }
                if *iteration < self.iters {
                    self.open_group(iteration + 1);
                }
            }
            TrainEvent::Val { val_loss, .. } => {
                m.val_loss
                    .get_or_create(&self.labels)
                    .set(f64::from(*val_loss));
            }
            TrainEvent::Saved { .. } => {}
        }
    }
}

impl Drop for TrainingObserver {
    fn drop(&mut self) {
        // an interval cut short (cancel, error, lost lease) ends here
        if let Some((span, _)) = self.group.take() {
            span.record("stopped", true);
        }
        self.metrics.remove(&self.labels);
    }
}
