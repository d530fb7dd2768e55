//! Q4_0 matrices repacked row by row for the persistent block kernel (`block.cl`'s
//! `T_Q4_0R` rows, read by `dot_q4_0r`) and the int8 prefill matmuls
//! (`mul_mm_q8_1.cl`'s `q4_0r` kernels, `q8w_q4_0r`: a 16-byte-aligned row, so 8 quant
//! bytes are one 8-byte load).
//!
//! * **Why.** A GGUF `block_q4_0` is 18 bytes (f16 `d`, then 16 bytes of nibbles), so
//!   its nibbles sit at 2-byte alignment and a GPU reads a block as nine 2-byte loads
//!   (NVIDIA's compiler emits `ld.global.u16` for each: it cannot prove more). In the
//!   block kernel those loads and their address arithmetic are most of the work of
//!   the matrix stages, which measured issue-bound on an H100 (docs/perf-notes.md).
//! * **Layout.** Each row keeps its place and nearly its size: row `r` starts at
//!   `r · row_bytes(cols)` (`18 · cols / 32` rounded up to 16 bytes); in it the `nb`
//!   blocks' 16 quant bytes come first (one 16-byte word a block, unchanged), then
//!   their `nb` f16 scales, then zero padding up to the row size. A block is then one
//!   16-byte load and one 2-byte load, and the kernel addresses rows as before (only
//!   the row size is new: `row_bytes(T_Q4_0R, n)` in `common/dtype.cl`).
//! * **Extra memory.** The repacked matrix is a copy beside the GGUF bytes, which
//!   stay (`get_rows`, the f32 tiled matmuls and the per-op kernels read that layout): the
//!   tensor's size again plus ≤ 15 bytes a row. The bytes are counted as imports and
//!   in [`super::image::RepackStats`] with the image path's.
//! * **When.** At load ([`crate::Backend::import_weight`]), for every 2-D Q4_0 matrix,
//!   while [`super::OpenClOptions::block_repack`] is on and the persistent block kernel
//!   runs decode or the int8 prefill matmuls are built. The block kernel then reads the
//!   repacked copy for a layer's seven matrices and the output head, the int8 matmuls
//!   for every whole matrix (Q/K/V only when all three have one, gate/up when both do);
//!   a weight without one (another dtype, a view at an offset) is read as before.

use alloc::vec;

use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::memory::Buffer;

use super::image::{plane, repack_q4_0, Q4_0_BLOCK, Q4_0_QS};
use crate::error::Result;

/// A Q4_0 matrix's repacked copy on the device.
pub struct RowSoa {
    pub(super) buf: Buffer<u8>,
    /// Device bytes of the copy.
    pub(super) bytes: usize,
    /// Elements a row (the row size the kernel computes from it).
    pub(super) cols: usize,
}

/// Bytes of a repacked row of `cols` elements (`cols` a multiple of 32): the GGUF
/// row's, rounded up to 16.
pub(super) fn row_bytes(cols: usize) -> usize {
    (cols / 32 * Q4_0_BLOCK).next_multiple_of(16)
}

/// Repacks `rows` GGUF Q4_0 rows of `cols` elements (`src`, `rows · cols / 32 · 18`
/// bytes) into `dst` (`rows · row_bytes(cols)` bytes; padding written as zeros).
pub(super) fn repack_rows(src: &[u8], rows: usize, cols: usize, dst: &mut [u8]) {
    let nb = cols / 32;
    let rb = row_bytes(cols);
    debug_assert_eq!(src.len(), rows * nb * Q4_0_BLOCK);
    debug_assert_eq!(dst.len(), rows * rb);
    // (each row is the image path's two planes of that row, side by side)
    for (s, d) in src.chunks_exact(nb * Q4_0_BLOCK).zip(dst.chunks_exact_mut(rb)) {
        let (qs, rest) = d.split_at_mut(nb * Q4_0_QS);
        let (ds, pad) = rest.split_at_mut(nb * 2);
        repack_q4_0(s, qs, ds);
        pad.fill(0);
    }
}

/// The repacked copy of a `[rows, cols]` Q4_0 matrix, on the device (moved there now).
pub(super) fn upload(context: &Context, queue: &CommandQueue, src: &[u8], rows: usize, cols: usize) -> Result<RowSoa> {
    let mut host = vec![0u8; rows * row_bytes(cols)];
    repack_rows(src, rows, cols, &mut host);
    let buf = plane(context, queue, &host)?;
    Ok(RowSoa {
        buf,
        bytes: host.len(),
        cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_blocks_quants_first_then_scales() {
        // 3 rows of 96 elements (3 blocks, 54 bytes a GGUF row, 64 repacked).
        let (rows, cols) = (3usize, 96usize);
        let src: alloc::vec::Vec<u8> = (0..rows * 3 * 18).map(|i| (i * 7 + 1) as u8).collect();
        assert_eq!(row_bytes(cols), 64);
        let mut dst = vec![0xAAu8; rows * 64];
        repack_rows(&src, rows, cols, &mut dst);
        for r in 0..rows {
            let row = &dst[r * 64..(r + 1) * 64];
            for b in 0..3 {
                let blk = &src[(r * 3 + b) * 18..(r * 3 + b + 1) * 18];
                assert_eq!(&row[16 * b..16 * b + 16], &blk[2..], "row {r} block {b} quants");
                assert_eq!(&row[48 + 2 * b..48 + 2 * b + 2], &blk[..2], "row {r} block {b} scale");
            }
            assert_eq!(&row[54..], &[0u8; 10], "row {r} padding");
        }
    }

    #[test]
    fn the_repacked_code_is_no_dtypes() {
        use super::super::kernels::{dtype_code, T_Q4_0R};
        for t in crate::dtype::DType::ALL {
            assert_ne!(dtype_code(t), Some(T_Q4_0R), "{t} has block.cl's T_Q4_0R code");
        }
    }

    #[test]
    fn row_sizes_round_up_to_16() {
        assert_eq!(row_bytes(2048), 1152); // 64 blocks: already a multiple
        assert_eq!(row_bytes(8192), 4608);
        assert_eq!(row_bytes(576), 336); // SmolLM2: 18 blocks, 324 bytes
        assert_eq!(row_bytes(32), 32);
    }
}
