//! Raw declarations of the C ABI in `csrc/shim.h`. Only this crate sees them.
#![allow(non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct mlxs_array {
    _private: [u8; 0],
}
#[repr(C)]
pub struct mlxs_vec {
    _private: [u8; 0],
}
#[repr(C)]
pub struct mlxs_strings {
    _private: [u8; 0],
}
#[repr(C)]
pub struct mlxs_compiled {
    _private: [u8; 0],
}
#[repr(C)]
pub struct mlxs_checkpointed {
    _private: [u8; 0],
}
#[repr(C)]
pub struct mlxs_gguf {
    _private: [u8; 0],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mlxs_linear_spec {
    pub bits: i32,
    pub group_size: i32,
    pub has_bias: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct mlxs_decode_spec {
    pub dim: i32,
    pub n_heads: i32,
    pub n_kv_heads: i32,
    pub head_dim: i32,
    pub hidden: i32,
    pub eps: f32,
    pub attn_scale: f32,
    pub rope_dims: i32,
    pub rope_traditional: i32,
    pub rope_base: f32,
    pub rope_scale: f32,
    pub rope_has_freqs: i32,
    pub qk_norm: i32,
    pub lin: [mlxs_linear_spec; 7],
}

pub type mlxs_closure_fn = unsafe extern "C" fn(
    ctx: *mut c_void,
    inputs: *const mlxs_vec,
    outputs: *mut mlxs_vec,
) -> c_int;

type A = *mut mlxs_array;
type CA = *const mlxs_array;

unsafe extern "C" {
    pub fn mlxs_last_error() -> *const c_char;
    pub fn mlxs_set_error(message: *const c_char);

    pub fn mlxs_version() -> *const c_char;
    pub fn mlxs_blas_name() -> *const c_char;
    pub fn mlxs_blas_library() -> *const c_char;
    pub fn mlxs_blas_threads() -> c_int;
    pub fn mlxs_blas_set_threads(n: c_int);
    pub fn mlxs_default_device() -> c_int;
    pub fn mlxs_set_default_device(kind: c_int) -> c_int;
    pub fn mlxs_device_available(kind: c_int) -> c_int;
    pub fn mlxs_device_info(kind: c_int) -> *const c_char;
    pub fn mlxs_active_memory() -> usize;
    pub fn mlxs_peak_memory() -> usize;
    pub fn mlxs_cache_memory() -> usize;
    pub fn mlxs_reset_peak_memory();
    pub fn mlxs_memory_limit() -> usize;
    pub fn mlxs_set_memory_limit(limit: usize) -> usize;
    pub fn mlxs_set_cache_limit(limit: usize) -> usize;
    pub fn mlxs_set_wired_limit(limit: usize, previous: *mut usize) -> c_int;
    pub fn mlxs_clear_cache();

    pub fn mlxs_array_from_data(
        data: *const c_void,
        shape: *const i32,
        ndim: usize,
        dtype: c_int,
    ) -> A;
    pub fn mlxs_array_scalar(value: f64, dtype: c_int) -> A;
    pub fn mlxs_array_clone(a: CA) -> A;
    pub fn mlxs_array_free(a: A);
    pub fn mlxs_array_ndim(a: CA) -> usize;
    pub fn mlxs_array_shape(a: CA, out: *mut i32);
    pub fn mlxs_array_size(a: CA) -> usize;
    pub fn mlxs_array_dtype(a: CA) -> c_int;
    pub fn mlxs_array_nbytes(a: CA) -> usize;
    pub fn mlxs_array_copy_out(a: CA, dst: *mut c_void, nbytes: usize) -> c_int;
    pub fn mlxs_array_to_string(a: CA) -> *mut c_char;
    pub fn mlxs_string_free(s: *mut c_char);
    pub fn mlxs_eval(arrays: *const CA, n: usize) -> c_int;
    pub fn mlxs_async_eval(arrays: *const CA, n: usize) -> c_int;

    pub fn mlxs_vec_new() -> *mut mlxs_vec;
    pub fn mlxs_vec_free(v: *mut mlxs_vec);
    pub fn mlxs_vec_push(v: *mut mlxs_vec, a: CA);
    pub fn mlxs_vec_len(v: *const mlxs_vec) -> usize;
    pub fn mlxs_vec_get(v: *const mlxs_vec, i: usize) -> A;
    pub fn mlxs_strings_new() -> *mut mlxs_strings;
    pub fn mlxs_strings_free(s: *mut mlxs_strings);
    pub fn mlxs_strings_push(s: *mut mlxs_strings, data: *const c_char, len: usize);
    pub fn mlxs_strings_len(s: *const mlxs_strings) -> usize;
    pub fn mlxs_strings_get(s: *const mlxs_strings, i: usize, len: *mut usize) -> *const c_char;

    pub fn mlxs_unary(op: c_int, a: CA) -> A;
    pub fn mlxs_binary(op: c_int, a: CA, b: CA) -> A;
    pub fn mlxs_where(c: CA, a: CA, b: CA) -> A;
    pub fn mlxs_astype(a: CA, dtype: c_int) -> A;
    pub fn mlxs_clip(a: CA, lo: CA, hi: CA) -> A;
    pub fn mlxs_round(a: CA, decimals: c_int) -> A;

    pub fn mlxs_reduce(
        op: c_int,
        a: CA,
        axes: *const i32,
        n: usize,
        all: c_int,
        keepdims: c_int,
    ) -> A;
    pub fn mlxs_arg_reduce(op: c_int, a: CA, axis: c_int, all: c_int, keepdims: c_int) -> A;
    pub fn mlxs_softmax(a: CA, axes: *const i32, n: usize, precise: c_int) -> A;
    pub fn mlxs_scan(op: c_int, a: CA, axis: c_int, reverse: c_int, inclusive: c_int) -> A;
    pub fn mlxs_var(a: CA, axes: *const i32, n: usize, keepdims: c_int, ddof: c_int) -> A;

    pub fn mlxs_reshape(a: CA, shape: *const i32, n: usize) -> A;
    pub fn mlxs_transpose(a: CA, axes: *const i32, n: usize, reverse: c_int) -> A;
    pub fn mlxs_swapaxes(a: CA, axis1: c_int, axis2: c_int) -> A;
    pub fn mlxs_expand_dims(a: CA, axes: *const i32, n: usize) -> A;
    pub fn mlxs_squeeze(a: CA, axes: *const i32, n: usize, all: c_int) -> A;
    pub fn mlxs_broadcast_to(a: CA, shape: *const i32, n: usize) -> A;
    pub fn mlxs_flatten(a: CA, start: c_int, end: c_int) -> A;
    pub fn mlxs_slice(
        a: CA,
        start: *const i32,
        stop: *const i32,
        strides: *const i32,
        n: usize,
    ) -> A;
    pub fn mlxs_slice_update(
        src: CA,
        update: CA,
        start: *const i32,
        stop: *const i32,
        strides: *const i32,
        n: usize,
    ) -> A;
    pub fn mlxs_concatenate(arrays: *const CA, n: usize, axis: c_int) -> A;
    pub fn mlxs_stack(arrays: *const CA, n: usize, axis: c_int) -> A;
    pub fn mlxs_split(
        a: CA,
        indices: *const i32,
        n_indices: usize,
        sections: c_int,
        axis: c_int,
        out: *mut mlxs_vec,
    ) -> c_int;
    pub fn mlxs_take(a: CA, indices: CA, axis: c_int, flat: c_int) -> A;
    pub fn mlxs_take_along_axis(a: CA, indices: CA, axis: c_int) -> A;
    pub fn mlxs_put_along_axis(a: CA, indices: CA, values: CA, axis: c_int) -> A;
    pub fn mlxs_scatter_add_axis(a: CA, indices: CA, values: CA, axis: c_int) -> A;
    pub fn mlxs_sort(a: CA, axis: c_int, arg: c_int) -> A;
    pub fn mlxs_partition(a: CA, kth: c_int, axis: c_int, arg: c_int) -> A;
    pub fn mlxs_topk(a: CA, k: c_int, axis: c_int) -> A;
    pub fn mlxs_pad(
        a: CA,
        axes: *const i32,
        low: *const i32,
        high: *const i32,
        n: usize,
        value: CA,
    ) -> A;
    pub fn mlxs_repeat(a: CA, repeats: c_int, axis: c_int) -> A;
    pub fn mlxs_tile(a: CA, reps: *const i32, n: usize) -> A;
    pub fn mlxs_tri(a: CA, k: c_int, upper: c_int) -> A;
    pub fn mlxs_contiguous(a: CA) -> A;

    pub fn mlxs_full(shape: *const i32, n: usize, value: CA, dtype: c_int) -> A;
    pub fn mlxs_arange(start: f64, stop: f64, step: f64, dtype: c_int) -> A;
    pub fn mlxs_linspace(start: f64, stop: f64, num: c_int, dtype: c_int) -> A;
    pub fn mlxs_eye(n: c_int, m: c_int, k: c_int, dtype: c_int) -> A;

    pub fn mlxs_matmul(a: CA, b: CA) -> A;
    pub fn mlxs_addmm(c: CA, a: CA, b: CA, alpha: f32, beta: f32) -> A;

    pub fn mlxs_fast_rms_norm(x: CA, weight: CA, eps: f32) -> A;
    pub fn mlxs_fast_layer_norm(x: CA, weight: CA, bias: CA, eps: f32) -> A;
    pub fn mlxs_fast_rope(
        x: CA,
        dims: c_int,
        traditional: c_int,
        base: f32,
        scale: f32,
        offset: c_int,
        offset_array: CA,
        freqs: CA,
    ) -> A;
    pub fn mlxs_fast_sdpa(q: CA, k: CA, v: CA, scale: f32, mask_mode: *const c_char, mask: CA)
    -> A;

    pub fn mlxs_quantize(
        w: CA,
        group_size: c_int,
        bits: c_int,
        mode: *const c_char,
        out: *mut mlxs_vec,
    ) -> c_int;
    pub fn mlxs_dequantize(
        w: CA,
        scales: CA,
        biases: CA,
        group_size: c_int,
        bits: c_int,
        mode: *const c_char,
        dtype: c_int,
    ) -> A;
    pub fn mlxs_quantized_matmul(
        x: CA,
        w: CA,
        scales: CA,
        biases: CA,
        transpose: c_int,
        group_size: c_int,
        bits: c_int,
        mode: *const c_char,
    ) -> A;
    pub fn mlxs_quantized_matmul_mlx(
        x: CA,
        w: CA,
        scales: CA,
        biases: CA,
        transpose: c_int,
        group_size: c_int,
        bits: c_int,
        mode: *const c_char,
    ) -> A;
    pub fn mlxs_qmm_kernel() -> *const c_char;
    pub fn mlxs_qmm_threads() -> c_int;
    pub fn mlxs_qmm_pool_self_check(rounds: c_int) -> i64;
    pub fn mlxs_qmm_force_portable(on: c_int);
    pub fn mlxs_qmm_configure(threads: c_int, fast_path: c_int);
    pub fn mlxs_qmm_calls() -> u64;
    pub fn mlxs_decode_layer(
        inputs: *const mlxs_vec,
        spec: *const mlxs_decode_spec,
        offsets: *const i32,
        copy: *const i32,
        rows: i32,
        outputs: *mut mlxs_vec,
    ) -> c_int;
    pub fn mlxs_decode_layer_available() -> c_int;
    pub fn mlxs_decode_layer_calls() -> u64;

    pub fn mlxs_random_key(seed: u64) -> A;
    pub fn mlxs_random_seed(seed: u64);
    pub fn mlxs_random_split(key: CA, num: c_int) -> A;
    pub fn mlxs_random_normal(
        shape: *const i32,
        n: usize,
        dtype: c_int,
        loc: f32,
        scale: f32,
        key: CA,
    ) -> A;
    pub fn mlxs_random_uniform(
        low: CA,
        high: CA,
        shape: *const i32,
        n: usize,
        dtype: c_int,
        key: CA,
    ) -> A;
    pub fn mlxs_random_randint(
        low: CA,
        high: CA,
        shape: *const i32,
        n: usize,
        dtype: c_int,
        key: CA,
    ) -> A;
    pub fn mlxs_random_bernoulli(p: CA, shape: *const i32, n: usize, key: CA) -> A;
    pub fn mlxs_random_categorical(logits: CA, axis: c_int, num_samples: c_int, key: CA) -> A;
    pub fn mlxs_random_gumbel(shape: *const i32, n: usize, dtype: c_int, key: CA) -> A;
    pub fn mlxs_random_permutation(n: c_int, key: CA) -> A;

    pub fn mlxs_value_and_grad(
        f: mlxs_closure_fn,
        ctx: *mut c_void,
        inputs: *const mlxs_vec,
        argnums: *const i32,
        n_argnums: usize,
        values: *mut mlxs_vec,
        grads: *mut mlxs_vec,
    ) -> c_int;
    pub fn mlxs_vjp(
        f: mlxs_closure_fn,
        ctx: *mut c_void,
        primals: *const mlxs_vec,
        cotangents: *const mlxs_vec,
        outputs: *mut mlxs_vec,
        vjps: *mut mlxs_vec,
    ) -> c_int;
    pub fn mlxs_compile(
        f: mlxs_closure_fn,
        ctx: *mut c_void,
        shapeless: c_int,
    ) -> *mut mlxs_compiled;
    pub fn mlxs_compiled_call(
        f: *mut mlxs_compiled,
        inputs: *const mlxs_vec,
        outputs: *mut mlxs_vec,
    ) -> c_int;
    pub fn mlxs_compiled_free(f: *mut mlxs_compiled);
    pub fn mlxs_set_compile_enabled(enabled: c_int);
    pub fn mlxs_checkpoint(
        f: mlxs_closure_fn,
        ctx: *mut c_void,
        drop_ctx: unsafe extern "C" fn(*mut c_void),
    ) -> *mut mlxs_checkpointed;
    pub fn mlxs_checkpointed_call(
        f: *mut mlxs_checkpointed,
        inputs: *const mlxs_vec,
        outputs: *mut mlxs_vec,
    ) -> c_int;
    pub fn mlxs_checkpointed_free(f: *mut mlxs_checkpointed);

    pub fn mlxs_load_safetensors(
        path: *const c_char,
        names: *mut mlxs_strings,
        arrays: *mut mlxs_vec,
        meta_keys: *mut mlxs_strings,
        meta_values: *mut mlxs_strings,
    ) -> c_int;
    pub fn mlxs_save_safetensors(
        path: *const c_char,
        names: *const mlxs_strings,
        arrays: *const mlxs_vec,
        meta_keys: *const mlxs_strings,
        meta_values: *const mlxs_strings,
    ) -> c_int;
    pub fn mlxs_load_gguf(path: *const c_char) -> *mut mlxs_gguf;
    pub fn mlxs_gguf_free(g: *mut mlxs_gguf);
    pub fn mlxs_gguf_n_tensors(g: *const mlxs_gguf) -> usize;
    pub fn mlxs_gguf_tensor_name(g: *const mlxs_gguf, i: usize) -> *const c_char;
    pub fn mlxs_gguf_tensor(g: *const mlxs_gguf, i: usize) -> A;
    pub fn mlxs_gguf_n_meta(g: *const mlxs_gguf) -> usize;
    pub fn mlxs_gguf_meta_key(g: *const mlxs_gguf, i: usize) -> *const c_char;
    pub fn mlxs_gguf_meta_kind(g: *const mlxs_gguf, i: usize) -> c_int;
    pub fn mlxs_gguf_meta_array(g: *const mlxs_gguf, i: usize) -> A;
    pub fn mlxs_gguf_meta_string(g: *const mlxs_gguf, i: usize, len: *mut usize) -> *const c_char;
    pub fn mlxs_gguf_meta_strings_len(g: *const mlxs_gguf, i: usize) -> usize;
    pub fn mlxs_gguf_meta_strings_get(
        g: *const mlxs_gguf,
        i: usize,
        j: usize,
        len: *mut usize,
    ) -> *const c_char;
    pub fn mlxs_save_gguf(
        path: *const c_char,
        names: *const mlxs_strings,
        arrays: *const mlxs_vec,
        meta_keys: *const mlxs_strings,
        meta_values: *const mlxs_strings,
    ) -> c_int;
}
