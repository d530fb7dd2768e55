//! End-to-end decode profiling, written against [`DecodeTarget`] so it does not depend
//! on how the model is built. The real model enters through `model_adapter` (one small
//! `impl`); the tests here drive a fake target with known timings.
//!
//! What is measured, in this order:
//! 1. load time (the `load` call, model file to ready-to-decode);
//! 2. prefill throughput at each prompt length (fresh cache each time; median of reps);
//! 3. decode: from an empty cache, `decode_tokens` single-token steps; each step timed
//!    alone, giving tok/s per context bucket and latency percentiles;
//! 4. during those decode steps, the target's per-op times (where a token's time goes);
//! 5. KV-cache bytes, host↔device bytes copied, and the process's peak RSS.
//!
//! Token ids are drawn from a seeded generator: speed does not depend on the text, and
//! a fixed sequence makes runs comparable.

use std::path::Path;
use std::time::{Duration, Instant};

use super::error::Result;
use super::kernels::Rng;
use super::timing::percentile;

/// How the bench asks for a model to be loaded.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetOptions {
    /// `cpu`, `opencl` or `hybrid`.
    pub backend: String,
    /// Forced ISA name (`--isa`), or `None` for the best available.
    pub isa: Option<String>,
    pub threads: usize,
    /// KV-cache capacity the run needs (positions).
    pub max_ctx: usize,
    /// `hybrid`: forced switches, `--verbose`, the crossover table's file.
    pub hybrid: crate::hybrid::HybridFlags,
    /// `hybrid`: the job the build decision weighs (the plan's longest prompt, then its
    /// decode steps).
    pub work: (usize, usize),
}

/// Which part of the plan runs next ([`DecodeTarget::begin_phase`]); each starts from an
/// empty cache, and a hybrid counts its token indices (`--switch-at`) from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// One prefill pass of this many tokens.
    Prefill(usize),
    /// The untimed decode steps.
    Warmup(usize),
    /// The timed decode steps.
    Decode(usize),
}

impl Phase {
    /// `prefill`, `warm-up` or `decode`.
    pub fn kind(self) -> &'static str {
        match self {
            Phase::Prefill(_) => "prefill",
            Phase::Warmup(_) => "warm-up",
            Phase::Decode(_) => "decode",
        }
    }
    /// The passes this phase produces tokens with (a prefill: one).
    pub fn tokens(self) -> usize {
        match self {
            Phase::Prefill(_) => 1,
            Phase::Warmup(n) | Phase::Decode(n) => n,
        }
    }
    /// A label for the rows: `prefill 128`, `decode 256`.
    pub fn label(self) -> String {
        match self {
            Phase::Prefill(n) | Phase::Warmup(n) | Phase::Decode(n) => format!("{} {n}", self.kind()),
        }
    }
}

/// One hand-over of a hybrid target's sequence: in which phase, before which token of
/// it, from and to which backend, cache bytes copied, wall time.
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchRow {
    pub phase: String,
    pub token: usize,
    pub from: String,
    pub to: String,
    pub bytes: u64,
    pub ms: f64,
}

/// Tokens a backend processed in one kind of phase (a hybrid target: which side ran
/// what). Prefill counts prompt tokens, decode counts steps.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendTokens {
    pub phase: &'static str,
    pub backend: String,
    pub tokens: u64,
}

/// What ran, as recorded in results.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetInfo {
    pub backend: String,
    pub isa: String,
    /// The model's main weight type (`q4_1`).
    pub quant: String,
    pub threads: u32,
}

/// Bytes moved between host and device memory (0 for a CPU backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferBytes {
    pub host_to_device: u64,
    pub device_to_host: u64,
}

/// A model the bench can drive. Every method returns once its work is complete (a GPU
/// target synchronises before returning), so wall time around a call is its cost.
pub trait DecodeTarget {
    /// Work done once before the timed load, outside `load_time_s` (a hybrid target
    /// measures its crossover table here when it has none). The default does nothing.
    fn prepare(path: &Path, opts: &TargetOptions) -> Result<()>
    where
        Self: Sized,
    {
        let _ = (path, opts);
        Ok(())
    }
    /// Loads the model file with these options.
    fn load(path: &Path, opts: &TargetOptions) -> Result<Self>
    where
        Self: Sized;
    fn info(&self) -> TargetInfo;
    fn vocab_size(&self) -> usize;
    /// Empties the KV cache (next token is at position 0).
    fn reset(&mut self) -> Result<()>;
    /// Runs the prompt through the model (logits for its last token computed).
    fn prefill(&mut self, ids: &[u32]) -> Result<()>;
    /// Runs one token at the next position (logits computed).
    fn decode_one(&mut self, id: u32) -> Result<()>;
    /// Time spent per op kind (`matmul`, `attention`, …) since [`reset_op_times`],
    /// summed. Empty when the target has no timing hook.
    ///
    /// [`reset_op_times`]: DecodeTarget::reset_op_times
    fn op_times(&self) -> Vec<(String, Duration)>;
    fn reset_op_times(&mut self);
    /// Bytes the KV cache occupies (allocated capacity).
    fn kv_cache_bytes(&self) -> u64;
    /// Host↔device bytes copied since load.
    fn transfer_bytes(&self) -> TransferBytes {
        TransferBytes::default()
    }
    /// Says which phase comes next (after its [`DecodeTarget::reset`]): a hybrid target
    /// takes its horizon from it and labels its switches with it.
    fn begin_phase(&mut self, _phase: Phase) {}
    /// Every hand-over so far (a hybrid target; empty for one backend).
    fn switches(&self) -> Vec<SwitchRow> {
        Vec::new()
    }
    /// Tokens per backend and phase kind (a hybrid target; empty for one backend).
    fn tokens_by_backend(&self) -> Vec<BackendTokens> {
        Vec::new()
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub prompt_lens: Vec<usize>,
    pub prefill_reps: u32,
    /// Decode steps from an empty cache.
    pub decode_tokens: usize,
    /// Upper ends of the context buckets (inclusive), ascending; the last one is
    /// `decode_tokens`.
    pub buckets: Vec<usize>,
    /// Untimed decode steps first (then the cache is reset).
    pub warmup_tokens: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            prompt_lens: vec![32, 128, 512],
            prefill_reps: 3,
            decode_tokens: 256,
            buckets: vec![32, 64, 128, 256],
            warmup_tokens: 4,
        }
    }
    pub fn quick() -> Plan {
        Plan {
            prompt_lens: vec![32, 128],
            prefill_reps: 1,
            decode_tokens: 64,
            buckets: vec![16, 32, 64],
            warmup_tokens: 2,
        }
    }
    /// Positions the run needs in the KV cache.
    pub fn max_ctx(&self) -> usize {
        self.prompt_lens
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(self.decode_tokens)
    }
    /// Units of work, for a progress bar: one per prefill and one per decode step.
    pub fn units(&self) -> u64 {
        (self.prompt_lens.len() as u64) * u64::from(self.prefill_reps) + self.decode_tokens as u64
    }
}

/// Decode throughput over one context bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// Context after the bucket's first and last token (inclusive).
    pub ctx_lo: usize,
    pub ctx_hi: usize,
    pub tokens: usize,
    pub tok_s: f64,
}

/// Everything [`profile`] measured.
#[derive(Clone, Debug, PartialEq)]
pub struct E2eResult {
    pub info: TargetInfo,
    pub load_s: f64,
    /// (prompt length, tokens per second, reps).
    pub prefill: Vec<(usize, f64, u32)>,
    pub buckets: Vec<Bucket>,
    /// Decode tokens timed and their overall rate.
    pub decode_tokens: usize,
    pub decode_tok_s: f64,
    /// Per-token latency percentiles, ms: (50, p50), (90, p90), (99, p99).
    pub latency_ms: Vec<(u32, f64)>,
    /// Per op kind: (op, ms per decode token, fraction of decode time). Includes `other`
    /// (time outside the ops the hook saw) when the hook reports anything.
    pub ops: Vec<(String, f64, f64)>,
    pub kv_cache_bytes: u64,
    pub transfer: TransferBytes,
    /// A hybrid target's hand-overs (empty otherwise).
    pub switches: Vec<SwitchRow>,
    /// A hybrid target's tokens per backend and phase (empty otherwise).
    pub tokens_by_backend: Vec<BackendTokens>,
}

/// Loads `T` from `path` (timed) and profiles it.
pub fn run<T: DecodeTarget>(
    path: &Path,
    opts: &TargetOptions,
    plan: &Plan,
    tick: &mut dyn FnMut(u64),
) -> Result<E2eResult> {
    T::prepare(path, opts)?;
    let t = Instant::now();
    let mut target = T::load(path, opts)?;
    let load_s = t.elapsed().as_secs_f64();
    let mut r = profile(&mut target, plan, tick)?;
    r.load_s = load_s;
    Ok(r)
}

/// A source of time, so tests can drive the profiler with a virtual clock.
pub trait Clock {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;
}

/// The real clock (`Instant`).
pub struct WallClock(Instant);

impl WallClock {
    pub fn new() -> WallClock {
        WallClock(Instant::now())
    }
}

impl Clock for WallClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Profiles a loaded target (see the module docs for what and in which order).
pub fn profile(target: &mut dyn DecodeTarget, plan: &Plan, tick: &mut dyn FnMut(u64)) -> Result<E2eResult> {
    profile_with_clock(target, plan, tick, &WallClock::new())
}

/// [`profile`] with a given clock.
pub fn profile_with_clock(
    target: &mut dyn DecodeTarget,
    plan: &Plan,
    tick: &mut dyn FnMut(u64),
    clock: &dyn Clock,
) -> Result<E2eResult> {
    let vocab = target.vocab_size().max(17) as u64;
    let mut rng = Rng::new(0xDEC0DE);
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| (16 + rng.next_u64() % (vocab - 16)) as u32).collect() };

    // Prefill at each prompt length.
    let mut prefill = Vec::new();
    for &len in &plan.prompt_lens {
        let prompt = ids(len);
        let mut secs = Vec::new();
        for _ in 0..plan.prefill_reps.max(1) {
            target.reset()?;
            target.begin_phase(Phase::Prefill(len));
            let t = clock.now();
            target.prefill(&prompt)?;
            secs.push((clock.now() - t).as_secs_f64());
            tick(1);
        }
        let med = percentile(&secs, 50.0).unwrap_or(f64::NAN);
        prefill.push((len, len as f64 / med, plan.prefill_reps.max(1)));
    }

    // Decode warm-up, then timed steps from an empty cache.
    let seq = ids(plan.decode_tokens.max(plan.warmup_tokens));
    target.reset()?;
    target.begin_phase(Phase::Warmup(plan.warmup_tokens));
    for &id in &seq[..plan.warmup_tokens] {
        target.decode_one(id)?;
    }
    target.reset()?;
    target.begin_phase(Phase::Decode(plan.decode_tokens));
    target.reset_op_times();
    let mut lat = Vec::with_capacity(plan.decode_tokens);
    for &id in &seq[..plan.decode_tokens] {
        let t = clock.now();
        target.decode_one(id)?;
        lat.push((clock.now() - t).as_secs_f64());
        tick(1);
    }
    let total: f64 = lat.iter().sum();

    let mut buckets = Vec::new();
    let mut lo = 1;
    for &hi in &plan.buckets {
        let hi = hi.min(plan.decode_tokens);
        if hi < lo {
            continue;
        }
        // Token i (0-based) leaves the cache with i + 1 positions.
        let s: f64 = lat[lo - 1..hi].iter().sum();
        buckets.push(Bucket {
            ctx_lo: lo,
            ctx_hi: hi,
            tokens: hi - lo + 1,
            tok_s: (hi - lo + 1) as f64 / s,
        });
        lo = hi + 1;
    }

    let ms: Vec<f64> = lat.iter().map(|s| s * 1e3).collect();
    let latency_ms = [50u32, 90, 99]
        .iter()
        .filter_map(|&p| Some((p, percentile(&ms, f64::from(p))?)))
        .collect();

    let mut ops: Vec<(String, f64, f64)> = Vec::new();
    let op_times = target.op_times();
    if !op_times.is_empty() && total > 0.0 {
        let n = plan.decode_tokens.max(1) as f64;
        let mut seen = 0.0;
        let mut sorted = op_times;
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        for (op, d) in sorted {
            let s = d.as_secs_f64();
            seen += s;
            ops.push((op, s * 1e3 / n, s / total));
        }
        let other = (total - seen).max(0.0);
        ops.push(("other".to_string(), other * 1e3 / n, other / total));
    }

    Ok(E2eResult {
        info: target.info(),
        load_s: 0.0,
        prefill,
        buckets,
        decode_tokens: plan.decode_tokens,
        decode_tok_s: plan.decode_tokens as f64 / total,
        latency_ms,
        ops,
        kv_cache_bytes: target.kv_cache_bytes(),
        transfer: target.transfer_bytes(),
        switches: target.switches(),
        tokens_by_backend: target.tokens_by_backend(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A virtual clock the fake target advances.
    #[derive(Clone, Default)]
    pub struct FakeClock(Rc<Cell<Duration>>);

    impl FakeClock {
        fn advance(&self, d: Duration) {
            self.0.set(self.0.get() + d);
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
    }

    /// A target whose costs are known: prefill costs `PER_TOK` per token, decode costs
    /// `PER_TOK + PER_CTX · ctx`, half of it reported as `matmul`, a quarter as
    /// `attention`. It advances a virtual clock instead of computing.
    pub struct FakeTarget {
        pub clock: FakeClock,
        pos: usize,
        matmul: Duration,
        attention: Duration,
        pub cap: usize,
    }

    pub const PER_TOK: Duration = Duration::from_micros(1000);
    pub const PER_CTX: Duration = Duration::from_micros(10);

    impl DecodeTarget for FakeTarget {
        fn load(_: &Path, opts: &TargetOptions) -> Result<Self> {
            Ok(FakeTarget {
                clock: FakeClock::default(),
                pos: 0,
                matmul: Duration::ZERO,
                attention: Duration::ZERO,
                cap: opts.max_ctx,
            })
        }
        fn info(&self) -> TargetInfo {
            TargetInfo {
                backend: "fake".into(),
                isa: "none".into(),
                quant: "q4_1".into(),
                threads: 1,
            }
        }
        fn vocab_size(&self) -> usize {
            1000
        }
        fn reset(&mut self) -> Result<()> {
            self.pos = 0;
            Ok(())
        }
        fn prefill(&mut self, ids: &[u32]) -> Result<()> {
            assert!(self.pos + ids.len() <= self.cap, "bench asked past max_ctx");
            assert!(ids.iter().all(|&i| (16..1000).contains(&i)));
            self.clock.advance(PER_TOK * ids.len() as u32);
            std::thread::sleep(Duration::from_micros(20)); // real time, for wall-clock runs
            self.pos += ids.len();
            Ok(())
        }
        fn decode_one(&mut self, _id: u32) -> Result<()> {
            assert!(self.pos < self.cap, "bench asked past max_ctx");
            self.pos += 1;
            let d = PER_TOK + PER_CTX * self.pos as u32;
            self.clock.advance(d);
            std::thread::sleep(Duration::from_micros(20));
            self.matmul += d / 2;
            self.attention += d / 4;
            Ok(())
        }
        fn op_times(&self) -> Vec<(String, Duration)> {
            vec![("matmul".into(), self.matmul), ("attention".into(), self.attention)]
        }
        fn reset_op_times(&mut self) {
            self.matmul = Duration::ZERO;
            self.attention = Duration::ZERO;
        }
        fn kv_cache_bytes(&self) -> u64 {
            (self.cap * 2 * 30 * 192 * 4) as u64
        }
    }

    pub fn plan() -> Plan {
        Plan {
            prompt_lens: vec![8, 32],
            prefill_reps: 1,
            decode_tokens: 24,
            buckets: vec![8, 16, 24],
            warmup_tokens: 2,
        }
    }

    pub fn opts() -> TargetOptions {
        TargetOptions {
            backend: "cpu".into(),
            isa: None,
            threads: 1,
            max_ctx: plan().max_ctx(),
            hybrid: Default::default(),
            work: (32, 24),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn profile_measures_what_the_fake_costs() {
        let mut t = FakeTarget::load(Path::new("fake.gguf"), &opts()).unwrap();
        let clock = t.clock.clone();
        let mut ticks = 0;
        let r = profile_with_clock(&mut t, &plan(), &mut |n| ticks += n, &clock).unwrap();
        assert_eq!(ticks, plan().units());
        // 1 ms per prompt token: 1000 tok/s at any length.
        assert_eq!(r.prefill.len(), 2);
        for &(_, tok_s, _) in &r.prefill {
            assert!(close(tok_s, 1000.0), "{tok_s}");
        }
        // Bucket 1..=8: Σ (1000 + 10·c) µs for c in 1..=8 = 8360 µs → 8 / 8.36 ms.
        assert_eq!(
            r.buckets
                .iter()
                .map(|b| (b.ctx_lo, b.ctx_hi, b.tokens))
                .collect::<Vec<_>>(),
            [(1, 8, 8), (9, 16, 8), (17, 24, 8)]
        );
        assert!(close(r.buckets[0].tok_s, 8.0 / 8.360e-3), "{:?}", r.buckets);
        assert!(r.buckets[0].tok_s > r.buckets[1].tok_s && r.buckets[1].tok_s > r.buckets[2].tok_s);
        // Latencies are 1.01 .. 1.24 ms; p50 of 24 evenly spaced values is their middle.
        assert!(close(r.latency_ms[0].1, 1.125), "{:?}", r.latency_ms);
        assert!(close(r.latency_ms[2].1, 1.01 + 0.23 * 0.99), "{:?}", r.latency_ms);
        // Fractions: matmul 1/2, attention 1/4, `other` the rest (Duration division
        // rounds to whole ns, hence the tolerance).
        let frac = |op: &str| r.ops.iter().find(|o| o.0 == op).unwrap().2;
        assert!((frac("matmul") - 0.5).abs() < 1e-6, "{:?}", r.ops);
        assert!((frac("attention") - 0.25).abs() < 1e-6, "{:?}", r.ops);
        assert!((frac("other") - 0.25).abs() < 1e-6, "{:?}", r.ops);
        assert_eq!(r.ops.last().unwrap().0, "other");
        assert!(r.kv_cache_bytes > 0 && r.decode_tokens == 24);
    }

    #[test]
    fn run_times_load_and_passes_max_ctx() {
        // The fake's `prefill`/`decode_one` assert the bench never asks past max_ctx.
        let r = run::<FakeTarget>(Path::new("fake.gguf"), &opts(), &plan(), &mut |_| {}).unwrap();
        assert!(r.load_s >= 0.0 && r.load_s < 1.0);
        assert_eq!(r.info.quant, "q4_1");
    }
}
