//! The training loop of mlx-lm's `tuner/trainer.py`: `default_loss` (cross-entropy
//! over the non-masked target tokens, averaged over tokens), validation at iteration 1,
//! every `steps_per_eval` and at the end, reports every `steps_per_report`, checkpoints
//! every `save_every`. Batch order comes from numpy's MT19937 seeded with `seed` (as
//! `np.random.seed(args.seed)` in `mlx_lm.lora`), shared by training and validation
//! draws in the same order mlx-lm makes them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mlx::{Array, Dtype, Params};
use serde::Serialize;
use serde_json::{Map, Value};

use super::adapters::{ADAPTER_FILE, AdapterConfig, AdapterSpec, FineTuneType, save_params};
use super::data::{BatchPlan, Dataset, NumpyRng, Split};
use super::optim::{Optimizer, OptimizerKind, Schedule};
use super::{Result, TrainError};
use crate::models::Llama;
use crate::nn::Adapt;

/// mlx-lm's `default_loss`: `(loss, ntoks)` for a batch `[B, T]` with `lengths` rows
/// `(offset, length)`. Targets at positions `offset ≤ i+1 ≤ length` count.
pub fn default_loss(
    model: &Llama,
    adapt: &Adapt<'_>,
    batch: &Array,
    lengths: &Array,
) -> Result<(Array, Array)> {
    training_loss(model, adapt, batch, lengths, false)
}

/// [`default_loss`], the model's blocks checkpointed when `grad_checkpoint`
/// (same values; under a gradient transform, less memory and more compute).
pub fn training_loss(
    model: &Llama,
    adapt: &Adapt<'_>,
    batch: &Array,
    lengths: &Array,
    grad_checkpoint: bool,
) -> Result<(Array, Array)> {
    let t = batch.dim(1);
    let inputs = batch.slice_axis(1, 0, t - 1)?;
    let targets = batch.slice_axis(1, 1, t)?;
    let logits = model.forward_adapted_with(&inputs, adapt, grad_checkpoint)?;
    let steps = mlx::arange(1.0, t as f64, 1.0, Dtype::Int32)?;
    let lo = lengths.slice_axis(1, 0, 1)?;
    let hi = lengths.slice_axis(1, 1, 2)?;
    let mask = steps
        .greater_equal(&lo)?
        .logical_and(steps.less_equal(&hi)?)?;
    let ce = cross_entropy(&logits, &targets)?.multiply(&mask)?;
    let ntoks = mask.sum(mlx::Axes::All, false)?;
    let loss = ce
        .as_type(Dtype::Float32)?
        .sum(mlx::Axes::All, false)?
        .divide(&ntoks)?;
    Ok((loss, ntoks))
}

/// `mlx.nn.losses.cross_entropy(logits, targets)` with class-index targets, no
/// reduction (the non-fused path mlx takes on the CPU).
pub fn cross_entropy(logits: &Array, targets: &Array) -> Result<Array> {
    let logits = logits.sub(logits.max(-1, true)?.stop_gradient()?)?;
    let score = logits
        .take_along_axis(&targets.expand_dims(&[-1])?, -1)?
        .squeeze(Some(&[-1]))?;
    Ok(logits.logsumexp(-1, false)?.sub(&score)?)
}

/// What to train and how (mlx-lm's `mlx_lm.lora` arguments and defaults).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub adapter: AdapterSpec,
    pub optimizer: OptimizerKind,
    pub learning_rate: f32,
    /// A schedule replacing the constant `learning_rate`.
    pub schedule: Option<Schedule>,
    pub batch_size: usize,
    pub iters: usize,
    /// Validation batches per evaluation (-1: the whole validation set).
    pub val_batches: i64,
    pub steps_per_report: usize,
    pub steps_per_eval: usize,
    pub save_every: usize,
    pub max_seq_length: usize,
    pub seed: u64,
    /// Where `adapters.safetensors` and `adapter_config.json` go (`None`: not saved).
    pub adapter_path: Option<PathBuf>,
    /// Initial trainable parameters (resume), replacing the fresh ones by name.
    pub resume: Option<Params>,
    /// Extra fields for `adapter_config.json` (model, data, …).
    pub extra_config: Map<String, Value>,
    /// Compile the training step with MLX (as mlx-lm does).
    pub compile: bool,
    /// A full fine-tune also trains the token embedding, the final norm and the
    /// output layer (not an mlx-lm option: for models trained from scratch, whose
    /// random embeddings would otherwise stay fixed).
    pub train_embeddings: bool,
    /// Seconds to pause after every validation (thermal headroom on laptops); the
    /// pause is not counted in the reported speed and is cut short by cancellation.
    pub cooldown_seconds: f64,
    /// Recompute each block's activations in the backward pass instead of keeping
    /// them (mlx-lm's `--grad-checkpoint`): less memory, about a third more compute.
    pub grad_checkpoint: bool,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            adapter: AdapterSpec::default(),
            optimizer: OptimizerKind::adam(),
            learning_rate: 1e-5,
            schedule: None,
            batch_size: 4,
            iters: 1000,
            val_batches: 25,
            steps_per_report: 10,
            steps_per_eval: 200,
            save_every: 100,
            max_seq_length: 2048,
            seed: 0,
            adapter_path: None,
            resume: None,
            extra_config: Map::new(),
            compile: true,
            train_embeddings: false,
            cooldown_seconds: 0.0,
            grad_checkpoint: false,
        }
    }
}

impl TrainConfig {
    /// `adapter_config.json` as `mlx_lm.lora` writes it (`vars(args)`, keys sorted).
    pub fn adapter_config(&self) -> AdapterConfig {
        let mut extra = Map::new();
        let mut put = |k: &str, v: Value| {
            extra.insert(k.to_string(), v);
        };
        put("batch_size", self.batch_size.into());
        put("iters", self.iters.into());
        put("val_batches", self.val_batches.into());
        put("learning_rate", (self.learning_rate as f64).into());
        put("steps_per_report", self.steps_per_report.into());
        put("steps_per_eval", self.steps_per_eval.into());
        put("save_every", self.save_every.into());
        put("max_seq_length", self.max_seq_length.into());
        put("seed", self.seed.into());
        put("optimizer", self.optimizer.name().into());
        put(
            "optimizer_config",
            serde_json::json!({"adam": {}, "adamw": {}, "muon": {}, "sgd": {}, "adafactor": {}}),
        );
        put("train", true.into());
        put("test", false.into());
        put("test_batches", 500.into());
        put("grad_checkpoint", self.grad_checkpoint.into());
        put("grad_accumulation_steps", 1.into());
        put("clear_cache_threshold", 0.into());
        put("lr_schedule", Value::Null);
        put("resume_adapter_file", Value::Null);
        put("config", Value::Null);
        put("mask_prompt", false.into());
        put("report_to", Value::Null);
        put("project_name", Value::Null);
        put("trust_remote_code", false.into());
        if self.train_embeddings {
            put("train_embeddings", true.into());
        }
        if let Some(p) = &self.adapter_path {
            put("adapter_path", p.display().to_string().into());
        }
        for (k, v) in &self.extra_config {
            extra.insert(k.clone(), v.clone());
        }
        AdapterConfig {
            spec: self.adapter.clone(),
            extra,
        }
    }
}

/// Progress of a run, for reports and the hub's metrics.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum TrainEvent {
    Start {
        trainable_parameters: usize,
        total_parameters: usize,
        train_examples: usize,
        valid_examples: usize,
        truncated_examples: usize,
    },
    Train {
        iteration: usize,
        train_loss: f32,
        learning_rate: f32,
        iterations_per_second: f64,
        tokens_per_second: f64,
        trained_tokens: usize,
        peak_memory_gb: f64,
    },
    Val {
        iteration: usize,
        val_loss: f32,
        val_time: f64,
    },
    Saved {
        iteration: usize,
        path: PathBuf,
    },
}

/// The result of [`train`]: the trained parameters and the loss of every step.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub params: Params,
    pub step_losses: Vec<f32>,
    pub val_losses: Vec<(usize, f32)>,
    pub trained_tokens: usize,
}

fn adapt_of<'a>(spec: &AdapterSpec, params: &'a Params) -> Adapt<'a> {
    Adapt {
        params: Some(params),
        lora_scale: spec.lora.scale,
        dropout: spec.lora.dropout,
    }
}

/// mlx-lm's `evaluate`: the token-weighted mean loss over `num_batches` batches
/// (-1: all) of `split`, in an order drawn from `rng`.
pub fn evaluate(
    model: &Llama,
    adapt: &Adapt<'_>,
    split: &Split,
    batch_size: usize,
    num_batches: i64,
    max_seq_length: usize,
    rng: &mut NumpyRng,
) -> Result<f32> {
    let plan = BatchPlan::new(split, batch_size, max_seq_length)?;
    let order = plan.epoch(rng);
    let take = if num_batches < 0 {
        order.len()
    } else {
        (num_batches as usize).min(order.len())
    };
    let mut all = Array::scalar(0.0f32)?;
    let mut ntokens = Array::scalar(0i32)?;
    for &b in &order[..take] {
        let batch = plan.make(split, b)?;
        let (loss, toks) = default_loss(model, adapt, &batch.tokens, &batch.lengths)?;
        all = all.add(loss.multiply(&toks)?)?;
        ntokens = ntokens.add(&toks)?;
        mlx::eval([&all, &ntokens])?;
    }
    Ok(all.divide(&ntokens)?.item_f32()?)
}

/// Trains `model`'s adapters (or its last blocks) on `data.train` as `mlx_lm.lora`.
/// `cancel` is checked before every step; `on_event` receives reports.
/// On a NaN/infinite loss it stops with [`TrainError::NonFinite`] naming the step and
/// writes nothing more.
pub fn train(
    model: &Llama,
    data: &Dataset,
    cfg: &TrainConfig,
    cancel: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainOutcome> {
    train_with(model, data, cfg, &GradOptions::default(), cancel, on_event)
}

/// How gradients become updates: mlx-lm's `--grad-accumulation-steps` (every
/// iteration is one micro-batch of `batch_size` rows; the optimizer steps every
/// `grad_accumulation_steps` iterations with the mean of their gradients), and
/// clipping by global norm (`mlx.optimizers.clip_grad_norm`, applied to the
/// gradient the optimizer receives).
#[derive(Debug, Clone, PartialEq)]
pub struct GradOptions {
    pub grad_clip: Option<f32>,
    pub grad_accumulation_steps: usize,
}

impl Default for GradOptions {
    fn default() -> GradOptions {
        GradOptions {
            grad_clip: None,
            grad_accumulation_steps: 1,
        }
    }
}

/// `mlx.optimizers.clip_grad_norm`: scales every gradient by
/// `min(max_norm / (‖g‖ + 1e-6), 1)`, `‖g‖` the norm of all of them together.
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut Params, max_norm: f32) -> mlx::Result<Array> {
    let mut sq = Array::scalar(0.0f32)?;
    for g in grads.values() {
        let g32 = if g.dtype() == Dtype::Float16 {
            g.as_type(Dtype::Float32)?
        } else {
            g.clone()
        };
        sq = sq.add(g32.square()?.sum(mlx::Axes::All, false)?)?;
    }
    let norm = sq.sqrt()?;
    let normalizer = Array::scalar(max_norm)?
        .divide(norm.add(1e-6f32)?)?
        .minimum(1.0f32)?;
    for g in grads.values_mut() {
        *g = g.multiply(&normalizer)?.as_type(g.dtype())?;
    }
    Ok(norm)
}

/// Sleeps `seconds` in short slices, returning early when `cancel` is set.
fn cool_down(seconds: f64, cancel: Option<&AtomicBool>) {
    let until = Instant::now() + std::time::Duration::from_secs_f64(seconds.max(0.0));
    while Instant::now() < until && !cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        let left = until.saturating_duration_since(Instant::now());
        std::thread::sleep(left.min(std::time::Duration::from_millis(100)));
    }
}

/// [`train`] with gradient accumulation and clipping ([`GradOptions`]).
pub fn train_with(
    model: &Llama,
    data: &Dataset,
    cfg: &TrainConfig,
    grad: &GradOptions,
    cancel: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainOutcome> {
    if cfg.iters == 0 {
        return Err(TrainError::Invalid("iters must be at least 1".into()));
    }
    if !(cfg.cooldown_seconds >= 0.0 && cfg.cooldown_seconds.is_finite()) {
        return Err(TrainError::Invalid(format!(
            "cooldown_seconds must be a finite number >= 0, not {}",
            cfg.cooldown_seconds
        )));
    }
    if grad.grad_accumulation_steps < 1 {
        return Err(TrainError::Invalid(
            "grad_accumulation_steps must be at least 1".into(),
        ));
    }
    if let Some(c) = grad.grad_clip
        && !(c >= 0.0 && c.is_finite())
    {
        return Err(TrainError::Invalid(format!(
            "grad_clip must be a finite number >= 0, not {c}"
        )));
    }
    let spec = &cfg.adapter;
    if spec.fine_tune_type == FineTuneType::Full && spec.lora.dropout > 0.0 {
        return Err(TrainError::Invalid(
            "dropout applies to LoRA/DoRA only".into(),
        ));
    }
    mlx::random::seed(cfg.seed);
    let mut params = spec.init(model, cfg.seed)?;
    if cfg.train_embeddings {
        if spec.fine_tune_type != FineTuneType::Full {
            return Err(TrainError::Invalid(
                "train_embeddings needs the full fine-tune type".into(),
            ));
        }
        params.extend(model.outer_parameters()?);
    }
    if let Some(resume) = &cfg.resume {
        for (k, v) in resume {
            match params.get(k) {
                Some(p) if p.shape() == v.shape() => {
                    params.insert(k.clone(), v.clone());
                }
                _ => {
                    return Err(TrainError::Invalid(format!(
                        "resume file: `{k}` is not a trainable parameter of this run (or has another shape)"
                    )));
                }
            }
        }
    }
    let mut plan = BatchPlan::new(&data.train, cfg.batch_size, cfg.max_seq_length)?;
    let valid = data.valid.as_ref().filter(|v| !v.is_empty());
    if let Some(v) = valid {
        BatchPlan::new(v, cfg.batch_size, cfg.max_seq_length)?;
    }
    on_event(&TrainEvent::Start {
        trainable_parameters: params.values().map(Array::size).sum(),
        total_parameters: model.num_parameters(),
        train_examples: data.train.len(),
        valid_examples: valid.map_or(0, Split::len),
        truncated_examples: data.train.count_longer_than(cfg.max_seq_length),
    });
    if let Some(dir) = &cfg.adapter_path {
        let mut ac = cfg.adapter_config();
        ac.extra.insert(
            "grad_accumulation_steps".into(),
            grad.grad_accumulation_steps.into(),
        );
        if let Some(c) = grad.grad_clip {
            ac.extra.insert("grad_clip".into(), (c as f64).into());
        }
        ac.write(dir)?;
    }
    let schedule = cfg
        .schedule
        .clone()
        .unwrap_or(Schedule::Constant(cfg.learning_rate));
    let mut opt = Optimizer::new(cfg.optimizer.clone(), schedule);
    opt.init(&params)?;
    // The step: loss, gradients and the optimizer update as one function of
    // [params…, state…, lr, tokens, lengths(, accumulated grads…)] →
    // [loss, ntoks, params…, state…] (an update) or [loss, ntoks, grads…] (a
    // micro-batch of gradient accumulation), compiled with MLX (as mlx-lm's
    // `@mx.compile` step) unless disabled or the update depends on the step number.
    let names: Vec<String> = params.keys().cloned().collect();
    let (n, k) = (names.len(), opt.kind.state_len());
    let kind = opt.kind.clone();
    let accum = grad.grad_accumulation_steps;
    let clip = grad.grad_clip;
    let step_no = std::cell::Cell::new(0u64);
    let core = |xs: &[Array], has_prev: bool, do_update: bool| -> mlx::Result<Vec<Array>> {
        let to_mlx = |e: TrainError| mlx::Error::Mlx(e.to_string());
        let p: Params = names.iter().cloned().zip(xs[..n].iter().cloned()).collect();
        let rest = &xs[n + n * k..];
        let (lr, tokens, lengths) = (&rest[0], &rest[1], &rest[2]);
        let (vals, mut grads) = mlx::value_and_grad(
            |p: &Params, a: &[Array]| {
                let adapt = adapt_of(spec, p);
                let (l, t) = training_loss(model, &adapt, &a[0], &a[1], cfg.grad_checkpoint)
                    .map_err(to_mlx)?;
                Ok(vec![l, t])
            },
            &p,
            &[tokens.clone(), lengths.clone()],
        )?;
        if has_prev {
            for (i, name) in names.iter().enumerate() {
                let g = grads[name].add(&rest[3 + i])?;
                grads.insert(name.clone(), g);
            }
        }
        let mut outs = vals;
        if !do_update {
            outs.extend(names.iter().map(|name| grads[name].clone()));
            return Ok(outs);
        }
        if accum > 1 {
            for g in grads.values_mut() {
                *g = g.div(accum as f32)?;
            }
        }
        if let Some(max_norm) = clip {
            clip_grad_norm(&mut grads, max_norm)?;
        }
        let mut states = Vec::with_capacity(n * k);
        for (i, name) in names.iter().enumerate() {
            let st = &xs[n + i * k..n + (i + 1) * k];
            let (np, ns) = kind
                .apply(lr, &grads[name], &p[name], st, step_no.get())
                .map_err(to_mlx)?;
            outs.push(np);
            states.extend(ns);
        }
        outs.extend(states);
        Ok(outs)
    };
    let make = |has_prev: bool, do_update: bool| {
        let core = &core;
        move |xs: &[Array]| core(xs, has_prev, do_update)
    };
    // (Dropout draws from the global key, which a compiled function would freeze.)
    let compile = cfg.compile && !kind.uses_step() && spec.lora.dropout == 0.0;
    // One compiled function per (has accumulated gradients, updates) variant.
    let mut compiled = Vec::new();
    for (has_prev, do_update) in [(false, true), (false, false), (true, false), (true, true)] {
        let needed = if accum == 1 {
            !has_prev && do_update
        } else {
            has_prev || !do_update
        };
        compiled.push(if compile && needed {
            Some(mlx::compile(make(has_prev, do_update), false)?)
        } else {
            None
        });
    }
    let mut rng = NumpyRng::new(cfg.seed as u32);
    let mut grad_acc: Option<Vec<Array>> = None;

    let mut out = TrainOutcome {
        params: Params::new(),
        step_losses: Vec::with_capacity(cfg.iters),
        val_losses: Vec::new(),
        trained_tokens: 0,
    };
    let (mut losses, mut n_tokens, mut steps, mut train_time) = (0.0f64, 0usize, 0usize, 0.0f64);
    for it in 1..=cfg.iters {
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(TrainError::Cancelled { step: it });
        }
        let batch = plan.next_looping(&data.train, &mut rng)?;
        if let Some(v) = valid
            && (it == 1 || it % cfg.steps_per_eval.max(1) == 0 || it == cfg.iters)
        {
            let tic = Instant::now();
            let val_loss = evaluate(
                model,
                &adapt_of(spec, &params),
                v,
                cfg.batch_size,
                cfg.val_batches,
                cfg.max_seq_length,
                &mut rng,
            )?;
            out.val_losses.push((it - 1, val_loss));
            on_event(&TrainEvent::Val {
                iteration: it - 1,
                val_loss,
                val_time: tic.elapsed().as_secs_f64(),
            });
            cool_down(cfg.cooldown_seconds, cancel);
        }
        let tic = Instant::now();
        let do_update = it % accum == 0;
        let has_prev = grad_acc.is_some();
        let lr = if do_update {
            let lr = opt.begin_step();
            step_no.set(opt.step());
            lr
        } else {
            opt.learning_rate()
        };
        let mut inputs: Vec<Array> = params.values().cloned().collect();
        for name in &names {
            inputs.extend(opt.state_of(name).iter().cloned());
        }
        inputs.push(Array::scalar(lr)?);
        inputs.push(batch.tokens.clone());
        inputs.push(batch.lengths.clone());
        if let Some(prev) = grad_acc.take() {
            inputs.extend(prev);
        }
        let variant = match (has_prev, do_update) {
            (false, true) => 0,
            (false, false) => 1,
            (true, false) => 2,
            (true, true) => 3,
        };
        let outs = match &mut compiled[variant] {
            Some(c) => c.call(&inputs)?,
            None => core(&inputs, has_prev, do_update)?,
        };
        let mut outs = outs.into_iter();
        let (Some(loss_a), Some(toks_a)) = (outs.next(), outs.next()) else {
            return Err(TrainError::Invalid(
                "the training step returned no loss".into(),
            ));
        };
        if do_update {
            for name in &names {
                let p = outs.next().expect("one output per parameter");
                params.insert(name.clone(), p);
            }
            for name in &names {
                let st: Vec<Array> = outs.by_ref().take(k).collect();
                opt.set_state(name, st);
            }
        } else {
            let g: Vec<Array> = outs.collect();
            mlx::eval(&g)?;
            grad_acc = Some(g);
        }
        mlx::eval(params.values().chain(opt.state()).chain([&loss_a, &toks_a]))?;
        let loss = loss_a.item_f32()?;
        let toks = toks_a.item::<i32>()? as usize;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite { step: it, loss });
        }
        train_time += tic.elapsed().as_secs_f64();
        out.step_losses.push(loss);
        losses += loss as f64;
        n_tokens += toks;
        steps += 1;

        if it % cfg.steps_per_report.max(1) == 0 || it == cfg.iters {
            out.trained_tokens += n_tokens;
            on_event(&TrainEvent::Train {
                iteration: it,
                train_loss: (losses / steps as f64) as f32,
                learning_rate: opt.learning_rate(),
                iterations_per_second: steps as f64 / train_time.max(1e-9),
                tokens_per_second: n_tokens as f64 / train_time.max(1e-9),
                trained_tokens: out.trained_tokens,
                peak_memory_gb: mlx::system::memory_stats().peak as f64 / 1e9,
            });
            (losses, n_tokens, steps, train_time) = (0.0, 0, 0, 0.0);
        }
        if let Some(dir) = &cfg.adapter_path
            && cfg.save_every > 0
            && it % cfg.save_every == 0
        {
            save_params(&dir.join(ADAPTER_FILE), &params)?;
            let ckpt = dir.join(format!("{it:07}_adapters.safetensors"));
            save_params(&ckpt, &params)?;
            on_event(&TrainEvent::Saved {
                iteration: it,
                path: ckpt,
            });
        }
    }
    if let Some(dir) = &cfg.adapter_path {
        let path = dir.join(ADAPTER_FILE);
        save_params(&path, &params)?;
        on_event(&TrainEvent::Saved {
            iteration: cfg.iters,
            path,
        });
    }
    out.params = params;
    Ok(out)
}
