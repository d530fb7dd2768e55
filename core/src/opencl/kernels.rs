//! The typed kernel registry: one signature struct per kernel parameter list (declared
//! with [`signature!`], see `launch.rs`) and [`Kernels`], every kernel object of the
//! backend by name and type — `k.mul_mv.get(dtype)`, `k.rms_norm` — instead of an index
//! table. A kernel family's dtype variants sit in a [`ByWeight`] (every weight dtype) or
//! [`ByQuant`] (the block-quantized ones); [`dtype_code`] is the code `block.cl` switches
//! on, the same order, generated into the kernels' prelude (`program.rs`).
//!
//! The signature structs are the Rust side of the `.cl` parameter lists: a field per
//! parameter, in order; `Mem` for `__global` pointers and images, `u64` for `ulong`
//! offsets (weights in bytes, f32 activations in elements), `u32`/`i32`/`f32` scalars,
//! `Local` for `__local` buffers sized at launch.

use super::launch::{signature, Kern, Local, Mem};
use opencl3::program::Program;

use super::program::Programs;
use crate::dtype::DType;
use crate::error::Result;

signature! {
    /// `add_f32` (add.cl).
    struct Add { dst: Mem, dst_off: u64, src: Mem, src_off: u64, n: u32 }
    /// `silu_mul_f32` (silu_mul.cl).
    struct SiluMul { gate: Mem, gate_off: u64, up: Mem, up_off: u64, out: Mem, out_off: u64, n: u32 }
    /// `rms_norm_f32` (rms_norm.cl).
    struct RmsNorm { x: Mem, x_off: u64, w: Mem, w_off: u64, out: Mem, out_off: u64, n: u32, eps: f32 }
    /// `softmax_f32` (softmax.cl).
    struct Softmax { x: Mem, x_off: u64, n: u32 }
    /// `argmax_f32` (softmax.cl).
    struct Argmax { x: Mem, x_off: u64, out: Mem, out_off: u64, n: u32, bv: Local, bi: Local }
    /// `argmax_part_f32` (softmax.cl).
    struct ArgmaxPart { x: Mem, x_off: u64, n: u32, chunk: u32, part: Mem, bv: Local, bi: Local }
    /// `argmax_final_f32` (softmax.cl).
    struct ArgmaxFinal { part: Mem, n_parts: u32, out: Mem, out_off: u64, bv: Local, bi: Local }
    /// `rope_f32` (rope.cl).
    struct Rope {
        x: Mem, x_off: u64, inv_freq: Mem, f_off: u64, pos0: u32, n_heads: u32, head_dim: u32, style: u32,
    }
    /// `rope_qk_f32` (rope.cl).
    struct RopeQk {
        q: Mem, q_off: u64, k: Mem, k_off: u64, inv_freq: Mem, f_off: u64, pos0: u32, n_head_q: u32,
        n_head_k: u32, head_dim: u32, style: u32,
    }
    /// `attention_f32` (attention.cl; `k_off`, `v_off` in bytes, the cache in the
    /// program's `KV_T`).
    struct Attention {
        q: Mem, q_off: u64, k: Mem, k_off: u64, v: Mem, v_off: u64, out: Mem, out_off: u64, n_head: u32,
        n_kv_head: u32, hd: u32, scale: f32, n_past: u32, chunk: u32, part: Mem,
    }
    /// `attention_combine_f32` (attention.cl).
    struct AttentionCombine { part: Mem, out: Mem, out_off: u64, n_head: u32, hd: u32, n_chunks: u32 }
    /// `attention_prefill_f32` (attention.cl; as [`Attention`]).
    struct AttentionPrefill {
        q: Mem, q_off: u64, k: Mem, k_off: u64, v: Mem, v_off: u64, out: Mem, out_off: u64, n_head: u32,
        n_kv_head: u32, hd: u32, scale: f32, n_past: u32, n_tok: u32,
    }
    /// `move_rows_u16` (kv_cache.cl); offsets and counts in 2-byte units.
    struct MoveRows { x: Mem, x_off: u64, src: u64, dst: u64, n: u64 }
    /// `rope_shift_f32` (kv_cache.cl): row `r` turned by `delta + r * step` positions;
    /// `x_off` in bytes, the cache in the program's `KV_T`.
    struct RopeShift {
        x: Mem, x_off: u64, inv_freq: Mem, f_off: u64, delta: i32, step: u32, n_heads: u32, head_dim: u32,
        style: u32,
    }
    /// `attention_mass_f32` (kv_cache.cl; `k_off` in bytes, the cache in `KV_T`).
    struct AttentionMass {
        q: Mem, q_off: u64, k: Mem, k_off: u64, n_head: u32, n_kv_head: u32, hd: u32, scale: f32, n_past: u32,
        mass: Mem, m_off: u64,
    }
    /// `get_rows_*` (get_rows.cl): `single_id` ≥ 0 is the one id, −1 reads u32 ids and
    /// −2 f32 indices at `ids[ids_off..]`.
    struct GetRows {
        table: Mem, table_off: u64, row_bytes: u64, n_rows: u32, ids: Mem, ids_off: u64, single_id: i32,
        out: Mem, out_off: u64, dim: u32,
    }
    /// `store_rows_*` (get_rows.cl): `n` f32s from `src[src_off..]` into the cache view
    /// at byte `dst_off` of `dst`.
    struct StoreRows { src: Mem, src_off: u64, dst: Mem, dst_off: u64, n: u32 }
    /// `mul_mv_*_f32` (mul_mv_*_f32.cl).
    struct MulMv {
        w: Mem, w_off: u64, x: Mem, x_off: u64, y: Mem, y_off: u64, n_in: u32, n_out: u32, n_tok: u32,
        accumulate: u32,
    }
    /// `mul_mv_q4_0_img_f32` (mul_mv_q4_0_img_f32.cl).
    struct MulMvImg {
        wq: Mem, wd: Mem, x: Mem, x_off: u64, y: Mem, y_off: u64, n_in: u32, n_out: u32, n_tok: u32,
        accumulate: u32,
    }
    /// `mul_mv3_*_f32` (mul_mv_fused.cl).
    struct MulMv3 {
        w0: Mem, w0_off: u64, w1: Mem, w1_off: u64, w2: Mem, w2_off: u64, x: Mem, x_off: u64, nw: Mem,
        nw_off: u64, eps: f32, y0: Mem, y0_off: u64, y1: Mem, y1_off: u64, y2: Mem, y2_off: u64, n_in: u32,
        n0: u32, n1: u32, n2: u32, n_tok: u32,
    }
    /// `mul_mv_swiglu_*_f32` (mul_mv_fused.cl).
    struct MulMvSwiglu {
        wg: Mem, wg_off: u64, wu: Mem, wu_off: u64, x: Mem, x_off: u64, nw: Mem, nw_off: u64, eps: f32,
        out: Mem, out_off: u64, n_in: u32, n_out: u32, n_tok: u32,
    }
    /// `mul_mm_*_f32` (mul_mm.cl).
    struct MulMm {
        w: Mem, w_off: u64, x: Mem, x_off: u64, y: Mem, y_off: u64, n_in: u32, n_out: u32, n_tok: u32,
        accumulate: u32, k_chunk: u32, part: Mem,
    }
    /// `mul_mm3_*_f32` (mul_mm.cl).
    struct MulMm3 {
        w0: Mem, w0_off: u64, w1: Mem, w1_off: u64, w2: Mem, w2_off: u64, x: Mem, x_off: u64, y0: Mem,
        y0_off: u64, y1: Mem, y1_off: u64, y2: Mem, y2_off: u64, n_in: u32, n0: u32, n1: u32, n2: u32,
        n_tok: u32,
    }
    /// `mul_mm_swiglu_*_f32` (mul_mm.cl).
    struct MulMmSwiglu {
        wg: Mem, wg_off: u64, wu: Mem, wu_off: u64, x: Mem, x_off: u64, out: Mem, out_off: u64, n_in: u32,
        n_out: u32, n_tok: u32,
    }
    /// `quantize_q8_1_f32` (mul_mm_q8_1.cl): `n_blocks` 32-element blocks of `x` into
    /// int8 words `xq`, scales `xd` and scaled sums `xs`.
    struct QuantizeQ8_1 { x: Mem, x_off: u64, xq: Mem, xd: Mem, xs: Mem, n_blocks: u32 }
    /// `mul_mm_*_q8_1` (mul_mm_q8_1.cl): [`MulMm`] over quantized activations.
    struct MulMmq {
        w: Mem, w_off: u64, xq: Mem, xd: Mem, xs: Mem, y: Mem, y_off: u64, n_in: u32, n_out: u32, n_tok: u32,
        accumulate: u32, k_chunk: u32, part: Mem,
    }
    /// `mul_mm3_*_q8_1` (mul_mm_q8_1.cl).
    struct MulMmq3 {
        w0: Mem, w0_off: u64, w1: Mem, w1_off: u64, w2: Mem, w2_off: u64, xq: Mem, xd: Mem, xs: Mem, y0: Mem,
        y0_off: u64, y1: Mem, y1_off: u64, y2: Mem, y2_off: u64, n_in: u32, n0: u32, n1: u32, n2: u32,
        n_tok: u32,
    }
    /// `mul_mm_swiglu_*_q8_1` (mul_mm_q8_1.cl).
    struct MulMmqSwiglu {
        wg: Mem, wg_off: u64, wu: Mem, wu_off: u64, xq: Mem, xd: Mem, xs: Mem, out: Mem, out_off: u64,
        n_in: u32, n_out: u32, n_tok: u32,
    }
    /// `mul_mm_reduce_f32` (mul_mm.cl).
    struct MulMmReduce { part: Mem, y: Mem, y_off: u64, n: u32, n_split: u32, accumulate: u32 }
    /// `llama_head_f32` (block.cl); `tw` is the weight's [`dtype_code`].
    struct LlamaHead {
        x: Mem, x_off: u64, nw: Mem, n_off: u64, w: Mem, w_off: u64, tw: u32, y: Mem, y_off: u64, dim: u32,
        n_rows: u32, eps: f32, rows_per_wg: u32, vl: Local,
    }
    /// The parameters of `llama_blocks_f32` (block.cl) that every layer of a launch
    /// shares; then come `LPL` sets of [`BlockLayer`] and the `__local` staged vector.
    struct BlockShared {
        x: Mem, x_off: u64, inv_freq: Mem, if_off: u64, q: Mem, q_off: u64, hb: Mem, hb_off: u64, part: Mem,
        sync: Mem, sync_base: u32, spin_limit: u32, prof: Mem, prof_on: u32, dim: u32, n_head: u32,
        n_kv_head: u32, hd: u32, ffn: u32, slot: u32, pos: u32, style: u32, eps: f32, scale: f32,
        n_layers: u32, wide_ok: u32,
    }
    /// One layer's parameter set of `llama_blocks_f32` (`t*`: weight [`dtype_code`]s;
    /// `kc_off`, `vc_off` in bytes, the caches in the program's `KV_T`).
    struct BlockLayer {
        an: Mem, an_off: u64, wq: Mem, wq_off: u64, tq: u32, wk: Mem, wk_off: u64, tk: u32, wv: Mem,
        wv_off: u64, tv: u32, wo: Mem, wo_off: u64, to: u32, fn_: Mem, fn_off: u64, wg: Mem, wg_off: u64,
        tg: u32, wu: Mem, wu_off: u64, tu: u32, wd: Mem, wd_off: u64, td: u32, kc: Mem, kc_off: u64, vc: Mem,
        vc_off: u64,
    }
}

/// `llama_blocks_f32`: its parameter list is [`BlockShared`], `LPL` × [`BlockLayer`],
/// then the staged vector (see `block.rs`).
pub(super) struct LlamaBlocks;

/// The dtype code the kernels switch on (`T_F32` … `T_Q6_K` in the generated prelude;
/// `block.cl` decodes every one); `None` for the activation-only types (Q8_1, Q8_K).
pub(super) fn dtype_code(t: DType) -> Option<u32> {
    Some(match t {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::BF16 => 2,
        DType::Q4_0 => 3,
        DType::Q4_1 => 4,
        DType::Q8_0 => 5,
        DType::Q5_0 => 6,
        DType::Q5_1 => 7,
        DType::Q4_K => 8,
        DType::Q5_K => 9,
        DType::Q6_K => 10,
        DType::Q8_1 | DType::Q8_K => return None,
    })
}

/// The block kernel's code for a Q4_0 matrix repacked row by row (`rowsoa.rs`): no
/// [`DType`] of its own, the bytes hold the same blocks.
pub(super) const T_Q4_0R: u32 = 11;

/// One kernel per weight dtype (the order of [`dtype_code`]).
pub(super) struct ByWeight<K> {
    f32: K,
    f16: K,
    bf16: K,
    q4_0: K,
    q4_1: K,
    q8_0: K,
}

impl<K> ByWeight<K> {
    pub(super) fn get(&self, t: DType) -> Option<&K> {
        Some(match t {
            DType::F32 => &self.f32,
            DType::F16 => &self.f16,
            DType::BF16 => &self.bf16,
            DType::Q4_0 => &self.q4_0,
            DType::Q4_1 => &self.q4_1,
            DType::Q8_0 => &self.q8_0,
            _ => return None,
        })
    }
}

/// One kernel per weight dtype any per-op kernel reads: [`ByWeight`]'s and the types of a
/// `Q4_K_M`/`Q5_K_M` file (Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), which `get_rows`, `mul_mv` and
/// the tiled `mul_mm` decode (and `block.cl`, by [`dtype_code`]); the fused per-op decode
/// kernels (`mul_mv3`, `mul_mv_swiglu`) leave them to the composition.
pub(super) struct ByAnyWeight<K> {
    base: ByWeight<K>,
    q5_0: K,
    q5_1: K,
    q4_k: K,
    q5_k: K,
    q6_k: K,
}

impl<K> ByAnyWeight<K> {
    pub(super) fn get(&self, t: DType) -> Option<&K> {
        Some(match t {
            DType::Q5_0 => &self.q5_0,
            DType::Q5_1 => &self.q5_1,
            DType::Q4_K => &self.q4_k,
            DType::Q5_K => &self.q5_k,
            DType::Q6_K => &self.q6_k,
            _ => return self.base.get(t),
        })
    }
}

/// One kernel per block-quantized weight dtype: [`ByQuant`]'s and the types of a
/// `Q4_K_M`/`Q5_K_M` file (the tiled fused prefill kernels).
pub(super) struct ByAnyQuant<K> {
    base: ByQuant<K>,
    q5_0: K,
    q5_1: K,
    q4_k: K,
    q5_k: K,
    q6_k: K,
}

impl<K> ByAnyQuant<K> {
    pub(super) fn get(&self, t: DType) -> Option<&K> {
        Some(match t {
            DType::Q5_0 => &self.q5_0,
            DType::Q5_1 => &self.q5_1,
            DType::Q4_K => &self.q4_k,
            DType::Q5_K => &self.q5_k,
            DType::Q6_K => &self.q6_k,
            _ => return self.base.get(t),
        })
    }
}

/// The kernels that read a KV cache of one dtype: attention.cl and kv_cache.cl as built
/// for it (`-DKV_T=…`; the f32 set at creation, the others on first use:
/// [`super::program::KV_LAZY`]).
pub(super) struct KvKernels {
    pub(super) attention: Kern<Attention>,
    pub(super) attention_prefill: Kern<AttentionPrefill>,
    pub(super) rope_shift: Kern<RopeShift>,
    pub(super) attention_mass: Kern<AttentionMass>,
}

impl KvKernels {
    /// The set from one cache dtype's builds of attention.cl and kv_cache.cl.
    pub(super) fn create(attention_cl: &Program, kv_cache_cl: &Program) -> Result<KvKernels> {
        Ok(KvKernels {
            attention: Kern::create(attention_cl, "attention_f32")?,
            attention_prefill: Kern::create(attention_cl, "attention_prefill_f32")?,
            rope_shift: Kern::create(kv_cache_cl, "rope_shift_f32")?,
            attention_mass: Kern::create(kv_cache_cl, "attention_mass_f32")?,
        })
    }
}

/// One kernel per block-quantized weight dtype (the fused kernels).
pub(super) struct ByQuant<K> {
    q4_0: K,
    q4_1: K,
    q8_0: K,
}

impl<K> ByQuant<K> {
    pub(super) fn get(&self, t: DType) -> Option<&K> {
        match t {
            DType::Q4_0 => Some(&self.q4_0),
            DType::Q4_1 => Some(&self.q4_1),
            DType::Q8_0 => Some(&self.q8_0),
            _ => None,
        }
    }
}

/// One kernel per weight dtype the int8 prefill matmuls read (mul_mm_q8_1.cl): the
/// types whose 32-element blocks (or K-quant sub-blocks) have one scale and offset.
/// Q6_K (16-element scales) and the float types stay on `mul_mm`.
pub(super) struct ByInt8<K> {
    q4_0: K,
    q4_1: K,
    q8_0: K,
    q5_0: K,
    q5_1: K,
    q4_k: K,
    q5_k: K,
}

impl<K> ByInt8<K> {
    pub(super) fn get(&self, t: DType) -> Option<&K> {
        Some(match t {
            DType::Q4_0 => &self.q4_0,
            DType::Q4_1 => &self.q4_1,
            DType::Q8_0 => &self.q8_0,
            DType::Q5_0 => &self.q5_0,
            DType::Q5_1 => &self.q5_1,
            DType::Q4_K => &self.q4_k,
            DType::Q5_K => &self.q5_k,
            _ => return None,
        })
    }
}

/// The int8 prefill path (mul_mm_q8_1.cl), when it was built: the activation quantizer
/// and the three tiled matmuls over its output.
pub(super) struct Mmq {
    pub(super) quantize: Kern<QuantizeQ8_1>,
    pub(super) mul_mm: ByInt8<Kern<MulMmq>>,
    pub(super) mul_mm3: ByInt8<Kern<MulMmq3>>,
    pub(super) mul_mm_swiglu: ByInt8<Kern<MulMmqSwiglu>>,
    /// Q4_0 weights through their repacked rows (`rowsoa.rs`), where they have them.
    pub(super) q4_0r: (Kern<MulMmq>, Kern<MulMmq3>, Kern<MulMmqSwiglu>),
}

impl Mmq {
    pub(super) fn create(p: &opencl3::program::Program) -> Result<Mmq> {
        Ok(Mmq {
            quantize: Kern::create(p, "quantize_q8_1_f32")?,
            mul_mm: ByInt8 {
                q4_0: Kern::create(p, "mul_mm_q4_0_q8_1")?,
                q4_1: Kern::create(p, "mul_mm_q4_1_q8_1")?,
                q8_0: Kern::create(p, "mul_mm_q8_0_q8_1")?,
                q5_0: Kern::create(p, "mul_mm_q5_0_q8_1")?,
                q5_1: Kern::create(p, "mul_mm_q5_1_q8_1")?,
                q4_k: Kern::create(p, "mul_mm_q4_k_q8_1")?,
                q5_k: Kern::create(p, "mul_mm_q5_k_q8_1")?,
            },
            mul_mm3: ByInt8 {
                q4_0: Kern::create(p, "mul_mm3_q4_0_q8_1")?,
                q4_1: Kern::create(p, "mul_mm3_q4_1_q8_1")?,
                q8_0: Kern::create(p, "mul_mm3_q8_0_q8_1")?,
                q5_0: Kern::create(p, "mul_mm3_q5_0_q8_1")?,
                q5_1: Kern::create(p, "mul_mm3_q5_1_q8_1")?,
                q4_k: Kern::create(p, "mul_mm3_q4_k_q8_1")?,
                q5_k: Kern::create(p, "mul_mm3_q5_k_q8_1")?,
            },
            mul_mm_swiglu: ByInt8 {
                q4_0: Kern::create(p, "mul_mm_swiglu_q4_0_q8_1")?,
                q4_1: Kern::create(p, "mul_mm_swiglu_q4_1_q8_1")?,
                q8_0: Kern::create(p, "mul_mm_swiglu_q8_0_q8_1")?,
                q5_0: Kern::create(p, "mul_mm_swiglu_q5_0_q8_1")?,
                q5_1: Kern::create(p, "mul_mm_swiglu_q5_1_q8_1")?,
                q4_k: Kern::create(p, "mul_mm_swiglu_q4_k_q8_1")?,
                q5_k: Kern::create(p, "mul_mm_swiglu_q5_k_q8_1")?,
            },
            q4_0r: (
                Kern::create(p, "mul_mm_q4_0r_q8_1")?,
                Kern::create(p, "mul_mm3_q4_0r_q8_1")?,
                Kern::create(p, "mul_mm_swiglu_q4_0r_q8_1")?,
            ),
        })
    }
}

/// Every kernel of the per-op path, created once when the backend is built. (The block
/// kernels' per-group objects are in `block.rs`, the image kernel in `image.rs`.)
pub(super) struct Kernels {
    pub(super) add: Kern<Add>,
    pub(super) silu_mul: Kern<SiluMul>,
    pub(super) rms_norm: Kern<RmsNorm>,
    pub(super) softmax: Kern<Softmax>,
    pub(super) argmax: Kern<Argmax>,
    pub(super) argmax_part: Kern<ArgmaxPart>,
    pub(super) argmax_final: Kern<ArgmaxFinal>,
    pub(super) rope: Kern<Rope>,
    pub(super) rope_qk: Kern<RopeQk>,
    /// The cache-reading kernels for an f32 cache (other dtypes: `OpenClBackend::kv_kernels`).
    pub(super) kv_f32: KvKernels,
    pub(super) attention_combine: Kern<AttentionCombine>,
    pub(super) move_rows: Kern<MoveRows>,
    pub(super) get_rows: ByAnyWeight<Kern<GetRows>>,
    /// `store_rows_f32`, `store_rows_f16`, `store_rows_q8_0`.
    pub(super) store_rows: [Kern<StoreRows>; 3],
    pub(super) mul_mv: ByAnyWeight<Kern<MulMv>>,
    pub(super) mul_mm: ByAnyWeight<Kern<MulMm>>,
    pub(super) mul_mm_reduce: Kern<MulMmReduce>,
    pub(super) mul_mv3: ByQuant<Kern<MulMv3>>,
    pub(super) mul_mv_swiglu: ByQuant<Kern<MulMvSwiglu>>,
    pub(super) mul_mm3: ByAnyQuant<Kern<MulMm3>>,
    pub(super) mul_mm_swiglu: ByAnyQuant<Kern<MulMmSwiglu>>,
    pub(super) llama_head: Kern<LlamaHead>,
    /// `llama_blocks_f32` of the shared program (the one-layer `llama_block` op).
    pub(super) llama_blocks: Kern<LlamaBlocks>,
}

impl Kernels {
    /// Creates every kernel from the built programs; `block_args` is the parameter count
    /// of `llama_blocks_f32` as built (it depends on `LPL`).
    pub(super) fn create(p: &Programs, block_args: usize) -> Result<Kernels> {
        let (mm_cl, fused_cl, get_rows_cl) = (p.get("mul_mm.cl"), p.get("mul_mv_fused.cl"), p.get("get_rows.cl"));
        let kq_cl = p.get("mul_mv_kq_f32.cl");
        let mm_kq = p.get("mul_mm_kq_f32.cl");
        Ok(Kernels {
            add: Kern::create(p.get("add.cl"), "add_f32")?,
            silu_mul: Kern::create(p.get("silu_mul.cl"), "silu_mul_f32")?,
            rms_norm: Kern::create(p.get("rms_norm.cl"), "rms_norm_f32")?,
            softmax: Kern::create(p.get("softmax.cl"), "softmax_f32")?,
            argmax: Kern::create(p.get("softmax.cl"), "argmax_f32")?,
            argmax_part: Kern::create(p.get("softmax.cl"), "argmax_part_f32")?,
            argmax_final: Kern::create(p.get("softmax.cl"), "argmax_final_f32")?,
            rope: Kern::create(p.get("rope.cl"), "rope_f32")?,
            rope_qk: Kern::create(p.get("rope.cl"), "rope_qk_f32")?,
            kv_f32: KvKernels::create(p.get("attention.cl"), p.get("kv_cache.cl"))?,
            attention_combine: Kern::create(p.get("attention.cl"), "attention_combine_f32")?,
            move_rows: Kern::create(p.get("kv_cache.cl"), "move_rows_u16")?,
            get_rows: ByAnyWeight {
                base: ByWeight {
                    f32: Kern::create(get_rows_cl, "get_rows_f32")?,
                    f16: Kern::create(get_rows_cl, "get_rows_f16")?,
                    bf16: Kern::create(get_rows_cl, "get_rows_bf16")?,
                    q4_0: Kern::create(get_rows_cl, "get_rows_q4_0")?,
                    q4_1: Kern::create(get_rows_cl, "get_rows_q4_1")?,
                    q8_0: Kern::create(get_rows_cl, "get_rows_q8_0")?,
                },
                q5_0: Kern::create(get_rows_cl, "get_rows_q5_0")?,
                q5_1: Kern::create(get_rows_cl, "get_rows_q5_1")?,
                q4_k: Kern::create(get_rows_cl, "get_rows_q4_k")?,
                q5_k: Kern::create(get_rows_cl, "get_rows_q5_k")?,
                q6_k: Kern::create(get_rows_cl, "get_rows_q6_k")?,
            },
            store_rows: [
                Kern::create(get_rows_cl, "store_rows_f32")?,
                Kern::create(get_rows_cl, "store_rows_f16")?,
                Kern::create(get_rows_cl, "store_rows_q8_0")?,
            ],
            mul_mv: ByAnyWeight {
                base: ByWeight {
                    f32: Kern::create(p.get("mul_mv_f32_f32.cl"), "mul_mv_f32_f32")?,
                    f16: Kern::create(p.get("mul_mv_f16_f32.cl"), "mul_mv_f16_f32")?,
                    bf16: Kern::create(p.get("mul_mv_bf16_f32.cl"), "mul_mv_bf16_f32")?,
                    q4_0: Kern::create(p.get("mul_mv_q4_0_f32.cl"), "mul_mv_q4_0_f32")?,
                    q4_1: Kern::create(p.get("mul_mv_q4_1_f32.cl"), "mul_mv_q4_1_f32")?,
                    q8_0: Kern::create(p.get("mul_mv_q8_0_f32.cl"), "mul_mv_q8_0_f32")?,
                },
                q5_0: Kern::create(kq_cl, "mul_mv_q5_0_f32")?,
                q5_1: Kern::create(kq_cl, "mul_mv_q5_1_f32")?,
                q4_k: Kern::create(kq_cl, "mul_mv_q4_k_f32")?,
                q5_k: Kern::create(kq_cl, "mul_mv_q5_k_f32")?,
                q6_k: Kern::create(kq_cl, "mul_mv_q6_k_f32")?,
            },
            mul_mm: ByAnyWeight {
                base: ByWeight {
                    f32: Kern::create(mm_cl, "mul_mm_f32_f32")?,
                    f16: Kern::create(mm_cl, "mul_mm_f16_f32")?,
                    bf16: Kern::create(mm_cl, "mul_mm_bf16_f32")?,
                    q4_0: Kern::create(mm_cl, "mul_mm_q4_0_f32")?,
                    q4_1: Kern::create(mm_cl, "mul_mm_q4_1_f32")?,
                    q8_0: Kern::create(mm_cl, "mul_mm_q8_0_f32")?,
                },
                q5_0: Kern::create(mm_kq, "mul_mm_q5_0_f32")?,
                q5_1: Kern::create(mm_kq, "mul_mm_q5_1_f32")?,
                q4_k: Kern::create(mm_kq, "mul_mm_q4_k_f32")?,
                q5_k: Kern::create(mm_kq, "mul_mm_q5_k_f32")?,
                q6_k: Kern::create(mm_kq, "mul_mm_q6_k_f32")?,
            },
            mul_mm_reduce: Kern::create(mm_cl, "mul_mm_reduce_f32")?,
            mul_mv3: ByQuant {
                q4_0: Kern::create(fused_cl, "mul_mv3_q4_0_f32")?,
                q4_1: Kern::create(fused_cl, "mul_mv3_q4_1_f32")?,
                q8_0: Kern::create(fused_cl, "mul_mv3_q8_0_f32")?,
            },
            mul_mv_swiglu: ByQuant {
                q4_0: Kern::create(fused_cl, "mul_mv_swiglu_q4_0_f32")?,
                q4_1: Kern::create(fused_cl, "mul_mv_swiglu_q4_1_f32")?,
                q8_0: Kern::create(fused_cl, "mul_mv_swiglu_q8_0_f32")?,
            },
            mul_mm3: ByAnyQuant {
                base: ByQuant {
                    q4_0: Kern::create(mm_cl, "mul_mm3_q4_0_f32")?,
                    q4_1: Kern::create(mm_cl, "mul_mm3_q4_1_f32")?,
                    q8_0: Kern::create(mm_cl, "mul_mm3_q8_0_f32")?,
                },
                q5_0: Kern::create(mm_kq, "mul_mm3_q5_0_f32")?,
                q5_1: Kern::create(mm_kq, "mul_mm3_q5_1_f32")?,
                q4_k: Kern::create(mm_kq, "mul_mm3_q4_k_f32")?,
                q5_k: Kern::create(mm_kq, "mul_mm3_q5_k_f32")?,
                q6_k: Kern::create(mm_kq, "mul_mm3_q6_k_f32")?,
            },
            mul_mm_swiglu: ByAnyQuant {
                base: ByQuant {
                    q4_0: Kern::create(mm_cl, "mul_mm_swiglu_q4_0_f32")?,
                    q4_1: Kern::create(mm_cl, "mul_mm_swiglu_q4_1_f32")?,
                    q8_0: Kern::create(mm_cl, "mul_mm_swiglu_q8_0_f32")?,
                },
                q5_0: Kern::create(mm_kq, "mul_mm_swiglu_q5_0_f32")?,
                q5_1: Kern::create(mm_kq, "mul_mm_swiglu_q5_1_f32")?,
                q4_k: Kern::create(mm_kq, "mul_mm_swiglu_q4_k_f32")?,
                q5_k: Kern::create(mm_kq, "mul_mm_swiglu_q5_k_f32")?,
                q6_k: Kern::create(mm_kq, "mul_mm_swiglu_q6_k_f32")?,
            },
            llama_head: Kern::create(p.get("block.cl"), "llama_head_f32")?,
            llama_blocks: Kern::create_n(p.get("block.cl"), "llama_blocks_f32", block_args)?,
        })
    }
}
