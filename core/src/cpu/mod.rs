//! The CPU backend: every op of the [`Backend`] trait on host memory.
//!
//! Structure (after memchr): the portable scalar kernels in [`scalar`] are always
//! compiled; ISA-specific kernels (AVX2, AVX-512, NEON) live in their own folders and
//! enter through [`kernels::Kernels`], a table of function pointers chosen once when the
//! backend is built ([`Isa`]). Hot loops never branch on the ISA.
//!
//! Memory: a [`CpuBuffer`] is either owned, 64-byte-aligned host memory (page-aligned
//! from a page up: a unified-memory device can wrap it in place), or a
//! [`HostRegion`] borrowed from a memory-mapped file (weights: zero-copy, read-only).
//! Quantized weight matrices (Q4_0, Q4_1, Q8_0, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) are
//! repacked at import into the row-interleaved x8
//! layout ([`repack`]; owned, marked by [`CpuBuffer::is_repacked`]), the file's pages of
//! the tensor then released, unless [`CpuOptions`] says otherwise; `matmul` and
//! `get_rows` read such a buffer in that layout.
//!
//! Scratch (activation quantization for the integer dot products, attention scores) is
//! reserved by [`Backend::reserve`]; ops allocate nothing.
//!
//! Threads: a persistent [`pool::ThreadPool`] (`CpuBackend::with_threads`; default: the
//! machine's available parallelism). `matmul` splits its output into tiles of output
//! columns × tokens, each written by one task; prefill activation quantization splits
//! tokens; `attention` splits KV heads (a GQA group a task) and blocks of tokens, or in
//! decode the slots (pieces merged afterwards; `attention_on`). Everything else runs on
//! the caller's thread.

pub mod kernels;
pub mod pool;
pub mod repack;
pub mod scalar;

#[cfg(all(feature = "std", target_arch = "aarch64"))]
mod aarch64;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_64;

#[cfg(test)]
mod tests;

use alloc::vec::Vec;

use bytemuck::{Pod, Zeroable};
use half::{bf16, f16};

use crate::backend::{AttnParams, Backend, BufferKind, Capabilities, HostRegion, Reservation, RopeStyle};
use crate::dtype::{DType, QK_K};
use crate::error::{Error, Result};
use crate::quant::{
    BlockQ4_0, BlockQ4_1, BlockQ4_K, BlockQ5_0, BlockQ5_1, BlockQ5_K, BlockQ6_K, BlockQ8_0, BlockQ8_1, BlockQ8_K,
};
use crate::tensor::{Shape, TensorMut, TensorRef};
use repack::{
    BlockQ4_0x8, BlockQ4_1x8, BlockQ4_Kx8, BlockQ5_0x8, BlockQ5_1x8, BlockQ5_Kx8, BlockQ6_Kx8, BlockQ8Act, BlockQ8_0x8,
    BlockQ8_Kx16,
};

pub use kernels::{AttnGroup, GemmKx16, Isa, Kernels, Rows, RowsMut};
use pool::Grid;
pub use pool::ThreadPool;

#[repr(C, align(64))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Chunk([u8; 64]);

/// A page of a large buffer: buffers of a page or more start on a page boundary, so a
/// device that shares host memory can wrap them in place (OpenCL's
/// `CL_DEVICE_MEM_BASE_ADDR_ALIGN` is at most a few hundred bytes on the devices we
/// know; a page covers them all). Used by the hybrid's zero-copy KV cache.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Page([u8; PAGE]);

/// Bytes of a [`Page`].
pub const PAGE: usize = 4096;

enum Mem {
    Owned(Vec<Chunk>),
    Paged(Vec<Page>),
    Host(HostRegion),
}

/// Host memory: owned and aligned, or borrowed read-only from a mapped file.
pub struct CpuBuffer {
    mem: Mem,
    len: usize,
    /// A weight in the row-interleaved x8 layout (`repack`), repacked at import.
    x8: bool,
}

impl CpuBuffer {
    /// The buffer's bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.mem {
            Mem::Owned(v) => &bytemuck::cast_slice(v)[..self.len],
            Mem::Paged(v) => &bytemuck::cast_slice(v)[..self.len],
            Mem::Host(r) => r.bytes(),
        }
    }
    /// The buffer's bytes, writable; `None` for read-only (mapped) memory.
    pub fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        match &mut self.mem {
            Mem::Owned(v) => Some(&mut bytemuck::cast_slice_mut(v)[..self.len]),
            Mem::Paged(v) => Some(&mut bytemuck::cast_slice_mut(v)[..self.len]),
            Mem::Host(_) => None,
        }
    }
    /// True when the bytes are borrowed from a host region (no copy was made).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.mem, Mem::Host(_))
    }
    /// True for a weight repacked at import into the x8 layout (`cpu::repack`).
    pub fn is_repacked(&self) -> bool {
        self.x8
    }
}

/// The CPU backend.
pub struct CpuBackend {
    k: Kernels,
    pool: ThreadPool,
    /// Activation rows quantized to Q8_0 (Q4_0 / Q8_0 weights).
    q8_0: Vec<BlockQ8_0>,
    /// Activation rows quantized to Q8_1 (Q4_1 / Q5_1 weights).
    q8_1: Vec<BlockQ8_1>,
    /// Activation rows quantized to Q8_K (Q4_K / Q5_K / Q6_K weights).
    q8_k: Vec<BlockQ8_K>,
    /// Attention scores: one row of `max_ctx` per query head (heads run in parallel).
    scores: Vec<f32>,
    /// One dequantized row (get_rows of quantized tables is row by row).
    row: Vec<f32>,
    /// Activation rows for the x8 kernels (quantized as Q8_1, then converted).
    qa: Vec<BlockQ8Act>,
    /// Activation rows rounded to bf16 for `Kernels::gemm_bf16_bf16`; sized by `reserve`
    /// only once a BF16 matrix was imported on a CPU with that kernel (`bf16_weights`).
    bf16_x: Vec<bf16>,
    bf16_weights: core::sync::atomic::AtomicBool,
    /// One activation row rounded to f16 for `Kernels::f16_act` (decode of F16 weights);
    /// sized by `reserve` only once an F16 matrix was imported on a CPU with that kernel.
    f16_x: Vec<f16>,
    f16_weights: core::sync::atomic::AtomicBool,
    /// Q8_K activation rows interleaved sixteen tokens at a time for the token-lane
    /// K-quant kernels (`Kernels::gemm_q5_kx8_t16`); sized by `reserve` only once a
    /// Q4_K / Q5_K / Q6_K matrix was imported on a CPU with those kernels (`kx16_weights`).
    q8_k16: Vec<BlockQ8_Kx16>,
    kx16_weights: core::sync::atomic::AtomicBool,
    /// Settings read once when the backend was built (`repack` already cleared where
    /// the ISA has no x8 SIMD kernels; `set_repack` changes it).
    opts: CpuOptions,
    /// Bytes of weights copied at import so far (repacked matrices, copied vectors).
    repacked: core::sync::atomic::AtomicU64,
    /// File-mapped sources of copied weights, released again by `finish_import` (held,
    /// so the mapping outlives the second `madvise`). Without `std` nothing is released.
    #[cfg(feature = "std")]
    released: std::sync::Mutex<Vec<HostRegion>>,
}

impl CpuBackend {
    /// The backend with the best ISA this CPU supports and one thread per available
    /// core ([`default_threads`]).
    pub fn new() -> CpuBackend {
        CpuBackend::with_kernels(Kernels::detect(), default_threads())
    }
    /// The backend with a forced ISA (default thread count); `None` when this CPU lacks it.
    pub fn with_isa(isa: Isa) -> Option<CpuBackend> {
        CpuBackend::with_threads(isa, default_threads())
    }
    /// The backend with a forced ISA and `threads` threads in all (the calling thread is
    /// one of them; 0 means 1); `None` when this CPU lacks the ISA.
    pub fn with_threads(isa: Isa, threads: usize) -> Option<CpuBackend> {
        Kernels::for_isa(isa).map(|k| CpuBackend::with_kernels(k, threads))
    }
    fn with_kernels(mut k: Kernels, threads: usize) -> CpuBackend {
        let mut opts = CpuOptions::from_env();
        opts.repack &= k.x8_simd || k.x8_kq_simd;
        if !opts.token_lanes {
            k.gemm_q4_kx8_t16 = None;
            k.gemm_q5_kx8_t16 = None;
            k.gemm_q6_kx8_t16 = None;
        }
        if !opts.half_act {
            k.f16_act = None;
            k.vec_dot_bf16_bf16 = None;
        }
        CpuBackend {
            k,
            pool: ThreadPool::new(threads),
            q8_0: Vec::new(),
            q8_1: Vec::new(),
            q8_k: Vec::new(),
            scores: Vec::new(),
            row: Vec::new(),
            qa: Vec::new(),
            opts,
            repacked: core::sync::atomic::AtomicU64::new(0),
            bf16_x: Vec::new(),
            bf16_weights: core::sync::atomic::AtomicBool::new(false),
            f16_x: Vec::new(),
            f16_weights: core::sync::atomic::AtomicBool::new(false),
            q8_k16: Vec::new(),
            kx16_weights: core::sync::atomic::AtomicBool::new(false),
            #[cfg(feature = "std")]
            released: std::sync::Mutex::new(Vec::new()),
        }
    }
    /// Whether weights imported from now on are repacked into the x8 layout
    /// (`cpu::repack`). On by default when the ISA has x8 SIMD kernels
    /// (`Kernels::x8_simd`); off keeps every weight in the file's pages, uncopied.
    pub fn set_repack(&mut self, on: bool) {
        self.opts.repack = on;
    }
    /// Whether weights are repacked at import (see [`CpuBackend::set_repack`]).
    pub fn repacks(&self) -> bool {
        self.opts.repack
    }
    /// Bytes of weights repacked at import so far (each one replaces the same number of
    /// mapped bytes, whose pages are released).
    pub fn repacked_bytes(&self) -> u64 {
        self.repacked.load(core::sync::atomic::Ordering::Relaxed)
    }
    pub fn kernels(&self) -> &Kernels {
        &self.k
    }
    /// The kernel table, to switch entries off (A/B benchmarks, tests): every entry it
    /// can be given comes from a table this CPU supports, so any mix is safe.
    pub fn kernels_mut(&mut self) -> &mut Kernels {
        &mut self.k
    }
    /// Threads that run ops (workers + the caller).
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
    /// Replaces the thread pool with one of `threads` threads (0 means 1). Setup-time
    /// only: it spawns threads (and joins the old ones).
    pub fn set_threads(&mut self, threads: usize) {
        if threads.max(1) != self.pool.threads() {
            self.pool = ThreadPool::new(threads);
        }
    }
}

/// The scale of one Q8 block for the SIMD quantizers (`d = amax / 127`, `id = 1/d`, as
/// the scalar reference), or `None` when the block must go to the scalar quantizer: an
/// input is NaN or infinite, or `1/d` overflows — then SIMD lanes and the scalar code
/// would disagree on how a non-finite product converts to i8.
#[allow(dead_code)]
#[inline]
pub(crate) fn q8_simd_scale(amax: f32, any_nan: bool) -> Option<(f32, f32)> {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    if any_nan || !amax.is_finite() || !id.is_finite() {
        None
    } else {
        Some((d, id))
    }
}

/// The four weight rows starting at row `r` (each `nb` units), for the four-row kernels.
#[allow(dead_code)]
#[inline]
pub(crate) fn rows4<T>(w: &[T], r: usize, nb: usize) -> [&[T]; 4] {
    let w = &w[r * nb..(r + 4) * nb];
    [&w[..nb], &w[nb..2 * nb], &w[2 * nb..3 * nb], &w[3 * nb..]]
}

/// [`repack::repack`] split by whole row groups over `threads` scoped threads when the
/// tensor is large (the groups of a byte range are the same byte range in both
/// layouts); at load only, so spawning threads here costs nothing per token.
fn repack_par(
    dtype: DType,
    rows: usize,
    cols: usize,
    src: &[u8],
    dst: &mut [u8],
    threads: usize,
    release: bool,
) -> bool {
    if !repack::can_repack(dtype, rows, cols) || src.len() != dst.len() {
        return false;
    }
    let groups = rows / repack::ROWS_X8;
    let group_bytes = src.len() / groups;
    // About 1 MiB of source per step; a file-mapped source's pages are released step by
    // step, so a large tensor (SmolLM2's 30 MB embedding, the 1B shape's 147 MB one) is
    // never resident twice over (measured on SmolLM2 Q4_1: peak RSS at a 512-token prefill 148 → 132 MiB).
    let step = (1usize << 20).div_ceil(group_bytes).max(1) * group_bytes;
    let run = |s: &[u8], d: &mut [u8]| {
        s.chunks(step).zip(d.chunks_mut(step)).all(|(s, d)| {
            let ok = repack::repack(dtype, s.len() / group_bytes * repack::ROWS_X8, cols, s, d);
            if release {
                crate::os::release_pages(s);
            }
            ok
        })
    };
    #[cfg(feature = "std")]
    if threads > 1 && src.len() >= 4 << 20 {
        let per = groups.div_ceil(threads) * group_bytes;
        return std::thread::scope(|sc| {
            let handles: Vec<_> = src
                .chunks(per)
                .zip(dst.chunks_mut(per))
                .map(|(s, d)| sc.spawn(move || run(s, d)))
                .collect();
            handles.into_iter().all(|h| h.join().unwrap_or(false))
        });
    }
    let _ = threads;
    run(src, dst)
}

/// The CPU backend's settings besides the ISA and the thread count, and the one place
/// its environment knobs are read:
///
/// | variable | field | default | effect |
/// |---|---|---|---|
/// | `ANTIGRAVITY_CPU_REPACK=0` | `repack` | on | off keeps every weight in the file's pages, uncopied (plain-layout kernels) |
/// | `ANTIGRAVITY_CPU_HUGEPAGES=0` | `huge_pages` | on | off drops the transparent-huge-page hint on repacked weights |
/// | `ANTIGRAVITY_CPU_TOKEN_LANES=0` | `token_lanes` | on | off runs Q4_K / Q5_K / Q6_K prefill on the x8 kernels, not the token-lane ones (`Kernels::gemm_q5_kx8_t16`; A/B) |
/// | `ANTIGRAVITY_CPU_HALF_ACT=0` | `half_act` | on | off keeps F16 / BF16 decode on f32 activations (`Kernels::f16_act`, `vec_dot_bf16_bf16` dropped; A/B, and a check of how far the rounding moves a model's tokens) |
///
/// `0` or `off` turns a knob off; anything else, or unset, leaves the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuOptions {
    /// Repack quantized matrices (`repack::has_x8`) into the x8 layout at import (only
    /// where the ISA has x8 SIMD kernels for the type, `Kernels::x8_simd_for`).
    pub repack: bool,
    /// `madvise(MADV_HUGEPAGE)` on repacked weights before they are written.
    pub huge_pages: bool,
    /// Take the token-lane Q4_K / Q5_K / Q6_K kernels where the table has them.
    pub token_lanes: bool,
    /// Round a decode token's activations to f16 / bf16 for F16 / BF16 weights where
    /// the table has those dots (llama.cpp's arithmetic).
    pub half_act: bool,
}

impl Default for CpuOptions {
    fn default() -> Self {
        CpuOptions {
            repack: true,
            huge_pages: true,
            token_lanes: true,
            half_act: true,
        }
    }
}

impl CpuOptions {
    /// The defaults with the environment's overrides (none without `std`).
    pub fn from_env() -> CpuOptions {
        #[cfg(feature = "std")]
        {
            let on = |v: &str| !matches!(std::env::var(v).as_deref(), Ok("0") | Ok("off"));
            CpuOptions {
                repack: on("ANTIGRAVITY_CPU_REPACK"),
                huge_pages: on("ANTIGRAVITY_CPU_HUGEPAGES"),
                token_lanes: on("ANTIGRAVITY_CPU_TOKEN_LANES"),
                half_act: on("ANTIGRAVITY_CPU_HALF_ACT"),
            }
        }
        #[cfg(not(feature = "std"))]
        {
            CpuOptions::default()
        }
    }
}

/// The default thread count: `std::thread::available_parallelism` (1 without `std` or
/// when it is unknown).
pub fn default_threads() -> usize {
    #[cfg(feature = "std")]
    {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
    #[cfg(not(feature = "std"))]
    {
        1
    }
}

/// How a matmul's `[n_tok, n_out]` output is cut into tasks. Decode (one token): about
/// four column tiles per thread (multiples of 16 output rows, so small matvecs are not
/// shredded; one tile with one thread). Prefill: tokens in tiles of 16, and column tiles
/// capped so a tile's weights (≈ 128 KiB, `w_row_bytes` per output) stay cache-resident
/// while the tile's tokens run over them — each weight byte then comes from memory
/// once per 16 tokens, not once per token.
fn matmul_grid(n_out: usize, n_tok: usize, threads: usize, w_row_bytes: usize) -> Grid {
    let mut col_tile = if threads <= 1 {
        n_out
    } else {
        n_out.div_ceil(4 * threads).next_multiple_of(16)
    };
    if n_tok > 1 {
        let fit = (128 * 1024 / w_row_bytes.max(1)) / 16 * 16;
        col_tile = col_tile.min(fit.max(16));
    }
    Grid {
        rows: n_tok,
        cols: n_out,
        row_tile: n_tok.clamp(1, 16),
        col_tile: col_tile.max(1),
    }
}

/// Many weight rows against one activation row (see `Kernels::gemv_q4_0_q8_0`).
type RowsFn<'a, W, X> = dyn Fn(&[W], &[X], &mut [f32]) + Sync + 'a;

/// `y[t, o] = Σ w_row(o) · x_row(t)` ([n_tok, n_out] row-major), tiled over the pool.
/// Rows are `nb` units (blocks or elements). `gemv(w_rows, x_row, y_part)` computes one
/// token's outputs for a range of weight rows (a `Kernels::gemv_*` entry, or the row loop
/// over a `vec_dot`); within a tile each token runs over the tile's weight rows, which
/// stay cache-resident across the tile's tokens.
#[allow(clippy::too_many_arguments)]
fn matmul_par<W: Sync, X: Sync>(
    pool: &mut ThreadPool,
    w: &[W],
    x: &[X],
    y: &mut [f32],
    n_out: usize,
    n_tok: usize,
    nb: usize,
    gemv: &RowsFn<'_, W, X>,
) {
    let grid = matmul_grid(n_out, n_tok, pool.threads(), nb * core::mem::size_of::<W>());
    pool.run_tiles(y, grid, &mut [0u8; 0], 0, &|mut tile, _| {
        let cols = tile.cols();
        let wt = &w[cols.start * nb..cols.end * nb];
        for t in tile.rows() {
            gemv(wt, &x[t * nb..(t + 1) * nb], tile.row(t));
        }
    });
}

/// Output columns per `gemm` call inside a tile: bounds the stack buffer the kernel
/// writes (`[tokens ≤ 16, GEMM_COLS]`) before it is copied into the tile's rows.
const GEMM_COLS: usize = 64;

/// Smallest batch that takes the GEMM path; decode (one token) stays on `gemv`.
const GEMM_MIN_TOK: usize = 2;

/// As `matmul_par`, but each tile runs a `Kernels::gemm_*` entry over its tokens, so a
/// weight block is decoded once per group of tokens instead of once per token.
#[allow(clippy::too_many_arguments)]
fn matmul_gemm<W: Sync, X: Sync>(
    pool: &mut ThreadPool,
    w: &[W],
    x: &[X],
    y: &mut [f32],
    n_out: usize,
    n_tok: usize,
    nb: usize,
    gemm: fn(&[W], &[X], usize, &mut [f32]),
) {
    let grid = matmul_grid(n_out, n_tok, pool.threads(), nb * core::mem::size_of::<W>());
    debug_assert!(grid.row_tile <= 16);
    pool.run_tiles(y, grid, &mut [0u8; 0], 0, &|mut tile, _| {
        let (cols, toks) = (tile.cols(), tile.rows());
        let xt = &x[toks.start * nb..toks.end * nb];
        let mut buf = [0f32; 16 * GEMM_COLS]; // (tokens, cols) of one call
        let mut c0 = cols.start;
        while c0 < cols.end {
            let c1 = (c0 + GEMM_COLS).min(cols.end);
            let n = c1 - c0;
            let out = &mut buf[..toks.len() * n];
            gemm(&w[c0 * nb..c1 * nb], xt, nb, out);
            for (i, t) in toks.clone().enumerate() {
                tile.row(t)[c0 - cols.start..c1 - cols.start].copy_from_slice(&out[i * n..(i + 1) * n]);
            }
            c0 = c1;
        }
    });
}

/// `matmul` over an x8 weight (`w`: `n_out / 8` groups of `nb` blocks): tiles of
/// whole groups, each running the `Kernels::gemm_*x8` entry over its tokens. Decode
/// (one token) writes the tile's row directly; prefill goes through a stack buffer of
/// `GEMM_COLS` outputs at a time, as `matmul_gemm`.
#[allow(clippy::too_many_arguments)]
fn matmul_x8<W: Sync, X: Sync>(
    pool: &mut ThreadPool,
    w: &[W],
    x: &[X],
    y: &mut [f32],
    n_out: usize,
    n_tok: usize,
    nb: usize,
    gemm: fn(&[W], &[X], usize, &mut [f32]),
) {
    use repack::ROWS_X8;
    let grid = matmul_grid(n_out, n_tok, pool.threads(), nb * core::mem::size_of::<W>() / ROWS_X8);
    debug_assert!(grid.col_tile.is_multiple_of(ROWS_X8) || grid.col_tile >= n_out);
    pool.run_tiles(y, grid, &mut [0u8; 0], 0, &|mut tile, _| {
        let (cols, toks) = (tile.cols(), tile.rows());
        let wg = |c0: usize, c1: usize| &w[c0 / ROWS_X8 * nb..c1 / ROWS_X8 * nb];
        if toks.len() == 1 {
            gemm(
                wg(cols.start, cols.end),
                &x[toks.start * nb..toks.end * nb],
                nb,
                tile.row(toks.start),
            );
            return;
        }
        let xt = &x[toks.start * nb..toks.end * nb];
        let mut buf = [0f32; 16 * GEMM_COLS]; // (tokens, cols) of one call
        let mut c0 = cols.start;
        while c0 < cols.end {
            let c1 = (c0 + GEMM_COLS).min(cols.end);
            let n = c1 - c0;
            let out = &mut buf[..toks.len() * n];
            gemm(wg(c0, c1), xt, nb, out);
            for (i, t) in toks.clone().enumerate() {
                tile.row(t)[c0 - cols.start..c1 - cols.start].copy_from_slice(&out[i * n..(i + 1) * n]);
            }
            c0 = c1;
        }
    });
}

/// Smallest batch that takes the token-lane K-quant kernels (`Kernels::gemm_q5_kx8_t16`);
/// within it, a tile of fewer than `T16_MIN_TILE` tokens (the batch's tail) runs the x8
/// kernel instead of sixteen lanes mostly empty.
const T16_MIN_TOK: usize = 16;
const T16_MIN_TILE: usize = 8;

/// `matmul_x8` for the token-lane kernels: `x16` is `x` interleaved by
/// `repack::q8_k_x16` (the grid's token tiles are up to 64 tokens, aligned to its
/// sixteen-token groups); tiles of fewer than `T16_MIN_TILE` tokens run `gemm8` on `x`.
#[allow(clippy::too_many_arguments)]
fn matmul_x16<W: Sync>(
    pool: &mut ThreadPool,
    w: &[W],
    x: &[BlockQ8_K],
    x16: &[BlockQ8_Kx16],
    y: &mut [f32],
    n_out: usize,
    n_tok: usize,
    nb: usize,
    gemm8: fn(&[W], &[BlockQ8_K], usize, &mut [f32]),
    gemm16: GemmKx16<W>,
) {
    use repack::{ROWS_X8, TOKS_X16};
    let mut grid = matmul_grid(n_out, n_tok, pool.threads(), nb * core::mem::size_of::<W>() / ROWS_X8);
    // Up to four sixteen-token groups per call: a group of rows' weights is unpacked
    // once for all of them.
    grid.row_tile = n_tok.min(T16_TILE_TOKS);
    const T16_TILE_TOKS: usize = 4 * TOKS_X16;
    pool.run_tiles(y, grid, &mut [0u8; 0], 0, &|mut tile, _| {
        let (cols, toks) = (tile.cols(), tile.rows());
        let wg = |c0: usize, c1: usize| &w[c0 / ROWS_X8 * nb..c1 / ROWS_X8 * nb];
        let mut buf = [0f32; T16_TILE_TOKS * GEMM_COLS]; // (tokens, cols) of one call
        let mut c0 = cols.start;
        while c0 < cols.end {
            let c1 = (c0 + GEMM_COLS).min(cols.end);
            let n = c1 - c0;
            let out = &mut buf[..toks.len() * n];
            if toks.len() < T16_MIN_TILE {
                gemm8(wg(c0, c1), &x[toks.start * nb..toks.end * nb], nb, out);
            } else {
                let ng = toks.len().div_ceil(TOKS_X16);
                gemm16(wg(c0, c1), &x16[toks.start / TOKS_X16 * nb..][..ng * nb], nb, out);
            }
            for (i, t) in toks.clone().enumerate() {
                tile.row(t)[c0 - cols.start..c1 - cols.start].copy_from_slice(&out[i * n..(i + 1) * n]);
            }
            c0 = c1;
        }
    });
}

/// One activation row rounded to bf16 (nearest-even, `half::bf16::from_f32`): the
/// "quantizer" of `Kernels::gemm_bf16_bf16`, run per row by `quantize_rows` (`qk` 1).
///
/// Branch-free so LLVM vectorizes it (decode rounds every matmul input too, one row at
/// a time). Bit-identical with `bf16::from_f32`: nearest-even by adding `0x7fff` plus
/// the kept lsb below the cut, NaNs kept quiet as `half` keeps them
/// (`round_row_bf16_matches_half`).
fn round_row_bf16(x: &[f32], y: &mut [bf16]) {
    for (o, &v) in y.iter_mut().zip(x) {
        let b = v.to_bits();
        let rne = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
        let r = if v.is_nan() { (b >> 16) | 0x40 } else { rne };
        *o = bf16::from_bits(r as u16);
    }
}

/// Quantizes the `n_tok` rows of `xs` (`n_in` floats each) into `xq` (`n_in / qk` blocks each);
/// rows are split over the pool when there are several.
fn quantize_rows<B: Send>(
    pool: &mut ThreadPool,
    xs: &[f32],
    xq: &mut [B],
    n_in: usize,
    qk: usize,
    q: fn(&[f32], &mut [B]),
) {
    let nb = n_in / qk; // blocks of `qk` elements per row
    let n_tok = xq.len() / nb.max(1);
    let grid = Grid {
        rows: n_tok,
        cols: nb,
        row_tile: n_tok.div_ceil(pool.threads()).max(1),
        col_tile: nb.max(1),
    };
    pool.run_tiles(xq, grid, &mut [0u8; 0], 0, &|mut tile, _| {
        for t in tile.rows() {
            q(&xs[t * n_in..(t + 1) * n_in], tile.row(t));
        }
    });
}

/// Quantizes the `n_tok` rows of `xs` to Q8_1 and converts them to the x8 kernels'
/// activation blocks `qa` (`n_in / 32` each) in one pass over the pool: each task
/// quantizes a row into its own chunk of `scratch` (`n_in / 32` Q8_1 blocks) and converts
/// it at once, so the conversion is split over the threads as well (it ran on the caller
/// alone, the other threads waiting).
fn quantize_act_rows(
    pool: &mut ThreadPool,
    xs: &[f32],
    scratch: &mut [BlockQ8_1],
    qa: &mut [BlockQ8Act],
    n_in: usize,
    q: fn(&[f32], &mut [BlockQ8_1]),
) {
    let nb = n_in / 32;
    let n_tok = qa.len() / nb.max(1);
    if n_tok == 0 || nb == 0 {
        return;
    }
    // One tile per thread at most, so `scratch` needs `min(threads, n_tok)` rows.
    let grid = Grid {
        rows: n_tok,
        cols: nb,
        row_tile: n_tok.div_ceil(pool.threads()).max(1),
        col_tile: nb,
    };
    pool.run_tiles(qa, grid, scratch, nb, &|mut tile, sc| {
        for t in tile.rows() {
            q(&xs[t * n_in..(t + 1) * n_in], sc);
            repack::act_from_q8_1(sc, tile.row(t));
        }
    });
}

/// Runs `f(r, row_r_of_out)` for every row of `out` (`rows × row_len`), the rows split
/// over the pool when there are several (prefill), on the caller alone for one (decode:
/// waking the workers would cost more than the row). Each row is computed exactly as
/// the serial loop computes it, so results do not depend on the thread count.
fn par_rows<T: Send>(pool: &mut ThreadPool, out: &mut [T], row_len: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    let rows = out.len() / row_len.max(1);
    if rows <= 1 || pool.threads() == 1 {
        for (r, o) in out.chunks_exact_mut(row_len.max(1)).enumerate() {
            f(r, o);
        }
        return;
    }
    let grid = Grid {
        rows,
        cols: row_len,
        row_tile: rows.div_ceil(pool.threads()),
        col_tile: row_len,
    };
    pool.run_tiles(out, grid, &mut [0u8; 0], 0, &|mut tile, _| {
        for r in tile.rows() {
            f(r, tile.row(r));
        }
    });
}

impl Default for CpuBackend {
    fn default() -> Self {
        CpuBackend::new()
    }
}

fn view<'a>(t: &TensorRef<'a, CpuBackend>) -> &'a [u8] {
    let n = t.nbytes();
    &t.buf.bytes()[t.offset..t.offset + n]
}

fn view_mut<'a>(t: TensorMut<'a, CpuBackend>) -> Result<&'a mut [u8]> {
    let n = t.nbytes();
    let off = t.offset;
    let b = t.buf.bytes_mut().ok_or_else(|| Error::read_only("cpu output tensor"))?;
    Ok(&mut b[off..off + n])
}

fn f32s(b: &[u8]) -> &[f32] {
    bytemuck::cast_slice(b)
}
fn f32s_mut(b: &mut [u8]) -> &mut [f32] {
    bytemuck::cast_slice_mut(b)
}

/// Writes the f32 values `src` into `dst` bytes of cache dtype `dt` (f32 copied, f16
/// rounded, Q8_0 quantized 32 at a time by the table's quantizer); the caller has
/// checked `dst` holds exactly `src.len()` values of `dt`.
fn store_converted(k: Kernels, src: &[f32], dst: &mut [u8], dt: DType) {
    match dt {
        DType::F16 => {
            let d: &mut [f16] = bytemuck::cast_slice_mut(dst);
            for (o, &v) in d.iter_mut().zip(src) {
                *o = f16::from_f32(v);
            }
        }
        DType::Q8_0 => (k.quantize_row_q8_0)(src, bytemuck::cast_slice_mut(dst)),
        _ => f32s_mut(dst).copy_from_slice(src),
    }
}

fn grow<T: Clone + Zeroable>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::zeroed());
    }
}

impl CpuBackend {
    /// Keeps a copied weight's file region for `finish_import` (nothing without `std`,
    /// where no pages are released either).
    fn remember_released(&self, region: &HostRegion) {
        #[cfg(feature = "std")]
        if let Ok(mut r) = self.released.lock() {
            r.push(region.clone());
        }
        #[cfg(not(feature = "std"))]
        let _ = region;
    }

    /// `ys = xs · wᵀ` for the `xs.len() / n_in` activation rows in `xs` (`matmul`'s body).
    fn matmul_f32(&mut self, w: TensorRef<'_, Self>, xs: &[f32], ys: &mut [f32]) -> Result<()> {
        let (n_out, n_in) = (w.shape.dims()[0], w.shape.dims()[1]);
        let n_tok = xs.len() / n_in.max(1);
        let wb = view(&w);
        let nb = n_in / 32;
        let k = self.k;
        let pool = &mut self.pool;
        const UNRESERVED: &str = "matmul: scratch not reserved for this batch (call reserve)";
        if w.buf.x8 {
            if w.offset != 0 {
                return Err(Error::invalid(
                    "matmul: a repacked (x8) weight is used whole, not at an offset",
                ));
            }
            if matches!(w.dtype, DType::Q4_K | DType::Q5_K | DType::Q6_K) {
                // Q8_K activations (super-blocks of 256), as the plain K-quant path.
                let nbk = n_in / QK_K;
                if self.q8_k.len() < n_tok * nbk {
                    return Err(Error::invalid(UNRESERVED));
                }
                let xq = &mut self.q8_k[..n_tok * nbk];
                quantize_rows(pool, xs, xq, n_in, QK_K, k.quantize_row_q8_k);
                let xq = &*xq;
                // Sixteen-token batches on the token-lane kernels where the table has
                // them (their activations interleaved once here).
                let n16 = n_tok.div_ceil(repack::TOKS_X16) * nbk;
                let t16 = n_tok >= T16_MIN_TOK && self.q8_k16.len() >= n16;
                let x16 = &mut self.q8_k16[..if t16 { n16 } else { 0 }];
                if t16 {
                    repack::q8_k_x16(xq, nbk, x16);
                }
                let x16 = &*x16;
                match w.dtype {
                    DType::Q4_K => {
                        let wq = bytemuck::cast_slice::<_, BlockQ4_Kx8>(wb);
                        match k.gemm_q4_kx8_t16 {
                            Some(g16) if t16 => {
                                matmul_x16(pool, wq, xq, x16, ys, n_out, n_tok, nbk, k.gemm_q4_kx8, g16)
                            }
                            _ => matmul_x8(pool, wq, xq, ys, n_out, n_tok, nbk, k.gemm_q4_kx8),
                        }
                    }
                    DType::Q5_K => {
                        let wq = bytemuck::cast_slice::<_, BlockQ5_Kx8>(wb);
                        match k.gemm_q5_kx8_t16 {
                            Some(g16) if t16 => {
                                matmul_x16(pool, wq, xq, x16, ys, n_out, n_tok, nbk, k.gemm_q5_kx8, g16)
                            }
                            _ => matmul_x8(pool, wq, xq, ys, n_out, n_tok, nbk, k.gemm_q5_kx8),
                        }
                    }
                    _ => {
                        let wq = bytemuck::cast_slice::<_, BlockQ6_Kx8>(wb);
                        match k.gemm_q6_kx8_t16 {
                            Some(g16) if t16 => {
                                matmul_x16(pool, wq, xq, x16, ys, n_out, n_tok, nbk, k.gemm_q6_kx8, g16)
                            }
                            _ => matmul_x8(pool, wq, xq, ys, n_out, n_tok, nbk, k.gemm_q6_kx8),
                        }
                    }
                }
                return Ok(());
            }
            if self.q8_1.len() < n_tok * nb || self.qa.len() < n_tok * nb {
                return Err(Error::invalid(UNRESERVED));
            }
            let (xq, qa) = (&mut self.q8_1[..n_tok * nb], &mut self.qa[..n_tok * nb]);
            quantize_act_rows(pool, xs, xq, qa, n_in, k.quantize_row_q8_1);
            let qa = &*qa;
            match w.dtype {
                DType::Q4_0 => matmul_x8(
                    pool,
                    bytemuck::cast_slice::<_, BlockQ4_0x8>(wb),
                    qa,
                    ys,
                    n_out,
                    n_tok,
                    nb,
                    k.gemm_q4_0x8,
                ),
                DType::Q4_1 => matmul_x8(
                    pool,
                    bytemuck::cast_slice::<_, BlockQ4_1x8>(wb),
                    qa,
                    ys,
                    n_out,
                    n_tok,
                    nb,
                    k.gemm_q4_1x8,
                ),
                DType::Q8_0 => matmul_x8(
                    pool,
                    bytemuck::cast_slice::<_, BlockQ8_0x8>(wb),
                    qa,
                    ys,
                    n_out,
                    n_tok,
                    nb,
                    k.gemm_q8_0x8,
                ),
                DType::Q5_0 => matmul_x8(
                    pool,
                    bytemuck::cast_slice::<_, BlockQ5_0x8>(wb),
                    qa,
                    ys,
                    n_out,
                    n_tok,
                    nb,
                    k.gemm_q5_0x8,
                ),
                DType::Q5_1 => matmul_x8(
                    pool,
                    bytemuck::cast_slice::<_, BlockQ5_1x8>(wb),
                    qa,
                    ys,
                    n_out,
                    n_tok,
                    nb,
                    k.gemm_q5_1x8,
                ),
                other => return Err(Error::dtype("matmul", "repacked weight", other)),
            }
            return Ok(());
        }
        match w.dtype {
            DType::Q4_0 | DType::Q8_0 => {
                if self.q8_0.len() < n_tok * nb {
                    return Err(Error::invalid(UNRESERVED));
                }
                let xq = &mut self.q8_0[..n_tok * nb];
                quantize_rows(pool, xs, xq, n_in, 32, k.quantize_row_q8_0);
                if w.dtype == DType::Q4_0 {
                    let wq: &[BlockQ4_0] = bytemuck::cast_slice(wb);
                    if n_tok >= GEMM_MIN_TOK {
                        matmul_gemm(pool, wq, xq, ys, n_out, n_tok, nb, k.gemm_q4_0_q8_0);
                    } else {
                        matmul_par(pool, wq, xq, ys, n_out, n_tok, nb, &k.gemv_q4_0_q8_0);
                    }
                } else {
                    let wq: &[BlockQ8_0] = bytemuck::cast_slice(wb);
                    matmul_par(pool, wq, xq, ys, n_out, n_tok, nb, &k.gemv_q8_0_q8_0);
                }
            }
            DType::Q4_1 => {
                if self.q8_1.len() < n_tok * nb {
                    return Err(Error::invalid(UNRESERVED));
                }
                let xq = &mut self.q8_1[..n_tok * nb];
                quantize_rows(pool, xs, xq, n_in, 32, k.quantize_row_q8_1);
                let wq: &[BlockQ4_1] = bytemuck::cast_slice(wb);
                matmul_par(pool, wq, xq, ys, n_out, n_tok, nb, &k.gemv_q4_1_q8_1);
            }
            DType::F32 => matmul_par(pool, f32s(wb), xs, ys, n_out, n_tok, n_in, &|w, x, y| {
                scalar::gemv(w, x, y, k.vec_dot_f32)
            }),
            DType::F16 => {
                let wf: &[f16] = bytemuck::cast_slice(wb);
                if let Some(act) = k.f16_act.filter(|_| n_tok == 1 && self.f16_x.len() >= xs.len()) {
                    let xh = &mut self.f16_x[..xs.len()];
                    // A row past f16's range keeps its f32 activations.
                    if (act.round)(xs, xh) {
                        matmul_par(pool, wf, &*xh, ys, n_out, n_tok, n_in, &|w, x, y| {
                            scalar::gemv(w, x, y, act.dot)
                        });
                        return Ok(());
                    }
                }
                match k.gemm_f16_f32 {
                    Some(gemm) if n_tok >= GEMM_MIN_TOK => matmul_gemm(pool, wf, xs, ys, n_out, n_tok, n_in, gemm),
                    _ => matmul_par(pool, wf, xs, ys, n_out, n_tok, n_in, &|w, x, y| {
                        scalar::gemv(w, x, y, k.vec_dot_f16_f32)
                    }),
                }
            }
            DType::BF16 if n_tok >= GEMM_MIN_TOK && k.gemm_bf16_bf16.is_some() && self.bf16_x.len() >= xs.len() => {
                let wf: &[bf16] = bytemuck::cast_slice(wb);
                let xb = &mut self.bf16_x[..xs.len()];
                quantize_rows(pool, xs, xb, n_in, 1, round_row_bf16);
                if let Some(gemm) = k.gemm_bf16_bf16 {
                    matmul_gemm(pool, wf, &*xb, ys, n_out, n_tok, n_in, gemm);
                }
            }
            DType::BF16 if n_tok == 1 && k.vec_dot_bf16_bf16.is_some() && self.bf16_x.len() >= xs.len() => {
                let wf: &[bf16] = bytemuck::cast_slice(wb);
                let xb = &mut self.bf16_x[..xs.len()];
                round_row_bf16(xs, xb);
                if let Some(dot) = k.vec_dot_bf16_bf16 {
                    matmul_par(pool, wf, &*xb, ys, n_out, n_tok, n_in, &|w, x, y| {
                        scalar::gemv(w, x, y, dot)
                    });
                }
            }
            DType::BF16 => {
                let wf: &[bf16] = bytemuck::cast_slice(wb);
                match k.gemm_bf16_f32 {
                    Some(gemm) if n_tok >= GEMM_MIN_TOK => matmul_gemm(pool, wf, xs, ys, n_out, n_tok, n_in, gemm),
                    _ => matmul_par(pool, wf, xs, ys, n_out, n_tok, n_in, &|w, x, y| {
                        scalar::gemv(w, x, y, k.vec_dot_bf16_f32)
                    }),
                }
            }
            DType::Q5_0 => {
                if self.q8_0.len() < n_tok * nb {
                    return Err(Error::invalid(UNRESERVED));
                }
                let xq = &mut self.q8_0[..n_tok * nb];
                quantize_rows(pool, xs, xq, n_in, 32, k.quantize_row_q8_0);
                let wq: &[BlockQ5_0] = bytemuck::cast_slice(wb);
                matmul_par(pool, wq, xq, ys, n_out, n_tok, nb, &|w, x, y| {
                    scalar::gemv(w, x, y, k.vec_dot_q5_0_q8_0)
                });
            }
            DType::Q5_1 => {
                if self.q8_1.len() < n_tok * nb {
                    return Err(Error::invalid(UNRESERVED));
                }
                let xq = &mut self.q8_1[..n_tok * nb];
                quantize_rows(pool, xs, xq, n_in, 32, k.quantize_row_q8_1);
                let wq: &[BlockQ5_1] = bytemuck::cast_slice(wb);
                matmul_par(pool, wq, xq, ys, n_out, n_tok, nb, &|w, x, y| {
                    scalar::gemv(w, x, y, k.vec_dot_q5_1_q8_1)
                });
            }
            DType::Q4_K | DType::Q5_K | DType::Q6_K => {
                let nbk = n_in / QK_K;
                if self.q8_k.len() < n_tok * nbk {
                    return Err(Error::invalid(UNRESERVED));
                }
                let xq = &mut self.q8_k[..n_tok * nbk];
                quantize_rows(pool, xs, xq, n_in, QK_K, k.quantize_row_q8_k);
                match w.dtype {
                    DType::Q4_K => matmul_par(
                        pool,
                        bytemuck::cast_slice::<_, BlockQ4_K>(wb),
                        xq,
                        ys,
                        n_out,
                        n_tok,
                        nbk,
                        &|w, x, y| scalar::gemv(w, x, y, k.vec_dot_q4_k_q8_k),
                    ),
                    DType::Q5_K => matmul_par(
                        pool,
                        bytemuck::cast_slice::<_, BlockQ5_K>(wb),
                        xq,
                        ys,
                        n_out,
                        n_tok,
                        nbk,
                        &|w, x, y| scalar::gemv(w, x, y, k.vec_dot_q5_k_q8_k),
                    ),
                    _ => matmul_par(
                        pool,
                        bytemuck::cast_slice::<_, BlockQ6_K>(wb),
                        xq,
                        ys,
                        n_out,
                        n_tok,
                        nbk,
                        &|w, x, y| scalar::gemv(w, x, y, k.vec_dot_q6_k_q8_k),
                    ),
                }
            }
            DType::Q8_1 | DType::Q8_K => return Err(Error::dtype("matmul", "weight", w.dtype)),
        }
        Ok(())
    }
}

impl CpuBackend {
    /// [`Backend::attention`] and [`Backend::attention_mass`] (with `mass`).
    fn attention_with(
        &mut self,
        q: TensorRef<'_, Self>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
        p: AttnParams,
        out: TensorMut<'_, Self>,
        mass: Option<&mut [f32]>,
    ) -> Result<()> {
        let n_tok = q.shape.dims()[0];
        let ctx = p.n_past + n_tok;
        if self.scores.len() < ctx {
            return Err(Error::invalid(
                "attention: scratch not reserved for this context (call reserve)",
            ));
        }
        let qs = f32s(view(&q));
        let os = f32s_mut(view_mut(out)?);
        let kern = self.k;
        match k.dtype {
            DType::Q8_0 => {
                let (ks, vs): (&[BlockQ8_0], &[BlockQ8_0]) =
                    (bytemuck::cast_slice(view(&k)), bytemuck::cast_slice(view(&v)));
                attention_on(
                    &mut self.pool,
                    &mut self.scores,
                    qs,
                    ks,
                    vs,
                    os,
                    p,
                    n_tok,
                    kern.attn_scores_q8_0,
                    kern.attn_values_q8_0,
                    None,
                    kern.softmax_f32,
                    mass,
                );
            }
            DType::F16 => {
                let (ks, vs): (&[f16], &[f16]) = (bytemuck::cast_slice(view(&k)), bytemuck::cast_slice(view(&v)));
                attention_on(
                    &mut self.pool,
                    &mut self.scores,
                    qs,
                    ks,
                    vs,
                    os,
                    p,
                    n_tok,
                    kern.attn_scores_f16,
                    kern.attn_values_f16,
                    kern.attn_group_f16,
                    kern.softmax_f32,
                    mass,
                );
            }
            _ => {
                let (ks, vs) = (f32s(view(&k)), f32s(view(&v)));
                attention_on(
                    &mut self.pool,
                    &mut self.scores,
                    qs,
                    ks,
                    vs,
                    os,
                    p,
                    n_tok,
                    kern.attn_scores,
                    kern.attn_values,
                    kern.attn_group_f32,
                    kern.softmax_f32,
                    mass,
                );
            }
        }
        Ok(())
    }
}

/// Slots a decode split covers at least (below that, splitting costs more in merging
/// and task handoffs than it balances).
const MIN_SPLIT_SLOTS: usize = 256;

/// Attention over a cache of `T` (f32, f16 or Q8_0 blocks).
///
/// Without `mass`: one pool task per KV head (a column tile of `out`, `[n_tok, n_head ·
/// hd]`, covering its GQA group's heads) and block of query tokens, which computes the
/// whole group's scores, softmax and value sums for each token in one pass over the
/// slots (`group`: the table's grouped kernels, which load each key and value row once
/// for the group; `None`: the per-head kernels looped over the group). Its scratch is
/// `group · ctx` scores. A decode step (one token) with grouped kernels instead reads
/// the cache in address order, every KV head's rows of a slot block together, and on
/// several threads cuts the slots into pieces merged afterwards ([`attention_decode`]).
/// The bits are the per-head reference's, except a decode step's cut into pieces.
///
/// With `mass` (eviction policies that score slots): one task per query head, its own
/// row of scratch, and each head's softmax weights summed per slot in the second half
/// of that row (`2 · ctx` floats a task); the heads' sums are added into `mass`
/// afterwards, in head order (no two tasks write one float). Scratch reserved without
/// `n_head` gives the serial reference.
#[allow(clippy::too_many_arguments)]
fn attention_on<T: scalar::KvUnit>(
    pool: &mut ThreadPool,
    scores: &mut [f32],
    qs: &[f32],
    ks: &[T],
    vs: &[T],
    os: &mut [f32],
    p: AttnParams,
    n_tok: usize,
    scores_fn: scalar::ScoresFn<T>,
    values_fn: scalar::ValuesFn<T>,
    group: Option<AttnGroup<T>>,
    softmax_fn: fn(&mut [f32]) -> (f32, f32),
    mass: Option<&mut [f32]>,
) {
    let ctx = p.n_past + n_tok;
    let per_task = if mass.is_some() { 2 * ctx } else { ctx };
    if scores.len() < per_task * p.n_head {
        match mass {
            None => scalar::attention(qs, ks, vs, os, scores, p, n_tok, scores_fn, values_fn),
            Some(m) => {
                let hd = p.head_dim;
                for t in 0..n_tok {
                    for h in 0..p.n_head {
                        let oh = &mut os[(t * p.n_head + h) * hd..][..hd];
                        scalar::attend_one(qs, ks, vs, p, t, h, scores, oh, scores_fn, values_fn, softmax_fn);
                        for (m, &w) in m.iter_mut().zip(&scores[..p.n_past + t + 1]) {
                            *m += w;
                        }
                    }
                }
            }
        }
        return;
    }
    let Some(mass) = mass else {
        let unit = GroupUnit {
            qs,
            ks,
            vs,
            p,
            scores_fn,
            values_fn,
            group,
            softmax_fn,
        };
        let threads = pool.threads();
        if n_tok == 1 {
            if let Some(gr) = group {
                let chunks = if threads > 1 {
                    (2 * threads).min(ctx / MIN_SPLIT_SLOTS).max(1)
                } else {
                    1
                };
                if attention_decode(pool, scores, os, &unit, gr, chunks) {
                    return;
                }
            }
        }
        let g = p.n_head / p.n_kv_head;
        // Token blocks: enough tasks to balance the causal rows' unequal lengths over
        // the threads, as many as the scratch holds (one block always fits: checked above).
        let fit = scores.len() / (p.n_head * ctx);
        let blocks = if threads > 1 {
            (4 * threads).div_ceil(p.n_kv_head).min(fit).min(n_tok).max(1)
        } else {
            1
        };
        let grid = Grid {
            rows: n_tok,
            cols: p.n_head * p.head_dim,
            row_tile: n_tok.div_ceil(blocks).max(1),
            col_tile: g * p.head_dim,
        };
        pool.run_tiles(os, grid, scores, g * ctx, &|mut tile, sc| {
            let kvh = tile.cols().start / (g * p.head_dim);
            for t in tile.rows() {
                unit.run(t, kvh, 0..p.n_past + t + 1, sc, tile.row(t));
            }
        });
        return;
    };
    let grid = Grid {
        rows: n_tok,
        cols: p.n_head * p.head_dim,
        row_tile: n_tok.max(1),
        col_tile: p.head_dim.max(1),
    };
    pool.run_tiles(os, grid, scores, per_task, &|mut tile, sc| {
        let h = tile.cols().start / p.head_dim;
        let (sc, acc) = sc.split_at_mut(ctx);
        acc.fill(0.0);
        for t in tile.rows() {
            scalar::attend_one(qs, ks, vs, p, t, h, sc, tile.row(t), scores_fn, values_fn, softmax_fn);
            for (a, &w) in acc.iter_mut().zip(&sc[..p.n_past + t + 1]) {
                *a += w;
            }
        }
    });
    for h in 0..p.n_head {
        let acc = &scores[h * per_task + ctx..][..ctx];
        for (m, &a) in mass.iter_mut().zip(acc) {
            *m += a;
        }
    }
}

/// What one grouped attention unit reads: the query rows, the cache and the kernels.
struct GroupUnit<'a, T> {
    qs: &'a [f32],
    ks: &'a [T],
    vs: &'a [T],
    p: AttnParams,
    scores_fn: scalar::ScoresFn<T>,
    values_fn: scalar::ValuesFn<T>,
    group: Option<AttnGroup<T>>,
    softmax_fn: fn(&mut [f32]) -> (f32, f32),
}

impl<T: scalar::KvUnit> GroupUnit<'_, T> {
    /// The GQA group of KV head `kvh` for query token `t` over cache slots `slots`:
    /// scores into `sc` (`group` rows of `slots.len()`), each row's softmax, the value
    /// sums into `o` (`group · hd`).
    fn run(&self, t: usize, kvh: usize, slots: core::ops::Range<usize>, sc: &mut [f32], o: &mut [f32]) {
        let p = self.p;
        let (hd, g) = (p.head_dim, p.n_head / p.n_kv_head);
        let n = slots.len();
        let sc = &mut sc[..g * n];
        let q = &self.qs[(t * p.n_head + kvh * g) * hd..][..g * hd];
        // Offsets and strides in cache units (elements, or Q8_0 blocks: hd is whole blocks).
        let stride = p.n_kv_head * hd / T::ELEMS;
        let off = slots.start * stride + kvh * hd / T::ELEMS;
        let (k, v) = (&self.ks[off..], &self.vs[off..]);
        match self.group {
            Some(gr) => (gr.scores)(q, g, k, stride, p.scale, RowsMut { data: sc, n, ld: n }),
            None => {
                for (qh, row) in q.chunks_exact(hd).zip(sc.chunks_exact_mut(n)) {
                    (self.scores_fn)(qh, k, stride, p.scale, row);
                }
            }
        }
        for row in sc.chunks_exact_mut(n) {
            (self.softmax_fn)(row);
        }
        match self.group {
            Some(gr) => {
                o.fill(0.0);
                (gr.values)(Rows { data: sc, n, ld: n }, g, v, stride, o)
            }
            None => {
                for (row, oh) in sc.chunks_exact(n).zip(o.chunks_exact_mut(hd)) {
                    (self.values_fn)(row, v, stride, oh);
                }
            }
        }
    }
}

impl<T: scalar::KvUnit> GroupUnit<'_, T> {
    /// Every head of the decode token (`t = 0`) over cache slots `slots`, block by block
    /// (see [`attention_decode`]): scores into `sc` (a row of `slots.len()` a head), the
    /// normalized value sums into `o` (`n_head · hd`), each head's softmax (max, sum)
    /// into `stats` unless it is empty.
    fn decode_piece(
        &self,
        gr: AttnGroup<T>,
        slots: core::ops::Range<usize>,
        sc: &mut [f32],
        o: &mut [f32],
        stats: &mut [f32],
    ) {
        let p = self.p;
        let (hd, g) = (p.head_dim, p.n_head / p.n_kv_head);
        let n = slots.len();
        let sc = &mut sc[..p.n_head * n];
        let stride = p.n_kv_head * hd / T::ELEMS;
        let at = |s: usize, kvh: usize| (slots.start + s) * stride + kvh * hd / T::ELEMS;
        for b0 in (0..n).step_by(DECODE_BLOCK) {
            let nb = DECODE_BLOCK.min(n - b0);
            let share = (DECODE_BLOCK * stride).div_ceil(p.n_kv_head);
            for kvh in 0..p.n_kv_head {
                prefetch_region(self.ks, at(b0 + 2 * DECODE_BLOCK, 0) + kvh * share, share);
                let q = &self.qs[kvh * g * hd..][..g * hd];
                let out = RowsMut {
                    data: &mut sc[kvh * g * n + b0..],
                    n: nb,
                    ld: n,
                };
                (gr.scores)(q, g, &self.ks[at(b0, kvh)..], stride, p.scale, out);
            }
        }
        for (h, row) in sc.chunks_exact_mut(n).enumerate() {
            let (max, sum) = (self.softmax_fn)(row);
            if let Some(st) = stats.get_mut(2 * h..2 * h + 2) {
                st.copy_from_slice(&[max, sum]);
            }
        }
        o.fill(0.0);
        for b0 in (0..n).step_by(DECODE_BLOCK) {
            let nb = DECODE_BLOCK.min(n - b0);
            let share = (DECODE_BLOCK * stride).div_ceil(p.n_kv_head);
            for kvh in 0..p.n_kv_head {
                prefetch_region(self.vs, at(b0 + 2 * DECODE_BLOCK, 0) + kvh * share, share);
                let w = Rows {
                    data: &sc[kvh * g * n + b0..],
                    n: nb,
                    ld: n,
                };
                (gr.values)(w, g, &self.vs[at(b0, kvh)..], stride, &mut o[kvh * g * hd..][..g * hd]);
            }
        }
    }
}

/// Slots a decode block covers: every KV head's rows of the block are read before the
/// next block's, and the block after next is requested into L1 as one region, a share
/// of it at each KV head's turn (one burst of the whole region measured ~20 % slower),
/// so the cache streams in address order (a KV head's rows alone are `n_kv · hd`
/// elements apart: a strided walk the hardware prefetchers do not follow). A multiple
/// of 8, so the blocks' scores have the per-head kernels' bits. Measured on a Zen 4 (a
/// read of 128-byte rows 1 KiB apart, eight heads, 64 MiB): 5.7 GB/s head by head, 10.4
/// in blocks of 8 slots, 22.6 with the next block requested, 18.8 a plain sequential
/// read.
const DECODE_BLOCK: usize = 8;

/// Requests `x[at..at + len]` into L1 (a hint, one per 64-byte line; addresses past the
/// end of `x` are never read). A no-op off x86-64 and aarch64.
#[inline]
#[allow(unused_variables)]
fn prefetch_region<T>(x: &[T], at: usize, len: usize) {
    let p = x.as_ptr().wrapping_add(at).cast::<u8>();
    for off in (0..len * core::mem::size_of::<T>()).step_by(64) {
        let a = p.wrapping_add(off);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE is part of x86-64; a prefetch never faults and reads nothing the
        // program sees, whatever the address.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(a.cast())
        };
        #[cfg(target_arch = "aarch64")]
        // SAFETY: `prfm` is a hint: it never faults, whatever the address, and changes
        // no register or memory the program sees.
        unsafe {
            core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) a, options(nostack, readonly, preserves_flags))
        };
    }
}

/// One decode step's attention (one query token) in slot blocks of [`DECODE_BLOCK`]:
/// for each block, every KV head's group scores, then each head's softmax over all its
/// slots, then for each block every KV head's group value sums (`AttnGroup::values`
/// adds, so the blocks chain into one sum). The slots are cut into `chunks` pool
/// tasks; with one, the output is written directly and its bits are the per-head
/// reference's; with more, each task keeps its piece's softmax max and sum and its
/// normalized sums, and the pieces of each head are merged into `os`: `out = Σ_c w_c ·
/// o_c / Σ_c w_c` with `w_c = sum_c · e^(max_c − M)`, `M` the largest max. Returns false
/// (nothing done) when the scratch is too short for that many pieces.
fn attention_decode<T: scalar::KvUnit>(
    pool: &mut ThreadPool,
    scores: &mut [f32],
    os: &mut [f32],
    unit: &GroupUnit<'_, T>,
    gr: AttnGroup<T>,
    chunks: usize,
) -> bool {
    let p = unit.p;
    let (hd, nh) = (p.head_dim, p.n_head);
    let ctx = p.n_past + 1;
    let chunk = ctx.div_ceil(chunks.max(1));
    // A task's scratch: its scores (a row of `chunk` per head), and with several chunks
    // its sums (`hd` a head) and stats.
    if chunks <= 1 {
        unit.decode_piece(gr, 0..ctx, &mut scores[..nh * ctx], &mut os[..nh * hd], &mut []);
        return true;
    }
    let per_task = nh * (chunk + hd + 2);
    if chunks * per_task > scores.len() {
        return false;
    }
    let part = &mut scores[..chunks * per_task];
    let grid = Grid {
        rows: chunks,
        cols: per_task,
        row_tile: 1,
        col_tile: per_task,
    };
    pool.run_tiles(part, grid, &mut [] as &mut [f32], 0, &|mut tile, _| {
        let c = tile.rows().start;
        let (sc, rest) = tile.row(c).split_at_mut(nh * chunk);
        let (o, stats) = rest.split_at_mut(nh * hd);
        let slots = (c * chunk).min(ctx)..((c + 1) * chunk).min(ctx);
        if slots.is_empty() {
            // No slots: a piece that weighs nothing in the merge.
            for st in stats.chunks_exact_mut(2) {
                st.copy_from_slice(&[f32::NEG_INFINITY, 0.0]);
            }
            o.fill(0.0);
        } else {
            unit.decode_piece(gr, slots, sc, o, stats);
        }
    });
    let part = &scores[..chunks * per_task];
    for h in 0..nh {
        let stat = |c: usize| {
            let st = &part[c * per_task + nh * (chunk + hd) + 2 * h..][..2];
            (st[0], st[1])
        };
        let top = (0..chunks).map(|c| stat(c).0).fold(f32::NEG_INFINITY, f32::max);
        let oh = &mut os[h * hd..][..hd];
        oh.fill(0.0);
        let mut total = 0.0f32;
        for c in 0..chunks {
            let (max, sum) = stat(c);
            if sum == 0.0 {
                continue;
            }
            let w = sum * crate::math::expf(max - top);
            total += w;
            let o_c = &part[c * per_task + nh * chunk + h * hd..][..hd];
            for (a, &x) in oh.iter_mut().zip(o_c) {
                *a += w * x;
            }
        }
        let inv = 1.0 / total;
        for a in oh.iter_mut() {
            *a *= inv;
        }
    }
    true
}

/// Decodes one row of a cache dtype into f32 — with [`encode_kv_row`], the row codec the
/// cache-maintenance ops share (`rope_shift` decodes, rotates, encodes); a new cache
/// dtype adds its arm to both.
fn decode_kv_row(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    match dtype {
        DType::F32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
        DType::F16 => {
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *d = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        DType::Q8_0 => crate::quant::dequantize_row_q8_0(bytemuck::cast_slice(src), dst),
        other => return Err(Error::dtype("rope_shift", "x", other)),
    }
    Ok(())
}

/// Encodes one f32 row into a cache dtype (see [`decode_kv_row`]).
fn encode_kv_row(dtype: DType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    match dtype {
        DType::F32 => dst.copy_from_slice(bytemuck::cast_slice(src)),
        DType::F16 => {
            for (c, &v) in dst.chunks_exact_mut(2).zip(src) {
                c.copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
        }
        // The scalar quantizer: the bytes every table's `quantize_row_q8_0` gives.
        DType::Q8_0 => crate::quant::quantize_row_q8_0(src, bytemuck::cast_slice_mut(dst)),
        other => return Err(Error::dtype("rope_shift", "x", other)),
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Buffer = CpuBuffer;

    fn name(&self) -> &'static str {
        "cpu"
    }
    fn isa(&self) -> &'static str {
        self.k.isa.name()
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            weight_dtypes: &[
                DType::F32,
                DType::F16,
                DType::BF16,
                DType::Q4_0,
                DType::Q4_1,
                DType::Q8_0,
                DType::Q5_0,
                DType::Q5_1,
                DType::Q4_K,
                DType::Q5_K,
                DType::Q6_K,
            ],
            kv_dtypes: &[DType::F16, DType::F32, DType::Q8_0],
            unified_memory: true,
            synchronous: true,
        }
    }

    fn alloc(&self, bytes: usize, _kind: BufferKind) -> Result<CpuBuffer> {
        // Zeroed pages from the allocator (untouched until written), and an error, not
        // an abort, when the request cannot be met. A page or more: page-aligned.
        let oom = |()| {
            Error::invalid(alloc::format!(
                "cpu: cannot allocate a buffer of {bytes} bytes ({} MiB): out of memory",
                bytes >> 20
            ))
        };
        let mem = if bytes >= PAGE {
            Mem::Paged(bytemuck::allocation::try_zeroed_vec::<Page>(bytes.div_ceil(PAGE)).map_err(oom)?)
        } else {
            Mem::Owned(bytemuck::allocation::try_zeroed_vec::<Chunk>(bytes.div_ceil(64)).map_err(oom)?)
        };
        Ok(CpuBuffer {
            mem,
            len: bytes,
            x8: false,
        })
    }
    fn import_host(&self, region: HostRegion) -> Result<CpuBuffer> {
        let len = region.len();
        Ok(CpuBuffer {
            mem: Mem::Host(region),
            len,
            x8: false,
        })
    }
    /// Quantized matrices of an x8 type (`repack::has_x8`) with rows in multiples of 8
    /// are repacked into the x8 layout when repacking is on (`set_repack`): one owned copy, after which the file's
    /// pages of the tensor are released (`madvise(MADV_DONTNEED)` on the mapping), so
    /// resident memory holds the weight once. With repacking on, vectors (the norms, a
    /// few KiB each) are copied too and their pages released: read in place, each would
    /// keep the whole page-cache folio around it mapped (2 MiB where the file system
    /// caches the file in large folios — measured: 8 MiB of SmolLM2 Q4_1's layer weights
    /// resident for four norm vectors). Everything else is used in place.
    fn import_weight(&self, region: HostRegion, dtype: DType, shape: Shape) -> Result<CpuBuffer> {
        let d = shape.dims();
        if dtype == DType::BF16 && d.len() == 2 && self.k.gemm_bf16_bf16.is_some() {
            self.bf16_weights.store(true, core::sync::atomic::Ordering::Relaxed);
        }
        if dtype == DType::F16 && d.len() == 2 && self.k.f16_act.is_some() {
            self.f16_weights.store(true, core::sync::atomic::Ordering::Relaxed);
        }
        let kx16 = match dtype {
            DType::Q4_K => self.k.gemm_q4_kx8_t16.is_some(),
            DType::Q5_K => self.k.gemm_q5_kx8_t16.is_some(),
            DType::Q6_K => self.k.gemm_q6_kx8_t16.is_some(),
            _ => false,
        };
        if kx16 && self.opts.repack && d.len() == 2 {
            self.kx16_weights.store(true, core::sync::atomic::Ordering::Relaxed);
        }
        if self.opts.repack && d.len() == 1 && region.is_file_mapped() {
            let src = region.bytes();
            let mut buf = self.alloc(src.len(), BufferKind::Shared)?;
            buf.bytes_mut()
                .ok_or_else(|| Error::read_only("vector copy"))?
                .copy_from_slice(src);
            self.repacked
                .fetch_add(src.len() as u64, core::sync::atomic::Ordering::Relaxed);
            crate::os::release_pages(src);
            self.remember_released(&region);
            return Ok(buf);
        }
        if !self.opts.repack || d.len() != 2 || !repack::can_repack(dtype, d[0], d[1]) || !self.k.x8_simd_for(dtype) {
            return self.import_host(region);
        }
        let src = region.bytes();
        let mut buf = self.alloc(src.len(), BufferKind::Shared)?;
        let dst = buf.bytes_mut().ok_or_else(|| Error::read_only("repack buffer"))?;
        if self.opts.huge_pages {
            crate::os::advise_huge(dst);
        }
        if !repack_par(
            dtype,
            d[0],
            d[1],
            src,
            dst,
            self.pool.threads(),
            region.is_file_mapped(),
        ) {
            return Err(Error::invalid(alloc::format!(
                "repack: {dtype:?} [{}, {}] tensor of {} bytes does not fit its shape",
                d[0],
                d[1],
                src.len()
            )));
        }
        buf.x8 = true;
        self.repacked
            .fetch_add(src.len() as u64, core::sync::atomic::Ordering::Relaxed);
        if region.is_file_mapped() {
            crate::os::release_pages(src);
            self.remember_released(&region);
        }
        Ok(buf)
    }
    /// Releases the file pages of every repacked weight once more: reading the next
    /// tensor can fault a whole large folio of the page cache into the mapping, bringing
    /// back pages of tensors already copied (measured: 8 of 94 MiB of SmolLM2 Q4_1 stayed
    /// resident that way).
    fn finish_import(&self) {
        #[cfg(feature = "std")]
        {
            let regions = self
                .released
                .lock()
                .map(|mut r| core::mem::take(&mut *r))
                .unwrap_or_default();
            for r in &regions {
                crate::os::release_pages(r.bytes());
            }
        }
    }
    fn buffer_len(&self, buf: &CpuBuffer) -> usize {
        buf.len
    }
    fn host_bytes<'a>(&self, buf: &'a CpuBuffer) -> Option<&'a [u8]> {
        Some(buf.bytes())
    }
    fn host_bytes_mut<'a>(&self, buf: &'a mut CpuBuffer) -> Option<&'a mut [u8]> {
        buf.bytes_mut()
    }
    fn upload(&self, dst: &mut CpuBuffer, offset: usize, src: &[u8]) -> Result<()> {
        let len = dst.len;
        let b = dst.bytes_mut().ok_or_else(|| Error::read_only("upload destination"))?;
        let end = offset
            .checked_add(src.len())
            .filter(|&e| e <= len)
            .ok_or_else(|| Error::out_of_bounds("upload", "dst", offset, src.len(), len))?;
        b[offset..end].copy_from_slice(src);
        Ok(())
    }
    fn download(&self, src: &CpuBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let b = src.bytes();
        let end = offset
            .checked_add(dst.len())
            .filter(|&e| e <= b.len())
            .ok_or_else(|| Error::out_of_bounds("download", "src", offset, dst.len(), b.len()))?;
        dst.copy_from_slice(&b[offset..end]);
        Ok(())
    }
    fn reserve(&mut self, r: Reservation) -> Result<()> {
        let blocks = r.max_tokens * r.max_row.div_ceil(32);
        grow(&mut self.q8_0, blocks);
        grow(&mut self.q8_1, blocks);
        grow(&mut self.q8_k, r.max_tokens * r.max_row.div_ceil(QK_K));
        // Two rows per head: scores, and the head's attention mass (`attention_mass`).
        grow(&mut self.scores, 2 * r.max_ctx * r.n_head.max(1));
        grow(&mut self.row, r.max_row);
        grow(&mut self.qa, blocks);
        if self.bf16_weights.load(core::sync::atomic::Ordering::Relaxed) {
            grow(&mut self.bf16_x, r.max_tokens * r.max_row);
        }
        if self.f16_weights.load(core::sync::atomic::Ordering::Relaxed) {
            grow(&mut self.f16_x, r.max_row);
        }
        if self.kx16_weights.load(core::sync::atomic::Ordering::Relaxed) {
            let groups = r.max_tokens.div_ceil(repack::TOKS_X16);
            grow(&mut self.q8_k16, groups * r.max_row.div_ceil(QK_K));
        }
        Ok(())
    }
    fn synchronize(&mut self) -> Result<()> {
        Ok(())
    }
    /// Weights copied at import (`to_device`: repacked matrices and, with repacking on,
    /// the vectors); nothing else is ever copied.
    fn copied_bytes(&self) -> crate::backend::CopiedBytes {
        crate::backend::CopiedBytes {
            to_device: self.repacked_bytes(),
            to_host: 0,
        }
    }

    fn get_rows(&mut self, table: TensorRef<'_, Self>, ids: &[u32], out: TensorMut<'_, Self>) -> Result<()> {
        let dim = table.shape.row_len();
        let rb = table.dtype.row_bytes(dim).unwrap_or(0);
        let src = view(&table);
        let x8 = table.buf.x8;
        let dst = f32s_mut(view_mut(out)?);
        let mut unpacked = [0u8; 210]; // the largest x8 block (Q6_K)
        for (t, &id) in ids.iter().enumerate() {
            if x8 {
                // One GGUF block at a time out of the interleaved groups.
                let (bb, bs) = (table.dtype.block_bytes(), table.dtype.block_size());
                for b in 0..dim / bs {
                    let ub = &mut unpacked[..bb];
                    repack::extract_block(table.dtype, src, dim, id as usize, b, ub);
                    crate::quant::dequantize_row(table.dtype, ub, &mut dst[t * dim + bs * b..t * dim + bs * (b + 1)])
                        .map_err(|e| Error::invalid(alloc::format!("get_rows: {e:?}")))?;
                }
                continue;
            }
            let row = &src[id as usize * rb..(id as usize + 1) * rb];
            crate::quant::dequantize_row(table.dtype, row, &mut dst[t * dim..(t + 1) * dim])
                .map_err(|e| Error::invalid(alloc::format!("get_rows: {e:?}")))?;
        }
        Ok(())
    }

    /// `y` is f32, or a cache dtype (f16, Q8_0) for the K/V projections writing the
    /// cache: those run a few tokens at a time into the f32 `row` scratch, then each row
    /// is converted once (f16 rounded; Q8_0 quantized by the table's quantizer). RoPE
    /// then widens, rotates and rounds f16 keys again; a Q8_0 cache's keys are rotated in
    /// f32 before they are stored (`store_rows`), so this path writes only its values.
    fn matmul(&mut self, w: TensorRef<'_, Self>, x: TensorRef<'_, Self>, y: TensorMut<'_, Self>) -> Result<()> {
        let xs = f32s(view(&x));
        let ydt = y.dtype;
        if ydt == DType::F32 {
            return self.matmul_f32(w, xs, f32s_mut(view_mut(y)?));
        }
        let (n_out, n_in) = (w.shape.dims()[0], w.shape.dims()[1]);
        let mut row = core::mem::take(&mut self.row);
        if row.len() < n_out {
            self.row = row;
            return Err(Error::invalid(alloc::format!(
                "matmul: scratch not reserved for a {} output (call reserve)",
                ydt.name()
            )));
        }
        let ys = view_mut(y)?;
        let out_rb = ydt.row_bytes(n_out).unwrap_or(0);
        let chunk = row.len() / n_out;
        let mut res = Ok(());
        for (xc, yc) in xs.chunks(chunk * n_in).zip(ys.chunks_mut(chunk * out_rb)) {
            let r = &mut row[..xc.len() / n_in.max(1) * n_out];
            res = self.matmul_f32(w, xc, r);
            if res.is_err() {
                break;
            }
            store_converted(self.k, r, yc, ydt);
        }
        self.row = row;
        res
    }

    fn rms_norm(
        &mut self,
        x: TensorRef<'_, Self>,
        w: TensorRef<'_, Self>,
        eps: f32,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        let n = x.shape.row_len();
        let (xs, ws) = (f32s(view(&x)), f32s(view(&w)));
        let os = f32s_mut(view_mut(out)?);
        par_rows(&mut self.pool, os, n, &|r, or| {
            scalar::rms_norm(&xs[r * n..(r + 1) * n], ws, eps, or)
        });
        Ok(())
    }

    fn rope(
        &mut self,
        x: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        pos0: usize,
        style: RopeStyle,
    ) -> Result<()> {
        let d = x.shape.dims();
        let (n_heads, hd) = (d[1], d[2]);
        let f = f32s(view(&inv_freq));
        if x.dtype == DType::F16 {
            // Keys of an f16 cache: each head widened into `row`, rotated, rounded back.
            let xs: &mut [f16] = bytemuck::cast_slice_mut(view_mut(x)?);
            let tmp = self
                .row
                .get_mut(..hd)
                .ok_or_else(|| Error::invalid("rope: scratch not reserved for an f16 input (call reserve)"))?;
            for (i, head) in xs.chunks_exact_mut(hd).enumerate() {
                let pos = (pos0 + i / n_heads) as f32;
                for (o, h) in tmp.iter_mut().zip(head.iter()) {
                    *o = h.to_f32();
                }
                scalar::rope_head(tmp, f, pos, style);
                for (h, &o) in head.iter_mut().zip(tmp.iter()) {
                    *h = f16::from_f32(o);
                }
            }
            return Ok(());
        }
        let xs = f32s_mut(view_mut(x)?);
        par_rows(&mut self.pool, xs, n_heads * hd, &|t, row| {
            let pos = (pos0 + t) as f32;
            for head in row.chunks_exact_mut(hd) {
                scalar::rope_head(head, f, pos, style);
            }
        });
        Ok(())
    }

    fn attention(
        &mut self,
        q: TensorRef<'_, Self>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
        p: AttnParams,
        out: TensorMut<'_, Self>,
    ) -> Result<()> {
        self.attention_with(q, k, v, p, out, None)
    }

    fn attention_mass(
        &mut self,
        q: TensorRef<'_, Self>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
        p: AttnParams,
        out: TensorMut<'_, Self>,
        mass: TensorMut<'_, Self>,
    ) -> Result<()> {
        let m = f32s_mut(view_mut(mass)?);
        self.attention_with(q, k, v, p, out, Some(m))
    }

    fn move_rows(&mut self, x: TensorMut<'_, Self>, src: usize, dst: usize, n: usize) -> Result<()> {
        let rb = x.dtype.row_bytes(x.shape.row_len()).unwrap_or(0);
        view_mut(x)?.copy_within(src * rb..(src + n) * rb, dst * rb);
        Ok(())
    }

    /// Row by row: decoded into the `row` scratch, every head turned by the same angles
    /// (cosines and sines computed once, into the scratch after the row), encoded back.
    fn rope_shift(
        &mut self,
        x: TensorMut<'_, Self>,
        inv_freq: TensorRef<'_, Self>,
        delta: i32,
        style: RopeStyle,
    ) -> Result<()> {
        let d = x.shape.dims();
        let (n_heads, hd) = (d[1], d[2]);
        let (dtype, row_len) = (x.dtype, n_heads * hd);
        let rb = dtype.row_bytes(row_len).unwrap_or(0);
        let f = f32s(view(&inv_freq));
        let need = row_len + hd;
        let scratch = self
            .row
            .get_mut(..need)
            .ok_or_else(|| Error::invalid("rope_shift: scratch not reserved for a cache row (call reserve)"))?;
        let (row, cs) = scratch.split_at_mut(row_len);
        let (cos, sin) = cs.split_at_mut(hd / 2);
        for ((c, s), &fi) in cos.iter_mut().zip(sin.iter_mut()).zip(f) {
            let theta = delta as f32 * fi;
            (*s, *c) = (crate::math::sinf(theta), crate::math::cosf(theta));
        }
        for bytes in view_mut(x)?.chunks_exact_mut(rb) {
            decode_kv_row(dtype, bytes, row)?;
            for head in row.chunks_exact_mut(hd) {
                scalar::rope_head_cs(head, cos, sin, style);
            }
            encode_kv_row(dtype, row, bytes)?;
        }
        Ok(())
    }

    fn store_rows(&mut self, src: TensorRef<'_, Self>, dst: TensorMut<'_, Self>) -> Result<()> {
        let dt = dst.dtype;
        store_converted(self.k, f32s(view(&src)), view_mut(dst)?, dt);
        Ok(())
    }

    fn softmax(&mut self, x: TensorMut<'_, Self>) -> Result<()> {
        let n = x.shape.row_len();
        let xs = f32s_mut(view_mut(x)?);
        for r in xs.chunks_exact_mut(n) {
            (self.k.softmax_f32)(r);
        }
        Ok(())
    }

    fn swiglu(&mut self, gate: TensorRef<'_, Self>, up: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()> {
        let n = out.shape.row_len();
        let (g, u) = (f32s(view(&gate)), f32s(view(&up)));
        let f = self.k.swiglu_f32;
        par_rows(&mut self.pool, f32s_mut(view_mut(out)?), n, &|r, o| {
            f(&g[r * n..(r + 1) * n], &u[r * n..(r + 1) * n], o)
        });
        Ok(())
    }

    fn argmax(&mut self, x: TensorRef<'_, Self>, out: TensorMut<'_, Self>) -> Result<()> {
        let n = x.shape.row_len();
        let xs = f32s(view(&x));
        for (r, o) in xs.chunks_exact(n.max(1)).zip(f32s_mut(view_mut(out)?)) {
            *o = scalar::argmax(r).map_or(-1.0, |i| i as f32);
        }
        Ok(())
    }

    fn add(&mut self, dst: TensorMut<'_, Self>, src: TensorRef<'_, Self>) -> Result<()> {
        let n = dst.shape.row_len();
        let s = f32s(view(&src));
        par_rows(&mut self.pool, f32s_mut(view_mut(dst)?), n, &|r, d| {
            for (d, s) in d.iter_mut().zip(&s[r * n..]) {
                *d += s;
            }
        });
        Ok(())
    }
}
