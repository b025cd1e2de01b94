//! `deepseek perplexity`: llama-perplexity's method on a text file.

use super::common::{load_model, ModelArgs, RuntimeArgs};
use anyhow::{bail, Context};
use clap::Args;
use deepseek::model::{Logits, SeqInput};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The model, when --model is not given.
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    pub model_pos: Option<String>,
    /// The text to score.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: PathBuf,
    /// Tokens per chunk.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512, value_parser = clap::value_parser!(u32).range(4..))]
    pub ctx: u32,
    /// Score at most this many chunks (default: all).
    #[arg(long = "chunks", value_name = "N")]
    pub chunks: Option<usize>,
    /// Print {"ppl", "ppl_error", "chunks"} instead of the running estimate.
    #[arg(long)]
    pub json: bool,
    /// Threads (default: the number of physical cores).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
}

/// Running sums of the log-probabilities of the scored tokens.
#[derive(Default)]
struct Score {
    nll: f64,
    nll2: f64,
    count: usize,
}

impl Score {
    fn add(&mut self, logits: &[f32], target: u32) {
        let (_, lp) = deepseek::sampling::log_softmax(logits);
        let l = lp(target as usize);
        self.nll -= l;
        self.nll2 += l * l;
        self.count += 1;
    }
    fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }
    /// The ± of llama-perplexity: the standard error of the mean log-probability, times the PPL.
    fn error(&self) -> f64 {
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        if var > 0.0 && n > 1.0 {
            (var / (n - 1.0)).sqrt() * self.ppl()
        } else {
            0.0
        }
    }
}

pub fn run(a: PerplexityArgs) -> anyhow::Result<()> {
    let runtime = RuntimeArgs {
        threads: a.threads,
        ctx_size: Some(a.ctx),
        cache_type: "f32".into(),
    };
    let pool = runtime.pool()?;
    let (m, _) = load_model(&a.model, a.model_pos.as_deref(), &pool)?;
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("{}", a.file.display()))?;
    let add_bos = m.tokenizer.add_bos_by_default();
    let tokens = m.tokenizer.encode(&text, add_bos)?;
    let n_ctx = a.ctx as usize;
    if n_ctx > m.model.config.max_position_embeddings {
        bail!(
            "--ctx-size: expected at most the model's context of {}, found {n_ctx}",
            m.model.config.max_position_embeddings
        );
    }
    if tokens.len() < 2 * n_ctx {
        bail!(
            "{}: {} tokens; expected at least 2 × ctx-size = {} tokens",
            a.file.display(),
            tokens.len(),
            2 * n_ctx
        );
    }
    let mut n_chunks = tokens.len() / n_ctx;
    if let Some(c) = a.chunks {
        n_chunks = n_chunks.min(c.max(1));
    }
    let vocab = m.model.config.vocab_size;
    let first = n_ctx / 2;
    let bar = ProgressBar::new(n_chunks as u64);
    bar.set_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} chunks {elapsed_precise} ETA {eta} {msg}",
    )?);
    if a.json || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    if !a.json {
        eprintln!(
            "{} tokens, {n_chunks} chunks of {n_ctx}, scoring the second half of each",
            tokens.len()
        );
    }
    let mut score = Score::default();
    for i in 0..n_chunks {
        let mut chunk = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
        if add_bos {
            if let Some(b) = m.tokenizer.bos_id() {
                chunk[0] = b;
            }
        }
        let mut cache = m.model.new_cache(n_ctx, runtime.cache_type());
        let mut s = [SeqInput {
            tokens: &chunk,
            cache: &mut cache,
            logits: Logits::All,
        }];
        let logits = pool.install(|| m.model.forward(&mut s))?.remove(0);
        // Logits at position p predict token p + 1; positions first .. n_ctx - 2 are scored.
        for p in first..n_ctx - 1 {
            score.add(
                &logits[p * vocab..(p + 1) * vocab],
                tokens[i * n_ctx + p + 1],
            );
        }
        bar.inc(1);
        bar.set_message(format!("PPL {:.4}", score.ppl()));
        if !a.json {
            print!("[{}]{:.4},", i + 1, score.ppl());
            use std::io::Write;
            std::io::stdout().flush().ok();
        }
    }
    bar.finish_and_clear();
    if a.json {
        println!(
            "{}",
            json!({"ppl": score.ppl(), "ppl_error": score.error(), "chunks": n_chunks, "tokens_scored": score.count})
        );
    } else {
        println!();
        println!(
            "Final estimate: PPL = {:.4} +/- {:.5}",
            score.ppl(),
            score.error()
        );
    }
    Ok(())
}
