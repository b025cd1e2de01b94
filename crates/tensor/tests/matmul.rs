//! matmul: SIMD vs scalar twins, batch/thread invariance, and accuracy against an f64 reference.
#![allow(clippy::needless_range_loop)]

use deepseek_tensor::{
    dequantize_row, matmul, matmul_isa, matmul_scalar, pack_x8, pack_x8_into, quantize, DType, Isa,
    Layout, MatRef,
};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        // roughly N(0,1): sum of uniforms
        (0..4)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
            .sum::<f32>()
            - 2.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// Weight bytes: quantised random values, or (for `raw`) random bytes with sane f16 scales.
fn weights(t: DType, rows: usize, cols: usize, rng: &mut Rng, raw: bool) -> Vec<u8> {
    if !raw || !t.is_quantized() {
        return quantize(t, &rng.vec(rows * cols)).unwrap();
    }
    let mut b: Vec<u8> = (0..t.row_bytes(cols).unwrap() * rows)
        .map(|_| rng.next() as u8)
        .collect();
    let f16_offsets: &[usize] = match t {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => &[0, 2],
        DType::Q6_K => &[208],
        _ => &[],
    };
    for blk in b.chunks_mut(t.block_bytes()) {
        for &o in f16_offsets {
            let v = half::f16::from_f32(rng.f() * 0.05);
            blk[o..o + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    b
}

/// Column counts give 1, 3, 6, 7, 8, 24, 16 and 88 blocks of 32 (every remainder of the
/// 4-block and 2-block steps); K-quant types round them up to whole 256-value blocks (1, 3,
/// 2 and 11: more than one group of 8 super-blocks, and a partial one).
const SHAPES: [(usize, usize); 8] = [
    (3, 32),
    (5, 96),
    (9, 192),
    (5, 224),
    (7, 256),
    (13, 768),
    (33, 512),
    (6, 2816),
];

#[test]
fn simd_matches_scalar_bit_exact() {
    let isas = Isa::available();
    println!("kernel paths on this CPU: {isas:?}");
    if isas == [Isa::Scalar] {
        println!("SKIPPED (in effect): no SIMD path runs here, matmul runs the scalar kernels");
    }
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for t in DType::ALL {
        for &(rows, cols) in &SHAPES {
            for raw in [false, true] {
                let cols = match t.block_size() {
                    1 => cols + 3,
                    bs => cols.next_multiple_of(bs),
                };
                let wb = weights(t, rows, cols, &mut rng, raw);
                // Deliberately misaligned bytes, as from a memory-mapped file.
                let mut buf = vec![0u8; wb.len() + 3];
                buf[3..].copy_from_slice(&wb);
                let w = MatRef::new(t, rows, cols, &buf[3..]).unwrap();
                // 16, 35 and 60: tiles of 16 and of 8 tokens, with and without a remainder
                // (the Q4_0 and Q8_0 tile path).
                for n in [1, 2, 3, 9, 16, 35, 60] {
                    let x = rng.vec(n * cols);
                    let mut want = vec![0f32; n * rows];
                    matmul_scalar(&w, &x, n, &mut want).unwrap();
                    let mut a = vec![0f32; n * rows];
                    matmul(&w, &x, n, &mut a).unwrap();
                    let mut got = vec![("default", a)];
                    for &isa in &isas[1..] {
                        let mut b = vec![0f32; n * rows];
                        matmul_isa(isa, &w, &x, n, &mut b).unwrap();
                        got.push((isa.name(), b));
                    }
                    for (name, a) in &got {
                        for i in 0..a.len() {
                            assert_eq!(
                                a[i].to_bits(),
                                want[i].to_bits(),
                                "{name}: {t} {rows}x{cols} n={n} raw={raw} at {i}: {} vs {}",
                                a[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Q4_0, Q4_K, Q5_K and Q6_K rows packed in groups of 8 (`pack_x8`) give the bits of the scalar
/// definition on the unpacked rows on every path: the packed kernels (one, two and, for Q4_K,
/// four tokens per pass; Q4_K at every batch size, Q4_0 and Q6_K below 32 tokens, Q4_0 below 256
/// where AVX-512 runs full width, two groups at a time there) and the tile and AMX paths on
/// rebuilt rows (35 and 260 tokens); quantised and random weights, 1 to 11
/// super-blocks (Q4_0: 8 to 88 blocks); rows rebuild and dequantise exactly; other types,
/// row counts and packing twice are refused.
#[test]
fn packed_matches_scalar_bit_exact() {
    let isas = Isa::available();
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    for t in [DType::Q4_0, DType::Q4_K, DType::Q5_K, DType::Q6_K] {
        for &(rows, cols) in &[(8, 256), (24, 512), (16, 1280), (40, 2816)] {
            for raw in [false, true] {
                let wb = weights(t, rows, cols, &mut rng, raw);
                let w = MatRef::new(t, rows, cols, &wb).unwrap();
                let packed = pack_x8(&w).unwrap();
                assert_eq!(packed.len(), wb.len());
                // Packed a group of 8 rows at a time into the same byte ranges: the same bytes.
                let mut pieces = vec![0u8; wb.len()];
                let gb = wb.len() / rows * 8;
                for (g, out) in pieces.chunks_mut(gb).enumerate() {
                    let sub = MatRef::new(t, 8, cols, &wb[g * gb..(g + 1) * gb]).unwrap();
                    pack_x8_into(&sub, out).unwrap();
                }
                assert!(pieces == packed, "{t} {rows}x{cols}: packed by groups");
                let p = MatRef::packed_x8(t, rows, cols, &packed).unwrap();
                assert_eq!(p.layout, Layout::X8);
                let mut buf = Vec::new();
                let (mut d0, mut d1) = (vec![0f32; cols], vec![0f32; cols]);
                for r in 0..rows {
                    assert_eq!(p.row_to(r, &mut buf), w.row(r), "{t} row {r} rebuilt");
                    dequantize_row(&w, r, &mut d0).unwrap();
                    dequantize_row(&p, r, &mut d1).unwrap();
                    assert_eq!(d0, d1);
                }
                for n in [1, 2, 5, 15, 16, 35, 260] {
                    let x = rng.vec(n * cols);
                    let mut want = vec![0f32; n * rows];
                    matmul_scalar(&w, &x, n, &mut want).unwrap();
                    let mut got = vec![("default", vec![0f32; n * rows])];
                    matmul(&p, &x, n, &mut got[0].1).unwrap();
                    for &isa in &isas {
                        let mut b = vec![0f32; n * rows];
                        matmul_isa(isa, &p, &x, n, &mut b).unwrap();
                        got.push((isa.name(), b));
                    }
                    for (name, g) in &got {
                        for i in 0..g.len() {
                            assert_eq!(
                                g[i].to_bits(),
                                want[i].to_bits(),
                                "{name}: {t} {rows}x{cols} raw={raw} n={n} at {i}: {} vs {}",
                                g[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }
    let mut rng = Rng(7);
    let wb = weights(DType::Q4_K, 12, 256, &mut rng, false);
    let w = MatRef::new(DType::Q4_K, 12, 256, &wb).unwrap();
    let err = pack_x8(&w).unwrap_err();
    assert!(err.to_string().contains("a multiple of 8"), "{err}");
    assert!(MatRef::packed_x8(DType::Q4_K, 12, 256, &wb).is_err());
    let wb = weights(DType::Q8_0, 8, 256, &mut rng, false);
    assert!(pack_x8(&MatRef::new(DType::Q8_0, 8, 256, &wb).unwrap()).is_err());
    assert!(MatRef::packed_x8(DType::Q8_0, 8, 256, &wb).is_err());
    let wb = weights(DType::Q4_K, 8, 256, &mut rng, false);
    let p = MatRef::packed_x8(DType::Q4_K, 8, 256, &wb).unwrap();
    let err = pack_x8(&p).unwrap_err();
    assert!(err.to_string().contains("already packed"), "{err}");
    let w = MatRef::new(DType::Q4_K, 8, 256, &wb).unwrap();
    let err = pack_x8_into(&w, &mut vec![0u8; wb.len() - 1]).unwrap_err();
    assert!(err.to_string().contains("into 1151 bytes"), "{err}");
    assert!(matmul(&p, &[0.0; 255], 1, &mut [0.0; 8]).is_err());
}

#[test]
fn isa_paths_report_support() {
    let isas = Isa::available();
    assert_eq!(isas[0], Isa::Scalar);
    assert!(isas.contains(&Isa::current()));
    let w = MatRef::new(DType::Q8_0, 1, 32, &[0u8; 34]).unwrap();
    let mut out = [0f32; 1];
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Amx] {
        let r = matmul_isa(isa, &w, &[0.5; 32], 1, &mut out);
        assert_eq!(r.is_ok(), isas.contains(&isa), "{isa:?}");
        assert_eq!(Isa::parse(isa.name()), Some(isa));
    }
}

#[test]
fn batch_and_thread_invariance() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    for t in DType::ALL {
        let rows = 37;
        let cols = if t.block_size() == 256 { 512 } else { 480 };
        let wb = weights(t, rows, cols, &mut rng, false);
        let w = MatRef::new(t, rows, cols, &wb).unwrap();
        let n = 21;
        let x = rng.vec(n * cols);
        let mut batched = vec![0f32; n * rows];
        matmul(&w, &x, n, &mut batched).unwrap();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                for tok in 0..n {
                    let mut one = vec![0f32; rows];
                    matmul(&w, &x[tok * cols..(tok + 1) * cols], 1, &mut one).unwrap();
                    for r in 0..rows {
                        assert_eq!(
                            one[r].to_bits(),
                            batched[tok * rows + r].to_bits(),
                            "{t} token {tok} row {r} threads {threads}"
                        );
                    }
                }
                // Same token batched with different neighbours.
                let mut x2 = rng.vec(3 * cols);
                x2[cols..2 * cols].copy_from_slice(&x[2 * cols..3 * cols]);
                let mut out2 = vec![0f32; 3 * rows];
                matmul(&w, &x2, 3, &mut out2).unwrap();
                for r in 0..rows {
                    assert_eq!(
                        out2[rows + r].to_bits(),
                        batched[2 * rows + r].to_bits(),
                        "{t} neighbours row {r}"
                    );
                }
            });
        }
    }
}

/// Against dequantised weights · exact activations in f64. The activation is quantised to
/// 8 bits for the quantised types, so the bound is relative to Σ|w·x| (≈ 1/127 of it, plus
/// f32 rounding); float types must be close to f32 rounding.
#[test]
fn accurate_against_f64_reference() {
    let mut rng = Rng(0x0bad_5eed_1234_4321);
    for t in DType::ALL {
        let (rows, cols) = (19, 1024);
        let wb = weights(t, rows, cols, &mut rng, false);
        let w = MatRef::new(t, rows, cols, &wb).unwrap();
        let x = rng.vec(cols);
        let mut out = vec![0f32; rows];
        matmul(&w, &x, 1, &mut out).unwrap();
        let mut row = vec![0f32; cols];
        for r in 0..rows {
            dequantize_row(&w, r, &mut row).unwrap();
            let exact: f64 = row.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum();
            let mag: f64 = row
                .iter()
                .zip(&x)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            let tol = if t.is_quantized() {
                0.01 * mag
            } else {
                1e-5 * mag
            };
            assert!(
                (out[r] as f64 - exact).abs() <= tol,
                "{t} row {r}: {} vs {exact} (mag {mag})",
                out[r]
            );
        }
    }
}

#[test]
fn shape_errors() {
    let wb = quantize(DType::Q4_0, &[0.5; 64]).unwrap();
    let w = MatRef::new(DType::Q4_0, 2, 32, &wb).unwrap();
    let mut out = vec![0f32; 2];
    assert!(matmul(&w, &[0.0; 31], 1, &mut out).is_err());
    assert!(matmul(&w, &[0.0; 32], 2, &mut out).is_err());
    let bad = MatRef {
        dtype: DType::Q4_0,
        rows: 3,
        cols: 32,
        data: &wb,
        layout: Layout::Rows,
    };
    assert!(matmul(&bad, &[0.0; 32], 1, &mut [0.0; 3]).is_err());
    // A packed layout claimed for a type or row count that has none.
    for (t, rows) in [(DType::Q4_0, 2), (DType::Q8_0, 8)] {
        let wb = quantize(t, &vec![0.5; rows * 32]).unwrap();
        let bad = MatRef {
            layout: Layout::X8,
            ..MatRef::new(t, rows, 32, &wb).unwrap()
        };
        let err = matmul(&bad, &[0.0; 32], 1, &mut vec![0.0; rows]).unwrap_err();
        assert!(err.to_string().contains("groups of 8 rows"), "{err}");
        assert!(dequantize_row(&bad, 0, &mut [0.0; 32]).is_err());
    }
    assert!(MatRef::new(DType::Q4_0, 2, 33, &wb).is_err());
}
