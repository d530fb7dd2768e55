//! Peer figures from llama.cpp's `llama-bench`, for the same model on the same machine.
//!
//! `--compare-llama-cpp PATH` runs `PATH -m MODEL -t THREADS -p 128 -n 128 -r 3 -o json`
//! and turns its JSON (an array of tests; `n_prompt`/`n_gen`/`n_depth` say which test,
//! `avg_ts` is tokens per second) into rows with `peer: "llama.cpp"`: a `pp128` test
//! becomes `prefill_tok_s` at `prompt_len` 128, a `tg128` test `decode_tok_s` averaged
//! over contexts 1..=128 (`ctx` 128, `tokens` 128), as our decode buckets are.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use super::error::{Error, Result};

/// One llama-bench test, the fields we use.
#[derive(Deserialize, Clone, Debug, PartialEq)]
pub struct LlamaBenchTest {
    #[serde(default)]
    pub backends: String,
    #[serde(default)]
    pub model_type: String,
    pub n_threads: u32,
    pub n_prompt: u64,
    pub n_gen: u64,
    #[serde(default)]
    pub n_depth: u64,
    pub avg_ts: f64,
    #[serde(default)]
    pub build_commit: String,
    #[serde(default)]
    pub samples_ts: Vec<f64>,
}

/// A peer measurement, ready to become a row.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerFigure {
    /// `prefill_tok_s` or `decode_tok_s`.
    pub metric: &'static str,
    pub value: f64,
    pub backend: String,
    pub quant: Option<String>,
    pub threads: u32,
    pub prompt_len: Option<u64>,
    /// Context at the end of the test (decode: depth + tokens generated).
    pub ctx: u64,
    pub tokens: u64,
    pub reps: u32,
    pub build_commit: String,
}

/// Parses `llama-bench -o json` output.
pub fn parse(json: &str) -> Result<Vec<PeerFigure>> {
    let tests: Vec<LlamaBenchTest> = serde_json::from_str(json).map_err(|e| Error::at("llama-bench JSON output", e))?;
    let mut out = Vec::new();
    for t in tests {
        let quant = t
            .model_type
            .split_whitespace()
            .find(|w| w.len() >= 2 && (w.starts_with('Q') || w.starts_with('F') || w.starts_with("BF")))
            .filter(|w| w[1..].chars().next().is_some_and(|c| c.is_ascii_digit()) || w.starts_with("BF"))
            .map(|w| w.to_lowercase());
        let backend = if t.backends.is_empty() {
            "cpu".to_string()
        } else {
            t.backends.to_lowercase()
        };
        let common = |metric, prompt_len, ctx, tokens| PeerFigure {
            metric,
            value: t.avg_ts,
            backend: backend.clone(),
            quant: quant.clone(),
            threads: t.n_threads,
            prompt_len,
            ctx,
            tokens,
            reps: t.samples_ts.len() as u32,
            build_commit: t.build_commit.clone(),
        };
        match (t.n_prompt, t.n_gen) {
            (p, 0) if p > 0 => out.push(common("prefill_tok_s", Some(p), t.n_depth + p, p)),
            (0, g) if g > 0 => out.push(common("decode_tok_s", None, t.n_depth + g, g)),
            _ => {} // pp+tg combined tests are not comparable to our figures
        }
    }
    Ok(out)
}

/// Runs `llama-bench` and parses its output.
pub fn run(bin: &Path, model: &Path, threads: usize, quick: bool) -> Result<Vec<PeerFigure>> {
    let reps = if quick { "1" } else { "3" };
    let out = Command::new(bin)
        .arg("-m")
        .arg(model)
        .args([
            "-t",
            &threads.to_string(),
            "-p",
            "128",
            "-n",
            "128",
            "-r",
            reps,
            "-o",
            "json",
        ])
        .output()
        .map_err(|e| Error::at(bin.display().to_string(), e))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(Error::at(
            bin.display().to_string(),
            format!("exited with {}: {tail}", out.status),
        ));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"[
      {"build_commit": "8cf427ff", "build_number": 5163, "cpu_info": "Some CPU",
       "backends": "CPU", "model_filename": "m.gguf", "model_type": "llama ?B Q4_1",
       "n_threads": 2, "n_prompt": 128, "n_gen": 0, "n_depth": 0, "avg_ns": 1,
       "avg_ts": 512.5, "stddev_ts": 1.0, "samples_ts": [510.0, 512.5, 515.0]},
      {"build_commit": "8cf427ff", "backends": "CPU", "model_type": "llama ?B Q4_1",
       "n_threads": 2, "n_prompt": 0, "n_gen": 128, "n_depth": 0,
       "avg_ts": 61.25, "stddev_ts": 0.5, "samples_ts": [61.0, 61.5, 61.25]}
    ]"#;

    #[test]
    fn parses_pp_and_tg_tests() {
        let f = parse(SAMPLE).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(
            (f[0].metric, f[0].value, f[0].prompt_len, f[0].ctx),
            ("prefill_tok_s", 512.5, Some(128), 128)
        );
        assert_eq!(
            (f[1].metric, f[1].value, f[1].ctx, f[1].tokens),
            ("decode_tok_s", 61.25, 128, 128)
        );
        assert_eq!(f[0].quant.as_deref(), Some("q4_1"));
        assert_eq!((f[0].backend.as_str(), f[0].threads, f[0].reps), ("cpu", 2, 3));
    }

    #[cfg(unix)]
    #[test]
    fn runs_a_llama_bench_binary_and_passes_the_flags() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::report::tests::TempDir::new("llama-bench");
        let bin = dir.0.join("llama-bench");
        let args_file = dir.0.join("args");
        let json = dir.0.join("out.json");
        std::fs::write(&json, SAMPLE).unwrap();
        let script = format!(
            "#!/bin/sh\necho \"$@\" > {}\ncat {}\n",
            args_file.display(),
            json.display()
        );
        std::fs::write(&bin, script).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = run(&bin, Path::new("m.gguf"), 2, false).unwrap();
        assert_eq!(f.len(), 2);
        let args = std::fs::read_to_string(&args_file).unwrap();
        assert_eq!(args.trim(), "-m m.gguf -t 2 -p 128 -n 128 -r 3 -o json");
        // A failing binary is an error naming it, not a panic.
        std::fs::write(&bin, "#!/bin/sh\necho boom >&2\nexit 3\n").unwrap();
        let e = run(&bin, Path::new("m.gguf"), 2, true).unwrap_err().to_string();
        assert!(e.contains("llama-bench") && e.contains("boom"), "{e}");
    }

    #[test]
    fn rejects_non_json() {
        assert!(parse("| model | size |").is_err());
    }
}
