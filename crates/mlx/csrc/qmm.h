// Our CPU affine quantized matmul (qmm.cpp), used by mlxs_quantized_matmul.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "mlx/array.h"

namespace mlxs_qmm {

// Same contract as mx::quantized_matmul. On a CPU stream, for affine 4/8-bit weights with
// groups of 32/64/128 in the transposed form (`x @ dequantize(w).T`, what Linear layers
// use) the result is computed by our primitive; otherwise (GPU streams, other modes or
// bits, the non-transposed form) it is MLX's own op. MLX_HUB_QMM=mlx turns ours off.
mlx::core::array quantized_matmul(
    const mlx::core::array& x,
    const mlx::core::array& w,
    const mlx::core::array& scales,
    const std::optional<mlx::core::array>& biases,
    bool transpose,
    int group_size,
    int bits,
    const std::string& mode);

// The best kernel this CPU runs: "avx2-fma", "neon", "scalar", or "mlx" when the
// fast path is turned off (force_portable does not change it).
const char* kernel_name();
// Threads of the kernels' pool (MLX_HUB_CPU_THREADS, else the CPUs this process may use).
int threads();
bool fast_path_disabled();
// How many products our kernels have computed in this process.
uint64_t calls();
// Use the portable scalar kernel even where SIMD is available (tests compare both).
void force_portable(bool on);

}  // namespace mlxs_qmm
