//! The image weight path: Q4_0 weight matrices repacked into a structure-of-arrays
//! layout and read through `image1d_buffer_t` by `mul_mv_q4_0_img_f32`
//! (`kernels/cl/mul_mv_q4_0_img_f32.cl`), the matrix × vector kernel of decode's per-op
//! `matmul` / `matmul_add`.
//!
//! * **Layout.** A GGUF `block_q4_0` is 18 bytes (f16 `d`, then 16 bytes of nibbles), so
//!   an array of them is neither 16-byte aligned nor a texel format. The repack splits a
//!   `[rows, cols]` matrix into two planes, blocks in row-major order (`i = row · nb + b`,
//!   `nb = cols / 32`): the **q plane**, one 16-byte `CL_RGBA / CL_UNSIGNED_INT32` texel
//!   per block holding its `qs[16]` unchanged, and the **d plane**, the f16 scales four to
//!   a `CL_RGBA / CL_HALF_FLOAT` texel (padded to a whole texel). Both formats are in
//!   OpenCL 1.2's list of formats every image device supports; we still ask
//!   `clGetSupportedImageFormats`. Reading the scales with `read_imagef` widens them in
//!   the texture unit: no `cl_khr_fp16` needed.
//! * **Extra memory.** The planes are a copy: `rows · nb · 16 + ⌈rows · nb / 4⌉ · 8`
//!   bytes, i.e. the tensor's own size (+ ≤ 6 bytes), beside the original bytes (which
//!   stay: `get_rows`, the fused kernels and `block.cl` read the GGUF layout). On a
//!   unified-memory device the original is the mmap'd file, so the planes are the only
//!   device-side copy; on a discrete one they double the tensor. Their bytes are counted
//!   as imports ([`super::CopyCounters::import`]) and summed, with the repack time, in
//!   [`RepackStats`].
//! * **When.** At load, through [`crate::Backend::import_weight`] (the loader says each
//!   weight's dtype and shape), only while the path is on: by default on Qualcomm /
//!   Adreno GPUs that have `image1d_buffer` support, off elsewhere (PoCL, NVIDIA);
//!   [`super::OpenClOptions::images`] / `ANTIGRAVITY_OPENCL_IMAGES=1|0` force it.
//!   A matrix with more blocks than `CL_DEVICE_IMAGE_MAX_BUFFER_SIZE` texels (or one
//!   whose planes exceed the largest allocation) is not split: it stays on the buffer
//!   kernel, counted in [`RepackStats::kept_on_buffer`]. A plane or image that cannot be
//!   created leaves that weight on the buffer kernel with a log line; a launch that fails
//!   turns the path off for the backend (log line) and the op reruns on the buffer kernel.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;

use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::memory::{
    Buffer, Image, CL_HALF_FLOAT, CL_MEM_OBJECT_IMAGE1D_BUFFER, CL_MEM_READ_ONLY, CL_RGBA, CL_UNSIGNED_INT32,
};
use opencl3::program::Program;
use opencl3::types::{cl_device_id, cl_mem_object_type};

use super::kernels::MulMvImg;
use super::launch::{create_buffer_copy, create_image1d_buffer, migrate_to_device, Kern, Mem};
use super::program::{build_program, NT};
use super::{DeviceInfo, OpenClOptions};
use crate::error::Result;

/// Work-group of the image kernel on GPUs: 64 work-items (an Adreno wave in its
/// half-occupancy mode) over 4 rows, 16 a row — a 576-wide row (18 blocks) takes each
/// lane one or two blocks.
const IMG_LWS_GPU: usize = 64;
const IMG_ROWS_GPU: usize = 4;
/// On CPU devices (PoCL, only for tests here): 8 work-items, 2 rows (1, 2, 4 and 8 rows
/// measured alike on PoCL; 2 makes the tests cover a group's row tail there too).
const IMG_LWS_CPU: usize = 8;
const IMG_ROWS_CPU: usize = 2;

/// Bytes of a Q4_0 block and of its nibbles.
pub(super) const Q4_0_BLOCK: usize = 18;
pub(super) const Q4_0_QS: usize = 16;

/// What the image path did while weights were imported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepackStats {
    /// Weights that got image planes.
    pub tensors: u32,
    /// Device bytes of those planes, beyond the weights themselves (also counted in
    /// [`super::CopyCounters::import`]).
    pub extra_bytes: u64,
    /// Host wall time spent repacking and creating the planes and images, in ns.
    pub repack_ns: u64,
    /// Q4_0 matrices left on the buffer kernel: too many blocks for one image, planes
    /// larger than the largest allocation, or plane/image creation failed.
    pub kept_on_buffer: u32,
    /// Q4_0 matrices with a copy repacked for the block kernel (`rowsoa.rs`,
    /// [`super::OpenClOptions::block_repack`]), and that copy's device bytes (also
    /// counted in [`super::CopyCounters::import`]; the time is in `repack_ns`).
    pub row_tensors: u32,
    pub row_bytes: u64,
}

/// The compiled image kernel and the limits it runs under.
pub(super) struct ImgPath {
    // Drop order: the kernel before its program.
    pub kernel: Kern<MulMvImg>,
    _program: Program,
    pub lws: usize,
    pub rows: usize,
    /// Largest texel count of one image (the device's, or the option's smaller cap).
    pub max_texels: u64,
    pub max_alloc: u64,
    pub log: bool,
}

/// One weight's planes, kept inside its [`super::ClBuffer`].
pub(crate) struct ImgWeight {
    // Drop order: the images before the buffers they view.
    q_img: Image,
    d_img: Image,
    _q: Buffer<u8>,
    _d: Buffer<u8>,
    pub rows: usize,
    pub cols: usize,
    /// Device bytes of both planes.
    pub bytes: usize,
}

impl ImgWeight {
    /// The q plane image, as a kernel argument.
    pub(super) fn q(&self) -> Mem {
        Mem::of(&self.q_img)
    }
    /// The d plane image, as a kernel argument.
    pub(super) fn d(&self) -> Mem {
        Mem::of(&self.d_img)
    }
}

/// Qualcomm's OpenCL reports vendor "QUALCOMM" and devices named "QUALCOMM Adreno(TM) …".
fn is_adreno(info: &DeviceInfo) -> bool {
    let s = format!("{} {} {}", info.vendor, info.name, info.platform).to_ascii_lowercase();
    !info.is_cpu && (s.contains("qualcomm") || s.contains("adreno"))
}

impl ImgPath {
    /// Builds the image kernel when the path is wanted and the device can run it; `None`
    /// (with a log line saying why, when it was asked for) otherwise. Never an error: the
    /// buffer kernels are always there.
    pub(super) fn build(
        context: &Context,
        dev: cl_device_id,
        info: &DeviceInfo,
        opts: &OpenClOptions,
    ) -> Option<ImgPath> {
        let forced = opts.images == Some(true);
        if !opts.images.unwrap_or_else(|| is_adreno(info)) {
            return None;
        }
        let log = opts.log || forced;
        let off = |why: String| {
            if log {
                std::eprintln!("opencl: image path off, Q4_0 matmuls stay on buffer kernels: {why}");
            }
            None
        };
        if !info.image1d_buffer {
            return off("the device has no image1d_buffer support".to_string());
        }
        for (order, ty, what) in [
            (CL_RGBA, CL_UNSIGNED_INT32, "RGBA/UNSIGNED_INT32"),
            (CL_RGBA, CL_HALF_FLOAT, "RGBA/HALF_FLOAT"),
        ] {
            let ok = context
                .get_supported_image_formats(CL_MEM_READ_ONLY, CL_MEM_OBJECT_IMAGE1D_BUFFER as cl_mem_object_type)
                .map(|v| {
                    v.iter()
                        .any(|f| f.image_channel_order == order && f.image_channel_data_type == ty)
                })
                .unwrap_or(false);
            if !ok {
                return off(format!("image1d_buffer format {what} not supported"));
            }
        }
        let (lws, rows) = if info.is_cpu {
            (IMG_LWS_CPU, IMG_ROWS_CPU)
        } else {
            (IMG_LWS_GPU, IMG_ROWS_GPU)
        };
        // Tuning override (rows per work-group, dividing lws).
        let rows = opts
            .img_rows
            .filter(|&r| r > 0 && lws % r == 0 && (lws / r).is_power_of_two())
            .unwrap_or(rows);
        if info.max_work_group < lws {
            return off(format!("max work-group {} < {lws}", info.max_work_group));
        }
        let file = "mul_mv_q4_0_img_f32.cl";
        let options = format!("-cl-std=CL1.2 -DLWS={lws} -DROWS={rows} -DNT={NT}");
        let program = match build_program(context, dev, file, &options, opts.binary_cache.as_deref()) {
            Ok(p) => p,
            Err(e) => return off(format!("{e}")),
        };
        let kernel = match Kern::create(&program, "mul_mv_q4_0_img_f32") {
            Ok(k) => k,
            Err(e) => return off(format!("{e}")),
        };
        match kernel.work_group_size(dev) {
            Ok(n) if n >= lws => {}
            Ok(n) => return off(format!("the compiled kernel allows {n} work-items, needs {lws}")),
            Err(e) => return off(format!("kernel work-group size: {e}")),
        }
        let max_texels = match opts.image_max_texels {
            Some(cap) => cap.min(info.image_max_buffer_texels),
            None => info.image_max_buffer_texels,
        };
        if log {
            std::eprintln!(
                "opencl: image path on: Q4_0 weights repacked at load into image1d_buffer planes \
                 ({lws} work-items, {rows} rows a group, ≤ {max_texels} texels an image)"
            );
        }
        Some(ImgPath {
            kernel,
            _program: program,
            lws,
            rows,
            max_texels,
            max_alloc: info.max_alloc,
            log,
        })
    }

    /// Repacks one `[rows, cols]` Q4_0 matrix (`src`: its GGUF bytes) into device planes
    /// and images. `Ok(None)`: it stays on the buffer kernel (too large; logged). An error
    /// only when OpenCL refused a plane or an image (the caller logs it and goes on).
    pub(super) fn repack(
        &self,
        context: &Context,
        queue: &CommandQueue,
        src: &[u8],
        rows: usize,
        cols: usize,
    ) -> Result<Option<ImgWeight>> {
        let nb = cols / 32;
        let n = rows * nb;
        let (q_bytes, d_bytes) = plane_bytes(rows, cols);
        let too_large = if n as u64 > self.max_texels {
            Some(format!(
                "{n} blocks, over the image limit of {} texels",
                self.max_texels
            ))
        } else if q_bytes as u64 > self.max_alloc {
            Some(format!(
                "a {q_bytes}-byte plane, over the largest allocation ({} bytes)",
                self.max_alloc
            ))
        } else {
            None
        };
        if let Some(why) = too_large {
            if self.log {
                std::eprintln!("opencl: {rows}x{cols} Q4_0 weight needs {why}: it stays on the buffer kernel");
            }
            return Ok(None);
        }
        let mut q = vec![0u8; q_bytes];
        let mut d = vec![0u8; d_bytes];
        repack_q4_0(src, &mut q, &mut d);
        let qb = plane(context, queue, &q)?;
        let db = plane(context, queue, &d)?;
        let q_img = create_image1d_buffer(context, &qb, CL_UNSIGNED_INT32, n)?;
        let d_img = create_image1d_buffer(context, &db, CL_HALF_FLOAT, n.div_ceil(4))?;
        Ok(Some(ImgWeight {
            q_img,
            d_img,
            _q: qb,
            _d: db,
            rows,
            cols,
            bytes: q_bytes + d_bytes,
        }))
    }
}

/// Bytes of the (q, d) planes of a `[rows, cols]` Q4_0 matrix.
pub(super) fn plane_bytes(rows: usize, cols: usize) -> (usize, usize) {
    let n = rows * (cols / 32);
    (n * Q4_0_QS, n.div_ceil(4) * 8)
}

/// Splits GGUF `block_q4_0`s (`src`, 18 bytes each, row-major) into the nibble plane
/// `q` (16 bytes a block) and the scale plane `d` (2 bytes a block, the f16 bits as
/// they are; padding left zero).
pub(super) fn repack_q4_0(src: &[u8], q: &mut [u8], d: &mut [u8]) {
    for (i, blk) in src.chunks_exact(Q4_0_BLOCK).enumerate() {
        d[2 * i..2 * i + 2].copy_from_slice(&blk[..2]);
        q[Q4_0_QS * i..Q4_0_QS * (i + 1)].copy_from_slice(&blk[2..]);
    }
}

/// A read-only device buffer holding `bytes` (copied at creation and moved to the device
/// now, so the first forward pass does not pay the upload).
pub(super) fn plane(context: &Context, queue: &CommandQueue, bytes: &[u8]) -> Result<Buffer<u8>> {
    let buf = create_buffer_copy(context, bytes)?;
    migrate_to_device(queue, &buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    /// The planes decode (as the kernel reads them) to exactly what the GGUF blocks do.
    #[test]
    fn repacked_planes_decode_like_the_blocks() {
        let (rows, cols) = (3, 96);
        let vals: alloc::vec::Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.07)
            .collect();
        let rb = DType::Q4_0.row_bytes(cols).unwrap();
        let mut src = vec![0u8; rows * rb];
        for r in 0..rows {
            crate::quant::quantize_row(
                DType::Q4_0,
                &vals[r * cols..(r + 1) * cols],
                &mut src[r * rb..(r + 1) * rb],
            )
            .unwrap();
        }
        let (qn, dn) = plane_bytes(rows, cols);
        assert_eq!((qn, dn), (9 * 16, 3 * 8));
        let (mut q, mut d) = (vec![0u8; qn], vec![0u8; dn]);
        repack_q4_0(&src, &mut q, &mut d);
        let mut want = vec![0f32; cols];
        for r in 0..rows {
            crate::quant::dequantize_row(DType::Q4_0, &src[r * rb..(r + 1) * rb], &mut want).unwrap();
            for b in 0..cols / 32 {
                let i = r * (cols / 32) + b;
                let scale = half::f16::from_le_bytes([d[2 * i], d[2 * i + 1]]).to_f32();
                for c in 0..4 {
                    let w = u32::from_le_bytes(q[16 * i + 4 * c..16 * i + 4 * c + 4].try_into().unwrap());
                    for k in 0..4 {
                        let byte = w >> (8 * k);
                        let lo = ((byte & 15) as f32 - 8.0) * scale;
                        let hi = (((byte >> 4) & 15) as f32 - 8.0) * scale;
                        assert_eq!(lo, want[b * 32 + 4 * c + k], "row {r} block {b} element {}", 4 * c + k);
                        assert_eq!(
                            hi,
                            want[b * 32 + 16 + 4 * c + k],
                            "row {r} block {b} element {}",
                            16 + 4 * c + k
                        );
                    }
                }
            }
        }
    }
}
