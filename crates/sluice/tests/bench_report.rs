//! The `--report` HTML and the `--metrics` timeline: one series per
//! instance, scraped from two evacuators' `/metrics` (stand-ins serving the
//! `sluice_upstream_connections` gauge, as `sluice proxy` exports it).

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::TempDir;
use support::bench_extra::{BenchRun, FakeMetrics, Sink, gauge, read_json};

/// The checks a browser-free test can make that the page is sound.
fn assert_self_contained_html(html: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "doctype");
    assert!(html.trim_end().ends_with("</html>"));
    let open = html.matches("<svg").count();
    assert!(open >= 2, "two charts");
    assert_eq!(open, html.matches("</svg>").count(), "balanced <svg>");
    assert_eq!(
        html.matches("<section>").count(),
        html.matches("</section>").count()
    );
    assert_eq!(
        html.matches("<table>").count(),
        html.matches("</table>").count()
    );
    for external in [
        "src=\"http",
        "href=\"http",
        "url(http",
        "@import",
        "<script src",
        "<link",
    ] {
        assert!(!html.contains(external), "external reference {external}");
    }
}

/// The `<svg>…</svg>` of the first chart (connections over time).
fn first_chart(html: &str) -> &str {
    &html[html.find("<svg").unwrap()..html.find("</svg>").unwrap()]
}

#[test]
fn report_draws_one_series_per_instance_from_metrics() {
    let sink = Sink::start();
    let blue = FakeMetrics::start(&gauge("blue", 0));
    let green = FakeMetrics::start(&gauge("green", 0));
    let dir = TempDir::new("bench-report");
    let (json, html) = (dir.0.join("s.json"), dir.0.join("r.html"));
    let run = BenchRun::start(&[
        "-p",
        &sink.port.to_string(),
        "-c",
        "100",
        "-i",
        "0",
        "--metrics",
        &blue.url,
        &green.url,
        "--title",
        "blue → green",
        "--json",
        json.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    run.wait_connected(100, Duration::from_secs(20));
    // The upgrade as the evacuators would report it: blue drains into green.
    for moved in [0u64, 50, 100] {
        *blue.body.lock().unwrap() = gauge("blue", 100 - moved);
        *green.body.lock().unwrap() = gauge("green", moved);
        let seen = blue.hits.load(Ordering::SeqCst) + 3;
        support::wait_until("two more scrapes", Duration::from_secs(10), || {
            blue.hits.load(Ordering::SeqCst) >= seen && green.hits.load(Ordering::SeqCst) >= seen
        });
    }
    let out = run.stop();
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);

    let s = read_json(&json);
    assert_eq!(s["instances"], serde_json::json!(["blue", "green"]));
    let timeline = s["timeline"].as_array().unwrap();
    assert!(
        timeline
            .iter()
            .any(|x| x["perInstance"]["blue"] == 100 && x["perInstance"]["green"] == 0)
    );
    assert!(
        timeline
            .iter()
            .any(|x| x["perInstance"]["blue"] == 50 && x["perInstance"]["green"] == 50)
    );
    assert!(
        timeline
            .iter()
            .any(|x| x["perInstance"]["blue"] == 0 && x["perInstance"]["green"] == 100)
    );

    let html = std::fs::read_to_string(&html).unwrap();
    assert_self_contained_html(&html);
    assert!(html.contains("<h2>blue → green</h2>"));
    let chart = first_chart(&html);
    for legend in ["clients connected (total)", "blue", "green"] {
        assert!(
            chart.contains(&format!(">\n{legend}\n</text>")),
            "legend {legend}"
        );
    }
    // One line per series plus its legend mark, in the series' colour.
    for colour in ["#282828", "#1F77B4", "#FF7F0E"] {
        let n = chart
            .split("<polyline")
            .filter(|p| p.contains(&format!("stroke=\"{colour}\"")))
            .count();
        assert_eq!(n, 2, "series {colour}");
    }
}

#[test]
fn same_upstream_name_on_two_evacuators_is_told_apart_by_address() {
    let sink = Sink::start();
    let a = FakeMetrics::start(&gauge("app", 3));
    let b = FakeMetrics::start(&gauge("app", 4));
    let dir = TempDir::new("bench-report-names");
    let json = dir.0.join("s.json");
    let run = BenchRun::start(&[
        "-p",
        &sink.port.to_string(),
        "-c",
        "7",
        "--metrics",
        &a.url,
        &b.url,
        "--json",
        json.to_str().unwrap(),
    ]);
    run.wait_connected(7, Duration::from_secs(20));
    support::wait_until("scrapes", Duration::from_secs(10), || {
        a.hits.load(Ordering::SeqCst) >= 3 && b.hits.load(Ordering::SeqCst) >= 3
    });
    let out = run.stop();
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    let s = read_json(&json);
    let authority = |url: &str| {
        url.trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .to_owned()
    };
    let names = s["instances"].as_array().unwrap();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&serde_json::json!(format!("{}/app", authority(&a.url)))));
    assert!(names.contains(&serde_json::json!(format!("{}/app", authority(&b.url)))));
}
