//! Attention over a long KV cache, per ISA and thread count: decode (one query token
//! after `CTX - 1` cached slots) and a prefill chunk (64 tokens at the end of `CTX`
//! slots), on the Llama 3.2 1B shape (32 query heads, 8 KV heads, head_dim 64: GQA
//! groups of 4) and SmolLM2-135M's (9 / 3 / 64: groups of 3), for each cache dtype.
//!
//! Throughput is query-head × slot pairs (`n_tok · n_head · slots`; each is 128
//! multiply-adds plus one exp), so criterion's `elem/s` divided by the clock is the
//! pairs a cycle. Each call cycles through 16 layers' caches (the 1B model's 16 at
//! 2 000 slots are 64 MiB in f16: more than a 32 MiB last-level cache), so keys and
//! values stream from memory as in a real decode step; `decode-l3` repeats one layer
//! (4 MiB: cache-resident), which separates arithmetic from memory.
//!
//! `cargo bench -p antigravity-core --bench attention` (filter e.g. `-- avx512/t1/decode`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use antigravity_core::backend::{AttnParams, Backend, BufferKind, Reservation};
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::{ops, DType, Shape, TensorMut, TensorRef};

const CTX: usize = 2000;
const LAYERS: usize = 16;
const PREFILL_CHUNK: usize = 64;

/// (label, n_head, n_kv_head, head_dim).
const SHAPES: [(&str, usize, usize, usize); 2] = [("1b", 32, 8, 64), ("smol", 9, 3, 64)];

fn fill(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

fn attention(c: &mut Criterion) {
    for isa in Isa::ALL {
        for threads in [1usize, 2] {
            let Some(mut b) = CpuBackend::with_threads(isa, threads) else {
                eprintln!("skip {}: not supported here", isa.name());
                continue;
            };
            let mut g = c.benchmark_group(format!("attention/{}/t{threads}", isa.name()));
            for (label, n_head, n_kv, hd) in SHAPES {
                b.reserve(Reservation {
                    max_tokens: PREFILL_CHUNK,
                    max_row: n_head * hd,
                    max_ctx: CTX,
                    n_head,
                })
                .unwrap();
                for kv in [DType::F16, DType::F32, DType::Q8_0] {
                    let row = kv.row_bytes(n_kv * hd).unwrap();
                    // Keys and values as the cache holds them: f32 values converted with the
                    // backend's own row store (f16 rounding, Q8_0 blocks).
                    let mut caches = Vec::new();
                    for l in 0..LAYERS {
                        let mut kv_pair = Vec::new();
                        for which in 0..2u32 {
                            let src = fill(CTX * n_kv * hd, 7 + 2 * l as u32 + which);
                            let mut f = b.alloc(src.len() * 4, BufferKind::Shared).unwrap();
                            b.upload(&mut f, 0, bytemuck::cast_slice(&src)).unwrap();
                            let mut buf = b.alloc(CTX * row, BufferKind::Shared).unwrap();
                            ops::store_rows(
                                &mut b,
                                TensorRef::new(&f, 0, DType::F32, Shape::d3(CTX, n_kv, hd)),
                                TensorMut::new(&mut buf, 0, kv, Shape::d3(CTX, n_kv, hd)),
                            )
                            .unwrap();
                            kv_pair.push(buf);
                        }
                        caches.push(kv_pair);
                    }
                    for (mode, n_tok, layers) in [
                        ("decode", 1usize, LAYERS),
                        ("decode-l3", 1, 1),
                        ("prefill64", PREFILL_CHUNK, LAYERS),
                    ] {
                        let qs = fill(n_tok * n_head * hd, 99);
                        let mut q = b.alloc(qs.len() * 4, BufferKind::Shared).unwrap();
                        b.upload(&mut q, 0, bytemuck::cast_slice(&qs)).unwrap();
                        let mut out = b.alloc(qs.len() * 4, BufferKind::Shared).unwrap();
                        let p = AttnParams {
                            n_head,
                            n_kv_head: n_kv,
                            head_dim: hd,
                            scale: 1.0 / (hd as f32).sqrt(),
                            n_past: CTX - n_tok,
                        };
                        // Query-head × slot pairs of one call (causal: token t sees n_past + t + 1).
                        let pairs: usize = (0..n_tok).map(|t| n_head * (p.n_past + t + 1)).sum();
                        g.throughput(Throughput::Elements(pairs as u64));
                        // Also with the grouped kernels switched off ("-perhead": the per-head
                        // kernels looped over each group), in the same run, for A/B.
                        let full = *b.kernels();
                        for grouped in [true, false] {
                            let k = b.kernels_mut();
                            *k = full;
                            if !grouped {
                                if full.attn_group_f16.is_none() && full.attn_group_f32.is_none() {
                                    continue;
                                }
                                k.attn_group_f16 = None;
                                k.attn_group_f32 = None;
                            }
                            let suffix = if grouped { "" } else { "-perhead" };
                            let mut i = 0usize;
                            g.bench_function(
                                BenchmarkId::new(format!("{mode}/{label}"), format!("{kv:?}{suffix}")),
                                |bch| {
                                    bch.iter(|| {
                                        let kvp = &caches[i % layers];
                                        i += 1;
                                        let shape = Shape::d3(CTX, n_kv, hd);
                                        ops::attention(
                                            &mut b,
                                            TensorRef::new(&q, 0, DType::F32, Shape::d3(n_tok, n_head, hd)),
                                            TensorRef::new(&kvp[0], 0, kv, shape),
                                            TensorRef::new(&kvp[1], 0, kv, shape),
                                            p,
                                            TensorMut::new(&mut out, 0, DType::F32, Shape::d3(n_tok, n_head, hd)),
                                        )
                                        .unwrap()
                                    })
                                },
                            );
                        }
                        *b.kernels_mut() = full;
                    }
                }
            }
            g.finish();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = attention
}
criterion_main!(benches);
