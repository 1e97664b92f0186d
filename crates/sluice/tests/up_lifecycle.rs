//! `sluice up` end to end: three built-in brokers behind their evacuators and
//! the fd-handing front, 300 MQTT clients, a blue-green upgrade through
//! `sluice apply`, `sluice status`, and a clean stop (SIGTERM, and SIGKILL with
//! the parent-death signal) that leaves no process behind.

mod support;
mod up_support;

use std::time::Duration;

use sluice_api::control::{UpStatus, path};
use sluice_api::metrics::{SERVING_INSTANCES, UPSTREAM_CONNECTIONS, label};
use sluice_core::engine::Phase;
use support::bench_extra::read_json;
use support::proxy_extra::{http, metric};
use support::wait_until;
use up_support::{Up, alive, children, connections, fleet_yaml, pids};

const STRATEGY: &str = "updateStrategy:\n  type: BlueGreen\n  initialDelaySeconds: 1\n  \
                        evacuationStrategy:\n    connEvictRate: 200\n    waitTakeover: 0\n";

#[test]
fn up_spreads_clients_upgrades_blue_green_and_stops_cleanly() {
    let mut up = Up::start(&fleet_yaml(3, "1", STRATEGY));
    let first = up.wait_stable(3, Duration::from_secs(30));
    let old_revision = first.status.current_revision.clone();
    assert_eq!(first.fleet, "test");
    assert_eq!(first.listen, up.listen.to_string());

    // `sluice status --json` says the same.
    let out = up.cli(&["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: UpStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli.status.phase, Phase::Stable);
    assert_eq!(cli.instances.len(), 3);
    let text = up.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("phase Stable") && text.contains("CONNECTIONS"),
        "{text}"
    );

    // 300 clients through the front, spread evenly by the least-connected pick.
    let (bench, summary, spread) = up.connect_clients(300);
    for (name, n) in connections(&spread) {
        assert!(
            (95..=105).contains(&n),
            "{name} holds {n} of 300: {spread:?}"
        );
    }
    // The control API's metrics carry one gauge per instance.
    let (code, text) = http(up.admin, "GET", path::METRICS, None, None).unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        metric(&text, UPSTREAM_CONNECTIONS, &[(label::PROTOCOL, "mqtt")]),
        300.0
    );
    assert_eq!(metric(&text, SERVING_INSTANCES, &[]), 3.0);
    let old_pids = pids(&spread);
    assert_eq!(old_pids.len(), 6);

    // Nothing changed: unchanged. A new version: a blue-green upgrade.
    let same = up.apply(&fleet_yaml(3, "1", STRATEGY));
    assert_eq!(String::from_utf8_lossy(&same.stdout).trim(), "unchanged");
    let out = up.apply(&fleet_yaml(3, "2", STRATEGY));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("upgrade started"),
        "{said}"
    );
    let done = up.wait_status(
        "Stable on the new revision with 300 clients",
        Duration::from_secs(60),
        |s| {
            s.status.phase == Phase::Stable
                && s.status.current_revision != old_revision
                && s.instances.len() == 3
                && s.instances
                    .iter()
                    .all(|i| i.revision == s.status.current_revision && i.ready)
                && s.total_connections() == Some(300)
        },
    );
    for (name, n) in connections(&done) {
        assert!(
            (80..=120).contains(&n),
            "after the upgrade {name} holds {n} of 300: {done:?}"
        );
    }
    for pid in &old_pids {
        assert!(!alive(*pid), "old instance process {pid} still runs");
    }
    let stdout = up.stdout.lock().unwrap().clone();
    for line in [
        "phase Provisioning",
        "phase Evacuating",
        "evacuate ",
        "delete ",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }

    let out = bench.stop();
    assert!(out.success, "{}", out.stderr);
    let summary = read_json(&summary);
    assert_eq!(summary["connectedAtEnd"], 300, "{summary}");
    assert!(
        summary["maxDisconnectsPerClient"].as_u64().unwrap() <= 1,
        "a client was disconnected more than once: {summary}"
    );

    // SIGTERM: drains, exits 0, leaves nothing.
    let new_pids = pids(&done);
    let up_pid = up.pid();
    assert!(
        up.sigterm_and_wait(Duration::from_secs(30)),
        "sluice up did not exit 0"
    );
    for pid in new_pids {
        assert!(!alive(pid), "instance process {pid} outlived sluice up");
    }
    assert!(children(up_pid).is_empty());
    assert!(
        up.stdout
            .lock()
            .unwrap()
            .contains("stopped: every instance drained")
    );
}

#[test]
fn a_changed_protocol_is_an_upgrade_that_leaves_no_mixed_fleet() {
    let up = Up::start(&fleet_yaml(2, "1", STRATEGY));
    let first = up.wait_stable(2, Duration::from_secs(30));
    let (bench, summary, _) = up.connect_clients(40);

    // Same app and version, another protocol: every instance is replaced.
    let tcp = fleet_yaml(2, "1", STRATEGY).replace("protocol: mqtt", "protocol: tcp");
    let out = up.apply(&tcp);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("upgrade started"),
        "{said}"
    );
    let done = up.wait_status(
        "Stable on the new revision, every instance on it",
        Duration::from_secs(60),
        |s| {
            s.status.phase == Phase::Stable
                && s.status.current_revision != first.status.current_revision
                && s.instances.len() == 2
                && s.instances
                    .iter()
                    .all(|i| i.revision == s.status.current_revision && i.ready)
                && s.total_connections() == Some(40)
        },
    );
    let old: Vec<&str> = first.instances.iter().map(|i| i.name.as_str()).collect();
    assert!(
        done.instances
            .iter()
            .all(|i| !old.contains(&i.name.as_str())),
        "an instance of the old protocol is left: {done:?}"
    );
    let out = bench.stop();
    assert!(out.success, "{}", out.stderr);
    let summary = read_json(&summary);
    assert_eq!(summary["connectedAtEnd"], 40, "{summary}");
    assert!(
        summary["maxDisconnectsPerClient"].as_u64().unwrap() <= 1,
        "{summary}"
    );
}

#[test]
fn sigkill_of_sluice_up_takes_every_instance_with_it() {
    let up = Up::start(&fleet_yaml(2, "1", ""));
    let status = up.wait_stable(2, Duration::from_secs(30));
    let all = pids(&status);
    assert_eq!(all.len(), 4);
    let mut child = up.child;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    wait_until(
        "every instance process to die",
        Duration::from_secs(10),
        || all.iter().all(|p| !alive(*p)),
    );
}

#[test]
fn control_commands_say_when_no_fleet_runs() {
    let admin = format!("127.0.0.1:{}", support::free_port());
    for args in [vec!["status"], vec!["abort"]] {
        let out = std::process::Command::new(support::sluice_bin())
            .args(&args)
            .args(["--admin", &admin])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!(
                "no fleet answers on {admin}: is `sluice up` running?"
            )),
            "{err}"
        );
    }
}
