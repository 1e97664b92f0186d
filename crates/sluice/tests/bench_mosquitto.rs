//! `sluice bench conn` against a real mosquitto: the broker's own count
//! agrees with the summary, and a broker restart costs every client exactly
//! one disconnect, with the cause mosquitto produces.

mod support;

use std::time::Duration;

use support::bench_extra::{BenchRun, broker_connected, read_json};
use support::{Mosquitto, TempDir, wait_until};

#[test]
fn two_thousand_clients_agree_with_the_broker_and_a_restart_costs_each_one_disconnect() {
    let broker = Mosquitto::start();
    let port = broker.port;
    let dir = TempDir::new("bench-mosquitto");
    let json = dir.0.join("summary.json");
    let run = BenchRun::start(&[
        "-p",
        &port.to_string(),
        "-c",
        "2000",
        "-i",
        "0",
        "--json",
        json.to_str().unwrap(),
    ]);
    run.wait_connected(2000, Duration::from_secs(30));
    // $SYS counts the asking mosquitto_sub too.
    wait_until(
        "mosquitto to count 2000 clients",
        Duration::from_secs(30),
        || broker_connected(port) == Some(2001),
    );

    // SIGKILL: the kernel closes every socket of the broker.
    drop(broker);
    wait_until("every client to notice", Duration::from_secs(15), || {
        run.connected() == 0
    });
    let _broker = Mosquitto::start_on(port);
    run.wait_connected(2000, Duration::from_secs(30));
    wait_until(
        "the restarted broker to count 2000",
        Duration::from_secs(30),
        || broker_connected(port) == Some(2001),
    );

    let out = run.stop();
    assert!(out.success, "bench failed: {}\n{}", out.stdout, out.stderr);
    let s = read_json(&json);
    assert_eq!(s["clients"], 2000);
    assert_eq!(s["connectedAtEnd"], 2000);
    assert_eq!(s["neverConnected"], 0);
    // Exactly one more disconnect for every client.
    assert_eq!(
        s["disconnectHistogram"],
        serde_json::json!([0, 2000]),
        "{}",
        out.stdout
    );
    assert_eq!(s["maxDisconnectsPerClient"], 1);
    // A killed mosquitto's sockets end with FIN: "closed by peer".
    assert_eq!(
        s["disconnectCauses"],
        serde_json::json!({"closed_by_peer": 2000})
    );
    assert_eq!(
        s["reconnectMillis"]["p50"].as_f64().map(|v| v >= 900.0),
        Some(true),
        "reconnect period 1 s"
    );
    assert!(
        s["deepestDip"]["depth"].as_u64().unwrap() >= 1900,
        "{}",
        s["deepestDip"]
    );
    assert!(
        out.stdout.contains("connected at end   2000 / 2000"),
        "{}",
        out.stdout
    );
}

#[test]
fn workers_split_the_clients_and_merge_their_records() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("bench-workers");
    let json = dir.0.join("summary.json");
    let run = BenchRun::start(&[
        "-p",
        &broker.port.to_string(),
        "-c",
        "300",
        "-i",
        "0",
        "-V",
        "3",
        "--workers",
        "3",
        "--source-ips",
        "127.0.0.2-127.0.0.4",
        "-I",
        "worker-test-%i",
        "--json",
        json.to_str().unwrap(),
    ]);
    run.wait_connected(300, Duration::from_secs(30));
    wait_until(
        "mosquitto to count 300 clients",
        Duration::from_secs(30),
        || broker_connected(broker.port) == Some(301),
    );
    let out = run.stop();
    assert!(out.success, "bench failed: {}\n{}", out.stdout, out.stderr);
    let s = read_json(&json);
    assert_eq!(s["workers"], 3);
    assert_eq!(s["clients"], 300);
    assert_eq!(s["connectedAtEnd"], 300);
    assert_eq!(s["disconnectHistogram"], serde_json::json!([300]));
    assert_eq!(s["connects"], 300);
    assert_eq!(
        s["target"],
        "mqtt 3.1.1 → 127.0.0.1:".to_owned() + &broker.port.to_string()
    );
    let last = s["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["connected"], 300,
        "the parent's timeline sums the workers"
    );
}
