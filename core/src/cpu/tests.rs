//! Every SIMD table against the scalar twins, for each ISA this CPU supports.
//!
//! * Activation quantizers: byte-for-byte equal.
//! * Quantized dot products: the integer block sums are exact in every kernel, so the only
//!   difference is the order of the f32 combination. Bound: with `mag = Σ_blocks
//!   |d_x d_y| Σ_j |q_x q_y| (+ |m s|)` (which bounds every partial sum any lane order
//!   forms), recursive summation of `N` terms errs by at most `γ_N · mag` with
//!   `γ_N ≈ N·ε/2`; we allow `(nb + 64) · ε · mag` (N ≤ nb·16 lane partials are summed
//!   in trees of depth ≤ nb + log 16, plus one rounding per product), and `1e-30` for
//!   all-zero inputs.
//! * Float dot products: same argument with `mag = Σ |x_i y_i|` and `(n + 64) · ε`.

use half::{bf16, f16};
use proptest::prelude::*;

use super::{Isa, Kernels};
use crate::quant::{self, dot, BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};

/// The SIMD tables this CPU can run (scalar excluded); says which ones are skipped.
fn simd_tables() -> Vec<Kernels> {
    Isa::ALL
        .into_iter()
        .filter(|&i| i != Isa::Scalar)
        .filter_map(|i| {
            let k = Kernels::for_isa(i);
            if k.is_none() {
                eprintln!("skip {}: not supported by this CPU/build", i.name());
            }
            k
        })
        .collect()
}

fn close(got: f32, want: f32, tol: f32) -> bool {
    (got - want).abs() <= tol || (got.is_nan() && want.is_nan()) || got == want
}

/// Activation values: ordinary, large, tiny, zero, and runs of equal values.
fn act_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => -10.0f32..10.0,
        1 => -1e30f32..1e30,
        1 => -1e-30f32..1e-30,
        1 => Just(0.0f32),
        1 => prop::sample::select(vec![1.0f32, -1.0, 65504.0, -65504.0, 1e7, -3e38, 3e38, 0.49999997, 2.5, -2.5]),
    ]
}

/// Blocks of 32 activations, some blocks all-equal or all-zero, some exactly on
/// rounding ties (amax = 127 makes `id = 1`, so `k + 0.5` is a tie).
fn act_row() -> impl Strategy<Value = Vec<f32>> {
    let block = prop_oneof![
        4 => prop::collection::vec(act_value(), 32),
        1 => act_value().prop_map(|v| vec![v; 32]),
        1 => prop::collection::vec((-126i32..126, any::<bool>()), 31).prop_map(|v| {
            let mut b: Vec<f32> = v.into_iter().map(|(k, h)| k as f32 + if h { 0.5 } else { 0.0 }).collect();
            b.push(-127.0);
            b
        }),
    ];
    prop::collection::vec(block, 1..40).prop_map(|bs| bs.concat())
}

/// An f16 scale: finite, varied magnitude and sign.
fn scale() -> impl Strategy<Value = f16> {
    prop_oneof![
        8 => (-4.0f32..4.0).prop_map(f16::from_f32),
        1 => Just(f16::ZERO),
        1 => (-60000.0f32..60000.0).prop_map(f16::from_f32),
        1 => (-1e-6f32..1e-6).prop_map(f16::from_f32),
    ]
}

fn q4_0_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ4_0>> {
    prop::collection::vec((scale(), any::<[u8; 16]>()), n)
        .prop_map(|v| v.into_iter().map(|(d, qs)| BlockQ4_0 { d, qs }).collect())
}
fn q4_1_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ4_1>> {
    prop::collection::vec((scale(), scale(), any::<[u8; 16]>()), n)
        .prop_map(|v| v.into_iter().map(|(d, m, qs)| BlockQ4_1 { d, m, qs }).collect())
}
fn q8_0_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ8_0>> {
    prop::collection::vec((scale(), any::<[i8; 32]>()), n)
        .prop_map(|v| v.into_iter().map(|(d, qs)| BlockQ8_0 { d, qs }).collect())
}
fn q8_1_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ8_1>> {
    prop::collection::vec((scale(), scale(), any::<[i8; 32]>()), n)
        .prop_map(|v| v.into_iter().map(|(d, s, qs)| BlockQ8_1 { d, s, qs }).collect())
}

/// Returns `v[off..]` of a copy with `off` extra leading elements, so kernels see slices
/// that do not start where the allocator put them.
fn shifted<T: Clone>(v: &[T], off: usize, pad: T) -> Vec<T> {
    let mut w = vec![pad; off];
    w.extend_from_slice(v);
    w
}

fn eps() -> f32 {
    f32::EPSILON
}

fn tol_blocks(nb: usize, mag: f32) -> f32 {
    (nb as f32 + 64.0) * eps() * mag + 1e-30
}

fn mag_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(a, b)| {
            let s: i32 = (0..16)
                .map(|j| {
                    ((a.qs[j] & 15) as i32 - 8).abs() * (b.qs[j] as i32).abs()
                        + ((a.qs[j] >> 4) as i32 - 8).abs() * (b.qs[j + 16] as i32).abs()
                })
                .sum();
            (a.d.to_f32() * b.d.to_f32()).abs() * s as f32
        })
        .sum()
}
fn mag_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(a, b)| {
            let s: i32 = (0..16)
                .map(|j| {
                    (a.qs[j] & 15) as i32 * (b.qs[j] as i32).abs() + (a.qs[j] >> 4) as i32 * (b.qs[j + 16] as i32).abs()
                })
                .sum();
            (a.d.to_f32() * b.d.to_f32()).abs() * s as f32 + (a.m.to_f32() * b.s.to_f32()).abs()
        })
        .sum()
}
fn mag_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(a, b)| {
            let s: i32 = (0..32).map(|j| (a.qs[j] as i32 * b.qs[j] as i32).abs()).sum();
            (a.d.to_f32() * b.d.to_f32()).abs() * s as f32
        })
        .sum()
}

fn float_vals(n: std::ops::Range<usize>) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        prop_oneof![8 => -2.0f32..2.0, 1 => -1e15f32..1e15, 1 => Just(0.0f32), 1 => -1e-20f32..1e-20],
        n,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn quantize_q8_0_bit_exact(x in act_row(), off in 0usize..2) {
        let xs = shifted(&x, off, 0.0);
        let x = &xs[off..];
        let nb = x.len() / 32;
        let mut want = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; nb];
        quant::quantize_row_q8_0(x, &mut want);
        for k in simd_tables() {
            let mut got = shifted(&want, 1, BlockQ8_0 { d: f16::ONE, qs: [7; 32] });
            (k.quantize_row_q8_0)(x, &mut got[1..]);
            let (g, w): (&[u8], &[u8]) = (bytemuck::cast_slice(&got[1..]), bytemuck::cast_slice(&want));
            prop_assert!(g == w, "{}: q8_0 differs", k.isa.name());
        }
    }

    #[test]
    fn quantize_q8_k_bit_exact(x in act_row(), off in 0usize..2) {
        let xs = shifted(&x, off, 0.0);
        let x = &xs[off..];
        let x = &x[..x.len() / 256 * 256];
        let nb = x.len() / 256;
        let zero = crate::quant::BlockQ8_K { d: 0.0, qs: [0; 256], bsums: [0; 16] };
        let mut want = vec![zero; nb];
        crate::quant::k::quantize_row_q8_k(x, &mut want);
        for k in simd_tables() {
            let mut got = vec![crate::quant::BlockQ8_K { d: 1.0, qs: [7; 256], bsums: [3; 16] }; nb];
            (k.quantize_row_q8_k)(x, &mut got);
            let (g, w): (&[u8], &[u8]) = (bytemuck::cast_slice(&got), bytemuck::cast_slice(&want));
            prop_assert!(g == w, "{}: q8_k differs", k.isa.name());
        }
    }

    #[test]
    fn quantize_q8_1_bit_exact(x in act_row(), off in 0usize..2) {
        let xs = shifted(&x, off, 0.0);
        let x = &xs[off..];
        let nb = x.len() / 32;
        let mut want = vec![BlockQ8_1 { d: f16::ZERO, s: f16::ZERO, qs: [0; 32] }; nb];
        quant::quantize_row_q8_1(x, &mut want);
        for k in simd_tables() {
            let mut got = vec![BlockQ8_1 { d: f16::ONE, s: f16::ONE, qs: [7; 32] }; nb];
            (k.quantize_row_q8_1)(x, &mut got);
            let (g, w): (&[u8], &[u8]) = (bytemuck::cast_slice(&got), bytemuck::cast_slice(&want));
            prop_assert!(g == w, "{}: q8_1 differs", k.isa.name());
        }
    }

    #[test]
    fn dot_q4_0_q8_0((x, y) in (1usize..70).prop_flat_map(|n| (q4_0_blocks(n), q8_0_blocks(n))), off in 0usize..2) {
        let ys = shifted(&y, off, y[0]);
        let y = &ys[off..];
        let want = dot::vec_dot_q4_0_q8_0(&x, y);
        let tol = tol_blocks(x.len(), mag_q4_0(&x, y));
        for k in simd_tables() {
            let got = (k.vec_dot_q4_0_q8_0)(&x, y);
            prop_assert!(close(got, want, tol), "{}: {got} vs {want} (tol {tol})", k.isa.name());
        }
    }

    #[test]
    fn dot_q4_1_q8_1((x, y) in (1usize..70).prop_flat_map(|n| (q4_1_blocks(n), q8_1_blocks(n))), off in 0usize..2) {
        let xs = shifted(&x, off, x[0]);
        let x = &xs[off..];
        let want = dot::vec_dot_q4_1_q8_1(x, &y);
        let tol = tol_blocks(x.len(), mag_q4_1(x, &y));
        for k in simd_tables() {
            let got = (k.vec_dot_q4_1_q8_1)(x, &y);
            prop_assert!(close(got, want, tol), "{}: {got} vs {want} (tol {tol})", k.isa.name());
        }
    }

    #[test]
    fn dot_q8_0_q8_0((x, y) in (1usize..70).prop_flat_map(|n| (q8_0_blocks(n), q8_0_blocks(n))), off in 0usize..2) {
        let xs = shifted(&x, off, x[0]);
        let x = &xs[off..];
        let want = dot::vec_dot_q8_0_q8_0(x, &y);
        let tol = tol_blocks(x.len(), mag_q8_0(x, &y));
        for k in simd_tables() {
            let got = (k.vec_dot_q8_0_q8_0)(x, &y);
            prop_assert!(close(got, want, tol), "{}: {got} vs {want} (tol {tol})", k.isa.name());
        }
    }

    #[test]
    fn dot_f32((x, y) in (0usize..300).prop_flat_map(|n| (float_vals(n..n + 1), float_vals(n..n + 1))), off in 0usize..2) {
        let xs = shifted(&x, off, 0.0);
        let x = &xs[off..];
        let want = dot::vec_dot_f32(x, &y);
        let mag: f32 = x.iter().zip(&y).map(|(a, b)| (a * b).abs()).sum();
        let tol = (x.len() as f32 + 64.0) * eps() * mag + 1e-30;
        for k in simd_tables() {
            let got = (k.vec_dot_f32)(x, &y);
            prop_assert!(close(got, want, tol), "{}: {got} vs {want} (tol {tol})", k.isa.name());
        }
    }

    #[test]
    fn dot_f16_f32((x, y) in (0usize..300).prop_flat_map(|n| (float_vals(n..n + 1), float_vals(n..n + 1))), off in 0usize..2) {
        // f32 → f16 saturates large values to ±inf; keep weights finite (clamp to f16 max).
        let x: Vec<f16> = x.iter().map(|&v| f16::from_f32(v.clamp(-65504.0, 65504.0))).collect();
        let xs = shifted(&x, off, f16::ZERO);
        let x = &xs[off..];
        let want = dot::vec_dot_f16_f32(x, &y);
        let mag: f32 = x.iter().zip(&y).map(|(a, b)| (a.to_f32() * b).abs()).sum();
        let tol = (x.len() as f32 + 64.0) * eps() * mag + 1e-30;
        for k in simd_tables() {
            let got = (k.vec_dot_f16_f32)(x, &y);
            prop_assert!(close(got, want, tol), "{}: {got} vs {want} (tol {tol})", k.isa.name());
        }
    }

    #[test]
    fn dot_bf16_f32((x, y) in (0usize..300).prop_flat_map(|n| (float_vals(n..n + 1), float_vals(n..n + 1))), off in 0usize..2) {
        let x: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let xs = shifted(&x, off, bf16::ZERO);
        let x = &xs[off..];
        let want = dot::vec_dot_bf16_f32(x, &y);
        let mag: f32 = x.iter().zip(&y).map(|(a, b)| (a.to_f32() * b).abs()).sum();
        let tol = (x.len() as f32 + 64.0) * eps() * mag + 1e-30;
        for k in simd_tables() {
            let got = (k.vec_dot_bf16_f32)(x, &y);
            prop_assert!(close(got, want, tol), "{}: {got} vs {want} (tol {tol})", k.isa.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Multi-row kernels against the scalar row loop: every row within its own
    /// single-dot bound (same integer sums, same scale products; only the f32
    /// accumulation order differs). Row counts 1..=9 cover the 4-row body and tails.
    #[test]
    fn gemv_every_type(
        (w0, w1, w8, x0, x1) in (1usize..24, 1usize..10).prop_flat_map(|(nb, rows)| {
            (q4_0_blocks(rows * nb), q4_1_blocks(rows * nb), q8_0_blocks(rows * nb), q8_0_blocks(nb), q8_1_blocks(nb))
        })
    ) {
        let nb = x0.len();
        let rows = w0.len() / nb;
        for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
            let mut g = vec![f32::NAN; rows];
            (k.gemv_q4_0_q8_0)(&w0, &x0, &mut g);
            for r in 0..rows {
                let wr = &w0[r * nb..(r + 1) * nb];
                let want = dot::vec_dot_q4_0_q8_0(wr, &x0);
                let tol = tol_blocks(nb, mag_q4_0(wr, &x0));
                prop_assert!(close(g[r], want, tol), "{} q4_0 row {r}: {} vs {want}", k.isa.name(), g[r]);
            }
            (k.gemv_q4_1_q8_1)(&w1, &x1, &mut g);
            for r in 0..rows {
                let wr = &w1[r * nb..(r + 1) * nb];
                let want = dot::vec_dot_q4_1_q8_1(wr, &x1);
                let tol = tol_blocks(nb, mag_q4_1(wr, &x1));
                prop_assert!(close(g[r], want, tol), "{} q4_1 row {r}: {} vs {want}", k.isa.name(), g[r]);
            }
            (k.gemv_q8_0_q8_0)(&w8, &x0, &mut g);
            for r in 0..rows {
                let wr = &w8[r * nb..(r + 1) * nb];
                let want = dot::vec_dot_q8_0_q8_0(wr, &x0);
                let tol = tol_blocks(nb, mag_q8_0(wr, &x0));
                prop_assert!(close(g[r], want, tol), "{} q8_0 row {r}: {} vs {want}", k.isa.name(), g[r]);
            }
        }
    }
}

proptest! {
    /// Every table's `gemm_*` against the scalar dot per (row, token), within the
    /// single-dot bound (same integer sums, same scale products; only the f32
    /// accumulation order differs). Rows and tokens 1..=9 cover the 4 × 4 / 4 × 2 tile
    /// bodies and both tails; `rows = 0` or `toks = 0` would be an empty output.
    #[test]
    fn gemm_every_type(
        (w0, x0, nb) in (1usize..24, 1usize..10, 1usize..10).prop_flat_map(|(nb, rows, toks)| {
            (q4_0_blocks(rows * nb), q8_0_blocks(toks * nb), Just(nb))
        })
    ) {
        let (rows, toks) = (w0.len() / nb, x0.len() / nb);
        for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
            let mut g = vec![f32::NAN; rows * toks];
            (k.gemm_q4_0_q8_0)(&w0, &x0, nb, &mut g);
            for t in 0..toks {
                let xt = &x0[t * nb..(t + 1) * nb];
                for r in 0..rows {
                    let wr = &w0[r * nb..(r + 1) * nb];
                    let want = dot::vec_dot_q4_0_q8_0(wr, xt);
                    let tol = tol_blocks(nb, mag_q4_0(wr, xt));
                    let got = g[t * rows + r];
                    prop_assert!(close(got, want, tol), "{} q4_0 row {r} tok {t}: {got} vs {want}", k.isa.name());
                }
            }
        }
    }
}

proptest! {
    /// The tiled f16 / bf16 GEMMs (and the bf16 · bf16 and f16 · f16 decode dots) against an f64 sum
    /// of the same widened products per (row, token), within f32 accumulation error (`n · ε · Σ|w·x|`). Lengths 1..70
    /// cover the eight-wide body and the element tail; rows and tokens 1..10 the tile
    /// bodies and the row and token tails of every tile shape.
    #[test]
    fn gemm_half_every_table(
        (w, x, n) in (1usize..70, 1usize..10, 1usize..10).prop_flat_map(|(n, rows, toks)| {
            let half_vals = prop::collection::vec(
                prop_oneof![8 => -2.0f32..2.0, 1 => Just(0.0f32), 1 => -60000.0f32..60000.0],
                rows * n,
            );
            (half_vals, float_vals(toks * n..toks * n + 1), Just(n))
        })
    ) {
        let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let wb: Vec<bf16> = w.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut ran = 0;
        for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
            let name = k.isa.name();
            ran += usize::from(check_half(name, "f16", k.gemm_f16_f32, &wh, &x, n)?);
            ran += usize::from(check_half(name, "bf16", k.gemm_bf16_f32, &wb, &x, n)?);
            if let Some(gemm) = k.gemm_bf16_bf16 {
                // The activations rounded to bf16 first (as `matmul` does): the reference
                // is the f64 sum of the same products, so only the summation differs.
                let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
                let xr: Vec<f32> = xb.iter().map(|v| v.to_f32()).collect();
                let run = |w: &[bf16], _: &[f32], n: usize, y: &mut [f32]| gemm(w, &xb, n, y);
                check_half(name, "bf16 x bf16", Some(run), &wb, &xr, n)?;
                // Decode's per-row dot over the same rounded activations.
                if let Some(dot) = k.vec_dot_bf16_bf16 {
                    check_half(name, "bf16 x bf16 dot", Some(row_dots(dot, &xb)), &wb, &xr, n)?;
                }
            }
            if let Some(act) = k.f16_act {
                // F16 decode: each token's row rounded to f16 (bit for bit `f16::from_f32`,
                // overflow reported), then the f16 · f16 dot over the rounded values.
                let mut xh = vec![f16::ZERO; x.len()];
                let mut fits = true;
                for (xt, ht) in x.chunks_exact(n).zip(xh.chunks_exact_mut(n)) {
                    let ok = (act.round)(xt, ht);
                    prop_assert_eq!(ok, xt.iter().all(|v| v.abs() < 65520.0), "{} f16 round: overflow flag", name);
                    fits &= ok;
                    for (h, &v) in ht.iter().zip(xt) {
                        prop_assert_eq!(h.to_bits(), f16::from_f32(v).to_bits(), "{} f16 round of {}", name, v);
                    }
                }
                if fits {
                    let xr: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
                    check_half(name, "f16 x f16 dot", Some(row_dots(act.dot, &xh)), &wh, &xr, n)?;
                }
            }
        }
        // Every SIMD table has the tiled kernels (AVX2, AVX-512, NEON), so on any CPU
        // with one this test checked something.
        let simd = Isa::ALL.into_iter().filter(|&i| i != Isa::Scalar).filter_map(Kernels::for_isa).count();
        prop_assert!(ran >= 2 * simd, "{ran} runs for {simd} SIMD tables");
    }
}

/// A decode dot run as a GEMM for `check_half`: `y[t · rows + r] = dot(w row r, x row t)`
/// over the already rounded activation rows `x` (the f32 argument is unused).
fn row_dots<'a, H>(dot: fn(&[H], &[H]) -> f32, x: &'a [H]) -> impl Fn(&[H], &[f32], usize, &mut [f32]) + 'a {
    move |w, _, n, y| {
        let rows = w.len() / n;
        for (t, xt) in x.chunks_exact(n).enumerate() {
            for r in 0..rows {
                y[t * rows + r] = dot(&w[r * n..(r + 1) * n], xt);
            }
        }
    }
}

/// One table's tiled half GEMM (if it has one) against f64 sums of the widened
/// products; `Ok(false)` when the table has none.
fn check_half<W: Copy + Into<f32>>(
    isa: &str,
    name: &str,
    gemm: Option<impl Fn(&[W], &[f32], usize, &mut [f32])>,
    w: &[W],
    x: &[f32],
    n: usize,
) -> Result<bool, TestCaseError> {
    let Some(gemm) = gemm else { return Ok(false) };
    let (rows, toks) = (w.len() / n, x.len() / n);
    let mut g = vec![f32::NAN; rows * toks];
    gemm(w, x, n, &mut g);
    for t in 0..toks {
        for r in 0..rows {
            let pairs = (0..n).map(|i| f64::from(w[r * n + i].into()) * f64::from(x[t * n + i]));
            let want: f64 = pairs.clone().sum();
            let mag: f64 = pairs.map(f64::abs).sum();
            let tol = n as f64 * f64::from(f32::EPSILON) * mag + 1e-30;
            let got = f64::from(g[t * rows + r]);
            prop_assert!(
                (got - want).abs() <= tol,
                "{isa} {name} row {r} tok {t}: {got} vs {want} (tol {tol})"
            );
        }
    }
    Ok(true)
}

/// `gemm_*` with `nb = 0` writes zeros (as the scalar twin), and extreme blocks (all
/// nibbles 0 or 15, activations ±127 and −128) keep exact integer sums.
#[test]
fn gemm_edges() {
    for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
        let mut y = [f32::NAN; 3];
        (k.gemm_q4_0_q8_0)(&[], &[], 0, &mut y);
        assert_eq!(y, [0.0; 3], "{}", k.isa.name());
        let nb = 3;
        let w: Vec<BlockQ4_0> = (0..5 * nb)
            .map(|i| BlockQ4_0 {
                d: f16::from_f32(1.0),
                qs: [if i % 2 == 0 { 0x00 } else { 0xff }; 16],
            })
            .collect();
        let x: Vec<BlockQ8_0> = (0..6 * nb)
            .map(|i| BlockQ8_0 {
                d: f16::from_f32(1.0),
                qs: [[-128, 127, -127][i % 3]; 32],
            })
            .collect();
        let mut g = vec![f32::NAN; 5 * 6];
        (k.gemm_q4_0_q8_0)(&w, &x, nb, &mut g);
        for t in 0..6 {
            for r in 0..5 {
                let want = dot::vec_dot_q4_0_q8_0(&w[r * nb..(r + 1) * nb], &x[t * nb..(t + 1) * nb]);
                // Small integers times 1.0: every partial sum is exact in f32.
                assert_eq!(g[t * 5 + r], want, "{} row {r} tok {t}", k.isa.name());
            }
        }
    }
}

/// Hand-picked quantizer inputs: ties, the classic 0.49999997, f16-overflowing scales,
/// subnormal scales (1/d overflows: scalar fallback), infinities and NaN (fallback).
#[test]
fn quantize_extremes_bit_exact() {
    let mut rows: Vec<Vec<f32>> = vec![
        (0..32).map(|i| i as f32 - 15.5).collect(),
        (0..32).map(|i| if i == 0 { 127.0 } else { (i as f32) + 0.5 }).collect(),
        vec![0.49999997; 32],
        vec![0.0; 32],
        vec![-0.0; 32],
        (0..32).map(|i| 1e10 * (i as f32 - 16.0)).collect(),
        (0..32).map(|i| 1e-40 * i as f32).collect(),
        (0..32).map(f32::from_bits).collect(),
        (0..32).map(|i| if i == 3 { f32::INFINITY } else { i as f32 }).collect(),
        (0..32).map(|i| if i == 7 { f32::NAN } else { i as f32 }).collect(),
        (0..32).map(|i| if i % 2 == 0 { f32::MAX } else { -f32::MAX }).collect(),
    ];
    rows.push(rows.concat());
    // Each row eight times over: a Q8_K block (256) of it, ties of ±max included.
    for i in 0..11 {
        rows.push(rows[i].repeat(8));
    }
    rows.push([vec![-2.0f32], vec![2.0; 254], vec![-2.0]].concat());
    for x in &rows {
        let nb = x.len() / 32;
        let mut w0 = vec![
            BlockQ8_0 {
                d: f16::ZERO,
                qs: [0; 32]
            };
            nb
        ];
        let mut w1 = vec![
            BlockQ8_1 {
                d: f16::ZERO,
                s: f16::ZERO,
                qs: [0; 32]
            };
            nb
        ];
        quant::quantize_row_q8_0(x, &mut w0);
        quant::quantize_row_q8_1(x, &mut w1);
        // Q8_K over whole 256-element blocks of the row (the concatenated one has one).
        let nk = x.len() / 256;
        let mut wk = vec![
            crate::quant::BlockQ8_K {
                d: 0.0,
                qs: [0; 256],
                bsums: [0; 16]
            };
            nk
        ];
        crate::quant::k::quantize_row_q8_k(&x[..256 * nk], &mut wk);
        for k in simd_tables() {
            let mut gk = vec![
                crate::quant::BlockQ8_K {
                    d: 9.0,
                    qs: [9; 256],
                    bsums: [9; 16]
                };
                nk
            ];
            (k.quantize_row_q8_k)(&x[..256 * nk], &mut gk);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&gk),
                bytemuck::cast_slice::<_, u8>(&wk),
                "{} q8_k {x:?}",
                k.isa.name()
            );
            let mut g0 = w0.clone();
            g0.iter_mut().for_each(|b| b.qs = [9; 32]);
            let mut g1 = w1.clone();
            g1.iter_mut().for_each(|b| b.qs = [9; 32]);
            (k.quantize_row_q8_0)(x, &mut g0);
            (k.quantize_row_q8_1)(x, &mut g1);
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&g0),
                bytemuck::cast_slice::<_, u8>(&w0),
                "{} q8_0 {x:?}",
                k.isa.name()
            );
            assert_eq!(
                bytemuck::cast_slice::<_, u8>(&g1),
                bytemuck::cast_slice::<_, u8>(&w1),
                "{} q8_1 {x:?}",
                k.isa.name()
            );
        }
    }
}

/// −128 everywhere (the byte the sign trick of ggml's AVX kernels gets wrong): our
/// integer sums are exact for it.
#[test]
fn dot_extreme_bytes() {
    let n = 5;
    let x0 = vec![
        BlockQ4_0 {
            d: f16::ONE,
            qs: [0x00; 16]
        };
        n
    ];
    let x1 = vec![
        BlockQ4_1 {
            d: f16::ONE,
            m: f16::ONE,
            qs: [0xff; 16]
        };
        n
    ];
    let x8 = vec![
        BlockQ8_0 {
            d: f16::ONE,
            qs: [-128; 32]
        };
        n
    ];
    let y8 = vec![
        BlockQ8_0 {
            d: f16::ONE,
            qs: [-128; 32]
        };
        n
    ];
    let y81 = vec![
        BlockQ8_1 {
            d: f16::ONE,
            s: f16::ONE,
            qs: [-128; 32]
        };
        n
    ];
    for k in simd_tables() {
        assert_eq!(
            (k.vec_dot_q4_0_q8_0)(&x0, &y8),
            dot::vec_dot_q4_0_q8_0(&x0, &y8),
            "{}",
            k.isa.name()
        );
        assert_eq!(
            (k.vec_dot_q4_1_q8_1)(&x1, &y81),
            dot::vec_dot_q4_1_q8_1(&x1, &y81),
            "{}",
            k.isa.name()
        );
        assert_eq!(
            (k.vec_dot_q8_0_q8_0)(&x8, &y8),
            dot::vec_dot_q8_0_q8_0(&x8, &y8),
            "{}",
            k.isa.name()
        );
    }
}

#[test]
fn detect_picks_a_supported_table() {
    let k = Kernels::detect();
    assert!(Kernels::for_isa(k.isa).is_some());
    eprintln!("detected ISA: {}", k.isa.name());
}

mod backend {
    //! `CpuBackend::matmul` and `attention` for every weight dtype, ISA and thread count
    //! against the scalar single-threaded backend.
    //!
    //! Tolerance: activation quantization is bit-exact across ISAs and the integer block
    //! sums are exact, so outputs differ only by f32 reassociation inside one dot
    //! product: `(n_in/32 + 64) · ε · Σ_i |w_i| (|x_i| + max|x|/127)` bounds it (the
    //! second term covers quantized activations, |x̂_i| ≤ |x_i| + d/2). Thread count
    //! changes only who computes an output, never how: threads 1 and 2 of one ISA must be
    //! identical.

    use crate::backend::{AttnParams, Backend, BufferKind, Reservation};
    use crate::cpu::{CpuBackend, CpuBuffer, Isa};
    use crate::dtype::DType;
    use crate::ops;
    use crate::tensor::{Shape, TensorMut, TensorRef};

    struct Lcg(u64);
    impl Lcg {
        fn f(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.f()).collect()
        }
    }

    fn buf(b: &CpuBackend, bytes: &[u8]) -> CpuBuffer {
        let mut x = b.alloc(bytes.len(), BufferKind::Shared).unwrap();
        b.upload(&mut x, 0, bytes).unwrap();
        x
    }

    fn run_matmul(
        b: &mut CpuBackend,
        dtype: DType,
        w: &[u8],
        x: &[f32],
        n_out: usize,
        n_in: usize,
        n_tok: usize,
    ) -> Vec<f32> {
        // Imported as the loaders do, before `reserve`: what a weight type needs besides
        // the Q8 rows (the bf16 / f16 activation rows of the half decode dots) is sized
        // only once such a matrix was imported.
        let wb = b
            .import_weight(
                crate::backend::HostRegion::new(std::sync::Arc::new(w.to_vec())),
                dtype,
                Shape::d2(n_out, n_in),
            )
            .unwrap();
        b.reserve(Reservation {
            max_tokens: n_tok,
            max_row: n_in,
            max_ctx: 1,
            n_head: 1,
        })
        .unwrap();
        let xb = buf(b, bytemuck::cast_slice(x));
        let mut yb = b.alloc(n_tok * n_out * 4, BufferKind::Shared).unwrap();
        ops::matmul(
            b,
            TensorRef::new(&wb, 0, dtype, Shape::d2(n_out, n_in)),
            TensorRef::new(&xb, 0, DType::F32, Shape::d2(n_tok, n_in)),
            TensorMut::new(&mut yb, 0, DType::F32, Shape::d2(n_tok, n_out)),
        )
        .unwrap();
        let mut y = vec![0f32; n_tok * n_out];
        b.download(&yb, 0, bytemuck::cast_slice_mut(&mut y)).unwrap();
        y
    }

    /// Weights imported as the loaders do (`import_weight`: the x8 layout where the table
    /// has SIMD kernels for the type) give the plain layout's `get_rows` bit for bit and
    /// its `matmul` within the reassociation bound, for every x8 type and SIMD table.
    #[test]
    fn repacked_weights_match_the_file_layout() {
        use crate::backend::HostRegion;
        let mut rng = Lcg(11);
        let x8_types: Vec<DType> = DType::ALL
            .into_iter()
            .filter(|&t| crate::cpu::repack::has_x8(t))
            .collect();
        assert_eq!(x8_types.len(), 8, "the x8 types: {x8_types:?}");
        // 27, 37 and 70 tokens: the token-lane K-quant kernels where the table has them
        // (64-token tiles in sixteen-token groups, partial groups), the x8 ones for a
        // tile of fewer than 8 (70 = 64 + 6).
        for (dtype, n_tok) in x8_types
            .into_iter()
            .flat_map(|t| [(t, 5usize), (t, 27), (t, 37), (t, 70)])
        {
            let (n_out, n_in) = (24, 512);
            let mut w = vec![0u8; dtype.row_bytes(n_out * n_in).unwrap()];
            if matches!(dtype, DType::Q4_K | DType::Q5_K | DType::Q6_K) {
                // Random bytes with f16 scales of ~0.01 (every bit pattern is a block).
                let mut st = 1u64;
                for v in w.iter_mut() {
                    st = st.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    *v = (st >> 33) as u8;
                }
                let bb = dtype.block_bytes();
                let at = if dtype != DType::Q6_K {
                    [0usize, 2]
                } else {
                    [bb - 2, bb - 2]
                };
                for blk in w.chunks_exact_mut(bb) {
                    for &o in &at {
                        blk[o..o + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
                    }
                }
            } else {
                crate::quant::quantize_row(dtype, &rng.vec(n_out * n_in), &mut w).unwrap();
            }
            let x = rng.vec(n_tok * n_in);
            let ids = [0u32, 23, 7, 8, 15];
            for isa in Isa::ALL {
                let Some(mut b) = CpuBackend::with_threads(isa, 2) else {
                    continue;
                };
                b.set_repack(true);
                b.reserve(Reservation {
                    max_tokens: n_tok,
                    max_row: n_in,
                    max_ctx: 1,
                    n_head: 1,
                })
                .unwrap();
                let packed = b
                    .import_weight(
                        HostRegion::new(std::sync::Arc::new(w.clone())),
                        dtype,
                        Shape::d2(n_out, n_in),
                    )
                    .unwrap();
                // Again: some scratch is sized only once a matrix of its type is imported.
                b.reserve(Reservation {
                    max_tokens: n_tok,
                    max_row: n_in,
                    max_ctx: 1,
                    n_head: 1,
                })
                .unwrap();
                assert_eq!(
                    packed.is_repacked(),
                    b.kernels().x8_simd_for(dtype),
                    "{} {dtype:?}: repacked exactly where the table has x8 kernels",
                    isa.name()
                );
                let plain = buf(&b, &w);
                let rows = |b: &mut CpuBackend, wb: &CpuBuffer| {
                    let mut o = b.alloc(ids.len() * n_in * 4, BufferKind::Shared).unwrap();
                    ops::get_rows(
                        b,
                        TensorRef::new(wb, 0, dtype, Shape::d2(n_out, n_in)),
                        &ids,
                        TensorMut::new(&mut o, 0, DType::F32, Shape::d2(ids.len(), n_in)),
                    )
                    .unwrap();
                    let mut v = vec![0f32; ids.len() * n_in];
                    b.download(&o, 0, bytemuck::cast_slice_mut(&mut v)).unwrap();
                    v
                };
                let (rp, rf) = (rows(&mut b, &packed), rows(&mut b, &plain));
                assert!(
                    rp.iter().zip(&rf).all(|(a, c)| a.to_bits() == c.to_bits()),
                    "{} {dtype:?}: get_rows of the x8 layout",
                    isa.name()
                );
                let mm = |b: &mut CpuBackend, wb: &CpuBuffer| {
                    let xb = buf(b, bytemuck::cast_slice(&x));
                    let mut yb = b.alloc(n_tok * n_out * 4, BufferKind::Shared).unwrap();
                    ops::matmul(
                        b,
                        TensorRef::new(wb, 0, dtype, Shape::d2(n_out, n_in)),
                        TensorRef::new(&xb, 0, DType::F32, Shape::d2(n_tok, n_in)),
                        TensorMut::new(&mut yb, 0, DType::F32, Shape::d2(n_tok, n_out)),
                    )
                    .unwrap();
                    let mut y = vec![0f32; n_tok * n_out];
                    b.download(&yb, 0, bytemuck::cast_slice_mut(&mut y)).unwrap();
                    y
                };
                let (yp, yf) = (mm(&mut b, &packed), mm(&mut b, &plain));
                // Both paths quantize the activations alike (Q4_0/Q5_0's Q8_0 and the x8
                // path's Q8_1 share d and qs), so only the f32 order of one dot differs.
                let scale = yf.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
                for (i, (a, c)) in yp.iter().zip(&yf).enumerate() {
                    assert!(
                        (a - c).abs() <= 2e-4 * scale,
                        "{} {dtype:?} y[{i}]: x8 {a} vs plain {c}",
                        isa.name()
                    );
                }
            }
        }
    }

    #[test]
    fn matmul_every_dtype_isa_and_thread_count() {
        let mut rng = Lcg(7);
        for &(n_out, n_in, n_tok) in &[(37, 64, 1), (70, 96, 3), (129, 160, 17), (16, 32, 2)] {
            let wf = rng.vec(n_out * n_in);
            let x: Vec<f32> = rng.vec(n_tok * n_in).iter().map(|v| v * 3.0).collect();
            let xmax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for dtype in [
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::Q4_0,
                DType::Q4_1,
                DType::Q8_0,
            ] {
                let mut w = vec![0u8; dtype.row_bytes(n_in).unwrap() * n_out];
                let rb = dtype.row_bytes(n_in).unwrap();
                for (o, row) in w.chunks_exact_mut(rb).enumerate() {
                    crate::quant::quantize_row(dtype, &wf[o * n_in..][..n_in], row).unwrap();
                }
                let mut wd = vec![0f32; n_out * n_in];
                for (o, row) in w.chunks_exact(rb).enumerate() {
                    crate::quant::dequantize_row(dtype, row, &mut wd[o * n_in..][..n_in]).unwrap();
                }
                let mut s = CpuBackend::with_threads(Isa::Scalar, 1).unwrap();
                let want = run_matmul(&mut s, dtype, &w, &x, n_out, n_in, n_tok);
                for isa in Isa::ALL {
                    let mut per_thread = Vec::new();
                    for threads in [1, 2] {
                        let Some(mut b) = CpuBackend::with_threads(isa, threads) else {
                            eprintln!("skip {}: not supported here", isa.name());
                            continue;
                        };
                        let got = run_matmul(&mut b, dtype, &w, &x, n_out, n_in, n_tok);
                        for t in 0..n_tok {
                            for o in 0..n_out {
                                let mag: f32 = (0..n_in)
                                    .map(|i| wd[o * n_in + i].abs() * (x[t * n_in + i].abs() + xmax / 127.0))
                                    .sum();
                                let mut tol = ((n_in / 32) as f32 + 64.0) * f32::EPSILON * mag + 1e-30;
                                // Half weights may meet activations rounded to their
                                // type (`Kernels::f16_act` in decode, the bf16 GEMM and
                                // dot): the unit roundoff, 2⁻¹¹ or 2⁻⁸, of each |w·x|.
                                let u = match dtype {
                                    DType::F16 if n_tok == 1 => 1.0 / 2048.0,
                                    DType::BF16 => 1.0 / 256.0,
                                    _ => 0.0,
                                };
                                let wx: f32 = (0..n_in).map(|i| (wd[o * n_in + i] * x[t * n_in + i]).abs()).sum();
                                tol += u * wx;
                                let (g, e) = (got[t * n_out + o], want[t * n_out + o]);
                                assert!(
                                    (g - e).abs() <= tol,
                                    "{dtype:?} {} threads {threads} [{t},{o}] of {n_out}x{n_in}x{n_tok}: {g} vs {e} (tol {tol})",
                                    isa.name()
                                );
                            }
                        }
                        per_thread.push(got);
                    }
                    if per_thread.len() == 2 {
                        assert_eq!(
                            per_thread[0],
                            per_thread[1],
                            "{dtype:?} {}: threads change results",
                            isa.name()
                        );
                    }
                }
            }
        }
    }

    /// Q5_0, Q5_1, Q4_K, Q5_K, Q6_K through `ops::matmul` on every ISA and 1–2 threads:
    /// each output equals the scalar dot of the weight row with the activation row
    /// quantized by the scalar quantizer (Q8_0 / Q8_1 / Q8_K), bit for bit (the SIMD
    /// entries are bit-identical to their twins, so this also checks the plumbing:
    /// block counts, scratch, row offsets, tiling).
    #[test]
    fn matmul_q5_and_k_quants_match_scalar_dots() {
        use crate::quant::{self, dot, k};
        use half::f16;
        let mut rng = Lcg(29);
        for &(n_out, n_in, n_tok) in &[(37, 256, 1), (70, 512, 3), (9, 768, 17)] {
            let x: Vec<f32> = rng.vec(n_tok * n_in).iter().map(|v| v * 3.0).collect();
            let wf = rng.vec(n_out * n_in);
            // Random bytes for the K-quants (no quantizer here), with f16 scales ~0.01.
            let mut bytes_k = |dt: DType| {
                let mut w: Vec<u8> = (0..dt.row_bytes(n_in).unwrap() * n_out)
                    .map(|_| (rng.f() * 127.0 + 128.0) as u8)
                    .collect();
                let bb = dt.block_bytes();
                for b in w.chunks_exact_mut(bb) {
                    let d = f16::from_f32(rng.f() * 0.01).to_le_bytes();
                    let m = f16::from_f32(rng.f() * 0.01).to_le_bytes();
                    match dt {
                        DType::Q6_K => b[bb - 2..].copy_from_slice(&d),
                        _ => {
                            b[..2].copy_from_slice(&d);
                            b[2..4].copy_from_slice(&m);
                        }
                    }
                }
                w
            };
            for dtype in [DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K] {
                let rb = dtype.row_bytes(n_in).unwrap();
                let w = match dtype {
                    DType::Q5_0 | DType::Q5_1 => {
                        let mut w = vec![0u8; rb * n_out];
                        for (o, row) in w.chunks_exact_mut(rb).enumerate() {
                            quant::quantize_row(dtype, &wf[o * n_in..][..n_in], row).unwrap();
                        }
                        w
                    }
                    _ => bytes_k(dtype),
                };
                let mut want = vec![0f32; n_tok * n_out];
                for t in 0..n_tok {
                    let xr = &x[t * n_in..][..n_in];
                    for o in 0..n_out {
                        let wr = &w[o * rb..][..rb];
                        want[t * n_out + o] = match dtype {
                            DType::Q5_0 => {
                                let mut a = vec![
                                    quant::BlockQ8_0 {
                                        d: f16::ZERO,
                                        qs: [0; 32]
                                    };
                                    n_in / 32
                                ];
                                quant::quantize_row_q8_0(xr, &mut a);
                                dot::vec_dot_q5_0_q8_0(bytemuck::cast_slice(wr), &a)
                            }
                            DType::Q5_1 => {
                                let mut a = vec![
                                    quant::BlockQ8_1 {
                                        d: f16::ZERO,
                                        s: f16::ZERO,
                                        qs: [0; 32]
                                    };
                                    n_in / 32
                                ];
                                quant::quantize_row_q8_1(xr, &mut a);
                                dot::vec_dot_q5_1_q8_1(bytemuck::cast_slice(wr), &a)
                            }
                            _ => {
                                let mut a = vec![
                                    quant::BlockQ8_K {
                                        d: 0.0,
                                        qs: [0; 256],
                                        bsums: [0; 16]
                                    };
                                    n_in / 256
                                ];
                                k::quantize_row_q8_k(xr, &mut a);
                                match dtype {
                                    DType::Q4_K => dot::vec_dot_q4_k_q8_k(bytemuck::cast_slice(wr), &a),
                                    DType::Q5_K => dot::vec_dot_q5_k_q8_k(bytemuck::cast_slice(wr), &a),
                                    _ => dot::vec_dot_q6_k_q8_k(bytemuck::cast_slice(wr), &a),
                                }
                            }
                        };
                    }
                }
                for isa in Isa::ALL {
                    for threads in [1, 2] {
                        let Some(mut b) = CpuBackend::with_threads(isa, threads) else {
                            continue;
                        };
                        let got = run_matmul(&mut b, dtype, &w, &x, n_out, n_in, n_tok);
                        assert!(
                            got.iter().zip(&want).all(|(g, e)| g.to_bits() == e.to_bits()),
                            "{dtype:?} {} threads {threads} {n_out}x{n_in}x{n_tok}: {:?} vs {:?}",
                            isa.name(),
                            &got[..4.min(got.len())],
                            &want[..4.min(want.len())]
                        );
                    }
                }
            }
        }
    }

    /// The row-wise ops split their rows over the pool in prefill (`par_rows`): every
    /// thread count, and one row (decode: the caller alone), gives the serial scalar
    /// functions' bits.
    #[test]
    fn row_ops_threads_match_serial() {
        use crate::backend::RopeStyle;
        use crate::cpu::scalar;
        let mut rng = Lcg(29);
        let (n_head, hd) = (3, 8);
        let n = n_head * hd;
        for rows in [1, 2, 5, 7] {
            let x = rng.vec(rows * n);
            let y = rng.vec(rows * n);
            let w = rng.vec(n);
            let freq: Vec<f32> = (0..hd / 2)
                .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32))
                .collect();
            let pos0 = 3;
            // The serial references, row by row.
            let mut norm = vec![0f32; rows * n];
            let mut silu = vec![0f32; rows * n];
            let mut roped = x.clone();
            let mut sum = x.clone();
            for r in 0..rows {
                let (a, z) = (r * n, (r + 1) * n);
                scalar::rms_norm(&x[a..z], &w, 1e-5, &mut norm[a..z]);
                scalar::swiglu(&x[a..z], &y[a..z], &mut silu[a..z]);
                for h in roped[a..z].chunks_exact_mut(hd) {
                    scalar::rope_head(h, &freq, (pos0 + r) as f32, RopeStyle::HalfSplit);
                }
                for (s, v) in sum[a..z].iter_mut().zip(&y[a..z]) {
                    *s += v;
                }
            }
            for threads in [1, 2, 3] {
                let mut b = CpuBackend::with_threads(Isa::Scalar, threads).unwrap();
                let (xb, yb, wb, fb) = (
                    buf(&b, bytemuck::cast_slice(&x)),
                    buf(&b, bytemuck::cast_slice(&y)),
                    buf(&b, bytemuck::cast_slice(&w)),
                    buf(&b, bytemuck::cast_slice(&freq)),
                );
                let shape = Shape::d2(rows, n);
                let read = |b: &CpuBackend, o: &CpuBuffer| {
                    let mut v = vec![0f32; rows * n];
                    b.download(o, 0, bytemuck::cast_slice_mut(&mut v)).unwrap();
                    v
                };
                let mut o = b.alloc(rows * n * 4, BufferKind::Shared).unwrap();
                ops::rms_norm(
                    &mut b,
                    TensorRef::new(&xb, 0, DType::F32, shape),
                    TensorRef::new(&wb, 0, DType::F32, Shape::d1(n)),
                    1e-5,
                    TensorMut::new(&mut o, 0, DType::F32, shape),
                )
                .unwrap();
                assert_eq!(read(&b, &o), norm, "rms_norm, {rows} rows, {threads} threads");
                ops::swiglu(
                    &mut b,
                    TensorRef::new(&xb, 0, DType::F32, shape),
                    TensorRef::new(&yb, 0, DType::F32, shape),
                    TensorMut::new(&mut o, 0, DType::F32, shape),
                )
                .unwrap();
                assert_eq!(read(&b, &o), silu, "swiglu, {rows} rows, {threads} threads");
                let mut r = buf(&b, bytemuck::cast_slice(&x));
                ops::rope(
                    &mut b,
                    TensorMut::new(&mut r, 0, DType::F32, Shape::d3(rows, n_head, hd)),
                    TensorRef::new(&fb, 0, DType::F32, Shape::d1(hd / 2)),
                    pos0,
                    RopeStyle::HalfSplit,
                )
                .unwrap();
                assert_eq!(read(&b, &r), roped, "rope, {rows} rows, {threads} threads");
                let mut d = buf(&b, bytemuck::cast_slice(&x));
                ops::add(
                    &mut b,
                    TensorMut::new(&mut d, 0, DType::F32, shape),
                    TensorRef::new(&yb, 0, DType::F32, shape),
                )
                .unwrap();
                assert_eq!(read(&b, &d), sum, "add, {rows} rows, {threads} threads");
            }
        }
    }

    #[test]
    fn attention_threads_match_serial() {
        let mut rng = Lcg(11);
        let (n_head, n_kv, hd, cap) = (6, 2, 16, 24);
        for (n_past, n_tok) in [(0, 5), (7, 1), (3, 9)] {
            let q = rng.vec(n_tok * n_head * hd);
            let k = rng.vec(cap * n_kv * hd);
            let v = rng.vec(cap * n_kv * hd);
            let p = AttnParams {
                n_head,
                n_kv_head: n_kv,
                head_dim: hd,
                scale: 0.25,
                n_past,
            };
            let mut outs = Vec::new();
            for threads in [1, 2, 3] {
                let mut b = CpuBackend::with_threads(Isa::Scalar, threads).unwrap();
                b.reserve(Reservation {
                    max_tokens: n_tok,
                    max_row: 32,
                    max_ctx: cap,
                    n_head,
                })
                .unwrap();
                let (qb, kb, vb) = (
                    buf(&b, bytemuck::cast_slice(&q)),
                    buf(&b, bytemuck::cast_slice(&k)),
                    buf(&b, bytemuck::cast_slice(&v)),
                );
                let mut ob = b.alloc(q.len() * 4, BufferKind::Shared).unwrap();
                ops::attention(
                    &mut b,
                    TensorRef::new(&qb, 0, DType::F32, Shape::d3(n_tok, n_head, hd)),
                    TensorRef::new(&kb, 0, DType::F32, Shape::d3(cap, n_kv, hd)),
                    TensorRef::new(&vb, 0, DType::F32, Shape::d3(cap, n_kv, hd)),
                    p,
                    TensorMut::new(&mut ob, 0, DType::F32, Shape::d3(n_tok, n_head, hd)),
                )
                .unwrap();
                let mut o = vec![0f32; q.len()];
                b.download(&ob, 0, bytemuck::cast_slice_mut(&mut o)).unwrap();
                outs.push(o);
            }
            let mut serial = vec![0f32; q.len()];
            let mut scores = vec![0f32; cap];
            crate::cpu::scalar::attention(
                &q,
                &k,
                &v,
                &mut serial,
                &mut scores,
                p,
                n_tok,
                crate::cpu::scalar::attn_scores,
                crate::cpu::scalar::attn_values,
            );
            for o in &outs {
                assert_eq!(o, &serial);
            }
        }
    }

    /// The grouped attention (one task per KV head and block of tokens; a decode step in
    /// slot blocks, cut into pieces over the threads) against the per-head reference
    /// built from the same table's kernels (`scalar::attend_one` with its per-head
    /// scores, values and softmax), on f32 and f16 caches, for GQA groups of 4, 3, 1 and
    /// 6. One thread, and any prefill: bit for bit. A decode step over ≥ 512 slots on 2
    /// and 3 threads merges 2–4 pieces: within `5e-7` (the outputs are convex
    /// combinations of values in [-1, 1], summed in other groupings: seen ≤ 8e-8; a
    /// merge weight off by 1e-4 moves them by ~3e-6 and fails).
    #[test]
    fn grouped_attention_matches_per_head_reference() {
        use crate::cpu::scalar::{attend_one, KvUnit};
        fn reference<T: KvUnit>(
            k: &crate::cpu::Kernels,
            (q, kc, vc): (&[f32], &[T], &[T]),
            p: AttnParams,
            n_tok: usize,
            scores: fn(&[f32], &[T], usize, f32, &mut [f32]),
            values: fn(&[f32], &[T], usize, &mut [f32]),
        ) -> Vec<f32> {
            let hd = p.head_dim;
            let mut out = vec![0f32; n_tok * p.n_head * hd];
            let mut sc = vec![0f32; p.n_past + n_tok];
            for t in 0..n_tok {
                for h in 0..p.n_head {
                    let oh = &mut out[(t * p.n_head + h) * hd..][..hd];
                    attend_one(q, kc, vc, p, t, h, &mut sc, oh, scores, values, k.softmax_f32);
                }
            }
            out
        }
        let mut rng = Lcg(41);
        for (n_head, n_kv, hd) in [(8, 2, 64), (9, 3, 64), (4, 4, 16), (12, 2, 24)] {
            for (n_past, n_tok) in [(0, 1), (20, 1), (700, 1), (1100, 1), (0, 13), (530, 6)] {
                let cap = n_past + n_tok;
                let q = rng.vec(n_tok * n_head * hd);
                let k = rng.vec(cap * n_kv * hd);
                let v = rng.vec(cap * n_kv * hd);
                let (k16, v16): (Vec<half::f16>, Vec<half::f16>) = (
                    k.iter().map(|&x| half::f16::from_f32(x)).collect(),
                    v.iter().map(|&x| half::f16::from_f32(x)).collect(),
                );
                let p = AttnParams {
                    n_head,
                    n_kv_head: n_kv,
                    head_dim: hd,
                    scale: 0.125,
                    n_past,
                };
                for isa in Isa::ALL.into_iter().filter(|&i| CpuBackend::with_isa(i).is_some()) {
                    let kern = *CpuBackend::with_isa(isa).unwrap().kernels();
                    for dtype in [DType::F32, DType::F16] {
                        let (want, kb, vb): (Vec<f32>, &[u8], &[u8]) = match dtype {
                            DType::F32 => (
                                reference(&kern, (&q, &k, &v), p, n_tok, kern.attn_scores, kern.attn_values),
                                bytemuck::cast_slice(&k),
                                bytemuck::cast_slice(&v),
                            ),
                            _ => (
                                reference(
                                    &kern,
                                    (&q, &k16, &v16),
                                    p,
                                    n_tok,
                                    kern.attn_scores_f16,
                                    kern.attn_values_f16,
                                ),
                                bytemuck::cast_slice(&k16),
                                bytemuck::cast_slice(&v16),
                            ),
                        };
                        for threads in [1, 2, 3] {
                            let mut b = CpuBackend::with_threads(isa, threads).unwrap();
                            b.reserve(Reservation {
                                max_tokens: n_tok,
                                max_row: 32,
                                max_ctx: cap,
                                n_head,
                            })
                            .unwrap();
                            let (qb, kbuf, vbuf) = (buf(&b, bytemuck::cast_slice(&q)), buf(&b, kb), buf(&b, vb));
                            let mut ob = b.alloc(q.len() * 4, BufferKind::Shared).unwrap();
                            ops::attention(
                                &mut b,
                                TensorRef::new(&qb, 0, DType::F32, Shape::d3(n_tok, n_head, hd)),
                                TensorRef::new(&kbuf, 0, dtype, Shape::d3(cap, n_kv, hd)),
                                TensorRef::new(&vbuf, 0, dtype, Shape::d3(cap, n_kv, hd)),
                                p,
                                TensorMut::new(&mut ob, 0, DType::F32, Shape::d3(n_tok, n_head, hd)),
                            )
                            .unwrap();
                            let mut got = vec![0f32; q.len()];
                            b.download(&ob, 0, bytemuck::cast_slice_mut(&mut got)).unwrap();
                            let merged = n_tok == 1 && threads > 1 && cap >= 512 && kern.attn_group_f32.is_some();
                            let what = format!(
                                "{} {dtype:?} heads {n_head}/{n_kv} hd {hd} n_past {n_past} n_tok {n_tok} threads {threads}",
                                isa.name()
                            );
                            if merged {
                                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                                assert!(worst <= 5e-7, "{what}: merged pieces off by {worst}");
                            } else {
                                assert!(
                                    got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                                    "{what}: not the per-head reference's bits"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The f16 cache path of every ISA: K/V projections written as f16 are the f32
    /// outputs rounded once; RoPE on f16 keys is the f32 rotation of the widened keys,
    /// rounded; attention over an f16 cache equals attention over the widened cache
    /// (exactly on the scalar table, within the attention proptest's bound elsewhere).
    #[test]
    fn f16_cache_ops_match_f32() {
        let mut rng = Lcg(29);
        let (n_out, n_in, n_tok) = (48, 64, 11);
        let w = rng.vec(n_out * n_in);
        let x = rng.vec(n_tok * n_in);
        for isa in Isa::ALL.into_iter().filter(|&i| CpuBackend::with_isa(i).is_some()) {
            let mut b = CpuBackend::with_threads(isa, 2).unwrap();
            // Matmul into f16, a few tokens per chunk (max_row 100 < n_tok · n_out).
            b.reserve(Reservation {
                max_tokens: n_tok,
                max_row: 100,
                max_ctx: 16,
                n_head: 4,
            })
            .unwrap();
            // (run_matmul reserves max_row 64; reserve only grows, so `row` stays 100.)
            let want = run_matmul(&mut b, DType::F32, bytemuck::cast_slice(&w), &x, n_out, n_in, n_tok);
            let (wb, xb) = (buf(&b, bytemuck::cast_slice(&w)), buf(&b, bytemuck::cast_slice(&x)));
            let mut yb = b.alloc(n_tok * n_out * 2, BufferKind::Shared).unwrap();
            ops::matmul(
                &mut b,
                TensorRef::new(&wb, 0, DType::F32, Shape::d2(n_out, n_in)),
                TensorRef::new(&xb, 0, DType::F32, Shape::d2(n_tok, n_in)),
                TensorMut::new(&mut yb, 0, DType::F16, Shape::d2(n_tok, n_out)),
            )
            .unwrap();
            let mut y16 = vec![half::f16::ZERO; n_tok * n_out];
            b.download(&yb, 0, bytemuck::cast_slice_mut(&mut y16)).unwrap();
            let rounded: Vec<half::f16> = want.iter().map(|&v| half::f16::from_f32(v)).collect();
            assert_eq!(y16, rounded, "{}: f16 matmul output", isa.name());

            // RoPE on f16 keys: [n_tok, 3 heads, 16].
            let (heads, hd) = (3, 16);
            let freqs: Vec<f32> = (0..hd / 2).map(|i| 1.0 / 100f32.powf(i as f32 / 8.0)).collect();
            let fb = buf(&b, bytemuck::cast_slice(&freqs));
            let k32: Vec<f32> = rng
                .vec(n_tok * heads * hd)
                .iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect();
            let k16: Vec<half::f16> = k32.iter().map(|&v| half::f16::from_f32(v)).collect();
            let mut kb32 = buf(&b, bytemuck::cast_slice(&k32));
            let mut kb16 = buf(&b, bytemuck::cast_slice(&k16));
            for (kb, dt) in [(&mut kb32, DType::F32), (&mut kb16, DType::F16)] {
                ops::rope(
                    &mut b,
                    TensorMut::new(kb, 0, dt, Shape::d3(n_tok, heads, hd)),
                    TensorRef::new(&fb, 0, DType::F32, Shape::d1(hd / 2)),
                    5,
                    crate::backend::RopeStyle::Adjacent,
                )
                .unwrap();
            }
            let mut r32 = vec![0f32; k32.len()];
            let mut r16 = vec![half::f16::ZERO; k16.len()];
            b.download(&kb32, 0, bytemuck::cast_slice_mut(&mut r32)).unwrap();
            b.download(&kb16, 0, bytemuck::cast_slice_mut(&mut r16)).unwrap();
            let want16: Vec<half::f16> = r32.iter().map(|&v| half::f16::from_f32(v)).collect();
            assert_eq!(r16, want16, "{}: f16 rope", isa.name());

            // Attention: 4 query heads over 2 KV heads, 7 cached + 3 new tokens.
            let (n_head, n_kv, cap, nt) = (4, 2, 16, 3);
            let p = AttnParams {
                n_head,
                n_kv_head: n_kv,
                head_dim: hd,
                scale: 0.25,
                n_past: 7,
            };
            let q = rng.vec(nt * n_head * hd);
            let kc: Vec<half::f16> = rng
                .vec(cap * n_kv * hd)
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect();
            let vc: Vec<half::f16> = rng
                .vec(cap * n_kv * hd)
                .iter()
                .map(|&v| half::f16::from_f32(v))
                .collect();
            let (k32, v32): (Vec<f32>, Vec<f32>) = (
                kc.iter().map(|h| h.to_f32()).collect(),
                vc.iter().map(|h| h.to_f32()).collect(),
            );
            let qb = buf(&b, bytemuck::cast_slice(&q));
            let mut outs = Vec::new();
            for (kb, vb, dt) in [
                (
                    buf(&b, bytemuck::cast_slice(&k32)),
                    buf(&b, bytemuck::cast_slice(&v32)),
                    DType::F32,
                ),
                (
                    buf(&b, bytemuck::cast_slice(&kc)),
                    buf(&b, bytemuck::cast_slice(&vc)),
                    DType::F16,
                ),
            ] {
                let mut ob = b.alloc(q.len() * 4, BufferKind::Shared).unwrap();
                ops::attention(
                    &mut b,
                    TensorRef::new(&qb, 0, DType::F32, Shape::d3(nt, n_head, hd)),
                    TensorRef::new(&kb, 0, dt, Shape::d3(cap, n_kv, hd)),
                    TensorRef::new(&vb, 0, dt, Shape::d3(cap, n_kv, hd)),
                    p,
                    TensorMut::new(&mut ob, 0, DType::F32, Shape::d3(nt, n_head, hd)),
                )
                .unwrap();
                let mut o = vec![0f32; q.len()];
                b.download(&ob, 0, bytemuck::cast_slice_mut(&mut o)).unwrap();
                outs.push(o);
            }
            for (i, (a, c)) in outs[0].iter().zip(&outs[1]).enumerate() {
                // Outputs are convex mixes of values in [-1, 1]: |err| ≲ (ctx + hd + 64) · ε.
                let tol = if isa == Isa::Scalar { 0.0 } else { 200.0 * f32::EPSILON };
                assert!(
                    (a - c).abs() <= tol,
                    "{}: attention [{i}] f32 {a} vs f16 {c}",
                    isa.name()
                );
            }
        }
    }
}

// --- row-interleaved (x8) layouts ----------------------------------------------------

mod x8 {
    //! The x8 kernels (`cpu::repack`) against the plain layout's scalar dots: the scalar
    //! x8 twins bit-identical (same integer sums, same float steps in the same order),
    //! every SIMD table within the single-dot bound above. Activations come from the Q8
    //! quantizer in the model, so |q| ≤ 127; the tests draw −127..=127 (the AVX2 Q8_0
    //! kernel's sign trick needs it), weights use every byte.

    use half::f16;
    use proptest::prelude::*;

    use super::{close, mag_q4_0, mag_q4_1, mag_q8_0, q4_0_blocks, q4_1_blocks, q8_0_blocks, scale, tol_blocks};
    use crate::cpu::repack::{self, BlockQ8Act};
    use crate::cpu::{Isa, Kernels};
    use crate::dtype::DType;
    use crate::quant::{dot, BlockQ8_1};

    fn act_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ8_1>> {
        prop::collection::vec((scale(), scale(), prop::collection::vec(-127i8..=127, 32)), n).prop_map(|v| {
            v.into_iter()
                .map(|(d, s, qs)| BlockQ8_1 {
                    d,
                    s,
                    qs: qs.try_into().unwrap(),
                })
                .collect()
        })
    }

    fn packed<T: bytemuck::Pod>(dtype: DType, w: &[T], rows: usize, cols: usize) -> Vec<u8> {
        let src: &[u8] = bytemuck::cast_slice(w);
        let mut dst = vec![0u8; src.len()];
        assert!(repack::repack(dtype, rows, cols, src, &mut dst));
        // Every block comes back out unchanged.
        let bb = dtype.block_bytes();
        let mut b1 = vec![0u8; bb];
        for r in 0..rows {
            for b in 0..cols / 32 {
                repack::extract_block(dtype, &dst, cols, r, b, &mut b1);
                assert_eq!(b1, src[(r * cols / 32 + b) * bb..][..bb], "{dtype:?} row {r} block {b}");
            }
        }
        dst
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn gemm_x8_every_type(
            (nb, w0, w1, w8, xa) in (1usize..20, 1usize..4, 1usize..10).prop_flat_map(|(nb, groups, toks)| {
                let rows = 8 * groups;
                (Just(nb), q4_0_blocks(rows * nb), q4_1_blocks(rows * nb), q8_0_blocks(rows * nb), act_blocks(toks * nb))
            }),
        ) {
            let (rows, toks, cols) = (w0.len() / nb, xa.len() / nb, nb * 32);
            let x: Vec<BlockQ8Act> = xa.iter().map(BlockQ8Act::from_q8_1).collect();
            let x0: Vec<_> = xa.iter().map(repack::q8_0_of).collect();
            let p0 = packed(DType::Q4_0, &w0, rows, cols);
            let p1 = packed(DType::Q4_1, &w1, rows, cols);
            let p8 = packed(DType::Q8_0, &w8, rows, cols);
            let tables = Isa::ALL.into_iter().filter_map(Kernels::for_isa);
            for k in tables {
                let mut g = vec![f32::NAN; rows * toks];
                let exact = !k.x8_simd; // the scalar twins
                (k.gemm_q4_0x8)(bytemuck::cast_slice(&p0), &x, nb, &mut g);
                for t in 0..toks {
                    for r in 0..rows {
                        let (wr, xt) = (&w0[r * nb..(r + 1) * nb], &x0[t * nb..(t + 1) * nb]);
                        let want = dot::vec_dot_q4_0_q8_0(wr, xt);
                        let got = g[t * rows + r];
                        if exact {
                            prop_assert!(got == want || (got.is_nan() && want.is_nan()), "{} q4_0x8 [{t},{r}]: {got} vs {want}", k.isa.name());
                        } else {
                            prop_assert!(close(got, want, tol_blocks(nb, mag_q4_0(wr, xt))), "{} q4_0x8 [{t},{r}]: {got} vs {want}", k.isa.name());
                        }
                    }
                }
                (k.gemm_q4_1x8)(bytemuck::cast_slice(&p1), &x, nb, &mut g);
                for t in 0..toks {
                    for r in 0..rows {
                        let (wr, xt) = (&w1[r * nb..(r + 1) * nb], &xa[t * nb..(t + 1) * nb]);
                        let want = dot::vec_dot_q4_1_q8_1(wr, xt);
                        let got = g[t * rows + r];
                        if exact {
                            prop_assert!(got == want || (got.is_nan() && want.is_nan()), "{} q4_1x8 [{t},{r}]: {got} vs {want}", k.isa.name());
                        } else {
                            prop_assert!(close(got, want, tol_blocks(nb, mag_q4_1(wr, xt))), "{} q4_1x8 [{t},{r}]: {got} vs {want}", k.isa.name());
                        }
                    }
                }
                (k.gemm_q8_0x8)(bytemuck::cast_slice(&p8), &x, nb, &mut g);
                for t in 0..toks {
                    for r in 0..rows {
                        let (wr, xt) = (&w8[r * nb..(r + 1) * nb], &x0[t * nb..(t + 1) * nb]);
                        let want = dot::vec_dot_q8_0_q8_0(wr, xt);
                        let got = g[t * rows + r];
                        if exact {
                            prop_assert!(got == want || (got.is_nan() && want.is_nan()), "{} q8_0x8 [{t},{r}]: {got} vs {want}", k.isa.name());
                        } else {
                            prop_assert!(close(got, want, tol_blocks(nb, mag_q8_0(wr, xt))), "{} q8_0x8 [{t},{r}]: {got} vs {want}", k.isa.name());
                        }
                    }
                }
            }
        }
    }

    /// Extreme bytes: all nibbles 0 or 15, weights −128/127, activations ±127, unit
    /// scales — small integers, so every table must match the plain dot exactly.
    #[test]
    fn gemm_x8_extremes_exact() {
        let (nb, rows, toks) = (3usize, 16usize, 6usize);
        let one = f16::from_f32(1.0);
        let w0: Vec<crate::quant::BlockQ4_0> = (0..rows * nb)
            .map(|i| crate::quant::BlockQ4_0 {
                d: one,
                qs: [if i % 3 == 0 { 0x00 } else { 0xff }; 16],
            })
            .collect();
        let w8: Vec<crate::quant::BlockQ8_0> = (0..rows * nb)
            .map(|i| crate::quant::BlockQ8_0 {
                d: one,
                qs: [[-128, 127, -1][i % 3]; 32],
            })
            .collect();
        let xa: Vec<BlockQ8_1> = (0..toks * nb)
            .map(|i| BlockQ8_1 {
                d: one,
                s: one,
                qs: [[-127, 127, 0, -1][i % 4]; 32],
            })
            .collect();
        let x: Vec<BlockQ8Act> = xa.iter().map(BlockQ8Act::from_q8_1).collect();
        let x0: Vec<_> = xa.iter().map(repack::q8_0_of).collect();
        let p0 = packed(DType::Q4_0, &w0, rows, nb * 32);
        let p8 = packed(DType::Q8_0, &w8, rows, nb * 32);
        for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
            let mut g = vec![f32::NAN; rows * toks];
            (k.gemm_q4_0x8)(bytemuck::cast_slice(&p0), &x, nb, &mut g);
            let mut h = vec![f32::NAN; rows * toks];
            (k.gemm_q8_0x8)(bytemuck::cast_slice(&p8), &x, nb, &mut h);
            for t in 0..toks {
                for r in 0..rows {
                    let xt = &x0[t * nb..(t + 1) * nb];
                    assert_eq!(
                        g[t * rows + r],
                        dot::vec_dot_q4_0_q8_0(&w0[r * nb..(r + 1) * nb], xt),
                        "{} q4_0x8",
                        k.isa.name()
                    );
                    assert_eq!(
                        h[t * rows + r],
                        dot::vec_dot_q8_0_q8_0(&w8[r * nb..(r + 1) * nb], xt),
                        "{} q8_0x8",
                        k.isa.name()
                    );
                }
            }
        }
    }
}

/// One table's attention outputs (`got`: scores, values) against the scalar twin's
/// (`want`) for query `q`, cache `kv` (rows `stride` apart) and weights `w`: each output
/// is one reassociated sum, within `(terms + 64) · ε · Σ |terms|`.
fn attn_within_bound(
    isa: &str,
    (q, kv, w, stride): (&[f32], &[f32], &[f32], usize),
    (s1, v1): (&[f32], &[f32]),
    (s0, v0): (&[f32], &[f32]),
) -> Result<(), TestCaseError> {
    let (hd, n) = (q.len(), w.len());
    for s in 0..n {
        let mag: f32 = (0..hd).map(|i| (q[i] * kv[s * stride + i]).abs()).sum::<f32>() * 0.125;
        prop_assert!(
            close(s1[s], s0[s], (hd as f32 + 64.0) * eps() * mag + 1e-30),
            "{isa} score {s}: {} vs {}",
            s1[s],
            s0[s]
        );
    }
    for i in 0..hd {
        let mag: f32 = (0..n).map(|s| (w[s] * kv[s * stride + i]).abs()).sum();
        prop_assert!(
            close(v1[i], v0[i], (n as f32 + 64.0) * eps() * mag + 1e-30),
            "{isa} value {i}: {} vs {}",
            v1[i],
            v0[i]
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The per-head attention kernels against their scalar twins over random head dims
    /// (multiples of 8 and 16 take the register paths; others the fallbacks), slot counts
    /// and strides. Each output is one reassociated sum: within `(n + 64) · ε · Σ |terms|`.
    #[test]
    fn attn_kernels(
        (hd, n, pad) in (1usize..140, 1usize..40, 0usize..9),
        seed in any::<u64>(),
    ) {
        let stride = hd + pad;
        let mut st = seed | 1;
        let mut rnd = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; ((st >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 };
        let q: Vec<f32> = (0..hd).map(|_| rnd()).collect();
        let kv: Vec<f32> = (0..n * stride).map(|_| rnd()).collect();
        let w: Vec<f32> = (0..n).map(|_| rnd().abs()).collect();
        let (mut s0, mut v0) = (vec![0f32; n], vec![0f32; hd]);
        super::scalar::attn_scores(&q, &kv, stride, 0.125, &mut s0);
        super::scalar::attn_values(&w, &kv, stride, &mut v0);
        for k in simd_tables() {
            let (mut s1, mut v1) = (vec![f32::NAN; n], vec![f32::NAN; hd]);
            (k.attn_scores)(&q, &kv, stride, 0.125, &mut s1);
            (k.attn_values)(&w, &kv, stride, &mut v1);
            attn_within_bound(k.isa.name(), (&q, &kv, &w, stride), (&s1, &v1), (&s0, &v0))?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The f16-cache attention kernels: the scalar twins equal the f32 scalar kernels on
    /// the widened cache bit for bit (widening is exact, the sums run in the same order);
    /// every SIMD table within the f32 kernels' bound of them.
    #[test]
    fn attn_kernels_f16(
        (hd, n, pad) in (1usize..140, 1usize..40, 0usize..9),
        seed in any::<u64>(),
    ) {
        let stride = hd + pad;
        let mut st = seed | 1;
        let mut rnd = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; ((st >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 };
        let q: Vec<f32> = (0..hd).map(|_| rnd()).collect();
        let kv16: Vec<half::f16> = (0..n * stride).map(|_| half::f16::from_f32(rnd())).collect();
        let kv: Vec<f32> = kv16.iter().map(|h| h.to_f32()).collect();
        let w: Vec<f32> = (0..n).map(|_| rnd().abs()).collect();
        let (mut s0, mut v0) = (vec![0f32; n], vec![0f32; hd]);
        super::scalar::attn_scores(&q, &kv, stride, 0.125, &mut s0);
        super::scalar::attn_values(&w, &kv, stride, &mut v0);
        let (mut s16, mut v16) = (vec![f32::NAN; n], vec![f32::NAN; hd]);
        super::scalar::attn_scores_f16(&q, &kv16, stride, 0.125, &mut s16);
        super::scalar::attn_values_f16(&w, &kv16, stride, &mut v16);
        prop_assert_eq!(&s16, &s0);
        prop_assert_eq!(&v16, &v0);
        for k in simd_tables() {
            let (mut s1, mut v1) = (vec![f32::NAN; n], vec![f32::NAN; hd]);
            (k.attn_scores_f16)(&q, &kv16, stride, 0.125, &mut s1);
            (k.attn_values_f16)(&w, &kv16, stride, &mut v1);
            attn_within_bound(k.isa.name(), (&q, &kv, &w, stride), (&s1, &v1), (&s0, &v0))?;
        }
    }
}

/// One table's grouped attention kernels against its per-head ones, bit for bit, over
/// a cache of `T` (`kv`: `n` rows `stride` apart): scores of the `g` heads at once into
/// rows `ld` apart, whole and in blocks of 8 slots (as the decode path calls them); value
/// sums added in two pieces cut at `split` (a chained sum must be one sum).
#[allow(clippy::too_many_arguments)]
fn group_matches_per_head<T: Copy>(
    name: &str,
    gr: super::AttnGroup<T>,
    scores: fn(&[f32], &[T], usize, f32, &mut [f32]),
    values: fn(&[f32], &[T], usize, &mut [f32]),
    (q, kv, w): (&[f32], &[T], &[f32]),
    (g, hd, n, stride, ld, split): (usize, usize, usize, usize, usize, usize),
) -> Result<(), TestCaseError> {
    use super::{Rows, RowsMut};
    let mut want_s = vec![0f32; g * n];
    let mut want_v = vec![0f32; g * hd];
    for h in 0..g {
        scores(&q[h * hd..][..hd], kv, stride, 0.125, &mut want_s[h * n..][..n]);
        values(&w[h * n..][..n], kv, stride, &mut want_v[h * hd..][..hd]);
    }
    let mut got = vec![f32::NAN; g * ld];
    (gr.scores)(q, g, kv, stride, 0.125, RowsMut { data: &mut got, n, ld });
    let mut blocked = vec![f32::NAN; g * ld];
    for b0 in (0..n).step_by(8) {
        let nb = 8.min(n - b0);
        let out = RowsMut {
            data: &mut blocked[b0..],
            n: nb,
            ld,
        };
        (gr.scores)(q, g, &kv[b0 * stride..], stride, 0.125, out);
    }
    let mut sums = vec![0f32; g * hd];
    let split = split.min(n);
    // `w` rows are `n` apart: the first `split` slots, then the rest.
    (gr.values)(
        Rows {
            data: w,
            n: split,
            ld: n,
        },
        g,
        kv,
        stride,
        &mut sums,
    );
    (gr.values)(
        Rows {
            data: &w[split..],
            n: n - split,
            ld: n,
        },
        g,
        &kv[split * stride..],
        stride,
        &mut sums,
    );
    for h in 0..g {
        for (what, row) in [("scores", &got), ("blocked scores", &blocked)] {
            let (a, b) = (&row[h * ld..][..n], &want_s[h * n..][..n]);
            prop_assert!(
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name} {what} g {g} head {h} hd {hd} n {n}: {a:?} vs {b:?}"
            );
        }
        let (a, b) = (&sums[h * hd..][..hd], &want_v[h * hd..][..hd]);
        prop_assert!(
            a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{name} values g {g} head {h} hd {hd} n {n} split {split}: {a:?} vs {b:?}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every table's grouped attention kernels (`attn_group_f32`, `attn_group_f16`) give
    /// the bits of its per-head kernels, for groups of 1–9 heads, head dims that are and
    /// are not multiples of 8, padded cache strides and score rows.
    #[test]
    fn attn_group_kernels_match_per_head(
        (g, hd, n, pad, extra, split) in (
            1usize..10,
            prop::sample::select(vec![8usize, 16, 24, 64, 72, 128, 12, 5]),
            1usize..45,
            0usize..9,
            0usize..5,
            0usize..50,
        ),
        seed in any::<u64>(),
    ) {
        let stride = hd + pad;
        let mut st = seed | 1;
        let mut rnd = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; ((st >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 };
        let q: Vec<f32> = (0..g * hd).map(|_| rnd()).collect();
        let kv: Vec<f32> = (0..n * stride).map(|_| rnd()).collect();
        let kv16: Vec<f16> = kv.iter().map(|&x| f16::from_f32(x)).collect();
        let w: Vec<f32> = (0..g * n).map(|_| rnd().abs()).collect();
        let dims = (g, hd, n, stride, n + extra, split);
        let mut ran = 0;
        for k in simd_tables() {
            if let Some(gr) = k.attn_group_f32 {
                group_matches_per_head(k.isa.name(), gr, k.attn_scores, k.attn_values, (&q, &kv, &w), dims)?;
                ran += 1;
            }
            if let Some(gr) = k.attn_group_f16 {
                group_matches_per_head(k.isa.name(), gr, k.attn_scores_f16, k.attn_values_f16, (&q, &kv16, &w), dims)?;
                ran += 1;
            }
        }
        if ran == 0 {
            eprintln!("skip attn_group_kernels_match_per_head: no table here has grouped attention kernels");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The Q8_0-cache attention kernels (head dims of 1–8 blocks, padded strides):
    /// * the scalar scores equal the f64 dot of the dequantized quantized query and key
    ///   within `(nb + 4) · ε · Σ |terms|` (exact integer block sums, a few roundings),
    ///   and the f32 query's dot within what quantizing the query can move it, half a
    ///   step per element (`Σ_b d_q/2 · Σ |k̂|`);
    /// * the scalar values equal the f64 `Σ w·v̂` within `(n + 4) · ε · Σ |terms|`;
    /// * every SIMD table within the f32 kernels' reassociation bound of the twins.
    #[test]
    fn attn_kernels_q8_0(
        (nb, n, pad) in (1usize..=8, 1usize..40, 0usize..3),
        seed in any::<u64>(),
    ) {
        let (hd, stride) = (32 * nb, nb + pad);
        let mut st = seed | 1;
        let mut rnd = move || { st ^= st << 13; st ^= st >> 7; st ^= st << 17; ((st >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 };
        let q: Vec<f32> = (0..hd).map(|_| rnd()).collect();
        let raw: Vec<f32> = (0..n * stride * 32).map(|_| rnd()).collect();
        let mut kv8 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; n * stride];
        quant::quantize_row_q8_0(&raw, &mut kv8);
        let mut kvh = vec![0f32; n * stride * 32];
        quant::dequantize_row_q8_0(&kv8, &mut kvh);
        let mut q8 = vec![BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }; nb];
        quant::quantize_row_q8_0(&q, &mut q8);
        let mut qh = vec![0f32; hd];
        quant::dequantize_row_q8_0(&q8, &mut qh);
        let w: Vec<f32> = (0..n).map(|_| rnd().abs()).collect();
        let (mut s0, mut v0) = (vec![f32::NAN; n], vec![f32::NAN; hd]);
        super::scalar::attn_scores_q8_0(&q, &kv8, stride, 0.125, &mut s0);
        super::scalar::attn_values_q8_0(&w, &kv8, stride, &mut v0);
        let se = stride * 32;
        for s in 0..n {
            let k = &kvh[s * se..][..hd];
            let exact: f64 = (0..hd).map(|i| qh[i] as f64 * k[i] as f64).sum::<f64>() * 0.125;
            let mag: f64 = (0..hd).map(|i| (qh[i] as f64 * k[i] as f64).abs()).sum::<f64>() * 0.125;
            prop_assert!((s0[s] as f64 - exact).abs() <= (nb as f64 + 4.0) * eps() as f64 * mag + 1e-30,
                "score {s}: {} vs f64 {exact}", s0[s]);
            let full: f64 = (0..hd).map(|i| q[i] as f64 * k[i] as f64).sum::<f64>() * 0.125;
            let qerr: f64 = (0..nb).map(|b| q8[b].d.to_f64() * 0.5 * (0..32).map(|j| (k[32 * b + j] as f64).abs()).sum::<f64>()).sum::<f64>() * 0.125;
            prop_assert!((s0[s] as f64 - full).abs() <= qerr * 1.01 + 1e-6, "score {s}: {} vs unquantized query {full} (bound {qerr})", s0[s]);
        }
        for i in 0..hd {
            let exact: f64 = (0..n).map(|s| w[s] as f64 * kvh[s * se + i] as f64).sum();
            let mag: f64 = (0..n).map(|s| (w[s] as f64 * kvh[s * se + i] as f64).abs()).sum();
            prop_assert!((v0[i] as f64 - exact).abs() <= (n as f64 + 4.0) * eps() as f64 * mag + 1e-30,
                "value {i}: {} vs f64 {exact}", v0[i]);
        }
        for k in simd_tables() {
            let (mut s1, mut v1) = (vec![f32::NAN; n], vec![f32::NAN; hd]);
            (k.attn_scores_q8_0)(&q, &kv8, stride, 0.125, &mut s1);
            (k.attn_values_q8_0)(&w, &kv8, stride, &mut v1);
            attn_within_bound(k.isa.name(), (&qh, &kvh, &w, se), (&s1, &v1), (&s0, &v0))?;
        }
    }
}

proptest! {
    /// `softmax_f32` against the scalar twin (libm `expf`): each probability within
    /// `(n + 8) · ε` relative (a few ulp of `exp`, the sum's reassociation), on rows of
    /// every length across the vector width, scores of attention-like magnitudes.
    #[test]
    fn softmax_rows(x in prop::collection::vec(-40.0f32..40.0, 1..90)) {
        let mut want = x.clone();
        super::scalar::softmax(&mut want);
        for k in simd_tables() {
            let mut got = x.clone();
            (k.softmax_f32)(&mut got);
            let n = x.len() as f32;
            for i in 0..x.len() {
                let tol = (n + 8.0) * eps() * want[i].abs() + 1e-37;
                prop_assert!(close(got[i], want[i], tol), "{} [{i}] of {}: {} vs {}", k.isa.name(), x.len(), got[i], want[i]);
            }
        }
    }
}

proptest! {
    /// `swiglu_f32` against the scalar twin (libm `expf`): each output within a few ulp
    /// (the polynomial `exp`, one division), over gate values that reach both tails of
    /// the sigmoid and lengths across the vector width.
    #[test]
    fn swiglu_rows(gu in prop::collection::vec((-100.0f32..100.0, -8.0f32..8.0), 1..70)) {
        let (g, u): (Vec<f32>, Vec<f32>) = gu.into_iter().unzip();
        let mut want = vec![0f32; g.len()];
        super::scalar::swiglu(&g, &u, &mut want);
        for k in simd_tables() {
            let mut got = vec![f32::NAN; g.len()];
            (k.swiglu_f32)(&g, &u, &mut got);
            for i in 0..g.len() {
                let tol = 8.0 * eps() * want[i].abs() + 1e-30;
                prop_assert!(close(got[i], want[i], tol), "{} [{i}] g {} u {}: {} vs {}", k.isa.name(), g[i], u[i], got[i], want[i]);
            }
        }
    }
}

/// Q5 and K-quant dot products: every SIMD entry equals its scalar twin bit for bit (the
/// kernels form the same exact integer sums and combine them with the same f32
/// expression in block order), and each scalar twin equals Σ dequant(x)·dequant(y) in
/// f64 within `(64 + 8·nb) · ε · mag`, `mag = Σ |x_i y_i|` (f32 rounding of the scale
/// products and of one sum per block).
mod kquants {
    use super::*;
    use crate::dtype::DType;
    use crate::quant::{BlockQ4_K, BlockQ5_0, BlockQ5_K, BlockQ6_K, BlockQ8_K};

    fn same(got: f32, want: f32) -> bool {
        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan())
    }

    fn bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
        bytemuck::cast_slice(v)
    }

    /// Σ dequant(x)·dequant(y) in f64 and Σ |x_i y_i|.
    fn reference(xt: DType, x: &[u8], yt: DType, y: &[u8], n: usize) -> (f64, f64) {
        let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
        quant::dequantize_row(xt, x, &mut a).unwrap();
        quant::dequantize_row(yt, y, &mut b).unwrap();
        a.iter().zip(&b).fold((0.0, 0.0), |(s, m), (&p, &q)| {
            (s + f64::from(p) * f64::from(q), m + (f64::from(p) * f64::from(q)).abs())
        })
    }

    fn check_reference(got: f32, (want, mag): (f64, f64), nb: usize) -> bool {
        !want.is_finite() || (f64::from(got) - want).abs() <= (64.0 + 8.0 * nb as f64) * f64::from(eps()) * mag + 1e-30
    }

    /// Moderate scales, so the f64 reference stays finite and meaningful.
    fn kscale() -> impl Strategy<Value = f16> {
        prop_oneof![8 => (-2.0f32..2.0).prop_map(f16::from_f32), 1 => Just(f16::ZERO), 1 => (-1e-4f32..1e-4).prop_map(f16::from_f32)]
    }

    pub(super) fn q8_k_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ8_K>> {
        prop::collection::vec(
            (
                prop_oneof![4 => -1.0f32..1.0, 1 => Just(0.0f32)],
                prop::collection::vec(any::<i8>(), 256),
            ),
            n,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(d, q)| {
                    let mut b = BlockQ8_K {
                        d,
                        qs: [0; 256],
                        bsums: [0; 16],
                    };
                    b.qs.copy_from_slice(&q);
                    for (s, c) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                        *s = c.iter().map(|&x| i16::from(x)).sum();
                    }
                    b
                })
                .collect()
        })
    }
    pub(super) fn q5_0_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ5_0>> {
        prop::collection::vec((kscale(), any::<[u8; 4]>(), any::<[u8; 16]>()), n)
            .prop_map(|v| v.into_iter().map(|(d, qh, qs)| BlockQ5_0 { d, qh, qs }).collect())
    }
    pub(super) fn q4_k_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ4_K>> {
        prop::collection::vec(
            (
                kscale(),
                kscale(),
                any::<[u8; 12]>(),
                prop::collection::vec(any::<u8>(), 128),
            ),
            n,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(d, dmin, scales, q)| {
                    let mut b = BlockQ4_K {
                        d,
                        dmin,
                        scales,
                        qs: [0; 128],
                    };
                    b.qs.copy_from_slice(&q);
                    b
                })
                .collect()
        })
    }
    pub(super) fn q5_k_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ5_K>> {
        (q4_k_blocks(n), prop::collection::vec(any::<[u8; 32]>(), n)).prop_map(|(b4, qh)| {
            b4.into_iter()
                .zip(qh)
                .map(|(b, qh)| BlockQ5_K {
                    d: b.d,
                    dmin: b.dmin,
                    scales: b.scales,
                    qh,
                    qs: b.qs,
                })
                .collect()
        })
    }
    pub(super) fn q6_k_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ6_K>> {
        prop::collection::vec(
            (
                kscale(),
                prop::collection::vec(any::<u8>(), 128),
                prop::collection::vec(any::<u8>(), 64),
                any::<[i8; 16]>(),
            ),
            n,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|(d, l, h, scales)| {
                    let mut b = BlockQ6_K {
                        ql: [0; 128],
                        qh: [0; 64],
                        scales,
                        d,
                    };
                    b.ql.copy_from_slice(&l);
                    b.qh.copy_from_slice(&h);
                    b
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn dot_q5_0_q8_0((x, y) in (1usize..40).prop_flat_map(|n| (q5_0_blocks(n), q8_0_blocks(n))), off in 0usize..2) {
            let xs = shifted(&x, off, x[0]);
            let x = &xs[off..];
            let want = dot::vec_dot_q5_0_q8_0(x, &y);
            // The reference needs finite activation scales (q8_0_blocks may give ±60000).
            if y.iter().all(|b| b.d.to_f32().abs() < 8.0) {
                let r = reference(DType::Q5_0, bytes(x), DType::Q8_0, bytes(&y), 32 * x.len());
                prop_assert!(check_reference(want, r, x.len()), "scalar {want} vs f64 {r:?}");
            }
            for k in simd_tables() {
                let got = (k.vec_dot_q5_0_q8_0)(x, &y);
                prop_assert!(same(got, want), "{}: {got} vs {want}", k.isa.name());
            }
        }

        #[test]
        fn dot_q5_1_q8_1((x, y) in (1usize..40).prop_flat_map(|n| (
            prop::collection::vec((kscale(), kscale(), any::<[u8; 4]>(), any::<[u8; 16]>()), n)
                .prop_map(|v| v.into_iter().map(|(d, m, qh, qs)| crate::quant::BlockQ5_1 { d, m, qh, qs }).collect::<Vec<_>>()),
            prop::collection::vec((kscale(), any::<[i8; 32]>()), n).prop_map(|v| {
                v.into_iter()
                    .map(|(d, qs)| {
                        let s = f16::from_f32(d.to_f32() * qs.iter().map(|&q| i32::from(q)).sum::<i32>() as f32);
                        BlockQ8_1 { d, s, qs }
                    })
                    .collect::<Vec<_>>()
            }),
        ))) {
            let want = dot::vec_dot_q5_1_q8_1(&x, &y);
            // `s` is d·Σq rounded to f16 (relative error ≤ 2⁻¹¹): allow that per block.
            let r = reference(DType::Q5_1, bytes(&x), DType::Q8_1, bytes(&y), 32 * x.len());
            let slack: f64 = x.iter().zip(&y).map(|(a, b)| f64::from((a.m.to_f32() * b.s.to_f32()).abs()) / 1024.0).sum();
            let tol = (64.0 + 8.0 * x.len() as f64) * f64::from(eps()) * r.1 + slack + 1e-30;
            prop_assert!((f64::from(want) - r.0).abs() <= tol, "scalar {want} vs f64 {r:?}");
            for k in simd_tables() {
                let got = (k.vec_dot_q5_1_q8_1)(&x, &y);
                prop_assert!(same(got, want), "{}: {got} vs {want}", k.isa.name());
            }
        }

        #[test]
        fn dot_q4_k_q8_k((x, y) in (1usize..6).prop_flat_map(|n| (q4_k_blocks(n), q8_k_blocks(n))), off in 0usize..2) {
            let xs = shifted(&x, off, x[0]);
            let x = &xs[off..];
            let want = dot::vec_dot_q4_k_q8_k(x, &y);
            let r = reference(DType::Q4_K, bytes(x), DType::Q8_K, bytes(&y), 256 * x.len());
            prop_assert!(check_reference(want, r, 8 * x.len()), "scalar {want} vs f64 {r:?}");
            for k in simd_tables() {
                let got = (k.vec_dot_q4_k_q8_k)(x, &y);
                prop_assert!(same(got, want), "{}: {got} vs {want}", k.isa.name());
            }
        }

        #[test]
        fn dot_q5_k_q8_k((x, y) in (1usize..6).prop_flat_map(|n| (q5_k_blocks(n), q8_k_blocks(n)))) {
            let want = dot::vec_dot_q5_k_q8_k(&x, &y);
            let r = reference(DType::Q5_K, bytes(&x), DType::Q8_K, bytes(&y), 256 * x.len());
            prop_assert!(check_reference(want, r, 8 * x.len()), "scalar {want} vs f64 {r:?}");
            for k in simd_tables() {
                let got = (k.vec_dot_q5_k_q8_k)(&x, &y);
                prop_assert!(same(got, want), "{}: {got} vs {want}", k.isa.name());
            }
        }

        #[test]
        fn dot_q6_k_q8_k((x, y) in (1usize..6).prop_flat_map(|n| (q6_k_blocks(n), q8_k_blocks(n))), off in 0usize..2) {
            let ys = shifted(&y, off, y[0]);
            let y = &ys[off..];
            let want = dot::vec_dot_q6_k_q8_k(&x, y);
            let r = reference(DType::Q6_K, bytes(&x), DType::Q8_K, bytes(y), 256 * x.len());
            prop_assert!(check_reference(want, r, 16 * x.len()), "scalar {want} vs f64 {r:?}");
            for k in simd_tables() {
                let got = (k.vec_dot_q6_k_q8_k)(&x, y);
                prop_assert!(same(got, want), "{}: {got} vs {want}", k.isa.name());
            }
        }

        /// Q8_K: `d·q` reproduces the input within half a step, `bsums` are the sums.
        #[test]
        fn quantize_q8_k(x in prop::collection::vec(prop_oneof![8 => -10.0f32..10.0, 1 => Just(0.0f32)], 256..=256)) {
            let mut b = [BlockQ8_K { d: 0.0, qs: [0; 256], bsums: [0; 16] }];
            quant::k::quantize_row_q8_k(&x, &mut b);
            let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
            for (i, &v) in x.iter().enumerate() {
                prop_assert!((b[0].d * f32::from(b[0].qs[i]) - v).abs() <= amax / 127.0 * 0.5001 + 1e-6);
            }
            for (s, c) in b[0].bsums.iter().zip(b[0].qs.chunks_exact(16)) {
                prop_assert_eq!(i32::from(*s), c.iter().map(|&q| i32::from(q)).sum::<i32>());
            }
        }
    }
}

// --- x8 layouts of the Q4_K_M types ----------------------------------------------------

mod x8_kquants {
    //! The Q5_0 / Q5_1 / Q4_K / Q5_K / Q6_K x8 kernels against the plain layout's scalar dots: the
    //! scalar twins bit-identical, every SIMD table within a rounding bound on the sum of
    //! the magnitudes its float steps see (the K-quants' scale and minimum terms apart,
    //! since they cancel).

    use proptest::prelude::*;

    use super::kquants::{q4_k_blocks, q5_0_blocks, q5_k_blocks, q6_k_blocks, q8_k_blocks};
    use super::{close, eps, scale};
    use crate::cpu::repack::{self, BlockQ8Act};
    use crate::cpu::{Isa, Kernels};
    use crate::dtype::DType;
    use crate::quant::k::{scale_min_k4, unpack_q4_k, unpack_q5_k, unpack_q6_k};
    use crate::quant::q5::unpack5;
    use crate::quant::{dot, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K};

    fn packed<T: bytemuck::Pod>(dtype: DType, w: &[T], rows: usize, cols: usize) -> Vec<u8> {
        let src: &[u8] = bytemuck::cast_slice(w);
        let mut dst = vec![0u8; src.len()];
        assert!(repack::repack(dtype, rows, cols, src, &mut dst));
        let (bb, bs) = (dtype.block_bytes(), dtype.block_size());
        let mut b1 = vec![0u8; bb];
        for r in 0..rows {
            for b in 0..cols / bs {
                repack::extract_block(dtype, &dst, cols, r, b, &mut b1);
                assert_eq!(b1, src[(r * cols / bs + b) * bb..][..bb], "{dtype:?} row {r} block {b}");
            }
        }
        dst
    }

    fn q5_1_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ5_1>> {
        prop::collection::vec((scale(), scale(), any::<[u8; 4]>(), any::<[u8; 16]>()), n)
            .prop_map(|v| v.into_iter().map(|(d, m, qh, qs)| BlockQ5_1 { d, m, qh, qs }).collect())
    }

    fn act_blocks(n: usize) -> impl Strategy<Value = Vec<BlockQ8_1>> {
        prop::collection::vec((scale(), prop::collection::vec(-127i8..=127, 32)), n).prop_map(|v| {
            v.into_iter()
                .map(|(d, qs)| BlockQ8_1 {
                    d,
                    s: half::f16::ZERO,
                    qs: qs.try_into().unwrap(),
                })
                .collect()
        })
    }

    /// Σ |d_w d_y (q − 16) y| over a Q5_0 row.
    fn mag_q5_0(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(a, b)| {
                let q = unpack5(a.qh, &a.qs);
                let s: i32 = q
                    .iter()
                    .zip(&b.qs)
                    .map(|(&q, &y)| ((i32::from(q) - 16) * i32::from(y)).abs())
                    .sum();
                (a.d.to_f32() * b.d.to_f32()).abs() * s as f32
            })
            .sum()
    }

    /// Σ |d_w d_y q y| + |m_w s_y| over a Q5_1 row.
    fn mag_q5_1(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(a, b)| {
                let q = unpack5(a.qh, &a.qs);
                let s: i32 = q
                    .iter()
                    .zip(&b.qs)
                    .map(|(&q, &y)| (i32::from(q) * i32::from(y)).abs())
                    .sum();
                (a.d.to_f32() * b.d.to_f32()).abs() * s as f32 + (a.m.to_f32() * b.s.to_f32()).abs()
            })
            .sum()
    }

    /// Σ |d_y| (|d_w| Σ |sc q y| + |dmin| Σ |m y|) over a Q4_K / Q5_K row (`q` its values).
    fn mag_k(q: &[u8; 256], scales: &[u8; 12], d: f32, dmin: f32, b: &BlockQ8_K) -> f32 {
        let (mut si, mut sm) = (0i64, 0i64);
        for (e, (&q, &y)) in q.iter().zip(&b.qs).enumerate() {
            let (sc, m) = scale_min_k4(e / 32, scales);
            let y = i64::from(y).abs();
            si += i64::from(sc) * i64::from(q) * y;
            sm += i64::from(m) * y;
        }
        b.d.abs() * (d.abs() * si as f32 + dmin.abs() * sm as f32)
    }

    fn mag_q4_k(w: &[BlockQ4_K], x: &[BlockQ8_K]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(a, b)| mag_k(&unpack_q4_k(&a.qs), &a.scales, a.d.to_f32(), a.dmin.to_f32(), b))
            .sum()
    }

    fn mag_q5_k(w: &[BlockQ5_K], x: &[BlockQ8_K]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(a, b)| mag_k(&unpack_q5_k(a), &a.scales, a.d.to_f32(), a.dmin.to_f32(), b))
            .sum()
    }

    /// Σ |d_w d_y sc (q − 32) y| plus the −32 offset's |32 sc Σ y| terms, over a Q6_K row.
    fn mag_q6_k(w: &[BlockQ6_K], x: &[BlockQ8_K]) -> f32 {
        w.iter()
            .zip(x)
            .map(|(a, b)| {
                let q = unpack_q6_k(a);
                let s: i64 = (0..256)
                    .map(|e| {
                        let (sc, y) = (i64::from(a.scales[e / 16]).abs(), i64::from(b.qs[e]).abs());
                        sc * (i64::from(q[e]) + 32) * y + 32 * sc * y
                    })
                    .sum();
                (a.d.to_f32() * b.d).abs() * s as f32
            })
            .sum()
    }

    /// One table's `[toks, rows]` output against the plain scalar dot of each row and
    /// token: equal bits for the scalar table, within `(units + 64) ε mag` otherwise.
    #[allow(clippy::too_many_arguments)]
    fn check<W, X>(
        k: &Kernels,
        name: &str,
        got: &[f32],
        w: &[W],
        x: &[X],
        nb: usize,
        units: usize,
        dot: impl Fn(&[W], &[X]) -> f32,
        mag: impl Fn(&[W], &[X]) -> f32,
    ) -> Result<(), TestCaseError> {
        let (rows, toks) = (w.len() / nb, x.len() / nb);
        for t in 0..toks {
            for r in 0..rows {
                let (wr, xt) = (&w[r * nb..(r + 1) * nb], &x[t * nb..(t + 1) * nb]);
                let (want, g) = (dot(wr, xt), got[t * rows + r]);
                if k.x8_simd_for(DType::Q4_K) {
                    let tol = (units as f32 + 64.0) * eps() * mag(wr, xt) + 1e-30;
                    prop_assert!(close(g, want, tol), "{} {name} [{t},{r}]: {g} vs {want}", k.isa.name());
                } else {
                    prop_assert!(
                        g == want || (g.is_nan() && want.is_nan()),
                        "{} {name} [{t},{r}]: {g} vs {want}",
                        k.isa.name()
                    );
                }
            }
        }
        Ok(())
    }

    /// A K-quant x8 kernel (`run(table, packed bytes, out)`) of every table against the
    /// plain dot, `16 · nb` float steps a row (see `check`).
    /// `x` (`nb` Q8_K blocks per token) interleaved for the token-lane kernels; checks
    /// the interleave against the blocks it came from.
    fn x16_of(x: &[BlockQ8_K], nb: usize) -> Vec<repack::BlockQ8_Kx16> {
        let toks = x.len() / nb;
        let mut o = vec![bytemuck::Zeroable::zeroed(); toks.div_ceil(16) * nb];
        repack::q8_k_x16(x, nb, &mut o);
        for (i, ob) in o.iter().enumerate() {
            let (grp, b) = (i / nb, i % nb);
            for t in 0..16 {
                let tok = 16 * grp + t;
                let xb = (tok < toks).then(|| &x[tok * nb + b]);
                assert_eq!(ob.d[t], xb.map_or(0.0, |v| v.d));
                for e in 0..256 {
                    let q = (ob.qs[16 * (e / 4) + t] >> (8 * (e % 4))) as i8;
                    assert_eq!(q, xb.map_or(0, |v| v.qs[e]));
                }
                for s in 0..8 {
                    let bs = (ob.bs[16 * (s / 2) + t] >> (16 * (s % 2))) as i16;
                    assert_eq!(bs, xb.map_or(0, |v| v.bsums[2 * s] + v.bsums[2 * s + 1]));
                }
                for s in 0..16 {
                    let bs = (ob.bs16[16 * (s / 2) + t] >> (16 * (s % 2))) as i16;
                    assert_eq!(bs, xb.map_or(0, |v| v.bsums[s]));
                }
            }
        }
        o
    }

    fn check_k<W: bytemuck::Pod>(
        dtype: DType,
        w: &[W],
        x: &[BlockQ8_K],
        nb: usize,
        run: impl Fn(&Kernels, &[u8], &mut [f32]),
        dot: impl Fn(&[W], &[BlockQ8_K]) -> f32,
        mag: impl Fn(&[W], &[BlockQ8_K]) -> f32,
    ) -> Result<(), TestCaseError> {
        let rows = w.len() / nb;
        let p = packed(dtype, w, rows, nb * 256);
        for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
            let mut g = vec![f32::NAN; rows * (x.len() / nb)];
            run(&k, &p, &mut g);
            check(&k, dtype.name(), &g, w, x, nb, 16 * nb, &dot, &mag)?;
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn gemm_x8_q5_0(
            (nb, w, xa) in (1usize..12, 1usize..4, 1usize..8).prop_flat_map(|(nb, groups, toks)| {
                (Just(nb), q5_0_blocks(8 * groups * nb), act_blocks(toks * nb))
            }),
        ) {
            let rows = w.len() / nb;
            let x: Vec<BlockQ8Act> = xa.iter().map(BlockQ8Act::from_q8_1).collect();
            let x0: Vec<_> = xa.iter().map(repack::q8_0_of).collect();
            let p = packed(DType::Q5_0, &w, rows, nb * 32);
            for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
                let mut g = vec![f32::NAN; rows * (x.len() / nb)];
                (k.gemm_q5_0x8)(bytemuck::cast_slice(&p), &x, nb, &mut g);
                check(&k, "q5_0x8", &g, &w, &x0, nb, nb, dot::vec_dot_q5_0_q8_0, mag_q5_0)?;
            }
        }

        #[test]
        fn gemm_x8_q5_1(
            (nb, w, xa) in (1usize..12, 1usize..4, 1usize..8).prop_flat_map(|(nb, groups, toks)| {
                (Just(nb), q5_1_blocks(8 * groups * nb), act_blocks(toks * nb))
            }),
        ) {
            let rows = w.len() / nb;
            // Q8_1's `s` as its quantizer makes it: d · Σ qs, rounded to f16.
            let xa: Vec<BlockQ8_1> = xa
                .into_iter()
                .map(|b| BlockQ8_1 {
                    s: half::f16::from_f32(b.d.to_f32() * b.qs.iter().map(|&q| f32::from(q)).sum::<f32>()),
                    ..b
                })
                .collect();
            let x: Vec<BlockQ8Act> = xa.iter().map(BlockQ8Act::from_q8_1).collect();
            let p = packed(DType::Q5_1, &w, rows, nb * 32);
            for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
                let mut g = vec![f32::NAN; rows * (x.len() / nb)];
                (k.gemm_q5_1x8)(bytemuck::cast_slice(&p), &x, nb, &mut g);
                check(&k, "q5_1x8", &g, &w, &xa, nb, 2 * nb, dot::vec_dot_q5_1_q8_1, mag_q5_1)?;
            }
        }

        #[test]
        fn gemm_x8_q5_k(
            (nb, w, x) in (1usize..4, 1usize..3, 1usize..7).prop_flat_map(|(nb, groups, toks)| {
                (Just(nb), q5_k_blocks(8 * groups * nb), q8_k_blocks(toks * nb))
            }),
        ) {
            check_k(DType::Q5_K, &w, &x, nb, |k, p, g| (k.gemm_q5_kx8)(bytemuck::cast_slice(p), &x, nb, g), dot::vec_dot_q5_k_q8_k, mag_q5_k)?;
        }

        #[test]
        fn gemm_t16_q5_k(
            (nb, w, x) in (1usize..4, 1usize..4, 1usize..65).prop_flat_map(|(nb, groups, toks)| {
                (Just(nb), q5_k_blocks(8 * groups * nb), q8_k_blocks(toks * nb))
            }),
        ) {
            let x16 = x16_of(&x, nb);
            check_k(DType::Q5_K, &w, &x, nb, |k, p, g| match k.gemm_q5_kx8_t16 {
                Some(f) => f(bytemuck::cast_slice(p), &x16, nb, g),
                None => (k.gemm_q5_kx8)(bytemuck::cast_slice(p), &x, nb, g),
            }, dot::vec_dot_q5_k_q8_k, mag_q5_k)?;
        }

        #[test]
        fn gemm_t16_q4_k(
            (nb, w, x) in (1usize..4, 1usize..4, 1usize..65).prop_flat_map(|(nb, groups, toks)| {
                (Just(nb), q4_k_blocks(8 * groups * nb), q8_k_blocks(toks * nb))
            }),
        ) {
            let x16 = x16_of(&x, nb);
            check_k(DType::Q4_K, &w, &x, nb, |k, p, g| match k.gemm_q4_kx8_t16 {
                Some(f) => f(bytemuck::cast_slice(p), &x16, nb, g),
                None => (k.gemm_q4_kx8)(bytemuck::cast_slice(p), &x, nb, g),
            }, dot::vec_dot_q4_k_q8_k, mag_q4_k)?;
        }

        #[test]
        fn gemm_t16_q6_k(
            (nb, w, x) in (1usize..4, 1usize..4, 1usize..65).prop_flat_map(|(nb, groups, toks)| {
                (Just(nb), q6_k_blocks(8 * groups * nb), q8_k_blocks(toks * nb))
            }),
        ) {
            let x16 = x16_of(&x, nb);
            check_k(DType::Q6_K, &w, &x, nb, |k, p, g| match k.gemm_q6_kx8_t16 {
                Some(f) => f(bytemuck::cast_slice(p), &x16, nb, g),
                None => (k.gemm_q6_kx8)(bytemuck::cast_slice(p), &x, nb, g),
            }, dot::vec_dot_q6_k_q8_k, mag_q6_k)?;
        }

        #[test]
        fn gemm_x8_q4_k(
            (nb, w, x) in (1usize..4, 1usize..3, 1usize..7).prop_flat_map(|(nb, groups, toks)| {
                (Just(nb), q4_k_blocks(8 * groups * nb), q8_k_blocks(toks * nb))
            }),
        ) {
            check_k(DType::Q4_K, &w, &x, nb, |k, p, g| (k.gemm_q4_kx8)(bytemuck::cast_slice(p), &x, nb, g), dot::vec_dot_q4_k_q8_k, mag_q4_k)?;
        }

        #[test]
        fn gemm_x8_q6_k(
            (nb, w, x) in (1usize..4, 1usize..3, 1usize..7).prop_flat_map(|(nb, groups, toks)| {
                (Just(nb), q6_k_blocks(8 * groups * nb), q8_k_blocks(toks * nb))
            }),
        ) {
            check_k(DType::Q6_K, &w, &x, nb, |k, p, g| (k.gemm_q6_kx8)(bytemuck::cast_slice(p), &x, nb, g), dot::vec_dot_q6_k_q8_k, mag_q6_k)?;
        }
    }

    /// Extreme values exactly: every Q6_K quant 0 or 63 with scales ±127/−128, Q4_K
    /// nibbles 0/15 (Q5_K values 0/15/16/31) with 63 scales and minimums, activations
    /// −128/127, unit scales — the
    /// integer sums at their bounds, so every table must equal the plain dot.
    #[test]
    fn gemm_x8_kquant_extremes_exact() {
        let one = half::f16::from_f32(1.0);
        let (rows, toks) = (8usize, 5usize);
        let x: Vec<BlockQ8_K> = (0..toks)
            .map(|t| {
                let v = [-128i8, 127, 0, -1, 127][t];
                let mut b = BlockQ8_K {
                    d: 1.0,
                    qs: [v; 256],
                    bsums: [0; 16],
                };
                if t == 3 {
                    for (i, q) in b.qs.iter_mut().enumerate() {
                        *q = if i % 2 == 0 { -128 } else { 127 };
                    }
                }
                for (s, c) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                    *s = c.iter().map(|&q| i16::from(q)).sum();
                }
                b
            })
            .collect();
        let w6: Vec<BlockQ6_K> = (0..rows)
            .map(|r| BlockQ6_K {
                ql: [if r % 2 == 0 { 0xff } else { 0x00 }; 128],
                qh: [if r % 3 == 0 { 0xff } else { 0x00 }; 64],
                scales: [[127i8, -128, 1, -1][r % 4]; 16],
                d: one,
            })
            .collect();
        let w4: Vec<BlockQ4_K> = (0..rows)
            .map(|r| BlockQ4_K {
                d: one,
                dmin: one,
                scales: [if r % 2 == 0 { 0xff } else { 0x3f }; 12],
                qs: [if r % 3 == 0 { 0xff } else { 0x0f }; 128],
            })
            .collect();
        let w5: Vec<BlockQ5_K> = w4
            .iter()
            .enumerate()
            .map(|(r, b)| BlockQ5_K {
                d: b.d,
                dmin: b.dmin,
                scales: b.scales,
                qh: [if r % 4 < 2 { 0xff } else { 0x00 }; 32],
                qs: b.qs,
            })
            .collect();
        let p6 = packed(DType::Q6_K, &w6, rows, 256);
        let p4 = packed(DType::Q4_K, &w4, rows, 256);
        let p5 = packed(DType::Q5_K, &w5, rows, 256);
        // The x8 kernels, then the token-lane ones where the table has them (same sums).
        let x16 = x16_of(&x, 1);
        for (k, lanes) in Isa::ALL
            .into_iter()
            .filter_map(Kernels::for_isa)
            .flat_map(|k| [(k, false), (k, true)])
        {
            let (mut g, mut h, mut h5) = (
                vec![f32::NAN; rows * toks],
                vec![f32::NAN; rows * toks],
                vec![f32::NAN; rows * toks],
            );
            match (lanes, k.gemm_q6_kx8_t16, k.gemm_q4_kx8_t16, k.gemm_q5_kx8_t16) {
                (false, ..) => {
                    (k.gemm_q6_kx8)(bytemuck::cast_slice(&p6), &x, 1, &mut g);
                    (k.gemm_q4_kx8)(bytemuck::cast_slice(&p4), &x, 1, &mut h);
                    (k.gemm_q5_kx8)(bytemuck::cast_slice(&p5), &x, 1, &mut h5);
                }
                (true, Some(f6), Some(f4), Some(f5)) => {
                    f6(bytemuck::cast_slice(&p6), &x16, 1, &mut g);
                    f4(bytemuck::cast_slice(&p4), &x16, 1, &mut h);
                    f5(bytemuck::cast_slice(&p5), &x16, 1, &mut h5);
                }
                _ => continue,
            }
            for t in 0..toks {
                for r in 0..rows {
                    let xt = &x[t..t + 1];
                    assert_eq!(
                        g[t * rows + r],
                        dot::vec_dot_q6_k_q8_k(&w6[r..r + 1], xt),
                        "{} q6_kx8 [{t},{r}]",
                        k.isa.name()
                    );
                    assert_eq!(
                        h[t * rows + r],
                        dot::vec_dot_q4_k_q8_k(&w4[r..r + 1], xt),
                        "{} q4_kx8 [{t},{r}]",
                        k.isa.name()
                    );
                    assert_eq!(
                        h5[t * rows + r],
                        dot::vec_dot_q5_k_q8_k(&w5[r..r + 1], xt),
                        "{} q5_kx8 [{t},{r}]",
                        k.isa.name()
                    );
                }
            }
        }
    }
}

/// The vectorizable bf16 rounding of the activations is `half`'s, bit for bit: every
/// exponent with mantissas around the rounding cut (ties to even both ways), zeros,
/// subnormals, infinities and NaNs of both signs.
#[test]
fn round_row_bf16_matches_half() {
    let mut xs = Vec::new();
    for sign in [0u32, 0x8000_0000] {
        for e in 0..=255u32 {
            for m in [
                0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0x1_0000, 0x1_7fff, 0x1_8000, 0x1_8001, 0x7f_ffff, 0x40_0000,
                0x7f_8000,
            ] {
                xs.push(f32::from_bits(sign | (e << 23) | m));
            }
        }
    }
    let mut s = 0x2545_f491u32;
    for _ in 0..100_000 {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        xs.push(f32::from_bits(s));
    }
    let mut got = vec![bf16::ZERO; xs.len()];
    super::round_row_bf16(&xs, &mut got);
    for (x, g) in xs.iter().zip(&got) {
        assert_eq!(g.to_bits(), bf16::from_f32(*x).to_bits(), "{:#010x}", x.to_bits());
    }
}

/// The half · half decode dots on rows long enough for their bodies (128 values for the
/// bf16 dot, 64 for the f16 one; the proptest's rows stop at 70), against an f64 sum of
/// the same products.
#[test]
fn half_decode_dots_long_rows() {
    let mut ran = (false, false);
    for k in Isa::ALL.into_iter().filter_map(Kernels::for_isa) {
        if let Some(dot) = k.vec_dot_bf16_bf16 {
            ran.0 = true;
            check_long_dot(k.isa.name(), dot, bf16::from_f32);
        }
        if let Some(act) = k.f16_act {
            ran.1 = true;
            check_long_dot(k.isa.name(), act.dot, f16::from_f32);
        }
    }
    if !ran.0 {
        println!("skip half_decode_dots_long_rows (bf16): no table here has the bf16 dot (needs AVX512-BF16 and VL)");
    }
    if !ran.1 {
        println!("skip half_decode_dots_long_rows (f16): no table here has the f16 dot (x86-64 with F16C only)");
    }
}

fn check_long_dot<H: Copy + Into<f32>>(isa: &str, dot: fn(&[H], &[H]) -> f32, from: fn(f32) -> H) {
    for n in [64usize, 127, 128, 129, 200, 576, 1000, 2048, 8192] {
        let x: Vec<H> = (0..n).map(|i| from(((i * 37 % 101) as f32 - 50.0) / 17.0)).collect();
        let y: Vec<H> = (0..n).map(|i| from(((i * 53 % 89) as f32 - 44.0) / 9.0)).collect();
        let prods = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| f64::from(a.into()) * f64::from(b.into()));
        let want: f64 = prods.clone().sum();
        let mag: f64 = prods.map(f64::abs).sum();
        let got = f64::from(dot(&x, &y));
        let tol = n as f64 * f64::from(f32::EPSILON) * mag;
        assert!((got - want).abs() <= tol, "{isa} n {n}: {got} vs {want}");
    }
}
