//! AVX2 + FMA + F16C kernels (`Isa::Avx2`). One 32-element block per 256-bit vector;
//! the dot products keep two independent accumulators to hide FMA latency.

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::{
    hmax_ps, hsum_ps, load16, load16_i8, load32, load_ps8, load_u16x8, q8_block, scale_grid, scale_prod, scales4,
    store32,
};
use crate::cpu::kernels::{AttnGroup, F16Act, Isa, Kernels, Rows, RowsMut};
use crate::cpu::scalar::KvScalar;
use crate::quant::{self, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// The AVX2 table, or `None` when the CPU lacks AVX2, FMA or F16C.
pub(crate) fn kernels() -> Option<Kernels> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")) {
        return None;
    }
    Some(Kernels {
        isa: Isa::Avx2,
        quantize_row_q8_0,
        quantize_row_q8_1,
        vec_dot_q4_0_q8_0,
        vec_dot_q4_1_q8_1,
        vec_dot_q8_0_q8_0,
        quantize_row_q8_k: crate::quant::k::quantize_row_q8_k,
        vec_dot_q5_0_q8_0: super::avx2_k::vec_dot_q5_0_q8_0,
        vec_dot_q5_1_q8_1: super::avx2_k::vec_dot_q5_1_q8_1,
        vec_dot_q4_k_q8_k: super::avx2_k::vec_dot_q4_k_q8_k,
        vec_dot_q5_k_q8_k: super::avx2_k::vec_dot_q5_k_q8_k,
        vec_dot_q6_k_q8_k: super::avx2_k::vec_dot_q6_k_q8_k,
        vec_dot_f16_f32,
        vec_dot_bf16_f32,
        vec_dot_f32,
        attn_scores,
        attn_values,
        attn_scores_f16,
        attn_values_f16,
        attn_scores_q8_0,
        attn_values_q8_0,
        attn_group_f32: Some(ATTN_GROUP_F32),
        attn_group_f16: Some(ATTN_GROUP_F16),
        softmax_f32,
        swiglu_f32,
        gemv_q4_0_q8_0,
        gemv_q4_1_q8_1,
        gemv_q8_0_q8_0,
        gemm_q4_0_q8_0,
        gemm_f16_f32: Some(gemm_f16_f32),
        gemm_bf16_f32: Some(gemm_bf16_f32),
        gemm_bf16_bf16: None,
        vec_dot_bf16_bf16: None,
        f16_act: Some(F16_ACT),
        gemm_q4_0x8: super::repack::gemm_q4_0x8_avx2,
        gemm_q4_1x8: super::repack::gemm_q4_1x8_avx2,
        gemm_q8_0x8: super::repack::gemm_q8_0x8_avx2,
        gemm_q5_0x8: super::repack::gemm_q5_0x8_avx2,
        gemm_q5_1x8: super::repack::gemm_q5_1x8_avx2,
        gemm_q4_kx8: super::repack::gemm_q4_kx8_avx2,
        gemm_q5_kx8: super::repack::gemm_q5_kx8_avx2,
        gemm_q4_kx8_t16: None,
        gemm_q5_kx8_t16: None,
        gemm_q6_kx8_t16: None,
        gemm_q6_kx8: super::repack::gemm_q6_kx8_avx2,
        x8_simd: true,
        x8_kq_simd: true,
    })
}

// The safe entry points below are reachable only through the table returned by
// `kernels()`, which verified AVX2, FMA and F16C on this CPU.

fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    // SAFETY: AVX2/FMA/F16C verified by `kernels()` (the only way to reach this fn).
    unsafe { quantize_row_q8_0_impl(x, y) }
}
fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    // SAFETY: as above.
    unsafe { quantize_row_q8_1_impl(x, y) }
}
fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_q4_0_q8_0_impl(x, y) }
}
fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_q4_1_q8_1_impl(x, y) }
}
pub(super) fn vec_dot_q8_0_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as above (both constructors that hand this fn out check AVX2/FMA/F16C).
    unsafe { vec_dot_q8_0_q8_0_impl(x, y) }
}
pub(super) fn gemv_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0], y: &mut [f32]) {
    // SAFETY: as above (both constructors that hand this fn out check AVX2/FMA/F16C).
    unsafe { gemv_q4_0_q8_0_impl(w, x, y) }
}
pub(super) fn gemv_q4_1_q8_1(w: &[BlockQ4_1], x: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: as above (both constructors that hand this fn out check AVX2/FMA/F16C).
    unsafe { gemv_q4_1_q8_1_impl(w, x, y) }
}
pub(super) fn gemv_q8_0_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0], y: &mut [f32]) {
    // SAFETY: as above (both constructors that hand this fn out check AVX2/FMA/F16C).
    unsafe { gemv_q8_0_q8_0_impl(w, x, y) }
}
pub(super) fn gemm_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, y: &mut [f32]) {
    // SAFETY: as above (both constructors that hand this fn out check AVX2/FMA/F16C).
    unsafe { gemm_q4_0_q8_0_impl(w, x, nb, y) }
}
fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_f16_f32_impl(x, y) }
}
pub(super) fn gemm_f16_f32(w: &[f16], x: &[f32], n: usize, y: &mut [f32]) {
    // SAFETY: as above (both constructors that hand this fn out check AVX2/FMA/F16C).
    unsafe { gemm_half_impl(w, x, n, y) }
}
pub(super) fn gemm_bf16_f32(w: &[bf16], x: &[f32], n: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_half_impl(w, x, n, y) }
}
pub(super) fn gemm_bf16_f32_vl(w: &[bf16], x: &[f32], n: usize, y: &mut [f32]) {
    // SAFETY: only handed out by `avx512::kernels()` after it found AVX-512 F and VL
    // besides AVX2, FMA and F16C.
    unsafe { gemm_half_vl_impl(w, x, n, y) }
}
/// F16 decode on f16-rounded activations (`Kernels::f16_act`); the AVX-512 table shares
/// the rounding.
pub(super) const F16_ACT: F16Act = F16Act {
    round: round_row_f16,
    dot: vec_dot_f16_f16,
};
pub(super) fn round_row_f16(x: &[f32], y: &mut [f16]) -> bool {
    // SAFETY: only handed out by tables built after AVX2, FMA and F16C were found.
    unsafe { round_row_f16_impl(x, y) }
}
fn vec_dot_f16_f16(x: &[f16], y: &[f16]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_f16_f16_impl(x, y) }
}
fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_bf16_f32_impl(x, y) }
}
fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_f32_impl(x, y) }
}
pub(super) fn attn_scores(q: &[f32], k: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: as above (both constructors that hand this fn out check AVX2/FMA/F16C).
    unsafe { attn_scores_impl(q, k, stride, scale, out) }
}
pub(super) fn attn_values(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_values_impl(w, v, stride, out) }
}
pub(super) fn attn_scores_f16(q: &[f32], k: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_scores_impl(q, k, stride, scale, out) }
}
pub(super) fn attn_values_f16(w: &[f32], v: &[f16], stride: usize, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_values_impl(w, v, stride, out) }
}
fn attn_scores_group(q: &[f32], g: usize, k: &[f32], stride: usize, scale: f32, out: RowsMut<'_>) {
    // SAFETY: as above.
    unsafe { attn_scores_group_impl::<_, false>(q, g, k, stride, scale, out.data, out.n, out.ld) }
}
fn attn_values_group(w: Rows<'_>, g: usize, v: &[f32], stride: usize, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_values_group_impl::<_, false>(w.data, g, w.n, w.ld, v, stride, out) }
}
fn attn_scores_group_f16(q: &[f32], g: usize, k: &[f16], stride: usize, scale: f32, out: RowsMut<'_>) {
    // SAFETY: as above.
    unsafe { attn_scores_group_impl::<_, false>(q, g, k, stride, scale, out.data, out.n, out.ld) }
}
fn attn_values_group_f16(w: Rows<'_>, g: usize, v: &[f16], stride: usize, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_values_group_impl::<_, false>(w.data, g, w.n, w.ld, v, stride, out) }
}
fn attn_scores_group_vl32(q: &[f32], g: usize, k: &[f32], stride: usize, scale: f32, out: RowsMut<'_>) {
    // SAFETY: handed out only by the AVX-512 table when the CPU has AVX-512VL.
    unsafe { attn_scores_group_vl(q, g, k, stride, scale, out.data, out.n, out.ld) }
}
fn attn_values_group_vl32(w: Rows<'_>, g: usize, v: &[f32], stride: usize, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_values_group_vl(w.data, g, w.n, w.ld, v, stride, out) }
}
fn attn_scores_group_vl16(q: &[f32], g: usize, k: &[f16], stride: usize, scale: f32, out: RowsMut<'_>) {
    // SAFETY: as above.
    unsafe { attn_scores_group_vl(q, g, k, stride, scale, out.data, out.n, out.ld) }
}
fn attn_values_group_vl16(w: Rows<'_>, g: usize, v: &[f16], stride: usize, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_values_group_vl(w.data, g, w.n, w.ld, v, stride, out) }
}
/// The grouped attention entries of the AVX-512 table on CPUs with AVX-512VL.
pub(super) const ATTN_GROUP_F32_VL: AttnGroup<f32> = AttnGroup {
    scores: attn_scores_group_vl32,
    values: attn_values_group_vl32,
};
pub(super) const ATTN_GROUP_F16_VL: AttnGroup<f16> = AttnGroup {
    scores: attn_scores_group_vl16,
    values: attn_values_group_vl16,
};
/// The grouped attention entries of the AVX2 and AVX-512 tables.
pub(super) const ATTN_GROUP_F32: AttnGroup<f32> = AttnGroup {
    scores: attn_scores_group,
    values: attn_values_group,
};
pub(super) const ATTN_GROUP_F16: AttnGroup<f16> = AttnGroup {
    scores: attn_scores_group_f16,
    values: attn_values_group_f16,
};
pub(super) fn attn_scores_q8_0(q: &[f32], k: &[BlockQ8_0], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_scores_q8_0_impl(q, k, stride, scale, out) }
}
pub(super) fn attn_values_q8_0(w: &[f32], v: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_values_q8_0_impl(w, v, stride, out) }
}
pub(super) fn softmax_f32(x: &mut [f32]) -> (f32, f32) {
    // SAFETY: as above (both constructors that hand this fn out check AVX2/FMA/F16C).
    unsafe { softmax_f32_impl(x) }
}
pub(super) fn swiglu_f32(g: &[f32], u: &[f32], out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { swiglu_f32_impl(g, u, out) }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_row_q8_0_impl(x: &[f32], y: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), y.len() * 32);
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        match q8_block(xb) {
            Some((d, q, _)) => {
                yb.d = f16::from_f32(d);
                store32(&mut yb.qs, q);
            }
            None => quant::quantize_row_q8_0(xb, core::slice::from_mut(yb)),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn quantize_row_q8_1_impl(x: &[f32], y: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), y.len() * 32);
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        match q8_block(xb) {
            Some((d, q, sum)) => {
                yb.d = f16::from_f32(d);
                yb.s = f16::from_f32(sum as f32 * d);
                store32(&mut yb.qs, q);
            }
            None => quant::quantize_row_q8_1(xb, core::slice::from_mut(yb)),
        }
    }
}

/// The 32 nibbles of a Q4 block as unsigned bytes in element order (low nibbles are
/// elements 0..16, high nibbles 16..32).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn nibbles(qs: &[u8; 16]) -> __m256i {
    let q = load16(qs);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(q, m4);
    let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
    _mm256_set_m128i(hi, lo)
}

/// Σ (x − 8)·y over one block, as 8 i32 lanes. `maddubs` of unsigned nibbles (≤ 15) and
/// signed bytes cannot saturate (|pair| ≤ 2·15·128); the same holds for 8·y, and their
/// difference (|pair| ≤ 2·8·128) fits i16, so every step is exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn sum_q4_0(xu: __m256i, y: __m256i) -> __m256i {
    let p = _mm256_sub_epi16(
        _mm256_maddubs_epi16(xu, y),
        _mm256_maddubs_epi16(_mm256_set1_epi8(8), y),
    );
    _mm256_madd_epi16(p, _mm256_set1_epi16(1))
}

/// Σ x·y over one block (x unsigned nibbles), as 8 i32 lanes; exact as above.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn sum_q4_1(xu: __m256i, y: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(xu, y), _mm256_set1_epi16(1))
}

/// Σ x·y over one block of two signed-byte vectors, widened to i16 first so that every
/// byte value (−128 included) is exact.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sum_q8(x: &[i8; 32], y: &[i8; 32]) -> __m256i {
    let xl = _mm256_cvtepi8_epi16(load16_i8(&x[..16]));
    let xh = _mm256_cvtepi8_epi16(load16_i8(&x[16..]));
    let yl = _mm256_cvtepi8_epi16(load16_i8(&y[..16]));
    let yh = _mm256_cvtepi8_epi16(load16_i8(&y[16..]));
    _mm256_add_epi32(_mm256_madd_epi16(xl, yl), _mm256_madd_epi16(xh, yh))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_q4_0_q8_0_impl(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.iter().zip(y) {
        let s = sum_q4_0(nibbles(&bx.qs), load32(&by.qs));
        let d = _mm256_set1_ps(scale_prod(bx.d, by.d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc);
    }
    hsum_ps(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_q4_1_q8_1_impl(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut acc = _mm256_setzero_ps();
    let mut summs = 0.0f32;
    for (bx, by) in x.iter().zip(y) {
        let s = sum_q4_1(nibbles(&bx.qs), load32(&by.qs));
        let d = _mm256_set1_ps(scale_prod(bx.d, by.d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc);
        summs += scale_prod(bx.m, by.s);
    }
    hsum_ps(acc) + summs
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_q8_0_q8_0_impl(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let mut acc = _mm256_setzero_ps();
    for (bx, by) in x.iter().zip(y) {
        let s = sum_q8(&bx.qs, &by.qs);
        let d = _mm256_set1_ps(scale_prod(bx.d, by.d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), d, acc);
    }
    hsum_ps(acc)
}

// Four weight rows per step against one activation row: the activation block is loaded
// once, its scale converted once, and the four rows' scales with one F16C instruction.
// Per row the integer block sum and the f32 scale product are exactly those of the
// single-row kernels; only the f32 accumulation order differs from the scalar twin.

/// Broadcasts lane `r` of `s` to all 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn lane(s: __m128, r: i32) -> __m256 {
    _mm256_permutevar8x32_ps(_mm256_castps128_ps256(s), _mm256_set1_epi32(r))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn gemv_q4_0_q8_0_impl(w: &[BlockQ4_0], x: &[BlockQ8_0], y: &mut [f32]) {
    let nb = x.len();
    let full = y.len() / 4 * 4;
    let (y4, tail) = y.split_at_mut(full);
    for (i, yo) in y4.chunks_exact_mut(4).enumerate() {
        let wr = crate::cpu::rows4(w, 4 * i, nb);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (b, xb) in x.iter().enumerate() {
            let yv = load32(&xb.qs);
            let y8 = _mm256_maddubs_epi16(_mm256_set1_epi8(8), yv);
            let d = scales4([wr[0][b].d, wr[1][b].d, wr[2][b].d, wr[3][b].d], xb.d);
            for r in 0..4 {
                // (x − 8)·y pairs: see `sum_q4_0` for why no step saturates.
                let p = _mm256_sub_epi16(_mm256_maddubs_epi16(nibbles(&wr[r][b].qs), yv), y8);
                let s = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), lane(d, r as i32), acc[r]);
            }
        }
        for r in 0..4 {
            yo[r] = hsum_ps(acc[r]);
        }
    }
    for (r, yr) in tail.iter_mut().enumerate() {
        *yr = vec_dot_q4_0_q8_0_impl(&w[(full + r) * nb..(full + r + 1) * nb], x);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn gemv_q4_1_q8_1_impl(w: &[BlockQ4_1], x: &[BlockQ8_1], y: &mut [f32]) {
    let nb = x.len();
    let full = y.len() / 4 * 4;
    let (y4, tail) = y.split_at_mut(full);
    for (i, yo) in y4.chunks_exact_mut(4).enumerate() {
        let wr = crate::cpu::rows4(w, 4 * i, nb);
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut ms = _mm_setzero_ps(); // Σ m·s, lane r = row r
        for (b, xb) in x.iter().enumerate() {
            let yv = load32(&xb.qs);
            let d = scales4([wr[0][b].d, wr[1][b].d, wr[2][b].d, wr[3][b].d], xb.d);
            ms = _mm_add_ps(ms, scales4([wr[0][b].m, wr[1][b].m, wr[2][b].m, wr[3][b].m], xb.s));
            for r in 0..4 {
                let s = sum_q4_1(nibbles(&wr[r][b].qs), yv);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), lane(d, r as i32), acc[r]);
            }
        }
        let mut m = [0f32; 4];
        // SAFETY: `m` is 4 writable f32; unaligned store.
        unsafe { _mm_storeu_ps(m.as_mut_ptr(), ms) };
        for r in 0..4 {
            yo[r] = hsum_ps(acc[r]) + m[r];
        }
    }
    for (r, yr) in tail.iter_mut().enumerate() {
        *yr = vec_dot_q4_1_q8_1_impl(&w[(full + r) * nb..(full + r + 1) * nb], x);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn gemv_q8_0_q8_0_impl(w: &[BlockQ8_0], x: &[BlockQ8_0], y: &mut [f32]) {
    let nb = x.len();
    let full = y.len() / 4 * 4;
    let (y4, tail) = y.split_at_mut(full);
    for (i, yo) in y4.chunks_exact_mut(4).enumerate() {
        let wr = crate::cpu::rows4(w, 4 * i, nb);
        let mut acc = [_mm256_setzero_ps(); 4];
        for (b, xb) in x.iter().enumerate() {
            // The activation block widened to i16 once for all four rows.
            let yl = _mm256_cvtepi8_epi16(load16_i8(&xb.qs[..16]));
            let yh = _mm256_cvtepi8_epi16(load16_i8(&xb.qs[16..]));
            let d = scales4([wr[0][b].d, wr[1][b].d, wr[2][b].d, wr[3][b].d], xb.d);
            for r in 0..4 {
                let q = &wr[r][b].qs;
                let xl = _mm256_cvtepi8_epi16(load16_i8(&q[..16]));
                let xh = _mm256_cvtepi8_epi16(load16_i8(&q[16..]));
                let s = _mm256_add_epi32(_mm256_madd_epi16(xl, yl), _mm256_madd_epi16(xh, yh));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), lane(d, r as i32), acc[r]);
            }
        }
        for r in 0..4 {
            yo[r] = hsum_ps(acc[r]);
        }
    }
    for (r, yr) in tail.iter_mut().enumerate() {
        *yr = vec_dot_q8_0_q8_0_impl(&w[(full + r) * nb..(full + r + 1) * nb], x);
    }
}

// GEMM tiles: `R` weight rows × `T` tokens per pass over the blocks. Each weight
// block's nibbles are unpacked once and used for the `T` tokens, each activation block
// (and its `8·y` correction) once for the `R` rows. Per (row, token) the integer block
// sum and the f32 scale product are those of the single-row kernels; only the f32
// accumulation order differs from the scalar twin. 4 × 2 keeps the 8 accumulators, 4
// nibble vectors and the token vectors within AVX2's 16 registers.

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn tile_q4_0<const R: usize, const T: usize>(
    w: &[BlockQ4_0],
    x: &[BlockQ8_0],
    nb: usize,
    r0: usize,
    t0: usize,
    y: &mut [f32],
    rows: usize,
) {
    let wr: [&[BlockQ4_0]; R] = core::array::from_fn(|r| &w[(r0 + r) * nb..(r0 + r + 1) * nb]);
    let xt: [&[BlockQ8_0]; T] = core::array::from_fn(|t| &x[(t0 + t) * nb..(t0 + t + 1) * nb]);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let ones = _mm256_set1_epi16(1);
    for b in 0..nb {
        let d = scale_grid(
            core::array::from_fn::<_, R, _>(|r| wr[r][b].d),
            core::array::from_fn::<_, T, _>(|t| xt[t][b].d),
        );
        let yv: [__m256i; T] = core::array::from_fn(|t| load32(&xt[t][b].qs));
        let y8: [__m256i; T] = core::array::from_fn(|t| _mm256_maddubs_epi16(_mm256_set1_epi8(8), yv[t]));
        for r in 0..R {
            let xu = nibbles(&wr[r][b].qs);
            for t in 0..T {
                // (x − 8)·y pairs: see `sum_q4_0` for why no step saturates.
                let p = _mm256_sub_epi16(_mm256_maddubs_epi16(xu, yv[t]), y8[t]);
                let s = _mm256_madd_epi16(p, ones);
                acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d[r][t]), acc[r][t]);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            y[(t0 + t) * rows + r0 + r] = hsum_ps(acc[r][t]);
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_q4_0_q8_0_impl(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, y: &mut [f32]) {
    gemm_tiles!(tile_q4_0::<4, 2>(w, x, nb, y))
}

/// Shared shape of the float dot products: 32 elements per step in four accumulators,
/// then 8 at a time, then a scalar tail. `load(i)` gives elements `i..i+8` as f32.
macro_rules! float_dot {
    ($x:expr, $y:expr, |$i:ident| $load:expr, |$j:ident| $tail:expr) => {{
        let (x, y) = ($x, $y);
        debug_assert_eq!(x.len(), y.len());
        let n = x.len().min(y.len());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 32 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let $i = i + 8 * k;
                *a = _mm256_fmadd_ps($load, load_ps8(y, $i), *a);
            }
            i += 32;
        }
        while i + 8 <= n {
            let $i = i;
            acc[0] = _mm256_fmadd_ps($load, load_ps8(y, i), acc[0]);
            i += 8;
        }
        let mut s = hsum_ps(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ));
        while i < n {
            let $j = i;
            s += $tail * y[i];
            i += 1;
        }
        s
    }};
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_f32_impl(x: &[f32], y: &[f32]) -> f32 {
    float_dot!(x, y, |i| load_ps8(x, i), |i| x[i])
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_f16_f32_impl(x: &[f16], y: &[f32]) -> f32 {
    float_dot!(x, y, |i| _mm256_cvtph_ps(load_u16x8(x, i)), |i| x[i].to_f32())
}

/// Rounds `x` to f16 eight values at a time (`vcvtps2ph`, nearest-even: the bits of
/// `f16::from_f32`), keeping the largest magnitude to report an overflow.
#[target_feature(enable = "avx2,fma,f16c")]
fn round_row_f16_impl(x: &[f32], y: &mut [f16]) -> bool {
    let n = x.len().min(y.len());
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut amax = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let v = load_ps8(x, i);
        amax = _mm256_max_ps(amax, _mm256_and_ps(v, abs));
        let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
        let o = &mut y[i..i + 8];
        // SAFETY: `o` is 8 writable 2-byte values (bounds checked above); unaligned store.
        unsafe { _mm_storeu_si128(o.as_mut_ptr().cast(), h) };
        i += 8;
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 writable f32; unaligned store.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), amax) };
    let mut m = lanes.iter().fold(0f32, |a, &v| a.max(v));
    for (o, &v) in y[i..n].iter_mut().zip(&x[i..n]) {
        *o = f16::from_f32(v);
        m = m.max(v.abs());
    }
    m < 65520.0
}

/// `Σ x·y` of two f16 rows: both widened by F16C, four chains of eight.
#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_f16_f16_impl(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let j = i + 8 * k;
            *a = _mm256_fmadd_ps(_mm256_cvtph_ps(load_u16x8(x, j)), _mm256_cvtph_ps(load_u16x8(y, j)), *a);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_cvtph_ps(load_u16x8(x, i)),
            _mm256_cvtph_ps(load_u16x8(y, i)),
            acc[0],
        );
        i += 8;
    }
    let mut s = hsum_ps(_mm256_add_ps(
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
    ));
    for (a, b) in x[i..n].iter().zip(&y[i..n]) {
        s += a.to_f32() * b.to_f32();
    }
    s
}

/// A 16-bit float weight the tiled GEMM widens eight at a time (exactly: f16 by F16C,
/// bf16 by a 16-bit shift of its bits).
trait HalfW: Copy + bytemuck::Pod + Sync {
    /// Widens `p[0..8]`.
    ///
    /// # Safety
    /// `p` points to 8 readable values, and the CPU has AVX2 and F16C.
    unsafe fn load8(p: *const Self) -> __m256;
    fn widen(self) -> f32;
}
impl HalfW for f16 {
    #[inline(always)]
    unsafe fn load8(p: *const f16) -> __m256 {
        // SAFETY: 16 readable bytes and F16C, by the caller's contract.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}
impl HalfW for bf16 {
    #[inline(always)]
    unsafe fn load8(p: *const bf16) -> __m256 {
        // SAFETY: 16 readable bytes and AVX2, by the caller's contract.
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())), 16)) }
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

/// `R` f16/bf16 weight rows × `T` f32 activation rows of `n` elements: per eight
/// elements each row's weights are widened once and multiplied into `T` accumulators,
/// so a weight is converted once per `T` tokens (the per-output dot converts it once per
/// token). Same products as `vec_dot_*_f32`, summed in another order. The loop reads
/// through raw pointers: with bounds checks in it, LLVM kept a copy of every
/// accumulator on the stack and stored it after each FMA (the panic path could observe
/// it), which made the tile slower than the per-output dots.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn tile_half<const R: usize, const T: usize>(
    w: &[impl HalfW],
    x: &[f32],
    n: usize,
    r0: usize,
    t0: usize,
    y: &mut [f32],
    rows: usize,
) {
    let wr: [&[_]; R] = core::array::from_fn(|r| &w[(r0 + r) * n..(r0 + r + 1) * n]);
    let xt: [&[f32]; T] = core::array::from_fn(|t| &x[(t0 + t) * n..(t0 + t + 1) * n]);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut pf = super::NextRows::new::<_, R, T>(wr[0].as_ptr(), n, x.len() / n, t0, n / 8);
    let n8 = n / 8 * 8;
    let mut i = 0;
    while i < n8 {
        pf.step();
        // SAFETY: every `wr[r]` and `xt[t]` holds `n` elements (sliced above) and
        // `i + 8 ≤ n8 ≤ n`; this function's features cover AVX2 and F16C.
        let wv: [__m256; R] = core::array::from_fn(|r| unsafe { HalfW::load8(wr[r].as_ptr().add(i)) });
        for t in 0..T {
            // SAFETY: as above.
            let xv = unsafe { _mm256_loadu_ps(xt[t].as_ptr().add(i)) };
            for r in 0..R {
                acc[r][t] = _mm256_fmadd_ps(wv[r], xv, acc[r][t]);
            }
        }
        i += 8;
    }
    for r in 0..R {
        for t in 0..T {
            let mut s = hsum_ps(acc[r][t]);
            for j in n8..n {
                s += wr[r][j].widen() * xt[t][j];
            }
            y[(t0 + t) * rows + r0 + r] = s;
        }
    }
}

/// Sixteen registers: 4 rows × 2 tokens of accumulators, four weight vectors, one input.
#[target_feature(enable = "avx2,fma,f16c")]
fn gemm_half_impl(w: &[impl HalfW], x: &[f32], nb: usize, y: &mut [f32]) {
    gemm_tiles!(tile_half::<4, 2>(w, x, nb, y))
}

/// Thirty-two registers (AVX-512 VL gives the 256-bit instructions sixteen more): 4 rows ×
/// 5 tokens of accumulators — 1.6 loads per eight FMAs instead of 3.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
fn gemm_half_vl_impl(w: &[impl HalfW], x: &[f32], nb: usize, y: &mut [f32]) {
    gemm_tiles!(tile_half::<4, 4>(w, x, nb, y))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn vec_dot_bf16_f32_impl(x: &[bf16], y: &[f32]) -> f32 {
    // bf16 → f32 is a 16-bit left shift of the bits (exact).
    float_dot!(
        x,
        y,
        |i| _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_u16x8(x, i)), 16)),
        |i| x[i].to_f32()
    )
}

/// A KV-cache element the attention kernels read: f32 as stored, f16 widened by F16C
/// (exact). Only used inside the AVX2 + F16C functions of this file.
pub(super) trait KvLane: Copy {
    /// `x[i..i + 8]` as f32.
    fn load8(x: &[Self], i: usize) -> __m256;
    /// `Σ q·k` (the dot of the scores' tail slots).
    fn dot(q: &[f32], k: &[Self]) -> f32;
}
impl KvLane for f32 {
    #[inline(always)]
    fn load8(x: &[f32], i: usize) -> __m256 {
        let s = &x[i..i + 8];
        // SAFETY: 8 readable f32 (bounds checked above); unaligned load. Reached only from
        // this file's AVX2 functions, behind the table's feature check.
        unsafe { _mm256_loadu_ps(s.as_ptr()) }
    }
    #[inline(always)]
    fn dot(q: &[f32], k: &[f32]) -> f32 {
        // SAFETY: as above (AVX2/FMA/F16C verified before any caller runs).
        unsafe { vec_dot_f32_impl(q, k) }
    }
}
impl KvLane for f16 {
    #[inline(always)]
    fn load8(x: &[f16], i: usize) -> __m256 {
        let s = &x[i..i + 8];
        // SAFETY: 8 readable f16 (bounds checked above); unaligned load; F16C verified
        // before any caller runs.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().cast())) }
    }
    #[inline(always)]
    fn dot(q: &[f32], k: &[f16]) -> f32 {
        // SAFETY: as above.
        unsafe { vec_dot_f16_f32_impl(k, q) }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn attn_scores_impl<T: KvLane>(q: &[f32], k: &[T], stride: usize, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let n = out.len();
    let mut s = 0;
    if hd.is_multiple_of(8) {
        // Eight slots at a time: one accumulator per slot, then one transposing
        // reduction (hadd tree) gives the eight sums in one vector.
        while s + 8 <= n {
            let mut acc = [_mm256_setzero_ps(); 8];
            for i in (0..hd).step_by(8) {
                let qv = load_ps8(q, i);
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(qv, T::load8(&k[(s + r) * stride..][..hd], i), *a);
                }
            }
            let t0 = _mm256_hadd_ps(acc[0], acc[1]);
            let t1 = _mm256_hadd_ps(acc[2], acc[3]);
            let t2 = _mm256_hadd_ps(acc[4], acc[5]);
            let t3 = _mm256_hadd_ps(acc[6], acc[7]);
            let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
            let r = _mm256_add_ps(
                _mm256_permute2f128_ps(u0, u1, 0x20),
                _mm256_permute2f128_ps(u0, u1, 0x31),
            );
            let o = &mut out[s..s + 8];
            // SAFETY: `o` is 8 writable f32; unaligned store.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), _mm256_mul_ps(r, _mm256_set1_ps(scale))) };
            s += 8;
        }
    }
    for (j, o) in out.iter_mut().enumerate().skip(s) {
        *o = T::dot(q, &k[j * stride..][..hd]) * scale;
    }
}

/// `out` (≤ 64 columns, a multiple of 8: `N` vectors) accumulated in registers over all
/// slots, stored once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn attn_values_cols<T: KvLane, const N: usize>(w: &[f32], v: &[T], stride: usize, c0: usize, out: &mut [f32]) {
    let mut acc = [_mm256_setzero_ps(); N];
    for (s, &ws) in w.iter().enumerate() {
        let row = &v[s * stride + c0..][..8 * N];
        let wv = _mm256_set1_ps(ws);
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(wv, T::load8(row, 8 * j), *a);
        }
    }
    let o = &mut out[c0..c0 + 8 * N];
    for (j, a) in acc.iter().enumerate() {
        let oj = &mut o[8 * j..8 * j + 8];
        // SAFETY: `oj` is 8 writable f32; unaligned store.
        unsafe { _mm256_storeu_ps(oj.as_mut_ptr(), *a) };
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn attn_values_impl<T: KvLane + KvScalar>(w: &[f32], v: &[T], stride: usize, out: &mut [f32]) {
    let hd = out.len();
    if !hd.is_multiple_of(8) {
        out.fill(0.0);
        for (s, &ws) in w.iter().enumerate() {
            for (o, &x) in out.iter_mut().zip(&v[s * stride..][..hd]) {
                *o += ws * x.f32();
            }
        }
        return;
    }
    let mut c0 = 0;
    while c0 < hd {
        match ((hd - c0) / 8).min(8) {
            8 => attn_values_cols::<T, 8>(w, v, stride, c0, out),
            7 => attn_values_cols::<T, 7>(w, v, stride, c0, out),
            6 => attn_values_cols::<T, 6>(w, v, stride, c0, out),
            5 => attn_values_cols::<T, 5>(w, v, stride, c0, out),
            4 => attn_values_cols::<T, 4>(w, v, stride, c0, out),
            3 => attn_values_cols::<T, 3>(w, v, stride, c0, out),
            2 => attn_values_cols::<T, 2>(w, v, stride, c0, out),
            _ => attn_values_cols::<T, 1>(w, v, stride, c0, out),
        }
        c0 += 64;
    }
}

/// The transposing reduction of [`attn_scores_impl`]: lane `j` of the result is the
/// sum of `acc[j]`'s lanes, each in the same order whatever the other vectors hold.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum8_lanes(acc: &[__m256; 8]) -> __m256 {
    let t0 = _mm256_hadd_ps(acc[0], acc[1]);
    let t1 = _mm256_hadd_ps(acc[2], acc[3]);
    let t2 = _mm256_hadd_ps(acc[4], acc[5]);
    let t3 = _mm256_hadd_ps(acc[6], acc[7]);
    let (u0, u1) = (_mm256_hadd_ps(t0, t1), _mm256_hadd_ps(t2, t3));
    _mm256_add_ps(
        _mm256_permute2f128_ps(u0, u1, 0x20),
        _mm256_permute2f128_ps(u0, u1, 0x31),
    )
}

/// How far ahead of the slot in hand the grouped attention kernels request cache rows:
/// a KV head's rows are `n_kv · hd` elements apart (1 KiB on the 1B shape), a stride
/// the hardware prefetchers do not follow across pages, so without the hint each row
/// is a demand miss.
const PREFETCH_SLOTS: usize = 64;

/// Requests the `len` elements of `x` from element `at` on into L1 (a hint: an address
/// past the end is never read).
#[inline(always)]
fn prefetch_row<T>(x: &[T], at: usize, len: usize) {
    let p = x.as_ptr().wrapping_add(at).cast::<i8>();
    for off in (0..len * core::mem::size_of::<T>()).step_by(64) {
        // SAFETY: SSE is part of x86-64; a prefetch never faults and reads nothing the
        // program sees, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off)) };
    }
}

/// `G` query heads (rows of `q`) against slots `0..n` (`out`: `G` rows of `n`, `ld`
/// apart), `S` slots a step (`G · S ≤ 16` accumulators; `S` divides 8): each step loads its `S` key rows once for
/// the `G` heads. Per (head, slot) the arithmetic of [`attn_scores_impl`] — lanes over
/// the head dimension, one [`hsum8_lanes`], the slots past the last multiple of 8
/// through `T::dot` — so the bits are the per-head kernel's.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scores_group_rows<T: KvLane, const G: usize, const S: usize>(
    q: &[f32],
    k: &[T],
    stride: usize,
    scale: f32,
    out: &mut [f32],
    n: usize,
    ld: usize,
) {
    let hd = q.len() / G;
    let body = if hd.is_multiple_of(8) { n - n % 8 } else { 0 };
    let mut qr: [&[f32]; G] = [&[]; G];
    for (h, r) in qr.iter_mut().enumerate() {
        *r = &q[h * hd..][..hd];
    }
    let mut s = 0;
    while s < body {
        for j in 0..S {
            prefetch_row(k, (s + j + PREFETCH_SLOTS) * stride, hd);
        }
        // (Plain loops, not `array::from_fn`: its closures do not inherit this fn's
        // target features, so the loads inside would be calls.)
        let mut rows: [&[T]; S] = [&[]; S];
        for (j, r) in rows.iter_mut().enumerate() {
            *r = &k[(s + j) * stride..][..hd];
        }
        let mut acc = [_mm256_setzero_ps(); 16];
        for i in (0..hd).step_by(8) {
            let mut kv = [_mm256_setzero_ps(); S];
            for (x, r) in kv.iter_mut().zip(&rows) {
                *x = T::load8(r, i);
            }
            for (h, qh) in qr.iter().enumerate() {
                let qv = load_ps8(qh, i);
                for (j, &kj) in kv.iter().enumerate() {
                    acc[h * S + j] = _mm256_fmadd_ps(qv, kj, acc[h * S + j]);
                }
            }
        }
        let sv = _mm256_set1_ps(scale);
        let mut lanes = [0f32; 16];
        let (lo, hi) = acc.split_at(8);
        let r = _mm256_mul_ps(hsum8_lanes(lo.try_into().unwrap()), sv);
        // SAFETY: `lanes` holds 16 writable f32; unaligned stores of 8.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), r) };
        if G * S > 8 {
            let r = _mm256_mul_ps(hsum8_lanes(hi.try_into().unwrap()), sv);
            // SAFETY: as above (lanes 8..16).
            unsafe { _mm256_storeu_ps(lanes[8..].as_mut_ptr(), r) };
        }
        for h in 0..G {
            out[h * ld + s..][..S].copy_from_slice(&lanes[h * S..][..S]);
        }
        s += S;
    }
    for (h, qh) in qr.iter().enumerate() {
        for j in s..n {
            out[h * ld + j] = T::dot(qh, &k[j * stride..][..hd]) * scale;
        }
    }
}

/// [`AttnGroup::scores`](crate::cpu::kernels::AttnGroup) for an f32 / f16 cache: the
/// group in runs of up to four heads (two slots a step), three (two), two (four) or
/// one (eight, the per-head kernel's shape). `WIDE` (inlined into
/// [`attn_scores_group_vl`], where AVX-512VL gives 32 vector registers: the same
/// 256-bit code, LLVM allocates ymm16–31): four and three heads take four slots a step,
/// two heads eight, so twice the keys per reduction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn attn_scores_group_impl<T: KvLane, const WIDE: bool>(
    q: &[f32],
    g: usize,
    k: &[T],
    stride: usize,
    scale: f32,
    out: &mut [f32],
    n: usize,
    ld: usize,
) {
    let hd = q.len() / g;
    let mut h0 = 0;
    while h0 < g {
        let take = (g - h0).min(4);
        let (qh, oh) = (&q[h0 * hd..][..take * hd], &mut out[h0 * ld..]);
        match (take, WIDE) {
            (4, false) => scores_group_rows::<T, 4, 2>(qh, k, stride, scale, oh, n, ld),
            (4, true) => scores_group_rows::<T, 4, 4>(qh, k, stride, scale, oh, n, ld),
            (3, false) => scores_group_rows::<T, 3, 2>(qh, k, stride, scale, oh, n, ld),
            (3, true) => scores_group_rows::<T, 3, 4>(qh, k, stride, scale, oh, n, ld),
            (2, false) => scores_group_rows::<T, 2, 4>(qh, k, stride, scale, oh, n, ld),
            (2, true) => scores_group_rows::<T, 2, 8>(qh, k, stride, scale, oh, n, ld),
            _ => scores_group_rows::<T, 1, 8>(qh, k, stride, scale, oh, n, ld),
        }
        h0 += take;
    }
}

/// [`attn_scores_group_impl`] compiled with AVX-512VL's 32 registers.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn attn_scores_group_vl<T: KvLane>(
    q: &[f32],
    g: usize,
    k: &[T],
    stride: usize,
    scale: f32,
    out: &mut [f32],
    n: usize,
    ld: usize,
) {
    attn_scores_group_impl::<T, true>(q, g, k, stride, scale, out, n, ld)
}

/// `G` heads' weighted sums over columns `c0..c0 + 8·C` (`w`: `G` rows of `n`, `out`:
/// `G` rows of `hd`), added to `out` through `G · C` registers over all slots: each
/// slot's `C` value vectors are loaded once for the group. Per (head, column) the FMA
/// chain of [`attn_values_cols`] continued from `out`, so from zero the bits are the
/// per-head kernel's, and slot blocks in turn give the bits of one call over them all.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn values_group_cols<T: KvLane, const G: usize, const C: usize>(
    w: &[f32],
    n: usize,
    ld: usize,
    v: &[T],
    stride: usize,
    c0: usize,
    out: &mut [f32],
) {
    let hd = out.len() / G;
    let mut wr: [&[f32]; G] = [&[]; G];
    let mut acc = [[_mm256_setzero_ps(); C]; G];
    for (h, (r, a)) in wr.iter_mut().zip(&mut acc).enumerate() {
        *r = &w[h * ld..][..n];
        for (j, aj) in a.iter_mut().enumerate() {
            *aj = load_ps8(&out[h * hd + c0 + 8 * j..][..8], 0);
        }
    }
    for s in 0..n {
        if c0 == 0 {
            // The first pass brings each whole row in (the later passes find it in L2).
            prefetch_row(v, (s + PREFETCH_SLOTS) * stride, hd);
        }
        let row = &v[s * stride + c0..][..8 * C];
        let mut x = [_mm256_setzero_ps(); C];
        for (j, xj) in x.iter_mut().enumerate() {
            *xj = T::load8(row, 8 * j);
        }
        for (a, wh) in acc.iter_mut().zip(&wr) {
            let wv = _mm256_set1_ps(wh[s]);
            for (aj, &xj) in a.iter_mut().zip(&x) {
                *aj = _mm256_fmadd_ps(wv, xj, *aj);
            }
        }
    }
    for (h, a) in acc.iter().enumerate() {
        for (j, aj) in a.iter().enumerate() {
            let o = &mut out[h * hd + c0 + 8 * j..][..8];
            // SAFETY: `o` is 8 writable f32; unaligned store.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *aj) };
        }
    }
}

/// `G` heads' values over every column: `8 / G` vectors of columns a pass (as many
/// accumulators as the per-head kernel keeps), the last columns one vector a pass.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn values_group_rows<T: KvLane, const G: usize, const C: usize>(
    w: &[f32],
    n: usize,
    ld: usize,
    v: &[T],
    stride: usize,
    out: &mut [f32],
) {
    let hd = out.len() / G;
    let mut c0 = 0;
    while c0 < hd {
        if hd - c0 >= 8 * C {
            values_group_cols::<T, G, C>(w, n, ld, v, stride, c0, out);
            c0 += 8 * C;
        } else {
            values_group_cols::<T, G, 1>(w, n, ld, v, stride, c0, out);
            c0 += 8;
        }
    }
}

/// [`AttnGroup::values`](crate::cpu::kernels::AttnGroup) for an f32 / f16 cache (head
/// dimensions that are not a multiple of 8: the per-head kernel's scalar loop, head by
/// head). `WIDE` (inlined into [`attn_values_group_vl`], 32 registers): four and three
/// heads take four column vectors a pass (half the passes), two heads eight.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn attn_values_group_impl<T: KvLane + KvScalar, const WIDE: bool>(
    w: &[f32],
    g: usize,
    n: usize,
    ld: usize,
    v: &[T],
    stride: usize,
    out: &mut [f32],
) {
    let hd = out.len() / g;
    if !hd.is_multiple_of(8) {
        for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
            for (s, &ws) in w[h * ld..][..n].iter().enumerate() {
                for (o, &x) in oh.iter_mut().zip(&v[s * stride..][..hd]) {
                    *o += ws * x.f32();
                }
            }
        }
        return;
    }
    let mut h0 = 0;
    while h0 < g {
        let take = (g - h0).min(4);
        let (wh, oh) = (&w[h0 * ld..], &mut out[h0 * hd..][..take * hd]);
        match (take, WIDE) {
            (4, false) => values_group_rows::<T, 4, 2>(wh, n, ld, v, stride, oh),
            (4, true) => values_group_rows::<T, 4, 4>(wh, n, ld, v, stride, oh),
            (3, false) => values_group_rows::<T, 3, 2>(wh, n, ld, v, stride, oh),
            (3, true) => values_group_rows::<T, 3, 4>(wh, n, ld, v, stride, oh),
            (2, false) => values_group_rows::<T, 2, 4>(wh, n, ld, v, stride, oh),
            (2, true) => values_group_rows::<T, 2, 8>(wh, n, ld, v, stride, oh),
            _ => values_group_rows::<T, 1, 8>(wh, n, ld, v, stride, oh),
        }
        h0 += take;
    }
}

/// [`attn_values_group_impl`] compiled with AVX-512VL's 32 registers.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
fn attn_values_group_vl<T: KvLane + KvScalar>(
    w: &[f32],
    g: usize,
    n: usize,
    ld: usize,
    v: &[T],
    stride: usize,
    out: &mut [f32],
) {
    attn_values_group_impl::<T, true>(w, g, n, ld, v, stride, out)
}

/// Scores over a Q8_0 cache: the query head quantized once (this table's quantizer,
/// byte-identical to the scalar one) and widened to i16 once; per slot and block the
/// exact i32 sum `Σ k·q` (`vpmaddwd`), then `acc += sum · (d_k · d_q)` in lanes and one
/// horizontal sum — the `vec_dot_q8_0_q8_0` arithmetic with the query's loads hoisted.
#[target_feature(enable = "avx2,fma,f16c")]
fn attn_scores_q8_0_impl(q: &[f32], k: &[BlockQ8_0], stride: usize, scale: f32, out: &mut [f32]) {
    const MB: usize = crate::cpu::scalar::Q8_MAX_HEAD_DIM / 32;
    let nb = q.len() / 32;
    let zero = BlockQ8_0 {
        d: f16::ZERO,
        qs: [0; 32],
    };
    let mut qq = [zero; MB];
    quantize_row_q8_0_impl(q, &mut qq[..nb]);
    let mut qw = [[_mm256_setzero_si256(); 2]; MB];
    for (w, b) in qw.iter_mut().zip(&qq[..nb]) {
        *w = [
            _mm256_cvtepi8_epi16(load16_i8(&b.qs[..16])),
            _mm256_cvtepi8_epi16(load16_i8(&b.qs[16..])),
        ];
    }
    for (s, o) in out.iter_mut().enumerate() {
        let row = &k[s * stride..][..nb];
        let mut acc = _mm256_setzero_ps();
        for ((kb, qb), w) in row.iter().zip(&qq[..nb]).zip(&qw) {
            let kl = _mm256_cvtepi8_epi16(load16_i8(&kb.qs[..16]));
            let kh = _mm256_cvtepi8_epi16(load16_i8(&kb.qs[16..]));
            let si = _mm256_add_epi32(_mm256_madd_epi16(kl, w[0]), _mm256_madd_epi16(kh, w[1]));
            let d = _mm256_set1_ps(scale_prod(kb.d, qb.d));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), d, acc);
        }
        *o = hsum_ps(acc) * scale;
    }
}

/// One f16 to f32 (F16C).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16_to_f32(h: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
}

/// `NB` value blocks (32·NB columns from block `b0`) accumulated in registers over all
/// slots: per slot and block `a = w·d`, then `acc += a · q` on the widened bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn attn_values_q8_0_cols<const NB: usize>(w: &[f32], v: &[BlockQ8_0], stride: usize, b0: usize, out: &mut [f32]) {
    let mut acc = [[_mm256_setzero_ps(); 4]; NB];
    for (s, &ws) in w.iter().enumerate() {
        let row = &v[s * stride + b0..][..NB];
        for (a, blk) in acc.iter_mut().zip(row) {
            let av = _mm256_set1_ps(ws * f16_to_f32(blk.d));
            let (lo, hi) = (load16_i8(&blk.qs[..16]), load16_i8(&blk.qs[16..]));
            for (j, x) in [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)]
                .into_iter()
                .enumerate()
            {
                a[j] = _mm256_fmadd_ps(av, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x)), a[j]);
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (j, v) in a.iter().enumerate() {
            let o = &mut out[32 * (b0 + i) + 8 * j..][..8];
            // SAFETY: `o` is 8 writable f32; unaligned store.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *v) };
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
fn attn_values_q8_0_impl(w: &[f32], v: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
    let nb = out.len() / 32;
    let mut b0 = 0;
    while b0 + 2 <= nb {
        attn_values_q8_0_cols::<2>(w, v, stride, b0, out);
        b0 += 2;
    }
    if b0 < nb {
        attn_values_q8_0_cols::<1>(w, v, stride, b0, out);
    }
}

/// `e^x` for eight lanes (Cephes `expf`: `x = n·ln 2 + r`, |r| ≤ ln 2 / 2, a degree-6
/// polynomial for `e^r`, `2^n` built in the exponent bits): within 2 ulp of libm's
/// `expf` for `x` in [−87.3, 88.3]; inputs are clamped to [−88.37, 88.37] (below, the
/// result is ≤ 4e−39, as good as 0 in a softmax).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn exp8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.37)), _mm256_set1_ps(-88.37));
    let n = _mm256_round_ps(
        _mm256_mul_ps(x, _mm256_set1_ps(core::f32::consts::LOG2_E)),
        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
    );
    // r = x − n·ln 2 in two steps (ln 2 split so n·ln2_hi is exact).
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    // 2^n for n in [−127, 128]: the exponent field; n = −127 gives 0 (flush), n = 128 is
    // out of the clamped range.
    let e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    _mm256_mul_ps(y, _mm256_castsi256_ps(e))
}

#[target_feature(enable = "avx2,fma,f16c")]
fn swiglu_f32_impl(g: &[f32], u: &[f32], out: &mut [f32]) {
    let n = out.len().min(g.len()).min(u.len());
    let full = n / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    for i in (0..full).step_by(8) {
        let gv = load_ps8(g, i);
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        let r = _mm256_div_ps(_mm256_mul_ps(gv, load_ps8(u, i)), _mm256_add_ps(one, e));
        let o = &mut out[i..i + 8];
        // SAFETY: `o` is 8 writable f32; unaligned store.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), r) };
    }
    super::super::scalar::swiglu(&g[full..n], &u[full..n], &mut out[full..n]);
}

#[target_feature(enable = "avx2,fma,f16c")]
fn softmax_f32_impl(x: &mut [f32]) -> (f32, f32) {
    let n = x.len();
    let full = n / 8 * 8;
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..full).step_by(8) {
        mv = _mm256_max_ps(mv, load_ps8(x, i));
    }
    let mut max = hmax_ps(mv);
    for &v in &x[full..] {
        max = max.max(v);
    }
    let mb = _mm256_set1_ps(max);
    let mut sv = _mm256_setzero_ps();
    for i in (0..full).step_by(8) {
        let e = exp8(_mm256_sub_ps(load_ps8(x, i), mb));
        sv = _mm256_add_ps(sv, e);
        let o = &mut x[i..i + 8];
        // SAFETY: `o` is 8 writable f32; unaligned store.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), e) };
    }
    let mut sum = hsum_ps(sv);
    for v in &mut x[full..] {
        *v = crate::math::expf(*v - max);
        sum += *v;
    }
    let inv = _mm256_set1_ps(1.0 / sum);
    for i in (0..full).step_by(8) {
        let o = &mut x[i..i + 8];
        let r = _mm256_mul_ps(load_ps8(o, 0), inv);
        // SAFETY: `o` is 8 writable f32; unaligned store.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), r) };
    }
    let inv = 1.0 / sum;
    for v in &mut x[full..] {
        *v *= inv;
    }
    (max, sum)
}
