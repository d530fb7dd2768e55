//! NEON dot products for Q5_0 (· Q8_0), Q5_1 (· Q8_1) and the K-quants Q4_K, Q5_K, Q6_K (· Q8_K); the
//! dotprod table uses them too.
//!
//! Weight quants are rebuilt as signed bytes (Q5_0: `q − 16`, Q6_K: `q − 32`; Q5_1,
//! Q4_K and Q5_K quants are ≤ 31) and each 16- or 32-element sub-block's Σ q·y is formed exactly with
//! `smull` + `sadalp` (`dot16_neon`); scales, minimums and the final f32 expression are
//! those of the scalar twins in `crate::quant::dot`, in the same order, so results are
//! bit-identical to them (checked by the proptests in `cpu::tests`).

use core::arch::aarch64::*;

use super::{dot16_neon, ld_s8, ld_u8};
use crate::quant::k::{scale_min_k4, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use crate::quant::q5::{BlockQ5_0, BlockQ5_1};
use crate::quant::{BlockQ8_0, BlockQ8_1};

// Reached only through the NEON-family tables, built after NEON was detected.

pub(super) fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: NEON verified by `kernels()` (the only way to reach this fn).
    unsafe { dot_q5_0(x, y) }
}
pub(super) fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as above.
    unsafe { dot_q5_1(x, y) }
}
pub(super) fn vec_dot_q4_k_q8_k(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    // SAFETY: as above.
    unsafe { dot_q4_k(x, y) }
}
pub(super) fn vec_dot_q5_k_q8_k(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
    // SAFETY: as above.
    unsafe { dot_q5_k(x, y) }
}
pub(super) fn vec_dot_q6_k_q8_k(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    // SAFETY: as above.
    unsafe { dot_q6_k(x, y) }
}

/// Σ a·b over 32 signed byte pairs (two 16-byte halves), exact.
#[inline]
#[target_feature(enable = "neon")]
fn dot32(a0: int8x16_t, a1: int8x16_t, y: &[i8]) -> i32 {
    let acc = dot16_neon(vdupq_n_s32(0), a0, ld_s8(&y[..16]));
    vaddvq_s32(dot16_neon(acc, a1, ld_s8(&y[16..32])))
}

/// The 32 five-bit quants of a Q5_0/Q5_1 block as unsigned bytes (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
fn q5_bytes(qh: [u8; 4], qs: &[u8; 16]) -> (uint8x16_t, uint8x16_t) {
    // Bit j % 8 of byte j / 8 of qh, for lanes j = 0..16 (then 16..32 from bytes 2, 3).
    const SEL_LO: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
    const BITS: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    let sel_lo = ld_u8(&SEL_LO);
    let sel_hi = vaddq_u8(sel_lo, vdupq_n_u8(2));
    let bits = ld_u8(&BITS);
    let (m4, b16) = (vdupq_n_u8(0x0f), vdupq_n_u8(0x10));
    let q = ld_u8(qs);
    let h = vreinterpretq_u8_u32(vdupq_n_u32(u32::from_le_bytes(qh)));
    let h0 = vandq_u8(vtstq_u8(vqtbl1q_u8(h, sel_lo), bits), b16);
    let h1 = vandq_u8(vtstq_u8(vqtbl1q_u8(h, sel_hi), bits), b16);
    (vorrq_u8(vandq_u8(q, m4), h0), vorrq_u8(vshrq_n_u8(q, 4), h1))
}

#[target_feature(enable = "neon")]
fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let o16 = vdupq_n_s8(16);
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let (u0, u1) = q5_bytes(bx.qh, &bx.qs);
        let q0 = vsubq_s8(vreinterpretq_s8_u8(u0), o16);
        let q1 = vsubq_s8(vreinterpretq_s8_u8(u1), o16);
        let sumi = dot32(q0, q1, &by.qs);
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

#[target_feature(enable = "neon")]
fn dot_q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let (u0, u1) = q5_bytes(bx.qh, &bx.qs);
        let sumi = dot32(vreinterpretq_s8_u8(u0), vreinterpretq_s8_u8(u1), &by.qs);
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

/// `Σ_s m_s (Σ y over sub-block s)` from the activation's 16-element sums.
#[inline]
fn k4_msum(scales: &[u8; 12], by: &BlockQ8_K) -> i32 {
    (0..8)
        .map(|s| i32::from(scale_min_k4(s, scales).1) * (i32::from(by.bsums[2 * s]) + i32::from(by.bsums[2 * s + 1])))
        .sum()
}

/// `Σ_s sc_s Σ q·y` over the 8 sub-blocks, `quants(c)` giving sub-blocks `2c` and
/// `2c + 1` (elements `64c..64c+64`) as four 16-byte signed vectors.
#[inline]
#[target_feature(enable = "neon")]
fn k4_isum(scales: &[u8; 12], by: &BlockQ8_K, quants: impl Fn(usize) -> [int8x16_t; 4]) -> i32 {
    let mut isum = 0i32;
    for c in 0..4 {
        let q = quants(c);
        let d0 = dot32(q[0], q[1], &by.qs[64 * c..]);
        let d1 = dot32(q[2], q[3], &by.qs[64 * c + 32..]);
        isum += i32::from(scale_min_k4(2 * c, scales).0) * d0 + i32::from(scale_min_k4(2 * c + 1, scales).0) * d1;
    }
    isum
}

#[target_feature(enable = "neon")]
fn dot_q4_k(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let m4 = vdupq_n_u8(0x0f);
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let isum = k4_isum(&bx.scales, by, |c| {
            let (a, b) = (ld_u8(&bx.qs[32 * c..]), ld_u8(&bx.qs[32 * c + 16..]));
            [
                vreinterpretq_s8_u8(vandq_u8(a, m4)),
                vreinterpretq_s8_u8(vandq_u8(b, m4)),
                vreinterpretq_s8_u8(vshrq_n_u8(a, 4)),
                vreinterpretq_s8_u8(vshrq_n_u8(b, 4)),
            ]
        });
        let msum = k4_msum(&bx.scales, by);
        sumf += by.d * (bx.d.to_f32() * isum as f32) - by.d * (bx.dmin.to_f32() * msum as f32);
    }
    sumf
}

#[target_feature(enable = "neon")]
fn dot_q5_k(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let (m4, b16) = (vdupq_n_u8(0x0f), vdupq_n_u8(0x10));
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let (h0, h1) = (ld_u8(&bx.qh[..]), ld_u8(&bx.qh[16..]));
        // Fifth bit of element 32s + l: bit s of qh[l], moved to 0x10.
        let fifth = |h: uint8x16_t, s: usize| vandq_u8(vtstq_u8(h, vdupq_n_u8(1 << s)), b16);
        let isum = k4_isum(&bx.scales, by, |c| {
            let (a, b) = (ld_u8(&bx.qs[32 * c..]), ld_u8(&bx.qs[32 * c + 16..]));
            let (s0, s1) = (2 * c, 2 * c + 1);
            [
                vreinterpretq_s8_u8(vorrq_u8(vandq_u8(a, m4), fifth(h0, s0))),
                vreinterpretq_s8_u8(vorrq_u8(vandq_u8(b, m4), fifth(h1, s0))),
                vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(a, 4), fifth(h0, s1))),
                vreinterpretq_s8_u8(vorrq_u8(vshrq_n_u8(b, 4), fifth(h1, s1))),
            ]
        });
        let msum = k4_msum(&bx.scales, by);
        sumf += by.d * (bx.d.to_f32() * isum as f32) - by.d * (bx.dmin.to_f32() * msum as f32);
    }
    sumf
}

#[target_feature(enable = "neon")]
fn dot_q6_k(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let (m4, m3, o32) = (vdupq_n_u8(0x0f), vdupq_n_u8(0x03), vdupq_n_s8(32));
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut isum = 0i32;
        for n in 0..2 {
            for half in 0..2 {
                // Lanes l = 16·half .. 16·half + 16 of each 32-element row k.
                let o = 16 * half;
                let l0 = ld_u8(&bx.ql[64 * n + o..]);
                let l1 = ld_u8(&bx.ql[64 * n + 32 + o..]);
                let h = ld_u8(&bx.qh[32 * n + o..]);
                let lows = [vandq_u8(l0, m4), vandq_u8(l1, m4), vshrq_n_u8(l0, 4), vshrq_n_u8(l1, 4)];
                let highs = [
                    vandq_u8(h, m3),
                    vandq_u8(vshrq_n_u8(h, 2), m3),
                    vandq_u8(vshrq_n_u8(h, 4), m3),
                    vshrq_n_u8(h, 6),
                ];
                for k in 0..4 {
                    let q = vsubq_s8(vreinterpretq_s8_u8(vorrq_u8(lows[k], vshlq_n_u8(highs[k], 4))), o32);
                    let e = 128 * n + 32 * k + o; // first element of this 16-element sub-block
                    let d = vaddvq_s32(dot16_neon(vdupq_n_s32(0), q, ld_s8(&by.qs[e..])));
                    isum += i32::from(bx.scales[e / 16]) * d;
                }
            }
        }
        sumf += (bx.d.to_f32() * by.d) * isum as f32;
    }
    sumf
}
