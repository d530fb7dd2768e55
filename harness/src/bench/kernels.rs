//! Kernel micro-benchmarks on the model's own shapes, through the op layer
//! (`antigravity_core::ops`), on any [`Backend`].
//!
//! Shapes are SmolLM2-135M's (hidden 576, FFN 1536, 9 query / 3 KV heads of 64, vocab
//! 49152); data is generated here from a fixed seed and quantized with the reference
//! quantizers, so every run times the same bytes. Each case reports its median time and
//! the bytes and flops it must move, from which the caller derives GB/s and GFLOP/s.
//!
//! Weights enter the backend through `Backend::import_weight`, as a model's do (the CPU
//! repacks them into its x8 layout there), so the kernels timed are the ones decode and
//! prefill run. Each matvec is timed twice: `matmul` repeats one matrix, which then
//! sits in cache; `matmul_stream` cycles through copies of it filling [`STREAM_BYTES`]
//! (three times a 32 MiB last-level cache), so every byte comes from memory as in a
//! decode step — the figure that predicts the model.

use std::sync::Arc;

use antigravity_core::backend::{AttnParams, HostRegion, Reservation, RopeStyle};
use antigravity_core::{ops, Backend, BufferKind, DType, Shape, TensorMut, TensorRef};

use super::error::{Error, Result};
use super::timing::{measure, Budget, Timing};

/// Matrix shapes (name, out, in) of one SmolLM2-135M layer plus the output projection.
pub const MATMUL_SHAPES: [(&str, usize, usize); 5] = [
    ("q,o", 576, 576),
    ("k,v", 192, 576),
    ("gate,up", 1536, 576),
    ("down", 576, 1536),
    ("output", 49152, 576),
];
/// Shapes also timed with a batch of tokens (prefill-like).
pub const BATCH_SHAPES: [(usize, usize); 2] = [(576, 576), (1536, 576)];
pub const BATCH_TOKENS: usize = 128;
/// Weight types timed.
pub const WEIGHT_DTYPES: [DType; 4] = [DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::F16];
/// Bytes of weight copies a `matmul_stream` case cycles through.
pub const STREAM_BYTES: usize = 96 << 20;
/// Attention context lengths timed.
pub const ATTN_CTX: [usize; 3] = [128, 512, 2048];

const HIDDEN: usize = 576;
const FFN: usize = 1536;
const N_HEAD: usize = 9;
const N_KV_HEAD: usize = 3;
const HEAD_DIM: usize = 64;

/// One timed kernel case.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelResult {
    pub op: &'static str,
    /// `out x in` for matmul, the tensor shape otherwise.
    pub shape: String,
    pub tokens: usize,
    /// Weight type (matmul only).
    pub dtype: Option<DType>,
    /// Attention context.
    pub ctx: Option<usize>,
    pub timing: Timing,
    /// Bytes the op must move: weights for matmul, K+V for attention, in+out otherwise.
    pub bytes: f64,
    /// Floating-point operations (2 per multiply-add); 0 where not meaningful.
    pub flops: f64,
}

impl KernelResult {
    pub fn gb_s(&self) -> f64 {
        self.bytes / self.timing.secs() / 1e9
    }
    pub fn gflop_s(&self) -> f64 {
        self.flops / self.timing.secs() / 1e9
    }
}

/// The list of cases, so a caller can size a progress bar before running them.
pub fn case_count(kv_types: usize) -> usize {
    2 * MATMUL_SHAPES.len() * WEIGHT_DTYPES.len()
        + BATCH_SHAPES.len() * WEIGHT_DTYPES.len()
        + 3
        + kv_types * ATTN_CTX.len()
}

/// SplitMix64: a tiny seeded generator, enough for benchmark data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Allocates a device buffer holding `data` (f32).
fn upload_f32<B: Backend>(b: &B, data: &[f32]) -> Result<B::Buffer> {
    let bytes = f32_bytes(data);
    let mut buf = b.alloc(bytes.len(), BufferKind::Device)?;
    b.upload(&mut buf, 0, &bytes)?;
    Ok(buf)
}

/// `data` in a KV-cache dtype (f32, f16 rounded, Q8_0 quantized), uploaded.
fn upload_cache<B: Backend>(b: &B, dt: DType, data: &[f32]) -> Result<B::Buffer> {
    let n = dt
        .row_bytes(data.len())
        .ok_or_else(|| Error::msg(format!("{} values are not whole {dt} blocks", data.len())))?;
    let mut bytes = vec![0u8; n];
    antigravity_core::quant::quantize_row(dt, data, &mut bytes)
        .map_err(|e| Error::msg(format!("cache {dt}: {e:?}")))?;
    let mut buf = b.alloc(bytes.len(), BufferKind::Device)?;
    b.upload(&mut buf, 0, &bytes)?;
    Ok(buf)
}

/// A random `[rows, cols]` weight quantized (or converted) to `dtype`, as file bytes.
fn weight_bytes(rng: &mut Rng, dtype: DType, rows: usize, cols: usize) -> Result<Vec<u8>> {
    let rb = dtype
        .row_bytes(cols)
        .ok_or_else(|| Error::msg(format!("{cols} columns are not whole {dtype} blocks")))?;
    let mut bytes = vec![0u8; rb * rows];
    for row in bytes.chunks_exact_mut(rb) {
        let src = rng.vec(cols);
        antigravity_core::quant::quantize_row(dtype, &src, row)
            .map_err(|e| Error::msg(format!("quantize {dtype}: {e:?}")))?;
    }
    Ok(bytes)
}

/// `bytes` imported as a model weight (`Backend::import_weight`).
fn import_weight<B: Backend>(b: &B, bytes: &[u8], dtype: DType, rows: usize, cols: usize) -> Result<B::Buffer> {
    let region = HostRegion::new(Arc::new(bytes.to_vec()));
    Ok(b.import_weight(region, dtype, Shape::d2(rows, cols))?)
}

/// Runs every case on `b`, calling `done` after each. Synchronises the backend inside
/// each timed call, so asynchronous (GPU) backends are timed to completion.
pub fn run<B: Backend>(b: &mut B, budget: Budget, done: &mut dyn FnMut(KernelResult)) -> Result<()> {
    b.reserve(Reservation {
        max_tokens: BATCH_TOKENS,
        max_row: FFN,
        max_ctx: *ATTN_CTX.iter().max().unwrap_or(&1),
        n_head: N_HEAD,
    })?;
    let mut rng = Rng::new(0x5EED_A11C);

    // --- matmul: every shape as matvec, a couple as a 128-token batch ----------------
    let mut cases: Vec<(usize, usize, usize)> = MATMUL_SHAPES.iter().map(|&(_, o, i)| (o, i, 1)).collect();
    cases.extend(BATCH_SHAPES.iter().map(|&(o, i)| (o, i, BATCH_TOKENS)));
    for &(n_out, n_in, n_tok) in &cases {
        let x = upload_f32(b, &rng.vec(n_tok * n_in))?;
        let mut y = b.alloc(n_tok * n_out * 4, BufferKind::Device)?;
        for dtype in WEIGHT_DTYPES {
            let bytes = weight_bytes(&mut rng, dtype, n_out, n_in)?;
            let w = import_weight(b, &bytes, dtype, n_out, n_in)?;
            let wt = TensorRef::<B>::new(&w, 0, dtype, Shape::d2(n_out, n_in));
            let xt = TensorRef::<B>::new(&x, 0, DType::F32, Shape::d2(n_tok, n_in));
            let timing = measure(budget, || {
                ops::matmul(
                    b,
                    wt,
                    xt,
                    TensorMut::new(&mut y, 0, DType::F32, Shape::d2(n_tok, n_out)),
                )?;
                b.synchronize()
            })?;
            done(KernelResult {
                op: "matmul",
                shape: format!("{n_out}x{n_in}"),
                tokens: n_tok,
                dtype: Some(dtype),
                ctx: None,
                timing,
                bytes: wt.nbytes() as f64,
                flops: 2.0 * (n_out * n_in * n_tok) as f64,
            });
            if n_tok != 1 {
                continue;
            }
            // The same matvec over copies filling STREAM_BYTES, visited in turn.
            drop(w);
            let copies = STREAM_BYTES.div_ceil(bytes.len()).max(2);
            let ws = (0..copies)
                .map(|_| import_weight(b, &bytes, dtype, n_out, n_in))
                .collect::<Result<Vec<_>>>()?;
            let mut i = 0usize;
            let timing = measure(budget, || {
                let w = &ws[i % copies];
                i += 1;
                ops::matmul(
                    b,
                    TensorRef::new(w, 0, dtype, Shape::d2(n_out, n_in)),
                    xt,
                    TensorMut::new(&mut y, 0, DType::F32, Shape::d2(n_tok, n_out)),
                )?;
                b.synchronize()
            })?;
            done(KernelResult {
                op: "matmul_stream",
                shape: format!("{n_out}x{n_in}"),
                tokens: n_tok,
                dtype: Some(dtype),
                ctx: None,
                timing,
                bytes: bytes.len() as f64,
                flops: 2.0 * (n_out * n_in) as f64,
            });
        }
    }

    // --- rms_norm over one hidden row -------------------------------------------------
    {
        let x = upload_f32(b, &rng.vec(HIDDEN))?;
        let w = upload_f32(b, &rng.vec(HIDDEN))?;
        let mut out = b.alloc(HIDDEN * 4, BufferKind::Device)?;
        let timing = measure(budget, || {
            ops::rms_norm(
                b,
                TensorRef::new(&x, 0, DType::F32, Shape::d2(1, HIDDEN)),
                TensorRef::new(&w, 0, DType::F32, Shape::d1(HIDDEN)),
                1e-5,
                TensorMut::new(&mut out, 0, DType::F32, Shape::d2(1, HIDDEN)),
            )?;
            b.synchronize()
        })?;
        done(elementwise("rms_norm", format!("1x{HIDDEN}"), timing, 3 * HIDDEN));
    }

    // --- rope on one token's query heads ----------------------------------------------
    {
        let mut q = upload_f32(b, &rng.vec(N_HEAD * HEAD_DIM))?;
        let f = upload_f32(b, &antigravity_core::rope::base_inv_freq(100_000.0, HEAD_DIM))?;
        let timing = measure(budget, || {
            ops::rope(
                b,
                TensorMut::new(&mut q, 0, DType::F32, Shape::d3(1, N_HEAD, HEAD_DIM)),
                TensorRef::new(&f, 0, DType::F32, Shape::d1(HEAD_DIM / 2)),
                100,
                RopeStyle::Adjacent,
            )?;
            b.synchronize()
        })?;
        done(elementwise(
            "rope",
            format!("1x{N_HEAD}x{HEAD_DIM}"),
            timing,
            2 * N_HEAD * HEAD_DIM,
        ));
    }

    // --- swiglu over one FFN row ----------------------------------------------------------
    {
        let g = upload_f32(b, &rng.vec(FFN))?;
        let u = upload_f32(b, &rng.vec(FFN))?;
        let mut out = b.alloc(FFN * 4, BufferKind::Device)?;
        let timing = measure(budget, || {
            ops::swiglu(
                b,
                TensorRef::new(&g, 0, DType::F32, Shape::d2(1, FFN)),
                TensorRef::new(&u, 0, DType::F32, Shape::d2(1, FFN)),
                TensorMut::new(&mut out, 0, DType::F32, Shape::d2(1, FFN)),
            )?;
            b.synchronize()
        })?;
        done(elementwise("swiglu", format!("1x{FFN}"), timing, 3 * FFN));
    }

    // --- attention: one decode query against a filled cache, for every cache dtype the
    // backend reads (`--kv-type`); a row's bytes are the K and V slots it reads, and its
    // shape names the cache's bytes per token per layer --------------------------------
    for kv_dt in b.capabilities().kv_dtypes.iter().copied() {
        let row_bytes = kv_dt
            .row_bytes(N_KV_HEAD * HEAD_DIM)
            .ok_or_else(|| Error::msg(format!("cache {kv_dt}: {N_KV_HEAD}x{HEAD_DIM} is not whole blocks")))?;
        for ctx in ATTN_CTX {
            let kv = ctx * N_KV_HEAD * HEAD_DIM;
            let q = upload_f32(b, &rng.vec(N_HEAD * HEAD_DIM))?;
            let k = upload_cache(b, kv_dt, &rng.vec(kv))?;
            let v = upload_cache(b, kv_dt, &rng.vec(kv))?;
            let mut out = b.alloc(N_HEAD * HEAD_DIM * 4, BufferKind::Device)?;
            let p = AttnParams {
                n_head: N_HEAD,
                n_kv_head: N_KV_HEAD,
                head_dim: HEAD_DIM,
                scale: 1.0 / (HEAD_DIM as f32).sqrt(),
                n_past: ctx - 1,
            };
            let timing = measure(budget, || {
                let kv_shape = Shape::d3(ctx, N_KV_HEAD, HEAD_DIM);
                ops::attention(
                    b,
                    TensorRef::new(&q, 0, DType::F32, Shape::d3(1, N_HEAD, HEAD_DIM)),
                    TensorRef::new(&k, 0, kv_dt, kv_shape),
                    TensorRef::new(&v, 0, kv_dt, kv_shape),
                    p,
                    TensorMut::new(&mut out, 0, DType::F32, Shape::d3(1, N_HEAD, HEAD_DIM)),
                )?;
                b.synchronize()
            })?;
            done(KernelResult {
                op: "attention",
                shape: format!(
                    "1x{N_HEAD}x{HEAD_DIM} kv {N_KV_HEAD} cache {kv_dt} ({} B/token/layer)",
                    2 * row_bytes
                ),
                tokens: 1,
                dtype: None,
                ctx: Some(ctx),
                timing,
                bytes: (2 * ctx * row_bytes) as f64,
                // QKᵀ and PV: two multiply-adds per (head, position, element).
                flops: 4.0 * (N_HEAD * HEAD_DIM * ctx) as f64,
            });
        }
    }
    Ok(())
}

fn elementwise(op: &'static str, shape: String, timing: Timing, f32s_moved: usize) -> KernelResult {
    KernelResult {
        op,
        shape,
        tokens: 1,
        dtype: None,
        ctx: None,
        timing,
        bytes: (f32s_moved * 4) as f64,
        flops: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use antigravity_core::cpu::CpuBackend;

    #[test]
    fn every_case_runs_on_the_cpu_backend_and_reports_sane_figures() {
        let mut b = CpuBackend::with_isa(antigravity_core::cpu::Isa::Scalar).unwrap();
        let tiny = Budget {
            warmup: std::time::Duration::ZERO,
            measure: std::time::Duration::ZERO,
            min_reps: 1,
            max_reps: 1,
        };
        let mut got = Vec::new();
        run(&mut b, tiny, &mut |r| got.push(r)).unwrap();
        assert_eq!(got.len(), case_count(b.capabilities().kv_dtypes.len()));
        // An attention row per cache dtype and context, each naming its bytes per token.
        for (dt, per_tok) in [
            ("f32", 2 * 3 * 64 * 4),
            ("f16", 2 * 3 * 64 * 2),
            ("q8_0", 2 * 3 * 2 * 34),
        ] {
            let rows: Vec<_> = got
                .iter()
                .filter(|r| r.op == "attention" && r.shape.contains(&format!("cache {dt} ")))
                .collect();
            assert_eq!(rows.len(), ATTN_CTX.len(), "{dt}");
            for r in rows {
                assert!(r.shape.contains(&format!("({per_tok} B/token/layer)")), "{}", r.shape);
                assert_eq!(r.bytes, (r.ctx.unwrap() * per_tok) as f64, "{}", r.shape);
            }
        }
        for r in &got {
            assert!(r.timing.secs() > 0.0 && r.bytes > 0.0, "{r:?}");
            assert!(r.gb_s().is_finite());
        }
        let q4 = got
            .iter()
            .find(|r| r.op == "matmul" && r.shape == "576x576" && r.dtype == Some(DType::Q4_0))
            .unwrap();
        assert_eq!(q4.bytes, (576 * 18 * 18) as f64);
    }

    #[test]
    fn rng_is_seeded_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.f32();
            assert_eq!(x, b.f32());
            assert!((-1.0..1.0).contains(&x));
        }
    }
}
