//! Decoding through the hybrid driver with switches allocates nothing once warm: a
//! counting global allocator watches 100 greedy steps with a hand-over every 7 tokens,
//! both directions, for
//!
//! * two CPU models (f16 and f32 caches, so every hand-over also converts), and
//! * the CPU and the OpenCL device (PoCL here; f32 caches on both sides, as
//!   `--backend hybrid` runs them), with the `opencl` feature — skipped, saying why,
//!   when no device is found (`ANTIGRAVITY_OPENCL_REQUIRED=1` makes that a failure).
//!
//! Its own `main` (`harness = false` in Cargo.toml), as `zero_alloc_decode`: the counter
//! is process-wide (pool workers allocate on their own threads and must count), and
//! libtest's main thread allocates while tests run. What the counter sees is Rust's
//! global allocator: the OpenCL driver's own `malloc`s inside its entry points are the
//! driver's business, not counted (and not ours to fix).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use antigravity_core::backend::Backend;
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::dtype::DType;
use antigravity_core::model::hybrid::{Hybrid, HybridOptions};
use antigravity_core::model::{self, Llama, RunOptions};

struct Counting;
static COUNT: AtomicUsize = AtomicUsize::new(0);
static ON: AtomicBool = AtomicBool::new(false);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    COUNT.store(0, Ordering::SeqCst);
    ON.store(true, Ordering::SeqCst);
    let r = f();
    ON.store(false, Ordering::SeqCst);
    (r, COUNT.load(Ordering::SeqCst))
}

fn tiny<B: Backend>(be: B, kv: DType) -> Llama<B> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oracle/models/tiny-untied");
    let (cfg, w) = model::hf::load(&dir, &be, DType::Q8_0).unwrap();
    let opts = RunOptions {
        ctx: 400,
        max_batch: 16,
        all_logits: false,
        kv_type: Some(kv),
    };
    Llama::new(cfg, w, be, opts).unwrap()
}

/// 100 greedy steps with a forced switch every 7 tokens (from token 1: both directions,
/// 14 times) allocate nothing after two warm-up generations (each backend's first passes
/// at a context length may size lazy scratch).
fn decoding_with_switches_allocates_nothing<C: Backend, G: Backend>(
    a: Llama<C>,
    b: Llama<G>,
    case: &str,
    zero_copy: bool,
) {
    let opts = HybridOptions {
        switch_at: (1..200).step_by(7).collect(),
        ..HybridOptions::default()
    };
    let mut h = Hybrid::with_both(a, b, opts).unwrap();
    assert_eq!(h.zero_copy(), zero_copy, "{case}: zero-copy cache");
    for _ in 0..2 {
        h.reset();
        let first = h.forward_argmax(&[4, 5, 6]).unwrap();
        h.decode_greedy(first, 100, |_| Ok(true)).unwrap();
    }
    h.reset();
    let first = h.forward_argmax(&[4, 5, 6]).unwrap();
    let n0 = h.switches().len();
    let (r, n) = counted(|| h.decode_greedy(first, 100, |_| Ok(true)));
    assert_eq!(r.unwrap(), 100, "{case}");
    let sw = &h.switches()[n0..];
    assert!(sw.len() >= 14, "{case}: {} switches", sw.len());
    // Both directions (the names differ where the backends do).
    assert!(sw[0].from == sw[1].to && sw[0].to == sw[1].from, "{case}: {sw:?}");
    assert_eq!(
        n,
        0,
        "{case}: 100 decode steps with {} switches allocated {n} times",
        sw.len()
    );
    if zero_copy {
        assert!(
            sw.iter().all(|s| s.bytes == 0),
            "{case}: zero-copy switches moved bytes: {sw:?}"
        );
    }
    println!(
        "ok: {case}: 100 decode steps, {} switches ({}), 0 allocations",
        sw.len(),
        if zero_copy { "zero-copy, 0 bytes each" } else { "copied" }
    );
}

#[cfg(feature = "opencl")]
fn cpu_and_opencl() {
    use antigravity_core::opencl::{OpenClBackend, OpenClOptions};
    let g = match OpenClBackend::new(OpenClOptions::from_env()) {
        Ok(g) => g,
        Err(e) => {
            assert!(
                std::env::var("ANTIGRAVITY_OPENCL_REQUIRED").is_err(),
                "OpenCL required but unavailable: {e}"
            );
            println!("SKIP: cpu ⇄ opencl: no OpenCL device ({e})");
            return;
        }
    };
    let name = g.device_info().name.clone();
    // Zero-copy exactly where the device shares host memory (PoCL): the switches then
    // map and unmap the shared cache instead of copying it.
    let unified = g.device_info().unified_memory;
    decoding_with_switches_allocates_nothing(
        tiny(CpuBackend::new(), DType::F32),
        tiny(g, DType::F32),
        &format!("cpu ⇄ opencl ({name}), f32 caches"),
        unified,
    );
}

#[cfg(not(feature = "opencl"))]
fn cpu_and_opencl() {
    println!("SKIP: cpu ⇄ opencl: built without the `opencl` feature");
}

fn main() {
    decoding_with_switches_allocates_nothing(
        tiny(CpuBackend::new(), DType::F16),
        tiny(CpuBackend::with_isa(Isa::Scalar).unwrap(), DType::F32),
        "cpu ⇄ cpu-scalar, f16 ⇄ f32 caches",
        false,
    );
    cpu_and_opencl();
}
