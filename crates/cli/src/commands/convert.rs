//! `mlx-hub convert`: import a GGUF file, or convert / quantize / dequantize an mlx-lm
//! folder, into a new mlx-lm folder (flags as `mlx_lm.convert` names them).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use engine::convert::{
    ConvertEvent, ConvertOptions, convert_gguf_with_progress, convert_model_with_progress,
};
use mlx::Dtype;
use mlx::quantization::QuantSpec;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A GGUF file (`*.gguf`) or an mlx-lm / Hugging Face model folder.
    #[arg(long)]
    pub model: PathBuf,
    /// The folder to write (must not exist).
    #[arg(long, default_value = "mlx_model")]
    pub mlx_path: PathBuf,
    /// Quantize the model (affine; every Linear and Embedding whose input size is a
    /// multiple of the group size).
    #[arg(short = 'q', long)]
    pub quantize: bool,
    /// Bits per weight when quantizing.
    #[arg(long, default_value_t = 4, value_parser = parse_bits)]
    pub q_bits: i32,
    /// Group size when quantizing.
    #[arg(long, default_value_t = 64, value_parser = parse_group_size)]
    pub q_group_size: i32,
    /// Cast floating-point weights to this type (default: config.json's torch_dtype).
    #[arg(long, value_parser = ["float16", "bfloat16", "float32"])]
    pub dtype: Option<String>,
    /// Dequantize a quantized model.
    #[arg(short = 'd', long)]
    pub dequantize: bool,
    /// Print one JSON object (what was written) instead of progress lines.
    #[arg(long)]
    pub json: bool,
}

fn parse_one_of(s: &str, allowed: &[i32]) -> Result<i32, String> {
    match s.parse::<i32>() {
        Ok(n) if allowed.contains(&n) => Ok(n),
        _ => Err(format!("must be one of {allowed:?}")),
    }
}

fn parse_bits(s: &str) -> Result<i32, String> {
    parse_one_of(s, &[4, 8])
}

fn parse_group_size(s: &str) -> Result<i32, String> {
    parse_one_of(s, &[32, 64, 128])
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.2} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{bytes} B")
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.quantize && args.dequantize {
        bail!("choose either --quantize or --dequantize, not both");
    }
    let options = ConvertOptions {
        quantize: if args.quantize {
            Some(QuantSpec::new(args.q_group_size, args.q_bits)?)
        } else {
            None
        },
        dtype: args
            .dtype
            .as_deref()
            .map(|d| Dtype::parse(d).with_context(|| format!("unknown dtype {d}")))
            .transpose()?,
        dequantize: args.dequantize,
    };
    let quiet = args.json;
    let started = Instant::now();
    let mut progress = |e: ConvertEvent| {
        if quiet {
            return;
        }
        match e {
            ConvertEvent::Stage(s) => eprintln!("[INFO] {s}"),
            ConvertEvent::Shard {
                index,
                count,
                name,
                bytes,
            } => eprintln!("[INFO] writing {name} ({index}/{count}, {})", human(bytes)),
        }
    };
    let is_gguf = args.model.is_file()
        && args
            .model
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    let report = if is_gguf {
        convert_gguf_with_progress(&args.model, &args.mlx_path, &options, &mut progress)
    } else if args.model.is_dir() {
        convert_model_with_progress(&args.model, &args.mlx_path, &options, &mut progress)
    } else {
        bail!(
            "--model {}: expected a .gguf file or a model folder",
            args.model.display()
        );
    }
    .with_context(|| format!("converting {}", args.model.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["seconds"] = serde_json::json!(seconds);
        println!("{}", serde_json::to_string(&v)?);
    } else {
        println!(
            "Wrote {} in {seconds:.1}s: {} tensors, {} of weights, {} parameters{}",
            report.output.display(),
            report.tensors,
            human(report.total_size),
            report.total_parameters,
            match &report.quantization {
                Some(q) => format!(", quantization {q}"),
                None => String::new(),
            }
        );
    }
    Ok(())
}
