//! The system page: MLX device, BLAS, memory, queue depth, versions (the
//! facts `mlx-hub doctor` and `/metrics` report), and the serving pool's
//! loaded models (from `/api/ps`, polled by `app.js`, with unload buttons).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::response::Response;

use super::{Layout, PageResult, Session, fmt_bytes, html};
use hub::service::Hub;
use hub::store::{Backend, JobState};

#[derive(Template, WebTemplate)]
#[template(path = "system.html")]
struct SystemPage {
    layout: Layout,
    facts: Vec<(&'static str, String)>,
    memory: Vec<(&'static str, String)>,
    queue: Vec<(&'static str, i64)>,
}

pub(crate) async fn page(State(hub): State<Hub>, session: Session) -> PageResult<Response> {
    let (blas, mem, host) = tokio::task::spawn_blocking(|| {
        (
            mlx::system::blas(),
            mlx::system::memory_stats(),
            hub::host::HostInfo::detect(),
        )
    })
    .await
    .map_err(|e| hub::error::HubError::Internal(e.to_string()))?;
    let mut facts = vec![
        (
            "mlx-hub",
            format!(
                "{} (commit {})",
                env!("CARGO_PKG_VERSION"),
                hub::host::GIT_COMMIT
            ),
        ),
        (
            "MLX",
            format!(
                "{} (pinned {})",
                host.mlx_version,
                mlx::system::PINNED_VERSION
            ),
        ),
        (
            "Device",
            format!(
                "{}{} (GPU available: {})",
                host.device,
                host.device_name
                    .as_ref()
                    .map(|n| format!(" — {n}"))
                    .unwrap_or_default(),
                if host.gpu_available { "yes" } else { "no" }
            ),
        ),
    ];
    if let Some(g) = &host.gpu {
        facts.push((
            "GPU working set",
            g.max_recommended_working_set_bytes
                .map_or("unknown".into(), |b| fmt_bytes(b as i64)),
        ));
    }
    facts.extend([
        (
            "BLAS",
            format!(
                "{} — {} ({} threads)",
                blas.kind, blas.library, blas.threads
            ),
        ),
        (
            "Database",
            match hub.store.backend() {
                Backend::Sqlite => "SQLite".to_string(),
                Backend::Postgres => "PostgreSQL".to_string(),
            },
        ),
        ("Data directory", hub.config.data_dir.display().to_string()),
    ]);
    let mut memory = vec![
        (
            "Physical",
            host.memory_bytes
                .map_or("unknown".into(), |b| fmt_bytes(b as i64)),
        ),
        ("MLX active", fmt_bytes(mem.active as i64)),
        ("MLX peak", fmt_bytes(mem.peak as i64)),
        ("MLX cache", fmt_bytes(mem.cache as i64)),
        ("MLX limit", fmt_bytes(mem.limit as i64)),
    ];
    if let Some(m) = memory_stats::memory_stats() {
        memory.push(("Process resident", fmt_bytes(m.physical_mem as i64)));
    }
    let counts = hub.store.count_jobs_by_state().await?;
    let queue = [JobState::Queued, JobState::Running]
        .into_iter()
        .map(|s| (s.as_str(), counts.get(&s).copied().unwrap_or(0)))
        .collect();
    Ok(html(SystemPage {
        layout: Layout::new("System", "system", &session),
        facts,
        memory,
        queue,
    }))
}
