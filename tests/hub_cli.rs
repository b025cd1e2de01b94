//! Model names through the command line, against a Hugging Face cache laid out by hand as
//! huggingface_hub lays it out (no network: offline, or a cached snapshot used as it is).

mod common;
use common::*;
use std::path::Path;
use std::process::Command;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn make_cache(home: &Path) {
    let repo = home.join("hub/models--deepseek-ai--tiny-mha");
    let snap = repo.join("snapshots").join(COMMIT);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(model_dir("tiny-mha").join(f), snap.join(f)).unwrap();
    }
}

fn deepseek(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("HF_HOME", home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        // Nothing listens here: any request would fail the command.
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap()
}

#[test]
fn hub_names_resolve_from_the_cache() {
    let home = tempfile::tempdir().unwrap();
    make_cache(home.path());
    let want = ids(&reference("tiny-mha")["prompts"][1]["greedy"]["new_ids"]);
    let prompt = ids(&reference("tiny-mha")["prompts"][1]["ids"]);
    let prompt: Vec<String> = prompt.iter().map(|i| i.to_string()).collect();
    let prompt = prompt.join(",");
    for model in [
        "deepseek-ai/tiny-mha",
        &format!("deepseek-ai/tiny-mha:{COMMIT}"),
    ] {
        for extra in [&[][..], &["--offline"][..]] {
            let mut args = vec![
                "run",
                model,
                "--prompt-ids",
                &prompt,
                "--temperature",
                "0",
                "-n",
                "24",
                "--ignore-eos",
                "--json",
            ];
            args.extend_from_slice(extra);
            let out = deepseek(home.path(), &args);
            assert!(
                out.status.success(),
                "{model} {extra:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(ids(&v["ids"]), want);
        }
    }
}

#[test]
fn list_and_rm() {
    let home = tempfile::tempdir().unwrap();
    make_cache(home.path());
    let out = deepseek(home.path(), &["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], "deepseek-ai/tiny-mha");
    assert_eq!(v[0]["revision"], COMMIT);
    assert_eq!(v[0]["format"], "safetensors");
    let out = deepseek(home.path(), &["rm", "deepseek-ai/tiny-mha"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = deepseek(home.path(), &["list", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn offline_with_an_empty_cache_names_what_is_missing() {
    let home = tempfile::tempdir().unwrap();
    let out = deepseek(
        home.path(),
        &["run", "deepseek-ai/deepseek-llm-7b-chat", "hi", "--offline"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deepseek-ai/deepseek-llm-7b-chat") && err.contains("offline"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}
