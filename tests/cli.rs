//! The `deepseek` binary end to end on the fixture models.

mod common;
use common::*;
use serde_json::Value;
use std::process::{Command, Output};

fn deepseek(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run deepseek")
}

fn run_json(args: &[&str]) -> Value {
    let out = deepseek(args);
    assert!(
        out.status.success(),
        "deepseek {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

fn id_list(ids: &[u32]) -> String {
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn run_json_greedy_matches_reference_on_both_models() {
    for name in ["tiny-mha", "tiny-gqa"] {
        let dir = model_dir(name);
        let reference = reference(name);
        for p in reference["prompts"].as_array().unwrap() {
            let prompt = ids(&p["ids"]);
            let want = ids(&p["greedy"]["new_ids"]);
            let v = run_json(&[
                "run",
                "--model",
                dir.to_str().unwrap(),
                "--prompt-ids",
                &id_list(&prompt),
                "--temperature",
                "0",
                "-n",
                "24",
                "--ignore-eos",
                "--json",
                "-t",
                "2",
            ]);
            assert_eq!(ids(&v["prompt_ids"]), prompt);
            assert_eq!(ids(&v["ids"]), want, "{name}/{}", p["name"]);
            assert_eq!(v["finish_reason"], "length");
            assert_eq!(v["usage"]["prompt_tokens"], prompt.len());
            assert_eq!(v["usage"]["completion_tokens"], 24);
            for k in ["load_s", "prefill_tokens_per_s", "decode_tokens_per_s"] {
                assert!(v["timings"][k].as_f64().is_some(), "timings.{k}");
            }
        }
    }
}

#[test]
fn run_chat_builds_the_reference_prompt() {
    let dir = model_dir("tiny-mha");
    let reference = reference("tiny-mha");
    let chat = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "chat")
        .unwrap();
    let messages = chat["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        1,
        "the fixture's chat prompt is one user message"
    );
    let user = messages[0]["content"].as_str().unwrap();
    let v = run_json(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--chat",
        user,
        "--temperature",
        "0",
        "-n",
        "24",
        "--ignore-eos",
        "--json",
    ]);
    assert_eq!(ids(&v["prompt_ids"]), ids(&chat["ids"]));
    assert_eq!(ids(&v["ids"]), ids(&chat["greedy"]["new_ids"]));
    // The text is the decode of the generated ids with special tokens skipped.
    let text = v["text"].as_str().unwrap();
    assert_eq!(text, chat["greedy"]["new_text_hf_decode"].as_str().unwrap());
}

#[test]
fn run_raw_text_prompt_adds_bos() {
    let dir = model_dir("tiny-gqa");
    let reference = reference("tiny-gqa");
    let short = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "short")
        .unwrap();
    let text = short["text"].as_str().unwrap();
    let v = run_json(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        text,
        "--temperature",
        "0",
        "-n",
        "3",
        "--json",
    ]);
    assert_eq!(ids(&v["prompt_ids"]), ids(&short["ids"]));
    assert_eq!(
        ids(&v["ids"]),
        ids(&short["greedy"]["new_ids"])[..3].to_vec()
    );
}

#[test]
fn top_logprobs_are_log_softmax_of_raw_logits() {
    let dir = model_dir("tiny-mha");
    let reference = reference("tiny-mha");
    let chat = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "chat")
        .unwrap();
    // Sampling with a penalty: logprobs must still come from the raw logits.
    let v = run_json(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &id_list(&ids(&chat["ids"])),
        "--temperature",
        "0.8",
        "--repeat-penalty",
        "1.3",
        "--seed",
        "5",
        "-n",
        "4",
        "--json",
        "--top-logprobs",
        "5",
    ]);
    let lp = v["logprobs"].as_array().unwrap();
    assert_eq!(lp.len(), v["ids"].as_array().unwrap().len());
    let first = &lp[0];
    let top = first["top"].as_array().unwrap();
    assert_eq!(top.len(), 5);
    let want_ids = ids(&chat["last_logits"]["top20_ids"]);
    let want_vals = floats(&chat["last_logits"]["top20_values"]);
    let lse = chat["last_logits"]["logsumexp"].as_f64().unwrap();
    for (i, t) in top.iter().enumerate() {
        assert_eq!(t[0].as_u64().unwrap() as u32, want_ids[i]);
        let want = want_vals[i] as f64 - lse;
        assert!(
            (t[1].as_f64().unwrap() - want).abs() < 1e-3,
            "top logprob {i}"
        );
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let dir = model_dir("tiny-gqa");
    let args = |seed: &str| {
        vec![
            "run".to_string(),
            "--model".into(),
            dir.to_str().unwrap().into(),
            "--prompt-ids".into(),
            "100000,5726,25".into(),
            "--temperature".into(),
            "1.0".into(),
            "--seed".into(),
            seed.into(),
            "-n".into(),
            "16".into(),
            "--ignore-eos".into(),
            "--json".into(),
        ]
    };
    let run = |seed: &str| {
        let a = args(seed);
        let a: Vec<&str> = a.iter().map(|s| s.as_str()).collect();
        ids(&run_json(&a)["ids"])
    };
    let (a, b, c) = (run("11"), run("11"), run("12"));
    assert_eq!(a, b, "same seed, same tokens");
    assert_ne!(a, c, "another seed, other tokens");
}

#[test]
fn stop_strings_cut_the_text() {
    let dir = model_dir("tiny-mha");
    let reference = reference("tiny-mha");
    let chat = reference["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "chat")
        .unwrap();
    let full = run_json(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &id_list(&ids(&chat["ids"])),
        "--temperature",
        "0",
        "-n",
        "24",
        "--json",
    ]);
    let text = full["text"].as_str().unwrap().to_string();
    // Stop at a piece of the greedy text that starts after its first few characters.
    let chars: Vec<char> = text.chars().collect();
    assert!(
        chars.len() > 12,
        "greedy text too short to test stops: {text:?}"
    );
    let stop: String = chars[6..9].iter().collect();
    let v = run_json(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        &id_list(&ids(&chat["ids"])),
        "--temperature",
        "0",
        "-n",
        "24",
        "--json",
        "--stop",
        &stop,
        "--stop",
        "never-appears",
    ]);
    let cut = &text[..text.find(&stop).unwrap()];
    assert_eq!(v["text"].as_str().unwrap(), cut);
    assert_eq!(v["finish_reason"], "stop");
    assert_eq!(v["stop_cause"], "stop_string");
}

#[test]
fn generation_stops_at_the_context_length() {
    let dir = model_dir("tiny-mha");
    let v = run_json(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "100000,5726,25",
        "--temperature",
        "0",
        "-n",
        "100",
        "--ignore-eos",
        "--json",
        "--ctx-size",
        "10",
    ]);
    assert_eq!(v["finish_reason"], "length");
    assert_eq!(v["stop_cause"], "context_full");
    assert_eq!(v["ids"].as_array().unwrap().len(), 10 - 3 + 1);
}

#[test]
fn streamed_text_equals_json_text() {
    let dir = model_dir("tiny-gqa");
    let common = [
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--prompt-ids",
        "100000,5726,25,8886",
        "--temperature",
        "0",
        "-n",
        "24",
        "--ignore-eos",
    ];
    let out = deepseek(&common);
    assert!(out.status.success());
    let mut with_json = common.to_vec();
    with_json.push("--json");
    let v = run_json(&with_json);
    let streamed = String::from_utf8(out.stdout).expect("streamed output is valid UTF-8");
    assert_eq!(streamed, format!("{}\n", v["text"].as_str().unwrap()));
}

#[test]
fn chat_with_piped_stdin_keeps_history() {
    use std::io::Write;
    let dir = model_dir("tiny-mha");
    let mut child = Command::new(bin())
        .args([
            "chat",
            "--model",
            dir.to_str().unwrap(),
            "--temperature",
            "0",
            "-n",
            "5",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Hello\nWho are you?\n/reset\nHello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<&str> = text.split('\n').collect();
    assert!(answers.len() >= 3, "{text:?}");
    // After /reset the same first message gives the same first answer.
    assert_eq!(answers[0], answers[2]);
}

#[test]
fn tokenize_prints_ids() {
    let dir = fixtures().join("tokenizer/deepseek-llm");
    let out = deepseek(&["tokenize", "--model", dir.to_str().unwrap(), "Hello world"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[17464,1843]");
    let out = deepseek(&[
        "tokenize",
        "--model",
        dir.to_str().unwrap(),
        "--bos",
        "Hello world",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[100000,17464,1843]"
    );
}

#[test]
fn tokenize_jsonl_and_chat_jsonl_match_vectors() {
    use std::io::Write;
    let dir = fixtures().join("tokenizer/deepseek-llm");
    let run = |flag: &str, input: String| -> Vec<Value> {
        let mut child = Command::new(bin())
            .args(["tokenize", "--model", dir.to_str().unwrap(), flag])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let vectors = std::fs::read_to_string(dir.join("vectors.jsonl")).unwrap();
    let recs: Vec<Value> = vectors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let input: String = recs
        .iter()
        .map(|r| format!("{}\n", serde_json::json!({"text": r["text"]})))
        .collect();
    let got = run("--jsonl", input);
    assert_eq!(got.len(), recs.len());
    for (g, r) in got.iter().zip(&recs) {
        assert_eq!(g, &r["ids"], "text {:?}", r["text"]);
    }
    let chats = std::fs::read_to_string(dir.join("chat_vectors.jsonl")).unwrap();
    let recs: Vec<Value> = chats
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let input: String = recs
        .iter()
        .map(|r| format!("{}\n", serde_json::json!({"messages": r["messages"], "add_generation_prompt": r["add_generation_prompt"]})))
        .collect();
    let got = run("--chat-jsonl", input);
    assert_eq!(got.len(), recs.len());
    for (g, r) in got.iter().zip(&recs) {
        assert_eq!(g["text"], r["text"]);
        assert_eq!(g["ids"], r["ids"]);
    }
}
