//! `harness synth`: a GGUF file with the exact architecture of a real model and seeded
//! random weights, so the speed of a target model can be measured on any device without
//! downloading it. The file says what it is: `general.name` contains "synthetic", and the
//! harness prints "synthetic weights: speed only" when it loads one.
//!
//! Weights are generated directly as quantized blocks (random nibbles/bytes with scales
//! chosen so dequantized values have a standard deviation near 0.02, as a trained
//! network's linears roughly do); norms are near 1. The tokenizer vocabulary has the
//! right size (byte tokens first, then filler tokens, no merges), so token ids, the
//! embedding table and the output projection are all full-size.

use std::borrow::Cow;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use half::f16;

use antigravity_core::dtype::DType;
use antigravity_core::gguf::{Array, GgufWriter, StrArray, Value};
use antigravity_core::rope::{self, Llama3Scaling};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// llama3.2-1b, llama3.2-3b or smollm2-135m.
    #[arg(long, value_parser = ["llama3.2-1b", "llama3.2-3b", "smollm2-135m"])]
    pub shape: String,
    /// Type of the 2-D weights; the K-quant presets choose per tensor as `harness quantize`
    /// does (llama.cpp's Q4_K_M / Q5_K_M mixes and fallbacks).
    #[arg(long = "type", default_value = "q4_0", value_parser = ["q4_0", "q4_1", "q8_0", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m"])]
    pub qtype: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

/// The architecture of a named model.
pub struct ShapeSpec {
    pub name: &'static str,
    pub n_layer: usize,
    pub dim: usize,
    pub ffn: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub vocab: usize,
    pub theta: f32,
    pub llama3: Option<Llama3Scaling>,
    pub ctx: usize,
}

pub fn shape(name: &str) -> Option<ShapeSpec> {
    let l3 = Llama3Scaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    Some(match name {
        "llama3.2-1b" => ShapeSpec {
            name: "llama3.2-1b",
            n_layer: 16,
            dim: 2048,
            ffn: 8192,
            n_head: 32,
            n_kv_head: 8,
            vocab: 128256,
            theta: 500000.0,
            llama3: Some(l3),
            ctx: 131072,
        },
        "llama3.2-3b" => ShapeSpec {
            name: "llama3.2-3b",
            n_layer: 28,
            dim: 3072,
            ffn: 8192,
            n_head: 24,
            n_kv_head: 8,
            vocab: 128256,
            theta: 500000.0,
            llama3: Some(l3),
            ctx: 131072,
        },
        "smollm2-135m" => ShapeSpec {
            name: "smollm2-135m",
            n_layer: 30,
            dim: 576,
            ffn: 1536,
            n_head: 9,
            n_kv_head: 3,
            vocab: 49152,
            theta: 100000.0,
            llama3: None,
            ctx: 8192,
        },
        _ => return None,
    })
}

/// splitmix64: a small seeded generator; plenty for synthetic weights.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn fill(&mut self, b: &mut [u8]) {
        for c in b.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Random blocks of `dtype` for `n` elements. Uniform nibbles have std ≈ 4.6 steps, so a
/// scale of 0.02/4.6 gives weights of std ≈ 0.02 (5 bits: 9.2 steps; Q6_K's 6 bits: 18.5;
/// the K-quants' random 6-bit sub-block scales average ≈ 32, Q6_K's i8 ones |sc| ≈ 64).
fn random_blocks(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let nb = n / dtype.block_size();
    let mut out = vec![0u8; nb * dtype.block_bytes()];
    rng.fill(&mut out);
    let bb = dtype.block_bytes();
    for blk in out.chunks_exact_mut(bb) {
        let jitter = 0.75 + 0.5 * rng.unit();
        match dtype {
            DType::Q4_0 => blk[0..2].copy_from_slice(&f16::from_f32(0.0043 * jitter).to_le_bytes()),
            DType::Q4_1 => {
                blk[0..2].copy_from_slice(&f16::from_f32(0.0043 * jitter).to_le_bytes());
                blk[2..4].copy_from_slice(&f16::from_f32(-0.032 * jitter).to_le_bytes());
            }
            DType::Q8_0 => blk[0..2].copy_from_slice(&f16::from_f32(0.02 / 73.0 * jitter).to_le_bytes()),
            DType::Q5_0 => blk[0..2].copy_from_slice(&f16::from_f32(0.00217 * jitter).to_le_bytes()),
            DType::Q5_1 => {
                blk[0..2].copy_from_slice(&f16::from_f32(0.00217 * jitter).to_le_bytes());
                blk[2..4].copy_from_slice(&f16::from_f32(-0.0337 * jitter).to_le_bytes());
            }
            DType::Q4_K | DType::Q5_K => {
                let d = if dtype == DType::Q4_K { 0.000136 } else { 0.000068 };
                blk[0..2].copy_from_slice(&f16::from_f32(d * jitter).to_le_bytes());
                blk[2..4].copy_from_slice(&f16::from_f32(0.001 * jitter).to_le_bytes());
            }
            DType::Q6_K => blk[208..210].copy_from_slice(&f16::from_f32(0.0000169 * jitter).to_le_bytes()),
            _ => unreachable!("synth makes no {dtype} blocks"),
        }
    }
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn run(a: &SynthArgs) -> Result<()> {
    let s = shape(&a.shape).context("unknown shape")?;
    let preset = crate::quantize::Preset::parse(&a.qtype).context("bad --type")?;
    let qt = preset.main;
    let mut rng = Rng(a.seed ^ 0x5EED);
    let hd = s.dim / s.n_head;
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::Str("llama".into()))?;
    w.add(
        "general.name",
        Value::Str(format!("synthetic {} {} (random weights: speed only)", s.name, a.qtype)),
    )?;
    w.add("general.file_type", Value::U32(preset.file_type()))?;
    w.add("general.quantization_version", Value::U32(2))?;
    w.add("llama.block_count", Value::U32(s.n_layer as u32))?;
    w.add("llama.context_length", Value::U32(s.ctx as u32))?;
    w.add("llama.embedding_length", Value::U32(s.dim as u32))?;
    w.add("llama.feed_forward_length", Value::U32(s.ffn as u32))?;
    w.add("llama.attention.head_count", Value::U32(s.n_head as u32))?;
    w.add("llama.attention.head_count_kv", Value::U32(s.n_kv_head as u32))?;
    w.add("llama.rope.dimension_count", Value::U32(hd as u32))?;
    w.add("llama.rope.freq_base", Value::F32(s.theta))?;
    w.add("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))?;
    w.add("llama.vocab_size", Value::U32(s.vocab as u32))?;
    // Vocabulary: the 256 byte-level tokens, then fillers; no merges.
    let mut toks = StrArray::with_capacity(s.vocab, s.vocab * 8);
    let mut types = Vec::with_capacity(s.vocab);
    for i in 0..s.vocab {
        if i < 256 {
            toks.push(&byte_token(i as u8));
            types.push(1);
        } else {
            toks.push(&format!("<synth_{i}>"));
            types.push(4);
        }
    }
    w.add("tokenizer.ggml.model", Value::Str("gpt2".into()))?;
    w.add("tokenizer.ggml.tokens", Value::Array(Array::Str(toks)))?;
    w.add("tokenizer.ggml.token_type", Value::Array(Array::I32(types)))?;
    w.add("tokenizer.ggml.merges", Value::Array(Array::Str(StrArray::new())))?;
    w.add("tokenizer.ggml.bos_token_id", Value::U32(256))?;
    w.add("tokenizer.ggml.eos_token_id", Value::U32(257))?;

    let mut tensors: Vec<(String, Vec<usize>, DType, Vec<u8>)> = Vec::new();
    if let Some(l3) = &s.llama3 {
        tensors.push((
            "rope_freqs.weight".into(),
            vec![hd / 2],
            DType::F32,
            f32_bytes(&rope::llama3_divisors(s.theta, hd, l3)),
        ));
    }
    // The 2-D weights in file order; their types: for the K presets llama.cpp's mix
    // (quantize::Mixer), otherwise the requested type, except that SmolLM2's shipped file
    // keeps token_embd at Q8_0, so its stand-in does too (the Llama 3.2 stand-ins use the
    // requested type for every 2-D weight: the race's reference file is 699.6 MB for the
    // 1B shape at Q4_0).
    let (qd, kvd) = (s.n_head * hd, s.n_kv_head * hd);
    let mut mats: Vec<(String, usize, usize)> = vec![("token_embd.weight".into(), s.vocab, s.dim)];
    for i in 0..s.n_layer {
        let g = |x: &str| format!("blk.{i}.{x}.weight");
        mats.extend([
            (g("attn_q"), qd, s.dim),
            (g("attn_k"), kvd, s.dim),
            (g("attn_v"), kvd, s.dim),
            (g("attn_output"), s.dim, qd),
            (g("ffn_gate"), s.ffn, s.dim),
            (g("ffn_up"), s.ffn, s.dim),
            (g("ffn_down"), s.dim, s.ffn),
        ]);
    }
    let kquant = qt.block_size() == antigravity_core::dtype::QK_K;
    let mix = crate::quantize::Mixer::new(preset, false, mats.iter().map(|m| m.0.as_str()), s.n_layer);
    let dtype_of = |name: &str, rows: usize, cols: usize| {
        if kquant {
            mix.next(name, &[cols, rows])
        } else if name == "token_embd.weight" && s.name == "smollm2-135m" {
            DType::Q8_0
        } else {
            qt
        }
    };
    let push_mat = |tensors: &mut Vec<(String, Vec<usize>, DType, Vec<u8>)>, rng: &mut Rng, k: usize| {
        let (name, rows, cols) = &mats[k];
        let dt = dtype_of(name, *rows, *cols);
        tensors.push((
            name.clone(),
            vec![*cols, *rows],
            dt,
            random_blocks(rng, dt, rows * cols),
        ));
    };
    push_mat(&mut tensors, &mut rng, 0);
    let norm = |rng: &mut Rng, n: usize| f32_bytes(&(0..n).map(|_| 0.9 + 0.2 * rng.unit()).collect::<Vec<_>>());
    for i in 0..s.n_layer {
        let g = |x: &str| format!("blk.{i}.{x}.weight");
        tensors.push((g("attn_norm"), vec![s.dim], DType::F32, norm(&mut rng, s.dim)));
        for k in 0..4 {
            push_mat(&mut tensors, &mut rng, 1 + 7 * i + k);
        }
        tensors.push((g("ffn_norm"), vec![s.dim], DType::F32, norm(&mut rng, s.dim)));
        for k in 4..7 {
            push_mat(&mut tensors, &mut rng, 1 + 7 * i + k);
        }
    }
    tensors.push((
        "output_norm.weight".into(),
        vec![s.dim],
        DType::F32,
        norm(&mut rng, s.dim),
    ));
    for (n, dims, dt, data) in &tensors {
        w.add_tensor(n, dims, *dt, Cow::Borrowed(data.as_slice()))?;
    }
    crate::output::write_atomically(&a.out, |tmp| Ok(w.write(tmp)?))?;
    let bytes: usize = tensors.iter().map(|t| t.3.len()).sum();
    eprintln!(
        "wrote {} — synthetic {} {}, {:.1} MB of tensors (random weights: speed only)",
        a.out.display(),
        s.name,
        a.qtype,
        bytes as f64 / 1e6
    );
    Ok(())
}

/// The GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to U+0100+.
fn byte_token(b: u8) -> String {
    let printable = (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    if printable {
        char::from(b).to_string()
    } else {
        let mut n = 0u32;
        for x in 0..b {
            let p = (b'!'..=b'~').contains(&x) || (0xA1..=0xAC).contains(&x) || (0xAE..=0xFF).contains(&x);
            if !p {
                n += 1;
            }
        }
        char::from_u32(256 + n).map(|c| c.to_string()).unwrap_or_default()
    }
}
