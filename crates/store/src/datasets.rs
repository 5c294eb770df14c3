//! Datasets: versioned per name (1, 2, 3… atomically), with their format,
//! split row counts, content hash and location.

use crate::Entity;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::models::check_model_name;
use super::{
    AssertSql, Store, StoreError, StoreResult, check_name, check_sha256, from_json, to_json,
};

/// A registered dataset version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dataset {
    pub id: i64,
    pub name: String,
    pub version: i64,
    /// `text`, `completions`, `chat` (mlx-lm's JSONL formats).
    pub format: String,
    /// Row count of each split (`train`, `valid`, `test`).
    pub splits: BTreeMap<String, i64>,
    /// sha256 over the dataset's content (lowercase hex).
    pub content_hash: String,
    pub location: String,
    pub size_bytes: i64,
    pub description: String,
    pub created_at_ms: i64,
}

/// What [`Store::create_dataset`] needs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NewDataset {
    pub name: String,
    pub format: String,
    pub splits: BTreeMap<String, i64>,
    pub content_hash: String,
    pub location: String,
    pub size_bytes: i64,
    pub description: String,
}

const COLS: &str = "id, name, version, format, splits, content_hash, location, size_bytes, \
    description, created_at_ms";

fn dataset_from_row(row: &AnyRow) -> StoreResult<Dataset> {
    Ok(Dataset {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        format: row.try_get("format")?,
        splits: from_json("datasets", "splits", &row.try_get::<String, _>("splits")?)?,
        content_hash: row.try_get("content_hash")?,
        location: row.try_get("location")?,
        size_bytes: row.try_get("size_bytes")?,
        description: row.try_get("description")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Store {
    /// Registers the next version of dataset `name`.
    pub async fn create_dataset(&self, new: &NewDataset) -> StoreResult<Dataset> {
        check_model_name(&new.name).map_err(|e| match e {
            StoreError::InvalidInput { message, .. } => StoreError::InvalidInput {
                field: "name",
                message,
            },
            e => e,
        })?;
        check_name("format", &new.format, 64)?;
        check_sha256("content_hash", &new.content_hash)?;
        check_name("location", &new.location, 4096)?;
        if new.size_bytes < 0 {
            return Err(StoreError::invalid("size_bytes", "must not be negative"));
        }
        for (split, rows) in &new.splits {
            check_name("splits", split, 64)?;
            if *rows < 0 {
                return Err(StoreError::invalid(
                    "splits",
                    format!("{split}: row count must not be negative"),
                ));
            }
        }
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        // Atomic per-name counter: the upsert takes the row lock on PostgreSQL,
        // and SQLite has one writer.
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO dataset_counters (name, next_version) VALUES ($1, 2) \
             ON CONFLICT (name) DO UPDATE SET next_version = dataset_counters.next_version + 1 \
             RETURNING next_version - 1",
        )
        .bind(&new.name)
        .fetch_one(&mut *tx)
        .await?;
        let row = sqlx::query(AssertSql(format!(
            "INSERT INTO datasets (name, version, format, splits, content_hash, location, \
             size_bytes, description, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             RETURNING {COLS}"
        )))
        .bind(&new.name)
        .bind(version)
        .bind(&new.format)
        .bind(to_json(&new.splits))
        .bind(&new.content_hash)
        .bind(&new.location)
        .bind(new.size_bytes)
        .bind(&new.description)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let d = dataset_from_row(&row)?;
        tx.commit().await?;
        Ok(d)
    }

    pub async fn get_dataset(&self, id: i64) -> StoreResult<Dataset> {
        let row = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM datasets WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Dataset, id))?;
        dataset_from_row(&row)
    }

    /// Version `version` of dataset `name`, or its newest when `None`.
    pub async fn get_dataset_by_name(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> StoreResult<Dataset> {
        let row = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM datasets WHERE name = $1 AND ($2 IS NULL OR version = $2) \
             ORDER BY version DESC LIMIT 1"
        )))
        .bind(name)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound {
            entity: Entity::Dataset,
            key: match version {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            },
        })?;
        dataset_from_row(&row)
    }

    /// All dataset versions (of `name` when given), by name then version.
    pub async fn list_datasets(&self, name: Option<&str>) -> StoreResult<Vec<Dataset>> {
        let rows = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM datasets WHERE ($1 IS NULL OR name = $1) ORDER BY name, version"
        )))
        .bind(name.map(str::to_string))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dataset_from_row).collect()
    }
}
