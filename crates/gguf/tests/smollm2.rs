//! The real small model used across the project's tests: SmolLM2-135M-Instruct, Q4_1.
//!
//! The file is named by `DEEPSEEK_SMOLLM2`, or fetched (once, into the cache folder) by
//! `scripts/fetch-smollm2.sh`. If neither works the test fails with the script's message.

use deepseek_gguf::{DType, GgufFile, Value};
use std::path::PathBuf;
use std::process::Command;

fn smollm2_path() -> PathBuf {
    if let Some(p) = std::env::var_os("DEEPSEEK_SMOLLM2") {
        return PathBuf::from(p);
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-smollm2.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}); set DEEPSEEK_SMOLLM2 to the .gguf path to avoid fetching:\n{stderr}",
        script.display(),
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("script output is UTF-8");
    let line = stdout.trim();
    assert!(
        !line.is_empty() && !line.contains('\n'),
        "expected one path on stdout, found {stdout:?}"
    );
    PathBuf::from(line)
}

#[test]
fn smollm2_135m_instruct_q4_1() {
    let path = smollm2_path();
    let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));

    println!(
        "{} (version {}, alignment {}, {} tensors)",
        path.display(),
        f.version(),
        f.alignment(),
        f.tensors().len()
    );
    for (k, v) in f.metadata() {
        println!("  {k}: {}", v.describe());
    }

    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(f.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(f.get_u64("llama.attention.head_count").unwrap(), 9);
    assert_eq!(f.get_u64("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    let vocab = f.get_array("tokenizer.ggml.tokens").unwrap();
    assert!(vocab.iter().all(|t| matches!(t, Value::String(_))));

    // Tied embeddings: no separate output matrix.
    assert!(f.tensor("output.weight").is_none());
    let embd = f.tensor("token_embd.weight").expect("token_embd.weight");
    assert_eq!(embd.dtype, DType::Q8_0);
    assert_eq!(embd.dims, vec![576, vocab.len() as u64]);
    assert_eq!(
        f.tensor("output_norm.weight")
            .expect("output_norm.weight")
            .dtype,
        DType::F32
    );

    // 30 blocks of 9 tensors, plus the embedding and the final norm.
    assert_eq!(f.tensors().len(), 30 * 9 + 2);
    for t in f.tensors() {
        let want = if t.name == "token_embd.weight" {
            DType::Q8_0
        } else if t.name.ends_with("norm.weight") {
            DType::F32
        } else {
            DType::Q4_1
        };
        assert_eq!(t.dtype, want, "{}", t.name);
        assert_eq!(f.tensor_data(t).len() as u64, t.size);
    }
    for i in 0..30 {
        let dims = |n: &str| {
            f.tensor(&format!("blk.{i}.{n}"))
                .unwrap_or_else(|| panic!("blk.{i}.{n}"))
                .dims
                .clone()
        };
        assert_eq!(dims("attn_norm.weight"), vec![576]);
        assert_eq!(dims("attn_q.weight"), vec![576, 576]);
        assert_eq!(dims("attn_k.weight"), vec![576, 192]);
        assert_eq!(dims("attn_v.weight"), vec![576, 192]);
        assert_eq!(dims("attn_output.weight"), vec![576, 576]);
        assert_eq!(dims("ffn_norm.weight"), vec![576]);
        let ff = f.get_u64("llama.feed_forward_length").unwrap();
        assert_eq!(dims("ffn_gate.weight"), vec![576, ff]);
        assert_eq!(dims("ffn_up.weight"), vec![576, ff]);
        assert_eq!(dims("ffn_down.weight"), vec![ff, 576]);
    }
}
