//! Loading a Hugging Face model directory: `config.json` + `*.safetensors` (one file or
//! shards with `model.safetensors.index.json`), tensors named as in `transformers`'
//! `LlamaForCausalLM`. F32/F16/BF16 weights are converted at load to the requested
//! in-memory dtype (Q4_0 by default) with ggml's reference quantizers.
//!
//! HF Q/K weights use the half-split RoPE convention, so the config says
//! [`RopeStyle::HalfSplit`](crate::backend::RopeStyle) and no rows are permuted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::vec::Vec;

use half::{bf16, f16};
use safetensors::{Dtype as StDtype, SafeTensors};

use super::config::LlamaConfig;
use super::weights::{LayerWeights, Weight, Weights};
use crate::backend::{Backend, HostRegion};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Shape;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::io(path.display().to_string(), source)
}

/// A memory-mapped safetensors file.
struct StFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

/// The tensors of an HF directory, by name.
pub struct HfTensors {
    files: Vec<StFile>,
    /// name → file index
    index: BTreeMap<String, usize>,
}

impl HfTensors {
    /// Maps every safetensors file of `dir`.
    pub fn open(dir: &Path) -> Result<HfTensors> {
        let idx_path = dir.join("model.safetensors.index.json");
        let names: Vec<PathBuf> = if idx_path.exists() {
            let text = std::fs::read_to_string(&idx_path).map_err(io(&idx_path))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::format(idx_path.display().to_string(), format!("invalid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::format(idx_path.display().to_string(), "no `weight_map` object"))?;
            let mut files: Vec<PathBuf> = Vec::new();
            for f in map.values() {
                let f = f.as_str().ok_or_else(|| {
                    Error::format(idx_path.display().to_string(), "weight_map values must be strings")
                })?;
                if f.contains('/') || f.contains("..") {
                    return Err(Error::format(
                        idx_path.display().to_string(),
                        format!("shard name `{f}` leaves the directory"),
                    ));
                }
                let p = dir.join(f);
                if !files.contains(&p) {
                    files.push(p);
                }
            }
            files
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Vec::new();
        let mut index = BTreeMap::new();
        for path in names {
            let file = std::fs::File::open(&path).map_err(io(&path))?;
            // SAFETY: the file is mapped read-only and treated as immutable bytes; a
            // concurrent writer to a model file being loaded is outside our contract.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io(&path))?;
            let st = SafeTensors::deserialize(&map)
                .map_err(|e| Error::format(path.display().to_string(), format!("invalid safetensors: {e}")))?;
            for name in st.names() {
                if index.insert(name.to_string(), files.len()).is_some() {
                    return Err(Error::format(
                        path.display().to_string(),
                        format!("tensor `{name}` appears twice"),
                    ));
                }
            }
            files.push(StFile { path, map });
        }
        Ok(HfTensors { files, index })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Reads tensor `name` as f32 (row-major), checking its shape.
    pub fn read_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let fi = *self
            .index
            .get(name)
            .ok_or_else(|| Error::format(self.files_desc(), "missing").tensor(name))?;
        let f = &self.files[fi];
        let src = f.path.display().to_string();
        let st =
            SafeTensors::deserialize(&f.map).map_err(|e| Error::format(&src, format!("invalid safetensors: {e}")))?;
        let t = st
            .tensor(name)
            .map_err(|e| Error::format(&src, e.to_string()).tensor(name))?;
        if t.shape() != shape {
            return Err(Error::format(&src, "wrong shape")
                .tensor(name)
                .expected_got(format!("{shape:?}"), format!("{:?}", t.shape())));
        }
        let d = t.data();
        Ok(match t.dtype() {
            StDtype::F32 => d
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            StDtype::F16 => d
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StDtype::BF16 => d
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::format(&src, "unsupported dtype")
                    .tensor(name)
                    .expected_got("F32, F16 or BF16", format!("{other:?}")))
            }
        })
    }

    fn files_desc(&self) -> String {
        self.files
            .first()
            .map(|f| f.path.display().to_string())
            .unwrap_or_default()
    }
}

/// Converts f32 data `[rows, cols]` into `dtype` and hands it to the backend.
pub fn make_weight<B: Backend>(
    b: &B,
    data: &[f32],
    rows: usize,
    cols: usize,
    dtype: DType,
    name: &str,
) -> Result<Weight<B>> {
    let shape = if rows == 1 {
        Shape::d1(cols)
    } else {
        Shape::d2(rows, cols)
    };
    let row_bytes = dtype.row_bytes(cols).ok_or_else(|| {
        Error::invalid(format!(
            "tensor `{name}`: row length {cols} is not a multiple of the {dtype} block size {}",
            dtype.block_size()
        ))
    })?;
    let mut bytes = vec![0u8; row_bytes * rows];
    for (src, dst) in data.chunks_exact(cols).zip(bytes.chunks_exact_mut(row_bytes)) {
        crate::quant::quantize_row(dtype, src, dst).map_err(|e| Error::invalid(format!("tensor `{name}`: {e}")))?;
    }
    let buf = b.import_weight(HostRegion::new(Arc::new(bytes)), dtype, shape)?;
    Ok(Weight { buf, dtype, shape })
}

/// Loads `dir` (config + weights), converting 2-D weights to `wtype`.
pub fn load<B: Backend>(dir: &Path, b: &B, wtype: DType) -> Result<(LlamaConfig, Weights<B>)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
    let cfg = LlamaConfig::from_hf_json(&text, &cfg_path.display().to_string())?;
    let t = HfTensors::open(dir)?;
    let (dim, qd, kvd, ff, nv) = (cfg.dim, cfg.q_dim(), cfg.kv_dim(), cfg.ffn_dim, cfg.vocab);
    let mat = |name: &str, rows: usize, cols: usize| -> Result<Weight<B>> {
        make_weight(b, &t.read_f32(name, &[rows, cols])?, rows, cols, wtype, name)
    };
    let norm =
        |name: &str| -> Result<Weight<B>> { make_weight(b, &t.read_f32(name, &[dim])?, 1, dim, DType::F32, name) };
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let p = format!("model.layers.{i}");
        layers.push(LayerWeights {
            attn_norm: norm(&format!("{p}.input_layernorm.weight"))?,
            wq: mat(&format!("{p}.self_attn.q_proj.weight"), qd, dim)?,
            wk: mat(&format!("{p}.self_attn.k_proj.weight"), kvd, dim)?,
            wv: mat(&format!("{p}.self_attn.v_proj.weight"), kvd, dim)?,
            wo: mat(&format!("{p}.self_attn.o_proj.weight"), dim, qd)?,
            ffn_norm: norm(&format!("{p}.post_attention_layernorm.weight"))?,
            w_gate: mat(&format!("{p}.mlp.gate_proj.weight"), ff, dim)?,
            w_up: mat(&format!("{p}.mlp.up_proj.weight"), ff, dim)?,
            w_down: mat(&format!("{p}.mlp.down_proj.weight"), dim, ff)?,
        });
    }
    let output = if !cfg.tie_embeddings && t.contains("lm_head.weight") {
        Some(mat("lm_head.weight", nv, dim)?)
    } else if !cfg.tie_embeddings {
        return Err(Error::format(
            dir.display().to_string(),
            "tie_word_embeddings is false but `lm_head.weight` is missing",
        ));
    } else {
        None
    };
    let weights = Weights {
        tok_embd: mat("model.embed_tokens.weight", nv, dim)?,
        layers,
        out_norm: norm("model.norm.weight")?,
        output,
    };
    Ok((cfg, weights))
}
