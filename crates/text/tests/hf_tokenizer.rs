//! The DeepSeek LLM tokenizer loaded from Hugging Face files, checked against the
//! reference vectors made with `transformers`.

mod common;

use common::*;
use deepseek_text::{ChatMessage, Tokenizer, DEEPSEEK_LLM_CHAT_TEMPLATE};

#[test]
fn text_vectors_encode_and_decode() {
    let tok = hf_tokenizer();
    let mut failures = Vec::new();
    for v in text_vectors() {
        let ids = tok.encode(&v.text, false).unwrap();
        if ids != v.ids {
            failures.push(format!("{:?}: got {:?}, want {:?}", v.text, ids, v.ids));
            continue;
        }
        let with_bos = tok.encode(&v.text, true).unwrap();
        assert_eq!(with_bos[0], 100000, "{:?}", v.text);
        assert_eq!(&with_bos[1..], &v.ids[..], "{:?}", v.text);
        let decoded = tok.decode(&v.ids, false);
        if decoded != v.decoded {
            failures.push(format!("decode {:?}: got {:?}", v.decoded, decoded));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn special_tokens_and_metadata() {
    let tok = hf_tokenizer();
    assert_eq!(tok.bos_id(), Some(100000));
    assert_eq!(tok.eos_ids(), vec![100001]);
    assert!(tok.add_bos_by_default());
    assert_eq!(tok.vocab_size(), 100015);
    assert_eq!(tok.token_to_id("<｜end▁of▁sentence｜>"), Some(100001));
    assert_eq!(
        tok.id_to_token(100000).as_deref(),
        Some("<｜begin▁of▁sentence｜>")
    );
    assert_eq!(tok.id_to_token(100015), None);
    assert_eq!(tok.id_to_token(u32::MAX), None);
    assert!(tok.is_special(100000));
    assert!(tok.is_special(100001));
    assert!(!tok.is_special(100003));
    assert!(!tok.is_special(17464));
    assert!(!tok.is_special(100015));
    assert_eq!(tok.bos_token(), Some("<｜begin▁of▁sentence｜>"));
    assert_eq!(tok.eos_token(), Some("<｜end▁of▁sentence｜>"));
    // Special tokens written in text are parsed; near misses are not.
    assert_eq!(
        tok.encode("x<｜end▁of▁sentence｜> y", false).unwrap(),
        vec![87, 100001, 320]
    );
    assert!(!tok
        .encode("x<|end▁of▁sentence|> y", false)
        .unwrap()
        .contains(&100001));
    // `[PAD100015]` is ordinary text.
    let pad = tok.encode("[PAD100015]", false).unwrap();
    assert!(pad.len() > 1 && pad.iter().all(|&i| i < 100000), "{pad:?}");
}

#[test]
fn decode_skips_specials_and_ids_without_token() {
    let tok = hf_tokenizer();
    let hello = tok.encode("Hello world", false).unwrap();
    let mut ids = vec![100000];
    ids.extend(&hello);
    ids.extend([100015, 102399, 200000, u32::MAX, 100001]);
    assert_eq!(
        tok.decode(&ids, false),
        "<｜begin▁of▁sentence｜>Hello world<｜end▁of▁sentence｜>"
    );
    assert_eq!(tok.decode(&ids, true), "Hello world");
    assert_eq!(tok.decode(&[100015, 100016], false), "");
    assert_eq!(tok.decode(&[], false), "");
    // The byte-symbol added tokens decode to U+FFFD, as in `transformers`.
    assert_eq!(tok.decode(&[21322, 100003, 77], false), "sch\u{FFFD}n");
}

#[test]
fn chat_vectors_render_and_encode() {
    let tok = hf_tokenizer();
    for v in chat_vectors() {
        let text = tok
            .apply_chat_template(&v.messages, v.add_generation_prompt)
            .unwrap();
        assert_eq!(text, v.text, "{:?}", v.messages);
        let ids = tok
            .encode_chat(&v.messages, v.add_generation_prompt)
            .unwrap();
        assert_eq!(ids, v.ids, "{:?}", v.messages);
    }
}

#[test]
fn model_folder_loads_the_same_tokenizer() {
    let dir = fixtures().join("models/tiny-mha");
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    assert_eq!(tok.bos_id(), Some(100000));
    assert_eq!(tok.eos_ids(), vec![100001]);
    assert_eq!(tok.chat_template(), DEEPSEEK_LLM_CHAT_TEMPLATE);
    for v in text_vectors() {
        assert_eq!(tok.encode(&v.text, false).unwrap(), v.ids, "{:?}", v.text);
    }
    for v in chat_vectors() {
        assert_eq!(
            tok.encode_chat(&v.messages, v.add_generation_prompt)
                .unwrap(),
            v.ids
        );
    }
    // The `chat` prompt of the model references.
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    for p in reference["prompts"].as_array().unwrap() {
        let want: Vec<u32> = p["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        if let Some(messages) = p.get("messages") {
            let messages: Vec<ChatMessage> = serde_json::from_value(messages.clone()).unwrap();
            let agp = p["add_generation_prompt"].as_bool().unwrap();
            assert_eq!(tok.encode_chat(&messages, agp).unwrap(), want);
            assert_eq!(
                tok.apply_chat_template(&messages, agp).unwrap(),
                p["text"].as_str().unwrap()
            );
        } else if p["name"] == "short" {
            assert_eq!(tok.encode(p["text"].as_str().unwrap(), true).unwrap(), want);
        } else if let Some(src) = p.get("source_text").and_then(|s| s.as_str()) {
            let mut ids = tok.encode(src, true).unwrap();
            ids.truncate(want.len());
            assert_eq!(ids, want);
        }
    }
}

fn copy_tokenizer_files(dir: &std::path::Path, config: Option<serde_json::Value>) {
    let src = tokenizer_dir();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    if let Some(config) = config {
        std::fs::write(
            dir.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
    }
}

fn config_without_template() -> serde_json::Value {
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tokenizer_dir().join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    config.as_object_mut().unwrap().remove("chat_template");
    config
}

#[test]
fn folder_without_template_uses_the_builtin_one() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tokenizer_files(tmp.path(), Some(config_without_template()));
    let tok = Tokenizer::from_hf_dir(tmp.path()).unwrap();
    assert_eq!(tok.chat_template(), DEEPSEEK_LLM_CHAT_TEMPLATE);
    assert!(tok.chat_template_origin().contains("built-in"));
    for v in chat_vectors() {
        assert_eq!(
            tok.apply_chat_template(&v.messages, v.add_generation_prompt)
                .unwrap(),
            v.text
        );
        assert_eq!(
            tok.encode_chat(&v.messages, v.add_generation_prompt)
                .unwrap(),
            v.ids
        );
    }
}

#[test]
fn tokenizer_json_alone() {
    // Only tokenizer.json: BOS comes from the post-processor, EOS from the well-known names.
    let tmp = tempfile::tempdir().unwrap();
    copy_tokenizer_files(tmp.path(), None);
    let tok = Tokenizer::from_file(&tmp.path().join("tokenizer.json")).unwrap();
    assert_eq!(tok.bos_id(), Some(100000));
    assert!(tok.add_bos_by_default());
    assert_eq!(tok.eos_ids(), vec![100001]);
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![100000, 17464]);
    let msgs = [ChatMessage::new("user", "Who are you?")];
    assert_eq!(
        tok.encode_chat(&msgs, true).unwrap(),
        vec![100000, 5726, 25, 8886, 418, 340, 30, 185, 185, 77398, 25]
    );
}

#[test]
fn add_bos_token_false_is_respected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config_without_template();
    config["add_bos_token"] = serde_json::Value::Bool(false);
    copy_tokenizer_files(tmp.path(), Some(config));
    let tok = Tokenizer::from_hf_dir(tmp.path()).unwrap();
    assert!(!tok.add_bos_by_default());
    assert_eq!(tok.bos_id(), Some(100000));
    assert_eq!(tok.encode("Hello", true).unwrap(), vec![100000, 17464]);
}

#[test]
fn template_list_and_jinja_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config_without_template();
    config["chat_template"] = serde_json::json!([
        {"name": "tool_use", "template": "TOOLS"},
        {"name": "default", "template": "{{ bos_token }}DEFAULT{{ messages | length }}"}
    ]);
    copy_tokenizer_files(tmp.path(), Some(config));
    let tok = Tokenizer::from_hf_dir(tmp.path()).unwrap();
    let msgs = [ChatMessage::new("user", "hi")];
    assert_eq!(
        tok.apply_chat_template(&msgs, false).unwrap(),
        "<｜begin▁of▁sentence｜>DEFAULT1"
    );
    // chat_template.jinja takes precedence over tokenizer_config.json.
    std::fs::write(
        tmp.path().join("chat_template.jinja"),
        "JINJA {{ eos_token }}\n",
    )
    .unwrap();
    let tok = Tokenizer::from_hf_dir(tmp.path()).unwrap();
    assert_eq!(
        tok.apply_chat_template(&msgs, false).unwrap(),
        "JINJA <｜end▁of▁sentence｜>"
    );
}

#[test]
fn template_features_like_transformers() {
    let mut tok = Tokenizer::from_hf_dir(&tokenizer_dir()).unwrap();
    let msgs = [
        ChatMessage::new("system", "  be brief  "),
        ChatMessage::new("user", "Hi \"there\""),
        ChatMessage::new("assistant", "Hello"),
    ];
    let template = r#"
{%- set ns = namespace(n=0) -%}
{%- for m in messages -%}
    {%- if loop.index > 2 %}{% break %}{% endif -%}
    {%- set ns.n = ns.n + 1 -%}
    [{{ m.role | upper }}:{{ m['content'].strip() }}]
    {%- if m.content.startswith('Hi') %}(hi){% endif -%}
{%- endfor %}
{{ ns.n }} {{ messages[1] | tojson }} {{ tools }} {{ add_generation_prompt }}
{{ {'a': [1, 2.5, none, true]} | tojson(indent=2) }}
{% if add_generation_prompt %}
GEN
{% endif %}
{{ 'x' ~ (strftime_now('%Y') | length) }}"#;
    tok.set_chat_template(template.to_string(), "test template");
    let out = tok.apply_chat_template(&msgs, true).unwrap();
    // Rendered with Jinja2 3.1.6 set up as `transformers` does it.
    let want = "[SYSTEM:be brief][USER:Hi \"there\"](hi)2 {\"role\": \"user\", \"content\": \"Hi \\\"there\\\"\"} None True\n{\n  \"a\": [\n    1,\n    2.5,\n    null,\n    true\n  ]\n}\nGEN\nx4";
    assert_eq!(out, want);

    tok.set_chat_template(
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation must start with a user message') }}{% endif %}ok".to_string(),
        "raising template",
    );
    let err = tok
        .apply_chat_template(&msgs, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Conversation must start with a user message"),
        "{err}"
    );
    assert!(err.contains("raising template"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    assert_eq!(tok.apply_chat_template(&msgs[1..], false).unwrap(), "ok");

    // {% generation %} blocks (a transformers extension) render their content.
    tok.set_chat_template(
        "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
            .to_string(),
        "generation template",
    );
    assert_eq!(
        tok.apply_chat_template(&msgs[1..], false).unwrap(),
        "Hi \"there\"Hello"
    );
}

#[test]
fn templates_render_like_jinja2() {
    // Expected outputs were rendered with Jinja2 3.1.6 set up as `transformers` does
    // (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols).
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/templates");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let msgs = [
        ChatMessage::new("system", "  be brief  "),
        ChatMessage::new("user", "Hi \"there\""),
        ChatMessage::new("assistant", "Hello"),
        ChatMessage::new("user", "Bye"),
    ];
    let mut tok = Tokenizer::from_hf_dir(&tokenizer_dir()).unwrap();
    let mut checked = 0;
    for name in ["llama3", "chatml", "multiline", "pyish"] {
        let template = std::fs::read_to_string(dir.join(format!("{name}.j2"))).unwrap();
        tok.set_chat_template(template, name);
        for agp in [false, true] {
            let key = format!("{name}_{}", if agp { "True" } else { "False" });
            let want = expected[&key].as_str().unwrap();
            assert_eq!(tok.apply_chat_template(&msgs, agp).unwrap(), want, "{key}");
            checked += 1;
        }
    }
    assert_eq!(checked, 8);
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
    check::<deepseek_text::StreamDecoder<'static>>();
    check::<deepseek_text::TextError>();
}

#[test]
fn random_text_round_trips() {
    let tok = hf_tokenizer();
    let mut rng = Lcg(7);
    for _ in 0..2000 {
        let text = random_text(&mut rng);
        let ids = tok.encode(&text, false).unwrap();
        assert!(ids.iter().all(|&i| i < 100015), "{text:?}: {ids:?}");
        assert_eq!(tok.decode(&ids, false), text, "{ids:?}");
    }
}
