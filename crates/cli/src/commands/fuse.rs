//! `mlx-hub fuse`: merge an adapter folder into its base model and write the result
//! as a new mlx-lm model folder (flags as `mlx_lm.fuse` names them).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use engine::convert::ConvertEvent;
use engine::train::fuse_to_dir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The base model folder the adapters were trained on.
    #[arg(long, default_value = "mlx_model")]
    pub model: PathBuf,
    /// The adapter folder (adapters.safetensors + adapter_config.json).
    #[arg(long, default_value = "adapters")]
    pub adapter_path: PathBuf,
    /// The folder to write (must not exist).
    #[arg(long, default_value = "fused_model")]
    pub save_path: PathBuf,
    /// Write every layer as floating point (no re-quantization of a quantized base).
    #[arg(long)]
    pub dequantize: bool,
    /// Print one JSON object (what was written) instead of progress lines.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let quiet = args.json;
    let started = Instant::now();
    let mut progress = |e: ConvertEvent| {
        if quiet {
            return;
        }
        match e {
            ConvertEvent::Stage(s) => eprintln!("[INFO] {s}"),
            ConvertEvent::Shard {
                index, count, name, ..
            } => eprintln!("[INFO] writing {name} ({index}/{count})"),
        }
    };
    let report = fuse_to_dir(
        &args.model,
        &args.adapter_path,
        &args.save_path,
        args.dequantize,
        &mut progress,
    )
    .with_context(|| {
        format!(
            "fusing {} into {}",
            args.adapter_path.display(),
            args.model.display()
        )
    })?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["seconds"] = serde_json::json!(seconds);
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "Wrote {} in {seconds:.1}s: {} tensors, {} parameters{}",
            report.output.display(),
            report.tensors,
            report.total_parameters,
            match &report.quantization {
                Some(q) => format!(", quantization {q}"),
                None => String::new(),
            }
        );
    }
    Ok(())
}
