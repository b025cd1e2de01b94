//! Q4_0, Q4_K, Q5_K and Q6_K weights repacked in groups of 8 rows (`Model::repack_x8`, done at load
//! for GGUF files on CPUs with AVX-512 VNNI) give the same logits, bit for bit, as the file
//! layout: decode steps of one and of two sequences (the packed kernels) and prompts of 20
//! tokens (the tile paths on rebuilt rows); other tensors keep their layout. The packing in
//! the background (as the loader runs it) changes no result while forward passes run.

use deepseek::loader::{Storage, Tensor, TensorSource};
use deepseek::model::{CacheType, Logits, Model, ModelConfig, Naming, SeqInput};
use deepseek_tensor::{quantize, DType, Layout};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

struct Source(HashMap<String, Tensor>);

impl TensorSource for Source {
    fn get(&self, name: &str) -> Option<Tensor> {
        self.0.get(name).cloned()
    }
    fn describe(&self) -> String {
        "synthetic tensors".into()
    }
}

fn rng_vec(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

fn tensor(name: &str, ty: DType, shape: Vec<usize>, seed: &mut u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v = rng_vec(seed, n, scale);
    let bytes = quantize(ty, &v).unwrap();
    let len = bytes.len();
    Tensor::new(
        name.to_string(),
        ty,
        shape,
        Arc::new(Storage::Owned(bytes)),
        0,
        len,
    )
    .unwrap()
}

/// A 2-layer LLaMA of hidden size 256 (GQA: 4 query heads, 2 key/value heads), FFN 512,
/// vocabulary 72: matrices Q4_K, except the output head and the first layer's value
/// projection (Q6_K), one FFN down projection (Q8_0), the second layer's attention output
/// and FFN up projection (Q4_0) and its FFN gate (Q5_K); norms F32.
fn model() -> Model {
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4,
        "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 72,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
    });
    let config = ModelConfig::from_hf_value(&cfg, Path::new("config.json")).unwrap();
    let mut seed = 0x5eed_1234_abcd_0001u64;
    let mut t = HashMap::new();
    let mut put = |name: String, ty: DType, shape: Vec<usize>, scale: f32| {
        let x = tensor(&name, ty, shape, &mut seed, scale);
        t.insert(name, x);
    };
    put("token_embd.weight".into(), DType::Q4_K, vec![72, 256], 2.0);
    put("output.weight".into(), DType::Q6_K, vec![72, 256], 0.5);
    put("output_norm.weight".into(), DType::F32, vec![256], 2.0);
    for i in 0..2 {
        let b = |s: &str| format!("blk.{i}.{s}.weight");
        put(b("attn_norm"), DType::F32, vec![256], 2.0);
        put(b("ffn_norm"), DType::F32, vec![256], 2.0);
        put(b("attn_q"), DType::Q4_K, vec![256, 256], 0.3);
        put(b("attn_k"), DType::Q4_K, vec![128, 256], 0.3);
        let v = if i == 0 { DType::Q6_K } else { DType::Q4_K };
        put(b("attn_v"), v, vec![128, 256], 0.3);
        let q4 = if i == 1 { DType::Q4_0 } else { DType::Q4_K };
        put(b("attn_output"), q4, vec![256, 256], 0.3);
        let gate = if i == 1 { DType::Q5_K } else { DType::Q4_K };
        put(b("ffn_gate"), gate, vec![512, 256], 0.3);
        put(b("ffn_up"), q4, vec![512, 256], 0.3);
        let down = if i == 0 { DType::Q4_K } else { DType::Q8_0 };
        put(b("ffn_down"), down, vec![256, 512], 0.3);
    }
    Model::load(config, &Source(t), Naming::Gguf).unwrap()
}

/// Logits of a 20-token prompt (all positions), then 6 decode steps of two sequences
/// together and 3 of one alone.
fn run(m: &Model) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    let prompt: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % 72).collect();
    let (mut c1, mut c2) = (
        m.new_cache(64, CacheType::F32),
        m.new_cache(64, CacheType::F32),
    );
    let mut s = [SeqInput {
        tokens: &prompt,
        cache: &mut c1,
        logits: Logits::All,
    }];
    out.extend(m.forward(&mut s).unwrap());
    let mut s = [SeqInput {
        tokens: &prompt[..5],
        cache: &mut c2,
        logits: Logits::Last,
    }];
    out.extend(m.forward(&mut s).unwrap());
    for step in 0..6u32 {
        let (a, b) = ([step % 72], [(step * 5 + 1) % 72]);
        let mut s = [
            SeqInput {
                tokens: &a,
                cache: &mut c1,
                logits: Logits::Last,
            },
            SeqInput {
                tokens: &b,
                cache: &mut c2,
                logits: Logits::Last,
            },
        ];
        out.extend(m.forward(&mut s).unwrap());
    }
    for step in 0..3u32 {
        let a = [(step * 11) % 72];
        let mut s = [SeqInput {
            tokens: &a,
            cache: &mut c1,
            logits: Logits::Last,
        }];
        out.extend(m.forward(&mut s).unwrap());
    }
    out
}

#[test]
fn repacked_weights_give_the_same_logits() {
    let plain = model();
    let packed = model();
    // 7 matrices in layer 0, 6 in layer 1 (its down projection is Q8_0; two are Q4_0, one
    // Q5_K), and the Q6_K head; not the embedding.
    assert_eq!(packed.repack_x8().unwrap(), 14);
    assert_eq!(packed.repack_x8().unwrap(), 0, "repacking twice");
    let (a, b) = (run(&plain), run(&packed));
    assert_eq!(a.len(), b.len());
    let mut values = 0;
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.len(), y.len());
        for (j, (u, v)) in x.iter().zip(y).enumerate() {
            assert!(u.is_finite(), "output {i} value {j}: {u}");
            assert_eq!(u.to_bits(), v.to_bits(), "output {i} value {j}: {u} vs {v}");
            values += 1;
        }
    }
    assert_eq!(values, (20 + 1 + 12 + 3) * 72);
}

#[test]
fn background_repacking_changes_no_result_and_packs_every_matrix() {
    let plain = model();
    let expect = run(&plain);
    let m = model();
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let job = m.repack_x8_background(Some(pool.clone())).unwrap();
    // Forward passes while the matrices are swapped one after another, and after.
    for _ in 0..4 {
        assert_eq!(bits(&pool.install(|| run(&m))), bits(&expect));
    }
    let (count, secs) = job.wait().unwrap();
    assert_eq!(count, 14);
    assert!(secs >= 0.0);
    assert_eq!(bits(&run(&m)), bits(&expect));
    assert_eq!(m.repack_x8().unwrap(), 0, "all packed already");
    // The model dropped before its packing ends: the packing stops without error.
    let early = model();
    let job = early.repack_x8_background(None).unwrap();
    drop(early);
    assert!(job.wait().unwrap().0 <= 14);
}

/// A job that holds a worker of the pool until the packing is done (as the server's scheduler
/// loop holds one for good) does not stall a packing in that pool: its pieces never wait inside
/// the pool, where a waiting worker could take up the blocking job and not come back. The
/// blocking job arrives at varied moments of a 4096x4096 Q4_K matrix's packing.
#[test]
fn packing_in_a_pool_finishes_beside_a_job_that_blocks_a_worker() {
    let pool = Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap(),
    );
    let mut seed = 5;
    let t = Arc::new(tensor("big", DType::Q4_K, vec![4096, 4096], &mut seed, 1.0));
    for round in 0..12u64 {
        let (p, t2) = (pool.clone(), t.clone());
        let (done_tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(t2.pack_x8_in(Some(&p)).map(|p| p.is_some()));
        });
        std::thread::sleep(std::time::Duration::from_micros(300 * round));
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _ = blocked.recv();
        });
        let r = done.recv_timeout(std::time::Duration::from_secs(30));
        release.send(()).unwrap();
        let packed = r
            .unwrap_or_else(|_| panic!("round {round}: packing stuck behind the blocking job"))
            .unwrap();
        assert!(packed);
    }
}

fn bits(v: &[Vec<f32>]) -> Vec<Vec<u32>> {
    v.iter()
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect()
}

#[test]
fn only_matrices_of_packed_types_in_8_row_groups_are_packed() {
    let mut seed = 9;
    let q4k = tensor("a", DType::Q4_K, vec![16, 256], &mut seed, 1.0);
    let p = q4k.pack_x8().unwrap().expect("packed");
    assert_eq!(p.layout(), Layout::X8);
    assert_eq!(p.bytes().len(), q4k.bytes().len());
    assert_eq!(p.mat().unwrap().layout, Layout::X8);
    assert!(p.pack_x8().unwrap().is_none(), "already packed");
    let odd = tensor("b", DType::Q4_K, vec![12, 256], &mut seed, 1.0);
    assert!(odd.pack_x8().unwrap().is_none());
    let q8 = tensor("c", DType::Q8_0, vec![16, 256], &mut seed, 1.0);
    assert!(q8.pack_x8().unwrap().is_none());
    let q5 = tensor("f", DType::Q5_K, vec![16, 256], &mut seed, 1.0);
    assert_eq!(q5.pack_x8().unwrap().expect("packed").layout(), Layout::X8);
    let q6 = tensor("e", DType::Q6_K, vec![16, 256], &mut seed, 1.0);
    assert_eq!(q6.pack_x8().unwrap().expect("packed").layout(), Layout::X8);
    let q40 = tensor("d", DType::Q4_0, vec![8, 64], &mut seed, 1.0);
    assert_eq!(q40.pack_x8().unwrap().expect("packed").layout(), Layout::X8);
}
