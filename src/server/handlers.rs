//! Endpoint handlers: chat and text completions (whole or streamed), models, health, metrics.

use super::error::ApiError;
use super::openai::{self, LogprobsStyle, Plan};
use super::{metrics as prom, unix_now, AppState, Ready};
use crate::engine::scheduler::{Command, Event, Job, JobStats};
use crate::engine::{StopCause, TokenLogprob};
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, BoxStream, SelectAll, StreamExt};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Which endpoint a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Chat,
    Completion,
}

impl Endpoint {
    fn id_prefix(self) -> &'static str {
        match self {
            Endpoint::Chat => "chatcmpl-",
            Endpoint::Completion => "cmpl-",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Endpoint::Chat => "/v1/chat/completions",
            Endpoint::Completion => "/v1/completions",
        }
    }
}

fn fingerprint() -> String {
    format!("deepseek-{}", env!("CARGO_PKG_VERSION"))
}

fn new_id(e: Endpoint) -> String {
    format!("{}{:016x}", e.id_prefix(), openai::random_seed())
}

/// `GET /health`: 200 once the model is loaded, 503 while it loads or the server stops;
/// `repacking` is true while its weights are still being repacked for faster decode (requests
/// are answered meanwhile, with the same results).
pub async fn health(State(s): State<Arc<AppState>>) -> Response {
    if s.shutting_down.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    match s.ready.get() {
        Some(r) => Json(json!({
            "status": "ok",
            "repacking": r.repacking.load(Ordering::Relaxed),
            "slots": s.config.parallel,
            "running": s.stats.running.load(Ordering::Relaxed),
            "queued": s.stats.queued.load(Ordering::Relaxed),
        }))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "loading"})),
        )
            .into_response(),
    }
}

/// `GET /metrics`.
pub async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let body = prom::render(
        &s.metrics,
        &s.stats,
        s.config.parallel,
        s.ready.get().is_some(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

fn model_object(s: &AppState) -> Value {
    let ctx = s.ready.get().map(|r| r.ctx);
    json!({
        "id": s.config.model_id,
        "object": "model",
        "created": s.started,
        "owned_by": "deepseek",
        "meta": {"context_length": ctx, "slots": s.config.parallel},
    })
}

/// `GET /v1/models`.
pub async fn models(State(s): State<Arc<AppState>>) -> Response {
    Json(json!({"object": "list", "data": [model_object(&s)]})).into_response()
}

/// `GET /v1/models/{id}`.
pub async fn model(State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    if id == s.config.model_id {
        Json(model_object(&s)).into_response()
    } else {
        ApiError::not_found(
            format!(
                "the model '{id}' does not exist; this server serves '{}'",
                s.config.model_id
            ),
            "model_not_found",
        )
        .into_response()
    }
}

/// Unknown paths.
pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("unknown path {}", uri.path()), "unknown_url")
}

/// Known paths with the wrong method.
pub async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("{} is not allowed on {}", method, uri.path()),
        kind: "invalid_request_error",
        param: None,
        code: Some("method_not_allowed"),
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(s): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    serve(s, body, Endpoint::Chat).await
}

/// `POST /v1/completions`.
pub async fn completions(
    State(s): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(s, body, Endpoint::Completion).await
}

async fn serve(s: Arc<AppState>, body: Result<Bytes, BytesRejection>, e: Endpoint) -> Response {
    match serve_inner(s, body, e).await {
        Ok(r) => r,
        Err(err) => err.into_response(),
    }
}

async fn serve_inner(
    s: Arc<AppState>,
    body: Result<Bytes, BytesRejection>,
    e: Endpoint,
) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "the request body is larger than the limit of {} bytes",
                    super::BODY_LIMIT
                ),
                kind: "invalid_request_error",
                param: None,
                code: Some("request_too_large"),
            }
        } else {
            ApiError::invalid(format!("cannot read the request body: {r}"))
        }
    })?;
    let ready = s.ready()?;
    let r2 = ready.clone();
    let plan = tokio::task::spawn_blocking(move || -> Result<Plan, ApiError> {
        match e {
            Endpoint::Chat => {
                let req = openai::parse_chat(&body)?;
                openai::plan_chat(&req, &r2.model, r2.ctx)
            }
            Endpoint::Completion => {
                let req = openai::parse_completion(&body)?;
                openai::plan_completion(&req, &r2.model, r2.ctx)
            }
        }
    })
    .await
    .map_err(|err| ApiError::internal(format!("request preparation failed: {err}")))??;

    let id = new_id(e);
    let receivers = submit(&s, &plan, &id, arrived)?;
    tracing::info!(
        id = %id,
        endpoint = e.name(),
        prompt_tokens = plan.prompts.iter().map(Vec::len).sum::<usize>(),
        choices = receivers.len(),
        stream = plan.stream,
        "request accepted"
    );
    let ctx = Ctx {
        id,
        created: unix_now(),
        model: s.config.model_id.clone(),
        endpoint: e,
        ready,
        logprobs: plan.logprobs,
        include_usage: plan.include_usage,
        prompt_tokens: plan.prompts.iter().map(Vec::len).sum(),
        arrived,
    };
    if plan.stream {
        Ok(stream_response(ctx, receivers))
    } else {
        whole_response(ctx, receivers).await
    }
}

/// Queue one job per choice; 503 when the queue is full.
fn submit(
    s: &AppState,
    plan: &Plan,
    id: &str,
    arrived: Instant,
) -> Result<Vec<UnboundedReceiver<Event>>, ApiError> {
    let needed = plan.prompts.len() * plan.n;
    let running = s.stats.running.load(Ordering::Relaxed);
    let free = s.config.parallel.saturating_sub(running);
    let allowed = s.config.max_queue + free;
    let before = s.stats.queued.fetch_add(needed, Ordering::Relaxed);
    if before + needed > allowed {
        s.stats.queued.fetch_sub(needed, Ordering::Relaxed);
        return Err(ApiError::unavailable(
            format!(
                "the server is busy: {before} requests are waiting (--max-queue {}); retry later",
                s.config.max_queue
            ),
            "queue_full",
        ));
    }
    let tx = s.jobs.lock().ok().and_then(|g| g.clone());
    let Some(tx) = tx else {
        s.stats.queued.fetch_sub(needed, Ordering::Relaxed);
        return Err(ApiError::unavailable(
            "the server is shutting down",
            "shutting_down",
        ));
    };
    let mut out = Vec::with_capacity(needed);
    let mut k = 0;
    for prompt in &plan.prompts {
        for j in 0..plan.n {
            let (etx, erx) = unbounded_channel();
            let mut opts = plan.opts.clone();
            opts.sampling.seed = opts.sampling.seed.wrapping_add(j as u64);
            let job = Job {
                id: if needed == 1 {
                    id.to_string()
                } else {
                    format!("{id}/{k}")
                },
                prompt: prompt.clone(),
                opts,
                arrived,
                events: etx,
            };
            if tx.send(Command::Submit(Box::new(job))).is_err() {
                s.stats.queued.fetch_sub(needed - k, Ordering::Relaxed);
                return Err(ApiError::unavailable(
                    "the server is shutting down",
                    "shutting_down",
                ));
            }
            out.push(erx);
            k += 1;
        }
    }
    Ok(out)
}

/// What every response of one request shares.
struct Ctx {
    id: String,
    created: u64,
    model: String,
    endpoint: Endpoint,
    ready: Arc<Ready>,
    logprobs: LogprobsStyle,
    include_usage: bool,
    prompt_tokens: usize,
    arrived: Instant,
}

fn token_text(ready: &Ready, id: u32) -> String {
    ready.model.tokenizer.decode(&[id], false)
}

fn chat_logprob(ready: &Ready, lp: &TokenLogprob) -> Value {
    let one = |id: u32, l: f64| {
        let t = token_text(ready, id);
        json!({"token": t, "logprob": l, "bytes": t.as_bytes()})
    };
    let mut v = one(lp.id, lp.logprob);
    v["top_logprobs"] = Value::Array(lp.top.iter().map(|(i, l)| one(*i, *l)).collect());
    v
}

/// The legacy completions `logprobs` object; `offset` is where the first token's text starts.
fn legacy_logprobs(ready: &Ready, lps: &[TokenLogprob], mut offset: usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut offsets = Vec::new();
    for lp in lps {
        let t = token_text(ready, lp.id);
        offsets.push(offset);
        offset += t.len();
        tokens.push(t);
        token_logprobs.push(lp.logprob);
        let mut m = serde_json::Map::new();
        for (i, l) in &lp.top {
            m.insert(token_text(ready, *i), json!(l));
        }
        top.push(Value::Object(m));
    }
    json!({
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

fn usage(prompt_tokens: usize, completion_tokens: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

struct Finished {
    text: String,
    logprobs: Vec<TokenLogprob>,
    cause: StopCause,
    stats: JobStats,
}

async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<Finished, ApiError> {
    let mut text = String::new();
    let mut logprobs = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Token {
                text: t, logprob, ..
            } => {
                text += &t;
                logprobs.extend(logprob);
            }
            Event::Done {
                text: t,
                cause,
                stats,
            } => {
                text += &t;
                return Ok(Finished {
                    text,
                    logprobs,
                    cause,
                    stats,
                });
            }
            Event::Error(e) => return Err(ApiError::internal(format!("generation failed: {e}"))),
        }
    }
    Err(ApiError::internal(
        "generation stopped: the engine went away",
    ))
}

async fn whole_response(
    ctx: Ctx,
    receivers: Vec<UnboundedReceiver<Event>>,
) -> Result<Response, ApiError> {
    let results = futures_util::future::join_all(receivers.into_iter().map(collect)).await;
    let mut choices = Vec::new();
    let (mut completion, mut cached) = (0, 0);
    for (i, r) in results.into_iter().enumerate() {
        let f = r?;
        completion += f.stats.completion_tokens;
        cached = cached.max(f.stats.cached_tokens);
        let finish = f.cause.finish_reason();
        let choice = match ctx.endpoint {
            Endpoint::Chat => json!({
                "index": i,
                "message": {"role": "assistant", "content": f.text, "refusal": null},
                "logprobs": match ctx.logprobs {
                    LogprobsStyle::None => Value::Null,
                    _ => json!({
                        "content": f.logprobs.iter().map(|l| chat_logprob(&ctx.ready, l)).collect::<Vec<_>>(),
                        "refusal": null,
                    }),
                },
                "finish_reason": finish,
            }),
            Endpoint::Completion => json!({
                "index": i,
                "text": f.text,
                "logprobs": match ctx.logprobs {
                    LogprobsStyle::None => Value::Null,
                    _ => legacy_logprobs(&ctx.ready, &f.logprobs, 0),
                },
                "finish_reason": finish,
            }),
        };
        choices.push(choice);
    }
    tracing::info!(
        id = %ctx.id,
        prompt_tokens = ctx.prompt_tokens,
        completion_tokens = completion,
        cached_tokens = cached,
        total_ms = (ctx.arrived.elapsed().as_secs_f64() * 1e3) as u64,
        "request done"
    );
    let object = match ctx.endpoint {
        Endpoint::Chat => "chat.completion",
        Endpoint::Completion => "text_completion",
    };
    Ok(Json(json!({
        "id": ctx.id,
        "object": object,
        "created": ctx.created,
        "model": ctx.model,
        "system_fingerprint": fingerprint(),
        "choices": choices,
        "usage": usage(ctx.prompt_tokens, completion, cached),
    }))
    .into_response())
}

/// The state of one streamed answer.
struct Streamer {
    ctx: Ctx,
    events: SelectAll<BoxStream<'static, (usize, Event)>>,
    /// Byte offset of each choice's text (legacy logprobs).
    offsets: Vec<usize>,
    completion: usize,
    cached: usize,
    failed: bool,
}

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

impl Streamer {
    fn chunk(&self, choices: Vec<Value>) -> String {
        let object = match self.ctx.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            Endpoint::Completion => "text_completion",
        };
        let mut v = json!({
            "id": self.ctx.id,
            "object": object,
            "created": self.ctx.created,
            "model": self.ctx.model,
            "system_fingerprint": fingerprint(),
            "choices": choices,
        });
        if self.ctx.include_usage {
            v["usage"] = Value::Null;
        }
        sse(&v)
    }

    fn content(
        &mut self,
        i: usize,
        text: &str,
        lp: Option<&TokenLogprob>,
        finish: Option<Value>,
    ) -> String {
        let finish = finish.unwrap_or(Value::Null);
        let choice = match self.ctx.endpoint {
            Endpoint::Chat => {
                let delta = if text.is_empty() && finish != Value::Null {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({
                    "index": i,
                    "delta": delta,
                    "logprobs": match lp {
                        Some(l) => json!({"content": [chat_logprob(&self.ctx.ready, l)], "refusal": null}),
                        None => Value::Null,
                    },
                    "finish_reason": finish,
                })
            }
            Endpoint::Completion => {
                let lpv = match lp {
                    Some(l) => {
                        legacy_logprobs(&self.ctx.ready, std::slice::from_ref(l), self.offsets[i])
                    }
                    None => Value::Null,
                };
                json!({"index": i, "text": text, "logprobs": lpv, "finish_reason": finish})
            }
        };
        if let Some(o) = self.offsets.get_mut(i) {
            *o += match lp {
                Some(l) => token_text(&self.ctx.ready, l.id).len(),
                None => text.len(),
            };
        }
        self.chunk(vec![choice])
    }

    fn on_event(&mut self, i: usize, ev: Event) -> Option<String> {
        match ev {
            Event::Token { text, logprob, .. } => {
                if text.is_empty() && logprob.is_none() {
                    None
                } else {
                    Some(self.content(i, &text, logprob.as_ref(), None))
                }
            }
            Event::Done { text, cause, stats } => {
                self.completion += stats.completion_tokens;
                self.cached = self.cached.max(stats.cached_tokens);
                let mut out = String::new();
                if !text.is_empty() {
                    out += &self.content(i, &text, None, None);
                }
                out += &self.content(i, "", None, Some(json!(cause.finish_reason())));
                Some(out)
            }
            Event::Error(e) => {
                self.failed = true;
                Some(sse(
                    &ApiError::internal(format!("generation failed: {e}")).body()
                ))
            }
        }
    }

    fn closing(&mut self) -> String {
        let mut out = String::new();
        if self.ctx.include_usage && !self.failed {
            let mut v = json!({
                "id": self.ctx.id,
                "object": match self.ctx.endpoint {
                    Endpoint::Chat => "chat.completion.chunk",
                    Endpoint::Completion => "text_completion",
                },
                "created": self.ctx.created,
                "model": self.ctx.model,
                "system_fingerprint": fingerprint(),
                "choices": [],
            });
            v["usage"] = usage(self.ctx.prompt_tokens, self.completion, self.cached);
            out += &sse(&v);
        }
        out += "data: [DONE]\n\n";
        tracing::info!(
            id = %self.ctx.id,
            prompt_tokens = self.ctx.prompt_tokens,
            completion_tokens = self.completion,
            cached_tokens = self.cached,
            total_ms = (self.ctx.arrived.elapsed().as_secs_f64() * 1e3) as u64,
            "stream done"
        );
        out
    }
}

fn stream_response(ctx: Ctx, receivers: Vec<UnboundedReceiver<Event>>) -> Response {
    let n = receivers.len();
    let mut events = SelectAll::new();
    for (i, rx) in receivers.into_iter().enumerate() {
        let s = stream::unfold(rx, move |mut rx| async move {
            rx.recv().await.map(|ev| ((i, ev), rx))
        })
        .boxed();
        events.push(s);
    }
    let st = Streamer {
        ctx,
        events,
        offsets: vec![0; n],
        completion: 0,
        cached: 0,
        failed: false,
    };
    let mut first = String::new();
    if st.ctx.endpoint == Endpoint::Chat {
        for i in 0..n {
            let c = json!({
                "index": i,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": null,
                "finish_reason": null,
            });
            first += &st.chunk(vec![c]);
        }
    }
    let body = stream::once(async move { Ok::<_, Infallible>(Bytes::from(first)) }).chain(
        stream::unfold(Some(st), |st| async move {
            let mut st = st?;
            loop {
                match st.events.next().await {
                    Some((i, ev)) => {
                        if let Some(s) = st.on_event(i, ev) {
                            return Some((Ok(Bytes::from(s)), Some(st)));
                        }
                    }
                    None => {
                        let s = st.closing();
                        return Some((Ok(Bytes::from(s)), None));
                    }
                }
            }
        }),
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| ApiError::internal("cannot build the response").into_response())
}
