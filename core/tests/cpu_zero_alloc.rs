//! After warm-up, CPU matmuls (every weight dtype, decode and prefill shapes) and
//! attention with two threads allocate nothing — on any thread. A counting global
//! allocator sees every allocation of the process, workers included.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use antigravity_core::backend::{AttnParams, Backend, BufferKind, Reservation};
use antigravity_core::cpu::{CpuBackend, Isa, Kernels};
use antigravity_core::{ops, DType, Shape, TensorMut, TensorRef};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn cpu_ops_allocate_nothing_after_warmup() {
    let isa = Kernels::detect().isa;
    let mut b = CpuBackend::with_threads(isa, 2).unwrap();
    let (n_out, n_in, max_tok) = (96, 128, 8);
    let (n_head, n_kv, hd, cap) = (4, 2, 32, 16);
    b.reserve(Reservation {
        max_tokens: max_tok,
        max_row: n_in,
        max_ctx: cap,
        n_head,
    })
    .unwrap();
    let dtypes = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
    ];
    let ws: Vec<_> = dtypes
        .iter()
        .map(|&d| b.alloc(d.row_bytes(n_in).unwrap() * n_out, BufferKind::Shared).unwrap())
        .collect();
    let x = b.alloc(max_tok * n_in * 4, BufferKind::Shared).unwrap();
    let mut y = b.alloc(max_tok * n_out * 4, BufferKind::Shared).unwrap();
    let q = b.alloc(max_tok * n_head * hd * 4, BufferKind::Shared).unwrap();
    let kv = b.alloc(cap * n_kv * hd * 4, BufferKind::Shared).unwrap();
    let mut o = b.alloc(max_tok * n_head * hd * 4, BufferKind::Shared).unwrap();

    let mut step = |b: &mut CpuBackend| {
        for n_tok in [1, max_tok] {
            for (w, &d) in ws.iter().zip(&dtypes) {
                ops::matmul(
                    b,
                    TensorRef::new(w, 0, d, Shape::d2(n_out, n_in)),
                    TensorRef::new(&x, 0, DType::F32, Shape::d2(n_tok, n_in)),
                    TensorMut::new(&mut y, 0, DType::F32, Shape::d2(n_tok, n_out)),
                )
                .unwrap();
            }
            let p = AttnParams {
                n_head,
                n_kv_head: n_kv,
                head_dim: hd,
                scale: 0.1,
                n_past: 2,
            };
            ops::attention(
                b,
                TensorRef::new(&q, 0, DType::F32, Shape::d3(n_tok, n_head, hd)),
                TensorRef::new(&kv, 0, DType::F32, Shape::d3(cap, n_kv, hd)),
                TensorRef::new(&kv, 0, DType::F32, Shape::d3(cap, n_kv, hd)),
                p,
                TensorMut::new(&mut o, 0, DType::F32, Shape::d3(n_tok, n_head, hd)),
            )
            .unwrap();
        }
    };
    step(&mut b); // warm-up
    let before = ALLOCS.load(Ordering::SeqCst);
    for _ in 0..20 {
        step(&mut b);
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(
        after - before,
        0,
        "{} allocations in 20 steps (isa {}, threads 2)",
        after - before,
        isa.name()
    );
    let _ = Isa::Scalar;
}
