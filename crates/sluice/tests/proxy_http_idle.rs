//! How an evacuation treats idle HTTP/1.1 keep-alive connections: a marked
//! idle connection is not closed under the client's feet; its next request
//! still reaches the old upstream and the response says `Connection: close`,
//! followed by a FIN. A connection that stays idle is closed (FIN, not a
//! reset) only at the evacuation's `deadline`.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::http_extra::serve_http;
use support::proxy_extra::{Proxy, metric};
use support::wait_until;

/// Sends one GET and reads its whole response (the sample server's body is
/// `ok NAME\n`); returns the response text.
fn get(s: &mut TcpStream) -> String {
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok a\n") {
        let n = s.read(&mut buf).expect("read the response");
        assert!(
            n > 0,
            "closed before the response ended: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// True if the peer closed with a FIN (EOF), false on a reset; panics if it
/// is still open after `timeout`.
fn closed_cleanly(s: &mut TcpStream, timeout: Duration) -> bool {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => false,
        Err(e) => panic!("still open after {timeout:?}: {e}"),
    }
}

#[test]
fn idle_connections_leave_on_their_next_response_or_at_the_deadline() {
    let (_a, a) = serve_http("a");
    let (_b, b) = serve_http("b");
    let proxy = Proxy::start(&[("a", a), ("b", b)], &["--protocol", "http"]);
    proxy.set_serving("b", false);
    let mut busy = TcpStream::connect(proxy.listen).unwrap();
    let mut idle = TcpStream::connect(proxy.listen).unwrap();
    busy.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(get(&mut busy).ends_with("ok a\n"));
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    wait_until("both connections on a", Duration::from_secs(5), || {
        proxy.connections("a") == 2
    });
    proxy.set_serving("b", true);
    let started = Instant::now();
    proxy.ok(
        "POST",
        "/upstreams/a/evacuation",
        Some(r#"{"conn_evict_rate": 1000, "wait_health_check": 0, "deadline": 3}"#),
    );
    // Marked but idle: it stays open, and its next request is still answered
    // by a, with `Connection: close` once the mark is set (within
    // milliseconds at this rate).
    let mut last = String::new();
    wait_until(
        "a response with Connection: close",
        Duration::from_secs(5),
        || {
            last = get(&mut busy);
            assert!(last.ends_with("ok a\n"), "{last}");
            last.contains("Connection: close\r\n")
        },
    );
    assert!(last.ends_with("ok a\n"), "{last}");
    assert!(
        closed_cleanly(&mut busy, Duration::from_secs(5)),
        "reset after the last response"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed by the response, not the deadline"
    );
    // The other one never sends again: closed at the deadline, with a FIN.
    let mut first = [0u8; 512];
    let n = idle.read(&mut first).unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).ends_with("ok a\n"));
    assert!(
        closed_cleanly(&mut idle, Duration::from_secs(10)),
        "reset at the deadline"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "closed before the deadline"
    );
    drop((busy, idle));
    wait_until("a empty", Duration::from_secs(5), || {
        proxy.connections("a") == 0
    });
    let m = proxy.metrics();
    let reason = |r| {
        metric(
            &m,
            "sluice_evictions_total",
            &[("upstream", "a"), ("reason", r)],
        )
    };
    assert_eq!(
        (reason("connection_close"), reason("deadline_idle")),
        (1.0, 1.0),
        "{m}"
    );
}

/// At the deadline the connections still idle are closed one per pacer slot,
/// the one idle the longest first: here four connections whose last
/// responses came in the order 3, 1, 0, 2 (not their opening order) are
/// closed in that order, each with a FIN, no faster than the rate.
#[test]
fn at_the_deadline_the_longest_idle_connection_is_closed_first() {
    const RATE: u32 = 4;
    let (_a, a) = serve_http("a");
    let (_b, b) = serve_http("b");
    let proxy = Proxy::start(&[("a", a), ("b", b)], &["--protocol", "http"]);
    proxy.set_serving("b", false);
    let mut conns: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(proxy.listen).unwrap())
        .collect();
    for s in &conns {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    let idle_order = [3, 1, 0, 2];
    for i in idle_order {
        assert!(get(&mut conns[i]).ends_with("ok a\n"));
    }
    proxy.ok(
        "POST",
        "/upstreams/a/evacuation",
        Some(&format!(
            r#"{{"conn_evict_rate": {RATE}, "wait_health_check": 0, "deadline": 2}}"#
        )),
    );
    // Each connection waits for its FIN on its own thread; the moment it came
    // gives the order.
    let waiters: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                let clean = closed_cleanly(&mut s, Duration::from_secs(30));
                (Instant::now(), i, clean)
            })
        })
        .collect();
    let mut closes: Vec<(Instant, usize, bool)> =
        waiters.into_iter().map(|w| w.join().unwrap()).collect();
    closes.sort();
    let order: Vec<usize> = closes.iter().map(|c| c.1).collect();
    assert_eq!(order, idle_order, "longest idle first");
    assert!(closes.iter().all(|c| c.2), "a reset at the deadline");
    // Three pacer intervals at least (250 ms each); a late wake-up only makes
    // the span longer, and half of it leaves room for when each reader woke.
    let span = closes[3].0 - closes[0].0;
    assert!(
        span >= Duration::from_secs(3) / RATE / 2,
        "closed faster than {RATE}/s: {span:?}"
    );
    wait_until("a empty", Duration::from_secs(5), || {
        proxy.connections("a") == 0
    });
    let m = proxy.metrics();
    assert_eq!(
        metric(
            &m,
            "sluice_evictions_total",
            &[("upstream", "a"), ("reason", "deadline_idle")]
        ),
        4.0,
        "{m}"
    );
}
