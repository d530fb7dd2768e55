//! K-quants: ggml's 256-element super-block formats (`block_q4_K`, `block_q5_K`,
//! `block_q6_K`, `block_q8_K` in `ggml-common.h`), what `llama-quantize … Q4_K_M` writes.
//!
//! * **Q4_K** (144 bytes, 4.5 bits/weight): f16 `d` and `dmin`, eight 32-element
//!   sub-blocks each with a 6-bit scale and a 6-bit minimum packed into `scales[12]`
//!   ([`scale_min_k4`]), and 4-bit quants: `qs[32c + l]` holds element `64c + l` in its
//!   low nibble and `64c + 32 + l` in its high nibble. Element = `d·sc·q − dmin·m`.
//! * **Q5_K** (176 bytes): as Q4_K plus a fifth bit per element: bit `s` of `qh[l]` for
//!   element `32s + l`.
//! * **Q6_K** (210 bytes, 6.56 bits/weight): sixteen 16-element sub-blocks with signed
//!   8-bit scales and one f16 `d`; per 128-element half `n`, element `128n + 32k + l`
//!   (`k` in 0..4) takes its low 4 bits from `ql[64n + l + 32(k&1)]` (low nibble for
//!   k < 2, high for k ≥ 2) and its top 2 bits from bits `2k..2k+2` of `qh[32n + l]`;
//!   value `q − 32`. Element = `d·sc·(q − 32)`.
//! * **Q8_K** (292 bytes, activations only): f32 `d`, 256 i8 quants and the sums of each
//!   16 of them (`bsums`), which the Q4_K/Q5_K dot products use for the minimums.
//!
//! Dequantization evaluates the float products in the order ggml and the Python `gguf`
//! package do (`(d·sc)·q − dmin·m` with `d·sc` rounded to f32 first), so results are
//! bit-exact with both (`core/tests/quant_vectors.rs`). Quantizing to Q4_K/Q5_K/Q6_K is
//! not implemented here (files come from `llama-quantize`).

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::dtype::QK_K;

/// Bytes of packed 6-bit scales and minimums in Q4_K / Q5_K (ggml `K_SCALE_SIZE`).
pub const K_SCALE_SIZE: usize = 12;

/// Mirrors ggml `block_q4_K`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_K>() == 144);

/// Mirrors ggml `block_q5_K`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ5_K>() == 176);

/// Mirrors ggml `block_q6_K` (the scale `d` comes last).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ6_K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: f16,
}
const _: () = assert!(core::mem::size_of::<BlockQ6_K>() == 210);

/// Mirrors ggml `block_q8_K` (activations for the K-quant dot products).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_K {
    pub d: f32,
    pub qs: [i8; QK_K],
    /// `bsums[i] = Σ qs[16i..16i+16]`.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_K>() == 292);

/// The 6-bit (scale, minimum) of sub-block `j` (0..8) from Q4_K/Q5_K `scales`
/// (ggml `get_scale_min_k4`): sub-blocks 0..4 in the low 6 bits of bytes `j` and
/// `j + 4`; 4..8 in the nibbles of bytes 8..12 with their top bits in bytes 0..8.
#[inline]
pub fn scale_min_k4(j: usize, s: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// The 4-bit quants of a Q4_K (or the low bits of a Q5_K) super-block, element order.
#[inline]
pub fn unpack_q4_k(qs: &[u8; QK_K / 2]) -> [u8; QK_K] {
    let mut q = [0u8; QK_K];
    for c in 0..4 {
        for l in 0..32 {
            let b = qs[32 * c + l];
            q[64 * c + l] = b & 0x0f;
            q[64 * c + 32 + l] = b >> 4;
        }
    }
    q
}

/// The 5-bit quants of a Q5_K super-block, element order.
#[inline]
pub fn unpack_q5_k(b: &BlockQ5_K) -> [u8; QK_K] {
    let mut q = unpack_q4_k(&b.qs);
    for (i, v) in q.iter_mut().enumerate() {
        let (s, l) = (i / 32, i % 32);
        *v |= ((b.qh[l] >> s) & 1) << 4;
    }
    q
}

/// The signed 6-bit quants (−32..=31) of a Q6_K super-block, element order.
#[inline]
pub fn unpack_q6_k(b: &BlockQ6_K) -> [i8; QK_K] {
    let mut q = [0i8; QK_K];
    for n in 0..2 {
        for k in 0..4 {
            for l in 0..32 {
                let lo = b.ql[64 * n + l + 32 * (k & 1)];
                let lo = if k < 2 { lo & 0x0f } else { lo >> 4 };
                let hi = (b.qh[32 * n + l] >> (2 * k)) & 3;
                q[128 * n + 32 * k + l] = (lo | (hi << 4)) as i8 - 32;
            }
        }
    }
    q
}

/// ggml `dequantize_row_q4_K`.
pub fn dequantize_row_q4_k(x: &[BlockQ4_K], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK_K);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        let q = unpack_q4_k(&b.qs);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, &b.scales);
            let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
            for i in 32 * s..32 * (s + 1) {
                yb[i] = d1 * f32::from(q[i]) - m1;
            }
        }
    }
}

/// ggml `dequantize_row_q5_K`.
pub fn dequantize_row_q5_k(x: &[BlockQ5_K], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK_K);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        let q = unpack_q5_k(b);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, &b.scales);
            let (d1, m1) = (d * f32::from(sc), dmin * f32::from(m));
            for i in 32 * s..32 * (s + 1) {
                yb[i] = d1 * f32::from(q[i]) - m1;
            }
        }
    }
}

/// ggml `dequantize_row_q6_K`.
pub fn dequantize_row_q6_k(x: &[BlockQ6_K], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK_K);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        let q = unpack_q6_k(b);
        for (i, o) in yb.iter_mut().enumerate() {
            *o = d * f32::from(b.scales[i / 16]) * f32::from(q[i]);
        }
    }
}

/// Dequantizes a Q8_K row (`d * q`).
pub fn dequantize_row_q8_k(x: &[BlockQ8_K], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK_K);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        for (o, &q) in yb.iter_mut().zip(&b.qs) {
            *o = b.d * f32::from(q);
        }
    }
}

/// Round to nearest, ties to even, for |v| ≤ 2²² (ggml `nearest_int`: the float add of
/// 1.5·2²³ leaves the rounded integer in the low mantissa bits).
#[inline]
fn nearest_int(v: f32) -> i32 {
    let f = v + 12_582_912.0;
    (f.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// ggml `quantize_row_q8_K_ref`: `d = max / −127` of the signed value of largest
/// magnitude, quants rounded to nearest even and capped at 127, and the 16-element sums.
pub fn quantize_row_q8_k(x: &[f32], y: &mut [BlockQ8_K]) {
    debug_assert_eq!(x.len(), y.len() * QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in xb {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *yb = BlockQ8_K::zeroed();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = nearest_int(iscale * v).min(127) as i8;
        }
        for (s, qs) in yb.bsums.iter_mut().zip(yb.qs.chunks_exact(16)) {
            *s = qs.iter().map(|&q| i16::from(q)).sum();
        }
        yb.d = 1.0 / iscale;
    }
}
