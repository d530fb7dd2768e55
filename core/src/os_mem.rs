//! How much memory the system can still give this process, for refusing requests that
//! cannot fit before they are made (`Llama::new`). Linux and Android report it in
//! `/proc/meminfo` as `MemAvailable` (free memory plus reclaimable caches); elsewhere, or
//! without `std`, nothing is known and nothing is refused.

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
