//! A small hub served on 127.0.0.1 for the tests: the API and resolve
//! routes for fixture repositories held in memory, a CDN route that LFS files
//! redirect to, Range requests, and fault modes (dropped connections, wrong
//! bytes, short files). It counts every request.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// One file of a fixture commit.
#[derive(Clone)]
pub struct FixtureFile {
    pub data: Vec<u8>,
    /// Stored with Git LFS: the hub redirects to the CDN and publishes a sha256.
    pub lfs: bool,
}

/// A fixture repository.
#[derive(Clone, Default)]
pub struct FixtureRepo {
    /// Branch or tag -> commit.
    pub branches: BTreeMap<String, String>,
    /// Commit -> files.
    pub commits: BTreeMap<String, BTreeMap<String, FixtureFile>>,
    /// When set, requests need `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub auth: Option<String>,
}

/// Server state, shared with the test.
#[derive(Default)]
pub struct State {
    pub repos: BTreeMap<String, FixtureRepo>,
    pub log: Vec<Request>,
    /// The next transfer of this file stops after this many bytes of the file.
    pub drop_once: Option<(String, usize)>,
    /// Every transfer of this file stops at this offset of the file.
    pub drop_at: Option<(String, usize)>,
    /// This file is served with one byte changed.
    pub corrupt: Option<String>,
    /// This file is served cut to half its length (a consistent, short answer).
    pub short: Option<String>,
    /// The API answers without file sizes and hashes (as without `?blobs=true`).
    pub plain_api: bool,
    /// Transfers of file bytes: (file name, Range header), HEAD excluded.
    pub served: Vec<(String, Option<String>)>,
}

/// The running server.
pub struct FakeHub {
    pub url: String,
    pub state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn git_blob_id(data: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(data);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

impl FakeHub {
    pub fn start(repos: BTreeMap<String, FixtureRepo>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State {
            repos,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let state = state.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = state.clone();
                    thread::spawn(move || handle(stream, &state));
                }
            });
        }
        FakeHub {
            url: format!("http://{addr}"),
            state,
            stop,
            addr,
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().unwrap().log.len()
    }

    /// Transfers of the bytes of `name` (through the resolve or CDN route): their Range headers.
    pub fn transfers(&self, name: &str) -> Vec<Option<String>> {
        self.state
            .lock()
            .unwrap()
            .served
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Requests to the API route.
    pub fn api_requests(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with("/api/"))
            .count()
    }

    pub fn set(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap())
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes of the body actually sent before the connection is closed.
    cut: Option<usize>,
    /// The Content-Length to announce, when not the body's length.
    length: Option<usize>,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            cut: None,
            length: None,
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn error(status: u16, code: &str) -> Response {
        Response::new(status)
            .header("X-Error-Code", code)
            .header("Content-Type", "application/json")
            .with_body(format!("{{\"error\":\"{code}\"}}").into_bytes())
    }

    fn with_body(mut self, body: Vec<u8>) -> Response {
        self.body = body;
        self
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let path = target.split('?').next().unwrap_or("").to_string();
    let request = Request {
        method: method.clone(),
        path: path.clone(),
        range: headers.get("range").cloned(),
        auth: headers.get("authorization").cloned(),
    };
    let response = {
        let mut state = state.lock().unwrap();
        state.log.push(request.clone());
        route(&mut state, &request)
    };
    write_response(stream, &method, response);
}

fn write_response(mut stream: TcpStream, method: &str, response: Response) {
    let reason = match response.status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        _ => "Other",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", response.status);
    for (k, v) in &response.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let length = response.length.unwrap_or(response.body.len());
    head.push_str(&format!(
        "Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ));
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    if method != "HEAD" {
        let end = response
            .cut
            .unwrap_or(response.body.len())
            .min(response.body.len());
        let _ = stream.write_all(&response.body[..end]);
    }
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Both);
}

fn resolve_commit(repo: &FixtureRepo, rev: &str) -> Option<String> {
    if repo.commits.contains_key(rev) {
        return Some(rev.to_string());
    }
    repo.branches.get(rev).cloned()
}

fn authorized(repo: &FixtureRepo, req: &Request) -> bool {
    match &repo.token {
        None => true,
        Some(token) => req.auth.as_deref() == Some(&format!("Bearer {token}")),
    }
}

fn route(state: &mut State, req: &Request) -> Response {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["api", "models", org, name, "revision", rev] => {
            let repo_id = format!("{org}/{name}");
            let Some(repo) = state.repos.get(&repo_id) else {
                return Response::error(404, "RepoNotFound");
            };
            if !authorized(repo, req) {
                return Response::error(401, "GatedRepo");
            }
            let rev = percent_decode(rev);
            let Some(commit) = resolve_commit(repo, &rev) else {
                return Response::error(404, "RevisionNotFound");
            };
            let plain = state.plain_api;
            let siblings: Vec<serde_json::Value> = repo.commits[&commit]
                .iter()
                .map(|(name, f)| {
                    if plain {
                        serde_json::json!({ "rfilename": name })
                    } else if f.lfs {
                        let sha = sha256_hex(&f.data);
                        let pointer = format!(
                            "version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {}\n",
                            f.data.len()
                        );
                        serde_json::json!({
                            "rfilename": name,
                            "size": f.data.len(),
                            "blobId": git_blob_id(pointer.as_bytes()),
                            "lfs": {"sha256": sha, "size": f.data.len(), "pointerSize": pointer.len()},
                        })
                    } else {
                        serde_json::json!({
                            "rfilename": name,
                            "size": f.data.len(),
                            "blobId": git_blob_id(&f.data),
                        })
                    }
                })
                .collect();
            let body = serde_json::json!({"id": repo_id, "sha": commit, "siblings": siblings});
            Response::new(200)
                .header("Content-Type", "application/json")
                .with_body(body.to_string().into_bytes())
        }
        [org, name, "resolve", rev, file @ ..] if !file.is_empty() => {
            let repo_id = format!("{org}/{name}");
            let Some(repo) = state.repos.get(&repo_id) else {
                return Response::error(404, "RepoNotFound");
            };
            if !authorized(repo, req) {
                return Response::error(401, "GatedRepo");
            }
            let rev = percent_decode(rev);
            let Some(commit) = resolve_commit(repo, &rev) else {
                return Response::error(404, "RevisionNotFound");
            };
            let file_name = percent_decode(&file.join("/"));
            let Some(f) = repo.commits[&commit].get(&file_name).cloned() else {
                return Response::error(404, "EntryNotFound").header("X-Repo-Commit", commit);
            };
            if f.lfs {
                let sha = sha256_hex(&f.data);
                Response::new(302)
                    .header("Location", format!("/cdn/{sha}?name={}", file_name))
                    .header("X-Repo-Commit", commit)
                    .header("X-Linked-Etag", format!("\"{sha}\""))
                    .header("X-Linked-Size", f.data.len().to_string())
                    .header("ETag", "\"pointer-etag\"")
            } else {
                let etag = git_blob_id(&f.data);
                serve(state, req, &file_name, &f.data)
                    .header("X-Repo-Commit", commit)
                    .header("ETag", format!("\"{etag}\""))
            }
        }
        ["cdn", sha] => {
            let found = state
                .repos
                .values()
                .flat_map(|r| r.commits.values())
                .find_map(|files| {
                    files
                        .iter()
                        .find(|(_, f)| f.lfs && sha256_hex(&f.data) == *sha)
                        .map(|(n, f)| (n.clone(), f.data.clone()))
                });
            match found {
                Some((name, data)) => {
                    serve(state, req, &name, &data).header("ETag", "\"cdn-etag\"")
                }
                None => Response::new(404),
            }
        }
        _ => Response::new(404),
    }
}

/// Serves file bytes with Range support and the fault modes.
fn serve(state: &mut State, req: &Request, name: &str, data: &[u8]) -> Response {
    if req.method != "HEAD" {
        state.served.push((name.to_string(), req.range.clone()));
    }
    let mut data = data.to_vec();
    if state.corrupt.as_deref() == Some(name) {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    if state.short.as_deref() == Some(name) {
        data.truncate(data.len() / 2);
    }
    let start = req
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.parse::<usize>().ok());
    let mut response = match start {
        Some(start) if start >= data.len() => {
            return Response::new(416).header("Content-Range", format!("bytes */{}", data.len()))
        }
        Some(start) => Response::new(206)
            .header(
                "Content-Range",
                format!("bytes {start}-{}/{}", data.len() - 1, data.len()),
            )
            .with_body(data[start..].to_vec()),
        None => Response::new(200).with_body(data.clone()),
    };
    let start = start.unwrap_or(0);
    let mut stop_at = None;
    if let Some((file, offset)) = state.drop_once.clone() {
        if file == name {
            state.drop_once = None;
            stop_at = Some(offset);
        }
    }
    if let Some((file, offset)) = &state.drop_at {
        if file == name {
            stop_at = Some(*offset);
        }
    }
    if let Some(offset) = stop_at {
        response.cut = Some(offset.saturating_sub(start));
    }
    response.header("Accept-Ranges", "bytes")
}
