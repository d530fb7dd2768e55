//! Decoding through the hybrid driver with switches allocates nothing once warm: a
//! counting global allocator watches 100 greedy steps with a hand-over every 7 tokens
//! (two CPU models, f16 and f32 caches, so every hand-over also converts). Its own test
//! binary: the counter is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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

fn tiny(be: CpuBackend, kv: DType) -> Llama<CpuBackend> {
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

#[test]
fn decoding_with_switches_allocates_nothing() {
    let a = tiny(CpuBackend::new(), DType::F16);
    let b = tiny(CpuBackend::with_isa(Isa::Scalar).unwrap(), DType::F32);
    let opts = HybridOptions {
        switch_at: (1..200).step_by(7).collect(),
        ..HybridOptions::default()
    };
    let mut h = Hybrid::with_both(a, b, opts).unwrap();
    // Warm-up: the same generation once (each backend's first passes at a context
    // length may size lazy per-thread scratch).
    for _ in 0..2 {
        h.reset();
        let first = h.forward_argmax(&[4, 5, 6]).unwrap();
        h.decode_greedy(first, 100, |_| Ok(true)).unwrap();
    }
    h.reset();
    let first = h.forward_argmax(&[4, 5, 6]).unwrap();
    let n0 = h.switches().len();
    let (r, n) = counted(|| h.decode_greedy(first, 100, |_| Ok(true)));
    assert_eq!(r.unwrap(), 100);
    assert!(h.switches().len() - n0 >= 14, "{:?}", h.switches().len());
    assert_eq!(n, 0, "100 decode steps with 14 switches allocated {n} times");
}
