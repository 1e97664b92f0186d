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
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use sluice_wire::h2::PREFACE;
use sluice_wire::http1::{
    Body, Framing, looks_like_request, parse_request_head, parse_response_head,
    with_connection_close,
};
use sluice_wire::ws::{Frames, close_frame, masked_close_frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::Shared;
use crate::cli::WsEvict;
use crate::copy::{drain, poll_read_with};
use crate::registry::{ConnControl, Signal, Upstream, lock};
use exchange::{Exchange, RequestVerdict};

/// How long a closing connection reads what the client still sends, waiting
/// for its FIN, before closing (RFC 9112 §9.6: closing with unread bytes would
/// reset the connection and could destroy the last response).
pub const LINGER: Duration = Duration::from_secs(1);

/// How often a connection told to close at the deadline while busy looks
/// whether it became idle.
const DEADLINE_POLL: Duration = Duration::from_millis(50);

/// Whether a connection's first bytes are an HTTP request line or the
/// HTTP/2 preface: `None` until enough bytes came to tell.
pub fn looks_like_http(buf: &[u8]) -> Option<bool> {
    if buf.len() < PREFACE.len() && PREFACE.starts_with(buf) && buf.len() >= 4 {
        return None;
    }
    looks_like_request(buf)
}

/// What both directions of one connection share.
struct Conn<'a> {
    control: &'a ConnControl,
    exchange: Mutex<Exchange>,
    /// The responses are over and the client got a FIN: stop forwarding
    /// requests and close.
    finished: Signal,
    /// A whole WebSocket Close frame came from the client (and went to the
    /// app, unless the proxy had sent the app its own).
    client_closed: Signal,
    /// Lossless WebSocket eviction: when the proxy sent the app its masked
    /// Close (raising `app_close_sent`).
    app_close_at: OnceLock<Instant>,
    app_close_sent: Signal,
    /// A whole WebSocket Close frame from the app went to the client.
    app_closed: Signal,
    ws_close_code: u16,
    grace: Duration,
}

impl Conn<'_> {
    fn marked(&self) -> bool {
        self.control.eviction().is_some()
    }

    /// Marked, with the lossless WebSocket eviction.
    fn lossless(&self) -> bool {
        self.control
            .eviction()
            .is_some_and(|e| e.ws_evict == WsEvict::Lossless)
    }

    /// Lossless eviction, and the app's Close has not come within the grace
    /// after the proxy's: fall back to injecting one to the client.
    fn lossless_timed_out(&self) -> bool {
        !self.app_closed.is_raised()
            && self
                .app_close_at
                .get()
                .is_some_and(|&at| Instant::now() >= at + self.grace)
    }

    /// The proxy may now close the WebSocket towards the client itself.
    fn inject_due(&self) -> bool {
        self.marked() && (!self.lossless() || self.lossless_timed_out())
    }

    /// Tells the evacuation whether the connection now waits idle for its
    /// next request (how long it has is the order of the deadline's closes).
    fn note_idle(&self) {
        // Under the lock, so that the two directions' notes land in the order
        // the exchange changed.
        let x = lock(&self.exchange);
        self.control.set_idle(x.idle());
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
        app_close_at: OnceLock::new(),
        app_close_sent: Signal::default(),
        app_closed: Signal::default(),
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

/// Resolves when a marked connection is to be closed at the evacuation's
/// deadline: when the evacuation tells it its turn came (idle connections go
/// longest idle first, at the evacuation's pace) and it is idle, or when it is
/// still busy a grace period after the deadline.
async fn deadline(conn: &Conn<'_>) -> &'static str {
    let eviction = conn.control.evicted().await;
    let at = eviction
        .deadline
        .unwrap_or_else(|| Instant::now() + conn.grace);
    let idle = || lock(&conn.exchange).idle();
    let turn = async {
        conn.control.closing().await;
        // Told while an exchange was in flight: that exchange normally ends
        // with `Connection: close`; otherwise close once it is over.
        while !idle() {
            tokio::time::sleep(DEADLINE_POLL).await;
        }
        "deadline_idle"
    };
    let busy = async {
        tokio::time::sleep_until(at + conn.grace).await;
        if idle() {
            // Idle connections wait for their turn.
            std::future::pending::<()>().await;
        }
        "deadline_busy"
    };
    tokio::select! {
        r = turn => r,
        r = busy => r,
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
    /// Forward the bytes, read more.
    More,
    /// Forward the bytes, wait until the connection is finished.
    Held,
    /// Forward the bytes, then the proxy's masked WebSocket Close (lossless
    /// eviction); what the client sends later is not forwarded.
    CloseApp,
    /// Do not forward the bytes (the app already got the proxy's Close).
    Drop,
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
    // Made once: each registers the task's waker at its first poll only.
    let (mut evicted, mut finished) = (conn.control.evicted(), conn.finished.wait());
    loop {
        let (n, step) = frame_requests(conn, &mut phase, &pending);
        conn.note_idle();
        if !matches!(step, RequestStep::Drop) {
            send(dst, &pending[..n], bytes).await?;
        }
        consume(&mut pending, n);
        if let Requests::WebSocket(f) = &phase
            && f.closes() > 0
        {
            conn.client_closed.raise();
        }
        match step {
            RequestStep::Held => {
                (&mut finished).await;
            }
            RequestStep::CloseApp => {
                send(
                    dst,
                    &masked_close_frame(conn.ws_close_code, mask_key()),
                    bytes,
                )
                .await?;
                let _ = conn.app_close_at.set(Instant::now());
                conn.app_close_sent.raise();
                // The bytes after the boundary, if any, are the client's to drop.
                continue;
            }
            RequestStep::More | RequestStep::Drop => {}
        }
        // A WebSocket (or a connection that may be upgraded to one) wakes up
        // for its eviction, which may be lossless and start on this side.
        let awaits_mark = matches!(phase, Requests::WebSocket(_) | Requests::Head)
            && !conn.marked()
            && !conn.app_close_sent.is_raised();
        let more = tokio::select! {
            biased;
            _ = &mut evicted, if awaits_mark => continue,
            _ = &mut finished => {
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
        if let Requests::WebSocket(frames) = phase
            && conn.lossless()
            && frames.at_message_boundary()
            && frames.closes() == 0
            && !conn.app_close_sent.is_raised()
            && !conn.app_closed.is_raised()
        {
            return (pos, RequestStep::CloseApp);
        }
        let input = &pending[pos..];
        if input.is_empty() {
            if matches!(phase, Requests::Head) && lock(&conn.exchange).upgraded {
                // Upgraded while the client was silent: a lossless eviction
                // must not wait for the client's first frame.
                *phase = Requests::WebSocket(Frames::new());
                continue;
            }
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
            Requests::WebSocket(frames) if conn.app_close_sent.is_raised() => {
                // Only the client's Close matters now (it ends the wait).
                let _ = frames.advance(input, false);
                return (pending.len(), RequestStep::Drop);
            }
            Requests::WebSocket(frames) => match frames.advance(input, conn.lossless()) {
                Ok(n) => pos += n,
                Err(_) => {
                    *phase = Requests::Opaque;
                    pos = pending.len();
                }
            },
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
        /// A Close went to the client: when, and the eviction reason once
        /// the client answers.
        close_sent: Option<(Instant, &'static str)>,
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
    // Made once: it registers the task's waker at its first poll only.
    let mut evicted = conn.control.evicted();
    loop {
        let finished =
            forward_responses(conn, &mut phase, &mut closing, &mut pending, dst, bytes).await?;
        conn.note_idle();
        if let Some(reason) = finished {
            let _ = dst.shutdown().await;
            conn.finished.raise();
            return Ok(Some(reason));
        }
        let more = match &phase {
            Responses::WebSocket {
                close_sent: Some((at, reason)),
                ..
            } => {
                let (at, reason) = (*at, *reason);
                tokio::select! {
                    () = conn.client_closed.wait() => Some(reason),
                    () = tokio::time::sleep_until(at + conn.grace) => Some("ws_timeout"),
                    r = read_more(src, &mut pending) => if r? { None } else { Some(reason) },
                }
                .map_or(Ok(true), Err)
            }
            // Lossless eviction: the app's Close is awaited; the wait ends at
            // the fallback's time, when the client gets a Close of the proxy's.
            Responses::WebSocket { .. } if conn.lossless() && !conn.inject_due() => {
                let fallback_at = conn.app_close_at.get().map(|&at| at + conn.grace);
                tokio::select! {
                    () = conn.app_close_sent.wait(), if fallback_at.is_none() => Ok(true),
                    () = sleep_until_some(fallback_at), if fallback_at.is_some() => Ok(true),
                    r = read_more(src, &mut pending) => Ok(r?),
                }
            }
            Responses::WebSocket { .. } | Responses::Opaque if !conn.marked() => {
                tokio::select! {
                    _ = &mut evicted => Ok(true),
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
            && frames.at_message_boundary()
        {
            if conn.lossless() && frames.closes() > 0 {
                // The app's Close went to the client: nothing was dropped.
                conn.app_closed.raise();
                *close_sent = Some((Instant::now(), "ws_app_close"));
            } else if conn.inject_due() {
                send(dst, &pending[flushed..pos], bytes).await?;
                send(dst, &close_frame(conn.ws_close_code), bytes).await?;
                let reason = if conn.lossless() {
                    "ws_app_timeout"
                } else {
                    "ws_close"
                };
                *close_sent = Some((Instant::now(), reason));
                flushed = pos;
            }
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

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A random WebSocket masking key (RFC 6455 §5.3 wants it unpredictable).
fn mask_key() -> [u8; 4] {
    use std::hash::{BuildHasher, RandomState};
    let h = RandomState::new().hash_one(Instant::now());
    (h as u32).to_be_bytes()
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
