//! The operating-system calls of the crate, in one place: how much memory the system
//! can still give (`MemAvailable` in `/proc/meminfo`, for refusing requests that cannot
//! fit before they are made, `Llama::new`), and the `madvise` hints around the CPU
//! backend's repacked weights — releasing the pages of a memory-mapped file region it no
//! longer reads (after repacking a weight), so resident memory holds each weight once
//! (the file is untouched; a later read would fault the pages back in from it), and
//! asking for transparent huge pages on the repacked copy. Elsewhere than Linux/Android,
//! or without `std`, nothing is known and the hints are no-ops.

/// Drops the whole pages inside `bytes` from this process (`madvise(MADV_DONTNEED)`).
/// `bytes` must lie in a read-only file mapping (`HostRegion::is_file_mapped`): on
/// anonymous memory the call would zero the pages. A no-op off Linux/Android or
/// without `std`; failures are ignored (the pages then stay resident, nothing else).
#[allow(unused_variables)]
pub(crate) fn release_pages(bytes: &[u8]) {
    advise(bytes, 4 /* MADV_DONTNEED */);
}

/// Asks for transparent huge pages on the whole pages inside `bytes`
/// (`madvise(MADV_HUGEPAGE)`), before they are first written. A hint: ignored where
/// THP is off, and off Linux/Android.
pub(crate) fn advise_huge(bytes: &mut [u8]) {
    advise(bytes, 14 /* MADV_HUGEPAGE */);
}

/// `madvise(advice)` on the whole pages inside `bytes`; errors are ignored (both uses
/// are hints whose failure changes no result).
#[allow(unused_variables)]
fn advise(bytes: &[u8], advice: i32) {
    #[cfg(all(feature = "std", any(target_os = "linux", target_os = "android")))]
    {
        extern "C" {
            fn madvise(addr: *mut core::ffi::c_void, len: usize, advice: i32) -> i32;
            fn sysconf(name: i32) -> i64;
        }
        const SC_PAGESIZE: i32 = 30;
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { sysconf(SC_PAGESIZE) };
        let Ok(page @ 1..) = usize::try_from(page) else { return };

        let (a, e) = (bytes.as_ptr() as usize, bytes.as_ptr() as usize + bytes.len());
        let (start, end) = (a.next_multiple_of(page), e / page * page);
        if end > start {
            // SAFETY: [start, end) is a page-aligned range inside `bytes`. The two
            // advices used change no contents a reader relies on: MADV_HUGEPAGE is a
            // hint; MADV_DONTNEED is only passed (by `release_pages`) for read-only file
            // mappings, where dropped pages fault back in from the file, and nothing in
            // this process reads them afterwards.
            unsafe { madvise(start as *mut _, end - start, advice) };
        }
    }
}

/// `MemAvailable` in bytes, where the system reports it.
pub(crate) fn available_bytes() -> Option<u64> {
    #[cfg(all(feature = "std", any(target_os = "linux", target_os = "android")))]
    {
        let text = std::fs::read_to_string("/proc/meminfo").ok()?;
        parse_meminfo(&text)
    }
    #[cfg(not(all(feature = "std", any(target_os = "linux", target_os = "android"))))]
    {
        None
    }
}

/// The `MemAvailable:` line of a `/proc/meminfo` text, in bytes.
#[cfg_attr(
    not(all(feature = "std", any(target_os = "linux", target_os = "android"))),
    allow(dead_code)
)]
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_mem_available() {
        let t = "MemTotal:       24576000 kB\nMemFree:         1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(super::parse_meminfo(t), Some(20_000_000 * 1024));
        assert_eq!(super::parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(super::parse_meminfo("MemAvailable: lots kB\n"), None);
    }
}
