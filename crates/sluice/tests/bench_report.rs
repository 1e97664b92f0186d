//! The `--report` HTML and the `--metrics` timeline: connections per
//! instance and per revision and evictions per second, scraped from two
//! `/metrics` endpoints (stand-ins serving `sluice_upstream_connections`
//! with a `revision` label and `sluice_evictions_total`, as `sluice up`
//! exports them).

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::TempDir;
use support::bench_extra::{BenchRun, FakeMetrics, Sink, gauge, instance, read_json};

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

/// The `<svg>…</svg>` of the chart titled `title`.
fn chart<'a>(html: &'a str, title: &str) -> &'a str {
    html.split("<svg")
        .skip(1)
        .map(|s| &s[..s.find("</svg>").unwrap()])
        .find(|svg| svg.contains(&format!(">\n{title}\n</text>")))
        .unwrap_or_else(|| panic!("no chart titled {title}"))
}

#[test]
fn report_draws_revisions_instances_and_eviction_rate_from_metrics() {
    let sink = Sink::start();
    let blue = FakeMetrics::start(&instance("blue", "v1", 0, 0));
    let green = FakeMetrics::start(&instance("green", "v2", 0, 0));
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
        "--evict-rate",
        "50",
        "--title",
        "blue → green",
        "--json",
        json.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    run.wait_connected(100, Duration::from_secs(20));
    // The upgrade as the evacuators would report it: blue is evicted into green.
    for moved in [0u64, 50, 100] {
        *blue.body.lock().unwrap() = instance("blue", "v1", 100 - moved, moved);
        *green.body.lock().unwrap() = instance("green", "v2", moved, 0);
        let seen = blue.hits.load(Ordering::SeqCst) + 3;
        support::wait_until("two more scrapes", Duration::from_secs(10), || {
            blue.hits.load(Ordering::SeqCst) >= seen && green.hits.load(Ordering::SeqCst) >= seen
        });
    }
    let out = run.stop();
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);

    let s = read_json(&json);
    assert_eq!(s["instances"], serde_json::json!(["blue", "green"]));
    assert_eq!(
        s["revisions"],
        serde_json::json!({"blue": "v1", "green": "v2"})
    );
    assert_eq!(s["evictRate"], 50.0);
    let timeline = s["timeline"].as_array().unwrap();
    for (b, g) in [(100, 0), (50, 50), (0, 100)] {
        assert!(
            timeline
                .iter()
                .any(|x| x["perInstance"]["blue"] == b && x["perInstance"]["green"] == g),
            "no sample with blue {b}, green {g}"
        );
    }
    // Evictions counted from the counters: 0, then 50, then 100, never back.
    let evicted: Vec<u64> = timeline
        .iter()
        .map(|x| x["evicted"].as_u64().expect("evicted in every sample"))
        .collect();
    assert_eq!(evicted.first(), Some(&0));
    assert_eq!(evicted.last(), Some(&100));
    assert!(evicted.windows(2).all(|w| w[0] <= w[1]), "{evicted:?}");
    assert!(timeline.iter().all(|x| x["reconnects"] == 0));

    let html = std::fs::read_to_string(&html).unwrap();
    assert_self_contained_html(&html);
    assert!(html.contains("<h2>blue → green</h2>"));
    let revisions = chart(&html, "Connections per revision");
    for legend in [
        "old set (revision v1)",
        "new set (revision v2)",
        "clients connected",
    ] {
        assert!(
            revisions.contains(&format!(">\n{legend}\n</text>")),
            "legend {legend}"
        );
    }
    let rates = chart(&html, "Evictions and reconnects per second");
    for legend in [
        "evictions/s (evacuators)",
        "reconnects/s (clients)",
        "connEvictRate 50/s (configured)",
    ] {
        assert!(
            rates.contains(&format!(">\n{legend}\n</text>")),
            "legend {legend}"
        );
    }
    let instances = chart(&html, "Connections per instance (2 instances, same scale)");
    assert!(instances.contains(">\nblue: 0\n</text>"), "blue's panel");
    assert!(
        instances.contains(">\ngreen: 100\n</text>"),
        "green's panel"
    );
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
