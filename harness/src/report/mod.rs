//! `harness report`: charts and a one-page summary, rendered from result files alone.
//!
//! Input: every `*.jsonl` in the results folder (one [`Record`] per line). For each
//! machine, the **latest measurement of every distinct thing** is kept: rows are grouped
//! by [`Record::series_key`] (metric + every tag), and within a group the row of the
//! latest run wins. So a partial re-run (say, only kernels) updates those figures and
//! keeps the rest; older runs stay in the files as history but are not drawn.
//!
//! Output (deterministic: the same files give the same bytes; nothing about the render
//! time is written, iteration is sorted, the font is embedded):
//! * `charts/<machine>/<chart>.svg` and `.png` ([`charts`]);
//! * `README.md`, the summary with the charts embedded ([`summary`]).

pub mod charts;
pub mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::bench::error::{Error, IoContext, Result};
use crate::bench::record::Record;

/// Options of `harness report`.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Folder of result files (default: the repository's `reports/results`).
    #[arg(long)]
    pub results: Option<PathBuf>,
    /// Where charts and README.md go (default: the parent of the results folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `harness report`.
pub fn run(a: &ReportArgs) -> Result<()> {
    let results = a
        .results
        .clone()
        .unwrap_or_else(|| crate::bench::default_reports_dir().join("results"));
    let out = match &a.out {
        Some(o) => o.clone(),
        None => results
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let written = render(&results, &out)?;
    for w in &written {
        println!("{}", w.display());
    }
    Ok(())
}

/// A result file's rows, with the file's name.
pub struct ResultFile {
    pub name: String,
    pub rows: Vec<Record>,
}

/// Reads every `*.jsonl` in `dir`, sorted by file name. A line that is not a record is
/// an error naming the file and line.
pub fn load(dir: &Path) -> Result<Vec<ResultFile>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    names.sort();
    let mut files = Vec::new();
    for p in names {
        let text = std::fs::read_to_string(&p).at(&p)?;
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: Record =
                serde_json::from_str(line).map_err(|e| Error::at(format!("{}:{}", p.display(), i + 1), e))?;
            rows.push(r);
        }
        files.push(ResultFile {
            name: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            rows,
        });
    }
    Ok(files)
}

/// Per machine slug (sorted), the latest row of every series, sorted by series key.
pub fn select_latest(files: &[ResultFile]) -> BTreeMap<String, Vec<Record>> {
    let mut by: BTreeMap<String, BTreeMap<String, Record>> = BTreeMap::new();
    for f in files {
        for r in &f.rows {
            let slot = by.entry(r.machine.slug()).or_default();
            let key = r.series_key();
            let newer = match slot.get(&key) {
                Some(old) => (&r.run, &r.timestamp) >= (&old.run, &old.timestamp),
                None => true,
            };
            if newer {
                slot.insert(key, r.clone());
            }
        }
    }
    by.into_iter()
        .map(|(m, rows)| (m, rows.into_values().collect()))
        .collect()
}

/// Renders every chart and the summary; returns the files written (sorted).
pub fn render(results: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let files = load(results)?;
    if files.iter().all(|f| f.rows.is_empty()) {
        return Err(Error::at(results.display().to_string(), "no result rows to render"));
    }
    let latest = select_latest(&files);
    let mut written = Vec::new();
    let mut sections = Vec::new();
    for (slug, rows) in &latest {
        let dir = out.join("charts").join(slug);
        std::fs::create_dir_all(&dir).at(&dir)?;
        let cs = charts::build(rows);
        for c in &cs {
            written.extend(charts::render(c, rows, &dir)?);
        }
        let sources: Vec<String> = files
            .iter()
            .filter(|f| f.rows.iter().any(|r| &r.machine.slug() == slug))
            .map(|f| f.name.clone())
            .collect();
        sections.push(summary::Section {
            slug: slug.clone(),
            rows: rows.clone(),
            charts: cs,
            sources,
        });
    }
    std::fs::create_dir_all(out).at(out)?;
    let readme = out.join("README.md");
    std::fs::write(&readme, summary::markdown(&sections)).at(&readme)?;
    written.push(readme);
    written.sort();
    Ok(written)
}

#[cfg(test)]
pub(crate) mod tests;
