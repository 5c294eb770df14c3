//! Function transformations over Rust closures: `value_and_grad`, `vjp`, `compile`,
//! `checkpoint`.
//!
//! MLX calls our closures back from C++. A closure's `Err` or panic is parked in a
//! thread-local, reported to MLX as a failure (MLX unwinds its own frames and our
//! shim catches it), and then returned (or resumed, for a panic) on the Rust side.

use std::collections::BTreeMap;
use std::ffi::{CString, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::array::{RawVec, read_vec};
use crate::error::{Error, Pending, Result, check, park};
use crate::{Array, ffi};

unsafe extern "C" fn trampoline<F>(
    ctx: *mut c_void,
    inputs: *const ffi::mlxs_vec,
    outputs: *mut ffi::mlxs_vec,
) -> c_int
where
    F: FnMut(&[Array]) -> Result<Vec<Array>>,
{
    // SAFETY: ctx is the `&mut F` passed by the caller, alive for the whole FFI call.
    let f = unsafe { &mut *(ctx as *mut F) };
    unsafe { run_closure(f, inputs, outputs) }
}

/// [`trampoline`] for a closure the shim owns and may call from several copies of
/// one MLX function (hence `Fn`, borrowed shared).
unsafe extern "C" fn trampoline_shared<F>(
    ctx: *mut c_void,
    inputs: *const ffi::mlxs_vec,
    outputs: *mut ffi::mlxs_vec,
) -> c_int
where
    F: Fn(&[Array]) -> Result<Vec<Array>>,
{
    // SAFETY: ctx is the `Box<F>` given to `mlxs_checkpoint`, alive until `drop_boxed`.
    let f = unsafe { &*(ctx as *const F) };
    unsafe { run_closure(f, inputs, outputs) }
}

unsafe extern "C" fn drop_boxed<F>(ctx: *mut c_void) {
    // SAFETY: ctx came from `Box::into_raw` in `checkpoint`; the shim drops it once.
    drop(unsafe { Box::from_raw(ctx as *mut F) });
}

/// Runs `f` for MLX: its outputs go to `outputs`; an error or panic is parked in
/// PENDING and reported to MLX as a failure.
unsafe fn run_closure(
    f: impl FnOnce(&[Array]) -> Result<Vec<Array>>,
    inputs: *const ffi::mlxs_vec,
    outputs: *mut ffi::mlxs_vec,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let inputs = read_vec(inputs)?;
        f(&inputs)
    }));
    let message = match result {
        Ok(Ok(outs)) => {
            for a in &outs {
                unsafe { ffi::mlxs_vec_push(outputs, a.as_ptr()) };
            }
            return 0;
        }
        Ok(Err(e)) => {
            let msg = e.to_string();
            park(Pending::Error(e));
            msg
        }
        Err(payload) => {
            park(Pending::Panic(payload));
            "a Rust closure panicked inside an MLX transform".to_string()
        }
    };
    let c = CString::new(message.replace('\0', " ")).unwrap_or_default();
    unsafe { ffi::mlxs_set_error(c.as_ptr()) };
    1
}

/// Values of `f(inputs)` and the gradients of its first output (a scalar) with
/// respect to the inputs at positions `argnums`.
pub fn value_and_grad_vec<F>(
    mut f: F,
    inputs: &[Array],
    argnums: &[i32],
) -> Result<(Vec<Array>, Vec<Array>)>
where
    F: FnMut(&[Array]) -> Result<Vec<Array>>,
{
    if let Some(bad) = argnums
        .iter()
        .find(|&&i| i < 0 || i as usize >= inputs.len())
    {
        return Err(Error::InvalidArgument(format!(
            "argnum {bad} is out of range for {} inputs",
            inputs.len()
        )));
    }
    let ins = RawVec::from_arrays(inputs);
    let values = RawVec::new();
    let grads = RawVec::new();
    check(unsafe {
        ffi::mlxs_value_and_grad(
            trampoline::<F>,
            (&mut f as *mut F).cast(),
            ins.0,
            argnums.as_ptr(),
            argnums.len(),
            values.0,
            grads.0,
        )
    })?;
    Ok((values.to_arrays()?, grads.to_arrays()?))
}

/// A model's trainable parameters by name (e.g. `layers.0.self_attn.q_proj.weight`).
pub type Params = BTreeMap<String, Array>;

/// Values of `f(params, args)` and the gradient of its first output (a scalar loss)
/// with respect to every parameter, by name. `args` (inputs, targets, masks) are
/// held constant.
pub fn value_and_grad<F>(mut f: F, params: &Params, args: &[Array]) -> Result<(Vec<Array>, Params)>
where
    F: FnMut(&Params, &[Array]) -> Result<Vec<Array>>,
{
    let names: Vec<&String> = params.keys().collect();
    let n = names.len();
    let mut inputs: Vec<Array> = params.values().cloned().collect();
    inputs.extend(args.iter().cloned());
    let argnums: Vec<i32> = (0..n as i32).collect();
    let (values, grads) = value_and_grad_vec(
        |xs: &[Array]| {
            let p: Params = names
                .iter()
                .zip(&xs[..n])
                .map(|(k, v)| ((*k).clone(), v.clone()))
                .collect();
            f(&p, &xs[n..])
        },
        &inputs,
        &argnums,
    )?;
    let grads = names.into_iter().cloned().zip(grads).collect();
    Ok((values, grads))
}

/// Vector-Jacobian product: outputs of `f(primals)` and `cotangentsᵀ · ∂f/∂primals`.
pub fn vjp<F>(mut f: F, primals: &[Array], cotangents: &[Array]) -> Result<(Vec<Array>, Vec<Array>)>
where
    F: FnMut(&[Array]) -> Result<Vec<Array>>,
{
    let p = RawVec::from_arrays(primals);
    let c = RawVec::from_arrays(cotangents);
    let outs = RawVec::new();
    let vjps = RawVec::new();
    check(unsafe {
        ffi::mlxs_vjp(
            trampoline::<F>,
            (&mut f as *mut F).cast(),
            p.0,
            c.0,
            outs.0,
            vjps.0,
        )
    })?;
    Ok((outs.to_arrays()?, vjps.to_arrays()?))
}

/// A function compiled by MLX: traced once per input shape (or once for all shapes
/// when `shapeless`), then replayed as one fused graph.
///
/// The closure runs only while tracing, on placeholder arrays: it must not read
/// values (no `to_vec`, `item` or `eval` inside). MLX's compile cache is per thread,
/// so a `Compiled` stays on the thread that made it (it is not `Send`).
pub struct Compiled<F> {
    raw: *mut ffi::mlxs_compiled,
    // Boxed so its address, handed to C++, stays put; dropped after `raw`.
    _f: Box<F>,
}

/// Compiles `f`. See [`Compiled`].
pub fn compile<F>(f: F, shapeless: bool) -> Result<Compiled<F>>
where
    F: FnMut(&[Array]) -> Result<Vec<Array>>,
{
    let mut f = Box::new(f);
    let ctx: *mut F = &mut *f;
    let raw = unsafe { ffi::mlxs_compile(trampoline::<F>, ctx.cast(), shapeless as c_int) };
    if raw.is_null() {
        return Err(Error::last());
    }
    Ok(Compiled { raw, _f: f })
}

impl<F> Compiled<F>
where
    F: FnMut(&[Array]) -> Result<Vec<Array>>,
{
    pub fn call(&mut self, inputs: &[Array]) -> Result<Vec<Array>> {
        // `&mut self` guarantees the closure is not re-entered while MLX traces it.
        let ins = RawVec::from_arrays(inputs);
        let outs = RawVec::new();
        check(unsafe { ffi::mlxs_compiled_call(self.raw, ins.0, outs.0) })?;
        outs.to_arrays()
    }
}

impl<F> Drop for Compiled<F> {
    fn drop(&mut self) {
        unsafe { ffi::mlxs_compiled_free(self.raw) }
    }
}

/// Turns compilation on or off process-wide (off: compiled functions run eagerly).
pub fn set_compile_enabled(enabled: bool) {
    unsafe { ffi::mlxs_set_compile_enabled(enabled as c_int) }
}

/// A function whose intermediate values are not kept for the backward pass: under a
/// gradient transform MLX saves only its inputs and calls it again when computing
/// gradients (mlx-lm's `grad_checkpoint`), trading compute for memory.
///
/// Gradients flow only to the function's *inputs*: pass trainable parameters as
/// inputs, not captured. The closure is called again during backward, so it must be
/// a pure function of its inputs (random draws inside are redrawn, as in MLX). MLX
/// keeps the closure alive in the graph for as long as outputs need it, hence
/// `'static` (capture owned array handles, which are cheap clones).
pub struct Checkpointed {
    raw: *mut ffi::mlxs_checkpointed,
}

/// Wraps `f` in MLX's checkpoint transform. See [`Checkpointed`].
pub fn checkpoint<F>(f: F) -> Result<Checkpointed>
where
    F: Fn(&[Array]) -> Result<Vec<Array>> + 'static,
{
    let ctx = Box::into_raw(Box::new(f));
    // The shim owns ctx from here on, and drops it even when this call fails.
    let raw = unsafe { ffi::mlxs_checkpoint(trampoline_shared::<F>, ctx.cast(), drop_boxed::<F>) };
    if raw.is_null() {
        return Err(Error::last());
    }
    Ok(Checkpointed { raw })
}

impl Checkpointed {
    pub fn call(&self, inputs: &[Array]) -> Result<Vec<Array>> {
        let ins = RawVec::from_arrays(inputs);
        let outs = RawVec::new();
        check(unsafe { ffi::mlxs_checkpointed_call(self.raw, ins.0, outs.0) })?;
        outs.to_arrays()
    }
}

impl Drop for Checkpointed {
    fn drop(&mut self) {
        unsafe { ffi::mlxs_checkpointed_free(self.raw) }
    }
}
