//! Model hyper-parameters, read from a Hugging Face `config.json` or GGUF metadata.

use crate::error::{read_json, Error, Result};
use serde_json::Value;
use std::path::Path;

/// How query/key dimensions are paired for rotary embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Hugging Face `rotate_half` layout: dimension j rotates with j + d/2.
    NeoX,
    /// GGUF llama layout (rows of Q and K permuted at conversion): j rotates with j + 1, pairs (2i, 2i+1).
    Interleaved,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    /// Linear RoPE scaling: positions are divided by this factor (1 = none).
    pub rope_scale: f32,
    pub rope_style: RopeStyle,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

fn get<'a>(v: &'a Value, path: &Path, field: &str) -> Result<&'a Value> {
    v.get(field)
        .filter(|x| !x.is_null())
        .ok_or_else(|| Error::config(path, field, "missing"))
}

fn get_usize(v: &Value, path: &Path, field: &str) -> Result<usize> {
    let x = get(v, path, field)?;
    x.as_u64()
        .filter(|n| *n > 0 && *n < (1 << 40))
        .map(|n| n as usize)
        .ok_or_else(|| {
            Error::config(
                path,
                field,
                format!("expected a positive integer, found {x}"),
            )
        })
}

fn get_f32(v: &Value, path: &Path, field: &str) -> Result<Option<f32>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .filter(|f| f.is_finite())
            .map(|f| Some(f as f32))
            .ok_or_else(|| Error::config(path, field, format!("expected a number, found {x}"))),
    }
}

/// Token ids given as one integer or a list of integers.
pub(crate) fn get_ids(v: &Value, path: &Path, field: &str) -> Result<Vec<u32>> {
    let bad = |x: &Value| {
        Error::config(
            path,
            field,
            format!("expected a token id or a list of ids, found {x}"),
        )
    };
    match v.get(field) {
        None | Some(Value::Null) => Ok(vec![]),
        Some(x @ Value::Number(_)) => Ok(vec![x
            .as_u64()
            .filter(|n| *n <= u32::MAX as u64)
            .ok_or_else(|| bad(x))? as u32]),
        Some(x @ Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_u64()
                    .filter(|n| *n <= u32::MAX as u64)
                    .map(|n| n as u32)
                    .ok_or_else(|| bad(x))
            })
            .collect(),
        Some(x) => Err(bad(x)),
    }
}

impl ModelConfig {
    /// Parse a Hugging Face `config.json` of a `LlamaForCausalLM` model.
    pub fn from_hf_config(path: &Path) -> Result<ModelConfig> {
        let v = read_json(path)?;
        Self::from_hf_value(&v, path)
    }

    pub fn from_hf_value(v: &Value, path: &Path) -> Result<ModelConfig> {
        let arch_ok = match v.get("architectures") {
            Some(Value::Array(a)) => a.iter().any(|x| x.as_str() == Some("LlamaForCausalLM")),
            _ => false,
        };
        let model_type = v.get("model_type").and_then(|x| x.as_str());
        if !arch_ok && model_type != Some("llama") {
            let found = v
                .get("architectures")
                .map(|a| a.to_string())
                .or_else(|| model_type.map(|m| format!("model_type {m:?}")))
                .unwrap_or_else(|| "nothing".into());
            return Err(Error::config(
                path,
                "architectures",
                format!("unsupported architecture: expected LlamaForCausalLM (model_type \"llama\"), found {found}"),
            ));
        }
        let hidden_size = get_usize(v, path, "hidden_size")?;
        let num_heads = get_usize(v, path, "num_attention_heads")?;
        let num_kv_heads = match v.get("num_key_value_heads") {
            None | Some(Value::Null) => num_heads,
            Some(_) => get_usize(v, path, "num_key_value_heads")?,
        };
        if hidden_size % num_heads != 0 {
            return Err(Error::config(
                path,
                "num_attention_heads",
                format!("hidden_size {hidden_size} is not a multiple of {num_heads} heads"),
            ));
        }
        if num_heads % num_kv_heads != 0 {
            return Err(Error::config(
                path,
                "num_key_value_heads",
                format!("{num_heads} attention heads are not a multiple of {num_kv_heads} key/value heads"),
            ));
        }
        let head_dim = match v.get("head_dim") {
            None | Some(Value::Null) => hidden_size / num_heads,
            Some(_) => get_usize(v, path, "head_dim")?,
        };
        if head_dim % 2 != 0 {
            return Err(Error::config(
                path,
                "head_dim",
                format!("expected an even head size, found {head_dim}"),
            ));
        }
        if let Some(act) = v.get("hidden_act").and_then(|a| a.as_str()) {
            if act != "silu" {
                return Err(Error::config(
                    path,
                    "hidden_act",
                    format!("expected \"silu\", found {act:?}"),
                ));
            }
        }
        for flag in ["attention_bias", "mlp_bias"] {
            if v.get(flag).and_then(|b| b.as_bool()) == Some(true) {
                return Err(Error::config(
                    path,
                    flag,
                    "biases are not supported: expected false, found true",
                ));
            }
        }
        let rope_scale = match v.get("rope_scaling") {
            None | Some(Value::Null) => 1.0,
            Some(Value::Object(o)) => {
                let kind = o
                    .get("type")
                    .or_else(|| o.get("rope_type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                match kind {
                    "linear" => {
                        let f = o
                            .get("factor")
                            .and_then(|f| f.as_f64())
                            .filter(|f| *f > 0.0 && f.is_finite());
                        f.ok_or_else(|| {
                            Error::config(path, "rope_scaling.factor", "expected a positive number")
                        })? as f32
                    }
                    "default" => 1.0,
                    other => {
                        return Err(Error::config(
                            path,
                            "rope_scaling.type",
                            format!("expected \"linear\", found {other:?}"),
                        ))
                    }
                }
            }
            Some(x) => {
                return Err(Error::config(
                    path,
                    "rope_scaling",
                    format!("expected null or an object, found {x}"),
                ))
            }
        };
        let tie = match v.get("tie_word_embeddings") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(x) => {
                return Err(Error::config(
                    path,
                    "tie_word_embeddings",
                    format!("expected a boolean, found {x}"),
                ))
            }
        };
        let bos = get_ids(v, path, "bos_token_id")?.first().copied();
        Ok(ModelConfig {
            vocab_size: get_usize(v, path, "vocab_size")?,
            hidden_size,
            intermediate_size: get_usize(v, path, "intermediate_size")?,
            num_layers: get_usize(v, path, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps: get_f32(v, path, "rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: get_f32(v, path, "rope_theta")?.unwrap_or(10000.0),
            rope_scale,
            rope_style: RopeStyle::NeoX,
            max_position_embeddings: match v.get("max_position_embeddings") {
                None | Some(Value::Null) => 4096,
                Some(_) => get_usize(v, path, "max_position_embeddings")?,
            },
            tie_word_embeddings: tie,
            bos_token_id: bos,
            eos_token_ids: get_ids(v, path, "eos_token_id")?,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// Sampling defaults and stop ids from `generation_config.json`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationConfig {
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub max_new_tokens: Option<usize>,
}

impl GenerationConfig {
    pub fn from_file(path: &Path) -> Result<GenerationConfig> {
        let v = read_json(path)?;
        let f = |field: &str| get_f32(&v, path, field);
        let do_sample = match v.get("do_sample") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(x) => {
                return Err(Error::config(
                    path,
                    "do_sample",
                    format!("expected a boolean, found {x}"),
                ))
            }
        };
        let opt_usize = |field: &str| -> Result<Option<usize>> {
            match v.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| {
                    Error::config(
                        path,
                        field,
                        format!("expected a non-negative integer, found {x}"),
                    )
                }),
            }
        };
        Ok(GenerationConfig {
            do_sample,
            temperature: f("temperature")?,
            top_p: f("top_p")?,
            top_k: opt_usize("top_k")?,
            min_p: f("min_p")?,
            repetition_penalty: f("repetition_penalty")?,
            bos_token_id: get_ids(&v, path, "bos_token_id")?.first().copied(),
            eos_token_ids: get_ids(&v, path, "eos_token_id")?,
            max_new_tokens: opt_usize("max_new_tokens")?,
        })
    }
}
