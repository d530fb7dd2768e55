//! What every model-using subcommand shares: the model/backend flags (one struct, one
//! set of defaults) and loading a model with its tokenizer.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use antigravity_core::backend::{Backend, CopiedBytes};
use antigravity_core::chat::ChatTemplate;
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::dtype::DType;
use antigravity_core::gguf::GgufFile;
use antigravity_core::kv_evict::{EvictConfig, KvPolicy};
use antigravity_core::model::{self, Llama, RunOptions};
use antigravity_core::opencl::{OpenClBackend, OpenClOptions};
use antigravity_core::tokenizer::Tokenizer;

/// Where a model runs: the flags every model-running subcommand (`generate`, `logits`,
/// `oracle`, `bench`) shares. Each flag is checked here, by clap as it is parsed, and
/// nowhere else: a bad value is refused the same way whichever subcommand it is given to.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// A `.gguf` file or a Hugging Face directory (config.json + *.safetensors). Default:
    /// SmolLM2-135M-Instruct Q4_1, fetched on first use (and checked: size, sha256).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendArg::Cpu)]
    pub backend: BackendArg,
    /// CPU instruction set: auto, scalar, avx2, avx512, neon, neon-dotprod, neon-i8mm.
    #[arg(long, default_value = "auto", value_parser = parse_isa)]
    pub isa: IsaChoice,
    /// Worker threads (default: all cores).
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub threads: Option<usize>,
}

/// Flags that pick the model, where it runs, and how large its context is.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// In-memory dtype for the weights of an HF directory (converted at load).
    #[arg(long, default_value = "q4_0", value_parser = parse_weights)]
    pub weights: DType,
    /// Context length (KV-cache capacity) in tokens.
    #[arg(long, default_value_t = 2048, value_parser = at_least_one, allow_negative_numbers = true)]
    pub ctx: usize,
    /// KV-cache element type; auto: f16 on the CPU (half the memory of f32), f32 on
    /// OpenCL (which reads f16 and q8_0 too).
    #[arg(long, value_enum, default_value = "auto")]
    pub kv_type: KvTypeArg,
}

/// `--kv-type`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvTypeArg {
    Auto,
    F32,
    F16,
    /// Q8_0 blocks (34 bytes per 32 values), as llama.cpp's `-ctk/-ctv q8_0`.
    #[value(name = "q8_0")]
    Q8_0,
}

impl KvTypeArg {
    /// `None` for auto: the backend's first choice.
    pub fn dtype(self) -> Option<DType> {
        match self {
            KvTypeArg::Auto => None,
            KvTypeArg::F32 => Some(DType::F32),
            KvTypeArg::F16 => Some(DType::F16),
            KvTypeArg::Q8_0 => Some(DType::Q8_0),
        }
    }
}

/// What a full KV cache gives up (`generate`, `perplexity --stream`); the budget is
/// `--ctx`. See core's `kv_evict` and docs/kv-cache.md.
#[derive(Args, Debug, Clone)]
pub struct KvPolicyArgs {
    /// Eviction policy when the cache is full: none (an error), window (recent tokens),
    /// sinks (the first --kv-sinks + recent: StreamingLLM), shift (keep --kv-keep, drop
    /// half the rest: llama.cpp's context shift), h2o (recent half + heavy hitters by
    /// accumulated attention), tova (largest attention of the latest step).
    #[arg(long, default_value = "none", value_parser = parse_policy)]
    pub kv_policy: KvPolicy,
    /// Attention sinks the `sinks` policy keeps at the start of the cache.
    #[arg(long, default_value_t = 4, value_parser = non_negative, allow_negative_numbers = true)]
    pub kv_sinks: usize,
    /// Tokens the `shift` policy keeps at the start of the cache (llama.cpp's --keep).
    #[arg(long, default_value_t = 0, value_parser = non_negative, allow_negative_numbers = true)]
    pub kv_keep: usize,
    /// Fewest slots one eviction frees, so its cost (compaction, re-rotation, the score
    /// read-back) is paid once per N decoded tokens; 1 evicts exactly what each step
    /// needs. Default: --ctx / 16 (at least 1).
    #[arg(long, value_parser = at_least_one, allow_negative_numbers = true)]
    pub kv_evict_block: Option<usize>,
}

impl KvPolicyArgs {
    pub fn config(&self) -> EvictConfig {
        EvictConfig {
            policy: self.kv_policy,
            sinks: self.kv_sinks,
            keep: self.kv_keep,
            // 0: the automatic block (EvictConfig::block_slots).
            block: self.kv_evict_block.unwrap_or(0),
        }
    }
}

fn parse_policy(s: &str) -> Result<KvPolicy, String> {
    KvPolicy::parse(s).ok_or_else(|| {
        let names: Vec<&str> = KvPolicy::ALL.iter().map(|p| p.name()).collect();
        format!("`{s}` is not one of {}", names.join(", "))
    })
}

fn parse_weights(s: &str) -> Result<DType, String> {
    match DType::parse(s) {
        Some(t @ (DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::F16 | DType::F32)) => Ok(t),
        _ => Err(format!("`{s}` is not one of q4_0, q4_1, q8_0, f16, f32")),
    }
}

/// `--backend`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    Cpu,
    Opencl,
    /// The CPU at once, the OpenCL device when it is ready and faster (`generate`,
    /// `logits`, `perplexity`, `bench`; see docs/hybrid.md).
    Hybrid,
}

impl BackendArg {
    pub fn name(self) -> &'static str {
        match self {
            BackendArg::Cpu => "cpu",
            BackendArg::Opencl => "opencl",
            BackendArg::Hybrid => "hybrid",
        }
    }
}

/// `--isa`: `auto` (`None`: the best this CPU has) or one named ISA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsaChoice(pub Option<Isa>);

fn parse_isa(s: &str) -> Result<IsaChoice, String> {
    if s == "auto" {
        return Ok(IsaChoice(None));
    }
    let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
    Isa::parse(s)
        .map(|i| IsaChoice(Some(i)))
        .ok_or_else(|| format!("unknown ISA (one of auto, {})", names.join(", ")))
}

/// A count of at least `min`. Negative numbers reach this parser (the count flags allow
/// them), so the message says what is wrong rather than clap's "unexpected argument".
fn count(s: &str, min: i64) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= min => usize::try_from(n).map_err(|_| format!("{n} is too large")),
        Ok(n) if min == 0 => Err(format!("must be 0 or more, got {n}")),
        Ok(n) => Err(format!("must be at least {min}, got {n}")),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// A count that must be at least 1 (`--threads`, `--ctx`, `--batch`).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    count(s, 1)
}

/// A count that may be 0 (`--max-tokens`, `--top-k`).
pub fn non_negative(s: &str) -> Result<usize, String> {
    count(s, 0)
}

/// A loaded model, ready to run, on backend `B`.
pub struct Session<B: Backend> {
    pub model: Llama<B>,
    pub tokenizer: Option<Tokenizer>,
    pub chat: Option<ChatTemplate>,
    pub path: PathBuf,
    pub load_ms: f64,
    pub threads: usize,
    pub synthetic: bool,
    /// Host→device bytes copied while loading (weights on a discrete GPU).
    pub copied_load: CopiedBytes,
    /// The prompt's ids, when the job gave a [`Prompt`] (encoded before the weights
    /// loaded; the tokenizer's encoder is then released).
    pub prompt: Option<Vec<u32>>,
}

/// A job's prompt: `--prompt` text (through the chat template with `--chat`) or
/// `--prompt-ids`.
#[derive(Clone, Copy, Debug)]
pub struct Prompt<'a> {
    pub text: Option<&'a str>,
    pub ids: Option<&'a str>,
    pub chat: bool,
}

/// Work to do with a loaded model, whatever its backend (`run` is generic, so one body
/// serves the CPU and OpenCL).
pub trait Job {
    type Out;
    fn run<B: Backend>(self, s: Session<B>) -> Result<Self::Out>;
    /// The job's only prompt, for a job that encodes no other text: it is encoded before
    /// the weights load (into [`Session::prompt`]) and the tokenizer's encoder is freed —
    /// its tables (~16 MB for a 49k vocabulary) would otherwise stay resident beside the
    /// weights for the whole run (`Tokenizer::release_encoder`).
    fn prompt(&self) -> Option<Prompt<'_>> {
        None
    }
}

impl RunArgs {
    pub fn thread_count(&self) -> usize {
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The ISA `--isa` forces, after checking that this CPU (and build) has it; `None`
    /// for `auto`.
    pub fn forced_isa(&self) -> Result<Option<Isa>> {
        match self.isa.0 {
            Some(isa) if CpuBackend::with_isa(isa).is_none() => {
                bail!("this CPU (or build) does not support --isa {}", isa.name())
            }
            other => Ok(other),
        }
    }

    /// Builds the CPU backend these flags ask for.
    pub fn cpu_backend(&self) -> Result<CpuBackend> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if self.thread_count() > cores {
            eprintln!(
                "warning: --threads {} is more than the {cores} cores this process may use: the extra threads share cores and usually make every op slower",
                self.thread_count()
            );
        }
        let be = match self.forced_isa()? {
            None => CpuBackend::new(),
            Some(isa) => CpuBackend::with_isa(isa).context("checked by forced_isa")?,
        };
        Ok(crate::common::set_threads(be, self.thread_count()))
    }
}

impl ModelArgs {
    /// Builds the backend `--backend` names, loads the model on it and runs `job`.
    pub fn with_session<J: Job>(&self, opts: RunOptions, t0: Instant, job: J) -> Result<J::Out> {
        match self.run.backend {
            BackendArg::Cpu => {
                let s = self.load(self.run.cpu_backend()?, opts, t0, job.prompt())?;
                job.run(s)
            }
            BackendArg::Opencl => {
                let s = self.load(opencl_backend()?, opts, t0, job.prompt())?;
                job.run(s)
            }
            BackendArg::Hybrid => bail!(
                "--backend hybrid runs `generate`, `logits`, `perplexity` and `bench` (`bench --crossover` measures its table); use cpu or opencl here"
            ),
        }
    }

    /// Loads the model (fetching the default one if needed) with its tokenizer onto `be`.
    /// Given the job's only `prompt`, encodes it between the tokenizer's build and the
    /// weights' load and then frees the encoder (see [`Job::prompt`]).
    pub fn load<B: Backend>(
        &self,
        be: B,
        opts: RunOptions,
        t0: Instant,
        prompt: Option<Prompt<'_>>,
    ) -> Result<Session<B>> {
        let path = crate::fetch::resolve(self.run.model.as_deref())?;
        // Encodes the prompt and frees the encoder, before any weight is read.
        let encode = |tok: &mut Option<Tokenizer>, chat: Option<&ChatTemplate>| -> Result<Option<Vec<u32>>> {
            let Some(p) = prompt else { return Ok(None) };
            let ids = encode_prompt(tok.as_ref(), chat, &path, p)?;
            if let Some(t) = tok.as_mut() {
                t.release_encoder();
                return_free_heap();
            }
            Ok(Some(ids))
        };
        let threads = if be.name() == "cpu" { self.run.thread_count() } else { 1 };
        let (cfg, weights, tokenizer, chat, synthetic, prompt_ids) = if path.is_dir() {
            let tj = path.join("tokenizer.json");
            let mut tok = if tj.exists() {
                Some(Tokenizer::from_file(&tj)?)
            } else {
                None
            };
            let chat = match &tok {
                Some(t) => ChatTemplate::for_tokenizer(t.chat_template(), t)?,
                None => None,
            };
            let ids = encode(&mut tok, chat.as_ref())?;
            let (cfg, w) = model::hf::load(&path, &be, self.weights)?;
            (cfg, w, tok, chat, false, ids)
        } else {
            let f = GgufFile::open(&path)?;
            // The tokenizer first: its build's transient heap (the GGUF vocabulary
            // converted through JSON values, ~60 MB for a 49k vocabulary) is then free
            // for the weights the CPU backend copies while repacking, instead of staying
            // resident beside them (measured: SmolLM2 peak RSS 164 → 161 MB, Q4_1).
            let mut tok = Tokenizer::from_gguf(&f)?;
            let chat = match &tok {
                Some(t) => ChatTemplate::for_tokenizer(f.get_str("tokenizer.chat_template")?, t)?,
                None => None,
            };
            let ids = encode(&mut tok, chat.as_ref())?;
            let (cfg, w) = model::gguf::load(&f, &be)?;
            let synthetic = f.get_str("general.name")?.is_some_and(|n| n.contains("synthetic"));
            (cfg, w, tok, chat, synthetic, ids)
        };
        if synthetic {
            eprintln!("synthetic weights: speed only");
        }
        if opts.ctx > cfg.max_ctx {
            eprintln!(
                "warning: --ctx {} is longer than the {} positions this model was trained for; quality past them is not what the model was made for",
                opts.ctx, cfg.max_ctx
            );
        }
        let copied_load = be.copied_bytes();
        let model = Llama::new(cfg, weights, be, opts)?;
        let load_ms = t0.elapsed().as_secs_f64() * 1e3;
        Ok(Session {
            model,
            tokenizer,
            chat,
            path,
            load_ms,
            threads,
            synthetic,
            copied_load,
            prompt: prompt_ids,
        })
    }
}

/// Gives the C heap's free pages back to the system (glibc `malloc_trim`). Freed memory
/// in the middle of the heap (the encoder's tables, released above, sit below the
/// vocabulary's byte table built after them) otherwise stays resident: measured on
/// SmolLM2 Q4_1 (pp512), peak RSS ≈ 122 MiB without this call and ≈ 118 MiB with it. Elsewhere a
/// no-op.
fn return_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it is
        // thread-safe and touches no live allocation.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// The OpenCL backend (device from `ANTIGRAVITY_OPENCL_DEVICE`, profiling from
/// `ANTIGRAVITY_OPENCL_PROFILE=1`), or a clear error saying why there is none.
pub fn opencl_backend() -> Result<OpenClBackend> {
    let mut o = OpenClOptions::from_env();
    o.log = true;
    OpenClBackend::new(o).context("--backend opencl: no usable OpenCL device (use --backend cpu)")
}

/// Applies the thread count to a CPU backend.
pub fn set_threads(be: CpuBackend, threads: usize) -> CpuBackend {
    if be.threads() == threads {
        return be;
    }
    CpuBackend::with_threads(be.kernels().isa, threads).unwrap_or(be)
}

/// Parses `--prompt-ids 1,2,3`.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            t.trim()
                .parse::<u32>()
                .with_context(|| format!("`{t}` in --prompt-ids is not a token id"))
        })
        .collect()
}

/// Token ids of the prompt: `--prompt-ids`, or `--prompt` through the tokenizer (and the
/// chat template with `--chat`).
pub fn prompt_ids<B: Backend>(s: &Session<B>, prompt: Option<&str>, ids: Option<&str>, chat: bool) -> Result<Vec<u32>> {
    let p = Prompt {
        text: prompt,
        ids,
        chat,
    };
    encode_prompt(s.tokenizer.as_ref(), s.chat.as_ref(), &s.path, p)
}

/// [`prompt_ids`] from the parts a session is made of (`path` names the model in errors).
pub fn encode_prompt(
    tok: Option<&Tokenizer>,
    chat_template: Option<&ChatTemplate>,
    path: &std::path::Path,
    p: Prompt<'_>,
) -> Result<Vec<u32>> {
    let Prompt {
        text: prompt,
        ids,
        chat,
    } = p;
    match (prompt, ids) {
        (_, Some(ids)) => parse_ids(ids),
        (Some(text), None) => {
            let tok = tok.with_context(|| format!("{} has no tokenizer; use --prompt-ids", path.display()))?;
            if chat {
                let t = chat_template.with_context(|| {
                    format!(
                        "{} has no chat template (none in the file, and not a ChatML or Llama 3 vocabulary)",
                        path.display()
                    )
                })?;
                return Ok(tok.encode_with(&t.render_user(text)?, !t.bos_in_text())?);
            }
            Ok(tok.encode(text)?)
        }
        (None, None) => bail!("give --prompt TEXT or --prompt-ids LIST"),
    }
}
