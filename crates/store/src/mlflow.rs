//! The MLflow sync outbox (migration 0002): entities marked dirty by
//! triggers, the MLflow ids of synced entities, and which metrics were sent.
//! The sync itself lives in `crate::mlflow`.

use serde::Serialize;
use sqlx::Row;

use super::{AssertSql, Store, StoreResult};

/// What an outbox entry refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxKind {
    /// A run: its params, tags, status and metrics.
    Run,
    /// A model version (registered in MLflow once ready).
    Version,
    /// The aliases of a model (entity id: the model id).
    Aliases,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Run => "run",
            OutboxKind::Version => "version",
            OutboxKind::Aliases => "aliases",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "run" => OutboxKind::Run,
            "version" => OutboxKind::Version,
            "aliases" => OutboxKind::Aliases,
            _ => return None,
        })
    }
}

/// One pending outbox entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboxEntry {
    pub kind: OutboxKind,
    pub entity_id: i64,
    /// The change count when read: [`Store::mlflow_done`] only clears this one.
    pub seq: i64,
    pub attempts: i64,
    pub created_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub last_error: Option<String>,
}

/// How far behind the sync is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStatus {
    /// Entities waiting to be pushed.
    pub pending: i64,
    pub pending_runs: i64,
    pub pending_versions: i64,
    pub pending_aliases: i64,
    /// Entries whose last attempt failed.
    pub failing: i64,
    /// Metric values not yet sent.
    pub unsynced_metrics: i64,
    /// When the oldest pending change was made (unix ms).
    pub oldest_pending_ms: Option<i64>,
    /// The most recent failures (up to 5).
    pub errors: Vec<OutboxEntry>,
}

/// A metric value not yet sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnsyncedMetric {
    pub key: String,
    pub step: i64,
    pub value: f64,
    pub timestamp_ms: i64,
}

const ENTRY_COLS: &str =
    "kind, entity_id, seq, attempts, created_at_ms, next_attempt_at_ms, last_error";

fn entry_from_row(r: &sqlx::any::AnyRow) -> StoreResult<Option<OutboxEntry>> {
    let kind: String = r.try_get(0)?;
    let Some(kind) = OutboxKind::parse(&kind) else {
        return Ok(None);
    };
    Ok(Some(OutboxEntry {
        kind,
        entity_id: r.try_get(1)?,
        seq: r.try_get(2)?,
        attempts: r.try_get(3)?,
        created_at_ms: r.try_get(4)?,
        next_attempt_at_ms: r.try_get(5)?,
        last_error: r.try_get(6)?,
    }))
}

impl Store {
    /// Entries due at `now` and not held by another drainer, oldest first.
    pub async fn mlflow_due(&self, now: i64, limit: i64) -> StoreResult<Vec<OutboxEntry>> {
        let rows = sqlx::query(AssertSql(format!(
            "SELECT {ENTRY_COLS} FROM mlflow_outbox WHERE next_attempt_at_ms <= $1 \
             AND (lease_until_ms IS NULL OR lease_until_ms < $1) \
             ORDER BY next_attempt_at_ms, created_at_ms LIMIT $2"
        )))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(entry_from_row)
            .collect::<StoreResult<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Takes an entry for `lease_ms` (false: another drainer holds it).
    pub async fn mlflow_take(
        &self,
        kind: OutboxKind,
        entity_id: i64,
        now: i64,
        lease_ms: i64,
    ) -> StoreResult<bool> {
        let res = sqlx::query(
            "UPDATE mlflow_outbox SET lease_until_ms = $3 WHERE kind = $1 AND entity_id = $2 \
             AND (lease_until_ms IS NULL OR lease_until_ms < $4)",
        )
        .bind(kind.as_str())
        .bind(entity_id)
        .bind(now + lease_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// The entry was pushed as of `seq`: deletes it, or (changed meanwhile)
    /// leaves it due at once.
    pub async fn mlflow_done(&self, kind: OutboxKind, entity_id: i64, seq: i64) -> StoreResult<()> {
        let res = sqlx::query(
            "DELETE FROM mlflow_outbox WHERE kind = $1 AND entity_id = $2 AND seq = $3",
        )
        .bind(kind.as_str())
        .bind(entity_id)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        if res.rows_affected() == 0 {
            sqlx::query(
                "UPDATE mlflow_outbox SET lease_until_ms = NULL, attempts = 0, \
                 next_attempt_at_ms = 0, last_error = NULL WHERE kind = $1 AND entity_id = $2",
            )
            .bind(kind.as_str())
            .bind(entity_id)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// The push failed: try again at `next_attempt_at_ms`.
    pub async fn mlflow_retry(
        &self,
        kind: OutboxKind,
        entity_id: i64,
        error: &str,
        next_attempt_at_ms: i64,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE mlflow_outbox SET lease_until_ms = NULL, attempts = attempts + 1, \
             next_attempt_at_ms = $3, last_error = $4 WHERE kind = $1 AND entity_id = $2",
        )
        .bind(kind.as_str())
        .bind(entity_id)
        .bind(next_attempt_at_ms)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes every entry due now (e.g. when MLflow is known to be back).
    pub async fn mlflow_retry_all_now(&self) -> StoreResult<u64> {
        Ok(
            sqlx::query("UPDATE mlflow_outbox SET next_attempt_at_ms = 0, lease_until_ms = NULL")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// How far behind the sync is.
    pub async fn mlflow_status(&self) -> StoreResult<OutboxStatus> {
        let mut st = OutboxStatus::default();
        let rows = sqlx::query(
            "SELECT kind, COUNT(*), SUM(CASE WHEN attempts > 0 THEN 1 ELSE 0 END), \
             MIN(created_at_ms) FROM mlflow_outbox GROUP BY kind",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            let kind: String = r.try_get(0)?;
            let n: i64 = r.try_get(1)?;
            let failing: Option<i64> = r.try_get(2)?;
            let oldest: Option<i64> = r.try_get(3)?;
            match OutboxKind::parse(&kind) {
                Some(OutboxKind::Run) => st.pending_runs = n,
                Some(OutboxKind::Version) => st.pending_versions = n,
                Some(OutboxKind::Aliases) => st.pending_aliases = n,
                None => continue,
            }
            st.pending += n;
            st.failing += failing.unwrap_or(0);
            st.oldest_pending_ms = match (st.oldest_pending_ms, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        st.unsynced_metrics = sqlx::query_scalar(
            "SELECT COUNT(*) FROM metrics m JOIN mlflow_outbox o \
             ON o.kind = 'run' AND o.entity_id = m.run_id WHERE m.mlflow_synced = 0",
        )
        .fetch_one(&self.pool)
        .await?;
        let rows = sqlx::query(AssertSql(format!(
            "SELECT {ENTRY_COLS} FROM mlflow_outbox WHERE last_error IS NOT NULL \
             ORDER BY next_attempt_at_ms DESC LIMIT 5"
        )))
        .fetch_all(&self.pool)
        .await?;
        for r in &rows {
            if let Some(e) = entry_from_row(r)? {
                st.errors.push(e);
            }
        }
        Ok(st)
    }

    /// The MLflow id of a hub entity (`experiment`, `run`, `version`), and
    /// whether its params were sent.
    pub async fn mlflow_link(
        &self,
        kind: &str,
        entity_id: i64,
    ) -> StoreResult<Option<(String, bool)>> {
        let row: Option<(String, i64)> = sqlx::query_as(
            "SELECT mlflow_id, params_synced FROM mlflow_links WHERE kind = $1 AND entity_id = $2",
        )
        .bind(kind)
        .bind(entity_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(id, p)| (id, p != 0)))
    }

    pub async fn set_mlflow_link(
        &self,
        kind: &str,
        entity_id: i64,
        mlflow_id: &str,
        params_synced: bool,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO mlflow_links (kind, entity_id, mlflow_id, params_synced) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (kind, entity_id) \
             DO UPDATE SET mlflow_id = excluded.mlflow_id, params_synced = excluded.params_synced",
        )
        .bind(kind)
        .bind(entity_id)
        .bind(mlflow_id)
        .bind(i64::from(params_synced))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Up to `limit` metric values of a run not yet sent, by step.
    pub async fn mlflow_unsynced_metrics(
        &self,
        run_id: i64,
        limit: i64,
    ) -> StoreResult<Vec<UnsyncedMetric>> {
        let rows = sqlx::query(
            "SELECT key, step, value, timestamp_ms FROM metrics \
             WHERE run_id = $1 AND mlflow_synced = 0 ORDER BY step, key LIMIT $2",
        )
        .bind(run_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(UnsyncedMetric {
                    key: r.try_get(0)?,
                    step: r.try_get(1)?,
                    value: r.try_get(2)?,
                    timestamp_ms: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Marks values as sent (a value replaced since stays unsent).
    pub async fn mlflow_mark_metrics_synced(
        &self,
        run_id: i64,
        sent: &[UnsyncedMetric],
    ) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        for m in sent {
            sqlx::query(
                "UPDATE metrics SET mlflow_synced = 1 \
                 WHERE run_id = $1 AND key = $2 AND step = $3 AND value = $4",
            )
            .bind(run_id)
            .bind(&m.key)
            .bind(m.step)
            .bind(m.value)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
