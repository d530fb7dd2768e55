//! The op layer: every op call goes through here, and every shape, dtype, alignment and
//! bounds check lives here, once, for all backends. Backends implement the unchecked
//! kernels on [`Backend`]; the model calls these functions.

use alloc::format;
use alloc::string::ToString;

use crate::backend::{AttnParams, Backend, BlockKv, BlockParams, BlockScratch, BlockWeights, LayerVisitor, RopeStyle};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{Shape, TensorMut, TensorRef};

fn bounds<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    what: &'static str,
    buf: &B::Buffer,
    offset: usize,
    dtype: DType,
    shape: Shape,
) -> Result<()> {
    let needed = crate::tensor::tensor_bytes(dtype, shape).ok_or_else(|| {
        Error::shape(
            op,
            what,
            format!("rows that are whole {dtype} blocks of {}", dtype.block_size()),
            shape.describe(),
        )
    })?;
    let len = b.buffer_len(buf);
    if offset.checked_add(needed).is_none_or(|end| end > len) {
        return Err(Error::out_of_bounds(op, what, offset, needed, len));
    }
    // Element alignment: f32 views must be 4-aligned, f16/blocks 2-aligned.
    let align = match dtype {
        DType::F32 => 4,
        _ => 2,
    };
    if !offset.is_multiple_of(align) {
        return Err(Error::invalid(format!(
            "{op}: {what} offset {offset} is not {align}-byte aligned"
        )));
    }
    Ok(())
}

fn chk_ref<B: Backend + ?Sized>(b: &B, op: &'static str, what: &'static str, t: &TensorRef<'_, B>) -> Result<()> {
    bounds(b, op, what, t.buf, t.offset, t.dtype, t.shape)
}
fn chk_mut<B: Backend + ?Sized>(b: &B, op: &'static str, what: &'static str, t: &TensorMut<'_, B>) -> Result<()> {
    bounds(b, op, what, t.buf, t.offset, t.dtype, t.shape)
}

/// `got` is f32, or one of the backend's KV-cache dtypes (a tensor that lives in the
/// cache: the K/V projections' output, the keys RoPE rotates, attention's keys and values).
fn want_f32_or_kv<B: Backend + ?Sized>(b: &B, op: &'static str, what: &'static str, got: DType) -> Result<()> {
    if got == DType::F32 || b.capabilities().kv_dtypes.contains(&got) {
        return Ok(());
    }
    Err(Error::dtype(op, what, got))
}

fn want_dtype(op: &'static str, what: &'static str, got: DType, want: DType) -> Result<()> {
    if got != want {
        return Err(Error::dtype(op, what, got));
    }
    Ok(())
}

fn want_shape(op: &'static str, what: &'static str, got: Shape, expected: &[usize]) -> Result<()> {
    if got.dims() != expected {
        return Err(Error::shape(op, what, format!("{expected:?}"), got.describe()));
    }
    Ok(())
}

fn weight_dtype<B: Backend + ?Sized>(b: &B, op: &'static str, dtype: DType) -> Result<()> {
    if dtype == DType::Q8_1 || !b.capabilities().weight_dtypes.contains(&dtype) {
        return Err(Error::dtype(op, "weight", dtype));
    }
    Ok(())
}

/// The checks both embedding lookups share: table and output views, a weight dtype,
/// an f32 output, a rank-2 table. Returns the table's (rows, row length).
fn chk_lookup<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    table: &TensorRef<'_, B>,
    out: &TensorMut<'_, B>,
) -> Result<(usize, usize)> {
    chk_ref(b, op, "table", table)?;
    chk_mut(b, op, "out", out)?;
    weight_dtype(b, op, table.dtype)?;
    want_dtype(op, "out", out.dtype, DType::F32)?;
    if table.shape.rank() != 2 {
        return Err(Error::shape(op, "table", "rank 2".to_string(), table.shape.describe()));
    }
    Ok((table.shape.dims()[0], table.shape.dims()[1]))
}

/// Embedding lookup: `out[t] = table[ids[t]]`, dequantized to f32.
pub fn get_rows<B: Backend + ?Sized>(
    b: &mut B,
    table: TensorRef<'_, B>,
    ids: &[u32],
    out: TensorMut<'_, B>,
) -> Result<()> {
    const OP: &str = "get_rows";
    let (n_rows, dim) = chk_lookup(b, OP, &table, &out)?;
    want_shape(OP, "out", out.shape, &[ids.len(), dim])?;
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= n_rows) {
        return Err(Error::range("token id".to_string(), bad as u64, n_rows as u64));
    }
    b.get_rows(table, ids, out)
}

/// `get_rows` with the row indices on the device (f32, as `argmax` writes them).
pub fn get_rows_at<B: Backend + ?Sized>(
    b: &mut B,
    table: TensorRef<'_, B>,
    idx: TensorRef<'_, B>,
    out: TensorMut<'_, B>,
) -> Result<()> {
    const OP: &str = "get_rows_at";
    let (_, dim) = chk_lookup(b, OP, &table, &out)?;
    chk_ref(b, OP, "idx", &idx)?;
    want_dtype(OP, "idx", idx.dtype, DType::F32)?;
    want_shape(OP, "out", out.shape, &[idx.shape.numel(), dim])?;
    b.get_rows_at(table, idx, out)
}

/// `y = x · wᵀ` — one token or a batch.
pub fn matmul<B: Backend + ?Sized>(
    b: &mut B,
    w: TensorRef<'_, B>,
    x: TensorRef<'_, B>,
    y: TensorMut<'_, B>,
) -> Result<()> {
    check_matmul_to(b, "matmul", &w, &x, &y, true)?;
    b.matmul(w, x, y)
}

fn check_matmul<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    w: &TensorRef<'_, B>,
    x: &TensorRef<'_, B>,
    y: &TensorMut<'_, B>,
) -> Result<()> {
    check_matmul_to(b, op, w, x, y, false)
}

/// As [`check_matmul`]; `into_cache`: `y` may also be a KV-cache dtype (the K/V
/// projections write the cache directly).
fn check_matmul_to<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    w: &TensorRef<'_, B>,
    x: &TensorRef<'_, B>,
    y: &TensorMut<'_, B>,
    into_cache: bool,
) -> Result<()> {
    chk_ref(b, op, "w", w)?;
    chk_ref(b, op, "x", x)?;
    chk_mut(b, op, "y", y)?;
    weight_dtype(b, op, w.dtype)?;
    want_dtype(op, "x", x.dtype, DType::F32)?;
    if into_cache {
        want_f32_or_kv(b, op, "y", y.dtype)?;
    } else {
        want_dtype(op, "y", y.dtype, DType::F32)?;
    }
    if w.shape.rank() != 2 {
        return Err(Error::shape(op, "w", "rank 2".to_string(), w.shape.describe()));
    }
    let (n_out, n_in) = (w.shape.dims()[0], w.shape.dims()[1]);
    let n_tok = x.shape.rows();
    if x.shape.row_len() != n_in {
        return Err(Error::shape(op, "x", format!("[n_tok, {n_in}]"), x.shape.describe()));
    }
    if y.shape.rows() != n_tok || y.shape.row_len() != n_out {
        return Err(Error::shape(op, "y", format!("[{n_tok}, {n_out}]"), y.shape.describe()));
    }
    Ok(())
}

/// RMS normalisation with a learned f32 weight.
pub fn rms_norm<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorRef<'_, B>,
    w: TensorRef<'_, B>,
    eps: f32,
    out: TensorMut<'_, B>,
) -> Result<()> {
    check_rms_norm(b, "rms_norm", &x, &w, &out)?;
    b.rms_norm(x, w, eps, out)
}

fn check_rms_norm<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    x: &TensorRef<'_, B>,
    w: &TensorRef<'_, B>,
    out: &TensorMut<'_, B>,
) -> Result<()> {
    chk_ref(b, op, "x", x)?;
    chk_ref(b, op, "w", w)?;
    chk_mut(b, op, "out", out)?;
    want_dtype(op, "x", x.dtype, DType::F32)?;
    want_dtype(op, "w", w.dtype, DType::F32)?;
    want_dtype(op, "out", out.dtype, DType::F32)?;
    want_shape(op, "w", w.shape, &[x.shape.row_len()])?;
    if out.shape.numel() != x.shape.numel() || out.shape.row_len() != x.shape.row_len() {
        return Err(Error::shape(op, "out", x.shape.describe(), out.shape.describe()));
    }
    Ok(())
}

/// RoPE in place on `x` [n_tok, n_heads, head_dim].
pub fn rope<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorMut<'_, B>,
    inv_freq: TensorRef<'_, B>,
    pos0: usize,
    style: RopeStyle,
) -> Result<()> {
    check_rope(b, "rope", &x, &inv_freq, false)?;
    b.rope(x, inv_freq, pos0, style)
}

/// `quantized_ok`: `x` may be a block-quantized cache (re-rotation decodes, turns and
/// requantizes whole heads); RoPE itself refuses one.
fn check_rope<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    x: &TensorMut<'_, B>,
    inv_freq: &TensorRef<'_, B>,
    quantized_ok: bool,
) -> Result<()> {
    chk_mut(b, op, "x", x)?;
    chk_ref(b, op, "inv_freq", inv_freq)?;
    want_f32_or_kv(b, op, "x", x.dtype)?;
    if x.dtype.is_quantized() && !quantized_ok {
        // A quantized cache's keys are rotated in f32 and stored with `store_rows`.
        return Err(Error::dtype(op, "x", x.dtype));
    }
    want_dtype(op, "inv_freq", inv_freq.dtype, DType::F32)?;
    if x.shape.rank() != 3 || !x.shape.row_len().is_multiple_of(2) {
        return Err(Error::shape(
            op,
            "x",
            "[n_tok, n_heads, even head_dim]".to_string(),
            x.shape.describe(),
        ));
    }
    want_shape(op, "inv_freq", inv_freq.shape, &[x.shape.row_len() / 2])?;
    Ok(())
}

/// Causal grouped-query attention over the KV cache.
pub fn attention<B: Backend + ?Sized>(
    b: &mut B,
    q: TensorRef<'_, B>,
    k: TensorRef<'_, B>,
    v: TensorRef<'_, B>,
    p: AttnParams,
    out: TensorMut<'_, B>,
) -> Result<()> {
    check_attention(b, "attention", &q, &k, &v, &p, &out)?;
    b.attention(q, k, v, p, out)
}

fn check_attention<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    q: &TensorRef<'_, B>,
    k: &TensorRef<'_, B>,
    v: &TensorRef<'_, B>,
    p: &AttnParams,
    out: &TensorMut<'_, B>,
) -> Result<()> {
    chk_ref(b, op, "q", q)?;
    chk_ref(b, op, "k", k)?;
    chk_ref(b, op, "v", v)?;
    chk_mut(b, op, "out", out)?;
    for (what, t) in [("q", q.dtype), ("out", out.dtype)] {
        want_dtype(op, what, t, DType::F32)?;
    }
    want_f32_or_kv(b, op, "k", k.dtype)?;
    want_dtype(op, "v", v.dtype, k.dtype)?;
    if p.n_kv_head == 0 || !p.n_head.is_multiple_of(p.n_kv_head) {
        return Err(Error::invalid(format!(
            "{op}: n_head {} is not a multiple of n_kv_head {}",
            p.n_head, p.n_kv_head
        )));
    }
    let n_tok = q.shape.dims()[0];
    want_shape(op, "q", q.shape, &[n_tok, p.n_head, p.head_dim])?;
    want_shape(op, "out", out.shape, &[n_tok, p.n_head, p.head_dim])?;
    if k.shape.rank() != 3 || k.shape.dims()[1..] != [p.n_kv_head, p.head_dim] {
        return Err(Error::shape(
            op,
            "k",
            format!("[capacity, {}, {}]", p.n_kv_head, p.head_dim),
            k.shape.describe(),
        ));
    }
    want_shape(op, "v", v.shape, k.shape.dims())?;
    if k.dtype.is_quantized() && p.head_dim > crate::kv_cache::Q8_MAX_HEAD_DIM {
        return Err(Error::range(
            format!("{op}: head_dim over a {} cache", k.dtype.name()),
            p.head_dim as u64,
            crate::kv_cache::Q8_MAX_HEAD_DIM as u64,
        ));
    }
    let cap = k.shape.dims()[0];
    if p.n_past + n_tok > cap {
        return Err(Error::range(
            "attention context (n_past + n_tok)".to_string(),
            (p.n_past + n_tok) as u64,
            cap as u64,
        ));
    }
    Ok(())
}

/// [`Backend::attention_mass`]: attention, plus the per-slot attention mass added into
/// `mass` (f32 `[capacity]`, the cache's slot count).
pub fn attention_mass<B: Backend + ?Sized>(
    b: &mut B,
    q: TensorRef<'_, B>,
    k: TensorRef<'_, B>,
    v: TensorRef<'_, B>,
    p: AttnParams,
    out: TensorMut<'_, B>,
    mass: TensorMut<'_, B>,
) -> Result<()> {
    const OP: &str = "attention_mass";
    check_attention(b, OP, &q, &k, &v, &p, &out)?;
    chk_mut(b, OP, "mass", &mass)?;
    want_dtype(OP, "mass", mass.dtype, DType::F32)?;
    want_shape(OP, "mass", mass.shape, &[k.shape.dims()[0]])?;
    b.attention_mass(q, k, v, p, out, mass)
}

/// [`Backend::move_rows`]: rows `src..src + n` of `x` (`[rows, row_len]`) to
/// `dst..dst + n`, `dst <= src`.
pub fn move_rows<B: Backend + ?Sized>(b: &mut B, x: TensorMut<'_, B>, src: usize, dst: usize, n: usize) -> Result<()> {
    const OP: &str = "move_rows";
    chk_mut(b, OP, "x", &x)?;
    want_f32_or_kv(b, OP, "x", x.dtype)?;
    if x.shape.rank() != 2 {
        return Err(Error::shape(OP, "x", "[rows, row_len]".to_string(), x.shape.describe()));
    }
    if dst > src {
        return Err(Error::invalid(format!(
            "{OP}: destination row {dst} is past source row {src} (compaction moves rows down)"
        )));
    }
    let rows = x.shape.rows();
    if src.checked_add(n).is_none_or(|e| e > rows) {
        return Err(Error::range(
            format!("{OP}: last source row + 1"),
            src.saturating_add(n) as u64,
            rows as u64,
        ));
    }
    if n == 0 || src == dst {
        return Ok(());
    }
    b.move_rows(x, src, dst, n)
}

/// [`Backend::rope_shift`]: every head of `x` (`[n_rows, n_heads, head_dim]`) turned by
/// `delta` positions.
pub fn rope_shift<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorMut<'_, B>,
    inv_freq: TensorRef<'_, B>,
    delta: i32,
    style: RopeStyle,
) -> Result<()> {
    check_rope(b, "rope_shift", &x, &inv_freq, true)?;
    if delta == 0 || x.shape.numel() == 0 {
        return Ok(());
    }
    b.rope_shift(x, inv_freq, delta, style)
}

/// Copies f32 rows into a view of a cache dtype (see [`Backend::store_rows`]).
pub fn store_rows<B: Backend + ?Sized>(b: &mut B, src: TensorRef<'_, B>, dst: TensorMut<'_, B>) -> Result<()> {
    check_store_rows(b, "store_rows", &src, &dst)?;
    b.store_rows(src, dst)
}

fn check_store_rows<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    src: &TensorRef<'_, B>,
    dst: &TensorMut<'_, B>,
) -> Result<()> {
    chk_ref(b, op, "src", src)?;
    chk_mut(b, op, "dst", dst)?;
    want_dtype(op, "src", src.dtype, DType::F32)?;
    want_f32_or_kv(b, op, "dst", dst.dtype)?;
    if src.shape.rows() != dst.shape.rows() || src.shape.row_len() != dst.shape.row_len() {
        return Err(Error::shape(op, "dst", src.shape.describe(), dst.shape.describe()));
    }
    Ok(())
}

/// Row-wise argmax of `x` ([rows, n] f32) into `out` ([rows] f32 holding indices).
pub fn argmax<B: Backend + ?Sized>(b: &mut B, x: TensorRef<'_, B>, out: TensorMut<'_, B>) -> Result<()> {
    const OP: &str = "argmax";
    chk_ref(b, OP, "x", &x)?;
    chk_mut(b, OP, "out", &out)?;
    want_dtype(OP, "x", x.dtype, DType::F32)?;
    want_dtype(OP, "out", out.dtype, DType::F32)?;
    want_shape(OP, "out", out.shape, &[x.shape.rows()])?;
    if x.shape.row_len() >= 1 << 24 {
        return Err(Error::range(
            "argmax row length (indices travel as f32)".to_string(),
            x.shape.row_len() as u64,
            1 << 24,
        ));
    }
    b.argmax(x, out)
}

/// Row-wise softmax in place.
pub fn softmax<B: Backend + ?Sized>(b: &mut B, x: TensorMut<'_, B>) -> Result<()> {
    chk_mut(b, "softmax", "x", &x)?;
    want_dtype("softmax", "x", x.dtype, DType::F32)?;
    b.softmax(x)
}

/// `out = silu(gate) · up`.
pub fn swiglu<B: Backend + ?Sized>(
    b: &mut B,
    gate: TensorRef<'_, B>,
    up: TensorRef<'_, B>,
    out: TensorMut<'_, B>,
) -> Result<()> {
    const OP: &str = "swiglu";
    chk_ref(b, OP, "gate", &gate)?;
    chk_ref(b, OP, "up", &up)?;
    chk_mut(b, OP, "out", &out)?;
    for (what, t) in [("gate", gate.dtype), ("up", up.dtype), ("out", out.dtype)] {
        want_dtype(OP, what, t, DType::F32)?;
    }
    want_shape(OP, "up", up.shape, gate.shape.dims())?;
    want_shape(OP, "out", out.shape, gate.shape.dims())?;
    b.swiglu(gate, up, out)
}

/// `dst += src`.
pub fn add<B: Backend + ?Sized>(b: &mut B, dst: TensorMut<'_, B>, src: TensorRef<'_, B>) -> Result<()> {
    check_add(b, "add", &dst, &src)?;
    b.add(dst, src)
}

fn check_add<B: Backend + ?Sized>(
    b: &B,
    op: &'static str,
    dst: &TensorMut<'_, B>,
    src: &TensorRef<'_, B>,
) -> Result<()> {
    chk_mut(b, op, "dst", dst)?;
    chk_ref(b, op, "src", src)?;
    want_dtype(op, "dst", dst.dtype, DType::F32)?;
    want_dtype(op, "src", src.dtype, DType::F32)?;
    if dst.shape.numel() != src.shape.numel() {
        return Err(Error::shape(op, "src", dst.shape.describe(), src.shape.describe()));
    }
    Ok(())
}

// --- fused ops: each checks exactly what its composition would ----------------------

/// `y += x · wᵀ`; `tmp` is scratch of `y`'s shape.
pub fn matmul_add<B: Backend + ?Sized>(
    b: &mut B,
    w: TensorRef<'_, B>,
    x: TensorRef<'_, B>,
    tmp: TensorMut<'_, B>,
    y: TensorMut<'_, B>,
) -> Result<()> {
    const OP: &str = "matmul_add";
    check_matmul(b, OP, &w, &x, &tmp)?;
    check_matmul(b, OP, &w, &x, &y)?;
    b.matmul_add(w, x, tmp, y)
}

/// RoPE on queries and keys of the same tokens.
pub fn rope_qk<B: Backend + ?Sized>(
    b: &mut B,
    q: TensorMut<'_, B>,
    k: TensorMut<'_, B>,
    inv_freq: TensorRef<'_, B>,
    pos0: usize,
    style: RopeStyle,
) -> Result<()> {
    const OP: &str = "rope_qk";
    check_rope(b, OP, &q, &inv_freq, false)?;
    check_rope(b, OP, &k, &inv_freq, false)?;
    if q.shape.dims()[0] != k.shape.dims()[0] || q.shape.row_len() != k.shape.row_len() {
        return Err(Error::shape(
            OP,
            "k",
            format!("[{}, n_kv_heads, {}]", q.shape.dims()[0], q.shape.row_len()),
            k.shape.describe(),
        ));
    }
    b.rope_qk(q, k, inv_freq, pos0, style)
}

/// `xn = rms_norm(x) · norm_w; ys[i] = xn · ws[i]ᵀ` (Q, K, V); `xn` is scratch.
pub fn rms_norm_matmul3<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorRef<'_, B>,
    norm_w: TensorRef<'_, B>,
    eps: f32,
    xn: TensorMut<'_, B>,
    ws: [TensorRef<'_, B>; 3],
    ys: [TensorMut<'_, B>; 3],
) -> Result<()> {
    const OP: &str = "rms_norm_matmul3";
    check_rms_norm(b, OP, &x, &norm_w, &xn)?;
    for (i, (w, y)) in ws.iter().zip(&ys).enumerate() {
        // Q is f32; K and V go to the cache, in its dtype.
        check_matmul_to(b, OP, w, &xn.as_ref(), y, i > 0)?;
    }
    b.rms_norm_matmul3(x, norm_w, eps, xn, ws, ys)
}

/// `xn = rms_norm(x) · norm_w; out = silu(xn · w_gateᵀ) · (xn · w_upᵀ)`; `xn`, `gate`,
/// `up` are scratch.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_matmul_swiglu<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorRef<'_, B>,
    norm_w: TensorRef<'_, B>,
    eps: f32,
    xn: TensorMut<'_, B>,
    w_gate: TensorRef<'_, B>,
    w_up: TensorRef<'_, B>,
    gate: TensorMut<'_, B>,
    up: TensorMut<'_, B>,
    out: TensorMut<'_, B>,
) -> Result<()> {
    const OP: &str = "rms_norm_matmul_swiglu";
    check_rms_norm(b, OP, &x, &norm_w, &xn)?;
    check_matmul(b, OP, &w_gate, &xn.as_ref(), &gate)?;
    check_matmul(b, OP, &w_up, &xn.as_ref(), &up)?;
    chk_mut(b, OP, "out", &out)?;
    want_dtype(OP, "out", out.dtype, DType::F32)?;
    want_shape(OP, "out", out.shape, gate.shape.dims())?;
    want_shape(OP, "up", up.shape, gate.shape.dims())?;
    b.rms_norm_matmul_swiglu(x, norm_w, eps, xn, w_gate, w_up, gate, up, out)
}

/// `y = (rms_norm(x) · norm_w) · wᵀ` (the model head); `xn` is scratch.
pub fn rms_norm_matmul<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorRef<'_, B>,
    norm_w: TensorRef<'_, B>,
    eps: f32,
    xn: TensorMut<'_, B>,
    w: TensorRef<'_, B>,
    y: TensorMut<'_, B>,
) -> Result<()> {
    const OP: &str = "rms_norm_matmul";
    check_rms_norm(b, OP, &x, &norm_w, &xn)?;
    check_matmul(b, OP, &w, &xn.as_ref(), &y)?;
    b.rms_norm_matmul(x, norm_w, eps, xn, w, y)
}

/// Everything the composition of a block would check (see [`llama_block`]).
fn check_block<B: Backend + ?Sized>(
    b: &B,
    x: &TensorMut<'_, B>,
    w: &BlockWeights<'_, B>,
    kv: &mut BlockKv<'_, B>,
    inv_freq: &TensorRef<'_, B>,
    p: &BlockParams,
    s: &mut BlockScratch<'_, B>,
) -> Result<()> {
    const OP: &str = "llama_block";
    let a = p.attn;
    let n = x.shape.rows();
    chk_mut(b, OP, "x", x)?;
    want_dtype(OP, "x", x.dtype, DType::F32)?;
    let xr = x.as_ref();
    check_rms_norm(b, OP, &xr, &w.attn_norm, &s.xn)?;
    check_rms_norm(b, OP, &xr, &w.ffn_norm, &s.xn)?;
    let xn = s.xn.as_ref();
    let qd = a.n_head * a.head_dim;
    want_shape(OP, "q", s.q.shape, &[n, qd])?;
    want_shape(OP, "att", s.att.shape, &[n, qd])?;
    check_matmul(b, OP, &w.wq, &xn, &s.q)?;
    let q_heads = s.q.reborrow().reshape(Shape::d3(n, a.n_head, a.head_dim));
    check_rope(b, OP, &q_heads, inv_freq, false)?;
    let kv_row = a.n_kv_head * a.head_dim;
    check_attention(
        b,
        OP,
        &s.q.as_ref().reshape(Shape::d3(n, a.n_head, a.head_dim)),
        &kv.k.as_ref(),
        &kv.v.as_ref(),
        &a,
        &s.att.reborrow().reshape(Shape::d3(n, a.n_head, a.head_dim)),
    )?;
    // (check_attention has bounded n_past + n by the capacity, so the slot views fit.)
    let k_new = kv.k.rows_mut(a.n_past, n, kv_row);
    if k_new.dtype.is_quantized() {
        // Keys of a quantized cache: projected into `att`, rotated there, then stored.
        let mut k32 = s.att.rows_mut(0, n, kv_row);
        check_matmul_to(b, OP, &w.wk, &xn, &k32, false)?;
        check_rope(
            b,
            OP,
            &k32.reborrow().reshape(Shape::d3(n, a.n_kv_head, a.head_dim)),
            inv_freq,
            false,
        )?;
        check_store_rows(b, OP, &k32.as_ref(), &k_new)?;
    } else {
        check_matmul_to(b, OP, &w.wk, &xn, &k_new, true)?;
        check_rope(
            b,
            OP,
            &k_new.reshape(Shape::d3(n, a.n_kv_head, a.head_dim)),
            inv_freq,
            false,
        )?;
    }
    check_matmul_to(b, OP, &w.wv, &xn, &kv.v.rows_mut(a.n_past, n, kv_row), true)?;
    check_matmul(b, OP, &w.wo, &s.att.as_ref(), &s.tmp)?;
    check_matmul(b, OP, &w.wo, &s.att.as_ref(), x)?;
    check_matmul(b, OP, &w.w_gate, &xn, &s.gate)?;
    check_matmul(b, OP, &w.w_up, &xn, &s.up)?;
    check_matmul(b, OP, &w.w_gate, &xn, &s.act)?;
    check_matmul(b, OP, &w.w_down, &s.act.as_ref(), &s.tmp)?;
    Ok(())
}

/// One whole Llama block (see [`Backend::llama_block`]); checks everything its
/// composition would check, so a fused backend sees only valid views.
pub fn llama_block<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorMut<'_, B>,
    w: BlockWeights<'_, B>,
    mut kv: BlockKv<'_, B>,
    inv_freq: TensorRef<'_, B>,
    p: BlockParams,
    mut s: BlockScratch<'_, B>,
) -> Result<()> {
    check_block(b, &x, &w, &mut kv, &inv_freq, &p, &mut s)?;
    b.llama_block(x, w, kv, inv_freq, p, s)
}

/// Every layer (see [`Backend::llama_blocks`]): each layer's views are checked (one
/// visit per layer) before the backend runs any of them.
pub fn llama_blocks<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorMut<'_, B>,
    n_layer: usize,
    layer: &mut LayerVisitor<'_, B>,
    inv_freq: TensorRef<'_, B>,
    p: BlockParams,
    mut s: BlockScratch<'_, B>,
) -> Result<()> {
    for l in 0..n_layer {
        let bb: &B = b;
        layer(l, &mut |w, mut kv| {
            check_block(bb, &x, &w, &mut kv, &inv_freq, &p, &mut s)
        })?;
    }
    b.llama_blocks(x, n_layer, layer, inv_freq, p, s)
}
