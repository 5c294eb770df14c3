//! `/api/models`: list, create, show, update, delete.

use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::extract::{ApiJson, ApiPath, ApiQuery, created, default_limit};
use hub::service::Hub;
use hub::store::{ModelFilter, ModelUpdate, NewModel};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    name_contains: Option<String>,
    tag: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

pub(crate) async fn list(
    State(hub): State<Hub>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let models = hub
        .store
        .list_models(&ModelFilter {
            name_contains: q.name_contains,
            tag: q.tag,
            limit: q.limit,
            offset: q.offset,
        })
        .await?;
    Ok(crate::extract::page(models, q.limit, q.offset))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: Vec<String>,
}

pub(crate) async fn create(
    State(hub): State<Hub>,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<Response> {
    let m = hub
        .store
        .create_model(&NewModel {
            name: body.name,
            description: body.description,
            tags: body.tags,
        })
        .await?;
    Ok(created(m))
}

pub(crate) async fn show(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let versions = hub.store.list_versions(m.id, None).await?;
    let aliases = hub.store.list_aliases(m.id).await?;
    let mut v = serde_json::to_value(&m).expect("plain data");
    v["versions"] = serde_json::to_value(versions).expect("plain data");
    v["aliases"] = serde_json::to_value(aliases).expect("plain data");
    Ok(Json(v).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    description: Option<String>,
    tags: Option<Vec<String>>,
}

pub(crate) async fn update(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let m = hub
        .store
        .update_model(
            m.id,
            &ModelUpdate {
                description: body.description,
                tags: body.tags,
            },
        )
        .await?;
    Ok(Json(m).into_response())
}

pub(crate) async fn delete(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    hub.store.delete_model(m.id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
