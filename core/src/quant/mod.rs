//! GGML block-quantized formats, bit-exact with ggml.
//!
//! Each block struct mirrors its ggml twin (`block_q4_0`, `block_q4_1`, `block_q8_0`,
//! `block_q8_1` in `ggml-common.h`): `#[repr(C)]`, no padding, and a compile-time size
//! assert. In Q4_0/Q4_1 the low nibble of `qs[j]` holds element `j` and the high nibble
//! element `j + 16`.
//!
//! The quantizers reproduce ggml's reference quantizers (`quantize_row_*_ref` in
//! `ggml-quants.c`) byte for byte: all arithmetic in f32, `id = 1/d` (0 when `d == 0`)
//! applied as a multiply, and only the stored scale rounded to f16 (round to nearest
//! even, as `GGML_FP32_TO_FP16`). `oracle/quant/` holds vectors produced by an
//! independent implementation (the Python `gguf` package) that the tests compare with.
//!
//! [`q5`] holds Q5_0/Q5_1 and [`k`] the 256-element K-quants (Q4_K, Q5_K, Q6_K, and Q8_K
//! for activations). [`dot`] holds the scalar dot products that define what every SIMD
//! kernel must compute.

pub mod dot;
pub mod k;
pub mod q5;

pub use k::{BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
pub use q5::{BlockQ5_0, BlockQ5_1};

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

use crate::dtype::{DType, QK4_0, QK4_1, QK8_0, QK8_1};

/// Mirrors ggml `block_q4_0`: 32 weights as 4-bit values with one f16 scale.
/// Element = `d * (q - 8)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == 18);

/// Mirrors ggml `block_q4_1`: 32 weights as 4-bit values with scale and minimum.
/// Element = `d * q + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == 20);

/// Mirrors ggml `block_q8_0`: 32 values as i8 with one f16 scale. Element = `d * q`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == 34);

/// Mirrors ggml `block_q8_1`: as Q8_0 plus `s = d * Σ qs`, which lets a Q4_1 dot product
/// apply the weight block's minimum in one multiply.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK8_1],
}
const _: () = assert!(core::mem::size_of::<BlockQ8_1>() == 36);

const _: () = assert!(core::mem::size_of::<BlockQ4_0>() == DType::Q4_0.block_bytes());
const _: () = assert!(core::mem::size_of::<BlockQ4_1>() == DType::Q4_1.block_bytes());
const _: () = assert!(core::mem::size_of::<BlockQ8_0>() == DType::Q8_0.block_bytes());
const _: () = assert!(core::mem::size_of::<BlockQ8_1>() == DType::Q8_1.block_bytes());

#[inline]
pub(crate) fn inv(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// ggml `quantize_row_q4_0_ref`. `x.len()` must equal `32 * y.len()`.
pub fn quantize_row_q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    debug_assert_eq!(x.len(), y.len() * QK4_0);
    for (xb, yb) in x.chunks_exact(QK4_0).zip(y.iter_mut()) {
        // `max` is the signed value of largest magnitude; the first one wins on ties.
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xb {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = inv(d);
        yb.d = f16::from_f32(d);
        for j in 0..QK4_0 / 2 {
            let x0 = xb[j] * id;
            let x1 = xb[QK4_0 / 2 + j] * id;
            // C's (int8_t) cast truncates toward zero; the operand is in [0.5, 16.5].
            let q0 = ((x0 + 8.5) as i8).min(15) as u8;
            let q1 = ((x1 + 8.5) as i8).min(15) as u8;
            yb.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// ggml `quantize_row_q4_1_ref`. `x.len()` must equal `32 * y.len()`.
pub fn quantize_row_q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    debug_assert_eq!(x.len(), y.len() * QK4_1);
    for (xb, yb) in x.chunks_exact(QK4_1).zip(y.iter_mut()) {
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in xb {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = inv(d);
        yb.d = f16::from_f32(d);
        yb.m = f16::from_f32(min);
        for j in 0..QK4_1 / 2 {
            let x0 = (xb[j] - min) * id;
            let x1 = (xb[QK4_1 / 2 + j] - min) * id;
            let q0 = ((x0 + 0.5) as i8).min(15) as u8;
            let q1 = ((x1 + 0.5) as i8).min(15) as u8;
            yb.qs[j] = q0 | (q1 << 4);
        }
    }
}

#[inline]
fn q8_scale(xb: &[f32]) -> (f32, f32) {
    let amax = xb.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
    let d = amax / 127.0;
    (d, inv(d))
}

/// `roundf` semantics (half away from zero), which is what Rust's `f32::round` does.
/// `f32::round` lives in `std`; this no_std twin gives identical results.
#[inline]
fn roundf(v: f32) -> f32 {
    let t = v as i32 as f32; // truncation toward zero; |v| <= 127.5 here
    let frac = v - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// ggml `quantize_row_q8_0_ref`. `x.len()` must equal `32 * y.len()`.
pub fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), y.len() * QK8_0);
    for (xb, yb) in x.chunks_exact(QK8_0).zip(y.iter_mut()) {
        let (d, id) = q8_scale(xb);
        yb.d = f16::from_f32(d);
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = roundf(v * id) as i8;
        }
    }
}

/// ggml `quantize_row_q8_1_ref`. `x.len()` must equal `32 * y.len()`.
pub fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), y.len() * QK8_1);
    for (xb, yb) in x.chunks_exact(QK8_1).zip(y.iter_mut()) {
        let (d, id) = q8_scale(xb);
        yb.d = f16::from_f32(d);
        let mut sum = 0i32;
        for (q, &v) in yb.qs.iter_mut().zip(xb) {
            *q = roundf(v * id) as i8;
            sum += *q as i32;
        }
        yb.s = f16::from_f32(sum as f32 * d);
    }
}

/// ggml `dequantize_row_q4_0`.
pub fn dequantize_row_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK4_0);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK4_0)) {
        let d = b.d.to_f32();
        for j in 0..QK4_0 / 2 {
            yb[j] = ((b.qs[j] & 0x0f) as i32 - 8) as f32 * d;
            yb[j + QK4_0 / 2] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

/// ggml `dequantize_row_q4_1`.
pub fn dequantize_row_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK4_1);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK4_1)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        for j in 0..QK4_1 / 2 {
            yb[j] = (b.qs[j] & 0x0f) as f32 * d + m;
            yb[j + QK4_1 / 2] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

/// ggml `dequantize_row_q8_0`.
pub fn dequantize_row_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK8_0);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK8_0)) {
        let d = b.d.to_f32();
        for (o, &q) in yb.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Dequantizes a Q8_1 row (ggml has no public one; same as Q8_0, `s` is redundant).
pub fn dequantize_row_q8_1(x: &[BlockQ8_1], y: &mut [f32]) {
    debug_assert_eq!(y.len(), x.len() * QK8_1);
    for (b, yb) in x.iter().zip(y.chunks_exact_mut(QK8_1)) {
        let d = b.d.to_f32();
        for (o, &q) in yb.iter_mut().zip(&b.qs) {
            *o = q as f32 * d;
        }
    }
}

/// Error from the byte-level row helpers: the byte length does not fit the element count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSizeError {
    pub dtype: DType,
    pub elements: usize,
    pub bytes: usize,
}

impl core::fmt::Display for RowSizeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.dtype.row_bytes(self.elements) {
            Some(want) => write!(
                f,
                "a row of {} {} elements takes {want} bytes, got {}",
                self.elements, self.dtype, self.bytes
            ),
            None => write!(
                f,
                "{} elements are not a whole number of {} blocks ({} bytes given)",
                self.elements, self.dtype, self.bytes
            ),
        }
    }
}

fn check(dtype: DType, n: usize, bytes: usize) -> Result<(), RowSizeError> {
    match dtype.row_bytes(n) {
        Some(b) if b == bytes => Ok(()),
        _ => Err(RowSizeError {
            dtype,
            elements: n,
            bytes,
        }),
    }
}

/// Reinterprets raw bytes as a slice of `T`. Fails on size or alignment mismatch.
fn cast<T: Pod>(dtype: DType, n: usize, b: &[u8]) -> Result<&[T], RowSizeError> {
    bytemuck::try_cast_slice(b).map_err(|_| RowSizeError {
        dtype,
        elements: n,
        bytes: b.len(),
    })
}

fn cast_mut<T: Pod>(dtype: DType, n: usize, b: &mut [u8]) -> Result<&mut [T], RowSizeError> {
    let len = b.len();
    bytemuck::try_cast_slice_mut(b).map_err(|_| RowSizeError {
        dtype,
        elements: n,
        bytes: len,
    })
}

/// Dequantizes (or converts) one row stored as `dtype` into f32.
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<(), RowSizeError> {
    let n = dst.len();
    check(dtype, n, src.len())?;
    match dtype {
        DType::F32 => dst.copy_from_slice(cast::<f32>(dtype, n, src)?),
        DType::F16 => {
            for (o, v) in dst.iter_mut().zip(cast::<f16>(dtype, n, src)?) {
                *o = v.to_f32();
            }
        }
        DType::BF16 => {
            for (o, v) in dst.iter_mut().zip(cast::<bf16>(dtype, n, src)?) {
                *o = v.to_f32();
            }
        }
        DType::Q4_0 => dequantize_row_q4_0(cast(dtype, n, src)?, dst),
        DType::Q4_1 => dequantize_row_q4_1(cast(dtype, n, src)?, dst),
        DType::Q8_0 => dequantize_row_q8_0(cast(dtype, n, src)?, dst),
        DType::Q8_1 => dequantize_row_q8_1(cast(dtype, n, src)?, dst),
        DType::Q5_0 => q5::dequantize_row_q5_0(cast(dtype, n, src)?, dst),
        DType::Q5_1 => q5::dequantize_row_q5_1(cast(dtype, n, src)?, dst),
        DType::Q4_K => k::dequantize_row_q4_k(cast(dtype, n, src)?, dst),
        DType::Q5_K => k::dequantize_row_q5_k(cast(dtype, n, src)?, dst),
        DType::Q6_K => k::dequantize_row_q6_k(cast(dtype, n, src)?, dst),
        DType::Q8_K => k::dequantize_row_q8_k(cast(dtype, n, src)?, dst),
    }
    Ok(())
}

/// Quantizes (or converts) one f32 row into `dtype` with ggml's reference quantizers
/// (for the K-quants the importance-free ones `llama-quantize` uses).
pub fn quantize_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<(), RowSizeError> {
    let n = src.len();
    check(dtype, n, dst.len())?;
    match dtype {
        DType::F32 => cast_mut::<f32>(dtype, n, dst)?.copy_from_slice(src),
        DType::F16 => {
            for (o, &v) in cast_mut::<f16>(dtype, n, dst)?.iter_mut().zip(src) {
                *o = f16::from_f32(v);
            }
        }
        DType::BF16 => {
            for (o, &v) in cast_mut::<bf16>(dtype, n, dst)?.iter_mut().zip(src) {
                *o = bf16::from_f32(v);
            }
        }
        DType::Q4_0 => quantize_row_q4_0(src, cast_mut(dtype, n, dst)?),
        DType::Q4_1 => quantize_row_q4_1(src, cast_mut(dtype, n, dst)?),
        DType::Q8_0 => quantize_row_q8_0(src, cast_mut(dtype, n, dst)?),
        DType::Q8_1 => quantize_row_q8_1(src, cast_mut(dtype, n, dst)?),
        DType::Q5_0 => q5::quantize_row_q5_0(src, cast_mut(dtype, n, dst)?),
        DType::Q5_1 => q5::quantize_row_q5_1(src, cast_mut(dtype, n, dst)?),
        DType::Q8_K => k::quantize_row_q8_k(src, cast_mut(dtype, n, dst)?),
        DType::Q4_K => k::quantize_row_q4_k(src, cast_mut(dtype, n, dst)?),
        DType::Q5_K => k::quantize_row_q5_k(src, cast_mut(dtype, n, dst)?),
        DType::Q6_K => k::quantize_row_q6_k(src, cast_mut(dtype, n, dst)?),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
