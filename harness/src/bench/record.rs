//! The result schema: one measurement per JSON line (`schema` 1).
//!
//! Every line carries everything needed to interpret it alone: when (`timestamp`, `run`),
//! what code (`git_rev`, `build`), where (`machine`), how (`backend`, `isa`, `threads`),
//! on what (`model`, `quant`, `ctx`, plus `shape`/`tokens`/`op`/`prompt_len` where they
//! apply), and the figure (`metric`, `value`, `unit`). Rows measured by another program
//! (llama.cpp's `llama-bench`) carry `peer`. `docs/benchmarking.md` is the reference for
//! the fields and metric names; this file is the one place that defines them in code.

use serde::{Deserialize, Serialize};

/// Current schema version, written in every line.
pub const SCHEMA: u32 = 1;

/// The machine a measurement was taken on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Machine {
    /// CPU model name as the OS reports it.
    pub cpu: String,
    /// Logical CPUs available to the process.
    pub cores: u32,
    /// Physical memory, bytes.
    pub mem_bytes: u64,
}

impl Machine {
    /// File-name slug: the CPU model, lower case, vendor marks and clock dropped, plus
    /// the core count (`intel-xeon-2c`, `amd-epyc-9b45-2c`).
    pub fn slug(&self) -> String {
        let mut s = self.cpu.to_lowercase();
        if let Some(i) = s.find('@') {
            s.truncate(i); // "… CPU @ 2.20GHz"
        }
        for mark in ["(r)", "(tm)", "(c)"] {
            s = s.replace(mark, " ");
        }
        // Words that name no model: "Processor", "CPU", "64-Core".
        let s: Vec<&str> = s
            .split_whitespace()
            .filter(|w| !matches!(*w, "processor" | "cpu") && !w.ends_with("-core"))
            .collect();
        let s = s.join(" ");
        let mut out = String::new();
        for c in s.chars() {
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        let out = out.trim_end_matches('-');
        let out = if out.is_empty() { "unknown-cpu" } else { out };
        format!("{out}-{}c", self.cores)
    }
}

/// The model file a measurement read.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId {
    /// File name (no directories: results must not leak local paths).
    pub file: String,
    /// First 12 hex digits of the file's SHA-256.
    pub sha256_prefix: String,
}

/// One measurement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Record {
    pub schema: u32,
    /// When this figure was measured (RFC 3339, UTC, seconds).
    pub timestamp: String,
    /// Identifies one `harness bench` invocation (its start time); rows of a run share it.
    pub run: String,
    /// `git rev-parse --short HEAD` at run time, or `unknown`.
    pub git_rev: String,
    /// `release` or `dev-opt` (debug assertions on).
    pub build: String,
    pub machine: Machine,
    /// `cpu`, `opencl`, or for `peer` rows the peer's own backend name.
    pub backend: String,
    /// Kernel ISA that ran (`scalar`, `avx2`, …); null where it does not apply.
    pub isa: Option<String>,
    /// Null for rows that read no model file (kernels on generated data, memory probe).
    pub model: Option<ModelId>,
    /// Weight type (`q4_0`, …) for kernel rows; the model's main type for end-to-end rows.
    pub quant: Option<String>,
    pub threads: u32,
    /// Context length (positions in the KV cache) the figure was measured at.
    pub ctx: Option<u64>,
    pub metric: String,
    pub value: f64,
    pub unit: String,
    /// Matrix shape `out x in` (matmul rows) or the op's tensor shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<String>,
    /// Tokens per call (matmul: 1 = matvec) or tokens in a decode bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// Op kind (`matmul`, `attention`, …) for per-op rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_len: Option<u64>,
    /// The other program that measured this row (`llama.cpp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Timed repetitions behind the figure (the median of them is `value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reps: Option<u32>,
    /// `quick` or `full` (`--quick` runs fewer repetitions and shorter plans).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// 1-minute load average when the run started (other work on a shared machine
    /// lowers figures; this says how busy it was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_1m: Option<f64>,
}

impl Record {
    /// The identity of the measured thing: every field except the figure and when/who.
    /// Two rows with equal keys measured the same thing (possibly in different runs).
    pub fn series_key(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.metric,
            self.backend,
            self.isa.as_deref().unwrap_or("-"),
            self.model.as_ref().map(|m| m.sha256_prefix.as_str()).unwrap_or("-"),
            self.quant.as_deref().unwrap_or("-"),
            self.threads,
            self.ctx.map(|c| c.to_string()).unwrap_or_default(),
            self.shape.as_deref().unwrap_or("-"),
            self.tokens.map(|c| c.to_string()).unwrap_or_default(),
            self.op.as_deref().unwrap_or("-"),
            self.prompt_len.map(|c| c.to_string()).unwrap_or_default(),
            self.peer.as_deref().unwrap_or("-"),
            self.build,
        )
    }

    /// A short label for the configuration that produced the row, used in legends:
    /// `cpu/avx2 1t`, `llama.cpp cpu 2t`.
    pub fn config_label(&self) -> String {
        match &self.peer {
            Some(p) => format!("{p} {} {}t", self.backend.to_lowercase(), self.threads),
            None => match &self.isa {
                Some(isa) => format!("{}/{isa} {}t", self.backend, self.threads),
                None => format!("{} {}t", self.backend, self.threads),
            },
        }
    }
}

/// Seconds since the Unix epoch as RFC 3339 UTC (`2026-11-26T06:25:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// Now, as [`rfc3339`].
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Days since 1970-01-01 to (year, month, day) — Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_674_300), "2026-11-26T06:25:00Z");
    }

    #[test]
    fn slugs() {
        let m = |cpu: &str, cores| Machine {
            cpu: cpu.into(),
            cores,
            mem_bytes: 0,
        };
        assert_eq!(m("Intel(R) Xeon(R) Processor", 2).slug(), "intel-xeon-2c");
        assert_eq!(m("AMD EPYC 9B45 64-Core Processor", 2).slug(), "amd-epyc-9b45-2c");
        assert_eq!(
            m("Intel(R) Core(TM) i7-8700 CPU @ 3.20GHz", 12).slug(),
            "intel-core-i7-8700-12c"
        );
        assert_eq!(m("", 4).slug(), "unknown-cpu-4c");
    }
}
