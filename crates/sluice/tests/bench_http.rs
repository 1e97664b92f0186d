//! `sluice bench conn --protocol http` against small HTTP/1.1 servers that
//! behave in known ways: a server that closes every few responses with
//! `Connection: close` (graceful leaves, no error), and one that answers 503
//! and then closes without warning (non-2xx and socket errors). The
//! timeline records the counts over time and the report charts them.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};

use serde_json::Value;
use support::bench_extra::read_request_head;
use support::{TempDir, sluice_bin};

/// What the server does with the n-th request (from 1) on a connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// 200, and `Connection: close` then a close after every 5th response.
    CloseEveryFifth,
    /// 503 to the first request, 200 to the second, then closes without
    /// answering the third.
    FailThenDrop,
}

fn serve(mut s: TcpStream, behaviour: Behaviour) {
    for n in 1.. {
        if !read_request_head(&mut s) {
            return;
        }
        let (status, close) = match behaviour {
            Behaviour::CloseEveryFifth => ("200 OK", n % 5 == 0),
            Behaviour::FailThenDrop if n == 1 => ("503 Service Unavailable", false),
            Behaviour::FailThenDrop if n == 2 => ("200 OK", false),
            Behaviour::FailThenDrop => return,
        };
        let connection = if close { "Connection: close\r\n" } else { "" };
        let response = format!("HTTP/1.1 {status}\r\nContent-Length: 3\r\n{connection}\r\nok\n");
        if s.write_all(response.as_bytes()).is_err() {
            return;
        }
        if close {
            // Lingering close: our side first, then read until the client's FIN.
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 256];
            while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
            return;
        }
    }
}

fn start(behaviour: Behaviour) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            std::thread::spawn(move || serve(s, behaviour));
        }
    });
    port
}

/// Runs the bench for 3 s against `port` and returns its JSON summary and
/// its HTML report.
fn bench(port: u16, dir: &TempDir, name: &str) -> (Value, String) {
    let json = dir.0.join(format!("{name}.json"));
    let report = dir.0.join(format!("{name}.html"));
    let out = Command::new(sluice_bin())
        .args(["bench", "conn", "--protocol", "http", "-q", "-c", "20"])
        .args(["--reconnect-period", "100", "--duration", "3", "-p"])
        .arg(port.to_string())
        .arg("--json")
        .arg(&json)
        .arg("--report")
        .arg(&report)
        .stdin(Stdio::null())
        .output()
        .expect("run sluice bench");
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("http requests"), "{text}");
    let summary = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let html = std::fs::read_to_string(report).unwrap();
    assert!(
        html.contains(">\nHTTP errors per second\n</text>"),
        "no HTTP chart"
    );
    (summary, html)
}

/// The timeline's request counts `key` (cumulative), sample by sample; each
/// sample must have them and they never go back.
fn counted(s: &Value, key: &str) -> Vec<u64> {
    let counts: Vec<u64> = s["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|x| {
            x["http"][key]
                .as_u64()
                .unwrap_or_else(|| panic!("no {key}: {x}"))
        })
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{key}: {counts:?}");
    counts
}

#[test]
fn connection_close_is_a_graceful_leave() {
    let dir = TempDir::new("bench-http-close");
    let (s, html) = bench(start(Behaviour::CloseEveryFifth), &dir, "close");
    assert_eq!(s["protocol"], "http");
    assert!(s["requests"].as_u64().unwrap() >= 100, "{s:#}");
    assert_eq!(s["non2xx"], 0, "{s:#}");
    assert_eq!(s["socketErrors"], 0, "{s:#}");
    let causes = s["disconnectCauses"].as_object().unwrap();
    assert!(
        causes.keys().all(|k| k == "connection_close"),
        "only graceful leaves: {s:#}"
    );
    // Every client saw at least one fifth response.
    assert!(causes["connection_close"].as_u64().unwrap() >= 20, "{s:#}");
    // Over time: requests flowing, no error at any moment.
    let requests = counted(&s, "requests");
    assert!(requests.last() >= Some(&50), "{requests:?}");
    assert!(counted(&s, "non2xx").iter().all(|n| *n == 0));
    assert!(counted(&s, "socketErrors").iter().all(|n| *n == 0));
    assert!(
        html.contains("0 non-2xx, 0 socket errors."),
        "caption totals"
    );
}

#[test]
fn a_503_is_non_2xx_and_a_close_without_warning_is_a_socket_error() {
    let dir = TempDir::new("bench-http-drop");
    let (s, _) = bench(start(Behaviour::FailThenDrop), &dir, "drop");
    let requests = s["requests"].as_u64().unwrap();
    let non2xx = s["non2xx"].as_u64().unwrap();
    let errors = s["socketErrors"].as_u64().unwrap();
    // Per connection: a 503, a 200, then a request that fails.
    assert!(non2xx >= 20, "{s:#}");
    assert!(errors >= 20, "{s:#}");
    assert!(errors <= non2xx && non2xx <= errors + 20, "{s:#}");
    assert!(requests >= 3 * errors, "{s:#}");
    assert!(
        s["disconnectCauses"].get("connection_close").is_none(),
        "{s:#}"
    );
    // Over time: the errors show up while the run goes on, and the timeline
    // never counts more than the totals.
    for (key, total) in [("non2xx", non2xx), ("socketErrors", errors)] {
        let over_time = counted(&s, key);
        let last = *over_time.last().unwrap();
        assert!(
            last >= 10 && last <= total,
            "{key}: {over_time:?} of {total}"
        );
        let half = over_time[over_time.len() / 2];
        assert!(half > 0, "{key} counted only at the end: {over_time:?}");
    }
}
