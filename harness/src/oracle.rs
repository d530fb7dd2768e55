//! `harness oracle`: every reference case of `oracle/manifest.json` on the chosen
//! backend/ISA, printed as a table; exits non-zero on any breach and names the first
//! layer that diverges.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use antigravity_core::oracle::{self, Options, Report};

use crate::common::{BackendArg, ModelArgs};

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
        "{:<20} {:<44} {:<24} {:>12} {:>12}  pass",
        "case", "tensor", "metric", "value", "limit"
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
    let smollm2 = match &a.model.run.model {
        Some(p) => Some(p.clone()),
        // The oracle never downloads: without a cached model the SmolLM2 cases are skipped
        // (and say so); `harness fetch` gets it.
        None => crate::fetch::cached_default_model()?,
    };
    let opts = Options {
        filter: a.filter.clone(),
        corrupt: None,
        smollm2,
    };
    let cl_err = |e: anyhow::Error| antigravity_core::Error::invalid(format!("{e:#}"));
    let (rep, name, isa) = match a.model.run.backend {
        BackendArg::Cpu => {
            let args = a.model.run.clone();
            let rep = oracle::run(&root, &opts, &|| args.cpu_backend().map_err(cl_err))?;
            let be = a.model.run.cpu_backend()?;
            (rep, "cpu", antigravity_core::Backend::isa(&be).to_string())
        }
        BackendArg::Hybrid => {
            anyhow::bail!("the oracle runs one backend (cpu or opencl); the hybrid's oracle check with a switch mid-prompt is core/tests/hybrid.rs")
        }
        BackendArg::Opencl => {
            let be = crate::common::opencl_backend()?;
            let isa = antigravity_core::Backend::isa(&be).to_string();
            drop(be);
            let rep = oracle::run(&root, &opts, &|| crate::common::opencl_backend().map_err(cl_err))?;
            (rep, "opencl", isa)
        }
    };
    print(&rep);
    let fails: Vec<_> = rep.failures().collect();
    println!(
        "\n{} comparisons on {name}/{isa} ({} threads on the host): {} passed, {} failed",
        rep.rows.len(),
        a.model.run.thread_count(),
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
