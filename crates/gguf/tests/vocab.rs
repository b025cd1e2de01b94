//! The DeepSeek LLM vocabulary GGUF shipped with llama.cpp (vocab only, no tensors).

use deepseek_gguf::{GgufFile, Value};
use std::path::PathBuf;

#[test]
fn deepseek_llm_vocab() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/tokenizer/deepseek-llm/ggml-vocab-deepseek-llm.gguf");
    let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(f.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "deepseek-llm");
    let tokens = f.get_array("tokenizer.ggml.tokens").unwrap();
    assert_eq!(tokens.len(), 102400);
    assert!(tokens.iter().all(|t| matches!(t, Value::String(_))));
    assert_eq!(f.get_u64("tokenizer.ggml.bos_token_id").unwrap(), 100000);
    assert_eq!(f.get_u64("tokenizer.ggml.eos_token_id").unwrap(), 100001);
    assert_eq!(tokens[100000].as_str(), Some("<｜begin▁of▁sentence｜>"));
    assert_eq!(tokens[100001].as_str(), Some("<｜end▁of▁sentence｜>"));
    if let Ok(types) = f.get_array("tokenizer.ggml.token_type") {
        assert_eq!(types.len(), 102400);
    }
    assert!(f.tensors().is_empty());
    for (k, v) in f.metadata() {
        println!("{k}: {}", v.describe());
    }
}
