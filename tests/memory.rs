//! A BF16 model is used where it lies, memory-mapped: resident memory after loading and running
//! it grows by at most its file size plus 10% plus the KV cache (no f32 copy of the weights).
//! This file holds a single test so that nothing else runs in its process meanwhile.

mod common;
use common::*;
use deepseek::model::{CacheType, KvCache, Logits, SeqInput};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

#[test]
fn bf16_model_stays_within_its_file_size() {
    let dir = model_dir("tiny-mha");
    let file = std::fs::metadata(dir.join("model.safetensors"))
        .unwrap()
        .len();
    // Warm up the allocator and the thread pool so that their own memory is not counted.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| ());
    let before = rss_bytes();
    let loaded = deepseek::loader::hf::load_dir(&dir).expect("load");
    let model = &loaded.model;
    let ctx = 64;
    let mut cache = model.new_cache(ctx, CacheType::F32);
    let ids: Vec<u32> = (0..32).map(|i| 100 + i * 7).collect();
    let mut seqs = [SeqInput {
        tokens: &ids,
        cache: &mut cache,
        logits: Logits::Last,
    }];
    pool.install(|| model.forward(&mut seqs)).expect("forward");
    let after = rss_bytes();
    let c = &model.config;
    let kv = KvCache::bytes_for(c.num_layers, c.kv_dim(), ctx, CacheType::F32) as u64;
    let grown = after.saturating_sub(before);
    let limit = file + file / 10 + kv;
    eprintln!("file {file} B, RSS grew {grown} B, limit {limit} B");
    assert!(
        grown <= limit,
        "RSS grew by {grown} bytes; limit {limit} (file {file} + 10% + KV {kv})"
    );
    // The LM head (half the file) and every layer were read; of the embedding matrix only the
    // rows of the 32 prompt tokens. An f32 copy of the weights would exceed the limit above.
    assert!(
        grown >= file / 3,
        "RSS grew by only {grown} bytes: did the forward pass read the weights?"
    );
}
