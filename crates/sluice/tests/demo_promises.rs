//! `sluice demo --strategy all` with the real binary: blue-green and rolling keep
//! the promises, the naive restart does not (2000 clients, 3 replicas).

mod support;

use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;
use support::{TempDir, sluice_bin};

fn strategy<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["strategies"]
        .as_array()
        .expect("strategies")
        .iter()
        .find(|s| s["strategy"] == name)
        .unwrap_or_else(|| panic!("no {name} in {summary:#}"))
}

/// Runs `sluice demo ARGS --json --out DIR` and returns what it printed (parsed),
/// its stderr (for failure messages) and the folder it wrote to.
fn demo(tag: &str, args: &[&str]) -> (Value, String, TempDir) {
    let dir = TempDir::new(tag);
    let started = Instant::now();
    let out = Command::new(sluice_bin())
        .arg("demo")
        .args(args)
        .args(["--json", "--out"])
        .arg(&dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice demo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "sluice demo failed ({}):\n{stderr}",
        out.status
    );
    eprintln!(
        "sluice demo {args:?} took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let printed: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{stderr}"));
    (printed, stderr, dir)
}

#[test]
fn done_means_the_promises_hold_for_blue_green_and_rolling_and_fail_for_naive() {
    let (printed, stderr, dir) = demo(
        "demo-all",
        &["--strategy", "all", "--clients", "2000", "--replicas", "3"],
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(printed, written, "--json prints summary.json's content");
    let s = &written;
    assert_eq!(s["clients"], 2000);
    assert_eq!(s["replicas"], 3);
    let names: Vec<&str> = s["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["strategy"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["blue-green", "rolling", "naive"]);

    // BlueGreen: all five promises.
    let bg = strategy(s, "blue-green");
    let p = &bg["promises"];
    let context = format!("{bg:#}\n{stderr}");
    assert!(bg.get("aborted").is_none(), "{context}");
    assert_eq!(bg["clients"], 2000);
    assert_eq!(bg["replicas"], 3);
    assert!(bg["durationSeconds"].as_f64().unwrap() > 0.0);
    assert!(
        p["once"]["maxDisconnectsPerClient"].as_u64().unwrap() <= 1,
        "{context}"
    );
    assert_eq!(p["nothingLost"]["connectedAtEnd"], 2000, "{context}");
    assert!(
        p["capacity"]["minServing"].as_i64().unwrap() >= 3,
        "{context}"
    );
    assert!(
        p["balanced"]["imbalance"].as_f64().unwrap() <= 0.10,
        "{context}"
    );
    // Paced, by the evacuators' own clocks (each times its evictions while
    // connections wait): the pacer keeps its rate on average (a late wake-up
    // takes the slots it owes, at most a tenth of a second's worth), and falls
    // below it only when the machine stalls it for longer than that. So the bounds here are behaviour, not the ±10 %
    // promise, which is a figure of `sluice demo` runs (docs/benchmarks.md).
    let configured = p["paced"]["configuredRate"].as_f64().unwrap();
    let measured = p["paced"]["measuredRate"].as_f64().unwrap();
    assert_eq!(p["paced"]["measuredFrom"], "evacuators", "{context}");
    assert!(
        measured <= configured * 1.02 && measured >= configured * 0.5,
        "measured eviction rate {measured}/s vs configured {configured}/s\n{context}"
    );
    // Every old connection but each instance's first eviction (and the first
    // after a wait for a late connection) was timed.
    let timed = p["paced"]["timedEvictions"].as_u64().unwrap();
    assert!(
        (1000..2000).contains(&timed),
        "timed evictions {timed} of 2000\n{context}"
    );
    assert_eq!(
        p["paced"]["perInstance"].as_object().map(|m| m.len()),
        Some(3),
        "one pace per old instance\n{context}"
    );
    for key in ["once", "capacity", "balanced", "nothingLost"] {
        assert_eq!(p[key]["pass"], true, "{key}: {context}");
    }

    // Rolling with evacuation: once, nothing lost.
    let rolling = strategy(s, "rolling");
    let p = &rolling["promises"];
    let context = format!("{rolling:#}\n{stderr}");
    assert!(rolling.get("aborted").is_none(), "{context}");
    // The front sends new connections to the target revision's instances first,
    // so a client moved off an old instance never lands on another old one.
    assert_eq!(
        p["once"]["maxDisconnectsPerClient"].as_u64(),
        Some(1),
        "{context}"
    );
    assert_eq!(p["once"]["pass"], true, "{context}");
    assert_eq!(p["nothingLost"]["connectedAtEnd"], 2000, "{context}");

    // Naive, in the same run: some clients are disconnected more than once, and
    // it is reported as failing.
    let naive = strategy(s, "naive");
    let p = &naive["promises"];
    let context = format!("{naive:#}\n{stderr}");
    assert!(
        p["once"]["maxDisconnectsPerClient"].as_u64().unwrap() >= 2,
        "{context}"
    );
    assert_eq!(p["once"]["pass"], false, "{context}");
    assert_eq!(p["paced"]["pass"], false, "{context}");
    assert_eq!(
        p["paced"]["measuredFrom"], "connectionSamples",
        "a cut is timed by no evacuator: {context}"
    );

    // The report: one section per strategy.
    let html = std::fs::read_to_string(dir.0.join("report.html")).expect("report.html");
    assert_eq!(html.matches("<section>").count(), 3, "three sections");
    for name in ["blue-green:", "rolling:", "naive:"] {
        assert!(html.contains(name), "report lacks a {name} section");
    }
    // Side by side, with the revisions and the eviction counter `sluice up`
    // exports: the old and the new set, and evictions per second, in each.
    assert!(html.contains("grid-template-columns:repeat(3,1fr)"));
    // (the revision chart's and the per-instance panels' legends in each of
    // the three sections; captions may name the sets again; naive evacuates
    // nothing, so only blue-green and rolling have an eviction series)
    for (legend, at_least) in [
        ("old set (revision ", 3 * 2),
        ("new set (revision ", 3 * 2),
        ("evictions/s", 2),
    ] {
        let n = html.matches(legend).count();
        assert!(
            n >= at_least,
            "{legend} appears {n} times, expected {at_least}"
        );
    }
    // Blue-green's evictions, counted from the evacuators and sampled every
    // 100 ms into the timeline. An instance's counter leaves `sluice up`'s
    // metrics with the instance, so the last sample may miss the evictions of
    // the last instance after its last scrape: the first two instances' are
    // always there, never more than the clients (every client once is checked
    // above, from the clients' own counts).
    let bench = std::fs::read_to_string(dir.0.join("blue-green").join("bench.json")).unwrap();
    let bench: serde_json::Value = serde_json::from_str(&bench).unwrap();
    let evicted = bench["timeline"].as_array().unwrap().last().unwrap()["evicted"]
        .as_u64()
        .expect("the timeline counts evictions");
    assert!(
        (1300..=2000).contains(&evicted),
        "evictions counted by the evacuators: {evicted} of 2000"
    );
}

#[test]
fn a_green_that_never_gets_ready_is_aborted_and_nobody_is_disconnected() {
    let (s, stderr, _dir) = demo(
        "demo-break",
        &[
            "--strategy",
            "blue-green",
            "--clients",
            "600",
            "--break-green",
        ],
    );
    let bg = strategy(&s, "blue-green");
    let context = format!("{bg:#}\n{stderr}");
    assert_eq!(
        bg["aborted"]["reason"], "ProgressDeadlineExceeded",
        "{context}"
    );
    let p = &bg["promises"];
    // Blue kept serving: nobody was disconnected, everybody is still connected.
    assert_eq!(p["once"]["maxDisconnectsPerClient"], 0, "{context}");
    assert_eq!(p["nothingLost"]["connectedAtEnd"], 600, "{context}");
    assert!(
        p["capacity"]["minServing"].as_i64().unwrap() >= 3,
        "{context}"
    );
    // An aborted upgrade fails every promise.
    for key in ["paced", "once", "capacity", "balanced", "nothingLost"] {
        assert_eq!(p[key]["pass"], false, "{key}: {context}");
    }
}

#[test]
fn a_green_killed_mid_evacuation_is_replaced_and_only_its_clients_move_twice() {
    let (s, stderr, _dir) = demo(
        "demo-kill",
        &[
            "--strategy",
            "blue-green",
            "--clients",
            "2000",
            "--kill-green-during-evacuation",
        ],
    );
    let bg = strategy(&s, "blue-green");
    let context = format!("{bg:#}\n{stderr}");
    // The upgrade completes.
    assert!(bg.get("aborted").is_none(), "{context}");
    assert_eq!(bg["phases"].as_array().unwrap().last().unwrap(), "Stable");
    let fault = &bg["fault"];
    assert_eq!(fault["kind"], "killGreenDuringEvacuation", "{context}");
    let killed = fault["connectionsAtKill"].as_u64().unwrap();
    let p = &bg["promises"];
    // Only the killed instance's clients see an extra disconnect (its count was
    // read one status poll before the kill: allow what 0.2 s of evacuation adds),
    // and the summary counts them.
    assert_eq!(p["once"]["maxDisconnectsPerClient"], 2, "{context}");
    let twice = p["once"]["clientsDisconnectedMoreThanOnce"]
        .as_u64()
        .unwrap();
    assert!(
        twice > 0 && twice <= killed + 100,
        "{twice} vs {killed}: {context}"
    );
    assert_eq!(p["once"]["pass"], false, "{context}");
    assert_eq!(p["nothingLost"]["connectedAtEnd"], 2000, "{context}");
}
