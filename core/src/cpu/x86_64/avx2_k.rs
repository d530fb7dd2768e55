//! AVX2 dot products for Q5_0 (· Q8_0), Q5_1 (· Q8_1) and the K-quants Q4_K, Q5_K, Q6_K (· Q8_K).
//!
//! Each computes exactly the integer sums of its scalar twin in `crate::quant::dot` and
//! combines them with the same f32 expression in the same block order, so results are
//! bit-identical to the twins (the proptests in `cpu::tests` check it within the general
//! reassociation bound). Weight quants are widened to unsigned bytes and multiplied by
//! the signed activation bytes with `maddubs` (no pair sum can saturate: |q| ≤ 63, |y| ≤
//! 128), then summed to i32 with `madd`; offsets (Q5_0's −16, Q6_K's −32) and Q4_K/Q5_K
//! minimums are applied through the activation sums.

use core::arch::x86_64::*;

use super::hsum_epi32;
use crate::quant::k::{scale_min_k4, BlockQ4_K, BlockQ5_K, BlockQ6_K, BlockQ8_K};
use crate::quant::q5::{BlockQ5_0, BlockQ5_1};
use crate::quant::{BlockQ8_0, BlockQ8_1};

// The safe entry points are handed out only by the AVX2 and AVX-512 table constructors,
// which verified AVX2, FMA and F16C on this CPU.

pub(super) fn vec_dot_q5_0_q8_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: AVX2/FMA/F16C verified by the table constructor (the only way here).
    unsafe { vec_dot_q5_0_q8_0_impl(x, y) }
}
pub(super) fn vec_dot_q5_1_q8_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_q5_1_q8_1_impl(x, y) }
}
pub(super) fn vec_dot_q4_k_q8_k(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_q4_k_q8_k_impl(x, y) }
}
pub(super) fn vec_dot_q5_k_q8_k(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_q5_k_q8_k_impl(x, y) }
}
pub(super) fn vec_dot_q6_k_q8_k(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_q6_k_q8_k_impl(x, y) }
}

/// 32 bytes from `b[i..i + 32]` (no alignment needed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_at<T: bytemuck::Pod>(b: &[T], i: usize) -> __m256i {
    let bytes: &[u8] = bytemuck::cast_slice(b);
    let s = &bytes[i * core::mem::size_of::<T>()..][..32];
    // SAFETY: `s` is 32 readable bytes (the slice above is bounds-checked).
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Σ u·y over 32 lanes as 8 i32 (`u` unsigned ≤ 63, `y` signed): pairs in i16, then i32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn dot_u8_i8(u: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(u, y), _mm256_set1_epi16(1))
}

/// The 32 five-bit quants of a Q5_0/Q5_1 block as unsigned bytes in element order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_bytes(qh: [u8; 4], qs: &[u8; 16]) -> __m256i {
    let qs = super::load16(qs);
    let lo = _mm_and_si128(qs, _mm_set1_epi8(0x0f));
    let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), _mm_set1_epi8(0x0f));
    let nib = _mm256_set_m128i(hi, lo);
    // Byte j takes bit j of qh: byte j/8 of qh broadcast to lanes, then a bit test.
    let h = _mm256_set1_epi32(i32::from_le_bytes(qh));
    let sel = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
    );
    let hb = _mm256_shuffle_epi8(h, sel);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit);
    _mm256_or_si256(nib, _mm256_and_si256(set, _mm256_set1_epi8(0x10)))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_q5_0_q8_0_impl(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let ones = _mm256_set1_epi8(1);
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let u = q5_bytes(bx.qh, &bx.qs);
        let yv = load_at(&by.qs[..], 0);
        // Σ (u − 16)·y = Σ u·y − 16 Σ y, exact in i32.
        let sumi = hsum_epi32(dot_u8_i8(u, yv)) - 16 * hsum_epi32(dot_u8_i8(ones, yv));
        sumf += sumi as f32 * (bx.d.to_f32() * by.d.to_f32());
    }
    sumf
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_q5_1_q8_1_impl(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let sumi = hsum_epi32(dot_u8_i8(q5_bytes(bx.qh, &bx.qs), load_at(&by.qs[..], 0)));
        sumf += (bx.d.to_f32() * by.d.to_f32()) * sumi as f32 + bx.m.to_f32() * by.s.to_f32();
    }
    sumf
}

/// `Σ_s sc_s Σ q·y` over the 8 sub-blocks of one Q4_K/Q5_K super-block, where `quants(c)`
/// gives the unsigned quants of elements `64c..64c+32` and `64c+32..64c+64`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn k4_isum(scales: &[u8; 12], by: &BlockQ8_K, quants: impl Fn(usize) -> (__m256i, __m256i)) -> i32 {
    let mut acc = _mm256_setzero_si256();
    for c in 0..4 {
        let (q0, q1) = quants(c);
        let (s0, _) = scale_min_k4(2 * c, scales);
        let (s1, _) = scale_min_k4(2 * c + 1, scales);
        let p0 = _mm256_maddubs_epi16(q0, load_at(&by.qs[..], 64 * c));
        let p1 = _mm256_maddubs_epi16(q1, load_at(&by.qs[..], 64 * c + 32));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p0, _mm256_set1_epi16(i16::from(s0))));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p1, _mm256_set1_epi16(i16::from(s1))));
    }
    hsum_epi32(acc)
}

/// `Σ_s m_s (Σ y over sub-block s)` from the activation's 16-element sums.
#[inline]
fn k4_msum(scales: &[u8; 12], by: &BlockQ8_K) -> i32 {
    (0..8)
        .map(|s| i32::from(scale_min_k4(s, scales).1) * (i32::from(by.bsums[2 * s]) + i32::from(by.bsums[2 * s + 1])))
        .sum()
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_q4_k_q8_k_impl(x: &[BlockQ4_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let m4 = _mm256_set1_epi8(0x0f);
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let isum = k4_isum(&bx.scales, by, |c| {
            let q = load_at(&bx.qs[..], 32 * c);
            (_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16(q, 4), m4))
        });
        let msum = k4_msum(&bx.scales, by);
        sumf += by.d * (bx.d.to_f32() * isum as f32) - by.d * (bx.dmin.to_f32() * msum as f32);
    }
    sumf
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_q5_k_q8_k_impl(x: &[BlockQ5_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let m4 = _mm256_set1_epi8(0x0f);
    let b16 = _mm256_set1_epi8(0x10);
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let qh = load_at(&bx.qh[..], 0);
        // Fifth bit of element 32s + l: bit s of qh[l], moved to 0x10.
        let fifth = |s: usize| {
            let bit = _mm256_set1_epi8((1u8 << s) as i8);
            _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit), b16)
        };
        let isum = k4_isum(&bx.scales, by, |c| {
            let q = load_at(&bx.qs[..], 32 * c);
            (
                _mm256_or_si256(_mm256_and_si256(q, m4), fifth(2 * c)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), fifth(2 * c + 1)),
            )
        });
        let msum = k4_msum(&bx.scales, by);
        sumf += by.d * (bx.d.to_f32() * isum as f32) - by.d * (bx.dmin.to_f32() * msum as f32);
    }
    sumf
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_q6_k_q8_k_impl(x: &[BlockQ6_K], y: &[BlockQ8_K]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x03);
    let mut sumf = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let mut acc = _mm256_setzero_si256();
        for n in 0..2 {
            let l0 = load_at(&bx.ql[..], 64 * n);
            let l1 = load_at(&bx.ql[..], 64 * n + 32);
            let h = load_at(&bx.qh[..], 32 * n);
            let hi = |k: i32| {
                let sh = _mm256_srl_epi16(h, _mm_cvtsi32_si128(2 * k));
                _mm256_slli_epi16(_mm256_and_si256(sh, m2), 4)
            };
            let qk = [
                _mm256_or_si256(_mm256_and_si256(l0, m4), hi(0)),
                _mm256_or_si256(_mm256_and_si256(l1, m4), hi(1)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), hi(2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), hi(3)),
            ];
            for (k, q) in qk.into_iter().enumerate() {
                let s = 8 * n + 2 * k; // sub-blocks s (lanes 0..8) and s + 1 (lanes 8..16)
                let sc = _mm256_set_m128i(
                    _mm_set1_epi16(i16::from(bx.scales[s + 1])),
                    _mm_set1_epi16(i16::from(bx.scales[s])),
                );
                let p = _mm256_maddubs_epi16(q, load_at(&by.qs[..], 128 * n + 32 * k));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, sc));
            }
        }
        // Σ_s sc_s Σ (q − 32)·y = Σ_s sc_s Σ q·y − 32 Σ_s sc_s bsums[s].
        let off: i32 = (0..16).map(|s| i32::from(bx.scales[s]) * i32::from(by.bsums[s])).sum();
        let isum = hsum_epi32(acc) - 32 * off;
        sumf += (bx.d.to_f32() * by.d) * isum as f32;
    }
    sumf
}
