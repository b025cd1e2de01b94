//! Flags shared by several subcommands, and what they turn into.

use clap::Args;
use deepseek::engine::GenerateOptions;
use deepseek::loader::{LoadOptions, LoadedModel};
use deepseek::model::{CacheType, GenerationConfig};
use deepseek::sampling::SamplingParams;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the model comes from.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// A Hugging Face model folder, a GGUF file, or a hub name: org/name, org/name:REVISION,
    /// org/name/file.gguf, org/name:Q4_K_M.
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    pub model: Option<String>,
    /// Use this tokenizer.json instead of the model's own tokenizer.
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// Use only models already in the Hugging Face cache (as HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
    /// Ask the hub for the current commit of a cached branch (a cached model is otherwise used
    /// without any request).
    #[arg(long, conflicts_with = "offline")]
    pub refresh: bool,
    /// Keep Q4_0, Q4_K, Q5_K and Q6_K weights in their file layout (by default they are repacked in
    /// groups of 8 rows for faster decode where the CPU has AVX-512 VNNI, in the background
    /// after the load; the same results, bit for bit).
    #[arg(long)]
    pub no_repack: bool,
}

impl ModelArgs {
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            tokenizer: self.tokenizer.clone(),
            no_repack: self.no_repack,
            pool: None,
        }
    }

    /// The model reference: `--model`, else the positional one.
    pub fn reference(&self, positional: Option<&str>) -> anyhow::Result<String> {
        match (&self.model, positional) {
            (Some(m), _) => Ok(m.clone()),
            (None, Some(p)) => Ok(p.to_string()),
            (None, None) => {
                anyhow::bail!("no model: expected --model MODEL or MODEL as the first argument")
            }
        }
    }

    /// Resolve the reference to a local folder or file, downloading it from the hub if needed.
    pub fn resolve(&self, positional: Option<&str>) -> anyhow::Result<PathBuf> {
        let r = self.reference(positional)?;
        resolve_reference(&r, self.offline, self.refresh)
    }
}

/// A local path as it is; a hub name through the Hugging Face cache.
pub fn resolve_reference(r: &str, offline: bool, refresh: bool) -> anyhow::Result<PathBuf> {
    let mut opts = deepseek_hub::HubOptions::from_env();
    opts.offline |= offline;
    opts.refresh = refresh;
    opts.progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    Ok(deepseek_hub::resolve(r, &opts)?)
}

/// How the model runs.
#[derive(Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// Threads for the forward pass (default: the number of physical cores).
    #[arg(short = 't', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Context length in tokens (default: the model's maximum).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub ctx_size: Option<u32>,
    /// Element type of the key/value cache.
    #[arg(long = "cache-type", value_name = "TYPE", default_value = "f32", value_parser = ["f32", "f16"])]
    pub cache_type: String,
}

impl RuntimeArgs {
    pub fn cache_type(&self) -> CacheType {
        if self.cache_type == "f16" {
            CacheType::F16
        } else {
            CacheType::F32
        }
    }

    pub fn context(&self, model: &LoadedModel) -> usize {
        let max = model.model.config.max_position_embeddings;
        self.ctx_size.map(|c| c as usize).unwrap_or(max)
    }

    /// The thread pool every forward pass runs in.
    pub fn pool(&self) -> anyhow::Result<Arc<rayon::ThreadPool>> {
        let n = self
            .threads
            .map(|t| t as usize)
            .unwrap_or_else(physical_cores);
        Ok(Arc::new(
            rayon::ThreadPoolBuilder::new().num_threads(n).build()?,
        ))
    }
}

/// Physical cores (not hardware threads) of this machine, as far as Linux tells.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::HashSet::new();
    let (mut phys, mut core) = (None, None);
    for line in info.lines() {
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => phys = Some(v.to_string()),
            (Some("core id"), Some(v)) => core = Some(v.to_string()),
            (Some(""), _) | (None, _) => {}
            _ => {}
        }
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                cores.insert((p, c));
            }
        }
    }
    if let (Some(p), Some(c)) = (phys, core) {
        cores.insert((p, c));
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

/// Sampling and stopping flags.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(short = 'n', long = "max-tokens", value_name = "N")]
    pub max_tokens: Option<usize>,
    /// Temperature; 0 is greedy (default: the model's generation_config.json).
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f32>,
    /// Keep only the K most likely tokens (0 = off).
    #[arg(long = "top-k", value_name = "K")]
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the most likely tokens up to this total probability.
    #[arg(long = "top-p", value_name = "P", allow_negative_numbers = true)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long = "min-p", value_name = "P", allow_negative_numbers = true)]
    pub min_p: Option<f32>,
    /// Repetition penalty (1 = off).
    #[arg(
        long = "repeat-penalty",
        value_name = "X",
        allow_negative_numbers = true
    )]
    pub repeat_penalty: Option<f32>,
    /// Seed of the sampler (default: random).
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long = "ignore-eos")]
    pub ignore_eos: bool,
}

pub const DEFAULT_MAX_TOKENS: usize = 512;

impl SamplingArgs {
    /// Flags over the model's generation_config.json over transformers' defaults.
    pub fn options(
        &self,
        model: &LoadedModel,
        top_logprobs: Option<usize>,
    ) -> anyhow::Result<GenerateOptions> {
        let g: &GenerationConfig = &model.generation;
        let d = SamplingParams::from_generation_config(g);
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_k: self.top_k.unwrap_or(d.top_k),
            top_p: self.top_p.unwrap_or(d.top_p),
            min_p: self.min_p.unwrap_or(d.min_p),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            seed,
            ..d
        };
        sampling.validate()?;
        let eos_ids = model.eos_ids();
        Ok(GenerateOptions {
            sampling,
            max_tokens: self
                .max_tokens
                .or(g.max_new_tokens)
                .unwrap_or(DEFAULT_MAX_TOKENS),
            stop: self.stop.clone(),
            eos_ids,
            ignore_eos: self.ignore_eos,
            top_logprobs,
        })
    }
}

/// Resolve and load a model, timing the load; a background repacking of its weights runs in
/// `pool`, the pool of the forward passes.
pub fn load_model(
    args: &ModelArgs,
    positional: Option<&str>,
    pool: &Arc<rayon::ThreadPool>,
) -> anyhow::Result<(LoadedModel, f64)> {
    let path = args.resolve(positional)?;
    let t = std::time::Instant::now();
    let opts = LoadOptions {
        pool: Some(pool.clone()),
        ..args.load_options()
    };
    let m = deepseek::loader::load(&path, &opts)?;
    Ok((m, t.elapsed().as_secs_f64()))
}
