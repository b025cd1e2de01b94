//! GGUF files (llama.cpp's model format, versions 2 and 3): a validating, memory-mapped
//! reader and a streaming writer.
//!
//! Layout (little-endian): magic `GGUF`, `u32` version, `u64` tensor count, `u64` metadata
//! count; the metadata entries (key string, `u32` value type, value); the tensor infos (name,
//! `u32` dimension count, `u64` dimensions with ne0 first, `u32` ggml type, `u64` offset
//! relative to the data section); then the data section, starting at the next multiple of
//! `general.alignment` (default 32). Strings are a `u64` length followed by UTF-8 bytes.
//!
//! [`GgufFile::open`] validates the whole header and every tensor's bounds up front, so later
//! accesses cannot fail; [`GgufWriter`] writes a file tensor by tensor without holding the
//! data in memory.

#![warn(missing_docs)]

mod error;
mod reader;
mod value;
mod writer;

pub use deepseek_tensor::DType;
pub use error::GgufError;
pub use reader::{GgufFile, TensorInfo};
pub use value::{value_type, Value};
pub use writer::{GgufTensorSink, GgufWriter, TensorSpec};

/// The first four bytes of every GGUF file.
pub const MAGIC: &[u8; 4] = b"GGUF";

/// Data alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Most dimensions a tensor may have (as in ggml).
pub const MAX_DIMS: usize = 4;

/// Deepest nesting of arrays inside arrays accepted (bounds recursion on hostile input).
pub const MAX_ARRAY_DEPTH: usize = 8;
