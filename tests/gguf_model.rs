//! GGUF files made by `deepseek quantize` from the tiny fixture models against transformers'
//! reference outputs.

mod common;
use common::*;
use deepseek::loader::{load, LoadOptions};
use deepseek::model::{CacheType, Logits, Model, SeqInput};
use deepseek_tensor::DType;
use std::path::PathBuf;

fn convert(name: &str, ty: DType) -> PathBuf {
    let out = std::env::temp_dir().join(format!(
        "deepseek-test-{}-{name}-{ty}.gguf",
        std::process::id()
    ));
    deepseek::convert::quantize(&model_dir(name), &out, ty, None, &mut |_, _, _| {})
        .expect("quantize");
    out
}

fn all_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(512, CacheType::F32);
    let mut s = [SeqInput {
        tokens: ids,
        cache: &mut cache,
        logits: Logits::All,
    }];
    model.forward(&mut s).expect("forward").remove(0)
}

fn greedy(model: &Model, ids: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.new_cache(512, CacheType::F32);
    let mut s = [SeqInput {
        tokens: ids,
        cache: &mut cache,
        logits: Logits::Last,
    }];
    let mut next = argmax(&model.forward(&mut s).unwrap()[0]) as u32;
    let mut out = vec![];
    for _ in 0..n {
        out.push(next);
        let t = [next];
        let mut s = [SeqInput {
            tokens: &t,
            cache: &mut cache,
            logits: Logits::Last,
        }];
        next = argmax(&model.forward(&mut s).unwrap()[0]) as u32;
    }
    out
}

/// Max |Δ| of the last position's top-20 logits and of the logsumexp, over every prompt.
fn check(name: &str, ty: DType, tol: f32, exact_greedy: bool) {
    let path = convert(name, ty);
    let m = load(&path, &LoadOptions::default()).expect("load gguf");
    let model = &m.model;
    let vocab = model.config.vocab_size;
    let reference = reference(name);
    let mut worst = 0f32;
    for p in reference["prompts"].as_array().unwrap() {
        let ids = ids(&p["ids"]);
        let logits = all_logits(model, &ids);
        let last = &logits[(ids.len() - 1) * vocab..];
        for (id, val) in common::ids(&p["last_logits"]["top20_ids"])
            .iter()
            .zip(floats(&p["last_logits"]["top20_values"]))
        {
            worst = worst.max((last[*id as usize] - val).abs());
        }
        let lse = p["last_logits"]["logsumexp"].as_f64().unwrap();
        worst = worst.max((logsumexp(last) - lse).abs() as f32);
        if let Some(file) = p.get("full_last_logits_file") {
            let bytes = std::fs::read(model_dir(name).join(file.as_str().unwrap())).unwrap();
            let want: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            worst = worst.max(max_abs_diff(last, &want));
        }
        if exact_greedy {
            assert_eq!(
                greedy(model, &ids, 24),
                common::ids(&p["greedy"]["new_ids"]),
                "{name} {ty}: greedy of {}",
                p["name"]
            );
        }
    }
    let _ = std::fs::remove_file(&path);
    eprintln!("{name} {ty}: worst logit difference {worst}");
    assert!(
        worst <= tol,
        "{name} {ty}: logits differ from the reference by {worst} (tolerance {tol})"
    );
}

#[test]
fn f16_gguf_matches_reference() {
    for name in ["tiny-mha", "tiny-gqa"] {
        check(name, DType::F16, 1e-2, true);
    }
}

#[test]
fn bf16_gguf_of_a_bf16_model_matches_reference() {
    check("tiny-mha", DType::BF16, 1e-2, true);
}

/// 8-bit weights (and 8-bit activations in the integer dot products): the logits (std about
/// 2.5, from weights scaled so that every sublayer moves them) stay within 0.75 of the f32
/// reference. Measured worst: about 0.5 on tiny-mha; the same weights dequantised to f32 (no
/// activation rounding) already move the last position's logits by up to 0.07, and rounding the
/// activations to 8 bits in every matrix product of the 2 layers adds the rest.
#[test]
fn q8_0_gguf_stays_close_to_reference() {
    for name in ["tiny-mha", "tiny-gqa"] {
        check(name, DType::Q8_0, 0.75, false);
    }
}

#[test]
fn gguf_vocab_tokenizer_matches_tokenizer_json() {
    let dir = fixtures().join("tokenizer/deepseek-llm");
    let from_gguf = deepseek::loader::load_tokenizer(
        &dir.join("ggml-vocab-deepseek-llm.gguf"),
        &LoadOptions::default(),
    )
    .unwrap();
    let from_json = deepseek::loader::load_tokenizer(&dir, &LoadOptions::default()).unwrap();
    let vectors = std::fs::read_to_string(dir.join("vectors.jsonl")).unwrap();
    for line in vectors.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        assert_eq!(
            from_gguf.encode(text, false).unwrap(),
            ids(&v["ids"]),
            "{text:?}"
        );
        assert_eq!(
            from_gguf.encode(text, true).unwrap(),
            from_json.encode(text, true).unwrap(),
            "{text:?}"
        );
    }
    let chats = std::fs::read_to_string(dir.join("chat_vectors.jsonl")).unwrap();
    for line in chats.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let messages: Vec<deepseek_text::ChatMessage> =
            serde_json::from_value(v["messages"].clone()).unwrap();
        let agp = v["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            from_gguf.apply_chat_template(&messages, agp).unwrap(),
            v["text"].as_str().unwrap()
        );
        assert_eq!(
            from_gguf.encode_chat(&messages, agp).unwrap(),
            ids(&v["ids"])
        );
    }
}

/// A GGUF written from a Hugging Face folder carries its tokenizer: same ids as the folder's.
#[test]
fn converted_gguf_carries_the_tokenizer() {
    let path = convert("tiny-gqa", DType::F16);
    let g = deepseek::loader::load_tokenizer(&path, &LoadOptions::default()).unwrap();
    let h =
        deepseek::loader::load_tokenizer(&model_dir("tiny-gqa"), &LoadOptions::default()).unwrap();
    let _ = std::fs::remove_file(&path);
    for text in [
        "Hello world",
        "schön [PAD100015] x<｜end▁of▁sentence｜> y",
        "数字 12345 and émoji 🎉",
    ] {
        assert_eq!(
            g.encode(text, true).unwrap(),
            h.encode(text, true).unwrap(),
            "{text:?}"
        );
    }
    assert_eq!(g.chat_template(), h.chat_template());
}

/// A GGUF file carries no generation_config.json: sampling defaults come from its
/// `general.sampling.*` keys, and llama.cpp's defaults fill what it lacks.
#[test]
fn gguf_sampling_defaults_follow_llamacpp() {
    use deepseek_gguf::{GgufFile, GgufWriter, Value};
    let write = |name: &str, meta: Vec<(String, Value)>| {
        let path = std::env::temp_dir().join(format!(
            "deepseek-test-{}-sampling-{name}.gguf",
            std::process::id()
        ));
        GgufWriter::new(meta, vec![], 32)
            .unwrap()
            .create(&path)
            .unwrap()
            .finish()
            .unwrap();
        let file = GgufFile::open(&path).unwrap();
        let g = deepseek::loader::gguf::generation(&file);
        std::fs::remove_file(&path).ok();
        g
    };
    let params = |g: &deepseek::model::GenerationConfig| {
        (
            g.temperature,
            g.top_k,
            g.top_p,
            g.min_p,
            g.repetition_penalty,
        )
    };
    let g = write("none", vec![]).unwrap();
    assert_eq!(g.do_sample, Some(true));
    assert_eq!(
        params(&g),
        (Some(0.8), Some(40), Some(0.95), Some(0.05), Some(1.0))
    );
    let key = |k: &str, v: Value| (format!("general.sampling.{k}"), v);
    let g = write(
        "set",
        vec![
            key("temp", Value::F32(0.7)),
            key("top_k", Value::I32(20)),
            key("top_p", Value::F32(0.9)),
            key("min_p", Value::F32(0.0)),
            key("penalty_repeat", Value::F32(1.1)),
        ],
    )
    .unwrap();
    assert_eq!(
        params(&g),
        (Some(0.7), Some(20), Some(0.9), Some(0.0), Some(1.1))
    );
    let g = write("greedy", vec![key("temp", Value::F32(0.0))]).unwrap();
    assert_eq!(g.do_sample, Some(false));
    let err = write("bad", vec![key("top_k", Value::String("many".into()))]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("general.sampling.top_k") && msg.contains("non-negative integer"),
        "{msg}"
    );
}
