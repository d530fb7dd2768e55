//! `harness oracle`: every reference case of `oracle/manifest.json` on the chosen
//! backend/ISA, printed as a table; exits non-zero on any breach and names the first
//! layer that diverges.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use antigravity_core::oracle::{self, Options, Report};

use crate::common::ModelArgs;

#[derive(Args, Debug)]
pub struct OracleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Only cases whose name contains this text.
    #[arg(long)]
    pub filter: Option<String>,
    /// Repository root holding `oracle/` (default: the current directory or the build's source tree).
    #[arg(long)]
    pub root: Option<PathBuf>,
}

/// Finds the repository root (the folder with `oracle/manifest.json`).
pub fn find_root(given: Option<&PathBuf>) -> Result<PathBuf> {
    let candidates = [
        given.cloned(),
        std::env::current_dir().ok(),
        Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))),
    ];
    for c in candidates.into_iter().flatten() {
        if c.join("oracle/manifest.json").exists() {
            return Ok(c);
        }
    }
    bail!("oracle/manifest.json not found; run from the repository root or pass --root")
}

pub fn print(rep: &Report) {
    println!(
        "{:<20} {:<44} {:<24} {:>12} {:>12}  {}",
        "case", "tensor", "metric", "value", "limit", "pass"
    );
    for r in &rep.rows {
        let limit = match r.limit {
            Some(l) => format!("{}{:.3e}", if r.upper { "≤" } else { "≥" }, l),
            None => "(none)".into(),
        };
        println!(
            "{:<20} {:<44} {:<24} {:>12.4e} {:>12}  {}",
            r.case,
            r.tensor,
            r.metric,
            r.value,
            limit,
            if r.pass() { "ok" } else { "FAIL" }
        );
    }
    for s in &rep.skipped {
        println!("skipped: {s}");
    }
}

pub fn run(a: &OracleArgs) -> Result<()> {
    let root = find_root(a.root.as_ref())?;
    let smollm2 = match &a.model.model {
        Some(p) => Some(p.clone()),
        None => crate::fetch::default_model().ok(),
    };
    let opts = Options {
        filter: a.filter.clone(),
        corrupt: None,
        smollm2,
    };
    if a.model.backend != "cpu" {
        bail!("--backend {} is not available in this build", a.model.backend);
    }
    let args = a.model.clone();
    let rep = oracle::run(&root, &opts, &|| {
        Ok(args
            .cpu_backend()
            .map_err(|e| antigravity_core::Error::invalid(e.to_string()))?)
    })?;
    print(&rep);
    let be = a.model.cpu_backend()?;
    let fails: Vec<_> = rep.failures().collect();
    println!(
        "\n{} comparisons on cpu/{} x{}: {} passed, {} failed",
        rep.rows.len(),
        antigravity_core::Backend::isa(&be),
        a.model.thread_count(),
        rep.rows.len() - fails.len(),
        fails.len()
    );
    if let Some(f) = fails.first() {
        let layer = rep
            .first_bad_layer(&f.case)
            .map(|l| format!(" — first diverging layer: block.{l}"))
            .unwrap_or_default();
        bail!(
            "oracle breach: {} / {} {} = {:.4e}{layer}",
            f.case,
            f.tensor,
            f.metric,
            f.value
        );
    }
    Ok(())
}
