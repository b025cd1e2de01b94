//! F32, F16 and BF16 weights × several tokens at once on AVX-512 (prefill and batched decode).
//!
//! The float definition of [`crate::kernels`] (`dot_float_scalar`): 32 lane sums
//! `p[l] += w[k]·x[k]` over `k ≡ l (mod 32)` up to the last whole 32 values (each product
//! added by a fused multiply-add), folded by `reduce32`, plus the remaining values summed in
//! order.
//! The row kernels hold one output's 32 lane sums in four 256-bit registers and convert each
//! weight once for one or two tokens; here two 512-bit registers hold them, and one
//! register block of [`ROWS`] weight rows × up to [`TOKENS`] tokens shares every weight
//! conversion among the tokens and every activation load among the rows, so a converted
//! weight vector feeds [`TOKENS`] products instead of two. The same products are added to the
//! same lane sums in the same order: each output has exactly the bits of the row kernels.

use crate::kernels::reduce32;
use core::arch::x86_64::*;

/// Weight rows per register block.
pub(crate) const ROWS: usize = 4;
/// Tokens per register block (at most; the last block of a step may hold fewer). [`dispatch`]
/// has a form for each count up to it.
pub(crate) const TOKENS: usize = 3;

/// A stored float type: 16 weights as f32 lanes, and one weight as f32.
trait Load {
    const BYTES: usize;
    /// # Safety
    /// `p..p + 16 · BYTES` must be readable; the CPU must support AVX-512 F.
    unsafe fn load16(p: *const u8) -> __m512;
    fn at(w: &[u8], k: usize) -> f32;
}

struct F32;
struct F16;
struct Bf16;

impl Load for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> __m512 {
        _mm512_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    fn at(w: &[u8], k: usize) -> f32 {
        f32::from_le_bytes([w[4 * k], w[4 * k + 1], w[4 * k + 2], w[4 * k + 3]])
    }
}

impl Load for F16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    fn at(w: &[u8], k: usize) -> f32 {
        half::f16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32()
    }
}

impl Load for Bf16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn load16(p: *const u8) -> __m512 {
        let h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i));
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(h))
    }
    #[inline(always)]
    fn at(w: &[u8], k: usize) -> f32 {
        half::bf16::from_le_bytes([w[2 * k], w[2 * k + 1]]).to_f32()
    }
}

/// `out[i · stride + t]` = row `w[i]` · token `x[t]` for up to [`ROWS`] rows and `T` tokens
/// (`x.len() == T <= stride`); missing rows of the block repeat the last one (computed, not
/// stored).
///
/// # Safety
/// The CPU must support AVX-512 F.
#[inline(always)]
unsafe fn block<L: Load, const T: usize>(
    w: &[&[u8]],
    x: &[&[f32]],
    out: &mut [f32],
    stride: usize,
) {
    let nr = w.len();
    let len = x[0].len();
    assert!((1..=ROWS).contains(&nr) && x.len() == T && T <= stride);
    assert!(out.len() >= (nr - 1) * stride + T);
    assert!(w.iter().all(|r| r.len() >= len * L::BYTES) && x.iter().all(|t| t.len() == len));
    let n32 = len / 32 * 32;
    let wp: [*const u8; ROWS] = core::array::from_fn(|i| w[i.min(nr - 1)].as_ptr());
    let xp: [*const f32; T] = core::array::from_fn(|t| x[t].as_ptr());
    let mut acc = [[[_mm512_setzero_ps(); 2]; T]; ROWS];
    let mut c = 0;
    while c < n32 {
        for h in 0..2 {
            // SAFETY: c + 16h + 16 <= n32 <= len, inside every weight row and token.
            let wv: [__m512; ROWS] =
                core::array::from_fn(|i| L::load16(wp[i].add((c + 16 * h) * L::BYTES)));
            for t in 0..T {
                let xv = _mm512_loadu_ps(xp[t].add(c + 16 * h));
                for i in 0..ROWS {
                    acc[i][t][h] = _mm512_fmadd_ps(wv[i], xv, acc[i][t][h]);
                }
            }
        }
        c += 32;
    }
    for i in 0..nr {
        for t in 0..T {
            let mut p = [0f32; 32];
            _mm512_storeu_ps(p.as_mut_ptr(), acc[i][t][0]);
            _mm512_storeu_ps(p.as_mut_ptr().add(16), acc[i][t][1]);
            let mut tail = 0f32;
            for k in n32..len {
                tail = L::at(w[i], k).mul_add(x[t][k], tail);
            }
            out[i * stride + t] = reduce32(&p) + tail;
        }
    }
}

/// [`block`] for `x.len()` tokens in `1..=TOKENS`.
#[inline(always)]
unsafe fn dispatch<L: Load>(w: &[&[u8]], x: &[&[f32]], out: &mut [f32], stride: usize) {
    match x.len() {
        1 => block::<L, 1>(w, x, out, stride),
        2 => block::<L, 2>(w, x, out, stride),
        3 => block::<L, 3>(w, x, out, stride),
        n => panic!("a float register block takes 1 to {TOKENS} tokens, not {n}"),
    }
}

/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn block_f32(w: &[&[u8]], x: &[&[f32]], out: &mut [f32], stride: usize) {
    dispatch::<F32>(w, x, out, stride)
}

/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn block_f16(w: &[&[u8]], x: &[&[f32]], out: &mut [f32], stride: usize) {
    dispatch::<F16>(w, x, out, stride)
}

/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
pub(crate) unsafe fn block_bf16(w: &[&[u8]], x: &[&[f32]], out: &mut [f32], stride: usize) {
    dispatch::<Bf16>(w, x, out, stride)
}
