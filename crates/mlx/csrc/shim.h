// The C ABI between Rust and MLX's C++ API. One function per operation; every
// function catches C++ exceptions and reports them through mlxs_last_error(),
// so no exception ever crosses into Rust.
//
// Conventions: functions returning mlxs_array* return a new owned handle, or NULL on
// error. Functions returning int return 0 on success, nonzero on error.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mlxs_array mlxs_array;       // an mlx::core::array
typedef struct mlxs_vec mlxs_vec;           // a std::vector<array>
typedef struct mlxs_strings mlxs_strings;   // a std::vector<std::string>
typedef struct mlxs_compiled mlxs_compiled; // a compiled function
typedef struct mlxs_gguf mlxs_gguf;         // a loaded GGUF file
typedef struct mlxs_checkpointed mlxs_checkpointed; // a function recomputed in backward

// A Rust closure: reads `inputs`, pushes its results to `outputs`; returns 0, or
// nonzero after setting the message with mlxs_set_error.
typedef int (*mlxs_closure_fn)(void* ctx, const mlxs_vec* inputs, mlxs_vec* outputs);

const char* mlxs_last_error(void);
void mlxs_set_error(const char* message);

// ----- info, devices, memory
const char* mlxs_version(void);
const char* mlxs_blas_name(void);
const char* mlxs_blas_library(void);
int mlxs_blas_threads(void);
void mlxs_blas_set_threads(int n);
int mlxs_default_device(void); // 0 cpu, 1 gpu
int mlxs_set_default_device(int kind);
int mlxs_device_available(int kind);
// MLX's description of a device as "key\tvalue\n" lines (numbers in decimal); null on error.
const char* mlxs_device_info(int kind);
size_t mlxs_active_memory(void);
size_t mlxs_peak_memory(void);
size_t mlxs_cache_memory(void);
void mlxs_reset_peak_memory(void);
size_t mlxs_memory_limit(void);
size_t mlxs_set_memory_limit(size_t limit);
size_t mlxs_set_cache_limit(size_t limit);
int mlxs_set_wired_limit(size_t limit, size_t* previous);
void mlxs_clear_cache(void);

// ----- arrays
mlxs_array* mlxs_array_from_data(const void* data, const int32_t* shape, size_t ndim, int dtype);
mlxs_array* mlxs_array_scalar(double value, int dtype);
mlxs_array* mlxs_array_clone(const mlxs_array* a);
void mlxs_array_free(mlxs_array* a);
size_t mlxs_array_ndim(const mlxs_array* a);
void mlxs_array_shape(const mlxs_array* a, int32_t* out);
size_t mlxs_array_size(const mlxs_array* a);
int mlxs_array_dtype(const mlxs_array* a);
size_t mlxs_array_nbytes(const mlxs_array* a);
int mlxs_array_copy_out(const mlxs_array* a, void* dst, size_t nbytes);
char* mlxs_array_to_string(const mlxs_array* a);
void mlxs_string_free(char* s);
int mlxs_eval(const mlxs_array* const* arrays, size_t n);
int mlxs_async_eval(const mlxs_array* const* arrays, size_t n);

// ----- vectors of arrays / strings
mlxs_vec* mlxs_vec_new(void);
void mlxs_vec_free(mlxs_vec* v);
void mlxs_vec_push(mlxs_vec* v, const mlxs_array* a);
size_t mlxs_vec_len(const mlxs_vec* v);
mlxs_array* mlxs_vec_get(const mlxs_vec* v, size_t i);
mlxs_strings* mlxs_strings_new(void);
void mlxs_strings_free(mlxs_strings* s);
void mlxs_strings_push(mlxs_strings* s, const char* data, size_t len);
size_t mlxs_strings_len(const mlxs_strings* s);
const char* mlxs_strings_get(const mlxs_strings* s, size_t i, size_t* len);

// ----- element-wise
mlxs_array* mlxs_unary(int op, const mlxs_array* a);
mlxs_array* mlxs_binary(int op, const mlxs_array* a, const mlxs_array* b);
mlxs_array* mlxs_where(const mlxs_array* cond, const mlxs_array* a, const mlxs_array* b);
mlxs_array* mlxs_astype(const mlxs_array* a, int dtype);
mlxs_array* mlxs_clip(const mlxs_array* a, const mlxs_array* lo, const mlxs_array* hi);
mlxs_array* mlxs_round(const mlxs_array* a, int decimals);

// ----- reductions and scans
mlxs_array* mlxs_reduce(int op, const mlxs_array* a, const int32_t* axes, size_t n, int all_axes, int keepdims);
mlxs_array* mlxs_arg_reduce(int op, const mlxs_array* a, int axis, int all_axes, int keepdims);
mlxs_array* mlxs_softmax(const mlxs_array* a, const int32_t* axes, size_t n, int precise);
mlxs_array* mlxs_scan(int op, const mlxs_array* a, int axis, int reverse, int inclusive);
mlxs_array* mlxs_var(const mlxs_array* a, const int32_t* axes, size_t n, int keepdims, int ddof);

// ----- shapes and indexing
mlxs_array* mlxs_reshape(const mlxs_array* a, const int32_t* shape, size_t n);
mlxs_array* mlxs_transpose(const mlxs_array* a, const int32_t* axes, size_t n, int reverse);
mlxs_array* mlxs_swapaxes(const mlxs_array* a, int axis1, int axis2);
mlxs_array* mlxs_expand_dims(const mlxs_array* a, const int32_t* axes, size_t n);
mlxs_array* mlxs_squeeze(const mlxs_array* a, const int32_t* axes, size_t n, int all_axes);
mlxs_array* mlxs_broadcast_to(const mlxs_array* a, const int32_t* shape, size_t n);
mlxs_array* mlxs_flatten(const mlxs_array* a, int start_axis, int end_axis);
mlxs_array* mlxs_slice(const mlxs_array* a, const int32_t* start, const int32_t* stop, const int32_t* strides, size_t n);
mlxs_array* mlxs_slice_update(const mlxs_array* src, const mlxs_array* update, const int32_t* start, const int32_t* stop, const int32_t* strides, size_t n);
mlxs_array* mlxs_concatenate(const mlxs_array* const* arrays, size_t n, int axis);
mlxs_array* mlxs_stack(const mlxs_array* const* arrays, size_t n, int axis);
int mlxs_split(const mlxs_array* a, const int32_t* indices, size_t n_indices, int sections, int axis, mlxs_vec* out);
mlxs_array* mlxs_take(const mlxs_array* a, const mlxs_array* indices, int axis, int flat);
mlxs_array* mlxs_take_along_axis(const mlxs_array* a, const mlxs_array* indices, int axis);
mlxs_array* mlxs_put_along_axis(const mlxs_array* a, const mlxs_array* indices, const mlxs_array* values, int axis);
mlxs_array* mlxs_scatter_add_axis(const mlxs_array* a, const mlxs_array* indices, const mlxs_array* values, int axis);
mlxs_array* mlxs_sort(const mlxs_array* a, int axis, int arg);
mlxs_array* mlxs_partition(const mlxs_array* a, int kth, int axis, int arg);
mlxs_array* mlxs_topk(const mlxs_array* a, int k, int axis);
mlxs_array* mlxs_pad(const mlxs_array* a, const int32_t* axes, const int32_t* low, const int32_t* high, size_t n, const mlxs_array* value);
mlxs_array* mlxs_repeat(const mlxs_array* a, int repeats, int axis);
mlxs_array* mlxs_tile(const mlxs_array* a, const int32_t* reps, size_t n);
mlxs_array* mlxs_tri(const mlxs_array* a, int k, int upper);
mlxs_array* mlxs_contiguous(const mlxs_array* a);

// ----- constructors
mlxs_array* mlxs_full(const int32_t* shape, size_t n, const mlxs_array* value, int dtype);
mlxs_array* mlxs_arange(double start, double stop, double step, int dtype);
mlxs_array* mlxs_linspace(double start, double stop, int num, int dtype);
mlxs_array* mlxs_eye(int n, int m, int k, int dtype);

// ----- linear algebra
mlxs_array* mlxs_matmul(const mlxs_array* a, const mlxs_array* b);
mlxs_array* mlxs_addmm(const mlxs_array* c, const mlxs_array* a, const mlxs_array* b, float alpha, float beta);

// ----- fast kernels (optional arguments are NULL when absent; base is NaN when absent)
mlxs_array* mlxs_fast_rms_norm(const mlxs_array* x, const mlxs_array* weight, float eps);
mlxs_array* mlxs_fast_layer_norm(const mlxs_array* x, const mlxs_array* weight, const mlxs_array* bias, float eps);
mlxs_array* mlxs_fast_rope(const mlxs_array* x, int dims, int traditional, float base, float scale, int offset, const mlxs_array* offset_array, const mlxs_array* freqs);
mlxs_array* mlxs_fast_sdpa(const mlxs_array* q, const mlxs_array* k, const mlxs_array* v, float scale, const char* mask_mode, const mlxs_array* mask);

// ----- quantization
int mlxs_quantize(const mlxs_array* w, int group_size, int bits, const char* mode, mlxs_vec* out);
mlxs_array* mlxs_dequantize(const mlxs_array* w, const mlxs_array* scales, const mlxs_array* biases, int group_size, int bits, const char* mode, int dtype);
// On the CPU, affine 4/8-bit transposed products run our kernels (csrc/qmm.cpp).
mlxs_array* mlxs_quantized_matmul(const mlxs_array* x, const mlxs_array* w, const mlxs_array* scales, const mlxs_array* biases, int transpose, int group_size, int bits, const char* mode);
// Always MLX's own quantized matmul (the reference the fast path is tested against).
mlxs_array* mlxs_quantized_matmul_mlx(const mlxs_array* x, const mlxs_array* w, const mlxs_array* scales, const mlxs_array* biases, int transpose, int group_size, int bits, const char* mode);
// The CPU quantized-matmul kernel in use ("avx2-fma", "neon", "scalar", "mlx") and its threads.
const char* mlxs_qmm_kernel(void);
int mlxs_qmm_threads(void);
int64_t mlxs_qmm_pool_self_check(int rounds);
void mlxs_qmm_force_portable(int on);
// The kernels' settings, given once at start-up (see mlxs_qmm::configure_*).
void mlxs_qmm_configure(int threads, int fast_path);
uint64_t mlxs_qmm_calls(void);

// One decode position of a Llama block as one node (csrc/qmm.cpp, decode_layer).
typedef struct mlxs_linear_spec {
  int32_t bits;
  int32_t group_size;
  int32_t has_bias;
} mlxs_linear_spec;
typedef struct mlxs_decode_spec {
  int32_t dim, n_heads, n_kv_heads, head_dim, hidden;
  float eps, attn_scale;
  int32_t rope_dims, rope_traditional;
  float rope_base, rope_scale;
  int32_t rope_has_freqs, qk_norm;
  mlxs_linear_spec lin[7];  // q k v o gate up down
} mlxs_decode_spec;
// inputs: x [rows, 1, dim], per row keys and values, input norm, post norm, per linear
// weight scales biases [bias], [q norm, k norm], [rope freqs]; per row the position
// written and attended from, and whether its cache buffers may be shared (then copied
// before writing); outputs: y [like x], per row keys and values.
int mlxs_decode_layer(const mlxs_vec* inputs, const mlxs_decode_spec* spec,
                      const int32_t* offsets, const int32_t* copy, int32_t rows,
                      mlxs_vec* outputs);
int mlxs_decode_layer_available(void);
uint64_t mlxs_decode_layer_calls(void);

// ----- random (key may be NULL: MLX's global key)
mlxs_array* mlxs_random_key(uint64_t seed);
void mlxs_random_seed(uint64_t seed);
mlxs_array* mlxs_random_split(const mlxs_array* key, int num);
mlxs_array* mlxs_random_normal(const int32_t* shape, size_t n, int dtype, float loc, float scale, const mlxs_array* key);
mlxs_array* mlxs_random_uniform(const mlxs_array* low, const mlxs_array* high, const int32_t* shape, size_t n, int dtype, const mlxs_array* key);
mlxs_array* mlxs_random_randint(const mlxs_array* low, const mlxs_array* high, const int32_t* shape, size_t n, int dtype, const mlxs_array* key);
mlxs_array* mlxs_random_bernoulli(const mlxs_array* p, const int32_t* shape, size_t n, const mlxs_array* key);
mlxs_array* mlxs_random_categorical(const mlxs_array* logits, int axis, int num_samples, const mlxs_array* key);
mlxs_array* mlxs_random_gumbel(const int32_t* shape, size_t n, int dtype, const mlxs_array* key);
mlxs_array* mlxs_random_permutation(int n, const mlxs_array* key);

// ----- transforms
int mlxs_value_and_grad(mlxs_closure_fn fn, void* ctx, const mlxs_vec* inputs, const int32_t* argnums, size_t n_argnums, mlxs_vec* values, mlxs_vec* grads);
int mlxs_vjp(mlxs_closure_fn fn, void* ctx, const mlxs_vec* primals, const mlxs_vec* cotangents, mlxs_vec* outputs, mlxs_vec* vjps);
mlxs_compiled* mlxs_compile(mlxs_closure_fn fn, void* ctx, int shapeless);
int mlxs_compiled_call(mlxs_compiled* f, const mlxs_vec* inputs, mlxs_vec* outputs);
void mlxs_compiled_free(mlxs_compiled* f);
void mlxs_set_compile_enabled(int enabled);
// mx::checkpoint of a Rust closure. MLX keeps the function in the graph (its backward
// pass calls it again), so the shim owns `ctx` from here on and calls `drop_ctx(ctx)`
// when the last copy goes (also when this call fails).
mlxs_checkpointed* mlxs_checkpoint(mlxs_closure_fn fn, void* ctx, void (*drop_ctx)(void*));
int mlxs_checkpointed_call(mlxs_checkpointed* f, const mlxs_vec* inputs, mlxs_vec* outputs);
void mlxs_checkpointed_free(mlxs_checkpointed* f);

// ----- io
int mlxs_load_safetensors(const char* path, mlxs_strings* names, mlxs_vec* arrays, mlxs_strings* meta_keys, mlxs_strings* meta_values);
int mlxs_save_safetensors(const char* path, const mlxs_strings* names, const mlxs_vec* arrays, const mlxs_strings* meta_keys, const mlxs_strings* meta_values);
mlxs_gguf* mlxs_load_gguf(const char* path);
void mlxs_gguf_free(mlxs_gguf* g);
size_t mlxs_gguf_n_tensors(const mlxs_gguf* g);
const char* mlxs_gguf_tensor_name(const mlxs_gguf* g, size_t i);
mlxs_array* mlxs_gguf_tensor(const mlxs_gguf* g, size_t i);
size_t mlxs_gguf_n_meta(const mlxs_gguf* g);
const char* mlxs_gguf_meta_key(const mlxs_gguf* g, size_t i);
// 0 none, 1 array, 2 string, 3 list of strings
int mlxs_gguf_meta_kind(const mlxs_gguf* g, size_t i);
mlxs_array* mlxs_gguf_meta_array(const mlxs_gguf* g, size_t i);
const char* mlxs_gguf_meta_string(const mlxs_gguf* g, size_t i, size_t* len);
size_t mlxs_gguf_meta_strings_len(const mlxs_gguf* g, size_t i);
const char* mlxs_gguf_meta_strings_get(const mlxs_gguf* g, size_t i, size_t j, size_t* len);
int mlxs_save_gguf(const char* path, const mlxs_strings* names, const mlxs_vec* arrays, const mlxs_strings* meta_keys, const mlxs_strings* meta_values);

#ifdef __cplusplus
}
#endif
