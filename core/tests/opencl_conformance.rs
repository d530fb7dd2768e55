//! OpenCL conformance: every op × dtype on the OpenCL backend against the scalar CPU
//! backend (the reference), compared by normalized MSE, `Σ(a−b)² / Σb²`, with a limit
//! per op written next to its reason (after ggml's `test-backend-ops`).
//!
//! Shapes: SmolLM2-135M's (hidden 576, FFN 1536, vocab 49152, 9 query / 3 KV heads, head
//! dim 64), Llama-3.2-1B's attention (32/8 heads), and odd sizes (n_in 32·7, n_out 13,
//! 1 / 5 / 7 tokens, contexts 1, 17, 300, 2048). Views sit at nonzero offsets inside
//! their buffers (weights 32 or 2 bytes in, like GGUF tensors; activations 3 floats in),
//! so offset handling is covered too.
//!
//! Without an OpenCL platform every test prints `SKIP: <reason>` and returns — unless
//! `ANTIGRAVITY_OPENCL_REQUIRED=1`, which makes a missing device a failure (for runs on
//! a GPU machine, where a skip would hide a broken driver setup).
//! Pick a device with `ANTIGRAVITY_OPENCL_DEVICE` (`platform:device` or a name filter).
//! Run with `--nocapture` to see the NMSE table. Speed profiles (decode, prefill, the
//! image path) are `core/benches/opencl_profiles.rs`.
#![cfg(feature = "opencl")]

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use antigravity_core::backend::{
    AttnParams, BlockKv, BlockParams, BlockScratch, BlockWeights, HostRegion, Reservation, RopeStyle,
};
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::opencl::{ClMemKind, OpenClBackend, OpenClOptions};
use antigravity_core::{ops, Backend, BufferKind, DType, Shape, TensorMut, TensorRef};

// --- limits, each with its reason -------------------------------------------------------

/// Dequantization and f16/bf16 widening are exact in f32 (get_rows.cl turns FP
/// contraction off, so `q·d + m` rounds like the CPU's): bit-identical.
const LIM_GET_ROWS: f64 = 0.0;
/// Quantized weights: the CPU quantizes activations to Q8_0 (Q4_0, Q8_0 weights) or Q8_1
/// (Q4_1) before its integer dot product; the GPU keeps them f32. Q8 rounding of a
/// Gaussian row adds relative noise ≈ (amax/127)²/12 / E[x²] ≈ 3e-5 per element → the
/// expected NMSE is ~1e-5..1e-4. 5e-4 leaves headroom without hiding a wrong block
/// layout (which gives NMSE ≈ 1).
const LIM_MATMUL_Q_VS_CPU: f64 = 5e-4;
/// The same quantized matmul against an f32 matmul of the dequantized weights (what the
/// GPU computes): only f32 summation order differs (n_in ≤ 1536 → ~1e-13).
const LIM_MATMUL_Q_VS_DEQUANT: f64 = 1e-10;
/// f32/f16/bf16 weights: both sides widen to f32 and accumulate in f32; only the
/// summation order differs (tree vs sequential).
const LIM_MATMUL_FLOAT: f64 = 1e-10;
/// One f32 reduction (sum of squares over ≤ 1536) in a different order, then the same
/// elementwise math.
const LIM_RMS_NORM: f64 = 1e-12;
/// OpenCL's `sin`/`cos` are within 4 ulp, Rust's (libm) within 1; angles up to ~2000 rad.
const LIM_ROPE: f64 = 1e-10;
/// Online (tiled) softmax vs the CPU's two-pass one: different exp arguments / rescaling
/// order and summation order, each f32-rounded; OpenCL `exp` is within 3 ulp.
const LIM_ATTENTION: f64 = 1e-10;
/// Softmax vs the CPU: the CPU sums the row's exps sequentially in f32, whose relative
/// error grows like √n·u (biased rounding: up to n·u) — for the 49152-wide logits row
/// that alone is NMSE ~1e-10..1e-8; the GPU's tree sum is the more accurate one.
const LIM_SOFTMAX_VS_CPU: f64 = 1e-7;
/// Softmax vs an f64 reference: tree sums and `exp` within 3 ulp.
const LIM_SOFTMAX_VS_F64: f64 = 1e-11;
/// Elementwise `g / (1 + exp(−g)) · u`; `exp` within 3 ulp.
const LIM_SWIGLU: f64 = 1e-11;
/// One f32 addition per element, correctly rounded on both sides: bit-identical.
const LIM_ADD: f64 = 0.0;

// --- harness ------------------------------------------------------------------------

/// Reports a skip (or fails, when a device is required).
fn skip(reason: &str) {
    if std::env::var("ANTIGRAVITY_OPENCL_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("ANTIGRAVITY_OPENCL_REQUIRED=1 but {reason}");
    }
    eprintln!("SKIP: {reason}");
}

fn shared() -> Option<MutexGuard<'static, OpenClBackend>> {
    static CL: OnceLock<Result<Mutex<OpenClBackend>, String>> = OnceLock::new();
    let cl = CL.get_or_init(|| {
        let mut opts = OpenClOptions::from_env();
        opts.log = true;
        // Exercise the tiled prefill kernel from 16 tokens on every device (PoCL's
        // default would never pick it).
        opts.mm_min_tokens = Some(16);
        let mut b = OpenClBackend::new(opts).map_err(|e| e.to_string())?;
        b.reserve(Reservation {
            max_tokens: 128,
            max_row: 49152,
            max_ctx: 4096,
            n_head: 32,
        })
        .map_err(|e| e.to_string())?;
        Ok(Mutex::new(b))
    });
    match cl {
        Ok(m) => Some(m.lock().unwrap_or_else(|e| e.into_inner())),
        Err(e) => {
            skip(&format!("no usable OpenCL device: {e}"));
            None
        }
    }
}

fn cpu() -> CpuBackend {
    let mut c = CpuBackend::with_isa(Isa::Scalar).expect("scalar ISA always exists");
    c.reserve(Reservation {
        max_tokens: 128,
        max_row: 49152,
        max_ctx: 4096,
        n_head: 32,
    })
    .unwrap();
    c
}

/// Deterministic pseudo-random f32s, roughly N(0, scale²) (sum of 4 uniforms).
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

fn nmse(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&a, &b) in got.iter().zip(want) {
        assert!(a.is_finite(), "non-finite output {a}");
        num += (a as f64 - b as f64).powi(2);
        den += (b as f64).powi(2);
    }
    if den == 0.0 {
        num
    } else {
        num / den
    }
}

fn check(op: &str, case: &str, got: &[f32], want: &[f32], limit: f64) {
    let e = nmse(got, want);
    eprintln!("{op:<10} {case:<44} nmse {e:.3e}  (limit {limit:.0e})");
    assert!(e <= limit, "{op} {case}: NMSE {e:e} exceeds {limit:e}");
}

/// Leading bytes in front of activations: views at a nonzero offset.
const PAD_F32: usize = 3;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    let mut b = vec![0u8; PAD_F32 * 4];
    b.extend_from_slice(bytemuck::cast_slice(v));
    b
}

/// A tensor on both backends: an activation uploaded into `BufferKind::Device` memory.
struct Both {
    cpu: <CpuBackend as Backend>::Buffer,
    cl: <OpenClBackend as Backend>::Buffer,
    shape: Shape,
}

fn act(c: &CpuBackend, g: &OpenClBackend, v: &[f32], shape: Shape) -> Both {
    assert_eq!(v.len(), shape.numel());
    let bytes = f32_bytes(v);
    let mut cb = c.alloc(bytes.len(), BufferKind::Device).unwrap();
    c.upload(&mut cb, 0, &bytes).unwrap();
    let mut gb = g.alloc(bytes.len(), BufferKind::Device).unwrap();
    g.upload(&mut gb, 0, &bytes).unwrap();
    Both { cpu: cb, cl: gb, shape }
}

/// An empty f32 output on both.
fn out(c: &CpuBackend, g: &OpenClBackend, shape: Shape) -> Both {
    act(c, g, &vec![0.0; shape.numel()], shape)
}

impl Both {
    fn r_cpu(&self) -> TensorRef<'_, CpuBackend> {
        TensorRef::new(&self.cpu, PAD_F32 * 4, DType::F32, self.shape)
    }
    fn r_cl(&self) -> TensorRef<'_, OpenClBackend> {
        TensorRef::new(&self.cl, PAD_F32 * 4, DType::F32, self.shape)
    }
    fn m_cpu(&mut self) -> TensorMut<'_, CpuBackend> {
        TensorMut::new(&mut self.cpu, PAD_F32 * 4, DType::F32, self.shape)
    }
    fn m_cl(&mut self) -> TensorMut<'_, OpenClBackend> {
        TensorMut::new(&mut self.cl, PAD_F32 * 4, DType::F32, self.shape)
    }
    fn read(&self, c: &CpuBackend, g: &OpenClBackend) -> (Vec<f32>, Vec<f32>) {
        let n = self.shape.numel();
        let mut a = vec![0f32; n];
        let mut b = vec![0f32; n];
        g.download(&self.cl, PAD_F32 * 4, bytemuck::cast_slice_mut(&mut a))
            .unwrap();
        c.download(&self.cpu, PAD_F32 * 4, bytemuck::cast_slice_mut(&mut b))
            .unwrap();
        (a, b)
    }
}

/// A weight matrix [rows, cols] of `dtype`, imported from host bytes (as a model file's
/// tensor would be) at byte offset `pad` inside its region.
struct Weight {
    cpu: <CpuBackend as Backend>::Buffer,
    cl: <OpenClBackend as Backend>::Buffer,
    dtype: DType,
    shape: Shape,
    pad: usize,
    /// The OpenCL view's offset (`pad`, or 0 for a region that is exactly the tensor).
    pad_cl: usize,
    /// The weights as the backends see them, dequantized to f32.
    deq: Vec<f32>,
}

fn weight(c: &CpuBackend, g: &OpenClBackend, dtype: DType, rows: usize, cols: usize, seed: u64) -> Weight {
    let pad = if dtype.is_quantized() { 2 } else { 32 };
    let rb = dtype.row_bytes(cols).unwrap();
    let vals = randn(rows * cols, seed, 0.5);
    let mut bytes = vec![0u8; pad + rows * rb];
    let mut deq = vec![0f32; rows * cols];
    // Quantize in an aligned scratch row (the typed quantizers need element alignment),
    // then place it at `pad`.
    let mut row = vec![0u32; rb.div_ceil(4)];
    for r in 0..rows {
        let rbytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut row)[..rb];
        antigravity_core::quant::quantize_row(dtype, &vals[r * cols..(r + 1) * cols], rbytes).unwrap();
        antigravity_core::quant::dequantize_row(dtype, rbytes, &mut deq[r * cols..(r + 1) * cols]).unwrap();
        bytes[pad + r * rb..pad + (r + 1) * rb].copy_from_slice(rbytes);
    }
    let region = HostRegion::new(Arc::new(bytes));
    Weight {
        cpu: c.import_host(region.clone()).unwrap(),
        cl: g.import_host(region).unwrap(),
        dtype,
        shape: Shape::d2(rows, cols),
        pad,
        pad_cl: pad,
        deq,
    }
}

impl Weight {
    fn r_cpu(&self) -> TensorRef<'_, CpuBackend> {
        TensorRef::new(&self.cpu, self.pad, self.dtype, self.shape)
    }
    fn r_cl(&self) -> TensorRef<'_, OpenClBackend> {
        TensorRef::new(&self.cl, self.pad_cl, self.dtype, self.shape)
    }
}

const WEIGHT_TYPES: [DType; 6] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
];

// --- ops ------------------------------------------------------------------------------

#[test]
fn get_rows_every_dtype() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    for dtype in WEIGHT_TYPES {
        // The real embedding table is 49152 × 576 Q8_0; other types use fewer rows.
        let rows = if dtype == DType::Q8_0 { 49152 } else { 1000 };
        let w = weight(&c, g, dtype, rows, 576, 11);
        for ids in [vec![rows as u32 - 1], vec![0, 1, rows as u32 - 1, 517, 7]] {
            let mut o = out(&c, g, Shape::d2(ids.len(), 576));
            ops::get_rows(&mut c, w.r_cpu(), &ids, o.m_cpu()).unwrap();
            ops::get_rows(g, w.r_cl(), &ids, o.m_cl()).unwrap();
            let (a, b) = o.read(&c, g);
            check(
                "get_rows",
                &format!("{dtype} {rows}x576 ids {}", ids.len()),
                &a,
                &b,
                LIM_GET_ROWS,
            );
        }
    }
}

/// get_rows_at: the indices on the device as f32 (what argmax writes). Against the CPU's
/// get_rows on the same ids; bad indices (negative, past the table, NaN) read row 0 on
/// the device and are an error on the CPU (whose default reads them back).
#[test]
fn get_rows_at_device_indices() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    for dtype in [DType::Q8_0, DType::Q4_0, DType::F16] {
        let rows = 1000;
        let w = weight(&c, g, dtype, rows, 576, 12);
        let ids = [999u32, 0, 517, 7, 1];
        let idx: Vec<f32> = ids.iter().map(|&i| i as f32).collect();
        let ix = act(&c, g, &idx, Shape::d1(ids.len()));
        let mut o = out(&c, g, Shape::d2(ids.len(), 576));
        ops::get_rows(&mut c, w.r_cpu(), &ids, o.m_cpu()).unwrap();
        ops::get_rows_at(g, w.r_cl(), ix.r_cl(), o.m_cl()).unwrap();
        let (a, b) = o.read(&c, g);
        check(
            "get_rows_at",
            &format!("{dtype} {rows}x576 ids {}", ids.len()),
            &a,
            &b,
            LIM_GET_ROWS,
        );
        // The CPU through the trait's default (reads the indices back): the same rows.
        let mut o2 = out(&c, g, Shape::d2(ids.len(), 576));
        ops::get_rows_at(&mut c, w.r_cpu(), ix.r_cpu(), o2.m_cpu()).unwrap();
        assert_eq!(o2.read(&c, g).1, b, "CPU get_rows_at (default) vs get_rows");

        let bad = [-1.0f32, 1000.0, 5.0e9, f32::NAN];
        let bx = act(&c, g, &bad, Shape::d1(bad.len()));
        let mut ob = out(&c, g, Shape::d2(bad.len(), 576));
        ops::get_rows_at(g, w.r_cl(), bx.r_cl(), ob.m_cl()).unwrap();
        let mut o0 = out(&c, g, Shape::d2(1, 576));
        ops::get_rows(&mut c, w.r_cpu(), &[0], o0.m_cpu()).unwrap();
        let row0 = o0.read(&c, g).1;
        let got = ob.read(&c, g).0;
        for (i, v) in bad.iter().enumerate() {
            assert_eq!(
                got[i * 576..(i + 1) * 576],
                row0[..],
                "{dtype}: index {v} must read row 0"
            );
        }
        for v in bad {
            let one = act(&c, g, &[v], Shape::d1(1));
            let mut o1 = out(&c, g, Shape::d2(1, 576));
            let e = ops::get_rows_at(&mut c, w.r_cpu(), one.r_cpu(), o1.m_cpu()).unwrap_err();
            assert!(e.to_string().contains("not a row"), "{e}");
        }
    }
}

#[test]
fn matmul_every_dtype() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    // (n_out, n_in, token counts)
    let shapes: [(usize, usize, &[usize]); 4] = [
        (576, 576, &[1, 5]),       // attention q/o projection
        (1536, 576, &[1, 5]),      // FFN gate/up
        (576, 1536, &[1, 7, 64]),  // FFN down; 64 tokens take the tiled prefill kernel, split-K 4 ways
        (13, 32 * 7, &[1, 5, 37]), // odd sizes; 37 tokens take the tiled prefill kernel
    ];
    for dtype in WEIGHT_TYPES {
        for (si, &(n_out, n_in, toks)) in shapes.iter().enumerate() {
            let w = weight(&c, g, dtype, n_out, n_in, 100 + si as u64);
            for &n_tok in toks {
                run_matmul(&mut c, g, &w, n_tok, si as u64);
            }
        }
    }
    // Float weights allow rows that are not whole 32-element tiles (tails in both kernels).
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        let w = weight(&c, g, dtype, 45, 50, 200);
        for n_tok in [1, 3, 37] {
            run_matmul(&mut c, g, &w, n_tok, 5);
        }
        // Split-K in 2 pieces of 160 elements, the second ending in a 12-element tail.
        let w = weight(&c, g, dtype, 20, 300, 201);
        run_matmul(&mut c, g, &w, 37, 6);
    }
    // The tied output projection: 49152 × 576 Q8_0, decode.
    let w = weight(&c, g, DType::Q8_0, 49152, 576, 7);
    run_matmul(&mut c, g, &w, 1, 9);
}

fn run_matmul(c: &mut CpuBackend, g: &mut OpenClBackend, w: &Weight, n_tok: usize, seed: u64) {
    let (n_out, n_in) = (w.shape.dims()[0], w.shape.dims()[1]);
    let xv = randn(n_tok * n_in, 1000 + seed, 1.0);
    let x = act(c, g, &xv, Shape::d2(n_tok, n_in));
    let mut y = out(c, g, Shape::d2(n_tok, n_out));
    ops::matmul(c, w.r_cpu(), x.r_cpu(), y.m_cpu()).unwrap();
    ops::matmul(g, w.r_cl(), x.r_cl(), y.m_cl()).unwrap();
    let (a, b) = y.read(c, g);
    let case = format!("{} {n_out}x{n_in} tok {n_tok}", w.dtype);
    if w.dtype.is_quantized() {
        check("matmul", &format!("{case} vs cpu"), &a, &b, LIM_MATMUL_Q_VS_CPU);
        // What the GPU should compute exactly: f32 weights (dequantized) × f32 x.
        let mut want = vec![0f32; n_tok * n_out];
        for t in 0..n_tok {
            for o in 0..n_out {
                let wr = &w.deq[o * n_in..(o + 1) * n_in];
                want[t * n_out + o] = wr.iter().zip(&xv[t * n_in..]).map(|(a, b)| a * b).sum();
            }
        }
        check(
            "matmul",
            &format!("{case} vs f32(dequant)"),
            &a,
            &want,
            LIM_MATMUL_Q_VS_DEQUANT,
        );
    } else {
        check("matmul", &case, &a, &b, LIM_MATMUL_FLOAT);
    }
}

#[test]
fn rms_norm_rows() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    for (rows, n) in [(1, 576), (5, 576), (5, 1536), (3, 13)] {
        let x = act(&c, g, &randn(rows * n, 21, 2.0), Shape::d2(rows, n));
        let w = act(&c, g, &randn(n, 22, 1.0), Shape::d1(n));
        let mut o = out(&c, g, Shape::d2(rows, n));
        ops::rms_norm(&mut c, x.r_cpu(), w.r_cpu(), 1e-5, o.m_cpu()).unwrap();
        ops::rms_norm(g, x.r_cl(), w.r_cl(), 1e-5, o.m_cl()).unwrap();
        let (a, b) = o.read(&c, g);
        check("rms_norm", &format!("{rows}x{n}"), &a, &b, LIM_RMS_NORM);
    }
}

#[test]
fn rope_both_styles() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    for style in [RopeStyle::Adjacent, RopeStyle::HalfSplit] {
        for (n_tok, heads, hd, pos0) in [
            (1, 9, 64, 0),
            (5, 9, 64, 17),
            (5, 3, 64, 300),
            (1, 32, 64, 2047),
            (2, 4, 128, 5),
        ] {
            let f = act(
                &c,
                g,
                &antigravity_core::rope::base_inv_freq(100000.0, hd),
                Shape::d1(hd / 2),
            );
            let mut x = act(&c, g, &randn(n_tok * heads * hd, 31, 1.0), Shape::d3(n_tok, heads, hd));
            ops::rope(&mut c, x.m_cpu(), f.r_cpu(), pos0, style).unwrap();
            ops::rope(g, x.m_cl(), f.r_cl(), pos0, style).unwrap();
            let (a, b) = x.read(&c, g);
            check(
                "rope",
                &format!("{style:?} [{n_tok},{heads},{hd}] pos0 {pos0}"),
                &a,
                &b,
                LIM_ROPE,
            );
        }
    }
}

#[test]
fn attention_gqa_decode_and_prefill() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    // (n_head, n_kv_head, head_dim, n_tok, n_past, capacity)
    let cases = [
        (9, 3, 64, 1, 0, 17),       // first token
        (9, 3, 64, 1, 16, 17),      // decode, context 17
        (9, 3, 64, 1, 299, 300),    // decode, context 300
        (9, 3, 64, 5, 0, 17),       // prefill from empty
        (9, 3, 64, 5, 12, 17),      // prefill chunk after 12
        (9, 3, 64, 5, 295, 320),    // prefill chunk, context 300
        (9, 3, 64, 1, 2047, 2048),  // long context decode
        (9, 3, 64, 4, 253, 300),    // split context, early tokens have an empty last chunk
        (32, 8, 64, 3, 2100, 2304), // Llama-3.2-1B heads, 2103 slots
        (4, 4, 128, 2, 40, 64),     // MHA, head 128
        (8, 1, 64, 3, 7, 16),       // MQA
        (3, 1, 10, 2, 5, 9),        // head_dim not a multiple of 4
        // From 16 query tokens on, attention_prefill_f32 (32-row tiles of (token, head)):
        (9, 3, 64, 37, 0, 40),       // prefill from empty, partial last row tile
        (9, 3, 64, 64, 300, 400),    // 64-token chunk after 300 slots
        (9, 3, 64, 16, 0, 16),       // the threshold itself
        (32, 8, 64, 19, 2100, 2200), // Llama-3.2-1B heads, long context
        (8, 1, 64, 20, 5, 32),       // MQA: a row tile holds 4 tokens × 8 heads
        (4, 4, 64, 17, 33, 64),      // MHA
        (3, 1, 10, 19, 3, 24),       // head_dim 10 (not a multiple of 4)
        (2, 2, 128, 16, 1, 24),      // head_dim 128: above the prefill kernel's 64
    ];
    for (n_head, n_kv, hd, n_tok, n_past, cap) in cases {
        let q = act(
            &c,
            g,
            &randn(n_tok * n_head * hd, 41, 1.0),
            Shape::d3(n_tok, n_head, hd),
        );
        let k = act(&c, g, &randn(cap * n_kv * hd, 42, 1.0), Shape::d3(cap, n_kv, hd));
        let v = act(&c, g, &randn(cap * n_kv * hd, 43, 1.0), Shape::d3(cap, n_kv, hd));
        let p = AttnParams {
            n_head,
            n_kv_head: n_kv,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            n_past,
        };
        let mut o = out(&c, g, Shape::d3(n_tok, n_head, hd));
        ops::attention(&mut c, q.r_cpu(), k.r_cpu(), v.r_cpu(), p, o.m_cpu()).unwrap();
        ops::attention(g, q.r_cl(), k.r_cl(), v.r_cl(), p, o.m_cl()).unwrap();
        let (a, b) = o.read(&c, g);
        check(
            "attention",
            &format!("h {n_head}/{n_kv} hd {hd} tok {n_tok} ctx {}", n_past + n_tok),
            &a,
            &b,
            LIM_ATTENTION,
        );
    }
}

#[test]
fn softmax_rows() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    for (rows, n) in [(1, 49152), (5, 17), (3, 300), (2, 1)] {
        let xv = randn(rows * n, 51, 4.0);
        let mut x = act(&c, g, &xv, Shape::d2(rows, n));
        ops::softmax(&mut c, x.m_cpu()).unwrap();
        ops::softmax(g, x.m_cl()).unwrap();
        let (a, b) = x.read(&c, g);
        check("softmax", &format!("{rows}x{n} vs cpu"), &a, &b, LIM_SOFTMAX_VS_CPU);
        let mut exact = Vec::with_capacity(rows * n);
        for r in xv.chunks_exact(n) {
            let m = r.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let s: f64 = r.iter().map(|&v| (v as f64 - m).exp()).sum();
            exact.extend(r.iter().map(|&v| ((v as f64 - m).exp() / s) as f32));
        }
        check("softmax", &format!("{rows}x{n} vs f64"), &a, &exact, LIM_SOFTMAX_VS_F64);
    }
}

#[test]
fn swiglu_and_add() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    for (rows, n) in [(1, 1536), (5, 1536), (1, 13)] {
        let gate = act(&c, g, &randn(rows * n, 61, 3.0), Shape::d2(rows, n));
        let up = act(&c, g, &randn(rows * n, 62, 1.0), Shape::d2(rows, n));
        let mut o = out(&c, g, Shape::d2(rows, n));
        ops::swiglu(&mut c, gate.r_cpu(), up.r_cpu(), o.m_cpu()).unwrap();
        ops::swiglu(g, gate.r_cl(), up.r_cl(), o.m_cl()).unwrap();
        let (a, b) = o.read(&c, g);
        check("swiglu", &format!("{rows}x{n}"), &a, &b, LIM_SWIGLU);
    }
    for (rows, n) in [(1, 576), (5, 576), (1, 13)] {
        let mut d = act(&c, g, &randn(rows * n, 71, 1.0), Shape::d2(rows, n));
        let s = act(&c, g, &randn(rows * n, 72, 1.0), Shape::d2(rows, n));
        ops::add(&mut c, d.m_cpu(), s.r_cpu()).unwrap();
        ops::add(g, d.m_cl(), s.r_cl()).unwrap();
        let (a, b) = d.read(&c, g);
        check("add", &format!("{rows}x{n}"), &a, &b, LIM_ADD);
    }
}

/// The fused ops (`matmul_add`, `rope_qk`, `rms_norm_matmul3`, `rms_norm_matmul_swiglu`)
/// on OpenCL —
/// single kernels for the quantized types below the mul_mm threshold, the composition
/// otherwise — against the CPU's default implementations (the composed ops). Limits
/// are those of the matmuls they contain (the norm's rounding is far below them; silu is
/// smooth and `up` scales the error like the output, so the NMSE carries over).
#[test]
fn fused_ops_match_composition() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    // matmul_add: every weight type, mul_mv (1, 5 tokens) and mul_mm (37) paths.
    for dtype in WEIGHT_TYPES {
        let lim = if dtype.is_quantized() {
            LIM_MATMUL_Q_VS_CPU
        } else {
            LIM_MATMUL_FLOAT
        };
        let w = weight(&c, g, dtype, 576, 1536, 320);
        for n_tok in [1, 5, 37] {
            let x = act(&c, g, &randn(n_tok * 1536, 321, 1.0), Shape::d2(n_tok, 1536));
            let mut y = act(&c, g, &randn(n_tok * 576, 322, 1.0), Shape::d2(n_tok, 576));
            let mut tmp = out(&c, g, Shape::d2(n_tok, 576));
            ops::matmul_add(&mut c, w.r_cpu(), x.r_cpu(), tmp.m_cpu(), y.m_cpu()).unwrap();
            ops::matmul_add(g, w.r_cl(), x.r_cl(), tmp.m_cl(), y.m_cl()).unwrap();
            let (a, b) = y.read(&c, g);
            check("matmul_add", &format!("{dtype} 576x1536 tok {n_tok}"), &a, &b, lim);
        }
    }
    for style in [RopeStyle::Adjacent, RopeStyle::HalfSplit] {
        for (n_tok, hq, hk, hd, pos0) in [(1, 9, 3, 64, 0), (5, 9, 3, 64, 300), (2, 32, 8, 64, 2047)] {
            let f = act(
                &c,
                g,
                &antigravity_core::rope::base_inv_freq(100000.0, hd),
                Shape::d1(hd / 2),
            );
            let mut q = act(&c, g, &randn(n_tok * hq * hd, 91, 1.0), Shape::d3(n_tok, hq, hd));
            let mut k = act(&c, g, &randn(n_tok * hk * hd, 92, 1.0), Shape::d3(n_tok, hk, hd));
            ops::rope_qk(&mut c, q.m_cpu(), k.m_cpu(), f.r_cpu(), pos0, style).unwrap();
            ops::rope_qk(g, q.m_cl(), k.m_cl(), f.r_cl(), pos0, style).unwrap();
            let case = format!("{style:?} [{n_tok},{hq}+{hk},{hd}] pos0 {pos0}");
            let (a, b) = q.read(&c, g);
            check("rope_qk", &format!("{case} q"), &a, &b, LIM_ROPE);
            let (a, b) = k.read(&c, g);
            check("rope_qk", &format!("{case} k"), &a, &b, LIM_ROPE);
        }
    }
    // Q/K/V of SmolLM2 (576 → 576, 192, 192) and its FFN input side (576 → 1536); 1 and
    // 5 tokens take the fused mul_mv kernels, 37 the prefill ones (rms_norm, then
    // mul_mm3 / mul_mm_swiglu for quantized weights; F16 the composition over mul_mm).
    for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::F16] {
        let lim = if dtype.is_quantized() {
            LIM_MATMUL_Q_VS_CPU
        } else {
            LIM_MATMUL_FLOAT
        };
        let wq = weight(&c, g, dtype, 576, 576, 301);
        let wk = weight(&c, g, dtype, 192, 576, 302);
        let wv = weight(&c, g, dtype, 192, 576, 303);
        let wg = weight(&c, g, dtype, 1536, 576, 304);
        let wu = weight(&c, g, dtype, 1536, 576, 305);
        for n_tok in [1, 5, 37] {
            let x = act(
                &c,
                g,
                &randn(n_tok * 576, 310 + n_tok as u64, 1.0),
                Shape::d2(n_tok, 576),
            );
            let nw = act(&c, g, &randn(576, 330, 1.0), Shape::d1(576));
            let mut xn = out(&c, g, Shape::d2(n_tok, 576));
            let mut ys: Vec<Both> = [576, 192, 192]
                .iter()
                .map(|&n| out(&c, g, Shape::d2(n_tok, n)))
                .collect();
            {
                let [a, b, d] = &mut ys[..] else { unreachable!() };
                let w3 = [wq.r_cpu(), wk.r_cpu(), wv.r_cpu()];
                let y3 = [a.m_cpu(), b.m_cpu(), d.m_cpu()];
                ops::rms_norm_matmul3(&mut c, x.r_cpu(), nw.r_cpu(), 1e-5, xn.m_cpu(), w3, y3).unwrap();
                let w3 = [wq.r_cl(), wk.r_cl(), wv.r_cl()];
                let y3 = [a.m_cl(), b.m_cl(), d.m_cl()];
                ops::rms_norm_matmul3(g, x.r_cl(), nw.r_cl(), 1e-5, xn.m_cl(), w3, y3).unwrap();
            }
            for (name, y) in ["q", "k", "v"].iter().zip(&ys) {
                let (a, b) = y.read(&c, g);
                check("norm_mm3", &format!("{dtype} tok {n_tok} {name}"), &a, &b, lim);
            }
            let sh = Shape::d2(n_tok, 1536);
            let (mut gate, mut up, mut o) = (out(&c, g, sh), out(&c, g, sh), out(&c, g, sh));
            let (wgc, wuc) = (wg.r_cpu(), wu.r_cpu());
            let (gc, uc) = (gate.m_cpu(), up.m_cpu());
            ops::rms_norm_matmul_swiglu(
                &mut c,
                x.r_cpu(),
                nw.r_cpu(),
                1e-5,
                xn.m_cpu(),
                wgc,
                wuc,
                gc,
                uc,
                o.m_cpu(),
            )
            .unwrap();
            let (wgg, wug) = (wg.r_cl(), wu.r_cl());
            let (gg, ug) = (gate.m_cl(), up.m_cl());
            ops::rms_norm_matmul_swiglu(g, x.r_cl(), nw.r_cl(), 1e-5, xn.m_cl(), wgg, wug, gg, ug, o.m_cl()).unwrap();
            let (a, b) = o.read(&c, g);
            check("norm_swiglu", &format!("{dtype} tok {n_tok}"), &a, &b, lim);
        }
    }
    // Odd sizes for the prefill kernels: n_in 224 (7 blocks), Q/K/V of 100 + 36 + 36 rows
    // (row tiles straddle two weights), 200 FFN rows (partial row tile), 70 tokens (a
    // partial token tile).
    for dtype in [DType::Q4_0, DType::Q4_1, DType::Q8_0] {
        let n_in = 224;
        let n_tok = 70;
        let w: Vec<Weight> = [100, 36, 36, 200, 200]
            .iter()
            .enumerate()
            .map(|(i, &n)| weight(&c, g, dtype, n, n_in, 340 + i as u64))
            .collect();
        let x = act(&c, g, &randn(n_tok * n_in, 350, 1.0), Shape::d2(n_tok, n_in));
        let nw = act(&c, g, &randn(n_in, 351, 1.0), Shape::d1(n_in));
        let mut xn = out(&c, g, Shape::d2(n_tok, n_in));
        let mut ys: Vec<Both> = [100, 36, 36].iter().map(|&n| out(&c, g, Shape::d2(n_tok, n))).collect();
        {
            let [a, b, d] = &mut ys[..] else { unreachable!() };
            let w3 = [w[0].r_cpu(), w[1].r_cpu(), w[2].r_cpu()];
            let y3 = [a.m_cpu(), b.m_cpu(), d.m_cpu()];
            ops::rms_norm_matmul3(&mut c, x.r_cpu(), nw.r_cpu(), 1e-5, xn.m_cpu(), w3, y3).unwrap();
            let w3 = [w[0].r_cl(), w[1].r_cl(), w[2].r_cl()];
            let y3 = [a.m_cl(), b.m_cl(), d.m_cl()];
            ops::rms_norm_matmul3(g, x.r_cl(), nw.r_cl(), 1e-5, xn.m_cl(), w3, y3).unwrap();
        }
        for (name, y) in ["100", "36", "36'"].iter().zip(&ys) {
            let (a, b) = y.read(&c, g);
            check(
                "norm_mm3",
                &format!("{dtype} {name}x{n_in} tok {n_tok}"),
                &a,
                &b,
                LIM_MATMUL_Q_VS_CPU,
            );
        }
        let sh = Shape::d2(n_tok, 200);
        let (mut gate, mut up, mut o) = (out(&c, g, sh), out(&c, g, sh), out(&c, g, sh));
        let (gc, uc) = (gate.m_cpu(), up.m_cpu());
        let (wgc, wuc) = (w[3].r_cpu(), w[4].r_cpu());
        ops::rms_norm_matmul_swiglu(
            &mut c,
            x.r_cpu(),
            nw.r_cpu(),
            1e-5,
            xn.m_cpu(),
            wgc,
            wuc,
            gc,
            uc,
            o.m_cpu(),
        )
        .unwrap();
        let (gg, ug) = (gate.m_cl(), up.m_cl());
        let (wgg, wug) = (w[3].r_cl(), w[4].r_cl());
        ops::rms_norm_matmul_swiglu(g, x.r_cl(), nw.r_cl(), 1e-5, xn.m_cl(), wgg, wug, gg, ug, o.m_cl()).unwrap();
        let (a, b) = o.read(&c, g);
        check(
            "norm_swiglu",
            &format!("{dtype} 200x{n_in} tok {n_tok}"),
            &a,
            &b,
            LIM_MATMUL_Q_VS_CPU,
        );
    }
}

/// The whole-block decode kernel (`llama_blocks_f32` with one layer, persistent grid)
/// against the composition of per-op kernels on the same device (tight: only f32
/// summation order and the merge of attention chunks differ) and against the scalar CPU
/// (its Q8 activations: `LIM_MATMUL_Q_VS_CPU`). Mixed weight dtypes (one per matrix),
/// both RoPE conventions, GQA, contexts of 1, 6 and 301 slots (one and ten 32-slot
/// chunks), 1 and 2 work-groups (a barrier with one group is trivial; with two,
/// work-groups wait for each other, on PoCL's threads too), then a grid of 16 groups per
/// compute unit, which cannot all run at once: a clean error, then the per-op result.
/// Also the fused head (`llama_head_f32`).
#[test]
fn block_kernel_matches_composition() {
    use antigravity_core::model::llama::llama_block as llama_block_composed;
    // (n_head, n_kv): GQA groups of 2 (pow2) and 3 (SmolLM2's, stage B's units serve
    // a whole group), MHA, and 8 heads on one KV head (stage B's largest unit, GMAX).
    // The first configuration runs every grid; the others 2 work-groups.
    for (ci, (n_head, n_kv)) in [(4usize, 2usize), (6, 2), (3, 3), (8, 1)].into_iter().enumerate() {
        let (dim, hd, ffn) = (256, 64, 512);
        let (qd, kvd, cap) = (n_head * hd, n_kv * hd, 320);
        let dtypes = [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
            DType::F16,
            DType::BF16,
            DType::F32,
            DType::Q4_0,
        ];
        let shapes = [
            (qd, dim),
            (kvd, dim),
            (kvd, dim),
            (dim, qd),
            (ffn, dim),
            (ffn, dim),
            (dim, ffn),
        ];
        // Host bytes of each matrix (at a nonzero offset, like a GGUF tensor) and the norms.
        let mats: Vec<(Vec<u8>, DType, Shape)> = dtypes
            .iter()
            .zip(shapes)
            .enumerate()
            .map(|(i, (&dt, (r, c)))| {
                let rb = dt.row_bytes(c).unwrap();
                let vals = randn(r * c, 700 + i as u64, 0.5 / (c as f32).sqrt());
                // f32 rows need 4-byte alignment: 4 bytes in for every dtype.
                let mut bytes = vec![0u8; 4 + r * rb];
                let mut row = vec![0u32; rb.div_ceil(4)];
                for k in 0..r {
                    let rbytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut row)[..rb];
                    antigravity_core::quant::quantize_row(dt, &vals[k * c..(k + 1) * c], rbytes).unwrap();
                    bytes[4 + k * rb..4 + (k + 1) * rb].copy_from_slice(rbytes);
                }
                (bytes, dt, Shape::d2(r, c))
            })
            .collect();
        let norms = [randn(dim, 710, 1.0), randn(dim, 711, 1.0)];
        let inv_freq = antigravity_core::rope::base_inv_freq(10000.0, hd);
        let out_w = {
            let (r, c) = (1000, dim);
            let vals = randn(r * c, 712, 0.1);
            let rb = DType::Q8_0.row_bytes(c).unwrap();
            let mut bytes = vec![0u8; 2 + r * rb];
            let mut row = vec![0u32; rb.div_ceil(4)];
            for k in 0..r {
                let rbytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut row)[..rb];
                antigravity_core::quant::quantize_row(DType::Q8_0, &vals[k * c..(k + 1) * c], rbytes).unwrap();
                bytes[2 + k * rb..2 + (k + 1) * rb].copy_from_slice(rbytes);
            }
            bytes
        };

        /// Runs one block on `b` (fused op or the composition) from the given x and cache,
        /// then the head; returns (x, k row, v row, logits).
        #[allow(clippy::too_many_arguments)]
        fn run<B: Backend>(
            b: &mut B,
            fused: bool,
            mats: &[(Vec<u8>, DType, Shape)],
            norms: &[Vec<f32>; 2],
            inv_freq: &[f32],
            out_w: &[u8],
            x0: &[f32],
            kv0: &[f32],
            p: BlockParams,
            dims: (usize, usize, usize, usize),
        ) -> antigravity_core::Result<[Vec<f32>; 4]> {
            let (dim, qd, ffn, cap) = dims;
            let kvd = p.attn.n_kv_head * p.attn.head_dim;
            let f32buf = |b: &B, v: &[f32]| {
                let mut buf = b.alloc(v.len() * 4, BufferKind::Device).unwrap();
                b.upload(&mut buf, 0, bytemuck::cast_slice(v)).unwrap();
                buf
            };
            let ws: Vec<B::Buffer> = mats
                .iter()
                .map(|(bytes, _, _)| b.import_host(HostRegion::new(Arc::new(bytes.clone()))).unwrap())
                .collect();
            let wv = |i: usize| TensorRef::new(&ws[i], 4, mats[i].1, mats[i].2);
            let nb = [f32buf(b, &norms[0]), f32buf(b, &norms[1])];
            let fb = f32buf(b, inv_freq);
            let ob = b.import_host(HostRegion::new(Arc::new(out_w.to_vec()))).unwrap();
            let mut x = f32buf(b, x0);
            let mut kc = f32buf(b, &kv0[..cap * kvd]);
            let mut vc = f32buf(b, &kv0[cap * kvd..]);
            let z = |b: &B, n: usize| b.alloc(n * 4, BufferKind::Device).unwrap();
            let (mut xn, mut tmp, mut q, mut att) = (z(b, dim), z(b, dim), z(b, qd), z(b, qd));
            let (mut gate, mut up, mut act, mut logits) = (z(b, ffn), z(b, ffn), z(b, ffn), z(b, 1000));
            fn f<B: Backend>(b: &mut B::Buffer, n: usize) -> TensorMut<'_, B> {
                TensorMut::new(b, 0, DType::F32, Shape::d2(1, n))
            }
            let kshape = Shape::d3(cap, p.attn.n_kv_head, p.attn.head_dim);
            let w = BlockWeights {
                attn_norm: TensorRef::new(&nb[0], 0, DType::F32, Shape::d1(dim)),
                wq: wv(0),
                wk: wv(1),
                wv: wv(2),
                wo: wv(3),
                ffn_norm: TensorRef::new(&nb[1], 0, DType::F32, Shape::d1(dim)),
                w_gate: wv(4),
                w_up: wv(5),
                w_down: wv(6),
            };
            let kv = BlockKv {
                k: TensorMut::new(&mut kc, 0, DType::F32, kshape),
                v: TensorMut::new(&mut vc, 0, DType::F32, kshape),
            };
            let s = BlockScratch {
                xn: f::<B>(&mut xn, dim),
                tmp: f::<B>(&mut tmp, dim),
                q: f::<B>(&mut q, qd),
                att: f::<B>(&mut att, qd),
                gate: f::<B>(&mut gate, ffn),
                up: f::<B>(&mut up, ffn),
                act: f::<B>(&mut act, ffn),
            };
            let fr = TensorRef::new(&fb, 0, DType::F32, Shape::d1(inv_freq.len()));
            if fused {
                ops::llama_block(b, f::<B>(&mut x, dim), w, kv, fr, p, s).unwrap();
            } else {
                llama_block_composed(b, f::<B>(&mut x, dim), w, kv, fr, p, s, &mut |_, _, _| {}).unwrap();
            }
            let xr = TensorRef::new(&x, 0, DType::F32, Shape::d2(1, dim));
            let ow = TensorRef::new(&ob, 2, DType::Q8_0, Shape::d2(1000, dim));
            let nr = TensorRef::new(&nb[1], 0, DType::F32, Shape::d1(dim));
            if fused {
                ops::rms_norm_matmul(b, xr, nr, 1e-5, f::<B>(&mut xn, dim), ow, f::<B>(&mut logits, 1000)).unwrap();
            } else {
                ops::rms_norm(b, xr, nr, 1e-5, f::<B>(&mut xn, dim)).unwrap();
                ops::matmul(
                    b,
                    ow,
                    TensorRef::new(&xn, 0, DType::F32, Shape::d2(1, dim)),
                    f::<B>(&mut logits, 1000),
                )
                .unwrap();
            }
            let rd = |buf: &B::Buffer, off: usize, n: usize| {
                let mut v = vec![0f32; n];
                b.download(buf, off * 4, bytemuck::cast_slice_mut(&mut v)).map(|_| v)
            };
            let slot = p.attn.n_past;
            Ok([
                rd(&x, 0, dim)?,
                rd(&kc, slot * kvd, kvd)?,
                rd(&vc, slot * kvd, kvd)?,
                rd(&logits, 0, 1000)?,
            ])
        }

        let mut c = cpu();
        // 1 and 2 work-groups check the stages and the barrier; the last entry (16 per
        // compute unit, more than any device runs at once) checks that an unrunnable grid
        // fails cleanly: an error naming the cause, then the per-op path's right answer.
        let grids: &[usize] = if ci == 0 { &[1, 2, 0] } else { &[2] };
        for &groups in grids {
            let mut opts = OpenClOptions::from_env();
            opts.persistent_groups = Some(groups.max(1));
            let mut g = match OpenClBackend::new(opts.clone()) {
                Ok(g) => g,
                Err(e) => {
                    skip(&format!("no usable OpenCL device: {e}"));
                    return;
                }
            };
            let oversubscribed = groups == 0;
            if oversubscribed {
                opts.persistent_groups = Some(16 * g.device_info().compute_units.max(1) as usize);
                g = OpenClBackend::new(opts).unwrap();
            }
            g.reserve(Reservation {
                max_tokens: 1,
                max_row: ffn,
                max_ctx: cap,
                n_head,
            })
            .unwrap();
            for (style, n_past) in [
                (RopeStyle::Adjacent, 0),
                (RopeStyle::HalfSplit, 5),
                (RopeStyle::Adjacent, 300),
            ] {
                let p = BlockParams {
                    eps: 1e-5,
                    attn: AttnParams {
                        n_head,
                        n_kv_head: n_kv,
                        head_dim: hd,
                        scale: 1.0 / (hd as f32).sqrt(),
                        n_past,
                    },
                    pos0: n_past + 7,
                    style,
                };
                let x0 = randn(dim, 720 + n_past as u64, 1.0);
                let kv0 = randn(2 * cap * kvd, 721, 1.0);
                let d = (dim, qd, ffn, cap);
                let a = (&mats, &norms, &inv_freq, &out_w, &x0, &kv0);
                let cpu_ref = run(&mut c, false, a.0, a.1, a.2, a.3, a.4, a.5, p, d).unwrap();
                let comp = run(&mut g, false, a.0, a.1, a.2, a.3, a.4, a.5, p, d).unwrap();
                if oversubscribed && n_past == 0 {
                    let t = std::time::Instant::now();
                    let e = run(&mut g, true, a.0, a.1, a.2, a.3, a.4, a.5, p, d)
                        .expect_err("an unrunnable grid must fail");
                    eprintln!("block      oversubscribed grid: error after {:.2?}: {e}", t.elapsed());
                    assert!(e.to_string().contains("grid barrier"), "{e}");
                }
                let fused = run(&mut g, true, a.0, a.1, a.2, a.3, a.4, a.5, p, d).unwrap();
                let case = if oversubscribed {
                    format!("16/CU (fell back) {style:?} n_past {n_past}")
                } else {
                    format!("{n_head}/{n_kv} heads, {groups} groups {style:?} n_past {n_past}")
                };
                for (i, what) in ["x", "k row", "v row", "logits"].iter().enumerate() {
                    // The merge of attention chunks and the staged-vector sums reorder f32
                    // additions; rsqrt vs 1/sqrt in the norm (≤ 2 ulp): NMSE ~1e-13.
                    check("block", &format!("{case} {what} vs per-op"), &fused[i], &comp[i], 1e-10);
                    check(
                        "block",
                        &format!("{case} {what} vs cpu"),
                        &fused[i],
                        &cpu_ref[i],
                        LIM_MATMUL_Q_VS_CPU,
                    );
                }
            }
        }
    }
}

/// All layers through `llama_blocks` (several layers per persistent launch: 5 layers
/// make one full launch and a partial one when 4 fit, or more launches when fewer do)
/// against one composed block per layer on the same device. Each layer has its own
/// weights (dtypes rotate through every supported one) and cache.
#[test]
fn block_kernel_all_layers_match_per_layer() {
    use antigravity_core::backend::LayerFn;
    use antigravity_core::model::llama::llama_block as llama_block_composed;
    let (dim, n_head, n_kv, hd, ffn, cap, n_layer) = (128, 4, 2, 32, 256, 96, 5);
    let (qd, kvd) = (n_head * hd, n_kv * hd);
    let mut opts = OpenClOptions::from_env();
    opts.persistent_groups = Some(2);
    let mut g = match OpenClBackend::new(opts) {
        Ok(g) => g,
        Err(e) => {
            skip(&format!("no usable OpenCL device: {e}"));
            return;
        }
    };
    g.reserve(Reservation {
        max_tokens: 1,
        max_row: ffn,
        max_ctx: cap,
        n_head,
    })
    .unwrap();
    let Some((groups, lpl)) = g.persistent_block() else {
        panic!("the persistent block path is off on {}", g.device_info().name);
    };
    eprintln!("block      all layers: {groups} work-groups, {lpl} layers per launch");
    let types = WEIGHT_TYPES;
    let shapes = [
        (qd, dim),
        (kvd, dim),
        (kvd, dim),
        (dim, qd),
        (ffn, dim),
        (ffn, dim),
        (dim, ffn),
    ];
    // weights[l][m]: imported matrices; norms per layer
    let mut weights = Vec::new();
    for l in 0..n_layer {
        let mats: Vec<(ClBuf, DType, Shape)> = shapes
            .iter()
            .enumerate()
            .map(|(m, &(r, c))| {
                let dt = types[(l + m) % types.len()];
                let rb = dt.row_bytes(c).unwrap();
                let vals = randn(r * c, 900 + 10 * l as u64 + m as u64, 0.5 / (c as f32).sqrt());
                let mut bytes = vec![0u8; 4 + r * rb];
                let mut row = vec![0u32; rb.div_ceil(4)];
                for k in 0..r {
                    let rbytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut row)[..rb];
                    antigravity_core::quant::quantize_row(dt, &vals[k * c..(k + 1) * c], rbytes).unwrap();
                    bytes[4 + k * rb..4 + (k + 1) * rb].copy_from_slice(rbytes);
                }
                (
                    g.import_host(HostRegion::new(Arc::new(bytes))).unwrap(),
                    dt,
                    Shape::d2(r, c),
                )
            })
            .collect();
        weights.push(mats);
    }
    type ClBuf = <OpenClBackend as Backend>::Buffer;
    let f32buf = |g: &OpenClBackend, v: &[f32]| {
        let mut b = g.alloc(v.len() * 4, BufferKind::Device).unwrap();
        g.upload(&mut b, 0, bytemuck::cast_slice(v)).unwrap();
        b
    };
    let norms: Vec<[ClBuf; 2]> = (0..n_layer)
        .map(|l| {
            [
                f32buf(&g, &randn(dim, 950 + l as u64, 1.0)),
                f32buf(&g, &randn(dim, 960 + l as u64, 1.0)),
            ]
        })
        .collect();
    let freqs = f32buf(&g, &antigravity_core::rope::base_inv_freq(10000.0, hd));
    let n_past = 70; // three 32-slot attention chunks
    let x0 = randn(dim, 970, 1.0);
    let kv0: Vec<Vec<f32>> = (0..n_layer)
        .map(|l| randn(2 * cap * kvd, 980 + l as u64, 1.0))
        .collect();
    let p = BlockParams {
        eps: 1e-5,
        attn: AttnParams {
            n_head,
            n_kv_head: n_kv,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
            n_past,
        },
        pos0: n_past + 3,
        style: RopeStyle::HalfSplit,
    };
    let mut results = Vec::new();
    for fused in [true, false] {
        let mut x = f32buf(&g, &x0);
        let mut caches: Vec<(ClBuf, ClBuf)> = kv0
            .iter()
            .map(|v| (f32buf(&g, &v[..cap * kvd]), f32buf(&g, &v[cap * kvd..])))
            .collect();
        let z = |g: &OpenClBackend, n: usize| g.alloc(n * 4, BufferKind::Device).unwrap();
        let (mut xn, mut tmp, mut q, mut att) = (z(&g, dim), z(&g, dim), z(&g, qd), z(&g, qd));
        let (mut gate, mut up, mut act) = (z(&g, ffn), z(&g, ffn), z(&g, ffn));
        fn f(b: &mut ClBuf, n: usize) -> TensorMut<'_, OpenClBackend> {
            TensorMut::new(b, 0, DType::F32, Shape::d2(1, n))
        }
        let kshape = Shape::d3(cap, n_kv, hd);
        let view = |l: usize| -> BlockWeights<'_, OpenClBackend> {
            let w = |m: usize| TensorRef::new(&weights[l][m].0, 4, weights[l][m].1, weights[l][m].2);
            BlockWeights {
                attn_norm: TensorRef::new(&norms[l][0], 0, DType::F32, Shape::d1(dim)),
                wq: w(0),
                wk: w(1),
                wv: w(2),
                wo: w(3),
                ffn_norm: TensorRef::new(&norms[l][1], 0, DType::F32, Shape::d1(dim)),
                w_gate: w(4),
                w_up: w(5),
                w_down: w(6),
            }
        };
        let fr = TensorRef::new(&freqs, 0, DType::F32, Shape::d1(hd / 2));
        let mut s = BlockScratch {
            xn: f(&mut xn, dim),
            tmp: f(&mut tmp, dim),
            q: f(&mut q, qd),
            att: f(&mut att, qd),
            gate: f(&mut gate, ffn),
            up: f(&mut up, ffn),
            act: f(&mut act, ffn),
        };
        if fused {
            // Twice: a first token elsewhere in the cache (sets every argument of the
            // per-group kernels), then, from the same starting state, the measured one
            // (same buffers: only the per-token arguments are set again).
            let mut p_warm = p;
            p_warm.attn.n_past -= 5;
            p_warm.pos0 -= 5;
            for (pp, last) in [(p_warm, false), (p, true)] {
                if last {
                    g.upload(&mut x, 0, bytemuck::cast_slice(&x0)).unwrap();
                    for ((k, v), k0) in caches.iter_mut().zip(&kv0) {
                        g.upload(k, 0, bytemuck::cast_slice(&k0[..cap * kvd])).unwrap();
                        g.upload(v, 0, bytemuck::cast_slice(&k0[cap * kvd..])).unwrap();
                    }
                }
                let mut visit = |l: usize, fun: &mut LayerFn<'_, OpenClBackend>| {
                    let (k, v) = &mut caches[l];
                    let kv = BlockKv {
                        k: TensorMut::new(k, 0, DType::F32, kshape),
                        v: TensorMut::new(v, 0, DType::F32, kshape),
                    };
                    fun(view(l), kv)
                };
                ops::llama_blocks(&mut g, f(&mut x, dim), n_layer, &mut visit, fr, pp, s.reborrow()).unwrap();
            }
        } else {
            for (l, (k, v)) in caches.iter_mut().enumerate() {
                let kv = BlockKv {
                    k: TensorMut::new(k, 0, DType::F32, kshape),
                    v: TensorMut::new(v, 0, DType::F32, kshape),
                };
                llama_block_composed(
                    &mut g,
                    f(&mut x, dim),
                    view(l),
                    kv,
                    fr,
                    p,
                    s.reborrow(),
                    &mut |_, _, _| {},
                )
                .unwrap();
            }
        }
        let rd = |b: &ClBuf, off: usize, n: usize| {
            let mut v = vec![0f32; n];
            g.download(b, off * 4, bytemuck::cast_slice_mut(&mut v)).unwrap();
            v
        };
        let mut out = vec![rd(&x, 0, dim)];
        for (k, v) in &caches {
            out.push(rd(k, n_past * kvd, kvd));
            out.push(rd(v, n_past * kvd, kvd));
        }
        results.push(out);
    }
    for (i, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
        let what = if i == 0 {
            "x".to_string()
        } else {
            format!("layer {} {}", (i - 1) / 2, if i % 2 == 1 { "k row" } else { "v row" })
        };
        // As in block_kernel_matches_composition, compounded over 5 layers.
        check("blocks", &format!("{n_layer} layers {what} vs per-op"), a, b, 1e-9);
    }
}

/// `argmax` (greedy decoding's readback) against the CPU and the rule itself: the
/// 49152-wide logits row, odd widths, a tie (the lowest index wins), NaNs (never win),
/// a row of -inf (-1), several rows. Exact: indices must be identical.
#[test]
fn argmax_rows() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let mut c = cpu();
    let mut cases: Vec<(String, Vec<f32>, usize)> = Vec::new();
    for n in [49152usize, 1, 7, 1000, 4097] {
        cases.push((format!("random 1x{n}"), randn(n, 40 + n as u64, 3.0), n));
    }
    let mut tie = randn(5000, 50, 1.0);
    tie[1234] = 9.0;
    tie[4321] = 9.0;
    cases.push(("tie at 1234 and 4321".into(), tie, 5000));
    let mut nan = randn(3000, 51, 1.0);
    nan[10] = f32::NAN;
    nan[2999] = f32::NAN;
    cases.push(("NaNs".into(), nan, 3000));
    cases.push(("all -inf".into(), vec![f32::NEG_INFINITY; 300], 300));
    cases.push(("3 rows".into(), randn(3 * 777, 52, 1.0), 777));
    // Rows over 4096 take the two-pass kernels: the same cases across pieces.
    let mut nan = randn(6000, 53, 1.0);
    nan[1500] = f32::NAN;
    cases.push(("NaN, two-pass".into(), nan, 6000));
    cases.push(("all -inf, two-pass".into(), vec![f32::NEG_INFINITY; 5000], 5000));
    let mut rows3 = randn(3 * 5000, 54, 1.0);
    rows3[5000 + 4999] = 50.0; // last element of row 1
    rows3[2 * 5000 + 1024] = 50.0; // first element of a piece in row 2
    rows3[2 * 5000 + 3000] = 50.0; // its tie, later: the first must win
    cases.push(("3 rows, two-pass".into(), rows3, 5000));
    for (name, v, n) in cases {
        let rows = v.len() / n;
        let x = act(&c, g, &v, Shape::d2(rows, n));
        let mut o = out(&c, g, Shape::d1(rows));
        ops::argmax(&mut c, x.r_cpu(), o.m_cpu()).unwrap();
        ops::argmax(g, x.r_cl(), o.m_cl()).unwrap();
        let (a, b) = o.read(&c, g);
        let want: Vec<f32> = v
            .chunks(n)
            .map(|r| {
                let (mut bi, mut bv) = (-1.0f32, f32::NEG_INFINITY);
                for (i, &x) in r.iter().enumerate() {
                    if x > bv {
                        (bi, bv) = (i as f32, x);
                    }
                }
                bi
            })
            .collect();
        eprintln!("argmax     {name:<44} gpu {a:?} cpu {b:?}");
        assert_eq!(b, want, "cpu argmax {name}");
        assert_eq!(a, want, "opencl argmax {name}");
    }
}

// --- memory -------------------------------------------------------------------------

/// Host bytes that can change after import (atomics: shared mutation without UB).
struct Cells(Vec<std::sync::atomic::AtomicU8>);
impl AsRef<[u8]> for Cells {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: AtomicU8 has u8's size and alignment; the slice is only read while no
        // store happens (the test stores between uses, single-threaded).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len()) }
    }
}

#[test]
fn import_is_zero_copy_on_unified_memory() {
    let Some(mut g) = shared() else { return };
    let g = &mut *g;
    let c = cpu();
    let unified = g.device_info().unified_memory;
    let n = 64 * 576;
    let vals = randn(n, 81, 1.0);
    let mut raw = vec![0u8; 32];
    raw.extend_from_slice(bytemuck::cast_slice(&vals));
    let cells = Arc::new(Cells(
        raw.iter().map(|&b| std::sync::atomic::AtomicU8::new(b)).collect(),
    ));
    let before = g.copied_bytes();
    let w = g.import_host(HostRegion::new(cells.clone())).unwrap();
    let copied = g.copied_bytes().import - before.import;
    eprintln!(
        "import     {} bytes on {} (unified memory {unified}): {copied} bytes copied, kind {:?}",
        raw.len(),
        g.device_info().name,
        w.kind()
    );
    if unified {
        assert_eq!(copied, 0, "a unified-memory device must import without copying");
        assert_eq!(w.kind(), ClMemKind::HostZeroCopy);
    } else {
        assert_eq!(copied, raw.len() as u64, "a discrete device copies once, counted");
        assert_eq!(w.kind(), ClMemKind::HostCopied);
    }

    // The kernels read the host bytes in place: change row 3 after the import and
    // get_rows sees the new values (only on the zero-copy path).
    let row = 3;
    let new_val = 42.5f32;
    for (i, b) in new_val.to_le_bytes().iter().cycle().take(576 * 4).enumerate() {
        cells.0[32 + row * 576 * 4 + i].store(*b, std::sync::atomic::Ordering::SeqCst);
    }
    let mut o = out(&c, g, Shape::d2(1, 576));
    let table = TensorRef::new(&w, 32, DType::F32, Shape::d2(64, 576));
    ops::get_rows(g, table, &[row as u32], o.m_cl()).unwrap();
    let mut got = vec![0f32; 576];
    g.download(&o.cl, PAD_F32 * 4, bytemuck::cast_slice_mut(&mut got))
        .unwrap();
    let expect = if w.kind() == ClMemKind::HostZeroCopy {
        new_val
    } else {
        vals[row * 576]
    };
    assert!(got.iter().all(|&v| v == got[0]) || !unified);
    assert_eq!(got[0], expect, "get_rows read {} (zero-copy: {})", got[0], unified);

    // Writing into an imported (read-only) weight is refused.
    let mut w = w;
    let mut y = TensorMut::new(&mut w, 32, DType::F32, Shape::d2(1, 576));
    assert!(ops::add(g, y.reborrow(), o.r_cl()).is_err());
}

#[test]
fn copy_counters_count_uploads_and_downloads() {
    let Some(g) = shared() else { return };
    let before = g.copied_bytes();
    let mut b = g.alloc(1000, BufferKind::Shared).unwrap();
    g.upload(&mut b, 8, &[1u8; 100]).unwrap();
    let mut back = [0u8; 110];
    g.download(&b, 0, &mut back).unwrap();
    assert_eq!(&back[..8], &[0u8; 8], "alloc zero-fills");
    assert_eq!(&back[8..108], &[1u8; 100]);
    let after = g.copied_bytes();
    assert_eq!(after.upload - before.upload, 100);
    assert_eq!(after.download - before.download, 110);
    assert!(
        g.upload(&mut b, 950, &[0u8; 100]).is_err(),
        "out-of-bounds upload is refused"
    );
}

#[test]
fn concurrent_first_discovery_sees_every_device() {
    // PoCL returns empty device lists to concurrent first-time callers; our discovery
    // lock serializes them, so every thread must see the same devices.
    let lists: Vec<usize> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| antigravity_core::opencl::list_devices().map(|l| l.len()).unwrap_or(0)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    if lists.iter().all(|&n| n == 0) {
        skip("no OpenCL device to discover");
        return;
    }
    assert!(lists.iter().all(|&n| n == lists[0]), "device counts differ: {lists:?}");
}

#[test]
fn profiling_accumulates_kernel_times() {
    let mut opts = OpenClOptions::from_env();
    opts.profiling = true;
    opts.mm_min_tokens = Some(16);
    let mut g = match OpenClBackend::new(opts) {
        Ok(g) => g,
        Err(e) => {
            skip(&format!("no usable OpenCL device: {e}"));
            return;
        }
    };
    let c = cpu();
    let mut x = act(&c, &g, &randn(4 * 300, 91, 1.0), Shape::d2(4, 300));
    for _ in 0..3 {
        ops::softmax(&mut g, x.m_cl()).unwrap();
    }
    g.synchronize().unwrap();
    let t = g.kernel_times().unwrap();
    eprintln!("profile    {t:?}");
    assert_eq!(t.len(), 1);
    assert_eq!((t[0].0.as_str(), t[0].2), ("softmax_f32", 3));
    g.reset_kernel_times().unwrap();

    // A long-context decode step takes the split-context path (attention + combine).
    g.reserve(Reservation {
        max_tokens: 1,
        max_row: 576,
        max_ctx: 1024,
        n_head: 9,
    })
    .unwrap();
    let (cap, hd) = (1024, 64);
    let q = act(&c, &g, &randn(9 * hd, 92, 1.0), Shape::d3(1, 9, hd));
    let k = act(&c, &g, &randn(cap * 3 * hd, 93, 1.0), Shape::d3(cap, 3, hd));
    let v = act(&c, &g, &randn(cap * 3 * hd, 94, 1.0), Shape::d3(cap, 3, hd));
    let mut o = out(&c, &g, Shape::d3(1, 9, hd));
    let p = AttnParams {
        n_head: 9,
        n_kv_head: 3,
        head_dim: hd,
        scale: 0.125,
        n_past: 999,
    };
    ops::attention(&mut g, q.r_cl(), k.r_cl(), v.r_cl(), p, o.m_cl()).unwrap();
    let names: Vec<String> = g.kernel_times().unwrap().into_iter().map(|t| t.0).collect();
    eprintln!("profile    split attention: {names:?}");
    assert!(names.iter().any(|n| n == "attention_combine_f32"), "{names:?}");

    // Prefill batches take the tiled mul_mm kernel, decode the mul_mv one.
    g.reset_kernel_times().unwrap();
    let w = weight(&c, &g, DType::Q4_1, 1536, 576, 95);
    for n_tok in [1, 64] {
        let x = act(&c, &g, &randn(n_tok * 576, 96, 1.0), Shape::d2(n_tok, 576));
        let mut y = out(&c, &g, Shape::d2(n_tok, 1536));
        ops::matmul(&mut g, w.r_cl(), x.r_cl(), y.m_cl()).unwrap();
    }
    let t = g.kernel_times().unwrap();
    eprintln!("profile    matmul 1536x576 q4_1, 1 and 64 tokens: {t:?}");
    let mut names: Vec<&str> = t.iter().map(|t| t.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["mul_mm_q4_1_f32", "mul_mv_q4_1_f32"]);
    g.reset_kernel_times().unwrap();
    assert!(g.kernel_times().unwrap().is_empty());
}

// --- the image weight path (Q4_0 repacked into image1d_buffer planes) -------------------

/// Device bytes the image path's layout implies for a `[rows, cols]` Q4_0 matrix: a
/// 16-byte texel of nibbles per block, plus the f16 scales four to an 8-byte texel.
fn image_plane_bytes(rows: usize, cols: usize) -> usize {
    let blocks = rows * (cols / 32);
    blocks * 16 + blocks.div_ceil(4) * 8
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

fn image_weight(c: &CpuBackend, g: &OpenClBackend, rows: usize, cols: usize, seed: u64) -> ImgWeight {
    let mut w = weight(c, g, DType::Q4_0, rows, cols, seed);
    let bytes = rows * DType::Q4_0.row_bytes(cols).unwrap();
    let mut raw = vec![0u8; 32 + bytes];
    g.download(&w.cl, w.pad, &mut raw[32..]).unwrap();
    let region = HostRegion::new(Arc::new(raw)).slice(32, bytes).unwrap();
    let plain = g.import_host(region.clone()).unwrap();
    w.cl = g.import_weight(region, DType::Q4_0, w.shape).unwrap();
    w.pad_cl = 0;
    ImgWeight { w, plain }
}

/// Runs `y = x·wᵀ` (or `y += x·wᵀ` on a random y) with the image kernel and checks it
/// against the scalar CPU, against f32 of the dequantized weights, and against the
/// buffer kernel on the same device.
fn run_image_matmul(c: &mut CpuBackend, g: &mut OpenClBackend, iw: &ImgWeight, n_tok: usize, acc: bool, seed: u64) {
    let w = &iw.w;
    let (n_out, n_in) = (w.shape.dims()[0], w.shape.dims()[1]);
    let xv = randn(n_tok * n_in, 3000 + seed, 1.0);
    let y0 = if acc {
        randn(n_tok * n_out, 4000 + seed, 1.0)
    } else {
        vec![0.0; n_tok * n_out]
    };
    let x = act(c, g, &xv, Shape::d2(n_tok, n_in));
    let mut y = act(c, g, &y0, Shape::d2(n_tok, n_out));
    let mut yb = act(c, g, &y0, Shape::d2(n_tok, n_out));
    let mut tmp = out(c, g, Shape::d2(n_tok, n_out));
    let before = g.kernel_times().unwrap();
    let launches = |t: &[(String, u64, u32)], k: &str| t.iter().find(|e| e.0 == k).map_or(0, |e| e.2);
    let plain = TensorRef::new(&iw.plain, 0, DType::Q4_0, w.shape);
    if acc {
        ops::matmul_add(c, w.r_cpu(), x.r_cpu(), tmp.m_cpu(), y.m_cpu()).unwrap();
        ops::matmul_add(g, w.r_cl(), x.r_cl(), tmp.m_cl(), y.m_cl()).unwrap();
        ops::matmul_add(g, plain, x.r_cl(), tmp.m_cl(), yb.m_cl()).unwrap();
    } else {
        ops::matmul(c, w.r_cpu(), x.r_cpu(), y.m_cpu()).unwrap();
        ops::matmul(g, w.r_cl(), x.r_cl(), y.m_cl()).unwrap();
        ops::matmul(g, plain, x.r_cl(), yb.m_cl()).unwrap();
    }
    let after = g.kernel_times().unwrap();
    assert_eq!(
        launches(&after, "mul_mv_q4_0_img_f32") - launches(&before, "mul_mv_q4_0_img_f32"),
        1,
        "the image kernel must run once"
    );
    assert_eq!(
        launches(&after, "mul_mv_q4_0_f32") - launches(&before, "mul_mv_q4_0_f32"),
        1,
        "the plain import must take the buffer kernel"
    );
    let (a, b) = y.read(c, g);
    let (bk, _) = yb.read(c, g);
    let case = format!("Q4_0 img {n_out}x{n_in} tok {n_tok}{}", if acc { " +=" } else { "" });
    check("matmul", &format!("{case} vs cpu"), &a, &b, LIM_MATMUL_Q_VS_CPU);
    let mut want = y0.clone();
    for t in 0..n_tok {
        for o in 0..n_out {
            let wr = &w.deq[o * n_in..(o + 1) * n_in];
            want[t * n_out + o] += wr.iter().zip(&xv[t * n_in..]).map(|(a, b)| a * b).sum::<f32>();
        }
    }
    check(
        "matmul",
        &format!("{case} vs f32(dequant)"),
        &a,
        &want,
        LIM_MATMUL_Q_VS_DEQUANT,
    );
    check(
        "matmul",
        &format!("{case} vs buffer kernel"),
        &a,
        &bk,
        LIM_MATMUL_Q_VS_DEQUANT,
    );
}

/// The image path forced on, over SmolLM2's matrices (and its 49152 × 576 output as if
/// it were Q4_0) and odd sizes — 13 rows (not a multiple of any rows-per-group), 1 row,
/// K = 32 (one block a row) — with 1 to 7 tokens and the accumulating form; each weight
/// reports exactly the extra bytes its layout implies, counted as imported bytes.
#[test]
fn image_q4_0_matmul_matches_cpu() {
    let Some(mut g) = image_backend(None) else { return };
    let g = &mut g;
    let mut c = cpu();
    let unified = g.device_info().unified_memory;
    let shapes: [(usize, usize, &[usize]); 9] = [
        (576, 576, &[1, 5]),  // q / o projections
        (192, 576, &[1, 3]),  // k / v
        (1536, 576, &[1, 4]), // gate / up
        (576, 1536, &[1, 7]), // down
        (49152, 576, &[1]),   // the output projection, were it Q4_0
        (13, 224, &[1, 5]),   // rows not a multiple of the group's rows
        (1, 576, &[1, 2]),    // one row
        (7, 32, &[1, 6]),     // K = 32: one block a row
        (1, 32, &[1]),
    ];
    let mut extra = 0u64;
    for (si, &(n_out, n_in, toks)) in shapes.iter().enumerate() {
        let before = (g.copied_bytes().import, g.repack_stats());
        let iw = image_weight(&c, g, n_out, n_in, 700 + si as u64);
        let bytes = image_plane_bytes(n_out, n_in);
        let st = g.repack_stats();
        eprintln!(
            "repack     Q4_0 {n_out}x{n_in}: {} extra bytes (tensor {}), {:.3} ms so far",
            iw.w.cl.repacked_bytes(),
            n_out * DType::Q4_0.row_bytes(n_in).unwrap(),
            st.repack_ns as f64 / 1e6
        );
        assert_eq!(
            iw.w.cl.repacked_bytes(),
            bytes,
            "{n_out}x{n_in}: extra bytes of the layout"
        );
        assert_eq!(iw.plain.repacked_bytes(), 0);
        assert_eq!(st.tensors, before.1.tensors + 1);
        assert_eq!(st.extra_bytes, before.1.extra_bytes + bytes as u64);
        assert!(st.repack_ns > before.1.repack_ns, "repack time is measured");
        // Imported bytes: the planes, plus (discrete devices) the plain copy of the tensor twice.
        let tensor = (n_out * DType::Q4_0.row_bytes(n_in).unwrap()) as u64;
        let copied = g.copied_bytes().import - before.0;
        // (weight() imports its 2-byte-padded region, image_weight the bare tensor twice.)
        let discrete = if unified { 0 } else { (2 + tensor) + 2 * tensor };
        assert_eq!(copied, bytes as u64 + discrete, "{n_out}x{n_in}: counted import bytes");
        extra += bytes as u64;
        for (ti, &n_tok) in toks.iter().enumerate() {
            run_image_matmul(&mut c, g, &iw, n_tok, false, (si * 10 + ti) as u64);
        }
        run_image_matmul(&mut c, g, &iw, toks[toks.len() - 1], true, si as u64 + 90);
    }
    assert_eq!(g.repack_stats().extra_bytes, extra);
    assert_eq!(g.repack_stats().kept_on_buffer, 0);
    assert_eq!(g.isa(), "cl1.2+img");
}

/// Where the image path must not apply: a matrix over the image size limit stays on the
/// buffer kernel (no planes, counted in `kept_on_buffer`, still correct); other dtypes,
/// views that are not the whole imported tensor, and the default options on a non-Adreno
/// device take the buffer kernels and copy nothing extra.
#[test]
fn image_path_limits_and_fallbacks() {
    // 100 texels: a 13 × 224 matrix (91 blocks) fits, 576 × 576 (10 368) does not.
    let Some(mut g) = image_backend(Some(100)) else { return };
    let g = &mut g;
    let mut c = cpu();
    let small = image_weight(&c, g, 13, 224, 801);
    assert_eq!(small.w.cl.repacked_bytes(), image_plane_bytes(13, 224));
    run_image_matmul(&mut c, g, &small, 3, false, 1);

    let big = image_weight(&c, g, 576, 576, 802);
    assert_eq!(big.w.cl.repacked_bytes(), 0, "over the texel limit: no planes");
    let st = g.repack_stats();
    assert_eq!((st.tensors, st.kept_on_buffer), (1, 1));
    assert_eq!(st.extra_bytes, image_plane_bytes(13, 224) as u64);
    g.reset_kernel_times().unwrap();
    run_matmul(&mut c, g, &big.w, 1, 803);
    let t = g.kernel_times().unwrap();
    assert!(t.iter().all(|e| e.0 != "mul_mv_q4_0_img_f32"), "{t:?}");

    // Another dtype through import_weight: nothing repacked.
    let before = g.copied_bytes().import;
    let q8 = weight(&c, g, DType::Q8_0, 64, 576, 804);
    let region = HostRegion::new(Arc::new(vec![0u8; 64 * DType::Q8_0.row_bytes(576).unwrap()]));
    let q8_cl = g.import_weight(region, DType::Q8_0, q8.shape).unwrap();
    assert_eq!(q8_cl.repacked_bytes(), 0);
    assert_eq!(g.repack_stats().tensors, 1);
    if g.device_info().unified_memory {
        assert_eq!(
            g.copied_bytes().import,
            before,
            "unified memory: no copy for a non-Q4_0 import"
        );
    }

    // A view of part of a repacked weight (its first 5 rows) takes the buffer kernel.
    g.reset_kernel_times().unwrap();
    let xv = randn(224, 805, 1.0);
    let x = act(&c, g, &xv, Shape::d2(1, 224));
    let mut y = out(&c, g, Shape::d2(1, 5));
    let part = TensorRef::new(&small.w.cl, 0, DType::Q4_0, Shape::d2(5, 224));
    ops::matmul(g, part, x.r_cl(), y.m_cl()).unwrap();
    let t = g.kernel_times().unwrap();
    assert!(t.iter().all(|e| e.0 != "mul_mv_q4_0_img_f32"), "{t:?}");
    let mut got = vec![0f32; 5];
    g.download(&y.cl, PAD_F32 * 4, bytemuck::cast_slice_mut(&mut got))
        .unwrap();
    let want: Vec<f32> = (0..5)
        .map(|o| {
            small.w.deq[o * 224..(o + 1) * 224]
                .iter()
                .zip(&xv)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    check(
        "matmul",
        "Q4_0 img weight, 5-row view (buffer kernel)",
        &got,
        &want,
        LIM_MATMUL_Q_VS_DEQUANT,
    );

    // Default options: on only for Qualcomm/Adreno GPUs.
    if std::env::var_os("ANTIGRAVITY_OPENCL_IMAGES").is_none() {
        let Some(d) = shared() else { return };
        let name = format!("{} {}", d.device_info().vendor, d.device_info().name).to_lowercase();
        let adreno = !d.device_info().is_cpu && (name.contains("qualcomm") || name.contains("adreno"));
        assert_eq!(
            d.image_path_on(),
            adreno && d.device_info().image1d_buffer,
            "default image path on {name}"
        );
        if !adreno {
            let before = d.copied_bytes().import;
            let rb = DType::Q4_0.row_bytes(576).unwrap();
            let w = d
                .import_weight(
                    HostRegion::new(Arc::new(vec![0u8; 64 * rb])),
                    DType::Q4_0,
                    Shape::d2(64, 576),
                )
                .unwrap();
            assert_eq!(w.repacked_bytes(), 0, "default path: no repack");
            assert_eq!(d.repack_stats(), Default::default());
            if d.device_info().unified_memory {
                assert_eq!(
                    d.copied_bytes().import,
                    before,
                    "default path on unified memory: zero copies"
                );
            }
        }
    }
}
