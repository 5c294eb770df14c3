//! Artifact records: which content-addressed blobs exist, their size and tier.
//! The files themselves live in an [`crate::artifacts::ArtifactStore`];
//! references are counted from `version_files` (no counter to drift).

use crate::Entity;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use errors::Code;

use super::{Store, StoreError, StoreResult, check_sha256};

/// A blob known to the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArtifactRecord {
    pub sha256: String,
    pub size_bytes: i64,
    pub tier: Tier,
    /// How many version files have this content.
    pub references: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

const SELECT: &str = "SELECT a.sha256, a.size_bytes, a.tier, a.created_at_ms, a.updated_at_ms, \
    (SELECT COUNT(*) FROM version_files f WHERE f.sha256 = a.sha256) AS refs FROM artifacts a";

fn record_from_row(row: &AnyRow) -> StoreResult<ArtifactRecord> {
    let tier: String = row.try_get("tier")?;
    Ok(ArtifactRecord {
        sha256: row.try_get("sha256")?,
        size_bytes: row.try_get("size_bytes")?,
        tier: Tier::parse(&tier).ok_or_else(|| StoreError::Corrupt {
            entity: "artifacts",
            field: "tier",
            message: format!("unknown tier {tier:?}"),
        })?,
        references: row.try_get("refs")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

impl Store {
    /// Records a blob (idempotent: an existing record is returned unchanged,
    /// `Conflict` if it was recorded with another size).
    pub async fn record_artifact(
        &self,
        sha256: &str,
        size_bytes: i64,
    ) -> StoreResult<ArtifactRecord> {
        check_sha256("sha256", sha256)?;
        if size_bytes < 0 {
            return Err(StoreError::invalid("size_bytes", "must not be negative"));
        }
        let now = self.now_ms();
        sqlx::query(
            "INSERT INTO artifacts (sha256, size_bytes, tier, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, 'active', $3, $3) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(size_bytes)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let rec = self.get_artifact(sha256).await?;
        if rec.size_bytes != size_bytes {
            return Err(StoreError::Conflict {
                entity: Entity::Artifact,
                key: sha256.to_string(),
                message: format!("recorded with size {} but now {size_bytes}", rec.size_bytes),
                code: Code::Conflict,
            });
        }
        Ok(rec)
    }

    pub async fn get_artifact(&self, sha256: &str) -> StoreResult<ArtifactRecord> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{SELECT} WHERE a.sha256 = $1")))
            .bind(sha256)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::not_found(Entity::Artifact, sha256))?;
        record_from_row(&row)
    }

    /// Moves a blob's record to `tier`.
    pub async fn set_artifact_tier(&self, sha256: &str, tier: Tier) -> StoreResult<ArtifactRecord> {
        let res =
            sqlx::query("UPDATE artifacts SET tier = $2, updated_at_ms = $3 WHERE sha256 = $1")
                .bind(sha256)
                .bind(tier.as_str())
                .bind(self.now_ms())
                .execute(&self.pool)
                .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::not_found(Entity::Artifact, sha256));
        }
        self.get_artifact(sha256).await
    }

    /// Blobs no version file refers to (candidates for garbage collection).
    pub async fn unreferenced_artifacts(&self) -> StoreResult<Vec<ArtifactRecord>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "{SELECT} WHERE NOT EXISTS (SELECT 1 FROM version_files f WHERE f.sha256 = a.sha256) \
             ORDER BY a.sha256"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Forgets a blob's record; `Conflict` while a version file refers to it.
    pub async fn delete_artifact_record(&self, sha256: &str) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM version_files WHERE sha256 = $1")
            .bind(sha256)
            .fetch_one(&mut *tx)
            .await?;
        if refs > 0 {
            return Err(StoreError::Conflict {
                entity: Entity::Artifact,
                key: sha256.to_string(),
                message: format!("still referenced by {refs} version file(s)"),
                code: Code::Conflict,
            });
        }
        let res = sqlx::query("DELETE FROM artifacts WHERE sha256 = $1")
            .bind(sha256)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::not_found(Entity::Artifact, sha256));
        }
        tx.commit().await?;
        Ok(())
    }

    /// How many files of versions that are not archived (or failed) and
    /// whose files live in the artifact store (not `file://` links) have this
    /// content: a blob with none can move to the archive tier.
    pub async fn live_references(&self, sha256: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM version_files f JOIN model_versions v ON v.id = f.version_id \
             WHERE f.sha256 = $1 AND v.status IN ('registering', 'ready') \
             AND (v.artifact_uri IS NULL OR v.artifact_uri NOT LIKE 'file://%')",
        )
        .bind(sha256)
        .fetch_one(&self.pool)
        .await?)
    }
}

/// Storage tier of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Active,
    Archive,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Active => "active",
            Tier::Archive => "archive",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "active" => Some(Tier::Active),
            "archive" => Some(Tier::Archive),
            _ => None,
        }
    }
}
