//! Error type of the crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading a tokenizer, encoding text or rendering a
/// chat template. Every message is one line and names the file or field involved.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid JSON.
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A file is valid JSON but not something the `tokenizers` library accepts.
    #[error("{}: not a usable tokenizer.json: {message}", path.display())]
    BadTokenizerJson {
        /// The file.
        path: PathBuf,
        /// What the library reported.
        message: String,
    },
    /// A field of a configuration file has the wrong type or value.
    #[error("{}: field `{field}`: expected {expected}, found {found}", path.display())]
    BadField {
        /// The file.
        path: PathBuf,
        /// The field name.
        field: String,
        /// What was expected.
        expected: String,
        /// What was found.
        found: String,
    },
    /// GGUF tokenizer metadata that cannot be used.
    #[error("GGUF metadata `{field}`: {message}")]
    Gguf {
        /// The metadata key.
        field: String,
        /// What is wrong, with expected vs found.
        message: String,
    },
    /// A `tokenizer.ggml.pre` value this crate does not know.
    #[error(
        "unknown tokenizer.ggml.pre \"{0}\": supported are deepseek-llm, llama-bpe (llama3, llama-v3), \
         smollm, gpt2 (gpt-2) and default; pass --tokenizer tokenizer.json"
    )]
    UnknownPre(String),
    /// A `tokenizer.ggml.model` value this crate does not support.
    #[error(
        "unsupported tokenizer.ggml.model \"{0}\": only \"gpt2\" (byte-level BPE) is supported; \
         pass --tokenizer tokenizer.json"
    )]
    UnsupportedModel(String),
    /// Building the tokenizer from GGUF metadata failed inside the `tokenizers` library.
    #[error("cannot build a tokenizer from GGUF metadata: {0}")]
    GgufBuild(String),
    /// The chat template has a syntax error or failed to render.
    #[error("chat template ({origin}): {message}")]
    Template {
        /// Where the template came from (file and field, GGUF key, or built-in).
        origin: String,
        /// The template engine's message.
        message: String,
    },
    /// Encoding failed inside the `tokenizers` library.
    #[error("cannot encode text: {0}")]
    Encode(String),
}

/// Squash a message onto one line.
pub(crate) fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, line) in s
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str("; ");
        }
        out.push_str(line);
    }
    out
}
