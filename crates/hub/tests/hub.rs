//! Downloads, cache use, resume, verification, GGUF selection and offline
//! mode against a hub served on 127.0.0.1 by the test itself.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::{git_blob_id, sha256_hex, FakeHub, FixtureFile, FixtureRepo};
use deepseek_hub::{list_cached, remove_cached, resolve, HubError, HubOptions};

const CHAT: &str = "deepseek-ai/tiny-chat";
const GGUF: &str = "tiny-org/tiny-GGUF";
const AMBIGUOUS: &str = "tiny-org/two-GGUF";
const GATED: &str = "tiny-org/gated";
const MAIN: &str = "1111111111111111111111111111111111111111";
const V1: &str = "2222222222222222222222222222222222222222";
const GGUF_COMMIT: &str = "3333333333333333333333333333333333333333";
const TOKEN: &str = "hf_test_secret";

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) as u8
        })
        .collect()
}

/// A valid safetensors file with one F32 tensor of `n` elements.
fn safetensors(tensor: &str, n: usize, seed: u64) -> Vec<u8> {
    let mut header = format!(
        "{{\"{tensor}\":{{\"dtype\":\"F32\",\"shape\":[{n}],\"data_offsets\":[0,{}]}}}}",
        4 * n
    );
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend(noise(seed, 4 * n));
    out
}

fn text(s: &str) -> FixtureFile {
    FixtureFile {
        data: s.as_bytes().to_vec(),
        lfs: false,
    }
}

fn lfs(data: Vec<u8>) -> FixtureFile {
    FixtureFile { data, lfs: true }
}

fn files(list: Vec<(&str, FixtureFile)>) -> BTreeMap<String, FixtureFile> {
    list.into_iter().map(|(n, f)| (n.to_string(), f)).collect()
}

fn chat_main_files() -> BTreeMap<String, FixtureFile> {
    files(vec![
        (
            "config.json",
            text(r#"{"model_type":"llama","hidden_size":64,"revision":"main"}"#),
        ),
        ("generation_config.json", text(r#"{"temperature":0.7}"#)),
        (
            "tokenizer.json",
            text(r#"{"version":"1.0","model":{"type":"BPE"}}"#),
        ),
        ("tokenizer_config.json", text(r#"{"bos_token":"<s>"}"#)),
        (
            "model.safetensors.index.json",
            text(
                r#"{"metadata":{"total_size":2200000},"weight_map":{
                "model.embed_tokens.weight":"model-00001-of-00002.safetensors",
                "lm_head.weight":"model-00002-of-00002.safetensors"}}"#,
            ),
        ),
        (
            "model-00001-of-00002.safetensors",
            lfs(safetensors("model.embed_tokens.weight", 300_000, 1)),
        ),
        (
            "model-00002-of-00002.safetensors",
            lfs(safetensors("lm_head.weight", 250_000, 2)),
        ),
        ("pytorch_model.bin", lfs(noise(3, 500_000))),
        ("README.md", text("# tiny chat\n")),
    ])
}

fn repos() -> BTreeMap<String, FixtureRepo> {
    let mut repos = BTreeMap::new();
    let mut chat = FixtureRepo::default();
    chat.branches.insert("main".into(), MAIN.into());
    chat.branches.insert("v1".into(), V1.into());
    chat.commits.insert(MAIN.into(), chat_main_files());
    chat.commits.insert(
        V1.into(),
        files(vec![
            (
                "config.json",
                text(r#"{"model_type":"llama","hidden_size":64,"revision":"v1"}"#),
            ),
            ("tokenizer.json", text(r#"{"version":"1.0"}"#)),
            ("model.safetensors", lfs(safetensors("w", 1000, 4))),
        ]),
    );
    repos.insert(CHAT.to_string(), chat);

    let mut gguf = FixtureRepo::default();
    gguf.branches.insert("main".into(), GGUF_COMMIT.into());
    let mut q4 = b"GGUF".to_vec();
    q4.extend(noise(5, 300_000));
    let mut q8 = b"GGUF".to_vec();
    q8.extend(noise(6, 500_000));
    gguf.commits.insert(
        GGUF_COMMIT.into(),
        files(vec![
            ("README.md", text("# gguf\n")),
            ("model-Q4_K_M.gguf", lfs(q4)),
            ("model-Q8_0.gguf", lfs(q8)),
        ]),
    );
    repos.insert(GGUF.to_string(), gguf);

    let mut two = FixtureRepo::default();
    two.branches.insert("main".into(), GGUF_COMMIT.into());
    two.commits.insert(
        GGUF_COMMIT.into(),
        files(vec![
            ("a-Q4_K_M.gguf", lfs(noise(7, 1000))),
            ("b-Q4_K_M.gguf", lfs(noise(8, 1000))),
        ]),
    );
    repos.insert(AMBIGUOUS.to_string(), two);

    let mut gated = FixtureRepo {
        token: Some(TOKEN.to_string()),
        ..FixtureRepo::default()
    };
    gated.branches.insert("main".into(), MAIN.into());
    gated.commits.insert(
        MAIN.into(),
        files(vec![
            ("config.json", text(r#"{"model_type":"llama"}"#)),
            ("model.safetensors", lfs(safetensors("w", 100, 9))),
        ]),
    );
    repos.insert(GATED.to_string(), gated);
    repos
}

/// Options as the environment would give them: `HF_HOME` and `HF_ENDPOINT`.
fn options(hub: &FakeHub, home: &Path) -> HubOptions {
    let home = home.to_string_lossy().to_string();
    let endpoint = hub.url.clone();
    let opts = HubOptions::from_lookup(|name| match name {
        "HF_HOME" => Some(home.clone()),
        "HF_ENDPOINT" => Some(endpoint.clone()),
        "HF_HUB_DISABLE_PROGRESS_BARS" => Some("1".into()),
        _ => None,
    });
    assert_eq!(opts.cache_dir, Path::new(&home).join("hub"));
    assert_eq!(opts.token, None);
    opts
}

fn setup() -> (FakeHub, tempfile::TempDir, HubOptions) {
    let hub = FakeHub::start(repos());
    let home = tempfile::tempdir().unwrap();
    let opts = options(&hub, home.path());
    (hub, home, opts)
}

fn repo_dir(opts: &HubOptions, repo: &str) -> PathBuf {
    opts.cache_dir
        .join(format!("models--{}", repo.replace('/', "--")))
}

fn fixture(repo: &str, commit: &str, name: &str) -> Vec<u8> {
    repos()[repo].commits[commit][name].data.clone()
}

fn incomplete_files(opts: &HubOptions, repo: &str) -> Vec<PathBuf> {
    fs::read_dir(repo_dir(opts, repo).join("blobs"))
        .map(|it| {
            it.flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().ends_with(".incomplete"))
                .collect()
        })
        .unwrap_or_default()
}

const SHARD1: &str = "model-00001-of-00002.safetensors";
const SHARD2: &str = "model-00002-of-00002.safetensors";

#[test]
fn downloads_a_model_folder_into_the_hf_cache_layout() {
    let (hub, _home, opts) = setup();
    let path = resolve(CHAT, &opts).unwrap();
    let dir = repo_dir(&opts, CHAT);
    assert_eq!(path, dir.join("snapshots").join(MAIN));
    assert_eq!(fs::read_to_string(dir.join("refs/main")).unwrap(), MAIN);

    for name in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "model.safetensors.index.json",
        SHARD1,
        SHARD2,
    ] {
        let expected = fixture(CHAT, MAIN, name);
        assert_eq!(fs::read(path.join(name)).unwrap(), expected, "{name}");
        // Relative symlinks into blobs/, named by sha256 (LFS) or git blob id.
        let target = fs::read_link(path.join(name)).unwrap();
        let blob = if repos()[CHAT].commits[MAIN][name].lfs {
            sha256_hex(&expected)
        } else {
            git_blob_id(&expected)
        };
        assert_eq!(target, Path::new("../../blobs").join(&blob), "{name}");
        assert!(dir.join("blobs").join(&blob).is_file());
    }
    // Only what the engine needs was fetched.
    assert!(!path.join("pytorch_model.bin").exists());
    assert!(!path.join("README.md").exists());
    assert!(hub.transfers("pytorch_model.bin").is_empty());
    assert!(hub.transfers("README.md").is_empty());
    // The absent optional file is recorded as absent, as huggingface_hub does.
    assert!(dir
        .join(".no_exist")
        .join(MAIN)
        .join("special_tokens_map.json")
        .is_file());
    assert!(incomplete_files(&opts, CHAT).is_empty());
    // The LFS files came through the redirect to the CDN route.
    assert!(hub.requests().iter().any(|r| r.path.starts_with("/cdn/")));
}

#[test]
fn a_second_run_downloads_nothing_and_a_pinned_one_makes_no_request() {
    let (hub, _home, mut opts) = setup();
    let first = resolve(CHAT, &opts).unwrap();
    let after_first = hub.request_count();

    // By branch: the cached snapshot answers, no request at all.
    assert_eq!(resolve(CHAT, &opts).unwrap(), first);
    assert_eq!(
        hub.request_count(),
        after_first,
        "{:?}",
        &hub.requests()[after_first..]
    );

    // Asked to refresh the branch: one metadata request to learn its commit, no file request.
    opts.refresh = true;
    assert_eq!(resolve(CHAT, &opts).unwrap(), first);
    let new: Vec<_> = hub.requests()[after_first..].to_vec();
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0]
        .path
        .starts_with("/api/models/deepseek-ai/tiny-chat/revision/main"));
    opts.refresh = false;

    // Pinned to the commit: no request at all.
    let before = hub.request_count();
    assert_eq!(resolve(&format!("{CHAT}:{MAIN}"), &opts).unwrap(), first);
    assert_eq!(hub.request_count(), before);

    // Offline: no request at all.
    opts.offline = true;
    assert_eq!(resolve(CHAT, &opts).unwrap(), first);
    assert_eq!(hub.request_count(), before);
}

#[test]
fn an_interrupted_transfer_resumes_with_a_range_request() {
    let (hub, _home, opts) = setup();
    let cut = 400_000;
    hub.set(|s| s.drop_once = Some((SHARD1.to_string(), cut)));
    let path = resolve(CHAT, &opts).unwrap();
    assert_eq!(
        fs::read(path.join(SHARD1)).unwrap(),
        fixture(CHAT, MAIN, SHARD1)
    );
    let transfers = hub.transfers(SHARD1);
    assert_eq!(transfers.len(), 2, "{transfers:?}");
    assert_eq!(transfers[0], None);
    assert_eq!(
        transfers[1].as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
}

#[test]
fn a_partial_download_is_kept_and_resumed_by_the_next_run() {
    let (hub, _home, opts) = setup();
    let cut = 300_000;
    hub.set(|s| s.drop_at = Some((SHARD2.to_string(), cut)));
    let err = resolve(CHAT, &opts).unwrap_err();
    assert!(
        matches!(err, HubError::Interrupted { received, .. } if received == cut as u64),
        "{err}"
    );
    assert!(err.to_string().contains(SHARD2), "{err}");
    let partial = incomplete_files(&opts, CHAT);
    assert_eq!(partial.len(), 1);
    assert_eq!(fs::metadata(&partial[0]).unwrap().len(), cut as u64);
    let snapshot = repo_dir(&opts, CHAT).join("snapshots").join(MAIN);
    assert!(!snapshot.join(SHARD2).exists());
    // The other files are in place.
    assert!(snapshot.join(SHARD1).is_file());

    hub.set(|s| s.drop_at = None);
    let before = hub.transfers(SHARD2).len();
    let path = resolve(CHAT, &opts).unwrap();
    assert_eq!(
        fs::read(path.join(SHARD2)).unwrap(),
        fixture(CHAT, MAIN, SHARD2)
    );
    let transfers = hub.transfers(SHARD2);
    assert_eq!(transfers.len(), before + 1);
    assert_eq!(
        transfers[before].as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert!(incomplete_files(&opts, CHAT).is_empty());
    // Shard 1 was not fetched again.
    assert_eq!(hub.transfers(SHARD1).len(), 1);
}

#[test]
fn corrupt_files_are_rejected_and_not_placed_in_the_cache() {
    let (hub, _home, opts) = setup();
    hub.set(|s| s.corrupt = Some(SHARD2.to_string()));
    let err = resolve(CHAT, &opts).unwrap_err();
    match &err {
        HubError::Verification(m) => {
            assert_eq!(m.file, SHARD2);
            assert_eq!(m.what, "sha256");
        }
        other => panic!("expected a verification error, got {other}"),
    }
    let dir = repo_dir(&opts, CHAT);
    let blob = sha256_hex(&fixture(CHAT, MAIN, SHARD2));
    assert!(!dir.join("blobs").join(&blob).exists());
    assert!(!dir.join("snapshots").join(MAIN).join(SHARD2).exists());
    assert!(incomplete_files(&opts, CHAT).is_empty());

    // A small (non-LFS) file is checked against its git blob id.
    hub.set(|s| s.corrupt = Some("config.json".to_string()));
    let err = resolve(&format!("{CHAT}:v1"), &opts).unwrap_err();
    assert!(
        matches!(&err, HubError::Verification(m) if m.what == "git sha1" && m.file == "config.json"),
        "{err}"
    );
    assert!(!dir.join("snapshots").join(V1).join("config.json").exists());

    hub.set(|s| s.corrupt = None);
    let path = resolve(CHAT, &opts).unwrap();
    assert_eq!(
        fs::read(path.join(SHARD2)).unwrap(),
        fixture(CHAT, MAIN, SHARD2)
    );
}

#[test]
fn short_files_are_rejected_and_not_placed_in_the_cache() {
    let (hub, _home, opts) = setup();
    hub.set(|s| s.short = Some(SHARD1.to_string()));
    let err = resolve(CHAT, &opts).unwrap_err();
    assert!(
        matches!(&err, HubError::Verification(m) if m.what == "size" && m.file == SHARD1),
        "{err}"
    );
    let dir = repo_dir(&opts, CHAT);
    assert!(!dir.join("snapshots").join(MAIN).join(SHARD1).exists());
    assert!(!dir
        .join("blobs")
        .join(sha256_hex(&fixture(CHAT, MAIN, SHARD1)))
        .exists());
    assert!(incomplete_files(&opts, CHAT).is_empty());
}

#[test]
fn a_quant_type_picks_the_matching_gguf_file() {
    let (hub, _home, opts) = setup();
    let path = resolve(&format!("{GGUF}:Q4_K_M"), &opts).unwrap();
    assert!(path.ends_with("model-Q4_K_M.gguf"), "{}", path.display());
    assert_eq!(
        fs::read(&path).unwrap(),
        fixture(GGUF, GGUF_COMMIT, "model-Q4_K_M.gguf")
    );
    assert!(hub.transfers("model-Q8_0.gguf").is_empty());
    assert!(hub.transfers("README.md").is_empty());

    // Case-insensitive, and a file named directly.
    let q8 = resolve(&format!("{GGUF}:q8_0"), &opts).unwrap();
    assert!(q8.ends_with("model-Q8_0.gguf"));
    let named = resolve(&format!("{GGUF}/model-Q8_0.gguf"), &opts).unwrap();
    assert_eq!(named, q8);

    // No match: the error lists the GGUF files.
    let err = resolve(&format!("{GGUF}:Q5_K_M"), &opts).unwrap_err();
    assert!(matches!(err, HubError::NoMatchingFile { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("model-Q4_K_M.gguf") && message.contains("model-Q8_0.gguf"),
        "{message}"
    );

    // Several matches: the error lists them.
    let err = resolve(&format!("{AMBIGUOUS}:Q4_K_M"), &opts).unwrap_err();
    assert!(matches!(err, HubError::AmbiguousFile { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("a-Q4_K_M.gguf") && message.contains("b-Q4_K_M.gguf"),
        "{message}"
    );

    // A GGUF-only repository named without a quant type: ambiguous too.
    let err = resolve(GGUF, &opts).unwrap_err();
    assert!(matches!(err, HubError::AmbiguousFile { .. }), "{err}");

    // Cached and offline: found by scanning the snapshot.
    let mut offline = opts.clone();
    offline.offline = true;
    let before = hub.request_count();
    assert_eq!(resolve(&format!("{GGUF}:Q4_K_M"), &offline).unwrap(), path);
    assert_eq!(hub.request_count(), before);
}

#[test]
fn offline_with_an_empty_cache_gives_a_clear_error() {
    let (hub, _home, mut opts) = setup();
    opts.offline = true;
    let err = resolve(CHAT, &opts).unwrap_err();
    assert!(matches!(err, HubError::OfflineNoRevision { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains(CHAT), "{message}");
    assert!(message.contains("refs/main"), "{message}");
    assert!(message.contains("HF_HUB_OFFLINE"), "{message}");

    // Pinned to a commit: the missing files are named.
    let err = resolve(&format!("{CHAT}:{MAIN}"), &opts).unwrap_err();
    assert!(matches!(err, HubError::OfflineMissing { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
    assert_eq!(hub.request_count(), 0);

    // HF_HUB_OFFLINE=1 sets the option.
    let from_env = HubOptions::from_lookup(|n| (n == "HF_HUB_OFFLINE").then(|| "1".to_string()));
    assert!(from_env.offline);
}

#[test]
fn offline_names_a_missing_shard() {
    let (hub, _home, mut opts) = setup();
    let path = resolve(CHAT, &opts).unwrap();
    let blob = fs::canonicalize(path.join(SHARD2)).unwrap();
    fs::remove_file(blob).unwrap();
    opts.offline = true;
    let before = hub.request_count();
    let err = resolve(CHAT, &opts).unwrap_err();
    assert!(
        matches!(&err, HubError::OfflineMissing { missing, .. } if missing == &vec![SHARD2.to_string()]),
        "{err}"
    );
    assert!(err.to_string().contains(SHARD2));
    assert_eq!(hub.request_count(), before);

    // Online, the missing shard is fetched again.
    opts.offline = false;
    resolve(CHAT, &opts).unwrap();
    assert_eq!(
        fs::read(path.join(SHARD2)).unwrap(),
        fixture(CHAT, MAIN, SHARD2)
    );
}

/// Lays out a cache by hand the way huggingface_hub does.
fn write_hf_cache(cache: &Path, symlinks: bool) {
    let dir = cache.join("models--deepseek-ai--tiny-chat");
    let snapshot = dir.join("snapshots").join(MAIN);
    fs::create_dir_all(dir.join("blobs")).unwrap();
    fs::create_dir_all(dir.join("refs")).unwrap();
    fs::create_dir_all(&snapshot).unwrap();
    fs::write(dir.join("refs/main"), MAIN).unwrap();
    for (name, file) in chat_main_files() {
        if name == "pytorch_model.bin" || name == "README.md" {
            continue;
        }
        let blob = if file.lfs {
            sha256_hex(&file.data)
        } else {
            git_blob_id(&file.data)
        };
        if symlinks {
            fs::write(dir.join("blobs").join(&blob), &file.data).unwrap();
            #[cfg(unix)]
            std::os::unix::fs::symlink(Path::new("../../blobs").join(&blob), snapshot.join(&name))
                .unwrap();
            #[cfg(not(unix))]
            fs::copy(dir.join("blobs").join(&blob), snapshot.join(&name)).unwrap();
        } else {
            fs::write(snapshot.join(&name), &file.data).unwrap();
        }
    }
}

#[test]
fn a_cache_laid_out_by_huggingface_hub_is_used() {
    for symlinks in [true, false] {
        let (hub, _home, mut opts) = setup();
        write_hf_cache(&opts.cache_dir, symlinks);
        let expected = repo_dir(&opts, CHAT).join("snapshots").join(MAIN);

        // Online: the metadata request only; no file is transferred.
        assert_eq!(resolve(CHAT, &opts).unwrap(), expected);
        assert_eq!(hub.api_requests(), 1);
        assert_eq!(hub.request_count(), 1, "{:?}", hub.requests());

        // special_tokens_map.json is now known to be absent: pinned needs nothing.
        assert_eq!(resolve(&format!("{CHAT}:{MAIN}"), &opts).unwrap(), expected);
        assert_eq!(hub.request_count(), 1);

        opts.offline = true;
        assert_eq!(resolve(CHAT, &opts).unwrap(), expected);
        assert_eq!(hub.request_count(), 1);

        let listed = list_cached(&opts).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, CHAT);
        assert_eq!(listed[0].revision, MAIN);
        assert_eq!(listed[0].refs, vec!["main".to_string()]);
        assert_eq!(listed[0].format, "safetensors");
    }
}

#[test]
fn revisions_and_commits_select_snapshots() {
    let (_hub, _home, opts) = setup();
    let v1 = resolve(&format!("{CHAT}:v1"), &opts).unwrap();
    let dir = repo_dir(&opts, CHAT);
    assert_eq!(v1, dir.join("snapshots").join(V1));
    assert_eq!(fs::read_to_string(dir.join("refs/v1")).unwrap(), V1);
    assert!(fs::read_to_string(v1.join("config.json"))
        .unwrap()
        .contains("\"v1\""));
    assert!(v1.join("model.safetensors").is_file());
    assert!(!dir.join("refs/main").exists());

    let pinned = resolve(&format!("{CHAT}:{MAIN}"), &opts).unwrap();
    assert_eq!(pinned, dir.join("snapshots").join(MAIN));
    assert!(fs::read_to_string(pinned.join("config.json"))
        .unwrap()
        .contains("\"main\""));
    // A commit is not a branch: no ref is written for it.
    assert!(!dir.join("refs").join(MAIN).exists());
}

#[test]
fn gated_repositories_need_the_token() {
    let (hub, _home, mut opts) = setup();
    let err = resolve(GATED, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::Unauthorized {
                token_sent: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("HF_TOKEN"), "{err}");

    opts.token = Some("hf_wrong".to_string());
    let err = resolve(GATED, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            HubError::Unauthorized {
                token_sent: true,
                ..
            }
        ),
        "{err}"
    );

    opts.token = Some(TOKEN.to_string());
    let path = resolve(GATED, &opts).unwrap();
    assert!(path.join("model.safetensors").is_file());
    let bearer = format!("Bearer {TOKEN}");
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.auth.as_deref() == Some(bearer.as_str())));

    // The token file that `huggingface-cli login` writes is read.
    let home = tempfile::tempdir().unwrap();
    fs::write(home.path().join("token"), format!("{TOKEN}\n")).unwrap();
    let home_text = home.path().to_string_lossy().to_string();
    let from_file = HubOptions::from_lookup(|n| (n == "HF_HOME").then(|| home_text.clone()));
    assert_eq!(from_file.token.as_deref(), Some(TOKEN));
}

#[test]
fn missing_repositories_revisions_and_files_are_named() {
    let (_hub, _home, opts) = setup();
    let err = resolve("nobody/nothing", &opts).unwrap_err();
    assert!(matches!(err, HubError::RepoNotFound { .. }), "{err}");
    assert!(err.to_string().contains("nobody/nothing"));

    let err = resolve(&format!("{CHAT}:no-such-branch"), &opts).unwrap_err();
    assert!(matches!(err, HubError::RevisionNotFound { .. }), "{err}");
    assert!(err.to_string().contains("no-such-branch"));

    let err = resolve(&format!("{GGUF}/absent.gguf"), &opts).unwrap_err();
    assert!(matches!(err, HubError::FileNotFound { .. }), "{err}");
    assert!(err.to_string().contains("model-Q8_0.gguf"), "{err}");
}

#[test]
fn without_a_connection_a_cached_model_still_resolves() {
    let (hub, _home, mut opts) = setup();
    let path = resolve(CHAT, &opts).unwrap();
    drop(hub);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    opts.endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    assert_eq!(resolve(CHAT, &opts).unwrap(), path);
    let err = resolve(&format!("{CHAT}:v1"), &opts).unwrap_err();
    assert!(matches!(err, HubError::Network { .. }), "{err}");
}

#[test]
fn list_and_remove_cached_models() {
    let (_hub, _home, opts) = setup();
    assert!(list_cached(&opts).unwrap().is_empty());
    resolve(CHAT, &opts).unwrap();
    resolve(&format!("{CHAT}:v1"), &opts).unwrap();
    resolve(&format!("{GGUF}:Q4_K_M"), &opts).unwrap();

    let listed = list_cached(&opts).unwrap();
    let summary: Vec<(String, String, Vec<String>, String)> = listed
        .iter()
        .map(|m| {
            (
                m.id.clone(),
                m.revision.clone(),
                m.refs.clone(),
                m.format.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                CHAT.to_string(),
                MAIN.to_string(),
                vec!["main".to_string()],
                "safetensors".to_string()
            ),
            (
                CHAT.to_string(),
                V1.to_string(),
                vec!["v1".to_string()],
                "safetensors".to_string()
            ),
            (
                GGUF.to_string(),
                GGUF_COMMIT.to_string(),
                vec!["main".to_string()],
                "gguf".to_string()
            ),
        ]
    );
    let main_size: u64 = chat_main_files()
        .iter()
        .filter(|(n, _)| *n != "pytorch_model.bin" && *n != "README.md")
        .map(|(_, f)| f.data.len() as u64)
        .sum();
    assert_eq!(listed[0].size_bytes, main_size);
    assert_eq!(
        listed[2].size_bytes,
        fixture(GGUF, GGUF_COMMIT, "model-Q4_K_M.gguf").len() as u64
    );
    assert!(listed[0].path.join("config.json").is_file());

    // One revision.
    let v1_size = listed[1].size_bytes;
    let freed = remove_cached(&opts, &format!("{CHAT}:v1")).unwrap();
    assert!(freed >= v1_size, "{freed} < {v1_size}");
    let listed = list_cached(&opts).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].path.join(SHARD1).is_file());
    assert!(!repo_dir(&opts, CHAT).join("refs/v1").exists());

    // A whole repository.
    let freed = remove_cached(&opts, CHAT).unwrap();
    assert!(freed >= main_size);
    assert!(!repo_dir(&opts, CHAT).exists());
    assert_eq!(list_cached(&opts).unwrap().len(), 1);
    let err = remove_cached(&opts, CHAT).unwrap_err();
    assert!(matches!(err, HubError::NotCached { .. }), "{err}");
    assert!(remove_cached(&opts, "not a repo").is_err());
}

#[test]
fn local_paths_resolve_to_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("m.gguf");
    fs::write(&file, b"GGUF").unwrap();
    let opts = HubOptions::with_cache_dir(dir.path().join("hub"));
    assert_eq!(resolve(&file.to_string_lossy(), &opts).unwrap(), file);
    assert_eq!(
        resolve(&dir.path().to_string_lossy(), &opts).unwrap(),
        dir.path()
    );
    let err = resolve(&dir.path().join("absent.gguf").to_string_lossy(), &opts).unwrap_err();
    assert!(matches!(err, HubError::LocalNotFound { .. }), "{err}");
}

#[test]
fn without_hashes_from_the_api_the_file_headers_name_and_check_the_blobs() {
    let (hub, _home, opts) = setup();
    hub.set(|s| s.plain_api = true);
    let path = resolve(CHAT, &opts).unwrap();
    let dir = repo_dir(&opts, CHAT);
    for name in ["config.json", SHARD1, SHARD2] {
        let expected = fixture(CHAT, MAIN, name);
        assert_eq!(fs::read(path.join(name)).unwrap(), expected, "{name}");
        let blob = if repos()[CHAT].commits[MAIN][name].lfs {
            sha256_hex(&expected)
        } else {
            git_blob_id(&expected)
        };
        assert!(dir.join("blobs").join(blob).is_file(), "{name}");
    }
    assert!(hub.requests().iter().any(|r| r.method == "HEAD"));

    // The sha256 from X-Linked-Etag is still checked.
    let (hub, _home, opts) = setup();
    hub.set(|s| {
        s.plain_api = true;
        s.corrupt = Some(SHARD1.to_string());
    });
    let err = resolve(CHAT, &opts).unwrap_err();
    assert!(
        matches!(&err, HubError::Verification(m) if m.what == "sha256"),
        "{err}"
    );
}
