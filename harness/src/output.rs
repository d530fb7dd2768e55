//! Writing a file the user named (`quantize --out`, `logits --out`) without ever losing
//! data: the output may not be one of the inputs (compared after resolving symbolic
//! links, and by inode for hard links), and it is written to a temporary file in the
//! target folder that is renamed over the target only once it is complete. A run that
//! fails — a full disk, a bad tensor, Ctrl-C — leaves the target as it was.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Refuses `out` when it is `input`, a link to it, or (for an HF directory) one of the
/// files inside it that the loader reads.
pub fn check_not_input(out: &Path, input: &Path) -> Result<()> {
    let out_real = resolve_out(out)?;
    let Ok(in_real) = std::fs::canonicalize(input) else {
        // A missing input is reported by the loader, with its own message.
        return Ok(());
    };
    let refuse = || {
        let linked = std::fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink()) || out_real != in_real;
        bail!(
            "--out {} is the same file as the input {}{}; writing it would destroy the input \
             while it is being read. Choose another output path.",
            out.display(),
            input.display(),
            if linked { " (through a link)" } else { "" }
        )
    };
    if out_real == in_real || same_inode(&out_real, &in_real) {
        return refuse();
    }
    if in_real.is_dir() && out_real.parent() == Some(in_real.as_path()) {
        let ext = out_real.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "safetensors" | "json") && out_real.exists() {
            bail!(
                "--out {} is a file of the input directory {}; writing it would destroy the input. \
                 Choose another output path.",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// `out` with its folder resolved (and, when it exists, the file itself, following links).
fn resolve_out(out: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(out) {
        return Ok(p);
    }
    let name = out
        .file_name()
        .with_context(|| format!("--out {} names no file", out.display()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent)
        .map_err(|e| anyhow::anyhow!("--out {}: folder {}: {e}", out.display(), parent.display()))?;
    Ok(dir.join(name))
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_: &Path, _: &Path) -> bool {
    false
}

/// Runs `write` on a temporary file beside `out` and renames it to `out` when `write`
/// succeeds; on failure the temporary file is removed and `out` is untouched.
pub fn write_atomically(out: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let real = resolve_out(out)?;
    if let Ok(m) = std::fs::metadata(&real) {
        // Renaming over a directory or a device (`/dev/null`) would replace it.
        if !m.is_file() {
            bail!("--out {} exists and is not a regular file", out.display());
        }
    }
    let dir = real.parent().unwrap_or(Path::new("."));
    let name = real.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
    let r = write(&tmp).and_then(|()| {
        std::fs::rename(&tmp, &real)
            .map_err(|e| anyhow::anyhow!("renaming {} to {}: {e}", tmp.display(), real.display()))
    });
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.with_context(|| format!("could not write {} (a file already there is unchanged)", out.display()))
}
