//! Token-lane Q4_K / Q5_K / Q6_K prefill kernels, AVX-512 VNNI (`Kernels::gemm_q5_kx8_t16`).
//!
//! The x8 tiles (`x86_64::repack`) put eight weight *rows* in the lanes and broadcast
//! one activation piece per `vpdpbusd`; every weight piece is unpacked (nibbles, fifth
//! bits) once per four tokens and every sub-block's scale is applied per token. Here the
//! lanes hold sixteen *tokens* (`BlockQ8_Kx16`, interleaved once per matmul): per
//! group of eight rows and super-block the weights are unpacked once into a small
//! buffer (values as bytes in 4-byte pieces, scales and minimums widened), and the inner
//! loop is one 512-bit activation load, then per row one broadcast of four weight bytes
//! and one `vpdpbusd` into that row's sixteen token sums. Per 32-element sub-block each
//! row's sums are scaled once (`vpmulld` by the broadcast scale) for all sixteen tokens.
//!
//! Roles: the weights (0..31, unsigned) are `vpdpbusd`'s u8 operand, the activations
//! (i8) its signed one, as the x8 tiles. Exact integers: a sub-block sum is at most
//! 32 · 31 · 128 = 126 976 in magnitude, times a scale ≤ 63 and summed over 8
//! sub-blocks < 2^26; the minimums' `Σ_s m_s bsum_s` (m ≤ 63, |bsum| ≤ 4 096) by
//! `vpdpwssd` of (m_2c, m_2c+1) pairs and the tokens' (bsum_2c, bsum_2c+1) pairs.
//! Per super-block the float step is `acc += (d_y d_w) isum − (d_y dmin) msum`, as
//! `tile_k_vnni`, so results differ from the x8 kernels by f32 rounding only.

use core::arch::x86_64::*;

use super::repack::{k_piece, load8, q4_k_scales, q6_k_piece};
use crate::cpu::repack::{k_five, BlockQ4_Kx8, BlockQ5_Kx8, BlockQ6_Kx8, BlockQ8_Kx16, Kx8, ROWS_X8, TOKS_X16};

/// One group's super-block, unpacked once for its sixteen tokens.
#[repr(C, align(64))]
struct Unpacked {
    /// `q[64s + 8p + j]`: row `j`'s values `32s + 4p .. + 4` of sub-block `s` as bytes.
    q: [u32; 512],
    /// `sc[8s + j]`: row `j`'s scale of sub-block `s`.
    sc: [i32; 64],
    /// `mn[8c + j]`: row `j`'s minimums of sub-blocks `2c` (low 16 bits), `2c + 1` (high).
    mn: [i32; 32],
    d: [f32; 8],
    dmin: [f32; 8],
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn unpack(blk: &impl Kx8, five: bool, u: &mut Unpacked) {
    let (sc, mn) = q4_k_scales(blk.scales());
    let q = u.q.as_mut_ptr();
    for c in 0..4 {
        for p in 0..8 {
            let (lo, hi) = k_piece(blk, five, c, p);
            // SAFETY: offsets ≤ 64·7 + 8·7, each followed by 8 u32 inside `u.q` (512).
            unsafe {
                _mm256_storeu_si256(q.add(64 * (2 * c) + 8 * p).cast(), lo);
                _mm256_storeu_si256(q.add(64 * (2 * c + 1) + 8 * p).cast(), hi);
            }
        }
        let mpair = _mm256_or_si256(
            _mm256_cvtepu8_epi32(mn[2 * c]),
            _mm256_slli_epi32(_mm256_cvtepu8_epi32(mn[2 * c + 1]), 16),
        );
        // SAFETY: 8 i32 at 8c (≤ 24) inside `u.mn` (32).
        unsafe { _mm256_storeu_si256(u.mn.as_mut_ptr().add(8 * c).cast(), mpair) };
    }
    for (s, v) in sc.iter().enumerate() {
        // SAFETY: 8 i32 at 8s (≤ 56) inside `u.sc` (64).
        unsafe { _mm256_storeu_si256(u.sc.as_mut_ptr().add(8 * s).cast(), _mm256_cvtepu8_epi32(*v)) };
    }
    // SAFETY: 16 readable bytes each (eight f16); 8 writable f32 each.
    unsafe {
        _mm256_storeu_ps(
            u.d.as_mut_ptr(),
            _mm256_cvtph_ps(_mm_loadu_si128(blk.d().as_ptr().cast())),
        );
        _mm256_storeu_ps(
            u.dmin.as_mut_ptr(),
            _mm256_cvtph_ps(_mm_loadu_si128(blk.dmin().as_ptr().cast())),
        );
    }
}

/// Token groups (of sixteen) per call at most: the unpacked weights of a super-block
/// serve all of them.
pub(super) const MAX_GROUPS: usize = 4;

/// Eight rows (one x8 group, `wg` its `nb` super-blocks) times the `ng` sixteen-token
/// groups of `x` (`ng · nb` blocks, group-major): `acc[v][r]` is row `r`'s sixteen
/// outputs of group `v`, kept in memory (each is touched once per super-block).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn group_k<W: Kx8>(wg: &[W], x: &[BlockQ8_Kx16], ng: usize, acc: &mut [[__m512; 8]; MAX_GROUPS]) {
    let five = k_five(wg);
    let u = &mut Unpacked {
        q: [0; 512],
        sc: [0; 64],
        mn: [0; 32],
        d: [0.0; 8],
        dmin: [0.0; 8],
    };
    let nb = wg.len();
    assert!(ng <= MAX_GROUPS && x.len() >= ng * nb);
    for a in acc.iter_mut() {
        *a = [_mm512_setzero_ps(); 8];
    }
    for (b, blk) in wg.iter().enumerate() {
        unpack(blk, five, u);
        let (q, sc, mn) = (u.q.as_ptr(), u.sc.as_ptr(), u.mn.as_ptr());
        for (v, av) in acc.iter_mut().enumerate().take(ng) {
            let xb = &x[v * nb + b];
            let xq = xb.qs.as_ptr();
            let mut isum = [_mm512_setzero_si512(); 8];
            for s in 0..8 {
                let mut ss = [_mm512_setzero_si512(); 8];
                for p in 0..8 {
                    // SAFETY: `xq` has 1024 i32; 16 at 16(8s + p) ≤ 1008. `q` has 512
                    // u32; index 64s + 8p + r ≤ 511.
                    unsafe {
                        let a = _mm512_loadu_si512(xq.add(16 * (8 * s + p)).cast());
                        for (r, sv) in ss.iter_mut().enumerate() {
                            let wv = _mm512_set1_epi32(*q.add(64 * s + 8 * p + r) as i32);
                            *sv = _mm512_dpbusd_epi32(*sv, wv, a);
                        }
                    }
                }
                for (r, iv) in isum.iter_mut().enumerate() {
                    // SAFETY: index 8s + r ≤ 63 of `sc` (64).
                    let scv = _mm512_set1_epi32(unsafe { *sc.add(8 * s + r) });
                    *iv = _mm512_add_epi32(*iv, _mm512_mullo_epi32(ss[r], scv));
                }
            }
            let mut msum = [_mm512_setzero_si512(); 8];
            for c in 0..4 {
                // SAFETY: 16 i32 at 16c ≤ 48 of `bs` (64); index 8c + r ≤ 31 of `mn` (32).
                unsafe {
                    let bv = _mm512_loadu_si512(xb.bs.as_ptr().add(16 * c).cast());
                    for (r, mv) in msum.iter_mut().enumerate() {
                        *mv = _mm512_dpwssd_epi32(*mv, _mm512_set1_epi32(*mn.add(8 * c + r)), bv);
                    }
                }
            }
            // SAFETY: 16 f32 of `d`.
            let dy = unsafe { _mm512_loadu_ps(xb.d.as_ptr()) };
            for r in 0..ROWS_X8 {
                let dw = _mm512_mul_ps(dy, _mm512_set1_ps(u.d[r]));
                let dm = _mm512_mul_ps(dy, _mm512_set1_ps(u.dmin[r]));
                av[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), dw, av[r]);
                av[r] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum[r]), dm, av[r]);
            }
        }
    }
}

/// Generates `$name(w, x, nb, y)` (the `Kernels::gemm_q5_kx8_t16` signature) from a
/// group function `$group(w_group, x, ng, &mut acc)` that leaves eight rows' outputs
/// for `ng` token groups in `acc`.
macro_rules! t16_driver {
    ($name:ident, $w:ty, $group:ident) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        fn $name(w: &[$w], x: &[BlockQ8_Kx16], nb: usize, y: &mut [f32]) {
            if nb == 0 {
                y.fill(0.0);
                return;
            }
            let groups = w.len() / nb;
            let rows = groups * ROWS_X8;
            if rows == 0 {
                return;
            }
            let toks = y.len() / rows;
            let ng = toks.div_ceil(TOKS_X16);
            assert!(ng <= MAX_GROUPS && x.len() >= ng * nb);
            let mut acc = [[_mm512_setzero_ps(); 8]; MAX_GROUPS];
            let mut out = [[0f32; TOKS_X16]; ROWS_X8];
            for g in 0..groups {
                $group(&w[g * nb..(g + 1) * nb], x, ng, &mut acc);
                for (v, av) in acc.iter().enumerate().take(ng) {
                    for (o, a) in out.iter_mut().zip(av) {
                        // SAFETY: 16 writable f32.
                        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *a) };
                    }
                    for t in 0..TOKS_X16.min(toks - TOKS_X16 * v) {
                        let yt = &mut y[(TOKS_X16 * v + t) * rows + g * ROWS_X8..][..ROWS_X8];
                        for (r, o) in yt.iter_mut().enumerate() {
                            *o = out[r][t];
                        }
                    }
                }
            }
        }
    };
}
t16_driver!(gemm_q4_kx8_t16_impl, BlockQ4_Kx8, group_k);
t16_driver!(gemm_q5_kx8_t16_impl, BlockQ5_Kx8, group_k);
t16_driver!(gemm_q6_kx8_t16_impl, BlockQ6_Kx8, group_q6_k);

/// A Q6_K group's super-block, unpacked once for its token groups.
#[repr(C, align(64))]
struct Unpacked6 {
    /// `q[32s + 8p + j]`: row `j`'s six-bit values `16s + 4p .. + 4` (sub-block `s` of
    /// 16) as bytes.
    q: [u32; 512],
    /// `sc[8s + j]`: row `j`'s signed scale of sub-block `s`.
    sc: [i32; 128],
    /// `scp[8k + j]`: row `j`'s scales of sub-blocks `2k` (low 16 bits), `2k + 1` (high).
    scp: [i32; 64],
    d: [f32; 8],
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn unpack6(blk: &BlockQ6_Kx8, u: &mut Unpacked6) {
    let q = u.q.as_mut_ptr();
    for (c, ch) in blk.c.iter().enumerate() {
        let wa = _mm256_cvtepi8_epi32(load8(&ch.scales[..]));
        let wb = _mm256_cvtepi8_epi32(load8(&ch.scales[8..]));
        let pair = _mm256_blend_epi16(wa, _mm256_slli_epi32(wb, 16), 0xaa);
        // SAFETY: ha/hb: 32 readable bytes each of `qh` (64). Stores: 8 i32 at 16c,
        // 16c + 8 (≤ 120) of `sc` (128) and at 8c (≤ 56) of `scp` (64).
        let (ha, hb) = unsafe {
            _mm256_storeu_si256(u.sc.as_mut_ptr().add(16 * c).cast(), wa);
            _mm256_storeu_si256(u.sc.as_mut_ptr().add(16 * c + 8).cast(), wb);
            _mm256_storeu_si256(u.scp.as_mut_ptr().add(8 * c).cast(), pair);
            (
                _mm256_loadu_si256(ch.qh.as_ptr().cast()),
                _mm256_loadu_si256(ch.qh.as_ptr().add(32).cast()),
            )
        };
        for p in 0..4 {
            let (lo, hi) = q6_k_piece(&ch.ql, ha, hb, p);
            // SAFETY: offsets 32(2c) + 8p, 32(2c + 1) + 8p ≤ 504, each followed by 8 u32
            // inside `u.q` (512).
            unsafe {
                _mm256_storeu_si256(q.add(32 * (2 * c) + 8 * p).cast(), lo);
                _mm256_storeu_si256(q.add(32 * (2 * c + 1) + 8 * p).cast(), hi);
            }
        }
    }
    // SAFETY: 16 readable bytes (eight f16); 8 writable f32.
    unsafe {
        _mm256_storeu_ps(
            u.d.as_mut_ptr(),
            _mm256_cvtph_ps(_mm_loadu_si128(blk.d.as_ptr().cast())),
        )
    };
}

/// Q6_K: as `group_k` with sixteen 16-element sub-blocks (four `vpdpbusd` per row each,
/// then `vpmulld` by the signed scale), values 0..63, and the −32 offset as
/// `32 Σ_s sc_s bsum_s` by `vpdpwssd` of (sc_2k, sc_2k+1) and the tokens' bsum pairs,
/// as `tile_q6_k_vnni`. Exact: |sub-block sum| ≤ 16 · 63 · 128 = 129 024, times |sc| ≤
/// 128, sixteen of them < 2^29; the offset's 32 · 16 · 128 · 2 048 = 2^27.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn group_q6_k(wg: &[BlockQ6_Kx8], x: &[BlockQ8_Kx16], ng: usize, acc: &mut [[__m512; 8]; MAX_GROUPS]) {
    let nb = wg.len();
    assert!(ng <= MAX_GROUPS && x.len() >= ng * nb);
    let u = &mut Unpacked6 {
        q: [0; 512],
        sc: [0; 128],
        scp: [0; 64],
        d: [0.0; 8],
    };
    for a in acc.iter_mut() {
        *a = [_mm512_setzero_ps(); 8];
    }
    for (b, blk) in wg.iter().enumerate() {
        unpack6(blk, u);
        let (q, sc, scp) = (u.q.as_ptr(), u.sc.as_ptr(), u.scp.as_ptr());
        for (v, av) in acc.iter_mut().enumerate().take(ng) {
            let xb = &x[v * nb + b];
            let xq = xb.qs.as_ptr();
            let mut isum = [_mm512_setzero_si512(); 8];
            for s in 0..16 {
                let mut ss = [_mm512_setzero_si512(); 8];
                for p in 0..4 {
                    // SAFETY: `xq` has 1024 i32; 16 at 16(4s + p) ≤ 1008. `q` has 512
                    // u32; index 32s + 8p + r ≤ 511.
                    unsafe {
                        let a = _mm512_loadu_si512(xq.add(16 * (4 * s + p)).cast());
                        for (r, sv) in ss.iter_mut().enumerate() {
                            let wv = _mm512_set1_epi32(*q.add(32 * s + 8 * p + r) as i32);
                            *sv = _mm512_dpbusd_epi32(*sv, wv, a);
                        }
                    }
                }
                for (r, iv) in isum.iter_mut().enumerate() {
                    // SAFETY: index 8s + r ≤ 127 of `sc` (128).
                    let scv = _mm512_set1_epi32(unsafe { *sc.add(8 * s + r) });
                    *iv = _mm512_add_epi32(*iv, _mm512_mullo_epi32(ss[r], scv));
                }
            }
            let mut off = [_mm512_setzero_si512(); 8];
            for k in 0..8 {
                // SAFETY: 16 i32 at 16k ≤ 112 of `bs16` (128); index 8k + r ≤ 63 of `scp`.
                unsafe {
                    let bv = _mm512_loadu_si512(xb.bs16.as_ptr().add(16 * k).cast());
                    for (r, ov) in off.iter_mut().enumerate() {
                        *ov = _mm512_dpwssd_epi32(*ov, _mm512_set1_epi32(*scp.add(8 * k + r)), bv);
                    }
                }
            }
            // SAFETY: 16 f32 of `d`.
            let dy = unsafe { _mm512_loadu_ps(xb.d.as_ptr()) };
            for r in 0..ROWS_X8 {
                let s = _mm512_sub_epi32(isum[r], _mm512_slli_epi32(off[r], 5));
                let dw = _mm512_mul_ps(dy, _mm512_set1_ps(u.d[r]));
                av[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), dw, av[r]);
            }
        }
    }
}

// Safe entry points, reachable only through `avx512::kernels()`, which puts them in the
// table only when it found AVX-512 F/BW/VL/VNNI besides AVX2, FMA and F16C.

pub(super) fn gemm_q5_kx8_t16(w: &[BlockQ5_Kx8], x: &[BlockQ8_Kx16], nb: usize, y: &mut [f32]) {
    // SAFETY: see above.
    unsafe { gemm_q5_kx8_t16_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_kx8_t16(w: &[BlockQ4_Kx8], x: &[BlockQ8_Kx16], nb: usize, y: &mut [f32]) {
    // SAFETY: see above.
    unsafe { gemm_q4_kx8_t16_impl(w, x, nb, y) }
}
pub(super) fn gemm_q6_kx8_t16(w: &[BlockQ6_Kx8], x: &[BlockQ8_Kx16], nb: usize, y: &mut [f32]) {
    // SAFETY: see above.
    unsafe { gemm_q6_kx8_t16_impl(w, x, nb, y) }
}
