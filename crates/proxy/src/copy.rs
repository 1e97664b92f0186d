//! Copying one direction of a proxied connection, half-close correct (a FIN is
//! passed on and the other direction keeps flowing, as in tokio's
//! `copy_bidirectional`), and able to stop between two packets when the
//! connection is evicted.
//!
//! An idle direction holds no buffer: it waits for readability, then reads into a
//! buffer allocated for the burst and dropped when a read would block. Writes
//! apply backpressure: while the destination does not take bytes, the source is
//! not read, so a slow reader never makes the proxy buffer more than one chunk.

use std::io;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::mqtt::Tracker;
use crate::registry::ConnControl;

/// Bytes read at once while data flows.
pub const CHUNK: usize = 16 * 1024;

/// How a direction's copy loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The source sent its FIN (passed on to the destination).
    Eof,
    /// The connection is evicted and the stream is at a point where it may stop.
    Stopped,
}

/// One direction of a connection: its two half sockets and what it knows.
pub struct Direction<'a, 'b> {
    /// Where bytes come from.
    pub src: &'a mut ReadHalf<'b>,
    /// Where they go.
    pub dst: &'a mut WriteHalf<'b>,
    /// Packet boundaries, for MQTT; `None` for opaque TCP.
    pub tracker: Option<Tracker>,
    /// Bytes forwarded.
    pub bytes: &'a Counter,
}

/// What a direction writes to its destination when it stops for an eviction,
/// and the eviction's metric reason.
pub type Farewell = (Option<Vec<u8>>, &'static str);

impl Direction<'_, '_> {
    /// Copies until the source's EOF (then passes the FIN on) or, once `control`
    /// says the connection is evicted, until the next packet boundary; then writes
    /// `farewell`'s packet, sends a FIN and reads the source to its end, so that
    /// no unread data makes the kernel answer with a reset. Returns the eviction
    /// reason when it stopped for one.
    pub async fn run(
        mut self,
        control: &ConnControl,
        farewell: impl FnOnce(Option<&Tracker>) -> Farewell,
    ) -> io::Result<Option<&'static str>> {
        match self.copy(control).await? {
            End::Eof => Ok(None),
            End::Stopped => {
                let (packet, reason) = farewell(self.tracker.as_ref());
                if let Some(packet) = packet {
                    self.dst.write_all(&packet).await?;
                }
                let _ = self.dst.shutdown().await;
                drain(self.src).await;
                Ok(Some(reason))
            }
        }
    }

    fn can_stop(&self) -> bool {
        self.tracker.as_ref().is_none_or(Tracker::can_stop)
    }

    async fn copy(&mut self, control: &ConnControl) -> io::Result<End> {
        loop {
            if self.can_stop() {
                if control.eviction().is_some() {
                    return Ok(End::Stopped);
                }
                tokio::select! {
                    biased;
                    _ = control.evicted() => return Ok(End::Stopped),
                    r = self.src.readable() => r?,
                }
            } else {
                self.src.readable().await?;
            }
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match self.src.try_read(&mut buf) {
                    Ok(0) => {
                        // The peer may be gone already; the FIN is best effort.
                        let _ = self.dst.shutdown().await;
                        return Ok(End::Eof);
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                };
                let evicted = control.eviction().is_some();
                let chunk = &buf[..n];
                let send = match self.tracker.as_mut() {
                    // Evicted: forward up to the end of the packet in flight only.
                    Some(t) if evicted => &chunk[..t.observe_to_boundary(chunk)],
                    Some(t) => {
                        t.observe(chunk);
                        chunk
                    }
                    None => chunk,
                };
                self.dst.write_all(send).await?;
                self.bytes.inc_by(send.len() as u64);
                if (evicted || control.eviction().is_some()) && self.can_stop() {
                    return Ok(End::Stopped);
                }
            }
        }
    }
}

/// Reads and discards until EOF or an error.
pub async fn drain(src: &mut ReadHalf<'_>) {
    // On the heap: this runs only while closing, and an array here would
    // enlarge every connection's task.
    let mut buf = vec![0u8; 512];
    loop {
        if src.readable().await.is_err() {
            return;
        }
        loop {
            match src.try_read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
    }
}

/// Closes a connection without a reset: writes `last` (e.g. a CONNACK refusal),
/// sends a FIN, then reads what the peer still sends until its FIN or `timeout`.
pub async fn close_gracefully(mut stream: TcpStream, last: &[u8], timeout: Duration) {
    let (mut r, mut w) = stream.split();
    let _ = tokio::time::timeout(timeout, async {
        if !last.is_empty() {
            let _ = w.write_all(last).await;
        }
        let _ = w.shutdown().await;
        drain(&mut r).await;
    })
    .await;
}
