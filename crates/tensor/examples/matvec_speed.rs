//! Times decode-shaped matvecs (n = 1) on 7B-sized matrices and reports the weight bytes
//! streamed per second, next to a plain read-bandwidth measurement.
//!
//! `cargo run --release -p deepseek-tensor --example matvec_speed [TYPE ...] [--prefill N]`
//!
//! Several copies of each matrix (≥ 256 MB in all) are cycled so the weights come from DRAM,
//! not from the L3 cache, as in real decoding; each figure is the best of several ~20 ms
//! batches (the machine may be shared). Environment knobs:
//! `MV_SHAPES=64x4096,...` other shapes; `MV_CACHED=1` one copy (cache-resident: kernel
//! throughput); `MV_NOBW=1` skip the bandwidth measurement; `MV_DECODE=1` run the seven
//! matvecs of a 7B layer in sequence over 4 layers and estimate tokens/s; `MV_HUGE=1` put the
//! weights and the bandwidth buffer in memory advised for transparent huge pages (2 MB pages
//! instead of 4 KB ones: fewer TLB misses; a memory-mapped model file gets 4 KB pages).

use deepseek_tensor::{matmul, pack_x8, packable_x8, DType, MatRef};
use std::time::{Duration, Instant};

fn rng_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.extend_from_slice(&s.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// Random valid weights: random bytes with small finite f16 scales.
fn weights(t: DType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let mut b = rng_bytes(t.row_bytes(cols).unwrap() * rows, seed);
    let offs: &[usize] = match t {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q6_K => &[208],
        DType::F16 => {
            b.chunks_mut(2).for_each(|c| c[1] &= 0x3b);
            &[]
        }
        // Exponents 2^-7..2^0 with either sign: no subnormal weights (which real weights do
        // not have, and which slow float multiplications down on some CPUs).
        DType::BF16 => {
            b.chunks_mut(2).for_each(|c| c[1] = (c[1] & 0x83) | 0x3c);
            &[]
        }
        DType::F32 => {
            b.chunks_mut(4).for_each(|c| c[3] = (c[3] & 0x83) | 0x3c);
            &[]
        }
    };
    if t.is_quantized() {
        for blk in b.chunks_mut(t.block_bytes()) {
            for &o in offs {
                blk[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
            }
        }
    }
    b
}

/// `MV_HUGE=1`: weights in anonymous memory advised for transparent huge pages (2 MB pages);
/// otherwise in ordinary heap memory (4 KB pages).
enum Buf {
    Heap(Vec<u8>),
    Huge(memmap2::MmapMut),
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Buf::Heap(v) => v,
            Buf::Huge(m) => m,
        }
    }
}

fn buf(v: Vec<u8>) -> Buf {
    if std::env::var("MV_HUGE").is_err() {
        return Buf::Heap(v);
    }
    let mut m = memmap2::MmapMut::map_anon(v.len()).expect("anonymous map");
    m.advise(memmap2::Advice::HugePage).expect("madvise");
    m.copy_from_slice(&v);
    Buf::Huge(m)
}

fn read_bandwidth(threads: usize) -> f64 {
    let n = 512 << 20;
    let buf = buf(rng_bytes(n, 5));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    let mut best = f64::MAX;
    for _ in 0..8 {
        let t0 = Instant::now();
        let s: u64 = pool.install(|| {
            use rayon::prelude::*;
            buf.par_chunks(n / threads)
                .map(|c| {
                    c.chunks_exact(64)
                        .fold([0u64; 8], |mut a, x| {
                            for i in 0..8 {
                                let w = u64::from_le_bytes(x[8 * i..8 * i + 8].try_into().unwrap());
                                a[i] = a[i].wrapping_add(w);
                            }
                            a
                        })
                        .iter()
                        .fold(0u64, |a, b| a.wrapping_add(*b))
                })
                .reduce(|| 0, |a, b| a.wrapping_add(b))
        });
        std::hint::black_box(s);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    n as f64 / best / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut prefill = 0usize;
    let mut types = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--prefill" {
            prefill = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(64);
            i += 1;
        } else if let Some(t) = DType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(&args[i]))
        {
            types.push(t);
        }
        i += 1;
    }
    if types.is_empty() {
        types = vec![
            DType::Q4_0,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q6_K,
            DType::Q4_1,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q5_K,
            DType::F16,
            DType::BF16,
            DType::F32,
        ];
    }
    for th in [1, 2] {
        if std::env::var("MV_NOBW").is_ok() {
            break;
        }
        println!(
            "read bandwidth, {th} thread(s): {:.1} GB/s",
            read_bandwidth(th)
        );
    }
    if std::env::var("MV_DECODE").is_ok() {
        decode_sim(&types, prefill.max(1));
        return;
    }
    let mut shapes = vec![(4096usize, 4096usize), (11008, 4096), (4096, 11008)];
    // MV_SHAPES=64x4096,128x4096 overrides the shapes (e.g. cache-resident ones).
    if let Ok(s) = std::env::var("MV_SHAPES") {
        shapes = s
            .split(',')
            .filter_map(|p| p.split_once('x'))
            .filter_map(|(r, c)| Some((r.parse().ok()?, c.parse().ok()?)))
            .collect();
    }
    let n = if prefill > 0 { prefill } else { 1 };
    println!(
        "{:6} {:>12} {:>4} {:>10} {:>9} {:>9}",
        "type", "shape", "thr", "us/call", "GB/s", "Gflop/s"
    );
    for &t in &types {
        for &(rows, cols) in shapes.iter() {
            let bytes = t.row_bytes(cols).unwrap() * rows;
            let copies = if std::env::var("MV_CACHED").is_ok() {
                1
            } else {
                ((256usize << 20) / bytes).max(2)
            };
            let mats: Vec<Buf> = (0..copies)
                .map(|c| buf(weights(t, rows, cols, 77 + c as u64)))
                .collect();
            let x: Vec<f32> = (0..n * cols)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect();
            let mut out = vec![0f32; n * rows];
            // MV_X8=1: the types that pack, through the 8-row packed layout (checked against
            // matmul).
            let x8 = std::env::var("MV_X8").is_ok()
                && packable_x8(&MatRef::new(t, rows, cols, &mats[0]).unwrap());
            let packed: Vec<Vec<u8>> = if x8 {
                mats.iter()
                    .map(|m| pack_x8(&MatRef::new(t, rows, cols, m).unwrap()).unwrap())
                    .collect()
            } else {
                Vec::new()
            };
            if x8 {
                let mut o2 = vec![0f32; rows];
                let w = MatRef::new(t, rows, cols, &mats[0]).unwrap();
                matmul(&w, &x, n, &mut out).unwrap();
                let p = MatRef::packed_x8(t, rows, cols, &packed[0]).unwrap();
                o2.resize(n * rows, 0.0);
                matmul(&p, &x, n, &mut o2).unwrap();
                let bad = out
                    .iter()
                    .zip(&o2)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert!(
                    bad == 0,
                    "{bad} of {rows} differ: {:?} vs {:?}",
                    &out[..4],
                    &o2[..4]
                );
            }
            let run = |k: usize, out: &mut [f32]| {
                if x8 {
                    let p = MatRef::packed_x8(t, rows, cols, &packed[k]).unwrap();
                    matmul(&p, &x, n, out).unwrap();
                } else {
                    let w = MatRef::new(t, rows, cols, &mats[k]).unwrap();
                    matmul(&w, &x, n, out).unwrap();
                }
            };
            for th in [1, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(th)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut calls = 0usize;
                    // warm-up
                    for k in 0..mats.len() {
                        run(k, &mut out);
                    }
                    // Best batch of several (the machine may be shared): each batch cycles
                    // through all copies once or runs for ~20 ms.
                    let budget = Duration::from_millis(if n > 1 { 1500 } else { 600 });
                    let t0 = Instant::now();
                    let mut dt = f64::MAX;
                    while t0.elapsed() < budget {
                        let tb = Instant::now();
                        let mut k = 0;
                        while k < copies || tb.elapsed() < Duration::from_millis(20) {
                            run(calls % copies, &mut out);
                            calls += 1;
                            k += 1;
                        }
                        dt = dt.min(tb.elapsed().as_secs_f64() / k as f64);
                    }
                    println!(
                        "{:6} {:>12} {:>4} {:>10.1} {:>9.1} {:>9.1}",
                        t.name(),
                        format!("{rows}x{cols}"),
                        th,
                        dt * 1e6,
                        bytes as f64 / dt / 1e9,
                        2.0 * (rows * cols * n) as f64 / dt / 1e9
                    );
                });
            }
        }
    }
}

/// `MV_DECODE=1`: the seven matvecs of a 7B layer (q, k, v, o: 4096×4096; gate, up:
/// 11008×4096; down: 4096×11008) over 8 distinct layers (about 0.9 GB of Q4_0: beyond an L3
/// cache of 260 MB), as decode runs them one after another, for `n` tokens at once
/// (`--prefill N`: a decode step of N sequences), packed with `MV_X8=1`. Reports ms per layer
/// and the implied passes/s for 30 layers plus the 102400×4096 output head (counted at the
/// same bytes/s).
fn decode_sim(types: &[DType], n: usize) {
    let x8 = std::env::var("MV_X8").is_ok();
    let shapes = [
        (4096usize, 4096usize),
        (4096, 4096),
        (4096, 4096),
        (4096, 4096),
        (11008, 4096),
        (11008, 4096),
        (4096, 11008),
    ];
    println!(
        "{:6} {:>4} {:>10} {:>9} {:>8}",
        "type", "thr", "ms/layer", "GB/s", "tok/s"
    );
    for &t in types {
        let layers: Vec<Vec<Buf>> = (0..8)
            .map(|l| {
                shapes
                    .iter()
                    .enumerate()
                    .map(|(i, &(r, c))| {
                        let w = weights(t, r, c, 1000 + 10 * l + i as u64);
                        buf(if x8 && packable_x8(&MatRef::new(t, r, c, &w).unwrap()) {
                            pack_x8(&MatRef::new(t, r, c, &w).unwrap()).unwrap()
                        } else {
                            w
                        })
                    })
                    .collect()
            })
            .collect();
        let layer_bytes: usize = shapes
            .iter()
            .map(|&(r, c)| t.row_bytes(c).unwrap() * r)
            .sum();
        let head_bytes = t.row_bytes(4096).unwrap() * 102400;
        let x: Vec<f32> = (0..11008 * n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let mut out = vec![0f32; 11008 * n];
        for th in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(th)
                .build()
                .unwrap();
            pool.install(|| {
                let mut best = f64::MAX;
                let t0 = Instant::now();
                while t0.elapsed() < Duration::from_millis(1500) {
                    let tb = Instant::now();
                    for layer in &layers {
                        for (m, &(r, c)) in layer.iter().zip(&shapes) {
                            let w = if x8 && packable_x8(&MatRef::new(t, r, c, m).unwrap()) {
                                MatRef::packed_x8(t, r, c, m).unwrap()
                            } else {
                                MatRef::new(t, r, c, m).unwrap()
                            };
                            matmul(&w, &x[..c * n], n, &mut out[..r * n]).unwrap();
                        }
                    }
                    best = best.min(tb.elapsed().as_secs_f64() / layers.len() as f64);
                }
                let gbs = layer_bytes as f64 / best / 1e9;
                let token = 30.0 * best + head_bytes as f64 / (gbs * 1e9);
                println!(
                    "{:6} {:>4} {:>10.2} {:>9.1} {:>8.2}",
                    t.name(),
                    th,
                    best * 1e3,
                    gbs,
                    1.0 / token
                );
            });
        }
    }
}
