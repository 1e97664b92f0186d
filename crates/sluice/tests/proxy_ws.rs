//! WebSocket evacuation with real clients: Python `websockets` and npm `ws`
//! echo clients talk through `sluice proxy --protocol http` to two Python
//! `websockets` echo servers while one is evacuated. Every client checks each
//! echo (no message lost, duplicated or reordered), and each client of the
//! evacuated upstream is closed exactly once, with the configured code.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::http_extra::{node_ws_dir, peer, python_with};
use support::proxy_extra::Proxy;
use support::{ChildGuard, free_port, require_program, wait_until};

/// Clients of each library.
const CLIENTS: u32 = 10;
/// How long the clients run.
const SECONDS: u32 = 8;

/// A Python `websockets` echo server on a free port.
fn echo_server() -> (ChildGuard, SocketAddr) {
    let python = python_with("websockets", "websockets");
    let port = free_port();
    let mut child = Command::new(python)
        .arg(peer("ws_echo_server.py"))
        .arg(port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the echo server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the echo server's ready line");
    assert_eq!(line.trim(), "ready", "the echo server did not start");
    (ChildGuard(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

fn start_clients(url: &str) -> [(&'static str, Child); 2] {
    let python = python_with("websockets", "websockets");
    let node = require_program("node", "nodejs");
    let (n, s) = (CLIENTS.to_string(), SECONDS.to_string());
    let spawn = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the echo clients")
    };
    let py = spawn(
        Command::new(python)
            .arg(peer("ws_echo_client.py"))
            .args([url, &n, &s]),
    );
    let js = spawn(
        Command::new(node)
            .env("WS_MODULE_DIR", node_ws_dir())
            .arg(peer("ws_echo_client.mjs"))
            .args([url, &n, &s]),
    );
    [("python websockets", py), ("npm ws", js)]
}

/// Evacuates upstream `a` while both client libraries run; checks each
/// client's own report.
fn evacuate_with_code(code: u16) {
    let (_a, a) = echo_server();
    let (_b, b) = echo_server();
    let code_flag = code.to_string();
    let proxy = Proxy::start(
        &[("a", a), ("b", b)],
        &["--protocol", "http", "--ws-close-code", &code_flag],
    );
    let clients = start_clients(&format!("ws://{}/", proxy.listen));
    let total = u64::from(CLIENTS) * 2;
    wait_until("every client connected", Duration::from_secs(20), || {
        proxy.connections("a") + proxy.connections("b") == total
    });
    let on_a = proxy.connections("a");
    assert!(on_a > 0, "no client on upstream a");
    proxy.ok(
        "POST",
        "/upstreams/a/evacuation",
        Some(r#"{"conn_evict_rate": 200, "wait_health_check": 0}"#),
    );
    wait_until("upstream a empty", Duration::from_secs(20), || {
        proxy.connections("a") == 0
    });
    let mut closed = 0;
    for (library, child) in clients {
        let out = child.wait_with_output().expect("wait for the clients");
        assert!(out.status.success(), "{library} clients failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let reports: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{library}: {e}: {l}")))
            .collect();
        assert_eq!(reports.len(), CLIENTS as usize, "{library}: {text}");
        for r in &reports {
            let closes = r["closes"].as_array().expect("closes");
            assert_eq!(
                r["errors"].as_array().map(Vec::len),
                Some(0),
                "{library}: {r}"
            );
            assert!(r["echoed"].as_u64() > Some(0), "{library}: {r}");
            assert!(closes.len() <= 1, "{library}: closed more than once: {r}");
            for c in closes {
                assert_eq!(c.as_u64(), Some(u64::from(code)), "{library}: {r}");
            }
            closed += closes.len() as u64;
        }
    }
    assert_eq!(closed, on_a, "every client of upstream a is closed once");
}

#[test]
fn websocket_clients_are_closed_once_with_1001_and_lose_nothing() {
    evacuate_with_code(1001);
}

#[test]
fn websocket_clients_are_closed_once_with_1012_and_lose_nothing() {
    evacuate_with_code(1012);
}
