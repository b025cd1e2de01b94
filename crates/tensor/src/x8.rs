//! Q4_0, Q4_K, Q5_K and Q6_K weights repacked in groups of 8 rows for decode.
//!
//! The row kernels read one weight row at a time: for each Q4_K super-block they unpack its
//! scales, broadcast each sub-block's scale across a vector and multiply 16-bit pair sums by
//! it, about 70 vector operations per row and super-block. In the packed layout the same
//! block of 8 consecutive rows lies together with its bytes transposed, so that lane `r` of
//! every vector belongs to row `r`: the activations become the broadcast operand of
//! `vpdpbusd`, one instruction takes 4 values of 8 rows, each sub-block's scale multiplies 8
//! rows' sums at once, and the scale unpacking runs on 8 rows at a time. The packed bytes
//! are as many as the original ones. Q4_K (1152 bytes per group and super-block):
//!
//! | bytes | content |
//! |---|---|
//! | 0..16 | `d` of rows 0..8 (f16) |
//! | 16..32 | `dmin` of rows 0..8 (f16) |
//! | 32..128 | the 12 scale bytes of each row, as three vectors of 8 dwords (dword `j` of row `r` at `32 + 32j + 4r`) |
//! | 128..1152 | the 128 value bytes: for chunk `c < 4` and step `s < 8`, 32 bytes at `128 + 32(8c + s)`, row `r`'s bytes `32c + 4s..+4` at `4r` |
//!
//! Q5_K (1408 bytes) is Q4_K with the 32 high-bit bytes of each row as 8 vectors of dwords at
//! `128 + 32s` (row `r`'s bytes `4s..4s + 4` at `4r`) and the value bytes from 384.
//!
//! Q4_0 (144 bytes per group and block of 32): `d` of rows 0..8 at 0..16, then for `k < 4`
//! 32 bytes at `16 + 32k` holding row `r`'s value bytes `4k..4k + 4` at `4r`. Q6_K (1680
//! bytes per group and super-block): `d` at 0..16, the 16 scales as 4 vectors of dwords at
//! `16 + 32j`, the 128 low-bit bytes as 32 vectors at `144 + 32s`, the 64 high-bit bytes as 16
//! at `1168 + 32s` (row `r`'s dword at `4r` of each).
//!
//! Where AVX-512 runs on full-width units (Intel), `dot_q4_0_2g`, `dot_q4_k_2g` and
//! `dot_q6_k_2g` take two adjacent groups at once, one in each half of a 512-bit vector (the same per-lane steps), and
//! `dot_q4_0_2g` takes up to 16 tokens per pass with their accumulators in memory, so that a
//! batch streams the weights once.
//!
//! The arithmetic is each type's definition in the `kernels` module, row by row (Q4_K: exact
//! integer sums per super-block, the float steps into accumulator `i % 8`, then `hsum8`;
//! Q4_0: its two lanes per block of a group of 4), so the results are bit for bit those of
//! the row kernels and of [`crate::matmul_scalar`].

use crate::act::ActRow;
use crate::DType;

/// Rows per group.
pub(crate) const ROWS: usize = 8;

/// A weight type with a packed layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Q4_0,
    Q4K,
    Q5K,
    Q6K,
}

impl Kind {
    pub(crate) fn of(t: DType) -> Option<Kind> {
        match t {
            DType::Q4_0 => Some(Kind::Q4_0),
            DType::Q4_K => Some(Kind::Q4K),
            DType::Q5_K => Some(Kind::Q5K),
            DType::Q6_K => Some(Kind::Q6K),
            _ => None,
        }
    }

    /// Bytes of one row's block (Q4_0: 32 values, Q4_K: a super-block of 256).
    pub(crate) const fn block_bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 18,
            Kind::Q4K => 144,
            Kind::Q5K => 176,
            Kind::Q6K => 210,
        }
    }

    /// The layout: `f(src, dst, len)` for each piece of a block, `len` bytes at `src` in a
    /// row's block going to `dst + len·r` for row `r` in the group's block.
    #[inline(always)]
    fn pieces(self, mut f: impl FnMut(usize, usize, usize)) {
        match self {
            Kind::Q4_0 => {
                f(0, 0, 2);
                for k in 0..4 {
                    f(2 + 4 * k, 16 + 32 * k, 4);
                }
            }
            Kind::Q6K => {
                f(208, 0, 2);
                for j in 0..4 {
                    f(192 + 4 * j, 16 + 32 * j, 4);
                }
                for s in 0..32 {
                    f(4 * s, 144 + 32 * s, 4);
                }
                for s in 0..16 {
                    f(128 + 4 * s, 1168 + 32 * s, 4);
                }
            }
            Kind::Q4K | Kind::Q5K => {
                f(0, 0, 2);
                f(2, 16, 2);
                for j in 0..3 {
                    f(4 + 4 * j, 32 + 32 * j, 4);
                }
                // Q5_K: the 32 high-bit bytes, then the value bytes as in Q4_K.
                let (src, dst) = if self == Kind::Q5K {
                    for s in 0..8 {
                        f(16 + 4 * s, 128 + 32 * s, 4);
                    }
                    (48, 384)
                } else {
                    (16, 128)
                };
                for c in 0..4 {
                    for s in 0..8 {
                        f(src + 32 * c + 4 * s, dst + 32 * (8 * c + s), 4);
                    }
                }
            }
        }
    }
}

/// `len` (2 or 4) bytes from `from[src..]` to `to[dst..]`, as one load and one store.
#[inline(always)]
fn move_piece(from: &[u8], src: usize, to: &mut [u8], dst: usize, len: usize) {
    if len == 4 {
        let v: [u8; 4] = from[src..src + 4].try_into().expect("4 bytes");
        to[dst..dst + 4].copy_from_slice(&v);
    } else {
        let v: [u8; 2] = from[src..src + 2].try_into().expect("2 bytes");
        to[dst..dst + 2].copy_from_slice(&v);
    }
}

/// Packs 8 rows of `nb` blocks each (`rows[r].len() == nb * kind.block_bytes()`) into `out`
/// (as many bytes), in the layout of the module documentation.
pub(crate) fn pack(kind: Kind, rows: [&[u8]; ROWS], out: &mut [u8]) {
    let bb = kind.block_bytes();
    let nb = out.len() / (ROWS * bb);
    assert!(out.len() == nb * ROWS * bb && rows.iter().all(|r| r.len() == nb * bb));
    for i in 0..nb {
        let o = &mut out[ROWS * bb * i..ROWS * bb * (i + 1)];
        for (r, row) in rows.iter().enumerate() {
            let b = &row[bb * i..bb * (i + 1)];
            kind.pieces(|src, dst, len| move_piece(b, src, o, dst + len * r, len));
        }
    }
}

/// Row `r` of a packed group back in its type's stored layout (`out`: a row's bytes).
pub(crate) fn unpack_row(kind: Kind, p: &[u8], r: usize, out: &mut [u8]) {
    let bb = kind.block_bytes();
    let nb = p.len() / (ROWS * bb);
    assert!(p.len() == nb * ROWS * bb && out.len() == nb * bb && r < ROWS);
    for i in 0..nb {
        let g = &p[ROWS * bb * i..ROWS * bb * (i + 1)];
        let b = &mut out[bb * i..bb * (i + 1)];
        kind.pieces(|src, dst, len| move_piece(g, dst + len * r, b, src, len));
    }
}

/// Scalar twin of the AVX-512 kernels: each row unpacked and multiplied by the scalar
/// definition.
pub(crate) fn dot_scalar(kind: Kind, p: &[u8], a: &ActRow) -> [f32; ROWS] {
    let mut row = vec![0u8; p.len() / ROWS];
    core::array::from_fn(|r| {
        unpack_row(kind, p, r, &mut row);
        match kind {
            Kind::Q4_0 => crate::kernels::dot_q4_0_scalar(&row, a),
            Kind::Q4K => crate::kernels::dot_q4_k_scalar(&row, a),
            Kind::Q5K => crate::kernels::dot_q5_k_scalar(&row, a),
            Kind::Q6K => crate::kernels::dot_q6_k_scalar(&row, a),
        }
    })
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{ActRow, Kind, ROWS};
    use core::arch::x86_64::*;

    /// Bytes of a Q4_K group's super-block.
    const GB: usize = ROWS * Kind::Q4K.block_bytes();

    /// Bytes of a Q5_K group's super-block.
    const GB5: usize = ROWS * Kind::Q5K.block_bytes();

    /// How far ahead the kernels prefetch into L2: 9 KB, 8 of a Q4_K group's super-blocks
    /// (the Q4_0 kernel takes the same distance). Measured in whole-process decode of a Q4_K_M
    /// file (three alternated runs each, tokens/s): into L1 two super-blocks ahead 4.9-6.0, no
    /// prefetch 5.2-7.3, into L2 8 ahead 6.3-6.5.
    const PF: usize = 8 * GB;

    /// `vpshufb` control taking, in each dword, the bytes `pat` (bytes 0..4 of `pat`: an index
    /// within the dword, or 0x80 for zero) of that same dword.
    #[inline(always)]
    unsafe fn within_dwords(pat: u32) -> __m256i {
        let c = |d: u32| {
            let mut v = 0u32;
            for b in 0..4 {
                let x = (pat >> (8 * b)) & 0xFF;
                v |= (if x & 0x80 != 0 { 0x80 } else { x + 4 * d }) << (8 * b);
            }
            v as i32
        };
        _mm256_setr_epi32(c(0), c(1), c(2), c(3), c(0), c(1), c(2), c(3))
    }

    /// Each dword's byte `k` as a 32-bit lane.
    #[inline(always)]
    unsafe fn byte(v: __m256i, k: u32) -> __m256i {
        _mm256_shuffle_epi8(v, within_dwords(0x8080_8000 | k))
    }

    /// Each dword's bytes `2p`, `2p + 1` as two 16-bit lanes.
    #[inline(always)]
    unsafe fn byte_pair(v: __m256i, p: u32) -> __m256i {
        _mm256_shuffle_epi8(
            v,
            within_dwords(0x8000_8000 | ((2 * p + 1) << 16) | (2 * p)),
        )
    }

    /// The dword at `p` (unaligned) in every lane.
    #[inline(always)]
    unsafe fn bcast(p: *const i8) -> __m256i {
        _mm256_set1_epi32((p as *const i32).read_unaligned())
    }

    /// The 8 rows of a packed Q4_K group (`p`: `nb * 1152` bytes; with `FIVE`, a Q5_K group of
    /// `nb * 1408` bytes) against `NT` activation rows
    /// of `nb` super-blocks (the weights and scales unpacked once for all of them; each row's
    /// arithmetic the same as alone).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q4_k<const NT: usize, const FIVE: bool>(
        p: &[u8],
        a: &[ActRow; NT],
    ) -> [[f32; ROWS]; NT] {
        // Q5_K (`FIVE`): the same with a fifth bit per value from the high-bit bytes.
        let (gb, qs_at) = if FIVE { (GB5, 384) } else { (GB, 128) };
        let nb = p.len() / gb;
        for a in a {
            assert!(
                p.len() == nb * gb
                    && a.d.len() == nb
                    && a.qs.len() == nb * 256
                    && a.bsum32.len() == nb * 8
            );
        }
        let (k1, k2, k3) = (
            _mm256_set1_epi32(0x3f3f3f3f),
            _mm256_set1_epi32(0x0f0f0f0f),
            _mm256_set1_epi32(0x03030303),
        );
        let m4 = _mm256_set1_epi8(0xF);
        let mut acc = [[_mm256_setzero_ps(); 8]; NT];
        for i in 0..nb {
            // SAFETY (all reads below): the group's super-block `i` is bytes
            // gb·i..gb·(i + 1) of `p`; the activation reads stay inside super-block `i`'s 256
            // values and 8 sums (checked above). Prefetches are hints that never fault, with
            // addresses formed by wrapping arithmetic (past the end is fine).
            let b = p.as_ptr().add(gb * i);
            for l in 0..gb / 64 {
                _mm_prefetch::<_MM_HINT_T2>(b.wrapping_add(PF + 64 * l) as *const i8);
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i));
            let dm = _mm256_cvtph_ps(_mm_loadu_si128(b.add(16) as *const __m128i));
            let u0 = _mm256_loadu_si256(b.add(32) as *const __m256i);
            let u1 = _mm256_loadu_si256(b.add(64) as *const __m256i);
            let u2 = _mm256_loadu_si256(b.add(96) as *const __m256i);
            // ggml's `utmp` unpacking, 8 rows at once: scales 0..4, 4..8, minimums 0..4, 4..8.
            let sc = [
                _mm256_and_si256(u0, k1),
                _mm256_or_si256(
                    _mm256_and_si256(u2, k2),
                    _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(u0), k3)),
                ),
            ];
            let mn = [
                _mm256_and_si256(u1, k1),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi32::<4>(u2), k2),
                    _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srli_epi32::<6>(u1), k3)),
                ),
            ];
            let qs = b.add(qs_at);
            let mut isum = [_mm256_setzero_si256(); NT];
            for c in 0..4 {
                let mut lo = [_mm256_setzero_si256(); NT];
                let mut hi = [_mm256_setzero_si256(); NT];
                // Q5_K: bits 2c and 2c + 1 of each high-bit byte.
                let (b0, b1) = (
                    _mm256_set1_epi8((1u8 << (2 * c)) as i8),
                    _mm256_set1_epi8((2u8 << (2 * c)) as i8),
                );
                for s in 0..8 {
                    let q = _mm256_loadu_si256(qs.add(32 * (8 * c + s)) as *const __m256i);
                    let mut ql = _mm256_and_si256(q, m4);
                    let mut qh = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                    if FIVE {
                        let h = _mm256_loadu_si256(b.add(128 + 32 * s) as *const __m256i);
                        let sixteen = _mm256_set1_epi8(16);
                        let top = |bit: __m256i| {
                            _mm256_and_si256(
                                _mm256_cmpeq_epi8(_mm256_and_si256(h, bit), bit),
                                sixteen,
                            )
                        };
                        ql = _mm256_or_si256(ql, top(b0));
                        qh = _mm256_or_si256(qh, top(b1));
                    }
                    for t in 0..NT {
                        let qy = a[t].qs.as_ptr().add(256 * i);
                        lo[t] = _mm256_dpbusd_epi32(lo[t], ql, bcast(qy.add(64 * c + 4 * s)));
                        hi[t] = _mm256_dpbusd_epi32(hi[t], qh, bcast(qy.add(64 * c + 32 + 4 * s)));
                    }
                }
                let v = sc[c / 2];
                let k = 2 * (c as u32 % 2);
                let (s0, s1) = (byte(v, k), byte(v, k + 1));
                for t in 0..NT {
                    isum[t] = _mm256_add_epi32(
                        isum[t],
                        _mm256_add_epi32(
                            _mm256_mullo_epi32(lo[t], s0),
                            _mm256_mullo_epi32(hi[t], s1),
                        ),
                    );
                }
            }
            let m = [
                byte_pair(mn[0], 0),
                byte_pair(mn[0], 1),
                byte_pair(mn[1], 0),
                byte_pair(mn[1], 1),
            ];
            let l = i % 8;
            for t in 0..NT {
                let bs = a[t].bsum32.as_ptr().add(8 * i) as *const i8;
                let imin = _mm256_add_epi32(
                    _mm256_add_epi32(
                        _mm256_madd_epi16(m[0], bcast(bs)),
                        _mm256_madd_epi16(m[1], bcast(bs.add(4))),
                    ),
                    _mm256_add_epi32(
                        _mm256_madd_epi16(m[2], bcast(bs.add(8))),
                        _mm256_madd_epi16(m[3], bcast(bs.add(12))),
                    ),
                );
                let dy = _mm256_set1_ps(*a[t].d.get_unchecked(i));
                acc[t][l] =
                    _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum[t]), acc[t][l]);
                acc[t][l] =
                    _mm256_fnmadd_ps(_mm256_mul_ps(dm, dy), _mm256_cvtepi32_ps(imin), acc[t][l]);
            }
        }
        core::array::from_fn(|t| hsum8_lanes(&acc[t]))
    }

    /// Bytes of a Q4_0 group's block.
    const GB0: usize = ROWS * Kind::Q4_0.block_bytes();

    /// The 8 rows of a packed Q4_0 group (`p`: `nb * 144` bytes) against `NT` activation
    /// rows of `nb` blocks of 32 (the weights unpacked once for all of them), by Q4_0's
    /// definition: per block `b` the exact sums of the values `v` with `(v / 4) % 2 == h`
    /// (the offset 8 taken off as `8·Σy` of those values), then
    /// `acc[2(b % 4) + h] += (dw·dy) · sum`, and `hsum8`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q4_0<const NT: usize>(
        p: &[u8],
        a: &[ActRow; NT],
    ) -> [[f32; ROWS]; NT] {
        let nb = p.len() / GB0;
        for a in a {
            assert!(
                p.len() == nb * GB0
                    && a.d.len() == nb
                    && a.qs.len() == nb * 32
                    && a.nl8q.len() == nb.div_ceil(4) * 8
            );
        }
        let m4 = _mm256_set1_epi8(0xF);
        let mut acc = [[_mm256_setzero_ps(); 8]; NT];
        for b in 0..nb {
            // SAFETY (all reads below): the group's block `b` is bytes GB0·b..GB0·(b + 1) of
            // `p`; the activation reads stay inside block `b`'s 32 values and 8 sums (checked
            // above). Prefetches never fault (wrapping addresses).
            let g = p.as_ptr().add(GB0 * b);
            for l in 0..3 {
                _mm_prefetch::<_MM_HINT_T2>(g.wrapping_add(PF + 64 * l) as *const i8);
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(g as *const __m128i));
            let mut q = [_mm256_setzero_si256(); 8];
            for k in 0..4 {
                let v = _mm256_loadu_si256(g.add(16 + 32 * k) as *const __m256i);
                q[2 * k] = _mm256_and_si256(v, m4);
                q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
            }
            let j = 2 * (b % 4);
            for t in 0..NT {
                let dd = _mm256_mul_ps(d, _mm256_set1_ps(*a[t].d.get_unchecked(b)));
                let y = a[t].qs.as_ptr().add(32 * b);
                // The integer chains start from the offset's share, −8·Σy over each lane's
                // values (the activations' Q4_0 group layout holds it per block and lane).
                let c = a[t]
                    .nl8q
                    .get_unchecked(8 * (b / 4) + j..8 * (b / 4) + j + 2);
                let mut s = [_mm256_set1_epi32(c[0]), _mm256_set1_epi32(c[1])];
                for k in 0..4 {
                    s[k % 2] = _mm256_dpbusd_epi32(s[k % 2], q[2 * k], bcast(y.add(4 * k)));
                    s[k % 2] =
                        _mm256_dpbusd_epi32(s[k % 2], q[2 * k + 1], bcast(y.add(16 + 4 * k)));
                }
                for h in 0..2 {
                    let v = _mm256_cvtepi32_ps(s[h]);
                    acc[t][j + h] = _mm256_add_ps(acc[t][j + h], _mm256_mul_ps(dd, v));
                }
            }
        }
        core::array::from_fn(|t| hsum8_lanes(&acc[t]))
    }

    /// Most tokens per pass of [`dot_q4_0_2g`].
    pub(crate) const MAX_T: usize = 16;

    /// Two adjacent packed Q4_0 groups (`p0`, `p1`: `nb * 144` bytes each, 16 rows) against
    /// up to [`MAX_T`] activation rows `a`, into `out` (one row of 16 per activation row), with
    /// 512-bit vectors: lanes 0..8 hold group `p0`'s rows and lanes 8..16 group `p1`'s, each
    /// lane through the very steps of [`dot_q4_0`] (the same bits). Each block is unpacked
    /// once for all the tokens, whose accumulators stay in memory: a decode step of up to 16
    /// sequences streams the weights once, as one sequence does. Where AVX-512 runs on
    /// full-width units (Intel), one `vpdpbusd` on 16 rows does the work of two on 8 at the
    /// issue cost of one, and so do the float steps.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q4_0_2g(
        p0: &[u8],
        p1: &[u8],
        a: &[ActRow],
        out: &mut [[f32; 2 * ROWS]],
    ) {
        let nb = p0.len() / GB0;
        let nt = a.len();
        assert!(p0.len() == nb * GB0 && p1.len() == p0.len());
        assert!(nt <= MAX_T && out.len() == nt);
        for a in a {
            assert!(a.d.len() == nb && a.qs.len() == nb * 32 && a.nl8q.len() == nb.div_ceil(4) * 8);
        }
        let m4 = _mm512_set1_epi8(0xF);
        let mut acc = [[_mm512_setzero_ps(); 8]; MAX_T];
        for b in 0..nb {
            // SAFETY (all reads below): block `b` of each group is bytes GB0·b..GB0·(b + 1)
            // of `p0` and `p1` (same length, checked); the activation reads stay inside block
            // `b`'s 32 values and 8 sums (checked above); t < nt ≤ MAX_T. Prefetches never
            // fault.
            let (g0, g1) = (p0.as_ptr().add(GB0 * b), p1.as_ptr().add(GB0 * b));
            // Prefetch in the order of use: the same block of both groups `PF / GB0` blocks
            // ahead, or past the groups' end that of the next pair of groups (the matrix lays
            // its groups one after the other; prefetches past its end are harmless hints).
            // Measured (`MV_X8=1 MV_DECODE=1 matvec_speed q4_0 --prefill 8`, 2 threads, three
            // alternated runs): 9.31-9.42 ms per layer with each group's own stream ahead,
            // 8.85-8.88 with this order.
            let ahead = b + PF / GB0;
            let (f0, f1) = if ahead < nb {
                (g0.wrapping_add(PF), g1.wrapping_add(PF))
            } else {
                let o = 2 * p0.len() + GB0 * (ahead - nb);
                (p0.as_ptr().wrapping_add(o), p1.as_ptr().wrapping_add(o))
            };
            for l in 0..3 {
                _mm_prefetch::<_MM_HINT_T2>(f0.wrapping_add(64 * l) as *const i8);
                _mm_prefetch::<_MM_HINT_T2>(f1.wrapping_add(64 * l) as *const i8);
            }
            let d = _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(_mm_loadu_si128(g0 as *const __m128i)),
                _mm_loadu_si128(g1 as *const __m128i),
            ));
            let mut q = [_mm512_setzero_si512(); 8];
            for k in 0..4 {
                let v = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(
                        g0.add(16 + 32 * k) as *const __m256i
                    )),
                    _mm256_loadu_si256(g1.add(16 + 32 * k) as *const __m256i),
                );
                q[2 * k] = _mm512_and_si512(v, m4);
                q[2 * k + 1] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
            }
            let j = 2 * (b % 4);
            for t in 0..nt {
                let at = a.get_unchecked(t);
                let dd = _mm512_mul_ps(d, _mm512_set1_ps(*at.d.get_unchecked(b)));
                let y = at.qs.as_ptr().add(32 * b);
                // The integer chains start from the offset's share (as in `dot_q4_0`).
                let c = at.nl8q.get_unchecked(8 * (b / 4) + j..8 * (b / 4) + j + 2);
                let mut s = [_mm512_set1_epi32(c[0]), _mm512_set1_epi32(c[1])];
                for k in 0..4 {
                    s[k % 2] = _mm512_dpbusd_epi32(s[k % 2], q[2 * k], bcast512(y.add(4 * k)));
                    s[k % 2] =
                        _mm512_dpbusd_epi32(s[k % 2], q[2 * k + 1], bcast512(y.add(16 + 4 * k)));
                }
                let acc = acc.get_unchecked_mut(t);
                for h in 0..2 {
                    let v = _mm512_cvtepi32_ps(s[h]);
                    acc[j + h] = _mm512_add_ps(acc[j + h], _mm512_mul_ps(dd, v));
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            *o = hsum8_lanes16(acc);
        }
    }

    /// Two adjacent packed Q6_K groups (`p0`, `p1`: `nb * 1680` bytes each, 16 rows) against
    /// `NT` activation rows, with 512-bit vectors (lanes 0..8 group `p0`'s rows, 8..16 group
    /// `p1`'s), each lane through the very steps of [`dot_q6_k`] (the same bits).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q6_k_2g<const NT: usize>(
        p0: &[u8],
        p1: &[u8],
        a: &[ActRow; NT],
    ) -> [[f32; 2 * ROWS]; NT] {
        let nb = p0.len() / GB6;
        assert!(p0.len() == nb * GB6 && p1.len() == p0.len());
        for a in a {
            assert!(a.d.len() == nb && a.qs.len() == nb * 256 && a.bsum.len() == nb * 16);
        }
        let (m4, m30) = (_mm512_set1_epi8(0xF), _mm512_set1_epi8(0x30));
        let mut acc = [[_mm512_setzero_ps(); 8]; NT];
        for i in 0..nb {
            // SAFETY (all reads below): super-block `i` of each group is bytes
            // GB6·i..GB6·(i + 1) of `p0` and `p1` (same length, checked); the activation
            // reads stay inside super-block `i`'s 256 values and 16 sums (checked above).
            // Prefetches never fault.
            let (b0, b1) = (p0.as_ptr().add(GB6 * i), p1.as_ptr().add(GB6 * i));
            // Prefetch in the order of use, as in `dot_q4_0_2g`.
            let ahead = i + PF.div_ceil(GB6);
            let (f0, f1) = if ahead < nb {
                (
                    p0.as_ptr().wrapping_add(GB6 * ahead),
                    p1.as_ptr().wrapping_add(GB6 * ahead),
                )
            } else {
                let o = 2 * p0.len() + GB6 * (ahead - nb);
                (p0.as_ptr().wrapping_add(o), p1.as_ptr().wrapping_add(o))
            };
            for l in 0..GB6.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T2>(f0.wrapping_add(64 * l) as *const i8);
                _mm_prefetch::<_MM_HINT_T2>(f1.wrapping_add(64 * l) as *const i8);
            }
            // The 32 bytes at `o` of both groups.
            let ld = |o: usize| {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(b0.add(o) as *const __m256i)),
                    _mm256_loadu_si256(b1.add(o) as *const __m256i),
                )
            };
            let d = _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(
                _mm256_castsi128_si256(_mm_loadu_si128(b0 as *const __m128i)),
                _mm_loadu_si128(b1 as *const __m128i),
            ));
            let mut isum = [_mm512_setzero_si512(); NT];
            for h in 0..2 {
                let mut sums = [[[_mm512_setzero_si512(); 4]; 2]; NT];
                for half in 0..2 {
                    for s in 4 * half..4 * half + 4 {
                        let (ql0, ql1) =
                            (ld(144 + 32 * (16 * h + s)), ld(144 + 32 * (16 * h + 8 + s)));
                        let qh = ld(1168 + 32 * (8 * h + s));
                        let v = [
                            _mm512_or_si512(
                                _mm512_and_si512(ql0, m4),
                                _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m30),
                            ),
                            _mm512_or_si512(
                                _mm512_and_si512(ql1, m4),
                                _mm512_and_si512(_mm512_slli_epi16::<2>(qh), m30),
                            ),
                            _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi16::<4>(ql0), m4),
                                _mm512_and_si512(qh, m30),
                            ),
                            _mm512_or_si512(
                                _mm512_and_si512(_mm512_srli_epi16::<4>(ql1), m4),
                                _mm512_and_si512(_mm512_srli_epi16::<2>(qh), m30),
                            ),
                        ];
                        for t in 0..NT {
                            let y = a[t].qs.as_ptr().add(256 * i + 128 * h + 4 * s);
                            for k in 0..4 {
                                sums[t][half][k] = _mm512_dpbusd_epi32(
                                    sums[t][half][k],
                                    v[k],
                                    bcast512(y.add(32 * k)),
                                );
                            }
                        }
                    }
                }
                for k in 0..8 {
                    let g = 8 * h + k;
                    let sv = ld(16 + 32 * (g / 4));
                    // Byte g % 4 of each dword, sign-extended.
                    let top =
                        _mm512_broadcast_i64x4(within_dwords(((g as u32 % 4) << 24) | 0x0080_8080));
                    let sc = _mm512_srai_epi32::<24>(_mm512_shuffle_epi8(sv, top));
                    for t in 0..NT {
                        let off =
                            _mm512_set1_epi32(32 * *a[t].bsum.get_unchecked(16 * i + g) as i32);
                        let tk = sums[t][k % 2][k / 2];
                        isum[t] = _mm512_add_epi32(
                            isum[t],
                            _mm512_mullo_epi32(_mm512_sub_epi32(tk, off), sc),
                        );
                    }
                }
            }
            let l = i % 8;
            for t in 0..NT {
                let dy = _mm512_set1_ps(*a[t].d.get_unchecked(i));
                acc[t][l] =
                    _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(isum[t]), acc[t][l]);
            }
        }
        core::array::from_fn(|t| hsum8_lanes16(&acc[t]))
    }

    /// Two adjacent packed Q4_K groups (`p0`, `p1`: `nb * 1152` bytes each; with `FIVE`, Q5_K
    /// groups of `nb * 1408` bytes) against `NT` activation rows, with 512-bit vectors (lanes
    /// 0..8 group `p0`'s rows, 8..16 group `p1`'s), each lane through the very steps of
    /// [`dot_q4_k`] (the same bits).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q4_k_2g<const NT: usize, const FIVE: bool>(
        p0: &[u8],
        p1: &[u8],
        a: &[ActRow; NT],
    ) -> [[f32; 2 * ROWS]; NT] {
        let (gb, qs_at) = if FIVE { (GB5, 384) } else { (GB, 128) };
        let nb = p0.len() / gb;
        assert!(p0.len() == nb * gb && p1.len() == p0.len());
        for a in a {
            assert!(a.d.len() == nb && a.qs.len() == nb * 256 && a.bsum32.len() == nb * 8);
        }
        let (k1, k2, k3) = (
            _mm512_set1_epi32(0x3f3f3f3f),
            _mm512_set1_epi32(0x0f0f0f0f),
            _mm512_set1_epi32(0x03030303),
        );
        let m4 = _mm512_set1_epi8(0xF);
        let mut acc = [[_mm512_setzero_ps(); 8]; NT];
        for i in 0..nb {
            // SAFETY (all reads below): super-block `i` of each group is bytes gb·i..gb·(i + 1)
            // of `p0` and `p1` (same length, checked); the activation reads stay inside
            // super-block `i`'s 256 values and 8 sums (checked above). Prefetches never fault.
            let (b0, b1) = (p0.as_ptr().add(gb * i), p1.as_ptr().add(gb * i));
            // Prefetch in the order of use, as in `dot_q4_0_2g`.
            let ahead = i + PF.div_ceil(gb);
            let (f0, f1) = if ahead < nb {
                (
                    p0.as_ptr().wrapping_add(gb * ahead),
                    p1.as_ptr().wrapping_add(gb * ahead),
                )
            } else {
                let o = 2 * p0.len() + gb * (ahead - nb);
                (p0.as_ptr().wrapping_add(o), p1.as_ptr().wrapping_add(o))
            };
            for l in 0..gb / 64 {
                _mm_prefetch::<_MM_HINT_T2>(f0.wrapping_add(64 * l) as *const i8);
                _mm_prefetch::<_MM_HINT_T2>(f1.wrapping_add(64 * l) as *const i8);
            }
            // The 32 bytes at `o` of both groups; the 16 f16 at `o` as f32.
            let ld = |o: usize| {
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(b0.add(o) as *const __m256i)),
                    _mm256_loadu_si256(b1.add(o) as *const __m256i),
                )
            };
            let ldh = |o: usize| {
                _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(
                    _mm256_castsi128_si256(_mm_loadu_si128(b0.add(o) as *const __m128i)),
                    _mm_loadu_si128(b1.add(o) as *const __m128i),
                ))
            };
            let (d, dm) = (ldh(0), ldh(16));
            let (u0, u1, u2) = (ld(32), ld(64), ld(96));
            let sc = [
                _mm512_and_si512(u0, k1),
                _mm512_or_si512(
                    _mm512_and_si512(u2, k2),
                    _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(u0), k3)),
                ),
            ];
            let mn = [
                _mm512_and_si512(u1, k1),
                _mm512_or_si512(
                    _mm512_and_si512(_mm512_srli_epi32::<4>(u2), k2),
                    _mm512_slli_epi32::<4>(_mm512_and_si512(_mm512_srli_epi32::<6>(u1), k3)),
                ),
            ];
            let mut isum = [_mm512_setzero_si512(); NT];
            for c in 0..4 {
                let mut lo = [_mm512_setzero_si512(); NT];
                let mut hi = [_mm512_setzero_si512(); NT];
                let (bit0, bit1) = (
                    _mm512_set1_epi8((1u8 << (2 * c)) as i8),
                    _mm512_set1_epi8((2u8 << (2 * c)) as i8),
                );
                for s in 0..8 {
                    let q = ld(qs_at + 32 * (8 * c + s));
                    let mut ql = _mm512_and_si512(q, m4);
                    let mut qh = _mm512_and_si512(_mm512_srli_epi16::<4>(q), m4);
                    if FIVE {
                        let h = ld(128 + 32 * s);
                        let sixteen = _mm512_set1_epi8(16);
                        ql = _mm512_or_si512(
                            ql,
                            _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(h, bit0), sixteen),
                        );
                        qh = _mm512_or_si512(
                            qh,
                            _mm512_maskz_mov_epi8(_mm512_test_epi8_mask(h, bit1), sixteen),
                        );
                    }
                    for t in 0..NT {
                        let qy = a[t].qs.as_ptr().add(256 * i);
                        lo[t] = _mm512_dpbusd_epi32(lo[t], ql, bcast512(qy.add(64 * c + 4 * s)));
                        hi[t] =
                            _mm512_dpbusd_epi32(hi[t], qh, bcast512(qy.add(64 * c + 32 + 4 * s)));
                    }
                }
                let v = sc[c / 2];
                let k = 2 * (c as u32 % 2);
                let (s0, s1) = (
                    _mm512_shuffle_epi8(v, _mm512_broadcast_i64x4(within_dwords(0x8080_8000 | k))),
                    _mm512_shuffle_epi8(
                        v,
                        _mm512_broadcast_i64x4(within_dwords(0x8080_8000 | (k + 1))),
                    ),
                );
                for t in 0..NT {
                    isum[t] = _mm512_add_epi32(
                        isum[t],
                        _mm512_add_epi32(
                            _mm512_mullo_epi32(lo[t], s0),
                            _mm512_mullo_epi32(hi[t], s1),
                        ),
                    );
                }
            }
            // Each dword's bytes 2p, 2p + 1 as two 16-bit lanes.
            let pair = |v: __m512i, p: u32| {
                _mm512_shuffle_epi8(
                    v,
                    _mm512_broadcast_i64x4(within_dwords(
                        0x8000_8000 | ((2 * p + 1) << 16) | (2 * p),
                    )),
                )
            };
            let m = [
                pair(mn[0], 0),
                pair(mn[0], 1),
                pair(mn[1], 0),
                pair(mn[1], 1),
            ];
            let l = i % 8;
            for t in 0..NT {
                let bs = a[t].bsum32.as_ptr().add(8 * i) as *const i8;
                let imin = _mm512_add_epi32(
                    _mm512_add_epi32(
                        _mm512_madd_epi16(m[0], bcast512(bs)),
                        _mm512_madd_epi16(m[1], bcast512(bs.add(4))),
                    ),
                    _mm512_add_epi32(
                        _mm512_madd_epi16(m[2], bcast512(bs.add(8))),
                        _mm512_madd_epi16(m[3], bcast512(bs.add(12))),
                    ),
                );
                let dy = _mm512_set1_ps(*a[t].d.get_unchecked(i));
                acc[t][l] =
                    _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(isum[t]), acc[t][l]);
                acc[t][l] =
                    _mm512_fnmadd_ps(_mm512_mul_ps(dm, dy), _mm512_cvtepi32_ps(imin), acc[t][l]);
            }
        }
        core::array::from_fn(|t| hsum8_lanes16(&acc[t]))
    }

    /// The dword at `p` (unaligned) in every lane of a 512-bit vector.
    #[inline(always)]
    unsafe fn bcast512(p: *const i8) -> __m512i {
        _mm512_set1_epi32((p as *const i32).read_unaligned())
    }

    /// [`hsum8_lanes`] on 16 lanes at once.
    #[inline(always)]
    unsafe fn hsum8_lanes16(acc: &[__m512; 8]) -> [f32; 2 * ROWS] {
        let s0 = _mm512_add_ps(acc[0], acc[4]);
        let s1 = _mm512_add_ps(acc[1], acc[5]);
        let s2 = _mm512_add_ps(acc[2], acc[6]);
        let s3 = _mm512_add_ps(acc[3], acc[7]);
        let r = _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3));
        let mut out = [0f32; 2 * ROWS];
        _mm512_storeu_ps(out.as_mut_ptr(), r);
        out
    }

    /// Bytes of a Q6_K group's super-block.
    const GB6: usize = ROWS * Kind::Q6K.block_bytes();

    /// The 8 rows of a packed Q6_K group (`p`: `nb * 1680` bytes) against `NT` activation rows
    /// of `nb` super-blocks (the 6-bit values built once for all of them), by Q6_K's
    /// definition: per super-block the exact `Σ_g sc_g·(Σ q·y − 32·Σ16y)` over its 16
    /// sub-blocks, then `acc[i % 8] = fma(d·dy, isum, ·)`, and `hsum8`.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI.
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub(crate) unsafe fn dot_q6_k<const NT: usize>(
        p: &[u8],
        a: &[ActRow; NT],
    ) -> [[f32; ROWS]; NT] {
        let nb = p.len() / GB6;
        for a in a {
            assert!(
                p.len() == nb * GB6
                    && a.d.len() == nb
                    && a.qs.len() == nb * 256
                    && a.bsum.len() == nb * 16
            );
        }
        let (m4, m30) = (_mm256_set1_epi8(0xF), _mm256_set1_epi8(0x30));
        let mut acc = [[_mm256_setzero_ps(); 8]; NT];
        for i in 0..nb {
            // SAFETY (all reads below): the group's super-block `i` is bytes
            // GB6·i..GB6·(i + 1) of `p`; the activation reads stay inside super-block `i`'s
            // 256 values and 16 sums (checked above). Prefetches never fault.
            let b = p.as_ptr().add(GB6 * i);
            for l in 0..GB6.div_ceil(64) {
                _mm_prefetch::<_MM_HINT_T2>(b.wrapping_add(PF + 64 * l) as *const i8);
            }
            let d = _mm256_cvtph_ps(_mm_loadu_si128(b as *const __m128i));
            let mut isum = [_mm256_setzero_si256(); NT];
            for h in 0..2 {
                // Sub-blocks 8h..8h + 8 (16 values each): sub-block 8h + 2k + half gathers
                // the values of part k (0..4) for s = 4·half..4·half + 4.
                let mut sums = [[[_mm256_setzero_si256(); 4]; 2]; NT];
                for half in 0..2 {
                    for s in 4 * half..4 * half + 4 {
                        let ql = |k: usize| {
                            _mm256_loadu_si256(
                                b.add(144 + 32 * (16 * h + 8 * k + s)) as *const __m256i
                            )
                        };
                        let (ql0, ql1) = (ql(0), ql(1));
                        let qh =
                            _mm256_loadu_si256(b.add(1168 + 32 * (8 * h + s)) as *const __m256i);
                        let v = [
                            _mm256_or_si256(
                                _mm256_and_si256(ql0, m4),
                                _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(ql1, m4),
                                _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                                _mm256_and_si256(qh, m30),
                            ),
                            _mm256_or_si256(
                                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                            ),
                        ];
                        for t in 0..NT {
                            let y = a[t].qs.as_ptr().add(256 * i + 128 * h + 4 * s);
                            for k in 0..4 {
                                sums[t][half][k] = _mm256_dpbusd_epi32(
                                    sums[t][half][k],
                                    v[k],
                                    bcast(y.add(32 * k)),
                                );
                            }
                        }
                    }
                }
                for k in 0..8 {
                    let g = 8 * h + k;
                    let sv = _mm256_loadu_si256(b.add(16 + 32 * (g / 4)) as *const __m256i);
                    // Byte g % 4 of each dword, sign-extended.
                    let top = within_dwords(((g as u32 % 4) << 24) | 0x0080_8080);
                    let sc = _mm256_srai_epi32::<24>(_mm256_shuffle_epi8(sv, top));
                    for t in 0..NT {
                        let off =
                            _mm256_set1_epi32(32 * *a[t].bsum.get_unchecked(16 * i + g) as i32);
                        let tk = sums[t][k % 2][k / 2];
                        isum[t] = _mm256_add_epi32(
                            isum[t],
                            _mm256_mullo_epi32(_mm256_sub_epi32(tk, off), sc),
                        );
                    }
                }
            }
            let l = i % 8;
            for t in 0..NT {
                let dy = _mm256_set1_ps(*a[t].d.get_unchecked(i));
                acc[t][l] =
                    _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(isum[t]), acc[t][l]);
            }
        }
        core::array::from_fn(|t| hsum8_lanes(&acc[t]))
    }

    /// `hsum8` of each lane's 8 accumulators.
    #[inline(always)]
    unsafe fn hsum8_lanes(acc: &[__m256; 8]) -> [f32; ROWS] {
        let s0 = _mm256_add_ps(acc[0], acc[4]);
        let s1 = _mm256_add_ps(acc[1], acc[5]);
        let s2 = _mm256_add_ps(acc[2], acc[6]);
        let s3 = _mm256_add_ps(acc[3], acc[7]);
        let r = _mm256_add_ps(_mm256_add_ps(s0, s2), _mm256_add_ps(s1, s3));
        let mut out = [0f32; ROWS];
        _mm256_storeu_ps(out.as_mut_ptr(), r);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::QAct;

    /// The AVX-512 kernels against their scalar twins on random bytes (sane f16 scales) and
    /// random activations, 1 to 11 blocks (Q4_0: 1 to 13, groups of 4 with every remainder);
    /// and packing round trips.
    #[test]
    fn avx512_matches_scalar_twin() {
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for (kind, counts) in [
            (Kind::Q4K, &[1usize, 3, 8, 11][..]),
            (Kind::Q5K, &[1, 3, 8, 11][..]),
            (Kind::Q4_0, &[1, 2, 3, 4, 5, 13][..]),
            (Kind::Q6K, &[1, 3, 8, 11][..]),
        ] {
            let bb = kind.block_bytes();
            let (values, f16s): (usize, &[usize]) = match kind {
                Kind::Q4K | Kind::Q5K => (256, &[1, 3]),
                Kind::Q4_0 => (32, &[1]),
                Kind::Q6K => (256, &[209]),
            };
            for &nb in counts {
                let rows_bytes: Vec<Vec<u8>> = (0..ROWS)
                    .map(|_| {
                        (0..nb * bb)
                            .map(|i| {
                                let v = next() as u8;
                                // f16 scales: high bytes kept small and finite.
                                if f16s.contains(&(i % bb)) {
                                    v & 0x3B
                                } else {
                                    v
                                }
                            })
                            .collect()
                    })
                    .collect();
                let mut p = vec![0u8; nb * ROWS * bb];
                pack(
                    kind,
                    core::array::from_fn(|r| rows_bytes[r].as_slice()),
                    &mut p,
                );
                let mut back = vec![0u8; nb * bb];
                for (r, row) in rows_bytes.iter().enumerate() {
                    unpack_row(kind, &p, r, &mut back);
                    assert_eq!(&back, row, "{kind:?}: round trip of row {r}");
                }
                // Four activation rows: the kernels that take several at once give each the
                // bits of the scalar twin on that row alone.
                let x: Vec<f32> = (0..4 * nb * values)
                    .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                    .collect();
                let mut act = QAct::default();
                act.quantize(&x, 4, nb * values, values, false, kind == Kind::Q4_0);
                let rows: [ActRow; 4] = core::array::from_fn(|t| act.row(t));
                let want: Vec<[f32; ROWS]> = rows.iter().map(|a| dot_scalar(kind, &p, a)).collect();
                #[cfg(target_arch = "x86_64")]
                {
                    if !crate::kernels::has_avx512_vnni() {
                        println!("SKIPPED: CPU lacks AVX-512 VNNI");
                        continue;
                    }
                    let r1 = [rows[0]];
                    let r2 = [rows[0], rows[1]];
                    // SAFETY: AVX-512 VNNI (with F, BW, VL), AVX2, FMA and F16C checked above.
                    let got: Vec<Vec<[f32; ROWS]>> = unsafe {
                        match kind {
                            Kind::Q4K => vec![
                                avx512::dot_q4_k::<1, false>(&p, &r1).to_vec(),
                                avx512::dot_q4_k::<2, false>(&p, &r2).to_vec(),
                                avx512::dot_q4_k::<4, false>(&p, &rows).to_vec(),
                            ],
                            Kind::Q5K => vec![
                                avx512::dot_q4_k::<1, true>(&p, &r1).to_vec(),
                                avx512::dot_q4_k::<2, true>(&p, &r2).to_vec(),
                                avx512::dot_q4_k::<4, true>(&p, &rows).to_vec(),
                            ],
                            Kind::Q4_0 => vec![
                                avx512::dot_q4_0::<1>(&p, &r1).to_vec(),
                                avx512::dot_q4_0::<2>(&p, &r2).to_vec(),
                            ],
                            Kind::Q6K => vec![
                                avx512::dot_q6_k::<1>(&p, &r1).to_vec(),
                                avx512::dot_q6_k::<2>(&p, &r2).to_vec(),
                            ],
                        }
                    };
                    // Two groups at once: the second the same rows in reverse order.
                    let mut p2 = vec![0u8; p.len()];
                    pack(
                        kind,
                        core::array::from_fn(|r| rows_bytes[ROWS - 1 - r].as_slice()),
                        &mut p2,
                    );
                    let want2: Vec<[f32; ROWS]> =
                        rows.iter().map(|a| dot_scalar(kind, &p2, a)).collect();
                    // SAFETY: as above.
                    let wide: Vec<Vec<[f32; 2 * ROWS]>> = unsafe {
                        match kind {
                            Kind::Q4K => vec![
                                avx512::dot_q4_k_2g::<1, false>(&p, &p2, &r1).to_vec(),
                                avx512::dot_q4_k_2g::<2, false>(&p, &p2, &r2).to_vec(),
                                avx512::dot_q4_k_2g::<4, false>(&p, &p2, &rows).to_vec(),
                            ],
                            Kind::Q5K => vec![
                                avx512::dot_q4_k_2g::<1, true>(&p, &p2, &r1).to_vec(),
                                avx512::dot_q4_k_2g::<2, true>(&p, &p2, &r2).to_vec(),
                                avx512::dot_q4_k_2g::<4, true>(&p, &p2, &rows).to_vec(),
                            ],
                            Kind::Q6K => vec![
                                avx512::dot_q6_k_2g::<1>(&p, &p2, &r1).to_vec(),
                                avx512::dot_q6_k_2g::<2>(&p, &p2, &r2).to_vec(),
                            ],
                            Kind::Q4_0 => (1..=4)
                                .map(|n| {
                                    let mut out = vec![[0f32; 2 * ROWS]; n];
                                    avx512::dot_q4_0_2g(&p, &p2, &rows[..n], &mut out);
                                    out
                                })
                                .collect(),
                        }
                    };
                    for g in &wide {
                        for (t, g) in g.iter().enumerate() {
                            for r in 0..2 * ROWS {
                                let w = if r < ROWS {
                                    want[t][r]
                                } else {
                                    want2[t][r - ROWS]
                                };
                                assert_eq!(
                                    g[r].to_bits(),
                                    w.to_bits(),
                                    "{kind:?} two groups nb={nb} activation row {t}, row {r}"
                                );
                            }
                        }
                    }
                    for g in &got {
                        for (t, g) in g.iter().enumerate() {
                            for r in 0..ROWS {
                                assert_eq!(
                                    g[r].to_bits(),
                                    want[t][r].to_bits(),
                                    "{kind:?} nb={nb} activation row {t} of {}, row {r}",
                                    got.len()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
