//! The LLaMA / DeepSeek LLM decoder. One implementation for multi-head (7B) and grouped-query
//! (67B) attention: MHA is GQA with one query head per key/value head.

use super::config::{ModelConfig, RopeStyle};
use super::kv_cache::KvCache;
use crate::error::{Error, Result};
use crate::loader::{Tensor, TensorSource};
use deepseek_tensor::{matmul, ops, MatRef};
use rayon::prelude::*;
use std::sync::{Arc, PoisonError, RwLock};

/// How tensor names are spelled in the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Naming {
    /// `model.layers.0.self_attn.q_proj.weight`, ...
    HuggingFace,
    /// `blk.0.attn_q.weight`, ...
    Gguf,
}

/// A weight matrix, which may be replaced while the model runs by a copy in another layout
/// that gives the same results bit for bit (the 8-row packing, done in the background): a
/// forward pass takes the current tensor for each product, and an old copy lives on for as
/// long as a product still reads it.
pub struct Weight(RwLock<Arc<Tensor>>);

impl Weight {
    fn new(t: Tensor) -> Arc<Weight> {
        Arc::new(Weight(RwLock::new(Arc::new(t))))
    }

    /// The current tensor.
    pub fn get(&self) -> Arc<Tensor> {
        // The lock guards a plain swap of an `Arc`: a panic while it is held leaves a valid
        // tensor behind, so a poisoned lock is still usable.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, t: Tensor) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(t);
    }

    /// Replace the tensor by its 8-row packed copy where it packs; whether it did. The old
    /// copy's mapped file pages are released once no product reads it any more (a product
    /// that took it before the swap holds it until it ends; waited for up to 10 s, after
    /// which the pages stay, costing only memory).
    fn pack_x8(&self, pool: Option<&rayon::ThreadPool>) -> Result<bool> {
        let old = self.get();
        let Some(p) = old.pack_x8_in(pool)? else {
            return Ok(false);
        };
        self.set(p);
        let t = std::time::Instant::now();
        while Arc::strong_count(&old) > 1 && t.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if Arc::strong_count(&old) == 1 {
            old.release_mapped_pages();
        }
        Ok(true)
    }
}

/// The 8-row packing of a model's weights running on a thread of its own
/// ([`Model::repack_x8_background`]).
pub struct Repacking {
    handle: std::thread::JoinHandle<Result<usize>>,
    started: std::time::Instant,
}

impl Repacking {
    /// Wait until every matrix is packed: how many were, and the seconds since the start.
    pub fn wait(self) -> Result<(usize, f64)> {
        let n = self
            .handle
            .join()
            .map_err(|_| Error::Invalid("the repacking thread panicked".into()))??;
        Ok((n, self.started.elapsed().as_secs_f64()))
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Arc<Weight>,
    wk: Arc<Weight>,
    wv: Arc<Weight>,
    wo: Arc<Weight>,
    ffn_norm: Vec<f32>,
    w_gate: Arc<Weight>,
    w_up: Arc<Weight>,
    w_down: Arc<Weight>,
}

/// A loaded decoder: weights in their stored types, borrowed from mapped files.
pub struct Model {
    pub config: ModelConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: Arc<Weight>,
    /// Whether `lm_head` is the token embedding (tied, and absent from the file).
    head_is_embedding: bool,
    inv_freq: Vec<f32>,
}

/// Which logits a sequence in a batch wants back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// One sequence's part of a forward pass: new tokens appended after what its cache holds.
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    pub cache: &'a mut KvCache,
    pub logits: Logits,
}

fn fetch(src: &dyn TensorSource, name: &str, shape: &[usize]) -> Result<Tensor> {
    let t = src
        .get(name)
        .ok_or_else(|| Error::tensor(name, format!("missing from {}", src.describe())))?;
    if t.shape != shape {
        return Err(Error::tensor(
            name,
            format!(
                "expected shape {shape:?}, found {:?} in {}",
                t.shape,
                src.describe()
            ),
        ));
    }
    // A row must be a whole number of blocks of the stored type.
    if shape.len() == 2 {
        t.mat()?;
    }
    Ok(t)
}

fn fetch_norm(src: &dyn TensorSource, name: &str, n: usize) -> Result<Vec<f32>> {
    let t = fetch(src, name, &[n])?;
    t.to_f32()
}

impl Model {
    /// Check every expected tensor for presence and shape, then build the model.
    pub fn load(config: ModelConfig, src: &dyn TensorSource, naming: Naming) -> Result<Model> {
        let c = &config;
        let h = c.hidden_size;
        let (qd, kvd, ff) = (c.q_dim(), c.kv_dim(), c.intermediate_size);
        let n = |hf: &str, gguf: &str| -> String {
            match naming {
                Naming::HuggingFace => hf.to_string(),
                Naming::Gguf => gguf.to_string(),
            }
        };
        let embed_name = n("model.embed_tokens.weight", "token_embd.weight");
        let embed = fetch(src, &embed_name, &[c.vocab_size, h])?;
        let mut layers = Vec::with_capacity(c.num_layers);
        for i in 0..c.num_layers {
            let hf = |s: &str| format!("model.layers.{i}.{s}.weight");
            let gg = |s: &str| format!("blk.{i}.{s}.weight");
            let name = |a: &str, b: &str| n(&hf(a), &gg(b));
            layers.push(Layer {
                attn_norm: fetch_norm(src, &name("input_layernorm", "attn_norm"), h)?,
                wq: Weight::new(fetch(src, &name("self_attn.q_proj", "attn_q"), &[qd, h])?),
                wk: Weight::new(fetch(src, &name("self_attn.k_proj", "attn_k"), &[kvd, h])?),
                wv: Weight::new(fetch(src, &name("self_attn.v_proj", "attn_v"), &[kvd, h])?),
                wo: Weight::new(fetch(
                    src,
                    &name("self_attn.o_proj", "attn_output"),
                    &[h, qd],
                )?),
                ffn_norm: fetch_norm(src, &name("post_attention_layernorm", "ffn_norm"), h)?,
                w_gate: Weight::new(fetch(src, &name("mlp.gate_proj", "ffn_gate"), &[ff, h])?),
                w_up: Weight::new(fetch(src, &name("mlp.up_proj", "ffn_up"), &[ff, h])?),
                w_down: Weight::new(fetch(src, &name("mlp.down_proj", "ffn_down"), &[h, ff])?),
            });
        }
        let norm = fetch_norm(src, &n("model.norm.weight", "output_norm.weight"), h)?;
        let head_name = n("lm_head.weight", "output.weight");
        let (lm_head, head_is_embedding) = if c.tie_word_embeddings {
            match src.get(&head_name) {
                Some(_) => (fetch(src, &head_name, &[c.vocab_size, h])?, false),
                None => (embed.clone(), true),
            }
        } else {
            (fetch(src, &head_name, &[c.vocab_size, h])?, false)
        };
        // inv_freq in f32 as transformers computes it: 1 / theta^(2j/d), divided by the linear factor.
        let d = c.head_dim;
        let inv_freq = (0..d / 2)
            .map(|j| {
                let e = (2 * j) as f32 / d as f32;
                1.0 / c.rope_theta.powf(e) / c.rope_scale
            })
            .collect();
        Ok(Model {
            config,
            embed,
            layers,
            norm,
            lm_head: Weight::new(lm_head),
            head_is_embedding,
            inv_freq,
        })
    }

    /// The weight matrices that the 8-row packing may take: every layer's seven and the
    /// output head, unless it is the token embedding (which keeps its layout: it is read a row
    /// at a time).
    fn packable_weights(&self) -> Vec<Arc<Weight>> {
        let mut v: Vec<Arc<Weight>> = Vec::new();
        for l in &self.layers {
            for w in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                v.push(w.clone());
            }
        }
        if !self.head_is_embedding {
            v.push(self.lm_head.clone());
        }
        v
    }

    /// Repacks the Q4_0, Q4_K, Q5_K and Q6_K weight matrices in groups of 8 rows for decode
    /// ([`Tensor::pack_x8`]): the same results bit for bit, in fewer instructions per weight.
    /// The token embedding keeps its layout, and so does an output head that is the embedding.
    /// Returns how many matrices were repacked.
    pub fn repack_x8(&self) -> Result<usize> {
        let mut count = 0;
        for w in self.packable_weights() {
            count += usize::from(w.pack_x8(None)?);
        }
        Ok(count)
    }

    /// [`Model::repack_x8`] on a thread of its own, one matrix after another, while the model
    /// is in use: each matrix is swapped for its packed copy when that is complete. Results do
    /// not change at any point (the packed kernels compute the same values bit for bit); only
    /// the speed does. The packing runs in `pool` (give the one the forward passes use) in
    /// pieces of about a megabyte, so a forward pass never waits long behind it. It stops
    /// early when the model is dropped.
    pub fn repack_x8_background(&self, pool: Option<Arc<rayon::ThreadPool>>) -> Result<Repacking> {
        let weights: Vec<std::sync::Weak<Weight>> =
            self.packable_weights().iter().map(Arc::downgrade).collect();
        let started = std::time::Instant::now();
        let handle = std::thread::Builder::new()
            .name("repack".into())
            .spawn(move || {
                let mut count = 0;
                for w in weights {
                    let Some(w) = w.upgrade() else { break };
                    match w.pack_x8(pool.as_deref()) {
                        Ok(packed) => count += usize::from(packed),
                        Err(e) => {
                            // The matrices not yet packed keep their layout and their results.
                            tracing::warn!("repacking stopped, the rest kept as loaded: {e}");
                            return Err(e);
                        }
                    }
                }
                Ok(count)
            })
            .map_err(|e| Error::Invalid(format!("cannot start the repacking thread: {e}")))?;
        Ok(Repacking { handle, started })
    }

    /// A new, empty cache for one sequence of at most `max_len` positions.
    pub fn new_cache(&self, max_len: usize, ty: super::kv_cache::CacheType) -> KvCache {
        KvCache::new(self.config.num_layers, self.config.kv_dim(), max_len, ty)
    }

    fn rope(&self, x: &mut [f32], pos: usize) {
        let d = self.config.head_dim;
        let half = d / 2;
        let p = pos as f32;
        for head in x.chunks_exact_mut(d) {
            for (j, f) in self.inv_freq.iter().enumerate() {
                let (sin, cos) = (p * f).sin_cos();
                let (a, b) = match self.config.rope_style {
                    RopeStyle::NeoX => (j, j + half),
                    RopeStyle::Interleaved => (2 * j, 2 * j + 1),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * cos - x1 * sin;
                head[b] = x1 * cos + x0 * sin;
            }
        }
    }

    /// Run new tokens of one or more sequences through the model in one pass over the weights.
    ///
    /// Each sequence's tokens are placed after the positions its cache already holds, and its
    /// cache is extended. Returns, per sequence, the logits it asked for (`vocab_size` values per
    /// row: the last row, all rows, or none).
    pub fn forward(&self, seqs: &mut [SeqInput<'_>]) -> Result<Vec<Vec<f32>>> {
        let c = &self.config;
        let (h, qd, kvd, ff) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        // Rows of the batch: (sequence, position).
        let mut rows: Vec<(usize, usize)> = Vec::new();
        for (s, seq) in seqs.iter().enumerate() {
            let start = seq.cache.len();
            if start + seq.tokens.len() > seq.cache.max_len() {
                return Err(Error::Invalid(format!(
                    "context full: {} cached + {} new tokens exceed the context length of {}",
                    start,
                    seq.tokens.len(),
                    seq.cache.max_len()
                )));
            }
            for i in 0..seq.tokens.len() {
                rows.push((s, start + i));
            }
        }
        let n = rows.len();
        if n == 0 {
            return Ok(seqs.iter().map(|_| Vec::new()).collect());
        }
        // Embeddings.
        let embed = self.embed.mat()?;
        let mut x = vec![0f32; n * h];
        let all_tokens: Vec<u32> = seqs.iter().flat_map(|s| s.tokens.iter().copied()).collect();
        for (r, &tok) in all_tokens.iter().enumerate() {
            if tok as usize >= c.vocab_size {
                return Err(Error::Invalid(format!(
                    "token id {tok} is out of range: the vocabulary has {} ids",
                    c.vocab_size
                )));
            }
            deepseek_tensor::dequantize_row(&embed, tok as usize, &mut x[r * h..(r + 1) * h])?;
        }

        let mut a = vec![0f32; n * h];
        let mut q = vec![0f32; n * qd];
        let mut k = vec![0f32; n * kvd];
        let mut v = vec![0f32; n * kvd];
        let mut att = vec![0f32; n * qd];
        let mut o = vec![0f32; n * h];
        let mut g = vec![0f32; n * ff];
        let mut u = vec![0f32; n * ff];
        let mm = |w: &Weight, inp: &[f32], out: &mut [f32]| -> Result<()> {
            let w = w.get();
            let m: MatRef = w.mat()?;
            matmul(&m, inp, n, out)?;
            Ok(())
        };

        for (li, layer) in self.layers.iter().enumerate() {
            for (xr, ar) in x.chunks_exact(h).zip(a.chunks_exact_mut(h)) {
                ops::rmsnorm(xr, &layer.attn_norm, c.rms_norm_eps, ar);
            }
            mm(&layer.wq, &a, &mut q)?;
            mm(&layer.wk, &a, &mut k)?;
            mm(&layer.wv, &a, &mut v)?;
            for (r, &(_, pos)) in rows.iter().enumerate() {
                self.rope(&mut q[r * qd..(r + 1) * qd], pos);
                self.rope(&mut k[r * kvd..(r + 1) * kvd], pos);
            }
            // Append this layer's keys and values to each sequence's cache.
            let mut r0 = 0;
            for seq in seqs.iter_mut() {
                let m = seq.tokens.len();
                seq.cache.append(
                    li,
                    &k[r0 * kvd..(r0 + m) * kvd],
                    &v[r0 * kvd..(r0 + m) * kvd],
                );
                r0 += m;
            }
            self.attention(li, seqs, &rows, &q, &mut att);
            mm(&layer.wo, &att, &mut o)?;
            x.iter_mut().zip(&o).for_each(|(xi, oi)| *xi += oi);

            for (xr, ar) in x.chunks_exact(h).zip(a.chunks_exact_mut(h)) {
                ops::rmsnorm(xr, &layer.ffn_norm, c.rms_norm_eps, ar);
            }
            mm(&layer.w_gate, &a, &mut g)?;
            mm(&layer.w_up, &a, &mut u)?;
            g.par_chunks_mut(ff)
                .zip(u.par_chunks(ff))
                .for_each(|(gr, ur)| ops::silu_mul(gr, ur));
            mm(&layer.w_down, &g, &mut o)?;
            x.iter_mut().zip(&o).for_each(|(xi, oi)| *xi += oi);
        }
        for seq in seqs.iter_mut() {
            let m = seq.tokens.len();
            seq.cache.commit(m);
        }

        // Final norm and LM head, only for the rows whose logits are wanted.
        let mut wanted: Vec<usize> = Vec::new();
        let mut r0 = 0;
        for seq in seqs.iter() {
            let m = seq.tokens.len();
            match seq.logits {
                Logits::None => {}
                Logits::Last => {
                    if m > 0 {
                        wanted.push(r0 + m - 1)
                    }
                }
                Logits::All => wanted.extend(r0..r0 + m),
            }
            r0 += m;
        }
        let nw = wanted.len();
        let mut normed = vec![0f32; nw * h];
        for (i, &r) in wanted.iter().enumerate() {
            ops::rmsnorm(
                &x[r * h..(r + 1) * h],
                &self.norm,
                c.rms_norm_eps,
                &mut normed[i * h..(i + 1) * h],
            );
        }
        let vocab = c.vocab_size;
        let mut logits = vec![0f32; nw * vocab];
        if nw > 0 {
            let head = self.lm_head.get();
            matmul(&head.mat()?, &normed, nw, &mut logits)?;
        }
        // Hand each sequence its rows.
        let mut out = Vec::with_capacity(seqs.len());
        let mut next = 0;
        for seq in seqs.iter() {
            let count = match seq.logits {
                Logits::None => 0,
                Logits::Last => usize::from(!seq.tokens.is_empty()),
                Logits::All => seq.tokens.len(),
            };
            out.push(logits[next * vocab..(next + count) * vocab].to_vec());
            next += count;
        }
        Ok(out)
    }

    /// Causal attention of every batch row over its own sequence's cache.
    fn attention(
        &self,
        layer: usize,
        seqs: &[SeqInput<'_>],
        rows: &[(usize, usize)],
        q: &[f32],
        att: &mut [f32],
    ) {
        let c = &self.config;
        let d = c.head_dim;
        let group = c.num_heads / c.num_kv_heads;
        let kvd = c.kv_dim();
        let scale = 1.0 / (d as f32).sqrt();
        att.par_chunks_mut(d).enumerate().for_each(|(idx, out)| {
            let (r, head) = (idx / c.num_heads, idx % c.num_heads);
            let (s, pos) = rows[r];
            let cache = &seqs[s].cache;
            let keys = cache.keys(layer);
            let values = cache.values(layer);
            let kvh = head / group;
            let qh = &q[r * c.q_dim() + head * d..r * c.q_dim() + (head + 1) * d];
            let mut scores: Vec<f32> = (0..=pos)
                .map(|j| keys.dot(j * kvd + kvh * d, qh) * scale)
                .collect();
            ops::softmax(&mut scores);
            out.fill(0.0);
            for (j, p) in scores.iter().enumerate() {
                values.axpy(j * kvd + kvh * d, *p, out);
            }
        });
    }

    /// Bytes of weights read to produce one token (every matrix once).
    pub fn weight_bytes(&self) -> usize {
        let mut total =
            self.embed.bytes().len() / self.config.vocab_size + self.lm_head.get().bytes().len();
        for l in &self.layers {
            for t in [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down] {
                total += t.get().bytes().len();
            }
        }
        total
    }
}
