//! `harness`: Antigravity's command line. `main` is one `match` from subcommand to the
//! function that runs it; each subcommand lives in its own module.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

mod bench;
mod chat;
mod common;
mod evict_kl;
mod fetch;
mod generate;
mod hybrid;
mod logits;
mod oracle;
mod output;
mod perplexity;
mod quantize;
mod report;
mod synth;
mod tokenize;

#[derive(Parser)]
#[command(
    name = "harness",
    version,
    about = "Antigravity: on-device LLM inference — run, check and measure"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark kernels, memory bandwidth and end-to-end decoding; write JSON lines and the report.
    ///
    /// Here `--model` must be a GGUF file, and `--isa auto` times the kernels of every ISA
    /// this CPU has (a name times only that one). Results are appended to
    /// reports/results/ and the report re-rendered (see --out-dir); the run ends with a
    /// summary.
    Bench(bench::BenchArgs),
    /// Re-render every chart and reports/README.md from the result files alone.
    Report(report::ReportArgs),
    /// Generate text from a prompt.
    Generate(generate::GenerateArgs),
    /// Talk with the model: one message per line, its chat template, the KV cache kept
    /// between turns (only each turn's new tokens are fed); /reset, /quit.
    Chat(chat::ChatArgs),
    /// Perplexity of a text: llama-perplexity's chunked method, or streamed through an
    /// eviction policy (--stream --kv-policy P).
    Perplexity(perplexity::PerplexityArgs),
    /// Mean KL and top-1 agreement of each eviction policy against the full cache, on the
    /// oracle's SmolLM2 prompts continued past a small --ctx.
    EvictKl(evict_kl::EvictKlArgs),
    /// Write the logits of every prompt position to a safetensors file.
    Logits(logits::LogitsArgs),
    /// Print the token ids of a prompt.
    Tokenize(tokenize::TokenizeArgs),
    /// Convert a GGUF file or an HF directory into a quantized GGUF file.
    Quantize(quantize::QuantizeArgs),
    /// Compare activations and logits with the stored reference tensors.
    Oracle(oracle::OracleArgs),
    /// Write a GGUF with a real model's architecture and random weights (speed only).
    Synth(synth::SynthArgs),
    /// Download the default model into the cache (if missing) and print its path.
    Fetch,
}

fn main() -> ExitCode {
    let t0 = Instant::now();
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Bench(a) => bench::run(a).map_err(anyhow::Error::from),
        Cmd::Report(a) => report::run(a).map_err(anyhow::Error::from),
        Cmd::Generate(a) => generate::run(a, t0),
        Cmd::Chat(a) => chat::run(a, t0),
        Cmd::Logits(a) => logits::run(a, t0),
        Cmd::Perplexity(a) => perplexity::run(a, t0),
        Cmd::EvictKl(a) => evict_kl::run(a, t0),
        Cmd::Tokenize(a) => tokenize::run(a, t0),
        Cmd::Quantize(a) => quantize::run(a),
        Cmd::Oracle(a) => oracle::run(a),
        Cmd::Synth(a) => synth::run(a),
        Cmd::Fetch => fetch::default_model().map(|p| println!("{}", p.display())),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: a cause whose text the message already
/// holds is left out (the core's I/O error prints its OS error and also hands it on as
/// its source, which `{:#}` would print twice).
fn message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}
