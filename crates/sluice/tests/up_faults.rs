//! `sluice up` when things go wrong: an instance killed, a new revision that
//! cannot start, an abort in the middle of an evacuation, bad control requests.

mod support;
mod up_support;

use std::time::Duration;

use sluice_api::control::{ControlError, UpStatus, path};
use sluice_core::engine::{ConditionStatus, INSTANCES_KNOWN, PROGRESSING, Phase, reason};
use support::bench_extra::read_json;
use support::proxy_extra::http;
use up_support::{Impostor, Up, alive, all_serving, fleet_yaml};

#[test]
fn an_instance_killed_while_stable_is_replaced() {
    let up = Up::start(&fleet_yaml(2, "1", ""));
    let before = up.wait_stable(2, Duration::from_secs(30));
    let victim = &before.instances[0];
    let app = victim.app_pid.unwrap();
    let evacuator = victim.evacuator_pid.unwrap();
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
            s.status.phase == Phase::Stable
                && s.instances.len() == 2
                && all_serving(s)
                && s.instances.iter().all(|i| i.app_pid != Some(app))
        },
    );
    assert!(after.instances.iter().all(|i| i.name != victim.name));
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
    let old = first.status.current_revision.clone();
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
        s.status.phase == Phase::Aborted
            && s.instances.len() == 2
            && s.instances.iter().all(|i| i.revision == old && i.serving)
    });
    let progressing = aborted.status.condition(PROGRESSING).unwrap();
    assert_eq!(
        progressing.reason,
        reason::PROGRESS_DEADLINE_EXCEEDED,
        "{aborted:?}"
    );
    assert_eq!(aborted.total_connections(), Some(40));

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
    let old = first.status.current_revision.clone();
    let (bench, summary, _) = up.connect_clients(60);

    // No upgrade yet: nothing to abort.
    let refused = up.cli(&["abort"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no upgrade in progress"));

    let out = up.apply(&fleet_yaml(2, "2", strategy));
    assert!(String::from_utf8_lossy(&out.stdout).contains("upgrade started"));
    up.wait_status("an evacuation under way", Duration::from_secs(30), |s| {
        s.status.phase == Phase::Evacuating && !s.status.node_evacuations_status.is_empty()
    });
    let out = up.cli(&["abort"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = up.wait_status("back on the old revision", Duration::from_secs(60), |s| {
        s.status.phase == Phase::Aborted
            && s.instances.len() == 2
            && s.instances.iter().all(|i| i.revision == old)
            && all_serving(s)
            && s.total_connections() == Some(60)
    });
    assert!(
        !back.abort_requested,
        "the engine cleared the abort request"
    );

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
        let (code, text) = http(up.admin, "PUT", path::SPEC, Some(body), None).unwrap();
        (code, text)
    };
    let refused = |body: &str| {
        let (code, text) = put(body);
        let e: ControlError = serde_json::from_str(&text).unwrap();
        (code, e.field)
    };
    let yaml = fleet_yaml(1, "1", "").replace("{listen}", &up.listen.to_string());
    assert_eq!(
        refused(&yaml.replace("replicas: 1", "replicas: -2")),
        (400, Some("replicas".to_owned()))
    );
    assert_eq!(
        refused(&yaml.replace("replicas: 1", "replicas: 1\nbogus: 1")),
        (400, Some("bogus".to_owned()))
    );
    assert_eq!(
        refused(&fleet_yaml(1, "1", "").replace("{listen}", "127.0.0.1:1")),
        (400, Some("listen".to_owned()))
    );
    let (code, text) = put(&yaml);
    let applied: sluice_api::control::Applied = serde_json::from_str(&text).unwrap();
    assert_eq!((code, applied.changed), (200, false), "{text}");
    let (code, _) = http(up.admin, "POST", path::ABORT, None, None).unwrap();
    assert_eq!(code, 409);
    let (code, _) = http(up.admin, "GET", path::HEALTHZ, None, None).unwrap();
    assert_eq!(code, 200);
}

/// Sends `signal` (e.g. `-STOP`, `-CONT`) to `pid`.
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} {pid}");
}

#[test]
fn an_evacuator_that_cannot_be_read_is_kept_and_the_upgrade_waits_for_it() {
    // 60 clients on 2 instances, evicted at 5/s: each old instance takes ~6 s.
    let strategy = "updateStrategy:\n  initialDelaySeconds: 0\n  evacuationStrategy:\n    \
                    connEvictRate: 5\n    waitTakeover: 0\n";
    let up = Up::start(&fleet_yaml(2, "1", strategy));
    up.wait_stable(2, Duration::from_secs(30));
    let (bench, summary, _) = up.connect_clients(60);
    let out = up.apply(&fleet_yaml(2, "2", strategy));
    assert!(String::from_utf8_lossy(&out.stdout).contains("upgrade started"));
    let evacuating = up.wait_status("an evacuation under way", Duration::from_secs(30), |s| {
        s.status.phase == Phase::Evacuating
            && s.status
                .node_evacuations_status
                .first()
                .is_some_and(|e| e.stats.current_connected > 5)
    });
    let name = evacuating.status.node_evacuations_status[0].node.clone();
    let old: Vec<String> = evacuating
        .instances
        .iter()
        .filter(|i| i.revision == evacuating.status.current_revision)
        .map(|i| i.name.clone())
        .collect();
    let pid = evacuating.instance(&name).unwrap().evacuator_pid.unwrap();

    // Its admin API answers 500, then garbage: the evacuator is frozen (SIGSTOP,
    // its clients stay connected) and an impostor answers on its admin socket.
    signal(pid, "-STOP");
    let admin: std::net::SocketAddr = evacuating
        .instance(&name)
        .unwrap()
        .admin_addr
        .parse()
        .unwrap();
    let impostor = Impostor::take_over(
        pid,
        admin.port(),
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\noops",
    );
    let unknown_because = |says: &'static str| {
        let name = name.clone();
        move |s: &UpStatus| {
            s.status.condition(INSTANCES_KNOWN).is_some_and(|c| {
                c.status == ConditionStatus::False
                    && c.reason == reason::EVACUATOR_UNKNOWN
                    && c.message.contains(&name)
                    && c.message.contains(says)
            })
        }
    };
    up.wait_status(
        "the status to say the evacuator answers 500",
        Duration::from_secs(30),
        unknown_because("answered 500"),
    );
    impostor.answer(b"HTTP/1.1 200 OK\r\ncontent-length: 17\r\n\r\n{\"state\": \"gone\"}");
    up.wait_status(
        "the status to say the evacuator answers garbage",
        Duration::from_secs(30),
        unknown_because("does not parse"),
    );
    // Several more observations while it stays unreadable: kept, nothing else
    // started, not aborted.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let s = up.try_status().unwrap();
        let i = s
            .instance(&name)
            .expect("an unknown instance is never deleted");
        assert_eq!(i.connections, None, "unknown is not zero: {i:?}");
        assert!(i.unknown.is_some(), "{i:?}");
        assert_eq!(s.status.phase, Phase::Evacuating, "{s:?}");
        assert!(
            old.iter().all(|o| s.instance(o).is_some()),
            "an old instance was deleted while one is unknown: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        up.stdout
            .lock()
            .unwrap()
            .matches(&format!("evacuate {name}:"))
            .count(),
        1,
        "its evacuation was started once"
    );
    drop(impostor);

    // It answers again: the upgrade proceeds to the end.
    signal(pid, "-CONT");
    let done = up.wait_status("the upgrade to finish", Duration::from_secs(90), |s| {
        s.status.phase == Phase::Stable
            && s.status.current_revision == s.status.update_revision
            && s.instances.iter().all(|i| !old.contains(&i.name))
            && s.total_connections() == Some(60)
    });
    let known = done.status.condition(INSTANCES_KNOWN).unwrap();
    assert_eq!(known.status, ConditionStatus::True, "{known:?}");

    let out = bench.stop();
    assert!(out.success, "{}", out.stderr);
    let summary = read_json(&summary);
    assert_eq!(summary["connectedAtEnd"], 60, "{summary}");
    assert!(
        summary["maxDisconnectsPerClient"].as_u64().unwrap() <= 1,
        "a client was disconnected twice: {summary}"
    );
}
