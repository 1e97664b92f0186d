//! Every subcommand logs to stderr through one `tracing` set-up that honours
//! `RUST_LOG`: `sluice broker` says it started (and says nothing with
//! `RUST_LOG=off`), and `sluice up`'s front logs a failed hand-off of a
//! connection to an evacuator instead of swallowing it.

mod support;
mod up_support;

use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{ChildGuard, collect_lines, free_port, sluice_bin, wait_for_port, wait_until};
use up_support::{Up, fleet_yaml};

/// Runs `sluice broker` with `RUST_LOG=filter` until it accepts connections,
/// then stops it; returns what it wrote to stderr.
fn broker_log(filter: &str) -> String {
    let port = free_port();
    let mut child = ChildGuard(
        Command::new(sluice_bin())
            .args(["broker", "--port", &port.to_string()])
            .env("RUST_LOG", filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice broker"),
    );
    let stderr = collect_lines(child.0.stderr.take().unwrap(), false);
    wait_for_port(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(30),
    );
    if filter != "off" {
        wait_until("the broker's start line", Duration::from_secs(30), || {
            stderr.lock().unwrap().contains("starting the MQTT broker")
        });
    }
    let _ = child.0.kill();
    let _ = child.0.wait();
    stderr.lock().unwrap().clone()
}

#[test]
fn broker_logs_to_stderr_as_rust_log_says() {
    let debug = broker_log("debug");
    assert!(
        debug
            .lines()
            .any(|l| l.contains("INFO") && l.contains("starting the MQTT broker")),
        "{debug}"
    );
    let off = broker_log("off");
    assert!(off.is_empty(), "RUST_LOG=off still logged: {off}");
}

#[test]
fn a_failed_hand_off_is_logged() {
    let up = Up::start(&fleet_yaml(1, "1", ""));
    let status = up.wait_stable(1, Duration::from_secs(60));
    let name = status.instances[0].name.clone();
    // The front connects to the evacuator's socket at the first hand-off; with
    // the socket file gone, that connect fails.
    let socket = up.dir.join("run").join(format!("{name}.sock"));
    std::fs::remove_file(&socket).unwrap_or_else(|e| panic!("remove {}: {e}", socket.display()));
    let client = TcpStream::connect(up.listen).expect("connect to the front");
    wait_until(
        "the front to log the failed hand-off",
        Duration::from_secs(30),
        || {
            let log = up.stderr.lock().unwrap();
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("hand-off failed") && l.contains(&name))
        },
    );
    drop(client);
}
