//! WebSocket evacuation with real clients: Python `websockets` and npm `ws`
//! echo clients talk through `sluice proxy --protocol http` to two Python
//! `websockets` echo servers while one is evacuated. Every client checks each
//! echo (no message lost, duplicated or reordered), and each client of the
//! evacuated upstream is closed exactly once, with the configured code, and
//! leaves the way the eviction mode says (`inject`: the proxy's Close;
//! `lossless`: the app's own Close, or the proxy's after the app's silence).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::http_extra::{node_ws_dir, peer, python_with, ws_echo_server};
use support::proxy_extra::{Proxy, metric};
use support::{require_program, wait_until};

/// Clients of each library.
const CLIENTS: u32 = 10;
/// How long the clients run.
const SECONDS: u32 = 8;

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

/// How upstream `a` is evacuated, and how its clients must leave.
struct Case {
    code: u16,
    /// The evacuation's `ws_evict`.
    mode: &'static str,
    /// The app of upstream `a`.
    app: &'static str,
    /// The eviction reason every client of `a` must leave with.
    reason: &'static str,
}

/// Evacuates upstream `a` while both client libraries run; checks each
/// client's own report and the eviction reasons.
fn evacuate(case: &Case) {
    let code = case.code;
    let (_a, a) = ws_echo_server(case.app);
    let (_b, b) = ws_echo_server("ws_echo_server.py");
    let code_flag = code.to_string();
    let proxy = Proxy::start(
        &[("a", a), ("b", b)],
        &[
            "--protocol",
            "http",
            "--ws-close-code",
            &code_flag,
            "--evict-grace",
            "1",
        ],
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
        Some(&format!(
            r#"{{"conn_evict_rate": 200, "wait_health_check": 0, "ws_evict": "{}"}}"#,
            case.mode
        )),
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
    let m = proxy.metrics();
    let evicted = metric(
        &m,
        "sluice_evictions_total",
        &[("upstream", "a"), ("reason", case.reason)],
    );
    assert_eq!(
        evicted, on_a as f64,
        "every client left by {}: {m}",
        case.reason
    );
}

#[test]
fn websocket_clients_are_closed_once_with_1001_and_lose_nothing() {
    evacuate(&Case {
        code: 1001,
        mode: "inject",
        app: "ws_echo_server.py",
        reason: "ws_close",
    });
}

#[test]
fn websocket_clients_are_closed_once_with_1012_and_lose_nothing() {
    evacuate(&Case {
        code: 1012,
        mode: "inject",
        app: "ws_echo_server.py",
        reason: "ws_close",
    });
}

/// Lossless: the app gets the proxy's masked Close, answers it, and its
/// answer (after every message it sent) is the Close the client gets.
#[test]
fn lossless_websocket_clients_get_the_apps_close_once() {
    evacuate(&Case {
        code: 1001,
        mode: "lossless",
        app: "ws_echo_server.py",
        reason: "ws_app_close",
    });
}

/// Lossless with an app that never answers a Close: after `--evict-grace`
/// the proxy closes each client itself, once, with the configured code.
#[test]
fn lossless_falls_back_to_the_proxys_close_when_the_app_is_silent() {
    evacuate(&Case {
        code: 1012,
        mode: "lossless",
        app: "ws_deaf_server.py",
        reason: "ws_app_timeout",
    });
}
