//! `mlx-hub doctor`: what MLX sees on this machine.

use mlx::system::{self, Device};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    hub_version: &'static str,
    hub_commit: &'static str,
    mlx_version: String,
    mlx_pinned: &'static str,
    mlx_library: &'static str,
    mlx_found_via: &'static str,
    default_device: &'static str,
    gpu_available: bool,
    /// The device's name, architecture, physical memory and (with a GPU) Metal's limits.
    host: hub::host::HostInfo,
    blas: &'static str,
    blas_library: String,
    blas_detail: String,
    blas_threads: i32,
    openblas_linked: bool,
    /// Our CPU quantized-matmul kernel: `avx2-fma`, `neon`, `scalar`, or `mlx` (off).
    quantized_kernel: String,
    quantized_threads: i32,
    memory_limit_bytes: usize,
    active_memory_bytes: usize,
    peak_memory_bytes: usize,
    cache_memory_bytes: usize,
    warnings: Vec<String>,
}

fn report() -> Report {
    let blas = system::blas();
    let qk = mlx::quantization::cpu_kernel();
    let mem = system::memory_stats();
    let mut warnings = Vec::new();
    let version = system::version();
    if version != system::PINNED_VERSION {
        warnings.push(format!(
            "libmlx {version} is not the pinned {}",
            system::PINNED_VERSION
        ));
    }
    if cfg!(target_os = "linux") && blas.kind != "openblas" {
        warnings.push(
            "MLX is using the wheel's reference BLAS: CPU matmul is ~20x slower. \
             Install OpenBLAS (apt-get install libopenblas-dev) and rebuild."
                .to_string(),
        );
    }
    Report {
        hub_version: env!("CARGO_PKG_VERSION"),
        hub_commit: env!("MLX_HUB_GIT_COMMIT"),
        mlx_version: version,
        mlx_pinned: system::PINNED_VERSION,
        mlx_library: system::LIB_DIR,
        mlx_found_via: system::SOURCE,
        default_device: system::default_device().name(),
        gpu_available: Device::Gpu.is_available(),
        host: hub::host::HostInfo::detect(),
        blas: blas.kind,
        blas_library: blas.library,
        blas_detail: blas.detail,
        blas_threads: blas.threads,
        openblas_linked: system::OPENBLAS_LINKED,
        quantized_kernel: qk.name,
        quantized_threads: qk.threads,
        memory_limit_bytes: mem.limit,
        active_memory_bytes: mem.active,
        peak_memory_bytes: mem.peak,
        cache_memory_bytes: mem.cache,
        warnings,
    }
}

fn gib(bytes: usize) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let r = report();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!("mlx-hub        {} (commit {})", r.hub_version, r.hub_commit);
    println!("MLX            {} (pinned {})", r.mlx_version, r.mlx_pinned);
    println!(
        "  library      {} (found via {})",
        r.mlx_library, r.mlx_found_via
    );
    println!(
        "  device       {}{} (GPU available: {}; --device / MLX_HUB_DEVICE to choose)",
        r.default_device,
        r.host
            .device_name
            .as_ref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default(),
        r.gpu_available
    );
    if let Some(g) = &r.host.gpu {
        let size = |b: Option<u64>| b.map_or("unknown".to_string(), |b| gib(b as usize));
        println!(
            "  GPU          {} ({}): recommended working set {}, largest buffer {}, \
             resource limit {}",
            g.name.as_deref().unwrap_or("unknown"),
            g.architecture.as_deref().unwrap_or("unknown"),
            size(g.max_recommended_working_set_bytes),
            size(g.max_buffer_length_bytes),
            g.resource_limit
                .map_or("unknown".to_string(), |n| n.to_string())
        );
    }
    println!("BLAS           {} ({})", r.blas, r.blas_library);
    if !r.blas_detail.is_empty() {
        println!("  build        {}", r.blas_detail);
    }
    println!("  threads      {}", r.blas_threads);
    println!(
        "Quantized      {} kernel, {} threads (CPU affine 4/8-bit matmul; MLX_HUB_QMM=mlx \
         for MLX's, MLX_HUB_CPU_THREADS to set threads)",
        r.quantized_kernel, r.quantized_threads
    );
    println!(
        "Memory         {} physical",
        r.host
            .memory_bytes
            .map_or("unknown".to_string(), |b| gib(b as usize))
    );
    println!("  MLX limit    {}", gib(r.memory_limit_bytes));
    println!(
        "  active {}, peak {}, cache {}",
        gib(r.active_memory_bytes),
        gib(r.peak_memory_bytes),
        gib(r.cache_memory_bytes)
    );
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}
