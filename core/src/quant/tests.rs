//! Properties of the quantizers and scalar dot products. Byte-exactness against the
//! independent `gguf` vectors lives in `core/tests/quant_vectors.rs`.

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::dot::*;
use super::*;

fn blocks<T: Pod + Zeroable>(n: usize) -> Vec<T> {
    vec![T::zeroed(); n / 32]
}

fn row() -> impl Strategy<Value = Vec<f32>> {
    (1usize..5).prop_flat_map(|nb| proptest::collection::vec(-100.0f32..100.0, nb * 32))
}

proptest! {
    /// Q4_0: |x - deq(q(x))| ≤ |d|/2 + f16 rounding of d (×8 steps of slack at the ends:
    /// the value -8d maps to q=0 exactly; the largest positive values clamp at q=15, 7d).
    #[test]
    fn q4_0_error_bound(x in row()) {
        let mut q = blocks::<BlockQ4_0>(x.len());
        quantize_row_q4_0(&x, &mut q);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q4_0(&q, &mut y);
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = q[b].d.to_f32().abs();
            // Clamping at 15 loses up to one step on the side opposite to max: bound d.
            let bound = d + amax * 1e-3;
            for (a, c) in xb.iter().zip(yb) {
                prop_assert!((a - c).abs() <= bound, "{a} vs {c}, d={d}");
            }
        }
    }

    /// Q4_1: |x - deq| ≤ d/2 plus f16 rounding of d and m.
    #[test]
    fn q4_1_error_bound(x in row()) {
        let mut q = blocks::<BlockQ4_1>(x.len());
        quantize_row_q4_1(&x, &mut q);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q4_1(&q, &mut y);
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let d = q[b].d.to_f32();
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let bound = d / 2.0 + amax * 2e-3;
            for (a, c) in xb.iter().zip(yb) {
                prop_assert!((a - c).abs() <= bound, "{a} vs {c}, d={d}");
            }
        }
    }

    /// Q8_0 and Q8_1: |x - deq| ≤ d/2 plus f16 rounding of d (127 steps × 2⁻¹¹ relative).
    #[test]
    fn q8_error_bound_and_q8_1_sum(x in row()) {
        let mut q0 = blocks::<BlockQ8_0>(x.len());
        let mut q1 = blocks::<BlockQ8_1>(x.len());
        quantize_row_q8_0(&x, &mut q0);
        quantize_row_q8_1(&x, &mut q1);
        let mut y = vec![0f32; x.len()];
        dequantize_row_q8_0(&q0, &mut y);
        for (b, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let d = q0[b].d.to_f32();
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (a, c) in xb.iter().zip(yb) {
                prop_assert!((a - c).abs() <= d / 2.0 + amax * 1e-3);
            }
            // Q8_1 = Q8_0's d and qs, plus s = f16(d·Σq).
            prop_assert_eq!(q1[b].d, q0[b].d);
            prop_assert_eq!(q1[b].qs, q0[b].qs);
            let sum: i32 = q0[b].qs.iter().map(|&v| v as i32).sum();
            let dd = amax / 127.0;
            prop_assert_eq!(q1[b].s, f16::from_f32(sum as f32 * dd));
        }
    }

    /// Integer dot products equal the f64 dot of the dequantized operands up to the
    /// per-block f32 combination (relative 1e-6 of Σ|terms|).
    #[test]
    fn quant_dots_match_f64(x in row(), seed in any::<u64>()) {
        let mut s = seed | 1;
        let yv: Vec<f32> = (0..x.len()).map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; ((s >> 40) as f32 / 16777216.0) * 20.0 - 10.0 }).collect();
        let n = x.len();
        let (mut w40, mut w41, mut w80) = (blocks::<BlockQ4_0>(n), blocks::<BlockQ4_1>(n), blocks::<BlockQ8_0>(n));
        let (mut a80, mut a81) = (blocks::<BlockQ8_0>(n), blocks::<BlockQ8_1>(n));
        quantize_row_q4_0(&x, &mut w40);
        quantize_row_q4_1(&x, &mut w41);
        quantize_row_q8_0(&x, &mut w80);
        quantize_row_q8_0(&yv, &mut a80);
        quantize_row_q8_1(&yv, &mut a81);
        let deq = |t: DType, b: &[u8]| { let mut o = vec![0f32; n]; dequantize_row(t, b, &mut o).unwrap(); o };
        let ya = deq(DType::Q8_0, bytemuck::cast_slice(&a80));
        let f64dot = |w: &[f32], y: &[f32]| -> (f64, f64) {
            (w.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum(), w.iter().zip(y).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum())
        };
        let cases = [
            (vec_dot_q4_0_q8_0(&w40, &a80), deq(DType::Q4_0, bytemuck::cast_slice(&w40))),
            (vec_dot_q8_0_q8_0(&w80, &a80), deq(DType::Q8_0, bytemuck::cast_slice(&w80))),
        ];
        for (got, w) in cases {
            let (want, mag) = f64dot(&w, &ya);
            prop_assert!((got as f64 - want).abs() <= 1e-5 * mag + 1e-6, "{got} vs {want}");
        }
        // Q4_1·Q8_1 uses s = f16(d·Σq) for the minimum term: its f16 rounding (2⁻¹¹ relative)
        // adds up to |m|·|s|·2⁻¹¹ per block.
        let w = deq(DType::Q4_1, bytemuck::cast_slice(&w41));
        let (want, mag) = f64dot(&w, &ya);
        let slack: f64 = w41.iter().zip(&a81).map(|(b, a)| (b.m.to_f32() as f64 * a.s.to_f32() as f64).abs() * 1e-3).sum();
        let got = vec_dot_q4_1_q8_1(&w41, &a81) as f64;
        prop_assert!((got - want).abs() <= 1e-5 * mag + slack + 1e-6, "{got} vs {want}");
        // Float dots.
        let wf16: Vec<f16> = x.iter().map(|v| f16::from_f32(*v)).collect();
        let wbf: Vec<bf16> = x.iter().map(|v| bf16::from_f32(*v)).collect();
        for (got, w) in [
            (vec_dot_f16_f32(&wf16, &yv), wf16.iter().map(|v| v.to_f32()).collect::<Vec<_>>()),
            (vec_dot_bf16_f32(&wbf, &yv), wbf.iter().map(|v| v.to_f32()).collect()),
            (vec_dot_f32(&x, &yv), x.clone()),
        ] {
            let (want, mag) = f64dot(&w, &yv);
            prop_assert!((got as f64 - want).abs() <= n as f64 * 6e-8 * mag + 1e-6, "{got} vs {want}");
        }
    }
}

#[test]
fn q4_0_tie_first_occurrence_wins_and_zero_block() {
    let mut x = [0f32; 32];
    x[3] = 2.0;
    x[7] = -2.0;
    let mut q = [BlockQ4_0::zeroed()];
    quantize_row_q4_0(&x, &mut q);
    // max = +2 (first), d = -0.25 → x=2 maps to q=0, x=-2 to 16 → clamped 15.
    assert_eq!(q[0].d.to_f32(), -0.25);
    assert_eq!(q[0].qs[3] & 0x0f, 0);
    assert_eq!(q[0].qs[7] & 0x0f, 15);
    let mut z = [BlockQ4_0::zeroed()];
    quantize_row_q4_0(&[0.0; 32], &mut z);
    assert_eq!(z[0].d.to_f32(), 0.0);
    assert!(z[0].qs.iter().all(|&b| b == 0x88));
}
