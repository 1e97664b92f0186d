//! Opaque TCP through the proxy: half-close is passed on both ways, an
//! evicted TCP connection is closed with a FIN, never a reset, and the
//! workers' listening sockets serve together without sharing the port with
//! anyone else.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sluice_api::admin::{EvacuationRequest, path};
use support::proxy_extra::Proxy;
use support::{ChildGuard, free_port, sluice_bin, wait_until};

/// An upstream that reads the client's bytes until its FIN, answers
/// "reply:" + what it read, then closes.
fn reply_after_fin_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                let _ = s.write_all(b"reply:");
                let _ = s.write_all(&got);
            });
        }
    });
    addr
}

/// An upstream that sends a banner and its FIN first, then reports what the
/// client sent after that.
fn fin_first_server() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"banner").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    (addr, rx)
}

fn client(proxy: &Proxy) -> TcpStream {
    let s = TcpStream::connect(proxy.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn client_fin_is_passed_on_and_the_reply_still_flows() {
    for protocol in ["tcp", "auto"] {
        let proxy = Proxy::start(
            &[("echo", reply_after_fin_server())],
            &["--protocol", protocol],
        );
        let mut s = client(&proxy);
        s.write_all(b"hello").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "reply:hello", "--protocol {protocol}");
    }
}

#[test]
fn upstream_fin_is_passed_on_and_the_client_keeps_sending() {
    let (addr, got) = fin_first_server();
    let proxy = Proxy::start(&[("banner", addr)], &["--protocol", "tcp"]);
    let mut s = client(&proxy);
    let mut banner = Vec::new();
    s.read_to_end(&mut banner).unwrap();
    assert_eq!(
        banner, b"banner",
        "the upstream's FIN reaches the client after its bytes"
    );
    s.write_all(b"after your fin").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        got.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"after your fin"
    );
}

#[test]
fn evicted_tcp_connection_gets_a_fin_not_a_reset() {
    // An upstream that never closes and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, upstream_saw) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let r = s.read_to_end(&mut buf).map(|_| buf.len());
        let _ = tx.send(r.map_err(|e| e.kind()));
    });
    let proxy = Proxy::start(&[("app", addr)], &["--protocol", "tcp"]);
    let mut s = client(&proxy);
    s.write_all(b"some bytes").unwrap();
    wait_until(
        "the connection to be registered",
        Duration::from_secs(5),
        || proxy.connections("app") == 1,
    );
    proxy.start_evacuation(path::EVACUATION, &EvacuationRequest::at_rate(10));
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => {}
        other => panic!("expected a clean EOF, got {other:?}"),
    }
    // The upstream saw a FIN too (after the client's bytes), not a reset.
    assert_eq!(
        upstream_saw.recv_timeout(Duration::from_secs(5)).unwrap(),
        Ok(10)
    );
    // New TCP connections are accepted and closed cleanly while evacuating.
    let mut refused = client(&proxy);
    match refused.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => panic!("refusal was a reset"),
        other => panic!("expected EOF, got {other:?}"),
    }
}

/// Each worker accepts on its own socket of an `SO_REUSEPORT` group; many
/// connections at once are all served (a socket of the group that no worker
/// polled would leave the connections the kernel gave it unanswered).
#[test]
fn connections_at_once_are_all_served_by_three_workers() {
    let proxy = Proxy::start(
        &[("echo", reply_after_fin_server())],
        &["--protocol", "tcp", "--workers", "3"],
    );
    let clients: Vec<_> = (0..60)
        .map(|i| {
            let mut s = client(&proxy);
            s.write_all(format!("client {i}").as_bytes()).unwrap();
            s
        })
        .collect();
    for (i, mut s) in clients.into_iter().enumerate() {
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, format!("reply:client {i}"));
    }
}

/// The group must not let a second proxy (or anything else) share the port
/// silently: it is refused, naming the flag.
#[test]
fn a_second_proxy_on_the_same_port_is_refused() {
    let proxy = Proxy::start(
        &[("echo", reply_after_fin_server())],
        &["--protocol", "tcp"],
    );
    let mut second = ChildGuard(
        Command::new(sluice_bin())
            .args([
                "proxy",
                "--listen",
                &proxy.listen.to_string(),
                "--upstream",
                "a=127.0.0.1:1",
                "--admin",
                &free_port().to_string(),
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Killed when dropped, should it start after all.
    wait_until("the second proxy to exit", Duration::from_secs(10), || {
        second.0.try_wait().unwrap().is_some()
    });
    let status = second.0.wait().unwrap();
    assert!(!status.success());
    let mut err = String::new();
    second
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains(&format!("cannot listen on {} (--listen)", proxy.listen))
            && err.contains("in use"),
        "{err}"
    );
    // The first one still serves.
    let mut s = client(&proxy);
    s.write_all(b"still").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "reply:still");
}
