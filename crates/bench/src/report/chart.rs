//! The report's SVG charts, drawn with plotters, readable at any instance
//! count:
//!
//! * connections per revision (old set, new set) as a stacked area, with the
//!   clients connected on top: the shape of the upgrade in one look;
//! * evictions and reconnections per second against the configured
//!   `connEvictRate`: the pace, and whether there was a storm;
//! * for runs whose clients send requests (HTTP/1.1, WebSocket, HTTP/2),
//!   non-2xx responses and socket errors per second, with requests per
//!   second on a second axis: whether the upgrade cost any request;
//! * connections per instance as small multiples on shared axes: each
//!   instance drains or fills, and the new ones end at equal heights; past
//!   [`SMALL_MULTIPLES_MAX`] instances, as an instance × time heat map (one
//!   row per instance, the colour its connections, a ramp per revision);
//! * clients by number of disconnects.
//!
//! Every chart keeps its legend in a strip above the plot area, never on it,
//! labels both axes with units, and takes [`Axes`] so that runs drawn side by
//! side share their scales. Each plot area is filled with [`PLOT_BG`], which
//! lets a test find it in the SVG.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::recorder::HttpCounts;
use crate::summary::{Summary, TimelineSample};

const FONT: &str = "sans-serif";
/// The background of every plot area (and nothing else).
pub const PLOT_BG: RGBColor = RGBColor(250, 250, 252);
const GRID: RGBColor = RGBColor(228, 228, 232);
const INK: RGBColor = RGBColor(40, 40, 40);
const MUTED: RGBColor = RGBColor(110, 110, 110);
/// Clients connected (the bench's own count).
pub const TOTAL: RGBColor = RGBColor(25, 25, 25);
/// The first revision seen: the old set.
pub const OLD: RGBColor = RGBColor(66, 119, 196);
/// The second revision seen: the new set.
pub const NEW: RGBColor = RGBColor(54, 160, 92);
/// Further revisions (a spec changed mid-upgrade).
const MORE: [RGBColor; 3] = [
    RGBColor(232, 142, 40),
    RGBColor(150, 90, 190),
    RGBColor(200, 70, 90),
];
/// Instances whose revision is unknown.
const UNGROUPED: RGBColor = RGBColor(100, 125, 160);
/// Evictions per second.
pub const EVICTIONS: RGBColor = RGBColor(214, 90, 30);
/// Reconnections per second.
pub const RECONNECTS: RGBColor = RGBColor(120, 70, 180);
/// Non-2xx responses per second.
pub const NON2XX: RGBColor = RGBColor(205, 45, 55);
/// Socket errors per second.
pub const SOCKET_ERRORS: RGBColor = RGBColor(232, 142, 40);
/// Requests per second (context, on the right axis).
pub const REQUESTS: RGBColor = RGBColor(160, 160, 168);
/// The configured rate.
const REFERENCE: RGBColor = RGBColor(120, 120, 120);
/// The window evictions per second are counted over, seconds: the
/// evacuators' counters reach the bench a few times a second (through
/// `sluice up`'s observation), so a shorter window would show their steps.
pub const EVICTION_WINDOW: f64 = 1.0;
/// The window reconnections per second are counted over, seconds: the
/// bench's own counts, exact at every 100 ms sample.
pub const RECONNECT_WINDOW: f64 = 0.5;
/// Rates above this many times the configured rate are drawn clipped, with
/// the peak written at the top: a storm stays visible without flattening the
/// paced runs next to it.
const RATE_CLIP: f64 = 4.0;

/// A font of `px` pixels: plotters' SVG backend writes sizes 1/1.24 of the
/// requested one, so ask for that much more.
fn font(px: i32) -> FontDesc<'static> {
    (FONT, f64::from(px) * 1.24).into_font()
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Scales shared by the charts of runs shown side by side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axes {
    /// Seconds.
    pub t_max: f64,
    /// Connections, for the per-revision chart.
    pub connections: f64,
    /// Connections of one instance, for the small multiples.
    pub instance: f64,
    /// Per second, for the rate chart (already clipped).
    pub rate: f64,
    /// Non-2xx responses and socket errors per second, for the HTTP chart.
    pub errors: f64,
    /// Requests per second, the HTTP chart's right axis.
    pub requests: f64,
    /// Histogram buckets (0 ..= the most disconnects any client saw).
    pub buckets: u32,
    /// The largest histogram bar.
    pub clients: f64,
}

impl Axes {
    /// Axes that fit every run in `runs`.
    pub fn of(runs: &[Summary]) -> Axes {
        let max = |f: &dyn Fn(&Summary) -> f64| runs.iter().map(f).fold(0.0, f64::max);
        let rate_data = max(&|s| {
            rate_series(s)
                .iter()
                .flat_map(|r| r.points.iter().map(|p| p.1))
                .fold(0.0, f64::max)
        });
        let configured = max(&|s| s.evict_rate.unwrap_or(0.0));
        let rate = if configured > 0.0 && rate_data > configured * RATE_CLIP {
            configured * RATE_CLIP
        } else {
            nice(rate_data.max(configured * 1.5))
        };
        let http: Vec<HttpSeries> = runs.iter().filter_map(http_series).collect();
        let http_max = |f: &dyn Fn(&HttpSeries) -> &Vec<Bucket>| {
            http.iter()
                .flat_map(|h| f(h).iter().map(|b| b.per_sec))
                .fold(0.0, f64::max)
        };
        Axes {
            errors: nice(http_max(&|h| &h.non2xx).max(http_max(&|h| &h.socket_errors))),
            requests: nice(http_max(&|h| &h.requests)),
            t_max: max(&|s| s.timeline.last().map_or(0.0, |x| x.t).max(s.duration_secs)).max(0.1),
            connections: nice(max(&|s| {
                s.timeline
                    .iter()
                    .map(|x| x.connected.max(x.per_instance.values().sum()) as f64)
                    .fold(0.0, f64::max)
            })),
            instance: nice(max(&|s| {
                s.timeline
                    .iter()
                    .flat_map(|x| x.per_instance.values())
                    .copied()
                    .max()
                    .unwrap_or(0) as f64
            })),
            rate,
            buckets: runs
                .iter()
                .map(|s| s.disconnect_histogram.len().max(1) as u32)
                .max()
                .unwrap_or(1),
            clients: nice(max(&|s| {
                s.disconnect_histogram.iter().copied().max().unwrap_or(0) as f64
            })),
        }
    }
}

/// The next round number at or above `v` (1, 2, 2.5, 5 × 10ⁿ), at least 1.
fn nice(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|x| *x >= v * 1.04)
        .unwrap_or(10.0 * p)
}

/// `12345` → `12,345`.
pub fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A set of instances drawn in one colour: one revision, or all instances
/// when the metrics carry no revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Legend text.
    pub label: String,
    /// Fill colour.
    pub color: RGBColor,
    /// Its instances, in first-seen order.
    pub instances: Vec<String>,
}

/// The run's instances grouped by revision, in the order the revisions were
/// first seen: the first is the old set, the second the new set.
pub fn groups(s: &Summary) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut revisions: Vec<Option<&str>> = Vec::new();
    for name in &s.instances {
        let revision = s.revisions.get(name).map(String::as_str);
        let k = match revisions.iter().position(|r| *r == revision) {
            Some(k) => k,
            None => {
                revisions.push(revision);
                let known = revisions.iter().filter(|r| r.is_some()).count();
                let (label, color) = match revision {
                    None if s.revisions.is_empty() => ("all instances".to_owned(), UNGROUPED),
                    None => ("revision unknown".to_owned(), UNGROUPED),
                    Some(r) => match known {
                        1 => (format!("old set (revision {r})"), OLD),
                        2 => (format!("new set (revision {r})"), NEW),
                        n => (format!("revision {r}"), MORE[(n - 3) % MORE.len()]),
                    },
                };
                groups.push(Group {
                    label,
                    color,
                    instances: Vec::new(),
                });
                groups.len() - 1
            }
        };
        groups[k].instances.push(name.clone());
    }
    for g in &mut groups {
        g.instances.sort_by(|a, b| natural(a).cmp(&natural(b)));
    }
    groups
}

/// Sorts `rev-2` before `rev-10`: the name with its trailing number apart.
fn natural(name: &str) -> (&str, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (stem, number.parse().unwrap_or(0))
}

/// The colour of instance `name` (its revision's).
fn instance_color(groups: &[Group], name: &str) -> RGBColor {
    groups
        .iter()
        .find(|g| g.instances.iter().any(|i| i == name))
        .map_or(UNGROUPED, |g| g.color)
}

/// A series of the rate chart.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSeries {
    /// Legend text.
    pub label: &'static str,
    /// Line colour.
    pub color: RGBColor,
    /// (seconds, per second).
    pub points: Vec<(f64, f64)>,
}

/// The rate chart's series: evictions per second (when the evacuators export
/// their counter) and reconnections per second (when recorded); a series
/// with no data is left out, and the chart with it when none has any.
pub fn rate_series(s: &Summary) -> Vec<RateSeries> {
    let mut out = Vec::new();
    let counter = |f: fn(&TimelineSample) -> Option<u64>| -> Option<Vec<(f64, u64)>> {
        s.timeline.iter().map(|x| Some((x.t, f(x)?))).collect()
    };
    if let Some(c) = counter(|x| x.evicted).filter(|c| !c.is_empty()) {
        out.push(RateSeries {
            label: "evictions/s (evacuators)",
            color: EVICTIONS,
            points: per_second(&c, EVICTION_WINDOW),
        });
    }
    if let Some(c) = counter(|x| x.reconnects).filter(|c| !c.is_empty()) {
        out.push(RateSeries {
            label: "reconnects/s (clients)",
            color: RECONNECTS,
            points: per_second(&c, RECONNECT_WINDOW),
        });
    }
    out
}

/// The rate of a counter over a trailing `window`, placed at the window's
/// middle.
pub fn per_second(counter: &[(f64, u64)], window: f64) -> Vec<(f64, f64)> {
    let mut out = Vec::with_capacity(counter.len());
    let mut j = 0;
    for &(t, v) in counter {
        while j + 1 < counter.len() && counter[j].0 < t - window + 1e-9 {
            j += 1;
        }
        let (t0, v0) = counter[j];
        if t > t0 {
            out.push(((t + t0) / 2.0, v.saturating_sub(v0) as f64 / (t - t0)));
        }
    }
    out
}

/// Chart height for a chart `width` pixels wide.
fn height(width: u32) -> u32 {
    (width * 45 / 100).clamp(280, 380)
}

fn render(size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> DrawResult) -> String {
    let mut svg = String::new();
    let result = {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root).and_then(|()| root.present().map_err(Into::into))
    };
    match result {
        // Inline SVG in HTML needs no namespace; leaving it out keeps the
        // file free of any URL.
        Ok(()) => svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", ""),
        Err(e) => format!(
            "<p class=\"error\">chart failed: {}</p>",
            super::html::escape(&e.to_string())
        ),
    }
}

/// How a legend entry is marked.
#[derive(Debug, Clone, Copy)]
enum Mark {
    Area(RGBColor),
    Line(RGBColor),
    Dashed(RGBColor),
    /// A heat map's colour scale, from no connections (left) to the most.
    Ramp(RGBColor),
    /// Text alone (what a scale means).
    Note,
}

impl Mark {
    /// The mark's width in the legend, pixels.
    fn width(self) -> i32 {
        match self {
            Mark::Ramp(_) => RAMP_STEPS as i32 * 8,
            Mark::Note => 0,
            _ => 18,
        }
    }
}

/// Left edge of titles and legends, pixels.
const LEFT: i32 = 8;
/// Where the legend strip starts, and the height of one of its rows.
const LEGEND_TOP: i32 = 32;
const LEGEND_ROW: i32 = 20;
const LEGEND_FONT: i32 = 13;

/// The legend entries placed in rows that fit `width`: (x, entry) per row.
fn legend_rows(legend: &[(String, Mark)], width: u32) -> Vec<Vec<(i32, &(String, Mark))>> {
    let mut rows: Vec<Vec<(i32, &(String, Mark))>> = vec![Vec::new()];
    let mut x = LEFT;
    for entry in legend {
        let w =
            entry.1.width() + 8 + (entry.0.chars().count() as i32 * LEGEND_FONT * 55 / 100) + 18;
        if x + w > width as i32 - 8 && x > LEFT {
            rows.push(Vec::new());
            x = LEFT;
        }
        if let Some(row) = rows.last_mut() {
            row.push((x, entry));
        }
        x += w;
    }
    rows
}

/// The height of the title and legend strip.
fn header_height(legend: &[(String, Mark)], width: u32) -> i32 {
    LEGEND_TOP + legend_rows(legend, width).len() as i32 * LEGEND_ROW + 6
}

/// Draws the title and the legend strip; returns the area left for the plot.
/// Entries wrap onto more rows when they do not fit on one.
fn header<'a>(
    root: &Area<'a>,
    title: &str,
    legend: &[(String, Mark)],
) -> Result<Area<'a>, Box<dyn std::error::Error>> {
    root.fill(&WHITE)?;
    let (w, _) = root.dim_in_pixel();
    root.draw(&Text::new(
        title.to_owned(),
        (LEFT, 8),
        font(16).style(FontStyle::Bold).color(&INK),
    ))?;
    let (size, row_h, top) = (LEGEND_FONT, LEGEND_ROW, LEGEND_TOP);
    let rows = legend_rows(legend, w);
    for (r, row) in rows.iter().enumerate() {
        let y = top + r as i32 * row_h + row_h / 2;
        for (x, (label, mark)) in row {
            match *mark {
                Mark::Area(c) => root.draw(&Rectangle::new(
                    [(*x, y - 6), (x + 18, y + 6)],
                    c.mix(0.8).filled(),
                ))?,
                Mark::Line(c) => root.draw(&PathElement::new(
                    vec![(*x, y), (x + 18, y)],
                    c.stroke_width(3),
                ))?,
                Mark::Dashed(c) => {
                    for k in 0..3 {
                        root.draw(&PathElement::new(
                            vec![(x + k * 7, y), (x + k * 7 + 4, y)],
                            c.stroke_width(2),
                        ))?;
                    }
                }
                Mark::Ramp(c) => {
                    for k in 0..RAMP_STEPS {
                        let x0 = x + k as i32 * 8;
                        let level = (k * HEAT_LEVELS).div_ceil(RAMP_STEPS - 1).min(HEAT_LEVELS);
                        root.draw(&Rectangle::new(
                            [(x0, y - 6), (x0 + 8, y + 6)],
                            heat(c, level).filled(),
                        ))?;
                    }
                }
                Mark::Note => {}
            }
            root.draw(&Text::new(
                label.clone(),
                (x + mark.width() + 6, y),
                font(size)
                    .color(&INK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
    }
    Ok(root.split_vertically(header_height(legend, w)).1)
}

/// The builder of a chart over time on `area`: the margins and axis label
/// areas the time charts share, with room for a right-hand axis if asked.
fn time_chart<'a, 'b>(
    area: &'a Area<'b>,
    right_axis: bool,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_right(if right_axis { 4 } else { 16 })
        .margin_bottom(4)
        .x_label_area_size(40)
        .y_label_area_size(72);
    if right_axis {
        builder.right_y_label_area_size(72);
    }
    builder
}

fn mesh<'a>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    x_desc: &str,
    y_desc: &str,
    y_fmt: &dyn Fn(&f64) -> String,
) -> DrawResult {
    chart.plotting_area().fill(&PLOT_BG)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style(font(13).color(&MUTED))
        .label_style(font(12).color(&INK))
        .bold_line_style(GRID)
        .max_light_lines(0)
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(y_fmt)
        .draw()?;
    Ok(())
}

/// Connections per revision, stacked, with clients connected on top, as SVG
/// `width` pixels wide.
pub fn revisions_svg(s: &Summary, axes: &Axes, width: u32) -> String {
    render((width, height(width)), |root| draw_revisions(root, s, axes))
}

fn draw_revisions(root: &Area<'_>, s: &Summary, axes: &Axes) -> DrawResult {
    let groups = groups(s);
    let mut legend: Vec<(String, Mark)> = groups
        .iter()
        .map(|g| (g.label.clone(), Mark::Area(g.color)))
        .collect();
    legend.push(("clients connected".to_owned(), Mark::Line(TOTAL)));
    let area = header(root, "Connections per revision", &legend)?;
    let mut chart =
        time_chart(&area, false).build_cartesian_2d(0f64..axes.t_max, 0f64..axes.connections)?;
    mesh(&mut chart, "time (s)", "connections", &|v| thousands(*v))?;
    // Stacked: each group's band sits on the ones before it.
    let mut below = vec![0u64; s.timeline.len()];
    for g in &groups {
        let top: Vec<u64> = s
            .timeline
            .iter()
            .zip(&below)
            .map(|(x, b)| {
                b + g
                    .instances
                    .iter()
                    .filter_map(|i| x.per_instance.get(i))
                    .sum::<u64>()
            })
            .collect();
        let mut outline: Vec<(f64, f64)> = s
            .timeline
            .iter()
            .zip(&top)
            .map(|(x, v)| (x.t, *v as f64))
            .collect();
        outline.extend(
            s.timeline
                .iter()
                .zip(&below)
                .rev()
                .map(|(x, v)| (x.t, *v as f64)),
        );
        chart.draw_series(std::iter::once(Polygon::new(
            outline,
            g.color.mix(0.8).filled(),
        )))?;
        below = top;
    }
    chart.draw_series(LineSeries::new(
        s.timeline.iter().map(|x| (x.t, x.connected as f64)),
        TOTAL.stroke_width(2),
    ))?;
    Ok(())
}

/// Evictions and reconnections per second against the configured rate, as
/// SVG `width` pixels wide; `None` when the run recorded neither.
pub fn rates_svg(s: &Summary, axes: &Axes, width: u32) -> Option<String> {
    let series = rate_series(s);
    if series.is_empty() {
        return None;
    }
    Some(render((width, height(width)), |root| {
        draw_rates(root, s, &series, axes)
    }))
}

fn draw_rates(root: &Area<'_>, s: &Summary, series: &[RateSeries], axes: &Axes) -> DrawResult {
    let mut legend: Vec<(String, Mark)> = series
        .iter()
        .map(|r| (r.label.to_owned(), Mark::Line(r.color)))
        .collect();
    if let Some(rate) = s.evict_rate {
        legend.push((
            format!("connEvictRate {}/s (configured)", thousands(rate)),
            Mark::Dashed(REFERENCE),
        ));
    }
    let area = header(root, "Evictions and reconnects per second", &legend)?;
    let mut chart =
        time_chart(&area, false).build_cartesian_2d(0f64..axes.t_max, 0f64..axes.rate)?;
    mesh(&mut chart, "time (s)", "per second", &|v| thousands(*v))?;
    if let Some(rate) = s.evict_rate {
        chart.draw_series(DashedLineSeries::new(
            [(0.0, rate), (axes.t_max, rate)],
            8,
            5,
            REFERENCE.stroke_width(2),
        ))?;
    }
    for r in series {
        let clipped = r.points.iter().map(|&(t, v)| (t, v.min(axes.rate)));
        chart.draw_series(LineSeries::new(clipped, r.color.stroke_width(2)))?;
        // A peak off the scale: say how high it went.
        if let Some(&(t, v)) = r
            .points
            .iter()
            .filter(|p| p.1 > axes.rate)
            .max_by(|a, b| a.1.total_cmp(&b.1))
        {
            let anchor = if t > axes.t_max * 0.8 {
                HPos::Right
            } else {
                HPos::Left
            };
            chart.draw_series(std::iter::once(Text::new(
                format!("↑ {}/s", thousands(v)),
                (t, axes.rate * 0.97),
                font(12).color(&r.color).pos(Pos::new(anchor, VPos::Top)),
            )))?;
        }
    }
    Ok(())
}

/// A counter's increase over one second of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Seconds since the start: the bucket is `from..to`.
    pub from: f64,
    /// Its end: one second later, or the end of the run for the last one.
    pub to: f64,
    /// The increase divided by the bucket's length.
    pub per_sec: f64,
}

/// A counter sampled at `(seconds, value)` (starting from zero at the start
/// of the run) in one-second buckets; the last, partial second is divided by
/// its length.
pub fn per_second_buckets(counter: &[(f64, u64)]) -> Vec<Bucket> {
    let mut out = Vec::new();
    let (mut from, mut at_from, mut last) = (0.0, 0u64, 0u64);
    for &(t, v) in counter {
        while t > from + 1.0 + 1e-9 {
            out.push(Bucket {
                from,
                to: from + 1.0,
                per_sec: last.saturating_sub(at_from) as f64,
            });
            (from, at_from) = (from + 1.0, last);
        }
        last = v;
    }
    if let Some(&(end, _)) = counter.last().filter(|(end, _)| *end > from + 1e-9) {
        out.push(Bucket {
            from,
            to: end,
            per_sec: last.saturating_sub(at_from) as f64 / (end - from),
        });
    }
    out
}

/// The HTTP chart's series, in one-second buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSeries {
    /// Requests sent per second.
    pub requests: Vec<Bucket>,
    /// Responses outside 200-299 per second.
    pub non2xx: Vec<Bucket>,
    /// Requests failed at the socket level per second.
    pub socket_errors: Vec<Bucket>,
}

/// The HTTP chart's series; `None` when the run's timeline has no request
/// counts (MQTT, TCP, or a summary written before they were recorded).
pub fn http_series(s: &Summary) -> Option<HttpSeries> {
    let counts: Vec<(f64, HttpCounts)> = s
        .timeline
        .iter()
        .map(|x| Some((x.t, x.http?)))
        .collect::<Option<Vec<_>>>()
        .filter(|c| !c.is_empty())?;
    let of = |f: fn(&HttpCounts) -> u64| {
        let counter: Vec<(f64, u64)> = counts.iter().map(|(t, c)| (*t, f(c))).collect();
        per_second_buckets(&counter)
    };
    Some(HttpSeries {
        requests: of(|c| c.requests),
        non2xx: of(|c| c.non2xx),
        socket_errors: of(|c| c.socket_errors),
    })
}

/// The legend entries of the HTTP chart.
pub const HTTP_LEGEND: [&str; 3] = [
    "non-2xx responses/s",
    "socket errors/s",
    "requests/s (right axis)",
];

/// Non-2xx responses and socket errors per second, with requests per second
/// on a right-hand axis, as SVG `width` pixels wide; `None` when the run did
/// not count requests.
pub fn http_svg(s: &Summary, axes: &Axes, width: u32) -> Option<String> {
    let series = http_series(s)?;
    Some(render((width, height(width)), |root| {
        draw_http(root, &series, axes)
    }))
}

/// A bucketed series as a step line.
fn steps(buckets: &[Bucket], top: f64) -> Vec<(f64, f64)> {
    buckets
        .iter()
        .flat_map(|b| [(b.from, b.per_sec.min(top)), (b.to, b.per_sec.min(top))])
        .collect()
}

fn draw_http(root: &Area<'_>, series: &HttpSeries, axes: &Axes) -> DrawResult {
    let legend: Vec<(String, Mark)> = HTTP_LEGEND
        .iter()
        .zip([NON2XX, SOCKET_ERRORS, REQUESTS])
        .map(|(label, color)| ((*label).to_owned(), Mark::Line(color)))
        .collect();
    let area = header(root, "HTTP errors per second", &legend)?;
    let mut chart = time_chart(&area, true)
        .build_cartesian_2d(0f64..axes.t_max, 0f64..axes.errors)?
        .set_secondary_coord(0f64..axes.t_max, 0f64..axes.requests);
    mesh(&mut chart, "time (s)", "errors per second", &|v| {
        thousands(*v)
    })?;
    chart
        .configure_secondary_axes()
        .y_desc("requests per second")
        .axis_desc_style(font(13).color(&MUTED))
        .label_style(font(12).color(&INK))
        .y_labels(6)
        .y_label_formatter(&|v| thousands(*v))
        .draw()?;
    chart.draw_secondary_series(LineSeries::new(
        steps(&series.requests, axes.requests),
        REQUESTS.stroke_width(2),
    ))?;
    for (buckets, color) in [
        (&series.socket_errors, SOCKET_ERRORS),
        (&series.non2xx, NON2XX),
    ] {
        chart.draw_series(LineSeries::new(
            steps(buckets, axes.errors),
            color.stroke_width(2),
        ))?;
    }
    Ok(())
}

/// Panel size of the small multiples, pixels.
const PANEL_W: u32 = 150;
const PANEL_H: u32 = 96;

/// The most instances drawn as small multiples; past it, a heat map.
pub const SMALL_MULTIPLES_MAX: usize = 12;

/// Whether the per-instance chart of `s` is a heat map (more than
/// [`SMALL_MULTIPLES_MAX`] instances) rather than small multiples.
pub fn uses_heat_map(s: &Summary) -> bool {
    s.instances.len() > SMALL_MULTIPLES_MAX
}

/// Connections per instance, as SVG `width` pixels wide: small multiples on
/// shared axes, or a heat map past [`SMALL_MULTIPLES_MAX`] instances; `None`
/// without per-instance data.
pub fn instances_svg(s: &Summary, axes: &Axes, width: u32) -> Option<String> {
    if s.instances.is_empty() {
        return None;
    }
    if uses_heat_map(s) {
        return Some(heat_map_svg(s, axes, width));
    }
    let layout = Grid::new(s.instances.len(), width, instance_legend(s));
    Some(render((width, layout.height), |root| {
        draw_instances(root, s, axes, &layout)
    }))
}

/// The small multiples' legend: one entry per revision.
fn instance_legend(s: &Summary) -> Vec<(String, Mark)> {
    groups(s)
        .into_iter()
        .map(|g| (g.label, Mark::Area(g.color)))
        .chain(prefix_note(s, "panels"))
        .collect()
}

/// The legend note saying which prefix the instance labels leave out (see
/// [`common_prefix`]), e.g. `panels: demo-blue-green-…`; `None` when none.
fn prefix_note(s: &Summary, what: &str) -> Option<(String, Mark)> {
    let prefix = common_prefix(&s.instances);
    (!prefix.is_empty()).then(|| (format!("{what}: {prefix}…"), Mark::Note))
}

/// Where the small multiples go.
#[derive(Debug, Clone, Copy)]
struct Grid {
    cols: usize,
    rows: usize,
    left: u32,
    top: u32,
    panel_w: u32,
    height: u32,
}

impl Grid {
    fn new(n: usize, width: u32, legend: Vec<(String, Mark)>) -> Grid {
        let (left, right, bottom) = (64, 12, 40);
        let cols = (((width - left - right) / PANEL_W) as usize).clamp(1, n.max(1));
        let rows = n.div_ceil(cols);
        let panel_w = (width - left - right) / cols as u32;
        let top = header_height(&legend, width) as u32 + 4;
        Grid {
            cols,
            rows,
            left,
            top,
            panel_w,
            height: top + rows as u32 * PANEL_H + bottom,
        }
    }
}

fn draw_instances(root: &Area<'_>, s: &Summary, axes: &Axes, grid: &Grid) -> DrawResult {
    let groups = groups(s);
    let legend = instance_legend(s);
    let title = format!(
        "Connections per instance ({} instances, same scale)",
        s.instances.len()
    );
    header(root, &title, &legend)?;
    let label = font(11).color(&INK);
    let prefix = common_prefix(&s.instances);
    let names = groups.iter().flat_map(|g| &g.instances);
    for (k, name) in names.enumerate() {
        let (row, col) = (k / grid.cols, k % grid.cols);
        let x0 = (grid.left + col as u32 * grid.panel_w) as i32;
        let y0 = (grid.top + row as u32 * PANEL_H) as i32;
        let panel = root.clone().shrink((x0, y0), (grid.panel_w, PANEL_H));
        let last = s
            .timeline
            .iter()
            .rev()
            .find_map(|x| x.per_instance.get(name).map(|v| (x.t, *v)));
        let end = match last {
            Some((t, v)) if t + 1.0 >= axes.t_max.min(s.duration_secs) => thousands(v as f64),
            _ => "gone".to_owned(),
        };
        let mut chart = ChartBuilder::on(&panel)
            .margin_left(4)
            .margin_right(6)
            .margin_top(2)
            .caption(format!("{}: {end}", &name[prefix.len()..]), label.clone())
            .build_cartesian_2d(0f64..axes.t_max, 0f64..axes.instance)?;
        chart.plotting_area().fill(&PLOT_BG)?;
        chart
            .configure_mesh()
            .bold_line_style(GRID)
            .max_light_lines(0)
            .x_labels(4)
            .y_labels(3)
            .draw()?;
        let color = instance_color(&groups, name);
        for run in runs(s, name) {
            let mut outline = run.clone();
            if let (Some(first), Some(last)) = (run.first(), run.last()) {
                outline.push((last.0, 0.0));
                outline.push((first.0, 0.0));
            }
            chart.draw_series(std::iter::once(Polygon::new(
                outline,
                color.mix(0.55).filled(),
            )))?;
            chart.draw_series(LineSeries::new(run, color.stroke_width(2)))?;
        }
        // Shared axes: values along the left column, time along the bottom row.
        let plot = chart.plotting_area();
        let ((px0, py0), (px1, py1)) = {
            let r = plot.get_pixel_range();
            ((r.0.start, r.1.start), (r.0.end, r.1.end))
        };
        let small = font(11).color(&MUTED);
        if col == 0 {
            for (v, anchor) in [
                (axes.instance, VPos::Top),
                (axes.instance / 2.0, VPos::Center),
                (0.0, VPos::Bottom),
            ] {
                let y = py1 - ((v / axes.instance) * f64::from(py1 - py0)) as i32;
                root.draw(&Text::new(
                    thousands(v),
                    (px0 - 4, y),
                    small.clone().pos(Pos::new(HPos::Right, anchor)),
                ))?;
            }
        }
        if row + 1 == grid.rows || k + grid.cols >= s.instances.len() {
            // Round seconds, two or three of them, none past the axis.
            let step = [
                1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0,
            ]
            .into_iter()
            .find(|step| axes.t_max / step <= 3.0)
            .unwrap_or(1000.0);
            let ticks = (0..=3)
                .map(|k| f64::from(k) * step)
                .filter(|t| *t <= axes.t_max);
            for t in ticks {
                let x = px0 + ((t / axes.t_max) * f64::from(px1 - px0)) as i32;
                let h = if t == 0.0 { HPos::Left } else { HPos::Center };
                root.draw(&Text::new(
                    format!("{t:.0}"),
                    (x, py1 + 3),
                    small.clone().pos(Pos::new(h, VPos::Top)),
                ))?;
            }
        }
    }
    let (w, h) = root.dim_in_pixel();
    let desc = font(13).color(&MUTED);
    root.draw(&Text::new(
        "time (s)",
        ((w / 2) as i32, h as i32 - 6),
        desc.clone().pos(Pos::new(HPos::Center, VPos::Bottom)),
    ))?;
    root.draw(&Text::new(
        "connections",
        (8, (grid.top + grid.rows as u32 * PANEL_H / 2) as i32),
        desc.transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    Ok(())
}

/// Colour levels of the heat map above "no connections" (level 0).
const HEAT_LEVELS: usize = 24;
/// Steps of the colour scale drawn in the heat map's legend.
const RAMP_STEPS: usize = 9;
/// Height of one heat map row, pixels, at most and at least.
const HEAT_ROW_MAX: u32 = 16;
const HEAT_ROW_MIN: u32 = 5;
/// Width of one heat map cell (time bin), pixels.
const HEAT_CELL_W: f64 = 3.0;

/// The heat map colour of `level` (0: no connections, [`HEAT_LEVELS`]: the
/// scale's top) on `base`'s ramp: from a pale tint to a dark shade of it.
fn heat(base: RGBColor, level: usize) -> RGBColor {
    let f = level.min(HEAT_LEVELS) as f64 / HEAT_LEVELS as f64;
    let channel = |c: u8| {
        let c = f64::from(c);
        let pale = 255.0 - (255.0 - c) * 0.12;
        let dark = c * 0.55;
        (pale + (dark - pale) * f).round() as u8
    };
    RGBColor(channel(base.0), channel(base.1), channel(base.2))
}

/// The level of `connections` on a scale up to `top`: 0 only for none, so
/// that an instance holding a few is never drawn as empty.
fn heat_level(connections: f64, top: f64) -> usize {
    if connections <= 0.0 || top <= 0.0 {
        return 0;
    }
    ((connections / top * HEAT_LEVELS as f64).ceil() as usize).clamp(1, HEAT_LEVELS)
}

/// One heat map row: runs of equal level as `(from s, to s, level)`; time
/// bins where the instance was not scraped (not yet created, deleted) are
/// left out. A bin's value is the mean of its samples.
fn heat_row(s: &Summary, name: &str, bins: usize, t_max: f64, top: f64) -> Vec<(f64, f64, usize)> {
    let bin_w = t_max / bins as f64;
    let mut sums = vec![(0.0f64, 0u32); bins];
    for x in &s.timeline {
        if let Some(v) = x.per_instance.get(name) {
            let b = ((x.t / bin_w) as usize).min(bins - 1);
            sums[b].0 += *v as f64;
            sums[b].1 += 1;
        }
    }
    let mut out: Vec<(f64, f64, usize)> = Vec::new();
    for (b, (sum, n)) in sums.into_iter().enumerate() {
        if n == 0 {
            continue;
        }
        let level = heat_level(sum / f64::from(n), top);
        let (t0, t1) = (b as f64 * bin_w, (b + 1) as f64 * bin_w);
        match out.last_mut() {
            Some(last) if last.2 == level && (last.1 - t0).abs() < bin_w * 1e-6 => last.1 = t1,
            _ => out.push((t0, t1, level)),
        }
    }
    out
}

/// Connections per instance as a heat map: one row per instance (the old
/// set first, each set in name order), time along the x axis, the colour
/// its connections on its revision's ramp; its end count at the right.
fn heat_map_svg(s: &Summary, axes: &Axes, width: u32) -> String {
    let n = s.instances.len() as u32;
    let row = (360 / n).clamp(HEAT_ROW_MIN, HEAT_ROW_MAX);
    let legend = heat_legend(s, axes);
    let height = header_height(&legend, width) as u32 + n * row + 40 + 12;
    render((width, height), |root| {
        draw_heat_map(root, s, axes, &legend, row)
    })
}

/// The heat map's legend: each revision's colour ramp, then the scale.
fn heat_legend(s: &Summary, axes: &Axes) -> Vec<(String, Mark)> {
    let mut legend: Vec<(String, Mark)> = groups(s)
        .into_iter()
        .map(|g| (g.label, Mark::Ramp(g.color)))
        .collect();
    legend.push((
        format!(
            "pale → dark: 0 → {} connections; blank: no instance",
            thousands(axes.instance)
        ),
        Mark::Note,
    ));
    legend.extend(prefix_note(s, "rows"));
    legend
}

/// The start all of `names` share, up to and including its last `-`: what
/// row labels can leave out (a fleet's name) when there are several.
pub fn common_prefix(names: &[String]) -> &str {
    let [first, rest @ ..] = names else {
        return "";
    };
    if rest.is_empty() {
        return "";
    }
    let mut len = first.len();
    for n in rest {
        let same = first
            .char_indices()
            .zip(n.chars())
            .take_while(|((_, a), b)| a == b)
            .last()
            .map_or(0, |((i, a), _)| i + a.len_utf8());
        len = len.min(same);
    }
    first[..len].rfind('-').map_or("", |k| &first[..=k])
}

/// When instance `name` last held connections (its last sample above
/// zero; it may leave the metrics holding a few, when deleted);
/// `f64::INFINITY` when it still holds some in the run's last sample.
fn emptied_at(s: &Summary, name: &str) -> f64 {
    let holding = |x: &&TimelineSample| x.per_instance.get(name).is_some_and(|v| *v > 0);
    match s.timeline.last() {
        Some(x) if holding(&x) => f64::INFINITY,
        _ => s.timeline.iter().rev().find(holding).map_or(0.0, |x| x.t),
    }
}

/// The heat map's rows: set by set (the old set first), each in the order
/// its instances emptied, then by name (so an evacuation reads as a
/// staircase whatever order the engine chose), with their colour.
pub fn heat_rows(s: &Summary) -> Vec<(String, RGBColor)> {
    groups(s)
        .into_iter()
        .flat_map(|g| {
            let mut names: Vec<(f64, String)> = g
                .instances
                .into_iter()
                .map(|i| (emptied_at(s, &i), i))
                .collect();
            // Stable: equal times keep the name order.
            names.sort_by(|a, b| a.0.total_cmp(&b.0));
            names.into_iter().map(move |(_, i)| (i, g.color))
        })
        .collect()
}

fn draw_heat_map(
    root: &Area<'_>,
    s: &Summary,
    axes: &Axes,
    legend: &[(String, Mark)],
    row: u32,
) -> DrawResult {
    let groups = groups(s);
    let title = format!(
        "Connections per instance ({} instances, heat map)",
        s.instances.len()
    );
    let area = header(root, &title, legend)?;
    let names = heat_rows(s);
    let prefix = common_prefix(&s.instances);
    let longest = names
        .iter()
        .map(|(i, _)| i.chars().count() - prefix.chars().count())
        .max()
        .unwrap_or(1);
    let left = (longest as u32 * 7 + 12).clamp(40, 200);
    let n = names.len() as f64;
    let mut chart = ChartBuilder::on(&area)
        .margin_right(52)
        .margin_top(4)
        .margin_bottom(4)
        .x_label_area_size(40)
        .y_label_area_size(left)
        .build_cartesian_2d(0f64..axes.t_max, 0f64..n)?;
    chart.plotting_area().fill(&PLOT_BG)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("time (s)")
        .axis_desc_style(font(13).color(&MUTED))
        .label_style(font(12).color(&INK))
        .bold_line_style(GRID)
        .max_light_lines(0)
        .x_labels(8)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(0)
        .draw()?;
    let bins = {
        let r = chart.plotting_area().get_pixel_range();
        ((f64::from(r.0.end - r.0.start) / HEAT_CELL_W) as usize).max(1)
    };
    // Row k from the top spans y n-k-1 .. n-k.
    let every = (12 / row as usize).max(1);
    let small = font(11);
    for (k, (name, color)) in names.iter().enumerate() {
        let (y0, y1) = (n - k as f64 - 1.0, n - k as f64);
        let cells = heat_row(s, name, bins, axes.t_max, axes.instance);
        chart.draw_series(cells.into_iter().map(|(t0, t1, level)| {
            let mut r = Rectangle::new([(t0, y1), (t1, y0)], heat(*color, level).filled());
            r.set_margin(u32::from(row > 8), 0, 0, 0);
            r
        }))?;
        let (_, mid) = chart.backend_coord(&(0.0, y0 + 0.5));
        let (px0, _) = chart.backend_coord(&(0.0, 0.0));
        let (px1, _) = chart.backend_coord(&(axes.t_max, 0.0));
        if k % every == 0 {
            root.draw(&Text::new(
                name[prefix.len()..].to_owned(),
                (px0 - 6, mid),
                small
                    .clone()
                    .color(color)
                    .pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
        }
        let end = match s.timeline.last() {
            Some(x) => x
                .per_instance
                .get(name)
                .map_or_else(|| "gone".to_owned(), |v| thousands(*v as f64)),
            None => String::new(),
        };
        root.draw(&Text::new(
            end,
            (px1 + 6, mid),
            small
                .clone()
                .color(&MUTED)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    // A rule between the sets.
    let mut at = 0.0;
    for g in groups.iter().take(groups.len().saturating_sub(1)) {
        at += g.instances.len() as f64;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, n - at), (axes.t_max, n - at)],
            INK.stroke_width(1),
        )))?;
    }
    Ok(())
}

/// The contiguous runs of samples where `name` was scraped; gaps (instance
/// gone, scrape failed) stay gaps.
fn runs(s: &Summary, name: &str) -> Vec<Vec<(f64, f64)>> {
    let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
    for x in &s.timeline {
        match x.per_instance.get(name) {
            Some(v) => {
                if let Some(r) = runs.last_mut() {
                    r.push((x.t, *v as f64));
                }
            }
            None if runs.last().is_some_and(|r| !r.is_empty()) => runs.push(Vec::new()),
            None => {}
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// Clients by number of disconnects, as SVG `width` pixels wide.
pub fn histogram_svg(s: &Summary, axes: &Axes, width: u32) -> String {
    render((width, height(width) * 3 / 4), |root| {
        draw_histogram(root, s, axes)
    })
}

fn draw_histogram(root: &Area<'_>, s: &Summary, axes: &Axes) -> DrawResult {
    let area = header(root, "Clients by number of disconnects", &[])?;
    let last = axes.buckets.saturating_sub(1);
    let mut chart = ChartBuilder::on(&area)
        .margin_right(16)
        .margin_bottom(4)
        .x_label_area_size(40)
        .y_label_area_size(72)
        .build_cartesian_2d((0u32..last).into_segmented(), 0f64..axes.clients)?;
    chart.plotting_area().fill(&PLOT_BG)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("disconnects per client")
        .y_desc("clients")
        .axis_desc_style(font(13).color(&MUTED))
        .label_style(font(12).color(&INK))
        .bold_line_style(GRID)
        // Not max_light_lines(0): plotters loops into an overflow computing
        // zero light lines on an integer axis.
        .light_line_style(PLOT_BG)
        .y_labels(5)
        .y_label_formatter(&|v| thousands(*v))
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(k) | SegmentValue::Exact(k) => k.to_string(),
            SegmentValue::Last => String::new(),
        })
        .draw()?;
    let bar = |k: usize| match k {
        0 | 1 => OLD,
        _ => EVICTIONS,
    };
    chart.draw_series(s.disconnect_histogram.iter().enumerate().map(|(k, &n)| {
        let i = k as u32;
        let mut r = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), n as f64),
            ],
            bar(k).filled(),
        );
        r.set_margin(0, 0, 8, 8);
        r
    }))?;
    chart.draw_series(
        s.disconnect_histogram
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(k, &n)| {
                Text::new(
                    thousands(n as f64),
                    (
                        SegmentValue::CenterOf(k as u32),
                        (n as f64 + axes.clients * 0.02).min(axes.clients * 0.93),
                    ),
                    font(13)
                        .color(&INK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }),
    )?;
    Ok(())
}

/// The per-revision connections at the end of the run, for captions:
/// `(label, connections)` per group.
pub fn end_by_group(s: &Summary) -> Vec<(String, u64)> {
    let Some(last) = s.timeline.last() else {
        return Vec::new();
    };
    let per: BTreeMap<&str, u64> = last
        .per_instance
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    groups(s)
        .into_iter()
        .map(|g| {
            let n = g.instances.iter().filter_map(|i| per.get(i.as_str())).sum();
            (g.label, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_numbers() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3000.0), 4000.0);
        assert_eq!(nice(8333.0), 10000.0);
        assert_eq!(nice(100_000.0), 120_000.0);
        assert_eq!(thousands(100_000.0), "100,000");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1000.4), "1,000");
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let fleet = names(&["demo-bg-7fa38-0", "demo-bg-7fa38-11", "demo-bg-76f95-0"]);
        assert_eq!(common_prefix(&fleet), "demo-bg-");
        assert_eq!(common_prefix(&names(&["a-1", "a-2"])), "a-");
        assert_eq!(common_prefix(&names(&["blue", "green"])), "");
        assert_eq!(common_prefix(&names(&["only-one"])), "");
        let mut names = vec!["a-10", "a-2", "b", "a-1"];
        names.sort_by(|a, b| natural(a).cmp(&natural(b)));
        assert_eq!(names, ["a-1", "a-2", "a-10", "b"]);
    }

    #[test]
    fn rates_over_a_trailing_window() {
        // 50 per 100 ms = 500/s, then nothing.
        let c: Vec<(f64, u64)> = (0..=20)
            .map(|k| (f64::from(k) / 10.0, (k.min(10) * 50) as u64))
            .collect();
        let r = per_second(&c, 0.5);
        assert_eq!(r.len(), 20);
        assert!((r[8].1 - 500.0).abs() < 1e-6, "{r:?}");
        assert_eq!(r.last().unwrap().1, 0.0);
    }

    #[test]
    fn counters_in_one_second_buckets() {
        // 30 per 100 ms for 1.5 s, then nothing until 2.5 s.
        let c: Vec<(f64, u64)> = (1..=25)
            .map(|k| (f64::from(k) / 10.0, (k.min(15) * 30) as u64))
            .collect();
        let b = per_second_buckets(&c);
        let rates: Vec<(f64, f64, f64)> = b.iter().map(|b| (b.from, b.to, b.per_sec)).collect();
        assert_eq!(rates.len(), 3, "{rates:?}");
        assert!((rates[0].2 - 300.0).abs() < 1e-6, "{rates:?}");
        assert!((rates[1].2 - 150.0).abs() < 1e-6, "{rates:?}");
        // The last half second: nothing, over its own length.
        assert_eq!((rates[2].0, rates[2].2), (2.0, 0.0));
        assert!((rates[2].1 - 2.5).abs() < 1e-9);
        assert!(per_second_buckets(&[]).is_empty());
    }
}
