//! Report tests: determinism (same data → same bytes) and traceability (every drawn
//! value and every headline figure is a row's value).

use std::path::PathBuf;

use super::charts::{self, Kind};
use super::summary;
use super::*;
use crate::bench::record::{Machine, ModelId, Record, SCHEMA};

/// A temp folder removed on drop.
pub(crate) struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("ag-report-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn row(run: &str, metric: &str, value: f64, unit: &str) -> Record {
    Record {
        schema: SCHEMA,
        timestamp: run.to_string(),
        run: run.into(),
        git_rev: "abc1234".into(),
        build: "release".into(),
        machine: Machine {
            cpu: "Test CPU 9000".into(),
            cores: 2,
            mem_bytes: 8 << 30,
        },
        backend: "cpu".into(),
        isa: Some("scalar".into()),
        model: None,
        quant: None,
        threads: 1,
        ctx: None,
        metric: metric.into(),
        value,
        unit: unit.into(),
        shape: None,
        tokens: None,
        op: None,
        prompt_len: None,
        peer: None,
        reps: Some(5),
        mode: Some("full".into()),
        load_1m: Some(0.5),
    }
}

/// Rows that exercise every chart: kernels for two ISAs, memory probe, end-to-end, peer.
pub(crate) fn sample_rows(run: &str) -> Vec<Record> {
    let mut v = Vec::new();
    let model = ModelId {
        file: "m.gguf".into(),
        sha256_prefix: "b179c9523d0e".into(),
    };
    let mut k = 1.0;
    for isa in ["scalar", "avx2"] {
        for q in ["q4_0", "q4_1", "q8_0", "f16"] {
            for (o, i, t) in [(576, 576, 1), (192, 576, 1), (49152, 576, 1), (576, 576, 128)] {
                k += 0.37;
                let metric = if t == 1 { "matmul_gb_s" } else { "matmul_gflop_s" };
                let mut r = row(run, metric, k, "GB/s");
                r.isa = Some(isa.into());
                r.quant = Some(q.into());
                r.shape = Some(format!("{o}x{i}"));
                r.tokens = Some(t);
                r.op = Some("matmul".into());
                v.push(r);
            }
        }
    }
    for (t, val) in [(1, 9.5), (2, 14.25)] {
        let mut r = row(run, "stream_read_gb_s", val, "GB/s");
        r.backend = "host".into();
        r.isa = None;
        r.threads = t;
        v.push(r);
    }
    let e2e = |metric: &str, value: f64, unit: &str| {
        let mut r = row(run, metric, value, unit);
        r.model = Some(model.clone());
        r.quant = Some("q4_1".into());
        r.threads = 2;
        r
    };
    for (p, val) in [(32, 100.0), (128, 120.5), (512, 110.0)] {
        let mut r = e2e("prefill_tok_s", val, "tok/s");
        r.prompt_len = Some(p);
        r.ctx = Some(p);
        v.push(r);
    }
    for (hi, val) in [(32, 50.0), (64, 48.0), (128, 45.5), (256, 40.0)] {
        let mut r = e2e("decode_tok_s", val, "tok/s");
        r.ctx = Some(hi);
        r.tokens = Some(if hi == 32 { 32 } else { hi / 2 });
        v.push(r);
    }
    v.push(e2e("decode_tok_s_overall", 44.0, "tok/s"));
    for (p, val) in [(50, 21.0), (90, 25.0), (99, 31.0)] {
        v.push(e2e(&format!("token_latency_ms_p{p}"), val, "ms"));
    }
    for (op, f) in [("matmul", 0.7), ("attention", 0.2), ("other", 0.1)] {
        let mut r = e2e("op_time_frac", f, "fraction");
        r.op = Some(op.into());
        v.push(r);
    }
    v.push(e2e("peak_rss_bytes", 150e6, "bytes"));
    v.push(e2e("kv_cache_bytes", 11e6, "bytes"));
    // `bench --evict`: two policies' buckets past a 64-slot cache, and their overall rate.
    for (op, shape, vals) in [
        ("none", "full cache, f16", [50.0, 45.0, 41.0]),
        ("sinks", "budget 64, block 4, f16", [50.0, 49.0, 49.5]),
    ] {
        for (k, val) in vals.into_iter().enumerate() {
            let mut r = e2e("evict_decode_tok_s", val, "tok/s");
            r.op = Some(op.into());
            r.shape = Some(shape.into());
            r.ctx = Some(64 * (k as u64 + 1));
            r.tokens = Some(64);
            v.push(r);
        }
        let mut r = e2e("evict_decode_tok_s_overall", vals[1], "tok/s");
        r.op = Some(op.into());
        r.shape = Some(shape.into());
        r.ctx = Some(192);
        v.push(r);
    }
    for (metric, p, val) in [("prefill_tok_s", Some(128), 300.0), ("decode_tok_s", None, 60.0)] {
        let mut r = e2e(metric, val, "tok/s");
        r.peer = Some("llama.cpp".into());
        r.isa = None;
        r.prompt_len = p;
        r.ctx = Some(128);
        r.tokens = Some(128);
        v.push(r);
    }
    v
}

fn write_jsonl(dir: &std::path::Path, name: &str, rows: &[Record]) {
    let text: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn rendering_twice_gives_identical_bytes() {
    let data = TempDir::new("data");
    write_jsonl(
        &data.0,
        "test-cpu-9000-2c-2026-11-26.jsonl",
        &sample_rows("2026-11-26T06:00:00Z"),
    );
    let (a, b) = (TempDir::new("a"), TempDir::new("b"));
    let wa = render(&data.0, &a.0).unwrap();
    let wb = render(&data.0, &b.0).unwrap();
    assert_eq!(wa.len(), wb.len());
    // 7 charts × (svg + png) + README.
    assert_eq!(wa.len(), 15, "{wa:?}");
    for (pa, pb) in wa.iter().zip(&wb) {
        assert_eq!(pa.strip_prefix(&a.0).unwrap(), pb.strip_prefix(&b.0).unwrap());
        let (ba, bb) = (std::fs::read(pa).unwrap(), std::fs::read(pb).unwrap());
        assert!(!ba.is_empty());
        assert!(ba == bb, "{} differs between renders", pa.display());
    }
    let svg = std::fs::read_to_string(a.0.join("charts/test-9000-2c/matvec_gb_s.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("memory read, 1 thread: 9.5 GB/s"));
}

#[test]
fn every_drawn_value_is_a_row_value() {
    let rows = sample_rows("2026-11-26T06:00:00Z");
    let charts = charts::build(&rows);
    let ids: Vec<&str> = charts.iter().map(|c| c.id).collect();
    assert_eq!(
        ids,
        [
            "matvec_gb_s",
            "matmul_batch_gflop_s",
            "decode_tok_s",
            "prefill_tok_s",
            "op_breakdown",
            "decode_evict_tok_s",
            "token_latency"
        ]
    );
    let mut drawn = std::collections::BTreeSet::new();
    for c in &charts {
        assert!(
            !c.title.is_empty() && !c.x_label.is_empty() && c.y_label.contains('('),
            "{c:?}"
        );
        for s in &c.series {
            assert!(!s.name.is_empty());
            for p in &s.points {
                let r = &rows[p.row];
                assert!(c.metrics.contains(&r.metric.as_str()), "{} draws {}", c.id, r.metric);
                assert_eq!(p.y, r.value, "{} point differs from its row", c.id);
                if let Kind::Bars { categories } = &c.kind {
                    assert!(p.cat < categories.len());
                }
                drawn.insert(p.row);
            }
        }
        for h in &c.hlines {
            assert_eq!(h.y, rows[h.row].value);
            assert!(c.metrics.contains(&rows[h.row].metric.as_str()));
            drawn.insert(h.row);
        }
    }
    // Conversely: every row of a charted metric is drawn somewhere.
    for (i, r) in rows.iter().enumerate() {
        let charted = charts.iter().any(|c| c.metrics.contains(&r.metric.as_str()));
        let matmul_other_kind =
            (r.metric == "matmul_gb_s" && r.tokens != Some(1)) || (r.metric == "matmul_gflop_s" && r.tokens == Some(1));
        if charted && !matmul_other_kind {
            assert!(drawn.contains(&i), "row {i} ({}) is not drawn", r.metric);
        }
    }
    // Headline figures are row values too.
    let hs = summary::headlines(&rows);
    assert!(hs.len() >= 8);
    for h in &hs {
        let r = &rows[h.row];
        assert_eq!(h.config, r.config_label());
        assert_eq!(h.value, summary::fmt_value(r));
    }
}

#[test]
fn latest_run_wins_per_series_and_other_series_stay() {
    let old = sample_rows("2026-11-25T06:00:00Z");
    let mut new = vec![row("2026-11-26T07:00:00Z", "stream_read_gb_s", 99.0, "GB/s")];
    new[0].backend = "host".into();
    new[0].isa = None;
    let files = vec![
        ResultFile {
            name: "a.jsonl".into(),
            rows: old.clone(),
        },
        ResultFile {
            name: "b.jsonl".into(),
            rows: new,
        },
    ];
    let sel = select_latest(&files);
    let rows = &sel["test-9000-2c"];
    assert_eq!(rows.len(), old.len());
    let s1: Vec<f64> = rows
        .iter()
        .filter(|r| r.metric == "stream_read_gb_s" && r.threads == 1)
        .map(|r| r.value)
        .collect();
    assert_eq!(s1, [99.0]);
    assert!(rows.iter().any(|r| r.metric == "stream_read_gb_s" && r.value == 14.25));
}

#[test]
fn a_bad_line_names_its_file_and_line() {
    let data = TempDir::new("bad");
    std::fs::write(data.0.join("x.jsonl"), "{\"schema\":1}\n").unwrap();
    let e = load(&data.0).err().unwrap().to_string();
    assert!(e.contains("x.jsonl:1"), "{e}");
}
