//! Controlled experiment for decode speed (issue: CPU speed round 2): does a matvec
//! kernel that is fast on cache-resident weights stay fast when the weights stream from
//! DRAM, as they do in decode?
//!
//! `cargo run --release -p antigravity-core --example decode_stream [MiB] [isa]`
//!
//! For each weight dtype, runs the same `ops::matmul` (one token, one thread) over
//! * `l2`: one 1536 × 576 matrix, repeated (≈ 0.5 MB, cache-resident);
//! * `dram`: distinct matrices of the same shape filling `MiB` (default 512), visited in
//!   turn, so every byte comes from memory as in a decode step;
//! * `dram+huge`: the same with `madvise(MADV_HUGEPAGE)` on the arena (Linux).
//!
//! and a plain read of the arena (sum of u64, the machine's one-thread read ceiling).
//! Prints JSON lines; `cpu_gbps` divides by the thread's on-CPU time
//! (`/proc/thread-self/schedstat`), so a shared machine's steal does not count.

use std::sync::Arc;
use std::time::Instant;

use antigravity_core::backend::HostRegion;

use antigravity_core::backend::{Backend, BufferKind, Reservation};
use antigravity_core::cpu::{CpuBackend, Isa, Kernels};
use antigravity_core::quant::{BlockQ4_0, BlockQ8_0};
use antigravity_core::{ops, DType, Shape, TensorMut, TensorRef};

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(512);
    let isa = std::env::args()
        .nth(2)
        .and_then(|s| Isa::parse(&s))
        .unwrap_or(Kernels::detect().isa);
    let threads: usize = std::env::args().nth(3).and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut b = CpuBackend::with_threads(isa, threads).expect("isa not supported here");
    b.reserve(Reservation {
        max_tokens: 1,
        max_row: 1536,
        max_ctx: 1,
        n_head: 1,
    })
    .unwrap();
    let (n_out, n_in) = (1536usize, 576usize);
    for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
        let mbytes = dtype.row_bytes(n_in).unwrap() * n_out;
        let n_mats = (mib << 20) / mbytes;
        for huge in [false, true] {
            let mut w = b.alloc(mbytes * n_mats, BufferKind::Shared).unwrap();
            if huge {
                advise_huge(w.bytes()); // before the first write faults pages in
            }
            let bytes = random_bytes(mbytes * n_mats);
            b.upload(&mut w, 0, &bytes).unwrap();
            drop(bytes);
            let x = b.alloc(n_in * 4, BufferKind::Shared).unwrap();
            let mut y = b.alloc(n_out * 4, BufferKind::Shared).unwrap();
            let modes: &[(&str, usize)] = if huge {
                &[("dram+huge", n_mats)]
            } else {
                &[("l2", 1), ("dram", n_mats)]
            };
            for &(mode, mats) in modes {
                let mut i = 0usize;
                let mut run = |b: &mut CpuBackend| {
                    ops::matmul(
                        b,
                        TensorRef::new(&w, (i % mats) * mbytes, dtype, Shape::d2(n_out, n_in)),
                        TensorRef::new(&x, 0, DType::F32, Shape::d2(1, n_in)),
                        TensorMut::new(&mut y, 0, DType::F32, Shape::d2(1, n_out)),
                    )
                    .unwrap();
                    i += 1;
                };
                for _ in 0..mats.min(64) {
                    run(&mut b);
                }
                let (t0, c0) = (Instant::now(), on_cpu_ns());
                let mut iters = 0u64;
                while t0.elapsed().as_secs_f64() < 1.0 || iters < 2 * mats as u64 {
                    run(&mut b);
                    iters += 1;
                }
                let dt = t0.elapsed().as_secs_f64();
                let dc = (on_cpu_ns() - c0) as f64 * 1e-9;
                let gb = (mbytes as u64 * iters) as f64 / 1e9;
                println!(
                    "{{\"isa\":\"{}\",\"threads\":{threads},\"dtype\":\"{dtype:?}\",\"mode\":\"{mode}\",\"set_mib\":{},\"gbps\":{:.2},\"cpu_gbps\":{:.2}}}",
                    isa.name(),
                    (mbytes * mats) >> 20,
                    gb / dt,
                    gb / dc
                );
            }
            if !huge && dtype != DType::Q4_1 {
                // One weight row at a time through the single-row dot (one sequential
                // stream instead of the 4-row kernel's four), with and without a
                // software prefetch `pf` rows ahead.
                let k = *b.kernels();
                let xf = vec![0.5f32; n_in];
                let mut xq = vec![<BlockQ8_0 as bytemuck::Zeroable>::zeroed(); n_in / 32];
                (k.quantize_row_q8_0)(&xf, &mut xq);
                let a = w.bytes();
                let rb = dtype.row_bytes(n_in).unwrap();
                for pf in [0usize, 4, 16] {
                    let mut yv = vec![0f32; n_out];
                    let (t0, c0) = (Instant::now(), on_cpu_ns());
                    let mut iters = 0u64;
                    while t0.elapsed().as_secs_f64() < 1.0 || iters < 2 * n_mats as u64 {
                        let m = &a[(iters as usize % n_mats) * mbytes..][..mbytes];
                        for r in 0..n_out {
                            if pf > 0 && r + pf < n_out {
                                prefetch(&m[(r + pf) * rb..(r + pf + 1) * rb]);
                            }
                            let row = &m[r * rb..(r + 1) * rb];
                            yv[r] = match dtype {
                                DType::Q4_0 => (k.vec_dot_q4_0_q8_0)(bytemuck::cast_slice::<u8, BlockQ4_0>(row), &xq),
                                _ => (k.vec_dot_q8_0_q8_0)(bytemuck::cast_slice::<u8, BlockQ8_0>(row), &xq),
                            };
                        }
                        iters += 1;
                    }
                    let dt = t0.elapsed().as_secs_f64();
                    let dc = (on_cpu_ns() - c0) as f64 * 1e-9;
                    let gb = (mbytes as u64 * iters) as f64 / 1e9;
                    println!(
                        "{{\"dtype\":\"{dtype:?}\",\"mode\":\"dram-1row-pf{pf}\",\"gbps\":{:.2},\"cpu_gbps\":{:.2},\"y0\":{}}}",
                        gb / dt,
                        gb / dc,
                        yv[0]
                    );
                }
            }
            if !huge {
                // The x8 layout (`cpu::repack`), as the backend imports weights: one
                // repacked matrix per `import_weight`, visited in turn.
                let ws: Vec<_> = (0..n_mats)
                    .map(|m| {
                        let bytes = w.bytes()[m * mbytes..(m + 1) * mbytes].to_vec();
                        b.import_weight(HostRegion::new(Arc::new(bytes)), dtype, Shape::d2(n_out, n_in))
                            .unwrap()
                    })
                    .collect();
                assert!(
                    ws[0].is_repacked(),
                    "weights were not repacked (ISA without x8 kernels?)"
                );
                for (mode, mats) in [("l2-x8", 1), ("dram-x8", n_mats)] {
                    let mut i = 0usize;
                    let (t0, c0) = (Instant::now(), on_cpu_ns());
                    let mut iters = 0u64;
                    while t0.elapsed().as_secs_f64() < 1.0 || iters < 2 * mats as u64 {
                        ops::matmul(
                            &mut b,
                            TensorRef::new(&ws[i % mats], 0, dtype, Shape::d2(n_out, n_in)),
                            TensorRef::new(&x, 0, DType::F32, Shape::d2(1, n_in)),
                            TensorMut::new(&mut y, 0, DType::F32, Shape::d2(1, n_out)),
                        )
                        .unwrap();
                        i += 1;
                        iters += 1;
                    }
                    let dt = t0.elapsed().as_secs_f64();
                    let dc = (on_cpu_ns() - c0) as f64 * 1e-9;
                    let gb = (mbytes as u64 * iters) as f64 / 1e9;
                    println!(
                        "{{\"isa\":\"{}\",\"threads\":{threads},\"dtype\":\"{dtype:?}\",\"mode\":\"{mode}\",\"gbps\":{:.2},\"cpu_gbps\":{:.2}}}",
                        isa.name(),
                        gb / dt,
                        gb / dc
                    );
                }
            }
            if dtype == DType::Q4_0 {
                let a = w.bytes();
                let words: &[u64] = bytemuck::cast_slice(&a[..a.len() / 8 * 8]);
                let (t0, c0) = (Instant::now(), on_cpu_ns());
                let mut s = 0u64;
                for _ in 0..3 {
                    s = s.wrapping_add(sum(words));
                }
                let dt = t0.elapsed().as_secs_f64();
                let dc = (on_cpu_ns() - c0) as f64 * 1e-9;
                let gb = (words.len() * 8 * 3) as f64 / 1e9;
                println!(
                    "{{\"mode\":\"read{}\",\"set_mib\":{},\"gbps\":{:.2},\"cpu_gbps\":{:.2},\"sum\":{}}}",
                    if huge { "+huge" } else { "" },
                    a.len() >> 20,
                    gb / dt,
                    gb / dc,
                    s % 7
                );
            }
        }
    }
}

fn sum(w: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in w.chunks_exact(8) {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(c[k]);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut s = 0x1234_5678u32;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s & 0x3f) as u8 // keeps every f16 scale finite and small
        })
        .collect()
}

#[cfg(target_os = "linux")]
fn advise_huge(b: &[u8]) {
    extern "C" {
        fn madvise(addr: *mut core::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    const MADV_HUGEPAGE: i32 = 14;
    let start = (b.as_ptr() as usize).next_multiple_of(4096);
    let len = (b.as_ptr() as usize + b.len() - start) / 4096 * 4096;
    // SAFETY: the range lies inside a live allocation; MADV_HUGEPAGE changes no contents.
    let r = unsafe { madvise(start as *mut _, len, MADV_HUGEPAGE) };
    eprintln!("madvise(MADV_HUGEPAGE) = {r}");
}
#[cfg(not(target_os = "linux"))]
fn advise_huge(_: &[u8]) {}

/// Prefetches every cache line of `b` into all cache levels.
fn prefetch(b: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..b.len()).step_by(64) {
        // SAFETY: prefetch is a hint; the address lies inside `b`.
        unsafe { core::arch::x86_64::_mm_prefetch(b.as_ptr().add(off) as *const i8, core::arch::x86_64::_MM_HINT_T0) };
    }
    // Off x86-64 the hint is not issued (the example measures x86 streaming).
    #[cfg(not(target_arch = "x86_64"))]
    let _ = b;
}

fn on_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
