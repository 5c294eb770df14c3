//! `/api/datasets`: register a folder, list, show.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiJson, ApiPath, ApiQuery};
use crate::dataset_import::RegisterDataset;
use crate::error::HubResult;
use crate::service::Hub;

pub(crate) async fn register(
    State(hub): State<Hub>,
    ApiJson(body): ApiJson<RegisterDataset>,
) -> HubResult<Response> {
    let root = hub.import_root()?;
    let h = hub.clone();
    let (d, created) =
        super::detached(async move { h.register_dataset_folder(&body, &root).await }).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(d)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    name: Option<String>,
}

pub(crate) async fn list(
    State(hub): State<Hub>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> HubResult<Response> {
    let data = hub.store.list_datasets(q.name.as_deref()).await?;
    Ok(Json(serde_json::json!({ "data": data })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShowQuery {
    version: Option<i64>,
}

pub(crate) async fn show(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> HubResult<Response> {
    let d = hub.store.get_dataset_by_name(&name, q.version).await?;
    let versions: Vec<i64> = hub
        .store
        .list_datasets(Some(&name))
        .await?
        .into_iter()
        .map(|d| d.version)
        .collect();
    let mut v = serde_json::to_value(d).expect("plain data");
    v["versions"] = serde_json::to_value(versions).expect("plain data");
    Ok(Json(v).into_response())
}
