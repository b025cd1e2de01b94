//! (De)quantisation checked against reference data made by gguf-py
//! (`scripts/gen-quant-refs.py`; see `tests/data/manifest.json`).
#![allow(clippy::needless_range_loop)]

use deepseek_tensor::{dequantize, quantize, DType};
use std::path::PathBuf;

const TYPES: [DType; 8] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
];

fn data(name: &str) -> Option<Vec<u8>> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read(p).ok()
}

fn f32s(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// gguf-py dequantises in f32 with the same operations as ggml, so we require bit equality.
#[test]
fn dequantize_matches_gguf_py_bit_exact() {
    for t in TYPES {
        let raw = data(&format!("deq_{t}.bin")).unwrap();
        let want = f32s(&data(&format!("deq_{t}.f32")).unwrap());
        let mut got = vec![0f32; want.len()];
        dequantize(t, &raw, &mut got).unwrap();
        let bad: Vec<_> = (0..want.len())
            .filter(|&i| got[i].to_bits() != want[i].to_bits())
            .collect();
        assert!(
            bad.is_empty(),
            "{t}: {} of {} values differ, first at {}: got {} want {}",
            bad.len(),
            want.len(),
            bad[0],
            got[bad[0]],
            want[bad[0]]
        );
    }
}

/// gguf-py implements ggml's reference quantisers for the 32-value types: byte equality.
#[test]
fn quantize_matches_gguf_py_bytes() {
    let mut checked = 0;
    for t in TYPES {
        let Some(want) = data(&format!("q_{t}.bin")) else {
            continue;
        };
        let x = f32s(&data(&format!("q_{t}.f32")).unwrap());
        let got = quantize(t, &x).unwrap();
        assert_eq!(got.len(), want.len(), "{t}");
        let bb = t.block_bytes();
        for (b, (g, w)) in got.chunks(bb).zip(want.chunks(bb)).enumerate() {
            assert_eq!(g, w, "{t}: block {b} differs");
        }
        checked += 1;
    }
    assert_eq!(
        checked, 5,
        "expected reference bytes for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0"
    );
}

/// K-quant quantisers (no gguf-py reference): layout round trip through the verified
/// dequantiser, with the error bounded relative to each block's spread.
#[test]
fn k_quants_round_trip() {
    for (t, tol) in [
        (DType::Q4_K, 0.12f32),
        (DType::Q5_K, 0.06),
        (DType::Q6_K, 0.03),
    ] {
        let x = f32s(&data(&format!("q_{t}.f32")).unwrap());
        let q = quantize(t, &x).unwrap();
        assert_eq!(q.len(), t.row_bytes(x.len()).unwrap());
        let mut y = vec![0f32; x.len()];
        dequantize(t, &q, &mut y).unwrap();
        for (b, (xb, yb)) in x.chunks(256).zip(y.chunks(256)).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let rms_err = (xb
                .iter()
                .zip(yb)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                / 256.0)
                .sqrt();
            assert!(
                rms_err <= tol * amax + 1e-30,
                "{t} block {b}: rms error {rms_err} vs amax {amax}"
            );
            if amax == 0.0 {
                assert!(
                    yb.iter().all(|v| *v == 0.0),
                    "{t} block {b}: zero block not zero"
                );
            }
        }
        // Quantising the dequantised values again must be stable up to tiny changes.
        let q2 = quantize(t, &y).unwrap();
        let mut y2 = vec![0f32; x.len()];
        dequantize(t, &q2, &mut y2).unwrap();
        let amax = y.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = y
            .iter()
            .zip(&y2)
            .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(d <= 0.2 * amax, "{t}: requantisation moved values by {d}");
    }
}

#[test]
fn bad_sizes_are_errors() {
    for t in DType::ALL {
        let bs = t.block_size();
        if bs > 1 {
            assert!(quantize(t, &vec![0.0; bs + 1]).is_err());
            let mut out = vec![0f32; bs];
            assert!(dequantize(t, &vec![0u8; t.block_bytes() - 1], &mut out).is_err());
        }
    }
}

/// Optional cross-check of the K-quant quantisers against a C build of ggml's
/// `quantize_row_q{4,5,6}_K_ref` (not shipped): set `KREF_DIR` to a folder holding
/// `c_<T>.bin` made from `tests/data/q_<T>.f32`, and run with `--ignored`.
#[test]
#[ignore]
fn k_quants_match_c_reference_when_available() {
    let Ok(dir) = std::env::var("KREF_DIR") else {
        println!("SKIPPED: KREF_DIR not set");
        return;
    };
    for t in [DType::Q4_K, DType::Q5_K, DType::Q6_K] {
        let want = std::fs::read(format!("{dir}/c_{t}.bin")).unwrap();
        let x = f32s(&data(&format!("q_{t}.f32")).unwrap());
        let got = quantize(t, &x).unwrap();
        let bb = t.block_bytes();
        let bad: Vec<usize> = (0..want.len() / bb)
            .filter(|&b| got[b * bb..(b + 1) * bb] != want[b * bb..(b + 1) * bb])
            .collect();
        assert!(
            bad.is_empty(),
            "{t}: blocks {bad:?} differ from the C reference"
        );
        println!(
            "{t}: {} blocks identical to the C reference",
            want.len() / bb
        );
    }
}
