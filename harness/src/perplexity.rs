//! `harness perplexity`: how well the model predicts a text, as `llama-perplexity`
//! measures it — and what an eviction policy costs.
//!
//! **Chunked** (the default; llama.cpp's `perplexity()` in tools/perplexity): the text is
//! tokenized once (BOS prepended iff the vocabulary says `add_bos`), cut into
//! `n_chunk = tokens / ctx` chunks of `ctx` tokens (the tail is not scored); each chunk
//! runs from an empty cache, its first token replaced by BOS when `add_bos`, and the
//! logits of positions `ctx/2 .. ctx-1` score the tokens after them (`ctx - ctx/2 - 1`
//! a chunk). NLL per token is `log Σ exp(l - max) - (l_tok - max)` (sum in f64, as
//! there); PPL = exp(mean NLL) ± PPL · sqrt(var(NLL) / (count - 1)).
//!
//! **Streaming** (`--stream`): the whole text goes once through a cache of `ctx` slots
//! under `--kv-policy` (chunks of `--batch` tokens; before each chunk the policy evicts
//! what does not fit), and every token after the first is scored once.
//!
//! Either runs on one model or, with `--backend hybrid`, through the hybrid (its passes
//! are the forward calls: `--switch-at K` moves the sequence before call K).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use antigravity_core::backend::Backend;
use antigravity_core::model::RunOptions;

use crate::common::{at_least_one, BackendArg, Job, KvPolicyArgs, ModelArgs, Session};
use crate::hybrid::{Engine, HybridFlags};

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub policy: KvPolicyArgs,
    /// The text to score (UTF-8).
    #[arg(long)]
    pub file: PathBuf,
    /// Tokens per forward call. Default: 128 (chunked: at most --ctx; streaming: at most
    /// what the policy can make room for).
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub batch: Option<usize>,
    /// Feed the whole text once through a cache of --ctx slots under --kv-policy (every
    /// token after the first scored), instead of llama.cpp's independent chunks.
    #[arg(long)]
    pub stream: bool,
    /// Score at most this many chunks (chunked) or tokens (streaming); default: all.
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub limit: Option<usize>,
    /// Print one JSON object (the last line of stdout): ppl, ppl_stderr, tokens_scored,
    /// ctx, kv_policy, kv_type, seconds, …
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub hybrid: HybridFlags,
}

pub fn run(a: &PerplexityArgs, t0: Instant) -> Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("reading {}", a.file.display()))?;
    let ctx = a.model.ctx;
    let cfg = a.policy.config();
    let default_batch = 128;
    let batch = if a.stream {
        a.batch.unwrap_or(default_batch.min(cfg.max_insert(ctx).max(1)))
    } else {
        if cfg.policy != antigravity_core::kv_evict::KvPolicy::None {
            bail!("--kv-policy applies to --stream (each chunk of the chunked method starts from an empty cache)");
        }
        if ctx < 2 {
            bail!("--ctx must be at least 2 (the second half of each chunk is scored)");
        }
        a.batch.unwrap_or(default_batch)
    };
    if a.model.run.backend == BackendArg::Hybrid {
        return run_hybrid(a, &text, batch.min(ctx), t0);
    }
    if !a.hybrid.switch_at.is_empty() || a.hybrid.crossover.is_some() {
        bail!("--switch-at and --crossover are for --backend hybrid");
    }
    let opts = RunOptions {
        ctx,
        max_batch: batch.min(ctx),
        all_logits: true,
        kv_type: a.model.kv_type.dtype(),
    };
    a.model.with_session(opts, t0, Ppl { a, text: &text })
}

// --- hybrid (issue 14): the same scoring through `Engine` ----------------------------

/// `--backend hybrid`: the hybrid as the [`Engine`] that [`perplexity`] drives.
fn run_hybrid(a: &PerplexityArgs, text: &str, batch: usize, t0: Instant) -> Result<()> {
    // Passes, before the tokenizer loads (about 4 characters a token; the build decision).
    let tokens = text.len() / 4 + 1;
    let passes = if a.stream {
        tokens.min(a.limit.map_or(usize::MAX, |l| l + 1)).div_ceil(batch)
    } else {
        let chunks = (tokens / a.model.ctx).min(a.limit.unwrap_or(usize::MAX));
        chunks * a.model.ctx.div_ceil(batch)
    };
    let job = crate::hybrid::HybridJob {
        work: crate::hybrid::Work::Chunks { chunk: batch, passes },
        cpu_batch: batch,
        gpu_batch: batch,
        all_logits: true,
        policy: Default::default(), // set by `perplexity` (streaming only)
    };
    let mut s = crate::hybrid::load(&a.model, &a.hybrid, job, t0, |_| Ok(Vec::new()))?;
    s.hybrid.plan_chunks(passes, batch);
    let tok = s
        .tokenizer
        .as_ref()
        .with_context(|| format!("{} has no tokenizer", s.path.display()))?;
    perplexity(a, text, &mut s.hybrid, tok, &s.path, s.threads, batch)?;
    for w in s.hybrid.switches() {
        eprintln!("[switch: {}]", crate::hybrid::switch_json(w));
    }
    Ok(())
}

struct Ppl<'a> {
    a: &'a PerplexityArgs,
    text: &'a str,
}

impl Job for Ppl<'_> {
    type Out = ();
    fn run<B: Backend>(self, mut s: Session<B>) -> Result<()> {
        let tok = s
            .tokenizer
            .take()
            .with_context(|| format!("{} has no tokenizer", s.path.display()))?;
        let batch = s.model.options().max_batch;
        perplexity(self.a, self.text, &mut s.model, &tok, &s.path, s.threads, batch)
    }
}

/// Running sums of the negative log-likelihoods (f64, as llama.cpp).
#[derive(Default)]
struct Nll {
    sum: f64,
    sum2: f64,
    count: usize,
}

impl Nll {
    /// Scores `tok` under one row of logits.
    fn add(&mut self, logits: &[f32], tok: u32) {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let sum_exp: f64 = logits.iter().map(|&v| f64::from((v - max).exp())).sum();
        let lp = f64::from(logits[tok as usize] - max) - sum_exp.ln();
        self.sum += -lp;
        self.sum2 += lp * lp;
        self.count += 1;
    }
    /// (PPL, its standard error).
    fn ppl(&self) -> (f64, f64) {
        let n = self.count.max(1) as f64;
        let mean = self.sum / n;
        let ppl = mean.exp();
        let var = self.sum2 / n - mean * mean;
        let err = if var > 0.0 && self.count > 1 {
            (var / (n - 1.0)).sqrt() * ppl
        } else {
            0.0
        };
        (ppl, err)
    }
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} tokens, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_message(what.to_string());
    pb
}

fn perplexity<E: Engine>(
    a: &PerplexityArgs,
    text: &str,
    e: &mut E,
    tok: &antigravity_core::tokenizer::Tokenizer,
    path: &std::path::Path,
    threads: usize,
    batch: usize,
) -> Result<()> {
    let tokens = tok.encode_with(text, true)?;
    let bos = if tok.add_bos() { tok.bos() } else { None };
    let ctx = e.capacity();
    let vocab = e.vocab();
    let t = Instant::now();
    let mut nll = Nll::default();
    let (mode, chunks) = if a.stream {
        let cfg = a.policy.config();
        e.set_kv_policy(cfg)?;
        let n = tokens.len().min(a.limit.map_or(usize::MAX, |l| l + 1));
        if n < 2 {
            bail!("the text has {} tokens; at least 2 are needed", tokens.len());
        }
        let pb = bar((n - 1) as u64, "streaming");
        for start in (0..n - 1).step_by(batch) {
            let end = (start + batch).min(n - 1);
            let logits = e.forward(&tokens[start..end])?;
            for (i, row) in logits.chunks_exact(vocab).enumerate() {
                nll.add(row, tokens[start + i + 1]);
            }
            pb.inc((end - start) as u64);
        }
        pb.finish_and_clear();
        ("stream", 0)
    } else {
        let n_chunk = (tokens.len() / ctx).min(a.limit.unwrap_or(usize::MAX));
        if n_chunk == 0 || tokens.len() < 2 * ctx {
            bail!(
                "the text has {} tokens; the chunked method needs at least 2 × --ctx = {} (as llama-perplexity)",
                tokens.len(),
                2 * ctx
            );
        }
        let first = ctx / 2;
        let pb = bar((n_chunk * ctx) as u64, "chunks");
        let mut chunk = vec![0u32; ctx];
        for c in 0..n_chunk {
            let start = c * ctx;
            chunk.copy_from_slice(&tokens[start..start + ctx]);
            if let Some(b) = bos {
                chunk[0] = b;
            }
            e.clear_sequence();
            for b0 in (0..ctx).step_by(batch) {
                let b1 = (b0 + batch).min(ctx);
                let logits = e.forward(&chunk[b0..b1])?;
                // Position p's logits score token p + 1, for p in first..ctx - 1.
                for p in b0.max(first)..b1.min(ctx - 1) {
                    let row = &logits[(p - b0) * vocab..][..vocab];
                    nll.add(row, tokens[start + p + 1]);
                }
                pb.inc((b1 - b0) as u64);
            }
        }
        pb.finish_and_clear();
        ("chunked", n_chunk)
    };
    e.synchronize()?;
    let seconds = t.elapsed().as_secs_f64();
    let (ppl, err) = nll.ppl();
    let cfg = a.policy.config();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "PPL = {ppl:.4} +/- {err:.5} ({mode}, {} tokens scored, ctx {ctx}{}, kv {}, {} evicted, {seconds:.1} s, {} {} x{})",
        nll.count,
        if a.stream {
            format!(", policy {}", cfg.policy.name())
        } else {
            format!(", {chunks} chunks")
        },
        e.kv_type(),
        e.kv_evicted(),
        e.name(),
        e.isa(),
        threads,
    )?;
    if a.json {
        let j = json!({
            "ppl": ppl,
            "ppl_stderr": err,
            "tokens_scored": nll.count,
            "tokens_in_text": tokens.len(),
            "ctx": ctx,
            "mode": mode,
            "chunks": chunks,
            "batch": batch,
            "kv_policy": if a.stream { cfg.policy.name() } else { "none" },
            "kv_sinks": cfg.sinks,
            "kv_keep": cfg.keep,
            "kv_type": e.kv_type(),
            "evicted": e.kv_evicted(),
            "seconds": seconds,
            "model": path.display().to_string(),
            "file": a.file.display().to_string(),
            "backend": e.name(),
            "isa": e.isa(),
            "threads": threads,
        });
        writeln!(out, "{j}")?;
    }
    Ok(())
}
