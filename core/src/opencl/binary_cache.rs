//! The program-binary cache: a built program's device binary
//! (`clGetProgramInfo(CL_PROGRAM_BINARIES)`) kept on disk, so the next process on the
//! same device and driver loads it (`clCreateProgramWithBinary` + `clBuildProgram`,
//! which for a binary only links) instead of compiling the source again — seconds on
//! phone drivers and on PoCL, 14 s for every kernel family on the H200's driver.
//!
//! * **Where**: [`OpenClOptions::binary_cache`](super::OpenClOptions::binary_cache), by
//!   default `$ANTIGRAVITY_HOME/cl-cache` (else `~/.cache/antigravity/cl-cache`);
//!   `ANTIGRAVITY_OPENCL_BINARY_CACHE=0` turns it off, a path moves it.
//! * **Key**: one file per program, named by a 128-bit FNV-1a hash of everything the
//!   binary depends on — platform, device name, vendor, device version, driver version,
//!   the build options and the full source (generated header and preludes included) —
//!   so a new driver, a changed kernel or other options miss, never load stale code.
//! * **Not on CPU devices**: PoCL caches compiled kernels itself (`POCL_KERNEL_CACHE`,
//!   on by default: a warm start there is ~1.3 s instead of ~12 s for SmolLM2's
//!   programs), and asking it for `CL_PROGRAM_BINARIES` compiles every kernel of a
//!   program up front — over 8 minutes for `block.cl` on 2 cores, measured.
//! * **Failures never matter**: an unreadable, truncated or refused binary (or a build
//!   of it that fails) falls back to compiling the source, which then replaces the file;
//!   a write that fails only means the next start compiles again. Files are written to a
//!   temporary name and renamed, so a concurrent reader never sees half a binary.

use alloc::format;
use alloc::string::String;
use std::path::{Path, PathBuf};

use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::program::Program;
use opencl3::types::cl_device_id;

use crate::error::{Error, Result};

/// Where binaries go by default: `$ANTIGRAVITY_HOME/cl-cache`, else
/// `$HOME/.cache/antigravity/cl-cache`; `None` when neither is set.
pub fn default_dir(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(h) = get("ANTIGRAVITY_HOME").filter(|h| !h.is_empty()) {
        return Some(format!("{h}/cl-cache"));
    }
    get("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| format!("{h}/.cache/antigravity/cl-cache"))
}

/// 128-bit FNV-1a (two 64-bit lanes with different offsets), as hex.
fn hash_hex(parts: &[&[u8]]) -> String {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut a: u64 = 0xcbf2_9ce4_8422_2325;
    let mut b: u64 = 0x6c62_272e_07bb_0142;
    for p in parts {
        // Length first, so ("ab", "c") and ("a", "bc") differ.
        for &byte in (p.len() as u64).to_le_bytes().iter().chain(p.iter()) {
            a = (a ^ byte as u64).wrapping_mul(PRIME);
            b = (b ^ (byte ^ 0x5a) as u64).wrapping_mul(PRIME);
        }
    }
    format!("{a:016x}{b:016x}")
}

/// The cache file for `source` built with `options` on `dev`.
fn file_for(dir: &Path, dev: cl_device_id, file: &str, options: &str, source: &str) -> PathBuf {
    let d = Device::new(dev);
    let platform = d
        .platform()
        .ok()
        .and_then(|p| opencl3::platform::Platform::new(p).version().ok())
        .unwrap_or_default();
    let name = d.name().unwrap_or_default();
    let vendor = d.vendor().unwrap_or_default();
    let version = d.version().unwrap_or_default();
    let driver = d.driver_version().unwrap_or_default();
    let h = hash_hex(&[
        platform.as_bytes(),
        name.as_bytes(),
        vendor.as_bytes(),
        version.as_bytes(),
        driver.as_bytes(),
        options.as_bytes(),
        source.as_bytes(),
    ]);
    let stem = file.trim_end_matches(".cl");
    dir.join(format!("{stem}-{h}.bin"))
}

/// What [`build`] did (for the log and for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Loaded from the cache.
    Hit,
    /// Compiled from source; the binary was stored.
    Stored,
    /// Compiled from source; no cache, or storing failed.
    Compiled,
}

/// Builds `source` (family `file`) with `options`: from the cached binary when there is
/// a good one, else from source via `compile` (whose binary is then stored).
pub(super) fn build(
    dir: Option<&str>,
    context: &Context,
    dev: cl_device_id,
    file: &str,
    options: &str,
    source: &str,
    compile: impl FnOnce() -> Result<Program>,
) -> Result<(Program, Outcome)> {
    // CPU devices (PoCL) keep their own cache of compiled kernels (POCL_KERNEL_CACHE,
    // on by default), and their CL_PROGRAM_BINARIES compiles every kernel of the program
    // first: minutes for block.cl's barriers-in-a-loop on 2 cores (measured). Ours is
    // for GPU drivers.
    let is_cpu = Device::new(dev)
        .dev_type()
        .is_ok_and(|t| t & opencl3::device::CL_DEVICE_TYPE_CPU != 0);
    let Some(dir) = dir.filter(|_| !is_cpu) else {
        return Ok((compile()?, Outcome::Compiled));
    };
    let path = file_for(Path::new(dir), dev, file, options, source);
    if let Ok(bin) = std::fs::read(&path) {
        if let Ok(p) = from_binary(context, dev, &bin, options) {
            return Ok((p, Outcome::Hit));
        }
        // A bad file: compiled below and replaced.
    }
    let program = compile()?;
    let stored = program
        .get_binaries()
        .ok()
        .and_then(|mut bins| (bins.len() == 1 && !bins[0].is_empty()).then(|| bins.remove(0)))
        .is_some_and(|bin| store(&path, &bin).is_ok());
    Ok((program, if stored { Outcome::Stored } else { Outcome::Compiled }))
}

/// A program from a device binary, built (linked) with `options`.
fn from_binary(context: &Context, dev: cl_device_id, bin: &[u8], options: &str) -> Result<Program> {
    if bin.is_empty() {
        return Err(Error::backend("opencl", "empty program binary"));
    }
    let mut p = super::launch::program_from_binary(context, dev, bin)?;
    p.build(&[dev], options)
        .map_err(|e| Error::backend("opencl", format!("building a cached binary: {e}")))?;
    Ok(p)
}

fn store(path: &Path, bin: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bin)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_separates_its_parts() {
        assert_ne!(hash_hex(&[b"ab", b"c"]), hash_hex(&[b"a", b"bc"]));
        assert_ne!(hash_hex(&[b"x"]), hash_hex(&[b"y"]));
        assert_eq!(hash_hex(&[b"x"]).len(), 32);
        assert_eq!(hash_hex(&[b"x"]), hash_hex(&[b"x"]));
    }

    #[test]
    fn the_default_dir_follows_antigravity_home() {
        let get = |h: Option<&'static str>, home: Option<&'static str>| {
            move |k: &str| match k {
                "ANTIGRAVITY_HOME" => h.map(String::from),
                "HOME" => home.map(String::from),
                _ => None,
            }
        };
        assert_eq!(default_dir(get(Some("/a"), Some("/h"))).as_deref(), Some("/a/cl-cache"));
        assert_eq!(
            default_dir(get(None, Some("/h"))).as_deref(),
            Some("/h/.cache/antigravity/cl-cache")
        );
        assert_eq!(default_dir(get(None, None)), None);
    }
}
