//! Per-sequence key/value cache.

use half::f16;

/// Element type of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheType {
    F32,
    F16,
}

#[derive(Clone, Debug)]
enum Store {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Store {
    fn truncate(&mut self, n: usize) {
        match self {
            Store::F32(v) => v.truncate(n),
            Store::F16(v) => v.truncate(n),
        }
    }
    fn extend(&mut self, x: &[f32]) {
        match self {
            Store::F32(v) => v.extend_from_slice(x),
            Store::F16(v) => v.extend(x.iter().map(|a| f16::from_f32(*a))),
        }
    }
    fn capacity_bytes(&self) -> usize {
        match self {
            Store::F32(v) => v.capacity() * 4,
            Store::F16(v) => v.capacity() * 2,
        }
    }
}

/// Keys and values of every layer for positions `0..len` of one sequence.
/// Rows are `kv_dim = n_kv_heads * head_dim` values, keys already rotated.
#[derive(Clone, Debug)]
pub struct KvCache {
    keys: Vec<Store>,
    values: Vec<Store>,
    kv_dim: usize,
    len: usize,
    max_len: usize,
}

/// A borrowed view of one layer's cached rows.
pub enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
}

impl Rows<'_> {
    /// Dot product of `q` with the cached values at `row..row + q.len()`.
    #[inline]
    pub fn dot(&self, row: usize, q: &[f32]) -> f32 {
        match self {
            Rows::F32(v) => deepseek_tensor::ops::dot(q, &v[row..row + q.len()]),
            Rows::F16(v) => deepseek_tensor::ops::dot_f16(q, &v[row..row + q.len()]),
        }
    }
    /// `out += w * values[row..row + out.len()]`.
    #[inline]
    pub fn axpy(&self, row: usize, w: f32, out: &mut [f32]) {
        let n = out.len();
        match self {
            Rows::F32(v) => deepseek_tensor::ops::axpy(w, &v[row..row + n], out),
            Rows::F16(v) => deepseek_tensor::ops::axpy_f16(w, &v[row..row + n], out),
        }
    }
}

impl KvCache {
    pub fn new(n_layers: usize, kv_dim: usize, max_len: usize, ty: CacheType) -> KvCache {
        let mk = || match ty {
            CacheType::F32 => Store::F32(Vec::new()),
            CacheType::F16 => Store::F16(Vec::new()),
        };
        KvCache {
            keys: (0..n_layers).map(|_| mk()).collect(),
            values: (0..n_layers).map(|_| mk()).collect(),
            kv_dim,
            len: 0,
            max_len,
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Most positions this cache may hold (the context length).
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Forget positions `n..`, keeping the first `n` (prefix reuse, rollback).
    pub fn truncate(&mut self, n: usize) {
        if n < self.len {
            for s in self.keys.iter_mut().chain(self.values.iter_mut()) {
                s.truncate(n * self.kv_dim);
            }
            self.len = n;
        }
    }

    /// Bytes allocated now.
    pub fn allocated_bytes(&self) -> usize {
        self.keys
            .iter()
            .chain(&self.values)
            .map(|s| s.capacity_bytes())
            .sum()
    }

    /// Bytes a full cache takes: layers × 2 × max_len × kv_dim × element size.
    pub fn bytes_for(n_layers: usize, kv_dim: usize, max_len: usize, ty: CacheType) -> usize {
        let el = match ty {
            CacheType::F32 => 4,
            CacheType::F16 => 2,
        };
        n_layers * 2 * max_len * kv_dim * el
    }

    /// Append rows for layer `layer` (the caller appends the same number to every layer, then
    /// calls [`KvCache::commit`]).
    pub(crate) fn append(&mut self, layer: usize, k: &[f32], v: &[f32]) {
        self.keys[layer].extend(k);
        self.values[layer].extend(v);
    }

    pub(crate) fn commit(&mut self, n: usize) {
        self.len += n;
    }

    pub(crate) fn keys(&self, layer: usize) -> Rows<'_> {
        match &self.keys[layer] {
            Store::F32(v) => Rows::F32(v),
            Store::F16(v) => Rows::F16(v),
        }
    }
    pub(crate) fn values(&self, layer: usize) -> Rows<'_> {
        match &self.values[layer] {
            Store::F32(v) => Rows::F32(v),
            Store::F16(v) => Rows::F16(v),
        }
    }
}
