//! OpenCL C sources for Antigravity's GPU backend, one kernel family per `.cl` file
//! (named after the op and its types, as ggml names them: `mul_mv_q4_0_f32.cl`),
//! embedded with `include_str!` so the binary needs no files at run time.
//! (The OpenCL backend that compiles them lives in `antigravity-core`, module `opencl`.)
//!
//! Every source is portable OpenCL C 1.2: f32 arithmetic, no `cl_khr_fp16` (f16 data is
//! read with `vload_half`), no subgroups; images only in `mul_mv_q4_0_img_f32.cl`, which
//! the backend builds only on devices that have them and only when its image path is on. Build options the backend passes:
//! `LWS` (work-group size of the reduction kernels, a power of two), `NT` (tokens per
//! matmul work-group) and `MAX_HD` (largest attention head size).
//!
//! Offsets are kernel arguments, never sub-buffers: weights (`w`, `table`) are addressed
//! in bytes, f32 activations in elements. That is what lets an imported, only 32-byte
//! aligned GGUF tensor be read in place.
//!
//! For kernel development, `ANTIGRAVITY_KERNEL_DIR=path/to/kernels/cl` makes [`source`]
//! read the files from disk instead (no rebuild of the Rust code needed).

use std::borrow::Cow;

/// `add_f32`: `dst += src`.
pub const ADD: &str = include_str!("../cl/add.cl");
/// `silu_mul_f32`: `out = silu(gate) * up`.
pub const SILU_MUL: &str = include_str!("../cl/silu_mul.cl");
/// `rms_norm_f32`, `add_rms_norm_f32` (residual add fused with the norm).
pub const RMS_NORM: &str = include_str!("../cl/rms_norm.cl");
/// `softmax_f32` (row-wise, in place).
pub const SOFTMAX: &str = include_str!("../cl/softmax.cl");
/// `rope_f32` (adjacent-pair and half-split styles), `rope_qk_f32` (q and k at once).
pub const ROPE: &str = include_str!("../cl/rope.cl");
/// `get_rows_{f32,f16,bf16,q4_0,q4_1,q8_0}`.
pub const GET_ROWS: &str = include_str!("../cl/get_rows.cl");
/// `attention_f32`: causal GQA over the KV cache, online softmax (decode, small batches);
/// `attention_prefill_f32`: the same with K/V tiles shared by 32 query rows (prefill).
pub const ATTENTION: &str = include_str!("../cl/attention.cl");
/// `mul_mv_q4_0_f32`.
pub const MUL_MV_Q4_0_F32: &str = include_str!("../cl/mul_mv_q4_0_f32.cl");
/// `mul_mv_q4_1_f32`.
pub const MUL_MV_Q4_1_F32: &str = include_str!("../cl/mul_mv_q4_1_f32.cl");
/// `mul_mv_q8_0_f32`.
pub const MUL_MV_Q8_0_F32: &str = include_str!("../cl/mul_mv_q8_0_f32.cl");
/// `mul_mv_q4_0_img_f32`: Q4_0 weights repacked into two `image1d_buffer_t` planes
/// (quants and scales apart). Needs image support; built only when the image path is on.
pub const MUL_MV_Q4_0_IMG_F32: &str = include_str!("../cl/mul_mv_q4_0_img_f32.cl");
/// `mul_mv_f16_f32`.
pub const MUL_MV_F16_F32: &str = include_str!("../cl/mul_mv_f16_f32.cl");
/// `mul_mv_bf16_f32`.
pub const MUL_MV_BF16_F32: &str = include_str!("../cl/mul_mv_bf16_f32.cl");
/// `mul_mv_f32_f32`.
pub const MUL_MV_F32_F32: &str = include_str!("../cl/mul_mv_f32_f32.cl");
/// `mul_mv3_{q4_0,q4_1,q8_0}_f32` (three matmuls of one input) and
/// `mul_mv_swiglu_{q4_0,q4_1,q8_0}_f32` (gate and up matmuls with SwiGLU).
pub const MUL_MV_FUSED: &str = include_str!("../cl/mul_mv_fused.cl");
/// `mul_mm_{f32,f16,bf16,q4_0,q4_1,q8_0}_f32`: tiled prefill matmul (optionally split-K,
/// `mul_mm_reduce_f32` sums the partials); `mul_mm3_{q4_0,q4_1,q8_0}_f32` (Q/K/V in one
/// grid) and `mul_mm_swiglu_{q4_0,q4_1,q8_0}_f32` (gate, up and SwiGLU).
pub const MUL_MM: &str = include_str!("../cl/mul_mm.cl");

/// `llama_blocks_f32` (up to four decode blocks per persistent launch) and
/// `llama_head_f32` (final norm + output projection).
pub const BLOCK: &str = include_str!("../cl/block.cl");

/// `(file name, source)` of every kernel family.
pub const SOURCES: &[(&str, &str)] = &[
    ("add.cl", ADD),
    ("silu_mul.cl", SILU_MUL),
    ("rms_norm.cl", RMS_NORM),
    ("softmax.cl", SOFTMAX),
    ("rope.cl", ROPE),
    ("get_rows.cl", GET_ROWS),
    ("attention.cl", ATTENTION),
    ("mul_mv_q4_0_f32.cl", MUL_MV_Q4_0_F32),
    ("mul_mv_q4_1_f32.cl", MUL_MV_Q4_1_F32),
    ("mul_mv_q8_0_f32.cl", MUL_MV_Q8_0_F32),
    ("mul_mv_q4_0_img_f32.cl", MUL_MV_Q4_0_IMG_F32),
    ("mul_mv_f16_f32.cl", MUL_MV_F16_F32),
    ("mul_mv_bf16_f32.cl", MUL_MV_BF16_F32),
    ("mul_mv_f32_f32.cl", MUL_MV_F32_F32),
    ("mul_mv_fused.cl", MUL_MV_FUSED),
    ("mul_mm.cl", MUL_MM),
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

/// The source of kernel family `file` (e.g. `"rope.cl"`): read from
/// `$ANTIGRAVITY_KERNEL_DIR/file` when that variable is set, else the embedded copy.
/// `None` when `file` is not a known family; an error when the directory is set but the
/// file cannot be read (a developer asked for it, so silently using the embedded copy
/// would hide their edit).
pub fn source(file: &str) -> Option<std::io::Result<(Cow<'static, str>, Origin)>> {
    let embedded = SOURCES.iter().find(|(name, _)| *name == file)?.1;
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
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/cl"))
            .unwrap()
            .count();
        assert_eq!(on_disk, SOURCES.len(), "a .cl file is missing from SOURCES");
    }
}
