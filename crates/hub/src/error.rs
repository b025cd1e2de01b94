//! The error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong while parsing a model reference, talking to
/// the hub or reading and writing the cache.
///
/// Each message names the repository, file, URL or path involved and, where
/// it applies, what was expected and what was found.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The text is neither an existing local path nor a valid hub reference.
    #[error("invalid model reference '{reference}': {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A reference that can only be a local path names nothing on disk.
    #[error("model path {} does not exist", path.display())]
    LocalNotFound {
        /// The path as given.
        path: PathBuf,
    },

    /// Offline mode, and the cache has no commit for the requested revision.
    #[error(
        "offline mode: no cached revision '{revision}' of {repo} in {} (missing {}); \
         run without offline mode (unset HF_HUB_OFFLINE) to download it",
        cache.display(), missing
    )]
    OfflineNoRevision {
        /// Repository id, `org/name`.
        repo: String,
        /// The branch or tag asked for.
        revision: String,
        /// The cache folder that was searched.
        cache: PathBuf,
        /// The cache entry that would have answered (e.g. `refs/main`).
        missing: String,
    },

    /// Offline mode (or a network failure), and files of the snapshot are missing.
    #[error(
        "offline mode: {repo} at commit {commit} is not complete in {}: missing {}; \
         run without offline mode (unset HF_HUB_OFFLINE) to download it",
        cache.display(), missing.join(", ")
    )]
    OfflineMissing {
        /// Repository id.
        repo: String,
        /// The commit whose snapshot was checked.
        commit: String,
        /// The cache folder.
        cache: PathBuf,
        /// File names missing from the snapshot.
        missing: Vec<String>,
    },

    /// The connection to the server failed (DNS, TCP, TLS, timeouts).
    #[error("request to {url} failed: {message}")]
    Network {
        /// The URL requested.
        url: String,
        /// The underlying error.
        message: String,
    },

    /// The server answered with an unexpected HTTP status.
    #[error(
        "{url} answered HTTP {status}, expected {expected}{}",
        detail_suffix(detail)
    )]
    Status {
        /// The URL requested.
        url: String,
        /// The status received.
        status: u16,
        /// What was expected, in words.
        expected: String,
        /// The hub's error message or error code, if any.
        detail: String,
    },

    /// The repository needs a token (gated or private) or the token was refused.
    #[error(
        "{repo}: access denied by {url} (HTTP {status}){}",
        if *token_sent {
            "; the token was refused: check that it is valid and that you accepted the model's terms on its page"
        } else {
            "; the repository is gated or private: set HF_TOKEN (or run `huggingface-cli login`) \
             and accept the model's terms on its page"
        }
    )]
    Unauthorized {
        /// Repository id.
        repo: String,
        /// The URL requested.
        url: String,
        /// 401 or 403.
        status: u16,
        /// Whether a token was sent.
        token_sent: bool,
    },

    /// The hub does not know the repository.
    #[error(
        "repository {repo} not found at {url}{}",
        if *token_sent { "" } else { " (if it is private or gated, set HF_TOKEN)" }
    )]
    RepoNotFound {
        /// Repository id.
        repo: String,
        /// The URL requested.
        url: String,
        /// Whether a token was sent.
        token_sent: bool,
    },

    /// The repository exists but the revision does not.
    #[error("revision '{revision}' not found in {repo} ({url})")]
    RevisionNotFound {
        /// Repository id.
        repo: String,
        /// The revision asked for.
        revision: String,
        /// The URL requested.
        url: String,
    },

    /// A file is not in the repository at that revision.
    #[error(
        "file '{file}' not found in {repo} at {revision}{}",
        if available.is_empty() { String::new() } else { list_suffix("files there", available) }
    )]
    FileNotFound {
        /// Repository id.
        repo: String,
        /// Revision or commit.
        revision: String,
        /// The file asked for.
        file: String,
        /// Files that are there (may be empty when unknown).
        available: Vec<String>,
    },

    /// The server's answer could not be understood.
    #[error("unexpected answer from {url}: {message}")]
    BadResponse {
        /// The URL requested.
        url: String,
        /// What was wrong.
        message: String,
    },

    /// No GGUF file in the repository matches the quantisation asked for.
    #[error(
        "no GGUF file in {repo} at {revision} matches '{quant}'{}",
        list_suffix("GGUF files there", candidates)
    )]
    NoMatchingFile {
        /// Repository id.
        repo: String,
        /// Revision or commit.
        revision: String,
        /// The quantisation type asked for.
        quant: String,
        /// The GGUF files in the repository.
        candidates: Vec<String>,
    },

    /// Several GGUF files match; the user has to pick one.
    #[error(
        "{} GGUF files in {repo} at {revision} match '{quant}': {}; name one as {repo}/FILE",
        candidates.len(), candidates.join(", ")
    )]
    AmbiguousFile {
        /// Repository id.
        repo: String,
        /// Revision or commit.
        revision: String,
        /// The selector used (a quant type, or `*.gguf` when none was given).
        quant: String,
        /// The matching files.
        candidates: Vec<String>,
    },

    /// The repository holds no weights this engine reads.
    #[error(
        "{repo} at {revision} has no usable model: {reason}{}",
        list_suffix("files there", files)
    )]
    NoWeights {
        /// Repository id.
        repo: String,
        /// Revision or commit.
        revision: String,
        /// What is missing.
        reason: String,
        /// Files that are there.
        files: Vec<String>,
    },

    /// A downloaded file does not match its expected size or hash; it was discarded.
    #[error("{0}")]
    Verification(Box<Mismatch>),

    /// A transfer kept failing; the partial file is kept so the next run resumes.
    #[error(
        "{repo}/{file}: download from {url} interrupted after {received} of {} bytes ({message}); \
         run again to resume",
        expected.map(|e| e.to_string()).unwrap_or_else(|| "?".to_string())
    )]
    Interrupted {
        /// Repository id.
        repo: String,
        /// File name.
        file: String,
        /// The URL downloaded.
        url: String,
        /// Bytes now in the partial file.
        received: u64,
        /// Expected size, when known.
        expected: Option<u64>,
        /// The last error.
        message: String,
    },

    /// A file of the model's index is malformed.
    #[error("{repo}/{file}: {message}")]
    InvalidFile {
        /// Repository id.
        repo: String,
        /// File name.
        file: String,
        /// What is wrong with it.
        message: String,
    },

    /// The model is not in the cache.
    #[error("{id} is not in the cache {}", cache.display())]
    NotCached {
        /// The id given.
        id: String,
        /// The cache folder.
        cache: PathBuf,
    },

    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The details of [`HubError::Verification`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{repo}/{file}: downloaded {what} {found} does not match the expected {expected} \
     (from {url}); the file was discarded"
)]
pub struct Mismatch {
    /// Repository id.
    pub repo: String,
    /// File name.
    pub file: String,
    /// The URL downloaded.
    pub url: String,
    /// `size`, `sha256` or `git sha1`.
    pub what: String,
    /// The expected value.
    pub expected: String,
    /// The value found.
    pub found: String,
}

impl HubError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> HubError {
        HubError::Io {
            path: path.into(),
            source,
        }
    }
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

fn list_suffix(label: &str, items: &[String]) -> String {
    if items.is_empty() {
        format!("; no {label}")
    } else {
        const SHOWN: usize = 40;
        let mut text = items
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if items.len() > SHOWN {
            text.push_str(&format!(", ... ({} in all)", items.len()));
        }
        format!("; {label}: {text}")
    }
}
