//! `deepseek tokenize`: text to token ids, reading only the tokenizer.

use super::common::ModelArgs;
use anyhow::{bail, Context};
use clap::Args;
use deepseek_text::ChatMessage;
use serde::Deserialize;
use serde_json::json;
use std::io::{BufRead, Write};

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prepend the BOS token.
    #[arg(long)]
    pub bos: bool,
    /// Read lines {"text": ...} from stdin; write one JSON array of ids per line.
    #[arg(long, conflicts_with_all = ["text", "chat_jsonl"])]
    pub jsonl: bool,
    /// Read lines {"messages": [...], "add_generation_prompt": bool}; write {"text", "ids"} per line.
    #[arg(long = "chat-jsonl", conflicts_with = "text")]
    pub chat_jsonl: bool,
    /// The text to tokenize.
    pub text: Option<String>,
}

#[derive(Deserialize)]
struct TextLine {
    text: String,
}

#[derive(Deserialize)]
struct ChatLine {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    add_generation_prompt: bool,
}

pub fn run(a: TokenizeArgs) -> anyhow::Result<()> {
    let path = a.model.resolve(None)?;
    let tok = deepseek::loader::load_tokenizer(&path, &a.model.load_options())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if a.jsonl || a.chat_jsonl {
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("reading stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            if a.jsonl {
                let l: TextLine = serde_json::from_str(&line).with_context(|| {
                    format!("stdin line {}: expected {{\"text\": string}}", n + 1)
                })?;
                let ids = tok.encode(&l.text, a.bos)?;
                writeln!(out, "{}", json!(ids))?;
            } else {
                let l: ChatLine = serde_json::from_str(&line).with_context(|| {
                    format!("stdin line {}: expected {{\"messages\": [{{\"role\", \"content\"}}], \"add_generation_prompt\": bool}}", n + 1)
                })?;
                let text = tok.apply_chat_template(&l.messages, l.add_generation_prompt)?;
                let ids = tok.encode_chat(&l.messages, l.add_generation_prompt)?;
                writeln!(out, "{}", json!({"text": text, "ids": ids}))?;
            }
        }
        return Ok(());
    }
    let Some(text) = a.text else {
        bail!("tokenize: expected a TEXT argument, --jsonl or --chat-jsonl");
    };
    writeln!(out, "{}", json!(tok.encode(&text, a.bos)?))?;
    Ok(())
}
