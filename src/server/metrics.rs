//! `/metrics` in Prometheus' text exposition format.

use crate::engine::scheduler::{Histogram, SchedulerStats, LATENCY_BUCKETS};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// Answers by endpoint and status code.
#[derive(Default)]
pub struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
}

impl HttpMetrics {
    /// Count one answer.
    pub fn count(&self, endpoint: &str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((endpoint.to_string(), status)).or_insert(0) += 1;
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    let mut cum = 0u64;
    for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
        cum += h.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cum}");
    }
    cum += h.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(
        out,
        "{name}_sum {}",
        h.sum_us.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "{name}_count {}", h.count.load(Ordering::Relaxed));
}

fn scalar(out: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {v}");
}

/// The whole exposition.
pub fn render(http: &HttpMetrics, s: &SchedulerStats, slots: usize, ready: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP deepseek_requests_total HTTP requests answered, by endpoint and status code."
    );
    let _ = writeln!(out, "# TYPE deepseek_requests_total counter");
    if let Ok(m) = http.requests.lock() {
        for ((endpoint, status), n) in m.iter() {
            let _ = writeln!(
                out,
                "deepseek_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
    }
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    scalar(
        &mut out,
        "deepseek_prompt_tokens_total",
        "counter",
        "Prompt tokens of the sequences admitted.",
        l(&s.prompt_tokens),
    );
    scalar(
        &mut out,
        "deepseek_prompt_tokens_cached_total",
        "counter",
        "Prompt tokens served from the prefix cache instead of computed.",
        l(&s.cached_tokens),
    );
    scalar(
        &mut out,
        "deepseek_generation_tokens_total",
        "counter",
        "Tokens generated.",
        l(&s.generated_tokens),
    );
    scalar(
        &mut out,
        "deepseek_sequences_cancelled_total",
        "counter",
        "Sequences cancelled (client gone or shutdown).",
        // Acquire: pairs with the scheduler's release, so the running gauge read below is
        // at least as new as this count.
        s.cancelled.load(Ordering::Acquire),
    );
    scalar(
        &mut out,
        "deepseek_steps_total",
        "counter",
        "Batched forward passes run.",
        l(&s.steps),
    );
    scalar(
        &mut out,
        "deepseek_queue_depth",
        "gauge",
        "Sequences waiting for a slot.",
        s.queued.load(Ordering::Relaxed) as u64,
    );
    scalar(
        &mut out,
        "deepseek_running_sequences",
        "gauge",
        "Sequences holding a slot.",
        s.running.load(Ordering::Relaxed) as u64,
    );
    scalar(
        &mut out,
        "deepseek_slots",
        "gauge",
        "Sequences that may run together (--parallel).",
        slots as u64,
    );
    scalar(
        &mut out,
        "deepseek_kv_cache_bytes",
        "gauge",
        "Bytes the key/value caches hold now.",
        l(&s.kv_bytes),
    );
    scalar(
        &mut out,
        "deepseek_model_ready",
        "gauge",
        "1 once the model is loaded.",
        ready as u64,
    );
    histogram(
        &mut out,
        "deepseek_time_to_first_token_seconds",
        "Time from a request's arrival to its first generated token.",
        &s.ttft,
    );
    histogram(
        &mut out,
        "deepseek_time_per_output_token_seconds",
        "Time between consecutive generated tokens of a sequence.",
        &s.per_token,
    );
    out
}
