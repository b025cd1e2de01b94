//! Every failure is an error with a one-line message, never a panic.

mod common;

use common::*;
use deepseek_text::{ChatMessage, GgufVocab, TextError, Tokenizer};

fn one_line(e: &TextError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "multi-line message: {s}");
    s
}

#[test]
fn missing_tokenizer_json() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Tokenizer::from_hf_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TextError::Io { .. }), "{err:?}");
    let msg = one_line(&err);
    assert!(msg.contains("tokenizer.json"), "{msg}");
    let err = Tokenizer::from_file(&tmp.path().join("nope.json")).unwrap_err();
    assert!(one_line(&err).contains("nope.json"));
}

#[test]
fn bad_json() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tokenizer.json"), "{\"version\": ").unwrap();
    let err = Tokenizer::from_hf_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TextError::Json { .. }), "{err:?}");
    assert!(one_line(&err).contains("invalid JSON"));

    std::fs::write(tmp.path().join("tokenizer.json"), "{\"version\": \"1.0\"}").unwrap();
    let err = Tokenizer::from_hf_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TextError::BadTokenizerJson { .. }), "{err:?}");
    one_line(&err);

    // A good tokenizer.json with a broken tokenizer_config.json.
    std::fs::copy(
        tokenizer_dir().join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("tokenizer_config.json"), "not json").unwrap();
    let err = Tokenizer::from_hf_dir(tmp.path()).unwrap_err();
    assert!(matches!(err, TextError::Json { .. }), "{err:?}");
    assert!(one_line(&err).contains("tokenizer_config.json"));

    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"add_bos_token": "yes"}"#,
    )
    .unwrap();
    let err = Tokenizer::from_hf_dir(tmp.path()).unwrap_err();
    let msg = one_line(&err);
    assert!(
        msg.contains("add_bos_token") && msg.contains("expected true or false"),
        "{msg}"
    );
    assert!(msg.contains("\"yes\""), "{msg}");

    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"eos_token": 5}"#,
    )
    .unwrap();
    let msg = one_line(&Tokenizer::from_hf_dir(tmp.path()).unwrap_err());
    assert!(
        msg.contains("eos_token") && msg.contains("number 5"),
        "{msg}"
    );

    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"chat_template": [{"name": "rag", "template": "x"}]}"#,
    )
    .unwrap();
    let msg = one_line(&Tokenizer::from_hf_dir(tmp.path()).unwrap_err());
    assert!(
        msg.contains("chat_template") && msg.contains("default"),
        "{msg}"
    );
}

#[test]
fn bad_template() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        tokenizer_dir().join("tokenizer.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("tokenizer_config.json"),
        r#"{"bos_token": "<｜begin▁of▁sentence｜>", "chat_template": "{% for m in messages %}{{ m.content }"}"#,
    )
    .unwrap();
    // Loading works (plain completion needs no template); using the template fails.
    let tok = Tokenizer::from_hf_dir(tmp.path()).unwrap();
    let msgs = [ChatMessage::new("user", "hi")];
    for err in [
        tok.check_chat_template().unwrap_err(),
        tok.apply_chat_template(&msgs, true).unwrap_err(),
        tok.encode_chat(&msgs, true).unwrap_err(),
    ] {
        assert!(matches!(err, TextError::Template { .. }), "{err:?}");
        let msg = one_line(&err);
        assert!(
            msg.contains("tokenizer_config.json field chat_template"),
            "{msg}"
        );
        assert!(msg.contains("syntax error"), "{msg}");
    }
    assert!(hf_tokenizer().check_chat_template().is_ok());
}

#[test]
fn bad_gguf_metadata() {
    let base = GgufVocab {
        model: "gpt2".into(),
        pre: Some("deepseek-llm".into()),
        tokens: vec!["a".into(), "b".into(), "ab".into()],
        token_types: vec![1, 1, 1],
        merges: vec!["a b".into()],
        ..GgufVocab::default()
    };
    let tok = Tokenizer::from_gguf_vocab(&base).unwrap();
    assert_eq!(tok.encode("abab", false).unwrap(), vec![2, 2]);
    assert_eq!(tok.vocab_size(), 3);

    let err = Tokenizer::from_gguf_vocab(&GgufVocab {
        pre: Some("qwen9".into()),
        ..base.clone()
    })
    .unwrap_err();
    assert_eq!(
        one_line(&err),
        "unknown tokenizer.ggml.pre \"qwen9\": supported are deepseek-llm, llama-bpe (llama3, llama-v3), smollm, gpt2 (gpt-2) and default; pass --tokenizer tokenizer.json"
    );
    let err = Tokenizer::from_gguf_vocab(&GgufVocab {
        model: "bert".into(),
        ..base.clone()
    })
    .unwrap_err();
    assert!(one_line(&err).contains("\"bert\""));
    let err = Tokenizer::from_gguf_vocab(&GgufVocab {
        token_types: vec![1],
        ..base.clone()
    })
    .unwrap_err();
    let msg = one_line(&err);
    assert!(
        msg.contains("tokenizer.ggml.token_type") && msg.contains("(3), found 1"),
        "{msg}"
    );
    let err = Tokenizer::from_gguf_vocab(&GgufVocab {
        bos_id: Some(9),
        ..base.clone()
    })
    .unwrap_err();
    assert!(one_line(&err).contains("tokenizer.ggml.bos_token_id"));
    let err = Tokenizer::from_gguf_vocab(&GgufVocab {
        tokens: vec![],
        token_types: vec![],
        ..base.clone()
    })
    .unwrap_err();
    assert!(one_line(&err).contains("tokenizer.ggml.tokens"));
    // Merges naming unknown tokens and odd strings are ignored, not fatal.
    let tok = Tokenizer::from_gguf_vocab(&GgufVocab {
        merges: vec![
            "a b".into(),
            "x y".into(),
            "".into(),
            "ab".into(),
            "é b".into(),
        ],
        ..base
    })
    .unwrap();
    assert_eq!(tok.encode("ab", false).unwrap(), vec![2]);
}
