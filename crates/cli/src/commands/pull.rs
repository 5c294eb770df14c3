//! `mlx-hub models pull ORG/NAME[@REVISION]` and `mlx-hub models hf-cache`:
//! the Hugging Face Hub side of the registry (see `hub::hf`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hub::Hub;
use hub::hf::download::Progress;
use hub::hf::{HfSettings, PullEvent, PullModelRequest, PullReport, scan_cache};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::print_json;

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// The repository: ORG/NAME, optionally @REVISION (branch, tag or commit).
    pub repo: String,
    /// Local model name [default: the repository id].
    #[arg(long)]
    pub name: Option<String>,
    /// The .gguf file to import, for a repository of GGUF files.
    #[arg(long)]
    pub file: Option<String>,
    /// Point this alias at the version.
    #[arg(long)]
    pub alias: Option<String>,
    #[arg(long)]
    pub description: Option<String>,
    /// Print the report as JSON (no progress bars).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct HfCacheArgs {
    #[arg(long)]
    pub json: bool,
}

/// Byte counts for people.
pub fn human_bytes(n: u64) -> String {
    let b = n as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1} kB", b / 1e3)
    } else {
        format!("{n} B")
    }
}

/// Progress bars (bytes, rate, ETA) on stderr: one for the whole pull and one
/// per file being downloaded.
pub fn progress_bars() -> Progress {
    let multi = MultiProgress::new();
    let total_style = ProgressStyle::with_template(
        "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let file_style = ProgressStyle::with_template(
        "{prefix:>8} {wide_msg} {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .expect("valid template");
    let total: Arc<Mutex<Option<ProgressBar>>> = Arc::default();
    let files: Arc<Mutex<HashMap<String, ProgressBar>>> = Arc::default();
    Arc::new(move |e: PullEvent| match e {
        PullEvent::Resolved {
            commit,
            files: n,
            total_bytes,
        } => {
            eprintln!("commit {commit}: {n} files, {}", human_bytes(total_bytes));
            let bar = multi.add(ProgressBar::new(total_bytes));
            bar.set_style(total_style.clone());
            bar.set_prefix("total");
            *total.lock().expect("progress lock") = Some(bar);
        }
        PullEvent::FileStarted {
            path,
            size,
            resumed_from,
        } => {
            let bar = multi.add(ProgressBar::new(size.unwrap_or(0)));
            bar.set_style(file_style.clone());
            bar.set_prefix(if resumed_from > 0 { "resume" } else { "get" });
            bar.set_message(path.clone());
            bar.set_position(resumed_from);
            if let Some(t) = total.lock().expect("progress lock").as_ref() {
                t.inc(resumed_from);
            }
            files.lock().expect("progress lock").insert(path, bar);
        }
        PullEvent::FileProgress { path, bytes } => {
            if let Some(b) = files.lock().expect("progress lock").get(&path) {
                b.inc(bytes);
            }
            if let Some(t) = total.lock().expect("progress lock").as_ref() {
                t.inc(bytes);
            }
        }
        PullEvent::FileDone { path, reused } => {
            if let Some(b) = files.lock().expect("progress lock").remove(&path) {
                b.finish_and_clear();
            }
            if reused {
                let t = total.lock().expect("progress lock");
                if let Some(t) = t.as_ref() {
                    t.println(format!("  cached {path}"));
                }
            }
        }
    })
}

/// Pulls and registers; prints what happened.
pub async fn run_pull(hub: &Hub, args: PullArgs) -> anyhow::Result<()> {
    let req = PullModelRequest {
        repo: args.repo,
        revision: None,
        name: args.name,
        file: args.file,
        alias: args.alias,
        description: args.description,
    };
    let settings = hub.config.hf.clone();
    let started = Instant::now();
    let progress = (!args.json).then(progress_bars);
    if !args.json {
        eprintln!(
            "pulling {} from {}{} into {}",
            req.repo,
            settings.endpoint,
            if settings.offline { " (offline)" } else { "" },
            settings.cache_dir.display()
        );
    }
    let report = hub.pull_model(&req, settings, progress).await?;
    if args.json {
        return print_json(&report);
    }
    print_report(&report, started.elapsed().as_secs_f64());
    Ok(())
}

pub fn print_report(r: &PullReport, seconds: f64) {
    let reused = r.snapshot.files.iter().filter(|f| f.reused).count();
    println!(
        "{} v{} {} ({}, {} params) from {}@{} in {seconds:.1}s: {} downloaded, {reused}/{} files from the cache",
        r.model,
        r.version.number,
        if r.reused_version {
            "already registered"
        } else {
            "registered"
        },
        r.version.architecture.as_deref().unwrap_or("-"),
        r.version.parameter_count.unwrap_or(0),
        r.snapshot.repo,
        &r.snapshot.commit[..12.min(r.snapshot.commit.len())],
        human_bytes(r.snapshot.downloaded_bytes),
        r.snapshot.files.len(),
    );
}

/// Lists the Hugging Face cache.
pub fn run_hf_cache(args: HfCacheArgs) -> anyhow::Result<()> {
    // no hub needed: the CLI (the edge) reads the huggingface_hub variables itself
    let settings = HfSettings::from_lookup(|k| std::env::var(k).ok());
    let repos = scan_cache(&settings.cache_dir)?;
    if args.json {
        return print_json(&serde_json::json!({
            "cache_dir": settings.cache_dir,
            "repos": repos,
        }));
    }
    println!("{}", settings.cache_dir.display());
    for r in repos {
        let refs: Vec<String> = r
            .refs
            .iter()
            .map(|(name, c)| format!("{name}={}", &c[..12.min(c.len())]))
            .collect();
        println!(
            "{}\t{}\t{} blobs\t{} snapshot(s)\t{}{}",
            r.repo,
            human_bytes(r.size_bytes),
            r.blob_count,
            r.snapshots.len(),
            refs.join(","),
            if r.incomplete_bytes > 0 {
                format!("\t{} partial", human_bytes(r.incomplete_bytes))
            } else {
                String::new()
            }
        );
    }
    Ok(())
}
