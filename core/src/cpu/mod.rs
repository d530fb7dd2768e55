//! The CPU backend: every op of the [`Backend`] trait on host memory.
//!
//! Structure (after memchr): the portable scalar kernels in [`scalar`] are always
//! compiled; ISA-specific kernels (AVX2, AVX-512, NEON) live in their own folders and
//! enter through [`kernels::Kernels`], a table of function pointers chosen once when the
//! backend is built ([`Isa`]). Hot loops never branch on the ISA.
//!
//! Memory: a [`CpuBuffer`] is either owned, 64-byte-aligned host memory, or a
//! [`HostRegion`] borrowed from a memory-mapped file (weights: zero-copy, read-only).
//!
//! Scratch (activation quantization for the integer dot products, attention scores) is
//! reserved by [`Backend::reserve`]; ops allocate nothing.

pub mod kernels;
pub mod scalar;

use alloc::vec;
use alloc::vec::Vec;

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

use crate::backend::{AttnParams, Backend, BufferKind, Capabilities, HostRegion, Reservation, RopeStyle};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use crate::tensor::{TensorMut, TensorRef};

pub use kernels::{Isa, Kernels};

#[repr(C, align(64))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Chunk([u8; 64]);

enum Mem {
    Owned(Vec<Chunk>),
    Host(HostRegion),
}

/// Host memory: owned and aligned, or borrowed read-only from a mapped file.
pub struct CpuBuffer {
    mem: Mem,
    len: usize,
}

impl CpuBuffer {
    /// The buffer's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.mem {
            Mem::Owned(v) => &bytemuck::cast_slice(v)[..self.len],
            Mem::Host(r) => r.bytes(),
        }
    }
    /// The buffer's bytes, writable; `None` for read-only (mapped) memory.
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match &mut self.mem {
            Mem::Owned(v) => Some(&mut bytemuck::cast_slice_mut(v)[..self.len]),
            Mem::Host(_) => None,
        }
    }
    /// True when the bytes are borrowed from a host region (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.mem, Mem::Host(_))
    }
}

/// The CPU backend.
pub struct CpuBackend {
    k: Kernels,
    /// Activation rows quantized to Q8_0 (Q4_0 / Q8_0 weights).
    q8_0: Vec<BlockQ8_0>,
    /// Activation rows quantized to Q8_1 (Q4_1 weights).
    q8_1: Vec<BlockQ8_1>,
    /// Attention scores for one query row.
    scores: Vec<f32>,
    /// One dequantized row (get_rows of quantized tables is row by row).
    row: Vec<f32>,
}

impl CpuBackend {
    /// The backend with the best ISA this CPU supports.
    pub fn new() -> CpuBackend {
        CpuBackend::with_kernels(Kernels::detect())
    }
    /// The backend with a forced ISA; `None` when this CPU lacks it.
    pub fn with_isa(isa: Isa) -> Option<CpuBackend> {
        Kernels::for_isa(isa).map(CpuBackend::with_kernels)
    }
    fn with_kernels(k: Kernels) -> CpuBackend {
        CpuBackend {
            k,
            q8_0: Vec::new(),
            q8_1: Vec::new(),
            scores: Vec::new(),
            row: Vec::new(),
        }
    }
    pub fn kernels(&self) -> &Kernels {
        &self.k
    }
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

fn view<'a>(t: &TensorRef<'a, CpuBackend>) -> &'a [u8] {
    let n = t.nbytes();
    &t.buf.bytes()[t.offset..t.offset + n]
}

fn view_mut<'a>(t: TensorMut<'a, CpuBackend>) -> Result<&'a mut [u8]> {
    let n = t.nbytes();
    let off = t.offset;
    let b = t.buf.bytes_mut().ok_or(Error::ReadOnly {
        what: "cpu output tensor",
    })?;
    Ok(&mut b[off..off + n])
}

fn f32s(b: &[u8]) -> &[f32] {
    bytemuck::cast_slice(b)
}
fn f32s_mut(b: &mut [u8]) -> &mut [f32] {
    bytemuck::cast_slice_mut(b)
}

fn grow<T: Clone + Zeroable>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::zeroed());
    }
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn name(&self) -> &'static str {
        "cpu"
    }
    fn isa(&self) -> &'static str {
        self.k.isa.name()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            weight_dtypes: &[
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::Q4_0,
                DType::Q4_1,
                DType::Q8_0,
            ],
            unified_memory: true,
            synchronous: true,
        }
    }

    fn alloc(&self, bytes: usize, _kind: BufferKind) -> Result<CpuBuffer> {
        let chunks = bytes.div_ceil(64);
        Ok(CpuBuffer {
            mem: Mem::Owned(vec![Chunk([0; 64]); chunks]),
            len: bytes,
        })
    }
    fn import_host(&self, region: HostRegion) -> Result<CpuBuffer> {
        let len = region.len();
        Ok(CpuBuffer {
            mem: Mem::Host(region),
            len,
        })
    }
    fn buffer_len(&self, buf: &CpuBuffer) -> usize {
        buf.len
    }
    fn upload(&self, dst: &mut CpuBuffer, offset: usize, src: &[u8]) -> Result<()> {
        let len = dst.len;
        let b = dst.bytes_mut().ok_or(Error::ReadOnly {
            what: "upload destination",
        })?;
        let end = offset
            .checked_add(src.len())
            .filter(|&e| e <= len)
            .ok_or(Error::OutOfBounds {
                op: "upload",
                what: "dst",
                offset,
                needed: src.len(),
                len,
            })?;
        b[offset..end].copy_from_slice(src);
        Ok(())
    }
    fn download(&self, src: &CpuBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let b = src.bytes();
        let end = offset
            .checked_add(dst.len())
            .filter(|&e| e <= b.len())
            .ok_or(Error::OutOfBounds {
                op: "download",
                what: "src",
                offset,
                needed: dst.len(),
                len: b.len(),
            })?;
        dst.copy_from_slice(&b[offset..end]);
        Ok(())
    }
    fn reserve(&mut self, r: Reservation) -> Result<()> {
        let blocks = r.max_tokens * r.max_row.div_ceil(32);
        grow(&mut self.q8_0, blocks);
        grow(&mut self.q8_1, blocks);
        grow(&mut self.scores, r.max_ctx);
        grow(&mut self.row, r.max_row);
        Ok(())
    }
    fn synchronize(&mut self) -> Result<()> {
        Ok(())
    }

    fn get_rows(&mut self, table: TensorRef<'_, Self>, ids: &[u32], out: TensorMut<'_, Self>) -> Result<()> {
        let dim = table.shape.row_len();
        let rb = table.dtype.row_bytes(dim).unwrap_or(0);
        let src = view(&table);
        let dst = f32s_mut(view_mut(out)?);
        for (t, &id) in ids.iter().enumerate() {
            let row = &src[id as usize * rb..(id as usize + 1) * rb];
            crate::quant::dequantize_row(table.dtype, row, &mut dst[t * dim..(t + 1) * dim])
                .map_err(|e| Error::invalid(alloc::format!("get_rows: {e:?}")))?;
        }
        Ok(())
    }

    fn matmul(&mut self, w: TensorRef<'_, Self>, x: TensorRef<'_, Self>, y: TensorMut<'_, Self>) -> Result<()> {
        let (n_out, n_in) = (w.shape.dims()[0], w.shape.dims()[1]);
        let n_tok = x.shape.rows();
        let wb = view(&w);
        let xs = f32s(view(&x));
        let ys = f32s_mut(view_mut(y)?);
        let nb = n_in / 32;
        let k = &self.k;
        match w.dtype {
            DType::Q4_0 | DType::Q8_0 => {
                if self.q8_0.len() < n_tok * nb {
                    return Err(Error::invalid(
                        "matmul: scratch not reserved for this batch (call reserve)",
                    ));
                }
                let xq = &mut self.q8_0[..n_tok * nb];
                for (xr, qr) in xs.chunks_exact(n_in).zip(xq.chunks_exact_mut(nb)) {
                    (k.quantize_row_q8_0)(xr, qr);
                }
                if w.dtype == DType::Q4_0 {
                    let wq: &[BlockQ4_0] = bytemuck::cast_slice(wb);
                    scalar::matmul_blocks(wq, xq, ys, n_out, n_tok, nb, k.vec_dot_q4_0_q8_0);
                } else {
                    let wq: &[BlockQ8_0] = bytemuck::cast_slice(wb);
                    scalar::matmul_blocks(wq, xq, ys, n_out, n_tok, nb, k.vec_dot_q8_0_q8_0);
                }
            }
            DType::Q4_1 => {
                if self.q8_1.len() < n_tok * nb {
                    return Err(Error::invalid(
                        "matmul: scratch not reserved for this batch (call reserve)",
                    ));
                }
                let xq = &mut self.q8_1[..n_tok * nb];
                for (xr, qr) in xs.chunks_exact(n_in).zip(xq.chunks_exact_mut(nb)) {
                    (k.quantize_row_q8_1)(xr, qr);
                }
                let wq: &[BlockQ4_1] = bytemuck::cast_slice(wb);
                scalar::matmul_blocks(wq, xq, ys, n_out, n_tok, nb, k.vec_dot_q4_1_q8_1);
            }
            DType::F32 => scalar::matmul_blocks(f32s(wb), xs, ys, n_out, n_tok, n_in, k.vec_dot_f32),
            DType::F16 => {
                let wf: &[f16] = bytemuck::cast_slice(wb);
                scalar::matmul_blocks(wf, xs, ys, n_out, n_tok, n_in, k.vec_dot_f16_f32)
            }
            DType::BF16 => {
                let wf: &[bf16] = bytemuck::cast_slice(wb);
                scalar::matmul_blocks(wf, xs, ys, n_out, n_tok, n_in, k.vec_dot_bf16_f32)
            }
            DType::Q8_1 => {
                return Err(Error::DType {
                    op: "matmul",
                    what: "weight",
                    dtype: DType::Q8_1,
                })
            }
        }
        Ok(())
    }

    fn rms_norm(
        &mut self,
        x: TensorRef<'_, Self>,
        w: TensorRef<'_, Self>,
        eps: f32,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        let n = x.shape.row_len();
        let (xs, ws) = (f32s(view(&x)), f32s(view(&w)));
        let os = f32s_mut(view_mut(out)?);
        for (xr, or) in xs.chunks_exact(n).zip(os.chunks_exact_mut(n)) {
            scalar::rms_norm(xr, ws, eps, or);
        }
        Ok(())
    }

    fn rope(
        &mut self,
        x: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        pos0: usize,
        style: RopeStyle,
    ) -> Result<()> {
        let d = x.shape.dims();
        let (n_tok, n_heads, hd) = (d[0], d[1], d[2]);
        let f = f32s(view(&inv_freq));
        let xs = f32s_mut(view_mut(x)?);
        for t in 0..n_tok {
            let pos = (pos0 + t) as f32;
            for h in 0..n_heads {
                let o = (t * n_heads + h) * hd;
                scalar::rope_head(&mut xs[o..o + hd], f, pos, style);
            }
        }
        Ok(())
    }

    fn attention(
        &mut self,
        q: TensorRef<'_, Self>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
        p: AttnParams,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        let n_tok = q.shape.dims()[0];
        let ctx = p.n_past + n_tok;
        if self.scores.len() < ctx {
            return Err(Error::invalid(
                "attention: scratch not reserved for this context (call reserve)",
            ));
        }
        let (qs, ks, vs) = (f32s(view(&q)), f32s(view(&k)), f32s(view(&v)));
        let os = f32s_mut(view_mut(out)?);
        scalar::attention(qs, ks, vs, os, &mut self.scores, p, n_tok);
        Ok(())
    }

    fn softmax(&mut self, x: TensorMut<'_, Self>) -> Result<()> {
        let n = x.shape.row_len();
        let xs = f32s_mut(view_mut(x)?);
        for r in xs.chunks_exact_mut(n) {
            scalar::softmax(r);
        }
        Ok(())
    }

    fn swiglu(&mut self, gate: TensorRef<'_, Self>, up: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()> {
        let (g, u) = (f32s(view(&gate)), f32s(view(&up)));
        scalar::swiglu(g, u, f32s_mut(view_mut(out)?));
        Ok(())
    }

    fn add(&mut self, dst: TensorMut<'_, Self>, src: TensorRef<'_, Self>) -> Result<()> {
        let s = f32s(view(&src));
        for (d, s) in f32s_mut(view_mut(dst)?).iter_mut().zip(s) {
            *d += s;
        }
        Ok(())
    }
}
