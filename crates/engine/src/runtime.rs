//! Process-wide settings of how the engine computes. The engine reads no environment:
//! the caller's config layer (the hub's `config`, which reads `MLX_HUB_FUSED_DECODE`,
//! `MLX_HUB_CPU_THREADS` and `MLX_HUB_QMM`) builds these and applies them once at
//! start-up.

use mlx::quantization::CpuKernelSettings;

/// What the engine and its kernels run with; the default is what runs unconfigured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// One fused node per block for a one-token decode step (see
    /// [`crate::models::set_fused_decode`]); both ways compute the same tokens.
    pub fused_decode: bool,
    /// Threads and kernel choice of the CPU quantized matmul.
    pub cpu_kernels: CpuKernelSettings,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            fused_decode: true,
            cpu_kernels: CpuKernelSettings::default(),
        }
    }
}

impl RuntimeSettings {
    /// Applies the settings process-wide; call it before the first model runs (the
    /// kernels' thread count is fixed once their pool starts).
    pub fn apply(&self) {
        crate::models::set_fused_decode(self.fused_decode);
        mlx::quantization::configure_cpu_kernels(self.cpu_kernels);
    }
}
