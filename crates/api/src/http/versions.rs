//! `/api/models/{name}/versions` and `/api/models/{name}/aliases`.

use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::extract::{ApiJson, ApiPath, ApiQuery, created};
use hub::registry::RegisterFolder;
use hub::service::Hub;
use hub::store::{ModelVersion, VersionStatus, VersionUpdate};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    status: Option<VersionStatus>,
}

pub(crate) async fn list(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let versions = hub.store.list_versions(m.id, q.status).await?;
    Ok(Json(serde_json::json!({ "data": versions })).into_response())
}

/// A version with its files and the base version it came from.
pub(crate) async fn detailed(hub: &Hub, v: &ModelVersion) -> ApiResult<serde_json::Value> {
    let files = hub.store.version_files(v.id).await?;
    let mut out = serde_json::to_value(v).expect("plain data");
    out["files"] = serde_json::to_value(files).expect("plain data");
    if let Some(base_id) = v.lineage.base_version_id {
        let base = hub.store.get_version(base_id).await?;
        let model = hub.store.get_model(base.model_id).await?;
        out["base_version"] = serde_json::json!({
            "id": base.id, "model": model.name, "number": base.number,
        });
    }
    Ok(out)
}

pub(crate) async fn register(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<RegisterFolder>,
) -> ApiResult<Response> {
    let root = hub.import_root()?;
    // run to completion even if the client goes away (a dropped handler
    // would leave the version `registering`)
    let h = hub.clone();
    let v =
        crate::extract::detached(async move { h.register_model_folder(&name, &body, &root).await })
            .await?;
    Ok(created(detailed(&hub, &v).await?))
}

pub(crate) async fn show(
    State(hub): State<Hub>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let v = hub.store.resolve_version(m.id, &version).await?;
    let mut body = serde_json::to_value(detailed(&hub, &v).await?).expect("plain data");
    // evaluation runs of this version, with their latest values
    let mut evaluations = Vec::new();
    for run in hub.store.list_runs_of_version(v.id).await? {
        let metrics: serde_json::Map<String, serde_json::Value> = hub
            .store
            .latest_metrics(run.id)
            .await?
            .into_iter()
            .map(|m| (m.key, serde_json::json!(m.value)))
            .collect();
        evaluations.push(serde_json::json!({ "run": run, "metrics": metrics }));
    }
    body["evaluations"] = serde_json::Value::Array(evaluations);
    Ok(Json(body).into_response())
}

pub(crate) async fn update(
    State(hub): State<Hub>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<VersionUpdate>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let v = hub.store.resolve_version(m.id, &version).await?;
    let v = hub.store.update_version(v.id, &body).await?;
    Ok(Json(v).into_response())
}

pub(crate) async fn archive(
    State(hub): State<Hub>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(hub.archive_version(&name, &version).await?).into_response())
}

pub(crate) async fn restore(
    State(hub): State<Hub>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    Ok(Json(hub.restore_version(&name, &version).await?).into_response())
}

pub(crate) async fn list_aliases(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    Ok(Json(serde_json::json!({ "data": hub.store.list_aliases(m.id).await? })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AliasBody {
    /// `3`, `v3`, `latest` or another alias.
    version: serde_json::Value,
}

pub(crate) async fn set_alias(
    State(hub): State<Hub>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<AliasBody>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let reference = match &body.version {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => {
            return Err(hub::error::HubError::invalid(
                "version",
                "must be a version number, `latest` or an alias",
            )
            .into());
        }
    };
    let v = hub.store.resolve_version(m.id, &reference).await?;
    let a = hub.store.set_alias(m.id, &alias, v.id).await?;
    Ok(Json(a).into_response())
}

pub(crate) async fn remove_alias(
    State(hub): State<Hub>,
    ApiPath((name, alias)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    hub.store.remove_alias(m.id, &alias).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TagsBody {
    tags: Vec<String>,
}

/// `GET …/versions/{v}/tags`: the version's tags.
pub(crate) async fn tags(
    State(hub): State<Hub>,
    ApiPath((name, version)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let v = hub.store.resolve_version(m.id, &version).await?;
    Ok(Json(serde_json::json!({ "tags": v.tags })).into_response())
}

/// `PUT …/versions/{v}/tags {tags}`: replaces the tags (allowed on any
/// version: tags are not content).
pub(crate) async fn set_tags(
    State(hub): State<Hub>,
    ApiPath((name, version)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<TagsBody>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let v = hub.store.resolve_version(m.id, &version).await?;
    let v = hub
        .store
        .update_version(
            v.id,
            &VersionUpdate {
                tags: Some(body.tags),
                ..VersionUpdate::default()
            },
        )
        .await?;
    Ok(Json(serde_json::json!({ "tags": v.tags })).into_response())
}
