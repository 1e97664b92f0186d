//! `sluice serve-http`, the built-in sample HTTP server: keep-alive with
//! pipelining, HEAD, chunked and sized request bodies, `Connection: close`
//! honoured with a clean close, and wrk at full speed sees no error; on the
//! same port, Python `websockets` clients get every message echoed and their
//! Close answered, h2load over h2c sees every request answered 2xx, and
//! Python `grpcio` clients get every unary call's message back with
//! `grpc-status: 0`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::http_extra::{Tool, peer, python_with, serve_http};

#[test]
fn pipelined_requests_are_answered_in_order_and_close_is_clean() {
    let (_server, addr) = serve_http("blue");
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

/// Runs `tool` against a fresh serve-http for two seconds at full speed and
/// checks that it saw no error; returns its own text.
fn no_error_from(tool: Tool, connections: u32) -> String {
    let (_server, addr) = serve_http("blue");
    let load = tool.finish(tool.start(&format!("http://{addr}/"), connections, 2));
    assert_eq!((load.non_2xx, load.socket_errors), (0, 0), "{}", load.raw);
    load.raw
}

#[test]
fn wrk_sees_no_error() {
    no_error_from(Tool::Wrk, 20);
}

#[test]
fn python_websockets_clients_get_every_message_echoed() {
    let (_server, addr) = serve_http("blue");
    let python = python_with("websockets", "websockets");
    // Ten clients echo numbered messages for two seconds, then close.
    let out = Command::new(&python)
        .arg(peer("ws_echo_client.py"))
        .args([&format!("ws://{addr}/"), "10", "2"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the websockets clients");
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 10, "{lines:?}");
    for c in &lines {
        assert!(c["echoed"].as_u64() > Some(10), "{c}");
        assert_eq!(c["errors"], serde_json::json!([]), "{c}");
        assert_eq!(c["closes"], serde_json::json!([]), "{c}");
    }

    // A binary message is echoed as binary, and the client's Close is
    // answered with a Close carrying its code.
    let script = "import asyncio, sys\n\
        from websockets.asyncio.client import connect\n\
        async def main():\n\
        \x20   async with connect(sys.argv[1], ping_interval=None, close_timeout=5) as ws:\n\
        \x20       await ws.send(b'\\x00\\x01bin')\n\
        \x20       got = await ws.recv()\n\
        \x20       await ws.close(4001)\n\
        \x20   print(repr(got), ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None)\n\
        asyncio.run(main())\n";
    let out = Command::new(&python)
        .args(["-c", script, &format!("ws://{addr}/")])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the websockets client");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "b'\\x00\\x01bin' 4001"
    );
}

#[test]
fn h2load_over_h2c_sees_no_error() {
    let raw = no_error_from(Tool::H2c, 10);
    assert!(
        raw.contains("Application protocol: h2c"),
        "h2load spoke HTTP/2: {raw}"
    );
}

#[test]
fn grpcio_calls_are_echoed_with_status_ok() {
    let (_server, addr) = serve_http("blue");
    // Four channels (HTTP/2 connections) call /sluice.Echo/Call for two
    // seconds, each checking that the answer is its message.
    let out = Command::new(python_with("grpc", "grpcio"))
        .arg(peer("grpc_echo_client.py"))
        .args([&addr.to_string(), "4", "2"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the grpcio clients");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let totals: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert!(totals["ok"].as_u64() > Some(100), "{totals}");
    assert_eq!(totals["failed"], 0, "{totals}");
}
