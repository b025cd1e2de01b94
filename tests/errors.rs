//! Bad input gives one clear error line and a non-zero exit, never a panic.

mod common;
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run the binary; it must fail with one error line containing every `needles` string.
fn fails_with(args: &[&str], needles: &[&str]) {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run deepseek");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "deepseek {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let line = stderr.trim();
    assert_eq!(
        line.lines().count(),
        1,
        "expected one error line for {args:?}, found: {stderr}"
    );
    for n in needles {
        assert!(
            line.contains(n),
            "error for {args:?} should mention {n:?}: {line}"
        );
    }
}

/// A copy of tiny-mha's folder whose files can be changed.
fn model_copy(tag: &str) -> PathBuf {
    let src = model_dir("tiny-mha");
    let dst = std::env::temp_dir().join(format!("deepseek-errors-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    std::fs::create_dir_all(&dst).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(src.join(f), dst.join(f)).unwrap();
    }
    dst
}

/// Rewrite `model.safetensors` of `dir` through `edit` (name -> (dtype, shape, bytes)).
fn rewrite_weights(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, safetensors::tensor::TensorView)> = map
        .iter()
        .map(|(n, (d, s, b))| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(dir.join("model.safetensors"), out).unwrap();
}

fn run_args(dir: &Path) -> Vec<String> {
    vec![
        "run".into(),
        "--model".into(),
        dir.to_str().unwrap().into(),
        "--prompt-ids".into(),
        "100000,5726".into(),
        "-n".into(),
        "2".into(),
    ]
}

fn fails_run(dir: &Path, needles: &[&str]) {
    let a = run_args(dir);
    let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
    fails_with(&a, needles);
}

#[test]
fn missing_model_folder() {
    fails_with(
        &["run", "--model", "/nonexistent/model", "hi"],
        &["/nonexistent/model", "does not exist"],
    );
}

#[test]
fn missing_config() {
    let d = model_copy("noconfig");
    std::fs::remove_file(d.join("config.json")).unwrap();
    fails_run(&d, &["config.json"]);
}

#[test]
fn bad_config_json() {
    let d = model_copy("badjson");
    std::fs::write(d.join("config.json"), "{\"hidden_size\": 64,").unwrap();
    fails_run(&d, &["config.json", "invalid JSON"]);
}

#[test]
fn unsupported_architecture() {
    let d = model_copy("arch");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    let cfg = cfg
        .replace("LlamaForCausalLM", "MistralForCausalLM")
        .replace("\"llama\"", "\"mistral\"");
    std::fs::write(d.join("config.json"), cfg).unwrap();
    fails_run(
        &d,
        &[
            "config.json",
            "architectures",
            "LlamaForCausalLM",
            "MistralForCausalLM",
        ],
    );
}

#[test]
fn wrong_config_field_type() {
    let d = model_copy("fieldtype");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    std::fs::write(
        d.join("config.json"),
        cfg.replace("\"hidden_size\": 64", "\"hidden_size\": \"64\""),
    )
    .unwrap();
    fails_run(
        &d,
        &[
            "config.json",
            "hidden_size",
            "expected a positive integer",
            "\"64\"",
        ],
    );
}

#[test]
fn missing_tensor() {
    let d = model_copy("missing");
    rewrite_weights(&d, |m| {
        m.remove("model.layers.1.mlp.up_proj.weight");
    });
    fails_run(&d, &["model.layers.1.mlp.up_proj.weight", "missing"]);
}

#[test]
fn tensor_of_wrong_shape() {
    let d = model_copy("shape");
    rewrite_weights(&d, |m| {
        let t = m.get_mut("model.layers.0.self_attn.k_proj.weight").unwrap();
        t.1 = vec![32, 128];
    });
    fails_run(
        &d,
        &[
            "model.layers.0.self_attn.k_proj.weight",
            "expected shape [64, 64]",
            "found [32, 128]",
        ],
    );
}

#[test]
fn tensor_of_unsupported_dtype() {
    let d = model_copy("dtype");
    rewrite_weights(&d, |m| {
        let t = m.get_mut("model.norm.weight").unwrap();
        t.0 = safetensors::Dtype::I16;
    });
    fails_run(&d, &["model.norm.weight", "unsupported dtype", "I16"]);
}

#[test]
fn truncated_safetensors() {
    let d = model_copy("trunc");
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    fails_run(&d, &["model.safetensors", "not a valid safetensors file"]);
}

#[test]
fn corrupt_safetensors_header() {
    let d = model_copy("corrupt");
    let mut bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    bytes[8] = b'[';
    bytes[20] = 0xff;
    std::fs::write(d.join("model.safetensors"), &bytes).unwrap();
    fails_run(&d, &["model.safetensors", "not a valid safetensors file"]);
    std::fs::write(d.join("model.safetensors"), [1u8, 2, 3]).unwrap();
    fails_run(&d, &["model.safetensors", "not a valid safetensors file"]);
}

#[test]
fn shard_missing_a_listed_tensor() {
    let src = model_dir("tiny-gqa");
    let d = std::env::temp_dir().join(format!("deepseek-errors-{}-shard", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.join(e.file_name())).unwrap();
    }
    let idx = std::fs::read_to_string(d.join("model.safetensors.index.json")).unwrap();
    // Claim layer 2's up projection lives in the first shard, which does not hold it.
    let idx = idx.replace(
        "\"model.layers.2.mlp.up_proj.weight\": \"model-00002-of-00002.safetensors\"",
        "\"model.layers.2.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\"",
    );
    std::fs::write(d.join("model.safetensors.index.json"), idx).unwrap();
    fails_run(
        &d,
        &[
            "model-00001-of-00002.safetensors",
            "model.layers.2.mlp.up_proj.weight",
        ],
    );
}

#[test]
fn prompt_longer_than_context() {
    let dir = model_dir("tiny-mha");
    fails_with(
        &[
            "run",
            "--model",
            dir.to_str().unwrap(),
            "--prompt-ids",
            "100000,1,2,3,4,5",
            "--ctx-size",
            "4",
        ],
        &["prompt has 6 tokens", "context holds 4"],
    );
}

#[test]
fn bad_flag_values() {
    let dir = model_dir("tiny-mha");
    let d = dir.to_str().unwrap();
    fails_with(
        &["run", "--model", d, "--prompt-ids", "1,x"],
        &["--prompt-ids", "\"x\""],
    );
    fails_with(
        &["run", "--model", d, "hi", "--temperature", "-1"],
        &["temperature", "-1"],
    );
    fails_with(
        &["run", "--model", d, "hi", "--top-p", "1.5"],
        &["top_p", "1.5"],
    );
    fails_with(
        &["run", "--model", d, "hi", "--min-p", "2"],
        &["min_p", "2"],
    );
    fails_with(&["run", "--model", d, "hi", "-t", "0"], &["--threads"]);
    fails_with(
        &["run", "--model", d, "hi", "--cache-type", "q9"],
        &["--cache-type", "q9"],
    );
    fails_with(
        &["run", "--model", d, "--prompt-ids", "100000,999999"],
        &["999999", "out of range"],
    );
}

#[test]
fn tokenizer_errors() {
    let d = model_copy("tok");
    std::fs::write(d.join("tokenizer.json"), "{not json").unwrap();
    fails_with(
        &["tokenize", "--model", d.to_str().unwrap(), "hi"],
        &["tokenizer.json"],
    );
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    fails_with(
        &["tokenize", "--model", d.to_str().unwrap(), "hi"],
        &["tokenizer.json"],
    );
}
