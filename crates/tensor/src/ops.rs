//! Element-wise and reduction kernels on f32 activations (and f16 KV-cache rows).
//!
//! Every function picks an AVX2 path at run time when the CPU has AVX2+FMA+F16C and
//! otherwise runs its twin in [`scalar`], which defines the result: both perform the same
//! IEEE operations in the same order (no fused multiply-add), so they agree bit for bit.
//!
//! * Sums and dot products use 32 partial sums (element `k` goes to sum `k % 32`), reduced as
//!   `s[l] = (p[l]+p[l+8]) + (p[l+16]+p[l+24])`, then `((s0+s4)+(s2+s6)) + ((s1+s5)+(s3+s7))`;
//!   a tail of fewer than 32 elements is summed in order and added last.
//! * `exp` is a Cephes-style polynomial ([`scalar::exp`], about 2 ulp), not libm's.

use half::f16;

fn simd() -> bool {
    crate::kernels::has_avx2()
}

/// View f16 values as their little-endian bytes.
#[cfg(target_arch = "x86_64")]
fn f16_bytes(x: &[f16]) -> &[u8] {
    // SAFETY: f16 is a plain 2-byte value (repr(transparent) over u16); u8 has alignment 1
    // and the byte length is exactly 2 · len.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, std::mem::size_of_val(x)) }
}

/// `Σ a[k]·b[k]` in the fixed order described in the module docs.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2/FMA/F16C checked; equal lengths.
        return unsafe { crate::kernels::avx2::dot_f32(a, b) };
    }
    scalar::dot(a, b)
}

/// `Σ a[k]·b[k]` with `b` in f16 (converted exactly), same order as [`dot`].
pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: AVX2/FMA/F16C checked; b has 2·len(a) bytes.
        return unsafe { crate::kernels::avx2::dot_f16_unfused(f16_bytes(b), a) };
    }
    scalar::dot_f16(a, b)
}

/// `y += a * x` (product then add per element).
pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: features checked.
        return unsafe { avx2::axpy(a, x, y) };
    }
    scalar::axpy(a, x, y)
}

/// `y += a * x` with `x` in f16.
pub fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: features checked.
        return unsafe { avx2::axpy_f16(a, x, y) };
    }
    scalar::axpy_f16(a, x, y)
}

/// `out = x · (1 / sqrt(Σx²/n + eps)) · weight`, with `Σx² = dot(x, x)`.
pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: features checked.
        return unsafe { avx2::rmsnorm(x, weight, eps, out) };
    }
    scalar::rmsnorm(x, weight, eps, out)
}

/// In-place softmax: `exp(x - max) / Σ exp(x - max)` (multiplied by the reciprocal of the sum).
pub fn softmax(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: features checked.
        return unsafe { avx2::softmax(x) };
    }
    scalar::softmax(x)
}

/// `gate[i] = silu(gate[i]) * up[i]`, `silu(z) = z / (1 + exp(-z))`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd() {
        // SAFETY: features checked.
        return unsafe { avx2::silu_mul(gate, up) };
    }
    scalar::silu_mul(gate, up)
}

/// The scalar definitions of the functions above.
pub mod scalar {
    use half::f16;

    const EXP_HI: f32 = 88.3;
    const EXP_LO: f32 = -87.3;
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5e-1,
    ];
    pub(crate) const EXP_CONSTS: (f32, f32, f32, f32, f32, [f32; 6]) =
        (EXP_HI, EXP_LO, LOG2E, C1, C2, P);

    /// `e^x` (Cephes polynomial; inputs clamped to [-87.3, 88.3], NaN gives e^-87.3).
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        // max/min rather than clamp: NaN maps to EXP_LO, as in the SIMD twin.
        #[allow(clippy::manual_clamp)]
        let x = x.max(EXP_LO).min(EXP_HI);
        let n = (x * LOG2E).round_ties_even();
        let r = x - n * C1;
        let r = r - n * C2;
        let mut p = P[0];
        for c in &P[1..] {
            p = p * r + c;
        }
        let y = p * (r * r) + r + 1.0;
        y * f32::from_bits(((n as i32 + 127) as u32) << 23)
    }

    /// 32-lane ordered sum of `f(k)` for `k < len`.
    #[inline(always)]
    fn sum32(len: usize, f: impl Fn(usize) -> f32) -> f32 {
        let n32 = len / 32 * 32;
        let mut p = [0f32; 32];
        for c in (0..n32).step_by(32) {
            for l in 0..32 {
                p[l] += f(c + l);
            }
        }
        let mut tail = 0f32;
        for k in n32..len {
            tail += f(k);
        }
        let mut s = [0f32; 8];
        for l in 0..8 {
            s[l] = (p[l] + p[l + 8]) + (p[l + 16] + p[l + 24]);
        }
        crate::kernels::hsum8(&s) + tail
    }

    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        sum32(n, |k| a[k] * b[k])
    }

    pub fn dot_f16(a: &[f32], b: &[f16]) -> f32 {
        let n = a.len().min(b.len());
        sum32(n, |k| a[k] * b[k].to_f32())
    }

    pub fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += a * xi;
        }
    }

    pub fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi += a * xi.to_f32();
        }
    }

    pub fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let ss = dot(x, x);
        let scale = 1.0 / (ss / x.len().max(1) as f32 + eps).sqrt();
        for ((o, xi), wi) in out.iter_mut().zip(x).zip(weight) {
            *o = (xi * scale) * wi;
        }
    }

    pub fn softmax(x: &mut [f32]) {
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for v in x.iter_mut() {
            *v = exp(*v - max);
        }
        let sum = sum32(x.len(), |k| x[k]);
        let inv = 1.0 / sum;
        for v in x.iter_mut() {
            *v *= inv;
        }
    }

    pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
        for (g, u) in gate.iter_mut().zip(up) {
            let z = *g;
            *g = z / (1.0 + exp(-z)) * u;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 twins of [`super::scalar`]; callers check the CPU features. Slices are accessed
    //! with unaligned loads inside their checked lengths.
    use super::scalar;
    use core::arch::x86_64::*;
    use half::f16;

    #[inline(always)]
    unsafe fn exp8(x: __m256) -> __m256 {
        let (hi, lo, log2e, c1, c2, p) = scalar::EXP_CONSTS;
        // max(x, lo) returns lo for NaN x, as f32::max in the scalar version.
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(lo)), _mm256_set1_ps(hi));
        let n = _mm256_round_ps(
            _mm256_mul_ps(x, _mm256_set1_ps(log2e)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(c1)));
        let r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(c2)));
        let mut q = _mm256_set1_ps(p[0]);
        for c in &p[1..] {
            q = _mm256_add_ps(_mm256_mul_ps(q, r), _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(
            _mm256_add_ps(_mm256_mul_ps(q, _mm256_mul_ps(r, r)), r),
            _mm256_set1_ps(1.0),
        );
        let e = _mm256_slli_epi32(
            _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
            23,
        );
        _mm256_mul_ps(y, _mm256_castsi256_ps(e))
    }

    /// 32-lane ordered sum of the vectors `f(c)` (8 values at `c`) plus the scalar tail `g(k)`.
    #[inline(always)]
    unsafe fn sum32(len: usize, f: impl Fn(usize) -> __m256, g: impl Fn(usize) -> f32) -> f32 {
        let n32 = len / 32 * 32;
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut c = 0;
        while c < n32 {
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, f(c + 8 * j));
            }
            c += 32;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let mut tail = 0f32;
        for k in n32..len {
            tail += g(k);
        }
        let r = _mm_add_ps(_mm256_extractf128_ps(s, 1), _mm256_castps256_ps128(s));
        let r = _mm_add_ps(r, _mm_movehl_ps(r, r));
        let r = _mm_add_ss(r, _mm_movehdup_ps(r));
        _mm_cvtss_f32(r) + tail
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let av = _mm256_set1_ps(a);
        let (xp, yp) = (x.as_ptr(), y.as_mut_ptr());
        let mut k = 0;
        while k + 8 <= n {
            // SAFETY: k + 8 <= n.
            let v = _mm256_add_ps(
                _mm256_loadu_ps(yp.add(k)),
                _mm256_mul_ps(av, _mm256_loadu_ps(xp.add(k))),
            );
            _mm256_storeu_ps(yp.add(k), v);
            k += 8;
        }
        scalar::axpy(a, &x[k..n], &mut y[k..n]);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn axpy_f16(a: f32, x: &[f16], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let av = _mm256_set1_ps(a);
        let (xp, yp) = (x.as_ptr() as *const u8, y.as_mut_ptr());
        let mut k = 0;
        while k + 8 <= n {
            // SAFETY: k + 8 <= n, x holds 2n bytes.
            let xv = _mm256_cvtph_ps(_mm_loadu_si128(xp.add(2 * k) as *const __m128i));
            let v = _mm256_add_ps(_mm256_loadu_ps(yp.add(k)), _mm256_mul_ps(av, xv));
            _mm256_storeu_ps(yp.add(k), v);
            k += 8;
        }
        scalar::axpy_f16(a, &x[k..n], &mut y[k..n]);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rmsnorm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
        let ss = crate::kernels::avx2::dot_f32(x, x);
        let scale = 1.0 / (ss / x.len().max(1) as f32 + eps).sqrt();
        let n = x.len().min(weight.len()).min(out.len());
        let sv = _mm256_set1_ps(scale);
        let mut k = 0;
        while k + 8 <= n {
            // SAFETY: k + 8 <= n for all three slices.
            let v = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(k)), sv),
                _mm256_loadu_ps(weight.as_ptr().add(k)),
            );
            _mm256_storeu_ps(out.as_mut_ptr().add(k), v);
            k += 8;
        }
        for i in k..n {
            out[i] = (x[i] * scale) * weight[i];
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn softmax(x: &mut [f32]) {
        let n = x.len();
        let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mv = _mm256_set1_ps(max);
        let p = x.as_mut_ptr();
        let mut k = 0;
        while k + 8 <= n {
            // SAFETY: k + 8 <= n.
            _mm256_storeu_ps(p.add(k), exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(k)), mv)));
            k += 8;
        }
        for v in &mut x[k..] {
            *v = scalar::exp(*v - max);
        }
        let pc = x.as_ptr();
        // SAFETY: the vector loads read c..c+8 <= n32 <= n.
        let sum = sum32(n, |c| _mm256_loadu_ps(pc.add(c)), |k| x[k]);
        let inv = 1.0 / sum;
        let iv = _mm256_set1_ps(inv);
        let p = x.as_mut_ptr();
        let mut k = 0;
        while k + 8 <= n {
            // SAFETY: k + 8 <= n.
            _mm256_storeu_ps(p.add(k), _mm256_mul_ps(_mm256_loadu_ps(p.add(k)), iv));
            k += 8;
        }
        for v in &mut x[k..] {
            *v *= inv;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn silu_mul(gate: &mut [f32], up: &[f32]) {
        let n = gate.len().min(up.len());
        let (gp, upp) = (gate.as_mut_ptr(), up.as_ptr());
        let one = _mm256_set1_ps(1.0);
        let neg = _mm256_set1_ps(-0.0);
        let mut k = 0;
        while k + 8 <= n {
            // SAFETY: k + 8 <= n.
            let z = _mm256_loadu_ps(gp.add(k));
            let e = exp8(_mm256_xor_ps(z, neg));
            let v = _mm256_mul_ps(
                _mm256_div_ps(z, _mm256_add_ps(one, e)),
                _mm256_loadu_ps(upp.add(k)),
            );
            _mm256_storeu_ps(gp.add(k), v);
            k += 8;
        }
        scalar::silu_mul(&mut gate[k..n], &up[k..n]);
    }
}
