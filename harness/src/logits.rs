//! `harness logits`: one prefill, logits for every position, written as safetensors.
//! With `--backend hybrid` the prompt runs in passes of 64 tokens, each on the side the
//! hybrid holds the sequence on (`--switch-at K` moves it before pass K).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use safetensors::tensor::{Dtype, TensorView};

use antigravity_core::model::RunOptions;

use antigravity_core::backend::Backend;

use crate::common::{prompt_ids, BackendArg, Job, ModelArgs, Session};
use crate::hybrid::HybridFlags;

/// Tokens per forward pass.
const BATCH: usize = 64;

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    #[arg(long)]
    pub prompt_ids: Option<String>,
    /// Apply the chat template to --prompt.
    #[arg(long)]
    pub chat: bool,
    /// Output file (`ids` I64 [n], `logits` F32 [n, vocab]).
    #[arg(long)]
    pub out: std::path::PathBuf,
    #[command(flatten)]
    pub hybrid: HybridFlags,
}

pub fn run(a: &LogitsArgs, t0: Instant) -> Result<()> {
    if let Some(m) = &a.model.run.model {
        crate::output::check_not_input(&a.out, m)?;
    }
    if a.model.run.backend == BackendArg::Hybrid {
        return run_hybrid(a, t0);
    }
    if !a.hybrid.switch_at.is_empty() || a.hybrid.crossover.is_some() {
        bail!("--switch-at and --crossover are for --backend hybrid");
    }
    let opts = RunOptions {
        ctx: a.model.ctx,
        max_batch: BATCH,
        all_logits: true,
        kv_type: a.model.kv_type.dtype(),
    };
    a.model.with_session(opts, t0, Logits(a))
}

/// `--backend hybrid`: the prompt in passes of [`BATCH`] tokens through the hybrid.
fn run_hybrid(a: &LogitsArgs, t0: Instant) -> Result<()> {
    // The prompt's length before the tokenizer loads (the build decision only).
    let hint = crate::hybrid::prompt_hint(a.prompt.as_deref(), a.prompt_ids.as_deref());
    let job = crate::hybrid::HybridJob {
        work: crate::hybrid::Work::Chunks {
            chunk: hint.min(BATCH),
            passes: hint.div_ceil(BATCH),
        },
        cpu_batch: BATCH,
        gpu_batch: BATCH,
        all_logits: true,
        policy: Default::default(),
    };
    let prompt = |s: &Session<_>| prompt_ids(s, a.prompt.as_deref(), a.prompt_ids.as_deref(), a.chat);
    let mut s = crate::hybrid::load(&a.model, &a.hybrid, job, t0, prompt)?;
    let (h, ids) = (&mut s.hybrid, &s.ids);
    if ids.is_empty() {
        bail!("the prompt has no tokens");
    }
    let vocab = h.cfg().vocab;
    h.plan_chunks(ids.len().div_ceil(BATCH), BATCH);
    let mut logits = Vec::with_capacity(ids.len() * vocab);
    for c in ids.chunks(BATCH) {
        logits.extend_from_slice(h.forward(c)?);
    }
    for w in h.switches() {
        eprintln!("[switch: {}]", crate::hybrid::switch_json(w));
    }
    write_logits(a, ids, &logits, vocab)
}

/// Writes `ids` and their `logits` (`[n, vocab]`) to `--out`.
fn write_logits(a: &LogitsArgs, ids: &[u32], logits: &[f32], vocab: usize) -> Result<()> {
    let n = ids.len();
    let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    let ib: &[u8] = bytemuck::cast_slice(&ids64);
    let lb: &[u8] = bytemuck::cast_slice(logits);
    let mut m = HashMap::new();
    m.insert("ids".to_string(), TensorView::new(Dtype::I64, vec![n], ib)?);
    m.insert("logits".to_string(), TensorView::new(Dtype::F32, vec![n, vocab], lb)?);
    // Serialised here and written by us: safetensors' own file writer reports I/O
    // errors in Debug form.
    let bytes = safetensors::serialize(&m, &None).map_err(|e| anyhow::anyhow!("serialising logits: {e}"))?;
    crate::output::write_atomically(&a.out, |tmp| {
        std::fs::write(tmp, &bytes).map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))
    })?;
    eprintln!("wrote {} ({n} positions × {vocab} logits)", a.out.display());
    Ok(())
}

struct Logits<'a>(&'a LogitsArgs);

impl Job for Logits<'_> {
    type Out = ();
    fn run<B: Backend>(self, mut s: Session<B>) -> Result<()> {
        let a = self.0;
        let ids = prompt_ids(&s, a.prompt.as_deref(), a.prompt_ids.as_deref(), a.chat)?;
        let vocab = s.model.cfg.vocab;
        let logits = s.model.forward(&ids)?.to_vec();
        write_logits(a, &ids, &logits, vocab)
    }
}
