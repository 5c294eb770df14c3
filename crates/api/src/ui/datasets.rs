//! Datasets: the list with forms to register a folder or upload a
//! `train.jsonl`, and a dataset's page (format, splits, hash, versions, a
//! preview of rows read from the API).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Layout, PageResult, Session, enc, fmt_bytes, fmt_time, html};
use crate::extract::ApiPath;
use hub::service::Hub;

pub(crate) struct DatasetRow {
    name: String,
    href: String,
    version: i64,
    format: String,
    splits: String,
    size: String,
    hash: String,
    created: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "datasets.html")]
struct DatasetsPage {
    layout: Layout,
    rows: Vec<DatasetRow>,
    import_root: String,
}

fn splits(s: &std::collections::BTreeMap<String, i64>) -> String {
    s.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn list(State(hub): State<Hub>, session: Session) -> PageResult<Response> {
    let all = hub.store.list_datasets(None).await?;
    // newest version of each name first
    let mut rows: Vec<DatasetRow> = Vec::new();
    for d in all.into_iter().rev() {
        if rows.iter().any(|r| r.name == d.name) {
            continue;
        }
        rows.push(DatasetRow {
            href: format!("/ui/datasets/{}", enc(&d.name)),
            version: d.version,
            format: d.format.clone(),
            splits: splits(&d.splits),
            size: fmt_bytes(d.size_bytes),
            hash: d.content_hash.chars().take(12).collect(),
            created: fmt_time(d.created_at_ms),
            name: d.name,
        });
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(html(DatasetsPage {
        layout: Layout::new("Datasets", "datasets", &session),
        rows,
        import_root: hub.config.import_root.display().to_string(),
    }))
}

#[derive(Template, WebTemplate)]
#[template(path = "dataset.html")]
struct DatasetPage {
    layout: Layout,
    name: String,
    enc_name: String,
    version: i64,
    versions: Vec<i64>,
    format: String,
    splits: Vec<(String, i64)>,
    hash: String,
    size: String,
    location: String,
    description: String,
    created: String,
}

#[derive(Deserialize)]
pub(crate) struct ShowQuery {
    version: Option<i64>,
}

pub(crate) async fn show(
    State(hub): State<Hub>,
    session: Session,
    ApiPath(name): ApiPath<String>,
    Query(q): Query<ShowQuery>,
) -> PageResult<Response> {
    let d = hub.store.get_dataset_by_name(&name, q.version).await?;
    let versions = hub
        .store
        .list_datasets(Some(&name))
        .await?
        .into_iter()
        .map(|d| d.version)
        .collect();
    Ok(html(DatasetPage {
        layout: Layout::new(format!("Dataset {}", d.name), "datasets", &session),
        enc_name: enc(&d.name),
        version: d.version,
        versions,
        format: d.format,
        splits: d.splits.into_iter().collect(),
        hash: d.content_hash,
        size: fmt_bytes(d.size_bytes),
        location: d.location,
        description: d.description,
        created: fmt_time(d.created_at_ms),
        name: d.name,
    }))
}
