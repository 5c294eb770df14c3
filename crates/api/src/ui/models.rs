//! Models: the list (search by name) with a form to register a folder, and
//! a model's page: versions, aliases (set/remove), tags, lineage chains.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::{Layout, PageResult, Session, enc, fmt_bytes, fmt_time, html};
use crate::extract::ApiPath;
use hub::service::Hub;
use hub::store::{ModelFilter, ModelVersion, VersionStatus};

pub(crate) struct ModelRow {
    name: String,
    href: String,
    description: String,
    tags: String,
    versions: usize,
    latest: String,
    aliases: String,
    size: String,
    quantization: String,
    architecture: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "models.html")]
struct ModelsPage {
    layout: Layout,
    q: String,
    rows: Vec<ModelRow>,
    import_root: String,
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    q: Option<String>,
}

/// `4-bit g64`, `mixed`, or `none`.
pub(crate) fn quantization(v: &ModelVersion) -> String {
    match &v.quantization {
        Some(q) => match (q.get("bits"), q.get("group_size")) {
            (Some(b), Some(g)) => format!("{b}-bit g{g}"),
            (Some(b), None) => format!("{b}-bit"),
            _ => "quantized".into(),
        },
        None => v.dtype.clone().unwrap_or_else(|| "none".into()),
    }
}

pub(crate) async fn list(
    State(hub): State<Hub>,
    session: Session,
    Query(q): Query<ListQuery>,
) -> PageResult<Response> {
    let search = q.q.unwrap_or_default().trim().to_string();
    let models = hub
        .store
        .list_models(&ModelFilter {
            name_contains: (!search.is_empty()).then(|| search.clone()),
            tag: None,
            limit: 500,
            offset: 0,
        })
        .await?;
    let mut rows = Vec::new();
    for m in models {
        let versions = hub.store.list_versions(m.id, None).await?;
        let latest = versions
            .iter()
            .filter(|v| v.status == VersionStatus::Ready)
            .max_by_key(|v| v.number);
        let aliases = hub.store.list_aliases(m.id).await?;
        rows.push(ModelRow {
            href: format!("/ui/models/{}", enc(&m.name)),
            name: m.name,
            description: m.description,
            tags: m.tags.join(", "),
            versions: versions.len(),
            latest: latest.map(|v| format!("v{}", v.number)).unwrap_or_default(),
            aliases: aliases
                .iter()
                .map(|a| format!("{} → v{}", a.alias, a.version_number))
                .collect::<Vec<_>>()
                .join(", "),
            size: latest.map(|v| fmt_bytes(v.size_bytes)).unwrap_or_default(),
            quantization: latest.map(quantization).unwrap_or_default(),
            architecture: latest
                .and_then(|v| v.architecture.clone())
                .unwrap_or_default(),
        });
    }
    Ok(html(ModelsPage {
        layout: Layout::new("Models", "models", &session),
        q: search,
        rows,
        import_root: hub.config.import_root.display().to_string(),
    }))
}

/// One link of a lineage chain.
pub(crate) struct Link {
    label: String,
    href: String,
}

pub(crate) struct VersionRow {
    number: i64,
    status: String,
    aliases: String,
    tags: String,
    format: String,
    architecture: String,
    quantization: String,
    size: String,
    params: String,
    created: String,
    description: String,
    message: String,
    /// base → job → run → dataset (links)
    chain: Vec<Link>,
    /// seed, commit, MLX version, device, BLAS, source
    facts: Vec<(String, String)>,
    playground: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "model.html")]
struct ModelPage {
    layout: Layout,
    name: String,
    enc_name: String,
    description: String,
    tags: String,
    versions: Vec<VersionRow>,
    aliases: Vec<(String, i64)>,
}

pub(crate) async fn show(
    State(hub): State<Hub>,
    session: Session,
    ApiPath(name): ApiPath<String>,
) -> PageResult<Response> {
    let m = hub.store.get_model_by_name(&name).await?;
    let mut versions = hub.store.list_versions(m.id, None).await?;
    versions.sort_by_key(|v| std::cmp::Reverse(v.number));
    let aliases = hub.store.list_aliases(m.id).await?;
    let mut model_names: HashMap<i64, String> = HashMap::new();
    let mut rows = Vec::new();
    for v in &versions {
        let l = &v.lineage;
        let mut chain = Vec::new();
        if let Some(b) = l.base_version_id
            && let Ok(bv) = hub.store.get_version(b).await
        {
            let bn = match model_names.get(&bv.model_id) {
                Some(n) => n.clone(),
                None => {
                    let n = hub.store.get_model(bv.model_id).await?.name;
                    model_names.insert(bv.model_id, n.clone());
                    n
                }
            };
            chain.push(Link {
                label: format!("base {bn} v{}", bv.number),
                href: format!("/ui/models/{}", enc(&bn)),
            });
        }
        if let Some(j) = l.job_id {
            chain.push(Link {
                label: format!("job #{j}"),
                href: format!("/ui/jobs/{j}"),
            });
        }
        if let Some(r) = l.run_id {
            chain.push(Link {
                label: format!("run #{r}"),
                href: format!("/ui/runs/{r}"),
            });
        }
        if let Some(d) = l.dataset_id
            && let Ok(ds) = hub.store.get_dataset(d).await
        {
            chain.push(Link {
                label: format!("dataset {} v{}", ds.name, ds.version),
                href: format!("/ui/datasets/{}", enc(&ds.name)),
            });
        }
        let mut facts = Vec::new();
        let mut fact = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                facts.push((k.to_string(), v));
            }
        };
        fact("seed", l.seed.map(|s| s.to_string()));
        fact(
            "dataset hash",
            l.dataset_hash
                .as_ref()
                .map(|h| h.chars().take(12).collect()),
        );
        fact(
            "commit",
            l.hub_commit.as_ref().map(|h| h.chars().take(12).collect()),
        );
        fact("MLX", l.mlx_version.clone());
        fact("device", l.device.clone());
        fact("BLAS", l.blas.clone());
        fact("source", l.source.clone());
        rows.push(VersionRow {
            number: v.number,
            status: v.status.as_str().to_string(),
            aliases: v.aliases.join(", "),
            tags: v.tags.join(", "),
            format: v.format.clone(),
            architecture: v.architecture.clone().unwrap_or_default(),
            quantization: quantization(v),
            size: fmt_bytes(v.size_bytes),
            params: v
                .parameter_count
                .map(|p| {
                    if p >= 1_000_000 {
                        format!("{:.1} M", p as f64 / 1e6)
                    } else {
                        format!("{:.1} k", p as f64 / 1e3)
                    }
                })
                .unwrap_or_default(),
            created: fmt_time(v.created_at_ms),
            description: v.description.clone(),
            message: v.status_message.clone().unwrap_or_default(),
            chain,
            facts,
            playground: format!(
                "/ui/playground?model={}",
                enc(&format!("{}:{}", m.name, v.number))
            ),
        });
    }
    Ok(html(ModelPage {
        layout: Layout::new(format!("Model {}", m.name), "models", &session),
        enc_name: enc(&m.name),
        name: m.name,
        description: m.description,
        tags: m.tags.join(", "),
        versions: rows,
        aliases: aliases
            .into_iter()
            .map(|a| (a.alias, a.version_number))
            .collect(),
    }))
}
