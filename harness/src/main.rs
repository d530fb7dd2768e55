//! `harness`: Antigravity's command line.
//!
//! `main` is one `match` from subcommand to function. Subcommands so far:
//! * `bench` — kernel micro-benchmarks, a memory-bandwidth probe and end-to-end decode
//!   profiling; results are JSON lines under `reports/results/` ([`bench`]).
//! * `report` — renders every chart and `reports/README.md` from those JSON lines alone
//!   ([`report`]).

mod bench;
mod report;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "harness", version, about = "Antigravity's command line")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the benchmarks and write JSON lines (then render the report).
    Bench(bench::BenchArgs),
    /// Re-render charts and the summary from result files alone.
    Report(report::ReportArgs),
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Report(a) => report::run(&a),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
