//! `mlx-hub train`: LoRA / DoRA / full fine-tuning with `mlx_lm.lora`'s flags,
//! defaults, adapter folder and report lines.

use std::path::PathBuf;

use anyhow::{Context, bail};
use engine::models::Llama;
use engine::nn::Adapt;
use engine::tokenizer::Tokenizer;
use engine::train::{
    AdapterSpec, DataOptions, FineTuneType, GradOptions, LoraParameters, NumpyRng, OptimizerKind,
    Schedule, TrainConfig, TrainEvent, evaluate, load_dataset, train_with,
};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Model folder (mlx-lm / Hugging Face layout).
    #[arg(long)]
    model: PathBuf,
    /// Dataset folder with train.jsonl (and valid.jsonl, test.jsonl).
    #[arg(long)]
    data: PathBuf,
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

pub fn run(args: Args) -> anyhow::Result<()> {
    let fine_tune_type = FineTuneType::parse(&args.fine_tune_type)?;
    let optimizer = OptimizerKind::by_name(&args.optimizer)?;
    if args.iters == 0 {
        bail!("--iters must be at least 1");
    }
    let model = if args.from_scratch {
        let config = engine::config::ModelConfig::from_dir(&args.model)
            .with_context(|| format!("reading {}/config.json", args.model.display()))?;
        engine::train::llama_from_config_random(config, args.seed)?
    } else {
        Llama::load(&args.model)
            .with_context(|| format!("loading model {}", args.model.display()))?
    };
    let tokenizer = Tokenizer::from_dir(&args.model)
        .with_context(|| format!("loading tokenizer of {}", args.model.display()))?;
    let data = load_dataset(
        &args.data,
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
    extra.insert("model".into(), json!(args.model.display().to_string()));
    extra.insert("data".into(), json!(args.data.display().to_string()));
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
