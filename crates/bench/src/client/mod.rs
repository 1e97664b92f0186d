//! One simulated client: connect, hold the connection, and reconnect by
//! itself after any disconnect, recording why each connection ended.
//!
//! The protocol-specific parts (handshake and holding) live in [`mqtt`],
//! [`tcp`], [`http`], [`ws`] and [`h2`]; the reconnect loop, dialling and bookkeeping
//! are shared here.

mod h2;
mod http;
mod mqtt;
mod tcp;
mod ws;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::config::{ConnConfig, Protocol};
use crate::recorder::{Cause, ClientRecord, Counters, HttpTally, SharedSamples, inc};

/// What every client of one process shares.
pub(crate) struct Ctx {
    /// The run's configuration.
    pub cfg: Arc<ConnConfig>,
    /// The resolved server address.
    pub target: SocketAddr,
    /// Live counts.
    pub counters: Arc<Counters>,
    /// Latency samples and Server References.
    pub samples: SharedSamples,
    /// Limits connections being established at once.
    pub connecting: Semaphore,
    /// Becomes true when the run stops.
    pub stop: watch::Receiver<bool>,
    /// How many clients this process plays.
    pub slice_len: u64,
    /// When the first attempt started.
    pub first_attempt: OnceLock<Instant>,
    /// When the last of this process's clients connected for the first time.
    pub all_connected: OnceLock<Instant>,
}

/// How a held connection ended.
pub(crate) enum Ended {
    /// The run stopped; the client closed politely.
    Stopped,
    /// The connection was lost.
    Lost(Cause),
}

/// Plays client `index` until the run stops; returns what it saw.
pub(crate) async fn run(ctx: Arc<Ctx>, index: u32) -> ClientRecord {
    let mut record = ClientRecord::default();
    let mut stop = ctx.stop.clone();
    let mut rng = Rng::new(index);
    let mut failures_in_row = 0u32;
    let mut down_since: Option<Instant> = None;
    ctx.first_attempt.get_or_init(Instant::now);
    loop {
        inc(&ctx.counters.attempts);
        let attempt = tokio::select! {
            biased;
            _ = crate::stopped(&mut stop) => break,
            r = connect(&ctx, index) => r,
        };
        match attempt {
            Err(cause) => {
                inc(&ctx.counters.failures);
                record.failures.add(cause);
                if ctx.cfg.protocol.counts_requests() && record.connects > 0 {
                    // A server that was serving and now refuses is an error
                    // an HTTP client sees.
                    HttpTally::new(&mut record.http, &ctx.counters).socket_error();
                }
                failures_in_row += 1;
            }
            Ok((conn, latency)) => {
                ctx.samples.connect_latency(latency);
                if let Some(since) = down_since.take() {
                    record.down += since.elapsed();
                    ctx.samples.reconnect_time(since.elapsed());
                }
                record.connects += 1;
                failures_in_row = 0;
                if record.connects == 1 {
                    let ever = ctx.counters.ever_connected.fetch_add(1, Ordering::Relaxed) + 1;
                    if ever == ctx.slice_len {
                        let _ = ctx.all_connected.set(Instant::now());
                    }
                }
                inc(&ctx.counters.connects);
                ctx.counters.connected.fetch_add(1, Ordering::Relaxed);
                let ended = hold(&ctx, index, conn, &mut stop, &mut record).await;
                ctx.counters.connected.fetch_sub(1, Ordering::Relaxed);
                match ended {
                    Ended::Stopped => break,
                    Ended::Lost(cause) => {
                        inc(&ctx.counters.disconnects);
                        record.disconnects.add(cause);
                        down_since = Some(Instant::now());
                    }
                }
            }
        }
        let delay = ctx
            .cfg
            .reconnect
            .delay(failures_in_row.saturating_sub(1), rng.next_f64());
        tokio::select! {
            biased;
            _ = crate::stopped(&mut stop) => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    if let Some(since) = down_since {
        record.down += since.elapsed();
    }
    record
}

/// An established connection and the bytes read past the handshake.
pub(crate) struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Dials and, for MQTT, does the CONNECT/CONNACK handshake; returns the
/// connection and how long establishing it took.
async fn connect(ctx: &Ctx, index: u32) -> Result<(Conn, Duration), Cause> {
    let _permit = ctx
        .connecting
        .acquire()
        .await
        .map_err(|_| Cause::ConnectTimeout)?;
    let started = Instant::now();
    let timeout = Duration::from_millis(ctx.cfg.connect_timeout_ms);
    let mut stream = tokio::time::timeout(timeout, dial(ctx, index))
        .await
        .map_err(|_| Cause::ConnectTimeout)??;
    let mut buf = Vec::new();
    if ctx.cfg.protocol == Protocol::Mqtt {
        let deadline = started + timeout;
        mqtt::handshake(&mut stream, ctx, index, &mut buf, deadline).await?;
    }
    Ok((Conn { stream, buf }, started.elapsed()))
}

async fn dial(ctx: &Ctx, index: u32) -> Result<TcpStream, Cause> {
    let io = |e: std::io::Error| cause_of(&e);
    let socket = match ctx.target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(io)?;
    if let Some(ips) = ctx.cfg.source_ips {
        socket
            .bind(SocketAddr::new(ips.for_client(index).into(), 0))
            .map_err(io)?;
    }
    let stream = socket.connect(ctx.target).await.map_err(io)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn hold(
    ctx: &Ctx,
    index: u32,
    conn: Conn,
    stop: &mut watch::Receiver<bool>,
    record: &mut ClientRecord,
) -> Ended {
    let mut counts = HttpTally::new(&mut record.http, &ctx.counters);
    match ctx.cfg.protocol {
        Protocol::Mqtt => mqtt::hold(ctx, index, conn, stop).await,
        Protocol::Tcp => tcp::hold(ctx, conn, stop).await,
        Protocol::Http => http::hold(ctx, conn, stop, &mut counts).await,
        Protocol::Ws => ws::hold(ctx, index, conn, stop, &mut counts).await,
        Protocol::H2 => h2::hold(ctx, conn, stop, &mut counts).await,
    }
}

/// The cause of a socket error, naming the open-files limit when hit.
fn cause_of(e: &std::io::Error) -> Cause {
    const EMFILE: i32 = 24;
    if e.raw_os_error() == Some(EMFILE) {
        return Cause::TooManyOpenFiles;
    }
    Cause::of_io(e)
}

/// Reads what the socket has into `buf` without waiting; `Ok(0)` is the end
/// of the stream. The scratch buffer lives on the stack only during the
/// call, so an idle client holds no read buffer.
fn read_some(stream: &TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut scratch = [0u8; 2048];
    let n = stream.try_read(&mut scratch)?;
    buf.extend_from_slice(&scratch[..n]);
    Ok(n)
}

/// Waits for bytes and appends them to `buf`; `Ok(0)` is the end of the stream.
async fn fill(stream: &TcpStream, buf: &mut Vec<u8>) -> Result<usize, Cause> {
    loop {
        stream.readable().await.map_err(|e| cause_of(&e))?;
        match read_some(stream, buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(cause_of(&e)),
        }
    }
}

/// Reads and drops until the peer closes (or the socket fails).
async fn wait_closed(stream: &TcpStream, buf: &mut Vec<u8>) {
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match read_some(stream, buf) {
            Ok(0) => return,
            Ok(_) => buf.clear(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Drops consumed bytes and gives back a large buffer's memory once idle.
fn compact(buf: &mut Vec<u8>, consumed: usize) {
    buf.drain(..consumed);
    if buf.is_empty() && buf.capacity() > 4096 {
        *buf = Vec::new();
    }
}

/// A tiny xorshift generator for reconnect jitter and publish phases.
struct Rng(u64);

impl Rng {
    fn new(seed: u32) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        Rng((u64::from(seed) << 32 | u64::from(nanos)) | 1)
    }

    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The interval between a client's messages, and a random first phase so
/// a fleet's publishes spread out.
fn publish_schedule(rate: f64, rng_seed: u32) -> Option<(Duration, Instant)> {
    (rate > 0.0).then(|| {
        let every = Duration::from_secs_f64(1.0 / rate);
        let phase = every.mul_f64(Rng::new(rng_seed).next_f64());
        (every, Instant::now() + phase)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_in_unit_interval() {
        let mut r = Rng::new(7);
        for _ in 0..1000 {
            let v = r.next_f64();
            assert!((0.0..1.0).contains(&v));
        }
    }
}
