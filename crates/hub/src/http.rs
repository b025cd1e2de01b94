//! HTTP: the hub's API and file routes, redirects, resumable verified downloads.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::Mismatch;
use crate::{HubError, HubOptions};

/// Consecutive failed attempts (no byte received) before a download gives up.
const MAX_FAILED_ATTEMPTS: u32 = 4;
/// Redirects followed per request.
const MAX_REDIRECTS: usize = 10;
/// Largest API answer read.
const MAX_JSON_BYTES: u64 = 64 << 20;

/// Headers the hub sets on its own answers (before a redirect to a CDN).
#[derive(Debug, Default, Clone)]
pub(crate) struct HubHeaders {
    pub(crate) repo_commit: Option<String>,
    pub(crate) linked_etag: Option<String>,
    pub(crate) etag: Option<String>,
    pub(crate) linked_size: Option<u64>,
    pub(crate) error_code: Option<String>,
    pub(crate) error_message: Option<String>,
}

/// An answer after following redirects.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) url: String,
    pub(crate) hub: HubHeaders,
    pub(crate) response: ureq::http::Response<ureq::Body>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        header(&self.response, name)
    }
}

fn header<B>(response: &ureq::http::Response<B>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string())
}

/// Metadata of one file of a repository, from the API or from headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub(crate) name: String,
    pub(crate) size: Option<u64>,
    /// Content sha256 (LFS files).
    pub(crate) sha256: Option<String>,
    /// Git blob id (for non-LFS files, the sha1 of `blob <size>\0<content>`).
    pub(crate) blob_id: Option<String>,
    /// An ETag from the file's headers, used only to name the blob.
    pub(crate) etag: Option<String>,
}

/// A repository at one commit.
#[derive(Debug, Clone)]
pub(crate) struct RepoInfo {
    pub(crate) commit: String,
    pub(crate) files: Vec<FileMeta>,
}

impl RepoInfo {
    pub(crate) fn get(&self, name: &str) -> Option<&FileMeta> {
        self.files.iter().find(|f| f.name == name)
    }

    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.files.iter().map(|f| f.name.clone()).collect();
        names.sort();
        names
    }
}

#[derive(Deserialize)]
struct ApiModel {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
}

#[derive(Deserialize)]
struct ApiSibling {
    rfilename: String,
    size: Option<u64>,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    lfs: Option<ApiLfs>,
}

#[derive(Deserialize)]
struct ApiLfs {
    sha256: Option<String>,
    size: Option<u64>,
}

/// Percent-encodes `text` for a URL path; `/` is kept when `keep_slash`.
pub(crate) fn encode_path(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

fn join_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if let Some(rest) = location.strip_prefix("//") {
        let scheme = base.split("://").next().unwrap_or("https");
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{}{location}", origin(base))
    } else {
        let path_end = base.find(['?', '#']).unwrap_or(base.len());
        let base_path = &base[..path_end];
        match base_path.rfind('/') {
            Some(i) if i >= origin(base).len() => format!("{}{location}", &base_path[..=i]),
            _ => format!("{}/{location}", origin(base)),
        }
    }
}

fn is_loopback(url: &str) -> bool {
    let host = origin(url).split("://").nth(1).unwrap_or("");
    let host = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// Normalises an ETag: drops `W/` and quotes.
pub(crate) fn normalize_etag(etag: &str) -> String {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

/// A blocking HTTP client for one hub endpoint.
pub(crate) struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    progress: bool,
}

impl Client {
    pub(crate) fn new(opts: &HubOptions) -> Client {
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(format!("deepseek-hub/{}", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .timeout_per_read(Some(Duration::from_secs(120)));
        if is_loopback(&opts.endpoint) {
            config = config.proxy(None);
        }
        Client {
            agent: config.build().into(),
            endpoint: opts.endpoint.trim_end_matches('/').to_string(),
            token: opts.token.clone().filter(|t| !t.is_empty()),
            progress: opts.progress && std::io::stderr().is_terminal(),
        }
    }

    pub(crate) fn token_sent(&self) -> bool {
        self.token.is_some()
    }

    /// The URL of a file of a repository at a revision.
    pub(crate) fn file_url(&self, repo: &str, revision: &str, file: &str) -> String {
        format!(
            "{}/{repo}/resolve/{}/{}",
            self.endpoint,
            encode_path(revision, false),
            encode_path(file, true)
        )
    }

    /// Sends a request, following redirects; the token goes only to the hub itself.
    pub(crate) fn send(
        &self,
        head: bool,
        url: &str,
        range_from: Option<u64>,
    ) -> Result<Answer, HubError> {
        let mut url = url.to_string();
        let mut hub = HubHeaders::default();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = if head {
                self.agent.head(&url)
            } else {
                self.agent.get(&url)
            };
            request = request.header("Accept-Encoding", "identity");
            if let Some(from) = range_from.filter(|f| *f > 0) {
                request = request.header("Range", format!("bytes={from}-"));
            }
            if let Some(token) = &self.token {
                if origin(&url) == origin(&self.endpoint) {
                    request = request.header("Authorization", format!("Bearer {token}"));
                }
            }
            let response = request.call().map_err(|e| HubError::Network {
                url: url.clone(),
                message: e.to_string(),
            })?;
            let status = response.status().as_u16();
            let grab = |slot: &mut Option<String>, name: &str| {
                if slot.is_none() {
                    *slot = header(&response, name);
                }
            };
            grab(&mut hub.repo_commit, "x-repo-commit");
            grab(&mut hub.linked_etag, "x-linked-etag");
            grab(&mut hub.error_code, "x-error-code");
            grab(&mut hub.error_message, "x-error-message");
            if hub.linked_size.is_none() {
                hub.linked_size = header(&response, "x-linked-size").and_then(|s| s.parse().ok());
            }
            let location = header(&response, "location");
            match (status, location) {
                (301 | 302 | 303 | 307 | 308, Some(location)) => {
                    // The ETag of a redirect answer from the hub is the file's; a CDN's is not.
                    if hub.etag.is_none() {
                        hub.etag = header(&response, "etag");
                    }
                    url = join_location(&url, &location);
                }
                _ => {
                    if hub.etag.is_none() {
                        hub.etag = header(&response, "etag");
                    }
                    return Ok(Answer {
                        status,
                        url,
                        hub,
                        response,
                    });
                }
            }
        }
        Err(HubError::BadResponse {
            url,
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// Maps an error status of an answer about `repo` to an error.
    fn status_error(
        &self,
        repo: &str,
        revision: &str,
        file: Option<&str>,
        answer: &Answer,
        expected: &str,
    ) -> HubError {
        let code = answer.hub.error_code.clone().unwrap_or_default();
        match answer.status {
            401 | 403 => HubError::Unauthorized {
                repo: repo.to_string(),
                url: answer.url.clone(),
                status: answer.status,
                token_sent: self.token_sent(),
            },
            404 if code == "RevisionNotFound" => HubError::RevisionNotFound {
                repo: repo.to_string(),
                revision: revision.to_string(),
                url: answer.url.clone(),
            },
            404 if code == "EntryNotFound" || (code.is_empty() && file.is_some()) => {
                HubError::FileNotFound {
                    repo: repo.to_string(),
                    revision: revision.to_string(),
                    file: file.unwrap_or_default().to_string(),
                    available: Vec::new(),
                }
            }
            404 => HubError::RepoNotFound {
                repo: repo.to_string(),
                url: answer.url.clone(),
                token_sent: self.token_sent(),
            },
            status => HubError::Status {
                url: answer.url.clone(),
                status,
                expected: expected.to_string(),
                detail: [code, answer.hub.error_message.clone().unwrap_or_default()]
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(": "),
            },
        }
    }

    /// `GET /api/models/{repo}/revision/{revision}?blobs=true`: the commit and the files.
    pub(crate) fn model_info(&self, repo: &str, revision: &str) -> Result<RepoInfo, HubError> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.endpoint,
            encode_path(revision, false)
        );
        let mut answer = self.send(false, &url, None)?;
        if answer.status != 200 {
            return Err(self.status_error(
                repo,
                revision,
                None,
                &answer,
                "200 with the model's metadata",
            ));
        }
        let bad = |message: String| HubError::BadResponse {
            url: answer.url.clone(),
            message,
        };
        let text = answer
            .response
            .body_mut()
            .with_config()
            .limit(MAX_JSON_BYTES)
            .read_to_string()
            .map_err(|e| bad(format!("reading the body: {e}")))?;
        let model: ApiModel =
            serde_json::from_str(&text).map_err(|e| bad(format!("not the expected JSON: {e}")))?;
        let commit = model
            .sha
            .filter(|s| crate::reference::is_commit_hash(s))
            .ok_or_else(|| bad("no 40-digit commit hash in 'sha'".to_string()))?;
        let mut files = Vec::with_capacity(model.siblings.len());
        for sibling in model.siblings {
            if crate::reference::validate_file_name(&sibling.rfilename).is_err() {
                return Err(bad(format!("unsafe file name '{}'", sibling.rfilename)));
            }
            let (size, sha256) = match sibling.lfs {
                Some(lfs) => (
                    lfs.size.or(sibling.size),
                    lfs.sha256
                        .map(|s| s.to_ascii_lowercase())
                        .filter(|s| is_hex(s, 64)),
                ),
                None => (sibling.size, None),
            };
            files.push(FileMeta {
                name: sibling.rfilename,
                size,
                blob_id: sibling
                    .blob_id
                    .map(|s| s.to_ascii_lowercase())
                    .filter(|s| is_hex(s, 40)),
                sha256,
                etag: None,
            });
        }
        Ok(RepoInfo { commit, files })
    }

    /// `HEAD` of a file: what the hub says of it (used when the API gave no hash).
    pub(crate) fn file_meta(
        &self,
        repo: &str,
        revision: &str,
        file: &str,
    ) -> Result<FileMeta, HubError> {
        let url = self.file_url(repo, revision, file);
        let answer = self.send(true, &url, None)?;
        if answer.status != 200 {
            return Err(self.status_error(repo, revision, Some(file), &answer, "200"));
        }
        let etag = answer
            .hub
            .linked_etag
            .clone()
            .or_else(|| answer.hub.etag.clone())
            .map(|e| normalize_etag(&e).to_ascii_lowercase());
        let size = answer
            .hub
            .linked_size
            .or_else(|| answer.header("content-length").and_then(|s| s.parse().ok()));
        let sha256 = etag.clone().filter(|e| is_hex(e, 64));
        Ok(FileMeta {
            name: file.to_string(),
            size,
            sha256,
            blob_id: None,
            etag,
        })
    }

    /// Downloads `url` into `partial`, resuming from what `partial` already
    /// holds, and checks size and hash. On a mismatch the partial file is
    /// deleted; on repeated transfer failures it is kept for the next run.
    pub(crate) fn download(
        &self,
        repo: &str,
        revision: &str,
        meta: &FileMeta,
        url: &str,
        partial: &Path,
    ) -> Result<(), HubError> {
        let io_err = |e| HubError::io(partial, e);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(partial)
            .map_err(io_err)?;
        let mut have = file.metadata().map_err(io_err)?.len();
        if meta.size.is_some_and(|size| have > size) {
            file.set_len(0).map_err(io_err)?;
            have = 0;
        }
        let mut hasher = Hasher::new(meta);
        if have > 0 {
            hash_prefix(&mut file, have, &mut hasher).map_err(io_err)?;
        }
        file.seek(SeekFrom::Start(have)).map_err(io_err)?;

        let bar = self.progress_bar(&meta.name, meta.size, have);
        let mut failures = 0u32;
        // The furthest offset reached: only going past it counts as progress, so
        // a server that ignores Range and drops at the same point cannot loop forever.
        let mut furthest = have;
        let mut total = meta.size;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            if total.is_some_and(|t| have >= t) {
                break;
            }
            let failure = match self.send(false, url, Some(have)) {
                Err(e) => e.to_string(),
                Ok(mut answer) => {
                    match answer.status {
                        200 => {
                            if have > 0 {
                                file.set_len(0).map_err(io_err)?;
                                file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                                have = 0;
                                hasher = Hasher::new(meta);
                                bar.set_position(0);
                            }
                        }
                        206 => {
                            let range = answer.header("content-range").unwrap_or_default();
                            let (start, length) = parse_content_range(&range);
                            if start != Some(have) {
                                file.set_len(0).map_err(io_err)?;
                                file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                                have = 0;
                                hasher = Hasher::new(meta);
                                bar.set_position(0);
                                failures += 1;
                                if failures >= MAX_FAILED_ATTEMPTS {
                                    return Err(HubError::BadResponse {
                                        url: answer.url,
                                        message: format!(
                                            "asked for bytes from {start:?}, got range '{range}'"
                                        ),
                                    });
                                }
                                continue;
                            }
                            if total.is_none() {
                                total = length;
                            }
                        }
                        416 => {
                            let (_, length) = parse_content_range(
                                &answer.header("content-range").unwrap_or_default(),
                            );
                            if length == Some(have) && total.is_none_or(|t| t == have) {
                                total = Some(have);
                                break;
                            }
                            file.set_len(0).map_err(io_err)?;
                            file.seek(SeekFrom::Start(0)).map_err(io_err)?;
                            have = 0;
                            hasher = Hasher::new(meta);
                            bar.set_position(0);
                            continue;
                        }
                        429 | 500..=599 => {
                            failures += 1;
                            if failures >= MAX_FAILED_ATTEMPTS {
                                return Err(self.status_error(
                                    repo,
                                    revision,
                                    Some(&meta.name),
                                    &answer,
                                    "200 or 206",
                                ));
                            }
                            std::thread::sleep(backoff(failures));
                            continue;
                        }
                        _ => {
                            return Err(self.status_error(
                                repo,
                                revision,
                                Some(&meta.name),
                                &answer,
                                "200 or 206",
                            ))
                        }
                    }
                    if total.is_none() {
                        total = answer
                            .header("content-length")
                            .and_then(|s| s.parse::<u64>().ok())
                            .map(|n| n + have);
                    }
                    if let Some(t) = total {
                        bar.set_length(t);
                    }
                    let limit = total.unwrap_or(u64::MAX);
                    let mut reader = answer.response.body_mut().as_reader();
                    let outcome = loop {
                        match reader.read(&mut buf) {
                            Ok(0) => break None,
                            Ok(n) => {
                                let n_u64 = n as u64;
                                if have + n_u64 > limit {
                                    let _ = fs::remove_file(partial);
                                    return Err(HubError::Verification(Box::new(Mismatch {
                                        repo: repo.to_string(),
                                        file: meta.name.clone(),
                                        url: url.to_string(),
                                        what: "size".to_string(),
                                        expected: format!("{limit} bytes"),
                                        found: format!("more than {limit} bytes"),
                                    })));
                                }
                                file.write_all(&buf[..n]).map_err(io_err)?;
                                hasher.update(&buf[..n]);
                                have += n_u64;
                                bar.set_position(have);
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => break Some(e.to_string()),
                        }
                    };
                    match outcome {
                        None => break,
                        Some(message) => {
                            if have > furthest {
                                furthest = have;
                                failures = 0;
                            }
                            message
                        }
                    }
                }
            };
            failures += 1;
            if failures >= MAX_FAILED_ATTEMPTS {
                file.flush().map_err(io_err)?;
                bar.abandon();
                return Err(HubError::Interrupted {
                    repo: repo.to_string(),
                    file: meta.name.clone(),
                    url: url.to_string(),
                    received: have,
                    expected: total,
                    message: failure,
                });
            }
            std::thread::sleep(backoff(failures));
        }
        file.flush().map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        drop(file);
        bar.finish_and_clear();

        let mismatch = |what: &str, expected: String, found: String| {
            let _ = fs::remove_file(partial);
            HubError::Verification(Box::new(Mismatch {
                repo: repo.to_string(),
                file: meta.name.clone(),
                url: url.to_string(),
                what: what.to_string(),
                expected,
                found,
            }))
        };
        if let Some(size) = meta.size.or(total) {
            if have != size {
                return Err(mismatch(
                    "size",
                    format!("{size} bytes"),
                    format!("{have} bytes"),
                ));
            }
        }
        match hasher {
            Hasher::Sha256(h, expected) => {
                let found = hex(&h.finalize());
                if found != expected {
                    return Err(mismatch("sha256", expected, found));
                }
            }
            Hasher::GitSha1(h, expected) => {
                let found = hex(&h.finalize());
                if found != expected {
                    return Err(mismatch("git sha1", expected, found));
                }
            }
            Hasher::None => {}
        }
        Ok(())
    }

    fn progress_bar(&self, name: &str, size: Option<u64>, position: u64) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(size, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} {bar:30.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(name.to_string());
        bar.set_position(position);
        bar
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250 * u64::from(failures.min(8)))
}

/// `bytes START-END/TOTAL` or `bytes */TOTAL` -> (START, TOTAL).
fn parse_content_range(value: &str) -> (Option<u64>, Option<u64>) {
    let rest = value.trim().strip_prefix("bytes").unwrap_or("").trim();
    let (range, total) = rest.split_once('/').unwrap_or((rest, ""));
    let start = range
        .split_once('-')
        .and_then(|(s, _)| s.trim().parse().ok());
    (start, total.trim().parse().ok())
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

enum Hasher {
    Sha256(Sha256, String),
    GitSha1(Sha1, String),
    None,
}

impl Hasher {
    fn new(meta: &FileMeta) -> Hasher {
        if let Some(sha) = &meta.sha256 {
            return Hasher::Sha256(Sha256::new(), sha.clone());
        }
        if let (Some(blob_id), Some(size)) = (&meta.blob_id, meta.size) {
            if is_hex(blob_id, 40) {
                let mut h = Sha1::new();
                h.update(format!("blob {size}\0").as_bytes());
                return Hasher::GitSha1(h, blob_id.clone());
            }
        }
        Hasher::None
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h, _) => h.update(data),
            Hasher::GitSha1(h, _) => h.update(data),
            Hasher::None => {}
        }
    }
}

fn hash_prefix(file: &mut File, len: u64, hasher: &mut Hasher) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = file.take(len);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(encode_path("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode_path("a b/c.gguf", true), "a%20b/c.gguf");
        assert_eq!(origin("https://hf.co/a/b"), "https://hf.co");
        assert_eq!(
            join_location("https://hf.co/a/b?x=1", "/c"),
            "https://hf.co/c"
        );
        assert_eq!(join_location("https://hf.co/a/b", "c"), "https://hf.co/a/c");
        assert_eq!(
            join_location("https://hf.co/a", "https://cdn/x"),
            "https://cdn/x"
        );
        assert_eq!(join_location("https://hf.co/a", "//cdn/x"), "https://cdn/x");
        assert!(is_loopback("http://127.0.0.1:9/x"));
        assert!(is_loopback("http://localhost:9"));
        assert!(!is_loopback("https://huggingface.co"));
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 10-99/100"),
            (Some(10), Some(100))
        );
        assert_eq!(parse_content_range("bytes */100"), (None, Some(100)));
        assert_eq!(parse_content_range("garbage"), (None, None));
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
    }
}
