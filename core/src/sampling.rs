//! Token sampling: turn one row of logits into the next token id.
//!
//! A [`Sampler`] is built once per generation from a [`SamplerConfig`] and the vocabulary
//! size; it owns every scratch buffer it needs, so [`Sampler::sample`] allocates nothing
//! (the decode loop is allocation-free; `core/tests/sampling_alloc.rs` proves it with a
//! counting allocator).
//!
//! ## Order of the processors
//!
//! The chain follows llama.cpp's `common` sampler order (penalties → top-k → top-p →
//! min-p → temperature → dist), leaving out the processors we do not implement:
//!
//! 1. **repetition penalty** over the last `repeat_last_n` tokens of the history: each
//!    *distinct* token in that window has its logit divided by `repeat_penalty` when
//!    positive and multiplied by it when negative (CTRL / Hugging Face /
//!    llama.cpp `penalty_repeat`); `1.0` disables it.
//! 2. **top-k**: keep the `top_k` largest logits (`0` disables it).
//! 3. **top-p** (nucleus): sort by probability and keep the smallest prefix whose
//!    cumulative probability reaches `top_p` (`1.0` disables it). At least one token stays.
//! 4. **min-p**: keep tokens whose probability is at least `min_p` times the largest
//!    one (`0.0` disables it).
//! 5. **temperature**: divide the surviving logits by `temperature`.
//! 6. **softmax and draw** with a seeded xoshiro256** generator (seeded through
//!    splitmix64, as its authors recommend), so a seed gives a reproducible sequence.
//!
//! As in llama.cpp, top-p and min-p see the distribution *before* temperature.
//!
//! `temperature == 0.0` is **greedy**: after the repetition penalty, the argmax wins, and
//! among equal maxima the lowest id wins (same as `torch.argmax` and HF greedy search).
//! No random number is drawn in greedy mode.
//!
//! NaN logits are treated as `-inf` (never chosen); ties in sorting are broken by the lower
//! token id so results do not depend on the sort algorithm.

use alloc::vec::Vec;

use crate::error::{Error, Result};

/// The knobs of the sampling chain (see the module doc for the order they apply in).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// `0.0` = greedy; otherwise logits are divided by it before the draw. Must be finite
    /// and `>= 0`.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; `0` disables.
    pub top_k: usize,
    /// Nucleus sampling threshold in `(0, 1]`; `1.0` disables.
    pub top_p: f32,
    /// Minimum probability relative to the most likely token, in `[0, 1]`; `0.0` disables.
    pub min_p: f32,
    /// Repetition penalty (`> 0`); `1.0` disables.
    pub repeat_penalty: f32,
    /// How many of the last tokens of the history the penalty looks at; `0` disables.
    pub repeat_last_n: usize,
    /// Seed of the random generator.
    pub seed: u64,
}

impl Default for SamplerConfig {
    /// llama.cpp's defaults (temp 0.8, top-k 40, top-p 0.95, min-p 0.05, no repetition
    /// penalty, window 64), with a fixed seed so runs are reproducible.
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0x5EED,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding: argmax, no penalty.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed: 0,
        }
    }

    /// Checks every field's range; the error names the field and the value.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::invalid(alloc::format!(
                "sampler: temperature must be finite and >= 0, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(alloc::format!(
                "sampler: top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::invalid(alloc::format!(
                "sampler: min_p must be in [0, 1], got {}",
                self.min_p
            )));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(Error::invalid(alloc::format!(
                "sampler: repeat_penalty must be finite and > 0, got {}",
                self.repeat_penalty
            )));
        }
        Ok(())
    }
}

/// xoshiro256** (Blackman & Vigna, 2018), seeded through splitmix64.
#[derive(Debug, Clone)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    /// Seeds the four state words with consecutive splitmix64 outputs.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Xoshiro256 {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform `f64` in `[0, 1)` from the top 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// One candidate token: its id and current logit.
#[derive(Debug, Clone, Copy)]
struct Cand {
    id: u32,
    logit: f32,
}

/// Descending by logit, ties by ascending id (so the order is total and deterministic).
fn by_logit_desc(a: &Cand, b: &Cand) -> core::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// A sampler with preallocated scratch for one vocabulary size.
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplerConfig,
    vocab: usize,
    rng: Xoshiro256,
    /// (vocab) candidates that survive the filters so far.
    cands: Vec<Cand>,
    /// (vocab) probabilities of `cands`, same order.
    probs: Vec<f32>,
    /// (vocab) `stamp[id] == epoch` marks a token already penalized in this call.
    stamp: Vec<u32>,
    epoch: u32,
}

impl Sampler {
    /// Builds a sampler for logits of length `vocab`. Fails on an invalid config or an
    /// empty vocabulary or one past [`MAX_VOCAB`](crate::model::config::MAX_VOCAB).
    pub fn new(cfg: SamplerConfig, vocab: usize) -> Result<Sampler> {
        cfg.validate()?;
        // The scratch below is sized by `vocab`: the same limit as a model's vocabulary.
        let limit = crate::model::config::MAX_VOCAB;
        if vocab == 0 || vocab > limit {
            return Err(Error::range("sampler: vocabulary size", vocab as u64, limit as u64));
        }
        Ok(Sampler {
            cfg,
            vocab,
            rng: Xoshiro256::new(cfg.seed),
            cands: Vec::with_capacity(vocab),
            probs: Vec::with_capacity(vocab),
            stamp: alloc::vec![0; vocab],
            epoch: 0,
        })
    }

    /// The configuration this sampler was built with.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Restarts the random sequence from `seed`.
    pub fn reseed(&mut self, seed: u64) {
        self.cfg.seed = seed;
        self.rng = Xoshiro256::new(seed);
    }

    /// Picks the next token from `logits` (length = vocabulary size), given the tokens so
    /// far (`history`, oldest first; ids outside the vocabulary are ignored). Allocates
    /// nothing. Fails if `logits` has the wrong length or holds no finite value.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        if logits.len() != self.vocab {
            return Err(Error::shape(
                "sample",
                "logits",
                alloc::format!("[{}]", self.vocab),
                alloc::format!("[{}]", logits.len()),
            ));
        }
        // Plain greedy (no penalty): the argmax straight off the logits, without building
        // candidates — this runs once per decoded token on the host, between GPU steps.
        if self.cfg.temperature == 0.0 && (self.cfg.repeat_penalty == 1.0 || self.cfg.repeat_last_n == 0) {
            let mut best = 0usize;
            let mut best_l = f32::NEG_INFINITY;
            for (i, &l) in logits.iter().enumerate() {
                // NaN compares false: it never wins, as NaN → -inf below.
                if l > best_l {
                    best_l = l;
                    best = i;
                }
            }
            if best_l == f32::NEG_INFINITY {
                return Err(no_finite_logit());
            }
            return Ok(best as u32);
        }
        // Candidates: all tokens, NaN → -inf.
        self.cands.clear();
        self.cands.extend(logits.iter().enumerate().map(|(i, &l)| Cand {
            id: i as u32,
            logit: if l.is_nan() { f32::NEG_INFINITY } else { l },
        }));

        // 1. Repetition penalty, once per distinct token of the window.
        let r = self.cfg.repeat_penalty;
        if r != 1.0 && self.cfg.repeat_last_n > 0 {
            self.epoch = self.epoch.wrapping_add(1);
            if self.epoch == 0 {
                self.stamp.fill(0);
                self.epoch = 1;
            }
            let start = history.len().saturating_sub(self.cfg.repeat_last_n);
            for &id in &history[start..] {
                let i = id as usize;
                if i >= self.vocab || self.stamp[i] == self.epoch {
                    continue;
                }
                self.stamp[i] = self.epoch;
                let l = &mut self.cands[i].logit;
                *l = if *l > 0.0 { *l / r } else { *l * r };
            }
        }

        // Greedy: argmax, first (lowest id) maximum wins.
        if self.cfg.temperature == 0.0 {
            let mut best = 0usize;
            let mut best_l = f32::NEG_INFINITY;
            for (i, c) in self.cands.iter().enumerate() {
                if c.logit > best_l {
                    best_l = c.logit;
                    best = i;
                }
            }
            if best_l == f32::NEG_INFINITY {
                return Err(no_finite_logit());
            }
            return Ok(self.cands[best].id);
        }

        // Drop impossible tokens so they never take part in sorting or softmax.
        self.cands.retain(|c| c.logit > f32::NEG_INFINITY);
        if self.cands.is_empty() {
            return Err(no_finite_logit());
        }
        if self.cands.iter().any(|c| c.logit == f32::INFINITY) {
            // An infinite logit has probability 1 (ties: lowest id).
            self.cands.retain(|c| c.logit == f32::INFINITY);
            return Ok(self.cands.iter().map(|c| c.id).min().unwrap_or(0));
        }
        let mut sorted = false;

        // 2. Top-k.
        let k = self.cfg.top_k;
        if k > 0 && k < self.cands.len() {
            self.cands.select_nth_unstable_by(k - 1, by_logit_desc);
            self.cands.truncate(k);
            self.cands.sort_unstable_by(by_logit_desc);
            sorted = true;
        }

        // 3. Top-p on the softmax of the current logits.
        if self.cfg.top_p < 1.0 {
            if !sorted {
                self.cands.sort_unstable_by(by_logit_desc);
                sorted = true;
            }
            let sum = softmax_into(&self.cands, 1.0, &mut self.probs);
            let target = self.cfg.top_p * sum;
            let mut cum = 0.0f32;
            let mut keep = self.cands.len();
            for (i, &p) in self.probs.iter().enumerate() {
                cum += p;
                if cum >= target {
                    keep = i + 1;
                    break;
                }
            }
            self.cands.truncate(keep.max(1));
        }

        // 4. Min-p: p_i >= min_p * p_max  <=>  logit_i >= max_logit + ln(min_p).
        if self.cfg.min_p > 0.0 {
            let max_l = if sorted {
                self.cands[0].logit
            } else {
                self.cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.logit))
            };
            let threshold = max_l + libm::logf(self.cfg.min_p);
            self.cands.retain(|c| c.logit >= threshold);
        }

        // 5 + 6. Temperature, softmax, draw.
        let sum = softmax_into(&self.cands, 1.0 / self.cfg.temperature, &mut self.probs);
        let r = (self.rng.next_f64() * sum as f64) as f32;
        let mut cum = 0.0f32;
        for (c, &p) in self.cands.iter().zip(&self.probs) {
            cum += p;
            if r < cum {
                return Ok(c.id);
            }
        }
        // Rounding left `r` at the very top: the last token with non-zero weight.
        let last = self.probs.iter().rposition(|&p| p > 0.0).unwrap_or(0);
        Ok(self.cands[last].id)
    }
}

fn no_finite_logit() -> Error {
    Error::invalid("sample: every logit is -inf or NaN, nothing to sample")
}

/// Writes unnormalized `exp((logit - max) * inv_t)` of `cands` into `probs` (cleared
/// first, capacity already reserved) and returns their sum.
fn softmax_into(cands: &[Cand], inv_t: f32, probs: &mut Vec<f32>) -> f32 {
    let max_l = cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.logit));
    probs.clear();
    let mut sum = 0.0f32;
    for c in cands {
        let p = libm::expf((c.logit - max_l) * inv_t);
        sum += p;
        probs.push(p);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(temperature: f32) -> SamplerConfig {
        SamplerConfig {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed: 1234,
        }
    }

    /// Draws `n` samples and returns the count per token.
    fn histogram(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
        let mut h = alloc::vec![0usize; logits.len()];
        for _ in 0..n {
            h[s.sample(logits, &[]).unwrap() as usize] += 1;
        }
        h
    }

    fn logits_of(p: &[f64]) -> Vec<f32> {
        p.iter()
            .map(|&x| if x > 0.0 { x.ln() as f32 } else { f32::NEG_INFINITY })
            .collect()
    }

    /// Every count within 5 binomial sigmas of n·p (a false failure has probability
    /// below 1e-6 per bucket; the seed is fixed anyway, so the test is deterministic).
    fn assert_close(h: &[usize], p: &[f64], n: usize) {
        let total: f64 = p.iter().sum();
        for (i, (&c, &pi)) in h.iter().zip(p).enumerate() {
            let pi = pi / total;
            let mean = n as f64 * pi;
            let sigma = (n as f64 * pi * (1.0 - pi)).sqrt();
            assert!(
                (c as f64 - mean).abs() <= 5.0 * sigma + 1e-9,
                "token {i}: count {c}, expected {mean:.1} ± {sigma:.1} (hist {h:?})"
            );
        }
    }

    #[test]
    fn rng_reference_values() {
        // splitmix64(0) first output is the published 0xE220A8397B1DCDAF.
        let s = Xoshiro256::new(0);
        assert_eq!(s.s[0], 0xE220_A839_7B1D_CDAF);
        let mut a = Xoshiro256::new(7);
        let mut b = Xoshiro256::new(7);
        for _ in 0..100 {
            let x = a.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x, b.next_f64());
        }
    }

    #[test]
    fn greedy_is_argmax_first_max_wins() {
        let mut s = Sampler::new(SamplerConfig::greedy(), 5).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0, 2.0], &[]).unwrap(), 1);
        assert_eq!(s.sample(&[f32::NAN, -1.0, -2.0, f32::NAN, -1.0], &[]).unwrap(), 1);
        assert!(s.sample(&[f32::NAN; 5], &[]).is_err());
        assert!(s.sample(&[0.0; 4], &[]).is_err());
    }

    #[test]
    fn temperature_one_matches_distribution() {
        let p = [0.5, 0.25, 0.125, 0.0625, 0.0625];
        let mut s = Sampler::new(cfg(1.0), p.len()).unwrap();
        let n = 20_000;
        assert_close(&histogram(&mut s, &logits_of(&p), n), &p, n);
    }

    #[test]
    fn temperature_scales_distribution() {
        // T = 0.5 squares the probabilities (then renormalizes).
        let p = [0.4, 0.3, 0.2, 0.1];
        let p2: Vec<f64> = p.iter().map(|x| x * x).collect();
        let mut s = Sampler::new(cfg(0.5), p.len()).unwrap();
        let n = 20_000;
        assert_close(&histogram(&mut s, &logits_of(&p), n), &p2, n);
    }

    #[test]
    fn top_k_never_leaves_the_top_k() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32 * 0.05).collect();
        let mut order: Vec<usize> = (0..100).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top: Vec<usize> = order[..5].to_vec();
        let mut s = Sampler::new(SamplerConfig { top_k: 5, ..cfg(1.5) }, 100).unwrap();
        let h = histogram(&mut s, &logits, 5_000);
        for (i, &c) in h.iter().enumerate() {
            assert!(c == 0 || top.contains(&i), "token {i} outside top-5 drawn {c} times");
        }
        // And within the top 5 the distribution is the renormalized softmax at T = 1.5.
        let p: Vec<f64> = (0..100)
            .map(|i| {
                if top.contains(&i) {
                    ((logits[i] / 1.5) as f64).exp()
                } else {
                    0.0
                }
            })
            .collect();
        assert_close(&h, &p, 5_000);
    }

    #[test]
    fn top_p_keeps_minimal_set() {
        // Cumulative: 0.5, 0.8, 0.95, 1.0. top_p = 0.8 keeps exactly {0, 1};
        // top_p = 0.81 needs token 2 as well.
        let p = [0.5, 0.3, 0.15, 0.05];
        let l = logits_of(&p);
        let mut s = Sampler::new(SamplerConfig { top_p: 0.8, ..cfg(1.0) }, 4).unwrap();
        let n = 20_000;
        let h = histogram(&mut s, &l, n);
        assert_close(&h, &[0.5, 0.3, 0.0, 0.0], n);
        let mut s = Sampler::new(
            SamplerConfig {
                top_p: 0.81,
                ..cfg(1.0)
            },
            4,
        )
        .unwrap();
        let h = histogram(&mut s, &l, n);
        assert_close(&h, &[0.5, 0.3, 0.15, 0.0], n);
        // A tiny top_p keeps the single best token.
        let mut s = Sampler::new(
            SamplerConfig {
                top_p: 1e-6,
                ..cfg(1.0)
            },
            4,
        )
        .unwrap();
        assert_eq!(histogram(&mut s, &l, 1_000)[0], 1_000);
    }

    #[test]
    fn min_p_threshold() {
        // p_max = 0.4; min_p = 0.5 → threshold 0.2: keeps 0.4, 0.3, 0.2 (equal counts in),
        // drops 0.1.
        let p = [0.1, 0.4, 0.2, 0.3];
        let mut s = Sampler::new(SamplerConfig { min_p: 0.5, ..cfg(1.0) }, 4).unwrap();
        let n = 20_000;
        let h = histogram(&mut s, &logits_of(&p), n);
        assert_eq!(h[0], 0);
        assert_close(&h, &[0.0, 0.4, 0.2, 0.3], n);
    }

    #[test]
    fn repetition_penalty_changes_argmax() {
        let logits = [2.0, 1.5, -1.0, 0.5];
        let greedy = SamplerConfig::greedy();
        let mut s = Sampler::new(
            SamplerConfig {
                repeat_penalty: 1.5,
                repeat_last_n: 4,
                ..greedy
            },
            4,
        )
        .unwrap();
        // 2.0 / 1.5 = 1.33 < 1.5 → token 1 wins.
        assert_eq!(s.sample(&logits, &[0]).unwrap(), 1);
        // Repeats count once: 2.0/1.5, not 2.0/1.5².
        assert_eq!(s.sample(&logits, &[0, 0, 0]).unwrap(), 1);
        // Both penalized: 1.33 vs 1.0 → token 0 again.
        assert_eq!(s.sample(&logits, &[0, 1]).unwrap(), 0);
        // Outside the window (last 4) → not penalized.
        assert_eq!(s.sample(&logits, &[0, 3, 3, 3, 3]).unwrap(), 0);
        // Negative logits get more negative: -1.0 * 1.5 = -1.5; ids past vocab ignored.
        let mut s = Sampler::new(
            SamplerConfig {
                repeat_penalty: 1.5,
                repeat_last_n: 8,
                ..greedy
            },
            2,
        )
        .unwrap();
        assert_eq!(s.sample(&[-1.0, -1.2], &[0, 99]).unwrap(), 1);
    }

    #[test]
    fn same_seed_same_sequence() {
        let logits: Vec<f32> = (0..1000).map(|i| ((i * 7919) % 1000) as f32 / 200.0).collect();
        let c = SamplerConfig {
            seed: 99,
            ..SamplerConfig::default()
        };
        let run = |c: SamplerConfig| {
            let mut s = Sampler::new(c, 1000).unwrap();
            let mut hist = Vec::new();
            for _ in 0..200 {
                let t = s.sample(&logits, &hist).unwrap();
                hist.push(t);
            }
            hist
        };
        assert_eq!(run(c), run(c));
        assert_ne!(run(c), run(SamplerConfig { seed: 100, ..c }));
    }

    #[test]
    fn rejects_bad_config_and_shapes() {
        assert!(Sampler::new(
            SamplerConfig {
                temperature: -1.0,
                ..cfg(1.0)
            },
            4
        )
        .is_err());
        assert!(Sampler::new(SamplerConfig { top_p: 0.0, ..cfg(1.0) }, 4).is_err());
        assert!(Sampler::new(SamplerConfig { min_p: 1.5, ..cfg(1.0) }, 4).is_err());
        assert!(Sampler::new(
            SamplerConfig {
                repeat_penalty: 0.0,
                ..cfg(1.0)
            },
            4
        )
        .is_err());
        assert!(Sampler::new(cfg(1.0), 0).is_err());
        // Past the vocabulary limit: refused before the scratch is sized (was u32::MAX,
        // a 16 GiB request that aborted the process).
        let e = Sampler::new(cfg(1.0), u32::MAX as usize).unwrap_err();
        assert_eq!((e.given(), e.limit()), (Some(u32::MAX as u64), Some(1 << 24)));
        let mut s = Sampler::new(cfg(1.0), 4).unwrap();
        assert!(s.sample(&[0.0; 3], &[]).is_err());
        assert_eq!(s.sample(&[0.0, f32::INFINITY, 1.0, f32::INFINITY], &[]).unwrap(), 1);
    }

    #[test]
    fn scratch_never_grows() {
        let mut s = Sampler::new(SamplerConfig::default(), 512).unwrap();
        let caps = (s.cands.capacity(), s.probs.capacity());
        let logits: Vec<f32> = (0..512).map(|i| (i % 17) as f32).collect();
        for _ in 0..50 {
            s.sample(&logits, &[1, 2, 3]).unwrap();
        }
        assert_eq!(caps, (s.cands.capacity(), s.probs.capacity()));
    }
}
