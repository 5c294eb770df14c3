//! What every job run shares: the runner ([`JobRunner`], its provenance and
//! the outcome of a job), and the control of one running job — its flags
//! ([`Control`]), the lease keeper and shutdown watcher ([`Guards`]), and why
//! an attempt failed ([`Failure`]). `runner` claims and dispatches; `train`
//! and `evaluate` run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::artifacts::Artifacts;
use crate::store::{JobState, Store, StoreError, WorkerCapabilities};

/// Default lease of a claimed job.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);
/// Default pause between polls of an empty queue.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// A polling worker refreshes its `workers.last_seen_ms` at most this often.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Provenance recorded in the lineage of every version a worker trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// The hub's own commit (build time: `$MLX_HUB_COMMIT` or `git rev-parse HEAD`).
    pub hub_commit: String,
    /// sha256 of the workspace `Cargo.lock` at build time.
    pub lockfile_hash: String,
    /// The MLX library version.
    pub mlx_version: String,
    /// Where the training ran, e.g. `cpu (x86_64-linux)`.
    pub device: String,
    /// The BLAS MLX uses, when known.
    pub blas: Option<String>,
}

impl Provenance {
    /// This build and this machine: the commit and lockfile of the build, the
    /// MLX linked, its default device and its BLAS.
    pub fn detect() -> Provenance {
        let host = crate::host::HostInfo::detect();
        Provenance {
            hub_commit: crate::host::GIT_COMMIT.to_string(),
            lockfile_hash: crate::host::CARGO_LOCK_SHA256.to_string(),
            device: format!("{} ({}-{})", host.device, host.arch, host.os),
            blas: Some(host.blas),
            mlx_version: host.mlx_version,
        }
    }
}

impl Default for Provenance {
    fn default() -> Self {
        Provenance::detect()
    }
}

/// How a job the worker ran ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobOutcome {
    pub job_id: i64,
    /// The job's state after the worker let go of it: `succeeded`, `failed`,
    /// `cancelled`, `queued` (released at shutdown) or, when the lease was
    /// lost, whatever state the job was found in.
    pub state: JobState,
    pub run_id: Option<i64>,
    /// The version registered (on success).
    pub version_id: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The last step the trainer reported.
    pub last_reported_step: Option<usize>,
    /// The step at which training stopped (cancel or non-finite loss).
    pub stopped_at_step: Option<usize>,
    /// The worker lost its lease (another worker may own the job now).
    pub lease_lost: bool,
}

impl JobOutcome {
    pub(super) fn new(job_id: i64) -> JobOutcome {
        JobOutcome {
            job_id,
            state: JobState::Running,
            run_id: None,
            version_id: None,
            error: None,
            last_reported_step: None,
            stopped_at_step: None,
            lease_lost: false,
        }
    }
}

/// A queue worker. Runs one job at a time.
#[derive(Debug, Clone)]
pub struct JobRunner {
    pub store: Store,
    pub artifacts: Artifacts,
    /// Unique among the workers sharing the database.
    pub id: String,
    pub lease: Duration,
    pub poll_interval: Duration,
    pub provenance: Provenance,
    /// What this worker offers; it claims only jobs whose requirements fit.
    pub capabilities: WorkerCapabilities,
    /// When the worker last wrote its `workers` row (`None`: not registered).
    pub(super) last_seen: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// `<hostname>-<pid>`.
pub fn default_worker_id() -> String {
    format!("{}-{}", crate::host::hostname(), std::process::id())
}

/// Why an attempt did not succeed.
#[derive(Debug)]
pub(super) enum Failure {
    Cancelled { step: usize },
    NonFinite { step: usize, loss: f32 },
    Error(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Error(e.to_string())
    }
}

pub(super) fn fail(msg: impl Into<String>) -> Failure {
    Failure::Error(msg.into())
}

/// Flags shared by the lease keeper, the shutdown watcher and the trainer.
#[derive(Debug, Clone, Default)]
pub(super) struct Control {
    /// Read by the engine's trainer before every step.
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) lease_lost: Arc<AtomicBool>,
    /// Stopped by a worker shutdown: release the job instead of cancelling it.
    pub(super) released: Arc<AtomicBool>,
}

/// The tasks that watch over one running job: its lease keeper, and the worker's
/// shutdown signal turned into a release of the job.
pub(super) struct Guards {
    keeper: tokio::task::JoinHandle<()>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Guards {
    pub(super) fn stop(self) {
        self.keeper.abort();
        if let Some(h) = self.watcher {
            h.abort();
        }
    }
}

impl Control {
    pub(super) fn guard(
        &self,
        w: &JobRunner,
        job_id: i64,
        shutdown: Option<watch::Receiver<bool>>,
    ) -> Guards {
        let keeper = tokio::spawn(keep_lease(w.clone(), job_id, self.clone()));
        let watcher = shutdown.map(|mut rx| {
            let ctl = self.clone();
            tokio::spawn(async move {
                loop {
                    if *rx.borrow() {
                        ctl.released.store(true, Ordering::SeqCst);
                        ctl.cancel.store(true, Ordering::SeqCst);
                        return;
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
        });
        Guards { keeper, watcher }
    }
}

/// Renews the lease every `lease / 3`; raises the cancel flag on a pending
/// cancel, and stops the job (without result) when the lease is lost.
pub(super) async fn keep_lease(w: JobRunner, job_id: i64, ctl: Control) {
    let every = (w.lease / 3).max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(every).await;
        match w.store.renew_lease(job_id, &w.id, w.lease).await {
            Ok(info) => {
                if info.cancel_requested {
                    ctl.cancel.store(true, Ordering::SeqCst);
                }
            }
            Err(StoreError::LeaseNotHeld { .. } | StoreError::IllegalTransition { .. }) => {
                tracing::warn!(job_id, worker = %w.id, "lease lost: stopping the job");
                ctl.lease_lost.store(true, Ordering::SeqCst);
                ctl.cancel.store(true, Ordering::SeqCst);
                return;
            }
            Err(e) => tracing::warn!(job_id, error = %e, "lease renewal failed; retrying"),
        }
    }
}
