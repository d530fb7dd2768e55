//! Scalar dot products: the definition every SIMD kernel must reproduce.
//!
//! Names follow ggml (`ggml_vec_dot_q4_0_q8_0` …); mixed float ones say both types
//! (`vec_dot_f16_f32`: f16 weights · f32 activations). Integer parts are exact (i32
//! sums per block); the per-block float combination is `sumi as f32 * (dx * dy)`,
//! accumulated in f32 in block order, exactly as ggml's generic versions do.
//! Float dot products accumulate in f32 in index order.

use half::{bf16, f16};

use super::k::{scale_min_k4, unpack_q4_k, unpack_q5_k, unpack_q6_k};
use super::q5::unpack5;
use super::{
    BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K,
};
use crate::dtype::{QK4_0, QK4_1, QK8_0};

/// Σ x·y for Q4_0 weights and Q8_0 activations (same number of blocks).
pub fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK4_0 / 2 {
            let v0 = (bx.qs[j] & 0x0f) as i32 - 8;
            let v1 = (bx.qs[j] >> 4) as i32 - 8;
            sumi += v0 * by.qs[j] as i32 + v1 * by.qs[j + QK4_0 / 2] as i32;
        }
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

/// Σ x·y for Q4_1 weights and Q8_1 activations: `d_x d_y Σ q_x q_y + m_x s_y` per block.
pub fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK4_1 / 2 {
            let v0 = (bx.qs[j] & 0x0f) as i32;
            let v1 = (bx.qs[j] >> 4) as i32;
            sumi += v0 * by.qs[j] as i32 + v1 * by.qs[j + QK4_1 / 2] as i32;
        }
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

/// Σ x·y for Q8_0 weights and Q8_0 activations.
pub fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..QK8_0 {
            sumi += bx.qs[j] as i32 * by.qs[j] as i32;
        }
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

/// Σ x·y for Q5_0 weights and Q8_0 activations.
pub fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let q = unpack5(bx.qh, &bx.qs);
        let sumi: i32 = q
            .iter()
            .zip(&by.qs)
            .map(|(&a, &b)| (i32::from(a) - 16) * i32::from(b))
            .sum();
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

/// Σ x·y for Q5_1 weights and Q8_1 activations: `d_x d_y Σ q_x q_y + m_x s_y` per block.
pub fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let q = unpack5(bx.qh, &bx.qs);
        let sumi: i32 = q.iter().zip(&by.qs).map(|(&a, &b)| i32::from(a) * i32::from(b)).sum();
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

/// The K-quant dot with 6-bit scales and minimums (Q4_K, Q5_K) over unpacked quants:
/// per super-block `d_y (d_x Σ_s sc_s Σ q_x q_y − dmin_x Σ_s m_s Σ q_y)`, the sums exact
/// in i32 (`Σ q_y` of a sub-block from the two `bsums` it covers).
#[inline]
fn dot_k4(q: &[u8; 256], scales: &[u8; 12], d: f32, dmin: f32, by: &BlockQ8_K) -> f32 {
    let (mut isum, mut msum) = (0i32, 0i32);
    for s in 0..8 {
        let (sc, m) = scale_min_k4(s, scales);
        let r = 32 * s..32 * (s + 1);
        let dot: i32 = q[r.clone()]
            .iter()
            .zip(&by.qs[r])
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        isum += i32::from(sc) * dot;
        msum += i32::from(m) * (i32::from(by.bsums[2 * s]) + i32::from(by.bsums[2 * s + 1]));
    }
    by.d * (d * isum as f32) - by.d * (dmin * msum as f32)
}

/// Σ x·y for Q4_K weights and Q8_K activations.
pub fn vec_dot_q4_k_q8_k(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(bx, by)| dot_k4(&unpack_q4_k(&bx.qs), &bx.scales, bx.d.to_f32(), bx.dmin.to_f32(), by))
        .fold(0.0, |a, b| a + b)
}

/// Σ x·y for Q5_K weights and Q8_K activations.
pub fn vec_dot_q5_k_q8_k(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(bx, by)| dot_k4(&unpack_q5_k(bx), &bx.scales, bx.d.to_f32(), bx.dmin.to_f32(), by))
        .fold(0.0, |a, b| a + b)
}

/// Σ x·y for Q6_K weights and Q8_K activations: per super-block
/// `d_x d_y Σ_s sc_s Σ q_x q_y` over the sixteen 16-element sub-blocks, exact in i32.
pub fn vec_dot_q6_k_q8_k(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let q = unpack_q6_k(bx);
        let mut isum = 0i32;
        for s in 0..16 {
            let r = 16 * s..16 * (s + 1);
            let dot: i32 = q[r.clone()]
                .iter()
                .zip(&by.qs[r])
                .map(|(&a, &b)| i32::from(a) * i32::from(b))
                .sum();
            isum += i32::from(bx.scales[s]) * dot;
        }
        sumf += (bx.d.to_f32() * by.d) * isum as f32;
    }
    sumf
}

/// Σ x·y for f16 weights and f32 activations.
pub fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    x.iter().zip(y).fold(0.0, |s, (a, b)| s + a.to_f32() * b)
}

/// Σ x·y for bf16 weights and f32 activations.
pub fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    x.iter().zip(y).fold(0.0, |s, (a, b)| s + a.to_f32() * b)
}

/// Σ x·y for f32 vectors.
pub fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    x.iter().zip(y).fold(0.0, |s, (a, b)| s + a * b)
}
