//! `sluice up` refuses a bad fleet file (or a busy port) with one line naming
//! the field, before starting anything.

mod support;

use std::net::TcpListener;
use std::process::Command;

use support::{TempDir, free_port, sluice_bin};

/// Runs `sluice up` on `yaml`; returns (exit ok, stderr, stdout, run dir created).
fn up(yaml: &str, admin: Option<u16>) -> (bool, String, String, bool) {
    let dir = TempDir::new("up-bad");
    let file = dir.0.join("fleet.yaml");
    std::fs::write(&file, yaml).unwrap();
    let run = dir.0.join("run");
    let admin = admin.unwrap_or_else(free_port);
    let out = Command::new(sluice_bin())
        .arg("up")
        .arg("-f")
        .arg(&file)
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--run-dir")
        .arg(&run)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        run.exists(),
    )
}

fn good(listen: u16) -> String {
    format!(
        "name: t\nreplicas: 2\nlisten: 127.0.0.1:{listen}\napp:\n  command: sluice broker --port {{port}}\n"
    )
}

fn assert_refused(yaml: &str, admin: Option<u16>, needles: &[&str]) {
    let (ok, err, out, started) = up(yaml, admin);
    assert!(!ok, "sluice up accepted:\n{yaml}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
    assert!(out.is_empty(), "sluice up printed (so it started): {out}");
    assert!(!started, "the run folder was created: something started");
}

#[test]
fn unknown_field() {
    let yaml = good(free_port()).replace("replicas: 2", "replicas: 2\nreplica: 3");
    assert_refused(&yaml, None, &["replica", "fleet.yaml:3"]);
}

#[test]
fn negative_replicas() {
    let yaml = good(free_port()).replace("replicas: 2", "replicas: -3");
    assert_refused(&yaml, None, &["replicas", "-3"]);
}

#[test]
fn missing_command() {
    let yaml = good(free_port()).replace(
        "  command: sluice broker --port {port}\n",
        "  env: {A: b}\n",
    );
    assert_refused(&yaml, None, &["app.command", "missing"]);
}

#[test]
fn listen_port_in_use() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    assert_refused(&good(port), None, &["listen", "already in use"]);
}

#[test]
fn admin_port_in_use() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    assert_refused(&good(free_port()), Some(port), &["--admin", "--admin"]);
}

#[test]
fn apply_checks_the_file_before_sending() {
    let dir = TempDir::new("apply-bad");
    let file = dir.0.join("fleet.yaml");
    std::fs::write(
        &file,
        good(free_port()).replace("replicas: 2", "replicas: -1"),
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .args([
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--admin",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("replicas") && err.lines().count() == 1,
        "{err}"
    );
}
