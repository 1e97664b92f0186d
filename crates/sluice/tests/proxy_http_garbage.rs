//! Garbage on HTTP connections never crashes `sluice proxy --protocol http`
//! nor disturbs a neighbour: a healthy keep-alive client keeps getting its
//! answers while fuzzed heads, oversized heads, truncated chunked bodies, a
//! WebSocket frame announcing 2^63 bytes (both ways) and an HTTP/2 frame
//! header claiming 16 MB come and go on other connections.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use support::proxy_extra::Proxy;
use support::wait_until;

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
/// A server WebSocket frame header announcing 2^63 - 1 bytes.
const HUGE_WS: [u8; 10] = [0x82, 127, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/// A small upstream: answers `200 ok` to each request head on a keep-alive
/// connection, and `101` to an upgrade, after which it sends a frame header
/// announcing 2^63 − 1 bytes and echoes what it gets.
fn upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || serve(conn));
        }
    });
    addr
}

fn serve(mut conn: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            buf.drain(..end + 4);
            if head.contains("upgrade: websocket") {
                let _ = conn.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
                let _ = conn.write_all(&HUGE_WS);
                let _ = conn.write_all(&[0u8; 1000]);
                while let Ok(n) = conn.read(&mut chunk) {
                    if n == 0 || conn.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                }
                return;
            }
            if conn.write_all(OK).is_err() {
                return;
            }
        }
        if buf.len() > 1 << 20 {
            return;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Sends `bytes` on a new connection through the proxy, reads for a moment,
/// and closes.
fn throw(proxy: SocketAddr, bytes: &[u8]) {
    let Ok(mut s) = TcpStream::connect(proxy) else {
        return;
    };
    let _ = s.write_all(bytes);
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut sink = [0u8; 4096];
    let _ = s.read(&mut sink);
}

#[test]
fn http_garbage_never_hurts_a_neighbour() {
    let proxy = Proxy::start(&[("a", upstream())], &["--protocol", "http"]);
    let addr = proxy.listen;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU32::new(0));
    let neighbour = {
        let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
        std::thread::spawn(move || -> Result<(), String> {
            let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            while !stop.load(Ordering::SeqCst) {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    .map_err(|e| format!("write: {e}"))?;
                let mut got = vec![0u8; OK.len()];
                s.read_exact(&mut got).map_err(|e| format!("read: {e}"))?;
                if got != OK {
                    return Err(format!("bad answer {:?}", String::from_utf8_lossy(&got)));
                }
                ok.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
    };
    wait_until(
        "the neighbour's first answers",
        Duration::from_secs(10),
        || ok.load(Ordering::SeqCst) > 5,
    );

    let mut seed = 0x9E37_79B9_u32;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect()
    };
    for _ in 0..20 {
        let mut fuzzed = b"GET / HTTP/1.1\r\n".to_vec();
        fuzzed.extend(random(300));
        throw(addr, &fuzzed);
        let mut head = b"POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nabcdeGET /".to_vec();
        head.extend(random(50));
        throw(addr, &head);
    }
    let oversized = [
        b"GET / HTTP/1.1\r\nX: ".as_slice(),
        &[b'a'; 100 * 1024],
        b"\r\n\r\n",
    ]
    .concat();
    throw(addr, &oversized);
    let many: Vec<u8> = [
        b"GET / HTTP/1.1\r\n".as_slice(),
        &b"A: b\r\n".repeat(500),
        b"\r\n",
    ]
    .concat();
    throw(addr, &many);
    throw(
        addr,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    );
    throw(
        addr,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
    );
    throw(
        addr,
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    );
    // A WebSocket whose server announces 2^63 − 1 bytes, and whose client
    // sends a header with the top length bit set.
    let mut ws = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n".to_vec();
    ws.extend_from_slice(&[
        0x82, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
    ]);
    throw(addr, &ws);
    // HTTP/2: the preface, then a frame header claiming 16 MB and a few bytes.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&[0xff, 0xff, 0xff, 0x0, 0x0, 0, 0, 0, 1]);
    h2.extend(random(100));
    throw(addr, &h2);

    let before = ok.load(Ordering::SeqCst);
    wait_until(
        "the neighbour's answers after the garbage",
        Duration::from_secs(10),
        || ok.load(Ordering::SeqCst) > before + 5,
    );
    stop.store(true, Ordering::SeqCst);
    neighbour
        .join()
        .unwrap()
        .expect("the neighbour was disturbed");
    let (status, _) = proxy.call("GET", "/healthz", None);
    assert_eq!(status, 200, "the proxy is alive");
}
