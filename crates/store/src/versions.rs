//! Model versions: numbered per model (1, 2, 3… atomically), immutable once
//! `ready`, with their files (relative path, size, sha256), aliases and lineage.

use crate::Entity;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use errors::Code;

use super::{
    AssertSql, Store, StoreError, StoreResult, Violation, check_name, check_sha256, check_tags,
    from_json, normalise_tags, to_json, violation,
};

/// Life of a version: `registering → ready | failed`, `ready ⇄ archived`,
/// `failed → archived`. Content is frozen once it leaves `registering`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionStatus {
    Registering,
    Ready,
    Failed,
    Archived,
}

impl VersionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Registering => "registering",
            VersionStatus::Ready => "ready",
            VersionStatus::Failed => "failed",
            VersionStatus::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "registering" => VersionStatus::Registering,
            "ready" => VersionStatus::Ready,
            "failed" => VersionStatus::Failed,
            "archived" => VersionStatus::Archived,
            _ => return None,
        })
    }
}

impl std::fmt::Display for VersionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a version came from. Every field is optional: a version registered
/// from a folder has none of the training fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lineage {
    /// The version this one was trained from (also a foreign key column).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_version_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<i64>,
    /// The training configuration, as submitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hub_commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mlx_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blas: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lockfile_hash: Option<String>,
    /// Where it was registered from (folder, GGUF file, HF cache entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What [`Store::create_version`] needs. The version starts `registering`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct NewVersion {
    /// e.g. `mlx` (mlx-lm folder), `adapter`, `gguf`.
    pub format: String,
    pub architecture: Option<String>,
    pub parameter_count: Option<i64>,
    pub dtype: Option<String>,
    /// mlx-lm's `quantization` object, e.g. `{"group_size":64,"bits":4}`.
    pub quantization: Option<serde_json::Value>,
    /// Where the files are (a folder, `cas://`, `s3://…`).
    pub artifact_uri: Option<String>,
    pub description: String,
    pub tags: Vec<String>,
    pub lineage: Lineage,
}

/// A partial update. Content fields (`format` … `lineage`) can only change
/// while the version is `registering`; `description` and `tags` always.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VersionUpdate {
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
    pub format: Option<String>,
    pub architecture: Option<String>,
    pub parameter_count: Option<i64>,
    pub dtype: Option<String>,
    pub quantization: Option<serde_json::Value>,
    pub artifact_uri: Option<String>,
    pub lineage: Option<Lineage>,
}

impl VersionUpdate {
    fn touches_content(&self) -> bool {
        self.format.is_some()
            || self.architecture.is_some()
            || self.parameter_count.is_some()
            || self.dtype.is_some()
            || self.quantization.is_some()
            || self.artifact_uri.is_some()
            || self.lineage.is_some()
    }
}

/// A model version.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelVersion {
    pub id: i64,
    pub model_id: i64,
    pub number: i64,
    pub status: VersionStatus,
    pub description: String,
    pub tags: Vec<String>,
    pub format: String,
    pub architecture: Option<String>,
    pub parameter_count: Option<i64>,
    pub dtype: Option<String>,
    pub quantization: Option<serde_json::Value>,
    /// Sum of the files' sizes (set when the version becomes ready).
    pub size_bytes: i64,
    pub artifact_uri: Option<String>,
    pub lineage: Lineage,
    /// Why it failed, when it did.
    pub status_message: Option<String>,
    /// Aliases pointing at this version, sorted.
    pub aliases: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub ready_at_ms: Option<i64>,
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionFile {
    /// Relative, `/`-separated, no `.`/`..` components.
    pub path: String,
    pub size_bytes: i64,
    /// Lowercase hex.
    pub sha256: String,
}

/// An alias (`production`, `staging`, …) of a model, pointing at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionAlias {
    pub model_id: i64,
    pub alias: String,
    pub version_id: i64,
    pub version_number: i64,
    pub updated_at_ms: i64,
}

/// How a user names a version of a model: `3`, `v3`, `latest` (the newest
/// ready version) or an alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRef {
    Number(i64),
    Latest,
    Alias(String),
}

impl VersionRef {
    pub fn parse(s: &str) -> VersionRef {
        let digits = s.strip_prefix('v').unwrap_or(s);
        if !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = digits.parse()
        {
            return VersionRef::Number(n);
        }
        if s == "latest" {
            VersionRef::Latest
        } else {
            VersionRef::Alias(s.to_string())
        }
    }
}

const COLS: &str = "id, model_id, number, status, description, tags, format, architecture, \
    parameter_count, dtype, quantization, size_bytes, artifact_uri, lineage, status_message, \
    created_at_ms, updated_at_ms, ready_at_ms";

fn version_from_row(row: &AnyRow) -> StoreResult<ModelVersion> {
    let status: String = row.try_get("status")?;
    let quantization: Option<String> = row.try_get("quantization")?;
    Ok(ModelVersion {
        id: row.try_get("id")?,
        model_id: row.try_get("model_id")?,
        number: row.try_get("number")?,
        status: VersionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            entity: "model_versions",
            field: "status",
            message: format!("unknown status {status:?}"),
        })?,
        description: row.try_get("description")?,
        tags: from_json("model_versions", "tags", &row.try_get::<String, _>("tags")?)?,
        format: row.try_get("format")?,
        architecture: row.try_get("architecture")?,
        parameter_count: row.try_get("parameter_count")?,
        dtype: row.try_get("dtype")?,
        quantization: quantization
            .map(|q| from_json("model_versions", "quantization", &q))
            .transpose()?,
        size_bytes: row.try_get("size_bytes")?,
        artifact_uri: row.try_get("artifact_uri")?,
        lineage: from_json(
            "model_versions",
            "lineage",
            &row.try_get::<String, _>("lineage")?,
        )?,
        status_message: row.try_get("status_message")?,
        aliases: Vec::new(),
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
        ready_at_ms: row.try_get("ready_at_ms")?,
    })
}

/// Checks a version file path: relative, `/`-separated, every component a
/// plain name (no empty, `.` or `..` component, no backslash, no NUL).
pub fn check_relative_path(path: &str) -> StoreResult<()> {
    let bad = |m: &str| Err(StoreError::invalid("path", format!("{path:?}: {m}")));
    if path.is_empty() || path.len() > 1024 {
        return bad("must be 1 to 1024 bytes");
    }
    if path.starts_with('/') || path.contains('\\') || path.contains('\0') {
        return bad("must be a relative '/'-separated path");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("must not contain empty, '.' or '..' components");
    }
    Ok(())
}

pub fn check_alias(alias: &str) -> StoreResult<()> {
    let ok = alias.len() <= 64
        && alias.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && alias
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && alias != "latest";
    if ok {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "alias",
            "must be 1-64 of a-z, 0-9, '-', '_', start with a letter, and not be 'latest'",
        ))
    }
}

fn check_new_version(v: &NewVersion) -> StoreResult<()> {
    check_name("format", &v.format, 64)?;
    check_tags(&v.tags)?;
    if v.parameter_count.is_some_and(|n| n < 0) {
        return Err(StoreError::invalid(
            "parameter_count",
            "must not be negative",
        ));
    }
    Ok(())
}

fn map_version_write(e: sqlx::Error, id: i64) -> StoreError {
    match violation(&e) {
        Some(Violation::Immutable) => StoreError::Immutable {
            entity: Entity::Version,
            key: id.to_string(),
        },
        Some(Violation::ForeignKey) => StoreError::invalid(
            "lineage.base_version_id",
            "refers to a version that does not exist",
        ),
        _ => e.into(),
    }
}

impl Store {
    /// Creates version N+1 of a model, in `registering`. Numbering is atomic
    /// (a counter on the model row, bumped under its row lock).
    pub async fn create_version(
        &self,
        model_id: i64,
        new: &NewVersion,
    ) -> StoreResult<ModelVersion> {
        self.create_version_owned(model_id, new, None).await
    }

    /// [`Store::create_version`], recording in the same transaction which
    /// process registers it (see `crate::owner`).
    pub async fn create_version_owned(
        &self,
        model_id: i64,
        new: &NewVersion,
        owner: Option<&str>,
    ) -> StoreResult<ModelVersion> {
        check_new_version(new)?;
        let now = self.now_ms();
        let mut tx = self.begin_write().await?;
        let number: i64 = sqlx::query_scalar(
            "UPDATE models SET next_version = next_version + 1, updated_at_ms = $2 \
             WHERE id = $1 RETURNING next_version - 1",
        )
        .bind(model_id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Model, model_id))?;
        let row = sqlx::query(AssertSql(format!(
            "INSERT INTO model_versions (model_id, number, status, description, tags, format, \
             architecture, parameter_count, dtype, quantization, artifact_uri, base_version_id, \
             lineage, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, 'registering', $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) \
             RETURNING {COLS}"
        )))
        .bind(model_id)
        .bind(number)
        .bind(&new.description)
        .bind(to_json(&normalise_tags(&new.tags)))
        .bind(&new.format)
        .bind(new.architecture.clone())
        .bind(new.parameter_count)
        .bind(new.dtype.clone())
        .bind(new.quantization.as_ref().map(to_json))
        .bind(new.artifact_uri.clone())
        .bind(new.lineage.base_version_id)
        .bind(to_json(&new.lineage))
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_version_write(e, 0))?;
        let v = version_from_row(&row)?;
        if let Some(owner) = owner {
            sqlx::query("INSERT INTO registration_owners (version_id, owner) VALUES ($1, $2)")
                .bind(v.id)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(v)
    }

    /// The process registering a version, if one was recorded.
    pub async fn registration_owner(&self, version_id: i64) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT owner FROM registration_owners WHERE version_id = $1")
                .bind(version_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn get_version(&self, id: i64) -> StoreResult<ModelVersion> {
        let row = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM model_versions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Version, id))?;
        let mut v = version_from_row(&row)?;
        v.aliases = self.aliases_of(id).await?;
        Ok(v)
    }

    /// Resolves `3`, `v3`, `latest` or an alias to a version of the model.
    pub async fn resolve_version(
        &self,
        model_id: i64,
        reference: &str,
    ) -> StoreResult<ModelVersion> {
        let key = || format!("{model_id}:{reference}");
        let id: Option<i64> = match VersionRef::parse(reference) {
            VersionRef::Number(n) => {
                sqlx::query_scalar(
                    "SELECT id FROM model_versions WHERE model_id = $1 AND number = $2",
                )
                .bind(model_id)
                .bind(n)
                .fetch_optional(&self.pool)
                .await?
            }
            VersionRef::Latest => {
                sqlx::query_scalar(
                    "SELECT id FROM model_versions WHERE model_id = $1 AND status = 'ready' \
                     ORDER BY number DESC LIMIT 1",
                )
                .bind(model_id)
                .fetch_optional(&self.pool)
                .await?
            }
            VersionRef::Alias(a) => {
                sqlx::query_scalar(
                    "SELECT version_id FROM version_aliases WHERE model_id = $1 AND alias = $2",
                )
                .bind(model_id)
                .bind(a)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        match id {
            Some(id) => self.get_version(id).await,
            None => Err(StoreError::NotFound {
                entity: Entity::Version,
                key: key(),
            }),
        }
    }

    /// Versions of a model, oldest first; only those in `status` when given.
    pub async fn list_versions(
        &self,
        model_id: i64,
        status: Option<VersionStatus>,
    ) -> StoreResult<Vec<ModelVersion>> {
        // distinguish "no such model" from "no versions"
        self.get_model(model_id).await?;
        let rows = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM model_versions WHERE model_id = $1 \
             AND ($2 IS NULL OR status = $2) ORDER BY number"
        )))
        .bind(model_id)
        .bind(status.map(|s| s.as_str()))
        .fetch_all(&self.pool)
        .await?;
        let mut versions: Vec<ModelVersion> = rows
            .iter()
            .map(version_from_row)
            .collect::<StoreResult<_>>()?;
        let mut by_version: HashMap<i64, Vec<String>> = HashMap::new();
        for a in self.list_aliases(model_id).await? {
            by_version.entry(a.version_id).or_default().push(a.alias);
        }
        for v in &mut versions {
            v.aliases = by_version.remove(&v.id).unwrap_or_default();
        }
        Ok(versions)
    }

    /// Updates a version. Content fields only while `registering`
    /// (`Immutable` afterwards, enforced by the database too).
    pub async fn update_version(
        &self,
        id: i64,
        update: &VersionUpdate,
    ) -> StoreResult<ModelVersion> {
        if let Some(tags) = &update.tags {
            check_tags(tags)?;
        }
        if let Some(f) = &update.format {
            check_name("format", f, 64)?;
        }
        let mut tx = self.begin_write().await?;
        let status = version_status_tx(&mut tx, id).await?;
        if update.touches_content() && status != VersionStatus::Registering {
            return Err(StoreError::Immutable {
                entity: Entity::Version,
                key: id.to_string(),
            });
        }
        let row = sqlx::query(AssertSql(format!(
            "UPDATE model_versions SET \
             description = COALESCE($2, description), tags = COALESCE($3, tags), \
             format = COALESCE($4, format), architecture = COALESCE($5, architecture), \
             parameter_count = COALESCE($6, parameter_count), dtype = COALESCE($7, dtype), \
             quantization = COALESCE($8, quantization), artifact_uri = COALESCE($9, artifact_uri), \
             lineage = COALESCE($10, lineage), base_version_id = COALESCE($11, base_version_id), \
             updated_at_ms = $12 WHERE id = $1 RETURNING {COLS}"
        )))
        .bind(id)
        .bind(update.description.clone())
        .bind(update.tags.as_ref().map(|t| to_json(&normalise_tags(t))))
        .bind(update.format.clone())
        .bind(update.architecture.clone())
        .bind(update.parameter_count)
        .bind(update.dtype.clone())
        .bind(update.quantization.as_ref().map(to_json))
        .bind(update.artifact_uri.clone())
        .bind(update.lineage.as_ref().map(to_json))
        .bind(update.lineage.as_ref().and_then(|l| l.base_version_id))
        .bind(self.now_ms())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_version_write(e, id))?;
        let mut v = version_from_row(&row)?;
        tx.commit().await?;
        v.aliases = self.aliases_of(id).await?;
        Ok(v)
    }

    /// Records files of a `registering` version (`Immutable` otherwise,
    /// `Conflict` on a duplicate path).
    pub async fn add_version_files(
        &self,
        version_id: i64,
        files: &[VersionFile],
    ) -> StoreResult<()> {
        for f in files {
            check_relative_path(&f.path)?;
            check_sha256("sha256", &f.sha256)?;
            if f.size_bytes < 0 {
                return Err(StoreError::invalid("size_bytes", "must not be negative"));
            }
        }
        let mut tx = self.begin_write().await?;
        let status = version_status_tx(&mut tx, version_id).await?;
        if status != VersionStatus::Registering {
            return Err(StoreError::Immutable {
                entity: Entity::Version,
                key: version_id.to_string(),
            });
        }
        for chunk in files.chunks(200) {
            let mut sql = String::from(
                "INSERT INTO version_files (version_id, path, size_bytes, sha256) VALUES ",
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let b = i * 3;
                sql += &format!("($1, ${}, ${}, ${})", b + 2, b + 3, b + 4);
            }
            let mut q = sqlx::query(AssertSql(sql)).bind(version_id);
            for f in chunk {
                q = q
                    .bind(f.path.clone())
                    .bind(f.size_bytes)
                    .bind(f.sha256.clone());
            }
            q.execute(&mut *tx).await.map_err(|e| match violation(&e) {
                Some(Violation::Unique) => StoreError::Conflict {
                    entity: Entity::VersionFile,
                    key: version_id.to_string(),
                    message: "a file with this path is already recorded".into(),
                    code: Code::Conflict,
                },
                _ => map_version_write(e, version_id),
            })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The files of a version, sorted by path.
    pub async fn version_files(&self, version_id: i64) -> StoreResult<Vec<VersionFile>> {
        let rows = sqlx::query(
            "SELECT path, size_bytes, sha256 FROM version_files WHERE version_id = $1 ORDER BY path",
        )
        .bind(version_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            // distinguish "no such version"
            self.get_version(version_id).await?;
        }
        rows.iter()
            .map(|r| {
                Ok(VersionFile {
                    path: r.try_get("path")?,
                    size_bytes: r.try_get("size_bytes")?,
                    sha256: r.try_get("sha256")?,
                })
            })
            .collect()
    }

    /// `registering → ready`: freezes the version and records its total size.
    /// A version needs at least one file to be ready.
    pub async fn mark_version_ready(&self, id: i64) -> StoreResult<ModelVersion> {
        let mut tx = self.begin_write().await?;
        make_ready_tx(&mut tx, id, self.now_ms()).await?;
        tx.commit().await?;
        self.get_version(id).await
    }

    /// `registering → failed`, with the reason.
    pub async fn mark_version_failed(&self, id: i64, message: &str) -> StoreResult<ModelVersion> {
        self.move_version(
            id,
            &[VersionStatus::Registering],
            VersionStatus::Failed,
            Some(message),
        )
        .await
    }

    /// `ready | failed → archived`. The version's aliases are removed.
    pub async fn archive_version(&self, id: i64) -> StoreResult<ModelVersion> {
        self.move_version(
            id,
            &[VersionStatus::Ready, VersionStatus::Failed],
            VersionStatus::Archived,
            None,
        )
        .await
    }

    /// `archived → ready` (only for versions that had been ready).
    pub async fn restore_version(&self, id: i64) -> StoreResult<ModelVersion> {
        let v = self.get_version(id).await?;
        if v.status == VersionStatus::Archived && v.ready_at_ms.is_none() {
            return Err(illegal(id, v.status, VersionStatus::Ready));
        }
        self.move_version(id, &[VersionStatus::Archived], VersionStatus::Ready, None)
            .await
    }

    async fn move_version(
        &self,
        id: i64,
        from: &[VersionStatus],
        to: VersionStatus,
        message: Option<&str>,
    ) -> StoreResult<ModelVersion> {
        let mut tx = self.begin_write().await?;
        let status = version_status_tx(&mut tx, id).await?;
        if !from.contains(&status) {
            return Err(illegal(id, status, to));
        }
        sqlx::query(
            "UPDATE model_versions SET status = $2, status_message = COALESCE($3, status_message), \
             updated_at_ms = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(to.as_str())
        .bind(message.map(str::to_string))
        .bind(self.now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| map_version_write(e, id))?;
        if to == VersionStatus::Archived {
            sqlx::query("DELETE FROM version_aliases WHERE version_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.get_version(id).await
    }

    /// Points `alias` of a model at a ready version, moving it if it pointed
    /// elsewhere. `InvalidInput` if the version belongs to another model,
    /// `Conflict` if it is not ready.
    pub async fn set_alias(
        &self,
        model_id: i64,
        alias: &str,
        version_id: i64,
    ) -> StoreResult<VersionAlias> {
        check_alias(alias)?;
        let mut tx = self.begin_write().await?;
        let row: Option<(i64, String)> =
            sqlx::query_as("SELECT model_id, status FROM model_versions WHERE id = $1")
                .bind(version_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((owner, status)) = row else {
            return Err(StoreError::not_found(Entity::Version, version_id));
        };
        if owner != model_id {
            return Err(StoreError::invalid(
                "version_id",
                format!("version {version_id} is not a version of model {model_id}"),
            ));
        }
        if status != "ready" {
            return Err(StoreError::Conflict {
                entity: Entity::Version,
                key: version_id.to_string(),
                message: format!("only a ready version can carry an alias (it is {status})"),
                code: Code::Conflict,
            });
        }
        sqlx::query(
            "INSERT INTO version_aliases (model_id, alias, version_id, updated_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (model_id, alias) \
             DO UPDATE SET version_id = excluded.version_id, updated_at_ms = excluded.updated_at_ms",
        )
        .bind(model_id)
        .bind(alias)
        .bind(version_id)
        .bind(self.now_ms())
        .execute(&mut *tx)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::ForeignKey) => StoreError::invalid(
                "version_id",
                format!("version {version_id} is not a version of model {model_id}"),
            ),
            _ => e.into(),
        })?;
        tx.commit().await?;
        self.list_aliases(model_id)
            .await?
            .into_iter()
            .find(|a| a.alias == alias)
            .ok_or_else(|| StoreError::not_found(Entity::Alias, alias))
    }

    /// Removes an alias. `NotFound` if it does not exist.
    pub async fn remove_alias(&self, model_id: i64, alias: &str) -> StoreResult<()> {
        let res = sqlx::query("DELETE FROM version_aliases WHERE model_id = $1 AND alias = $2")
            .bind(model_id)
            .bind(alias)
            .execute(&self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                entity: Entity::Alias,
                key: format!("{model_id}:{alias}"),
            });
        }
        Ok(())
    }

    /// Ids of the versions still `registering`, oldest first.
    pub async fn registering_version_ids(&self) -> StoreResult<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM model_versions WHERE status = 'registering' ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The aliases of a model, sorted by name.
    pub async fn list_aliases(&self, model_id: i64) -> StoreResult<Vec<VersionAlias>> {
        let rows = sqlx::query(
            "SELECT a.model_id, a.alias, a.version_id, v.number, a.updated_at_ms \
             FROM version_aliases a JOIN model_versions v ON v.id = a.version_id \
             WHERE a.model_id = $1 ORDER BY a.alias",
        )
        .bind(model_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VersionAlias {
                    model_id: r.try_get(0)?,
                    alias: r.try_get(1)?,
                    version_id: r.try_get(2)?,
                    version_number: r.try_get(3)?,
                    updated_at_ms: r.try_get(4)?,
                })
            })
            .collect()
    }

    async fn aliases_of(&self, version_id: i64) -> StoreResult<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT alias FROM version_aliases WHERE version_id = $1 ORDER BY alias",
        )
        .bind(version_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// `registering → ready` inside a write transaction: checks the status and
/// that the version has files, records the total size.
pub(crate) async fn make_ready_tx(
    tx: &mut Transaction<'static, Any>,
    id: i64,
    now: i64,
) -> StoreResult<()> {
    let status = version_status_tx(tx, id).await?;
    if status != VersionStatus::Registering {
        return Err(illegal(id, status, VersionStatus::Ready));
    }
    let (count, size): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) \
         FROM version_files WHERE version_id = $1",
    )
    .bind(id)
    .fetch_one(&mut **tx)
    .await?;
    if count == 0 {
        return Err(StoreError::invalid(
            "files",
            "a version needs at least one file to be ready",
        ));
    }
    sqlx::query(
        "UPDATE model_versions SET status = 'ready', size_bytes = $2, ready_at_ms = $3, \
         updated_at_ms = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(size)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| map_version_write(e, id))?;
    Ok(())
}

fn illegal(id: i64, from: VersionStatus, to: VersionStatus) -> StoreError {
    StoreError::IllegalTransition {
        entity: Entity::Version,
        key: id.to_string(),
        from: from.to_string(),
        to: to.to_string(),
    }
}

/// The status of a version inside a write transaction (row-locked on PostgreSQL).
async fn version_status_tx(
    tx: &mut Transaction<'static, Any>,
    id: i64,
) -> StoreResult<VersionStatus> {
    let sql = if tx_is_postgres(tx) {
        "SELECT status FROM model_versions WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT status FROM model_versions WHERE id = $1"
    };
    let s: String = sqlx::query_scalar(sql)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Version, id))?;
    VersionStatus::parse(&s).ok_or_else(|| StoreError::Corrupt {
        entity: "model_versions",
        field: "status",
        message: format!("unknown status {s:?}"),
    })
}

pub(crate) fn tx_is_postgres(tx: &Transaction<'static, Any>) -> bool {
    use sqlx::AnyConnection;
    let conn: &AnyConnection = tx;
    conn.backend_name().eq_ignore_ascii_case("postgresql")
}

/// The format of the versions training jobs register.
pub const ADAPTER_FORMAT: &str = "mlx-lora-adapter";
