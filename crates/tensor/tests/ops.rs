//! ops: SIMD paths equal their scalar twins bit for bit; accuracy against f64.
#![allow(clippy::needless_range_loop)]

use deepseek_tensor::ops::{self, scalar};
use half::f16;

fn rng_vec(seed: &mut u64, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
        })
        .collect()
}

const SIZES: [usize; 9] = [0, 1, 7, 31, 32, 33, 100, 257, 4099];

#[test]
fn twins_bit_exact() {
    if !is_x86_feature_detected_avx2() {
        println!("NOTE: no AVX2 here; the public functions are the scalar twins themselves");
    }
    let mut s = 0x5151_7777_9999_1234u64;
    for &n in &SIZES {
        for scale in [1.0f32, 30.0, 200.0] {
            let a = rng_vec(&mut s, n, scale);
            let b = rng_vec(&mut s, n, 1.0);
            let bh: Vec<f16> = b.iter().map(|v| f16::from_f32(*v)).collect();
            assert_eq!(
                ops::dot(&a, &b).to_bits(),
                scalar::dot(&a, &b).to_bits(),
                "dot n={n}"
            );
            assert_eq!(
                ops::dot_f16(&a, &bh).to_bits(),
                scalar::dot_f16(&a, &bh).to_bits(),
                "dot_f16 n={n}"
            );
            let (mut y1, mut y2) = (b.clone(), b.clone());
            ops::axpy(0.37, &a, &mut y1);
            scalar::axpy(0.37, &a, &mut y2);
            assert_eq!(bits(&y1), bits(&y2), "axpy n={n}");
            let (mut y1, mut y2) = (a.clone(), a.clone());
            ops::axpy_f16(-1.3, &bh, &mut y1);
            scalar::axpy_f16(-1.3, &bh, &mut y2);
            assert_eq!(bits(&y1), bits(&y2), "axpy_f16 n={n}");
            let (mut o1, mut o2) = (vec![0f32; n], vec![0f32; n]);
            ops::rmsnorm(&a, &b, 1e-6, &mut o1);
            scalar::rmsnorm(&a, &b, 1e-6, &mut o2);
            assert_eq!(bits(&o1), bits(&o2), "rmsnorm n={n}");
            let (mut x1, mut x2) = (a.clone(), a.clone());
            ops::softmax(&mut x1);
            scalar::softmax(&mut x2);
            assert_eq!(bits(&x1), bits(&x2), "softmax n={n} scale={scale}");
            let (mut g1, mut g2) = (a.clone(), a.clone());
            ops::silu_mul(&mut g1, &b);
            scalar::silu_mul(&mut g2, &b);
            assert_eq!(bits(&g1), bits(&g2), "silu_mul n={n} scale={scale}");
        }
    }
}

fn is_x86_feature_detected_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn exp_accuracy() {
    let mut worst = 0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let got = scalar::exp(x) as f64;
        let want = (x as f64).exp();
        worst = worst.max(((got - want) / want).abs());
        x += 0.0137;
    }
    assert!(worst < 4e-7, "exp worst relative error {worst}");
    assert_eq!(scalar::exp(0.0), 1.0);
    assert!(scalar::exp(-1000.0) < 1e-37);
    assert!(scalar::exp(1000.0).is_finite());
}

#[test]
fn accuracy_against_f64() {
    let mut s = 42u64;
    let a = rng_vec(&mut s, 4097, 3.0);
    let b = rng_vec(&mut s, 4097, 3.0);
    let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let mag: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (*x as f64 * *y as f64).abs())
        .sum();
    assert!((ops::dot(&a, &b) as f64 - exact).abs() <= 1e-6 * mag);

    let mut sm = a.clone();
    ops::softmax(&mut sm);
    let max = a.iter().fold(f64::MIN, |m, v| m.max(*v as f64));
    let z: f64 = a.iter().map(|v| (*v as f64 - max).exp()).sum();
    for (p, v) in sm.iter().zip(&a) {
        let want = (*v as f64 - max).exp() / z;
        assert!((*p as f64 - want).abs() <= 1e-6 * want + 1e-12);
    }

    let w = rng_vec(&mut s, 4097, 1.0);
    let mut out = vec![0f32; 4097];
    ops::rmsnorm(&a, &w, 1e-5, &mut out);
    let ms: f64 = a.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 4097.0;
    let sc = 1.0 / (ms + 1e-5).sqrt();
    for i in 0..4097 {
        let want = a[i] as f64 * sc * w[i] as f64;
        assert!((out[i] as f64 - want).abs() <= 1e-5 * want.abs() + 1e-7);
    }

    let mut g = a.clone();
    ops::silu_mul(&mut g, &b);
    for i in 0..4097 {
        let z = a[i] as f64;
        let want = z / (1.0 + (-z).exp()) * b[i] as f64;
        assert!(
            (g[i] as f64 - want).abs() <= 1e-5 * want.abs() + 1e-6,
            "silu {i}"
        );
    }
}
