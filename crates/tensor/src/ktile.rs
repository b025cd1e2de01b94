//! Q4_K, Q5_K and Q6_K weights × 16-token tiles on AVX-512 VNNI (prefill and large batches).
//!
//! The layout of [`crate::q4tile`]: a 512-bit vector holds 16 *tokens*; the activations of
//! 16 tokens are interleaved once per matrix product (for each super-block and each 4-value
//! chunk, 16 × 4 bytes, offset by 128 to unsigned bytes), each weight row is unpacked once
//! into its values as signed bytes, and one `vpdpbusd` with a broadcast 4-byte weight operand
//! advances 16 tokens by 4 products; one activation load serves two weight rows.
//!
//! The arithmetic is the K-quant definition of [`crate::kernels`] (`dot_q4_k_scalar`,
//! `dot_q6_k_scalar`): per super-block, the exact integer `isum = Σ sc · q · y` over its 256
//! values, then one float step. Here each sub-block's sum of `(y + 128) · q` comes from its
//! chain of `vpdpbusd`, is multiplied by the sub-block's scale (`vpmulld`) and added; the
//! offset's share, `128 · Σ sc · Σ q`, depends on the row only and is subtracted once
//! ([`KRow::corr`]). Q4_K and Q5_K add the minimums' `imin = Σ m · Σy` (one `vpdpwssd` per
//! pair of sub-blocks against the tokens' sums), Q6_K its offset of 32 as
//! `−32 · Σ sc · Σ16y` (the same, with pairs of 16-value groups). Then, per token lane,
//! `acc[i % 8] = fma(d·dy, isum, acc[i % 8])` for super-block `i` and for Q4_K/Q5_K
//! `acc[i % 8] = fma(−dmin·dy, imin, acc[i % 8])`, and `hsum8` of the 8 accumulators, as in
//! the row kernels: every token of a tile gets their bits (tests check it). Each sum stays below
//! 2^31: a Q6_K group's `Σ (y + 128) · q` is at most `16 · 63 · 255`, times a scale of at most
//! 128 in magnitude, 16 groups.

use crate::aligned::Aligned;
use crate::quants::{f16_at, scale_min_k4};

/// Tokens per tile.
pub(crate) const TILE: usize = 16;

/// Activations of `n / TILE` whole tiles of 16 tokens (blocks of 256), interleaved for
/// [`tile_pair`].
#[derive(Default, Debug)]
pub(crate) struct KTiles {
    /// Super-blocks of 256 values per token.
    pub nsb: usize,
    /// Whole tiles.
    pub tiles: usize,
    /// Per tile and super-block, 4096 bytes: for chunk `c` (values `4c..4c + 4`) and token
    /// `l`, bytes `64c + 4l..+4` hold the token's values plus 128, as `u8`.
    pub act: Aligned<u8>,
    /// Sum pairs per super-block: 4 (Q4_K, Q5_K: sums of 32 values) or 8 (Q6_K: of 16).
    pub pairs: usize,
    /// Per tile, super-block and pair `l`, 16 tokens' `(Σy[2l], Σy[2l+1])` as `i16` pairs.
    pub bs: Aligned<i16>,
    /// Per tile and super-block, the 16 tokens' scales `d`.
    pub dy: Aligned<f32>,
}

impl KTiles {
    /// Interleave the whole tiles among `n` quantised rows of `k` values (`qs`, `d`: the
    /// [`crate::act::QAct`] fields, blocks of 256), with `sums` the activation sums the weight
    /// type needs, `per` of them per super-block: `bsum32` (8, Q4_K and Q5_K) or `bsum` (16,
    /// Q6_K).
    pub fn build(&mut self, qs: &[i8], d: &[f32], sums: &[i16], per: usize, n: usize, k: usize) {
        let nsb = k / 256;
        assert!(
            per == 8 || per == 16,
            "8 or 16 sums per super-block, not {per}"
        );
        let pairs = per / 2;
        self.nsb = nsb;
        self.pairs = pairs;
        self.tiles = n / TILE;
        let tokens = self.tiles * TILE;
        self.act.reset(tokens * k);
        self.bs.reset(tokens * nsb * per);
        self.dy.reset(tokens * nsb);
        for t in 0..tokens {
            let (tile, l) = (t / TILE, t % TILE);
            let row = &qs[t * k..(t + 1) * k];
            for (i, src) in row.chunks_exact(256).enumerate() {
                let base = (tile * nsb + i) * 256 * TILE;
                for (c, q) in src.chunks_exact(4).enumerate() {
                    let v = u32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]);
                    let o = base + 64 * c + 4 * l;
                    self.act[o..o + 4].copy_from_slice(&(v ^ 0x8080_8080).to_le_bytes());
                }
                let bb = (tile * nsb + i) * pairs * 2 * TILE;
                for j in 0..pairs {
                    let o = bb + 32 * j + 2 * l;
                    self.bs[o] = sums[(t * nsb + i) * per + 2 * j];
                    self.bs[o + 1] = sums[(t * nsb + i) * per + 2 * j + 1];
                }
                self.dy[(tile * nsb + i) * TILE + l] = d[t * nsb + i];
            }
        }
    }
}

/// The weight types with a tile kernel here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Q4K,
    Q5K,
    Q6K,
}

impl Kind {
    pub fn of(dtype: crate::DType) -> Option<Kind> {
        match dtype {
            crate::DType::Q4_K => Some(Kind::Q4K),
            crate::DType::Q5_K => Some(Kind::Q5K),
            crate::DType::Q6_K => Some(Kind::Q6K),
            _ => None,
        }
    }

    /// Bytes per super-block.
    pub fn block_bytes(self) -> usize {
        match self {
            Kind::Q4K => 144,
            Kind::Q5K => 176,
            Kind::Q6K => 210,
        }
    }

    /// Scaled groups per super-block (sub-blocks of 32 values, Q6_K's groups of 16): also
    /// the activation sums per super-block the kernel reads ([`KTiles::build`]'s `per`).
    pub fn groups(self) -> usize {
        match self {
            Kind::Q6K => 16,
            _ => 8,
        }
    }
}

/// Two `i16` as the `i32` whose low half is `a` (the operand layout of `vpdpwssd`).
fn pair(a: i16, b: i16) -> i32 {
    (a as u16 as u32 | (b as u16 as u32) << 16) as i32
}

/// One Q4_K, Q5_K or Q6_K weight row unpacked for [`tile_pair`].
#[derive(Default, Debug, Clone)]
pub(crate) struct KRow {
    /// Per super-block, its 256 values (Q4_K `0..16`, Q5_K `0..32`, Q6_K `0..64`) as bytes,
    /// in value order.
    pub q: Vec<i8>,
    /// Per super-block, its groups' scales ([`Kind::groups`] of them).
    pub sc: Vec<i32>,
    /// Per super-block, `d` (and for Q4_K/Q5_K `dmin`) as f32.
    pub d: Vec<f32>,
    pub dmin: Vec<f32>,
    /// Per super-block and pair `l` of groups, the `i16` pair that multiplies the tokens' sum
    /// pair `l`: Q4_K/Q5_K the minimums `(m[2l], m[2l+1])` (4 pairs), Q6_K
    /// `(−32·sc[2l], −32·sc[2l+1])` (8 pairs).
    pub pairs: Vec<i32>,
    /// Per super-block, `128 · Σ_g sc[g] · Σ q` over group `g`'s values: the share of the
    /// activations' offset of 128 in the scaled sums.
    pub corr: Vec<i32>,
}

impl KRow {
    fn resize(&mut self, kind: Kind, nsb: usize) {
        self.q.resize(256 * nsb, 0);
        self.sc.resize(kind.groups() * nsb, 0);
        self.d.resize(nsb, 0.0);
        self.dmin.resize(nsb, 0.0);
        self.pairs.resize(kind.groups() / 2 * nsb, 0);
        self.corr.resize(nsb, 0);
    }

    /// Scales, `d`, `dmin` and pairs of super-block `i` (`blk`: its bytes).
    fn header(&mut self, kind: Kind, i: usize, blk: &[u8]) {
        let g = kind.groups();
        let sc = &mut self.sc[g * i..g * i + g];
        let pairs = &mut self.pairs[g / 2 * i..g / 2 * (i + 1)];
        if kind == Kind::Q6K {
            self.d[i] = f16_at(blk, 208);
            for (j, s) in sc.iter_mut().enumerate() {
                *s = blk[192 + j] as i8 as i32;
            }
            for (l, p) in pairs.iter_mut().enumerate() {
                *p = pair(-32 * sc[2 * l] as i16, -32 * sc[2 * l + 1] as i16);
            }
        } else {
            self.d[i] = f16_at(blk, 0);
            self.dmin[i] = f16_at(blk, 2);
            let mut m = [0i16; 8];
            for (j, s) in sc.iter_mut().enumerate() {
                let (a, b) = scale_min_k4(j, &blk[4..16]);
                *s = a as i32;
                m[j] = b as i16;
            }
            for (l, p) in pairs.iter_mut().enumerate() {
                *p = pair(m[2 * l], m[2 * l + 1]);
            }
        }
    }

    /// `corr` of super-block `i` from its unpacked values.
    fn correction(&mut self, kind: Kind, i: usize) {
        let g = kind.groups();
        let per = 256 / g;
        let q = &self.q[256 * i..256 * i + 256];
        let sc = &self.sc[g * i..g * i + g];
        let mut c = 0i32;
        for (j, vals) in q.chunks_exact(per).enumerate() {
            c += sc[j] * vals.iter().map(|&v| v as i32).sum::<i32>();
        }
        self.corr[i] = 128 * c;
    }

    /// Unpack `w` (whole super-blocks of `kind`) into `self`, reusing its buffers: the AVX2
    /// twin of [`KRow::unpack_scalar`] where the CPU has it.
    pub fn unpack(&mut self, kind: Kind, w: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx2() {
            // SAFETY: AVX2 checked just above.
            return unsafe { self.unpack_avx2(kind, w) };
        }
        self.unpack_scalar(kind, w)
    }

    /// Unpack `w` (whole super-blocks of `kind`) into `self` (the definition).
    pub fn unpack_scalar(&mut self, kind: Kind, w: &[u8]) {
        let bb = kind.block_bytes();
        let nsb = w.len() / bb;
        self.resize(kind, nsb);
        for (i, blk) in w.chunks_exact(bb).enumerate() {
            self.header(kind, i, blk);
            let o = &mut self.q[256 * i..256 * i + 256];
            match kind {
                Kind::Q6K => {
                    for (o, v) in o.iter_mut().zip(crate::kernels::unpack_q6(blk)) {
                        *o = v as i8;
                    }
                }
                Kind::Q4K | Kind::Q5K => {
                    let q5 = kind == Kind::Q5K;
                    let qs = &blk[if q5 { 48 } else { 16 }..];
                    for c in 0..4 {
                        for l in 0..32 {
                            let (h0, h1) = if q5 {
                                let h = blk[16 + l];
                                (((h >> (2 * c)) & 1) << 4, ((h >> (2 * c + 1)) & 1) << 4)
                            } else {
                                (0, 0)
                            };
                            o[64 * c + l] = ((qs[32 * c + l] & 0xF) | h0) as i8;
                            o[64 * c + 32 + l] = ((qs[32 * c + l] >> 4) | h1) as i8;
                        }
                    }
                }
            }
            self.correction(kind, i);
        }
    }

    /// AVX2 twin of [`KRow::unpack_scalar`].
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_avx2(&mut self, kind: Kind, w: &[u8]) {
        use core::arch::x86_64::*;
        let bb = kind.block_bytes();
        let nsb = w.len() / bb;
        self.resize(kind, nsb);
        let m4 = _mm256_set1_epi8(0xF);
        let one = _mm256_set1_epi8(1);
        for (i, blk) in w.chunks_exact(bb).enumerate() {
            self.header(kind, i, blk);
            let p = blk.as_ptr();
            let o = self.q.as_mut_ptr().add(256 * i) as *mut __m256i;
            // SAFETY (the loads and stores below): every load reads 32 bytes at an offset
            // below `bb − 31` inside the block; the 8 stores of 32 bytes fill the
            // super-block's 256 values in `q` (sized above).
            match kind {
                Kind::Q6K => {
                    for h in 0..2 {
                        for (c, v) in crate::kernels::avx2::q6_values(p, h)
                            .into_iter()
                            .enumerate()
                        {
                            _mm256_storeu_si256(o.add(4 * h + c), v);
                        }
                    }
                }
                Kind::Q4K | Kind::Q5K => {
                    let q5 = kind == Kind::Q5K;
                    let qs = p.add(if q5 { 48 } else { 16 });
                    let qh = if q5 {
                        _mm256_loadu_si256(p.add(16) as *const __m256i)
                    } else {
                        _mm256_setzero_si256()
                    };
                    // Bit `b` of each high-bit byte, moved to bit 4 (16-bit shifts: the bits
                    // that cross into a byte land above bit 0 and are masked off).
                    let bit = |b: usize| {
                        let v = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(b as i32));
                        _mm256_slli_epi16::<4>(_mm256_and_si256(v, one))
                    };
                    for c in 0..4 {
                        let q = _mm256_loadu_si256(qs.add(32 * c) as *const __m256i);
                        let mut lo = _mm256_and_si256(q, m4);
                        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                        if q5 {
                            lo = _mm256_or_si256(lo, bit(2 * c));
                            hi = _mm256_or_si256(hi, bit(2 * c + 1));
                        }
                        _mm256_storeu_si256(o.add(2 * c), lo);
                        _mm256_storeu_si256(o.add(2 * c + 1), hi);
                    }
                }
            }
            self.correction(kind, i);
        }
    }
}

/// Two unpacked weight rows of `kind` against tile `tile` of `act`: `out[i][l]` is, bit for
/// bit, the row kernel's `dot(row i, token 16·tile + l)`. Rows and tiles must have `act.nsb`
/// super-blocks, and the tiles [`Kind::groups`]` / 2` sum pairs per super-block.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI ([`crate::kernels::has_avx512_vnni`]).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn tile_pair(
    kind: Kind,
    w: [&KRow; 2],
    act: &KTiles,
    tile: usize,
) -> [[f32; TILE]; 2] {
    match kind {
        Kind::Q4K | Kind::Q5K => tile_pair_impl::<false>(w, act, tile),
        Kind::Q6K => tile_pair_impl::<true>(w, act, tile),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_pair_impl<const Q6: bool>(
    w: [&KRow; 2],
    act: &KTiles,
    tile: usize,
) -> [[f32; TILE]; 2] {
    use core::arch::x86_64::*;
    // Groups per super-block and 4-value chunks per group.
    let ng: usize = if Q6 { 16 } else { 8 };
    let ch = 64 / ng;
    let np = ng / 2;
    let nsb = act.nsb;
    for r in w {
        assert!(r.q.len() == 256 * nsb && r.sc.len() == ng * nsb && r.d.len() == nsb);
        assert!(r.pairs.len() == np * nsb && r.corr.len() == nsb);
        assert!(Q6 || r.dmin.len() == nsb);
    }
    assert!(act.tiles > tile);
    assert_eq!(
        act.pairs, np,
        "the tiles carry {np} sum pairs per super-block"
    );
    let ta = &act.act[tile * nsb * 256 * TILE..(tile + 1) * nsb * 256 * TILE];
    let tb = &act.bs[tile * nsb * 2 * np * TILE..(tile + 1) * nsb * 2 * np * TILE];
    let tdy = &act.dy[tile * nsb * TILE..(tile + 1) * nsb * TILE];
    // Per row, the definition's 8 float accumulators (super-block `i` goes to `i % 8`).
    let mut acc = [[_mm512_setzero_ps(); 8]; 2];
    for i in 0..nsb {
        // SAFETY (the reads below): i < nsb, so the super-block's 4096 activation bytes, its
        // sum pairs and 16 scales lie inside the tile slices above, and its 256 values, `ng`
        // scales, `np` pairs and correction inside each row (lengths asserted).
        let ap = ta.as_ptr().add(256 * TILE * i);
        let (q0, q1) = (w[0].q.as_ptr().add(256 * i), w[1].q.as_ptr().add(256 * i));
        let wq = |q: *const i8, c: usize| {
            _mm512_set1_epi32((q.add(4 * c) as *const i32).read_unaligned())
        };
        let sc = |r: usize, g: usize| _mm512_set1_epi32(*w[r].sc.get_unchecked(ng * i + g));
        let mut is = [0, 1].map(|r| _mm512_set1_epi32(-*w[r].corr.get_unchecked(i)));
        // Two groups at a time: 4 independent chains (2 groups × 2 rows) of `ch` steps.
        for g in (0..ng).step_by(2) {
            let z = _mm512_setzero_si512();
            let (mut t00, mut t01, mut t10, mut t11) = (z, z, z, z);
            for c in 0..ch {
                let (c0, c1) = (g * ch + c, (g + 1) * ch + c);
                let a0 = _mm512_loadu_si512(ap.add(64 * c0) as *const __m512i);
                let a1 = _mm512_loadu_si512(ap.add(64 * c1) as *const __m512i);
                t00 = _mm512_dpbusd_epi32(t00, a0, wq(q0, c0));
                t01 = _mm512_dpbusd_epi32(t01, a0, wq(q1, c0));
                t10 = _mm512_dpbusd_epi32(t10, a1, wq(q0, c1));
                t11 = _mm512_dpbusd_epi32(t11, a1, wq(q1, c1));
            }
            is[0] = _mm512_add_epi32(is[0], _mm512_mullo_epi32(t00, sc(0, g)));
            is[1] = _mm512_add_epi32(is[1], _mm512_mullo_epi32(t01, sc(1, g)));
            is[0] = _mm512_add_epi32(is[0], _mm512_mullo_epi32(t10, sc(0, g + 1)));
            is[1] = _mm512_add_epi32(is[1], _mm512_mullo_epi32(t11, sc(1, g + 1)));
        }
        let bp = tb.as_ptr().add(2 * np * TILE * i);
        let sums = |l: usize| _mm512_loadu_si512(bp.add(32 * l) as *const __m512i);
        let pr = |r: usize, l: usize| _mm512_set1_epi32(*w[r].pairs.get_unchecked(np * i + l));
        let dyv = _mm512_loadu_ps(tdy.as_ptr().add(TILE * i));
        if Q6 {
            // The offset of 32: −32 · Σ sc · Σ16y, pair by pair.
            for l in 0..np {
                let b = sums(l);
                is[0] = _mm512_dpwssd_epi32(is[0], b, pr(0, l));
                is[1] = _mm512_dpwssd_epi32(is[1], b, pr(1, l));
            }
        }
        let mut imin = [_mm512_setzero_si512(); 2];
        if !Q6 {
            for l in 0..np {
                let b = sums(l);
                imin[0] = _mm512_dpwssd_epi32(imin[0], b, pr(0, l));
                imin[1] = _mm512_dpwssd_epi32(imin[1], b, pr(1, l));
            }
        }
        for r in 0..2 {
            let a = &mut acc[r][i % 8];
            let dd = _mm512_mul_ps(_mm512_set1_ps(*w[r].d.get_unchecked(i)), dyv);
            *a = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(is[r]), *a);
            if !Q6 {
                let dm = _mm512_mul_ps(_mm512_set1_ps(*w[r].dmin.get_unchecked(i)), dyv);
                *a = _mm512_fnmadd_ps(dm, _mm512_cvtepi32_ps(imin[r]), *a);
            }
        }
    }
    // hsum8, lane by lane: (a0+a4 + a2+a6) + (a1+a5 + a3+a7).
    let red = |a: &[__m512; 8]| {
        let s0 = _mm512_add_ps(a[0], a[4]);
        let s1 = _mm512_add_ps(a[1], a[5]);
        let s2 = _mm512_add_ps(a[2], a[6]);
        let s3 = _mm512_add_ps(a[3], a[7]);
        _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3))
    };
    let mut out = [[0f32; TILE]; 2];
    _mm512_storeu_ps(out[0].as_mut_ptr(), red(&acc[0]));
    _mm512_storeu_ps(out[1].as_mut_ptr(), red(&acc[1]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q4_K, Q5_K and Q6_K super-blocks: the AVX2 unpacking against the scalar definition.
    #[test]
    fn avx2_unpack_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::kernels::has_avx2() {
                println!("SKIPPED: CPU lacks AVX2");
                return;
            }
            let mut s = 0x9e37_79b9_7f4a_7c15u64;
            for kind in [Kind::Q4K, Kind::Q5K, Kind::Q6K] {
                let bb = kind.block_bytes();
                // Offsets of the f16 scales, kept finite.
                let f16s: &[usize] = if kind == Kind::Q6K { &[209] } else { &[1, 3] };
                for nsb in [1usize, 2, 5] {
                    let w: Vec<u8> = (0..bb * nsb)
                        .map(|i| {
                            s ^= s << 13;
                            s ^= s >> 7;
                            s ^= s << 17;
                            if f16s.contains(&(i % bb)) {
                                (s as u8) & 0x7B
                            } else {
                                s as u8
                            }
                        })
                        .collect();
                    let (mut a, mut b) = (KRow::default(), KRow::default());
                    a.unpack_scalar(kind, &w);
                    // SAFETY: the feature was checked above.
                    unsafe { b.unpack_avx2(kind, &w) };
                    let top = match kind {
                        Kind::Q4K => 15,
                        Kind::Q5K => 31,
                        Kind::Q6K => 63,
                    };
                    assert!(a.q.iter().all(|&v| (0..=top).contains(&v)), "{kind:?}");
                    assert!(
                        a.q.iter().any(|&v| v > top / 2),
                        "{kind:?}: high bits reached"
                    );
                    assert_eq!(a.q, b.q, "{kind:?} nsb {nsb}");
                    assert_eq!(a.sc, b.sc, "{kind:?} nsb {nsb}");
                    assert_eq!(a.pairs, b.pairs, "{kind:?} nsb {nsb}");
                    assert_eq!(a.corr, b.corr, "{kind:?} nsb {nsb}");
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a.d), bits(&b.d), "{kind:?} nsb {nsb}");
                    assert_eq!(bits(&a.dmin), bits(&b.dmin), "{kind:?} nsb {nsb}");
                }
            }
        }
    }
}
