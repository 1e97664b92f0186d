//! What the demo writes: `summary.json`, the table, and the HTML report.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use sluice_bench::report::html;

use crate::DemoError;
use crate::promises::Promises;
use crate::run::StrategyResult;

/// The content of `summary.json`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoSummary {
    /// `--clients`.
    pub clients: u64,
    /// `--replicas`.
    pub replicas: u32,
    /// `--rate` (connEvictRate and sessEvictRate).
    pub rate: u32,
    /// `builtin` or `mosquitto`.
    pub app: String,
    /// Seconds the whole demo took.
    pub total_seconds: f64,
    /// One entry per strategy, in the order they ran.
    pub strategies: Vec<StrategyResult>,
}

/// Writes `text` to `path`.
pub fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "FAIL" }
}

/// The five cells of one strategy: (promise, figure, pass).
pub fn cells(p: &Promises, evacuates: bool) -> [(&'static str, String, bool); 5] {
    let rate = match p.paced.measured_rate {
        Some(r) if evacuates => format!("{r:.0}/s of {:.0}", p.paced.configured_rate),
        Some(r) => format!("cut, burst ≥{r:.0}/s"),
        None => "n/a".into(),
    };
    let imbalance = p
        .balanced
        .imbalance
        .map_or_else(|| "n/a".into(), |x| format!("{x:.2}"));
    [
        ("paced", rate, p.paced.pass),
        (
            "once",
            format!("max {}", p.once.max_disconnects_per_client),
            p.once.pass,
        ),
        (
            "capacity",
            format!("min {}/{}", p.capacity.min_serving, p.capacity.replicas),
            p.capacity.pass,
        ),
        ("balanced", imbalance, p.balanced.pass),
        (
            "nothing lost",
            match (p.nothing_lost.non2xx, p.nothing_lost.socket_errors) {
                (Some(non2xx), Some(errors)) => format!(
                    "{}/{}, {non2xx} non-2xx, {errors} socket err",
                    p.nothing_lost.connected_at_end, p.nothing_lost.clients
                ),
                _ => format!(
                    "{}/{}",
                    p.nothing_lost.connected_at_end, p.nothing_lost.clients
                ),
            },
            p.nothing_lost.pass,
        ),
    ]
}

/// The terminal table: one row per strategy, one column per promise.
pub fn table(s: &DemoSummary) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nsluice demo: {} clients, {} replicas, connEvictRate {}/s ({}), {:.0} s\n",
        s.clients, s.replicas, s.rate, s.app, s.total_seconds
    );
    let heads = ["paced", "once", "capacity", "balanced", "nothing lost"];
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once("strategy".to_owned())
            .chain(heads.iter().map(|h| (*h).to_owned()))
            .chain(std::iter::once("upgrade".to_owned()))
            .collect(),
    ];
    for r in &s.strategies {
        let mut row = vec![r.strategy.clone()];
        for (_, figure, pass) in cells(&r.promises, r.strategy != "naive") {
            row.push(format!("{} {figure}", verdict(pass)));
        }
        row.push(match &r.aborted {
            None => format!("{:.1} s", r.duration_seconds),
            Some(a) => format!("aborted: {}", a.reason),
        });
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(o, "  {}", line.join("  ").trim_end());
    }
    if s.strategies.iter().any(|r| r.strategy == "naive") {
        let _ = writeln!(
            o,
            "\n  naive is the plain Kubernetes StatefulSet rolling restart, shown for \
             comparison: it is supposed to fail."
        );
    }
    let _ = writeln!(o);
    o
}

/// The report: the bench's page (one section per strategy) with the promises
/// table on top.
pub fn report_html(s: &DemoSummary) -> String {
    let summaries: Vec<_> = s
        .strategies
        .iter()
        .filter_map(|r| r.bench.clone())
        .collect();
    let page = html::render(&summaries);
    let mut top = String::new();
    let _ = write!(
        top,
        "<h1>sluice demo</h1>\n<p>{} MQTT clients, {} replicas, connEvictRate {}/s ({}); \
         each section below (side by side, on the same axes) is one upgrade v1 → v2.</p>\n<table>\n<tr><th>strategy</th>",
        s.clients,
        s.replicas,
        s.rate,
        html::escape(&s.app)
    );
    for h in [
        "paced",
        "once",
        "capacity",
        "balanced",
        "nothing lost",
        "upgrade",
    ] {
        let _ = write!(top, "<th>{h}</th>");
    }
    top.push_str("</tr>\n");
    for r in &s.strategies {
        let _ = write!(top, "<tr><td>{}</td>", html::escape(&r.strategy));
        for (_, figure, pass) in cells(&r.promises, r.strategy != "naive") {
            let class = if pass { "" } else { " class=\"error\"" };
            let _ = write!(
                top,
                "<td{class}>{} {}</td>",
                verdict(pass),
                html::escape(&figure)
            );
        }
        let upgrade = match &r.aborted {
            None => format!("{:.1} s", r.duration_seconds),
            Some(a) => format!("aborted: {}", a.reason),
        };
        let _ = writeln!(top, "<td>{}</td></tr>", html::escape(&upgrade));
    }
    top.push_str("</table>\n");
    const BENCH_H1: &str = "<h1>sluice bench report</h1>\n";
    if page.contains(BENCH_H1) {
        page.replacen(BENCH_H1, &top, 1)
            .replacen("<title>sluice bench", "<title>sluice demo", 1)
    } else {
        page.replacen("<body>\n", &format!("<body>\n{top}"), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promises;
    use std::collections::BTreeMap;

    fn result(name: &str, pass: bool) -> StrategyResult {
        let hist = if pass { vec![0, 10] } else { vec![0, 5, 5] };
        StrategyResult {
            strategy: name.into(),
            fleet: format!("demo-{name}"),
            clients: 10,
            replicas: 3,
            duration_seconds: 12.3,
            run_seconds: 20.0,
            from_revision: "a".into(),
            to_revision: "b".into(),
            phases: vec!["Stable".into()],
            aborted: None,
            fault: None,
            promises: Promises {
                paced: promises::Paced {
                    configured_rate: 500.0,
                    measured_rate: Some(if pass { 497.0 } else { 9000.0 }),
                    per_instance: BTreeMap::new(),
                    measured_from: promises::PaceSource::Evacuators,
                    timed_evictions: None,
                    pass,
                },
                once: promises::once(&hist),
                capacity: promises::capacity(if pass { 3 } else { 2 }, 3),
                balanced: promises::balanced([("x".into(), 3), ("y".into(), 3)].into()),
                nothing_lost: promises::nothing_lost(10, 10),
            },
            disconnect_histogram: hist,
            disconnect_causes: BTreeMap::new(),
            dir: "/tmp".into(),
            bench: None,
        }
    }

    fn summary() -> DemoSummary {
        DemoSummary {
            clients: 10,
            replicas: 3,
            rate: 500,
            app: "builtin".into(),
            total_seconds: 40.0,
            strategies: vec![result("blue-green", true), result("naive", false)],
        }
    }

    #[test]
    fn the_table_has_a_row_per_strategy_and_a_verdict_per_promise() {
        let t = table(&summary());
        let bg = t
            .lines()
            .find(|l| l.trim_start().starts_with("blue-green"))
            .unwrap();
        assert_eq!(bg.matches("PASS").count(), 5, "{t}");
        assert!(bg.contains("497/s of 500") && bg.contains("12.3 s"), "{t}");
        let naive = t
            .lines()
            .find(|l| l.trim_start().starts_with("naive"))
            .unwrap();
        assert!(naive.contains("FAIL cut, burst ≥9000/s"), "{t}");
        assert!(
            naive.contains("FAIL max 2") && naive.contains("FAIL min 2/3"),
            "{t}"
        );
        assert!(t.contains("supposed to fail"), "{t}");
    }

    #[test]
    fn summary_json_has_the_promised_fields() {
        let v = serde_json::to_value(summary()).unwrap();
        let s = &v["strategies"][0];
        for key in [
            "strategy",
            "clients",
            "replicas",
            "durationSeconds",
            "promises",
        ] {
            assert!(!s[key].is_null(), "{key} missing: {s}");
        }
        let p = &s["promises"];
        assert_eq!(p["paced"]["configuredRate"], 500.0);
        assert_eq!(p["paced"]["measuredRate"], 497.0);
        assert_eq!(p["paced"]["pass"], true);
        assert_eq!(p["once"]["maxDisconnectsPerClient"], 1);
        assert_eq!(p["capacity"]["minServing"], 3);
        assert_eq!(p["balanced"]["imbalance"], 0.0);
        assert_eq!(p["nothingLost"]["connectedAtEnd"], 10);
        assert!(s.get("bench").is_none());
        assert!(s.get("aborted").is_none());
    }

    #[test]
    fn the_report_leads_with_the_promises() {
        let page = report_html(&summary());
        assert!(page.contains("<h1>sluice demo</h1>"), "{page}");
        assert!(!page.contains("sluice bench report"));
        assert!(
            page.contains("<td class=\"error\">FAIL cut, burst ≥9000/s</td>"),
            "{page}"
        );
    }
}
