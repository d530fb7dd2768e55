//! x86-64 kernels for the row-interleaved x8 weight layouts (`cpu::repack`): AVX2
//! (`pmaddubsw` + `pmaddwd`) and AVX-512 VNNI on 256-bit vectors (`vpdpbusd`, needs
//! AVX512VL). One 256-bit accumulator holds eight rows' outputs, one lane a row, so
//! nothing is summed horizontally; a weight block's nibbles are unpacked once for up to
//! four tokens (prefill) and once for the one token of decode.
//!
//! Exactness: every integer block sum is exact (bounds at each kernel); per block the
//! float step is `acc += sumi · (d_w · d_x)` as in the scalar twins, fused into one FMA,
//! so results differ from `cpu::repack::gemm_*x8` by f32 rounding only.

use core::arch::x86_64::*;

use crate::cpu::repack::{BlockQ4_0x8, BlockQ4_1x8, BlockQ8Act, BlockQ8_0x8};

/// The 4 activation bytes of piece `c` (elements `4c..4c+4`) in all 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast4(qs: &[i8; 32], c: usize) -> __m256i {
    let p = &qs[4 * c..4 * c + 4];
    _mm256_set1_epi32(i32::from_le_bytes([p[0] as u8, p[1] as u8, p[2] as u8, p[3] as u8]))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load256<T>(b: &[T]) -> __m256i {
    assert!(core::mem::size_of_val(b) >= 32);
    // SAFETY: at least 32 readable bytes (asserted); unaligned load.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

/// The eight f16 scales of an x8 block as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales8(d: &[half::f16; 8]) -> __m256 {
    // SAFETY: `d` is 16 readable bytes; unaligned load.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().cast()) })
}

/// One accumulator (eight rows' outputs) into `o[..8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store8(a: &__m256, o: &mut [f32]) {
    let o = &mut o[..8];
    // SAFETY: `o` is 8 writable f32 (bounds checked); unaligned store.
    unsafe { _mm256_storeu_ps(o.as_mut_ptr(), *a) };
}

use crate::cpu::repack::x8_driver;

// --- AVX2 ------------------------------------------------------------------------

/// The Q4 part of block `b` for each token, AVX2: per 32-bit lane (one row) the i16
/// pair sums of `Σ q·y` over the block's eight pieces (exact: see `tile_q4_0_avx2`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_sums16_avx2<const T: usize>(qs: &[u8; 128], xs: [&[BlockQ8Act]; T], b: usize) -> [__m256i; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut s16 = [_mm256_setzero_si256(); T];
    for q in 0..4 {
        let p = load256(&qs[32 * q..]);
        let (lo, hi) = (_mm256_and_si256(p, m4), _mm256_and_si256(_mm256_srli_epi16(p, 4), m4));
        for t in 0..T {
            let xq = &xs[t][b].qs;
            s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, bcast4(xq, q)));
            s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, bcast4(xq, q + 4)));
        }
    }
    s16
}

/// Q4_0 × Q8, AVX2. Per lane, `pmaddubsw` pairs of unsigned nibbles (≤ 15) and i8
/// activations (|y| ≤ 128) are ≤ 3 840; eight of them summed in i16 stay ≤ 30 720, so
/// the i16 sums are exact before `pmaddwd` widens them. `Σ (q − 8)·y = Σ q·y − 8 Σ y`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q4_0_avx2<const T: usize>(wg: &[BlockQ4_0x8], xs: [&[BlockQ8Act]; T]) -> [__m256; T] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let s16 = q4_sums16_avx2(&blk.qs, xs, b);
        let dw = scales8(&blk.d);
        for t in 0..T {
            let xb = &xs[t][b];
            let s = _mm256_sub_epi32(_mm256_madd_epi16(s16[t], ones), _mm256_set1_epi32(8 * xb.sum));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), acc[t]);
        }
    }
    acc
}

/// Q4_1 × Q8, AVX2: as Q4_0 without the −8, plus `m · s` per block.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q4_1_avx2<const T: usize>(wg: &[BlockQ4_1x8], xs: [&[BlockQ8Act]; T]) -> [__m256; T] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let s16 = q4_sums16_avx2(&blk.qs, xs, b);
        let (dw, mw) = (scales8(&blk.d), scales8(&blk.m));
        for t in 0..T {
            let xb = &xs[t][b];
            let s = _mm256_madd_epi16(s16[t], ones);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(xb.d)), acc[t]);
            acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xb.s), acc[t]);
        }
    }
    acc
}

/// Q8_0 × Q8, AVX2: `|w| · (y signed by w)` through `pmaddubsw` (pairs ≤ 2·128·127 =
/// 32 512, exact in i16; y is never −128 from the Q8 quantizer), widened per piece.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q8_0_avx2<const T: usize>(wg: &[BlockQ8_0x8], xs: [&[BlockQ8Act]; T]) -> [__m256; T] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let mut s32 = [_mm256_setzero_si256(); T];
        for c in 0..8 {
            let w = load256(&blk.qs[32 * c..]);
            let aw = _mm256_abs_epi8(w);
            for t in 0..T {
                let sy = _mm256_sign_epi8(bcast4(&xs[t][b].qs, c), w);
                s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sy), ones));
            }
        }
        let dw = scales8(&blk.d);
        for t in 0..T {
            let xd = _mm256_set1_ps(xs[t][b].d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[t]), _mm256_mul_ps(dw, xd), acc[t]);
        }
    }
    acc
}

x8_driver!(pub(super) gemm_q4_0x8_avx2_impl, "avx2,fma,f16c", BlockQ4_0x8, tile_q4_0_avx2, store8);
x8_driver!(pub(super) gemm_q4_1x8_avx2_impl, "avx2,fma,f16c", BlockQ4_1x8, tile_q4_1_avx2, store8);
x8_driver!(pub(super) gemm_q8_0x8_avx2_impl, "avx2,fma,f16c", BlockQ8_0x8, tile_q8_0_avx2, store8);

// --- AVX-512 VNNI (256-bit) ------------------------------------------------------

/// The Q4 part of block `b` for each token, VNNI: `init + Σ q·y` per 32-bit lane (row).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_sums_vnni<const T: usize>(qs: &[u8; 128], xs: [&[BlockQ8Act]; T], b: usize, init: [__m256i; T]) -> [__m256i; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut s = init;
    for q in 0..4 {
        let p = load256(&qs[32 * q..]);
        let (lo, hi) = (_mm256_and_si256(p, m4), _mm256_and_si256(_mm256_srli_epi16(p, 4), m4));
        for t in 0..T {
            let xq = &xs[t][b].qs;
            s[t] = _mm256_dpbusd_epi32(s[t], lo, bcast4(xq, q));
            s[t] = _mm256_dpbusd_epi32(s[t], hi, bcast4(xq, q + 4));
        }
    }
    s
}

/// Q4_0 × Q8, VNNI: `vpdpbusd` of unsigned nibbles and i8 activations into i32 lanes
/// that start at `−8 Σ y` (exact: |Σ| ≤ 32·15·128 + 8·32·128).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q4_0_vnni<const T: usize>(wg: &[BlockQ4_0x8], xs: [&[BlockQ8Act]; T]) -> [__m256; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let s = q4_sums_vnni(
            &blk.qs,
            xs,
            b,
            core::array::from_fn(|t| _mm256_set1_epi32(-8 * xs[t][b].sum)),
        );
        let dw = scales8(&blk.d);
        for t in 0..T {
            let xd = _mm256_set1_ps(xs[t][b].d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(dw, xd), acc[t]);
        }
    }
    acc
}

/// Q4_1 × Q8, VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q4_1_vnni<const T: usize>(wg: &[BlockQ4_1x8], xs: [&[BlockQ8Act]; T]) -> [__m256; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let s = q4_sums_vnni(&blk.qs, xs, b, [_mm256_setzero_si256(); T]);
        let (dw, mw) = (scales8(&blk.d), scales8(&blk.m));
        for t in 0..T {
            let xb = &xs[t][b];
            acc[t] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(s[t]),
                _mm256_mul_ps(dw, _mm256_set1_ps(xb.d)),
                acc[t],
            );
            acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xb.s), acc[t]);
        }
    }
    acc
}

/// Q8_0 × Q8, VNNI: the weights made unsigned (`w ^ 0x80 = w + 128`) for `vpdpbusd`,
/// lanes starting at `−128 Σ y` (exact: |Σ| ≤ 32·255·128 + 128·32·128).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q8_0_vnni<const T: usize>(wg: &[BlockQ8_0x8], xs: [&[BlockQ8Act]; T]) -> [__m256; T] {
    let flip = _mm256_set1_epi8(-128);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let mut s: [__m256i; T] = core::array::from_fn(|t| _mm256_set1_epi32(-128 * xs[t][b].sum));
        for c in 0..8 {
            let wu = _mm256_xor_si256(load256(&blk.qs[32 * c..]), flip);
            for t in 0..T {
                s[t] = _mm256_dpbusd_epi32(s[t], wu, bcast4(&xs[t][b].qs, c));
            }
        }
        let dw = scales8(&blk.d);
        for t in 0..T {
            let xd = _mm256_set1_ps(xs[t][b].d);
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t]), _mm256_mul_ps(dw, xd), acc[t]);
        }
    }
    acc
}

x8_driver!(
    pub(super) gemm_q4_0x8_vnni_impl,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ4_0x8,
    tile_q4_0_vnni,
    store8
);
x8_driver!(
    pub(super) gemm_q4_1x8_vnni_impl,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ4_1x8,
    tile_q4_1_vnni,
    store8
);
x8_driver!(
    pub(super) gemm_q8_0x8_vnni_impl,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ8_0x8,
    tile_q8_0_vnni,
    store8
);

// Safe entry points, reachable only through the tables that checked the features.

pub(super) fn gemm_q4_0x8_avx2(w: &[BlockQ4_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: only handed out by `avx2::kernels()` / `avx512::kernels()`, which verified
    // AVX2, FMA and F16C.
    unsafe { gemm_q4_0x8_avx2_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_1x8_avx2(w: &[BlockQ4_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q4_1x8_avx2_impl(w, x, nb, y) }
}
pub(super) fn gemm_q8_0x8_avx2(w: &[BlockQ8_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q8_0x8_avx2_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_0x8_vnni(w: &[BlockQ4_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: only handed out by `avx512::kernels()` when it found AVX-512 F/BW/VL/VNNI
    // besides AVX2, FMA and F16C.
    unsafe { gemm_q4_0x8_vnni_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_1x8_vnni(w: &[BlockQ4_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q4_1x8_vnni_impl(w, x, nb, y) }
}
pub(super) fn gemm_q8_0x8_vnni(w: &[BlockQ8_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q8_0x8_vnni_impl(w, x, nb, y) }
}
