//! HTTP through the proxy: HTTP/1.x keep-alive connections (and WebSocket
//! after an upgrade) are copied byte for byte while their messages are
//! followed, so that an eviction never cuts an exchange:
//!
//! * HTTP/1.x: the response to the last request forwarded gets
//!   `Connection: close` in its head, goes out to its last byte, and the
//!   connection then closes gracefully (FIN, read until the client's FIN or
//!   [`LINGER`]). Requests pipelined after it are not forwarded. An idle
//!   connection waits for its next request; only at the evacuation's deadline
//!   is it closed while idle.
//! * WebSocket: an unmasked Close frame (1001 or 1012) between two whole
//!   server messages; server data after it is dropped, the client's Close goes
//!   on to the app, and the proxy closes once it has passed (or after the
//!   evict grace).
//!
//! * HTTP/2 cleartext and gRPC: see [`h2`].
//!
//! The framing is `sluice_wire`'s (sans-IO); the decisions are [`exchange`]'s.

pub mod exchange;
pub mod h2;

use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use sluice_wire::h2::PREFACE;
use sluice_wire::http1::{
    Body, Framing, looks_like_request, parse_request_head, parse_response_head,
    with_connection_close,
};
use sluice_wire::ws::{Frames, close_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Shared;
use crate::copy::{drain, poll_read_with};
use crate::registry::{ConnControl, Upstream, lock};
use exchange::{Exchange, RequestVerdict};

/// How long a closing connection reads what the client still sends, waiting
/// for its FIN, before closing (RFC 9112 §9.6: closing with unread bytes would
/// reset the connection and could destroy the last response).
pub const LINGER: Duration = Duration::from_secs(1);

/// How often a connection past its deadline looks whether it became idle.
const DEADLINE_POLL: Duration = Duration::from_millis(50);

/// Whether a connection's first bytes are an HTTP request line or the
/// HTTP/2 preface: `None` until enough bytes came to tell.
pub fn looks_like_http(buf: &[u8]) -> Option<bool> {
    if buf.len() < PREFACE.len() && PREFACE.starts_with(buf) && buf.len() >= 4 {
        return None;
    }
    looks_like_request(buf)
}

/// A flag one direction raises and the other waits for.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    notify: Notify,
}

impl Signal {
    pub(crate) fn is_raised(&self) -> bool {
        self.raised.load(Ordering::SeqCst)
    }

    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.raised.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// What both directions of one connection share.
struct Conn<'a> {
    control: &'a ConnControl,
    exchange: Mutex<Exchange>,
    /// The responses are over and the client got a FIN: stop forwarding
    /// requests and close.
    finished: Signal,
    /// A whole WebSocket Close frame from the client went to the app.
    client_closed: Signal,
    ws_close_code: u16,
    grace: Duration,
}

impl Conn<'_> {
    fn marked(&self) -> bool {
        self.control.eviction().is_some()
    }
}

/// Copies an HTTP connection both ways until both directions are done, or it
/// is closed at the evacuation's deadline; returns the eviction reason when it
/// was evicted.
pub async fn pipe(
    shared: &Shared,
    upstream: &Upstream,
    mut client: TcpStream,
    mut server: TcpStream,
    control: &ConnControl,
    opening: Vec<u8>,
) -> Option<&'static str> {
    if opening.starts_with(PREFACE) {
        return h2::pipe(shared, upstream, client, server, control, opening).await;
    }
    let m = &upstream.metrics;
    let conn = Conn {
        control,
        exchange: Mutex::default(),
        finished: Signal::default(),
        client_closed: Signal::default(),
        ws_close_code: shared.args.ws_close_code,
        grace: shared.args.evict_grace,
    };
    let (mut client_r, mut client_w) = client.split();
    let (mut server_r, mut server_w) = server.split();
    let outcome = tokio::select! {
        r = async {
            tokio::try_join!(
                requests(&conn, opening, &mut client_r, &mut server_w, &m.client_to_upstream),
                responses(&conn, &mut server_r, &mut client_w, &m.upstream_to_client),
            )
        } => r.ok().and_then(|(c, u)| u.or(c)),
        reason = deadline(&conn) => Some(reason),
    };
    if outcome.is_some_and(|r| r.starts_with("deadline")) {
        let _ = server_w.shutdown().await;
        let _ = client_w.shutdown().await;
        let _ = tokio::time::timeout(LINGER, drain(&mut client_r)).await;
    }
    control.eviction().map(|_| outcome.unwrap_or("close"))
}

/// Resolves when a marked connection reaches the evacuation's deadline and is
/// idle, or a grace period later whatever it does.
async fn deadline(conn: &Conn<'_>) -> &'static str {
    let eviction = conn.control.evicted().await;
    let at = eviction
        .deadline
        .unwrap_or_else(|| Instant::now() + conn.grace);
    tokio::time::sleep_until(at).await;
    let hard = at + conn.grace;
    loop {
        if lock(&conn.exchange).idle() {
            return "deadline_idle";
        }
        if Instant::now() >= hard {
            return "deadline_busy";
        }
        tokio::time::sleep(DEADLINE_POLL).await;
    }
}

/// Reads what is readable into `pending`; `Ok(false)` at EOF. One read per
/// call, into the thread's scratch buffer (see [`crate::copy`]): `pending`
/// only ever holds what is not forwarded yet.
pub(crate) async fn read_more(src: &mut ReadHalf<'_>, pending: &mut Vec<u8>) -> io::Result<bool> {
    std::future::poll_fn(|cx| poll_read_with(cx, src, |read| pending.extend_from_slice(read)))
        .await
        .map(|read| read.is_some())
}

/// Writes `bytes` and counts them.
pub(crate) async fn send(
    dst: &mut WriteHalf<'_>,
    bytes: &[u8],
    counter: &Counter,
) -> io::Result<()> {
    if !bytes.is_empty() {
        dst.write_all(bytes).await?;
        counter.inc_by(bytes.len() as u64);
    }
    Ok(())
}

/// Drops the first `n` bytes; an emptied buffer is released (idle
/// connections hold no memory).
pub(crate) fn consume(pending: &mut Vec<u8>, n: usize) {
    if n >= pending.len() {
        *pending = Vec::new();
    } else {
        pending.drain(..n);
    }
}

/// Where the client→upstream direction is.
enum Requests {
    Head,
    Body(Body),
    WebSocket(Frames),
    Opaque,
}

/// What the request side should do after the bytes it has.
enum RequestStep {
    More,
    Held,
}

/// The client→upstream direction.
async fn requests(
    conn: &Conn<'_>,
    opening: Vec<u8>,
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    bytes: &Counter,
) -> io::Result<Option<&'static str>> {
    let mut pending = opening;
    let mut phase = Requests::Head;
    loop {
        let (n, step) = frame_requests(conn, &mut phase, &pending);
        send(dst, &pending[..n], bytes).await?;
        consume(&mut pending, n);
        if let Requests::WebSocket(f) = &phase
            && f.closes() > 0
        {
            conn.client_closed.raise();
        }
        if matches!(step, RequestStep::Held) {
            conn.finished.wait().await;
        }
        let more = tokio::select! {
            biased;
            () = conn.finished.wait() => {
                // The last response went out: the upstream gets nothing more,
                // the client's FIN is awaited (its bytes read and dropped).
                let _ = dst.shutdown().await;
                let _ = tokio::time::timeout(LINGER, drain(src)).await;
                return Ok(None);
            }
            r = read_more(src, &mut pending) => r?,
        };
        if !more {
            let _ = dst.shutdown().await;
            return Ok(None);
        }
    }
}

/// Follows requests in `pending`; returns how many bytes may be forwarded.
fn frame_requests(conn: &Conn<'_>, phase: &mut Requests, pending: &[u8]) -> (usize, RequestStep) {
    let mut pos = 0;
    loop {
        let input = &pending[pos..];
        if input.is_empty() {
            return (pos, RequestStep::More);
        }
        match phase {
            Requests::Head => {
                let mut x = lock(&conn.exchange);
                if x.opaque {
                    *phase = Requests::Opaque;
                    continue;
                }
                if x.upgraded {
                    *phase = Requests::WebSocket(Frames::new());
                    continue;
                }
                match parse_request_head(input) {
                    Ok(None) => {
                        x.partial_request(true);
                        return (pos, RequestStep::More);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "request is not HTTP/1.x; copying it as it is");
                        x.opaque = true;
                        *phase = Requests::Opaque;
                    }
                    Ok(Some(head)) => match x.request(&head, conn.marked()) {
                        RequestVerdict::Hold => return (pos, RequestStep::Held),
                        RequestVerdict::Forward => {
                            pos += head.len;
                            let body = Body::new(head.framing);
                            if body.done() {
                                x.request_done();
                            } else {
                                *phase = Requests::Body(body);
                            }
                        }
                    },
                }
            }
            Requests::Body(body) => match body.advance(input) {
                Ok(n) => {
                    pos += n;
                    if body.done() {
                        lock(&conn.exchange).request_done();
                        *phase = Requests::Head;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "request body is not well framed; copying it as it is");
                    lock(&conn.exchange).opaque = true;
                    *phase = Requests::Opaque;
                }
            },
            Requests::WebSocket(frames) => {
                if frames.advance(input, false).is_err() {
                    *phase = Requests::Opaque;
                }
                pos = pending.len();
            }
            Requests::Opaque => pos = pending.len(),
        }
    }
}

/// Where the upstream→client direction is.
enum Responses {
    Head,
    Body(Body),
    WebSocket {
        frames: Frames,
        close_sent: Option<Instant>,
    },
    Opaque,
}

/// The upstream→client direction.
async fn responses(
    conn: &Conn<'_>,
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    bytes: &Counter,
) -> io::Result<Option<&'static str>> {
    let mut pending = Vec::new();
    let mut phase = Responses::Head;
    // Set when this proxy added `Connection: close` to the response in flight.
    let mut closing = false;
    loop {
        let finished =
            forward_responses(conn, &mut phase, &mut closing, &mut pending, dst, bytes).await?;
        if let Some(reason) = finished {
            let _ = dst.shutdown().await;
            conn.finished.raise();
            return Ok(Some(reason));
        }
        let more = match &phase {
            Responses::WebSocket {
                close_sent: Some(at),
                ..
            } => {
                let at = *at;
                tokio::select! {
                    () = conn.client_closed.wait() => Some("ws_close"),
                    () = tokio::time::sleep_until(at + conn.grace) => Some("ws_timeout"),
                    r = read_more(src, &mut pending) => if r? { None } else { Some("ws_close") },
                }
                .map_or(Ok(true), Err)
            }
            Responses::WebSocket { .. } | Responses::Opaque if !conn.marked() => {
                tokio::select! {
                    _ = conn.control.evicted() => Ok(true),
                    r = read_more(src, &mut pending) => Ok(r?),
                }
            }
            _ => Ok(read_more(src, &mut pending).await?),
        };
        match more {
            Ok(true) => {}
            Ok(false) => {
                // The upstream closed: pass the FIN on. A body up to the close
                // ends here; the client's side ends by itself.
                if let Responses::Body(body) = &mut phase
                    && body.eof().is_ok()
                {
                    lock(&conn.exchange).response_done();
                }
                let _ = dst.shutdown().await;
                return Ok(None);
            }
            Err(reason) => {
                let _ = dst.shutdown().await;
                conn.finished.raise();
                return Ok(Some(reason));
            }
        }
    }
}

/// Forwards the responses in `pending`, editing the head that must carry
/// `Connection: close` and injecting the WebSocket Close; `Some(reason)` when
/// the connection's last response went out.
async fn forward_responses(
    conn: &Conn<'_>,
    phase: &mut Responses,
    closing: &mut bool,
    pending: &mut Vec<u8>,
    dst: &mut WriteHalf<'_>,
    bytes: &Counter,
) -> io::Result<Option<&'static str>> {
    // pending[flushed..pos] is forwarded as it is, in one write where possible.
    let (mut pos, mut flushed) = (0, 0);
    let mut done = None;
    loop {
        let marked = conn.marked();
        if let Responses::WebSocket { frames, close_sent } = phase
            && close_sent.is_none()
            && marked
            && frames.at_message_boundary()
        {
            send(dst, &pending[flushed..pos], bytes).await?;
            send(dst, &close_frame(conn.ws_close_code), bytes).await?;
            *close_sent = Some(Instant::now());
            flushed = pos;
        }
        let input = &pending[pos..];
        if input.is_empty() {
            break;
        }
        match phase {
            Responses::Head => {
                let decided = {
                    let mut x = lock(&conn.exchange);
                    if x.opaque {
                        Err(None)
                    } else {
                        match parse_response_head(input, x.answering()) {
                            Ok(None) => break,
                            Err(e) => {
                                x.opaque = true;
                                Err(Some(e))
                            }
                            Ok(Some(head)) => {
                                let add_close = x.response(&head, marked);
                                Ok((head, add_close))
                            }
                        }
                    }
                };
                let (head, add_close) = match decided {
                    Ok(d) => d,
                    Err(e) => {
                        if let Some(e) = e {
                            tracing::debug!(error = %e, "response is not HTTP/1.x; copying it as it is");
                        }
                        *phase = Responses::Opaque;
                        continue;
                    }
                };
                if add_close {
                    let edited = with_connection_close(&input[..head.len]);
                    send(dst, &pending[flushed..pos], bytes).await?;
                    send(dst, &edited, bytes).await?;
                    flushed = pos + head.len;
                    *closing = true;
                }
                pos += head.len;
                if head.framing == Framing::Upgrade {
                    *phase = Responses::WebSocket {
                        frames: Frames::new(),
                        close_sent: None,
                    };
                } else if !head.interim() {
                    let body = Body::new(head.framing);
                    if body.done() {
                        lock(&conn.exchange).response_done();
                        if *closing {
                            done = Some("connection_close");
                            break;
                        }
                    } else {
                        *phase = Responses::Body(body);
                    }
                }
            }
            Responses::Body(body) => match body.advance(input) {
                Ok(n) => {
                    pos += n;
                    if body.done() {
                        lock(&conn.exchange).response_done();
                        *phase = Responses::Head;
                        if *closing {
                            done = Some("connection_close");
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "response body is not well framed; copying it as it is");
                    lock(&conn.exchange).opaque = true;
                    *phase = Responses::Opaque;
                }
            },
            Responses::WebSocket { frames, close_sent } => {
                if close_sent.is_some() {
                    // After the Close: nothing more goes to the client.
                    send(dst, &pending[flushed..pos], bytes).await?;
                    pos = pending.len();
                    flushed = pos;
                } else {
                    match frames.advance(input, marked) {
                        Ok(n) => pos += n,
                        Err(_) => *phase = Responses::Opaque,
                    }
                }
            }
            Responses::Opaque => {
                if marked {
                    done = Some("close");
                    break;
                }
                pos = pending.len();
            }
        }
    }
    if done.is_none() && marked_opaque(conn, phase) {
        done = Some("close");
    }
    send(dst, &pending[flushed..pos], bytes).await?;
    consume(pending, pos);
    Ok(done)
}

/// An opaque connection is evicted as a plain close.
fn marked_opaque(conn: &Conn<'_>, phase: &Responses) -> bool {
    matches!(phase, Responses::Opaque) && conn.marked()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_and_the_h2_preface_are_http() {
        assert_eq!(looks_like_http(b"GET / HTTP/1.1\r\n"), Some(true));
        assert_eq!(
            looks_like_http(b"PRI * HTT"),
            None,
            "wait for the whole preface"
        );
        assert_eq!(looks_like_http(PREFACE), Some(true));
        assert_eq!(looks_like_http(b"PRI / HTTP/1.1"), Some(true));
        assert_eq!(looks_like_http(&[0x10, 0x20]), Some(false));
        let mut v = Vec::from(&b"ok"[..]);
        consume(&mut v, 1);
        assert_eq!(v, b"k");
        consume(&mut v, 5);
        assert_eq!(v.capacity(), 0, "an emptied buffer is released");
    }
}
