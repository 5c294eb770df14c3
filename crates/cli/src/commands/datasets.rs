//! `mlx-hub datasets …`: dataset registry, on the database directly.

use std::path::PathBuf;

use hub::dataset_import::RegisterDataset;

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
    /// List datasets (every version).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Validate and register a folder with train.jsonl (and valid/test.jsonl).
    Register {
        name: String,
        path: PathBuf,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let hub = open_hub(&args.hub).await?;
        match args.command {
            Command::List { json } => {
                let data = hub.store.list_datasets(None).await?;
                if json {
                    return print_json(&data);
                }
                for d in data {
                    let splits: Vec<String> =
                        d.splits.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{}\tv{}\t{}\t{}\t{}",
                        d.name,
                        d.version,
                        d.format,
                        splits.join(","),
                        &d.content_hash[..12]
                    );
                }
            }
            Command::Register {
                name,
                path,
                description,
                json,
            } => {
                let req = RegisterDataset {
                    name,
                    path: std::path::absolute(&path)?,
                    description,
                };
                let (d, created) = hub
                    .register_dataset_folder(&req, std::path::Path::new("/"))
                    .await?;
                if json {
                    return print_json(&serde_json::json!({ "dataset": d, "created": created }));
                }
                let what = if created { "registered" } else { "unchanged:" };
                println!(
                    "{what} {} v{} ({}, {:?})",
                    d.name, d.version, d.format, d.splits
                );
            }
        }
        Ok(())
    })
}
