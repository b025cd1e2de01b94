//! `deepseek quantize`: write a GGUF file with every matrix in one type.

use anyhow::bail;
use clap::Args;
use deepseek_tensor::DType;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// A Hugging Face model folder, a GGUF file or a hub name.
    pub input: String,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// Type of the matrices: q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, f16, bf16, f32.
    #[arg(long = "type", value_name = "TYPE")]
    pub ty: String,
    /// The `tokenizer.ggml.pre` name to record, when it cannot be told from tokenizer.json.
    #[arg(long, value_name = "NAME")]
    pub pre: Option<String>,
    /// Use only models already in the Hugging Face cache.
    #[arg(long)]
    pub offline: bool,
    /// Threads (default: the number of physical cores).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

pub fn parse_type(s: &str) -> anyhow::Result<DType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "q8_0" => DType::Q8_0,
        "q4_0" => DType::Q4_0,
        "q4_1" => DType::Q4_1,
        "q5_0" => DType::Q5_0,
        "q5_1" => DType::Q5_1,
        "q4_k" | "q4_k_m" | "q4_k_s" => DType::Q4_K,
        "q5_k" | "q5_k_m" | "q5_k_s" => DType::Q5_K,
        "q6_k" => DType::Q6_K,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => bail!("--type: expected one of q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, f16, bf16, f32, found {other:?}"),
    })
}

pub fn run(a: QuantizeArgs) -> anyhow::Result<()> {
    let target = parse_type(&a.ty)?;
    let input = super::common::resolve_reference(&a.input, a.offline, false)?;
    if input == a.output {
        bail!("quantize: the output {} is the input", a.output.display());
    }
    let n = a
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(super::common::physical_cores);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(n).build()?;
    let bar = ProgressBar::new(0);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} tensors {elapsed_precise} {msg}",
    )?);
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let mut progress = |done: usize, total: usize, name: &str| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(name.to_string());
    };
    let summary = pool.install(|| {
        deepseek::convert::quantize(&input, &a.output, target, a.pre.as_deref(), &mut progress)
    })?;
    bar.finish_and_clear();
    eprintln!(
        "wrote {} ({} tensors, {:.1} MB from {:.1} MB)",
        a.output.display(),
        summary.tensors,
        summary.bytes_out as f64 / 1e6,
        summary.bytes_in as f64 / 1e6
    );
    Ok(())
}
