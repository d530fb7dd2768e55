//! The element-wise, normalization, RoPE, attention, softmax/argmax and embedding ops of
//! the OpenCL backend: each checks what only it knows, fills its kernel's signature
//! struct and launches it (the `Backend` impl in `mod.rs` calls these; shape checks live
//! in the op layer, `crate::ops`).

use alloc::format;
use alloc::string::ToString;

use super::buffer::{el, round_up};
use super::kernels::{
    Add, Argmax, ArgmaxFinal, ArgmaxPart, Attention, AttentionCombine, AttentionMass, AttentionPrefill, GetRows,
    KvKernels, MoveRows, RmsNorm, Rope, RopeQk, RopeShift, SiluMul, Softmax, StoreRows,
};
use super::launch::{Local, Mem};
use super::memory::upload_ids;
use super::program::{ATTN_PREFILL_LWS, MAX_HD};
use super::OpenClBackend;
use crate::backend::{AttnParams, RopeStyle};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{TensorMut, TensorRef};

/// Two-pass argmax: rows longer than this take argmax_part + argmax_final, in pieces of
/// `ARGMAX_CHUNK` elements (at most `ARGMAX_MAX_PARTS` a row: the partials scratch).
const ARGMAX_TWO_PASS: usize = 4096;
const ARGMAX_CHUNK: usize = 1024;
pub(super) const ARGMAX_MAX_PARTS: usize = 256;

/// Prefill attention (`attention_prefill_f32`): heads of at most `ATTN_PREFILL_HD`, 32
/// query rows a work-group.
const ATTN_PREFILL_HD: usize = 64;
const ATTN_PREFILL_ROWS: usize = 32;

/// Split-context attention (see attention.cl): used when a batch has at most this many
/// query tokens …
pub(super) const SPLIT_MAX_TOK: usize = 4;
/// … and more context than this many slots (the smallest chunk)…
pub(super) const SPLIT_MIN_CHUNK: usize = 256;
/// … in at most this many chunks (bounds the partials scratch reserved by `reserve`).
pub(super) const SPLIT_MAX_CHUNKS: usize = 32;

/// The rope kernels' `style` argument.
pub(super) fn rope_style(style: RopeStyle) -> u32 {
    match style {
        RopeStyle::Adjacent => 0,
        RopeStyle::HalfSplit => 1,
    }
}

pub(super) fn get_rows(
    be: &mut OpenClBackend,
    table: TensorRef<'_, OpenClBackend>,
    ids: &[u32],
    out: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let n = ids.len();
    if n == 0 {
        return Ok(());
    }
    check_table(be, "get_rows", &table)?;
    let single: i32 = if n == 1 { ids[0] as i32 } else { -1 };
    if n > 1 {
        upload_ids(be, ids)?;
    }
    let ids_mem = Mem::of(&be.scratch.ids.buf);
    get_rows_launch(be, &table, ids_mem, 0, single, &out, n)
}

pub(super) fn get_rows_at(
    be: &OpenClBackend,
    table: TensorRef<'_, OpenClBackend>,
    idx: TensorRef<'_, OpenClBackend>,
    out: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let n = idx.shape.numel();
    if n == 0 {
        return Ok(());
    }
    check_table(be, "get_rows_at", &table)?;
    // single_id -2: the indices are the f32s at idx (clamped to the table in the kernel).
    get_rows_launch(be, &table, idx.buf.arg(), el(idx.offset), -2, &out, n)
}

fn check_table(be: &OpenClBackend, op: &'static str, table: &TensorRef<'_, OpenClBackend>) -> Result<()> {
    match be.k.get_rows.get(table.dtype) {
        Some(_) => Ok(()),
        None => Err(Error::dtype(op, "table", table.dtype)),
    }
}

/// Launches the get_rows kernel of the table's dtype for `n` output rows; the ids come
/// as `single` (≥ 0), as u32s (`-1`) or f32 indices (`-2`) at element `ids_off` of `ids`.
fn get_rows_launch(
    be: &OpenClBackend,
    table: &TensorRef<'_, OpenClBackend>,
    ids: Mem,
    ids_off: u64,
    single_id: i32,
    out: &TensorMut<'_, OpenClBackend>,
    n: usize,
) -> Result<()> {
    let k = be.k.get_rows.get(table.dtype).expect("checked by check_table");
    let dim = table.shape.row_len();
    let args = GetRows {
        table: table.buf.arg(),
        table_off: table.offset as u64,
        row_bytes: table.dtype.row_bytes(dim).unwrap_or(0) as u64,
        n_rows: table.shape.rows() as u32,
        ids,
        ids_off,
        single_id,
        out: out.buf.writable("opencl get_rows output")?,
        out_off: el(out.offset),
        dim: dim as u32,
    };
    be.q.run(k, &args, &[round_up(dim, 64), n], None)
}

pub(super) fn rms_norm(
    be: &OpenClBackend,
    x: TensorRef<'_, OpenClBackend>,
    w: TensorRef<'_, OpenClBackend>,
    eps: f32,
    out: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let rows = x.shape.rows();
    if rows == 0 {
        return Ok(());
    }
    let args = RmsNorm {
        x: x.buf.arg(),
        x_off: el(x.offset),
        w: w.buf.arg(),
        w_off: el(w.offset),
        out: out.buf.writable("opencl rms_norm output")?,
        out_off: el(out.offset),
        n: x.shape.row_len() as u32,
        eps,
    };
    let lws = be.sz.lws;
    be.q.run(&be.k.rms_norm, &args, &[rows * lws], Some(&[lws]))
}

pub(super) fn rope(
    be: &OpenClBackend,
    x: TensorMut<'_, OpenClBackend>,
    inv_freq: TensorRef<'_, OpenClBackend>,
    pos0: usize,
    style: RopeStyle,
) -> Result<()> {
    let d = x.shape.dims();
    let (n_tok, n_heads, hd) = (d[0], d[1], d[2]);
    if n_tok == 0 || n_heads == 0 || hd == 0 {
        return Ok(());
    }
    if x.dtype != DType::F32 {
        // Keys held in an f16 cache: rotated in f32 and rounded back, in place.
        return rope_kv(be, x, inv_freq, pos_i32(pos0)?, 1, style);
    }
    let args = Rope {
        x: x.buf.writable("opencl rope input")?,
        x_off: el(x.offset),
        inv_freq: inv_freq.buf.arg(),
        f_off: el(inv_freq.offset),
        pos0: pos0 as u32,
        n_heads: n_heads as u32,
        head_dim: hd as u32,
        style: rope_style(style),
    };
    be.q.run(&be.k.rope, &args, &[hd / 2, n_heads, n_tok], None)
}

pub(super) fn rope_qk(
    be: &OpenClBackend,
    q: TensorMut<'_, OpenClBackend>,
    k: TensorMut<'_, OpenClBackend>,
    inv_freq: TensorRef<'_, OpenClBackend>,
    pos0: usize,
    style: RopeStyle,
) -> Result<()> {
    let (dq, dk) = (q.shape.dims(), k.shape.dims());
    let (n_tok, hq, hk, hd) = (dq[0], dq[1], dk[1], dq[2]);
    if n_tok == 0 || hq + hk == 0 || hd == 0 {
        return Ok(());
    }
    if k.dtype != DType::F32 {
        // New keys written straight into an f16 cache (the K projection rounded them
        // once); q stays f32. Two launches instead of one.
        rope(be, q, inv_freq, pos0, style)?;
        return rope_kv(be, k, inv_freq, pos_i32(pos0)?, 1, style);
    }
    let args = RopeQk {
        q: q.buf.writable("opencl rope q")?,
        q_off: el(q.offset),
        k: k.buf.writable("opencl rope k")?,
        k_off: el(k.offset),
        inv_freq: inv_freq.buf.arg(),
        f_off: el(inv_freq.offset),
        pos0: pos0 as u32,
        n_head_q: hq as u32,
        n_head_k: hk as u32,
        head_dim: hd as u32,
        style: rope_style(style),
    };
    be.q.run(&be.k.rope_qk, &args, &[hd / 2, hq + hk, n_tok], None)
}

pub(super) fn attention(
    be: &OpenClBackend,
    q: TensorRef<'_, OpenClBackend>,
    k: TensorRef<'_, OpenClBackend>,
    v: TensorRef<'_, OpenClBackend>,
    p: AttnParams,
    out: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let n_tok = q.shape.dims()[0];
    if n_tok == 0 {
        return Ok(());
    }
    let kk = check_kv_head(be, "opencl attention", k.dtype, p.head_dim)?;
    let o = out.buf.writable("opencl attention output")?;
    if n_tok >= be.sz.attn_prefill_min_tok && p.head_dim <= ATTN_PREFILL_HD {
        // Many query rows: K/V tiles shared by 32 (token, head) rows of a KV head.
        let row_tiles = (n_tok * (p.n_head / p.n_kv_head)).div_ceil(ATTN_PREFILL_ROWS);
        let args = AttentionPrefill {
            q: q.buf.arg(),
            q_off: el(q.offset),
            k: k.buf.arg(),
            k_off: k.offset as u64,
            v: v.buf.arg(),
            v_off: v.offset as u64,
            out: o,
            out_off: el(out.offset),
            n_head: p.n_head as u32,
            n_kv_head: p.n_kv_head as u32,
            hd: p.head_dim as u32,
            scale: p.scale,
            n_past: p.n_past as u32,
            n_tok: n_tok as u32,
        };
        let kern = &kk.attention_prefill;
        return be.q.run(
            kern,
            &args,
            &[row_tiles * ATTN_PREFILL_LWS, p.n_kv_head],
            Some(&[ATTN_PREFILL_LWS, 1]),
        );
    }
    // Few query rows and a long context: split the context across work-groups.
    let lws = be.sz.lws;
    let ctx = p.n_past + n_tok;
    let chunk = round_up(SPLIT_MIN_CHUNK.max(ctx.div_ceil(SPLIT_MAX_CHUNKS)), lws);
    let n_chunks = ctx.div_ceil(chunk);
    let split =
        n_tok <= SPLIT_MAX_TOK && n_chunks > 1 && n_tok * p.n_head * n_chunks * (p.head_dim + 2) <= be.scratch.part_cap;
    let (chunk, n_chunks) = if split { (chunk, n_chunks) } else { (0, 1) };
    let part = Mem::of(&be.scratch.part);
    let args = Attention {
        q: q.buf.arg(),
        q_off: el(q.offset),
        k: k.buf.arg(),
        k_off: k.offset as u64,
        v: v.buf.arg(),
        v_off: v.offset as u64,
        out: o,
        out_off: el(out.offset),
        n_head: p.n_head as u32,
        n_kv_head: p.n_kv_head as u32,
        hd: p.head_dim as u32,
        scale: p.scale,
        n_past: p.n_past as u32,
        chunk: chunk as u32,
        part,
    };
    be.q.run(
        &kk.attention,
        &args,
        &[p.n_head * lws, n_tok, n_chunks],
        Some(&[lws, 1, 1]),
    )?;
    if n_chunks > 1 {
        let args = AttentionCombine {
            part,
            out: o,
            out_off: el(out.offset),
            n_head: p.n_head as u32,
            hd: p.head_dim as u32,
            n_chunks: n_chunks as u32,
        };
        be.q.run(
            &be.k.attention_combine,
            &args,
            &[p.n_head * lws, n_tok],
            Some(&[lws, 1]),
        )?;
    }
    Ok(())
}

/// The per-slot attention mass of `attention`'s queries, added into `mass` (a second
/// pass over the keys after the attention op itself: score policies only).
pub(super) fn attention_mass(
    be: &OpenClBackend,
    q: TensorRef<'_, OpenClBackend>,
    k: TensorRef<'_, OpenClBackend>,
    p: AttnParams,
    mass: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let n_tok = q.shape.dims()[0];
    if n_tok == 0 {
        return Ok(());
    }
    let kk = check_kv_head(be, "opencl attention_mass", k.dtype, p.head_dim)?;
    let args = AttentionMass {
        q: q.buf.arg(),
        q_off: el(q.offset),
        k: k.buf.arg(),
        k_off: k.offset as u64,
        n_head: p.n_head as u32,
        n_kv_head: p.n_kv_head as u32,
        hd: p.head_dim as u32,
        scale: p.scale,
        n_past: p.n_past as u32,
        mass: mass.buf.writable("opencl attention mass")?,
        m_off: el(mass.offset),
    };
    let lws = be.sz.lws;
    let kern = &kk.attention_mass;
    be.q.run(kern, &args, &[p.n_head * lws, n_tok], Some(&[lws, 1]))
}

/// Compaction within one buffer: one work-group (see kv_cache.cl), in 2-byte units.
pub(super) fn move_rows(
    be: &OpenClBackend,
    x: TensorMut<'_, OpenClBackend>,
    src: usize,
    dst: usize,
    n: usize,
) -> Result<()> {
    let rb = x.dtype.row_bytes(x.shape.row_len()).unwrap_or(0);
    let args = MoveRows {
        x: x.buf.writable("opencl move_rows")?,
        x_off: (x.offset / 2) as u64,
        src: (src * rb / 2) as u64,
        dst: (dst * rb / 2) as u64,
        n: (n * rb / 2) as u64,
    };
    let lws = be.sz.lws;
    be.q.run(&be.k.move_rows, &args, &[lws], Some(&[lws]))
}

/// Re-rotation of cached keys by `delta` positions (every cache dtype).
pub(super) fn rope_shift(
    be: &OpenClBackend,
    x: TensorMut<'_, OpenClBackend>,
    inv_freq: TensorRef<'_, OpenClBackend>,
    delta: i32,
    style: RopeStyle,
) -> Result<()> {
    rope_kv(be, x, inv_freq, delta, 0, style)
}

/// `rope_shift_f32` of the cache dtype's kv_cache.cl: row `r` of `x` (`[rows, heads, hd]`
/// in a cache dtype) turned by `delta + r * step` positions — re-rotation (`step` 0) or
/// RoPE at positions `delta..` (`step` 1, keys held in an f16 cache).
fn rope_kv(
    be: &OpenClBackend,
    x: TensorMut<'_, OpenClBackend>,
    inv_freq: TensorRef<'_, OpenClBackend>,
    delta: i32,
    step: u32,
    style: RopeStyle,
) -> Result<()> {
    let d = x.shape.dims();
    let (n_rows, n_heads, hd) = (d[0], d[1], d[2]);
    if n_rows == 0 || n_heads == 0 || hd == 0 {
        return Ok(());
    }
    let kern = &check_kv_head(be, "opencl rope_shift", x.dtype, hd)?.rope_shift;
    let dtype = x.dtype;
    let args = RopeShift {
        x: x.buf.writable("opencl rope_shift input")?,
        x_off: x.offset as u64,
        inv_freq: inv_freq.buf.arg(),
        f_off: el(inv_freq.offset),
        delta,
        step,
        n_heads: n_heads as u32,
        head_dim: hd as u32,
        style: rope_style(style),
    };
    // Q8_0: one work-item per (head, row) requantizes the whole head (see kv_cache.cl).
    let pairs = if dtype == DType::Q8_0 { 1 } else { hd / 2 };
    be.q.run(kern, &args, &[pairs, n_heads, n_rows], None)
}

/// A RoPE position as the kernels' `int` (`delta + r * step`).
fn pos_i32(pos: usize) -> Result<i32> {
    i32::try_from(pos).map_err(|_| Error::range("opencl rope position".to_string(), pos as u64, i32::MAX as u64))
}

/// The cache dtypes the cache-reading kernels are built for, and heads they serve: a Q8_0
/// head is whole 32-value blocks (`KvCache::new` checks it for a cache; a view made by
/// hand is refused here, not read out of bounds), any head at most `MAX_HD`. Returns
/// the kernels for `dtype` (built now if this is its first use).
fn check_kv_head<'b>(be: &'b OpenClBackend, op: &'static str, dtype: DType, hd: usize) -> Result<&'b KvKernels> {
    let kk = be.kv_kernels(op, dtype)?;
    if hd > MAX_HD {
        return Err(Error::range(format!("{op} head_dim"), hd as u64, MAX_HD as u64));
    }
    if dtype.is_quantized() && !hd.is_multiple_of(dtype.block_size()) {
        return Err(Error::shape(
            op,
            "cache",
            format!("head_dim a multiple of {} ({dtype} blocks)", dtype.block_size()),
            format!("head_dim {hd}"),
        ));
    }
    Ok(kk)
}

pub(super) fn softmax(be: &OpenClBackend, x: TensorMut<'_, OpenClBackend>) -> Result<()> {
    let n = x.shape.row_len();
    let rows = x.shape.rows();
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let args = Softmax {
        x: x.buf.writable("opencl softmax input")?,
        x_off: el(x.offset),
        n: n as u32,
    };
    let lws = be.sz.lws;
    be.q.run(&be.k.softmax, &args, &[rows * lws], Some(&[lws]))
}

pub(super) fn argmax(
    be: &OpenClBackend,
    x: TensorRef<'_, OpenClBackend>,
    out: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let (rows, n) = (x.shape.rows(), x.shape.row_len());
    if rows == 0 {
        return Ok(());
    }
    let o = out.buf.writable("opencl argmax output")?;
    let lws = be.sz.argmax_lws;
    // Two `__local` arrays of one slot per work-item (values, indices).
    let (bv, bi) = (Local(lws * 4), Local(lws * 4));
    let parts = n.div_ceil(ARGMAX_CHUNK);
    if n > ARGMAX_TWO_PASS && parts <= ARGMAX_MAX_PARTS && rows * parts * 2 <= be.scratch.argmax_part_cap {
        let part = Mem::of(&be.scratch.argmax_part);
        let args = ArgmaxPart {
            x: x.buf.arg(),
            x_off: el(x.offset),
            n: n as u32,
            chunk: ARGMAX_CHUNK as u32,
            part,
            bv,
            bi,
        };
        be.q.run(&be.k.argmax_part, &args, &[parts * lws, rows], Some(&[lws, 1]))?;
        let args = ArgmaxFinal {
            part,
            n_parts: parts as u32,
            out: o,
            out_off: el(out.offset),
            bv,
            bi,
        };
        return be.q.run(&be.k.argmax_final, &args, &[rows * lws], Some(&[lws]));
    }
    let args = Argmax {
        x: x.buf.arg(),
        x_off: el(x.offset),
        out: o,
        out_off: el(out.offset),
        n: n as u32,
        bv,
        bi,
    };
    be.q.run(&be.k.argmax, &args, &[rows * lws], Some(&[lws]))
}

pub(super) fn swiglu(
    be: &OpenClBackend,
    gate: TensorRef<'_, OpenClBackend>,
    up: TensorRef<'_, OpenClBackend>,
    out: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let n = gate.shape.numel();
    if n == 0 {
        return Ok(());
    }
    let args = SiluMul {
        gate: gate.buf.arg(),
        gate_off: el(gate.offset),
        up: up.buf.arg(),
        up_off: el(up.offset),
        out: out.buf.writable("opencl swiglu output")?,
        out_off: el(out.offset),
        n: n as u32,
    };
    be.q.run(&be.k.silu_mul, &args, &[round_up(n, 64)], None)
}

pub(super) fn add(
    be: &OpenClBackend,
    dst: TensorMut<'_, OpenClBackend>,
    src: TensorRef<'_, OpenClBackend>,
) -> Result<()> {
    let n = dst.shape.numel();
    if n == 0 {
        return Ok(());
    }
    let args = Add {
        dst: dst.buf.writable("opencl add destination")?,
        dst_off: el(dst.offset),
        src: src.buf.arg(),
        src_off: el(src.offset),
        n: n as u32,
    };
    be.q.run(&be.k.add, &args, &[round_up(n, 64)], None)
}

/// `y = x · wᵀ` into a view of an f16 or Q8_0 cache (a K/V projection): the matmul
/// kernels write f32, so the rows go to the backend's f32 staging (`Scratch::kv_tmp`)
/// and `store_rows` converts them — one rounding, as the CPU's matmul into the cache.
pub(super) fn matmul_into_cache(
    be: &mut OpenClBackend,
    w: TensorRef<'_, OpenClBackend>,
    x: TensorRef<'_, OpenClBackend>,
    y: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let Some(mut tmp) = be.scratch.kv_tmp.take() else {
        return Err(Error::invalid(
            "opencl matmul into an f16/q8_0 cache: f32 staging not reserved (call reserve)",
        ));
    };
    let need = y.shape.numel() * 4;
    let res = if need > tmp.len {
        Err(Error::out_of_bounds(
            "opencl matmul",
            "f32 staging of the cache rows",
            0,
            need,
            tmp.len,
        ))
    } else {
        super::matmul::mat(be, w, x, TensorMut::new(&mut tmp, 0, DType::F32, y.shape), false)
            .and_then(|()| store_rows(be, TensorRef::new(&tmp, 0, DType::F32, y.shape), y))
    };
    be.scratch.kv_tmp = Some(tmp);
    res
}

/// `dst = convert(src)` into a cache view (f32, f16 or Q8_0; see `Backend::store_rows`).
pub(super) fn store_rows(
    be: &OpenClBackend,
    src: TensorRef<'_, OpenClBackend>,
    dst: TensorMut<'_, OpenClBackend>,
) -> Result<()> {
    let n = src.shape.numel();
    if n == 0 {
        return Ok(());
    }
    let (k, items) = match dst.dtype {
        DType::F32 => (&be.k.store_rows[0], n),
        DType::F16 => (&be.k.store_rows[1], n),
        DType::Q8_0 => (&be.k.store_rows[2], n / 32),
        other => return Err(Error::dtype("store_rows", "dst", other)),
    };
    let args = StoreRows {
        src: src.buf.arg(),
        src_off: el(src.offset),
        dst: dst.buf.writable("opencl store_rows destination")?,
        dst_off: dst.offset as u64,
        n: n as u32,
    };
    be.q.run(k, &args, &[round_up(items, 64)], None)
}
