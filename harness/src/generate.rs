//! `harness generate`: prefill the prompt, then sample token by token, streaming text.

use std::io::Write;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use serde_json::{json, Value};

use antigravity_core::backend::{Backend, CopiedBytes};
use antigravity_core::model::RunOptions;
use antigravity_core::sampling::{Sampler, SamplerConfig};
use antigravity_core::tokenizer::{StreamDecoder, Tokenizer};

use crate::common::{
    at_least_one, non_negative, prompt_ids, BackendArg, Job, KvPolicyArgs, ModelArgs, Prompt, Session,
};
use crate::hybrid::{Engine, HybridFlags};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub policy: KvPolicyArgs,
    /// Prompt text.
    #[arg(long, conflicts_with = "prompt_ids")]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids.
    #[arg(long)]
    pub prompt_ids: Option<String>,
    /// Wrap the prompt as one user message in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Most tokens to generate (fewer when an end-of-sequence token comes or the context
    /// fills; the reason is printed as `stop_reason`).
    #[arg(long, default_value_t = 128, value_parser = non_negative, allow_negative_numbers = true)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print one JSON object (the last line of stdout) with ids, text and timings.
    #[arg(long)]
    pub json: bool,
    /// Most prompt tokens per forward call (longer prompts are prefilled in chunks of
    /// this size). Default: 128 on the CPU (its GEMM works in 16-token tiles; measured, a
    /// 512-token prompt prefills as fast in chunks of 128 as of 512, with 16 MB less
    /// workspace, and 8 % slower in chunks of 64), 512 on OpenCL (larger chunks keep a
    /// GPU busier).
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub batch: Option<usize>,
    #[command(flatten)]
    pub hybrid: HybridFlags,
}

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced an end-of-sequence token (not kept in the output).
    Eos,
    /// `--max-tokens` tokens were generated.
    MaxTokens,
    /// The KV cache is full: the next token has no slot (raise `--ctx`, or evict:
    /// `--kv-policy`).
    ContextFull,
}

impl StopReason {
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
        }
    }
}

/// The sampling flags (`generate`, `chat`).
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0, value_parser = non_negative, allow_negative_numbers = true)]
    pub top_k: usize,
    /// 1.0 = off.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub top_p: f32,
    /// 0.0 = off.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_p: f32,
    /// 1.0 = off.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerConfig::default()
        }
    }

    /// Plain greedy decoding: the backend can pick the argmax itself (4 bytes read back
    /// a step instead of the logits row; same rule as the greedy sampler: NaN never
    /// wins, ties go to the lowest id).
    pub fn on_device(&self) -> bool {
        self.temperature == 0.0 && self.repeat_penalty == 1.0
    }
}

pub fn run(a: &GenerateArgs, t0: Instant) -> Result<()> {
    // Sampling flags are checked before the model loads, so a typo costs no load time.
    a.sampling.config().validate()?;
    let backend = a.model.run.backend;
    if backend != BackendArg::Hybrid && (!a.hybrid.switch_at.is_empty() || a.hybrid.crossover.is_some()) {
        bail!("--switch-at and --crossover are for --backend hybrid");
    }
    let cfg = a.policy.config();
    // A policy makes room for at most `max_insert` new tokens at once.
    let batch = |cpu| {
        a.batch
            .unwrap_or(if cpu { 128 } else { 512 })
            .min(a.model.ctx)
            .min(cfg.max_insert(a.model.ctx).max(1))
    };
    if backend == BackendArg::Hybrid {
        // Each side prefills in its own chunk size (the CPU's and the device's defaults).
        let (cpu_b, gpu_b) = (batch(true), batch(false));
        let prompt = |s: &Session<_>| prompt_ids(s, a.prompt.as_deref(), a.prompt_ids.as_deref(), a.chat);
        let hint = crate::hybrid::prompt_hint(a.prompt.as_deref(), a.prompt_ids.as_deref());
        let job = crate::hybrid::HybridJob {
            work: crate::hybrid::Work::Generate {
                prompt: hint,
                gen: a.max_tokens,
            },
            cpu_batch: cpu_b,
            gpu_batch: gpu_b,
            all_logits: false,
            policy: cfg,
        };
        let mut h = crate::hybrid::load(&a.model, &a.hybrid, job, t0, prompt)?;
        let meta = Meta {
            tokenizer: h.tokenizer.as_ref(),
            path: &h.path,
            load_ms: h.load_ms,
            threads: h.threads,
            synthetic: h.synthetic,
            copied_load: h.copied_load,
        };
        return generate(a, &mut h.hybrid, std::mem::take(&mut h.ids), &meta, t0);
    }
    let opts = RunOptions {
        ctx: a.model.ctx,
        max_batch: batch(backend == BackendArg::Cpu),
        all_logits: false,
        kv_type: a.model.kv_type.dtype(),
    };
    a.model.with_session(opts, t0, Gen(a, t0))
}

struct Gen<'a>(&'a GenerateArgs, Instant);

impl Job for Gen<'_> {
    type Out = ();
    fn prompt(&self) -> Option<Prompt<'_>> {
        let a = self.0;
        Some(Prompt {
            text: a.prompt.as_deref(),
            ids: a.prompt_ids.as_deref(),
            chat: a.chat,
        })
    }
    fn run<B: Backend>(self, mut s: Session<B>) -> Result<()> {
        let a = self.0;
        // Encoded before the weights loaded (Job::prompt), the encoder then freed.
        let ids = match s.prompt.take() {
            Some(ids) => ids,
            None => prompt_ids(&s, a.prompt.as_deref(), a.prompt_ids.as_deref(), a.chat)?,
        };
        s.model.set_kv_policy(a.policy.config())?;
        let meta = Meta {
            tokenizer: s.tokenizer.as_ref(),
            path: &s.path,
            load_ms: s.load_ms,
            threads: s.threads,
            synthetic: s.synthetic,
            copied_load: s.copied_load,
        };
        generate(a, &mut s.model, ids, &meta, self.1)
    }
}

/// What a run reports about its model besides the model itself.
struct Meta<'a> {
    tokenizer: Option<&'a Tokenizer>,
    path: &'a std::path::Path,
    load_ms: f64,
    threads: usize,
    synthetic: bool,
    copied_load: CopiedBytes,
}

fn generate<E: Engine>(a: &GenerateArgs, e: &mut E, ids: Vec<u32>, s: &Meta<'_>, t0: Instant) -> Result<()> {
    if ids.is_empty() {
        bail!("the prompt has no tokens");
    }
    let ctx = e.capacity();
    let cfg = a.policy.config();
    let evicting = cfg.policy != antigravity_core::kv_evict::KvPolicy::None;
    if !evicting && ids.len() >= ctx {
        bail!(
            "the prompt has {} tokens but the context holds {ctx} (raise --ctx)",
            ids.len()
        );
    }
    let vocab = e.vocab();
    let mut sampler = Sampler::new(a.sampling.config(), vocab)?;
    let eos: Vec<u32> = match s.tokenizer {
        Some(t) => t.eos_ids().to_vec(),
        None => e.eos().into_iter().collect(),
    };
    let mut history: Vec<u32> = Vec::with_capacity(ids.len() + a.max_tokens);
    history.extend_from_slice(&ids);
    let mut logits = vec![0f32; vocab];
    let mut text_out = TextOut {
        generated: Vec::with_capacity(a.max_tokens),
        dec: s.tokenizer.map(|t| t.decoder()),
        text: String::new(),
        out: std::io::stdout().lock(),
        stream: !a.json,
        io_err: None,
        at: Vec::with_capacity(a.max_tokens),
    };

    let on_device = a.sampling.on_device();
    let mut device_next = None;
    // The last token needs no cache slot (nothing runs on it), so a context of `ctx`
    // holds the prompt and `ctx - prompt + 1` generated tokens.
    let room = if evicting { usize::MAX } else { ctx - ids.len() + 1 };
    let budget = a.max_tokens.min(room);
    e.plan(budget);
    let copied0 = e.copied();
    let tp = Instant::now();
    if on_device {
        device_next = Some(e.forward_argmax(&ids)?);
    } else {
        logits.copy_from_slice(e.forward(&ids)?);
    }
    let prefill_s = tp.elapsed().as_secs_f64();
    let td = Instant::now();
    let tokenizer = s.tokenizer;
    let mut saw_eos = false;
    let mut is_end = |t: u32| {
        let end = !a.ignore_eos && eos.contains(&t);
        saw_eos |= end;
        end
    };
    if let Some(first) = device_next {
        // Greedy on the device: each pass is queued before the host sees the token of
        // the pass before (Llama::decode_greedy; the embedding is read on the device).
        let mut take = |t: u32| -> antigravity_core::Result<bool> { Ok(!is_end(t) && text_out.push(tokenizer, t)?) };
        if budget > 0 && take(first)? && budget > 1 {
            e.decode_greedy(first, budget - 1, &mut take)?;
        }
    } else {
        for step in 0..budget {
            let next = sampler.sample(&logits, &history)?;
            if is_end(next) || !text_out.push(tokenizer, next)? {
                break;
            }
            history.push(next);
            if step + 1 < budget {
                logits.copy_from_slice(e.forward(&[next])?);
            }
        }
    }
    if let Some(err) = text_out.io_err.take() {
        return Err(err.into());
    }
    let TextOut {
        generated,
        text,
        mut out,
        at,
        ..
    } = text_out;
    let stop = if saw_eos {
        StopReason::Eos
    } else if generated.len() >= a.max_tokens {
        StopReason::MaxTokens
    } else {
        StopReason::ContextFull
    };
    let decode_s = td.elapsed().as_secs_f64();
    e.synchronize()?;
    if !a.json {
        writeln!(out)?;
    }
    let copied1 = e.copied();
    let n_steps = (generated.len().max(1)) as u64; // forward calls after the prefill, plus the prefill's logits
    let per_token = (copied1.to_device + copied1.to_host - copied0.to_device - copied0.to_host) / n_steps;
    let speed = DecodeSpeed::from_arrivals(td, &at, decode_s);
    let prefill_tok_s = ids.len() as f64 / prefill_s;
    // Time to first token: from process start to the first generated token's arrival.
    let ttft_ms = at.first().map(|t| (*t - t0).as_secs_f64() * 1e3);
    let total_ms = t0.elapsed().as_secs_f64() * 1e3;
    if a.json {
        let mut j = json!({
            "model": a.model.run.model.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| s.path.display().to_string()),
            "backend": e.name(),
            "isa": e.isa(),
            "threads": s.threads,
            "prompt_ids": ids,
            "generated_ids": generated,
            "text": text,
            "load_ms": s.load_ms,
            "prefill_tok_s": prefill_tok_s,
            "decode_tok_s": speed.tok_s,
            "decode_steps_timed": speed.steps,
            "decode_includes_first_step": speed.includes_first,
            "decode_first_step_ms": speed.first_step_ms,
            "ttft_ms": ttft_ms,
            "total_ms": total_ms,
            "stop_reason": stop.name(),
            "synthetic": s.synthetic,
            "peak_rss_bytes": peak_rss_bytes(),
            "kv_cache_bytes": e.kv_bytes(),
            "kv_type": e.kv_type(),
            "kv_bytes_per_token": e.kv_bytes_per_token(),
            "kv_policy": cfg.policy.name(),
            "kv_evict_block": cfg.block_slots(ctx),
            "kv_evicted": e.kv_evicted(),
            "copied_bytes_load": s.copied_load.to_device + s.copied_load.to_host,
            "copied_bytes_per_token": per_token,
            "argmax_on_device": on_device,
        });
        if let (Some(Value::Object(extra)), Value::Object(m)) = (e.extra_json(), &mut j) {
            m.extend(extra);
        }
        writeln!(out, "{j}")?;
    } else {
        eprintln!(
            "[{} prompt tokens, {} generated, stopped: {} | load {:.0} ms | prefill {:.1} tok/s | decode {} | {} {} x{}]",
            ids.len(),
            generated.len(),
            stop.name(),
            s.load_ms,
            prefill_tok_s,
            speed.label(),
            e.name(),
            e.isa(),
            s.threads
        );
        if let Some(Value::Object(extra)) = e.extra_json() {
            if let Some(Value::Array(sw)) = extra.get("switches") {
                for w in sw {
                    eprintln!("[switch: {w}]");
                }
            }
        }
    }
    if stop == StopReason::ContextFull {
        eprintln!(
            "stopped: context full after {} generated tokens (--ctx {ctx}, prompt {} tokens); raise --ctx, or let a policy evict (--kv-policy sinks|window|shift|h2o|tova)",
            generated.len(),
            ids.len()
        );
    }
    Ok(())
}

/// Decode speed as a person should read it: the first decode step (the first forward
/// pass after the prefill) pays one-time costs — cold caches, first touch of the KV
/// cache pages, a GPU's queue warming — so, as the bench does, it is left out when
/// there are steps after it; a run too short for that says the figure includes it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct DecodeSpeed {
    tok_s: f64,
    /// Forward passes the figure covers.
    steps: usize,
    includes_first: bool,
    first_step_ms: Option<f64>,
}

impl DecodeSpeed {
    /// `at[i]`: when generated token `i` reached the host. Token 0 comes from the prefill's
    /// logits; token `i ≥ 1` from decode step `i`. `t0` is the end of the prefill and
    /// `total_s` the whole decode time (the fallback when tokens were not timed).
    fn from_arrivals(t0: Instant, at: &[Instant], total_s: f64) -> DecodeSpeed {
        let n = at.len();
        let first_step_ms = (n >= 2).then(|| (at[1] - at[0]).as_secs_f64() * 1e3);
        if n >= 3 {
            let s = (at[n - 1] - at[1]).as_secs_f64();
            let steps = n - 2;
            return DecodeSpeed {
                tok_s: steps as f64 / s.max(1e-9),
                steps,
                includes_first: false,
                first_step_ms,
            };
        }
        let steps = n.saturating_sub(1);
        let s = if n >= 2 {
            (at[n - 1] - t0).as_secs_f64()
        } else {
            total_s
        };
        DecodeSpeed {
            tok_s: if steps > 0 { steps as f64 / s.max(1e-9) } else { 0.0 },
            steps,
            includes_first: steps > 0,
            first_step_ms,
        }
    }

    fn label(&self) -> String {
        match (self.steps, self.includes_first) {
            (0, _) => "n/a (no decode step)".to_string(),
            (n, true) => format!(
                "{:.1} tok/s ({n} step{}, incl. the warm-up step)",
                self.tok_s,
                if n == 1 { "" } else { "s" }
            ),
            (n, false) => format!(
                "{:.1} tok/s ({n} steps after the first, which took {:.1} ms)",
                self.tok_s,
                self.first_step_ms.unwrap_or(0.0)
            ),
        }
    }
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
    /// When each generated token reached the host.
    at: Vec<Instant>,
}

impl TextOut<'_> {
    /// Keeps token `t` and streams its text; false when stdout failed (generation stops,
    /// the error is reported after).
    fn push(&mut self, tok: Option<&Tokenizer>, t: u32) -> antigravity_core::Result<bool> {
        self.generated.push(t);
        self.at.push(Instant::now());
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
