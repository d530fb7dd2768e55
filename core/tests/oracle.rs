//! The oracle gate in `cargo test`: every reference case on the CPU backend, for every
//! ISA this machine has; plus proof that the gate bites (a corrupted weight row in layer
//! k breaches first at block k; a swapped RoPE convention breaches at the first layer).

use std::path::{Path, PathBuf};

use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::oracle::{self, Corruption, Options, Report};
use antigravity_core::Error;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The SmolLM2 GGUF, if present (CI fetches it first; see scripts/test.sh).
fn smollm2() -> Option<PathBuf> {
    let home = std::env::var_os("ANTIGRAVITY_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/antigravity"));
    let p = home.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

fn show(rep: &Report) {
    for r in &rep.rows {
        eprintln!(
            "{:<20} {:<44} {:<24} {:>12.4e} {:>12}  {}",
            r.case,
            r.tensor,
            r.metric,
            r.value,
            r.limit.map_or("(none)".into(), |l| format!("{l:.3e}")),
            if r.pass() { "ok" } else { "FAIL" }
        );
    }
    for s in &rep.skipped {
        eprintln!("SKIP: {s}");
    }
}

/// With `ORACLE_DUMP=FILE`, appends every measurement as a JSON line (input to
/// `oracle/set_tolerances.py`, which sets limits from measured values).
fn dump(rep: &Report, isa: &str) {
    let Some(p) = std::env::var_os("ORACLE_DUMP") else {
        return;
    };
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap();
    for r in &rep.rows {
        let j =
            serde_json::json!({"isa": isa, "case": r.case, "tensor": r.tensor, "metric": r.metric, "value": r.value});
        writeln!(f, "{j}").unwrap();
    }
}

#[test]
fn oracle_passes_on_every_cpu_isa() {
    let sm = smollm2();
    if sm.is_none() {
        eprintln!("SKIP (SmolLM2 cases only): model not found; `cargo run -p harness -- fetch` downloads it");
    }
    for isa in Isa::ALL {
        let Some(_) = CpuBackend::with_isa(isa) else {
            eprintln!("note: ISA {} not available here", isa.name());
            continue;
        };
        let opts = Options {
            smollm2: sm.clone(),
            ..Options::default()
        };
        let rep = oracle::run(&root(), &opts, &|| {
            CpuBackend::with_isa(isa).ok_or(Error::invalid("isa"))
        })
        .unwrap();
        eprintln!("== oracle on cpu/{} ==", isa.name());
        show(&rep);
        dump(&rep, isa.name());
        assert!(
            rep.rows.iter().all(|r| r.limit.is_some()),
            "every compared tensor needs a tolerance in the manifest"
        );
        let fails: Vec<_> = rep.failures().collect();
        assert!(
            fails.is_empty(),
            "{}: {} breaches, first: {:?}",
            isa.name(),
            fails.len(),
            fails[0]
        );
    }
}

#[test]
fn corrupted_weight_row_breaches_at_its_layer() {
    for k in [0usize, 1] {
        let opts = Options {
            filter: Some("tiny-tied.long".into()),
            corrupt: Some(Corruption::WeightRow { layer: k }),
            smollm2: None,
        };
        let rep = oracle::run(&root(), &opts, &|| Ok(CpuBackend::with_isa(Isa::Scalar).unwrap())).unwrap();
        assert_eq!(
            rep.first_bad_layer("tiny-tied.long"),
            Some(k),
            "corruption in layer {k} must first show at block.{k}"
        );
        // And the layers before it stay within tolerance.
        assert!(rep
            .rows
            .iter()
            .filter(|r| r.layer.is_some_and(|l| l < k))
            .all(|r| r.pass()));
    }
}

#[test]
fn swapped_rope_convention_breaches_at_first_layer() {
    let opts = Options {
        filter: Some("tiny-untied.long".into()),
        corrupt: Some(Corruption::SwapRope),
        smollm2: None,
    };
    let rep = oracle::run(&root(), &opts, &|| Ok(CpuBackend::with_isa(Isa::Scalar).unwrap())).unwrap();
    assert_eq!(rep.first_bad_layer("tiny-untied.long"), Some(0));
    // The embedding is untouched by RoPE and must still pass.
    assert!(rep.rows.iter().filter(|r| r.tensor == "embed").all(|r| r.pass()));
}

/// The same gate on the OpenCL backend (PoCL in CI). Skips, saying why, when no OpenCL
/// device exists; `ANTIGRAVITY_OPENCL_REQUIRED=1` turns the skip into a failure.
#[cfg(feature = "opencl")]
#[test]
fn oracle_passes_on_opencl() {
    use antigravity_core::opencl::{OpenClBackend, OpenClOptions};
    if let Err(e) = OpenClBackend::new(OpenClOptions::from_env()) {
        assert!(
            std::env::var("ANTIGRAVITY_OPENCL_REQUIRED").is_err(),
            "OpenCL required but unavailable: {e}"
        );
        eprintln!("SKIP: no OpenCL device ({e})");
        return;
    }
    let opts = Options {
        smollm2: smollm2(),
        ..Options::default()
    };
    let rep = oracle::run(&root(), &opts, &|| OpenClBackend::new(OpenClOptions::from_env())).unwrap();
    eprintln!("== oracle on opencl ==");
    show(&rep);
    dump(&rep, "opencl");
    let fails: Vec<_> = rep.failures().collect();
    assert!(
        fails.is_empty(),
        "opencl: {} breaches, first: {:?}",
        fails.len(),
        fails[0]
    );
}
