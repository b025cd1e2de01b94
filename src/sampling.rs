//! From logits to the next token: penalties, temperature, top-k, top-p, min-p, and a seeded RNG.

use crate::error::{Error, Result};

/// Sampling parameters of one request. `temperature == 0` means greedy (argmax).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens whose probability is below min_p × the top probability (0 = off).
    pub min_p: f32,
    /// CTRL-style repetition penalty over earlier tokens (1 = off), as transformers applies it.
    pub repeat_penalty: f32,
    /// How many earlier tokens the repetition penalty looks at (0 = the whole sequence).
    pub repeat_last_n: usize,
    /// OpenAI-style penalties: subtract `frequency × count + presence × (count > 0)`.
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// What transformers' `generate` samples with when a request sets nothing: the model's
    /// `generation_config.json` (sampling only when it says `do_sample`, then its temperature,
    /// top-p and transformers' default top-k of 50), greedy otherwise. The seed is left at 0.
    pub fn from_generation_config(g: &crate::model::GenerationConfig) -> SamplingParams {
        let sampling_on = g.do_sample.unwrap_or(false);
        SamplingParams {
            temperature: if sampling_on {
                g.temperature.unwrap_or(1.0)
            } else {
                0.0
            },
            top_k: if sampling_on {
                g.top_k.unwrap_or(50)
            } else {
                0
            },
            top_p: if sampling_on {
                g.top_p.unwrap_or(1.0)
            } else {
                1.0
            },
            min_p: g.min_p.unwrap_or(0.0),
            repeat_penalty: g.repetition_penalty.unwrap_or(1.0),
            ..SamplingParams::default()
        }
    }

    /// Check ranges; the message names the parameter, what is allowed and what was given.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, allowed: &str, v: f32| {
            Err(Error::Invalid(format!(
                "{name} must be {allowed}, found {v}"
            )))
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", "a number >= 0", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", "in (0, 1]", self.top_p);
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", "in [0, 1]", self.min_p);
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", "a number > 0", self.repeat_penalty);
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad("frequency_penalty", "in [-2, 2]", self.frequency_penalty);
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad("presence_penalty", "in [-2, 2]", self.presence_penalty);
        }
        Ok(())
    }
}

/// A small, fast, seedable generator (SplitMix64 seeding a xoshiro256** state).
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Apply the repetition, frequency and presence penalties to `logits` in place.
pub fn apply_penalties(logits: &mut [f32], history: &[u32], p: &SamplingParams) {
    if p.repeat_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0 {
        return;
    }
    let window = if p.repeat_last_n == 0 {
        history
    } else {
        &history[history.len().saturating_sub(p.repeat_last_n)..]
    };
    let mut counts: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
    for &t in window {
        if (t as usize) < logits.len() {
            *counts.entry(t).or_default() += 1;
        }
    }
    for (&t, &n) in &counts {
        let l = &mut logits[t as usize];
        if p.repeat_penalty != 1.0 {
            *l = if *l > 0.0 {
                *l / p.repeat_penalty
            } else {
                *l * p.repeat_penalty
            };
        }
        *l -= p.frequency_penalty * n as f32 + p.presence_penalty;
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

/// `log_softmax(logits)[id]` for each id, computed in f64 over all logits.
pub fn log_softmax(logits: &[f32]) -> (f64, impl Fn(usize) -> f64 + '_) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max
        + logits
            .iter()
            .map(|v| (*v as f64 - max).exp())
            .sum::<f64>()
            .ln();
    (lse, move |i: usize| logits[i] as f64 - lse)
}

/// The k largest logits as (id, log-probability), best first.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
    let (_, lp) = log_softmax(logits);
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return vec![];
    }
    idx.select_nth_unstable_by(k - 1, |a, b| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    });
    idx.truncate(k);
    idx.sort_by(|a, b| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    });
    idx.into_iter().map(|i| (i, lp(i as usize))).collect()
}

/// Pick the next token from (already penalised) logits. Filters in transformers' order:
/// temperature, top-k, top-p, min-p; then one draw from `rng`.
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> u32 {
    if p.temperature == 0.0 || p.top_k == 1 {
        return argmax(logits) as u32;
    }
    let inv_t = 1.0 / p.temperature;
    // Candidates sorted by logit, best first; ties by id for determinism.
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, v)| (i as u32, v * inv_t))
        .collect();
    if cand.is_empty() {
        return argmax(logits) as u32;
    }
    let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.select_nth_unstable_by(p.top_k - 1, by_logit);
        cand.truncate(p.top_k);
    }
    cand.sort_unstable_by(by_logit);
    let max = cand[0].1;
    let mut probs: Vec<f64> = cand.iter().map(|(_, v)| ((v - max) as f64).exp()).collect();
    let sum: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= sum);
    let mut keep = probs.len();
    if p.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, pr) in probs.iter().enumerate() {
            acc += pr;
            if acc >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    if p.min_p > 0.0 {
        let floor = probs[0] * p.min_p as f64;
        keep = keep.min(probs.iter().take_while(|x| **x >= floor).count().max(1));
    }
    let total: f64 = probs[..keep].iter().sum();
    let mut r = rng.next_f64() * total;
    for (i, pr) in probs[..keep].iter().enumerate() {
        r -= pr;
        if r < 0.0 {
            return cand[i].0;
        }
    }
    cand[keep - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_argmax() {
        let l = [0.1, 3.0, -1.0, 2.9];
        assert_eq!(sample(&l, &SamplingParams::default(), &mut Rng::new(1)), 1);
    }

    #[test]
    fn top_k_one_and_top_p_small_are_greedy() {
        let l = [0.1, 3.0, -1.0, 2.9];
        let mut p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        for s in 0..20 {
            assert_eq!(sample(&l, &p, &mut Rng::new(s)), 1);
        }
        p.top_k = 0;
        p.top_p = 0.01;
        for s in 0..20 {
            assert_eq!(sample(&l, &p, &mut Rng::new(s)), 1);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        // Two tokens with probabilities 0.75 / 0.25 at temperature 1.
        let l = [(3f32).ln(), 0.0];
        let p = SamplingParams {
            temperature: 1.0,
            ..Default::default()
        };
        let mut rng = Rng::new(7);
        let n = 20000;
        let zeros = (0..n).filter(|_| sample(&l, &p, &mut rng) == 0).count();
        let frac = zeros as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let l = [5.0, 4.9, -10.0];
        let p = SamplingParams {
            temperature: 1.0,
            min_p: 0.5,
            ..Default::default()
        };
        let mut rng = Rng::new(3);
        for _ in 0..2000 {
            assert_ne!(sample(&l, &p, &mut rng), 2);
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let l: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let p = SamplingParams {
            temperature: 0.9,
            top_p: 0.9,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut r = Rng::new(42);
            (0..50).map(|_| sample(&l, &p, &mut r)).collect()
        };
        let b: Vec<u32> = {
            let mut r = Rng::new(42);
            (0..50).map(|_| sample(&l, &p, &mut r)).collect()
        };
        let c: Vec<u32> = {
            let mut r = Rng::new(43);
            (0..50).map(|_| sample(&l, &p, &mut r)).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn repetition_penalty_as_transformers() {
        let mut l = [2.0, -2.0, 1.0];
        let p = SamplingParams {
            repeat_penalty: 2.0,
            ..Default::default()
        };
        apply_penalties(&mut l, &[0, 1, 1], &p);
        assert_eq!(l, [1.0, -4.0, 1.0]);
    }

    #[test]
    fn top_logprobs_are_sorted_log_softmax() {
        let l = [1.0f32, 3.0, 2.0];
        let t = top_logprobs(&l, 2);
        assert_eq!(t[0].0, 1);
        assert_eq!(t[1].0, 2);
        let z: f64 = l.iter().map(|v| (*v as f64).exp()).sum();
        assert!((t[0].1 - (3.0 - z.ln())).abs() < 1e-12);
    }
}
