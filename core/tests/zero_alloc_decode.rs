//! After setup, the forward pass allocates nothing: a counting global allocator watches
//! prefill chunks and decode steps of a real (tiny) model on the CPU backend, and (with
//! the `opencl` feature, on the OpenCL device present) decode steps over every cache
//! dtype the OpenCL backend lists, with and without eviction.
//!
//! The counter is process-wide (the CPU backend's pool workers allocate on their own
//! threads, and those must count), so nothing else may run in the process: this file is
//! its own `main` (`harness = false` in Cargo.toml), running its checks one after the
//! other. Under libtest it flaked on a loaded machine — one allocation charged to the
//! first counted case of the second test (Window policy, f16 cache) — because libtest's
//! main thread allocates while tests run: it formats each finished test's result line
//! (on a busy machine, late enough to land in the next test's counted steps) and prints
//! the "has been running for over 60 seconds" notice.

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

fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    COUNT.store(0, Ordering::SeqCst);
    ON.store(true, Ordering::SeqCst);
    let r = f();
    ON.store(false, Ordering::SeqCst);
    (r, COUNT.load(Ordering::SeqCst))
}

fn prefill_and_decode_allocate_nothing() {
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

/// The tiny Q4_0 model on `be` with a 32-slot cache of `kv_type` under `policy` (4 sinks,
/// `shift` keeps 2, `block` slots freed at once).
fn evicting_model<B: antigravity_core::backend::Backend>(
    be: B,
    kv_type: DType,
    policy: antigravity_core::kv_evict::KvPolicy,
    block: usize,
) -> Llama<B> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../oracle/models/tiny-untied");
    let (cfg, w) = model::hf::load(&dir, &be, DType::Q4_0).unwrap();
    let opts = RunOptions {
        ctx: 32,
        max_batch: 8,
        all_logits: false,
        kv_type: Some(kv_type),
    };
    let mut m = Llama::new(cfg, w, be, opts).unwrap();
    m.set_kv_policy(antigravity_core::kv_evict::EvictConfig {
        policy,
        sinks: 4,
        keep: 2,
        block,
    })
    .unwrap();
    m
}

/// Decoding through a full cache under every eviction policy (and block) allocates
/// nothing either: each step (or each block's first) evicts (compaction, re-rotation, the score policies' mass read back into
/// the cache's preallocated host copy) before it runs.
fn decode_with_eviction_allocates_nothing() {
    use antigravity_core::kv_evict::KvPolicy;
    let policies = [
        KvPolicy::Window,
        KvPolicy::Sinks,
        KvPolicy::Shift,
        KvPolicy::H2o,
        KvPolicy::Tova,
    ];
    // Block 1 evicts at every step; 5 evicts a block every fifth step (the steps between
    // run on a part-empty cache).
    let cases = policies
        .into_iter()
        .flat_map(|p| [(p, DType::F16), (p, DType::F32)])
        .flat_map(|(p, t)| [(p, t, 1), (p, t, 5)]);
    for (policy, kv_type, block) in cases {
        let mut m = evicting_model(CpuBackend::new(), kv_type, policy, block);
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
            "{policy:?}, {kv_type} cache, block {block}: 61 evicting steps allocated {n} times"
        );
    }
}

/// The OpenCL backend (PoCL in CI) with every cache dtype it lists: a prefill and decode
/// steps without eviction, then decode through a full cache under `sinks` (compaction and
/// re-rotation on the device every step) and `h2o` (the mass read back into the cache's
/// preallocated host copy): no allocation after warm-up. Skips, saying why, when no
/// OpenCL device is found (an error when `ANTIGRAVITY_OPENCL_REQUIRED` is set).
#[cfg(feature = "opencl")]
fn opencl_decode_allocates_nothing() {
    use antigravity_core::backend::Backend;
    use antigravity_core::kv_evict::KvPolicy;
    use antigravity_core::opencl::{OpenClBackend, OpenClOptions};
    let make = || OpenClBackend::new(OpenClOptions::from_env());
    let kv_types = match make() {
        Ok(be) => be.capabilities().kv_dtypes,
        Err(e) => {
            assert!(
                std::env::var("ANTIGRAVITY_OPENCL_REQUIRED").is_err(),
                "OpenCL required but unavailable: {e}"
            );
            println!("SKIP opencl_decode_allocates_nothing: no OpenCL device ({e})");
            return;
        }
    };
    for &kv_type in kv_types {
        for policy in [KvPolicy::None, KvPolicy::Sinks, KvPolicy::H2o] {
            let mut m = evicting_model(make().unwrap(), kv_type, policy, 1);
            // Warm-up: a chunk and a step; with a policy, fill the cache and evict once.
            let prompt: Vec<u32> = (0..if policy == KvPolicy::None { 8 } else { 40 })
                .map(|i| (i * 7 % 300) as u32)
                .collect();
            m.forward(&prompt).unwrap();
            m.forward(&[4]).unwrap();
            let evicted = m.kv.evicted();
            if policy == KvPolicy::None {
                let (r, n) = counted(|| m.forward(&prompt).map(|_| ()));
                r.unwrap();
                assert_eq!(n, 0, "opencl, {kv_type} cache: an 8-token chunk allocated {n} times");
            }
            let steps = if policy == KvPolicy::None { 12 } else { 20 };
            let (r, n) = counted(|| {
                for t in 0..steps {
                    m.forward(&[t % 300])?;
                }
                Ok::<(), antigravity_core::Error>(())
            });
            r.unwrap();
            if policy != KvPolicy::None {
                assert!(
                    m.kv.evicted() >= evicted + steps as u64,
                    "{policy:?}: the steps must evict"
                );
            }
            assert_eq!(
                n,
                0,
                "opencl, {kv_type} cache, {}: {steps} decode steps allocated {n} times",
                policy.name()
            );
            println!(
                "opencl {kv_type} cache, --kv-policy {}: {steps} decode steps, 0 allocations ({} evicted)",
                policy.name(),
                m.kv.evicted() - evicted
            );
        }
    }
}

#[cfg(not(feature = "opencl"))]
fn opencl_decode_allocates_nothing() {
    println!("SKIP opencl_decode_allocates_nothing: built without the `opencl` feature");
}

/// Runs the checks one after the other (no other thread in the process). Understands the
/// test-runner arguments cargo may pass: name filters, `--skip NAME`, `--exact`, `--list`
/// and `--ignored` (there are no ignored checks); other flags are accepted and ignored.
fn main() {
    let checks: [(&str, fn()); 3] = [
        (
            "prefill_and_decode_allocate_nothing",
            prefill_and_decode_allocate_nothing,
        ),
        (
            "decode_with_eviction_allocates_nothing",
            decode_with_eviction_allocates_nothing,
        ),
        ("opencl_decode_allocates_nothing", opencl_decode_allocates_nothing),
    ];
    let (mut filters, mut skips, mut exact, mut list) = (Vec::new(), Vec::new(), false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => list = true,
            "--exact" => exact = true,
            "--ignored" => return,
            "--skip" => skips.extend(args.next()),
            // Flags that take a value.
            "--test-threads" | "--format" | "--color" | "--logfile" | "-Z" => {
                args.next();
            }
            f if f.starts_with('-') => {}
            name => filters.push(name.to_string()),
        }
    }
    let hit = |name: &str, pat: &String| {
        if exact {
            name == pat
        } else {
            name.contains(pat.as_str())
        }
    };
    let chosen: Vec<_> = checks
        .into_iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| hit(n, f)))
        .filter(|(n, _)| !skips.iter().any(|s| hit(n, s)))
        .collect();
    if list {
        for (n, _) in &chosen {
            println!("{n}: test");
        }
        return;
    }
    println!("\nrunning {} checks (no libtest: see the file's doc)", chosen.len());
    for (name, check) in &chosen {
        check();
        println!("test {name} ... ok");
    }
}
