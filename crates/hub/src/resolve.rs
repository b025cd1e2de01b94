//! Turning a model reference into a local path, downloading what is missing.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::cache::RepoCache;
use crate::http::{Client, FileMeta, RepoInfo};
use crate::reference::{is_commit_hash, validate_file_name, ModelRef};
use crate::{parse_reference, HubError, HubOptions};

/// Files of a Hugging Face model folder fetched when the repository has them.
pub const OPTIONAL_FILES: [&str; 4] = [
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
];
/// The model configuration; a folder reference needs it.
pub const CONFIG_FILE: &str = "config.json";
/// The index of sharded safetensors weights.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// Unsharded safetensors weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Resolves any model reference to a local path: a folder in the Hugging
/// Face layout, or a `.gguf` file. Downloads what is missing, unless offline.
///
/// See [`parse_reference`] for the accepted forms. A fully cached reference
/// makes no request: a commit is used as it is, a branch or tag through the
/// commit the cache's `refs/` records (with [`HubOptions::refresh`], one
/// metadata request learns its current commit). When the hub cannot be
/// reached at all, a complete cached snapshot of the revision is used.
pub fn resolve(reference: &str, opts: &HubOptions) -> Result<PathBuf, HubError> {
    let model = parse_reference(reference)?;
    resolve_ref(&model, opts)
}

/// Like [`resolve`], for a reference already parsed.
pub fn resolve_ref(model: &ModelRef, opts: &HubOptions) -> Result<PathBuf, HubError> {
    match model {
        ModelRef::Local(path) => {
            if path.exists() {
                Ok(path.clone())
            } else {
                Err(HubError::LocalNotFound { path: path.clone() })
            }
        }
        ModelRef::Hub {
            repo,
            revision,
            file,
            quant,
        } => {
            let target = match (file, quant) {
                (Some(file), _) => Target::File(file.clone()),
                (None, Some(quant)) => Target::Quant(quant.clone()),
                (None, None) => Target::Folder,
            };
            resolve_hub(repo, revision.as_deref().unwrap_or("main"), &target, opts)
        }
    }
}

#[derive(Debug, Clone)]
enum Target {
    Folder,
    File(String),
    Quant(String),
}

/// Why the cache alone could not answer.
enum Miss {
    Missing(Vec<String>),
    Error(HubError),
}

fn resolve_hub(
    repo: &str,
    revision: &str,
    target: &Target,
    opts: &HubOptions,
) -> Result<PathBuf, HubError> {
    let cache = RepoCache::new(&opts.cache_dir, repo);
    let pinned = is_commit_hash(revision);
    let cached_commit = if pinned {
        Some(revision.to_string())
    } else {
        cache.read_ref(revision)
    };

    if opts.offline {
        let commit = cached_commit.ok_or_else(|| HubError::OfflineNoRevision {
            repo: repo.to_string(),
            revision: revision.to_string(),
            cache: opts.cache_dir.clone(),
            missing: format!("{}/refs/{revision}", cache.dir.display()),
        })?;
        return from_cache(&cache, &commit, revision, target, false)
            .map_err(|miss| offline_error(&cache, &commit, miss));
    }
    // A complete snapshot answers without a request: always when pinned to a commit, and for a
    // branch or tag unless asked to refresh it.
    if let Some(commit) = &cached_commit {
        if pinned || !opts.refresh {
            if let Ok(path) = from_cache(&cache, commit, revision, target, true) {
                return Ok(path);
            }
        }
    }

    let client = Client::new(opts);
    let info = match client.model_info(repo, revision) {
        Ok(info) => info,
        Err(err @ HubError::Network { .. }) => {
            // No connection: a complete snapshot in the cache still serves.
            if let Some(commit) = &cached_commit {
                if let Ok(path) = from_cache(&cache, commit, revision, target, false) {
                    return Ok(path);
                }
            }
            return Err(err);
        }
        Err(err) => return Err(err),
    };
    if !pinned {
        // A read-only shared cache still serves; only offline use of the branch needs the ref.
        let _ = cache.write_ref(revision, &info.commit);
    }
    match target {
        Target::Folder => fetch_folder(&client, &cache, &info, revision),
        Target::File(file) => {
            let meta = info.get(file).ok_or_else(|| HubError::FileNotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
                file: file.clone(),
                available: info.names(),
            })?;
            ensure_file(&client, &cache, &info.commit, meta)
        }
        Target::Quant(quant) => {
            let parts = pick_gguf(repo, revision, &info.names(), Some(quant))?;
            fetch_gguf_parts(&client, &cache, &info, &parts)
        }
    }
}

fn offline_error(cache: &RepoCache, commit: &str, miss: Miss) -> HubError {
    match miss {
        Miss::Error(err) => err,
        Miss::Missing(missing) => HubError::OfflineMissing {
            repo: cache.repo.clone(),
            commit: commit.to_string(),
            cache: cache.cache_dir.clone(),
            missing,
        },
    }
}

/// Answers from the cache alone. `strict` also requires each optional file
/// to be present or recorded as absent (so that nothing could be fetched).
fn from_cache(
    cache: &RepoCache,
    commit: &str,
    revision: &str,
    target: &Target,
    strict: bool,
) -> Result<PathBuf, Miss> {
    match target {
        Target::File(file) => {
            if cache.has_file(commit, file) {
                Ok(cache.snapshot_file(commit, file))
            } else {
                Err(Miss::Missing(vec![file.clone()]))
            }
        }
        Target::Quant(quant) => {
            let files = cache.snapshot_files(commit);
            let parts =
                pick_gguf(&cache.repo, revision, &files, Some(quant)).map_err(|err| match err {
                    HubError::NoMatchingFile { .. } => {
                        Miss::Missing(vec![format!("a GGUF file matching {quant}")])
                    }
                    other => Miss::Error(other),
                })?;
            gguf_from_cache(cache, commit, &parts)
        }
        Target::Folder => {
            let files = cache.snapshot_files(commit);
            if !cache.has_file(commit, CONFIG_FILE) {
                if files.iter().any(|f| is_gguf(f)) {
                    let parts =
                        pick_gguf(&cache.repo, revision, &files, None).map_err(Miss::Error)?;
                    return gguf_from_cache(cache, commit, &parts);
                }
                return Err(Miss::Missing(vec![
                    CONFIG_FILE.to_string(),
                    format!("{WEIGHTS_FILE} or {INDEX_FILE}"),
                ]));
            }
            let mut missing = Vec::new();
            if cache.has_file(commit, INDEX_FILE) {
                let index = cache.snapshot_file(commit, INDEX_FILE);
                match read_index(&cache.repo, &index) {
                    Ok(shards) => {
                        missing.extend(shards.into_iter().filter(|s| !cache.has_file(commit, s)))
                    }
                    Err(err) => return Err(Miss::Error(err)),
                }
            } else if !cache.has_file(commit, WEIGHTS_FILE) {
                missing.push(format!("{WEIGHTS_FILE} or {INDEX_FILE}"));
            }
            if strict {
                missing.extend(
                    OPTIONAL_FILES
                        .iter()
                        .filter(|f| !cache.has_file(commit, f) && !cache.known_absent(commit, f))
                        .map(|f| f.to_string()),
                );
            }
            if missing.is_empty() {
                Ok(cache.snapshot_dir(commit))
            } else {
                Err(Miss::Missing(missing))
            }
        }
    }
}

fn gguf_from_cache(cache: &RepoCache, commit: &str, parts: &[String]) -> Result<PathBuf, Miss> {
    let missing: Vec<String> = parts
        .iter()
        .filter(|p| !cache.has_file(commit, p))
        .cloned()
        .collect();
    if missing.is_empty() {
        Ok(cache.snapshot_file(commit, &parts[0]))
    } else {
        Err(Miss::Missing(missing))
    }
}

fn fetch_folder(
    client: &Client,
    cache: &RepoCache,
    info: &RepoInfo,
    revision: &str,
) -> Result<PathBuf, HubError> {
    let repo = &cache.repo;
    let names = info.names();
    let Some(config) = info.get(CONFIG_FILE) else {
        if names.iter().any(|f| is_gguf(f)) {
            let parts = pick_gguf(repo, revision, &names, None)?;
            return fetch_gguf_parts(client, cache, info, &parts);
        }
        return Err(HubError::NoWeights {
            repo: repo.clone(),
            revision: revision.to_string(),
            reason: format!("no {CONFIG_FILE} and no GGUF file"),
            files: names,
        });
    };
    let weights = info.get(INDEX_FILE).or_else(|| info.get(WEIGHTS_FILE)).ok_or_else(|| HubError::NoWeights {
        repo: repo.clone(),
        revision: revision.to_string(),
        reason: format!(
            "no safetensors weights ({WEIGHTS_FILE} or {INDEX_FILE}); this engine reads safetensors or GGUF, not .bin"
        ),
        files: names.clone(),
    })?;
    ensure_file(client, cache, &info.commit, config)?;
    for name in OPTIONAL_FILES {
        match info.get(name) {
            Some(meta) => {
                ensure_file(client, cache, &info.commit, meta)?;
            }
            None => cache.mark_absent(&info.commit, name),
        }
    }
    let weights_path = ensure_file(client, cache, &info.commit, weights)?;
    if weights.name == INDEX_FILE {
        for shard in read_index(repo, &weights_path)? {
            let meta = info.get(&shard).ok_or_else(|| HubError::InvalidFile {
                repo: repo.clone(),
                file: INDEX_FILE.to_string(),
                message: format!(
                    "names shard '{shard}', which the repository does not have at {}",
                    info.commit
                ),
            })?;
            ensure_file(client, cache, &info.commit, meta)?;
        }
    }
    Ok(cache.snapshot_dir(&info.commit))
}

fn fetch_gguf_parts(
    client: &Client,
    cache: &RepoCache,
    info: &RepoInfo,
    parts: &[String],
) -> Result<PathBuf, HubError> {
    let mut first = None;
    for part in parts {
        let meta = info.get(part).ok_or_else(|| HubError::FileNotFound {
            repo: cache.repo.clone(),
            revision: info.commit.clone(),
            file: part.clone(),
            available: info.names(),
        })?;
        let path = ensure_file(client, cache, &info.commit, meta)?;
        first.get_or_insert(path);
    }
    first.ok_or_else(|| HubError::NoWeights {
        repo: cache.repo.clone(),
        revision: info.commit.clone(),
        reason: "no GGUF file selected".to_string(),
        files: info.names(),
    })
}

/// The shard files named by a safetensors index, sorted, without duplicates.
fn read_index(repo: &str, path: &std::path::Path) -> Result<Vec<String>, HubError> {
    let invalid = |message: String| HubError::InvalidFile {
        repo: repo.to_string(),
        file: INDEX_FILE.to_string(),
        message,
    };
    let text = fs::read_to_string(path).map_err(|e| HubError::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| invalid("no 'weight_map' object".to_string()))?;
    let mut shards = std::collections::BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| invalid(format!("tensor '{tensor}' maps to a non-string")))?;
        validate_file_name(file).map_err(|r| invalid(format!("shard '{file}': {r}")))?;
        shards.insert(file.to_string());
    }
    if shards.is_empty() {
        return Err(invalid("'weight_map' is empty".to_string()));
    }
    Ok(shards.into_iter().collect())
}

/// Downloads one file into the cache unless its snapshot entry exists;
/// returns the snapshot path.
fn ensure_file(
    client: &Client,
    cache: &RepoCache,
    commit: &str,
    meta: &FileMeta,
) -> Result<PathBuf, HubError> {
    if cache.has_file(commit, &meta.name) {
        return Ok(cache.snapshot_file(commit, &meta.name));
    }
    let mut meta = meta.clone();
    if meta.sha256.is_none() && meta.blob_id.is_none() {
        let head = client.file_meta(&cache.repo, commit, &meta.name)?;
        meta.sha256 = head.sha256;
        meta.etag = head.etag;
        meta.size = meta.size.or(head.size);
    }
    let url = client.file_url(&cache.repo, commit, &meta.name);
    let etag = meta
        .sha256
        .clone()
        .or_else(|| meta.blob_id.clone())
        .or_else(|| meta.etag.clone())
        .ok_or_else(|| HubError::BadResponse {
            url: url.clone(),
            message: "no hash or ETag for the file, so it has no cache name".to_string(),
        })?;
    let etag = if !etag.is_empty()
        && etag.len() <= 128
        && etag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        etag
    } else {
        Sha256::digest(etag.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };

    let blob = cache.blob(&etag);
    let blob_ok = |blob: &PathBuf| {
        fs::metadata(blob).is_ok_and(|m| m.is_file() && meta.size.is_none_or(|s| s == m.len()))
    };
    if !blob_ok(&blob) {
        let blobs = cache.dir.join("blobs");
        fs::create_dir_all(&blobs).map_err(|e| HubError::io(&blobs, e))?;
        let lock_path = cache.lock_file(&etag);
        if let Some(parent) = lock_path.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let lock = File::create(&lock_path).map_err(|e| HubError::io(&lock_path, e))?;
        // Another process may be fetching the same blob; wait for it.
        // File systems without locks (some network mounts) still work, unguarded.
        if let Err(e) = lock.lock() {
            if e.kind() != std::io::ErrorKind::Unsupported {
                return Err(HubError::io(&lock_path, e));
            }
        }
        if !blob_ok(&blob) {
            let partial = cache.incomplete(&etag);
            client.download(&cache.repo, commit, &meta, &url, &partial)?;
            fs::rename(&partial, &blob).map_err(|e| HubError::io(&blob, e))?;
        }
        drop(lock);
    }
    cache.link(commit, &meta.name, &etag)
}

fn is_gguf(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gguf")
}

/// `prefix-00001-of-00003.gguf` -> (`prefix`, 1, 3).
fn split_part(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name.get(..name.len().checked_sub(5)?)?;
    if !is_gguf(name) {
        return None;
    }
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, index) = rest.rsplit_once('-')?;
    if index.len() != 5 || count.len() != 5 {
        return None;
    }
    let index: u32 = index.parse().ok()?;
    let count: u32 = count.parse().ok()?;
    (index >= 1 && index <= count).then_some((prefix, index, count))
}

/// Whether `name` carries the quant type `quant` as a whole token.
pub(crate) fn name_has_quant(name: &str, quant: &str) -> bool {
    let name = name.to_ascii_uppercase();
    let quant = quant.to_ascii_uppercase();
    if quant.is_empty() {
        return false;
    }
    let bytes = name.as_bytes();
    let mut from = 0;
    while let Some(pos) = name[from..].find(&quant) {
        let start = from + pos;
        let end = start + quant.len();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        let after_ok =
            end == bytes.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
    }
    false
}

/// Picks the GGUF file (or the parts of one split GGUF) among `names`:
/// those carrying `quant`, or all GGUF files when `quant` is `None`.
/// Returns the file names, the first part first.
fn pick_gguf(
    repo: &str,
    revision: &str,
    names: &[String],
    quant: Option<&str>,
) -> Result<Vec<String>, HubError> {
    let ggufs: Vec<&String> = names
        .iter()
        .filter(|n| is_gguf(n))
        .filter(|n| {
            !n.rsplit('/')
                .next()
                .unwrap_or(n)
                .to_ascii_lowercase()
                .starts_with("mmproj")
        })
        .collect();
    let matching: Vec<&String> = ggufs
        .iter()
        .copied()
        .filter(|n| quant.is_none_or(|q| name_has_quant(n, q)))
        .collect();
    // Group the parts of split files.
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in matching {
        let key = match split_part(name) {
            Some((prefix, _, count)) => format!("{prefix}-*-of-{count:05}.gguf"),
            None => name.clone(),
        };
        groups.entry(key).or_default().push(name.clone());
    }
    let selector = quant.unwrap_or("*.gguf").to_string();
    match groups.len() {
        0 => Err(HubError::NoMatchingFile {
            repo: repo.to_string(),
            revision: revision.to_string(),
            quant: selector,
            candidates: ggufs.into_iter().cloned().collect(),
        }),
        1 => {
            let (_, mut parts) = groups.into_iter().next().unwrap_or_default();
            parts.sort();
            if let Some((prefix, _, count)) = parts.first().and_then(|p| split_part(p)) {
                // All parts, even those a cache listing lacks: the caller checks presence.
                let ext = &parts[0][parts[0].len() - 5..];
                let all = (1..=count)
                    .map(|i| format!("{prefix}-{i:05}-of-{count:05}{ext}"))
                    .collect();
                return Ok(all);
            }
            Ok(parts)
        }
        _ => Err(HubError::AmbiguousFile {
            repo: repo.to_string(),
            revision: revision.to_string(),
            quant: selector,
            candidates: groups
                .into_iter()
                .map(|(key, parts)| {
                    if parts.len() > 1 || split_part(&parts[0]).is_some() {
                        key
                    } else {
                        parts[0].clone()
                    }
                })
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quant_tokens() {
        assert!(name_has_quant("model-Q4_K_M.gguf", "q4_k_m"));
        assert!(name_has_quant("Q4_K_M/model-00001-of-00002.gguf", "Q4_K_M"));
        assert!(!name_has_quant("model-Q4_K_M.gguf", "Q4_K"));
        assert!(!name_has_quant("model-IQ4_XS.gguf", "Q4_XS"));
        assert!(name_has_quant("model.Q8_0.gguf", "Q8_0"));
        assert!(!name_has_quant("model-BF16.gguf", "F16"));
    }

    #[test]
    fn picks_files() {
        let files = names(&[
            "README.md",
            "m-Q4_K_M.gguf",
            "m-Q8_0.gguf",
            "mmproj-F16.gguf",
        ]);
        assert_eq!(
            pick_gguf("o/n", "main", &files, Some("Q8_0")).unwrap(),
            names(&["m-Q8_0.gguf"])
        );
        assert!(matches!(
            pick_gguf("o/n", "main", &files, Some("Q5_K_M")),
            Err(HubError::NoMatchingFile { .. })
        ));
        assert!(matches!(
            pick_gguf("o/n", "main", &files, None),
            Err(HubError::AmbiguousFile { .. })
        ));
        let split = names(&[
            "x-Q4_K_M-00002-of-00002.gguf",
            "x-Q4_K_M-00001-of-00002.gguf",
            "x-Q8_0.gguf",
        ]);
        assert_eq!(
            pick_gguf("o/n", "main", &split, Some("Q4_K_M")).unwrap(),
            names(&[
                "x-Q4_K_M-00001-of-00002.gguf",
                "x-Q4_K_M-00002-of-00002.gguf"
            ])
        );
        assert_eq!(split_part("a-00001-of-00003.gguf"), Some(("a", 1, 3)));
        assert_eq!(split_part("a.gguf"), None);
    }
}
