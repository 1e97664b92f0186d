//! The bench's clients against servers that behave in known ways: the
//! accept-and-CONNACK sink (MQTT 3.1.1 keep-alive, raw TCP with traffic),
//! a server that never answers PINGREQ, and one that redirects with a
//! DISCONNECT carrying a Server Reference.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::TempDir;
use support::bench_extra::{BenchRun, REFERENCE, Script, ScriptedServer, Sink, bench, read_json};

#[test]
fn mqtt_311_keepalive_and_tcp_clients_hold_against_the_sink() {
    let sink = Sink::start();
    let port = sink.port.to_string();
    let dir = TempDir::new("bench-sink");
    let mqtt_json = dir.0.join("mqtt.json");
    let tcp_json = dir.0.join("tcp.json");
    // Keep-alive 1 s: PINGREQs go out and are answered, nobody times out.
    let mqtt = BenchRun::start(&[
        "-p",
        &port,
        "-c",
        "200",
        "-i",
        "0",
        "-V",
        "3",
        "-k",
        "1",
        "--publish-rate",
        "2",
        "--subscribe",
        "t/%i",
        "--json",
        mqtt_json.to_str().unwrap(),
    ]);
    let tcp = BenchRun::start(&[
        "-p",
        &port,
        "-c",
        "200",
        "-i",
        "0",
        "--protocol",
        "tcp",
        "--publish-rate",
        "5",
        "--json",
        tcp_json.to_str().unwrap(),
    ]);
    mqtt.wait_connected(200, Duration::from_secs(20));
    tcp.wait_connected(200, Duration::from_secs(20));
    // Three keep-alive periods.
    support::wait_until("three keep-alive periods", Duration::from_secs(10), || {
        mqtt.stderr_lines() >= 4
    });
    for (run, json) in [(mqtt, &mqtt_json), (tcp, &tcp_json)] {
        let out = run.stop();
        assert!(out.success, "{}\n{}", out.stdout, out.stderr);
        let s = read_json(json);
        assert_eq!(s["clients"], 200);
        assert_eq!(s["connectedAtEnd"], 200);
        assert_eq!(s["disconnects"], 0, "{}", out.stdout);
        assert_eq!(s["disconnectHistogram"], serde_json::json!([200]));
    }
}

#[test]
fn a_silent_server_is_a_keepalive_timeout() {
    let server = ScriptedServer::start(Script::Silent);
    let dir = TempDir::new("bench-keepalive");
    let json = dir.0.join("s.json");
    let out = bench(&[
        "-p",
        &server.port.to_string(),
        "-c",
        "3",
        "-k",
        "1",
        "--reconnect-period",
        "100",
        "--duration",
        "3.5",
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    let s = read_json(&json);
    // PINGREQ after 1 s, no answer within 1 s more: lost at ~2 s.
    let causes = s["disconnectCauses"].as_object().unwrap();
    assert_eq!(
        causes.keys().collect::<Vec<_>>(),
        ["keepalive_timeout"],
        "{}",
        out.stdout
    );
    assert!(s["maxDisconnectsPerClient"].as_u64().unwrap() >= 1);
    assert!(out.stdout.contains("keep-alive timeout"), "{}", out.stdout);
}

#[test]
fn a_redirecting_server_is_a_server_disconnect_with_its_reference() {
    let server = ScriptedServer::start(Script::Redirect);
    let dir = TempDir::new("bench-redirect");
    let json = dir.0.join("s.json");
    let out = bench(&[
        "-p",
        &server.port.to_string(),
        "-c",
        "4",
        "--reconnect-period",
        "200",
        "--duration",
        "1.1",
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.success, "{}\n{}", out.stdout, out.stderr);
    let s = read_json(&json);
    let lost = s["disconnects"].as_u64().unwrap();
    assert!(lost >= 4, "{}", out.stdout);
    assert_eq!(
        s["disconnectCauses"]["server_disconnect:0x9c"].as_u64(),
        Some(lost)
    );
    assert_eq!(s["serverReferences"][REFERENCE].as_u64(), Some(lost));
    // A handshake cut short by the stop is accepted but never connected.
    assert!(s["connects"].as_u64().unwrap() <= server.accepted.load(Ordering::SeqCst));
    assert!(
        out.stdout
            .contains("server DISCONNECT 0x9c (use another server)"),
        "{}",
        out.stdout
    );
}
