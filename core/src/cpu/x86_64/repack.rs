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

use crate::cpu::repack::{
    k_five, q5_offset, BlockQ4_0x8, BlockQ4_1x8, BlockQ4_Kx8, BlockQ5_0x8, BlockQ5_1x8, BlockQ5_Kx8, BlockQ6_Kx8,
    BlockQ8Act, BlockQ8_0x8, Kx8, Q5x8,
};
use crate::quant::BlockQ8_K;

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

/// The 4 activation bytes at `qs[off..off + 4]` in all 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast4_at(qs: &[i8], off: usize) -> __m256i {
    let p = &qs[off..off + 4];
    _mm256_set1_epi32(i32::from_le_bytes([p[0] as u8, p[1] as u8, p[2] as u8, p[3] as u8]))
}

/// Piece `q` of a Q5_0 x8 block as unsigned five-bit bytes: the low nibbles
/// (elements `4q..4q+4` of each row) and the high ones (`16 + 4q..`), each with its fifth
/// bit moved from bit `q` / `4 + q` of the permuted `qh` byte to bit 4.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_piece(qs: &[u8; 128], qh: __m256i, q: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let p = load256(&qs[32 * q..]);
    let (lo, hi) = (_mm256_and_si256(p, m4), _mm256_and_si256(_mm256_srli_epi16(p, 4), m4));
    let blo = _mm256_and_si256(qh, _mm256_set1_epi8(1 << q));
    let bhi = _mm256_and_si256(qh, _mm256_set1_epi8((0x10u8 << q) as i8));
    let (blo, bhi) = match q {
        0 => (_mm256_slli_epi16(blo, 4), bhi),
        1 => (_mm256_slli_epi16(blo, 3), _mm256_srli_epi16(bhi, 1)),
        2 => (_mm256_slli_epi16(blo, 2), _mm256_srli_epi16(bhi, 2)),
        _ => (_mm256_slli_epi16(blo, 1), _mm256_srli_epi16(bhi, 3)),
    };
    (_mm256_or_si256(lo, blo), _mm256_or_si256(hi, bhi))
}

/// The eight rows' 6-bit scales and minimums of a Q4_K x8 super-block, per sub-block
/// eight bytes (`quant::k::scale_min_k4`, bytewise).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q4_k_scales(scales: &[u8; 96]) -> ([__m128i; 8], [__m128i; 8]) {
    let (m63, m15, m30) = (_mm_set1_epi8(63), _mm_set1_epi8(15), _mm_set1_epi8(0x30));
    let sb: [__m128i; 12] = core::array::from_fn(|k| load8(&scales[8 * k..]));
    let sc = core::array::from_fn(|s| {
        if s < 4 {
            _mm_and_si128(sb[s], m63)
        } else {
            _mm_or_si128(
                _mm_and_si128(sb[s + 4], m15),
                _mm_and_si128(_mm_srli_epi16(sb[s - 4], 2), m30),
            )
        }
    });
    let mn = core::array::from_fn(|s| {
        if s < 4 {
            _mm_and_si128(sb[s + 4], m63)
        } else {
            _mm_or_si128(
                _mm_and_si128(_mm_srli_epi16(sb[s + 4], 4), m15),
                _mm_and_si128(_mm_srli_epi16(sb[s], 2), m30),
            )
        }
    });
    (sc, mn)
}

/// Piece `p` of a Q6_K x8 chunk as unsigned six-bit bytes: low nibbles with the top bits
/// of `ha` (the chunk's first 16 elements), high nibbles with those of `hb`; bits
/// `2p, 2p+1` of each top-bit byte moved to bits 4, 5.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn q6_k_piece(ql: &[u8; 128], ha: __m256i, hb: __m256i, p: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let v = load256(&ql[32 * p..]);
    let (lo, hi) = (_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    let mask = _mm256_set1_epi8((3u8 << (2 * p)) as i8);
    let (ta, tb) = (_mm256_and_si256(ha, mask), _mm256_and_si256(hb, mask));
    let (ta, tb) = match p {
        0 => (_mm256_slli_epi16(ta, 4), _mm256_slli_epi16(tb, 4)),
        1 => (_mm256_slli_epi16(ta, 2), _mm256_slli_epi16(tb, 2)),
        2 => (ta, tb),
        _ => (_mm256_srli_epi16(ta, 2), _mm256_srli_epi16(tb, 2)),
    };
    (_mm256_or_si256(lo, ta), _mm256_or_si256(hi, tb))
}

/// Q5_0 / Q5_1 × Q8, AVX2: the nibbles as Q4_0 with each element's fifth bit moved to
/// bit 4 (the permuted `qh` puts piece `q`'s bits at `q` and `4 + q` of the lane's bytes).
/// Elements ≤ 31 and |y| ≤ 128 give `pmaddubsw` pairs ≤ 7 936; two pieces (four pairs
/// sums) stay ≤ 31 744 in i16 before `pmaddwd` widens them. Q5_0: `Σ (q − 16)·y =
/// Σ q·y − 16 Σ y`; Q5_1: `d_w d_y Σ q·y + m_w s_y`, as Q4_1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q5_avx2<const T: usize>(wg: &[impl Q5x8], xs: [&[BlockQ8Act]; T]) -> [__m256; T] {
    let ones = _mm256_set1_epi16(1);
    let off = q5_offset(wg);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let qh = load256(blk.qh());
        let mut s32: [__m256i; T] = core::array::from_fn(|t| _mm256_set1_epi32(-off * xs[t][b].sum));
        for half in 0..2 {
            let mut s16 = [_mm256_setzero_si256(); T];
            for q in 2 * half..2 * half + 2 {
                let (lo, hi) = q5_0_piece(blk.qs(), qh, q);
                for t in 0..T {
                    let xq = &xs[t][b].qs;
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(lo, bcast4(xq, q)));
                    s16[t] = _mm256_add_epi16(s16[t], _mm256_maddubs_epi16(hi, bcast4(xq, q + 4)));
                }
            }
            for t in 0..T {
                s32[t] = _mm256_add_epi32(s32[t], _mm256_madd_epi16(s16[t], ones));
            }
        }
        q5_finish(blk, &s32, xs, b, &mut acc);
    }
    acc
}

/// The float step of a Q5_0 / Q5_1 block: `acc += sumi · (d_w d_y)` (+ `m_w s_y`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_finish<const T: usize>(
    blk: &impl Q5x8,
    s32: &[__m256i; T],
    xs: [&[BlockQ8Act]; T],
    b: usize,
    acc: &mut [__m256; T],
) {
    let dw = scales8(blk.d());
    for t in 0..T {
        let xd = _mm256_set1_ps(xs[t][b].d);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s32[t]), _mm256_mul_ps(dw, xd), acc[t]);
    }
    if let Some(m) = blk.m() {
        let mw = scales8(m);
        for t in 0..T {
            acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(xs[t][b].s), acc[t]);
        }
    }
}

/// Eight bytes (one per row) at `p[..8]` into the low half of a vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load8<T: bytemuck::Pod>(p: &[T]) -> __m128i {
    let b: &[u8] = bytemuck::cast_slice(p);
    let b = &b[..8];
    // SAFETY: 8 readable bytes (bounds checked); unaligned load.
    unsafe { _mm_loadl_epi64(b.as_ptr().cast()) }
}

/// Eight unsigned bytes (one per row) as i32 lanes with the value in both 16-bit halves,
/// the multiplier `pmaddwd` needs to scale a lane's two i16 partial sums at once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_u8(v: __m128i) -> __m256i {
    pair_i32(_mm256_cvtepu8_epi32(v))
}

/// Each i32 lane's low 16 bits (a value in i16 range, sign included) in both 16-bit
/// halves of the lane (see `pair_u8`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn pair_i32(w: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_and_si256(w, _mm256_set1_epi32(0xffff)), _mm256_slli_epi32(w, 16))
}

/// The broadcast pair `(a, b)` as one i32 per lane (`a` low, `b` high 16 bits).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast_pair(a: i32, b: i32) -> __m256i {
    _mm256_set1_epi32((a & 0xffff) | (b << 16))
}

/// The fifth bits of piece `p` of sub-block pair `c` of a Q5_K x8 super-block (bits
/// `2c` and `2c + 1` of the `qh` piece) at bit 4 of the low and high values: one shift by
/// a constant and one mask each (a 16-bit shift by at most 4 keeps every byte's bit 4
/// its own byte's bit; the mask and the OR into the value fuse into `vpternlogd` where
/// AVX-512VL is on).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k_bits(qh: __m256i, c: usize) -> (__m256i, __m256i) {
    let m = _mm256_set1_epi8(0x10);
    let (lo, hi) = match c {
        0 => (_mm256_slli_epi16(qh, 4), _mm256_slli_epi16(qh, 3)),
        1 => (_mm256_slli_epi16(qh, 2), _mm256_slli_epi16(qh, 1)),
        2 => (qh, _mm256_srli_epi16(qh, 1)),
        _ => (_mm256_srli_epi16(qh, 2), _mm256_srli_epi16(qh, 3)),
    };
    (_mm256_and_si256(lo, m), _mm256_and_si256(hi, m))
}

/// Piece `p` of sub-block pair `c` of a Q4_K / Q5_K x8 super-block as unsigned bytes: the
/// low nibbles (sub-block `2c`) and high ones (`2c + 1`), with the fifth bits for Q5_K.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn k_piece(blk: &impl Kx8, five: bool, c: usize, p: usize) -> (__m256i, __m256i) {
    let m4 = _mm256_set1_epi8(0x0f);
    let v = load256(&blk.qs()[256 * c + 32 * p..]);
    let (lo, hi) = (_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
    if !five {
        return (lo, hi);
    }
    let (bl, bh) = q5_k_bits(load256(&blk.qh()[32 * p..]), c);
    (_mm256_or_si256(lo, bl), _mm256_or_si256(hi, bh))
}

/// Q4_K / Q5_K × Q8_K, AVX2. Per sub-block, `pmaddubsw` of the values and activations
/// (|y| ≤ 128) summed in i16: eight pieces of nibbles (≤ 15) reach ≤ 30 720, so Q4_K
/// widens once per sub-block; five-bit values (≤ 31) reach that in four pieces, so Q5_K
/// widens twice. One `pmaddwd` with the sub-block's scale (≤ 63 in both halves of the
/// lane) widens and scales them. The minimums go through `bsums`:
/// `Σ_s m_s (bsum_2s + bsum_2s+1)` by `pmaddwd` of (m_2c, m_2c+1) lane pairs. Per
/// super-block `d_y (d_w isum) − d_y (dmin msum)`, as the scalar twin.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_k_avx2<const T: usize>(wg: &[impl Kx8], xs: [&[BlockQ8_K]; T]) -> [__m256; T] {
    let five = k_five(wg);
    let run = if five { 4 } else { 8 };
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let (sc, mn) = q4_k_scales(blk.scales());
        let mut isum = [_mm256_setzero_si256(); T];
        let mut msum = [_mm256_setzero_si256(); T];
        for c in 0..4 {
            let (sc_lo, sc_hi) = (pair_u8(sc[2 * c]), pair_u8(sc[2 * c + 1]));
            let mpair = _mm256_or_si256(
                _mm256_cvtepu8_epi32(mn[2 * c]),
                _mm256_slli_epi32(_mm256_cvtepu8_epi32(mn[2 * c + 1]), 16),
            );
            for p0 in (0..8).step_by(run) {
                let mut lo16 = [_mm256_setzero_si256(); T];
                let mut hi16 = [_mm256_setzero_si256(); T];
                for p in p0..p0 + run {
                    let (lo, hi) = k_piece(blk, five, c, p);
                    for t in 0..T {
                        let xq = &xs[t][b].qs;
                        lo16[t] = _mm256_add_epi16(lo16[t], _mm256_maddubs_epi16(lo, bcast4_at(xq, 64 * c + 4 * p)));
                        hi16[t] =
                            _mm256_add_epi16(hi16[t], _mm256_maddubs_epi16(hi, bcast4_at(xq, 64 * c + 32 + 4 * p)));
                    }
                }
                for t in 0..T {
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(lo16[t], sc_lo));
                    isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(hi16[t], sc_hi));
                }
            }
            for t in 0..T {
                let bs = &xs[t][b].bsums;
                let b0 = i32::from(bs[4 * c]) + i32::from(bs[4 * c + 1]);
                let b1 = i32::from(bs[4 * c + 2]) + i32::from(bs[4 * c + 3]);
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mpair, bcast_pair(b0, b1)));
            }
        }
        k_finish(blk, &isum, &msum, xs, b, &mut acc);
    }
    acc
}

/// The float step of a Q4_K / Q5_K super-block: `acc += d_y (d_w isum) − d_y (dmin msum)`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn k_finish<const T: usize>(
    blk: &impl Kx8,
    isum: &[__m256i; T],
    msum: &[__m256i; T],
    xs: [&[BlockQ8_K]; T],
    b: usize,
    acc: &mut [__m256; T],
) {
    let (dw, mw) = (scales8(blk.d()), scales8(blk.dmin()));
    for t in 0..T {
        let yd = _mm256_set1_ps(xs[t][b].d);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_mul_ps(dw, yd), acc[t]);
        acc[t] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t]), _mm256_mul_ps(mw, yd), acc[t]);
    }
}

/// Q6_K × Q8_K, AVX2. Per chunk of 32 elements: six-bit quants (≤ 63, unsigned) from the
/// nibbles and the top-bit words, `pmaddubsw` pairs ≤ 16 128, two pieces summed in i16
/// (≤ 32 256), then `pmaddwd` with the 16-element sub-block's signed scale. The −32
/// offset: `32 Σ_s sc_s bsum_s`, by `pmaddwd` of (sc_2c, sc_2c+1) pairs and the bsums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn tile_q6_k_avx2<const T: usize>(wg: &[BlockQ6_Kx8], xs: [&[BlockQ8_K]; T]) -> [__m256; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let mut isum = [_mm256_setzero_si256(); T];
        let mut off = [_mm256_setzero_si256(); T];
        for (c, ch) in blk.c.iter().enumerate() {
            let wa = _mm256_cvtepi8_epi32(load8(&ch.scales[..]));
            let wb = _mm256_cvtepi8_epi32(load8(&ch.scales[8..]));
            let (sc_lo, sc_hi) = (pair_i32(wa), pair_i32(wb));
            let sc_pair = _mm256_blend_epi16(sc_lo, sc_hi, 0xaa);
            let (ha, hb) = (load256(&ch.qh[..]), load256(&ch.qh[32..]));
            let mut lo16 = [_mm256_setzero_si256(); T];
            let mut hi16 = [_mm256_setzero_si256(); T];
            for p in 0..4 {
                let (lo, hi) = q6_k_piece(&ch.ql, ha, hb, p);
                for t in 0..T {
                    let xq = &xs[t][b].qs;
                    lo16[t] = _mm256_add_epi16(lo16[t], _mm256_maddubs_epi16(lo, bcast4_at(xq, 32 * c + 4 * p)));
                    hi16[t] = _mm256_add_epi16(hi16[t], _mm256_maddubs_epi16(hi, bcast4_at(xq, 32 * c + 16 + 4 * p)));
                }
                if p % 2 == 1 {
                    for t in 0..T {
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(lo16[t], sc_lo));
                        isum[t] = _mm256_add_epi32(isum[t], _mm256_madd_epi16(hi16[t], sc_hi));
                        lo16[t] = _mm256_setzero_si256();
                        hi16[t] = _mm256_setzero_si256();
                    }
                }
            }
            for t in 0..T {
                let bs = &xs[t][b].bsums;
                let pair = bcast_pair(i32::from(bs[2 * c]), i32::from(bs[2 * c + 1]));
                off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(sc_pair, pair));
            }
        }
        let dw = scales8(&blk.d);
        for t in 0..T {
            let s = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(off[t], 5));
            acc[t] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(s),
                _mm256_mul_ps(dw, _mm256_set1_ps(xs[t][b].d)),
                acc[t],
            );
        }
    }
    acc
}

x8_driver!(pub(super) gemm_q4_0x8_avx2_impl, "avx2,fma,f16c", BlockQ4_0x8, tile_q4_0_avx2, store8);
x8_driver!(pub(super) gemm_q5_0x8_avx2_impl, "avx2,fma,f16c", BlockQ5_0x8, tile_q5_avx2, store8);
x8_driver!(pub(super) gemm_q5_1x8_avx2_impl, "avx2,fma,f16c", BlockQ5_1x8, tile_q5_avx2, store8);
x8_driver!(pub(super) gemm_q4_kx8_avx2_impl, "avx2,fma,f16c", BlockQ4_Kx8, BlockQ8_K, tile_k_avx2, store8);
x8_driver!(pub(super) gemm_q5_kx8_avx2_impl, "avx2,fma,f16c", BlockQ5_Kx8, BlockQ8_K, tile_k_avx2, store8);
x8_driver!(pub(super) gemm_q6_kx8_avx2_impl, "avx2,fma,f16c", BlockQ6_Kx8, BlockQ8_K, tile_q6_k_avx2, store8);
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

/// Q5_0 / Q5_1 × Q8, VNNI: the five-bit values (≤ 31, unsigned) as in `tile_q5_avx2`,
/// summed by `vpdpbusd` into i32 lanes that start at `−16 Σ y` for Q5_0 (exact: |Σ| ≤
/// 32·31·128 + 16·32·128).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q5_vnni<const T: usize>(wg: &[impl Q5x8], xs: [&[BlockQ8Act]; T]) -> [__m256; T] {
    let off = q5_offset(wg);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let qh = load256(blk.qh());
        let mut s: [__m256i; T] = core::array::from_fn(|t| _mm256_set1_epi32(-off * xs[t][b].sum));
        for q in 0..4 {
            let (lo, hi) = q5_0_piece(blk.qs(), qh, q);
            for t in 0..T {
                let xq = &xs[t][b].qs;
                s[t] = _mm256_dpbusd_epi32(s[t], lo, bcast4(xq, q));
                s[t] = _mm256_dpbusd_epi32(s[t], hi, bcast4(xq, q + 4));
            }
        }
        q5_finish(blk, &s, xs, b, &mut acc);
    }
    acc
}

/// Q4_K / Q5_K × Q8_K, VNNI: per sub-block eight `vpdpbusd` of the values and
/// activations into fresh i32 lanes, times the sub-block's scale (`vpmulld`); minimums as
/// in the AVX2 tile.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_k_vnni<const T: usize>(wg: &[impl Kx8], xs: [&[BlockQ8_K]; T]) -> [__m256; T] {
    let five = k_five(wg);
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let (sc, mn) = q4_k_scales(blk.scales());
        let mut isum = [_mm256_setzero_si256(); T];
        let mut msum = [_mm256_setzero_si256(); T];
        for c in 0..4 {
            let (sc_lo, sc_hi) = (_mm256_cvtepu8_epi32(sc[2 * c]), _mm256_cvtepu8_epi32(sc[2 * c + 1]));
            let mpair = _mm256_or_si256(
                _mm256_cvtepu8_epi32(mn[2 * c]),
                _mm256_slli_epi32(_mm256_cvtepu8_epi32(mn[2 * c + 1]), 16),
            );
            let mut lo32 = [_mm256_setzero_si256(); T];
            let mut hi32 = [_mm256_setzero_si256(); T];
            for p in 0..8 {
                let (lo, hi) = k_piece(blk, five, c, p);
                for t in 0..T {
                    let xq = &xs[t][b].qs;
                    lo32[t] = _mm256_dpbusd_epi32(lo32[t], lo, bcast4_at(xq, 64 * c + 4 * p));
                    hi32[t] = _mm256_dpbusd_epi32(hi32[t], hi, bcast4_at(xq, 64 * c + 32 + 4 * p));
                }
            }
            for t in 0..T {
                let bs = &xs[t][b].bsums;
                isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(lo32[t], sc_lo));
                isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(hi32[t], sc_hi));
                let b0 = i32::from(bs[4 * c]) + i32::from(bs[4 * c + 1]);
                let b1 = i32::from(bs[4 * c + 2]) + i32::from(bs[4 * c + 3]);
                msum[t] = _mm256_add_epi32(msum[t], _mm256_madd_epi16(mpair, bcast_pair(b0, b1)));
            }
        }
        k_finish(blk, &isum, &msum, xs, b, &mut acc);
    }
    acc
}

/// Q6_K × Q8_K, VNNI: per 16-element sub-block four `vpdpbusd` of the six-bit values
/// (≤ 63) into fresh i32 lanes, times the signed scale (`vpmulld`); the −32 offset as in
/// the AVX2 tile.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn tile_q6_k_vnni<const T: usize>(wg: &[BlockQ6_Kx8], xs: [&[BlockQ8_K]; T]) -> [__m256; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    for (b, blk) in wg.iter().enumerate() {
        let mut isum = [_mm256_setzero_si256(); T];
        let mut off = [_mm256_setzero_si256(); T];
        for (c, ch) in blk.c.iter().enumerate() {
            let wa = _mm256_cvtepi8_epi32(load8(&ch.scales[..]));
            let wb = _mm256_cvtepi8_epi32(load8(&ch.scales[8..]));
            let sc_pair = _mm256_blend_epi16(wa, _mm256_slli_epi32(wb, 16), 0xaa);
            let (ha, hb) = (load256(&ch.qh[..]), load256(&ch.qh[32..]));
            let mut lo32 = [_mm256_setzero_si256(); T];
            let mut hi32 = [_mm256_setzero_si256(); T];
            for p in 0..4 {
                let (lo, hi) = q6_k_piece(&ch.ql, ha, hb, p);
                for t in 0..T {
                    let xq = &xs[t][b].qs;
                    lo32[t] = _mm256_dpbusd_epi32(lo32[t], lo, bcast4_at(xq, 32 * c + 4 * p));
                    hi32[t] = _mm256_dpbusd_epi32(hi32[t], hi, bcast4_at(xq, 32 * c + 16 + 4 * p));
                }
            }
            for t in 0..T {
                isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(lo32[t], wa));
                isum[t] = _mm256_add_epi32(isum[t], _mm256_mullo_epi32(hi32[t], wb));
                let bs = &xs[t][b].bsums;
                let pair = bcast_pair(i32::from(bs[2 * c]), i32::from(bs[2 * c + 1]));
                off[t] = _mm256_add_epi32(off[t], _mm256_madd_epi16(sc_pair, pair));
            }
        }
        let dw = scales8(&blk.d);
        for t in 0..T {
            let s = _mm256_sub_epi32(isum[t], _mm256_slli_epi32(off[t], 5));
            acc[t] = _mm256_fmadd_ps(
                _mm256_cvtepi32_ps(s),
                _mm256_mul_ps(dw, _mm256_set1_ps(xs[t][b].d)),
                acc[t],
            );
        }
    }
    acc
}

x8_driver!(
    pub(super) gemm_q4_kx8_vnni_impl,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ4_Kx8,
    BlockQ8_K,
    tile_k_vnni,
    store8
);
x8_driver!(
    pub(super) gemm_q5_kx8_vnni_impl,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ5_Kx8,
    BlockQ8_K,
    tile_k_vnni,
    store8
);
x8_driver!(
    pub(super) gemm_q6_kx8_vnni_impl,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ6_Kx8,
    BlockQ8_K,
    tile_q6_k_vnni,
    store8
);
x8_driver!(
    pub(super) gemm_q5_0x8_vnni_impl,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ5_0x8,
    tile_q5_vnni,
    store8
);
x8_driver!(
    pub(super) gemm_q5_1x8_vnni_impl,
    "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c",
    BlockQ5_1x8,
    tile_q5_vnni,
    store8
);
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
pub(super) fn gemm_q5_0x8_avx2(w: &[BlockQ5_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q5_0x8_avx2_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_kx8_avx2(w: &[BlockQ4_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q4_kx8_avx2_impl(w, x, nb, y) }
}
pub(super) fn gemm_q6_kx8_avx2(w: &[BlockQ6_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q6_kx8_avx2_impl(w, x, nb, y) }
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
pub(super) fn gemm_q5_0x8_vnni(w: &[BlockQ5_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: only handed out by `avx512::kernels()` when it found AVX-512 F/BW/VL/VNNI
    // besides AVX2, FMA and F16C.
    unsafe { gemm_q5_0x8_vnni_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_kx8_vnni(w: &[BlockQ4_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q4_kx8_vnni_impl(w, x, nb, y) }
}
pub(super) fn gemm_q6_kx8_vnni(w: &[BlockQ6_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q6_kx8_vnni_impl(w, x, nb, y) }
}
pub(super) fn gemm_q8_0x8_vnni(w: &[BlockQ8_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q8_0x8_vnni_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_1x8_avx2(w: &[BlockQ5_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: only handed out by `avx2::kernels()` / `avx512::kernels()`, which verified
    // AVX2, FMA and F16C.
    unsafe { gemm_q5_1x8_avx2_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_kx8_avx2(w: &[BlockQ5_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q5_kx8_avx2_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_1x8_vnni(w: &[BlockQ5_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: only handed out by `avx512::kernels()` when it found AVX-512 F/BW/VL/VNNI
    // besides AVX2, FMA and F16C.
    unsafe { gemm_q5_1x8_vnni_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_kx8_vnni(w: &[BlockQ5_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { gemm_q5_kx8_vnni_impl(w, x, nb, y) }
}
