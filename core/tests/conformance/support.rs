//! What every conformance check shares: the backends under test, deterministic inputs,
//! tensors placed at nonzero offsets on any backend, and the comparison with its limit.
//!
//! Backends: the scalar CPU is the reference; every CPU ISA this machine has
//! ([`cpu_targets`]) and every OpenCL device present ([`opencl_targets`]) is compared
//! with it. A missing ISA prints a `note:`, a missing OpenCL device a `SKIP:` with the
//! reason (a failure instead when `ANTIGRAVITY_OPENCL_REQUIRED=1`, for runs on a GPU
//! machine where a skip would hide a broken driver setup).
#![allow(dead_code)] // (each test binary uses its part)

use std::sync::Arc;

use antigravity_core::backend::{HostRegion, Reservation};
use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::{Backend, BufferKind, DType, Shape, TensorMut, TensorRef};

/// The weight dtypes every backend takes for `matmul` and `get_rows` — the one list.
pub const WEIGHT_DTYPES: [DType; 6] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
];
/// The types of a llama.cpp `Q4_K_M` / `Q5_K_M` file besides Q8_0 (Q4_K_M on SmolLM2:
/// Q5_0, Q4_K, Q6_K, Q8_0): rows must be multiples of 256 for the K-quants, so their
/// table rows have their own shapes (`KQ_*` in conformance.rs).
pub const KQ_DTYPES: [DType; 5] = [DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K];
/// The quantized ones (the CPU quantizes activations to Q8 for them).
pub const QUANT_DTYPES: [DType; 3] = [DType::Q4_0, DType::Q4_1, DType::Q8_0];
/// The float ones (both sides widen to f32).
pub const FLOAT_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

// --- limits ---------------------------------------------------------------------------

/// How a result is compared with what it should be.
#[derive(Clone, Copy, Debug)]
pub enum Metric {
    /// Normalized MSE `Σ(a−b)² / Σb²` (ggml's `test-backend-ops` measure) at most `value`.
    Nmse,
    /// Largest `|a − b|` at most `value`.
    MaxAbs,
    /// Bit-identical (NaN equal to NaN).
    Exact,
}

/// A limit and the reason it is what it is.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    pub metric: Metric,
    pub value: f64,
    pub why: &'static str,
}

pub const fn nmse(value: f64, why: &'static str) -> Limit {
    Limit {
        metric: Metric::Nmse,
        value,
        why,
    }
}
pub const fn max_abs(value: f64, why: &'static str) -> Limit {
    Limit {
        metric: Metric::MaxAbs,
        value,
        why,
    }
}
pub const fn exact(why: &'static str) -> Limit {
    Limit {
        metric: Metric::Exact,
        value: 0.0,
        why,
    }
}

/// Compares `got` with `want` under `lim`; prints one line of the table
/// (`--nocapture` shows it) and panics, naming the case and the limit's reason, when
/// the limit is passed.
pub fn check(target: &str, op: &str, case: &str, got: &[f32], want: &[f64], lim: &Limit) {
    assert_eq!(got.len(), want.len(), "{target} {op} {case}: output length");
    let (measured, ok) = match lim.metric {
        Metric::Exact => {
            let bad = got
                .iter()
                .zip(want)
                .position(|(&a, &b)| !(a as f64 == b || (a.is_nan() && b.is_nan())));
            if let Some(i) = bad {
                panic!(
                    "{target} {op} {case}: element {i} is {} where {} is expected (exact: {})",
                    got[i], want[i], lim.why
                );
            }
            (0.0, true)
        }
        Metric::Nmse => {
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for (&a, &b) in got.iter().zip(want) {
                assert!(a.is_finite(), "{target} {op} {case}: non-finite output {a}");
                num += (a as f64 - b).powi(2);
                den += b * b;
            }
            let e = if den == 0.0 { num } else { num / den };
            (e, e <= lim.value)
        }
        Metric::MaxAbs => {
            let e = got
                .iter()
                .zip(want)
                .map(|(&a, &b)| (a as f64 - b).abs())
                .fold(0.0, f64::max);
            (e, e <= lim.value)
        }
    };
    let m = match lim.metric {
        Metric::Nmse => "nmse",
        Metric::MaxAbs => "max|Δ|",
        Metric::Exact => "exact",
    };
    eprintln!(
        "{target:<16} {op:<22} {case:<40} {m} {measured:.3e} (limit {:.0e})",
        lim.value
    );
    assert!(
        ok,
        "{target} {op} {case}: {m} {measured:e} exceeds {:e} ({})",
        lim.value, lim.why
    );
}

/// `v` widened to f64 (a backend's output as the reference of another).
pub fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

// --- inputs ---------------------------------------------------------------------------

/// Deterministic pseudo-random f32s, roughly N(0, scale²) (sum of 4 uniforms).
pub fn randn(n: usize, seed: u64, scale: f32) -> Vec<f32> {
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

/// A weight matrix `[rows, cols]` of `dtype` as a model file holds it: the bytes (at
/// `pad` bytes into their region, like a GGUF tensor) and the values the backends see,
/// dequantized to f32.
pub struct HostWeight {
    pub dtype: DType,
    pub shape: Shape,
    /// `pad` bytes, then the tensor.
    pub bytes: Arc<Vec<u8>>,
    pub pad: usize,
    pub deq: Vec<f32>,
}

/// Quantizes `randn(rows·cols, seed, scale)` to `dtype` (2 bytes in for block types, 32
/// for float ones, so views sit at nonzero, minimally aligned offsets).
pub fn host_weight(dtype: DType, rows: usize, cols: usize, seed: u64, scale: f32) -> HostWeight {
    let pad = if dtype.is_quantized() { 2 } else { 32 };
    host_weight_at(dtype, rows, cols, seed, scale, pad)
}

/// [`host_weight`] at `pad` bytes into the region (32: a 16-byte aligned view, which
/// `block.cl`'s int8 Q4_K/Q5_K arms read with 16-byte loads; 2: their 2-byte fallback).
pub fn host_weight_at(dtype: DType, rows: usize, cols: usize, seed: u64, scale: f32, pad: usize) -> HostWeight {
    let rb = dtype.row_bytes(cols).unwrap();
    let vals = randn(rows * cols, seed, scale);
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
    HostWeight {
        dtype,
        shape: Shape::d2(rows, cols),
        bytes: Arc::new(bytes),
        pad,
        deq,
    }
}

/// How a weight enters a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Import {
    /// `import_host` of the padded region, viewed at `pad`: the bytes in place.
    Host,
    /// `import_weight` of a region holding exactly the tensor, as the model loaders do:
    /// the CPU's SIMD tables repack Q4_0/Q4_1/Q8_0 into the x8 layout, an OpenCL device
    /// with the image path on adds Q4_0 image planes.
    Loader,
}

/// A weight on a backend: the buffer and the view's byte offset.
pub struct DevWeight<B: Backend> {
    pub buf: B::Buffer,
    pub offset: usize,
    pub dtype: DType,
    pub shape: Shape,
}

impl<B: Backend> DevWeight<B> {
    pub fn r(&self) -> TensorRef<'_, B> {
        TensorRef::new(&self.buf, self.offset, self.dtype, self.shape)
    }
}

impl HostWeight {
    pub fn import<B: Backend>(&self, b: &B, how: Import) -> DevWeight<B> {
        let region = HostRegion::new(self.bytes.clone());
        let (buf, offset) = match how {
            Import::Host => (b.import_host(region).unwrap(), self.pad),
            Import::Loader => {
                let exact = region.slice(self.pad, self.bytes.len() - self.pad).unwrap();
                (b.import_weight(exact, self.dtype, self.shape).unwrap(), 0)
            }
        };
        DevWeight {
            buf,
            offset,
            dtype: self.dtype,
            shape: self.shape,
        }
    }
}

/// Leading f32s in front of every activation: views at a nonzero offset.
pub const PAD_F32: usize = 3;

/// An f32 activation on a backend, `pad` floats (`PAD_F32` unless made with
/// [`Act::new_at`]) into its `Device` buffer.
pub struct Act<B: Backend> {
    pub buf: B::Buffer,
    pub shape: Shape,
    /// Bytes in front of the values.
    pub off: usize,
}

impl<B: Backend> Act<B> {
    pub fn new(b: &B, v: &[f32], shape: Shape) -> Act<B> {
        Act::new_at(b, v, shape, PAD_F32)
    }
    /// `pad` floats into its buffer: 4 puts the values at a 16-byte boundary (what a
    /// kernel's vector reads want), `PAD_F32` off one.
    pub fn new_at(b: &B, v: &[f32], shape: Shape, pad: usize) -> Act<B> {
        assert_eq!(v.len(), shape.numel());
        let mut bytes = vec![0u8; pad * 4];
        bytes.extend_from_slice(bytemuck::cast_slice(v));
        let mut buf = b.alloc(bytes.len(), BufferKind::Device).unwrap();
        b.upload(&mut buf, 0, &bytes).unwrap();
        Act {
            buf,
            shape,
            off: pad * 4,
        }
    }
    /// Zeros.
    pub fn zeros(b: &B, shape: Shape) -> Act<B> {
        Act::new(b, &vec![0.0; shape.numel()], shape)
    }
    pub fn r(&self) -> TensorRef<'_, B> {
        TensorRef::new(&self.buf, self.off, DType::F32, self.shape)
    }
    pub fn m(&mut self) -> TensorMut<'_, B> {
        TensorMut::new(&mut self.buf, self.off, DType::F32, self.shape)
    }
    pub fn read(&self, b: &B) -> Vec<f32> {
        self.try_read(b).unwrap()
    }
    /// [`Act::read`], an error passed on (a device reports a failed kernel at the read).
    pub fn try_read(&self, b: &B) -> antigravity_core::Result<Vec<f32>> {
        let mut v = vec![0f32; self.shape.numel()];
        b.download(&self.buf, self.off, bytemuck::cast_slice_mut(&mut v))?;
        Ok(v)
    }
}

// --- backends -------------------------------------------------------------------------

/// The sizes every backend under test reserves op scratch for (the largest any check
/// uses: the 49152-wide logits row, 128 tokens, 4096 positions, 32 heads).
pub const RESERVATION: Reservation = Reservation {
    max_tokens: 128,
    max_row: 49152,
    max_ctx: 4096,
    n_head: 32,
};

/// The reference: the scalar CPU backend.
pub fn scalar_cpu() -> CpuBackend {
    let mut c = CpuBackend::with_isa(Isa::Scalar).expect("the scalar ISA always exists");
    c.reserve(RESERVATION).unwrap();
    c
}

/// Every CPU ISA this machine (and build) has, the scalar one included, named
/// `cpu/<isa>`; a `note:` for each one it lacks.
pub fn cpu_targets() -> Vec<(String, CpuBackend)> {
    let mut v = Vec::new();
    for isa in Isa::ALL {
        match CpuBackend::with_isa(isa) {
            Some(mut b) => {
                b.reserve(RESERVATION).unwrap();
                v.push((format!("cpu/{}", isa.name()), b));
            }
            None => eprintln!(
                "note: ISA {} not available on this CPU/build; not tested here",
                isa.name()
            ),
        }
    }
    v
}

/// Reports a skip (or fails, when a device is required).
pub fn skip(reason: &str) {
    if std::env::var("ANTIGRAVITY_OPENCL_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("ANTIGRAVITY_OPENCL_REQUIRED=1 but {reason}");
    }
    eprintln!("SKIP: {reason}");
}

#[cfg(feature = "opencl")]
pub use cl::*;

#[cfg(feature = "opencl")]
mod cl {
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use antigravity_core::opencl::{list_devices, OpenClBackend, OpenClOptions};
    use antigravity_core::Backend;

    use super::{skip, RESERVATION};

    /// Options for device `platform:device`: the environment's settings (tuning
    /// variables apply), that device, and the tiled prefill kernels from 16 tokens on
    /// every device (PoCL's default would never pick them).
    pub fn cl_options(platform: usize, device: usize) -> OpenClOptions {
        let mut o = OpenClOptions::from_env();
        o.platform = Some(platform);
        o.device = Some(device);
        o.name_filter = None;
        o.log = true;
        o.mm_min_tokens = Some(16);
        o
    }

    /// `(platform, device, name)` of every device to test — all of them, or those
    /// `ANTIGRAVITY_OPENCL_DEVICE` picks — after a printed `SKIP:` when there is none.
    pub fn cl_devices() -> Vec<(usize, usize, String)> {
        find_devices().unwrap_or_else(|reason| {
            skip(&reason);
            Vec::new()
        })
    }

    /// [`cl_devices`], the reason for none as an error.
    fn find_devices() -> Result<Vec<(usize, usize, String)>, String> {
        let all = list_devices().map_err(|e| format!("OpenCL device discovery failed: {e}"))?;
        let env = OpenClOptions::from_env();
        let picked: Vec<_> = all
            .into_iter()
            .filter(|d| {
                env.platform.is_none_or(|p| p == d.platform_index)
                    && env.device.is_none_or(|i| i == d.device_index)
                    && env.name_filter.as_ref().is_none_or(|f| {
                        let f = f.to_lowercase();
                        d.name.to_lowercase().contains(&f) || d.platform.to_lowercase().contains(&f)
                    })
            })
            .map(|d| (d.platform_index, d.device_index, d.name))
            .collect();
        if picked.is_empty() {
            return Err(
                "no OpenCL device present (or none matches ANTIGRAVITY_OPENCL_DEVICE): OpenCL rows not run".into(),
            );
        }
        Ok(picked)
    }

    type Shared = Result<Vec<(String, Result<Mutex<OpenClBackend>, String>)>, String>;

    /// One backend per device (building the kernels takes seconds on PoCL), shared by
    /// the tests of this binary; each named `opencl[p:d]`. None, after a printed `SKIP:`
    /// (every call: each test says so), without a device. Prefill matmuls run
    /// `mul_mm`'s f32 tiles here on every device (the int8 ones: [`opencl_mmq_targets`]).
    pub fn opencl_targets() -> Vec<(String, MutexGuard<'static, OpenClBackend>)> {
        static CL: OnceLock<Shared> = OnceLock::new();
        shared_targets(&CL, false, None)
    }

    /// [`opencl_targets`] with the int8 prefill matmuls forced on (`mm_int8`:
    /// mul_mm_q8_1.cl — `mma.sync` on NVIDIA unless `ANTIGRAVITY_OPENCL_MM_MMA=0`, the
    /// portable `dp4a` elsewhere) on 64 × 32 tiles, named `opencl[p:d]+mmq`; built on first use.
    pub fn opencl_mmq_targets() -> Vec<(String, MutexGuard<'static, OpenClBackend>)> {
        static CL: OnceLock<Shared> = OnceLock::new();
        shared_targets(&CL, true, Some(false))
    }

    /// [`opencl_mmq_targets`] on the wide tiles (`mm_wide`: 128 × 64, the `mma` ownership of
    /// 2 × 4 fragments a warp — by `mma.sync` on NVIDIA, by `dp4a` elsewhere), named
    /// `opencl[p:d]+mmqw`, with the repacked Q4_0 rows on (`block_repack`); built on first
    /// use. (Both int8 sets record their kernels: profiling is on.)
    pub fn opencl_mmq_wide_targets() -> Vec<(String, MutexGuard<'static, OpenClBackend>)> {
        static CL: OnceLock<Shared> = OnceLock::new();
        shared_targets(&CL, true, Some(true))
    }

    fn shared_targets(
        cell: &'static OnceLock<Shared>,
        mm_int8: bool,
        mm_wide: Option<bool>,
    ) -> Vec<(String, MutexGuard<'static, OpenClBackend>)> {
        let shared = cell.get_or_init(|| {
            Ok(find_devices()?
                .into_iter()
                .map(|(p, d, name)| {
                    let mut o = cl_options(p, d);
                    o.mm_int8 = Some(mm_int8);
                    o.mm_wide = mm_wide;
                    // The kernels that ran are recorded: the repacked rows' check asks
                    // which (it runs where `block_repack` is on — by default on discrete
                    // NVIDIA GPUs; forced on for the wide set, so PoCL runs it too).
                    o.profiling = mm_int8;
                    if mm_wide == Some(true) {
                        o.block_repack = Some(true);
                    }
                    let b = OpenClBackend::new(o).and_then(|mut b| {
                        b.reserve(RESERVATION)?;
                        Ok(b)
                    });
                    let suffix = match (mm_int8, mm_wide) {
                        (false, _) => "",
                        (true, Some(true)) => "+mmqw",
                        (true, _) => "+mmq",
                    };
                    (
                        format!("opencl[{p}:{d}]{suffix}"),
                        b.map(Mutex::new).map_err(|e| format!("{name}: {e}")),
                    )
                })
                .collect())
        });
        let shared = match shared {
            Ok(s) => s,
            Err(reason) => {
                skip(reason);
                return Vec::new();
            }
        };
        let mut v = Vec::new();
        for (name, b) in shared {
            match b {
                Ok(m) => v.push((name.clone(), m.lock().unwrap_or_else(|e| e.into_inner()))),
                Err(e) => panic!("{name} is present but its backend does not start: {e}"),
            }
        }
        v
    }
}
