//! `/api/runs/{id}` and its metrics by step.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::ApiResult;
use crate::extract::{ApiPath, ApiQuery};
use hub::error::HubError;
use hub::service::Hub;

pub(crate) async fn show(State(hub): State<Hub>, ApiPath(id): ApiPath<i64>) -> ApiResult<Response> {
    let run = hub.store.get_run(id).await?;
    let keys = hub.store.metric_keys(id).await?;
    let latest = hub.store.latest_metrics(id).await?;
    let mut v = serde_json::to_value(run).expect("plain data");
    v["metric_keys"] = serde_json::to_value(keys).expect("plain data");
    v["latest_metrics"] = serde_json::to_value(latest).expect("plain data");
    Ok(Json(v).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsQuery {
    key: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
}

pub(crate) async fn metrics(
    State(hub): State<Hub>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Response> {
    let (from, to) = (q.from.unwrap_or(i64::MIN), q.to.unwrap_or(i64::MAX));
    if from > to {
        return Err(HubError::invalid("from", "must not be greater than `to`").into());
    }
    hub.store.get_run(id).await?;
    let keys = match q.key {
        Some(k) => vec![k],
        None => hub.store.metric_keys(id).await?,
    };
    let mut out = BTreeMap::new();
    for k in keys {
        let points = hub.store.metric_history(id, &k, Some(from..=to)).await?;
        out.insert(k, points);
    }
    Ok(Json(serde_json::json!({ "run_id": id, "metrics": out })).into_response())
}
