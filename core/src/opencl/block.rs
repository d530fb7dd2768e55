//! The decode fast path: whole Llama blocks, up to `LPL` (4 on NVIDIA) per launch
//! (`llama_blocks_f32` in `kernels/cl/block.cl`), and the fused head (`llama_head_f32`).
//!
//! Why: on NVIDIA's OpenCL a launch costs ~6 µs of device time however little it does,
//! so the six fused kernels of a block (183 launches a token for SmolLM2) held decode
//! near 450 tok/s. The block kernel is a *persistent* grid — one work-group per compute
//! unit, all resident at once — whose stages meet at a software grid barrier (a counter
//! in device memory), so a token is `get_rows` + 8 launches + the head.
//!
//! OpenCL 1.2 promises nothing about work-groups running concurrently, so the path is
//! guarded three ways: it is on by default only on NVIDIA GPUs (a grid no larger than
//! the compute-unit count is resident; the fences are verified there), a barrier gives
//! up after a bounded spin and raises an abort flag that every work-group obeys (no
//! hang), and the host reads that flag with each download: an aborted step is an error
//! naming the switch (`ANTIGRAVITY_OPENCL_BLOCK=0`), and the path turns itself off.
//! Design and measurements: `docs/opencl.md`, "Decode: four layers per launch".

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::ptr;
use core::sync::atomic::Ordering;

use opencl3::kernel::Kernel;
use opencl3::memory::{Buffer, ClMem, CL_MEM_READ_WRITE};
use opencl3::types::{CL_BLOCKING, CL_NON_BLOCKING};

use super::{cl_err, create_buffer, el, writable, OpenClBackend, K_BLOCK, K_HEAD, MAX_HD};
use crate::backend::{BlockKv, BlockParams, BlockScratch, BlockWeights, LayerVisitor, RopeStyle};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{TensorMut, TensorRef};

/// Arguments of `llama_blocks_f32` before the first layer's, and per layer.
const SHARED_ARGS: u32 = 25;
const LAYER_ARGS: u32 = 29;
/// Indices of the per-token arguments: the barrier base, then slot and position.
const DYN_BASE: u32 = 10;
const DYN_SLOT: u32 = 19;

/// FNV-1a over the words of a launch's arguments, except the per-token ones.
struct Fingerprint(u64);

impl Fingerprint {
    fn new() -> Fingerprint {
        Fingerprint(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(0x0000_0100_0000_01b3);
    }
    fn view(&mut self, mem: usize, offset: usize, dtype: DType) {
        self.add(mem as u64);
        self.add(offset as u64);
        self.add(dtype as u64);
    }
    fn shared(
        &mut self,
        x: &TensorMut<'_, OpenClBackend>,
        inv_freq: &TensorRef<'_, OpenClBackend>,
        p: &BlockParams,
        s: &BlockScratch<'_, OpenClBackend>,
        ffn: usize,
        n_layers: usize,
    ) {
        self.view(x.buf.mem() as usize, x.offset, x.dtype);
        self.add(x.shape.row_len() as u64);
        self.view(inv_freq.buf.mem() as usize, inv_freq.offset, inv_freq.dtype);
        self.view(s.q.buf.mem() as usize, s.q.offset, s.q.dtype);
        self.view(s.act.buf.mem() as usize, s.act.offset, s.act.dtype);
        let a = p.attn;
        for v in [a.n_head, a.n_kv_head, a.head_dim, ffn, n_layers, p.style as usize] {
            self.add(v as u64);
        }
        self.add(p.eps.to_bits() as u64);
        self.add(a.scale.to_bits() as u64);
    }
    fn layer(&mut self, w: &BlockWeights<'_, OpenClBackend>, kv: &BlockKv<'_, OpenClBackend>) {
        for t in [
            w.attn_norm,
            w.wq,
            w.wk,
            w.wv,
            w.wo,
            w.ffn_norm,
            w.w_gate,
            w.w_up,
            w.w_down,
        ] {
            self.view(t.buf.mem() as usize, t.offset, t.dtype);
        }
        self.view(kv.k.buf.mem() as usize, kv.k.offset, kv.k.dtype);
        self.view(kv.v.buf.mem() as usize, kv.v.offset, kv.v.dtype);
    }
}

/// Rows of the output matrix per work-group of the head kernel.
pub(super) const HEAD_ROWS_PER_WG: usize = 64;
/// Attention chunk of the block kernel, in cache slots (block.cl `CH`; tuning override
/// `ANTIGRAVITY_OPENCL_BLOCK_CH`): a (query head,
/// chunk) pair is one unit of work, so shorter chunks spread a short context over more
/// work-groups.
pub(super) const BLOCK_CH: usize = 32;
/// Stage timers of the block kernel (profiling, NVIDIA): A, wait, B, wait, C, wait, D,
/// wait, E, the wait between two layers of a launch; then (slot 10) the layer count.
pub(super) const BLOCK_STAGES: [&str; 10] = [
    "A norm+qkv+rope",
    "  barrier 1",
    "B attention",
    "  barrier 2",
    "C merge+o-proj",
    "  barrier 3",
    "D norm+gate/up",
    "  barrier 4",
    "E down-proj",
    "  barrier 5 (layers)",
];
/// Bytes of the timer buffer: 10 stage sums and the layer count, u64 each.
const PROF_BYTES: usize = 88;

/// The dtype code the kernels switch on (block.cl `T_*`).
fn code(t: DType) -> Option<u32> {
    Some(match t {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::Q4_0 => 3,
        DType::Q4_1 => 4,
        DType::Q8_0 => 5,
        DType::Q8_1 => return None,
    })
}

/// State of the persistent block path.
pub(super) struct Persistent {
    /// Work-groups per launch (at most one per compute unit).
    pub groups: usize,
    /// Spins of a grid barrier before it gives up.
    pub spin_limit: u32,
    /// `[counter, abort]` (u32 each).
    pub sync: RefCell<Buffer<u8>>,
    /// The counter's value when the next launch starts (wrapping).
    pub base: Cell<u32>,
    /// A launch ran since the abort flag was last read.
    pub unchecked: Cell<bool>,
    /// Host landing area of the flag read (read non-blocking before a blocking download).
    pub status: RefCell<Vec<u8>>,
    /// Attention partials: (m, l, o[hd]) per (head, chunk), `part_cap` f32s.
    pub part: Buffer<u8>,
    pub part_cap: usize,
    /// Turned off after an abort.
    pub disabled: Cell<bool>,
    /// Stage timers: 10 u64 ns sums and a layer count (see block.cl `MARK`).
    pub prof: RefCell<Buffer<u8>>,
    /// One kernel object per layer group of `llama_blocks`, with a fingerprint of the
    /// arguments last set on it: from one token to the next only the barrier base, the
    /// cache slot and the position change, so ~140 clSetKernelArg calls a launch
    /// become 3.
    pub groups_k: RefCell<Vec<(Kernel, u64)>>,
}

impl Persistent {
    pub fn new(context: &opencl3::context::Context, groups: usize, is_cpu: bool) -> Result<Persistent> {
        let sync = create_buffer(context, CL_MEM_READ_WRITE, 8, ptr::null_mut())?;
        let part = create_buffer(context, CL_MEM_READ_WRITE, 4, ptr::null_mut())?;
        let prof = create_buffer(context, CL_MEM_READ_WRITE, PROF_BYTES, ptr::null_mut())?;
        Ok(Persistent {
            prof: RefCell::new(prof),
            groups_k: RefCell::new(Vec::new()),
            groups,
            // A GPU barrier spin is an L2 round trip (~0.3 µs): 2^24 is seconds. A CPU
            // device's is a cached load, and its work-groups are threads the OS may
            // preempt: give it 2^31 (about a second).
            spin_limit: if is_cpu { 1 << 31 } else { 1 << 24 },
            sync: RefCell::new(sync),
            base: Cell::new(0),
            unchecked: Cell::new(false),
            status: RefCell::new(vec![0; 4]),
            part,
            part_cap: 0,
            disabled: Cell::new(false),
        })
    }
}

impl OpenClBackend {
    /// Zeroes the barrier counter and flag (at creation and after an abort).
    pub(super) fn block_reset(&self) -> Result<()> {
        let Some(p) = &self.block else { return Ok(()) };
        let mut sync = p.sync.borrow_mut();
        // SAFETY: the pattern is copied at enqueue; 8 bytes is the buffer's size.
        unsafe { self.queue.enqueue_fill_buffer(&mut sync, &[0u8], 0, 8, &[]) }
            .map_err(cl_err("clEnqueueFillBuffer"))?;
        drop(sync);
        let mut prof = p.prof.borrow_mut();
        // SAFETY: as above; PROF_BYTES is the timer buffer's size.
        unsafe { self.queue.enqueue_fill_buffer(&mut prof, &[0u8], 0, PROF_BYTES, &[]) }
            .map_err(cl_err("clFillBuffer"))?;
        p.base.set(0);
        Ok(())
    }

    /// Sizes the attention partials for `max_ctx` positions and `n_head` heads.
    pub(super) fn block_reserve(&mut self, max_ctx: usize, n_head: usize) -> Result<()> {
        let Some(p) = self.block.as_mut() else { return Ok(()) };
        let need = n_head * max_ctx.div_ceil(self.blk_ch) * (MAX_HD + 2);
        if need > p.part_cap {
            p.part = create_buffer(&self.context, CL_MEM_READ_WRITE, need * 4, ptr::null_mut())?;
            p.part_cap = need;
        }
        Ok(())
    }

    /// Enqueues the abort-flag read when a block launch ran since the last check. Call
    /// right before a blocking read; [`OpenClBackend::block_verdict`] after it.
    pub(super) fn block_check_enqueue(&self) -> Result<bool> {
        let Some(p) = &self.block else { return Ok(false) };
        if !p.unchecked.get() {
            return Ok(false);
        }
        let mut st = p.status.borrow_mut();
        // SAFETY: non-blocking read of 4 bytes (the flag, at offset 4) into `status`,
        // which lives in `self` and is not touched until `block_verdict`, which runs after
        // the caller's blocking read — on the in-order queue that read completes after
        // this one.
        unsafe {
            self.queue
                .enqueue_read_buffer(&p.sync.borrow(), CL_NON_BLOCKING, 4, &mut st[..], &[])
        }
        .map_err(cl_err("clEnqueueReadBuffer (block status)"))?;
        self.counters.download.fetch_add(4, Ordering::Relaxed);
        Ok(true)
    }

    /// After the blocking read that followed [`OpenClBackend::block_check_enqueue`]:
    /// an error when a block launch aborted.
    pub(super) fn block_verdict(&self) -> Result<()> {
        let Some(p) = &self.block else { return Ok(()) };
        p.unchecked.set(false);
        let status = {
            let mut st = p.status.borrow_mut();
            let v = [st[0], st[1], st[2], st[3]];
            st.fill(0);
            v
        };
        self.block_status_verdict(status)
    }

    /// An error when the block status flag read back (`status`) says a launch aborted;
    /// the path is then off.
    pub(super) fn block_status_verdict(&self, status: [u8; 4]) -> Result<()> {
        let Some(p) = &self.block else { return Ok(()) };
        if status.iter().all(|&b| b == 0) {
            return Ok(());
        }
        p.disabled.set(true);
        self.block_reset()?;
        Err(Error::Backend {
            backend: "opencl",
            msg: format!(
                "{}: the persistent block kernel gave up at a grid barrier ({} work-groups did not all \
                 run at once); its results are invalid and the path is now off — rerun, or set \
                 ANTIGRAVITY_OPENCL_BLOCK=0 to use per-op kernels from the start",
                self.info.name, p.groups
            ),
        })
    }

    /// Waits for the queue, then reports an aborted block launch (synchronize's check).
    pub(super) fn block_check_blocking(&self) -> Result<()> {
        let Some(p) = &self.block else { return Ok(()) };
        if !p.unchecked.get() {
            return Ok(());
        }
        {
            let mut st = p.status.borrow_mut();
            // SAFETY: blocking read of the 4-byte flag into `status`.
            unsafe {
                self.queue
                    .enqueue_read_buffer(&p.sync.borrow(), CL_BLOCKING, 4, &mut st[..], &[])
            }
            .map_err(cl_err("clEnqueueReadBuffer (block status)"))?;
        }
        self.counters.download.fetch_add(4, Ordering::Relaxed);
        self.block_verdict()
    }

    /// Whether the shared shapes suit the block kernel (one token, sizes it stages,
    /// head size its attention handles, partials reserved for this context).
    fn block_shapes_fit(&self, x: &TensorMut<'_, Self>, p: &BlockParams, ffn: usize) -> bool {
        let Some(st) = &self.block else { return false };
        let a = p.attn;
        let (dim, qd, hd) = (x.shape.row_len(), a.n_head * a.head_dim, a.head_dim);
        !st.disabled.get()
            && x.shape.rows() == 1
            && [dim, qd, ffn].iter().all(|n| n % 32 == 0 && *n <= self.max_vec)
            && hd <= MAX_HD
            && hd.is_multiple_of(4)
            && hd >= 8 // (stage B indexes VPRE · LWS / hd < LWS slots)
            && self.blk_lws.is_multiple_of(hd)
            && a.n_head * (a.n_past + 1).div_ceil(self.blk_ch) * (hd + 2) <= st.part_cap
    }

    /// Whether one layer's weights suit the kernel (dtypes it decodes, same FFN width).
    fn block_layer_fits(w: &BlockWeights<'_, Self>, ffn: usize) -> bool {
        [w.wq, w.wk, w.wv, w.wo, w.w_gate, w.w_up, w.w_down]
            .iter()
            .all(|m| code(m.dtype).is_some())
            && w.w_gate.shape.dims()[0] == ffn
    }

    /// Sets the arguments every layer of a launch shares.
    #[allow(clippy::too_many_arguments)]
    fn block_shared_args(
        &self,
        k: &Kernel,
        x: &TensorMut<'_, Self>,
        inv_freq: &TensorRef<'_, Self>,
        p: &BlockParams,
        s: &BlockScratch<'_, Self>,
        ffn: usize,
        n_layers: usize,
    ) -> Result<()> {
        let st = self.block.as_ref().expect("caller checked");
        let a = p.attn;
        let xm = writable(x.buf, "opencl block x")?;
        let qm = writable(s.q.buf, "opencl block q")?;
        let hm = writable(s.act.buf, "opencl block hb")?;
        let style: u32 = match p.style {
            RopeStyle::Adjacent => 0,
            RopeStyle::HalfSplit => 1,
        };
        let (sync, part, prof) = (st.sync.borrow().get(), st.part.get(), st.prof.borrow().get());
        let n = args!(k;
            xm, el(x.offset), inv_freq.buf.mem(), el(inv_freq.offset),
            qm, el(s.q.offset), hm, el(s.act.offset), part,
            sync, st.base.get(), st.spin_limit, prof, self.profiling as u32,
            x.shape.row_len() as u32, a.n_head as u32, a.n_kv_head as u32, a.head_dim as u32, ffn as u32,
            a.n_past as u32, p.pos0 as u32, style, p.eps, a.scale, n_layers as u32);
        debug_assert_eq!(n, SHARED_ARGS);
        let vec_bytes = x.shape.row_len().max(a.n_head * a.head_dim).max(ffn) * 4;
        set_local(k, SHARED_ARGS + LAYER_ARGS * self.blk_lpl as u32, vec_bytes)
    }

    /// Sets parameter set `j` of the kernel to layer `w`, `kv`.
    fn block_layer_args(&self, k: &Kernel, j: usize, w: &BlockWeights<'_, Self>, kv: &BlockKv<'_, Self>) -> Result<()> {
        let c = |t: &TensorRef<'_, Self>| code(t.dtype).expect("checked by block_layer_fits");
        let km = writable(kv.k.buf, "opencl block k cache")?;
        let vm = writable(kv.v.buf, "opencl block v cache")?;
        let n = args!(k, SHARED_ARGS + LAYER_ARGS * j as u32;
            w.attn_norm.buf.mem(), el(w.attn_norm.offset),
            w.wq.buf.mem(), w.wq.offset as u64, c(&w.wq),
            w.wk.buf.mem(), w.wk.offset as u64, c(&w.wk),
            w.wv.buf.mem(), w.wv.offset as u64, c(&w.wv),
            w.wo.buf.mem(), w.wo.offset as u64, c(&w.wo),
            w.ffn_norm.buf.mem(), el(w.ffn_norm.offset),
            w.w_gate.buf.mem(), w.w_gate.offset as u64, c(&w.w_gate),
            w.w_up.buf.mem(), w.w_up.offset as u64, c(&w.w_up),
            w.w_down.buf.mem(), w.w_down.offset as u64, c(&w.w_down),
            km, el(kv.k.offset), vm, el(kv.v.offset));
        debug_assert_eq!(n, SHARED_ARGS + LAYER_ARGS * (j as u32 + 1));
        Ok(())
    }

    /// Enqueues the kernel (arguments set) for `n_layers` layers; `flush` submits it
    /// (and what was queued before) to the device now.
    fn block_launch(&self, k: &Kernel, n_layers: usize, flush: bool) -> Result<()> {
        let (groups, base) = {
            let st = self.block.as_ref().expect("caller checked");
            (st.groups, st.base.get())
        };
        self.launch_kernel(k, K_BLOCK, &[groups * self.blk_lws], Some(&[self.blk_lws]))?;
        if flush {
            // Start the device now; the host enqueues the next launches meanwhile (a
            // launch is ~130 µs of device work). A flush costs tens of µs of host time on
            // NVIDIA, so only a token's first launch gets one: the rest go with the
            // logits read, which flushes, long before the device runs out of work.
            self.queue.flush().map_err(cl_err("clFlush"))?;
            self.unflushed.set(0);
        }
        let st = self.block.as_ref().expect("caller checked");
        let barriers = 5 * n_layers as u32 - 1;
        st.base.set(base.wrapping_add(barriers * groups as u32));
        st.unchecked.set(true);
        Ok(())
    }

    /// One layer through the block kernel; `false` when it does not apply.
    pub(super) fn block_one(
        &mut self,
        x: &TensorMut<'_, Self>,
        w: &BlockWeights<'_, Self>,
        kv: &BlockKv<'_, Self>,
        inv_freq: &TensorRef<'_, Self>,
        p: &BlockParams,
        s: &BlockScratch<'_, Self>,
    ) -> Result<bool> {
        let ffn = w.w_gate.shape.dims()[0];
        if !self.block_shapes_fit(x, p, ffn) || !Self::block_layer_fits(w, ffn) {
            return Ok(false);
        }
        let k = &self.kernels[K_BLOCK];
        self.block_shared_args(k, x, inv_freq, p, s, ffn, 1)?;
        for j in 0..self.blk_lpl {
            self.block_layer_args(k, j, w, kv)?;
        }
        self.block_launch(k, 1, true)?;
        Ok(true)
    }

    /// Every layer through the block kernel, `blk_lpl` per launch; `false` (nothing
    /// launched) when some layer does not suit it.
    pub(super) fn block_all(
        &mut self,
        x: &TensorMut<'_, Self>,
        n_layer: usize,
        layer: &mut LayerVisitor<'_, Self>,
        inv_freq: &TensorRef<'_, Self>,
        p: &BlockParams,
        s: &BlockScratch<'_, Self>,
    ) -> Result<bool> {
        if self.block.is_none() || n_layer == 0 {
            return Ok(false);
        }
        // Layer 0's FFN width for all; every layer checked before anything is launched.
        let mut ffn = 0;
        layer(0, &mut |w, _| {
            ffn = w.w_gate.shape.dims()[0];
            Ok(())
        })?;
        if !self.block_shapes_fit(x, p, ffn) {
            return Ok(false);
        }
        let mut all_fit = true;
        for l in 0..n_layer {
            layer(l, &mut |w, _| {
                all_fit &= Self::block_layer_fits(&w, ffn);
                Ok(())
            })?;
        }
        if !all_fit {
            return Ok(false);
        }
        let lpl = self.blk_lpl;
        let st = self.block.as_ref().expect("checked above");
        for (gi, l0) in (0..n_layer).step_by(lpl).enumerate() {
            let n_here = lpl.min(n_layer - l0);
            // What this launch's arguments would be, folded into a fingerprint.
            let mut fp = Fingerprint::new();
            fp.shared(x, inv_freq, p, s, ffn, n_here);
            fp.add(st.part.get() as u64); // (re-created when a longer context is reserved)
            fp.add(st.sync.borrow().get() as u64);
            fp.add(st.prof.borrow().get() as u64);
            fp.add(st.spin_limit as u64);
            fp.add(self.profiling as u64);
            for j in 0..n_here {
                layer(l0 + j, &mut |w, kv| {
                    fp.layer(&w, &kv);
                    Ok(())
                })?;
            }
            let mut ks = st.groups_k.borrow_mut();
            if ks.len() <= gi {
                let program = &self._programs[self.block_program];
                let k =
                    Kernel::create(program, "llama_blocks_f32").map_err(cl_err("clCreateKernel llama_blocks_f32"))?;
                ks.push((k, 0));
            }
            let (k, last) = &mut ks[gi];
            if *last == fp.0 && fp.0 != 0 {
                // Same buffers, shapes and layers as last time: only the per-token scalars.
                let a = p.attn;
                args!(k, DYN_BASE; st.base.get());
                args!(k, DYN_SLOT; a.n_past as u32, p.pos0 as u32);
            } else {
                self.block_shared_args(k, x, inv_freq, p, s, ffn, n_here)?;
                for j in 0..n_here {
                    layer(l0 + j, &mut |w, kv| {
                        self.block_layer_args(k, j, &w, &kv)?;
                        // Parameter sets this launch leaves unused still need valid values.
                        if j == 0 {
                            for u in n_here..lpl {
                                self.block_layer_args(k, u, &w, &kv)?;
                            }
                        }
                        Ok(())
                    })?;
                }
                *last = fp.0;
            }
            self.block_launch(k, n_here, l0 == 0)?;
        }
        Ok(true)
    }

    /// The fused head for one row; `false` when it does not apply.
    pub(super) fn head_try(
        &mut self,
        x: &TensorRef<'_, Self>,
        norm_w: &TensorRef<'_, Self>,
        eps: f32,
        w: &TensorRef<'_, Self>,
        y: &mut TensorMut<'_, Self>,
    ) -> Result<bool> {
        let (n_rows, dim) = (w.shape.dims()[0], w.shape.dims()[1]);
        let Some(t) = code(w.dtype) else { return Ok(false) };
        if !self.head_ok || x.shape.rows() != 1 || dim % 32 != 0 || dim > self.max_vec || n_rows == 0 {
            return Ok(false);
        }
        let ym = writable(y.buf, "opencl head output")?;
        let rows_per_wg = self.head_rows;
        let n_args = args!(&self.kernels[K_HEAD]; x.buf.mem(), el(x.offset), norm_w.buf.mem(), el(norm_w.offset),
            w.buf.mem(), w.offset as u64, t, ym, el(y.offset), dim as u32, n_rows as u32, eps,
            rows_per_wg as u32);
        set_local(&self.kernels[K_HEAD], n_args, dim * 4)?;
        self.launch(
            K_HEAD,
            &[n_rows.div_ceil(rows_per_wg) * self.blk_lws],
            Some(&[self.blk_lws]),
        )?;
        Ok(true)
    }
}

/// Block-kernel stage times: `(stage name, ns)` per stage and the launch count.
pub type StageTimes = (Vec<(&'static str, u64)>, u64);

/// Sizes the `__local` buffer argument `index` of `k`.
fn set_local(k: &Kernel, index: u32, bytes: usize) -> Result<()> {
    // SAFETY: `index` is the kernel's `__local float *vl` parameter (block.cl); a local
    // buffer argument is a size with no host pointer.
    unsafe { k.set_arg_local_buffer(index, bytes) }.map_err(|e| Error::Backend {
        backend: "opencl",
        msg: format!("clSetKernelArg (local) {index} of {:?}: {e}", k.function_name()),
    })
}

impl OpenClBackend {
    /// The persistent block path as it stands: `Some((work-groups, layers per launch))`
    /// while on, `None` when off (by option or device) or after an abort.
    pub fn persistent_block(&self) -> Option<(usize, usize)> {
        self.block
            .as_ref()
            .filter(|b| !b.disabled.get())
            .map(|b| (b.groups, self.blk_lpl))
    }

    /// How the persistent block kernel was built (work-group size, layers a launch,
    /// attention chunk, reduction style, spill bytes); `None` without the path.
    pub fn block_description(&self) -> Option<String> {
        self.persistent_block()
            .map(|(groups, _)| format!("{groups} work-groups of {}", self.blk_desc))
    }

    /// Device time per stage of the block kernel since the last call (profiling on an
    /// NVIDIA device; zeros elsewhere): `(stage, total ns)` and the layer count. Resets
    /// the timers. `None` without the persistent path.
    pub fn block_stage_times(&self) -> Result<Option<StageTimes>> {
        let Some(p) = &self.block else { return Ok(None) };
        let mut raw = [0u8; PROF_BYTES];
        // SAFETY: blocking read of the whole timer buffer into `raw`.
        unsafe {
            self.queue
                .enqueue_read_buffer(&p.prof.borrow(), CL_BLOCKING, 0, &mut raw, &[])
        }
        .map_err(cl_err("clEnqueueReadBuffer (block timers)"))?;
        let v: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut prof = p.prof.borrow_mut();
        // SAFETY: the pattern is copied at enqueue; PROF_BYTES is the buffer's size.
        unsafe { self.queue.enqueue_fill_buffer(&mut prof, &[0u8], 0, PROF_BYTES, &[]) }
            .map_err(cl_err("clEnqueueFillBuffer"))?;
        Ok(Some((
            BLOCK_STAGES.iter().copied().zip(v.iter().copied()).collect(),
            v[10],
        )))
    }
}
