//! Runs (one per training or evaluation attempt) and their metrics by step.

use crate::Entity;
use std::collections::HashMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{
    AssertSql, Store, StoreError, StoreResult, Violation, check_name, from_json, to_json, violation,
};

/// Run status (named as MLflow names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Finished,
    Failed,
    Killed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed => "failed",
            RunStatus::Killed => "killed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunStatus::Running,
            "finished" => RunStatus::Finished,
            "failed" => RunStatus::Failed,
            "killed" => RunStatus::Killed,
            _ => return None,
        })
    }
}

/// What [`Store::create_run`] needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NewRun {
    pub job_id: Option<i64>,
    /// For evaluation runs: the version evaluated.
    pub model_version_id: Option<i64>,
    pub name: String,
    pub params: serde_json::Value,
}

/// A run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    pub id: i64,
    pub job_id: Option<i64>,
    pub model_version_id: Option<i64>,
    pub name: String,
    pub params: serde_json::Value,
    pub status: RunStatus,
    pub started_at_ms: i64,
    pub ended_at_ms: Option<i64>,
}

/// One metric value to log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub key: String,
    pub step: i64,
    pub value: f64,
    /// Defaults to the store's clock.
    #[serde(default)]
    pub timestamp_ms: Option<i64>,
}

/// A stored metric value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metric {
    pub key: String,
    pub step: i64,
    pub value: f64,
    pub timestamp_ms: i64,
}

const COLS: &str = "id, job_id, model_version_id, name, params, status, started_at_ms, ended_at_ms";

fn run_from_row(row: &AnyRow) -> StoreResult<Run> {
    let status: String = row.try_get("status")?;
    Ok(Run {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        model_version_id: row.try_get("model_version_id")?,
        name: row.try_get("name")?,
        params: from_json("runs", "params", &row.try_get::<String, _>("params")?)?,
        status: RunStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            entity: "runs",
            field: "status",
            message: format!("unknown status {status:?}"),
        })?,
        started_at_ms: row.try_get("started_at_ms")?,
        ended_at_ms: row.try_get("ended_at_ms")?,
    })
}

/// Rows per INSERT statement when logging metrics (5 binds each).
const METRIC_CHUNK: usize = 400;

impl Store {
    /// Starts a run (`running`).
    pub async fn create_run(&self, new: &NewRun) -> StoreResult<Run> {
        let params = if new.params.is_null() {
            serde_json::json!({})
        } else {
            new.params.clone()
        };
        let row = sqlx::query(AssertSql(format!(
            "INSERT INTO runs (job_id, model_version_id, name, params, status, started_at_ms) \
             VALUES ($1, $2, $3, $4, 'running', $5) RETURNING {COLS}"
        )))
        .bind(new.job_id)
        .bind(new.model_version_id)
        .bind(&new.name)
        .bind(to_json(&params))
        .bind(self.now_ms())
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::ForeignKey) => StoreError::invalid(
                "job_id/model_version_id",
                "refers to a job or model version that does not exist",
            ),
            _ => e.into(),
        })?;
        run_from_row(&row)
    }

    pub async fn get_run(&self, id: i64) -> StoreResult<Run> {
        let row = sqlx::query(AssertSql(format!("SELECT {COLS} FROM runs WHERE id = $1")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(Entity::Run, id))?;
        run_from_row(&row)
    }

    /// Runs of a job, oldest first.
    pub async fn list_runs_of_job(&self, job_id: i64) -> StoreResult<Vec<Run>> {
        let rows = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM runs WHERE job_id = $1 ORDER BY id"
        )))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Runs that evaluated a version, oldest first.
    pub async fn list_runs_of_version(&self, model_version_id: i64) -> StoreResult<Vec<Run>> {
        let rows = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM runs WHERE model_version_id = $1 ORDER BY id"
        )))
        .bind(model_version_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// `running → finished | failed | killed`. `IllegalTransition` if the run
    /// already ended.
    pub async fn end_run(&self, id: i64, status: RunStatus) -> StoreResult<Run> {
        if status == RunStatus::Running {
            return Err(StoreError::invalid("status", "a run cannot end as running"));
        }
        let row = sqlx::query(AssertSql(format!(
            "UPDATE runs SET status = $2, ended_at_ms = $3 WHERE id = $1 AND status = 'running' \
             RETURNING {COLS}"
        )))
        .bind(id)
        .bind(status.as_str())
        .bind(self.now_ms())
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(r) => run_from_row(&r),
            None => {
                let run = self.get_run(id).await?;
                Err(StoreError::IllegalTransition {
                    entity: Entity::Run,
                    key: id.to_string(),
                    from: run.status.as_str().into(),
                    to: status.as_str().into(),
                })
            }
        }
    }

    /// Logs metric values in one transaction (multi-row inserts). A value
    /// logged again for the same (key, step) replaces the old one, so a retried
    /// batch is harmless. Values must be finite (SQLite cannot store NaN).
    pub async fn log_metrics(&self, run_id: i64, points: &[MetricPoint]) -> StoreResult<()> {
        for p in points {
            check_name("key", &p.key, 250)?;
            if !p.value.is_finite() {
                return Err(StoreError::invalid(
                    "value",
                    format!(
                        "{} at step {}: must be finite, got {}",
                        p.key, p.step, p.value
                    ),
                ));
            }
            if p.step < 0 {
                return Err(StoreError::invalid("step", "must not be negative"));
            }
        }
        if points.is_empty() {
            self.get_run(run_id).await?;
            return Ok(());
        }
        // The same (key, step) twice in one batch: the last one wins (on both
        // databases; PostgreSQL would refuse it inside one statement).
        let mut index: HashMap<(&str, i64), usize> = HashMap::new();
        let mut unique: Vec<&MetricPoint> = Vec::with_capacity(points.len());
        for p in points {
            match index.get(&(p.key.as_str(), p.step)) {
                Some(&i) => unique[i] = p,
                None => {
                    index.insert((p.key.as_str(), p.step), unique.len());
                    unique.push(p);
                }
            }
        }
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        for chunk in unique.chunks(METRIC_CHUNK) {
            let mut sql = String::from(
                "INSERT INTO metrics (run_id, key, step, value, timestamp_ms) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let b = i * 4;
                sql += &format!("($1, ${}, ${}, ${}, ${})", b + 2, b + 3, b + 4, b + 5);
            }
            sql.push_str(
                " ON CONFLICT (run_id, key, step) DO UPDATE SET value = excluded.value, \
                 timestamp_ms = excluded.timestamp_ms, mlflow_synced = 0",
            );
            let mut q = sqlx::query(AssertSql(sql)).bind(run_id);
            for p in chunk {
                q = q
                    .bind(p.key.clone())
                    .bind(p.step)
                    .bind(p.value)
                    .bind(p.timestamp_ms.unwrap_or(now));
            }
            q.execute(&mut *tx).await.map_err(|e| match violation(&e) {
                Some(Violation::ForeignKey) => StoreError::not_found(Entity::Run, run_id),
                _ => e.into(),
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Values of `key` in a run, by step, optionally within `steps`.
    pub async fn metric_history(
        &self,
        run_id: i64,
        key: &str,
        steps: Option<RangeInclusive<i64>>,
    ) -> StoreResult<Vec<Metric>> {
        let (lo, hi) = steps.map_or((i64::MIN, i64::MAX), |r| (*r.start(), *r.end()));
        let rows = sqlx::query(
            "SELECT key, step, value, timestamp_ms FROM metrics \
             WHERE run_id = $1 AND key = $2 AND step >= $3 AND step <= $4 ORDER BY step",
        )
        .bind(run_id)
        .bind(key)
        .bind(lo)
        .bind(hi)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(metric_from_row).collect()
    }

    /// The metric keys of a run, sorted.
    pub async fn metric_keys(&self, run_id: i64) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT key FROM metrics WHERE run_id = $1 ORDER BY key")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// The latest (highest-step) value of every key of a run.
    pub async fn latest_metrics(&self, run_id: i64) -> StoreResult<Vec<Metric>> {
        let rows = sqlx::query(
            "SELECT m.key, m.step, m.value, m.timestamp_ms FROM metrics m \
             WHERE m.run_id = $1 AND m.step = (SELECT MAX(step) FROM metrics x \
             WHERE x.run_id = m.run_id AND x.key = m.key) ORDER BY m.key",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(metric_from_row).collect()
    }
}

/// A `metrics` row selected as `key, step, value, timestamp_ms`.
fn metric_from_row(r: &AnyRow) -> StoreResult<Metric> {
    Ok(Metric {
        key: r.try_get(0)?,
        step: r.try_get(1)?,
        value: r.try_get(2)?,
        timestamp_ms: r.try_get(3)?,
    })
}
