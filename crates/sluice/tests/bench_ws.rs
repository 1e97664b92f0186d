//! `sluice bench conn --protocol ws`: against real Python `websockets` echo
//! servers behind `sluice proxy` while one is evacuated (every message
//! echoed, each evicted client closed once with 1001, no error), and against
//! small servers that refuse the upgrade (non-2xx) or drop the connection
//! without a Close (socket errors).

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::http_extra::ws_echo_server;
use support::proxy_extra::Proxy;
use support::{ChildGuard, TempDir, sluice_bin, wait_until};

const CLIENTS: u64 = 20;

/// Starts the bench for `seconds` against `port`, writing `json`.
fn start_bench(port: u16, json: &std::path::Path, seconds: u32) -> ChildGuard {
    let child = Command::new(sluice_bin())
        .args(["bench", "conn", "--protocol", "ws", "-q", "-c"])
        .arg(CLIENTS.to_string())
        .args(["--reconnect-period", "100", "--duration"])
        .arg(seconds.to_string())
        .arg("-p")
        .arg(port.to_string())
        .arg("--json")
        .arg(json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice bench");
    ChildGuard(child)
}

/// Waits for the bench; checks its text summary names the messages; returns
/// its JSON summary.
fn finish(mut bench: ChildGuard, json: &std::path::Path) -> Value {
    let (status, stderr) = bench.exit_within(Duration::from_secs(60));
    assert!(status.success(), "bench failed: {stderr}");
    let mut text = String::new();
    bench
        .0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("ws messages"), "{text}");
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
fn evicted_websocket_clients_leave_once_with_the_close_code_and_no_error() {
    let dir = TempDir::new("bench-ws-evacuation");
    let (_a, a) = ws_echo_server("ws_echo_server.py");
    let (_b, b) = ws_echo_server("ws_echo_server.py");
    let proxy = Proxy::start(&[("a", a), ("b", b)], &["--protocol", "http"]);
    let json = dir.0.join("ws.json");
    let bench = start_bench(proxy.listen.port(), &json, 6);
    wait_until("every client connected", Duration::from_secs(20), || {
        proxy.connections("a") + proxy.connections("b") == CLIENTS
    });
    let on_a = proxy.connections("a");
    assert!(on_a > 0, "no client on upstream a");
    proxy.ok(
        "POST",
        "/upstreams/a/evacuation",
        Some(r#"{"conn_evict_rate": 100, "wait_health_check": 0, "ws_evict": "lossless"}"#),
    );
    wait_until("upstream a empty", Duration::from_secs(20), || {
        proxy.connections("a") == 0
    });
    let s = finish(bench, &json);
    assert_eq!(s["protocol"], "ws");
    assert!(s["requests"].as_u64().unwrap() >= 100, "{s:#}");
    assert_eq!(s["non2xx"], 0, "{s:#}");
    assert_eq!(s["socketErrors"], 0, "{s:#}");
    let causes = s["disconnectCauses"].as_object().unwrap();
    assert_eq!(
        causes.keys().collect::<Vec<_>>(),
        ["ws_close:1001"],
        "only the evacuation's Closes: {s:#}"
    );
    assert_eq!(causes["ws_close:1001"], on_a, "{s:#}");
    assert!(s["maxDisconnectsPerClient"].as_u64() <= Some(1), "{s:#}");
    assert_eq!(s["connectedAtEnd"], CLIENTS, "{s:#}");
}

/// Reads an HTTP request head; false at the end of the stream.
fn read_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// Every other connection's upgrade is refused with 503; the others are
/// accepted, get one message echoed and are then dropped without a Close.
fn refuse_or_drop(mut s: TcpStream, refuse: bool) {
    if !read_head(&mut s) {
        return;
    }
    if refuse {
        let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let _ = s.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: x\r\n\r\n",
    );
    // One short masked text frame: 2 header bytes, 4 of mask, the payload.
    let mut head = [0u8; 6];
    if s.read_exact(&mut head).is_err() {
        return;
    }
    let mut payload = vec![0u8; usize::from(head[1] & 0x7F)];
    if s.read_exact(&mut payload).is_err() {
        return;
    }
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= head[2 + i % 4];
    }
    let mut echo = vec![0x81, payload.len() as u8];
    echo.extend_from_slice(&payload);
    let _ = s.write_all(&echo);
    // Then gone, without a Close.
}

#[test]
fn a_refused_upgrade_is_non_2xx_and_a_drop_without_close_is_a_socket_error() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, s) in listener.incoming().flatten().enumerate() {
            std::thread::spawn(move || refuse_or_drop(s, n % 2 == 0));
        }
    });
    let dir = TempDir::new("bench-ws-drop");
    let json = dir.0.join("drop.json");
    let s = finish(start_bench(port, &json, 3), &json);
    let non2xx = s["non2xx"].as_u64().unwrap();
    let errors = s["socketErrors"].as_u64().unwrap();
    assert!(non2xx >= 20, "{s:#}");
    assert!(errors >= 20, "{s:#}");
    assert!(s["requests"].as_u64().unwrap() >= non2xx + errors, "{s:#}");
    let causes = s["disconnectCauses"].as_object().unwrap();
    assert!(
        causes.keys().all(|k| !k.starts_with("ws_close")),
        "no Close was sent: {s:#}"
    );
}
