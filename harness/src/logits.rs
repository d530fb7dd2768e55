//! `harness logits`: one prefill, logits for every position, written as safetensors.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use safetensors::tensor::{Dtype, TensorView};

use antigravity_core::model::RunOptions;

use antigravity_core::backend::Backend;

use crate::common::{prompt_ids, Job, ModelArgs, Session};

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
}

pub fn run(a: &LogitsArgs, t0: Instant) -> Result<()> {
    if let Some(m) = &a.model.run.model {
        crate::output::check_not_input(&a.out, m)?;
    }
    let opts = RunOptions {
        ctx: a.model.ctx,
        max_batch: 64,
        all_logits: true,
        kv_type: a.model.kv_type.dtype(),
    };
    a.model.with_session(opts, t0, Logits(a))
}

struct Logits<'a>(&'a LogitsArgs);

impl Job for Logits<'_> {
    type Out = ();
    fn run<B: Backend>(self, mut s: Session<B>) -> Result<()> {
        let a = self.0;
        let ids = prompt_ids(&s, a.prompt.as_deref(), a.prompt_ids.as_deref(), a.chat)?;
        let n = ids.len();
        let vocab = s.model.cfg.vocab;
        let logits = s.model.forward(&ids)?.to_vec();
        let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let ib: &[u8] = bytemuck::cast_slice(&ids64);
        let lb: &[u8] = bytemuck::cast_slice(&logits);
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
}
