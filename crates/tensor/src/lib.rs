//! Weight types, quantised block layouts and the CPU kernels that compute with them.
//!
//! Weights stay in their stored type; activations are `f32`. A [`MatRef`] is a borrowed,
//! row-major matrix of `rows × cols` elements of one [`DType`] (each row a whole number of
//! blocks, bytes possibly unaligned). [`matmul`] multiplies it with `n` activation rows.
//!
//! Contract of every kernel here: the value computed for one output element depends only on
//! the weight row and the activation row it combines, never on `n`, on the other rows, or on
//! the number of threads. Batched decode and prefill are therefore bit-identical to one
//! token at a time (batch invariance).
//!
//! * [`dequantize`] / [`dequantize_row`]: ggml block layouts, bit-identical to gguf-py.
//! * [`quantize`]: llama.cpp's reference quantisers (`quantize_row_*_ref`), byte-identical
//!   to gguf-py for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0 and to a C build of ggml's code for the K types.
//! * [`matmul`]: quantised weights are multiplied with activations quantised once per call to
//!   8 bits (blocks of 32, or 256 with sums for the K types) using integer dot products; the
//!   exact arithmetic, shared by the scalar definition ([`matmul_scalar`]) and the AVX2 path,
//!   is described in the `kernels` module. Float weights use a fixed 32-lane f32 order.
//! * [`ops`]: f32 (and f16 KV-cache) vector kernels with scalar twins in [`ops::scalar`].
//!
//!   With AVX-512 VNNI, batches of 16 tokens or more of Q4_0, Q8_0 and the K types run as
//!   tiles (16 tokens per vector, weight rows unpacked once per product), with the same bits;
//!   with Intel AMX, batches of 32 or more of Q4_K and Q6_K take their integer sums from tile
//!   multiplications (the `amx` module), with the same bits.
//!
//! ISA paths ([`Isa`]): AMX (AMX-INT8/BF16 tiles for K-quant batches), AVX-512 VNNI (integer
//! dot products of the 32-value block types), AVX2+FMA+F16C, chosen at run time from the CPU's
//! features, and portable scalar code; all give identical bits.

// Kernel code indexes several arrays in lock-step, mirroring the ggml definitions.
#![allow(clippy::needless_range_loop)]

mod act;
#[cfg(target_arch = "x86_64")]
mod aligned;
#[cfg(target_arch = "x86_64")]
mod amx;
mod dtype;
#[cfg(target_arch = "x86_64")]
mod ftile;
mod kernels;
#[cfg(target_arch = "x86_64")]
mod ktile;
mod matmul;
pub mod ops;
#[cfg(target_arch = "x86_64")]
mod q4tile;
mod quants;
mod x8;

pub use dtype::DType;
pub use matmul::{
    dequantize, dequantize_row, matmul, matmul_isa, matmul_scalar, pack_x8, pack_x8_into,
    packable_x8, quantize, x8_fast, Isa,
};

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum TensorError {
    #[error("{dtype} data for {rows}x{cols}: expected {expected} bytes, found {found}")]
    Size {
        dtype: DType,
        rows: usize,
        cols: usize,
        expected: usize,
        found: usize,
    },
    #[error(
        "{dtype} rows must hold a whole number of {block}-element blocks, found {cols} columns"
    )]
    Blocks {
        dtype: DType,
        block: usize,
        cols: usize,
    },
    #[error("{op} is not supported for {dtype}")]
    Unsupported { op: &'static str, dtype: DType },
    #[error("{0}")]
    Shape(String),
    #[error("the {0} kernels cannot run on this CPU")]
    UnsupportedIsa(&'static str),
}

/// How a matrix's bytes are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Row after row, each in its type's stored block layout (as in the files).
    Rows,
    /// Q4_0, Q4_K, Q5_K and Q6_K only: groups of 8 rows, each group's blocks transposed so that 8
    /// rows are multiplied at once in decode ([`pack_x8`]); as many bytes as [`Layout::Rows`].
    X8,
}

/// A borrowed matrix in its stored type. The bytes may be unaligned (they often come
/// straight from a memory-mapped file).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub dtype: DType,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    pub layout: Layout,
}

impl<'a> MatRef<'a> {
    pub fn new(
        dtype: DType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, TensorError> {
        let row_bytes = dtype.row_bytes(cols)?;
        let expected = row_bytes
            .checked_mul(rows)
            .ok_or_else(|| TensorError::Shape(format!("{rows}x{cols} {dtype} overflows")))?;
        if data.len() != expected {
            return Err(TensorError::Size {
                dtype,
                rows,
                cols,
                expected,
                found: data.len(),
            });
        }
        Ok(MatRef {
            dtype,
            rows,
            cols,
            data,
            layout: Layout::Rows,
        })
    }

    /// A Q4_0, Q4_K, Q5_K or Q6_K matrix packed by [`pack_x8`] (rows a multiple of 8).
    pub fn packed_x8(
        dtype: DType,
        rows: usize,
        cols: usize,
        data: &'a [u8],
    ) -> Result<Self, TensorError> {
        if x8::Kind::of(dtype).is_none() || !rows.is_multiple_of(x8::ROWS) {
            return Err(TensorError::Shape(format!(
                "8-row packing takes Q4_0, Q4_K, Q5_K or Q6_K with rows a multiple of 8, \
                 not {rows}x{cols} {dtype}"
            )));
        }
        let m = MatRef::new(dtype, rows, cols, data)?;
        Ok(MatRef {
            layout: Layout::X8,
            ..m
        })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }

    /// The stored bytes of row `r`.
    ///
    /// # Panics
    /// For a packed matrix ([`Layout::X8`]), whose rows are not stored whole: see
    /// [`MatRef::row_to`].
    pub fn row(&self, r: usize) -> &'a [u8] {
        assert!(
            self.layout == Layout::Rows,
            "row {r} of a matrix packed in groups of 8 rows"
        );
        let rb = self.row_bytes();
        &self.data[r * rb..(r + 1) * rb]
    }

    /// Row `r` in its type's stored block layout: the stored bytes, or for a packed matrix
    /// the row rebuilt in `buf`.
    pub fn row_to<'b>(&self, r: usize, buf: &'b mut Vec<u8>) -> &'b [u8]
    where
        'a: 'b,
    {
        match self.layout {
            Layout::Rows => self.row(r),
            Layout::X8 => {
                let kind =
                    x8::Kind::of(self.dtype).expect("packed matrices are Q4_0, Q4_K, Q5_K or Q6_K");
                let rb = self.row_bytes();
                let g = r / x8::ROWS * x8::ROWS;
                buf.resize(rb, 0);
                x8::unpack_row(kind, &self.data[g * rb..(g + x8::ROWS) * rb], r - g, buf);
                buf
            }
        }
    }
}
