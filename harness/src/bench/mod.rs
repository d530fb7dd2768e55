//! `harness bench`: measures, writes JSON lines, renders the report.
//!
//! Parts, each a module:
//! * [`kernels`] — op micro-benchmarks on the model's shapes, per weight type and ISA;
//! * [`stream`] — the memory-bandwidth ceiling (read and copy, 1 and N threads);
//! * [`e2e`] — end-to-end load/prefill/decode profiling through the [`e2e::DecodeTarget`]
//!   trait; [`model_adapter`] is where the real model plugs in;
//! * [`llama_cpp`] — peer figures from `llama-bench`, when asked for;
//! * [`evict`] — `--evict` alone: decode tok/s past a small KV cache, per eviction policy.
//!
//! Every figure becomes one [`record::Record`] line appended to
//! `<out-dir>/<machine>-<date>.jsonl` the moment it is measured, so an interrupted run
//! keeps what it did. Then [`crate::report`] re-renders the charts from the files.

pub mod e2e;
pub mod env;
pub mod error;
pub mod evict;
pub mod kernels;
pub mod llama_cpp;
pub mod model_adapter;
pub mod record;
pub mod stream;
pub mod timing;

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use antigravity_core::cpu::{CpuBackend, Isa};
use antigravity_core::Backend;
use clap::{Args, ValueEnum};

use crate::common::{BackendArg, RunArgs};
use indicatif::{ProgressBar, ProgressStyle};

use error::{Error, IoContext, Result};
use record::{Machine, ModelId, Record, SCHEMA};
use timing::Budget;

/// Options of `harness bench`. Defaults live here and nowhere else.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// `--model` (a GGUF file here), `--backend`, `--isa` (`auto` times every ISA this
    /// CPU has; a name times only that one), `--threads` (the memory probe's N-thread
    /// run, the model and llama-bench): the same flags, checked the same way, as for
    /// `generate`.
    #[command(flatten)]
    pub run: RunArgs,
    /// Fewer repetitions and shorter runs (under a minute).
    #[arg(long)]
    pub quick: bool,
    /// Path to llama.cpp's `llama-bench`, to measure the same model as a peer.
    #[arg(long, value_name = "PATH")]
    pub compare_llama_cpp: Option<PathBuf>,
    /// Also print every JSON line to stdout.
    #[arg(long)]
    pub json: bool,
    /// Where result files go (default: the repository's `reports/results`).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Where charts and the summary go (default: the parent of the results folder).
    #[arg(long)]
    pub report_dir: Option<PathBuf>,
    /// Skip parts: any of `kernels`, `stream`, `e2e`, `report` (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<Part>,
    /// Measure only the CPU⇄OpenCL crossover table that `--backend hybrid` reads
    /// (prefill tok/s for prompts of 1…512 tokens, decode tok/s after each, init times,
    /// the hand-over's speed): written to reports/results/crossover-*.json and
    /// $ANTIGRAVITY_HOME/crossover/<machine>.json.
    #[arg(long)]
    pub crossover: bool,
    /// With --crossover: the longest context measured (prompts 1024, 2048, … up to it
    /// are added past 512).
    #[arg(long, default_value_t = 512, value_parser = crate::common::at_least_one)]
    pub crossover_max_ctx: usize,
    /// Measure only decode tok/s as a token stream runs past a small KV cache, with each
    /// eviction policy (docs/kv-cache.md): rows `evict_*` in
    /// <out-dir>/<machine>-<date>-evict.jsonl and the chart `decode_evict_tok_s`.
    #[arg(long)]
    pub evict: bool,
    /// With --evict: the cache's slots (the eviction budget).
    #[arg(long, default_value_t = 256, value_parser = crate::common::at_least_one)]
    pub evict_ctx: usize,
    /// With --evict: decode steps timed per policy (default 2048; with --quick 512).
    #[arg(long, value_parser = crate::common::at_least_one)]
    pub evict_tokens: Option<usize>,
    /// With --evict: the policies (comma separated; `none` runs once, with a cache that
    /// holds every position: the baseline).
    #[arg(long, value_delimiter = ',', value_parser = evict::parse_policy,
          default_value = "none,window,sinks,shift,h2o,tova")]
    pub evict_policies: Vec<antigravity_core::kv_evict::KvPolicy>,
    /// With --evict: eviction blocks (`auto`: the budget / 16; or slots), each run with
    /// every evicting policy (`--kv-evict-block` of `generate`).
    #[arg(long, value_delimiter = ',', value_parser = evict::parse_block, default_value = "auto,1")]
    pub evict_blocks: Vec<usize>,
    /// With --evict: the KV cache's element type (auto: the backend's default).
    #[arg(long, value_enum, default_value = "auto")]
    pub evict_kv_type: crate::common::KvTypeArg,
    /// With --backend hybrid: force a switch to the other backend before these token
    /// indices of every phase (each prefill pass is token 0 of its phase, the timed
    /// decode run's steps are 0…N-1); the policy makes no moves of its own then.
    #[arg(long, value_delimiter = ',')]
    pub switch_at: Vec<usize>,
    /// With --backend hybrid: the crossover table to read (default:
    /// $ANTIGRAVITY_HOME/crossover/<machine>.json, measured at first use if missing).
    #[arg(long, value_name = "FILE")]
    pub crossover_table: Option<PathBuf>,
    /// With --backend hybrid: print the policy's estimates and every decision.
    #[arg(long)]
    pub verbose: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Kernels,
    Stream,
    E2e,
    Report,
}

/// The repository's `reports/` folder when this binary runs from its checkout, else
/// `./reports`.
pub fn default_reports_dir() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("reports");
    if repo.is_dir() {
        std::fs::canonicalize(&repo).unwrap_or(repo)
    } else {
        PathBuf::from("reports")
    }
}

/// Facts shared by every row of one run, and the sink rows go to.
struct Run {
    run: String,
    git_rev: String,
    build: &'static str,
    machine: Machine,
    file: File,
    path: PathBuf,
    json: bool,
    mode: &'static str,
    load_1m: Option<f64>,
    rows: Vec<Record>,
}

impl Run {
    /// Starts a run: gathers its facts and opens (appends to) today's result file.
    fn open(out_dir: &Path, json: bool, quick: bool) -> Result<Run> {
        Run::open_named(out_dir, json, quick, "")
    }

    /// [`Run::open`] on `<machine>-<date><suffix>.jsonl` (a part measured on its own keeps
    /// its rows in a file of its own).
    fn open_named(out_dir: &Path, json: bool, quick: bool, suffix: &str) -> Result<Run> {
        let machine = env::machine();
        let started = record::now_rfc3339();
        let path = out_dir.join(format!("{}-{}{suffix}.jsonl", machine.slug(), &started[..10]));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        Ok(Run {
            run: started,
            git_rev: env::git_rev(),
            build: env::build_profile(),
            machine,
            file,
            path,
            json,
            mode: if quick { "quick" } else { "full" },
            load_1m: env::load_1m(),
            rows: Vec::new(),
        })
    }

    /// A row with this run's facts and neutral tags; the caller sets the tags that apply.
    fn row(&self, metric: &str, value: f64, unit: &str) -> Record {
        Record {
            schema: SCHEMA,
            timestamp: record::now_rfc3339(),
            run: self.run.clone(),
            git_rev: self.git_rev.clone(),
            build: self.build.to_string(),
            machine: self.machine.clone(),
            backend: "cpu".to_string(),
            isa: None,
            model: None,
            quant: None,
            threads: 1,
            ctx: None,
            metric: metric.to_string(),
            value,
            unit: unit.to_string(),
            shape: None,
            tokens: None,
            op: None,
            prompt_len: None,
            peer: None,
            reps: None,
            mode: Some(self.mode.to_string()),
            load_1m: self.load_1m,
        }
    }

    fn emit(&mut self, r: Record) -> Result<()> {
        if !r.value.is_finite() {
            // A NaN/inf figure means a broken measurement; keep it out of the data.
            eprintln!("warning: dropping non-finite {} ({})", r.metric, r.config_label());
            return Ok(());
        }
        let line = serde_json::to_string(&r).map_err(|e| Error::msg(e.to_string()))?;
        writeln!(self.file, "{line}").at(&self.path)?;
        if self.json {
            println!("{line}");
        }
        self.rows.push(r);
        Ok(())
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    pb
}

/// `harness bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let threads = a.run.thread_count();
    // A model the user named must be one the bench can run, before anything is measured.
    if let Some(p) = &a.run.model {
        antigravity_core::gguf::GgufFile::open(p)
            .map_err(|e| Error::msg(format!("--model: {e} (the bench runs GGUF files)")))?;
    }
    let budget = if a.quick { Budget::QUICK } else { Budget::FULL };
    let reports = a
        .out_dir
        .as_ref()
        .and_then(|d| d.parent().map(Path::to_path_buf))
        .unwrap_or_else(default_reports_dir);
    let out_dir = a.out_dir.clone().unwrap_or_else(|| reports.join("results"));
    let report_dir = a.report_dir.clone().unwrap_or(reports);
    std::fs::create_dir_all(&out_dir).at(&out_dir)?;
    if a.crossover {
        let m = crate::common::ModelArgs {
            run: a.run.clone(),
            weights: antigravity_core::dtype::DType::Q4_0,
            ctx: a.crossover_max_ctx + 32,
            kv_type: crate::common::KvTypeArg::Auto,
        };
        return crate::hybrid::bench_crossover(&m, &out_dir, a.crossover_max_ctx)
            .map_err(|e| Error::msg(format!("{e:#}")));
    }
    if a.evict {
        return run_evict(a, &out_dir, &report_dir);
    }
    if a.run.backend != BackendArg::Hybrid && (!a.switch_at.is_empty() || a.crossover_table.is_some() || a.verbose) {
        return Err(Error::msg(
            "--switch-at, --crossover-table and --verbose are for bench --backend hybrid",
        ));
    }

    let mut run = Run::open(&out_dir, a.json, a.quick)?;

    let isas: Vec<Isa> = match a.run.forced_isa().map_err(|e| Error::msg(format!("{e:#}")))? {
        None => Isa::ALL
            .into_iter()
            .filter(|&i| CpuBackend::with_isa(i).is_some())
            .collect(),
        Some(isa) => vec![isa],
    };
    eprintln!(
        "antigravity bench: build {} ({}), git {}, machine {} ({} cores, {:.1} GiB), backend {}, ISAs [{}], {}",
        run.build,
        if run.build == "release" {
            "optimized, no debug assertions: the dev and release profiles are alike"
        } else {
            "debug assertions on: figures can be a little low"
        },
        run.git_rev,
        run.machine.cpu,
        run.machine.cores,
        run.machine.mem_bytes as f64 / (1u64 << 30) as f64,
        a.run.backend.name(),
        isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", "),
        if a.quick { "quick" } else { "full" },
    );
    eprintln!("results: {}", run.path.display());
    if let Some(load) = run.load_1m.filter(|&l| l > LOAD_WARN) {
        eprintln!("{}", load_warning(load, run.machine.cores));
    }

    let mut notes: Vec<String> = Vec::new();
    // Fetch the default model only when the end-to-end part will use it.
    let model = if a.skip.contains(&Part::E2e) && a.run.model.is_none() {
        None
    } else {
        env::find_model(a.run.model.as_deref())
    };
    let model_id = match &model {
        Some(p) => Some(env::model_id(p)?),
        None => None,
    };

    // End-to-end first, so the peak RSS it reports is not the other parts' buffers.
    if !a.skip.contains(&Part::E2e) {
        match (&model, &model_id) {
            (Some(p), Some(id)) => {
                if let Err(e) = run_e2e::<model_adapter::ModelTarget>(&mut run, a, p, id, threads) {
                    eprintln!("e2e skipped: {e}");
                    notes.push(format!("end-to-end skipped: {e}"));
                }
            }
            _ => {
                let msg = format!(
                    "end-to-end skipped: no model (pass --model, or put {} in $ANTIGRAVITY_HOME or ~/.cache/antigravity)",
                    env::DEFAULT_MODEL
                );
                eprintln!("{msg}");
                notes.push(msg);
            }
        }
    }

    if !a.skip.contains(&Part::Kernels) {
        match a.run.backend {
            BackendArg::Cpu => {
                for &isa in &isas {
                    // One thread: kernel rows are per-core figures (recorded as 1t);
                    // the end-to-end part runs with --threads.
                    let Some(mut b) = CpuBackend::with_threads(isa, 1) else {
                        continue;
                    };
                    run_kernels(&mut run, &mut b, budget)?;
                }
            }
            BackendArg::Hybrid => {
                let msg = "kernels skipped: the hybrid runs the cpu's and opencl's kernels (bench those with --backend cpu / opencl)";
                eprintln!("{msg}");
                notes.push(msg.to_string());
            }
            BackendArg::Opencl => match crate::common::opencl_backend() {
                // Kernel timings on a queue-based device: `kernels::run` synchronises
                // around each timed repetition.
                Ok(mut b) => run_kernels(&mut run, &mut b, budget)?,
                Err(e) => {
                    let msg = format!("kernels skipped: {e:#}");
                    eprintln!("{msg}");
                    notes.push(msg);
                }
            },
        }
    }

    if !a.skip.contains(&Part::Stream) {
        run_stream(&mut run, a.quick, threads)?;
    }

    if let Some(bin) = &a.compare_llama_cpp {
        match (&model, &model_id) {
            (Some(p), Some(id)) => {
                eprintln!("llama.cpp: running {} …", bin.display());
                match llama_cpp::run(bin, p, threads, a.quick) {
                    Ok(figs) => {
                        for f in figs {
                            let mut r = run.row(f.metric, f.value, "tok/s");
                            r.peer = Some("llama.cpp".into());
                            r.backend = f.backend;
                            r.model = Some(id.clone());
                            r.quant = f.quant;
                            r.threads = f.threads;
                            r.ctx = Some(f.ctx);
                            r.tokens = Some(f.tokens);
                            r.prompt_len = f.prompt_len;
                            r.reps = Some(f.reps);
                            run.emit(r)?;
                        }
                    }
                    Err(e) => {
                        eprintln!("llama.cpp comparison failed: {e}");
                        notes.push(format!("llama.cpp comparison failed: {e}"));
                    }
                }
            }
            _ => notes.push("llama.cpp comparison needs a model".into()),
        }
    }

    run.file.flush().at(&run.path)?;
    print_table(&run.rows);
    for n in &notes {
        println!("note: {n}");
    }
    println!("{} rows appended to {}", run.rows.len(), run.path.display());

    let readme = if a.skip.contains(&Part::Report) {
        None
    } else {
        let written = crate::report::render(&out_dir, &report_dir)?;
        println!("report: {} files under {}", written.len(), report_dir.display());
        Some(report_dir.join("README.md"))
    };
    print!(
        "{}",
        summary(&run.rows, run.load_1m, run.machine.cores, readme.as_deref())
    );
    Ok(())
}

/// Above this 1-minute load average at the start (other processes busy: a build that
/// just finished, another benchmark), figures are likely low.
const LOAD_WARN: f64 = 1.0;

fn load_warning(load: f64, cores: u32) -> String {
    format!(
        "warning: load average {load:.2} at start (> {LOAD_WARN:.0}, {cores} cores): other work is running \
         (a build that just finished?), so figures will likely be low; wait for it to settle and run again \
         for figures to compare"
    )
}

/// Formats a figure with about three significant digits (0.00412, 4.12, 412, 4120).
fn sig3(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        let digits = (2 - a.log10().floor() as i32).clamp(3, 9) as usize;
        format!("{v:.digits$}")
    }
}

/// The closing lines of a bench run: the figures a person came for (decode, prefill,
/// peak RSS, the peer's where it ran), the load warning, and where the report is.
fn summary(rows: &[Record], load_1m: Option<f64>, cores: u32, readme: Option<&Path>) -> String {
    use std::fmt::Write as _;
    fn ours<'a>(rows: &'a [Record], m: &'a str) -> impl Iterator<Item = &'a Record> + 'a {
        rows.iter().filter(move |r| r.metric == m && r.peer.is_none())
    }
    let ours = |m: &'static str| ours(rows, m);
    let peer = |m: &str| rows.iter().find(|r| r.metric == m && r.peer.is_some());
    let mut s = String::from("\nsummary\n");
    if let Some(d) = ours("decode_tok_s_overall").next() {
        let _ = write!(
            s,
            "  decode    {} tok/s  (tokens 1..{}, warm-up steps excluded; {})",
            sig3(d.value),
            d.tokens.unwrap_or(0),
            d.config_label()
        );
        if let Some(p) = peer("decode_tok_s") {
            let _ = write!(s, "; llama.cpp {} tok/s = {:.2}x", sig3(p.value), d.value / p.value);
        }
        s.push('\n');
    }
    // The 128-token prompt is the one llama.cpp's pp128 measures; else the longest.
    let prefill: Vec<&Record> = ours("prefill_tok_s").collect();
    let p = prefill
        .iter()
        .find(|r| r.prompt_len == Some(128))
        .or_else(|| prefill.iter().max_by_key(|r| r.prompt_len));
    if let Some(p) = p {
        let len = p.prompt_len.unwrap_or(0);
        let _ = write!(s, "  prefill   {} tok/s  ({len}-token prompt)", sig3(p.value));
        if let Some(q) = rows
            .iter()
            .find(|r| r.metric == "prefill_tok_s" && r.peer.is_some() && r.prompt_len == Some(len))
        {
            let _ = write!(s, "; llama.cpp {} tok/s = {:.2}x", sig3(q.value), p.value / q.value);
        }
        s.push('\n');
    }
    if let Some(r) = ours("peak_rss_bytes")
        .next()
        .or_else(|| ours("peak_rss_bytes_process").next())
    {
        let _ = writeln!(
            s,
            "  peak RSS  {:.1} MiB  ({})",
            r.value / (1u64 << 20) as f64,
            if r.metric == "peak_rss_bytes" {
                "model load and end-to-end run"
            } else {
                "whole process so far"
            }
        );
    }
    if ours("decode_tok_s_overall").next().is_none() {
        s.push_str("  (no end-to-end figures: see the notes above)\n");
    }
    if let Some(load) = load_1m.filter(|&l| l > LOAD_WARN) {
        let _ = writeln!(s, "  {}", load_warning(load, cores));
    }
    match readme {
        Some(p) => {
            let _ = writeln!(s, "  report    {}", p.display());
        }
        None => s.push_str("  report    not rendered (--skip report); `harness report` renders it\n"),
    }
    s
}

fn run_kernels<B: Backend>(run: &mut Run, b: &mut B, budget: Budget) -> Result<()> {
    let (backend, isa) = (b.name(), b.isa());
    let pb = bar(kernels::case_count(b.capabilities().kv_dtypes.len()) as u64, "kernels");
    pb.set_message(isa.to_string());
    let mut results = Vec::new();
    kernels::run(b, budget, &mut |r| {
        pb.inc(1);
        results.push(r);
    })?;
    pb.finish_and_clear();
    for k in results {
        let base = |run: &Run, metric: &str, value: f64, unit: &str| {
            let mut r = run.row(metric, value, unit);
            r.backend = backend.to_string();
            r.isa = Some(isa.to_string());
            // The kernel part builds its CPU backends with one thread (see above).
            r.threads = 1;
            r.quant = k.dtype.map(|d| d.name().to_string());
            r.ctx = k.ctx.map(|c| c as u64);
            r.shape = Some(k.shape.clone());
            r.tokens = Some(k.tokens as u64);
            r.op = Some(k.op.to_string());
            r.reps = Some(k.timing.reps);
            r
        };
        let us = k.timing.secs() * 1e6;
        if k.op == "matmul_stream" {
            run.emit(base(run, "matmul_stream_gb_s", k.gb_s(), "GB/s"))?;
        } else if k.op == "matmul" {
            let rows = [
                base(run, "matmul_time_us", us, "us"),
                base(run, "matmul_gb_s", k.gb_s(), "GB/s"),
                base(run, "matmul_gflop_s", k.gflop_s(), "GFLOP/s"),
            ];
            for r in rows {
                run.emit(r)?;
            }
        } else {
            run.emit(base(run, "op_time_us", us, "us"))?;
            run.emit(base(run, "op_gb_s", k.gb_s(), "GB/s"))?;
            if k.flops > 0.0 {
                run.emit(base(run, "op_gflop_s", k.gflop_s(), "GFLOP/s"))?;
            }
        }
    }
    Ok(())
}

/// `bench --evict` (see [`evict`]): every series, its rows, then the report.
fn run_evict(a: &BenchArgs, out_dir: &Path, report_dir: &Path) -> Result<()> {
    if a.run.backend == BackendArg::Hybrid {
        return Err(Error::msg("bench --evict: use --backend cpu or opencl"));
    }
    let tokens = a.evict_tokens.unwrap_or(if a.quick { 512 } else { 2048 });
    let plan = evict::EvictPlan {
        budget: a.evict_ctx,
        tokens,
        // 32 points per series.
        bucket: (tokens / 32).max(1),
        warmup: 4,
        policies: a.evict_policies.clone(),
        blocks: a.evict_blocks.clone(),
    };
    let path =
        env::find_model(a.run.model.as_deref()).ok_or_else(|| Error::msg("bench --evict needs a model (--model)"))?;
    let id = env::model_id(&path)?;
    let model = crate::common::ModelArgs {
        run: crate::common::RunArgs {
            model: Some(path),
            ..a.run.clone()
        },
        weights: antigravity_core::dtype::DType::Q4_0,
        ctx: plan.budget,
        kv_type: a.evict_kv_type,
    };
    let mut run = Run::open_named(out_dir, a.json, a.quick, "-evict")?;
    eprintln!(
        "bench --evict: {} steps per series through {} slots, git {}; results: {}",
        plan.tokens,
        plan.budget,
        run.git_rev,
        run.path.display()
    );
    if let Some(load) = run.load_1m.filter(|&l| l > LOAD_WARN) {
        eprintln!("{}", load_warning(load, run.machine.cores));
    }
    let all = evict::series(&plan);
    let pb = bar(all.len() as u64, "evict");
    for cfg in all {
        pb.set_message(format!("{} block {}", cfg.policy.name(), cfg.block));
        let r = evict::run_series(&model, &plan, cfg)?;
        let tag = |run: &Run, metric: &str, value: f64, unit: &str| {
            let mut row = run.row(metric, value, unit);
            row.backend = r.backend.clone();
            row.isa = Some(r.isa.clone());
            row.threads = r.threads;
            row.model = Some(id.clone());
            row.quant = Some(r.quant.clone());
            row.op = Some(r.policy.name().to_string());
            row.shape = Some(r.shape());
            row
        };
        let mut rows = Vec::new();
        for (end, n, tok_s) in r.buckets(plan.bucket) {
            let mut row = tag(&run, "evict_decode_tok_s", tok_s, "tok/s");
            row.ctx = Some(end as u64);
            row.tokens = Some(n as u64);
            rows.push(row);
        }
        let total: f64 = r.step_s.iter().sum();
        let mut row = tag(
            &run,
            "evict_decode_tok_s_overall",
            r.step_s.len() as f64 / total,
            "tok/s",
        );
        row.ctx = Some(plan.tokens as u64);
        row.tokens = Some(plan.tokens as u64);
        rows.push(row);
        for (metric, p) in [
            ("evict_step_ms_p50", 50.0),
            ("evict_step_ms_p99", 99.0),
            ("evict_step_ms_max", 100.0),
        ] {
            let mut row = tag(&run, metric, r.step_ms(p), "ms");
            row.ctx = Some(plan.tokens as u64);
            row.tokens = Some(plan.tokens as u64);
            rows.push(row);
        }
        let mut row = tag(&run, "evict_evicted_tokens", r.evicted as f64, "tokens");
        row.ctx = Some(plan.tokens as u64);
        row.tokens = Some(plan.tokens as u64);
        rows.push(row);
        for row in rows {
            run.emit(row)?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    run.file.flush().at(&run.path)?;
    print_table(&run.rows);
    println!("{} rows appended to {}", run.rows.len(), run.path.display());
    if !a.skip.contains(&Part::Report) {
        let written = crate::report::render(out_dir, report_dir)?;
        println!("report: {} files under {}", written.len(), report_dir.display());
    }
    Ok(())
}

fn run_stream(run: &mut Run, quick: bool, threads: usize) -> Result<()> {
    let (bytes, reps) = if quick {
        (stream::QUICK_BYTES, 3)
    } else {
        (stream::FULL_BYTES, 5)
    };
    let mut counts = vec![1];
    if threads > 1 {
        counts.push(threads);
    }
    let pb = bar(counts.len() as u64, "memory");
    for t in counts {
        pb.set_message(format!("{} MiB, {t} threads", bytes >> 20));
        for s in stream::probe(bytes, t, reps) {
            let mut r = run.row(&format!("stream_{}_gb_s", s.kind), s.gb_s, "GB/s");
            r.backend = "host".into();
            r.threads = s.threads as u32;
            r.shape = Some(format!("{} MiB", s.bytes >> 20));
            r.reps = Some(s.reps);
            run.emit(r)?;
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(())
}

fn run_e2e<T: e2e::DecodeTarget>(
    run: &mut Run,
    a: &BenchArgs,
    model: &Path,
    id: &ModelId,
    threads: usize,
) -> Result<()> {
    let plan = if a.quick { e2e::Plan::quick() } else { e2e::Plan::full() };
    let opts = e2e::TargetOptions {
        backend: a.run.backend.name().to_string(),
        isa: a.run.isa.0.map(|i| i.name().to_string()),
        threads,
        max_ctx: plan.max_ctx(),
        hybrid: crate::hybrid::HybridFlags {
            switch_at: a.switch_at.clone(),
            verbose: a.verbose,
            crossover: a.crossover_table.clone(),
        },
        work: (plan.prompt_lens.iter().copied().max().unwrap_or(1), plan.decode_tokens),
    };
    let rss_reset = env::reset_peak_rss();
    let pb = bar(plan.units(), "e2e");
    pb.set_message(id.file.clone());
    let res = e2e::run::<T>(model, &opts, &plan, &mut |n| pb.inc(n));
    pb.finish_and_clear();
    let r = res?;
    let peak = env::peak_rss_bytes();

    let tag = |run: &Run, metric: &str, value: f64, unit: &str| {
        let mut row = run.row(metric, value, unit);
        row.backend = r.info.backend.clone();
        row.isa = Some(r.info.isa.clone());
        row.threads = r.info.threads;
        row.model = Some(id.clone());
        row.quant = Some(r.info.quant.clone());
        row
    };
    let mut rows = vec![tag(run, "load_time_s", r.load_s, "s")];
    for &(len, tok_s, reps) in &r.prefill {
        let mut row = tag(run, "prefill_tok_s", tok_s, "tok/s");
        row.prompt_len = Some(len as u64);
        row.ctx = Some(len as u64);
        row.tokens = Some(len as u64);
        row.reps = Some(reps);
        rows.push(row);
    }
    for b in &r.buckets {
        let mut row = tag(run, "decode_tok_s", b.tok_s, "tok/s");
        row.ctx = Some(b.ctx_hi as u64);
        row.tokens = Some(b.tokens as u64);
        rows.push(row);
    }
    let mut all = tag(run, "decode_tok_s_overall", r.decode_tok_s, "tok/s");
    all.ctx = Some(r.decode_tokens as u64);
    all.tokens = Some(r.decode_tokens as u64);
    rows.push(all);
    for &(p, ms) in &r.latency_ms {
        let mut row = tag(run, &format!("token_latency_ms_p{p}"), ms, "ms");
        row.ctx = Some(r.decode_tokens as u64);
        row.tokens = Some(r.decode_tokens as u64);
        rows.push(row);
    }
    for (op, ms, frac) in &r.ops {
        for (metric, v, unit) in [("op_time_frac", *frac, "fraction"), ("op_ms_per_token", *ms, "ms")] {
            let mut row = tag(run, metric, v, unit);
            row.op = Some(op.clone());
            row.ctx = Some(r.decode_tokens as u64);
            row.tokens = Some(r.decode_tokens as u64);
            rows.push(row);
        }
    }
    rows.push(tag(run, "kv_cache_bytes", r.kv_cache_bytes as f64, "bytes"));
    rows.push(tag(
        run,
        "host_to_device_bytes",
        r.transfer.host_to_device as f64,
        "bytes",
    ));
    rows.push(tag(
        run,
        "device_to_host_bytes",
        r.transfer.device_to_host as f64,
        "bytes",
    ));
    // A hybrid's hand-overs (one row each for bytes and time, the switch's direction in
    // `op`, its token in `tokens`, its phase in `shape`) and which side ran how much.
    for w in &r.switches {
        for (metric, v, unit) in [
            ("hybrid_switch_bytes", w.bytes as f64, "bytes"),
            ("hybrid_switch_ms", w.ms, "ms"),
        ] {
            let mut row = tag(run, metric, v, unit);
            row.op = Some(format!("{}->{}", w.from, w.to));
            row.tokens = Some(w.token as u64);
            row.shape = Some(w.phase.clone());
            rows.push(row);
        }
    }
    for b in &r.tokens_by_backend {
        let mut row = tag(run, "hybrid_tokens", b.tokens as f64, "tokens");
        row.op = Some(b.backend.clone());
        row.shape = Some(b.phase.to_string());
        rows.push(row);
    }
    if let Some(p) = peak {
        // Without a reset the peak covers the whole process so far: a different figure,
        // so a different name.
        let metric = if rss_reset {
            "peak_rss_bytes"
        } else {
            "peak_rss_bytes_process"
        };
        rows.push(tag(run, metric, p as f64, "bytes"));
    }
    for row in rows {
        run.emit(row)?;
    }
    Ok(())
}

/// A short human reading of a row's tags (shape, op, ctx, prompt length).
pub fn detail(r: &Record) -> String {
    let mut d = Vec::new();
    if let Some(op) = &r.op {
        if !r.metric.starts_with("matmul") {
            d.push(op.clone());
        }
    }
    if let Some(q) = &r.quant {
        if r.model.is_none() {
            d.push(q.clone());
        }
    }
    if let Some(s) = &r.shape {
        d.push(s.clone());
    }
    if let (Some(t), true) = (r.tokens, r.metric.starts_with("matmul")) {
        d.push(format!("{t} tok"));
    }
    if let (Some(t), true) = (r.tokens, r.metric.starts_with("hybrid_switch")) {
        d.push(format!("before token {t}"));
    }
    if let Some(p) = r.prompt_len {
        d.push(format!("prompt {p}"));
    } else if let Some(c) = r.ctx {
        d.push(format!("ctx {c}"));
    }
    d.join(" ")
}

/// Whether the table shows this row: one figure per kernel case, in the unit that
/// describes it — GB/s for a one-token matvec and the other memory-bound ops (they stream
/// their operands once), GFLOP/s for a batched matmul (its weight bytes are read once for
/// the whole batch, so bytes per second says little). Times and the other units stay in
/// the data and the charts.
fn shown(r: &Record) -> bool {
    let batched = r.tokens.is_some_and(|t| t > 1);
    match r.metric.as_str() {
        "matmul_gb_s" => !batched,
        "matmul_gflop_s" => batched,
        "op_gflop_s" => false,
        "op_ms_per_token" => false,
        // Drawn (chart `decode_evict_tok_s`); the table shows each series' overall rate.
        "evict_decode_tok_s" => false,
        m => !m.ends_with("_time_us"),
    }
}

fn print_table(rows: &[Record]) {
    let cells: Vec<[String; 4]> = rows
        .iter()
        .filter(|r| shown(r))
        .map(|r| {
            let v = if r.unit == "bytes" {
                format!("{:.1} MiB", r.value / (1u64 << 20) as f64)
            } else if r.unit == "fraction" {
                format!("{:.1} %", r.value * 100.0)
            } else if r.unit == "tokens" {
                format!("{:.0} tokens", r.value)
            } else {
                format!("{} {}", sig3(r.value), r.unit)
            };
            [r.metric.clone(), r.config_label(), detail(r), v]
        })
        .collect();
    let head = ["metric", "config", "detail", "value"];
    let mut w = head.map(str::len);
    for c in &cells {
        for (i, s) in c.iter().enumerate() {
            w[i] = w[i].max(s.chars().count());
        }
    }
    let line = |c: [&str; 4]| {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
    };
    line(head);
    println!("{}", "-".repeat(w.iter().sum::<usize>() + 6));
    for c in &cells {
        line([&c[0], &c[1], &c[2], &c[3]]);
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::report::tests::TempDir;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn args(extra: &[&str]) -> BenchArgs {
        Cli::parse_from(std::iter::once("bench").chain(extra.iter().copied())).a
    }

    #[test]
    fn figures_keep_three_significant_digits() {
        assert_eq!(sig3(0.00412345), "0.00412");
        assert_eq!(sig3(4.12345), "4.12");
        assert_eq!(sig3(41.2345), "41.2");
        assert_eq!(sig3(41234.5), "41234");
        assert_eq!(sig3(0.0), "0");
    }

    #[test]
    fn summary_compares_with_the_peer_and_warns_about_load() {
        let dir = TempDir::new("bench-summary");
        let run = Run::open(&dir.0, false, true).unwrap();
        let mut rows = Vec::new();
        let mut r = run.row("decode_tok_s_overall", 80.0, "tok/s");
        r.tokens = Some(256);
        rows.push(r);
        let mut r = run.row("decode_tok_s", 100.0, "tok/s");
        r.peer = Some("llama.cpp".into());
        rows.push(r);
        for (peer, v) in [(None, 600.0), (Some("llama.cpp"), 500.0)] {
            let mut r = run.row("prefill_tok_s", v, "tok/s");
            r.prompt_len = Some(128);
            r.peer = peer.map(String::from);
            rows.push(r);
        }
        rows.push(run.row("peak_rss_bytes", 200.0 * (1 << 20) as f64, "bytes"));
        let s = summary(&rows, Some(2.5), 2, Some(Path::new("reports/README.md")));
        assert!(s.contains("decode    80.0 tok/s  (tokens 1..256"), "{s}");
        assert!(s.contains("llama.cpp 100 tok/s = 0.80x"), "{s}");
        assert!(
            s.contains("prefill   600 tok/s  (128-token prompt); llama.cpp 500 tok/s = 1.20x"),
            "{s}"
        );
        assert!(s.contains("peak RSS  200.0 MiB"), "{s}");
        assert!(s.contains("warning: load average 2.50"), "{s}");
        assert!(s.trim_end().ends_with("report    reports/README.md"), "{s}");
        let quiet = summary(&rows, Some(0.3), 2, None);
        assert!(!quiet.contains("warning"), "{quiet}");
    }

    #[test]
    fn bench_writes_rows_to_out_dir_and_renders_the_report_beside_it() {
        let dir = TempDir::new("bench-run");
        let out = dir.0.join("results");
        let a = args(&[
            "--quick",
            "--skip",
            "kernels,e2e",
            "--threads",
            "2",
            "--out-dir",
            out.to_str().unwrap(),
        ]);
        run(&a).unwrap();
        let files: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(&env::machine().slug()) && name.ends_with(".jsonl"),
            "{name}"
        );
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let rows: Vec<Record> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let metrics: Vec<&str> = rows.iter().map(|r| r.metric.as_str()).collect();
        assert_eq!(
            metrics,
            [
                "stream_read_gb_s",
                "stream_copy_gb_s",
                "stream_read_gb_s",
                "stream_copy_gb_s"
            ]
        );
        assert!(rows
            .iter()
            .all(|r| r.schema == SCHEMA && r.value > 0.0 && r.run == rows[0].run));
        assert_eq!(rows[2].threads, 2);
        assert!(dir.0.join("README.md").is_file());
    }

    /// A hybrid-like target: the fake's costs, the phases the profiler announced, one
    /// switch in the last phase and tokens on two sides.
    struct FakeHybrid(e2e::tests::FakeTarget, Vec<e2e::Phase>);

    impl e2e::DecodeTarget for FakeHybrid {
        fn load(p: &Path, o: &e2e::TargetOptions) -> Result<Self> {
            Ok(FakeHybrid(e2e::tests::FakeTarget::load(p, o)?, Vec::new()))
        }
        fn info(&self) -> e2e::TargetInfo {
            e2e::TargetInfo {
                backend: "hybrid".into(),
                ..self.0.info()
            }
        }
        fn vocab_size(&self) -> usize {
            self.0.vocab_size()
        }
        fn reset(&mut self) -> Result<()> {
            self.0.reset()
        }
        fn prefill(&mut self, ids: &[u32]) -> Result<()> {
            self.0.prefill(ids)
        }
        fn decode_one(&mut self, id: u32) -> Result<()> {
            self.0.decode_one(id)
        }
        fn op_times(&self) -> Vec<(String, std::time::Duration)> {
            self.0.op_times()
        }
        fn reset_op_times(&mut self) {
            self.0.reset_op_times()
        }
        fn kv_cache_bytes(&self) -> u64 {
            self.0.kv_cache_bytes()
        }
        fn begin_phase(&mut self, phase: e2e::Phase) {
            self.1.push(phase);
        }
        fn switches(&self) -> Vec<e2e::SwitchRow> {
            vec![e2e::SwitchRow {
                phase: self.1.last().map_or_else(String::new, |p| p.label()),
                token: 5,
                from: "cpu".into(),
                to: "opencl".into(),
                bytes: 1536,
                ms: 0.25,
            }]
        }
        fn tokens_by_backend(&self) -> Vec<e2e::BackendTokens> {
            let phases = self.1.len() as u64;
            vec![
                e2e::BackendTokens {
                    phase: "decode",
                    backend: "cpu".into(),
                    tokens: 5,
                },
                e2e::BackendTokens {
                    phase: "decode",
                    backend: "opencl".into(),
                    tokens: phases,
                },
            ]
        }
    }

    #[test]
    fn hybrid_rows_carry_switches_and_tokens_per_backend() {
        let dir = TempDir::new("bench-hybrid");
        let a = args(&["--quick", "--backend", "hybrid", "--switch-at", "5"]);
        let mut r = Run::open(&dir.0, false, true).unwrap();
        let id = ModelId {
            file: "fake.gguf".into(),
            sha256_prefix: "0123456789ab".into(),
        };
        run_e2e::<FakeHybrid>(&mut r, &a, Path::new("fake.gguf"), &id, 1).unwrap();
        let plan = e2e::Plan::quick();
        let get = |m: &str| r.rows.iter().filter(|x| x.metric == m).collect::<Vec<_>>();
        let (bytes, ms) = (get("hybrid_switch_bytes"), get("hybrid_switch_ms"));
        assert_eq!((bytes.len(), ms.len()), (1, 1));
        let label = format!("decode {}", plan.decode_tokens);
        for (row, v, unit) in [(bytes[0], 1536.0, "bytes"), (ms[0], 0.25, "ms")] {
            assert_eq!(row.value, v);
            assert_eq!(row.unit, unit);
            assert_eq!(row.op.as_deref(), Some("cpu->opencl"));
            assert_eq!(row.tokens, Some(5));
            assert_eq!(row.shape.as_deref(), Some(label.as_str()));
            assert_eq!(row.backend, "hybrid");
        }
        assert!(detail(bytes[0]).contains("before token 5"), "{}", detail(bytes[0]));
        let toks = get("hybrid_tokens");
        let sides: Vec<_> = toks
            .iter()
            .map(|x| (x.op.as_deref().unwrap(), x.shape.as_deref().unwrap(), x.value))
            .collect();
        // One phase per prefill (each length, each rep), the warm-up, the timed decode.
        let phases = (plan.prompt_lens.len() * plan.prefill_reps as usize + 2) as f64;
        assert_eq!(sides, [("cpu", "decode", 5.0), ("opencl", "decode", phases)]);
        // The other rows are the ones every backend has.
        assert_eq!(get("prefill_tok_s").len(), plan.prompt_lens.len());
        assert_eq!(get("decode_tok_s_overall").len(), 1);
    }

    #[test]
    fn e2e_rows_carry_model_and_target_facts() {
        let dir = TempDir::new("bench-e2e");
        let a = args(&["--quick"]);
        let mut r = Run::open(&dir.0, false, true).unwrap();
        let id = ModelId {
            file: "fake.gguf".into(),
            sha256_prefix: "0123456789ab".into(),
        };
        run_e2e::<e2e::tests::FakeTarget>(&mut r, &a, Path::new("fake.gguf"), &id, 1).unwrap();
        let m = |name: &str| r.rows.iter().filter(|x| x.metric == name).count();
        let plan = e2e::Plan::quick();
        assert_eq!(m("prefill_tok_s"), plan.prompt_lens.len());
        assert_eq!(m("decode_tok_s"), plan.buckets.len());
        assert_eq!(m("op_time_frac"), 3);
        assert_eq!(m("load_time_s") + m("kv_cache_bytes") + m("decode_tok_s_overall"), 3);
        assert_eq!(m("token_latency_ms_p50") + m("token_latency_ms_p99"), 2);
        for x in &r.rows {
            assert_eq!(x.model.as_ref(), Some(&id));
            assert_eq!((x.backend.as_str(), x.quant.as_deref()), ("fake", Some("q4_1")));
        }
        // And the file holds exactly those rows.
        let text = std::fs::read_to_string(&r.path).unwrap();
        assert_eq!(text.lines().count(), r.rows.len());
    }
}
