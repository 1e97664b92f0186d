//! `sluice serve-http`, the built-in sample HTTP server: keep-alive with
//! pipelining, HEAD, chunked and sized request bodies, `Connection: close`
//! honoured with a clean close, and wrk at full speed sees no error.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::http_extra::Tool;
use support::{ChildGuard, free_port, sluice_bin, wait_for_port};

fn start() -> (ChildGuard, SocketAddr) {
    let port = free_port();
    let child = Command::new(sluice_bin())
        .args(["serve-http", "--port", &port.to_string(), "--name", "blue"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn sluice serve-http");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(addr, Duration::from_secs(10));
    (ChildGuard(child), addr)
}

#[test]
fn pipelined_requests_are_answered_in_order_and_close_is_clean() {
    let (_server, addr) = start();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: x\r\n\r\n\
          POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nwxyz\
          GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all)
        .expect("read to the server's FIN");
    let ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n";
    let expected = format!(
        "{ok}\r\nok blue\n{ok}\r\n{ok}\r\nok blue\n{ok}\r\nok blue\n{ok}Connection: close\r\n\r\nok blue\n"
    );
    assert_eq!(all, expected);
}

#[test]
fn wrk_sees_no_error() {
    let (_server, addr) = start();
    let child = Tool::Wrk.start(&format!("http://{addr}/"), 20, 2);
    let load = Tool::Wrk.finish(child);
    assert_eq!((load.non_2xx, load.socket_errors), (0, 0), "{}", load.raw);
}
