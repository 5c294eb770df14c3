//! `/api/jobs`: submit, list, show, cancel.

use crate::error::ApiResult;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::extract::{ApiJson, ApiPath, ApiQuery, created, default_limit};
use hub::jobs::SubmitJob;
use hub::service::Hub;
use hub::store::{JobFilter, JobState};

pub(crate) async fn submit(
    State(hub): State<Hub>,
    ApiJson(body): ApiJson<SubmitJob>,
) -> ApiResult<Response> {
    Ok(created(hub.submit_job(&body).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    state: Option<JobState>,
    #[serde(default = "default_limit")]
    limit: i64,
    #[serde(default)]
    offset: i64,
}

pub(crate) async fn list(
    State(hub): State<Hub>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Response> {
    let jobs = hub
        .store
        .list_jobs(&JobFilter {
            state: q.state,
            limit: q.limit,
            offset: q.offset,
        })
        .await?;
    Ok(crate::extract::page(jobs, q.limit, q.offset))
}

pub(crate) async fn show(State(hub): State<Hub>, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let job = hub.store.get_job(id).await?;
    let runs = hub.store.list_runs_of_job(id).await?;
    let mut v = serde_json::to_value(job).expect("plain data");
    v["runs"] = serde_json::to_value(runs).expect("plain data");
    Ok(Json(v).into_response())
}

pub(crate) async fn cancel(
    State(hub): State<Hub>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    Ok(Json(hub.store.request_cancel(id).await?).into_response())
}

/// `GET /api/workers`: the workers that registered, most recently seen first,
/// with their capabilities.
pub(crate) async fn workers(State(hub): State<Hub>) -> ApiResult<Response> {
    let workers = hub.store.list_workers().await?;
    Ok(Json(serde_json::json!({ "data": workers })).into_response())
}
