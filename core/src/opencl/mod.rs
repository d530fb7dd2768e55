//! The OpenCL backend: every op of the [`Backend`] trait as an OpenCL C 1.2 kernel
//! (sources in the `antigravity-kernels` crate), run on one in-order command queue.
//!
//! * **Discovery** ([`device`]): one device is picked by platform/device index or a name
//!   filter; no library, platform or device is a clear [`Error::Backend`], so the caller
//!   can fall back to the CPU. Capabilities are read once ([`DeviceInfo`]) and logged.
//! * **Programs**: each kernel family (`.cl` file) is built once per backend, in
//!   [`OpenClBackend::new`], and every kernel object is created there; ops only set
//!   arguments and enqueue.
//! * **Memory** ([`ClBuffer`]): `Device` buffers are plain `CL_MEM_READ_WRITE`, `Shared`
//!   ones `CL_MEM_ALLOC_HOST_PTR`. [`Backend::import_host`] wraps the host bytes
//!   (`CL_MEM_USE_HOST_PTR`, zero-copy) when the device reports unified host memory and
//!   copies them once otherwise (discrete GPUs). Views are passed to kernels as
//!   buffer + offset arguments, never as sub-buffers (a GGUF tensor is only 32-byte
//!   aligned; sub-buffer origins must be `CL_DEVICE_MEM_BASE_ADDR_ALIGN`-aligned, 128
//!   bytes on PoCL). Every byte our code copies between host and device is counted
//!   ([`OpenClBackend::copied_bytes`]).
//! * **Asynchrony**: ops enqueue and return. [`Backend::download`] is a blocking read,
//!   which on the in-order queue orders itself after every earlier op;
//!   [`Backend::synchronize`] is `clFinish`. No op waits on the host.
//! * **Profiling** (optional, [`OpenClOptions::profiling`]): the queue records events and
//!   [`OpenClBackend::kernel_times`] sums device time per kernel name.
//!
//! Numerics: f32 everywhere, f32 accumulation. Quantized matmuls keep activations in f32
//! (the CPU backend quantizes them to Q8_0/Q8_1 first), so the two backends differ at
//! the ~1e-5 normalized-MSE level; `core/tests/opencl_conformance.rs` states every limit.

mod device;
mod image;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use opencl3::command_queue::{CommandQueue, CL_QUEUE_PROFILING_ENABLE};
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::error_codes::ClError;
use opencl3::event::Event;
use opencl3::kernel::Kernel;
use opencl3::memory::{
    Buffer, ClMem, CL_MEM_ALLOC_HOST_PTR, CL_MEM_COPY_HOST_PTR, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE,
    CL_MEM_USE_HOST_PTR,
};
use opencl3::program::Program;
use opencl3::types::{cl_mem, CL_BLOCKING, CL_NON_BLOCKING};

use crate::backend::{
    check_read, AttnParams, Backend, BlockKv, BlockParams, BlockScratch, BlockWeights, BufferKind, Capabilities,
    HostRegion, LayerVisitor, PendingRead, Reservation, RopeStyle,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::{Shape, TensorMut, TensorRef};

pub use block::StageTimes;
pub use device::{list_devices, DeviceInfo};
pub use image::RepackStats;

/// How to pick and drive the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenClOptions {
    /// Platform index (as `clinfo -l` lists them).
    pub platform: Option<usize>,
    /// Device index within the platform.
    pub device: Option<usize>,
    /// Case-insensitive substring of the platform or device name (`"nvidia"`, `"pocl"`).
    pub name_filter: Option<String>,
    /// Record an event per kernel and sum device times ([`OpenClBackend::kernel_times`]).
    pub profiling: bool,
    /// Print the chosen device and its capabilities to stderr once.
    pub log: bool,
    /// Batches of at least this many tokens use the tiled `mul_mm` kernels instead of
    /// `mul_mv`. `None`: the device default (16 on GPUs; never on CPU devices, where
    /// PoCL runs `mul_mv` 3–4× faster for 64-token batches).
    pub mm_min_tokens: Option<usize>,
    /// Work-groups of the persistent decode kernel (`block.cl`, whole layers per launch):
    /// `None` = the device default (one per compute unit on NVIDIA GPUs, off elsewhere),
    /// `Some(0)` = off (per-op kernels), `Some(n)` = `n` work-groups (tests, tuning).
    pub persistent_groups: Option<usize>,
    /// Batches of at least this many query tokens use the prefill attention kernel
    /// (K/V tiles shared by 32 query rows) when the head fits it. `None`: 16.
    pub attn_prefill_min_tokens: Option<usize>,
    /// The image weight path (`image.rs`): Q4_0 weights repacked at load into
    /// `image1d_buffer` planes, read by `mul_mv_q4_0_img_f32` in decode's `matmul` /
    /// `matmul_add`. Costs a copy of every Q4_0 matrix (reported by
    /// [`OpenClBackend::repack_stats`]). `None`: on for Qualcomm/Adreno GPUs with
    /// `image1d_buffer` support, off elsewhere; `Some(true)` / `Some(false)` force it
    /// (forced on, a device that cannot run it says why and keeps the buffer kernels).
    pub images: Option<bool>,
    /// Caps the texels of one image below the device's `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE`
    /// (tests of the too-large fallback; tuning). `None`: the device's limit.
    pub image_max_texels: Option<u64>,
}

impl OpenClOptions {
    /// Options from the environment: `ANTIGRAVITY_OPENCL_DEVICE` is either
    /// `platform:device` indices or a name filter; `ANTIGRAVITY_OPENCL_PROFILE=1` turns
    /// profiling on; `ANTIGRAVITY_OPENCL_BLOCK` sets [`OpenClOptions::persistent_groups`];
    /// `ANTIGRAVITY_OPENCL_IMAGES=1|0` sets [`OpenClOptions::images`].
    /// Unset variables leave the defaults.
    pub fn from_env() -> OpenClOptions {
        let mut o = OpenClOptions::default();
        if let Ok(v) = std::env::var("ANTIGRAVITY_OPENCL_DEVICE") {
            let idx = v
                .split_once(':')
                .and_then(|(p, d)| Some((p.trim().parse().ok()?, d.trim().parse().ok()?)));
            match idx {
                Some((p, d)) => {
                    o.platform = Some(p);
                    o.device = Some(d);
                }
                None if !v.trim().is_empty() => o.name_filter = Some(v.trim().to_string()),
                None => {}
            }
        }
        o.profiling = std::env::var("ANTIGRAVITY_OPENCL_PROFILE").is_ok_and(|v| v == "1");
        // ANTIGRAVITY_OPENCL_BLOCK: 0 = per-op decode kernels, n = n work-groups.
        if let Ok(v) = std::env::var("ANTIGRAVITY_OPENCL_BLOCK") {
            o.persistent_groups = v.trim().parse().ok();
        }
        if let Ok(v) = std::env::var("ANTIGRAVITY_OPENCL_IMAGES") {
            o.images = match v.trim() {
                "1" => Some(true),
                "0" => Some(false),
                _ => None,
            };
        }
        o
    }
}

/// Bytes our code moved between host and device, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyCounters {
    /// Copies made by `import_host` (weights on a device without unified memory).
    pub import: u64,
    /// `upload` calls plus op inputs that come from the host (token ids).
    pub upload: u64,
    /// `download` calls.
    pub download: u64,
}

/// How a [`ClBuffer`]'s memory came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClMemKind {
    /// `alloc(.., Device)`: device memory.
    Device,
    /// `alloc(.., Shared)`: `CL_MEM_ALLOC_HOST_PTR`, host-visible.
    Shared,
    /// `import_host` on a unified-memory device: `CL_MEM_USE_HOST_PTR` over the host
    /// bytes themselves (zero-copy, read-only).
    HostZeroCopy,
    /// `import_host` on a discrete device: copied once at import (read-only).
    HostCopied,
}

/// An OpenCL buffer: the `cl_mem`, its length and where it lives.
pub struct ClBuffer {
    // Field order matters: `mem` is released before `host`, whose bytes it may wrap.
    mem: Buffer<u8>,
    len: usize,
    kind: ClMemKind,
    /// For `HostZeroCopy`: keeps the wrapped host bytes alive, and the queue that may
    /// still read them (finished on drop before the bytes can go away).
    host: Option<(HostRegion, Arc<CommandQueue>)>,
    /// A Q4_0 weight's repacked image planes (`import_weight` with the image path on).
    img: Option<Box<image::ImgWeight>>,
}

impl ClBuffer {
    pub fn kind(&self) -> ClMemKind {
        self.kind
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Device bytes of the repacked image planes kept beside this weight (0: none, the
    /// buffer kernels read it).
    pub fn repacked_bytes(&self) -> usize {
        self.img.as_ref().map_or(0, |i| i.bytes)
    }
    fn read_only(&self) -> bool {
        matches!(self.kind, ClMemKind::HostZeroCopy | ClMemKind::HostCopied)
    }
    fn mem(&self) -> cl_mem {
        self.mem.get()
    }
}

impl Drop for ClBuffer {
    fn drop(&mut self) {
        if let Some((_, queue)) = &self.host {
            // Kernels still queued may read the wrapped host bytes; let them finish
            // before the region (e.g. the model's mmap) can be unmapped.
            let _ = queue.finish();
        }
    }
}

impl core::fmt::Debug for ClBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ClBuffer({} bytes, {:?})", self.len, self.kind)
    }
}

pub(crate) fn cl_err(what: &'static str) -> impl Fn(ClError) -> Error {
    move |e| Error::Backend {
        backend: "opencl",
        msg: format!("{what}: {e}"),
    }
}

/// Work-group size of the reduction kernels (norm, softmax, attention).
const LWS_MAX: usize = 64;
/// Work-group size of the matmul kernels on GPUs (a warp; a 576-wide Q4 row has 36
/// half-block units).
const MV_LWS_GPU: usize = 32;
/// … and on CPU devices (PoCL): fewer work-items per row means fewer barrier-split
/// loops; 8 measured ~2× faster than 32 for SmolLM2 decode on PoCL 3.1 (AVX-512 host).
const MV_LWS_CPU: usize = 8;
/// Tokens per matmul work-group (each weight row is read once per NT tokens).
const NT: usize = 4;
/// Largest attention head the kernel's local memory is sized for.
const MAX_HD: usize = 256;

/// Every kernel: (name, family file). Index = slot in `OpenClBackend::kernels`.
/// The last entry, the image kernel, is built only when the image path is on (image.rs).
const KERNELS: [(&str, &str); 46] = [
    ("add_f32", "add.cl"),
    ("silu_mul_f32", "silu_mul.cl"),
    ("rms_norm_f32", "rms_norm.cl"),
    ("softmax_f32", "softmax.cl"),
    ("rope_f32", "rope.cl"),
    ("attention_f32", "attention.cl"),
    ("get_rows_f32", "get_rows.cl"),
    ("get_rows_f16", "get_rows.cl"),
    ("get_rows_bf16", "get_rows.cl"),
    ("get_rows_q4_0", "get_rows.cl"),
    ("get_rows_q4_1", "get_rows.cl"),
    ("get_rows_q8_0", "get_rows.cl"),
    ("mul_mv_f32_f32", "mul_mv_f32_f32.cl"),
    ("mul_mv_f16_f32", "mul_mv_f16_f32.cl"),
    ("mul_mv_bf16_f32", "mul_mv_bf16_f32.cl"),
    ("mul_mv_q4_0_f32", "mul_mv_q4_0_f32.cl"),
    ("mul_mv_q4_1_f32", "mul_mv_q4_1_f32.cl"),
    ("mul_mv_q8_0_f32", "mul_mv_q8_0_f32.cl"),
    ("attention_combine_f32", "attention.cl"),
    ("mul_mm_f32_f32", "mul_mm.cl"),
    ("mul_mm_f16_f32", "mul_mm.cl"),
    ("mul_mm_bf16_f32", "mul_mm.cl"),
    ("mul_mm_q4_0_f32", "mul_mm.cl"),
    ("mul_mm_q4_1_f32", "mul_mm.cl"),
    ("mul_mm_q8_0_f32", "mul_mm.cl"),
    ("rope_qk_f32", "rope.cl"),
    ("mul_mv3_q4_0_f32", "mul_mv_fused.cl"),
    ("mul_mv3_q4_1_f32", "mul_mv_fused.cl"),
    ("mul_mv3_q8_0_f32", "mul_mv_fused.cl"),
    ("mul_mv_swiglu_q4_0_f32", "mul_mv_fused.cl"),
    ("mul_mv_swiglu_q4_1_f32", "mul_mv_fused.cl"),
    ("mul_mv_swiglu_q8_0_f32", "mul_mv_fused.cl"),
    ("attention_prefill_f32", "attention.cl"),
    ("mul_mm3_q4_0_f32", "mul_mm.cl"),
    ("mul_mm3_q4_1_f32", "mul_mm.cl"),
    ("mul_mm3_q8_0_f32", "mul_mm.cl"),
    ("mul_mm_swiglu_q4_0_f32", "mul_mm.cl"),
    ("mul_mm_swiglu_q4_1_f32", "mul_mm.cl"),
    ("mul_mm_swiglu_q8_0_f32", "mul_mm.cl"),
    ("mul_mm_reduce_f32", "mul_mm.cl"),
    ("llama_blocks_f32", "block.cl"),
    ("llama_head_f32", "block.cl"),
    ("argmax_f32", "softmax.cl"),
    ("argmax_part_f32", "softmax.cl"),
    ("argmax_final_f32", "softmax.cl"),
    ("mul_mv_q4_0_img_f32", "mul_mv_q4_0_img_f32.cl"),
];
const K_ADD: usize = 0;
const K_SILU_MUL: usize = 1;
const K_RMS_NORM: usize = 2;
const K_SOFTMAX: usize = 3;
const K_ROPE: usize = 4;
const K_ATTENTION: usize = 5;
const K_GET_ROWS: usize = 6;
const K_MUL_MV: usize = 12;
const K_ATTN_COMBINE: usize = 18;
const K_MUL_MM: usize = 19;
const K_ROPE_QK: usize = 25;
const K_MUL_MV3: usize = 26;
const K_MUL_MV_SWIGLU: usize = 29;
const K_ATTN_PREFILL: usize = 32;
const K_MUL_MM3: usize = 33;
const K_MUL_MM_SWIGLU: usize = 36;
const K_MM_REDUCE: usize = 39;
const K_BLOCK: usize = 40;
const K_HEAD: usize = 41;
const K_ARGMAX: usize = 42;
const K_ARGMAX_PART: usize = 43;
const K_ARGMAX_FINAL: usize = 44;
const K_MUL_MV_IMG: usize = 45;
/// Two-pass argmax: rows longer than this take argmax_part + argmax_final, in pieces of
/// `ARGMAX_CHUNK` elements (at most `ARGMAX_MAX_PARTS` a row: the partials scratch).
const ARGMAX_TWO_PASS: usize = 4096;
const ARGMAX_CHUNK: usize = 1024;
const ARGMAX_MAX_PARTS: usize = 256;
/// Work-group size of block.cl's kernels, where the device and the compiled kernel allow
/// it (512 measured 0–5 % faster than 256 on the H100; 1024 much slower).
const BLOCK_LWS: usize = 512;
/// Largest vector block.cl stages in local memory (floats).
const BLOCK_MAX_VEC: usize = 8192;
/// Flush the queue after this many enqueued kernels, so the device starts on a token's
/// first layers while the host still enqueues the last ones (NVIDIA's driver otherwise
/// holds the work until the blocking logits read).
const FLUSH_EVERY: u32 = 16;
/// The tiled prefill matmul (mul_mm.cl) runs 16 × 16 work-items per group, each group
/// a tile of `MM_ROWS` output rows × `MM_TOKS` tokens, and is used
/// on GPUs from this many tokens on (below it, mul_mv's 4-token tiles are as good) —
/// a guess until measured on a GPU (`decode_profile_smollm2_shapes` prints both).
const MM_LWS: usize = 16;
const MM_ROWS: usize = 64;
const MM_TOKS: usize = 32;
/// Reduction elements per step (mul_mm.cl's TK: one quant block).
const MM_K: usize = 32;
const MM_MIN_TOK: usize = 16;
/// Split-K for `mul_mm`: a matmul with fewer than `MM_SPLIT_MIN_GROUPS` output tiles
/// (SmolLM2's 576-row O and down projections at 512 tokens have 144: about one per SM of
/// a 132-SM H100/H200, too few warps to hide the loads) cuts its reduction into up to
/// `MM_SPLIT_MAX` pieces of at least `MM_SPLIT_MIN_STEPS` 32-element steps; the partial
/// tiles go to scratch reserved by `reserve` and `mul_mm_reduce_f32` sums them.
const MM_SPLIT_MIN_GROUPS: usize = 256;
const MM_SPLIT_MAX: usize = 4;
const MM_SPLIT_MIN_STEPS: usize = 4;

/// Prefill attention (`attention_prefill_f32`, attention.cl): batches of at least
/// `ATTN_PREFILL_MIN_TOK` query tokens (default of [`OpenClOptions::attn_prefill_min_tokens`]) with heads of at most `ATTN_PREFILL_HD` take it;
/// its work-groups are `ATTN_PREFILL_LWS` wide and hold `ATTN_PREFILL_LOCAL` bytes of
/// local memory (the kernel's PLWS, PHD and its local arrays).
const ATTN_PREFILL_MIN_TOK: usize = 16;
const ATTN_PREFILL_HD: usize = 64;
const ATTN_PREFILL_LWS: usize = 128;
const ATTN_PREFILL_ROWS: usize = 32;
const ATTN_PREFILL_LOCAL: u64 = 30_848;

/// Split-context attention (see attention.cl): used when a batch has at most this many
/// query tokens …
const SPLIT_MAX_TOK: usize = 4;
/// … and more context than this many slots (the smallest chunk)…
const SPLIT_MIN_CHUNK: usize = 256;
/// … in at most this many chunks (bounds the partials scratch reserved by `reserve`).
const SPLIT_MAX_CHUNKS: usize = 32;

/// Offset of a weight dtype inside the get_rows / mul_mv kernel groups.
fn weight_slot(dtype: DType) -> Option<usize> {
    Some(match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::Q4_0 => 3,
        DType::Q4_1 => 4,
        DType::Q8_0 => 5,
        DType::Q8_1 => return None,
    })
}

/// Offset of a weight dtype inside the fused mul_mv kernel groups (`mul_mv_fused.cl`).
fn fused_slot(dtype: DType) -> Option<usize> {
    Some(match dtype {
        DType::Q4_0 => 0,
        DType::Q4_1 => 1,
        DType::Q8_0 => 2,
        _ => return None,
    })
}

/// The OpenCL backend. See the module docs.
pub struct OpenClBackend {
    info: DeviceInfo,
    // Drop order: kernels and programs before the queue and context.
    kernels: Vec<Kernel>,
    _programs: Vec<Program>,
    queue: Arc<CommandQueue>,
    /// Started downloads (`download_start`) run here, after a marker of `queue`: a
    /// device-to-host copy in the compute queue would hold the next step's kernels
    /// behind it (~0.1 ms a token on NVIDIA for two 4-byte reads).
    read_queue: CommandQueue,
    context: Context,
    lws: usize,
    mv_lws: usize,
    /// Smallest batch that takes mul_mm (usize::MAX when the device cannot run it).
    mm_min_tok: usize,
    /// Smallest batch that takes attention_prefill_f32 (usize::MAX: never).
    attn_prefill_min_tok: usize,
    /// Token ids of a multi-token get_rows: device copy and its host staging area (kept
    /// unchanged until `ids_event`, the non-blocking write from it, has completed).
    ids: Buffer<u8>,
    ids_cap: usize,
    ids_host: Vec<u32>,
    ids_event: Option<Event>,
    /// Split-attention partials: (m, l, o[hd]) per (token, head, chunk); `part_cap` f32s.
    part: Buffer<u8>,
    part_cap: usize,
    /// Split-K matmul partials: [split, n_tok, n_out]; `mm_part_cap` f32s.
    mm_part: Buffer<u8>,
    mm_part_cap: usize,
    counters: Counters,
    profiling: bool,
    /// Kernel events not yet folded into `times` (profiling only).
    pending: RefCell<Vec<(u16, Event)>>,
    /// Per kernel slot: (device ns, launches).
    times: RefCell<Vec<(u64, u32)>>,
    /// Per kernel slot: device idle ns before its launches; end of the last folded one.
    gaps: RefCell<Vec<u64>>,
    last_end: core::cell::Cell<u64>,
    /// The loaded OpenCL library, for the event-less enqueue.
    rt: &'static cl3::OpenClRuntime,
    /// Kernels enqueued since the last flush.
    unflushed: core::cell::Cell<u32>,
    /// The persistent block path (None: off).
    block: Option<block::Persistent>,
    /// block.cl's work-group size and staged-vector capacity (floats).
    blk_lws: usize,
    /// How block.cl was built (for logs and profiles).
    blk_desc: String,
    /// Layers per block launch (block.cl `LPL`).
    blk_lpl: usize,
    /// Attention chunk in cache slots (block.cl `CH`).
    blk_ch: usize,
    /// Index of block.cl's program in `_programs` (for per-group kernel objects).
    block_program: usize,
    max_vec: usize,
    /// block.cl built (the head kernel is usable).
    head_ok: bool,
    /// Output rows per work-group of the head kernel.
    head_rows: usize,
    /// Work-group size of the argmax kernels.
    argmax_lws: usize,
    /// Two-pass argmax partials: (max, index bits) per piece; `argmax_part_cap` f32s.
    argmax_part: Buffer<u8>,
    argmax_part_cap: usize,
    /// Downloads in flight (`download_start`), by ticket. Boxed, so a slot's bytes (its
    /// inline `status` too) stay put while a non-blocking read fills them, even when the
    /// list grows; reused, so a decode step allocates nothing.
    #[allow(clippy::vec_box)]
    reads: Vec<Box<ReadSlot>>,
    /// The image weight path (None: off, or turned off after a failed launch).
    img: Option<image::ImgPath>,
    /// What `import_weight` repacked so far, and the tensor count last logged.
    repack: core::cell::Cell<RepackStats>,
    repack_logged: core::cell::Cell<u32>,
}

/// One started download: the bytes, the block-kernel status read with them (when a
/// block launch ran since the last check), and the read's event.
#[derive(Default)]
struct ReadSlot {
    data: Vec<u8>,
    status: [u8; 4],
    checks_block: bool,
    event: Option<Event>,
}

#[derive(Default)]
struct Counters {
    import: AtomicU64,
    upload: AtomicU64,
    download: AtomicU64,
}

impl OpenClBackend {
    /// Opens the device `opts` names (or the first GPU, else the first device) and builds
    /// every kernel. An [`Error::Backend`] when there is no OpenCL library, platform or
    /// matching device, or a kernel fails to build (with the build log).
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
        let queue = match CommandQueue::create_default_with_properties(&context, props, 0) {
            Ok(q) => q,
            // OpenCL 1.2 drivers lack clCreateCommandQueueWithProperties.
            #[allow(deprecated)]
            Err(_) => CommandQueue::create_default(&context, props).map_err(cl_err("clCreateCommandQueue"))?,
        };
        let read_queue = match CommandQueue::create_default_with_properties(&context, 0, 0) {
            Ok(q) => q,
            #[allow(deprecated)]
            Err(_) => CommandQueue::create_default(&context, 0).map_err(cl_err("clCreateCommandQueue"))?,
        };

        let pow2_floor = |n: usize| {
            if n == 0 {
                1
            } else {
                1usize << (usize::BITS - 1 - n.leading_zeros())
            }
        };
        let lws = LWS_MAX.min(pow2_floor(info.max_work_group));
        // Tuning override (power of two, ≤ lws) for kernel work; not a user setting.
        let mv_lws = std::env::var("ANTIGRAVITY_OPENCL_MV_LWS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|v| v.is_power_of_two())
            .unwrap_or(if info.is_cpu { MV_LWS_CPU } else { MV_LWS_GPU })
            .min(lws);
        let mm_min_tok = match opts.mm_min_tokens {
            _ if info.max_work_group < MM_LWS * MM_LWS => usize::MAX,
            Some(n) => n.max(1),
            None if info.is_cpu => usize::MAX,
            None => MM_MIN_TOK,
        };
        let attn_prefill_min_tok = if info.max_work_group >= ATTN_PREFILL_LWS && info.local_mem >= ATTN_PREFILL_LOCAL {
            opts.attn_prefill_min_tokens.unwrap_or(ATTN_PREFILL_MIN_TOK).max(1)
        } else {
            usize::MAX
        };
        if info.local_mem < ((MAX_HD + 2 * lws) * 4) as u64 {
            return Err(Error::Backend {
                backend: "opencl",
                msg: format!("{}: {} bytes of local memory is too little", info.name, info.local_mem),
            });
        }

        // block.cl: 512 work-items where the device (and, checked below, the compiled
        // kernel) allows; the staged vector gets the local memory its reduction arrays
        // leave.
        let mut blk_lws = std::env::var("ANTIGRAVITY_OPENCL_BLOCK_LWS") // tuning override
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|v| v.is_power_of_two())
            .unwrap_or(BLOCK_LWS)
            .min(pow2_floor(info.max_work_group))
            .max(64);
        let max_vec =
            (((info.local_mem as usize) / 4).saturating_sub(3 * blk_lws + MAX_HD + 64) / 32 * 32).min(BLOCK_MAX_VEC);
        // NVIDIA: the grid barrier's fence must be `membar.gl` (inline PTX); if the
        // compiler refuses it, the persistent path stays off (the head kernel still works).
        let nv_fence = info.vendor.to_ascii_lowercase().contains("nvidia");
        // ... and its reductions use warp shuffles (PTX `shfl.sync`), unless
        // ANTIGRAVITY_OPENCL_BLOCK_SHFL=0 (for comparing the two).
        let mut nv_shfl = nv_fence && std::env::var("ANTIGRAVITY_OPENCL_BLOCK_SHFL").map_or(true, |v| v != "0");
        let blk_ch = std::env::var("ANTIGRAVITY_OPENCL_BLOCK_CH") // tuning override
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|v| v.is_power_of_two() && (16..=256).contains(v))
            .unwrap_or(block::BLOCK_CH);
        // Layers per block launch: as many parameter sets (~210 bytes each, ~170 shared)
        // as the device's kernel-parameter space holds, up to 4.
        // CPU devices (PoCL, where the path is only for tests) take one: PoCL compiles
        // the multi-layer kernel's barriers-in-a-loop for ~10 minutes.
        let blk_lpl = match info.max_parameter_size {
            _ if info.is_cpu => 1,
            n if n >= 2048 => 4,
            n if n >= 768 => 2,
            _ => 1,
        };
        let mut fence_ok = true;
        let mut block_ok = true;
        // Extra block.cl build options for kernel experiments (ANTIGRAVITY_OPENCL_BLOCK_DEFINES,
        // e.g. "-DAG_NV_PLAIN_BARRIER"); the block kernel's private (spill) bytes, for the
        // description.
        let blk_defines = std::env::var("ANTIGRAVITY_OPENCL_BLOCK_DEFINES").unwrap_or_default();
        let mut blk_private = 0u64;

        let mut programs: Vec<(&'static str, Program)> = Vec::new();
        let mut kernels = Vec::with_capacity(KERNELS.len());
        for (name, file) in KERNELS[..K_MUL_MV_IMG].iter().copied() {
            if !programs.iter().any(|(f, _)| *f == file) {
                let program = if file == "block.cl" {
                    // Built for a work-group size, then checked against what the compiled
                    // kernels allow (registers: 512 work-items may not fit); rebuilt smaller
                    // when they do not.
                    loop {
                        let options = format!(
                            "-cl-std=CL1.2 -DLWS={blk_lws} -DMAX_HD={MAX_HD} -DCH={} -DLPL={blk_lpl}",
                            blk_ch.min(blk_lws) // (a chunk's slots are work-items of stage B)
                        );
                        let options = format!("{options} {blk_defines}");
                        let with_fence = format!("{options} -DAG_NV_FENCE");
                        let with_shfl = format!("{with_fence} -DAG_NV_SHFL");
                        let fenced = nv_fence && fence_ok;
                        let first = match (fenced, nv_shfl) {
                            (true, true) => &with_shfl,
                            (true, false) => &with_fence,
                            _ => &options,
                        };
                        let program = match build_program(&context, id, file, first) {
                            Ok(p) => p,
                            // Warp shuffles refused: the same kernel with local-memory
                            // reductions.
                            Err(e) if fenced && nv_shfl => {
                                if opts.log {
                                    std::eprintln!(
                                        "opencl: block.cl with shfl.sync failed, reducing in local memory: {e}"
                                    );
                                }
                                nv_shfl = false;
                                continue;
                            }
                            Err(e) if fenced => {
                                if opts.log {
                                    std::eprintln!("opencl: block.cl with membar.gl failed, persistent path off: {e}");
                                }
                                fence_ok = false;
                                build_program(&context, id, file, &options)?
                            }
                            Err(e) => return Err(e),
                        };
                        let mut fits = usize::MAX;
                        for k in ["llama_blocks_f32", "llama_head_f32"] {
                            let kernel = Kernel::create(&program, k).map_err(cl_err("clCreateKernel (block.cl)"))?;
                            fits = fits.min(
                                kernel
                                    .get_work_group_size(id)
                                    .map_err(cl_err("kernel work-group size"))?,
                            );
                            if k == "llama_blocks_f32" {
                                blk_private = kernel.get_private_mem_size(id).unwrap_or(0);
                            }
                        }
                        if fits >= blk_lws || blk_lws <= 64 {
                            // Not even 64 work-items: the block kernels stay unused.
                            block_ok = fits >= blk_lws;
                            break program;
                        }
                        blk_lws = pow2_floor(fits).max(64);
                    }
                } else {
                    let group_lws = if file.starts_with("mul_mv") { mv_lws } else { lws };
                    let options = format!("-cl-std=CL1.2 -DLWS={group_lws} -DNT={NT} -DMAX_HD={MAX_HD}");
                    build_program(&context, id, file, &options)?
                };
                programs.push((file, program));
            }
            let program = &programs.iter().find(|(f, _)| *f == file).expect("built above").1;
            kernels.push(Kernel::create(program, name).map_err(|e| Error::Backend {
                backend: "opencl",
                msg: format!("clCreateKernel {name} ({file}): {e}"),
            })?);
        }

        // The chunk the kernel was built with (at most its work-group size).
        let blk_ch = blk_ch.min(blk_lws);

        // argmax: as wide as the compiled kernel allows, up to 512 (a power of two).
        let argmax_lws = kernels[K_ARGMAX]
            .get_work_group_size(id)
            .map_err(cl_err("kernel work-group size"))?
            .clamp(1, 512);
        let argmax_lws = pow2_floor(argmax_lws);

        let rt = cl3::load_library().as_ref().map_err(|e| Error::Backend {
            backend: "opencl",
            msg: format!("loading the OpenCL library: {e}"),
        })?;
        let ids = create_buffer(&context, CL_MEM_READ_ONLY, 4, ptr::null_mut())?;
        let part = create_buffer(&context, CL_MEM_READ_WRITE, 4, ptr::null_mut())?;
        let mm_part = create_buffer(&context, CL_MEM_READ_WRITE, 4, ptr::null_mut())?;
        // On by default where the grid barrier's memory ordering is verified: NVIDIA
        // GPUs (PTX release/acquire at GPU scope). Elsewhere only when asked for.
        let groups = match opts.persistent_groups {
            None if info.is_cpu || !nv_fence => 0,
            None => info.compute_units as usize,
            Some(n) => n,
        };
        let block = if groups > 0 && fence_ok && block_ok && max_vec >= 512 {
            Some(block::Persistent::new(&context, groups, info.is_cpu)?)
        } else {
            None
        };
        let blk_desc = format!(
            "{blk_lws} work-items, {blk_lpl} layers a launch, {blk_ch}-slot chunks, {}, {blk_private} B private{}",
            if fence_ok && nv_fence && nv_shfl {
                "warp shuffles"
            } else {
                "local-memory reductions"
            },
            if blk_defines.is_empty() {
                String::new()
            } else {
                format!(", built with {blk_defines}")
            },
        );
        if opts.log {
            match &block {
                Some(b) => std::eprintln!(
                    "opencl: decode runs the persistent block kernel: {} work-groups of {blk_desc}",
                    b.groups
                ),
                None => std::eprintln!("opencl: decode runs per-op kernels"),
            }
        }
        let argmax_part = create_buffer(&context, CL_MEM_READ_WRITE, 4, ptr::null_mut())?;
        let img = image::ImgPath::build(&context, id, &info, &opts);
        let g = OpenClBackend {
            info,
            kernels,
            block_program: programs
                .iter()
                .position(|(f, _)| *f == "block.cl")
                .expect("block.cl is built"),
            _programs: programs.into_iter().map(|(_, p)| p).collect(),
            queue: Arc::new(queue),
            read_queue,
            context,
            lws,
            mv_lws,
            mm_min_tok,
            attn_prefill_min_tok,
            ids,
            ids_cap: 1,
            ids_host: vec![0; 1],
            ids_event: None,
            reads: Vec::new(),
            part,
            part_cap: 0,
            mm_part,
            mm_part_cap: 0,
            counters: Counters::default(),
            profiling: opts.profiling,
            pending: RefCell::new(Vec::new()),
            times: RefCell::new(vec![(0, 0); KERNELS.len()]),
            gaps: RefCell::new(vec![0; KERNELS.len()]),
            last_end: core::cell::Cell::new(0),
            rt,
            unflushed: core::cell::Cell::new(0),
            block,
            blk_lws,
            blk_desc,
            blk_lpl,
            blk_ch,
            max_vec,
            head_ok: block_ok && max_vec >= 512,
            argmax_lws,
            argmax_part,
            argmax_part_cap: 0,
            // Tuning override (not a user setting), like ANTIGRAVITY_OPENCL_MV_LWS.
            head_rows: std::env::var("ANTIGRAVITY_OPENCL_HEAD_ROWS")
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&v| v > 0)
                .unwrap_or(block::HEAD_ROWS_PER_WG),
            img,
            repack: core::cell::Cell::new(RepackStats::default()),
            repack_logged: core::cell::Cell::new(0),
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

    /// What the image path repacked at load: tensors, extra device bytes, time.
    pub fn repack_stats(&self) -> RepackStats {
        self.repack.get()
    }

    /// Bytes copied host↔device by our code since the backend was built.
    pub fn copied_bytes(&self) -> CopyCounters {
        CopyCounters {
            import: self.counters.import.load(Ordering::Relaxed),
            upload: self.counters.upload.load(Ordering::Relaxed),
            download: self.counters.download.load(Ordering::Relaxed),
        }
    }

    /// Device time per kernel since the last reset: `(kernel name, total ns, launches)`
    /// for every kernel launched at least once, longest first. Waits for the queue.
    /// Empty unless built with [`OpenClOptions::profiling`].
    pub fn kernel_times(&self) -> Result<Vec<(String, u64, u32)>> {
        self.queue.finish().map_err(cl_err("clFinish"))?;
        self.fold_events()?;
        let mut v: Vec<_> = self
            .times
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(i, &(ns, n))| (KERNELS[i].0.to_string(), ns, n))
            .collect();
        v.sort_by_key(|t| core::cmp::Reverse(t.1));
        Ok(v)
    }

    /// Zeroes the kernel times (pending events are dropped after the queue finishes).
    pub fn reset_kernel_times(&self) -> Result<()> {
        self.queue.finish().map_err(cl_err("clFinish"))?;
        self.pending.borrow_mut().clear();
        self.times.borrow_mut().iter_mut().for_each(|t| *t = (0, 0));
        self.gaps.borrow_mut().iter_mut().for_each(|g| *g = 0);
        self.last_end.set(0);
        Ok(())
    }

    fn fold_events(&self) -> Result<()> {
        let mut times = self.times.borrow_mut();
        let mut gaps = self.gaps.borrow_mut();
        for (slot, ev) in self.pending.borrow_mut().drain(..) {
            let start = ev.profiling_command_start().map_err(cl_err("event profiling start"))?;
            let end = ev.profiling_command_end().map_err(cl_err("event profiling end"))?;
            let t = &mut times[slot as usize];
            t.0 += end.saturating_sub(start);
            t.1 += 1;
            // In-order queue: kernels run in enqueue order; the device idled between the
            // previous kernel's end and this one's start.
            let last = self.last_end.get();
            if last != 0 {
                gaps[slot as usize] += start.saturating_sub(last);
            }
            self.last_end.set(end);
        }
        Ok(())
    }

    /// Device idle time before each kernel since the last reset (profiling only): the gap
    /// between the previous kernel's end and this kernel's start, summed per kernel name —
    /// what the kernel times leave unexplained (launch latency, host round trips).
    pub fn kernel_gaps(&self) -> Result<Vec<(String, u64)>> {
        self.queue.finish().map_err(cl_err("clFinish"))?;
        self.fold_events()?;
        Ok(self
            .gaps
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, &ns)| ns > 0)
            .map(|(i, &ns)| (KERNELS[i].0.to_string(), ns))
            .collect())
    }

    /// Enqueues kernel `slot` (its arguments already set) over `gws` / `lws` (1 to 3 dims).
    /// Without profiling no event is asked for (creating and releasing one per launch
    /// is measurable host time); every [`FLUSH_EVERY`] launches the queue is flushed.
    fn launch(&self, slot: usize, gws: &[usize], lws: Option<&[usize]>) -> Result<()> {
        self.launch_kernel(&self.kernels[slot], slot, gws, lws)
    }

    /// [`OpenClBackend::launch`] of another kernel object of slot `slot`'s kernel (the
    /// block path keeps one per layer group, arguments left set between tokens).
    fn launch_kernel(&self, k: &Kernel, slot: usize, gws: &[usize], lws: Option<&[usize]>) -> Result<()> {
        let err = |e: i32| Error::Backend {
            backend: "opencl",
            msg: format!("enqueue {}: {}", KERNELS[slot].0, ClError(e)),
        };
        if self.profiling {
            // SAFETY: the kernel's arguments were all set by the caller (each op sets every
            // argument its kernel declares) to live buffers and scalars of the kernel's
            // types; `gws`/`lws` have the same length (the work dimension), and the
            // buffers a kernel reads or writes stay alive until it finishes (ClBuffer
            // drops wait for imports; other cl_mems are reference-counted by the driver).
            let ev = unsafe {
                self.queue.enqueue_nd_range_kernel(
                    k.get(),
                    gws.len() as u32,
                    ptr::null(),
                    gws.as_ptr(),
                    lws.map_or(ptr::null(), |l| l.as_ptr()),
                    &[],
                )
            }
            .map_err(|e| err(e.0))?;
            self.pending.borrow_mut().push((slot as u16, ev));
            return Ok(());
        }
        // The same call as above with a null event pointer (the same safety argument:
        // arguments set, live buffers, gws/lws of the work dimension's length; cl3 types
        // the entry point as a safe fn pointer).
        let status = self
            .rt
            .clEnqueueNDRangeKernel(
                self.queue.get(),
                k.get(),
                gws.len() as u32,
                ptr::null(),
                gws.as_ptr(),
                lws.map_or(ptr::null(), |l| l.as_ptr()),
                0,
                ptr::null(),
                ptr::null_mut(),
            )
            .ok_or_else(|| err(cl3::error_codes::DLOPEN_FUNCTION_NOT_AVAILABLE))?;
        if status != 0 {
            return Err(err(status));
        }
        let n = self.unflushed.get() + 1;
        if n >= FLUSH_EVERY {
            self.queue.flush().map_err(cl_err("clFlush"))?;
            self.unflushed.set(0);
        } else {
            self.unflushed.set(n);
        }
        Ok(())
    }
}

impl Drop for OpenClBackend {
    fn drop(&mut self) {
        // The staging area of a pending ids write and buffers read by queued kernels must
        // outlive the queue's work.
        let _ = self.queue.finish();
        let _ = self.read_queue.finish();
    }
}

fn build_program(context: &Context, dev: opencl3::types::cl_device_id, file: &str, options: &str) -> Result<Program> {
    let (src, _) = antigravity_kernels::source(file)
        .ok_or_else(|| Error::invalid(format!("unknown kernel family {file}")))?
        .map_err(|e| Error::Backend {
            backend: "opencl",
            msg: format!("reading kernel source: {e}"),
        })?;
    let mut program = Program::create_from_source(context, &src).map_err(cl_err("clCreateProgramWithSource"))?;
    if let Err(e) = program.build(&[dev], options) {
        let log = program.get_build_log(dev).unwrap_or_default();
        return Err(Error::Backend {
            backend: "opencl",
            msg: format!("building {file} ({options}): {e}\n{log}"),
        });
    }
    Ok(program)
}

fn create_buffer(context: &Context, flags: u64, bytes: usize, host: *mut c_void) -> Result<Buffer<u8>> {
    // SAFETY: `host` is null (flags without *_HOST_PTR) or points to at least `bytes`
    // readable bytes that outlive the buffer (the callers keep their HostRegion in the
    // ClBuffer). clCreateBuffer rejects size 0, so at least one byte is asked for.
    unsafe { Buffer::<u8>::create(context, flags, bytes.max(1), host) }.map_err(|e| Error::Backend {
        backend: "opencl",
        msg: format!("clCreateBuffer of {bytes} bytes: {e}"),
    })
}

/// Sets kernel arguments in order (from index 0, or `start`); evaluates to the next
/// index.
macro_rules! args {
    ($k:expr; $($a:expr),+ $(,)?) => {
        args!($k, 0u32; $($a),+)
    };
    ($k:expr, $start:expr; $($a:expr),+ $(,)?) => {{
        let k: &Kernel = $k;
        let mut i: u32 = $start;
        $(
            // SAFETY: every value passed is a `cl_mem` handle of a live buffer or a plain
            // scalar (`u32`, `i32`, `u64`, `f32`) whose size and type match the kernel's
            // parameter at index `i` (the kernel signatures in kernels/cl are the
            // reference; the conformance test exercises every one).
            unsafe { k.set_arg(i, &$a) }.map_err(|e| Error::Backend {
                backend: "opencl",
                msg: alloc::format!("clSetKernelArg {} of {:?}: {e}", i, k.function_name()),
            })?;
            i += 1;
        )+
        i
    }};
}

mod block;

/// Sizes the two `__local` buffer arguments (`bv`, `bi`: one slot per work-item) that
/// end an argmax kernel's parameter list, from index `first`.
fn set_local_pair(k: &Kernel, first: u32, lws: usize) -> Result<()> {
    // SAFETY: indices `first` and `first + 1` are the kernel's two `__local` buffer
    // parameters (softmax.cl); local arguments take a size and no host pointer.
    unsafe {
        k.set_arg_local_buffer(first, lws * 4)
            .and_then(|_| k.set_arg_local_buffer(first + 1, lws * 4))
    }
    .map_err(cl_err("clSetKernelArg (argmax local)"))
}

/// An f32 view's element offset.
fn el(offset: usize) -> u64 {
    (offset / 4) as u64
}

/// The get_rows kernel for a table dtype.
fn get_rows_slot(op: &'static str, dtype: DType) -> Result<usize> {
    weight_slot(dtype).map(|s| K_GET_ROWS + s).ok_or(Error::DType {
        op,
        what: "table",
        dtype,
    })
}

fn writable(buf: &ClBuffer, what: &'static str) -> Result<cl_mem> {
    if buf.read_only() {
        return Err(Error::ReadOnly { what });
    }
    Ok(buf.mem())
}

fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

impl OpenClBackend {
    /// Launches get_rows kernel `slot` for `n` output rows; the ids come as `single` (≥ 0),
    /// as u32s (`-1`) or f32 indices (`-2`) at element `ids_off` of `ids` (get_rows.cl).
    #[allow(clippy::too_many_arguments)]
    fn get_rows_launch(
        &self,
        slot: usize,
        table: &TensorRef<'_, Self>,
        ids: cl_mem,
        ids_off: u64,
        single: i32,
        out: &TensorMut<'_, Self>,
        n: usize,
    ) -> Result<()> {
        let dim = table.shape.row_len();
        let row_bytes = table.dtype.row_bytes(dim).unwrap_or(0) as u64;
        let out_mem = writable(out.buf, "opencl get_rows output")?;
        args!(&self.kernels[slot]; table.buf.mem(), table.offset as u64, row_bytes, table.shape.rows() as u32,
            ids, ids_off, single, out_mem, el(out.offset), dim as u32);
        self.launch(slot, &[round_up(dim, 64), n], None)
    }

    /// `y = x · wᵀ`, or `y += x · wᵀ` with `accumulate` (mul_mv or, from
    /// `mm_min_tok` tokens on, mul_mm).
    fn mat(
        &mut self,
        w: TensorRef<'_, Self>,
        x: TensorRef<'_, Self>,
        y: TensorMut<'_, Self>,
        accumulate: bool,
    ) -> Result<()> {
        let (n_out, n_in) = (w.shape.dims()[0], w.shape.dims()[1]);
        let n_tok = x.shape.rows();
        if n_tok == 0 || n_out == 0 {
            return Ok(());
        }
        let slot = K_MUL_MV
            + weight_slot(w.dtype).ok_or(Error::DType {
                op: "matmul",
                what: "weight",
                dtype: w.dtype,
            })?;
        let y_mem = writable(y.buf, "opencl matmul output")?;
        // Decode / small batches of a weight with image planes (the whole tensor as
        // imported): the image kernel. A launch that fails turns the path off.
        if let (Some(p), Some(iw)) = (&self.img, w.buf.img.as_deref()) {
            if n_tok < self.mm_min_tok && w.offset == 0 && iw.rows == n_out && iw.cols == n_in {
                match self.mat_img(p, iw, &x, y_mem, y.offset, accumulate) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        std::eprintln!(
                            "opencl: the image kernel failed ({e}); image path off, Q4_0 matmuls run on buffer kernels"
                        );
                        self.img = None;
                    }
                }
            }
        }
        if n_tok >= self.mm_min_tok {
            let slot = slot - K_MUL_MV + K_MUL_MM;
            let tiles = n_out.div_ceil(MM_ROWS) * n_tok.div_ceil(MM_TOKS);
            let steps = n_in.div_ceil(MM_K);
            let mut split = MM_SPLIT_MIN_GROUPS
                .div_ceil(tiles)
                .min(MM_SPLIT_MAX)
                .min(steps / MM_SPLIT_MIN_STEPS);
            if split * n_tok * n_out > self.mm_part_cap {
                split = 1;
            }
            let k_chunk = steps.div_ceil(split.max(1)) * MM_K;
            let split = n_in.div_ceil(k_chunk);
            args!(&self.kernels[slot]; w.buf.mem(), w.offset as u64, x.buf.mem(), el(x.offset), y_mem,
                el(y.offset), n_in as u32, n_out as u32, n_tok as u32, accumulate as u32, k_chunk as u32,
                self.mm_part.get());
            self.launch(
                slot,
                &[
                    n_out.div_ceil(MM_ROWS) * MM_LWS,
                    n_tok.div_ceil(MM_TOKS) * MM_LWS,
                    split,
                ],
                Some(&[MM_LWS, MM_LWS, 1]),
            )?;
            if split > 1 {
                let n = n_tok * n_out;
                args!(&self.kernels[K_MM_REDUCE]; self.mm_part.get(), y_mem, el(y.offset), n as u32,
                    split as u32, accumulate as u32);
                self.launch(K_MM_REDUCE, &[round_up(n, 64)], None)?;
            }
            return Ok(());
        }
        args!(&self.kernels[slot]; w.buf.mem(), w.offset as u64, x.buf.mem(), el(x.offset), y_mem, el(y.offset),
            n_in as u32, n_out as u32, n_tok as u32, accumulate as u32);
        self.launch(
            slot,
            &[n_out * self.mv_lws, n_tok.div_ceil(NT)],
            Some(&[self.mv_lws, 1]),
        )
    }
}

impl OpenClBackend {
    /// `y = x · wᵀ` (`y += …` with `accumulate`) by `mul_mv_q4_0_img_f32` over the
    /// weight's image planes `iw`.
    fn mat_img(
        &self,
        p: &image::ImgPath,
        iw: &image::ImgWeight,
        x: &TensorRef<'_, Self>,
        y_mem: cl_mem,
        y_offset: usize,
        accumulate: bool,
    ) -> Result<()> {
        let n_tok = x.shape.rows();
        args!(&p.kernel; iw.q(), iw.d(), x.buf.mem(), el(x.offset), y_mem, el(y_offset), iw.cols as u32,
            iw.rows as u32, n_tok as u32, accumulate as u32);
        self.launch_kernel(
            &p.kernel,
            K_MUL_MV_IMG,
            &[iw.rows.div_ceil(p.rows) * p.lws, n_tok.div_ceil(NT)],
            Some(&[p.lws, 1]),
        )
    }

    /// `ys[i] = x · ws[i]ᵀ` for three weights of one dtype and input width as one tiled
    /// launch of `slot` (a `mul_mm3` kernel).
    fn mat3(
        &mut self,
        slot: usize,
        x: TensorRef<'_, Self>,
        ws: [TensorRef<'_, Self>; 3],
        ys: [TensorMut<'_, Self>; 3],
    ) -> Result<()> {
        let n_tok = x.shape.rows();
        let n_in = x.shape.row_len();
        let n: [usize; 3] = core::array::from_fn(|i| ws[i].shape.dims()[0]);
        let [y0, y1, y2] = ys;
        let (m0, m1, m2) = (
            writable(y0.buf, "opencl matmul output")?,
            writable(y1.buf, "opencl matmul output")?,
            writable(y2.buf, "opencl matmul output")?,
        );
        args!(&self.kernels[slot]; ws[0].buf.mem(), ws[0].offset as u64, ws[1].buf.mem(), ws[1].offset as u64,
            ws[2].buf.mem(), ws[2].offset as u64, x.buf.mem(), el(x.offset), m0, el(y0.offset), m1,
            el(y1.offset), m2, el(y2.offset), n_in as u32, n[0] as u32, n[1] as u32, n[2] as u32,
            n_tok as u32);
        self.launch(
            slot,
            &[
                (n[0] + n[1] + n[2]).div_ceil(MM_ROWS) * MM_LWS,
                n_tok.div_ceil(MM_TOKS) * MM_LWS,
            ],
            Some(&[MM_LWS, MM_LWS]),
        )
    }
}

impl Backend for OpenClBackend {
    type Buffer = ClBuffer;

    fn name(&self) -> &'static str {
        "opencl"
    }
    fn isa(&self) -> &'static str {
        // The kernel variant: portable OpenCL C 1.2, plus the Q4_0 image matmul when that
        // path is on (fp16/subgroup variants would say so too).
        if self.img.is_some() {
            "cl1.2+img"
        } else {
            "cl1.2"
        }
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
            unified_memory: self.info.unified_memory,
            synchronous: false,
        }
    }

    fn alloc(&self, bytes: usize, kind: BufferKind) -> Result<ClBuffer> {
        if bytes as u64 > self.info.max_alloc {
            return Err(Error::Range {
                what: format!("opencl buffer bytes ({})", self.info.name),
                given: bytes as u64,
                limit: self.info.max_alloc,
            });
        }
        let (flags, k) = match kind {
            BufferKind::Device => (CL_MEM_READ_WRITE, ClMemKind::Device),
            BufferKind::Shared => (CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, ClMemKind::Shared),
        };
        let mut mem = create_buffer(&self.context, flags, bytes, ptr::null_mut())?;
        let size = bytes.max(1);
        // SAFETY: the pattern (one zero byte) is copied by the driver at enqueue time;
        // offset 0 and `size` lie within the buffer just created with `size` bytes.
        unsafe { self.queue.enqueue_fill_buffer(&mut mem, &[0u8], 0, size, &[]) }
            .map_err(cl_err("clEnqueueFillBuffer"))?;
        Ok(ClBuffer {
            mem,
            len: bytes,
            kind: k,
            host: None,
            img: None,
        })
    }

    fn import_host(&self, region: HostRegion) -> Result<ClBuffer> {
        let len = region.len();
        if len as u64 > self.info.max_alloc {
            return Err(Error::Range {
                what: format!("opencl buffer bytes ({})", self.info.name),
                given: len as u64,
                limit: self.info.max_alloc,
            });
        }
        let host_ptr = region.bytes().as_ptr() as *mut c_void;
        if len > 0 && self.info.unified_memory {
            // Zero-copy: the buffer is the host bytes. READ_ONLY, so the driver never
            // writes through the pointer (the bytes may be a read-only file mapping).
            let mem = create_buffer(&self.context, CL_MEM_READ_ONLY | CL_MEM_USE_HOST_PTR, len, host_ptr)?;
            return Ok(ClBuffer {
                mem,
                len,
                kind: ClMemKind::HostZeroCopy,
                host: Some((region, self.queue.clone())),
                img: None,
            });
        }
        let mem = if len > 0 {
            // Discrete device: one copy, made by clCreateBuffer before it returns.
            self.counters.import.fetch_add(len as u64, Ordering::Relaxed);
            let mem = create_buffer(&self.context, CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR, len, host_ptr)?;
            // A driver may defer the upload to the buffer's first use (the first forward
            // pass would pay it); migrating it to the device now keeps it in the load.
            let m = mem.get();
            // SAFETY: one live cl_mem handle, read by the call only; flags 0 = to the
            // queue's device, contents kept.
            let ev = unsafe { self.queue.enqueue_migrate_mem_object(1, &m, 0, &[]) }
                .map_err(cl_err("clEnqueueMigrateMemObjects"))?;
            ev.wait().map_err(cl_err("waiting for a weight upload"))?;
            mem
        } else {
            create_buffer(&self.context, CL_MEM_READ_ONLY, 0, ptr::null_mut())?
        };
        Ok(ClBuffer {
            mem,
            len,
            kind: ClMemKind::HostCopied,
            host: None,
            img: None,
        })
    }

    fn import_weight(&self, region: HostRegion, dtype: DType, shape: Shape) -> Result<ClBuffer> {
        let planes = match (&self.img, shape.dims()) {
            (Some(p), &[rows, cols])
                if dtype == DType::Q4_0 && rows > 0 && cols % 32 == 0 && region.len() == rows * (cols / 32) * 18 =>
            {
                let t0 = std::time::Instant::now();
                let mut st = self.repack.get();
                let planes = match p.repack(&self.context, &self.queue, region.bytes(), rows, cols) {
                    Ok(Some(w)) => {
                        st.tensors += 1;
                        st.extra_bytes += w.bytes as u64;
                        self.counters.import.fetch_add(w.bytes as u64, Ordering::Relaxed);
                        Some(Box::new(w))
                    }
                    Ok(None) => {
                        st.kept_on_buffer += 1;
                        None
                    }
                    Err(e) => {
                        std::eprintln!("opencl: no image planes for a {rows}x{cols} Q4_0 weight ({e}): it stays on the buffer kernel");
                        st.kept_on_buffer += 1;
                        None
                    }
                };
                st.repack_ns += t0.elapsed().as_nanos() as u64;
                self.repack.set(st);
                planes
            }
            _ => None,
        };
        let mut buf = self.import_host(region)?;
        buf.img = planes;
        Ok(buf)
    }

    fn buffer_len(&self, buf: &ClBuffer) -> usize {
        buf.len
    }

    fn upload(&self, dst: &mut ClBuffer, offset: usize, src: &[u8]) -> Result<()> {
        if dst.read_only() {
            return Err(Error::ReadOnly {
                what: "upload destination",
            });
        }
        if offset.checked_add(src.len()).is_none_or(|e| e > dst.len) {
            return Err(Error::OutOfBounds {
                op: "upload",
                what: "dst",
                offset,
                needed: src.len(),
                len: dst.len,
            });
        }
        if src.is_empty() {
            return Ok(());
        }
        // SAFETY: blocking write: `src` is only read before this call returns; the range
        // was checked against the buffer's length above.
        unsafe {
            self.queue
                .enqueue_write_buffer(&mut dst.mem, CL_BLOCKING, offset, src, &[])
        }
        .map_err(cl_err("clEnqueueWriteBuffer"))?;
        self.counters.upload.fetch_add(src.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn download(&self, src: &ClBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        check_read("download", src.len, offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        // A persistent block launch since the last read: its abort flag comes along.
        let check = self.block_check_enqueue()?;
        // SAFETY: blocking read into `dst`, which outlives the call; range checked above.
        // On the in-order queue it runs after every op enqueued before it.
        unsafe { self.queue.enqueue_read_buffer(&src.mem, CL_BLOCKING, offset, dst, &[]) }
            .map_err(cl_err("clEnqueueReadBuffer"))?;
        self.counters.download.fetch_add(dst.len() as u64, Ordering::Relaxed);
        if check {
            self.block_verdict()?;
        }
        Ok(())
    }

    fn download_start(&mut self, src: &ClBuffer, offset: usize, len: usize) -> Result<PendingRead> {
        check_read("download_start", src.len, offset, len)?;
        let i = match self.reads.iter().position(|r| r.event.is_none()) {
            Some(i) => i,
            None => {
                self.reads.push(Box::default());
                self.reads.len() - 1
            }
        };
        // A block launch since the last check: its abort flag comes along (read first,
        // so the data read's event covers both).
        let status_read = self
            .block
            .as_ref()
            .filter(|p| p.unchecked.get())
            .map(|p| p.sync.borrow());
        // The reads go to their own queue, after everything enqueued so far: the compute
        // queue moves on to the next step's kernels while they copy. (Later kernels do
        // not write the range: the caller's promise. They may set the abort flag, which
        // then reports a failure one read early — never hides one.)
        // SAFETY: a marker with no wait list; the event is kept until both reads are
        // enqueued.
        let marker = unsafe { self.queue.enqueue_marker_with_wait_list(&[]) }.map_err(cl_err("clEnqueueMarker"))?;
        let after = [marker.get()];
        let slot = &mut self.reads[i];
        slot.data.resize(len, 0);
        slot.checks_block = status_read.is_some();
        if let Some(sync) = status_read {
            // SAFETY: non-blocking read of 4 bytes into the boxed slot, which is neither
            // moved nor freed before its event completes (download_finish waits for it;
            // drop finishes the queues first). The in-order read queue finishes it before
            // the data read below, whose event is the one waited for.
            unsafe {
                self.read_queue
                    .enqueue_read_buffer(&sync, CL_NON_BLOCKING, 4, &mut slot.status[..], &after)
            }
            .map_err(cl_err("clEnqueueReadBuffer (block status)"))?;
            self.counters.download.fetch_add(4, Ordering::Relaxed);
        }
        if let Some(p) = &self.block {
            p.unchecked.set(false);
        }
        // SAFETY: as above; range checked at the top.
        let ev = unsafe {
            self.read_queue
                .enqueue_read_buffer(&src.mem, CL_NON_BLOCKING, offset, &mut slot.data[..], &after)
        }
        .map_err(cl_err("clEnqueueReadBuffer (started download)"))?;
        slot.event = Some(ev);
        self.counters.download.fetch_add(len as u64, Ordering::Relaxed);
        // Everything queued so far goes to the device now.
        self.queue.flush().map_err(cl_err("clFlush"))?;
        self.unflushed.set(0);
        self.read_queue.flush().map_err(cl_err("clFlush (read queue)"))?;
        Ok(PendingRead {
            offset,
            len,
            ticket: Some(i),
        })
    }

    fn download_finish(&mut self, src: &ClBuffer, p: PendingRead, dst: &mut [u8]) -> Result<()> {
        p.check_dst(dst)?;
        let Some(i) = p.ticket else {
            return self.download(src, p.offset, dst);
        };
        let slot = self
            .reads
            .get_mut(i)
            .filter(|s| s.event.is_some() && s.data.len() == p.len)
            .ok_or_else(|| Error::invalid(format!("download_finish: no download in flight as ticket {i}")))?;
        let ev = slot.event.take().expect("filtered above");
        ev.wait().map_err(cl_err("waiting for a started download"))?;
        dst.copy_from_slice(&slot.data);
        if slot.checks_block {
            let status = slot.status;
            slot.checks_block = false;
            self.block_status_verdict(status)?;
        }
        Ok(())
    }

    fn reserve(&mut self, r: Reservation) -> Result<()> {
        // The model reserves once its weights are in: report what the image path cost.
        let st = self.repack.get();
        if self.img.as_ref().is_some_and(|p| p.log) && st.tensors + st.kept_on_buffer != self.repack_logged.get() {
            std::eprintln!(
                "opencl: image path: {} Q4_0 weights repacked, {:.1} MiB extra device memory, {:.1} ms; {} left on buffer kernels",
                st.tensors,
                st.extra_bytes as f64 / (1u64 << 20) as f64,
                st.repack_ns as f64 / 1e6,
                st.kept_on_buffer
            );
            self.repack_logged.set(st.tensors + st.kept_on_buffer);
        }
        if r.max_tokens > self.ids_cap {
            if let Some(ev) = self.ids_event.take() {
                ev.wait().map_err(cl_err("waiting for ids upload"))?;
            }
            self.ids = create_buffer(&self.context, CL_MEM_READ_ONLY, r.max_tokens * 4, ptr::null_mut())?;
            self.ids_cap = r.max_tokens;
            self.ids_host = vec![0; r.max_tokens];
        }
        let part = r.max_tokens.min(SPLIT_MAX_TOK) * r.n_head * SPLIT_MAX_CHUNKS * (MAX_HD + 2);
        if r.max_ctx > SPLIT_MIN_CHUNK && part > self.part_cap {
            self.part = create_buffer(&self.context, CL_MEM_READ_WRITE, part * 4, ptr::null_mut())?;
            self.part_cap = part;
        }
        let mm_part = MM_SPLIT_MAX * r.max_tokens * r.max_row;
        if r.max_tokens >= self.mm_min_tok && mm_part > self.mm_part_cap {
            self.mm_part = create_buffer(&self.context, CL_MEM_READ_WRITE, mm_part * 4, ptr::null_mut())?;
            self.mm_part_cap = mm_part;
        }
        let parts = r.max_tokens.max(1) * ARGMAX_MAX_PARTS * 2;
        if parts > self.argmax_part_cap {
            self.argmax_part = create_buffer(&self.context, CL_MEM_READ_WRITE, parts * 4, ptr::null_mut())?;
            self.argmax_part_cap = parts;
        }
        self.block_reserve(r.max_ctx, r.n_head)
    }

    fn synchronize(&mut self) -> Result<()> {
        self.queue.finish().map_err(cl_err("clFinish"))?;
        self.read_queue.finish().map_err(cl_err("clFinish (read queue)"))?;
        if self.profiling {
            self.fold_events()?;
        }
        self.block_check_blocking()
    }

    fn copied_bytes(&self) -> crate::backend::CopiedBytes {
        let c = OpenClBackend::copied_bytes(self);
        crate::backend::CopiedBytes {
            to_device: c.import + c.upload,
            to_host: c.download,
        }
    }

    fn get_rows(&mut self, table: TensorRef<'_, Self>, ids: &[u32], out: TensorMut<'_, Self>) -> Result<()> {
        let n = ids.len();
        if n == 0 {
            return Ok(());
        }
        let slot = get_rows_slot("get_rows", table.dtype)?;
        let single: i32 = if n == 1 { ids[0] as i32 } else { -1 };
        if n > 1 {
            if n > self.ids_cap {
                return Err(Error::invalid(format!(
                    "get_rows: {n} ids but only {} reserved (call reserve)",
                    self.ids_cap
                )));
            }
            if let Some(ev) = self.ids_event.take() {
                ev.wait().map_err(cl_err("waiting for ids upload"))?;
            }
            self.ids_host[..n].copy_from_slice(ids);
            let bytes: &[u8] = bytemuck::cast_slice(&self.ids_host[..n]);
            // SAFETY: non-blocking write from `ids_host`, which is not touched again
            // until `ids_event` has completed (waited for above, in `reserve` and on
            // drop); the ids buffer holds `ids_cap` >= n u32s.
            let ev = unsafe {
                self.queue
                    .enqueue_write_buffer(&mut self.ids, CL_NON_BLOCKING, 0, bytes, &[])
            }
            .map_err(cl_err("clEnqueueWriteBuffer (ids)"))?;
            self.ids_event = Some(ev);
            self.counters.upload.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        self.get_rows_launch(slot, &table, self.ids.get(), 0, single, &out, n)
    }

    fn get_rows_at(
        &mut self,
        table: TensorRef<'_, Self>,
        idx: TensorRef<'_, Self>,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        let n = idx.shape.numel();
        if n == 0 {
            return Ok(());
        }
        let slot = get_rows_slot("get_rows_at", table.dtype)?;
        // single_id -2: the indices are the f32s at idx (clamped to the table in the kernel).
        self.get_rows_launch(slot, &table, idx.buf.mem(), el(idx.offset), -2, &out, n)
    }

    fn matmul(&mut self, w: TensorRef<'_, Self>, x: TensorRef<'_, Self>, y: TensorMut<'_, Self>) -> Result<()> {
        self.mat(w, x, y, false)
    }

    fn matmul_add(
        &mut self,
        w: TensorRef<'_, Self>,
        x: TensorRef<'_, Self>,
        _tmp: TensorMut<'_, Self>,
        y: TensorMut<'_, Self>,
    ) -> Result<()> {
        self.mat(w, x, y, true)
    }

    fn rms_norm(
        &mut self,
        x: TensorRef<'_, Self>,
        w: TensorRef<'_, Self>,
        eps: f32,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        let n = x.shape.row_len();
        let rows = x.shape.rows();
        if rows == 0 {
            return Ok(());
        }
        let o = writable(out.buf, "opencl rms_norm output")?;
        args!(&self.kernels[K_RMS_NORM]; x.buf.mem(), el(x.offset), w.buf.mem(), el(w.offset), o, el(out.offset),
            n as u32, eps);
        self.launch(K_RMS_NORM, &[rows * self.lws], Some(&[self.lws]))
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
        if n_tok == 0 || n_heads == 0 || hd == 0 {
            return Ok(());
        }
        let style: u32 = match style {
            RopeStyle::Adjacent => 0,
            RopeStyle::HalfSplit => 1,
        };
        let xm = writable(x.buf, "opencl rope input")?;
        args!(&self.kernels[K_ROPE]; xm, el(x.offset), inv_freq.buf.mem(), el(inv_freq.offset), pos0 as u32,
            n_heads as u32, hd as u32, style);
        self.launch(K_ROPE, &[hd / 2, n_heads, n_tok], None)
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
        if n_tok == 0 {
            return Ok(());
        }
        if p.head_dim > MAX_HD {
            return Err(Error::Range {
                what: "opencl attention head_dim".to_string(),
                given: p.head_dim as u64,
                limit: MAX_HD as u64,
            });
        }
        let o = writable(out.buf, "opencl attention output")?;
        if n_tok >= self.attn_prefill_min_tok && p.head_dim <= ATTN_PREFILL_HD {
            // Many query rows: K/V tiles shared by 32 (token, head) rows of a KV head.
            let row_tiles = (n_tok * (p.n_head / p.n_kv_head)).div_ceil(ATTN_PREFILL_ROWS);
            args!(&self.kernels[K_ATTN_PREFILL]; q.buf.mem(), el(q.offset), k.buf.mem(), el(k.offset),
                v.buf.mem(), el(v.offset), o, el(out.offset), p.n_head as u32, p.n_kv_head as u32,
                p.head_dim as u32, p.scale, p.n_past as u32, n_tok as u32);
            return self.launch(
                K_ATTN_PREFILL,
                &[row_tiles * ATTN_PREFILL_LWS, p.n_kv_head],
                Some(&[ATTN_PREFILL_LWS, 1]),
            );
        }
        // Few query rows and a long context: split the context across work-groups.
        let ctx = p.n_past + n_tok;
        let chunk = round_up(SPLIT_MIN_CHUNK.max(ctx.div_ceil(SPLIT_MAX_CHUNKS)), self.lws);
        let n_chunks = ctx.div_ceil(chunk);
        let split =
            n_tok <= SPLIT_MAX_TOK && n_chunks > 1 && n_tok * p.n_head * n_chunks * (p.head_dim + 2) <= self.part_cap;
        let (chunk, n_chunks) = if split { (chunk, n_chunks) } else { (0, 1) };
        args!(&self.kernels[K_ATTENTION]; q.buf.mem(), el(q.offset), k.buf.mem(), el(k.offset), v.buf.mem(),
            el(v.offset), o, el(out.offset), p.n_head as u32, p.n_kv_head as u32, p.head_dim as u32, p.scale,
            p.n_past as u32, chunk as u32, self.part.get());
        self.launch(
            K_ATTENTION,
            &[p.n_head * self.lws, n_tok, n_chunks],
            Some(&[self.lws, 1, 1]),
        )?;
        if n_chunks > 1 {
            args!(&self.kernels[K_ATTN_COMBINE]; self.part.get(), o, el(out.offset), p.n_head as u32,
                p.head_dim as u32, n_chunks as u32);
            self.launch(K_ATTN_COMBINE, &[p.n_head * self.lws, n_tok], Some(&[self.lws, 1]))?;
        }
        Ok(())
    }

    fn softmax(&mut self, x: TensorMut<'_, Self>) -> Result<()> {
        let n = x.shape.row_len();
        let rows = x.shape.rows();
        if rows == 0 || n == 0 {
            return Ok(());
        }
        let xm = writable(x.buf, "opencl softmax input")?;
        args!(&self.kernels[K_SOFTMAX]; xm, el(x.offset), n as u32);
        self.launch(K_SOFTMAX, &[rows * self.lws], Some(&[self.lws]))
    }

    fn argmax(&mut self, x: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()> {
        let (rows, n) = (x.shape.rows(), x.shape.row_len());
        if rows == 0 {
            return Ok(());
        }
        let o = writable(out.buf, "opencl argmax output")?;
        let lws = self.argmax_lws;
        let parts = n.div_ceil(ARGMAX_CHUNK);
        if n > ARGMAX_TWO_PASS && parts <= ARGMAX_MAX_PARTS && rows * parts * 2 <= self.argmax_part_cap {
            let part = self.argmax_part.get();
            let k = &self.kernels[K_ARGMAX_PART];
            let n_args = args!(k; x.buf.mem(), el(x.offset), n as u32, ARGMAX_CHUNK as u32, part);
            set_local_pair(k, n_args, lws)?;
            self.launch(K_ARGMAX_PART, &[parts * lws, rows], Some(&[lws, 1]))?;
            let k = &self.kernels[K_ARGMAX_FINAL];
            let n_args = args!(k; part, parts as u32, o, el(out.offset));
            set_local_pair(k, n_args, lws)?;
            return self.launch(K_ARGMAX_FINAL, &[rows * lws], Some(&[lws]));
        }
        let k = &self.kernels[K_ARGMAX];
        let n_args = args!(k; x.buf.mem(), el(x.offset), o, el(out.offset), n as u32);
        set_local_pair(k, n_args, lws)?;
        self.launch(K_ARGMAX, &[rows * lws], Some(&[lws]))
    }

    fn swiglu(&mut self, gate: TensorRef<'_, Self>, up: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()> {
        let n = gate.shape.numel();
        if n == 0 {
            return Ok(());
        }
        let o = writable(out.buf, "opencl swiglu output")?;
        args!(&self.kernels[K_SILU_MUL]; gate.buf.mem(), el(gate.offset), up.buf.mem(), el(up.offset), o,
            el(out.offset), n as u32);
        self.launch(K_SILU_MUL, &[round_up(n, 64)], None)
    }

    fn add(&mut self, dst: TensorMut<'_, Self>, src: TensorRef<'_, Self>) -> Result<()> {
        let n = dst.shape.numel();
        if n == 0 {
            return Ok(());
        }
        let d = writable(dst.buf, "opencl add destination")?;
        args!(&self.kernels[K_ADD]; d, el(dst.offset), src.buf.mem(), el(src.offset), n as u32);
        self.launch(K_ADD, &[round_up(n, 64)], None)
    }

    fn rope_qk(
        &mut self,
        q: TensorMut<'_, Self>,
        k: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        pos0: usize,
        style: RopeStyle,
    ) -> Result<()> {
        let (dq, dk) = (q.shape.dims(), k.shape.dims());
        let (n_tok, hq, hk, hd) = (dq[0], dq[1], dk[1], dq[2]);
        if n_tok == 0 || hq + hk == 0 || hd == 0 {
            return Ok(());
        }
        let style: u32 = match style {
            RopeStyle::Adjacent => 0,
            RopeStyle::HalfSplit => 1,
        };
        let qm = writable(q.buf, "opencl rope q")?;
        let km = writable(k.buf, "opencl rope k")?;
        args!(&self.kernels[K_ROPE_QK]; qm, el(q.offset), km, el(k.offset), inv_freq.buf.mem(),
            el(inv_freq.offset), pos0 as u32, hq as u32, hk as u32, hd as u32, style);
        self.launch(K_ROPE_QK, &[hd / 2, hq + hk, n_tok], None)
    }

    fn rms_norm_matmul3(
        &mut self,
        x: TensorRef<'_, Self>,
        norm_w: TensorRef<'_, Self>,
        eps: f32,
        mut xn: TensorMut<'_, Self>,
        ws: [TensorRef<'_, Self>; 3],
        ys: [TensorMut<'_, Self>; 3],
    ) -> Result<()> {
        let n_tok = x.shape.rows();
        let n_in = x.shape.row_len();
        let fused = fused_slot(ws[0].dtype)
            .filter(|_| n_tok > 0 && n_tok < self.mm_min_tok && ws.iter().all(|w| w.dtype == ws[0].dtype));
        let same = n_tok > 0 && ws.iter().all(|w| w.dtype == ws[0].dtype);
        let Some(f) = fused else {
            if let Some(f) = fused_slot(ws[0].dtype).filter(|_| same && n_tok >= self.mm_min_tok) {
                // Prefill: one norm launch, then Q/K/V as one tiled matmul launch.
                self.rms_norm(x, norm_w, eps, xn.reborrow())?;
                return self.mat3(K_MUL_MM3 + f, xn.as_ref(), ws, ys);
            }
            return crate::backend::rms_norm_matmul3_composed(self, x, norm_w, eps, xn, ws, ys);
        };
        let slot = K_MUL_MV3 + f;
        let n: [usize; 3] = core::array::from_fn(|i| ws[i].shape.dims()[0]);
        let [y0, y1, y2] = ys;
        let (m0, m1, m2) = (
            writable(y0.buf, "opencl matmul output")?,
            writable(y1.buf, "opencl matmul output")?,
            writable(y2.buf, "opencl matmul output")?,
        );
        args!(&self.kernels[slot]; ws[0].buf.mem(), ws[0].offset as u64, ws[1].buf.mem(), ws[1].offset as u64,
            ws[2].buf.mem(), ws[2].offset as u64, x.buf.mem(), el(x.offset), norm_w.buf.mem(), el(norm_w.offset),
            eps, m0, el(y0.offset), m1, el(y1.offset), m2, el(y2.offset), n_in as u32, n[0] as u32,
            n[1] as u32, n[2] as u32, n_tok as u32);
        self.launch(
            slot,
            &[(n[0] + n[1] + n[2]) * self.mv_lws, n_tok.div_ceil(NT)],
            Some(&[self.mv_lws, 1]),
        )
    }

    fn rms_norm_matmul_swiglu(
        &mut self,
        x: TensorRef<'_, Self>,
        norm_w: TensorRef<'_, Self>,
        eps: f32,
        mut xn: TensorMut<'_, Self>,
        w_gate: TensorRef<'_, Self>,
        w_up: TensorRef<'_, Self>,
        gate: TensorMut<'_, Self>,
        up: TensorMut<'_, Self>,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        let n_tok = x.shape.rows();
        let n_in = x.shape.row_len();
        let n_out = w_gate.shape.dims()[0];
        let fused = fused_slot(w_gate.dtype)
            .filter(|_| n_tok > 0 && n_out > 0 && n_tok < self.mm_min_tok && w_up.dtype == w_gate.dtype);
        let Some(f) = fused else {
            if let Some(f) =
                fused_slot(w_gate.dtype).filter(|_| n_tok >= self.mm_min_tok && n_out > 0 && w_up.dtype == w_gate.dtype)
            {
                // Prefill: one norm launch, then gate, up and SwiGLU as one tiled launch.
                self.rms_norm(x, norm_w, eps, xn.reborrow())?;
                let slot = K_MUL_MM_SWIGLU + f;
                let o = writable(out.buf, "opencl matmul_swiglu output")?;
                args!(&self.kernels[slot]; w_gate.buf.mem(), w_gate.offset as u64, w_up.buf.mem(),
                    w_up.offset as u64, xn.buf.mem(), el(xn.offset), o, el(out.offset), n_in as u32,
                    n_out as u32, n_tok as u32);
                return self.launch(
                    slot,
                    &[n_out.div_ceil(MM_ROWS) * MM_LWS, n_tok.div_ceil(MM_TOKS) * MM_LWS],
                    Some(&[MM_LWS, MM_LWS]),
                );
            }
            return crate::backend::rms_norm_matmul_swiglu_composed(
                self, x, norm_w, eps, xn, w_gate, w_up, gate, up, out,
            );
        };
        let slot = K_MUL_MV_SWIGLU + f;
        let o = writable(out.buf, "opencl matmul_swiglu output")?;
        args!(&self.kernels[slot]; w_gate.buf.mem(), w_gate.offset as u64, w_up.buf.mem(), w_up.offset as u64,
            x.buf.mem(), el(x.offset), norm_w.buf.mem(), el(norm_w.offset), eps, o, el(out.offset),
            n_in as u32, n_out as u32, n_tok as u32);
        self.launch(
            slot,
            &[n_out * self.mv_lws, n_tok.div_ceil(NT)],
            Some(&[self.mv_lws, 1]),
        )
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
        crate::backend::llama_block_composed(self, x, w, kv, inv_freq, p, s, &mut |_, _, _| {})
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
