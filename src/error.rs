//! The library's error type. Every message names what was wrong and where (file, tensor,
//! field) and, where it applies, what was expected against what was found.

use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: invalid JSON: {err}")]
    Json {
        path: PathBuf,
        err: serde_json::Error,
    },
    /// A configuration field is missing or has the wrong type or value.
    #[error("{path}: field `{field}`: {msg}")]
    Config {
        path: PathBuf,
        field: String,
        msg: String,
    },
    /// A weight file is malformed (header, offsets, sizes).
    #[error("{path}: {msg}")]
    Weights { path: PathBuf, msg: String },
    /// A tensor is missing or has the wrong shape or type.
    #[error("tensor `{name}`: {msg}")]
    Tensor { name: String, msg: String },
    /// The request cannot be served (prompt too long, bad parameter value, ...).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Kernel(#[from] deepseek_tensor::TensorError),
    #[error(transparent)]
    Text(#[from] deepseek_text::TextError),
    #[error(transparent)]
    Gguf(#[from] deepseek_gguf::GgufError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            err,
        }
    }
    pub fn config(path: &Path, field: &str, msg: impl Into<String>) -> Self {
        Error::Config {
            path: path.to_path_buf(),
            field: field.to_string(),
            msg: msg.into(),
        }
    }
    pub fn tensor(name: &str, msg: impl Into<String>) -> Self {
        Error::Tensor {
            name: name.to_string(),
            msg: msg.into(),
        }
    }
}

/// Read a JSON file into a `serde_json::Value`, naming the file on failure.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|err| Error::Json {
        path: path.to_path_buf(),
        err,
    })
}
