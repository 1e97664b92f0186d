//! `sluice plan` as a user runs it: the real binary, its output and its errors.

mod support;

use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(support::sluice_bin())
        .args(args)
        .output()
        .expect("run sluice")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = sluice(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// A failing call: non-zero exit, nothing on stdout, exactly one line on stderr
/// that contains every `needles`.
fn assert_one_line_error(args: &[&str], needles: &[&str]) {
    let out = sluice(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: one line, got {err:?}"
    );
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
}

#[test]
fn rolling_ten_replicas_quarter_quarter() {
    let v = json(&[
        "plan",
        "rolling",
        "--replicas",
        "10",
        "--max-surge",
        "25%",
        "--max-unavailable",
        "25%",
        "--json",
    ]);
    assert_eq!(v["maxSurge"], 3);
    assert_eq!(v["maxUnavailable"], 2);
    assert_eq!(v["maxPods"], 13);
    assert_eq!(v["minAvailable"], 8);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["scaleUp"], 3);
    assert_eq!(steps[0]["scaleDown"], 2);
    let last = steps.last().unwrap();
    assert_eq!(
        (last["old"].as_i64(), last["new"].as_i64()),
        (Some(0), Some(10))
    );
}

#[test]
fn rolling_one_replica_surges_first() {
    let v = json(&[
        "plan",
        "rolling",
        "--replicas",
        "1",
        "--max-surge",
        "1",
        "--max-unavailable",
        "0",
        "--json",
    ]);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(
        (steps[0]["scaleUp"].as_i64(), steps[0]["scaleDown"].as_i64()),
        (Some(1), Some(0))
    );
}

#[test]
fn blue_green_totals_each_node() {
    let v = json(&[
        "plan",
        "blue-green",
        "--replicas",
        "3",
        "--connections",
        "3000",
        "--sessions",
        "300",
        "--conn-evict-rate",
        "200",
        "--sess-evict-rate",
        "100",
        "--wait-takeover",
        "5",
        "--wait-health-check",
        "2",
        "--initial-delay",
        "10",
        "--json",
    ]);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    // 2 + 1000/200 + 5 + 100/100 = 13 s per node; 10 + 3 × 13 = 49 s.
    for n in nodes {
        assert_eq!(n["seconds"].as_f64(), Some(13.0));
    }
    assert_eq!(v["totalSeconds"].as_f64(), Some(49.0));
}

#[test]
fn drain_eureka_ribbon() {
    let v = json(&[
        "plan",
        "drain",
        "--propagation",
        "30,30,30",
        "--request-time",
        "5",
        "--json",
    ]);
    assert_eq!(v["preStopSeconds"], 90);
    assert_eq!(v["terminationGracePeriodSeconds"], 95);
}

#[test]
fn tables_are_printed_without_json() {
    let out = sluice(&[
        "plan",
        "blue-green",
        "--replicas",
        "2",
        "--connections",
        "100",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("evicting conns") && text.contains("total"),
        "{text}"
    );
}

#[test]
fn bad_values_name_the_flag_in_one_line() {
    assert_one_line_error(
        &[
            "plan",
            "rolling",
            "--replicas",
            "10",
            "--max-surge",
            "0",
            "--max-unavailable",
            "0",
        ],
        &["--max-surge", "cannot both be 0"],
    );
    assert_one_line_error(
        &[
            "plan",
            "blue-green",
            "--replicas",
            "3",
            "--connections",
            "10",
            "--conn-evict-rate",
            "-5",
        ],
        &["--conn-evict-rate", "got -5"],
    );
    assert_one_line_error(
        &["plan", "rolling", "--replicas", "10", "--max-surge", "150%"],
        &["--max-surge", "150%"],
    );
    assert_one_line_error(&["plan", "rolling", "--replicas", "0"], &["--replicas"]);
    assert_one_line_error(&["plan", "rolling", "--replicas", "ten"], &["--replicas"]);
    assert_one_line_error(
        &["plan", "rolling", "--replicas", "3", "--max-surge", "lots"],
        &["--max-surge"],
    );
    assert_one_line_error(
        &[
            "plan",
            "drain",
            "--propagation",
            "30,-1",
            "--request-time",
            "5",
        ],
        &["--propagation"],
    );
}
