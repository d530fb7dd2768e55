//! Program build: the kernel sizes chosen for a device ([`Sizes`]), the OpenCL C source
//! of each family (the generated header, the shared preludes of `kernels/cl/common/` and
//! the family's own file, in that order), and the choice among `block.cl`'s build
//! variants ([`BlockBuild`]): NVIDIA's PTX grid barrier and warp-shuffle reductions
//! where the compiler takes them, else the portable ones, at the largest work-group the
//! compiled kernel allows.
//!
//! The generated header ([`generated_header`]) carries the facts Rust owns: the dtype
//! codes ([`dtype_code`]) and the ggml block sizes, from [`DType`] — the `.cl` files never
//! write them out.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use opencl3::context::Context;
use opencl3::program::Program;
use opencl3::types::cl_device_id;

use super::kernels::{dtype_code, BlockLayer, BlockShared, LlamaBlocks, LlamaHead};
use super::launch::{Args, Kern};
use super::{DeviceInfo, OpenClOptions};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// Work-group size of the reduction kernels (norm, softmax, attention).
pub(super) const LWS_MAX: usize = 64;
/// Work-group size of the matmul kernels on GPUs (a warp; a 576-wide Q4 row has 36
/// half-block units).
const MV_LWS_GPU: usize = 32;
/// … and on CPU devices (PoCL): fewer work-items per row means fewer barrier-split
/// loops; 8 measured ~2× faster than 32 for SmolLM2 decode on PoCL 3.1 (AVX-512 host).
const MV_LWS_CPU: usize = 8;
/// Tokens per matmul work-group (each weight row is read once per NT tokens).
pub(super) const NT: usize = 4;
/// Largest attention head the kernel's local memory is sized for.
pub(super) const MAX_HD: usize = 256;
/// Work-group size of block.cl's kernels, where the device and the compiled kernel allow
/// it (512 measured 0–5 % faster than 256 on the H100; 1024 much slower).
const BLOCK_LWS: usize = 512;
/// Largest vector block.cl stages in local memory (floats).
const BLOCK_MAX_VEC: usize = 8192;
/// Rows of the output matrix per work-group of the head kernel.
const HEAD_ROWS_PER_WG: usize = 64;
/// Attention chunk of the block kernel, in cache slots (block.cl `CH`): a (query head,
/// chunk) pair is one unit of work, so shorter chunks spread a short context over more
/// work-groups.
const BLOCK_CH: usize = 32;

/// The tiled prefill matmul (mul_mm.cl) runs `MM_LWS` × `MM_LWS` work-items per group
/// and is used on GPUs from `MM_MIN_TOK` tokens on (below it, mul_mv's 4-token tiles are
/// as good) — a guess until measured on a GPU (`decode_profile_smollm2_shapes` prints
/// both).
pub(super) const MM_LWS: usize = 16;
const MM_MIN_TOK: usize = 16;
/// Prefill attention (`attention_prefill_f32`): batches of at least
/// `ATTN_PREFILL_MIN_TOK` query tokens (default of
/// [`OpenClOptions::attn_prefill_min_tokens`]); its work-groups are `ATTN_PREFILL_LWS`
/// wide and hold `ATTN_PREFILL_LOCAL` bytes of local memory (the kernel's PLWS, PHD and
/// its local arrays).
const ATTN_PREFILL_MIN_TOK: usize = 16;
pub(super) const ATTN_PREFILL_LWS: usize = 128;
const ATTN_PREFILL_LOCAL: u64 = 30_848;

/// The shared preludes, prepended (after the generated header) to every family.
const PRELUDES: [&str; 5] = [
    "common/dtype.cl",
    "common/reduce.cl",
    "common/rope.cl",
    "common/kv.cl",
    "common/int8.cl",
];

/// Sizes and thresholds chosen once for the device (and the options' overrides).
#[derive(Clone, Debug)]
pub(super) struct Sizes {
    /// Work-group size of the reduction kernels.
    pub(super) lws: usize,
    /// Work-group size of the mul_mv kernels.
    pub(super) mv_lws: usize,
    /// Smallest batch that takes mul_mm (usize::MAX when the device cannot run it).
    pub(super) mm_min_tok: usize,
    /// Smallest batch that takes attention_prefill_f32 (usize::MAX: never).
    pub(super) attn_prefill_min_tok: usize,
    /// Work-group size of the argmax kernels (set once the kernel is compiled).
    pub(super) argmax_lws: usize,
    /// Output rows per work-group of the head kernel.
    pub(super) head_rows: usize,
}

/// How block.cl was built.
#[derive(Clone, Debug)]
pub(super) struct BlockBuild {
    /// Work-group size (and staged-vector capacity, `max_vec` floats).
    pub(super) lws: usize,
    pub(super) max_vec: usize,
    /// Layers per launch (`LPL`).
    pub(super) lpl: usize,
    /// Attention chunk in cache slots (`CH`, at most `lws`).
    pub(super) ch: usize,
    /// The device is NVIDIA (PTX fences and shuffles tried).
    pub(super) nv_fence: bool,
    /// The PTX grid barrier compiled (the persistent path may run).
    pub(super) fence_ok: bool,
    /// The compiled kernels allow `lws` work-items.
    pub(super) fits: bool,
    /// Built with int8 activations (`AG_INT8`): the staged vector's buffer also holds
    /// its int8 copy ([`BlockBuild::vec_bytes`]).
    pub(super) int8: bool,
    /// Built with the wide stage B (`AG_ATTN_WIDE`): the staged vector's buffer is at
    /// least [`BlockBuild::wide_floats`] for the model's shapes.
    pub(super) wide: bool,
    /// Slots of context from which a launch takes the wide stage B (`block_wide_from`).
    pub(super) wide_from: usize,
    /// For logs and profiles.
    pub(super) desc: String,
    /// The build options block.cl was built with (its f32-cache program); a cache
    /// dtype's variant adds `-DKV_T=…` ([`build_block_variant`]).
    pub(super) options: String,
}

impl BlockBuild {
    /// Bytes of the staged-vector `__local` argument for vectors of up to `n` floats:
    /// the floats, and with int8 activations their copy (`INT8_VIEWS` in block.cl:
    /// n / 4 words, n / 32 scales, n / 16 unit sums).
    pub(super) fn vec_bytes(&self, n: usize) -> usize {
        if self.int8 {
            n * 4 + n + n / 32 * 4 + n / 16 * 4
        } else {
            n * 4
        }
    }

    /// Floats of the staged-vector buffer the wide stage B uses for `grp` query heads a
    /// KV head of `hd` values (block.cl's `WIDE_OSUM` plus o's sums, 4 a work-item and
    /// head); 0 without it, or where the layer takes the other stage B (block.cl's
    /// `attn_wide`: the KV-head count is checked there against the counters the host
    /// zeroes, `MAX_KV_HEADS`).
    pub(super) fn wide_floats(&self, grp: usize, hd: usize) -> usize {
        let takes = hd.is_multiple_of(8) && self.lws.is_multiple_of(hd / 4) && grp <= 8 && grp <= self.lws / 32;
        if !self.wide || !takes {
            return 0;
        }
        (grp * hd).div_ceil(4) * 4 + grp * (self.lws / 2) + 8 + 4 * grp * self.lws
    }

    /// Parameters of `llama_blocks_f32` as built.
    pub(super) fn n_args(&self) -> usize {
        BlockShared::FIELDS.len() + self.lpl * BlockLayer::FIELDS.len() + 1
    }
}

/// Every program built at creation but the image kernel's, by family file (the
/// cache-reading families as built for an f32 cache).
pub(super) struct Programs(Vec<(&'static str, Program)>);

impl Programs {
    pub(super) fn get(&self, file: &str) -> &Program {
        &self
            .0
            .iter()
            .find(|(f, _)| *f == file)
            .expect("every family is built")
            .1
    }
}

/// The families that read the KV cache (`attention.cl`, `kv_cache.cl`, and `block.cl`'s
/// decode kernel) are built once more for each other cache dtype (`-DKV_T=T_F16`,
/// `-DKV_T=T_Q8_0`; common/kv.cl): their kernels read the cache in its own dtype, the
/// dtype fixed at build time so the inner loops carry no dtype branch. Those variants
/// are built on first use (a backend that never sees an f16 cache never compiles one):
/// [`build_kv_family`], [`build_block_variant`].
pub(super) const KV_LAZY: [DType; 2] = [DType::F16, DType::Q8_0];

/// The `-DKV_T=…` option of a cache dtype's variant.
fn kv_option(kv: DType) -> String {
    format!(" -DKV_T=T_{}", kv.name().to_ascii_uppercase())
}

/// Build options of a per-op family for work-group size `lws`.
fn family_options(lws: usize) -> String {
    format!("-cl-std=CL1.2 -DLWS={lws} -DNT={NT} -DMAX_HD={MAX_HD}")
}

/// Builds cache-reading family `file` (`attention.cl`, `kv_cache.cl`) for a cache of
/// dtype `kv` (on first use; through the program-binary cache like every build).
pub(super) fn build_kv_family(
    context: &Context,
    dev: cl_device_id,
    sz: &Sizes,
    cache: Option<&str>,
    file: &str,
    kv: DType,
) -> Result<Program> {
    build_program(context, dev, file, &(family_options(sz.lws) + &kv_option(kv)), cache)
}

/// Builds block.cl for a cache of dtype `kv` with the options its f32-cache program was
/// built with, without the Q5_0/Q5_1/K-quant arms when `core` (`AG_CORE_TYPES`); `None`
/// when the compiled kernels do not allow the work-group size that program runs (that
/// variant then decodes on the per-op path).
pub(super) fn build_block_variant(
    context: &Context,
    dev: cl_device_id,
    blk: &BlockBuild,
    cache: Option<&str>,
    kv: DType,
    core: bool,
) -> Result<Option<Program>> {
    let mut options = blk.options.clone();
    if kv != DType::F32 {
        options += &kv_option(kv);
    }
    if core {
        options += " -DAG_CORE_TYPES";
    }
    let program = build_program(context, dev, "block.cl", &options, cache)?;
    let blocks = Kern::<LlamaBlocks>::create_n(&program, "llama_blocks_f32", blk.n_args())?;
    let head = Kern::<LlamaHead>::create(&program, "llama_head_f32")?;
    let allowed = blocks.work_group_size(dev)?.min(head.work_group_size(dev)?);
    Ok((allowed >= blk.lws).then_some(program))
}

fn pow2_floor(n: usize) -> usize {
    if n == 0 {
        1
    } else {
        1usize << (usize::BITS - 1 - n.leading_zeros())
    }
}

impl Sizes {
    pub(super) fn for_device(info: &DeviceInfo, opts: &OpenClOptions) -> Result<Sizes> {
        let lws = LWS_MAX.min(pow2_floor(info.max_work_group));
        let mv_lws = opts
            .mv_lws
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
            return Err(Error::backend(
                "opencl",
                format!("{}: {} bytes of local memory is too little", info.name, info.local_mem),
            ));
        }
        Ok(Sizes {
            lws,
            mv_lws,
            mm_min_tok,
            attn_prefill_min_tok,
            argmax_lws: 1,
            head_rows: opts.head_rows.unwrap_or(HEAD_ROWS_PER_WG),
        })
    }
}

/// `#define`s of the facts Rust owns, prepended to every kernel source: the dtype codes
/// the kernels switch on (`T_F32` …) and each block type's elements (`QK`, `QK_K`) and
/// bytes (`Q4_0_BYTES` … `Q6_K_BYTES`), from [`DType`].
pub fn generated_header() -> String {
    let mut s = String::from("// generated by antigravity-core (opencl/program.rs) from DType\n");
    for t in DType::ALL {
        if let Some(code) = dtype_code(t) {
            s += &format!("#define T_{} {code}\n", t.name().to_ascii_uppercase());
        }
    }
    s += &format!("#define T_Q4_0R {}\n", super::kernels::T_Q4_0R);
    s += &format!("#define QK {}\n", DType::Q4_0.block_size());
    for t in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
        debug_assert_eq!(t.block_size(), DType::Q4_0.block_size());
        s += &format!("#define {}_BYTES {}\n", t.name().to_ascii_uppercase(), t.block_bytes());
    }
    // The 256-element super-block and the blocks of the Q4_K_M / Q5_K_M types.
    s += &format!("#define QK_K {}\n", crate::dtype::QK_K);
    for t in [DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K] {
        s += &format!("#define {}_BYTES {}\n", t.name().to_ascii_uppercase(), t.block_bytes());
    }
    s
}

fn read_source(file: &str) -> Result<String> {
    let (src, _) = antigravity_kernels::source(file)
        .ok_or_else(|| Error::invalid(format!("unknown kernel source {file}")))?
        .map_err(|e| Error::backend("opencl", format!("reading kernel source: {e}")))?;
    Ok(src.into_owned())
}

/// Families built on another family's definitions: `(file, the files before it)`.
/// `mul_mm_kq_f32.cl` stamps out `mul_mm.cl`'s tiled kernels (its macros) with K-quant
/// weight loaders, so the tiling is written once; its program holds mul_mm.cl's own
/// kernels too (compiled twice, used from the `mul_mm.cl` program).
const FAMILY_DEPS: [(&str, &[&str]); 1] = [("mul_mm_kq_f32.cl", &["mul_mm.cl"])];

/// The full OpenCL C source of family `file`: generated header, preludes, the families
/// it builds on ([`FAMILY_DEPS`]), the file.
pub fn program_source(file: &str) -> Result<String> {
    let mut src = generated_header();
    let deps = FAMILY_DEPS
        .iter()
        .find(|(f, _)| *f == file)
        .map_or(&[][..], |(_, d)| *d);
    for p in PRELUDES.iter().chain(deps).copied().chain([file]) {
        src += &format!("// ---- {p} ----\n");
        src += &read_source(p)?;
        src.push('\n');
    }
    Ok(src)
}

/// Builds family `file` with `options` (an error carries the build log).
/// Through the program-binary cache in `cache` (a directory; `None`: off).
pub(super) fn build_program(
    context: &Context,
    dev: cl_device_id,
    file: &str,
    options: &str,
    cache: Option<&str>,
) -> Result<Program> {
    let src = program_source(file)?;
    let compile = || {
        let mut program =
            Program::create_from_source(context, &src).map_err(super::launch::cl_err("clCreateProgramWithSource"))?;
        if let Err(e) = program.build(&[dev], options) {
            let log = program.get_build_log(dev).unwrap_or_default();
            return Err(Error::backend(
                "opencl",
                format!("building {file} ({options}): {e}\n{log}"),
            ));
        }
        Ok(program)
    };
    let (program, _) = super::binary_cache::build(cache, context, dev, file, options, &src, compile)?;
    Ok(program)
}

/// The per-op families (all but block.cl and the image kernel's).
const FAMILIES: [&str; 18] = [
    "add.cl",
    "silu_mul.cl",
    "rms_norm.cl",
    "softmax.cl",
    "rope.cl",
    "attention.cl",
    "kv_cache.cl",
    "get_rows.cl",
    "mul_mv_f32_f32.cl",
    "mul_mv_f16_f32.cl",
    "mul_mv_bf16_f32.cl",
    "mul_mv_q4_0_f32.cl",
    "mul_mv_q4_1_f32.cl",
    "mul_mv_q8_0_f32.cl",
    "mul_mv_kq_f32.cl",
    "mul_mm.cl",
    "mul_mm_kq_f32.cl",
    "mul_mv_fused.cl",
];

/// Builds every family but the image kernel's.
pub(super) fn build_all(
    context: &Context,
    dev: cl_device_id,
    info: &DeviceInfo,
    opts: &OpenClOptions,
    sz: &Sizes,
) -> Result<(Programs, BlockBuild)> {
    let mut programs = Vec::with_capacity(FAMILIES.len() + 1);
    for file in FAMILIES {
        let group_lws = if file.starts_with("mul_mv") { sz.mv_lws } else { sz.lws };
        let options = family_options(group_lws);
        programs.push((
            file,
            build_program(context, dev, file, &options, opts.binary_cache.as_deref())?,
        ));
    }
    let (block, bb) = build_block(context, dev, info, opts)?;
    programs.push(("block.cl", block));
    Ok((Programs(programs), bb))
}

/// The int8 prefill path as built: its kernels, whether they multiply with `mma.sync`
/// (else `dp4a`), and the program (dropped after the kernels).
pub(super) struct MmqPath {
    pub(super) k: super::kernels::Mmq,
    pub(super) mma: bool,
    /// Built with `-DAG_MMQ_WIDE`: 128 × 64 tiles (else 64 × 32).
    pub(super) wide: bool,
    pub(super) _program: Program,
}

impl MmqPath {
    /// Weight rows × tokens of a tile (the fused gate/up kernel's tile holds half as many
    /// outputs when wide: gate and up rows interleaved — [`MmqPath::swiglu_rows`]).
    pub(super) fn tile(&self) -> (usize, usize) {
        if self.wide {
            (128, 64)
        } else {
            (64, 32)
        }
    }

    /// Output rows of a fused gate/up/SwiGLU tile.
    pub(super) fn swiglu_rows(&self) -> usize {
        64
    }
}

/// Builds mul_mm_q8_1.cl when the int8 prefill path is on for this device (`mm_int8`;
/// default: NVIDIA GPUs) and the tiled matmuls can run (`sz.mm_min_tok`): on NVIDIA
/// with PTX `dp4a` and, unless `mm_mma` says no, `mma.sync` tiles — dropped when the
/// compiler refuses them; elsewhere the portable OpenCL C `dp4a`. `None` (with a log
/// line when asked for) when it is off or does not build: `mul_mm` stays.
pub(super) fn build_mmq(
    context: &Context,
    dev: cl_device_id,
    info: &DeviceInfo,
    opts: &OpenClOptions,
    sz: &Sizes,
) -> Option<MmqPath> {
    let nvidia = !info.is_cpu && info.vendor.to_ascii_lowercase().contains("nvidia");
    if !opts.mm_int8.unwrap_or(nvidia) || sz.mm_min_tok == usize::MAX {
        return None;
    }
    // (LWS, NT, MAX_HD: what the shared preludes are written against.)
    let base = format!(
        "-cl-std=CL1.2 -DLWS={} -DNT={NT} -DMAX_HD={MAX_HD} {}",
        sz.lws, opts.mm_defines
    )
    .trim()
    .to_string();
    // Wide tiles: by default where `mma` builds (they exist to feed it); forced either way
    // by `mm_wide` (the portable wide build is the conformance suite's check of its
    // layout).
    let wide = |mma: bool| opts.mm_wide.unwrap_or(mma);
    let with = |o: String, w: bool| if w { format!("{o} -DAG_MMQ_WIDE") } else { o };
    let mut tries = Vec::new();
    if nvidia {
        if opts.mm_mma.unwrap_or(true) {
            tries.push((
                with(format!("{base} -DAG_NV_DP4A -DAG_NV_MMA"), wide(true)),
                true,
                wide(true),
            ));
        }
        tries.push((with(format!("{base} -DAG_NV_DP4A"), wide(false)), false, wide(false)));
    }
    tries.push((with(base, wide(false)), false, wide(false)));
    for (options, mma, wide) in tries {
        let built = build_program(context, dev, "mul_mm_q8_1.cl", &options, opts.binary_cache.as_deref())
            .and_then(|program| Ok((super::kernels::Mmq::create(&program)?, program)));
        match built {
            Ok((k, program)) => {
                if opts.log {
                    std::eprintln!("opencl: int8 prefill matmuls built with `{options}`");
                }
                return Some(MmqPath {
                    k,
                    mma,
                    wide,
                    _program: program,
                });
            }
            Err(e) => {
                if opts.log || opts.mm_int8 == Some(true) {
                    std::eprintln!("opencl: mul_mm_q8_1.cl ({options}) failed: {e}");
                }
            }
        }
    }
    None
}

/// Builds block.cl: for a work-group size, then checked against what the compiled
/// kernels allow (registers: 512 work-items may not fit) and rebuilt smaller when they do
/// not; on NVIDIA with the PTX barrier and shuffles, dropping each when the compiler
/// refuses it.
fn build_block(
    context: &Context,
    dev: cl_device_id,
    info: &DeviceInfo,
    opts: &OpenClOptions,
) -> Result<(Program, BlockBuild)> {
    // 512 work-items where the device (and, checked below, the compiled kernel) allows;
    // the staged vector gets the local memory its reduction arrays leave.
    let mut lws = opts
        .block_lws
        .unwrap_or(BLOCK_LWS)
        .min(pow2_floor(info.max_work_group))
        .max(64);
    // NVIDIA: the grid barrier's fence must be `membar.gl` (inline PTX); if the compiler
    // refuses it, the persistent path stays off (the head kernel still works) ...
    let nv_fence = info.vendor.to_ascii_lowercase().contains("nvidia");
    // ... and its reductions use warp shuffles (PTX `shfl.sync`) unless turned off.
    let mut nv_shfl = nv_fence && opts.block_shfl.unwrap_or(true);
    let ch = opts.block_ch.unwrap_or(BLOCK_CH);
    // Layers per launch: as many parameter sets (~210 bytes each, ~170 shared) as the
    // device's kernel-parameter space holds, up to 4. CPU devices (PoCL, where the path
    // is only for tests) take one: PoCL compiles the multi-layer kernel's
    // barriers-in-a-loop for ~10 minutes.
    let lpl = match info.max_parameter_size {
        _ if info.is_cpu => 1,
        n if n >= 2048 => 4,
        n if n >= 768 => 2,
        _ => 1,
    };
    // Int8 activations (on by default where `dp4a` is native: NVIDIA, inline PTX).
    let int8 = opts.block_int8.unwrap_or(nv_fence);
    // Floats of local memory an element of the staged vector takes: 1, or 1 + 11/32 with
    // its int8 copy (BlockBuild::vec_bytes).
    let per_elem = if int8 { 43.0 / 32.0 } else { 1.0 };
    let defines = if int8 {
        format!(
            "-DAG_INT8{} {}",
            if nv_fence { " -DAG_NV_DP4A" } else { "" },
            opts.block_defines
        )
    } else {
        opts.block_defines.clone()
    };
    // The wide stage B: on by default on NVIDIA (measured there: docs/opencl.md), off
    // elsewhere (unmeasured; and PoCL compiles it for over half an hour).
    let wide = opts.block_wide.unwrap_or(nv_fence);
    let defines = if wide {
        format!("-DAG_ATTN_WIDE {defines}")
    } else {
        defines
    };
    let defines = defines.trim();
    let mut fence_ok = true;
    let (program, fits, private, built_with) = loop {
        // (a chunk's slots are work-items of stage B)
        let options = format!(
            "-cl-std=CL1.2 -DLWS={lws} -DMAX_HD={MAX_HD} -DCH={} -DLPL={lpl} {defines}",
            ch.min(lws)
        );
        let with_fence = format!("{options} -DAG_NV_FENCE");
        let with_shfl = format!("{with_fence} -DAG_NV_SHFL");
        let fenced = nv_fence && fence_ok;
        let first = match (fenced, nv_shfl) {
            (true, true) => &with_shfl,
            (true, false) => &with_fence,
            _ => &options,
        };
        let cache = opts.binary_cache.as_deref();
        let program = match build_program(context, dev, "block.cl", first, cache) {
            Ok(p) => p,
            // Warp shuffles refused: the same kernel with local-memory reductions.
            Err(e) if fenced && nv_shfl => {
                if opts.log {
                    std::eprintln!("opencl: block.cl with shfl.sync failed, reducing in local memory: {e}");
                }
                nv_shfl = false;
                continue;
            }
            Err(e) if fenced => {
                if opts.log {
                    std::eprintln!("opencl: block.cl with membar.gl failed, persistent path off: {e}");
                }
                fence_ok = false;
                build_program(context, dev, "block.cl", &options, cache)?
            }
            Err(e) => return Err(e),
        };
        let blocks = Kern::<LlamaBlocks>::create_n(&program, "llama_blocks_f32", {
            BlockShared::FIELDS.len() + lpl * BlockLayer::FIELDS.len() + 1
        })?;
        let head = Kern::<LlamaHead>::create(&program, "llama_head_f32")?;
        let allowed = blocks.work_group_size(dev)?.min(head.work_group_size(dev)?);
        let private = blocks.private_mem(dev);
        if allowed >= lws || lws <= 64 {
            // Not even 64 work-items: the block kernels stay unused.
            let built_with = if fenced && nv_shfl {
                with_shfl
            } else if fenced && fence_ok {
                with_fence
            } else {
                options
            };
            break (program, allowed >= lws, private, built_with);
        }
        lws = pow2_floor(allowed).max(64);
    };
    // The staged vector gets the local memory the reduction arrays of the work-group
    // size built (not the one first asked for) leave.
    let free = ((info.local_mem as usize) / 4).saturating_sub(3 * lws + MAX_HD + 64);
    let max_vec = ((free as f64 / per_elem) as usize / 32 * 32).min(BLOCK_MAX_VEC);
    // The chunk the kernel was built with (at most its work-group size).
    let ch = ch.min(lws);
    let desc = format!(
        "{lws} work-items, {lpl} layers a launch, {ch}-slot chunks, {}, {private} B private{}",
        if fence_ok && nv_fence && nv_shfl {
            "warp shuffles"
        } else {
            "local-memory reductions"
        },
        if defines.is_empty() {
            String::new()
        } else {
            format!(", built with {defines}")
        },
    );
    Ok((
        program,
        BlockBuild {
            lws,
            max_vec,
            lpl,
            ch,
            nv_fence,
            fence_ok,
            fits,
            int8,
            wide,
            wide_from: opts.block_wide_from.unwrap_or(super::block::WIDE_FROM),
            desc,
            options: built_with,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The facts Rust owns reach the kernels only through the generated header: it
    /// carries every code and block size, and no `.cl` file writes one out.
    #[test]
    fn dtype_facts_come_from_rust() {
        let h = generated_header();
        for t in DType::ALL {
            if let Some(code) = dtype_code(t) {
                let name = t.name().to_ascii_uppercase();
                assert!(h.contains(&format!("#define T_{name} {code}\n")), "{h}");
                if t.is_quantized() {
                    assert!(
                        h.contains(&format!("#define {name}_BYTES {}\n", t.block_bytes())),
                        "{h}"
                    );
                }
            }
        }
        assert!(h.contains(&format!("#define QK {}\n", crate::dtype::QK4_0)));
        for (file, src) in antigravity_kernels::SOURCES.iter().chain(antigravity_kernels::PRELUDES) {
            for fact in [
                "#define T_",
                "#define QK",
                "#define Q4_0_BYTES",
                "#define Q4_1_BYTES",
                "#define Q8_0_BYTES",
                "#define QK_K",
                "#define Q4_K_BYTES",
                "#define Q6_K_BYTES",
            ] {
                assert!(!src.contains(fact), "{file} defines `{fact}` itself");
            }
        }
    }

    /// Every family's source starts with the header and the preludes, in order.
    #[test]
    fn sources_are_header_preludes_family() {
        let src = program_source("rope.cl").unwrap();
        let at = |needle: &str| src.find(needle).unwrap_or_else(|| panic!("{needle} missing"));
        assert!(src.starts_with(&generated_header()));
        assert!(at("// ---- common/dtype.cl") < at("// ---- common/reduce.cl"));
        assert!(at("// ---- common/reduce.cl") < at("// ---- common/rope.cl"));
        assert!(at("// ---- common/rope.cl") < at("// ---- rope.cl"));
    }
}
