//! Every Backend op on the CPU backend (each ISA this machine has) against a naive f64
//! reference, with the bound and its reason next to each comparison.

use antigravity_core::backend::{AttnParams, Backend, BufferKind, RopeStyle};
use antigravity_core::cpu::{CpuBackend, CpuBuffer, Isa};
use antigravity_core::dtype::DType;
use antigravity_core::ops;
use antigravity_core::quant;
use antigravity_core::rope::{self, Llama3Scaling};
use antigravity_core::tensor::{Shape, TensorMut, TensorRef};

/// A tiny deterministic generator (xorshift) so tests need no extra crates.
struct Rng(u64);
impl Rng {
    fn f(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
}

fn backends() -> Vec<CpuBackend> {
    let mut v = Vec::new();
    for isa in Isa::ALL {
        match CpuBackend::with_isa(isa) {
            Some(b) => v.push(b),
            None => eprintln!(
                "note: ISA {} not available on this CPU/build; not tested here",
                isa.name()
            ),
        }
    }
    v
}

fn buf(b: &CpuBackend, data: &[f32]) -> CpuBuffer {
    let mut x = b.alloc(data.len() * 4, BufferKind::Device).unwrap();
    b.upload(&mut x, 0, bytemuck::cast_slice(data)).unwrap();
    x
}
fn raw(b: &CpuBackend, bytes: &[u8]) -> CpuBuffer {
    let mut x = b.alloc(bytes.len(), BufferKind::Device).unwrap();
    b.upload(&mut x, 0, bytes).unwrap();
    x
}
fn read(b: &CpuBackend, x: &CpuBuffer, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n];
    b.download(x, 0, bytemuck::cast_slice_mut(&mut out)).unwrap();
    out
}
fn tr<'a>(x: &'a CpuBuffer, dtype: DType, dims: &[usize]) -> TensorRef<'a, CpuBackend> {
    TensorRef::new(x, 0, dtype, Shape::new(dims))
}
fn tm<'a>(x: &'a mut CpuBuffer, dims: &[usize]) -> TensorMut<'a, CpuBackend> {
    TensorMut::new(x, 0, DType::F32, Shape::new(dims))
}
fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

#[test]
fn matmul_every_weight_dtype_matches_f64_reference() {
    let mut rng = Rng(7);
    for mut be in backends() {
        be.reserve(antigravity_core::backend::Reservation {
            max_tokens: 5,
            max_row: 192,
            max_ctx: 1,
            n_head: 1,
        })
        .unwrap();
        for dtype in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
        ] {
            for &(n_out, n_in, n_tok) in &[(13usize, 64usize, 1usize), (7, 192, 5), (1, 32, 3)] {
                let w = rng.vec(n_out * n_in, 1.0);
                let x = rng.vec(n_tok * n_in, 1.0);
                let mut wq = vec![0u8; dtype.row_bytes(n_in).unwrap() * n_out];
                for (r, o) in w.chunks(n_in).zip(wq.chunks_mut(dtype.row_bytes(n_in).unwrap())) {
                    quant::quantize_row(dtype, r, o).unwrap();
                }
                // Reference: the *stored* (dequantized) weights times the exact activations, in f64.
                let mut wd = vec![0f32; n_out * n_in];
                for (r, o) in wq.chunks(dtype.row_bytes(n_in).unwrap()).zip(wd.chunks_mut(n_in)) {
                    quant::dequantize_row(dtype, r, o).unwrap();
                }
                let mut want = vec![0f64; n_tok * n_out];
                for t in 0..n_tok {
                    for o in 0..n_out {
                        want[t * n_out + o] = (0..n_in)
                            .map(|i| wd[o * n_in + i] as f64 * x[t * n_in + i] as f64)
                            .sum();
                    }
                }
                let (wb, xb) = (raw(&be, &wq), buf(&be, &x));
                let mut yb = be.alloc(n_tok * n_out * 4, BufferKind::Device).unwrap();
                ops::matmul(
                    &mut be,
                    tr(&wb, dtype, &[n_out, n_in]),
                    tr(&xb, DType::F32, &[n_tok, n_in]),
                    tm(&mut yb, &[n_tok, n_out]),
                )
                .unwrap();
                let got = read(&be, &yb, n_tok * n_out);
                // Bound: quantized weights use Q8_0/Q8_1 activations (ggml's vec_dot_type), whose
                // rounding error is ≤ d/2 = amax/254 per element, so |err| ≤ Σ|w|·amax(x)/254
                // per block; float weights only see f32 summation error (~n·eps).
                let bound = if dtype.is_quantized() {
                    n_in as f64 / 254.0 * 1.0 + 1e-4
                } else {
                    1e-4
                };
                let err = max_abs_diff(&got, &want);
                assert!(
                    err <= bound,
                    "{} {dtype} {n_out}x{n_in}x{n_tok}: err {err} > {bound}",
                    be.isa()
                );
            }
        }
    }
}

#[test]
fn rms_norm_swiglu_add_softmax_match_reference() {
    let mut rng = Rng(11);
    for mut be in backends() {
        let (n, d) = (3, 96);
        let x = rng.vec(n * d, 3.0);
        let w = rng.vec(d, 1.0);
        let (xb, wb) = (buf(&be, &x), buf(&be, &w));
        let mut ob = be.alloc(n * d * 4, BufferKind::Device).unwrap();
        ops::rms_norm(
            &mut be,
            tr(&xb, DType::F32, &[n, d]),
            tr(&wb, DType::F32, &[d]),
            1e-5,
            tm(&mut ob, &[n, d]),
        )
        .unwrap();
        let got = read(&be, &ob, n * d);
        let mut want = vec![0f64; n * d];
        for r in 0..n {
            let row = &x[r * d..(r + 1) * d];
            let ms: f64 = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / d as f64;
            for i in 0..d {
                want[r * d + i] = row[i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64;
            }
        }
        // f32 sum of squares and one rsqrt: relative error ~1e-6; values are O(1..5).
        assert!(max_abs_diff(&got, &want) < 1e-5, "rms_norm {}", be.isa());

        let g = rng.vec(n * d, 6.0);
        let u = rng.vec(n * d, 2.0);
        let (gb, ub) = (buf(&be, &g), buf(&be, &u));
        ops::swiglu(
            &mut be,
            tr(&gb, DType::F32, &[n, d]),
            tr(&ub, DType::F32, &[n, d]),
            tm(&mut ob, &[n, d]),
        )
        .unwrap();
        let got = read(&be, &ob, n * d);
        let want: Vec<f64> = g
            .iter()
            .zip(&u)
            .map(|(&g, &u)| (g as f64) / (1.0 + (-(g as f64)).exp()) * u as f64)
            .collect();
        // One expf (≤ 1 ulp) and three f32 ops on values ≤ 12.
        assert!(max_abs_diff(&got, &want) < 1e-5, "swiglu {}", be.isa());

        let mut acc = buf(&be, &x);
        ops::add(&mut be, tm(&mut acc, &[n, d]), tr(&gb, DType::F32, &[n, d])).unwrap();
        let got = read(&be, &acc, n * d);
        let want: Vec<f64> = x.iter().zip(&g).map(|(a, b)| *a as f64 + *b as f64).collect();
        assert!(max_abs_diff(&got, &want) < 1e-6, "add {}", be.isa()); // one f32 rounding

        let mut sb = buf(&be, &g);
        ops::softmax(&mut be, tm(&mut sb, &[n, d])).unwrap();
        let got = read(&be, &sb, n * d);
        let mut want = vec![0f64; n * d];
        for r in 0..n {
            let row = &g[r * d..(r + 1) * d];
            let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
            let s: f64 = row.iter().map(|v| (*v as f64 - m).exp()).sum();
            for i in 0..d {
                want[r * d + i] = (row[i] as f64 - m).exp() / s;
            }
        }
        assert!(max_abs_diff(&got, &want) < 1e-6, "softmax {}", be.isa()); // probabilities ≤ 1
    }
}

/// f64 RoPE with explicit pair selection.
fn rope_ref(
    x: &[f32],
    n_tok: usize,
    n_heads: usize,
    hd: usize,
    freqs: &[f32],
    pos0: usize,
    style: RopeStyle,
) -> Vec<f64> {
    let mut out: Vec<f64> = x.iter().map(|v| *v as f64).collect();
    for t in 0..n_tok {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * hd;
            for (i, &f) in freqs.iter().enumerate().take(hd / 2) {
                let th = (pos0 + t) as f64 * f as f64;
                let (a, b) = match style {
                    RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                    RopeStyle::HalfSplit => (i, i + hd / 2),
                };
                let (x0, x1) = (x[base + a] as f64, x[base + b] as f64);
                out[base + a] = x0 * th.cos() - x1 * th.sin();
                out[base + b] = x0 * th.sin() + x1 * th.cos();
            }
        }
    }
    out
}

#[test]
fn rope_both_conventions_with_llama3_scaling() {
    let mut rng = Rng(3);
    let s = Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 64,
    };
    let hd = 64;
    let mut freqs = rope::base_inv_freq(10000.0, hd);
    let base = freqs.clone();
    rope::apply_llama3(&mut freqs, &s);
    assert_ne!(freqs, base, "these settings must make the scaling visible");
    for mut be in backends() {
        for style in [RopeStyle::Adjacent, RopeStyle::HalfSplit] {
            let (n_tok, n_heads, pos0) = (5, 3, 250);
            let x = rng.vec(n_tok * n_heads * hd, 1.0);
            let mut xb = buf(&be, &x);
            let fb = buf(&be, &freqs);
            ops::rope(
                &mut be,
                tm(&mut xb, &[n_tok, n_heads, hd]),
                tr(&fb, DType::F32, &[hd / 2]),
                pos0,
                style,
            )
            .unwrap();
            let got = read(&be, &xb, x.len());
            let want = rope_ref(&x, n_tok, n_heads, hd, &freqs, pos0, style);
            // The angle pos·f is formed in f32 (as transformers does): at pos ≤ 255 its
            // rounding is ≤ 255·2⁻²⁴ ≈ 1.5e-5 rad, plus sin/cos ulps.
            assert!(max_abs_diff(&got, &want) < 5e-5, "rope {style:?} {}", be.isa());
        }
    }
}

#[test]
fn gqa_causal_attention_matches_reference() {
    let mut rng = Rng(5);
    for mut be in backends() {
        let (n_head, n_kv, hd, cap) = (6, 2, 16, 40);
        for &(n_past, n_tok) in &[(0usize, 7usize), (20, 1), (13, 4)] {
            be.reserve(antigravity_core::backend::Reservation {
                max_tokens: 8,
                max_row: 64,
                max_ctx: cap,
                n_head,
            })
            .unwrap();
            let q = rng.vec(n_tok * n_head * hd, 1.0);
            let k = rng.vec(cap * n_kv * hd, 1.0);
            let v = rng.vec(cap * n_kv * hd, 1.0);
            let (qb, kb, vb) = (buf(&be, &q), buf(&be, &k), buf(&be, &v));
            let mut ob = be.alloc(q.len() * 4, BufferKind::Device).unwrap();
            let scale = 1.0 / (hd as f32).sqrt();
            let p = AttnParams {
                n_head,
                n_kv_head: n_kv,
                head_dim: hd,
                scale,
                n_past,
            };
            ops::attention(
                &mut be,
                tr(&qb, DType::F32, &[n_tok, n_head, hd]),
                tr(&kb, DType::F32, &[cap, n_kv, hd]),
                tr(&vb, DType::F32, &[cap, n_kv, hd]),
                p,
                tm(&mut ob, &[n_tok, n_head, hd]),
            )
            .unwrap();
            let got = read(&be, &ob, q.len());
            let mut want = vec![0f64; q.len()];
            for t in 0..n_tok {
                for h in 0..n_head {
                    let kvh = h / (n_head / n_kv); // grouped: no K/V replication
                    let ctx = n_past + t + 1;
                    let sc: Vec<f64> = (0..ctx)
                        .map(|s| {
                            (0..hd)
                                .map(|i| q[(t * n_head + h) * hd + i] as f64 * k[(s * n_kv + kvh) * hd + i] as f64)
                                .sum::<f64>()
                                * scale as f64
                        })
                        .collect();
                    let m = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
                    for i in 0..hd {
                        want[(t * n_head + h) * hd + i] = (0..ctx)
                            .map(|s| (sc[s] - m).exp() / z * v[(s * n_kv + kvh) * hd + i] as f64)
                            .sum();
                    }
                }
            }
            // f32 dot products of 16 terms and a softmax over ≤ 40 slots: ~1e-6 relative.
            assert!(
                max_abs_diff(&got, &want) < 1e-5,
                "attention n_past={n_past} n_tok={n_tok} {}",
                be.isa()
            );
        }
    }
}

#[test]
fn get_rows_dequantizes_rows() {
    let mut rng = Rng(9);
    for mut be in backends() {
        for dtype in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
        ] {
            let (rows, d) = (10, 64);
            let t = rng.vec(rows * d, 2.0);
            let rb = dtype.row_bytes(d).unwrap();
            let mut tq = vec![0u8; rb * rows];
            for (r, o) in t.chunks(d).zip(tq.chunks_mut(rb)) {
                quant::quantize_row(dtype, r, o).unwrap();
            }
            let tb = raw(&be, &tq);
            let ids = [3u32, 0, 9, 3];
            let mut ob = be.alloc(ids.len() * d * 4, BufferKind::Device).unwrap();
            ops::get_rows(&mut be, tr(&tb, dtype, &[rows, d]), &ids, tm(&mut ob, &[ids.len(), d])).unwrap();
            let got = read(&be, &ob, ids.len() * d);
            for (j, &id) in ids.iter().enumerate() {
                let mut want = vec![0f32; d];
                quant::dequantize_row(dtype, &tq[id as usize * rb..][..rb], &mut want).unwrap();
                assert_eq!(&got[j * d..(j + 1) * d], &want[..], "{dtype}"); // dequantization is exact
            }
            // A token id past the table is an error, not a panic.
            let e = ops::get_rows(&mut be, tr(&tb, dtype, &[rows, d]), &[10], tm(&mut ob, &[1, d])).unwrap_err();
            assert!(e.to_string().contains("token id"), "{e}");
        }
    }
}

#[test]
fn op_layer_rejects_bad_shapes_and_bounds() {
    let mut be = CpuBackend::with_isa(Isa::Scalar).unwrap();
    let wb = be.alloc(64 * 4, BufferKind::Device).unwrap();
    let xb = be.alloc(8 * 4, BufferKind::Device).unwrap();
    let mut yb = be.alloc(4 * 4, BufferKind::Device).unwrap();
    let e = ops::matmul(
        &mut be,
        tr(&wb, DType::F32, &[2, 32]),
        tr(&xb, DType::F32, &[1, 8]),
        tm(&mut yb, &[1, 2]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("shape mismatch"), "{e}");
    let e = ops::matmul(
        &mut be,
        tr(&wb, DType::F32, &[4, 32]),
        tr(&xb, DType::F32, &[1, 32]),
        tm(&mut yb, &[1, 4]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("exceeds buffer"), "{e}");
    let e = ops::matmul(
        &mut be,
        tr(&wb, DType::Q4_0, &[1, 33]),
        tr(&xb, DType::F32, &[1, 8]),
        tm(&mut yb, &[1, 1]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("whole q4_0 blocks"), "{e}");
}
