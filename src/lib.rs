//! `deepseek`: run the DeepSeek LLM family (LLaMA architecture) on CPUs.

pub mod error;
pub mod loader;
pub mod model;

pub mod convert;
pub mod engine;
pub mod sampling;
pub mod server;

pub use error::{Error, Result};
