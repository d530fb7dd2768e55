//! Backend conformance: every `Backend` op, on every CPU ISA this machine has and on
//! every OpenCL device present, against the scalar CPU backend (the reference) and,
//! where the op has one, against an f64 reference computed here — after ggml's
//! `test-backend-ops`.
//!
//! The suite is one table, [`ROWS`]: an op, the weight dtypes and shapes it runs at, and
//! the limits of its comparisons, each with the reason for its value beside it. One
//! generic function runs an op on any backend ([`exec`]); one test per op runs its rows
//! on every target. Inputs are deterministic; every view sits at a nonzero offset in its
//! buffer (activations 3 floats in, weights 2 or 32 bytes in, like GGUF tensors), so
//! offset handling is covered too. Shapes: SmolLM2-135M's (hidden 576, FFN 1536, vocab
//! 49152, 9 query / 3 KV heads, head dim 64), Llama-3.2-1B's attention (32/8 heads), and
//! odd sizes (tails, partial tiles, 1 / 5 / 7 / 37 / 64 tokens, contexts 1 to 2 103).
//!
//! Behaviour an op's numbers do not show — bad indices, the op layer's refusals, the
//! OpenCL persistent block kernel's grids, memory, profiling, the image weight path —
//! is checked after the table, by name. Run with `--nocapture` to see every comparison.
//! Without an OpenCL device the OpenCL rows print `SKIP:` with the reason
//! (`ANTIGRAVITY_OPENCL_REQUIRED=1` makes that a failure); `ANTIGRAVITY_OPENCL_DEVICE`
//! narrows the devices. Speed profiles are `core/benches/opencl_profiles.rs`.

#[cfg(feature = "opencl")]
#[path = "conformance/opencl.rs"]
mod opencl;
#[path = "conformance/support.rs"]
mod support;

use antigravity_core::backend::{AttnParams, BlockKv, BlockParams, BlockScratch, BlockWeights, LayerFn, RopeStyle};
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::model::llama::llama_block as composed_block;
use antigravity_core::rope::{self, Llama3Scaling};
use antigravity_core::{ops, Backend, BufferKind, DType, Shape, TensorMut, TensorRef};
use support::*;

// --- the table ------------------------------------------------------------------------

/// An op and the meaning of its shape numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    /// `[rows, cols, ids…]`: the table's shape, then the token ids looked up.
    GetRows,
    /// `[rows, cols, ids…]`: as `GetRows`, the ids on the device as f32 (as argmax
    /// writes them).
    GetRowsAt,
    /// `[n_out, n_in, n_tok]`, the weight entering as [`Import`] says.
    Matmul(Import),
    /// `[rows, n]`.
    RmsNorm,
    /// `[n_tok, heads, head_dim, pos0, llama3]`: `llama3` 1 scales the frequencies
    /// (factor 8, original context 64: visible at head_dim 64), 0 is plain base 100 000.
    Rope(RopeStyle),
    /// `[n_head, n_kv_head, head_dim, n_tok, n_past, capacity]`.
    Attention,
    /// `[rows, n]`: f32 rows converted into a view of the row's cache dtype (read back
    /// widened / dequantized).
    StoreRows,
    /// `[rows, n]`, in place.
    Softmax,
    /// `[rows, n]`.
    Swiglu,
    /// `[rows, n]`: `dst += src`.
    Add,
    /// `[rows, n, pattern]`: 0 random, 1 a tie at 1234 and 4321, 2 NaN at 10 and n−1,
    /// 3 all −inf, 4 NaN at 1500, 5 maxima at the end of row 1 and at 1024 and 3000 of
    /// row 2 (rows over 4096 take the OpenCL two-pass kernels).
    Argmax,
    /// `[n_out, n_in, n_tok]`: `y += x · wᵀ`.
    MatmulAdd,
    /// `[n_tok, n_head, n_kv_head, head_dim, pos0]`.
    RopeQk(RopeStyle),
    /// `[n_q, n_k, n_v, n_in, n_tok]`: the norm, then Q, K, V.
    RmsNormMatmul3,
    /// `[n_ffn, n_in, n_tok]`: the norm, gate, up, SwiGLU.
    RmsNormMatmulSwiglu,
    /// `[n_out, n_in, n_tok]`: the head, norm then projection.
    RmsNormMatmul,
    /// `[n_head, n_kv_head, n_past, style]` (style 0 adjacent, 1 half-split) on dim 256,
    /// head dim 64, FFN 512, 320 cache slots; the seven matrices take the row's dtypes
    /// in turn.
    LlamaBlock,
    /// `[n_layer, n_past]` on dim 128, 4/2 heads of 32, FFN 256, 96 slots; matrix `m`
    /// of layer `l` has dtype `dtypes[(l + m) % len]`.
    LlamaBlocks,
    /// `[n_head, n_kv_head, head_dim, n_tok, n_past, capacity]`: attention and the
    /// per-slot mass added into a (random) starting mass.
    AttentionMass,
    /// `[n_rows, heads, head_dim, start, count, pos0]`: eviction of rows
    /// `start..start + count` from a cache of keys rotated at `pos0 + r` — `rope`, then
    /// `move_rows` (compaction) and `rope_shift` by `-count` (re-rotation) — against the
    /// raw keys rotated from scratch at their new positions.
    EvictShift(RopeStyle),
}

impl Op {
    /// The `Backend` method (and `ops` function) the op runs — the name its scalar twin,
    /// SIMD variants, OpenCL kernel family and bench are found by.
    fn name(self) -> &'static str {
        match self {
            Op::GetRows => "get_rows",
            Op::GetRowsAt => "get_rows_at",
            Op::Matmul(_) => "matmul",
            Op::RmsNorm => "rms_norm",
            Op::Rope(_) => "rope",
            Op::Attention => "attention",
            Op::StoreRows => "store_rows",
            Op::Softmax => "softmax",
            Op::Swiglu => "swiglu",
            Op::Add => "add",
            Op::Argmax => "argmax",
            Op::MatmulAdd => "matmul_add",
            Op::RopeQk(_) => "rope_qk",
            Op::RmsNormMatmul3 => "rms_norm_matmul3",
            Op::RmsNormMatmulSwiglu => "rms_norm_matmul_swiglu",
            Op::RmsNormMatmul => "rms_norm_matmul",
            Op::LlamaBlock => "llama_block",
            Op::LlamaBlocks => "llama_blocks",
            Op::AttentionMass => "attention_mass",
            Op::EvictShift(_) => "move_rows",
        }
    }
    /// What distinguishes rows of the same op.
    fn variant(self) -> &'static str {
        match self {
            Op::Matmul(Import::Host) => "host ",
            Op::Matmul(Import::Loader) => "loader ",
            Op::Rope(RopeStyle::Adjacent) | Op::RopeQk(RopeStyle::Adjacent) => "adjacent ",
            Op::Rope(RopeStyle::HalfSplit) | Op::RopeQk(RopeStyle::HalfSplit) => "half-split ",
            Op::EvictShift(RopeStyle::Adjacent) => "+ rope_shift adjacent ",
            Op::EvictShift(RopeStyle::HalfSplit) => "+ rope_shift half-split ",
            _ => "",
        }
    }
}

/// Every op of the `Backend` trait (its methods after the memory ones).
const TRAIT_OPS: [&str; 21] = [
    "get_rows",
    "get_rows_at",
    "matmul",
    "rms_norm",
    "rope",
    "attention",
    "store_rows",
    "softmax",
    "swiglu",
    "argmax",
    "add",
    "matmul_add",
    "rope_qk",
    "rms_norm_matmul3",
    "rms_norm_matmul_swiglu",
    "rms_norm_matmul",
    "llama_block",
    "llama_blocks",
    "attention_mass",
    "move_rows",
    "rope_shift",
];

/// One line of the table: `op` at every dtype × shape, with the limit against the scalar
/// CPU (`[a CPU ISA, an OpenCL device]`) and, where the op has one here, against f64.
#[derive(Clone, Copy)]
struct Row {
    op: Op,
    dtypes: &'static [DType],
    shapes: &'static [&'static [usize]],
    vs_scalar: [Limit; 2],
    vs_f64: Option<[Limit; 2]>,
}

const F32: &[DType] = &[DType::F32];

// Limits shared by several rows, each with its reason.
const SAME: Limit = exact("the same kernels and arithmetic in the same order");
const DEQUANT: Limit = exact(
    "dequantization and f16/bf16 widening are exact in f32 (get_rows.cl turns FP contraction \
     off, so q·d + m rounds like the CPU's)",
);
const Q8_ACT: Limit = nmse(
    5e-4,
    "the CPU quantizes activations to Q8_0/Q8_1 before its integer dot products: for a \
     Gaussian row the rounding adds relative noise ≈ (amax/127)²/12 / E[x²] ≈ 3e-5 per \
     element, so NMSE ~1e-5..1e-4; a wrong block layout gives ~1",
);
#[cfg(feature = "opencl")]
const MMQ_SAME_Q8: Limit = nmse(
    1e-6,
    "the int8 prefill matmuls quantize activations to Q8_0/Q8_1 blocks exactly as the CPU \
     does and sum integer products exactly; the per-block f32 terms add in another order \
     (~1e-13), and an input an ulp apart (a device's norm, its 1/d) can move one quant by a \
     step: (amax/127)² of one element in n·E[x²] ≈ 1e-7 each; a wrong layout gives ~1",
);
const F32_SUMS: Limit = nmse(
    1e-10,
    "f32 accumulation in another order (tree vs sequential, split-K, SIMD lanes); n ≤ 1536 \
     terms: ~1e-13",
);
const SIMD_Q8: Limit = nmse(
    1e-10,
    "every ISA quantizes activations with the same Q8 rounding and sums integer products \
     exactly; only the f32 sums of per-block partials differ in order",
);
const F32_NORM: Limit = nmse(
    1e-12,
    "one f32 sum of squares (≤ 1536 terms) in another order, then the same elementwise math",
);
const ROPE_ANGLE: Limit = nmse(
    1e-10,
    "the angle pos·f is formed in f32 on both sides; sin/cos within 4 ulp (OpenCL) or 1 ulp \
     (libm)",
);
const ROPE_F64: Limit = nmse(
    1e-8,
    "the angle pos·f is formed in f32, as transformers does: at pos ≤ 2047 its rounding is \
     ≤ 2047·2⁻²⁴·f rad, sin/cos ulps on top",
);
const ATTN_F32: Limit = nmse(
    1e-10,
    "online (tiled) vs two-pass softmax: exp arguments, rescaling and sums in another order, \
     each f32-rounded; exp within 3 ulp",
);
const ATTN_Q8: Limit = nmse(
    1e-9,
    "Q8_0 cache: the query quantized byte-identically and exact integer block sums; the f32 \
     block combination, softmax and value sums reassociated (SIMD lanes, FMA)",
);
const ATTN_Q8_QUERY: Limit = nmse(
    1e-4,
    "Q8_0 cache: the scores quantize the query head to Q8_0 (as llama.cpp does), half a step \
     (amax/254) per element, which the f64 reference on the f32 query does not",
);
const STORE_SAME: Limit = nmse(
    1e-12,
    "the same rounding (f16 nearest-even; Q8_0 d = amax/127 and round-half-away), only a \
     device's f32 division may differ by an ulp and move a quant by one step",
);
const STORE_ROUNDING: Limit = nmse(
    6e-5,
    "the cache dtype's own rounding: f16 2^-11 relative; Q8_0 a uniform error of one step \
     (amax/127) per value, variance step²/12 — for 32 normal draws amax ≈ 2.4σ, NMSE ≈ 3e-5",
);
const ATTN_MASS: Limit = nmse(
    1e-10,
    "softmax weights from an online max/sum (exp within 3 ulp), added atomically in any order",
);
const EXP_F32: Limit = nmse(1e-11, "elementwise exp within 3 ulp and a few f32 roundings");
const FUSED_DEVICE: Limit = nmse(
    1e-10,
    "a fused kernel vs the CPU's composition of the same f32 ops: summation order only",
);
const BLOCK_Q8: Limit = nmse(
    5e-4,
    "the CPU's Q8 activations (see Q8_ACT) through seven matmuls of mixed dtypes; attention, \
     norms and RoPE add ~1e-13",
);
const ARGMAX: Limit = exact("an index: the largest value, NaN never wins, ties to the lowest, -1 when none > -inf");

/// Every op of the `Backend` trait, at the shapes and dtypes it runs at.
const ROWS: &[Row] = &[
    // --- Q5_0, Q5_1, Q4_K, Q5_K, Q6_K (what a Q4_K_M / Q5_K_M file holds): rows of 256
    // multiples (the K-quants' super-block). The CPU's activations are Q8_0/Q8_1 (Q5) or
    // Q8_K (K-quants, one scale per 256: the same Q8_ACT noise argument); OpenCL decodes
    // them in get_rows.cl / mul_mv_kq_f32.cl (decode, small batches) and from 16 tokens
    // in mul_mm_kq_f32.cl (the tiled mul_mm, mul_mm3, mul_mm_swiglu); its fused decode
    // ops are the composition over mul_mv.
    Row {
        op: Op::GetRows,
        dtypes: &KQ_DTYPES,
        shapes: &[
            &[1000, 512, 999],
            &[1000, 512, 0, 1, 999, 517, 7],
            &[10, 256, 3, 0, 9, 3],
        ],
        vs_scalar: [DEQUANT, DEQUANT],
        vs_f64: Some([DEQUANT, DEQUANT]),
    },
    Row {
        op: Op::GetRowsAt,
        dtypes: &KQ_DTYPES,
        shapes: &[&[1000, 512, 999, 0, 517, 7, 1], &[10, 256, 3]],
        vs_scalar: [DEQUANT, DEQUANT],
        vs_f64: Some([DEQUANT, DEQUANT]),
    },
    Row {
        op: Op::Matmul(Import::Host),
        dtypes: &KQ_DTYPES,
        shapes: KQ_MATMUL_SHAPES,
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, F32_SUMS]),
    },
    Row {
        op: Op::Matmul(Import::Loader),
        dtypes: &KQ_DTYPES,
        shapes: &[&[576, 1536, 1], &[192, 512, 3], &[8, 256, 9]],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, F32_SUMS]),
    },
    Row {
        op: Op::MatmulAdd,
        dtypes: &KQ_DTYPES,
        shapes: &[&[576, 1536, 1], &[576, 1536, 5], &[13, 256, 37]],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, F32_SUMS]),
    },
    Row {
        op: Op::RmsNormMatmul3,
        dtypes: &KQ_DTYPES,
        shapes: &[&[512, 128, 128, 512, 1], &[100, 36, 36, 256, 5], &[64, 32, 32, 256, 37]],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, FUSED_DEVICE]),
    },
    Row {
        op: Op::RmsNormMatmulSwiglu,
        dtypes: &KQ_DTYPES,
        shapes: &[&[1536, 512, 1], &[200, 256, 5], &[64, 256, 37]],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, FUSED_DEVICE]),
    },
    Row {
        op: Op::RmsNormMatmul,
        dtypes: &KQ_DTYPES,
        shapes: &[&[1000, 256, 1], &[1000, 512, 3], &[40, 256, 1]],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, FUSED_DEVICE]),
    },
    Row {
        op: Op::GetRows,
        dtypes: &WEIGHT_DTYPES,
        shapes: &[
            &[1000, 576, 999],
            &[1000, 576, 0, 1, 999, 517, 7],
            &[10, 64, 3, 0, 9, 3],
        ],
        vs_scalar: [DEQUANT, DEQUANT],
        vs_f64: Some([DEQUANT, DEQUANT]),
    },
    Row {
        // The real embedding table: 49152 × 576 Q8_0.
        op: Op::GetRows,
        dtypes: &[DType::Q8_0],
        shapes: &[&[49152, 576, 49151], &[49152, 576, 0, 1, 49151, 517, 7]],
        vs_scalar: [DEQUANT, DEQUANT],
        vs_f64: Some([DEQUANT, DEQUANT]),
    },
    Row {
        op: Op::GetRowsAt,
        dtypes: &WEIGHT_DTYPES,
        shapes: &[&[1000, 576, 999, 0, 517, 7, 1], &[10, 64, 3]],
        vs_scalar: [DEQUANT, DEQUANT],
        vs_f64: Some([DEQUANT, DEQUANT]),
    },
    Row {
        op: Op::Matmul(Import::Host),
        dtypes: &QUANT_DTYPES,
        shapes: MATMUL_SHAPES,
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([
            Q8_ACT,
            nmse(
                1e-10,
                "f32 weights (dequantized) × f32 x is what a device computes: summation order only",
            ),
        ]),
    },
    Row {
        op: Op::Matmul(Import::Host),
        dtypes: &FLOAT_DTYPES,
        shapes: MATMUL_SHAPES,
        vs_scalar: [F32_SUMS, F32_SUMS],
        vs_f64: Some([F32_SUMS, F32_SUMS]),
    },
    Row {
        op: Op::Matmul(Import::Host),
        dtypes: &FLOAT_DTYPES,
        shapes: MATMUL_FLOAT_TAILS,
        vs_scalar: [F32_SUMS, F32_SUMS],
        vs_f64: Some([F32_SUMS, F32_SUMS]),
    },
    Row {
        // The tied output projection of SmolLM2, decode.
        op: Op::Matmul(Import::Host),
        dtypes: &[DType::Q8_0],
        shapes: &[&[49152, 576, 1]],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, F32_SUMS]),
    },
    Row {
        // As the loaders import weights: on the CPU's SIMD tables the x8 layout
        // (rows in multiples of 8), decode and prefill (up to 4 tokens a pass, and more).
        op: Op::Matmul(Import::Loader),
        dtypes: &QUANT_DTYPES,
        shapes: &[
            &[576, 576, 1],
            &[192, 576, 3],
            &[1536, 576, 4],
            &[576, 1536, 9],
            &[8, 32, 1],
        ],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, F32_SUMS]),
    },
    Row {
        op: Op::Matmul(Import::Loader),
        dtypes: &FLOAT_DTYPES,
        shapes: &[&[576, 576, 1], &[192, 576, 3]],
        vs_scalar: [F32_SUMS, F32_SUMS],
        vs_f64: Some([F32_SUMS, F32_SUMS]),
    },
    Row {
        op: Op::RmsNorm,
        dtypes: F32,
        shapes: &[&[1, 576], &[5, 576], &[5, 1536], &[3, 13], &[3, 96]],
        vs_scalar: [F32_NORM, F32_NORM],
        vs_f64: Some([F32_NORM, F32_NORM]),
    },
    Row {
        op: Op::Rope(RopeStyle::Adjacent),
        dtypes: F32,
        shapes: ROPE_SHAPES,
        vs_scalar: [ROPE_ANGLE, ROPE_ANGLE],
        vs_f64: Some([ROPE_F64, ROPE_F64]),
    },
    Row {
        op: Op::Rope(RopeStyle::HalfSplit),
        dtypes: F32,
        shapes: ROPE_SHAPES,
        vs_scalar: [ROPE_ANGLE, ROPE_ANGLE],
        vs_f64: Some([ROPE_F64, ROPE_F64]),
    },
    Row {
        op: Op::Attention,
        // The KV-cache dtypes (f16 where a backend lists it in `kv_dtypes`).
        dtypes: &[DType::F32, DType::F16],
        shapes: &[
            &[9, 3, 64, 1, 0, 17],       // first token
            &[9, 3, 64, 1, 16, 17],      // decode, context 17
            &[9, 3, 64, 1, 299, 300],    // decode, context 300
            &[9, 3, 64, 5, 0, 17],       // prefill from empty
            &[9, 3, 64, 5, 12, 17],      // prefill chunk after 12
            &[9, 3, 64, 5, 295, 320],    // prefill chunk, context 300
            &[9, 3, 64, 1, 2047, 2048],  // long context decode
            &[9, 3, 64, 4, 253, 300],    // split context, early tokens have an empty last chunk
            &[32, 8, 64, 3, 2100, 2304], // Llama-3.2-1B heads, 2103 slots
            &[4, 4, 128, 2, 40, 64],     // MHA, head 128
            &[8, 1, 64, 3, 7, 16],       // MQA
            &[3, 1, 10, 2, 5, 9],        // head_dim not a multiple of 4
            &[6, 2, 16, 7, 0, 40],       // small heads
            &[6, 2, 16, 1, 20, 40],
            &[6, 2, 16, 4, 13, 40],
            // From 16 query tokens on, OpenCL's attention_prefill_f32 (32-row tiles of (token, head)):
            &[9, 3, 64, 37, 0, 40],       // prefill from empty, partial last row tile
            &[9, 3, 64, 64, 300, 400],    // 64-token chunk after 300 slots
            &[9, 3, 64, 16, 0, 16],       // the threshold itself
            &[32, 8, 64, 19, 2100, 2200], // Llama-3.2-1B heads, long context
            &[8, 1, 64, 20, 5, 32],       // MQA: a row tile holds 4 tokens × 8 heads
            &[4, 4, 64, 17, 33, 64],      // MHA
            &[3, 1, 10, 19, 3, 24],       // head_dim 10 (not a multiple of 4)
            &[2, 2, 128, 16, 1, 24],      // head_dim 128: above the prefill kernel's 64
        ],
        vs_scalar: [ATTN_F32, ATTN_F32],
        vs_f64: Some([ATTN_F32, ATTN_F32]),
    },
    Row {
        op: Op::Attention,
        // A Q8_0 cache (`--kv-type q8_0`): head dims of whole blocks.
        dtypes: &[DType::Q8_0],
        shapes: &[
            &[9, 3, 64, 1, 0, 17],       // first token
            &[9, 3, 64, 1, 299, 300],    // decode, context 300
            &[9, 3, 64, 5, 295, 320],    // prefill chunk, context 300
            &[9, 3, 64, 1, 2047, 2048],  // long context decode
            &[9, 3, 64, 4, 253, 300],    // split context
            &[32, 8, 64, 3, 2100, 2304], // Llama-3.2-1B heads
            &[4, 4, 128, 2, 40, 64],     // MHA, head 128 (4 blocks)
            &[8, 1, 64, 3, 7, 16],       // MQA
            &[6, 2, 32, 7, 0, 40],       // one-block heads
            &[9, 3, 64, 37, 0, 40],      // prefill from empty
            &[2, 2, 256, 3, 10, 24],     // the largest head a Q8_0 cache serves
        ],
        // OpenCL reads the Q8_0 blocks against the f32 query (no query quantization):
        // the CPU's query rounding separates it from the scalar twin, not from f64.
        vs_scalar: [ATTN_Q8, ATTN_Q8_QUERY],
        vs_f64: Some([ATTN_Q8_QUERY, ATTN_F32]),
    },
    Row {
        op: Op::StoreRows,
        dtypes: &[DType::F32, DType::F16, DType::Q8_0],
        shapes: &[&[1, 192], &[5, 192], &[37, 512], &[3, 64]],
        vs_scalar: [STORE_SAME, STORE_SAME],
        vs_f64: Some([STORE_ROUNDING, STORE_ROUNDING]),
    },
    Row {
        op: Op::Softmax,
        dtypes: F32,
        shapes: &[&[1, 49152], &[5, 17], &[3, 300], &[2, 1], &[3, 96]],
        vs_scalar: [
            nmse(
                1e-7,
                "the CPU's exp may be a SIMD polynomial (≤ 2 ulp) summed in lanes instead of in sequence",
            ),
            nmse(
                1e-7,
                "the CPU sums the row's exps sequentially in f32, relative error ~√n·u (biased: up to n·u): \
                 for the 49152-wide logits row alone NMSE ~1e-10..1e-8; the device's tree sum is the more accurate",
            ),
        ],
        vs_f64: Some([
            nmse(
                1e-7,
                "a sequential f32 sum of up to 49152 exps (see the device limit against the CPU)",
            ),
            nmse(1e-11, "tree sums and exp within 3 ulp"),
        ]),
    },
    Row {
        op: Op::Swiglu,
        dtypes: F32,
        shapes: &[&[1, 1536], &[5, 1536], &[1, 13], &[3, 96]],
        vs_scalar: [EXP_F32, EXP_F32],
        vs_f64: Some([EXP_F32, EXP_F32]),
    },
    Row {
        op: Op::Add,
        dtypes: F32,
        shapes: &[&[1, 576], &[5, 576], &[1, 13], &[3, 96]],
        vs_scalar: [
            SAME,
            exact("one f32 addition per element, correctly rounded on both sides"),
        ],
        vs_f64: Some([
            nmse(1e-14, "one f32 rounding of an exact sum: relative error ≤ 2⁻²⁴"),
            nmse(1e-14, "one f32 rounding of an exact sum: relative error ≤ 2⁻²⁴"),
        ]),
    },
    Row {
        op: Op::Argmax,
        dtypes: F32,
        shapes: &[
            &[1, 49152, 0],
            &[1, 1, 0],
            &[1, 7, 0],
            &[1, 1000, 0],
            &[1, 4097, 0],
            &[1, 5000, 1],
            &[1, 3000, 2],
            &[1, 300, 3],
            &[3, 777, 0],
            &[1, 6000, 4],
            &[1, 5000, 3],
            &[3, 5000, 5],
        ],
        vs_scalar: [ARGMAX, ARGMAX],
        vs_f64: Some([ARGMAX, ARGMAX]),
    },
    Row {
        op: Op::MatmulAdd,
        dtypes: &QUANT_DTYPES,
        shapes: &[&[576, 1536, 1], &[576, 1536, 5], &[576, 1536, 37], &[13, 224, 3]],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, F32_SUMS]),
    },
    Row {
        op: Op::MatmulAdd,
        dtypes: &FLOAT_DTYPES,
        shapes: &[&[576, 1536, 1], &[576, 1536, 5], &[576, 1536, 37], &[45, 50, 3]],
        vs_scalar: [F32_SUMS, F32_SUMS],
        vs_f64: Some([F32_SUMS, F32_SUMS]),
    },
    Row {
        op: Op::RopeQk(RopeStyle::Adjacent),
        dtypes: F32,
        shapes: ROPE_QK_SHAPES,
        vs_scalar: [ROPE_ANGLE, ROPE_ANGLE],
        vs_f64: Some([ROPE_F64, ROPE_F64]),
    },
    Row {
        op: Op::RopeQk(RopeStyle::HalfSplit),
        dtypes: F32,
        shapes: ROPE_QK_SHAPES,
        vs_scalar: [ROPE_ANGLE, ROPE_ANGLE],
        vs_f64: Some([ROPE_F64, ROPE_F64]),
    },
    Row {
        // SmolLM2's Q/K/V (576 → 576, 192, 192): 1 and 5 tokens take OpenCL's fused
        // mul_mv kernels, 37 the prefill ones (rms_norm, then mul_mm3); odd sizes: Q/K/V
        // of 100 + 36 + 36 rows (row tiles straddle two weights), n_in 224, 70 tokens
        // (a partial token tile).
        op: Op::RmsNormMatmul3,
        dtypes: &QUANT_DTYPES,
        shapes: &[
            &[576, 192, 192, 576, 1],
            &[576, 192, 192, 576, 5],
            &[576, 192, 192, 576, 37],
            &[100, 36, 36, 224, 70],
        ],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, FUSED_DEVICE]),
    },
    Row {
        // F16 takes the composition over mul_mm on OpenCL.
        op: Op::RmsNormMatmul3,
        dtypes: &[DType::F16],
        shapes: &[
            &[576, 192, 192, 576, 1],
            &[576, 192, 192, 576, 5],
            &[576, 192, 192, 576, 37],
        ],
        vs_scalar: [F32_SUMS, FUSED_DEVICE],
        vs_f64: Some([F32_SUMS, FUSED_DEVICE]),
    },
    Row {
        op: Op::RmsNormMatmulSwiglu,
        dtypes: &QUANT_DTYPES,
        shapes: &[&[1536, 576, 1], &[1536, 576, 5], &[1536, 576, 37], &[200, 224, 70]],
        vs_scalar: [SIMD_Q8, Q8_ACT],
        vs_f64: Some([Q8_ACT, FUSED_DEVICE]),
    },
    Row {
        op: Op::RmsNormMatmulSwiglu,
        dtypes: &[DType::F16],
        shapes: &[&[1536, 576, 1], &[1536, 576, 5], &[1536, 576, 37]],
        vs_scalar: [F32_SUMS, FUSED_DEVICE],
        vs_f64: Some([F32_SUMS, FUSED_DEVICE]),
    },
    Row {
        // The head: one row in decode (OpenCL's llama_head_f32), several for all logits.
        op: Op::RmsNormMatmul,
        dtypes: &WEIGHT_DTYPES,
        shapes: &[&[1000, 256, 1], &[1000, 256, 3], &[40, 64, 1]],
        vs_scalar: [
            nmse(
                1e-10,
                "as SIMD_Q8 for quantized weights, f32 summation order for float ones",
            ),
            Q8_ACT,
        ],
        vs_f64: Some([Q8_ACT, FUSED_DEVICE]),
    },
    Row {
        // GQA groups of 2 (pow2) and 3 (SmolLM2's), MHA, 8 heads on one KV head; both
        // RoPE conventions; contexts of 1, 6 and 301 slots.
        op: Op::LlamaBlock,
        dtypes: &[
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
            DType::F16,
            DType::BF16,
            DType::F32,
            DType::Q4_0,
        ],
        shapes: &[
            &[4, 2, 0, 0],
            &[4, 2, 5, 1],
            &[4, 2, 300, 0],
            &[6, 2, 0, 0],
            &[6, 2, 5, 1],
            &[6, 2, 300, 0],
            &[3, 3, 5, 1],
            &[8, 1, 300, 0],
        ],
        vs_scalar: [
            nmse(
                1e-10,
                "SIMD_Q8 through the block's seven matmuls; the rest is the same f32 arithmetic",
            ),
            BLOCK_Q8,
        ],
        vs_f64: None,
    },
    Row {
        // The types of a Q4_K_M / Q5_K_M file in the block (OpenCL: block.cl's K-quant
        // arms). Wo's rows are n_head · 64 wide (192, 384 for 3 and 6 heads): not a
        // multiple of 256, so Wo is Q5_0 — as llama-quantize's fallback would make it.
        op: Op::LlamaBlock,
        dtypes: &[
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
            DType::Q5_0,
            DType::Q5_1,
            DType::Q4_K,
            DType::Q6_K,
        ],
        shapes: &[
            &[4, 2, 0, 0],
            &[4, 2, 300, 1],
            &[6, 2, 5, 0],
            &[3, 3, 5, 1],
            &[8, 1, 300, 0],
        ],
        vs_scalar: [
            nmse(
                1e-10,
                "SIMD_Q8 through the block's seven matmuls; the rest is the same f32 arithmetic",
            ),
            BLOCK_Q8,
        ],
        vs_f64: None,
    },
    Row {
        op: Op::LlamaBlocks,
        dtypes: &WEIGHT_DTYPES,
        shapes: &[&[5, 70], &[1, 0]],
        vs_scalar: [
            nmse(1e-9, "as LlamaBlock, compounded over 5 layers"),
            nmse(1e-3, "BLOCK_Q8 compounded over 5 layers"),
        ],
        vs_f64: None,
    },
    Row {
        op: Op::AttentionMass,
        dtypes: F32,
        shapes: &[
            &[9, 3, 64, 1, 99, 128],
            &[9, 3, 64, 5, 40, 64],
            &[32, 8, 64, 1, 700, 701],
            &[4, 2, 32, 64, 0, 64],
        ],
        vs_scalar: [ATTN_F32, ATTN_MASS],
        vs_f64: Some([ATTN_F32, ATTN_F32]),
    },
    Row {
        op: Op::AttentionMass,
        dtypes: &[DType::F16],
        shapes: &[&[9, 3, 64, 1, 99, 128], &[9, 3, 64, 5, 40, 64]],
        vs_scalar: [ATTN_F32, ATTN_MASS],
        vs_f64: Some([ATTN_F32, ATTN_F32]),
    },
    Row {
        // The mass over a Q8_0 cache (CPU: the query quantized, as its attention; OpenCL:
        // the f32 query).
        op: Op::AttentionMass,
        dtypes: &[DType::Q8_0],
        shapes: &[&[9, 3, 64, 1, 99, 128], &[9, 3, 64, 5, 40, 64], &[4, 2, 32, 64, 0, 64]],
        vs_scalar: [ATTN_Q8, ATTN_Q8_QUERY],
        vs_f64: Some([ATTN_Q8_QUERY, ATTN_F32]),
    },
    Row {
        op: Op::EvictShift(RopeStyle::Adjacent),
        dtypes: F32,
        shapes: EVICT_SHAPES,
        vs_scalar: [SAME, ROPE_ANGLE],
        vs_f64: Some([EVICT_F64, EVICT_F64]),
    },
    Row {
        op: Op::EvictShift(RopeStyle::HalfSplit),
        dtypes: F32,
        shapes: EVICT_SHAPES,
        vs_scalar: [SAME, ROPE_ANGLE],
        vs_f64: Some([EVICT_F64, EVICT_F64]),
    },
    Row {
        op: Op::EvictShift(RopeStyle::Adjacent),
        dtypes: &[DType::F16],
        shapes: EVICT_SHAPES,
        vs_scalar: [SAME, EVICT_F16_DEVICE],
        vs_f64: Some([EVICT_F16, EVICT_F16]),
    },
    Row {
        op: Op::EvictShift(RopeStyle::HalfSplit),
        dtypes: &[DType::F16],
        shapes: EVICT_SHAPES,
        vs_scalar: [SAME, EVICT_F16_DEVICE],
        vs_f64: Some([EVICT_F16, EVICT_F16]),
    },
    Row {
        // A Q8_0 cache: whole heads decoded, turned and requantized; the half-split pairs
        // span two blocks of a head.
        op: Op::EvictShift(RopeStyle::Adjacent),
        dtypes: &[DType::Q8_0],
        shapes: EVICT_SHAPES,
        vs_scalar: [SAME, EVICT_Q8_DEVICE],
        vs_f64: Some([EVICT_Q8, EVICT_Q8]),
    },
    Row {
        op: Op::EvictShift(RopeStyle::HalfSplit),
        dtypes: &[DType::Q8_0],
        shapes: EVICT_SHAPES,
        vs_scalar: [SAME, EVICT_Q8_DEVICE],
        vs_f64: Some([EVICT_Q8, EVICT_Q8]),
    },
];

/// `[n_out, n_in, n_tok]` of the plain matmul rows (every weight dtype).
const MATMUL_SHAPES: &[&[usize]] = &[
    &[576, 576, 1], // attention q/o projection
    &[576, 576, 5],
    &[1536, 576, 1], // FFN gate/up
    &[1536, 576, 5],
    &[576, 1536, 1], // FFN down
    &[576, 1536, 7],
    &[576, 1536, 64], // OpenCL: the tiled prefill kernel, split-K 4 ways
    &[13, 224, 1],    // odd sizes
    &[13, 224, 5],
    &[13, 224, 37], // OpenCL: the tiled prefill kernel, partial tiles
    &[13, 64, 1],
    &[7, 192, 5],
    &[1, 32, 3],
];

/// `[n_out, n_in, n_tok]` of the matmul rows for [`KQ_DTYPES`] (n_in a multiple of 256).
const KQ_MATMUL_SHAPES: &[&[usize]] = &[
    &[576, 1536, 1], // SmolLM2's FFN down (its only K-quant matrices in Q4_K_M)
    &[576, 1536, 7],
    &[512, 2048, 1], // Llama 3.2 1B's K/V projection shape
    &[13, 256, 5],
    &[13, 512, 37],   // OpenCL: the tiled kernel (mul_mm_kq_f32.cl), partial tiles
    &[576, 1536, 64], // OpenCL: tiled, split-K 4 ways (SmolLM2's down projection in prefill)
    &[1, 256, 3],
];

/// Float weights allow rows that are not whole 32-element tiles.
const MATMUL_FLOAT_TAILS: &[&[usize]] = &[
    &[45, 50, 1], // tails in every kernel
    &[45, 50, 3],
    &[45, 50, 37],
    &[20, 300, 37], // OpenCL split-K in 2 pieces of 160, the second ending in a 12-element tail
];

const ROPE_SHAPES: &[&[usize]] = &[
    &[1, 9, 64, 0, 0],
    &[5, 9, 64, 17, 0],
    &[5, 3, 64, 300, 0],
    &[1, 32, 64, 2047, 0],
    &[2, 4, 128, 5, 0],
    &[5, 3, 64, 250, 1], // llama3 frequency scaling
];

/// Eviction cases: a sink-style drop of one row, a large drop mid-cache, a drop at the
/// start (window) from keys at high positions (where the angle's f32 rounding shows).
const EVICT_SHAPES: &[&[usize]] = &[
    &[40, 3, 64, 4, 1, 0],
    &[300, 3, 64, 4, 150, 0],
    &[64, 8, 64, 0, 32, 4000],
];
const EVICT_F64: Limit = nmse(
    1e-7,
    "two rotations (at p, then by -count), each angle formed in f32: at p ≤ 4064 its rounding \
     is ≤ 2.4e-4 rad in the fastest pair (f = 1), far less in the others",
);
const EVICT_F16: Limit = nmse(
    2e-6,
    "the f16 cache rounds three times (stored, rotated, re-rotated), ≤ 2⁻¹¹ relative each: \
     NMSE ≈ 3 · 2⁻²²/3 ≈ 2.4e-7, plus the f32 angle (see EVICT_F64)",
);

const EVICT_F16_DEVICE: Limit = nmse(
    1e-8,
    "the same three f16 roundings; a device's sin/cos (4 ulp) may put a rotated value on the \
     other side of an f16 rounding boundary: one step of 2⁻¹¹ relative in a few values",
);
const EVICT_Q8: Limit = nmse(
    2e-4,
    "a Q8_0 cache quantizes twice (stored rotated, then re-rotated and requantized), each a \
     uniform error of one step amax/127: NMSE ≈ 2 × 3e-5 (see STORE_ROUNDING), plus the f32 \
     angle (EVICT_F64)",
);
const EVICT_Q8_DEVICE: Limit = nmse(
    1e-6,
    "the same quantizer; a device's sin/cos (4 ulp) or f32 division may move a value across a \
     rounding boundary: one quant step (≈ 0.02σ) in a handful of ~10⁴ values, ≲ 1e-8 each",
);

const ROPE_QK_SHAPES: &[&[usize]] = &[&[1, 9, 3, 64, 0], &[5, 9, 3, 64, 300], &[2, 32, 8, 64, 2047]];

// --- one test per op: its rows on every target ---------------------------------------------

fn run_op(pick: impl Fn(Op) -> bool) {
    let rows: Vec<&Row> = ROWS.iter().filter(|r| pick(r.op)).collect();
    assert!(!rows.is_empty(), "no table row for this op");
    let mut scalar = scalar_cpu();
    let mut cpus = cpu_targets();
    #[cfg(feature = "opencl")]
    let mut devices = opencl_targets();
    // The int8 prefill matmuls (mul_mm_q8_1.cl) on every device, forced on, on both tile
    // shapes: the tiled rows (≥ 16 tokens) of the matmul ops at the weight types they take.
    #[cfg(feature = "opencl")]
    let mut mmq_devices = if rows.iter().any(|r| mmq_op(r.op)) {
        let mut v = opencl_mmq_targets();
        v.extend(opencl_mmq_wide_targets());
        v
    } else {
        Vec::new()
    };
    for (ri, row) in rows.iter().enumerate() {
        for &dtype in row.dtypes.iter().take(if is_mixed(row.op) { 1 } else { usize::MAX }) {
            for (si, &dims) in row.shapes.iter().enumerate() {
                let seed = 1000 * ri as u64 + 10 * si as u64;
                let inp = inputs(row.op, dtype, row.dtypes, dims, seed);
                let case = format!("{}{}", row.op.variant(), case_name(row.op, dtype, dims));
                let want = exec(&mut scalar, row.op, &inp).unwrap();
                let exact = row.vs_f64.map(|_| reference(row.op, &inp));
                let cmp = |target: &str, got: &Outputs, class: usize, is_ref: bool| {
                    compare(target, row, &case, got, &want, exact.as_deref(), class, is_ref)
                };
                for (name, b) in cpus.iter_mut() {
                    cmp(name, &exec(b, row.op, &inp).unwrap(), 0, b.isa() == "scalar");
                }
                #[cfg(feature = "opencl")]
                for (name, g) in devices.iter_mut() {
                    let cache_op = matches!(
                        row.op,
                        Op::Attention | Op::AttentionMass | Op::EvictShift(_) | Op::StoreRows
                    );
                    if cache_op && !g.capabilities().kv_dtypes.contains(&dtype) {
                        if si == 0 {
                            eprintln!(
                                "note: {name}: no {dtype} KV cache (Capabilities::kv_dtypes): {}/{dtype} not run there",
                                row.op.name()
                            );
                        }
                        continue;
                    }
                    let got = exec(&mut **g, row.op, &inp).unwrap();
                    // One row through the fused head (llama_head_f32) of a block.cl built
                    // with int8 activations: the CPU's Q8 arithmetic, not f32 sums (every
                    // quantized type: Q4_0/Q4_1/Q8_0 and the Q4_K_M types' int8 arms).
                    let int8_head = row.op == Op::RmsNormMatmul
                        && !matches!(dtype, DType::F32 | DType::F16 | DType::BF16)
                        && dims[2] == 1
                        && g.isa().contains("+int8");
                    if int8_head {
                        let r = Row {
                            vs_f64: row.vs_f64.map(|l| [l[0], Q8_ACT]),
                            ..**row
                        };
                        compare(name, &r, &case, &got, &want, exact.as_deref(), 1, false);
                        // and tightly against what the int8 path computes: the dequantized
                        // weights times the normed vector rounded as block.cl stages it
                        let xq = q8_0_staged(&norm(&inp.acts[0], &inp.acts[1], dims[1]));
                        let w8 = mm(&inp.weights[0].deq, &wide(&xq), dims[0], dims[1], 1);
                        check(
                            name,
                            row.op.name(),
                            &format!("{case} vs W·q8(x)"),
                            &got[0].1,
                            &w8,
                            &INT8_STAGED,
                        );
                    } else {
                        cmp(name, &got, 1, false);
                    }
                }
                #[cfg(feature = "opencl")]
                if mmq_op(row.op) && MMQ_DTYPES.contains(&dtype) && dims.last().is_some_and(|&t| t >= 16) {
                    let mut inp = inp;
                    for (name, g) in mmq_devices.iter_mut() {
                        let isa = g.isa();
                        assert!(
                            isa.ends_with("+mmq") || isa.ends_with("+mma"),
                            "{name}: the int8 prefill matmuls were forced on but not built (isa {isa})"
                        );
                        let got = exec(&mut **g, row.op, &inp).unwrap();
                        // The CPU quantizes activations to Q8_0/Q8_1 as the device does for
                        // the 32-element types; to Q8_K (one scale per 256) for Q4_K/Q5_K.
                        let same_q8 = !matches!(dtype, DType::Q4_K | DType::Q5_K);
                        let r = Row {
                            vs_scalar: [row.vs_scalar[0], if same_q8 { MMQ_SAME_Q8 } else { Q8_ACT }],
                            vs_f64: row.vs_f64.map(|l| [l[0], Q8_ACT]),
                            ..**row
                        };
                        compare(name, &r, &case, &got, &want, exact.as_deref(), 1, false);
                        // Q4_0 imported as the loaders do: where the backend keeps the
                        // repacked rows (`block_repack`: the wide set; NVIDIA's default) the
                        // int8 matmuls read them (the `q4_0r` kernels) — the same quants and
                        // scales, so the same bits as from the GGUF bytes.
                        if dtype == DType::Q4_0 && g.block_repack_on() {
                            let (gguf_op, rows_op) = match row.op {
                                Op::Matmul(_) => (Op::Matmul(Import::Host), Op::Matmul(Import::Loader)),
                                op => (op, op),
                            };
                            let got = exec(&mut **g, gguf_op, &inp).unwrap();
                            let copies = g.repack_stats().row_tensors;
                            g.reset_kernel_times().unwrap();
                            inp.import = Import::Loader;
                            let rows = exec(&mut **g, rows_op, &inp).unwrap();
                            inp.import = Import::Host;
                            assert!(
                                g.repack_stats().row_tensors > copies,
                                "{name}: {case}: no repacked copy was made at import"
                            );
                            let ran = g.kernel_times().unwrap();
                            assert!(
                                ran.iter().any(|k| k.0.contains("q4_0r")),
                                "{name}: {case}: the repacked rows were not read (kernels: {ran:?})"
                            );
                            for ((_, a), (_, b)) in rows.iter().zip(&got) {
                                assert!(
                                    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                                    "{name}: {case}: repacked rows and GGUF rows differ"
                                );
                            }
                            eprintln!("{name:<16} {case}: repacked Q4_0 rows: the same bits as the GGUF rows");
                        }
                    }
                }
            }
        }
    }
    #[cfg(not(feature = "opencl"))]
    skip("built without the `opencl` feature: OpenCL rows not run");
}

/// The ops whose tiled (≥ 16-token) OpenCL kernels have int8 twins (mul_mm_q8_1.cl).
#[cfg(feature = "opencl")]
fn mmq_op(op: Op) -> bool {
    matches!(
        op,
        Op::Matmul(_) | Op::MatmulAdd | Op::RmsNormMatmul3 | Op::RmsNormMatmulSwiglu | Op::RmsNormMatmul
    )
}

/// The weight types of the int8 prefill matmuls (one scale and offset per 32 elements).
#[cfg(feature = "opencl")]
const MMQ_DTYPES: [DType; 7] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q4_K,
    DType::Q5_K,
];

/// LlamaBlock and LlamaBlocks take their dtypes all at once (one per matrix).
fn is_mixed(op: Op) -> bool {
    matches!(op, Op::LlamaBlock | Op::LlamaBlocks)
}

/// Compares a target's outputs with the scalar CPU's (`row.vs_scalar[class]`; not for
/// the scalar CPU itself) and with the f64 reference (`row.vs_f64[class]`).
#[allow(clippy::too_many_arguments)]
fn compare(
    target: &str,
    row: &Row,
    case: &str,
    got: &Outputs,
    want: &Outputs,
    exact: Option<&[Vec<f64>]>,
    class: usize,
    is_reference: bool,
) {
    let op = row.op.name();
    for (i, (what, g)) in got.iter().enumerate() {
        let case = if got.len() > 1 {
            format!("{case} {what}")
        } else {
            case.to_string()
        };
        if !is_reference {
            check(
                target,
                op,
                &format!("{case} vs scalar"),
                g,
                &wide(&want[i].1),
                &row.vs_scalar[class],
            );
        }
        if let (Some(e), Some(lims)) = (exact, row.vs_f64) {
            check(target, op, &format!("{case} vs f64"), g, &e[i], &lims[class]);
        }
    }
}

fn case_name(op: Op, dtype: DType, dims: &[usize]) -> String {
    match op {
        Op::GetRows | Op::GetRowsAt => format!("{dtype} {}x{} ids {}", dims[0], dims[1], dims.len() - 2),
        Op::Matmul(_) | Op::MatmulAdd | Op::RmsNormMatmul | Op::RmsNormMatmulSwiglu => {
            format!("{dtype} {}x{} tok {}", dims[0], dims[1], dims[2])
        }
        Op::RmsNormMatmul3 => format!(
            "{dtype} {}+{}+{}x{} tok {}",
            dims[0], dims[1], dims[2], dims[3], dims[4]
        ),
        Op::LlamaBlock | Op::LlamaBlocks => format!("{dims:?}"),
        Op::Attention | Op::AttentionMass | Op::EvictShift(_) => format!("{dtype} cache {dims:?}"),
        Op::StoreRows => format!("{dtype} {dims:?}"),
        _ => format!("{dims:?}"),
    }
}

#[test]
fn get_rows() {
    run_op(|o| o == Op::GetRows);
}
#[test]
fn get_rows_at() {
    run_op(|o| o == Op::GetRowsAt);
}
#[test]
fn matmul() {
    run_op(|o| matches!(o, Op::Matmul(_)));
}
#[test]
fn rms_norm() {
    run_op(|o| o == Op::RmsNorm);
}
#[test]
fn rope() {
    run_op(|o| matches!(o, Op::Rope(_)));
}
#[test]
fn attention() {
    run_op(|o| o == Op::Attention);
}
#[test]
fn store_rows() {
    run_op(|o| o == Op::StoreRows);
}
#[test]
fn softmax() {
    run_op(|o| o == Op::Softmax);
}
#[test]
fn swiglu() {
    run_op(|o| o == Op::Swiglu);
}
#[test]
fn add() {
    run_op(|o| o == Op::Add);
}
#[test]
fn argmax() {
    run_op(|o| o == Op::Argmax);
}
#[test]
fn matmul_add() {
    run_op(|o| o == Op::MatmulAdd);
}
#[test]
fn rope_qk() {
    run_op(|o| matches!(o, Op::RopeQk(_)));
}
#[test]
fn rms_norm_matmul3() {
    run_op(|o| o == Op::RmsNormMatmul3);
}
#[test]
fn rms_norm_matmul_swiglu() {
    run_op(|o| o == Op::RmsNormMatmulSwiglu);
}
#[test]
fn rms_norm_matmul() {
    run_op(|o| o == Op::RmsNormMatmul);
}
#[test]
fn llama_block() {
    run_op(|o| o == Op::LlamaBlock);
}
#[test]
fn llama_blocks() {
    run_op(|o| o == Op::LlamaBlocks);
}
#[test]
fn attention_mass() {
    run_op(|o| o == Op::AttentionMass);
}
/// `move_rows` and `rope_shift` (compaction and re-rotation, one eviction).
#[test]
fn move_rows() {
    run_op(|o| matches!(o, Op::EvictShift(_)));
}

// --- inputs, the generic runner and the f64 references -------------------------------------

/// A case's host data, made once and run on every backend.
pub struct Inputs {
    dims: Vec<usize>,
    /// The row's dtype for this case (attention: the KV-cache dtype).
    dtype: DType,
    /// Activations (op-specific order, see `inputs`).
    acts: Vec<Vec<f32>>,
    weights: Vec<HostWeight>,
    /// How `block` and `blocks` import the weights: as host bytes at an offset (the
    /// default), or as a model loader does (`Import::Loader`: whole tensors through
    /// `import_weight`, where the OpenCL backend may repack Q4_0 for the block kernel).
    import: Import,
}

const EPS: f32 = 1e-5;

/// The block shapes: (dim, head_dim, ffn, capacity) of `LlamaBlock` and `LlamaBlocks`.
const BLOCK: (usize, usize, usize, usize) = (256, 64, 512, 320);
const BLOCKS: (usize, usize, usize, usize, usize, usize) = (128, 4, 2, 32, 256, 96);

fn inputs(op: Op, dtype: DType, dtypes: &[DType], dims: &[usize], seed: u64) -> Inputs {
    let d = dims;
    let (mut acts, mut weights) = (Vec::new(), Vec::new());
    match op {
        Op::GetRows | Op::GetRowsAt => {
            weights.push(host_weight(dtype, d[0], d[1], seed, 1.0));
            acts.push(d[2..].iter().map(|&i| i as f32).collect());
        }
        Op::Matmul(_) | Op::MatmulAdd => {
            weights.push(host_weight(dtype, d[0], d[1], seed, 0.5));
            acts.push(randn(d[2] * d[1], seed + 1, 1.0)); // x
            acts.push(randn(d[2] * d[0], seed + 2, 1.0)); // y (MatmulAdd's starting value)
        }
        Op::RmsNorm => {
            acts.push(randn(d[0] * d[1], seed, 2.0));
            acts.push(randn(d[1], seed + 1, 1.0));
        }
        Op::Rope(_) => {
            acts.push(randn(d[0] * d[1] * d[2], seed, 1.0));
            acts.push(freqs(d[2], d[4] == 1));
        }
        Op::EvictShift(_) => {
            acts.push(randn(d[0] * d[1] * d[2], seed, 1.0));
            acts.push(freqs(d[2], false));
        }
        Op::Attention | Op::AttentionMass => {
            let (n_head, n_kv, hd, n_tok, cap) = (d[0], d[1], d[2], d[3], d[5]);
            // An f16 cache holds f16 values: K and V are drawn already rounded, so every
            // target and the f64 reference see the same numbers.
            // A Q8_0 cache likewise holds dequantized Q8_0 blocks.
            let cache = |v: Vec<f32>| -> Vec<f32> {
                match dtype {
                    DType::F16 => v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
                    DType::Q8_0 => q8_round_trip(&v),
                    _ => v,
                }
            };
            acts.push(randn(n_tok * n_head * hd, seed, 1.0));
            acts.push(cache(randn(cap * n_kv * hd, seed + 1, 1.0)));
            acts.push(cache(randn(cap * n_kv * hd, seed + 2, 1.0)));
            acts.push(randn(cap, seed + 3, 1.0)); // the mass before (AttentionMass)
        }
        Op::StoreRows => acts.push(randn(d[0] * d[1], seed, 2.0)),
        Op::Softmax => acts.push(randn(d[0] * d[1], seed, 4.0)),
        Op::Swiglu => {
            acts.push(randn(d[0] * d[1], seed, 3.0));
            acts.push(randn(d[0] * d[1], seed + 1, 1.0));
        }
        Op::Add => {
            acts.push(randn(d[0] * d[1], seed, 1.0));
            acts.push(randn(d[0] * d[1], seed + 1, 1.0));
        }
        Op::Argmax => {
            let (rows, n) = (d[0], d[1]);
            let mut v = randn(rows * n, seed, if d[2] == 0 { 3.0 } else { 1.0 });
            match d[2] {
                1 => (v[1234], v[4321]) = (9.0, 9.0),
                2 => (v[10], v[n - 1]) = (f32::NAN, f32::NAN),
                3 => v.fill(f32::NEG_INFINITY),
                4 => v[1500] = f32::NAN,
                5 => {
                    v[n + n - 1] = 50.0; // the last element of row 1
                    v[2 * n + 1024] = 50.0; // the first of a two-pass piece in row 2
                    v[2 * n + 3000] = 50.0; // its tie, later: the first must win
                }
                _ => {}
            }
            acts.push(v);
        }
        Op::RopeQk(_) => {
            let (n_tok, hq, hk, hd) = (d[0], d[1], d[2], d[3]);
            acts.push(randn(n_tok * hq * hd, seed, 1.0));
            acts.push(randn(n_tok * hk * hd, seed + 1, 1.0));
            acts.push(freqs(hd, false));
        }
        Op::RmsNormMatmul3 => {
            let (n_in, n_tok) = (d[3], d[4]);
            for (i, &n) in d[..3].iter().enumerate() {
                weights.push(host_weight(dtype, n, n_in, seed + 10 + i as u64, 0.5));
            }
            acts.push(randn(n_tok * n_in, seed, 1.0));
            acts.push(randn(n_in, seed + 1, 1.0));
        }
        Op::RmsNormMatmulSwiglu | Op::RmsNormMatmul => {
            let (n_out, n_in, n_tok) = (d[0], d[1], d[2]);
            let n_w = if op == Op::RmsNormMatmul { 1 } else { 2 };
            for i in 0..n_w {
                weights.push(host_weight(dtype, n_out, n_in, seed + 10 + i, 0.5));
            }
            acts.push(randn(n_tok * n_in, seed, 1.0));
            acts.push(randn(n_in, seed + 1, 1.0));
        }
        Op::LlamaBlock => {
            let (n_head, n_kv) = (d[0], d[1]);
            let (dim, hd, ffn, cap) = BLOCK;
            let shapes = block_matrices(dim, n_head * hd, n_kv * hd, ffn);
            for (m, &(r, c)) in shapes.iter().enumerate() {
                // Every other matrix 32 bytes into its region (16-byte aligned rows where
                // the row bytes allow: the int8 Q4_K/Q5_K arms' 16-byte loads), the others
                // 2 bytes in (their fallback).
                weights.push(host_weight_at(
                    dtypes[m % dtypes.len()],
                    r,
                    c,
                    seed + m as u64,
                    0.5 / (c as f32).sqrt(),
                    if m % 2 == 1 { 32 } else { 2 },
                ));
            }
            acts.push(randn(dim, seed + 20, 1.0)); // x
            acts.push(randn(dim, seed + 21, 1.0)); // attn_norm
            acts.push(randn(dim, seed + 22, 1.0)); // ffn_norm
            acts.push(randn(2 * cap * n_kv * hd, seed + 23, 1.0)); // K then V cache
            acts.push(freqs(hd, false));
        }
        Op::LlamaBlocks => {
            let (dim, n_head, n_kv, hd, ffn, cap) = BLOCKS;
            let shapes = block_matrices(dim, n_head * hd, n_kv * hd, ffn);
            for l in 0..d[0] {
                for (m, &(r, c)) in shapes.iter().enumerate() {
                    let dt = dtypes[(l + m) % dtypes.len()];
                    weights.push(host_weight(
                        dt,
                        r,
                        c,
                        seed + 10 * l as u64 + m as u64,
                        0.5 / (c as f32).sqrt(),
                    ));
                }
                acts.push(randn(dim, seed + 100 + l as u64, 1.0)); // attn_norm
                acts.push(randn(dim, seed + 200 + l as u64, 1.0)); // ffn_norm
                acts.push(randn(2 * cap * n_kv * hd, seed + 300 + l as u64, 1.0));
                // K then V cache
            }
            acts.push(randn(dim, seed + 20, 1.0)); // x
            acts.push(freqs(hd, false));
        }
    }
    Inputs {
        dims: dims.to_vec(),
        dtype,
        acts,
        weights,
        import: Import::Host,
    }
}

/// `[rows, cols]` of Wq, Wk, Wv, Wo, Wgate, Wup, Wdown.
fn block_matrices(dim: usize, qd: usize, kvd: usize, ffn: usize) -> [(usize, usize); 7] {
    [
        (qd, dim),
        (kvd, dim),
        (kvd, dim),
        (dim, qd),
        (ffn, dim),
        (ffn, dim),
        (dim, ffn),
    ]
}

/// RoPE inverse frequencies: base 100 000, or base 10 000 with llama3 scaling (factor 8,
/// original context 64, so that it changes the frequencies at head_dim 64).
fn freqs(hd: usize, llama3: bool) -> Vec<f32> {
    if !llama3 {
        return rope::base_inv_freq(100000.0, hd);
    }
    let mut f = rope::base_inv_freq(10000.0, hd);
    let base = f.clone();
    rope::apply_llama3(
        &mut f,
        &Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64,
        },
    );
    assert_ne!(f, base, "these settings must make the scaling visible");
    f
}

pub type Outputs = Vec<(&'static str, Vec<f32>)>;

/// Runs one case on `b` through the op layer and reads its outputs back.
fn exec<B: Backend>(b: &mut B, op: Op, inp: &Inputs) -> antigravity_core::Result<Outputs> {
    let d = &inp.dims[..];
    let a = &inp.acts;
    let f = |b: &B, v: &[f32], shape: Shape| Act::new(b, v, shape);
    let host = |b: &B, i: usize| inp.weights[i].import(b, Import::Host);
    // The matmul family's weights: imported as `inp.import` says (Host unless a test
    // asks for the loaders' path).
    let wt = |b: &B, i: usize| inp.weights[i].import(b, inp.import);
    Ok(match op {
        Op::GetRows | Op::GetRowsAt => {
            let w = host(b, 0);
            let ids: Vec<u32> = a[0].iter().map(|&i| i as u32).collect();
            let mut o = Act::zeros(b, Shape::d2(ids.len(), d[1]));
            if op == Op::GetRows {
                ops::get_rows(b, w.r(), &ids, o.m())?;
            } else {
                let idx = f(b, &a[0], Shape::d1(ids.len()));
                ops::get_rows_at(b, w.r(), idx.r(), o.m())?;
            }
            vec![("out", o.read(b))]
        }
        Op::Matmul(how) => {
            let w = inp.weights[0].import(b, how);
            let x = f(b, &a[0], Shape::d2(d[2], d[1]));
            let mut y = Act::zeros(b, Shape::d2(d[2], d[0]));
            ops::matmul(b, w.r(), x.r(), y.m())?;
            vec![("y", y.read(b))]
        }
        Op::MatmulAdd => {
            let w = wt(b, 0);
            let x = f(b, &a[0], Shape::d2(d[2], d[1]));
            let mut y = f(b, &a[1], Shape::d2(d[2], d[0]));
            let mut tmp = Act::zeros(b, Shape::d2(d[2], d[0]));
            ops::matmul_add(b, w.r(), x.r(), tmp.m(), y.m())?;
            vec![("y", y.read(b))]
        }
        Op::RmsNorm => {
            let (x, w) = (f(b, &a[0], Shape::d2(d[0], d[1])), f(b, &a[1], Shape::d1(d[1])));
            let mut o = Act::zeros(b, Shape::d2(d[0], d[1]));
            ops::rms_norm(b, x.r(), w.r(), EPS, o.m())?;
            vec![("out", o.read(b))]
        }
        Op::Rope(style) => {
            let mut x = f(b, &a[0], Shape::d3(d[0], d[1], d[2]));
            let fr = f(b, &a[1], Shape::d1(d[2] / 2));
            ops::rope(b, x.m(), fr.r(), d[3], style)?;
            vec![("x", x.read(b))]
        }
        Op::EvictShift(style) => {
            let (n_rows, heads, hd, start, count, pos0) = (d[0], d[1], d[2], d[3], d[4], d[5]);
            let shape = Shape::d3(n_rows, heads, hd);
            let fr = f(b, &a[1], Shape::d1(hd / 2));
            let row = heads * hd;
            let mut buf = if inp.dtype.is_quantized() {
                // A Q8_0 cache's keys are rotated in f32 and quantized once (the model's
                // path: RoPE in scratch, then `store_rows`).
                let mut k32 = f(b, &a[0], shape);
                ops::rope(b, k32.m(), fr.r(), pos0, style)?;
                let bytes = inp.dtype.row_bytes(row).unwrap() * n_rows;
                let mut buf = b.alloc(bytes, BufferKind::Device).unwrap();
                ops::store_rows(b, k32.r(), TensorMut::new(&mut buf, 0, inp.dtype, shape))?;
                buf
            } else {
                let mut buf = cache_upload(b, inp.dtype, &a[0]);
                let x = TensorMut::new(&mut buf, 0, inp.dtype, shape);
                ops::rope(b, x, fr.r(), pos0, style)?;
                buf
            };
            let mut x = TensorMut::new(&mut buf, 0, inp.dtype, shape);
            let moved = n_rows - start - count;
            ops::move_rows(
                b,
                x.reborrow().reshape(Shape::d2(n_rows, row)),
                start + count,
                start,
                moved,
            )?;
            let k_moved = x.rows_mut(start, moved, row).reshape(Shape::d3(moved, heads, hd));
            ops::rope_shift(b, k_moved, fr.r(), -(count as i32), style)?;
            let mut all = cache_read(b, inp.dtype, &buf, n_rows * row);
            all.truncate((n_rows - count) * row);
            vec![("k", all)]
        }
        Op::AttentionMass => {
            let (n_head, n_kv, hd, n_tok, n_past, cap) = (d[0], d[1], d[2], d[3], d[4], d[5]);
            let q = f(b, &a[0], Shape::d3(n_tok, n_head, hd));
            let mut o = Act::zeros(b, Shape::d3(n_tok, n_head, hd));
            let mut m = f(b, &a[3], Shape::d1(cap));
            let p = attn_params(n_head, n_kv, hd, n_past);
            let shape = Shape::d3(cap, n_kv, hd);
            let (kb, vb) = (cache_upload(b, inp.dtype, &a[1]), cache_upload(b, inp.dtype, &a[2]));
            let (k, v) = (
                TensorRef::new(&kb, 0, inp.dtype, shape),
                TensorRef::new(&vb, 0, inp.dtype, shape),
            );
            ops::attention_mass(b, q.r(), k, v, p, o.m(), m.m())?;
            vec![("out", o.read(b)), ("mass", m.read(b))]
        }
        Op::Attention => {
            let (n_head, n_kv, hd, n_tok, n_past, cap) = (d[0], d[1], d[2], d[3], d[4], d[5]);
            let q = f(b, &a[0], Shape::d3(n_tok, n_head, hd));
            let mut o = Act::zeros(b, Shape::d3(n_tok, n_head, hd));
            let p = attn_params(n_head, n_kv, hd, n_past);
            if inp.dtype == DType::F16 {
                // The cache in f16 (`--kv-type f16`).
                let half = |v: &[f32]| {
                    let h: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
                    let mut buf = b.alloc(h.len() * 2, BufferKind::Device).unwrap();
                    b.upload(&mut buf, 0, bytemuck::cast_slice(&h)).unwrap();
                    buf
                };
                let (kb, vb) = (half(&a[1]), half(&a[2]));
                let shape = Shape::d3(cap, n_kv, hd);
                let (k, v) = (
                    TensorRef::new(&kb, 0, DType::F16, shape),
                    TensorRef::new(&vb, 0, DType::F16, shape),
                );
                ops::attention(b, q.r(), k, v, p, o.m())?;
            } else if inp.dtype == DType::Q8_0 {
                // The cache in Q8_0 blocks (`--kv-type q8_0`).
                let blocks = |v: &[f32]| {
                    let q = q8_blocks(v);
                    let mut buf = b.alloc(q.len(), BufferKind::Device).unwrap();
                    b.upload(&mut buf, 0, &q).unwrap();
                    buf
                };
                let (kb, vb) = (blocks(&a[1]), blocks(&a[2]));
                let shape = Shape::d3(cap, n_kv, hd);
                let (k, v) = (
                    TensorRef::new(&kb, 0, DType::Q8_0, shape),
                    TensorRef::new(&vb, 0, DType::Q8_0, shape),
                );
                ops::attention(b, q.r(), k, v, p, o.m())?;
            } else {
                let k = f(b, &a[1], Shape::d3(cap, n_kv, hd));
                let v = f(b, &a[2], Shape::d3(cap, n_kv, hd));
                ops::attention(b, q.r(), k.r(), v.r(), p, o.m())?;
            }
            vec![("out", o.read(b))]
        }
        Op::StoreRows => {
            let (rows, n) = (d[0], d[1]);
            let src = f(b, &a[0], Shape::d2(rows, n));
            let bytes = inp.dtype.row_bytes(n).unwrap() * rows;
            let mut buf = b.alloc(bytes, BufferKind::Device).unwrap();
            ops::store_rows(b, src.r(), TensorMut::new(&mut buf, 0, inp.dtype, Shape::d2(rows, n)))?;
            let mut raw = vec![0u8; bytes];
            b.download(&buf, 0, &mut raw).unwrap();
            let mut out = vec![0f32; rows * n];
            antigravity_core::quant::dequantize_row(inp.dtype, &raw, &mut out).unwrap();
            vec![("dst", out)]
        }
        Op::Softmax => {
            let mut x = f(b, &a[0], Shape::d2(d[0], d[1]));
            ops::softmax(b, x.m())?;
            vec![("x", x.read(b))]
        }
        Op::Swiglu => {
            let (g, u) = (f(b, &a[0], Shape::d2(d[0], d[1])), f(b, &a[1], Shape::d2(d[0], d[1])));
            let mut o = Act::zeros(b, Shape::d2(d[0], d[1]));
            ops::swiglu(b, g.r(), u.r(), o.m())?;
            vec![("out", o.read(b))]
        }
        Op::Add => {
            let mut dst = f(b, &a[0], Shape::d2(d[0], d[1]));
            let src = f(b, &a[1], Shape::d2(d[0], d[1]));
            ops::add(b, dst.m(), src.r())?;
            vec![("dst", dst.read(b))]
        }
        Op::Argmax => {
            let x = f(b, &a[0], Shape::d2(d[0], d[1]));
            let mut o = Act::zeros(b, Shape::d1(d[0]));
            ops::argmax(b, x.r(), o.m())?;
            vec![("index", o.read(b))]
        }
        Op::RopeQk(style) => {
            let (n_tok, hq, hk, hd, pos0) = (d[0], d[1], d[2], d[3], d[4]);
            let mut q = f(b, &a[0], Shape::d3(n_tok, hq, hd));
            let mut k = f(b, &a[1], Shape::d3(n_tok, hk, hd));
            let fr = f(b, &a[2], Shape::d1(hd / 2));
            ops::rope_qk(b, q.m(), k.m(), fr.r(), pos0, style)?;
            vec![("q", q.read(b)), ("k", k.read(b))]
        }
        Op::RmsNormMatmul3 => {
            let (n_in, n_tok) = (d[3], d[4]);
            let w: Vec<_> = (0..3).map(|i| wt(b, i)).collect();
            let (x, nw) = (f(b, &a[0], Shape::d2(n_tok, n_in)), f(b, &a[1], Shape::d1(n_in)));
            let mut xn = Act::zeros(b, Shape::d2(n_tok, n_in));
            let [mut q, mut k, mut v] = [0, 1, 2].map(|i| Act::zeros(b, Shape::d2(n_tok, d[i])));
            let ws = [w[0].r(), w[1].r(), w[2].r()];
            ops::rms_norm_matmul3(b, x.r(), nw.r(), EPS, xn.m(), ws, [q.m(), k.m(), v.m()])?;
            vec![("q", q.read(b)), ("k", k.read(b)), ("v", v.read(b))]
        }
        Op::RmsNormMatmulSwiglu => {
            let (n_ffn, n_in, n_tok) = (d[0], d[1], d[2]);
            let (wg, wu) = (wt(b, 0), wt(b, 1));
            let (x, nw) = (f(b, &a[0], Shape::d2(n_tok, n_in)), f(b, &a[1], Shape::d1(n_in)));
            let mut xn = Act::zeros(b, Shape::d2(n_tok, n_in));
            let sh = Shape::d2(n_tok, n_ffn);
            let (mut g, mut u, mut o) = (Act::zeros(b, sh), Act::zeros(b, sh), Act::zeros(b, sh));
            ops::rms_norm_matmul_swiglu(b, x.r(), nw.r(), EPS, xn.m(), wg.r(), wu.r(), g.m(), u.m(), o.m())?;
            vec![("out", o.read(b))]
        }
        Op::RmsNormMatmul => {
            let (n_out, n_in, n_tok) = (d[0], d[1], d[2]);
            let w = wt(b, 0);
            let (x, nw) = (f(b, &a[0], Shape::d2(n_tok, n_in)), f(b, &a[1], Shape::d1(n_in)));
            let mut xn = Act::zeros(b, Shape::d2(n_tok, n_in));
            let mut y = Act::zeros(b, Shape::d2(n_tok, n_out));
            ops::rms_norm_matmul(b, x.r(), nw.r(), EPS, xn.m(), w.r(), y.m())?;
            vec![("y", y.read(b))]
        }
        Op::LlamaBlock => block(b, inp, Entry::Op)?,
        Op::LlamaBlocks => blocks(b, inp, Entry::Op)?,
    })
}

/// A buffer holding `v` in cache dtype `dtype` (f32, or f16 rounded once).
fn cache_upload<B: Backend>(b: &B, dtype: DType, v: &[f32]) -> B::Buffer {
    let bytes: Vec<u8> = match dtype {
        DType::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        DType::Q8_0 => q8_blocks(v),
        _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
    };
    let mut buf = b.alloc(bytes.len(), BufferKind::Device).unwrap();
    b.upload(&mut buf, 0, &bytes).unwrap();
    buf
}

/// The first `n` values of a cache buffer, widened (Q8_0: dequantized) to f32.
fn cache_read<B: Backend>(b: &B, dtype: DType, buf: &B::Buffer, n: usize) -> Vec<f32> {
    let mut bytes = vec![0u8; dtype.row_bytes(n).unwrap()];
    b.download(buf, 0, &mut bytes).unwrap();
    match dtype {
        DType::Q8_0 => {
            let mut out = vec![0f32; n];
            antigravity_core::quant::dequantize_row(dtype, &bytes, &mut out).unwrap();
            out
        }
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// Which entry point runs a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// The op (`ops::llama_block` / `ops::llama_blocks`): what a backend overrides.
    Op,
    /// The model's canonical composition (`model::llama::llama_block`) layer by layer.
    Composition,
    /// `ops::llama_blocks` twice on the same buffers: a first token five slots earlier
    /// (sets every argument of a backend's cached launches), then, from the same
    /// starting state, the token compared (only the per-token arguments change).
    OpAfterWarmup,
}

/// `LlamaBlock`: one token through one block; x, and the new K and V cache rows.
pub fn block<B: Backend>(b: &mut B, inp: &Inputs, entry: Entry) -> antigravity_core::Result<Outputs> {
    let (d, a) = (&inp.dims[..], &inp.acts);
    let (n_head, n_kv, n_past) = (d[0], d[1], d[2]);
    let (dim, hd, ffn, cap) = BLOCK;
    let kvd = n_kv * hd;
    let style = [RopeStyle::Adjacent, RopeStyle::HalfSplit][d[3]];
    let p = block_params(n_head, n_kv, hd, n_past, style);
    let w: Vec<_> = inp.weights.iter().map(|w| w.import(b, inp.import)).collect();
    let norms = [Act::new(b, &a[1], Shape::d1(dim)), Act::new(b, &a[2], Shape::d1(dim))];
    // The caches at both alignments (block.cl reads an aligned one with vector loads):
    // K at a 16-byte boundary and V off one at 300 slots (several tiles), the other way
    // round at 5, neither at 0.
    let (k_pad, v_pad) = match n_past {
        0 => (PAD_F32, PAD_F32),
        5 => (PAD_F32, 4),
        _ => (4, PAD_F32),
    };
    let mut k = Act::new_at(b, &a[3][..cap * kvd], Shape::d3(cap, n_kv, hd), k_pad);
    let mut v = Act::new_at(b, &a[3][cap * kvd..], Shape::d3(cap, n_kv, hd), v_pad);
    let fr = Act::new(b, &a[4], Shape::d1(hd / 2));
    let mut x = Act::new(b, &a[0], Shape::d2(1, dim));
    let mut s = Scratch::new(b, 1, dim, n_head * hd, ffn);
    let (wv, kv) = (block_weights(&w, &norms), BlockKv { k: k.m(), v: v.m() });
    match entry {
        Entry::Op => ops::llama_block(b, x.m(), wv, kv, fr.r(), p, s.views())?,
        Entry::Composition => composed_block(b, x.m(), wv, kv, fr.r(), p, s.views(), &mut |_, _, _| {}, None)?,
        Entry::OpAfterWarmup => unreachable!("the warm-up entry is for `blocks` only: one block has no cached launch"),
    }
    let slot = |c: &Act<B>| c.try_read(b).map(|r| r[n_past * kvd..(n_past + 1) * kvd].to_vec());
    Ok(vec![("x", x.try_read(b)?), ("k row", slot(&k)?), ("v row", slot(&v)?)])
}

/// `LlamaBlocks`: one token through every layer; x, and each layer's new K and V rows.
pub fn blocks<B: Backend>(b: &mut B, inp: &Inputs, entry: Entry) -> antigravity_core::Result<Outputs> {
    let (d, a) = (&inp.dims[..], &inp.acts);
    let (n_layer, n_past) = (d[0], d[1]);
    let (dim, n_head, n_kv, hd, ffn, cap) = BLOCKS;
    let kvd = n_kv * hd;
    let p = block_params(n_head, n_kv, hd, n_past, RopeStyle::HalfSplit);
    let mut layers = Vec::new();
    for l in 0..n_layer {
        let w: Vec<_> = (0..7).map(|i| inp.weights[7 * l + i].import(b, inp.import)).collect();
        let norms = [
            Act::new(b, &a[3 * l], Shape::d1(dim)),
            Act::new(b, &a[3 * l + 1], Shape::d1(dim)),
        ];
        // (caches at a 16-byte boundary, as a backend's are: block.cl's vector reads)
        let k = Act::new_at(b, &a[3 * l + 2][..cap * kvd], Shape::d3(cap, n_kv, hd), 4);
        let v = Act::new_at(b, &a[3 * l + 2][cap * kvd..], Shape::d3(cap, n_kv, hd), 4);
        layers.push((w, norms, k, v));
    }
    let x0 = &a[3 * n_layer];
    let mut x = Act::new(b, x0, Shape::d2(1, dim));
    let fr = Act::new(b, &a[3 * n_layer + 1], Shape::d1(hd / 2));
    let mut s = Scratch::new(b, 1, dim, n_head * hd, ffn);
    let mut warm = p;
    warm.attn.n_past = n_past.saturating_sub(5);
    warm.pos0 = warm.attn.n_past + 7;
    let runs: &[BlockParams] = match entry {
        Entry::OpAfterWarmup => &[warm, p],
        _ => &[p],
    };
    for (i, &pp) in runs.iter().enumerate() {
        if i > 0 {
            // Back to the starting state, in the same buffers.
            b.upload(&mut x.buf, x.off, bytemuck::cast_slice(x0))?;
            for (l, (_, _, k, v)) in layers.iter_mut().enumerate() {
                b.upload(&mut k.buf, k.off, bytemuck::cast_slice(&a[3 * l + 2][..cap * kvd]))?;
                b.upload(&mut v.buf, v.off, bytemuck::cast_slice(&a[3 * l + 2][cap * kvd..]))?;
            }
        }
        if entry == Entry::Composition {
            for (w, norms, k, v) in layers.iter_mut() {
                let kv = BlockKv { k: k.m(), v: v.m() };
                composed_block(
                    b,
                    x.m(),
                    block_weights(w, norms),
                    kv,
                    fr.r(),
                    pp,
                    s.views(),
                    &mut |_, _, _| {},
                    None,
                )?;
            }
            continue;
        }
        let mut visit = |l: usize, fun: &mut LayerFn<'_, B>| {
            let (w, norms, k, v) = &mut layers[l];
            fun(block_weights(w, norms), BlockKv { k: k.m(), v: v.m() })
        };
        ops::llama_blocks(b, x.m(), n_layer, &mut visit, fr.r(), pp, s.views())?;
    }
    let mut out = vec![("x", x.try_read(b)?)];
    for (_, _, k, v) in &layers {
        out.push(("k row", k.try_read(b)?[n_past * kvd..(n_past + 1) * kvd].to_vec()));
        out.push(("v row", v.try_read(b)?[n_past * kvd..(n_past + 1) * kvd].to_vec()));
    }
    Ok(out)
}

fn attn_params(n_head: usize, n_kv: usize, hd: usize, n_past: usize) -> AttnParams {
    AttnParams {
        n_head,
        n_kv_head: n_kv,
        head_dim: hd,
        scale: 1.0 / (hd as f32).sqrt(),
        n_past,
    }
}

/// A one-token block at cache slot `n_past`, position `n_past + 7`.
fn block_params(n_head: usize, n_kv: usize, hd: usize, n_past: usize, style: RopeStyle) -> BlockParams {
    BlockParams {
        eps: EPS,
        attn: attn_params(n_head, n_kv, hd, n_past),
        pos0: n_past + 7,
        style,
    }
}

fn block_weights<'a, B: Backend>(w: &'a [DevWeight<B>], norms: &'a [Act<B>; 2]) -> BlockWeights<'a, B> {
    BlockWeights {
        attn_norm: norms[0].r(),
        wq: w[0].r(),
        wk: w[1].r(),
        wv: w[2].r(),
        wo: w[3].r(),
        ffn_norm: norms[1].r(),
        w_gate: w[4].r(),
        w_up: w[5].r(),
        w_down: w[6].r(),
    }
}

/// A block's activation scratch for `n` tokens.
pub struct Scratch<B: Backend> {
    bufs: [B::Buffer; 7],
    dims: [usize; 7],
    n: usize,
}

impl<B: Backend> Scratch<B> {
    pub fn new(b: &B, n: usize, dim: usize, qd: usize, ffn: usize) -> Scratch<B> {
        let dims = [dim, dim, qd, qd, ffn, ffn, ffn];
        Scratch {
            bufs: dims.map(|c| b.alloc(n * c * 4, BufferKind::Device).unwrap()),
            dims,
            n,
        }
    }
    pub fn views(&mut self) -> BlockScratch<'_, B> {
        let n = self.n;
        let [xn, tmp, q, att, gate, up, act] = &mut self.bufs;
        let d = self.dims;
        fn v<B: Backend>(buf: &mut B::Buffer, n: usize, c: usize) -> TensorMut<'_, B> {
            TensorMut::new(buf, 0, DType::F32, Shape::d2(n, c))
        }
        BlockScratch {
            xn: v(xn, n, d[0]),
            tmp: v(tmp, n, d[1]),
            q: v(q, n, d[2]),
            att: v(att, n, d[3]),
            gate: v(gate, n, d[4]),
            up: v(up, n, d[5]),
            act: v(act, n, d[6]),
        }
    }
}

/// The op computed in f64 from the same inputs (the weights as stored, dequantized).
fn reference(op: Op, inp: &Inputs) -> Vec<Vec<f64>> {
    let d = &inp.dims[..];
    let a = &inp.acts;
    let w = |i: usize| &inp.weights[i].deq;
    match op {
        Op::GetRows | Op::GetRowsAt => {
            let cols = d[1];
            vec![d[2..]
                .iter()
                .flat_map(|&id| wide(&w(0)[id * cols..(id + 1) * cols]))
                .collect()]
        }
        Op::Matmul(_) => vec![mm(w(0), &wide(&a[0]), d[0], d[1], d[2])],
        Op::MatmulAdd => {
            let y = mm(w(0), &wide(&a[0]), d[0], d[1], d[2]);
            vec![y.iter().zip(&a[1]).map(|(y, &y0)| y + y0 as f64).collect()]
        }
        Op::RmsNorm => vec![norm(&a[0], &a[1], d[1])],
        Op::Rope(style) => vec![rope_f64(&a[0], d[0], d[1], d[2], &a[1], d[3], style)],
        Op::RopeQk(style) => vec![
            rope_f64(&a[0], d[0], d[1], d[3], &a[2], d[4], style),
            rope_f64(&a[1], d[0], d[2], d[3], &a[2], d[4], style),
        ],
        Op::Attention => vec![attention_f64(a, d)],
        Op::AttentionMass => vec![attention_f64(a, d), mass_f64(a, d)],
        Op::EvictShift(style) => {
            // From scratch: each kept raw key rotated once, at its position after the drop.
            let (n_rows, heads, hd, start, count, pos0) = (d[0], d[1], d[2], d[3], d[4], d[5]);
            let row = heads * hd;
            (0..n_rows - count)
                .flat_map(|r| {
                    let src = if r < start { r } else { r + count };
                    rope_f64(&a[0][src * row..][..row], 1, heads, hd, &a[1], pos0 + r, style)
                })
                .collect::<Vec<f64>>()
                .pipe(|v| vec![v])
        }
        Op::StoreRows => vec![wide(&a[0])],
        Op::Softmax => vec![a[0]
            .chunks(d[1])
            .flat_map(|r| {
                let m = r.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
                r.iter().map(move |&v| (v as f64 - m).exp() / s)
            })
            .collect()],
        Op::Swiglu => vec![a[0]
            .iter()
            .zip(&a[1])
            .map(|(&g, &u)| silu(g as f64) * u as f64)
            .collect()],
        Op::Add => vec![a[0].iter().zip(&a[1]).map(|(&x, &y)| x as f64 + y as f64).collect()],
        Op::Argmax => vec![a[0]
            .chunks(d[1])
            .map(|r| {
                let (mut bi, mut bv) = (-1.0, f32::NEG_INFINITY);
                for (i, &x) in r.iter().enumerate() {
                    if x > bv {
                        (bi, bv) = (i as f64, x);
                    }
                }
                bi
            })
            .collect()],
        Op::RmsNormMatmul3 => {
            let xn = norm(&a[0], &a[1], d[3]);
            (0..3).map(|i| mm(w(i), &xn, d[i], d[3], d[4])).collect()
        }
        Op::RmsNormMatmulSwiglu => {
            let xn = norm(&a[0], &a[1], d[1]);
            let (g, u) = (mm(w(0), &xn, d[0], d[1], d[2]), mm(w(1), &xn, d[0], d[1], d[2]));
            vec![g.iter().zip(&u).map(|(&g, &u)| silu(g) * u).collect()]
        }
        Op::RmsNormMatmul => vec![mm(w(0), &norm(&a[0], &a[1], d[1]), d[0], d[1], d[2])],
        Op::LlamaBlock | Op::LlamaBlocks => unreachable!("no f64 reference for whole blocks (see the table)"),
    }
}

fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

/// `y[t, o] = Σ_i w[o, i] · x[t, i]` in f64.
fn mm(w: &[f32], x: &[f64], n_out: usize, n_in: usize, n_tok: usize) -> Vec<f64> {
    let mut y = vec![0f64; n_tok * n_out];
    for t in 0..n_tok {
        for o in 0..n_out {
            y[t * n_out + o] = (0..n_in).map(|i| w[o * n_in + i] as f64 * x[t * n_in + i]).sum();
        }
    }
    y
}

/// Row-wise `x / sqrt(mean(x²) + eps) · w` in f64.
/// `x` (f32) rounded as block.cl's int8 staging does (`quant_vec`): blocks of 32,
/// `d = amax / 127` in f32, `q = round(x / d)` (half away from zero), back to `q · d`.
#[cfg(feature = "opencl")]
fn q8_0_staged(x: &[f64]) -> Vec<f32> {
    let x: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    x.chunks(32)
        .flat_map(|b| {
            let d = b.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.iter().map(move |&v| (v * id).round() * d)
        })
        .collect()
}

/// The fused head with int8 activations against [`q8_0_staged`] activations.
#[cfg(feature = "opencl")]
const INT8_STAGED: Limit = nmse(
    1e-5,
    "the kernel's int8 arithmetic exactly, up to f32 sums and its rsqrt norm: a staged element      rounding the other way at a .5 boundary costs ~(amax/127)²/(n·E[x²]) ≈ 2e-6; Q8_K-style      rounding (the CPU's K-quant path) gives ~1e-4, a wrong scale or layout ≥ 1e-3",
);

fn norm(x: &[f32], w: &[f32], n: usize) -> Vec<f64> {
    x.chunks(n)
        .flat_map(|r| {
            let ms = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + EPS as f64).sqrt();
            r.iter().zip(w).map(move |(&v, &w)| v as f64 * inv * w as f64)
        })
        .collect()
}

/// RoPE in f64 with explicit pair selection (the angle in f64 too).
fn rope_f64(
    x: &[f32],
    n_tok: usize,
    heads: usize,
    hd: usize,
    freqs: &[f32],
    pos0: usize,
    style: RopeStyle,
) -> Vec<f64> {
    let mut out = wide(x);
    for t in 0..n_tok {
        for h in 0..heads {
            let base = (t * heads + h) * hd;
            for (i, &f) in freqs.iter().enumerate().take(hd / 2) {
                let th = (pos0 + t) as f64 * f as f64;
                let (p, q) = match style {
                    RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                    RopeStyle::HalfSplit => (i, i + hd / 2),
                };
                let (x0, x1) = (x[base + p] as f64, x[base + q] as f64);
                out[base + p] = x0 * th.cos() - x1 * th.sin();
                out[base + q] = x0 * th.sin() + x1 * th.cos();
            }
        }
    }
    out
}

/// `Vec` → `f(Vec)` (keeps a long iterator chain readable).
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<X> Pipe for Vec<X> {}

/// The starting mass plus every query's softmax weight per slot, in f64.
fn mass_f64(a: &[Vec<f32>], d: &[usize]) -> Vec<f64> {
    let (n_head, n_kv, hd, n_tok, n_past) = (d[0], d[1], d[2], d[3], d[4]);
    let (q, k) = (&a[0], &a[1]);
    let scale = (1.0 / (hd as f32).sqrt()) as f64;
    let mut mass = wide(&a[3]);
    for t in 0..n_tok {
        for h in 0..n_head {
            let kvh = h / (n_head / n_kv);
            let ctx = n_past + t + 1;
            let sc: Vec<f64> = (0..ctx)
                .map(|s| {
                    (0..hd)
                        .map(|i| q[(t * n_head + h) * hd + i] as f64 * k[(s * n_kv + kvh) * hd + i] as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
            for (s, x) in sc.iter().enumerate() {
                mass[s] += (x - m).exp() / z;
            }
        }
    }
    mass
}

/// Causal GQA attention in f64: query head h reads KV head h / (n_head / n_kv).
fn attention_f64(a: &[Vec<f32>], d: &[usize]) -> Vec<f64> {
    let (n_head, n_kv, hd, n_tok, n_past) = (d[0], d[1], d[2], d[3], d[4]);
    let (q, k, v) = (&a[0], &a[1], &a[2]);
    let scale = (1.0 / (hd as f32).sqrt()) as f64;
    let mut out = vec![0f64; n_tok * n_head * hd];
    for t in 0..n_tok {
        for h in 0..n_head {
            let kvh = h / (n_head / n_kv);
            let ctx = n_past + t + 1;
            let sc: Vec<f64> = (0..ctx)
                .map(|s| {
                    (0..hd)
                        .map(|i| q[(t * n_head + h) * hd + i] as f64 * k[(s * n_kv + kvh) * hd + i] as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let m = sc.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
            for i in 0..hd {
                out[(t * n_head + h) * hd + i] = (0..ctx)
                    .map(|s| (sc[s] - m).exp() / z * v[(s * n_kv + kvh) * hd + i] as f64)
                    .sum();
            }
        }
    }
    out
}

// --- behaviour beyond the numbers ---------------------------------------------------------

/// A token id past the table is an error on every backend, not a panic or a read out
/// of bounds (the op layer's check).
#[test]
fn get_rows_rejects_ids_past_the_table() {
    fn on<B: Backend>(name: &str, b: &mut B) {
        for dtype in WEIGHT_DTYPES {
            let w = host_weight(dtype, 10, 64, 9, 1.0).import(b, Import::Host);
            let mut o = Act::zeros(b, Shape::d2(1, 64));
            let e = ops::get_rows(b, w.r(), &[10], o.m()).unwrap_err();
            assert!(e.to_string().contains("token id"), "{name} {dtype}: {e}");
        }
    }
    for (name, mut b) in cpu_targets() {
        on(&name, &mut b);
    }
    #[cfg(feature = "opencl")]
    for (name, mut g) in opencl_targets() {
        on(&name, &mut *g);
    }
}

/// `get_rows_at` with indices that are no row of the table (negative, past it, huge,
/// NaN): the trait's default (the CPU) reads them back and returns an error; a device
/// clamps instead and reads row 0 (the host learns of it from the same index).
#[test]
fn get_rows_at_bad_indices() {
    let bad = [-1.0f32, 1000.0, 5.0e9, f32::NAN];
    for dtype in [DType::Q8_0, DType::Q4_0, DType::F16] {
        let hw = host_weight(dtype, 1000, 576, 12, 0.5);
        for (name, mut c) in cpu_targets() {
            let w = hw.import(&c, Import::Host);
            for v in bad {
                let one = Act::new(&c, &[v], Shape::d1(1));
                let mut o = Act::zeros(&c, Shape::d2(1, 576));
                let e = ops::get_rows_at(&mut c, w.r(), one.r(), o.m()).unwrap_err();
                assert!(e.to_string().contains("not a row"), "{name} {dtype} index {v}: {e}");
            }
        }
        #[cfg(feature = "opencl")]
        for (name, mut g) in opencl_targets() {
            let g = &mut *g;
            let w = hw.import(g, Import::Host);
            let idx = Act::new(g, &bad, Shape::d1(bad.len()));
            let mut o = Act::zeros(g, Shape::d2(bad.len(), 576));
            ops::get_rows_at(g, w.r(), idx.r(), o.m()).unwrap();
            let got = o.read(g);
            for (i, v) in bad.iter().enumerate() {
                check(
                    &name,
                    "get_rows_at",
                    &format!("{dtype} index {v} reads row 0"),
                    &got[i * 576..(i + 1) * 576],
                    &wide(&hw.deq[..576]),
                    &DEQUANT,
                );
            }
        }
    }
}

/// The op layer refuses mismatched shapes, views past their buffer and rows that are not
/// whole blocks, with errors that say so (one layer for every backend: checked once).
#[test]
fn op_layer_rejects_bad_shapes_and_bounds() {
    let mut be = CpuBackend::with_isa(Isa::Scalar).unwrap();
    let wb = be.alloc(64 * 4, BufferKind::Device).unwrap();
    let xb = be.alloc(8 * 4, BufferKind::Device).unwrap();
    let mut yb = be.alloc(4 * 4, BufferKind::Device).unwrap();
    let tr = |x, dt, dims: &[usize]| TensorRef::<CpuBackend>::new(x, 0, dt, Shape::new(dims));
    let e = ops::matmul(
        &mut be,
        tr(&wb, DType::F32, &[2, 32]),
        tr(&xb, DType::F32, &[1, 8]),
        TensorMut::new(&mut yb, 0, DType::F32, Shape::d2(1, 2)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("shape mismatch"), "{e}");
    let e = ops::matmul(
        &mut be,
        tr(&wb, DType::F32, &[4, 32]),
        tr(&xb, DType::F32, &[1, 32]),
        TensorMut::new(&mut yb, 0, DType::F32, Shape::d2(1, 4)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("exceeds buffer"), "{e}");
    let e = ops::matmul(
        &mut be,
        tr(&wb, DType::Q4_0, &[1, 33]),
        tr(&xb, DType::F32, &[1, 8]),
        TensorMut::new(&mut yb, 0, DType::F32, Shape::d2(1, 1)),
    )
    .unwrap_err();
    assert!(e.to_string().contains("whole q4_0 blocks"), "{e}");
}

/// Every op of the trait has a row (a new op without one fails here), and every row has
/// an f64 reference but the whole-block ones.
#[test]
fn every_op_has_a_row() {
    for op in TRAIT_OPS {
        assert!(
            ROWS.iter()
                .any(|r| r.op.name() == op || (op == "rope_shift" && matches!(r.op, Op::EvictShift(_)))),
            "the trait op {op} has no row in ROWS"
        );
    }
    for r in ROWS {
        assert_eq!(
            r.vs_f64.is_some(),
            !is_mixed(r.op),
            "{:?}: f64 reference exists for all but whole blocks",
            r.op
        );
    }
}

/// `v` (a whole number of 32-value blocks) as Q8_0 bytes, quantized by the reference
/// quantizer.
fn q8_blocks(v: &[f32]) -> Vec<u8> {
    let mut q = vec![
        antigravity_core::quant::BlockQ8_0 {
            d: half::f16::ZERO,
            qs: [0; 32]
        };
        v.len() / 32
    ];
    antigravity_core::quant::quantize_row_q8_0(v, &mut q);
    bytemuck::cast_slice(&q).to_vec()
}

/// `v` quantized to Q8_0 and dequantized: values a Q8_0 cache holds exactly.
fn q8_round_trip(v: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    antigravity_core::quant::dequantize_row(DType::Q8_0, &q8_blocks(v), &mut out).unwrap();
    out
}
