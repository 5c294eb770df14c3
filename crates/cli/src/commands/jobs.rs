//! `mlx-hub jobs …`: the job queue, on the database directly.

use hub::store::{JobFilter, JobState};

use super::serve::{HubArgs, open_hub, print_json, runtime};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// List jobs, newest first.
    List {
        /// queued, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one job.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job (at once when queued, within a step when running).
    Cancel {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let hub = open_hub(&args.hub).await?;
        match args.command {
            Command::List { state, json } => {
                let state = match state {
                    Some(s) => Some(JobState::parse(&s).ok_or_else(|| {
                        anyhow::anyhow!(
                            "--state {s:?}: expected queued, running, succeeded, failed or cancelled"
                        )
                    })?),
                    None => None,
                };
                let jobs = hub
                    .store
                    .list_jobs(&JobFilter {
                        state,
                        limit: 1000,
                        offset: 0,
                    })
                    .await?;
                if json {
                    return print_json(&jobs);
                }
                for j in jobs {
                    println!(
                        "{}\t{}\t{}\tattempt {}/{}\t{:.0}%",
                        j.id,
                        j.kind.as_str(),
                        j.state,
                        j.attempts,
                        j.max_attempts,
                        j.progress * 100.0
                    );
                }
            }
            Command::Show { id, json } => {
                let j = hub.store.get_job(id).await?;
                if json {
                    return print_json(&j);
                }
                println!("{}", serde_json::to_string_pretty(&j)?);
            }
            Command::Cancel { id, json } => {
                let j = hub.store.request_cancel(id).await?;
                if json {
                    return print_json(&j);
                }
                println!("job {id}: {}", j.state);
            }
        }
        Ok(())
    })
}
