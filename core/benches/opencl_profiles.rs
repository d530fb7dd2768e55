//! OpenCL speed profiles: decode and prefill passes of SmolLM2-135M shapes and the
//! prefill / image-path matmuls, timed by device events. Measurements, not checks (the
//! checks are `core/tests/conformance.rs`; these lived as `#[ignore]`d tests in the
//! former `opencl_conformance.rs`); they print, and assert only that outputs are finite.
//!
//! `cargo bench -p antigravity-core --features opencl --bench opencl_profiles -- [NAME…]`
//! runs the profiles whose names contain a NAME (all four without one):
//! `decode_profile_smollm2_shapes`, `prefill_matmul_profile`,
//! `prefill_profile_smollm2_shapes`, `image_matmul_profile`. The device comes from
//! `ANTIGRAVITY_OPENCL_DEVICE` (docs/opencl.md); without one each profile prints `SKIP`.
//! On a GPU machine, build with `--no-run` here and carry the binary (docs/opencl.md).

use std::sync::Arc;

use antigravity_core::backend::{
    AttnParams, BlockKv, BlockParams, BlockScratch, BlockWeights, HostRegion, Reservation, RopeStyle,
};
use antigravity_core::opencl::{OpenClBackend, OpenClOptions};
use antigravity_core::{ops, Backend, BufferKind, DType, Shape, TensorMut, TensorRef};

fn main() {
    let names: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |n: &str| names.is_empty() || names.iter().any(|w| n.contains(w.as_str()));
    let profiles: [(&str, fn()); 4] = [
        ("decode_profile_smollm2_shapes", decode_profile_smollm2_shapes),
        ("prefill_matmul_profile", prefill_matmul_profile),
        ("prefill_profile_smollm2_shapes", prefill_profile_smollm2_shapes),
        ("image_matmul_profile", image_matmul_profile),
    ];
    for (name, run) in profiles {
        if want(name) {
            eprintln!("== {name}");
            run();
        }
    }
}

// --- helpers (as in the conformance suite) ---------------------------------------------

/// Reports a skip (or fails, when a device is required).
fn skip(reason: &str) {
    if std::env::var("ANTIGRAVITY_OPENCL_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("ANTIGRAVITY_OPENCL_REQUIRED=1 but {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// Deterministic pseudo-random f32s, roughly N(0, scale²) (sum of 4 uniforms).
/// Random Q4_0 blocks (uniform nibbles, scales 0.0043 ± 25 %: weights of std ≈ 0.02, as
/// `harness synth` makes them) filling `bytes`.
fn random_q4_0(bytes: &mut [u8], seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for blk in bytes.chunks_exact_mut(18) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let r = s;
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        blk[2..10].copy_from_slice(&r.to_le_bytes());
        blk[10..18].copy_from_slice(&s.to_le_bytes());
        let jitter = 0.75 + 0.5 * (r >> 40) as f32 / (1u64 << 24) as f32;
        blk[0..2].copy_from_slice(&half::f16::from_f32(0.0043 * jitter).to_le_bytes());
    }
}

/// Random blocks of a Q4_K_M type (Q4_K, Q6_K) filling `bytes`: random quants and
/// scales, f16 super-block scales set to small finite values (weights of a few
/// hundredths, as for Q4_0 above) — only the bytes read per token matter here.
fn random_kq(dtype: DType, bytes: &mut [u8], seed: u64) {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for c in bytes.chunks_mut(8) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        c.copy_from_slice(&s.to_le_bytes()[..c.len()]);
    }
    let h = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match dtype {
        DType::Q4_K => {
            for blk in bytes.chunks_exact_mut(144) {
                blk[0..2].copy_from_slice(&h(6e-5));
                blk[2..4].copy_from_slice(&h(4.5e-4));
            }
        }
        DType::Q6_K => {
            for blk in bytes.chunks_exact_mut(210) {
                blk[208..210].copy_from_slice(&h(1e-5));
            }
        }
        _ => unreachable!("random_kq: {dtype}"),
    }
}

fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n)
        .map(|_| (next() + next() + next() + next()) * 1.732 * scale)
        .collect()
}

/// Leading bytes in front of activations: views at a nonzero offset.
const PAD_F32: usize = 3;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut b = vec![0u8; PAD_F32 * 4];
    b.extend_from_slice(bytemuck::cast_slice(v));
    b
}

/// An f32 activation uploaded into `BufferKind::Device` memory, `PAD_F32` floats in.
struct Act {
    cl: <OpenClBackend as Backend>::Buffer,
    shape: Shape,
}

fn act(g: &OpenClBackend, v: &[f32], shape: Shape) -> Act {
    assert_eq!(v.len(), shape.numel());
    let bytes = f32_bytes(v);
    let mut gb = g.alloc(bytes.len(), BufferKind::Device).unwrap();
    g.upload(&mut gb, 0, &bytes).unwrap();
    Act { cl: gb, shape }
}

/// An empty f32 output.
fn out(g: &OpenClBackend, shape: Shape) -> Act {
    act(g, &vec![0.0; shape.numel()], shape)
}

impl Act {
    fn r_cl(&self) -> TensorRef<'_, OpenClBackend> {
        TensorRef::new(&self.cl, PAD_F32 * 4, DType::F32, self.shape)
    }
    fn m_cl(&mut self) -> TensorMut<'_, OpenClBackend> {
        TensorMut::new(&mut self.cl, PAD_F32 * 4, DType::F32, self.shape)
    }
}

/// A weight matrix [rows, cols] of `dtype`, imported from host bytes (as a model file's
/// tensor would be) at byte offset `pad` inside its region.
struct Weight {
    cl: <OpenClBackend as Backend>::Buffer,
    dtype: DType,
    shape: Shape,
    pad: usize,
    /// The view's offset (`pad`, or 0 for a region that is exactly the tensor).
    pad_cl: usize,
}

fn weight(g: &OpenClBackend, dtype: DType, rows: usize, cols: usize, seed: u64) -> Weight {
    let pad = if dtype.is_quantized() { 2 } else { 32 };
    let rb = dtype.row_bytes(cols).unwrap();
    let vals = randn(rows * cols, seed, 0.5);
    let mut bytes = vec![0u8; pad + rows * rb];
    // Quantize in an aligned scratch row (the typed quantizers need element alignment),
    // then place it at `pad`.
    let mut row = vec![0u32; rb.div_ceil(4)];
    for r in 0..rows {
        let rbytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut row)[..rb];
        antigravity_core::quant::quantize_row(dtype, &vals[r * cols..(r + 1) * cols], rbytes).unwrap();
        bytes[pad + r * rb..pad + (r + 1) * rb].copy_from_slice(rbytes);
    }
    Weight {
        cl: g.import_host(HostRegion::new(Arc::new(bytes))).unwrap(),
        dtype,
        shape: Shape::d2(rows, cols),
        pad,
        pad_cl: pad,
    }
}

impl Weight {
    fn r_cl(&self) -> TensorRef<'_, OpenClBackend> {
        TensorRef::new(&self.cl, self.pad_cl, self.dtype, self.shape)
    }
}

/// A backend with the image path forced on (and profiling, to see which kernel ran).
/// `None` after a printed skip when the device has no `image1d_buffer` support; a device
/// that has it must run the path (a failure here, not a skip).
fn image_backend(max_texels: Option<u64>) -> Option<OpenClBackend> {
    let mut opts = OpenClOptions::from_env();
    opts.images = Some(true);
    opts.image_max_texels = max_texels;
    opts.profiling = true;
    opts.log = true;
    let mut g = match OpenClBackend::new(opts) {
        Ok(g) => g,
        Err(e) => {
            skip(&format!("no usable OpenCL device: {e}"));
            return None;
        }
    };
    if !g.device_info().image1d_buffer {
        skip(&format!("{} has no image1d_buffer support", g.device_info().name));
        return None;
    }
    assert!(
        g.image_path_on(),
        "image1d_buffer device refused the forced image path (see the log line)"
    );
    g.reserve(Reservation {
        max_tokens: 128,
        max_row: 49152,
        max_ctx: 4096,
        n_head: 32,
    })
    .unwrap();
    Some(g)
}

/// A Q4_0 weight as a model loader imports it: `import_weight` of a region holding
/// exactly the tensor (32 bytes into its owner, like a GGUF tensor); the same bytes also
/// imported plainly (`plain`: the buffer kernel's copy, for comparing the two kernels).
struct ImgWeight {
    w: Weight,
    plain: <OpenClBackend as Backend>::Buffer,
}

fn image_weight(g: &OpenClBackend, rows: usize, cols: usize, seed: u64) -> ImgWeight {
    let mut w = weight(g, DType::Q4_0, rows, cols, seed);
    let bytes = rows * DType::Q4_0.row_bytes(cols).unwrap();
    let mut raw = vec![0u8; 32 + bytes];
    g.download(&w.cl, w.pad, &mut raw[32..]).unwrap();
    let region = HostRegion::new(Arc::new(raw)).slice(32, bytes).unwrap();
    let plain = g.import_host(region.clone()).unwrap();
    w.cl = g.import_weight(region, DType::Q4_0, w.shape).unwrap();
    w.pad_cl = 0;
    ImgWeight { w, plain }
}

// --- decode profile (speed, not correctness) ------------------------------------------

/// One SmolLM2-135M-shaped decode pass after another on the OpenCL backend alone
/// (30 layers of random Q4_1 weights, each its own buffer as a model file's would be;
/// Q8_0 tied 49152 × 576 output), with profiling: prints ms per token, the per-kernel
/// device times and the bytes copied per token. Run alone with `-- decode_profile`.
fn decode_profile_smollm2_shapes() {
    use antigravity_core::kv_cache::KvCache;
    let mut opts = OpenClOptions::from_env();
    opts.profiling = true;
    let mut g = match OpenClBackend::new(opts) {
        Ok(g) => g,
        Err(e) => {
            skip(&format!("no usable OpenCL device: {e}"));
            return;
        }
    };
    // ANTIGRAVITY_PROFILE_SHAPE=llama3.2-1b: the Llama 3.2 1B shape (16 layers, hidden
    // 2048, FFN 8192, 32/8 heads, 128256 × 2048 output), every matrix Q4_0 as `harness
    // synth --type q4_0` makes it, from random blocks (quantizing 1.2 G random floats on
    // one thread would take minutes); otherwise SmolLM2-135M's (Q4_1 layers, Q8_0 output).
    let l1b = std::env::var("ANTIGRAVITY_PROFILE_SHAPE").is_ok_and(|v| v == "llama3.2-1b");
    let (n_layer, dim, ffn, n_head, n_kv, hd, vocab, ctx) = if l1b {
        (16, 2048, 8192, 32, 8, 64, 128256, 2048)
    } else {
        (30, 576, 1536, 9, 3, 64, 49152, 2048)
    };
    // ANTIGRAVITY_PROFILE_TYPE=q4_k_m (with the 1B shape): llama.cpp's Q4_K_M mix as
    // `harness synth --type q4_k_m` makes it — Q4_K, with attn_v and ffn_down in Q6_K on
    // the `use_more_bits` layers (the first and last eighth, every third between) and a
    // Q6_K output.
    let kqm = l1b && std::env::var("ANTIGRAVITY_PROFILE_TYPE").is_ok_and(|v| v == "q4_k_m");
    let (layer_t, out_t) = if kqm {
        (DType::Q4_K, DType::Q6_K)
    } else if l1b {
        (DType::Q4_0, DType::Q4_0)
    } else {
        (DType::Q4_1, DType::Q8_0)
    };
    let more_bits = |l: usize| l < n_layer / 8 || l >= 7 * n_layer / 8 || (l - n_layer / 8) % 3 == 2;
    let mat_t = |l: usize, m: usize| {
        if kqm && (m == 2 || m == 6) && more_bits(l) {
            DType::Q6_K
        } else {
            layer_t
        }
    };
    eprintln!(
        "profile weights: layers {layer_t}{}, output {out_t}",
        if kqm {
            " (attn_v, ffn_down Q6_K on the use_more_bits layers)"
        } else {
            ""
        }
    );
    let kv_dim = n_kv * hd;
    g.reserve(Reservation {
        max_tokens: 1,
        max_row: ffn,
        max_ctx: ctx,
        n_head,
    })
    .unwrap();
    let imp = |dtype: DType, rows: usize, cols: usize, seed: u64| {
        let rb = dtype.row_bytes(cols).unwrap();
        let mut bytes = vec![0u8; rows * rb];
        if kqm {
            random_kq(dtype, &mut bytes, seed);
        } else if l1b {
            random_q4_0(&mut bytes, seed);
        } else {
            let vals = randn(rows * cols, seed, 0.05);
            for r in 0..rows {
                antigravity_core::quant::quantize_row(
                    dtype,
                    &vals[r * cols..(r + 1) * cols],
                    &mut bytes[r * rb..(r + 1) * rb],
                )
                .unwrap();
            }
        }
        // (as the model loader imports a weight: the block kernel's repacked Q4_0 copy
        // where the backend makes one)
        let buf = g
            .import_weight(HostRegion::new(Arc::new(bytes)), dtype, Shape::d2(rows, cols))
            .unwrap();
        (buf, Shape::d2(rows, cols), dtype)
    };
    let embd = imp(out_t, vocab, dim, 1);
    let f32v = |v: Vec<f32>| {
        let buf = g
            .import_host(HostRegion::new(Arc::new(bytemuck::cast_slice::<f32, u8>(&v).to_vec())))
            .unwrap();
        (buf, Shape::d1(v.len()), DType::F32)
    };
    let norm = f32v(vec![1.0; dim]);
    let inv_freq = f32v(antigravity_core::rope::base_inv_freq(
        if l1b { 500000.0 } else { 100000.0 },
        hd,
    ));
    let layers: Vec<_> = (0..n_layer)
        .map(|l| {
            let s = 100 * (l as u64 + 1);
            [
                imp(mat_t(l, 0), dim, dim, s),
                imp(mat_t(l, 1), kv_dim, dim, s + 1),
                imp(mat_t(l, 2), kv_dim, dim, s + 2),
                imp(mat_t(l, 3), dim, dim, s + 3),
                imp(mat_t(l, 4), ffn, dim, s + 4),
                imp(mat_t(l, 5), ffn, dim, s + 5),
                imp(mat_t(l, 6), dim, ffn, s + 6),
            ]
        })
        .collect();
    let mut kv = KvCache::new(&g, n_layer, ctx, n_kv, hd, DType::F32, BufferKind::Device).unwrap();
    let a = |g: &OpenClBackend, n: usize| g.alloc(n * 4, BufferKind::Device).unwrap();
    let (mut x, mut xb, mut q, mut att) = (a(&g, dim), a(&g, dim), a(&g, dim), a(&g, dim));
    let (mut hb, mut hb2, mut hb3, mut logits) = (a(&g, ffn), a(&g, ffn), a(&g, ffn), a(&g, vocab));
    type Buf = <OpenClBackend as Backend>::Buffer;
    fn w(t: &(Buf, Shape, DType)) -> TensorRef<'_, OpenClBackend> {
        TensorRef::new(&t.0, 0, t.2, t.1)
    }
    fn r(b: &Buf, n: usize) -> TensorRef<'_, OpenClBackend> {
        TensorRef::new(b, 0, DType::F32, Shape::d2(1, n))
    }
    fn m(b: &mut Buf, n: usize) -> TensorMut<'_, OpenClBackend> {
        TensorMut::new(b, 0, DType::F32, Shape::d2(1, n))
    }
    let mut host_logits = vec![0f32; vocab];
    // ANTIGRAVITY_PROFILE_CONTEXT=n times the 32 tokens after n - 32 untimed ones (long
    // contexts; default 34: tokens 2..34); ANTIGRAVITY_PROFILE_MODES picks modes (comma list).
    let n_tokens = std::env::var("ANTIGRAVITY_PROFILE_CONTEXT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| (34..=ctx).contains(&n))
        .unwrap_or(34);
    let warmup = n_tokens - 32;
    let modes_env = std::env::var("ANTIGRAVITY_PROFILE_MODES").unwrap_or_default();
    // The model's op sequence before the fused ops (15 launches a layer) and with them
    // (6), on the same device and weights.
    let mut xb2 = a(&g, dim);
    // "greedy": the block path with the argmax on the device (4 bytes back, not logits).
    // "pipelined": greedy as Llama::decode_greedy runs it — the embedding read from the
    // last argmax on the device, each token's read started and finished one step later,
    // so the next step is queued before the host waits.
    let mut idx_buf = a(&g, 2);
    let all_modes = ["unfused", "fused", "block", "greedy", "pipelined"];
    for mode in all_modes
        .into_iter()
        .filter(|m| modes_env.is_empty() || modes_env.split(',').any(|w| w == *m))
    {
        let fused = mode != "unfused";
        let block = matches!(mode, "block" | "greedy" | "pipelined");
        let mut in_flight = None;
        kv.clear();
        g.reset_kernel_times().unwrap();
        let mut t0 = std::time::Instant::now();
        let mut copies0 = g.copied_bytes();
        // Host time spent enqueueing a token's work (block mode), and in its logits read.
        let (mut host_enqueue, mut host_read) = (0f64, 0f64);
        for pos in 0..n_tokens {
            if pos == warmup {
                g.synchronize().unwrap();
                g.reset_kernel_times().unwrap();
                g.block_stage_times().unwrap(); // (resets them)
                t0 = std::time::Instant::now();
                copies0 = g.copied_bytes();
            }
            let g = &mut g;
            let t_enq = std::time::Instant::now();
            if mode == "pipelined" && pos > 0 {
                let prev = TensorRef::new(&idx_buf, (pos - 1) % 2 * 4, DType::F32, Shape::d1(1));
                ops::get_rows_at(g, w(&embd), prev, m(&mut x, dim)).unwrap();
            } else {
                ops::get_rows(g, w(&embd), &[(pos * 37 % vocab) as u32], m(&mut x, dim)).unwrap();
            }
            if block {
                // What the model runs: every layer through llama_blocks (several layers
                // per launch), then the fused head.
                let p = BlockParams {
                    eps: 1e-5,
                    attn: AttnParams {
                        n_head,
                        n_kv_head: n_kv,
                        head_dim: hd,
                        scale: 1.0 / (hd as f32).sqrt(),
                        n_past: pos,
                    },
                    pos0: pos,
                    style: RopeStyle::Adjacent,
                };
                let s = BlockScratch {
                    xn: m(&mut xb, dim),
                    tmp: m(&mut xb2, dim),
                    q: m(&mut q, dim),
                    att: m(&mut att, dim),
                    gate: m(&mut hb, ffn),
                    up: m(&mut hb2, ffn),
                    act: m(&mut hb3, ffn),
                };
                let kvr = &mut kv;
                let mut visit = |l: usize, f: &mut antigravity_core::backend::LayerFn<'_, OpenClBackend>| {
                    let lw = &layers[l];
                    let (k, v) = kvr.layer_mut(l);
                    let bw = BlockWeights {
                        attn_norm: w(&norm),
                        wq: w(&lw[0]),
                        wk: w(&lw[1]),
                        wv: w(&lw[2]),
                        wo: w(&lw[3]),
                        ffn_norm: w(&norm),
                        w_gate: w(&lw[4]),
                        w_up: w(&lw[5]),
                        w_down: w(&lw[6]),
                    };
                    f(bw, BlockKv { k, v })
                };
                ops::llama_blocks(g, m(&mut x, dim), n_layer, &mut visit, w(&inv_freq), p, s).unwrap();
                kv.commit(1);
                ops::rms_norm_matmul(
                    g,
                    r(&x, dim),
                    w(&norm),
                    1e-5,
                    m(&mut xb, dim),
                    w(&embd),
                    m(&mut logits, vocab),
                )
                .unwrap();
                let t_read = std::time::Instant::now();
                if mode == "pipelined" {
                    let lv = TensorRef::new(&logits, 0, DType::F32, Shape::d2(1, vocab));
                    let slot = TensorMut::new(&mut idx_buf, pos % 2 * 4, DType::F32, Shape::d1(1));
                    ops::argmax(g, lv, slot).unwrap();
                    let started = g.download_start(&idx_buf, pos % 2 * 4, 4).unwrap();
                    if let Some(p) = in_flight.replace(started) {
                        let mut idx = [0f32; 1];
                        g.download_finish(&idx_buf, p, bytemuck::cast_slice_mut(&mut idx))
                            .unwrap();
                        assert!(idx[0] >= 0.0);
                    }
                } else if mode == "greedy" {
                    let lv = TensorRef::new(&logits, 0, DType::F32, Shape::d2(1, vocab));
                    ops::argmax(g, lv, TensorMut::new(&mut idx_buf, 0, DType::F32, Shape::d1(1))).unwrap();
                    let mut idx = [0f32; 1];
                    g.download(&idx_buf, 0, bytemuck::cast_slice_mut(&mut idx)).unwrap();
                    assert!(idx[0] >= 0.0);
                } else {
                    g.download(&logits, 0, bytemuck::cast_slice_mut(&mut host_logits))
                        .unwrap();
                }
                if pos >= warmup {
                    host_enqueue += (t_read - t_enq).as_secs_f64();
                    host_read += t_read.elapsed().as_secs_f64();
                }
                continue;
            }
            for (l, lw) in layers.iter().enumerate() {
                if !fused {
                    ops::rms_norm(g, r(&x, dim), w(&norm), 1e-5, m(&mut xb, dim)).unwrap();
                }
                if fused {
                    let (k, v) = kv.slots_mut(l, pos, 1);
                    let qkv = [w(&lw[0]), w(&lw[1]), w(&lw[2])];
                    ops::rms_norm_matmul3(
                        g,
                        r(&x, dim),
                        w(&norm),
                        1e-5,
                        m(&mut xb, dim),
                        qkv,
                        [m(&mut q, dim), k, v],
                    )
                    .unwrap();
                    let (k, _) = kv.slots_mut(l, pos, 1);
                    let qh = m(&mut q, dim).reshape(Shape::d3(1, n_head, hd));
                    let kh = k.reshape(Shape::d3(1, n_kv, hd));
                    ops::rope_qk(g, qh, kh, w(&inv_freq), pos, RopeStyle::Adjacent).unwrap();
                } else {
                    ops::matmul(g, w(&lw[0]), r(&xb, dim), m(&mut q, dim)).unwrap();
                }
                if !fused {
                    let (mut k, mut v) = kv.slots_mut(l, pos, 1);
                    ops::matmul(g, w(&lw[1]), r(&xb, dim), k.reborrow()).unwrap();
                    ops::matmul(g, w(&lw[2]), r(&xb, dim), v.reborrow()).unwrap();
                    ops::rope(
                        g,
                        k.reshape(Shape::d3(1, n_kv, hd)),
                        w(&inv_freq),
                        pos,
                        RopeStyle::Adjacent,
                    )
                    .unwrap();
                }
                if !fused {
                    ops::rope(
                        g,
                        m(&mut q, dim).reshape(Shape::d3(1, n_head, hd)),
                        w(&inv_freq),
                        pos,
                        RopeStyle::Adjacent,
                    )
                    .unwrap();
                }
                let (kc, vc) = kv.views(l);
                let p = AttnParams {
                    n_head,
                    n_kv_head: n_kv,
                    head_dim: hd,
                    scale: 1.0 / (hd as f32).sqrt(),
                    n_past: pos,
                };
                let qv = TensorRef::new(&q, 0, DType::F32, Shape::d3(1, n_head, hd));
                let ov = TensorMut::new(&mut att, 0, DType::F32, Shape::d3(1, n_head, hd));
                ops::attention(g, qv, kc, vc, p, ov).unwrap();
                if fused {
                    ops::matmul_add(g, w(&lw[3]), r(&att, dim), m(&mut xb2, dim), m(&mut x, dim)).unwrap();
                    let (xn, gate, up) = (m(&mut xb, dim), m(&mut hb, ffn), m(&mut hb2, ffn));
                    ops::rms_norm_matmul_swiglu(
                        g,
                        r(&x, dim),
                        w(&norm),
                        1e-5,
                        xn,
                        w(&lw[4]),
                        w(&lw[5]),
                        gate,
                        up,
                        m(&mut hb3, ffn),
                    )
                    .unwrap();
                    ops::matmul_add(g, w(&lw[6]), r(&hb3, ffn), m(&mut xb2, dim), m(&mut x, dim)).unwrap();
                    continue;
                }
                ops::matmul(g, w(&lw[3]), r(&att, dim), m(&mut xb, dim)).unwrap();
                ops::add(g, m(&mut x, dim), r(&xb, dim)).unwrap();
                ops::rms_norm(g, r(&x, dim), w(&norm), 1e-5, m(&mut xb, dim)).unwrap();
                ops::matmul(g, w(&lw[4]), r(&xb, dim), m(&mut hb, ffn)).unwrap();
                ops::matmul(g, w(&lw[5]), r(&xb, dim), m(&mut hb2, ffn)).unwrap();
                ops::swiglu(g, r(&hb, ffn), r(&hb2, ffn), m(&mut hb3, ffn)).unwrap();
                ops::matmul(g, w(&lw[6]), r(&hb3, ffn), m(&mut xb, dim)).unwrap();
                ops::add(g, m(&mut x, dim), r(&xb, dim)).unwrap();
            }
            kv.commit(1);
            ops::rms_norm(g, r(&x, dim), w(&norm), 1e-5, m(&mut xb, dim)).unwrap();
            ops::matmul(g, w(&embd), r(&xb, dim), m(&mut logits, vocab)).unwrap();
            g.download(&logits, 0, bytemuck::cast_slice_mut(&mut host_logits))
                .unwrap();
        }
        if let Some(p) = in_flight.take() {
            let mut idx = [0f32; 1];
            g.download_finish(&idx_buf, p, bytemuck::cast_slice_mut(&mut idx))
                .unwrap();
        }
        let wall = t0.elapsed().as_secs_f64();
        let timed = (n_tokens - warmup) as f64;
        let times = g.kernel_times().unwrap();
        let total: u64 = times.iter().map(|t| t.1).sum();
        let c = g.copied_bytes();
        eprintln!(
            "decode {mode:<7} {}: {:.3} ms/token wall ({:.1} tok/s), {:.3} ms/token in kernels, copies/token: upload {} B, download {} B",
            g.device_info().name,
            wall * 1e3 / timed,
            timed / wall,
            total as f64 / 1e6 / timed,
            (c.upload - copies0.upload) as f64 / timed,
            (c.download - copies0.download) as f64 / timed,
        );
        for (name, ns, n) in &times {
            eprintln!(
                "  {name:<18} {:>9.3} ms/token  {:>6} launches  {:>8.2} us/launch  {:>5.1}%",
                *ns as f64 / 1e6 / timed,
                n,
                *ns as f64 / 1e3 / *n as f64,
                100.0 * *ns as f64 / total as f64
            );
        }
        if block {
            eprintln!(
                "  block kernel: {}",
                g.block_description().unwrap_or_else(|| "off".into())
            );
            eprintln!(
                "  host: {:.3} ms/token enqueueing (get_rows, blocks, head), {:.3} ms/token in the logits read",
                host_enqueue * 1e3 / timed,
                host_read * 1e3 / timed
            );
            // Device idle time by the kernel that ended it (profiling events).
            for (name, ns) in g.kernel_gaps().unwrap() {
                eprintln!("  idle before {name:<18} {:>8.3} ms/token", ns as f64 / 1e6 / timed);
            }
            // Inside the block kernel (NVIDIA's %globaltimer, as work-group 0 sees it).
            if let Some((stages, launches)) = g.block_stage_times().unwrap() {
                let total: u64 = stages.iter().map(|s| s.1).sum();
                if launches > 0 && total > 0 {
                    eprintln!("  block kernel stages, per layer ({launches} layers):");
                    for (name, ns) in stages {
                        eprintln!(
                            "    {name:<20} {:>8.2} us/layer  {:>5.1}%",
                            ns as f64 / 1e3 / launches as f64,
                            100.0 * ns as f64 / total as f64
                        );
                    }
                }
            }
        }
    }
    assert!(host_logits.iter().all(|v| v.is_finite()));
}

/// Prefill matmuls (128 tokens, SmolLM2 FFN shapes, Q4_1 and Q8_0) with the tiled
/// `mul_mm` kernel and with `mul_mv`, device time per call: the data for the default
/// `mm_min_tokens`. Run alone with `-- prefill_matmul_profile`.
fn prefill_matmul_profile() {
    let n_tok = 128;
    for (kernel, mm_min_tokens) in [("mul_mv", usize::MAX), ("mul_mm", 1)] {
        let mut opts = OpenClOptions::from_env();
        opts.profiling = true;
        opts.mm_min_tokens = Some(mm_min_tokens);
        let mut g = match OpenClBackend::new(opts) {
            Ok(g) => g,
            Err(e) => {
                skip(&format!("no usable OpenCL device: {e}"));
                return;
            }
        };
        // As the model reserves (the split-K scratch of the 576-row matmuls comes from it).
        g.reserve(Reservation {
            max_tokens: n_tok,
            max_row: 1536,
            max_ctx: n_tok,
            n_head: 9,
        })
        .unwrap();
        for (dtype, n_out, n_in) in [
            (DType::Q4_1, 1536, 576),
            (DType::Q4_1, 576, 1536),
            (DType::Q8_0, 1536, 576),
        ] {
            let w = weight(&g, dtype, n_out, n_in, 300);
            let x = act(&g, &randn(n_tok * n_in, 301, 1.0), Shape::d2(n_tok, n_in));
            let mut y = out(&g, Shape::d2(n_tok, n_out));
            ops::matmul(&mut g, w.r_cl(), x.r_cl(), y.m_cl()).unwrap(); // warm-up
            g.reset_kernel_times().unwrap();
            let reps = 5;
            for _ in 0..reps {
                ops::matmul(&mut g, w.r_cl(), x.r_cl(), y.m_cl()).unwrap();
            }
            let t = g.kernel_times().unwrap();
            let ns: u64 = t.iter().map(|t| t.1).sum();
            let ms = ns as f64 / 1e6 / reps as f64;
            let gflops = 2.0 * (n_tok * n_out * n_in) as f64 / (ms * 1e6);
            eprintln!(
                "prefill    {kernel} {dtype} {n_out}x{n_in} x {n_tok} tok: {ms:.3} ms ({gflops:.1} GFLOP/s) [{}]",
                t.iter().map(|t| t.0.as_str()).collect::<Vec<_>>().join(" + ")
            );
        }
    }
}

/// One SmolLM2-135M-shaped prefill of 512 tokens (30 layers of random Q4_0 weights,
/// Q8_0 tied 49152 × 576 output, logits of the last row only) through the ops the model
/// calls (`model::llama::forward_chunk`: `rms_norm_matmul3`, `rope_qk`, `attention`,
/// `matmul_add`, `rms_norm_matmul_swiglu`, `matmul_add`), with profiling: prints ms per
/// prefill (wall and in kernels; the first, cold pass separately), tokens/s and the
/// per-kernel device times — once with
/// the old per-(head, token) attention kernel and once with `attention_prefill_f32`.
/// Run alone with `-- prefill_profile`.
/// `ANTIGRAVITY_PROFILE_LAYERS=n` runs fewer layers (a quick look on PoCL).
fn prefill_profile_smollm2_shapes() {
    use antigravity_core::kv_cache::KvCache;
    // ANTIGRAVITY_PROFILE_SHAPE=llama3.2-1b: the Llama 3.2 1B shape (16 layers, hidden
    // 2048, FFN 8192, 32/8 heads, a tied 128256 × 2048 table), every matrix Q4_0 from
    // random blocks as in the decode profile; only the prefill attention kernel.
    let l1b = std::env::var("ANTIGRAVITY_PROFILE_SHAPE").is_ok_and(|v| v == "llama3.2-1b");
    let n_layer: usize = std::env::var("ANTIGRAVITY_PROFILE_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if l1b { 16 } else { 30 });
    let (dim, ffn, n_head, n_kv, hd, vocab, n_tok) = if l1b {
        (2048, 8192, 32, 8, 64, 128256, 512)
    } else {
        (576, 1536, 9, 3, 64, 49152, 512)
    };
    let kv_dim = n_kv * hd;
    let host = |dtype: DType, rows: usize, cols: usize, seed: u64| {
        let rb = dtype.row_bytes(cols).unwrap();
        let mut bytes = vec![0u8; rows * rb];
        if l1b {
            random_q4_0(&mut bytes, seed);
            return (HostRegion::new(Arc::new(bytes)), Shape::d2(rows, cols), DType::Q4_0);
        }
        let vals = randn(rows * cols, seed, 0.05);
        for r in 0..rows {
            antigravity_core::quant::quantize_row(
                dtype,
                &vals[r * cols..(r + 1) * cols],
                &mut bytes[r * rb..(r + 1) * rb],
            )
            .unwrap();
        }
        (HostRegion::new(Arc::new(bytes)), Shape::d2(rows, cols), dtype)
    };
    let embd_h = host(if l1b { DType::Q4_0 } else { DType::Q8_0 }, vocab, dim, 1);
    let layers_h: Vec<_> = (0..n_layer as u64)
        .map(|l| {
            let s = 100 * (l + 1);
            let shapes = [
                (dim, dim),
                (kv_dim, dim),
                (kv_dim, dim),
                (dim, dim),
                (ffn, dim),
                (ffn, dim),
                (dim, ffn),
            ];
            shapes.map(|(r, c)| host(DType::Q4_0, r, c, s + r as u64 + c as u64))
        })
        .collect();
    let f32_h = |v: Vec<f32>| {
        let n = v.len();
        let bytes = bytemuck::cast_slice::<f32, u8>(&v).to_vec();
        (HostRegion::new(Arc::new(bytes)), Shape::d1(n), DType::F32)
    };
    let norm_h = f32_h(vec![1.0; dim]);
    let freq_h = f32_h(antigravity_core::rope::base_inv_freq(100000.0, hd));
    let ids: Vec<u32> = (0..n_tok as u32).map(|i| i * 37 % vocab as u32).collect();

    type Buf = <OpenClBackend as Backend>::Buffer;
    type Imported = (Buf, Shape, DType);
    fn w(t: &Imported) -> TensorRef<'_, OpenClBackend> {
        TensorRef::new(&t.0, 0, t.2, t.1)
    }
    fn r(b: &Buf, rows: usize, n: usize) -> TensorRef<'_, OpenClBackend> {
        TensorRef::new(b, 0, DType::F32, Shape::d2(rows, n))
    }
    fn m(b: &mut Buf, rows: usize, n: usize) -> TensorMut<'_, OpenClBackend> {
        TensorMut::new(b, 0, DType::F32, Shape::d2(rows, n))
    }
    let variants: &[(&str, usize)] = if l1b {
        &[("attention_prefill_f32", 16)]
    } else {
        &[("attention_f32", usize::MAX), ("attention_prefill_f32", 16)]
    };
    for &(label, attn_min) in variants {
        let mut opts = OpenClOptions::from_env();
        opts.profiling = true;
        opts.attn_prefill_min_tokens = Some(attn_min);
        let mut g = match OpenClBackend::new(opts) {
            Ok(g) => g,
            Err(e) => {
                skip(&format!("no usable OpenCL device: {e}"));
                return;
            }
        };
        g.reserve(Reservation {
            max_tokens: n_tok,
            max_row: ffn,
            max_ctx: n_tok,
            n_head,
        })
        .unwrap();
        let isa = g.isa();
        // (as the loaders import: Q4_0 matrices get the repacked rows where the backend
        // keeps them, which the int8 prefill matmuls then read)
        let imp = |g: &OpenClBackend, h: &(HostRegion, Shape, DType)| {
            (g.import_weight(h.0.clone(), h.2, h.1).unwrap(), h.1, h.2)
        };
        let embd = imp(&g, &embd_h);
        let norm = imp(&g, &norm_h);
        let inv_freq = imp(&g, &freq_h);
        let layers: Vec<Vec<Imported>> = layers_h
            .iter()
            .map(|l| l.iter().map(|h| imp(&g, h)).collect())
            .collect();
        let mut kv = KvCache::new(&g, n_layer, n_tok, n_kv, hd, DType::F32, BufferKind::Device).unwrap();
        let a = |g: &OpenClBackend, n: usize| g.alloc(n * 4, BufferKind::Device).unwrap();
        let (mut x, mut xb, mut xb2) = (a(&g, n_tok * dim), a(&g, n_tok * dim), a(&g, n_tok * dim));
        let (mut q, mut att) = (a(&g, n_tok * dim), a(&g, n_tok * dim));
        let (mut hb, mut hb2, mut hb3) = (a(&g, n_tok * ffn), a(&g, n_tok * ffn), a(&g, n_tok * ffn));
        let mut logits = a(&g, vocab);
        let mut host_logits = vec![0f32; vocab];
        let (warmup, reps) = (1, 3);
        let mut wall = 0.0;
        for rep in 0..warmup + reps {
            if rep == warmup {
                g.synchronize().unwrap();
                g.reset_kernel_times().unwrap();
            }
            let t0 = std::time::Instant::now();
            kv.clear();
            let g = &mut g;
            ops::get_rows(g, w(&embd), &ids, m(&mut x, n_tok, dim)).unwrap();
            for (l, lw) in layers.iter().enumerate() {
                {
                    let (mut k, v) = kv.slots_mut(l, 0, n_tok);
                    let qkv = [w(&lw[0]), w(&lw[1]), w(&lw[2])];
                    let ys = [m(&mut q, n_tok, dim), k.reborrow(), v];
                    ops::rms_norm_matmul3(g, r(&x, n_tok, dim), w(&norm), 1e-5, m(&mut xb, n_tok, dim), qkv, ys)
                        .unwrap();
                    let qh = m(&mut q, n_tok, dim).reshape(Shape::d3(n_tok, n_head, hd));
                    let kh = k.reshape(Shape::d3(n_tok, n_kv, hd));
                    ops::rope_qk(g, qh, kh, w(&inv_freq), 0, RopeStyle::Adjacent).unwrap();
                }
                let (kc, vc) = kv.views(l);
                let p = AttnParams {
                    n_head,
                    n_kv_head: n_kv,
                    head_dim: hd,
                    scale: 1.0 / (hd as f32).sqrt(),
                    n_past: 0,
                };
                let qv = TensorRef::new(&q, 0, DType::F32, Shape::d3(n_tok, n_head, hd));
                let ov = TensorMut::new(&mut att, 0, DType::F32, Shape::d3(n_tok, n_head, hd));
                ops::attention(g, qv, kc, vc, p, ov).unwrap();
                let (xr, xo) = (r(&att, n_tok, dim), m(&mut xb2, n_tok, dim));
                ops::matmul_add(g, w(&lw[3]), xr, xo, m(&mut x, n_tok, dim)).unwrap();
                let (xn, gate, up) = (m(&mut xb, n_tok, dim), m(&mut hb, n_tok, ffn), m(&mut hb2, n_tok, ffn));
                let o = m(&mut hb3, n_tok, ffn);
                ops::rms_norm_matmul_swiglu(
                    g,
                    r(&x, n_tok, dim),
                    w(&norm),
                    1e-5,
                    xn,
                    w(&lw[4]),
                    w(&lw[5]),
                    gate,
                    up,
                    o,
                )
                .unwrap();
                let (xr, xo) = (r(&hb3, n_tok, ffn), m(&mut xb2, n_tok, dim));
                ops::matmul_add(g, w(&lw[6]), xr, xo, m(&mut x, n_tok, dim)).unwrap();
            }
            kv.commit(n_tok);
            let last = TensorRef::new(&x, (n_tok - 1) * dim * 4, DType::F32, Shape::d2(1, dim));
            ops::rms_norm(g, last, w(&norm), 1e-5, m(&mut xb, 1, dim)).unwrap();
            ops::matmul(g, w(&embd), r(&xb, 1, dim), m(&mut logits, 1, vocab)).unwrap();
            g.download(&logits, 0, bytemuck::cast_slice_mut(&mut host_logits))
                .unwrap();
            if rep >= warmup {
                wall += t0.elapsed().as_secs_f64();
            } else {
                eprintln!(
                    "prefill {label}: first (cold) pass {:.2} ms wall",
                    t0.elapsed().as_secs_f64() * 1e3
                );
            }
        }
        let times = g.kernel_times().unwrap();
        let total: u64 = times.iter().map(|t| t.1).sum();
        let wall_ms = wall * 1e3 / reps as f64;
        eprintln!(
            "prefill {n_tok} tok, {n_layer} layers ({dim}/{ffn}), {label}, {} ({isa}): {wall_ms:.2} ms wall ({:.0} tok/s), {:.2} ms in kernels",
            g.device_info().name,
            n_tok as f64 * 1e3 / wall_ms,
            total as f64 / 1e6 / reps as f64,
        );
        for (name, ns, n) in &times {
            eprintln!(
                "  {name:<24} {:>8.3} ms/prefill  {:>5} launches  {:>8.1} us/launch  {:>5.1}%",
                *ns as f64 / 1e6 / reps as f64,
                n / reps as u32,
                *ns as f64 / 1e3 / *n as f64,
                100.0 * *ns as f64 / total as f64
            );
        }
        assert!(host_logits.iter().all(|v| v.is_finite()));
    }
}

// --- the image weight path -------------------------------------------------------------

/// Decode-shaped Q4_0 matmuls (one token; SmolLM2's q/o, k/v, gate/up, down and a
/// 49152-row output) timed per kernel, buffer kernel vs image kernel on the same device
/// and weights. A measurement, not a check (run alone with `-- image_matmul_profile`).
fn image_matmul_profile() {
    let Some(mut g) = image_backend(None) else { return };
    let g = &mut g;
    let reps = 20;
    for (n_out, n_in) in [(576, 576), (192, 576), (1536, 576), (576, 1536), (49152, 576)] {
        let iw = image_weight(g, n_out, n_in, 900);
        let x = act(g, &randn(n_in, 901, 1.0), Shape::d2(1, n_in));
        let mut y = out(g, Shape::d2(1, n_out));
        let plain = TensorRef::new(&iw.plain, 0, DType::Q4_0, iw.w.shape);
        // Warm-up (PoCL specializes a kernel per local size at its first launch).
        ops::matmul(g, iw.w.r_cl(), x.r_cl(), y.m_cl()).unwrap();
        ops::matmul(g, plain, x.r_cl(), y.m_cl()).unwrap();
        g.reset_kernel_times().unwrap();
        for _ in 0..reps {
            ops::matmul(g, iw.w.r_cl(), x.r_cl(), y.m_cl()).unwrap();
            ops::matmul(g, plain, x.r_cl(), y.m_cl()).unwrap();
        }
        let t = g.kernel_times().unwrap();
        let us = |k: &str| {
            t.iter()
                .find(|e| e.0 == k)
                .map_or(f64::NAN, |e| e.1 as f64 / e.2 as f64 / 1e3)
        };
        let (b, i) = (us("mul_mv_q4_0_f32"), us("mul_mv_q4_0_img_f32"));
        eprintln!(
            "profile    Q4_0 {n_out:>5}x{n_in:<4} tok 1: buffer {b:8.1} µs, image {i:8.1} µs ({:.2}x) on {}",
            b / i,
            g.device_info().name
        );
    }
}
