//! Model references, Hugging Face hub downloads and the local cache.
//!
//! A model is named by a local path (a Hugging Face model folder or a `.gguf`
//! file) or by a hub reference: `org/name`, `org/name:REVISION`,
//! `org/name/file.gguf` or `org/name:Q4_K_M`. [`resolve`] turns any of them
//! into a local path, downloading what is missing into the standard Hugging
//! Face cache (shared with `transformers`, `huggingface-cli`, vLLM, ...).
//! Downloads resume after an interruption and are checked against the sizes
//! and hashes the hub publishes before they are placed in the cache.
//!
//! [`list_cached`] and [`remove_cached`] manage the cache.

mod cache;
mod error;
mod http;
mod options;
mod reference;
mod resolve;

pub use cache::{list_cached, remove_cached, CachedModel};
pub use error::{HubError, Mismatch};
pub use options::{HubOptions, DEFAULT_ENDPOINT};
pub use reference::{is_commit_hash, is_quant_tag, parse_reference, ModelRef};
pub use resolve::{resolve, resolve_ref, CONFIG_FILE, INDEX_FILE, OPTIONAL_FILES, WEIGHTS_FILE};
