//! The one operating-system call the CPU backend makes: releasing the pages of a
//! memory-mapped file region it no longer reads (after repacking a weight), so the
//! process's resident memory holds each weight once. The file is untouched; a later
//! read of the range (none is made) would fault the pages back in from it.

/// Drops the whole pages inside `bytes` from this process (`madvise(MADV_DONTNEED)`).
/// `bytes` must lie in a read-only file mapping (`HostRegion::is_file_mapped`): on
/// anonymous memory the call would zero the pages. A no-op off Linux/Android or
/// without `std`; failures are ignored (the pages then stay resident, nothing else).
#[allow(unused_variables)]
pub(crate) fn release_pages(bytes: &[u8]) {
    #[cfg(all(feature = "std", any(target_os = "linux", target_os = "android")))]
    {
        extern "C" {
            fn madvise(addr: *mut core::ffi::c_void, len: usize, advice: i32) -> i32;
            fn sysconf(name: i32) -> i64;
        }
        const MADV_DONTNEED: i32 = 4;
        const SC_PAGESIZE: i32 = 30;
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { sysconf(SC_PAGESIZE) };
        let Ok(page @ 1..) = usize::try_from(page) else { return };
        
        let (a, e) = (bytes.as_ptr() as usize, bytes.as_ptr() as usize + bytes.len());
        let (start, end) = (a.next_multiple_of(page), e / page * page);
        if end > start {
            // SAFETY: [start, end) is a page-aligned range inside `bytes`, which the
            // caller guarantees is part of a read-only file mapping: MADV_DONTNEED only
            // drops those pages from the page tables, and nothing in this process reads
            // them afterwards (a read would fault them back in from the file).
            unsafe { madvise(start as *mut _, end - start, MADV_DONTNEED) };
        }
    }
}
