//! The kernel table: the hot CPU kernels as function pointers, picked once per backend.
//!
//! Every entry has a scalar twin with the same signature (`crate::quant` for the
//! quantizers, `crate::quant::dot` for the dots, `cpu::scalar::gemv_*` for the many-row
//! kernels); an ISA constructor returns `None` when the CPU lacks its features, so a
//! table always holds kernels this CPU can run. `cpu::tests` checks every table this
//! CPU supports against the twins.
//!
//! Coverage (entries not listed run a vectorized kernel of that ISA):
//! * `Avx512`: `vec_dot_q8_0_q8_0` and the `gemv_*` entries are the AVX2 kernels (they
//!   measured faster on the Intel core we have; see `docs/perf-notes.md`); VNNI Q4 dots
//!   when `avx512vnni` is present.
//! * `Neon` / `NeonDotprod`: `vec_dot_f16_f32` is the scalar twin (f16 vector types are
//!   not stable Rust).
//! * `NeonI8mm`: not implemented; `for_isa` returns `None`.
//!
//! Detection (`is_x86_feature_detected!`, `is_aarch64_feature_detected!`) needs `std`: a
//! `no_std` build has the scalar table only.

use half::{bf16, f16};

use super::repack::{
    self, BlockQ4_0x8, BlockQ4_1x8, BlockQ4_Kx8, BlockQ5_0x8, BlockQ5_1x8, BlockQ5_Kx8, BlockQ6_Kx8, BlockQ8Act,
    BlockQ8_0x8, BlockQ8_Kx16,
};
use super::scalar;
use crate::quant::dot;
use crate::quant::{
    self, BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K,
};

/// An instruction-set choice for the CPU kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
    NeonDotprod,
    NeonI8mm,
}

impl Isa {
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Neon,
        Isa::NeonDotprod,
        Isa::NeonI8mm,
    ];

    /// Name as accepted by `--isa` and recorded in results.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::NeonDotprod => "neon-dotprod",
            Isa::NeonI8mm => "neon-i8mm",
        }
    }
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }
}

/// `gemm(w, x, n, y)` over 16-bit float weight rows and activation rows (f32 unless
/// given) of `n` elements ([`Kernels::gemm_f16_f32`], [`Kernels::gemm_bf16_bf16`]).
pub type GemmHalf<W, X = f32> = fn(&[W], &[X], usize, &mut [f32]);
/// A dot product of two bf16 rows ([`Kernels::vec_dot_bf16_bf16`]).
pub type DotBf16 = fn(&[bf16], &[bf16]) -> f32;

/// `g` rows of `n` floats, row `h` at `data[h · ld..][..n]` (`ld ≥ n`): a GQA group's
/// scores or weights inside longer per-head rows.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub ld: usize,
}

/// [`Rows`], writable.
#[derive(Debug)]
pub struct RowsMut<'a> {
    pub data: &'a mut [f32],
    pub n: usize,
    pub ld: usize,
}

/// Attention of a GQA group over a cache of `T` ([`Kernels::attn_group_f32`]).
///
/// `scores(q, g, k, stride, scale, out)`: `q` holds the group's `g` query rows
/// (`hd = q.len() / g` each), `out` `g` rows of `n` slots; `out[h][s] = (q_h · k_s) ·
/// scale` with `k_s = k[s·stride..][..hd]`.
///
/// `values(w, g, v, stride, out)`: `w` holds `g` rows of `n` weights, `out` `g` rows of
/// `hd = out.len() / g`; `out_h += Σ_s w[h][s] · v_s`, slots in order (added to what
/// `out` holds, so a long row can be taken in blocks).
#[derive(Clone, Copy, Debug)]
pub struct AttnGroup<T> {
    pub scores: fn(&[f32], usize, &[T], usize, f32, RowsMut<'_>),
    pub values: fn(Rows<'_>, usize, &[T], usize, &mut [f32]),
}

/// F16 decode on f16-rounded activations ([`Kernels::f16_act`]): `round` rounds an f32
/// row to f16 (nearest-even) and says whether every value stayed finite (false when a
/// magnitude reaches 65 520, which rounds to infinity; `y` is then unspecified); `dot`
/// is `Σ x·y` of two f16 rows.
#[derive(Clone, Copy, Debug)]
pub struct F16Act {
    pub round: fn(&[f32], &mut [f16]) -> bool,
    pub dot: fn(&[f16], &[f16]) -> f32,
}

/// A token-lane K-quant prefill kernel ([`Kernels::gemm_q5_kx8_t16`]).
pub type GemmKx16<W> = fn(&[W], &[BlockQ8_Kx16], usize, &mut [f32]);

/// Function pointers for the hot kernels of one ISA.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    pub isa: Isa,
    pub quantize_row_q8_0: fn(&[f32], &mut [BlockQ8_0]),
    pub quantize_row_q8_1: fn(&[f32], &mut [BlockQ8_1]),
    pub vec_dot_q4_0_q8_0: fn(&[BlockQ4_0], &[BlockQ8_0]) -> f32,
    pub vec_dot_q4_1_q8_1: fn(&[BlockQ4_1], &[BlockQ8_1]) -> f32,
    pub vec_dot_q8_0_q8_0: fn(&[BlockQ8_0], &[BlockQ8_0]) -> f32,
    /// The Q5 and K-quant weights (what `llama-quantize … Q4_K_M` writes) and the Q8_K
    /// activation quantizer. SIMD: AVX2 (also in the AVX-512 table) and NEON dots;
    /// `quantize_row_q8_k` is the scalar twin but in the AVX-512 table.
    pub quantize_row_q8_k: fn(&[f32], &mut [BlockQ8_K]),
    pub vec_dot_q5_0_q8_0: fn(&[BlockQ5_0], &[BlockQ8_0]) -> f32,
    pub vec_dot_q5_1_q8_1: fn(&[BlockQ5_1], &[BlockQ8_1]) -> f32,
    pub vec_dot_q4_k_q8_k: fn(&[BlockQ4_K], &[BlockQ8_K]) -> f32,
    pub vec_dot_q5_k_q8_k: fn(&[BlockQ5_K], &[BlockQ8_K]) -> f32,
    pub vec_dot_q6_k_q8_k: fn(&[BlockQ6_K], &[BlockQ8_K]) -> f32,
    pub vec_dot_f16_f32: fn(&[f16], &[f32]) -> f32,
    pub vec_dot_bf16_f32: fn(&[bf16], &[f32]) -> f32,
    pub vec_dot_f32: fn(&[f32], &[f32]) -> f32,
    /// One query head's attention scores over many cache slots, `(q, k, stride, scale,
    /// out)`, and the weighted sum of their value rows, `(w, v, stride, out)`: one call
    /// per head, so a SIMD version keeps the output in registers across slots. Scalar
    /// twins: `cpu::scalar::attn_scores`, `attn_values`.
    pub attn_scores: fn(&[f32], &[f32], usize, f32, &mut [f32]),
    pub attn_values: fn(&[f32], &[f32], usize, &mut [f32]),
    /// The same over an f16 cache (`--kv-type f16`; keys and values widened exactly).
    /// Scalar twins: `cpu::scalar::attn_scores_f16`, `attn_values_f16`.
    pub attn_scores_f16: fn(&[f32], &[f16], usize, f32, &mut [f32]),
    pub attn_values_f16: fn(&[f32], &[f16], usize, &mut [f32]),
    /// The same over a Q8_0 cache (`--kv-type q8_0`; `stride` in blocks, head_dim a
    /// multiple of 32 up to `scalar::Q8_MAX_HEAD_DIM`): scores quantize the query head
    /// and take Q8_0·Q8_0 dots; values dequantize each block on the fly. Scalar twins:
    /// `cpu::scalar::attn_scores_q8_0`, `attn_values_q8_0`.
    pub attn_scores_q8_0: fn(&[f32], &[BlockQ8_0], usize, f32, &mut [f32]),
    pub attn_values_q8_0: fn(&[f32], &[BlockQ8_0], usize, &mut [f32]),
    /// Grouped-query attention over an f32 / f16 cache: the scores and value sums of a
    /// whole GQA group (`g` query heads sharing one KV head) in one pass over the
    /// slots, each key and value row loaded once for the group instead of once a head
    /// (`AttnGroup`). `None`: the attention loops the per-head entries above over the
    /// group. Each entry gives the per-head entries' bits exactly (tested).
    pub attn_group_f32: Option<AttnGroup<f32>>,
    pub attn_group_f16: Option<AttnGroup<f16>>,
    /// In-place softmax of one row (attention's scores); returns the row's maximum and
    /// the sum of `exp(x − max)` it divided by (what merging softmaxes of a row's
    /// pieces needs). Scalar twin: `cpu::scalar::softmax` (libm `expf`); SIMD versions
    /// use a polynomial `exp` within a few ulp of it.
    pub softmax_f32: fn(&mut [f32]) -> (f32, f32),
    /// `out[i] = silu(g[i]) · u[i]` (the FFN's gate), `silu(g) = g / (1 + e^−g)`.
    /// Scalar twin: `cpu::scalar::swiglu` (libm `expf`); SIMD versions use the
    /// polynomial `exp` of `softmax_f32`.
    pub swiglu_f32: fn(&[f32], &[f32], &mut [f32]),
    /// `y[r] = vec_dot(w[r·nb..(r+1)·nb], x)` for every `r in 0..y.len()`, with
    /// `nb = x.len()`: many weight rows against one activation row in one call, so SIMD
    /// versions can share the activation loads and scale conversions across rows.
    /// Scalar twins: `cpu::scalar::gemv_*` (rows through the scalar `vec_dot`).
    pub gemv_q4_0_q8_0: fn(&[BlockQ4_0], &[BlockQ8_0], &mut [f32]),
    pub gemv_q4_1_q8_1: fn(&[BlockQ4_1], &[BlockQ8_1], &mut [f32]),
    pub gemv_q8_0_q8_0: fn(&[BlockQ8_0], &[BlockQ8_0], &mut [f32]),
    /// `gemm(w, x, nb, y)`: `y[t·rows + r] = vec_dot(w_row(r), x_row(t))` for the
    /// `rows = w.len() / nb` weight rows and `toks = x.len() / nb` activation rows (both
    /// `nb` blocks long; `y` is `[toks, rows]`). SIMD versions decode each weight block
    /// once for several tokens. Scalar twins: `cpu::scalar::gemm_*`.
    pub gemm_q4_0_q8_0: fn(&[BlockQ4_0], &[BlockQ8_0], usize, &mut [f32]),
    /// `gemm(w, x, n, y)` for f16 / bf16 weight rows and f32 activation rows of `n`
    /// elements, as `gemm_q4_0_q8_0`: register tiles of rows × tokens, so each weight
    /// vector is widened once for several tokens (prefill). `None` where the table has no
    /// tiled kernel: `matmul` then runs `vec_dot_f16_f32` / `vec_dot_bf16_f32` per output.
    pub gemm_f16_f32: Option<GemmHalf<f16>>,
    pub gemm_bf16_f32: Option<GemmHalf<bf16>>,
    /// bf16 weights × activations rounded to bf16 (`vdpbf16ps`: two products per f32
    /// lane per instruction, twice the FMA rate), as llama.cpp multiplies BF16 models.
    /// Only where the CPU has AVX512-BF16; `matmul` rounds the activations once per call
    /// (`bf16::from_f32`, nearest-even) into a buffer `reserve` sizes when BF16 weights
    /// were imported, and takes `gemm_bf16_f32` otherwise.
    pub gemm_bf16_bf16: Option<GemmHalf<bf16, bf16>>,
    /// The same products for one token (decode): one bf16 weight row · the activation
    /// row rounded to bf16. Where `gemm_bf16_bf16` is; `vdpbf16ps` (two products per f32
    /// lane), where widening each weight to f32 left one thread's decode of the 1B shape
    /// at 18 GB/s, short of what memory gives (see docs/perf-notes.md).
    pub vec_dot_bf16_bf16: Option<DotBf16>,
    /// F16 weights × one token's activations rounded to f16, llama.cpp's
    /// `ggml_vec_dot_f16` arithmetic: both operands widened from memory, so a weight
    /// costs one 2-byte load of each row instead of a 2-byte and a 4-byte load (the 1B
    /// shape's F16 decode 7.0 → 8.6 tok/s on one Zen 4 thread, docs/perf-notes.md).
    /// Where F16C is (x86-64); `matmul` falls back to `vec_dot_f16_f32` for a row that
    /// would overflow f16. The relative error it adds is 2⁻¹¹ per activation.
    pub f16_act: Option<F16Act>,
    /// The row-interleaved layouts (`cpu::repack`): `gemm(w, x, nb, y)` with `w` the
    /// `groups × nb` x8 blocks of `8 · groups` rows, `x` the `toks × nb` activation
    /// blocks, `y` `[toks, 8 · groups]`; decode is `toks = 1`. Scalar twins:
    /// `cpu::repack::gemm_*x8`.
    pub gemm_q4_0x8: fn(&[BlockQ4_0x8], &[BlockQ8Act], usize, &mut [f32]),
    pub gemm_q4_1x8: fn(&[BlockQ4_1x8], &[BlockQ8Act], usize, &mut [f32]),
    pub gemm_q8_0x8: fn(&[BlockQ8_0x8], &[BlockQ8Act], usize, &mut [f32]),
    /// The same for the types of `Q4_K_M` and `Q5_K_M` files: Q5_0 and Q5_1 with Q8
    /// activations, Q4_K, Q5_K and Q6_K with Q8_K activations (`nb` in super-blocks).
    /// Scalar twins: `cpu::repack::gemm_q5_0x8`, `gemm_q5_1x8`, `gemm_q4_kx8`,
    /// `gemm_q5_kx8`, `gemm_q6_kx8`.
    pub gemm_q5_0x8: fn(&[BlockQ5_0x8], &[BlockQ8Act], usize, &mut [f32]),
    pub gemm_q5_1x8: fn(&[BlockQ5_1x8], &[BlockQ8Act], usize, &mut [f32]),
    pub gemm_q4_kx8: fn(&[BlockQ4_Kx8], &[BlockQ8_K], usize, &mut [f32]),
    pub gemm_q5_kx8: fn(&[BlockQ5_Kx8], &[BlockQ8_K], usize, &mut [f32]),
    pub gemm_q6_kx8: fn(&[BlockQ6_Kx8], &[BlockQ8_K], usize, &mut [f32]),
    /// Token-lane Q4_K / Q5_K / Q6_K kernels for prefill: `gemm(w, x, nb, y)` with `w` as
    /// `gemm_q5_kx8`'s, `y` `[toks, 8 · groups]` with `toks = y.len() / (8 · groups)`
    /// ≤ 64, and `x` the `⌈toks / 16⌉ · nb` [`BlockQ8_Kx16`] of those tokens in groups
    /// of sixteen, group-major (`cpu::repack::q8_k_x16`; padded tokens are not stored).
    /// The same products as `gemm_q5_kx8`, summed in another order; `None` where the
    /// ISA has none (the matmul driver then runs `gemm_q5_kx8`).
    pub gemm_q4_kx8_t16: Option<GemmKx16<BlockQ4_Kx8>>,
    pub gemm_q5_kx8_t16: Option<GemmKx16<BlockQ5_Kx8>>,
    pub gemm_q6_kx8_t16: Option<GemmKx16<BlockQ6_Kx8>>,
    /// True when the Q4_0/Q4_1/Q8_0 x8 entries are SIMD kernels of this ISA; the backend
    /// repacks weights at load only then (the scalar twins are references, slower than
    /// the plain path's SIMD kernels).
    pub x8_simd: bool,
    /// The same for the Q5_0/Q5_1/Q4_K/Q5_K/Q6_K entries.
    pub x8_kq_simd: bool,
}

impl Kernels {
    /// The portable table.
    pub const fn scalar() -> Kernels {
        Kernels {
            isa: Isa::Scalar,
            quantize_row_q8_0: quant::quantize_row_q8_0,
            quantize_row_q8_1: quant::quantize_row_q8_1,
            vec_dot_q4_0_q8_0: dot::vec_dot_q4_0_q8_0,
            vec_dot_q4_1_q8_1: dot::vec_dot_q4_1_q8_1,
            vec_dot_q8_0_q8_0: dot::vec_dot_q8_0_q8_0,
            quantize_row_q8_k: quant::k::quantize_row_q8_k,
            vec_dot_q5_0_q8_0: dot::vec_dot_q5_0_q8_0,
            vec_dot_q5_1_q8_1: dot::vec_dot_q5_1_q8_1,
            vec_dot_q4_k_q8_k: dot::vec_dot_q4_k_q8_k,
            vec_dot_q5_k_q8_k: dot::vec_dot_q5_k_q8_k,
            vec_dot_q6_k_q8_k: dot::vec_dot_q6_k_q8_k,
            vec_dot_f16_f32: dot::vec_dot_f16_f32,
            vec_dot_bf16_f32: dot::vec_dot_bf16_f32,
            vec_dot_f32: dot::vec_dot_f32,
            attn_scores: scalar::attn_scores,
            attn_values: scalar::attn_values,
            attn_scores_f16: scalar::attn_scores_f16,
            attn_values_f16: scalar::attn_values_f16,
            attn_scores_q8_0: scalar::attn_scores_q8_0,
            attn_values_q8_0: scalar::attn_values_q8_0,
            attn_group_f32: None,
            attn_group_f16: None,
            softmax_f32: scalar::softmax,
            swiglu_f32: scalar::swiglu,
            gemv_q4_0_q8_0: scalar::gemv_q4_0_q8_0,
            gemv_q4_1_q8_1: scalar::gemv_q4_1_q8_1,
            gemv_q8_0_q8_0: scalar::gemv_q8_0_q8_0,
            gemm_q4_0_q8_0: scalar::gemm_q4_0_q8_0,
            gemm_f16_f32: None,
            gemm_bf16_f32: None,
            gemm_bf16_bf16: None,
            vec_dot_bf16_bf16: None,
            f16_act: None,
            gemm_q4_0x8: repack::gemm_q4_0x8,
            gemm_q4_1x8: repack::gemm_q4_1x8,
            gemm_q8_0x8: repack::gemm_q8_0x8,
            gemm_q5_0x8: repack::gemm_q5_0x8,
            gemm_q5_1x8: repack::gemm_q5_1x8,
            gemm_q4_kx8: repack::gemm_q4_kx8,
            gemm_q5_kx8: repack::gemm_q5_kx8,
            gemm_q6_kx8: repack::gemm_q6_kx8,
            gemm_q4_kx8_t16: None,
            gemm_q5_kx8_t16: None,
            gemm_q6_kx8_t16: None,
            x8_simd: false,
            x8_kq_simd: false,
        }
    }

    /// The table for `isa`, or `None` when this CPU (or this build's target) lacks it.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        match isa {
            Isa::Scalar => Some(Kernels::scalar()),
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            Isa::Avx2 => super::x86_64::avx2::kernels(),
            #[cfg(all(feature = "std", target_arch = "x86_64"))]
            Isa::Avx512 => super::x86_64::avx512::kernels(),
            #[cfg(all(feature = "std", target_arch = "aarch64"))]
            Isa::Neon | Isa::NeonDotprod | Isa::NeonI8mm => super::aarch64::kernels(isa),
            // Feature detection needs `std`; other targets have no SIMD table.
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Whether this table runs `dtype`'s x8 layout with SIMD kernels (the backend
    /// repacks a weight only then).
    pub fn x8_simd_for(&self, dtype: crate::dtype::DType) -> bool {
        use crate::dtype::DType;
        match dtype {
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => self.x8_simd,
            DType::Q5_0 | DType::Q5_1 | DType::Q4_K | DType::Q5_K | DType::Q6_K => self.x8_kq_simd,
            _ => false,
        }
    }

    /// The best table this CPU supports.
    pub fn detect() -> Kernels {
        [Isa::Avx512, Isa::Avx2, Isa::NeonI8mm, Isa::NeonDotprod, Isa::Neon]
            .into_iter()
            .find_map(Kernels::for_isa)
            .unwrap_or_else(Kernels::scalar)
    }
}
