//! `harness quantize`: GGUF or HF directory in, quantized GGUF out.
//!
//! What llama.cpp's tools do, so that llama.cpp runs our output:
//! * 2-D linear weights go to `--type`; `token_embd.weight` (and an untied
//!   `output.weight`) stay at Q8_0 when the type is 4-bit, unless `--pure`;
//!   norms and `rope_freqs.weight` stay F32;
//! * from an HF directory, Q/K rows are permuted into adjacent-pair RoPE order and the
//!   llama3 scaling is written as `rope_freqs.weight` (per-pair divisors), as
//!   `convert_hf_to_gguf.py` does; config and tokenizer become `llama.*` /
//!   `tokenizer.ggml.*` metadata;
//! * blocks are produced by ggml's reference quantizers (bit-exact; see `quant`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use antigravity_core::dtype::DType;
use antigravity_core::gguf::{Array, GgufFile, GgufWriter, StrArray, Value};
use antigravity_core::model::hf::HfTensors;
use antigravity_core::model::weights::permute_qk_rows;
use antigravity_core::model::LlamaConfig;
use antigravity_core::quant;
use antigravity_core::rope;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// A GGUF file or an HF directory.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Target type of the linear weights.
    #[arg(long = "type", value_parser = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16"])]
    pub qtype: String,
    /// Quantize token_embd/output to the target type too (default keeps them Q8_0 for 4-bit types).
    #[arg(long)]
    pub pure: bool,
    /// Quantize tensors that are already quantized (Q4_0/Q4_1/Q8_0) to another block type.
    /// The rounding errors of both formats add up, so the result is worse than quantizing
    /// the original weights; refused without this flag (as llama.cpp's llama-quantize does).
    #[arg(long)]
    pub allow_requantize: bool,
}

/// llama.cpp's `llama_ftype` for the file's main type.
fn file_type(t: DType) -> u32 {
    match t {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        _ => 0,
    }
}

/// Converts `rows × cols` f32 values into `dtype` bytes.
pub fn encode(data: &[f32], cols: usize, dtype: DType) -> Result<Vec<u8>> {
    let rb = dtype
        .row_bytes(cols)
        .with_context(|| format!("row length {cols} is not a multiple of the {dtype} block"))?;
    let mut out = vec![0u8; rb * (data.len() / cols)];
    for (s, d) in data.chunks_exact(cols).zip(out.chunks_exact_mut(rb)) {
        quant::quantize_row(dtype, s, d).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(out)
}

fn decode(bytes: &[u8], dtype: DType, cols: usize) -> Result<Vec<f32>> {
    let rb = dtype.row_bytes(cols).context("bad row")?;
    let mut out = vec![0f32; bytes.len() / rb * cols];
    for (s, d) in bytes.chunks_exact(rb).zip(out.chunks_exact_mut(cols)) {
        quant::dequantize_row(dtype, s, d).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(out)
}

/// The dtype a tensor gets.
fn target_for(name: &str, n_dims: usize, main: DType, pure: bool) -> DType {
    if n_dims < 2 || name == "rope_freqs.weight" {
        return DType::F32;
    }
    let embd = name == "token_embd.weight" || name == "output.weight";
    if embd && !pure && matches!(main, DType::Q4_0 | DType::Q4_1) {
        DType::Q8_0
    } else {
        main
    }
}

pub fn run(a: &QuantizeArgs) -> Result<()> {
    let main = DType::parse(&a.qtype).context("bad --type")?;
    if !a.model.exists() {
        bail!("--model {} does not exist", a.model.display());
    }
    crate::output::check_not_input(&a.out, &a.model)?;
    if a.model.is_dir() {
        let (c, t) = open_hf(&a.model)?;
        crate::output::write_atomically(&a.out, |tmp| from_hf(&a.model, &c, &t, tmp, main, a.pure))?;
    } else {
        let f = GgufFile::open(&a.model)?;
        if !a.allow_requantize {
            check_requantize(&f, &a.model, main, a.pure)?;
        }
        crate::output::write_atomically(&a.out, |tmp| from_gguf(&f, tmp, main, a.pure))?;
    }
    eprintln!("wrote {} ({main})", a.out.display());
    Ok(())
}

/// Refuses to quantize a tensor that is already in a block format into another block
/// format: the second rounding adds its error to the first (measured on SmolLM2 Q4_1 →
/// Q4_0: the greedy answer to "The capital of France is" changes from " Paris." to
/// a wrong one). Re-encoding to F16/F32, or keeping a tensor's type, loses nothing more.
fn check_requantize(f: &GgufFile, inp: &Path, main: DType, pure: bool) -> Result<()> {
    let again: Vec<String> = f
        .tensors()
        .iter()
        .filter_map(|t| {
            let to = target_for(&t.name, t.dims.len(), main, pure);
            (t.dtype.is_quantized() && to.is_quantized() && to != t.dtype)
                .then(|| format!("{} ({} → {to})", t.name, t.dtype))
        })
        .collect();
    if let Some(first) = again.first() {
        bail!(
            "{}: {} tensor(s) are already quantized, e.g. {first}. Quantizing them again adds a second \
             rounding error to the first and degrades the model noticeably (worse than quantizing the \
             original weights). Quantize from the original F16/F32 weights (an HF directory or an F16/F32 \
             GGUF), or pass --allow-requantize to do it anyway.",
            inp.display(),
            again.len()
        );
    }
    Ok(())
}

fn from_gguf(f: &GgufFile, out: &Path, main: DType, pure: bool) -> Result<()> {
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if k == "general.file_type" || k == "general.quantization_version" || k == "general.alignment" {
            continue;
        }
        w.add(k, v.clone())?;
    }
    w.add("general.file_type", Value::U32(file_type(main)))?;
    w.add("general.quantization_version", Value::U32(2))?;
    for t in f.tensors() {
        let src = f.tensor_bytes(t)?;
        let to = target_for(&t.name, t.dims.len(), main, pure);
        let data: Cow<[u8]> = if t.dtype == to {
            Cow::Borrowed(src)
        } else {
            let cols = t.dims[0];
            Cow::Owned(encode(&decode(src, t.dtype, cols)?, cols, to).with_context(|| format!("tensor {}", t.name))?)
        };
        w.add_tensor(&t.name, &t.dims, to, data)?;
    }
    w.write(out)?;
    Ok(())
}

/// The config and tensors of an HF directory.
fn open_hf(dir: &Path) -> Result<(LlamaConfig, HfTensors)> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?;
    let c = LlamaConfig::from_hf_json(&text, &cfg_path.display().to_string())?;
    Ok((c, HfTensors::open(dir)?))
}

fn from_hf(dir: &Path, c: &LlamaConfig, t: &HfTensors, out: &Path, main: DType, pure: bool) -> Result<()> {
    let mut w = GgufWriter::new();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    w.add("general.architecture", Value::Str("llama".into()))?;
    w.add("general.name", Value::Str(name))?;
    w.add("llama.block_count", Value::U32(c.n_layer as u32))?;
    w.add("llama.context_length", Value::U32(c.max_ctx as u32))?;
    w.add("llama.embedding_length", Value::U32(c.dim as u32))?;
    w.add("llama.feed_forward_length", Value::U32(c.ffn_dim as u32))?;
    w.add("llama.attention.head_count", Value::U32(c.n_head as u32))?;
    w.add("llama.attention.head_count_kv", Value::U32(c.n_kv_head as u32))?;
    w.add("llama.attention.key_length", Value::U32(c.head_dim as u32))?;
    w.add("llama.attention.value_length", Value::U32(c.head_dim as u32))?;
    w.add("llama.rope.dimension_count", Value::U32(c.head_dim as u32))?;
    w.add("llama.rope.freq_base", Value::F32(c.rope_theta))?;
    w.add("llama.attention.layer_norm_rms_epsilon", Value::F32(c.norm_eps))?;
    w.add("llama.vocab_size", Value::U32(c.vocab as u32))?;
    w.add("general.file_type", Value::U32(file_type(main)))?;
    w.add("general.quantization_version", Value::U32(2))?;
    add_tokenizer(&mut w, dir, c)?;

    let mut tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)> = Vec::new();
    let mut put = |gname: &str, data: Vec<f32>, rows: usize, cols: usize| -> Result<()> {
        let dims = if rows == 1 { vec![cols] } else { vec![cols, rows] };
        let to = target_for(gname, dims.len(), main, pure);
        tensors.push((
            gname.to_string(),
            dims,
            to,
            encode(&data, cols, to).with_context(|| gname.to_string())?,
        ));
        Ok(())
    };
    let (dim, qd, kvd, ff) = (c.dim, c.q_dim(), c.kv_dim(), c.ffn_dim);
    if let Some(s) = &c.rope_scaling {
        put(
            "rope_freqs.weight",
            rope::llama3_divisors(c.rope_theta, c.head_dim, s),
            1,
            c.head_dim / 2,
        )?;
    }
    put(
        "token_embd.weight",
        t.read_f32("model.embed_tokens.weight", &[c.vocab, dim])?,
        c.vocab,
        dim,
    )?;
    for i in 0..c.n_layer {
        let p = format!("model.layers.{i}");
        let g = |s: &str| format!("blk.{i}.{s}.weight");
        put(
            &g("attn_norm"),
            t.read_f32(&format!("{p}.input_layernorm.weight"), &[dim])?,
            1,
            dim,
        )?;
        let q = t.read_f32(&format!("{p}.self_attn.q_proj.weight"), &[qd, dim])?;
        put(&g("attn_q"), permute_qk_rows(&q, c.n_head, dim, false), qd, dim)?;
        let k = t.read_f32(&format!("{p}.self_attn.k_proj.weight"), &[kvd, dim])?;
        put(&g("attn_k"), permute_qk_rows(&k, c.n_kv_head, dim, false), kvd, dim)?;
        put(
            &g("attn_v"),
            t.read_f32(&format!("{p}.self_attn.v_proj.weight"), &[kvd, dim])?,
            kvd,
            dim,
        )?;
        put(
            &g("attn_output"),
            t.read_f32(&format!("{p}.self_attn.o_proj.weight"), &[dim, qd])?,
            dim,
            qd,
        )?;
        put(
            &g("ffn_norm"),
            t.read_f32(&format!("{p}.post_attention_layernorm.weight"), &[dim])?,
            1,
            dim,
        )?;
        put(
            &g("ffn_gate"),
            t.read_f32(&format!("{p}.mlp.gate_proj.weight"), &[ff, dim])?,
            ff,
            dim,
        )?;
        put(
            &g("ffn_up"),
            t.read_f32(&format!("{p}.mlp.up_proj.weight"), &[ff, dim])?,
            ff,
            dim,
        )?;
        put(
            &g("ffn_down"),
            t.read_f32(&format!("{p}.mlp.down_proj.weight"), &[dim, ff])?,
            dim,
            ff,
        )?;
    }
    put("output_norm.weight", t.read_f32("model.norm.weight", &[dim])?, 1, dim)?;
    if !c.tie_embeddings {
        put(
            "output.weight",
            t.read_f32("lm_head.weight", &[c.vocab, dim])?,
            c.vocab,
            dim,
        )?;
    }
    for (n, dims, dt, data) in &tensors {
        w.add_tensor(n, dims, *dt, Cow::Borrowed(data.as_slice()))?;
    }
    w.write(out)?;
    eprintln!("{} tensors; Q/K rows permuted for adjacent-pair RoPE", tensors.len());
    Ok(())
}

/// Carries an HF `tokenizer.json` (byte-level BPE) over as `tokenizer.ggml.*` metadata.
fn add_tokenizer(w: &mut GgufWriter<'_>, dir: &Path, c: &LlamaConfig) -> Result<()> {
    let p = dir.join("tokenizer.json");
    let Ok(text) = std::fs::read_to_string(&p) else {
        // llama.cpp refuses a file without `tokenizer.ggml.model`; "no_vocab" is its
        // marker for a model that runs on token ids alone.
        eprintln!(
            "note: {} not found; the GGUF gets no vocabulary (tokenizer.ggml.model = no_vocab)",
            p.display()
        );
        w.add("tokenizer.ggml.model", Value::Str("no_vocab".into()))?;
        return Ok(());
    };
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    let model = &v["model"];
    if model["type"].as_str() != Some("BPE") {
        bail!("{}: only BPE tokenizers can be carried into GGUF", p.display());
    }
    let vocab = model["vocab"]
        .as_object()
        .context("tokenizer.json: model.vocab missing")?;
    let mut n = vocab
        .values()
        .filter_map(|x| x.as_u64())
        .max()
        .map_or(0, |m| m as usize + 1);
    let added = v["added_tokens"].as_array().cloned().unwrap_or_default();
    for a in &added {
        if let Some(id) = a["id"].as_u64() {
            n = n.max(id as usize + 1);
        }
    }
    let mut toks = vec![String::new(); n];
    let mut types = vec![1i32; n];
    for (s, id) in vocab {
        if let Some(id) = id.as_u64() {
            toks[id as usize] = s.clone();
        }
    }
    for a in &added {
        if let (Some(id), Some(s)) = (a["id"].as_u64(), a["content"].as_str()) {
            toks[id as usize] = s.to_string();
            types[id as usize] = if a["special"].as_bool().unwrap_or(false) { 3 } else { 4 };
        }
    }
    for (i, t) in toks.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[PAD{i}]");
            types[i] = 5; // unused
        }
    }
    let merges: Vec<String> = model["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| match x {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(a) => Some(format!("{} {}", a.first()?.as_str()?, a.get(1)?.as_str()?)),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let strs = |v: &[String]| {
        let mut a = StrArray::new();
        for s in v {
            a.push(s);
        }
        Value::Array(Array::Str(a))
    };
    w.add("tokenizer.ggml.model", Value::Str("gpt2".into()))?;
    // llama.cpp names pre-tokenizers instead of storing them; recognise the two we know.
    let pre = v["pre_tokenizer"].to_string();
    let pre_name = if pre.contains("\"individual_digits\":true") {
        Some("smollm")
    } else if pre.contains("\\p{N}{1,3}") {
        Some("llama-bpe")
    } else {
        None
    };
    if let Some(p) = pre_name {
        w.add("tokenizer.ggml.pre", Value::Str(p.into()))?;
    }
    w.add("tokenizer.ggml.tokens", strs(&toks))?;
    w.add("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))?;
    w.add("tokenizer.ggml.merges", strs(&merges))?;
    if let Some(b) = c.bos {
        w.add("tokenizer.ggml.bos_token_id", Value::U32(b))?;
    }
    if let Some(e) = c.eos {
        w.add("tokenizer.ggml.eos_token_id", Value::U32(e))?;
    }
    // Chat template and BOS policy live in tokenizer_config.json.
    if let Ok(t) = std::fs::read_to_string(dir.join("tokenizer_config.json")) {
        let tc: serde_json::Value =
            serde_json::from_str(&t).with_context(|| format!("parsing {}/tokenizer_config.json", dir.display()))?;
        if let Some(tmpl) = tc["chat_template"].as_str() {
            w.add("tokenizer.chat_template", Value::Str(tmpl.to_string()))?;
        }
        if let Some(b) = tc["add_bos_token"].as_bool() {
            w.add("tokenizer.ggml.add_bos_token", Value::Bool(b))?;
        }
    }
    Ok(())
}
