//! Readiness probes: a TCP connect, or an HTTP/1.1 GET that must answer 2xx.

use std::net::SocketAddr;
use std::time::Duration;

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
        let Probe::Http { path, .. } = self else {
            return match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(connected) => connected
                    .map(drop)
                    .map_err(|source| ProbeError::Io { addr, source }),
                Err(_) => Err(ProbeError::Timeout { addr, timeout }),
            };
        };
        let headers = [("User-Agent", "sluice"), ("Accept", "*/*")];
        let status_line =
            match sluice_http::request(addr, "GET", path, &headers, b"", timeout).await {
                Ok(r) if (200..300).contains(&r.status) => return Ok(()),
                Ok(r) => r.status_line(),
                Err(sluice_http::Error::Timeout { .. }) => {
                    return Err(ProbeError::Timeout { addr, timeout });
                }
                Err(sluice_http::Error::Io(source)) => return Err(ProbeError::Io { addr, source }),
                Err(sluice_http::Error::Http(sluice_http::ParseError::BadStatusLine(line))) => line,
                Err(other) => other.to_string(),
            };
        Err(ProbeError::Status {
            addr,
            path: path.clone(),
            status_line: status_line.chars().take(120).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_non_http_answer_is_reported_as_the_status_line() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"SSH-2.0-OpenSSH\r\n").await.unwrap();
        });
        let probe = Probe::Http {
            addr,
            path: "/healthz".into(),
        };
        let err = probe.check(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(&err, ProbeError::Status { status_line, .. } if status_line == "SSH-2.0-OpenSSH"),
            "{err:?}"
        );
    }
}
