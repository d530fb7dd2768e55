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
//! bit-exact with both (`core/tests/quant_vectors.rs`).
//!
//! The quantizers ([`quantize_row_q4_k`], [`quantize_row_q5_k`], [`quantize_row_q6_k`])
//! reproduce what `llama-quantize` writes without an importance matrix (ggml's
//! `quantize_row_q*_K_ref`): per sub-block a weighted least-squares search for scale and
//! minimum (Q4_K/Q5_K) or a ±0.9 search around the max-based scale (Q6_K), the sub-block
//! scales quantized to 6 (8) bits, and the quants recomputed from the rounded scales.
//! Every float operation is done in f32 in the same order as the C code (no fused
//! multiply-adds: ggml-base is built without them), so the bytes are identical
//! (`oracle/quant/kquant_vectors.json`, made by `llama-quantize`).

use bytemuck::{Pod, Zeroable};
use half::f16;
use libm::sqrtf;

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

/// ggml's `GROUP_MAX_EPS`: a sub-block whose largest magnitude is below it counts as zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Scale and minimum of one sub-block for an unsigned `nmax`-level code with an offset
/// (ggml `make_qkx2_quants`, squared error). Starts from the min/max fit, then tries
/// `nstep + 1` candidate inverse scales `(rmin + rdelta·is + nmax) / (max − min)`; for each
/// the levels are rounded and the weighted least-squares scale and minimum for those
/// levels are solved in closed form; the lowest weighted error wins. Writes the levels to
/// `l` and returns `(scale, −min)` (the minimum is never positive).
fn fit_scale_min(
    nmax: i32,
    x: &[f32; 32],
    w: &[f32; 32],
    l: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let (mut min, mut max) = (x[0], x[0]);
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..32 {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }
    let level = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, nmax);
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..32 {
        let q = level(iscale, x[i], min);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    let mut aux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..32 {
            let q = level(iscale, x[i], min);
            aux[i] = q as u8;
            let wl = w[i] * q as f32;
            sum_l += wl;
            sum_l2 += wl * q as f32;
            sum_xl += wl * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut err = 0.0f32;
            for i in 0..32 {
                let diff = this_scale * aux[i] as f32 + this_min - x[i];
                err += w[i] * (diff * diff);
            }
            if err < best_error {
                l.copy_from_slice(&aux);
                best_error = err;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Signed scale of one 16-element sub-block for levels `−nmax..nmax−1` (ggml
/// `make_qx_quants` with `x²` weights, Q6_K's choice). The start is `−nmax / max` (the
/// signed value of largest magnitude maps to `−nmax`); 18 nearby inverse scales
/// `−(nmax + 0.1·is) / max` are tried and the one maximising `(Σ w x l)² / Σ w l²` kept,
/// with its least-squares scale. Writes `l + nmax` to `out`.
fn fit_scale_signed(nmax: i32, x: &[f32], out: &mut [i8]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        out.fill(0);
        return 0.0;
    }
    let level = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for &v in x {
            let l = level(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let iscale = -(nmax as f32) / max;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (level(iscale, v) + nmax) as i8;
    }
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (level(iscale, v) + nmax) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// The shared part of the Q4_K and Q5_K quantizers: the eight sub-block fits, the packed
/// 6-bit scales and minimums, `d` and `dmin`, and the final levels (0..=nmax) recomputed
/// from the rounded scales. Returns `(d, dmin, scales, levels)`.
fn quantize_super_qkx(nmax: i32, x: &[f32], rmin: f32, nstep: i32) -> (f16, f16, [u8; K_SCALE_SIZE], [u8; QK_K]) {
    let mut levels = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let (mut max_scale, mut max_min) = (0.0f32, 0.0f32);
    for j in 0..8 {
        let xs: &[f32; 32] = x[32 * j..32 * j + 32].try_into().expect("32 elements");
        let mut sum_x2 = 0.0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = sqrtf(sum_x2 / 32.0);
        let mut w = [0f32; 32];
        for (wi, &v) in w.iter_mut().zip(xs) {
            *wi = av_x + v.abs();
        }
        let (s, m) = fit_scale_min(nmax, xs, &w, &mut levels[32 * j..32 * j + 32], rmin, 0.1, nstep);
        scales[j] = s;
        mins[j] = m;
        if s > max_scale {
            max_scale = s;
        }
        if m > max_min {
            max_min = m;
        }
    }
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut packed = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        // C stores nearest_int's int in a uint8_t (wrapping) before capping at 63.
        let ls = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        let lm = (nearest_int(inv_min * mins[j]) as u8).min(63);
        if j < 4 {
            packed[j] = ls;
            packed[j + 4] = lm;
        } else {
            packed[j + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
            packed[j - 4] |= (ls >> 4) << 6;
            packed[j] |= (lm >> 4) << 6;
        }
    }
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = d.to_f32() * f32::from(sc);
        if dj == 0.0 {
            // The sub-block keeps the levels of its own fit (as ggml does).
            continue;
        }
        let dm = dmin.to_f32() * f32::from(m);
        for i in 32 * j..32 * j + 32 {
            levels[i] = nearest_int((x[i] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, levels)
}

/// ggml `quantize_row_q4_K_ref` (what `llama-quantize` writes without an importance
/// matrix). `x.len()` must equal `256 * y.len()`.
pub fn quantize_row_q4_k(x: &[f32], y: &mut [BlockQ4_K]) {
    debug_assert_eq!(x.len(), y.len() * QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, scales, l) = quantize_super_qkx(15, xb, -1.0, 20);
        let mut qs = [0u8; QK_K / 2];
        for c in 0..4 {
            for i in 0..32 {
                qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
        *yb = BlockQ4_K { d, dmin, scales, qs };
    }
}

/// ggml `quantize_row_q5_K_ref`. `x.len()` must equal `256 * y.len()`.
pub fn quantize_row_q5_k(x: &[f32], y: &mut [BlockQ5_K]) {
    debug_assert_eq!(x.len(), y.len() * QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let (d, dmin, scales, l) = quantize_super_qkx(31, xb, -0.5, 15);
        let mut qs = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 8];
        for c in 0..4 {
            for i in 0..32 {
                let (lo, hi) = (l[64 * c + i], l[64 * c + 32 + i]);
                qs[32 * c + i] = (lo & 0x0f) | ((hi & 0x0f) << 4);
                qh[i] |= ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1));
            }
        }
        *yb = BlockQ5_K {
            d,
            dmin,
            scales,
            qh,
            qs,
        };
    }
}

/// ggml `quantize_row_q6_K_ref`. `x.len()` must equal `256 * y.len()`.
pub fn quantize_row_q6_k(x: &[f32], y: &mut [BlockQ6_K]) {
    debug_assert_eq!(x.len(), y.len() * QK_K);
    for (xb, yb) in x.chunks_exact(QK_K).zip(y.iter_mut()) {
        let mut l = [0i8; QK_K];
        let mut scales = [0f32; QK_K / 16];
        let (mut max_scale, mut max_abs_scale) = (0.0f32, 0.0f32);
        for ib in 0..QK_K / 16 {
            let s = fit_scale_signed(32, &xb[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16]);
            scales[ib] = s;
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            *yb = BlockQ6_K::zeroed();
            continue;
        }
        let iscale = -128.0 / max_scale;
        let d = f16::from_f32(1.0 / iscale);
        let mut sc = [0i8; QK_K / 16];
        for (o, &s) in sc.iter_mut().zip(&scales) {
            *o = nearest_int(iscale * s).min(127) as i8;
        }
        for ((&s, lj), xj) in sc.iter().zip(l.chunks_exact_mut(16)).zip(xb.chunks_exact(16)) {
            let dj = d.to_f32() * f32::from(s);
            if dj == 0.0 {
                continue;
            }
            for (li, &x) in lj.iter_mut().zip(xj) {
                *li = (nearest_int(x / dj).clamp(-32, 31) + 32) as i8;
            }
        }
        let mut ql = [0u8; QK_K / 2];
        let mut qh = [0u8; QK_K / 4];
        for n in 0..2 {
            for i in 0..32 {
                let q = |k: usize| l[128 * n + 32 * k + i] as u8;
                ql[64 * n + i] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
                ql[64 * n + 32 + i] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
                qh[32 * n + i] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
        *yb = BlockQ6_K { ql, qh, scales: sc, d };
    }
}
