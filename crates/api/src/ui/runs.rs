//! Runs: the list (with a comparison form), a run's charts (one SVG per
//! metric, refreshed by `app.js` while the run is running), and the
//! comparison of several runs on one chart.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::charts::{Series, line_chart, metric_title};
use super::{Layout, PageResult, Session, enc, fmt_time, html};
use crate::error::ApiResult;
use crate::extract::ApiPath;
use hub::error::{HubError, HubResult};
use hub::service::Hub;
use hub::store::{JobFilter, Run};

/// The metrics the training job writes, in the order the pages show them.
pub const CHART_KEYS: [&str; 5] = [
    "train_loss",
    "val_loss",
    "learning_rate",
    "tokens_per_second",
    "peak_memory_gb",
];

pub(crate) struct RunRow {
    id: i64,
    name: String,
    status: String,
    job: String,
    started: String,
    ended: String,
}

fn run_row(r: &Run) -> RunRow {
    RunRow {
        id: r.id,
        name: r.name.clone(),
        status: r.status.as_str().to_string(),
        job: r.job_id.map(|j| j.to_string()).unwrap_or_default(),
        started: fmt_time(r.started_at_ms),
        ended: r.ended_at_ms.map(fmt_time).unwrap_or_default(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "runs.html")]
struct RunsPage {
    layout: Layout,
    rows: Vec<RunRow>,
    keys: Vec<(&'static str, String)>,
}

fn key_choices() -> Vec<(&'static str, String)> {
    CHART_KEYS.iter().map(|k| (*k, metric_title(k))).collect()
}

pub(crate) async fn list(State(hub): State<Hub>, session: Session) -> PageResult<Response> {
    let jobs = hub
        .store
        .list_jobs(&JobFilter {
            state: None,
            limit: 200,
            offset: 0,
        })
        .await?;
    let mut rows = Vec::new();
    for j in &jobs {
        for r in hub.store.list_runs_of_job(j.id).await? {
            rows.push(run_row(&r));
        }
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.id));
    Ok(html(RunsPage {
        layout: Layout::new("Runs", "runs", &session),
        rows,
        keys: key_choices(),
    }))
}

#[derive(Template, WebTemplate)]
#[template(path = "run.html")]
struct RunPage {
    layout: Layout,
    run: RunRow,
    keys: Vec<(String, String)>,
    latest: Vec<(String, i64, String)>,
    params: String,
}

pub(crate) async fn show(
    State(hub): State<Hub>,
    session: Session,
    ApiPath(id): ApiPath<i64>,
) -> PageResult<Response> {
    let run = hub.store.get_run(id).await?;
    let have = hub.store.metric_keys(id).await?;
    // the training metrics always (they fill in while the run goes), then others
    let mut keys: Vec<String> = CHART_KEYS.iter().map(|k| k.to_string()).collect();
    keys.extend(
        have.iter()
            .filter(|k| !CHART_KEYS.contains(&k.as_str()))
            .cloned(),
    );
    let latest = hub
        .store
        .latest_metrics(id)
        .await?
        .into_iter()
        .map(|m| (metric_title(&m.key), m.step, format!("{:.6}", m.value)))
        .collect();
    Ok(html(RunPage {
        layout: Layout::new(format!("Run #{id}"), "runs", &session),
        keys: keys
            .into_iter()
            .map(|k| {
                let t = metric_title(&k);
                (k, t)
            })
            .collect(),
        latest,
        params: serde_json::to_string_pretty(&run.params).unwrap_or_default(),
        run: run_row(&run),
    }))
}

fn svg(body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn series(hub: &Hub, run: i64, key: &str, label: String) -> ApiResult<Series> {
    hub.store.get_run(run).await?;
    let points = hub
        .store
        .metric_history(run, key, None)
        .await?
        .into_iter()
        .map(|m| (m.step, m.value))
        .collect();
    Ok(Series { label, points })
}

/// `GET /ui/runs/{id}/charts/{key}.svg`.
pub(crate) async fn chart_svg(
    State(hub): State<Hub>,
    ApiPath((id, file)): ApiPath<(i64, String)>,
) -> ApiResult<Response> {
    let Some(key) = file.strip_suffix(".svg") else {
        return Err(HubError::invalid("file", "charts are `<metric key>.svg`").into());
    };
    let s = series(&hub, id, key, format!("run {id}")).await?;
    Ok(svg(line_chart(
        &format!("{} · run {id}", metric_title(key)),
        &[s],
        (640, 320),
    )?))
}

#[derive(Deserialize)]
pub(crate) struct CompareQuery {
    runs: Option<String>,
    key: Option<String>,
}

fn parse_runs(s: Option<&str>) -> HubResult<Vec<i64>> {
    let ids: Vec<i64> = s
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.trim_start_matches('#')
                .parse()
                .map_err(|_| HubError::invalid("runs", format!("{p:?} is not a run id")))
        })
        .collect::<HubResult<_>>()?;
    if ids.is_empty() || ids.len() > 12 {
        return Err(HubError::invalid(
            "runs",
            "give 1 to 12 run ids, comma-separated (runs=1,2)",
        ));
    }
    Ok(ids)
}

/// `GET /ui/runs/compare.svg?runs=1,2&key=train_loss`.
pub(crate) async fn compare_svg(
    State(hub): State<Hub>,
    Query(q): Query<CompareQuery>,
) -> ApiResult<Response> {
    let ids = parse_runs(q.runs.as_deref())?;
    let key = q.key.unwrap_or_else(|| "train_loss".into());
    let mut all = Vec::new();
    for id in ids {
        all.push(series(&hub, id, &key, format!("run {id}")).await?);
    }
    Ok(svg(line_chart(
        &format!("{} · comparison", metric_title(&key)),
        &all,
        (800, 400),
    )?))
}

#[derive(Template, WebTemplate)]
#[template(path = "compare.html")]
struct ComparePage {
    layout: Layout,
    runs: String,
    title: String,
    src: String,
    /// (key, title, `selected` or empty)
    choices: Vec<(&'static str, String, &'static str)>,
}

/// `GET /ui/runs/compare?runs=1,2&key=train_loss`: the comparison page.
pub(crate) async fn compare(
    State(_hub): State<Hub>,
    session: Session,
    Query(q): Query<CompareQuery>,
) -> PageResult<Response> {
    let ids = parse_runs(q.runs.as_deref())?;
    let key = q.key.unwrap_or_else(|| "train_loss".into());
    let runs = ids
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    Ok(html(ComparePage {
        layout: Layout::new("Compare runs", "runs", &session),
        src: format!("/ui/runs/compare.svg?runs={runs}&key={}", enc(&key)),
        title: metric_title(&key),
        choices: key_choices()
            .into_iter()
            .map(|(k, t)| (k, t, if k == key { "selected" } else { "" }))
            .collect(),
        runs,
    }))
}
