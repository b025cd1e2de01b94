//! Building a tokenizer from GGUF tokenizer metadata.

use std::collections::HashMap;

use serde_json::{json, Value as Json};
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::PostProcessorWrapper;
use tokenizers::AddedToken;

use crate::error::one_line;
use crate::tokenizer::Parts;
use crate::{TextError, Tokenizer};

/// GGUF tokenizer metadata (the engine reads the GGUF file and fills this).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GgufVocab {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) is supported.
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: token texts, the id is the index.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined,
    /// 5 unused, 6 byte. Empty means all normal.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges`: `"a b"` pairs, highest priority first.
    pub merges: Vec<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.eot_token_id`.
    pub eot_id: Option<u32>,
    /// `tokenizer.ggml.eom_token_id`.
    pub eom_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub padding_id: Option<u32>,
    /// `tokenizer.ggml.unknown_token_id`.
    pub unknown_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token`.
    pub add_bos: Option<bool>,
    /// `tokenizer.ggml.add_eos_token` (not used when encoding; prompts never get EOS).
    pub add_eos: Option<bool>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
}

const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_UNUSED: i32 = 5;

// The Split regexes of DeepSeek LLM's tokenizer.json, in order.
const DEEPSEEK_LLM_NEWLINE: &str = "[\r\n]";
const DEEPSEEK_LLM_LETTERS: &str = "\\s?[A-Za-z\u{B5}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{1BA}\u{1BC}-\u{1BF}\u{1C4}-\u{293}\u{295}-\u{2AF}\u{370}-\u{373}\u{376}\u{377}\u{37B}-\u{37D}\u{37F}\u{386}\u{388}-\u{38A}\u{38C}\u{38E}-\u{3A1}\u{3A3}-\u{3F5}\u{3F7}-\u{481}\u{48A}-\u{52F}\u{531}-\u{556}\u{10A0}-\u{10C5}\u{13A0}-\u{13F5}\u{13F8}-\u{13FD}\u{1C90}-\u{1CBA}\u{1CBD}-\u{1CBF}\u{1D00}-\u{1D2B}\u{1D6B}-\u{1D77}\u{1D79}-\u{1D9A}\u{1E00}-\u{1F15}\u{1F18}-\u{1F1D}\u{1F20}-\u{1F45}\u{1F48}-\u{1F4D}\u{1F50}-\u{1F57}\u{1F59}\u{1F5B}\u{1F5D}\u{1F5F}-\u{1F7D}\u{1F80}-\u{1FB4}\u{1FB6}-\u{1FBC}\u{1FBE}\u{1FC2}-\u{1FC4}\u{1FC6}-\u{1FCC}\u{1FD0}-\u{1FD3}\u{1FD6}-\u{1FDB}\u{1FE0}-\u{1FEC}\u{1FF2}-\u{1FF4}\u{1FF6}-\u{1FFC}\u{2102}\u{2107}\u{210A}-\u{2113}\u{2115}\u{2119}-\u{211D}\u{2124}\u{2126}\u{2128}\u{212A}-\u{212D}\u{212F}-\u{2134}\u{2139}\u{213C}-\u{213F}\u{2145}-\u{2149}\u{214E}\u{2183}\u{2184}\u{2C00}-\u{2C7B}\u{2C7E}-\u{2CE4}\u{2CEB}-\u{2CEE}\u{2CF2}\u{2CF3}\u{A640}-\u{A66D}\u{A680}-\u{A69B}\u{A722}-\u{A76F}\u{A771}-\u{A787}\u{A78B}-\u{A78E}\u{AB70}-\u{ABBF}\u{FB00}-\u{FB06}\u{FB13}-\u{FB17}\u{FF21}-\u{FF3A}\u{FF41}-\u{FF5A}\u{10400}-\u{1044F}\u{104B0}-\u{104D3}\u{104D8}-\u{104FB}\u{10C80}-\u{10CB2}\u{10CC0}-\u{10CF2}\u{118A0}-\u{118DF}\u{1E900}-\u{1E943}]+";
const DEEPSEEK_LLM_PUNCT: &str =
    "\\s?[!-/:-~\u{FF01}-\u{FF0F}\u{FF1A}-\u{FF5E}\u{2018}-\u{201F}\u{3000}-\u{3002}]+";
const DEEPSEEK_LLM_TRAILING_SPACE: &str = "\\s+$";
const DEEPSEEK_LLM_CJK: &str = "[\u{4E00}-\u{9FA5}\u{800}-\u{4E00}\u{AC00}-\u{D7FF}]+";

/// GPT-2's pre-tokenizer regex, as llama.cpp writes it.
const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// LLaMA 3's pre-tokenizer regex (case-insensitive contractions spelled out).
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split(regex: &str) -> Json {
    json!({
        "type": "Split",
        "pattern": {"Regex": regex},
        "behavior": "Isolated",
        "invert": false
    })
}

fn byte_level_pre() -> Json {
    json!({
        "type": "ByteLevel",
        "add_prefix_space": false,
        "trim_offsets": true,
        "use_regex": false
    })
}

/// The pre-tokenizer for a `tokenizer.ggml.pre` name, and whether BPE should look whole
/// words up before merging (`ignore_merges`, as LLaMA 3 does).
fn pre_tokenizer_for(pre: &str) -> Result<(Json, bool), TextError> {
    let (mut steps, ignore_merges) = match pre {
        "deepseek-llm" => (
            vec![
                split(DEEPSEEK_LLM_NEWLINE),
                split(DEEPSEEK_LLM_LETTERS),
                split(DEEPSEEK_LLM_PUNCT),
                split(DEEPSEEK_LLM_TRAILING_SPACE),
                split(DEEPSEEK_LLM_CJK),
                json!({"type": "Digits", "individual_digits": true}),
            ],
            false,
        ),
        "llama-bpe" | "llama3" | "llama-v3" => (vec![split(LLAMA3_RE)], true),
        "smollm" => (vec![split(r"\p{N}"), split(GPT2_RE)], false),
        "gpt2" | "gpt-2" => (vec![split(GPT2_RE)], false),
        "default" => (
            vec![
                split(r"[\p{P}\$\+<=>\^~\|]+"),
                split(GPT2_RE),
                split(r"\p{N}+"),
                split("[0-9][0-9][0-9]"),
            ],
            false,
        ),
        other => return Err(TextError::UnknownPre(other.to_string())),
    };
    steps.push(byte_level_pre());
    Ok((
        json!({"type": "Sequence", "pretokenizers": steps}),
        ignore_merges,
    ))
}

/// GGUF conversions fill ids the original tokenizer lacks with `[PAD<id>]` placeholders.
/// They are not real tokens, whatever their type says.
fn is_pad_placeholder(text: &str, id: usize) -> bool {
    text.strip_prefix("[PAD")
        .and_then(|r| r.strip_suffix(']'))
        .is_some_and(|n| n == id.to_string())
}

/// Split a merge `"a b"` at the first space after the first character.
fn split_merge(m: &str) -> Option<(&str, &str)> {
    let first = m.chars().next()?.len_utf8();
    let pos = m[first..].find(' ')? + first;
    Some((&m[..pos], &m[pos + 1..]))
}

fn gguf_err(field: &str, message: String) -> TextError {
    TextError::Gguf {
        field: field.to_string(),
        message,
    }
}

impl Tokenizer {
    /// Build a tokenizer from GGUF tokenizer metadata, as a `tokenizers` pipeline.
    ///
    /// Supports `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers
    /// `deepseek-llm` (identical to DeepSeek LLM's tokenizer.json), `llama-bpe` (also
    /// `llama3`, `llama-v3`), `smollm`, `gpt2` (`gpt-2`) and `default` (also used when
    /// `pre` is missing), as llama.cpp defines them. Control tokens become special added
    /// tokens, user-defined tokens non-special added tokens; unused tokens and `[PAD<id>]`
    /// placeholders get no token at all (never matched in text, decoded to nothing).
    pub fn from_gguf_vocab(v: &GgufVocab) -> Result<Tokenizer, TextError> {
        if v.model != "gpt2" {
            return Err(TextError::UnsupportedModel(v.model.clone()));
        }
        let n = v.tokens.len();
        if n == 0 {
            return Err(gguf_err(
                "tokenizer.ggml.tokens",
                "expected a non-empty list of tokens, found an empty one".to_string(),
            ));
        }
        if u32::try_from(n).is_err() {
            return Err(gguf_err(
                "tokenizer.ggml.tokens",
                format!("expected at most {} tokens, found {n}", u32::MAX),
            ));
        }
        if !v.token_types.is_empty() && v.token_types.len() != n {
            return Err(gguf_err(
                "tokenizer.ggml.token_type",
                format!(
                    "expected one entry per token ({n}), found {}",
                    v.token_types.len()
                ),
            ));
        }
        let pre_name = v.pre.as_deref().unwrap_or("default");
        let (pre_json, ignore_merges) = pre_tokenizer_for(pre_name)?;
        let pre: PreTokenizerWrapper = serde_json::from_value(pre_json)
            .map_err(|e| TextError::GgufBuild(format!("pre-tokenizer {pre_name}: {e}")))?;

        // Vocabulary: every token that is not unused, first occurrence of a text wins.
        let mut defined = vec![false; n];
        let mut vocab: HashMap<String, u32> = HashMap::with_capacity(n);
        let mut specials = Vec::new();
        let mut user_defined = Vec::new();
        for (i, text) in v.tokens.iter().enumerate() {
            let ty = v.token_types.get(i).copied().unwrap_or(1);
            if ty == TYPE_UNUSED || is_pad_placeholder(text, i) || text.is_empty() {
                continue;
            }
            if vocab.contains_key(text) {
                continue;
            }
            // n fits in u32 (checked above).
            vocab.insert(text.clone(), i as u32);
            defined[i] = true;
            match ty {
                TYPE_CONTROL => specials.push(AddedToken::from(text.clone(), true)),
                TYPE_USER_DEFINED => user_defined.push(AddedToken::from(text.clone(), false)),
                _ => {}
            }
        }

        let mut merges = Vec::with_capacity(v.merges.len());
        for m in &v.merges {
            let Some((a, b)) = split_merge(m) else {
                continue;
            };
            if vocab.contains_key(a)
                && vocab.contains_key(b)
                && vocab.contains_key(&format!("{a}{b}"))
            {
                merges.push((a.to_string(), b.to_string()));
            }
        }

        let bpe = BPE::builder()
            .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| TextError::GgufBuild(one_line(&e.to_string())))?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre));
        inner.with_decoder(Some(ByteLevel::new(false, true, true)));
        // Added tokens are also in the model vocabulary, so they keep their GGUF ids.
        inner
            .add_special_tokens(specials)
            .map_err(|e| TextError::GgufBuild(one_line(&e.to_string())))?;
        inner
            .add_tokens(user_defined)
            .map_err(|e| TextError::GgufBuild(one_line(&e.to_string())))?;

        let token_of = |field: &str, id: Option<u32>| -> Result<Option<String>, TextError> {
            let Some(id) = id else { return Ok(None) };
            let idx = id as usize;
            if idx >= n {
                return Err(gguf_err(
                    field,
                    format!("expected an id below {n} (the number of tokens), found {id}"),
                ));
            }
            Ok(defined[idx].then(|| v.tokens[idx].clone()))
        };
        let bos_token = token_of("tokenizer.ggml.bos_token_id", v.bos_id)?;
        let mut eos_tokens = Vec::new();
        for (field, id) in [
            ("tokenizer.ggml.eos_token_id", v.eos_id),
            ("tokenizer.ggml.eot_token_id", v.eot_id),
            ("tokenizer.ggml.eom_token_id", v.eom_id),
        ] {
            if let Some(t) = token_of(field, id)? {
                if !eos_tokens.contains(&t) {
                    eos_tokens.push(t);
                }
            }
        }
        let pad_token = token_of("tokenizer.ggml.padding_token_id", v.padding_id)?;
        let unk_token = token_of("tokenizer.ggml.unknown_token_id", v.unknown_id)?;
        let add_bos = v
            .add_bos
            .unwrap_or(matches!(pre_name, "llama-bpe" | "llama3" | "llama-v3"))
            && bos_token.is_some();

        if let (true, Some(bos)) = (add_bos, &bos_token) {
            let pp: PostProcessorWrapper = serde_json::from_value(bos_post_processor(bos, v))
                .map_err(|e| TextError::GgufBuild(format!("post-processor: {e}")))?;
            inner.with_post_processor(Some(pp));
        }

        Ok(Tokenizer::assemble(
            inner,
            Parts {
                bos_token,
                eos_tokens,
                pad_token,
                unk_token,
                add_bos,
                chat_template: v
                    .chat_template
                    .clone()
                    .map(|t| (t, "GGUF tokenizer.chat_template".to_string())),
            },
        ))
    }
}

/// A `TemplateProcessing` that puts BOS in front, like DeepSeek LLM's tokenizer.json.
fn bos_post_processor(bos: &str, v: &GgufVocab) -> Json {
    let id = v.bos_id.unwrap_or(0);
    json!({
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}}
        ],
        "pair": [
            {"SpecialToken": {"id": bos, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": bos, "type_id": 1}},
            {"Sequence": {"id": "B", "type_id": 1}}
        ],
        "special_tokens": {bos: {"id": bos, "ids": [id], "tokens": [bos]}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_splitting() {
        assert_eq!(split_merge("Ġ t"), Some(("Ġ", "t")));
        assert_eq!(split_merge("  x"), Some((" ", "x")));
        assert_eq!(split_merge("ab"), None);
        assert_eq!(split_merge(""), None);
    }

    #[test]
    fn pad_placeholders() {
        assert!(is_pad_placeholder("[PAD100015]", 100015));
        assert!(!is_pad_placeholder("[PAD100015]", 100016));
        assert!(!is_pad_placeholder("[PAD]", 7));
    }

    fn pieces(pre: &str, text: &str) -> Vec<String> {
        use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
        let (json, _) = pre_tokenizer_for(pre).unwrap();
        let p: PreTokenizerWrapper = serde_json::from_value(json).unwrap();
        let mut s = PreTokenizedString::from(text);
        p.pre_tokenize(&mut s).unwrap();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| {
                let mut bytes = Vec::new();
                crate::bytes::token_bytes(piece, &mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect()
    }

    #[test]
    fn pre_tokenizers_split_like_llama_cpp() {
        assert_eq!(
            pieces("gpt2", "Hello  world's 12345!?"),
            ["Hello", " ", " world", "'s", " 12345", "!?"]
        );
        assert_eq!(
            pieces("llama-bpe", "Hello world'S 12345\n\n x"),
            ["Hello", " world", "'S", " ", "123", "45", "\n\n", " x"]
        );
        assert_eq!(pieces("smollm", "a 123b"), ["a", " ", "1", "2", "3", "b"]);
        assert_eq!(
            pieces("default", "Hello, world 12345"),
            ["Hello", ",", " world", " ", "123", "45"]
        );
        assert_eq!(
            pieces("deepseek-llm", "Hi 2024年\n"),
            ["Hi", " ", "2", "0", "2", "4", "年", "\n"]
        );
    }

    #[test]
    fn every_pre_builds() {
        for pre in ["deepseek-llm", "llama-bpe", "smollm", "gpt2", "default"] {
            let (json, _) = pre_tokenizer_for(pre).unwrap();
            let _: PreTokenizerWrapper = serde_json::from_value(json).unwrap();
        }
        let err = pre_tokenizer_for("qwen9").unwrap_err().to_string();
        assert!(
            err.contains("unknown tokenizer.ggml.pre \"qwen9\""),
            "{err}"
        );
        assert!(err.contains("--tokenizer tokenizer.json"), "{err}");
    }
}
