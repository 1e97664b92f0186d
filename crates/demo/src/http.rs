//! Calls to `sluice up`'s control API on 127.0.0.1, through [`sluice_http`]:
//! one request per connection (`Connection: close`), text bodies.

use std::net::SocketAddr;
use std::time::Duration;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body, chunked encoding undone.
    pub body: String,
}

/// Sends `method path` with `body` to `addr`; fails after `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let (headers, text) = match body {
        Some((content_type, text)) => (vec![("Content-Type", content_type)], text),
        None => (vec![], ""),
    };
    let r = sluice_http::request(addr, method, path, &headers, text.as_bytes(), timeout)
        .await
        .map_err(|e| match e {
            sluice_http::Error::Timeout { .. } => {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out")
            }
            e => e.into(),
        })?;
    Ok(Response {
        status: r.status,
        body: r.body_text(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn talks_to_a_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            req
        });
        let r = request(
            addr,
            "PUT",
            "/spec",
            Some(("application/yaml", "name: x\n")),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (202, "ok"));
        let req = server.await.unwrap();
        assert!(req.starts_with("PUT /spec HTTP/1.1\r\n"), "{req}");
        assert!(req.ends_with("\r\n\r\nname: x\n"), "{req}");
    }
}
