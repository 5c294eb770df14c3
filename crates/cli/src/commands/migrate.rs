//! `mlx-hub migrate`: applies the database migrations and exits.

use super::{HubArgs, print_json, runtime};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = args.hub.config()?;
    let url = config.database_url_redacted();
    let versions = hub::Store::migration_versions();
    std::fs::create_dir_all(&config.data_dir)?;
    runtime()?.block_on(async {
        let store = hub::Store::connect(&config.database_url).await?;
        store.migrate().await?;
        store.close().await;
        anyhow::Ok(())
    })?;
    if args.json {
        print_json(&serde_json::json!({ "database": url, "applied": versions }))
    } else {
        println!("{url}: schema at version {}", versions.last().unwrap_or(&0));
        Ok(())
    }
}
