//! `Sampler::sample` allocates nothing after construction: a counting global allocator
//! (counting only on the thread under test) sees zero allocations over many draws with
//! every processor on, and in greedy mode.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use antigravity_core::sampling::{Sampler, SamplerConfig};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count_allocs(f: impl FnOnce()) -> usize {
    let before = ALLOCS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.load(Ordering::Relaxed) - before
}

#[test]
fn sample_does_not_allocate() {
    // The counter works: one Vec allocation is seen.
    assert_eq!(
        count_allocs(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(16)))),
        1
    );
    const VOCAB: usize = 49152; // SmolLM2's vocabulary
    let logits: Vec<f32> = (0..VOCAB)
        .map(|i| ((i * 2654435761) % 1000) as f32 / 100.0 - 5.0)
        .collect();
    let history: Vec<u32> = (0..100).map(|i| (i * 37) % VOCAB as u32).collect();
    let configs = [
        SamplerConfig::default(),
        SamplerConfig {
            repeat_penalty: 1.3,
            top_k: 0,
            top_p: 0.9,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            ..SamplerConfig::greedy()
        },
    ];
    for cfg in configs {
        let mut s = Sampler::new(cfg, VOCAB).unwrap();
        let mut sink = 0u64;
        let n = count_allocs(|| {
            for _ in 0..50 {
                sink += s.sample(&logits, &history).unwrap() as u64;
            }
        });
        assert_eq!(n, 0, "{cfg:?}: {n} allocations in 50 samples (sink {sink})");
    }
}
