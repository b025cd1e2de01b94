//! Where and how to reach the hub, and where the cache is.

use std::path::{Path, PathBuf};

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Settings for resolving and downloading models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubOptions {
    /// Base URL of the hub, without a trailing `/` (`HF_ENDPOINT`).
    pub endpoint: String,
    /// The hub cache folder holding `models--org--name/` folders
    /// (`HF_HUB_CACHE`, or `$HF_HOME/hub`, default `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Access token for gated and private repositories (`HF_TOKEN`, or the
    /// token file that `huggingface-cli login` writes).
    pub token: Option<String>,
    /// Use the cache only; never touch the network (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Draw a progress bar per downloaded file (only ever drawn when stderr
    /// is a terminal).
    pub progress: bool,
    /// Ask the hub for the current commit of a branch or tag even when a
    /// complete snapshot of it is cached (without it, a cached branch is used
    /// as it is, with no request).
    pub refresh: bool,
}

impl HubOptions {
    /// Options for a given cache folder: the public hub, no token, online,
    /// progress bars on.
    pub fn with_cache_dir(cache_dir: impl Into<PathBuf>) -> HubOptions {
        HubOptions {
            endpoint: DEFAULT_ENDPOINT.to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
            progress: true,
            refresh: false,
        }
    }

    /// Reads the settings from the environment, the way `huggingface_hub` does:
    ///
    /// * `HF_ENDPOINT` (default `https://huggingface.co`);
    /// * `HF_HUB_CACHE` (or the older `HUGGINGFACE_HUB_CACHE`), else
    ///   `$HF_HOME/hub`, with `HF_HOME` defaulting to
    ///   `$XDG_CACHE_HOME/huggingface` or `~/.cache/huggingface`;
    /// * `HF_TOKEN` (or `HUGGING_FACE_HUB_TOKEN`), else the file named by
    ///   `HF_TOKEN_PATH`, else `$HF_HOME/token`;
    /// * `HF_HUB_OFFLINE` set to `1`, `ON`, `YES` or `TRUE`;
    /// * `HF_HUB_DISABLE_PROGRESS_BARS` set likewise turns progress bars off.
    pub fn from_env() -> HubOptions {
        HubOptions::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`HubOptions::from_env`], with the variables read through `lookup`
    /// (for callers and tests that must not depend on the process environment).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> HubOptions {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let endpoint = get("HF_ENDPOINT")
            .map(|e| e.trim().trim_end_matches('/').to_string())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let home = get("HOME")
            .or_else(|| get("USERPROFILE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let hf_home = get("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            get("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".cache"))
                .join("huggingface")
        });
        let cache_dir = get("HF_HUB_CACHE")
            .or_else(|| get("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = get("HF_TOKEN")
            .or_else(|| get("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let path = get("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                read_token_file(&path)
            });
        let offline = get("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v));
        let progress = !get("HF_HUB_DISABLE_PROGRESS_BARS").is_some_and(|v| truthy(&v));
        HubOptions {
            endpoint,
            cache_dir,
            token,
            offline,
            progress,
            refresh: false,
        }
    }
}

fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_uppercase().as_str(),
        "1" | "ON" | "YES" | "TRUE"
    )
}

fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let token = text.trim();
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn opts(vars: &[(&str, &str)]) -> HubOptions {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubOptions::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let o = opts(&[("HOME", "/home/u")]);
        assert_eq!(o.endpoint, DEFAULT_ENDPOINT);
        assert_eq!(o.cache_dir, Path::new("/home/u/.cache/huggingface/hub"));
        assert!(!o.offline);
        assert!(o.progress);
    }

    #[test]
    fn variables() {
        let o = opts(&[
            ("HOME", "/home/u"),
            ("HF_HOME", "/data/hf"),
            ("HF_ENDPOINT", "http://127.0.0.1:8080/"),
            ("HF_TOKEN", " hf_abc \n"),
            ("HF_HUB_OFFLINE", "1"),
            ("HF_HUB_DISABLE_PROGRESS_BARS", "true"),
        ]);
        assert_eq!(o.cache_dir, Path::new("/data/hf/hub"));
        assert_eq!(o.endpoint, "http://127.0.0.1:8080");
        assert_eq!(o.token.as_deref(), Some("hf_abc"));
        assert!(o.offline);
        assert!(!o.progress);

        let o = opts(&[("HF_HOME", "/data/hf"), ("HF_HUB_CACHE", "/fast/hub")]);
        assert_eq!(o.cache_dir, Path::new("/fast/hub"));
        let o = opts(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(o.cache_dir, Path::new("/xdg/huggingface/hub"));
        let o = opts(&[("HOME", "/h"), ("HF_HUB_OFFLINE", "0")]);
        assert!(!o.offline);
    }

    #[test]
    fn token_file() {
        let dir = std::env::temp_dir().join(format!("deepseek-hub-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hf_from_file\n").unwrap();
        let home = dir.to_string_lossy().to_string();
        let o = opts(&[("HF_HOME", &home)]);
        assert_eq!(o.token.as_deref(), Some("hf_from_file"));
        let o = opts(&[("HF_HOME", &home), ("HF_TOKEN", "hf_env")]);
        assert_eq!(o.token.as_deref(), Some("hf_env"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
