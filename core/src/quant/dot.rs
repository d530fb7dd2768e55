//! Scalar dot products: the definition every SIMD kernel must reproduce.
//!
//! Names follow ggml (`ggml_vec_dot_q4_0_q8_0` …); mixed float ones say both types
//! (`vec_dot_f16_f32`: f16 weights · f32 activations). Integer parts are exact (i32
//! sums per block); the per-block float combination is `sumi as f32 * (dx * dy)`,
//! accumulated in f32 in block order, exactly as ggml's generic versions do.
//! Float dot products accumulate in f32 in index order.

use half::{bf16, f16};

use super::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
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
