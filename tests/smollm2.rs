//! A real model: SmolLM2-135M-Instruct (Q4_1/Q8_0 GGUF from PyPI) against llama.cpp's outputs.

mod common;
use common::*;
use deepseek::loader::{load, LoadOptions, LoadedModel};
use deepseek::model::{CacheType, Logits, SeqInput};
use std::process::Command;
use std::sync::OnceLock;

fn model() -> &'static LoadedModel {
    static M: OnceLock<LoadedModel> = OnceLock::new();
    M.get_or_init(|| load(&smollm2(), &LoadOptions::default()).expect("load SmolLM2"))
}

/// Greedy steps with the raw logits of each step.
fn greedy_logits(prompt: &[u32], n: usize) -> Vec<(u32, Vec<f32>)> {
    let m = &model().model;
    let mut cache = m.new_cache(2048, CacheType::F32);
    let mut s = [SeqInput {
        tokens: prompt,
        cache: &mut cache,
        logits: Logits::Last,
    }];
    let mut logits = m.forward(&mut s).unwrap().remove(0);
    let mut out = vec![];
    for _ in 0..n {
        let id = argmax(&logits) as u32;
        out.push((id, logits.clone()));
        let t = [id];
        let mut s = [SeqInput {
            tokens: &t,
            cache: &mut cache,
            logits: Logits::Last,
        }];
        logits = m.forward(&mut s).unwrap().remove(0);
    }
    out
}

#[test]
fn config_from_gguf_metadata() {
    let c = &model().model.config;
    assert_eq!(
        (
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.intermediate_size
        ),
        (30, 576, 9, 3, 1536)
    );
    assert_eq!(c.vocab_size, 49152);
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_theta, 100000.0);
    assert!((c.rms_norm_eps - 1e-5).abs() < 1e-9);
}

/// Tolerance on each step's top-5 logits against llama.cpp's. Both engines round activations to
/// 8 bits inside the quantised matrix products, so an ulp of difference upstream moves the
/// logits of this model by a few tenths: the same llama.cpp version with the reference's own
/// settings lands 0.34 from the reference with its AVX2 kernels, and 0.42 to 0.81 with flash
/// attention off (`scripts/llamacpp-logit-spread.sh`, BENCHMARKS.md). This engine lands up to
/// 0.36 away on every instruction set.
const TOL: f32 = 0.45;

#[test]
fn raw_prompt_greedy_matches_llamacpp() {
    let (prompt, gen, steps) = llamacpp_reference("llamacpp-greedy-raw-prompt.txt");
    let tok = &model().tokenizer;
    assert!(!tok.add_bos_by_default());
    assert_eq!(
        tok.encode("The capital of France is", false).unwrap(),
        prompt
    );
    // Up to the 15th step, where llama.cpp's own top-2 margin is 0.005.
    let n = 14;
    assert_eq!(
        &gen[..n],
        &[7042, 30, 198, 198, 504, 1797, 1918, 553, 253, 2155, 282, 4723, 216, 35]
    );
    let ours = greedy_logits(&prompt, n);
    let mut worst = 0f32;
    for (i, ((id, logits), step)) in ours.iter().zip(&steps).enumerate() {
        assert_eq!(*id, step.id, "step {i}");
        for (tid, want) in &step.top5 {
            let got = logits[*tid as usize];
            worst = worst.max((got - want).abs());
            assert!(
                (got - want).abs() <= TOL,
                "step {i}: logit of {tid} is {got}, llama.cpp {want}"
            );
        }
    }
    assert_eq!(
        tok.decode(&gen[..n], true),
        " Paris.\n\nThe United States has a population of approximately 3"
    );
    eprintln!("worst top-5 logit difference from llama.cpp over {n} steps: {worst:.3}");
}

#[test]
fn chatml_prompt_with_special_tokens_stops_at_im_end() {
    let (prompt, _, _) = llamacpp_reference("llamacpp-greedy-chatml-no-system.txt");
    let text =
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let out = Command::new(bin())
        .args([
            "run",
            "--model",
            smollm2().to_str().unwrap(),
            text,
            "--temperature",
            "0",
            "-n",
            "48",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&v["prompt_ids"]), prompt);
    assert_eq!(v["text"], "The capital of France is Paris.");
    assert_eq!(ids(&v["ids"]), vec![504, 3575, 282, 4649, 314, 7042, 30, 2]);
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["stop_cause"], "eos");
}

/// The question through the chat template (which inserts SmolLM2's default system message):
/// the same prompt ids as llama.cpp and the same greedy tokens, up to the first step where this
/// engine's two best tokens are a near-tie (at step 7 they are 0.006 apart in probability, and
/// llama.cpp takes the other one).
#[test]
fn chat_template_prompt_matches_llamacpp() {
    let (prompt, gen, _) = llamacpp_reference("llamacpp-greedy-chat-template.txt");
    let out = Command::new(bin())
        .args([
            "run",
            "--model",
            smollm2().to_str().unwrap(),
            "--chat",
            "What is the capital of France?",
            "--temperature",
            "0",
            "-n",
            "48",
            "--json",
            "--top-logprobs",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&v["prompt_ids"]), prompt, "the rendered chat prompt");
    let ours = ids(&v["ids"]);
    let same = ours.iter().zip(&gen).take_while(|(a, b)| a == b).count();
    assert!(
        same >= 7,
        "only {same} tokens agree with llama.cpp: {ours:?}"
    );
    if same < gen.len().min(ours.len()) {
        let top = v["logprobs"][same]["top"].as_array().unwrap();
        let p = |i: usize| top[i][1].as_f64().unwrap().exp();
        let margin = p(0) - p(1);
        assert!(
            margin < 0.01,
            "step {same} differs from llama.cpp with a top-2 margin of {margin}"
        );
        let theirs = top
            .iter()
            .any(|t| t[0].as_u64().unwrap() as u32 == gen[same]);
        assert!(
            theirs,
            "llama.cpp's token at step {same} is not among this engine's two best"
        );
    }
}

/// Perplexity by llama-perplexity's method on the GPL v3 text, -c 256, first 5 chunks:
/// llama-perplexity's running estimate after 5 chunks is 19.9964 (all 29 chunks:
/// 20.8256 ± 0.99026; this engine: 20.8810 ± 0.99395, 0.27% apart).
#[test]
fn perplexity_matches_llamacpp() {
    let out = Command::new(bin())
        .args([
            "perplexity",
            "--model",
            smollm2().to_str().unwrap(),
            "-f",
            fixtures().join("text/gpl-3.txt").to_str().unwrap(),
            "-c",
            "256",
            "--chunks",
            "5",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ppl = v["ppl"].as_f64().unwrap();
    let llama = 19.9964;
    assert!(
        (ppl / llama - 1.0).abs() < 0.01,
        "PPL {ppl} vs llama-perplexity's {llama}"
    );
    assert_eq!(v["chunks"], 5);
    assert!(v["ppl_error"].as_f64().unwrap() > 0.0);
}
