// Our CPU affine quantized matmul (qmm.cpp), used by mlxs_quantized_matmul.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "mlx/array.h"
#include "shim.h"

namespace mlxs_qmm {

// Same contract as mx::quantized_matmul. On a CPU stream, for affine 4/8-bit weights with
// groups of 32/64/128 in the transposed form (`x @ dequantize(w).T`, what Linear layers
// use) the result is computed by our primitive; otherwise (GPU streams, other modes or
// bits, the non-transposed form) it is MLX's own op. configure_fast_path(false) turns ours off.
mlx::core::array quantized_matmul(
    const mlx::core::array& x,
    const mlx::core::array& w,
    const mlx::core::array& scales,
    const std::optional<mlx::core::array>& biases,
    bool transpose,
    int group_size,
    int bits,
    const std::string& mode);

using LinearSpec = mlxs_linear_spec;
using DecodeLayerSpec = mlxs_decode_spec;

// One decode position of a Llama block (RMSNorm, q/k/v, optional q/k norms, RoPE, the KV
// cache write, attention, o_proj, residual, RMSNorm, SwiGLU MLP, residual) for each of
// `offsets.size()` sequences as ONE MLX node, float32 throughout, with our kernels for the
// seven quantized projections (q/k/v and gate/up each run as one thread-pool job, all rows
// reading each weight once). Inputs and outputs: see mlxs_decode_layer.
std::vector<mlx::core::array> decode_layer(
    std::vector<mlx::core::array> inputs, const DecodeLayerSpec& spec,
    const std::vector<int>& offsets, const std::vector<int>& copy);
// Whether decode_layer can run (MLX's default device is the CPU, our kernels are on).
bool decode_layer_available();
// How many decode_layer nodes have run in this process.
uint64_t decode_layer_calls();

// The best kernel this CPU runs: "avx2-fma", "neon", "scalar", or "mlx" when the
// fast path is turned off (force_portable does not change it).
const char* kernel_name();
// Threads of the kernels' pool (configure_threads, else the CPUs this process may use).
int threads();
// The pool's thread count (1..256; 0 = the CPUs this process may use). Only a call before
// the pool's first use counts: the pool starts once.
void configure_threads(int n);
// Our kernels on (the default) or off (MLX's own quantized matmul everywhere).
void configure_fast_path(bool on);
// Runs `rounds` pool jobs of varying sizes; returns how many chunk counts were wrong.
int64_t pool_self_check(int rounds);
bool fast_path_disabled();
// How many products our kernels have computed in this process.
uint64_t calls();
// Use the portable scalar kernel even where SIMD is available (tests compare both).
void force_portable(bool on);

}  // namespace mlxs_qmm
