//! The run report as one self-contained HTML page: the summary first (verdict,
//! properties, times, counters, the command that replays a failure), then the
//! run's timeline drawn as inline SVG. No scripts, no external resources, no
//! clock: the same outcome and timeline always give the same bytes. The caller
//! writes the file; this module only builds the string.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::outcome::RunOutcome;

/// What the runner samples once per simulated second for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// Sampling interval (ms of simulated time).
    pub interval_ms: u64,
    /// Node groups shown as rows (e.g. "validators", "full", "light", "byzantine"), with their size.
    pub groups: Vec<TimelineGroup>,
    pub samples: Vec<TimelineSample>,
    /// Faults as bands over time: partitions, crashes, loss, clogs, clock faults.
    pub bands: Vec<TimelineBand>,
    /// Point events worth a marker ("all nodes in phase 3", "first commit after heal").
    pub markers: Vec<TimelineMarker>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineGroup {
    pub name: String,
    pub nodes: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineSample {
    pub at_ms: u64,
    /// One entry per group of `Timeline::groups`, same order.
    pub groups: Vec<GroupSample>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSample {
    /// Live nodes of the group in bootstrap phase 0, 1, 2, 3.
    pub phase_counts: [u32; 4],
    /// Nodes of the group that are down (crashed, not restarted yet).
    pub down: u32,
    /// Lowest and highest committed chain height among the group's live
    /// nodes (a light node's: the height of the latest header it trusts).
    pub height_min: u64,
    pub height_max: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineBand {
    /// "partition", "crash", "loss", "clog", "clock", "latency", "swizzle", "disk-errors".
    pub kind: String,
    pub label: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineMarker {
    pub at_ms: u64,
    pub label: String,
}

/// Chart width and the plot's horizontal extent (px); the left margin holds row labels.
const CHART_W: f64 = 1000.0;
const PLOT_X0: f64 = 170.0;
const PLOT_X1: f64 = 970.0;
/// At most one x position per pixel of the plot: more add bytes, not
/// information. This bounds the page for runs of any length.
const COLUMNS_MAX: usize = 800;
/// Rows, bands, fault lanes and markers drawn; the list below the charts
/// shows up to `LIST_ROWS_MAX` faults and events.
const GROUPS_MAX: usize = 16;
const BANDS_DRAWN_MAX: usize = 400;
const KINDS_MAX: usize = 12;
const MARKERS_DRAWN_MAX: usize = 100;
const LIST_ROWS_MAX: usize = 200;
/// Characters kept of a label inside a chart, of a tooltip, and of free text
/// (names, property details, panic messages, the reproduce command).
const LABEL_CHARS_MAX: usize = 22;
const TITLE_CHARS_MAX: usize = 300;
const TEXT_CHARS_MAX: usize = 4000;
/// Vertical layout (px): a fault lane or marker label line, a group row, the
/// gap under a row, the x axis with its title, the height plot.
const LANE_H: f64 = 14.0;
const MARKER_LANES: usize = 3;
const ROW_H: f64 = 44.0;
const ROW_GAP: f64 = 14.0;
const AXIS_H: f64 = 36.0;
const HEIGHT_PLOT_H: f64 = 180.0;

/// Bootstrap phases 0..3 (viridis: ordered, colour-blind safe), then down nodes.
const LAYER_COLOURS: [&str; 5] = ["#fde725", "#5ec962", "#21918c", "#3b528b", "#a0a0a0"];
/// Groups in the height chart (Okabe–Ito).
const GROUP_COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#cc79a7", "#009e73", "#000000", "#e69f00",
];
/// Fault kinds with their colours, in lane order; other kinds follow, sorted, in grey.
const KINDS: [(&str, &str); 8] = [
    ("partition", "#d62728"),
    ("crash", "#8c564b"),
    ("loss", "#ff7f0e"),
    ("clog", "#9467bd"),
    ("clock", "#17becf"),
    ("latency", "#bcbd22"),
    ("swizzle", "#e377c2"),
    ("disk-errors", "#1f77b4"),
];
const OTHER_KIND_COLOUR: &str = "#555555";

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
color:#1f2328;margin:24px auto;max-width:1040px;padding:0 12px}\
h1{font-size:22px;margin:0;overflow-wrap:anywhere}h2{font-size:17px;margin:26px 0 4px}\
h3{font-size:15px;margin:18px 0 2px}.top{display:flex;gap:18px;align-items:center}\
.sub{color:#59636e;margin:2px 0 0}.verdict{font-size:34px;font-weight:700;color:#fff;\
padding:6px 22px;border-radius:8px;letter-spacing:1px}.pass{background:#1a7f37}\
.fail{background:#cf222e}table{border-collapse:collapse;margin:6px 0}\
td,th{text-align:left;padding:3px 14px 3px 0;vertical-align:top}th{color:#59636e;font-weight:600}\
.detail{overflow-wrap:anywhere}.ok{color:#1a7f37;font-weight:700}.bad{color:#cf222e;font-weight:700}\
code,pre{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}\
pre{background:#f6f8fa;border:1px solid #d1d9e0;border-radius:6px;padding:8px 10px;\
white-space:pre-wrap}pre.repro{border:2px solid #cf222e;font-size:14px}\
.note{color:#59636e;margin:0 0 6px}.legend span{margin-right:14px;white-space:nowrap}\
.legend i{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:4px;\
vertical-align:-1px;border:1px solid #0003}.legend i.line{width:18px;height:3px;border:0;\
vertical-align:3px}svg{display:block;margin:4px 0;max-width:100%;height:auto}\
svg text{font:11px system-ui,sans-serif;fill:#333}";

/// `text` with every character that means something in HTML or SVG replaced
/// by an entity, and control characters (other than newline and tab) by U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// At most `chars_max` characters of `text`, the last one `…` if it was cut.
fn truncate(text: &str, chars_max: usize) -> String {
    if text.chars().count() <= chars_max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(chars_max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Truncated, then escaped (so an entity is never cut in half).
fn text(text: &str, chars_max: usize) -> String {
    escape(&truncate(text, chars_max))
}

/// A number with at most one decimal, no trailing ".0", no "-0"; 0 if not finite.
#[derive(Clone, Copy, PartialEq)]
struct N(f64);

impl N {
    fn tenths(self) -> i64 {
        if self.0.is_finite() {
            (self.0 * 10.0).round() as i64
        } else {
            0
        }
    }
}

impl std::fmt::Display for N {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenths = self.tenths();
        let sign = if tenths < 0 { "-" } else { "" };
        let (whole, tenth) = (tenths.unsigned_abs() / 10, tenths.unsigned_abs() % 10);
        match tenth {
            0 => write!(f, "{sign}{whole}"),
            _ => write!(f, "{sign}{whole}.{tenth}"),
        }
    }
}

fn seconds(ms: u64) -> N {
    N(ms as f64 / 1000.0)
}

/// 1234567 → "1,234,567".
fn grouped(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A 1-2-5 step near `raw` (for axis ticks).
fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let factor = match raw / magnitude {
        f if f <= 1.0 => 1.0,
        f if f <= 2.0 => 2.0,
        f if f <= 5.0 => 5.0,
        _ => 10.0,
    };
    factor * magnitude
}

fn kind_colour(kind: &str) -> &'static str {
    KINDS
        .iter()
        .find(|(known, _)| *known == kind)
        .map_or(OTHER_KIND_COLOUR, |(_, colour)| colour)
}

fn band_title(band: &TimelineBand) -> String {
    let (start, end) = (
        seconds(band.start_ms),
        seconds(band.end_ms.max(band.start_ms)),
    );
    text(
        &format!("{}: {} · {start}–{end} s", band.kind, band.label),
        TITLE_CHARS_MAX,
    )
}

fn open_svg(out: &mut String, height: f64, label: &str) {
    let (w, h) = (N(CHART_W), N(height));
    let _ = writeln!(
        out,
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{label}\">"
    );
}

/// A rectangle; with a non-empty (escaped) `title`, a tooltip too.
fn rect(out: &mut String, (x, y, w, h): (f64, f64, f64, f64), style: &str, title: &str) {
    let (x, y, w, h) = (N(x), N(y), N(w), N(h));
    let _ = write!(
        out,
        "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" {style}"
    );
    match title {
        "" => out.push_str("/>\n"),
        _ => {
            let _ = writeln!(out, "><title>{title}</title></rect>");
        }
    }
}

/// A text label; `body` must be escaped already.
fn label(out: &mut String, (x, y): (f64, f64), anchor: &str, body: &str) {
    let (x, y) = (N(x), N(y));
    let _ = writeln!(
        out,
        "<text x=\"{x}\" y=\"{y}\" text-anchor=\"{anchor}\">{body}</text>"
    );
}

fn legend(out: &mut String, entries: &[(String, &str)], lines: bool) {
    let class = if lines { " class=\"line\"" } else { "" };
    out.push_str("<p class=\"legend\">");
    for (name, colour) in entries {
        let _ = write!(
            out,
            "<span><i{class} style=\"background:{colour}\"></i>{name}</span>"
        );
    }
    out.push_str("</p>\n");
}

/// One x position of the charts: a bucket of consecutive samples.
struct Column<'a> {
    at_ms: u64,
    /// The bucket's sample with the most nodes down (the first on ties), so a
    /// short crash survives downsampling; its phase counts are drawn.
    shown: &'a TimelineSample,
    /// Per group: the lowest `height_min` and highest `height_max` over the
    /// bucket's samples in which the group had live nodes.
    heights: Vec<Option<(u64, u64)>>,
}

fn group_sample(sample: &TimelineSample, group: usize) -> GroupSample {
    sample.groups.get(group).copied().unwrap_or_default()
}

fn down(sample: &TimelineSample) -> u64 {
    sample
        .groups
        .iter()
        .map(|group| u64::from(group.down))
        .sum()
}

/// Buckets the samples (sorted by time) into at most `COLUMNS_MAX` columns.
fn columns<'a>(samples: &[&'a TimelineSample], groups: usize) -> Vec<Column<'a>> {
    let (count, columns) = (samples.len(), samples.len().min(COLUMNS_MAX));
    let mut out = Vec::with_capacity(columns);
    for column in 0..columns {
        let bucket = &samples[column * count / columns..(column + 1) * count / columns];
        let Some(&first) = bucket.first() else {
            continue;
        };
        let shown = bucket.iter().fold(
            first,
            |shown, &s| if down(s) > down(shown) { s } else { shown },
        );
        let heights = (0..groups)
            .map(|group| {
                let live = bucket
                    .iter()
                    .map(|s| group_sample(s, group))
                    .filter(|g| g.phase_counts.iter().any(|&c| c > 0));
                live.fold(None, |range, g| match range {
                    None => Some((g.height_min, g.height_max)),
                    Some((lo, hi)) => Some((g.height_min.min(lo), g.height_max.max(hi))),
                })
            })
            .collect();
        out.push(Column {
            at_ms: first.at_ms,
            shown,
            heights,
        });
    }
    out
}

/// Everything both charts share: the columns, the time scale, what is drawn.
struct Chart<'a> {
    groups: &'a [TimelineGroup],
    columns: Vec<Column<'a>>,
    /// Simulated time at the right edge of the plot, and where the last column ends.
    end_ms: u64,
    series_end_ms: u64,
    bands: Vec<&'a TimelineBand>,
    kinds: Vec<&'a str>,
    markers: Vec<&'a TimelineMarker>,
}

impl Chart<'_> {
    fn x(&self, at_ms: u64) -> f64 {
        PLOT_X0 + (at_ms as f64 / self.end_ms as f64).clamp(0.0, 1.0) * (PLOT_X1 - PLOT_X0)
    }

    /// A band's extent on the x axis (at least 1.5 px, so instants show).
    fn span(&self, band: &TimelineBand) -> (f64, f64) {
        let x = self.x(band.start_ms);
        (x, (self.x(band.end_ms.max(band.start_ms)) - x).max(1.5))
    }

    /// A step path through one y per column, each held until the next column
    /// (the last until `series_end_ms`); `None` leaves a gap. With `base_y`,
    /// the path is closed down to it and filled.
    fn steps(&self, out: &mut String, ys: &[Option<f64>], base_y: Option<f64>, style: &str) {
        let mut d = String::new();
        let mut previous: Option<i64> = None;
        for (column, y) in self.columns.iter().zip(ys) {
            let (x, y) = (N(self.x(column.at_ms)), y.map(N));
            let _ = match (y, previous) {
                (None, Some(_)) => write!(d, "H{x}"),
                (Some(y), None) => match base_y {
                    Some(base) => write!(d, "M{x},{}V{y}", N(base)),
                    None => write!(d, "M{x},{y}"),
                },
                (Some(y), Some(last)) if y.tenths() != last => write!(d, "H{x}V{y}"),
                _ => Ok(()),
            };
            previous = y.map(N::tenths);
        }
        if previous.is_some() {
            let _ = write!(d, "H{}", N(self.x(self.series_end_ms)));
            if let Some(base) = base_y {
                let _ = write!(d, "V{}Z", N(base));
            }
        }
        if !d.is_empty() {
            let _ = writeln!(out, "<path {style} d=\"{d}\"/>");
        }
    }

    /// Faults as translucent bands from `top` to `bottom`, each with its tooltip.
    fn bands(&self, out: &mut String, top: f64, bottom: f64) {
        for band in &self.bands {
            let (x, w) = self.span(band);
            let style = format!("fill=\"{}\" fill-opacity=\"0.16\"", kind_colour(&band.kind));
            rect(out, (x, top, w, bottom - top), &style, &band_title(band));
        }
    }

    /// Markers as dotted vertical lines from `top` to `bottom`; with
    /// `labels_top`, a short label in one of the marker lanes below it.
    fn markers(&self, out: &mut String, top: f64, bottom: f64, labels_top: Option<f64>) {
        for (i, marker) in self.markers.iter().enumerate() {
            let x = self.x(marker.at_ms);
            let title = text(
                &format!("{} s: {}", seconds(marker.at_ms), marker.label),
                TITLE_CHARS_MAX,
            );
            let (xn, top_n, bottom_n) = (N(x), N(top), N(bottom));
            let _ = write!(
                out,
                "<g><title>{title}</title><path stroke=\"#222\" stroke-dasharray=\"2 2\" d=\"M{xn},{top_n}V{bottom_n}\"/>"
            );
            if let Some(labels_top) = labels_top {
                let y = labels_top + LANE_H * ((i % MARKER_LANES) as f64 + 1.0) - 3.0; // staggered
                let _ = write!(
                    out,
                    "<path stroke=\"#222\" d=\"M{xn},{}V{top_n}\"/>",
                    N(y - 9.0)
                );
                let (anchor, dx) = if x > PLOT_X1 - 140.0 {
                    ("end", -3.0)
                } else {
                    ("start", 3.0)
                };
                label(
                    out,
                    (x + dx, y),
                    anchor,
                    &text(&marker.label, LABEL_CHARS_MAX + 8),
                );
            }
            out.push_str("</g>\n");
        }
    }

    /// The x axis at `y`: ticks in simulated seconds and the axis title.
    fn x_axis(&self, out: &mut String, y: f64) {
        let _ = writeln!(
            out,
            "<path stroke=\"#555\" d=\"M{},{}H{}\"/>",
            N(PLOT_X0),
            N(y),
            N(PLOT_X1)
        );
        let end_s = self.end_ms as f64 / 1000.0;
        let step_s = nice_step(end_s / 8.0);
        for at_s in (0..=64u32)
            .map(|i| f64::from(i) * step_s)
            .take_while(|at_s| *at_s <= end_s + 1e-9)
        {
            let x = self.x((at_s * 1000.0).round() as u64);
            let _ = writeln!(out, "<path stroke=\"#555\" d=\"M{},{}v5\"/>", N(x), N(y));
            label(out, (x, y + 16.0), "middle", &N(at_s).to_string());
        }
        label(
            out,
            ((PLOT_X0 + PLOT_X1) / 2.0, y + 31.0),
            "middle",
            "simulated time (s)",
        );
    }
}

fn phase_chart(out: &mut String, chart: &Chart) {
    out.push_str("<h3>Bootstrap phases per group</h3>\n<p class=\"note\">Each row is one node group: \
how many of its live nodes are in bootstrap phase 0, 1, 2 or 3 over simulated time, with down \
(crashed) nodes in grey on top. Shaded bands are faults (hover for details), dotted lines events.</p>\n");
    let layers = ["phase 0", "phase 1", "phase 2", "phase 3", "down"];
    let mut entries: Vec<(String, &str)> = layers
        .iter()
        .zip(LAYER_COLOURS)
        .map(|(l, c)| (l.to_string(), c))
        .collect();
    entries.extend(
        chart
            .kinds
            .iter()
            .map(|kind| (text(kind, LABEL_CHARS_MAX), kind_colour(kind))),
    );
    legend(out, &entries, false);

    let markers_h = if chart.markers.is_empty() {
        0.0
    } else {
        LANE_H * chart.markers.len().min(MARKER_LANES) as f64 + 4.0
    };
    let lanes_top = 4.0 + markers_h;
    let kinds_h =
        LANE_H * chart.kinds.len() as f64 + if chart.kinds.is_empty() { 0.0 } else { 6.0 };
    let rows_top = lanes_top + kinds_h;
    let rows_bottom = rows_top + (ROW_H + ROW_GAP) * chart.groups.len() as f64 - ROW_GAP;
    open_svg(
        out,
        rows_bottom + AXIS_H + 4.0,
        "Bootstrap phases per group over simulated time",
    );
    for (g, group) in chart.groups.iter().enumerate() {
        let top = rows_top + (ROW_H + ROW_GAP) * g as f64;
        let base = top + ROW_H;
        let last = chart
            .columns
            .last()
            .map(|column| group_sample(column.shown, g))
            .unwrap_or_default();
        let name = text(&group.name, TITLE_CHARS_MAX);
        let (phases, down) = (last.phase_counts, last.down);
        let _ = writeln!(
            out,
            "<g><title>{name}, {} nodes; at the end phases 0–3: {phases:?}, {down} down</title>",
            group.nodes
        );
        label(
            out,
            (PLOT_X0 - 8.0, top + 18.0),
            "end",
            &format!(
                "<tspan font-weight=\"600\">{}</tspan>",
                text(&group.name, LABEL_CHARS_MAX)
            ),
        );
        label(
            out,
            (PLOT_X0 - 8.0, top + 33.0),
            "end",
            &format!("{} nodes", group.nodes),
        );
        rect(
            out,
            (PLOT_X0, top, PLOT_X1 - PLOT_X0, ROW_H),
            "fill=\"#f3f4f6\"",
            "",
        );
        // Cumulative counts per column: phases 0..3 from the bottom, down on top.
        let stacks: Vec<[u64; 5]> = chart
            .columns
            .iter()
            .map(|column| {
                let sample = group_sample(column.shown, g);
                let [phase0, phase1, phase2, phase3] = sample.phase_counts;
                let counts = [phase0, phase1, phase2, phase3, sample.down];
                let mut stack = [0u64; 5];
                let mut total = 0;
                for (layer, count) in counts.into_iter().enumerate() {
                    total += u64::from(count);
                    stack[layer] = total;
                }
                stack
            })
            .collect();
        let full = stacks
            .iter()
            .map(|stack| stack[4])
            .fold(u64::from(group.nodes).max(1), u64::max);
        // Painted top layer first, each from the baseline, so a layer shows
        // between its cumulative count and the one below it.
        for (layer, colour) in LAYER_COLOURS.iter().enumerate().rev() {
            let below = |stack: &[u64; 5]| if layer == 0 { 0 } else { stack[layer - 1] };
            if stacks.iter().all(|stack| stack[layer] == below(stack)) {
                continue;
            }
            let ys: Vec<Option<f64>> = stacks
                .iter()
                .map(|stack| Some(base - stack[layer] as f64 / full as f64 * ROW_H))
                .collect();
            chart.steps(out, &ys, Some(base), &format!("fill=\"{colour}\""));
        }
        out.push_str("</g>\n");
    }
    // One lane per fault kind: solid bars with the same tooltips.
    for (lane, kind) in chart.kinds.iter().enumerate() {
        let top = lanes_top + LANE_H * lane as f64;
        label(
            out,
            (PLOT_X0 - 8.0, top + 10.0),
            "end",
            &text(kind, LABEL_CHARS_MAX),
        );
        for band in chart.bands.iter().filter(|band| band.kind == *kind) {
            let (x, w) = chart.span(band);
            let style = format!("fill=\"{}\"", kind_colour(kind));
            rect(
                out,
                (x, top + 2.0, w, LANE_H - 4.0),
                &style,
                &band_title(band),
            );
        }
    }
    chart.bands(out, rows_top, rows_bottom);
    chart.markers(out, lanes_top, rows_bottom, Some(4.0));
    chart.x_axis(out, rows_bottom + 4.0);
    out.push_str("</svg>\n");
}

fn height_chart(out: &mut String, chart: &Chart) {
    out.push_str("<h3>Committed chain height</h3>\n");
    let heights = chart
        .columns
        .iter()
        .flat_map(|column| column.heights.iter().flatten());
    let height_max = heights.map(|&(_, hi)| hi).max().unwrap_or(0);
    if height_max == 0 {
        out.push_str("<p class=\"note\">No chain: no group committed a block (every height stayed 0), so the height chart is omitted.</p>\n");
        return;
    }
    out.push_str("<p class=\"note\">Highest committed height among each group's live nodes (solid) and lowest \
(dashed); a gap between the two means some nodes lag behind.</p>\n");
    let colour = |g: usize| GROUP_COLOURS[g % GROUP_COLOURS.len()];
    let entries: Vec<(String, &str)> = chart
        .groups
        .iter()
        .enumerate()
        .map(|(g, group)| (text(&group.name, LABEL_CHARS_MAX), colour(g)))
        .collect();
    legend(out, &entries, true);

    let (top, bottom) = (10.0, 10.0 + HEIGHT_PLOT_H);
    let step = nice_step(height_max as f64 / 4.0).max(1.0);
    let y_max = (height_max as f64 / step).ceil() * step;
    let y = |height: u64| bottom - height as f64 / y_max * HEIGHT_PLOT_H;
    open_svg(
        out,
        bottom + AXIS_H + 4.0,
        "Committed chain height per group over simulated time",
    );
    for value in (0..=16u32)
        .map(|i| (f64::from(i) * step) as u64)
        .take_while(|value| *value as f64 <= y_max)
    {
        let _ = writeln!(
            out,
            "<path stroke=\"#e1e4e8\" d=\"M{},{}H{}\"/>",
            N(PLOT_X0),
            N(y(value)),
            N(PLOT_X1)
        );
        label(out, (PLOT_X0 - 6.0, y(value) + 4.0), "end", &grouped(value));
    }
    let (axis_x, axis_y) = (N(PLOT_X0 - 48.0), N((top + bottom) / 2.0));
    let _ = writeln!(
        out,
        "<text transform=\"translate({axis_x},{axis_y}) rotate(-90)\" text-anchor=\"middle\">committed height</text>"
    );
    chart.bands(out, top, bottom);
    for (g, group) in chart.groups.iter().enumerate() {
        let _ = writeln!(
            out,
            "<g><title>{}</title>",
            text(&group.name, TITLE_CHARS_MAX)
        );
        for (highest, dashes) in [(true, ""), (false, " stroke-dasharray=\"5 3\"")] {
            let ys: Vec<Option<f64>> = chart
                .columns
                .iter()
                .map(|column| {
                    column
                        .heights
                        .get(g)
                        .copied()
                        .flatten()
                        .map(|(lo, hi)| y(if highest { hi } else { lo }))
                })
                .collect();
            let width = if highest { 2.0 } else { 1.5 };
            chart.steps(
                out,
                &ys,
                None,
                &format!(
                    "fill=\"none\" stroke=\"{}\" stroke-width=\"{width}\"{dashes}",
                    colour(g)
                ),
            );
        }
        out.push_str("</g>\n");
    }
    chart.markers(out, top, bottom, None);
    chart.x_axis(out, bottom);
    out.push_str("</svg>\n");
}

fn timeline_section(out: &mut String, outcome: &RunOutcome, timeline: &Timeline) {
    out.push_str("<h2>Timeline</h2>\n");
    let mut samples: Vec<&TimelineSample> = timeline.samples.iter().collect();
    samples.sort_by_key(|sample| sample.at_ms);
    let Some(last) = samples.last() else {
        out.push_str("<p class=\"note\">No timeline was recorded for this run.</p>\n");
        return event_list(out, timeline);
    };
    let groups = &timeline.groups[..timeline.groups.len().min(GROUPS_MAX)];
    let interval_ms = if timeline.interval_ms > 0 {
        timeline.interval_ms
    } else {
        1000
    };
    let series_end_ms = last.at_ms.saturating_add(interval_ms);
    let simulated_ms = (outcome.simulated_s * 1000.0) as u64; // saturating; NaN → 0
    let end_ms = timeline
        .markers
        .iter()
        .map(|marker| marker.at_ms)
        .fold(series_end_ms.max(simulated_ms).max(1000), u64::max);
    let bands: Vec<&TimelineBand> = timeline
        .bands
        .iter()
        .filter(|band| band.start_ms < end_ms)
        .take(BANDS_DRAWN_MAX)
        .collect();
    let present: BTreeSet<&str> = bands.iter().map(|band| band.kind.as_str()).collect();
    let mut kinds: Vec<&str> = KINDS
        .iter()
        .map(|(kind, _)| *kind)
        .filter(|kind| present.contains(kind))
        .collect();
    kinds.extend(
        present
            .iter()
            .filter(|kind| kind_colour(kind) == OTHER_KIND_COLOUR),
    );
    kinds.truncate(KINDS_MAX);
    let markers = timeline.markers.iter().take(MARKERS_DRAWN_MAX).collect();
    let columns = columns(&samples, groups.len());
    let chart = Chart {
        groups,
        columns,
        end_ms,
        series_end_ms,
        bands,
        kinds,
        markers,
    };
    if timeline.groups.len() > groups.len() {
        let _ = writeln!(
            out,
            "<p class=\"note\">Showing the first {} of {} groups.</p>",
            groups.len(),
            timeline.groups.len()
        );
    }
    phase_chart(out, &chart);
    height_chart(out, &chart);
    let drawn = match chart.columns.len() {
        columns if columns < samples.len() => format!(", drawn as {columns} columns"),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "<p class=\"note\">{} samples every {} s{drawn}.</p>",
        grouped(samples.len() as u64),
        seconds(interval_ms)
    );
    event_list(out, timeline);
}

/// The faults and events as a table, to read (and for those not drawn).
fn event_list(out: &mut String, timeline: &Timeline) {
    let (bands, markers) = (timeline.bands.len(), timeline.markers.len());
    if bands + markers == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "<details><summary>Faults ({bands}) and events ({markers})</summary>"
    );
    out.push_str("<table><tr><th>kind</th><th>from (s)</th><th>to (s)</th><th>what</th></tr>\n");
    for band in timeline.bands.iter().take(LIST_ROWS_MAX) {
        let (kind, label) = (
            text(&band.kind, LABEL_CHARS_MAX),
            text(&band.label, TITLE_CHARS_MAX),
        );
        let (start, end) = (
            seconds(band.start_ms),
            seconds(band.end_ms.max(band.start_ms)),
        );
        let _ = writeln!(
            out,
            "<tr><td>{kind}</td><td>{start}</td><td>{end}</td><td class=\"detail\">{label}</td></tr>"
        );
    }
    for marker in timeline.markers.iter().take(LIST_ROWS_MAX) {
        let (at, label) = (seconds(marker.at_ms), text(&marker.label, TITLE_CHARS_MAX));
        let _ = writeln!(
            out,
            "<tr><td>event</td><td>{at}</td><td></td><td class=\"detail\">{label}</td></tr>"
        );
    }
    out.push_str("</table>\n");
    let hidden = bands.saturating_sub(LIST_ROWS_MAX) + markers.saturating_sub(LIST_ROWS_MAX);
    if hidden > 0 {
        let _ = writeln!(out, "<p class=\"note\">{hidden} more not listed.</p>");
    }
    out.push_str("</details>\n");
}

fn summary_section(out: &mut String, outcome: &RunOutcome, reproduce: &str) {
    let (verdict, class) = if outcome.passed {
        ("PASS", "pass")
    } else {
        ("FAIL", "fail")
    };
    let (name, path) = (
        text(&outcome.scenario, TEXT_CHARS_MAX),
        text(&outcome.scenario_path, TEXT_CHARS_MAX),
    );
    let _ = writeln!(
        out,
        "<header class=\"top\"><div class=\"verdict {class}\">{verdict}</div><div><h1>{name}</h1><p class=\"sub\">seed {} · <code>{path}</code></p></div></header>",
        outcome.seed
    );
    out.push_str("<h2>Properties</h2>\n");
    if outcome.properties.is_empty() {
        out.push_str("<p class=\"note\">The scenario checks no properties.</p>\n");
    } else {
        out.push_str("<table>\n");
        for property in &outcome.properties {
            let (mark, class) = if property.passed {
                ("pass", "ok")
            } else {
                ("FAIL", "bad")
            };
            let (name, detail) = (
                text(&property.name, TITLE_CHARS_MAX),
                text(&property.detail, TEXT_CHARS_MAX),
            );
            let _ = writeln!(
                out,
                "<tr><td class=\"{class}\">{mark}</td><td><code>{name}</code></td><td class=\"detail\">{detail}</td></tr>"
            );
        }
        out.push_str("</table>\n");
    }
    if !outcome.passed {
        let _ = writeln!(
            out,
            "<h2>Reproduce</h2>\n<pre class=\"repro\">{}</pre>",
            text(reproduce, TEXT_CHARS_MAX)
        );
    }
    if let Some(panic) = &outcome.panic {
        let _ = writeln!(
            out,
            "<h2>Panic</h2>\n<pre>{}</pre>",
            text(panic, TEXT_CHARS_MAX)
        );
    }
    let counters = &outcome.counters;
    let speedup = N(outcome.simulated_s / outcome.wall_s.max(1e-9));
    let mut facts = vec![
        ("simulated time", format!("{} s", N(outcome.simulated_s))),
        (
            "wall time",
            format!("{} s ({speedup}× real time)", N(outcome.wall_s)),
        ),
        ("nodes", grouped(u64::from(outcome.nodes))),
        (
            "datagrams",
            format!(
                "{} delivered · {} lost · {} cut by partitions · {} duplicated",
                grouped(counters.datagrams_delivered),
                grouped(counters.datagrams_lost),
                grouped(counters.datagrams_partitioned),
                grouped(counters.datagrams_duplicated)
            ),
        ),
        (
            "events",
            format!(
                "{} ({}/s wall)",
                grouped(outcome.events_total),
                grouped(outcome.events_per_wall_s as u64)
            ),
        ),
        (
            "peak memory",
            format!("{} MiB", N(outcome.peak_rss_bytes as f64 / 1_048_576.0)),
        ),
    ];
    if let Some(after_s) = outcome.converged_after_faults_s {
        facts.push((
            "converged",
            format!("{} s after the last fault", N(after_s)),
        ));
    }
    out.push_str("<h2>Run</h2>\n<table>\n");
    for (name, value) in facts {
        let _ = writeln!(out, "<tr><th>{name}</th><td>{}</td></tr>", escape(&value));
    }
    let _ = writeln!(
        out,
        "<tr><th>digest</th><td><code>{}</code></td></tr>\n</table>",
        text(&outcome.digest, 128)
    );
}

/// The whole page. `outcome` is the run's report, `reproduce` the command line that replays it.
pub fn render(outcome: &RunOutcome, timeline: &Timeline, reproduce: &str) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let verdict = if outcome.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<title>{verdict} · {} · seed {} · hm-sim</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        text(&outcome.scenario, TITLE_CHARS_MAX),
        outcome.seed
    );
    summary_section(&mut out, outcome, reproduce);
    timeline_section(&mut out, outcome, timeline);
    out.push_str("</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{PropertyResult, Traffic};
    use crate::world::Counters;

    const REPRODUCE: &str = "cargo sim run scenarios/partition.toml --seed 7";

    fn property(name: &str, passed: bool, detail: &str) -> PropertyResult {
        PropertyResult {
            name: name.to_string(),
            passed,
            detail: detail.to_string(),
        }
    }

    fn outcome(scenario: &str, passed: bool) -> RunOutcome {
        RunOutcome {
            scenario: scenario.to_string(),
            scenario_path: "scenarios/partition.toml".to_string(),
            seed: 7,
            passed,
            properties: vec![
                property(
                    "membership_converges",
                    true,
                    "all 18 views matched after 14.2 s",
                ),
                property(
                    "chain_agreement",
                    passed,
                    "heights 1..=61 agree at every validator",
                ),
            ],
            nodes: 18,
            simulated_s: 120.0,
            wall_s: 9.5,
            peak_rss_bytes: 412 << 20,
            network_latency_ms: 20.0,
            counters: Counters {
                datagrams_delivered: 1_234_567,
                ..Counters::default()
            },
            events_total: 2_000_000,
            events_per_wall_s: 210_526.3,
            digest: "ab".repeat(32),
            converged_after_faults_s: Some(3.5),
            traffic: Traffic::default(),
            panic: None,
            timeline: None,
        }
    }

    fn group(name: &str, nodes: u32) -> TimelineGroup {
        TimelineGroup {
            name: name.to_string(),
            nodes,
        }
    }

    fn band(kind: &str, label: &str, start_s: u64, end_s: u64) -> TimelineBand {
        let (start_ms, end_ms) = (start_s * 1000, end_s * 1000);
        TimelineBand {
            kind: kind.to_string(),
            label: label.to_string(),
            start_ms,
            end_ms,
        }
    }

    /// Three groups over `seconds` samples: nodes walk through the phases in
    /// the first 20 s; from 30 s to 60 s the followers are cut off (a third
    /// fall back to phase 2, their chain stalls); from 70 s to 80 s one
    /// follower is down. The chain grows a block every 2 s.
    fn realistic(seconds: u64) -> Timeline {
        let groups = vec![
            group("validators", 4),
            group("followers", 12),
            group("byzantine", 2),
        ];
        let samples = (0..seconds)
            .map(|second| {
                let cycle = second % 1000; // long runs repeat the story
                let cut = (30..60).contains(&cycle);
                let per_group = groups.iter().map(|group| {
                    let follower = group.name == "followers";
                    let down = u32::from(follower && (70..80).contains(&cycle));
                    let live = group.nodes - down;
                    let mut phase_counts = [0; 4];
                    let phase = (cycle / 5).min(3) as usize;
                    let behind = if follower && cut {
                        live / 3
                    } else {
                        live / (cycle as u32 + 1)
                    };
                    phase_counts[phase] = live - behind;
                    phase_counts[phase.saturating_sub(1)] += behind;
                    let height = if follower && cut { 15 } else { second / 2 };
                    let (height_min, height_max) = (height.saturating_sub(second % 3), height);
                    GroupSample {
                        phase_counts,
                        down,
                        height_min,
                        height_max,
                    }
                });
                TimelineSample {
                    at_ms: second * 1000,
                    groups: per_group.collect(),
                }
            })
            .collect();
        Timeline {
            interval_ms: 1000,
            groups,
            samples,
            bands: vec![
                band("partition", "validators | rest", 30, 60),
                band("crash", "follower 7 down", 70, 80),
            ],
            markers: vec![TimelineMarker {
                at_ms: 20_000,
                label: "all nodes in phase 3".into(),
            }],
        }
    }

    fn assert_balanced(page: &str) {
        assert_eq!(
            page.matches("<svg").count(),
            page.matches("</svg>").count(),
            "<svg>"
        );
        assert_eq!(
            page.matches("<g>").count(),
            page.matches("</g>").count(),
            "<g>"
        );
        assert_eq!(
            page.matches("<text ").count(),
            page.matches("</text>").count(),
            "<text>"
        );
        assert_eq!(
            page.matches("<title>").count(),
            page.matches("</title>").count(),
            "<title>"
        );
    }

    #[test]
    fn a_failed_run_with_a_realistic_timeline_shows_summary_then_charts() {
        let page = render(
            &outcome("partition-heals", false),
            &realistic(120),
            REPRODUCE,
        );
        assert!(page.starts_with("<!DOCTYPE html>") && page.ends_with("</html>\n"));
        assert!(page.contains("<h1>partition-heals</h1>"));
        assert!(page.contains("<div class=\"verdict fail\">FAIL</div>"));
        assert!(page.contains("membership_converges") && page.contains("chain_agreement"));
        assert!(page.contains("all 18 views matched after 14.2 s"));
        assert!(page.contains(&format!("<pre class=\"repro\">{REPRODUCE}</pre>")));
        assert!(page.contains("1,234,567 delivered") && page.contains("412 MiB"));
        assert!(page.contains("9.5 s (12.6× real time)") && page.contains(&"ab".repeat(32)));
        assert_eq!(
            page.matches("<svg").count(),
            2,
            "a phase chart and a height chart"
        );
        assert_balanced(&page);
        assert!(page.contains("<title>partition: validators | rest · 30–60 s</title>"));
        assert!(page.contains("<title>crash: follower 7 down · 70–80 s</title>"));
        assert!(page.contains(">all nodes in phase 3</text>"));
        for name in ["validators", "followers", "byzantine"] {
            assert!(
                page.contains(&format!("\">{name}</tspan></text>")),
                "row label {name}"
            );
        }
        assert!(page.contains(">12 nodes</text>") && page.contains("stroke-dasharray=\"5 3\""));
        assert!(page.contains(">simulated time (s)</text>") && page.contains(">committed height<"));
        let summary = page.find("<h2>Properties</h2>").unwrap_or(usize::MAX);
        assert!(summary < page.find("<svg").unwrap_or(0), "summary first");
        for external in [
            "<script", "http:", "https:", "url(", "@import", "<link", "src=",
        ] {
            assert!(!page.contains(external), "page contains {external}");
        }
    }

    #[test]
    fn a_passed_run_shows_pass_and_no_reproduce_command() {
        let page = render(&outcome("smoke", true), &realistic(30), REPRODUCE);
        assert!(page.contains("<div class=\"verdict pass\">PASS</div>"));
        assert!(!page.contains("FAIL") && !page.contains(REPRODUCE));
    }

    #[test]
    fn escape_replaces_every_markup_character() {
        let escaped = escape("<a href=\"x\">Tom & 'Jerry'</a>");
        assert_eq!(
            escaped,
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain text, äöü → ok"), "plain text, äöü → ok");
        assert_eq!(escape("a\u{0}b\u{1b}c\nd\te"), "a\u{fffd}b\u{fffd}c\nd\te");
        assert_eq!(escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn hostile_text_is_escaped_everywhere() {
        let hostile = "<script>alert(1)</script>";
        let mut run = outcome(hostile, false);
        run.scenario_path = format!("\"{hostile}.toml");
        run.properties[1].detail = format!("lost <b>block</b> & \"{hostile}\"");
        run.panic = Some(hostile.to_string());
        let mut timeline = realistic(40);
        timeline.groups[0].name = "<img src=x onerror=alert(1)>".to_string();
        timeline.bands[0].label = hostile.to_string();
        timeline.bands[1].kind = "<i>".to_string();
        timeline.markers[0].label = hostile.to_string();
        let page = render(&run, &timeline, &format!("cargo sim run '{hostile}'"));
        for raw in [
            "<script",
            "</script",
            "<img",
            "<b>",
            "<i>",
            "onerror=alert(1)>",
        ] {
            assert!(!page.contains(raw), "raw {raw} in the page");
        }
        assert!(page.contains("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>"));
        assert!(page.contains("lost &lt;b&gt;block&lt;/b&gt; &amp; &quot;"));
        assert_balanced(&page);
    }

    #[test]
    fn long_labels_are_truncated() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("ünïcödé-and-more", 8), "ünïcödé…");
        let mut timeline = realistic(10);
        timeline.groups[1].name = "f".repeat(500);
        let page = render(&outcome("x", true), &timeline, REPRODUCE);
        let cut = format!(">{}…</tspan>", "f".repeat(LABEL_CHARS_MAX - 1));
        assert!(page.contains(&cut), "the row label is cut");
        assert!(
            !page.contains(&"f".repeat(TITLE_CHARS_MAX + 1)),
            "no full name anywhere"
        );
    }

    #[test]
    fn long_runs_are_downsampled_and_stay_small() {
        let run = outcome("long", true);
        let ten_minutes = render(&run, &realistic(600), REPRODUCE);
        assert!(
            ten_minutes.len() < 100_000,
            "600 samples: {} bytes",
            ten_minutes.len()
        );
        // The worst case: every count moves at every sample.
        let mut noisy = realistic(10_000);
        let mut state = 7u64;
        for sample in &mut noisy.samples {
            for group in &mut sample.groups {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let shift = (state >> 33) as u32 % 3;
                group.phase_counts = group.phase_counts.map(|count| count.saturating_sub(shift));
                group.down += shift;
            }
        }
        let page = render(&run, &noisy, REPRODUCE);
        assert!(page.len() < 400_000, "10,000 samples: {} bytes", page.len());
        assert!(page.contains(&format!(
            "10,000 samples every 1 s, drawn as {COLUMNS_MAX} columns"
        )));
        assert_balanced(&page);
        for path in page.split(" d=\"").skip(1) {
            let steps = path.split('"').next().unwrap_or("").matches('H').count();
            assert!(steps <= COLUMNS_MAX + 1, "a path with {steps} steps");
        }
    }

    #[test]
    fn a_short_crash_survives_downsampling() {
        let mut timeline = realistic(8_000);
        for sample in &mut timeline.samples {
            sample.groups[1].down = u32::from(sample.at_ms == 4_321_000);
        }
        let samples: Vec<&TimelineSample> = timeline.samples.iter().collect();
        let columns = columns(&samples, timeline.groups.len());
        assert_eq!(columns.len(), COLUMNS_MAX);
        assert_eq!(
            columns
                .iter()
                .filter(|column| down(column.shown) == 1)
                .count(),
            1
        );
    }

    #[test]
    fn an_empty_timeline_says_so() {
        let page = render(&outcome("empty", true), &Timeline::default(), REPRODUCE);
        assert!(page.contains("No timeline was recorded for this run."));
        assert!(!page.contains("<svg"));
        assert!(page.contains("<h1>empty</h1>") && page.contains("PASS"));
    }

    #[test]
    fn one_sample_without_a_chain_and_an_empty_group_render() {
        let seeds = GroupSample {
            phase_counts: [2, 0, 0, 0],
            ..GroupSample::default()
        };
        let timeline = Timeline {
            interval_ms: 0,
            groups: vec![group("seeds", 2), group("nobody", 0)],
            samples: vec![TimelineSample {
                at_ms: 0,
                groups: vec![seeds],
            }],
            bands: vec![TimelineBand {
                end_ms: 100,
                ..band("mystery", "reversed", 0, 0)
            }],
            markers: Vec::new(),
        };
        let mut run = outcome("tiny", true);
        run.simulated_s = f64::NAN;
        let page = render(&run, &timeline, REPRODUCE);
        assert!(page.contains("so the height chart is omitted"));
        assert_eq!(page.matches("<svg").count(), 1);
        assert_balanced(&page);
        assert!(page.contains(">nobody</tspan>") && page.contains(">0 nodes</text>"));
        assert!(page.contains(&format!("<path fill=\"{}\" d=\"M170,", LAYER_COLOURS[0])));
        assert!(page.contains("<title>mystery: reversed · 0–0.1 s</title>"));
        assert!(!page.contains("NaN") && !page.contains("inf"));
    }

    #[test]
    fn rendering_is_deterministic_and_the_timeline_round_trips() {
        let (run, timeline) = (outcome("same", false), realistic(250));
        assert_eq!(
            render(&run, &timeline, REPRODUCE),
            render(&run, &timeline, REPRODUCE)
        );
        let json = serde_json::to_string(&timeline).unwrap_or_default();
        let back: Timeline = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, timeline);
    }

    #[test]
    fn numbers_have_at_most_one_decimal() {
        let shown: Vec<String> = [12.345, 12.0, -0.04, -2.25, f64::NAN, 1e30]
            .map(|value| N(value).to_string())
            .to_vec();
        assert_eq!(
            shown,
            ["12.3", "12", "0", "-2.3", "0", "922337203685477580.7"]
        );
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
        assert_eq!((nice_step(0.13), nice_step(73.0)), (0.2, 100.0));
    }
}
