//! Quick matvec throughput (GB/s of weight bytes) per ISA and thread count on SmolLM2
//! shapes: `cargo run --release -p antigravity-core --example matvec_speed [iters]`.
//! Prints one JSON line per (isa, threads, dtype, shape). Random weights; the dot
//! products do not depend on the values.
//!
//! `gbps` is wall-clock. On a shared machine the process is descheduled part of the
//! time, so `cpu_gbps` also divides by the calling thread's on-CPU time (Linux
//! `/proc/thread-self/schedstat`): for threads = 1 that is the speed while running.

use std::time::Instant;

use antigravity_core::backend::{Backend, BufferKind, Reservation};
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::{ops, DType, Shape, TensorMut, TensorRef};

fn main() {
    let min_secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0.3);
    let shapes = [(1536usize, 576usize), (49152, 576), (576, 576), (576, 1536)];
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon, Isa::NeonDotprod] {
        for threads in [1, 2] {
            let Some(mut b) = CpuBackend::with_threads(isa, threads) else {
                continue;
            };
            b.reserve(Reservation {
                max_tokens: 1,
                max_row: 1536,
                max_ctx: 1,
                n_head: 1,
            })
            .unwrap();
            for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
                for &(n_out, n_in) in &shapes {
                    let wbytes = dtype.row_bytes(n_in).unwrap() * n_out;
                    let mut w = b.alloc(wbytes, BufferKind::Shared).unwrap();
                    // Random bytes below 0x40 keep every f16 scale finite and small.
                    let mut s = 0x1234_5678u32;
                    let bytes: Vec<u8> = (0..wbytes)
                        .map(|_| {
                            s ^= s << 13;
                            s ^= s >> 17;
                            s ^= s << 5;
                            (s & 0x3f) as u8
                        })
                        .collect();
                    b.upload(&mut w, 0, &bytes).unwrap();
                    let x = b.alloc(n_in * 4, BufferKind::Shared).unwrap();
                    let mut y = b.alloc(n_out * 4, BufferKind::Shared).unwrap();
                    let mut run = |b: &mut CpuBackend| {
                        ops::matmul(
                            b,
                            TensorRef::new(&w, 0, dtype, Shape::d2(n_out, n_in)),
                            TensorRef::new(&x, 0, DType::F32, Shape::d2(1, n_in)),
                            TensorMut::new(&mut y, 0, DType::F32, Shape::d2(1, n_out)),
                        )
                        .unwrap()
                    };
                    for _ in 0..3 {
                        run(&mut b);
                    }
                    let t0 = Instant::now();
                    let c0 = on_cpu_ns();
                    let mut iters = 0u64;
                    while t0.elapsed().as_secs_f64() < min_secs {
                        run(&mut b);
                        iters += 1;
                    }
                    let dt = t0.elapsed().as_secs_f64() / iters as f64;
                    let dc = (on_cpu_ns() - c0) as f64 * 1e-9 / iters as f64;
                    println!(
                        "{{\"isa\":\"{}\",\"threads\":{threads},\"dtype\":\"{dtype:?}\",\"n_out\":{n_out},\"n_in\":{n_in},\"weight_bytes\":{wbytes},\"us\":{:.2},\"gbps\":{:.2},\"cpu_us\":{:.2},\"cpu_gbps\":{:.2}}}",
                        isa.name(),
                        dt * 1e6,
                        wbytes as f64 / dt / 1e9,
                        dc * 1e6,
                        wbytes as f64 / dc / 1e9
                    );
                }
            }
        }
    }
}

/// Nanoseconds the calling thread has spent on a CPU (0 where unknown).
fn on_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
