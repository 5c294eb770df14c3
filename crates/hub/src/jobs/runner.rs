//! Workers: claim jobs from the queue and run them.
//!
//! A [`JobRunner`] polls the queue (running the lease reaper at every poll),
//! claims one job at a time with a lease and runs it to the end:
//!
//! - a background task renews the lease every `lease / 3`; when the renewal
//!   reports a pending cancel it raises the job's cancel flag (the
//!   `AtomicBool` the engine's trainer checks before every step), and when the
//!   lease is lost it stops the job without writing any result;
//! - the training itself runs on a dedicated OS thread (MLX graphs must be
//!   evaluated on the thread that built them: the model is loaded there);
//!   its events are streamed into the job's run as metrics, batched;
//! - at each report step the training thread also reads the job's cancel flag
//!   from the database, so a cancel takes effect at the next step after the
//!   next report, whatever the lease interval.
//!
//! [`JobRunner::run_once`] claims and runs a single job (tests step the queue
//! with it); [`JobRunner::run`] loops until shut down.

pub use super::evaluate::EvalResult;
pub use crate::store::ADAPTER_FORMAT;

use std::time::Duration;

use tokio::sync::watch;
use tracing::Instrument;

use super::context::{
    DEFAULT_LEASE, DEFAULT_POLL_INTERVAL, HEARTBEAT_INTERVAL, JobOutcome, JobRunner, Provenance,
    default_worker_id,
};
use crate::artifacts::Artifacts;
use crate::error::HubResult;
use crate::service::Hub;
use crate::store::{Job, JobKind, ReapedJob, Store, WorkerCapabilities};

impl JobRunner {
    pub fn new(store: Store, artifacts: impl Into<Artifacts>, id: impl Into<String>) -> JobRunner {
        JobRunner {
            store,
            artifacts: artifacts.into(),
            id: id.into(),
            lease: DEFAULT_LEASE,
            poll_interval: DEFAULT_POLL_INTERVAL,
            provenance: Provenance::detect(),
            capabilities: crate::host::worker_capabilities(),
            last_seen: Default::default(),
        }
    }

    /// Overrides what the worker advertises (and so which jobs it claims).
    pub fn with_capabilities(mut self, capabilities: WorkerCapabilities) -> JobRunner {
        self.capabilities = capabilities;
        self.last_seen = Default::default();
        self
    }

    /// Registers the worker's capabilities (first poll) or refreshes its
    /// `last_seen_ms` (every [`HEARTBEAT_INTERVAL`]). Errors are logged.
    async fn announce(&self) {
        let due = {
            let last = self.last_seen.lock().expect("worker heartbeat lock");
            match *last {
                None => Some(true),
                Some(t) if t.elapsed() >= HEARTBEAT_INTERVAL => Some(false),
                Some(_) => None,
            }
        };
        let Some(first) = due else { return };
        let r = if first {
            let host = default_worker_id();
            let host = host.rsplit_once('-').map_or(host.as_str(), |(h, _)| h);
            self.store
                .register_worker(&self.id, host, &self.capabilities)
                .await
        } else {
            self.store.worker_heartbeat(&self.id).await
        };
        match r {
            Ok(()) => {
                *self.last_seen.lock().expect("worker heartbeat lock") =
                    Some(std::time::Instant::now());
            }
            Err(e) => tracing::warn!(worker = %self.id, error = %e, "cannot register the worker"),
        }
    }

    /// A worker over a hub's stores.
    pub fn for_hub(hub: &Hub, id: impl Into<String>) -> JobRunner {
        JobRunner::new(hub.store.clone(), hub.artifacts.clone(), id)
    }

    pub fn with_lease(mut self, lease: Duration) -> JobRunner {
        self.lease = lease;
        self
    }

    pub fn with_poll_interval(mut self, poll_interval: Duration) -> JobRunner {
        self.poll_interval = poll_interval;
        self
    }

    pub fn with_provenance(mut self, provenance: Provenance) -> JobRunner {
        self.provenance = provenance;
        self
    }

    /// One reaper pass: jobs whose lease lapsed go back to the queue (or fail
    /// after their last attempt). Errors are logged, not returned.
    pub async fn reap(&self) -> Vec<ReapedJob> {
        match self.store.reap_expired_leases().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(worker = %self.id, error = %e, "reaper pass failed");
                Vec::new()
            }
        }
    }

    /// Runs the reaper, claims one job and runs it to the end. `None` when the
    /// queue is empty.
    pub async fn run_once(&self) -> HubResult<Option<JobOutcome>> {
        self.poll(None).await
    }

    async fn poll(&self, shutdown: Option<watch::Receiver<bool>>) -> HubResult<Option<JobOutcome>> {
        self.reap().await;
        self.announce().await;
        let Some(job) = self
            .store
            .claim_fitting(&self.id, self.lease, Some(&self.capabilities))
            .await?
        else {
            return Ok(None);
        };
        let kind = job.kind.as_str();
        let span = tracing::info_span!(
            "job.run",
            job_id = job.id,
            kind,
            attempt = job.attempts,
            worker = %self.id,
            state = tracing::field::Empty,
            run_id = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let metrics = crate::observability::TrainingMetrics::global();
        if job.attempts == 1
            && let Some(started) = job.started_at_ms
        {
            let waited = (started - job.created_at_ms).max(0) as u64;
            metrics.queued(kind, Duration::from_millis(waited));
        }
        span.in_scope(|| tracing::info!(attempt = job.attempts, "claimed job"));
        let outcome = self.execute(job, shutdown).instrument(span.clone()).await;
        span.record("state", outcome.state.as_str());
        if let Some(run_id) = outcome.run_id {
            span.record("run_id", run_id);
        }
        if let Some(e) = &outcome.error {
            span.record("otel.status_code", "error");
            span.record("error", e.as_str());
        }
        metrics.finished(kind, outcome.state.as_str());
        span.in_scope(|| {
            tracing::info!(
                worker = %self.id,
                job_id = outcome.job_id,
                state = %outcome.state,
                error = outcome.error.as_deref().unwrap_or(""),
                "job done"
            )
        });
        Ok(Some(outcome))
    }

    async fn execute(&self, job: Job, shutdown: Option<watch::Receiver<bool>>) -> JobOutcome {
        match job.kind {
            JobKind::Train => super::train::run(self, job, shutdown).await,
            JobKind::Evaluate => super::evaluate::run(self, job, shutdown).await,
        }
    }

    /// Polls the queue until `shutdown` turns true (or its sender is gone).
    /// A job running at shutdown is stopped and released back to the queue
    /// (its attempt not counted).
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) -> HubResult<()> {
        tracing::info!(worker = %self.id, lease = ?self.lease, "worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            match self.poll(Some(shutdown.clone())).await {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => tracing::warn!(worker = %self.id, error = %e, "poll failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll_interval) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        tracing::info!(worker = %self.id, "worker stopped");
        Ok(())
    }
}
