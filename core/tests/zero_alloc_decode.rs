//! After setup, the forward pass allocates nothing: a counting global allocator watches
//! prefill chunks and decode steps of a real (tiny) model on the CPU backend.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use antigravity_core::cpu::CpuBackend;
use antigravity_core::dtype::DType;
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

/// The tests of this file run one at a time: the counter sees every thread's
/// allocations, so a test loading a model beside another's counted steps would be
/// charged for them.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    COUNT.store(0, Ordering::SeqCst);
    ON.store(true, Ordering::SeqCst);
    let r = f();
    ON.store(false, Ordering::SeqCst);
    (r, COUNT.load(Ordering::SeqCst))
}

#[test]
fn prefill_and_decode_allocate_nothing() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oracle/models/tiny-untied");
    let cases = [DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::F16, DType::F32]
        .into_iter()
        .flat_map(|w| [(w, DType::F16), (w, DType::F32), (w, DType::Q8_0)]);
    for (wtype, kv_type) in cases {
        let be = CpuBackend::new();
        let (cfg, w) = model::hf::load(&dir, &be, wtype).unwrap();
        let mut m = Llama::new(
            cfg,
            w,
            be,
            RunOptions {
                ctx: 256,
                max_batch: 16,
                all_logits: false,
                kv_type: Some(kv_type),
            },
        )
        .unwrap();
        // Warm-up: one chunk and one step (lets thread pools and lazy statics settle).
        m.forward(&[1, 2, 3]).unwrap();
        m.forward(&[4]).unwrap();
        let prompt: Vec<u32> = (0..40).map(|i| (i * 7 % 300) as u32).collect(); // 3 chunks of ≤ 16
        let (r, n) = counted(|| m.forward(&prompt).map(|_| ()));
        r.unwrap();
        assert_eq!(n, 0, "{wtype}, {kv_type} cache: prefill allocated {n} times");
        let (r, n) = counted(|| {
            for t in 0..50u32 {
                m.forward(&[t % 300])?;
            }
            Ok::<(), antigravity_core::Error>(())
        });
        r.unwrap();
        assert_eq!(n, 0, "{wtype}, {kv_type} cache: 50 decode steps allocated {n} times");
    }
}

/// Decoding through a full cache under every eviction policy allocates nothing either:
/// each step evicts (compaction, re-rotation, the score policies' mass read back into
/// the cache's preallocated host copy) before it runs.
#[test]
fn decode_with_eviction_allocates_nothing() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    use antigravity_core::kv_evict::{EvictConfig, KvPolicy};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oracle/models/tiny-untied");
    let policies = [
        KvPolicy::Window,
        KvPolicy::Sinks,
        KvPolicy::Shift,
        KvPolicy::H2o,
        KvPolicy::Tova,
    ];
    for (policy, kv_type) in policies.into_iter().flat_map(|p| [(p, DType::F16), (p, DType::F32)]) {
        let be = CpuBackend::new();
        let (cfg, w) = model::hf::load(&dir, &be, DType::Q4_0).unwrap();
        let opts = RunOptions {
            ctx: 32,
            max_batch: 8,
            all_logits: false,
            kv_type: Some(kv_type),
        };
        let mut m = Llama::new(cfg, w, be, opts).unwrap();
        m.set_kv_policy(EvictConfig {
            policy,
            sinks: 4,
            keep: 2,
            block: 1,
        })
        .unwrap();
        // Warm-up: fill the cache and evict once.
        let prompt: Vec<u32> = (0..40).map(|i| (i * 7 % 300) as u32).collect();
        m.forward(&prompt).unwrap();
        m.forward(&[4]).unwrap();
        let evicted = m.kv.evicted();
        let (r, n) = counted(|| {
            for t in 0..60u32 {
                m.forward(&[t % 300])?;
            }
            m.forward(&prompt[..8]).map(|_| ())
        });
        r.unwrap();
        assert!(m.kv.evicted() >= evicted + 40, "{policy:?}: the steps must evict");
        assert_eq!(
            n, 0,
            "{policy:?}, {kv_type} cache: 61 evicting steps allocated {n} times"
        );
    }
}
