//! `reports/README.md`: one page per run of `harness report` — per machine, what it is,
//! when and with which code it was measured, a table of headline figures and the charts.
//! Every figure in the table is a row's value ([`Headline::row`]), formatted.

use std::fmt::Write;

use super::charts::Chart;
use crate::bench::record::Record;

/// One machine's part of the page.
pub struct Section {
    pub slug: String,
    /// The machine's selected rows (see `report::select_latest`).
    pub rows: Vec<Record>,
    pub charts: Vec<Chart>,
    /// Result files that hold this machine's rows.
    pub sources: Vec<String>,
}

/// One line of the headline table.
#[derive(Clone, Debug, PartialEq)]
pub struct Headline {
    pub what: String,
    pub config: String,
    pub value: String,
    /// Index into the section's rows.
    pub row: usize,
}

pub(crate) fn fmt_value(r: &Record) -> String {
    match r.unit.as_str() {
        "bytes" => format!("{:.1} MiB", r.value / (1u64 << 20) as f64),
        "fraction" => format!("{:.1} %", r.value * 100.0),
        "s" => format!("{:.2} s", r.value),
        u => format!("{:.1} {u}", r.value),
    }
}

/// The headline figures of one machine, in a fixed order.
pub fn headlines(rows: &[Record]) -> Vec<Headline> {
    let mut out = Vec::new();
    let mut push = |what: String, i: usize| {
        out.push(Headline {
            what,
            config: rows[i].config_label(),
            value: fmt_value(&rows[i]),
            row: i,
        })
    };
    let find = |pred: &dyn Fn(&Record) -> bool| -> Vec<usize> { (0..rows.len()).filter(|&i| pred(&rows[i])).collect() };

    for i in find(&|r| r.metric == "decode_tok_s_overall") {
        push(format!("decode, tokens 1..{}", rows[i].ctx.unwrap_or(0)), i);
    }
    for i in find(&|r| r.metric == "decode_tok_s" && r.peer.is_some()) {
        push(format!("decode, tokens 1..{} (peer)", rows[i].ctx.unwrap_or(0)), i);
    }
    for i in find(&|r| r.metric == "prefill_tok_s" && r.prompt_len == Some(128)) {
        push("prefill, 128-token prompt".to_string(), i);
    }
    for m in ["token_latency_ms_p50", "token_latency_ms_p99", "load_time_s"] {
        for i in find(&|r| r.metric == m) {
            push(m.replace("token_latency_ms_", "token latency ").replace('_', " "), i);
        }
    }
    for m in ["peak_rss_bytes", "peak_rss_bytes_process", "kv_cache_bytes"] {
        for i in find(&|r| r.metric == m) {
            push(m.replace('_', " "), i);
        }
    }
    // Decode past a small KV cache, per eviction policy (`bench --evict`).
    for i in find(&|r| r.metric == "evict_decode_tok_s_overall") {
        let r = &rows[i];
        push(
            format!(
                "decode, tokens 1..{}, --kv-policy {} ({})",
                r.ctx.unwrap_or(0),
                r.op.as_deref().unwrap_or("?"),
                r.shape.as_deref().unwrap_or("?")
            ),
            i,
        );
    }
    // Best matvec bandwidth per ISA, next to the memory ceiling.
    let mut isas: Vec<String> = rows
        .iter()
        .filter(|r| r.metric == "matmul_gb_s" && r.tokens == Some(1))
        .filter_map(|r| r.isa.clone())
        .collect();
    isas.sort();
    isas.dedup();
    for isa in isas {
        let best = find(&|r| r.metric == "matmul_gb_s" && r.tokens == Some(1) && r.isa.as_deref() == Some(&isa))
            .into_iter()
            .max_by(|&a, &b| rows[a].value.total_cmp(&rows[b].value));
        if let Some(i) = best {
            let r = &rows[i];
            push(
                format!(
                    "fastest matvec of this ISA ({} {})",
                    r.quant.as_deref().unwrap_or("?"),
                    r.shape.as_deref().unwrap_or("?")
                ),
                i,
            );
        }
    }
    for m in ["stream_read_gb_s", "stream_copy_gb_s"] {
        for i in find(&|r| r.metric == m) {
            let t = rows[i].threads;
            push(
                format!("memory {} ({t} thread{})", &m[7..11], if t == 1 { "" } else { "s" }),
                i,
            );
        }
    }
    out
}

/// The whole page.
pub fn markdown(sections: &[Section]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Antigravity benchmark report\n");
    let _ = writeln!(
        s,
        "Rendered by `cargo run -p harness -- report` from `reports/results/*.jsonl` alone — edit the \
         data, not this page. For each machine the latest measurement of every distinct figure is \
         shown. How the figures are measured, and the schema of the data: \
         [docs/benchmarking.md](../docs/benchmarking.md).\n"
    );
    for sec in sections {
        let Some(first) = sec.rows.first() else { continue };
        let m = &first.machine;
        let mut dates: Vec<&str> = sec.rows.iter().map(|r| &r.timestamp[..10]).collect();
        dates.sort();
        dates.dedup();
        let mut revs: Vec<&str> = sec.rows.iter().map(|r| r.git_rev.as_str()).collect();
        revs.sort();
        revs.dedup();
        let mut builds: Vec<&str> = sec.rows.iter().map(|r| r.build.as_str()).collect();
        builds.sort();
        builds.dedup();
        let mut models: Vec<String> = sec
            .rows
            .iter()
            .filter_map(|r| {
                r.model
                    .as_ref()
                    .map(|m| format!("`{}` (sha256 {}…)", m.file, m.sha256_prefix))
            })
            .collect();
        models.sort();
        models.dedup();

        let _ = writeln!(s, "## {}\n", sec.slug);
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| CPU | {} |", m.cpu);
        let _ = writeln!(s, "| cores | {} |", m.cores);
        let _ = writeln!(s, "| memory | {:.1} GiB |", m.mem_bytes as f64 / (1u64 << 30) as f64);
        let _ = writeln!(s, "| measured | {} |", dates.join(", "));
        let _ = writeln!(s, "| git revision | {} |", revs.join(", "));
        let _ = writeln!(s, "| build | {} |", builds.join(", "));
        let mut modes: Vec<&str> = sec.rows.iter().filter_map(|r| r.mode.as_deref()).collect();
        modes.sort();
        modes.dedup();
        if !modes.is_empty() {
            let quick = if modes.contains(&"quick") {
                " (`--quick`: fewer repetitions, shorter plans — indicative figures)"
            } else {
                ""
            };
            let _ = writeln!(s, "| mode | {}{quick} |", modes.join(", "));
        }
        let loads: Vec<f64> = sec.rows.iter().filter_map(|r| r.load_1m).collect();
        if !loads.is_empty() {
            let (lo, hi) = loads
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let _ = writeln!(
                s,
                "| load average at start | {lo:.2} – {hi:.2} (other work on the machine lowers figures) |"
            );
        }
        let _ = writeln!(
            s,
            "| model | {} |",
            if models.is_empty() {
                "none (kernels on generated data with SmolLM2-135M shapes)".to_string()
            } else {
                models.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "| data | {} |\n",
            sec.sources
                .iter()
                .map(|f| format!("[{f}](results/{f})"))
                .collect::<Vec<_>>()
                .join(", ")
        );

        let hs = headlines(&sec.rows);
        if !hs.is_empty() {
            let _ = writeln!(s, "### Headline figures\n");
            let _ = writeln!(s, "| figure | configuration | value |\n|---|---|---:|");
            for h in &hs {
                let _ = writeln!(s, "| {} | {} | {} |", h.what, h.config, h.value);
            }
            let _ = writeln!(s);
        }
        if sec.rows.iter().all(|r| r.model.is_none()) {
            let _ = writeln!(
                s,
                "No end-to-end figures on this machine yet: the run had no model or the forward \
                 pass was not wired.\n"
            );
        }
        for c in &sec.charts {
            let _ = writeln!(s, "### {}\n", c.title);
            let _ = writeln!(
                s,
                "![{}](charts/{}/{}.png)\n\n[SVG](charts/{}/{}.svg)\n",
                c.title, sec.slug, c.id, sec.slug, c.id
            );
        }
    }
    s
}
