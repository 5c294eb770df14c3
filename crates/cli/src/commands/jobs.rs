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
    /// Queue a training job (or, with --eval, an evaluation job).
    Submit {
        /// The base model (with --eval: the model evaluated).
        #[arg(long)]
        model: String,
        /// Its version: `3`, `v3`, `latest` or an alias.
        #[arg(long, default_value = "latest")]
        version: String,
        #[arg(long)]
        dataset: String,
        /// Dataset version [default: the newest].
        #[arg(long)]
        dataset_version: Option<i64>,
        /// Evaluate the version (test loss, perplexity, exact match) instead of training.
        #[arg(long)]
        eval: bool,
        /// With --eval: the split to evaluate on.
        #[arg(long, default_value = "test")]
        split: String,
        /// Settings as JSON: the training config (mlx_lm.lora names), or with
        /// --eval the evaluation settings (batch_size, num_batches, max_seq_length,
        /// mask_prompt, max_examples, max_new_tokens, seed).
        #[arg(long, value_name = "JSON")]
        config: Option<String>,
        #[arg(long, default_value_t = 3)]
        max_attempts: i64,
        #[arg(long)]
        json: bool,
    },
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
            Command::Submit {
                model,
                version,
                dataset,
                dataset_version,
                eval,
                split,
                config,
                max_attempts,
                json,
            } => {
                let mut settings: serde_json::Value = match config {
                    Some(c) => serde_json::from_str(&c)
                        .map_err(|e| anyhow::anyhow!("--config is not JSON: {e}"))?,
                    None => serde_json::json!({}),
                };
                let mut body = serde_json::json!({
                    "kind": if eval { "evaluate" } else { "train" },
                    "base_model": model,
                    "base_version": version,
                    "dataset": dataset,
                    "dataset_version": dataset_version,
                    "max_attempts": max_attempts,
                });
                if eval {
                    if settings.get("split").is_none() {
                        settings["split"] = serde_json::json!(split);
                    }
                    body["eval"] = settings;
                } else {
                    body["config"] = settings;
                }
                let req: hub::training::SubmitJob = serde_json::from_value(body)
                    .map_err(|e| anyhow::anyhow!("invalid job: {e}"))?;
                let j = hub.submit_job(&req).await?;
                if json {
                    return print_json(&j);
                }
                println!("job {} queued ({})", j.id, j.kind.as_str());
            }
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
