//! Q5_0 and Q5_1: ggml's 5-bit block formats (`block_q5_0`, `block_q5_1` in
//! `ggml-common.h`). As Q4_0/Q4_1, 32 elements a block, the low 4 bits of element `j` in
//! the low nibble of `qs[j]` and of element `j + 16` in its high nibble; the fifth bits
//! are the 32 bits of `qh` (little-endian), bit `j` for element `j`.
//!
//! The quantizers follow `quantize_row_q5_0_ref` / `quantize_row_q5_1_ref`; the results
//! are compared byte for byte with the Python `gguf` package (`core/tests/quant_vectors.rs`).

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::inv;
use crate::dtype::{QK5_0, QK5_1};

/// Mirrors ggml `block_q5_0`. Element = `d * (q - 16)`, `q` in 0..=31.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    /// Fifth bits, element `j` at bit `j` of the little-endian u32.
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_0>() == 22);

/// Mirrors ggml `block_q5_1`. Element = `d * q + m`, `q` in 0..=31.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_1>() == 24);

/// The 5-bit values of a block: `q[j]` for `j` in 0..32.
#[inline]
pub fn unpack5(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let h = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0x0f) | ((((h >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((h >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Packs 32 five-bit values (the inverse of [`unpack5`]).
#[inline]
fn pack5(q: &[u8; 32]) -> ([u8; 4], [u8; 16]) {
    let mut h = 0u32;
    let mut qs = [0u8; 16];
    for j in 0..16 {
        qs[j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
        h |= u32::from(q[j] >> 4) << j;
        h |= u32::from(q[j + 16] >> 4) << (j + 16);
    }
    (h.to_le_bytes(), qs)
}

/// ggml `quantize_row_q5_0_ref`. `x.len()` must equal `32 * y.len()`.
pub fn quantize_row_q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    debug_assert_eq!(x.len(), y.len() * QK5_0);
    for (xb, yb) in x.chunks_exact(QK5_0).zip(y.iter_mut()) {
        // The signed value of largest magnitude; the first one wins on ties.
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -16.0;
        let id = inv(d);
        let mut q = [0u8; 32];
        for (qj, &v) in q.iter_mut().zip(xb) {
            // C's (int8_t) cast truncates toward zero; the operand is in [0.5, 32.5].
            *qj = ((v * id + 16.5) as i8).min(31) as u8;
        }
        let (qh, qs) = pack5(&q);
        *yb = BlockQ5_0 {
            d: f16::from_f32(d),
            qh,
            qs,
        };
    }
}

/// ggml `quantize_row_q5_1_ref`. `x.len()` must equal `32 * y.len()`.
pub fn quantize_row_q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    debug_assert_eq!(x.len(), y.len() * QK5_1);
    for (xb, yb) in x.chunks_exact(QK5_1).zip(y.iter_mut()) {
        let (mut min, mut max) = (f32::MAX, -f32::MAX);
        for &v in xb {
            min = if v < min { v } else { min };
            max = if v > max { v } else { max };
        }
        let d = (max - min) / 31.0;
        let id = inv(d);
        let mut q = [0u8; 32];
        for (qj, &v) in q.iter_mut().zip(xb) {
            // (uint8_t)(x + 0.5f): truncation; the operand is in [0.5, 31.5] up to
            // rounding, and capped at 31 as the gguf package does.
            *qj = (((v - min) * id + 0.5) as u8).min(31);
        }
        let (qh, qs) = pack5(&q);
        *yb = BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qh,
            qs,
        };
    }
}

/// ggml `dequantize_row_q5_0`.
pub fn dequantize_row_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK5_0);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK5_0)) {
        let d = b.d.to_f32();
        for (o, &q) in yb.iter_mut().zip(&unpack5(b.qh, &b.qs)) {
            *o = (i32::from(q) - 16) as f32 * d;
        }
    }
}

/// ggml `dequantize_row_q5_1`.
pub fn dequantize_row_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK5_1);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK5_1)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for (o, &q) in yb.iter_mut().zip(&unpack5(b.qh, &b.qs)) {
            *o = f32::from(q) * d + m;
        }
    }
}
