//! `sluice bench conn --protocol ws|h2` with real servers: Python
//! `websockets` and `grpcio` echo servers behind `sluice proxy` while one is
//! evacuated (every request answered, each evicted client leaving once and
//! gracefully, no error), and servers that misbehave in known ways (a refused
//! upgrade is a non-2xx; a connection dropped without a Close or a GOAWAY is
//! a socket error).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;
use support::bench_extra::{BenchRun, read_json, read_request_head};
use support::http_extra::{grpc_server, ws_echo_server};
use support::proxy_extra::Proxy;
use support::{ChildGuard, TempDir, wait_until};

const CLIENTS: u64 = 20;

/// Starts `CLIENTS` bench clients of `protocol` for `seconds` against
/// `port`, writing their summary to `json`.
fn start_bench(protocol: &str, port: u16, json: &std::path::Path, seconds: u32) -> BenchRun {
    BenchRun::start(&[
        "--protocol",
        protocol,
        "-c",
        &CLIENTS.to_string(),
        "--reconnect-period",
        "100",
        "--duration",
        &seconds.to_string(),
        "-p",
        &port.to_string(),
        "--json",
        &json.display().to_string(),
    ])
}

/// Waits for the bench; checks its text summary names what it counted
/// (`label`); returns its JSON summary.
fn finish(bench: BenchRun, json: &std::path::Path, label: &str) -> Value {
    let out = bench.wait();
    assert!(out.success, "bench failed: {}", out.stderr);
    assert!(out.stdout.contains(label), "{}", out.stdout);
    read_json(json)
}

/// Runs the bench through `sluice proxy` in front of `servers` and
/// evacuates the first one with `body`; every client of it must leave once
/// with `cause` and nothing may fail.
fn evacuate_under_bench(
    protocol: &str,
    servers: [(ChildGuard, SocketAddr); 2],
    body: &str,
    cause: &str,
    label: &str,
) {
    let dir = TempDir::new("bench-evacuation");
    let [(_a, a), (_b, b)] = servers;
    let proxy = Proxy::start(&[("a", a), ("b", b)], &["--protocol", "http"]);
    let json = dir.0.join("run.json");
    let bench = start_bench(protocol, proxy.listen.port(), &json, 6);
    wait_until("every client connected", Duration::from_secs(20), || {
        proxy.connections("a") + proxy.connections("b") == CLIENTS
    });
    let on_a = proxy.connections("a");
    assert!(on_a > 0, "no client on upstream a");
    proxy.ok("POST", "/upstreams/a/evacuation", Some(body));
    wait_until("upstream a empty", Duration::from_secs(20), || {
        proxy.connections("a") == 0
    });
    let s = finish(bench, &json, label);
    assert_eq!(s["protocol"], protocol);
    assert!(s["requests"].as_u64().unwrap() >= 100, "{s:#}");
    assert_eq!(s["non2xx"], 0, "{s:#}");
    assert_eq!(s["socketErrors"], 0, "{s:#}");
    let causes = s["disconnectCauses"].as_object().unwrap();
    assert_eq!(
        causes.keys().collect::<Vec<_>>(),
        [cause],
        "only the evacuation's leaves: {s:#}"
    );
    assert_eq!(causes[cause], on_a, "{s:#}");
    assert!(s["maxDisconnectsPerClient"].as_u64() <= Some(1), "{s:#}");
    assert_eq!(s["connectedAtEnd"], CLIENTS, "{s:#}");
}

#[test]
fn evicted_websocket_clients_leave_once_with_the_close_code_and_no_error() {
    evacuate_under_bench(
        "ws",
        [
            ws_echo_server("ws_echo_server.py"),
            ws_echo_server("ws_echo_server.py"),
        ],
        r#"{"conn_evict_rate": 100, "wait_health_check": 0, "ws_evict": "lossless"}"#,
        "ws_close:1001",
        "ws messages",
    );
}

#[test]
fn evicted_h2_clients_leave_once_by_goaway_and_no_call_fails() {
    evacuate_under_bench(
        "h2",
        [grpc_server(), grpc_server()],
        r#"{"conn_evict_rate": 100, "wait_health_check": 0}"#,
        "goaway",
        "h2 requests",
    );
}

/// Every other connection's upgrade is refused with 503 when `refuse`; the
/// others are accepted and get one message echoed with `behind` in the
/// same write, then the server's FIN.
fn refuse_or_echo(mut s: TcpStream, refuse: bool, behind: &[u8]) {
    if !read_request_head(&mut s) {
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
    echo.extend_from_slice(behind);
    let _ = s.write_all(&echo);
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Whatever the client answers is read until its FIN.
    let _ = std::io::copy(&mut s, &mut std::io::sink());
}

/// Serves every connection of a bench run with `serve` on a new thread;
/// returns the listening port.
fn serve_each(serve: fn(TcpStream, usize)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for (n, s) in listener.incoming().flatten().enumerate() {
            std::thread::spawn(move || serve(s, n));
        }
    });
    port
}

#[test]
fn a_refused_upgrade_is_non_2xx_and_a_drop_without_close_is_a_socket_error() {
    // The drop: nothing behind the echo but the FIN.
    let port = serve_each(|s, n| refuse_or_echo(s, n % 2 == 0, b""));
    let dir = TempDir::new("bench-ws-drop");
    let json = dir.0.join("drop.json");
    let s = finish(start_bench("ws", port, &json, 3), &json, "ws messages");
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

/// A Close that comes in the same segment as the echo before it, with the
/// FIN right behind (a loaded proxy or server coalesces them), is still the
/// server's graceful leave, not a close without a Close.
#[test]
fn a_close_right_behind_an_echo_is_a_graceful_leave() {
    // Close 1001 (0x03E9), unmasked: the server's.
    let port = serve_each(|s, _| refuse_or_echo(s, false, &[0x88, 0x02, 0x03, 0xE9]));
    let dir = TempDir::new("bench-ws-close-behind");
    let json = dir.0.join("close.json");
    let s = finish(start_bench("ws", port, &json, 3), &json, "ws messages");
    assert_eq!(s["socketErrors"], 0, "{s:#}");
    assert_eq!(s["non2xx"], 0, "{s:#}");
    let causes = s["disconnectCauses"].as_object().unwrap();
    assert_eq!(
        causes.keys().collect::<Vec<_>>(),
        ["ws_close:1001"],
        "{s:#}"
    );
    assert!(
        causes["ws_close:1001"].as_u64().unwrap() >= CLIENTS,
        "{s:#}"
    );
}

/// A gRPC server killed under its h2 clients: their calls fail (socket
/// errors), none of them is a graceful GOAWAY.
#[test]
fn a_killed_h2_server_is_socket_errors_not_goaways() {
    let (mut server, addr) = grpc_server();
    let dir = TempDir::new("bench-h2-kill");
    let json = dir.0.join("kill.json");
    let bench = start_bench("h2", addr.port(), &json, 4);
    bench.wait_connected(CLIENTS, Duration::from_secs(20));
    server.0.kill().expect("kill the gRPC server");
    let s = finish(bench, &json, "h2 requests");
    assert!(s["requests"].as_u64().unwrap() >= 20, "{s:#}");
    assert!(s["socketErrors"].as_u64().unwrap() >= CLIENTS, "{s:#}");
    assert!(
        s["disconnectCauses"].get("goaway").is_none(),
        "a kill is no GOAWAY: {s:#}"
    );
}
