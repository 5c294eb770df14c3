//! Devices, memory statistics and what this build of MLX is.

use std::ffi::CStr;

use crate::error::{Result, check};
use crate::ffi;

/// Where MLX runs operations by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Gpu,
}

impl Device {
    fn code(self) -> i32 {
        match self {
            Device::Cpu => 0,
            Device::Gpu => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }

    /// Whether this build of MLX can run on the device here (Metal or CUDA for GPU).
    pub fn is_available(self) -> bool {
        unsafe { ffi::mlxs_device_available(self.code()) != 0 }
    }
}

/// MLX's description of a device. On Metal: `device_name` (e.g. `Apple M4 Pro`),
/// `architecture`, `memory_size` (the machine's unified memory),
/// `max_recommended_working_set_size`, `max_buffer_length`, `resource_limit`; on the
/// CPU: `device_name` and `architecture`. Keys vary by backend, so all are kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    pub entries: std::collections::BTreeMap<String, String>,
}

impl DeviceInfo {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// A numeric property (sizes are in bytes).
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    pub fn name(&self) -> Option<&str> {
        self.get("device_name")
    }

    /// Total memory MLX sees for the device (`memory_size`, or CUDA's `total_memory`).
    pub fn memory_size(&self) -> Option<u64> {
        self.number("memory_size")
            .or_else(|| self.number("total_memory"))
    }

    /// Metal's recommended ceiling for the memory a process keeps wired on the GPU.
    pub fn max_recommended_working_set_size(&self) -> Option<u64> {
        self.number("max_recommended_working_set_size")
    }
}

/// What MLX reports about `device` (an error if this build has no such device).
pub fn device_info(device: Device) -> Result<DeviceInfo> {
    let text = unsafe { ffi::mlxs_device_info(device.code()) };
    if text.is_null() {
        return Err(crate::Error::last());
    }
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let entries = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(DeviceInfo { entries })
}

pub fn default_device() -> Device {
    if unsafe { ffi::mlxs_default_device() } == 1 {
        Device::Gpu
    } else {
        Device::Cpu
    }
}

/// Sets the default device for operations created after the call.
pub fn set_default_device(device: Device) -> Result<()> {
    check(unsafe { ffi::mlxs_set_default_device(device.code()) })
}

/// MLX's memory figures, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStats {
    /// Memory held by live arrays.
    pub active: usize,
    /// The most `active` has been since start or the last `reset_peak_memory`.
    pub peak: usize,
    /// Freed buffers kept for reuse.
    pub cache: usize,
    /// The limit MLX tries to stay under when evaluating graphs.
    pub limit: usize,
}

pub fn memory_stats() -> MemoryStats {
    unsafe {
        MemoryStats {
            active: ffi::mlxs_active_memory(),
            peak: ffi::mlxs_peak_memory(),
            cache: ffi::mlxs_cache_memory(),
            limit: ffi::mlxs_memory_limit(),
        }
    }
}

pub fn reset_peak_memory() {
    unsafe { ffi::mlxs_reset_peak_memory() }
}

/// Sets the memory limit; returns the previous one.
pub fn set_memory_limit(bytes: usize) -> usize {
    unsafe { ffi::mlxs_set_memory_limit(bytes) }
}

/// Sets how much freed memory MLX keeps cached (0 disables the cache); returns the
/// previous limit.
pub fn set_cache_limit(bytes: usize) -> usize {
    unsafe { ffi::mlxs_set_cache_limit(bytes) }
}

/// Sets how much memory MLX keeps wired (resident) for the GPU; returns the previous
/// limit. Only Metal on macOS 15+ acts on it (elsewhere it is a no-op returning 0);
/// a limit above the system's wired limit is an error. mlx-lm sets it to the device's
/// `max_recommended_working_set_size` while it generates.
pub fn set_wired_limit(bytes: usize) -> Result<usize> {
    let mut previous = 0usize;
    check(unsafe { ffi::mlxs_set_wired_limit(bytes, &mut previous) })?;
    Ok(previous)
}

/// Returns cached buffers to the system.
pub fn clear_cache() {
    unsafe { ffi::mlxs_clear_cache() }
}

/// The version of libmlx this process runs on (e.g. `0.32.4`).
pub fn version() -> String {
    unsafe { CStr::from_ptr(ffi::mlxs_version()) }
        .to_string_lossy()
        .into_owned()
}

/// The version this crate was built against (the pin in `build.rs`).
pub const PINNED_VERSION: &str = env!("MLX_HUB_MLX_PIN");

/// The folder libmlx was linked from at build time.
pub const LIB_DIR: &str = env!("MLX_HUB_MLX_LIB_DIR");

/// How the build found MLX (`MLX_DIR`, python, or the wheel cache).
pub const SOURCE: &str = env!("MLX_HUB_MLX_SOURCE");

/// Which BLAS MLX's CPU matmuls call, found at run time from the library the
/// dynamic loader bound `cblas_sgemm` to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlasInfo {
    /// `openblas`, `accelerate`, `reference` (the MLX wheel's own) or `other`.
    pub kind: &'static str,
    /// The shared library providing `cblas_sgemm`.
    pub library: String,
    /// OpenBLAS's build configuration, when OpenBLAS was linked in.
    pub detail: String,
    pub threads: i32,
}

pub fn blas() -> BlasInfo {
    let library = unsafe { CStr::from_ptr(ffi::mlxs_blas_library()) }
        .to_string_lossy()
        .into_owned();
    let detail = unsafe { CStr::from_ptr(ffi::mlxs_blas_name()) }
        .to_string_lossy()
        .trim()
        .to_string();
    let file = library
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    let kind = if file.contains("openblas") {
        "openblas"
    } else if library.contains("Accelerate") || library.contains("vecLib") {
        "accelerate"
    } else if library.contains("mlx_cpu.libs") || file.starts_with("libblas") {
        "reference"
    } else if cfg!(target_os = "macos") && library.is_empty() {
        "accelerate"
    } else {
        "other"
    };
    let threads = if kind == "openblas" {
        unsafe { ffi::mlxs_blas_threads() }
    } else {
        1
    };
    BlasInfo {
        kind,
        library,
        detail,
        threads,
    }
}

/// Whether OpenBLAS was linked ahead of libmlx at build time.
pub const OPENBLAS_LINKED: bool = cfg!(mlx_openblas);

/// Sets the number of OpenBLAS threads (no effect with other BLAS libraries).
pub fn set_blas_threads(n: i32) {
    unsafe { ffi::mlxs_blas_set_threads(n) }
}

/// The MLX wheel's own reference BLAS (Linux wheels ship it beside libmlx), used to
/// measure what linking OpenBLAS gains.
pub fn reference_blas_library() -> Option<std::path::PathBuf> {
    let libs = std::path::Path::new(LIB_DIR).join("../../mlx_cpu.libs");
    std::fs::read_dir(libs)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libblas") && n.contains(".so"))
        })
}

/// Re-runs this program with `args` and the wheel's reference BLAS preloaded (the
/// dynamic loader then binds libmlx's `cblas_*` calls to it) and reads what it
/// prints: the BLAS kind, then figures. `Ok(None)` when the wheel ships no
/// reference BLAS (macOS, or a libmlx not from a wheel). For benchmarks.
pub fn run_self_with_reference_blas(
    args: &[&str],
) -> std::result::Result<Option<(String, Vec<f64>)>, String> {
    let Some(lib) = reference_blas_library() else {
        return Ok(None);
    };
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(args)
        .env("LD_PRELOAD", &lib)
        .output()
        .map_err(|e| format!("running the stock-BLAS measurement: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "stock-BLAS run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let kind = parts.next().unwrap_or("unknown").to_string();
    let values = parts
        .map(|v| {
            v.parse::<f64>()
                .map_err(|e| format!("stock-BLAS run printed {v:?}: {e}"))
        })
        .collect::<std::result::Result<Vec<f64>, String>>()?;
    Ok(Some((kind, values)))
}

/// Measures `n × n` float32 matmul throughput on the default device, in GFLOP/s
/// (best of `repeats` timed runs after one warm-up).
pub fn matmul_gflops(n: i32, repeats: usize) -> Result<f64> {
    use crate::{Dtype, random};
    let key = random::Key::new(0)?;
    let (ka, kb) = key.split()?;
    let a = random::normal(&[n, n], Dtype::Float32, 0.0, 1.0, Some(&ka))?;
    let b = random::normal(&[n, n], Dtype::Float32, 0.0, 1.0, Some(&kb))?;
    crate::eval([&a, &b])?;
    a.matmul(&b)?.eval()?;
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let start = std::time::Instant::now();
        a.matmul(&b)?.eval()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (n as f64).powi(3) / best / 1e9)
}
