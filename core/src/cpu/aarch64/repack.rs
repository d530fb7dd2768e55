//! aarch64 kernels for the row-interleaved x8 weight layouts (`cpu::repack`): NEON
//! (`smlal` into i16 over a block for Q4, `smull` + pairwise adds per piece for Q8_0)
//! and NEON + dotprod (`sdot`). A 32-byte piece of an x8
//! block is two 128-bit registers, rows 0–3 and rows 4–7, one 32-bit lane a row, so
//! each lane's four products belong to one row and two `float32x4_t` accumulators hold
//! the eight rows' outputs. The activation piece (4 bytes) is loaded with `ld1r`
//! (broadcast to all lanes) on NEON; with dotprod the activation block is loaded once
//! into two registers and `sdot` takes the piece by element (`sdot v.4s, w.16b,
//! x.4b[i]`), as `scripts/arm-cost.sh` showed the broadcasts dominated the prefill step.
//!
//! Exactness: integer block sums are exact (i8·i8 products fit i16; lanes sum in i32);
//! `Σ (q − 8)·y = Σ q·y − 8 Σ y` for Q4_0, the lanes starting at `−8 Σ y`. Per block the
//! float step is `acc += sumi · (d_w · d_x)` fused into one FMA, so results differ from
//! the scalar twins by f32 rounding only.

use core::arch::aarch64::*;

use crate::cpu::repack::{
    k_five, q5_offset, BlockQ4_0x8, BlockQ4_1x8, BlockQ4_Kx8, BlockQ5_0x8, BlockQ5_1x8, BlockQ5_Kx8, BlockQ6_Kx8,
    BlockQ8Act, BlockQ8_0x8, Kx8, Q5x8,
};
use crate::quant::BlockQ8_K;

/// Per 32-bit lane, the sum of the four byte products of that lane (NEON).
#[inline]
#[target_feature(enable = "neon")]
fn dot4_neon(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    // smull: 8 i16 products of bytes 0..8 (lanes 0, 1) and 8..16 (lanes 2, 3); each
    // pairwise widening add halves them to per-pair i32, one more pairwise add to lanes.
    let lo = vpaddlq_s16(vmull_s8(vget_low_s8(a), vget_low_s8(b)));
    let hi = vpaddlq_s16(vmull_high_s8(a, b));
    vaddq_s32(acc, vpaddq_s32(lo, hi))
}

/// `sdot` by element: each lane of `acc` gains the four products of its bytes of `a`
/// with 32-bit element `L` of `b` (exact).
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot_lane<const L: usize>(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
    let mut acc = acc;
    // SAFETY: `sdot` (by element) reads two vector registers and updates a third,
    // nothing else; the enclosing fn is only reached when dotprod was detected.
    unsafe {
        core::arch::asm!(
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.4b[{l}]",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            l = const L,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// Piece `c` of an activation block against weight bytes `w`, dotprod: the block is in
/// two registers (`xv`, loaded once per block), the piece taken by element (no
/// broadcast load). `c` is a constant after unrolling, so the `match` folds away.
#[inline(always)]
#[allow(unused_variables)]
fn dotc_sdot(acc: int32x4_t, w: int8x16_t, xq: &[i8; 32], xv: &[int8x16_t; 2], c: usize) -> int32x4_t {
    // SAFETY: only called from the `neon,dotprod` kernels below, reached through the
    // NeonDotprod table (dotprod detected).
    unsafe {
        match c {
            0 => sdot_lane::<0>(acc, w, xv[0]),
            1 => sdot_lane::<1>(acc, w, xv[0]),
            2 => sdot_lane::<2>(acc, w, xv[0]),
            3 => sdot_lane::<3>(acc, w, xv[0]),
            4 => sdot_lane::<0>(acc, w, xv[1]),
            5 => sdot_lane::<1>(acc, w, xv[1]),
            6 => sdot_lane::<2>(acc, w, xv[1]),
            _ => sdot_lane::<3>(acc, w, xv[1]),
        }
    }
}

/// Piece `c` of an activation block against weight bytes `w`, NEON: the piece
/// broadcast from memory (`ld1r`).
#[inline(always)]
#[allow(unused_variables)]
fn dotc_neon(acc: int32x4_t, w: int8x16_t, xq: &[i8; 32], xv: &[int8x16_t; 2], c: usize) -> int32x4_t {
    // SAFETY: only called from the `neon` kernels below (NEON verified).
    unsafe { dot4_neon(acc, w, bcast4(xq, c)) }
}

/// The activation block in two registers (elements 0..16, 16..32).
#[inline]
#[target_feature(enable = "neon")]
fn act2(qs: &[i8; 32]) -> [int8x16_t; 2] {
    // SAFETY: `qs` is 32 readable bytes; no alignment need.
    unsafe { [vld1q_s8(qs.as_ptr()), vld1q_s8(qs.as_ptr().add(16))] }
}

/// Activation piece `c` (bytes `4c..4c+4`) in all four lanes.
#[inline]
#[target_feature(enable = "neon")]
fn bcast4(qs: &[i8; 32], c: usize) -> int8x16_t {
    let p = &qs[4 * c..4 * c + 4];
    // SAFETY: `p` is 4 readable bytes (bounds checked); `ld1r` has no alignment need.
    vreinterpretq_s8_s32(unsafe { vld1q_dup_s32(p.as_ptr().cast()) })
}

#[inline]
#[target_feature(enable = "neon")]
fn ld16(b: &[u8]) -> uint8x16_t {
    let s = &b[..16];
    // SAFETY: `s` is 16 readable bytes (bounds checked); no alignment need.
    unsafe { vld1q_u8(s.as_ptr()) }
}

/// Four f16 scales as f32 (`fcvtl`, base ARMv8 NEON; the intrinsic is not stable Rust).
#[inline]
#[target_feature(enable = "neon")]
fn f16x4(d: &[half::f16]) -> float32x4_t {
    let s = &d[..4];
    // SAFETY: `s` is 8 readable bytes (bounds checked); no alignment need.
    let h = unsafe { vld1_u16(s.as_ptr().cast()) };
    let out: float32x4_t;
    // SAFETY: `fcvtl` converts the four f16 lanes of one register into four f32 lanes
    // of another and touches nothing else; NEON is verified by the table constructor.
    unsafe {
        core::arch::asm!(
            "fcvtl {o:v}.4s, {h:v}.4h",
            o = out(vreg) out,
            h = in(vreg) h,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    out
}

/// Repeats `$body` with `$v` bound to each listed constant (a loop the compiler cannot
/// leave rolled: the piece index must be a constant where `dotc_sdot` picks an `sdot`
/// lane).
macro_rules! unroll {
    ($v:ident in [$($n:literal),*] $body:block) => {
        $( { const $v: usize = $n; $body } )*
    };
}

/// Q4 pieces of one x8 block with dotprod: for `q < 4`, rows 0–3 / 4–7 of the low
/// nibbles (elements `4q..4q+4`) and of the high nibbles (elements `4q+16..`) against
/// the activation pieces by element, accumulated per token into `s[t] = [rows 0–3,
/// rows 4–7]`.
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn q4_sums_dot<const T: usize>(qs: &[u8; 128], xs: &[&BlockQ8Act; T], s: &mut [[int32x4_t; 2]; T]) {
    let m4 = vdupq_n_u8(0x0f);
    let xv: [[int8x16_t; 2]; T] = core::array::from_fn(|t| act2(&xs[t].qs));
    unroll!(Q in [0, 1, 2, 3] {
        let q = Q;
        let p = [ld16(&qs[32 * q..]), ld16(&qs[32 * q + 16..])];
        let lo = [vreinterpretq_s8_u8(vandq_u8(p[0], m4)), vreinterpretq_s8_u8(vandq_u8(p[1], m4))];
        let hi = [vreinterpretq_s8_u8(vshrq_n_u8(p[0], 4)), vreinterpretq_s8_u8(vshrq_n_u8(p[1], 4))];
        for t in 0..T {
            for h in 0..2 {
                s[t][h] = dotc_sdot(dotc_sdot(s[t][h], lo[h], &xs[t].qs, &xv[t], q), hi[h], &xs[t].qs, &xv[t], q + 4);
            }
        }
    });
}

/// The same sums without dotprod: per half-register, `smlal` accumulates the i16
/// products of all eight pieces (a lane meets one nibble (≤ 15) times one activation
/// (|y| ≤ 128) per piece: ≤ 8 · 1 920 = 15 360, exact in i16), and one pairwise
/// reduction per block (`saddlp`, `addp`) gives the rows' i32 sums — instead of a
/// widening reduction per piece.
#[inline]
#[target_feature(enable = "neon")]
fn q4_sums_neon<const T: usize>(qs: &[u8; 128], xs: &[&BlockQ8Act; T], s: &mut [[int32x4_t; 2]; T]) {
    let m4 = vdupq_n_u8(0x0f);
    // acc[t][h][k]: i16 products, k = 0: bytes 0..8 (rows 0, 1 of the half), 1: 8..16.
    let mut acc = [[[vdupq_n_s16(0); 2]; 2]; T];
    unroll!(Q in [0, 1, 2, 3] {
        let q = Q;
        let p = [ld16(&qs[32 * q..]), ld16(&qs[32 * q + 16..])];
        let lo = [vreinterpretq_s8_u8(vandq_u8(p[0], m4)), vreinterpretq_s8_u8(vandq_u8(p[1], m4))];
        let hi = [vreinterpretq_s8_u8(vshrq_n_u8(p[0], 4)), vreinterpretq_s8_u8(vshrq_n_u8(p[1], 4))];
        for t in 0..T {
            let (xl, xh) = (bcast4(&xs[t].qs, q), bcast4(&xs[t].qs, q + 4));
            for h in 0..2 {
                let a = &mut acc[t][h];
                a[0] = vmlal_s8(a[0], vget_low_s8(lo[h]), vget_low_s8(xl));
                a[1] = vmlal_high_s8(a[1], lo[h], xl);
                a[0] = vmlal_s8(a[0], vget_low_s8(hi[h]), vget_low_s8(xh));
                a[1] = vmlal_high_s8(a[1], hi[h], xh);
            }
        }
    });
    for t in 0..T {
        for h in 0..2 {
            let r = vpaddq_s32(vpaddlq_s16(acc[t][h][0]), vpaddlq_s16(acc[t][h][1]));
            s[t][h] = vaddq_s32(s[t][h], r);
        }
    }
}

/// Generates the three x8 kernels of one dot flavour (`$dot4`) and their driver.
macro_rules! x8_kernels {
    ($feat:literal, $dotc:ident, $sums:ident, $q4_0:ident, $q4_1:ident, $q8_0:ident) => {
        #[inline]
        #[target_feature(enable = $feat)]
        fn $q4_0<const T: usize>(wg: &[BlockQ4_0x8], xs: [&[BlockQ8Act]; T]) -> [[float32x4_t; 2]; T] {
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for (b, blk) in wg.iter().enumerate() {
                let xb: [&BlockQ8Act; T] = core::array::from_fn(|t| &xs[t][b]);
                let mut s: [[int32x4_t; 2]; T] = core::array::from_fn(|t| [vdupq_n_s32(-8 * xb[t].sum); 2]);
                $sums(&blk.qs, &xb, &mut s);
                let dw = [f16x4(&blk.d[..4]), f16x4(&blk.d[4..])];
                for t in 0..T {
                    for h in 0..2 {
                        acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(s[t][h]), vmulq_n_f32(dw[h], xb[t].d));
                    }
                }
            }
            acc
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn $q4_1<const T: usize>(wg: &[BlockQ4_1x8], xs: [&[BlockQ8Act]; T]) -> [[float32x4_t; 2]; T] {
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for (b, blk) in wg.iter().enumerate() {
                let xb: [&BlockQ8Act; T] = core::array::from_fn(|t| &xs[t][b]);
                let mut s = [[vdupq_n_s32(0); 2]; T];
                $sums(&blk.qs, &xb, &mut s);
                let dw = [f16x4(&blk.d[..4]), f16x4(&blk.d[4..])];
                let mw = [f16x4(&blk.m[..4]), f16x4(&blk.m[4..])];
                for t in 0..T {
                    for h in 0..2 {
                        acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(s[t][h]), vmulq_n_f32(dw[h], xb[t].d));
                        acc[t][h] = vfmaq_n_f32(acc[t][h], mw[h], xb[t].s);
                    }
                }
            }
            acc
        }

        #[inline]
        #[target_feature(enable = $feat)]
        fn $q8_0<const T: usize>(wg: &[BlockQ8_0x8], xs: [&[BlockQ8Act]; T]) -> [[float32x4_t; 2]; T] {
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for (b, blk) in wg.iter().enumerate() {
                let xb: [&BlockQ8Act; T] = core::array::from_fn(|t| &xs[t][b]);
                let mut s = [[vdupq_n_s32(0); 2]; T];
                let qs: &[u8; 256] = bytemuck::cast_ref(&blk.qs);
                let xv: [[int8x16_t; 2]; T] = core::array::from_fn(|t| act2(&xb[t].qs));
                unroll!(C in [0, 1, 2, 3, 4, 5, 6, 7] {
                    let c = C;
                    let w = [
                        vreinterpretq_s8_u8(ld16(&qs[32 * c..])),
                        vreinterpretq_s8_u8(ld16(&qs[32 * c + 16..])),
                    ];
                    for t in 0..T {
                        for h in 0..2 {
                            s[t][h] = $dotc(s[t][h], w[h], &xb[t].qs, &xv[t], c);
                        }
                    }
                });
                let dw = [f16x4(&blk.d[..4]), f16x4(&blk.d[4..])];
                for t in 0..T {
                    for h in 0..2 {
                        acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(s[t][h]), vmulq_n_f32(dw[h], xb[t].d));
                    }
                }
            }
            acc
        }
    };
}

x8_kernels!(
    "neon",
    dotc_neon,
    q4_sums_neon,
    tile_q4_0_neon,
    tile_q4_1_neon,
    tile_q8_0_neon
);
x8_kernels!(
    "neon,dotprod",
    dotc_sdot,
    q4_sums_dot,
    tile_q4_0_dot,
    tile_q4_1_dot,
    tile_q8_0_dot
);

/// One pair of accumulators (rows 0–3, 4–7) into `o[..8]`.
#[inline]
#[target_feature(enable = "neon")]
fn store8(a: &[float32x4_t; 2], o: &mut [f32]) {
    let o = &mut o[..8];
    // SAFETY: `o` is 8 writable f32 (bounds checked); no alignment need.
    unsafe {
        vst1q_f32(o.as_mut_ptr(), a[0]);
        vst1q_f32(o.as_mut_ptr().add(4), a[1]);
    }
}

use crate::cpu::repack::x8_driver;

x8_driver!(q4_0x8_neon_impl, "neon", BlockQ4_0x8, tile_q4_0_neon, store8);
x8_driver!(q4_1x8_neon_impl, "neon", BlockQ4_1x8, tile_q4_1_neon, store8);
x8_driver!(q8_0x8_neon_impl, "neon", BlockQ8_0x8, tile_q8_0_neon, store8);
x8_driver!(q4_0x8_dot_impl, "neon,dotprod", BlockQ4_0x8, tile_q4_0_dot, store8);
x8_driver!(q4_1x8_dot_impl, "neon,dotprod", BlockQ4_1x8, tile_q4_1_dot, store8);
x8_driver!(q8_0x8_dot_impl, "neon,dotprod", BlockQ8_0x8, tile_q8_0_dot, store8);

// --- the Q4_K_M types (Q5_0, Q4_K, Q6_K) ------------------------------------------------
//
// Weights are unpacked to bytes ≤ 63 (valid non-negative i8), so one signed byte dot
// serves every type: per 32-bit lane (row) the four products of a weight piece and the
// broadcast activation piece, exact in i32. Sub-block scales multiply the i32 sums
// (`mla`); offsets and minimums go through the activation sums, as on x86-64.

/// Activation bytes `qs[off..off + 4]` in all four lanes (`ld1r`).
#[inline]
#[target_feature(enable = "neon")]
fn bcast_at(qs: &[i8], off: usize) -> int8x16_t {
    let p = &qs[off..off + 4];
    // SAFETY: `p` is 4 readable bytes (bounds checked); `ld1r` has no alignment need.
    vreinterpretq_s8_s32(unsafe { vld1q_dup_s32(p.as_ptr().cast()) })
}

/// `sdot` of two vectors: each lane gains the four products of its bytes (exact).
#[inline]
#[target_feature(enable = "neon,dotprod")]
fn sdot_vec(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
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

#[inline(always)]
fn kdot_neon(acc: int32x4_t, w: uint8x16_t, xq: &[i8], off: usize) -> int32x4_t {
    // SAFETY: only called from the `neon` tiles below (NEON verified).
    unsafe { dot4_neon(acc, vreinterpretq_s8_u8(w), bcast_at(xq, off)) }
}

#[inline(always)]
fn kdot_sdot(acc: int32x4_t, w: uint8x16_t, xq: &[i8], off: usize) -> int32x4_t {
    // SAFETY: only called from the `neon,dotprod` tiles below (dotprod detected).
    unsafe { sdot_vec(acc, vreinterpretq_s8_u8(w), bcast_at(xq, off)) }
}

/// Eight bytes at `p[..8]` (one per row) widened to two i32x4 (rows 0–3, 4–7).
#[inline]
#[target_feature(enable = "neon")]
fn widen8_u(v: uint8x8_t) -> [int32x4_t; 2] {
    let w = vmovl_u8(v);
    [
        vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w))),
        vreinterpretq_s32_u32(vmovl_high_u16(w)),
    ]
}

#[inline]
#[target_feature(enable = "neon")]
fn ld8(b: &[u8]) -> uint8x8_t {
    let s = &b[..8];
    // SAFETY: `s` is 8 readable bytes (bounds checked); no alignment need.
    unsafe { vld1_u8(s.as_ptr()) }
}

/// Generates the Q5_0 / Q5_1, Q4_K / Q5_K and Q6_K tiles of one dot flavour.
macro_rules! x8_kq_kernels {
    ($feat:literal, $kdot:ident, $q5:ident, $k:ident, $q6_k:ident) => {
        /// Q5_0 / Q5_1 × Q8: the fifth bit of piece `q` at bit `q` (low elements) and
        /// `4 + q` (high elements) of each byte of the permuted `qh`, moved to bit 4.
        /// Q5_0's lanes start at `−16 Σ y`; Q5_1 adds `m_w s_y` per block, as Q4_1.
        #[inline]
        #[target_feature(enable = $feat)]
        fn $q5<const T: usize>(wg: &[impl Q5x8], xs: [&[BlockQ8Act]; T]) -> [[float32x4_t; 2]; T] {
            let m4 = vdupq_n_u8(0x0f);
            let off = q5_offset(wg);
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for (b, blk) in wg.iter().enumerate() {
                let xb: [&BlockQ8Act; T] = core::array::from_fn(|t| &xs[t][b]);
                let qhb: &[u8; 32] = bytemuck::cast_ref(blk.qh());
                let qh = [ld16(&qhb[..]), ld16(&qhb[16..])];
                let mut s: [[int32x4_t; 2]; T] = core::array::from_fn(|t| [vdupq_n_s32(-off * xb[t].sum); 2]);
                for q in 0..4 {
                    let (sl, sh) = (vdupq_n_s8(4 - q as i8), vdupq_n_s8(-(q as i8)));
                    for h in 0..2 {
                        let p = ld16(&blk.qs()[32 * q + 16 * h..]);
                        let bl = vshlq_u8(vandq_u8(qh[h], vdupq_n_u8(1 << q)), sl);
                        let bh = vshlq_u8(vandq_u8(qh[h], vdupq_n_u8(0x10 << q)), sh);
                        let lo = vorrq_u8(vandq_u8(p, m4), bl);
                        let hi = vorrq_u8(vshrq_n_u8(p, 4), bh);
                        for t in 0..T {
                            s[t][h] = $kdot($kdot(s[t][h], lo, &xb[t].qs, 4 * q), hi, &xb[t].qs, 16 + 4 * q);
                        }
                    }
                }
                let d = blk.d();
                let dw = [f16x4(&d[..4]), f16x4(&d[4..])];
                for t in 0..T {
                    for h in 0..2 {
                        acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(s[t][h]), vmulq_n_f32(dw[h], xb[t].d));
                    }
                }
                if let Some(m) = blk.m() {
                    let mw = [f16x4(&m[..4]), f16x4(&m[4..])];
                    for t in 0..T {
                        for h in 0..2 {
                            acc[t][h] = vfmaq_n_f32(acc[t][h], mw[h], xb[t].s);
                        }
                    }
                }
            }
            acc
        }

        /// Q4_K / Q5_K × Q8_K: per sub-block the value dots scaled by its 6-bit scale
        /// (`mla`), the minimums through `bsums`; `d_y (d_w isum) − d_y (dmin msum)`. Q5_K's
        /// fifth bits: bit `2c` / `2c + 1` of the `qh` piece moved to bit 4.
        #[inline]
        #[target_feature(enable = $feat)]
        fn $k<const T: usize>(wg: &[impl Kx8], xs: [&[BlockQ8_K]; T]) -> [[float32x4_t; 2]; T] {
            let m4 = vdupq_n_u8(0x0f);
            let five = k_five(wg);
            let (m63, m15, m30) = (vdup_n_u8(63), vdup_n_u8(15), vdup_n_u8(0x30));
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for (b, blk) in wg.iter().enumerate() {
                let xb: [&BlockQ8_K; T] = core::array::from_fn(|t| &xs[t][b]);
                let sb: [uint8x8_t; 12] = core::array::from_fn(|k| ld8(&blk.scales()[8 * k..]));
                let sc: [[int32x4_t; 2]; 8] = core::array::from_fn(|s| {
                    widen8_u(if s < 4 {
                        vand_u8(sb[s], m63)
                    } else {
                        vorr_u8(vand_u8(sb[s + 4], m15), vand_u8(vshr_n_u8(sb[s - 4], 2), m30))
                    })
                });
                let mn: [[int32x4_t; 2]; 8] = core::array::from_fn(|s| {
                    widen8_u(if s < 4 {
                        vand_u8(sb[s + 4], m63)
                    } else {
                        vorr_u8(vshr_n_u8(sb[s + 4], 4), vand_u8(vshr_n_u8(sb[s], 2), m30))
                    })
                });
                let mut isum = [[vdupq_n_s32(0); 2]; T];
                let mut msum = [[vdupq_n_s32(0); 2]; T];
                for c in 0..4 {
                    let mut slo = [[vdupq_n_s32(0); 2]; T];
                    let mut shi = [[vdupq_n_s32(0); 2]; T];
                    let (ml, mh) = (vdupq_n_u8(1 << (2 * c)), vdupq_n_u8(2 << (2 * c)));
                    let (sl, sh) = (vdupq_n_s8(4 - 2 * c as i8), vdupq_n_s8(3 - 2 * c as i8));
                    for p in 0..8 {
                        for h in 0..2 {
                            let v = ld16(&blk.qs()[256 * c + 32 * p + 16 * h..]);
                            let (mut lo, mut hi) = (vandq_u8(v, m4), vshrq_n_u8(v, 4));
                            if five {
                                let qh = ld16(&blk.qh()[32 * p + 16 * h..]);
                                lo = vorrq_u8(lo, vshlq_u8(vandq_u8(qh, ml), sl));
                                hi = vorrq_u8(hi, vshlq_u8(vandq_u8(qh, mh), sh));
                            }
                            for t in 0..T {
                                slo[t][h] = $kdot(slo[t][h], lo, &xb[t].qs, 64 * c + 4 * p);
                                shi[t][h] = $kdot(shi[t][h], hi, &xb[t].qs, 64 * c + 32 + 4 * p);
                            }
                        }
                    }
                    for t in 0..T {
                        let bs = &xb[t].bsums;
                        let b0 = i32::from(bs[4 * c]) + i32::from(bs[4 * c + 1]);
                        let b1 = i32::from(bs[4 * c + 2]) + i32::from(bs[4 * c + 3]);
                        for h in 0..2 {
                            isum[t][h] = vmlaq_s32(isum[t][h], slo[t][h], sc[2 * c][h]);
                            isum[t][h] = vmlaq_s32(isum[t][h], shi[t][h], sc[2 * c + 1][h]);
                            msum[t][h] = vmlaq_n_s32(msum[t][h], mn[2 * c][h], b0);
                            msum[t][h] = vmlaq_n_s32(msum[t][h], mn[2 * c + 1][h], b1);
                        }
                    }
                }
                let (d, dmin) = (blk.d(), blk.dmin());
                let dw = [f16x4(&d[..4]), f16x4(&d[4..])];
                let mw = [f16x4(&dmin[..4]), f16x4(&dmin[4..])];
                for t in 0..T {
                    for h in 0..2 {
                        acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(isum[t][h]), vmulq_n_f32(dw[h], xb[t].d));
                        acc[t][h] = vfmsq_f32(acc[t][h], vcvtq_f32_s32(msum[t][h]), vmulq_n_f32(mw[h], xb[t].d));
                    }
                }
            }
            acc
        }

        /// Q6_K × Q8_K: six-bit quants from the nibbles and the top-bit words, per
        /// 16-element sub-block scaled by its signed scale; the −32 offset through
        /// `bsums` (`isum − 32 Σ sc·bsum`).
        #[inline]
        #[target_feature(enable = $feat)]
        fn $q6_k<const T: usize>(wg: &[BlockQ6_Kx8], xs: [&[BlockQ8_K]; T]) -> [[float32x4_t; 2]; T] {
            let m4 = vdupq_n_u8(0x0f);
            let mut acc = [[vdupq_n_f32(0.0); 2]; T];
            for (b, blk) in wg.iter().enumerate() {
                let xb: [&BlockQ8_K; T] = core::array::from_fn(|t| &xs[t][b]);
                let mut isum = [[vdupq_n_s32(0); 2]; T];
                let mut off = [[vdupq_n_s32(0); 2]; T];
                for (c, ch) in blk.c.iter().enumerate() {
                    let scb: &[u8; 16] = bytemuck::cast_ref(&ch.scales);
                    let widen_s = |v: uint8x8_t| {
                        let w = vmovl_s8(vreinterpret_s8_u8(v));
                        [vmovl_s16(vget_low_s16(w)), vmovl_high_s16(w)]
                    };
                    let (sc_lo, sc_hi) = (widen_s(ld8(&scb[..])), widen_s(ld8(&scb[8..])));
                    for h in 0..2 {
                        let ha = ld16(&ch.qh[16 * h..]);
                        let hb = ld16(&ch.qh[32 + 16 * h..]);
                        let mut slo = [vdupq_n_s32(0); T];
                        let mut shi = [vdupq_n_s32(0); T];
                        for p in 0..4 {
                            let v = ld16(&ch.ql[32 * p + 16 * h..]);
                            let (mask, sh) = (vdupq_n_u8(3 << (2 * p)), vdupq_n_s8(4 - 2 * p as i8));
                            let lo = vorrq_u8(vandq_u8(v, m4), vshlq_u8(vandq_u8(ha, mask), sh));
                            let hi = vorrq_u8(vshrq_n_u8(v, 4), vshlq_u8(vandq_u8(hb, mask), sh));
                            for t in 0..T {
                                slo[t] = $kdot(slo[t], lo, &xb[t].qs, 32 * c + 4 * p);
                                shi[t] = $kdot(shi[t], hi, &xb[t].qs, 32 * c + 16 + 4 * p);
                            }
                        }
                        for t in 0..T {
                            let bs = &xb[t].bsums;
                            isum[t][h] = vmlaq_s32(isum[t][h], slo[t], sc_lo[h]);
                            isum[t][h] = vmlaq_s32(isum[t][h], shi[t], sc_hi[h]);
                            off[t][h] = vmlaq_n_s32(off[t][h], sc_lo[h], i32::from(bs[2 * c]));
                            off[t][h] = vmlaq_n_s32(off[t][h], sc_hi[h], i32::from(bs[2 * c + 1]));
                        }
                    }
                }
                let dw = [f16x4(&blk.d[..4]), f16x4(&blk.d[4..])];
                for t in 0..T {
                    for h in 0..2 {
                        let s = vsubq_s32(isum[t][h], vshlq_n_s32(off[t][h], 5));
                        acc[t][h] = vfmaq_f32(acc[t][h], vcvtq_f32_s32(s), vmulq_n_f32(dw[h], xb[t].d));
                    }
                }
            }
            acc
        }
    };
}

x8_kq_kernels!("neon", kdot_neon, tile_q5_neon, tile_k_neon, tile_q6_k_neon);
x8_kq_kernels!("neon,dotprod", kdot_sdot, tile_q5_dot, tile_k_dot, tile_q6_k_dot);

x8_driver!(q5_0x8_neon_impl, "neon", BlockQ5_0x8, tile_q5_neon, store8);
x8_driver!(q5_1x8_neon_impl, "neon", BlockQ5_1x8, tile_q5_neon, store8);
x8_driver!(q4_kx8_neon_impl, "neon", BlockQ4_Kx8, BlockQ8_K, tile_k_neon, store8);
x8_driver!(q5_kx8_neon_impl, "neon", BlockQ5_Kx8, BlockQ8_K, tile_k_neon, store8);
x8_driver!(q6_kx8_neon_impl, "neon", BlockQ6_Kx8, BlockQ8_K, tile_q6_k_neon, store8);
x8_driver!(q5_0x8_dot_impl, "neon,dotprod", BlockQ5_0x8, tile_q5_dot, store8);
x8_driver!(q5_1x8_dot_impl, "neon,dotprod", BlockQ5_1x8, tile_q5_dot, store8);
x8_driver!(
    q4_kx8_dot_impl,
    "neon,dotprod",
    BlockQ4_Kx8,
    BlockQ8_K,
    tile_k_dot,
    store8
);
x8_driver!(
    q5_kx8_dot_impl,
    "neon,dotprod",
    BlockQ5_Kx8,
    BlockQ8_K,
    tile_k_dot,
    store8
);
x8_driver!(
    q6_kx8_dot_impl,
    "neon,dotprod",
    BlockQ6_Kx8,
    BlockQ8_K,
    tile_q6_k_dot,
    store8
);

pub(super) fn gemm_q5_0x8_neon(w: &[BlockQ5_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: handed out only by `aarch64::kernels()`, which verified NEON.
    unsafe { q5_0x8_neon_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_1x8_neon(w: &[BlockQ5_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q5_1x8_neon_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_kx8_neon(w: &[BlockQ4_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q4_kx8_neon_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_kx8_neon(w: &[BlockQ5_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q5_kx8_neon_impl(w, x, nb, y) }
}
pub(super) fn gemm_q6_kx8_neon(w: &[BlockQ6_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q6_kx8_neon_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_0x8_dot(w: &[BlockQ5_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: handed out only in the NeonDotprod table, built after dotprod was detected.
    unsafe { q5_0x8_dot_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_1x8_dot(w: &[BlockQ5_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q5_1x8_dot_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_kx8_dot(w: &[BlockQ4_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q4_kx8_dot_impl(w, x, nb, y) }
}
pub(super) fn gemm_q5_kx8_dot(w: &[BlockQ5_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q5_kx8_dot_impl(w, x, nb, y) }
}
pub(super) fn gemm_q6_kx8_dot(w: &[BlockQ6_Kx8], x: &[BlockQ8_K], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q6_kx8_dot_impl(w, x, nb, y) }
}

// Safe entry points, reachable only through the tables that checked the features.

pub(super) fn gemm_q4_0x8_neon(w: &[BlockQ4_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: handed out only by `aarch64::kernels()`, which verified NEON.
    unsafe { q4_0x8_neon_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_1x8_neon(w: &[BlockQ4_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q4_1x8_neon_impl(w, x, nb, y) }
}
pub(super) fn gemm_q8_0x8_neon(w: &[BlockQ8_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q8_0x8_neon_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_0x8_dot(w: &[BlockQ4_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: handed out only in the NeonDotprod table, built after dotprod was detected.
    unsafe { q4_0x8_dot_impl(w, x, nb, y) }
}
pub(super) fn gemm_q4_1x8_dot(w: &[BlockQ4_1x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q4_1x8_dot_impl(w, x, nb, y) }
}
pub(super) fn gemm_q8_0x8_dot(w: &[BlockQ8_0x8], x: &[BlockQ8Act], nb: usize, y: &mut [f32]) {
    // SAFETY: as above.
    unsafe { q8_0x8_dot_impl(w, x, nb, y) }
}
