//! HTTP/2 (gRPC) evacuation with real peers: Python `grpcio` clients call a
//! `grpcio` echo server in a loop through `sluice proxy --protocol http`
//! (HTTP/2 with prior knowledge) while one of two servers is evacuated. No
//! call may fail, and every evacuated connection must end through the
//! two-phase GOAWAY with its PING acknowledged (`reason="goaway"`).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::http_extra::{grpc_server, peer, python_with};
use support::proxy_extra::{Proxy, metric};
use support::wait_until;

/// Client threads, each with its own channel (HTTP/2 connection).
const THREADS: u32 = 8;
/// How long the clients call.
const SECONDS: u32 = 10;

#[test]
fn grpc_evacuation_by_two_phase_goaway_fails_no_call() {
    let (_a, a) = grpc_server();
    let (_b, b) = grpc_server();
    let proxy = Proxy::start(&[("a", a), ("b", b)], &["--protocol", "http"]);
    let python = python_with("grpc", "grpcio");
    let client = Command::new(python)
        .arg(peer("grpc_echo_client.py"))
        .args([
            &proxy.listen.to_string(),
            &THREADS.to_string(),
            &SECONDS.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the gRPC clients");
    wait_until("every channel connected", Duration::from_secs(20), || {
        proxy.connections("a") + proxy.connections("b") == u64::from(THREADS)
    });
    let on_a = proxy.connections("a");
    assert!(on_a > 0, "no channel on upstream a");
    proxy.ok(
        "POST",
        "/upstreams/a/evacuation",
        Some(r#"{"conn_evict_rate": 200, "wait_health_check": 0}"#),
    );
    wait_until("upstream a empty", Duration::from_secs(20), || {
        proxy.connections("a") == 0
    });
    let out = client.wait_with_output().expect("wait for the clients");
    assert!(out.status.success(), "the gRPC clients failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let totals: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    let evictions: Vec<String> = proxy
        .metrics()
        .lines()
        .filter(|l| l.starts_with("sluice_evictions_total"))
        .map(str::to_owned)
        .collect();
    eprintln!("grpcio through --protocol http: {totals}; {evictions:?}");
    assert!(totals["ok"].as_u64() > Some(0), "{totals}");
    assert_eq!(totals["failed"].as_u64(), Some(0), "{totals}");
    let goaways = metric(
        &proxy.metrics(),
        "sluice_evictions_total",
        &[("upstream", "a"), ("reason", "goaway")],
    );
    assert_eq!(
        goaways as u64, on_a,
        "each evacuated connection got the two-phase GOAWAY"
    );
}
