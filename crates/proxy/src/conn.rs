//! The data path: accept, recognise the protocol, pick an upstream, connect, copy
//! both ways, and leave cleanly when evicted. One task per connection, on the
//! worker thread the accept loop hands it to ([`crate::workers`]).

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use sluice_wire::mqtt::ProtocolVersion;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::Shared;
use crate::cli::ProtocolMode;
use crate::copy::{Direction, close_gracefully};
use crate::handoff;
use crate::http;
use crate::metrics::Protocol;
use crate::mqtt::{
    ConnectInfo, RefusalKind, Sniff, Tracker, classify, eviction_packet, normal_disconnect,
    refusal_connack,
};
use crate::registry::{ConnControl, ConnSlot, Upstream};
use crate::workers::{Load, Workers};

/// How long a refused or rejected client gets to read our last words and close.
const REFUSAL_GRACE: Duration = Duration::from_secs(2);
/// Pause after an accept error, so that running out of file descriptors does not
/// become a busy loop; connections in the backlog wait meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this period about running out of file descriptors.
const EMFILE_LOG_EVERY: Duration = Duration::from_secs(10);
/// How many connections an accept loop takes from its backlog before it lets
/// the worker's other tasks run.
const ACCEPT_BURST: u32 = 1024;

/// An accept loop (each worker runs one on its own listening socket): gives
/// each connection to `place`. Never returns; errors are logged and backed off.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut place: impl FnMut(TcpStream)) {
    let mut last_emfile_log: Option<Instant> = None;
    let mut emfile_count = 0u64;
    let mut burst = 0;
    loop {
        // Outside tokio's cooperative budget, which would let it take only
        // 128 before going to the back of a run queue that under load holds
        // every busy connection of the worker: a storm of new connections
        // would wait there round after round, their first requests with it.
        match tokio::task::unconstrained(listener.accept()).await {
            Ok((client, _)) => {
                place(client);
                burst += 1;
                if burst == ACCEPT_BURST {
                    burst = 0;
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => {
                if out_of_files(&e) {
                    emfile_count += 1;
                    if last_emfile_log.is_none_or(|t| t.elapsed() >= EMFILE_LOG_EVERY) {
                        tracing::warn!(
                            error = %e,
                            times = emfile_count,
                            connections = shared.registry.total_live(),
                            "cannot accept: out of file descriptors (each proxied connection \
                             uses two; raise `ulimit -n` or spread clients over more proxies); \
                             retrying"
                        );
                        last_emfile_log = Some(Instant::now());
                        emfile_count = 0;
                    }
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// The `--accept-unix` loop: accepts the supervisor's connections on the Unix
/// socket and serves each. Never returns; errors are logged and backed off.
pub async fn serve_unix(listener: UnixListener, workers: Arc<Workers>) {
    loop {
        match tokio::task::unconstrained(listener.accept()).await {
            Ok((stream, _)) => {
                tokio::spawn(receive_handoffs(stream, Arc::clone(&workers)));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the --accept-unix socket failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Takes the connections one supervisor hands over until it hangs up; each is
/// served exactly like one accepted on `--listen`.
async fn receive_handoffs(stream: UnixStream, workers: Arc<Workers>) {
    loop {
        let fds = match handoff::recv(&stream).await {
            Ok(Some(fds)) => fds,
            Ok(None) => return,
            Err(e) if out_of_files(&e) => {
                // The descriptor in flight is lost (the client sees a close);
                // the next ones may fit again.
                tracing::warn!(error = %e, "cannot receive a handed-over connection: out of file descriptors");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "handed-over connection stream failed; dropping it");
                return;
            }
        };
        for fd in fds {
            match handoff::into_tcp(fd) {
                Ok(client) => workers.dispatch(client),
                Err(e) => {
                    tracing::debug!(error = %e, "handed-over descriptor is not a connected TCP socket")
                }
            }
        }
    }
}

/// The process (or system) ran out of file descriptors or socket memory: a local
/// condition, not the upstream's fault.
fn out_of_files(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// What the first bytes of a connection turned out to be.
enum Opening {
    Mqtt { info: ConnectInfo, buf: Vec<u8> },
    Http { buf: Vec<u8> },
    Tcp { buf: Vec<u8> },
    Reject(String),
}

/// Reads the client's first bytes until they decide the protocol. `auto` treats a
/// client that says nothing within the connect timeout as opaque TCP (a
/// server-speaks-first protocol); `mqtt` closes it.
async fn sniff(client: &mut TcpStream, mode: ProtocolMode, timeout: Duration) -> Opening {
    if mode == ProtocolMode::Tcp {
        return Opening::Tcp { buf: Vec::new() };
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::new();
    loop {
        let http = match mode {
            ProtocolMode::Mqtt => Some(false),
            _ => http::looks_like_http(&buf),
        };
        match http {
            Some(true) => return Opening::Http { buf },
            Some(false) if mode == ProtocolMode::Http => {
                return Opening::Reject("not an HTTP request line".into());
            }
            Some(false) => match classify(&buf, mode) {
                Sniff::Mqtt { info, .. } => return Opening::Mqtt { info, buf },
                Sniff::Opaque => return Opening::Tcp { buf },
                Sniff::Invalid(why) => return Opening::Reject(why),
                Sniff::NeedMore => {}
            },
            None => {}
        }
        buf.reserve(512);
        match tokio::time::timeout_at(deadline, client.read_buf(&mut buf)).await {
            Err(_) if buf.is_empty() && mode == ProtocolMode::Auto => {
                return Opening::Tcp { buf };
            }
            Err(_) => {
                return Opening::Reject(format!(
                    "no whole opening (CONNECT or request line) within {timeout:?}"
                ));
            }
            // A FIN after a prefix: in auto mode the prefix is someone's opaque
            // bytes (the FIN is passed on by the copy); in mqtt mode it is junk.
            Ok(Ok(0)) if !buf.is_empty() && mode == ProtocolMode::Auto => {
                return Opening::Tcp { buf };
            }
            Ok(Ok(0)) => return Opening::Reject("closed before a whole CONNECT".into()),
            Ok(Err(e)) => return Opening::Reject(format!("read error: {e}")),
            Ok(Ok(_)) => {}
        }
    }
}

/// Serves one connection on the worker it was handed to; `_load` counts it
/// against that worker until it ends.
pub async fn handle(shared: Arc<Shared>, client: TcpStream, _load: Load) {
    // Two phases awaited one after the other, so that the task's state holds
    // either the opening's or the copy's, never both: an idle connection's task
    // is most of what it costs.
    let Some(Opened {
        mut client,
        mut server,
        slot,
        control,
        version,
        is_http,
        opening,
    }) = open(&shared, client).await
    else {
        return;
    };
    let upstream = slot.upstream();
    let evicted = if is_http {
        // Boxed: the HTTP states are larger than the byte copy's, and inline
        // every TCP and MQTT connection's task would reserve room for them.
        Box::pin(http::pipe(
            &shared, upstream, client, server, &control, opening,
        ))
        .await
    } else {
        pipe(
            &shared,
            upstream,
            &mut client,
            &mut server,
            &control,
            version,
            opening,
        )
        .await
    };
    if let Some(reason) = evicted {
        shared.metrics().evicted(&upstream.name, reason);
    }
}

/// A connection whose opening was read and whose upstream accepted it.
struct Opened {
    client: TcpStream,
    server: TcpStream,
    /// Its place on the upstream, held until it closes.
    slot: ConnSlot,
    control: Arc<ConnControl>,
    /// The MQTT version, for MQTT connections.
    version: Option<ProtocolVersion>,
    is_http: bool,
    /// The client's first bytes, not yet forwarded.
    opening: Vec<u8>,
}

/// Recognises the protocol, picks an upstream and connects to it; refuses the
/// client (and returns `None`) when that fails.
async fn open(shared: &Arc<Shared>, mut client: TcpStream) -> Option<Opened> {
    let args = &shared.args;
    let _ = client.set_nodelay(true);
    let mut is_http = false;
    let (info, opening) = match sniff(&mut client, args.protocol, args.connect_timeout).await {
        Opening::Mqtt { info, buf } => (Some(info), buf),
        Opening::Http { buf } => {
            is_http = true;
            (None, buf)
        }
        Opening::Tcp { buf } => (None, buf),
        Opening::Reject(why) => {
            tracing::debug!(%why, "closing a connection that is not MQTT");
            close_gracefully(client, &[], REFUSAL_GRACE).await;
            return None;
        }
    };
    let protocol = if info.is_some() {
        Protocol::Mqtt
    } else if is_http {
        Protocol::Http
    } else {
        Protocol::Tcp
    };
    let version = info.as_ref().map(|i| i.version);
    let refuse = |kind, reference: Option<String>| {
        version.map_or_else(Vec::new, |v| {
            refusal_connack(
                v,
                kind,
                reference
                    .or_else(|| args.server_reference.clone())
                    .as_deref(),
            )
        })
    };
    let mut slot = match shared.registry.pick() {
        Ok(slot) => slot,
        Err(refusal) => {
            shared.metrics().refused(&refusal.upstream, refusal.reason);
            let last = refuse(RefusalKind::GoElsewhere, refusal.server_reference);
            close_gracefully(client, &last, REFUSAL_GRACE).await;
            return None;
        }
    };
    let upstream = Arc::clone(slot.upstream());
    let connect = tokio::time::timeout(
        args.upstream_connect_timeout,
        TcpStream::connect(upstream.addr.as_str()),
    )
    .await
    .unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")));
    let server = match connect {
        Ok(server) => server,
        Err(e) => {
            drop(slot);
            let reason = if out_of_files(&e) {
                "out_of_files"
            } else {
                tracing::warn!(upstream = %upstream.name, addr = %upstream.addr, error = %e, "upstream connect failed; marked unhealthy");
                upstream.set_healthy(false);
                spawn_probe(shared, &upstream);
                "upstream_unavailable"
            };
            shared.metrics().refused(&upstream.name, reason);
            let last = refuse(RefusalKind::Unavailable, None);
            close_gracefully(client, &last, REFUSAL_GRACE).await;
            return None;
        }
    };
    upstream.set_healthy(true);
    let _ = server.set_nodelay(true);
    let control = shared.registry.register(&mut slot, protocol, info.as_ref());
    Some(Opened {
        client,
        server,
        slot,
        control,
        version,
        is_http,
        opening,
    })
}

/// Copies both ways until both directions are done; returns the eviction reason
/// when the connection was evicted.
async fn pipe(
    shared: &Shared,
    upstream: &Upstream,
    client: &mut TcpStream,
    server: &mut TcpStream,
    control: &ConnControl,
    version: Option<ProtocolVersion>,
    opening: Vec<u8>,
) -> Option<&'static str> {
    let m = &upstream.metrics;
    let mut c2u_tracker = version.map(|_| Tracker::new());
    if let Some(t) = c2u_tracker.as_mut() {
        t.observe(&opening);
    }
    if server.write_all(&opening).await.is_err() {
        return None;
    }
    m.client_to_upstream.inc_by(opening.len() as u64);
    drop(opening);

    let (mut client_r, mut client_w) = client.split();
    let (mut server_r, mut server_w) = server.split();
    let mut evicted = control.evicted();
    let first_fin = AtomicBool::new(false);
    // The futures are built inside the select!: a future first bound to a local
    // and then moved keeps its storage twice in this task's state.
    let outcome = tokio::select! {
        r = async {
            tokio::try_join!(
                Direction::new(&mut client_r, &mut server_w, c2u_tracker, &m.client_to_upstream, &first_fin)
                .run(control, |t| match (version, t) {
                    // Tell the broker the client leaves normally, so that it does
                    // not publish the will of a client that is only moving.
                    (Some(v), Some(t)) if !t.failed() => (Some(normal_disconnect(v)), "close"),
                    _ => (None, "close"),
                }),
                Direction::new(
                    &mut server_r,
                    &mut client_w,
                    version.map(|_| Tracker::new()),
                    &m.upstream_to_client,
                    &first_fin,
                )
                .run(control, |t| match (version, t, control.eviction()) {
                    // Only after the CONNACK: a DISCONNECT before it breaks the
                    // protocol.
                    (Some(v), Some(t), Some(e)) if !t.failed() && t.packets() > 0 => {
                        eviction_packet(e.mode, v, e.server_reference.as_deref())
                    }
                    _ => (None, "close"),
                }),
            )
        } => r.ok().and_then(|(c, u)| u.or(c)),
        () = async {
            // Wakes the task, and with it both directions, which read the
            // eviction at every poll.
            (&mut evicted).await;
            // Boxed: a timer inline would be reserved in every connection's task.
            Box::pin(tokio::time::sleep(shared.args.evict_grace)).await;
        } => None,
    };
    control.eviction().map(|_| outcome.unwrap_or("close"))
}

/// Probes an unhealthy upstream until a connect succeeds (one probe task per
/// upstream at a time).
fn spawn_probe(shared: &Arc<Shared>, upstream: &Arc<Upstream>) {
    if !upstream.start_probing() {
        return;
    }
    let (shared, upstream) = (Arc::clone(shared), Arc::clone(upstream));
    tokio::spawn(async move {
        loop {
            while !upstream.healthy() {
                tokio::time::sleep(shared.args.probe_interval).await;
                let probe = tokio::time::timeout(
                    shared.args.upstream_connect_timeout,
                    TcpStream::connect(upstream.addr.as_str()),
                )
                .await;
                if let Ok(Ok(stream)) = probe {
                    drop(stream);
                    tracing::info!(upstream = %upstream.name, "upstream reachable again");
                    upstream.set_healthy(true);
                }
            }
            upstream.stop_probing();
            // A failure between the probe's success and the release above found
            // the claim taken; take it back and go on probing.
            if upstream.healthy() || !upstream.start_probing() {
                break;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evacuation::Clock;
    use crate::metrics::Metrics;
    use crate::registry::Registry;

    /// The flags of a proxy in front of one upstream.
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        args: crate::cli::ProxyArgs,
    }

    /// What the tests' proxies share: one upstream that nobody dials.
    fn shared() -> Arc<Shared> {
        let args = <Flags as clap::Parser>::parse_from([
            "sluice",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            "a=127.0.0.1:1",
        ])
        .args;
        Arc::new(Shared {
            registry: Registry::new(&args.upstreams, Arc::new(Metrics::new())),
            clock: Clock::start(),
            token: None,
            args,
        })
    }

    /// An idle connection costs mostly its task, whose size is the largest
    /// state the connection's future can be in. The byte copy must not reserve
    /// room for the opening's, the HTTP path's or the eviction's states (they
    /// are awaited apart or boxed): at 2,680 bytes before that, the proxy held
    /// 4.0 KiB per idle connection against HAProxy's 3.3 (issue 12).
    #[tokio::test]
    async fn an_idle_connections_task_stays_small() {
        const BUDGET: usize = 1536;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let task = handle(shared(), client, Load::counted());
        let size = std::mem::size_of_val(&task);
        assert!(
            size <= BUDGET,
            "a connection's task takes {size} bytes, more than the {BUDGET} budgeted: \
             box the rarely used states (see `handle`, `pipe`, `Direction::run`)"
        );
    }

    /// A storm of new connections must not wait behind a worker's busy ones:
    /// each time the accept loop runs it takes its whole backlog (up to
    /// `ACCEPT_BURST`). Under tokio's cooperative budget alone it took 128
    /// and went to the back of the run queue, and under load at 5,000
    /// connections a thousand waited in each listening socket (issue 12).
    #[tokio::test(flavor = "current_thread")]
    async fn the_accept_loop_takes_its_backlog_in_one_turn() {
        const STORM: usize = 300;
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        // Room for the storm (a plain bind's backlog is 128).
        let listener = socket.listen(1024).unwrap();
        let addr = listener.local_addr().unwrap();
        // Each handshake completes in the kernel: all wait in the backlog.
        let _clients: Vec<_> = (0..STORM)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let placed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&placed);
        let accept_loop = tokio::spawn(serve(listener, shared(), move |_client| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
        // This task and the accept loop take turns; the first turn in which
        // the loop accepts anything must take them all.
        let first_turn = loop {
            tokio::task::yield_now().await;
            let n = placed.load(std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                break n;
            }
        };
        accept_loop.abort();
        assert_eq!(
            first_turn, STORM,
            "the accept loop took {first_turn} of the {STORM} waiting connections in its \
             first turn; it must not be held to tokio's cooperative budget"
        );
    }
}
