//! Facts about where and with what a run happens: the machine, the git revision, the
//! build profile, the model file's identity (hashed once, cached), and process memory.
//! Linux `/proc` is read where it exists; elsewhere the fields fall back to `unknown`/0.

use std::path::{Path, PathBuf};

use super::error::Result;
use super::record::{Machine, ModelId};

/// The machine this process runs on.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    // x86: "model name"; ARM64 Linux: often only "CPU implementer"/"CPU part", and
    // sometimes "Hardware" or "Model".
    let cpu = field("model name")
        .or_else(|| field("Hardware"))
        .or_else(|| field("Model"))
        .or_else(|| {
            Some(format!(
                "{} implementer {} part {}",
                std::env::consts::ARCH,
                field("CPU implementer")?,
                field("CPU part")?
            ))
        })
        .unwrap_or_else(|| format!("{} unknown", std::env::consts::ARCH));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let mem_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| kib_field(&s, "MemTotal:"))
        .unwrap_or(0);
    Machine { cpu, cores, mem_bytes }
}

/// Reads a `Name:   1234 kB` field from a `/proc` file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Peak resident set size of this process (`VmHWM`), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    kib_field(&std::fs::read_to_string("/proc/self/status").ok()?, "VmHWM:")
}

/// Resets the peak-RSS counter (`echo 5 > /proc/self/clear_refs`, Linux ≥ 4.0), so a
/// later [`peak_rss_bytes`] measures only what follows. Returns whether it worked.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The 1-minute load average (`/proc/loadavg`).
pub fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `git rev-parse --short HEAD` in the current directory, or `unknown`; with `-dirty`
/// appended when tracked files differ from that commit (the figures then come from code
/// that no commit holds).
pub fn git_rev() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    let Some(rev) = git(&["rev-parse", "--short", "HEAD"]).map(|s| s.trim().to_string()) else {
        return "unknown".to_string();
    };
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.trim().is_empty());
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev
    }
}

/// `release` for a build without debug assertions (the workspace's dev and release
/// profiles alike, see `Cargo.toml`), or `dev-opt` for one with them (a profile that
/// turns them on: `debug_assert!` in kernels runs, so figures can be a little lower).
pub fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev-opt"
    } else {
        "release"
    }
}

/// The default model file name.
pub const DEFAULT_MODEL: &str = crate::fetch::DEFAULT_MODEL_FILE;

/// `--model`, or the default model — fetched on first use (with progress), as the README
/// promises. `None` (and a printed reason) only when fetching is impossible.
pub fn find_model(given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(p) => Some(p.to_path_buf()),
        None => match crate::fetch::default_model() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("could not get the default model: {e:#}");
                None
            }
        },
    }
}

/// The model's identity. The SHA-256 comes from [`crate::fetch::sha256_stamped`]: computed
/// once per (path, size, mtime) and kept in `<home>/sha256-cache.json`, so a 100 MB file
/// is not re-hashed every run.
pub fn model_id(path: &Path) -> Result<ModelId> {
    let hex = crate::fetch::sha256_stamped(path).map_err(|e| super::error::Error::msg(format!("{e:#}")))?;
    Ok(ModelId {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256_prefix: hex[..12].to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_parse() {
        assert_eq!(
            kib_field("VmPeak:\t 10 kB\nVmHWM:\t  2048 kB\n", "VmHWM:"),
            Some(2048 * 1024)
        );
        assert_eq!(
            kib_field("MemTotal:       24000000 kB", "MemTotal:"),
            Some(24_000_000 * 1024)
        );
        assert_eq!(kib_field("", "VmHWM:"), None);
    }
}
