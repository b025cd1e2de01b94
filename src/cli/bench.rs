//! `deepseek bench`: prefill and decode speed, as llama-bench measures them.

use super::common::{load_model, ModelArgs};
use clap::Args;
use deepseek::model::{CacheType, Logits, SeqInput};
use serde_json::json;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The model, when --model is not given.
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    pub model_pos: Option<String>,
    /// Prompt tokens of the prefill test (0 skips it).
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens of the decode test (0 skips it).
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Threads (default: the number of physical cores).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Repetitions of each test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: u32,
    /// Element type of the key/value cache.
    #[arg(long = "cache-type", default_value = "f32", value_parser = ["f32", "f16"])]
    pub cache_type: String,
    /// Print a JSON array like `llama-bench -o json`.
    #[arg(long)]
    pub json: bool,
}

fn mean_sd(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let threads = a
        .threads
        .map(|t| t as usize)
        .unwrap_or_else(super::common::physical_cores);
    let pool = std::sync::Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?,
    );
    let (mut m, load_s) = load_model(&a.model, a.model_pos.as_deref(), &pool)?;
    // The speeds measured are those of the repacked weights: wait for the repacking (it runs
    // in the background after the load, while a model can already be used).
    let repack_s = match m.repacking.take() {
        Some(r) => Some(r.wait()?.1),
        None => None,
    };
    let model = &m.model;
    let ct = if a.cache_type == "f16" {
        CacheType::F16
    } else {
        CacheType::F32
    };
    let ctx = (a.n_prompt.max(a.n_gen) + 1).min(model.config.max_position_embeddings);
    if a.n_prompt >= model.config.max_position_embeddings
        || a.n_gen >= model.config.max_position_embeddings
    {
        anyhow::bail!(
            "-p/-n: expected fewer tokens than the context of {}",
            model.config.max_position_embeddings
        );
    }
    // Deterministic pseudo-random tokens, as llama-bench feeds random ids.
    let vocab = model.config.vocab_size as u64;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut token = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % vocab) as u32
    };
    let mut results = Vec::new();
    if a.n_prompt > 0 {
        let prompt: Vec<u32> = (0..a.n_prompt).map(|_| token()).collect();
        let mut rates = Vec::new();
        // One warm-up run, then the measured ones, on one cache emptied before each run (as
        // llama-bench clears its context's memory): its pages are touched once.
        let mut cache = model.new_cache(ctx, ct);
        for rep in 0..=a.reps {
            cache.truncate(0);
            let t = Instant::now();
            let mut s = [SeqInput {
                tokens: &prompt,
                cache: &mut cache,
                logits: Logits::Last,
            }];
            pool.install(|| model.forward(&mut s))?;
            if rep > 0 {
                rates.push(a.n_prompt as f64 / t.elapsed().as_secs_f64());
            }
        }
        results.push((a.n_prompt, 0usize, mean_sd(&rates)));
    }
    if a.n_gen > 0 {
        let mut rates = Vec::new();
        let mut cache = model.new_cache(ctx, ct);
        for rep in 0..=a.reps {
            cache.truncate(0);
            let mut tok = token();
            let t = Instant::now();
            for _ in 0..a.n_gen {
                let ids = [tok];
                let mut s = [SeqInput {
                    tokens: &ids,
                    cache: &mut cache,
                    logits: Logits::Last,
                }];
                let logits = pool.install(|| model.forward(&mut s))?.remove(0);
                tok = deepseek::sampling::argmax(&logits) as u32;
            }
            if rep > 0 {
                rates.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
            }
        }
        results.push((0, a.n_gen, mean_sd(&rates)));
    }
    if a.json {
        let rows: Vec<_> = results
            .iter()
            .map(|(p, n, (avg, sd))| {
                json!({"n_prompt": p, "n_gen": n, "n_threads": threads, "avg_ts": avg, "stddev_ts": sd,
                       "model_filename": m.path.display().to_string(), "model_size": m.file_bytes, "load_s": load_s, "repack_s": repack_s,
                       "kernels": deepseek_tensor::Isa::current().name()})
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        let repacked = repack_s
            .map(|r| format!(" (weights repacked in the background by {r:.2} s)"))
            .unwrap_or_default();
        println!(
            "model {} ({:.2} GB), {threads} threads, {} kernels, load {load_s:.2} s{repacked}",
            m.path.display(),
            m.file_bytes as f64 / 1e9,
            deepseek_tensor::Isa::current().name()
        );
        println!("| test   |        t/s |");
        for (p, n, (avg, sd)) in &results {
            let name = if *p > 0 {
                format!("pp{p}")
            } else {
                format!("tg{n}")
            };
            println!("| {name:<6} | {avg:>7.2} ± {sd:.2} |");
        }
    }
    Ok(())
}
