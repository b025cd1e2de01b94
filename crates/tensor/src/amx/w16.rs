//! Weight rows of Q4_K and Q6_K unpacked to their values times their sub-block scales
//! (`sc · q` as `i16`), the form the AMX kernels ([`super::kq`]) split into tiles.

use crate::quants::{f16_at, scale_min_k4};

/// One Q4_K weight row unpacked to `sc · q`.
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
    /// Q4_K's header); returns the 8 sub-block scales.
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
    /// [`KRow::unpack_scalar`] where the CPU has it.
    pub fn unpack(&mut self, w: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::has_avx512_vnni() {
            // SAFETY: AVX-512 F/BW/VL checked just above.
            return unsafe { self.unpack_avx512(w) };
        }
        self.unpack_scalar(w)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    unsafe fn unpack_avx512(&mut self, w: &[u8]) {
        use core::arch::x86_64::*;
        let nsb = w.len() / 144;
        self.resize(nsb);
        let m4 = _mm256_set1_epi8(0xF);
        for (i, blk) in w.chunks_exact(144).enumerate() {
            let sc = self.header(i, blk);
            for c in 0..4 {
                // SAFETY: the nibbles (16 + 32c..+32) lie inside the block; the 64 outputs
                // at 256i + 64c inside `w16` (sized above).
                let q = _mm256_loadu_si256(blk.as_ptr().add(16 + 32 * c) as *const __m256i);
                let lo = _mm256_and_si256(q, m4);
                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                let lo = _mm512_mullo_epi16(_mm512_cvtepu8_epi16(lo), _mm512_set1_epi16(sc[2 * c]));
                let hi =
                    _mm512_mullo_epi16(_mm512_cvtepu8_epi16(hi), _mm512_set1_epi16(sc[2 * c + 1]));
                let o = self.w16.as_mut_ptr().add(256 * i + 64 * c);
                _mm512_storeu_si512(o as *mut __m512i, lo);
                _mm512_storeu_si512(o.add(32) as *mut __m512i, hi);
            }
        }
    }

    /// Unpack `w` (whole 144-byte Q4_K super-blocks) into `self` (the definition).
    pub fn unpack_scalar(&mut self, w: &[u8]) {
        let nsb = w.len() / 144;
        self.resize(nsb);
        for (i, blk) in w.chunks_exact(144).enumerate() {
            let sc = self.header(i, blk);
            let q = &blk[16..144];
            let o = &mut self.w16[256 * i..256 * i + 256];
            for c in 0..4 {
                for l in 0..32 {
                    o[64 * c + l] = (q[32 * c + l] & 0xF) as i16 * sc[2 * c];
                    o[64 * c + 32 + l] = (q[32 * c + l] >> 4) as i16 * sc[2 * c + 1];
                }
            }
        }
    }
}

/// One Q6_K weight row unpacked to `sc · q`.
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
        for (i, blk) in w.chunks_exact(210).enumerate() {
            let sc = self.header(i, blk);
            for h in 0..2 {
                // SAFETY: a 210-byte block; the 128 outputs at 256i + 128h lie inside `w16`.
                let v = crate::kernels::avx2::q6_values(blk.as_ptr(), h);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Q4_K super-blocks: the AVX-512 unpacking against the scalar definition.
    #[test]
    fn avx512_unpack_matches_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            if !crate::kernels::has_avx512_vnni() {
                println!("SKIPPED: CPU lacks AVX-512 F/BW/VL/VNNI");
                return;
            }
            let mut s = 0x9e37_79b9_7f4a_7c15u64;
            for nsb in [1usize, 2, 5] {
                let w: Vec<u8> = (0..144 * nsb)
                    .map(|i| {
                        s ^= s << 13;
                        s ^= s >> 7;
                        s ^= s << 17;
                        // Finite f16 d and dmin; random scales and nibbles.
                        if i % 144 == 1 || i % 144 == 3 {
                            (s as u8) & 0x7B
                        } else {
                            s as u8
                        }
                    })
                    .collect();
                let (mut a, mut b) = (KRow::default(), KRow::default());
                a.unpack_scalar(&w);
                // SAFETY: the features were checked above.
                unsafe { b.unpack_avx512(&w) };
                assert_eq!(a.w16, b.w16, "nsb {nsb}");
                assert_eq!(a.mins, b.mins, "nsb {nsb}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a.d), bits(&b.d), "nsb {nsb}");
                assert_eq!(bits(&a.dmin), bits(&b.dmin), "nsb {nsb}");
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
