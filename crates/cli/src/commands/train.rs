//! `mlx-hub train`: LoRA / DoRA / full fine-tuning with `mlx_lm.lora`'s flags,
//! defaults, adapter folder and report lines.

use std::path::PathBuf;

use anyhow::{Context, bail};
use engine::nn::Adapt;
use engine::tokenizer::Tokenizer;
use engine::train::{
    AdapterSpec, DataOptions, FineTuneType, GradOptions, LoraParameters, NumpyRng, OptimizerKind,
    Schedule, TrainConfig, TrainEvent, evaluate, load_dataset, train_with,
};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// A YAML file with mlx_lm.lora's config keys (model, data, iters, lora_parameters,
    /// …); flags given on the command line override it.
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,
    /// Model folder (mlx-lm / Hugging Face layout).
    #[arg(long, required_unless_present = "config")]
    model: Option<PathBuf>,
    /// Dataset folder with train.jsonl (and valid.jsonl, test.jsonl).
    #[arg(long, required_unless_present = "config")]
    data: Option<PathBuf>,
    /// lora, dora or full.
    #[arg(long, default_value = "lora")]
    fine_tune_type: String,
    /// adam, adamw or sgd (mlx's defaults).
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Mask the prompt in the loss (completions / chat datasets).
    #[arg(long)]
    mask_prompt: bool,
    /// Number of last blocks to fine-tune (-1: all).
    #[arg(long, default_value_t = 16, allow_negative_numbers = true)]
    num_layers: i32,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 1000)]
    iters: usize,
    /// Validation batches per evaluation (-1: the whole set).
    #[arg(long, default_value_t = 25, allow_negative_numbers = true)]
    val_batches: i64,
    #[arg(long, default_value_t = 1e-5)]
    learning_rate: f32,
    /// Cosine decay of the learning rate to 0 over the run, after this many warmup steps.
    #[arg(long)]
    cosine_warmup: Option<u64>,
    #[arg(long, default_value_t = 10)]
    steps_per_report: usize,
    #[arg(long, default_value_t = 200)]
    steps_per_eval: usize,
    /// Resume from these adapter weights.
    #[arg(long)]
    resume_adapter_file: Option<PathBuf>,
    /// Where adapters.safetensors and adapter_config.json are written.
    #[arg(long, default_value = "adapters")]
    adapter_path: PathBuf,
    /// Save the adapters every N iterations.
    #[arg(long, default_value_t = 100)]
    save_every: usize,
    /// Evaluate on test.jsonl after training.
    #[arg(long)]
    test: bool,
    #[arg(long, default_value_t = 500, allow_negative_numbers = true)]
    test_batches: i64,
    #[arg(long, default_value_t = 2048)]
    max_seq_length: usize,
    /// LoRA rank.
    #[arg(long, default_value_t = 8)]
    lora_rank: usize,
    /// LoRA scale (mlx-lm's `scale`, not an alpha).
    #[arg(long, default_value_t = 20.0)]
    lora_scale: f32,
    #[arg(long, default_value_t = 0.0)]
    lora_dropout: f32,
    /// Modules to adapt, relative to a block (e.g. self_attn.q_proj); default: all linears.
    #[arg(long, value_delimiter = ',')]
    lora_keys: Option<Vec<String>>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Accumulate the gradients of this many batches per optimizer update.
    #[arg(long, default_value_t = 1)]
    grad_accumulation_steps: usize,
    /// Clip gradients to this global norm before every update.
    #[arg(long)]
    grad_clip: Option<f32>,
    /// Fresh weights from the model folder's config.json (mlx-lm's initialisation,
    /// seeded by --seed) instead of its trained weights.
    #[arg(long)]
    from_scratch: bool,
    /// Pause this many seconds after every validation (thermal headroom on laptops).
    #[arg(long, default_value_t = 0.0)]
    cooldown_seconds: f64,
    /// Run the training step eagerly instead of compiling it with MLX.
    #[arg(long)]
    no_compile: bool,
    /// Recompute each transformer block's activations in the backward pass instead
    /// of keeping them: less memory for about a third more compute (mlx-lm's option).
    #[arg(long)]
    grad_checkpoint: bool,
    /// One JSON event per line on stdout instead of text.
    #[arg(long)]
    json: bool,
}

fn print_event(e: &TrainEvent, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string(e).unwrap_or_default());
        return;
    }
    match e {
        TrainEvent::Start {
            trainable_parameters,
            total_parameters,
            train_examples,
            valid_examples,
            truncated_examples,
        } => {
            let t = *trainable_parameters as f64 / 1e6;
            let n = *total_parameters as f64 / 1e6;
            println!(
                "Trainable parameters: {:.3}% ({t:.3}M/{n:.3}M)",
                100.0 * t / n.max(1e-12)
            );
            println!("Training on {train_examples} rows, validating on {valid_examples}");
            if *truncated_examples > 0 {
                println!(
                    "[WARNING] {truncated_examples} training rows are longer than --max-seq-length and will be truncated"
                );
            }
        }
        TrainEvent::Val {
            iteration,
            val_loss,
            val_time,
        } => println!("Iter {iteration}: Val loss {val_loss:.3}, Val took {val_time:.3}s"),
        TrainEvent::Train {
            iteration,
            train_loss,
            learning_rate,
            iterations_per_second,
            tokens_per_second,
            trained_tokens,
            peak_memory_gb,
        } => println!(
            "Iter {iteration}: Train loss {train_loss:.3}, Learning Rate {learning_rate:.3e}, \
             It/sec {iterations_per_second:.3}, Tokens/sec {tokens_per_second:.3}, \
             Trained Tokens {trained_tokens}, Peak mem {peak_memory_gb:.3} GB"
        ),
        TrainEvent::Saved { iteration, path } => {
            println!(
                "Iter {iteration}: Saved adapter weights to {}.",
                path.display()
            )
        }
    }
}

/// The command line again, with the config file's flags first so that the user's
/// own flags (later on the line) override them.
#[derive(clap::Parser)]
#[command(name = "mlx-hub train", args_override_self = true)]
struct WithConfig {
    #[command(flatten)]
    args: Args,
}

/// mlx_lm.lora config keys with no effect here when left at these values.
const INERT_KEYS: &[&str] = &[
    "train",
    "config",
    "optimizer_config",
    "report_to",
    "project_name",
    "wandb",
    "trust_remote_code",
    "clear_cache_threshold",
    "hf_dataset",
];

/// Turns an mlx_lm.lora YAML config into the equivalent flags of `mlx-hub train`.
/// Unknown or unsupported keys are errors naming the key.
pub fn config_flags(yaml: &str, file: &std::path::Path) -> anyhow::Result<Vec<String>> {
    use serde_json::Value;
    let doc: Value = serde_yaml_ng::from_str(yaml)
        .with_context(|| format!("{}: invalid YAML", file.display()))?;
    let Value::Object(map) = doc else {
        bail!("{}: expected a mapping of mlx_lm.lora keys", file.display());
    };
    let scalar = |k: &str, v: &Value| -> anyhow::Result<String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            other => bail!(
                "{}: `{k}` must be a number or a string, not {other}",
                file.display()
            ),
        }
    };
    let mut flags = Vec::new();
    for (k, v) in &map {
        let flag = format!("--{}", k.replace('_', "-"));
        match k.as_str() {
            "model"
            | "data"
            | "fine_tune_type"
            | "optimizer"
            | "num_layers"
            | "batch_size"
            | "iters"
            | "val_batches"
            | "learning_rate"
            | "steps_per_report"
            | "steps_per_eval"
            | "resume_adapter_file"
            | "adapter_path"
            | "save_every"
            | "max_seq_length"
            | "seed"
            | "grad_accumulation_steps"
            | "grad_clip"
            | "cooldown_seconds"
            | "test_batches" => {
                if !v.is_null() {
                    flags.push(flag);
                    flags.push(scalar(k, v)?);
                }
            }
            "test" | "mask_prompt" | "grad_checkpoint" => match v {
                Value::Bool(true) => flags.push(flag),
                Value::Bool(false) | Value::Null => {}
                other => bail!(
                    "{}: `{k}` must be true or false, not {other}",
                    file.display()
                ),
            },
            "lora_parameters" => {
                let Value::Object(lp) = v else {
                    bail!("{}: `lora_parameters` must be a mapping", file.display());
                };
                for (lk, lv) in lp {
                    match lk.as_str() {
                        "rank" | "scale" | "dropout" => {
                            flags.push(format!("--lora-{lk}"));
                            flags.push(scalar(lk, lv)?);
                        }
                        "keys" => {
                            let Value::Array(keys) = lv else {
                                bail!("{}: `lora_parameters.keys` must be a list", file.display());
                            };
                            let keys: Vec<String> = keys
                                .iter()
                                .map(|x| scalar("keys", x))
                                .collect::<Result<_, _>>()?;
                            flags.push("--lora-keys".into());
                            flags.push(keys.join(","));
                        }
                        other => bail!(
                            "{}: `lora_parameters.{other}` is not supported (rank, scale, dropout, keys)",
                            file.display()
                        ),
                    }
                }
            }
            k if INERT_KEYS.contains(&k) => {}
            "lr_schedule" if v.is_null() => {}
            "lr_schedule" => bail!(
                "{}: `lr_schedule` is not supported in config files yet: use --cosine-warmup",
                file.display()
            ),
            other => bail!("{}: unknown config key `{other}`", file.display()),
        }
    }
    Ok(flags)
}

/// When `-c` is given: the flags of the config file, then the command line's own.
fn with_config(args: Args) -> anyhow::Result<Args> {
    let Some(file) = args.config.clone() else {
        return Ok(args);
    };
    let yaml = std::fs::read_to_string(&file)
        .with_context(|| format!("reading config file {}", file.display()))?;
    let mut argv = vec!["mlx-hub train".to_string()];
    argv.extend(config_flags(&yaml, &file)?);
    let line: Vec<String> = std::env::args().collect();
    let after = line
        .iter()
        .position(|a| a == "train")
        .map_or(line.len(), |i| i + 1);
    argv.extend(line[after..].iter().cloned());
    let parsed = <WithConfig as clap::Parser>::try_parse_from(&argv)?;
    Ok(parsed.args)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let args = with_config(args)?;
    let (Some(model_dir), Some(data_dir)) = (args.model.clone(), args.data.clone()) else {
        bail!("--model and --data are required (on the command line or in the config file)");
    };
    let fine_tune_type = FineTuneType::parse(&args.fine_tune_type)?;
    let optimizer = OptimizerKind::by_name(&args.optimizer)?;
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    hub::host::wire_gpu_memory_for(&model_dir);
    let model = if args.from_scratch {
        let config = engine::config::ModelConfig::from_dir(&model_dir)
            .with_context(|| format!("reading {}/config.json", model_dir.display()))?;
        engine::train::llama_from_config_random(config, args.seed)?
    } else {
        engine::models::load(&model_dir, &engine::models::LoadOptions::default())
            .with_context(|| format!("loading model {}", model_dir.display()))?
            .model
    };
    let tokenizer = Tokenizer::from_dir(&model_dir)
        .with_context(|| format!("loading tokenizer of {}", model_dir.display()))?;
    let data = load_dataset(
        &data_dir,
        &tokenizer,
        &DataOptions {
            mask_prompt: args.mask_prompt,
            ..DataOptions::default()
        },
    )?;
    if data.valid.is_none() && !args.json {
        println!(
            "Warning: Validation set not found or empty. Training will proceed without validation."
        );
    }
    if args.test && data.test.is_none() {
        bail!("Test set not found or empty. Must provide test set for evaluation.");
    }
    let resume = match &args.resume_adapter_file {
        Some(p) => Some(
            mlx::io::load_safetensors(p)
                .with_context(|| format!("reading {}", p.display()))?
                .tensors,
        ),
        None => None,
    };
    let schedule = args.cosine_warmup.map(|w| Schedule::Warmup {
        warmup: w,
        warmup_init: 0.0,
        after: Box::new(Schedule::Cosine {
            init: args.learning_rate,
            decay_steps: (args.iters as u64).saturating_sub(w).max(1),
            end: 0.0,
        }),
    });
    let mut extra = serde_json::Map::new();
    extra.insert("model".into(), json!(model_dir.display().to_string()));
    extra.insert("data".into(), json!(data_dir.display().to_string()));
    extra.insert("mask_prompt".into(), json!(args.mask_prompt));
    extra.insert("test".into(), json!(args.test));
    extra.insert("test_batches".into(), json!(args.test_batches));
    if let Some(p) = &args.resume_adapter_file {
        extra.insert("resume_adapter_file".into(), json!(p.display().to_string()));
    }
    let cfg = TrainConfig {
        adapter: AdapterSpec {
            fine_tune_type,
            num_layers: args.num_layers,
            lora: LoraParameters {
                rank: args.lora_rank,
                scale: args.lora_scale,
                dropout: args.lora_dropout,
                keys: args.lora_keys.clone(),
            },
        },
        optimizer,
        learning_rate: args.learning_rate,
        schedule,
        batch_size: args.batch_size,
        iters: args.iters,
        val_batches: args.val_batches,
        steps_per_report: args.steps_per_report,
        steps_per_eval: args.steps_per_eval,
        save_every: args.save_every,
        max_seq_length: args.max_seq_length,
        seed: args.seed,
        adapter_path: Some(args.adapter_path.clone()),
        resume,
        extra_config: extra,
        compile: !args.no_compile,
        // A fresh model needs its embeddings and output layer trained too.
        train_embeddings: args.from_scratch && fine_tune_type == FineTuneType::Full,
        cooldown_seconds: args.cooldown_seconds,
        grad_checkpoint: args.grad_checkpoint,
    };
    let as_json = args.json;
    let grad = GradOptions {
        grad_clip: args.grad_clip,
        grad_accumulation_steps: args.grad_accumulation_steps,
    };
    let outcome = train_with(&model, &data, &cfg, &grad, None, &mut |e| {
        print_event(e, as_json)
    })?;
    if let Some(test) = data.test.as_ref().filter(|_| args.test) {
        let adapt = Adapt {
            params: Some(&outcome.params),
            lora_scale: cfg.adapter.lora.scale,
            dropout: 0.0,
        };
        let mut rng = NumpyRng::new(args.seed as u32);
        let loss = evaluate(
            &model,
            &adapt,
            test,
            args.batch_size,
            args.test_batches,
            args.max_seq_length,
            &mut rng,
        )?;
        if as_json {
            println!(
                "{}",
                json!({"event": "test", "test_loss": loss, "test_ppl": (loss as f64).exp()})
            );
        } else {
            println!("Test loss {loss:.3}, Test ppl {:.3}.", (loss as f64).exp());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    const YAML: &str = "
model: /models/smol
data: /data/chat
fine_tune_type: lora
train: true
mask_prompt: true
num_layers: 8
batch_size: 2
iters: 300
learning_rate: 1e-5
lora_parameters:
  keys: [self_attn.q_proj, self_attn.v_proj]
  rank: 16
  scale: 10.0
  dropout: 0.0
report_to: null
grad_checkpoint: true
";

    #[test]
    fn mlx_lm_config_keys_become_flags() {
        let flags = config_flags(YAML, Path::new("c.yaml")).unwrap();
        let line = flags.join(" ");
        for want in [
            "--model /models/smol",
            "--data /data/chat",
            "--mask-prompt",
            "--num-layers 8",
            "--iters 300",
            "--learning-rate 0.00001",
            "--lora-rank 16",
            "--lora-scale 10.0",
            "--lora-keys self_attn.q_proj,self_attn.v_proj",
            "--grad-checkpoint",
        ] {
            assert!(line.contains(want), "{want} missing from {line}");
        }
    }

    #[test]
    fn command_line_flags_override_the_file() {
        let mut argv = vec!["mlx-hub train".to_string()];
        argv.extend(config_flags(YAML, Path::new("c.yaml")).unwrap());
        argv.extend(["--iters", "5", "--lora-rank", "4"].map(String::from));
        let a = WithConfig::try_parse_from(&argv).unwrap().args;
        assert_eq!(a.iters, 5);
        assert_eq!(a.lora_rank, 4);
        assert_eq!(a.batch_size, 2);
        assert!((a.lora_scale - 10.0).abs() < 1e-6);
        assert!(a.mask_prompt);
        assert!(a.grad_checkpoint);
    }

    #[test]
    fn unknown_and_unsupported_keys_are_named() {
        let e = config_flags("itres: 3\n", Path::new("c.yaml")).unwrap_err();
        assert!(e.to_string().contains("unknown config key `itres`"), "{e}");
        let e = config_flags("grad_checkpoint: 1\n", Path::new("c.yaml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("`grad_checkpoint` must be true or false"),
            "{e}"
        );
        let e = config_flags("iters: [1]\n", Path::new("c.yaml")).unwrap_err();
        assert!(e.to_string().contains("`iters`"), "{e}");
    }
}
