//! `deepseek run`: one completion.

use super::common::{load_model, ModelArgs, RuntimeArgs, SamplingArgs};
use anyhow::{bail, Context};
use clap::Args;
use deepseek::engine::generate;
use deepseek_text::ChatMessage;
use serde_json::json;
use std::io::{Read, Write};

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// [MODEL] PROMPT: the model when --model is not given, then the prompt (read from stdin
    /// when absent and --prompt-ids is not given).
    #[arg(num_args = 0..=2, value_name = "ARGS")]
    pub args: Vec<String>,
    /// Treat PROMPT as one user message and apply the chat template.
    #[arg(long)]
    pub chat: bool,
    /// A system message (with --chat).
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,
    /// Token ids instead of text, comma-separated; nothing is added to them.
    #[arg(long = "prompt-ids", value_name = "IDS", conflicts_with = "chat")]
    pub prompt_ids: Option<String>,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// With --json: the log-probability of each generated token and its K best alternatives.
    #[arg(long = "top-logprobs", value_name = "K", requires = "json")]
    pub top_logprobs: Option<usize>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn parse_ids(s: &str) -> anyhow::Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>().with_context(|| {
                format!("--prompt-ids: expected comma-separated token ids, found {p:?}")
            })
        })
        .collect()
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let pool = a.runtime.pool()?;
    let (model_pos, prompt) = match (a.model.model.is_some(), a.args.as_slice()) {
        (true, []) => (None, None),
        (true, [p]) => (None, Some(p.clone())),
        (false, [m]) => (Some(m.as_str()), None),
        (false, [m, p]) => (Some(m.as_str()), Some(p.clone())),
        _ => bail!(
            "run: expected [MODEL] PROMPT, found {} arguments besides --model",
            a.args.len()
        ),
    };
    if prompt.is_some() && a.prompt_ids.is_some() {
        bail!("run: give either PROMPT or --prompt-ids, not both");
    }
    let (m, load_s) = load_model(&a.model, model_pos, &pool)?;
    let prompt_ids = if let Some(ids) = &a.prompt_ids {
        let ids = parse_ids(ids)?;
        if ids.is_empty() {
            bail!("--prompt-ids: expected at least one token id, found none");
        }
        ids
    } else {
        let text = match &prompt {
            Some(p) => p.clone(),
            None => {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("reading the prompt from stdin")?;
                s
            }
        };
        if a.chat {
            let mut messages = Vec::new();
            if let Some(sys) = &a.system {
                messages.push(ChatMessage {
                    role: "system".into(),
                    content: sys.clone(),
                });
            }
            messages.push(ChatMessage {
                role: "user".into(),
                content: text,
            });
            m.tokenizer.encode_chat(&messages, true)?
        } else {
            m.tokenizer
                .encode(&text, m.tokenizer.add_bos_by_default())?
        }
    };
    let opts = a.sampling.options(&m, a.top_logprobs)?;
    let ctx = a.runtime.context(&m);
    let mut cache = m.model.new_cache(ctx, a.runtime.cache_type());
    let mut cached = Vec::new();
    let stream = !a.json;
    let mut stdout = std::io::stdout();
    let mut on_text = |t: &str| -> bool {
        if stream {
            // A closed stdout (e.g. piped into `head`) ends generation quietly.
            stdout
                .write_all(t.as_bytes())
                .and_then(|_| stdout.flush())
                .is_ok()
        } else {
            true
        }
    };
    let g = pool.install(|| {
        generate(
            &m.model,
            &m.tokenizer,
            &mut cache,
            &mut cached,
            &prompt_ids,
            &opts,
            &mut on_text,
        )
    })?;
    if a.json {
        let rate = |n: usize, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let mut out = json!({
            "prompt_ids": g.prompt_ids,
            "ids": g.ids,
            "text": g.text,
            "finish_reason": g.cause.finish_reason(),
            "stop_cause": g.cause,
            "usage": {"prompt_tokens": g.prompt_ids.len(), "completion_tokens": g.ids.len()},
            "timings": {
                "load_s": load_s,
                "prefill_tokens_per_s": rate(g.prompt_ids.len(), g.prefill_s),
                "decode_tokens_per_s": rate(g.ids.len().saturating_sub(1), g.decode_s),
            },
        });
        if let Some(lp) = &g.logprobs {
            out["logprobs"] = json!(lp
                .iter()
                .map(|t| json!({"id": t.id, "logprob": t.logprob, "top": t.top.iter().map(|(i, l)| json!([i, l])).collect::<Vec<_>>()}))
                .collect::<Vec<_>>());
        }
        println!("{out}");
    } else {
        println!();
    }
    Ok(())
}
