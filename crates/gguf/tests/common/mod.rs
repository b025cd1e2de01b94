//! Helpers shared by the integration tests: a hand-written GGUF byte builder, a seeded
//! random generator, and file helpers.
#![allow(dead_code)]

use deepseek_gguf::{GgufError, GgufFile};
use std::path::PathBuf;

/// Builds GGUF bytes field by field (little-endian), for hand-made and corrupt files.
#[derive(Default, Clone)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    pub fn new() -> Self {
        Bytes(Vec::new())
    }
    /// Magic, version, tensor count, metadata count.
    pub fn header(version: u32, n_tensors: u64, n_kv: u64) -> Self {
        Bytes::new()
            .raw(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(self, v: u8) -> Self {
        self.raw(&[v])
    }
    pub fn u32(self, v: u32) -> Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u64(self, v: u64) -> Self {
        self.raw(&v.to_le_bytes())
    }
    /// A GGUF string: u64 length + bytes.
    pub fn str(self, s: &str) -> Self {
        self.str_bytes(s.as_bytes())
    }
    pub fn str_bytes(self, b: &[u8]) -> Self {
        self.u64(b.len() as u64).raw(b)
    }
    /// A metadata entry with a u32 value.
    pub fn kv_u32(self, key: &str, v: u32) -> Self {
        self.str(key).u32(4).u32(v)
    }
    /// A metadata entry with a string value.
    pub fn kv_str(self, key: &str, v: &str) -> Self {
        self.str(key).u32(8).str(v)
    }
    /// A tensor info.
    pub fn tensor(mut self, name: &str, dims: &[u64], ggml_type: u32, offset: u64) -> Self {
        self = self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self = self.u64(d);
        }
        self.u32(ggml_type).u64(offset)
    }
    /// Zero padding up to the next multiple of `align`.
    pub fn pad(mut self, align: usize) -> Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Writes `bytes` to a temporary file named `name` and opens it with [`GgufFile::open`].
/// The directory is returned so the file outlives the call.
pub fn open_bytes(name: &str, bytes: &[u8]) -> (tempfile::TempDir, Result<GgufFile, GgufError>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write test file");
    let r = GgufFile::open(&path);
    (dir, r)
}

/// Opens `bytes` (as a file named `name`), requires an error, and requires its message to
/// contain the file name and each of `needles`. Returns the error.
pub fn expect_err(name: &str, bytes: &[u8], needles: &[&str]) -> GgufError {
    let (_dir, r) = open_bytes(name, bytes);
    let err = match r {
        Ok(_) => panic!("{name}: expected an error, the file opened"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains(name),
        "{name}: message does not name the file: {msg}"
    );
    for n in needles {
        assert!(msg.contains(n), "{name}: message lacks {n:?}: {msg}");
    }
    err
}

/// A small seeded generator (xorshift64*), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}
