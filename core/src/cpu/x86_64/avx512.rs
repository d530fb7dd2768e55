//! AVX-512 kernels (`Isa::Avx512`): F + BW (+ the AVX2/FMA/F16C every AVX-512 CPU has),
//! and VNNI (`vpdpbusd` / `vpdpwssd`) for the integer dot products where the CPU has it.
//! Q4 dots take two 32-element blocks per 512-bit vector; an odd last block goes
//! through the 256-bit AVX2 helpers. The Q8_0·Q8_0 dot is the AVX2 kernel (measured
//! faster on this class of core; see docs/perf-notes.md), and so are the multi-row
//! `gemv_*` entries (AVX2's four-row kernels).

use core::arch::x86_64::*;

use half::{bf16, f16};

use super::avx2::{nibbles, sum_q4_0, sum_q4_1};
use super::{hsum_ps, load16, load32, scale_prod, scale_prod2};
use crate::cpu::kernels::{F16Act, Isa, Kernels};
use crate::quant::{self, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// True when this CPU has everything the base AVX-512 table uses.
fn has_base() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// The AVX-512 table (VNNI dot products when `avx512vnni` is present), or `None`.
pub(crate) fn kernels() -> Option<Kernels> {
    if !has_base() {
        return None;
    }
    let vnni = is_x86_feature_detected!("avx512vnni");
    let vl = is_x86_feature_detected!("avx512vl");
    let vnni_vl = vnni && vl;
    Some(Kernels {
        isa: Isa::Avx512,
        quantize_row_q8_0,
        quantize_row_q8_1,
        vec_dot_q4_0_q8_0: if vnni {
            vec_dot_q4_0_q8_0_vnni
        } else {
            vec_dot_q4_0_q8_0
        },
        vec_dot_q4_1_q8_1: if vnni {
            vec_dot_q4_1_q8_1_vnni
        } else {
            vec_dot_q4_1_q8_1
        },
        // Measured: widening a Q8_0 block to 32 i16 in a zmm is a port-5 shuffle per
        // block and ran slower (11 GB/s) than the AVX2 kernel (16 GB/s); use that.
        vec_dot_q8_0_q8_0: super::avx2::vec_dot_q8_0_q8_0,
        quantize_row_q8_k,
        vec_dot_q5_0_q8_0: super::avx2_k::vec_dot_q5_0_q8_0,
        vec_dot_q5_1_q8_1: super::avx2_k::vec_dot_q5_1_q8_1,
        vec_dot_q4_k_q8_k: super::avx2_k::vec_dot_q4_k_q8_k,
        vec_dot_q5_k_q8_k: super::avx2_k::vec_dot_q5_k_q8_k,
        vec_dot_q6_k_q8_k: super::avx2_k::vec_dot_q6_k_q8_k,
        vec_dot_f16_f32,
        vec_dot_bf16_f32,
        vec_dot_f32,
        attn_scores: super::avx2::attn_scores,
        attn_values: super::avx2::attn_values,
        attn_scores_f16: super::avx2::attn_scores_f16,
        attn_values_f16: super::avx2::attn_values_f16,
        attn_scores_q8_0: if vnni_vl {
            attn_scores_q8_0_vnni
        } else {
            super::avx2::attn_scores_q8_0
        },
        attn_values_q8_0,
        attn_group_f32: Some(if vl {
            super::avx2::ATTN_GROUP_F32_VL
        } else {
            super::avx2::ATTN_GROUP_F32
        }),
        attn_group_f16: Some(if vl {
            super::avx2::ATTN_GROUP_F16_VL
        } else {
            super::avx2::ATTN_GROUP_F16
        }),
        softmax_f32: super::avx2::softmax_f32,
        swiglu_f32: super::avx2::swiglu_f32,
        // Measured: the AVX2 four-row kernels beat row loops over the 512-bit dots on
        // this class of core (see docs/perf-notes.md); the table reuses them.
        gemv_q4_0_q8_0: super::avx2::gemv_q4_0_q8_0,
        gemv_q4_1_q8_1: super::avx2::gemv_q4_1_q8_1,
        gemv_q8_0_q8_0: super::avx2::gemv_q8_0_q8_0,
        gemm_f16_f32: Some(if vl { gemm_f16_f32_z } else { super::avx2::gemm_f16_f32 }),
        gemm_bf16_bf16: if is_x86_feature_detected!("avx512bf16") {
            Some(gemm_bf16_bf16)
        } else {
            None
        },
        vec_dot_bf16_bf16: if vl && is_x86_feature_detected!("avx512bf16") {
            Some(vec_dot_bf16_bf16)
        } else {
            None
        },
        f16_act: Some(F16Act {
            round: super::avx2::round_row_f16,
            dot: vec_dot_f16_f16,
        }),
        gemm_bf16_f32: Some(if vl {
            super::avx2::gemm_bf16_f32_vl
        } else {
            super::avx2::gemm_bf16_f32
        }),
        // VNNI tiles, two blocks per zmm (measured: 4 × 4 zmm beat 4 × 4 ymm by ~25%
        // end to end in prefill; see docs/perf-notes.md).
        gemm_q4_0_q8_0: if vnni_vl {
            gemm_q4_0_q8_0_vnni
        } else {
            super::avx2::gemm_q4_0_q8_0
        },
        gemm_q4_0x8: if vnni_vl {
            super::repack::gemm_q4_0x8_vnni
        } else {
            super::repack::gemm_q4_0x8_avx2
        },
        gemm_q4_1x8: if vnni_vl {
            super::repack::gemm_q4_1x8_vnni
        } else {
            super::repack::gemm_q4_1x8_avx2
        },
        gemm_q8_0x8: if vnni_vl {
            super::repack::gemm_q8_0x8_vnni
        } else {
            super::repack::gemm_q8_0x8_avx2
        },
        gemm_q5_0x8: if vnni_vl {
            super::repack::gemm_q5_0x8_vnni
        } else {
            super::repack::gemm_q5_0x8_avx2
        },
        gemm_q5_1x8: if vnni_vl {
            super::repack::gemm_q5_1x8_vnni
        } else {
            super::repack::gemm_q5_1x8_avx2
        },
        gemm_q5_kx8: if vnni_vl {
            super::repack::gemm_q5_kx8_vnni
        } else {
            super::repack::gemm_q5_kx8_avx2
        },
        gemm_q5_kx8_t16: if vnni_vl {
            Some(super::k16::gemm_q5_kx8_t16)
        } else {
            None
        },
        gemm_q4_kx8_t16: if vnni_vl {
            Some(super::k16::gemm_q4_kx8_t16)
        } else {
            None
        },
        gemm_q6_kx8_t16: if vnni_vl {
            Some(super::k16::gemm_q6_kx8_t16)
        } else {
            None
        },
        gemm_q4_kx8: if vnni_vl {
            super::repack::gemm_q4_kx8_vnni
        } else {
            super::repack::gemm_q4_kx8_avx2
        },
        gemm_q6_kx8: if vnni_vl {
            super::repack::gemm_q6_kx8_vnni
        } else {
            super::repack::gemm_q6_kx8_avx2
        },
        x8_simd: true,
        x8_kq_simd: true,
    })
}

// The safe entry points below are reachable only through the table returned by
// `kernels()`, which verified the base features (and VNNI for the `_vnni` ones).

fn quantize_row_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    // SAFETY: AVX-512 F/BW + AVX2/FMA/F16C verified by `kernels()`.
    unsafe { quantize_row_q8_0_impl(x, y) }
}
fn quantize_row_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    // SAFETY: as above.
    unsafe { quantize_row_q8_1_impl(x, y) }
}
fn quantize_row_q8_k(x: &[f32], y: &mut [quant::BlockQ8_K]) {
    // SAFETY: as above.
    unsafe { quantize_row_q8_k_impl(x, y) }
}
fn vec_dot_q4_0_q8_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_q4_0_q8_0_bw(x, y) }
}
fn vec_dot_q4_0_q8_0_vnni(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    // SAFETY: as above, and `kernels()` puts this fn in the table only with avx512vnni.
    unsafe { vec_dot_q4_0_q8_0_vn(x, y) }
}
fn gemm_q4_0_q8_0_vnni(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, y: &mut [f32]) {
    // SAFETY: as above, and `kernels()` puts this fn in the table only with avx512vnni
    // and avx512vl.
    unsafe { gemm_q4_0_q8_0_z(w, x, nb, y) }
}
fn vec_dot_q4_1_q8_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_q4_1_q8_1_bw(x, y) }
}
fn vec_dot_q4_1_q8_1_vnni(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    // SAFETY: as above, and `kernels()` puts this fn in the table only with avx512vnni.
    unsafe { vec_dot_q4_1_q8_1_vn(x, y) }
}
fn attn_scores_q8_0_vnni(q: &[f32], k: &[BlockQ8_0], stride: usize, scale: f32, out: &mut [f32]) {
    // SAFETY: as above, and `kernels()` puts this fn in the table only with avx512vnni
    // and avx512vl.
    unsafe { attn_scores_q8_0_vn(q, k, stride, scale, out) }
}
fn attn_values_q8_0(w: &[f32], v: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
    // SAFETY: as above.
    unsafe { attn_values_q8_0_impl(w, v, stride, out) }
}
fn vec_dot_f16_f32(x: &[f16], y: &[f32]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_f16_f32_impl(x, y) }
}
fn vec_dot_bf16_f32(x: &[bf16], y: &[f32]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_bf16_f32_impl(x, y) }
}
fn vec_dot_f32(x: &[f32], y: &[f32]) -> f32 {
    // SAFETY: as above.
    unsafe { vec_dot_f32_impl(x, y) }
}

/// Loads 16 f32 from `x[i..i + 16]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn load_ps16(x: &[f32], i: usize) -> __m512 {
    let s = &x[i..i + 16];
    // SAFETY: `s` is 16 readable f32 (bounds checked above); unaligned load. (Masked
    // form: an LLVM intrinsic, free of `read_unaligned`'s debug checks; see `super`.)
    unsafe { _mm512_maskz_loadu_ps(0xffff, s.as_ptr()) }
}

/// Loads 16 u16 (f16/bf16 bits) from `x[i..i + 16]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn load_u16x16<T: bytemuck::Pod>(x: &[T], i: usize) -> __m256i {
    debug_assert_eq!(core::mem::size_of::<T>(), 2);
    let s = &x[i..i + 16];
    // SAFETY: `s` is 16 readable 2-byte values (bounds checked above); unaligned load.
    unsafe { _mm256_lddqu_si256(s.as_ptr().cast()) }
}

/// Stores 16 bytes into `b[..16]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn store16(b: &mut [i8], v: __m128i) {
    let s = &mut b[..16];
    // SAFETY: `s` is 16 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(s.as_mut_ptr().cast(), v) }
}

/// `roundf` (half away from zero) of 16 lanes, as `super::round_away`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn round_away16(v: __m512) -> __m512 {
    let t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    let frac = _mm512_sub_ps(v, t);
    let one = _mm512_set1_ps(1.0);
    let up = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5), _CMP_GE_OQ);
    let dn = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(-0.5), _CMP_LE_OQ);
    let r = _mm512_mask_add_ps(t, up, t, one);
    _mm512_mask_sub_ps(r, dn, r, one)
}

/// One 32-float block: scale, bytes written into `qs`, and their sum; `None` as in
/// `super::q8_block`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn q8_block16(xb: &[f32], qs: &mut [i8; 32]) -> Option<(f32, i32)> {
    let v0 = load_ps16(xb, 0);
    let v1 = load_ps16(xb, 16);
    let nan = _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
    let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    let (d, id) = super::q8_scale(amax, nan != 0)?;
    let idv = _mm512_set1_ps(id);
    let i0 = _mm512_cvttps_epi32(round_away16(_mm512_mul_ps(v0, idv)));
    let i1 = _mm512_cvttps_epi32(round_away16(_mm512_mul_ps(v1, idv)));
    // Integral values in [-127, 127]: the saturating narrowing is exact.
    store16(&mut qs[..16], _mm512_cvtsepi32_epi8(i0));
    store16(&mut qs[16..], _mm512_cvtsepi32_epi8(i1));
    Some((d, _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1))))
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn quantize_row_q8_0_impl(x: &[f32], y: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), y.len() * 32);
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        match q8_block16(xb, &mut yb.qs) {
            Some((d, _)) => yb.d = f16::from_f32(d),
            None => quant::quantize_row_q8_0(xb, core::slice::from_mut(yb)),
        }
    }
}

/// ggml's `quantize_row_q8_K_ref` in lanes, byte for byte: the first element of largest
/// magnitude gives `max`, `iscale = −127 / max`, quants `iscale · x` rounded to nearest
/// even (`vcvtps2dq` under the default rounding mode; the scalar's magic-number
/// `nearest_int` rounds the same for |v| < 2^22, and here |v| ≤ 127 + ε), capped at 127,
/// `bsums` the 16-element sums. A block with a non-finite input or a non-finite `iscale`
/// (a subnormal `max`) goes to the scalar quantizer.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn quantize_row_q8_k_impl(x: &[f32], y: &mut [quant::BlockQ8_K]) {
    debug_assert_eq!(x.len(), y.len() * crate::dtype::QK_K);
    for (xb, yb) in x.chunks_exact(crate::dtype::QK_K).zip(y.iter_mut()) {
        // SAFETY: 256 readable f32 (the chunk); unaligned loads.
        let v: [__m512; 16] = core::array::from_fn(|i| unsafe { _mm512_loadu_ps(xb.as_ptr().add(16 * i)) });
        let inf = _mm512_set1_ps(f32::INFINITY);
        let (mut amax, mut bad) = (_mm512_setzero_ps(), 0u16);
        for vi in &v {
            let a = _mm512_abs_ps(*vi);
            bad |= _mm512_cmp_ps_mask(a, inf, _CMP_NLT_UQ); // ±inf or NaN
            amax = _mm512_max_ps(amax, a);
        }
        let am = _mm512_reduce_max_ps(amax);
        let first = (0..16).find_map(|i| {
            let m = _mm512_cmp_ps_mask(_mm512_abs_ps(v[i]), _mm512_set1_ps(am), _CMP_EQ_OQ);
            (m != 0).then(|| 16 * i + m.trailing_zeros() as usize)
        });
        let iscale = match first {
            Some(i) if bad == 0 && am > 0.0 => -127.0 / xb[i],
            _ => f32::NAN,
        };
        if !iscale.is_finite() {
            quant::k::quantize_row_q8_k(xb, core::slice::from_mut(yb));
            continue;
        }
        let (is, cap) = (_mm512_set1_ps(iscale), _mm512_set1_epi32(127));
        for (i, vi) in v.iter().enumerate() {
            let q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(is, *vi)), cap);
            store16(&mut yb.qs[16 * i..], _mm512_cvtepi32_epi8(q));
            yb.bsums[i] = _mm512_reduce_add_epi32(q) as i16;
        }
        yb.d = 1.0 / iscale;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn quantize_row_q8_1_impl(x: &[f32], y: &mut [BlockQ8_1]) {
    debug_assert_eq!(x.len(), y.len() * 32);
    for (xb, yb) in x.chunks_exact(32).zip(y.iter_mut()) {
        match q8_block16(xb, &mut yb.qs) {
            Some((d, sum)) => {
                yb.d = f16::from_f32(d);
                yb.s = f16::from_f32(sum as f32 * d);
            }
            None => quant::quantize_row_q8_1(xb, core::slice::from_mut(yb)),
        }
    }
}

/// The nibbles of two Q4 blocks as 64 unsigned bytes: block `a` in the low 256 bits,
/// block `b` in the high, each in element order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn nibbles2(a: &[u8; 16], b: &[u8; 16]) -> __m512i {
    let q = _mm256_set_m128i(load16(b), load16(a));
    let m4 = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(q, m4); // [a lo, b lo]
    let hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4); // [a hi, b hi]
    let z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
    _mm512_shuffle_i64x2(z, z, 0b11_01_10_00) // [a lo, a hi, b lo, b hi]
}

/// Two 32-byte blocks side by side.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn bytes2(a: &[i8; 32], b: &[i8; 32]) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(load32(a)), load32(b), 1)
}

/// 16 lanes: lane 0 of `p` in the low eight, lane 2 in the high eight (see
/// `scale_prod2`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn scales2(p: __m128) -> __m512 {
    let idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2);
    _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(p))
}

// Integer block sums, 16 i32 lanes. BW: `maddubs` + `madd` (exact: see avx2::sum_q4_0).
// VNNI: `vpdpbusd` sums four u8·i8 products into i32 directly (no i16 step at all).

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn sum2_q4_0_bw(xu: __m512i, y: __m512i) -> __m512i {
    let p = _mm512_sub_epi16(
        _mm512_maddubs_epi16(xu, y),
        _mm512_maddubs_epi16(_mm512_set1_epi8(8), y),
    );
    _mm512_madd_epi16(p, _mm512_set1_epi16(1))
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn sum2_q4_0_vn(xu: __m512i, y: __m512i) -> __m512i {
    let z = _mm512_setzero_si512();
    _mm512_sub_epi32(
        _mm512_dpbusd_epi32(z, xu, y),
        _mm512_dpbusd_epi32(z, _mm512_set1_epi8(8), y),
    )
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn sum2_q4_1_bw(xu: __m512i, y: __m512i) -> __m512i {
    _mm512_madd_epi16(_mm512_maddubs_epi16(xu, y), _mm512_set1_epi16(1))
}
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
fn sum2_q4_1_vn(xu: __m512i, y: __m512i) -> __m512i {
    _mm512_dpbusd_epi32(_mm512_setzero_si512(), xu, y)
}
/// Q4_0 · Q8_0, two blocks per step; `$sum2` is the 512-bit integer block-pair sum.
macro_rules! dot_q4_0 {
    ($name:ident, $features:literal, $sum2:ident) => {
        #[target_feature(enable = $features)]
        fn $name(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
            debug_assert_eq!(x.len(), y.len());
            let mut acc = _mm512_setzero_ps();
            let (xp, yp) = (x.chunks_exact(2), y.chunks_exact(2));
            let (xr, yr) = (xp.remainder(), yp.remainder());
            for (bx, by) in xp.zip(yp) {
                let s = $sum2(nibbles2(&bx[0].qs, &bx[1].qs), bytes2(&by[0].qs, &by[1].qs));
                let d = scales2(scale_prod2(bx[0].d, by[0].d, bx[1].d, by[1].d));
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc);
            }
            let mut sum = _mm512_reduce_add_ps(acc);
            if let (Some(bx), Some(by)) = (xr.first(), yr.first()) {
                let s = sum_q4_0(nibbles(&bx.qs), load32(&by.qs));
                let d = _mm256_set1_ps(scale_prod(bx.d, by.d));
                sum += hsum_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s), d));
            }
            sum
        }
    };
}
dot_q4_0!(vec_dot_q4_0_q8_0_bw, "avx512f,avx512bw,avx2,fma,f16c", sum2_q4_0_bw);
dot_q4_0!(
    vec_dot_q4_0_q8_0_vn,
    "avx512f,avx512bw,avx512vnni,avx2,fma,f16c",
    sum2_q4_0_vn
);

/// Q4_1 · Q8_1, two blocks per step; the `m·s` terms add up in a scalar accumulator.
macro_rules! dot_q4_1 {
    ($name:ident, $features:literal, $sum2:ident) => {
        #[target_feature(enable = $features)]
        fn $name(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
            debug_assert_eq!(x.len(), y.len());
            let mut acc = _mm512_setzero_ps();
            let mut msum = _mm_setzero_ps(); // m·s terms in lanes 0 and 2
            let (xp, yp) = (x.chunks_exact(2), y.chunks_exact(2));
            let (xr, yr) = (xp.remainder(), yp.remainder());
            for (bx, by) in xp.zip(yp) {
                let s = $sum2(nibbles2(&bx[0].qs, &bx[1].qs), bytes2(&by[0].qs, &by[1].qs));
                let d = scales2(scale_prod2(bx[0].d, by[0].d, bx[1].d, by[1].d));
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), d, acc);
                msum = _mm_add_ps(msum, scale_prod2(bx[0].m, by[0].s, bx[1].m, by[1].s));
            }
            let mut sum = _mm512_reduce_add_ps(acc);
            let mut summs = _mm_cvtss_f32(msum) + _mm_cvtss_f32(_mm_movehl_ps(msum, msum));
            if let (Some(bx), Some(by)) = (xr.first(), yr.first()) {
                let s = sum_q4_1(nibbles(&bx.qs), load32(&by.qs));
                let d = _mm256_set1_ps(scale_prod(bx.d, by.d));
                sum += hsum_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s), d));
                summs += scale_prod(bx.m, by.s);
            }
            sum + summs
        }
    };
}
dot_q4_1!(vec_dot_q4_1_q8_1_bw, "avx512f,avx512bw,avx2,fma,f16c", sum2_q4_1_bw);
dot_q4_1!(
    vec_dot_q4_1_q8_1_vn,
    "avx512f,avx512bw,avx512vnni,avx2,fma,f16c",
    sum2_q4_1_vn
);

/// Float dot products: 64 elements per step in four accumulators, then 16 at a time,
/// then a scalar tail. `|i| load` gives elements `i..i+16` as f32.
macro_rules! float_dot16 {
    ($x:expr, $y:expr, |$i:ident| $load:expr, |$j:ident| $tail:expr) => {{
        let (x, y) = ($x, $y);
        debug_assert_eq!(x.len(), y.len());
        let n = x.len().min(y.len());
        let mut acc = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i + 64 <= n {
            for (k, a) in acc.iter_mut().enumerate() {
                let $i = i + 16 * k;
                *a = _mm512_fmadd_ps($load, load_ps16(y, $i), *a);
            }
            i += 64;
        }
        while i + 16 <= n {
            let $i = i;
            acc[0] = _mm512_fmadd_ps($load, load_ps16(y, i), acc[0]);
            i += 16;
        }
        let mut s = _mm512_reduce_add_ps(_mm512_add_ps(
            _mm512_add_ps(acc[0], acc[1]),
            _mm512_add_ps(acc[2], acc[3]),
        ));
        while i < n {
            let $j = i;
            s += $tail * y[i];
            i += 1;
        }
        s
    }};
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn vec_dot_f32_impl(x: &[f32], y: &[f32]) -> f32 {
    float_dot16!(x, y, |i| load_ps16(x, i), |i| x[i])
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn vec_dot_f16_f32_impl(x: &[f16], y: &[f32]) -> f32 {
    float_dot16!(x, y, |i| _mm512_cvtph_ps(load_u16x16(x, i)), |i| x[i].to_f32())
}

fn vec_dot_f16_f16(x: &[f16], y: &[f16]) -> f32 {
    // SAFETY: only handed out by `kernels()` after `has_base()` (AVX-512 F/BW, F16C).
    unsafe { vec_dot_f16_f16_impl(x, y) }
}

/// `Σ x·y` of two f16 rows, both widened from memory (`vcvtph2ps` zmm), four chains of
/// sixteen: `ggml_vec_dot_f16`'s arithmetic.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn vec_dot_f16_f16_impl(x: &[f16], y: &[f16]) -> f32 {
    let n = x.len().min(y.len());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            let j = i + 16 * k;
            *a = _mm512_fmadd_ps(
                _mm512_cvtph_ps(load_u16x16(x, j)),
                _mm512_cvtph_ps(load_u16x16(y, j)),
                *a,
            );
        }
        i += 64;
    }
    while i + 16 <= n {
        acc[0] = _mm512_fmadd_ps(
            _mm512_cvtph_ps(load_u16x16(x, i)),
            _mm512_cvtph_ps(load_u16x16(y, i)),
            acc[0],
        );
        i += 16;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ));
    for (a, b) in x[i..n].iter().zip(&y[i..n]) {
        s += a.to_f32() * b.to_f32();
    }
    s
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn vec_dot_bf16_f32_impl(x: &[bf16], y: &[f32]) -> f32 {
    float_dot16!(
        x,
        y,
        |i| _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load_u16x16(x, i)), 16)),
        |i| x[i].to_f32()
    )
}

// GEMM tiles with VNNI: `R` weight rows × `T` tokens per pass over the blocks (see
// `avx2::tile_q4_0`), two blocks per 512-bit vector: lanes 0..8 hold block `b`, lanes
// 8..16 block `b + 1`; an odd last block runs with its upper half zero (nibbles,
// activations and scales all 0, so those lanes add +0). Σ(x − 8)·y is `dpbusd` of the
// unsigned nibbles and y, started from −8·Σy (one `dpbusd` per token and block pair,
// shared by the `R` rows); every step is exact i32 arithmetic (|Σ| ≤ 32·15·128 +
// 8·32·128 per block). Per (row, token) and block the i32 sum and the f32 scale
// product (`fw · fx`, one multiply of exactly converted values) are the scalar twin's;
// only the accumulation order differs. The 16 accumulators of a 4 × 4 tile fit the 32
// zmm registers.

/// `[f32(a[i]) ×8 | f32(b[i]) ×8]` for each `i < N ≤ 4` (exact conversions).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scales_z<const N: usize>(a: [f16; N], b: [f16; N]) -> [__m512; N] {
    let (mut lo, mut hi) = (0i64, 0i64);
    for i in 0..N {
        lo |= (a[i].to_bits() as i64) << (16 * i);
        hi |= (b[i].to_bits() as i64) << (16 * i);
    }
    let v = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_set_epi64x(hi, lo)));
    core::array::from_fn(|i| {
        let i = i as i32;
        let idx = _mm512_setr_epi32(
            i,
            i,
            i,
            i,
            i,
            i,
            i,
            i,
            4 + i,
            4 + i,
            4 + i,
            4 + i,
            4 + i,
            4 + i,
            4 + i,
            4 + i,
        );
        _mm512_permutexvar_ps(idx, v)
    })
}

/// The nibbles of two Q4 blocks as `[lo(q0), hi(q0), lo(q1), hi(q1)]` (16 bytes each,
/// element order of two consecutive Q8 blocks).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_z(q0: &[u8; 16], q1: &[u8; 16]) -> __m512i {
    let q = _mm256_set_m128i(load16(q1), load16(q0));
    let z = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(q));
    let s4 = 0x0004_0004_0004_0004;
    let sh = _mm512_srlv_epi16(z, _mm512_setr_epi64(0, 0, s4, s4, 0, 0, s4, s4));
    _mm512_and_si512(sh, _mm512_set1_epi8(0x0f))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn step_z<const R: usize, const T: usize>(
    xu: [__m512i; R],
    yv: [__m512i; T],
    fw: [__m512; R],
    fx: [__m512; T],
    acc: &mut [[__m512; T]; R],
) {
    let z = _mm512_setzero_si512();
    // −8·Σy per token (exact i32), the start of each (x − 8)·y sum.
    let neg8: [__m512i; T] =
        core::array::from_fn(|t| _mm512_sub_epi32(z, _mm512_dpbusd_epi32(z, _mm512_set1_epi8(8), yv[t])));
    for r in 0..R {
        for t in 0..T {
            let s = _mm512_dpbusd_epi32(neg8[t], xu[r], yv[t]);
            acc[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(fw[r], fx[t]), acc[r][t]);
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
fn tile_q4_0_z<const R: usize, const T: usize>(
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
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut b = 0;
    while b + 2 <= nb {
        let fw = scales_z(
            core::array::from_fn(|r| wr[r][b].d),
            core::array::from_fn(|r| wr[r][b + 1].d),
        );
        let fx = scales_z(
            core::array::from_fn(|t| xt[t][b].d),
            core::array::from_fn(|t| xt[t][b + 1].d),
        );
        let xu = core::array::from_fn(|r| nibbles_z(&wr[r][b].qs, &wr[r][b + 1].qs));
        let yv = core::array::from_fn(|t| {
            _mm512_inserti64x4(
                _mm512_castsi256_si512(load32(&xt[t][b].qs)),
                load32(&xt[t][b + 1].qs),
                1,
            )
        });
        step_z(xu, yv, fw, fx, &mut acc);
        b += 2;
    }
    if b < nb {
        let zero = f16::from_bits(0);
        let fw = scales_z(core::array::from_fn(|r| wr[r][b].d), [zero; R]);
        let fx = scales_z(core::array::from_fn(|t| xt[t][b].d), [zero; T]);
        let xu = core::array::from_fn(|r| nibbles_z(&wr[r][b].qs, &[0; 16]));
        let yv = core::array::from_fn(|t| _mm512_zextsi256_si512(load32(&xt[t][b].qs)));
        step_z(xu, yv, fw, fx, &mut acc);
    }
    for r in 0..R {
        for t in 0..T {
            let a = acc[r][t];
            let h = _mm256_add_ps(
                _mm512_castps512_ps256(a),
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)),
            );
            y[(t0 + t) * rows + r0 + r] = hsum_ps(h);
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn gemm_q4_0_q8_0_z(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, y: &mut [f32]) {
    gemm_tiles!(tile_q4_0_z::<4, 4>(w, x, nb, y))
}

/// Scores over a Q8_0 cache with VNNI: the query head quantized once (byte-identical to
/// the scalar quantizer); per slot and block `vpdpbusd(|k|, sign(q, k))` gives the exact
/// i32 sums `Σ k·q` in 8 lanes (|k| ≤ 128 as u8, sign(q, k) in ±127: no saturation),
/// then `acc += sum · (d_k · d_q)` and one horizontal sum, as the AVX2 kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn attn_scores_q8_0_vn(q: &[f32], k: &[BlockQ8_0], stride: usize, scale: f32, out: &mut [f32]) {
    const MB: usize = crate::cpu::scalar::Q8_MAX_HEAD_DIM / 32;
    let nb = q.len() / 32;
    let zero = BlockQ8_0 {
        d: f16::ZERO,
        qs: [0; 32],
    };
    let mut qq = [zero; MB];
    quantize_row_q8_0_impl(q, &mut qq[..nb]);
    let mut qv = [_mm256_setzero_si256(); MB];
    for (v, b) in qv.iter_mut().zip(&qq[..nb]) {
        *v = load32(&b.qs);
    }
    let z = _mm256_setzero_si256();
    for (s, o) in out.iter_mut().enumerate() {
        let row = &k[s * stride..][..nb];
        let mut acc = _mm256_setzero_ps();
        for ((kb, qb), &qx) in row.iter().zip(&qq[..nb]).zip(&qv) {
            let kx = load32(&kb.qs);
            let si = _mm256_dpbusd_epi32(z, _mm256_sign_epi8(kx, kx), _mm256_sign_epi8(qx, kx));
            let d = _mm256_set1_ps(scale_prod(kb.d, qb.d));
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), d, acc);
        }
        *o = hsum_ps(acc) * scale;
    }
}

/// Values over a Q8_0 cache: `NB` blocks (32·NB columns from block `b0`) in registers,
/// 16 lanes per half block (`vpmovsxbd` widens 16 bytes at once); per slot and block
/// `a = w·d`, `acc += a · q`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
fn attn_values_q8_0_cols<const NB: usize>(w: &[f32], v: &[BlockQ8_0], stride: usize, b0: usize, out: &mut [f32]) {
    let mut acc = [[_mm512_setzero_ps(); 2]; NB];
    for (s, &ws) in w.iter().enumerate() {
        let row = &v[s * stride + b0..][..NB];
        for (a, blk) in acc.iter_mut().zip(row) {
            let d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(blk.d.to_bits() as i32)));
            let av = _mm512_set1_ps(ws * d);
            let (lo, hi) = (super::load16_i8(&blk.qs[..16]), super::load16_i8(&blk.qs[16..]));
            a[0] = _mm512_fmadd_ps(av, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), a[0]);
            a[1] = _mm512_fmadd_ps(av, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), a[1]);
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (j, x) in a.iter().enumerate() {
            let o = &mut out[32 * (b0 + i) + 16 * j..][..16];
            // SAFETY: `o` is 16 writable f32; unaligned store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *x) };
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
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

fn gemm_bf16_bf16(w: &[bf16], x: &[bf16], n: usize, y: &mut [f32]) {
    // SAFETY: only handed out by `kernels()` after it found AVX512-BF16 besides the
    // AVX-512 F/BW base.
    unsafe { gemm_bf16_bf16_impl(w, x, n, y) }
}

/// A zmm GEMM tile: `R` (≤ 4) weight rows × `T` activation rows of `n` elements,
/// `$lanes` at a time through `$step`; the last `n % $lanes` elements go through
/// zero-masked loads (zero lanes add nothing). Each token's `R` sums leave through one
/// transposing reduction (`hsum4`): at SmolLM2's 576-element rows a BF16 tile runs only
/// 18 steps, and sixteen separate horizontal sums took 18 % of the GEMM's profile (see
/// docs/perf-notes.md). Raw-pointer loads after slicing the tile's rows once (bounds
/// checks in the loop put the accumulators on the stack, as in `avx2::tile_half`); the
/// next row group's weights are prefetched meanwhile (`NextRows`).
macro_rules! tile_z {
    ($(#[$m:meta])* $name:ident, $step:ident, $feat:literal, $w:ty, $x:ty, $lanes:literal) => {
        $(#[$m])*
        #[inline]
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        fn $name<const R: usize, const T: usize>(
            w: &[$w],
            x: &[$x],
            n: usize,
            r0: usize,
            t0: usize,
            y: &mut [f32],
            rows: usize,
        ) {
            const { assert!(R >= 1 && R <= 4 && T >= 1) };
            let wp = w[r0 * n..(r0 + R) * n].as_ptr();
            let xp = x[t0 * n..(t0 + T) * n].as_ptr();
            let mut acc = [[_mm512_setzero_ps(); R]; T];
            let mut pf = super::NextRows::new::<_, R, T>(wp, n, x.len() / n, t0, n / $lanes);
            let body = n / $lanes * $lanes;
            let mut i = 0;
            while i < body {
                pf.step();
                // SAFETY: the tile's `R` weight rows and `T` activation rows are `n`
                // elements each from `wp` / `xp` (sliced above), and `i + $lanes ≤ n`.
                unsafe { $step::<R, T, false>(&mut acc, wp.add(i), xp.add(i), n, 0) };
                i += $lanes;
            }
            if i < n {
                // SAFETY: as above; the mask keeps the loads to the `n - i` elements left
                // in each row.
                unsafe { $step::<R, T, true>(&mut acc, wp.add(i), xp.add(i), n, (1u32 << (n - i)) - 1) };
            }
            store_sums::<R, T>(&acc, &mut y[t0 * rows + r0..], rows);
        }
    };
}

tile_z!(
    /// BF16 weights × activations rounded to bf16: `vdpbf16ps` adds the two products of
    /// each pair of bf16 lanes (exact, formed in f32) to an f32 lane.
    tile_bf16, step_bf16, "avx512f,avx512bw,avx512bf16", bf16, bf16, 32
);
tile_z!(
    /// F16 weights widened sixteen at a time (`vcvtph2ps`, exact) × f32 activations.
    tile_f16, step_f16, "avx512f,avx512bw,avx512vl,f16c", f16, f32, 16
);

/// One 32-element step of `tile_bf16`: row `r` of the weights at `w + r·n`, token `t`'s
/// activations at `x + t·n`; `MASKED` loads only the lanes set in `mask`.
///
/// # Safety
/// Every row read holds 32 elements from the pointer (`MASKED`: the lanes in `mask`),
/// and the CPU has AVX512-BF16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn step_bf16<const R: usize, const T: usize, const MASKED: bool>(
    acc: &mut [[__m512; R]; T],
    w: *const bf16,
    x: *const bf16,
    n: usize,
    mask: u32,
) {
    let load = |p: *const bf16| {
        // SAFETY: the caller's contract covers every row pointer handed in here.
        unsafe {
            if MASKED {
                _mm512_maskz_loadu_epi16(mask, p.cast())
            } else {
                _mm512_loadu_si512(p.cast())
            }
        }
        .into_bh()
    };
    let mut wv = [_mm512_setzero_si512().into_bh(); R];
    for (r, v) in wv.iter_mut().enumerate() {
        // SAFETY: the caller's contract (row `r` of the tile).
        *v = load(unsafe { w.add(r * n) });
    }
    for (t, a) in acc.iter_mut().enumerate() {
        // SAFETY: the caller's contract (token `t` of the tile).
        let xv = load(unsafe { x.add(t * n) });
        for (r, v) in wv.iter().enumerate() {
            a[r] = _mm512_dpbf16_ps(a[r], *v, xv);
        }
    }
}

/// One 16-element step of `tile_f16`, as `step_bf16` (the low 16 bits of `mask`).
///
/// # Safety
/// Every row read holds 16 elements from the pointer (`MASKED`: the lanes in `mask`),
/// and the CPU has AVX-512 F/BW/VL and F16C.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
unsafe fn step_f16<const R: usize, const T: usize, const MASKED: bool>(
    acc: &mut [[__m512; R]; T],
    w: *const f16,
    x: *const f32,
    n: usize,
    mask: u32,
) {
    let m = mask as u16;
    let mut wv = [_mm512_setzero_ps(); R];
    for (r, v) in wv.iter_mut().enumerate() {
        // SAFETY: the caller's contract (row `r` of the tile).
        let p = unsafe { w.add(r * n) };
        // SAFETY: as above.
        let h = unsafe {
            if MASKED {
                _mm256_maskz_loadu_epi16(m, p.cast())
            } else {
                _mm256_loadu_si256(p.cast())
            }
        };
        *v = _mm512_cvtph_ps(h);
    }
    for (t, a) in acc.iter_mut().enumerate() {
        // SAFETY: the caller's contract (token `t` of the tile).
        let p = unsafe { x.add(t * n) };
        // SAFETY: as above.
        let xv = unsafe {
            if MASKED {
                _mm512_maskz_loadu_ps(m, p)
            } else {
                _mm512_loadu_ps(p)
            }
        };
        for (r, v) in wv.iter().enumerate() {
            a[r] = _mm512_fmadd_ps(*v, xv, a[r]);
        }
    }
}

/// Token `t`'s `R` sums (`hsum4` of its accumulators) into `y[t · rows..][..R]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn store_sums<const R: usize, const T: usize>(acc: &[[__m512; R]; T], y: &mut [f32], rows: usize) {
    let z = _mm512_setzero_ps();
    for (t, a) in acc.iter().enumerate() {
        let mut v = [z; 4];
        v[..R].copy_from_slice(a);
        let s = hsum4(v[0], v[1], v[2], v[3]);
        let out = &mut y[t * rows..][..R];
        if R == 4 {
            // SAFETY: `out` holds four floats.
            unsafe { _mm_storeu_ps(out.as_mut_ptr(), s) };
        } else {
            let mut o = [0f32; 4];
            // SAFETY: `o` holds four floats.
            unsafe { _mm_storeu_ps(o.as_mut_ptr(), s) };
            out.copy_from_slice(&o[..R]);
        }
    }
}

/// The four horizontal sums of `a`, `b`, `c`, `d` as one vector `[Σa, Σb, Σc, Σd]`:
/// interleave-and-add within each 128-bit lane, then fold the four lanes — thirteen
/// operations where four separate reductions take about thirty-two.
#[inline]
#[target_feature(enable = "avx512f")]
fn hsum4(a: __m512, b: __m512, c: __m512, d: __m512) -> __m128 {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3] and the same for c, d.
    let ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    let cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    // Per lane: [a, b, c, d] (the lane's share of each sum).
    let abcd = _mm512_add_ps(
        _mm512_shuffle_ps::<0b01_00_01_00>(ab, cd),
        _mm512_shuffle_ps::<0b11_10_11_10>(ab, cd),
    );
    let s = _mm512_add_ps(abcd, _mm512_shuffle_f32x4::<0b11_10_11_10>(abcd, abcd));
    let s = _mm512_add_ps(s, _mm512_shuffle_f32x4::<0b01_01_01_01>(s, s));
    _mm512_castps512_ps128(s)
}

/// The bits of a 512-bit integer vector as 32 bf16 lanes.
trait IntoBh {
    fn into_bh(self) -> __m512bh;
}
impl IntoBh for __m512i {
    #[inline(always)]
    fn into_bh(self) -> __m512bh {
        // SAFETY: both are 64 bytes of plain bits; a reinterpretation.
        unsafe { core::mem::transmute::<__m512i, __m512bh>(self) }
    }
}

fn vec_dot_bf16_bf16(x: &[bf16], y: &[bf16]) -> f32 {
    // SAFETY: only handed out by `kernels()` after it found AVX512-BF16 and VL besides
    // the AVX-512 F/BW base.
    unsafe { vec_dot_bf16_bf16_impl(x, y) }
}

/// `Σ x·y` of two bf16 rows: eight 256-bit `vdpbf16ps` chains of 16 values, the tail
/// through zero-masked loads. Measured on Zen 4 against four 512-bit chains (the
/// weights 64-byte aligned in both): SmolLM2 BF16 decode 73.6 against 64.1 tok/s, the
/// 1B shape 9.5 against 8.3 (docs/perf-notes.md).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
fn vec_dot_bf16_bf16_impl(x: &[bf16], y: &[bf16]) -> f32 {
    let n = x.len().min(y.len());
    let (xp, yp) = (x[..n].as_ptr(), y[..n].as_ptr());
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i + 128 <= n {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: both rows hold `n` values and `i + 16 k + 16 ≤ n`.
            let (xv, yv) = unsafe {
                (
                    _mm256_loadu_si256(xp.add(i + 16 * k).cast()),
                    _mm256_loadu_si256(yp.add(i + 16 * k).cast()),
                )
            };
            *a = _mm256_dpbf16_ps(*a, bh16(xv), bh16(yv));
        }
        i += 128;
    }
    let mut k = 0;
    while i < n {
        let mask = if n - i >= 16 { u16::MAX } else { (1u16 << (n - i)) - 1 };
        // SAFETY: as above; the mask keeps the loads to the `n - i` values left.
        let (xv, yv) = unsafe {
            (
                _mm256_maskz_loadu_epi16(mask, xp.add(i).cast()),
                _mm256_maskz_loadu_epi16(mask, yp.add(i).cast()),
            )
        };
        acc[k] = _mm256_dpbf16_ps(acc[k], bh16(xv), bh16(yv));
        k = (k + 1) % 8;
        i += 16;
    }
    let s4 = [
        _mm256_add_ps(acc[0], acc[1]),
        _mm256_add_ps(acc[2], acc[3]),
        _mm256_add_ps(acc[4], acc[5]),
        _mm256_add_ps(acc[6], acc[7]),
    ];
    hsum_ps(_mm256_add_ps(_mm256_add_ps(s4[0], s4[1]), _mm256_add_ps(s4[2], s4[3])))
}

/// The bits of a 256-bit integer vector as 16 bf16 lanes.
#[inline(always)]
fn bh16(v: __m256i) -> __m256bh {
    // SAFETY: both are 32 bytes of plain bits; a reinterpretation.
    unsafe { core::mem::transmute::<__m256i, __m256bh>(v) }
}

/// 4 rows × 4 tokens: sixteen zmm accumulators, four weight vectors, one input.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma,f16c")]
fn gemm_bf16_bf16_impl(w: &[bf16], x: &[bf16], nb: usize, y: &mut [f32]) {
    gemm_tiles!(tile_bf16::<4, 4>(w, x, nb, y))
}

fn gemm_f16_f32_z(w: &[f16], x: &[f32], n: usize, y: &mut [f32]) {
    // SAFETY: only handed out by `kernels()` after it found AVX-512 F/BW/VL besides
    // AVX2, FMA and F16C.
    unsafe { gemm_f16_z_impl(w, x, n, y) }
}

/// As `gemm_bf16_bf16_impl`, sixteen f16 weights widened per zmm.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
fn gemm_f16_z_impl(w: &[f16], x: &[f32], nb: usize, y: &mut [f32]) {
    gemm_tiles!(tile_f16::<4, 4>(w, x, nb, y))
}
