//! Q4_0 and Q8_0 weights × 16-token tiles on AVX-512 VNNI (prefill and large batches).
//!
//! The row kernels of [`crate::kernels`] unpack each weight row's nibbles again for every
//! few tokens and load each token's activations once per weight row. Here a 512-bit vector
//! holds 16 *tokens*: the activations of 16 tokens are interleaved once per matrix product
//! (for each block and each 4-value chunk, 16 × 4 bytes), and each weight row is unpacked
//! once into signed bytes, so one `vpdpbusd` with a broadcast 4-byte weight operand advances
//! 16 tokens, and one activation load serves two weight rows. The float steps also run on
//! 16 tokens at once.
//!
//! The arithmetic is the Q4_0 definition of [`crate::kernels::dot_q4_0_scalar`], lane for
//! lane: for block `b` (position `j = b % 4` in its group of 4) and half `h`, the exact
//! integer sum `Σ (nib − 8)·y` over the values `v` with `(v / 4) % 2 == h`, computed here as
//! `Σ (y + 128)·(nib − 8) − 128·Σ (nib − 8)` (activations offset to unsigned bytes, the
//! weights signed: `vpdpbusd` multiplies unsigned by signed bytes); then
//! `acc[2j + h] += (dw·dy) · isum` (product, then add), and `hsum8` of the 8 lanes. Each
//! token of a tile therefore gets exactly the bits of the row kernels (tests check it).
//! Blocks past the last full group contribute nothing in the definition's padding either.
//!
//! Q8_0 takes the same route with its own definition ([`crate::kernels::dot_q8_0_scalar`]):
//! the halves are values `0..16` and `16..32` and feed lanes `j` and `4 + j`.

use crate::aligned::Aligned;

/// Tokens per tile (one 512-bit vector of f32 or of 4-byte chunks).
pub(crate) const TILE: usize = 16;

/// Activations of `n / TILE` whole tiles of 16 tokens, and of one tile of 8 tokens after
/// them when there is a whole tile and at least 8 tokens remain, interleaved for [`tile_pair`] and [`tile_pair8`].
#[derive(Default, Debug)]
pub(crate) struct QTiles {
    /// Blocks of 32 values per token.
    pub nb: usize,
    /// Whole tiles of 16.
    pub tiles: usize,
    /// Whether a tile of 8 tokens follows them.
    pub half: bool,
    /// Per tile and block, `32·L` bytes (`L` the tile's tokens): for chunk `c < 8` and token
    /// `l < L`, bytes `4Lc + 4l..+4` hold values `4c..4c + 4` of token `l`'s block, plus 128,
    /// as `u8`. The 8-token tile comes last.
    pub act: Aligned<u8>,
    /// Per tile and block, the `L` tokens' block scales `d`.
    pub dy: Aligned<f32>,
}

impl QTiles {
    /// Tokens in tiles (the rest go to the row kernels).
    pub fn tokens(&self) -> usize {
        TILE * self.tiles + if self.half { 8 } else { 0 }
    }

    /// Interleave the tiles among `n` quantised rows of `k` values (`qs`, `d`: the
    /// [`crate::act::QAct`] fields, blocks of 32).
    pub fn build(&mut self, qs: &[i8], d: &[f32], n: usize, k: usize) {
        let nb = k / 32;
        self.nb = nb;
        self.tiles = n / TILE;
        // An 8-token tile only after a whole one: on its own, the unpacking of the weight rows
        // costs more than the 256-bit kernel saves over the two-row kernels (measured with
        // 8 tokens: 1.14x the time of the row kernels).
        self.half = self.tiles > 0 && n % TILE >= 8;
        let tokens = self.tokens();
        self.act.reset(tokens * k);
        self.dy.reset(tokens * nb);
        for t in 0..tokens {
            // Tile start (in tokens) and width.
            let (t0, lanes) = (
                t / TILE * TILE,
                if t < TILE * self.tiles { TILE } else { 8 },
            );
            let l = t - t0;
            let row = &qs[t * k..(t + 1) * k];
            for (b, src) in row.chunks_exact(32).enumerate() {
                let base = t0 * k + 32 * lanes * b;
                let dst = &mut self.act[base..base + 32 * lanes];
                for (c, q) in src.chunks_exact(4).enumerate() {
                    let v = u32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]);
                    let o = 4 * lanes * c + 4 * l;
                    dst[o..o + 4].copy_from_slice(&(v ^ 0x8080_8080).to_le_bytes());
                }
                self.dy[t0 * nb + lanes * b + l] = d[t * nb + b];
            }
        }
    }

    /// Tile `tile` of 16 tokens.
    fn tile(&self, tile: usize) -> (&[u8], &[f32]) {
        let nb = self.nb;
        (
            &self.act[tile * nb * 512..(tile + 1) * nb * 512],
            &self.dy[tile * nb * TILE..(tile + 1) * nb * TILE],
        )
    }

    /// The tile of 8 tokens (empty unless `half`; the argument is ignored).
    fn half(&self, _: usize) -> (&[u8], &[f32]) {
        let t0 = TILE * self.tiles;
        (&self.act[t0 * 32 * self.nb..], &self.dy[t0 * self.nb..])
    }
}

/// The weight types with a tile kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Q4_0,
    Q8_0,
}

impl Kind {
    pub fn of(dtype: crate::DType) -> Option<Kind> {
        match dtype {
            crate::DType::Q4_0 => Some(Kind::Q4_0),
            crate::DType::Q8_0 => Some(Kind::Q8_0),
            _ => None,
        }
    }
}

/// One Q4_0 or Q8_0 weight row unpacked for [`tile_pair`].
#[derive(Default, Debug, Clone)]
pub(crate) struct Q4Row {
    /// Per block, its 32 values (`nib − 8` for Q4_0) in value order (as signed bytes).
    pub w8: Vec<i8>,
    /// Per block, its scale as f32.
    pub dw: Vec<f32>,
    /// Per block and half `h`, `−128 · Σ q` over the values `q` of the half (Q4_0: the
    /// values `v` with `(v/4)%2 == h`; Q8_0: `16h..16h + 16`).
    pub corr: Vec<i32>,
}

impl Q4Row {
    fn resize(&mut self, nb: usize) {
        self.w8.resize(32 * nb, 0);
        self.dw.resize(nb, 0.0);
        self.corr.resize(2 * nb, 0);
    }

    /// Unpack `w` (whole 18-byte Q4_0 blocks) into `self`, reusing its buffers: the
    /// AVX2 twin of [`Q4Row::unpack_scalar`] where the CPU has it.
    pub fn unpack(&mut self, w: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx512_vnni() {
            // SAFETY: AVX-512 F/BW/VL (and AVX2, F16C) checked just above.
            return unsafe { self.unpack_avx512(w) };
        }
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx2() {
            // SAFETY: AVX2 and F16C checked just above.
            return unsafe { self.unpack_avx2(w) };
        }
        self.unpack_scalar(w)
    }

    /// AVX2 twin of [`Q4Row::unpack_scalar`] (the same bytes, scales and corrections).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn unpack_avx2(&mut self, w: &[u8]) {
        use core::arch::x86_64::*;
        let nb = w.len() / 18;
        self.resize(nb);
        let m4 = _mm_set1_epi8(0xF);
        let eight = _mm256_set1_epi8(8);
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        for b in 0..nb {
            // SAFETY: block b (18 bytes at 18b) lies inside `w`; the 32 output bytes at 32b,
            // the scale at b and the two corrections at 2b inside the buffers sized above.
            let blk = w.as_ptr().add(18 * b);
            let q = _mm_loadu_si128(blk.add(2) as *const __m128i);
            let lo = _mm_and_si128(q, m4);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(q), m4);
            let v = _mm256_set_m128i(hi, lo);
            let o = self.w8.as_mut_ptr().add(32 * b) as *mut __m256i;
            _mm256_storeu_si256(o, _mm256_sub_epi8(v, eight));
            // Sums of the nibbles per 4-value chunk (lane c = chunk c), then even and odd
            // chunks: [0+2+4+6, 1+3+5+7] in lanes 0 and 1.
            let cs = _mm256_madd_epi16(_mm256_maddubs_epi16(v, ones8), ones16);
            let cs = _mm256_add_epi32(cs, _mm256_shuffle_epi32::<0b01_00_11_10>(cs));
            let cs = _mm_add_epi32(
                _mm256_castsi256_si128(cs),
                _mm256_extracti128_si256::<1>(cs),
            );
            // Σ (nib − 8) over a half's 16 values = Σ nib − 128.
            *self.corr.get_unchecked_mut(2 * b) = -128 * (_mm_cvtsi128_si32(cs) - 128);
            *self.corr.get_unchecked_mut(2 * b + 1) = -128 * (_mm_extract_epi32::<1>(cs) - 128);
            let bits = (blk as *const u16).read_unaligned();
            *self.dw.get_unchecked_mut(b) =
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits as i16)));
        }
    }

    /// Unpack `w` (whole blocks of `kind`) into `self`, reusing its buffers.
    pub fn unpack_kind(&mut self, kind: Kind, w: &[u8]) {
        match kind {
            Kind::Q4_0 => self.unpack(w),
            Kind::Q8_0 => self.unpack_q8(w),
        }
    }

    /// AVX-512 twin of [`Q4Row::unpack_scalar`], 4 blocks per step (the same bytes, scales
    /// and corrections).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW and VL, AVX2 and F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
    pub unsafe fn unpack_avx512(&mut self, w: &[u8]) {
        use core::arch::x86_64::*;
        let nb = w.len() / 18;
        self.resize(nb);
        let m4 = _mm512_set1_epi8(0xF);
        let eight = _mm512_set1_epi8(8);
        // 128-bit lanes [lo0 hi0 lo1 hi1] and [lo2 hi2 lo3 hi3] from the low and high nibbles.
        let ia = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let ib = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        // Byte `j` of a block's 16 holds values `j` and `j + 16`, both in half `(j / 4) % 2`:
        // gather each half's 8 bytes into one 64-bit lane.
        let halves = _mm512_broadcast_i32x4(_mm_setr_epi8(
            0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15,
        ));
        let full = nb / 4;
        for g in 0..full {
            // SAFETY: blocks 4g..4g + 4 (72 bytes at 72g) lie inside `w`; the 128 output bytes
            // at 128g, 4 scales at 4g and 8 corrections at 8g inside the buffers sized above.
            let p = w.as_ptr().add(72 * g);
            let ld = |i: usize| _mm_loadu_si128(p.add(18 * i + 2) as *const __m128i);
            let q = _mm512_castsi128_si512(ld(0));
            let q = _mm512_inserti32x4::<1>(q, ld(1));
            let q = _mm512_inserti32x4::<2>(q, ld(2));
            let q = _mm512_inserti32x4::<3>(q, ld(3));
            let lo = _mm512_and_si512(q, m4);
            let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
            let o = self.w8.as_mut_ptr().add(128 * g);
            let v0 = _mm512_permutex2var_epi64(lo, ia, hi);
            let v1 = _mm512_permutex2var_epi64(lo, ib, hi);
            _mm512_storeu_si512(o as *mut __m512i, _mm512_sub_epi8(v0, eight));
            _mm512_storeu_si512(o.add(64) as *mut __m512i, _mm512_sub_epi8(v1, eight));
            // Σ nib per half (8 u64: block 0 half 0, block 0 half 1, ...), then
            // −128 · (Σ nib − 128) = (128 − Σ nib) · 128.
            let sums = _mm512_sad_epu8(
                _mm512_shuffle_epi8(_mm512_add_epi8(lo, hi), halves),
                _mm512_setzero_si512(),
            );
            let c = _mm512_cvtepi64_epi32(sums);
            let c = _mm256_slli_epi32::<7>(_mm256_sub_epi32(_mm256_set1_epi32(128), c));
            _mm256_storeu_si256(self.corr.as_mut_ptr().add(8 * g) as *mut __m256i, c);
            let h = |i: usize| (p.add(18 * i) as *const i16).read_unaligned();
            let d = _mm_cvtph_ps(_mm_setr_epi16(h(0), h(1), h(2), h(3), 0, 0, 0, 0));
            _mm_storeu_ps(self.dw.as_mut_ptr().add(4 * g), d);
        }
        self.unpack_scalar_from(w, 4 * full);
    }

    /// Unpack `w` (whole 34-byte Q8_0 blocks): the AVX2 twin of
    /// [`Q4Row::unpack_q8_scalar`] where the CPU has it.
    pub fn unpack_q8(&mut self, w: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx2() {
            // SAFETY: AVX2 and F16C checked just above.
            return unsafe { self.unpack_q8_avx2(w) };
        }
        self.unpack_q8_scalar(w)
    }

    /// AVX2 twin of [`Q4Row::unpack_q8_scalar`].
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn unpack_q8_avx2(&mut self, w: &[u8]) {
        use core::arch::x86_64::*;
        let nb = w.len() / 34;
        self.resize(nb);
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        for b in 0..nb {
            // SAFETY: block b (34 bytes at 34b) lies inside `w`; the outputs inside the
            // buffers sized above.
            let blk = w.as_ptr().add(34 * b);
            let v = _mm256_loadu_si256(blk.add(2) as *const __m256i);
            _mm256_storeu_si256(self.w8.as_mut_ptr().add(32 * b) as *mut __m256i, v);
            // Sums per 8 values (signed bytes times 1: maddubs takes the ones as unsigned),
            // then per 16: [0..16 | 16..32] in lanes 0 and 2 of the 64-bit sums.
            let cs = _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, v), ones16);
            let cs = _mm256_add_epi32(cs, _mm256_shuffle_epi32::<0b01_00_11_10>(cs));
            let cs = _mm256_add_epi32(cs, _mm256_shuffle_epi32::<0b10_11_00_01>(cs));
            *self.corr.get_unchecked_mut(2 * b) = -128 * _mm256_cvtsi256_si32(cs);
            *self.corr.get_unchecked_mut(2 * b + 1) =
                -128 * _mm_cvtsi128_si32(_mm256_extracti128_si256::<1>(cs));
            let bits = (blk as *const u16).read_unaligned();
            *self.dw.get_unchecked_mut(b) =
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits as i16)));
        }
    }

    /// Unpack `w` (whole 34-byte Q8_0 blocks) into `self` (the definition).
    pub fn unpack_q8_scalar(&mut self, w: &[u8]) {
        let nb = w.len() / 34;
        self.resize(nb);
        for (b, blk) in w.chunks_exact(34).enumerate() {
            self.dw[b] = crate::quants::f16_at(blk, 0);
            let q = &mut self.w8[32 * b..32 * b + 32];
            for (d, &x) in q.iter_mut().zip(&blk[2..34]) {
                *d = x as i8;
            }
            for h in 0..2 {
                let s: i32 = q[16 * h..16 * h + 16].iter().map(|&x| x as i32).sum();
                self.corr[2 * b + h] = -128 * s;
            }
        }
    }

    /// Unpack `w` (whole 18-byte Q4_0 blocks) into `self` (the definition).
    pub fn unpack_scalar(&mut self, w: &[u8]) {
        self.resize(w.len() / 18);
        self.unpack_scalar_from(w, 0);
    }

    /// [`Q4Row::unpack_scalar`] of blocks `b0..` (the buffers already sized).
    fn unpack_scalar_from(&mut self, w: &[u8], b0: usize) {
        for (b, blk) in w.chunks_exact(18).enumerate().skip(b0) {
            self.dw[b] = crate::quants::f16_at(blk, 0);
            let q = &mut self.w8[32 * b..32 * b + 32];
            for j in 0..16 {
                q[j] = (blk[2 + j] & 0xF) as i8 - 8;
                q[j + 16] = (blk[2 + j] >> 4) as i8 - 8;
            }
            let mut s = [0i32; 2];
            for (v, &x) in q.iter().enumerate() {
                s[(v / 4) % 2] += x as i32;
            }
            self.corr[2 * b] = -128 * s[0];
            self.corr[2 * b + 1] = -128 * s[1];
        }
    }
}

/// Two unpacked weight rows of `kind` against tile `tile` of `act`: `out[i][l]` is, bit for
/// bit, the row kernel's `dot(row i, token 16·tile + l)`. Rows and tiles must have `act.nb`
/// blocks.
///
/// # Safety
/// The CPU must support AVX-512 F, BW, VL and VNNI ([`crate::kernels::has_avx512_vnni`]).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn tile_pair(
    kind: Kind,
    w: [&Q4Row; 2],
    act: &QTiles,
    tile: usize,
) -> [[f32; TILE]; 2] {
    match kind {
        Kind::Q4_0 => tile_pair_impl::<false>(w, act, tile),
        Kind::Q8_0 => tile_pair_impl::<true>(w, act, tile),
    }
}

/// [`tile_pair`] for the 8-token tile after the whole tiles of 16 ([`QTiles::half`]), on
/// 256-bit vectors.
///
/// # Safety
/// As [`tile_pair`].
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn tile_pair8(kind: Kind, w: [&Q4Row; 2], act: &QTiles) -> [[f32; 8]; 2] {
    assert!(act.half);
    match kind {
        Kind::Q4_0 => tile_pair8_impl::<false>(w, act, 0),
        Kind::Q8_0 => tile_pair8_impl::<true>(w, act, 0),
    }
}

/// The tile kernel for `$lanes` tokens per vector (`$vf`/`$vi` the float and integer vector
/// types, then the intrinsics of that width), for Q4_0 (`Q8 == false`) or Q8_0 (`Q8 == true`)
/// rows; `$slice` selects the tile's activations and scales in a [`QTiles`].
#[cfg(target_arch = "x86_64")]
macro_rules! tile_kernel {
    ($name:ident, $lanes:expr, $slice:ident, $vf:ty, $vi:ty, $zero:ident, $loadps:ident,
     $loadsi:ident, $set1i:ident, $set1f:ident, $dp:ident, $mul:ident, $add:ident,
     $cvt:ident, $store:ident) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        unsafe fn $name<const Q8: bool>(
            w: [&Q4Row; 2],
            act: &QTiles,
            tile: usize,
        ) -> [[f32; $lanes]; 2] {
            use core::arch::x86_64::*;
            const L: usize = $lanes;
            // Chunk `c` of 8 (4 values each) feeds half `h`: Q4_0 alternates (h = c % 2), Q8_0
            // splits (h = c / 4); half `h` of the block at group position `j` feeds lane `lane(j, h)`.
            let chunk = |i: usize, h: usize| if Q8 { i + 4 * h } else { 2 * i + h };
            let lane = |j: usize, h: usize| if Q8 { j + 4 * h } else { 2 * j + h };
            let nb = act.nb;
            let (ta, tdy) = act.$slice(tile);
            for r in w {
                assert!(r.w8.len() == 32 * nb && r.dw.len() == nb && r.corr.len() == 2 * nb);
            }
            assert!(ta.len() == 32 * L * nb && tdy.len() == L * nb);
            let (w0, w1) = (w[0].w8.as_ptr(), w[1].w8.as_ptr());
            let mut acc0 = [$zero(); 8];
            let mut acc1 = [$zero(); 8];
            // One block `b` at group position `j` (a literal, so the accumulators stay in registers).
            macro_rules! step {
                        ($b:expr, $j:literal) => {{
                            let b: usize = $b;
                            // SAFETY: b < nb, so the 32·L activation bytes, L scales and 32 weight bytes of
                            // block b lie inside the slices whose lengths were asserted above.
                            let ap = ta.as_ptr().add(32 * L * b);
                            let dyv = $loadps(tdy.as_ptr().add(L * b));
                            let mut s00 = $set1i(*w[0].corr.get_unchecked(2 * b));
                            let mut s01 = $set1i(*w[0].corr.get_unchecked(2 * b + 1));
                            let mut s10 = $set1i(*w[1].corr.get_unchecked(2 * b));
                            let mut s11 = $set1i(*w[1].corr.get_unchecked(2 * b + 1));
                            let wq = |p: *const i8, c: usize| {
                                $set1i((p.add(32 * b + 4 * c) as *const i32).read_unaligned())
                            };
                            for i in 0..4 {
                                let (c0, c1) = (chunk(i, 0), chunk(i, 1));
                                let a0 = $loadsi(ap.add(4 * L * c0) as *const $vi);
                                let a1 = $loadsi(ap.add(4 * L * c1) as *const $vi);
                                s00 = $dp(s00, a0, wq(w0, c0));
                                s10 = $dp(s10, a0, wq(w1, c0));
                                s01 = $dp(s01, a1, wq(w0, c1));
                                s11 = $dp(s11, a1, wq(w1, c1));
                            }
                            let d0 = $mul($set1f(*w[0].dw.get_unchecked(b)), dyv);
                            let d1 = $mul($set1f(*w[1].dw.get_unchecked(b)), dyv);
                            let (l0, l1) = (lane($j, 0), lane($j, 1));
                            acc0[l0] = $add(acc0[l0], $mul(d0, $cvt(s00)));
                            acc0[l1] = $add(acc0[l1], $mul(d0, $cvt(s01)));
                            acc1[l0] = $add(acc1[l0], $mul(d1, $cvt(s10)));
                            acc1[l1] = $add(acc1[l1], $mul(d1, $cvt(s11)));
                        }};
                    }
            let full = nb / 4 * 4;
            let mut b = 0;
            while b < full {
                step!(b, 0);
                step!(b + 1, 1);
                step!(b + 2, 2);
                step!(b + 3, 3);
                b += 4;
            }
            // The last 1..3 blocks (the definition's padding blocks add +0.0, which changes nothing:
            // an accumulator that starts at +0.0 never holds -0.0).
            if full < nb {
                step!(full, 0);
            }
            if full + 1 < nb {
                step!(full + 1, 1);
            }
            if full + 2 < nb {
                step!(full + 2, 2);
            }
            // hsum8, lane by lane: (a0+a4 + a2+a6) + (a1+a5 + a3+a7).
            let red = |a: &[$vf; 8]| {
                let s0 = $add(a[0], a[4]);
                let s1 = $add(a[1], a[5]);
                let s2 = $add(a[2], a[6]);
                let s3 = $add(a[3], a[7]);
                $add($add(s0, s2), $add(s1, s3))
            };
            let mut out = [[0f32; L]; 2];
            $store(out[0].as_mut_ptr(), red(&acc0));
            $store(out[1].as_mut_ptr(), red(&acc1));
            out
        }
    };
}

#[cfg(target_arch = "x86_64")]
tile_kernel!(
    tile_pair_impl,
    16,
    tile,
    __m512,
    __m512i,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_loadu_si512,
    _mm512_set1_epi32,
    _mm512_set1_ps,
    _mm512_dpbusd_epi32,
    _mm512_mul_ps,
    _mm512_add_ps,
    _mm512_cvtepi32_ps,
    _mm512_storeu_ps
);
#[cfg(target_arch = "x86_64")]
tile_kernel!(
    tile_pair8_impl,
    8,
    half,
    __m256,
    __m256i,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_loadu_si256,
    _mm256_set1_epi32,
    _mm256_set1_ps,
    _mm256_dpbusd_epi32,
    _mm256_mul_ps,
    _mm256_add_ps,
    _mm256_cvtepi32_ps,
    _mm256_storeu_ps
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_unpack_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::kernels::has_avx2() {
                println!("SKIPPED: CPU lacks AVX2/FMA/F16C");
                return;
            }
            let mut s = 0x2545_f491_4f6c_dd1du64;
            for nb in [1usize, 3, 4, 7, 130] {
                let w: Vec<u8> = (0..18 * nb)
                    .map(|i| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        // Finite f16 scales (exponent below all-ones), random nibbles.
                        if i % 18 == 1 {
                            (s as u8) & 0x7B
                        } else {
                            s as u8
                        }
                    })
                    .collect();
                let w8: Vec<u8> = (0..34 * nb)
                    .map(|i| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        if i % 34 == 1 {
                            (s as u8) & 0x7B
                        } else {
                            s as u8
                        }
                    })
                    .collect();
                let (mut a, mut b) = (Q4Row::default(), Q4Row::default());
                a.unpack_q8_scalar(&w8);
                // SAFETY: feature checked above.
                unsafe { b.unpack_q8_avx2(&w8) };
                assert_eq!(a.w8, b.w8, "q8 nb {nb}");
                assert_eq!(a.corr, b.corr, "q8 nb {nb}");
                let mut a = Q4Row::default();
                a.unpack_scalar(&w);
                let mut twins = Vec::new();
                let mut b = Q4Row::default();
                // SAFETY: feature checked above.
                unsafe { b.unpack_avx2(&w) };
                twins.push(("avx2", b));
                if crate::kernels::has_avx512_vnni() {
                    let mut b = Q4Row::default();
                    // SAFETY: feature checked just above.
                    unsafe { b.unpack_avx512(&w) };
                    twins.push(("avx512", b));
                } else {
                    println!("avx512 unpack not run: CPU lacks AVX-512 F/BW/VL");
                }
                let bits = |r: &Q4Row| r.dw.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                for (name, b) in &twins {
                    assert_eq!(a.w8, b.w8, "{name} nb {nb}");
                    assert_eq!(a.corr, b.corr, "{name} nb {nb}");
                    assert_eq!(bits(&a), bits(b), "{name} nb {nb}");
                }
            }
        }
    }
}
