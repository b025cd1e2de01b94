//! Writing GGUF files: from a Hugging Face folder (converting names, the Q/K row layout and the
//! tokenizer) or from another GGUF file, with every matrix re-encoded in a chosen type.

use crate::error::{read_json, Error, Result};
use crate::loader::gguf::GgufTensors;
use crate::loader::safetensors::SafetensorsSet;
use crate::loader::{detect_format, Format, Tensor, TensorSource};
use crate::model::ModelConfig;
use deepseek_gguf::{GgufFile, GgufWriter, TensorSpec, Value};
use deepseek_tensor::DType;
use rayon::prelude::*;
use serde_json::Value as Json;
use std::path::Path;

/// (source name, output name, heads whose Q/K rows to permute) for each output tensor.
type NameMap = Vec<(String, String, Option<usize>)>;

/// What to do with each tensor of the output.
struct Plan {
    /// Name in the output.
    name: String,
    source: Tensor,
    /// Row-major shape `[rows, cols]` (or `[n]`).
    shape: Vec<usize>,
    dtype: DType,
    /// Permute rows from Hugging Face's rotate-half layout to GGUF's interleaved one, with this
    /// many heads.
    permute_heads: Option<usize>,
}

/// The llama.cpp `general.file_type` for an output type.
fn file_type(t: DType) -> u32 {
    match t {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q5_0 => 8,
        DType::Q5_1 => 9,
        DType::Q4_K => 15,
        DType::Q5_K => 17,
        DType::Q6_K => 18,
        DType::BF16 => 32,
    }
}

/// The type a matrix of `cols` columns is stored in. Rows must be whole blocks: K-quants fall
/// back to 32-element types, and those to F16, as llama.cpp's quantizer does.
fn matrix_type(target: DType, cols: usize) -> DType {
    if cols.is_multiple_of(target.block_size()) {
        return target;
    }
    let fallback = match target {
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        DType::Q6_K => DType::Q8_0,
        other => other,
    };
    if cols.is_multiple_of(fallback.block_size()) {
        fallback
    } else {
        DType::F16
    }
}

/// Row `r`'s source row under the rotate-half → interleaved permutation of each head.
fn permuted_row(r: usize, rows: usize, heads: usize) -> usize {
    let d = rows / heads;
    let (h, i) = (r / d, r % d);
    let (pair, half) = (i / 2, i % 2);
    h * d + half * (d / 2) + pair
}

/// Encode one tensor in its output type, row by row in parallel.
fn encode(p: &Plan) -> Result<Vec<u8>> {
    let (rows, cols) = match p.shape.as_slice() {
        [n] => (1, *n),
        [r, c] => (*r, *c),
        s => {
            return Err(Error::tensor(
                &p.name,
                format!("expected 1 or 2 dimensions, found {s:?}"),
            ))
        }
    };
    let src = p.source.mat()?;
    let row_bytes = p.dtype.row_bytes(cols)?;
    let mut out = vec![0u8; rows * row_bytes];
    out.par_chunks_mut(row_bytes)
        .enumerate()
        .try_for_each(|(r, dst)| -> Result<()> {
            let sr = match p.permute_heads {
                Some(h) => permuted_row(r, rows, h),
                None => r,
            };
            let mut buf = vec![0f32; cols];
            deepseek_tensor::dequantize_row(&src, sr, &mut buf)?;
            let q = deepseek_tensor::quantize(p.dtype, &buf)
                .map_err(|e| Error::tensor(&p.name, e.to_string()))?;
            dst.copy_from_slice(&q);
            Ok(())
        })?;
    Ok(out)
}

fn hf_plans(dir: &Path, cfg: &ModelConfig) -> Result<(SafetensorsSet, NameMap)> {
    let weights = SafetensorsSet::open_dir(dir)?;
    let mut names = vec![(
        "model.embed_tokens.weight".to_string(),
        "token_embd.weight".to_string(),
        None,
    )];
    for i in 0..cfg.num_layers {
        let hf = |s: &str| format!("model.layers.{i}.{s}.weight");
        let gg = |s: &str| format!("blk.{i}.{s}.weight");
        names.push((hf("input_layernorm"), gg("attn_norm"), None));
        names.push((hf("self_attn.q_proj"), gg("attn_q"), Some(cfg.num_heads)));
        names.push((hf("self_attn.k_proj"), gg("attn_k"), Some(cfg.num_kv_heads)));
        names.push((hf("self_attn.v_proj"), gg("attn_v"), None));
        names.push((hf("self_attn.o_proj"), gg("attn_output"), None));
        names.push((hf("post_attention_layernorm"), gg("ffn_norm"), None));
        names.push((hf("mlp.gate_proj"), gg("ffn_gate"), None));
        names.push((hf("mlp.up_proj"), gg("ffn_up"), None));
        names.push((hf("mlp.down_proj"), gg("ffn_down"), None));
    }
    names.push((
        "model.norm.weight".into(),
        "output_norm.weight".into(),
        None,
    ));
    if !cfg.tie_word_embeddings || weights.get("lm_head.weight").is_some() {
        names.push(("lm_head.weight".into(), "output.weight".into(), None));
    }
    Ok((weights, names))
}

/// GGUF tokenizer metadata from a Hugging Face folder's tokenizer files.
fn hf_tokenizer_metadata(
    dir: &Path,
    vocab_size: usize,
    pre_override: Option<&str>,
) -> Result<Vec<(String, Value)>> {
    let path = dir.join("tokenizer.json");
    let tj = read_json(&path)?;
    let model = &tj["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(Error::config(
            &path,
            "model.type",
            format!("expected \"BPE\", found {}", model["type"]),
        ));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| Error::config(&path, "model.vocab", "expected an object of token -> id"))?;
    let mut tokens: Vec<Option<String>> = Vec::new();
    let mut types: Vec<i32> = Vec::new();
    let mut put = |id: usize, tok: &str, ty: i32, tokens: &mut Vec<Option<String>>| {
        if tokens.len() <= id {
            tokens.resize(id + 1, None);
            types.resize(id + 1, 1);
        }
        tokens[id] = Some(tok.to_string());
        types[id] = ty;
    };
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| {
            Error::config(
                &path,
                "model.vocab",
                format!("token {tok:?}: expected an id, found {id}"),
            )
        })?;
        put(id as usize, tok, 1, &mut tokens);
    }
    for t in tj["added_tokens"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or(&[])
    {
        let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
            return Err(Error::config(
                &path,
                "added_tokens",
                format!("expected {{id, content}}, found {t}"),
            ));
        };
        let ty = if t["special"].as_bool() == Some(true) {
            3
        } else {
            4
        };
        put(id as usize, content, ty, &mut tokens);
    }
    let n = tokens.len().max(vocab_size);
    tokens.resize(n, None);
    types.resize(n, 1);
    let mut names = Vec::with_capacity(n);
    for (i, t) in tokens.into_iter().enumerate() {
        match t {
            Some(t) => names.push(Value::String(t)),
            None => {
                names.push(Value::String(format!("[PAD{i}]")));
                types[i] = 5;
            }
        }
    }
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(Value::String(s.clone())),
            Json::Array(p) if p.len() == 2 => Ok(Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            ))),
            other => Err(Error::config(
                &path,
                "model.merges",
                format!("expected \"a b\" or [a, b], found {other}"),
            )),
        })
        .collect::<Result<_>>()?;
    let pre = match pre_override {
        Some(p) => p.to_string(),
        None => detect_pre(&tj["pre_tokenizer"]).ok_or_else(|| {
            Error::config(
                &path,
                "pre_tokenizer",
                "not one this engine can name for GGUF (deepseek-llm, llama-bpe, gpt2): pass --pre NAME",
            )
        })?,
    };
    let tok = deepseek_text::Tokenizer::from_hf_dir(dir)?;
    let mut meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_string(), Value::String(pre)),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(names)),
        (
            "tokenizer.ggml.token_type".to_string(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
    ];
    if let Some(b) = tok.bos_id() {
        meta.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    if let Some(e) = tok.eos_ids().first() {
        meta.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(*e)));
    }
    meta.push((
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(tok.add_bos_by_default()),
    ));
    meta.push(("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)));
    meta.push((
        "tokenizer.chat_template".into(),
        Value::String(tok.chat_template().to_string()),
    ));
    Ok(meta)
}

/// Name a tokenizer.json pre-tokenizer the way llama.cpp's `tokenizer.ggml.pre` does.
fn detect_pre(pre: &Json) -> Option<String> {
    let text = pre.to_string();
    if pre["type"] == "Sequence"
        && text.contains(r#""Regex":"[\r\n]""#)
        && text.contains("individual_digits")
    {
        return Some("deepseek-llm".into());
    }
    if text.contains("(?i:'s|'t|'re|'ve|'m|'ll|'d)") {
        return Some("llama-bpe".into());
    }
    if pre["type"] == "ByteLevel" && pre["use_regex"] != false {
        return Some("gpt2".into());
    }
    None
}

/// Summary of a conversion.
pub struct Converted {
    pub tensors: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Convert `input` (a Hugging Face folder or a GGUF file) to a GGUF file with matrices in
/// `target`. `progress` is called with (tensors done, tensors in all, name).
pub fn quantize(
    input: &Path,
    output: &Path,
    target: DType,
    pre_override: Option<&str>,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<Converted> {
    let mut meta: Vec<(String, Value)> = Vec::new();
    let (source, names, bytes_in): (Box<dyn TensorSource>, NameMap, u64) =
        match detect_format(input)? {
            Format::HfFolder => {
                let cfg = ModelConfig::from_hf_config(&input.join("config.json"))?;
                let (weights, names) = hf_plans(input, &cfg)?;
                let name = input
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                meta.push(("general.architecture".into(), Value::String("llama".into())));
                meta.push(("general.name".into(), Value::String(name)));
                let a = |k: &str| format!("llama.{k}");
                meta.push((
                    a("context_length"),
                    Value::U32(cfg.max_position_embeddings as u32),
                ));
                meta.push((a("embedding_length"), Value::U32(cfg.hidden_size as u32)));
                meta.push((a("block_count"), Value::U32(cfg.num_layers as u32)));
                meta.push((
                    a("feed_forward_length"),
                    Value::U32(cfg.intermediate_size as u32),
                ));
                meta.push((a("rope.dimension_count"), Value::U32(cfg.head_dim as u32)));
                meta.push((a("attention.head_count"), Value::U32(cfg.num_heads as u32)));
                meta.push((
                    a("attention.head_count_kv"),
                    Value::U32(cfg.num_kv_heads as u32),
                ));
                meta.push((
                    a("attention.layer_norm_rms_epsilon"),
                    Value::F32(cfg.rms_norm_eps),
                ));
                meta.push((a("rope.freq_base"), Value::F32(cfg.rope_theta)));
                if cfg.rope_scale != 1.0 {
                    meta.push((a("rope.scaling.type"), Value::String("linear".into())));
                    meta.push((a("rope.scaling.factor"), Value::F32(cfg.rope_scale)));
                }
                meta.push((a("vocab_size"), Value::U32(cfg.vocab_size as u32)));
                meta.push(("general.file_type".into(), Value::U32(file_type(target))));
                meta.push(("general.quantization_version".into(), Value::U32(2)));
                meta.extend(hf_tokenizer_metadata(input, cfg.vocab_size, pre_override)?);
                let bytes = weights.total_bytes();
                (Box::new(weights), names, bytes)
            }
            Format::Gguf => {
                let file = GgufFile::open(input)?;
                for (k, v) in file.metadata() {
                    if k != "general.file_type" && k != "general.alignment" {
                        meta.push((k.clone(), v.clone()));
                    }
                }
                meta.push(("general.file_type".into(), Value::U32(file_type(target))));
                let names = file
                    .tensors()
                    .iter()
                    .map(|t| (t.name.clone(), t.name.clone(), None))
                    .collect();
                let bytes = std::fs::metadata(input)
                    .map_err(|e| Error::io(input, e))?
                    .len();
                (Box::new(GgufTensors::open(&file)?), names, bytes)
            }
        };
    let mut plans = Vec::with_capacity(names.len());
    for (src_name, out_name, permute) in names {
        let t = source.get(&src_name).ok_or_else(|| {
            Error::tensor(&src_name, format!("missing from {}", source.describe()))
        })?;
        let shape = t.shape.clone();
        let dtype = match shape.as_slice() {
            [_] => DType::F32,
            [_, c] => matrix_type(target, *c),
            s => {
                return Err(Error::tensor(
                    &src_name,
                    format!("expected 1 or 2 dimensions, found {s:?}"),
                ))
            }
        };
        if let (Some(h), [rows, _]) = (permute, shape.as_slice()) {
            if h == 0 || rows % h != 0 || (rows / h) % 2 != 0 {
                return Err(Error::tensor(
                    &src_name,
                    format!("{rows} rows do not split into {h} heads of even size"),
                ));
            }
        }
        plans.push(Plan {
            name: out_name,
            source: t,
            shape,
            dtype,
            permute_heads: permute,
        });
    }
    let specs = plans
        .iter()
        .map(|p| {
            TensorSpec::new(
                p.name.clone(),
                p.shape.iter().rev().map(|d| *d as u64).collect(),
                p.dtype,
            )
        })
        .collect();
    let mut sink =
        GgufWriter::new(meta, specs, deepseek_gguf::DEFAULT_ALIGNMENT)?.create(output)?;
    let total = plans.len();
    for (i, p) in plans.iter().enumerate() {
        progress(i, total, &p.name);
        let data = encode(p)?;
        sink.write_tensor(&p.name, &data)?;
    }
    progress(total, total, "");
    sink.finish()?;
    let bytes_out = std::fs::metadata(output)
        .map_err(|e| Error::io(output, e))?
        .len();
    Ok(Converted {
        tensors: total,
        bytes_in,
        bytes_out,
    })
}
