//! The `--report` file: one self-contained HTML page (inline CSS and SVG,
//! no external assets, opens offline) with a section per run.

use std::fmt::Write as _;
use std::path::Path;

use super::chart;
use crate::BenchError;
use crate::recorder::describe_cause;
use crate::summary::Summary;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}\
body.wide{max-width:1400px}\
h1{font-size:1.6em}h2{font-size:1.25em;margin:1.5em 0 .5em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .8em;text-align:left;vertical-align:top}\
th{font-weight:600;color:#555}tr:nth-child(even){background:#f6f6f6}\
figure{margin:1em 0}figure svg{display:block;max-width:100%;height:auto}\
figcaption{color:#444;font-size:.9em;margin-top:.3em}figcaption b{color:#222}.error{color:#b00}\
.runs{display:grid;column-gap:20px;grid-auto-flow:column;grid-template-rows:repeat(6,auto)}\
.runs section{display:contents}.runs table{font-size:.85em}.runs td,.runs th{padding:.2em .5em}\
.empty{color:#777;font-style:italic}";

/// Widest page, pixels: three runs side by side fit a 1400-pixel window.
const PAGE: u32 = 1360;
/// Runs side by side at most; more are stacked.
const SIDE_BY_SIDE: usize = 3;

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The report page for `summaries` (one section each, in order). Two or
/// three runs stand side by side, more are stacked; either way all share
/// their axes, so that one run's damage shows next to another's smoothness.
pub fn render(summaries: &[Summary]) -> String {
    let mut o = String::new();
    let title = match summaries {
        [one] => one.title.clone(),
        _ => format!("{} runs", summaries.len()),
    };
    let columns = if (2..=SIDE_BY_SIDE).contains(&summaries.len()) {
        summaries.len()
    } else {
        1
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>sluice bench — {}</title>\n<style>{STYLE}</style>\n</head>\n<body{}>\n\
         <h1>sluice bench report</h1>\n",
        escape(&title),
        if columns > 1 { " class=\"wide\"" } else { "" }
    );
    let axes = chart::Axes::of(summaries);
    let width = if columns > 1 {
        (PAGE - 20 * (columns as u32 - 1)) / columns as u32
    } else {
        960
    };
    // A page with request counts gets the HTTP chart in every section, so
    // that side by side the same chart stands in the same row.
    let http = summaries.iter().any(|s| chart::http_series(s).is_some());
    if columns > 1 {
        // One grid row per section part: heading, table, the charts.
        let rows = if http {
            ";grid-template-rows:repeat(7,auto)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "<div class=\"runs\" style=\"grid-template-columns:repeat({columns},1fr){rows}\">"
        );
    }
    for s in summaries {
        section(&mut o, s, &axes, width, http);
    }
    if columns > 1 {
        o.push_str("</div>\n");
    }
    o.push_str("</body>\n</html>\n");
    o
}

/// Writes the report for `summaries` to `path`.
pub fn write(path: &Path, summaries: &[Summary]) -> Result<(), BenchError> {
    std::fs::write(path, render(summaries)).map_err(|source| BenchError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

/// One run's section; `http`: the page shows the HTTP chart.
fn section(o: &mut String, s: &Summary, axes: &chart::Axes, width: u32, http: bool) {
    let _ = writeln!(o, "<section>\n<h2>{}</h2>", escape(&s.title));
    let causes = |map: &std::collections::BTreeMap<String, u64>| {
        if map.is_empty() {
            return "none".to_owned();
        }
        map.iter()
            .map(|(k, v)| format!("{} {v}", escape(&describe_cause(k))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let per_client = s
        .disconnect_histogram
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{n} saw {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let dip = if s.deepest_dip.depth == 0 {
        "none".to_owned()
    } else {
        format!(
            "{} → {} (−{}) at {:.1} s",
            s.deepest_dip.from, s.deepest_dip.to, s.deepest_dip.depth, s.deepest_dip.at_secs
        )
    };
    let ramp = match (s.ramp.secs, s.ramp.connections_per_sec) {
        (Some(secs), Some(rate)) => format!("{secs:.2} s ({rate:.0} connections/s)"),
        (Some(secs), None) => format!("{secs:.2} s"),
        _ => format!("{} clients never connected", s.never_connected),
    };
    let rows = [
        ("Target", escape(&s.target)),
        ("Clients", s.clients.to_string()),
        (
            "Connected at end",
            format!("{} / {}", s.connected_at_end, s.clients),
        ),
        (
            "Duration",
            format!("{:.1} s in {} process(es)", s.duration_secs, s.workers),
        ),
        (
            "Disconnects",
            format!("{} ({})", s.disconnects, causes(&s.disconnect_causes)),
        ),
        (
            "Disconnects per client",
            format!("{per_client}; max {}", s.max_disconnects_per_client),
        ),
        (
            "Reconnect time",
            if s.reconnect_millis.count == 0 {
                "no reconnects".to_owned()
            } else {
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms over {} reconnects",
                    s.reconnect_millis.p50, s.reconnect_millis.p99, s.reconnect_millis.count
                )
            },
        ),
        (
            "Connect latency",
            format!(
                "p50 {:.1} ms, p99 {:.1} ms over {} connects ({} attempts)",
                s.connect_millis.p50, s.connect_millis.p99, s.connects, s.attempts
            ),
        ),
        ("Failed attempts", causes(&s.attempt_failures)),
        ("Deepest dip", dip),
        ("Initial ramp", ramp),
        (
            "Memory",
            format!(
                "peak RSS {:.1} MiB, {:.1} KiB per client",
                s.memory.rss_peak_bytes as f64 / 1048576.0,
                s.memory.bytes_per_client as f64 / 1024.0
            ),
        ),
    ];
    o.push_str("<div><table>\n");
    for (k, v) in rows {
        let _ = writeln!(o, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    o.push_str("</table></div>\n");
    figure(
        o,
        Some(chart::revisions_svg(s, axes, width)),
        &revisions_caption(s),
        "",
    );
    figure(
        o,
        chart::rates_svg(s, axes, width),
        &format!(
            "<b>Evictions per second</b> (from the evacuators' counters, over a sliding {} s \
             window) and <b>reconnects per second</b> (the clients' own count, over {} s){}. \
             <b>Look for</b> evictions running flat at the dashed line while an old instance is \
             evacuated, and reconnects following at the same height: the pace is kept and there \
             is no storm. A spike far above the line (clipped, its peak written above it) is a \
             reconnect storm.",
            chart::EVICTION_WINDOW,
            chart::RECONNECT_WINDOW,
            if s.evict_rate.is_some() {
                "; dashed: the configured connEvictRate"
            } else {
                " (give --evict-rate to draw the configured rate)"
            }
        ),
        "No rates: this summary was written before the bench recorded them.",
    );
    if http {
        figure(
            o,
            chart::http_svg(s, axes, width),
            &http_caption(s),
            "No requests over time: this run's clients send no requests (MQTT, TCP), or its \
             summary was written before the bench recorded them.",
        );
    }
    figure(
        o,
        chart::instances_svg(s, axes, width),
        if chart::uses_heat_map(s) {
            HEAT_MAP_CAPTION
        } else {
            SMALL_MULTIPLES_CAPTION
        },
        NO_INSTANCES,
    );
    figure(
        o,
        Some(chart::histogram_svg(s, axes, width)),
        "How many clients saw 0, 1, 2, … disconnects during the run. <b>Look for</b> every \
         client at 1 (moved exactly once); a bar at 2 or more is clients cut again.",
        "",
    );
    o.push_str("</section>\n");
}

/// Under the HTTP chart, with the run's totals.
fn http_caption(s: &Summary) -> String {
    let totals = match (s.requests, s.non2xx, s.socket_errors) {
        (Some(requests), Some(non2xx), Some(errors)) => format!(
            " Over the run: {} requests, {} non-2xx, {} socket errors.",
            chart::thousands(requests as f64),
            chart::thousands(non2xx as f64),
            chart::thousands(errors as f64)
        ),
        _ => String::new(),
    };
    format!(
        "<b>Non-2xx responses</b> (red) and <b>socket errors</b> (orange: resets, connections \
         closed inside a response, refused reconnects) per second, counted by the clients in \
         one-second buckets; grey: <b>requests per second</b> on the right axis, for scale. \
         <b>Look for</b> both error lines flat at zero through the whole upgrade while the \
         requests keep flowing (blue-green: every request answered); spikes when instances stop \
         are requests lost (naive: the stopped instances' clients see resets and refusals).{totals}"
    )
}

/// Under the per-instance small multiples.
const SMALL_MULTIPLES_CAPTION: &str = "<b>One panel per instance</b>, all on the same scale, the old \
     set first, each set in name order; the number after each name is its connections at the end \
     (\"gone\" once deleted). <b>Look for</b> each old instance draining to zero in an even slope, \
     one after the other, and the new instances ending at equal heights: balanced.";

/// Under the per-instance heat map (past a dozen instances).
const HEAT_MAP_CAPTION: &str = "<b>One row per instance</b>, the old set (blue) above the new set \
     (green), each set in the order its instances emptied, then by name; the colour is its connections, pale to dark on one scale for all \
     rows (key above); blank where the instance did not exist (not yet created, or deleted); the \
     number at the right is its connections at the end (\"gone\" once deleted). <b>Look for</b> \
     the blue rows fading to pale one after the other, each in a short even fade (an evacuation at \
     the configured rate), the green rows darkening as they fill, and every green row ending in \
     the same shade and with the same number: balanced.";

/// What stands in for the per-instance charts without per-instance data.
const NO_INSTANCES: &str = "No connections per instance: they need --metrics (the evacuators' \
                            Prometheus endpoints).";

/// One chart with its caption; `missing` in its place when there is no data.
fn figure(o: &mut String, svg: Option<String>, caption: &str, missing: &str) {
    match svg {
        Some(svg) => {
            let _ = writeln!(
                o,
                "<figure>\n{svg}\n<figcaption>{caption}</figcaption>\n</figure>"
            );
        }
        None => {
            let _ = writeln!(o, "<figure class=\"empty\"><p>{missing}</p></figure>");
        }
    }
}

fn revisions_caption(s: &Summary) -> String {
    let end: Vec<String> = chart::end_by_group(s)
        .iter()
        .map(|(label, n)| format!("{} {}", escape(label), chart::thousands(*n as f64)))
        .collect();
    let at_end = if end.is_empty() {
        String::new()
    } else {
        format!(" At the end: {}.", end.join(", "))
    };
    let what = if s.revisions.is_empty() {
        "<b>Connections held by the instances</b> (sampled every 100 ms from the evacuators' \
         metrics; they carry no revision label, so all instances are one band)"
    } else {
        "<b>Connections held by the old set (blue) and the new set (green)</b>, stacked \
         (sampled every 100 ms from the evacuators' metrics)"
    };
    format!(
        "{what}; the black line is the clients connected, by the bench's own count. \
         <b>Look for</b> the old band shrinking in even slopes while the new one grows, and \
         the black line staying flat on top: a dip is clients between a disconnect and their \
         reconnect.{at_end}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConnConfig;
    use crate::recorder::Aggregate;
    use crate::summary::TimelineSample;

    /// A recorded blue-green upgrade: blue drains into green over 3 s.
    fn upgrade() -> Summary {
        let timeline = (0..=60)
            .map(|i| {
                let t = f64::from(i) / 10.0;
                let moved = (((t - 1.5) / 3.0).clamp(0.0, 1.0) * 1000.0) as u64;
                let mut per_instance = std::collections::BTreeMap::new();
                if t < 5.0 {
                    per_instance.insert("blue".to_owned(), 1000 - moved);
                }
                if t >= 1.0 {
                    per_instance.insert("green".to_owned(), moved);
                }
                TimelineSample {
                    t,
                    connected: 1000 - if (2.0..2.5).contains(&t) { 10 } else { 0 },
                    per_instance,
                    reconnects: Some(moved),
                    evicted: Some(moved),
                    http: None,
                }
            })
            .collect();
        let mut agg = Aggregate {
            clients: 1000,
            connected_at_stop: 1000,
            processes: 1,
            disconnect_histogram: vec![0, 1000],
            ..Default::default()
        };
        agg.disconnect_causes
            .insert("server_disconnect:0x9c".into(), 1000);
        let mut cfg = ConnConfig::new("127.0.0.1", 1883, 1000);
        cfg.evict_rate = Some(333.0);
        let mut s = Summary::build(&cfg, Some("blue → green <upgrade>"), agg, timeline, 6.0);
        s.revisions = [("blue".into(), "v1".into()), ("green".into(), "v2".into())].into();
        s
    }

    #[test]
    fn report_is_self_contained_html_with_the_four_charts() {
        let s = upgrade();
        assert_eq!(s.instances, ["blue", "green"]);
        let html = render(&[s.clone(), s]);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg").count(), 8);
        assert_eq!(html.matches("</svg>").count(), 8);
        assert_eq!(html.matches("<section>").count(), 2);
        assert!(
            html.contains("grid-template-columns:repeat(2,1fr)"),
            "side by side"
        );
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "external reference"
        );
        assert!(html.contains("blue → green &lt;upgrade&gt;"));
        let first_svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
        for name in [
            "old set (revision v1)",
            "new set (revision v2)",
            "clients connected",
        ] {
            assert!(
                first_svg.contains(&format!(">\n{name}\n</text>")),
                "no legend {name}"
            );
        }
        assert!(html.contains("connEvictRate 333/s (configured)"));
        assert!(html.contains("At the end: old set (revision v1) 0, new set (revision v2) 1,000."));
        assert!(html.contains("server DISCONNECT 0x9c (use another server) 1000"));
    }

    #[test]
    fn without_metrics_the_instance_charts_say_why() {
        let mut s = upgrade();
        s.instances.clear();
        s.revisions.clear();
        for x in &mut s.timeline {
            x.per_instance.clear();
            x.evicted = None;
        }
        let html = render(&[s]);
        assert!(!html.contains("class=\"wide\""), "one run: one column");
        assert!(html.contains("No connections per instance: they need --metrics"));
        // Revisions (total only), rates (reconnects), histogram.
        assert_eq!(html.matches("<svg").count(), 3);
        assert!(html.contains("reconnects/s (clients)"));
        assert!(!html.contains("evictions/s"));
    }

    /// Writes the recorded upgrade's report; set `SLUICE_BENCH_REPORT_OUT`
    /// to keep it (e.g. to look at it in a browser).
    #[test]
    fn writes_the_file_for_inspection() {
        let keep = std::env::var_os("SLUICE_BENCH_REPORT_OUT").map(std::path::PathBuf::from);
        let path = keep.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("sluice-bench-report-{}.html", std::process::id()))
        });
        write(&path, &[upgrade()]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("</html>"));
        if keep.is_none() {
            let _ = std::fs::remove_file(&path);
        }
    }
}
