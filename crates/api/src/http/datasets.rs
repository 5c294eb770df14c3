//! `/api/datasets`: register a folder, list, show.

use std::io::{BufRead, Write};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use hub::dataset_import::RegisterDataset;
use hub::error::HubError;
use hub::service::Hub;

pub(crate) async fn register(
    State(hub): State<Hub>,
    ApiJson(body): ApiJson<RegisterDataset>,
) -> ApiResult<Response> {
    let root = hub.import_root()?;
    let h = hub.clone();
    let (d, created) =
        crate::extract::detached(async move { h.register_dataset_folder(&body, &root).await })
            .await?;
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
) -> ApiResult<Response> {
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
) -> ApiResult<Response> {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadQuery {
    #[serde(default)]
    description: String,
}

/// `POST /api/datasets/{name}/upload`: the body is the `train.jsonl` of a
/// new dataset version, streamed to a temporary file (refused past the size
/// cap), then validated (errors name the line) and registered as a folder.
pub(crate) async fn upload(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let content_length = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    use futures_util::StreamExt;
    hub::store::check_model_name(&name)?;
    let cap = hub.config.max_upload_bytes;
    // refused before a byte is read when the client says how much it sends
    if let Some(len) = content_length
        && len > cap
    {
        return Err(HubError::PayloadTooLarge(format!(
            "the upload ({len} bytes) exceeds the limit of {cap} bytes (MLX_HUB_MAX_UPLOAD_BYTES)"
        ))
        .into());
    }
    let dir = tempfile::Builder::new()
        .prefix("upload-")
        .tempdir_in(hub.artifacts.tmp_dir())?;
    let path = dir.path().join("train.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if crate::error::is_body_timeout(&e) {
                return crate::error::timeout_error();
            }
            ApiError::bad_request(
                hub::error::Code::BadRequest,
                format!("reading the upload: {e}"),
            )
        })?;
        written += chunk.len() as u64;
        if written > cap {
            return Err(HubError::PayloadTooLarge(format!(
                "the upload exceeds the limit of {cap} bytes (MLX_HUB_MAX_UPLOAD_BYTES)"
            ))
            .into());
        }
        file.write_all(&chunk)?;
    }
    file.into_inner()
        .map_err(|e| HubError::Internal(e.to_string()))?
        .sync_all()?;
    let root = dir.path().to_path_buf();
    let req = RegisterDataset {
        name,
        path: ".".into(),
        description: q.description,
    };
    let h = hub.clone();
    let (d, created) = crate::extract::detached(async move {
        let r = h.register_dataset_folder(&req, &root).await;
        drop(dir);
        r
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(d)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PreviewQuery {
    version: Option<i64>,
    #[serde(default = "default_split")]
    split: String,
    #[serde(default = "default_preview_rows")]
    limit: usize,
    #[serde(default)]
    offset: usize,
}

fn default_split() -> String {
    "train".into()
}

fn default_preview_rows() -> usize {
    10
}

/// `GET /api/datasets/{name}/preview?split=&limit=&offset=&version=`: rows
/// of a split, parsed, with their 1-based line numbers.
pub(crate) async fn preview(
    State(hub): State<Hub>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> ApiResult<Response> {
    if q.limit == 0 || q.limit > 1000 {
        return Err(HubError::invalid("limit", "must be between 1 and 1000").into());
    }
    let d = hub.store.get_dataset_by_name(&name, q.version).await?;
    if !d.splits.contains_key(&q.split) {
        return Err(HubError::invalid(
            "split",
            format!(
                "dataset {} v{} has no {} split (it has: {})",
                d.name,
                d.version,
                q.split,
                d.splits.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
        .into());
    }
    // Registered on another machine: fetched from the shared store first.
    let dir = hub
        .artifacts
        .ensure_dataset(&d.content_hash, std::path::Path::new(&d.location))
        .await?;
    let file = dir.join(format!("{}.jsonl", q.split));
    let (offset, limit) = (q.offset, q.limit);
    let rows = tokio::task::spawn_blocking(move || -> ApiResult<Vec<serde_json::Value>> {
        let reader = std::io::BufReader::new(std::fs::File::open(&file)?);
        let mut rows = Vec::new();
        for (i, line) in reader.lines().enumerate().skip(offset).take(limit) {
            let line = line?;
            let row: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                HubError::Internal(format!("{} line {}: {e}", file.display(), i + 1))
            })?;
            rows.push(serde_json::json!({ "line": i + 1, "row": row }));
        }
        Ok(rows)
    })
    .await
    .map_err(|e| HubError::Internal(e.to_string()))??;
    Ok(Json(serde_json::json!({
        "dataset": d.name,
        "version": d.version,
        "split": q.split,
        "rows_in_split": d.splits.get(&q.split),
        "data": rows,
    }))
    .into_response())
}
