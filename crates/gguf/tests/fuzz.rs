//! Seeded fuzz-style checks: truncations and random corruptions of a valid file must give
//! `Ok` or `Err`, never a panic, and any file that opens has all tensor data in bounds.

mod common;

use common::Rng;
use deepseek_gguf::{DType, GgufFile, GgufWriter, TensorSpec, Value};

/// A small valid file with several value types and three tensors.
fn sample() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sample.gguf");
    let kv = |k: &str, v: Value| (k.to_string(), v);
    let meta = vec![
        kv("general.architecture", Value::String("llama".into())),
        kv("llama.block_count", Value::U32(2)),
        kv("llama.rope.freq_base", Value::F32(10000.0)),
        kv(
            "tokenizer.ggml.tokens",
            Value::Array(vec![
                Value::String("<s>".into()),
                Value::String("a".into()),
                Value::String("bc".into()),
            ]),
        ),
        kv(
            "tokenizer.ggml.scores",
            Value::Array(vec![Value::F32(0.0); 3]),
        ),
        kv("flag", Value::Bool(true)),
        kv(
            "nested",
            Value::Array(vec![Value::Array(vec![Value::I64(-1)])]),
        ),
    ];
    let specs = vec![
        TensorSpec::new("token_embd.weight", vec![32, 3], DType::Q8_0),
        TensorSpec::new("norm.weight", vec![8], DType::F32),
        TensorSpec::new("blk.0.attn_q.weight", vec![32, 2], DType::Q4_1),
    ];
    let mut rng = Rng::new(99);
    let mut sink = GgufWriter::new(meta, specs.clone(), 32)
        .unwrap()
        .create(&path)
        .unwrap();
    for t in &specs {
        let rows: u64 = t.dims[1..].iter().product();
        let n = t.dtype.row_bytes(t.dims[0] as usize).unwrap() * rows as usize;
        sink.write_tensor(&t.name, &rng.bytes(n)).unwrap();
    }
    sink.finish().unwrap();
    std::fs::read(&path).unwrap()
}

/// Whatever opened must be internally consistent and in bounds.
fn check_consistent(f: &GgufFile) {
    let len = f.mmap().len() as u64;
    assert!(f.alignment().is_power_of_two());
    assert_eq!(f.data_start() % f.alignment(), 0);
    for t in f.tensors() {
        assert!(t.offset >= f.data_start());
        assert!(t.offset.checked_add(t.size).is_some_and(|end| end <= len));
        assert_eq!(f.tensor_data(t).len() as u64, t.size);
        assert_eq!(t.offset % f.alignment(), 0);
        assert!(std::ptr::eq(f.tensor(&t.name).unwrap(), t));
    }
    for (k, v) in f.metadata() {
        assert_eq!(f.get(k), Some(v));
    }
}

#[test]
fn sample_is_valid() {
    let f = GgufFile::from_bytes("sample.gguf", sample()).unwrap();
    assert_eq!(f.tensors().len(), 3);
    check_consistent(&f);
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    for cut in 0..bytes.len() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        match GgufFile::open(&path) {
            // Cutting only the final tensor's padding is harmless; anything earlier is not.
            Ok(f) => {
                check_consistent(&f);
                let last = f.tensors().iter().map(|t| t.offset + t.size).max().unwrap();
                assert!(cut as u64 >= last, "cut at {cut} opened");
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains("cut.gguf"), "cut at {cut}: {msg}");
            }
        }
    }
}

/// One random corruption: flip bits, overwrite bytes, or plant an extreme 32/64-bit value.
fn mutate(rng: &mut Rng, bytes: &mut [u8]) {
    let n = bytes.len() as u64;
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(n) as usize;
        match rng.below(4) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.next_u64() as u8,
            2 => {
                let v: u64 = match rng.below(6) {
                    0 => 0,
                    1 => u64::MAX,
                    2 => 1 << 63,
                    3 => 1 << rng.below(64),
                    4 => rng.below(n * 2),
                    _ => rng.next_u64(),
                };
                let end = (at + 8).min(bytes.len());
                let b = v.to_le_bytes();
                bytes[at..end].copy_from_slice(&b[..end - at]);
            }
            _ => {
                let end = (at + 4).min(bytes.len());
                let b = (rng.below(40) as u32).to_le_bytes();
                bytes[at..end].copy_from_slice(&b[..end - at]);
            }
        }
    }
}

#[test]
fn random_corruptions_never_panic() {
    let base = sample();
    let mut rng = Rng::new(0x5eed_9e0f);
    let (mut ok, mut err) = (0, 0);
    for i in 0..4000 {
        let mut bytes = base.clone();
        mutate(&mut rng, &mut bytes);
        match GgufFile::from_bytes(format!("mutant-{i}.gguf"), bytes) {
            Ok(f) => {
                ok += 1;
                check_consistent(&f);
            }
            Err(e) => {
                err += 1;
                assert!(e.to_string().contains(&format!("mutant-{i}.gguf")), "{e}");
            }
        }
    }
    // Both outcomes occur, so the loop exercises the parser and the validators.
    assert!(ok > 100 && err > 100, "ok {ok}, err {err}");
}

#[test]
fn random_corruptions_through_open() {
    let base = sample();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut rng = Rng::new(12345);
    for _ in 0..300 {
        let mut bytes = base.clone();
        mutate(&mut rng, &mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(f) = GgufFile::open(&path) {
            check_consistent(&f);
        }
    }
}
