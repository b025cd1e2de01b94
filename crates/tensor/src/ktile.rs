//! Q4_K, Q5_K and Q6_K weights × 16-token tiles on AVX-512 VNNI (prefill and large batches).
//!
//! The layout idea of [`crate::q4tile`] (16 tokens in the lanes of a 512-bit vector, weights
//! broadcast as the instruction's memory operand, each weight row unpacked once per matrix
//! product), with 16-bit products: each weight row is unpacked to `q · sc` (the value times
//! its sub-block scale, at most 15 · 63) as `i16`, the activations to `i16` pairs, and one
//! `vpdpwssd` adds two exact products per token lane. So the sub-block scales cost nothing in
//! the inner loop.
//!
//! The arithmetic is the K-quant definition of [`crate::kernels`] (`dot_q4_k_scalar`), lane
//! for lane: per super-block, `isum[l] = Σ sc · q · y` over the values `v` with
//! `(v % 32) / 4 == l` (exact integers), `acc[l] += (d·dy) · isum[l]`, then
//! `acc[l] -= (dmin·dy) · imin[l]` with `imin[l] = m[2l]·Σy[2l] + m[2l+1]·Σy[2l+1]` for
//! `l < 4` and 0 otherwise; the result is `hsum8` of the lanes. Q6_K (`dot_q6_k_scalar`)
//! has no minimums: its rows unpack to `sc · q` with `q` in `0..64`, and the offset of 32
//! enters `isum[l]` as `−32 · (sc[2l]·Σ16y[2l] + sc[2l+1]·Σ16y[2l+1])`, one more `vpdpwssd`
//! of the tokens' 16-value sums. Each token of a tile gets exactly the bits of the row
//! kernels (tests check it).

use crate::aligned::Aligned;
use crate::quants::{f16_at, scale_min_k4};

/// Tokens per tile.
pub(crate) const TILE: usize = 16;

/// Activations of `n / TILE` whole tiles of 16 tokens (blocks of 256), interleaved for
/// [`tile_pair_k`].
#[derive(Default, Debug)]
pub(crate) struct KTiles {
    /// Super-blocks of 256 values per token.
    pub nsb: usize,
    /// Whole tiles.
    pub tiles: usize,
    /// Per tile and super-block, 128 value pairs of 64 bytes: for pair `p` and token `l`,
    /// bytes `64p + 4l..+4` hold values `2p` and `2p + 1` of token `l` as `i16`.
    pub act: Aligned<i16>,
    /// Sum pairs per super-block: 4 (Q4_K: sums of 32 values) or 8 (Q6_K: of 16 values).
    pub pairs: usize,
    /// Per tile, super-block and pair `l`, 16 tokens' `(Σy[2l], Σy[2l+1])` as `i16` pairs.
    pub bs: Aligned<i16>,
    /// Per tile and super-block, the 16 tokens' scales `d`.
    pub dy: Aligned<f32>,
}

impl KTiles {
    /// Interleave the whole tiles among `n` quantised rows of `k` values (`qs`, `d`: the
    /// [`crate::act::QAct`] fields, blocks of 256), with `sums` the activation sums the weight
    /// type needs, `per` of them per super-block: `bsum32` (8, Q4_K) or `bsum` (16, Q6_K).
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
                for (p, q) in src.chunks_exact(2).enumerate() {
                    let o = base + 32 * p + 2 * l;
                    self.act[o] = q[0] as i16;
                    self.act[o + 1] = q[1] as i16;
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

/// One Q4_K weight row unpacked for [`tile_pair_k`].
#[derive(Default, Debug, Clone)]
pub(crate) struct KRow {
    /// Per super-block, its 256 values times their sub-block scales, in value order.
    pub w16: Vec<i16>,
    /// Per super-block, `d` and `dmin` as f32.
    pub d: Vec<f32>,
    pub dmin: Vec<f32>,
    /// Per super-block and `l < 4`, the minimums `(m[2l], m[2l+1])` as an `i16` pair.
    pub mins: Vec<[i16; 2]>,
}

impl KRow {
    fn resize(&mut self, nsb: usize) {
        self.w16.resize(256 * nsb, 0);
        self.d.resize(nsb, 0.0);
        self.dmin.resize(nsb, 0.0);
        self.mins.resize(4 * nsb, [0; 2]);
    }

    /// Scales, minimums and `d`, `dmin` of super-block `i` (`blk`: its first 16 bytes are
    /// Q4_K's and Q5_K's header); returns the 8 sub-block scales.
    fn header(&mut self, i: usize, blk: &[u8]) -> [i16; 8] {
        self.d[i] = f16_at(blk, 0);
        self.dmin[i] = f16_at(blk, 2);
        let mut sc = [0i16; 8];
        let mut m = [0i16; 8];
        for s in 0..8 {
            let (a, b) = scale_min_k4(s, &blk[4..16]);
            sc[s] = a as i16;
            m[s] = b as i16;
        }
        for l in 0..4 {
            self.mins[4 * i + l] = [m[2 * l], m[2 * l + 1]];
        }
        sc
    }

    /// Unpack `w` (whole 144-byte Q4_K super-blocks) into `self`: the AVX-512 twin of
    /// [`KRow::unpack_scalar`] (`unpack_k_avx512`) where the CPU has it.
    pub fn unpack(&mut self, w: &[u8]) {
        self.unpack_k::<false>(w)
    }

    /// Unpack `w` (whole 144-byte Q4_K super-blocks) into `self` (the definition).
    pub fn unpack_scalar(&mut self, w: &[u8]) {
        self.unpack_k_scalar::<false>(w)
    }

    /// [`KRow::unpack`] for whole 176-byte Q5_K super-blocks (the values of
    /// `dot_q5_k_scalar` times their sub-block scales). Q5_K has Q4_K's scales, minimums and
    /// lane definition with 5-bit values, so its rows take [`tile_pair_k`] as they are.
    pub fn unpack_q5(&mut self, w: &[u8]) {
        self.unpack_k::<true>(w)
    }

    /// Block size and offset of the nibbles: Q4_K, or Q5_K (its 32 high-bit bytes at 16).
    const fn layout(q5: bool) -> (usize, usize) {
        if q5 {
            (176, 48)
        } else {
            (144, 16)
        }
    }

    fn unpack_k<const Q5: bool>(&mut self, w: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx512_vnni() {
            // SAFETY: AVX-512 F/BW/VL checked just above.
            return unsafe { self.unpack_k_avx512::<Q5>(w) };
        }
        self.unpack_k_scalar::<Q5>(w)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    unsafe fn unpack_k_avx512<const Q5: bool>(&mut self, w: &[u8]) {
        use core::arch::x86_64::*;
        let (bytes, qs) = Self::layout(Q5);
        let nsb = w.len() / bytes;
        self.resize(nsb);
        let m4 = _mm256_set1_epi8(0xF);
        let one = _mm256_set1_epi8(1);
        for (i, blk) in w.chunks_exact(bytes).enumerate() {
            let sc = self.header(i, blk);
            // SAFETY (the loads and stores below): Q5_K's high bits (bytes 16..48) and the
            // nibbles (qs + 32c..+32) lie inside the block; the 64 outputs at 256i + 64c
            // inside `w16` (sized above).
            let qh = if Q5 {
                _mm256_loadu_si256(blk.as_ptr().add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            // Bit `b` of each high-bit byte, moved to bit 4 (16-bit shifts: the bits that
            // cross into a byte land above bit 0 and are masked off).
            let bit = |b: usize| {
                let v = _mm256_srl_epi16(qh, _mm_cvtsi32_si128(b as i32));
                _mm256_slli_epi16::<4>(_mm256_and_si256(v, one))
            };
            for c in 0..4 {
                let q = _mm256_loadu_si256(blk.as_ptr().add(qs + 32 * c) as *const __m256i);
                let mut lo = _mm256_and_si256(q, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                if Q5 {
                    lo = _mm256_or_si256(lo, bit(2 * c));
                    hi = _mm256_or_si256(hi, bit(2 * c + 1));
                }
                let lo = _mm512_mullo_epi16(_mm512_cvtepu8_epi16(lo), _mm512_set1_epi16(sc[2 * c]));
                let hi =
                    _mm512_mullo_epi16(_mm512_cvtepu8_epi16(hi), _mm512_set1_epi16(sc[2 * c + 1]));
                let o = self.w16.as_mut_ptr().add(256 * i + 64 * c);
                _mm512_storeu_si512(o as *mut __m512i, lo);
                _mm512_storeu_si512(o.add(32) as *mut __m512i, hi);
            }
        }
    }

    fn unpack_k_scalar<const Q5: bool>(&mut self, w: &[u8]) {
        let (bytes, qs) = Self::layout(Q5);
        let nsb = w.len() / bytes;
        self.resize(nsb);
        for (i, blk) in w.chunks_exact(bytes).enumerate() {
            let sc = self.header(i, blk);
            let q = &blk[qs..bytes];
            let o = &mut self.w16[256 * i..256 * i + 256];
            for c in 0..4 {
                for l in 0..32 {
                    let (h0, h1) = if Q5 {
                        let h = blk[16 + l];
                        (((h >> (2 * c)) & 1) << 4, ((h >> (2 * c + 1)) & 1) << 4)
                    } else {
                        (0, 0)
                    };
                    o[64 * c + l] = ((q[32 * c + l] & 0xF) | h0) as i16 * sc[2 * c];
                    o[64 * c + 32 + l] = ((q[32 * c + l] >> 4) | h1) as i16 * sc[2 * c + 1];
                }
            }
        }
    }
}

/// One Q6_K weight row unpacked for [`tile_pair_q6`].
#[derive(Default, Debug, Clone)]
pub(crate) struct Q6Row {
    /// Per super-block, its 256 values (0..64) times their 16-value group scales, in value
    /// order (at most 63 · 128 in magnitude).
    pub w16: Vec<i16>,
    /// Per super-block, `d` as f32.
    pub d: Vec<f32>,
    /// Per super-block and lane `l < 8`, `(−32 · sc[2l], −32 · sc[2l+1])`: the part of the
    /// definition's `isum[l]` that offsets the values by 32, as a pair to multiply with the
    /// tokens' sums of 16 values.
    pub bias: Vec<[i16; 2]>,
}

impl Q6Row {
    fn resize(&mut self, nsb: usize) {
        self.w16.resize(256 * nsb, 0);
        self.d.resize(nsb, 0.0);
        self.bias.resize(8 * nsb, [0; 2]);
    }

    /// `d` and the bias pairs of super-block `i` (`blk`, 210 bytes); returns its 16 scales.
    fn header(&mut self, i: usize, blk: &[u8]) -> [i16; 16] {
        self.d[i] = f16_at(blk, 208);
        let sc: [i16; 16] = core::array::from_fn(|g| blk[192 + g] as i8 as i16);
        for l in 0..8 {
            self.bias[8 * i + l] = [-32 * sc[2 * l], -32 * sc[2 * l + 1]];
        }
        sc
    }

    /// Unpack `w` (whole 210-byte Q6_K super-blocks) into `self`: the AVX-512 twin of
    /// [`Q6Row::unpack_scalar`] where the CPU has it.
    pub fn unpack(&mut self, w: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx512_vnni() {
            // SAFETY: AVX-512 F/BW/VL checked just above.
            return unsafe { self.unpack_avx512(w) };
        }
        self.unpack_scalar(w)
    }

    /// Unpack `w` (whole 210-byte Q6_K super-blocks) into `self` (the definition).
    pub fn unpack_scalar(&mut self, w: &[u8]) {
        let nsb = w.len() / 210;
        self.resize(nsb);
        for (i, blk) in w.chunks_exact(210).enumerate() {
            let sc = self.header(i, blk);
            let q = crate::kernels::unpack_q6(blk);
            for (v, o) in self.w16[256 * i..256 * i + 256].iter_mut().enumerate() {
                *o = q[v] as i16 * sc[v / 16];
            }
        }
    }

    /// AVX-512 twin of [`Q6Row::unpack_scalar`].
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VL.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    pub unsafe fn unpack_avx512(&mut self, w: &[u8]) {
        use core::arch::x86_64::*;
        let nsb = w.len() / 210;
        self.resize(nsb);
        let m4 = _mm256_set1_epi8(0xF);
        let m3 = _mm256_set1_epi8(3);
        for (i, blk) in w.chunks_exact(210).enumerate() {
            let sc = self.header(i, blk);
            let p = blk.as_ptr();
            for h in 0..2 {
                // SAFETY: bytes 64h..64h + 64 (low bits) and 128 + 32h..+32 (high bits) lie
                // inside the 210-byte block; the 128 outputs at 256i + 128h inside `w16`.
                let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
                let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
                let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
                // Two high bits at bit 4 (16-bit shifts: the masks drop what crosses bytes).
                let hb = |x: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(x, m3));
                let v = [
                    _mm256_or_si256(_mm256_and_si256(ql0, m4), hb(qh)),
                    _mm256_or_si256(_mm256_and_si256(ql1, m4), hb(_mm256_srli_epi16::<2>(qh))),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                        hb(_mm256_srli_epi16::<4>(qh)),
                    ),
                    _mm256_or_si256(
                        _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                        hb(_mm256_srli_epi16::<6>(qh)),
                    ),
                ];
                for (c, v) in v.into_iter().enumerate() {
                    // Values 128h + 32c..+32: groups g and g + 1 of 16.
                    let g = 8 * h + 2 * c;
                    let s = _mm512_mask_blend_epi16(
                        0xFFFF_0000,
                        _mm512_set1_epi16(sc[g]),
                        _mm512_set1_epi16(sc[g + 1]),
                    );
                    let o = self.w16.as_mut_ptr().add(256 * i + 128 * h + 32 * c);
                    let x = _mm512_mullo_epi16(_mm512_cvtepu8_epi16(v), s);
                    _mm512_storeu_si512(o as *mut __m512i, x);
                }
            }
        }
    }
}

/// `acc + Σ` of the products of `a`'s `i16` pairs with the pair at `p`, broadcast
/// (`vpdpwssd` with a memory operand). Written as assembly because LLVM splits the intrinsic
/// into `vpmaddwd` + `vpaddd` (two instructions) in long accumulation chains.
///
/// # Safety
/// `p` must point to 4 readable bytes; the CPU must support AVX-512 F and VNNI.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd_bcst(
    acc: core::arch::x86_64::__m512i,
    a: core::arch::x86_64::__m512i,
    p: *const i32,
) -> core::arch::x86_64::__m512i {
    let mut acc = acc;
    // SAFETY: reads the 4 bytes at `p` (guaranteed by the caller); no other memory, stack
    // or flags are touched.
    core::arch::asm!(
        "vpdpwssd {acc}, {a}, dword ptr [{p}]{{1to16}}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        p = in(reg) p,
        options(pure, readonly, nostack, preserves_flags),
    );
    acc
}

/// One unpacked row as the tile kernel reads it: `w16` and `d` per super-block, then for
/// Q4_K `dmin` and the minimum pairs (4 per super-block), for Q6_K the bias pairs (8).
#[derive(Clone, Copy)]
struct Parts<'a> {
    w16: &'a [i16],
    d: &'a [f32],
    dmin: &'a [f32],
    pairs: &'a [[i16; 2]],
}

/// Two unpacked Q4_K weight rows against tile `tile` of `act`: `out[i][l]` is, bit for bit,
/// the row kernel's `dot(row i, token 16·tile + l)`. Rows and tiles must have `act.nsb`
/// super-blocks, and the tiles 4 sum pairs per super-block.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI ([`crate::kernels::has_avx512_vnni`]).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn tile_pair_k(w: [&KRow; 2], act: &KTiles, tile: usize) -> [[f32; TILE]; 2] {
    let [a, b] = w.map(|r| Parts {
        w16: &r.w16,
        d: &r.d,
        dmin: &r.dmin,
        pairs: &r.mins,
    });
    assert!(
        act.pairs == 4,
        "Q4_K tiles carry 4 sum pairs per super-block"
    );
    tile_pair_impl::<false>([a, b], act, tile)
}

/// [`tile_pair_k`] for two unpacked Q6_K rows; the tiles must carry 8 sum pairs (of 16
/// values) per super-block.
///
/// # Safety
/// As [`tile_pair_k`].
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn tile_pair_q6(w: [&Q6Row; 2], act: &KTiles, tile: usize) -> [[f32; TILE]; 2] {
    let [a, b] = w.map(|r| Parts {
        w16: &r.w16,
        d: &r.d,
        dmin: &[],
        pairs: &r.bias,
    });
    assert!(
        act.pairs == 8,
        "Q6_K tiles carry 8 sum pairs per super-block"
    );
    tile_pair_impl::<true>([a, b], act, tile)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn tile_pair_impl<const Q6: bool>(
    w: [Parts; 2],
    act: &KTiles,
    tile: usize,
) -> [[f32; TILE]; 2] {
    use core::arch::x86_64::*;
    let nsb = act.nsb;
    let np = act.pairs;
    for r in w {
        assert!(r.w16.len() == 256 * nsb && r.d.len() == nsb && r.pairs.len() == np * nsb);
        assert!(Q6 || r.dmin.len() == nsb);
    }
    assert!(act.tiles > tile);
    let ta = &act.act[tile * nsb * 256 * TILE..(tile + 1) * nsb * 256 * TILE];
    let tb = &act.bs[tile * nsb * 2 * np * TILE..(tile + 1) * nsb * 2 * np * TILE];
    let tdy = &act.dy[tile * nsb * TILE..(tile + 1) * nsb * TILE];
    let mut acc0 = [_mm512_setzero_ps(); 8];
    let mut acc1 = [_mm512_setzero_ps(); 8];
    let (w0, w1) = (w[0].w16.as_ptr(), w[1].w16.as_ptr());
    // Pair `l` of super-block `i` of a row, broadcast as one 32-bit value.
    let pair = |r: &Parts, i: usize, l: usize| {
        let m = r.pairs[np * i + l];
        _mm512_set1_epi32(((m[1] as u16 as u32) << 16 | m[0] as u16 as u32) as i32)
    };
    // The 16 tokens' sum pair `l` of super-block `i`.
    let sums = |i: usize, l: usize| {
        // SAFETY: i < nsb and l < np: the 32 values lie inside `tb`.
        _mm512_loadu_si512(tb.as_ptr().add(32 * (np * i + l)) as *const __m512i)
    };
    for i in 0..nsb {
        // SAFETY: i < nsb: the super-block's 256 · 16 activation values, its sums and 16
        // scales lie inside the tile slices above, its 256 weights inside each row.
        let ap = ta.as_ptr().add(256 * TILE * i);
        let dyv = _mm512_loadu_ps(tdy.as_ptr().add(TILE * i));
        let dd0 = _mm512_mul_ps(_mm512_set1_ps(w[0].d[i]), dyv);
        let dd1 = _mm512_mul_ps(_mm512_set1_ps(w[1].d[i]), dyv);
        // Weight pair `p` (values 2p, 2p + 1) of super-block i.
        let wp = |r: *const i16, p: usize| r.add(256 * i + 2 * p) as *const i32;
        // Lanes `l` and `l + 1` (literals, so that the accumulators stay in registers), each
        // row's integer sums split by sub-block parity: 8 independent chains of 8 `vpdpwssd`
        // (one chain per lane and row measured chain-bound); integer sums are exact in any
        // order.
        macro_rules! lanes {
            ($l:literal) => {{
                let z = _mm512_setzero_si512();
                // s<h><parity><row>
                let (mut s000, mut s001, mut s010, mut s011) = (z, z, z, z);
                let (mut s100, mut s101, mut s110, mut s111) = (z, z, z, z);
                macro_rules! one {
                    ($sb:expr, $h:literal, $q:literal, $a0:ident, $a1:ident) => {{
                        let p = 16 * $sb + 2 * ($l + $h) + $q;
                        let a = _mm512_loadu_si512(ap.add(32 * p) as *const __m512i);
                        $a0 = dpwssd_bcst($a0, a, wp(w0, p));
                        $a1 = dpwssd_bcst($a1, a, wp(w1, p));
                    }};
                }
                for sb in (0..8).step_by(2) {
                    one!(sb, 0, 0, s000, s001);
                    one!(sb, 0, 1, s000, s001);
                    one!(sb, 1, 0, s100, s101);
                    one!(sb, 1, 1, s100, s101);
                    one!(sb + 1, 0, 0, s010, s011);
                    one!(sb + 1, 0, 1, s010, s011);
                    one!(sb + 1, 1, 0, s110, s111);
                    one!(sb + 1, 1, 1, s110, s111);
                }
                let sums2 = [
                    (_mm512_add_epi32(s000, s010), _mm512_add_epi32(s001, s011)),
                    (_mm512_add_epi32(s100, s110), _mm512_add_epi32(s101, s111)),
                ];
                for (h, (mut s0, mut s1)) in sums2.into_iter().enumerate() {
                    let l = $l + h;
                    if Q6 {
                        // Lane l's bias, −32 · (sc[2l] · Σy[2l] + sc[2l+1] · Σy[2l+1]).
                        let b = sums(i, l);
                        s0 = _mm512_dpwssd_epi32(s0, b, pair(&w[0], i, l));
                        s1 = _mm512_dpwssd_epi32(s1, b, pair(&w[1], i, l));
                    }
                    acc0[l] = _mm512_add_ps(acc0[l], _mm512_mul_ps(dd0, _mm512_cvtepi32_ps(s0)));
                    acc1[l] = _mm512_add_ps(acc1[l], _mm512_mul_ps(dd1, _mm512_cvtepi32_ps(s1)));
                }
            }};
        }
        lanes!(0);
        lanes!(2);
        lanes!(4);
        lanes!(6);
        if !Q6 {
            let dm0 = _mm512_mul_ps(_mm512_set1_ps(w[0].dmin[i]), dyv);
            let dm1 = _mm512_mul_ps(_mm512_set1_ps(w[1].dmin[i]), dyv);
            for l in 0..4 {
                let b = sums(i, l);
                let m0 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), b, pair(&w[0], i, l));
                let m1 = _mm512_dpwssd_epi32(_mm512_setzero_si512(), b, pair(&w[1], i, l));
                acc0[l] = _mm512_sub_ps(acc0[l], _mm512_mul_ps(dm0, _mm512_cvtepi32_ps(m0)));
                acc1[l] = _mm512_sub_ps(acc1[l], _mm512_mul_ps(dm1, _mm512_cvtepi32_ps(m1)));
            }
            // Lanes 4..8: `acc -= (dmin·dy) · 0`, as the definition does.
            let z0 = _mm512_mul_ps(dm0, _mm512_setzero_ps());
            let z1 = _mm512_mul_ps(dm1, _mm512_setzero_ps());
            for l in 4..8 {
                acc0[l] = _mm512_sub_ps(acc0[l], z0);
                acc1[l] = _mm512_sub_ps(acc1[l], z1);
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
    _mm512_storeu_ps(out[0].as_mut_ptr(), red(&acc0));
    _mm512_storeu_ps(out[1].as_mut_ptr(), red(&acc1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q4_K (144-byte) and Q5_K (176-byte) super-blocks: the AVX-512 unpacking against the
    /// scalar definition.
    #[test]
    fn avx512_unpack_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::kernels::has_avx512_vnni() {
                println!("SKIPPED: CPU lacks AVX-512 F/BW/VL/VNNI");
                return;
            }
            type Unpack = fn(&mut KRow, &[u8]);
            // SAFETY (both closures): the features were checked above.
            let forms: [(usize, Unpack, Unpack); 2] = [
                (144, KRow::unpack_k_scalar::<false>, |r, w| unsafe {
                    r.unpack_k_avx512::<false>(w)
                }),
                (176, KRow::unpack_k_scalar::<true>, |r, w| unsafe {
                    r.unpack_k_avx512::<true>(w)
                }),
            ];
            let mut s = 0x9e37_79b9_7f4a_7c15u64;
            for (bytes, scalar, simd) in forms {
                for nsb in [1usize, 2, 5] {
                    let w: Vec<u8> = (0..bytes * nsb)
                        .map(|i| {
                            s ^= s << 13;
                            s ^= s >> 7;
                            s ^= s << 17;
                            // Finite f16 d and dmin; random scales, high bits and nibbles.
                            if i % bytes == 1 || i % bytes == 3 {
                                (s as u8) & 0x7B
                            } else {
                                s as u8
                            }
                        })
                        .collect();
                    let (mut a, mut b) = (KRow::default(), KRow::default());
                    scalar(&mut a, &w);
                    simd(&mut b, &w);
                    assert_eq!(a.w16, b.w16, "{bytes}-byte blocks, nsb {nsb}");
                    assert_eq!(a.mins, b.mins, "{bytes}-byte blocks, nsb {nsb}");
                    if bytes == 176 {
                        assert!(a.w16.iter().any(|&v| v > 15 * 63), "5-bit values reached");
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a.d), bits(&b.d), "{bytes}-byte blocks, nsb {nsb}");
                    assert_eq!(
                        bits(&a.dmin),
                        bits(&b.dmin),
                        "{bytes}-byte blocks, nsb {nsb}"
                    );
                }
            }
        }
    }

    #[test]
    fn q6_avx512_unpack_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::kernels::has_avx512_vnni() {
                println!("SKIPPED: CPU lacks AVX-512 F/BW/VL/VNNI");
                return;
            }
            let mut s = 0x2545_f491_4f6c_dd1du64;
            for nsb in [1usize, 2, 3, 7] {
                let w: Vec<u8> = (0..210 * nsb)
                    .map(|i| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        // A finite f16 d; random bits, scales (signed) and values elsewhere.
                        if i % 210 == 209 {
                            (s as u8) & 0x3B
                        } else {
                            s as u8
                        }
                    })
                    .collect();
                let (mut a, mut b) = (Q6Row::default(), Q6Row::default());
                a.unpack_scalar(&w);
                // SAFETY: feature checked above.
                unsafe { b.unpack_avx512(&w) };
                assert_eq!(a.w16, b.w16, "nsb {nsb}");
                assert_eq!(a.bias, b.bias, "nsb {nsb}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.d), bits(&b.d), "nsb {nsb}");
            }
        }
    }
}
