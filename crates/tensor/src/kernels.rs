//! Row · activation dot products for every stored type.
//!
//! Each kernel exists as a plain scalar function (the definition) and, on x86-64, as an
//! AVX2+FMA+F16C twin that performs the same arithmetic in the same order, so the two agree
//! bit for bit (tests check this). The order is fixed per type:
//!
//! * float types (F32/F16/BF16): 32 partial sums (element `k` goes to sum `k % 32`, each
//!   product added with a fused multiply-add: one rounding), reduced as
//!   `s[l] = (p[l]+p[l+8]) + (p[l+16]+p[l+24])`, then [`hsum8`]; a tail of fewer than 32
//!   values is summed in order (fused as well) and added last. (The f32 sums of
//!   [`crate::ops`] use the same order without fusing.)
//! * Q4_0: see [`dot_q4_0_scalar`] (blocks in groups of 4, 2 lanes per block).
//! * Q5_0, Q8_0 (× 32-value activation blocks): blocks go in groups of 4 (the last padded
//!   with empty blocks); block `j` of a group gives lane `j` the exact integer sum over its
//!   values 0..16 and lane `4 + j` the sum over values 16..32; `acc[l] += (dw·dy) · isum[l]`
//!   (product then add, `0 · 0` for padding) over the groups in order; the result is
//!   [`hsum8`] of `acc`.
//! * Q4_1, Q5_1: as above, plus a separate in-order sum of `m · (dy·Σqy)`, added after [`hsum8`].
//! * Q4_K, Q5_K, Q6_K (× 256-value blocks): per super-block `i`, the exact integer
//!   `isum = Σ sc·q·y` over its 256 values (`sc` the value's sub-block scale; Q6_K's `-32`
//!   offset enters as `-32·Σ_g sc[g]·Σy[g]` over its 16-value groups) and, for Q4_K/Q5_K,
//!   `imin = Σ_s m[s]·Σy[s]` over the 32-value sub-blocks; then, with `l = i % 8`,
//!   `acc[l] = fma(d·dy, isum, acc[l])` and for Q4_K/Q5_K `acc[l] = fma(−dmin·dy, imin,
//!   acc[l])` (one rounding each). The result is [`hsum8`]`(acc)`. The integer sums are
//!   exact in any order, so a kernel may split them however its instructions like: the row
//!   kernels keep 8 or 16 integer lanes per super-block and add them up for 8 super-blocks
//!   at once (a transposing reduction), so that the float steps of 8 super-blocks are one
//!   vector operation each; the tile kernels ([`crate::ktile`]) multiply whole sub-block
//!   sums by their scales.
//!
//! On CPUs with AVX-512 F/BW/VL/VNNI, the 32-value block kernels (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0) take their integer sums from `vpdpbusd` instead of `maddubs` + `madd` (Q4_0 unpacks
//! a group of 4 blocks into 512-bit vectors with one word permutation and runs two 512-bit
//! `vpdpbusd` per token, and also comes in a two-weight-row form that shares the activation
//! loads, with both rows' float steps in one 512-bit vector); the sums are exact either way,
//! so those kernels give the same bits too. The K-quant row kernels apply their sub-block
//! scales with `vpdpwssd` (the `madd` + add of the AVX2 form in one exact step; Q4_K and
//! Q5_K on 512-bit vectors holding a chunk's low and high nibbles, or on 256-bit ones where
//! AVX-512 runs on 256-bit units). BF16 weights keep the f32 path:
//! `vdpbf16ps` would round the activations to bf16.
//!
//! For batches of 2 tokens or more on AVX-512, the float types run register blocks of 4 weight
//! rows × 3 tokens (`ftile`). For batches of 16 tokens or more, Q4_0, Q8_0, Q4_K, Q5_K and
//! Q6_K weights also have tile kernels
//! with the tokens in the vector lanes (`q4tile`, `ktile`), and on CPUs with Intel AMX,
//! Q4_K and Q6_K take their integer sums from tile multiplications (`amx`); they compute
//! these same definitions, bit for bit.
//!
//! The AVX2 kernels also come in multi-row forms for prefill and batched decode (2 or 4
//! activation rows for the quantised types, 2 for the float types) that share the weight
//! unpacking and loads; each
//! row's arithmetic is exactly the single-row kernel's. They prefetch ahead of the weight
//! bytes they read (a hint; it never changes values): ~1 KB into L1 for the quantised types
//! but Q4_0, 8 KB into L2 for Q4_0 and the float types.

use crate::act::ActRow;
use crate::quants::{f16_at, scale_min_k4};
use half::{bf16, f16};

/// The fixed 8-lane reduction tree (the same as ggml's `hsum_float_8`).
#[inline(always)]
pub(crate) fn hsum8(a: &[f32; 8]) -> f32 {
    let s = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

#[inline(always)]
pub(crate) fn reduce32(p: &[f32; 32]) -> f32 {
    let mut s = [0f32; 8];
    for l in 0..8 {
        s[l] = (p[l] + p[l + 8]) + (p[l + 16] + p[l + 24]);
    }
    hsum8(&s)
}

// ------------------------------------------------------------------ scalar definitions

/// Float dot product in the fixed order described above; `w(k)` yields weight `k` as f32.
#[inline(always)]
fn dot_float_scalar(len: usize, w: impl Fn(usize) -> f32, x: &[f32]) -> f32 {
    let n32 = len / 32 * 32;
    let mut p = [0f32; 32];
    for c in (0..n32).step_by(32) {
        for l in 0..32 {
            p[l] = w(c + l).mul_add(x[c + l], p[l]);
        }
    }
    let mut tail = 0f32;
    for k in n32..len {
        tail = w(k).mul_add(x[k], tail);
    }
    reduce32(&p) + tail
}

pub(crate) fn dot_f32b_scalar(w: &[u8], x: &[f32]) -> f32 {
    dot_float_scalar(
        x.len(),
        |k| f32::from_le_bytes([w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]]),
        x,
    )
}

pub(crate) fn dot_f16_scalar(w: &[u8], x: &[f32]) -> f32 {
    dot_float_scalar(
        x.len(),
        |k| f16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32(),
        x,
    )
}

pub(crate) fn dot_bf16_scalar(w: &[u8], x: &[f32]) -> f32 {
    dot_float_scalar(
        x.len(),
        |k| bf16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32(),
        x,
    )
}

/// Lane sums of a 32-value block: `isum[l] = Σ_{k=4l}^{4l+3} qw[k]·qy[k]`.
#[inline(always)]
fn lanes32(qw: &[i32; 32], qy: &[i8]) -> [i32; 8] {
    let mut s = [0i32; 8];
    for l in 0..8 {
        for k in 4 * l..4 * l + 4 {
            s[l] += qw[k] * qy[k] as i32;
        }
    }
    s
}

/// Shared loop of the 32-value types: `unpack(block) -> (dw, mw, q[32])`.
#[inline(always)]
fn dot_q32_scalar(
    w: &[u8],
    bb: usize,
    a: &ActRow,
    with_min: bool,
    unpack: impl Fn(&[u8]) -> (f32, f32, [i32; 32]),
) -> f32 {
    let nb = w.len() / bb;
    let mut acc = [0f32; 8];
    let mut summ = 0f32;
    for g in 0..nb.div_ceil(4) {
        let mut isum = [0i32; 8];
        let mut dd = [0f32; 4];
        for j in 0..4 {
            let b = 4 * g + j;
            if b >= nb {
                continue;
            }
            let (dw, mw, q) = unpack(&w[bb * b..bb * b + bb]);
            dd[j] = dw * a.d[b];
            let s = lanes32(&q, &a.qs[32 * b..32 * b + 32]);
            isum[j] = s[0] + s[1] + s[2] + s[3];
            isum[4 + j] = s[4] + s[5] + s[6] + s[7];
            if with_min {
                summ += mw * a.ds[b];
            }
        }
        for l in 0..8 {
            acc[l] += dd[l % 4] * isum[l] as f32;
        }
    }
    if with_min {
        hsum8(&acc) + summ
    } else {
        hsum8(&acc)
    }
}

fn unpack_q4(qs: &[u8], off: i32) -> [i32; 32] {
    let mut q = [0i32; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0xF) as i32 - off;
        q[j + 16] = (qs[j] >> 4) as i32 - off;
    }
    q
}

fn unpack_q5(qh: &[u8], qs: &[u8], off: i32) -> [i32; 32] {
    let h = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0i32; 32];
    for j in 0..16 {
        q[j] = ((qs[j] & 0xF) as i32 | (((h >> j) & 1) << 4) as i32) - off;
        q[j + 16] = ((qs[j] >> 4) as i32 | (((h >> (j + 16)) & 1) << 4) as i32) - off;
    }
    q
}

/// Q4_0 uses its own lane layout (the SIMD path takes 4 blocks per vector): blocks go in
/// groups of 4 (the last group padded with empty blocks); block `j` of a group owns lanes
/// `2j` and `2j + 1`, lane `2j + h` summing the values `v` with `(v / 4) % 2 == h` exactly
/// in integers; `acc[2j + h] += (dw·dy) · isum` (product then add, `0 · 0` for a padding
/// block) over the groups in order; the result is [`hsum8`] of the 8 lanes.
pub(crate) fn dot_q4_0_scalar(w: &[u8], a: &ActRow) -> f32 {
    let mut acc = [0f32; 8];
    let nb = w.len() / 18;
    for g in 0..nb.div_ceil(4) {
        for j in 0..4 {
            let b = 4 * g + j;
            let (d, s) = if b < nb {
                let blk = &w[18 * b..18 * b + 18];
                let q = unpack_q4(&blk[2..18], 8);
                let y = &a.qs[32 * b..32 * b + 32];
                let mut s = [0i32; 2];
                for v in 0..32 {
                    s[(v / 4) % 2] += q[v] * y[v] as i32;
                }
                (f16_at(blk, 0) * a.d[b], s)
            } else {
                (0.0, [0, 0])
            };
            for h in 0..2 {
                acc[2 * j + h] += d * s[h] as f32;
            }
        }
    }
    hsum8(&acc)
}

pub(crate) fn dot_q4_1_scalar(w: &[u8], a: &ActRow) -> f32 {
    dot_q32_scalar(w, 20, a, true, |b| {
        (f16_at(b, 0), f16_at(b, 2), unpack_q4(&b[4..20], 0))
    })
}

pub(crate) fn dot_q5_0_scalar(w: &[u8], a: &ActRow) -> f32 {
    dot_q32_scalar(w, 22, a, false, |b| {
        (f16_at(b, 0), 0.0, unpack_q5(&b[2..6], &b[6..22], 16))
    })
}

pub(crate) fn dot_q5_1_scalar(w: &[u8], a: &ActRow) -> f32 {
    dot_q32_scalar(w, 24, a, true, |b| {
        (
            f16_at(b, 0),
            f16_at(b, 2),
            unpack_q5(&b[4..8], &b[8..24], 0),
        )
    })
}

pub(crate) fn dot_q8_0_scalar(w: &[u8], a: &ActRow) -> f32 {
    dot_q32_scalar(w, 34, a, false, |b| {
        let mut q = [0i32; 32];
        for j in 0..32 {
            q[j] = b[2 + j] as i8 as i32;
        }
        (f16_at(b, 0), 0.0, q)
    })
}

/// Q4_K/Q5_K: `q(blk)` yields the 256 unsigned values of a super-block.
#[inline(always)]
fn dot_k4_scalar(w: &[u8], bb: usize, a: &ActRow, q: impl Fn(&[u8]) -> [i32; 256]) -> f32 {
    let mut acc = [0f32; 8];
    for (i, b) in w.chunks_exact(bb).enumerate() {
        let qy = &a.qs[256 * i..256 * i + 256];
        let bs = &a.bsum32[8 * i..8 * i + 8];
        let qv = q(b);
        let (mut isum, mut imin) = (0i32, 0i32);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, &b[4..16]);
            let mut t = 0i32;
            for v in 32 * s..32 * s + 32 {
                t += qv[v] * qy[v] as i32;
            }
            isum += sc as i32 * t;
            imin += m as i32 * bs[s] as i32;
        }
        let dd = f16_at(b, 0) * a.d[i];
        let dm = f16_at(b, 2) * a.d[i];
        let l = i % 8;
        acc[l] = dd.mul_add(isum as f32, acc[l]);
        acc[l] = (-dm).mul_add(imin as f32, acc[l]);
    }
    hsum8(&acc)
}

pub(crate) fn dot_q4_k_scalar(w: &[u8], a: &ActRow) -> f32 {
    dot_k4_scalar(w, 144, a, |b| {
        let qs = &b[16..144];
        let mut q = [0i32; 256];
        for c in 0..4 {
            for l in 0..32 {
                q[64 * c + l] = (qs[32 * c + l] & 0xF) as i32;
                q[64 * c + 32 + l] = (qs[32 * c + l] >> 4) as i32;
            }
        }
        q
    })
}

pub(crate) fn dot_q5_k_scalar(w: &[u8], a: &ActRow) -> f32 {
    dot_k4_scalar(w, 176, a, |b| {
        let qh = &b[16..48];
        let qs = &b[48..176];
        let mut q = [0i32; 256];
        for c in 0..4 {
            for l in 0..32 {
                let h0 = ((qh[l] >> (2 * c)) & 1) << 4;
                let h1 = ((qh[l] >> (2 * c + 1)) & 1) << 4;
                q[64 * c + l] = ((qs[32 * c + l] & 0xF) | h0) as i32;
                q[64 * c + 32 + l] = ((qs[32 * c + l] >> 4) | h1) as i32;
            }
        }
        q
    })
}

/// Q6_K super-block unsigned values (0..63) in element order.
#[inline(always)]
pub(crate) fn unpack_q6(b: &[u8]) -> [i32; 256] {
    let mut q = [0i32; 256];
    for h in 0..2 {
        let ql = &b[64 * h..64 * h + 64];
        let qh = &b[128 + 32 * h..128 + 32 * h + 32];
        for l in 0..32 {
            q[128 * h + l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i32;
            q[128 * h + 32 + l] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i32;
            q[128 * h + 64 + l] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32;
            q[128 * h + 96 + l] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32;
        }
    }
    q
}

pub(crate) fn dot_q6_k_scalar(w: &[u8], a: &ActRow) -> f32 {
    let mut acc = [0f32; 8];
    for (i, b) in w.chunks_exact(210).enumerate() {
        let qy = &a.qs[256 * i..256 * i + 256];
        let bs = &a.bsum[16 * i..16 * i + 16];
        let q = unpack_q6(b);
        let mut isum = 0i32;
        for g in 0..16 {
            let sc = b[192 + g] as i8 as i32;
            let mut t = 0i32;
            for v in 16 * g..16 * g + 16 {
                t += q[v] * qy[v] as i32;
            }
            isum += sc * (t - 32 * bs[g] as i32);
        }
        let dd = f16_at(b, 208) * a.d[i];
        acc[i % 8] = dd.mul_add(isum as f32, acc[i % 8]);
    }
    hsum8(&acc)
}

// ------------------------------------------------------------------ AVX2 twins

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    //! AVX2 + FMA + F16C versions. Callers must have checked the CPU features
    //! (see [`crate::kernels::has_avx2`]); every function is `unsafe` for that reason only.
    //! All memory accesses are unaligned loads from slices whose lengths the callers checked.
    use super::ActRow;
    use core::arch::x86_64::*;

    #[inline(always)]
    unsafe fn f16_to_f32(p: *const u8) -> f32 {
        // SAFETY: reads 2 bytes at `p`, which the caller guarantees are in bounds.
        let bits = (p as *const u16).read_unaligned();
        // A broadcast (not an insert into an undefined register) avoids a false dependency
        // on whatever register LLVM picks, which serialised the block loop.
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(bits as i16)))
    }

    /// Prefetch hint for `lines` cache lines starting `dist` bytes past `p` (hints never fault,
    /// and the address is formed with wrapping arithmetic, so running past the end is fine).
    #[inline(always)]
    unsafe fn prefetch(p: *const u8, dist: usize, lines: usize) {
        for l in 0..lines {
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(dist + 64 * l) as *const i8);
        }
    }

    /// How far ahead of the current weight bytes the kernels prefetch.
    const PF_DIST: usize = 1152;

    /// [`prefetch`] into L2 only (`prefetcht2`).
    #[inline(always)]
    unsafe fn prefetch_l2(p: *const u8, dist: usize, lines: usize) {
        for l in 0..lines {
            _mm_prefetch::<_MM_HINT_T2>(p.wrapping_add(dist + 64 * l) as *const i8);
        }
    }

    /// How far ahead the float, Q4_0 and K-quant row kernels prefetch, into L2
    /// ([`prefetch_l2`]). On Zen 4, 8 KB ahead into L2 instead of [`PF_DIST`] into L1 made
    /// BF16 decode 1.5-1.7x and Q4_0 decode about 1.08x faster; for the K-quants it showed
    /// only once their Q4_K matrices went to the packed kernel (`x8`): Q4_K_M decode, where
    /// the Q6_K row kernel then takes a quarter of the time, 6.55 against 7.22 tokens/s on
    /// average over five alternated pairs, each pair the same way. Q8_0 keeps [`prefetch`].
    const L2_PF_DIST: usize = 8192;

    #[inline(always)]
    unsafe fn hsum8_ps(v: __m256) -> f32 {
        let r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r)
    }

    /// Signed i8 × i8 products summed over each 4 consecutive bytes (8 i32 lanes).
    /// `y` must not contain -128 (activations are in -127..=127).
    #[inline(always)]
    unsafe fn mul_sum_i8<const V: u8>(x: __m256i, y: __m256i) -> __m256i {
        let ax = _mm256_sign_epi8(x, x);
        let sy = _mm256_sign_epi8(y, x);
        mul_sum_u8::<V>(ax, sy)
    }

    /// Unsigned u8 × i8 products summed over each 4 consecutive bytes.
    #[inline(always)]
    unsafe fn mul_sum_u8<const V: u8>(x: __m256i, y: __m256i) -> __m256i {
        dpbusd::<V>(_mm256_setzero_si256(), x, y)
    }

    /// Integer paths of the 32-value block kernels: `maddubs` + `madd` (AVX2), `vpdpbusd`
    /// (AVX-512 VNNI), and the VNNI kernels' exact data flow with each `vpdpbusd` built from
    /// AVX2 instructions, so that tests run that data flow on any AVX2 CPU.
    pub(crate) const AVX2: u8 = 0;
    pub(crate) const VNNI: u8 = 1;
    #[cfg(test)]
    pub(crate) const VNNI_EMULATED: u8 = 2;

    /// `acc + Σ_{4 consecutive bytes} u·s` per i32 lane (`u` unsigned, `s` signed bytes).
    /// The AVX2 form's 16-bit pair sums cannot saturate for the callers' operands (unsigned
    /// bytes at most 128, signed ones at most 127 in size), so every form is exact and all
    /// agree bit for bit.
    #[inline(always)]
    unsafe fn dpbusd<const V: u8>(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        if V == VNNI {
            _mm256_dpbusd_epi32(acc, u, s)
        } else {
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
            _mm256_add_epi32(acc, p)
        }
    }

    /// 32 nibbles of 16 bytes: low nibbles then high nibbles, as bytes 0..15.
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let t = _mm_loadu_si128(p as *const __m128i);
        let v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
        _mm256_and_si256(v, _mm256_set1_epi8(0xF))
    }

    /// Byte `j` = 0xFF if bit `j` of the 32-bit little-endian word at `p` is set, else 0.
    #[inline(always)]
    unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
        let x = (p as *const u32).read_unaligned();
        let shuf = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0x0000000000000000,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }

    const Q4_0: u8 = 0;
    const Q4_1: u8 = 1;
    const Q5_0: u8 = 2;
    const Q5_1: u8 = 3;
    const Q8_0: u8 = 4;

    /// The 32 weights of a block as bytes in element order (signed for Q4_0/Q5_0/Q8_0,
    /// unsigned for Q4_1/Q5_1).
    #[inline(always)]
    unsafe fn unpack32<const T: u8>(p: *const u8) -> __m256i {
        match T {
            // Q4_0/Q5_0 stay unsigned here; the offset (8 or 16 times the activation sums)
            // is subtracted from the integer lane sums, which keeps them exact.
            Q4_0 => nibbles(p.add(2)),
            Q4_1 => nibbles(p.add(4)),
            Q5_0 => {
                let hi = _mm256_and_si256(bits_to_bytes(p.add(2)), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles(p.add(6)), hi)
            }
            Q5_1 => {
                let hi = _mm256_and_si256(bits_to_bytes(p.add(4)), _mm256_set1_epi8(0x10));
                _mm256_or_si256(nibbles(p.add(8)), hi)
            }
            _ => _mm256_loadu_si256(p.add(2) as *const __m256i),
        }
    }

    /// Integer lane sums of one block with unpacked weights `qx`: `Σ_{4 values} q·y`, with the
    /// signed weights of Q4_0/Q5_0 recovered from their unsigned storage by subtracting
    /// `8·Σy` or `16·Σy`.
    #[inline(always)]
    unsafe fn lanes<const T: u8, const V: u8>(qx: __m256i, a: &ActRow, b: usize) -> __m256i {
        // SAFETY: block `b` lies inside `a.qs` and `a.lsum8` (checked by the caller).
        let qy = _mm256_loadu_si256(a.qs.as_ptr().add(32 * b) as *const __m256i);
        match T {
            Q8_0 => mul_sum_i8::<V>(qx, qy),
            Q4_0 | Q5_0 => {
                let s = mul_sum_u8::<V>(qx, qy);
                let l8 = _mm256_loadu_si256(a.lsum8.as_ptr().add(8 * b) as *const __m256i);
                let off = if T == Q4_0 {
                    l8
                } else {
                    _mm256_slli_epi32(l8, 1)
                };
                _mm256_sub_epi32(s, off)
            }
            _ => mul_sum_u8::<V>(qx, qy),
        }
    }

    #[inline(always)]
    unsafe fn rd16(p: *const u8) -> i16 {
        (p as *const i16).read_unaligned()
    }

    /// Four f16 values at `p`, `p + stride`, ... as f32.
    #[inline(always)]
    unsafe fn f16x4(p: *const u8, stride: usize) -> __m128 {
        _mm_cvtph_ps(_mm_set_epi16(
            0,
            0,
            0,
            0,
            rd16(p.add(3 * stride)),
            rd16(p.add(2 * stride)),
            rd16(p.add(stride)),
            rd16(p),
        ))
    }

    /// One weight row against `NT` activation rows. Each token's arithmetic is exactly that
    /// of the single-token kernel (NT = 1); only the weight unpacking is shared.
    #[inline(always)]
    unsafe fn dot_q32<const T: u8, const V: u8, const NT: usize>(
        w: &[u8],
        bb: usize,
        a: &[ActRow; NT],
    ) -> [f32; NT] {
        let nb = w.len() / bb;
        for r in a {
            assert!(
                w.len() == nb * bb
                    && r.d.len() == nb
                    && r.qs.len() == nb * 32
                    && r.ds.len() == nb
                    && r.lsum8.len() == nb * 8
            );
        }
        let with_min = T == Q4_1 || T == Q5_1;
        let mut acc = [_mm256_setzero_ps(); NT];
        let mut summ = [0f32; NT];
        let wp = w.as_ptr();
        // Lane j: values 0..16 of block j, lane 4 + j: values 16..32 (two rounds of hadd).
        let group = |s: [__m256i; 4]| {
            _mm256_cvtepi32_ps(_mm256_hadd_epi32(
                _mm256_hadd_epi32(s[0], s[1]),
                _mm256_hadd_epi32(s[2], s[3]),
            ))
        };
        let mut b = 0;
        while b + 4 <= nb {
            // SAFETY: blocks b..b+4 lie inside `w` and every activation row (asserted above).
            let blk = wp.add(b * bb);
            prefetch(blk, PF_DIST, (4 * bb).div_ceil(64));
            let dw = f16x4(blk, bb);
            let qx = [
                unpack32::<T>(blk),
                unpack32::<T>(blk.add(bb)),
                unpack32::<T>(blk.add(2 * bb)),
                unpack32::<T>(blk.add(3 * bb)),
            ];
            let mw = if with_min {
                f16x4(blk.add(2), bb)
            } else {
                _mm_setzero_ps()
            };
            for t in 0..NT {
                let at = &a[t];
                let dd = _mm_mul_ps(dw, _mm_loadu_ps(at.d.as_ptr().add(b)));
                let s = group([
                    lanes::<T, V>(qx[0], at, b),
                    lanes::<T, V>(qx[1], at, b + 1),
                    lanes::<T, V>(qx[2], at, b + 2),
                    lanes::<T, V>(qx[3], at, b + 3),
                ]);
                acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(_mm256_set_m128(dd, dd), s));
                if with_min {
                    let mut pm = [0f32; 4];
                    _mm_storeu_ps(
                        pm.as_mut_ptr(),
                        _mm_mul_ps(mw, _mm_loadu_ps(at.ds.as_ptr().add(b))),
                    );
                    for v in pm {
                        summ[t] += v;
                    }
                }
            }
            b += 4;
        }
        if b < nb {
            // The last 1..3 blocks, padded with empty blocks (scale 0, sums 0).
            let rest = nb - b;
            let mut dw = [0f32; 4];
            let mut qx = [_mm256_setzero_si256(); 4];
            for j in 0..rest {
                // SAFETY: block b + j < nb lies inside `w`.
                let blk = wp.add((b + j) * bb);
                dw[j] = f16_to_f32(blk);
                qx[j] = unpack32::<T>(blk);
            }
            for t in 0..NT {
                let at = &a[t];
                let mut dd = [0f32; 4];
                let mut s = [_mm256_setzero_si256(); 4];
                for j in 0..rest {
                    // SAFETY: block b + j < nb lies inside the activation arrays.
                    dd[j] = dw[j] * *at.d.as_ptr().add(b + j);
                    s[j] = lanes::<T, V>(qx[j], at, b + j);
                    if with_min {
                        summ[t] +=
                            f16_to_f32(wp.add((b + j) * bb + 2)) * *at.ds.as_ptr().add(b + j);
                    }
                }
                let ddv = _mm_loadu_ps(dd.as_ptr());
                acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(_mm256_set_m128(ddv, ddv), group(s)));
            }
        }
        let mut out = [0f32; NT];
        for t in 0..NT {
            let acc = hsum8_ps(acc[t]);
            out[t] = if with_min { acc + summ[t] } else { acc };
        }
        out
    }

    macro_rules! q32_entry {
        ($($name:ident, $vnni:ident, $emu:ident = $t:ident, $bb:expr;)*) => {$(
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(crate) unsafe fn $name<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
                dot_q32::<$t, AVX2, NT>(w, $bb, a)
            }
            /// The same with AVX-512 VNNI integer dot products (256-bit, AVX-512 VL).
            #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni")]
            pub(crate) unsafe fn $vnni<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
                dot_q32::<$t, VNNI, NT>(w, $bb, a)
            }
            /// The VNNI form's data flow on AVX2 (tests only).
            #[cfg(test)]
            #[target_feature(enable = "avx2,fma,f16c")]
            pub(crate) unsafe fn $emu<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
                dot_q32::<$t, VNNI_EMULATED, NT>(w, $bb, a)
            }
        )*};
    }
    q32_entry! {
        dot_q4_1, dot_q4_1_vnni, dot_q4_1_vnni_emulated = Q4_1, 20;
        dot_q5_0, dot_q5_0_vnni, dot_q5_0_vnni_emulated = Q5_0, 22;
        dot_q5_1, dot_q5_1_vnni, dot_q5_1_vnni_emulated = Q5_1, 24;
        dot_q8_0, dot_q8_0_vnni, dot_q8_0_vnni_emulated = Q8_0, 34;
    }

    /// One group of 4 Q4_0 blocks (72 bytes at `blk`, scales as lane pairs in `dwv`) against
    /// `NT` activation rows (group `g` of their 4-block layout); see `dot_q4_0_scalar`.
    #[inline(always)]
    unsafe fn q4_0_group<const NT: usize>(
        blk: *const u8,
        dwv: __m256,
        a: &[ActRow; NT],
        g: usize,
        acc: &mut [__m256; NT],
    ) {
        let m4 = _mm256_set1_epi8(0xF);
        let ld = |o: usize| _mm_loadu_si128(blk.add(o) as *const __m128i);
        // [b0 | b2] and [b1 | b3]; 64-bit unpacks give the first and second 8 bytes of each
        // block side by side: low nibbles are values 0..8 / 8..16, high ones 16..24 / 24..32.
        let y02 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(ld(2)), ld(38));
        let y13 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(ld(20)), ld(56));
        let la = _mm256_unpacklo_epi64(y02, y13);
        let lb = _mm256_unpackhi_epi64(y02, y13);
        let w0 = _mm256_and_si256(la, m4);
        let w1 = _mm256_and_si256(lb, m4);
        let w2 = _mm256_and_si256(_mm256_srli_epi16(la, 4), m4);
        let w3 = _mm256_and_si256(_mm256_srli_epi16(lb, 4), m4);
        for t in 0..NT {
            let at = &a[t];
            // SAFETY: group g lies inside every activation row (checked by the caller).
            let y = at.qsq.as_ptr().add(128 * g) as *const __m256i;
            let (y0, y1) = (_mm256_loadu_si256(y), _mm256_loadu_si256(y.add(1)));
            let (y2, y3) = (_mm256_loadu_si256(y.add(2)), _mm256_loadu_si256(y.add(3)));
            let m0 = _mm256_maddubs_epi16(w0, y0);
            let m1 = _mm256_maddubs_epi16(w1, y1);
            let m2 = _mm256_maddubs_epi16(w2, y2);
            let m3 = _mm256_maddubs_epi16(w3, y3);
            // Each 16-bit lane sums 8 products of at most 15·127: no overflow.
            let s16 = _mm256_add_epi16(_mm256_add_epi16(m0, m1), _mm256_add_epi16(m2, m3));
            let isum = _mm256_madd_epi16(s16, _mm256_set1_epi16(1));
            let s32 = _mm256_add_epi32(
                isum,
                _mm256_loadu_si256(at.nl8q.as_ptr().add(8 * g) as *const __m256i),
            );
            let dd = _mm256_mul_ps(dwv, _mm256_loadu_ps(at.dq.as_ptr().add(8 * g)));
            acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(dd, _mm256_cvtepi32_ps(s32)));
        }
    }

    /// The scales of a group of 4 Q4_0 blocks (72 bytes at `blk`) as f32 lane pairs
    /// `[d0, d0, d1, d1, d2, d2, d3, d3]`, taken from two vector loads: the f16 scales sit at
    /// bytes 0, 18, 36 and 54.
    #[inline(always)]
    unsafe fn q4_0_scales(blk: *const u8) -> __m256 {
        // SAFETY: 64 bytes at `blk` (the caller's group is 72 bytes).
        let x = _mm256_loadu_si256(blk as *const __m256i);
        let y = _mm256_loadu_si256(blk.add(32) as *const __m256i);
        // Per 128-bit half, words 0..1 from x and 2..3 from y: d0 is word 0, d1 word 9 (x),
        // d2 word 2, d3 word 11 (y).
        let m = _mm256_blend_epi16::<0b0000_1100>(x, y);
        // Dwords 0, 1, 4, 5 hold words (0,1), (2,3), (8,9), (10,11): d0, d2, d1, d3 at f16
        // positions 0, 2, 5 and 7 of the low 128 bits.
        let lo = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(
            m,
            _mm256_setr_epi32(0, 1, 4, 5, 0, 0, 0, 0),
        ));
        let f = _mm256_cvtph_ps(lo);
        _mm256_permutevar8x32_ps(f, _mm256_setr_epi32(0, 0, 5, 5, 2, 2, 7, 7))
    }

    /// Q4_0 row against `NT` activation rows, four blocks per 256-bit vector.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_q4_0<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        q4_0_rows::<NT>(w, a)
    }

    /// Word indices (into the 64 bytes at a group's start, then 32 + k for word k of the 64
    /// bytes 8 bytes further on) that gather a group's nibble bytes as
    /// `[qs[0..8] of blocks 0..3 | qs[8..16] of blocks 0..3]`: block `j`'s `qs[8c + 2i..]`
    /// sits at byte `18j + 2 + 8c + 2i`, word `9j + 1 + 4c + i`.
    const Q4_0_NIBBLE_WORDS: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut p = 0;
        while p < 32 {
            let (c, j, i) = (p / 16, (p / 4) % 4, p % 4);
            let w = 9 * j + 1 + 4 * c + i;
            idx[p] = if w < 32 { w } else { 32 + w - 4 } as u16;
            p += 1;
        }
        idx
    };

    /// Word indices of a group's four f16 scales (bytes 0, 18, 36, 54) as lane pairs
    /// `[d0, d0, d1, d1, d2, d2, d3, d3]` in the low 128 bits.
    const Q4_0_SCALE_WORDS: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut p = 0;
        while p < 8 {
            idx[p] = (9 * (p / 2)) as u16;
            p += 1;
        }
        idx
    };

    /// One group of 4 Q4_0 blocks (72 bytes at `blk`) of one weight row against `NT`
    /// activation rows, with 512-bit unpacking and `vpdpbusd` (AVX-512 F/BW/VL/VNNI). The 16
    /// dword sums of the two `vpdpbusd` steps hold, in the low half, block `j`'s values
    /// `4h..4h+4` and `16+4h..` (lane `2j + h`) and, in the high half, its values `8+4h..`
    /// and `24+4h..`: their (exact) sum is the AVX2 kernel's lane `2j + h`, so the float
    /// steps, and the result, are bit for bit those of [`q4_0_group`] and `dot_q4_0_scalar`.
    #[inline(always)]
    unsafe fn q4_0_group_512<const NT: usize>(
        blk: *const u8,
        a: &[ActRow; NT],
        g: usize,
        acc: &mut [__m256; NT],
    ) {
        let nib_idx = _mm512_loadu_si512(Q4_0_NIBBLE_WORDS.as_ptr() as *const __m512i);
        let sc_idx = _mm512_loadu_si512(Q4_0_SCALE_WORDS.as_ptr() as *const __m512i);
        let m4 = _mm512_set1_epi8(0xF);
        // SAFETY: the caller guarantees 72 readable bytes at `blk`: bytes 0..64 and 8..72 are
        // read.
        let lo = _mm512_loadu_si512(blk as *const __m512i);
        let hi = _mm512_loadu_si512(blk.add(8) as *const __m512i);
        let p = _mm512_permutex2var_epi16(lo, nib_idx, hi);
        let wl = _mm512_and_si512(p, m4);
        let wh = _mm512_and_si512(_mm512_srli_epi16::<4>(p), m4);
        let sc = _mm512_permutexvar_epi16(sc_idx, lo);
        let dwv = _mm256_cvtph_ps(_mm512_castsi512_si128(sc));
        for t in 0..NT {
            let at = &a[t];
            // SAFETY: group g lies inside every activation row (checked by the caller).
            let y = at.qsq.as_ptr().add(128 * g);
            let z0 = _mm512_loadu_si512(y as *const __m512i);
            let z1 = _mm512_loadu_si512(y.add(64) as *const __m512i);
            let l8 = _mm256_loadu_si256(at.nl8q.as_ptr().add(8 * g) as *const __m256i);
            let dq = _mm256_loadu_ps(at.dq.as_ptr().add(8 * g));
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wl, z0);
            let s = _mm512_dpbusd_epi32(s, wh, z1);
            let isum =
                _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s));
            let s32 = _mm256_add_epi32(isum, l8);
            let dd = _mm256_mul_ps(dwv, dq);
            acc[t] = _mm256_add_ps(acc[t], _mm256_mul_ps(dd, _mm256_cvtepi32_ps(s32)));
        }
    }

    /// One group of 4 Q4_0 blocks of two weight rows (72 bytes at each `blk`) against `NT`
    /// activation rows, the integer sums of both rows folded into one 512-bit vector
    /// `[row 0's 8 lanes | row 1's 8 lanes]` so that the float steps run once for both rows.
    /// Lane by lane, every integer and float step is the one [`q4_0_group_512`] takes for
    /// each row on its own (the same exact half sums, the same product order), so the
    /// results are bit for bit the same.
    #[inline(always)]
    unsafe fn q4_0_group_512_pair<const NT: usize>(
        blk: [*const u8; 2],
        a: &[ActRow; NT],
        g: usize,
        acc: &mut [__m512; NT],
    ) {
        let nib_idx = _mm512_loadu_si512(Q4_0_NIBBLE_WORDS.as_ptr() as *const __m512i);
        let sc_idx = _mm512_loadu_si512(Q4_0_SCALE_WORDS.as_ptr() as *const __m512i);
        let m4 = _mm512_set1_epi8(0xF);
        let mut wl = [_mm512_setzero_si512(); 2];
        let mut wh = [_mm512_setzero_si512(); 2];
        let mut dw = [_mm256_setzero_ps(); 2];
        for i in 0..2 {
            // SAFETY: the caller guarantees 72 readable bytes at `blk[i]`: bytes 0..64 and
            // 8..72 are read.
            let lo = _mm512_loadu_si512(blk[i] as *const __m512i);
            let hi = _mm512_loadu_si512(blk[i].add(8) as *const __m512i);
            let p = _mm512_permutex2var_epi16(lo, nib_idx, hi);
            wl[i] = _mm512_and_si512(p, m4);
            wh[i] = _mm512_and_si512(_mm512_srli_epi16::<4>(p), m4);
            let sc = _mm512_permutexvar_epi16(sc_idx, lo);
            dw[i] = _mm256_cvtph_ps(_mm512_castsi512_si128(sc));
        }
        let dwp = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castpd256_pd512(_mm256_castps_pd(dw[0])),
            _mm256_castps_pd(dw[1]),
        ));
        for t in 0..NT {
            let at = &a[t];
            // SAFETY: group g lies inside every activation row (checked by the caller).
            let y = at.qsq.as_ptr().add(128 * g);
            let z0 = _mm512_loadu_si512(y as *const __m512i);
            let z1 = _mm512_loadu_si512(y.add(64) as *const __m512i);
            let l8 = _mm512_broadcast_i64x4(_mm256_loadu_si256(
                at.nl8q.as_ptr().add(8 * g) as *const __m256i
            ));
            let dq = _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd(
                at.dq.as_ptr().add(8 * g) as *const f64,
            )));
            let s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wl[0], z0);
            let s0 = _mm512_dpbusd_epi32(s0, wh[0], z1);
            let s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wl[1], z0);
            let s1 = _mm512_dpbusd_epi32(s1, wh[1], z1);
            // [low half of s0 | low half of s1] + [high half of s0 | high half of s1].
            let lo = _mm512_shuffle_i64x2::<0x44>(s0, s1);
            let hi = _mm512_shuffle_i64x2::<0xEE>(s0, s1);
            let s32 = _mm512_add_epi32(_mm512_add_epi32(lo, hi), l8);
            let dd = _mm512_mul_ps(dwp, dq);
            acc[t] = _mm512_add_ps(acc[t], _mm512_mul_ps(dd, _mm512_cvtepi32_ps(s32)));
        }
    }

    /// Two Q4_0 weight rows (of equal length) against `NT` activation rows with
    /// [`q4_0_group_512_pair`]; `out[i][t]` is bit for bit [`dot_q4_0`] of row `i`, token `t`.
    #[inline(always)]
    unsafe fn q4_0_pair_512<const NT: usize>(w: [&[u8]; 2], a: &[ActRow; NT]) -> [[f32; NT]; 2] {
        let nb = w[0].len() / 18;
        let ng = nb.div_ceil(4);
        assert!(w[0].len() == nb * 18 && w[1].len() == nb * 18);
        for r in a {
            assert!(r.qsq.len() == ng * 128 && r.nl8q.len() == ng * 8 && r.dq.len() == ng * 8);
        }
        let mut acc = [_mm512_setzero_ps(); NT];
        let full = nb / 4;
        for g in 0..full {
            // SAFETY: the 4 blocks (72 bytes) of group g lie inside both rows.
            let blk = [w[0].as_ptr().add(72 * g), w[1].as_ptr().add(72 * g)];
            prefetch_l2(blk[0], L2_PF_DIST, 2);
            prefetch_l2(blk[1], L2_PF_DIST, 2);
            q4_0_group_512_pair::<NT>(blk, a, g, &mut acc);
        }
        if full < ng {
            // The last 1..3 blocks, padded with empty blocks (scale 0, values 0).
            let mut buf = [[0u8; 72]; 2];
            for i in 0..2 {
                let rest = &w[i][72 * full..];
                buf[i][..rest.len()].copy_from_slice(rest);
            }
            q4_0_group_512_pair::<NT>([buf[0].as_ptr(), buf[1].as_ptr()], a, full, &mut acc);
        }
        let mut out = [[0f32; NT]; 2];
        for t in 0..NT {
            out[0][t] = hsum8_ps(_mm512_castps512_ps256(acc[t]));
            out[1][t] = hsum8_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(acc[t]),
            )));
        }
        out
    }

    /// One Q4_0 weight row against `NT` activation rows with the 512-bit group step;
    /// `out[t]` is bit for bit [`dot_q4_0`] of token `t`.
    #[inline(always)]
    unsafe fn q4_0_row_512<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        let nb = w.len() / 18;
        let ng = nb.div_ceil(4);
        assert!(w.len() == nb * 18);
        for r in a {
            assert!(r.qsq.len() == ng * 128 && r.nl8q.len() == ng * 8 && r.dq.len() == ng * 8);
        }
        let mut acc = [_mm256_setzero_ps(); NT];
        let full = nb / 4;
        for g in 0..full {
            // SAFETY: the 4 blocks (72 bytes) of group g lie inside `w`.
            let blk = w.as_ptr().add(72 * g);
            prefetch_l2(blk, L2_PF_DIST, 2);
            q4_0_group_512::<NT>(blk, a, g, &mut acc);
        }
        if full < ng {
            // The last 1..3 blocks, padded with empty blocks (scale 0, values 0).
            let mut buf = [0u8; 72];
            let rest = &w[72 * full..];
            buf[..rest.len()].copy_from_slice(rest);
            q4_0_group_512::<NT>(buf.as_ptr(), a, full, &mut acc);
        }
        let mut out = [0f32; NT];
        for t in 0..NT {
            out[t] = hsum8_ps(acc[t]);
        }
        out
    }

    /// [`dot_q4_0`] with 512-bit unpacking and AVX-512 VNNI integer dot products (AVX-512
    /// F, BW, VL, VNNI); the same bits.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q4_0_vnni<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        q4_0_row_512::<NT>(w, a)
    }

    /// Two Q4_0 weight rows at once (sharing the activation loads), each bit for bit
    /// [`dot_q4_0_vnni`].
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q4_0_vnni_pair<const NT: usize>(
        w0: &[u8],
        w1: &[u8],
        a: &[ActRow; NT],
    ) -> [[f32; NT]; 2] {
        q4_0_pair_512::<NT>([w0, w1], a)
    }

    #[inline(always)]
    unsafe fn q4_0_rows<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        let nb = w.len() / 18;
        let ng = nb.div_ceil(4);
        assert!(w.len() == nb * 18);
        for r in a {
            assert!(r.qsq.len() == ng * 128 && r.nl8q.len() == ng * 8 && r.dq.len() == ng * 8);
        }
        let mut acc = [_mm256_setzero_ps(); NT];
        let wp = w.as_ptr();
        let full = nb / 4;
        if NT > 1 {
            for g in 0..full {
                // SAFETY: the 4 blocks (72 bytes) of group g lie inside `w`.
                let blk = wp.add(4 * g * 18);
                q4_0_group::<NT>(blk, q4_0_scales(blk), a, g, &mut acc);
            }
        } else {
            // Decode: the scales of up to 16 groups are converted ahead of their groups, which
            // keeps the f16 → f32 chain out of the streaming loop (the same values as
            // `q4_0_scales`).
            let idx = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
            let mut dwf = [0f32; 64];
            let mut g = 0;
            while g < full {
                let cnt = (full - g).min(16);
                let mut dws = [0u16; 64];
                for (j, v) in dws[..4 * cnt].iter_mut().enumerate() {
                    // SAFETY: block 4g + j < nb lies inside `w`.
                    *v = (wp.add((4 * g + j) * 18) as *const u16).read_unaligned();
                }
                for j in (0..4 * cnt).step_by(8) {
                    // SAFETY: j + 8 <= 64 for both stack buffers.
                    let h = _mm_loadu_si128(dws.as_ptr().add(j) as *const __m128i);
                    _mm256_storeu_ps(dwf.as_mut_ptr().add(j), _mm256_cvtph_ps(h));
                }
                for i in 0..cnt {
                    // SAFETY: the 4 blocks of group g + i lie inside `w`; 4i + 4 <= 64.
                    let blk = wp.add(4 * (g + i) * 18);
                    prefetch_l2(blk, L2_PF_DIST, 2);
                    let d4 = _mm256_castps128_ps256(_mm_loadu_ps(dwf.as_ptr().add(4 * i)));
                    let dwv = _mm256_permutevar8x32_ps(d4, idx);
                    q4_0_group::<NT>(blk, dwv, a, g + i, &mut acc);
                }
                g += cnt;
            }
        }
        if full < ng {
            // The last 1..3 blocks, padded with empty blocks (scale 0, values 0).
            let mut buf = [0u8; 72];
            let rest = &w[4 * full * 18..];
            buf[..rest.len()].copy_from_slice(rest);
            q4_0_group::<NT>(buf.as_ptr(), q4_0_scales(buf.as_ptr()), a, full, &mut acc);
        }
        let mut out = [0f32; NT];
        for t in 0..NT {
            out[t] = hsum8_ps(acc[t]);
        }
        out
    }

    /// The 8 six-bit scales (bytes 0..8) and mins (bytes 8..16) of a Q4_K/Q5_K super-block,
    /// unpacked from its 12 scale bytes (ggml's `utmp` trick; equals `scale_min_k4`).
    #[inline(always)]
    pub(crate) fn unpack_scales_k4(q: &[u8]) -> [u32; 4] {
        const KMASK1: u32 = 0x3f3f3f3f;
        const KMASK2: u32 = 0x0f0f0f0f;
        const KMASK3: u32 = 0x03030303;
        let mut u = [
            u32::from_le_bytes([q[0], q[1], q[2], q[3]]),
            u32::from_le_bytes([q[4], q[5], q[6], q[7]]),
            u32::from_le_bytes([q[8], q[9], q[10], q[11]]),
            0,
        ];
        u[3] = ((u[2] >> 4) & KMASK2) | (((u[1] >> 6) & KMASK3) << 4);
        let uaux = u[1] & KMASK1;
        u[1] = (u[2] & KMASK2) | (((u[0] >> 6) & KMASK3) << 4);
        u[2] = uaux;
        u[0] &= KMASK1;
        u
    }

    /// Scale vector (8 scales as i16 in both 128-bit halves) and mins (8 × i16) of a
    /// Q4_K/Q5_K super-block.
    #[inline(always)]
    unsafe fn k4_scales(blk: &[u8]) -> (__m256i, __m128i) {
        let u = unpack_scales_k4(&blk[4..16]);
        let sc = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[1] as i32, u[0] as i32));
        let mins = _mm_cvtepu8_epi16(_mm_set_epi32(0, 0, u[3] as i32, u[2] as i32));
        (_mm256_broadcastsi128_si256(sc), mins)
    }

    /// Integer min correction lanes `m[2j]·Σy[2j] + m[2j+1]·Σy[2j+1]` of super-block `i`.
    #[inline(always)]
    unsafe fn k4_imin(mins: __m128i, a: &ActRow, i: usize) -> __m128i {
        // SAFETY: the caller checked a.bsum32 holds 8 sums per super-block.
        let bs = _mm_loadu_si128(a.bsum32.as_ptr().add(8 * i) as *const __m128i);
        _mm_madd_epi16(mins, bs)
    }

    /// `acc + Σ` of the products of the `i16` pairs of `a` and `b` per 32-bit lane
    /// (`vpdpwssd` on 256-bit registers). Written as assembly because LLVM splits the
    /// intrinsic into `vpmaddwd` + `vpaddd` in accumulation chains, which is what this
    /// instruction exists to save.
    ///
    /// # Safety
    /// The CPU must support AVX-512 VL and VNNI.
    #[inline]
    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    unsafe fn dpwssd256(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        let mut acc = acc;
        // SAFETY: register operands only; no memory, stack or flags are touched.
        core::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(ymm_reg) acc,
            a = in(ymm_reg) a,
            b = in(ymm_reg) b,
            options(pure, nomem, nostack, preserves_flags),
        );
        acc
    }

    /// Broadcast i16 word `j` of each 128-bit half.
    #[inline(always)]
    unsafe fn word(v: __m256i, j: usize) -> __m256i {
        let m = (((2 * j + 1) << 8) | (2 * j)) as i16;
        _mm256_shuffle_epi8(v, _mm256_set1_epi16(m))
    }

    /// Block size and count of a Q4_K (`HI5 = false`) or Q5_K row, checked against every
    /// activation row's layout.
    #[inline(always)]
    fn k4_blocks<const HI5: bool, const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> (usize, usize) {
        let bb = if HI5 { 176 } else { 144 };
        let nb = w.len() / bb;
        for r in a {
            assert!(
                w.len() == nb * bb
                    && r.d.len() == nb
                    && r.qs.len() == nb * 256
                    && r.bsum32.len() == nb * 8
            );
        }
        (bb, nb)
    }

    /// `[Σ v[0], …, Σ v[7]]`: the exact totals of 8 vectors of 8 `i32` lanes.
    #[inline(always)]
    unsafe fn sum8x8(v: &[__m256i; 8]) -> __m256i {
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        // [Σlo v0, Σlo v1, Σlo v2, Σlo v3 | Σhi v0, …, Σhi v3] (lo, hi: 128-bit halves)
        let x = _mm256_hadd_epi32(h01, h23);
        let y = _mm256_hadd_epi32(h45, h67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(x, y),
            _mm256_permute2x128_si256::<0x31>(x, y),
        )
    }

    /// `[Σ v[0], …, Σ v[7]]`: the exact totals of 8 vectors of 4 `i32` lanes.
    #[inline(always)]
    unsafe fn sum4x8(v: &[__m128i; 8]) -> __m256i {
        let p = |k: usize| _mm256_set_m128i(v[2 * k + 1], v[2 * k]);
        // [Σ v0, Σ v2, Σ v4, Σ v6 | Σ v1, Σ v3, Σ v5, Σ v7]
        let x = _mm256_hadd_epi32(_mm256_hadd_epi32(p(0), p(1)), _mm256_hadd_epi32(p(2), p(3)));
        _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// The two f16 values at bytes `off..off + 4` of each of `m` (at most 8) blocks of `bb`
    /// bytes from `p`, as f32 (the first's, the second's), 0 past `m`. The caller guarantees
    /// the `m` blocks and `off + 4 <= bb`.
    #[inline(always)]
    unsafe fn f16_pairs8(p: *const u8, bb: usize, off: usize, m: usize) -> (__m256, __m256) {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let idx = _mm256_mullo_epi32(lanes, _mm256_set1_epi32(bb as i32));
        let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(m as i32), lanes);
        // SAFETY: the dwords at off + bb·j (j < m) lie inside the caller's blocks; lanes past
        // m are masked off and read nothing.
        let v = _mm256_mask_i32gather_epi32::<1>(
            _mm256_setzero_si256(),
            p.add(off) as *const i32,
            idx,
            mask,
        );
        let lo = _mm256_and_si256(v, _mm256_set1_epi32(0xFFFF));
        let hi = _mm256_srli_epi32::<16>(v);
        // [lo 0..4, hi 0..4 | lo 4..8, hi 4..8] → [lo 0..8 | hi 0..8]
        let h = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi));
        (
            _mm256_cvtph_ps(_mm256_castsi256_si128(h)),
            _mm256_cvtph_ps(_mm256_extracti128_si256::<1>(h)),
        )
    }

    /// The activation scales of super-blocks `i0..i0 + m` (`m` at most 8; 0 past `m`).
    #[inline(always)]
    unsafe fn dy8(a: &ActRow, i0: usize, m: usize) -> __m256 {
        if m == 8 {
            _mm256_loadu_ps(a.d.as_ptr().add(i0))
        } else {
            let mut d = [0f32; 8];
            d[..m].copy_from_slice(&a.d[i0..i0 + m]);
            _mm256_loadu_ps(d.as_ptr())
        }
    }

    /// The float steps of `m` (at most 8) K-quant super-blocks `i0..i0 + m` (`p`: the first
    /// one's bytes, `bb` bytes each) for each token: `sumi[t][j]` holds super-block `i0 + j`'s
    /// integer sums spread over 8 lanes, `imin[t][j]` (Q4_K/Q5_K only) its minimums' (0 past
    /// `m`). Lane `j` of `acc` takes `fma(d·dy, isum, ·)` and, with `MINS`,
    /// `fma(−dmin·dy, imin, ·)`: super-block `i` goes to lane `i % 8` as `i0` is a multiple
    /// of 8.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn k_float_steps<const MINS: bool, const NT: usize>(
        p: *const u8,
        bb: usize,
        m: usize,
        sumi: &[[__m256i; 8]; NT],
        imin: &[[__m128i; 8]; NT],
        a: &[ActRow; NT],
        i0: usize,
        acc: &mut [__m256; NT],
    ) {
        // Q4_K/Q5_K: `d`, `dmin` at bytes 0..4; Q6_K: `d` at 208..210, the second of 206..210.
        let (d, dmin) = if MINS {
            f16_pairs8(p, bb, 0, m)
        } else {
            (f16_pairs8(p, bb, 206, m).1, _mm256_setzero_ps())
        };
        for t in 0..NT {
            let dy = dy8(&a[t], i0, m);
            let s = _mm256_cvtepi32_ps(sum8x8(&sumi[t]));
            acc[t] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), s, acc[t]);
            if MINS {
                let mm = _mm256_cvtepi32_ps(sum4x8(&imin[t]));
                acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), mm, acc[t]);
            }
        }
    }

    /// The values `128h + 32c..+32` (`c < 4`) of the Q6_K super-block at `p` (0..64, as
    /// bytes). `p` must point to a whole 210-byte block.
    #[inline(always)]
    pub(crate) unsafe fn q6_values(p: *const u8, h: usize) -> [__m256i; 4] {
        let (m4, m3) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(3));
        // SAFETY: bytes 64h..64h + 64 (low bits) and 128 + 32h..+32 (high bits) lie inside
        // the block (h < 2).
        let ql0 = _mm256_loadu_si256(p.add(64 * h) as *const __m256i);
        let ql1 = _mm256_loadu_si256(p.add(64 * h + 32) as *const __m256i);
        let qh = _mm256_loadu_si256(p.add(128 + 32 * h) as *const __m256i);
        // Two high bits at bit 4 (16-bit shifts: the masks drop what crosses bytes).
        let hb = |x: __m256i| _mm256_slli_epi16::<4>(_mm256_and_si256(x, m3));
        let low = |x: __m256i| _mm256_and_si256(x, m4);
        [
            _mm256_or_si256(low(ql0), hb(qh)),
            _mm256_or_si256(low(ql1), hb(_mm256_srli_epi16::<2>(qh))),
            _mm256_or_si256(
                low(_mm256_srli_epi16::<4>(ql0)),
                hb(_mm256_srli_epi16::<4>(qh)),
            ),
            _mm256_or_si256(
                low(_mm256_srli_epi16::<4>(ql1)),
                hb(_mm256_srli_epi16::<6>(qh)),
            ),
        ]
    }

    /// The frame of the K-quant row kernels: for each group of 8 super-blocks (`bb` bytes
    /// each), `block(i, blk)` gives super-block `i`'s integer sums for each token, spread over
    /// 8 lanes, and with `MINS` its minimums' (4 lanes); then the group's float steps
    /// ([`k_float_steps`]), and per token `hsum8` of the accumulators. The caller checked
    /// that `w` holds whole super-blocks and every activation row as many.
    #[inline(always)]
    unsafe fn k_rows<const MINS: bool, const NT: usize>(
        w: &[u8],
        bb: usize,
        a: &[ActRow; NT],
        mut block: impl FnMut(usize, &[u8]) -> ([__m256i; NT], [__m128i; NT]),
    ) -> [f32; NT] {
        let nb = w.len() / bb;
        let mut acc = [_mm256_setzero_ps(); NT];
        for i0 in (0..nb).step_by(8) {
            let m = (nb - i0).min(8);
            let mut s8 = [[_mm256_setzero_si256(); 8]; NT];
            let mut m8 = [[_mm_setzero_si128(); 8]; NT];
            for j in 0..m {
                let i = i0 + j;
                let blk = w.get_unchecked(bb * i..bb * i + bb);
                prefetch_l2(blk.as_ptr(), L2_PF_DIST, bb.div_ceil(64));
                let (si, mi) = block(i, blk);
                for t in 0..NT {
                    s8[t][j] = si[t];
                    m8[t][j] = mi[t];
                }
            }
            // SAFETY: super-blocks i0..i0 + m lie inside the row and every activation row.
            k_float_steps::<MINS, NT>(w.as_ptr().add(bb * i0), bb, m, &s8, &m8, a, i0, &mut acc);
        }
        acc.map(|v| hsum8_ps(v))
    }

    /// Q4_K (`HI5 = false`) or Q5_K (`HI5 = true`) row against `NT` activation rows.
    #[inline(always)]
    unsafe fn dot_k4<const HI5: bool, const VNNI: bool, const NT: usize>(
        w: &[u8],
        a: &[ActRow; NT],
    ) -> [f32; NT] {
        let (bb, _) = k4_blocks::<HI5, NT>(w, a);
        let m4 = _mm256_set1_epi8(0xF);
        let one = _mm256_set1_epi8(1);
        k_rows::<true, NT>(w, bb, a, |i, blk| {
            let (sc, mins) = k4_scales(blk);
            // SAFETY: offsets stay within this block and the 256 activation bytes of super-block i.
            let qs = blk.as_ptr().add(if HI5 { 48 } else { 16 });
            let mut hbits = if HI5 {
                _mm256_loadu_si256(blk.as_ptr().add(16) as *const __m256i)
            } else {
                _mm256_setzero_si256()
            };
            let mut sumi = [_mm256_setzero_si256(); NT];
            // The VNNI form's second chain (high nibbles), so that each chain has 4 steps.
            let mut sumh = [_mm256_setzero_si256(); NT];
            for c in 0..4 {
                let bits = _mm256_loadu_si256(qs.add(32 * c) as *const __m256i);
                let mut lo = _mm256_and_si256(bits, m4);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
                if HI5 {
                    let h0 = _mm256_slli_epi16(_mm256_and_si256(hbits, one), 4);
                    let h1 =
                        _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hbits, 1), one), 4);
                    hbits = _mm256_srli_epi16(hbits, 2);
                    lo = _mm256_or_si256(lo, h0);
                    hi = _mm256_or_si256(hi, h1);
                }
                let (slo, shi) = (word(sc, 2 * c), word(sc, 2 * c + 1));
                for t in 0..NT {
                    let qy = a[t].qs.as_ptr().add(256 * i);
                    let ylo = _mm256_loadu_si256(qy.add(64 * c) as *const __m256i);
                    let yhi = _mm256_loadu_si256(qy.add(64 * c + 32) as *const __m256i);
                    let mlo = _mm256_maddubs_epi16(lo, ylo);
                    let mhi = _mm256_maddubs_epi16(hi, yhi);
                    if VNNI {
                        sumi[t] = dpwssd256(sumi[t], mlo, slo);
                        sumh[t] = dpwssd256(sumh[t], mhi, shi);
                    } else {
                        let plo = _mm256_madd_epi16(mlo, slo);
                        let phi = _mm256_madd_epi16(mhi, shi);
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(plo, phi));
                    }
                }
            }
            if VNNI {
                for t in 0..NT {
                    sumi[t] = _mm256_add_epi32(sumi[t], sumh[t]);
                }
            }
            (sumi, core::array::from_fn(|t| k4_imin(mins, &a[t], i)))
        })
    }

    /// [`dot_k4`] with 512-bit vectors and AVX-512 VNNI: one vector holds a 64-value chunk's
    /// low nibbles (first 32 values) and high nibbles (next 32), so one `vpmaddubsw` and one
    /// `vpdpwssd` (the `vpmaddwd` + add of the AVX2 form in one step) per token replace two of
    /// each and three adds. The low and high halves of the integer sums are added exactly at
    /// the end of each super-block, which gives the AVX2 form's lanes, so the float steps and
    /// the result are bit for bit those of [`dot_k4`] and the scalar definition.
    #[inline(always)]
    unsafe fn dot_k4_512<const HI5: bool, const NT: usize>(
        w: &[u8],
        a: &[ActRow; NT],
    ) -> [f32; NT] {
        let (bb, _) = k4_blocks::<HI5, NT>(w, a);
        let m4 = _mm512_set1_epi8(0xF);
        let one = _mm512_set1_epi8(1);
        // Per-word shift counts: 0 for the low 256 bits (low nibbles), 4 for the high ones.
        let nib_shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
        k_rows::<true, NT>(w, bb, a, |i, blk| {
            let (sc, mins) = k4_scales(blk);
            // SAFETY: offsets stay within this block and the 256 activation bytes of super-block i.
            let qs = blk.as_ptr().add(if HI5 { 48 } else { 16 });
            let hbits = if HI5 {
                _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.as_ptr().add(16) as *const __m256i))
            } else {
                _mm512_setzero_si512()
            };
            let mut sumi = [_mm512_setzero_si512(); NT];
            for c in 0..4 {
                let bits =
                    _mm512_broadcast_i64x4(_mm256_loadu_si256(qs.add(32 * c) as *const __m256i));
                let mut q = _mm512_and_si512(_mm512_srlv_epi16(bits, nib_shift), m4);
                if HI5 {
                    // Bit 2c of each byte for the low half, bit 2c + 1 for the high half.
                    let cnt = _mm512_inserti64x4::<1>(
                        _mm512_set1_epi16(2 * c as i16),
                        _mm256_set1_epi16(2 * c as i16 + 1),
                    );
                    let h = _mm512_and_si512(_mm512_srlv_epi16(hbits, cnt), one);
                    q = _mm512_or_si512(q, _mm512_slli_epi16::<4>(h));
                }
                let s = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(word(sc, 2 * c)),
                    word(sc, 2 * c + 1),
                );
                for t in 0..NT {
                    let y = _mm512_loadu_si512(
                        a[t].qs.as_ptr().add(256 * i + 64 * c) as *const __m512i
                    );
                    sumi[t] = _mm512_dpwssd_epi32(sumi[t], _mm512_maddubs_epi16(q, y), s);
                }
            }
            (
                sumi.map(|v| {
                    _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64::<1>(v))
                }),
                core::array::from_fn(|t| k4_imin(mins, &a[t], i)),
            )
        })
    }

    /// [`dot_q4_k`] with AVX-512 BW and VNNI ([`dot_k4_512`]); the same bits.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q4_k_vnni<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        dot_k4_512::<false, NT>(w, a)
    }

    /// [`dot_q5_k`] with AVX-512 BW and VNNI ([`dot_k4_512`]); the same bits.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q5_k_vnni<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        dot_k4_512::<true, NT>(w, a)
    }

    /// [`dot_q4_k`] with `vpdpwssd` on 256-bit vectors in place of each `vpmaddwd` and the
    /// add that follows it (for CPUs whose AVX-512 runs on 256-bit units); the same bits.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q4_k_vnni256<const NT: usize>(
        w: &[u8],
        a: &[ActRow; NT],
    ) -> [f32; NT] {
        dot_k4::<false, true, NT>(w, a)
    }

    /// [`dot_q5_k`] as [`dot_q4_k_vnni256`]; the same bits.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q5_k_vnni256<const NT: usize>(
        w: &[u8],
        a: &[ActRow; NT],
    ) -> [f32; NT] {
        dot_k4::<true, true, NT>(w, a)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_q4_k<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        dot_k4::<false, false, NT>(w, a)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_q5_k<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        dot_k4::<true, false, NT>(w, a)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_q6_k<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        dot_q6_k_impl::<false, NT>(w, a)
    }

    /// [`dot_q6_k`] with `vpdpwssd` (AVX-512 VNNI, 256-bit) in place of each `vpmaddwd` and
    /// the add that follows it: the same exact integer sums, so the same bits.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q6_k_vnni<const NT: usize>(w: &[u8], a: &[ActRow; NT]) -> [f32; NT] {
        dot_q6_k_impl::<true, NT>(w, a)
    }

    #[inline(always)]
    unsafe fn dot_q6_k_impl<const VNNI: bool, const NT: usize>(
        w: &[u8],
        a: &[ActRow; NT],
    ) -> [f32; NT] {
        let nb = w.len() / 210;
        for r in a {
            assert!(
                w.len() == nb * 210
                    && r.d.len() == nb
                    && r.qs.len() == nb * 256
                    && r.bsum.len() == nb * 16
            );
        }
        k_rows::<false, NT>(w, 210, a, |i, blk| {
            // SAFETY: offsets stay within this 210-byte block, the 256 activation bytes and
            // the 16 activation sums of super-block i.
            let p = blk.as_ptr();
            let sc_all = _mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(192) as *const __m128i));
            let mut sumi = [_mm256_setzero_si256(); NT];
            // The VNNI form's second chain (odd `j`), so that each chain has 4 steps.
            let mut sumo = [_mm256_setzero_si256(); NT];
            for t in 0..NT {
                let bs = _mm256_loadu_si256(a[t].bsum.as_ptr().add(16 * i) as *const __m256i);
                // −32 · Σ_g sc_g · Σ_{group g} y, exact.
                sumi[t] =
                    _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(_mm256_madd_epi16(sc_all, bs), 5));
            }
            for h in 0..2 {
                let q = q6_values(p, h);
                // 8 scales of this half as i16 in both 128-bit halves.
                let sc8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64(
                    p.add(192 + 8 * h) as *const __m128i,
                )));
                for (j, qj) in q.iter().enumerate() {
                    // low half: scale 2j, high half: scale 2j+1
                    let lo = ((4 * j + 1) << 8 | (4 * j)) as i16;
                    let hi = ((4 * j + 3) << 8 | (4 * j + 2)) as i16;
                    let s = _mm256_shuffle_epi8(
                        sc8,
                        _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo)),
                    );
                    for t in 0..NT {
                        let y = _mm256_loadu_si256(
                            a[t].qs.as_ptr().add(256 * i + 128 * h + 32 * j) as *const __m256i,
                        );
                        let m = _mm256_maddubs_epi16(*qj, y);
                        if !VNNI {
                            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(m, s));
                        } else if j % 2 == 0 {
                            sumi[t] = dpwssd256(sumi[t], m, s);
                        } else {
                            sumo[t] = dpwssd256(sumo[t], m, s);
                        }
                    }
                }
            }
            if VNNI {
                for t in 0..NT {
                    sumi[t] = _mm256_add_epi32(sumi[t], sumo[t]);
                }
            }
            (sumi, [_mm_setzero_si128(); NT])
        })
    }

    /// Float dot product with weights produced 8 at a time by `load(k)` (see module docs).
    #[inline(always)]
    unsafe fn dot_float<const FUSED: bool>(
        len: usize,
        (wp, esize): (*const u8, usize),
        load: impl Fn(usize) -> __m256,
        x: &[f32],
        tail_w: impl Fn(usize) -> f32,
    ) -> f32 {
        let n32 = len / 32 * 32;
        let xp = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < n32 {
            prefetch_l2(wp.wrapping_add(c * esize), L2_PF_DIST, esize / 2);
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: c + 8j + 8 <= n32 <= len = x.len().
                let xv = _mm256_loadu_ps(xp.add(c + 8 * j));
                *a = if FUSED {
                    _mm256_fmadd_ps(load(c + 8 * j), xv, *a)
                } else {
                    _mm256_add_ps(*a, _mm256_mul_ps(load(c + 8 * j), xv))
                };
            }
            c += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut tail = 0f32;
        for k in n32..len {
            tail = if FUSED {
                tail_w(k).mul_add(x[k], tail)
            } else {
                tail + tail_w(k) * x[k]
            };
        }
        hsum8_ps(s) + tail
    }

    /// [`dot_float`] (fused) for two activation rows sharing each weight load; each result
    /// is computed exactly as by `dot_float` alone.
    #[inline(always)]
    unsafe fn dot_float2(
        len: usize,
        (wp, esize): (*const u8, usize),
        load: impl Fn(usize) -> __m256,
        x: [&[f32]; 2],
        tail_w: impl Fn(usize) -> f32,
    ) -> [f32; 2] {
        assert!(x[0].len() >= len && x[1].len() >= len);
        let n32 = len / 32 * 32;
        let (p0, p1) = (x[0].as_ptr(), x[1].as_ptr());
        let mut a0 = [_mm256_setzero_ps(); 4];
        let mut a1 = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < n32 {
            prefetch_l2(wp.wrapping_add(c * esize), L2_PF_DIST, esize / 2);
            for j in 0..4 {
                // SAFETY: c + 8j + 8 <= n32 <= len <= both row lengths.
                let wv = load(c + 8 * j);
                a0[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p0.add(c + 8 * j)), a0[j]);
                a1[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(p1.add(c + 8 * j)), a1[j]);
            }
            c += 32;
        }
        let mut out = [0f32; 2];
        for (t, a) in [a0, a1].iter().enumerate() {
            let s = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
            let mut tail = 0f32;
            for k in n32..len {
                tail = tail_w(k).mul_add(x[t][k], tail);
            }
            out[t] = hsum8_ps(s) + tail;
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_f32b_x2(w: &[u8], x: [&[f32]; 2]) -> [f32; 2] {
        let len = w.len() / 4;
        let wp = w.as_ptr();
        // SAFETY: 4k + 32 <= w.len() for every k the loop passes.
        dot_float2(
            len,
            (wp, 4),
            |k| _mm256_loadu_ps(wp.add(4 * k) as *const f32),
            x,
            |k| f32::from_le_bytes([w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]]),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_f16_x2(w: &[u8], x: [&[f32]; 2]) -> [f32; 2] {
        let len = w.len() / 2;
        let wp = w.as_ptr();
        // SAFETY: 2k + 16 <= w.len() for every k the loop passes.
        dot_float2(
            len,
            (wp, 2),
            |k| _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * k) as *const __m128i)),
            x,
            |k| half::f16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32(),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_bf16_x2(w: &[u8], x: [&[f32]; 2]) -> [f32; 2] {
        let len = w.len() / 2;
        let wp = w.as_ptr();
        // SAFETY: 2k + 16 <= w.len() for every k the loop passes.
        dot_float2(
            len,
            (wp, 2),
            |k| {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * k) as *const __m128i));
                _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
            },
            x,
            |k| half::bf16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32(),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    /// The unfused f32 dot product of [`crate::ops`].
    pub(crate) unsafe fn dot_f32(a: &[f32], x: &[f32]) -> f32 {
        debug_assert_eq!(a.len(), x.len());
        let ap = a.as_ptr();
        // SAFETY: k + 8 <= a.len() for every k the loop passes.
        dot_float::<false>(
            x.len(),
            (ap as *const u8, 4),
            |k| _mm256_loadu_ps(ap.add(k)),
            x,
            |k| a[k],
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_f32b(w: &[u8], x: &[f32]) -> f32 {
        debug_assert_eq!(w.len(), 4 * x.len());
        let wp = w.as_ptr();
        // SAFETY: 4k + 32 <= w.len() for every k the loop passes.
        dot_float::<true>(
            x.len(),
            (wp, 4),
            |k| _mm256_loadu_ps(wp.add(4 * k) as *const f32),
            x,
            |k| f32::from_le_bytes([w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]]),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_f16(w: &[u8], x: &[f32]) -> f32 {
        f16_dot::<true>(w, x)
    }

    /// The unfused f16 · f32 dot product of [`crate::ops`].
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_f16_unfused(w: &[u8], x: &[f32]) -> f32 {
        f16_dot::<false>(w, x)
    }

    #[inline(always)]
    unsafe fn f16_dot<const FUSED: bool>(w: &[u8], x: &[f32]) -> f32 {
        debug_assert_eq!(w.len(), 2 * x.len());
        let wp = w.as_ptr();
        // SAFETY: 2k + 16 <= w.len() for every k the loop passes.
        dot_float::<FUSED>(
            x.len(),
            (wp, 2),
            |k| _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * k) as *const __m128i)),
            x,
            |k| half::f16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32(),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(crate) unsafe fn dot_bf16(w: &[u8], x: &[f32]) -> f32 {
        debug_assert_eq!(w.len(), 2 * x.len());
        let wp = w.as_ptr();
        // SAFETY: 2k + 16 <= w.len() for every k the loop passes.
        dot_float::<true>(
            x.len(),
            (wp, 2),
            |k| {
                let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * k) as *const __m128i));
                _mm256_castsi256_ps(_mm256_slli_epi32(h, 16))
            },
            x,
            |k| half::bf16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32(),
        )
    }
}

/// Whether the AVX-512 VNNI forms of the 32-value block kernels can run here (checked once):
/// AVX2+FMA+F16C plus AVX-512 F, BW, VL and VNNI (every CPU with AVX-512 VNNI has BW).
pub(crate) fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            has_avx2()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs 512-bit vector instructions on 256-bit units (AMD's AVX-512, Zen 4):
/// there the 256-bit form of the Q4_K and Q5_K row kernels, with its in-lane shuffles, is the
/// faster one (measured on Zen 4: the AVX2 form 7-8% faster than the 512-bit form for Q4_K,
/// Q5_K even; the 256-bit form with `vpdpwssd` another 8-13%). All forms give the same bits,
/// so the choice changes speed only. Checked once, from the CPUID
/// vendor string.
pub(crate) fn avx512_on_256bit_units() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AMD: OnceLock<bool> = OnceLock::new();
        *AMD.get_or_init(|| {
            #[allow(unused_unsafe)]
            // SAFETY: CPUID leaf 0 exists on every x86-64 CPU.
            let r = unsafe { core::arch::x86_64::__cpuid(0) };
            [r.ebx, r.edx, r.ecx] == [0x6874_7541, 0x6974_6e65, 0x444d_4163] // "AuthenticAMD"
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX2+FMA+F16C kernels can run here (checked once).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    /// The VNNI kernels' data flow (run on AVX2, each `vpdpbusd` emulated) against the
    /// scalar definitions, bit for bit, at odd block counts and 1, 2 and 4 tokens. The real
    /// instruction is compared with the scalar code by `tests/matmul.rs` on CPUs that have it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vnni_data_flow_matches_scalar() {
        use super::avx2;
        use crate::act::{ActRow, QAct};
        if !super::has_avx2() {
            println!("SKIPPED: CPU lacks AVX2/FMA/F16C");
            return;
        }
        type Scalar = fn(&[u8], &ActRow) -> f32;
        type Emu<const N: usize> = unsafe fn(&[u8], &[ActRow; N]) -> [f32; N];
        /// Name, block bytes, offsets of the f16 scales, scalar kernel, 1/2/4-token VNNI flows.
        type Case = (
            &'static str,
            usize,
            &'static [usize],
            Scalar,
            Emu<1>,
            Emu<2>,
            Emu<4>,
        );
        macro_rules! case {
            ($name:literal, $bb:literal, $scales:expr, $scalar:ident, $emu:ident) => {
                (
                    $name,
                    $bb,
                    $scales,
                    super::$scalar,
                    avx2::$emu::<1>,
                    avx2::$emu::<2>,
                    avx2::$emu::<4>,
                )
            };
        }
        let kernels: [Case; 4] = [
            case!("q4_1", 20, &[0, 2], dot_q4_1_scalar, dot_q4_1_vnni_emulated),
            case!("q5_0", 22, &[0], dot_q5_0_scalar, dot_q5_0_vnni_emulated),
            case!("q5_1", 24, &[0, 2], dot_q5_1_scalar, dot_q5_1_vnni_emulated),
            case!("q8_0", 34, &[0], dot_q8_0_scalar, dot_q8_0_vnni_emulated),
        ];
        let mut s = 0x5eed_1234_abcd_0077u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for (name, bb, scales, scalar, e1, e2, e4) in kernels {
            for nb in [1usize, 3, 4, 5, 7, 13, 37] {
                let mut w: Vec<u8> = (0..nb * bb).map(|_| next() as u8).collect();
                for blk in w.chunks_mut(bb) {
                    for &o in scales {
                        let v = ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.3) * 0.05;
                        blk[o..o + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                    }
                }
                let k = 32 * nb;
                let x: Vec<f32> = (0..4 * k)
                    .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0)
                    .collect();
                let mut q = QAct::default();
                q.quantize(&x, 4, k, 32, true, true);
                let rows = [q.row(0), q.row(1), q.row(2), q.row(3)];
                let want: Vec<u32> = rows.iter().map(|r| scalar(&w, r).to_bits()).collect();
                // SAFETY: AVX2/FMA/F16C checked above.
                let (g1, g2, g4) = unsafe {
                    (
                        e1(&w, &[rows[0]]),
                        e2(&w, &[rows[0], rows[1]]),
                        e4(&w, &rows),
                    )
                };
                assert_eq!(g1[0].to_bits(), want[0], "{name} nb={nb} one token");
                for t in 0..2 {
                    assert_eq!(g2[t].to_bits(), want[t], "{name} nb={nb} two tokens, {t}");
                }
                for t in 0..4 {
                    assert_eq!(g4[t].to_bits(), want[t], "{name} nb={nb} four tokens, {t}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn utmp_unpack_matches_scale_min_k4() {
        let mut s = 0x1234_5678u64;
        for _ in 0..2000 {
            let q: Vec<u8> = (0..12)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect();
            let u = super::avx2::unpack_scales_k4(&q);
            let bytes: Vec<u8> = u.iter().flat_map(|v| v.to_le_bytes()).collect();
            for j in 0..8 {
                let (sc, m) = crate::quants::scale_min_k4(j, &q);
                assert_eq!((bytes[j], bytes[8 + j]), (sc, m));
            }
        }
    }
}
