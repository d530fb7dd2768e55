//! ADAPTER — the one place where the real model meets the end-to-end bench.
//!
//! `e2e` drives any [`DecodeTarget`]; this file says which type that is for
//! `harness bench`. Until `antigravity_core::model::Llama` lands, [`ModelTarget::load`]
//! returns an error and `bench` skips the end-to-end part with that message (kernel and
//! memory benchmarks still run).
//!
//! To wire the real model, replace the body of this file with an impl like the sketch
//! below (names as the model module is expected to expose them; adjust to the real ones):
//!
//! ```ignore
//! use antigravity_core::cpu::{CpuBackend, Isa};
//! use antigravity_core::model::{Llama, LoadOptions};
//!
//! pub struct ModelTarget { m: Llama<CpuBackend>, threads: u32 }
//!
//! impl DecodeTarget for ModelTarget {
//!     fn load(path: &Path, o: &TargetOptions) -> Result<Self> {
//!         let backend = match o.isa.as_deref() {
//!             None | Some("auto") => CpuBackend::new(),
//!             Some(name) => Isa::parse(name).and_then(CpuBackend::with_isa)
//!                 .ok_or_else(|| Error::msg(format!("ISA {name} not available")))?,
//!         };
//!         let opts = LoadOptions { max_ctx: o.max_ctx, ..Default::default() };
//!         Ok(ModelTarget { m: Llama::load(path, backend, opts)?, threads: o.threads as u32 })
//!     }
//!     fn info(&self) -> TargetInfo { TargetInfo {
//!         backend: self.m.backend().name().into(), isa: self.m.backend().isa().into(),
//!         quant: self.m.weight_dtype().name().into(), threads: self.threads } }
//!     fn vocab_size(&self) -> usize { self.m.config().vocab_size }
//!     fn reset(&mut self) -> Result<()> { self.m.reset(); Ok(()) }
//!     fn prefill(&mut self, ids: &[u32]) -> Result<()> { self.m.prefill(ids)?; Ok(()) }
//!     fn decode_one(&mut self, id: u32) -> Result<()> { self.m.decode(id)?; Ok(()) }
//!     fn op_times(&self) -> Vec<(String, Duration)> { self.m.op_times() /* per op kind */ }
//!     fn reset_op_times(&mut self) { self.m.reset_op_times() }
//!     fn kv_cache_bytes(&self) -> u64 { self.m.kv_cache_bytes() as u64 }
//!     fn transfer_bytes(&self) -> TransferBytes { /* backend copy counters */ }
//! }
//! ```
//!
//! For `--backend opencl`, build the OpenCL backend instead in `load` (the struct then
//! holds an enum of the two `Llama<B>` or is generic and `load` picks one).

use std::path::Path;
use std::time::Duration;

use super::e2e::{DecodeTarget, TargetInfo, TargetOptions};
use super::error::{Error, Result};

/// The model the bench drives. A placeholder until the forward pass lands.
pub struct ModelTarget {
    _private: (),
}

impl DecodeTarget for ModelTarget {
    fn load(path: &Path, _opts: &TargetOptions) -> Result<Self> {
        Err(Error::at(
            path.display().to_string(),
            "end-to-end profiling is not wired yet: the Llama forward pass is not in this \
             build (see harness/src/bench/model_adapter.rs)",
        ))
    }
    fn info(&self) -> TargetInfo {
        unreachable!("ModelTarget is never constructed")
    }
    fn vocab_size(&self) -> usize {
        0
    }
    fn reset(&mut self) -> Result<()> {
        Ok(())
    }
    fn prefill(&mut self, _ids: &[u32]) -> Result<()> {
        Ok(())
    }
    fn decode_one(&mut self, _id: u32) -> Result<()> {
        Ok(())
    }
    fn op_times(&self) -> Vec<(String, Duration)> {
        Vec::new()
    }
    fn reset_op_times(&mut self) {}
    fn kv_cache_bytes(&self) -> u64 {
        0
    }
}
