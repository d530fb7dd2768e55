//! `harness quantize`: GGUF or HF directory in, quantized GGUF out.
//!
//! What llama.cpp's tools do, so that llama.cpp runs our output:
//! * 2-D linear weights go to `--type`; for the 32-element types `token_embd.weight` (and
//!   an untied `output.weight`) stay at Q8_0 when the type is 4-bit, unless `--pure`;
//!   norms and `rope_freqs.weight` stay F32;
//! * the K-quant types follow `llama-quantize`'s tensor-type choice ([`Mixer`]): `q4_k_m`
//!   / `q5_k_m` are its Q4_K_M / Q5_K_M mixes, `q4_k` / `q5_k` what `llama-quantize --pure`
//!   writes for those, `q6_k` its Q6_K; rows not divisible by 256 fall back to
//!   Q5_0 / Q5_1 / Q8_0 as llama.cpp's do;
//! * from an HF directory, Q/K rows are permuted into adjacent-pair RoPE order and the
//!   llama3 scaling is written as `rope_freqs.weight` (per-pair divisors), as
//!   `convert_hf_to_gguf.py` does; config and tokenizer become `llama.*` /
//!   `tokenizer.ggml.*` metadata;
//! * blocks are produced by ggml's reference quantizers (bit-exact; see `quant`).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use antigravity_core::dtype::{DType, QK_K};
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
    /// Target type of the linear weights; `q4_k_m` / `q5_k_m` are llama.cpp's mixes.
    #[arg(long = "type", value_parser = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "f16", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m"])]
    pub qtype: String,
    /// Quantize token_embd/output to the target type too (default keeps them Q8_0 for
    /// 4-bit 32-element types); for `q4_k_m`/`q5_k_m` no mix (as `llama-quantize --pure`).
    #[arg(long)]
    pub pure: bool,
    /// Quantize tensors that are already quantized (Q4_0/Q4_1/Q8_0) to another block type.
    /// The rounding errors of both formats add up, so the result is worse than quantizing
    /// the original weights; refused without this flag (as llama.cpp's llama-quantize does).
    #[arg(long)]
    pub allow_requantize: bool,
}

/// What `--type` asks for: the main block type, and whether llama.cpp's `_M` mix applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    pub main: DType,
    /// The Q4_K_M / Q5_K_M per-tensor mix (attn_v / ffn_down bumps, Q6_K output).
    pub medium: bool,
}

impl Preset {
    pub fn parse(s: &str) -> Option<Preset> {
        let (t, medium) = match s.strip_suffix("_m") {
            Some(t) => (t, true),
            None => (s, false),
        };
        let main = DType::parse(t)?;
        if medium && !matches!(main, DType::Q4_K | DType::Q5_K) {
            return None;
        }
        Some(Preset { main, medium })
    }

    /// llama.cpp's `llama_ftype` (`general.file_type`). `q4_k`/`q5_k` are what
    /// `llama-quantize --pure … Q4_K_M/Q5_K_M` writes, so they carry those file types.
    pub fn file_type(self) -> u32 {
        match self.main {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q8_0 => 7,
            DType::Q5_0 => 8,
            DType::Q5_1 => 9,
            DType::Q4_K => 15,
            DType::Q5_K => 17,
            DType::Q6_K => 18,
            _ => 0,
        }
    }

    fn name(self) -> String {
        format!("{}{}", self.main, if self.medium { "_m" } else { "" })
    }
}

/// `llama-quantize`'s `use_more_bits`: the first and last eighth of the layers and every
/// third one in between get the bigger type in the `_M` mixes.
fn use_more_bits(i: usize, n: usize) -> bool {
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// Chooses each tensor's type, in file order, as `llama-quantize` does for a llama model
/// without an importance matrix (`llama_tensor_get_type` in llama.cpp's
/// `src/llama-quant.cpp`), or with the project's own rule for the 32-element types.
///
/// For the K-quant presets:
/// * the output matrix (or, with tied embeddings, `token_embd`) becomes Q6_K, or Q8_0
///   when its rows are not a multiple of 256 — in every K preset but `--pure` q4_k/q5_k;
/// * `_M` only: `attn_v` number `i` of `n` and `ffn_down` number `i` become Q6_K where
///   [`use_more_bits`]`(i, n_layer)` holds, `i` counting in llama.cpp's tensor order
///   ([`llama_order`]: block number first, so `blk.10` comes after `blk.9` whatever the
///   file order);
/// * then the fallback for rows that are not a multiple of 256: Q4_K → Q5_0,
///   Q5_K → Q5_1, Q6_K → Q8_0 (and F16 if even 32 does not divide them).
pub struct Mixer {
    preset: Preset,
    pure: bool,
    tied: bool,
    n_attn_v: usize,
    n_layer: usize,
    /// Rank of each `attn_v` / `ffn_down` tensor in llama.cpp's processing order.
    rank: std::collections::HashMap<String, usize>,
}

/// llama.cpp's tensor order (`weight_name_comparer`): by block number (−1 outside the
/// blocks), then by name. Its per-kind counters advance in this order, not file order.
fn llama_order(a: &str, b: &str) -> std::cmp::Ordering {
    let layer = |s: &str| -> i64 {
        s.strip_prefix("blk.")
            .and_then(|r| r.split('.').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(-1)
    };
    layer(a).cmp(&layer(b)).then_with(|| a.cmp(b))
}

fn is_attn_v(name: &str) -> bool {
    name.contains("attn_v.weight") || name.contains("attn_qkv.weight")
}

impl Mixer {
    /// `names`: every tensor of the output (to rank `attn_v` / `ffn_down` and see whether
    /// an `output.weight` exists); `n_layer`: the model's block count.
    pub fn new<'a>(preset: Preset, pure: bool, names: impl IntoIterator<Item = &'a str>, n_layer: usize) -> Mixer {
        let mut names: Vec<&str> = names.into_iter().collect();
        names.sort_by(|a, b| llama_order(a, b));
        let tied = !names.contains(&"output.weight");
        let mut rank = std::collections::HashMap::new();
        let (mut n_attn_v, mut n_down) = (0, 0);
        for n in names {
            if is_attn_v(n) {
                rank.insert(n.to_string(), n_attn_v);
                n_attn_v += 1;
            } else if n.contains("ffn_down") {
                rank.insert(n.to_string(), n_down);
                n_down += 1;
            }
        }
        Mixer {
            preset,
            pure,
            tied,
            n_attn_v,
            n_layer,
            rank,
        }
    }

    /// The type of tensor `name` (`dims[0]` is the row length).
    pub fn next(&self, name: &str, dims: &[usize]) -> DType {
        let main = self.preset.main;
        if dims.len() < 2 || name == "rope_freqs.weight" || name.contains("_norm.weight") || !name.ends_with("weight") {
            return DType::F32;
        }
        let embd = name == "token_embd.weight" || name == "output.weight";
        if main.block_size() != QK_K {
            return if embd && !self.pure && matches!(main, DType::Q4_0 | DType::Q4_1) {
                DType::Q8_0
            } else {
                main
            };
        }
        let cols = dims[0];
        let mut t = main;
        // llama-quantize --pure skips the whole choice, keeping only the fallback; so do
        // q4_k / q5_k (the pure forms of Q4_K_M / Q5_K_M). Q6_K's own choice only touches
        // the output tensor, where it picks what the fallback would.
        let mix = self.preset.medium && !self.pure;
        if mix {
            if name == "output.weight" || (self.tied && name == "token_embd.weight") {
                t = if cols.is_multiple_of(QK_K) {
                    DType::Q6_K
                } else {
                    DType::Q8_0
                };
            } else if is_attn_v(name) {
                if use_more_bits(self.rank[name], self.n_attn_v) {
                    t = DType::Q6_K;
                }
            } else if name.contains("ffn_down") && use_more_bits(self.rank[name], self.n_layer) {
                t = DType::Q6_K;
            }
        }
        if !cols.is_multiple_of(t.block_size()) {
            t = match t {
                DType::Q4_K => DType::Q5_0,
                DType::Q5_K => DType::Q5_1,
                DType::Q6_K => DType::Q8_0,
                other => other,
            };
            if !cols.is_multiple_of(t.block_size()) {
                t = DType::F16;
            }
        }
        t
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

/// A [`Mixer`] over a GGUF file's tensors.
fn gguf_mixer(f: &GgufFile, preset: Preset, pure: bool) -> Mixer {
    let n_layer = match f.metadata().iter().find(|(k, _)| k.as_str() == "llama.block_count") {
        Some((_, Value::U32(n))) => *n as usize,
        _ => f.tensors().iter().filter(|t| t.name.contains("ffn_down")).count(),
    };
    Mixer::new(preset, pure, f.tensors().iter().map(|t| t.name.as_str()), n_layer)
}

pub fn run(a: &QuantizeArgs) -> Result<()> {
    let main = Preset::parse(&a.qtype).context("bad --type")?;
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
    eprintln!("wrote {} ({})", a.out.display(), main.name());
    Ok(())
}

/// Refuses to quantize a tensor that is already in a block format into another block
/// format: the second rounding adds its error to the first (measured on SmolLM2 Q4_1 →
/// Q4_0: the greedy answer to "The capital of France is" changes from " Paris." to
/// a wrong one). Re-encoding to F16/F32, or keeping a tensor's type, loses nothing more.
fn check_requantize(f: &GgufFile, inp: &Path, main: Preset, pure: bool) -> Result<()> {
    let mix = gguf_mixer(f, main, pure);
    let again: Vec<String> = f
        .tensors()
        .iter()
        .filter_map(|t| {
            let to = mix.next(&t.name, &t.dims);
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

fn from_gguf(f: &GgufFile, out: &Path, main: Preset, pure: bool) -> Result<()> {
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        if k == "general.file_type" || k == "general.quantization_version" || k == "general.alignment" {
            continue;
        }
        w.add(k, v.clone())?;
    }
    w.add("general.file_type", Value::U32(main.file_type()))?;
    w.add("general.quantization_version", Value::U32(2))?;
    let mix = gguf_mixer(f, main, pure);
    for t in f.tensors() {
        let src = f.tensor_bytes(t)?;
        let to = mix.next(&t.name, &t.dims);
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

fn from_hf(dir: &Path, c: &LlamaConfig, t: &HfTensors, out: &Path, main: Preset, pure: bool) -> Result<()> {
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
    w.add("general.file_type", Value::U32(main.file_type()))?;
    w.add("general.quantization_version", Value::U32(2))?;
    add_tokenizer(&mut w, dir, c)?;

    // The tensors this writes, in order (for the mixer's counts).
    let mut names = vec!["token_embd.weight".to_string()];
    for i in 0..c.n_layer {
        names.extend(
            [
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ]
            .iter()
            .map(|s| format!("blk.{i}.{s}.weight")),
        );
    }
    if !c.tie_embeddings {
        names.push("output.weight".into());
    }
    let mix = Mixer::new(main, pure, names.iter().map(String::as_str), c.n_layer);

    let mut tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)> = Vec::new();
    let mut put = |gname: &str, data: Vec<f32>, rows: usize, cols: usize| -> Result<()> {
        let dims = if rows == 1 { vec![cols] } else { vec![cols, rows] };
        let to = mix.next(gname, &dims);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor types [`Mixer`] picks equal `llama-quantize`'s on three model shapes and
    /// every K preset (`oracle/quant/kquant_mix.json`, made by `make_kquant_mix.py`). The
    /// tensor list is given in a scrambled order, to check that the result does not depend on
    /// file order.
    #[test]
    fn mixer_matches_llama_quantize() {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../oracle/quant/kquant_mix.json");
        let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let mut checked = 0;
        for (shape, v) in doc["shapes"].as_object().unwrap() {
            let n_layer = v["n_layer"].as_u64().unwrap() as usize;
            let mut tensors: Vec<(String, Vec<usize>)> = v["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let dims = t[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize);
                    (t[0].as_str().unwrap().to_string(), dims.collect())
                })
                .collect();
            tensors.sort_by(|a, b| a.0.cmp(&b.0)); // blk.1, blk.10, … as in many files
            for (preset, types) in v["types"].as_object().unwrap() {
                let mix = Mixer::new(
                    Preset::parse(preset).unwrap(),
                    false,
                    tensors.iter().map(|t| t.0.as_str()),
                    n_layer,
                );
                for (name, dims) in &tensors {
                    let want = types[name.as_str()].as_str().unwrap();
                    let got = mix.next(name, dims);
                    assert!(
                        got.name().eq_ignore_ascii_case(want),
                        "{shape} {preset} {name}: ours {got}, llama-quantize {want}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000, "only {checked} tensors checked");
    }

    #[test]
    fn presets_parse() {
        let p = Preset::parse("q4_k_m").unwrap();
        assert_eq!((p.main, p.medium, p.file_type()), (DType::Q4_K, true, 15));
        assert_eq!(Preset::parse("q6_k").unwrap().file_type(), 18);
        assert!(Preset::parse("q4_0_m").is_none());
        assert!(Preset::parse("q6_k_m").is_none());
    }
}
