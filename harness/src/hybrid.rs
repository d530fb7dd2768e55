//! `--backend hybrid`: the CPU serves at once; the OpenCL device is built on a background
//! thread when the machine's crossover table says it can pay, and the sequence moves to
//! it at the first token boundary where the table says it is faster from there
//! (`antigravity_core::model::hybrid`). Also `harness bench --crossover`, which measures
//! that table, and the [`Engine`] trait through which `generate` runs a plain model or a
//! hybrid alike.
//!
//! The table lives in `$ANTIGRAVITY_HOME/crossover/<machine>.json`, one entry per model
//! file (speeds depend on the model); `bench --crossover` also writes it, with its
//! measurements, under `reports/results/`. A hybrid run without an entry measures a
//! short one first (and says so), then caches it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::{json, Value};

use antigravity_core::backend::{Backend, CopiedBytes};
use antigravity_core::cpu::CpuBackend;
use antigravity_core::dtype::DType;
use antigravity_core::gguf::GgufFile;
use antigravity_core::kv_evict::EvictConfig;
use antigravity_core::model::hybrid::{Crossover, GpuBind, GpuParts, Hybrid, HybridOptions, Speeds, Switch};
use antigravity_core::model::{self, Llama, RunOptions};
use antigravity_core::opencl::{OpenClBackend, OpenClOptions};

use crate::common::{ModelArgs, Session};

/// The hybrid's flags (`generate`, `logits`, `perplexity`).
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct HybridFlags {
    /// `--backend hybrid`: force a switch to the other backend before the pass producing
    /// each of these token indices (0 = the prompt's pass; comma-separated). The policy
    /// makes no moves of its own then.
    #[arg(long, value_delimiter = ',')]
    pub switch_at: Vec<usize>,
    /// `--backend hybrid`: print the policy's estimates and every decision.
    #[arg(long)]
    pub verbose: bool,
    /// `--backend hybrid`: the crossover table to read (default:
    /// $ANTIGRAVITY_HOME/crossover/<machine>.json, measured at first use if missing).
    #[arg(long, value_name = "FILE")]
    pub crossover: Option<PathBuf>,
}

// --- one interface for generate -----------------------------------------------------

/// What `generate` needs of a model: a plain [`Llama`] or a [`Hybrid`].
pub trait Engine {
    fn forward(&mut self, ids: &[u32]) -> antigravity_core::Result<&[f32]>;
    fn forward_argmax(&mut self, ids: &[u32]) -> antigravity_core::Result<u32>;
    fn decode_greedy(
        &mut self,
        first: u32,
        steps: usize,
        on_token: &mut dyn FnMut(u32) -> antigravity_core::Result<bool>,
    ) -> antigravity_core::Result<usize>;
    fn capacity(&self) -> usize;
    fn vocab(&self) -> usize;
    /// The model's end-of-sequence id (used when there is no tokenizer).
    fn eos(&self) -> Option<u32>;
    /// Host↔device bytes copied so far (both backends for a hybrid).
    fn copied(&self) -> CopiedBytes;
    fn synchronize(&mut self) -> antigravity_core::Result<()>;
    fn name(&self) -> &'static str;
    fn isa(&self) -> String;
    fn kv_bytes(&self) -> usize;
    fn kv_type(&self) -> &'static str;
    fn kv_bytes_per_token(&self) -> usize;
    /// Slots evicted so far by the cache's policy (`--kv-policy`; 0 without one).
    fn kv_evicted(&self) -> u64 {
        0
    }
    /// Chooses the cache's eviction policy (both sides of a hybrid).
    fn set_kv_policy(&mut self, cfg: EvictConfig) -> antigravity_core::Result<()>;
    /// Forgets the sequence (a hybrid keeps the side holding it and its records).
    fn clear_sequence(&mut self);
    /// The tokens the caller means to generate (the hybrid's horizon).
    fn plan(&mut self, _tokens: usize) {}
    /// Extra `--json` fields (the hybrid's switches).
    fn extra_json(&self) -> Option<Value> {
        None
    }
}

impl<B: Backend> Engine for Llama<B> {
    fn forward(&mut self, ids: &[u32]) -> antigravity_core::Result<&[f32]> {
        Llama::forward(self, ids)
    }
    fn forward_argmax(&mut self, ids: &[u32]) -> antigravity_core::Result<u32> {
        Llama::forward_argmax(self, ids)
    }
    fn decode_greedy(
        &mut self,
        first: u32,
        steps: usize,
        on_token: &mut dyn FnMut(u32) -> antigravity_core::Result<bool>,
    ) -> antigravity_core::Result<usize> {
        Llama::decode_greedy(self, first, steps, on_token)
    }
    fn capacity(&self) -> usize {
        self.kv.capacity()
    }
    fn vocab(&self) -> usize {
        self.cfg.vocab
    }
    fn eos(&self) -> Option<u32> {
        self.cfg.eos
    }
    fn copied(&self) -> CopiedBytes {
        self.backend.copied_bytes()
    }
    fn synchronize(&mut self) -> antigravity_core::Result<()> {
        self.backend.synchronize()
    }
    fn name(&self) -> &'static str {
        self.backend.name()
    }
    fn isa(&self) -> String {
        self.backend.isa().to_string()
    }
    fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }
    fn kv_type(&self) -> &'static str {
        self.kv.dtype().name()
    }
    fn kv_bytes_per_token(&self) -> usize {
        self.kv.bytes_per_token()
    }
    fn kv_evicted(&self) -> u64 {
        self.kv.evicted()
    }
    fn set_kv_policy(&mut self, cfg: EvictConfig) -> antigravity_core::Result<()> {
        Llama::set_kv_policy(self, cfg)
    }
    fn clear_sequence(&mut self) {
        self.reset()
    }
}

impl Engine for Hybrid<CpuBackend, OpenClBackend> {
    fn forward(&mut self, ids: &[u32]) -> antigravity_core::Result<&[f32]> {
        Hybrid::forward(self, ids)
    }
    fn forward_argmax(&mut self, ids: &[u32]) -> antigravity_core::Result<u32> {
        Hybrid::forward_argmax(self, ids)
    }
    fn decode_greedy(
        &mut self,
        first: u32,
        steps: usize,
        on_token: &mut dyn FnMut(u32) -> antigravity_core::Result<bool>,
    ) -> antigravity_core::Result<usize> {
        Hybrid::decode_greedy(self, first, steps, on_token)
    }
    fn capacity(&self) -> usize {
        self.cpu_kv_shape().capacity
    }
    fn vocab(&self) -> usize {
        self.cfg().vocab
    }
    fn eos(&self) -> Option<u32> {
        self.cfg().eos
    }
    fn copied(&self) -> CopiedBytes {
        let a = self.cpu_backend().copied_bytes();
        let b = self
            .gpu()
            .map(|g| Backend::copied_bytes(&g.backend))
            .unwrap_or_default();
        CopiedBytes {
            to_device: a.to_device + b.to_device,
            to_host: a.to_host + b.to_host,
        }
    }
    fn synchronize(&mut self) -> antigravity_core::Result<()> {
        self.synchronize_gpu()
    }
    fn name(&self) -> &'static str {
        "hybrid"
    }
    fn isa(&self) -> String {
        match self.gpu() {
            Some(g) => format!("{}+{}", self.cpu_backend().isa(), g.backend.isa()),
            None => self.cpu_backend().isa().to_string(),
        }
    }
    fn kv_bytes(&self) -> usize {
        // A zero-copy hybrid has one cache (the device's wraps the host's memory).
        self.cpu_kv_bytes() + self.gpu().filter(|_| !self.zero_copy()).map_or(0, |g| g.kv.bytes())
    }
    fn kv_type(&self) -> &'static str {
        self.cpu_kv_shape().dtype.name()
    }
    fn kv_bytes_per_token(&self) -> usize {
        self.cpu_kv_bytes_per_token()
    }
    fn plan(&mut self, tokens: usize) {
        Hybrid::plan(self, tokens)
    }
    fn kv_evicted(&self) -> u64 {
        Hybrid::kv_evicted(self)
    }
    fn set_kv_policy(&mut self, cfg: EvictConfig) -> antigravity_core::Result<()> {
        Hybrid::set_kv_policy(self, cfg)
    }
    fn clear_sequence(&mut self) {
        Hybrid::clear_sequence(self)
    }
    fn extra_json(&self) -> Option<Value> {
        let sw: Vec<Value> = self.switches().iter().map(switch_json).collect();
        Some(json!({
            "switches": sw,
            "hybrid_final_backend": self.active_name(),
            "hybrid_gpu_built": self.gpu().is_some() || self.gpu_loading(),
            "hybrid_gpu_ready_ms": self.gpu_ready_ms(),
            "hybrid_note": self.note(),
        }))
    }
}

/// The prompt's length in tokens before the tokenizer loads: exact for ids, about 4
/// characters a token for text (the build decision only).
pub fn prompt_hint(text: Option<&str>, ids: Option<&str>) -> usize {
    match (ids, text) {
        (Some(ids), _) => ids.split(',').filter(|t| !t.trim().is_empty()).count(),
        (None, Some(text)) => text.len() / 4 + 1,
        (None, None) => 1,
    }
}

pub fn switch_json(s: &Switch) -> Value {
    json!({"token": s.token, "from": s.from, "to": s.to, "bytes": s.bytes, "ms": s.ms})
}

// --- loading ----------------------------------------------------------------------------

/// A hybrid run: the CPU session's parts, the prompt, and the hybrid holding the model.
pub struct HybridSession {
    pub hybrid: Hybrid<CpuBackend, OpenClBackend>,
    pub ids: Vec<u32>,
    pub tokenizer: Option<antigravity_core::tokenizer::Tokenizer>,
    pub path: PathBuf,
    pub load_ms: f64,
    pub threads: usize,
    pub synthetic: bool,
    pub copied_load: CopiedBytes,
}

/// What a hybrid job will do, for the build decision before anything loads.
#[derive(Clone, Copy, Debug)]
pub enum Work {
    /// A prompt of about `prompt` tokens, then `gen` generated tokens (`generate`).
    Generate { prompt: usize, gen: usize },
    /// `passes` prefill passes of `chunk` tokens (`logits`, `perplexity`).
    Chunks { chunk: usize, passes: usize },
}

/// How a command runs its hybrid: the work, each side's chunk size, whether every
/// position's logits are wanted, the cache's eviction policy.
#[derive(Clone, Copy, Debug)]
pub struct HybridJob {
    pub work: Work,
    pub cpu_batch: usize,
    pub gpu_batch: usize,
    pub all_logits: bool,
    pub policy: EvictConfig,
}

/// Loads `--backend hybrid`: the table; if it says the OpenCL device can pay for the
/// job's work (or switches are forced), the device's build on a background thread (its
/// model bound and warmed there too); the CPU model meanwhile.
///
/// The cache dtype: when the second backend may be built, both sides use one dtype —
/// `--kv-type` if given (f32, f16 and q8_0 are read by both backends, and the bytes a
/// hand-over copies shrink with the type), else f32 (OpenCL's default: its whole-block
/// decode kernel reads f32) — so a hand-over is a plain copy; when it will not be, the
/// CPU keeps its default (f16).
pub fn load(
    m: &ModelArgs,
    flags: &HybridFlags,
    job: HybridJob,
    t0: Instant,
    prompt: impl FnOnce(&Session<CpuBackend>) -> Result<Vec<u32>>,
) -> Result<HybridSession> {
    let HybridJob {
        work,
        cpu_batch,
        gpu_batch,
        all_logits,
        policy,
    } = job;
    let path = crate::fetch::resolve(m.run.model.as_deref())?;
    let forced = !flags.switch_at.is_empty();
    let table = table(m, flags)?;
    // Decided before the CPU model loads, so the device's build overlaps that load; the
    // prompt's length is `prompt_hint` here (exact for --prompt-ids), exact at the
    // boundaries.
    let (build, why) = if forced {
        (true, "switches forced".to_string())
    } else {
        let what = match work {
            Work::Generate { prompt, gen } => format!("{prompt}-token prompt, {gen} to generate"),
            Work::Chunks { chunk, passes } => format!("{passes} passes of {chunk} tokens"),
        };
        let pays = table.as_ref().and_then(|x| match work {
            Work::Generate { prompt, gen } => x.gpu_pays(prompt, gen),
            Work::Chunks { chunk, passes } => x.gpu_pays_chunks(chunk, passes),
        });
        match pays {
            Some((pays, e)) => (
                pays,
                format!(
                    "{what}: CPU alone {:.0} ms, with {} {:.0} ms (its init {:.0} ms included)",
                    e.stay_s * 1e3,
                    table.as_ref().map_or("the device", |x| x.gpu.name.as_str()),
                    e.move_s * 1e3,
                    table.as_ref().map_or(0.0, |x| x.gpu.init_ms)
                ),
            ),
            None => (false, "the crossover table lacks data".to_string()),
        }
    };
    // One cache dtype on both sides when the device is built: the one asked for, else f32
    // (OpenCL's default, what its block kernel reads); the CPU's default (f16) when it is not.
    let kv_type = match (m.kv_type.dtype(), build) {
        (Some(t), _) => Some(t),
        (None, true) => Some(DType::F32),
        (None, false) => None,
    };
    let cpu_opts = RunOptions {
        ctx: m.ctx,
        max_batch: cpu_batch.min(m.ctx),
        all_logits,
        kv_type,
    };
    let gpu_opts = RunOptions {
        max_batch: gpu_batch.min(m.ctx),
        kv_type: Some(kv_type.unwrap_or(DType::F32)),
        ..cpu_opts
    };
    // Start the build now (overlapping the CPU's load: the device may take the prompt's
    // pass) or once the CPU model is loaded (its load then runs alone), as measured.
    let first = match (build, forced, table.as_ref(), work) {
        (false, ..) => false,
        (true, true, ..) => true,
        (true, false, Some(x), Work::Generate { prompt, .. })
        | (true, false, Some(x), Work::Chunks { chunk: prompt, .. }) => {
            let (first, gain, cost) = x.build_first(prompt);
            if flags.verbose {
                eprintln!(
                    "hybrid: the device's gain on the first pass {gain:.1} ms, its build's cost to the CPU's load {cost:.1} ms -> build {}",
                    if first { "now" } else { "after the CPU's load" }
                );
            }
            first
        }
        (true, false, None, _) => true,
    };
    let spawn = |verbose: bool| -> Result<_> {
        if verbose {
            eprintln!("hybrid: building the OpenCL backend in the background ({why})");
        }
        let (path, weights) = (path.clone(), m.weights);
        let builder = move || -> antigravity_core::Result<GpuParts<OpenClBackend>> {
            let t = Instant::now();
            let (cfg, weights, backend) = build_gpu(&path, weights)?;
            Ok(GpuParts {
                cfg,
                weights,
                backend,
                init_ms: t.elapsed().as_secs_f64() * 1e3,
            })
        };
        // The warm-up's prompt pass: the size of the first pass the device may take.
        let warm_tokens = match work {
            Work::Generate { prompt, .. } => prompt,
            Work::Chunks { chunk, .. } => chunk,
        }
        .clamp(1, gpu_opts.max_batch);
        let bind = GpuBind {
            opts: gpu_opts,
            policy,
            warm_tokens,
        };
        Ok(model::hybrid::spawn_build(builder, bind)?)
    };
    let mut pending = if build && first {
        Some(spawn(flags.verbose)?)
    } else {
        None
    };
    let mut s = m.load(m.run.cpu_backend()?, cpu_opts, t0, None)?;
    if build && !first {
        pending = Some(spawn(flags.verbose)?);
    }
    s.model.set_kv_policy(policy)?;
    let ids = prompt(&s)?;
    let opts = HybridOptions {
        switch_at: flags.switch_at.clone(),
        crossover: table.clone(),
        verbose: flags.verbose,
        // On where the device shares host memory; `ANTIGRAVITY_HYBRID_ZERO_COPY=0` turns
        // it off (the counted copy hand-over).
        no_zero_copy: false,
    };
    let Session {
        model: cpu_model,
        tokenizer,
        path: model_path,
        load_ms,
        threads,
        synthetic,
        copied_load,
        ..
    } = s;
    let hybrid = match pending {
        Some(p) => Hybrid::with_pending(cpu_model, p, opts),
        None => Hybrid::cpu_only(cpu_model, opts, &why),
    };
    Ok(HybridSession {
        hybrid,
        ids,
        tokenizer,
        path: model_path,
        load_ms,
        threads,
        synthetic,
        copied_load,
    })
}

/// The crossover table for `m`'s model: read from `--crossover FILE` or the machine's
/// file; when it has no entry and no switches are forced, a short one is measured first
/// (saying so) and cached there. `None` only with forced switches and no entry.
pub fn table(m: &ModelArgs, flags: &HybridFlags) -> Result<Option<Crossover>> {
    let path = crate::fetch::resolve(m.run.model.as_deref())?;
    let key = table_key(&path);
    let table_file = flags.crossover.clone().unwrap_or_else(default_table_path);
    let table = read_table(&table_file, &key);
    if table.is_some() || !flags.switch_at.is_empty() {
        return Ok(table);
    }
    eprintln!(
        "hybrid: no crossover table for this model in {}; measuring a short one first (once; `harness bench --crossover` measures a full one)",
        table_file.display()
    );
    let x = measure_short(m, &path)?;
    write_table(&table_file, &key, &x, "short (first use)")?;
    eprintln!("hybrid: wrote {}", table_file.display());
    Ok(Some(x))
}

/// The OpenCL backend and the model's weights on it (what the background thread runs).
fn build_gpu(
    path: &Path,
    weights: DType,
) -> antigravity_core::Result<(model::LlamaConfig, model::Weights<OpenClBackend>, OpenClBackend)> {
    let be = OpenClBackend::new(OpenClOptions::from_env())?;
    let (cfg, w) = if path.is_dir() {
        model::hf::load(path, &be, weights)?
    } else {
        let f = GgufFile::open(path)?;
        model::gguf::load(&f, &be)?
    };
    be.finish_import();
    Ok((cfg, w, be))
}

// --- the crossover table ----------------------------------------------------------------

/// `$ANTIGRAVITY_HOME/crossover/<machine>.json`.
pub fn default_table_path() -> PathBuf {
    crate::fetch::cache_dir()
        .join("crossover")
        .join(format!("{}.json", crate::bench::env::machine().slug()))
}

/// One entry per model file: its name and size.
fn table_key(path: &Path) -> String {
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    format!("{name}:{len}")
}

fn speeds_json(s: &Speeds) -> Value {
    json!({"name": s.name, "init_ms": s.init_ms, "first_ms": s.first_ms, "prefill": s.prefill, "decode": s.decode})
}

fn speeds_from(v: &Value) -> Option<Speeds> {
    let pts = |k: &str| -> Option<Vec<(usize, f64)>> {
        v[k].as_array()?
            .iter()
            .map(|p| Some((p[0].as_u64()? as usize, p[1].as_f64()?)))
            .collect()
    };
    Some(Speeds {
        name: v["name"].as_str()?.to_string(),
        init_ms: v["init_ms"].as_f64()?,
        prefill: pts("prefill")?,
        decode: pts("decode")?,
        first_ms: v["first_ms"].as_f64().unwrap_or(0.0),
    })
}

/// The table's entry for `key`, if the file has one (a malformed file counts as none,
/// with a warning).
pub fn read_table(file: &Path, key: &str) -> Option<Crossover> {
    let text = std::fs::read_to_string(file).ok()?;
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("warning: {}: not a crossover table ({e}); ignoring it", file.display());
            return None;
        }
    };
    let e = &v["models"][key];
    Some(Crossover {
        cpu: speeds_from(&e["cpu"])?,
        gpu: speeds_from(&e["gpu"])?,
        handover_bytes_per_s: e["handover_bytes_per_s"].as_f64().unwrap_or(0.0),
        kv_bytes_per_token: e["kv_bytes_per_token"].as_u64().unwrap_or(0) as usize,
        cpu_init_during_build_ms: e["cpu_init_during_build_ms"].as_f64().unwrap_or(0.0),
    })
}

/// Writes (or replaces) `key`'s entry.
pub fn write_table(file: &Path, key: &str, x: &Crossover, kind: &str) -> Result<()> {
    let mut v: Value = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| json!({"machine": crate::bench::env::machine().slug(), "models": {}}));
    if !v["models"].is_object() {
        v["models"] = json!({});
    }
    v["models"][key] = entry_json(x, kind);
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(file, serde_json::to_string_pretty(&v)? + "\n")
        .with_context(|| format!("writing {}", file.display()))
}

fn entry_json(x: &Crossover, kind: &str) -> Value {
    json!({
        "kind": kind,
        "measured": crate::bench::record::now_rfc3339(),
        "load_1m": crate::bench::env::load_1m(),
        "cpu": speeds_json(&x.cpu),
        "gpu": speeds_json(&x.gpu),
        "handover_bytes_per_s": x.handover_bytes_per_s,
        "kv_bytes_per_token": x.kv_bytes_per_token,
        "cpu_init_during_build_ms": x.cpu_init_during_build_ms,
    })
}

/// Prefill and decode speeds of `m` at each prompt length of `points` (the decode
/// `steps` steps right after that prefill, at that context).
pub fn measure<B: Backend>(m: &mut Llama<B>, points: &[usize], steps: usize, init_ms: f64) -> Result<Speeds> {
    let vocab = m.cfg.vocab as u32;
    let ids: Vec<u32> = (0..*points.iter().max().unwrap_or(&1) as u32)
        .map(|i| (i * 7919 + 13) % vocab)
        .collect();
    let mut s = Speeds {
        name: m.backend.name().to_string(),
        init_ms,
        ..Speeds::default()
    };
    // Warm-up: one small pass (first-use costs are `first_ms`, not the curve's).
    m.reset();
    let t = Instant::now();
    m.forward_argmax(&ids[..1])?;
    m.backend.synchronize()?;
    s.first_ms = t.elapsed().as_secs_f64() * 1e3;
    for &n in points {
        let n = n.min(m.kv.capacity().saturating_sub(steps + 1)).max(1);
        m.reset();
        let t = Instant::now();
        let first = m.forward_argmax(&ids[..n])?;
        s.prefill.push((n, n as f64 / t.elapsed().as_secs_f64()));
        let t = Instant::now();
        let kept = m.decode_greedy(first, steps, |_| Ok(true))?;
        m.backend.synchronize()?;
        s.decode.push((n, kept as f64 / t.elapsed().as_secs_f64()));
    }
    Ok(s)
}

/// Bytes a hand-over of the cache moves per second, CPU → device and back (measured at
/// `n` cached tokens; the mean of the two directions).
fn measure_handover(cpu: &mut Llama<CpuBackend>, gpu: &mut Llama<OpenClBackend>, n: usize) -> Result<f64> {
    let shape = cpu.kv_shape();
    let layer = |t: DType| t.row_bytes(shape.capacity * shape.kv_dim).unwrap_or(0);
    let mut stage = vec![0u8; layer(shape.dtype).max(layer(gpu.kv.dtype())).max(shape.capacity * 4)];
    let mut conv = stage.clone();
    cpu.reset();
    let ids: Vec<u32> = (0..n as u32).map(|i| (i * 31 + 7) % cpu.cfg.vocab as u32).collect();
    cpu.forward_argmax(&ids)?;
    let t = Instant::now();
    let b1 = model::hybrid::handover(cpu, gpu, &mut stage, &mut conv)?;
    gpu.backend.synchronize()?;
    let t1 = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let b2 = model::hybrid::handover(gpu, cpu, &mut stage, &mut conv)?;
    let t2 = t.elapsed().as_secs_f64();
    Ok((b1 + b2) as f64 / (t1 + t2).max(1e-9))
}

/// Both backends' curves for the model at `path`, measured at `points`.
///
/// The device is built twice, and the init recorded is the second build's: the first
/// one (cold where the driver's and our program-binary caches are empty) runs while the
/// CPU model loads once more — that load's time is `cpu_init_during_build_ms`, what a
/// hybrid that starts both at once pays — and it fills the caches that every later start
/// of that device reads. A table that kept the cold figure (26 s against ~0.2–4 s on the
/// H200 for `block.cl`) would keep the hybrid on the CPU where the device pays. The
/// overlap measurement needs a build anyway, so the warm figure costs no extra build:
/// the short table a first hybrid run measures (on PoCL, where a cold build takes
/// seconds to minutes) pays exactly the two builds it paid before this order.
fn measure_table(m: &ModelArgs, path: &Path, points: &[usize], steps: usize) -> Result<Crossover> {
    let ctx = points.iter().max().copied().unwrap_or(1) + steps + 2;
    let opts = |batch: usize| RunOptions {
        ctx,
        max_batch: batch.min(ctx),
        all_logits: false,
        kv_type: Some(DType::F32),
    };
    let t = Instant::now();
    let mut cpu = m.load(m.run.cpu_backend()?, opts(128), t, None)?.model;
    let cpu_init = t.elapsed().as_secs_f64() * 1e3;
    eprintln!("crossover: cpu …");
    let cpu_s = measure(&mut cpu, points, steps, cpu_init)?;
    // The CPU's load alone once more (the file now in the page cache, as for the load
    // below), then while the device's first build runs on another thread, as a hybrid
    // that starts both at once does: what that costs the host.
    let t = Instant::now();
    drop(m.load(m.run.cpu_backend()?, opts(128), t, None)?);
    let cpu_init = cpu_init.min(t.elapsed().as_secs_f64() * 1e3);
    let mut cpu_s = cpu_s;
    cpu_s.init_ms = cpu_init;
    let (path2, weights) = (path.to_path_buf(), m.weights);
    let bind1 = GpuBind {
        opts: opts(512),
        policy: EvictConfig::default(),
        warm_tokens: 8,
    };
    let builder = move || -> antigravity_core::Result<GpuParts<OpenClBackend>> {
        let t = Instant::now();
        let (cfg, weights, backend) = build_gpu(&path2, weights)?;
        Ok(GpuParts {
            cfg,
            weights,
            backend,
            init_ms: t.elapsed().as_secs_f64() * 1e3,
        })
    };
    let built = Instant::now();
    let pending = model::hybrid::spawn_build(builder, bind1)?;
    let t = Instant::now();
    let cpu2 = m.load(m.run.cpu_backend()?, opts(128), t, None)?.model;
    let cpu_init_during_build_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut first = Hybrid::with_pending(cpu2, pending, HybridOptions::default());
    first.wait_gpu()?;
    let cold_ms = built.elapsed().as_secs_f64() * 1e3;
    if let Some(note) = first.note() {
        anyhow::bail!("crossover: the device's first build failed: {note}");
    }
    drop(first);
    eprintln!(
        "crossover: cpu load {cpu_init:.0} ms alone, {cpu_init_during_build_ms:.0} ms while the device's first build runs ({cold_ms:.0} ms to ready: cold where the caches were empty)"
    );
    // The timed build, as the hybrid's background thread does it: build, bind, warm up;
    // all of it is the device's init. Its first pass after that is `first_ms`.
    let t = Instant::now();
    let (cfg, weights, backend) = build_gpu(path, m.weights)?;
    let parts = GpuParts {
        cfg,
        weights,
        backend,
        init_ms: t.elapsed().as_secs_f64() * 1e3,
    };
    let bind = GpuBind {
        opts: opts(512),
        policy: EvictConfig::default(),
        warm_tokens: 8,
    };
    let ready = model::hybrid::bind_and_warm(parts, &bind)?;
    let gpu_init = ready.init_ms();
    let mut gpu = *ready.model;
    eprintln!(
        "crossover: {} (init {gpu_init:.0} ms: build {:.0}, bind {:.0}, warm-up {:.0}) …",
        gpu.backend.name(),
        ready.build_ms,
        ready.bind_ms,
        ready.warm_ms
    );
    let gpu_s = measure(&mut gpu, points, steps, gpu_init)?;
    let hb = measure_handover(
        &mut cpu,
        &mut gpu,
        points.iter().copied().max().unwrap_or(1).min(ctx - 1),
    )?;
    let kv_bytes_per_token = cpu.kv.bytes_per_token();
    Ok(Crossover {
        cpu: cpu_s,
        gpu: gpu_s,
        handover_bytes_per_s: hb,
        kv_bytes_per_token,
        cpu_init_during_build_ms,
    })
}

/// The short table a hybrid run measures when it has none: prompts of 16 and 128
/// tokens, 8 decode steps after each.
fn measure_short(m: &ModelArgs, path: &Path) -> Result<Crossover> {
    measure_table(m, path, &[16, 128], 8)
}

/// `harness bench --crossover`: the full table (prompt chunks 1…512, decode after each,
/// init times, the hand-over's speed), written under `out_dir` and as the machine's
/// table.
pub fn bench_crossover(m: &ModelArgs, out_dir: &Path, max_ctx: usize) -> Result<()> {
    let path = crate::fetch::resolve(m.run.model.as_deref())?;
    let mut points: Vec<usize> = vec![1, 8, 32, 128, 512];
    let mut c = 1024;
    while c <= max_ctx {
        points.push(c);
        c *= 2;
    }
    points.retain(|&p| p <= max_ctx);
    let x = measure_table(m, &path, &points, 16)?;
    let key = table_key(&path);
    let table = default_table_path();
    write_table(&table, &key, &x, "full (harness bench --crossover)")?;
    std::fs::create_dir_all(out_dir)?;
    let machine = crate::bench::env::machine().slug();
    let when = crate::bench::record::now_rfc3339();
    let out = out_dir.join(format!("crossover-{machine}-{}.json", &when[..10]));
    let mut v = entry_json(&x, "full (harness bench --crossover)");
    v["machine"] = json!(machine);
    v["model"] = json!(key);
    v["git_rev"] = json!(crate::bench::env::git_rev());
    v["threads"] = json!(m.run.thread_count());
    std::fs::write(&out, serde_json::to_string_pretty(&v)? + "\n")?;
    println!(
        "{:>8} {:>14} {:>14} {:>14} {:>14}",
        "tokens", "cpu prefill", "gpu prefill", "cpu decode", "gpu decode"
    );
    for (i, &(n, cp)) in x.cpu.prefill.iter().enumerate() {
        println!(
            "{n:>8} {cp:>14.1} {:>14.1} {:>14.1} {:>14.1}",
            x.gpu.prefill[i].1, x.cpu.decode[i].1, x.gpu.decode[i].1
        );
    }
    println!(
        "init: cpu {:.0} ms ({:.0} ms while the device builds), {} {:.0} ms (first pass {:.0} ms); hand-over {:.2} GB/s",
        x.cpu.init_ms,
        x.cpu_init_during_build_ms,
        x.gpu.name,
        x.gpu.init_ms,
        x.gpu.first_ms,
        x.handover_bytes_per_s / 1e9
    );
    println!("wrote {} and {}", table.display(), out.display());
    Ok(())
}
