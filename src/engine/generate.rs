//! One sequence's generation: sampling, stop conditions and streamed text, and the simple
//! single-sequence loop the CLI uses.

use super::stop::StopMatcher;
use crate::error::{Error, Result};
use crate::model::{KvCache, Logits, Model, SeqInput};
use crate::sampling::{apply_penalties, sample, top_logprobs, Rng, SamplingParams};
use deepseek_text::{StreamDecoder, Tokenizer};
use serde::Serialize;
use std::time::Instant;

/// What a request asks of generation besides its prompt.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Stop strings: generation ends at the first, which is not part of the output.
    pub stop: Vec<String>,
    /// Token ids that end generation (unless `ignore_eos`).
    pub eos_ids: Vec<u32>,
    pub ignore_eos: bool,
    /// Return the log-probability of each generated token and this many alternatives.
    pub top_logprobs: Option<usize>,
}

/// Why generation ended, as OpenAI reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` or the context length.
    Length,
}

/// The precise cause behind a [`FinishReason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopCause {
    Eos,
    StopString,
    MaxTokens,
    ContextFull,
    Cancelled,
}

impl StopCause {
    pub fn finish_reason(self) -> FinishReason {
        match self {
            StopCause::Eos | StopCause::StopString | StopCause::Cancelled => FinishReason::Stop,
            StopCause::MaxTokens | StopCause::ContextFull => FinishReason::Length,
        }
    }
}

/// Log-probability of a generated token and the best alternatives at that step, over the raw
/// logits (before penalties and temperature).
#[derive(Clone, Debug, Serialize)]
pub struct TokenLogprob {
    pub id: u32,
    pub logprob: f64,
    pub top: Vec<(u32, f64)>,
}

/// The state of one generating sequence, advanced one token at a time by whoever runs the model.
pub struct Sequence<'a> {
    opts: GenerateOptions,
    rng: Rng,
    /// Prompt and generated ids (what penalties look at).
    history: Vec<u32>,
    pub generated: Vec<u32>,
    /// Text emitted so far (special tokens skipped, stop string excluded).
    pub text: String,
    decoder: StreamDecoder<'a>,
    stop: StopMatcher,
    pub logprobs: Vec<TokenLogprob>,
    pub finished: Option<StopCause>,
}

impl<'a> Sequence<'a> {
    pub fn new(tokenizer: &'a Tokenizer, prompt: &[u32], opts: GenerateOptions) -> Sequence<'a> {
        Sequence {
            rng: Rng::new(opts.sampling.seed),
            history: prompt.to_vec(),
            generated: Vec::new(),
            text: String::new(),
            decoder: tokenizer.stream_decoder(true),
            stop: StopMatcher::new(&opts.stop),
            logprobs: Vec::new(),
            finished: if opts.max_tokens == 0 {
                Some(StopCause::MaxTokens)
            } else {
                None
            },
            opts,
        }
    }

    /// Choose the next token from the logits of the last position and return it with the text
    /// it releases. Sets `finished` when this token ends the sequence.
    pub fn accept(&mut self, logits: &mut [f32]) -> (u32, String) {
        if let Some(k) = self.opts.top_logprobs {
            let top = top_logprobs(logits, k);
            self.logprobs.push(TokenLogprob {
                id: 0,
                logprob: 0.0,
                top,
            });
        }
        let raw_lse = self
            .opts
            .top_logprobs
            .map(|_| crate::sampling::log_softmax(logits).0);
        let raw = raw_lse.map(|lse| (logits.to_vec(), lse));
        apply_penalties(logits, &self.history, &self.opts.sampling);
        let id = sample(logits, &self.opts.sampling, &mut self.rng);
        if let (Some(entry), Some((raw, lse))) = (self.logprobs.last_mut(), raw) {
            entry.id = id;
            entry.logprob = raw[id as usize] as f64 - lse;
        }
        self.history.push(id);
        self.generated.push(id);
        let mut out = String::new();
        let is_eos = !self.opts.ignore_eos && self.opts.eos_ids.contains(&id);
        if is_eos {
            self.finished = Some(StopCause::Eos);
        } else {
            let piece = self.decoder.push(id);
            let o = self.stop.push(&piece);
            out = o.emit;
            if o.stopped {
                self.finished = Some(StopCause::StopString);
            } else if self.generated.len() >= self.opts.max_tokens {
                self.finished = Some(StopCause::MaxTokens);
            }
        }
        if self.finished.is_some() && self.finished != Some(StopCause::StopString) {
            out += &self.flush();
        }
        self.text += &out;
        (id, out)
    }

    /// End the sequence for a reason found outside it (context full, cancelled); returns the
    /// text still held back.
    pub fn finish(&mut self, cause: StopCause) -> String {
        self.finished = Some(cause);
        let rest = self.flush();
        self.text += &rest;
        rest
    }

    fn flush(&mut self) -> String {
        let tail = self.decoder.finish();
        let o = self.stop.push(&tail);
        if o.stopped {
            self.finished = Some(StopCause::StopString);
            return o.emit;
        }
        o.emit + &self.stop.finish()
    }
}

/// The result of [`generate`].
#[derive(Clone, Debug)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    pub ids: Vec<u32>,
    pub text: String,
    pub cause: StopCause,
    pub logprobs: Option<Vec<TokenLogprob>>,
    pub prefill_s: f64,
    pub decode_s: f64,
    /// Prompt tokens served from the cache instead of computed.
    pub reused_tokens: usize,
}

/// Prefill chunk: bounds the activation memory of long prompts.
const PREFILL_CHUNK: usize = 512;

/// Generate from `prompt` with one sequence. `cache` may hold the tokens `cached` from an earlier
/// call (a chat's previous turns): their longest common prefix with `prompt` is reused.
/// `on_text` receives text as it is released and returns `false` to stop.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    cache: &mut KvCache,
    cached: &mut Vec<u32>,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(Error::Invalid(
            "the prompt is empty: expected at least one token".into(),
        ));
    }
    if prompt.len() >= cache.max_len() {
        return Err(Error::Invalid(format!(
            "the prompt has {} tokens but the context holds {}: expected at most {}",
            prompt.len(),
            cache.max_len(),
            cache.max_len() - 1
        )));
    }
    if let Some(bad) = prompt
        .iter()
        .find(|&&t| t as usize >= model.config.vocab_size)
    {
        return Err(Error::Invalid(format!(
            "prompt token id {bad} is out of range: the vocabulary has {} ids",
            model.config.vocab_size
        )));
    }
    opts.sampling.validate()?;
    // Reuse the cached prefix; at least the last prompt token is recomputed for its logits.
    let common = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt.len() - 1);
    cache.truncate(common);
    cached.truncate(common);

    let t0 = Instant::now();
    let mut logits = Vec::new();
    let rest = &prompt[common..];
    for (i, chunk) in rest.chunks(PREFILL_CHUNK).enumerate() {
        let last = (i + 1) * PREFILL_CHUNK >= rest.len();
        let mut s = [SeqInput {
            tokens: chunk,
            cache,
            logits: if last { Logits::Last } else { Logits::None },
        }];
        logits = model.forward(&mut s)?.remove(0);
        cached.extend_from_slice(chunk);
    }
    let prefill_s = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    let mut seq = Sequence::new(tokenizer, prompt, opts.clone());
    while seq.finished.is_none() {
        let (id, text) = seq.accept(&mut logits);
        if !text.is_empty() && !on_text(&text) {
            seq.finish(StopCause::Cancelled);
            break;
        }
        if seq.finished.is_some() {
            break;
        }
        if cache.len() + 1 > cache.max_len() {
            let rest = seq.finish(StopCause::ContextFull);
            if !rest.is_empty() {
                on_text(&rest);
            }
            break;
        }
        let t = [id];
        let mut s = [SeqInput {
            tokens: &t,
            cache,
            logits: Logits::Last,
        }];
        logits = model.forward(&mut s)?.remove(0);
        cached.push(id);
    }
    let decode_s = t1.elapsed().as_secs_f64();
    Ok(Generation {
        prompt_ids: prompt.to_vec(),
        ids: seq.generated.clone(),
        text: seq.text.clone(),
        cause: seq.finished.unwrap_or(StopCause::MaxTokens),
        logprobs: opts.top_logprobs.map(|_| seq.logprobs.clone()),
        prefill_s,
        decode_s,
        reused_tokens: common,
    })
}
