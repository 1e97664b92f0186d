//! The evacuating proxy behind `sluice proxy`.
//!
//! It forwards TCP, MQTT and HTTP connections to one upstream (the Kubernetes
//! sidecar) or several (a small balancing front), and empties an upstream at a
//! chosen rate when asked through its admin API or on SIGTERM: MQTT 5 clients
//! get a DISCONNECT between two packets, MQTT 3.x and TCP clients a clean close,
//! HTTP clients a `Connection: close` response, a WebSocket Close or a
//! two-phase GOAWAY between exchanges, and each reconnects by itself to
//! wherever new connections go.
//!
//! Modules: [`cli`] (flags), [`conn`] (accept and the per-connection task),
//! [`workers`] (the data path's threads, one current-thread runtime each),
//! [`copy`] (half-close-correct copying that stops at packet boundaries),
//! [`mqtt`] (CONNECT sniffing, boundaries, packets the proxy writes),
//! [`registry`] (upstreams, connections, selection), [`evacuation`] (the state
//! machine), [`admin`] (HTTP API), [`body`] (strict request bodies),
//! [`metrics`], [`drain`] (SIGTERM), [`http`] (HTTP/1.x, WebSocket and HTTP/2
//! eviction between exchanges), [`handoff`] (connections handed over as
//! file descriptors on a Unix socket, `--accept-unix`), [`auth`] (the admin
//! API's bearer token, shared with `sluice up`).

pub mod admin;
pub mod auth;
pub mod body;
pub mod cli;
pub mod conn;
pub mod copy;
pub mod drain;
pub mod evacuation;
pub mod handoff;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod registry;
pub mod workers;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpSocket;
use tokio::signal::unix::{SignalKind, signal};

pub use cli::ProxyArgs;

use evacuation::Clock;
use metrics::Metrics;
use registry::Registry;

/// What can stop the proxy from starting.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The flags contradict each other.
    #[error("{0}")]
    Config(String),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The flag naming the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The `--accept-unix` socket could not be bound.
    #[error("cannot listen on the Unix socket {} (--accept-unix): {source}", path.display())]
    BindUnix {
        /// The path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The admin token is missing where needed, or unusable.
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The worker threads could not be started.
    #[error("cannot start the worker threads (--workers): {0}")]
    Workers(std::io::Error),
}

/// Connections the kernel queues for `accept` on each listening socket (capped
/// by `net.core.somaxconn`): thousands of clients connecting at once must not
/// overflow it, or their handshakes stall for a SYN retransmission.
const BACKLOG: u32 = 4096;

/// State shared by the accept loops, the connection tasks and the admin API.
#[derive(Debug)]
pub struct Shared {
    /// The flags.
    pub args: ProxyArgs,
    /// The admin API's bearer token, if any.
    pub token: Option<auth::Token>,
    /// Upstreams and connections.
    pub registry: Registry,
    /// The clock evictions are paced by.
    pub clock: Clock,
}

impl Shared {
    /// The metric families.
    pub fn metrics(&self) -> &Metrics {
        &self.registry.metrics
    }
}

/// Runs the proxy until SIGTERM's drain is over or SIGINT.
pub async fn run(args: ProxyArgs) -> Result<(), ProxyError> {
    let token = args.token.for_listener(args.admin, "--admin")?;
    let mut names = HashSet::new();
    if let Some(dup) = args
        .upstreams
        .iter()
        .find(|u| !names.insert(u.name.as_str()))
    {
        return Err(ProxyError::Config(format!(
            "--upstream: the name {:?} is used twice; give each upstream its own NAME=ADDR",
            dup.name
        )));
    }
    let bind = |flag, addr: SocketAddr| async move {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        };
        socket
            .and_then(|s| {
                s.set_reuseaddr(true)?;
                s.bind(addr)?;
                s.listen(BACKLOG)
            })
            .map_err(|source| ProxyError::Bind { flag, addr, source })
    };
    if args.listen.is_none() && args.accept_unix.is_none() {
        return Err(ProxyError::Config(
            "give --listen ADDR (clients connect there), --accept-unix PATH (connections \
             are handed over on a Unix socket), or both"
                .to_owned(),
        ));
    }
    let listeners = match args.listen {
        Some(addr) => {
            workers::bind_group(addr, args.workers()).map_err(|source| ProxyError::Bind {
                flag: "--listen",
                addr,
                source,
            })?
        }
        None => Vec::new(),
    };
    let unix = match &args.accept_unix {
        Some(path) => Some(bind_unix(path)?),
        None => None,
    };
    let admin = bind("--admin", args.admin).await?;
    let mut term = signal(SignalKind::terminate()).map_err(ProxyError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ProxyError::Signals)?;

    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared {
        registry: Registry::new(&args.upstreams, metrics),
        clock: Clock::start(),
        token,
        args,
    });
    tracing::info!(
        listen = ?shared.args.listen,
        accept_unix = ?shared.args.accept_unix,
        admin = %shared.args.admin,
        upstreams = ?shared.args.upstreams.iter().map(|u| format!("{}={}", u.name, u.addr)).collect::<Vec<_>>(),
        protocol = ?shared.args.protocol,
        mqtt5_evict = shared.args.mqtt5_evict.as_str(),
        ws_evict = shared.args.ws_evict.as_str(),
        "sluice proxy started"
    );
    let workers = workers::Workers::start(shared.args.workers(), &shared, listeners, conn::handle)
        .map_err(ProxyError::Workers)?;
    let workers = Arc::new(workers);
    if let Some(unix) = unix {
        tokio::spawn(conn::serve_unix(unix, Arc::clone(&workers)));
    }
    let router = admin::router(Arc::clone(&shared));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, router).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    tokio::select! {
        _ = term.recv() => drain::drain(&shared, &mut term, &mut int).await,
        _ = int.recv() => tracing::info!("SIGINT: exiting"),
    }
    Ok(())
}

/// Binds the `--accept-unix` listener, removing a stale socket file first (a
/// previous run that was killed leaves it behind).
fn bind_unix(path: &std::path::Path) -> Result<tokio::net::UnixListener, ProxyError> {
    let err = |source| ProxyError::BindUnix {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    tokio::net::UnixListener::bind(path).map_err(err)
}
