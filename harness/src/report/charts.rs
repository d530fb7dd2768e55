//! Charts: first a plain description built from rows ([`build`] → [`Chart`]), then
//! drawing it with plotters ([`render`], SVG and PNG).
//!
//! The split is what makes "every figure drawn comes from a line of data" checkable:
//! each bar, point and reference line in a [`Chart`] names the row it came from, and
//! the renderer draws nothing else (titles and axes aside). Values are drawn as
//! `row.value × y_scale` (e.g. fractions as percent).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle};

use crate::bench::error::{Error, IoContext, Result};
use crate::bench::kernels::MATMUL_SHAPES;
use crate::bench::record::Record;

/// DejaVu Sans, subset to Latin-1 and a few symbols (see `assets/README.md`).
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 600);

/// Colors (Tableau 20: ten hues, each dark then light), assigned to series in order, so
/// up to 20 series stay distinct (the matvec charts have one per weight type × ISA:
/// 4 × 3 on an AVX-512 machine; with 10 colours two of them shared one).
const PALETTE: [RGBColor; 20] = [
    RGBColor(31, 119, 180),
    RGBColor(174, 199, 232),
    RGBColor(255, 127, 14),
    RGBColor(255, 187, 120),
    RGBColor(44, 160, 44),
    RGBColor(152, 223, 138),
    RGBColor(214, 39, 40),
    RGBColor(255, 152, 150),
    RGBColor(148, 103, 189),
    RGBColor(197, 176, 213),
    RGBColor(140, 86, 75),
    RGBColor(196, 156, 148),
    RGBColor(227, 119, 194),
    RGBColor(247, 182, 210),
    RGBColor(127, 127, 127),
    RGBColor(199, 199, 199),
    RGBColor(188, 189, 34),
    RGBColor(219, 219, 141),
    RGBColor(23, 190, 207),
    RGBColor(158, 218, 229),
];

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// Grouped bars: one group per category, one bar per series.
    Bars { categories: Vec<String> },
    /// Lines over a numeric x; `log2_x` spaces x by powers of two.
    Lines { log2_x: bool },
}

/// One drawn value and the row it came from (an index into the machine's rows).
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Category index (bars) — unused for lines.
    pub cat: usize,
    /// x value (lines) — unused for bars.
    pub x: f64,
    /// The row's value, unscaled.
    pub y: f64,
    pub row: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<Point>,
    /// Drawn dashed (peer figures averaged over a range).
    pub dashed: bool,
}

/// A horizontal reference line (e.g. measured memory bandwidth).
#[derive(Clone, Debug, PartialEq)]
pub struct HLine {
    pub name: String,
    pub y: f64,
    pub row: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// File stem.
    pub id: &'static str,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Drawn value = row value × `y_scale`.
    pub y_scale: f64,
    /// Metrics the chart may draw (checked by the tests).
    pub metrics: Vec<&'static str>,
    pub kind: Kind,
    pub series: Vec<Series>,
    pub hlines: Vec<HLine>,
}

fn dtype_rank(q: &str) -> usize {
    ["q4_0", "q4_1", "q8_0", "f16", "bf16", "f32"]
        .iter()
        .position(|&x| x == q)
        .unwrap_or(99)
}

fn shape_label(shape: &str) -> String {
    MATMUL_SHAPES
        .iter()
        .find(|(_, o, i)| format!("{o}x{i}") == shape)
        .map(|(name, _, _)| format!("{shape} ({name})"))
        .unwrap_or_else(|| shape.to_string())
}

fn shape_rank(shape: &str) -> usize {
    MATMUL_SHAPES
        .iter()
        .position(|(_, o, i)| format!("{o}x{i}") == shape)
        .unwrap_or(99)
}

/// Grouped bars of `metric` rows selected by `keep`, categories from `cat_of` (ordered
/// by `cat_rank`, then name), series from `series_of` (ordered by `series_rank`).
#[allow(clippy::too_many_arguments)]
fn bars(
    rows: &[Record],
    metric: &'static str,
    keep: impl Fn(&Record) -> bool,
    cat_of: impl Fn(&Record) -> String,
    cat_rank: impl Fn(&str) -> usize,
    series_of: impl Fn(&Record) -> String,
    series_rank: impl Fn(&str) -> (usize, String),
) -> (Vec<String>, Vec<Series>) {
    let sel: Vec<(usize, &Record)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.metric == metric && keep(r))
        .collect();
    let mut cats: Vec<String> = sel.iter().map(|(_, r)| cat_of(r)).collect();
    cats.sort_by(|a, b| (cat_rank(a), a).cmp(&(cat_rank(b), b)));
    cats.dedup();
    let mut by: BTreeMap<(usize, String), Vec<Point>> = BTreeMap::new();
    for (i, r) in sel {
        let cat = cats.iter().position(|c| *c == cat_of(r)).unwrap_or(0);
        by.entry(series_rank(&series_of(r))).or_default().push(Point {
            cat,
            x: 0.0,
            y: r.value,
            row: i,
        });
    }
    let series = by
        .into_iter()
        .map(|((_, name), mut points)| {
            points.sort_by_key(|p| p.cat);
            Series {
                name,
                points,
                dashed: false,
            }
        })
        .collect();
    (cats, series)
}

/// Lines of `metric` rows, one series per configuration, x from `x_of`.
fn lines(rows: &[Record], metric: &'static str, x_of: impl Fn(&Record) -> Option<f64>) -> Vec<Series> {
    let mut by: BTreeMap<(bool, String), Vec<Point>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate().filter(|(_, r)| r.metric == metric) {
        let Some(x) = x_of(r) else { continue };
        by.entry((r.peer.is_some(), r.config_label())).or_default().push(Point {
            cat: 0,
            x,
            y: r.value,
            row: i,
        });
    }
    by.into_iter()
        .map(|((peer, name), mut points)| {
            points.sort_by(|a, b| a.x.total_cmp(&b.x));
            Series {
                name,
                points,
                dashed: peer,
            }
        })
        .collect()
}

/// Series name of a matmul bar: weight type and ISA (`q4_0 avx512`).
fn quant_isa_label(r: &Record) -> String {
    format!(
        "{} {}",
        r.quant.as_deref().unwrap_or("?"),
        r.isa.as_deref().unwrap_or("?")
    )
}

/// Series order of matmul bars: by weight type, then by name.
fn quant_isa_rank(s: &str) -> (usize, String) {
    (dtype_rank(s.split(' ').next().unwrap_or("")), s.to_string())
}

/// A matvec bandwidth chart of `metric` (one-token rows): bars per shape × weight type
/// × ISA, with the measured memory read bandwidth as lines; `None` without data.
fn matvec_chart(
    rows: &[Record],
    metric: &'static str,
    id: &'static str,
    title: String,
    x_label: &str,
) -> Option<Chart> {
    let (cats, series) = bars(
        rows,
        metric,
        |r| r.tokens == Some(1) && r.peer.is_none(),
        |r| shape_label(r.shape.as_deref().unwrap_or("?")),
        |c| shape_rank(c.split(' ').next().unwrap_or("")),
        quant_isa_label,
        quant_isa_rank,
    );
    if series.is_empty() {
        return None;
    }
    let hlines = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.metric == "stream_read_gb_s")
        .map(|(i, r)| HLine {
            name: format!(
                "memory read, {} thread{}: {:.1} GB/s",
                r.threads,
                if r.threads == 1 { "" } else { "s" },
                r.value
            ),
            y: r.value,
            row: i,
        })
        .collect();
    Some(Chart {
        id,
        title,
        x_label: x_label.into(),
        y_label: "weight bytes / time (GB/s)".into(),
        y_scale: 1.0,
        metrics: vec![metric, "stream_read_gb_s"],
        kind: Kind::Bars { categories: cats },
        series,
        hlines,
    })
}

/// Every chart the rows allow (charts without data are left out).
pub fn build(rows: &[Record]) -> Vec<Chart> {
    let mut out = Vec::new();
    let machine = rows.first().map(|r| r.machine.slug()).unwrap_or_default();

    // (1) matvec GB/s per shape, bars per weight type × ISA, against STREAM read; (1a)
    // the same with the weights streamed from memory, as in decode.
    for (metric, id, title, x_label) in [
        (
            "matmul_gb_s",
            "matvec_gb_s",
            "Matrix-vector (1 token) weight bandwidth",
            "weight matrix, out x in (SmolLM2-135M role)",
        ),
        (
            "matmul_stream_gb_s",
            "matvec_stream_gb_s",
            "Matrix-vector (1 token), weights streamed from memory",
            "weight matrix, out x in (SmolLM2-135M role), copies filling 96 MiB",
        ),
    ] {
        if let Some(c) = matvec_chart(rows, metric, id, format!("{title} — {machine}"), x_label) {
            out.push(c);
        }
    }

    // (1b) batched matmul (prefill-like) GFLOP/s.
    let (cats, series) = bars(
        rows,
        "matmul_gflop_s",
        |r| r.tokens.is_some_and(|t| t > 1) && r.peer.is_none(),
        |r| {
            format!(
                "{} x {} tok",
                shape_label(r.shape.as_deref().unwrap_or("?")),
                r.tokens.unwrap_or(0)
            )
        },
        |c| shape_rank(c.split(' ').next().unwrap_or("")),
        quant_isa_label,
        quant_isa_rank,
    );
    if !series.is_empty() {
        out.push(Chart {
            id: "matmul_batch_gflop_s",
            title: format!("Batched matmul (prefill-like) throughput — {machine}"),
            x_label: "weight matrix x tokens per call".into(),
            y_label: "GFLOP/s (2 x out x in x tokens / time)".into(),
            y_scale: 1.0,
            metrics: vec!["matmul_gflop_s"],
            kind: Kind::Bars { categories: cats },
            series,
            hlines: Vec::new(),
        });
    }

    // (2) decode tok/s vs context: our buckets at their midpoints; a peer's average
    // over a range as a dashed segment across it.
    let mut series = lines(rows, "decode_tok_s", |r| {
        let (hi, n) = (r.ctx? as f64, r.tokens.unwrap_or(1) as f64);
        Some(hi - (n - 1.0) / 2.0)
    });
    for s in series.iter_mut().filter(|s| s.dashed) {
        s.points = s
            .points
            .iter()
            .flat_map(|p| {
                let r = &rows[p.row];
                let (hi, n) = (r.ctx.unwrap_or(0) as f64, r.tokens.unwrap_or(1) as f64);
                [
                    Point {
                        x: hi - n + 1.0,
                        ..p.clone()
                    },
                    Point { x: hi, ..p.clone() },
                ]
            })
            .collect();
        s.name = format!("{} (mean over range)", s.name);
    }
    if !series.is_empty() {
        out.push(Chart {
            id: "decode_tok_s",
            title: format!("Decode throughput as the context grows — {machine}"),
            x_label: "context length (positions in KV cache; bucket midpoint)".into(),
            y_label: "decode speed (tokens/s)".into(),
            y_scale: 1.0,
            metrics: vec!["decode_tok_s"],
            kind: Kind::Lines { log2_x: false },
            series,
            hlines: Vec::new(),
        });
    }

    // (3) prefill tok/s vs prompt length.
    let series = lines(rows, "prefill_tok_s", |r| r.prompt_len.map(|p| p as f64));
    if !series.is_empty() {
        out.push(Chart {
            id: "prefill_tok_s",
            title: format!("Prefill throughput vs prompt length — {machine}"),
            x_label: "prompt length (tokens, log2 scale)".into(),
            y_label: "prefill speed (tokens/s)".into(),
            y_scale: 1.0,
            metrics: vec!["prefill_tok_s"],
            kind: Kind::Lines { log2_x: true },
            series,
            hlines: Vec::new(),
        });
    }

    // (4) where a decode token's time goes: ops by their largest share, `other` last.
    let mut shares: Vec<(String, f64)> = Vec::new();
    for r in rows.iter().filter(|r| r.metric == "op_time_frac") {
        let op = r.op.clone().unwrap_or_default();
        match shares.iter_mut().find(|s| s.0 == op) {
            Some(s) => s.1 = s.1.max(r.value),
            None => shares.push((op, r.value)),
        }
    }
    shares.sort_by(|a, b| {
        (a.0 == "other", -a.1, &a.0)
            .partial_cmp(&(b.0 == "other", -b.1, &b.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let (cats, series) = bars(
        rows,
        "op_time_frac",
        |_| true,
        |r| r.op.clone().unwrap_or_default(),
        |c| shares.iter().position(|s| s.0 == c).unwrap_or(usize::MAX),
        |r| r.config_label(),
        |s| (0, s.to_string()),
    );
    if !series.is_empty() {
        out.push(Chart {
            id: "op_breakdown",
            title: format!("Where a decode token's time goes — {machine}"),
            x_label: "op kind".into(),
            y_label: "share of decode time (%)".into(),
            y_scale: 100.0,
            metrics: vec!["op_time_frac"],
            kind: Kind::Bars { categories: cats },
            series,
            hlines: Vec::new(),
        });
    }

    // (4b) decode tok/s as the stream runs past a small KV cache, one line per eviction
    // policy × block × configuration (`bench --evict`), buckets at their midpoints.
    let mut by: BTreeMap<(usize, String), Vec<Point>> = BTreeMap::new();
    for (i, r) in rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.metric == "evict_decode_tok_s")
    {
        let (Some(hi), Some(op)) = (r.ctx, r.op.as_deref()) else {
            continue;
        };
        let n = r.tokens.unwrap_or(1) as f64;
        let rank = antigravity_core::kv_evict::KvPolicy::ALL
            .iter()
            .position(|p| p.name() == op)
            .unwrap_or(99);
        let name = format!("{op} ({}) {}", r.shape.as_deref().unwrap_or("?"), r.config_label());
        by.entry((rank, name)).or_default().push(Point {
            cat: 0,
            x: hi as f64 - (n - 1.0) / 2.0,
            y: r.value,
            row: i,
        });
    }
    if !by.is_empty() {
        out.push(Chart {
            id: "decode_evict_tok_s",
            title: format!("Decode throughput past a small KV cache, per eviction policy — {machine}"),
            x_label: "tokens decoded (stream position; bucket midpoint)".into(),
            y_label: "decode speed (tokens/s)".into(),
            y_scale: 1.0,
            metrics: vec!["evict_decode_tok_s"],
            kind: Kind::Lines { log2_x: false },
            series: by
                .into_iter()
                .map(|((_, name), mut points)| {
                    points.sort_by(|a, b| a.x.total_cmp(&b.x));
                    Series {
                        name,
                        points,
                        dashed: false,
                    }
                })
                .collect(),
            hlines: Vec::new(),
        });
    }

    // (5) per-token latency percentiles.
    let pct = |m: &str| {
        m.trim_start_matches("token_latency_ms_p")
            .parse::<usize>()
            .unwrap_or(999)
    };
    let mut cats = Vec::new();
    let mut by: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    let mut lat: Vec<(usize, &Record)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.metric.starts_with("token_latency_ms_p"))
        .collect();
    lat.sort_by_key(|(_, r)| pct(&r.metric));
    for (i, r) in lat {
        let c = r.metric.trim_start_matches("token_latency_ms_").to_string();
        if !cats.contains(&c) {
            cats.push(c.clone());
        }
        let cat = cats.iter().position(|x| *x == c).unwrap_or(0);
        by.entry(r.config_label()).or_default().push(Point {
            cat,
            x: 0.0,
            y: r.value,
            row: i,
        });
    }
    if !by.is_empty() {
        out.push(Chart {
            id: "token_latency",
            title: format!("Per-token decode latency percentiles — {machine}"),
            x_label: "percentile over decoded tokens".into(),
            y_label: "latency per token (ms)".into(),
            y_scale: 1.0,
            metrics: vec!["token_latency_ms_p50", "token_latency_ms_p90", "token_latency_ms_p99"],
            kind: Kind::Bars { categories: cats },
            series: by
                .into_iter()
                .map(|(name, points)| Series {
                    name,
                    points,
                    dashed: false,
                })
                .collect(),
            hlines: Vec::new(),
        });
    }
    out
}

fn font_once() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| ok = register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::msg("embedded chart font failed to load"))
    }
}

fn perr<E: std::fmt::Debug>(e: E) -> Error {
    Error::msg(format!("chart drawing failed: {e:?}"))
}

/// A linear f64 axis whose ticks are exactly the given values (category centres, the
/// measured prompt lengths), so labels sit where the data is.
struct Keyed {
    lo: f64,
    hi: f64,
    keys: Vec<f64>,
}

impl Keyed {
    fn new(lo: f64, hi: f64, keys: Vec<f64>) -> Keyed {
        Keyed { lo, hi, keys }
    }
}

impl Ranged for Keyed {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }
    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.keys.clone()
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// "Nice" tick positions covering `lo..=hi`.
fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Formats y ticks with as many decimals as the axis span needs, the same on every tick.
fn y_fmt(top: f64) -> impl Fn(&f64) -> String {
    let dec = if top < 0.5 {
        3
    } else if top < 5.0 {
        2
    } else if top < 50.0 {
        1
    } else {
        0
    };
    move |y| format!("{y:.dec$}")
}

const LIGHT: RGBColor = RGBColor(238, 238, 238);

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, c: &Chart) -> Result<()> {
    root.fill(&WHITE).map_err(perr)?;
    let y_max = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.y))
        .chain(c.hlines.iter().map(|h| h.y))
        .fold(0.0f64, f64::max)
        * c.y_scale;
    // Headroom for the legend, drawn in the upper part.
    let legend_rows = c.series.len() + c.hlines.len();
    let y_top = if y_max > 0.0 {
        y_max * (1.15 + 0.06 * legend_rows as f64)
    } else {
        1.0
    };
    let title = (FAMILY, 22).into_font();
    let label = (FAMILY, 15).into_font();
    let tick = (FAMILY, 13).into_font();
    let yf = y_fmt(y_top);

    match &c.kind {
        Kind::Bars { categories } => {
            let n = categories.len().max(1);
            let centers: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
            let mut ch = ChartBuilder::on(&root)
                .caption(&c.title, title)
                .margin(12)
                .x_label_area_size(55)
                .y_label_area_size(75)
                .build_cartesian_2d(Keyed::new(0.0, n as f64, centers), 0.0..y_top)
                .map_err(perr)?;
            let cats = categories.clone();
            ch.configure_mesh()
                .disable_x_mesh()
                .light_line_style(LIGHT)
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .label_style(tick.clone())
                .axis_desc_style(label.clone())
                .x_label_formatter(&|x| cats.get(x.floor() as usize).cloned().unwrap_or_default())
                .y_label_formatter(&yf)
                .draw()
                .map_err(perr)?;
            let k = c.series.len().max(1) as f64;
            let w = 0.8 / k;
            for (j, s) in c.series.iter().enumerate() {
                let color = PALETTE[j % PALETTE.len()];
                let scale = c.y_scale;
                ch.draw_series(s.points.iter().map(|p| {
                    let x0 = p.cat as f64 + 0.1 + j as f64 * w;
                    Rectangle::new([(x0, 0.0), (x0 + w * 0.92, p.y * scale)], color.filled())
                }))
                .map_err(perr)?
                .label(&s.name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled()));
            }
            // Values on the bars when they fit.
            let n_bars: usize = c.series.iter().map(|s| s.points.len()).sum();
            if n_bars <= 24 {
                let style = (FAMILY, 11)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Bottom));
                for (j, s) in c.series.iter().enumerate() {
                    ch.draw_series(s.points.iter().map(|p| {
                        let x = p.cat as f64 + 0.1 + (j as f64 + 0.46) * w;
                        Text::new(fmt_num(p.y * c.y_scale), (x, p.y * c.y_scale), style.clone())
                    }))
                    .map_err(perr)?;
                }
            }
            for (k, h) in c.hlines.iter().enumerate() {
                let y = h.y * c.y_scale;
                let grey = [BLACK, RGBColor(130, 130, 130), RGBColor(190, 190, 190)][k % 3];
                let style = ShapeStyle::from(&grey).stroke_width(2);
                ch.draw_series(DashedLineSeries::new(vec![(0.0, y), (n as f64, y)], 10, 6, style))
                    .map_err(perr)?
                    .label(&h.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], style));
            }
            ch.configure_series_labels()
                .label_font(tick)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(perr)?;
        }
        Kind::Lines { log2_x } => {
            let tx = |x: f64| if *log2_x { x.max(1e-9).log2() } else { x };
            let xs: Vec<f64> = c.series.iter().flat_map(|s| s.points.iter().map(|p| tx(p.x))).collect();
            let (lo, hi) = xs.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            let (lo, hi) = if lo > hi { (0.0, 1.0) } else { (lo, hi) };
            let pad = ((hi - lo) * 0.05).max(if *log2_x { 0.25 } else { 1.0 });
            let (x0, x1) = (if *log2_x { lo - pad } else { (lo - pad).max(0.0) }, hi + pad);
            let keys = if *log2_x {
                let mut k: Vec<f64> = xs.clone();
                k.sort_by(f64::total_cmp);
                k.dedup();
                k
            } else {
                nice_ticks(x0, x1, 8)
            };
            let log = *log2_x;
            let mut ch = ChartBuilder::on(&root)
                .caption(&c.title, title)
                .margin(12)
                .x_label_area_size(55)
                .y_label_area_size(75)
                .build_cartesian_2d(Keyed::new(x0, x1, keys), 0.0..y_top)
                .map_err(perr)?;
            ch.configure_mesh()
                .light_line_style(LIGHT)
                .x_desc(&c.x_label)
                .y_desc(&c.y_label)
                .label_style(tick.clone())
                .axis_desc_style(label.clone())
                .x_label_formatter(&|x| if log { fmt_num(x.exp2()) } else { fmt_num(*x) })
                .y_label_formatter(&yf)
                .draw()
                .map_err(perr)?;
            for (j, s) in c.series.iter().enumerate() {
                let color = PALETTE[j % PALETTE.len()];
                let pts: Vec<(f64, f64)> = s.points.iter().map(|p| (tx(p.x), p.y * c.y_scale)).collect();
                let style = ShapeStyle::from(&color).stroke_width(3);
                if s.dashed {
                    ch.draw_series(DashedLineSeries::new(pts.clone(), 10, 6, style))
                        .map_err(perr)?
                        .label(&s.name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                } else {
                    ch.draw_series(LineSeries::new(pts.clone(), style))
                        .map_err(perr)?
                        .label(&s.name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                }
                ch.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(perr)?;
            }
            ch.configure_series_labels()
                .label_font(tick)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(perr)?;
        }
    }
    root.present().map_err(perr)?;
    Ok(())
}

/// Draws `c` as `<dir>/<id>.svg` and `<dir>/<id>.png`; returns both paths.
pub fn render(c: &Chart, _rows: &[Record], dir: &Path) -> Result<Vec<PathBuf>> {
    font_once()?;
    let svg = dir.join(format!("{}.svg", c.id));
    let png = dir.join(format!("{}.png", c.id));
    {
        let mut text = String::new();
        draw(SVGBackend::with_string(&mut text, SIZE).into_drawing_area(), c)?;
        std::fs::write(&svg, text).at(&svg)?;
    }
    draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), c)?;
    Ok(vec![svg, png])
}
