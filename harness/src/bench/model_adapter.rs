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
    use std::cell::RefCell;
    use std::path::Path;
    use std::rc::Rc;
    use std::time::{Duration, Instant};

    use antigravity_core::cpu::{CpuBackend, Isa};
    use antigravity_core::gguf::GgufFile;
    use antigravity_core::model::{self, Llama, OpKind, Profiler, RunOptions};
    use antigravity_core::Backend;

    use crate::bench::e2e::{DecodeTarget, TargetInfo, TargetOptions};
    use crate::bench::error::{Error, Result};

    /// Per-op time, summed, shared between the profiler (inside the model) and the target.
    type OpTimes = Rc<RefCell<[Duration; OpKind::ALL.len()]>>;

    /// Times each op group the model marks. The CPU backend is synchronous, so wall time
    /// between `begin` and `end` is the op's cost.
    struct OpClock {
        started: Option<(OpKind, Instant)>,
        times: OpTimes,
    }

    impl<B: Backend> Profiler<B> for OpClock {
        fn begin(&mut self, _backend: &mut B, op: OpKind) {
            self.started = Some((op, Instant::now()));
        }
        fn end(&mut self, _backend: &mut B, op: OpKind) {
            if let Some((began, t)) = self.started.take() {
                if began == op {
                    if let Some(i) = OpKind::ALL.iter().position(|&k| k == op) {
                        self.times.borrow_mut()[i] += t.elapsed();
                    }
                }
            }
        }
    }

    /// The real model, as the bench drives it.
    pub struct ModelTarget {
        m: Llama<CpuBackend>,
        times: OpTimes,
        quant: String,
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

    impl DecodeTarget for ModelTarget {
        fn load(path: &Path, o: &TargetOptions) -> Result<Self> {
            if o.backend != "cpu" {
                return Err(Error::msg(format!(
                    "end-to-end on --backend {} is not wired yet (bench/model_adapter.rs)",
                    o.backend
                )));
            }
            let be = crate::common::set_threads(cpu_backend(o.isa.as_deref())?, o.threads);
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
            let times: OpTimes = Rc::default();
            m.set_profiler(Some(Box::new(OpClock {
                started: None,
                times: times.clone(),
            })));
            Ok(ModelTarget { m, times, quant })
        }
        fn info(&self) -> TargetInfo {
            TargetInfo {
                backend: self.m.backend.name().to_string(),
                isa: self.m.backend.isa().to_string(),
                quant: self.quant.clone(),
                // The CPU backend of this build runs its kernels on the calling thread; when
                // it gains a worker pool, report the pool's size here.
                threads: 1,
            }
        }
        fn vocab_size(&self) -> usize {
            self.m.cfg.vocab
        }
        fn reset(&mut self) -> Result<()> {
            self.m.reset();
            Ok(())
        }
        fn prefill(&mut self, ids: &[u32]) -> Result<()> {
            self.m.forward(ids)?;
            Ok(())
        }
        fn decode_one(&mut self, id: u32) -> Result<()> {
            self.m.forward(&[id])?;
            Ok(())
        }
        fn op_times(&self) -> Vec<(String, Duration)> {
            let t = self.times.borrow();
            OpKind::ALL
                .iter()
                .zip(t.iter())
                .filter(|(_, d)| !d.is_zero())
                .map(|(k, d)| (k.name().to_string(), *d))
                .collect()
        }
        fn reset_op_times(&mut self) {
            *self.times.borrow_mut() = Default::default();
        }
        fn kv_cache_bytes(&self) -> u64 {
            self.m.kv.bytes() as u64
        }
    }
}
