//! `mlx-hub generate`: stream text from a model folder, like `mlx_lm.generate`
//! (same flags where they exist, same closing figures on stdout).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use engine::generate::{GenerateParams, GenerationEvent, Generator};
use engine::models::load_model;
use engine::tokenizer::Tokenizer;
use serde::Serialize;
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model folder (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt (`-` reads it from stdin).
    #[arg(long, default_value = "hello")]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template (as a user message).
    #[arg(long)]
    pub chat: bool,
    /// System message (with --chat).
    #[arg(long = "system", alias = "system-prompt")]
    pub system: Option<String>,
    #[arg(long, short = 'm', default_value_t = 100)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// 0 = off.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long)]
    pub repetition_penalty: Option<f32>,
    #[arg(long, default_value_t = 20)]
    pub repetition_context_size: usize,
    /// Stop string (repeatable); never printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Prompt tokens per forward pass while prefilling.
    #[arg(long, default_value_t = engine::generate::MLX_LM_PREFILL_STEP)]
    pub prefill_step_size: usize,
    /// Print one JSON object (ids, text, figures) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Report {
    prompt_ids: Vec<u32>,
    generated_ids: Vec<u32>,
    text: String,
    finish_reason: &'static str,
    prompt_tokens: usize,
    prompt_tps: f64,
    generation_tokens: usize,
    generation_tps: f64,
    peak_memory_gb: f64,
}

fn prompt_ids(tok: &Tokenizer, args: &Args, prompt: &str) -> anyhow::Result<Vec<u32>> {
    let text = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(json!({"role": "system", "content": system}));
        }
        messages.push(json!({"role": "user", "content": prompt}));
        tok.apply_chat_template(&messages, true, None)
            .context("applying the chat template")?
    } else {
        if args.system.is_some() {
            bail!("--system needs --chat");
        }
        prompt.to_string()
    };
    // As mlx-lm's stream_generate: add special tokens unless the text starts with bos.
    let add_special = match tok.bos() {
        Some((bos, _)) => !text.starts_with(bos),
        None => true,
    };
    Ok(tok.encode(&text, add_special)?)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let prompt = if args.prompt == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the prompt from stdin")?
    } else {
        args.prompt.clone()
    };
    let tok = Tokenizer::from_dir(&args.model)
        .with_context(|| format!("loading the tokenizer of {}", args.model.display()))?;
    hub::host::wire_gpu_memory_for(&args.model);
    let model = load_model(&args.model)
        .with_context(|| format!("loading the model {}", args.model.display()))?;
    let ids = prompt_ids(&tok, &args, &prompt)?;
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        temp: args.temp,
        top_p: args.top_p,
        top_k: args.top_k,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        repetition_context_size: args.repetition_context_size,
        seed: args.seed,
        stop: args.stop.clone(),
        prefill_step: args.prefill_step_size,
        ..GenerateParams::default()
    };

    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(out, "==========")?;
    }
    let mut text = String::new();
    let mut generated = Vec::new();
    let mut finished = None;
    for event in Generator::new(model.as_ref(), &tok, &ids, &params)? {
        let delta = match event? {
            GenerationEvent::Token(t) => {
                generated.push(t.id);
                t.text_delta
            }
            GenerationEvent::Finished(f) => {
                let d = f.text_delta.clone();
                finished = Some(f);
                d
            }
        };
        if !args.json && !delta.is_empty() {
            out.write_all(delta.as_bytes())?;
            out.flush()?;
        }
        text.push_str(&delta);
    }
    let f = finished.context("generation ended without its figures")?;
    if args.json {
        let report = Report {
            prompt_ids: ids,
            generated_ids: generated,
            text,
            finish_reason: f.reason.as_str(),
            prompt_tokens: f.prompt_tokens,
            prompt_tps: f.prompt_tps,
            generation_tokens: f.generation_tokens,
            generation_tps: f.generation_tps,
            peak_memory_gb: f.peak_memory_gb(),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    writeln!(out)?;
    writeln!(out, "==========")?;
    if text.is_empty() {
        writeln!(out, "No text generated for this prompt")?;
    }
    writeln!(
        out,
        "Prompt: {} tokens, {:.3} tokens-per-sec",
        f.prompt_tokens, f.prompt_tps
    )?;
    writeln!(
        out,
        "Generation: {} tokens, {:.3} tokens-per-sec",
        f.generation_tokens, f.generation_tps
    )?;
    writeln!(out, "Peak memory: {:.3} GB", f.peak_memory_gb())?;
    Ok(())
}
