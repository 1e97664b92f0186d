//! `sluice proxy`'s admin API as an [`Evacuator`]: the driver `sluice up` moves
//! connections off its instances with (and the planned operator off its pods'
//! sidecars).

use std::net::SocketAddr;
use std::time::Duration;

use sluice_api::admin::{ErrorBody, EvacuationRequest, EvacuationStatus, path};
use sluice_api::evacuator::{Evacuator, EvacuatorError};
use sluice_core::engine::NodeEvacuationStatus;

use crate::{Error, Response, request};

/// The longest part of an unexpected body quoted in an error.
const QUOTE: usize = 200;

/// One `sluice proxy` admin API, driving the evacuation of one upstream (the
/// only one, for a sidecar or `sluice up`'s evacuators, or a named one).
#[derive(Debug, Clone)]
pub struct ProxyEvacuator {
    admin: SocketAddr,
    upstream: Option<String>,
    token: Option<String>,
    timeout: Duration,
}

impl ProxyEvacuator {
    /// The evacuator whose admin API listens on `admin`, acting on its only
    /// upstream; each call may take `timeout`.
    pub fn new(admin: SocketAddr, timeout: Duration) -> ProxyEvacuator {
        ProxyEvacuator {
            admin,
            upstream: None,
            token: None,
            timeout,
        }
    }

    /// Acts on the upstream called `name` (`/upstreams/{name}/evacuation`).
    pub fn upstream(mut self, name: &str) -> ProxyEvacuator {
        self.upstream = Some(name.to_owned());
        self
    }

    /// Sends `Authorization: Bearer TOKEN` (`sluice proxy --admin-token`).
    pub fn token(mut self, token: &str) -> ProxyEvacuator {
        self.token = Some(token.to_owned());
        self
    }

    /// The admin API's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    fn path(&self) -> String {
        match &self.upstream {
            Some(name) => path::upstream_evacuation(name),
            None => path::EVACUATION.to_owned(),
        }
    }

    async fn call(&self, method: &str, body: &[u8]) -> Result<(String, Response), EvacuatorError> {
        let path = self.path();
        let what = format!("{method} {path}");
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let evacuator = self.admin.to_string();
        match request(self.admin, method, &path, &headers, body, self.timeout).await {
            Ok(r) => Ok((what, r)),
            Err(e @ (Error::Io(_) | Error::Timeout { .. })) => Err(EvacuatorError::Unreachable {
                evacuator,
                reason: format!("{what}: {e}"),
            }),
            Err(e @ (Error::Http(_) | Error::TooLarge)) => Err(EvacuatorError::Malformed {
                evacuator,
                what,
                reason: e.to_string(),
            }),
        }
    }

    fn refused(&self, what: String, r: &Response) -> EvacuatorError {
        let text = r.body_text();
        let message = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.message)
            .unwrap_or_else(|_| text.chars().take(QUOTE).collect());
        EvacuatorError::Refused {
            evacuator: self.admin.to_string(),
            what,
            status: r.status,
            message,
        }
    }
}

impl Evacuator for ProxyEvacuator {
    async fn start_evacuation(&self, req: &EvacuationRequest) -> Result<(), EvacuatorError> {
        let body = serde_json::to_vec(req).map_err(|e| EvacuatorError::Malformed {
            evacuator: self.admin.to_string(),
            what: "the request body".to_owned(),
            reason: e.to_string(),
        })?;
        let (what, r) = self.call("POST", &body).await?;
        // 409: one already runs, which is what was asked.
        match r.status {
            200 | 409 => Ok(()),
            _ => Err(self.refused(what, &r)),
        }
    }

    async fn stop_evacuation(&self) -> Result<(), EvacuatorError> {
        let (what, r) = self.call("DELETE", b"").await?;
        match r.status {
            200 => Ok(()),
            _ => Err(self.refused(what, &r)),
        }
    }

    async fn report(&self) -> Result<NodeEvacuationStatus, EvacuatorError> {
        let (what, r) = self.call("GET", b"").await?;
        if r.status != 200 {
            return Err(self.refused(what, &r));
        }
        let status: EvacuationStatus =
            serde_json::from_slice(&r.body).map_err(|e| EvacuatorError::Malformed {
                evacuator: self.admin.to_string(),
                what,
                reason: e.to_string(),
            })?;
        Ok(status.node_status(&status.upstream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Answers every request with `answer`.
    async fn stub(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer).await;
            }
        });
        addr
    }

    fn evacuator(addr: SocketAddr) -> ProxyEvacuator {
        ProxyEvacuator::new(addr, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_500_garbage_or_a_missing_field_is_an_error_not_a_default() {
        let e = evacuator(stub(b"HTTP/1.1 500 Oops\r\ncontent-length: 4\r\n\r\nboom").await);
        assert!(
            matches!(
                e.report().await,
                Err(EvacuatorError::Refused { status: 500, .. })
            ),
            "500"
        );
        let e = evacuator(stub(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\ngarbage").await);
        assert!(matches!(
            e.report().await,
            Err(EvacuatorError::Malformed { .. })
        ));
        // A 200 with the right JSON type but without `stats`.
        let e = evacuator(stub(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await);
        let err = e.report().await.unwrap_err();
        assert!(matches!(err, EvacuatorError::Malformed { .. }), "{err}");
        let e = evacuator(stub(b"\x00\x01 not http").await);
        assert!(matches!(
            e.report().await,
            Err(EvacuatorError::Malformed { .. })
        ));
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(matches!(
            evacuator(addr).report().await,
            Err(EvacuatorError::Unreachable { .. })
        ));
    }
}
