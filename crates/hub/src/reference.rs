//! Model references: a local path, or a model on the Hugging Face hub.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::HubError;

/// What a model reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A local folder (Hugging Face layout) or a local `.gguf` file.
    Local(PathBuf),
    /// A model on the hub.
    Hub {
        /// Repository id, `org/name`.
        repo: String,
        /// Branch, tag or commit; `None` means `main`.
        revision: Option<String>,
        /// One file of the repository (a GGUF file), instead of the whole folder.
        file: Option<String>,
        /// A quantisation type (e.g. `Q4_K_M`) that selects one GGUF file.
        quant: Option<String>,
    },
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Local(path) => write!(f, "{}", path.display()),
            ModelRef::Hub {
                repo,
                revision,
                file,
                quant,
            } => {
                write!(f, "{repo}")?;
                if let Some(file) = file {
                    write!(f, "/{file}")?;
                }
                if let Some(quant) = quant {
                    write!(f, ":{quant}")?;
                } else if let Some(revision) = revision {
                    write!(f, ":{revision}")?;
                }
                Ok(())
            }
        }
    }
}

/// Prefixes that people copy from web pages; they are dropped.
const HUB_PREFIXES: [&str; 5] = [
    "https://huggingface.co/",
    "http://huggingface.co/",
    "huggingface.co/",
    "https://hf.co/",
    "hf.co/",
];

/// Parses a model reference.
///
/// An existing local path always wins. Otherwise the accepted forms are
/// `org/name` (the whole model folder at `main`), `org/name:REVISION` (a
/// branch, tag or commit), `org/name/path/to/file.gguf` (one file, optionally
/// followed by `:REVISION`) and `org/name:QUANT` where `QUANT` looks like a
/// quantisation type (`Q4_K_M`, `Q8_0`, `F16`, `BF16`, `IQ4_XS`, ...); it
/// selects the one GGUF file whose name carries it. A leading `hf.co/` or
/// `https://huggingface.co/` is accepted and dropped.
///
/// Text that can only be a path (it starts with `/`, `./`, `../` or `~`, or
/// names a `.gguf` file without an `org/name/` prefix) and does not exist
/// gives [`HubError::LocalNotFound`].
pub fn parse_reference(s: &str) -> Result<ModelRef, HubError> {
    let invalid = |reason: &str| HubError::InvalidReference {
        reference: s.to_string(),
        reason: reason.to_string(),
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(invalid("it is empty"));
    }
    let path = Path::new(text);
    if path.exists() {
        return Ok(ModelRef::Local(path.to_path_buf()));
    }
    if looks_like_path(text) {
        return Err(HubError::LocalNotFound {
            path: path.to_path_buf(),
        });
    }
    let mut text = text;
    for prefix in HUB_PREFIXES {
        if let Some(rest) = text.strip_prefix(prefix) {
            text = rest;
            break;
        }
    }
    let text = text.trim_end_matches('/');
    let (location, suffix) = match text.split_once(':') {
        Some((location, suffix)) => (location, Some(suffix)),
        None => (text, None),
    };
    let parts: Vec<&str> = location.split('/').collect();
    if parts.len() < 2 {
        if location.to_ascii_lowercase().ends_with(".gguf") {
            return Err(HubError::LocalNotFound {
                path: path.to_path_buf(),
            });
        }
        return Err(invalid(
            "it is not an existing local path, and not a hub id of the form org/name",
        ));
    }
    let (org, name) = (parts[0], parts[1]);
    validate_repo_part(org).map_err(|r| invalid(&format!("organisation '{org}': {r}")))?;
    validate_repo_part(name).map_err(|r| invalid(&format!("model name '{name}': {r}")))?;
    let repo = format!("{org}/{name}");
    let file = if parts.len() > 2 {
        let file = parts[2..].join("/");
        validate_file_name(&file).map_err(|r| invalid(&format!("file '{file}': {r}")))?;
        Some(file)
    } else {
        None
    };
    let (revision, quant) = match suffix {
        None => (None, None),
        Some("") => {
            return Err(invalid(
                "nothing follows ':' (expected a revision or a quant type such as Q4_K_M)",
            ))
        }
        Some(suffix) if is_quant_tag(suffix) => {
            if file.is_some() {
                return Err(invalid(
                    "give either a file (org/name/file.gguf) or a quant type (org/name:Q4_K_M), not both",
                ));
            }
            (None, Some(suffix.to_string()))
        }
        Some(suffix) => {
            validate_revision(suffix).map_err(|r| invalid(&format!("revision '{suffix}': {r}")))?;
            (Some(suffix.to_string()), None)
        }
    };
    Ok(ModelRef::Hub {
        repo,
        revision,
        file,
        quant,
    })
}

/// Whether `s` looks like a quantisation type rather than a revision:
/// `Q4_K_M`, `Q8_0`, `Q4_0`, `IQ4_XS`, `IQ2_XXS`, `TQ1_0`, `F16`, `BF16`,
/// `F32`, `FP16`, `FP8`, `MXFP4`, optionally prefixed by `UD-` (case-insensitive).
pub fn is_quant_tag(s: &str) -> bool {
    let upper = s.to_ascii_uppercase();
    let upper = upper.strip_prefix("UD-").unwrap_or(&upper);
    if matches!(
        upper,
        "F16" | "F32" | "BF16" | "FP16" | "FP32" | "FP8" | "F64" | "MXFP4"
    ) {
        return true;
    }
    let rest = if let Some(rest) = upper.strip_prefix("IQ") {
        rest
    } else if let Some(rest) = upper.strip_prefix("TQ") {
        rest
    } else if let Some(rest) = upper.strip_prefix('Q') {
        rest
    } else {
        return false;
    };
    let mut pieces = rest.split('_');
    let bits = pieces.next().unwrap_or("");
    if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) || bits.len() > 2 {
        return false;
    }
    pieces.all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Whether `s` is a full commit hash (40 lowercase hex digits).
pub fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn looks_like_path(text: &str) -> bool {
    text.starts_with('/')
        || text.starts_with("./")
        || text.starts_with("../")
        || text == "."
        || text == ".."
        || text.starts_with('~')
        || text.contains('\\')
        || (text.len() >= 2
            && text.as_bytes()[1] == b':'
            && text.as_bytes()[0].is_ascii_alphabetic())
}

fn validate_repo_part(part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err("it is empty".into());
    }
    if part.len() > 96 {
        return Err("it is longer than 96 characters".into());
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err("only letters, digits, '-', '_' and '.' are allowed".into());
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Err("it may not start or end with '-' or '.'".into());
    }
    if part.contains("--") || part.contains("..") {
        return Err("'--' and '..' are not allowed".into());
    }
    Ok(())
}

/// Checks that a file name from a reference, an API answer or an index is a
/// plain relative path inside the repository.
pub(crate) fn validate_file_name(file: &str) -> Result<(), String> {
    if file.is_empty() {
        return Err("it is empty".into());
    }
    if file.starts_with('/') || file.contains('\\') || file.contains('\0') {
        return Err("it must be a relative path with '/' separators".into());
    }
    if file
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("empty, '.' and '..' path components are not allowed".into());
    }
    Ok(())
}

/// Checks that a revision can be used as a cache path (`refs/<revision>`).
pub(crate) fn validate_revision(revision: &str) -> Result<(), String> {
    if revision.is_empty() {
        return Err("it is empty".into());
    }
    if revision.contains('\\') || revision.contains('\0') || revision.starts_with('/') {
        return Err("it contains a character not allowed in a revision".into());
    }
    if revision
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("empty, '.' and '..' path components are not allowed".into());
    }
    Ok(())
}

/// Parses `org/name` or `org/name:REVISION` as used by `list`/`rm`.
pub(crate) fn parse_repo_id(id: &str) -> Result<(String, Option<String>), HubError> {
    let invalid = |reason: String| HubError::InvalidReference {
        reference: id.to_string(),
        reason,
    };
    let (location, revision) = match id.trim().split_once(':') {
        Some((l, r)) => (l, Some(r)),
        None => (id.trim(), None),
    };
    let mut location = location;
    for prefix in HUB_PREFIXES {
        if let Some(rest) = location.strip_prefix(prefix) {
            location = rest;
            break;
        }
    }
    let parts: Vec<&str> = location.trim_end_matches('/').split('/').collect();
    if parts.len() != 2 {
        return Err(invalid("expected a hub id of the form org/name".into()));
    }
    validate_repo_part(parts[0]).map_err(|r| invalid(format!("organisation: {r}")))?;
    validate_repo_part(parts[1]).map_err(|r| invalid(format!("model name: {r}")))?;
    if let Some(rev) = revision {
        validate_revision(rev).map_err(|r| invalid(format!("revision: {r}")))?;
    }
    Ok((
        format!("{}/{}", parts[0], parts[1]),
        revision.map(str::to_string),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(
        repo: &str,
        revision: Option<&str>,
        file: Option<&str>,
        quant: Option<&str>,
    ) -> ModelRef {
        ModelRef::Hub {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
            file: file.map(str::to_string),
            quant: quant.map(str::to_string),
        }
    }

    #[test]
    fn hub_ids() {
        assert_eq!(
            parse_reference("deepseek-ai/deepseek-llm-7b-chat").unwrap(),
            hub("deepseek-ai/deepseek-llm-7b-chat", None, None, None)
        );
        assert_eq!(
            parse_reference("hf.co/deepseek-ai/deepseek-llm-7b-chat").unwrap(),
            hub("deepseek-ai/deepseek-llm-7b-chat", None, None, None)
        );
        assert_eq!(
            parse_reference("https://huggingface.co/org/name/").unwrap(),
            hub("org/name", None, None, None)
        );
    }

    #[test]
    fn revisions() {
        assert_eq!(
            parse_reference("org/name:v1.0").unwrap(),
            hub("org/name", Some("v1.0"), None, None)
        );
        assert_eq!(
            parse_reference("org/name:main").unwrap(),
            hub("org/name", Some("main"), None, None)
        );
        let commit = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            parse_reference(&format!("org/name:{commit}")).unwrap(),
            hub("org/name", Some(commit), None, None)
        );
        assert_eq!(
            parse_reference("org/name:refs/pr/1").unwrap(),
            hub("org/name", Some("refs/pr/1"), None, None)
        );
    }

    #[test]
    fn files_and_quants() {
        assert_eq!(
            parse_reference("org/name/model-Q4_K_M.gguf").unwrap(),
            hub("org/name", None, Some("model-Q4_K_M.gguf"), None)
        );
        assert_eq!(
            parse_reference("org/name/sub/dir/m.gguf:v2").unwrap(),
            hub("org/name", Some("v2"), Some("sub/dir/m.gguf"), None)
        );
        for q in [
            "Q4_K_M",
            "q8_0",
            "F16",
            "BF16",
            "IQ4_XS",
            "IQ2_XXS",
            "Q2_K",
            "TQ1_0",
            "UD-Q4_K_XL",
        ] {
            assert_eq!(
                parse_reference(&format!("org/name:{q}")).unwrap(),
                hub("org/name", None, None, Some(q)),
                "{q}"
            );
        }
        for not_quant in [
            "main",
            "v1",
            "dev",
            "QQ",
            "Q",
            "Q4_",
            "refs/pr/3",
            "float16",
        ] {
            assert!(!is_quant_tag(not_quant), "{not_quant}");
        }
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "justaname",
            "org/",
            "/org",
            "org/na me",
            "org/name:",
            "org/-name",
            "org/name/../x.gguf",
            "org/name/a//b.gguf",
            "org/name/model.gguf:Q4_K_M",
            "org/name:a/../b",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn local_paths() {
        let dir = std::env::temp_dir();
        let text = dir.to_string_lossy().to_string();
        assert_eq!(parse_reference(&text).unwrap(), ModelRef::Local(dir));
        assert!(matches!(
            parse_reference("./definitely/not/here"),
            Err(HubError::LocalNotFound { .. })
        ));
        assert!(matches!(
            parse_reference("/definitely/not/here.gguf"),
            Err(HubError::LocalNotFound { .. })
        ));
        assert!(matches!(
            parse_reference("not-here.gguf"),
            Err(HubError::LocalNotFound { .. })
        ));
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "org/name",
            "org/name:v1",
            "org/name/f.gguf",
            "org/name:Q4_K_M",
        ] {
            assert_eq!(parse_reference(text).unwrap().to_string(), text);
        }
    }
}
