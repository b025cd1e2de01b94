//! GGUF files: model configuration from the `llama.*` keys, tensors memory-mapped in their
//! stored (possibly quantised) types, and the tokenizer from the `tokenizer.*` keys.

use super::{map_file, Tensor, TensorSource};
use crate::error::{Error, Result};
use crate::model::{GenerationConfig, Model, ModelConfig, Naming, RopeStyle};
use deepseek_gguf::{GgufFile, Value};
use deepseek_text::{GgufVocab, Tokenizer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The tensors of a GGUF file, by name, borrowing one memory map.
pub struct GgufTensors {
    tensors: HashMap<String, Tensor>,
    path: PathBuf,
}

impl GgufTensors {
    pub fn open(file: &GgufFile) -> Result<GgufTensors> {
        let storage = map_file(file.path())?;
        let mut tensors = HashMap::new();
        for t in file.tensors() {
            // ggml lists dimensions innermost first; ours are row-major [rows, cols].
            let shape: Vec<usize> = t.dims.iter().rev().map(|d| *d as usize).collect();
            let tensor = Tensor::new(
                t.name.clone(),
                t.dtype,
                shape,
                Arc::clone(&storage),
                t.offset as usize,
                t.size as usize,
            )?;
            tensors.insert(t.name.clone(), tensor);
        }
        Ok(GgufTensors {
            tensors,
            path: file.path().to_path_buf(),
        })
    }
}

impl TensorSource for GgufTensors {
    fn get(&self, name: &str) -> Option<Tensor> {
        self.tensors.get(name).cloned()
    }
    fn describe(&self) -> String {
        self.path.display().to_string()
    }
}

fn meta_err(file: &GgufFile, key: &str, msg: impl Into<String>) -> Error {
    Error::config(file.path(), key, msg)
}

fn req_u64(file: &GgufFile, key: &str) -> Result<u64> {
    match file.get(key) {
        None => Err(meta_err(file, key, "missing")),
        Some(v) => v.as_u64().ok_or_else(|| {
            meta_err(
                file,
                key,
                format!("expected an unsigned integer, found {}", v.type_name()),
            )
        }),
    }
}

fn opt_f64(file: &GgufFile, key: &str) -> Result<Option<f64>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| {
            meta_err(
                file,
                key,
                format!("expected a number, found {}", v.type_name()),
            )
        }),
    }
}

fn opt_u32(file: &GgufFile, key: &str) -> Result<Option<u32>> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= u32::MAX as u64)
            .map(|n| Some(n as u32))
            .ok_or_else(|| {
                meta_err(
                    file,
                    key,
                    format!("expected a token id, found {}", v.type_name()),
                )
            }),
    }
}

/// The model configuration from GGUF metadata.
pub fn config(file: &GgufFile) -> Result<ModelConfig> {
    let arch = match file.get("general.architecture") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(meta_err(
                file,
                "general.architecture",
                format!("expected a string, found {}", v.type_name()),
            ))
        }
        None => return Err(meta_err(file, "general.architecture", "missing")),
    };
    if arch != "llama" {
        return Err(meta_err(
            file,
            "general.architecture",
            format!("unsupported architecture: expected \"llama\", found {arch:?}"),
        ));
    }
    let k = |s: &str| format!("{arch}.{s}");
    let hidden = req_u64(file, &k("embedding_length"))? as usize;
    let heads = req_u64(file, &k("attention.head_count"))? as usize;
    let kv_heads = match file.get(&k("attention.head_count_kv")) {
        None => heads,
        Some(_) => req_u64(file, &k("attention.head_count_kv"))? as usize,
    };
    if heads == 0
        || kv_heads == 0
        || !hidden.is_multiple_of(heads)
        || !heads.is_multiple_of(kv_heads)
    {
        return Err(meta_err(
            file,
            &k("attention.head_count"),
            format!("expected heads dividing the embedding length {hidden} and a multiple of the {kv_heads} KV heads, found {heads}"),
        ));
    }
    let head_dim = hidden / heads;
    if let Some(rd) = file
        .get(&k("rope.dimension_count"))
        .and_then(|v| v.as_u64())
    {
        if rd as usize != head_dim {
            return Err(meta_err(
                file,
                &k("rope.dimension_count"),
                format!(
                    "partial rotary embeddings are not supported: expected {head_dim}, found {rd}"
                ),
            ));
        }
    }
    let embd = file.tensor("token_embd.weight").ok_or_else(|| {
        Error::tensor(
            "token_embd.weight",
            format!("missing from {}", file.path().display()),
        )
    })?;
    let vocab = embd.rows() as usize;
    let rope_scale = match file.get(&k("rope.scaling.type")).and_then(|v| v.as_str()) {
        None | Some("none") => 1.0,
        Some("linear") => {
            let f = opt_f64(file, &k("rope.scaling.factor"))?
                .filter(|f| *f > 0.0)
                .ok_or_else(|| {
                    meta_err(
                        file,
                        &k("rope.scaling.factor"),
                        "expected a positive number",
                    )
                })?;
            f as f32
        }
        Some(other) => {
            return Err(meta_err(
                file,
                &k("rope.scaling.type"),
                format!("expected \"linear\", found {other:?}"),
            ))
        }
    };
    let eps = opt_f64(file, &k("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5) as f32;
    let layers = req_u64(file, &k("block_count"))? as usize;
    let ff = req_u64(file, &k("feed_forward_length"))? as usize;
    let ctx = match file.get(&k("context_length")) {
        None => 4096,
        Some(_) => req_u64(file, &k("context_length"))? as usize,
    };
    let eos = opt_u32(file, "tokenizer.ggml.eos_token_id")?;
    let eot = opt_u32(file, "tokenizer.ggml.eot_token_id")?;
    Ok(ModelConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: ff,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        rms_norm_eps: eps,
        rope_theta: opt_f64(file, &k("rope.freq_base"))?.unwrap_or(10000.0) as f32,
        rope_scale,
        // Converters permute the rows of Q and K so that llama.cpp can rotate adjacent pairs.
        rope_style: RopeStyle::Interleaved,
        max_position_embeddings: ctx,
        tie_word_embeddings: file.tensor("output.weight").is_none(),
        bos_token_id: opt_u32(file, "tokenizer.ggml.bos_token_id")?,
        eos_token_ids: eos.into_iter().chain(eot).collect(),
    })
}

fn string_array(file: &GgufFile, key: &str) -> Result<Vec<String>> {
    match file.get(key) {
        None => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    meta_err(
                        file,
                        key,
                        format!("element {i}: expected a string, found {}", v.type_name()),
                    )
                })
            })
            .collect(),
        Some(v) => Err(meta_err(
            file,
            key,
            format!("expected an array of strings, found {}", v.type_name()),
        )),
    }
}

/// The tokenizer metadata of a GGUF file.
pub fn vocab(file: &GgufFile) -> Result<GgufVocab> {
    let model = match file.get("tokenizer.ggml.model") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(meta_err(
                file,
                "tokenizer.ggml.model",
                format!("expected a string, found {}", v.type_name()),
            ))
        }
        None => {
            return Err(meta_err(
                file,
                "tokenizer.ggml.model",
                "missing: the file has no tokenizer (pass --tokenizer tokenizer.json)",
            ))
        }
    };
    let token_types = match file.get("tokenizer.ggml.token_type") {
        None => vec![],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64().map(|n| n as i32).ok_or_else(|| {
                    meta_err(
                        file,
                        "tokenizer.ggml.token_type",
                        format!("element {i}: expected an integer, found {}", v.type_name()),
                    )
                })
            })
            .collect::<Result<_>>()?,
        Some(v) => {
            return Err(meta_err(
                file,
                "tokenizer.ggml.token_type",
                format!("expected an array, found {}", v.type_name()),
            ))
        }
    };
    let opt_bool = |key: &str| -> Result<Option<bool>> {
        match file.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| {
                meta_err(
                    file,
                    key,
                    format!("expected a boolean, found {}", v.type_name()),
                )
            }),
        }
    };
    Ok(GgufVocab {
        model,
        pre: file
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        tokens: string_array(file, "tokenizer.ggml.tokens")?,
        token_types,
        merges: string_array(file, "tokenizer.ggml.merges")?,
        bos_id: opt_u32(file, "tokenizer.ggml.bos_token_id")?,
        eos_id: opt_u32(file, "tokenizer.ggml.eos_token_id")?,
        eot_id: opt_u32(file, "tokenizer.ggml.eot_token_id")?,
        eom_id: opt_u32(file, "tokenizer.ggml.eom_token_id")?,
        padding_id: opt_u32(file, "tokenizer.ggml.padding_token_id")?,
        unknown_id: opt_u32(file, "tokenizer.ggml.unknown_token_id")?,
        add_bos: opt_bool("tokenizer.ggml.add_bos_token")?,
        add_eos: opt_bool("tokenizer.ggml.add_eos_token")?,
        chat_template: file
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string),
    })
}

/// The tokenizer of a GGUF file.
pub fn tokenizer(file: &GgufFile) -> Result<Tokenizer> {
    Ok(Tokenizer::from_gguf_vocab(&vocab(file)?)?)
}

/// Sampling defaults of a GGUF model, as llama.cpp takes them: the file's `general.sampling.*`
/// keys where it has them, llama.cpp's own defaults otherwise (temperature 0.8, top-k 40,
/// top-p 0.95, min-p 0.05, no repetition penalty). A GGUF file carries no
/// `generation_config.json`, and its users expect what llama.cpp and Ollama do with it.
pub fn generation(file: &GgufFile) -> Result<GenerationConfig> {
    let f = |key: &str, default: f32| -> Result<f32> {
        Ok(opt_f64(file, key)?.map_or(default, |v| v as f32))
    };
    let temperature = f("general.sampling.temp", 0.8)?;
    let top_k = match file.get("general.sampling.top_k") {
        None => 40,
        Some(v) => v
            .as_f64()
            .filter(|k| *k >= 0.0 && k.fract() == 0.0)
            .map(|k| k as usize)
            .ok_or_else(|| {
                meta_err(
                    file,
                    "general.sampling.top_k",
                    format!("expected a non-negative integer, found {}", v.type_name()),
                )
            })?,
    };
    Ok(GenerationConfig {
        do_sample: Some(temperature > 0.0),
        temperature: Some(temperature),
        top_k: Some(top_k),
        top_p: Some(f("general.sampling.top_p", 0.95)?),
        min_p: Some(f("general.sampling.min_p", 0.05)?),
        repetition_penalty: Some(f("general.sampling.penalty_repeat", 1.0)?),
        ..GenerationConfig::default()
    })
}

/// Open a GGUF file and load its model (not its tokenizer).
pub fn load_model(path: &Path) -> Result<(GgufFile, Model, GenerationConfig, u64)> {
    let file = GgufFile::open(path)?;
    let config = config(&file)?;
    let tensors = GgufTensors::open(&file)?;
    let model = Model::load(config, &tensors, Naming::Gguf)?;
    let bytes = std::fs::metadata(path)
        .map_err(|e| Error::io(path, e))?
        .len();
    let generation = generation(&file)?;
    Ok((file, model, generation, bytes))
}
