//! This machine as MLX sees it — the MLX linked, the device in use, its BLAS,
//! physical memory, the GPU's limits, the host name — and the one device setting
//! (`auto`, `cpu`, `gpu`). One description ([`HostInfo`]) for `doctor`, workers'
//! capabilities, lineage, serving's memory budget, `/metrics` and the UI's system page.

use std::str::FromStr;

use mlx::system::Device;
use serde::Serialize;

/// Which device MLX computes on: `auto` is the GPU when this MLX has one (Metal on a
/// Mac, CUDA), else the CPU. Our quantized CPU kernels run only on the CPU device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceSetting {
    #[default]
    Auto,
    Cpu,
    Gpu,
}

impl FromStr for DeviceSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(DeviceSetting::Auto),
            "cpu" => Ok(DeviceSetting::Cpu),
            "gpu" | "metal" => Ok(DeviceSetting::Gpu),
            other => Err(format!("device {other:?}: expected auto, cpu or gpu")),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl DeviceSetting {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceSetting::Auto => "auto",
            DeviceSetting::Cpu => "cpu",
            DeviceSetting::Gpu => "gpu",
        }
    }

    /// The flag if given, else `MLX_HUB_DEVICE` if set (`None`: neither).
    pub fn from_flag_or_env(
        flag: Option<DeviceSetting>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<DeviceSetting>, String> {
        match flag {
            Some(d) => Ok(Some(d)),
            None => env("MLX_HUB_DEVICE")
                .filter(|v| !v.is_empty())
                .map(|v| v.parse().map_err(|e| format!("MLX_HUB_DEVICE: {e}")))
                .transpose(),
        }
    }

    /// The device this setting means here; `gpu` on an MLX without one is an error.
    pub fn resolve(self) -> Result<Device, String> {
        let gpu = Device::Gpu.is_available();
        match self {
            DeviceSetting::Auto if gpu => Ok(Device::Gpu),
            DeviceSetting::Auto | DeviceSetting::Cpu => Ok(Device::Cpu),
            DeviceSetting::Gpu if gpu => Ok(Device::Gpu),
            DeviceSetting::Gpu => Err(
                "device gpu: this MLX has no GPU backend (Metal needs the `mlx-metal` build on \
                 macOS; the Linux `mlx-cpu` wheel is CPU only)"
                    .into(),
            ),
        }
    }

    /// Makes the resolved device MLX's default for everything computed after the call
    /// (MLX's default device is process-wide). Call once, at start-up.
    pub fn apply(self) -> Result<Device, String> {
        let device = self.resolve()?;
        mlx::system::set_default_device(device).map_err(|e| e.to_string())?;
        Ok(device)
    }
}

/// The GPU's limits as Metal reports them (bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuInfo {
    pub name: Option<String>,
    pub architecture: Option<String>,
    /// What Metal recommends as the most a process keeps resident on the GPU.
    pub max_recommended_working_set_bytes: Option<u64>,
    pub max_buffer_length_bytes: Option<u64>,
    /// Metal's cap on the number of buffers (`iogpu.rsrc_limit`).
    pub resource_limit: Option<u64>,
}

/// The hub's commit (build time: `$MLX_HUB_COMMIT` or `git rev-parse HEAD`).
pub const GIT_COMMIT: &str = env!("MLX_HUB_GIT_COMMIT");
/// sha256 of the workspace's `Cargo.lock` at build time.
pub const CARGO_LOCK_SHA256: &str = env!("MLX_HUB_CARGO_LOCK_SHA256");

/// This machine: the MLX linked, the device MLX uses, its name, the BLAS,
/// physical memory, the GPU's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    /// The MLX library linked (`mlx::system::PINNED_VERSION` is the one built for).
    pub mlx_version: String,
    /// The BLAS MLX uses on the CPU: `kind (library)`.
    pub blas: String,
    pub arch: &'static str,
    pub os: &'static str,
    pub hostname: String,
    /// `cpu` or `gpu`: MLX's default device now.
    pub device: &'static str,
    pub gpu_available: bool,
    /// The device's name (`Apple M4 Pro`, or the CPU's model).
    pub device_name: Option<String>,
    pub architecture: Option<String>,
    /// Physical memory (unified memory on Apple Silicon).
    pub memory_bytes: Option<u64>,
    /// Present when MLX has a GPU.
    pub gpu: Option<GpuInfo>,
}

impl HostInfo {
    pub fn detect() -> HostInfo {
        let device = mlx::system::default_device();
        let gpu = gpu_info();
        let info = mlx::system::device_info(device).unwrap_or_default();
        let blas = mlx::system::blas();
        HostInfo {
            mlx_version: mlx::system::version(),
            blas: if blas.library.is_empty() {
                blas.kind.to_string()
            } else {
                format!("{} ({})", blas.kind, blas.library)
            },
            arch: std::env::consts::ARCH,
            os: std::env::consts::OS,
            hostname: hostname(),
            device: device.name(),
            gpu_available: gpu.is_some(),
            device_name: info.name().map(str::to_string),
            architecture: info.get("architecture").map(str::to_string),
            memory_bytes: memory_bytes(),
            gpu,
        }
    }
}

/// This machine's name (`localhost` when it has none usable).
pub fn hostname() -> String {
    Some(
        gethostname::gethostname()
            .to_string_lossy()
            .trim()
            .to_string(),
    )
    .filter(|h| !h.is_empty() && !h.contains('/') && !h.chars().any(char::is_control))
    .unwrap_or_else(|| "localhost".into())
}

/// What this machine offers as a job worker: MLX's default device, the
/// machine's physical memory, the linked MLX version.
pub fn worker_capabilities() -> crate::store::WorkerCapabilities {
    use crate::store::DeviceKind;
    crate::store::WorkerCapabilities {
        device: match mlx::system::default_device() {
            Device::Gpu => DeviceKind::Gpu,
            Device::Cpu => DeviceKind::Cpu,
        },
        memory_bytes: memory_bytes().unwrap_or(0),
        mlx_version: mlx::system::version(),
    }
}

/// MLX's GPU description, when this MLX has a GPU.
pub fn gpu_info() -> Option<GpuInfo> {
    if !Device::Gpu.is_available() {
        return None;
    }
    let info = mlx::system::device_info(Device::Gpu).ok()?;
    Some(GpuInfo {
        name: info.name().map(str::to_string),
        architecture: info.get("architecture").map(str::to_string),
        max_recommended_working_set_bytes: info.max_recommended_working_set_size(),
        max_buffer_length_bytes: info.number("max_buffer_length"),
        resource_limit: info.number("resource_limit"),
    })
}

/// Physical memory of this machine: `MemTotal` of `/proc/meminfo` on Linux; on macOS
/// the unified memory MLX's Metal backend reports (`hw.memsize`), else `sysctl`.
pub fn memory_bytes() -> Option<u64> {
    if cfg!(target_os = "linux") {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
        let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
        return Some(kib * 1024);
    }
    if let Some(bytes) = Device::Gpu
        .is_available()
        .then(|| mlx::system::device_info(Device::Gpu).ok())
        .flatten()
        .and_then(|i| i.memory_size())
    {
        return Some(bytes);
    }
    let out = std::process::Command::new("sysctl")
        .args(["-n", "hw.memsize"])
        .output()
        .ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

/// The default memory budget for loaded models: on a GPU, Metal's recommended working
/// set (what fits without paging; mlx-lm warns past 90% of it); on the CPU, three
/// quarters of physical memory; 8 GiB when neither is known.
pub fn default_memory_budget() -> u64 {
    const FALLBACK: u64 = 8 << 30;
    if mlx::system::default_device() == Device::Gpu
        && let Some(set) = gpu_info().and_then(|g| g.max_recommended_working_set_bytes)
    {
        return set;
    }
    memory_bytes().map_or(FALLBACK, |m| m / 4 * 3)
}

/// As mlx-lm does on Metal before it generates or trains: keep up to the recommended
/// working set wired, so the weights are not paged out between steps; warn when the
/// model alone is past 90% of it. Does nothing off the GPU. Returns the limit set.
pub fn wire_gpu_memory(model_bytes: u64) -> Option<u64> {
    if mlx::system::default_device() != Device::Gpu {
        return None;
    }
    let set = gpu_info()?.max_recommended_working_set_bytes?;
    if model_bytes as f64 > 0.9 * set as f64 {
        tracing::warn!(
            model_mb = model_bytes >> 20,
            recommended_mb = set >> 20,
            "the model needs close to the GPU's maximum recommended working set: this can be \
             slow (raise it with `sudo sysctl iogpu.wired_limit_mb=…`)"
        );
    }
    match mlx::system::set_wired_limit(set as usize) {
        Ok(_) => Some(set),
        Err(e) => {
            tracing::warn!(error = %e, "could not set MLX's wired memory limit");
            None
        }
    }
}

/// [`wire_gpu_memory`] for the model in `dir` (its weight files' size).
pub fn wire_gpu_memory_for(dir: &std::path::Path) -> Option<u64> {
    if mlx::system::default_device() != Device::Gpu {
        return None;
    }
    let bytes = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    wire_gpu_memory(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_setting_parses_and_resolves() {
        assert_eq!("AUTO".parse(), Ok(DeviceSetting::Auto));
        assert_eq!("cpu".parse(), Ok(DeviceSetting::Cpu));
        assert_eq!("metal".parse(), Ok(DeviceSetting::Gpu));
        assert!(
            "tpu"
                .parse::<DeviceSetting>()
                .unwrap_err()
                .contains("auto, cpu or gpu")
        );
        assert_eq!(DeviceSetting::Cpu.resolve(), Ok(Device::Cpu));
        let gpu = Device::Gpu.is_available();
        assert_eq!(
            DeviceSetting::Auto.resolve(),
            Ok(if gpu { Device::Gpu } else { Device::Cpu })
        );
        assert_eq!(DeviceSetting::Gpu.resolve().is_ok(), gpu);
    }

    #[test]
    fn host_is_described() {
        let h = HostInfo::detect();
        assert!(h.memory_bytes.is_some_and(|m| m > 1 << 28), "{h:?}");
        assert_eq!(h.gpu.is_some(), h.gpu_available);
        assert!(h.device_name.is_some(), "{h:?}");
        assert!(default_memory_budget() > 1 << 27);
    }
}
