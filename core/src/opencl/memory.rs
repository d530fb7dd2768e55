//! Memory ops of the OpenCL backend: allocation, imports (zero-copy where the device
//! shares host memory, one counted copy otherwise), uploads, blocking and started
//! downloads, and the scratch buffers `reserve` sizes ahead of a forward pass.
//!
//! * `Device` buffers are plain `CL_MEM_READ_WRITE`, `Shared` ones
//!   `CL_MEM_ALLOC_HOST_PTR`; both are zero-filled at creation.
//! * [`import_host`] wraps the host bytes (`CL_MEM_USE_HOST_PTR | CL_MEM_READ_ONLY`,
//!   zero-copy) when the device reports unified host memory and copies them once
//!   otherwise (discrete GPUs), migrating the copy to the device at load.
//! * A blocking [`download`] orders itself after every earlier op (in-order queue); a
//!   started one ([`download_start`]) runs on the read queue after a marker of the
//!   compute queue, so the next step's kernels are not held behind the copy.

use alloc::boxed::Box;
use alloc::format;
use alloc::vec::Vec;

use opencl3::memory::{Buffer, CL_MEM_ALLOC_HOST_PTR, CL_MEM_READ_ONLY, CL_MEM_READ_WRITE};

use super::launch::{
    cl_err, create_buffer, create_buffer_copy, fill_zero, map_rw, migrate_to_device, read_blocking, unmap, wrap_host,
    wrap_host_rw, write_blocking, IdsUpload, ReadSlot,
};
use super::matmul::MM_SPLIT_MAX;
use super::ops::{ARGMAX_MAX_PARTS, SPLIT_MAX_CHUNKS, SPLIT_MAX_TOK, SPLIT_MIN_CHUNK};
use super::program::MAX_HD;
use super::{rowsoa, ClBuffer, ClMemKind, OpenClBackend};
use crate::backend::{check_read, BufferKind, HostRegion, PendingRead, Reservation};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Shape;

/// Device scratch the ops need beyond their operands, sized by `reserve`.
pub(super) struct Scratch {
    /// Token ids of a multi-token get_rows.
    pub(super) ids: IdsUpload,
    /// Split-attention partials: (m, l, o[hd]) per (token, head, chunk); `part_cap` f32s.
    pub(super) part: Buffer<u8>,
    pub(super) part_cap: usize,
    /// Split-K matmul partials: [split, n_tok, n_out]; `mm_part_cap` f32s.
    pub(super) mm_part: Buffer<u8>,
    pub(super) mm_part_cap: usize,
    /// The int8 prefill path's quantized activations (one matmul input at a time):
    /// `mmq_cap` int8 values in `mmq_q`, a scale and a scaled sum per 32 of them in
    /// `mmq_d` / `mmq_s`.
    pub(super) mmq_q: Buffer<u8>,
    pub(super) mmq_d: Buffer<u8>,
    pub(super) mmq_s: Buffer<u8>,
    pub(super) mmq_cap: usize,
    /// Two-pass argmax partials: (max, index bits) per piece; `argmax_part_cap` f32s.
    pub(super) argmax_part: Buffer<u8>,
    pub(super) argmax_part_cap: usize,
    /// Downloads in flight (`download_start`), by ticket; reused, so a decode step
    /// allocates nothing.
    pub(super) reads: Vec<ReadSlot>,
    /// f32 staging for a K/V projection into an f16 or Q8_0 cache (the matmul kernels
    /// write f32; `store_rows` converts): `max_tokens × max_row` f32s, `None` until
    /// `reserve` (and while an op holds it).
    pub(super) kv_tmp: Option<ClBuffer>,
}

impl Scratch {
    pub(super) fn new(context: &opencl3::context::Context) -> Result<Scratch> {
        Ok(Scratch {
            ids: IdsUpload::new(context, 1)?,
            part: create_buffer(context, CL_MEM_READ_WRITE, 4)?,
            part_cap: 0,
            mm_part: create_buffer(context, CL_MEM_READ_WRITE, 4)?,
            mm_part_cap: 0,
            mmq_q: create_buffer(context, CL_MEM_READ_WRITE, 4)?,
            mmq_d: create_buffer(context, CL_MEM_READ_WRITE, 4)?,
            mmq_s: create_buffer(context, CL_MEM_READ_WRITE, 4)?,
            mmq_cap: 0,
            argmax_part: create_buffer(context, CL_MEM_READ_WRITE, 4)?,
            argmax_part_cap: 0,
            reads: Vec::new(),
            kv_tmp: None,
        })
    }
}

fn check_alloc(be: &OpenClBackend, bytes: usize) -> Result<()> {
    if bytes as u64 > be.info.max_alloc {
        return Err(Error::range(
            format!("opencl buffer bytes ({})", be.info.name),
            bytes as u64,
            be.info.max_alloc,
        ));
    }
    Ok(())
}

pub(super) fn alloc(be: &OpenClBackend, bytes: usize, kind: BufferKind) -> Result<ClBuffer> {
    check_alloc(be, bytes)?;
    let (flags, k) = match kind {
        BufferKind::Device => (CL_MEM_READ_WRITE, ClMemKind::Device),
        BufferKind::Shared => (CL_MEM_READ_WRITE | CL_MEM_ALLOC_HOST_PTR, ClMemKind::Shared),
    };
    let mut mem = create_buffer(&be.context, flags, bytes)?;
    fill_zero(&be.q.q, &mut mem, 0, bytes.max(1))?;
    Ok(ClBuffer {
        mem,
        len: bytes,
        kind: k,
        host: None,
        img: None,
        rows: None,
        shared: None,
    })
}

pub(super) fn import_host(be: &OpenClBackend, region: HostRegion) -> Result<ClBuffer> {
    let len = region.len();
    check_alloc(be, len)?;
    if len > 0 && be.info.unified_memory {
        // Zero-copy: the buffer is the host bytes.
        return wrap_host(&be.context, &be.q.q, region);
    }
    let mem = if len > 0 {
        // Discrete device: one copy, made by clCreateBuffer before it returns.
        be.counters.import(len);
        let mem = create_buffer_copy(&be.context, region.bytes())?;
        migrate_to_device(&be.q.q, &mem)?;
        mem
    } else {
        create_buffer(&be.context, CL_MEM_READ_ONLY, 0)?
    };
    Ok(ClBuffer {
        mem,
        len,
        kind: ClMemKind::HostCopied,
        host: None,
        img: None,
        rows: None,
        shared: None,
    })
}

/// [`crate::backend::Backend::share_host_mut`]: a [`ClMemKind::HostShared`] buffer over
/// the caller's memory where the device shares host memory and can wrap that address;
/// otherwise why not (the caller copies instead).
///
/// # Safety
///
/// As `Backend::share_host_mut`: the memory stays allocated and in place until the
/// buffer is dropped, and the host touches it only while the buffer is mapped.
pub(super) unsafe fn share_host_mut(
    be: &OpenClBackend,
    host: *mut u8,
    len: usize,
) -> Result<core::result::Result<ClBuffer, alloc::string::String>> {
    if !be.info.unified_memory {
        return Ok(Err(format!(
            "{} does not share host memory (CL_DEVICE_HOST_UNIFIED_MEMORY false): a wrapped buffer would be copied behind our back",
            be.info.name
        )));
    }
    let align = (be.info.base_addr_align as usize).max(1);
    if len == 0 || !(host as usize).is_multiple_of(align) {
        return Ok(Err(format!(
            "host memory at {:#x} ({len} bytes) is not aligned to CL_DEVICE_MEM_BASE_ADDR_ALIGN ({align} bytes)",
            host as usize
        )));
    }
    check_alloc(be, len)?;
    // SAFETY: the caller's promise, passed on unchanged.
    unsafe { wrap_host_rw(&be.context, &be.q.q, host, len) }.map(Ok)
}

/// [`crate::backend::Backend::host_access`]: maps a shared buffer for the host (blocking;
/// it must map to the wrapped address, as the spec promises for `USE_HOST_PTR`) or
/// unmaps it for the device. Giving the device its turn also makes the block path set
/// its per-layer arguments afresh at the next launch (a cache buffer may have been
/// swapped since: its handle must not be trusted to mean the same memory).
pub(super) fn host_access(be: &OpenClBackend, buf: &mut ClBuffer, host: bool) -> Result<()> {
    let len = buf.len;
    let Some(sh) = &mut buf.shared else {
        return Ok(());
    };
    if host && !sh.mapped {
        let at = map_rw(&be.q.q, &buf.mem, len)?;
        sh.mapped = true;
        if at != sh.addr {
            return Err(Error::backend(
                "opencl",
                format!(
                    "clEnqueueMapBuffer of a USE_HOST_PTR buffer returned {at:#x}, not its host pointer {:#x}",
                    sh.addr
                ),
            ));
        }
    } else if !host && sh.mapped {
        unmap(&be.q.q, &buf.mem, sh.addr)?;
        sh.mapped = false;
        be.block_forget_args();
    }
    Ok(())
}

pub(super) fn import_weight(be: &OpenClBackend, region: HostRegion, dtype: DType, shape: Shape) -> Result<ClBuffer> {
    let planes = match (&be.img, shape.dims()) {
        (Some(p), &[rows, cols])
            if dtype == DType::Q4_0 && rows > 0 && cols % 32 == 0 && region.len() == rows * (cols / 32) * 18 =>
        {
            let t0 = std::time::Instant::now();
            let mut st = be.repack.get();
            let planes = match p.repack(&be.context, &be.q.q, region.bytes(), rows, cols) {
                Ok(Some(w)) => {
                    st.tensors += 1;
                    st.extra_bytes += w.bytes as u64;
                    be.counters.import(w.bytes);
                    Some(Box::new(w))
                }
                Ok(None) => {
                    st.kept_on_buffer += 1;
                    None
                }
                Err(e) => {
                    std::eprintln!(
                        "opencl: no image planes for a {rows}x{cols} Q4_0 weight ({e}): it stays on the buffer kernel"
                    );
                    st.kept_on_buffer += 1;
                    None
                }
            };
            st.repack_ns += t0.elapsed().as_nanos() as u64;
            be.repack.set(st);
            planes
        }
        _ => None,
    };
    let rows = match shape.dims() {
        &[rows, cols]
            if be.blk_repack
                && dtype == DType::Q4_0
                && rows > 0
                && cols % 32 == 0
                && Some(region.len()) == DType::Q4_0.row_bytes(cols).map(|rb| rows * rb) =>
        {
            let t0 = std::time::Instant::now();
            match rowsoa::upload(&be.context, &be.q.q, region.bytes(), rows, cols) {
                Ok(r) => {
                    let mut st = be.repack.get();
                    st.row_tensors += 1;
                    st.row_bytes += r.bytes as u64;
                    st.repack_ns += t0.elapsed().as_nanos() as u64;
                    be.repack.set(st);
                    be.counters.import(r.bytes);
                    Some(Box::new(r))
                }
                // (the block kernel reads the GGUF bytes of this one)
                Err(e) => {
                    std::eprintln!("opencl: no repacked copy of a {rows}x{cols} Q4_0 weight ({e})");
                    None
                }
            }
        }
        _ => None,
    };
    let mut buf = import_host(be, region)?;
    buf.img = planes;
    buf.rows = rows;
    Ok(buf)
}

pub(super) fn upload(be: &OpenClBackend, dst: &mut ClBuffer, offset: usize, src: &[u8]) -> Result<()> {
    if dst.read_only() {
        return Err(Error::read_only("upload destination"));
    }
    if offset.checked_add(src.len()).is_none_or(|e| e > dst.len) {
        return Err(Error::out_of_bounds("upload", "dst", offset, src.len(), dst.len));
    }
    if src.is_empty() {
        return Ok(());
    }
    write_blocking(&be.q.q, &mut dst.mem, offset, src)?;
    be.counters.upload(src.len());
    Ok(())
}

pub(super) fn download(be: &OpenClBackend, src: &ClBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
    check_read("download", src.len, offset, dst.len())?;
    if dst.is_empty() {
        return Ok(());
    }
    // A persistent block launch since the last read: its abort flag comes along.
    let check = be.block_check_enqueue()?;
    read_blocking(&be.q.q, &src.mem, offset, dst)?;
    be.counters.download(dst.len());
    if check {
        be.block_verdict()?;
    }
    Ok(())
}

pub(super) fn download_start(be: &mut OpenClBackend, src: &ClBuffer, offset: usize, len: usize) -> Result<PendingRead> {
    check_read("download_start", src.len, offset, len)?;
    let reads = &mut be.scratch.reads;
    let i = match reads.iter().position(|r| !r.busy()) {
        Some(i) => i,
        None => {
            reads.push(ReadSlot::default());
            reads.len() - 1
        }
    };
    // A block launch since the last check: its abort flag comes along (read first, so
    // the data read's event covers both).
    let status = be.block.as_ref().filter(|p| p.unchecked.get()).map(|p| p.sync.borrow());
    // The reads go to their own queue, after everything enqueued so far: the compute
    // queue moves on to the next step's kernels while they copy. (Later kernels do not
    // write the range: the caller's promise. They may set the abort flag, which then
    // reports a failure one read early — never hides one.)
    let marker = be.q.marker()?;
    let after = [marker.get()];
    be.scratch.reads[i].start(&be.read_queue, &src.mem, offset, len, status.as_deref(), &after)?;
    if status.is_some() {
        be.counters.download(4);
    }
    drop(status);
    if let Some(p) = &be.block {
        p.unchecked.set(false);
    }
    be.counters.download(len);
    // Everything queued so far goes to the device now.
    be.q.flush()?;
    be.read_queue.flush().map_err(cl_err("clFlush (read queue)"))?;
    Ok(PendingRead {
        offset,
        len,
        ticket: Some(i),
    })
}

pub(super) fn download_finish(be: &mut OpenClBackend, src: &ClBuffer, p: PendingRead, dst: &mut [u8]) -> Result<()> {
    p.check_dst(dst)?;
    let Some(i) = p.ticket else {
        return download(be, src, p.offset, dst);
    };
    let slot = be
        .scratch
        .reads
        .get_mut(i)
        .filter(|s| s.busy() && s.len() == p.len)
        .ok_or_else(|| Error::invalid(format!("download_finish: no download in flight as ticket {i}")))?;
    if let Some(status) = slot.finish(dst)? {
        be.block_status_verdict(status)?;
    }
    Ok(())
}

pub(super) fn reserve(be: &mut OpenClBackend, r: Reservation) -> Result<()> {
    // The model reserves once its weights are in: report what the image path cost.
    let st = be.repack.get();
    let (img_logged, rows_logged) = be.repack_logged.get();
    if be.img.as_ref().is_some_and(|p| p.log) && st.tensors + st.kept_on_buffer != img_logged {
        std::eprintln!(
            "opencl: image path: {} Q4_0 weights repacked, {:.1} MiB extra device memory, {:.1} ms; {} left on buffer kernels",
            st.tensors,
            st.extra_bytes as f64 / (1u64 << 20) as f64,
            st.repack_ns as f64 / 1e6,
            st.kept_on_buffer
        );
    }
    if be.log && st.row_tensors != rows_logged {
        std::eprintln!(
            "opencl: {} Q4_0 matrices repacked for the block kernel: {:.1} MiB of device memory beside the GGUF bytes",
            st.row_tensors,
            st.row_bytes as f64 / (1u64 << 20) as f64,
        );
    }
    be.repack_logged.set((st.tensors + st.kept_on_buffer, st.row_tensors));
    let s = &mut be.scratch;
    if r.max_tokens > s.ids.cap() {
        s.ids.wait()?;
        s.ids = IdsUpload::new(&be.context, r.max_tokens)?;
    }
    let part = r.max_tokens.min(SPLIT_MAX_TOK) * r.n_head * SPLIT_MAX_CHUNKS * (MAX_HD + 2);
    if r.max_ctx > SPLIT_MIN_CHUNK && part > s.part_cap {
        s.part = create_buffer(&be.context, CL_MEM_READ_WRITE, part * 4)?;
        s.part_cap = part;
    }
    let mm_part = MM_SPLIT_MAX * r.max_tokens * r.max_row;
    if r.max_tokens >= be.sz.mm_min_tok && mm_part > s.mm_part_cap {
        s.mm_part = create_buffer(&be.context, CL_MEM_READ_WRITE, mm_part * 4)?;
        s.mm_part_cap = mm_part;
    }
    let mmq = r.max_tokens * r.max_row.next_multiple_of(32);
    if be.mmq.is_some() && r.max_tokens >= be.sz.mm_min_tok && mmq > s.mmq_cap {
        s.mmq_q = create_buffer(&be.context, CL_MEM_READ_WRITE, mmq)?;
        s.mmq_d = create_buffer(&be.context, CL_MEM_READ_WRITE, mmq / 32 * 4)?;
        s.mmq_s = create_buffer(&be.context, CL_MEM_READ_WRITE, mmq / 32 * 4)?;
        s.mmq_cap = mmq;
    }
    let parts = r.max_tokens.max(1) * ARGMAX_MAX_PARTS * 2;
    if parts > s.argmax_part_cap {
        s.argmax_part = create_buffer(&be.context, CL_MEM_READ_WRITE, parts * 4)?;
        s.argmax_part_cap = parts;
    }
    let kv_tmp = r.max_tokens * r.max_row * 4;
    if be.scratch.kv_tmp.as_ref().is_none_or(|t| t.len < kv_tmp) {
        be.scratch.kv_tmp = Some(alloc(be, kv_tmp, BufferKind::Device)?);
    }
    be.block_reserve(r.max_ctx, r.n_head)
}

/// Uploads `ids` for a multi-token get_rows (the non-blocking write waits for the one
/// before it).
pub(super) fn upload_ids(be: &mut OpenClBackend, ids: &[u32]) -> Result<()> {
    if ids.len() > be.scratch.ids.cap() {
        return Err(Error::invalid(format!(
            "get_rows: {} ids but only {} reserved (call reserve)",
            ids.len(),
            be.scratch.ids.cap()
        )));
    }
    let bytes = be.scratch.ids.write(&be.q.q, ids)?;
    be.counters.upload(bytes);
    Ok(())
}
