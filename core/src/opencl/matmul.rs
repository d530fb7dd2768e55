//! The matmul family: `y = x · wᵀ` (`y += …` for `matmul_add`) by
//!
//! * `mul_mv_*_f32` — decode and small batches: one work-group per output row and tile
//!   of `NT` tokens (`mul_mv_q4_0_img_f32` instead for Q4_0 weights with image planes);
//! * `mul_mm_*_f32` — from `mm_min_tok` tokens on: 64-row × 32-token tiles, split-K
//!   (`mul_mm_reduce_f32`) when a matmul has too few tiles to fill the device;
//! * the fused ops: `mul_mv3_*` / `mul_mv_swiglu_*` (norm + Q/K/V, norm + gate/up +
//!   SwiGLU in one launch) and their tiled prefill twins `mul_mm3_*` /
//!   `mul_mm_swiglu_*` (after one norm launch). Other dtype mixes fall back to the
//!   composition in `crate::backend`.

use super::buffer::{el, round_up};
use super::kernels::{
    MulMm, MulMm3, MulMmReduce, MulMmq, MulMmq3, MulMmqSwiglu, MulMv, MulMv3, MulMvImg, MulMvSwiglu, QuantizeQ8_1,
};
use super::launch::Mem;
use super::program::{MM_LWS, NT};
use super::{image, ops, OpenClBackend};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{TensorMut, TensorRef};

/// mul_mm tiles: `MM_ROWS` output rows × `MM_TOKS` tokens; reduction steps of `MM_K`
/// elements (mul_mm.cl's TK: one quant block).
const MM_ROWS: usize = 64;
const MM_TOKS: usize = 32;
const MM_K: usize = 32;
/// Split-K for `mul_mm`: a matmul with fewer than `MM_SPLIT_MIN_GROUPS` output tiles
/// (SmolLM2's 576-row O and down projections at 512 tokens have 144: about one per SM of
/// a 132-SM H100/H200, too few warps to hide the loads) cuts its reduction into up to
/// `MM_SPLIT_MAX` pieces of at least `MM_SPLIT_MIN_STEPS` 32-element steps; the partial
/// tiles go to scratch reserved by `reserve` and `mul_mm_reduce_f32` sums them.
const MM_SPLIT_MIN_GROUPS: usize = 256;
pub(super) const MM_SPLIT_MAX: usize = 4;
const MM_SPLIT_MIN_STEPS: usize = 4;

type Ref<'a> = TensorRef<'a, OpenClBackend>;
type Mut<'a> = TensorMut<'a, OpenClBackend>;

/// `y = x · wᵀ`, or `y += x · wᵀ` with `accumulate` (mul_mv or, from `mm_min_tok`
/// tokens on, mul_mm).
pub(super) fn mat(be: &mut OpenClBackend, w: Ref<'_>, x: Ref<'_>, y: Mut<'_>, accumulate: bool) -> Result<()> {
    let (n_out, n_in) = (w.shape.dims()[0], w.shape.dims()[1]);
    let n_tok = x.shape.rows();
    if n_tok == 0 || n_out == 0 {
        return Ok(());
    }
    let dtype_err = || Error::dtype("matmul", "weight", w.dtype);
    if be.k.mul_mv.get(w.dtype).is_none() {
        return Err(dtype_err());
    }
    let y_mem = y.buf.writable("opencl matmul output")?;
    // Decode / small batches of a weight with image planes (the whole tensor as
    // imported): the image kernel. A launch that fails turns the path off.
    if let (Some(p), Some(iw)) = (&be.img, w.buf.img.as_deref()) {
        if n_tok < be.sz.mm_min_tok && w.offset == 0 && iw.rows == n_out && iw.cols == n_in {
            match mat_img(be, p, iw, &x, y_mem, y.offset, accumulate) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    std::eprintln!(
                        "opencl: the image kernel failed ({e}); image path off, Q4_0 matmuls run on buffer kernels"
                    );
                    be.img = None;
                }
            }
        }
    }
    if n_tok >= be.sz.mm_min_tok && int8_ok(be, w.dtype, n_tok, n_in) {
        let m = be.mmq.as_ref().ok_or_else(dtype_err)?;
        let (tr, tt) = m.tile();
        let (split, k_chunk) = split_k(be, (tr, tt), n_out, n_tok, n_in);
        let (xq, xd, xs) = quantize(be, &x, n_tok, n_in)?;
        let part = Mem::of(&be.scratch.mm_part);
        let rows = repacked(&w);
        let (w_mem, w_off) = rows.unwrap_or((w.buf.arg(), w.offset as u64));
        let args = MulMmq {
            w: w_mem,
            w_off,
            xq,
            xd,
            xs,
            y: y_mem,
            y_off: el(y.offset),
            n_in: n_in as u32,
            n_out: n_out as u32,
            n_tok: n_tok as u32,
            accumulate: accumulate as u32,
            k_chunk: k_chunk as u32,
            part,
        };
        let k = match rows {
            Some(_) => &m.k.q4_0r.0,
            None => m.k.mul_mm.get(w.dtype).ok_or_else(dtype_err)?,
        };
        let gws = [n_out.div_ceil(tr) * MM_LWS, n_tok.div_ceil(tt) * MM_LWS, split];
        be.q.run(k, &args, &gws, Some(&[MM_LWS, MM_LWS, 1]))?;
        return reduce_split(be, split, n_tok * n_out, y_mem, y.offset, accumulate);
    }
    if n_tok >= be.sz.mm_min_tok && be.k.mul_mm.get(w.dtype).is_some() {
        let (split, k_chunk) = split_k(be, (MM_ROWS, MM_TOKS), n_out, n_tok, n_in);
        let part = Mem::of(&be.scratch.mm_part);
        let args = MulMm {
            w: w.buf.arg(),
            w_off: w.offset as u64,
            x: x.buf.arg(),
            x_off: el(x.offset),
            y: y_mem,
            y_off: el(y.offset),
            n_in: n_in as u32,
            n_out: n_out as u32,
            n_tok: n_tok as u32,
            accumulate: accumulate as u32,
            k_chunk: k_chunk as u32,
            part,
        };
        let k = be.k.mul_mm.get(w.dtype).ok_or_else(dtype_err)?;
        be.q.run(
            k,
            &args,
            &[
                n_out.div_ceil(MM_ROWS) * MM_LWS,
                n_tok.div_ceil(MM_TOKS) * MM_LWS,
                split,
            ],
            Some(&[MM_LWS, MM_LWS, 1]),
        )?;
        return reduce_split(be, split, n_tok * n_out, y_mem, y.offset, accumulate);
    }
    let args = MulMv {
        w: w.buf.arg(),
        w_off: w.offset as u64,
        x: x.buf.arg(),
        x_off: el(x.offset),
        y: y_mem,
        y_off: el(y.offset),
        n_in: n_in as u32,
        n_out: n_out as u32,
        n_tok: n_tok as u32,
        accumulate: accumulate as u32,
    };
    let k = be.k.mul_mv.get(w.dtype).ok_or_else(dtype_err)?;
    let lws = be.sz.mv_lws;
    be.q.run(k, &args, &[n_out * lws, n_tok.div_ceil(NT)], Some(&[lws, 1]))
}

/// Split-K for a tiled matmul of `tile` (rows, tokens) tiles: `(pieces, k elements a
/// piece)` — a matmul with fewer than `MM_SPLIT_MIN_GROUPS` output tiles cuts its
/// reduction (when the partials fit the reserved scratch).
fn split_k(be: &OpenClBackend, tile: (usize, usize), n_out: usize, n_tok: usize, n_in: usize) -> (usize, usize) {
    let tiles = n_out.div_ceil(tile.0) * n_tok.div_ceil(tile.1);
    let steps = n_in.div_ceil(MM_K);
    let mut split = MM_SPLIT_MIN_GROUPS
        .div_ceil(tiles)
        .min(MM_SPLIT_MAX)
        .min(steps / MM_SPLIT_MIN_STEPS);
    if split * n_tok * n_out > be.scratch.mm_part_cap {
        split = 1;
    }
    let k_chunk = steps.div_ceil(split.max(1)) * MM_K;
    (n_in.div_ceil(k_chunk), k_chunk)
}

/// After a split-K matmul: `mul_mm_reduce_f32` sums the `split` partial tiles into y.
fn reduce_split(be: &OpenClBackend, split: usize, n: usize, y: Mem, y_offset: usize, accumulate: bool) -> Result<()> {
    if split <= 1 {
        return Ok(());
    }
    let args = MulMmReduce {
        part: Mem::of(&be.scratch.mm_part),
        y,
        y_off: el(y_offset),
        n: n as u32,
        n_split: split as u32,
        accumulate: accumulate as u32,
    };
    be.q.run(&be.k.mul_mm_reduce, &args, &[round_up(n, 64)], None)
}

/// A Q4_0 weight's repacked rows (`rowsoa.rs`: the block kernel's copy, on discrete
/// NVIDIA GPUs) as the int8 matmuls' `q4_0r` kernels take them: the whole matrix only.
fn repacked(w: &Ref<'_>) -> Option<(Mem, u64)> {
    match &w.buf.rows {
        Some(r) if w.dtype == DType::Q4_0 && w.offset == 0 && w.shape.row_len() == r.cols => Some((Mem::of(&r.buf), 0)),
        _ => None,
    }
}

/// Whether a tiled matmul of weight type `t` over `n_tok` rows of `n_in` runs the int8
/// path: built, a kernel for the type, whole blocks, and the reserved scratch holds the
/// quantized input.
fn int8_ok(be: &OpenClBackend, t: DType, n_tok: usize, n_in: usize) -> bool {
    be.mmq.as_ref().is_some_and(|m| m.k.mul_mm.get(t).is_some())
        && n_in.is_multiple_of(MM_K)
        && n_tok * n_in <= be.scratch.mmq_cap
}

/// Quantizes `x` (`n_tok` rows of `n_in` f32, `n_in % 32 == 0`) into the int8 scratch
/// (`quantize_q8_1_f32`); returns its three buffers as kernel arguments.
fn quantize(be: &OpenClBackend, x: &Ref<'_>, n_tok: usize, n_in: usize) -> Result<(Mem, Mem, Mem)> {
    let m = be
        .mmq
        .as_ref()
        .ok_or_else(|| Error::invalid("opencl: the int8 prefill path is off"))?;
    let s = &be.scratch;
    let (xq, xd, xs) = (Mem::of(&s.mmq_q), Mem::of(&s.mmq_d), Mem::of(&s.mmq_s));
    let n_blocks = n_tok * n_in / MM_K;
    let args = QuantizeQ8_1 {
        x: x.buf.arg(),
        x_off: el(x.offset),
        xq,
        xd,
        xs,
        n_blocks: n_blocks as u32,
    };
    be.q.run(&m.k.quantize, &args, &[round_up(n_blocks, 64)], Some(&[64]))?;
    Ok((xq, xd, xs))
}

/// `y = x · wᵀ` (`y += …` with `accumulate`) by `mul_mv_q4_0_img_f32` over the weight's
/// image planes `iw`.
fn mat_img(
    be: &OpenClBackend,
    p: &image::ImgPath,
    iw: &image::ImgWeight,
    x: &Ref<'_>,
    y: Mem,
    y_offset: usize,
    accumulate: bool,
) -> Result<()> {
    let n_tok = x.shape.rows();
    let args = MulMvImg {
        wq: iw.q(),
        wd: iw.d(),
        x: x.buf.arg(),
        x_off: el(x.offset),
        y,
        y_off: el(y_offset),
        n_in: iw.cols as u32,
        n_out: iw.rows as u32,
        n_tok: n_tok as u32,
        accumulate: accumulate as u32,
    };
    be.q.run(
        &p.kernel,
        &args,
        &[iw.rows.div_ceil(p.rows) * p.lws, n_tok.div_ceil(NT)],
        Some(&[p.lws, 1]),
    )
}

/// The three outputs of a Q/K/V matmul as kernel arguments.
fn outs3(ys: &[Mut<'_>; 3]) -> Result<[(Mem, u64); 3]> {
    let mut r = [(Mem(core::ptr::null_mut()), 0); 3];
    for (o, y) in r.iter_mut().zip(ys) {
        *o = (y.buf.writable("opencl matmul output")?, el(y.offset));
    }
    Ok(r)
}

pub(super) fn rms_norm_matmul3(
    be: &mut OpenClBackend,
    x: Ref<'_>,
    norm_w: Ref<'_>,
    eps: f32,
    mut xn: Mut<'_>,
    ws: [Ref<'_>; 3],
    ys: [Mut<'_>; 3],
) -> Result<()> {
    let n_tok = x.shape.rows();
    let n_in = x.shape.row_len();
    let same = n_tok > 0 && ws.iter().all(|w| w.dtype == ws[0].dtype);
    let n: [usize; 3] = core::array::from_fn(|i| ws[i].shape.dims()[0]);
    let w_args = |i: usize| (ws[i].buf.arg(), ws[i].offset as u64);
    if same && n_tok < be.sz.mm_min_tok {
        if let Some(k) = be.k.mul_mv3.get(ws[0].dtype) {
            let [(y0, y0_off), (y1, y1_off), (y2, y2_off)] = outs3(&ys)?;
            let ((w0, w0_off), (w1, w1_off), (w2, w2_off)) = (w_args(0), w_args(1), w_args(2));
            let args = MulMv3 {
                w0,
                w0_off,
                w1,
                w1_off,
                w2,
                w2_off,
                x: x.buf.arg(),
                x_off: el(x.offset),
                nw: norm_w.buf.arg(),
                nw_off: el(norm_w.offset),
                eps,
                y0,
                y0_off,
                y1,
                y1_off,
                y2,
                y2_off,
                n_in: n_in as u32,
                n0: n[0] as u32,
                n1: n[1] as u32,
                n2: n[2] as u32,
                n_tok: n_tok as u32,
            };
            let lws = be.sz.mv_lws;
            return be.q.run(
                k,
                &args,
                &[(n[0] + n[1] + n[2]) * lws, n_tok.div_ceil(NT)],
                Some(&[lws, 1]),
            );
        }
    }
    let int8 = same && be.mmq.as_ref().is_some_and(|m| m.k.mul_mm3.get(ws[0].dtype).is_some());
    if int8 && n_tok >= be.sz.mm_min_tok && int8_ok(be, ws[0].dtype, n_tok, n_in) {
        // Prefill, int8: one norm launch, its output quantized once, then Q/K/V as one
        // tiled launch.
        ops::rms_norm(be, x, norm_w, eps, xn.reborrow())?;
        let (xq, xd, xs) = quantize(be, &xn.as_ref(), n_tok, n_in)?;
        // (all three through their repacked rows, or none)
        let rows: Option<Vec<(Mem, u64)>> = ws.iter().map(repacked).collect();
        let m = be.mmq.as_ref().expect("checked above");
        let k = match rows {
            Some(_) => &m.k.q4_0r.1,
            None => m.k.mul_mm3.get(ws[0].dtype).expect("checked above"),
        };
        let w_args = |i: usize| rows.as_ref().map_or_else(|| w_args(i), |r| r[i]);
        let [(y0, y0_off), (y1, y1_off), (y2, y2_off)] = outs3(&ys)?;
        let ((w0, w0_off), (w1, w1_off), (w2, w2_off)) = (w_args(0), w_args(1), w_args(2));
        let args = MulMmq3 {
            w0,
            w0_off,
            w1,
            w1_off,
            w2,
            w2_off,
            xq,
            xd,
            xs,
            y0,
            y0_off,
            y1,
            y1_off,
            y2,
            y2_off,
            n_in: n_in as u32,
            n0: n[0] as u32,
            n1: n[1] as u32,
            n2: n[2] as u32,
            n_tok: n_tok as u32,
        };
        let (tr, tt) = m.tile();
        let gws = [(n[0] + n[1] + n[2]).div_ceil(tr) * MM_LWS, n_tok.div_ceil(tt) * MM_LWS];
        return be.q.run(k, &args, &gws, Some(&[MM_LWS, MM_LWS]));
    }
    if same && n_tok >= be.sz.mm_min_tok && be.k.mul_mm3.get(ws[0].dtype).is_some() {
        // Prefill: one norm launch, then Q/K/V as one tiled matmul launch.
        ops::rms_norm(be, x, norm_w, eps, xn.reborrow())?;
        let k = be.k.mul_mm3.get(ws[0].dtype).expect("checked above");
        let [(y0, y0_off), (y1, y1_off), (y2, y2_off)] = outs3(&ys)?;
        let ((w0, w0_off), (w1, w1_off), (w2, w2_off)) = (w_args(0), w_args(1), w_args(2));
        let args = MulMm3 {
            w0,
            w0_off,
            w1,
            w1_off,
            w2,
            w2_off,
            x: xn.buf.arg(),
            x_off: el(xn.offset),
            y0,
            y0_off,
            y1,
            y1_off,
            y2,
            y2_off,
            n_in: xn.shape.row_len() as u32,
            n0: n[0] as u32,
            n1: n[1] as u32,
            n2: n[2] as u32,
            n_tok: xn.shape.rows() as u32,
        };
        return be.q.run(
            k,
            &args,
            &[
                (n[0] + n[1] + n[2]).div_ceil(MM_ROWS) * MM_LWS,
                n_tok.div_ceil(MM_TOKS) * MM_LWS,
            ],
            Some(&[MM_LWS, MM_LWS]),
        );
    }
    crate::backend::rms_norm_matmul3_composed(be, x, norm_w, eps, xn, ws, ys)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn rms_norm_matmul_swiglu(
    be: &mut OpenClBackend,
    x: Ref<'_>,
    norm_w: Ref<'_>,
    eps: f32,
    mut xn: Mut<'_>,
    w_gate: Ref<'_>,
    w_up: Ref<'_>,
    gate: Mut<'_>,
    up: Mut<'_>,
    out: Mut<'_>,
) -> Result<()> {
    let n_tok = x.shape.rows();
    let n_in = x.shape.row_len();
    let n_out = w_gate.shape.dims()[0];
    let same = n_out > 0 && w_up.dtype == w_gate.dtype;
    if same && n_tok > 0 && n_tok < be.sz.mm_min_tok {
        if let Some(k) = be.k.mul_mv_swiglu.get(w_gate.dtype) {
            let args = MulMvSwiglu {
                wg: w_gate.buf.arg(),
                wg_off: w_gate.offset as u64,
                wu: w_up.buf.arg(),
                wu_off: w_up.offset as u64,
                x: x.buf.arg(),
                x_off: el(x.offset),
                nw: norm_w.buf.arg(),
                nw_off: el(norm_w.offset),
                eps,
                out: out.buf.writable("opencl matmul_swiglu output")?,
                out_off: el(out.offset),
                n_in: n_in as u32,
                n_out: n_out as u32,
                n_tok: n_tok as u32,
            };
            let lws = be.sz.mv_lws;
            return be.q.run(k, &args, &[n_out * lws, n_tok.div_ceil(NT)], Some(&[lws, 1]));
        }
    }
    let int8 = same
        && be
            .mmq
            .as_ref()
            .is_some_and(|m| m.k.mul_mm_swiglu.get(w_gate.dtype).is_some());
    if int8 && n_tok >= be.sz.mm_min_tok && int8_ok(be, w_gate.dtype, n_tok, n_in) {
        // Prefill, int8: one norm launch, its output quantized once, then gate, up and
        // SwiGLU as one tiled launch.
        ops::rms_norm(be, x, norm_w, eps, xn.reborrow())?;
        let (xq, xd, xs) = quantize(be, &xn.as_ref(), n_tok, n_in)?;
        let rows = repacked(&w_gate).zip(repacked(&w_up));
        let m = be.mmq.as_ref().expect("checked above");
        let k = match rows {
            Some(_) => &m.k.q4_0r.2,
            None => m.k.mul_mm_swiglu.get(w_gate.dtype).expect("checked above"),
        };
        let ((wg, wg_off), (wu, wu_off)) = rows.unwrap_or((
            (w_gate.buf.arg(), w_gate.offset as u64),
            (w_up.buf.arg(), w_up.offset as u64),
        ));
        let args = MulMmqSwiglu {
            wg,
            wg_off,
            wu,
            wu_off,
            xq,
            xd,
            xs,
            out: out.buf.writable("opencl matmul_swiglu output")?,
            out_off: el(out.offset),
            n_in: n_in as u32,
            n_out: n_out as u32,
            n_tok: n_tok as u32,
        };
        let gws = [
            n_out.div_ceil(m.swiglu_rows()) * MM_LWS,
            n_tok.div_ceil(m.tile().1) * MM_LWS,
        ];
        return be.q.run(k, &args, &gws, Some(&[MM_LWS, MM_LWS]));
    }
    if same && n_tok >= be.sz.mm_min_tok && be.k.mul_mm_swiglu.get(w_gate.dtype).is_some() {
        // Prefill: one norm launch, then gate, up and SwiGLU as one tiled launch.
        ops::rms_norm(be, x, norm_w, eps, xn.reborrow())?;
        let k = be.k.mul_mm_swiglu.get(w_gate.dtype).expect("checked above");
        let args = super::kernels::MulMmSwiglu {
            wg: w_gate.buf.arg(),
            wg_off: w_gate.offset as u64,
            wu: w_up.buf.arg(),
            wu_off: w_up.offset as u64,
            x: xn.buf.arg(),
            x_off: el(xn.offset),
            out: out.buf.writable("opencl matmul_swiglu output")?,
            out_off: el(out.offset),
            n_in: n_in as u32,
            n_out: n_out as u32,
            n_tok: n_tok as u32,
        };
        return be.q.run(
            k,
            &args,
            &[n_out.div_ceil(MM_ROWS) * MM_LWS, n_tok.div_ceil(MM_TOKS) * MM_LWS],
            Some(&[MM_LWS, MM_LWS]),
        );
    }
    crate::backend::rms_norm_matmul_swiglu_composed(be, x, norm_w, eps, xn, w_gate, w_up, gate, up, out)
}
