//! The HTTP/1.1 keep-alive client: a `GET /` request loop on one connection,
//! each response read whole (head through `sluice_wire`'s parser, body by its
//! framing). A response with `Connection: close` followed by the server's
//! close is a graceful leave; a reset, a close before or inside a response, or
//! bytes that are not HTTP are socket errors, as wrk counts them.

use std::time::Duration;

use sluice_wire::http1::{Body, Framing, Method, parse_response_head};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::{Conn, Ctx, Ended, cause_of, compact, fill};
use crate::recorder::{Cause, HttpTally};

/// How one request on the connection ended.
enum Exchange {
    /// A whole response; the connection stays open.
    KeepAlive,
    /// A whole response announcing `Connection: close`.
    Close,
    /// The request failed at the socket level.
    Failed(Cause),
}

/// Sends requests on the connection until the server closes it gracefully,
/// a request fails, or the run stops.
pub(super) async fn hold(
    ctx: &Ctx,
    conn: Conn,
    stop: &mut watch::Receiver<bool>,
    counts: &mut HttpTally<'_>,
) -> Ended {
    let Conn {
        mut stream,
        mut buf,
    } = conn;
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-bench\r\n\r\n",
        host_header(&ctx.cfg.host, ctx.cfg.port)
    );
    let think = Duration::from_millis(ctx.cfg.http_interval_ms);
    loop {
        tokio::select! {
            biased;
            _ = crate::stopped(stop) => {
                let _ = stream.shutdown().await;
                return Ended::Stopped;
            }
            _ = tokio::time::sleep(think) => {}
        }
        counts.request();
        let exchange = tokio::select! {
            biased;
            _ = crate::stopped(stop) => {
                let _ = stream.shutdown().await;
                return Ended::Stopped;
            }
            e = exchange(&mut stream, &mut buf, request.as_bytes(), counts) => e,
        };
        match exchange {
            Exchange::KeepAlive => {}
            Exchange::Close => {
                // Close our side; the server lingers until our FIN.
                let _ = stream.shutdown().await;
                return Ended::Lost(Cause::ConnectionClose);
            }
            Exchange::Failed(cause) => {
                counts.socket_error();
                return Ended::Lost(cause);
            }
        }
    }
}

/// Writes one request and reads its response (skipping interim 1xx ones).
async fn exchange(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    request: &[u8],
    counts: &mut HttpTally<'_>,
) -> Exchange {
    if let Err(e) = stream.write_all(request).await {
        return Exchange::Failed(cause_of(&e));
    }
    loop {
        let head = loop {
            match parse_response_head(buf, Method::Other) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                Err(_) => return Exchange::Failed(Cause::ProtocolError),
            }
            match fill(stream, buf).await {
                Ok(0) => return Exchange::Failed(Cause::ClosedByPeer),
                Ok(_) => {}
                Err(cause) => return Exchange::Failed(cause),
            }
        };
        compact(buf, head.len);
        if head.interim() {
            continue;
        }
        if head.framing == Framing::Upgrade {
            return Exchange::Failed(Cause::ProtocolError);
        }
        let mut body = Body::new(head.framing);
        loop {
            match body.advance(buf) {
                Ok(used) => compact(buf, used),
                Err(_) => return Exchange::Failed(Cause::ProtocolError),
            }
            if body.done() {
                break;
            }
            match fill(stream, buf).await {
                Ok(0) => {
                    if body.eof().is_err() {
                        return Exchange::Failed(Cause::ClosedByPeer);
                    }
                    break;
                }
                Ok(_) => {}
                Err(cause) => return Exchange::Failed(cause),
            }
        }
        if !(200..300).contains(&head.status) {
            counts.non2xx();
        }
        return if head.close {
            Exchange::Close
        } else {
            buf.clear();
            Exchange::KeepAlive
        };
    }
}

pub(super) fn host_header(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
