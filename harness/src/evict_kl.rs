//! `harness evict-kl`: how far each eviction policy moves the model's next-token
//! distributions from the full cache's, on the oracle's SmolLM2 prompts continued past a
//! small cache (docs/kv-cache.md, *Quality against the full cache*).
//!
//! For every prompt (the `ids` of the oracle's `smollm2.*` reference files, named in
//! `oracle/manifest.json`): a model with a cache holding every position continues the
//! prompt to `--tokens` tokens, sampling with a fixed seed (llama.cpp's default chain:
//! temperature 0.8, top-k 40, top-p 0.95, min-p 0.05), and keeps the logits of every
//! position. The same token stream then runs through a cache of `--ctx` slots under each
//! policy (and block); every position whose context no longer fits (`p >= ctx`) is
//! scored: KL(P_full ‖ P_policy) of the two next-token distributions (log-softmax in
//! f64) and whether their argmax agrees. Every run feeds one token per forward call, as
//! decoding does, so positions before the first eviction give identical logits (checked:
//! `kl_before_eviction_max`).
//!
//! With `--json` the last line of stdout is one object: `ctx`, `tokens`, `kv_type`,
//! `positions` per prompt, and per policy × block `mean_kl`, `kl_stderr`, `top1_agree`,
//! `positions`, `evicted`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use antigravity_core::backend::Backend;
use antigravity_core::kv_evict::{EvictConfig, KvPolicy};
use antigravity_core::model::RunOptions;
use antigravity_core::sampling::{Sampler, SamplerConfig};

use crate::common::{at_least_one, Job, ModelArgs, Session};

#[derive(Args, Debug)]
pub struct EvictKlArgs {
    /// `--ctx` is the small cache's slots (the eviction budget).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Tokens per prompt: the prompt, then the full cache's sampled continuation.
    #[arg(long, default_value_t = 512, value_parser = at_least_one, allow_negative_numbers = true)]
    pub tokens: usize,
    /// Policies to compare (comma separated).
    #[arg(long, value_delimiter = ',', value_parser = crate::bench::evict::parse_policy,
          default_value = "window,sinks,shift,h2o,tova")]
    pub policies: Vec<KvPolicy>,
    /// Eviction blocks (`auto`: --ctx / 16; or slots), each run with every policy.
    #[arg(long, value_delimiter = ',', value_parser = crate::bench::evict::parse_block, default_value = "auto,1")]
    pub blocks: Vec<usize>,
    /// `sinks`: slots kept at the start.
    #[arg(long, default_value_t = 4)]
    pub kv_sinks: usize,
    /// `shift`: slots kept at the start (llama.cpp's --keep).
    #[arg(long, default_value_t = 0)]
    pub kv_keep: usize,
    /// Seed of the continuation's sampler.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Repository root holding `oracle/` (default: the current directory or the build's
    /// source tree).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Print one JSON object (the last line of stdout).
    #[arg(long)]
    pub json: bool,
}

/// The oracle's SmolLM2 prompts: (case name, ids).
fn oracle_prompts(root: &std::path::Path) -> Result<Vec<(String, Vec<u32>)>> {
    let mpath = root.join("oracle/manifest.json");
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&mpath)?)
        .with_context(|| format!("parsing {}", mpath.display()))?;
    let mut out = Vec::new();
    for c in m["cases"].as_array().into_iter().flatten() {
        if c["model"].as_str() != Some("smollm2") {
            continue;
        }
        let (Some(name), Some(file)) = (c["case"].as_str(), c["file"].as_str()) else {
            continue;
        };
        let path = root.join(file);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("{}", path.display()))?;
        let t = st
            .tensor("ids")
            .with_context(|| format!("{}: no `ids`", path.display()))?;
        if t.dtype() != safetensors::Dtype::I64 {
            bail!("{}: `ids` is {:?}, expected I64", path.display(), t.dtype());
        }
        let ids = t
            .data()
            .chunks_exact(8)
            .map(|b| {
                let v = i64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
                u32::try_from(v).with_context(|| format!("{}: id {v}", path.display()))
            })
            .collect::<Result<Vec<u32>>>()?;
        out.push((name.to_string(), ids));
    }
    if out.is_empty() {
        bail!("{} names no smollm2 case", mpath.display());
    }
    Ok(out)
}

/// log Σ exp(row), in f64.
fn log_sum_exp(row: &[f32]) -> f64 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    max + row.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// KL(P ‖ Q) of the softmaxes of two logit rows, in f64.
pub fn kl(p: &[f32], q: &[f32]) -> f64 {
    let (lp, lq) = (log_sum_exp(p), log_sum_exp(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let la = a as f64 - lp;
            la.exp() * (la - (b as f64 - lq))
        })
        .sum()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        )
        .0
}

/// KL values and argmax agreements of one policy × block, pooled over prompts.
#[derive(Default)]
struct Score {
    kl: Vec<f64>,
    agree: usize,
    evicted: u64,
    /// Largest KL at a position before any eviction (0 unless the two runs differ in
    /// something besides the cache: a check of the method).
    before_max: f64,
}

impl Score {
    fn mean_stderr(&self) -> (f64, f64) {
        let n = self.kl.len().max(1) as f64;
        let mean = self.kl.iter().sum::<f64>() / n;
        let var = self.kl.iter().map(|k| (k - mean) * (k - mean)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, (var / n).sqrt())
    }
}

pub fn run(a: &EvictKlArgs, t0: Instant) -> Result<()> {
    let root = crate::oracle::find_root(a.root.as_ref())?;
    let prompts = oracle_prompts(&root)?;
    if let Some((name, ids)) = prompts.iter().find(|(_, ids)| ids.len() >= a.tokens) {
        bail!(
            "--tokens {} is not past the prompt {name} ({} ids)",
            a.tokens,
            ids.len()
        );
    }
    if a.model.ctx >= a.tokens {
        bail!(
            "--ctx {} must be below --tokens {} (nothing would be evicted)",
            a.model.ctx,
            a.tokens
        );
    }
    // The full cache: every position.
    let full = ModelArgs {
        ctx: a.tokens,
        ..a.model.clone()
    };
    let opts = |ctx| RunOptions {
        ctx,
        max_batch: 1,
        all_logits: false,
        kv_type: a.model.kv_type.dtype(),
    };
    eprintln!(
        "evict-kl: {} prompts continued to {} tokens; full cache first",
        prompts.len(),
        a.tokens
    );
    let streams = full.with_session(opts(a.tokens), t0, Continue { a, prompts: &prompts })?;

    let mut configs = Vec::new();
    for &policy in a.policies.iter().filter(|&&p| p != KvPolicy::None) {
        for &block in &a.blocks {
            configs.push(EvictConfig {
                policy,
                sinks: a.kv_sinks,
                keep: a.kv_keep,
                block,
            });
        }
    }
    let mut results = Vec::new();
    let mut kv_type = String::new();
    for cfg in configs {
        let t = Instant::now();
        let (score, kt) = a.model.with_session(
            opts(a.model.ctx),
            t0,
            Replay {
                cfg,
                streams: &streams,
                ctx: a.model.ctx,
            },
        )?;
        kv_type = kt;
        let (mean, err) = score.mean_stderr();
        let top1 = score.agree as f64 / score.kl.len().max(1) as f64;
        let block = cfg.block_slots(a.model.ctx);
        println!(
            "{:<7} block {:>3}: mean KL {mean:.5} ± {err:.5}, top-1 {top1:.3} ({} positions, {} evicted, KL before eviction ≤ {:.1e}, {:.1} s)",
            cfg.policy.name(),
            block,
            score.kl.len(),
            score.evicted,
            score.before_max,
            t.elapsed().as_secs_f64()
        );
        results.push(json!({
            "policy": cfg.policy.name(),
            "block": block,
            "mean_kl": mean,
            "kl_stderr": err,
            "top1_agree": top1,
            "positions": score.kl.len(),
            "evicted": score.evicted,
            "kl_before_eviction_max": score.before_max,
        }));
    }
    if a.json {
        let j = json!({
            "ctx": a.model.ctx,
            "tokens": a.tokens,
            "kv_type": kv_type,
            "seed": a.seed,
            "kv_sinks": a.kv_sinks,
            "kv_keep": a.kv_keep,
            "prompts": streams.iter().map(|s| json!({
                "case": s.name, "prompt_ids": s.prompt_len, "positions": a.tokens - a.model.ctx,
            })).collect::<Vec<_>>(),
            "results": results,
        });
        println!("{j}");
    }
    Ok(())
}

/// One prompt's token stream and the full cache's logits at every position.
struct Stream {
    name: String,
    prompt_len: usize,
    ids: Vec<u32>,
    /// `ids.len() × vocab`.
    logits: Vec<f32>,
}

struct Continue<'a> {
    a: &'a EvictKlArgs,
    prompts: &'a [(String, Vec<u32>)],
}

impl Job for Continue<'_> {
    type Out = Vec<Stream>;
    fn run<B: Backend>(self, mut s: Session<B>) -> Result<Vec<Stream>> {
        let (a, m) = (self.a, &mut s.model);
        let vocab = m.cfg.vocab;
        let mut out = Vec::new();
        for (name, prompt) in self.prompts {
            let mut sampler = Sampler::new(
                SamplerConfig {
                    seed: a.seed,
                    ..SamplerConfig::default()
                },
                vocab,
            )?;
            m.reset();
            let mut ids = prompt.clone();
            let mut logits = Vec::with_capacity(a.tokens * vocab);
            let mut p = 0;
            while p < a.tokens {
                let row = m.forward(&ids[p..p + 1])?;
                logits.extend_from_slice(row);
                if p + 1 == ids.len() && ids.len() < a.tokens {
                    let next = sampler.sample(row, &ids)?;
                    ids.push(next);
                }
                p += 1;
            }
            ids.truncate(a.tokens);
            eprintln!("{name}: {} prompt ids, continued to {}", prompt.len(), ids.len());
            out.push(Stream {
                name: name.clone(),
                prompt_len: prompt.len(),
                ids,
                logits,
            });
        }
        Ok(out)
    }
}

struct Replay<'a> {
    cfg: EvictConfig,
    streams: &'a [Stream],
    ctx: usize,
}

impl Job for Replay<'_> {
    type Out = (Score, String);
    fn run<B: Backend>(self, mut s: Session<B>) -> Result<(Score, String)> {
        let m = &mut s.model;
        m.set_kv_policy(self.cfg)?;
        let vocab = m.cfg.vocab;
        let mut score = Score::default();
        for st in self.streams {
            m.reset();
            let before = m.kv.evicted();
            for (p, &id) in st.ids.iter().enumerate() {
                let row = m.forward(&[id])?;
                // Position p sees p + 1 tokens: more than the cache once p >= ctx.
                let full = &st.logits[p * vocab..(p + 1) * vocab];
                if p >= self.ctx {
                    score.kl.push(kl(full, row));
                    score.agree += usize::from(argmax(full) == argmax(row));
                } else {
                    score.before_max = score.before_max.max(kl(full, row));
                }
            }
            score.evicted += m.kv.evicted() - before;
        }
        Ok((score, m.kv.dtype().name().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_is_zero_for_equal_rows_and_matches_a_hand_computation() {
        let p = [1.0f32, 2.0, 3.0];
        assert!(kl(&p, &p).abs() < 1e-15);
        // Shifting every logit changes nothing.
        assert!(kl(&p, &[11.0, 12.0, 13.0]).abs() < 1e-12);
        // Two outcomes: P = (1/2, 1/2), Q = softmax(0, ln 3) = (1/4, 3/4).
        let q = [0.0f32, 3f32.ln()];
        let want = 0.5 * (0.5f64 / 0.25).ln() + 0.5 * (0.5f64 / 0.75).ln();
        assert!((kl(&[0.0, 0.0], &q) - want).abs() < 1e-7, "{}", kl(&[0.0, 0.0], &q));
        assert_eq!(argmax(&[0.5, 2.0, -1.0]), 1);
    }

    #[test]
    fn the_oracle_names_three_smollm2_prompts() {
        let root = crate::oracle::find_root(None).unwrap();
        let p = oracle_prompts(&root).unwrap();
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["smollm2.france", "smollm2.code", "smollm2.chat"]);
        // "The capital of France is": 5 ids (the manifest's n_tokens).
        assert_eq!(p[0].1.len(), 5);
    }
}
