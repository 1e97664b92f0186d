//! The report's layout at scale, so it cannot silently regress: a recorded
//! 100,000-client blue-green upgrade over 12 + 12 instances (built here as
//! the bench records it: 100 ms samples, per-instance connections, the
//! eviction counter and the clients' reconnections) is rendered, and the
//! SVG is checked: no legend inside a plot area, an instance × time heat map
//! past a dozen instances (one small chart per instance on shared axes up
//! to a dozen), an eviction-rate and a reconnect-rate series and the
//! configured rate's reference line, and runs side by side on the same
//! axes.

use std::collections::BTreeMap;

use sluice_bench::recorder::{Aggregate, HttpCounts};
use sluice_bench::report::{chart, html};
use sluice_bench::{ConnConfig, Summary, TimelineSample};

const CLIENTS: u64 = 100_000;
const REPLICAS: usize = 12;
const RATE: f64 = 1000.0;

/// Blue-green: `replicas` old instances hold the clients; as many new ones
/// start at 10 s; from 14 s the old ones are evacuated one after the other at
/// `RATE`/s in the order of their names as strings (`-10` before `-2`, as
/// the engine picks them), each evicted client reconnecting 1 s later to the
/// least loaded new one.
fn blue_green(replicas: usize) -> Summary {
    let per_old = CLIENTS / replicas as u64;
    let mut old: Vec<String> = (0..replicas).map(|k| format!("8e1f0c2a9b-{k}")).collect();
    old.sort();
    let new: Vec<String> = (0..replicas).map(|k| format!("d03b77e415-{k}")).collect();
    let evacuation_starts = 14.0;
    let evicted_by =
        |t: f64| (((t - evacuation_starts) * RATE).max(0.0) as u64).min(per_old * replicas as u64);
    let end = evacuation_starts + CLIENTS as f64 / RATE + 5.0;
    let timeline = (0..=(end * 10.0) as u32)
        .map(|k| {
            let t = f64::from(k) / 10.0;
            let evicted = evicted_by(t);
            let reconnected = evicted_by(t - 1.0);
            let mut per_instance = BTreeMap::new();
            for (i, name) in old.iter().enumerate() {
                let gone = evicted.saturating_sub(i as u64 * per_old).min(per_old);
                // It leaves the metrics with a few connections still counted
                // (deleted before the scrape saw it at zero), as in real runs.
                if gone + 5 < per_old {
                    per_instance.insert(name.clone(), per_old - gone);
                }
            }
            if t >= 10.0 {
                for (i, name) in new.iter().enumerate() {
                    let n = reconnected / replicas as u64
                        + u64::from((reconnected % replicas as u64) > i as u64);
                    per_instance.insert(name.clone(), n);
                }
            }
            TimelineSample {
                t,
                connected: CLIENTS - (evicted - reconnected),
                per_instance,
                reconnects: Some(reconnected),
                evicted: Some(evicted),
                http: None,
            }
        })
        .collect();
    let agg = Aggregate {
        clients: CLIENTS,
        connected_at_stop: CLIENTS,
        processes: 6,
        disconnect_histogram: vec![0, CLIENTS],
        ..Default::default()
    };
    let mut cfg = ConnConfig::new("127.0.0.1", 1883, CLIENTS as u32);
    cfg.evict_rate = Some(RATE);
    let mut s = Summary::build(&cfg, Some("blue-green at scale"), agg, timeline, end);
    s.revisions = old
        .iter()
        .map(|n| (n.clone(), "8e1f0c2a9b".to_owned()))
        .chain(new.iter().map(|n| (n.clone(), "d03b77e415".to_owned())))
        .collect();
    s
}

/// A rectangle in SVG pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rect {
    x0: f64,
    y0: f64,
    x1: f64,
    y1: f64,
}

impl Rect {
    fn overlaps(&self, o: &Rect) -> bool {
        self.x0 < o.x1 && o.x0 < self.x1 && self.y0 < o.y1 && o.y0 < self.y1
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    Some(tag[at..at + tag[at..].find('"')?].to_owned())
}

fn num(tag: &str, name: &str) -> f64 {
    attr(tag, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {tag}"))
}

/// The opening tags of every `<name …>` element.
fn tags<'a>(svg: &'a str, name: &str) -> Vec<&'a str> {
    svg.match_indices(&format!("<{name} "))
        .map(|(i, _)| &svg[i..i + svg[i..].find('>').unwrap() + 1])
        .collect()
}

/// The plot areas: the rectangles filled with the plot background.
fn plot_areas(svg: &str) -> Vec<Rect> {
    let fill = format!(
        "#{:02X}{:02X}{:02X}",
        chart::PLOT_BG.0,
        chart::PLOT_BG.1,
        chart::PLOT_BG.2
    );
    tags(svg, "rect")
        .into_iter()
        .filter(|t| attr(t, "fill").as_deref() == Some(fill.as_str()))
        .map(|t| {
            let (x, y) = (num(t, "x"), num(t, "y"));
            Rect {
                x0: x,
                y0: y,
                x1: x + num(t, "width"),
                y1: y + num(t, "height"),
            }
        })
        .collect()
}

/// Every text element: its content and the box it covers (width estimated
/// generously at 0.6 em per character).
fn texts(svg: &str) -> Vec<(String, Rect)> {
    svg.match_indices("<text ")
        .map(|(i, _)| {
            let tag_end = i + svg[i..].find('>').unwrap();
            let tag = &svg[i..=tag_end];
            let body_end = tag_end + svg[tag_end..].find("</text>").unwrap();
            let content = svg[tag_end + 1..body_end].trim().to_owned();
            let (x, y, size) = (num(tag, "x"), num(tag, "y"), num(tag, "font-size"));
            let w = content.chars().count() as f64 * size * 0.6;
            let x0 = match attr(tag, "text-anchor").as_deref() {
                Some("end") => x - w,
                Some("middle") => x - w / 2.0,
                _ => x,
            };
            let y0 = match attr(tag, "dy").as_deref() {
                Some("0.76em") => y,
                Some("0.5ex") => y - size / 2.0,
                _ => y - size,
            };
            (
                content,
                Rect {
                    x0,
                    y0,
                    x1: x0 + w,
                    y1: y0 + size,
                },
            )
        })
        .collect()
}

fn hex(c: plotters::style::RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// The `<svg>…</svg>` whose title is `title`.
fn chart_titled<'a>(html: &'a str, title: &str) -> &'a str {
    html.split("<svg")
        .skip(1)
        .map(|s| &s[..s.find("</svg>").unwrap()])
        .find(|svg| svg.contains(&format!(">\n{title}\n</text>")))
        .unwrap_or_else(|| panic!("no chart titled {title}"))
}

/// Legend entries (by their text) lie outside every plot area, and so do
/// their swatches (the small marks just left of each text).
fn assert_legend_outside_plots(svg: &str, legend: &[&str]) {
    let plots = plot_areas(svg);
    assert!(!plots.is_empty(), "no plot area found");
    let all = texts(svg);
    for label in legend {
        let (_, text) = all
            .iter()
            .find(|(c, _)| c == label)
            .unwrap_or_else(|| panic!("no legend entry {label}"));
        let swatch = Rect {
            x0: text.x0 - 26.0,
            x1: text.x0,
            ..*text
        };
        for p in &plots {
            assert!(
                !text.overlaps(p) && !swatch.overlaps(p),
                "legend {label} at {text:?} overlaps the plot area {p:?}"
            );
        }
    }
}

#[test]
fn report_at_24_instances_keeps_legends_out_and_draws_a_heat_map() {
    let s = blue_green(REPLICAS);
    assert_eq!(s.instances.len(), 2 * REPLICAS);
    let page = html::render(std::slice::from_ref(&s));
    // SLUICE_REPORT_LAYOUT_OUT=FILE keeps the page, to look at it in a browser.
    if let Some(path) = std::env::var_os("SLUICE_REPORT_LAYOUT_OUT") {
        std::fs::write(path, &page).unwrap();
    }

    let revisions = chart_titled(&page, "Connections per revision");
    assert_legend_outside_plots(
        revisions,
        &[
            "old set (revision 8e1f0c2a9b)",
            "new set (revision d03b77e415)",
            "clients connected",
        ],
    );
    assert_eq!(plot_areas(revisions).len(), 1);
    // One stacked band per revision, in its colour.
    for c in [chart::OLD, chart::NEW] {
        let bands = tags(revisions, "polygon")
            .into_iter()
            .filter(|t| attr(t, "fill") == Some(hex(c)))
            .count();
        assert_eq!(bands, 1, "band {}", hex(c));
    }

    let rates = chart_titled(&page, "Evictions and reconnects per second");
    assert_legend_outside_plots(
        rates,
        &[
            "evictions/s (evacuators)",
            "reconnects/s (clients)",
            "connEvictRate 1,000/s (configured)",
        ],
    );
    let plot = plot_areas(rates)[0];
    for c in [chart::EVICTIONS, chart::RECONNECTS] {
        let line = tags(rates, "polyline")
            .into_iter()
            .filter(|t| attr(t, "stroke") == Some(hex(c)))
            .map(|t| attr(t, "points").unwrap())
            .max_by_key(|p| p.len())
            .unwrap_or_else(|| panic!("no rate series {}", hex(c)));
        let ys: Vec<f64> = line
            .split_whitespace()
            .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(
            ys.len() > 500,
            "rate series {} has {} points",
            hex(c),
            ys.len()
        );
        // Paced at 1000/s: most of the evacuation sits on one height, inside
        // the plot, well above zero.
        let top = ys.iter().copied().fold(f64::MAX, f64::min);
        assert!(
            top > plot.y0 && top < plot.y1 - (plot.y1 - plot.y0) * 0.3,
            "{top}"
        );
    }

    // Past a dozen instances: a heat map, not 24 small charts.
    assert!(!page.contains("same scale)"), "no small multiples at 24");
    let heat = chart_titled(&page, "Connections per instance (24 instances, heat map)");
    let plots = plot_areas(heat);
    assert_eq!(plots.len(), 1, "one plot area: the instance × time matrix");
    let plot = plots[0];
    assert!(
        plot.y1 - plot.y0 >= 24.0 * 8.0,
        "rows of at least 8 pixels: {plot:?}"
    );
    assert_legend_outside_plots(
        heat,
        &[
            "old set (revision 8e1f0c2a9b)",
            "new set (revision d03b77e415)",
            "pale → dark: 0 → 10,000 connections; blank: no instance",
        ],
    );
    // Every other rectangle is a cell inside the matrix or lies wholly
    // outside it (the colour keys): nothing drawn half over the plot.
    let bg = hex(chart::PLOT_BG);
    let rects: Vec<(String, Rect)> = tags(heat, "rect")
        .into_iter()
        .filter(|t| attr(t, "fill").is_some_and(|f| f != bg && f != "#FFFFFF"))
        .map(|t| {
            let (x, y) = (num(t, "x"), num(t, "y"));
            let r = Rect {
                x0: x,
                y0: y,
                x1: x + num(t, "width"),
                y1: y + num(t, "height"),
            };
            (attr(t, "fill").unwrap(), r)
        })
        .collect();
    let inside = |r: &Rect| {
        r.x0 >= plot.x0 - 0.5
            && r.x1 <= plot.x1 + 0.5
            && r.y0 >= plot.y0 - 0.5
            && r.y1 <= plot.y1 + 0.5
    };
    for (fill, r) in &rects {
        assert!(
            inside(r) || !r.overlaps(&plot),
            "{fill} rectangle {r:?} half over the plot {plot:?}"
        );
    }
    let keys = rects.iter().filter(|(_, r)| r.y1 <= plot.y0).count();
    assert!(keys >= 2 * 5, "a colour key per set above the plot: {keys}");
    // One labelled row per instance, outside the plot: the old set on top in
    // the order its instances emptied (a staircase), then the new set, which
    // all hold connections at the end, in name order.
    let all = texts(heat);
    let order: Vec<String> = chart::heat_rows(&s).into_iter().map(|r| r.0).collect();
    let mut evacuated: Vec<String> = (0..12).map(|k| format!("8e1f0c2a9b-{k}")).collect();
    evacuated.sort();
    let named: Vec<String> = (0..12).map(|k| format!("d03b77e415-{k}")).collect();
    assert_eq!(order, [evacuated, named].concat());
    let rows: Vec<Rect> = order
        .iter()
        .map(|name| {
            let (_, r) = all
                .iter()
                .find(|(c, _)| c == name)
                .unwrap_or_else(|| panic!("no row label for {name}"));
            assert!(!r.overlaps(&plot), "label {name} on the plot");
            *r
        })
        .collect();
    assert!(
        rows.windows(2).all(|w| w[0].y0 < w[1].y0),
        "rows in order, top to bottom"
    );
    // Cells by row: the old rows in blues, the new rows in greens; each old
    // row fades through many shades (paced), and every new row ends in the
    // same shade (balanced).
    let row_of = |r: &Rect| {
        let mid = (r.y0 + r.y1) / 2.0;
        (0..rows.len())
            .min_by(|a, b| {
                let d = |k: usize| (((rows[k].y0 + rows[k].y1) / 2.0) - mid).abs();
                d(*a).total_cmp(&d(*b))
            })
            .unwrap()
    };
    let rgb = |f: &str| -> (u8, u8, u8) {
        let c = |i: usize| u8::from_str_radix(&f[i..i + 2], 16).unwrap();
        (c(1), c(3), c(5))
    };
    let mut shades: Vec<std::collections::BTreeSet<String>> = vec![Default::default(); 24];
    let mut last: Vec<(f64, String)> = vec![(f64::MIN, String::new()); 24];
    for (fill, r) in rects.iter().filter(|(_, r)| inside(r)) {
        let k = row_of(r);
        let (red, green, blue) = rgb(fill);
        if k < 12 {
            assert!(blue > green && blue > red, "old row {k} in {fill}");
        } else {
            assert!(green > blue && green > red, "new row {k} in {fill}");
        }
        shades[k].insert(fill.clone());
        if r.x1 > last[k].0 {
            last[k] = (r.x1, fill.clone());
        }
    }
    for (k, set) in shades.iter().enumerate().take(12) {
        assert!(set.len() >= 8, "old row {k} fades in {} shades", set.len());
    }
    let ends: std::collections::BTreeSet<&String> = last[12..].iter().map(|(_, f)| f).collect();
    assert_eq!(ends.len(), 1, "new rows end in one shade: {ends:?}");
    // The end counts, right of the rows: the old instances gone, the new
    // ones balanced.
    let end_of = |row: &Rect| -> String {
        all.iter()
            .filter(|(_, r)| r.x0 >= plot.x1 && (r.y0 - row.y0).abs() < 2.0)
            .map(|(c, _)| c.clone())
            .next()
            .unwrap_or_default()
    };
    for (k, row) in rows.iter().enumerate() {
        let end = end_of(row);
        if k < 12 {
            assert_eq!(end, "gone", "old row {k}");
        } else {
            assert!(end == "8,333" || end == "8,334", "new row {k}: {end}");
        }
    }
    // Cells of equal shade are merged: the matrix stays small.
    assert!(heat.len() < 300_000, "heat map of {} bytes", heat.len());
    // The caption says what to look for.
    assert!(page.contains("<b>One row per instance</b>"));
}

#[test]
fn up_to_12_instances_are_small_multiples() {
    let s = blue_green(6);
    assert_eq!(s.instances.len(), chart::SMALL_MULTIPLES_MAX);
    let page = html::render(std::slice::from_ref(&s));
    assert!(!page.contains("heat map)"), "no heat map at 12");
    let title = format!("Connections per instance ({} instances, same scale)", 2 * 6);
    let instances = chart_titled(&page, &title);
    let panels = plot_areas(instances);
    assert_eq!(panels.len(), 2 * 6, "one small chart per instance");
    let (w, h) = (panels[0].x1 - panels[0].x0, panels[0].y1 - panels[0].y0);
    assert!(w >= 80.0 && h >= 40.0, "panels too small: {w}×{h}");
    for (i, p) in panels.iter().enumerate() {
        assert_eq!((p.x1 - p.x0, p.y1 - p.y0), (w, h), "panel {i}: shared axes");
        for q in &panels[i + 1..] {
            assert!(!p.overlaps(q), "panels overlap: {p:?} {q:?}");
        }
    }
    let all = texts(instances);
    for name in &s.instances {
        let (_, label) = all
            .iter()
            .find(|(c, _)| c.starts_with(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no panel title for {name}"));
        assert!(
            panels.iter().all(|p| !label.overlaps(p)),
            "title of {name} on a plot"
        );
    }
    // Balanced at the end: every new instance's title says the same count.
    let ends: Vec<&str> = all
        .iter()
        .filter(|(c, _)| c.starts_with("d03b77e415-"))
        .map(|(c, _)| c.split(": ").nth(1).unwrap())
        .collect();
    assert_eq!(ends.len(), 6);
    assert!(ends.iter().all(|e| *e == "16,666"), "{ends:?}");
    assert_legend_outside_plots(
        instances,
        &[
            "old set (revision 8e1f0c2a9b)",
            "new set (revision d03b77e415)",
        ],
    );
}

#[test]
fn runs_side_by_side_share_their_axes() {
    let paced = blue_green(REPLICAS);
    let mut storm = blue_green(REPLICAS);
    storm.title = "naive at scale".into();
    // Everyone cut at 14 s and back within a second: no evictions at all.
    for x in &mut storm.timeline {
        let back = ((x.t - 14.0).clamp(0.0, 1.0) * CLIENTS as f64) as u64;
        x.reconnects = Some(back);
        x.evicted = Some(0);
    }
    let page = html::render(&[paced.clone(), storm.clone()]);
    assert!(page.contains("grid-template-columns:repeat(2,1fr)"));
    let axes = chart::Axes::of(&[paced, storm]);
    assert_eq!(axes.rate, 4000.0, "clipped at 4× the configured rate");
    let rate_charts: Vec<&str> = page
        .split("<svg")
        .skip(1)
        .filter(|s| s.contains(">\nEvictions and reconnects per second\n</text>"))
        .collect();
    assert_eq!(rate_charts.len(), 2);
    // Same y axis: the same tick labels on both.
    let ticks = |svg: &str| -> Vec<String> {
        texts(svg)
            .into_iter()
            .map(|(c, _)| c)
            .filter(|c| c.chars().all(|ch| ch.is_ascii_digit() || ch == ','))
            .collect()
    };
    assert_eq!(ticks(rate_charts[0]), ticks(rate_charts[1]));
    // The storm's peak, off the scale, is written at the top.
    assert!(rate_charts[1].contains("↑ 100,0"), "peak label");
    assert!(!rate_charts[0].contains('↑'));
}

/// `s` as an HTTP run: `per_sec` requests each second, and from 14 s to 15 s
/// `errors` socket errors and `non2xx` non-2xx responses (a naive upgrade's
/// stopped instances); the counts are cumulative, as the bench records them.
fn as_http(mut s: Summary, title: &str, errors: u64, non2xx: u64) -> Summary {
    let per_sec = 2000.0;
    let burst = |x: &TimelineSample| (x.t - 14.0).clamp(0.0, 1.0);
    for x in &mut s.timeline {
        x.http = Some(HttpCounts {
            requests: (x.t * per_sec) as u64,
            non2xx: (burst(x) * non2xx as f64) as u64,
            socket_errors: (burst(x) * errors as f64) as u64,
        });
    }
    let last = s.timeline.last().and_then(|x| x.http).unwrap_or_default();
    (s.requests, s.non2xx, s.socket_errors) = (
        Some(last.requests),
        Some(last.non2xx),
        Some(last.socket_errors),
    );
    s.title = title.into();
    s
}

/// The y coordinates of the lines drawn in colour `c` inside the plot area
/// (not the legend's swatch).
fn line_ys(svg: &str, c: plotters::style::RGBColor) -> Vec<f64> {
    let plot = plot_areas(svg)[0];
    tags(svg, "polyline")
        .into_iter()
        .filter(|t| attr(t, "stroke") == Some(hex(c)))
        .map(|t| {
            attr(t, "points")
                .unwrap()
                .split_whitespace()
                .map(|p| p.split(',').nth(1).unwrap().parse::<f64>().unwrap())
                .collect::<Vec<_>>()
        })
        .filter(|ys| ys.iter().all(|y| *y >= plot.y0))
        .flatten()
        .collect()
}

#[test]
fn http_runs_chart_errors_over_time_and_mqtt_runs_do_not() {
    let title = "HTTP errors per second";
    let mqtt = html::render(&[blue_green(6), blue_green(6)]);
    assert!(!mqtt.contains(title), "an MQTT run has no HTTP chart");
    assert!(!mqtt.contains("non-2xx") && !mqtt.contains("repeat(7,auto)"));

    let calm = as_http(blue_green(6), "blue-green over HTTP", 0, 0);
    let storm = as_http(blue_green(6), "naive over HTTP", 3000, 500);
    let page = html::render(&[calm, storm]);
    if let Some(path) = std::env::var_os("SLUICE_REPORT_HTTP_OUT") {
        std::fs::write(path, &page).unwrap();
    }
    assert!(page.contains("grid-template-rows:repeat(7,auto)"));
    let charts: Vec<&str> = page
        .split("<svg")
        .skip(1)
        .filter(|s| s.contains(&format!(">\n{title}\n</text>")))
        .collect();
    assert_eq!(charts.len(), 2, "one HTTP chart per run");
    for svg in &charts {
        assert_legend_outside_plots(svg, &chart::HTTP_LEGEND);
        assert_eq!(plot_areas(svg).len(), 1);
        for axis in ["time (s)", "errors per second", "requests per second"] {
            assert!(svg.contains(&format!(">\n{axis}\n</text>")), "axis {axis}");
        }
    }
    let plot = plot_areas(charts[0])[0];
    for c in [chart::NON2XX, chart::SOCKET_ERRORS] {
        // Blue-green: flat at zero, the bottom of the plot.
        let calm = line_ys(charts[0], c);
        assert!(!calm.is_empty(), "no {} line", hex(c));
        assert!(
            calm.iter().all(|y| (y - plot.y1).abs() < 2.0),
            "{} not flat at zero: {calm:?} vs {plot:?}",
            hex(c)
        );
        // Naive: a spike well above zero.
        let top = line_ys(charts[1], c).into_iter().fold(f64::MAX, f64::min);
        assert!(top < plot.y1 - 20.0, "{} has no spike", hex(c));
    }
    // Requests flow in both, on the right axis.
    for svg in &charts {
        let top = line_ys(svg, chart::REQUESTS)
            .into_iter()
            .fold(f64::MAX, f64::min);
        assert!(top < plot.y1 - 20.0, "no requests line");
    }
    assert!(page.contains("Over the run: 238,000 requests, 500 non-2xx, 3,000 socket errors."));
    assert!(page.contains("<b>Look for</b> both error lines flat at zero"));
}
