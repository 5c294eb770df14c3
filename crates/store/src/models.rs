//! Models: a name, a description and tags; versions hang off them.

use crate::Entity;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use errors::Code;

use super::{
    AssertSql, Backend, Store, StoreError, StoreResult, Violation, check_name, check_tags,
    from_json, normalise_tags, to_json, violation,
};

/// A registered model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Model {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What [`Store::create_model`] needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewModel {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A partial update: `None` leaves the field as it is.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelUpdate {
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// Filter and page for [`Store::list_models`]. Results are ordered by name.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelFilter {
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// Exact tag the model must carry.
    pub tag: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

impl Default for ModelFilter {
    fn default() -> Self {
        ModelFilter {
            name_contains: None,
            tag: None,
            limit: 100,
            offset: 0,
        }
    }
}

const COLS: &str = "id, name, description, tags, created_at_ms, updated_at_ms";

fn model_from_row(row: &AnyRow) -> StoreResult<Model> {
    Ok(Model {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        tags: from_json("models", "tags", &row.try_get::<String, _>("tags")?)?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

/// Model names: `[A-Za-z0-9][A-Za-z0-9._/-]*`, at most 200 bytes (so they are
/// safe in URLs, paths and MLflow experiment names), no `..`.
pub fn check_model_name(name: &str) -> StoreResult<()> {
    check_name("name", name, 200)?;
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'));
    if !first_ok || !rest_ok || name.contains("..") || name.ends_with('/') || name.contains("//") {
        return Err(StoreError::invalid(
            "name",
            "must start with a letter or digit and contain only letters, digits, '.', '_', '-', '/' (no '..')",
        ));
    }
    Ok(())
}

pub(crate) fn substring_sql(backend: Backend, haystack: &str, needle_param: &str) -> String {
    match backend {
        Backend::Sqlite => format!("instr({haystack}, {needle_param}) > 0"),
        Backend::Postgres => format!("strpos({haystack}, {needle_param}) > 0"),
    }
}

impl Store {
    /// Creates a model. `Conflict` if the name is taken.
    pub async fn create_model(&self, new: &NewModel) -> StoreResult<Model> {
        check_model_name(&new.name)?;
        check_tags(&new.tags)?;
        let now = self.now_ms();
        let row = sqlx::query(AssertSql(format!(
            "INSERT INTO models (name, description, tags, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $4) RETURNING {COLS}"
        )))
        .bind(&new.name)
        .bind(&new.description)
        .bind(to_json(&normalise_tags(&new.tags)))
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| match violation(&e) {
            Some(Violation::Unique) => StoreError::Conflict {
                entity: Entity::Model,
                key: new.name.clone(),
                message: "a model with this name already exists".into(),
                code: Code::ModelAlreadyExists,
            },
            _ => e.into(),
        })?;
        model_from_row(&row)
    }

    pub async fn get_model(&self, id: i64) -> StoreResult<Model> {
        let row = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM models WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Model, id))?;
        model_from_row(&row)
    }

    pub async fn get_model_by_name(&self, name: &str) -> StoreResult<Model> {
        let row = sqlx::query(AssertSql(format!(
            "SELECT {COLS} FROM models WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Model, name))?;
        model_from_row(&row)
    }

    /// Models matching `filter`, ordered by name.
    pub async fn list_models(&self, filter: &ModelFilter) -> StoreResult<Vec<Model>> {
        if !(1..=1000).contains(&filter.limit) {
            return Err(StoreError::invalid("limit", "must be between 1 and 1000"));
        }
        if filter.offset < 0 {
            return Err(StoreError::invalid("offset", "must not be negative"));
        }
        let mut sql = format!("SELECT {COLS} FROM models WHERE 1 = 1");
        let mut n = 0;
        if filter.name_contains.is_some() {
            n += 1;
            sql += " AND ";
            sql += &substring_sql(self.backend, "lower(name)", &format!("lower(${n})"));
        }
        if filter.tag.is_some() {
            n += 1;
            sql += " AND ";
            sql += &substring_sql(self.backend, "tags", &format!("${n}"));
        }
        sql += &format!(" ORDER BY name LIMIT ${} OFFSET ${}", n + 1, n + 2);
        let mut q = sqlx::query(AssertSql(sql));
        if let Some(s) = &filter.name_contains {
            q = q.bind(s.clone());
        }
        if let Some(t) = &filter.tag {
            // tags are a JSON array of strings: match the quoted element
            q = q.bind(to_json(t));
        }
        let rows = q
            .bind(filter.limit)
            .bind(filter.offset)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(model_from_row).collect()
    }

    pub async fn update_model(&self, id: i64, update: &ModelUpdate) -> StoreResult<Model> {
        if let Some(tags) = &update.tags {
            check_tags(tags)?;
        }
        let row = sqlx::query(AssertSql(format!(
            "UPDATE models SET description = COALESCE($2, description), \
             tags = COALESCE($3, tags), updated_at_ms = $4 WHERE id = $1 RETURNING {COLS}"
        )))
        .bind(id)
        .bind(update.description.clone())
        .bind(update.tags.as_ref().map(|t| to_json(&normalise_tags(t))))
        .bind(self.now_ms())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::not_found(Entity::Model, id))?;
        model_from_row(&row)
    }

    /// Deletes a model with no versions (its aliases go with it). `Conflict`
    /// while any version exists.
    pub async fn delete_model(&self, id: i64) -> StoreResult<()> {
        let res = sqlx::query("DELETE FROM models WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| match violation(&e) {
                Some(Violation::ForeignKey) => StoreError::Conflict {
                    entity: Entity::Model,
                    key: id.to_string(),
                    message: "the model still has versions".into(),
                    code: Code::ModelHasVersions,
                },
                _ => e.into(),
            })?;
        if res.rows_affected() == 0 {
            return Err(StoreError::not_found(Entity::Model, id));
        }
        Ok(())
    }
}
