//! The WebSocket client: an upgrade handshake (`GET /` with `Upgrade:
//! websocket`), then a loop of masked text messages on the connection, each
//! waiting for its echo (any WebSocket echo server). A Close from the server
//! is answered with the same code and is a graceful leave; a close without
//! one, a reset, an echo that is not the message sent, or bytes that are not
//! WebSocket are socket errors; an upgrade answered with anything but `101`
//! is a non-2xx. `requests` counts the messages sent and refused upgrades.

use std::time::Duration;

use sluice_wire::http1::{Method, parse_response_head};
use sluice_wire::ws::{FrameHead, OPCODE_CLOSE, masked_frame, parse_head};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::http::host_header;
use super::{Conn, Ctx, Ended, Rng, cause_of, compact, fill, read_some};
use crate::recorder::{Cause, HttpTally};

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_PING: u8 = 0x9;
/// A larger echo is not one of ours: a protocol error.
const MAX_MESSAGE: u64 = 1 << 20;
/// "Normal closure", what the client sends when the run stops.
const CLOSE_NORMAL: u16 = 1000;
/// The code a Close without one stands for (RFC 6455 §7.1.5).
const CLOSE_NO_STATUS: u16 = 1005;

/// What the server sent that ends a wait.
enum Incoming {
    /// A whole data message.
    Message(Vec<u8>),
    /// A Close with its code; already answered.
    Close(u16),
}

/// The connection's writing side and its masking keys.
struct Socket {
    stream: TcpStream,
    buf: Vec<u8>,
    rng: Rng,
}

impl Socket {
    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), Cause> {
        let mask = ((self.rng.next_f64() * f64::from(u32::MAX)) as u32).to_be_bytes();
        self.stream
            .write_all(&masked_frame(opcode, payload, mask))
            .await
            .map_err(|e| cause_of(&e))
    }

    /// Reads frames until a whole message or a Close (answered here); Pings
    /// are answered with Pongs on the way.
    async fn next(&mut self) -> Result<Incoming, Cause> {
        let mut message = Vec::new();
        loop {
            let head = match parse_head(&self.buf) {
                Ok(Some(h)) if (self.buf.len() as u64) >= h.header_len as u64 + h.len => h,
                Ok(Some(h)) if h.len > MAX_MESSAGE => return Err(Cause::ProtocolError),
                Ok(_) => match fill(&self.stream, &mut self.buf).await? {
                    0 => return Err(Cause::ClosedByPeer),
                    _ => continue,
                },
                Err(_) => return Err(Cause::ProtocolError),
            };
            let payload = self.take(&head);
            match head.opcode {
                OPCODE_CLOSE => {
                    let code = match payload[..] {
                        [hi, lo, ..] => u16::from_be_bytes([hi, lo]),
                        _ => CLOSE_NO_STATUS,
                    };
                    let echo = if code == CLOSE_NO_STATUS {
                        Vec::new()
                    } else {
                        code.to_be_bytes().to_vec()
                    };
                    // Best effort: the server may already have closed (the
                    // closing handshake is its, and it is complete for it).
                    let _ = self.send(OPCODE_CLOSE, &echo).await;
                    return Ok(Incoming::Close(code));
                }
                OPCODE_PING => self.send(0xA, &payload).await?,
                0x0..=0x2 => {
                    message.extend_from_slice(&payload);
                    if message.len() as u64 > MAX_MESSAGE {
                        return Err(Cause::ProtocolError);
                    }
                    if head.fin {
                        return Ok(Incoming::Message(message));
                    }
                }
                _ => {}
            }
        }
    }

    /// Takes one whole frame's payload out of the buffer, unmasked.
    fn take(&mut self, head: &FrameHead) -> Vec<u8> {
        let end = head.header_len + usize::try_from(head.len).unwrap_or(usize::MAX);
        let mut payload = self.buf[head.header_len..end].to_vec();
        if let Some(mask) = head.mask {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        compact(&mut self.buf, end);
        payload
    }

    /// The server's Close came and was answered: wait for its FIN.
    async fn closed(mut self, code: u16) -> Ended {
        let _ = self.stream.shutdown().await;
        super::wait_closed(&self.stream, &mut self.buf).await;
        Ended::Lost(Cause::WsClose(code))
    }
}

/// Upgrades the connection, then sends messages until the server closes it,
/// a message fails, or the run stops.
pub(super) async fn hold(
    ctx: &Ctx,
    index: u32,
    conn: Conn,
    stop: &mut watch::Receiver<bool>,
    counts: &mut HttpTally<'_>,
) -> Ended {
    let Conn { stream, buf } = conn;
    let mut s = Socket {
        stream,
        buf,
        rng: Rng::new(index),
    };
    let upgraded = tokio::select! {
        biased;
        _ = crate::stopped(stop) => return Ended::Stopped,
        r = upgrade(ctx, &mut s) => r,
    };
    match upgraded {
        Ok(true) => {}
        Ok(false) => {
            counts.request();
            counts.non2xx();
            let _ = s.stream.shutdown().await;
            return Ended::Lost(Cause::ProtocolError);
        }
        Err(cause) => {
            counts.socket_error();
            return Ended::Lost(cause);
        }
    }
    let think = Duration::from_millis(ctx.cfg.http_interval_ms);
    let mut n = 0u64;
    loop {
        // Between messages, a Close (or anything else) from the server is
        // read at once rather than after the next message. Bytes that came
        // behind the last echo (its Close, often with the FIN) are already
        // here: they are read before the socket is.
        let spoke = if s.buf.is_empty() {
            let idle_read = tokio::select! {
                biased;
                _ = crate::stopped(stop) => {
                    let _ = s.send(OPCODE_CLOSE, &CLOSE_NORMAL.to_be_bytes()).await;
                    let _ = s.stream.shutdown().await;
                    return Ended::Stopped;
                }
                r = s.stream.readable() => Some(r),
                _ = tokio::time::sleep(think) => None,
            };
            match idle_read.map(|ready| ready.and_then(|()| read_some(&s.stream, &mut s.buf))) {
                None => false,
                Some(Ok(0)) => {
                    counts.socket_error();
                    return Ended::Lost(Cause::ClosedByPeer);
                }
                Some(Ok(_)) => true,
                // The readiness was stale (it stays set until a read would
                // block): nothing came.
                Some(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Some(Err(e)) => {
                    counts.socket_error();
                    return Ended::Lost(cause_of(&e));
                }
            }
        } else {
            true
        };
        if spoke {
            let incoming = tokio::select! {
                biased;
                _ = crate::stopped(stop) => {
                    let _ = s.stream.shutdown().await;
                    return Ended::Stopped;
                }
                r = s.next() => r,
            };
            match incoming {
                Ok(Incoming::Close(code)) => return s.closed(code).await,
                Ok(Incoming::Message(_)) => {
                    counts.socket_error();
                    return Ended::Lost(Cause::ProtocolError);
                }
                Err(cause) => {
                    counts.socket_error();
                    return Ended::Lost(cause);
                }
            }
        }
        counts.request();
        let message = format!("m{n}");
        n += 1;
        let echoed = tokio::select! {
            biased;
            _ = crate::stopped(stop) => {
                let _ = s.stream.shutdown().await;
                return Ended::Stopped;
            }
            r = async {
                s.send(OPCODE_TEXT, message.as_bytes()).await?;
                s.next().await
            } => r,
        };
        match echoed {
            Ok(Incoming::Message(m)) if m == message.as_bytes() => {}
            Ok(Incoming::Message(_)) => {
                counts.socket_error();
                return Ended::Lost(Cause::ProtocolError);
            }
            // Closed before the echo: the server did not answer this message
            // (it is counted, not failed: the client sends it again elsewhere).
            Ok(Incoming::Close(code)) => return s.closed(code).await,
            Err(cause) => {
                counts.socket_error();
                return Ended::Lost(cause);
            }
        }
    }
}

/// Sends the upgrade request and reads the answer's head: true for `101`.
async fn upgrade(ctx: &Ctx, s: &mut Socket) -> Result<bool, Cause> {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: c2x1aWNlLWJlbmNoLWtleQ==\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: sluice-bench\r\n\r\n",
        host_header(&ctx.cfg.host, ctx.cfg.port)
    );
    s.stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| cause_of(&e))?;
    loop {
        match parse_response_head(&s.buf, Method::Other) {
            Ok(Some(head)) => {
                compact(&mut s.buf, head.len);
                return Ok(head.status == 101);
            }
            Ok(None) => {}
            Err(_) => return Err(Cause::ProtocolError),
        }
        if fill(&s.stream, &mut s.buf).await? == 0 {
            return Err(Cause::ClosedByPeer);
        }
    }
}
