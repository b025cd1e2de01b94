//! Text side of the engine: tokenizer loading (Hugging Face `tokenizer.json` or GGUF
//! metadata), encoding and decoding, chat templates, and a streaming detokenizer.
//!
//! Both tokenizer formats are turned into a [`tokenizers::Tokenizer`], so encoding and
//! decoding share one implementation whatever the source.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod bytes;
mod chat;
mod error;
mod gguf;
mod stream;
mod tokenizer;

pub use chat::{ChatMessage, DEEPSEEK_LLM_CHAT_TEMPLATE};
pub use error::TextError;
pub use gguf::GgufVocab;
pub use stream::StreamDecoder;
pub use tokenizer::Tokenizer;
