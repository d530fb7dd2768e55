//! Portable scalar kernels for the CPU backend: the reference every SIMD kernel is
//! tested against, and the fallback on any CPU.

use crate::backend::{AttnParams, RopeStyle};
use crate::math;
use crate::quant::{dot, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

pub use crate::kv_cache::Q8_MAX_HEAD_DIM;

/// `y[r] = dot(w[r·nb..(r+1)·nb], x)` for every `r in 0..y.len()`, `nb = x.len()`:
/// the row loop every `gemv_*` kernel entry is defined by.
#[inline]
pub fn gemv<W, X>(w: &[W], x: &[X], y: &mut [f32], dot: impl Fn(&[W], &[X]) -> f32) {
    let nb = x.len();
    for (r, yr) in y.iter_mut().enumerate() {
        *yr = dot(&w[r * nb..(r + 1) * nb], x);
    }
}

/// Scalar twin of `Kernels::gemv_q4_0_q8_0`.
pub fn gemv_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0], y: &mut [f32]) {
    gemv(w, x, y, dot::vec_dot_q4_0_q8_0)
}
/// Scalar twin of `Kernels::gemv_q4_1_q8_1`.
pub fn gemv_q4_1_q8_1(w: &[BlockQ4_1], x: &[BlockQ8_1], y: &mut [f32]) {
    gemv(w, x, y, dot::vec_dot_q4_1_q8_1)
}
/// Scalar twin of `Kernels::gemv_q8_0_q8_0`.
pub fn gemv_q8_0_q8_0(w: &[BlockQ8_0], x: &[BlockQ8_0], y: &mut [f32]) {
    gemv(w, x, y, dot::vec_dot_q8_0_q8_0)
}

/// `y[t·rows + r] = dot(w_row(r), x_row(t))` for `rows = w.len() / nb` weight rows and
/// `x.len() / nb` activation rows, all `nb` blocks long: the definition of every
/// `gemm_*` kernel entry (`y` all zeros when `nb == 0`).
#[inline]
pub fn gemm<W, X>(w: &[W], x: &[X], nb: usize, y: &mut [f32], dot: impl Fn(&[W], &[X]) -> f32) {
    if nb == 0 {
        y.fill(0.0);
        return;
    }
    let rows = w.len() / nb;
    for (t, xt) in x.chunks_exact(nb).enumerate() {
        for (r, wr) in w.chunks_exact(nb).enumerate() {
            y[t * rows + r] = dot(wr, xt);
        }
    }
}

/// Scalar twin of `Kernels::gemm_q4_0_q8_0`.
pub fn gemm_q4_0_q8_0(w: &[BlockQ4_0], x: &[BlockQ8_0], nb: usize, y: &mut [f32]) {
    gemm(w, x, nb, y, dot::vec_dot_q4_0_q8_0)
}

/// `y[t, o] = dot(w_row(o), x_row(t))` where rows are `nb` units (blocks or elements).
/// Weight-row-outer order so each weight row is read once per batch.
pub fn matmul_blocks<W, X>(
    w: &[W],
    x: &[X],
    y: &mut [f32],
    n_out: usize,
    n_tok: usize,
    nb: usize,
    dot: fn(&[W], &[X]) -> f32,
) {
    for o in 0..n_out {
        let wr = &w[o * nb..(o + 1) * nb];
        for t in 0..n_tok {
            y[t * n_out + o] = dot(wr, &x[t * nb..(t + 1) * nb]);
        }
    }
}

/// One row of RMSNorm: `out = x / sqrt(mean(x²) + eps) * w` (f32 sums, as HF).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss = x.iter().fold(0.0f32, |s, v| s + v * v) / x.len() as f32;
    let r = 1.0 / math::sqrtf(ss + eps);
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
        *o = g * (v * r);
    }
}

/// Rotates one head of `hd` elements at position `pos`.
pub fn rope_head(x: &mut [f32], inv_freq: &[f32], pos: f32, style: RopeStyle) {
    let half = x.len() / 2;
    for (i, &f) in inv_freq.iter().enumerate().take(half) {
        let theta = pos * f;
        let (s, c) = (math::sinf(theta), math::cosf(theta));
        let (a, b) = match style {
            RopeStyle::Adjacent => (2 * i, 2 * i + 1),
            RopeStyle::HalfSplit => (i, i + half),
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/// Turns one head by the angles whose cosines and sines are `cos[i]`, `sin[i]` (pair `i`):
/// [`rope_head`] with the trigonometry done once for many heads (`rope_shift`).
pub fn rope_head_cs(x: &mut [f32], cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = x.len() / 2;
    for (i, (&c, &s)) in cos.iter().zip(sin).enumerate().take(half) {
        let (a, b) = match style {
            RopeStyle::Adjacent => (2 * i, 2 * i + 1),
            RopeStyle::HalfSplit => (i, i + half),
        };
        let (x0, x1) = (x[a], x[b]);
        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

/// Numerically stable softmax in place.
pub fn softmax(x: &mut [f32]) -> (f32, f32) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = math::expf(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
    (max, sum)
}

/// Index of the largest value (NaN never wins, ties: the lowest index); `None` when no
/// value exceeds -inf.
pub fn argmax(x: &[f32]) -> Option<usize> {
    let mut best = None;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in x.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = Some(i);
        }
    }
    best
}

/// `out = silu(g) * u`.
pub fn swiglu(g: &[f32], u: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + math::expf(-g)) * u;
    }
}

/// A KV-cache element: f32, or f16 widened exactly to f32 (`--kv-type f16`).
pub trait KvScalar: Copy + Send + Sync + 'static {
    fn f32(self) -> f32;
}
impl KvScalar for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
}
impl KvScalar for half::f16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
}

/// The unit a cache row is made of: one element (f32, f16), or a block of `ELEMS`
/// elements (`BlockQ8_0`: 32). Attention indexes rows and heads in these units.
pub trait KvUnit: Copy + Send + Sync + 'static {
    const ELEMS: usize;
}
impl KvUnit for f32 {
    const ELEMS: usize = 1;
}
impl KvUnit for half::f16 {
    const ELEMS: usize = 1;
}
impl KvUnit for BlockQ8_0 {
    const ELEMS: usize = crate::dtype::QK8_0;
}

/// One query head's scores over cache slots (`attn_scores`-shaped, cache element `T`).
pub type ScoresFn<T> = fn(&[f32], &[T], usize, f32, &mut [f32]);
/// The weighted sum of value rows (`attn_values`-shaped, cache element `T`).
pub type ValuesFn<T> = fn(&[f32], &[T], usize, &mut [f32]);

/// Causal GQA attention; see `Backend::attention`. `scores` holds ≥ n_past + n_tok.
/// The serial reference: every (token, head) pair through [`attend_one`].
#[allow(clippy::too_many_arguments)]
pub fn attention<T: KvUnit>(
    q: &[f32],
    k: &[T],
    v: &[T],
    out: &mut [f32],
    scores: &mut [f32],
    p: AttnParams,
    n_tok: usize,
    scores_fn: ScoresFn<T>,
    values_fn: ValuesFn<T>,
) {
    let hd = p.head_dim;
    for t in 0..n_tok {
        for h in 0..p.n_head {
            let oh = &mut out[(t * p.n_head + h) * hd..][..hd];
            attend_one(q, k, v, p, t, h, scores, oh, scores_fn, values_fn, softmax);
        }
    }
}

/// Attention of query head `h` of batch token `t` over cache slots `0..=n_past + t`,
/// written to `oh` (`head_dim` floats). `scores` holds ≥ n_past + t + 1.
#[allow(clippy::too_many_arguments)]
pub fn attend_one<T: KvUnit>(
    q: &[f32],
    k: &[T],
    v: &[T],
    p: AttnParams,
    t: usize,
    h: usize,
    scores: &mut [f32],
    oh: &mut [f32],
    scores_fn: ScoresFn<T>,
    values_fn: ValuesFn<T>,
    softmax_fn: fn(&mut [f32]) -> (f32, f32),
) {
    let hd = p.head_dim;
    let group = p.n_head / p.n_kv_head;
    let kv_stride = p.n_kv_head * hd;
    let n_ctx = p.n_past + t + 1;
    let kvh = h / group;
    let qh = &q[(t * p.n_head + h) * hd..][..hd];
    let sc = &mut scores[..n_ctx];
    // Offsets and strides in cache units (elements, or Q8_0 blocks: hd is whole blocks).
    let (off, stride) = (kvh * hd / T::ELEMS, kv_stride / T::ELEMS);
    scores_fn(qh, &k[off..], stride, p.scale, sc);
    softmax_fn(sc);
    values_fn(sc, &v[off..], stride, oh);
}

/// Attention scores of one query head over `out.len()` cache slots:
/// `out[s] = (q · k_s) · scale` with `k_s = k[s·stride..][..q.len()]`, each dot
/// accumulated in index order (the reference every SIMD version is held to).
pub fn attn_scores(q: &[f32], k: &[f32], stride: usize, scale: f32, out: &mut [f32]) {
    for (s, o) in out.iter_mut().enumerate() {
        *o = crate::quant::dot::vec_dot_f32(q, &k[s * stride..][..q.len()]) * scale;
    }
}

/// [`attn_scores`] over an f16 cache (each key widened exactly to f32, then as there).
pub fn attn_scores_f16(q: &[f32], k: &[half::f16], stride: usize, scale: f32, out: &mut [f32]) {
    for (s, o) in out.iter_mut().enumerate() {
        *o = crate::quant::dot::vec_dot_f16_f32(&k[s * stride..][..q.len()], q) * scale;
    }
}

/// The weighted sum of value rows: `out = Σ_s w[s] · v_s` with
/// `v_s = v[s·stride..][..out.len()]`, slots in order.
pub fn attn_values(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    out.fill(0.0);
    let n = out.len();
    for (s, &ws) in w.iter().enumerate() {
        vec_mad_f32(out, &v[s * stride..][..n], ws);
    }
}

/// [`attn_values`] over an f16 cache.
pub fn attn_values_f16(w: &[f32], v: &[half::f16], stride: usize, out: &mut [f32]) {
    out.fill(0.0);
    let n = out.len();
    for (s, &ws) in w.iter().enumerate() {
        for (o, x) in out.iter_mut().zip(&v[s * stride..][..n]) {
            *o += ws * x.to_f32();
        }
    }
}

/// [`attn_scores`] over a Q8_0 cache (`--kv-type q8_0`; `stride` in blocks, `q.len()`
/// a multiple of 32 and at most [`Q8_MAX_HEAD_DIM`]): the query head is quantized to
/// Q8_0 (as llama.cpp quantizes the query to the K cache's dot type), then each slot is
/// one Q8_0·Q8_0 dot — exact integer block sums, one f32 multiply-add per block.
pub fn attn_scores_q8_0(q: &[f32], k: &[BlockQ8_0], stride: usize, scale: f32, out: &mut [f32]) {
    attn_scores_q8_0_with(
        q,
        k,
        stride,
        scale,
        out,
        crate::quant::quantize_row_q8_0,
        dot::vec_dot_q8_0_q8_0,
    )
}

/// The scores loop of every Q8_0-cache table entry: `q` quantized by `quantize`, each
/// slot through `dot` (a table's `quantize_row_q8_0` and `vec_dot_q8_0_q8_0`).
#[inline(always)]
pub fn attn_scores_q8_0_with(
    q: &[f32],
    k: &[BlockQ8_0],
    stride: usize,
    scale: f32,
    out: &mut [f32],
    quantize: impl Fn(&[f32], &mut [BlockQ8_0]),
    dot: impl Fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
) {
    let nb = q.len() / crate::dtype::QK8_0;
    let zero = BlockQ8_0 {
        d: half::f16::ZERO,
        qs: [0; 32],
    };
    let mut qq = [zero; Q8_MAX_HEAD_DIM / 32];
    let qq = &mut qq[..nb];
    quantize(q, qq);
    for (s, o) in out.iter_mut().enumerate() {
        *o = dot(&k[s * stride..][..nb], qq) * scale;
    }
}

/// [`attn_values`] over a Q8_0 cache (`stride` in blocks): `out = Σ_s w[s] · d_s · q_s`,
/// each value block dequantized on the fly as `(w[s] · d) · q` (the weight folded into
/// the block scale once), slots in order.
pub fn attn_values_q8_0(w: &[f32], v: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
    out.fill(0.0);
    let nb = out.len() / crate::dtype::QK8_0;
    for (s, &ws) in w.iter().enumerate() {
        for (b, ob) in v[s * stride..][..nb].iter().zip(out.chunks_exact_mut(32)) {
            let a = ws * b.d.to_f32();
            for (o, &x) in ob.iter_mut().zip(&b.qs) {
                *o += a * x as f32;
            }
        }
    }
}

/// `y += a · x` (ggml's `ggml_vec_mad_f32`), element by element.
pub fn vec_mad_f32(y: &mut [f32], x: &[f32], a: f32) {
    debug_assert_eq!(x.len(), y.len());
    for (o, &v) in y.iter_mut().zip(x) {
        *o += a * v;
    }
}
