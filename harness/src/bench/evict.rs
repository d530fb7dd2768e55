//! `harness bench --evict`: decode speed as a token stream runs past a small KV cache,
//! per eviction policy — what each policy costs, as data (docs/kv-cache.md).
//!
//! For every policy of `--evict-policies` and every block of `--evict-blocks`, a fresh
//! model with a cache of `--evict-ctx` slots decodes `--evict-tokens` single tokens (ids
//! from a seeded generator, as the end-to-end part: speed does not depend on the text)
//! after a few untimed warm-up steps; each step is timed alone. `none` runs once, with a
//! cache holding every position: the baseline whose speed falls as attention reads a
//! growing context, where an evicting policy's stays flat past the budget.
//!
//! Rows (one [`super::record::Record`] each):
//! * `evict_decode_tok_s` — tok/s over a bucket of consecutive steps; `ctx` = the stream
//!   position after the bucket's last step, `tokens` = the bucket's steps, `op` = the
//!   policy, `shape` = `budget N, block B, <kv type>` (`none`: `full cache, <kv type>`);
//! * `evict_step_ms_p50`, `evict_step_ms_p99`, `evict_step_ms_max` — per-step latency
//!   over the whole series (a step that evicts a block shows in the tail);
//! * `evict_evicted_tokens` — tokens the policy evicted during the timed steps.

use std::time::Instant;

use antigravity_core::kv_evict::{EvictConfig, KvPolicy};
use antigravity_core::model::RunOptions;
use antigravity_core::Backend;

use super::error::{Error, Result};
use super::kernels::Rng;
use super::timing::percentile;
use crate::common::{Job, ModelArgs, Session};

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct EvictPlan {
    /// Cache slots (the eviction budget).
    pub budget: usize,
    /// Timed decode steps per series.
    pub tokens: usize,
    /// Steps per `evict_decode_tok_s` row.
    pub bucket: usize,
    /// Untimed steps first (then the cache is emptied).
    pub warmup: usize,
    pub policies: Vec<KvPolicy>,
    /// Eviction blocks (`0`: the automatic one), each run with every evicting policy.
    pub blocks: Vec<usize>,
}

/// One measured series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesResult {
    pub policy: KvPolicy,
    /// The block that ran (resolved from `auto`); 0 for `none`.
    pub block: usize,
    /// The cache's slots.
    pub capacity: usize,
    pub kv_type: String,
    pub backend: String,
    pub isa: String,
    pub threads: u32,
    /// The model's main weight type.
    pub quant: String,
    /// Seconds per timed step, in order.
    pub step_s: Vec<f64>,
    pub evicted: u64,
}

impl SeriesResult {
    /// The `shape` tag of the series' rows.
    pub fn shape(&self) -> String {
        match self.policy {
            KvPolicy::None => format!("full cache, {}", self.kv_type),
            _ => format!("budget {}, block {}, {}", self.capacity, self.block, self.kv_type),
        }
    }

    /// (stream position after the bucket, steps in it, tok/s) for consecutive buckets of
    /// `bucket` steps (the last one may be shorter).
    pub fn buckets(&self, bucket: usize) -> Vec<(usize, usize, f64)> {
        let mut out = Vec::new();
        let mut end = 0;
        for c in self.step_s.chunks(bucket.max(1)) {
            end += c.len();
            let s: f64 = c.iter().sum();
            out.push((end, c.len(), c.len() as f64 / s));
        }
        out
    }

    /// Step latency percentile, ms.
    pub fn step_ms(&self, p: f64) -> f64 {
        let ms: Vec<f64> = self.step_s.iter().map(|s| s * 1e3).collect();
        percentile(&ms, p).unwrap_or(f64::NAN)
    }
}

/// The series of a plan, in order: `none` once (when asked for), then every evicting
/// policy with every block.
pub fn series(plan: &EvictPlan) -> Vec<EvictConfig> {
    let mut out = Vec::new();
    for &policy in &plan.policies {
        if policy == KvPolicy::None {
            out.push(EvictConfig::default());
            continue;
        }
        for &block in &plan.blocks {
            out.push(EvictConfig {
                policy,
                block,
                ..EvictConfig::default()
            });
        }
    }
    out
}

/// Runs one series: loads the model with the cache the policy needs and times the steps.
pub fn run_series(model: &ModelArgs, plan: &EvictPlan, cfg: EvictConfig) -> Result<SeriesResult> {
    // `none` keeps every position (the warm-up is emptied first).
    let capacity = match cfg.policy {
        KvPolicy::None => plan.tokens.max(plan.warmup),
        _ => plan.budget,
    };
    let m = ModelArgs {
        ctx: capacity,
        ..model.clone()
    };
    let opts = RunOptions {
        ctx: capacity,
        max_batch: 1,
        all_logits: false,
        kv_type: m.kv_type.dtype(),
    };
    m.with_session(opts, Instant::now(), Measure { plan, cfg })
        .map_err(|e| Error::msg(format!("{} block {}: {e:#}", cfg.policy.name(), cfg.block)))
}

struct Measure<'a> {
    plan: &'a EvictPlan,
    cfg: EvictConfig,
}

impl Job for Measure<'_> {
    type Out = SeriesResult;
    fn run<B: Backend>(self, mut s: Session<B>) -> anyhow::Result<SeriesResult> {
        let (plan, cfg) = (self.plan, self.cfg);
        let m = &mut s.model;
        m.set_kv_policy(cfg)?;
        let vocab = m.cfg.vocab.max(17) as u64;
        let mut rng = Rng::new(0xE71C7);
        let ids: Vec<u32> = (0..plan.tokens.max(plan.warmup))
            .map(|_| (16 + rng.next_u64() % (vocab - 16)) as u32)
            .collect();
        for &id in &ids[..plan.warmup] {
            m.forward(&[id])?;
        }
        m.reset();
        let evicted0 = m.kv.evicted();
        let mut step_s = Vec::with_capacity(plan.tokens);
        for &id in &ids[..plan.tokens] {
            let t = Instant::now();
            m.forward(&[id])?;
            // A queue-based device: the step ends when its work does.
            m.backend.synchronize()?;
            step_s.push(t.elapsed().as_secs_f64());
        }
        let quant = m
            .weights
            .layers
            .first()
            .map(|l| l.wq.dtype.name().to_string())
            .unwrap_or_else(|| m.weights.tok_embd.dtype.name().to_string());
        Ok(SeriesResult {
            policy: cfg.policy,
            block: match cfg.policy {
                KvPolicy::None => 0,
                _ => cfg.block_slots(m.kv.capacity()),
            },
            capacity: m.kv.capacity(),
            kv_type: m.kv.dtype().name().to_string(),
            backend: m.backend.name().to_string(),
            isa: m.backend.isa().to_string(),
            threads: s.threads as u32,
            quant,
            step_s,
            evicted: m.kv.evicted() - evicted0,
        })
    }
}

/// `--evict-blocks`: `auto` (0: the budget / 16) or a number of slots.
pub fn parse_block(s: &str) -> std::result::Result<usize, String> {
    match s.trim() {
        "auto" => Ok(0),
        n => crate::common::at_least_one(n).map_err(|e| format!("{e} (or `auto`)")),
    }
}

/// `--evict-policies`: a policy name.
pub fn parse_policy(s: &str) -> std::result::Result<KvPolicy, String> {
    KvPolicy::parse(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = KvPolicy::ALL.iter().map(|p| p.name()).collect();
        format!("`{s}` is not one of {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(step_s: Vec<f64>) -> SeriesResult {
        SeriesResult {
            policy: KvPolicy::Sinks,
            block: 16,
            capacity: 256,
            kv_type: "f16".into(),
            backend: "cpu".into(),
            isa: "scalar".into(),
            threads: 1,
            quant: "q4_1".into(),
            step_s,
            evicted: 0,
        }
    }

    #[test]
    fn buckets_cover_every_step_once() {
        // 5 steps of 0.1 s and 5 of 0.2 s, buckets of 4: 4/0.4, 4/(0.1+0.6), 2/0.4.
        let r = result([0.1; 5].into_iter().chain([0.2; 5]).collect());
        let b = r.buckets(4);
        assert_eq!(
            b.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(),
            [(4, 4), (8, 4), (10, 2)]
        );
        let want = [4.0 / 0.4, 4.0 / 0.7, 2.0 / 0.4];
        for (got, want) in b.iter().zip(want) {
            assert!((got.2 - want).abs() < 1e-9, "{got:?} vs {want}");
        }
        assert_eq!(r.shape(), "budget 256, block 16, f16");
    }

    #[test]
    fn series_run_none_once_and_each_policy_per_block() {
        let plan = EvictPlan {
            budget: 64,
            tokens: 128,
            bucket: 16,
            warmup: 2,
            policies: vec![KvPolicy::None, KvPolicy::Sinks, KvPolicy::H2o],
            blocks: vec![0, 1],
        };
        let s: Vec<(KvPolicy, usize)> = series(&plan).iter().map(|c| (c.policy, c.block)).collect();
        assert_eq!(
            s,
            [
                (KvPolicy::None, 0),
                (KvPolicy::Sinks, 0),
                (KvPolicy::Sinks, 1),
                (KvPolicy::H2o, 0),
                (KvPolicy::H2o, 1)
            ]
        );
        assert_eq!(parse_block("auto"), Ok(0));
        assert_eq!(parse_block("8"), Ok(8));
        assert!(parse_block("0").is_err());
        assert!(parse_policy("lru").is_err());
    }
}
