//! Matrix products of stored weights with f32 activations, and (de)quantisation entry points.

use crate::act::{ActRow, QAct};
use crate::x8;
#[cfg(target_arch = "x86_64")]
use crate::{amx, ftile, ktile, q4tile};
use crate::{kernels, quants, DType, Layout, MatRef, TensorError};
use rayon::prelude::*;
use std::cell::RefCell;

/// Rows computed for all tokens before moving on (their bytes stay in L1/L2 while the
/// tokens stream past). Only affects speed, never values.
const TILE_ROWS: usize = 8;
/// Weight rows the tile path unpacks together (their unpacked bytes, about 5 KB per row of
/// 4096 values, and one tile of activations stay in L2 while the tile meets them all).
#[cfg(target_arch = "x86_64")]
const UNPACK_ROWS: usize = 16;
/// Tokens handed to a kernel call together (a multiple of 4 for the four-row kernels).
const TOKENS_PER_STEP: usize = 16;
/// Most weight rows handed to a kernel call together (the float register blocks).
const MAX_STEP: usize = 4;
/// Most tokens handed to a kernel call together.
const MAX_TOKENS: usize = 24;

/// A quantised-weight kernel: one weight row (whole blocks) · one quantised activation row.
type QKernel = fn(&[u8], &ActRow) -> f32;
/// The same for two activation rows at once (batched decode of two sequences).
type QKernel2 = fn(&[u8], &[ActRow; 2]) -> [f32; 2];
/// The same for four activation rows at once (sharing the weight unpacking); each result is
/// bit-identical to the single-row kernel's.
type QKernel4 = fn(&[u8], &[ActRow; 4]) -> [f32; 4];
/// Two weight rows against one or four activation rows (sharing the activation loads); each
/// result is bit-identical to the single-row kernel's.
#[derive(Clone, Copy)]
struct QPair {
    one: QPair1,
    four: QPair4,
}
type QPair1 = fn(&[u8], &[u8], &ActRow) -> [f32; 2];
type QPair4 = fn(&[u8], &[u8], &[ActRow; 4]) -> [[f32; 4]; 2];
/// A float-weight kernel: one weight row (stored bytes) · one f32 activation row.
type FKernel = fn(&[u8], &[f32]) -> f32;
/// The same for two activation rows (sharing the weight loads), bit-identical per row.
type FKernel2 = fn(&[u8], [&[f32]; 2]) -> [f32; 2];
/// A register block of float weight rows × tokens ([`ftile`]): `out[i · stride + t]`,
/// bit-identical to the one-row kernel per output.
type FKernelB = fn(&[&[u8]], &[&[f32]], &mut [f32], usize);

#[derive(Clone, Copy)]
enum Kernel {
    Quant(QKernel, QKernel2, QKernel4, usize, Option<QPair>),
    Float(FKernel, FKernel2, Option<FKernelB>),
}

#[cfg(target_arch = "x86_64")]
mod avx2_entry {
    //! Safe entry points to the AVX2 kernels. They are only reachable through
    //! [`super::kernel_for`], which hands them out after `kernels::has_avx2()` returned true
    //! (and the `_vnni` forms after `kernels::has_avx512_vnni()` did).
    use crate::act::ActRow;
    use crate::kernels::avx2;
    macro_rules! wrap_q {
        ($($name:ident, $name2:ident, $name4:ident;)*) => {$(
            pub(super) fn $name(w: &[u8], a: &ActRow) -> f32 {
                // SAFETY: only selected when the CPU has AVX2, FMA and F16C (and, for the
                // `_vnni` forms, AVX-512 F, VL and VNNI).
                unsafe { avx2::$name::<1>(w, &[*a])[0] }
            }
            pub(super) fn $name2(w: &[u8], a: &[ActRow; 2]) -> [f32; 2] {
                // SAFETY: as above.
                unsafe { avx2::$name::<2>(w, a) }
            }
            pub(super) fn $name4(w: &[u8], a: &[ActRow; 4]) -> [f32; 4] {
                // SAFETY: as above.
                unsafe { avx2::$name::<4>(w, a) }
            }
        )*};
    }
    pub(super) fn dot_q4_0_vnni_pair1(w0: &[u8], w1: &[u8], a: &ActRow) -> [f32; 2] {
        // SAFETY: only selected when the CPU has AVX-512 F, BW, VL and VNNI.
        let r = unsafe { avx2::dot_q4_0_vnni_pair::<1>(w0, w1, &[*a]) };
        [r[0][0], r[1][0]]
    }
    pub(super) fn dot_q4_0_vnni_pair4(w0: &[u8], w1: &[u8], a: &[ActRow; 4]) -> [[f32; 4]; 2] {
        // SAFETY: as above.
        unsafe { avx2::dot_q4_0_vnni_pair::<4>(w0, w1, a) }
    }
    wrap_q! {
        dot_q4_0, dot_q4_0_x2, dot_q4_0_x4;
        dot_q4_0_vnni, dot_q4_0_vnni_x2, dot_q4_0_vnni_x4;
        dot_q4_1_vnni, dot_q4_1_vnni_x2, dot_q4_1_vnni_x4;
        dot_q5_0_vnni, dot_q5_0_vnni_x2, dot_q5_0_vnni_x4;
        dot_q5_1_vnni, dot_q5_1_vnni_x2, dot_q5_1_vnni_x4;
        dot_q8_0_vnni, dot_q8_0_vnni_x2, dot_q8_0_vnni_x4;
        dot_q4_1, dot_q4_1_x2, dot_q4_1_x4;
        dot_q5_0, dot_q5_0_x2, dot_q5_0_x4;
        dot_q5_1, dot_q5_1_x2, dot_q5_1_x4;
        dot_q8_0, dot_q8_0_x2, dot_q8_0_x4;
        dot_q4_k, dot_q4_k_x2, dot_q4_k_x4;
        dot_q4_k_vnni, dot_q4_k_vnni_x2, dot_q4_k_vnni_x4;
        dot_q5_k_vnni, dot_q5_k_vnni_x2, dot_q5_k_vnni_x4;
        dot_q4_k_vnni256, dot_q4_k_vnni256_x2, dot_q4_k_vnni256_x4;
        dot_q5_k_vnni256, dot_q5_k_vnni256_x2, dot_q5_k_vnni256_x4;
        dot_q6_k_vnni, dot_q6_k_vnni_x2, dot_q6_k_vnni_x4;
        dot_q5_k, dot_q5_k_x2, dot_q5_k_x4;
        dot_q6_k, dot_q6_k_x2, dot_q6_k_x4;
    }
    macro_rules! wrap_f {
        ($($name:ident),*) => {$(
            pub(super) fn $name(w: &[u8], x: &[f32]) -> f32 {
                // SAFETY: only selected when the CPU has AVX2, FMA and F16C.
                unsafe { avx2::$name(w, x) }
            }
        )*};
    }
    wrap_f!(dot_f32b, dot_f16, dot_bf16);
    macro_rules! wrap_f2 {
        ($($name:ident),*) => {$(
            pub(super) fn $name(w: &[u8], x: [&[f32]; 2]) -> [f32; 2] {
                // SAFETY: only selected when the CPU has AVX2, FMA and F16C.
                unsafe { avx2::$name(w, x) }
            }
        )*};
    }
    wrap_f2!(dot_f32b_x2, dot_f16_x2, dot_bf16_x2);
    macro_rules! wrap_fb {
        ($($name:ident),*) => {$(
            pub(super) fn $name(w: &[&[u8]], x: &[&[f32]], out: &mut [f32], stride: usize) {
                // SAFETY: only selected when the CPU has AVX-512 F (and AVX2, FMA, F16C).
                unsafe { crate::ftile::$name(w, x, out, stride) }
            }
        )*};
    }
    wrap_fb!(block_f32, block_f16, block_bf16);
}

/// Four-row version of a scalar kernel (the definition: each row on its own).
macro_rules! scalar_x4 {
    ($f:path) => {
        |w: &[u8], a: &[ActRow; 4]| [$f(w, &a[0]), $f(w, &a[1]), $f(w, &a[2]), $f(w, &a[3])]
    };
}

/// Two-row version of a scalar quantised kernel (each row on its own).
macro_rules! scalar_x2q {
    ($f:path) => {
        |w: &[u8], a: &[ActRow; 2]| [$f(w, &a[0]), $f(w, &a[1])]
    };
}

/// Two-row version of a scalar float kernel (each row on its own).
macro_rules! scalar_x2 {
    ($f:path) => {
        |w: &[u8], x: [&[f32]; 2]| [$f(w, x[0]), $f(w, x[1])]
    };
}

/// The instruction-set paths of the kernels. Every path computes the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust: the definitions the SIMD paths reproduce.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// AVX2 plus AVX-512 F/BW/VL/VNNI: the 32-value block types (Q4_0, Q4_1, Q5_0, Q5_1,
    /// Q8_0) take their integer dot products from `vpdpbusd`, the k-quants (Q4_K, Q5_K, Q6_K)
    /// scale theirs with `vpdpwssd`; the float types as [`Isa::Avx2`] for one token, and in
    /// 512-bit register blocks of 4 rows × 3 tokens for more (the same bits). Where AVX-512
    /// runs on 256-bit units (AMD Zen 4), the Q4_K and Q5_K row kernels take their 256-bit
    /// form with `vpdpwssd` (the same bits, faster there).
    Avx512Vnni,
    /// [`Isa::Avx512Vnni`] plus Intel AMX-INT8 and AMX-BF16: batches of 32 tokens or more of
    /// Q4_K and Q6_K weights take their exact integer sums from tile multiplications
    /// (`tdpbf16ps`, `tdpbssd`), 16 rows × 16 tokens at a time.
    Amx,
}

impl Isa {
    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => kernels::has_avx2(),
            Isa::Avx512Vnni => kernels::has_avx512_vnni(),
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Amx => false,
        }
    }

    /// The paths this CPU can run, scalar first.
    pub fn available() -> Vec<Isa> {
        [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni, Isa::Amx]
            .into_iter()
            .filter(|i| i.supported())
            .collect()
    }

    /// The path [`matmul`] takes: the widest one available, or the one named by the
    /// environment variable `DEEPSEEK_ISA` (`scalar`, `avx2`, `avx512vnni`, `amx`) when this CPU
    /// supports it (for comparisons between paths on one machine). Decided once.
    pub fn current() -> Isa {
        use std::sync::OnceLock;
        static CUR: OnceLock<Isa> = OnceLock::new();
        *CUR.get_or_init(|| {
            let best = *Isa::available().last().unwrap_or(&Isa::Scalar);
            match std::env::var("DEEPSEEK_ISA").ok().as_deref() {
                Some(name) => Isa::parse(name).filter(|i| i.supported()).unwrap_or(best),
                None => best,
            }
        })
    }

    /// The path named `scalar`, `avx2`, `avx512vnni` or `amx`.
    pub fn parse(name: &str) -> Option<Isa> {
        match name.to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512vnni" | "avx512_vnni" | "avx512-vnni" => Some(Isa::Avx512Vnni),
            "amx" => Some(Isa::Amx),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512Vnni => "avx512vnni",
            Isa::Amx => "amx",
        }
    }
}

/// The scalar kernel of a quantised type with its 2- and 4-row forms, for blocks of `block`.
macro_rules! scalar_q {
    ($f:path, $block:expr) => {
        Kernel::Quant($f, scalar_x2q!($f), scalar_x4!($f), $block, None)
    };
}

/// Kernel selection for a path this CPU supports (the caller checked).
fn kernel_for(dtype: DType, isa: Isa) -> Kernel {
    use kernels as k;
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx512Vnni && k::has_avx512_vnni() {
        use avx2_entry as a;
        let q = |f1: QKernel, f2: QKernel2, f4: QKernel4| Kernel::Quant(f1, f2, f4, 32, None);
        let k = |f1: QKernel, f2: QKernel2, f4: QKernel4| Kernel::Quant(f1, f2, f4, 256, None);
        match dtype {
            DType::Q4_0 => {
                let pair = QPair {
                    one: a::dot_q4_0_vnni_pair1,
                    four: a::dot_q4_0_vnni_pair4,
                };
                return Kernel::Quant(
                    a::dot_q4_0_vnni,
                    a::dot_q4_0_vnni_x2,
                    a::dot_q4_0_vnni_x4,
                    32,
                    Some(pair),
                );
            }
            DType::Q4_1 => return q(a::dot_q4_1_vnni, a::dot_q4_1_vnni_x2, a::dot_q4_1_vnni_x4),
            DType::Q5_0 => return q(a::dot_q5_0_vnni, a::dot_q5_0_vnni_x2, a::dot_q5_0_vnni_x4),
            DType::Q5_1 => return q(a::dot_q5_1_vnni, a::dot_q5_1_vnni_x2, a::dot_q5_1_vnni_x4),
            DType::Q8_0 => return q(a::dot_q8_0_vnni, a::dot_q8_0_vnni_x2, a::dot_q8_0_vnni_x4),
            // On 256-bit units, the 256-bit forms (the same bits).
            DType::Q4_K if k::avx512_on_256bit_units() => {
                return k(
                    a::dot_q4_k_vnni256,
                    a::dot_q4_k_vnni256_x2,
                    a::dot_q4_k_vnni256_x4,
                );
            }
            DType::Q5_K if k::avx512_on_256bit_units() => {
                return k(
                    a::dot_q5_k_vnni256,
                    a::dot_q5_k_vnni256_x2,
                    a::dot_q5_k_vnni256_x4,
                );
            }
            DType::Q4_K => return k(a::dot_q4_k_vnni, a::dot_q4_k_vnni_x2, a::dot_q4_k_vnni_x4),
            DType::Q5_K => return k(a::dot_q5_k_vnni, a::dot_q5_k_vnni_x2, a::dot_q5_k_vnni_x4),
            DType::Q6_K => return k(a::dot_q6_k_vnni, a::dot_q6_k_vnni_x2, a::dot_q6_k_vnni_x4),
            DType::F32 => return Kernel::Float(a::dot_f32b, a::dot_f32b_x2, Some(a::block_f32)),
            DType::F16 => return Kernel::Float(a::dot_f16, a::dot_f16_x2, Some(a::block_f16)),
            DType::BF16 => return Kernel::Float(a::dot_bf16, a::dot_bf16_x2, Some(a::block_bf16)),
        }
    }
    #[cfg(target_arch = "x86_64")]
    if isa >= Isa::Avx2 && k::has_avx2() {
        use avx2_entry as a;
        return match dtype {
            DType::F32 => Kernel::Float(a::dot_f32b, a::dot_f32b_x2, None),
            DType::F16 => Kernel::Float(a::dot_f16, a::dot_f16_x2, None),
            DType::BF16 => Kernel::Float(a::dot_bf16, a::dot_bf16_x2, None),
            DType::Q4_0 => Kernel::Quant(a::dot_q4_0, a::dot_q4_0_x2, a::dot_q4_0_x4, 32, None),
            DType::Q4_1 => Kernel::Quant(a::dot_q4_1, a::dot_q4_1_x2, a::dot_q4_1_x4, 32, None),
            DType::Q5_0 => Kernel::Quant(a::dot_q5_0, a::dot_q5_0_x2, a::dot_q5_0_x4, 32, None),
            DType::Q5_1 => Kernel::Quant(a::dot_q5_1, a::dot_q5_1_x2, a::dot_q5_1_x4, 32, None),
            DType::Q8_0 => Kernel::Quant(a::dot_q8_0, a::dot_q8_0_x2, a::dot_q8_0_x4, 32, None),
            DType::Q4_K => Kernel::Quant(a::dot_q4_k, a::dot_q4_k_x2, a::dot_q4_k_x4, 256, None),
            DType::Q5_K => Kernel::Quant(a::dot_q5_k, a::dot_q5_k_x2, a::dot_q5_k_x4, 256, None),
            DType::Q6_K => Kernel::Quant(a::dot_q6_k, a::dot_q6_k_x2, a::dot_q6_k_x4, 256, None),
        };
    }
    let _ = isa;
    match dtype {
        DType::F32 => Kernel::Float(k::dot_f32b_scalar, scalar_x2!(k::dot_f32b_scalar), None),
        DType::F16 => Kernel::Float(k::dot_f16_scalar, scalar_x2!(k::dot_f16_scalar), None),
        DType::BF16 => Kernel::Float(k::dot_bf16_scalar, scalar_x2!(k::dot_bf16_scalar), None),
        DType::Q4_0 => scalar_q!(k::dot_q4_0_scalar, 32),
        DType::Q4_1 => scalar_q!(k::dot_q4_1_scalar, 32),
        DType::Q5_0 => scalar_q!(k::dot_q5_0_scalar, 32),
        DType::Q5_1 => scalar_q!(k::dot_q5_1_scalar, 32),
        DType::Q8_0 => scalar_q!(k::dot_q8_0_scalar, 32),
        DType::Q4_K => scalar_q!(k::dot_q4_k_scalar, 256),
        DType::Q5_K => scalar_q!(k::dot_q5_k_scalar, 256),
        DType::Q6_K => scalar_q!(k::dot_q6_k_scalar, 256),
    }
}

thread_local! {
    /// Per-thread buffer for quantised activations, so decode does not allocate per call.
    static ACT: RefCell<QAct> = RefCell::new(QAct::default());
    /// Per-thread buffer for the Q4_0 token tiles.
    #[cfg(target_arch = "x86_64")]
    static TILES: RefCell<q4tile::QTiles> = RefCell::new(q4tile::QTiles::default());
    /// Per-thread buffers for [`UNPACK_ROWS`] unpacked weight rows of the tile path.
    #[cfg(target_arch = "x86_64")]
    static UNPACKED: RefCell<Vec<q4tile::Q4Row>> = const { RefCell::new(Vec::new()) };
    /// The same for Q4_K, Q5_K and Q6_K: their activation tiles and unpacked rows.
    #[cfg(target_arch = "x86_64")]
    static KTILES: RefCell<ktile::KTiles> = RefCell::new(ktile::KTiles::default());
    #[cfg(target_arch = "x86_64")]
    static KUNPACKED: RefCell<Vec<ktile::KRow>> = const { RefCell::new(Vec::new()) };
    /// The AMX path's activation tiles, and per thread its unpacked rows and scratch.
    #[cfg(target_arch = "x86_64")]
    static AMX_ACTS: RefCell<amx::kq::Acts> = RefCell::new(amx::kq::Acts::default());
    #[cfg(target_arch = "x86_64")]
    static AMX_ROWS: RefCell<(amx::kq::Rows, amx::Scratch)> = RefCell::new(Default::default());
}

/// Output pointer shared by the row tasks; each task writes only its own rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint elements (distinct weight rows) and the pointer outlives them
// (the parallel loop finishes before `matmul` returns).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[t * w.rows + r] = Σ_k w[r, k] · x[t * w.cols + k]` for `t < n`.
///
/// `x` holds `n` activation rows of `w.cols` values; `out` receives `n` rows of `w.rows`.
/// Runs on the current rayon pool, splitting the weight rows among its threads. Each output
/// value is computed by the same kernel in the same order whatever `n`, the other rows or the
/// thread count (batch invariance). Quantised weights are multiplied with 8-bit quantised
/// activations (see the `kernels` module for the exact arithmetic).
pub fn matmul(w: &MatRef, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), TensorError> {
    matmul_impl(w, x, n, out, Isa::current())
}

/// [`matmul`] with the plain scalar kernels (the definitions the SIMD paths reproduce).
pub fn matmul_scalar(w: &MatRef, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), TensorError> {
    matmul_impl(w, x, n, out, Isa::Scalar)
}

/// [`matmul`] on a chosen path; an error if this CPU cannot run it.
pub fn matmul_isa(
    isa: Isa,
    w: &MatRef,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> Result<(), TensorError> {
    if !isa.supported() {
        return Err(TensorError::UnsupportedIsa(isa.name()));
    }
    matmul_impl(w, x, n, out, isa)
}

/// A matrix in [`Layout::X8`] must be Q4_0, Q4_K, Q5_K or Q6_K with rows a multiple of 8.
fn check_layout(w: &MatRef) -> Result<(), TensorError> {
    if w.layout == Layout::X8
        && (x8::Kind::of(w.dtype).is_none() || !w.rows.is_multiple_of(x8::ROWS))
    {
        return Err(TensorError::Shape(format!(
            "a {}x{} {} matrix cannot be packed in groups of 8 rows",
            w.rows, w.cols, w.dtype
        )));
    }
    Ok(())
}

fn check(w: &MatRef, x: &[f32], n: usize, out: &[f32]) -> Result<(), TensorError> {
    check_layout(w)?;
    let expected = w
        .dtype
        .row_bytes(w.cols)?
        .checked_mul(w.rows)
        .ok_or_else(|| {
            TensorError::Shape(format!("{}x{} {} overflows", w.rows, w.cols, w.dtype))
        })?;
    if w.data.len() != expected {
        return Err(TensorError::Size {
            dtype: w.dtype,
            rows: w.rows,
            cols: w.cols,
            expected,
            found: w.data.len(),
        });
    }
    let xn = n.checked_mul(w.cols);
    let on = n.checked_mul(w.rows);
    if xn != Some(x.len()) || on != Some(out.len()) {
        return Err(TensorError::Shape(format!(
            "matmul of {}x{} {} with {n} rows: x has {} values (expected {}), out has {} (expected {})",
            w.rows,
            w.cols,
            w.dtype,
            x.len(),
            n.saturating_mul(w.cols),
            out.len(),
            n.saturating_mul(w.rows)
        )));
    }
    Ok(())
}

fn matmul_impl(
    w: &MatRef,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    isa: Isa,
) -> Result<(), TensorError> {
    check(w, x, n, out)?;
    if n == 0 || w.rows == 0 {
        return Ok(());
    }
    if w.cols == 0 {
        out.fill(0.0);
        return Ok(());
    }
    let simd = isa != Isa::Scalar;
    match kernel_for(w.dtype, isa) {
        Kernel::Float(f1, f2, fb) => {
            let xr = |t: usize| &x[t * w.cols..(t + 1) * w.cols];
            #[cfg(target_arch = "x86_64")]
            if let (Some(fb), true) = (fb, n >= 2) {
                // Register blocks of `ftile::ROWS` rows × up to `ftile::TOKENS` tokens.
                // Whole register blocks of tokens per call (a block of one token would convert
                // each weight for a single product).
                let tokens = TOKENS_PER_STEP / ftile::TOKENS * ftile::TOKENS + ftile::TOKENS;
                run_rows(w, n, out, (ftile::ROWS, tokens), |r, m, t0, t1, o| {
                    let nt = t1 - t0;
                    let mut rows: [&[u8]; ftile::ROWS] = [&[]; ftile::ROWS];
                    for (i, row) in rows[..m].iter_mut().enumerate() {
                        *row = w.row(r + i);
                    }
                    let mut t = t0;
                    while t < t1 {
                        let u = (t + ftile::TOKENS).min(t1);
                        let mut xs: [&[f32]; ftile::TOKENS] = [&[]; ftile::TOKENS];
                        for (j, xj) in xs[..u - t].iter_mut().enumerate() {
                            *xj = xr(t + j);
                        }
                        fb(&rows[..m], &xs[..u - t], &mut o[t - t0..], nt);
                        t = u;
                    }
                });
                return Ok(());
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = fb;
            run_rows(w, n, out, (1, TOKENS_PER_STEP), |r, m, t0, t1, o| {
                debug_assert_eq!(m, 1);
                let wr = w.row(r);
                let mut t = t0;
                while t + 2 <= t1 {
                    let v = f2(wr, [xr(t), xr(t + 1)]);
                    o[t - t0..t - t0 + 2].copy_from_slice(&v);
                    t += 2;
                }
                for t in t..t1 {
                    o[t - t0] = f1(wr, xr(t));
                }
            });
        }
        Kernel::Quant(f1, f2, f4, block, pair) => {
            let mut act = ACT.with(|c| std::mem::take(&mut *c.borrow_mut()));
            act.quantize(x, n, w.cols, block, simd, w.dtype == DType::Q4_0);
            let rows: Vec<ActRow> = (0..n).map(|t| act.row(t)).collect();
            // 8-row packed Q4_0, Q4_K, Q5_K or Q6_K: the packed kernels (up to four tokens per pass
            // over a group, whose bytes stay in L1 or L2 across the tokens) where they are the
            // faster path ([`x8_takes`]); else the tile paths on rows rebuilt one at a time.
            if w.layout == Layout::X8 {
                let vnni = simd && isa >= Isa::Avx512Vnni && kernels::has_avx512_vnni();
                let amx = isa == Isa::Amx && n >= AMX_MIN_TOKENS && amx::available();
                if !vnni || x8_takes(w.dtype, n, amx) {
                    run_x8(w, &rows, out, vnni);
                    drop(rows);
                    ACT.with(|c| *c.borrow_mut() = act);
                    return Ok(());
                }
            }
            // One row at a time: four, two, then single tokens.
            let single = |r: usize, t0: usize, t1: usize, o: &mut [f32]| {
                let mut buf = Vec::new();
                let wr = w.row_to(r, &mut buf);
                let mut t = t0;
                while t + 4 <= t1 {
                    // A view of four consecutive rows: no copy of the (large) row descriptors.
                    let four: &[ActRow; 4] = rows[t..t + 4].try_into().expect("four rows");
                    let v = f4(wr, four);
                    o[t - t0..t - t0 + 4].copy_from_slice(&v);
                    t += 4;
                }
                if t + 2 <= t1 {
                    let two: &[ActRow; 2] = rows[t..t + 2].try_into().expect("two rows");
                    o[t - t0..t - t0 + 2].copy_from_slice(&f2(wr, two));
                    t += 2;
                }
                for t in t..t1 {
                    o[t - t0] = f1(wr, &rows[t]);
                }
            };
            // Two weight rows `r0`, `r1` for tokens `t0..t1` with the two-row kernels.
            let pair_rows =
                |p: QPair, r0: usize, r1: usize, t0: usize, t1: usize, o: &mut [f32]| {
                    let nt = t1 - t0;
                    let (mut b0, mut b1) = (Vec::new(), Vec::new());
                    let (w0, w1) = (w.row_to(r0, &mut b0), w.row_to(r1, &mut b1));
                    let (o0, o1) = o.split_at_mut(nt);
                    let mut t = t0;
                    while t + 4 <= t1 {
                        let four: &[ActRow; 4] = rows[t..t + 4].try_into().expect("four rows");
                        let v = (p.four)(w0, w1, four);
                        o0[t - t0..t - t0 + 4].copy_from_slice(&v[0]);
                        o1[t - t0..t - t0 + 4].copy_from_slice(&v[1]);
                        t += 4;
                    }
                    for t in t..t1 {
                        let v = (p.one)(w0, w1, &rows[t]);
                        o0[t - t0] = v[0];
                        o1[t - t0] = v[1];
                    }
                };
            #[cfg(target_arch = "x86_64")]
            if isa == Isa::Amx && n >= AMX_MIN_TOKENS && amx::available() {
                if let Some(kind) = amx::Kind::of(w.dtype) {
                    let mut acts = AMX_ACTS.with(|c| std::mem::take(&mut *c.borrow_mut()));
                    match kind {
                        amx::Kind::Q4K => acts.build(kind, &act.qs, &act.d, &act.bsum32, n, w.cols),
                        amx::Kind::Q6K => acts.build(kind, &act.qs, &act.d, &act.bsum, n, w.cols),
                    }
                    run_amx(w, kind, &acts, n, out);
                    AMX_ACTS.with(|c| *c.borrow_mut() = acts);
                    drop(rows);
                    ACT.with(|c| *c.borrow_mut() = act);
                    return Ok(());
                }
            }
            #[cfg(target_arch = "x86_64")]
            if isa >= Isa::Avx512Vnni && n >= q4tile::TILE && kernels::has_avx512_vnni() {
                let rest = |r0: usize, r1: usize, t0: usize, t1: usize, o: &mut [f32]| match pair {
                    Some(p) => pair_rows(p, r0, r1, t0, t1, o),
                    None => {
                        let (o0, o1) = o.split_at_mut(t1 - t0);
                        single(r0, t0, t1, o0);
                        single(r1, t0, t1, o1);
                    }
                };
                let done = if let Some(kind) = q4tile::Kind::of(w.dtype) {
                    let mut tiles = TILES.with(|c| std::mem::take(&mut *c.borrow_mut()));
                    tiles.build(&act.qs, &act.d, n, w.cols);
                    run_tiles(w, n, out, &Q32Tiles(kind, &tiles), rest);
                    TILES.with(|c| *c.borrow_mut() = tiles);
                    true
                } else if let Some(kind) = ktile::Kind::of(w.dtype) {
                    let mut tiles = KTILES.with(|c| std::mem::take(&mut *c.borrow_mut()));
                    let sums = if kind == ktile::Kind::Q6K {
                        &act.bsum
                    } else {
                        &act.bsum32
                    };
                    tiles.build(&act.qs, &act.d, sums, kind.groups(), n, w.cols);
                    run_tiles(w, n, out, &KTilePath(kind, &tiles), rest);
                    KTILES.with(|c| *c.borrow_mut() = tiles);
                    true
                } else {
                    false
                };
                if done {
                    drop(rows);
                    ACT.with(|c| *c.borrow_mut() = act);
                    return Ok(());
                }
            }
            // Pairs of weight rows for prefill-sized batches only: decoding one token from two
            // interleaved weight streams per thread measured slower than one stream.
            let step = if pair.is_some() && n >= 4 { 2 } else { 1 };
            run_rows(w, n, out, (step, TOKENS_PER_STEP), |r, m, t0, t1, o| {
                let nt = t1 - t0;
                match pair {
                    Some(p) if m == 2 => pair_rows(p, r, r + 1, t0, t1, o),
                    _ => {
                        for i in 0..m {
                            single(r + i, t0, t1, &mut o[i * nt..(i + 1) * nt]);
                        }
                    }
                }
            });
            drop(rows);
            ACT.with(|c| *c.borrow_mut() = act);
        }
    }
    Ok(())
}

/// A weight type's tile kernels ([`run_tiles`]): the activation tiles of one product and
/// the per-thread unpacked rows.
#[cfg(target_arch = "x86_64")]
trait TilePath: Sync {
    type Row: Default;
    /// Runs `f` on this thread's unpacked-row buffers.
    fn with_rows(f: impl FnOnce(&mut Vec<Self::Row>));
    fn unpack(&self, row: &mut Self::Row, w: &[u8]);
    /// Whole tiles of 16 tokens, whether a tile of 8 follows, and all tokens in tiles.
    fn whole(&self) -> usize;
    fn half(&self) -> bool;
    fn tokens(&self) -> usize;
    /// # Safety
    /// The CPU must support AVX-512 F, BW, VL and VNNI.
    unsafe fn pair(&self, w: [&Self::Row; 2], tile: usize) -> [[f32; 16]; 2];
    /// # Safety
    /// As [`TilePath::pair`]; only called when [`TilePath::half`].
    unsafe fn pair8(&self, w: [&Self::Row; 2]) -> [[f32; 8]; 2];
}

/// Q4_0 or Q8_0 tiles.
#[cfg(target_arch = "x86_64")]
struct Q32Tiles<'a>(q4tile::Kind, &'a q4tile::QTiles);

#[cfg(target_arch = "x86_64")]
impl TilePath for Q32Tiles<'_> {
    type Row = q4tile::Q4Row;
    fn with_rows(f: impl FnOnce(&mut Vec<Self::Row>)) {
        UNPACKED.with(|c| f(&mut c.borrow_mut()))
    }
    fn unpack(&self, row: &mut Self::Row, w: &[u8]) {
        row.unpack_kind(self.0, w)
    }
    fn whole(&self) -> usize {
        self.1.tiles
    }
    fn half(&self) -> bool {
        self.1.half
    }
    fn tokens(&self) -> usize {
        self.1.tokens()
    }
    unsafe fn pair(&self, w: [&Self::Row; 2], tile: usize) -> [[f32; 16]; 2] {
        q4tile::tile_pair(self.0, w, self.1, tile)
    }
    unsafe fn pair8(&self, w: [&Self::Row; 2]) -> [[f32; 8]; 2] {
        q4tile::tile_pair8(self.0, w, self.1)
    }
}

/// Q4_K, Q5_K or Q6_K tiles ([`ktile`]).
#[cfg(target_arch = "x86_64")]
struct KTilePath<'a>(ktile::Kind, &'a ktile::KTiles);

#[cfg(target_arch = "x86_64")]
impl TilePath for KTilePath<'_> {
    type Row = ktile::KRow;
    fn with_rows(f: impl FnOnce(&mut Vec<Self::Row>)) {
        KUNPACKED.with(|c| f(&mut c.borrow_mut()))
    }
    fn unpack(&self, row: &mut Self::Row, w: &[u8]) {
        row.unpack(self.0, w)
    }
    fn whole(&self) -> usize {
        self.1.tiles
    }
    fn half(&self) -> bool {
        false
    }
    fn tokens(&self) -> usize {
        self.1.tiles * ktile::TILE
    }
    unsafe fn pair(&self, w: [&Self::Row; 2], tile: usize) -> [[f32; 16]; 2] {
        ktile::tile_pair(self.0, w, self.1, tile)
    }
    unsafe fn pair8(&self, _: [&Self::Row; 2]) -> [[f32; 8]; 2] {
        unreachable!("the K-quants have no 8-token tile")
    }
}

/// The tile path of Q4_0, Q8_0 ([`q4tile`]), Q4_K, Q5_K and Q6_K ([`ktile`]): the weight rows
/// split among the pool's threads as in [`run_rows`]; each block of [`UNPACK_ROWS`] rows is
/// unpacked once, then every whole tile of 16 tokens meets each pair of rows of the block,
/// then the tile of 8 after them; the tokens after the last tile go to
/// `rest(r0, r1, t0, n, out)` (two rows, `out` holding row `r0`'s values then row `r1`'s). An
/// odd last row is paired with itself.
#[cfg(target_arch = "x86_64")]
fn run_tiles<T: TilePath>(
    w: &MatRef,
    n: usize,
    out: &mut [f32],
    tiles: &T,
    rest: impl Fn(usize, usize, usize, usize, &mut [f32]) + Sync,
) {
    let rows = w.rows;
    let threads = rayon::current_num_threads().max(1);
    let per = rows.div_ceil(threads * 4).div_ceil(TILE_ROWS) * TILE_ROWS;
    let ntasks = rows.div_ceil(per);
    let ptr = OutPtr(out.as_mut_ptr());
    let t_rest = tiles.tokens();
    let body = |i: usize| {
        let p = ptr;
        let (r0, r1) = (i * per, ((i + 1) * per).min(rows));
        // SAFETY (for `put`): t < n and r < r1 <= rows, so the index is inside `out`
        // (n * rows values); the rows r0..r1 belong to this task only.
        let put = |t: usize, r: usize, v: f32| unsafe { *p.0.add(t * rows + r) = v };
        T::with_rows(|u| {
            if u.len() < UNPACK_ROWS {
                u.resize_with(UNPACK_ROWS, Default::default);
            }
            let mut buf = [0f32; 2 * q4tile::TILE];
            let mut rowbuf = Vec::new();
            // Blocks of up to UNPACK_ROWS rows, unpacked once; then each tile of tokens
            // meets every pair of the block while it is in L1/L2.
            for b0 in (r0..r1).step_by(UNPACK_ROWS) {
                let b1 = (b0 + UNPACK_ROWS).min(r1);
                for r in b0..b1 {
                    tiles.unpack(&mut u[r - b0], w.row_to(r, &mut rowbuf));
                }
                // Pairs (r, r + 1); an odd last row is paired with itself.
                let pairs = |r: usize| (r - b0, (r + 1).min(b1 - 1) - b0, r + 1 < b1);
                // The next block's weight bytes, prefetched a share per tile so that its
                // unpacking does not wait on memory.
                let rb = w.data.len() / rows;
                let next = &w.data[(b1 * rb).min(w.data.len())..(r1.min(b1 + UNPACK_ROWS) * rb)];
                for tile in 0..tiles.whole() {
                    prefetch_part(next, tile, tiles.whole());
                    for r in (b0..b1).step_by(2) {
                        let (i0, i1, two) = pairs(r);
                        // SAFETY: the tile path is only taken when the CPU has AVX-512 VNNI.
                        let v = unsafe { tiles.pair([&u[i0], &u[i1]], tile) };
                        for l in 0..q4tile::TILE {
                            put(q4tile::TILE * tile + l, r, v[0][l]);
                            if two {
                                put(q4tile::TILE * tile + l, r + 1, v[1][l]);
                            }
                        }
                    }
                }
                for r in (b0..b1).step_by(2) {
                    let (i0, i1, two) = pairs(r);
                    let m = if two { 2 } else { 1 };
                    if tiles.half() {
                        // SAFETY: as above.
                        let v = unsafe { tiles.pair8([&u[i0], &u[i1]]) };
                        for i in 0..m {
                            for l in 0..8 {
                                put(q4tile::TILE * tiles.whole() + l, r + i, v[i][l]);
                            }
                        }
                    }
                    if t_rest < n {
                        let nt = n - t_rest;
                        rest(r, r + m - 1, t_rest, n, &mut buf[..2 * nt]);
                        for i in 0..m {
                            for t in t_rest..n {
                                put(t, r + i, buf[i * nt + t - t_rest]);
                            }
                        }
                    }
                }
            }
        });
    };
    if ntasks == 1 {
        body(0);
    } else {
        (0..ntasks).into_par_iter().for_each(body);
    }
}

/// Smallest batch that takes the AMX path (smaller ones keep the AVX-512 paths: with 16
/// tokens the AMX kernels were only even with the VNNI tiles, the rows' unpacking being
/// shared by one tile only).
#[cfg(target_arch = "x86_64")]
const AMX_MIN_TOKENS: usize = 32;

/// The AMX path of Q4_K and Q6_K ([`amx`]): the weight rows split among the pool's threads
/// in blocks of 16; each block is unpacked once, then meets every tile of 16 tokens.
#[cfg(target_arch = "x86_64")]
fn run_amx(w: &MatRef, kind: amx::Kind, acts: &amx::kq::Acts, n: usize, out: &mut [f32]) {
    let rows = w.rows;
    let threads = rayon::current_num_threads().max(1);
    let blocks = rows.div_ceil(amx::ROWS);
    let per = blocks.div_ceil(threads * 4);
    let ntasks = blocks.div_ceil(per);
    let ptr = OutPtr(out.as_mut_ptr());
    let body = |i: usize| {
        let p = ptr;
        AMX_ROWS.with(|c| {
            let (unpacked, scratch) = &mut *c.borrow_mut();
            // SAFETY: this path is only taken when `amx::available()` returned true.
            let _tiles = unsafe { amx::TileScope::new(kind) };
            let mut o = [[0f32; amx::TILE]; amx::ROWS];
            let mut ot = [[0f32; amx::ROWS]; amx::TILE];
            let mut bufs: [Vec<u8>; amx::ROWS] = Default::default();
            for blk in i * per..((i + 1) * per).min(blocks) {
                let (r0, r1) = (blk * amx::ROWS, ((blk + 1) * amx::ROWS).min(rows));
                let mut rs: [&[u8]; amx::ROWS] = [&[]; amx::ROWS];
                for ((r, row), buf) in (r0..r1).zip(rs.iter_mut()).zip(bufs.iter_mut()) {
                    *row = w.row_to(r, buf);
                }
                unpacked.unpack(kind, &rs[..r1 - r0]);
                for tile in 0..acts.tiles {
                    // SAFETY: AMX and AVX-512 VNNI are available (above) and the tiles are
                    // configured on this thread (`_tiles`).
                    unsafe { amx::tile(kind, unpacked, acts, tile, scratch, &mut o) };
                    // Token by token, the block's rows are contiguous in `out`.
                    for (m, om) in o.iter().enumerate() {
                        for (l, &v) in om.iter().enumerate() {
                            ot[l][m] = v;
                        }
                    }
                    let t0 = tile * amx::TILE;
                    for (l, row) in ot.iter().enumerate().take(n.saturating_sub(t0)) {
                        // SAFETY: t0 + l < n and r1 <= rows, so the r1 - r0 values at
                        // (t0 + l) * rows + r0 lie inside `out` (n * rows values); rows
                        // r0..r1 belong to this task only.
                        unsafe {
                            let dst = p.0.add((t0 + l) * rows + r0);
                            std::ptr::copy_nonoverlapping(row.as_ptr(), dst, r1 - r0);
                        }
                    }
                }
            }
        });
    };
    if ntasks == 1 {
        body(0);
    } else {
        (0..ntasks).into_par_iter().for_each(body);
    }
}

/// Whether a batch of `n` tokens with an 8-row packed matrix of type `t` takes [`run_x8`]
/// rather than the tile paths (on a CPU with AVX-512 VNNI; `amx`: the AMX path would take the
/// batch, and does). Chosen by `matvec_speed` (`MV_X8=1 MV_CACHED=1`, 512×4096, one thread of
/// a Zen 4 core, µs, packed kernels against tiles): Q4_K 16 tokens 252 against 724, 32 504
/// against 981, 128 2025 against 2440, 512 8399 against 9475 (four tokens per pass, which
/// unpack each super-block once for the four); Q4_0 16 tokens 379 against 463, 32 777 against
/// 738; Q6_K 16 446 against 833 (two tokens per pass). Q4_0 in 512-bit vectors on two groups
/// (Intel Xeon, AVX-512 on full-width units, up to 16 tokens per pass) against the tiles on
/// rows rebuilt from the packed layout: 32 tokens 715 against 974, 128 2878 against 3012, 512
/// 13741 against 13108.
fn x8_takes(t: DType, n: usize, amx: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    let wide = t == DType::Q4_0 && wide512();
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    !amx && (matches!(t, DType::Q4_K | DType::Q5_K) || (wide && n < 256) || n < 32)
}

/// Whether packed matrices take two groups at a time in 512-bit vectors: where AVX-512
/// runs on full-width units (the same bits either way). `DEEPSEEK_WIDE512=0|1` overrides, for
/// comparisons on one machine.
#[cfg(target_arch = "x86_64")]
fn wide512() -> bool {
    use std::sync::OnceLock;
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| match std::env::var("DEEPSEEK_WIDE512").ok().as_deref() {
        Some("0") => false,
        Some("1") => true,
        _ => !kernels::avx512_on_256bit_units(),
    })
}

/// Products with an 8-row packed Q4_0, Q4_K, Q5_K or Q6_K matrix ([`Layout::X8`], checked by `check`):
/// its groups split among the pool's threads, each group multiplied with every activation row
/// in turn (`vnni`: the AVX-512 kernels, else their scalar twin).
fn run_x8(w: &MatRef, acts: &[ActRow], out: &mut [f32], vnni: bool) {
    let kind = x8::Kind::of(w.dtype).expect("packed matrices are Q4_0, Q4_K, Q5_K or Q6_K");
    let rows = w.rows;
    let gb = w.row_bytes() * x8::ROWS;
    let groups = rows / x8::ROWS;
    let threads = rayon::current_num_threads().max(1);
    #[cfg(target_arch = "x86_64")]
    let wide = vnni && wide512();
    #[cfg(not(target_arch = "x86_64"))]
    let wide = false;
    // Tasks of whole pairs of groups for the two-group kernels.
    let per = groups
        .div_ceil(threads * 4)
        .max(1)
        .next_multiple_of(if wide { 2 } else { 1 });
    let ntasks = groups.div_ceil(per);
    let ptr = OutPtr(out.as_mut_ptr());
    let body = |i: usize| {
        let p = ptr;
        let end = ((i + 1) * per).min(groups);
        let mut g = i * per;
        #[cfg(target_arch = "x86_64")]
        if wide {
            // Two groups at a time in 512-bit vectors.
            while g + 2 <= end {
                let (w0, w1) = (
                    &w.data[g * gb..(g + 1) * gb],
                    &w.data[(g + 1) * gb..(g + 2) * gb],
                );
                // SAFETY (for `put`): t < n and 8g + r < rows (16 rows: groups g and g + 1 <
                // end ≤ groups), inside `out`; these groups belong to this task only.
                let put = |t: usize, v: [f32; 2 * x8::ROWS]| {
                    for (r, v) in v.into_iter().enumerate() {
                        unsafe { *p.0.add(t * rows + x8::ROWS * g + r) = v };
                    }
                };
                if matches!(kind, x8::Kind::Q4K | x8::Kind::Q5K) {
                    // Four tokens per pass, then two, then one.
                    let mut t = 0;
                    macro_rules! passes {
                        ($nt:literal) => {
                            while t + $nt <= acts.len() {
                                let a: &[ActRow; $nt] = acts[t..t + $nt].try_into().expect("rows");
                                // SAFETY: `wide` implies `vnni`: the CPU has AVX-512 F, BW,
                                // VL and VNNI (with AVX2, FMA and F16C).
                                let v = unsafe {
                                    if kind == x8::Kind::Q5K {
                                        x8::avx512::dot_q4_k_2g::<$nt, true>(w0, w1, a)
                                    } else {
                                        x8::avx512::dot_q4_k_2g::<$nt, false>(w0, w1, a)
                                    }
                                };
                                for (i, v) in v.into_iter().enumerate() {
                                    put(t + i, v);
                                }
                                t += $nt;
                            }
                        };
                    }
                    passes!(4);
                    passes!(2);
                    if t < acts.len() {
                        // SAFETY: as above.
                        let v = unsafe {
                            if kind == x8::Kind::Q5K {
                                x8::avx512::dot_q4_k_2g::<1, true>(w0, w1, &[acts[t]])
                            } else {
                                x8::avx512::dot_q4_k_2g::<1, false>(w0, w1, &[acts[t]])
                            }
                        };
                        put(t, v[0]);
                    }
                    g += 2;
                    continue;
                }
                if kind == x8::Kind::Q6K {
                    // Two tokens per pass, then one.
                    let mut t = 0;
                    while t + 2 <= acts.len() {
                        let two: &[ActRow; 2] = acts[t..t + 2].try_into().expect("two rows");
                        // SAFETY: `wide` implies `vnni`: the CPU has AVX-512 F, BW, VL and
                        // VNNI (with AVX2, FMA and F16C).
                        let v = unsafe { x8::avx512::dot_q6_k_2g::<2>(w0, w1, two) };
                        put(t, v[0]);
                        put(t + 1, v[1]);
                        t += 2;
                    }
                    if t < acts.len() {
                        // SAFETY: as above.
                        let v = unsafe { x8::avx512::dot_q6_k_2g::<1>(w0, w1, &[acts[t]]) };
                        put(t, v[0]);
                    }
                    g += 2;
                    continue;
                }
                // Up to 16 tokens per pass (one pass over the weights for a decode step of
                // up to 16 sequences).
                let mut res = [[0f32; 2 * x8::ROWS]; x8::avx512::MAX_T];
                for (c, chunk) in acts.chunks(x8::avx512::MAX_T).enumerate() {
                    let res = &mut res[..chunk.len()];
                    // SAFETY: `wide` implies `vnni`: the CPU has AVX-512 F, BW, VL and VNNI
                    // (with AVX2, FMA and F16C).
                    unsafe { x8::avx512::dot_q4_0_2g(w0, w1, chunk, res) };
                    for (i, v) in res.iter().enumerate() {
                        put(c * x8::avx512::MAX_T + i, *v);
                    }
                }
                g += 2;
            }
        }
        for g in g..end {
            let wg = &w.data[g * gb..(g + 1) * gb];
            // SAFETY (for `put`): t < n and 8g + r < rows, so the index is inside `out`
            // (n * rows values); group g belongs to this task only.
            let put = |t: usize, v: [f32; x8::ROWS]| {
                for (r, v) in v.into_iter().enumerate() {
                    unsafe { *p.0.add(t * rows + x8::ROWS * g + r) = v };
                }
            };
            let mut t = 0;
            #[cfg(target_arch = "x86_64")]
            if vnni && matches!(kind, x8::Kind::Q4K | x8::Kind::Q5K) {
                // Four tokens per pass.
                while t + 4 <= acts.len() {
                    let four: &[ActRow; 4] = acts[t..t + 4].try_into().expect("four rows");
                    // SAFETY: as below.
                    let v = unsafe {
                        if kind == x8::Kind::Q5K {
                            x8::avx512::dot_q4_k::<4, true>(wg, four)
                        } else {
                            x8::avx512::dot_q4_k::<4, false>(wg, four)
                        }
                    };
                    for (i, v) in v.into_iter().enumerate() {
                        put(t + i, v);
                    }
                    t += 4;
                }
            }
            #[cfg(target_arch = "x86_64")]
            if vnni {
                // Two tokens per pass: the weights unpacked once for both.
                while t + 2 <= acts.len() {
                    let two: &[ActRow; 2] = acts[t..t + 2].try_into().expect("two rows");
                    // SAFETY: `vnni` is only true when the CPU has AVX-512 F, BW, VL and
                    // VNNI (with AVX2, FMA and F16C).
                    let v = unsafe {
                        match kind {
                            x8::Kind::Q4_0 => x8::avx512::dot_q4_0::<2>(wg, two),
                            x8::Kind::Q4K => x8::avx512::dot_q4_k::<2, false>(wg, two),
                            x8::Kind::Q5K => x8::avx512::dot_q4_k::<2, true>(wg, two),
                            x8::Kind::Q6K => x8::avx512::dot_q6_k::<2>(wg, two),
                        }
                    };
                    put(t, v[0]);
                    put(t + 1, v[1]);
                    t += 2;
                }
            }
            for (t, a) in acts.iter().enumerate().skip(t) {
                #[cfg(target_arch = "x86_64")]
                let v = if vnni {
                    // SAFETY: as above.
                    unsafe {
                        match kind {
                            x8::Kind::Q4_0 => x8::avx512::dot_q4_0::<1>(wg, &[*a])[0],
                            x8::Kind::Q4K => x8::avx512::dot_q4_k::<1, false>(wg, &[*a])[0],
                            x8::Kind::Q5K => x8::avx512::dot_q4_k::<1, true>(wg, &[*a])[0],
                            x8::Kind::Q6K => x8::avx512::dot_q6_k::<1>(wg, &[*a])[0],
                        }
                    }
                } else {
                    x8::dot_scalar(kind, wg, a)
                };
                #[cfg(not(target_arch = "x86_64"))]
                let v = {
                    let _ = vnni;
                    x8::dot_scalar(kind, wg, a)
                };
                put(t, v);
            }
        }
    };
    if ntasks == 1 {
        body(0);
    } else {
        (0..ntasks).into_par_iter().for_each(body);
    }
}

/// Prefetch share `k` of `parts` equal shares of `bytes` into the cache.
#[cfg(target_arch = "x86_64")]
fn prefetch_part(bytes: &[u8], k: usize, parts: usize) {
    let share = bytes.len().div_ceil(parts.max(1)).next_multiple_of(64);
    for line in bytes.chunks(64).skip(k * share / 64).take(share / 64) {
        // SAFETY: a prefetch is a hint that never faults; the address is inside `bytes`.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr() as *const i8
            )
        };
    }
}

/// Split the weight rows among the pool's threads. `f(r, m, t0, t1, out)` computes rows
/// `r..r + m` (`m` at most `step`) for tokens `t0..t1` (at most `tokens` of them) into
/// `out`, row `r + i` at `out[i * (t1 - t0)..]`. Which task computes a value never changes it.
fn run_rows(
    w: &MatRef,
    n: usize,
    out: &mut [f32],
    (step, tokens): (usize, usize),
    f: impl Fn(usize, usize, usize, usize, &mut [f32]) + Sync,
) {
    assert!((1..=MAX_STEP).contains(&step), "{step} rows per call");
    assert!(
        (1..=MAX_TOKENS).contains(&tokens),
        "{tokens} tokens per call"
    );
    let rows = w.rows;
    let threads = rayon::current_num_threads().max(1);
    // A few tasks per thread for balance; whole tiles per task.
    let tasks = if rows * n < 64 { 1 } else { threads * 4 };
    let per = rows.div_ceil(tasks).div_ceil(TILE_ROWS) * TILE_ROWS;
    let ntasks = rows.div_ceil(per);
    let ptr = OutPtr(out.as_mut_ptr());
    let body = |i: usize| {
        let p = ptr;
        let r0 = i * per;
        let r1 = (r0 + per).min(rows);
        let mut buf = [0f32; MAX_STEP * MAX_TOKENS];
        let mut a0 = r0;
        while a0 < r1 {
            let a1 = (a0 + TILE_ROWS).min(r1);
            let mut t0 = 0;
            while t0 < n {
                let t1 = (t0 + tokens).min(n);
                let nt = t1 - t0;
                let mut r = a0;
                while r < a1 {
                    let m = step.min(a1 - r);
                    f(r, m, t0, t1, &mut buf[..m * nt]);
                    for i in 0..m {
                        for t in t0..t1 {
                            // SAFETY: t < n and r + i < rows, so the index is inside `out`
                            // (n * rows values); row r + i belongs to this task only.
                            unsafe { *p.0.add(t * rows + r + i) = buf[i * nt + t - t0] };
                        }
                    }
                    r += m;
                }
                t0 = t1;
            }
            a0 = a1;
        }
    };
    if ntasks == 1 {
        body(0);
    } else {
        (0..ntasks).into_par_iter().for_each(body);
    }
}

/// Whether the 8-row packed Q4_0, Q4_K, Q5_K and Q6_K kernels run on this CPU (AVX-512 VNNI, and no
/// narrower path chosen with `DEEPSEEK_ISA`): where they do not, packing would only cost time.
pub fn x8_fast() -> bool {
    Isa::current() >= Isa::Avx512Vnni && kernels::has_avx512_vnni()
}

/// Whether [`pack_x8`] takes `w`.
pub fn packable_x8(w: &MatRef) -> bool {
    packed_kind(w).is_some()
}

/// The packed kind of `w` when [`pack_x8`] takes it.
fn packed_kind(w: &MatRef) -> Option<x8::Kind> {
    let packable = w.layout == Layout::Rows && w.rows.is_multiple_of(x8::ROWS);
    x8::Kind::of(w.dtype).filter(|_| packable)
}

/// The Q4_0, Q4_K, Q5_K or Q6_K matrix `w` (rows a multiple of 8) repacked in groups of 8 rows for
/// decode (the `x8` module's layout; view it with [`MatRef::packed_x8`]); as many bytes.
pub fn pack_x8(w: &MatRef) -> Result<Vec<u8>, TensorError> {
    if !packable_x8(w) {
        // The refusal, before any allocation.
        pack_x8_into(w, &mut [])?;
    }
    let rb = w.dtype.row_bytes(w.cols)?;
    let mut out = vec![0u8; rb * w.rows];
    // Groups of 8 rows in parallel, each packed by the sequential `pack_x8_into`.
    out.par_chunks_mut(rb * x8::ROWS)
        .enumerate()
        .try_for_each(|(g, o)| {
            let rows = &w.data[g * rb * x8::ROWS..(g + 1) * rb * x8::ROWS];
            pack_x8_into(&MatRef::new(w.dtype, x8::ROWS, w.cols, rows)?, o)
        })?;
    Ok(out)
}

/// [`pack_x8`] into `out`, exactly as many bytes as `w`, on the calling thread alone (a caller
/// may pack a matrix a few groups of rows at a time, each group's bytes being the same range
/// in both layouts).
pub fn pack_x8_into(w: &MatRef, out: &mut [u8]) -> Result<(), TensorError> {
    let Some(kind) = packed_kind(w) else {
        let packed = if w.layout == Layout::X8 {
            ", already packed"
        } else {
            ""
        };
        return Err(TensorError::Shape(format!(
            "8-row packing takes Q4_0, Q4_K, Q5_K or Q6_K with rows a multiple of 8, not {}x{} {}{packed}",
            w.rows, w.cols, w.dtype
        )));
    };
    let rb = w.dtype.row_bytes(w.cols)?;
    if out.len() != rb * w.rows {
        return Err(TensorError::Shape(format!(
            "8-row packing of a {}x{} {} matrix ({} bytes) into {} bytes",
            w.rows,
            w.cols,
            w.dtype,
            rb * w.rows,
            out.len()
        )));
    }
    for (g, o) in out.chunks_mut(rb * x8::ROWS).enumerate() {
        x8::pack(kind, core::array::from_fn(|r| w.row(8 * g + r)), o);
    }
    Ok(())
}

/// Dequantise row `r` of `w` into `out` (`w.cols` values).
pub fn dequantize_row(w: &MatRef, r: usize, out: &mut [f32]) -> Result<(), TensorError> {
    if r >= w.rows {
        return Err(TensorError::Shape(format!(
            "row {r} of a matrix with {} rows",
            w.rows
        )));
    }
    if out.len() < w.cols {
        return Err(TensorError::Shape(format!(
            "output of {} values for a row of {}",
            out.len(),
            w.cols
        )));
    }
    check_layout(w)?;
    let rb = w.dtype.row_bytes(w.cols)?;
    if w.data.len() < (r + 1) * rb {
        return Err(TensorError::Shape(format!("row {r} is outside the data")));
    }
    let mut buf = Vec::new();
    dequantize(w.dtype, w.row_to(r, &mut buf), &mut out[..w.cols])
}

/// Dequantise `data` (a whole number of blocks of `dtype`) into `out`.
pub fn dequantize(dtype: DType, data: &[u8], out: &mut [f32]) -> Result<(), TensorError> {
    let expected = dtype.row_bytes(out.len())?;
    if data.len() != expected {
        return Err(TensorError::Size {
            dtype,
            rows: 1,
            cols: out.len(),
            expected,
            found: data.len(),
        });
    }
    match dtype {
        DType::F32 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        DType::F16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::Q4_0 => quants::dequant_q4_0(data, out),
        DType::Q4_1 => quants::dequant_q4_1(data, out),
        DType::Q5_0 => quants::dequant_q5_0(data, out),
        DType::Q5_1 => quants::dequant_q5_1(data, out),
        DType::Q8_0 => quants::dequant_q8_0(data, out),
        DType::Q4_K => quants::dequant_q4_k(data, out),
        DType::Q5_K => quants::dequant_q5_k(data, out),
        DType::Q6_K => quants::dequant_q6_k(data, out),
    }
    Ok(())
}

/// Quantise `src` (a whole number of blocks) into the stored bytes of `dtype`, exactly as
/// llama.cpp's reference quantisers (`quantize_row_*_ref`) do.
pub fn quantize(dtype: DType, src: &[f32]) -> Result<Vec<u8>, TensorError> {
    let mut out = Vec::with_capacity(dtype.row_bytes(src.len())?);
    match dtype {
        DType::F32 => src
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => src
            .iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        DType::BF16 => src
            .iter()
            .for_each(|v| out.extend_from_slice(&half::bf16::from_f32(*v).to_le_bytes())),
        DType::Q4_0 => quants::quant_q4_0(src, &mut out),
        DType::Q4_1 => quants::quant_q4_1(src, &mut out),
        DType::Q5_0 => quants::quant_q5_0(src, &mut out),
        DType::Q5_1 => quants::quant_q5_1(src, &mut out),
        DType::Q8_0 => quants::quant_q8_0(src, &mut out),
        DType::Q4_K => quants::quant_q4_k(src, &mut out),
        DType::Q5_K => quants::quant_q5_k(src, &mut out),
        DType::Q6_K => quants::quant_q6_k(src, &mut out),
    }
    Ok(out)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Both AVX-512 VNNI forms (512-bit and 256-bit) of the Q4_K and Q5_K row kernels against
    /// the scalar definitions, bit for bit, at 1, 2 and 4 tokens and odd block counts.
    /// [`kernel_for`] hands out one form or the other depending on the width of the vector
    /// units, so `tests/matmul.rs` reaches only one of them on a given CPU; this test runs both.
    #[test]
    fn vnni_k4_forms_match_scalar() {
        if !kernels::has_avx512_vnni() {
            println!("SKIPPED (in effect): this CPU has no AVX-512 VNNI");
            return;
        }
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        use avx2_entry as a;
        type Forms = (QKernel, QKernel2, QKernel4, QKernel);
        let forms: [(DType, Forms); 4] = [
            (
                DType::Q4_K,
                (
                    a::dot_q4_k_vnni,
                    a::dot_q4_k_vnni_x2,
                    a::dot_q4_k_vnni_x4,
                    kernels::dot_q4_k_scalar,
                ),
            ),
            (
                DType::Q5_K,
                (
                    a::dot_q5_k_vnni,
                    a::dot_q5_k_vnni_x2,
                    a::dot_q5_k_vnni_x4,
                    kernels::dot_q5_k_scalar,
                ),
            ),
            (
                DType::Q4_K,
                (
                    a::dot_q4_k_vnni256,
                    a::dot_q4_k_vnni256_x2,
                    a::dot_q4_k_vnni256_x4,
                    kernels::dot_q4_k_scalar,
                ),
            ),
            (
                DType::Q5_K,
                (
                    a::dot_q5_k_vnni256,
                    a::dot_q5_k_vnni256_x2,
                    a::dot_q5_k_vnni256_x4,
                    kernels::dot_q5_k_scalar,
                ),
            ),
        ];
        for (dtype, (f1, f2, f4, scalar)) in forms {
            for nb in [1usize, 3, 7] {
                let k = 256 * nb;
                let x: Vec<f32> = (0..4 * k)
                    .map(|_| (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
                    .collect();
                let w = quantize(dtype, &x[..k]).unwrap();
                let mut act = QAct::default();
                act.quantize(&x, 4, k, 256, true, false);
                let rows: Vec<ActRow> = (0..4).map(|t| act.row(t)).collect();
                let want: Vec<u32> = rows.iter().map(|r| scalar(&w, r).to_bits()).collect();
                assert_eq!(f1(&w, &rows[0]).to_bits(), want[0], "{dtype} nb={nb}");
                let two: &[ActRow; 2] = rows[..2].try_into().unwrap();
                let four: &[ActRow; 4] = rows[..4].try_into().unwrap();
                let got2 = f2(&w, two).map(f32::to_bits);
                let got4 = f4(&w, four).map(f32::to_bits);
                assert_eq!(&got2[..], &want[..2], "{dtype} nb={nb} x2");
                assert_eq!(&got4[..], &want[..], "{dtype} nb={nb} x4");
            }
        }
    }
}
