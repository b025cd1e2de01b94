//! The Hugging Face hub cache, laid out as `huggingface_hub` lays it out:
//!
//! ```text
//! <cache>/models--org--name/blobs/<etag>            file contents, named by sha256 (LFS) or git blob id
//! <cache>/models--org--name/snapshots/<commit>/<f>  relative symlinks to ../../blobs/<etag>
//! <cache>/models--org--name/refs/<revision>         the commit a branch or tag pointed to
//! <cache>/models--org--name/.no_exist/<commit>/<f>  empty markers for files known to be absent
//! <cache>/.locks/models--org--name/<etag>.lock      download locks
//! ```

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::reference::{is_commit_hash, parse_repo_id};
use crate::{HubError, HubOptions};

/// The cache entries of one model repository.
#[derive(Debug, Clone)]
pub(crate) struct RepoCache {
    pub(crate) cache_dir: PathBuf,
    pub(crate) repo: String,
    pub(crate) dir: PathBuf,
}

/// The folder name of a model repository in the cache.
pub(crate) fn repo_folder_name(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

impl RepoCache {
    pub(crate) fn new(cache_dir: &Path, repo: &str) -> RepoCache {
        RepoCache {
            cache_dir: cache_dir.to_path_buf(),
            repo: repo.to_string(),
            dir: cache_dir.join(repo_folder_name(repo)),
        }
    }

    pub(crate) fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    pub(crate) fn snapshot_file(&self, commit: &str, file: &str) -> PathBuf {
        join_rel(&self.snapshot_dir(commit), file)
    }

    pub(crate) fn blob(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(etag)
    }

    pub(crate) fn incomplete(&self, etag: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{etag}.incomplete"))
    }

    pub(crate) fn lock_file(&self, etag: &str) -> PathBuf {
        self.cache_dir
            .join(".locks")
            .join(repo_folder_name(&self.repo))
            .join(format!("{etag}.lock"))
    }

    /// The commit that `refs/<revision>` records, if any.
    pub(crate) fn read_ref(&self, revision: &str) -> Option<String> {
        let text = fs::read_to_string(join_rel(&self.dir.join("refs"), revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    pub(crate) fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        let path = join_rel(&self.dir.join("refs"), revision);
        if fs::read_to_string(&path).is_ok_and(|t| t.trim() == commit) {
            return Ok(());
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        fs::write(&tmp, commit).map_err(|e| HubError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| HubError::io(&path, e))
    }

    /// Whether the snapshot has the file (a symlink must point at an existing blob).
    pub(crate) fn has_file(&self, commit: &str, file: &str) -> bool {
        fs::metadata(self.snapshot_file(commit, file)).is_ok_and(|m| m.is_file())
    }

    /// Whether the file is recorded as absent from the repository at that commit.
    pub(crate) fn known_absent(&self, commit: &str, file: &str) -> bool {
        join_rel(&self.dir.join(".no_exist").join(commit), file).exists()
    }

    pub(crate) fn mark_absent(&self, commit: &str, file: &str) {
        let path = join_rel(&self.dir.join(".no_exist").join(commit), file);
        if path.exists() {
            return;
        }
        if let Some(parent) = path.parent() {
            if fs::create_dir_all(parent).is_err() {
                return;
            }
        }
        // A missing marker only costs a request later; failing to write one is not an error.
        let _ = fs::write(&path, b"");
    }

    /// Places `snapshots/<commit>/<file>` pointing at `blobs/<etag>`.
    pub(crate) fn link(&self, commit: &str, file: &str, etag: &str) -> Result<PathBuf, HubError> {
        let link = self.snapshot_file(commit, file);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(|e| HubError::io(parent, e))?;
        }
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link).map_err(|e| HubError::io(&link, e))?;
        }
        let depth = 2 + file.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        make_link(&target, &self.blob(etag), &link).map_err(|e| HubError::io(&link, e))?;
        Ok(link)
    }

    /// Files of a snapshot, relative to it, with `/` separators.
    pub(crate) fn snapshot_files(&self, commit: &str) -> Vec<String> {
        let mut out = Vec::new();
        walk_files(&self.snapshot_dir(commit), "", &mut out);
        out.sort();
        out
    }
}

fn join_rel(base: &Path, rel: &str) -> PathBuf {
    let mut path = base.to_path_buf();
    for part in rel.split('/') {
        path.push(part);
    }
    path
}

#[cfg(unix)]
fn make_link(target: &Path, _blob: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn make_link(_target: &Path, blob: &Path, link: &Path) -> std::io::Result<()> {
    // Symbolic links need extra rights on Windows; a hard link (or a copy) reads the same.
    fs::hard_link(blob, link).or_else(|_| fs::copy(blob, link).map(|_| ()))
}

/// Lists the regular files (following symlinks) under `dir`.
fn walk_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        match fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk_files(&path, &rel, out),
            Ok(m) if m.is_file() => out.push(rel),
            _ => {}
        }
    }
}

/// A model revision present in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// Repository id, `org/name`.
    pub id: String,
    /// The commit of this snapshot.
    pub revision: String,
    /// Branches and tags in the cache that point at this commit (e.g. `main`).
    pub refs: Vec<String>,
    /// Bytes of the snapshot's files.
    pub size_bytes: u64,
    /// `safetensors`, `gguf`, `pytorch`, `safetensors+gguf` or `other`.
    pub format: String,
    /// The snapshot folder.
    pub path: PathBuf,
}

/// Lists the model snapshots in the cache, one entry per (repository, commit),
/// sorted by id then commit. A missing cache folder gives an empty list.
pub fn list_cached(opts: &HubOptions) -> Result<Vec<CachedModel>, HubError> {
    let entries = match fs::read_dir(&opts.cache_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(HubError::io(&opts.cache_dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let folder = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = folder.strip_prefix("models--") else {
            continue;
        };
        let Some((org, name)) = rest.split_once("--") else {
            continue;
        };
        let repo = format!("{org}/{name}");
        let cache = RepoCache::new(&opts.cache_dir, &repo);
        let refs = read_all_refs(&cache.dir.join("refs"));
        let Ok(snapshots) = fs::read_dir(cache.dir.join("snapshots")) else {
            continue;
        };
        for snapshot in snapshots.flatten() {
            let commit = snapshot.file_name().to_string_lossy().to_string();
            // Snapshot folders are named by commit; anything else is not a snapshot.
            if !is_commit_hash(&commit) || !snapshot.path().is_dir() {
                continue;
            }
            let files = cache.snapshot_files(&commit);
            let mut seen = HashSet::new();
            let mut size = 0u64;
            for file in &files {
                let path = cache.snapshot_file(&commit, file);
                let key = fs::canonicalize(&path).unwrap_or(path.clone());
                if seen.insert(key) {
                    size += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                }
            }
            out.push(CachedModel {
                id: repo.clone(),
                refs: refs
                    .iter()
                    .filter(|(_, c)| **c == commit)
                    .map(|(r, _)| r.clone())
                    .collect(),
                revision: commit.clone(),
                size_bytes: size,
                format: format_of(&files),
                path: cache.snapshot_dir(&commit),
            });
        }
    }
    out.sort_by(|a, b| (&a.id, &a.revision).cmp(&(&b.id, &b.revision)));
    Ok(out)
}

fn format_of(files: &[String]) -> String {
    let has = |ext: &str| files.iter().any(|f| f.to_ascii_lowercase().ends_with(ext));
    let mut kinds = Vec::new();
    if has(".safetensors") {
        kinds.push("safetensors");
    }
    if has(".gguf") {
        kinds.push("gguf");
    }
    if kinds.is_empty() && (has(".bin") || has(".pt") || has(".pth")) {
        kinds.push("pytorch");
    }
    if kinds.is_empty() {
        "other".to_string()
    } else {
        kinds.join("+")
    }
}

/// All `refs/**` files: revision name -> commit.
fn read_all_refs(dir: &Path) -> BTreeMap<String, String> {
    let mut names = Vec::new();
    walk_files(dir, "", &mut names);
    names
        .into_iter()
        .filter_map(|name| {
            let text = fs::read_to_string(join_rel(dir, &name)).ok()?;
            let commit = text.trim().to_string();
            is_commit_hash(&commit).then_some((name, commit))
        })
        .collect()
}

/// Removes a model from the cache and returns the bytes freed.
///
/// `id` is `org/name` (every revision, and the repository's locks) or
/// `org/name:REVISION`, where `REVISION` is a branch or tag recorded in the
/// cache or a commit (or a prefix of at least 7 digits of one); then only that
/// snapshot goes, with the blobs no other snapshot uses.
pub fn remove_cached(opts: &HubOptions, id: &str) -> Result<u64, HubError> {
    let (repo, revision) = parse_repo_id(id)?;
    let cache = RepoCache::new(&opts.cache_dir, &repo);
    let not_cached = || HubError::NotCached {
        id: id.to_string(),
        cache: opts.cache_dir.clone(),
    };
    if !cache.dir.is_dir() {
        return Err(not_cached());
    }
    let Some(revision) = revision else {
        let freed = disk_usage(&cache.dir);
        fs::remove_dir_all(&cache.dir).map_err(|e| HubError::io(&cache.dir, e))?;
        let locks = opts.cache_dir.join(".locks").join(repo_folder_name(&repo));
        let _ = fs::remove_dir_all(locks);
        return Ok(freed);
    };

    let refs = read_all_refs(&cache.dir.join("refs"));
    let snapshots: Vec<String> = fs::read_dir(cache.dir.join("snapshots"))
        .map(|it| {
            it.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    let commit = if let Some(commit) = refs.get(&revision) {
        commit.clone()
    } else {
        let matches: Vec<&String> = snapshots
            .iter()
            .filter(|c| revision.len() >= 7 && c.starts_with(revision.as_str()))
            .collect();
        match matches.as_slice() {
            [one] => (*one).clone(),
            _ => return Err(not_cached()),
        }
    };
    if !snapshots.contains(&commit) {
        return Err(not_cached());
    }
    if snapshots.len() == 1 {
        return remove_cached(opts, &repo);
    }

    // Blobs still used by the other snapshots stay.
    let mut kept = BTreeSet::new();
    for other in snapshots.iter().filter(|c| **c != commit) {
        for file in cache.snapshot_files(other) {
            if let Ok(target) = fs::canonicalize(cache.snapshot_file(other, &file)) {
                kept.insert(target);
            }
        }
    }
    let mut freed = 0u64;
    for file in cache.snapshot_files(&commit) {
        let link = cache.snapshot_file(&commit, &file);
        let Ok(target) = fs::canonicalize(&link) else {
            continue;
        };
        let is_blob = target
            .parent()
            .is_some_and(|p| fs::canonicalize(cache.dir.join("blobs")).is_ok_and(|b| b == p));
        if is_blob && !kept.contains(&target) {
            freed += fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&target).map_err(|e| HubError::io(&target, e))?;
        }
    }
    let snapshot = cache.snapshot_dir(&commit);
    freed += disk_usage(&snapshot);
    fs::remove_dir_all(&snapshot).map_err(|e| HubError::io(&snapshot, e))?;
    let _ = fs::remove_dir_all(cache.dir.join(".no_exist").join(&commit));
    for (name, target) in &refs {
        if *target == commit {
            let path = join_rel(&cache.dir.join("refs"), name);
            let _ = fs::remove_file(path);
        }
    }
    Ok(freed)
}

/// Bytes of the regular files under `path` (symlinks not followed).
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_usage(&e.path())).sum())
        .unwrap_or(0)
}
