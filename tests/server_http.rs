//! `deepseek serve` over raw HTTP: health, a greedy chat completion equal to `deepseek run`,
//! a streamed completion, an error answer, and a clean exit on SIGTERM. (The full API suite,
//! with the `openai` Python package, is `scripts/test-server.sh`.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/models/tiny-mha");

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_deepseek"))
        .args(["serve", MODEL, "--port", "0", "--parallel", "2"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start deepseek serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server prints its address");
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok((200, _)) = request(&server, "GET", "/health", "") {
            return server;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the server did not become ready");
}

/// One HTTP/1.1 request; returns the status and the (de-chunked) body.
fn request(s: &Server, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut c = TcpStream::connect(&s.addr)?;
    c.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.addr,
        body.len()
    )?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut r = rest;
        while let Some((size, tail)) = r.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            r = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        rest.to_string()
    };
    Ok((status, body))
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn serve_chat_stream_errors_and_sigterm() {
    let s = start();

    // Greedy chat equals `deepseek run --chat --temperature 0 --json`.
    let out = Command::new(env!("CARGO_BIN_EXE_deepseek"))
        .args([
            "run",
            "--model",
            MODEL,
            "--chat",
            "--json",
            "--temperature",
            "0",
            "-n",
            "12",
            "Hi there",
        ])
        .output()
        .expect("deepseek run");
    assert!(out.status.success());
    let cli = json(&String::from_utf8_lossy(&out.stdout));
    let (status, body) = request(
        &s,
        "POST",
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"Hi there"}],"max_tokens":12,"temperature":0}"#,
    )
    .expect("chat request");
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], cli["text"]);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64(),
        cli["prompt_ids"].as_array().map(|a| a.len() as u64)
    );

    // A streamed completion: SSE chunks, finish_reason in the last, then [DONE].
    let (status, body) = request(
        &s,
        "POST",
        "/v1/completions",
        r#"{"prompt":"Once","max_tokens":5,"temperature":0,"stream":true}"#,
    )
    .expect("stream request");
    assert_eq!(status, 200);
    let events: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let last = json(events[events.len() - 2]);
    assert_eq!(last["choices"][0]["finish_reason"], "length");

    // Errors in OpenAI's shape.
    let (status, body) = request(&s, "POST", "/v1/chat/completions", "{nope").expect("bad json");
    assert_eq!(status, 400);
    let e = json(&body);
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let (status, _) = request(&s, "GET", "/nowhere", "").expect("404");
    assert_eq!(status, 404);

    // SIGTERM: a clean exit.
    let mut s = s;
    let pid = s.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(st) = s.child.try_wait().expect("wait") {
            assert!(st.success(), "exit status {st}");
            break;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::io::stdout().flush();
}
