//! Optimizers and learning-rate schedules with `mlx.optimizers`' exact update
//! formulas (mlx 0.32): `SGD` (momentum, dampening, nesterov, weight decay), `Adam`
//! and `AdamW` (bias correction off by default, as in mlx). The step counter starts
//! at 0; the schedule is evaluated at the current step and then the step increments,
//! as `Optimizer.apply_gradients` does.

use std::collections::BTreeMap;

use mlx::{Array, Params};
use serde::{Deserialize, Serialize};

use super::{Result, TrainError};

/// A learning-rate schedule (mlx's `schedulers`, joined with a linear warmup as
/// mlx-lm's `build_schedule` does).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    Constant(f32),
    /// `cosine_decay(init, decay_steps, end)`.
    Cosine {
        init: f32,
        decay_steps: u64,
        end: f32,
    },
    /// `linear_schedule(init, end, steps)`.
    Linear {
        init: f32,
        end: f32,
        steps: u64,
    },
    /// `warmup` steps of `linear_schedule(warmup_init, init, warmup)`, then `after`
    /// from step 0 (boundary `warmup + 1`, as mlx-lm's `build_schedule`).
    Warmup {
        warmup: u64,
        warmup_init: f32,
        after: Box<Schedule>,
    },
}

impl Schedule {
    pub fn initial(&self) -> f32 {
        match self {
            Schedule::Constant(v) => *v,
            Schedule::Cosine { init, .. } | Schedule::Linear { init, .. } => *init,
            Schedule::Warmup { after, .. } => after.initial(),
        }
    }

    /// The value at `step` (computed in float32 like mlx's array arithmetic).
    pub fn at(&self, step: u64) -> f32 {
        match self {
            Schedule::Constant(v) => *v,
            Schedule::Cosine {
                init,
                decay_steps,
                end,
            } => {
                let s = step.min(*decay_steps) as f32;
                let k = (std::f64::consts::PI / *decay_steps as f64) as f32;
                let decay = 0.5f32 * (1.0 + (k * s).cos());
                end + decay * (init - end)
            }
            Schedule::Linear { init, end, steps } => {
                let s = step.min(*steps) as f32;
                s * ((*end as f64 - *init as f64) / *steps as f64) as f32 + init
            }
            Schedule::Warmup {
                warmup,
                warmup_init,
                after,
            } => {
                if step < warmup + 1 {
                    Schedule::Linear {
                        init: *warmup_init,
                        end: after.initial(),
                        steps: (*warmup).max(1),
                    }
                    .at(step)
                } else {
                    after.at(step - (warmup + 1))
                }
            }
        }
    }
}

/// Which optimizer, with its hyper-parameters (mlx's defaults in [`OptimizerKind::adam`] etc.).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OptimizerKind {
    Sgd {
        momentum: f32,
        weight_decay: f32,
        dampening: f32,
        nesterov: bool,
    },
    Adam {
        betas: (f32, f32),
        eps: f32,
        bias_correction: bool,
    },
    AdamW {
        betas: (f32, f32),
        eps: f32,
        weight_decay: f32,
        bias_correction: bool,
    },
}

impl OptimizerKind {
    pub fn sgd() -> OptimizerKind {
        OptimizerKind::Sgd {
            momentum: 0.0,
            weight_decay: 0.0,
            dampening: 0.0,
            nesterov: false,
        }
    }
    pub fn adam() -> OptimizerKind {
        OptimizerKind::Adam {
            betas: (0.9, 0.999),
            eps: 1e-8,
            bias_correction: false,
        }
    }
    pub fn adamw() -> OptimizerKind {
        OptimizerKind::AdamW {
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.01,
            bias_correction: false,
        }
    }
    /// `adam`, `adamw` or `sgd` with mlx's defaults.
    pub fn by_name(name: &str) -> Result<OptimizerKind> {
        match name.to_ascii_lowercase().as_str() {
            "adam" => Ok(OptimizerKind::adam()),
            "adamw" => Ok(OptimizerKind::adamw()),
            "sgd" => Ok(OptimizerKind::sgd()),
            other => Err(TrainError::Invalid(format!(
                "unsupported optimizer `{other}` (adam, adamw, sgd)"
            ))),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Sgd { .. } => "sgd",
            OptimizerKind::Adam { .. } => "adam",
            OptimizerKind::AdamW { .. } => "adamw",
        }
    }
}

/// An optimizer with its state (per parameter: SGD with momentum `[v]`, Adam `[m, v]`).
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub schedule: Schedule,
    step: u64,
    lr: f32,
    state: BTreeMap<String, Vec<Array>>,
}

/// `1 - x` computed in double and rounded, as a Python float meets an f32 array.
fn one_minus(x: f32) -> f32 {
    (1.0 - x as f64) as f32
}

impl OptimizerKind {
    /// State arrays kept per parameter.
    pub fn state_len(&self) -> usize {
        match self {
            OptimizerKind::Sgd { momentum, .. } if *momentum <= 0.0 => 0,
            OptimizerKind::Sgd { .. } => 1,
            OptimizerKind::Adam { .. } | OptimizerKind::AdamW { .. } => 2,
        }
    }

    /// Whether an update depends on the step number (other than through `lr`).
    pub fn uses_step(&self) -> bool {
        matches!(
            self,
            OptimizerKind::Adam {
                bias_correction: true,
                ..
            } | OptimizerKind::AdamW {
                bias_correction: true,
                ..
            }
        )
    }

    /// One parameter's update, `apply_single` of mlx's optimizers: the new parameter
    /// and the new state. `lr` is a float32 scalar array; `step` counts from 1.
    pub fn apply(
        &self,
        lr: &Array,
        g: &Array,
        p: &Array,
        state: &[Array],
        step: u64,
    ) -> Result<(Array, Vec<Array>)> {
        let lr = lr.as_type(g.dtype())?;
        match *self {
            OptimizerKind::Sgd {
                momentum,
                weight_decay,
                dampening,
                nesterov,
            } => {
                let g = if weight_decay != 0.0 {
                    g.add(p.mul(weight_decay)?)?
                } else {
                    g.clone()
                };
                if momentum <= 0.0 {
                    return Ok((p.sub(lr.multiply(&g)?)?, Vec::new()));
                }
                let mut v = state[0].mul(momentum)?;
                v = if dampening > 0.0 {
                    v.add(g.mul(one_minus(dampening))?)?
                } else {
                    v.add(&g)?
                };
                let update = if nesterov {
                    g.add(v.mul(momentum)?)?
                } else {
                    v.clone()
                };
                Ok((p.sub(lr.multiply(&update)?)?, vec![v]))
            }
            OptimizerKind::Adam {
                betas,
                eps,
                bias_correction,
            } => adam(g, p, &lr, state, betas, eps, bias_correction, step),
            OptimizerKind::AdamW {
                betas,
                eps,
                weight_decay,
                bias_correction,
            } => {
                // parameter * (1 - lr * weight_decay)
                let decayed = p.multiply(lr.mul(weight_decay)?.negative()?.add(1.0f32)?)?;
                adam(g, &decayed, &lr, state, betas, eps, bias_correction, step)
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn adam(
    g: &Array,
    p: &Array,
    lr: &Array,
    state: &[Array],
    (b1, b2): (f32, f32),
    eps: f32,
    bias_correction: bool,
    step: u64,
) -> Result<(Array, Vec<Array>)> {
    let m = state[0].mul(b1)?.add(g.mul(one_minus(b1))?)?;
    let v = state[1].mul(b2)?.add(g.square()?.mul(one_minus(b2))?)?;
    let new = if bias_correction {
        let c1 = lr
            .div(1.0 - (b1 as f64).powi(step as i32) as f32)?
            .as_type(g.dtype())?;
        let c2 = ((1.0 - (b2 as f64).powi(step as i32)) as f32)
            .sqrt()
            .recip();
        let num = c1.multiply(&m)?;
        let den = v.sqrt()?.mul(c2)?.add(eps)?;
        p.sub(num.divide(&den)?)?
    } else {
        let upd = lr.multiply(&m)?.divide(v.sqrt()?.add(eps)?)?;
        p.sub(upd)?
    };
    Ok((new, vec![m, v]))
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, schedule: Schedule) -> Optimizer {
        let lr = schedule.at(0);
        Optimizer {
            kind,
            schedule,
            step: 0,
            lr,
            state: BTreeMap::new(),
        }
    }

    /// Updates applied so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The learning rate of the last update (mlx's `optimizer.learning_rate`).
    pub fn learning_rate(&self) -> f32 {
        self.lr
    }

    /// The optimizer's state arrays (to evaluate alongside the parameters).
    pub fn state(&self) -> impl Iterator<Item = &Array> {
        self.state.values().flatten()
    }

    /// Zero state for every parameter that has none yet (mlx's `init`).
    pub fn init(&mut self, params: &Params) -> Result<()> {
        let k = self.kind.state_len();
        for (name, p) in params {
            if !self.state.contains_key(name) {
                let zeros = (0..k)
                    .map(|_| mlx::zeros(&p.shape(), p.dtype()))
                    .collect::<mlx::Result<Vec<_>>>()?;
                self.state.insert(name.clone(), zeros);
            }
        }
        Ok(())
    }

    /// The state of `name` (after [`Optimizer::init`]).
    pub fn state_of(&self, name: &str) -> &[Array] {
        self.state.get(name).map_or(&[], Vec::as_slice)
    }

    /// Advances the step and the schedule; returns the learning rate to apply now
    /// (the schedule at the step before the increment, as mlx does).
    pub fn begin_step(&mut self) -> f32 {
        self.lr = self.schedule.at(self.step);
        self.step += 1;
        self.lr
    }

    /// Stores new state for `name` (the compiled step computes it).
    pub fn set_state(&mut self, name: &str, state: Vec<Array>) {
        self.state.insert(name.to_string(), state);
    }

    /// `params ← update(params, grads)`, for every name in `grads`.
    pub fn update(&mut self, params: &mut Params, grads: &Params) -> Result<()> {
        let missing: Params = grads
            .keys()
            .filter_map(|k| params.get(k).map(|p| (k.clone(), p.clone())))
            .collect();
        self.init(&missing)?;
        let lr = Array::scalar(self.begin_step())?;
        let step = self.step;
        for (name, g) in grads {
            let Some(p) = params.get(name) else {
                return Err(TrainError::Invalid(format!(
                    "gradient for unknown parameter `{name}`"
                )));
            };
            let (new, st) = self.kind.apply(&lr, g, p, self.state_of(name), step)?;
            self.state.insert(name.clone(), st);
            params.insert(name.clone(), new);
        }
        Ok(())
    }
}
