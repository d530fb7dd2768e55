//! aarch64 kernels: NEON (`Isa::Neon`) and NEON + dotprod (`Isa::NeonDotprod`).
//!
//! The constructor checks the CPU with `is_aarch64_feature_detected!` (needs `std`) and
//! returns `None` when a feature is missing; every `unsafe` call into a
//! `#[target_feature]` function below relies on that check.
//!
//! * Quantizers: `fcvtas` (`vcvtaq_s32_f32`) converts with ties away from zero — exactly
//!   the scalar `roundf` — so the bytes match the scalar twin; blocks with non-finite
//!   inputs or an overflowing `1/d` go to the scalar quantizer (`cpu::q8_simd_scale`).
//! * Quantized dots: NEON widens i8·i8 products to i16 (`smull`, |p| ≤ 2^14, exact) and
//!   pairwise-accumulates into i32 (`sadalp`); dotprod uses `sdot` (four i8·i8 products
//!   into an i32 lane, exact), through `asm!` because `vdotq_s32` is not stable Rust.
//! * `gemv_*`: four weight rows per step sharing each activation block's loads.
//! * f32, f16 and bf16 dots are vectorized; f16 is widened by `fcvtl` in inline asm
//!   (the f16 vector types and `vcvt_f32_f16` are not stable Rust). Prefill over f16 /
//!   bf16 weights runs 4 × 4 register tiles (`gemm_half_impl`).
//! * x8 layouts (`cpu::repack`): `repack.rs`, `smull`-based and `sdot`-based.
//! * Q5_0, Q5_1 and K-quant dots: `k.rs`, `smull`-based (the dotprod table uses them too).
//! * `Isa::NeonI8mm` (`smmla`) is not implemented: `kernels(NeonI8mm)` returns `None`.

use core::arch::aarch64::*;

mod k;
mod repack;

use half::{bf16, f16};

use super::kernels::{AttnGroup, Isa, Kernels, Rows, RowsMut};
use crate::quant::{self, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// The table for a NEON-family `isa`, or `None` when the CPU lacks it (or for i8mm,
/// which has no kernels yet).
pub(crate) fn kernels(isa: Isa) -> Option<Kernels> {
    let neon = std::arch::is_aarch64_feature_detected!("neon");
    let dotprod = neon && std::arch::is_aarch64_feature_detected!("dotprod");
    let base = Kernels {
        isa: Isa::Neon,
        quantize_row_q8_0,
        quantize_row_q8_1,
        vec_dot_q4_0_q8_0: vec_dot_q4_0_q8_0_neon,
        vec_dot_q4_1_q8_1: vec_dot_q4_1_q8_1_neon,
        vec_dot_q8_0_q8_0: vec_dot_q8_0_q8_0_neon,
        quantize_row_q8_k: crate::quant::k::quantize_row_q8_k,
        vec_dot_q5_0_q8_0: k::vec_dot_q5_0_q8_0,
        vec_dot_q5_1_q8_1: k::vec_dot_q5_1_q8_1,
        vec_dot_q4_k_q8_k: k::vec_dot_q4_k_q8_k,
        vec_dot_q5_k_q8_k: k::vec_dot_q5_k_q8_k,
        vec_dot_q6_k_q8_k: k::vec_dot_q6_k_q8_k,
        vec_dot_f16_f32,
        vec_dot_bf16_f32,
        vec_dot_f32,
        attn_scores,
        attn_values,
        attn_scores_f16,
        attn_values_f16,
        attn_scores_q8_0: attn_scores_q8_0_neon,
        attn_values_q8_0,
        attn_group_f32: Some(AttnGroup {
            scores: attn_scores_group,
            values: attn_values_group,
        }),
        attn_group_f16: Some(AttnGroup {
            scores: attn_scores_group_f16,
            values: attn_values_group_f16,
        }),
        softmax_f32,
        swiglu_f32,
        gemv_q4_0_q8_0: gemv_q4_0_q8_0_neon,
        gemv_q4_1_q8_1: gemv_q4_1_q8_1_neon,
        gemv_q8_0_q8_0: gemv_q8_0_q8_0_neon,
        // No NEON GEMM tile yet: one gemv per token (the pre-GEMM path).
        gemm_q4_0_q8_0: gemm_q4_0_q8_0_neon,
        gemm_f16_f32: Some(gemm_f16_f32),
        gemm_bf16_f32: Some(gemm_bf16_f32),
        gemm_bf16_bf16: None,
        vec_dot_bf16_bf16: None,
        f16_act: None,
        gemm_q4_0x8: repack::gemm_q4_0x8_neon,
        gemm_q4_1x8: repack::gemm_q4_1x8_neon,
        gemm_q8_0x8: repack::gemm_q8_0x8_neon,
        gemm_q5_0x8: repack::gemm_q5_0x8_neon,
        gemm_q5_1x8: repack::gemm_q5_1x8_neon,
        gemm_q4_kx8: repack::gemm_q4_kx8_neon,
        gemm_q5_kx8: repack::gemm_q5_kx8_neon,
        gemm_q6_kx8: repack::gemm_q6_kx8_neon,
        gemm_q4_kx8_t16: None,
        gemm_q5_kx8_t16: None,
        gemm_q6_kx8_t16: None,
        x8_simd: true,
        x8_kq_simd: true,
    };
    match isa {
        Isa::Neon if neon => Some(base),
        Isa::NeonDotprod if dotprod => Some(Kernels {
            isa: Isa::NeonDotprod,
            vec_dot_q4_0_q8_0: vec_dot_q4_0_q8_0_dot,
            vec_dot_q4_1_q8_1: vec_dot_q4_1_q8_1_dot,
            vec_dot_q8_0_q8_0: vec_dot_q8_0_q8_0_dot,
            gemv_q4_0_q8_0: gemv_q4_0_q8_0_dot,
            gemv_q4_1_q8_1: gemv_q4_1_q8_1_dot,
            gemv_q8_0_q8_0: gemv_q8_0_q8_0_dot,
            attn_scores_q8_0: attn_scores_q8_0_dot,
            gemm_q4_0_q8_0: gemm_q4_0_q8_0_dot,
            gemm_q4_0x8: repack::gemm_q4_0x8_dot,
            gemm_q4_1x8: repack::gemm_q4_1x8_dot,
            gemm_q8_0x8: repack::gemm_q8_0x8_dot,
            gemm_q5_0x8: repack::gemm_q5_0x8_dot,
            gemm_q5_1x8: repack::gemm_q5_1x8_dot,
            gemm_q4_kx8: repack::gemm_q4_kx8_dot,
            gemm_q5_kx8: repack::gemm_q5_kx8_dot,
            gemm_q6_kx8: repack::gemm_q6_kx8_dot,
            ..base
        }),
        _ => None,
    }
}

/// A `gemm_*` entry as one `gemv` per token into `y`'s rows (`[toks, rows]`).
fn gemm_by_gemv<W, X>(w: &[W], x: &[X], nb: usize, y: &mut [f32], gemv: fn(&[W], &[X], &mut [f32])) {
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let rows = w.len() / nb;
    for (xt, yt) in x.chunks_exact(nb).zip(y.chunks_exact_mut(rows.max(1))) {
        gemv(w, xt, yt);
    }
}
fn gemm_q4_0_q8_0_neon(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, y: &mut [f32]) {
    gemm_by_gemv(w, x, nb, y, gemv_q4_0_q8_0_neon)
}
fn gemm_q4_0_q8_0_dot(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, y: &mut [f32]) {
    gemm_by_gemv(w, x, nb, y, gemv_q4_0_q8_0_dot)
}

// The safe entry points below are reachable only through tables built by `kernels()`,
// which verified NEON (and dotprod for the `_dot` ones).

fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    // SAFETY: NEON verified by `kernels()` (the only way to reach this fn).
    unsafe { quantize_row_q8_0_impl(x, y) }
}
fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    // SAFETY: as above.
    unsafe { quantize_row_q8_1_impl(x, y) }
}
fn vec_dot_q4_0_q8_0_neon(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as above.
    unsafe { dot_q4_0_neon(x, y) }
}
fn vec_dot_q4_1_q8_1_neon(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as above.
    unsafe { dot_q4_1_neon(x, y) }
}
fn vec_dot_q8_0_q8_0_neon(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as above.
    unsafe { dot_q8_0_neon(x, y) }
}
fn vec_dot_q4_0_q8_0_dot(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as above; `kernels()` puts this fn in a table only when dotprod is present.
    unsafe { dot_q4_0_dot(x, y) }
}
fn vec_dot_q4_1_q8_1_dot(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as above; dotprod verified.
    unsafe { dot_q4_1_dot(x, y) }
}
fn vec_dot_q8_0_q8_0_dot(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as above; dotprod verified.
    unsafe { dot_q8_0_dot(x, y) }
}
fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    // SAFETY: NEON verified.
    unsafe { vec_dot_bf16_f32_impl(x, y) }
}
fn attn_scores(q: &[f32], k: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { attn_scores_impl(q, k, stride, scale, out) }
}
fn attn_values(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { attn_values_impl(w, v, stride, out) }
}
fn attn_scores_f16(q: &[f32], k: &[f16], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { attn_scores_impl(q, k, stride, scale, out) }
}
fn attn_values_f16(w: &[f32], v: &[f16], stride: usize, out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { attn_values_impl(w, v, stride, out) }
}
fn attn_scores_group(q: &[f32], g: usize, k: &[f32], stride: usize, scale: f32, out: RowsMut<'_>) {
    // SAFETY: NEON verified.
    unsafe { attn_scores_group_impl(q, g, k, stride, scale, out) }
}
fn attn_values_group(w: Rows<'_>, g: usize, v: &[f32], stride: usize, out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { attn_values_group_impl(w, g, v, stride, out) }
}
fn attn_scores_group_f16(q: &[f32], g: usize, k: &[f16], stride: usize, scale: f32, out: RowsMut<'_>) {
    // SAFETY: NEON verified.
    unsafe { attn_scores_group_impl(q, g, k, stride, scale, out) }
}
fn attn_values_group_f16(w: Rows<'_>, g: usize, v: &[f16], stride: usize, out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { attn_values_group_impl(w, g, v, stride, out) }
}
fn attn_scores_q8_0_neon(q: &[f32], k: &[BlockQ8_0], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { scores_q8_0_neon(q, k, stride, scale, out) }
}
fn attn_scores_q8_0_dot(q: &[f32], k: &[BlockQ8_0], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: NEON verified; `kernels()` puts this fn in a table only with dotprod.
    unsafe { scores_q8_0_dot(q, k, stride, scale, out) }
}
fn attn_values_q8_0(w: &[f32], v: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { attn_values_q8_0_impl(w, v, stride, out) }
}
fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
    // SAFETY: NEON verified.
    unsafe { vec_dot_f16_f32_impl(x, y) }
}
fn gemm_f16_f32(w: &[f16], x: &[f32], n: usize, y: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { gemm_half_impl(w, x, n, y) }
}
fn gemm_bf16_f32(w: &[bf16], x: &[f32], n: usize, y: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { gemm_half_impl(w, x, n, y) }
}
fn softmax_f32(x: &mut [f32]) -> (f32, f32) {
    // SAFETY: NEON verified.
    unsafe { softmax_f32_impl(x) }
}
fn swiglu_f32(g: &[f32], u: &[f32], out: &mut [f32]) {
    // SAFETY: NEON verified.
    unsafe { swiglu_f32_impl(g, u, out) }
}
fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    // SAFETY: NEON verified.
    unsafe { vec_dot_f32_impl(x, y) }
}

fn gemv_q4_0_q8_0_neon(w: &[BlockQ4_0], x: &[BlockQ8_0], y: &mut [f32]) {
    // SAFETY: NEON verified by `kernels()`.
    unsafe { gemv_q4_0_neon(w, x, y) }
}
fn gemv_q4_1_q8_1_neon(w: &[BlockQ4_1], x: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: NEON verified by `kernels()`.
    unsafe { gemv_q4_1_neon(w, x, y) }
}
fn gemv_q8_0_q8_0_neon(w: &[BlockQ8_0], x: &[BlockQ8_0], y: &mut [f32]) {
    // SAFETY: NEON verified by `kernels()`.
    unsafe { gemv_q8_0_neon(w, x, y) }
}
fn gemv_q4_0_q8_0_dot(w: &[BlockQ4_0], x: &[BlockQ8_0], y: &mut [f32]) {
    // SAFETY: NEON + dotprod verified by `kernels()`.
    unsafe { gemv_q4_0_dot(w, x, y) }
}
fn gemv_q4_1_q8_1_dot(w: &[BlockQ4_1], x: &[BlockQ8_1], y: &mut [f32]) {
    // SAFETY: NEON + dotprod verified by `kernels()`.
    unsafe { gemv_q4_1_dot(w, x, y) }
}
fn gemv_q8_0_q8_0_dot(w: &[BlockQ8_0], x: &[BlockQ8_0], y: &mut [f32]) {
    // SAFETY: NEON + dotprod verified by `kernels()`.
    unsafe { gemv_q8_0_dot(w, x, y) }
}

/// Loads 16 bytes from `b[..16]`.
#[inline]
#[target_feature(enable = "neon")]
fn ld_u8(b: &[u8]) -> uint8x16_t {
    let s = &b[..16];
    // SAFETY: `s` is 16 readable bytes (bounds checked); `ld1` has no alignment need.
    unsafe { vld1q_u8(s.as_ptr()) }
}
/// Loads 16 signed bytes from `b[..16]`.
#[inline]
#[target_feature(enable = "neon")]
fn ld_s8(b: &[i8]) -> int8x16_t {
    let s = &b[..16];
    // SAFETY: `s` is 16 readable bytes (bounds checked); no alignment need.
    unsafe { vld1q_s8(s.as_ptr()) }
}
/// Loads 4 f32 from `x[i..i + 4]`.
#[inline]
#[target_feature(enable = "neon")]
fn ld_f32(x: &[f32], i: usize) -> float32x4_t {
    let s = &x[i..i + 4];
    // SAFETY: `s` is 4 readable f32 (bounds checked); no alignment need.
    unsafe { vld1q_f32(s.as_ptr()) }
}
/// Loads 8 bf16 bit patterns from `x[i..i + 8]`.
#[inline]
#[target_feature(enable = "neon")]
fn ld_bf16(x: &[bf16], i: usize) -> uint16x8_t {
    let s = &x[i..i + 8];
    // SAFETY: `s` is 8 readable 2-byte values (bounds checked); no alignment need.
    unsafe { vld1q_u16(s.as_ptr().cast()) }
}
/// Stores 8 bytes into `b[..8]`.
#[inline]
#[target_feature(enable = "neon")]
fn st_s8x8(b: &mut [i8], v: int8x8_t) {
    let s = &mut b[..8];
    // SAFETY: `s` is 8 writable bytes (bounds checked); no alignment need.
    unsafe { vst1_s8(s.as_mut_ptr(), v) }
}

/// One 32-float block into `qs`: scale and byte sum, or `None` (scalar fallback).
#[inline]
#[target_feature(enable = "neon")]
fn q8_block(xb: &[f32], qs: &mut [i8; 32]) -> Option<(f32, i32)> {
    let mut v = [vdupq_n_f32(0.0); 8];
    let mut amax = vdupq_n_f32(0.0);
    let mut ok = vdupq_n_u32(u32::MAX);
    for (k, vk) in v.iter_mut().enumerate() {
        *vk = ld_f32(xb, 4 * k);
        amax = vmaxq_f32(amax, vabsq_f32(*vk));
        ok = vandq_u32(ok, vceqq_f32(*vk, *vk)); // false lanes are NaN
    }
    let (d, id) = crate::cpu::q8_simd_scale(vmaxvq_f32(amax), vminvq_u32(ok) == 0)?;
    let mut sum = vdupq_n_s32(0);
    for k in 0..4 {
        let a = vcvtaq_s32_f32(vmulq_n_f32(v[2 * k], id));
        let b = vcvtaq_s32_f32(vmulq_n_f32(v[2 * k + 1], id));
        sum = vaddq_s32(sum, vaddq_s32(a, b));
        // Integral values in [-127, 127]: saturating narrows are exact.
        st_s8x8(&mut qs[8 * k..], vqmovn_s16(vcombine_s16(vqmovn_s32(a), vqmovn_s32(b))));
    }
    Some((d, vaddvq_s32(sum)))
}

#[target_feature(enable = "neon")]
fn quantize_row_q8_0_impl(x: &[f32], y: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), y.len() * 32);
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        match q8_block(xb, &mut yb.qs) {
            Some((d, _)) => yb.d = f16::from_f32(d),
            None => quant::quantize_row_q8_0(xb, core::slice::from_mut(yb)),
        }
    }
}

#[target_feature(enable = "neon")]
fn quantize_row_q8_1_impl(x: &[f32], y: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), y.len() * 32);
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        match q8_block(xb, &mut yb.qs) {
            Some((d, sum)) => {
                yb.d = f16::from_f32(d);
                yb.s = f16::from_f32(sum as f32 * d);
            }
            None => quant::quantize_row_q8_1(xb, core::slice::from_mut(yb)),
        }
    }
}

/// Σ a·b over 16 byte pairs into 4 i32 lanes, NEON: `smull` to i16 (exact, |p| ≤ 2^14),
/// then pairwise add-accumulate into i32.
#[inline]
#[target_feature(enable = "neon")]
fn dot16_neon(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    let hi = vmull_high_s8(a, b);
    vpadalq_s16(vpadalq_s16(acc, lo), hi)
}

/// Σ a·b over 16 byte pairs into 4 i32 lanes with `sdot` (exact).
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn dot16_sdot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` reads two vector registers and updates a third, nothing else; the
    // enclosing fn is only reached when dotprod was detected.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// The 32 weights of a Q4 block as two signed-byte vectors (elements 0..16, 16..32),
/// minus `off` (8 for Q4_0, 0 for Q4_1).
#[inline]
#[target_feature(enable = "neon")]
fn q4_bytes(qs: &[u8; 16], off: i8) -> (int8x16_t, int8x16_t) {
    let q = ld_u8(qs);
    let lo = vreinterpretq_s8_u8(vandq_u8(q, vdupq_n_u8(0x0f)));
    let hi = vreinterpretq_s8_u8(vshrq_n_u8(q, 4));
    (vsubq_s8(lo, vdupq_n_s8(off)), vsubq_s8(hi, vdupq_n_s8(off)))
}

macro_rules! dots {
    ($q4_0:ident, $q4_1:ident, $q8_0:ident, $features:literal, $dot16:ident) => {
        #[target_feature(enable = $features)]
        fn $q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            debug_assert_eq!(x.len(), y.len());
            let mut acc = vdupq_n_f32(0.0);
            for (bx, by) in x.iter().zip(y) {
                let (lo, hi) = q4_bytes(&bx.qs, 8);
                let z = vdupq_n_s32(0);
                let s = $dot16($dot16(z, lo, ld_s8(&by.qs[..16])), hi, ld_s8(&by.qs[16..]));
                let d = bx.d.to_f32() * by.d.to_f32();
                acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), d);
            }
            vaddvq_f32(acc)
        }

        #[target_feature(enable = $features)]
        fn $q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            debug_assert_eq!(x.len(), y.len());
            let mut acc = vdupq_n_f32(0.0);
            let mut summs = 0.0f32;
            for (bx, by) in x.iter().zip(y) {
                let (lo, hi) = q4_bytes(&bx.qs, 0);
                let z = vdupq_n_s32(0);
                let s = $dot16($dot16(z, lo, ld_s8(&by.qs[..16])), hi, ld_s8(&by.qs[16..]));
                let d = bx.d.to_f32() * by.d.to_f32();
                acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), d);
                summs += bx.m.to_f32() * by.s.to_f32();
            }
            vaddvq_f32(acc) + summs
        }

        #[target_feature(enable = $features)]
        fn $q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
            debug_assert_eq!(x.len(), y.len());
            let mut acc = vdupq_n_f32(0.0);
            for (bx, by) in x.iter().zip(y) {
                let z = vdupq_n_s32(0);
                let s = $dot16(z, ld_s8(&bx.qs[..16]), ld_s8(&by.qs[..16]));
                let s = $dot16(s, ld_s8(&bx.qs[16..]), ld_s8(&by.qs[16..]));
                let d = bx.d.to_f32() * by.d.to_f32();
                acc = vfmaq_n_f32(acc, vcvtq_f32_s32(s), d);
            }
            vaddvq_f32(acc)
        }
    };
}
dots!(dot_q4_0_neon, dot_q4_1_neon, dot_q8_0_neon, "neon", dot16_neon);

/// Scores over a Q8_0 cache: the query head quantized once (byte-identical to the scalar
/// quantizer) and its bytes loaded once; per slot and block the exact i32 sums (`$dot16`:
/// `smull` + `sadalp`, or `sdot`), then `acc += sum · (d_k · d_q)` and one horizontal
/// sum — the `vec_dot_q8_0_q8_0` arithmetic with the query's loads hoisted.
macro_rules! scores_q8_0 {
    ($name:ident, $features:literal, $dot16:ident) => {
        #[target_feature(enable = $features)]
        fn $name(q: &[f32], k: &[BlockQ8_0], stride: usize, scale: f32, out: &mut [f32]) {
            const MB: usize = crate::cpu::scalar::Q8_MAX_HEAD_DIM / 32;
            let nb = q.len() / 32;
            let zero = BlockQ8_0 {
                d: f16::ZERO,
                qs: [0; 32],
            };
            let mut qq = [zero; MB];
            quantize_row_q8_0_impl(q, &mut qq[..nb]);
            let mut qv = [(vdupq_n_s8(0), vdupq_n_s8(0), 0.0f32); MB];
            for (v, b) in qv.iter_mut().zip(&qq[..nb]) {
                *v = (ld_s8(&b.qs[..16]), ld_s8(&b.qs[16..]), b.d.to_f32());
            }
            for (s, o) in out.iter_mut().enumerate() {
                let row = &k[s * stride..][..nb];
                let mut acc = vdupq_n_f32(0.0);
                for (kb, &(ql, qh, dq)) in row.iter().zip(&qv) {
                    let z = vdupq_n_s32(0);
                    let si = $dot16($dot16(z, ld_s8(&kb.qs[..16]), ql), ld_s8(&kb.qs[16..]), qh);
                    acc = vfmaq_n_f32(acc, vcvtq_f32_s32(si), kb.d.to_f32() * dq);
                }
                *o = vaddvq_f32(acc) * scale;
            }
        }
    };
}
scores_q8_0!(scores_q8_0_neon, "neon", dot16_neon);
scores_q8_0!(scores_q8_0_dot, "neon,dotprod", dot16_sdot);

/// Values over a Q8_0 cache: `NB` blocks (32·NB columns from block `b0`) in 8·NB
/// registers; per slot and block `a = w·d`, bytes widened (`sxtl` ×2, `scvtf`) and
/// `acc += a · q`.
#[inline]
#[target_feature(enable = "neon")]
fn attn_values_q8_0_cols<const NB: usize>(w: &[f32], v: &[BlockQ8_0], stride: usize, b0: usize, out: &mut [f32]) {
    let mut acc = [[vdupq_n_f32(0.0); 8]; NB];
    for (s, &ws) in w.iter().enumerate() {
        let row = &v[s * stride + b0..][..NB];
        for (a, blk) in acc.iter_mut().zip(row) {
            let av = ws * blk.d.to_f32();
            for (h, half) in [ld_s8(&blk.qs[..16]), ld_s8(&blk.qs[16..])].into_iter().enumerate() {
                let (l16, h16) = (vmovl_s8(vget_low_s8(half)), vmovl_high_s8(half));
                let parts = [
                    vmovl_s16(vget_low_s16(l16)),
                    vmovl_high_s16(l16),
                    vmovl_s16(vget_low_s16(h16)),
                    vmovl_high_s16(h16),
                ];
                for (j, p) in parts.into_iter().enumerate() {
                    a[4 * h + j] = vfmaq_n_f32(a[4 * h + j], vcvtq_f32_s32(p), av);
                }
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (j, x) in a.iter().enumerate() {
            let o = &mut out[32 * (b0 + i) + 4 * j..][..4];
            // SAFETY: `o` is 4 writable f32 (bounds checked); no alignment need.
            unsafe { vst1q_f32(o.as_mut_ptr(), *x) };
        }
    }
}

#[target_feature(enable = "neon")]
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
dots!(dot_q4_0_dot, dot_q4_1_dot, dot_q8_0_dot, "neon,dotprod", dot16_sdot);

/// Four weight rows per step against one activation row: the activation block is loaded
/// once for four rows, and each row's integer sum and scale product are those of the
/// single-row kernels (`$v*`, used for the 0–3 tail rows); only the f32 accumulation
/// order differs from the scalar twin.
macro_rules! gemv4 {
    ($q4_0:ident, $q4_1:ident, $q8_0:ident, $features:literal, $dot16:ident, $v40:ident, $v41:ident, $v80:ident) => {
        #[target_feature(enable = $features)]
        fn $q4_0(w: &[BlockQ4_0], x: &[BlockQ8_0], y: &mut [f32]) {
            let nb = x.len();
            let full = y.len() / 4 * 4;
            let (y4, tail) = y.split_at_mut(full);
            for (i, yo) in y4.chunks_exact_mut(4).enumerate() {
                let wr = crate::cpu::rows4(w, 4 * i, nb);
                let mut acc = [vdupq_n_f32(0.0); 4];
                for (b, xb) in x.iter().enumerate() {
                    let (yl, yh) = (ld_s8(&xb.qs[..16]), ld_s8(&xb.qs[16..]));
                    let dy = xb.d.to_f32();
                    for r in 0..4 {
                        let (lo, hi) = q4_bytes(&wr[r][b].qs, 8);
                        let s = $dot16($dot16(vdupq_n_s32(0), lo, yl), hi, yh);
                        acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(s), wr[r][b].d.to_f32() * dy);
                    }
                }
                for r in 0..4 {
                    yo[r] = vaddvq_f32(acc[r]);
                }
            }
            for (r, yr) in tail.iter_mut().enumerate() {
                *yr = $v40(&w[(full + r) * nb..(full + r + 1) * nb], x);
            }
        }

        #[target_feature(enable = $features)]
        fn $q4_1(w: &[BlockQ4_1], x: &[BlockQ8_1], y: &mut [f32]) {
            let nb = x.len();
            let full = y.len() / 4 * 4;
            let (y4, tail) = y.split_at_mut(full);
            for (i, yo) in y4.chunks_exact_mut(4).enumerate() {
                let wr = crate::cpu::rows4(w, 4 * i, nb);
                let mut acc = [vdupq_n_f32(0.0); 4];
                let mut ms = [0.0f32; 4];
                for (b, xb) in x.iter().enumerate() {
                    let (yl, yh) = (ld_s8(&xb.qs[..16]), ld_s8(&xb.qs[16..]));
                    let (dy, sy) = (xb.d.to_f32(), xb.s.to_f32());
                    for r in 0..4 {
                        let (lo, hi) = q4_bytes(&wr[r][b].qs, 0);
                        let s = $dot16($dot16(vdupq_n_s32(0), lo, yl), hi, yh);
                        acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(s), wr[r][b].d.to_f32() * dy);
                        ms[r] += wr[r][b].m.to_f32() * sy;
                    }
                }
                for r in 0..4 {
                    yo[r] = vaddvq_f32(acc[r]) + ms[r];
                }
            }
            for (r, yr) in tail.iter_mut().enumerate() {
                *yr = $v41(&w[(full + r) * nb..(full + r + 1) * nb], x);
            }
        }

        #[target_feature(enable = $features)]
        fn $q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0], y: &mut [f32]) {
            let nb = x.len();
            let full = y.len() / 4 * 4;
            let (y4, tail) = y.split_at_mut(full);
            for (i, yo) in y4.chunks_exact_mut(4).enumerate() {
                let wr = crate::cpu::rows4(w, 4 * i, nb);
                let mut acc = [vdupq_n_f32(0.0); 4];
                for (b, xb) in x.iter().enumerate() {
                    let (yl, yh) = (ld_s8(&xb.qs[..16]), ld_s8(&xb.qs[16..]));
                    let dy = xb.d.to_f32();
                    for r in 0..4 {
                        let q = &wr[r][b].qs;
                        let s = $dot16($dot16(vdupq_n_s32(0), ld_s8(&q[..16]), yl), ld_s8(&q[16..]), yh);
                        acc[r] = vfmaq_n_f32(acc[r], vcvtq_f32_s32(s), wr[r][b].d.to_f32() * dy);
                    }
                }
                for r in 0..4 {
                    yo[r] = vaddvq_f32(acc[r]);
                }
            }
            for (r, yr) in tail.iter_mut().enumerate() {
                *yr = $v80(&w[(full + r) * nb..(full + r + 1) * nb], x);
            }
        }
    };
}
gemv4!(
    gemv_q4_0_neon,
    gemv_q4_1_neon,
    gemv_q8_0_neon,
    "neon",
    dot16_neon,
    dot_q4_0_neon,
    dot_q4_1_neon,
    dot_q8_0_neon
);
gemv4!(
    gemv_q4_0_dot,
    gemv_q4_1_dot,
    gemv_q8_0_dot,
    "neon,dotprod",
    dot16_sdot,
    dot_q4_0_dot,
    dot_q4_1_dot,
    dot_q8_0_dot
);

/// A KV-cache (or weight) element the float kernels read: f32 as stored, f16 widened by
/// `fcvtl` (base AdvSIMD, exact). Only used inside this file's NEON functions.
trait Lane4: Copy {
    /// `x[i..i + 4]` as f32.
    fn ld4(x: &[Self], i: usize) -> float32x4_t;
    fn f32(self) -> f32;
}
impl Lane4 for f32 {
    #[inline(always)]
    fn ld4(x: &[f32], i: usize) -> float32x4_t {
        let s = &x[i..i + 4];
        // SAFETY: 4 readable f32 (bounds checked); NEON verified before any caller runs.
        unsafe { vld1q_f32(s.as_ptr()) }
    }
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
}
impl Lane4 for f16 {
    #[inline(always)]
    fn ld4(x: &[f16], i: usize) -> float32x4_t {
        let s = &x[i..i + 4];
        // SAFETY: 4 readable f16 (bounds checked), loaded as their bits; NEON verified.
        let h: uint16x4_t = unsafe { vld1_u16(s.as_ptr().cast()) };
        let out: float32x4_t;
        // SAFETY: `fcvtl` (f16 → f32, base AdvSIMD) reads and writes registers only.
        unsafe {
            core::arch::asm!("fcvtl {o:v}.4s, {h:v}.4h", o = lateout(vreg) out, h = in(vreg) h,
                options(pure, nomem, nostack, preserves_flags))
        };
        out
    }
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
}

impl Lane4 for bf16 {
    #[inline(always)]
    fn ld4(x: &[bf16], i: usize) -> float32x4_t {
        let s = &x[i..i + 4];
        // SAFETY: 4 readable bf16 (bounds checked), loaded as their bits; NEON verified.
        let h: uint16x4_t = unsafe { vld1_u16(s.as_ptr().cast()) };
        // bf16 → f32 is a 16-bit left shift of the bits (exact).
        // SAFETY: register-only NEON instructions; NEON verified.
        unsafe { vreinterpretq_f32_u32(vshll_n_u16(h, 16)) }
    }
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
}

/// `R` f16/bf16 weight rows × `T` f32 activation rows of `n` elements (the x86-64
/// `tile_half`): per four elements each row's weights are widened once for `T` tokens.
/// Each row is cut to exactly `n` elements first so the loop's bounds checks fold away;
/// a check left inside it can keep the accumulators on the stack (seen on x86-64).
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)]
fn tile_half<W: Lane4, const R: usize, const T: usize>(
    w: &[W],
    x: &[f32],
    n: usize,
    r0: usize,
    t0: usize,
    y: &mut [f32],
    rows: usize,
) {
    let wr: [&[W]; R] = core::array::from_fn(|r| &w[(r0 + r) * n..(r0 + r + 1) * n]);
    let xt: [&[f32]; T] = core::array::from_fn(|t| &x[(t0 + t) * n..(t0 + t + 1) * n]);
    let mut acc = [[vdupq_n_f32(0.0); T]; R];
    let n4 = n / 4 * 4;
    for i in (0..n4).step_by(4) {
        let wv: [float32x4_t; R] = core::array::from_fn(|r| W::ld4(wr[r], i));
        for t in 0..T {
            let xv = ld_f32(xt[t], i);
            for r in 0..R {
                acc[r][t] = vfmaq_f32(acc[r][t], wv[r], xv);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            let mut s = vaddvq_f32(acc[r][t]);
            for j in n4..n {
                s += wr[r][j].f32() * xt[t][j];
            }
            y[(t0 + t) * rows + r0 + r] = s;
        }
    }
}

/// Tiles of 4 rows × 4 tokens (16 accumulators, four weight vectors, one input: 21 of
/// the 32 registers), 1-wide tiles for the row and token tails.
#[target_feature(enable = "neon")]
fn gemm_half_impl<W: Lane4>(w: &[W], x: &[f32], n: usize, y: &mut [f32]) {
    if n == 0 {
        y.fill(0.0);
        return;
    }
    let (rows, toks) = (w.len() / n, x.len() / n);
    let (rf, tf) = (rows / 4 * 4, toks / 4 * 4);
    let mut r0 = 0;
    while r0 < rows {
        let mut t0 = 0;
        while t0 < toks {
            match (r0 < rf, t0 < tf) {
                (true, true) => tile_half::<W, 4, 4>(w, x, n, r0, t0, y, rows),
                (true, false) => tile_half::<W, 4, 1>(w, x, n, r0, t0, y, rows),
                (false, true) => tile_half::<W, 1, 4>(w, x, n, r0, t0, y, rows),
                (false, false) => tile_half::<W, 1, 1>(w, x, n, r0, t0, y, rows),
            }
            t0 += if t0 < tf { 4 } else { 1 };
        }
        r0 += if r0 < rf { 4 } else { 1 };
    }
}

#[target_feature(enable = "neon")]
fn vec_dot_f32_impl(x: &[f32], y: &[f32]) -> f32 {
    dot_impl(x, y)
}

#[target_feature(enable = "neon")]
fn vec_dot_f16_f32_impl(x: &[f16], y: &[f32]) -> f32 {
    dot_impl(x, y)
}

/// `Σ x·y`, four accumulators of four lanes, then the tail in order.
#[inline]
#[target_feature(enable = "neon")]
fn dot_impl<T: Lane4>(x: &[T], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let n = x.len().min(y.len());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = vfmaq_f32(*a, T::ld4(x, i + 4 * k), ld_f32(y, i + 4 * k));
        }
        i += 16;
    }
    while i + 4 <= n {
        acc[0] = vfmaq_f32(acc[0], T::ld4(x, i), ld_f32(y, i));
        i += 4;
    }
    let mut s = vaddvq_f32(vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3])));
    while i < n {
        s += x[i].f32() * y[i];
        i += 1;
    }
    s
}

/// `e^x` for four lanes: the Cephes `expf` scheme of the AVX2 kernel (`x = n·ln 2 + r`,
/// a degree-6 polynomial for `e^r`, `2^n` in the exponent bits), inputs clamped to
/// [−88.37, 88.37]; within a few ulp of libm's `expf`.
#[inline]
#[target_feature(enable = "neon")]
fn exp4(x: float32x4_t) -> float32x4_t {
    let x = vmaxq_f32(vminq_f32(x, vdupq_n_f32(88.37)), vdupq_n_f32(-88.37));
    let n = vrndnq_f32(vmulq_n_f32(x, core::f32::consts::LOG2_E));
    let r = vfmsq_f32(x, n, vdupq_n_f32(0.693_359_4));
    let r = vfmsq_f32(r, n, vdupq_n_f32(-2.121_944_4e-4));
    let mut p = vdupq_n_f32(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = vfmaq_f32(vdupq_n_f32(c), p, r);
    }
    let y = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0)), vmulq_f32(p, r), r);
    let e = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(y, vreinterpretq_f32_s32(e))
}

#[target_feature(enable = "neon")]
fn swiglu_f32_impl(g: &[f32], u: &[f32], out: &mut [f32]) {
    let n = out.len().min(g.len()).min(u.len());
    let full = n / 4 * 4;
    for i in (0..full).step_by(4) {
        let gv = ld_f32(g, i);
        let e = exp4(vnegq_f32(gv));
        let r = vdivq_f32(vmulq_f32(gv, ld_f32(u, i)), vaddq_f32(vdupq_n_f32(1.0), e));
        let o = &mut out[i..i + 4];
        // SAFETY: `o` holds 4 f32; unaligned store.
        unsafe { vst1q_f32(o.as_mut_ptr(), r) };
    }
    super::scalar::swiglu(&g[full..n], &u[full..n], &mut out[full..n]);
}

#[target_feature(enable = "neon")]
fn softmax_f32_impl(x: &mut [f32]) -> (f32, f32) {
    let n = x.len();
    let full = n / 4 * 4;
    let mut mv = vdupq_n_f32(f32::NEG_INFINITY);
    for i in (0..full).step_by(4) {
        mv = vmaxq_f32(mv, ld_f32(x, i));
    }
    let mut max = vmaxvq_f32(mv);
    for &v in &x[full..] {
        max = max.max(v);
    }
    let mb = vdupq_n_f32(max);
    let mut sv = vdupq_n_f32(0.0);
    for i in (0..full).step_by(4) {
        let e = exp4(vsubq_f32(ld_f32(x, i), mb));
        sv = vaddq_f32(sv, e);
        let o = &mut x[i..i + 4];
        // SAFETY: `o` holds 4 f32; unaligned store.
        unsafe { vst1q_f32(o.as_mut_ptr(), e) };
    }
    let mut sum = vaddvq_f32(sv);
    for v in &mut x[full..] {
        *v = crate::math::expf(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for i in (0..full).step_by(4) {
        let r = vmulq_n_f32(ld_f32(x, i), inv);
        let o = &mut x[i..i + 4];
        // SAFETY: `o` holds 4 f32; unaligned store.
        unsafe { vst1q_f32(o.as_mut_ptr(), r) };
    }
    for v in &mut x[full..] {
        *v *= inv;
    }
    (max, sum)
}

/// One head's scores: [`scores_rows4`] with one head, eight slots a step.
#[target_feature(enable = "neon")]
fn attn_scores_impl<T: Lane4>(q: &[f32], k: &[T], stride: usize, scale: f32, out: &mut [f32]) {
    let n = out.len();
    scores_rows4::<T, 1, 8>(q, k, stride, scale, out, n, n);
}

/// One head's value sums: zeroed, then [`attn_values_group_impl`] with one head.
#[target_feature(enable = "neon")]
fn attn_values_impl<T: Lane4>(w: &[f32], v: &[T], stride: usize, out: &mut [f32]) {
    out.fill(0.0);
    let n = w.len();
    attn_values_group_impl(Rows { data: w, n, ld: n }, 1, v, stride, out);
}

/// Scores of `G` heads (rows of `q`) × `S` slots a step (`S` divides 8, `G · S ≤ 8`):
/// one four-lane accumulator per (head, slot), a chain of FMAs over the head dimension
/// (each key load feeds `G` of them), then four accumulators reduced at once by two
/// pairwise adds, each to `(l0 + l1) + (l2 + l3)`. The slots past the last multiple of
/// 8, and head dims that are not a multiple of 4, go through `dot_impl`. So a (head,
/// slot)'s bits depend on neither `G` nor `S` nor how the slots are cut into calls at
/// multiples of 8: the per-head entry is this with `G = 1`.
#[inline]
#[target_feature(enable = "neon")]
fn scores_rows4<T: Lane4, const G: usize, const S: usize>(
    q: &[f32],
    k: &[T],
    stride: usize,
    scale: f32,
    out: &mut [f32],
    n: usize,
    ld: usize,
) {
    let hd = q.len() / G;
    let body = if hd.is_multiple_of(4) { n - n % 8 } else { 0 };
    let mut s = 0;
    while s < body {
        let mut acc = [vdupq_n_f32(0.0); 8];
        for i in (0..hd).step_by(4) {
            let mut kv = [vdupq_n_f32(0.0); S];
            for (j, x) in kv.iter_mut().enumerate() {
                *x = T::ld4(&k[(s + j) * stride..][..hd], i);
            }
            for h in 0..G {
                let qv = ld_f32(&q[h * hd..][..hd], i);
                for (j, &kj) in kv.iter().enumerate() {
                    acc[h * S + j] = vfmaq_f32(acc[h * S + j], kj, qv);
                }
            }
        }
        let mut lanes = [0f32; 8];
        for (c, l) in acc
            .chunks_exact(4)
            .zip(lanes.chunks_exact_mut(4))
            .take((G * S).div_ceil(4))
        {
            let r = vpaddq_f32(vpaddq_f32(c[0], c[1]), vpaddq_f32(c[2], c[3]));
            // SAFETY: `l` holds 4 writable f32; unaligned store.
            unsafe { vst1q_f32(l.as_mut_ptr(), vmulq_n_f32(r, scale)) };
        }
        for h in 0..G {
            for j in 0..S {
                out[h * ld + s + j] = lanes[h * S + j];
            }
        }
        s += S;
    }
    for h in 0..G {
        let qh = &q[h * hd..][..hd];
        for j in s..n {
            out[h * ld + j] = dot_impl(&k[j * stride..][..hd], qh) * scale;
        }
    }
}

/// Grouped scores: the group in runs of up to four heads (two slots a step), three
/// (two), two (four) or one (eight).
#[target_feature(enable = "neon")]
fn attn_scores_group_impl<T: Lane4>(q: &[f32], g: usize, k: &[T], stride: usize, scale: f32, out: RowsMut<'_>) {
    let (hd, n, ld) = (q.len() / g, out.n, out.ld);
    let mut h0 = 0;
    while h0 < g {
        let take = (g - h0).min(4);
        let (qh, oh) = (&q[h0 * hd..][..take * hd], &mut out.data[h0 * ld..]);
        match take {
            4 => scores_rows4::<T, 4, 2>(qh, k, stride, scale, oh, n, ld),
            3 => scores_rows4::<T, 3, 2>(qh, k, stride, scale, oh, n, ld),
            2 => scores_rows4::<T, 2, 4>(qh, k, stride, scale, oh, n, ld),
            _ => scores_rows4::<T, 1, 8>(qh, k, stride, scale, oh, n, ld),
        }
        h0 += take;
    }
}

/// `out` (≤ 64 columns, a multiple of 4: `N` vectors) += the weighted value rows, the
/// accumulators loaded from `out`, kept in registers over all slots, stored once.
#[inline]
#[target_feature(enable = "neon")]
fn attn_values_cols_add<T: Lane4, const N: usize>(w: &[f32], v: &[T], stride: usize, c0: usize, out: &mut [f32]) {
    let mut acc = [vdupq_n_f32(0.0); N];
    for (j, a) in acc.iter_mut().enumerate() {
        *a = ld_f32(out, c0 + 4 * j);
    }
    for (s, &ws) in w.iter().enumerate() {
        let row = &v[s * stride + c0..][..4 * N];
        for (j, a) in acc.iter_mut().enumerate() {
            *a = vfmaq_n_f32(*a, T::ld4(row, 4 * j), ws);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        let oj = &mut out[c0 + 4 * j..c0 + 4 * j + 4];
        // SAFETY: `oj` holds 4 f32; unaligned store.
        unsafe { vst1q_f32(oj.as_mut_ptr(), *a) };
    }
}

/// Grouped value sums, added to `out`: head by head over the same value rows (a
/// decode block's rows stay in L1 across the group), each one FMA chain per column
/// continued from `out` (the per-head entry is this from zero, with one head).
#[target_feature(enable = "neon")]
fn attn_values_group_impl<T: Lane4>(w: Rows<'_>, g: usize, v: &[T], stride: usize, out: &mut [f32]) {
    let hd = out.len() / g;
    for (h, oh) in out.chunks_exact_mut(hd).enumerate() {
        let wh = &w.data[h * w.ld..][..w.n];
        if !hd.is_multiple_of(16) {
            for (s, &ws) in wh.iter().enumerate() {
                for (o, x) in oh.iter_mut().zip(&v[s * stride..][..hd]) {
                    *o += ws * x.f32();
                }
            }
            continue;
        }
        let mut c0 = 0;
        while c0 < hd {
            match ((hd - c0) / 16).min(4) {
                4 => attn_values_cols_add::<T, 16>(wh, v, stride, c0, oh),
                3 => attn_values_cols_add::<T, 12>(wh, v, stride, c0, oh),
                2 => attn_values_cols_add::<T, 8>(wh, v, stride, c0, oh),
                _ => attn_values_cols_add::<T, 4>(wh, v, stride, c0, oh),
            }
            c0 += 64;
        }
    }
}

#[target_feature(enable = "neon")]
fn vec_dot_bf16_f32_impl(x: &[bf16], y: &[f32]) -> f32 {
    debug_assert_eq!(x.len(), y.len());
    let n = x.len().min(y.len());
    let mut acc = [vdupq_n_f32(0.0); 2];
    let mut i = 0;
    while i + 8 <= n {
        // bf16 → f32 is a 16-bit left shift of the bits (exact).
        let b = ld_bf16(x, i);
        let lo = vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(b), 16));
        let hi = vreinterpretq_f32_u32(vshll_high_n_u16(b, 16));
        acc[0] = vfmaq_f32(acc[0], lo, ld_f32(y, i));
        acc[1] = vfmaq_f32(acc[1], hi, ld_f32(y, i + 4));
        i += 8;
    }
    let mut s = vaddvq_f32(vaddq_f32(acc[0], acc[1]));
    while i < n {
        s += x[i].to_f32() * y[i];
        i += 1;
    }
    s
}
