//! The FFI boundary of the OpenCL backend: every `unsafe` call the backend makes lives
//! in this module, each block with the `// SAFETY:` argument that makes it sound.
//!
//! * **Typed launches.** A kernel is a [`Kern<A>`]: the `cl_kernel` and the one Rust
//!   struct `A` that mirrors its parameter list (declared with [`signature!`] in
//!   `kernels.rs`, one struct per kernel *signature*, shared by the kernels that have
//!   it). [`Queue::run`] takes a `&Kern<A>` and an `&A`, so a missing argument, an extra
//!   one or one of the wrong type is a compile error, not a device fault; arguments are
//!   set in field order, and [`Kern::create`] checks the compiled kernel's
//!   `CL_KERNEL_NUM_ARGS` against the struct's field count once, when the backend is
//!   built. Argument types are [`Mem`] (a `cl_mem` of a live buffer or image), `u32`,
//!   `i32`, `u64` (`ulong`), `f32` and [`Local`] (a `__local` buffer's size).
//! * **Enqueue.** [`Queue`] owns the compute queue: a launch without profiling asks for
//!   no event (creating and releasing one per launch is measurable host time), and the
//!   queue is flushed every [`FLUSH_EVERY`] launches; with profiling every launch's event
//!   goes to the [`Profiler`].
//! * **Transfers.** Buffer creation, fills, blocking reads and writes, migrations and
//!   markers are safe functions here; the two non-blocking transfers own the host
//!   memory they use until their event completes ([`IdsUpload`], [`ReadSlot`], both
//!   waiting on drop), so no caller can free or touch the bytes too early.

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr;

use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::error_codes::ClError;
use opencl3::event::Event;
use opencl3::kernel::Kernel;
use opencl3::memory::{
    Buffer, ClMem, Image, CL_MAP_READ, CL_MAP_WRITE, CL_MEM_COPY_HOST_PTR, CL_MEM_OBJECT_IMAGE1D_BUFFER,
    CL_MEM_READ_ONLY, CL_MEM_READ_WRITE, CL_MEM_USE_HOST_PTR, CL_RGBA,
};
use opencl3::program::Program;
use opencl3::types::{
    cl_event, cl_image_desc, cl_image_format, cl_mem, cl_mem_object_type, cl_uint, CL_BLOCKING, CL_NON_BLOCKING,
};

use super::buffer::{ClBuffer, ClMemKind};
use super::profile::Profiler;
use crate::backend::HostRegion;
use crate::error::{Error, Result};

/// Flush the queue after this many enqueued kernels, so the device starts on a token's
/// first layers while the host still enqueues the last ones (NVIDIA's driver otherwise
/// holds the work until the blocking logits read).
pub(super) const FLUSH_EVERY: u32 = 16;

pub(crate) fn cl_err(what: &'static str) -> impl Fn(ClError) -> Error {
    move |e| Error::backend("opencl", format!("{what}: {e}"))
}

// --- kernel arguments ------------------------------------------------------------------

/// A kernel argument that is a memory object: the `cl_mem` of a live buffer or image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Mem(pub(super) cl_mem);

impl Mem {
    pub(super) fn of<T: ClMem>(m: &T) -> Mem {
        Mem(m.get())
    }
}

/// A `__local` buffer argument: its size in bytes (no host data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Local(pub(super) usize);

/// A value that can be a kernel argument. Implemented only for the types our kernels
/// declare (see the module docs); setting one is safe because its size and kind always
/// match what the typed signature says the parameter is.
pub(super) trait Arg {
    fn set(&self, k: &Kernel, index: u32) -> core::result::Result<(), ClError>;
}

macro_rules! scalar_arg {
    ($($t:ty),+) => {$(
        impl Arg for $t {
            fn set(&self, k: &Kernel, index: u32) -> core::result::Result<(), ClError> {
                // SAFETY: a plain scalar passed by value: the driver copies its
                // size_of bytes; the signature struct declares parameter `index` with
                // this very type (u32 = uint, i32 = int, u64 = ulong, f32 = float).
                unsafe { k.set_arg(index, self) }
            }
        }
    )+};
}
scalar_arg!(u32, i32, u64, f32);

impl Arg for Mem {
    fn set(&self, k: &Kernel, index: u32) -> core::result::Result<(), ClError> {
        // SAFETY: the driver reads one cl_mem handle (pointer-sized) from `&self.0`; the
        // handle belongs to a live buffer or image (callers take it from a ClBuffer,
        // scratch buffer or image they hold), and parameter `index` is a
        // `__global` pointer or image in the signature.
        unsafe { k.set_arg(index, &self.0) }
    }
}

impl Arg for Local {
    fn set(&self, k: &Kernel, index: u32) -> core::result::Result<(), ClError> {
        // SAFETY: a `__local` parameter takes a size and no host pointer.
        unsafe { k.set_arg_local_buffer(index, self.0) }
    }
}

/// Sets argument `index` of `k` to `v` (the error names the kernel and index).
pub(super) fn set_arg<T: Arg>(k: &Kernel, index: u32, v: &T) -> Result<()> {
    v.set(k, index).map_err(|e| {
        Error::backend(
            "opencl",
            format!("clSetKernelArg {index} of {:?}: {e}", k.function_name()),
        )
    })
}

/// A kernel signature: a struct whose fields are the kernel's parameters, in order.
pub(super) trait Args {
    /// Parameter names, in order (their count is checked against the compiled kernel).
    const FIELDS: &'static [&'static str];
    /// Sets every field as arguments `base`, `base + 1`, ….
    fn set_from(&self, k: &Kernel, base: u32) -> Result<()>;
}

/// Declares kernel signature structs: `signature! { /// docs
/// pub(super) struct Add { dst: Mem, dst_off: u64, … } }` — one field per kernel
/// parameter, in the kernel's order, each of an [`Arg`] type.
macro_rules! signature {
    ($($(#[$m:meta])* struct $name:ident { $($f:ident : $t:ty),+ $(,)? })+) => {$(
        $(#[$m])*
        pub(super) struct $name { $(pub(super) $f: $t),+ }
        impl $crate::opencl::launch::Args for $name {
            const FIELDS: &'static [&'static str] = &[$(stringify!($f)),+];
            fn set_from(&self, k: &opencl3::kernel::Kernel, base: u32) -> $crate::error::Result<()> {
                let mut i = base;
                $(
                    $crate::opencl::launch::set_arg(k, i, &self.$f)?;
                    i += 1;
                )+
                let _ = i;
                Ok(())
            }
        }
    )+};
}
pub(super) use signature;

/// Index of parameter `name` in `fields` (compile-time: a misspelt name does not build).
pub(super) const fn field_index(fields: &[&str], name: &str) -> u32 {
    let mut i = 0;
    while i < fields.len() {
        let (a, b) = (fields[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i as u32;
            }
        }
        i += 1;
    }
    panic!("no such kernel parameter")
}

/// A kernel object whose parameter list is the signature struct `A`.
pub(super) struct Kern<A> {
    k: Kernel,
    /// The kernel's name (`mul_mv_q4_0_f32`), for errors and profiles.
    pub(super) name: &'static str,
    _sig: PhantomData<fn(&A)>,
}

impl<A> Kern<A> {
    /// Creates kernel `name` of `program`, checking it takes `n_args` parameters.
    pub(super) fn create_n(program: &Program, name: &'static str, n_args: usize) -> Result<Kern<A>> {
        let k = Kernel::create(program, name)
            .map_err(|e| Error::backend("opencl", format!("clCreateKernel {name}: {e}")))?;
        let got = k.num_args().map_err(cl_err("CL_KERNEL_NUM_ARGS"))? as usize;
        if got != n_args {
            return Err(Error::backend(
                "opencl",
                format!("kernel {name} takes {got} arguments, its Rust signature {n_args}"),
            ));
        }
        Ok(Kern {
            k,
            name,
            _sig: PhantomData,
        })
    }

    /// The work-group size the compiled kernel allows on `dev`.
    pub(super) fn work_group_size(&self, dev: opencl3::types::cl_device_id) -> Result<usize> {
        self.k
            .get_work_group_size(dev)
            .map_err(cl_err("kernel work-group size"))
    }

    /// Private (spill) bytes per work-item of the compiled kernel (0 when unknown).
    pub(super) fn private_mem(&self, dev: opencl3::types::cl_device_id) -> u64 {
        self.k.get_private_mem_size(dev).unwrap_or(0)
    }

    /// Sets the arguments from `base` on with a sub-signature `S` (kernels whose
    /// parameter list is several signatures in a row, like `llama_blocks_f32`'s shared
    /// and per-layer sets).
    pub(super) fn set_part<S: Args>(&self, base: u32, args: &S) -> Result<()> {
        args.set_from(&self.k, base)
    }

    /// Sets one argument (the per-token scalars of a kernel whose other arguments stay
    /// set between launches); callers take `index` from [`field_index`].
    pub(super) fn set_one<T: Arg>(&self, index: u32, v: &T) -> Result<()> {
        set_arg(&self.k, index, v)
    }
}

impl<A: Args> Kern<A> {
    /// Creates kernel `name` of `program`; an error when its parameter count differs from
    /// the signature's.
    pub(super) fn create(program: &Program, name: &'static str) -> Result<Kern<A>> {
        Kern::create_n(program, name, A::FIELDS.len())
    }
}

// --- the queue and launches ------------------------------------------------------------

/// The compute queue and the launch path (event-less enqueue, periodic flush, profiling).
pub(super) struct Queue {
    pub(super) q: Arc<CommandQueue>,
    /// The loaded OpenCL library, for the event-less enqueue.
    rt: &'static cl3::OpenClRuntime,
    /// Kernels enqueued since the last flush.
    unflushed: Cell<u32>,
    /// Per-kernel device times (profiling on).
    pub(super) prof: Option<Profiler>,
}

impl Queue {
    pub(super) fn new(q: CommandQueue, profiling: bool) -> Result<Queue> {
        let rt = cl3::load_library()
            .as_ref()
            .map_err(|e| Error::backend("opencl", format!("loading the OpenCL library: {e}")))?;
        Ok(Queue {
            q: Arc::new(q),
            rt,
            unflushed: Cell::new(0),
            prof: profiling.then(Profiler::default),
        })
    }

    /// Sets `args` on `k` and enqueues it over `gws` / `lws` (1 to 3 dimensions).
    pub(super) fn run<A: Args>(&self, k: &Kern<A>, args: &A, gws: &[usize], lws: Option<&[usize]>) -> Result<()> {
        args.set_from(&k.k, 0)?;
        self.enqueue(k, gws, lws)
    }

    /// Enqueues `k`, whose arguments are all set already (by [`Queue::run`], or by
    /// [`Kern::set_part`] / [`Kern::set_one`] for kernels that keep them between launches).
    pub(super) fn enqueue<A>(&self, k: &Kern<A>, gws: &[usize], lws: Option<&[usize]>) -> Result<()> {
        let err = |e: i32| Error::backend("opencl", format!("enqueue {}: {}", k.name, ClError(e)));
        if let Some(l) = lws {
            debug_assert_eq!(l.len(), gws.len());
        }
        if let Some(prof) = &self.prof {
            // SAFETY: every argument of the kernel was set (a Kern's arguments are set
            // whole by `run`, or whole once and then in part by the block path) to live
            // buffers and scalars of the signature's types; `gws`/`lws` have the same
            // length (the work dimension); buffers a kernel reads or writes stay alive
            // until it finishes (ClBuffer drops wait for the queue where the bytes are
            // the host's; other cl_mems are reference-counted by the driver).
            let ev = unsafe {
                self.q.enqueue_nd_range_kernel(
                    k.k.get(),
                    gws.len() as u32,
                    ptr::null(),
                    gws.as_ptr(),
                    lws.map_or(ptr::null(), |l| l.as_ptr()),
                    &[],
                )
            }
            .map_err(|e| err(e.0))?;
            prof.push(k.name, ev);
            return Ok(());
        }
        // The same call as above with a null event pointer (the same argument: arguments
        // set, live buffers, gws/lws of the work dimension's length; cl3 types the entry
        // point as a safe fn pointer).
        let status = self
            .rt
            .clEnqueueNDRangeKernel(
                self.q.get(),
                k.k.get(),
                gws.len() as u32,
                ptr::null(),
                gws.as_ptr(),
                lws.map_or(ptr::null(), |l| l.as_ptr()),
                0,
                ptr::null(),
                ptr::null_mut(),
            )
            .ok_or_else(|| err(cl3::error_codes::DLOPEN_FUNCTION_NOT_AVAILABLE))?;
        if status != 0 {
            return Err(err(status));
        }
        let n = self.unflushed.get() + 1;
        if n >= FLUSH_EVERY {
            self.flush()?;
        } else {
            self.unflushed.set(n);
        }
        Ok(())
    }

    /// Submits everything queued so far to the device.
    pub(super) fn flush(&self) -> Result<()> {
        self.q.flush().map_err(cl_err("clFlush"))?;
        self.unflushed.set(0);
        Ok(())
    }

    pub(super) fn finish(&self) -> Result<()> {
        self.q.finish().map_err(cl_err("clFinish"))
    }

    /// A marker after everything enqueued so far (for another queue to wait on).
    pub(super) fn marker(&self) -> Result<Event> {
        // SAFETY: a marker with an empty wait list; the returned event owns its handle.
        unsafe { self.q.enqueue_marker_with_wait_list(&[]) }.map_err(cl_err("clEnqueueMarker"))
    }
}

// --- buffers and transfers -------------------------------------------------------------

/// A buffer of `bytes` (at least 1: clCreateBuffer rejects 0) with `flags`, no host data.
pub(super) fn create_buffer(context: &Context, flags: u64, bytes: usize) -> Result<Buffer<u8>> {
    // SAFETY: a null host pointer with flags that name none of the *_HOST_PTR modes
    // that read one (callers pass READ_WRITE / READ_ONLY / ALLOC_HOST_PTR).
    unsafe { Buffer::<u8>::create(context, flags, bytes.max(1), ptr::null_mut()) }
        .map_err(|e| Error::backend("opencl", format!("clCreateBuffer of {bytes} bytes: {e}")))
}

/// A read-only buffer holding a copy of `bytes` (`CL_MEM_COPY_HOST_PTR`: copied before
/// the call returns).
pub(super) fn create_buffer_copy(context: &Context, bytes: &[u8]) -> Result<Buffer<u8>> {
    // SAFETY: COPY_HOST_PTR reads `bytes.len()` bytes from the pointer during the call
    // only; the slice is valid for that long. clCreateBuffer rejects size 0: callers
    // pass non-empty slices (an empty one fails with a clear error, it is not UB).
    unsafe {
        Buffer::<u8>::create(
            context,
            CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
            bytes.len(),
            bytes.as_ptr() as *mut c_void,
        )
    }
    .map_err(|e| {
        Error::backend(
            "opencl",
            format!("clCreateBuffer of {} bytes (copy of host memory): {e}", bytes.len()),
        )
    })
}

/// A zero-copy read-only [`ClBuffer`] over `region`'s bytes (`CL_MEM_USE_HOST_PTR`): the
/// buffer keeps the region, and the queue that may read it, so the bytes outlive every
/// command that uses them (the ClBuffer's drop releases the cl_mem, then finishes the
/// queue, before the region goes).
pub(super) fn wrap_host(context: &Context, queue: &Arc<CommandQueue>, region: HostRegion) -> Result<ClBuffer> {
    let len = region.len();
    let host = region.bytes();
    // SAFETY: USE_HOST_PTR over `len` readable bytes that the returned ClBuffer keeps
    // alive and in place (a HostRegion never moves its bytes) until after the cl_mem is
    // released and the queue finished (see ClBuffer's field order and Drop). READ_ONLY:
    // the driver never writes through the pointer (the bytes may be a read-only file
    // mapping).
    let mem = unsafe {
        Buffer::<u8>::create(
            context,
            CL_MEM_READ_ONLY | CL_MEM_USE_HOST_PTR,
            len.max(1),
            host.as_ptr() as *mut c_void,
        )
    }
    .map_err(|e| Error::backend("opencl", format!("clCreateBuffer of {len} bytes over host memory: {e}")))?;
    Ok(ClBuffer {
        mem,
        len,
        kind: ClMemKind::HostZeroCopy,
        host: Some((region, queue.clone())),
        img: None,
        rows: None,
        shared: None,
    })
}

/// A read-write buffer over `len` bytes at `host` (`CL_MEM_USE_HOST_PTR`), owned by the
/// caller: [`ClMemKind::HostShared`], starting unmapped (in device hands).
///
/// # Safety
///
/// `host..host + len` is one live, writable allocation that stays in place until the
/// returned buffer is dropped, and the host touches it only while the buffer is mapped
/// ([`map_rw`] .. [`unmap`]).
pub(super) unsafe fn wrap_host_rw(
    context: &Context,
    queue: &Arc<CommandQueue>,
    host: *mut u8,
    len: usize,
) -> Result<ClBuffer> {
    // SAFETY: USE_HOST_PTR over `len` writable bytes that the caller keeps alive and in
    // place until the buffer (which finishes the queue on drop) is gone; the host only
    // touches them while mapped (the caller's promise, kept by `SharedHost`).
    let mem = unsafe {
        Buffer::<u8>::create(
            context,
            CL_MEM_READ_WRITE | CL_MEM_USE_HOST_PTR,
            len,
            host as *mut c_void,
        )
    }
    .map_err(|e| {
        Error::backend(
            "opencl",
            format!("clCreateBuffer (USE_HOST_PTR, read-write) of {len} bytes: {e}"),
        )
    })?;
    Ok(ClBuffer {
        mem,
        len,
        kind: ClMemKind::HostShared,
        host: None,
        img: None,
        rows: None,
        shared: Some(super::buffer::SharedHost {
            addr: host as usize,
            mapped: false,
            queue: queue.clone(),
        }),
    })
}

/// Blocking map of the whole buffer for reading and writing (after every op queued
/// before it); returns the mapped address.
pub(super) fn map_rw(q: &CommandQueue, buf: &Buffer<u8>, len: usize) -> Result<usize> {
    let mut p: cl_mem = ptr::null_mut();
    // SAFETY: blocking map of the buffer's own range; the pointer is only compared by
    // the caller (a USE_HOST_PTR buffer maps to its host pointer) and handed back to
    // `unmap`.
    unsafe { q.enqueue_map_buffer(buf, CL_BLOCKING, CL_MAP_READ | CL_MAP_WRITE, 0, len, &mut p, &[]) }
        .map(drop)
        .map_err(cl_err("clEnqueueMapBuffer"))?;
    Ok(p as usize)
}

/// Enqueues the unmap of a mapping made by [`map_rw`] at `addr` (the in-order queue
/// runs later kernels after it).
pub(super) fn unmap(q: &CommandQueue, buf: &Buffer<u8>, addr: usize) -> Result<()> {
    // SAFETY: `addr` is the pointer the matching map returned for this buffer.
    unsafe { q.enqueue_unmap_mem_object(buf.get(), addr as *mut c_void, &[]) }
        .map(drop)
        .map_err(cl_err("clEnqueueUnmapMemObject"))
}

/// Enqueues `buf[offset..offset + len] = 0`.
pub(super) fn fill_zero(q: &CommandQueue, buf: &mut Buffer<u8>, offset: usize, len: usize) -> Result<()> {
    // SAFETY: the pattern (one byte) is copied by the driver at enqueue; the caller
    // passes a range inside the buffer (its own size or a checked one).
    unsafe { q.enqueue_fill_buffer(buf, &[0u8], offset, len, &[]) }
        .map(drop)
        .map_err(cl_err("clEnqueueFillBuffer"))
}

/// Blocking write of `src` at `offset` (range checked by the caller).
pub(super) fn write_blocking(q: &CommandQueue, dst: &mut Buffer<u8>, offset: usize, src: &[u8]) -> Result<()> {
    // SAFETY: blocking: `src` is only read before this call returns.
    unsafe { q.enqueue_write_buffer(dst, CL_BLOCKING, offset, src, &[]) }
        .map(drop)
        .map_err(cl_err("clEnqueueWriteBuffer"))
}

/// Blocking read into `dst` from `offset` (range checked by the caller); on an in-order
/// queue it runs after everything enqueued before it.
pub(super) fn read_blocking(q: &CommandQueue, src: &Buffer<u8>, offset: usize, dst: &mut [u8]) -> Result<()> {
    // SAFETY: blocking: `dst` is written only before this call returns.
    unsafe { q.enqueue_read_buffer(src, CL_BLOCKING, offset, dst, &[]) }
        .map(drop)
        .map_err(cl_err("clEnqueueReadBuffer"))
}

/// Moves `buf` to the queue's device now and waits (a driver may defer an upload to the
/// buffer's first use; the first forward pass would pay it).
pub(super) fn migrate_to_device(q: &CommandQueue, buf: &Buffer<u8>) -> Result<()> {
    let m = buf.get();
    // SAFETY: one live cl_mem handle, read by the call only; flags 0 = to the queue's
    // device, contents kept.
    let ev = unsafe { q.enqueue_migrate_mem_object(1, &m, 0, &[]) }.map_err(cl_err("clEnqueueMigrateMemObjects"))?;
    ev.wait().map_err(cl_err("waiting for a buffer migration"))
}

/// `cl_image_desc` as OpenCL 1.2 lays it out (opencl-sys types the last member as a
/// plain field or as an anonymous union depending on a feature; the layout is the same).
#[repr(C)]
struct ImageDesc {
    image_type: cl_mem_object_type,
    image_width: usize,
    image_height: usize,
    image_depth: usize,
    image_array_size: usize,
    image_row_pitch: usize,
    image_slice_pitch: usize,
    num_mip_levels: cl_uint,
    num_samples: cl_uint,
    buffer: cl_mem,
}
const _: () = assert!(core::mem::size_of::<ImageDesc>() == core::mem::size_of::<cl_image_desc>());

/// A read-only `image1d_buffer` of `texels` RGBA texels of channel type `ty` over `buf`.
pub(super) fn create_image1d_buffer(context: &Context, buf: &Buffer<u8>, ty: u32, texels: usize) -> Result<Image> {
    let format = cl_image_format {
        image_channel_order: CL_RGBA,
        image_channel_data_type: ty,
    };
    let desc = ImageDesc {
        image_type: CL_MEM_OBJECT_IMAGE1D_BUFFER as cl_mem_object_type,
        image_width: texels,
        image_height: 0,
        image_depth: 0,
        image_array_size: 0,
        image_row_pitch: 0,
        image_slice_pitch: 0,
        num_mip_levels: 0,
        num_samples: 0,
        buffer: buf.get(),
    };
    // SAFETY: `format` and `desc` are valid for the call (desc has cl_image_desc's C
    // layout, size asserted above); `buf` is a live buffer (the driver rejects one too
    // small for `texels`); no host pointer (the image views the buffer).
    unsafe {
        Image::create(
            context,
            CL_MEM_READ_ONLY,
            &format,
            &desc as *const ImageDesc as *const cl_image_desc,
            ptr::null_mut(),
        )
    }
    .map_err(cl_err("clCreateImage (image1d_buffer)"))
}

/// Token ids of a multi-token `get_rows`: the device buffer and its host staging area,
/// which stays untouched until the non-blocking write from it has completed.
pub(super) struct IdsUpload {
    pub(super) buf: Buffer<u8>,
    host: Vec<u32>,
    event: Option<Event>,
}

impl IdsUpload {
    pub(super) fn new(context: &Context, cap: usize) -> Result<IdsUpload> {
        Ok(IdsUpload {
            buf: create_buffer(context, CL_MEM_READ_ONLY, cap.max(1) * 4)?,
            host: vec![0; cap.max(1)],
            event: None,
        })
    }

    /// Ids the buffer holds.
    pub(super) fn cap(&self) -> usize {
        self.host.len()
    }

    /// Waits for the write in flight, if any.
    pub(super) fn wait(&mut self) -> Result<()> {
        if let Some(ev) = self.event.take() {
            ev.wait().map_err(cl_err("waiting for ids upload"))?;
        }
        Ok(())
    }

    /// Enqueues a non-blocking write of `ids` (at most [`IdsUpload::cap`]); the bytes
    /// written.
    pub(super) fn write(&mut self, q: &CommandQueue, ids: &[u32]) -> Result<usize> {
        debug_assert!(ids.len() <= self.host.len());
        self.wait()?;
        self.host[..ids.len()].copy_from_slice(ids);
        let bytes: &[u8] = bytemuck::cast_slice(&self.host[..ids.len()]);
        // SAFETY: non-blocking write from `host`, which is not touched again until
        // `event` has completed (`wait` above, before the next write, and on drop); the
        // buffer holds `cap` >= ids.len() u32s.
        let ev = unsafe { q.enqueue_write_buffer(&mut self.buf, CL_NON_BLOCKING, 0, bytes, &[]) }
            .map_err(cl_err("clEnqueueWriteBuffer (ids)"))?;
        self.event = Some(ev);
        Ok(bytes.len())
    }
}

impl Drop for IdsUpload {
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

/// One started download (`download_start`): the bytes, the block kernel's abort flag
/// read with them (when a block launch ran since the last check), and the read's event.
/// Both landing areas are on the heap, so the slot may move while a read fills them.
#[derive(Default)]
pub(super) struct ReadSlot {
    data: Vec<u8>,
    status: Box<[u8; 4]>,
    checks_block: bool,
    event: Option<Event>,
}

impl ReadSlot {
    /// Whether a read is in flight.
    pub(super) fn busy(&self) -> bool {
        self.event.is_some()
    }

    /// Bytes of the read in flight.
    pub(super) fn len(&self) -> usize {
        self.data.len()
    }

    /// Enqueues on `rq`, after the events `after`: first (when `status_of` is given) the
    /// 4-byte abort flag at byte 4 of it, then `len` bytes of `src` from `offset` (range
    /// checked by the caller).
    pub(super) fn start(
        &mut self,
        rq: &CommandQueue,
        src: &Buffer<u8>,
        offset: usize,
        len: usize,
        status_of: Option<&Buffer<u8>>,
        after: &[cl_event],
    ) -> Result<()> {
        debug_assert!(self.event.is_none());
        self.data.resize(len, 0);
        self.checks_block = status_of.is_some();
        if let Some(sync) = status_of {
            // SAFETY: non-blocking read of 4 bytes into the heap array `self.status`,
            // which is neither freed nor touched before the event of the data read below
            // completes (`finish` and drop wait for it; the in-order queue completes this
            // read before that one).
            unsafe { rq.enqueue_read_buffer(sync, CL_NON_BLOCKING, 4, &mut self.status[..], after) }
                .map_err(cl_err("clEnqueueReadBuffer (block status)"))?;
        }
        // SAFETY: as above for the heap bytes of `self.data` (resized before, not
        // resized or read until the event completes).
        let ev = unsafe { rq.enqueue_read_buffer(src, CL_NON_BLOCKING, offset, &mut self.data[..], after) }
            .map_err(cl_err("clEnqueueReadBuffer (started download)"))?;
        self.event = Some(ev);
        Ok(())
    }

    /// Waits for the read, copies it into `dst` (its length checked by the caller) and
    /// returns the abort flag read with it (`None`: none was).
    pub(super) fn finish(&mut self, dst: &mut [u8]) -> Result<Option<[u8; 4]>> {
        let ev = self
            .event
            .take()
            .ok_or_else(|| Error::invalid("download_finish: no read in flight"))?;
        ev.wait().map_err(cl_err("waiting for a started download"))?;
        dst.copy_from_slice(&self.data);
        Ok(core::mem::take(&mut self.checks_block).then_some(*self.status))
    }
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        if let Some(ev) = self.event.take() {
            let _ = ev.wait();
        }
    }
}

/// A 4-byte host landing area for the block kernel's abort flag, read non-blocking right
/// before a blocking read on the same in-order queue (which completes after it).
#[derive(Default)]
pub(super) struct FlagRead {
    bytes: Box<[u8; 4]>,
    event: Option<Event>,
}

impl FlagRead {
    /// Enqueues the read of the 4 bytes at byte 4 of `sync`.
    pub(super) fn start(&mut self, q: &CommandQueue, sync: &Buffer<u8>) -> Result<()> {
        self.wait()?;
        // SAFETY: non-blocking read of 4 bytes into the heap array `self.bytes`, which
        // is neither read nor freed before the event completes (`take` and drop wait for
        // it; `wait` above finished any earlier read into it).
        let ev = unsafe { q.enqueue_read_buffer(sync, CL_NON_BLOCKING, 4, &mut self.bytes[..], &[]) }
            .map_err(cl_err("clEnqueueReadBuffer (block status)"))?;
        self.event = Some(ev);
        Ok(())
    }

    fn wait(&mut self) -> Result<()> {
        if let Some(ev) = self.event.take() {
            ev.wait().map_err(cl_err("waiting for the block status read"))?;
        }
        Ok(())
    }

    /// The flag read (zeros when no read was started), clearing it.
    pub(super) fn take(&mut self) -> Result<[u8; 4]> {
        self.wait()?;
        Ok(core::mem::take(&mut *self.bytes))
    }
}

impl Drop for FlagRead {
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

/// A program from a device binary that an earlier build of ours produced
/// (`opencl/binary_cache.rs`); the caller still builds (links) it, and falls back to
/// the source on any error.
pub(super) fn program_from_binary(context: &Context, dev: opencl3::types::cl_device_id, bin: &[u8]) -> Result<Program> {
    // SAFETY: one device and one binary, as clCreateProgramWithBinary requires; the
    // driver validates the bytes (a malformed binary is an error code, not UB: the
    // binary status comes back as CL_INVALID_BINARY) and copies them before returning.
    unsafe { Program::create_from_binary(context, &[dev], &[bin]) }.map_err(cl_err("clCreateProgramWithBinary"))
}
