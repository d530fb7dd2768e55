//! The oracle: compares our activations and logits with reference tensors produced by an
//! independent implementation (Hugging Face `transformers`, fp32), as listed in
//! `oracle/manifest.json`. Used by `harness oracle` and by the test suite, so CI fails
//! when a change moves an activation or a logit past its tolerance.
//!
//! Every compared manifest entry carries its metric, its tolerance, the value measured
//! when the tolerance was set and the reason for it. Metrics:
//! * `nmse` — Σ(ours − ref)² / Σ ref², for hidden states (embed, block.i, final_norm);
//! * `max_rel` — max |ours − ref| / max |ref|, for logits of f32 models and RoPE tables;
//! * `top1_agree` (a floor) and `kl_mean` (a ceiling, nats) for logits; with stored
//!   top-64 log-probs the KL is over the 64 reference tokens plus one "rest" bucket;
//! * `greedy_exact_where_margin` — our greedy ids equal the reference's at every step
//!   before the first one whose top-1/top-2 log-prob margin is below the tolerance.
//!
//! A breach names the case, the tensor and, for hidden states, the first layer that
//! diverges.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use serde_json::Value;

use crate::backend::{Backend, BufferKind, RopeStyle};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{self, Llama, LlamaConfig, RunOptions, Weights};

/// One comparison.
#[derive(Clone, Debug)]
pub struct Row {
    pub case: String,
    pub tensor: String,
    pub metric: String,
    pub value: f64,
    /// `None` when the manifest has no tolerance yet (measurement only).
    pub limit: Option<f64>,
    /// true: value must be ≤ limit; false: value must be ≥ limit (e.g. top-1 agreement).
    pub upper: bool,
    pub layer: Option<usize>,
}

impl Row {
    pub fn pass(&self) -> bool {
        match self.limit {
            None => true,
            Some(l) if self.upper => self.value <= l,
            Some(l) => self.value >= l,
        }
    }
}

/// Deliberate damage, to prove the gate bites.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// Overwrite row 0 of layer `k`'s Q projection with large values.
    WeightRow { layer: usize },
    /// Use the other RoPE convention than the weights need.
    SwapRope,
}

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Only cases whose name contains this.
    pub filter: Option<String>,
    pub corrupt: Option<Corruption>,
    /// Where the SmolLM2 GGUF is (None: skip SmolLM2 cases with a note).
    pub smollm2: Option<PathBuf>,
}

/// The outcome: rows, plus notes on what was skipped and why.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub skipped: Vec<String>,
}

impl Report {
    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.pass())
    }
    /// The first hidden-state layer that breaches, per case (in layer order).
    pub fn first_bad_layer(&self, case: &str) -> Option<usize> {
        self.rows
            .iter()
            .filter(|r| r.case == case && !r.pass())
            .filter_map(|r| r.layer)
            .min()
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::format("oracle/manifest.json", msg)
}

struct Entry {
    case: String,
    file: PathBuf,
    tensor: String,
    metric: Vec<String>,
    tolerance: Value,
    layer: Option<usize>,
    margin_tensor: Option<String>,
    raw: Value,
}

fn entries(root: &Path) -> Result<Vec<Entry>> {
    let p = root.join("oracle/manifest.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(p.display().to_string(), e))?;
    let m: Value = serde_json::from_str(&text).map_err(|e| err(format!("invalid JSON: {e}")))?;
    let mut out = Vec::new();
    for e in m["entries"].as_array().ok_or_else(|| err("no `entries` array"))? {
        let metric: Vec<String> = match &e["metric"] {
            Value::Null => continue,
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
            _ => return Err(err("bad `metric`")),
        };
        out.push(Entry {
            case: e["case"].as_str().unwrap_or_default().to_string(),
            file: root.join(e["file"].as_str().unwrap_or_default()),
            tensor: e["tensor"].as_str().unwrap_or_default().to_string(),
            metric,
            tolerance: e["tolerance"].clone(),
            layer: e["layer"].as_u64().map(|l| l as usize),
            margin_tensor: e["margin_tensor"].as_str().map(String::from),
            raw: e.clone(),
        });
    }
    Ok(out)
}

/// Reference tensors of one file.
struct Refs {
    bytes: Vec<u8>,
    path: String,
}

impl Refs {
    fn open(p: &Path) -> Result<Refs> {
        let bytes = std::fs::read(p).map_err(|e| Error::io(p.display().to_string(), e))?;
        Ok(Refs {
            bytes,
            path: p.display().to_string(),
        })
    }
    fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| Error::format(&self.path, e.to_string()))?;
        let t = st
            .tensor(name)
            .map_err(|e| Error::format(&self.path, format!("{name}: {e}")))?;
        Ok(match t.dtype() {
            safetensors::Dtype::F32 => t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            safetensors::Dtype::I64 => t
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
                .collect(),
            d => return Err(Error::format(&self.path, format!("{name}: unexpected dtype {d:?}"))),
        })
    }
    /// A comparison with tensor `name` of this file that could not be made.
    fn mismatch(&self, name: &str, e: Error) -> Error {
        let mut out = Error::format(&self.path, e.message()).tensor(name);
        if let (Some(x), Some(g)) = (e.expected(), e.got()) {
            out = out.expected_got(x, g);
        }
        out
    }
    fn ids(&self, name: &str) -> Result<Vec<u32>> {
        let st = SafeTensors::deserialize(&self.bytes).map_err(|e| Error::format(&self.path, e.to_string()))?;
        let t = st
            .tensor(name)
            .map_err(|e| Error::format(&self.path, format!("{name}: {e}")))?;
        Ok(t.data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as u32)
            .collect())
    }
}

/// Fails unless `ours` and the reference have the same number of values (a truncated
/// or padded reference must not pass by comparing only a prefix).
fn same_len(what: &str, ours: &[f32], refv: &[f32]) -> Result<()> {
    if ours.len() != refv.len() {
        return Err(
            Error::invalid(format!("{what}: the reference and the model differ in length")).expected_got(
                format!("{} values (the model's)", ours.len()),
                format!("{} values", refv.len()),
            ),
        );
    }
    Ok(())
}

/// Σ(a−b)²/Σb²; fails when the lengths differ.
pub fn nmse(ours: &[f32], refv: &[f32]) -> Result<f64> {
    same_len("nmse", ours, refv)?;
    let num: f64 = ours
        .iter()
        .zip(refv)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let den: f64 = refv.iter().map(|b| (*b as f64).powi(2)).sum();
    Ok(if den == 0.0 { num } else { num / den })
}

/// max|a−b| / max|b|; fails when the lengths differ.
pub fn max_rel(ours: &[f32], refv: &[f32]) -> Result<f64> {
    same_len("max_rel", ours, refv)?;
    let num = ours
        .iter()
        .zip(refv)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    let den = refv.iter().map(|b| (*b as f64).abs()).fold(0.0, f64::max);
    Ok(if den == 0.0 { num } else { num / den })
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    row.iter().map(|&v| v as f64 - lse).collect()
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// (top-1 agreement, mean KL(P_ref ‖ P_ours)) over full rows; fails unless both hold
/// the same whole number (≥ 1) of rows of `vocab` values.
pub fn top1_and_kl(ours: &[f32], refv: &[f32], vocab: usize) -> Result<(f64, f64)> {
    same_len("logits", ours, refv)?;
    if vocab == 0 || refv.is_empty() || !refv.len().is_multiple_of(vocab) {
        return Err(Error::invalid(format!(
            "logits: the reference has {} values, not a whole number of rows of {vocab}",
            refv.len()
        )));
    }
    let n = refv.len() / vocab;
    let (mut agree, mut kl) = (0usize, 0.0f64);
    for r in 0..n {
        let (o, f) = (&ours[r * vocab..(r + 1) * vocab], &refv[r * vocab..(r + 1) * vocab]);
        agree += (argmax(o) == argmax(f)) as usize;
        let (lo, lf) = (log_softmax(o), log_softmax(f));
        kl += lf.iter().zip(&lo).map(|(a, b)| a.exp() * (a - b)).sum::<f64>();
    }
    Ok((agree as f64 / n as f64, kl / n as f64))
}

/// (top-1 agreement, mean KL over the 64 reference tokens plus a rest bucket). The
/// reference's shapes and token ids are checked against ours first: they come from a
/// file.
fn top1_and_kl_topk(
    ours: &[f32],
    vocab: usize,
    topk_logp: &[f32],
    topk_idx: &[u32],
    rest_logp: &[f32],
) -> Result<(f64, f64)> {
    let n = rest_logp.len();
    let bad = |msg: String| Err(Error::invalid(format!("top-k reference: {msg}")));
    if n == 0 || vocab == 0 || ours.len() != n * vocab {
        return bad(format!(
            "{n} rows of rest log-probs, but the model produced {} logits of {vocab} per row",
            ours.len()
        ));
    }
    let k = topk_logp.len() / n;
    if k == 0 || topk_logp.len() != n * k || topk_idx.len() != n * k {
        return bad(format!(
            "{} log-probs and {} ids are not {n} rows of the same k ≥ 1",
            topk_logp.len(),
            topk_idx.len()
        ));
    }
    if let Some(&id) = topk_idx.iter().find(|&&id| id as usize >= vocab) {
        return bad(format!("token id {id} is past the vocabulary of {vocab}"));
    }
    let (mut agree, mut kl) = (0usize, 0.0f64);
    for r in 0..n {
        let o = &ours[r * vocab..(r + 1) * vocab];
        let lo = log_softmax(o);
        let (lp, ix) = (&topk_logp[r * k..(r + 1) * k], &topk_idx[r * k..(r + 1) * k]);
        // The reference's top-1 is the highest stored log-prob.
        let ref_top = ix[(0..k).max_by(|&a, &b| lp[a].total_cmp(&lp[b])).unwrap_or(0)] as usize;
        agree += (argmax(o) == ref_top) as usize;
        let mut ours_in = 0.0f64;
        for j in 0..k {
            let (p, q) = (lp[j] as f64, lo[ix[j] as usize]);
            kl += p.exp() * (p - q);
            ours_in += q.exp();
        }
        let (pr, qr) = (rest_logp[r] as f64, (1.0 - ours_in).max(1e-300).ln());
        kl += pr.exp() * (pr - qr);
    }
    Ok((agree as f64 / n as f64, kl / n as f64))
}

fn tol(v: &Value, key: &str) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Object(o) => o.get(key).and_then(Value::as_f64),
        _ => None,
    }
}

/// What a loaded model is, for a case.
enum Source<'a> {
    Hf(&'a Path, DType),
    Gguf(&'a Path),
}

fn load<B: Backend>(src: &Source<'_>, be: B, corrupt: Option<Corruption>, all_logits: bool) -> Result<Llama<B>> {
    let (mut cfg, mut w): (LlamaConfig, Weights<B>) = match src {
        Source::Hf(dir, t) => model::hf::load(dir, &be, *t)?,
        Source::Gguf(p) => {
            let f = GgufFile::open(p)?;
            model::gguf::load(&f, &be)?
        }
    };
    match corrupt {
        Some(Corruption::SwapRope) => {
            cfg.rope_style = match cfg.rope_style {
                RopeStyle::Adjacent => RopeStyle::HalfSplit,
                RopeStyle::HalfSplit => RopeStyle::Adjacent,
            }
        }
        Some(Corruption::WeightRow { layer }) => {
            let l = w
                .layers
                .get_mut(layer)
                .ok_or_else(|| Error::invalid(format!("no layer {layer}")))?;
            let n = be.buffer_len(&l.wq.buf);
            let mut bytes = vec![0u8; n];
            be.download(&l.wq.buf, 0, &mut bytes)?;
            // Replace row 0 of Wq with the values of a row scaled far out of range.
            let cols = l.wq.shape.row_len();
            let rb = l.wq.dtype.row_bytes(cols).unwrap_or(0);
            let big: Vec<f32> = (0..cols).map(|i| if i % 2 == 0 { 4.0 } else { -4.0 }).collect();
            crate::quant::quantize_row(l.wq.dtype, &big, &mut bytes[..rb])
                .map_err(|e| Error::invalid(format!("{e:?}")))?;
            let mut nb = be.alloc(n, BufferKind::Device)?;
            be.upload(&mut nb, 0, &bytes)?;
            l.wq.buf = nb;
        }
        None => {}
    }
    let ctx = 512;
    Llama::new(
        cfg,
        w,
        be,
        RunOptions {
            ctx,
            max_batch: 64,
            all_logits,
            // The references check f32 math to ~1e-11; an f16 cache (the CPU default)
            // rounds keys and values at 2^-11. Its cost is measured in docs/testing.md.
            kv_type: Some(crate::dtype::DType::F32),
        },
    )
}

/// The model name of the cases that run SmolLM2 in llama.cpp's Q4_K_M mix.
pub const SMOLLM2_Q4_K_M: &str = "smollm2-q4_k_m";
/// That model's file, expected in the directory of [`Options::smollm2`] (made from it by
/// `harness quantize --allow-requantize --type q4_k_m`; oracle/generate_q4_k_m.py).
pub const SMOLLM2_Q4_K_M_FILE: &str = "SmolLM2-135M-Instruct.Q4_K_M.gguf";

/// Runs every case of the manifest under `root` on backends made by `make`.
pub fn run<B: Backend>(root: &Path, opts: &Options, make: &dyn Fn() -> Result<B>) -> Result<Report> {
    let all = entries(root)?;
    let mut by_case: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for e in all {
        by_case.entry(e.case.clone()).or_default().push(e);
    }
    let mut rep = Report::default();
    for (case, es) in &by_case {
        if opts.filter.as_ref().is_some_and(|f| !case.contains(f.as_str())) {
            continue;
        }
        if case.starts_with("rope") {
            rope_case(case, es, &mut rep)?;
            continue;
        }
        let model_dir = case.split('.').next().unwrap_or_default();
        let gguf;
        let src = if model_dir.starts_with("tiny") {
            Source::Hf(Path::new(""), DType::F32)
        } else {
            // `smollm2-q4_k_m` cases: the Q4_K_M requantization of the Q4_1 file, next to it.
            let file = match (&opts.smollm2, model_dir) {
                (Some(p), SMOLLM2_Q4_K_M) => p.with_file_name(SMOLLM2_Q4_K_M_FILE),
                (Some(p), _) => p.clone(),
                (None, _) => PathBuf::new(),
            };
            if file.exists() {
                gguf = file;
                Source::Gguf(&gguf)
            } else if model_dir == SMOLLM2_Q4_K_M {
                rep.skipped.push(format!(
                    "{case}: {SMOLLM2_Q4_K_M_FILE} not found next to the SmolLM2 GGUF (scripts/test.sh makes it: \
                     `harness quantize --allow-requantize --type q4_k_m`)"
                ));
                continue;
            } else {
                rep.skipped
                    .push(format!("{case}: SmolLM2 GGUF not available (run `harness fetch`)"));
                continue;
            }
        };
        let dir = root.join("oracle/models").join(model_dir);
        let src = match src {
            Source::Hf(_, _) => Source::Hf(&dir, DType::F32),
            s => s,
        };
        model_case(case, es, &src, opts, make, &mut rep)?;
    }
    Ok(rep)
}

fn rope_case(case: &str, es: &[Entry], rep: &mut Report) -> Result<()> {
    for e in es {
        let refs = Refs::open(&e.file)?;
        let want = refs.f32(&e.tensor)?;
        let ent = &e.raw;
        let hd = ent["head_dim"].as_u64().unwrap_or(64) as usize;
        let theta = ent["rope_theta"].as_f64().unwrap_or(10000.0) as f32;
        // The table is sized by the manifest's head_dim: checked against the reference
        // first, so a wrong (or absurd) value is an error, not an allocation.
        if hd / 2 != want.len() {
            return Err(refs.mismatch(
                &e.tensor,
                Error::invalid(format!(
                    "head_dim {hd} of the manifest gives {} frequencies, the reference has {}",
                    hd / 2,
                    want.len()
                )),
            ));
        }
        let mut f = crate::rope::base_inv_freq(theta, hd);
        if ent["rope_type"] == "llama3" {
            let s = crate::rope::Llama3Scaling {
                factor: ent["factor"].as_f64().unwrap_or(1.0) as f32,
                low_freq_factor: ent["low_freq_factor"].as_f64().unwrap_or(1.0) as f32,
                high_freq_factor: ent["high_freq_factor"].as_f64().unwrap_or(4.0) as f32,
                original_max_position_embeddings: ent["original_max_position_embeddings"].as_u64().unwrap_or(8192)
                    as usize,
            };
            crate::rope::apply_llama3(&mut f, &s);
        }
        rep.rows.push(Row {
            case: case.into(),
            tensor: e.tensor.clone(),
            metric: "max_rel".into(),
            value: max_rel(&f, &want).map_err(|x| refs.mismatch(&e.tensor, x))?,
            limit: tol(&e.tolerance, "max_rel"),
            upper: true,
            layer: None,
        });
    }
    Ok(())
}

fn model_case<B: Backend>(
    case: &str,
    es: &[Entry],
    src: &Source<'_>,
    opts: &Options,
    make: &dyn Fn() -> Result<B>,
    rep: &mut Report,
) -> Result<()> {
    let file = &es[0].file;
    let refs = Refs::open(file)?;
    let ids = refs.ids("ids")?;
    // One traced prefill for hidden states and logits.
    let mut m = load(src, make()?, opts.corrupt, true)?;
    let mut states: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let mut tr = |stage: &str, data: &[f32]| {
        states.entry(stage.to_string()).or_default().extend_from_slice(data);
    };
    let logits = m.forward_traced(&ids, Some(&mut tr))?.to_vec();
    let vocab = m.cfg.vocab;
    let inv_freq = m.cfg.rope_inv_freq();
    drop(m);
    let push = |rep: &mut Report, e: &Entry, metric: &str, value: f64, upper: bool| {
        rep.rows.push(Row {
            case: case.into(),
            tensor: e.tensor.clone(),
            metric: metric.into(),
            value,
            limit: tol(&e.tolerance, metric),
            upper,
            layer: e.layer,
        })
    };
    for e in es {
        match e.tensor.as_str() {
            t if t == "embed" || t == "final_norm" || t.starts_with("block.") => {
                let ours = states
                    .get(t)
                    .ok_or_else(|| Error::invalid(format!("model produced no `{t}`")))?;
                let v = nmse(ours, &refs.f32(t)?).map_err(|x| refs.mismatch(t, x))?;
                push(rep, e, "nmse", v, true);
            }
            "logits" => {
                let want = refs.f32("logits")?;
                let named = |x| refs.mismatch("logits", x);
                for met in &e.metric {
                    match met.as_str() {
                        "max_rel" => push(rep, e, "max_rel", max_rel(&logits, &want).map_err(named)?, true),
                        "top1_agree" => {
                            let (a, _) = top1_and_kl(&logits, &want, vocab).map_err(named)?;
                            push(rep, e, "top1_agree", a, false)
                        }
                        "kl_mean" => {
                            let (_, k) = top1_and_kl(&logits, &want, vocab).map_err(named)?;
                            push(rep, e, "kl_mean", k, true)
                        }
                        _ => {}
                    }
                }
            }
            "rope_inv_freq" => {
                let v =
                    max_rel(&inv_freq, &refs.f32("rope_inv_freq")?).map_err(|x| refs.mismatch("rope_inv_freq", x))?;
                push(rep, e, "max_rel", v, true)
            }
            "logits_topk_logp" => {
                let (a, k) = top1_and_kl_topk(
                    &logits,
                    vocab,
                    &refs.f32("logits_topk_logp")?,
                    &refs.ids("logits_topk_idx")?,
                    &refs.f32("logits_rest_logp")?,
                )
                .map_err(|x| refs.mismatch("logits_topk_logp", x))?;
                push(rep, e, "top1_agree", a, false);
                push(rep, e, "kl_mean_topk_plus_rest", k, true);
            }
            "logits_q4_0" => {
                let Source::Hf(dir, _) = src else { continue };
                let mut mq = load(&Source::Hf(dir, DType::Q4_0), make()?, opts.corrupt, true)?;
                let lq = mq.forward(&ids)?.to_vec();
                let (a, k) =
                    top1_and_kl(&lq, &refs.f32("logits_q4_0")?, vocab).map_err(|x| refs.mismatch("logits_q4_0", x))?;
                push(rep, e, "top1_agree", a, false);
                push(rep, e, "kl_mean", k, true);
            }
            "greedy_ids" => {
                let want = refs.ids("greedy_ids")?;
                let margin_name = e.margin_tensor.as_deref().unwrap_or("greedy_margin");
                let margin = refs.f32(margin_name)?;
                if margin.len() != want.len() {
                    return Err(refs.mismatch(
                        margin_name,
                        Error::invalid(format!(
                            "{} margins for {} greedy ids: one per step expected",
                            margin.len(),
                            want.len()
                        )),
                    ));
                }
                let min_margin = tol(&e.tolerance, "min_margin").unwrap_or(0.1);
                // Teacher-forced: each step is fed the reference's token, so one near-tie
                // cannot derail the rest; ids must agree where the reference's top-1/top-2
                // log-prob margin is at least `min_margin`.
                let mut mg = load(src, make()?, opts.corrupt, false)?;
                let mut ours = argmax(mg.forward(&ids)?) as u32;
                let (mut checked, mut mismatch) = (0usize, 0usize);
                for (step, &w) in want.iter().enumerate() {
                    if margin[step] as f64 >= min_margin {
                        checked += 1;
                        mismatch += (ours != w) as usize;
                    }
                    if step + 1 < want.len() {
                        ours = argmax(mg.forward(&[w])?) as u32;
                    }
                }
                rep.rows.push(Row {
                    case: case.into(),
                    tensor: format!("greedy_ids ({checked}/{} steps, margin ≥ {min_margin})", want.len()),
                    metric: "mismatches".into(),
                    value: mismatch as f64,
                    limit: Some(0.0),
                    upper: true,
                    layer: None,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_refuse_a_reference_of_another_length() {
        let ours = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(nmse(&ours, &ours).unwrap(), 0.0);
        assert_eq!(max_rel(&ours, &[1.0, 2.0, 3.0, 2.0]).unwrap(), 2.0 / 3.0);
        // A truncated reference used to compare only the prefix and pass.
        for short in [&ours[..3], &[][..]] {
            let e = nmse(&ours, short).unwrap_err();
            assert_eq!(e.got(), Some(format!("{} values", short.len()).as_str()), "{e}");
            assert_eq!(e.expected(), Some("4 values (the model's)"), "{e}");
            assert!(max_rel(&ours, short).is_err());
            assert!(top1_and_kl(&ours, short, 2).is_err());
        }
        assert!(nmse(&ours[..2], &ours).is_err());
        // Rows must be whole and non-empty; a zero vocabulary is not a row length.
        assert!(top1_and_kl(&ours, &ours, 3).is_err());
        assert!(top1_and_kl(&ours, &ours, 0).is_err());
        assert!(top1_and_kl(&[], &[], 2).is_err());
        let (agree, kl) = top1_and_kl(&ours, &ours, 2).unwrap();
        assert_eq!(agree, 1.0);
        assert!(kl.abs() < 1e-12, "{kl}");
    }

    #[test]
    fn topk_reference_is_checked_before_indexing() {
        let ours = [0.0f32, 1.0, 2.0, 3.0]; // 2 rows of vocab 2
        let (lp, ids, rest) = ([-0.1f32, -2.0, -0.2, -3.0], [1u32, 0, 1, 0], [-30.0f32, -30.0]);
        let (agree, _) = top1_and_kl_topk(&ours, 2, &lp, &ids, &rest).unwrap();
        assert_eq!(agree, 1.0);
        // An id past the vocabulary (read from the file) used to index out of bounds.
        let e = top1_and_kl_topk(&ours, 2, &lp, &[1, 0, 7, 0], &rest)
            .unwrap_err()
            .to_string();
        assert!(e.contains("token id 7") && e.contains("vocabulary of 2"), "{e}");
        // No rows (used to divide by zero), rows that disagree with ours, ragged k.
        assert!(top1_and_kl_topk(&ours, 2, &lp, &ids, &[]).is_err());
        assert!(top1_and_kl_topk(&ours, 2, &lp, &ids, &[-30.0; 3]).is_err());
        assert!(top1_and_kl_topk(&ours, 2, &lp[..3], &ids, &rest).is_err());
        assert!(top1_and_kl_topk(&ours, 2, &lp, &ids[..2], &rest).is_err());
        assert!(top1_and_kl_topk(&ours[..3], 2, &lp, &ids, &rest).is_err());
    }

    /// A manifest with one RoPE case whose reference holds `n` values, under a fresh
    /// directory.
    fn rope_root(tag: &str, n: usize, head_dim: u64) -> PathBuf {
        let root = std::env::temp_dir().join(format!("ag-oracle-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(root.join("oracle")).unwrap();
        let want = crate::rope::base_inv_freq(10000.0, 64);
        let bytes: Vec<u8> = want.iter().cycle().take(n).flat_map(|v| v.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n], &bytes).unwrap();
        std::fs::write(
            root.join("ref.safetensors"),
            safetensors::serialize([("inv_freq", view)], &None).unwrap(),
        )
        .unwrap();
        let manifest = serde_json::json!({"entries": [{
            "case": "rope_test", "file": "ref.safetensors", "tensor": "inv_freq", "metric": "max_rel",
            "tolerance": {"max_rel": 1e-6}, "head_dim": head_dim, "rope_theta": 10000.0,
        }]});
        std::fs::write(root.join("oracle/manifest.json"), manifest.to_string()).unwrap();
        root
    }

    #[test]
    fn a_truncated_or_mismatched_reference_file_is_an_error() {
        let no_backend = || -> Result<crate::cpu::CpuBackend> { Err(Error::invalid("not needed")) };
        let root = rope_root("ok", 32, 64);
        let rep = run(&root, &Options::default(), &no_backend).unwrap();
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(rep.rows.len(), 1);
        assert!(rep.rows[0].pass(), "{:?}", rep.rows[0]);
        // One value short: was compared over the 31 values present and passed.
        let root = rope_root("short", 31, 64);
        let e = run(&root, &Options::default(), &no_backend).unwrap_err();
        let _ = std::fs::remove_dir_all(&root);
        assert!(e.file().is_some_and(|f| f.ends_with("ref.safetensors")), "{e}");
        assert_eq!(e.tensor_name(), Some("inv_freq"), "{e}");
        assert!(e.to_string().contains("32 frequencies, the reference has 31"), "{e}");
        // An absurd head_dim in the manifest is refused before anything is sized by it.
        let root = rope_root("huge", 32, u64::MAX / 2);
        assert!(run(&root, &Options::default(), &no_backend).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
