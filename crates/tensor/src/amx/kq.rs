//! Q4_K and Q6_K weights on AMX.
//!
//! The K-quant definitions of [`crate::kernels`] (`dot_q4_k_scalar`, `dot_q6_k_scalar`):
//! per super-block, the exact integer `isum = Σ sc·q·y` over its 256 values (Q6_K adds its
//! offset of 32 as `−32·Σ sc·Σ16y`), then for super-block `i`
//! `acc[i % 8] = fma(d·dy, isum, acc[i % 8])` and for Q4_K
//! `acc[i % 8] = fma(−dmin·dy, imin, acc[i % 8])` with `imin = Σ m·Σ32y`; the result is
//! `hsum8(acc)`. The tile products compute `isum` in 8 parts ("lanes": the 32 values `v`
//! with `(v % 32) / 4 == l`), added as integers before the float step.
//!
//! Each weight row is unpacked to `w = sc·q` (at most 945 for Q4_K, 128·63 in magnitude for
//! Q6_K) and stored lane by lane, so that a lane's 32 values (all 8 sub-blocks) form one row
//! of a weight tile; the activation tiles take the same values.
//!
//! * Q6_K: `w = lo + 64·hi` with `lo` in `0..64` and `hi` a signed byte, two byte tiles;
//!   two `tdpbssd` with K = 32 (the activation tile takes every eighth 4-value chunk) give
//!   `Σ lo·y` and `Σ hi·y`, and `isum = Σ lo·y + 64·Σ hi·y` is formed in integers before the
//!   float step.
//! * Q4_K: `w = a + b` with `a = w & !15` (a multiple of 16 below 1024: at most 6 significant
//!   bits) and `b = w & 15`, both exact in bf16, as are the activations (8-bit integers). Two
//!   `tdpbf16ps` into one sum tile add `Σ a·y + Σ b·y` in f32; every product and partial sum
//!   is an integer below `32·945·127 < 2^24`, so the f32 sum is the lane's exact sum, which
//!   converts back to `i32` exactly; one sum tile per lane. (Q6_K's lane sums can reach
//!   `32·8064·127 > 2^24`, so it keeps integer tiles.)

use super::w16::{KRow, Q6Row};
use super::{Kind, Scratch, ROWS, TILE};
use crate::aligned::Aligned;
use core::arch::x86_64::*;

/// Activations of `n` tokens in tiles of 16 (the last padded with zero tokens).
#[derive(Default, Debug)]
pub(crate) struct Acts {
    pub nsb: usize,
    pub tiles: usize,
    /// Q6_K: per tile and super-block, 4096 bytes: chunk `c` (values `4c..4c + 4`), token `l`
    /// at `64c + 4l..+4`.
    pub act: Aligned<i8>,
    /// Q4_K: per tile, super-block and lane `l`, one bf16 tile of 16 rows: row `k`, token `t`
    /// at `32k + 2t` holds the lane's values `j = 2k, 2k + 1` (value `32·(j/4) + 4l + j%4`).
    pub actb: Aligned<u16>,
    /// Per tile and super-block, 16 tokens' scales `d` (0 for padding tokens).
    pub dy: Aligned<f32>,
    /// Per tile, super-block and pair `l < 8`, 16 tokens' activation sums
    /// `(Σy[2l], Σy[2l+1])` as `i16` pairs (Q4_K: sums of 32 values, pairs 0..4; Q6_K: of 16).
    pub bs: Aligned<i32>,
}

impl Acts {
    /// Interleave `n` quantised rows of `k` values (`qs`, `d`, `sums`: the
    /// [`crate::act::QAct`] fields, blocks of 256) for `kind`; `sums` are the activation sums
    /// it needs: `bsum32` (8 per super-block) for Q4_K, `bsum` (16) for Q6_K.
    pub fn build(&mut self, kind: Kind, qs: &[i8], d: &[f32], sums: &[i16], n: usize, k: usize) {
        let per = match kind {
            Kind::Q4K => 8,
            Kind::Q6K => 16,
        };
        let nsb = k / 256;
        assert_eq!(sums.len(), n * nsb * per);
        self.nsb = nsb;
        self.tiles = n.div_ceil(TILE);
        let tokens = self.tiles * TILE;
        match kind {
            Kind::Q4K => self.actb.reset(tokens * k),
            Kind::Q6K => self.act.reset(tokens * k),
        }
        self.dy.reset(tokens * nsb);
        self.bs.reset(tokens * nsb * 8);
        for t in 0..n {
            let (tile, l) = (t / TILE, t % TILE);
            let row = &qs[t * k..(t + 1) * k];
            for (i, src) in row.chunks_exact(256).enumerate() {
                if kind == Kind::Q6K {
                    let base = (tile * nsb + i) * 4096;
                    for (c, q) in src.chunks_exact(4).enumerate() {
                        let o = base + 64 * c + 4 * l;
                        self.act[o..o + 4].copy_from_slice(q);
                    }
                } else {
                    for lane in 0..8 {
                        let base = ((tile * nsb + i) * 8 + lane) * 512;
                        for kk in 0..16 {
                            let v = 32 * (kk / 2) + 4 * lane + 2 * (kk % 2);
                            let o = base + 32 * kk + 2 * l;
                            self.actb[o] = bf16_of(src[v] as i16);
                            self.actb[o + 1] = bf16_of(src[v + 1] as i16);
                        }
                    }
                }
                self.dy[(tile * nsb + i) * TILE + l] = d[t * nsb + i];
                for p in 0..per / 2 {
                    let s = &sums[(t * nsb + i) * per + 2 * p..];
                    self.bs[((tile * nsb + i) * 8 + p) * TILE + l] = pair(s[0], s[1]);
                }
            }
        }
    }
}

/// The bf16 bits of a small integer (exact for the values used here: at most 8 significant
/// bits, which `split_bf16` and the activations guarantee).
fn bf16_of(x: i16) -> u16 {
    ((x as f32).to_bits() >> 16) as u16
}

/// Two `i16` as the `i32` whose low half is `a` (the operand layout of `vpmaddwd`).
fn pair(a: i16, b: i16) -> i32 {
    (a as u16 as u32 | (b as u16 as u32) << 16) as i32
}

/// Up to 16 weight rows unpacked for the kernel.
#[derive(Default, Debug)]
pub(crate) struct Rows {
    pub nsb: usize,
    /// Q6_K: per super-block `i`, lane `l` and part `p` (`lo`, `hi`), one weight tile of 512
    /// bytes at `(16i + 2l + p)·512`: row `m`'s 32 bytes at `32m` hold the part of the lane's
    /// values `32r + 4l + t` (`r < 8`, `t < 4`) at `4r + t` (`w = sc·q = lo + 64·hi`).
    pub w: Aligned<i8>,
    /// Q4_K: the same tiles of bf16 values (1 KB each, at `(16i + 2l + p)·512` values): row
    /// `m`'s 32 values at `32m`, parts `a = w & !15` and `b = w & 15`.
    pub wb: Aligned<u16>,
    /// Per row and super-block, `d` (and for Q4_K `dmin`) as f32.
    pub d: Aligned<f32>,
    pub dmin: Aligned<f32>,
    /// Per row, super-block and lane `l < 8`, the pair that multiplies the tokens' sum pair
    /// `l`: Q4_K `(m[2l], m[2l+1])` (`l < 4`), Q6_K `(−32·sc[2l], −32·sc[2l+1])`.
    pub pairs: Aligned<i32>,
    k4: KRow,
    k6: Q6Row,
}

impl Rows {
    /// Buffers for `nsb` super-blocks. Rows that the next unpacking does not write keep
    /// whatever they held: each output row depends only on its own weight row, and the
    /// results of missing rows are dropped.
    fn reset(&mut self, kind: Kind, nsb: usize) {
        self.nsb = nsb;
        match kind {
            Kind::Q4K => self.wb.ensure_len(ROWS * 512 * nsb),
            Kind::Q6K => self.w.ensure_len(ROWS * 512 * nsb),
        }
        self.d.ensure_len(ROWS * nsb);
        self.dmin.ensure_len(ROWS * nsb);
        self.pairs.ensure_len(ROWS * 8 * nsb);
    }

    /// Unpack `rows` (at most 16 rows of whole Q4_K or Q6_K super-blocks).
    pub fn unpack(&mut self, kind: Kind, rows: &[&[u8]]) {
        // SAFETY (both): the AMX path (the only caller's) requires AVX-512 F/BW/VL and F16C.
        match kind {
            Kind::Q4K => unsafe { self.unpack_q4k_avx512(rows) },
            Kind::Q6K => self.unpack_with(kind, rows, false, |w16, dst, m| unsafe {
                split_avx512(w16, dst, m)
            }),
        }
    }

    /// The definition of the unpacked rows: the K-quant rows' `sc·q` values
    /// ([`KRow::unpack_scalar`], [`Q6Row::unpack_scalar`]) split by [`split_bf16`] (Q4_K) or
    /// [`split_scalar`] (Q6_K).
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn unpack_scalar(&mut self, kind: Kind, rows: &[&[u8]]) {
        self.unpack_with(kind, rows, true, split_scalar)
    }

    fn block_bytes(kind: Kind) -> usize {
        match kind {
            Kind::Q4K => 144,
            Kind::Q6K => 210,
        }
    }

    fn unpack_with(
        &mut self,
        kind: Kind,
        rows: &[&[u8]],
        scalar: bool,
        split_q6: impl Fn(&[i16], &mut [i8], usize),
    ) {
        assert!(rows.len() <= ROWS);
        let bb = Self::block_bytes(kind);
        let nsb = rows.first().map_or(0, |r| r.len() / bb);
        self.reset(kind, nsb);
        for (m, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), nsb * bb);
            if kind == Kind::Q4K {
                if scalar {
                    self.k4.unpack_scalar(row);
                } else {
                    self.k4.unpack(row);
                }
                split_bf16(&self.k4.w16, &mut self.wb, m);
                for i in 0..nsb {
                    self.d[m * nsb + i] = self.k4.d[i];
                    self.dmin[m * nsb + i] = self.k4.dmin[i];
                    for l in 0..4 {
                        let [a, b] = self.k4.mins[4 * i + l];
                        self.pairs[(m * nsb + i) * 8 + l] = pair(a, b);
                    }
                }
            } else {
                if scalar {
                    self.k6.unpack_scalar(row);
                } else {
                    self.k6.unpack(row);
                }
                split_q6(&self.k6.w16, &mut self.w, m);
                for i in 0..nsb {
                    self.d[m * nsb + i] = self.k6.d[i];
                    for l in 0..8 {
                        let [a, b] = self.k6.bias[8 * i + l];
                        self.pairs[(m * nsb + i) * 8 + l] = pair(a, b);
                    }
                }
            }
        }
    }

    /// AVX-512 twin of [`Rows::unpack_scalar`] for Q4_K, straight from the stored bytes: a
    /// super-block's 128 nibble bytes hold lane `l`'s values of sub-blocks `2c` (low nibbles)
    /// and `2c + 1` (high nibbles) in their dword `8c + l`, so one dword permutation gathers
    /// each lane's bytes; the nibbles are interleaved into value order, scaled by their
    /// sub-block's scale, and each part's bf16 bits come from a table (`vpermw`).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VL, AVX2 and F16C.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
    unsafe fn unpack_q4k_avx512(&mut self, rows: &[&[u8]]) {
        assert!(rows.len() <= ROWS);
        let nsb = rows.first().map_or(0, |r| r.len() / 144);
        self.reset(Kind::Q4K, nsb);
        let m4 = _mm512_set1_epi8(0xF);
        let m15 = _mm512_set1_epi16(15);
        // bf16 of 16k (k < 64, two tables of 32) and of b (b < 16).
        let table = |f: &dyn Fn(usize) -> i16, k0: usize| {
            let v: [u16; 32] = core::array::from_fn(|k| bf16_of(f(k0 + k)));
            _mm512_loadu_si512(v.as_ptr() as *const __m512i)
        };
        let (ta0, ta1) = (table(&|k| 16 * k as i16, 0), table(&|k| 16 * k as i16, 32));
        let tb = table(&|k| (k % 16) as i16, 0);
        // Weight lanes 0..4 (idx[0]) and 4..8 (idx[1]), one per 128-bit lane: the lane's
        // dwords of chunks c = 0..4 (dword 8c + l of the 32 in the two loads).
        let idx = [
            _mm512_setr_epi32(0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27),
            _mm512_setr_epi32(4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31),
        ];
        for (m, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), nsb * 144);
            for (i, blk) in row.chunks_exact(144).enumerate() {
                self.d[m * nsb + i] = crate::quants::f16_at(blk, 0);
                self.dmin[m * nsb + i] = crate::quants::f16_at(blk, 2);
                let mut sc = [0i16; 8];
                let mut mn = [0i16; 8];
                for (s, (a, b)) in sc.iter_mut().zip(mn.iter_mut()).enumerate() {
                    let (x, y) = crate::quants::scale_min_k4(s, &blk[4..16]);
                    (*a, *b) = (x as i16, y as i16);
                }
                for l in 0..4 {
                    self.pairs[(m * nsb + i) * 8 + l] = pair(mn[2 * l], mn[2 * l + 1]);
                }
                // Scale of each i16 value of a (lane, 4 sub-blocks) half: sub-blocks 0..4,
                // then 4..8, four values each, for two lanes.
                let s = |r0: usize| {
                    let v: [i16; 32] = core::array::from_fn(|j| sc[r0 + (j % 16) / 4]);
                    _mm512_loadu_si512(v.as_ptr() as *const __m512i)
                };
                let (s03, s47) = (s(0), s(4));
                // SAFETY: the 128 nibble bytes at 16..144 of the block lie inside `row`; the
                // 64-byte rows written (row m of the 16 tiles of super-block i) inside `wb`,
                // sized by `reset`.
                let q0 = _mm512_loadu_si512(blk.as_ptr().add(16) as *const __m512i);
                let q1 = _mm512_loadu_si512(blk.as_ptr().add(80) as *const __m512i);
                let out = self.wb.as_mut_ptr().add(16 * i * 512 + 32 * m);
                for (g, ix) in idx.iter().enumerate() {
                    let v = _mm512_permutex2var_epi32(q0, *ix, q1);
                    let lo = _mm512_and_si512(v, m4);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
                    // Per lane: values of sub-blocks 0..4 (c0 low, c0 high, c1 low, c1 high),
                    // then of 4..8.
                    let u = [_mm512_unpacklo_epi32(lo, hi), _mm512_unpackhi_epi32(lo, hi)];
                    for pl in 0..2 {
                        let half = |x: __m512i| {
                            if pl == 0 {
                                _mm512_castsi512_si256(x)
                            } else {
                                _mm512_extracti64x4_epi64::<1>(x)
                            }
                        };
                        // [lane a r0..4 | lane b r0..4] and [lane a r4..8 | lane b r4..8].
                        let w0 = _mm512_mullo_epi16(_mm512_cvtepu8_epi16(half(u[0])), s03);
                        let w1 = _mm512_mullo_epi16(_mm512_cvtepu8_epi16(half(u[1])), s47);
                        let rows2 = [
                            _mm512_shuffle_i64x2::<0b01_00_01_00>(w0, w1),
                            _mm512_shuffle_i64x2::<0b11_10_11_10>(w0, w1),
                        ];
                        for (e, w) in rows2.into_iter().enumerate() {
                            let l = 4 * g + 2 * pl + e;
                            let a = _mm512_permutex2var_epi16(ta0, _mm512_srli_epi16::<4>(w), ta1);
                            let b = _mm512_permutexvar_epi16(_mm512_and_si512(w, m15), tb);
                            _mm512_storeu_si512(out.add(2 * l * 512) as *mut __m512i, a);
                            _mm512_storeu_si512(out.add((2 * l + 1) * 512) as *mut __m512i, b);
                        }
                    }
                }
            }
        }
    }
}

/// Row `m` of the Q4_K layout of [`Rows::wb`] (`dst`, 16 rows) from one row's values `w16` in
/// value order (the definition).
pub(crate) fn split_bf16(w16: &[i16], dst: &mut [u16], m: usize) {
    assert!(w16.len() * 2 * ROWS == dst.len() && m < ROWS);
    for (i, src) in w16.chunks_exact(256).enumerate() {
        for l in 0..8 {
            let o = (16 * i + 2 * l) * 512 + 32 * m;
            for j in 0..32 {
                let x = src[32 * (j / 4) + 4 * l + j % 4];
                debug_assert!((0..1024).contains(&x));
                dst[o + j] = bf16_of(x & !15);
                dst[o + 512 + j] = bf16_of(x & 15);
            }
        }
    }
}

/// Row `m` of the layout of [`Rows::w`] (`dst`, 16 rows) from one row's values `w16` in
/// value order (the definition).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn split_scalar(w16: &[i16], dst: &mut [i8], m: usize) {
    assert!(w16.len() * 2 * ROWS == dst.len() && m < ROWS);
    for (i, src) in w16.chunks_exact(256).enumerate() {
        for l in 0..8 {
            let o = (16 * i + 2 * l) * 512 + 32 * m;
            for r in 0..8 {
                for t in 0..4 {
                    let x = src[32 * r + 4 * l + t];
                    dst[o + 4 * r + t] = (x & 63) as i8;
                    dst[o + 512 + 4 * r + t] = (x >> 6) as i8;
                }
            }
        }
    }
}

/// AVX-512 twin of [`split_scalar`]: per super-block, each sub-block's 32 values become 32
/// `lo` and 32 `hi` bytes (a 512-bit vector of 8 `lo` then 8 `hi` dwords, one per lane),
/// and an 8 × 8 dword transpose (two at once) gathers each lane's dwords.
///
/// # Safety
/// The CPU must support AVX-512 F and BW.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
pub(crate) unsafe fn split_avx512(w16: &[i16], dst: &mut [i8], m: usize) {
    assert!(w16.len() * 2 * ROWS == dst.len() && m < ROWS);
    let m63 = _mm512_set1_epi16(63);
    let ia = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    let ib = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    for i in 0..w16.len() / 256 {
        // SAFETY: the 256 values at 256i lie inside `w16`, and the 32-byte pieces written
        // below (row m of the 16 tiles of super-block i) inside `dst` (lengths asserted).
        let src = w16.as_ptr().add(256 * i);
        let z: [__m512i; 8] = core::array::from_fn(|r| {
            let x = _mm512_loadu_si512(src.add(32 * r) as *const __m512i);
            let lo = _mm512_cvtepi16_epi8(_mm512_and_si512(x, m63));
            let hi = _mm512_cvtepi16_epi8(_mm512_srai_epi16::<6>(x));
            _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
        });
        // Per 128-bit lane q: u[j] holds dword 4q + j of z[0..4], u[4 + j] of z[4..8].
        let t = |a: usize, b: usize| {
            (
                _mm512_unpacklo_epi32(z[a], z[b]),
                _mm512_unpackhi_epi32(z[a], z[b]),
            )
        };
        let (t0, t1) = t(0, 1);
        let (t2, t3) = t(2, 3);
        let (t4, t5) = t(4, 5);
        let (t6, t7) = t(6, 7);
        let u = [
            _mm512_unpacklo_epi64(t0, t2),
            _mm512_unpackhi_epi64(t0, t2),
            _mm512_unpacklo_epi64(t1, t3),
            _mm512_unpackhi_epi64(t1, t3),
            _mm512_unpacklo_epi64(t4, t6),
            _mm512_unpackhi_epi64(t4, t6),
            _mm512_unpacklo_epi64(t5, t7),
            _mm512_unpackhi_epi64(t5, t7),
        ];
        let out = dst.as_mut_ptr().add(16 * i * 512 + 32 * m);
        let put = |l: usize, v: __m512i| {
            // The lane's lo dwords, then its hi dwords, into the lane's two tiles.
            let p = out.add(2 * l * 512);
            _mm256_storeu_si256(p as *mut __m256i, _mm512_castsi512_si256(v));
            _mm256_storeu_si256(
                p.add(512) as *mut __m256i,
                _mm512_extracti64x4_epi64::<1>(v),
            );
        };
        for j in 0..4 {
            // Lane j: 128-bit lanes 0 of u[j], u[4+j] (its lo dwords), then lanes 2 (hi);
            // lane 4 + j: lanes 1, then 3.
            put(j, _mm512_permutex2var_epi64(u[j], ia, u[4 + j]));
            put(4 + j, _mm512_permutex2var_epi64(u[j], ib, u[4 + j]));
        }
    }
}

/// One Q6_K lane part: `tmm$C = A · B` from zero (a load of [`super::ZEROS`]), with A (16
/// weight rows × 32 bytes) at `wp` (contiguous) and, when `LOAD_B`, B (8 rows of 64
/// activation bytes, stride 512) loaded from `bp` first; the sums stored at `out` (16 rows
/// of 64 bytes).
///
/// # Safety
/// Tiles configured by [`super::TileScope`] for Q6_K; the pointers cover what is read and
/// written.
#[inline(always)]
unsafe fn product<const C: usize, const A: usize, const B: usize, const LOAD_B: bool>(
    wp: *const i8,
    bp: *const i8,
    out: *mut i32,
) {
    if LOAD_B {
        core::arch::asm!(
            "tileloadd tmm{b}, [{bp} + {s}*1]",
            b = const B,
            bp = in(reg) bp,
            s = in(reg) 512usize,
            options(nostack, readonly)
        );
    }
    core::arch::asm!(
        "tileloadd tmm{c}, [{z} + {s}*1]",
        "tileloadd tmm{a}, [{wp} + {ws}*1]",
        "tdpbssd tmm{c}, tmm{a}, tmm{b}",
        "tilestored [{out} + {s}*1], tmm{c}",
        a = const A,
        b = const B,
        c = const C,
        z = in(reg) super::ZEROS.0.as_ptr(),
        wp = in(reg) wp,
        ws = in(reg) 32usize,
        out = in(reg) out,
        s = in(reg) 64usize,
        options(nostack)
    );
}

/// 16 unpacked Q6_K weight rows × token tile `tile` of `act`, into the row accumulators of
/// `scratch` (which [`super::finish`] reduces).
///
/// # Safety
/// The CPU must support AMX-INT8 and AVX-512 F/BW/VL/VNNI, and the tiles must be configured
/// for Q6_K on this thread.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn tile_q6k(rows: &Rows, act: &Acts, tile: usize, scratch: &mut Scratch) {
    let nsb = act.nsb;
    assert!(rows.nsb == nsb && tile < act.tiles);
    assert!(rows.w.len() == ROWS * 512 * nsb && rows.d.len() == ROWS * nsb);
    assert!(rows.pairs.len() == ROWS * 8 * nsb);
    assert!(act.act.len() >= (tile + 1) * nsb * 4096 && act.dy.len() >= (tile + 1) * nsb * TILE);
    assert!(act.bs.len() >= (tile + 1) * nsb * 8 * TILE);
    scratch.prepare();
    let w0 = rows.w.as_ptr();
    let a0 = act.act.as_ptr().add(tile * nsb * 4096);
    let dy0 = act.dy.as_ptr().add(tile * nsb * TILE);
    let bs0 = act.bs.as_ptr().add(tile * nsb * 8 * TILE);
    let sums = scratch.sums.as_mut_ptr();
    let accp = scratch.acc.as_mut_ptr();
    // The 16 sum tiles of super-block i (lane l: lo at 2l, hi at 2l + 1) alternate between
    // two sets.
    let set = |i: usize| sums.add((i % 2) * 16 * 256);
    // Tile product `o` of super-block `i`: lane o / 2, part (lo, hi) o % 2, into sum tile
    // o % 4 (the activation tile is loaded with part lo and kept for part hi).
    let issue = |i: usize, o: usize| {
        // SAFETY: i < nsb: the weight tile (512 bytes at (16i + o)·512) lies inside
        // `rows.w`, the activation tile (8 rows × 64 bytes, stride 512, from 4096i + 64l)
        // inside this tile's 4096·nsb bytes, and the 1 KB slot o of the set inside `sums`
        // (sized by `prepare`).
        let (wp, bp, out) = (
            w0.add(512 * (16 * i + o)),
            a0.add(4096 * i + 64 * (o / 2)),
            set(i).add(256 * o),
        );
        match o % 4 {
            0 => product::<0, 4, 6, true>(wp, bp, out),
            1 => product::<1, 5, 6, false>(wp, bp, out),
            2 => product::<2, 4, 7, true>(wp, bp, out),
            _ => product::<3, 5, 7, false>(wp, bp, out),
        }
    };
    if nsb > 0 {
        for o in 0..16 {
            issue(0, o);
        }
    }
    for i in 0..nsb {
        let s = set(i);
        let dyv = _mm512_load_ps(dy0.add(i * TILE));
        let bsp = bs0.add(i * 8 * TILE);
        for m in 0..ROWS {
            // The next super-block's products, one per row, run on the tile unit meanwhile.
            if i + 1 < nsb {
                issue(i + 1, m);
            }
            // The definition's accumulator `i % 8` of row m.
            let ap = accp.add((m * 8 + i % 8) * TILE);
            let dd = _mm512_mul_ps(_mm512_set1_ps(*rows.d.as_ptr().add(m * nsb + i)), dyv);
            let pm = rows.pairs.as_ptr().add((m * nsb + i) * 8);
            // The super-block's exact integer sum: every lane's `lo + 64·hi` and offset.
            let mut isum = _mm512_setzero_si512();
            for l in 0..8 {
                let lo = _mm512_load_si512(s.add(512 * l + 16 * m) as *const __m512i);
                let hi = _mm512_load_si512(s.add(512 * l + 256 + 16 * m) as *const __m512i);
                let bsv = _mm512_load_si512(bsp.add(l * TILE) as *const __m512i);
                let off = _mm512_madd_epi16(bsv, _mm512_set1_epi32(*pm.add(l)));
                isum = _mm512_add_epi32(isum, _mm512_add_epi32(lo, _mm512_slli_epi32::<6>(hi)));
                isum = _mm512_add_epi32(isum, off);
            }
            let acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum), _mm512_load_ps(ap));
            _mm512_store_ps(ap, acc);
        }
    }
}

/// One Q4_K lane: `tmm$C = A_a · B + A_b · B` from zero (bf16 products), with B (16 rows of
/// 64 activation bytes) at `bp`, the weight parts (16 rows of 64 bytes each) at `wp` and
/// `wp + 1 KB`, and the sums stored at `out` (16 rows of 16 f32).
///
/// # Safety
/// Tiles configured by [`super::TileScope`] for Q4_K; the pointers cover what is read and
/// written.
#[inline(always)]
unsafe fn lane_bf16<const C: usize, const B: usize>(wp: *const u16, bp: *const u16, out: *mut i32) {
    core::arch::asm!(
        "tileloadd tmm{b}, [{bp} + {s}*1]",
        "tileloadd tmm{c}, [{z} + {s}*1]",
        "tileloadd tmm4, [{wp} + {s}*1]",
        "tdpbf16ps tmm{c}, tmm4, tmm{b}",
        "tileloadd tmm5, [{wp} + {s}*1 + 1024]",
        "tdpbf16ps tmm{c}, tmm5, tmm{b}",
        "tilestored [{out} + {s}*1], tmm{c}",
        b = const B,
        c = const C,
        z = in(reg) super::ZEROS.0.as_ptr(),
        wp = in(reg) wp,
        bp = in(reg) bp,
        out = in(reg) out,
        s = in(reg) 64usize,
        options(nostack)
    );
}

/// 16 unpacked Q4_K weight rows × token tile `tile` of `act`, into the row accumulators of
/// `scratch` (which [`super::finish`] reduces).
///
/// # Safety
/// The CPU must support AMX-BF16 and AVX-512 F/BW/VL/VNNI, and the tiles must be configured
/// for Q4_K on this thread.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn tile_q4k(rows: &Rows, act: &Acts, tile: usize, scratch: &mut Scratch) {
    let nsb = act.nsb;
    assert!(rows.nsb == nsb && tile < act.tiles);
    assert!(rows.wb.len() == ROWS * 512 * nsb && rows.d.len() == ROWS * nsb);
    assert!(rows.dmin.len() == ROWS * nsb && rows.pairs.len() == ROWS * 8 * nsb);
    assert!(act.actb.len() >= (tile + 1) * nsb * 4096 && act.dy.len() >= (tile + 1) * nsb * TILE);
    assert!(act.bs.len() >= (tile + 1) * nsb * 8 * TILE);
    scratch.prepare();
    let w0 = rows.wb.as_ptr();
    let a0 = act.actb.as_ptr().add(tile * nsb * 4096);
    let dy0 = act.dy.as_ptr().add(tile * nsb * TILE);
    let bs0 = act.bs.as_ptr().add(tile * nsb * 8 * TILE);
    let sums = scratch.sums.as_mut_ptr();
    let accp = scratch.acc.as_mut_ptr();
    // The 8 sum tiles of super-block i (one per lane) alternate between two sets.
    let set = |i: usize| sums.add((i % 2) * 16 * 256);
    let issue = |i: usize, l: usize| {
        // SAFETY: i < nsb: the two weight tiles of lane l (1 KB each from (16i + 2l)·512
        // values) lie inside `rows.wb`, its activation tile (512 values from
        // (8i + l)·512) inside this tile's 4096·nsb values, and the 1 KB slot l of the set
        // inside `sums` (sized by `prepare`).
        let (wp, bp, out) = (
            w0.add((16 * i + 2 * l) * 512),
            a0.add((8 * i + l) * 512),
            set(i).add(256 * l),
        );
        match l % 4 {
            0 => lane_bf16::<0, 6>(wp, bp, out),
            1 => lane_bf16::<1, 7>(wp, bp, out),
            2 => lane_bf16::<2, 6>(wp, bp, out),
            _ => lane_bf16::<3, 7>(wp, bp, out),
        }
    };
    if nsb > 0 {
        for l in 0..8 {
            issue(0, l);
        }
    }
    for i in 0..nsb {
        let s = set(i) as *const f32;
        let dyv = _mm512_load_ps(dy0.add(i * TILE));
        let bsp = bs0.add(i * 8 * TILE);
        for m in 0..ROWS {
            // The next super-block's lanes, one every other row, run on the tile unit
            // meanwhile.
            if i + 1 < nsb && m % 2 == 0 {
                issue(i + 1, m / 2);
            }
            // The definition's accumulator `i % 8` of row m.
            let ap = accp.add((m * 8 + i % 8) * TILE);
            let dd = _mm512_mul_ps(_mm512_set1_ps(*rows.d.as_ptr().add(m * nsb + i)), dyv);
            // The super-block's exact integer sum: each lane's sum is an integer below 2^24
            // held as an f32, so its conversion is exact; the lanes are added as integers.
            let mut isum = _mm512_setzero_si512();
            for l in 0..8 {
                let lane = _mm512_cvtps_epi32(_mm512_load_ps(s.add(256 * l + 16 * m)));
                isum = _mm512_add_epi32(isum, lane);
            }
            let dm = _mm512_mul_ps(_mm512_set1_ps(*rows.dmin.as_ptr().add(m * nsb + i)), dyv);
            let pm = rows.pairs.as_ptr().add((m * nsb + i) * 8);
            let mut imin = _mm512_setzero_si512();
            for l in 0..4 {
                let bsv = _mm512_load_si512(bsp.add(l * TILE) as *const __m512i);
                imin =
                    _mm512_add_epi32(imin, _mm512_madd_epi16(bsv, _mm512_set1_epi32(*pm.add(l))));
            }
            let acc = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(isum), _mm512_load_ps(ap));
            let acc = _mm512_fnmadd_ps(dm, _mm512_cvtepi32_ps(imin), acc);
            _mm512_store_ps(ap, acc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_matches_definition() {
        if !crate::kernels::has_avx512_vnni() {
            println!("SKIPPED: CPU lacks AVX-512 F/BW/VL");
            return;
        }
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for (kind, bb, d_at) in [
            (Kind::Q4K, 144usize, [0usize, 2]),
            (Kind::Q6K, 210, [208, 208]),
        ] {
            for (nrows, nsb) in [(1usize, 1usize), (5, 3), (16, 2)] {
                let data: Vec<Vec<u8>> = (0..nrows)
                    .map(|_| {
                        let mut r: Vec<u8> = (0..bb * nsb)
                            .map(|_| {
                                s ^= s << 13;
                                s ^= s >> 7;
                                s ^= s << 17;
                                s as u8
                            })
                            .collect();
                        // Finite f16 scales.
                        for blk in r.chunks_mut(bb) {
                            for o in d_at {
                                blk[o + 1] &= 0x7B;
                            }
                        }
                        r
                    })
                    .collect();
                let rows: Vec<&[u8]> = data.iter().map(|r| r.as_slice()).collect();
                let (mut a, mut b) = (Rows::default(), Rows::default());
                a.unpack_scalar(kind, &rows);
                b.unpack(kind, &rows);
                let n = nrows * nsb;
                let w = |r: &Rows, m: usize| -> Vec<u16> {
                    (0..16 * nsb)
                        .flat_map(|t| match kind {
                            Kind::Q4K => r.wb[t * 512 + 32 * m..t * 512 + 32 * m + 32].to_vec(),
                            Kind::Q6K => r.w[t * 512 + 32 * m..t * 512 + 32 * m + 32]
                                .iter()
                                .map(|&x| x as u16)
                                .collect(),
                        })
                        .collect()
                };
                for m in 0..nrows {
                    assert_eq!(w(&a, m), w(&b, m), "{kind:?} {nrows}x{nsb} row {m}");
                }
                let bits = |v: &[f32]| v[..n].iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.d), bits(&b.d), "{kind:?} d");
                if kind == Kind::Q4K {
                    assert_eq!(bits(&a.dmin), bits(&b.dmin), "{kind:?} dmin");
                }
                assert_eq!(&a.pairs[..8 * n], &b.pairs[..8 * n], "{kind:?} pairs");
            }
        }
    }

    #[test]
    fn avx512_split_matches_scalar() {
        if !crate::kernels::has_avx512_vnni() {
            println!("SKIPPED: CPU lacks AVX-512 F/BW/VL");
            return;
        }
        let mut s = 0x2545_f491_4f6c_dd1du64;
        for nsb in [1usize, 3, 17] {
            // The full range of both types: Q6_K reaches ±128·63.
            let w16: Vec<i16> = (0..256 * nsb)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    (s % 16129) as i16 - 8064
                })
                .collect();
            let mut a = vec![0i8; ROWS * 512 * nsb];
            let mut b = vec![0i8; ROWS * 512 * nsb];
            for m in [0, 5, 15] {
                split_scalar(&w16, &mut a, m);
                // SAFETY: feature checked above.
                unsafe { split_avx512(&w16, &mut b, m) };
                assert_eq!(a, b, "{nsb} super-blocks, row {m}");
            }
            // Row 15 of super-block 0: lo + 64·hi gives back each value.
            for (v, x) in w16.iter().enumerate().take(256) {
                let (r, l, t) = (v / 32, (v % 32) / 4, v % 4);
                let o = 2 * l * 512 + 32 * 15 + 4 * r + t;
                assert_eq!(a[o] as i16 + 64 * a[o + 512] as i16, *x, "value {v}");
            }
        }
    }
}
