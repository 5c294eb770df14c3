//! `mlx-hub jobs …`: the job queue, on the database directly.

use hub::store::{JobFilter, JobState};

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
        /// Then wait for the job to end, as `jobs wait` does (a worker must be running:
        /// `serve` has one, or `mlx-hub worker`).
        #[arg(long)]
        wait: bool,
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
    /// Wait until a job ends (succeeded, failed or cancelled) and print it; the exit
    /// status is 0 only if it succeeded. For scripts: submit, then wait.
    Wait {
        id: i64,
        /// Give up (exit status 2) after this many seconds [default: no limit].
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
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
                wait,
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
                let req: hub::jobs::SubmitJob = serde_json::from_value(body)
                    .map_err(|e| anyhow::anyhow!("invalid job: {e}"))?;
                let j = hub.submit_job(&req).await?;
                if wait {
                    eprintln!("job {} queued ({})", j.id, j.kind.as_str());
                    return wait_for_job(&hub, j.id, None, json).await;
                }
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
            Command::Wait { id, timeout, json } => {
                return wait_for_job(&hub, id, timeout, json).await;
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

/// Polls job `id` until it ends, printing progress on stderr and the job at the end; exits
/// with status 1 unless it succeeded, 2 past `timeout` seconds.
async fn wait_for_job(
    hub: &hub::Hub,
    id: i64,
    timeout: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut shown = None;
    let j = loop {
        let j = hub.store.get_job(id).await?;
        if j.state.is_terminal() {
            break j;
        }
        let progress = (j.state, (j.progress * 100.0) as i64);
        if !json && shown != Some(progress) {
            eprintln!("job {id}: {} {}%", j.state, progress.1);
            shown = Some(progress);
        }
        if let Some(limit) = timeout
            && started.elapsed().as_secs() >= limit
        {
            eprintln!("job {id}: still {} after {limit}s", j.state);
            std::process::exit(2);
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    if json {
        print_json(&j)?;
    } else {
        println!(
            "job {id}: {}{}",
            j.state,
            j.error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        );
    }
    if j.state != JobState::Succeeded {
        std::process::exit(1);
    }
    Ok(())
}
