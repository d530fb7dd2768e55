//! Matvec (decode: one token) throughput per ISA on the SmolLM2-135M shapes, for the
//! weight types a GGUF model uses. Throughput is weight bytes, so criterion reports GB/s
//! of weights streamed — comparable with the machine's read bandwidth.
//!
//! `gemm/…`: prefill, 128 tokens through the Llama 3.2 1B shapes, one thread, for the
//! types of the files people run (Q4_0, Q8_0, the `…_K_M` mixes' types, F16, BF16). Throughput is
//! multiply-adds (`n_out · n_in · 128`), so criterion's `elem/s` is MAC/s — comparable
//! with the core's integer dot-product peak (Zen 4: 2 `vpdpbusd` ymm a cycle, 64 MACs).
//!
//! `cargo bench -p antigravity-core --bench matmul` (all ISAs this CPU has, threads = 1
//! and 2). Filter e.g. `-- avx512/t2/Q4_0` or `-- gemm/avx512/t1/Q5_K`.
//!
//! Weights enter through `Backend::import_weight`, as a model's do (the CPU repacks them
//! into its x8 layout there). Each case runs twice: `l2/…` repeats one matrix (cache-
//! resident), `dram/…` cycles through copies filling 96 MiB (three times a 32 MiB
//! last-level cache), so every byte streams from memory as in decode — the figure that
//! predicts the model.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use antigravity_core::backend::{Backend, BufferKind, HostRegion, Reservation};
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::{ops, DType, Shape, TensorMut, TensorRef};

/// out × in of SmolLM2-135M's matmuls: q/o (576×576), k/v (192×576), gate/up
/// (1536×576), down (576×1536), and the tied output projection (49152×576).
const SHAPES: [(usize, usize); 5] = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)];

fn weights(dtype: DType, n_out: usize, n_in: usize) -> Vec<u8> {
    let n = dtype.row_bytes(n_in).unwrap() * n_out;
    let mut s = 0x9e37_79b9u32;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s & 0x3f) as u8 // keeps f16 scales finite
        })
        .collect()
}

fn matvec(c: &mut Criterion) {
    for isa in Isa::ALL {
        for threads in [1usize, 2] {
            let Some(mut b) = CpuBackend::with_threads(isa, threads) else {
                eprintln!("skip {}: not supported here", isa.name());
                continue;
            };
            b.reserve(Reservation {
                max_tokens: 1,
                max_row: 1536,
                max_ctx: 1,
                n_head: 1,
            })
            .unwrap();
            let mut g = c.benchmark_group(format!("matvec/{}/t{threads}", isa.name()));
            for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
                for (n_out, n_in) in SHAPES {
                    let bytes = weights(dtype, n_out, n_in);
                    let copies = (96usize << 20).div_ceil(bytes.len()).max(2);
                    let ws: Vec<_> = (0..copies)
                        .map(|_| {
                            let region = HostRegion::new(Arc::new(bytes.clone()));
                            b.import_weight(region, dtype, Shape::d2(n_out, n_in)).unwrap()
                        })
                        .collect();
                    let x = b.alloc(n_in * 4, BufferKind::Shared).unwrap();
                    let mut y = b.alloc(n_out * 4, BufferKind::Shared).unwrap();
                    g.throughput(Throughput::Bytes(bytes.len() as u64));
                    for (mode, n) in [("l2", 1), ("dram", copies)] {
                        let mut i = 0usize;
                        g.bench_function(
                            BenchmarkId::new(format!("{mode}/{dtype:?}"), format!("{n_out}x{n_in}")),
                            |bch| {
                                bch.iter(|| {
                                    i += 1;
                                    ops::matmul(
                                        &mut b,
                                        TensorRef::new(&ws[i % n], 0, dtype, Shape::d2(n_out, n_in)),
                                        TensorRef::new(&x, 0, DType::F32, Shape::d2(1, n_in)),
                                        TensorMut::new(&mut y, 0, DType::F32, Shape::d2(1, n_out)),
                                    )
                                    .unwrap()
                                })
                            },
                        );
                    }
                }
            }
            g.finish();
        }
    }
}

/// out × in of Llama 3.2 1B's matmuls: q/o (2048×2048), gate/up (8192×2048), down
/// (2048×8192); k/v (512×2048) are left out (small, the same kernel).
const SHAPES_1B: [(usize, usize); 3] = [(2048, 2048), (8192, 2048), (2048, 8192)];
/// SmolLM2-135M's q/o, gate/up and down shapes, for the prefill of its F16 / BF16 files.
const SHAPES_SMOL_GEMM: [(usize, usize); 3] = [(576, 576), (1536, 576), (576, 1536)];
const GEMM_TOKENS: usize = 128;

fn gemm(c: &mut Criterion) {
    for isa in Isa::ALL {
        let Some(mut b) = CpuBackend::with_threads(isa, 1) else {
            eprintln!("skip {}: not supported here", isa.name());
            continue;
        };
        let reservation = Reservation {
            max_tokens: GEMM_TOKENS,
            max_row: 8192,
            max_ctx: 1,
            n_head: 1,
        };
        b.reserve(reservation).unwrap();
        let mut g = c.benchmark_group(format!("gemm/{}/t1", isa.name()));
        for dtype in [
            DType::Q4_0,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
            DType::F16,
            DType::BF16,
        ] {
            // F16 / BF16: also SmolLM2's shapes, the files those types ship in; their
            // 576-element rows make the per-output reductions count.
            let smol: &[(usize, usize)] = match dtype {
                DType::F16 | DType::BF16 => &SHAPES_SMOL_GEMM,
                _ => &[],
            };
            for &(n_out, n_in) in SHAPES_1B.iter().chain(smol) {
                let region = HostRegion::new(Arc::new(weights(dtype, n_out, n_in)));
                let w = b.import_weight(region, dtype, Shape::d2(n_out, n_in)).unwrap();
                // Again after the import: some scratch is sized only once a matrix of
                // its type was imported (the token-lane K-quant activations).
                b.reserve(reservation).unwrap();
                let mut x = b.alloc(GEMM_TOKENS * n_in * 4, BufferKind::Shared).unwrap();
                let xs: Vec<f32> = (0..GEMM_TOKENS * n_in)
                    .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 250.0)
                    .collect();
                b.upload(&mut x, 0, bytemuck::cast_slice(&xs)).unwrap();
                let mut y = b.alloc(GEMM_TOKENS * n_out * 4, BufferKind::Shared).unwrap();
                g.throughput(Throughput::Elements((n_out * n_in * GEMM_TOKENS) as u64));
                // Q4_K / Q5_K / Q6_K: also with the token-lane kernels switched off ("-x8"), in
                // the same run, for A/B on a shared machine.
                let full = *b.kernels();
                let has_t16 = match dtype {
                    DType::Q4_K => full.gemm_q4_kx8_t16.is_some(),
                    DType::Q5_K => full.gemm_q5_kx8_t16.is_some(),
                    DType::Q6_K => full.gemm_q6_kx8_t16.is_some(),
                    _ => false,
                };
                let variants: &[(&str, bool)] = if has_t16 {
                    &[("", true), ("-x8", false)]
                } else {
                    &[("", true)]
                };
                for &(suffix, t16) in variants {
                    let k = b.kernels_mut();
                    *k = full;
                    if !t16 {
                        k.gemm_q4_kx8_t16 = None;
                        k.gemm_q5_kx8_t16 = None;
                        k.gemm_q6_kx8_t16 = None;
                    }
                    g.bench_function(
                        BenchmarkId::new(format!("{dtype:?}{suffix}"), format!("{n_out}x{n_in}")),
                        |bch| {
                            bch.iter(|| {
                                ops::matmul(
                                    &mut b,
                                    TensorRef::new(&w, 0, dtype, Shape::d2(n_out, n_in)),
                                    TensorRef::new(&x, 0, DType::F32, Shape::d2(GEMM_TOKENS, n_in)),
                                    TensorMut::new(&mut y, 0, DType::F32, Shape::d2(GEMM_TOKENS, n_out)),
                                )
                                .unwrap()
                            })
                        },
                    );
                }
                *b.kernels_mut() = full;
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = matvec, gemm
}
criterion_main!(benches);
