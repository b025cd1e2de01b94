//! The decoder against transformers' float32 reference outputs for the tiny fixture models.

mod common;
use common::*;
use deepseek::loader::hf::load_dir;
use deepseek::model::{CacheType, Logits, Model, SeqInput};

const TOL: f32 = 1e-3;
const MODELS: [&str; 2] = ["tiny-mha", "tiny-gqa"];

fn all_logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(512, CacheType::F32);
    let mut seqs = [SeqInput {
        tokens: ids,
        cache: &mut cache,
        logits: Logits::All,
    }];
    model.forward(&mut seqs).expect("forward").remove(0)
}

#[test]
fn prompts_match_transformers() {
    for name in MODELS {
        let model = load_dir(&model_dir(name)).expect("load").model;
        let vocab = model.config.vocab_size;
        let reference = reference(name);
        for p in reference["prompts"].as_array().unwrap() {
            let pname = p["name"].as_str().unwrap();
            let ids = ids(&p["ids"]);
            let logits = all_logits(&model, &ids);
            assert_eq!(logits.len(), ids.len() * vocab);
            // argmax at every prompt position
            let want = common::ids(&p["argmax_per_position"]);
            let got: Vec<u32> = logits.chunks(vocab).map(|r| argmax(r) as u32).collect();
            assert_eq!(got, want, "{name}/{pname}: argmax per position");
            // last position: top-20 values and logsumexp
            let last = &logits[(ids.len() - 1) * vocab..];
            let top_ids = common::ids(&p["last_logits"]["top20_ids"]);
            let top_vals = floats(&p["last_logits"]["top20_values"]);
            for (id, val) in top_ids.iter().zip(&top_vals) {
                let d = (last[*id as usize] - val).abs();
                assert!(
                    d <= TOL,
                    "{name}/{pname}: logit of {id}: {} vs {val} (diff {d})",
                    last[*id as usize]
                );
            }
            let lse = p["last_logits"]["logsumexp"].as_f64().unwrap();
            assert!(
                (logsumexp(last) - lse).abs() <= TOL as f64,
                "{name}/{pname}: logsumexp {} vs {lse}",
                logsumexp(last)
            );
            if let Some(rows) = p.get("all_positions_logits_first64") {
                for (pos, row) in rows.as_array().unwrap().iter().enumerate() {
                    let want = floats(row);
                    let got = &logits[pos * vocab..pos * vocab + 64];
                    let d = max_abs_diff(got, &want);
                    assert!(
                        d <= TOL,
                        "{name}/{pname}: position {pos} first 64 logits differ by {d}"
                    );
                }
            }
            if let Some(file) = p.get("full_last_logits_file") {
                let bytes = std::fs::read(model_dir(name).join(file.as_str().unwrap())).unwrap();
                let want: Vec<f32> = bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let d = max_abs_diff(last, &want);
                assert!(d <= TOL, "{name}/{pname}: full last logits differ by {d}");
            }
        }
    }
}

/// Greedy continuation with the KV cache (prefill, then one token per step) against the
/// reference's 24 tokens.
#[test]
fn greedy_continuations_match() {
    for name in MODELS {
        let model = load_dir(&model_dir(name)).expect("load").model;
        let reference = reference(name);
        for p in reference["prompts"].as_array().unwrap() {
            let ids = ids(&p["ids"]);
            let want = common::ids(&p["greedy"]["new_ids"]);
            let mut cache = model.new_cache(512, CacheType::F32);
            let mut next = {
                let mut s = [SeqInput {
                    tokens: &ids,
                    cache: &mut cache,
                    logits: Logits::Last,
                }];
                argmax(&model.forward(&mut s).unwrap()[0]) as u32
            };
            let mut got = vec![];
            for _ in 0..want.len() {
                got.push(next);
                let t = [next];
                let mut s = [SeqInput {
                    tokens: &t,
                    cache: &mut cache,
                    logits: Logits::Last,
                }];
                next = argmax(&model.forward(&mut s).unwrap()[0]) as u32;
            }
            assert_eq!(got, want, "{name}/{}: greedy continuation", p["name"]);
        }
    }
}

/// Prefill then one-token decode steps give the same logits as recomputing from scratch.
#[test]
fn prefill_then_decode_equals_recompute() {
    for name in MODELS {
        let model = load_dir(&model_dir(name)).expect("load").model;
        let vocab = model.config.vocab_size;
        let reference = reference(name);
        let long = reference["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "long")
            .unwrap();
        let ids = ids(&long["ids"]);
        let full = all_logits(&model, &ids);
        // Prefill 20 tokens, then decode the rest one by one; also a chunked prefill of 7 at a time.
        for chunk in [1usize, 7] {
            let mut cache = model.new_cache(512, CacheType::F32);
            let mut s = [SeqInput {
                tokens: &ids[..20],
                cache: &mut cache,
                logits: Logits::All,
            }];
            let mut got = model.forward(&mut s).unwrap().remove(0);
            for c in ids[20..].chunks(chunk) {
                let mut s = [SeqInput {
                    tokens: c,
                    cache: &mut cache,
                    logits: Logits::All,
                }];
                got.extend(model.forward(&mut s).unwrap().remove(0));
            }
            assert_eq!(got.len(), full.len());
            let d = max_abs_diff(&got, &full);
            assert!(
                d <= 1e-4,
                "{name}: chunk {chunk}: incremental logits differ from recompute by {d}"
            );
            assert_eq!(cache.len(), ids.len());
        }
        let _ = vocab;
    }
}

/// A sequence's logits do not depend on the other sequences in its batch.
#[test]
fn batched_sequences_match_alone() {
    let model = load_dir(&model_dir("tiny-gqa")).expect("load").model;
    let reference = reference("tiny-gqa");
    let prompts: Vec<Vec<u32>> = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| ids(&p["ids"]))
        .collect();
    let alone: Vec<Vec<f32>> = prompts
        .iter()
        .map(|p| {
            let mut cache = model.new_cache(512, CacheType::F32);
            let mut s = [SeqInput {
                tokens: p,
                cache: &mut cache,
                logits: Logits::Last,
            }];
            model.forward(&mut s).unwrap().remove(0)
        })
        .collect();
    let mut caches: Vec<_> = prompts
        .iter()
        .map(|_| model.new_cache(512, CacheType::F32))
        .collect();
    let mut seqs: Vec<SeqInput> = prompts
        .iter()
        .zip(caches.iter_mut())
        .map(|(p, c)| SeqInput {
            tokens: p,
            cache: c,
            logits: Logits::Last,
        })
        .collect();
    let batched = model.forward(&mut seqs).unwrap();
    for (a, b) in alone.iter().zip(&batched) {
        assert_eq!(
            a, b,
            "batched logits must be bit-identical to the sequence alone"
        );
    }
}

/// An f16 key/value cache stays close to the f32 one (keys and values rounded to 11 bits).
#[test]
fn f16_cache_stays_close() {
    for name in MODELS {
        let model = load_dir(&model_dir(name)).expect("load").model;
        let reference = reference(name);
        let long = reference["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "long")
            .unwrap();
        let ids = ids(&long["ids"]);
        let run = |ty| {
            let mut cache = model.new_cache(512, ty);
            let mut s = [SeqInput {
                tokens: &ids,
                cache: &mut cache,
                logits: Logits::All,
            }];
            model.forward(&mut s).unwrap().remove(0)
        };
        let d = max_abs_diff(&run(CacheType::F16), &run(CacheType::F32));
        assert!(d < 0.05, "{name}: f16 cache moves logits by {d}");
        assert!(d > 0.0, "{name}: the f16 cache should round something");
    }
}
