//! `deepseek serve`: the OpenAI-compatible HTTP server.

use super::common::{physical_cores, ModelArgs, RuntimeArgs};
use clap::Args;
use deepseek::server::{default_model_id, serve, ServerConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The model, when --model is not given.
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    pub model_pos: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Address to listen on (loopback by default; 0.0.0.0 serves the network).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* requests.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_key: Option<String>,
    /// Sequences decoded together in one batched step (each gets a KV cache of --ctx-size).
    #[arg(long, short = 'p', default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// Requests that may wait for a free slot; more are answered with 503.
    #[arg(long = "max-queue", default_value_t = 64, value_name = "N")]
    pub max_queue: usize,
    /// The model id the API reports and /v1/models lists (default: the model's file or folder name).
    #[arg(long, value_name = "NAME")]
    pub alias: Option<String>,
    /// Prompt tokens prefilled per step, over all sequences (bounds the stall of running streams).
    #[arg(long = "prefill-chunk", default_value_t = 256, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub prefill_chunk: u32,
    /// Do not reuse the KV cache of earlier requests that share the prompt's prefix.
    #[arg(long = "no-prefix-cache")]
    pub no_prefix_cache: bool,
    /// On SIGTERM/SIGINT, seconds running requests may take to finish before they are cancelled.
    #[arg(long = "shutdown-timeout", default_value_t = 10.0, value_name = "SECS")]
    pub shutdown_timeout: f64,
}

pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    if !(a.shutdown_timeout.is_finite() && (0.0..=86_400.0).contains(&a.shutdown_timeout)) {
        anyhow::bail!(
            "--shutdown-timeout: expected seconds in [0, 86400], found {}",
            a.shutdown_timeout
        );
    }
    let reference = a.model.reference(a.model_pos.as_deref())?;
    let model_path = a.model.resolve(a.model_pos.as_deref())?;
    let model_id = a.alias.clone().unwrap_or_else(|| {
        if std::path::Path::new(&reference).exists() {
            default_model_id(&model_path)
        } else {
            reference.clone()
        }
    });
    let config = ServerConfig {
        model_path,
        load: a.model.load_options(),
        model_id,
        host: a.host,
        port: a.port,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        parallel: a.parallel as usize,
        ctx_size: a.runtime.ctx_size.map(|c| c as usize),
        max_queue: a.max_queue,
        threads: a
            .runtime
            .threads
            .map(|t| t as usize)
            .unwrap_or_else(physical_cores),
        cache_type: a.runtime.cache_type(),
        prefill_budget: a.prefill_chunk as usize,
        prefix_cache: !a.no_prefix_cache,
        shutdown_grace: std::time::Duration::from_secs_f64(a.shutdown_timeout),
    };
    serve(config)
}
