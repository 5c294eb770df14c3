//! The job queue, in the database.
//!
//! States: `queued → running → succeeded | failed | cancelled`, and
//! `queued → cancelled`. A worker `claim`s the oldest highest-priority queued
//! job with a lease (`attempts` + 1), renews the lease while it works, and
//! writes the result; only the lease holder can. `reap_expired_leases`
//! returns jobs whose lease lapsed to `queued`, or to `failed` once their last
//! attempt is used (or to `cancelled` when a cancel was pending).
//!
//! Every time comes from the store's clock, so tests step the queue.
//! PostgreSQL: `claim` is `SELECT … FOR UPDATE SKIP LOCKED` + `UPDATE` in one
//! transaction, so many workers on many machines never take the same job.
//! SQLite: one `UPDATE … WHERE id = (SELECT … LIMIT 1) RETURNING` inside
//! `BEGIN IMMEDIATE`, which SQLite serialises.

use crate::Entity;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::versions::make_ready_tx;
use super::workers::{DeviceKind, JobRequirements, WorkerCapabilities};
use super::{
    AssertSql, Backend, Store, StoreError, StoreResult, Violation, check_name, from_json, to_json,
    violation,
};

/// Job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        JobState::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// No move leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Train,
    Evaluate,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Train => "train",
            JobKind::Evaluate => "evaluate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "train" => Some(JobKind::Train),
            "evaluate" => Some(JobKind::Evaluate),
            _ => None,
        }
    }
}

/// What [`Store::enqueue`] needs.
#[derive(Debug, Clone, Deserialize)]
pub struct NewJob {
    pub kind: JobKind,
    /// The job's configuration (training config, evaluation split, …).
    pub config: serde_json::Value,
    pub base_version_id: Option<i64>,
    pub dataset_id: Option<i64>,
    /// How many times the job may be started (lease lapses count). Default 3.
    pub max_attempts: i64,
    /// Higher runs first; ties by age. Default 0.
    pub priority: i64,
}

impl NewJob {
    pub fn new(kind: JobKind, config: serde_json::Value) -> Self {
        NewJob {
            kind,
            config,
            base_version_id: None,
            dataset_id: None,
            max_attempts: 3,
            priority: 0,
        }
    }
}

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: i64,
    pub kind: JobKind,
    pub state: JobState,
    pub priority: i64,
    pub config: serde_json::Value,
    pub base_version_id: Option<i64>,
    pub dataset_id: Option<i64>,
    /// Times the job was claimed.
    pub attempts: i64,
    pub max_attempts: i64,
    /// The worker holding the lease (only while `running`).
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub cancel_requested: bool,
    /// 0.0 ..= 1.0
    pub progress: f64,
    pub error: Option<String>,
    pub result_version_id: Option<i64>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Start of the current (or last) attempt.
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// What the worker must offer (device kind, memory); empty: any worker.
    #[serde(skip_serializing_if = "JobRequirements::is_empty")]
    pub requirements: JobRequirements,
}

/// The state of a renewed lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LeaseInfo {
    pub expires_at_ms: i64,
    /// A cancel was requested: the worker should stop and call [`Store::cancel`].
    pub cancel_requested: bool,
}

/// Where the reaper sent a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReapOutcome {
    Requeued,
    Failed,
    Cancelled,
}

/// One job whose lease had lapsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReapedJob {
    pub job_id: i64,
    pub outcome: ReapOutcome,
    pub attempts: i64,
    pub max_attempts: i64,
}

/// Filter and page for [`Store::list_jobs`] (newest first).
#[derive(Debug, Clone, Deserialize)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub limit: i64,
    pub offset: i64,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            state: None,
            limit: 100,
            offset: 0,
        }
    }
}

const COLS: &str = "id, kind, state, priority, config, base_version_id, dataset_id, attempts, \
    max_attempts, lease_owner, lease_expires_at_ms, cancel_requested, progress, error, \
    result_version_id, created_at_ms, updated_at_ms, started_at_ms, finished_at_ms, \
    required_device, min_memory_bytes";

/// The claim's filter: jobs whose requirements the worker (device `$dev`,
/// memory `$mem`; NULL = unknown, no filter) meets.
fn fits_sql(dev: &str, mem: &str) -> String {
    format!(
        "({dev} IS NULL OR required_device IS NULL OR required_device = {dev}) \
         AND ({mem} IS NULL OR min_memory_bytes IS NULL OR min_memory_bytes <= {mem})"
    )
}

fn job_from_row(row: &AnyRow) -> StoreResult<Job> {
    let state: String = row.try_get("state")?;
    let kind: String = row.try_get("kind")?;
    let corrupt = |field, v: &str| StoreError::Corrupt {
        entity: "training_jobs",
        field,
        message: format!("unknown value {v:?}"),
    };
    Ok(Job {
        id: row.try_get("id")?,
        kind: JobKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        state: JobState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        priority: row.try_get("priority")?,
        config: from_json(
            "training_jobs",
            "config",
            &row.try_get::<String, _>("config")?,
        )?,
        base_version_id: row.try_get("base_version_id")?,
        dataset_id: row.try_get("dataset_id")?,
        attempts: row.try_get("attempts")?,
        max_attempts: row.try_get("max_attempts")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at_ms: row.try_get("lease_expires_at_ms")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        progress: row.try_get("progress")?,
        error: row.try_get("error")?,
        result_version_id: row.try_get("result_version_id")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
        requirements: JobRequirements {
            device: match row.try_get::<Option<String>, _>("required_device")? {
                Some(d) => {
                    Some(DeviceKind::parse(&d).ok_or_else(|| corrupt("required_device", &d))?)
                }
                None => None,
            },
            min_memory_bytes: row
                .try_get::<Option<i64>, _>("min_memory_bytes")?
                .map(|m| m.max(0) as u64),
        },
    })
}

fn lease_ms(lease: Duration) -> StoreResult<i64> {
    let ms = lease.as_millis();
    if ms == 0 || ms > i64::MAX as u128 / 2 {
        return Err(StoreError::invalid("lease", "must be positive and finite"));
    }
    Ok(ms as i64)
}

fn check_worker(worker_id: &str) -> StoreResult<()> {
    check_name("worker_id", worker_id, 200)
}

impl Store {
    /// Adds a job to the queue (any worker may run it).
    pub async fn enqueue(&self, new: &NewJob) -> StoreResult<Job> {
        self.enqueue_with(new, &JobRequirements::default()).await
    }

    /// Adds a job to the queue that only a worker meeting `req` may claim.
    pub async fn enqueue_with(&self, new: &NewJob, req: &JobRequirements) -> StoreResult<Job> {
        if new.max_attempts < 1 {
            return Err(StoreError::invalid("max_attempts", "must be at least 1"));
        }
        req.validate()?;
        let now = self.now_ms();
        let row = sqlx::query(AssertSql(format!(
            "INSERT INTO training_jobs (kind, state, priority, config, base_version_id, dataset_id, \
             max_attempts, created_at_ms, updated_at_ms, required_device, min_memory_bytes) \
             VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $7, $8, $9) RETURNING {COLS}"
        )))
        .bind(new.kind.as_str())
        .bind(new.priority)
        .bind(to_json(&new.config))
        .bind(new.base_version_id)
        .bind(new.dataset_id)
        .bind(new.max_attempts)
        .bind(now)
        .bind(req.device.map(DeviceKind::as_str))
        .bind(req.min_memory_bytes.map(|m| m as i64))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::ForeignKey) => StoreError::invalid(
                "base_version_id/dataset_id",
                "refers to a model version or dataset that does not exist",
            ),
            _ => e.into(),
        })?;
        job_from_row(&row)
    }

    pub async fn get_job(&self, id: i64) -> StoreResult<Job> {
        let row = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM training_jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Job, id))?;
        job_from_row(&row)
    }

    /// Jobs, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> StoreResult<Vec<Job>> {
        if !(1..=1000).contains(&filter.limit) {
            return Err(StoreError::invalid("limit", "must be between 1 and 1000"));
        }
        if filter.offset < 0 {
            return Err(StoreError::invalid("offset", "must not be negative"));
        }
        let rows = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM training_jobs WHERE ($1 IS NULL OR state = $1) \
             ORDER BY id DESC LIMIT $2 OFFSET $3"
        )))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(filter.limit)
        .bind(filter.offset)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Number of jobs in each state (every state present, zeros included).
    pub async fn count_jobs_by_state(&self) -> StoreResult<BTreeMap<JobState, i64>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM training_jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        let mut out: BTreeMap<JobState, i64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for (s, n) in rows {
            if let Some(st) = JobState::parse(&s) {
                out.insert(st, n);
            }
        }
        Ok(out)
    }

    /// Claims the next queued job for `worker_id` with a lease of `lease`
    /// (`attempts` + 1). `None` when the queue is empty.
    pub async fn claim(&self, worker_id: &str, lease: Duration) -> StoreResult<Option<Job>> {
        self.claim_fitting(worker_id, lease, None).await
    }

    /// [`Store::claim`] restricted to jobs whose requirements `caps` meets
    /// (`None`: any job).
    pub async fn claim_fitting(
        &self,
        worker_id: &str,
        lease: Duration,
        caps: Option<&WorkerCapabilities>,
    ) -> StoreResult<Option<Job>> {
        check_worker(worker_id)?;
        let dev = caps.map(|c| c.device.as_str());
        let mem = caps.map(|c| c.memory_bytes.min(i64::MAX as u64) as i64);
        let lease = lease_ms(lease)?;
        let now = self.now_ms();
        let set = "state = 'running', attempts = attempts + 1, lease_owner = $2, \
             lease_expires_at_ms = $3, started_at_ms = $4, finished_at_ms = NULL, \
             updated_at_ms = $4";
        let mut tx = self.begin_write().await?;
        let row = match self.backend {
            Backend::Postgres => {
                let id: Option<i64> = sqlx::query_scalar(AssertSql(format!(
                    "SELECT id FROM training_jobs WHERE state = 'queued' AND {} \
                     ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                    fits_sql("$1", "$2")
                )))
                .bind(dev)
                .bind(mem)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else {
                    tx.rollback().await?;
                    return Ok(None);
                };
                sqlx::query(AssertSql(format!(
                    "UPDATE training_jobs SET {set} WHERE id = $1 AND state = 'queued' \
                     RETURNING {COLS}"
                )))
                .bind(id)
                .bind(worker_id)
                .bind(now + lease)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
            }
            Backend::Sqlite => {
                sqlx::query(AssertSql(format!(
                    "UPDATE training_jobs SET {set} WHERE id = (SELECT id FROM training_jobs \
                     WHERE state = 'queued' AND {} ORDER BY priority DESC, id LIMIT $1) \
                     AND state = 'queued' RETURNING {COLS}",
                    fits_sql("$5", "$6")
                )))
                .bind(1_i64)
                .bind(worker_id)
                .bind(now + lease)
                .bind(now)
                .bind(dev)
                .bind(mem)
                .fetch_optional(&mut *tx)
                .await?
            }
        };
        let job = row.as_ref().map(job_from_row).transpose()?;
        tx.commit().await?;
        Ok(job)
    }

    /// Extends the lease of a running job held by `worker_id` to now + `lease`,
    /// and tells whether a cancel is pending. `LeaseNotHeld` if the worker no
    /// longer holds it (the worker must then stop).
    pub async fn renew_lease(
        &self,
        job_id: i64,
        worker_id: &str,
        lease: Duration,
    ) -> StoreResult<LeaseInfo> {
        let lease = lease_ms(lease)?;
        let now = self.now_ms();
        let row: Option<(i64, i64)> = sqlx::query_as(
            "UPDATE training_jobs SET lease_expires_at_ms = $3, updated_at_ms = $4 \
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 \
             RETURNING lease_expires_at_ms, cancel_requested",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(now + lease)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some((expires_at_ms, c)) => Ok(LeaseInfo {
                expires_at_ms,
                cancel_requested: c != 0,
            }),
            None => Err(self
                .holder_error(job_id, worker_id, JobState::Running)
                .await),
        }
    }

    /// Records progress (0.0 ..= 1.0) of a running job; lease holder only.
    pub async fn set_progress(
        &self,
        job_id: i64,
        worker_id: &str,
        progress: f64,
    ) -> StoreResult<()> {
        if !(0.0..=1.0).contains(&progress) {
            return Err(StoreError::invalid("progress", "must be between 0 and 1"));
        }
        let res = sqlx::query(
            "UPDATE training_jobs SET progress = $3, updated_at_ms = $4 \
             WHERE id = $1 AND state = 'running' AND lease_owner = $2",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(progress)
        .bind(self.now_ms())
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            return Err(self
                .holder_error(job_id, worker_id, JobState::Running)
                .await);
        }
        Ok(())
    }

    /// `running → succeeded`, by the lease holder, with the version it made.
    pub async fn complete(
        &self,
        job_id: i64,
        worker_id: &str,
        result_version_id: Option<i64>,
    ) -> StoreResult<Job> {
        self.finish(
            job_id,
            worker_id,
            JobState::Succeeded,
            None,
            result_version_id,
        )
        .await
    }

    /// `running → succeeded` and the job's new version `registering → ready`,
    /// in one transaction: either both happen or neither (a worker whose lease
    /// was lost cannot publish a version).
    pub async fn complete_with_version(
        &self,
        job_id: i64,
        worker_id: &str,
        version_id: i64,
    ) -> StoreResult<Job> {
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(AssertSql(format!(
            "UPDATE training_jobs SET state = 'succeeded', lease_owner = NULL, \
             lease_expires_at_ms = NULL, error = NULL, result_version_id = $3, progress = 1.0, \
             finished_at_ms = $4, updated_at_ms = $4 \
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 RETURNING {COLS}"
        )))
        .bind(job_id)
        .bind(worker_id)
        .bind(version_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::ForeignKey) => StoreError::not_found(Entity::Version, version_id),
            _ => e.into(),
        })?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Err(self
                .holder_error(job_id, worker_id, JobState::Succeeded)
                .await);
        };
        let job = job_from_row(&row)?;
        make_ready_tx(&mut tx, version_id, now).await?;
        tx.commit().await?;
        Ok(job)
    }

    /// `running → failed`, by the lease holder, with the reason. Final: a job
    /// that fails by itself is not retried (only lapsed leases are).
    pub async fn fail(&self, job_id: i64, worker_id: &str, error: &str) -> StoreResult<Job> {
        self.finish(job_id, worker_id, JobState::Failed, Some(error), None)
            .await
    }

    /// `running → cancelled`, by the lease holder (after it saw the cancel).
    pub async fn cancel(&self, job_id: i64, worker_id: &str) -> StoreResult<Job> {
        self.finish(job_id, worker_id, JobState::Cancelled, None, None)
            .await
    }

    /// `running → queued` by the lease holder, e.g. on a graceful shutdown;
    /// the attempt is not counted.
    pub async fn release(&self, job_id: i64, worker_id: &str) -> StoreResult<Job> {
        let row = sqlx::query(AssertSql(format!(
            "UPDATE training_jobs SET state = 'queued', attempts = attempts - 1, \
             lease_owner = NULL, lease_expires_at_ms = NULL, updated_at_ms = $3 \
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 RETURNING {COLS}"
        )))
        .bind(job_id)
        .bind(worker_id)
        .bind(self.now_ms())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => job_from_row(&r),
            None => Err(self.holder_error(job_id, worker_id, JobState::Queued).await),
        }
    }

    async fn finish(
        &self,
        job_id: i64,
        worker_id: &str,
        to: JobState,
        error: Option<&str>,
        result_version_id: Option<i64>,
    ) -> StoreResult<Job> {
        let now = self.now_ms();
        let row = sqlx::query(AssertSql(format!(
            "UPDATE training_jobs SET state = $3, lease_owner = NULL, lease_expires_at_ms = NULL, \
             error = $4, result_version_id = COALESCE($5, result_version_id), \
             progress = CASE WHEN $3 = 'succeeded' THEN 1.0 ELSE progress END, \
             finished_at_ms = $6, updated_at_ms = $6 \
             WHERE id = $1 AND state = 'running' AND lease_owner = $2 RETURNING {COLS}"
        )))
        .bind(job_id)
        .bind(worker_id)
        .bind(to.as_str())
        .bind(error.map(str::to_string))
        .bind(result_version_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::ForeignKey) => StoreError::invalid(
                "result_version_id",
                "refers to a model version that does not exist",
            ),
            _ => e.into(),
        })?;
        match row {
            Some(r) => job_from_row(&r),
            None => Err(self.holder_error(job_id, worker_id, to).await),
        }
    }

    /// Why a lease-holder write matched no row.
    async fn holder_error(&self, job_id: i64, worker_id: &str, to: JobState) -> StoreError {
        match self.get_job(job_id).await {
            Err(e) => e,
            Ok(job) if job.state.is_terminal() => StoreError::IllegalTransition {
                entity: Entity::Job,
                key: job_id.to_string(),
                from: job.state.to_string(),
                to: to.to_string(),
            },
            Ok(_) => StoreError::LeaseNotHeld {
                job_id,
                worker_id: worker_id.to_string(),
            },
        }
    }

    /// Asks for a job to stop: a queued job is cancelled at once, a running
    /// one gets its `cancel_requested` flag (the worker sees it at its next
    /// lease renewal). Idempotent on a cancelled job; `IllegalTransition` on a
    /// succeeded or failed one.
    pub async fn request_cancel(&self, job_id: i64) -> StoreResult<Job> {
        let now = self.now_ms();
        let row = sqlx::query(AssertSql(format!(
            "UPDATE training_jobs SET \
             state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END, \
             finished_at_ms = CASE WHEN state = 'queued' THEN $2 ELSE finished_at_ms END, \
             cancel_requested = 1, updated_at_ms = $2 \
             WHERE id = $1 AND state IN ('queued', 'running') RETURNING {COLS}"
        )))
        .bind(job_id)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(r) = row {
            return job_from_row(&r);
        }
        let job = self.get_job(job_id).await?;
        if job.state == JobState::Cancelled {
            return Ok(job);
        }
        Err(StoreError::IllegalTransition {
            entity: Entity::Job,
            key: job_id.to_string(),
            from: job.state.to_string(),
            to: JobState::Cancelled.to_string(),
        })
    }

    /// Sends every running job whose lease expired before the clock's now back
    /// to `queued`, or to `failed` when it has used its last attempt, or to
    /// `cancelled` when a cancel was pending.
    pub async fn reap_expired_leases(&self) -> StoreResult<Vec<ReapedJob>> {
        let now = self.now_ms();
        let rows = sqlx::query(
            "UPDATE training_jobs SET \
             state = CASE WHEN cancel_requested = 1 THEN 'cancelled' \
                          WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END, \
             error = CASE WHEN cancel_requested = 1 THEN error \
                          WHEN attempts >= max_attempts \
                          THEN 'lease of worker ' || lease_owner || ' expired on the last attempt' \
                          ELSE 'lease of worker ' || lease_owner || ' expired' END, \
             finished_at_ms = CASE WHEN cancel_requested = 1 OR attempts >= max_attempts \
                          THEN $1 ELSE NULL END, \
             lease_owner = NULL, lease_expires_at_ms = NULL, updated_at_ms = $1 \
             WHERE state = 'running' AND lease_expires_at_ms < $1 \
             RETURNING id, state, attempts, max_attempts",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                let state: String = r.try_get(1)?;
                Ok(ReapedJob {
                    job_id: r.try_get(0)?,
                    outcome: match state.as_str() {
                        "queued" => ReapOutcome::Requeued,
                        "cancelled" => ReapOutcome::Cancelled,
                        _ => ReapOutcome::Failed,
                    },
                    attempts: r.try_get(2)?,
                    max_attempts: r.try_get(3)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by_key(|r| r.job_id);
        for r in &out {
            tracing::warn!(job_id = r.job_id, outcome = ?r.outcome, attempts = r.attempts, "job lease expired");
        }
        Ok(out)
    }
}
