//! The tokenizer: loading, encoding, decoding and chat rendering.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use tokenizers::decoders::DecoderWrapper;

use crate::chat::{self, ChatMessage, TemplateTokens, DEEPSEEK_LLM_CHAT_TEMPLATE};
use crate::error::one_line;
use crate::stream::StreamDecoder;
use crate::TextError;

/// Where the built-in template is named in error messages.
pub(crate) const BUILTIN_TEMPLATE_ORIGIN: &str = "built-in DeepSeek LLM template";

/// A tokenizer with its special tokens and chat template.
///
/// Loaded from a Hugging Face folder ([`from_hf_dir`](Self::from_hf_dir)), a single
/// `tokenizer.json` ([`from_file`](Self::from_file)) or GGUF metadata
/// ([`from_gguf_vocab`](Self::from_gguf_vocab)); all three become a
/// [`tokenizers::Tokenizer`] underneath. It is `Send + Sync` and cheap to share behind an
/// `Arc`; cloning copies the vocabulary.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_id: Option<u32>,
    eos_ids: Vec<u32>,
    tokens: TemplateTokens,
    add_bos: bool,
    chat_template: String,
    template_origin: String,
    byte_level: bool,
    vocab_size: usize,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_ids", &self.eos_ids)
            .field("add_bos", &self.add_bos)
            .field("byte_level", &self.byte_level)
            .field("chat_template_origin", &self.template_origin)
            .finish()
    }
}

/// What the loaders found besides the `tokenizers` pipeline.
pub(crate) struct Parts {
    pub bos_token: Option<String>,
    pub eos_tokens: Vec<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    pub add_bos: bool,
    /// (template, origin)
    pub chat_template: Option<(String, String)>,
}

impl Tokenizer {
    /// Load from a Hugging Face folder: `tokenizer.json` and, when present,
    /// `tokenizer_config.json`, `special_tokens_map.json` and `chat_template.jinja`.
    ///
    /// `add_bos_token`, the BOS/EOS tokens and `chat_template` come from
    /// `tokenizer_config.json` (a `chat_template.jinja` file takes precedence, as in
    /// `transformers`); a list of named templates uses the one named `default`. Without
    /// `add_bos_token`, BOS is added by default when the post-processor adds it. Folders
    /// without a template get [`DEEPSEEK_LLM_CHAT_TEMPLATE`].
    pub fn from_hf_dir(dir: &Path) -> Result<Tokenizer, TextError> {
        let inner = load_tokenizer_json(&dir.join("tokenizer.json"))?;
        Self::from_hf_parts(inner, dir)
    }

    /// Load an explicit `tokenizer.json`. If `tokenizer_config.json`,
    /// `special_tokens_map.json` or `chat_template.jinja` sit next to it, they are read as
    /// in [`from_hf_dir`](Self::from_hf_dir).
    pub fn from_file(tokenizer_json: &Path) -> Result<Tokenizer, TextError> {
        let inner = load_tokenizer_json(tokenizer_json)?;
        let dir = tokenizer_json
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::from_hf_parts(inner, &dir)
    }

    fn from_hf_parts(inner: tokenizers::Tokenizer, dir: &Path) -> Result<Tokenizer, TextError> {
        let config_path = dir.join("tokenizer_config.json");
        let map_path = dir.join("special_tokens_map.json");
        let jinja_path = dir.join("chat_template.jinja");
        let config = read_optional_json(&config_path)?;
        let special_map = read_optional_json(&map_path)?;

        let token_field = |name: &str| -> Result<Option<String>, TextError> {
            if let Some(c) = &config {
                if let Some(t) = token_string(&config_path, c, name)? {
                    return Ok(Some(t));
                }
            }
            if let Some(m) = &special_map {
                if let Some(t) = token_string(&map_path, m, name)? {
                    return Ok(Some(t));
                }
            }
            Ok(None)
        };
        let bos_from_config = token_field("bos_token")?;
        let eos_token = token_field("eos_token")?;
        let pad_token = token_field("pad_token")?;
        let unk_token = token_field("unk_token")?;

        let post_bos = post_processor_bos(&inner);
        let add_bos_field = match &config {
            Some(c) => bool_field(&config_path, c, "add_bos_token")?,
            None => None,
        };
        let add_bos = add_bos_field.unwrap_or(post_bos.is_some());
        let bos_token = bos_from_config.or(post_bos);

        let chat_template = if jinja_path.is_file() {
            let text = std::fs::read_to_string(&jinja_path).map_err(|source| TextError::Io {
                path: jinja_path.clone(),
                source,
            })?;
            Some((text, jinja_path.display().to_string()))
        } else {
            match &config {
                Some(c) => config_chat_template(&config_path, c)?,
                None => None,
            }
        };

        let eos_tokens = match eos_token {
            Some(t) => vec![t],
            None => guess_eos(&inner),
        };
        Ok(Self::assemble(
            inner,
            Parts {
                bos_token,
                eos_tokens,
                pad_token,
                unk_token,
                add_bos,
                chat_template,
            },
        ))
    }

    /// Finish construction from a `tokenizers` pipeline and the surrounding metadata.
    pub(crate) fn assemble(mut inner: tokenizers::Tokenizer, parts: Parts) -> Tokenizer {
        // Encoding must never truncate or pad, whatever tokenizer.json says.
        let _ = inner.with_truncation(None);
        inner.with_padding(None);

        let bos_id = parts
            .bos_token
            .as_deref()
            .and_then(|t| inner.token_to_id(t));
        let mut eos_ids = Vec::new();
        for t in &parts.eos_tokens {
            if let Some(id) = inner.token_to_id(t) {
                if !eos_ids.contains(&id) {
                    eos_ids.push(id);
                }
            }
        }
        let byte_level = matches!(inner.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |m| *m as usize + 1);
        let (chat_template, template_origin) = parts.chat_template.unwrap_or_else(|| {
            (
                DEEPSEEK_LLM_CHAT_TEMPLATE.to_string(),
                BUILTIN_TEMPLATE_ORIGIN.to_string(),
            )
        });
        Tokenizer {
            inner,
            bos_id,
            eos_ids,
            tokens: TemplateTokens {
                bos_token: parts.bos_token,
                eos_token: parts.eos_tokens.into_iter().next(),
                pad_token: parts.pad_token,
                unk_token: parts.unk_token,
            },
            add_bos: parts.add_bos,
            chat_template,
            template_origin,
            byte_level,
            vocab_size,
        }
    }

    /// Encode text. Special and added tokens written in the text are recognised as such
    /// (`split_special_tokens = false`). With `add_bos`, BOS (when the tokenizer has one) is
    /// put in front exactly once, whatever the post-processor would do.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>, TextError> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TextError::Encode(one_line(&e.to_string())))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            if let Some(b) = self.bos_id {
                ids.push(b);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Whether prompts should start with BOS by default (`add_bos_token`).
    pub fn add_bos_by_default(&self) -> bool {
        self.add_bos && self.bos_id.is_some()
    }

    /// Decode ids to text. `skip_special` drops special tokens. Ids without a token (e.g.
    /// 100015..102399 for DeepSeek LLM, or anything out of range) decode to nothing.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> String {
        self.inner.decode(ids, skip_special).unwrap_or_default()
    }

    /// The BOS id, if the tokenizer has a BOS token.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// The EOS id(s) the tokenizer knows (for GGUF also end-of-turn / end-of-message).
    pub fn eos_ids(&self) -> Vec<u32> {
        self.eos_ids.clone()
    }

    /// The BOS token text, if known.
    pub fn bos_token(&self) -> Option<&str> {
        self.tokens.bos_token.as_deref()
    }

    /// The (first) EOS token text, if known.
    pub fn eos_token(&self) -> Option<&str> {
        self.tokens.eos_token.as_deref()
    }

    /// The id of a token (vocabulary or added token).
    pub fn token_to_id(&self, s: &str) -> Option<u32> {
        self.inner.token_to_id(s)
    }

    /// The text of a token as stored in the vocabulary (byte-level form for byte-level
    /// BPE), or `None` for ids without a token.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Whether an id is a special token (e.g. BOS, EOS).
    pub fn is_special(&self, id: u32) -> bool {
        self.inner
            .id_to_token(id)
            .is_some_and(|t| self.is_special_token_str(&t))
    }

    /// One more than the largest id that has a token, added tokens included (the number
    /// of ids the tokenizer defines when they are contiguous; 100015 for DeepSeek LLM).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The chat template in use.
    pub fn chat_template(&self) -> &str {
        &self.chat_template
    }

    /// Where the chat template came from (file and field, GGUF key, or built-in).
    pub fn chat_template_origin(&self) -> &str {
        &self.template_origin
    }

    /// Replace the chat template (e.g. from a command-line override). `origin` names it in
    /// error messages.
    pub fn set_chat_template(&mut self, template: String, origin: impl Into<String>) {
        self.chat_template = template;
        self.template_origin = origin.into();
    }

    /// Check that the chat template compiles, without rendering it.
    pub fn check_chat_template(&self) -> Result<(), TextError> {
        chat::check(&self.chat_template, &self.template_origin)
    }

    /// Render a conversation like `transformers`' `apply_chat_template(tokenize=False)`.
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TextError> {
        chat::render(
            &self.chat_template,
            &self.template_origin,
            messages,
            add_generation_prompt,
            &self.tokens,
        )
    }

    /// Render, then tokenize without adding BOS (the template writes it itself), like
    /// `transformers`' `apply_chat_template(tokenize=True)`.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, TextError> {
        let text = self.apply_chat_template(messages, add_generation_prompt)?;
        self.encode(&text, false)
    }

    /// A streaming detokenizer over this tokenizer.
    pub fn stream_decoder(&self, skip_special: bool) -> StreamDecoder<'_> {
        StreamDecoder::new(self, skip_special)
    }

    /// The underlying `tokenizers` pipeline.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    pub(crate) fn is_byte_level(&self) -> bool {
        self.byte_level
    }

    /// The token string the decoder sees for an id (as `tokenizers`' `decode` does).
    pub(crate) fn decoder_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    pub(crate) fn is_special_token_str(&self, token: &str) -> bool {
        self.inner.get_added_vocabulary().is_special_token(token)
    }
}

fn load_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer, TextError> {
    let text = std::fs::read_to_string(path).map_err(|source| TextError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<tokenizers::Tokenizer>().map_err(|e| {
        if let Err(source) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
            TextError::Json {
                path: path.to_path_buf(),
                source,
            }
        } else {
            TextError::BadTokenizerJson {
                path: path.to_path_buf(),
                message: one_line(&e.to_string()),
            }
        }
    })
}

fn read_optional_json(path: &Path) -> Result<Option<Json>, TextError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| TextError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value = serde_json::from_str(&text).map_err(|source| TextError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(value))
}

/// A short description of a JSON value for error messages.
fn describe(v: &Json) -> String {
    let kind = match v {
        Json::Null => return "null".to_string(),
        Json::Bool(b) => return format!("boolean {b}"),
        Json::Number(n) => return format!("number {n}"),
        Json::String(_) => "string",
        Json::Array(_) => "list",
        Json::Object(_) => "object",
    };
    let mut text = v.to_string();
    if text.len() > 60 {
        let mut cut = 60;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    format!("{kind} {text}")
}

fn bad_field(path: &Path, field: &str, expected: &str, found: &Json) -> TextError {
    TextError::BadField {
        path: path.to_path_buf(),
        field: field.to_string(),
        expected: expected.to_string(),
        found: describe(found),
    }
}

/// A special token given as a string or as `{"content": ...}`; absent or null is `None`.
fn token_string(path: &Path, obj: &Json, field: &str) -> Result<Option<String>, TextError> {
    match obj.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(v @ Json::Object(o)) => match o.get("content") {
            Some(Json::String(s)) => Ok(Some(s.clone())),
            _ => Err(bad_field(
                path,
                field,
                "a string or an object with a string \"content\"",
                v,
            )),
        },
        Some(v) => Err(bad_field(
            path,
            field,
            "a string or an object with a string \"content\"",
            v,
        )),
    }
}

fn bool_field(path: &Path, obj: &Json, field: &str) -> Result<Option<bool>, TextError> {
    match obj.get(field) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad_field(path, field, "true or false", v)),
    }
}

/// `chat_template`: a string, or a list of `{name, template}` of which `default` is used.
fn config_chat_template(path: &Path, obj: &Json) -> Result<Option<(String, String)>, TextError> {
    let origin = format!("{} field chat_template", path.display());
    match obj.get("chat_template") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some((s.clone(), origin))),
        Some(v @ Json::Array(list)) => {
            let mut names = Vec::new();
            for entry in list {
                let name = entry.get("name").and_then(Json::as_str);
                let template = entry.get("template").and_then(Json::as_str);
                match (name, template) {
                    (Some("default"), Some(t)) => {
                        return Ok(Some((t.to_string(), format!("{origin} (\"default\")"))))
                    }
                    (Some(n), Some(_)) => names.push(n.to_string()),
                    _ => {
                        return Err(bad_field(
                            path,
                            "chat_template",
                            "a string or a list of {\"name\", \"template\"} objects",
                            v,
                        ))
                    }
                }
            }
            Err(TextError::BadField {
                path: path.to_path_buf(),
                field: "chat_template".to_string(),
                expected: "a template named \"default\" in the list".to_string(),
                found: format!("only {}", names.join(", ")),
            })
        }
        Some(v) => Err(bad_field(
            path,
            "chat_template",
            "a string or a list of {\"name\", \"template\"} objects",
            v,
        )),
    }
}

/// The special token a `TemplateProcessing` post-processor puts first, if any.
fn post_processor_bos(inner: &tokenizers::Tokenizer) -> Option<String> {
    let pp = serde_json::to_value(inner.get_post_processor()?).ok()?;
    find_template_bos(&pp)
}

fn find_template_bos(pp: &Json) -> Option<String> {
    match pp.get("type").and_then(Json::as_str)? {
        "TemplateProcessing" => {
            let first = pp.get("single")?.as_array()?.first()?;
            let id = first.get("SpecialToken")?.get("id")?.as_str()?;
            // The template names a special token; its first token string is the BOS text.
            let tokens = pp
                .get("special_tokens")?
                .get(id)?
                .get("tokens")?
                .as_array()?;
            match tokens.as_slice() {
                [Json::String(t)] => Some(t.clone()),
                _ => None,
            }
        }
        "Sequence" => pp
            .get("processors")?
            .as_array()?
            .iter()
            .find_map(find_template_bos),
        _ => None,
    }
}

/// EOS candidates when no configuration names one: well-known end tokens that exist as
/// special added tokens.
fn guess_eos(inner: &tokenizers::Tokenizer) -> Vec<String> {
    const KNOWN: [&str; 6] = [
        "<｜end▁of▁sentence｜>",
        "</s>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<|eot_id|>",
        "<|im_end|>",
    ];
    KNOWN
        .iter()
        .filter(|t| inner.get_added_vocabulary().is_special_token(t))
        .map(|t| t.to_string())
        .collect()
}
