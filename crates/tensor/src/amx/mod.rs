//! Q4_K and Q6_K weights × tiles of 16 tokens on Intel AMX (`tdpbf16ps`, `tdpbssd`), for
//! prefill and large batches.
//!
//! AMX multiplies a 16 × K tile of signed bytes (16 weight rows) by a K × 16 tile (16 tokens,
//! stored four bytes of K per token) into a 16 × 16 tile of exact `i32` sums, 4096 or more
//! multiply-adds per instruction. Integer sums are exact in any order, so the only work that
//! decides the bits is the float step, which runs on AVX-512 exactly as the definitions of
//! [`crate::kernels`] say; each output has the bits of the row kernels (tests check it).
//! Each tile product computes the sum over 32 of a super-block's values (one "lane": the
//! values `v` with `(v % 32) / 4` fixed, 4 from each sub-block), and the weight rows are
//! unpacked so that a lane's values are contiguous; the activation tiles pick the same
//! values. The float step adds the 8 lanes' sums as integers (the definition's exact
//! per-super-block `isum`) and runs the definition's float step for the super-block into
//! the row's accumulator `i % 8`.
//!
//! The values times their sub-block scales need more than 8 bits, so each is split into two
//! exact parts ([`kq`]): Q6_K as `lo + 64·hi` byte tiles whose integer sums are combined
//! before the float step, Q4_K as two bf16 tiles whose f32 sums are exact integers.
//!
//! The sums go through memory (AMX has no move to vector registers). The tile operations of
//! the next super-block are issued between the float steps of the current one (one per
//! weight row). On the machine measured (with the earlier definition's 8 float steps per
//! super-block), tile loads and stores did not overlap with the vector work much, and the
//! result was about 2× the AVX-512 VNNI tile kernels of that time for Q4_K and Q6_K. Q4_0
//! and Q8_0 keep those: their AMX form (one product per 16-value half-block) measured slower than them at
//! every batch size (see BENCHMARKS.md).

pub(crate) mod kq;
pub(crate) mod w16;

use crate::aligned::Aligned;
use core::arch::asm;
use core::arch::x86_64::*;

/// Tokens per tile (the columns of a sum tile).
pub(crate) const TILE: usize = 16;
/// Weight rows per tile (the rows of a sum tile).
pub(crate) const ROWS: usize = 16;

/// Whether this CPU and the operating system run AMX-INT8 and AMX-BF16 (with AVX-512 VNNI
/// for the float steps). On Linux a process must ask for the AMX register state first; that request is
/// made here, once.
pub(crate) fn available() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        if !crate::kernels::has_avx512_vnni() {
            return false;
        }
        // CPUID leaf 7, sub-leaf 0: EDX bit 22 AMX-BF16, bit 24 AMX-TILE, bit 25 AMX-INT8.
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is only used when leaf 0 says so.
        let (max, edx) = unsafe { (__cpuid(0).eax, __cpuid_count(7, 0).edx) };
        let amx = [22, 24, 25].iter().all(|b| (edx >> b) & 1 == 1);
        max >= 7 && amx && request_permission()
    })
}

#[cfg(target_os = "linux")]
fn request_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: this arch_prctl request passes two integers and no memory; it only asks the
    // kernel to let this process use the AMX tile data state (0 on success).
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(target_os = "linux"))]
fn request_permission() -> bool {
    false
}

/// The weight types with an AMX kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Q4K,
    Q6K,
}

impl Kind {
    pub fn of(dtype: crate::DType) -> Option<Kind> {
        match dtype {
            crate::DType::Q4_K => Some(Kind::Q4K),
            crate::DType::Q6_K => Some(Kind::Q6K),
            _ => None,
        }
    }
}

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1): sum tiles 0-3 of 16 rows
/// of 64 bytes, weight tiles 4-5 of 16 rows of `kb` bytes, activation tiles 6-7 of `kr`
/// rows of 64 bytes (Q6_K: 32 bytes and 8 rows, K = 32 bytes; Q4_K: 64 bytes and 16 rows,
/// K = 32 bf16 pairs).
#[repr(C, align(64))]
struct Config([u8; 64]);

impl Config {
    fn new(kind: Kind) -> Config {
        let (kb, kr) = match kind {
            Kind::Q4K => (64u16, 16u8),
            Kind::Q6K => (32, 8),
        };
        let mut b = [0u8; 64];
        b[0] = 1;
        let shape: [(u8, u16); 8] = [
            (16, 64),
            (16, 64),
            (16, 64),
            (16, 64),
            (16, kb),
            (16, kb),
            (kr, 64),
            (kr, 64),
        ];
        for (i, (rows, colsb)) in shape.into_iter().enumerate() {
            b[16 + 2 * i..18 + 2 * i].copy_from_slice(&colsb.to_le_bytes());
            b[48 + i] = rows;
        }
        Config(b)
    }
}

/// The tile registers configured for one kind's kernel on the current thread, released
/// when dropped (so the thread's AMX state goes back to its initial, cheap-to-save form).
pub(crate) struct TileScope(std::marker::PhantomData<*const ()>);

impl TileScope {
    /// # Safety
    /// [`available`] must have returned true.
    pub unsafe fn new(kind: Kind) -> TileScope {
        let cfg = Config::new(kind);
        // SAFETY: AMX is available and this process may use it (the caller's contract); the
        // configuration is a valid palette-1 layout (rows <= 16, colsb <= 64, reserved 0).
        asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
        TileScope(std::marker::PhantomData)
    }
}

impl Drop for TileScope {
    fn drop(&mut self) {
        // SAFETY: a TileScope only exists after `ldtilecfg` ran on this thread (it is not
        // Send, and its private field keeps it from being made otherwise).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// A tile of zeros, loaded into a sum tile before each product (`tilezero` measured about
/// twice as slow in this sequence).
#[repr(C, align(64))]
pub(crate) struct Zeros(pub [i32; 256]);
pub(crate) static ZEROS: Zeros = Zeros([0; 256]);

/// Per-thread working memory of the kernels: two sets of 16 sum tiles (the current
/// super-block's, read by the float steps, and the next one's, written meanwhile) and the
/// 8 accumulators of 16 rows × 16 tokens.
#[derive(Default, Debug)]
pub(crate) struct Scratch {
    sums: Aligned<i32>,
    acc: Aligned<f32>,
}

impl Scratch {
    /// Room for the two sets of sum tiles, and zeroed accumulators.
    fn prepare(&mut self) {
        self.sums.ensure_len(2 * 16 * 256);
        self.acc.reset(ROWS * 8 * TILE);
    }
}

/// `out[m] = hsum8` of row `m`'s 8 accumulators, lane by lane over the 16 tokens:
/// `(a0+a4 + a2+a6) + (a1+a5 + a3+a7)`.
///
/// # Safety
/// The CPU must support AVX-512 F.
#[target_feature(enable = "avx512f")]
unsafe fn finish(scratch: &Scratch, out: &mut [[f32; TILE]; ROWS]) {
    assert_eq!(scratch.acc.len(), ROWS * 8 * TILE);
    for (m, o) in out.iter_mut().enumerate() {
        // SAFETY: the 8 × 16 accumulators of row m lie inside `acc` (length asserted),
        // which starts on a 64-byte boundary.
        let ap = scratch.acc.as_ptr().add(m * 8 * TILE);
        let a = |l: usize| _mm512_load_ps(ap.add(l * TILE));
        let s0 = _mm512_add_ps(a(0), a(4));
        let s1 = _mm512_add_ps(a(1), a(5));
        let s2 = _mm512_add_ps(a(2), a(6));
        let s3 = _mm512_add_ps(a(3), a(7));
        let r = _mm512_add_ps(_mm512_add_ps(s0, s2), _mm512_add_ps(s1, s3));
        _mm512_storeu_ps(o.as_mut_ptr(), r);
    }
}

/// The unpacked rows × token tile `tile` of `act`: `out[m][l]` is, bit for bit, the row
/// kernel's dot product of row `m` and token `16·tile + l`.
///
/// # Safety
/// The CPU must support AMX-INT8 and AVX-512 F/BW/VL/VNNI, and the tiles must be configured
/// on this thread ([`TileScope`]).
pub(crate) unsafe fn tile(
    kind: Kind,
    rows: &kq::Rows,
    act: &kq::Acts,
    tile: usize,
    scratch: &mut Scratch,
    out: &mut [[f32; TILE]; ROWS],
) {
    match kind {
        Kind::Q4K => kq::tile_q4k(rows, act, tile, scratch),
        Kind::Q6K => kq::tile_q6k(rows, act, tile, scratch),
    }
    finish(scratch, out);
}
