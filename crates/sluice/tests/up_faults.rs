//! `sluice up` when things go wrong: an instance killed, a new revision that
//! cannot start, an abort in the middle of an evacuation, bad control requests.

mod support;
mod up_support;

use std::time::Duration;

use support::bench_extra::read_json;
use support::proxy_extra::http;
use up_support::{Up, alive, fleet_yaml, instances, total_connections};

#[test]
fn an_instance_killed_while_stable_is_replaced() {
    let up = Up::start(&fleet_yaml(2, "1", ""));
    let before = up.wait_stable(2, Duration::from_secs(30));
    let victim = &instances(&before)[0];
    let (name, app) = (
        victim["name"].as_str().unwrap().to_owned(),
        victim["appPid"].as_u64().unwrap() as u32,
    );
    let evacuator = victim["evacuatorPid"].as_u64().unwrap() as u32;
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &app.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let after = up.wait_status(
        "the killed instance replaced",
        Duration::from_secs(30),
        |s| {
            s["phase"] == "Stable"
                && instances(s).len() == 2
                && instances(s)
                    .iter()
                    .all(|i| i["ready"] == true && i["serving"] == true)
                && instances(s)
                    .iter()
                    .all(|i| i["appPid"].as_u64() != Some(u64::from(app)))
        },
    );
    let _ = (name, after);
    support::wait_until(
        "the failed instance's evacuator to stop",
        Duration::from_secs(20),
        || !alive(evacuator),
    );
    assert!(
        up.stdout
            .lock()
            .unwrap()
            .contains("failed: its app exited by itself")
    );
}

#[test]
fn a_new_revision_that_cannot_start_is_aborted_and_nobody_is_disconnected() {
    let strategy = "updateStrategy:\n  progressDeadlineSeconds: 3\n  initialDelaySeconds: 1\n";
    let up = Up::start(&fleet_yaml(2, "1", strategy));
    let first = up.wait_stable(2, Duration::from_secs(30));
    let old = first["currentRevision"].as_str().unwrap().to_owned();
    let (bench, summary, _) = up.connect_clients(40);

    let broken =
        fleet_yaml(2, "2", strategy).replace("sluice broker --port {port}", "false {port}");
    let out = up.apply(&broken);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let aborted = up.wait_status("the update aborted", Duration::from_secs(30), |s| {
        s["phase"] == "Aborted"
            && instances(s).len() == 2
            && instances(s)
                .iter()
                .all(|i| i["revision"] == old.as_str() && i["serving"] == true)
    });
    let progressing = aborted["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(
        progressing["reason"], "ProgressDeadlineExceeded",
        "{aborted}"
    );
    assert_eq!(total_connections(&aborted), 40);

    let out = bench.stop();
    assert!(out.success, "{}", out.stderr);
    let summary = read_json(&summary);
    assert_eq!(summary["disconnects"], 0, "{summary}");
    assert_eq!(summary["connectedAtEnd"], 40, "{summary}");
}

#[test]
fn abort_during_a_slow_evacuation_returns_to_the_old_revision() {
    // 60 clients on 2 instances, evicted at 5/s: each old instance takes ~6 s.
    let strategy = "updateStrategy:\n  initialDelaySeconds: 0\n  evacuationStrategy:\n    \
                    connEvictRate: 5\n    waitTakeover: 0\n";
    let up = Up::start(&fleet_yaml(2, "1", strategy));
    let first = up.wait_stable(2, Duration::from_secs(30));
    let old = first["currentRevision"].as_str().unwrap().to_owned();
    let (bench, summary, _) = up.connect_clients(60);

    // No upgrade yet: nothing to abort.
    let refused = up.cli(&["abort"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no upgrade in progress"));

    let out = up.apply(&fleet_yaml(2, "2", strategy));
    assert!(String::from_utf8_lossy(&out.stdout).contains("upgrade started"));
    up.wait_status("an evacuation under way", Duration::from_secs(30), |s| {
        s["phase"] == "Evacuating"
            && s["nodeEvacuationsStatus"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
    });
    let out = up.cli(&["abort"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = up.wait_status("back on the old revision", Duration::from_secs(60), |s| {
        s["phase"] == "Aborted"
            && instances(s).len() == 2
            && instances(s).iter().all(|i| {
                i["revision"] == old.as_str() && i["ready"] == true && i["serving"] == true
            })
            && total_connections(s) == 60
    });
    assert_eq!(back["abortRequested"], false);

    let out = bench.stop();
    assert!(out.success, "{}", out.stderr);
    let summary = read_json(&summary);
    assert_eq!(summary["connectedAtEnd"], 60, "{summary}");
}

#[test]
fn the_control_api_refuses_bad_specs_with_the_field() {
    let up = Up::start(&fleet_yaml(1, "1", ""));
    up.wait_stable(1, Duration::from_secs(30));
    let put = |body: &str| {
        let (code, text) = http(up.admin, "PUT", "/spec", Some(body), None).unwrap();
        (
            code,
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        )
    };
    let yaml = fleet_yaml(1, "1", "").replace("{listen}", &up.listen.to_string());
    let (code, body) = put(&yaml.replace("replicas: 1", "replicas: -2"));
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("replicas")),
        "{body}"
    );
    let (code, body) = put(&yaml.replace("replicas: 1", "replicas: 1\nbogus: 1"));
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("bogus")),
        "{body}"
    );
    let (code, body) = put(&fleet_yaml(1, "1", "").replace("{listen}", "127.0.0.1:1"));
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("listen")),
        "{body}"
    );
    let (code, body) = put(&yaml);
    assert_eq!(
        (code, &body["changed"]),
        (200, &serde_json::json!(false)),
        "{body}"
    );
    let (code, _) = http(up.admin, "POST", "/abort", None, None).unwrap();
    assert_eq!(code, 409);
    let (code, _) = http(up.admin, "GET", "/healthz", None, None).unwrap();
    assert_eq!(code, 200);
}
