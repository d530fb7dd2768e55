//! Loading a Llama model from a GGUF file (as written by llama.cpp's converter or by
//! `harness quantize`).
//!
//! Weights are imported from the memory-mapped file without copies. GGUF stores Q/K rows
//! permuted for adjacent-pair RoPE, so the config says [`RopeStyle::Adjacent`]; a
//! `rope_freqs.weight` tensor (llama3 scaling as per-pair divisors) is applied when
//! present. Every tensor's dtype and ggml dims are checked against the config before
//! use, and errors name the tensor.

use std::string::String;
use std::vec::Vec;

use super::config::LlamaConfig;
use super::weights::{LayerWeights, Weight, Weights};
use crate::backend::{Backend, RopeStyle};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::tensor::Shape;

/// Reads the Llama config from GGUF metadata (`llama.*`).
pub fn config(f: &GgufFile) -> Result<LlamaConfig> {
    let src = f.path().to_string();
    let arch = f.get_str("general.architecture")?.unwrap_or("");
    if arch != "llama" {
        return Err(Error::format(
            &src,
            format!("general.architecture is `{arch}`; only `llama` is supported"),
        ));
    }
    let need = |k: &str| -> Result<usize> {
        f.get_u32(k)?
            .map(|v| v as usize)
            .ok_or_else(|| Error::format(&src, format!("missing metadata `{k}`")))
    };
    let dim = need("llama.embedding_length")?;
    let n_head = need("llama.attention.head_count")?;
    if n_head == 0 {
        return Err(Error::format(&src, "llama.attention.head_count is 0"));
    }
    let n_kv_head = f
        .get_u32("llama.attention.head_count_kv")?
        .map_or(n_head, |v| v as usize);
    let head_dim = match f.get_u32("llama.attention.key_length")? {
        Some(v) => v as usize,
        None => f
            .get_u32("llama.rope.dimension_count")?
            .map_or(dim / n_head, |v| v as usize),
    };
    let embd = f
        .tensor("token_embd.weight")
        .ok_or_else(|| Error::format(&src, "missing").tensor("token_embd.weight"))?;
    let vocab = match f.get_u32("llama.vocab_size")? {
        Some(v) => v as usize,
        None => *embd.dims.get(1).unwrap_or(&0),
    };
    let divisors = match f.tensor("rope_freqs.weight") {
        Some(t) => {
            if t.dtype != DType::F32 {
                return Err(Error::format(&src, "unsupported type")
                    .tensor("rope_freqs.weight")
                    .expected_got("f32", t.dtype.name()));
            }
            let bytes = f.tensor_region(t)?;
            Some(
                bytes
                    .bytes()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<f32>>(),
            )
        }
        None => None,
    };
    let cfg = LlamaConfig {
        n_layer: need("llama.block_count")?,
        dim,
        n_head,
        n_kv_head,
        head_dim,
        ffn_dim: need("llama.feed_forward_length")?,
        vocab,
        norm_eps: f.get_f32("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
        rope_theta: f.get_f32("llama.rope.freq_base")?.unwrap_or(10000.0),
        rope_scaling: None,
        rope_freq_divisors: divisors,
        rope_style: RopeStyle::Adjacent,
        tie_embeddings: f.tensor("output.weight").is_none(),
        max_ctx: f.get_u32("llama.context_length")?.map_or(2048, |v| v as usize),
        bos: f.get_u32("tokenizer.ggml.bos_token_id")?,
        eos: f.get_u32("tokenizer.ggml.eos_token_id")?,
    };
    cfg.validate(&src)?;
    Ok(cfg)
}

/// Imports tensor `name` (expected ggml dims `[cols, rows]`, or `[cols]` for vectors).
fn weight<B: Backend>(
    f: &GgufFile,
    b: &B,
    name: &str,
    rows: usize,
    cols: usize,
    allowed: &[DType],
) -> Result<Weight<B>> {
    let src = f.path();
    let t = f
        .tensor(name)
        .ok_or_else(|| Error::format(src, "missing").tensor(name))?;
    let want: Vec<usize> = if rows == 1 { vec![cols] } else { vec![cols, rows] };
    if t.dims != want {
        return Err(Error::format(src, "wrong ggml dims")
            .tensor(name)
            .expected_got(format!("{want:?}"), format!("{:?}", t.dims)));
    }
    if !allowed.contains(&t.dtype) {
        let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
        return Err(Error::format(src, "unsupported type")
            .tensor(name)
            .expected_got(format!("one of {names:?}"), t.dtype.name()));
    }
    let shape = if rows == 1 {
        Shape::d1(cols)
    } else {
        Shape::d2(rows, cols)
    };
    Ok(Weight {
        buf: b.import_weight(f.tensor_region(t)?, t.dtype, shape)?,
        dtype: t.dtype,
        shape,
    })
}

/// Loads config and weights from an opened GGUF file.
pub fn load<B: Backend>(f: &GgufFile, b: &B) -> Result<(LlamaConfig, Weights<B>)> {
    let cfg = config(f)?;
    // Matrix types the file may hold, less those this backend cannot multiply (so the
    // error names the tensor at load rather than an op at the first token).
    let mats: Vec<DType> = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ]
    .into_iter()
    .filter(|t| b.capabilities().weight_dtypes.contains(t))
    .collect();
    let vecs = [DType::F32];
    let (dim, qd, kvd, ff, nv) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim, cfg.vocab);
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let n = |s: &str| -> String { format!("blk.{i}.{s}.weight") };
        layers.push(LayerWeights {
            attn_norm: weight(f, b, &n("attn_norm"), 1, dim, &vecs)?,
            wq: weight(f, b, &n("attn_q"), qd, dim, &mats)?,
            wk: weight(f, b, &n("attn_k"), kvd, dim, &mats)?,
            wv: weight(f, b, &n("attn_v"), kvd, dim, &mats)?,
            wo: weight(f, b, &n("attn_output"), dim, qd, &mats)?,
            ffn_norm: weight(f, b, &n("ffn_norm"), 1, dim, &vecs)?,
            w_gate: weight(f, b, &n("ffn_gate"), ff, dim, &mats)?,
            w_up: weight(f, b, &n("ffn_up"), ff, dim, &mats)?,
            w_down: weight(f, b, &n("ffn_down"), dim, ff, &mats)?,
        });
    }
    let output = if cfg.tie_embeddings {
        None
    } else {
        Some(weight(f, b, "output.weight", nv, dim, &mats)?)
    };
    let w = Weights {
        tok_embd: weight(f, b, "token_embd.weight", nv, dim, &mats)?,
        layers,
        out_norm: weight(f, b, "output_norm.weight", 1, dim, &vecs)?,
        output,
    };
    b.finish_import();
    Ok((cfg, w))
}
