//! OpenCL C sources for Antigravity's GPU backend, one kernel family per `.cl` file
//! (named after the op and its types, as ggml names them: `mul_mv_q4_0_f32.cl`),
//! embedded with `include_str!` so the binary needs no files at run time.
//! (The OpenCL backend that compiles them lives in `antigravity-core`, module `opencl`.)
//!
//! **Shared preludes** ([`PRELUDES`], `cl/common/`): the backend builds every family as
//! one source — a header it generates from Rust's `DType` (dtype codes `T_F32` … `T_Q8_0`,
//! `QK`, `Q4_0_BYTES` …: constants shared with Rust are never written in a `.cl` file),
//! then `common/dtype.cl` (ggml block decoding: the Q4 nibble helpers, `row_bytes`),
//! `common/reduce.cl` (work-group reductions: the per-op trees, the mul_mv epilogue
//! `reduce_store_nt`, and `block.cl`'s `wg_sum` / `row_reduce` with their NVIDIA
//! warp-shuffle variant), `common/rope.cl` (the RoPE pair indices and rotation),
//! `common/kv.cl` (a KV-cache head in the cache dtype `KV_T`, a build option of the
//! families that read the cache) and `common/int8.cl` (4-way int8 dot products), then
//! the family. The per-op kernels and the whole-block kernel call the same functions.
//!
//! **Portability.** The sources are OpenCL C 1.2: f32 arithmetic, no `cl_khr_fp16` (f16
//! data is read with `vload_half`), no OpenCL subgroups. Two device-specific paths are
//! compiled only when the backend asks for them: `block.cl` (and `common/reduce.cl`)
//! carry inline NVIDIA PTX behind `AG_NV_FENCE` (the grid barrier's release/acquire,
//! `%globaltimer`) and `AG_NV_SHFL` (`shfl.sync` reductions), which the backend tries on
//! NVIDIA devices only and drops when the compiler refuses them; images are used only in
//! `mul_mv_q4_0_img_f32.cl`, built only on devices that have them with the image path
//! on. Build options the backend passes: `LWS` (work-group size, a power of two), `NT`
//! (tokens per matmul work-group; not for `block.cl`), `MAX_HD` (largest attention head
//! size), and for `block.cl` `CH` (attention chunk) and `LPL` (layers per launch).
//!
//! Offsets are kernel arguments, never sub-buffers: weights (`w`, `table`) are addressed
//! in bytes, f32 activations in elements. That is what lets an imported, only 32-byte
//! aligned GGUF tensor be read in place.
//!
//! Kernel names are written out in full in the sources (a macro that stamps out a dtype
//! variant takes the kernel's name as its first argument), so `grep mul_mm3_q4_0_f32`
//! finds the kernel, its Rust launcher (`core/src/opencl/kernels.rs`) and its test.
//!
//! For kernel development, `ANTIGRAVITY_KERNEL_DIR=path/to/kernels/cl` makes [`source`]
//! read the files (preludes included) from disk instead (no rebuild of the Rust code
//! needed).

use std::borrow::Cow;

/// `add_f32`: `dst += src`.
pub const ADD: &str = include_str!("../cl/add.cl");
/// `silu_mul_f32`: `out = silu(gate) * up`.
pub const SILU_MUL: &str = include_str!("../cl/silu_mul.cl");
/// `rms_norm_f32`.
pub const RMS_NORM: &str = include_str!("../cl/rms_norm.cl");
/// `softmax_f32` (row-wise, in place).
pub const SOFTMAX: &str = include_str!("../cl/softmax.cl");
/// `rope_f32` (adjacent-pair and half-split styles), `rope_qk_f32` (q and k at once).
pub const ROPE: &str = include_str!("../cl/rope.cl");
/// `get_rows_f32`, `get_rows_f16`, `get_rows_bf16`, `get_rows_q4_0`, `get_rows_q4_1`,
/// `get_rows_q8_0`, `get_rows_q5_0`, `get_rows_q5_1`, `get_rows_q4_k`, `get_rows_q5_k`,
/// `get_rows_q6_k`.
pub const GET_ROWS: &str = include_str!("../cl/get_rows.cl");
/// `attention_f32`: causal GQA over the KV cache, online softmax (decode, small batches);
/// `attention_prefill_f32`: the same with K/V tiles shared by 32 query rows (prefill).
/// Built once per KV-cache dtype (`-DKV_T`, `common/kv.cl`): K and V read as stored.
pub const ATTENTION: &str = include_str!("../cl/attention.cl");
/// `move_rows_u16` (compaction), `rope_shift_f32` (re-rotation) and `attention_mass_f32`
/// (per-slot attention mass): the KV cache's eviction ops. Built once per KV-cache dtype
/// like `ATTENTION`.
pub const KV_CACHE: &str = include_str!("../cl/kv_cache.cl");
/// `mul_mv_q4_0_f32`.
pub const MUL_MV_Q4_0_F32: &str = include_str!("../cl/mul_mv_q4_0_f32.cl");
/// `mul_mv_q4_1_f32`.
pub const MUL_MV_Q4_1_F32: &str = include_str!("../cl/mul_mv_q4_1_f32.cl");
/// `mul_mv_q8_0_f32`.
pub const MUL_MV_Q8_0_F32: &str = include_str!("../cl/mul_mv_q8_0_f32.cl");
/// `mul_mv_q5_0_f32`, `mul_mv_q5_1_f32`, `mul_mv_q4_k_f32`, `mul_mv_q5_k_f32`,
/// `mul_mv_q6_k_f32` (the per-op path for the types of a `Q4_K_M`/`Q5_K_M` file).
pub const MUL_MV_KQ_F32: &str = include_str!("../cl/mul_mv_kq_f32.cl");
/// `mul_mv_q4_0_img_f32`: Q4_0 weights repacked into two `image1d_buffer_t` planes
/// (quants and scales apart). Needs image support; built only when the image path is on.
pub const MUL_MV_Q4_0_IMG_F32: &str = include_str!("../cl/mul_mv_q4_0_img_f32.cl");
/// `mul_mv_f16_f32`.
pub const MUL_MV_F16_F32: &str = include_str!("../cl/mul_mv_f16_f32.cl");
/// `mul_mv_bf16_f32`.
pub const MUL_MV_BF16_F32: &str = include_str!("../cl/mul_mv_bf16_f32.cl");
/// `mul_mv_f32_f32`.
pub const MUL_MV_F32_F32: &str = include_str!("../cl/mul_mv_f32_f32.cl");
/// `mul_mv3_q4_0_f32`, `mul_mv3_q4_1_f32`, `mul_mv3_q8_0_f32` (RMS norm + three matmuls
/// of one input) and `mul_mv_swiglu_q4_0_f32`, `mul_mv_swiglu_q4_1_f32`,
/// `mul_mv_swiglu_q8_0_f32` (RMS norm + gate and up matmuls with SwiGLU).
pub const MUL_MV_FUSED: &str = include_str!("../cl/mul_mv_fused.cl");
/// `mul_mm_{f32,f16,bf16,q4_0,q4_1,q8_0}_f32`: tiled prefill matmul (optionally split-K,
/// `mul_mm_reduce_f32` sums the partials); `mul_mm3_{q4_0,q4_1,q8_0}_f32` (Q/K/V in one
/// grid) and `mul_mm_swiglu_{q4_0,q4_1,q8_0}_f32` (gate, up and SwiGLU). Each is named in
/// full where the file instantiates it.
pub const MUL_MM: &str = include_str!("../cl/mul_mm.cl");
/// `mul_mm_{q5_0,q5_1,q4_k,q5_k,q6_k}_f32`, `mul_mm3_…` and `mul_mm_swiglu_…` for the same
/// types (a Q4_K_M / Q5_K_M file's): mul_mm.cl's tiled kernels with K-quant weight
/// loaders. Built after `mul_mm.cl` in one program (its macros).
pub const MUL_MM_KQ_F32: &str = include_str!("../cl/mul_mm_kq_f32.cl");
/// `quantize_q8_1_f32` (activations to int8 blocks of 32 with scale and sum, once per
/// matmul input) and the int8 prefill matmuls `mul_mm_{q4_0,q4_1,q8_0,q5_0,q5_1,q4_k,q5_k}_q8_1`,
/// `mul_mm3_…_q8_1`, `mul_mm_swiglu_…_q8_1`: 4-way int8 dot products (`dp4a`) on int8
/// tiles in local memory, or NVIDIA `mma.sync` int8 with `AG_NV_MMA`.
pub const MUL_MM_Q8_1: &str = include_str!("../cl/mul_mm_q8_1.cl");

/// `llama_blocks_f32` (up to four decode blocks per persistent launch) and
/// `llama_head_f32` (final norm + output projection).
pub const BLOCK: &str = include_str!("../cl/block.cl");

/// `common/dtype.cl`: ggml block decoding (Q4 nibbles, row bytes) and dtype helpers.
pub const COMMON_DTYPE: &str = include_str!("../cl/common/dtype.cl");
/// `common/reduce.cl`: work-group reductions (trees, the mul_mv epilogue, block.cl's
/// reductions with the NVIDIA warp-shuffle variant).
pub const COMMON_REDUCE: &str = include_str!("../cl/common/reduce.cl");
/// `common/rope.cl`: RoPE pair indices and rotation.
pub const COMMON_ROPE: &str = include_str!("../cl/common/rope.cl");
/// `common/kv.cl`: one KV-cache head in the cache dtype `KV_T` (f32, f16, Q8_0 blocks),
/// read as f32 and written back; ggml's Q8_0 block quantizer.
pub const COMMON_KV: &str = include_str!("../cl/common/kv.cl");
/// `common/int8.cl`: 4-way int8 dot products (`dp4a_us`, `dp4a_ss`; PTX with `AG_NV_DP4A`).
pub const COMMON_INT8: &str = include_str!("../cl/common/int8.cl");

/// `(file name, source)` of the shared preludes, in the order they are prepended to
/// every family (after the backend's generated header).
pub const PRELUDES: &[(&str, &str)] = &[
    ("common/dtype.cl", COMMON_DTYPE),
    ("common/reduce.cl", COMMON_REDUCE),
    ("common/rope.cl", COMMON_ROPE),
    ("common/kv.cl", COMMON_KV),
    ("common/int8.cl", COMMON_INT8),
];

/// `(file name, source)` of every kernel family.
pub const SOURCES: &[(&str, &str)] = &[
    ("add.cl", ADD),
    ("silu_mul.cl", SILU_MUL),
    ("rms_norm.cl", RMS_NORM),
    ("softmax.cl", SOFTMAX),
    ("rope.cl", ROPE),
    ("get_rows.cl", GET_ROWS),
    ("attention.cl", ATTENTION),
    ("kv_cache.cl", KV_CACHE),
    ("mul_mv_q4_0_f32.cl", MUL_MV_Q4_0_F32),
    ("mul_mv_q4_1_f32.cl", MUL_MV_Q4_1_F32),
    ("mul_mv_q8_0_f32.cl", MUL_MV_Q8_0_F32),
    ("mul_mv_kq_f32.cl", MUL_MV_KQ_F32),
    ("mul_mv_q4_0_img_f32.cl", MUL_MV_Q4_0_IMG_F32),
    ("mul_mv_f16_f32.cl", MUL_MV_F16_F32),
    ("mul_mv_bf16_f32.cl", MUL_MV_BF16_F32),
    ("mul_mv_f32_f32.cl", MUL_MV_F32_F32),
    ("mul_mv_fused.cl", MUL_MV_FUSED),
    ("mul_mm.cl", MUL_MM),
    ("mul_mm_kq_f32.cl", MUL_MM_KQ_F32),
    ("mul_mm_q8_1.cl", MUL_MM_Q8_1),
    ("block.cl", BLOCK),
];

/// Environment variable naming a directory to load `.cl` files from instead of the
/// embedded copies.
pub const KERNEL_DIR_ENV: &str = "ANTIGRAVITY_KERNEL_DIR";

/// Where a source came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    Disk,
}

/// The source of kernel family or prelude `file` (e.g. `"rope.cl"`,
/// `"common/reduce.cl"`): read from
/// `$ANTIGRAVITY_KERNEL_DIR/file` when that variable is set, else the embedded copy.
/// `None` when `file` is not a known family or prelude; an error when the directory is set but the
/// file cannot be read (a developer asked for it, so silently using the embedded copy
/// would hide their edit).
pub fn source(file: &str) -> Option<std::io::Result<(Cow<'static, str>, Origin)>> {
    let embedded = SOURCES.iter().chain(PRELUDES).find(|(name, _)| *name == file)?.1;
    Some(match std::env::var_os(KERNEL_DIR_ENV) {
        Some(dir) => {
            let path = std::path::Path::new(&dir).join(file);
            std::fs::read_to_string(&path)
                .map(|s| (Cow::Owned(s), Origin::Disk))
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        }
        None => Ok((Cow::Borrowed(embedded), Origin::Embedded)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_listed_once_and_nonempty() {
        for (i, (name, src)) in SOURCES.iter().enumerate() {
            assert!(name.ends_with(".cl"));
            assert!(src.contains("__kernel"), "{name} has no kernel");
            assert!(SOURCES[i + 1..].iter().all(|(n, _)| n != name), "{name} twice");
        }
        let count = |dir: &str| {
            std::fs::read_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "cl"))
                .count()
        };
        assert_eq!(count("cl"), SOURCES.len(), "a .cl file is missing from SOURCES");
        assert_eq!(count("cl/common"), PRELUDES.len(), "a prelude is missing from PRELUDES");
        for (name, src) in PRELUDES {
            assert!(
                !src.contains("__kernel"),
                "{name}: preludes hold functions, not kernels"
            );
        }
    }

    /// A kernel name is written out in full where it is defined (no token pasting), so
    /// a search for it finds it.
    #[test]
    fn kernel_names_are_greppable() {
        for (name, src) in SOURCES {
            assert!(!src.contains("##T##_f32("), "{name}: a token-pasted kernel name");
            assert!(!src.contains("_##T##_"), "{name}: a token-pasted kernel name");
        }
    }
}
