//! HTTP/2 cleartext (prior knowledge) and gRPC: frames are spliced by their
//! 9-byte headers, never decoded. Eviction is the two-phase GOAWAY of RFC
//! 9113 §6.8: GOAWAY(2^31−1, NO_ERROR) and a PING of the proxy's own between
//! two server frames; once the client's ACK of that PING comes back (it is
//! dropped, the app never sees it) the client has read the first GOAWAY and
//! opens no more streams, so GOAWAY(highest client stream, NO_ERROR) follows
//! with a second PING. Once that one's ACK is back too (the client has read
//! the final GOAWAY, so every stream it started is known) and the open streams
//! have finished, within the evict grace, the connection closes.

use std::collections::HashSet;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use sluice_wire::h2::{MAX_STREAM_ID, Splicer, Step, goaway, kind, ping};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use super::{LINGER, Signal, consume, read_more, send};
use crate::Shared;
use crate::copy::drain;
use crate::registry::{ConnControl, Upstream, lock};

/// The payloads of the proxy's two PINGs.
const OPAQUE: [[u8; 8]; 2] = [*b"sluice\0\x01", *b"sluice\0\x02"];
/// How long the first GOAWAY waits for the PING's ACK before the second.
const PING_WAIT: Duration = Duration::from_secs(2);
/// How often a draining connection looks whether its streams are done.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// The streams the client opened and the server has not ended.
#[derive(Debug, Default)]
struct Streams {
    max_client: u32,
    open: HashSet<u32>,
}

struct H2<'a> {
    control: &'a ConnControl,
    streams: Mutex<Streams>,
    /// Set by the server side when it sends its PING; taken by the client side.
    swallow: Mutex<Option<[u8; 8]>>,
    /// The ACKs of the first and the second PING came back.
    acked: [Signal; 2],
    finished: Signal,
    grace: Duration,
    /// The final GOAWAY went out: the eviction's reason, should the client
    /// close first (gRPC clients do once their streams are done).
    goaway_sent: Mutex<Option<&'static str>>,
}

/// Copies an HTTP/2 connection both ways; returns the eviction reason when it
/// was evicted.
pub async fn pipe(
    shared: &Shared,
    upstream: &Upstream,
    mut client: TcpStream,
    mut server: TcpStream,
    control: &ConnControl,
    opening: Vec<u8>,
) -> Option<&'static str> {
    let m = &upstream.metrics;
    let h2 = H2 {
        control,
        streams: Mutex::default(),
        swallow: Mutex::default(),
        acked: Default::default(),
        finished: Signal::default(),
        grace: shared.args.evict_grace,
        goaway_sent: Mutex::default(),
    };
    let (mut client_r, mut client_w) = client.split();
    let (mut server_r, mut server_w) = server.split();
    let outcome = tokio::select! {
        r = async {
            tokio::try_join!(
                requests(&h2, opening, &mut client_r, &mut server_w, &m.client_to_upstream),
                responses(&h2, &mut server_r, &mut client_w, &m.upstream_to_client),
            )
        } => r.ok().and_then(|(c, u)| u.or(c)),
        () = async {
            control.evicted().await;
            tokio::time::sleep(PING_WAIT + h2.grace * 2).await;
        } => Some("h2_timeout"),
    };
    if outcome == Some("h2_timeout") {
        let _ = server_w.shutdown().await;
        let _ = client_w.shutdown().await;
        let _ = tokio::time::timeout(LINGER, drain(&mut client_r)).await;
    }
    let sent = *lock(&h2.goaway_sent);
    control
        .eviction()
        .map(|_| outcome.or(sent).unwrap_or("close"))
}

/// Client→server: records streams, drops the ACK of the proxy's PING.
async fn requests(
    h2: &H2<'_>,
    opening: Vec<u8>,
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    bytes: &Counter,
) -> io::Result<Option<&'static str>> {
    let mut splicer = Splicer::client();
    let mut opaque = false;
    let mut pending = opening;
    loop {
        if let Some(o) = lock(&h2.swallow).take() {
            splicer.swallow_ping_ack(o);
        }
        let (mut pos, mut flushed) = (0, 0);
        while !opaque {
            match splicer.step(&pending[pos..]) {
                Ok(Step::Forward(n, header)) => {
                    if let Some(h) = header {
                        let mut s = lock(&h2.streams);
                        if h.kind == kind::HEADERS && h.stream % 2 == 1 {
                            s.max_client = s.max_client.max(h.stream);
                            s.open.insert(h.stream);
                        } else if h.kind == kind::RST_STREAM {
                            s.open.remove(&h.stream);
                        }
                    }
                    pos += n;
                }
                Ok(Step::Drop(n)) => {
                    send(dst, &pending[flushed..pos], bytes).await?;
                    pos += n;
                    flushed = pos;
                    let first = !h2.acked[0].is_raised();
                    h2.acked[usize::from(!first)].raise();
                }
                Ok(Step::NeedMore) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/2 client stream does not parse; copying it as it is");
                    opaque = true;
                }
            }
        }
        if opaque {
            pos = pending.len();
        }
        send(dst, &pending[flushed..pos], bytes).await?;
        consume(&mut pending, pos);
        let more = tokio::select! {
            biased;
            () = h2.finished.wait() => {
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

/// Where the eviction of an HTTP/2 connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// GOAWAY(2^31−1) and the PING went out at this time.
    AwaitAck(Instant),
    /// The final GOAWAY went out at this time; `acked`: after the PING's ACK.
    Draining(Instant, bool),
    /// Not HTTP/2 after all: eviction is a plain close.
    Opaque,
}

/// Server→client: follows frames, injects the GOAWAYs and PING, ends streams.
async fn responses(
    h2: &H2<'_>,
    src: &mut ReadHalf<'_>,
    dst: &mut WriteHalf<'_>,
    bytes: &Counter,
) -> io::Result<Option<&'static str>> {
    let mut splicer = Splicer::server();
    let mut phase = Phase::Serving;
    let mut pending = Vec::new();
    // Made once: it registers the task's waker at its first poll only.
    let mut evicted = h2.control.evicted();
    loop {
        let (mut pos, mut flushed) = (0, 0);
        let mut done = None;
        loop {
            let marked = h2.control.eviction().is_some();
            if splicer.at_boundary() && splicer.frames() > 0 {
                match phase {
                    Phase::Serving if marked => {
                        *lock(&h2.swallow) = Some(OPAQUE[0]);
                        send(dst, &pending[flushed..pos], bytes).await?;
                        let mut frames = goaway(MAX_STREAM_ID, 0).to_vec();
                        frames.extend_from_slice(&ping(OPAQUE[0]));
                        send(dst, &frames, bytes).await?;
                        flushed = pos;
                        phase = Phase::AwaitAck(Instant::now());
                    }
                    Phase::AwaitAck(since)
                        if h2.acked[0].is_raised() || since.elapsed() >= PING_WAIT =>
                    {
                        let acked = h2.acked[0].is_raised();
                        let last = lock(&h2.streams).max_client;
                        let mut frames = goaway(last, 0).to_vec();
                        if acked {
                            *lock(&h2.swallow) = Some(OPAQUE[1]);
                            frames.extend_from_slice(&ping(OPAQUE[1]));
                        }
                        send(dst, &pending[flushed..pos], bytes).await?;
                        send(dst, &frames, bytes).await?;
                        flushed = pos;
                        phase = Phase::Draining(Instant::now(), acked);
                        *lock(&h2.goaway_sent) =
                            Some(if acked { "goaway" } else { "goaway_no_ack" });
                    }
                    _ => {}
                }
            }
            match phase {
                Phase::Draining(since, acked) => {
                    // After the second ACK every stream the client started is
                    // known; without ACKs (a client that does not answer PINGs)
                    // the open streams are all there is to go by.
                    let seen_all = !acked || h2.acked[1].is_raised();
                    // Only between frames: the frame that ended the last
                    // stream (its header counted already) goes out whole.
                    if seen_all && splicer.at_boundary() && lock(&h2.streams).open.is_empty() {
                        done = Some(if acked { "goaway" } else { "goaway_no_ack" });
                        break;
                    }
                    if since.elapsed() >= h2.grace {
                        done = Some("h2_timeout");
                        break;
                    }
                }
                Phase::Opaque if marked => {
                    done = Some("close");
                    break;
                }
                _ => {}
            }
            if phase == Phase::Opaque {
                pos = pending.len();
                break;
            }
            match splicer.step(&pending[pos..]) {
                Ok(Step::Forward(n, header)) => {
                    if let Some(h) = header
                        && (h.ends_stream() || h.kind == kind::RST_STREAM)
                    {
                        lock(&h2.streams).open.remove(&h.stream);
                    }
                    pos += n;
                }
                Ok(Step::Drop(n)) => pos += n,
                Ok(Step::NeedMore) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/2 server stream does not parse; copying it as it is");
                    phase = Phase::Opaque;
                }
            }
        }
        send(dst, &pending[flushed..pos], bytes).await?;
        consume(&mut pending, pos);
        if let Some(reason) = done {
            let _ = dst.shutdown().await;
            h2.finished.raise();
            return Ok(Some(reason));
        }
        let more = match phase {
            Phase::Serving | Phase::Opaque if h2.control.eviction().is_none() => {
                tokio::select! {
                    _ = &mut evicted => true,
                    r = read_more(src, &mut pending) => r?,
                }
            }
            Phase::AwaitAck(since) => tokio::select! {
                () = h2.acked[0].wait() => true,
                () = tokio::time::sleep_until(since + PING_WAIT) => true,
                r = read_more(src, &mut pending) => r?,
            },
            Phase::Draining(..) => tokio::select! {
                () = tokio::time::sleep(DRAIN_POLL) => true,
                r = read_more(src, &mut pending) => r?,
            },
            _ => read_more(src, &mut pending).await?,
        };
        if !more {
            let _ = dst.shutdown().await;
            return Ok(None);
        }
    }
}
