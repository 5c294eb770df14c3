//! `mlx-hub models …`: the registry, on the database directly.

use std::path::PathBuf;

use hub::registry::RegisterFolder;
use hub::store::ModelFilter;

use super::{HubArgs, open_hub, print_json, runtime};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List models.
    List {
        /// Only names containing this (case-insensitive).
        #[arg(long)]
        name_contains: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a model with its versions and aliases.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Register a model folder (mlx-lm layout) as a new version, creating the
    /// model when needed.
    Register {
        name: String,
        path: PathBuf,
        /// Leave the files in place and record only their hashes.
        #[arg(long)]
        link: bool,
        #[arg(long, default_value = "")]
        description: String,
        /// Point this alias at the new version.
        #[arg(long)]
        alias: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Point ALIAS at VERSION (a number, `latest` or another alias).
    Alias {
        name: String,
        alias: String,
        version: String,
        #[arg(long)]
        json: bool,
    },
    /// Pull ORG/NAME[@REVISION] from the Hugging Face Hub into its cache and register it.
    Pull(super::pull::PullArgs),
    /// List the models in the Hugging Face cache.
    HfCache(super::pull::HfCacheArgs),
    /// Archive a version (its files move to the archive tier).
    Archive {
        name: String,
        version: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let hub = open_hub(&args.hub).await?;
        match args.command {
            Command::Pull(a) => super::pull::run_pull(&hub, a).await?,
            Command::HfCache(a) => super::pull::run_hf_cache(a)?,
            Command::List {
                name_contains,
                json,
            } => {
                let models = hub
                    .store
                    .list_models(&ModelFilter {
                        name_contains,
                        limit: 1000,
                        ..ModelFilter::default()
                    })
                    .await?;
                if json {
                    return print_json(&models);
                }
                for m in models {
                    println!("{}\t{}", m.name, m.description);
                }
            }
            Command::Show { name, json } => {
                let m = hub.store.get_model_by_name(&name).await?;
                let versions = hub.store.list_versions(m.id, None).await?;
                if json {
                    return print_json(&serde_json::json!({ "model": m, "versions": versions }));
                }
                println!("{} {}", m.name, m.description);
                for v in versions {
                    println!(
                        "  v{}\t{}\t{}\t{} params\t{} bytes\t{}",
                        v.number,
                        v.status,
                        v.architecture.as_deref().unwrap_or("-"),
                        v.parameter_count.unwrap_or(0),
                        v.size_bytes,
                        v.aliases.join(",")
                    );
                }
            }
            Command::Register {
                name,
                path,
                link,
                description,
                alias,
                json,
            } => {
                // a local user may register any folder they can read
                let path = std::path::absolute(&path)?;
                let req = RegisterFolder {
                    path,
                    link,
                    description,
                    tags: Vec::new(),
                    alias,
                };
                let v = hub
                    .register_model_folder_creating(&name, &req, std::path::Path::new("/"))
                    .await?;
                if json {
                    return print_json(&v);
                }
                println!(
                    "registered {name} v{} ({}, {} params, {} bytes)",
                    v.number,
                    v.architecture.as_deref().unwrap_or("-"),
                    v.parameter_count.unwrap_or(0),
                    v.size_bytes
                );
            }
            Command::Alias {
                name,
                alias,
                version,
                json,
            } => {
                let m = hub.store.get_model_by_name(&name).await?;
                let v = hub.store.resolve_version(m.id, &version).await?;
                let a = hub.store.set_alias(m.id, &alias, v.id).await?;
                if json {
                    return print_json(&a);
                }
                println!("{name}@{alias} -> v{}", a.version_number);
            }
            Command::Archive {
                name,
                version,
                json,
            } => {
                let v = hub.archive_version(&name, &version).await?;
                if json {
                    return print_json(&v);
                }
                println!("{name} v{} archived", v.number);
            }
        }
        Ok(())
    })
}
