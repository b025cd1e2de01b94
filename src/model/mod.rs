//! The decoder model and its configuration.

pub mod config;
pub mod kv_cache;
pub mod llama;

pub use config::{GenerationConfig, ModelConfig, RopeStyle};
pub use kv_cache::{CacheType, KvCache};
pub use llama::{Logits, Model, Naming, Repacking, SeqInput, Weight};
