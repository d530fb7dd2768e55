//! [`ClBuffer`] (an OpenCL buffer, its length and where its memory came from) and the
//! copy counters: every byte our code moves between host and device is counted, by
//! reason ([`CopyCounters`]).
//!
//! Views are passed to kernels as buffer + offset arguments, never as sub-buffers (a
//! GGUF tensor is only 32-byte aligned; sub-buffer origins must be
//! `CL_DEVICE_MEM_BASE_ADDR_ALIGN`-aligned, 128 bytes on PoCL): [`ClBuffer::arg`] is the
//! buffer, [`el`] turns an f32 view's byte offset into the element offset kernels take.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};

use opencl3::command_queue::CommandQueue;
use opencl3::memory::Buffer;

use super::launch::Mem;
use super::{image, rowsoa};
use crate::backend::HostRegion;
use crate::error::{Error, Result};

/// Bytes our code moved between host and device, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyCounters {
    /// Copies made by `import_host` (weights on a device without unified memory).
    pub import: u64,
    /// `upload` calls plus op inputs that come from the host (token ids).
    pub upload: u64,
    /// `download` calls.
    pub download: u64,
}

/// The live counters behind [`CopyCounters`].
#[derive(Default)]
pub(super) struct Counters {
    import: AtomicU64,
    upload: AtomicU64,
    download: AtomicU64,
}

impl Counters {
    pub(super) fn import(&self, bytes: usize) {
        self.import.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(super) fn upload(&self, bytes: usize) {
        self.upload.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(super) fn download(&self, bytes: usize) {
        self.download.fetch_add(bytes as u64, Ordering::Relaxed);
    }
    pub(super) fn get(&self) -> CopyCounters {
        CopyCounters {
            import: self.import.load(Ordering::Relaxed),
            upload: self.upload.load(Ordering::Relaxed),
            download: self.download.load(Ordering::Relaxed),
        }
    }
}

/// How a [`ClBuffer`]'s memory came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClMemKind {
    /// `alloc(.., Device)`: device memory.
    Device,
    /// `alloc(.., Shared)`: `CL_MEM_ALLOC_HOST_PTR`, host-visible.
    Shared,
    /// `import_host` on a unified-memory device: `CL_MEM_USE_HOST_PTR` over the host
    /// bytes themselves (zero-copy, read-only).
    HostZeroCopy,
    /// `import_host` on a discrete device: copied once at import (read-only).
    HostCopied,
    /// `share_host_mut` on a unified-memory device: `CL_MEM_USE_HOST_PTR |
    /// CL_MEM_READ_WRITE` over host memory someone else owns (the hybrid's CPU KV
    /// cache), handed between host and device by map / unmap ([`SharedHost`]).
    HostShared,
}

/// The host side of a [`ClMemKind::HostShared`] buffer: where the wrapped memory is,
/// whose turn it is, and the queue that maps it.
///
/// Invariants (what `share_host_mut`'s caller promised, and what this type keeps):
/// the memory outlives the buffer; the host touches it only while `mapped` (the
/// OpenCL rule for host pointers: between a map and the matching unmap); the
/// device's kernels run on it only while it is unmapped — a map is blocking and the
/// queue in order, so it completes after every kernel queued before it. On drop a
/// mapped buffer is unmapped and the queue finished before the `cl_mem` is released,
/// so no queued kernel touches the memory after its owner may free it.
pub(super) struct SharedHost {
    /// The wrapped host address (`usize`: the buffer stays `Send`; never dereferenced
    /// here, only compared with what a map returns).
    pub(super) addr: usize,
    pub(super) mapped: bool,
    pub(super) queue: Arc<CommandQueue>,
}

/// An OpenCL buffer: the `cl_mem`, its length and where it lives.
pub struct ClBuffer {
    // Field order matters: `mem` is released before `host`, whose bytes it may wrap.
    pub(super) mem: Buffer<u8>,
    pub(super) len: usize,
    pub(super) kind: ClMemKind,
    /// For `HostZeroCopy`: keeps the wrapped host bytes alive, and the queue that may
    /// still read them (finished on drop before the bytes can go away).
    pub(super) host: Option<(HostRegion, Arc<CommandQueue>)>,
    /// A Q4_0 weight's repacked image planes (`import_weight` with the image path on).
    pub(super) img: Option<Box<image::ImgWeight>>,
    /// A Q4_0 matrix's copy repacked for the block kernel (`rowsoa.rs`).
    pub(super) rows: Option<Box<rowsoa::RowSoa>>,
    /// For `HostShared`: the wrapped memory's address, map state and queue.
    pub(super) shared: Option<SharedHost>,
}

impl ClBuffer {
    pub fn kind(&self) -> ClMemKind {
        self.kind
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Device bytes of the repacked image planes kept beside this weight (0: none, the
    /// buffer kernels read it).
    pub fn repacked_bytes(&self) -> usize {
        self.img.as_ref().map_or(0, |i| i.bytes)
    }
    /// Device bytes of the block kernel's repacked copy of this weight (`rowsoa.rs`; 0:
    /// none, the block kernel reads the GGUF bytes).
    pub fn block_rows_bytes(&self) -> usize {
        self.rows.as_ref().map_or(0, |r| r.bytes)
    }
    pub(super) fn read_only(&self) -> bool {
        matches!(self.kind, ClMemKind::HostZeroCopy | ClMemKind::HostCopied)
    }
    /// The buffer as a read-only kernel argument.
    pub(super) fn arg(&self) -> Mem {
        Mem::of(&self.mem)
    }
    /// The buffer as a kernel argument the kernel writes: an error for imported
    /// (read-only) memory.
    pub(super) fn writable(&self, what: &'static str) -> Result<Mem> {
        if self.read_only() {
            return Err(Error::read_only(what));
        }
        Ok(self.arg())
    }
}

impl Drop for ClBuffer {
    fn drop(&mut self) {
        if let Some(sh) = &mut self.shared {
            if sh.mapped {
                // Unmap before release (a mapped buffer's mapping belongs to the buffer).
                let _ = super::launch::unmap(&sh.queue, &self.mem, sh.addr);
                sh.mapped = false;
            }
            // Kernels still queued may write the wrapped memory: done before its owner
            // can free it.
            let _ = sh.queue.finish();
        }
        if let Some((_, queue)) = &self.host {
            // Kernels still queued may read the wrapped host bytes; let them finish
            // before the region (e.g. the model's mmap) can be unmapped.
            let _ = queue.finish();
        }
    }
}

impl core::fmt::Debug for ClBuffer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ClBuffer({} bytes, {:?})", self.len, self.kind)
    }
}

/// An f32 view's element offset.
pub(super) fn el(offset: usize) -> u64 {
    (offset / 4) as u64
}

pub(super) fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}
