//! `sluice demo --app http` with the real binary: HTTP/1.1 keep-alive clients
//! (the bench's request loop) through a fleet of `sluice serve-http` with
//! `protocol: http`. Blue-green and rolling evacuate with `Connection: close`
//! and lose no request, each client leaving once; the naive restart stops
//! old instances one after the other like a plain rolling update (app first),
//! so requests fail with socket errors, and the clients it cuts land on the
//! next old instance and are cut again. `--app ws` and `--app grpc` run the
//! bench's WebSocket and h2c (gRPC-shaped) clients through the same fleet:
//! blue-green evacuates them (Close 1001, GOAWAY) without a failed message
//! or call, while naive's cut connections fail some (socket errors).

mod support;

use std::process::{Command, Stdio};

use serde_json::Value;
use support::{TempDir, sluice_bin};

const CLIENTS: u64 = 200;

fn strategy<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["strategies"]
        .as_array()
        .expect("strategies")
        .iter()
        .find(|s| s["strategy"] == name)
        .unwrap_or_else(|| panic!("no {name} in {summary:#}"))
}

/// Runs `sluice demo --app APP --strategy STRATEGY --rate RATE` with
/// `clients` clients on two replicas; returns summary.json, the progress on
/// stderr and report.html, after checking that the fleet is `sluice serve-http`
/// behind `protocol: http`.
fn demo(app: &str, strategy: &str, clients: u64, rate: u32) -> (Value, String, String) {
    let dir = TempDir::new(&format!("demo-{app}"));
    let out = Command::new(sluice_bin())
        .args(["demo", "--app", app, "--strategy", strategy, "--clients"])
        .arg(clients.to_string())
        .args([
            "--rate",
            &rate.to_string(),
            "--replicas",
            "2",
            "--json",
            "--out",
        ])
        .arg(&dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice demo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "sluice demo failed:\n{stderr}");
    let s: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{stderr}"));
    assert_eq!(s["app"], app);
    let folder = if strategy == "all" {
        "blue-green"
    } else {
        strategy
    };
    let fleet = std::fs::read_to_string(dir.0.join(folder).join("fleet.yaml")).unwrap();
    assert!(fleet.contains("protocol: http"), "{fleet}");
    assert!(fleet.contains("serve-http"), "{fleet}");
    let report = std::fs::read_to_string(dir.0.join("report.html")).expect("report.html");
    (s, stderr, report)
}

/// Promise 5 read for request-counting clients: every client connected at
/// the end, no non-2xx, no socket error.
fn assert_nothing_lost(r: &Value, name: &str, clients: u64, stderr: &str) {
    let context = format!("{r:#}\n{stderr}");
    let lost = &r["promises"]["nothingLost"];
    assert!(r.get("aborted").is_none(), "{context}");
    assert_eq!(lost["non2xx"], 0, "{name}: {context}");
    assert_eq!(lost["socketErrors"], 0, "{name}: {context}");
    assert_eq!(lost["connectedAtEnd"], clients, "{name}: {context}");
    assert_eq!(lost["pass"], true, "{name}: {context}");
}

#[test]
fn http_blue_green_loses_no_request_and_naive_fails_requests_and_cuts_clients_twice() {
    let (s, stderr, report) = demo("http", "all", CLIENTS, 500);

    // Blue-green and rolling evacuate: every request answered 2xx, no socket
    // error, each client left gracefully at most once, all back at the end.
    for name in ["blue-green", "rolling"] {
        let r = strategy(&s, name);
        assert_nothing_lost(r, name, CLIENTS, &stderr);
        let context = format!("{r:#}\n{stderr}");
        assert!(
            r["promises"]["once"]["maxDisconnectsPerClient"]
                .as_u64()
                .unwrap()
                <= 1,
            "{name}: {context}"
        );
        let causes = r["disconnectCauses"].as_object().unwrap();
        assert!(
            causes.keys().all(|k| k == "connection_close"),
            "{name}: only graceful leaves: {context}"
        );
        assert!(
            causes.get("connection_close").and_then(Value::as_u64) >= Some(CLIENTS / 2),
            "{name}: the old instances' clients were evicted with Connection: close: {context}"
        );
    }

    // Naive replaces the old instances one at a time the way a plain rolling
    // update does (the app is stopped first, its connections close under the
    // clients): clients are cut more than once (promise 2 fails) and the
    // requests they send on the closed connections fail, the read errors of
    // the ingress articles (promise 5 fails), while blue-green had none.
    let naive = strategy(&s, "naive");
    let context = format!("{naive:#}\n{stderr}");
    let once = &naive["promises"]["once"];
    assert!(
        once["maxDisconnectsPerClient"].as_u64().unwrap() >= 2,
        "naive: some client is cut twice: {context}"
    );
    assert_eq!(once["pass"], false, "{context}");
    let lost = &naive["promises"]["nothingLost"];
    assert!(
        lost["socketErrors"].as_u64() > Some(0),
        "naive: the cut connections make requests fail: {context}"
    );
    assert_eq!(lost["pass"], false, "{context}");

    // The report shows requests and errors over time for each strategy,
    // side by side.
    assert_eq!(
        report.matches(">\nHTTP errors per second\n</text>").count(),
        3,
        "one HTTP chart per strategy"
    );
    assert!(report.contains("grid-template-rows:repeat(7,auto)"));
}

/// `--app ws|grpc` blue-green: all five promises hold, and the old
/// instances' clients left through the protocol's own graceful close; naive
/// cuts clients twice and fails messages or calls. At 20
/// connections a second, each old instance's 20 take about a second: long
/// enough for the demo's 100 ms status polls to see the evacuators' pace.
fn blue_green_keeps_every_promise(app: &str, graceful: &str) {
    const FEW: u64 = 40;
    let (s, stderr, _) = demo(app, "blue-green", FEW, 20);
    let r = strategy(&s, "blue-green");
    assert_nothing_lost(r, app, FEW, &stderr);
    let context = format!("{r:#}\n{stderr}");
    for promise in ["paced", "once", "capacity", "balanced", "nothingLost"] {
        assert_eq!(r["promises"][promise]["pass"], true, "{promise}: {context}");
    }
    let causes = r["disconnectCauses"].as_object().unwrap();
    assert!(
        causes.keys().all(|k| k == graceful),
        "only {graceful} leaves: {context}"
    );
    assert!(
        causes.get(graceful).and_then(Value::as_u64) >= Some(FEW / 4),
        "the old instances' clients were evicted with {graceful}: {context}"
    );

    let (s, stderr, _) = demo(app, "naive", FEW, 20);
    let naive = strategy(&s, "naive");
    let context = format!("{naive:#}\n{stderr}");
    let lost = &naive["promises"]["nothingLost"];
    assert!(lost["socketErrors"].as_u64() > Some(0), "{context}");
    assert_eq!(lost["pass"], false, "{context}");
    assert_eq!(naive["promises"]["once"]["pass"], false, "{context}");
}

#[test]
fn ws_blue_green_closes_with_1001_and_loses_no_message_and_naive_fails_some() {
    blue_green_keeps_every_promise("ws", "ws_close:1001");
}

#[test]
fn grpc_blue_green_goes_away_and_loses_no_call_and_naive_fails_some() {
    blue_green_keeps_every_promise("grpc", "goaway");
}
