//! ADAPTER — the one place where the real model meets the end-to-end bench.
//!
//! `e2e` drives any [`DecodeTarget`]; this file implements it for
//! `antigravity_core::model::Llama<CpuBackend>` loaded from a GGUF file: loading with
//! the bench's options, prefill/decode as `Llama::forward`, per-op times through the
//! model's `Profiler` hook, and the KV-cache size.
//!
//! `--backend opencl` builds the OpenCL backend in `load` instead (an enum holds the
//! model on either); on a GPU the profiler synchronises in `begin`/`end` and
//! `transfer_bytes` reports the backend's copy counters. `--backend hybrid` loads the
//! hybrid driver as `generate --backend hybrid` does (`crate::hybrid::load`: the crossover
//! table decides whether the device is built in the background) and runs every pass
//! through it; it reports its switches and which side ran how many tokens, per phase.

pub use real::ModelTarget;

/// The real model.
mod real {
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use antigravity_core::cpu::{CpuBackend, Isa};
    use antigravity_core::dtype::DType;
    use antigravity_core::gguf::GgufFile;
    use antigravity_core::kv_evict::EvictConfig;
    use antigravity_core::model::hybrid::Hybrid;
    use antigravity_core::model::{self, Llama, OpKind, Profiler, RunOptions};
    use antigravity_core::opencl::OpenClBackend;
    use antigravity_core::Backend;

    use crate::bench::e2e::{BackendTokens, DecodeTarget, Phase, SwitchRow, TargetInfo, TargetOptions, TransferBytes};
    use crate::bench::error::{Error, Result};
    use crate::common::{BackendArg, IsaChoice, KvTypeArg, ModelArgs, RunArgs};
    use crate::hybrid::{Engine, HybridJob, Work};

    /// Per-op time, summed, shared between the profiler (inside the model) and the target.
    type OpTimes = Arc<Mutex<[Duration; OpKind::ALL.len()]>>;

    /// Times each op group the model marks. The CPU backend is synchronous, so wall time
    /// between `begin` and `end` is the op's cost.
    struct OpClock {
        started: Option<(OpKind, Instant)>,
        times: OpTimes,
    }

    impl<B: Backend> Profiler<B> for OpClock {
        fn begin(&mut self, backend: &mut B, op: OpKind) {
            // On a queue-based device, wait for earlier work so the interval is this op's.
            if !backend.capabilities().synchronous {
                let _ = backend.synchronize();
            }
            self.started = Some((op, Instant::now()));
        }
        fn end(&mut self, backend: &mut B, op: OpKind) {
            if !backend.capabilities().synchronous {
                let _ = backend.synchronize();
            }
            if let Some((began, t)) = self.started.take() {
                if began == op {
                    if let Some(i) = OpKind::ALL.iter().position(|&k| k == op) {
                        // A poisoned lock only means a panic elsewhere; the sums are still sums.
                        self.times.lock().unwrap_or_else(|e| e.into_inner())[i] += t.elapsed();
                    }
                }
            }
        }
    }

    /// The model on whichever backend the bench asked for (boxed: the two differ in size
    /// by kilobytes of backend state).
    enum AnyLlama {
        Cpu(Box<Llama<CpuBackend>>),
        Cl(Box<Llama<OpenClBackend>>),
        Hybrid(Box<HybridTarget>),
    }

    /// Runs the same expression on any variant, through the [`Engine`] interface that
    /// `generate` drives a model or a hybrid with.
    macro_rules! on {
        ($self:expr, $m:ident => $e:expr) => {
            match &$self.m {
                AnyLlama::Cpu($m) => $e,
                AnyLlama::Cl($m) => $e,
                AnyLlama::Hybrid(h) => {
                    let $m = &h.h;
                    $e
                }
            }
        };
        (mut $self:expr, $m:ident => $e:expr) => {
            match &mut $self.m {
                AnyLlama::Cpu($m) => $e,
                AnyLlama::Cl($m) => $e,
                AnyLlama::Hybrid(h) => {
                    let $m = &mut h.h;
                    $e
                }
            }
        };
    }

    /// The hybrid and what the bench records of it across its phases (each phase resets
    /// the hybrid, which forgets its switch list: they are kept here first).
    struct HybridTarget {
        h: Box<Hybrid<CpuBackend, OpenClBackend>>,
        phase: Phase,
        switches: Vec<SwitchRow>,
        /// (phase kind, backend, tokens).
        tokens: Vec<BackendTokens>,
        /// Whether the device model has the op profiler yet (it is bound at a boundary).
        gpu_profiled: bool,
    }

    impl HybridTarget {
        /// Keeps the switches of the phase that ends.
        fn keep_switches(&mut self) {
            let phase = self.phase.label();
            self.switches.extend(self.h.switches().iter().map(|w| SwitchRow {
                phase: phase.clone(),
                token: w.token,
                from: w.from.to_string(),
                to: w.to.to_string(),
                bytes: w.bytes,
                ms: w.ms,
            }));
        }
        /// Counts `n` tokens run on the side holding the sequence now (after the pass,
        /// so a switch before it counts for the side that ran it).
        fn count(&mut self, n: usize) {
            let (phase, backend) = (self.phase.kind(), self.h.active_name());
            match self
                .tokens
                .iter_mut()
                .find(|b| b.phase == phase && b.backend == backend)
            {
                Some(b) => b.tokens += n as u64,
                None => self.tokens.push(BackendTokens {
                    phase,
                    backend: backend.to_string(),
                    tokens: n as u64,
                }),
            }
        }
        /// Gives a device model bound since the last pass the op profiler.
        fn profile_gpu(&mut self, times: &OpTimes) {
            if self.gpu_profiled {
                return;
            }
            self.gpu_profiled = self.h.set_gpu_profiler(Some(Box::new(OpClock {
                started: None,
                times: times.clone(),
            })));
        }
    }

    pub struct ModelTarget {
        m: AnyLlama,
        times: OpTimes,
        quant: String,
        threads: u32,
    }

    /// The flags `generate --backend hybrid` would get for the bench's run.
    fn hybrid_args(path: &Path, o: &TargetOptions) -> Result<ModelArgs> {
        let isa = match o.isa.as_deref() {
            None | Some("auto") => None,
            Some(name) => Some(Isa::parse(name).ok_or_else(|| Error::msg(format!("unknown ISA {name}")))?),
        };
        Ok(ModelArgs {
            run: RunArgs {
                model: Some(path.to_path_buf()),
                backend: BackendArg::Hybrid,
                isa: IsaChoice(isa),
                threads: Some(o.threads),
            },
            weights: DType::Q4_0,
            ctx: o.max_ctx,
            kv_type: KvTypeArg::Auto,
        })
    }

    /// `--backend hybrid`: loaded as `generate` loads it, with the bench's context and
    /// the default batch of the other targets on both sides.
    fn load_hybrid(path: &Path, o: &TargetOptions, times: &OpTimes) -> Result<(HybridTarget, String)> {
        let m = hybrid_args(path, o)?;
        let batch = RunOptions::default().max_batch;
        let job = HybridJob {
            work: Work::Generate {
                prompt: o.work.0,
                gen: o.work.1,
            },
            cpu_batch: batch,
            gpu_batch: batch,
            all_logits: false,
            policy: EvictConfig::default(),
        };
        let s = crate::hybrid::load(&m, &o.hybrid, job, Instant::now(), |_| Ok(Vec::new()))
            .map_err(|e| Error::msg(format!("{e:#}")))?;
        let mut h = s.hybrid;
        let quant = h
            .cpu_weights()
            .layers
            .first()
            .map(|l| l.wq.dtype.name().to_string())
            .unwrap_or_else(|| h.cpu_weights().tok_embd.dtype.name().to_string());
        h.set_cpu_profiler(Some(Box::new(OpClock {
            started: None,
            times: times.clone(),
        })));
        let mut t = HybridTarget {
            h: Box::new(h),
            phase: Phase::Prefill(0),
            switches: Vec::new(),
            tokens: Vec::new(),
            gpu_profiled: false,
        };
        t.profile_gpu(times);
        Ok((t, quant))
    }

    fn cpu_backend(isa: Option<&str>) -> Result<CpuBackend> {
        match isa {
            None | Some("auto") => Ok(CpuBackend::new()),
            Some(name) => {
                let isa = Isa::parse(name).ok_or_else(|| Error::msg(format!("unknown ISA {name}")))?;
                CpuBackend::with_isa(isa).ok_or_else(|| Error::msg(format!("this CPU or build lacks ISA {name}")))
            }
        }
    }

    fn build<B: Backend>(be: B, path: &Path, o: &TargetOptions, times: &OpTimes) -> Result<(Llama<B>, String)> {
        let f = GgufFile::open(path)?;
        let (cfg, w) = model::gguf::load(&f, &be)?;
        let quant = w
            .layers
            .first()
            .map(|l| l.wq.dtype.name().to_string())
            .unwrap_or_else(|| w.tok_embd.dtype.name().to_string());
        let opts = RunOptions {
            ctx: o.max_ctx,
            ..RunOptions::default()
        };
        let mut m = Llama::new(cfg, w, be, opts)?;
        m.set_profiler(Some(Box::new(OpClock {
            started: None,
            times: times.clone(),
        })));
        Ok((m, quant))
    }

    impl DecodeTarget for ModelTarget {
        /// A hybrid without a crossover table measures its short one here, so that
        /// minutes of first use on a PoCL machine are not counted as its load time.
        fn prepare(path: &Path, o: &TargetOptions) -> Result<()> {
            if o.backend == "hybrid" {
                crate::hybrid::table(&hybrid_args(path, o)?, &o.hybrid).map_err(|e| Error::msg(format!("{e:#}")))?;
            }
            Ok(())
        }
        fn load(path: &Path, o: &TargetOptions) -> Result<Self> {
            let times: OpTimes = Arc::default();
            let (m, quant, threads) = match o.backend.as_str() {
                "cpu" => {
                    let be = crate::common::set_threads(cpu_backend(o.isa.as_deref())?, o.threads);
                    let (m, q) = build(be, path, o, &times)?;
                    (AnyLlama::Cpu(Box::new(m)), q, o.threads as u32)
                }
                "opencl" => {
                    let be = crate::common::opencl_backend().map_err(|e| Error::msg(format!("{e:#}")))?;
                    let (m, q) = build(be, path, o, &times)?;
                    (AnyLlama::Cl(Box::new(m)), q, 1)
                }
                "hybrid" => {
                    let (h, q) = load_hybrid(path, o, &times)?;
                    (AnyLlama::Hybrid(Box::new(h)), q, o.threads as u32)
                }
                other => return Err(Error::msg(format!("unknown backend {other}"))),
            };
            Ok(ModelTarget {
                m,
                times,
                quant,
                threads,
            })
        }
        fn info(&self) -> TargetInfo {
            on!(self, m => TargetInfo {
                backend: Engine::name(&**m).to_string(),
                isa: Engine::isa(&**m),
                quant: self.quant.clone(),
                threads: self.threads,
            })
        }
        fn vocab_size(&self) -> usize {
            on!(self, m => Engine::vocab(&**m))
        }
        fn reset(&mut self) -> Result<()> {
            match &mut self.m {
                AnyLlama::Cpu(m) => m.reset(),
                AnyLlama::Cl(m) => m.reset(),
                AnyLlama::Hybrid(h) => {
                    h.keep_switches();
                    h.h.reset();
                }
            }
            Ok(())
        }
        fn prefill(&mut self, ids: &[u32]) -> Result<()> {
            on!(mut self, m => Engine::forward(&mut **m, ids).map(|_| ()))?;
            if let AnyLlama::Hybrid(h) = &mut self.m {
                h.count(ids.len());
                h.profile_gpu(&self.times);
            }
            Ok(())
        }
        fn decode_one(&mut self, id: u32) -> Result<()> {
            on!(mut self, m => Engine::forward(&mut **m, &[id]).map(|_| ()))?;
            if let AnyLlama::Hybrid(h) = &mut self.m {
                h.count(1);
                h.profile_gpu(&self.times);
            }
            Ok(())
        }
        fn begin_phase(&mut self, phase: Phase) {
            if let AnyLlama::Hybrid(h) = &mut self.m {
                h.phase = phase;
                h.h.plan(phase.tokens());
            }
        }
        fn switches(&self) -> Vec<SwitchRow> {
            match &self.m {
                AnyLlama::Hybrid(h) => {
                    let mut all = h.switches.clone();
                    let phase = h.phase.label();
                    all.extend(h.h.switches().iter().map(|w| SwitchRow {
                        phase: phase.clone(),
                        token: w.token,
                        from: w.from.to_string(),
                        to: w.to.to_string(),
                        bytes: w.bytes,
                        ms: w.ms,
                    }));
                    all
                }
                _ => Vec::new(),
            }
        }
        fn tokens_by_backend(&self) -> Vec<BackendTokens> {
            match &self.m {
                AnyLlama::Hybrid(h) => h.tokens.clone(),
                _ => Vec::new(),
            }
        }
        fn op_times(&self) -> Vec<(String, Duration)> {
            let t = self.times.lock().unwrap_or_else(|e| e.into_inner());
            OpKind::ALL
                .iter()
                .zip(t.iter())
                .filter(|(_, d)| !d.is_zero())
                .map(|(k, d)| (k.name().to_string(), *d))
                .collect()
        }
        fn reset_op_times(&mut self) {
            *self.times.lock().unwrap_or_else(|e| e.into_inner()) = Default::default();
        }
        fn transfer_bytes(&self) -> TransferBytes {
            let c = on!(self, m => Engine::copied(&**m));
            TransferBytes {
                host_to_device: c.to_device,
                device_to_host: c.to_host,
            }
        }
        fn kv_cache_bytes(&self) -> u64 {
            on!(self, m => Engine::kv_bytes(&**m) as u64)
        }
    }
}
