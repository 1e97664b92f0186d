//! Copying one direction of a proxied connection, half-close correct (a FIN is
//! passed on and the other direction keeps flowing, as in tokio's
//! `copy_bidirectional`), and able to stop between two packets when the
//! connection is evicted.
//!
//! An idle direction holds no buffer. On readability it reads once into its
//! thread's scratch buffer and writes what it read on at once; only what the
//! destination does not take is copied into a buffer of the connection's own,
//! and while that is written the source is not read, so a slow reader never
//! makes the proxy buffer more than one chunk. A read shorter than the buffer
//! drained the socket (tokio then waits for the next readiness edge), so a burst
//! costs one read and one write, without the would-block read that ends a
//! read loop.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use crate::mqtt::Tracker;
use crate::registry::ConnControl;

/// Bytes read at once while data flows.
pub const CHUNK: usize = 16 * 1024;

thread_local! {
    /// The buffer every connection served by this thread reads into. A read's
    /// bytes are handed on before the next await, so one per thread suffices.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; CHUNK].into_boxed_slice());
}

/// Reads once from `src` when it is readable, into this thread's scratch
/// buffer, and hands the bytes to `take`: `Ready(Ok(None))` at EOF. The bytes
/// do not outlive the call, so a caller that is dropped while this is pending
/// loses nothing (cancel safe, as `select!` needs).
pub(crate) fn poll_read_with<T>(
    cx: &mut Context<'_>,
    src: &mut ReadHalf<'_>,
    take: impl FnOnce(&[u8]) -> T,
) -> Poll<io::Result<Option<T>>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut buf = ReadBuf::new(scratch);
        ready!(Pin::new(src).poll_read(cx, &mut buf))?;
        let read = buf.filled();
        Poll::Ready(Ok((!read.is_empty()).then(|| take(read))))
    })
}

/// What one burst of a direction came to: `rest` is what the destination did
/// not take at once, `stop` whether the direction stops for an eviction.
struct Burst {
    rest: Option<Vec<u8>>,
    stop: bool,
}

/// How a direction's copy loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The source sent its FIN (passed on to the destination).
    Eof,
    /// The connection is evicted and the stream is at a point where it may stop.
    Stopped,
}

/// Bytes the destination did not take at once, written before the source is
/// read again.
struct Unsent {
    bytes: Vec<u8>,
    written: usize,
    /// The direction stops for the eviction once they are written.
    then_stop: bool,
}

/// One direction of a connection: its two half sockets and what it knows.
///
/// Its copy is a hand-written poll loop over these fields rather than an
/// async fn: an idle connection's task holds two of them, and the loop's state
/// is exactly what it needs between two polls.
pub struct Direction<'a, 'b> {
    src: &'a mut ReadHalf<'b>,
    dst: &'a mut WriteHalf<'b>,
    tracker: Option<Tracker>,
    bytes: &'a Counter,
    unsent: Option<Unsent>,
    /// Where the source's FIN is.
    fin: Fin,
    /// Shared by a connection's two directions: set by the first whose
    /// source sends its FIN.
    first_fin: &'a AtomicBool,
}

/// Where a direction is with its source's FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fin {
    /// Not come yet.
    NotYet,
    /// Came first of the connection's two: passed on now (`shutdown`), and
    /// the other direction keeps flowing (half-close).
    PassOn,
    /// Came second: the other direction's source was read to its end, so the
    /// close that follows at once sends this FIN too (not a reset) and a
    /// `shutdown` would be one syscall more per connection.
    LeaveToClose,
}

/// What a direction writes to its destination when it stops for an eviction,
/// and the eviction's metric reason.
pub type Farewell = (Option<Vec<u8>>, &'static str);

impl<'a, 'b> Direction<'a, 'b> {
    /// Bytes from `src` to `dst`, counted in `bytes`; `tracker` follows MQTT
    /// packet boundaries (`None` for opaque TCP). `first_fin` is shared with
    /// the connection's other direction (starts false); the sockets must be
    /// closed as soon as both directions have ended.
    pub fn new(
        src: &'a mut ReadHalf<'b>,
        dst: &'a mut WriteHalf<'b>,
        tracker: Option<Tracker>,
        bytes: &'a Counter,
        first_fin: &'a AtomicBool,
    ) -> Self {
        Direction {
            src,
            dst,
            tracker,
            bytes,
            unsent: None,
            fin: Fin::NotYet,
            first_fin,
        }
    }

    /// Copies until the source's EOF (then passes the FIN on) or, once `control`
    /// says the connection is evicted, until the next packet boundary; then writes
    /// `farewell`'s packet, sends a FIN and reads the source to its end, so that
    /// no unread data makes the kernel answer with a reset. Returns the eviction
    /// reason when it stopped for one.
    ///
    /// It reads the eviction at every poll but does not register for it: the
    /// task that runs it must be woken when the connection is evicted
    /// (`conn::pipe` watches the eviction once for both directions), so that
    /// an idle direction stops too.
    pub async fn run(
        mut self,
        control: &ConnControl,
        farewell: impl FnOnce(Option<&Tracker>) -> Farewell,
    ) -> io::Result<Option<&'static str>> {
        match poll_fn(|cx| self.poll_copy(cx, control)).await? {
            End::Eof => Ok(None),
            End::Stopped => {
                let (packet, reason) = farewell(self.tracker.as_ref());
                // Boxed: only an evicted connection gets here, and inline
                // these states would enlarge every idle connection's task.
                Box::pin(async move {
                    if let Some(packet) = packet {
                        self.dst.write_all(&packet).await?;
                    }
                    let _ = self.dst.shutdown().await;
                    drain(self.src).await;
                    Ok(Some(reason))
                })
                .await
            }
        }
    }

    fn can_stop(&self) -> bool {
        self.tracker.as_ref().is_none_or(Tracker::can_stop)
    }

    /// The copy loop: writes what is left of the last burst, passes a FIN on,
    /// stops at a boundary once evicted, or reads the next burst.
    fn poll_copy(&mut self, cx: &mut Context<'_>, control: &ConnControl) -> Poll<io::Result<End>> {
        loop {
            if let Some(unsent) = &mut self.unsent {
                while unsent.written < unsent.bytes.len() {
                    let n = ready!(
                        Pin::new(&mut *self.dst).poll_write(cx, &unsent.bytes[unsent.written..])
                    )?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    unsent.written += n;
                    self.bytes.inc_by(n as u64);
                }
                let then_stop = unsent.then_stop;
                self.unsent = None;
                if then_stop {
                    return Poll::Ready(Ok(End::Stopped));
                }
            }
            match self.fin {
                Fin::NotYet => {}
                Fin::PassOn => {
                    // The peer may be gone already; the FIN is best effort.
                    let _ = ready!(Pin::new(&mut *self.dst).poll_shutdown(cx));
                    return Poll::Ready(Ok(End::Eof));
                }
                Fin::LeaveToClose => return Poll::Ready(Ok(End::Eof)),
            }
            if self.can_stop() && control.eviction().is_some() {
                return Poll::Ready(Ok(End::Stopped));
            }
            let Direction {
                src,
                dst,
                tracker,
                bytes,
                ..
            } = self;
            let read = ready!(poll_read_with(cx, src, |chunk| {
                forward_now(chunk, tracker.as_mut(), dst, bytes, control)
            }))?;
            match read.transpose()? {
                None => {
                    self.fin = if self.first_fin.swap(true, Ordering::Relaxed) {
                        Fin::LeaveToClose
                    } else {
                        Fin::PassOn
                    };
                }
                Some(Burst { rest: None, stop }) => {
                    if stop {
                        return Poll::Ready(Ok(End::Stopped));
                    }
                }
                Some(Burst {
                    rest: Some(bytes),
                    stop,
                }) => {
                    self.unsent = Some(Unsent {
                        bytes,
                        written: 0,
                        then_stop: stop,
                    });
                }
            }
        }
    }
}

/// Writes what may go on of `chunk` without waiting; returns the part the
/// destination did not take, and whether the direction should stop for an
/// eviction.
fn forward_now(
    chunk: &[u8],
    tracker: Option<&mut Tracker>,
    dst: &WriteHalf<'_>,
    bytes: &Counter,
    control: &ConnControl,
) -> io::Result<Burst> {
    let evicted = control.eviction().is_some();
    let (send, at_boundary) = match tracker {
        // Evicted: forward up to the end of the packet in flight only.
        Some(t) if evicted => (&chunk[..t.observe_to_boundary(chunk)], t.can_stop()),
        Some(t) => {
            t.observe(chunk);
            (chunk, t.can_stop())
        }
        None => (chunk, true),
    };
    let written = match send {
        [] => 0,
        _ => match dst.try_write(send) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        },
    };
    bytes.inc_by(written as u64);
    Ok(Burst {
        rest: (written < send.len()).then(|| send[written..].to_vec()),
        stop: (evicted || control.eviction().is_some()) && at_boundary,
    })
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
