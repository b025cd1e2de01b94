//! Request bodies of OpenAI's chat and completions endpoints, and their translation into what
//! the scheduler runs.

use super::error::ApiError;
use crate::engine::GenerateOptions;
use crate::loader::LoadedModel;
use crate::sampling::SamplingParams;
use deepseek_text::ChatMessage;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

/// Most choices (`n`) one request may ask for.
pub const MAX_N: usize = 16;
/// Most stop strings, as OpenAI allows.
pub const MAX_STOP: usize = 4;

/// Parse a JSON body into `T`; the error names the offending field.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            de.end().map_err(|e| {
                ApiError::invalid(format!(
                    "the request body is not valid JSON: {e}; expected one JSON object"
                ))
            })?;
            Ok(v)
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                Err(ApiError::invalid(format!(
                    "the request body is not valid JSON: {inner}; expected one JSON object"
                )))
            } else if path == "." || path.is_empty() {
                let msg = inner.to_string();
                let missing = msg
                    .strip_prefix("missing field `")
                    .and_then(|r| r.split('`').next())
                    .map(str::to_string);
                let mut e = ApiError::invalid(format!("invalid request body: {msg}"));
                if let Some(field) = missing {
                    e.param = Some(field);
                    e.code = Some("missing_required_parameter");
                }
                Err(e)
            } else {
                Err(ApiError::param(&path, format!("{path}: {inner}")).with_code("invalid_type"))
            }
        }
    }
}

/// `stream_options`.
#[derive(Deserialize, Debug, Default)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// One message of `messages`.
#[derive(Deserialize, Debug)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Value,
    #[allow(dead_code)]
    pub name: Option<String>,
}

/// Fields common to both endpoints.
#[derive(Deserialize, Debug, Default)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repeat_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub stop: Option<Value>,
    pub seed: Option<i64>,
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    pub ignore_eos: Option<bool>,
    pub best_of: Option<i64>,
}

/// `POST /v1/chat/completions`.
#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    /// Parsed separately from the same body (so that errors name their field).
    #[serde(skip)]
    pub common: Common,
    pub max_completion_tokens: Option<i64>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    pub tools: Option<Value>,
    pub functions: Option<Value>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
}

/// `POST /v1/completions`.
#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Value,
    /// Parsed separately from the same body (so that errors name their field).
    #[serde(skip)]
    pub common: Common,
    pub logprobs: Option<i64>,
    pub echo: Option<bool>,
    pub suffix: Option<Value>,
}

/// How a response reports log-probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogprobsStyle {
    None,
    /// Chat: `logprobs.content[]`.
    Chat,
    /// Completions: `tokens`, `token_logprobs`, `top_logprobs`, `text_offset`.
    Legacy,
}

/// A validated request, ready for the scheduler.
#[derive(Debug)]
pub struct Plan {
    /// Token ids of each prompt.
    pub prompts: Vec<Vec<u32>>,
    /// Choices per prompt.
    pub n: usize,
    /// Options of choice 0; choice `i` uses seed + i.
    pub opts: GenerateOptions,
    pub stream: bool,
    pub include_usage: bool,
    pub logprobs: LogprobsStyle,
}

fn role_ok(role: &str) -> Option<&'static str> {
    match role {
        "system" | "developer" => Some("system"),
        "user" => Some("user"),
        "assistant" => Some("assistant"),
        _ => None,
    }
}

/// The text of a message's `content`: a string or an array of text parts.
fn content_text(v: &Value, i: usize, role: &str) -> Result<String, ApiError> {
    let param = format!("messages[{i}].content");
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Null if role == "assistant" => Ok(String::new()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (j, p) in parts.iter().enumerate() {
                let pp = format!("{param}[{j}]");
                let ty = p.get("type").and_then(Value::as_str);
                match ty {
                    Some("text") => match p.get("text") {
                        Some(Value::String(t)) => out.push_str(t),
                        _ => {
                            return Err(ApiError::param(
                                format!("{pp}.text"),
                                format!("{pp}.text: expected a string"),
                            ))
                        }
                    },
                    Some(other) => {
                        return Err(ApiError::unsupported(
                            &format!("{pp}.type"),
                            format!(
                                "{pp}.type: content parts of type '{other}' are not supported; \
                                 expected 'text'"
                            ),
                        ))
                    }
                    None => {
                        return Err(ApiError::param(
                            format!("{pp}.type"),
                            format!("{pp}: expected an object with \"type\": \"text\""),
                        ))
                    }
                }
            }
            Ok(out)
        }
        other => Err(ApiError::param(
            &param,
            format!(
                "{param}: expected a string or an array of text parts, found {}",
                kind(other)
            ),
        )
        .with_code("invalid_type")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn stop_strings(v: &Option<Value>) -> Result<Vec<String>, ApiError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(vec![]),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for (i, x) in a.iter().enumerate() {
                match x {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(ApiError::param(
                            format!("stop[{i}]"),
                            format!("stop[{i}]: expected a string, found {}", kind(other)),
                        )
                        .with_code("invalid_type"))
                    }
                }
            }
            out
        }
        Some(other) => {
            return Err(ApiError::param(
                "stop",
                format!(
                    "stop: expected a string or an array of strings, found {}",
                    kind(other)
                ),
            )
            .with_code("invalid_type"))
        }
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::param(
            "stop",
            format!(
                "stop: at most {MAX_STOP} stop strings are allowed, found {}",
                list.len()
            ),
        ));
    }
    Ok(list.into_iter().filter(|s| !s.is_empty()).collect())
}

/// A fresh seed when the request gives none.
pub fn random_seed() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = t ^ COUNTER
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .rotate_left(17);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sampling and stopping options from the request over the model's generation_config.json over
/// transformers' defaults (as `deepseek run` applies them). `max_tokens` is checked against the
/// room the longest prompt leaves in the context.
fn options(
    c: &Common,
    max_tokens: Option<i64>,
    max_tokens_param: &str,
    top_logprobs: Option<usize>,
    model: &LoadedModel,
    ctx: usize,
    longest_prompt: usize,
) -> Result<GenerateOptions, ApiError> {
    if let Some(b) = &c.logit_bias {
        if !b.is_empty() {
            return Err(ApiError::unsupported(
                "logit_bias",
                "logit_bias is not supported by this server",
            ));
        }
    }
    if let Some(b) = c.best_of {
        if b != 1 {
            return Err(ApiError::unsupported(
                "best_of",
                "best_of is not supported by this server; expected 1 or nothing",
            ));
        }
    }
    let room = ctx.saturating_sub(longest_prompt);
    let max_tokens = match max_tokens {
        None => model.generation.max_new_tokens.unwrap_or(room).min(room),
        Some(m) if m < 1 => {
            return Err(ApiError::param(
                max_tokens_param,
                format!("{max_tokens_param} must be at least 1, found {m}"),
            ))
        }
        Some(m) if m as u64 > room as u64 => {
            return Err(ApiError::param(
                max_tokens_param,
                format!(
                    "this model's context length is {ctx} tokens; the prompt has \
                     {longest_prompt}, so {max_tokens_param} may be at most {room}, found {m}"
                ),
            )
            .with_code("context_length_exceeded"))
        }
        Some(m) => m as usize,
    };
    if let Some(t) = c.temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::param(
                "temperature",
                format!("temperature must be in [0, 2], found {t}"),
            ));
        }
    }
    if let Some(k) = c.top_k {
        if k < 0 {
            return Err(ApiError::param(
                "top_k",
                format!("top_k must be >= 0, found {k}"),
            ));
        }
    }
    let d = SamplingParams::from_generation_config(&model.generation);
    let sampling = SamplingParams {
        temperature: c.temperature.unwrap_or(d.temperature),
        top_k: c.top_k.map(|k| k as usize).unwrap_or(d.top_k),
        top_p: c.top_p.unwrap_or(d.top_p),
        min_p: c.min_p.unwrap_or(d.min_p),
        repeat_penalty: c.repeat_penalty.unwrap_or(d.repeat_penalty),
        frequency_penalty: c.frequency_penalty.unwrap_or(0.0),
        presence_penalty: c.presence_penalty.unwrap_or(0.0),
        seed: c.seed.map(|s| s as u64).unwrap_or_else(random_seed),
        ..SamplingParams::default()
    };
    if let Err(e) = sampling.validate() {
        let msg = e.to_string();
        let param = msg.split_whitespace().next().unwrap_or("").to_string();
        return Err(ApiError::param(param, msg));
    }
    let eos_ids = model.eos_ids();
    Ok(GenerateOptions {
        sampling,
        max_tokens,
        stop: stop_strings(&c.stop)?,
        eos_ids,
        ignore_eos: c.ignore_eos.unwrap_or(false),
        top_logprobs,
    })
}

fn choices(c: &Common) -> Result<usize, ApiError> {
    match c.n {
        None => Ok(1),
        Some(n) if (1..=MAX_N as i64).contains(&n) => Ok(n as usize),
        Some(n) => Err(ApiError::param(
            "n",
            format!("n must be in [1, {MAX_N}], found {n}"),
        )),
    }
}

fn check_prompt(ids: &[u32], param: &str, model: &LoadedModel, ctx: usize) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Err(ApiError::param(
            param,
            format!("{param}: the prompt is empty; expected at least one token"),
        ));
    }
    if ids.len() >= ctx {
        return Err(ApiError::param(
            param,
            format!(
                "this model's context length is {ctx} tokens, but the prompt has {} tokens; \
                 it may have at most {}",
                ids.len(),
                ctx - 1
            ),
        )
        .with_code("context_length_exceeded"));
    }
    let vocab = model.model.config.vocab_size;
    if let Some(bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::param(
            param,
            format!("{param}: token id {bad} is out of range; the vocabulary has {vocab} ids"),
        ));
    }
    Ok(())
}

fn stream_flags(c: &Common) -> (bool, bool) {
    let stream = c.stream.unwrap_or(false);
    let usage = stream
        && c.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    (stream, usage)
}

/// Parse a chat request body.
pub fn parse_chat(body: &[u8]) -> Result<ChatRequest, ApiError> {
    let mut r: ChatRequest = parse_body(body)?;
    r.common = parse_body(body)?;
    Ok(r)
}

/// Parse a completions request body.
pub fn parse_completion(body: &[u8]) -> Result<CompletionRequest, ApiError> {
    let mut r: CompletionRequest = parse_body(body)?;
    r.common = parse_body(body)?;
    Ok(r)
}

/// Validate a chat request and render its prompt with the model's chat template.
pub fn plan_chat(r: &ChatRequest, model: &LoadedModel, ctx: usize) -> Result<Plan, ApiError> {
    for (field, v) in [("tools", &r.tools), ("functions", &r.functions)] {
        if v.as_ref()
            .is_some_and(|v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(ApiError::unsupported(
                field,
                format!("{field}: tool and function calling are not supported by this server"),
            ));
        }
    }
    if let Some(v) = &r.tool_choice {
        if !(v.is_null() || v == "none" || v == "auto") {
            return Err(ApiError::unsupported(
                "tool_choice",
                "tool_choice: tool calling is not supported by this server",
            ));
        }
    }
    if let Some(f) = &r.response_format {
        let ty = f.get("type").and_then(Value::as_str);
        if !(f.is_null() || ty == Some("text")) {
            return Err(ApiError::unsupported(
                "response_format",
                "response_format: only {\"type\": \"text\"} is supported by this server",
            ));
        }
    }
    if r.messages.is_empty() {
        return Err(ApiError::param(
            "messages",
            "messages: expected at least one message",
        ));
    }
    let mut messages = Vec::with_capacity(r.messages.len());
    for (i, m) in r.messages.iter().enumerate() {
        let Some(role) = role_ok(&m.role) else {
            return Err(ApiError::param(
                format!("messages[{i}].role"),
                format!(
                    "messages[{i}].role: unknown role '{}'; supported roles are 'system', \
                     'developer', 'user' and 'assistant'",
                    m.role
                ),
            ));
        };
        messages.push(ChatMessage::new(role, content_text(&m.content, i, role)?));
    }
    let prompt = model
        .tokenizer
        .encode_chat(&messages, true)
        .map_err(|e| ApiError::param("messages", format!("messages: {e}")))?;
    check_prompt(&prompt, "messages", model, ctx)?;
    let (max_tokens, param) = match (r.max_completion_tokens, r.common.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let top = match (r.logprobs.unwrap_or(false), r.top_logprobs) {
        (_, Some(k)) if !(0..=20).contains(&k) => {
            return Err(ApiError::param(
                "top_logprobs",
                format!("top_logprobs must be in [0, 20], found {k}"),
            ))
        }
        (false, Some(_)) => {
            return Err(ApiError::param(
                "top_logprobs",
                "top_logprobs requires logprobs to be true",
            ))
        }
        (true, k) => Some(k.unwrap_or(0) as usize),
        (false, None) => None,
    };
    let opts = options(&r.common, max_tokens, param, top, model, ctx, prompt.len())?;
    let (stream, include_usage) = stream_flags(&r.common);
    Ok(Plan {
        prompts: vec![prompt],
        n: choices(&r.common)?,
        opts,
        stream,
        include_usage,
        logprobs: if top.is_some() {
            LogprobsStyle::Chat
        } else {
            LogprobsStyle::None
        },
    })
}

fn ids_of(v: &[Value]) -> Option<Vec<u32>> {
    v.iter()
        .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

/// Validate a completions request and tokenize its prompts.
pub fn plan_completion(
    r: &CompletionRequest,
    model: &LoadedModel,
    ctx: usize,
) -> Result<Plan, ApiError> {
    if r.echo.unwrap_or(false) {
        return Err(ApiError::unsupported(
            "echo",
            "echo is not supported by this server; expected false or nothing",
        ));
    }
    if r.suffix
        .as_ref()
        .is_some_and(|s| !s.is_null() && s.as_str() != Some(""))
    {
        return Err(ApiError::unsupported(
            "suffix",
            "suffix (insertion) is not supported by this server",
        ));
    }
    let encode = |t: &str| -> Result<Vec<u32>, ApiError> {
        model
            .tokenizer
            .encode(t, model.tokenizer.add_bos_by_default())
            .map_err(|e| ApiError::param("prompt", format!("prompt: {e}")))
    };
    let bad = || {
        ApiError::param(
            "prompt",
            "prompt: expected a string, an array of strings, an array of token ids, or an \
             array of arrays of token ids",
        )
        .with_code("invalid_type")
    };
    let prompts: Vec<Vec<u32>> = match &r.prompt {
        Value::String(s) => vec![encode(s)?],
        Value::Array(a) if a.is_empty() => {
            return Err(ApiError::param(
                "prompt",
                "prompt: the prompt is empty; expected at least one token",
            ))
        }
        Value::Array(a) => match &a[0] {
            Value::Number(_) => vec![ids_of(a).ok_or_else(bad)?],
            Value::String(_) => a
                .iter()
                .map(|x| x.as_str().ok_or_else(bad).and_then(encode))
                .collect::<Result<_, _>>()?,
            Value::Array(_) => a
                .iter()
                .map(|x| x.as_array().and_then(|v| ids_of(v)).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        },
        _ => return Err(bad()),
    };
    for (i, p) in prompts.iter().enumerate() {
        let param = if prompts.len() == 1 {
            "prompt".to_string()
        } else {
            format!("prompt[{i}]")
        };
        check_prompt(p, &param, model, ctx)?;
    }
    let top = match r.logprobs {
        None => None,
        Some(k) if (0..=5).contains(&k) => Some(k as usize),
        Some(k) => {
            return Err(ApiError::param(
                "logprobs",
                format!("logprobs must be in [0, 5], found {k}"),
            ))
        }
    };
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let room = ctx.saturating_sub(longest);
    let opts = options(
        &r.common,
        r.common.max_tokens.or(Some(16.min(room) as i64)),
        "max_tokens",
        top,
        model,
        ctx,
        longest,
    )?;
    let (stream, include_usage) = stream_flags(&r.common);
    let n = choices(&r.common)?;
    if n * prompts.len() > MAX_N {
        return Err(ApiError::param(
            "n",
            format!(
                "n × the number of prompts must be at most {MAX_N}, found {}",
                n * prompts.len()
            ),
        ));
    }
    Ok(Plan {
        prompts,
        n,
        opts,
        stream,
        include_usage,
        logprobs: if top.is_some() {
            LogprobsStyle::Legacy
        } else {
            LogprobsStyle::None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_field() {
        let e = parse_chat(br#"{"messages": [], "max_tokens": "5"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_tokens"));
        assert_eq!(e.status, 400);
        let e = parse_chat(br#"{"max_tokens": 5}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = parse_chat(br#"{"messages": [{"role": 5}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages[0].role"));
        for bad in [&b""[..], b"{", b"[]", b"null", b"{} {}", b"\xff\xfe"] {
            let e = parse_completion(bad).unwrap_err();
            assert_eq!(e.status, 400);
        }
        let r = parse_chat(br#"{"messages": [], "stop": ["a"], "temperature": 0, "seed": -1}"#)
            .expect("valid");
        assert_eq!(r.common.temperature, Some(0.0));
        assert_eq!(r.common.seed, Some(-1));
    }

    #[test]
    fn stop_strings_string_or_list() {
        assert_eq!(stop_strings(&None).unwrap(), Vec::<String>::new());
        assert_eq!(
            stop_strings(&Some(Value::from("x"))).unwrap(),
            vec!["x".to_string()]
        );
        assert_eq!(
            stop_strings(&Some(serde_json::json!(["a", "", "b"]))).unwrap(),
            vec!["a".to_string(), "b".to_string()]
        );
        assert!(stop_strings(&Some(serde_json::json!([1]))).is_err());
        assert!(stop_strings(&Some(serde_json::json!(["a", "b", "c", "d", "e"]))).is_err());
    }

    #[test]
    fn content_parts() {
        let v = serde_json::json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]);
        assert_eq!(content_text(&v, 0, "user").unwrap(), "ab");
        let img = serde_json::json!([{"type": "image_url", "image_url": {"url": "x"}}]);
        assert!(content_text(&img, 0, "user").is_err());
        assert!(content_text(&Value::Null, 0, "user").is_err());
        assert_eq!(content_text(&Value::Null, 0, "assistant").unwrap(), "");
    }
}
