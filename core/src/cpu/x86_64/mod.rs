//! x86-64 kernels: AVX2 (+FMA, +F16C) and AVX-512 (F, BW, VL, DQ; VNNI where present).
//!
//! Each table constructor checks the CPU with `is_x86_feature_detected!` and returns
//! `None` when a feature is missing, so every function pointer it hands out may assume
//! its features (that is the safety argument of every `unsafe` call into a
//! `#[target_feature]` function below). Detection needs `std`; without it only the
//! scalar table exists (see `cpu::kernels`).
//!
//! What must match the scalar twins (`crate::quant`, `crate::quant::dot`):
//! * the activation quantizers, byte for byte: the scale is computed in f32 exactly as the
//!   reference does (`amax / 127`, `id = 1/d`), `x * id` is rounded half away from zero
//!   (truncate, then add ±1 where the exact fraction is ≥ 0.5 in magnitude — the scalar
//!   `roundf` written in lanes), and a block whose inputs are not all finite (or whose
//!   `1/d` overflows) is handed to the scalar quantizer;
//! * the integer part of every quantized dot product, exactly (all sums are i32 and no
//!   step saturates for any input bytes, −128 included);
//! * the float combination, within reassociation error (lanes add in another order).

/// Runs a `gemm_*` kernel body over `rows × toks` in `R × T` tiles: `$tile::<R, T>(w,
/// x, nb, r0, t0, y, rows)` writes `y[t·rows + r]` for the tile at (`r0`, `t0`); row
/// and token tails take `1`-wide tiles of the same body, so every output runs the same
/// per-(row, token) arithmetic.
macro_rules! gemm_tiles {
    ($tile:ident::<$r:literal, $t:literal>($w:expr, $x:expr, $nb:expr, $y:expr)) => {{
        let (w, x, nb, y) = ($w, $x, $nb, $y);
        if nb == 0 {
            y.fill(0.0);
            return;
        }
        let (rows, toks) = (w.len() / nb, x.len() / nb);
        debug_assert_eq!(y.len(), rows * toks);
        let (rf, tf) = (rows / $r * $r, toks / $t * $t);
        let mut r0 = 0;
        while r0 < rf {
            let mut t0 = 0;
            while t0 < tf {
                $tile::<$r, $t>(w, x, nb, r0, t0, y, rows);
                t0 += $t;
            }
            while t0 < toks {
                $tile::<$r, 1>(w, x, nb, r0, t0, y, rows);
                t0 += 1;
            }
            r0 += $r;
        }
        while r0 < rows {
            let mut t0 = 0;
            while t0 < tf {
                $tile::<1, $t>(w, x, nb, r0, t0, y, rows);
                t0 += $t;
            }
            while t0 < toks {
                $tile::<1, 1>(w, x, nb, r0, t0, y, rows);
                t0 += 1;
            }
            r0 += 1;
        }
    }};
}

/// Software prefetch of the weights of the row group after a GEMM tile's (the next `R`
/// rows, contiguous in the plain layout), a share per token tile: the call's `ceil(toks /
/// T)` token tiles over the same rows each fetch their part, a line or so per step of
/// their loop, so the next row group does not stall on memory. A model's weights come
/// from DRAM; the bench's 32 MiB 8192×2048 BF16 case ran 53–60 G MAC/s without this
/// and 78–83 with it (docs/perf-notes.md). Past the matrix's end the hints fetch
/// nothing useful and harm nothing: a prefetch never faults.
struct NextRows {
    next: *const i8,
    line: usize,
    end: usize,
    per_step: usize,
}

impl NextRows {
    /// For the tile at token `t0` of `toks`, whose `R` rows of `n` `E`s start at `w`,
    /// looping `steps` times.
    #[inline(always)]
    fn new<E, const R: usize, const T: usize>(w: *const E, n: usize, toks: usize, t0: usize, steps: usize) -> Self {
        let group = R * n * core::mem::size_of::<E>();
        let lines = group.div_ceil(64);
        let per = lines.div_ceil(toks.div_ceil(T).max(1));
        let part = t0 / T;
        NextRows {
            next: w.wrapping_add(R * n).cast(),
            line: per * part,
            end: (per * (part + 1)).min(lines),
            per_step: per.div_ceil(steps.max(1)),
        }
    }

    /// This step's share of the prefetches.
    #[inline(always)]
    fn step(&mut self) {
        for _ in 0..self.per_step {
            if self.line < self.end {
                // A hint into L2 (the tile's own rows keep L1).
                // SAFETY: SSE is part of x86-64; a prefetch never faults and reads
                // nothing the program sees, whatever the address.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(self.next.wrapping_add(self.line * 64)) };
                self.line += 1;
            }
        }
    }
}

pub(crate) mod avx2;
mod avx2_k;
pub(crate) mod avx512;
mod k16;
mod repack;

use core::arch::x86_64::*;

use half::f16;

// Loads use `lddqu` (an LLVM intrinsic) rather than `loadu`: core::arch implements
// `loadu` with `ptr::read_unaligned`, whose debug-build UB checks (overlap test, stack
// round trip) stay in the dev profile the harness is run with and cost ~2× in these
// loops. `lddqu` is an ordinary unaligned load on every AVX2 CPU.

/// `a · b` of two f16 scales (as the scalar twin: exact conversions, one f32 multiply),
/// converting both with a single F16C instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_prod(a: f16, b: f16) -> f32 {
    let bits = a.to_bits() as i32 | ((b.to_bits() as i32) << 16);
    let f = _mm_cvtph_ps(_mm_cvtsi32_si128(bits));
    _mm_cvtss_f32(_mm_mul_ss(f, _mm_movehdup_ps(f)))
}

/// `a0 · b0` in lane 0 and `a1 · b1` in lane 2 (lanes 1 and 3 are junk), with a single
/// F16C conversion of all four scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_prod2(a0: f16, b0: f16, a1: f16, b1: f16) -> __m128 {
    let bits = a0.to_bits() as i64
        | ((b0.to_bits() as i64) << 16)
        | ((a1.to_bits() as i64) << 32)
        | ((b1.to_bits() as i64) << 48);
    let f = _mm_cvtph_ps(_mm_cvtsi64_si128(bits));
    _mm_mul_ps(f, _mm_movehdup_ps(f))
}

/// `[a0·b, a1·b, a2·b, a3·b]` for four f16 scales and one (each product the scalar
/// twin's f32 multiply of exactly converted values).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scales4(a: [f16; 4], b: f16) -> __m128 {
    let bits = a[0].to_bits() as i64
        | ((a[1].to_bits() as i64) << 16)
        | ((a[2].to_bits() as i64) << 32)
        | ((a[3].to_bits() as i64) << 48);
    let fa = _mm_cvtph_ps(_mm_cvtsi64_si128(bits));
    let fb = _mm_cvtph_ps(_mm_cvtsi32_si128(b.to_bits() as i32));
    _mm_mul_ps(fa, _mm_broadcastss_ps(fb))
}

/// Up to four f16 scales (`s[..n]`, `n ≤ 4`) as f32 lanes (exact), zeros after.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn cvt_scales<const N: usize>(s: [f16; N]) -> __m128 {
    let mut bits = 0i64;
    for (i, v) in s.iter().enumerate().take(4) {
        bits |= (v.to_bits() as i64) << (16 * i);
    }
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits))
}

/// The `R × T` scale products `dw[r] · dx[t]` (each the scalar twin's one f32
/// multiply of exactly converted values), row-major in lanes of four.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn scale_grid<const R: usize, const T: usize>(dw: [f16; R], dx: [f16; T]) -> [[f32; 4]; R] {
    let (fw, fx) = (cvt_scales(dw), cvt_scales(dx));
    let mut fwa = [0f32; 4];
    // SAFETY: `fwa` is 4 writable f32; unaligned store.
    unsafe { _mm_storeu_ps(fwa.as_mut_ptr(), fw) };
    let mut out = [[0f32; 4]; R];
    for (o, &a) in out.iter_mut().zip(&fwa) {
        // SAFETY: `o` is 4 writable f32; unaligned store.
        unsafe { _mm_storeu_ps(o.as_mut_ptr(), _mm_mul_ps(_mm_set1_ps(a), fx)) };
    }
    out
}

/// Loads 16 bytes (no alignment needed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; `lddqu` has no alignment requirement.
    unsafe { _mm_lddqu_si128(b.as_ptr().cast()) }
}

/// Loads 32 signed bytes (no alignment needed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load32(b: &[i8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; `lddqu` has no alignment requirement.
    unsafe { _mm256_lddqu_si256(b.as_ptr().cast()) }
}

/// Loads the first 16 of 32 signed bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load16_i8(b: &[i8]) -> __m128i {
    assert!(b.len() >= 16);
    // SAFETY: at least 16 readable bytes (checked above); no alignment requirement.
    unsafe { _mm_lddqu_si128(b.as_ptr().cast()) }
}

/// Loads 8 f32 from `x[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_ps8(x: &[f32], i: usize) -> __m256 {
    let s = &x[i..i + 8];
    // SAFETY: `s` is 8 readable f32 (bounds checked by the slice above); unaligned load.
    _mm256_castsi256_ps(unsafe { _mm256_lddqu_si256(s.as_ptr().cast()) })
}

/// Loads 8 u16 (f16/bf16 bits) from `x[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_u16x8<T: bytemuck::Pod>(x: &[T], i: usize) -> __m128i {
    debug_assert_eq!(core::mem::size_of::<T>(), 2);
    let s = &x[i..i + 8];
    // SAFETY: `s` is 8 readable 2-byte values (bounds checked above); unaligned load.
    unsafe { _mm_lddqu_si128(s.as_ptr().cast()) }
}

/// Stores 32 bytes into `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn store32(b: &mut [i8; 32], v: __m256i) {
    // SAFETY: `b` is 32 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(b.as_mut_ptr().cast(), v) }
}

/// Horizontal sum of 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Horizontal sum of 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
    _mm_cvtsi128_si32(s)
}

/// Horizontal max of 8 non-NaN f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hmax_ps(v: __m256) -> f32 {
    let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// `roundf` (half away from zero) of 8 lanes whose magnitude is ≤ 2^23, written as the
/// scalar twin does it: truncate, then step away from zero when the exact fraction
/// reaches one half.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn round_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    let frac = _mm256_sub_ps(v, t);
    let one = _mm256_set1_ps(1.0);
    let up = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ), one);
    let dn = _mm256_and_ps(_mm256_cmp_ps(frac, _mm256_set1_ps(-0.5), _CMP_LE_OQ), one);
    _mm256_sub_ps(_mm256_add_ps(t, up), dn)
}

use crate::cpu::q8_simd_scale as q8_scale;

/// Quantizes one 32-float block with AVX2: returns the 32 bytes and their sum, or `None`
/// (see [`q8_scale`]).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_block(xb: &[f32]) -> Option<(f32, __m256i, i32)> {
    let v = [load_ps8(xb, 0), load_ps8(xb, 8), load_ps8(xb, 16), load_ps8(xb, 24)];
    let sign = _mm256_set1_ps(-0.0);
    let a = [
        _mm256_andnot_ps(sign, v[0]),
        _mm256_andnot_ps(sign, v[1]),
        _mm256_andnot_ps(sign, v[2]),
        _mm256_andnot_ps(sign, v[3]),
    ];
    let nan = _mm256_or_ps(
        _mm256_or_ps(
            _mm256_cmp_ps(v[0], v[0], _CMP_UNORD_Q),
            _mm256_cmp_ps(v[1], v[1], _CMP_UNORD_Q),
        ),
        _mm256_or_ps(
            _mm256_cmp_ps(v[2], v[2], _CMP_UNORD_Q),
            _mm256_cmp_ps(v[3], v[3], _CMP_UNORD_Q),
        ),
    );
    let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let (d, id) = q8_scale(hmax_ps(m), _mm256_movemask_ps(nan) != 0)?;
    let idv = _mm256_set1_ps(id);
    let i = [
        _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[0], idv))),
        _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[1], idv))),
        _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[2], idv))),
        _mm256_cvttps_epi32(round_away(_mm256_mul_ps(v[3], idv))),
    ];
    let sum = hsum_epi32(_mm256_add_epi32(
        _mm256_add_epi32(i[0], i[1]),
        _mm256_add_epi32(i[2], i[3]),
    ));
    // Values are integral in [-127, 127]: the saturating packs are exact. Packing works
    // per 128-bit lane; the permute puts the 32 bytes back in order.
    let p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    Some((d, p, sum))
}
