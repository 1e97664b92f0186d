//! WebSocket evacuation with real clients: Python `websockets` and npm `ws`
//! echo clients talk through `sluice proxy --protocol http` to two Python
//! `websockets` echo servers while one is evacuated. Every client checks each
//! echo (no message lost, duplicated or reordered), and each client of the
//! evacuated upstream is closed exactly once, with the configured code, and
//! leaves the way the eviction mode says (`inject`: the proxy's Close;
//! `lossless`: the app's own Close, or the proxy's after the app's silence).

mod support;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::http_extra::{node_ws_dir, peer, python_server, python_with, ws_echo_server};
use support::proxy_extra::{Proxy, metric};
use support::{TempDir, require_program, wait_until};

/// Clients of each library.
const CLIENTS: u32 = 10;
/// How long the clients run.
const SECONDS: u32 = 8;

/// Waits for `child` (the clients of `library`), which must succeed, and
/// returns the JSON lines it printed.
fn json_lines(child: Child, library: &str) -> Vec<Value> {
    let out = child.wait_with_output().expect("wait for the clients");
    assert!(out.status.success(), "{library} clients failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{library}: {e}: {l}")))
        .collect()
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
        let reports = json_lines(child, library);
        assert_eq!(reports.len(), CLIENTS as usize, "{library}: {reports:?}");
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

/// What a push run measured on the connections the evacuation closed.
struct Pushed {
    /// Connections closed by the evacuation (with its code).
    evicted: u64,
    /// Connections of upstream a when the evacuation started.
    on_a: u64,
    /// Messages the app handed to those connections.
    sent: u64,
    /// Messages their clients received.
    received: u64,
}

/// Servers that push numbered messages (`ws_push_server.py`) behind the
/// proxy, Python clients that count them; upstream a is evacuated with
/// `ws_evict: mode`. Every client checks its numbers come in order without
/// a gap.
fn push_under_evacuation(mode: &str) -> Pushed {
    let dir = TempDir::new("ws-push");
    let log = dir.0.join("sent.jsonl");
    let log_arg = log.display().to_string();
    let websockets = ("websockets", "websockets");
    let (_a, a) = python_server("ws_push_server.py", websockets, &[&log_arg]);
    let (_b, b) = python_server("ws_push_server.py", websockets, &[&log_arg]);
    let proxy = Proxy::start(&[("a", a), ("b", b)], &["--protocol", "http"]);
    let client = Command::new(python_with("websockets", "websockets"))
        .arg(peer("ws_push_client.py"))
        .args([
            &format!("ws://{}", proxy.listen),
            &CLIENTS.to_string(),
            &SECONDS.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the push clients");
    wait_until("every client connected", Duration::from_secs(20), || {
        proxy.connections("a") + proxy.connections("b") == u64::from(CLIENTS)
    });
    let on_a = proxy.connections("a");
    assert!(on_a > 0, "no client on upstream a");
    // Evacuate once the pushes flow: a few hundred messages per connection.
    wait_until("messages flowing from a", Duration::from_secs(20), || {
        let pushed = metric(
            &proxy.metrics(),
            "sluice_bytes_total",
            &[("upstream", "a"), ("direction", "upstream_to_client")],
        );
        pushed >= 1000.0 * on_a as f64
    });
    proxy.ok(
        "POST",
        "/upstreams/a/evacuation",
        Some(&format!(
            r#"{{"conn_evict_rate": 200, "wait_health_check": 0, "ws_evict": "{mode}"}}"#
        )),
    );
    wait_until("upstream a empty", Duration::from_secs(20), || {
        proxy.connections("a") == 0
    });
    let lines = json_lines(client, "push clients");
    for l in &lines {
        assert_eq!(l["errors"].as_array().map(Vec::len), Some(0), "{l}");
    }
    let evicted: Vec<&Value> = lines.iter().filter(|l| l["code"] == 1001).collect();
    let mut sent: HashMap<String, u64> = HashMap::new();
    wait_until(
        "the app logged every evicted connection",
        Duration::from_secs(10),
        || {
            sent = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .map(|v| {
                    (
                        v["path"].as_str().unwrap_or("").to_owned(),
                        v["sent"].as_u64().unwrap_or(0),
                    )
                })
                .collect();
            evicted
                .iter()
                .all(|l| sent.contains_key(l["path"].as_str().unwrap()))
        },
    );
    let p = Pushed {
        evicted: evicted.len() as u64,
        on_a,
        sent: evicted
            .iter()
            .map(|l| sent[l["path"].as_str().unwrap()])
            .sum(),
        received: evicted
            .iter()
            .map(|l| l["received"].as_u64().unwrap())
            .sum(),
    };
    eprintln!(
        "{mode}: {} connections evicted, {} messages sent by the app, {} received",
        p.evicted, p.sent, p.received
    );
    p
}

/// Lossless: every message the app pushed before its Close reaches the
/// client, on every connection the evacuation closed.
#[test]
fn lossless_eviction_delivers_every_message_the_app_sent() {
    let p = push_under_evacuation("lossless");
    assert_eq!(p.evicted, p.on_a, "each client of a closed once with 1001");
    assert!(p.sent > 0);
    assert_eq!(p.received, p.sent, "messages lost by a lossless eviction");
}

/// The proxy's own Close: each evicted client is closed once with 1001,
/// between two whole messages (the clients check their numbers come in order
/// without a gap), and never gets more than the app sent. What the app pushes
/// between that Close and the client's answer is dropped — 7 of 700 and 4 of
/// 653 messages in two loaded runs — but on an idle machine the answer can
/// come back within the app's 1 ms between pushes and nothing is dropped (677
/// of 677 in one run), so the drop is reported here, not asserted.
#[test]
fn injected_close_ends_each_stream_between_messages() {
    let p = push_under_evacuation("inject");
    assert_eq!(p.evicted, p.on_a, "each client of a closed once with 1001");
    assert!(p.sent > 0);
    assert!(
        p.received <= p.sent,
        "clients got more than the app sent: {} sent, {} received",
        p.sent,
        p.received
    );
    eprintln!(
        "inject dropped {} of {} messages",
        p.sent - p.received,
        p.sent
    );
}
