//! The `Backend` trait: the one contract between the model and the hardware.
//!
//! A backend owns nothing of the model. It hands out buffers ([`Backend::alloc`],
//! [`Backend::import_host`]) and runs ops on tensor views into them. The model code
//! (`model::llama`) is written once against this trait; the CPU backend, the OpenCL
//! backend and any later one (an NPU) plug in underneath.
//!
//! Rules every implementation follows:
//! * **Ops never allocate** (host or device). Scratch space an op needs is reserved once
//!   by [`Backend::reserve`], called by the model at setup with the largest sizes it will
//!   use.
//! * **Ops are called through [`crate::ops`]**, which checks shapes, dtypes and bounds
//!   once for every backend. The trait methods are the unchecked kernels; an
//!   implementation may `debug_assert!` what the op layer guarantees.
//! * **Ops may be asynchronous**: a GPU backend enqueues and returns. Results are
//!   visible to the host after [`Backend::download`] (which orders itself after earlier
//!   ops) or [`Backend::synchronize`].
//! * **Positions, not slots, drive RoPE**: the KV cache stores keys already rotated at
//!   their absolute position, so eviction policies can move slots without touching the
//!   ops (see `kv_cache`).

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{Shape, TensorMut, TensorRef};

/// Where a buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferKind {
    /// Device-private memory (the fastest for the device; the host reaches it only by
    /// upload/download).
    Device,
    /// A `SharedBuffer`: memory that host and device both see without copies where the
    /// hardware allows (host-visible / unified memory). On the CPU it is host memory.
    Shared,
}

/// Read-only host bytes kept alive by an owner (a memory-mapped model file, a `Vec`).
/// Weights enter a backend this way, so that a CPU (or a unified-memory GPU) can use
/// the file's pages in place instead of copying them.
#[derive(Clone)]
pub struct HostRegion {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    offset: usize,
    len: usize,
    file_mapped: bool,
}

impl HostRegion {
    /// The whole of `owner`.
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>) -> HostRegion {
        let len = (*owner).as_ref().len();
        HostRegion {
            owner,
            offset: 0,
            len,
            file_mapped: false,
        }
    }
    /// The whole of `owner`, a read-only memory mapping of a file: its pages can be
    /// dropped from the process and read again from the file (a backend that keeps a
    /// repacked copy releases them; see `cpu::repack`).
    pub fn file_mapped(owner: Arc<dyn AsRef<[u8]> + Send + Sync>) -> HostRegion {
        HostRegion {
            file_mapped: true,
            ..HostRegion::new(owner)
        }
    }
    /// True for (a slice of) a [`HostRegion::file_mapped`] region.
    pub fn is_file_mapped(&self) -> bool {
        self.file_mapped
    }
    /// A sub-range; `None` when it does not fit.
    pub fn slice(&self, offset: usize, len: usize) -> Option<HostRegion> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        Some(HostRegion {
            owner: self.owner.clone(),
            offset: self.offset + offset,
            len,
            file_mapped: self.file_mapped,
        })
    }
    pub fn bytes(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.offset..self.offset + self.len]
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl core::fmt::Debug for HostRegion {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HostRegion({} bytes at {})", self.len, self.offset)
    }
}

/// The two RoPE conventions found in the wild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeStyle {
    /// Rotate adjacent pairs `(x[2i], x[2i+1])` — ggml's `GGML_ROPE_TYPE_NORM`, what
    /// Llama GGUF files from llama.cpp's converter need (their Q/K rows are permuted).
    Adjacent,
    /// Rotate `(x[i], x[i + d/2])` — Hugging Face's `rotate_half`, what HF weights need.
    HalfSplit,
}

/// Sizes the model will use at most; lets a backend reserve op scratch once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Most tokens in one batch (prefill chunk).
    pub max_tokens: usize,
    /// Longest row an activation quantization sees (max of hidden, FFN width).
    pub max_row: usize,
    /// KV-cache capacity in positions.
    pub max_ctx: usize,
    /// Query heads.
    pub n_head: usize,
}

/// Parameters of grouped-query attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Usually `1/sqrt(head_dim)`.
    pub scale: f32,
    /// Cache slots already filled before this batch: query token `t` of the batch sits in
    /// slot `n_past + t` and attends to slots `0..=n_past + t` (causal).
    pub n_past: usize,
}

/// What a backend does natively (without falling back or converting).
#[derive(Clone, Debug, PartialEq)]
pub struct Capabilities {
    /// Weight dtypes `matmul` and `get_rows` accept.
    pub weight_dtypes: &'static [DType],
    /// KV-cache dtypes (`RunOptions::kv_type`): what `attention` reads as keys and values,
    /// and what the K/V projections (`matmul`) and `rope` write into the cache (a
    /// block-quantized type's keys are rotated in f32 and written by `store_rows`); the
    /// first is the default (`RunOptions::kv_type = None`).
    pub kv_dtypes: &'static [DType],
    /// Host and device share memory (zero-copy `Shared` buffers and imported weights).
    pub unified_memory: bool,
    /// Ops complete before returning (no queue).
    pub synchronous: bool,
}

/// A download under way ([`Backend::download_start`]); give it to
/// [`Backend::download_finish`]. `ticket` is the backend's handle for the copy in flight
/// (none: the bytes are read at the finish).
#[must_use = "a started download is finished with download_finish"]
#[derive(Debug)]
pub struct PendingRead {
    pub offset: usize,
    pub len: usize,
    pub ticket: Option<usize>,
}

impl PendingRead {
    /// `dst` must take exactly the bytes started (what every `download_finish` checks).
    pub fn check_dst(&self, dst: &[u8]) -> Result<()> {
        if dst.len() != self.len {
            return Err(Error::invalid(format!(
                "download_finish: {} bytes asked for a read of {}",
                dst.len(),
                self.len
            )));
        }
        Ok(())
    }
}

/// A read of `len` bytes at `offset` from a `have`-byte buffer must fit (the check of
/// every download, started or not).
pub fn check_read(op: &'static str, have: usize, offset: usize, len: usize) -> Result<()> {
    if offset.checked_add(len).is_none_or(|e| e > have) {
        return Err(Error::out_of_bounds(op, "src", offset, len, have));
    }
    Ok(())
}

/// Bytes a backend copied between host and device memory since it was created.
/// On backends whose device memory is host memory (the CPU) only weights copied into
/// another layout at import count (the CPU's x8 repack, as the OpenCL image planes do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopiedBytes {
    /// Host → device (uploads, weights copied at import, op inputs from the host).
    pub to_device: u64,
    /// Device → host (downloads).
    pub to_host: u64,
}

/// A compute backend. See the module docs for the rules.
pub trait Backend {
    /// A handle to backend memory.
    type Buffer;

    /// Short backend name (`cpu`, `opencl`).
    fn name(&self) -> &'static str;
    /// The instruction set / device variant that runs the kernels (`scalar`, `avx2`, …).
    fn isa(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;

    // --- memory -------------------------------------------------------------------
    /// A zero-initialised buffer of `bytes` bytes.
    fn alloc(&self, bytes: usize, kind: BufferKind) -> Result<Self::Buffer>;
    /// Makes host bytes (e.g. an mmap'd weight) visible to the device, without a copy
    /// where the device can read host memory.
    fn import_host(&self, region: HostRegion) -> Result<Self::Buffer>;
    /// Imports one model weight: [`Backend::import_host`] of its bytes, plus whatever the
    /// backend keeps beside them once it knows the tensor's dtype and shape (the OpenCL
    /// backend's repacked Q4_0 image planes, when its image path is on). Loaders call it
    /// once per weight tensor, with the region holding exactly that tensor; ops then find
    /// the extra layout through the buffer, so nothing is looked up or built per op.
    /// The default is `import_host`.
    fn import_weight(&self, region: HostRegion, dtype: DType, shape: Shape) -> Result<Self::Buffer> {
        let _ = (dtype, shape);
        self.import_host(region)
    }
    /// Called by the loaders once every weight of a model is imported. The CPU backend
    /// releases once more the file pages of the weights it copied (a neighbouring
    /// tensor's read can map a large page-cache folio back in after a tensor's pages
    /// were released); the default does nothing.
    fn finish_import(&self) {}
    fn buffer_len(&self, buf: &Self::Buffer) -> usize;
    /// The bytes of a buffer this backend keeps in plain host memory that the host may
    /// read now (the CPU's buffers: its ops are done when they return), so another
    /// backend can copy straight out of it (the hybrid's hand-over: one copy, no
    /// staging). `None` (the default) where the host reaches the buffer only by
    /// `download`.
    fn host_bytes<'a>(&self, buf: &'a Self::Buffer) -> Option<&'a [u8]> {
        let _ = buf;
        None
    }
    /// [`Backend::host_bytes`], writable: another backend can copy straight into it.
    /// `None` for read-only (imported) memory and where the host reaches the buffer
    /// only by `upload`.
    fn host_bytes_mut<'a>(&self, buf: &'a mut Self::Buffer) -> Option<&'a mut [u8]> {
        let _ = buf;
        None
    }
    /// A buffer of this backend over `len` bytes of host memory at `host` that someone
    /// else owns, read and written in place (zero-copy: the hybrid's device cache over
    /// the CPU cache's memory). `Ok(Err(why))` where this backend cannot share that
    /// memory without copies behind the caller's back (the default; a discrete device;
    /// an address the device cannot wrap), so the caller keeps its copy path. The buffer
    /// starts in device hands: [`Backend::host_access`] gives the host its turn.
    ///
    /// # Safety
    ///
    /// `host..host + len` must be one live, writable allocation that neither moves nor
    /// is freed until the returned buffer has been dropped, and the host must read or
    /// write it only while the buffer is in host hands (`host_access(.., true)`).
    unsafe fn share_host_mut(&self, host: *mut u8, len: usize) -> Result<core::result::Result<Self::Buffer, String>> {
        let _ = (host, len);
        Ok(Err(String::from("this backend does not wrap host memory")))
    }
    /// Hands a buffer made by [`Backend::share_host_mut`] to the host (`true`: mapped;
    /// blocking, so the device's queued work on it is done) or to the device (`false`:
    /// unmapped, the device's next ops see what the host wrote). Nothing for any other
    /// buffer (the default).
    fn host_access(&self, buf: &mut Self::Buffer, host: bool) -> Result<()> {
        let _ = (buf, host);
        Ok(())
    }
    fn upload(&self, dst: &mut Self::Buffer, offset: usize, src: &[u8]) -> Result<()>;
    fn download(&self, src: &Self::Buffer, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Starts copying `len` bytes of `src` at `offset` to the host, behind the ops
    /// enqueued so far, and returns without waiting; [`Backend::download_finish`] waits
    /// and hands the bytes over. Ops enqueued in between run meanwhile: a decode loop
    /// queues the next step before it looks at this one's token, so a GPU never waits
    /// for the host. Until the finish, enqueue nothing that writes the range (a backend
    /// may read it only then). The default reads at the finish — right for a backend
    /// whose ops are done when they return.
    fn download_start(&mut self, src: &Self::Buffer, offset: usize, len: usize) -> Result<PendingRead> {
        check_read("download_start", self.buffer_len(src), offset, len)?;
        Ok(PendingRead {
            offset,
            len,
            ticket: None,
        })
    }
    /// Waits for a [`Backend::download_start`] and copies its bytes into `dst` (exactly
    /// `len` bytes); reports what went wrong on the device since (as `download` does).
    fn download_finish(&mut self, src: &Self::Buffer, p: PendingRead, dst: &mut [u8]) -> Result<()> {
        p.check_dst(dst)?;
        self.download(src, p.offset, dst)
    }
    /// Reserves op scratch for the given sizes. Ops after this allocate nothing.
    fn reserve(&mut self, r: Reservation) -> Result<()>;
    /// Waits until every enqueued op has finished.
    fn synchronize(&mut self) -> Result<()>;
    /// Host↔device copies made so far (see [`CopiedBytes`]).
    fn copied_bytes(&self) -> CopiedBytes {
        CopiedBytes::default()
    }

    // --- ops (unchecked; call them through `crate::ops`) ------------------------------
    /// `out[t, :] = dequant(table[ids[t], :])`.
    fn get_rows(&mut self, table: TensorRef<'_, Self>, ids: &[u32], out: TensorMut<'_, Self>) -> Result<()>;
    /// `get_rows` with the row indices on the device, one per output row, as f32 — what
    /// [`Backend::argmax`] writes — so a greedy step feeds the next one without the host.
    /// An index that is no row of the table (negative, too large, NaN) never reads out of
    /// bounds: the default (which reads the indices back) returns an error; a device
    /// backend may clamp it instead, the host learning of it from the same index when it
    /// reads it back. The default allocates nothing.
    fn get_rows_at(
        &mut self,
        table: TensorRef<'_, Self>,
        idx: TensorRef<'_, Self>,
        mut out: TensorMut<'_, Self>,
    ) -> Result<()> {
        let (n_rows, dim) = (table.shape.rows(), table.shape.row_len());
        let n = idx.shape.numel();
        let mut f = [0f32; 16];
        let mut ids = [0u32; 16];
        for start in (0..n).step_by(16) {
            let k = (n - start).min(16);
            self.download(idx.buf, idx.offset + start * 4, bytemuck::cast_slice_mut(&mut f[..k]))?;
            for (id, &v) in ids.iter_mut().zip(&f[..k]) {
                if !(v >= 0.0 && (v as usize) < n_rows) {
                    return Err(Error::invalid(format!(
                        "get_rows_at: row index {v} is not a row of the table ({n_rows} rows)"
                    )));
                }
                *id = v as u32;
            }
            self.get_rows(table, &ids[..k], out.rows_mut(start, k, dim))?;
        }
        Ok(())
    }
    /// `y[t, o] = Σ_i w[o, i] · x[t, i]`; `w` is [n_out, n_in] of any weight dtype,
    /// `x` [n_tok, n_in] f32, `y` [n_tok, n_out] f32. One token (decode) or many (prefill).
    fn matmul(&mut self, w: TensorRef<'_, Self>, x: TensorRef<'_, Self>, y: TensorMut<'_, Self>) -> Result<()>;
    /// `out[t, :] = x[t, :] / sqrt(mean(x[t, :]²) + eps) · w`.
    fn rms_norm(
        &mut self,
        x: TensorRef<'_, Self>,
        w: TensorRef<'_, Self>,
        eps: f32,
        out: TensorMut<'_, Self>,
    ) -> Result<()>;
    /// Rotates `x` ([n_tok, n_heads, head_dim] f32) in place; token `t` is at position
    /// `pos0 + t`, pair `i` turns by `pos · inv_freq[i]` (`inv_freq` f32 [head_dim/2]).
    fn rope(
        &mut self,
        x: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        pos0: usize,
        style: RopeStyle,
    ) -> Result<()>;
    /// Causal grouped-query attention of `q` ([n_tok, n_head, hd]) against the cache
    /// (`k`, `v`: [capacity, n_kv_head, hd] of a `kv_dtypes` type, slots `0..n_past + n_tok` valid); query
    /// head `h` reads KV head `h / (n_head / n_kv_head)`. Writes `out` [n_tok, n_head, hd].
    fn attention(
        &mut self,
        q: TensorRef<'_, Self>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
        p: AttnParams,
        out: TensorMut<'_, Self>,
    ) -> Result<()>;
    /// Copies the f32 rows of `src` into `dst` (same shape), converted to `dst`'s dtype,
    /// one of [`Capabilities::kv_dtypes`]: f32 copied, f16 rounded to nearest, Q8_0
    /// quantized as ggml's `quantize_row_q8_0`. The forward pass stores RoPE-rotated
    /// keys into a quantized cache with it (rotated in f32, quantized once).
    fn store_rows(&mut self, src: TensorRef<'_, Self>, dst: TensorMut<'_, Self>) -> Result<()>;
    /// Row-wise softmax in place.
    fn softmax(&mut self, x: TensorMut<'_, Self>) -> Result<()>;
    /// `out = silu(gate) · up`.
    fn swiglu(&mut self, gate: TensorRef<'_, Self>, up: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()>;
    /// Row-wise argmax: `out[r]` is the index of the largest value in row `r` of `x`
    /// (`[rows, n]` f32; NaN never wins, ties go to the lowest index), stored as an f32
    /// (exact: the op layer allows n < 2^24), or -1 when no value exceeds -inf. Greedy
    /// decoding reads back these 4 bytes instead of a row of logits.
    fn argmax(&mut self, x: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()>;
    /// `dst += src` (the residual add).
    fn add(&mut self, dst: TensorMut<'_, Self>, src: TensorRef<'_, Self>) -> Result<()>;

    // --- KV-cache maintenance (eviction policies, `kv_cache`) --------------------------
    /// [`Backend::attention`], and also `mass[s] += Σ_t Σ_h w(t, h, s)` for every slot
    /// `s` a query saw, where `w(t, h, ·)` is query head `h` of token `t`'s softmax over
    /// the slots (`mass`: f32 `[capacity]`, accumulated, never cleared here): the
    /// per-slot attention the score-based policies (H2O, TOVA) rank slots by.
    fn attention_mass(
        &mut self,
        q: TensorRef<'_, Self>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
        p: AttnParams,
        out: TensorMut<'_, Self>,
        mass: TensorMut<'_, Self>,
    ) -> Result<()>;
    /// Compaction: moves rows `src..src + n` of `x` (`[rows, row_len]`, f32 or a cache
    /// dtype) to rows `dst..dst + n`, `dst <= src`; the ranges may overlap (memmove).
    /// Rows outside `dst..dst + n` keep their bytes.
    fn move_rows(&mut self, x: TensorMut<'_, Self>, src: usize, dst: usize, n: usize) -> Result<()>;
    /// Re-rotation: turns every head of `x` (`[n_rows, n_heads, head_dim]`, f32 or a
    /// cache dtype: each row decoded, rotated in f32, encoded again) by `delta`
    /// positions, so a key stored with RoPE at position `p` ends as if rotated at
    /// `p + delta` (rotations compose: R(p + d) = R(d)·R(p)).
    fn rope_shift(
        &mut self,
        x: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        delta: i32,
        style: RopeStyle,
    ) -> Result<()>;

    // --- fused ops (defaults compose the ops above; a GPU backend overrides them to
    // save kernel launches). Same results as the composition, up to f32 rounding. ------
    /// `y += x · wᵀ` — a projection with the residual add folded in. `tmp` is scratch of
    /// `y`'s shape for backends that compose the op (a fused one leaves it untouched).
    fn matmul_add(
        &mut self,
        w: TensorRef<'_, Self>,
        x: TensorRef<'_, Self>,
        mut tmp: TensorMut<'_, Self>,
        y: TensorMut<'_, Self>,
    ) -> Result<()> {
        self.matmul(w, x, tmp.reborrow())?;
        self.add(y, tmp.as_ref())
    }
    /// RoPE on the queries `q` and the new keys `k` (both [n_tok, heads, head_dim]).
    fn rope_qk(
        &mut self,
        q: TensorMut<'_, Self>,
        k: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        pos0: usize,
        style: RopeStyle,
    ) -> Result<()> {
        self.rope(q, inv_freq, pos0, style)?;
        self.rope(k, inv_freq, pos0, style)
    }
    /// The attention input side: `xn = rms_norm(x) · norm_w`, then `ys[i] = xn · ws[i]ᵀ`
    /// (Q, K, V). `xn` is scratch for backends that compose the op (a fused one may
    /// leave it untouched).
    fn rms_norm_matmul3(
        &mut self,
        x: TensorRef<'_, Self>,
        norm_w: TensorRef<'_, Self>,
        eps: f32,
        xn: TensorMut<'_, Self>,
        ws: [TensorRef<'_, Self>; 3],
        ys: [TensorMut<'_, Self>; 3],
    ) -> Result<()> {
        rms_norm_matmul3_composed(self, x, norm_w, eps, xn, ws, ys)
    }
    /// The feed-forward input side: `xn = rms_norm(x) · norm_w`, then
    /// `out = silu(xn · w_gateᵀ) · (xn · w_upᵀ)`. `xn`, `gate` and `up` are scratch for
    /// backends that compose the op (a fused one may leave them untouched).
    #[allow(clippy::too_many_arguments)]
    fn rms_norm_matmul_swiglu(
        &mut self,
        x: TensorRef<'_, Self>,
        norm_w: TensorRef<'_, Self>,
        eps: f32,
        xn: TensorMut<'_, Self>,
        w_gate: TensorRef<'_, Self>,
        w_up: TensorRef<'_, Self>,
        gate: TensorMut<'_, Self>,
        up: TensorMut<'_, Self>,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        rms_norm_matmul_swiglu_composed(self, x, norm_w, eps, xn, w_gate, w_up, gate, up, out)
    }
    /// The model head: `y = (rms_norm(x) · norm_w) · wᵀ`. `xn` is scratch for backends
    /// that compose the op.
    fn rms_norm_matmul(
        &mut self,
        x: TensorRef<'_, Self>,
        norm_w: TensorRef<'_, Self>,
        eps: f32,
        xn: TensorMut<'_, Self>,
        w: TensorRef<'_, Self>,
        y: TensorMut<'_, Self>,
    ) -> Result<()> {
        rms_norm_matmul_composed(self, x, norm_w, eps, xn, w, y)
    }
    /// One whole pre-norm Llama block on the residual stream `x` ([n_tok, dim] f32, updated
    /// in place): `x += Wo · attention(rope(Wq·xn), rope(Wk·xn) → cache, Wv·xn → cache)`
    /// with `xn = rms_norm(x) · attn_norm`, then `x += Wdown · (silu(Wgate·xn) · (Wup·xn))`
    /// with `xn = rms_norm(x) · ffn_norm`. The default is the model's canonical
    /// composition of the ops above ([`crate::model::llama::llama_block`]); a GPU backend
    /// may run it as one launch.
    fn llama_block(
        &mut self,
        x: TensorMut<'_, Self>,
        w: BlockWeights<'_, Self>,
        kv: BlockKv<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        p: BlockParams,
        s: BlockScratch<'_, Self>,
    ) -> Result<()> {
        crate::model::llama::llama_block(self, x, w, kv, inv_freq, p, s, &mut |_, _, _| {}, None)
    }
    /// Layers `0..n_layer` in order, each a [`Backend::llama_block`] on `x`; `layer`
    /// lends each layer's views. The default calls `llama_block` per layer; a GPU
    /// backend may run several layers per launch.
    #[allow(clippy::too_many_arguments)]
    fn llama_blocks(
        &mut self,
        x: TensorMut<'_, Self>,
        n_layer: usize,
        layer: &mut LayerVisitor<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        p: BlockParams,
        s: BlockScratch<'_, Self>,
    ) -> Result<()> {
        llama_blocks_each(self, x, n_layer, layer, inv_freq, p, s)
    }
}

/// [`Backend::rms_norm_matmul`] as `rms_norm` and `matmul` (the default; also the
/// fallback of backends that fuse only some cases).
pub fn rms_norm_matmul_composed<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorRef<'_, B>,
    norm_w: TensorRef<'_, B>,
    eps: f32,
    mut xn: TensorMut<'_, B>,
    w: TensorRef<'_, B>,
    y: TensorMut<'_, B>,
) -> Result<()> {
    b.rms_norm(x, norm_w, eps, xn.reborrow())?;
    b.matmul(w, xn.as_ref(), y)
}

/// [`Backend::rms_norm_matmul3`] as `rms_norm` and three `matmul`s (the default; also
/// the fallback of backends that fuse only some cases).
pub fn rms_norm_matmul3_composed<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorRef<'_, B>,
    norm_w: TensorRef<'_, B>,
    eps: f32,
    mut xn: TensorMut<'_, B>,
    ws: [TensorRef<'_, B>; 3],
    ys: [TensorMut<'_, B>; 3],
) -> Result<()> {
    b.rms_norm(x, norm_w, eps, xn.reborrow())?;
    for (w, y) in ws.into_iter().zip(ys) {
        b.matmul(w, xn.as_ref(), y)?;
    }
    Ok(())
}

/// [`Backend::rms_norm_matmul_swiglu`] as `rms_norm`, two `matmul`s and a `swiglu`.
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_matmul_swiglu_composed<B: Backend + ?Sized>(
    b: &mut B,
    x: TensorRef<'_, B>,
    norm_w: TensorRef<'_, B>,
    eps: f32,
    mut xn: TensorMut<'_, B>,
    w_gate: TensorRef<'_, B>,
    w_up: TensorRef<'_, B>,
    mut gate: TensorMut<'_, B>,
    mut up: TensorMut<'_, B>,
    out: TensorMut<'_, B>,
) -> Result<()> {
    b.rms_norm(x, norm_w, eps, xn.reborrow())?;
    b.matmul(w_gate, xn.as_ref(), gate.reborrow())?;
    b.matmul(w_up, xn.as_ref(), up.reborrow())?;
    b.swiglu(gate.as_ref(), up.as_ref(), out)
}

// --- the whole block ---------------------------------------------------------------

/// Views of one pre-norm Llama block's weights (`[rows, cols]`, any weight dtype; the
/// norms f32 `[dim]`).
pub struct BlockWeights<'a, B: Backend + ?Sized> {
    pub attn_norm: TensorRef<'a, B>,
    pub wq: TensorRef<'a, B>,
    pub wk: TensorRef<'a, B>,
    pub wv: TensorRef<'a, B>,
    pub wo: TensorRef<'a, B>,
    pub ffn_norm: TensorRef<'a, B>,
    pub w_gate: TensorRef<'a, B>,
    pub w_up: TensorRef<'a, B>,
    pub w_down: TensorRef<'a, B>,
}

/// The block's layer of the KV cache: whole-cache views `[capacity, n_kv_head, head_dim]`
/// f32. The batch's keys and values go to slots `attn.n_past ..` of [`BlockParams`].
pub struct BlockKv<'a, B: Backend + ?Sized> {
    pub k: TensorMut<'a, B>,
    pub v: TensorMut<'a, B>,
}

/// Activation scratch of a block (the model's workspace), f32, for `n` tokens: `xn`
/// and `tmp` `[n, dim]`, `q` and `att` `[n, n_head * head_dim]`, `gate`, `up`, `act`
/// `[n, ffn]`. A composing backend uses all of it; a fused one what it needs.
pub struct BlockScratch<'a, B: Backend + ?Sized> {
    pub xn: TensorMut<'a, B>,
    pub tmp: TensorMut<'a, B>,
    pub q: TensorMut<'a, B>,
    pub att: TensorMut<'a, B>,
    pub gate: TensorMut<'a, B>,
    pub up: TensorMut<'a, B>,
    pub act: TensorMut<'a, B>,
}

impl<B: Backend + ?Sized> BlockScratch<'_, B> {
    /// Reborrows every view (to pass the scratch on without giving it away).
    pub fn reborrow(&mut self) -> BlockScratch<'_, B> {
        BlockScratch {
            xn: self.xn.reborrow(),
            tmp: self.tmp.reborrow(),
            q: self.q.reborrow(),
            att: self.att.reborrow(),
            gate: self.gate.reborrow(),
            up: self.up.reborrow(),
            act: self.act.reborrow(),
        }
    }
}

/// What [`Backend::llama_blocks`] is given per layer: `layer(l, f)` calls `f` once with
/// layer `l`'s weights and KV-cache views (a visitor, so the model lends one layer's
/// views at a time and nothing is allocated per token).
pub type LayerVisitor<'v, B> = dyn FnMut(usize, &mut LayerFn<'_, B>) -> Result<()> + 'v;

/// What a [`LayerVisitor`] calls with one layer's views.
pub type LayerFn<'f, B> = dyn FnMut(BlockWeights<'_, B>, BlockKv<'_, B>) -> Result<()> + 'f;

/// Scalars of a block: RMS-norm epsilon, attention shape and cache fill (`attn.n_past`
/// = first new slot), the position of the first new token and the RoPE convention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockParams {
    pub eps: f32,
    pub attn: AttnParams,
    pub pos0: usize,
    pub style: RopeStyle,
}

/// [`Backend::llama_blocks`] as one [`Backend::llama_block`] per layer (the default).
pub fn llama_blocks_each<B: Backend + ?Sized>(
    b: &mut B,
    mut x: TensorMut<'_, B>,
    n_layer: usize,
    layer: &mut LayerVisitor<'_, B>,
    inv_freq: TensorRef<'_, B>,
    p: BlockParams,
    mut s: BlockScratch<'_, B>,
) -> Result<()> {
    for l in 0..n_layer {
        layer(l, &mut |w, kv| {
            b.llama_block(x.reborrow(), w, kv, inv_freq, p, s.reborrow())
        })?;
    }
    Ok(())
}
