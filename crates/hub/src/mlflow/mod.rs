//! Mirroring the hub into an MLflow tracking server.
//!
//! | hub                    | MLflow                                            |
//! |------------------------|---------------------------------------------------|
//! | model `name`           | experiment `name`, registered model `name`        |
//! | run (train/evaluate)   | run in the experiment of the model it started from: params, metrics by step, status, tags (`mlflow.source.git.commit`, `mlx_hub.*`) |
//! | version, once ready    | registered model version (`source`: `mlx-hub://models/<name>/versions/<n>`, linked to its run) |
//! | aliases                | registered model aliases                          |
//!
//! Jobs never talk to MLflow: database triggers (migration 0002) mark every
//! changed run, version and alias set in the `mlflow_outbox` table, in the
//! transaction that changes it. [`MlflowSync`] drains the outbox in the
//! background, pushing each entity's current state (idempotently: entities
//! are found again by their `mlx_hub.*` tags), retrying with exponential
//! backoff while MLflow is down or refuses. [`Store::mlflow_status`] shows
//! what is behind (`GET /api/mlflow/status`).
//!
//! MLflow refuses some alias names the hub allows (`latest`, `v<N>`): those
//! are skipped with a warning rather than retried forever.

pub mod client;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

pub use client::{MetricValue, MlflowClient, MlflowError};

use crate::store::{OutboxEntry, OutboxKind, RunStatus, Store, StoreError, VersionStatus};

/// Why pushing one entity failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Mlflow(#[from] MlflowError),
    #[error("hub store: {0}")]
    Store(#[from] StoreError),
}

type SyncResult<T> = Result<T, SyncError>;

/// What one [`MlflowSync::drain_once`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    pub pushed: usize,
    pub failed: usize,
}

/// The background sync. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MlflowSync {
    store: Store,
    client: MlflowClient,
    /// Recorded as `mlflow.source.git.commit` on every run.
    hub_commit: String,
    /// First retry delay; doubles per failed attempt up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Pause between passes when nothing is due.
    pub poll_interval: Duration,
}

/// Entries handled per pass.
const BATCH: i64 = 50;
/// How long a drainer holds an entry (another drainer may take it after).
const ENTRY_LEASE_MS: i64 = 120_000;

impl MlflowSync {
    /// A sync of `store` to the tracking server at `uri` (`http://host:port`).
    pub fn new(store: Store, uri: &str) -> Result<MlflowSync, MlflowError> {
        Ok(MlflowSync {
            store,
            client: MlflowClient::new(uri, Duration::from_secs(10))?,
            hub_commit: env!("MLX_HUB_GIT_COMMIT").to_string(),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
        })
    }

    pub fn with_backoff(mut self, min: Duration, max: Duration) -> MlflowSync {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    pub fn with_poll_interval(mut self, poll_interval: Duration) -> MlflowSync {
        self.poll_interval = poll_interval;
        self
    }

    pub fn client(&self) -> &MlflowClient {
        &self.client
    }

    /// Pushes every entry due now, once. Failures are recorded in the outbox
    /// (attempts, next attempt, error), not returned.
    pub async fn drain_once(&self) -> Result<DrainReport, StoreError> {
        let mut report = DrainReport::default();
        let now = self.store.now_ms();
        for entry in self.store.mlflow_due(now, BATCH).await? {
            if !self
                .store
                .mlflow_take(entry.kind, entry.entity_id, now, ENTRY_LEASE_MS)
                .await?
            {
                continue;
            }
            match self.push(&entry).await {
                Ok(()) => {
                    self.store
                        .mlflow_done(entry.kind, entry.entity_id, entry.seq)
                        .await?;
                    report.pushed += 1;
                }
                Err(e) => {
                    let delay = self.backoff(entry.attempts);
                    tracing::warn!(
                        kind = entry.kind.as_str(),
                        entity_id = entry.entity_id,
                        attempts = entry.attempts + 1,
                        retry_in = ?delay,
                        error = %e,
                        "MLflow sync failed"
                    );
                    self.store
                        .mlflow_retry(
                            entry.kind,
                            entry.entity_id,
                            &e.to_string(),
                            self.store.now_ms() + delay.as_millis() as i64,
                        )
                        .await?;
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Drains until `shutdown` turns true (or its sender is gone).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!("MLflow sync started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let busy = match self.drain_once().await {
                Ok(r) => r.pushed > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "MLflow sync pass failed");
                    false
                }
            };
            if busy {
                continue;
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
        tracing::info!("MLflow sync stopped");
    }

    /// Starts [`MlflowSync::run`] on the current runtime.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.run(shutdown))
    }

    fn backoff(&self, attempts: i64) -> Duration {
        let factor = 1u32 << attempts.clamp(0, 20);
        self.min_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    async fn push(&self, entry: &OutboxEntry) -> SyncResult<()> {
        match entry.kind {
            OutboxKind::Run => self.sync_run(entry.entity_id).await.map(|_| ()),
            OutboxKind::Version => {
                if let Some(model_id) = self.sync_version(entry.entity_id).await? {
                    self.sync_aliases(model_id).await?;
                }
                Ok(())
            }
            OutboxKind::Aliases => self.sync_aliases(entry.entity_id).await,
        }
    }

    /// The experiment of a model (created when missing).
    async fn experiment_of(&self, model_id: Option<i64>) -> SyncResult<String> {
        let key = model_id.unwrap_or(0);
        if let Some((id, _)) = self.store.mlflow_link("experiment", key).await? {
            return Ok(id);
        }
        let (name, tags) = match model_id {
            Some(id) => {
                let m = self.store.get_model(id).await?;
                (m.name, vec![("mlx_hub.model_id".into(), id.to_string())])
            }
            None => ("mlx-hub".to_string(), Vec::new()),
        };
        let id = self.client.ensure_experiment(&name, &tags).await?;
        self.store
            .set_mlflow_link("experiment", key, &id, true)
            .await?;
        Ok(id)
    }

    /// The model a run belongs to: the version it evaluated, or the base
    /// version of its job.
    async fn model_of_run(&self, run: &crate::store::Run) -> SyncResult<Option<i64>> {
        let version_id = match (run.model_version_id, run.job_id) {
            (Some(v), _) => Some(v),
            (None, Some(job)) => match self.store.get_job(job).await {
                Ok(j) => j.base_version_id.or_else(|| {
                    j.config
                        .get("base_version_id")
                        .and_then(serde_json::Value::as_i64)
                }),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e.into()),
            },
            (None, None) => None,
        };
        match version_id {
            Some(v) => match self.store.get_version(v).await {
                Ok(v) => Ok(Some(v.model_id)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e.into()),
            },
            None => Ok(None),
        }
    }

    /// Pushes a run; returns its MLflow id (`None`: the run is gone).
    async fn sync_run(&self, run_id: i64) -> SyncResult<Option<String>> {
        let run = match self.store.get_run(run_id).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (mlflow_run, params_synced) = match self.store.mlflow_link("run", run_id).await? {
            Some(link) => link,
            None => {
                let model_id = self.model_of_run(&run).await?;
                let exp = self.experiment_of(model_id).await?;
                let id = match self
                    .client
                    .find_run_by_tag(&exp, "mlx_hub.run_id", &run_id.to_string())
                    .await?
                {
                    Some(id) => id,
                    None => {
                        let mut tags = vec![
                            ("mlx_hub.run_id".to_string(), run_id.to_string()),
                            (
                                "mlflow.source.git.commit".to_string(),
                                self.hub_commit.clone(),
                            ),
                            ("mlflow.source.name".to_string(), "mlx-hub".to_string()),
                        ];
                        if let Some(j) = run.job_id {
                            tags.push(("mlx_hub.job_id".into(), j.to_string()));
                        }
                        if let Some(v) = run.model_version_id {
                            tags.push(("mlx_hub.model_version_id".into(), v.to_string()));
                        }
                        self.client
                            .create_run(&exp, &run.name, run.started_at_ms, &tags)
                            .await?
                    }
                };
                self.store
                    .set_mlflow_link("run", run_id, &id, false)
                    .await?;
                (id, false)
            }
        };
        if !params_synced {
            let params = flatten_params(&run.params);
            for chunk in params.chunks(client::MAX_BATCH_PARAMS) {
                self.client.log_batch(&mlflow_run, &[], chunk, &[]).await?;
            }
            self.store
                .set_mlflow_link("run", run_id, &mlflow_run, true)
                .await?;
        }
        loop {
            let batch = self
                .store
                .mlflow_unsynced_metrics(run_id, client::MAX_BATCH_METRICS as i64)
                .await?;
            if batch.is_empty() {
                break;
            }
            let values: Vec<MetricValue> = batch
                .iter()
                .map(|m| MetricValue {
                    key: m.key.clone(),
                    value: m.value,
                    timestamp_ms: m.timestamp_ms,
                    step: m.step,
                })
                .collect();
            self.client
                .log_batch(&mlflow_run, &values, &[], &[])
                .await?;
            self.store
                .mlflow_mark_metrics_synced(run_id, &batch)
                .await?;
            if batch.len() < client::MAX_BATCH_METRICS {
                break;
            }
        }
        let status = match run.status {
            RunStatus::Running => "RUNNING",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        };
        self.client
            .update_run(&mlflow_run, status, run.ended_at_ms)
            .await?;
        Ok(Some(mlflow_run))
    }

    /// Registers a ready (or archived) version; returns its model's id.
    async fn sync_version(&self, version_id: i64) -> SyncResult<Option<i64>> {
        let v = match self.store.get_version(version_id).await {
            Ok(v) => v,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if !matches!(v.status, VersionStatus::Ready | VersionStatus::Archived) {
            return Ok(None);
        }
        let model = self.store.get_model(v.model_id).await?;
        let mlflow_version = match self.store.mlflow_link("version", version_id).await? {
            Some((id, _)) => id
                .rsplit_once('/')
                .map(|(_, n)| n.to_string())
                .unwrap_or(id),
            None => {
                self.client
                    .ensure_registered_model(&model.name, &model.description)
                    .await?;
                let found = self
                    .client
                    .find_model_version_by_tag(
                        &model.name,
                        "mlx_hub.version_id",
                        &version_id.to_string(),
                    )
                    .await?;
                let number = match found {
                    Some(n) => n,
                    None => {
                        let run = match v.lineage.run_id {
                            Some(r) => self.sync_run(r).await?,
                            None => None,
                        };
                        let mut tags = vec![
                            ("mlx_hub.version_id".to_string(), version_id.to_string()),
                            ("mlx_hub.version".to_string(), v.number.to_string()),
                            ("mlx_hub.format".to_string(), v.format.clone()),
                        ];
                        let opt = [
                            ("mlx_hub.architecture", v.architecture.clone()),
                            ("mlx_hub.dtype", v.dtype.clone()),
                            (
                                "mlx_hub.base_version_id",
                                v.lineage.base_version_id.map(|b| b.to_string()),
                            ),
                            ("mlx_hub.dataset_hash", v.lineage.dataset_hash.clone()),
                            ("mlx_hub.hub_commit", v.lineage.hub_commit.clone()),
                            ("mlx_hub.mlx_version", v.lineage.mlx_version.clone()),
                        ];
                        tags.extend(
                            opt.into_iter()
                                .filter_map(|(k, val)| val.map(|val| (k.to_string(), val))),
                        );
                        self.client
                            .create_model_version(
                                &model.name,
                                &format!("mlx-hub://models/{}/versions/{}", model.name, v.number),
                                run.as_deref(),
                                &v.description,
                                &tags,
                            )
                            .await?
                    }
                };
                self.store
                    .set_mlflow_link(
                        "version",
                        version_id,
                        &format!("{}/{number}", model.name),
                        true,
                    )
                    .await?;
                number
            }
        };
        self.client
            .set_model_version_tag(
                &model.name,
                &mlflow_version,
                "mlx_hub.status",
                v.status.as_str(),
            )
            .await?;
        Ok(Some(v.model_id))
    }

    /// Makes the registered model's aliases those of the hub model.
    async fn sync_aliases(&self, model_id: i64) -> SyncResult<()> {
        let model = match self.store.get_model(model_id).await {
            Ok(m) => m,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut desired: BTreeMap<String, String> = BTreeMap::new();
        for a in self.store.list_aliases(model_id).await? {
            let link = match self.store.mlflow_link("version", a.version_id).await? {
                Some(l) => Some(l),
                None => {
                    self.sync_version(a.version_id).await?;
                    self.store.mlflow_link("version", a.version_id).await?
                }
            };
            if let Some((id, _)) = link
                && let Some((_, n)) = id.rsplit_once('/')
            {
                desired.insert(a.alias, n.to_string());
            }
        }
        self.client
            .ensure_registered_model(&model.name, &model.description)
            .await?;
        let current: BTreeMap<String, String> = self
            .client
            .aliases(&model.name)
            .await?
            .into_iter()
            .collect();
        for (alias, version) in &desired {
            if current.get(alias) == Some(version) {
                continue;
            }
            match self.client.set_alias(&model.name, alias, version).await {
                Ok(()) => {}
                Err(e) if e.is_invalid() => {
                    tracing::warn!(model = %model.name, %alias, error = %e,
                        "MLflow refuses this alias name; not mirrored");
                }
                Err(e) => return Err(e.into()),
            }
        }
        for alias in current.keys() {
            if !desired.contains_key(alias) {
                self.client.delete_alias(&model.name, alias).await?;
            }
        }
        Ok(())
    }
}

/// A run's params as MLflow params: nested objects flattened with `.`,
/// scalars as text, arrays as JSON, nulls left out, values cut to MLflow's limit.
pub fn flatten_params(params: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        use serde_json::Value;
        match v {
            Value::Null => {}
            Value::Object(map) => {
                for (k, x) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            Value::String(s) => out.push((prefix.to_string(), s.clone())),
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    match params {
        serde_json::Value::Object(_) => walk("", params, &mut out),
        serde_json::Value::Null => {}
        other => walk("params", other, &mut out),
    }
    for (k, v) in &mut out {
        if k.len() > 250 {
            let mut end = 250;
            while !k.is_char_boundary(end) {
                end -= 1;
            }
            k.truncate(end);
        }
        if v.len() > client::MAX_PARAM_VALUE {
            let mut end = client::MAX_PARAM_VALUE;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            v.truncate(end);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattens_nested_params() {
        let p = serde_json::json!({"lr": 0.001, "lora": {"rank": 8, "keys": ["q", "v"]},
                                   "name": "x", "none": null});
        let mut f = flatten_params(&p);
        f.sort();
        assert_eq!(
            f,
            vec![
                ("lora.keys".to_string(), "[\"q\",\"v\"]".to_string()),
                ("lora.rank".to_string(), "8".to_string()),
                ("lr".to_string(), "0.001".to_string()),
                ("name".to_string(), "x".to_string()),
            ]
        );
    }
}
