//! The OpenCL backend: every op of the [`Backend`] trait as an OpenCL C 1.2 kernel
//! (sources in the `antigravity-kernels` crate), run on one in-order command queue.
//!
//! The module's parts, each behind one seam:
//!
//! | module | holds |
//! |---|---|
//! | [`options`] | [`OpenClOptions`]; every `ANTIGRAVITY_OPENCL_*` variable is read there ([`options::ENV`]) |
//! | `device` | platform/device discovery, [`DeviceInfo`] |
//! | `binary_cache` | built programs' device binaries on disk, keyed by device, driver, options and source |
//! | `program` | sizes chosen for the device, kernel source assembly (generated header + `cl/common/` preludes + family), program builds, `block.cl`'s variant choice |
//! | `kernels` | the typed kernel registry: one signature struct per kernel parameter list, [`Kernels`](kernels::Kernels) by name and dtype |
//! | `launch` | the FFI boundary — the only `unsafe` of the backend: typed argument setting, enqueue, transfers |
//! | `buffer` | [`ClBuffer`], [`ClMemKind`], [`CopyCounters`] |
//! | `memory` | alloc, imports, uploads, downloads (blocking and started), scratch `reserve` |
//! | `ops` | norm, RoPE, attention, softmax, argmax, SwiGLU, add, get_rows |
//! | `matmul` | mul_mv / mul_mm / image matmul and the fused norm+matmul ops |
//! | `block` | the persistent whole-block decode kernel and the fused head |
//! | `image` | the Q4_0 `image1d_buffer` weight path |
//! | `profile` | per-kernel device times and gaps |
//!
//! * **Discovery**: one device is picked by platform/device index or a name filter; no
//!   library, platform or device is a clear
//!   [`ErrorKind::Backend`](crate::error::ErrorKind::Backend) error, so the caller can fall back to
//!   the CPU. Capabilities are read once ([`DeviceInfo`]) and logged.
//! * **Programs**: each kernel family (`.cl` file) is built once per backend, in
//!   [`OpenClBackend::new`], and every kernel object is created there; ops only fill a
//!   signature struct and launch. The exception: the cache-reading families' f16 and
//!   Q8_0 variants (`attention.cl`, `kv_cache.cl`, `block.cl` with `-DKV_T`) are built
//!   on the first op that meets such a cache.
//! * **Memory** ([`ClBuffer`]): see `memory`; every byte our code copies between host
//!   and device is counted ([`OpenClBackend::copied_bytes`]).
//! * **Asynchrony**: ops enqueue and return. [`Backend::download`] is a blocking read,
//!   which on the in-order queue orders itself after every earlier op;
//!   [`Backend::synchronize`] is `clFinish`. No op waits on the host.
//!
//! Numerics: f32 everywhere, f32 accumulation. Quantized matmuls keep activations in f32
//! (the CPU backend quantizes them to Q8_0/Q8_1 first), so the two backends differ at
//! the ~1e-5 normalized-MSE level; `core/tests/conformance.rs` states every limit.

mod binary_cache;
mod block;
mod buffer;
mod device;
mod image;
mod kernels;
mod launch;
mod matmul;
mod memory;
mod ops;
pub mod options;
mod profile;
mod program;
mod rowsoa;

use core::cell::{Cell, OnceCell};

use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::program::Program;

use crate::backend::{
    AttnParams, Backend, BlockKv, BlockParams, BlockScratch, BlockWeights, BufferKind, Capabilities, HostRegion,
    LayerVisitor, PendingRead, Reservation, RopeStyle,
};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::{Shape, TensorMut, TensorRef};

pub use block::StageTimes;
pub use buffer::{ClBuffer, ClMemKind, CopyCounters};
pub use device::{list_devices, DeviceInfo};
pub use image::RepackStats;
pub use options::OpenClOptions;
pub use program::{generated_header, program_source};

pub(crate) use launch::cl_err;

/// A block.cl build made on first use (a cache dtype, the core-types variant): its
/// one-layer kernel object, its head kernel and the program.
type BlockVariant = (
    launch::Kern<kernels::LlamaBlocks>,
    launch::Kern<kernels::LlamaHead>,
    Program,
);

/// The OpenCL backend. See the module docs.
pub struct OpenClBackend {
    info: DeviceInfo,
    // Drop order: kernels before programs, both before the queues and the context.
    k: kernels::Kernels,
    /// The cache-reading kernels (attention.cl, kv_cache.cl) for an f16 and a Q8_0
    /// cache ([`program::KV_LAZY`] order), built with their programs on first use.
    kv_lazy: [OnceCell<(kernels::KvKernels, [Program; 2])>; 2],
    /// block.cl's other builds, on first use ([`block::variant_index`] − 1: the f32
    /// cache's core-types build, then the f16 and Q8_0 caches' full and core-types
    /// builds), with their kernel objects (`None`: the build does not allow the
    /// work-group size of the first one; that variant decodes on the per-op path).
    blk_var: [OnceCell<Option<BlockVariant>>; 5],
    /// Models without Q5/K-quant weights run block.cl's core-types builds
    /// ([`OpenClOptions::block_core`]).
    blk_core: bool,
    /// The program-binary cache directory ([`OpenClOptions::binary_cache`]), for the
    /// builds made on first use.
    binary_cache: Option<alloc::string::String>,
    /// The int8 prefill matmuls (None: off, `mul_mm` runs prefill).
    mmq: Option<program::MmqPath>,
    programs: program::Programs,
    /// The compute queue and the launch path (profiling included).
    q: launch::Queue,
    /// Started downloads (`download_start`) run here, after a marker of `q`: a
    /// device-to-host copy in the compute queue would hold the next step's kernels
    /// behind it (~0.1 ms a token on NVIDIA for two 4-byte reads).
    read_queue: CommandQueue,
    context: Context,
    /// Work-group sizes and thresholds chosen for the device.
    sz: program::Sizes,
    /// How block.cl was built.
    blk: program::BlockBuild,
    scratch: memory::Scratch,
    counters: buffer::Counters,
    /// The persistent block path (None: off).
    block: Option<block::Persistent>,
    /// The image weight path (None: off, or turned off after a failed launch).
    img: Option<image::ImgPath>,
    /// Q4_0 matrices imported now get a repacked copy for the block kernel
    /// ([`OpenClOptions::block_repack`], `rowsoa.rs`).
    blk_repack: bool,
    /// What `import_weight` repacked so far, and the tensor counts last logged (image
    /// path, block-kernel copies).
    repack: Cell<RepackStats>,
    repack_logged: Cell<(u32, u32)>,
    /// [`OpenClOptions::log`].
    log: bool,
}

fn create_queue(context: &Context, props: u64) -> Result<CommandQueue> {
    match CommandQueue::create_default_with_properties(context, props, 0) {
        Ok(q) => Ok(q),
        // OpenCL 1.2 drivers lack clCreateCommandQueueWithProperties.
        #[allow(deprecated)]
        Err(_) => CommandQueue::create_default(context, props).map_err(cl_err("clCreateCommandQueue")),
    }
}

impl OpenClBackend {
    /// Opens the device `opts` names (or the first GPU, else the first device) and builds
    /// every kernel. An [`ErrorKind::Backend`](crate::error::ErrorKind::Backend) error when there is no
    /// OpenCL library, platform or matching device, or a kernel fails to build (with the build log).
    pub fn new(opts: OpenClOptions) -> Result<OpenClBackend> {
        let guard = device::DISCOVERY.lock().unwrap_or_else(|e| e.into_inner());
        let (info, id) = device::pick(&opts)?;
        let dev = Device::new(id);
        let context = Context::from_device(&dev).map_err(cl_err("clCreateContext"))?;
        drop(guard);
        if opts.log {
            std::eprintln!("opencl: {info}");
        }
        let props = if opts.profiling { CL_QUEUE_PROFILING_ENABLE } else { 0 };
        let q = launch::Queue::new(create_queue(&context, props)?, opts.profiling)?;
        let read_queue = create_queue(&context, 0)?;

        let mut sz = program::Sizes::for_device(&info, &opts)?;
        let (programs, blk) = program::build_all(&context, id, &info, &opts, &sz)?;
        let k = kernels::Kernels::create(&programs, blk.n_args())?;
        // argmax: as wide as the compiled kernel allows, up to 512 (a power of two).
        let argmax_lws = k.argmax.work_group_size(id)?.clamp(1, 512);
        sz.argmax_lws = 1 << (usize::BITS - 1 - argmax_lws.leading_zeros());

        // On by default where the grid barrier's memory ordering is verified: NVIDIA
        // GPUs (PTX release/acquire at GPU scope). Elsewhere only when asked for.
        let groups = match opts.persistent_groups {
            None if info.is_cpu || !blk.nv_fence => 0,
            None => info.compute_units as usize,
            Some(n) => n,
        };
        let block = if groups > 0 && blk.fence_ok && blk.fits && blk.max_vec >= 512 {
            Some(block::Persistent::new(&context, groups, info.is_cpu)?)
        } else {
            None
        };
        if opts.log {
            match &block {
                Some(b) => std::eprintln!(
                    "opencl: decode runs the persistent block kernel: {} work-groups of {}",
                    b.groups,
                    blk.desc
                ),
                None => std::eprintln!("opencl: decode runs per-op kernels"),
            }
        }
        let img = image::ImgPath::build(&context, id, &info, &opts);
        let mmq = program::build_mmq(&context, id, &info, &opts, &sz);
        let scratch = memory::Scratch::new(&context)?;
        // Read by the block kernel and the int8 prefill matmuls. Default: where measured,
        // NVIDIA; on a discrete card only, where the GGUF bytes are a device copy already,
        // not the file's mmap.
        let blk_repack =
            (block.is_some() || mmq.is_some()) && opts.block_repack.unwrap_or(blk.nv_fence && !info.unified_memory);
        let g = OpenClBackend {
            info,
            k,
            kv_lazy: [OnceCell::new(), OnceCell::new()],
            blk_var: Default::default(),
            blk_core: opts.block_core.unwrap_or(blk.nv_fence),
            binary_cache: opts.binary_cache.clone(),
            mmq,
            programs,
            q,
            read_queue,
            context,
            sz,
            blk,
            scratch,
            counters: buffer::Counters::default(),
            blk_repack,
            block,
            img,
            repack: Cell::new(RepackStats::default()),
            repack_logged: Cell::new((0, 0)),
            log: opts.log,
        };
        g.block_reset()?;
        Ok(g)
    }

    /// The device in use and what it can do.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Whether Q4_0 weights imported now get image planes (see [`OpenClOptions::images`]).
    pub fn image_path_on(&self) -> bool {
        self.img.is_some()
    }

    /// Whether Q4_0 matrices imported now get the block kernel's repacked copy (see
    /// [`OpenClOptions::block_repack`]).
    pub fn block_repack_on(&self) -> bool {
        self.blk_repack
    }

    /// What the image path repacked at load: tensors, extra device bytes, time.
    pub fn repack_stats(&self) -> RepackStats {
        self.repack.get()
    }

    /// Bytes copied host↔device by our code since the backend was built.
    pub fn copied_bytes(&self) -> CopyCounters {
        self.counters.get()
    }

    /// The cache-reading kernels for a cache of `dtype` (f32, f16, Q8_0; for the others
    /// a dtype error naming `op`), building that dtype's attention.cl and kv_cache.cl on
    /// its first use.
    fn kv_kernels(&self, op: &'static str, dtype: DType) -> Result<&kernels::KvKernels> {
        if dtype == DType::F32 {
            return Ok(&self.k.kv_f32);
        }
        let Some(i) = program::KV_LAZY.iter().position(|&t| t == dtype) else {
            return Err(crate::error::Error::dtype(op, "cache", dtype));
        };
        if let Some((kk, _)) = self.kv_lazy[i].get() {
            return Ok(kk);
        }
        let build = |file| {
            let dev = self.context.default_device();
            program::build_kv_family(&self.context, dev, &self.sz, self.binary_cache.as_deref(), file, dtype)
        };
        let (attention_cl, kv_cache_cl) = (build("attention.cl")?, build("kv_cache.cl")?);
        let kk = kernels::KvKernels::create(&attention_cl, &kv_cache_cl)?;
        let _ = self.kv_lazy[i].set((kk, [attention_cl, kv_cache_cl]));
        Ok(&self.kv_lazy[i].get().expect("set above").0)
    }

    /// block.cl's program, one-layer kernel and head kernel for a cache of `dtype`, the
    /// core-types build when `core` (built on first use); `None` when that dtype has no
    /// block variant or it cannot run here. The f32 cache's full build is the program
    /// built at creation.
    #[allow(clippy::type_complexity)]
    fn block_variant(
        &self,
        dtype: DType,
        core: bool,
    ) -> Result<
        Option<(
            &launch::Kern<kernels::LlamaBlocks>,
            &launch::Kern<kernels::LlamaHead>,
            &Program,
        )>,
    > {
        let core = core && self.blk_core;
        let Some(v) = block::variant_index(dtype, core) else {
            return Ok(None);
        };
        if v == 0 {
            return Ok(Some((
                &self.k.llama_blocks,
                &self.k.llama_head,
                self.programs.get("block.cl"),
            )));
        }
        let cell = &self.blk_var[v - 1];
        if cell.get().is_none() {
            let dev = self.context.default_device();
            let cache = self.binary_cache.as_deref();
            let built = match program::build_block_variant(&self.context, dev, &self.blk, cache, dtype, core)? {
                Some(p) => Some((
                    launch::Kern::create_n(&p, "llama_blocks_f32", self.blk.n_args())?,
                    launch::Kern::create(&p, "llama_head_f32")?,
                    p,
                )),
                None => None,
            };
            let _ = cell.set(built);
        }
        Ok(cell.get().expect("set above").as_ref().map(|(k, h, p)| (k, h, p)))
    }

    /// Whether the fused head kernel can run (block.cl built for its work-group and the
    /// device has local memory for a 512-float vector).
    fn head_ok(&self) -> bool {
        self.blk.fits && self.blk.max_vec >= 512
    }
}

impl Drop for OpenClBackend {
    fn drop(&mut self) {
        // Buffers read by queued kernels must outlive the queue's work (the ids staging
        // and started reads also wait for their own events when dropped).
        let _ = self.q.finish();
        let _ = self.read_queue.finish();
    }
}

impl Backend for OpenClBackend {
    type Buffer = ClBuffer;

    fn name(&self) -> &'static str {
        "opencl"
    }
    fn isa(&self) -> &'static str {
        // The kernel variant: portable OpenCL C 1.2, plus the Q4_0 image matmul when that
        // path is on, plus int8 activations when block.cl (the block kernel and the fused
        // head) was built with them
        // (fp16/subgroup variants would say so too).
        let int8 = self.blk.int8 && self.head_ok();
        // ... and the int8 prefill matmuls: `+mmq` with `dp4a`, `+mma` with tensor cores.
        let mm = self.mmq.as_ref().map_or(0, |m| if m.mma { 2 } else { 1 });
        const ISA: [[&str; 3]; 4] = [
            ["cl1.2", "cl1.2+mmq", "cl1.2+mma"],
            ["cl1.2+int8", "cl1.2+int8+mmq", "cl1.2+int8+mma"],
            ["cl1.2+img", "cl1.2+img+mmq", "cl1.2+img+mma"],
            ["cl1.2+img+int8", "cl1.2+img+int8+mmq", "cl1.2+img+int8+mma"],
        ];
        ISA[2 * self.img.is_some() as usize + int8 as usize][mm]
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
                DType::Q5_0,
                DType::Q5_1,
                DType::Q4_K,
                DType::Q5_K,
                DType::Q6_K,
            ],
            // f32 first (the default): on a GPU the cache is read from device memory at
            // full speed and f32 keeps the oracle's tolerances; f16 / q8_0 where memory
            // binds (docs/kv-cache.md, OpenCL rows).
            kv_dtypes: &[DType::F32, DType::F16, DType::Q8_0],
            unified_memory: self.info.unified_memory,
            synchronous: false,
        }
    }

    fn alloc(&self, bytes: usize, kind: BufferKind) -> Result<ClBuffer> {
        memory::alloc(self, bytes, kind)
    }

    fn import_host(&self, region: HostRegion) -> Result<ClBuffer> {
        memory::import_host(self, region)
    }

    fn import_weight(&self, region: HostRegion, dtype: DType, shape: Shape) -> Result<ClBuffer> {
        memory::import_weight(self, region, dtype, shape)
    }

    fn buffer_len(&self, buf: &ClBuffer) -> usize {
        buf.len
    }

    unsafe fn share_host_mut(
        &self,
        host: *mut u8,
        len: usize,
    ) -> Result<core::result::Result<ClBuffer, alloc::string::String>> {
        // SAFETY: the caller's promise (`Backend::share_host_mut`), passed on unchanged.
        unsafe { memory::share_host_mut(self, host, len) }
    }

    fn host_access(&self, buf: &mut ClBuffer, host: bool) -> Result<()> {
        memory::host_access(self, buf, host)
    }

    fn upload(&self, dst: &mut ClBuffer, offset: usize, src: &[u8]) -> Result<()> {
        memory::upload(self, dst, offset, src)
    }

    fn download(&self, src: &ClBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        memory::download(self, src, offset, dst)
    }

    fn download_start(&mut self, src: &ClBuffer, offset: usize, len: usize) -> Result<PendingRead> {
        memory::download_start(self, src, offset, len)
    }

    fn download_finish(&mut self, src: &ClBuffer, p: PendingRead, dst: &mut [u8]) -> Result<()> {
        memory::download_finish(self, src, p, dst)
    }

    fn reserve(&mut self, r: Reservation) -> Result<()> {
        memory::reserve(self, r)
    }

    fn synchronize(&mut self) -> Result<()> {
        self.q.finish()?;
        self.read_queue.finish().map_err(cl_err("clFinish (read queue)"))?;
        if let Some(p) = &self.q.prof {
            p.fold()?;
        }
        self.block_check_blocking()
    }

    fn copied_bytes(&self) -> crate::backend::CopiedBytes {
        let c = self.counters.get();
        crate::backend::CopiedBytes {
            to_device: c.import + c.upload,
            to_host: c.download,
        }
    }

    fn get_rows(&mut self, table: TensorRef<'_, Self>, ids: &[u32], out: TensorMut<'_, Self>) -> Result<()> {
        ops::get_rows(self, table, ids, out)
    }

    fn get_rows_at(
        &mut self,
        table: TensorRef<'_, Self>,
        idx: TensorRef<'_, Self>,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        ops::get_rows_at(self, table, idx, out)
    }

    fn matmul(&mut self, w: TensorRef<'_, Self>, x: TensorRef<'_, Self>, y: TensorMut<'_, Self>) -> Result<()> {
        if y.dtype != DType::F32 {
            // A K/V projection into an f16 / Q8_0 cache.
            return ops::matmul_into_cache(self, w, x, y);
        }
        matmul::mat(self, w, x, y, false)
    }

    fn matmul_add(
        &mut self,
        w: TensorRef<'_, Self>,
        x: TensorRef<'_, Self>,
        _tmp: TensorMut<'_, Self>,
        y: TensorMut<'_, Self>,
    ) -> Result<()> {
        matmul::mat(self, w, x, y, true)
    }

    fn rms_norm(
        &mut self,
        x: TensorRef<'_, Self>,
        w: TensorRef<'_, Self>,
        eps: f32,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        ops::rms_norm(self, x, w, eps, out)
    }

    fn rope(
        &mut self,
        x: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        pos0: usize,
        style: RopeStyle,
    ) -> Result<()> {
        ops::rope(self, x, inv_freq, pos0, style)
    }

    fn attention(
        &mut self,
        q: TensorRef<'_, Self>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
        p: AttnParams,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        ops::attention(self, q, k, v, p, out)
    }

    fn attention_mass(
        &mut self,
        q: TensorRef<'_, Self>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
        p: AttnParams,
        out: TensorMut<'_, Self>,
        mass: TensorMut<'_, Self>,
    ) -> Result<()> {
        ops::attention(self, q, k, v, p, out)?;
        ops::attention_mass(self, q, k, p, mass)
    }

    fn move_rows(&mut self, x: TensorMut<'_, Self>, src: usize, dst: usize, n: usize) -> Result<()> {
        ops::move_rows(self, x, src, dst, n)
    }

    fn rope_shift(
        &mut self,
        x: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        delta: i32,
        style: RopeStyle,
    ) -> Result<()> {
        ops::rope_shift(self, x, inv_freq, delta, style)
    }

    fn store_rows(&mut self, src: TensorRef<'_, Self>, dst: TensorMut<'_, Self>) -> Result<()> {
        ops::store_rows(self, src, dst)
    }

    fn softmax(&mut self, x: TensorMut<'_, Self>) -> Result<()> {
        ops::softmax(self, x)
    }

    fn argmax(&mut self, x: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()> {
        ops::argmax(self, x, out)
    }

    fn swiglu(&mut self, gate: TensorRef<'_, Self>, up: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()> {
        ops::swiglu(self, gate, up, out)
    }

    fn add(&mut self, dst: TensorMut<'_, Self>, src: TensorRef<'_, Self>) -> Result<()> {
        ops::add(self, dst, src)
    }

    fn rope_qk(
        &mut self,
        q: TensorMut<'_, Self>,
        k: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        pos0: usize,
        style: RopeStyle,
    ) -> Result<()> {
        ops::rope_qk(self, q, k, inv_freq, pos0, style)
    }

    fn rms_norm_matmul3(
        &mut self,
        x: TensorRef<'_, Self>,
        norm_w: TensorRef<'_, Self>,
        eps: f32,
        xn: TensorMut<'_, Self>,
        ws: [TensorRef<'_, Self>; 3],
        ys: [TensorMut<'_, Self>; 3],
    ) -> Result<()> {
        if ys.iter().any(|y| y.dtype != DType::F32) {
            // K or V into an f16 / Q8_0 cache: the norm, then three matmuls (each into
            // the cache through `matmul`'s f32 staging).
            return crate::backend::rms_norm_matmul3_composed(self, x, norm_w, eps, xn, ws, ys);
        }
        matmul::rms_norm_matmul3(self, x, norm_w, eps, xn, ws, ys)
    }

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
        matmul::rms_norm_matmul_swiglu(self, x, norm_w, eps, xn, w_gate, w_up, gate, up, out)
    }

    fn llama_block(
        &mut self,
        x: TensorMut<'_, Self>,
        w: BlockWeights<'_, Self>,
        kv: BlockKv<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        p: BlockParams,
        s: BlockScratch<'_, Self>,
    ) -> Result<()> {
        if self.block_one(&x, &w, &kv, &inv_freq, &p, &s)? {
            return Ok(());
        }
        crate::model::llama::llama_block(self, x, w, kv, inv_freq, p, s, &mut |_, _, _| {}, None)
    }

    fn llama_blocks(
        &mut self,
        x: TensorMut<'_, Self>,
        n_layer: usize,
        layer: &mut LayerVisitor<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        p: BlockParams,
        s: BlockScratch<'_, Self>,
    ) -> Result<()> {
        if self.block_all(&x, n_layer, layer, &inv_freq, &p, &s)? {
            return Ok(());
        }
        crate::backend::llama_blocks_each(self, x, n_layer, layer, inv_freq, p, s)
    }

    fn rms_norm_matmul(
        &mut self,
        x: TensorRef<'_, Self>,
        norm_w: TensorRef<'_, Self>,
        eps: f32,
        xn: TensorMut<'_, Self>,
        w: TensorRef<'_, Self>,
        mut y: TensorMut<'_, Self>,
    ) -> Result<()> {
        if self.head_try(&x, &norm_w, eps, &w, &mut y)? {
            return Ok(());
        }
        crate::backend::rms_norm_matmul_composed(self, x, norm_w, eps, xn, w, y)
    }
}
