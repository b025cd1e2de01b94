//! Matrix products of stored weights with f32 activations, and (de)quantisation entry points.

use crate::{DType, MatRef, TensorError};
use half::{bf16, f16};
use rayon::prelude::*;

/// Rows handed to one task; small enough to balance, large enough to amortise scheduling.
const ROWS_PER_TASK: usize = 16;

/// `out[t * w.rows + r] = Σ_k w[r, k] · x[t * w.cols + k]` for `t < n`.
///
/// `x` holds `n` activation rows of `w.cols` values; `out` receives `n` rows of `w.rows`.
/// Runs on the current rayon pool, splitting the weight rows among its threads.
pub fn matmul(w: &MatRef, x: &[f32], n: usize, out: &mut [f32]) -> Result<(), TensorError> {
    if x.len() != n * w.cols || out.len() != n * w.rows {
        return Err(TensorError::Shape(format!(
            "matmul of {}x{} {} with {n} rows: x has {} values (expected {}), out has {} (expected {})",
            w.rows,
            w.cols,
            w.dtype,
            x.len(),
            n * w.cols,
            out.len(),
            n * w.rows
        )));
    }
    if n == 0 || w.rows == 0 {
        return Ok(());
    }
    if n == 1 {
        out.par_chunks_mut(ROWS_PER_TASK)
            .enumerate()
            .try_for_each(|(i, chunk)| {
                let r0 = i * ROWS_PER_TASK;
                let mut buf = vec![0f32; w.cols];
                for (j, o) in chunk.iter_mut().enumerate() {
                    dequantize_row(w, r0 + j, &mut buf)?;
                    *o = dot_f32(&buf, x);
                }
                Ok(())
            })
    } else {
        let chunks: Vec<Vec<f32>> = (0..w.rows.div_ceil(ROWS_PER_TASK))
            .into_par_iter()
            .map(|i| {
                let r0 = i * ROWS_PER_TASK;
                let r1 = (r0 + ROWS_PER_TASK).min(w.rows);
                let mut buf = vec![0f32; w.cols];
                let mut res = vec![0f32; (r1 - r0) * n];
                for r in r0..r1 {
                    dequantize_row(w, r, &mut buf)?;
                    for t in 0..n {
                        res[(r - r0) * n + t] = dot_f32(&buf, &x[t * w.cols..(t + 1) * w.cols]);
                    }
                }
                Ok(res)
            })
            .collect::<Result<_, TensorError>>()?;
        for (i, res) in chunks.iter().enumerate() {
            let r0 = i * ROWS_PER_TASK;
            let nr = res.len() / n;
            for j in 0..nr {
                for t in 0..n {
                    out[t * w.rows + r0 + j] = res[j * n + t];
                }
            }
        }
        Ok(())
    }
}

/// f32 dot product in a fixed order (8 interleaved partial sums, then a fixed tree).
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    crate::ops::dot(a, b)
}

/// Dequantise row `r` of `w` into `out` (`w.cols` values).
pub fn dequantize_row(w: &MatRef, r: usize, out: &mut [f32]) -> Result<(), TensorError> {
    if r >= w.rows {
        return Err(TensorError::Shape(format!(
            "row {r} of a matrix with {} rows",
            w.rows
        )));
    }
    dequantize(w.dtype, w.row(r), &mut out[..w.cols])
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
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(data.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        _ => {
            return Err(TensorError::Unsupported {
                op: "dequantize",
                dtype,
            })
        }
    }
    Ok(())
}

/// Quantise `src` (a whole number of blocks) into the stored bytes of `dtype`.
pub fn quantize(dtype: DType, src: &[f32]) -> Result<Vec<u8>, TensorError> {
    dtype.row_bytes(src.len())?;
    let mut out = Vec::with_capacity(dtype.row_bytes(src.len())?);
    match dtype {
        DType::F32 => src.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        DType::F16 => src
            .iter()
            .for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        DType::BF16 => src
            .iter()
            .for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        _ => {
            return Err(TensorError::Unsupported {
                op: "quantize",
                dtype,
            })
        }
    }
    Ok(out)
}
