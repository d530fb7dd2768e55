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
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use opencl3::memory::{Buffer, ClMem, CL_MEM_READ_WRITE};

use super::buffer::el;
use super::kernels::{dtype_code, BlockLayer, BlockShared, LlamaBlocks, LlamaHead, T_Q4_0R};
use super::launch::{create_buffer, field_index, fill_zero, read_blocking, Args, FlagRead, Kern, Local, Mem};
use super::ops::rope_style;
use super::program::MAX_HD;
use super::OpenClBackend;
use crate::backend::AttnParams;
use crate::backend::{BlockKv, BlockParams, BlockScratch, BlockWeights, LayerVisitor};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{TensorMut, TensorRef};

/// Parameters of `llama_blocks_f32` before the first layer's, and per layer.
const SHARED_ARGS: u32 = BlockShared::FIELDS.len() as u32;
const LAYER_ARGS: u32 = BlockLayer::FIELDS.len() as u32;
/// Indices of the per-token arguments: the barrier base, the cache slot, the position.
const DYN_BASE: u32 = field_index(BlockShared::FIELDS, "sync_base");
const DYN_SLOT: u32 = field_index(BlockShared::FIELDS, "slot");
const DYN_POS: u32 = field_index(BlockShared::FIELDS, "pos");

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
        self.view(x.buf.arg().0 as usize, x.offset, x.dtype);
        self.add(x.shape.row_len() as u64);
        self.view(inv_freq.buf.arg().0 as usize, inv_freq.offset, inv_freq.dtype);
        self.view(s.q.buf.arg().0 as usize, s.q.offset, s.q.dtype);
        self.view(s.act.buf.arg().0 as usize, s.act.offset, s.act.dtype);
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
            self.view(t.buf.arg().0 as usize, t.offset, t.dtype);
        }
        self.view(kv.k.buf.arg().0 as usize, kv.k.offset, kv.k.dtype);
        self.view(kv.v.buf.arg().0 as usize, kv.v.offset, kv.v.dtype);
    }
}

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

/// A layer group's kernel object and the fingerprint of the arguments last set on it.
pub(super) type CachedLaunch = (Kern<LlamaBlocks>, u64);

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
    pub flag: RefCell<FlagRead>,
    /// Attention partials: (m, l, o[hd]) per (head, chunk), `part_cap` f32s.
    pub part: Buffer<u8>,
    pub part_cap: usize,
    /// Turned off after an abort.
    pub disabled: Cell<bool>,
    /// Launches of `llama_blocks_f32` so far, per cache dtype ([`kv_index`]).
    pub launches: [Cell<u64>; 3],
    /// Stage timers: 10 u64 ns sums and a layer count (see block.cl `MARK`).
    pub prof: RefCell<Buffer<u8>>,
    /// One kernel object per layer group of `llama_blocks`, with a fingerprint of the
    /// arguments last set on it: from one token to the next only the barrier base, the
    /// cache slot and the position change, so ~140 clSetKernelArg calls a launch
    /// become 3. One list per block.cl build ([`variant_index`]), each from that
    /// build's program.
    pub groups_k: RefCell<[Vec<CachedLaunch>; 6]>,
}

impl Persistent {
    pub fn new(context: &opencl3::context::Context, groups: usize, is_cpu: bool) -> Result<Persistent> {
        let sync = create_buffer(context, CL_MEM_READ_WRITE, SYNC_BYTES)?;
        let part = create_buffer(context, CL_MEM_READ_WRITE, 4)?;
        let prof = create_buffer(context, CL_MEM_READ_WRITE, PROF_BYTES)?;
        Ok(Persistent {
            prof: RefCell::new(prof),
            groups_k: Default::default(),
            groups,
            // A GPU barrier spin is an L2 round trip (~0.3 µs): 2^24 is seconds. A CPU
            // device's is a cached load, and its work-groups are threads the OS may
            // preempt: give it 2^31 (about a second).
            spin_limit: if is_cpu { 1 << 31 } else { 1 << 24 },
            sync: RefCell::new(sync),
            base: Cell::new(0),
            unchecked: Cell::new(false),
            flag: RefCell::new(FlagRead::default()),
            part,
            part_cap: 0,
            disabled: Cell::new(false),
            launches: Default::default(),
        })
    }
}

/// The cache dtypes block.cl is built for, as an index (f32 0, f16 1, Q8_0 2).
fn kv_index(t: DType) -> Option<usize> {
    [DType::F32, DType::F16, DType::Q8_0].iter().position(|&u| u == t)
}

/// block.cl's builds: one per cache dtype ([`kv_index`]) and weight-type set — `core`
/// the build without the Q5_0/Q5_1/K-quant arms (`AG_CORE_TYPES`). 0 is the program built
/// at creation (f32 cache, every type).
///
/// Why a second build: the K-quant arms inlined into the stages cost the other types'
/// loops registers. On the H200 the 1B shape's Q4_0 decode ran 902 tok/s with them
/// inlined and 1005 with them out of line (`-DAG_KQ_NOINLINE`), while Q4_K_M ran 841
/// inlined and 791 out of line; a build without them at all is the Q4_0 loop as it was
/// written, and Q4_K_M keeps the inlined arms.
pub(super) fn variant_index(kv: DType, core: bool) -> Option<usize> {
    Some(2 * kv_index(kv)? + core as usize)
}

/// Whether a weight needs only the core-types build (F32/F16/BF16/Q4_0/Q4_1/Q8_0).
pub(super) fn core_type(t: DType) -> bool {
    dtype_code(t).is_some_and(|c| c <= 5)
}

/// Whether a layer's matrices are all of the core types.
fn layer_core(w: &BlockWeights<'_, OpenClBackend>) -> bool {
    [w.wq, w.wk, w.wv, w.wo, w.w_gate, w.w_up, w.w_down]
        .iter()
        .all(|m| core_type(m.dtype))
}

/// Slots of context from which a decode step takes the wide stage B (where built):
/// below it the (query head, chunk) units are faster — the wide path's merge by the last
/// unit of a KV head (a fence, an atomic and a dependent read of the partials) costs
/// more than the per-group merges it saves while a context is a few chunks long.
/// Measured on an H100 with the 1B shape (docs/opencl.md): the other stage B is 5 %
/// faster at 512 slots, the wide one 1.5× at 2 000; the crossover is near 620.
pub(super) const WIDE_FROM: usize = 640;

/// KV heads the wide stage B's merge counters cover (block.cl's `MAX_KV_HEADS`; a model
/// with more takes the other stage B).
const MAX_KV_HEADS: usize = 64;

/// The barrier counter, the abort flag, and the wide stage B's merge counter per KV
/// head, u32 each.
const SYNC_BYTES: usize = 4 * (2 + MAX_KV_HEADS);

/// Grid barriers of one layer: after stages A, B, C, D (and E, between two layers of a
/// launch), plus stage A2's with a Q8_0 cache (its new rows are quantized after a
/// barrier: a block's values come from several work-groups).
fn barriers_per_layer(kv: DType) -> u32 {
    if kv == DType::Q8_0 {
        6
    } else {
        5
    }
}

impl OpenClBackend {
    /// Zeroes the barrier counter and flag (at creation and after an abort).
    pub(super) fn block_reset(&self) -> Result<()> {
        let Some(p) = &self.block else { return Ok(()) };
        fill_zero(&self.q.q, &mut p.sync.borrow_mut(), 0, SYNC_BYTES)?;
        fill_zero(&self.q.q, &mut p.prof.borrow_mut(), 0, PROF_BYTES)?;
        p.base.set(0);
        Ok(())
    }

    /// Forgets the arguments last set on the block kernels: the next launch sets them
    /// all (after a cache buffer was swapped or handed over, a `cl_mem` handle equal to
    /// an earlier one is not proof of the same memory: a released handle's address can
    /// be reused).
    pub(super) fn block_forget_args(&self) {
        if let Some(st) = &self.block {
            for per_type in st.groups_k.borrow_mut().iter_mut() {
                for (_, last) in per_type.iter_mut() {
                    *last = 0;
                }
            }
        }
    }

    /// Sizes the attention partials for `max_ctx` positions and `n_head` heads.
    pub(super) fn block_reserve(&mut self, max_ctx: usize, n_head: usize) -> Result<()> {
        let Some(p) = self.block.as_mut() else { return Ok(()) };
        // (at least 2 · n_head · MAX_HD: a Q8_0 cache's new K and V rows are staged there,
        // 2 · n_kv_head · head_dim floats)
        let need = (n_head * max_ctx.div_ceil(self.blk.ch) * (MAX_HD + 2)).max(2 * n_head * MAX_HD);
        if need > p.part_cap {
            p.part = create_buffer(&self.context, CL_MEM_READ_WRITE, need * 4)?;
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
        // (Read by `block_verdict` after the caller's blocking read, which on the in-order
        // queue completes after this one.)
        p.flag.borrow_mut().start(&self.q.q, &p.sync.borrow())?;
        self.counters.download(4);
        Ok(true)
    }

    /// After the blocking read that followed [`OpenClBackend::block_check_enqueue`]:
    /// an error when a block launch aborted.
    pub(super) fn block_verdict(&self) -> Result<()> {
        let Some(p) = &self.block else { return Ok(()) };
        p.unchecked.set(false);
        let status = p.flag.borrow_mut().take()?;
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
        Err(Error::backend(
            "opencl",
            format!(
                "{}: the persistent block kernel gave up at a grid barrier ({} work-groups did not all \
                 run at once); its results are invalid and the path is now off — rerun, or set \
                 ANTIGRAVITY_OPENCL_BLOCK=0 to use per-op kernels from the start",
                self.info.name, p.groups
            ),
        ))
    }

    /// Waits for the queue, then reports an aborted block launch (synchronize's check).
    pub(super) fn block_check_blocking(&self) -> Result<()> {
        let Some(p) = &self.block else { return Ok(()) };
        if !p.unchecked.get() {
            return Ok(());
        }
        let mut status = [0u8; 4];
        read_blocking(&self.q.q, &p.sync.borrow(), 4, &mut status)?;
        self.counters.download(4);
        p.unchecked.set(false);
        self.block_status_verdict(status)
    }

    /// Floats of local memory the wide stage B takes for these shapes, or 0 where the
    /// launch takes the other stage B: a build without it, shapes it does not handle,
    /// or a GQA group too big for the local memory left (8 query heads a KV head at
    /// 256 work-items want ~38 KiB; the kernel's `wide_ok` argument says which).
    fn block_wide_floats(&self, a: AttnParams) -> usize {
        let grp = a.n_head / a.n_kv_head.max(1);
        let f = self.blk.wide_floats(grp, a.head_dim);
        if a.n_past + 1 >= self.blk.wide_from
            && grp * a.n_kv_head.max(1) == a.n_head
            && a.n_kv_head <= MAX_KV_HEADS
            && 4 * f <= self.blk.vec_bytes(self.blk.max_vec)
        {
            f
        } else {
            0
        }
    }

    /// Bytes of the kernel's staged-vector local buffer: the widest vector (with its
    /// int8 copy), or what the wide stage B uses if that is more.
    fn block_vec_bytes(&self, dim: usize, a: AttnParams, ffn: usize) -> usize {
        let n = dim.max(a.n_head * a.head_dim).max(ffn);
        self.blk.vec_bytes(n).max(4 * self.block_wide_floats(a))
    }

    /// Whether the shared shapes suit the block kernel (one token, sizes it stages,
    /// head size its attention handles, partials reserved for this context).
    fn block_shapes_fit(&self, x: &TensorMut<'_, Self>, p: &BlockParams, ffn: usize, kv: DType) -> bool {
        let Some(st) = &self.block else { return false };
        let a = p.attn;
        let (dim, qd, hd) = (x.shape.row_len(), a.n_head * a.head_dim, a.head_dim);
        !st.disabled.get()
            && x.shape.rows() == 1
            && [dim, qd, ffn].iter().all(|n| n % 32 == 0 && *n <= self.blk.max_vec)
            && self.block_vec_bytes(dim, a, ffn) <= self.blk.vec_bytes(self.blk.max_vec)
            && hd <= MAX_HD
            && hd.is_multiple_of(4)
            && hd >= 8 // (stage B indexes VPRE · LWS / hd < LWS slots)
            && self.blk.lws.is_multiple_of(hd)
            && a.n_head * (a.n_past + 1).div_ceil(self.blk.ch) * (hd + 2) <= st.part_cap
            && (kv != DType::Q8_0 || (2 * a.n_kv_head * hd <= st.part_cap && hd.is_multiple_of(kv.block_size())))
    }

    /// Whether one layer suits the kernel: weight dtypes it decodes, the same FFN width,
    /// K and V caches of the dtype `kvt` the launch's program is built for (f32, f16 or
    /// Q8_0: block.cl's stage A writes and stage B reads them through common/kv.cl).
    fn block_layer_fits(w: &BlockWeights<'_, Self>, kv: &BlockKv<'_, Self>, ffn: usize, kvt: DType) -> bool {
        [w.wq, w.wk, w.wv, w.wo, w.w_gate, w.w_up, w.w_down]
            .iter()
            .all(|m| dtype_code(m.dtype).is_some())
            && w.w_gate.shape.dims()[0] == ffn
            && kv_index(kvt).is_some()
            && kv.k.dtype == kvt
            && kv.v.dtype == kvt
    }

    /// Sets the arguments every layer of a launch shares, and the staged vector's size.
    #[allow(clippy::too_many_arguments)]
    fn block_shared_args(
        &self,
        k: &Kern<LlamaBlocks>,
        x: &TensorMut<'_, Self>,
        inv_freq: &TensorRef<'_, Self>,
        p: &BlockParams,
        s: &BlockScratch<'_, Self>,
        ffn: usize,
        n_layers: usize,
    ) -> Result<()> {
        let st = self.block.as_ref().expect("caller checked");
        let a = p.attn;
        let args = BlockShared {
            x: x.buf.writable("opencl block x")?,
            x_off: el(x.offset),
            inv_freq: inv_freq.buf.arg(),
            if_off: el(inv_freq.offset),
            q: s.q.buf.writable("opencl block q")?,
            q_off: el(s.q.offset),
            hb: s.act.buf.writable("opencl block hb")?,
            hb_off: el(s.act.offset),
            part: Mem::of(&st.part),
            sync: Mem::of(&*st.sync.borrow()),
            sync_base: st.base.get(),
            spin_limit: st.spin_limit,
            prof: Mem::of(&*st.prof.borrow()),
            prof_on: self.q.prof.is_some() as u32,
            dim: x.shape.row_len() as u32,
            n_head: a.n_head as u32,
            n_kv_head: a.n_kv_head as u32,
            hd: a.head_dim as u32,
            ffn: ffn as u32,
            slot: a.n_past as u32,
            pos: p.pos0 as u32,
            style: rope_style(p.style),
            eps: p.eps,
            scale: a.scale,
            n_layers: n_layers as u32,
            wide_ok: u32::from(self.block_wide_floats(a) > 0),
        };
        k.set_part(0, &args)?;
        let vec_bytes = self.block_vec_bytes(x.shape.row_len(), a, ffn);
        k.set_one(SHARED_ARGS + LAYER_ARGS * self.blk.lpl as u32, &Local(vec_bytes))
    }

    /// Sets parameter set `j` of the kernel to layer `w`, `kv`.
    fn block_layer_args(
        &self,
        k: &Kern<LlamaBlocks>,
        j: usize,
        w: &BlockWeights<'_, Self>,
        kv: &BlockKv<'_, Self>,
    ) -> Result<()> {
        let ([wq, wk, wv, wo, wg, wu, wd], [an, fnw]) = (
            [w.wq, w.wk, w.wv, w.wo, w.w_gate, w.w_up, w.w_down].map(block_weight),
            [w.attn_norm, w.ffn_norm],
        );
        let args = BlockLayer {
            an: an.buf.arg(),
            an_off: el(an.offset),
            wq: wq.0,
            wq_off: wq.1,
            tq: wq.2,
            wk: wk.0,
            wk_off: wk.1,
            tk: wk.2,
            wv: wv.0,
            wv_off: wv.1,
            tv: wv.2,
            wo: wo.0,
            wo_off: wo.1,
            to: wo.2,
            fn_: fnw.buf.arg(),
            fn_off: el(fnw.offset),
            wg: wg.0,
            wg_off: wg.1,
            tg: wg.2,
            wu: wu.0,
            wu_off: wu.1,
            tu: wu.2,
            wd: wd.0,
            wd_off: wd.1,
            td: wd.2,
            kc: kv.k.buf.writable("opencl block k cache")?,
            kc_off: kv.k.offset as u64, // (bytes: the cache in the program's KV_T)
            vc: kv.v.buf.writable("opencl block v cache")?,
            vc_off: kv.v.offset as u64,
        };
        k.set_part(SHARED_ARGS + LAYER_ARGS * j as u32, &args)
    }

    /// Enqueues the kernel (arguments set) for `n_layers` layers; `flush` submits it
    /// (and what was queued before) to the device now.
    fn block_launch(&self, k: &Kern<LlamaBlocks>, n_layers: usize, flush: bool, kv: DType) -> Result<()> {
        let (groups, base) = {
            let st = self.block.as_ref().expect("caller checked");
            (st.groups, st.base.get())
        };
        self.q.enqueue(k, &[groups * self.blk.lws], Some(&[self.blk.lws]))?;
        if flush {
            // Start the device now; the host enqueues the next launches meanwhile (a
            // launch is ~130 µs of device work). A flush costs tens of µs of host time on
            // NVIDIA, so only a token's first launch gets one: the rest go with the
            // logits read, which flushes, long before the device runs out of work.
            self.q.flush()?;
        }
        let st = self.block.as_ref().expect("caller checked");
        let barriers = barriers_per_layer(kv) * n_layers as u32 - 1;
        st.base.set(base.wrapping_add(barriers * groups as u32));
        st.unchecked.set(true);
        let n = &st.launches[kv_index(kv).expect("checked by block_layer_fits")];
        n.set(n.get() + 1);
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
        let kvt = kv.k.dtype;
        if !self.block_shapes_fit(x, p, ffn, kvt) || !Self::block_layer_fits(w, kv, ffn, kvt) {
            return Ok(false);
        }
        let Some((k, _, _)) = self.block_variant(kvt, layer_core(w))? else {
            return Ok(false);
        };
        self.block_shared_args(k, x, inv_freq, p, s, ffn, 1)?;
        for j in 0..self.blk.lpl {
            self.block_layer_args(k, j, w, kv)?;
        }
        self.block_launch(k, 1, true, kvt)?;
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
        // Layer 0's FFN width and cache dtype for all; every layer checked before
        // anything is launched.
        let (mut ffn, mut kvt) = (0, DType::F32);
        layer(0, &mut |w, kv| {
            ffn = w.w_gate.shape.dims()[0];
            kvt = kv.k.dtype;
            Ok(())
        })?;
        if !self.block_shapes_fit(x, p, ffn, kvt) {
            return Ok(false);
        }
        let (mut all_fit, mut core) = (true, true);
        for l in 0..n_layer {
            layer(l, &mut |w, kv| {
                all_fit &= Self::block_layer_fits(&w, &kv, ffn, kvt);
                core &= layer_core(&w);
                Ok(())
            })?;
        }
        let (Some(ki), true) = (variant_index(kvt, core && self.blk_core), all_fit) else {
            return Ok(false);
        };
        let Some((_, _, program)) = self.block_variant(kvt, core)? else {
            return Ok(false);
        };
        let lpl = self.blk.lpl;
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
            fp.add(self.q.prof.is_some() as u64);
            // (which stage B this context takes: `wide_ok` and the local size follow it)
            fp.add(self.block_wide_floats(p.attn) as u64);
            for j in 0..n_here {
                layer(l0 + j, &mut |w, kv| {
                    fp.layer(&w, &kv);
                    Ok(())
                })?;
            }
            let mut ks_all = st.groups_k.borrow_mut();
            let ks = &mut ks_all[ki];
            if ks.len() <= gi {
                ks.push((Kern::create_n(program, "llama_blocks_f32", self.blk.n_args())?, 0));
            }
            let (k, last) = &mut ks[gi];
            if *last == fp.0 && fp.0 != 0 {
                // Same buffers, shapes and layers as last time: only the per-token scalars.
                k.set_one(DYN_BASE, &st.base.get())?;
                k.set_one(DYN_SLOT, &(p.attn.n_past as u32))?;
                k.set_one(DYN_POS, &(p.pos0 as u32))?;
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
            self.block_launch(k, n_here, l0 == 0, kvt)?;
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
        if dtype_code(w.dtype).is_none() {
            return Ok(false);
        }
        let (w_mem, w_off, tw) = block_weight(*w);
        if !self.head_ok() || x.shape.rows() != 1 || dim % 32 != 0 || dim > self.blk.max_vec || n_rows == 0 {
            return Ok(false);
        }
        // (the core-types build for a core-type matrix: the f32 cache's, any cache
        // dtype's head is the same code)
        let Some((_, head, _)) = self.block_variant(DType::F32, core_type(w.dtype))? else {
            return Ok(false);
        };
        let rows_per_wg = self.sz.head_rows;
        let args = LlamaHead {
            x: x.buf.arg(),
            x_off: el(x.offset),
            nw: norm_w.buf.arg(),
            n_off: el(norm_w.offset),
            w: w_mem,
            w_off,
            tw,
            y: y.buf.writable("opencl head output")?,
            y_off: el(y.offset),
            dim: dim as u32,
            n_rows: n_rows as u32,
            eps,
            rows_per_wg: rows_per_wg as u32,
            vl: Local(self.blk.vec_bytes(dim)),
        };
        let lws = self.blk.lws;
        self.q
            .run(head, &args, &[n_rows.div_ceil(rows_per_wg) * lws], Some(&[lws]))?;
        Ok(true)
    }
}

/// A weight as the block kernel reads it: its repacked copy where it has one (`rowsoa.rs`;
/// a whole matrix, so not for a view at an offset), else its own bytes; with the dtype
/// code that says which.
fn block_weight(t: TensorRef<'_, OpenClBackend>) -> (Mem, u64, u32) {
    match &t.buf.rows {
        Some(r) if t.offset == 0 && t.dtype == DType::Q4_0 && t.shape.row_len() == r.cols => {
            (Mem::of(&r.buf), 0, T_Q4_0R)
        }
        _ => (
            t.buf.arg(),
            t.offset as u64,
            dtype_code(t.dtype).expect("checked by block_layer_fits / head_try"),
        ),
    }
}

/// Block-kernel stage times: `(stage name, ns)` per stage and the launch count.
pub type StageTimes = (Vec<(&'static str, u64)>, u64);

impl OpenClBackend {
    /// The persistent block path as it stands: `Some((work-groups, layers per launch))`
    /// while on, `None` when off (by option or device) or after an abort.
    pub fn persistent_block(&self) -> Option<(usize, usize)> {
        self.block
            .as_ref()
            .filter(|b| !b.disabled.get())
            .map(|b| (b.groups, self.blk.lpl))
    }

    /// Launches of the persistent block kernel so far with a cache of dtype `kv` (f32,
    /// f16, Q8_0; 0 for the others or without the path): which caches decoded through it.
    pub fn block_launches(&self, kv: DType) -> u64 {
        match (&self.block, kv_index(kv)) {
            (Some(p), Some(i)) => p.launches[i].get(),
            _ => 0,
        }
    }

    /// Whether a launch for these attention shapes at `n_ctx` slots takes the wide stage
    /// B (a build with it, shapes it handles, local memory for the GQA group, a context
    /// from `block_wide_from` on; see `block_wide_floats`).
    pub fn block_attn_wide(&self, n_head: usize, n_kv_head: usize, head_dim: usize, n_ctx: usize) -> bool {
        let a = AttnParams {
            n_head,
            n_kv_head,
            head_dim,
            scale: 1.0,
            n_past: n_ctx.saturating_sub(1),
        };
        self.persistent_block().is_some() && self.block_wide_floats(a) > 0
    }

    /// How the persistent block kernel was built (work-group size, layers a launch,
    /// attention chunk, reduction style, spill bytes); `None` without the path.
    pub fn block_description(&self) -> Option<String> {
        self.persistent_block()
            .map(|(groups, _)| format!("{groups} work-groups of {}", self.blk.desc))
    }

    /// Device time per stage of the block kernel since the last call (profiling on an
    /// NVIDIA device; zeros elsewhere): `(stage, total ns)` and the layer count. Resets
    /// the timers. `None` without the persistent path.
    pub fn block_stage_times(&self) -> Result<Option<StageTimes>> {
        let Some(p) = &self.block else { return Ok(None) };
        let mut raw = [0u8; PROF_BYTES];
        read_blocking(&self.q.q, &p.prof.borrow(), 0, &mut raw)?;
        let v: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        fill_zero(&self.q.q, &mut p.prof.borrow_mut(), 0, PROF_BYTES)?;
        Ok(Some((
            BLOCK_STAGES.iter().copied().zip(v.iter().copied()).collect(),
            v[10],
        )))
    }
}
