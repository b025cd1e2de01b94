//! 8-bit quantisation of f32 activations for the integer dot-product kernels.
//!
//! Each activation row is cut into blocks (32 values for the 32-element weight types,
//! 256 for the K-quants); a block stores `d = amax / 127` (f32) and
//! `q = clamp(round_ties_even(x · (1/d)), -127, 127)` (never -128), plus integer sums of `q`
//! that the kernels use for offsets and minimums: per 4 values (times 8, `lsum8`), per 16
//! (`bsum`) and per 32 (`bsum32`), and per 32 values `ds = d · Σq` (f32, for Q4_1/Q5_1).
//! The same quantised row is used by every weight row and every ISA path, so the only
//! float rounding in a quantised dot product is the per-block scale accumulation.

/// Quantised activations of `n` rows of `k` values, in blocks of `block` values.
#[derive(Default, Debug, Clone)]
pub(crate) struct QAct {
    pub block: usize,
    /// Whether the Q4_0 group layout (`qsq`, `nl8q`, `dq`) is built.
    pub groups: bool,
    pub k: usize,
    pub n: usize,
    pub d: Vec<f32>,
    pub ds: Vec<f32>,
    pub qs: Vec<i8>,
    pub lsum8: Vec<i32>,
    pub bsum: Vec<i16>,
    pub bsum32: Vec<i16>,
    /// Q4_0 layout (only when `block == 32` and `groups`): per group of 4 blocks of a row (the last group
    /// padded with zeros), 128 bytes: for `c < 4`, `j < 4`, bytes `32c + 8j..+8` hold values
    /// `8c..8c + 8` of block `j`.
    pub qsq: Vec<i8>,
    /// Per group, lane `2j + h`: `−8·Σ y` over the values `v` of block `j` with `(v/4)%2 == h`
    /// (the share of Q4_0's offset 8, to add to a sum of products with the unsigned nibbles).
    pub nl8q: Vec<i32>,
    /// Per group, lane `2j + h`: `d` of block `j` (0 for padding).
    pub dq: Vec<f32>,
}

/// One quantised activation row.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ActRow<'a> {
    pub d: &'a [f32],
    pub ds: &'a [f32],
    pub qs: &'a [i8],
    pub lsum8: &'a [i32],
    pub bsum: &'a [i16],
    pub bsum32: &'a [i16],
    pub qsq: &'a [i8],
    pub nl8q: &'a [i32],
    pub dq: &'a [f32],
}

/// Scalar definition of one block's quantisation; returns `d`.
pub(crate) fn quantize_block_scalar(xb: &[f32], qb: &mut [i8]) -> f32 {
    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, v) in qb.iter_mut().zip(xb) {
        // max/min rather than clamp: NaN must become -127 (as in the SIMD twin), not NaN.
        #[allow(clippy::manual_clamp)]
        let r = (v * id).round_ties_even().max(-127.0).min(127.0);
        *q = r as i8;
    }
    d
}

/// AVX2 twin of [`quantize_block_scalar`] (`xb.len()` a multiple of 32); also writes the
/// sums of each 4 consecutive quantised values to `quads` (`xb.len() / 4` entries).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_block_avx2(xb: &[f32], qb: &mut [i8], quads: &mut [i32]) -> f32 {
    use core::arch::x86_64::*;
    assert!(xb.len().is_multiple_of(32) && qb.len() == xb.len() && quads.len() == xb.len() / 4);
    let xp = xb.as_ptr();
    let absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    for i in (0..xb.len()).step_by(8) {
        // SAFETY: i + 8 <= xb.len().
        let v = _mm256_and_ps(_mm256_loadu_ps(xp.add(i)), absmask);
        // max(v, m) returns m when v is NaN (as f32::max ignores NaN), so m never holds NaN
        // and the horizontal maximum below is exact in any order.
        m = _mm256_max_ps(v, m);
    }
    let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m1 = _mm_max_ss(m2, _mm_movehdup_ps(m2));
    let amax = _mm_cvtss_f32(m1);
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let idv = _mm256_set1_ps(id);
    let lo = _mm256_set1_ps(-127.0);
    let hi = _mm256_set1_ps(127.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for i in (0..xb.len()).step_by(32) {
        let mut r = [_mm256_setzero_si256(); 4];
        for (j, rj) in r.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= xb.len().
            let v = _mm256_mul_ps(_mm256_loadu_ps(xp.add(i + 8 * j)), idv);
            let v = _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            // maxps returns its second operand when the first is NaN: NaN -> -127 as in scalar.
            let v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
            *rj = _mm256_cvtps_epi32(v);
        }
        let a = _mm256_packs_epi32(r[0], r[1]);
        let b = _mm256_packs_epi32(r[2], r[3]);
        let p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), perm);
        // SAFETY: i + 32 <= qb.len() and i / 4 + 8 <= quads.len().
        _mm256_storeu_si256(qb.as_mut_ptr().add(i) as *mut __m256i, p);
        let s = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_set1_epi8(1), p),
            _mm256_set1_epi16(1),
        );
        _mm256_storeu_si256(quads.as_mut_ptr().add(i / 4) as *mut __m256i, s);
    }
    d
}

/// Scalar block quantisation plus the sums of each 4 consecutive quantised values.
fn scalar_block(xb: &[f32], qb: &mut [i8], quads: &mut [i32]) -> f32 {
    let d = quantize_block_scalar(xb, qb);
    for (s, c) in quads.iter_mut().zip(qb.chunks_exact(4)) {
        *s = c.iter().map(|&v| v as i32).sum();
    }
    d
}

impl QAct {
    /// Quantise `x` (`n` rows of `k`, `k` a multiple of `block`) into `self`, reusing its buffers;
    /// `groups` also builds the Q4_0 group layout (only the Q4_0 kernels read it).
    pub fn quantize(
        &mut self,
        x: &[f32],
        n: usize,
        k: usize,
        block: usize,
        simd: bool,
        groups: bool,
    ) {
        debug_assert!(k.is_multiple_of(block) && block.is_multiple_of(32) && x.len() == n * k);
        self.block = block;
        self.groups = groups;
        self.k = k;
        self.n = n;
        let total = n * k;
        self.d.resize(total / block, 0.0);
        self.ds.resize(total / 32, 0.0);
        self.qs.resize(total, 0);
        self.lsum8.resize(total / 4, 0);
        self.bsum.resize(total / 16, 0);
        self.bsum32.resize(total / 32, 0);
        #[cfg(target_arch = "x86_64")]
        let use_avx2 = simd && crate::kernels::has_avx2();
        #[cfg(not(target_arch = "x86_64"))]
        let use_avx2 = {
            let _ = simd;
            false
        };
        let mut quad_buf = [0i32; 64];
        let quads = &mut quad_buf[..block / 4];
        for (b, (xb, qb)) in x
            .chunks_exact(block)
            .zip(self.qs.chunks_exact_mut(block))
            .enumerate()
        {
            #[cfg(target_arch = "x86_64")]
            let d = if use_avx2 {
                // SAFETY: AVX2/FMA/F16C presence checked above.
                unsafe { quantize_block_avx2(xb, qb, quads) }
            } else {
                scalar_block(xb, qb, quads)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let d = {
                let _ = use_avx2;
                scalar_block(xb, qb, quads)
            };
            self.d[b] = d;
            let base = b * block;
            for (c, quad) in quads.chunks_exact(8).enumerate() {
                let o = base + 32 * c;
                for (i, v) in quad.iter().enumerate() {
                    self.lsum8[o / 4 + i] = 8 * v;
                }
                let lo = (quad[0] + quad[1] + quad[2] + quad[3]) as i16;
                let hi = (quad[4] + quad[5] + quad[6] + quad[7]) as i16;
                self.bsum[o / 16] = lo;
                self.bsum[o / 16 + 1] = hi;
                self.bsum32[o / 32] = lo + hi;
                self.ds[o / 32] = d * (lo + hi) as f32;
            }
        }
        self.build_groups();
    }

    /// Groups of 4 blocks of 32 values per row (0 unless `block == 32` and `groups`).
    fn groups_per_row(&self) -> usize {
        if self.block == 32 && self.groups {
            (self.k / 32).div_ceil(4)
        } else {
            0
        }
    }

    fn build_groups(&mut self) {
        let ng = self.groups_per_row();
        let (k, n) = (self.k, self.n);
        self.qsq.clear();
        self.qsq.resize(n * ng * 128, 0);
        self.nl8q.clear();
        self.nl8q.resize(n * ng * 8, 0);
        self.dq.clear();
        self.dq.resize(n * ng * 8, 0.0);
        if ng == 0 {
            return;
        }
        let nb = k / 32;
        for t in 0..n {
            for b in 0..nb {
                let (g, j) = (t * ng + b / 4, b % 4);
                let q = &self.qs[t * k + 32 * b..t * k + 32 * b + 32];
                for c in 0..4 {
                    let o = 128 * g + 32 * c + 8 * j;
                    self.qsq[o..o + 8].copy_from_slice(&q[8 * c..8 * c + 8]);
                }
                let l8 = &self.lsum8[(t * k + 32 * b) / 4..(t * k + 32 * b) / 4 + 8];
                for h in 0..2 {
                    self.nl8q[8 * g + 2 * j + h] = -(0..4).map(|c| l8[2 * c + h]).sum::<i32>();
                    self.dq[8 * g + 2 * j + h] = self.d[t * nb + b];
                }
            }
        }
    }

    pub fn row(&self, t: usize) -> ActRow<'_> {
        let k = self.k;
        let nb = k / self.block;
        ActRow {
            d: &self.d[t * nb..(t + 1) * nb],
            ds: &self.ds[t * k / 32..(t + 1) * k / 32],
            qs: &self.qs[t * k..(t + 1) * k],
            lsum8: &self.lsum8[t * k / 4..(t + 1) * k / 4],
            bsum: &self.bsum[t * k / 16..(t + 1) * k / 16],
            bsum32: &self.bsum32[t * k / 32..(t + 1) * k / 32],
            qsq: &self.qsq[t * self.groups_per_row() * 128..(t + 1) * self.groups_per_row() * 128],
            nl8q: &self.nl8q[t * self.groups_per_row() * 8..(t + 1) * self.groups_per_row() * 8],
            dq: &self.dq[t * self.groups_per_row() * 8..(t + 1) * self.groups_per_row() * 8],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avx2_block_quantisation_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::kernels::has_avx2() {
                println!("SKIPPED: CPU lacks AVX2/FMA/F16C");
                return;
            }
            let mut s = 0x9e37_79b9_7f4a_7c15u64;
            for case in 0..200 {
                let x: Vec<f32> = (0..256)
                    .map(|i| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        let v = ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 10.0;
                        match case % 5 {
                            0 => v.round() / 2.0, // ties
                            1 if i == 3 => f32::NAN,
                            2 => 0.0,
                            _ => v,
                        }
                    })
                    .collect();
                let (mut a, mut b) = (vec![0i8; 256], vec![0i8; 256]);
                let da = quantize_block_scalar(&x, &mut a);
                // SAFETY: feature checked above.
                let mut quads = vec![0i32; 64];
                let db = unsafe { quantize_block_avx2(&x, &mut b, &mut quads) };
                assert_eq!(da.to_bits(), db.to_bits(), "case {case}");
                assert_eq!(a, b, "case {case}");
                let mut want = vec![0i32; 64];
                scalar_block(&x, &mut a, &mut want);
                assert_eq!(quads, want, "case {case}");
                assert!(a.iter().all(|&q| q != -128));
            }
        }
    }
}
