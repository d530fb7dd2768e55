//! `harness chat`: a conversation at the terminal (or over a pipe), one user turn per
//! line, the model's own chat template, and the KV cache kept from turn to turn.
//!
//! **What a turn feeds.** Each turn renders the whole conversation with the template
//! (system, every user and assistant message, the generation prompt) and encodes it.
//! The cache already holds the tokens fed since the last reset; when they are a prefix
//! of the new encoding only the rest is fed (usually the end of the last reply, the
//! end-of-turn marker and the new message), so a long conversation costs each turn only
//! its new tokens. When they are not a prefix (a template that rewrites earlier turns,
//! such as one that trims the reply, or a reply whose text encodes to other tokens than
//! the model produced) the cache is cleared and the whole conversation fed again. The
//! model therefore always sees exactly `encode(render(conversation))`, the tokens a
//! one-shot `generate --prompt-ids` of the same conversation would see; `--json` prints
//! them per turn so a test can check that (`harness/tests/cli.rs`).
//!
//! **Which tokens are in the cache.** A reply's tokens are fed one by one as they are
//! produced, except the last one produced (the end-of-turn token, or the last allowed by
//! `--max-tokens`): nothing has run on it yet. Its text, if any, is part of the reply and
//! comes back through the next turn's rendering.
//!
//! **A full cache.** Without `--kv-policy` a turn whose conversation does not fit in
//! `--ctx` is refused with a message (the conversation is kept; `/reset` starts over);
//! a reply that reaches the end of the context stops with `context_full`. With a policy
//! the cache evicts as in `generate`, and the prefix test covers every token fed, evicted
//! ones included.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use antigravity_core::backend::Backend;
use antigravity_core::chat::{ChatTemplate, Message};
use antigravity_core::kv_evict::KvPolicy;
use antigravity_core::model::{Llama, RunOptions};
use antigravity_core::sampling::Sampler;
use antigravity_core::tokenizer::Tokenizer;

use crate::common::{at_least_one, non_negative, Job, KvPolicyArgs, ModelArgs, Session};
use crate::generate::{SamplingArgs, StopReason};

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub policy: KvPolicyArgs,
    /// A system message put before the conversation (the template's default otherwise).
    #[arg(long)]
    pub system: Option<String>,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 512, value_parser = non_negative, allow_negative_numbers = true)]
    pub max_tokens: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// One JSON object per turn on stdout (ids, text, timings, tokens reused from the
    /// cache) instead of the streamed reply.
    #[arg(long)]
    pub json: bool,
    /// Most prompt tokens per forward call (default: 128 on the CPU, 512 on OpenCL).
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub batch: Option<usize>,
}

const HELP: &str = "one line per message; /reset forgets the conversation, /quit (or end of input) ends";

pub fn run(a: &ChatArgs, t0: Instant) -> Result<()> {
    a.sampling.config().validate()?;
    let cfg = a.policy.config();
    let cpu = a.model.run.backend == crate::common::BackendArg::Cpu;
    let opts = RunOptions {
        ctx: a.model.ctx,
        max_batch: a
            .batch
            .unwrap_or(if cpu { 128 } else { 512 })
            .min(a.model.ctx)
            .min(cfg.max_insert(a.model.ctx).max(1)),
        all_logits: false,
        kv_type: a.model.kv_type.dtype(),
    };
    a.model.with_session(opts, t0, Chat(a))
}

struct Chat<'a>(&'a ChatArgs);

impl Job for Chat<'_> {
    type Out = ();
    fn run<B: Backend>(self, mut s: Session<B>) -> Result<()> {
        let a = self.0;
        let path = s.path.display().to_string();
        let tok = s
            .tokenizer
            .take()
            .with_context(|| format!("{path} has no tokenizer: chat needs one"))?;
        let template = s.chat.take().with_context(|| {
            format!("{path} has no chat template (none in the file, and not a ChatML or Llama 3 vocabulary)")
        })?;
        s.model.set_kv_policy(a.policy.config())?;
        let mut conv = Conversation::new(a, &tok, &template, &mut s.model)?;
        let interactive = std::io::stdin().is_terminal() && !a.json;
        if interactive {
            eprintln!(
                "[{} on {} {} x{} | context {} tokens | {HELP}]",
                s.path
                    .file_name()
                    .map_or(path.clone(), |n| n.to_string_lossy().into_owned()),
                conv.model.backend.name(),
                conv.model.backend.isa(),
                s.threads,
                conv.model.kv.capacity()
            );
        }
        let mut failed = 0usize;
        let mut line = String::new();
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        loop {
            if interactive {
                eprint!("> ");
                std::io::stderr().flush()?;
            }
            line.clear();
            if input.read_line(&mut line)? == 0 {
                break;
            }
            let msg = line.trim_end_matches(['\n', '\r']);
            match msg.trim() {
                "" => continue,
                "/quit" | "/exit" => break,
                "/reset" => {
                    conv.reset();
                    if interactive {
                        eprintln!("[conversation forgotten]");
                    }
                    continue;
                }
                "/help" => {
                    eprintln!("[{HELP}]");
                    continue;
                }
                _ => {}
            }
            if let Err(e) = conv.turn(msg) {
                // The turn is dropped; the conversation before it stays.
                eprintln!("error: {e:#}");
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} turn(s) failed (see above)");
        }
        Ok(())
    }
}

/// The conversation and what the cache holds of it.
struct Conversation<'a, B: Backend> {
    a: &'a ChatArgs,
    tok: &'a Tokenizer,
    template: &'a ChatTemplate,
    model: &'a mut Llama<B>,
    sampler: Sampler,
    eos: Vec<u32>,
    /// (role, content) of every message so far, the system message first if given.
    messages: Vec<(&'static str, String)>,
    /// Every token fed since the last reset (evicted ones included).
    fed: Vec<u32>,
    turns: usize,
    logits: Vec<f32>,
}

impl<'a, B: Backend> Conversation<'a, B> {
    fn new(a: &'a ChatArgs, tok: &'a Tokenizer, template: &'a ChatTemplate, model: &'a mut Llama<B>) -> Result<Self> {
        let vocab = model.cfg.vocab;
        let mut c = Conversation {
            a,
            tok,
            template,
            sampler: Sampler::new(a.sampling.config(), vocab)?,
            eos: tok.eos_ids().to_vec(),
            model,
            messages: Vec::new(),
            fed: Vec::new(),
            turns: 0,
            logits: vec![0f32; vocab],
        };
        c.reset();
        Ok(c)
    }

    fn reset(&mut self) {
        self.messages.clear();
        if let Some(sys) = &self.a.system {
            self.messages.push(("system", sys.clone()));
        }
        self.forget_cache();
    }

    fn forget_cache(&mut self) {
        self.model.reset();
        self.fed.clear();
    }

    fn evicting(&self) -> bool {
        self.model.kv.policy().policy != KvPolicy::None
    }

    /// The conversation's tokens with the generation prompt appended.
    fn encode(&self) -> Result<Vec<u32>> {
        let msgs: Vec<Message<'_>> = self
            .messages
            .iter()
            .map(|(role, content)| Message {
                role,
                content: content.as_str(),
            })
            .collect();
        let text = self.template.render(&msgs, true)?;
        Ok(self.tok.encode_with(&text, !self.template.bos_in_text())?)
    }

    /// One user message and the model's reply.
    fn turn(&mut self, user: &str) -> Result<()> {
        self.messages.push(("user", user.to_string()));
        let r = self.reply();
        if r.is_err() {
            self.messages.pop();
        }
        r
    }

    fn reply(&mut self) -> Result<()> {
        let a = self.a;
        let ids = self.encode()?;
        let ctx = self.model.kv.capacity();
        if !self.evicting() && ids.len() >= ctx {
            bail!(
                "the conversation is {} tokens and the context holds {ctx}: /reset, raise --ctx, or let a policy evict (--kv-policy sinks|window|shift|h2o|tova)",
                ids.len()
            );
        }
        let reused = if ids.starts_with(&self.fed) && ids.len() > self.fed.len() {
            self.fed.len()
        } else {
            self.forget_cache();
            0
        };
        let new = &ids[reused..];
        let room = if self.evicting() {
            usize::MAX
        } else {
            ctx - ids.len() + 1
        };
        let budget = a.max_tokens.min(room);

        let mut out = std::io::stdout().lock();
        let mut dec = self.tok.decoder();
        let mut text = String::new();
        // Every token produced, the stopping one included.
        let mut produced: Vec<u32> = Vec::with_capacity(budget);
        let mut arrivals: Vec<Instant> = Vec::with_capacity(budget);
        let mut stop = StopReason::MaxTokens;
        let mut io_err = None;
        let tp = Instant::now();
        let on_device = a.sampling.on_device();
        let first = if on_device {
            Some(self.model.forward_argmax(new)?)
        } else {
            self.logits.copy_from_slice(self.model.forward(new)?);
            None
        };
        self.fed.extend_from_slice(new);
        let prefill_s = tp.elapsed().as_secs_f64();
        let td = Instant::now();
        {
            let (eos, tok, json) = (&self.eos, self.tok, a.json);
            // Takes token `t`; false to stop (end of turn, or stdout failed).
            let mut take = |t: u32| -> antigravity_core::Result<bool> {
                produced.push(t);
                arrivals.push(Instant::now());
                if eos.contains(&t) {
                    stop = StopReason::Eos;
                    return Ok(false);
                }
                let piece = dec.step(tok, t)?;
                text.push_str(piece);
                if !json && !piece.is_empty() {
                    if let Err(e) = out.write_all(piece.as_bytes()).and_then(|_| out.flush()) {
                        io_err = Some(e);
                        return Ok(false);
                    }
                }
                Ok(true)
            };
            if let Some(first) = first {
                if budget > 0 && take(first)? && budget > 1 {
                    self.model.decode_greedy(first, budget - 1, &mut take)?;
                }
            } else {
                let mut history = Vec::with_capacity(self.fed.len() + budget);
                history.extend_from_slice(&self.fed);
                for step in 0..budget {
                    let next = self.sampler.sample(&self.logits, &history)?;
                    if !take(next)? || step + 1 == budget {
                        break;
                    }
                    history.push(next);
                    self.logits.copy_from_slice(self.model.forward(&[next])?);
                }
            }
        }
        let decode_s = td.elapsed().as_secs_f64();
        // Every produced token but the last ran through the model.
        if let Some((_, ran)) = produced.split_last() {
            self.fed.extend_from_slice(ran);
        }
        if !self.evicting() && self.model.kv.len() != self.fed.len() {
            bail!(
                "internal: the cache holds {} tokens, the conversation fed {}",
                self.model.kv.len(),
                self.fed.len()
            );
        }
        if let Some(e) = io_err {
            return Err(e.into());
        }
        let reply: Vec<u32> = produced.iter().copied().filter(|t| !self.eos.contains(t)).collect();
        if stop == StopReason::MaxTokens && reply.len() < a.max_tokens {
            stop = StopReason::ContextFull;
        }
        self.messages.push(("assistant", text.clone()));
        self.turns += 1;
        // Decode speed over the steps after the first (as `generate` reports it).
        let steps = arrivals.len().saturating_sub(2);
        let decode_tok_s = if steps > 0 {
            steps as f64 / (arrivals[arrivals.len() - 1] - arrivals[1]).as_secs_f64().max(1e-9)
        } else {
            arrivals.len().saturating_sub(1) as f64 / decode_s.max(1e-9)
        };
        let prefill_tok_s = new.len() as f64 / prefill_s.max(1e-9);
        if a.json {
            let j = json!({
                "turn": self.turns,
                "prompt_ids": ids,
                "reused_tokens": reused,
                "new_tokens": new.len(),
                "generated_ids": reply,
                "text": text,
                "stop_reason": stop.name(),
                "prefill_tok_s": prefill_tok_s,
                "decode_tok_s": decode_tok_s,
                "context_used": self.model.kv.len(),
                "ctx": ctx,
                "kv_evicted": self.model.kv.evicted(),
            });
            writeln!(out, "{j}")?;
        } else {
            writeln!(out)?;
            eprintln!(
                "[{} new prompt tokens, {reused} reused | prefill {prefill_tok_s:.1} tok/s | {} tokens at {decode_tok_s:.1} tok/s, stopped: {} | context {}/{ctx}]",
                new.len(),
                reply.len(),
                stop.name(),
                self.model.kv.len(),
            );
        }
        Ok(())
    }
}
