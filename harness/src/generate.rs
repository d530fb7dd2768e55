//! `harness generate`: prefill the prompt, then sample token by token, streaming text.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::json;

use antigravity_core::backend::Backend;
use antigravity_core::model::RunOptions;
use antigravity_core::sampling::{Sampler, SamplerConfig};
use antigravity_core::tokenizer::{StreamDecoder, Tokenizer};

use crate::common::{prompt_ids, Job, ModelArgs, Session};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text.
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long)]
    pub prompt_ids: Option<String>,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// 1.0 = off.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// 0.0 = off.
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// 1.0 = off.
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object (the last line of stdout) with ids, text and timings.
    #[arg(long)]
    pub json: bool,
    /// Most prompt tokens per forward call (longer prompts are prefilled in chunks of
    /// this size; larger chunks keep a GPU busier).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
}

pub fn run(a: &GenerateArgs, t0: Instant) -> Result<()> {
    let opts = RunOptions {
        ctx: a.model.ctx,
        max_batch: a.batch.clamp(1, a.model.ctx.max(1)),
        all_logits: false,
    };
    a.model.with_session(opts, t0, Gen(a))
}

struct Gen<'a>(&'a GenerateArgs);

impl Job for Gen<'_> {
    type Out = ();
    fn run<B: Backend>(self, mut s: Session<B>) -> Result<()> {
        generate(self.0, &mut s)
    }
}

fn generate<B: Backend>(a: &GenerateArgs, s: &mut Session<B>) -> Result<()> {
    let ids = prompt_ids(s, a.prompt.as_deref(), a.prompt_ids.as_deref(), a.chat)?;
    if ids.is_empty() {
        bail!("the prompt has no tokens");
    }
    let ctx = s.model.kv.capacity();
    if ids.len() >= ctx {
        bail!(
            "the prompt has {} tokens but the context holds {ctx} (raise --ctx)",
            ids.len()
        );
    }
    let vocab = s.model.cfg.vocab;
    let cfg = SamplerConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repeat_penalty: a.repeat_penalty,
        seed: a.seed,
        ..SamplerConfig::default()
    };
    let mut sampler = Sampler::new(cfg, vocab)?;
    let eos: Vec<u32> = match &s.tokenizer {
        Some(t) => t.eos_ids().to_vec(),
        None => s.model.cfg.eos.into_iter().collect(),
    };
    let mut history: Vec<u32> = Vec::with_capacity(ctx);
    history.extend_from_slice(&ids);
    let mut logits = vec![0f32; vocab];
    let mut text_out = TextOut {
        generated: Vec::with_capacity(a.max_tokens),
        dec: s.tokenizer.as_ref().map(|t| t.decoder()),
        text: String::new(),
        out: std::io::stdout().lock(),
        stream: !a.json,
        io_err: None,
    };

    // Plain greedy decoding: the backend picks the argmax, so a step reads back 4 bytes
    // instead of the logits row (same rule as the greedy sampler: NaN never wins, ties
    // go to the lowest id).
    let on_device = a.temperature == 0.0 && a.repeat_penalty == 1.0;
    let mut device_next = None;
    let copied0 = s.model.backend.copied_bytes();
    let tp = Instant::now();
    if on_device {
        device_next = Some(s.model.forward_argmax(&ids)?);
    } else {
        logits.copy_from_slice(s.model.forward(&ids)?);
    }
    let prefill_s = tp.elapsed().as_secs_f64();
    let td = Instant::now();
    let budget = a.max_tokens.min(ctx - ids.len());
    let tokenizer = s.tokenizer.as_ref();
    let is_end = |t: u32| !a.ignore_eos && eos.contains(&t);
    if let Some(first) = device_next {
        // Greedy on the device: each pass is queued before the host sees the token of
        // the pass before (Llama::decode_greedy; the embedding is read on the device).
        let mut take = |t: u32| -> antigravity_core::Result<bool> { Ok(!is_end(t) && text_out.push(tokenizer, t)?) };
        if budget > 0 && take(first)? && budget > 1 {
            s.model.decode_greedy(first, budget - 1, &mut take)?;
        }
    } else {
        for step in 0..budget {
            let next = sampler.sample(&logits, &history)?;
            if is_end(next) || !text_out.push(tokenizer, next)? {
                break;
            }
            history.push(next);
            if step + 1 < budget {
                logits.copy_from_slice(s.model.forward(&[next])?);
            }
        }
    }
    if let Some(e) = text_out.io_err.take() {
        return Err(e.into());
    }
    let TextOut {
        generated,
        text,
        mut out,
        ..
    } = text_out;
    let decode_s = td.elapsed().as_secs_f64();
    s.model.backend.synchronize()?;
    if !a.json {
        writeln!(out)?;
    }
    let copied1 = s.model.backend.copied_bytes();
    let n_steps = (generated.len().max(1)) as u64; // forward calls after the prefill, plus the prefill's logits
    let per_token = (copied1.to_device + copied1.to_host - copied0.to_device - copied0.to_host) / n_steps;
    let n_dec = generated.len().saturating_sub(1);
    let decode_tok_s = if n_dec > 0 { n_dec as f64 / decode_s } else { 0.0 };
    let prefill_tok_s = ids.len() as f64 / prefill_s;
    if a.json {
        let j = json!({
            "model": a.model.model.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| s.path.display().to_string()),
            "backend": s.model.backend.name(),
            "isa": s.model.backend.isa(),
            "threads": s.threads,
            "prompt_ids": ids,
            "generated_ids": generated,
            "text": text,
            "load_ms": s.load_ms,
            "prefill_tok_s": prefill_tok_s,
            "decode_tok_s": decode_tok_s,
            "synthetic": s.synthetic,
            "peak_rss_bytes": peak_rss_bytes(),
            "kv_cache_bytes": s.model.kv.bytes(),
            "copied_bytes_load": s.copied_load.to_device + s.copied_load.to_host,
            "copied_bytes_per_token": per_token,
            "argmax_on_device": on_device,
        });
        writeln!(out, "{j}")?;
    } else {
        eprintln!(
            "[{} prompt tokens, {} generated | load {:.0} ms | prefill {:.1} tok/s | decode {:.1} tok/s | {} {} x{}]",
            ids.len(),
            generated.len(),
            s.load_ms,
            prefill_tok_s,
            decode_tok_s,
            s.model.backend.name(),
            s.model.backend.isa(),
            s.threads
        );
    }
    Ok(())
}

/// Peak resident set size of this process (`VmHWM`), where the OS reports it.
fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// Where generated tokens go: the list, the text, and (streaming) stdout.
struct TextOut<'a> {
    generated: Vec<u32>,
    dec: Option<StreamDecoder>,
    text: String,
    out: std::io::StdoutLock<'a>,
    stream: bool,
    io_err: Option<std::io::Error>,
}

impl TextOut<'_> {
    /// Keeps token `t` and streams its text; false when stdout failed (generation stops,
    /// the error is reported after).
    fn push(&mut self, tok: Option<&Tokenizer>, t: u32) -> antigravity_core::Result<bool> {
        self.generated.push(t);
        if let (Some(d), Some(tok)) = (self.dec.as_mut(), tok) {
            let piece = d.step(tok, t)?;
            if !piece.is_empty() {
                self.text.push_str(piece);
                if self.stream {
                    if let Err(e) = self.out.write_all(piece.as_bytes()).and_then(|_| self.out.flush()) {
                        self.io_err = Some(e);
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }
}
