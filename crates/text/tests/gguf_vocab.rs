//! The DeepSeek LLM tokenizer rebuilt from GGUF metadata gives the same ids as
//! tokenizer.json.

mod common;

use std::sync::OnceLock;

use common::*;
use deepseek_gguf::GgufFile;
use deepseek_text::{GgufVocab, Tokenizer, DEEPSEEK_LLM_CHAT_TEMPLATE};

fn read_vocab() -> GgufVocab {
    let file = GgufFile::open(&tokenizer_dir().join("ggml-vocab-deepseek-llm.gguf")).unwrap();
    let strings = |key: &str| -> Vec<String> {
        file.get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    };
    let id = |key: &str| file.get(key).and_then(|v| v.as_u64()).map(|v| v as u32);
    let flag = |key: &str| file.get(key).and_then(|v| v.as_bool());
    GgufVocab {
        model: file
            .get("tokenizer.ggml.model")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string(),
        pre: file
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        tokens: strings("tokenizer.ggml.tokens"),
        token_types: file
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|x| x.as_i64().unwrap() as i32).collect())
            .unwrap_or_default(),
        merges: strings("tokenizer.ggml.merges"),
        bos_id: id("tokenizer.ggml.bos_token_id"),
        eos_id: id("tokenizer.ggml.eos_token_id"),
        eot_id: id("tokenizer.ggml.eot_token_id"),
        eom_id: id("tokenizer.ggml.eom_token_id"),
        padding_id: id("tokenizer.ggml.padding_token_id"),
        unknown_id: id("tokenizer.ggml.unknown_token_id"),
        add_bos: flag("tokenizer.ggml.add_bos_token"),
        add_eos: flag("tokenizer.ggml.add_eos_token"),
        chat_template: file
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    }
}

fn gguf_tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::from_gguf_vocab(&read_vocab()).unwrap())
}

#[test]
fn metadata_matches_tokenizer_json() {
    let g = gguf_tokenizer();
    let h = hf_tokenizer();
    assert_eq!(g.bos_id(), Some(100000));
    assert_eq!(g.eos_ids(), vec![100001]);
    assert!(g.add_bos_by_default());
    assert_eq!(g.vocab_size(), h.vocab_size());
    assert_eq!(g.vocab_size(), 100015);
    // This file has no chat template: the built-in one is used.
    assert_eq!(g.chat_template(), DEEPSEEK_LLM_CHAT_TEMPLATE);
    for id in [0, 1, 17464, 99999, 100000, 100001, 100002, 100014] {
        assert_eq!(g.id_to_token(id), h.id_to_token(id), "{id}");
        assert_eq!(g.is_special(id), h.is_special(id), "{id}");
    }
    assert_eq!(g.id_to_token(100015), None);
    assert_eq!(g.token_to_id("[PAD100015]"), None);
    // The pre-tokenizer is built identically to tokenizer.json's.
    let pre = |t: &Tokenizer| serde_json::to_value(t.inner().get_pre_tokenizer()).unwrap();
    assert_eq!(pre(g), pre(h));
}

#[test]
fn text_vectors_give_the_same_ids() {
    let g = gguf_tokenizer();
    let mut failures = Vec::new();
    for v in text_vectors() {
        let ids = g.encode(&v.text, false).unwrap();
        if ids != v.ids {
            failures.push(format!("{:?}: got {:?}, want {:?}", v.text, ids, v.ids));
            continue;
        }
        let mut with_bos = vec![100000];
        with_bos.extend(&v.ids);
        assert_eq!(g.encode(&v.text, true).unwrap(), with_bos);
        assert_eq!(g.decode(&v.ids, false), v.decoded, "{:?}", v.text);
        assert_eq!(g.decode(&v.ids, true), hf_tokenizer().decode(&v.ids, true));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn chat_vectors_give_the_same_ids() {
    let g = gguf_tokenizer();
    for v in chat_vectors() {
        assert_eq!(
            g.apply_chat_template(&v.messages, v.add_generation_prompt)
                .unwrap(),
            v.text
        );
        assert_eq!(
            g.encode_chat(&v.messages, v.add_generation_prompt).unwrap(),
            v.ids
        );
    }
}

#[test]
fn pad_placeholders_are_ordinary_text() {
    let g = gguf_tokenizer();
    let h = hf_tokenizer();
    for text in ["[PAD100015]", "x [PAD102399] y", "[PAD100015][PAD100016]"] {
        let ids = g.encode(text, false).unwrap();
        assert_eq!(ids, h.encode(text, false).unwrap(), "{text:?}");
        assert!(ids.iter().all(|&i| i < 100000), "{text:?}: {ids:?}");
    }
    assert_eq!(
        g.decode(&[17464, 100015, 102399, 1843], false),
        h.decode(&[17464, 1843], false)
    );
    let mut dec = g.stream_decoder(false);
    assert_eq!(dec.push(100015), "");
    assert_eq!(dec.finish(), "");
}

#[test]
fn random_text_gives_the_same_ids() {
    let g = gguf_tokenizer();
    let h = hf_tokenizer();
    let mut rng = Lcg(11);
    for _ in 0..2000 {
        let mut text = random_text(&mut rng);
        if rng.below(4) == 0 {
            text.push_str(["<｜end▁of▁sentence｜>", "ö", "[PAD100020]"][rng.below(3) as usize]);
        }
        assert_eq!(
            g.encode(&text, false).unwrap(),
            h.encode(&text, false).unwrap(),
            "{text:?}"
        );
    }
}
