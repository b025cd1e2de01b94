//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use deepseek_text::{ChatMessage, Tokenizer};
use serde_json::Value;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn tokenizer_dir() -> PathBuf {
    fixtures().join("tokenizer/deepseek-llm")
}

pub fn hf_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_hf_dir(&tokenizer_dir()).unwrap())
}

pub struct TextVector {
    pub text: String,
    pub ids: Vec<u32>,
    pub decoded: String,
}

pub struct ChatVector {
    pub messages: Vec<ChatMessage>,
    pub add_generation_prompt: bool,
    pub text: String,
    pub ids: Vec<u32>,
}

fn lines(name: &str) -> Vec<Value> {
    let path = tokenizer_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    text.split('\n')
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

pub fn text_vectors() -> Vec<TextVector> {
    let v: Vec<TextVector> = lines("vectors.jsonl")
        .iter()
        .map(|r| {
            let text = r["text"].as_str().unwrap().to_string();
            let decoded = r
                .get("decoded")
                .and_then(Value::as_str)
                .map_or_else(|| text.clone(), str::to_string);
            TextVector {
                text,
                ids: ids(&r["ids"]),
                decoded,
            }
        })
        .collect();
    assert_eq!(v.len(), 153);
    v
}

pub fn chat_vectors() -> Vec<ChatVector> {
    let v: Vec<ChatVector> = lines("chat_vectors.jsonl")
        .iter()
        .map(|r| ChatVector {
            messages: serde_json::from_value(r["messages"].clone()).unwrap(),
            add_generation_prompt: r["add_generation_prompt"].as_bool().unwrap(),
            text: r["text"].as_str().unwrap().to_string(),
            ids: ids(&r["ids"]),
        })
        .collect();
    assert_eq!(v.len(), 22);
    v
}

/// A small deterministic pseudo-random generator for property tests.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The 13 one-character added tokens that decode to U+FFFD.
pub const BYTE_SYMBOLS: &str = "øöúÿõ÷ûýÀùÁþü";

/// Random text mixing scripts, digits, whitespace, punctuation, emoji and combining marks,
/// without the 13 byte-symbol characters (so it must round-trip).
pub fn random_text(rng: &mut Lcg) -> String {
    const POOLS: &[&str] = &[
        "abcxyzABCXYZ",
        "0123456789",
        " \t\n\r\u{a0}\u{2003}\u{3000}\u{85}\u{1c}",
        ".,;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`",
        "äéßñçÄÉÅæœ",
        "αβγΩЖжш",
        "中文字龘靐日本語ひらがなカタカナ한국어",
        "😀👍🏽🇰🇷🧑‍💻✨",
        "\u{301}\u{308}\u{200d}\u{fe0f}",
        "٠١٢३४५௫½Ⅻ",
        "ąčęėįšųūžłśźż",
        "\u{0}\u{7f}\u{ffff}\u{10ffff}",
    ];
    let len = 1 + rng.below(24);
    let mut s = String::new();
    for _ in 0..len {
        let pool: Vec<char> = POOLS[rng.below(POOLS.len() as u64) as usize]
            .chars()
            .collect();
        let c = pool[rng.below(pool.len() as u64) as usize];
        if !BYTE_SYMBOLS.contains(c) {
            s.push(c);
        }
    }
    s
}
