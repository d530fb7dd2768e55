//! ADAPTER — the one place where the real model meets the end-to-end bench.
//!
//! `e2e` drives any [`DecodeTarget`]; this file implements it for
//! `antigravity_core::model::Llama<CpuBackend>` loaded from a GGUF file: loading with
//! the bench's options, prefill/decode as `Llama::forward`, per-op times through the
//! model's `Profiler` hook, and the KV-cache size.
//!
//! For `--backend opencl`, build the OpenCL backend in `load` instead (hold an enum of the
//! two `Llama<B>`, or make `ModelTarget` generic and let `load` pick); on a GPU the
//! profiler must synchronise in `begin`/`end` and `transfer_bytes` should report the
//! backend's copy counters.

pub use real::ModelTarget;

/// The real model.
mod real {
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use antigravity_core::cpu::{CpuBackend, Isa};
    use antigravity_core::gguf::GgufFile;
    use antigravity_core::model::{self, Llama, OpKind, Profiler, RunOptions};
    use antigravity_core::opencl::OpenClBackend;
    use antigravity_core::Backend;

    use crate::bench::e2e::{DecodeTarget, TargetInfo, TargetOptions, TransferBytes};
    use crate::bench::error::{Error, Result};

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
    }

    /// Runs the same expression on either variant.
    macro_rules! on {
        ($self:expr, $m:ident => $e:expr) => {
            match &$self.m {
                AnyLlama::Cpu($m) => $e,
                AnyLlama::Cl($m) => $e,
            }
        };
        (mut $self:expr, $m:ident => $e:expr) => {
            match &mut $self.m {
                AnyLlama::Cpu($m) => $e,
                AnyLlama::Cl($m) => $e,
            }
        };
    }

    pub struct ModelTarget {
        m: AnyLlama,
        times: OpTimes,
        quant: String,
        threads: u32,
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
                backend: m.backend.name().to_string(),
                isa: m.backend.isa().to_string(),
                quant: self.quant.clone(),
                threads: self.threads,
            })
        }
        fn vocab_size(&self) -> usize {
            on!(self, m => m.cfg.vocab)
        }
        fn reset(&mut self) -> Result<()> {
            on!(mut self, m => m.reset());
            Ok(())
        }
        fn prefill(&mut self, ids: &[u32]) -> Result<()> {
            on!(mut self, m => m.forward(ids).map(|_| ()))?;
            Ok(())
        }
        fn decode_one(&mut self, id: u32) -> Result<()> {
            on!(mut self, m => m.forward(&[id]).map(|_| ()))?;
            Ok(())
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
            let c = on!(self, m => Backend::copied_bytes(&m.backend));
            TransferBytes {
                host_to_device: c.to_device,
                device_to_host: c.to_host,
            }
        }
        fn kv_cache_bytes(&self) -> u64 {
            on!(self, m => m.kv.bytes() as u64)
        }
    }
}
