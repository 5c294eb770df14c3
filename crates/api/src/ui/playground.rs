//! The playground: pick a ready model version (an adapter version runs over
//! its base), set sampling, chat. Tokens stream from `/v1/chat/completions`
//! (`stream: true`, read by `app.js` with fetch + ReadableStream), with TTFT
//! and tokens/s shown.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Layout, PageResult, Session, html};
use hub::service::Hub;
use hub::store::{ModelFilter, VersionStatus};

#[derive(Template, WebTemplate)]
#[template(path = "playground.html")]
struct PlaygroundPage {
    layout: Layout,
    /// (value `name:N`, label, `selected` or empty)
    options: Vec<(String, String, &'static str)>,
}

#[derive(Deserialize)]
pub(crate) struct PlaygroundQuery {
    model: Option<String>,
}

pub(crate) async fn page(
    State(hub): State<Hub>,
    session: Session,
    Query(q): Query<PlaygroundQuery>,
) -> PageResult<Response> {
    let mut options = Vec::new();
    let models = hub
        .store
        .list_models(&ModelFilter {
            name_contains: None,
            tag: None,
            limit: 500,
            offset: 0,
        })
        .await?;
    for m in models {
        let mut versions = hub
            .store
            .list_versions(m.id, Some(VersionStatus::Ready))
            .await?;
        versions.sort_by_key(|v| std::cmp::Reverse(v.number));
        for v in versions {
            let value = format!("{}:{}", m.name, v.number);
            let mut label = value.clone();
            if !v.aliases.is_empty() {
                label += &format!(" ({})", v.aliases.join(", "));
            }
            if let Some(b) = v.lineage.base_version_id
                && let Ok(bv) = hub.store.get_version(b).await
            {
                let bm = hub.store.get_model(bv.model_id).await?;
                label += &format!(" — adapter over {}:{}", bm.name, bv.number);
            }
            options.push((value, label, ""));
        }
    }
    // `name:N` picks that version; a bare `name` its newest ready version
    if let Some(want) = q.model {
        let prefix = format!("{want}:");
        let pick = options
            .iter()
            .position(|o| o.0 == want)
            .or_else(|| options.iter().position(|o| o.0.starts_with(&prefix)));
        if let Some(i) = pick {
            options[i].2 = "selected";
        }
    }
    Ok(html(PlaygroundPage {
        layout: Layout::new("Playground", "playground", &session),
        options,
    }))
}
