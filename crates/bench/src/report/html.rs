//! The `--report` file: one self-contained HTML page (inline CSS and SVG,
//! no external assets, opens offline) with a section per run.

use std::fmt::Write as _;
use std::path::Path;

use super::chart;
use crate::BenchError;
use crate::recorder::describe_cause;
use crate::summary::Summary;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}\
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}\
table{border-collapse:collapse;margin:1em 0}td,th{padding:.25em .8em;text-align:left;vertical-align:top}\
th{font-weight:600;color:#555}tr:nth-child(even){background:#f6f6f6}\
figure{margin:1em 0}figcaption{color:#555;font-size:.9em}.error{color:#b00}\
.legend span{display:inline-block;margin-right:1em}.swatch{display:inline-block;width:1em;height:.6em;margin-right:.3em}";

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

/// The report page for `summaries` (one section each, in order).
pub fn render(summaries: &[Summary]) -> String {
    let mut o = String::new();
    let title = match summaries {
        [one] => one.title.clone(),
        _ => format!("{} runs", summaries.len()),
    };
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>sluice bench — {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>sluice bench report</h1>\n",
        escape(&title)
    );
    for s in summaries {
        section(&mut o, s);
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

fn section(o: &mut String, s: &Summary) {
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
    o.push_str("<table>\n");
    for (k, v) in rows {
        let _ = writeln!(o, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    o.push_str("</table>\n");
    let instances = if s.instances.is_empty() {
        "no --metrics given: the total only".to_owned()
    } else {
        s.instances
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let c = chart::instance_color(i);
                format!(
                    "<span><i class=\"swatch\" style=\"background:rgb({},{},{})\"></i>{}</span>",
                    c.0,
                    c.1,
                    c.2,
                    escape(name)
                )
            })
            .collect::<Vec<_>>()
            .join("")
    };
    let _ = writeln!(
        o,
        "<figure>\n{}\n<figcaption class=\"legend\">Connections per instance (sampled every 100 ms \
         from the evacuators' metrics) and clients connected in total. Instances: {instances}</figcaption>\n</figure>",
        chart::connections_svg(s)
    );
    let _ = writeln!(
        o,
        "<figure>\n{}\n<figcaption>How many clients saw 0, 1, 2, … disconnects during the run.</figcaption>\n</figure>\n</section>",
        chart::histogram_svg(s)
    );
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
        Summary::build(
            &ConnConfig::new("127.0.0.1", 1883, 1000),
            Some("blue → green <upgrade>"),
            agg,
            timeline,
            6.0,
        )
    }

    #[test]
    fn report_is_self_contained_html_with_one_series_per_instance() {
        let s = upgrade();
        assert_eq!(s.instances, ["blue", "green"]);
        let html = render(&[s.clone(), s]);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert_eq!(html.matches("<svg").count(), 4);
        assert_eq!(html.matches("</svg>").count(), 4);
        assert_eq!(html.matches("<section>").count(), 2);
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "external reference"
        );
        assert!(html.contains("blue → green &lt;upgrade&gt;"));
        // Legend entries inside the connections chart: total + 2 instances.
        let first_svg = &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()];
        for name in ["clients connected (total)", "blue", "green"] {
            assert!(
                first_svg.contains(&format!(">\n{name}\n</text>")),
                "no legend {name}"
            );
        }
        // One line per series (each instance present in one contiguous
        // run), plus its legend mark.
        for color in ["#282828", "#1F77B4", "#FF7F0E"] {
            let lines = first_svg
                .split("<polyline")
                .filter(|p| p.contains(&format!("stroke=\"{color}\"")))
                .count();
            assert_eq!(lines, 2, "series {color}");
        }
        assert!(html.contains("server DISCONNECT 0x9c (use another server) 1000"));
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
