//! `sluice demo --app http` with the real binary: HTTP/1.1 keep-alive clients
//! (the bench's request loop) through a fleet of `sluice serve-http` with
//! `protocol: http`. Blue-green and rolling evacuate with `Connection: close`
//! and lose no request, each client leaving once; the naive restart stops
//! old instances one after the other like a plain rolling update (app first),
//! so requests fail with socket errors, and the clients it cuts land on the
//! next old instance and are cut again.

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

#[test]
fn http_blue_green_loses_no_request_and_naive_fails_requests_and_cuts_clients_twice() {
    let dir = TempDir::new("demo-http");
    let clients = CLIENTS.to_string();
    let out = Command::new(sluice_bin())
        .args(["demo", "--app", "http", "--strategy", "all", "--clients"])
        .arg(&clients)
        .args(["--replicas", "2", "--json", "--out"])
        .arg(&dir.0)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice demo");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "sluice demo failed:\n{stderr}");
    let s: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--json printed no JSON ({e}):\n{stderr}"));
    assert_eq!(s["app"], "http");
    let fleet = std::fs::read_to_string(dir.0.join("blue-green").join("fleet.yaml")).unwrap();
    assert!(fleet.contains("protocol: http"), "{fleet}");
    assert!(fleet.contains("serve-http"), "{fleet}");

    // Blue-green and rolling evacuate: every request answered 2xx, no socket
    // error, each client left gracefully at most once, all back at the end.
    for name in ["blue-green", "rolling"] {
        let r = strategy(&s, name);
        let context = format!("{r:#}\n{stderr}");
        let lost = &r["promises"]["nothingLost"];
        assert!(r.get("aborted").is_none(), "{context}");
        assert_eq!(lost["non2xx"], 0, "{name}: {context}");
        assert_eq!(lost["socketErrors"], 0, "{name}: {context}");
        assert_eq!(lost["connectedAtEnd"], CLIENTS, "{name}: {context}");
        assert_eq!(lost["pass"], true, "{name}: {context}");
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
    let report = std::fs::read_to_string(dir.0.join("report.html")).unwrap();
    assert_eq!(
        report.matches(">\nHTTP errors per second\n</text>").count(),
        3,
        "one HTTP chart per strategy"
    );
    assert!(report.contains("grid-template-rows:repeat(7,auto)"));
}
