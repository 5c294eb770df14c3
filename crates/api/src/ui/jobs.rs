//! Jobs: the list by state (kept live by `app.js` polling `/api/jobs`), a
//! form to start a training job with mlx-lm's defaults filled in, and a
//! job's page (live progress bar, log and charts from its run's metrics).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Layout, PageResult, Session, enc, fmt_time, html};
use crate::extract::ApiPath;
use hub::jobs::TrainConfig;
use hub::service::Hub;
use hub::store::{Job, JobFilter, JobState, ModelFilter, VersionStatus};

pub(crate) struct JobRow {
    id: i64,
    kind: String,
    state: String,
    what: String,
    progress: String,
    created: String,
    cancellable: bool,
}

/// `tiny v1 on count v1`.
fn describe(job: &Job) -> String {
    let c = &job.config;
    let base = match (c["base_model"].as_str(), c["base_version"].as_i64()) {
        (Some(m), Some(v)) => format!("{m} v{v}"),
        (Some(m), None) => m.to_string(),
        _ => String::new(),
    };
    match (c["dataset"].as_str(), c["dataset_version"].as_i64()) {
        (Some(d), Some(v)) => format!("{base} on {d} v{v}"),
        (Some(d), None) => format!("{base} on {d}"),
        _ => base,
    }
}

fn row(j: &Job) -> JobRow {
    JobRow {
        id: j.id,
        kind: j.kind.as_str().to_string(),
        state: j.state.as_str().to_string(),
        what: describe(j),
        progress: format!("{:.0}", j.progress * 100.0),
        created: fmt_time(j.created_at_ms),
        cancellable: !j.state.is_terminal(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "jobs.html")]
struct JobsPage {
    layout: Layout,
    state: String,
    states: Vec<(String, String, i64, &'static str)>,
    rows: Vec<JobRow>,
    models: Vec<String>,
    datasets: Vec<String>,
    d: TrainConfig,
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    state: Option<String>,
    model: Option<String>,
}

pub(crate) async fn list(
    State(hub): State<Hub>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> PageResult<Response> {
    let state = q
        .state
        .as_deref()
        .and_then(JobState::parse)
        .map(|s| s.as_str().to_string())
        .unwrap_or_default();
    let jobs = hub
        .store
        .list_jobs(&JobFilter {
            state: JobState::parse(&state),
            limit: 200,
            offset: 0,
        })
        .await?;
    let counts = hub.store.count_jobs_by_state().await?;
    let current = |s: &str| if s == state { "page" } else { "false" };
    let mut states = vec![(
        String::new(),
        "all".to_string(),
        counts.values().sum::<i64>(),
        current(""),
    )];
    for s in [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ] {
        states.push((
            s.as_str().to_string(),
            s.as_str().to_string(),
            counts.get(&s).copied().unwrap_or(0),
            current(s.as_str()),
        ));
    }
    let mut models = Vec::new();
    for m in hub
        .store
        .list_models(&ModelFilter {
            name_contains: None,
            tag: None,
            limit: 500,
            offset: 0,
        })
        .await?
    {
        let ready = hub
            .store
            .list_versions(m.id, Some(VersionStatus::Ready))
            .await?;
        if !ready.is_empty() {
            models.push(m.name);
        }
    }
    if let Some(pick) = q.model.filter(|p| models.contains(p)) {
        models.retain(|m| *m != pick);
        models.insert(0, pick);
    }
    let mut datasets: Vec<String> = hub
        .store
        .list_datasets(None)
        .await?
        .into_iter()
        .map(|d| d.name)
        .collect();
    datasets.dedup();
    Ok(html(JobsPage {
        layout: Layout::new("Jobs", "jobs", &session),
        state,
        states,
        rows: jobs.iter().map(row).collect(),
        models,
        datasets,
        d: TrainConfig::default(),
    }))
}

#[derive(Template, WebTemplate)]
#[template(path = "job.html")]
struct JobPage {
    layout: Layout,
    job: JobRow,
    run_id: i64,
    error: String,
    config: String,
    base_href: String,
    dataset_href: String,
    result: String,
}

pub(crate) async fn show(
    State(hub): State<Hub>,
    session: Session,
    ApiPath(id): ApiPath<i64>,
) -> PageResult<Response> {
    let job = hub.store.get_job(id).await?;
    let runs = hub.store.list_runs_of_job(id).await?;
    let result = match job.result_version_id {
        Some(v) => {
            let v = hub.store.get_version(v).await?;
            let m = hub.store.get_model(v.model_id).await?;
            format!("{}:{}", m.name, v.number)
        }
        None => String::new(),
    };
    let c = &job.config;
    Ok(html(JobPage {
        layout: Layout::new(format!("Job #{id}"), "jobs", &session),
        run_id: runs.last().map(|r| r.id).unwrap_or(0),
        error: job.error.clone().unwrap_or_default(),
        config: serde_json::to_string_pretty(&job.config).unwrap_or_default(),
        base_href: c["base_model"]
            .as_str()
            .map(|m| format!("/ui/models/{}", enc(m)))
            .unwrap_or_default(),
        dataset_href: c["dataset"]
            .as_str()
            .map(|d| format!("/ui/datasets/{}", enc(d)))
            .unwrap_or_default(),
        result,
        job: row(&job),
    }))
}
