//! A tiny HTTP/1.1 client over a tokio `TcpStream`, for the loopback calls
//! sluice makes to servers it runs or watches (evacuators' admin APIs, the
//! control API, metrics endpoints, readiness probes): one request per
//! connection, `Connection: close`, the response framed by
//! [`sluice_wire::http`]. No HTTP client library is needed for that.
//!
//! [`evacuator::ProxyEvacuator`] drives `sluice proxy`'s admin API through it:
//! the first implementation of [`sluice_api::evacuator::Evacuator`].

#![forbid(unsafe_code)]

pub mod evacuator;

use std::fmt::Display;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

pub use sluice_wire::http::{Error as ParseError, Response};
use sluice_wire::http::{Parsed, parse_response};

/// The largest response read.
pub const MAX_RESPONSE: usize = 8 << 20;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// No whole response within the timeout.
    #[error("{method} {path} on {addr}: no answer within {timeout:?}")]
    Timeout {
        /// The request's method.
        method: String,
        /// The request's path.
        path: String,
        /// Where it went.
        addr: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The answer is not an HTTP/1.x response.
    #[error("{0}")]
    Http(#[from] ParseError),
    /// The answer is longer than [`MAX_RESPONSE`].
    #[error("response too large")]
    TooLarge,
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Io(io) => return io::Error::new(io.kind(), e),
            Error::Timeout { .. } => io::ErrorKind::TimedOut,
            Error::Http(_) | Error::TooLarge => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Sends `method path` to `addr` (also its `Host`) with `headers` and `body`,
/// and reads the response until it is complete or the peer closes, all within
/// `timeout`. `Host`, `Content-Length` (unless a `GET`/`HEAD` has no body) and
/// `Connection: close` are added.
pub async fn request<A: ToSocketAddrs + Display>(
    addr: A,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response, Error> {
    let host = addr.to_string();
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if !body.is_empty() || !matches!(method, "GET" | "HEAD") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut message = head.into_bytes();
        message.extend_from_slice(body);
        stream.write_all(&message).await?;
        read_response(&mut stream).await
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                method: method.to_owned(),
                path: path.to_owned(),
                addr: host.clone(),
                timeout,
            })
        })
}

async fn read_response(stream: &mut TcpStream) -> Result<Response, Error> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk).await?;
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_RESPONSE {
            return Err(Error::TooLarge);
        }
        if let Parsed::Complete { response, .. } = parse_response(&raw, n == 0)? {
            return Ok(response);
        }
        if n == 0 {
            // `parse_response` answers complete or an error at the end.
            return Err(ParseError::NoEndOfHeaders.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers `answer` to one request and returns the request.
    async fn serve(
        answer: &'static [u8],
        close: bool,
    ) -> (String, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.ends_with(b"\r\n\r\n") && !req.ends_with(b"body") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                req.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).await.unwrap();
            if !close {
                // Keep the connection open until the client is done: the
                // response's own framing must end it.
                while s.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            }
            String::from_utf8(req).unwrap()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn sends_a_request_and_reads_a_framed_answer() {
        let (addr, server) = serve(
            b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok",
            false,
        )
        .await;
        let r = request(
            addr.as_str(),
            "PUT",
            "/spec",
            &[("Content-Type", "text/plain")],
            b"body",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body_text().as_str()), (202, "ok"));
        assert!(
            server
                .await
                .unwrap()
                .ends_with("Content-Length: 4\r\nConnection: close\r\n\r\nbody")
        );
    }

    #[tokio::test]
    async fn reads_to_the_close_and_reports_garbage() {
        let (addr, server) = serve(b"HTTP/1.0 200 OK\r\n\r\nall", true).await;
        let r = request(addr.as_str(), "GET", "/", &[], b"", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.body, b"all");
        let req = server.await.unwrap();
        assert_eq!(
            req,
            format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
        );

        let (addr, _server) = serve(b"SSH-2.0-x\r\n", false).await;
        let e = request(addr.as_str(), "GET", "/", &[], b"", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "bad status line \"SSH-2.0-x\"");
        assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let e = request(addr, "GET", "/x", &[], b"", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!("GET /x on {addr}: no answer within 50ms")
        );
    }
}
