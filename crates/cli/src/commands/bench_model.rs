//! `mlx-hub bench --model PATH -p 512 -g 128 -n 5`: prompt and generation throughput,
//! as `mlx_lm.benchmark` measures it: random prompt tokens (the same ones: MLX key
//! from seed 0, `randint(0, vocab, (1, p))`), EOS ignored, one warm-up run, then
//! `n` timed trials of a full streaming generation.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use engine::generate::{Finished, GenerateParams, GenerationEvent, Generator};
use engine::models::load_model;
use engine::sampling::KeySequence;
use engine::tokenizer::Tokenizer;
use serde::Serialize;

#[derive(clap::Args, Debug)]
#[group(skip)]
pub struct Args {
    /// Model folder (config.json, *.safetensors, tokenizer.json) to benchmark.
    #[arg(long, conflicts_with = "blas")]
    pub model: Option<PathBuf>,
    /// Prompt length in tokens.
    #[arg(long = "prompt-tokens", short = 'p', default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens to generate per trial.
    #[arg(long = "generation-tokens", short = 'g', default_value_t = 1024)]
    pub generation_tokens: usize,
    /// Timed trials (after one warm-up).
    #[arg(long = "num-trials", short = 'n', default_value_t = 5)]
    pub num_trials: usize,
    /// Prompt tokens per forward pass while prefilling.
    #[arg(long, default_value_t = engine::generate::MLX_LM_PREFILL_STEP)]
    pub prefill_step_size: usize,
}

#[derive(Serialize)]
struct Trial {
    prompt_tps: f64,
    generation_tps: f64,
    peak_memory: f64,
    total_time: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    prompt_tokens: usize,
    generation_tokens: usize,
    num_trials: usize,
    mlx_version: String,
    blas: String,
    trials: Vec<Trial>,
    averages: Trial,
}

fn random_prompt(vocab: usize, n: usize) -> anyhow::Result<Vec<u32>> {
    // mlx_lm.benchmark: mx.random.seed(0); mx.random.randint(0, vocab, (1, n)).
    let key = KeySequence::new(0)?.next()?;
    let ids = mlx::random::randint(0, vocab as i32, &[1, n as i32], Some(&key))?;
    Ok(ids.to_vec::<i32>()?.into_iter().map(|t| t as u32).collect())
}

fn one_run(
    model: &dyn engine::models::LanguageModel,
    tok: &Tokenizer,
    prompt: &[u32],
    params: &GenerateParams,
) -> anyhow::Result<Finished> {
    for event in Generator::new(model, tok, prompt, params)? {
        if let GenerationEvent::Finished(f) = event? {
            return Ok(f);
        }
    }
    bail!("generation ended without its figures")
}

pub fn run(args: Args, model_dir: &std::path::Path, json: bool) -> anyhow::Result<()> {
    if args.prompt_tokens == 0 || args.generation_tokens == 0 || args.num_trials == 0 {
        bail!("-p, -g and -n must be at least 1");
    }
    let tok = Tokenizer::from_dir(model_dir)
        .with_context(|| format!("loading the tokenizer of {}", model_dir.display()))?;
    hub::host::wire_gpu_memory_for(model_dir);
    let model = load_model(model_dir)
        .with_context(|| format!("loading the model {}", model_dir.display()))?;
    let prompt = random_prompt(model.config().vocab_size, args.prompt_tokens)?;
    let params = GenerateParams {
        max_tokens: args.generation_tokens,
        stop_token_ids: Some(Vec::new()),
        prefill_step: args.prefill_step_size,
        ..GenerateParams::default()
    };
    let say = |s: String| {
        if !json {
            println!("{s}");
        }
    };
    say("Running warmup..".into());
    one_run(model.as_ref(), &tok, &prompt, &params)?;
    say(format!(
        "Timing with prompt_tokens={}, generation_tokens={}, batch_size=1.",
        args.prompt_tokens, args.generation_tokens
    ));
    let mut trials = Vec::new();
    for i in 0..args.num_trials {
        let tic = Instant::now();
        let f = one_run(model.as_ref(), &tok, &prompt, &params)?;
        let t = Trial {
            prompt_tps: f.prompt_tps,
            generation_tps: f.generation_tps,
            peak_memory: f.peak_memory_gb(),
            total_time: tic.elapsed().as_secs_f64(),
        };
        say(format!(
            "Trial {}:  prompt_tps={:.3}, generation_tps={:.3}, peak_memory={:.3}, total_time={:.3}",
            i + 1,
            t.prompt_tps,
            t.generation_tps,
            t.peak_memory,
            t.total_time
        ));
        trials.push(t);
    }
    let n = trials.len() as f64;
    let avg = |f: fn(&Trial) -> f64| trials.iter().map(f).sum::<f64>() / n;
    let averages = Trial {
        prompt_tps: avg(|t| t.prompt_tps),
        generation_tps: avg(|t| t.generation_tps),
        peak_memory: avg(|t| t.peak_memory),
        total_time: avg(|t| t.total_time),
    };
    if json {
        let host = hub::host::HostInfo::detect();
        let report = Report {
            model: model_dir.display().to_string(),
            prompt_tokens: args.prompt_tokens,
            generation_tokens: args.generation_tokens,
            num_trials: args.num_trials,
            mlx_version: host.mlx_version,
            blas: host.blas,
            trials,
            averages,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "Averages: prompt_tps={:.3}, generation_tps={:.3}, peak_memory={:.3}",
            averages.prompt_tps, averages.generation_tps, averages.peak_memory
        );
    }
    Ok(())
}
