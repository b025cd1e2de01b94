//! The OpenAI-compatible HTTP server.
//!
//! Threads: the tokio runtime serves HTTP (parsing, tokenizing, formatting answers); one
//! scheduler thread loads the model, then runs [`crate::engine::scheduler::run`] inside the
//! rayon pool that executes the forward passes. Handlers send jobs to the scheduler over a
//! channel and read each sequence's tokens back from a channel of its own; dropping that
//! receiver (a client that went away) cancels the sequence at the next step.

mod error;
mod handlers;
mod metrics;
pub mod openai;

pub use error::ApiError;

use crate::engine::scheduler::{self, Command, SchedulerConfig, SchedulerStats};
use crate::loader::{LoadOptions, LoadedModel};
use crate::model::CacheType;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 4 << 20;

/// Everything `deepseek serve` is configured with.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub model_path: PathBuf,
    pub load: LoadOptions,
    /// The model id the API reports (default: the model file or folder name).
    pub model_id: String,
    pub host: String,
    pub port: u16,
    pub api_key: Option<String>,
    /// Sequences decoded together.
    pub parallel: usize,
    /// Context length of each sequence (`None`: the model's maximum).
    pub ctx_size: Option<usize>,
    /// Requests waiting for a slot before new ones are turned away with 503.
    pub max_queue: usize,
    pub threads: usize,
    pub cache_type: CacheType,
    /// Prompt tokens prefilled per step, over all sequences.
    pub prefill_budget: usize,
    pub prefix_cache: bool,
    /// How long running requests may go on after SIGTERM/SIGINT before they are cancelled.
    pub shutdown_grace: Duration,
}

/// The model, once loaded, with the context length each slot gets.
pub struct Ready {
    pub model: LoadedModel,
    pub ctx: usize,
    /// Whether the weights are still being repacked in the background (`/health` says so).
    pub repacking: Arc<AtomicBool>,
}

/// State shared by the handlers.
pub struct AppState {
    pub config: ServerConfig,
    pub ready: OnceLock<Arc<Ready>>,
    pub jobs: Mutex<Option<Sender<Command>>>,
    pub stats: Arc<SchedulerStats>,
    pub metrics: metrics::HttpMetrics,
    pub shutting_down: AtomicBool,
    pub started: u64,
}

impl AppState {
    /// The loaded model, or 503 while it loads.
    pub fn ready(&self) -> Result<Arc<Ready>, ApiError> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(ApiError::unavailable(
                "the server is shutting down",
                "shutting_down",
            ));
        }
        self.ready.get().cloned().ok_or_else(|| {
            ApiError::unavailable("the model is still loading; retry shortly", "model_loading")
        })
    }
}

/// The model id for a path: its file name without `.gguf`, or its folder name.
pub fn default_model_id(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "model".into());
    name.strip_suffix(".gguf").unwrap_or(&name).to_string()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The routes, with authentication, metrics and OpenAI-style fallbacks.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(handlers::chat))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{*id}", get(handlers::model))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .merge(api)
        .route("/health", get(handlers::health))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state)
}

/// Bearer-token check for `/v1/*` when an API key is set.
async fn auth(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            None => {
                return ApiError::unauthorized(
                    "you did not provide an API key: send it as 'Authorization: Bearer KEY'",
                )
                .into_response()
            }
            Some(g) if !constant_time_eq(g.as_bytes(), key.as_bytes()) => {
                return ApiError::unauthorized("incorrect API key provided").into_response()
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Count every answer by endpoint and status.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let endpoint = match path.as_str() {
        "/v1/chat/completions" | "/v1/completions" | "/v1/models" | "/health" | "/metrics" => {
            path.clone()
        }
        p if p.starts_with("/v1/models/") => "/v1/models/{id}".into(),
        _ => "other".into(),
    };
    let r = next.run(req).await;
    state.metrics.count(&endpoint, r.status().as_u16());
    r
}

async fn shutdown_signal(state: Arc<AppState>, load_failed: tokio::sync::oneshot::Receiver<()>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
        _ = load_failed => {},
    }
    state.shutting_down.store(true, Ordering::Relaxed);
    // Running requests may finish; past the grace period they are cancelled.
    let s = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(s.config.shutdown_grace).await;
        if let Some(tx) = s.jobs.lock().ok().and_then(|g| g.clone()) {
            tracing::info!("grace period over: cancelling the running requests");
            let _ = tx.send(Command::CancelAll);
        }
    });
}

/// Run the server until SIGINT/SIGTERM. The model loads in the background; `/health` says
/// `loading` until it is ready.
pub fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(serve_async(config))
}

async fn serve_async(config: ServerConfig) -> anyhow::Result<()> {
    let addr: SocketAddr = format!("{}:{}", config.host, config.port)
        .parse()
        .or_else(|_| {
            std::net::ToSocketAddrs::to_socket_addrs(&(config.host.as_str(), config.port))
                .ok()
                .and_then(|mut a| a.next())
                .ok_or(())
        })
        .map_err(|_| {
            anyhow::anyhow!(
                "--host {}: not an address this machine resolves",
                config.host
            )
        })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;

    let (tx, rx) = std::sync::mpsc::channel::<Command>();
    let state = Arc::new(AppState {
        config: config.clone(),
        ready: OnceLock::new(),
        jobs: Mutex::new(Some(tx)),
        stats: Arc::new(SchedulerStats::default()),
        metrics: metrics::HttpMetrics::default(),
        shutting_down: AtomicBool::new(false),
        started: unix_now(),
    });
    let (fail_tx, fail_rx) = tokio::sync::oneshot::channel::<()>();
    let load_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));

    let engine = {
        let state = state.clone();
        let load_error = load_error.clone();
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || engine_thread(state, rx, fail_tx, load_error))?
    };

    tracing::info!(
        "listening on http://{local} (model {} loading)",
        config.model_path.display()
    );
    let app = router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal(state.clone(), fail_rx))
        .await?;

    // No new jobs; the scheduler finishes what runs, then returns.
    if let Ok(mut g) = state.jobs.lock() {
        if let Some(tx) = g.take() {
            let _ = tx.send(Command::Shutdown);
        }
    }
    let joined = tokio::task::spawn_blocking(move || engine.join()).await;
    if let Ok(Err(_)) = joined {
        anyhow::bail!("the scheduler thread panicked");
    }
    if let Some(e) = load_error.lock().ok().and_then(|g| g.clone()) {
        anyhow::bail!("{e}");
    }
    tracing::info!("stopped");
    Ok(())
}

fn engine_thread(
    state: Arc<AppState>,
    rx: std::sync::mpsc::Receiver<Command>,
    fail: tokio::sync::oneshot::Sender<()>,
    load_error: Arc<Mutex<Option<String>>>,
) {
    let c = &state.config;
    let fail_with = |msg: String| {
        tracing::error!("{msg}");
        if let Ok(mut g) = load_error.lock() {
            *g = Some(msg);
        }
    };
    let pool = match rayon::ThreadPoolBuilder::new()
        .num_threads(c.threads.max(1))
        .build()
    {
        Ok(p) => Arc::new(p),
        Err(e) => {
            fail_with(format!("cannot start the thread pool: {e}"));
            let _ = fail.send(());
            return;
        }
    };
    let t = std::time::Instant::now();
    let opts = crate::loader::LoadOptions {
        pool: Some(pool.clone()),
        ..c.load.clone()
    };
    let repacking = Arc::new(AtomicBool::new(false));
    let model = match crate::loader::load(&c.model_path, &opts) {
        Ok(mut m) => {
            // The weights finish repacking in the background while requests are served; log
            // when they are done.
            if let Some(r) = m.repacking.take() {
                repacking.store(true, Ordering::Relaxed);
                let flag = repacking.clone();
                std::thread::spawn(move || {
                    match r.wait() {
                        Ok((n, s)) => {
                            tracing::info!("{n} weight matrices repacked for decode in {s:.2}s")
                        }
                        Err(e) => {
                            tracing::warn!("repacking the weights failed, kept as loaded: {e}")
                        }
                    }
                    flag.store(false, Ordering::Relaxed);
                });
            }
            m
        }
        Err(e) => {
            fail_with(format!("{}", e));
            let _ = fail.send(());
            return;
        }
    };
    let max = model.model.config.max_position_embeddings;
    let ctx = c.ctx_size.unwrap_or(max);
    let sched = SchedulerConfig {
        parallel: c.parallel.max(1),
        ctx_size: ctx,
        cache_type: c.cache_type,
        prefill_budget: c.prefill_budget,
        prefix_cache: c.prefix_cache,
    };
    let kv = sched.kv_bytes(&model.model);
    tracing::info!(
        "model loaded in {:.2}s: {} weight bytes; {} slots × {} tokens of context; \
         key/value cache at most {:.1} MiB; {} threads",
        t.elapsed().as_secs_f64(),
        model.file_bytes,
        sched.parallel,
        ctx,
        kv as f64 / (1024.0 * 1024.0),
        c.threads
    );
    if ctx > max {
        tracing::warn!("--ctx-size {ctx} is larger than the model's max_position_embeddings {max}");
    }
    let ready = Arc::new(Ready {
        model,
        ctx,
        repacking,
    });
    let _ = state.ready.set(ready.clone());
    tracing::info!("ready");
    let stats = state.stats.clone();
    pool.install(|| {
        scheduler::run(
            &ready.model.model,
            &ready.model.tokenizer,
            &sched,
            rx,
            stats,
        )
    });
}
