//! Hybrid inference: one sequence, two backends, moved between them at token boundaries.
//!
//! [`Hybrid`] owns a model on a host backend (`C`, the CPU: ready in milliseconds over
//! the mapped file) and, once it exists, the same model on a second backend (`G`, an
//! OpenCL device: ready after its program build and weight import). Both are plain
//! [`Llama`]s over the same weights file; only one holds the live sequence at a time.
//! Moving the sequence is [`handover`]: the KV cache's *used* slots (keys and values of
//! every layer) and their positions go from the active model's cache to the other's —
//! nothing else carries state between tokens (the workspace is rewritten by every pass).
//!
//! * **When**: before the pass that produces token `k` (`k` counts the tokens produced
//!   since the prompt started: the prompt's pass produces token 0, decode step `i`
//!   token `i`). A switch is forced there ([`HybridOptions::switch_at`]) or chosen by the
//!   [`Crossover`] policy: the remaining work's estimated time on each side, the
//!   hand-over's cost included.
//! * **Warm-up**: the second backend may be built on a background thread
//!   ([`Hybrid::with_background`]: program build, weight import, then [`Llama::new`] —
//!   its cache and workspace — and one dummy prompt pass and decode steps, [`warm_up`])
//!   while the host model serves; the first boundary after the thread finished takes the
//!   ready model (moving a box) and asks the policy. Nothing of the device's first use
//!   is left on the serving thread's critical path. This moves a `Llama<G>` between
//!   threads, so it needs `Llama<G>: Send` — no `unsafe impl` is involved: the compiler
//!   derives it from the backend's own types (the OpenCL backend's handles are `Send` in
//!   `opencl3`, and the model's profiler box is `dyn Profiler + Send`).
//! * **Cache dtypes**: each side keeps its own (`f16` on the CPU, `f32` on OpenCL by
//!   default); the hand-over converts f16 ⇄ f32 as it copies. f16 → f32 is exact;
//!   f32 → f16 rounds each value to nearest-even once, as the CPU rounds what it stores.
//! * **Copies**: the hand-over is a counted copy of exactly `len` slots per layer and
//!   per K/V, each byte copied once: the device's `upload` reads straight from the host
//!   model's cache memory, or its `download` (which orders itself after its queued
//!   work) writes straight into it ([`Backend::host_bytes`]); a staging buffer sized
//!   once (no allocation per switch) serves only a dtype conversion and the attention
//!   mass.
//! * **Zero-copy**: where the device shares host memory (unified memory: PoCL, phones)
//!   and both caches have one dtype and capacity, the device model's K/V buffers wrap
//!   the host model's cache memory ([`Backend::share_host_mut`], made once when the
//!   device model is taken over): a switch moves no cache bytes — it unmaps the buffers
//!   for the device or maps them back for the host ([`Backend::host_access`]) and hands
//!   over the slots' positions (and h2o/tova's mass). For that the host model is a
//!   private field and the device model is dropped first (it wraps the host's memory).
//!   `HybridOptions::no_zero_copy` or `ANTIGRAVITY_HYBRID_ZERO_COPY=0` keeps the copy.
//!
//! After construction (and the one-time bind of a background-built backend), a decoded
//! token allocates nothing, switches included (`core/tests/hybrid.rs` counts).

use std::string::String;
use std::thread::JoinHandle;
use std::time::Instant;
use std::vec::Vec;

use super::config::LlamaConfig;
use super::llama::{Llama, Profiler, RunOptions};
use super::weights::Weights;
use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::kv_evict::{EvictConfig, KvPolicy};

/// One hand-over of the sequence: before the pass producing token `token`, from backend
/// `from` to `to`; `bytes` of cache written into the consumer; `ms` wall time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Switch {
    pub token: usize,
    pub from: &'static str,
    pub to: &'static str,
    pub bytes: u64,
    pub ms: f64,
}

/// Measured speed of one backend: the data the policy reads (`harness bench
/// --crossover` writes it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Speeds {
    /// Backend name (`cpu`, `opencl`).
    pub name: String,
    /// Time from nothing to a model ready to run (backend build, weight import, state), ms.
    pub init_ms: f64,
    /// `(prompt chunk tokens, prefill tok/s)`, ascending chunk.
    pub prefill: Vec<(usize, f64)>,
    /// `(context tokens, decode tok/s)`, ascending context.
    pub decode: Vec<(usize, f64)>,
    /// The model's first pass after it is built (binding its state, first launches), ms:
    /// what moving the prompt's pass to a fresh backend costs beyond its speed.
    pub first_ms: f64,
}

/// Linear interpolation in `(x, y)` points sorted by `x`, clamped at both ends; `None`
/// without points.
fn interp(points: &[(usize, f64)], x: usize) -> Option<f64> {
    let (first, last) = (points.first()?, points.last()?);
    if x <= first.0 {
        return Some(first.1);
    }
    if x >= last.0 {
        return Some(last.1);
    }
    let i = points.iter().position(|p| p.0 >= x)?;
    let (a, b) = (points[i - 1], points[i]);
    let t = (x - a.0) as f64 / (b.0 - a.0).max(1) as f64;
    Some(a.1 + t * (b.1 - a.1))
}

impl Speeds {
    /// Seconds to decode `n` tokens starting at context `ctx` (the rate at the middle of
    /// the span: decode speed falls slowly and smoothly with context).
    pub fn decode_s(&self, ctx: usize, n: usize) -> Option<f64> {
        if n == 0 {
            return Some(0.0);
        }
        let r = interp(&self.decode, ctx + n / 2)?;
        (r > 0.0).then(|| n as f64 / r)
    }
    /// Seconds to prefill `n` prompt tokens.
    pub fn prefill_s(&self, n: usize) -> Option<f64> {
        let r = interp(&self.prefill, n)?;
        (r > 0.0).then(|| n as f64 / r)
    }
}

/// The crossover table of one machine: both backends' speeds, and the hand-over's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Crossover {
    pub cpu: Speeds,
    pub gpu: Speeds,
    /// Cache bytes a hand-over moves per second (download + conversion + upload).
    pub handover_bytes_per_s: f64,
    /// Cache bytes per token of the measured model (f32 cache), for planning before a
    /// model is loaded.
    pub kv_bytes_per_token: usize,
    /// The host model's load time while the device builds at the same time, ms (0:
    /// not measured): what a build started before the host's load costs the first
    /// token ([`Crossover::build_first`]).
    pub cpu_init_during_build_ms: f64,
}

/// What the policy said at a boundary (printed with `--verbose`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Seconds to finish on the active side.
    pub stay_s: f64,
    /// Seconds to finish on the other side, the hand-over included.
    pub move_s: f64,
}

impl Crossover {
    /// Whether building the second backend can pay for a job of a `prompt`-token prefill
    /// and `gen` generated tokens: the CPU alone against the CPU serving while the GPU
    /// initializes, then the GPU finishing the rest (the hand-over included). `None`: the
    /// table lacks the data.
    pub fn gpu_pays(&self, prompt: usize, gen: usize) -> Option<(bool, Estimate)> {
        let kv_bytes_per_token = self.kv_bytes_per_token;
        let cpu_total = self.cpu.prefill_s(prompt)? + self.cpu.decode_s(prompt, gen)?;
        // While the GPU initializes, the CPU prefills and decodes; the GPU takes over
        // at the first token after `init_s` (or never, if the CPU is done first).
        let init_s = self.gpu.init_ms / 1e3;
        let mut t = self.cpu.prefill_s(prompt)?;
        let mut done = 0usize;
        while t < init_s && done < gen {
            t += self.cpu.decode_s(prompt + done, 1)?;
            done += 1;
        }
        let rest = gen - done;
        let ctx = prompt + done;
        let move_s = t.max(init_s) + self.handover_s(ctx, kv_bytes_per_token) + self.gpu.decode_s(ctx, rest)?;
        // Or: wait for the device, and prefill there too (a long prompt, a fast device).
        let wait_s = init_s
            + self.gpu.first_ms / 1e3
            + self.gpu.prefill_s(prompt)?
            + self.gpu.decode_s(prompt, gen.saturating_sub(1))?;
        let (move_s, rest) = if wait_s < move_s { (wait_s, gen) } else { (move_s, rest) };
        let e = Estimate {
            stay_s: cpu_total,
            move_s,
        };
        Some((rest > 0 && move_s < cpu_total, e))
    }

    /// [`Crossover::gpu_pays`] for work that is all prefill: `passes` passes of `chunk`
    /// tokens (`logits`, `perplexity`). The CPU runs passes while the device
    /// initializes; the device runs the rest (after a hand-over of what is cached), or
    /// everything after waiting for it.
    pub fn gpu_pays_chunks(&self, chunk: usize, passes: usize) -> Option<(bool, Estimate)> {
        let (c, g) = (self.cpu.prefill_s(chunk)?, self.gpu.prefill_s(chunk)?);
        let cpu_total = passes as f64 * c;
        let init_s = self.gpu.init_ms / 1e3;
        let done = ((init_s / c.max(1e-9)).ceil() as usize).min(passes);
        let rest = passes - done;
        let serve_s =
            (done as f64 * c).max(init_s) + self.handover_s(done * chunk, self.kv_bytes_per_token) + rest as f64 * g;
        let wait_s = init_s + self.gpu.first_ms / 1e3 + passes as f64 * g;
        let (move_s, rest) = if wait_s < serve_s {
            (wait_s, passes)
        } else {
            (serve_s, rest)
        };
        let e = Estimate {
            stay_s: cpu_total,
            move_s,
        };
        Some((rest > 0 && move_s < cpu_total, e))
    }

    /// Whether to start the device's build before the host model loads (the two
    /// overlap: the device may be ready for the prompt's pass) rather than right after
    /// (the host's load and first token then run alone; the device takes over during
    /// decode). Before, only when the device's gain on a `prompt`-token first pass beats
    /// what the build costs the host's load (`cpu_init_during_build_ms - cpu.init_ms`,
    /// measured by `bench --crossover`; unmeasured: no cost, so before). Returns the
    /// decision and the two figures, ms.
    pub fn build_first(&self, prompt: usize) -> (bool, f64, f64) {
        let cost_ms = if self.cpu_init_during_build_ms > 0.0 {
            (self.cpu_init_during_build_ms - self.cpu.init_ms).max(0.0)
        } else {
            0.0
        };
        let gain_ms = match (self.cpu.prefill_s(prompt), self.gpu.prefill_s(prompt)) {
            (Some(c), Some(g)) => (c - g) * 1e3 - self.gpu.first_ms,
            _ => 0.0,
        };
        (gain_ms > cost_ms, gain_ms, cost_ms)
    }

    /// Seconds a hand-over of `ctx` cached tokens takes.
    pub fn handover_s(&self, ctx: usize, kv_bytes_per_token: usize) -> f64 {
        if self.handover_bytes_per_s > 0.0 {
            (ctx * kv_bytes_per_token) as f64 / self.handover_bytes_per_s
        } else {
            0.0
        }
    }

    /// At a boundary with `ctx` cached tokens and `left` tokens still to produce: the
    /// time to finish where the sequence is (`on_gpu`) and on the other side.
    /// `n_new` is the next pass's token count (a prompt: prefilled, then `left - 1`
    /// decode steps; 1: `left` decode steps).
    pub fn estimate(
        &self,
        on_gpu: bool,
        ctx: usize,
        n_new: usize,
        left: usize,
        kv_bytes_per_token: usize,
    ) -> Option<Estimate> {
        let (here, there) = if on_gpu {
            (&self.gpu, &self.cpu)
        } else {
            (&self.cpu, &self.gpu)
        };
        let cost = |s: &Speeds| -> Option<f64> {
            if n_new > 1 {
                Some(s.prefill_s(n_new)? + s.decode_s(ctx + n_new, left.saturating_sub(1))?)
            } else {
                s.decode_s(ctx, left)
            }
        };
        Some(Estimate {
            stay_s: cost(here)?,
            move_s: self.handover_s(ctx, kv_bytes_per_token) + cost(there)?,
        })
    }

    /// As [`Crossover::estimate`] for work that is all prefill (`logits`,
    /// `perplexity`): `passes` more passes of `chunk` tokens each.
    pub fn estimate_chunks(
        &self,
        on_gpu: bool,
        ctx: usize,
        chunk: usize,
        passes: usize,
        kv_bytes_per_token: usize,
    ) -> Option<Estimate> {
        let (here, there) = if on_gpu {
            (&self.gpu, &self.cpu)
        } else {
            (&self.cpu, &self.gpu)
        };
        let p = passes as f64;
        Some(Estimate {
            stay_s: p * here.prefill_s(chunk)?,
            move_s: self.handover_s(ctx, kv_bytes_per_token) + p * there.prefill_s(chunk)?,
        })
    }
}

/// How a [`Hybrid`] decides.
#[derive(Clone, Debug, Default)]
pub struct HybridOptions {
    /// Token indices before whose pass the sequence is forced to the other backend
    /// (waiting for a background build if need be). With forced switches the policy
    /// makes no moves of its own.
    pub switch_at: Vec<usize>,
    /// The crossover table; `None`: no automatic moves.
    pub crossover: Option<Crossover>,
    /// Print every decision to stderr.
    pub verbose: bool,
    /// Keep the counted copy hand-over even where the device could share the host
    /// model's cache (zero-copy, [`Hybrid`]); also `ANTIGRAVITY_HYBRID_ZERO_COPY=0`.
    pub no_zero_copy: bool,
}

/// The second backend's parts, as the build closure makes them (backend, programs,
/// weights); [`bind_and_warm`] turns them into a ready model.
pub struct GpuParts<G: Backend> {
    pub cfg: LlamaConfig,
    pub weights: Weights<G>,
    pub backend: G,
    /// How long the build took (backend, programs, weight import), ms.
    pub init_ms: f64,
}

/// How the second model is bound and warmed after its build.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuBind {
    /// Its run options (context, batch, cache dtype).
    pub opts: RunOptions,
    /// Its cache's eviction policy (the host model's).
    pub policy: EvictConfig,
    /// Tokens of the warm-up's prompt pass (the expected prompt chunk: the device's
    /// first prefill then runs warm); 0: no warm-up.
    pub warm_tokens: usize,
}

/// A second model built, bound and warmed (what the background thread hands over).
pub struct ReadyGpu<G: Backend> {
    pub model: alloc::boxed::Box<Llama<G>>,
    /// Backend, programs, weight import, ms.
    pub build_ms: f64,
    /// [`Llama::new`]: cache, workspace, op scratch, ms.
    pub bind_ms: f64,
    /// The warm-up passes ([`warm_up`]), ms.
    pub warm_ms: f64,
}

impl<G: Backend> ReadyGpu<G> {
    /// Build, bind and warm-up together, ms.
    pub fn init_ms(&self) -> f64 {
        self.build_ms + self.bind_ms + self.warm_ms
    }
}

/// Binds a built backend's model ([`Llama::new`] with `bind.opts`, the policy set) and
/// warms it ([`warm_up`] with `bind.warm_tokens`).
pub fn bind_and_warm<G: Backend>(parts: GpuParts<G>, bind: &GpuBind) -> Result<ReadyGpu<G>> {
    let t = Instant::now();
    let mut model = alloc::boxed::Box::new(Llama::new(parts.cfg, parts.weights, parts.backend, bind.opts)?);
    model.set_kv_policy(bind.policy)?;
    let bind_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    if bind.warm_tokens > 0 {
        warm_up(&mut model, bind.warm_tokens)?;
    }
    Ok(ReadyGpu {
        model,
        build_ms: parts.init_ms,
        bind_ms,
        warm_ms: t.elapsed().as_secs_f64() * 1e3,
    })
}

/// Runs a model's first passes on dummy ids and forgets them: a prompt pass of `tokens`
/// tokens (at most half the cache), two pipelined greedy steps and one step with its
/// logits read back — the kernels, buffers and read paths a generation uses, so their
/// first-use costs (a driver's lazy module load, first touch of the cache and workspace
/// pages) are paid here and not by the first real token. Leaves the cache empty (its
/// eviction count untouched: nothing is evicted within half the cache).
pub fn warm_up<B: Backend>(m: &mut Llama<B>, tokens: usize) -> Result<()> {
    let cap = m.kv.capacity();
    let n = tokens.clamp(1, (cap / 2).max(1));
    let vocab = m.cfg.vocab.max(1) as u32;
    let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    m.reset();
    let first = m.forward_argmax(&ids)?;
    if n + 3 <= cap {
        m.decode_greedy(first, 2, |_| Ok(true))?;
        m.forward(&[first])?;
    }
    m.backend.synchronize()?;
    m.reset();
    Ok(())
}

/// A background build under way ([`spawn_build`]).
pub struct PendingGpu<G: Backend> {
    handle: JoinHandle<Result<ReadyGpu<G>>>,
    started: Instant,
}

/// Starts building the second backend on a background thread: `build` (backend,
/// programs, weights), then [`bind_and_warm`] with `bind` — all off the serving thread.
pub fn spawn_build<G, F>(build: F, bind: GpuBind) -> Result<PendingGpu<G>>
where
    G: Backend,
    F: FnOnce() -> Result<GpuParts<G>> + Send + 'static,
    Llama<G>: Send + 'static,
{
    let started = Instant::now();
    let handle = std::thread::Builder::new()
        .name(String::from("hybrid-gpu-init"))
        .spawn(move || bind_and_warm(build()?, &bind))
        .map_err(|e| Error::invalid(std::format!("hybrid: cannot start the background build: {e}")))?;
    Ok(PendingGpu { handle, started })
}

impl<G: Backend> PendingGpu<G> {
    /// Whether the background thread is done (ready, or failed).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }
}

enum Gpu<G: Backend> {
    /// Not built, and not being built (the policy said it cannot pay, or no device).
    Off,
    Loading(JoinHandle<Result<ReadyGpu<G>>>, Instant),
    Ready(alloc::boxed::Box<Llama<G>>),
}

/// One sequence on two backends. See the module docs.
pub struct Hybrid<C: Backend, G: Backend> {
    // Field order matters: the device model is dropped before the host model, whose
    // cache memory the device's cache buffers may wrap (zero-copy). `Drop` also drops
    // it explicitly first.
    gpu: Gpu<G>,
    /// Private: with a zero-copy cache the device's buffers wrap this model's cache
    /// memory, so nothing outside may replace, free or read it (what is safe to see:
    /// [`Hybrid::cfg`], [`Hybrid::cpu_backend`], [`Hybrid::cpu_kv_shape`], …).
    cpu: Llama<C>,
    on_gpu: bool,
    /// The device model's K/V buffers wrap the host model's cache memory
    /// ([`Backend::share_host_mut`]): a switch moves no cache bytes, it hands the
    /// buffers between host (mapped) and device (unmapped).
    shared: bool,
    opts: HybridOptions,
    /// Tokens produced since the last [`Hybrid::reset`]; the next pass produces token
    /// `produced`.
    produced: usize,
    /// Tokens the caller means to produce (the policy's horizon), set by
    /// [`Hybrid::plan`] (or passes, by [`Hybrid::plan_chunks`]).
    budget: usize,
    /// Tokens per pass of prefill-only work ([`Hybrid::plan_chunks`]); 0: generation.
    chunk: usize,
    /// The hand-over's staging buffers ([`Hybrid::size_stage`]): one layer's K (or V) in
    /// the wider of the two cache dtypes and its converted copy — or, when the host
    /// cache is copied straight to and from the device's, room for the attention mass.
    stage: Vec<u8>,
    conv: Vec<u8>,
    switches: Vec<Switch>,
    /// When the background build was observed finished (for the log), ms since `t0`.
    t0: Instant,
    gpu_ready_ms: Option<f64>,
    note: Option<String>,
}

/// Most switches recorded (the list is allocated once).
pub const MAX_SWITCHES: usize = 1024;

impl<C: Backend, G: Backend> Hybrid<C, G> {
    /// The host model alone; the second backend is not built (`why` is logged).
    pub fn cpu_only(cpu: Llama<C>, opts: HybridOptions, why: &str) -> Self {
        let h = Self::make(cpu, Gpu::Off, opts);
        h.log(format_args!("hybrid: staying on {}: {why}", h.cpu.backend.name()));
        h
    }

    /// Both models ready (tests, and a warm second backend).
    pub fn with_both(cpu: Llama<C>, gpu: Llama<G>, opts: HybridOptions) -> Result<Self> {
        check_same_model(&cpu.cfg, &gpu.cfg)?;
        let mut h = Self::make(cpu, Gpu::Off, opts);
        h.size_stage(&h.cpu.kv_shape(), gpu.kv.dtype());
        h.gpu = Gpu::Ready(alloc::boxed::Box::new(gpu));
        h.gpu_ready_ms = Some(0.0);
        h.share_caches()?;
        Ok(h)
    }

    /// The host model serving now; the second backend built by `build`, bound and
    /// warmed (`bind`) on a background thread, taken over at the first boundary after
    /// that thread finished.
    pub fn with_background<F>(cpu: Llama<C>, build: F, bind: GpuBind, opts: HybridOptions) -> Result<Self>
    where
        F: FnOnce() -> Result<GpuParts<G>> + Send + 'static,
        Llama<G>: Send + 'static,
    {
        Ok(Self::with_pending(cpu, spawn_build(build, bind)?, opts))
    }

    /// The host model serving now, and a build started earlier ([`spawn_build`]: before
    /// the host model loaded, so the two overlap).
    pub fn with_pending(cpu: Llama<C>, pending: PendingGpu<G>, opts: HybridOptions) -> Self {
        let h = Self::make(cpu, Gpu::Loading(pending.handle, pending.started), opts);
        h.log(format_args!(
            "hybrid: serving on {}; the second backend builds in the background",
            h.cpu.backend.name()
        ));
        h
    }

    fn make(cpu: Llama<C>, gpu: Gpu<G>, opts: HybridOptions) -> Self {
        let mut switch_at = opts.switch_at.clone();
        switch_at.sort_unstable();
        switch_at.dedup();
        Hybrid {
            gpu,
            cpu,
            on_gpu: false,
            shared: false,
            opts: HybridOptions { switch_at, ..opts },
            produced: 0,
            budget: 0,
            chunk: 0,
            stage: Vec::new(),
            conv: Vec::new(),
            switches: Vec::with_capacity(MAX_SWITCHES),
            t0: Instant::now(),
            gpu_ready_ms: None,
            note: None,
        }
    }

    /// Sizes the hand-over's staging buffers once: nothing for the cache itself when the
    /// host model's cache is host memory of the device's dtype (each layer is then
    /// copied straight between the two: [`handover`]), else one layer's K of the wider
    /// dtype at full capacity; always room for the attention mass (4 bytes a slot).
    fn size_stage(&mut self, shape: &KvShape, gpu_dtype: DType) {
        let direct = shape.dtype == gpu_dtype && shape.n_layer > 0 && {
            let (k, _) = self.cpu.kv.views(0);
            self.cpu.backend.host_bytes(k.buf).is_some()
        };
        let mass = shape.capacity * 4;
        let layer = |t: DType| t.row_bytes(shape.kv_dim).unwrap_or(shape.kv_dim * 4) * shape.capacity;
        let (stage, conv) = if direct {
            (mass, 0)
        } else {
            let wide = layer(shape.dtype).max(layer(gpu_dtype));
            (wide.max(mass), wide)
        };
        self.stage = std::vec![0u8; stage];
        self.conv = std::vec![0u8; conv];
    }

    fn log(&self, args: core::fmt::Arguments<'_>) {
        if self.opts.verbose {
            std::eprintln!("{args}");
        }
    }

    /// The name of the backend holding the sequence.
    pub fn active_name(&self) -> &'static str {
        match (&self.gpu, self.on_gpu) {
            (Gpu::Ready(g), true) => g.backend.name(),
            _ => self.cpu.backend.name(),
        }
    }
    pub fn on_gpu(&self) -> bool {
        self.on_gpu
    }
    /// The second model, once bound.
    pub fn gpu(&self) -> Option<&Llama<G>> {
        match &self.gpu {
            Gpu::Ready(g) => Some(g),
            _ => None,
        }
    }
    // The host model itself is never handed out, not even read-only: with a zero-copy
    // cache its cache memory is the device's while the device holds the sequence (its
    // kernels may be writing it on other threads), so only what does not touch that
    // memory is.

    /// The model's configuration (the same on both sides).
    pub fn cfg(&self) -> &LlamaConfig {
        &self.cpu.cfg
    }
    /// The host model's weights (read-only everywhere).
    pub fn cpu_weights(&self) -> &Weights<C> {
        &self.cpu.weights
    }
    /// The host backend (its ISA and copy counters).
    pub fn cpu_backend(&self) -> &C {
        &self.cpu.backend
    }
    /// The host cache's geometry.
    pub fn cpu_kv_shape(&self) -> KvShape {
        self.cpu.kv_shape()
    }
    /// The host cache's bytes.
    pub fn cpu_kv_bytes(&self) -> usize {
        self.cpu.kv.bytes()
    }
    /// Bytes one cached token takes in the host cache.
    pub fn cpu_kv_bytes_per_token(&self) -> usize {
        self.cpu.kv.bytes_per_token()
    }
    /// Whether the device's cache wraps the host's (a switch moves no cache bytes).
    pub fn zero_copy(&self) -> bool {
        self.shared
    }
    /// Sets the host model's op profiler.
    pub fn set_cpu_profiler(&mut self, p: Option<alloc::boxed::Box<dyn Profiler<C> + Send>>) {
        self.cpu.set_profiler(p);
    }
    /// Sets the second model's op profiler; `false` while it is not bound.
    pub fn set_gpu_profiler(&mut self, p: Option<alloc::boxed::Box<dyn Profiler<G> + Send>>) -> bool {
        match &mut self.gpu {
            Gpu::Ready(g) => {
                g.set_profiler(p);
                true
            }
            _ => false,
        }
    }
    /// Waits for the second backend's queued work (nothing while it is not bound).
    pub fn synchronize_gpu(&mut self) -> Result<()> {
        match &mut self.gpu {
            Gpu::Ready(g) => g.backend.synchronize(),
            _ => Ok(()),
        }
    }
    /// The same models under new options (the switch list is cleared of past records).
    pub fn with_options(mut self, opts: HybridOptions) -> Self {
        let mut switch_at = opts.switch_at.clone();
        switch_at.sort_unstable();
        switch_at.dedup();
        self.opts = HybridOptions { switch_at, ..opts };
        self.switches.clear();
        self
    }
    fn gpu_ready_or_loading(&self) -> bool {
        !matches!(self.gpu, Gpu::Off)
    }
    /// Whether the second backend is being built in the background.
    pub fn gpu_loading(&self) -> bool {
        matches!(self.gpu, Gpu::Loading(..))
    }
    /// Whether a background build has finished (ready to be taken at the next boundary,
    /// or failed) and not been taken yet.
    pub fn gpu_build_finished(&self) -> bool {
        matches!(&self.gpu, Gpu::Loading(h, _) if h.is_finished())
    }
    /// When the second backend became usable, ms after the hybrid was made.
    pub fn gpu_ready_ms(&self) -> Option<f64> {
        self.gpu_ready_ms
    }
    /// Every switch so far.
    pub fn switches(&self) -> &[Switch] {
        &self.switches
    }
    /// Tokens produced since the last reset.
    pub fn produced(&self) -> usize {
        self.produced
    }
    /// A line on why the second backend is not used (build failure), if any.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
    /// Cached tokens of the active side.
    pub fn kv_len(&self) -> usize {
        match (&self.gpu, self.on_gpu) {
            (Gpu::Ready(g), true) => g.kv.len(),
            _ => self.cpu.kv.len(),
        }
    }
    /// Bytes one cached token takes on the active side.
    pub fn kv_bytes_per_token(&self) -> usize {
        match (&self.gpu, self.on_gpu) {
            (Gpu::Ready(g), true) => g.kv.bytes_per_token(),
            _ => self.cpu.kv.bytes_per_token(),
        }
    }

    /// Says how many tokens the caller means to produce (the policy's horizon).
    pub fn plan(&mut self, tokens: usize) {
        self.budget = tokens;
        self.chunk = 0;
    }

    /// Says the work is `passes` prefill passes of about `chunk` tokens each (`logits`,
    /// `perplexity`): the policy weighs the passes left on each side. Token indices
    /// ([`HybridOptions::switch_at`]) then count passes.
    pub fn plan_chunks(&mut self, passes: usize, chunk: usize) {
        self.budget = passes;
        self.chunk = chunk.max(1);
    }

    /// Chooses the cache's eviction policy on both sides (a model still building gets it
    /// when it is taken over); a hand-over then carries the slots' positions after
    /// eviction, and for the score-based policies their attention mass.
    pub fn set_kv_policy(&mut self, cfg: EvictConfig) -> Result<()> {
        self.cpu.set_kv_policy(cfg)?;
        if let Gpu::Ready(g) = &mut self.gpu {
            g.set_kv_policy(cfg)?;
        }
        Ok(())
    }

    /// Slots evicted so far, both sides together (each eviction happens on one side).
    pub fn kv_evicted(&self) -> u64 {
        self.cpu.kv.evicted() + self.gpu().map_or(0, |g| g.kv.evicted())
    }

    /// Forgets the sequence on both sides but keeps everything else: the side holding
    /// it, the pass count and the switch records (`perplexity`'s chunks, each from an
    /// empty cache, as one job).
    pub fn clear_sequence(&mut self) {
        self.cpu.reset();
        if let Gpu::Ready(g) = &mut self.gpu {
            g.reset();
        }
    }

    /// Forgets the sequence on both sides; the sequence goes back to the host backend
    /// (a zero-copy cache back in host hands: should mapping it fail, the note says so
    /// and the next pass on the host reports the error).
    pub fn reset(&mut self) {
        if self.on_gpu {
            if let Err(e) = self.give_caches(true) {
                self.note = Some(std::format!("zero-copy cache: mapping it back failed: {e}"));
            }
        }
        self.cpu.reset();
        if let Gpu::Ready(g) = &mut self.gpu {
            g.reset();
        }
        self.on_gpu = false;
        self.produced = 0;
        self.switches.clear();
    }

    /// Waits for a background build and binds the model (tests; a forced switch).
    pub fn wait_gpu(&mut self) -> Result<bool> {
        if matches!(self.gpu, Gpu::Loading(..)) {
            self.bind_gpu(true)?;
        }
        Ok(matches!(self.gpu, Gpu::Ready(_)))
    }

    /// Binds a finished (or, with `wait`, any) background build. A failed build turns
    /// the second backend off (noted, the host model serves on).
    fn bind_gpu(&mut self, wait: bool) -> Result<()> {
        let done = match &self.gpu {
            Gpu::Loading(h, _) => wait || h.is_finished(),
            _ => false,
        };
        if !done {
            return Ok(());
        }
        let Gpu::Loading(h, _) = core::mem::replace(&mut self.gpu, Gpu::Off) else {
            return Ok(());
        };
        let parts = match h.join() {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                self.note = Some(std::format!("second backend failed to build: {e}"));
                self.log(format_args!("hybrid: {}", self.note.as_deref().unwrap_or("")));
                return Ok(());
            }
            Err(_) => {
                self.note = Some(String::from("second backend's build thread panicked"));
                return Ok(());
            }
        };
        let mut g = parts.model;
        check_same_model(&self.cpu.cfg, &g.cfg)?;
        let policy = self.cpu.kv.policy();
        if g.kv.policy() != policy {
            g.set_kv_policy(policy)?;
        }
        self.size_stage(&self.cpu.kv_shape(), g.kv.dtype());
        let at = self.t0.elapsed().as_secs_f64() * 1e3;
        self.gpu_ready_ms = Some(at);
        self.log(format_args!(
            "hybrid: {} ready at {at:.0} ms (build {:.0} ms, bind {:.0} ms, warm-up {:.0} ms, all off this thread) with {} tokens cached",
            g.backend.name(),
            parts.build_ms,
            parts.bind_ms,
            parts.warm_ms,
            self.cpu.kv.len()
        ));
        self.gpu = Gpu::Ready(g);
        self.share_caches()
    }

    /// Zero-copy: where the device can wrap the host model's cache memory (one dtype and
    /// capacity on both sides, unified host memory, an address it can wrap), the device
    /// model's K/V buffers become buffers over that memory and its own are freed; the
    /// host model keeps the sequence, so they start mapped (in host hands). Otherwise the
    /// reason is logged (`--verbose`) and the counted copy hand-over stays. Runs once,
    /// when the device model is taken over with the sequence on the host side (its
    /// warm-up ran on its own cache, never on the live one).
    fn share_caches(&mut self) -> Result<()> {
        if self.shared || self.on_gpu || !matches!(self.gpu, Gpu::Ready(_)) {
            return Ok(());
        }
        let off = self.opts.no_zero_copy || std::env::var("ANTIGRAVITY_HYBRID_ZERO_COPY").is_ok_and(|v| v == "0");
        let why = if off {
            Some(String::from("zero-copy turned off"))
        } else {
            self.try_share()?
        };
        match why {
            Some(why) => self.log(format_args!("hybrid: copying the cache at each switch: {why}")),
            None => {
                self.shared = true;
                self.log(format_args!(
                    "hybrid: zero-copy cache: the second backend's K/V buffers wrap {}'s ({} layers); a switch moves no cache bytes",
                    self.cpu.backend.name(),
                    self.cpu.cfg.n_layer
                ));
            }
        }
        Ok(())
    }

    /// [`Hybrid::share_caches`]' work: `Some(why not)` where it cannot share (nothing
    /// changed then).
    fn try_share(&mut self) -> Result<Option<String>> {
        let Gpu::Ready(g) = &mut self.gpu else {
            return Ok(Some(String::from("no second backend")));
        };
        let (c, d) = (self.cpu.kv_shape(), g.kv_shape());
        if c.dtype != d.dtype || c.capacity != d.capacity || c.n_layer != d.n_layer || c.kv_dim != d.kv_dim {
            return Ok(Some(std::format!(
                "the caches differ ({} x {} slots on {}, {} x {} on {})",
                c.dtype.name(),
                c.capacity,
                self.cpu.backend.name(),
                d.dtype.name(),
                d.capacity,
                g.backend.name()
            )));
        }
        // Every layer's pair is made before any is swapped in: on a refusal nothing
        // changes (the buffers made so far are dropped, the copy path stays).
        let mut made = Vec::with_capacity(c.n_layer);
        for l in 0..c.n_layer {
            let mut pair = [None, None];
            let (ck, cv) = self.cpu.kv.layer_buffers_mut(l);
            for (slot, buf) in pair.iter_mut().zip([ck, cv]) {
                let Some(host) = self.cpu.backend.host_bytes_mut(buf) else {
                    return Ok(Some(String::from("the host model's cache is not writable host memory")));
                };
                // SAFETY: the memory is the host model's cache buffer (its heap
                // allocation never moves). It outlives the device's buffer: the host
                // model is a private field no one outside can replace, the device model
                // that holds the buffer is dropped before it (field order, `Drop`), and
                // the device model itself is reachable only through `&` from outside
                // (`Hybrid::gpu`), so its cache cannot be taken out. The host touches
                // the memory only while the buffers are mapped: they are mapped below,
                // unmapped only in `switch` when the device takes the sequence, and
                // mapped again when the host takes it back (or on `reset`).
                match unsafe { g.backend.share_host_mut(host.as_mut_ptr(), host.len()) }? {
                    Ok(b) => *slot = Some(b),
                    Err(why) => return Ok(Some(why)),
                }
            }
            let [Some(k), Some(v)] = pair else {
                return Ok(Some(String::from("a buffer was not made")));
            };
            made.push((k, v));
        }
        for (l, (mut k, mut v)) in made.into_iter().enumerate() {
            g.backend.host_access(&mut k, true)?;
            g.backend.host_access(&mut v, true)?;
            // The old buffers (the device's own cache) are dropped only after the new
            // ones exist, so no new handle can equal a released one.
            let old = g.kv.replace_layer(&g.backend, l, k, v)?;
            drop(old);
        }
        Ok(None)
    }

    /// Hands every shared cache buffer to the host (`true`) or the device.
    fn give_caches(&mut self, host: bool) -> Result<()> {
        let Gpu::Ready(g) = &mut self.gpu else {
            return Ok(());
        };
        if !self.shared {
            return Ok(());
        }
        for l in 0..g.cfg.n_layer {
            let (k, v) = g.kv.layer_buffers_mut(l);
            g.backend.host_access(k, host)?;
            g.backend.host_access(v, host)?;
        }
        Ok(())
    }

    /// Before a pass of `n` tokens on the host while the second backend builds: when
    /// the table says the build's remaining time plus the device's pass is shorter than
    /// the host's pass (a long prompt on a fast device), waits for the build — but only
    /// until the time that estimate assumed (with slack): a build running late (a cold
    /// driver cache: seconds instead of the table's warm start) never holds the first
    /// token back; the host runs the pass then.
    fn wait_for_prefill(&mut self, n: usize) -> Result<()> {
        let (Gpu::Loading(h, started), Some(x)) = (&self.gpu, &self.opts.crossover) else {
            return Ok(());
        };
        let elapsed = started.elapsed().as_secs_f64();
        let left_s = x.gpu.init_ms / 1e3 - elapsed;
        let (Some(gpu_s), Some(cpu_s)) = (x.gpu.prefill_s(n), x.cpu.prefill_s(n)) else {
            return Ok(());
        };
        let gpu_s = gpu_s + x.gpu.first_ms / 1e3;
        if n <= 1 || h.is_finished() || left_s <= 0.0 || left_s + gpu_s >= cpu_s {
            return Ok(());
        }
        // Worth waiting up to the host's own pass time (beyond it, waiting loses).
        let deadline = std::time::Duration::from_secs_f64(elapsed + (cpu_s - gpu_s));
        while !h.is_finished() {
            if started.elapsed() >= deadline {
                self.log(format_args!(
                    "hybrid: {n}-token pass: the device is late ({:.0} ms into its build); the host runs it",
                    started.elapsed().as_secs_f64() * 1e3
                ));
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        self.log(format_args!(
            "hybrid: {n}-token pass: waited {:.0} ms for the device (then {:.1} ms there against the host's {:.0} ms)",
            (started.elapsed().as_secs_f64() - elapsed) * 1e3,
            gpu_s * 1e3,
            cpu_s * 1e3
        ));
        self.bind_gpu(true)
    }

    /// Whether the sequence should be on the other side before the pass producing token
    /// `k`: forced, or (no forced switches) the policy's estimate.
    fn wants_move(&mut self, k: usize, n_new: usize) -> Result<bool> {
        if !self.opts.switch_at.is_empty() {
            let forced = self.opts.switch_at.binary_search(&k).is_ok();
            if forced && !self.on_gpu {
                self.wait_gpu()?;
            }
            return Ok(forced);
        }
        if !self.on_gpu && n_new > 1 {
            // The prompt's pass: on the device only if it wins the pass itself, its first
            // pass's cost included — the time to first token never waits for a device
            // that does not clearly win it. Decode decides from the next token.
            let (Some(x), true) = (&self.opts.crossover, self.gpu_ready_or_loading()) else {
                return Ok(false);
            };
            let (Some(c), Some(g)) = (x.cpu.prefill_s(n_new), x.gpu.prefill_s(n_new)) else {
                return Ok(false);
            };
            let handover = x.handover_s(self.kv_len(), self.kv_bytes_per_token());
            if g + x.gpu.first_ms / 1e3 + handover >= c {
                self.log(format_args!(
                    "hybrid: {n_new}-token pass on {}: {:.1} ms there against {:.1} ms + {:.0} ms first pass on the device",
                    self.cpu.backend.name(),
                    c * 1e3,
                    g * 1e3,
                    x.gpu.first_ms
                ));
                return Ok(false);
            }
            self.wait_for_prefill(n_new)?;
        }
        if !self.on_gpu {
            self.bind_gpu(false)?;
        }
        let Gpu::Ready(_) = &self.gpu else {
            return Ok(false);
        };
        let Some(x) = &self.opts.crossover else {
            return Ok(false);
        };
        let left = self.budget.saturating_sub(k);
        if left == 0 {
            return Ok(false);
        }
        let ctx = self.kv_len();
        let e = if self.chunk > 0 {
            x.estimate_chunks(self.on_gpu, ctx, self.chunk, left, self.kv_bytes_per_token())
        } else {
            x.estimate(self.on_gpu, ctx, n_new, left, self.kv_bytes_per_token())
        };
        let Some(e) = e else {
            return Ok(false);
        };
        let go = e.move_s < e.stay_s;
        if go || self.switches.is_empty() {
            self.log(format_args!(
                "hybrid: token {k}, {ctx} cached, {left} to go on {}: stay {:.1} ms, move {:.1} ms -> {}",
                self.active_name(),
                e.stay_s * 1e3,
                e.move_s * 1e3,
                if go { "move" } else { "stay" }
            ));
        }
        Ok(go)
    }

    /// At the boundary before the pass producing token `k`: moves the sequence if due.
    fn boundary(&mut self, k: usize, n_new: usize) -> Result<()> {
        if self.wants_move(k, n_new)? {
            self.switch(k)?;
        }
        Ok(())
    }

    /// Moves the sequence to the other backend now (before the pass producing token
    /// `token`); an error if the other is not built.
    pub fn switch(&mut self, token: usize) -> Result<()> {
        let Gpu::Ready(g) = &mut self.gpu else {
            return Err(Error::invalid(
                "hybrid: no second backend to switch to (not built, or its build failed)",
            ));
        };
        let t = Instant::now();
        let (from, to, bytes) = if self.shared {
            // Zero-copy: the cache is one memory; hand it over, then the slots' state.
            let (from, to) = if self.on_gpu {
                (g.backend.name(), self.cpu.backend.name())
            } else {
                (self.cpu.backend.name(), g.backend.name())
            };
            let to_host = self.on_gpu;
            self.give_caches(to_host)?;
            let Gpu::Ready(g) = &mut self.gpu else {
                return Err(Error::invalid("hybrid: the second backend went away"));
            };
            let b = if to_host {
                hand_state(&mut **g, &mut self.cpu, &mut self.stage)?
            } else {
                hand_state(&mut self.cpu, &mut **g, &mut self.stage)?
            };
            (from, to, b)
        } else if self.on_gpu {
            let b = handover(&mut **g, &mut self.cpu, &mut self.stage, &mut self.conv)?;
            (g.backend.name(), self.cpu.backend.name(), b)
        } else {
            let b = handover(&mut self.cpu, &mut **g, &mut self.stage, &mut self.conv)?;
            (self.cpu.backend.name(), g.backend.name(), b)
        };
        let ms = t.elapsed().as_secs_f64() * 1e3;
        self.on_gpu = !self.on_gpu;
        if self.switches.len() < MAX_SWITCHES {
            self.switches.push(Switch {
                token,
                from,
                to,
                bytes,
                ms,
            });
        }
        self.log(format_args!(
            "hybrid: switch before token {token}: {from} -> {to}, {bytes} cache bytes in {ms:.2} ms"
        ));
        Ok(())
    }

    /// [`Llama::forward`] on the backend holding the sequence (moved first if due).
    pub fn forward(&mut self, ids: &[u32]) -> Result<&[f32]> {
        self.boundary(self.produced, ids.len())?;
        self.produced += 1;
        match (&mut self.gpu, self.on_gpu) {
            (Gpu::Ready(g), true) => g.forward(ids),
            _ => self.cpu.forward(ids),
        }
    }

    /// [`Llama::forward_argmax`] on the backend holding the sequence.
    pub fn forward_argmax(&mut self, ids: &[u32]) -> Result<u32> {
        self.boundary(self.produced, ids.len())?;
        self.produced += 1;
        match (&mut self.gpu, self.on_gpu) {
            (Gpu::Ready(g), true) => g.forward_argmax(ids),
            _ => self.cpu.forward_argmax(ids),
        }
    }

    /// [`Llama::decode_greedy`] across backends: runs on the active side until a move
    /// may be due (the pass queued ahead is dropped there, as for a stop), asks
    /// ([`HybridOptions`]), moves the sequence if so, and goes on from the last token.
    /// Under the policy it asks when a background build has just finished and then
    /// every [`RECHECK`] tokens.
    pub fn decode_greedy(
        &mut self,
        first: u32,
        steps: usize,
        mut on_token: impl FnMut(u32) -> Result<bool>,
    ) -> Result<usize> {
        if self.evicting() {
            return self.decode_stepwise(first, steps, on_token);
        }
        let mut kept_total = 0;
        let mut next = first;
        while kept_total < steps {
            self.boundary(self.produced, 1)?;
            let left = steps - kept_total;
            let mut w = Watch {
                produced: self.produced,
                last: next,
                stopped: false,
                forced: &self.opts.switch_at,
                policy: self.opts.switch_at.is_empty() && self.opts.crossover.is_some(),
                budget: self.budget,
            };
            let kept = if self.on_gpu {
                let Gpu::Ready(g) = &mut self.gpu else {
                    return Err(Error::invalid("hybrid: on the second backend without one"));
                };
                g.decode_greedy(next, left, |t| w.step(t, &mut on_token, None::<&JoinHandle<()>>, true))?
            } else {
                let (loading, ready) = match &self.gpu {
                    Gpu::Loading(h, _) => (Some(h), false),
                    Gpu::Ready(_) => (None, true),
                    Gpu::Off => (None, false),
                };
                self.cpu
                    .decode_greedy(next, left, |t| w.step(t, &mut on_token, loading, ready))?
            };
            let (produced, last, stopped) = (w.produced, w.last, w.stopped);
            self.produced = produced;
            kept_total += kept;
            next = last;
            if stopped || kept == 0 {
                break;
            }
        }
        Ok(kept_total)
    }

    /// Whether the cache evicts (`--kv-policy`).
    fn evicting(&self) -> bool {
        self.cpu.kv.policy().policy != KvPolicy::None
    }

    /// [`Hybrid::decode_greedy`] one pass at a time, a boundary before each: under an
    /// eviction policy, where the pipelined loop's pass queued ahead may already have
    /// evicted when a boundary stops it (dropping that pass cannot undo an eviction).
    fn decode_stepwise(
        &mut self,
        first: u32,
        steps: usize,
        mut on_token: impl FnMut(u32) -> Result<bool>,
    ) -> Result<usize> {
        let mut next = first;
        for i in 0..steps {
            next = self.forward_argmax(&[next])?;
            if !on_token(next)? {
                return Ok(i + 1);
            }
        }
        Ok(steps)
    }
}

impl<C: Backend, G: Backend> Drop for Hybrid<C, G> {
    /// Waits for a build still under way: a process whose `main` returns while an
    /// OpenCL driver compiles on another thread can crash in the driver's exit handlers
    /// (measured: NVIDIA, a segfault after the output was complete). Only a job that
    /// ends before a cold build finishes pays this, after its last token.
    fn drop(&mut self) {
        match core::mem::replace(&mut self.gpu, Gpu::Off) {
            Gpu::Loading(h, _) => {
                let _ = h.join();
            }
            // The device model first: its cache may wrap the host model's memory (its
            // buffers finish their queue on drop, before that memory is freed).
            Gpu::Ready(g) => drop(g),
            Gpu::Off => {}
        }
    }
}

/// Under the policy, how often (in tokens) a decode that runs with both backends ready
/// stops to ask again (each stop drops the pass queued ahead: one pass of work).
pub const RECHECK: usize = 32;

/// What [`Hybrid::decode_greedy`] watches per token.
struct Watch<'a> {
    produced: usize,
    last: u32,
    stopped: bool,
    forced: &'a [usize],
    policy: bool,
    budget: usize,
}

impl Watch<'_> {
    /// Hands token `t` on; `false` stops the run (the caller's stop, or a boundary where
    /// a move may be due).
    fn step<G>(
        &mut self,
        t: u32,
        on_token: &mut impl FnMut(u32) -> Result<bool>,
        loading: Option<&JoinHandle<G>>,
        both_ready: bool,
    ) -> Result<bool> {
        self.produced += 1;
        self.last = t;
        if !on_token(t)? {
            self.stopped = true;
            return Ok(false);
        }
        let k = self.produced;
        let due = self.forced.binary_search(&k).is_ok()
            || (self.policy
                && k < self.budget
                && (loading.is_some_and(|h| h.is_finished()) || (both_ready && k.is_multiple_of(RECHECK))));
        Ok(!due)
    }
}

/// A cache's geometry, for sizing the staging buffers.
pub struct KvShape {
    pub n_layer: usize,
    pub capacity: usize,
    pub kv_dim: usize,
    pub dtype: DType,
}

impl<B: Backend> Llama<B> {
    /// The KV cache's geometry.
    pub fn kv_shape(&self) -> KvShape {
        KvShape {
            n_layer: self.cfg.n_layer,
            capacity: self.kv.capacity(),
            kv_dim: self.cfg.n_kv_head * self.cfg.head_dim,
            dtype: self.kv.dtype(),
        }
    }
}

fn check_same_model(a: &LlamaConfig, b: &LlamaConfig) -> Result<()> {
    let key = |c: &LlamaConfig| (c.n_layer, c.dim, c.n_head, c.n_kv_head, c.head_dim, c.ffn_dim, c.vocab);
    if key(a) != key(b) {
        return Err(Error::invalid(std::format!(
            "hybrid: the two backends loaded different models ({:?} vs {:?})",
            key(a),
            key(b)
        )));
    }
    Ok(())
}

/// Bytes of `n` slots of `kv_dim` values of `dtype` (a cache row is one slot).
fn slot_bytes(dtype: DType, kv_dim: usize, n: usize, what: &str) -> Result<usize> {
    let row = dtype.row_bytes(kv_dim).ok_or_else(|| {
        Error::invalid(std::format!(
            "hybrid hand-over: {what} KV cache rows of {kv_dim} values are not whole {} blocks",
            dtype.name()
        ))
    })?;
    Ok(n * row)
}

/// Converts one layer's K or V slots between the two float cache types (`from` and
/// `to` hold the same number of values).
fn convert(sd: DType, dd: DType, from: &[u8], to: &mut [u8]) -> Result<()> {
    match (sd, dd) {
        (DType::F16, DType::F32) => {
            let from: &[half::f16] = bytemuck::cast_slice(from);
            let to: &mut [f32] = bytemuck::cast_slice_mut(to);
            for (o, i) in to.iter_mut().zip(from) {
                *o = i.to_f32();
            }
            Ok(())
        }
        (DType::F32, DType::F16) => {
            let from: &[f32] = bytemuck::cast_slice(from);
            let to: &mut [half::f16] = bytemuck::cast_slice_mut(to);
            for (o, &i) in to.iter_mut().zip(from) {
                *o = half::f16::from_f32(i);
            }
            Ok(())
        }
        (a, _) if !matches!(a, DType::F32 | DType::F16) => Err(Error::dtype("hybrid hand-over", "source KV cache", a)),
        (_, b) => Err(Error::dtype("hybrid hand-over", "destination KV cache", b)),
    }
}

/// Copies the used KV slots of `src` into `dst` (converting between f32 and f16 where
/// the two caches differ; any one cache type, q8_0 included, is copied as bytes) and
/// gives `dst` their positions. Returns the bytes written into `dst`'s cache.
///
/// Each byte is copied once: where one side keeps its cache in host memory
/// ([`Backend::host_bytes`]: the CPU), the other side's `upload` reads from it, or its
/// `download` writes into it, directly (an OpenCL write or read of the used range: on a
/// unified-memory device, PoCL, one memcpy). Only between two device backends, or when
/// the dtypes differ, does a layer pass through `stage` (and `conv`), which must then
/// hold one layer's K of the wider dtype at full capacity; nothing is allocated.
pub fn handover<S: Backend, D: Backend>(
    src: &mut Llama<S>,
    dst: &mut Llama<D>,
    stage: &mut [u8],
    conv: &mut [u8],
) -> Result<u64> {
    let (s, d) = (src.kv_shape(), dst.kv_shape());
    if s.n_layer != d.n_layer || s.kv_dim != d.kv_dim {
        return Err(Error::invalid(std::format!(
            "hybrid hand-over: caches of different shapes ({} layers × {} vs {} × {})",
            s.n_layer,
            s.kv_dim,
            d.n_layer,
            d.kv_dim
        )));
    }
    let n = src.kv.len();
    if n > d.capacity {
        return Err(Error::range(
            String::from("cached tokens handed over (the other backend's --ctx)"),
            n as u64,
            d.capacity as u64,
        ));
    }
    let same = s.dtype == d.dtype;
    let float = |t: DType| matches!(t, DType::F32 | DType::F16);
    let convertible = float(s.dtype) && float(d.dtype);
    if !(same || convertible) {
        // Checked before anything is written: converting is f16 ⇄ f32 only.
        let (what, t) = if float(s.dtype) {
            ("destination KV cache", d.dtype)
        } else {
            ("source KV cache", s.dtype)
        };
        return Err(Error::dtype(
            "hybrid hand-over (between different cache types)",
            what,
            t,
        ));
    }
    let (sb, db) = (
        slot_bytes(s.dtype, s.kv_dim, n, "source")?,
        slot_bytes(d.dtype, d.kv_dim, n, "destination")?,
    );
    let mut bytes = 0u64;
    for l in 0..s.n_layer {
        for which in 0..2 {
            let (sk, sv) = src.kv.views(l);
            let sbuf = if which == 0 { sk.buf } else { sv.buf };
            let (dk, dv) = dst.kv.layer_mut(l);
            let dbuf = if which == 0 { dk.buf } else { dv.buf };
            // The source's bytes: in place where the host can read them, else downloaded
            // (straight into the destination when that is host memory of the same type).
            let from: &[u8] = match src.backend.host_bytes(sbuf) {
                Some(b) => &b[..sb],
                None => {
                    if same {
                        if let Some(to) = dst.backend.host_bytes_mut(dbuf) {
                            src.backend.download(sbuf, 0, &mut to[..sb])?;
                            bytes += sb as u64;
                            continue;
                        }
                    }
                    let st = stage
                        .get_mut(..sb)
                        .ok_or_else(|| Error::invalid("hybrid hand-over: staging buffer too small"))?;
                    src.backend.download(sbuf, 0, st)?;
                    &stage[..sb]
                }
            };
            if same {
                match dst.backend.host_bytes_mut(dbuf) {
                    Some(to) => to[..sb].copy_from_slice(from),
                    None => dst.backend.upload(dbuf, 0, from)?,
                }
            } else {
                match dst.backend.host_bytes_mut(dbuf) {
                    Some(to) => convert(s.dtype, d.dtype, from, &mut to[..db])?,
                    None => {
                        let c = conv
                            .get_mut(..db)
                            .ok_or_else(|| Error::invalid("hybrid hand-over: conversion buffer too small"))?;
                        convert(s.dtype, d.dtype, from, c)?;
                        dst.backend.upload(dbuf, 0, &conv[..db])?;
                    }
                }
            }
            bytes += db as u64;
        }
    }
    Ok(bytes + hand_state(src, dst, stage)?)
}

/// The part of a hand-over beyond the K/V bytes: the slots' positions (and, for a
/// score-based policy, their attention mass, through `stage`). All of a zero-copy
/// switch's work once the cache itself is in the consumer's hands. Returns the bytes
/// written (the mass).
fn hand_state<S: Backend, D: Backend>(src: &mut Llama<S>, dst: &mut Llama<D>, stage: &mut [u8]) -> Result<u64> {
    let n = src.kv.len();
    if n > dst.kv.capacity() {
        return Err(Error::range(
            String::from("cached tokens handed over (the other backend's --ctx)"),
            n as u64,
            dst.kv.capacity() as u64,
        ));
    }
    let mut bytes = 0u64;
    // A score-based policy ranks slots by their accumulated attention: that goes along.
    if let (Some(sm), true) = (src.kv.mass_buffer(), dst.kv.mass_buffer().is_some()) {
        let mb = n * 4;
        if stage.len() < mb {
            return Err(Error::invalid(
                "hybrid hand-over: staging buffer too small for the attention mass",
            ));
        }
        src.backend.download(sm, 0, &mut stage[..mb])?;
        if let Some(dm) = dst.kv.mass_buffer_mut() {
            dst.backend.upload(dm, 0, &stage[..mb])?;
        }
        bytes += mb as u64;
    }
    dst.kv.set_slots(src.kv.positions(), src.kv.next_pos())?;
    Ok(bytes)
}
