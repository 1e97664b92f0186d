//! Readiness probes: a TCP connect, or an HTTP/1.1 GET that must answer 2xx.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How to tell an instance is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Ready when `addr` accepts a TCP connection.
    Tcp(SocketAddr),
    /// Ready when `GET path` on `addr` answers with a 2xx status.
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// The path to GET, starting with `/`.
        path: String,
    },
}

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer within the timeout.
    #[error("{addr}: no answer within {timeout:?}")]
    Timeout {
        /// Where.
        addr: SocketAddr,
        /// How long the probe waited.
        timeout: Duration,
    },
    /// Connecting, sending or reading failed.
    #[error("{addr}: {source}")]
    Io {
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The HTTP answer was not a 2xx status line.
    #[error("{addr}: GET {path} answered {status_line:?}, expected a 2xx status")]
    Status {
        /// Where.
        addr: SocketAddr,
        /// The path.
        path: String,
        /// The response's first line (or what came instead).
        status_line: String,
    },
}

/// The most of a response read to find its status line.
const MAX_STATUS_LINE: usize = 1024;

impl Probe {
    /// The address probed.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Probe::Tcp(addr) | Probe::Http { addr, .. } => *addr,
        }
    }

    /// Runs the probe once, giving up after `timeout`.
    pub async fn check(&self, timeout: Duration) -> Result<(), ProbeError> {
        let addr = self.addr();
        match tokio::time::timeout(timeout, self.check_inner()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout { addr, timeout }),
        }
    }

    async fn check_inner(&self) -> Result<(), ProbeError> {
        let addr = self.addr();
        let io = |source| ProbeError::Io { addr, source };
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let Probe::Http { path, .. } = self else {
            return Ok(());
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sluice\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') && buf.len() < MAX_STATUS_LINE {
            let n = stream.read(&mut chunk).await.map_err(io)?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        let status_line = text.lines().next().unwrap_or_default().trim_end();
        if is_2xx(status_line) {
            Ok(())
        } else {
            Err(ProbeError::Status {
                addr,
                path: path.clone(),
                status_line: status_line.chars().take(120).collect(),
            })
        }
    }
}

/// `HTTP/1.x 2xx ...`.
fn is_2xx(status_line: &str) -> bool {
    let mut parts = status_line.split_ascii_whitespace();
    let version_ok = parts.next().is_some_and(|v| v.starts_with("HTTP/1."));
    let code = parts.next().unwrap_or_default();
    version_ok
        && code.len() == 3
        && code.starts_with('2')
        && code.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::is_2xx;

    #[test]
    fn status_lines() {
        assert!(is_2xx("HTTP/1.1 200 OK"));
        assert!(is_2xx("HTTP/1.0 204 No Content"));
        assert!(!is_2xx("HTTP/1.1 503 Service Unavailable"));
        assert!(!is_2xx("HTTP/1.1 301 Moved"));
        assert!(!is_2xx("SSH-2.0-OpenSSH"));
        assert!(!is_2xx("HTTP/1.1 2000 x"));
        assert!(!is_2xx(""));
    }
}
