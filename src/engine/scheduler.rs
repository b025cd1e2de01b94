//! Continuous batching: many sequences advanced together, one forward pass per step.
//!
//! The scheduler runs on a thread of its own and owns a fixed number of slots, each with its own
//! key/value cache. Every step it feeds the model, in one call, the next token of every decoding
//! sequence and a bounded chunk of the prompts still being prefilled, so a long prompt never
//! stalls the running streams for more than one chunk. Requests join and leave between steps.
//! A finished sequence leaves its cache in its slot: a later request whose prompt starts with
//! the same tokens (the next turn of a chat) reuses it instead of recomputing it, and a new
//! request may also copy the prefix of a running sequence's cache.

use super::generate::{GenerateOptions, Sequence, StopCause, TokenLogprob};
use crate::model::{CacheType, KvCache, Logits, Model, SeqInput};
use deepseek_text::Tokenizer;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// How the scheduler is sized.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Most sequences decoded together (slots).
    pub parallel: usize,
    /// Context length of each slot, in tokens.
    pub ctx_size: usize,
    /// Element type of the key/value caches.
    pub cache_type: CacheType,
    /// Most prompt tokens prefilled in one step, over all sequences.
    pub prefill_budget: usize,
    /// Reuse cached prefixes of finished and running sequences.
    pub prefix_cache: bool,
}

impl SchedulerConfig {
    /// Upper bound of the memory the key/value caches take, in bytes.
    pub fn kv_bytes(&self, model: &Model) -> usize {
        let c = &model.config;
        self.parallel * KvCache::bytes_for(c.num_layers, c.kv_dim(), self.ctx_size, self.cache_type)
    }
}

/// One sequence to generate.
pub struct Job {
    /// For logs.
    pub id: String,
    /// Prompt token ids (checked by the caller: non-empty, in the vocabulary, shorter than the
    /// context).
    pub prompt: Vec<u32>,
    pub opts: GenerateOptions,
    /// When the request arrived (time to first token counts from here).
    pub arrived: Instant,
    /// Where the sequence's events go; the job is cancelled once the receiver is dropped.
    pub events: UnboundedSender<Event>,
}

/// What the scheduler reports about a job.
#[derive(Debug)]
pub enum Event {
    /// A generated token and the text it released (possibly empty).
    Token {
        id: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// The sequence ended; `text` is the last text it released.
    Done {
        text: String,
        cause: StopCause,
        stats: JobStats,
    },
    /// The job failed inside the engine.
    Error(String),
}

/// Counts and timings of a finished job.
#[derive(Clone, Debug, Default)]
pub struct JobStats {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
    pub queue_s: f64,
    pub prefill_s: f64,
    pub decode_s: f64,
}

/// Messages to the scheduler thread.
pub enum Command {
    Submit(Box<Job>),
    /// Cancel every queued and running job (shutdown with a deadline).
    CancelAll,
    /// Finish the running jobs, then return.
    Shutdown,
}

/// Fixed histogram bucket bounds, in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram with [`LATENCY_BUCKETS`].
#[derive(Debug, Default)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last one is `+Inf`.
    pub buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum in microseconds.
    pub sum_us: AtomicU64,
    pub count: AtomicU64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, seconds: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Live counters the scheduler updates and the server reports.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Jobs submitted and not yet given a slot (the submitter increments it).
    pub queued: AtomicUsize,
    /// Sequences holding a slot.
    pub running: AtomicUsize,
    pub prompt_tokens: AtomicU64,
    pub generated_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub cancelled: AtomicU64,
    pub steps: AtomicU64,
    /// Bytes the key/value caches hold now.
    pub kv_bytes: AtomicU64,
    pub ttft: Histogram,
    pub per_token: Histogram,
}

struct Active<'t> {
    job: Box<Job>,
    seq: Sequence<'t>,
    /// Prompt tokens already in the cache.
    prefilled: usize,
    /// The token to feed next once prefill is done.
    pending: Vec<u32>,
    started: Instant,
    prefill_done: Option<Instant>,
    last_token: Option<Instant>,
    cached: usize,
}

struct Slot<'t> {
    cache: KvCache,
    /// The tokens the cache holds.
    tokens: Vec<u32>,
    active: Option<Active<'t>>,
    last_used: u64,
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Run jobs from `rx` until [`Command::Shutdown`] (or every sender is gone) and nothing runs.
/// Forward passes run in the caller's rayon pool context; wrap the call in `pool.install`.
pub fn run(
    model: &Model,
    tokenizer: &Tokenizer,
    config: &SchedulerConfig,
    rx: Receiver<Command>,
    stats: Arc<SchedulerStats>,
) {
    let parallel = config.parallel.max(1);
    let mut slots: Vec<Slot> = (0..parallel)
        .map(|_| Slot {
            cache: model.new_cache(config.ctx_size, config.cache_type),
            tokens: Vec::new(),
            active: None,
            last_used: 0,
        })
        .collect();
    let mut waiting: VecDeque<Box<Job>> = VecDeque::new();
    let mut clock: u64 = 0;
    let mut shutdown = false;
    let budget = config.prefill_budget.max(1);

    loop {
        // Take commands: block when there is nothing to do.
        let idle = waiting.is_empty() && slots.iter().all(|s| s.active.is_none());
        if idle && shutdown {
            break;
        }
        let mut first = if idle {
            match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(c) => Some(c),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            None
        };
        loop {
            let cmd = match first.take() {
                Some(c) => c,
                None => match rx.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        shutdown = true;
                        break;
                    }
                },
            };
            match cmd {
                Command::Submit(job) => {
                    // A job the model cannot run fails alone instead of failing its batch.
                    let vocab = model.config.vocab_size;
                    let problem = if job.prompt.is_empty() {
                        Some("the prompt is empty".to_string())
                    } else if job.prompt.len() >= config.ctx_size {
                        Some(format!(
                            "the prompt has {} tokens but the context holds {}",
                            job.prompt.len(),
                            config.ctx_size
                        ))
                    } else {
                        job.prompt
                            .iter()
                            .find(|&&t| t as usize >= vocab)
                            .map(|t| format!("token id {t} is out of range ({vocab} ids)"))
                    };
                    match problem {
                        Some(p) => {
                            stats.queued.fetch_sub(1, Ordering::Relaxed);
                            let _ = job.events.send(Event::Error(p));
                        }
                        None => waiting.push_back(job),
                    }
                }
                Command::Shutdown => shutdown = true,
                Command::CancelAll => {
                    for job in waiting.drain(..) {
                        stats.queued.fetch_sub(1, Ordering::Relaxed);
                        stats.cancelled.fetch_add(1, Ordering::Relaxed);
                        let _ = job.events.send(Event::Done {
                            text: String::new(),
                            cause: StopCause::Cancelled,
                            stats: JobStats {
                                prompt_tokens: job.prompt.len(),
                                ..JobStats::default()
                            },
                        });
                    }
                    for slot in slots.iter_mut() {
                        if let Some(mut a) = slot.active.take() {
                            let text = a.seq.finish(StopCause::Cancelled);
                            finish(&mut a, text, &stats);
                        }
                    }
                }
            }
        }

        // Drop queued jobs nobody waits for any more.
        waiting.retain(|j| {
            let keep = !j.events.is_closed();
            if !keep {
                stats.queued.fetch_sub(1, Ordering::Relaxed);
                stats.cancelled.fetch_add(1, Ordering::Relaxed);
                tracing::info!(id = %j.id, "cancelled while queued: the client went away");
            }
            keep
        });
        // Cancel running sequences whose client went away: their slot is free this step.
        let mut gone = 0u64;
        for slot in slots.iter_mut() {
            if slot
                .active
                .as_ref()
                .is_some_and(|a| a.job.events.is_closed())
            {
                if let Some(mut a) = slot.active.take() {
                    a.seq.finish(StopCause::Cancelled);
                    gone += 1;
                    log_done(&a, StopCause::Cancelled);
                }
            }
        }
        if gone > 0 {
            // The freed slots are published before the cancellations are counted, so a
            // metrics read that sees the count also sees the slots released (release/acquire
            // pair with the metrics reader).
            update_running(&slots, &stats);
            stats.cancelled.fetch_add(gone, Ordering::Release);
        }

        // Admit waiting jobs into free slots.
        while !waiting.is_empty() {
            let Some(free) = pick_slot(&slots, &waiting[0].prompt, config.prefix_cache) else {
                break;
            };
            let Some(job) = waiting.pop_front() else {
                break;
            };
            stats.queued.fetch_sub(1, Ordering::Relaxed);
            clock += 1;
            let limit = job.prompt.len() - 1;
            let mut common = if config.prefix_cache {
                common_prefix(&slots[free].tokens, &job.prompt).min(limit)
            } else {
                0
            };
            // A running sequence may hold a longer prefix: copy its cache.
            if config.prefix_cache {
                let best = slots
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| *i != free && s.active.is_some())
                    .map(|(i, s)| {
                        let n = common_prefix(&s.tokens, &job.prompt)
                            .min(limit)
                            .min(s.cache.len());
                        (i, n)
                    })
                    .max_by_key(|(_, n)| *n);
                if let Some((i, n)) = best {
                    if n > common && n >= 16 {
                        let mut cache = slots[i].cache.clone();
                        cache.truncate(n);
                        let tokens = slots[i].tokens[..n].to_vec();
                        slots[free].cache = cache;
                        slots[free].tokens = tokens;
                        common = n;
                    }
                }
            }
            let slot = &mut slots[free];
            slot.cache.truncate(common);
            slot.tokens.truncate(common);
            slot.last_used = clock;
            let seq = Sequence::new(tokenizer, &job.prompt, job.opts.clone());
            stats
                .prompt_tokens
                .fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
            stats
                .cached_tokens
                .fetch_add(common as u64, Ordering::Relaxed);
            let now = Instant::now();
            let mut a = Active {
                job,
                seq,
                prefilled: common,
                pending: Vec::new(),
                started: now,
                prefill_done: None,
                last_token: None,
                cached: common,
            };
            if a.seq.finished.is_some() {
                // max_tokens 0: nothing to generate.
                a.prefill_done = Some(now);
                finish(&mut a, String::new(), &stats);
                continue;
            }
            slot.active = Some(a);
        }
        update_running(&slots, &stats);
        if slots.iter().all(|s| s.active.is_none()) {
            update_kv_bytes(&slots, &stats);
            continue;
        }

        // Build the batch: every decoding sequence, then prompt chunks within the budget.
        let mut left = budget;
        let mut plan: Vec<(usize, usize, bool)> = Vec::new(); // (slot, tokens, wants logits)
        for (i, slot) in slots.iter().enumerate() {
            if let Some(a) = &slot.active {
                if !a.pending.is_empty() {
                    plan.push((i, a.pending.len(), true));
                }
            }
        }
        // Prefill in admission order (oldest first) so that no prompt starves.
        let mut prefilling: Vec<usize> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.active.as_ref().is_some_and(|a| a.pending.is_empty()))
            .map(|(i, _)| i)
            .collect();
        prefilling.sort_by_key(|&i| slots[i].last_used);
        for i in prefilling {
            if left == 0 {
                break;
            }
            let Some(a) = &slots[i].active else { continue };
            let rest = a.job.prompt.len() - a.prefilled;
            let n = rest.min(left);
            left -= n;
            plan.push((i, n, n == rest));
        }
        plan.sort_by_key(|p| p.0);

        let mut inputs: Vec<SeqInput> = Vec::with_capacity(plan.len());
        let mut planned = plan.iter().peekable();
        for (i, slot) in slots.iter_mut().enumerate() {
            let Some(&&(_, n, wants)) = planned.peek().filter(|p| p.0 == i) else {
                continue;
            };
            planned.next();
            let Slot { cache, active, .. } = slot;
            let Some(a) = active.as_ref() else { continue };
            let tokens: &[u32] = if a.pending.is_empty() {
                &a.job.prompt[a.prefilled..a.prefilled + n]
            } else {
                &a.pending
            };
            inputs.push(SeqInput {
                tokens,
                cache,
                logits: if wants { Logits::Last } else { Logits::None },
            });
        }
        let result = model.forward(&mut inputs);
        drop(inputs);
        stats.steps.fetch_add(1, Ordering::Relaxed);
        let logits = match result {
            Ok(l) => l,
            Err(e) => {
                // An engine failure ends every sequence of the batch; the slots are reset.
                tracing::error!("forward pass failed: {e}");
                for &(i, _, _) in &plan {
                    let slot = &mut slots[i];
                    if let Some(a) = slot.active.take() {
                        let _ = a.job.events.send(Event::Error(e.to_string()));
                    }
                    slot.cache.truncate(0);
                    slot.tokens.clear();
                }
                continue;
            }
        };

        let now = Instant::now();
        for (&(i, n, wants), mut l) in plan.iter().zip(logits) {
            let slot = &mut slots[i];
            let Some(a) = slot.active.as_mut() else {
                continue;
            };
            if a.pending.is_empty() {
                slot.tokens
                    .extend_from_slice(&a.job.prompt[a.prefilled..a.prefilled + n]);
                a.prefilled += n;
            } else {
                slot.tokens.extend_from_slice(&a.pending);
                a.pending.clear();
            }
            if !wants {
                continue;
            }
            if a.prefill_done.is_none() {
                a.prefill_done = Some(now);
            }
            let (id, text) = a.seq.accept(&mut l);
            match a.last_token {
                None => stats
                    .ttft
                    .observe(now.duration_since(a.job.arrived).as_secs_f64()),
                Some(t) => stats.per_token.observe(now.duration_since(t).as_secs_f64()),
            }
            a.last_token = Some(now);
            stats.generated_tokens.fetch_add(1, Ordering::Relaxed);
            let logprob = a
                .job
                .opts
                .top_logprobs
                .and_then(|_| a.seq.logprobs.last().cloned());
            let _ = a.job.events.send(Event::Token { id, text, logprob });
            if a.seq.finished.is_some() {
                if let Some(mut a) = slot.active.take() {
                    finish(&mut a, String::new(), &stats);
                }
                continue;
            }
            if slot.cache.len() + 1 > slot.cache.max_len() {
                let rest = a.seq.finish(StopCause::ContextFull);
                if let Some(mut a) = slot.active.take() {
                    finish(&mut a, rest, &stats);
                }
                continue;
            }
            a.pending.push(id);
        }
        update_kv_bytes(&slots, &stats);
        update_running(&slots, &stats);
    }
    stats.running.store(0, Ordering::Relaxed);
}

/// Publish how many slots hold a sequence.
fn update_running(slots: &[Slot], stats: &SchedulerStats) {
    let n = slots.iter().filter(|s| s.active.is_some()).count();
    stats.running.store(n, Ordering::Relaxed);
}

fn update_kv_bytes(slots: &[Slot], stats: &SchedulerStats) {
    let b: usize = slots.iter().map(|s| s.cache.allocated_bytes()).sum();
    stats.kv_bytes.store(b as u64, Ordering::Relaxed);
}

/// The free slot for a prompt: the one whose cached tokens share the longest prefix with it,
/// else the least recently used.
fn pick_slot(slots: &[Slot], prompt: &[u32], prefix_cache: bool) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.active.is_none())
        .max_by_key(|(_, s)| {
            let p = if prefix_cache {
                common_prefix(&s.tokens, prompt)
            } else {
                0
            };
            (p, std::cmp::Reverse(s.last_used))
        })
        .map(|(i, _)| i)
}

fn log_done(a: &Active, cause: StopCause) {
    let now = Instant::now();
    let prefill = a.prefill_done.unwrap_or(now);
    let decode_s = now.duration_since(prefill).as_secs_f64();
    let n = a.seq.generated.len();
    tracing::info!(
        id = %a.job.id,
        prompt_tokens = a.job.prompt.len(),
        cached_tokens = a.cached,
        completion_tokens = n,
        queue_ms = (a.started.duration_since(a.job.arrived).as_secs_f64() * 1e3) as u64,
        prefill_ms = (prefill.duration_since(a.started).as_secs_f64() * 1e3) as u64,
        decode_ms = (decode_s * 1e3) as u64,
        decode_tok_per_s = if decode_s > 0.0 && n > 1 { ((n - 1) as f64 / decode_s) as u64 } else { 0 },
        cause = ?cause,
        "sequence finished"
    );
}

fn finish(a: &mut Active, text: String, stats: &SchedulerStats) {
    let cause = a.seq.finished.unwrap_or(StopCause::Cancelled);
    if cause == StopCause::Cancelled {
        stats.cancelled.fetch_add(1, Ordering::Relaxed);
    }
    log_done(a, cause);
    let now = Instant::now();
    let prefill = a.prefill_done.unwrap_or(now);
    let _ = a.job.events.send(Event::Done {
        text,
        cause,
        stats: JobStats {
            prompt_tokens: a.job.prompt.len(),
            completion_tokens: a.seq.generated.len(),
            cached_tokens: a.cached,
            queue_s: a.started.duration_since(a.job.arrived).as_secs_f64(),
            prefill_s: prefill.duration_since(a.started).as_secs_f64(),
            decode_s: now.duration_since(prefill).as_secs_f64(),
        },
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::generate;
    use crate::sampling::SamplingParams;
    use std::path::Path;

    fn opts(seed: u64, temperature: f32, max_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            sampling: SamplingParams {
                temperature,
                seed,
                ..SamplingParams::default()
            },
            max_tokens,
            stop: vec![],
            eos_ids: vec![],
            ignore_eos: true,
            top_logprobs: Some(2),
        }
    }

    /// Sequences run together, with chunked prefill and prefix reuse, give what each gives
    /// alone through `generate`.
    #[test]
    fn batched_equals_alone() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/models/tiny-gqa");
        let m = crate::loader::load(&dir, &Default::default()).expect("fixture model");
        let prompts: Vec<Vec<u32>> = (0..5u32)
            .map(|i| {
                let mut p = vec![100000];
                p.extend((0..(3 + i * 11)).map(|j| 500 + (j * 97 + i * 13) % 9000));
                p
            })
            .collect();
        // The last prompt extends the first: it may reuse the first's cache.
        let mut prompts = prompts;
        let mut ext = prompts[0].clone();
        ext.extend([42, 43, 44]);
        prompts.push(ext);
        let options: Vec<GenerateOptions> = (0..prompts.len())
            .map(|i| opts(7 + i as u64, if i % 2 == 0 { 0.0 } else { 0.9 }, 9))
            .collect();

        let alone: Vec<(Vec<u32>, String)> = prompts
            .iter()
            .zip(&options)
            .map(|(p, o)| {
                let mut cache = m.model.new_cache(128, CacheType::F32);
                let mut cached = Vec::new();
                let g = generate(
                    &m.model,
                    &m.tokenizer,
                    &mut cache,
                    &mut cached,
                    p,
                    o,
                    &mut |_| true,
                )
                .expect("generate");
                (g.ids, g.text)
            })
            .collect();

        let config = SchedulerConfig {
            parallel: 3,
            ctx_size: 128,
            cache_type: CacheType::F32,
            prefill_budget: 5,
            prefix_cache: true,
        };
        let stats = Arc::new(SchedulerStats::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let mut receivers = Vec::new();
        for (i, (p, o)) in prompts.iter().zip(&options).enumerate() {
            let (etx, erx) = tokio::sync::mpsc::unbounded_channel();
            stats.queued.fetch_add(1, Ordering::Relaxed);
            tx.send(Command::Submit(Box::new(Job {
                id: format!("t{i}"),
                prompt: p.clone(),
                opts: o.clone(),
                arrived: Instant::now(),
                events: etx,
            })))
            .expect("send");
            receivers.push(erx);
        }
        tx.send(Command::Shutdown).expect("send");
        let s2 = stats.clone();
        std::thread::scope(|scope| {
            scope.spawn(|| run(&m.model, &m.tokenizer, &config, rx, s2));
        });
        for (i, mut erx) in receivers.into_iter().enumerate() {
            let (mut ids, mut text, mut lps) = (Vec::new(), String::new(), 0);
            while let Some(ev) = erx.blocking_recv() {
                match ev {
                    Event::Token {
                        id,
                        text: t,
                        logprob,
                    } => {
                        ids.push(id);
                        text += &t;
                        lps += logprob.is_some() as usize;
                    }
                    Event::Done {
                        text: t,
                        cause,
                        stats,
                    } => {
                        text += &t;
                        assert_eq!(cause, StopCause::MaxTokens);
                        assert_eq!(stats.completion_tokens, 9);
                    }
                    Event::Error(e) => panic!("job {i}: {e}"),
                }
            }
            assert_eq!((ids, text), alone[i], "job {i}");
            assert_eq!(lps, 9);
        }
        assert_eq!(stats.queued.load(Ordering::Relaxed), 0);
        assert_eq!(stats.running.load(Ordering::Relaxed), 0);
        assert!(stats.cached_tokens.load(Ordering::Relaxed) > 0);
    }
}
