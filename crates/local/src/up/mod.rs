//! `sluice up` and its control commands `sluice apply|status|abort`.
//!
//! `sluice up -f fleet.yaml` runs the fleet in the foreground: for each instance
//! the engine creates, the app (from the fleet's `app.command`) and its evacuator
//! (`sluice proxy --accept-unix`, exactly as the Kubernetes sidecar) on ports
//! chosen by the OS; a front listener on `fleet.listen` that hands each new
//! connection to an evacuator and holds none ([`front`]); a control loop that
//! observes, calls the engine and applies its actions ([`runner`]); and the
//! control API ([`api`]) the other commands call. See docs/up.md.

mod api;
mod client;
mod front;
mod http;
mod instance;
mod runner;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use sluice_api::control::{InstanceView, UpStatus};
use sluice_core::engine::Status;
use sluice_proxy::auth::TokenArgs;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, watch};

pub use client::{run_abort, run_apply, run_status};

use crate::LocalError;
use crate::fleet::Fleet;

/// Where the control API listens unless `--admin` says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9180";

/// Flags of `sluice up`.
#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// The fleet file (see docs/fleet.md).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// The fleet file, as a positional argument (same as -f).
    #[arg(value_name = "FLEET_FILE", conflicts_with = "file", hide = true)]
    pub path: Option<PathBuf>,
    /// Control API address (HTTP, for `sluice apply|status|abort`): PORT or
    /// IP:PORT; a bare port binds 127.0.0.1.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN, value_parser = parse_admin)]
    pub admin: SocketAddr,
    /// The control API's bearer token: required by everything but /healthz.
    /// Without one, `--admin` must be a loopback address (see docs/up.md).
    #[command(flatten)]
    pub token: TokenArgs,
    /// Folder for the instances' log files and sockets (default:
    /// $TMPDIR/sluice-up-NAME-PID).
    #[arg(long, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// For `sluice demo` only: run updates with the comparison-only Naive
    /// strategy (old instances deleted without evacuation), whatever the fleet
    /// file's `updateStrategy.type` says. Not for real fleets.
    #[arg(long, hide = true)]
    pub naive_for_comparison: bool,
}

/// Flags of `sluice apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// The changed fleet file.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: PathBuf,
    /// The control API of the running `sluice up`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN, value_parser = parse_admin)]
    pub admin: SocketAddr,
    /// The token the running `sluice up` was given, if any.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// Flags of `sluice status`.
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// The control API of the running `sluice up`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN, value_parser = parse_admin)]
    pub admin: SocketAddr,
    /// The token the running `sluice up` was given, if any.
    #[command(flatten)]
    pub token: TokenArgs,
    /// Print the control API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `sluice abort`.
#[derive(Debug, Clone, clap::Args)]
pub struct AbortArgs {
    /// The control API of the running `sluice up`.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN, value_parser = parse_admin)]
    pub admin: SocketAddr,
    /// The token the running `sluice up` was given, if any.
    #[command(flatten)]
    pub token: TokenArgs,
}

fn parse_admin(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("expected PORT or IP:PORT such as {DEFAULT_ADMIN} (got {s:?})"))
}

/// What the runner and the control API share.
pub(crate) struct Shared {
    state: Mutex<Control>,
    /// Wakes the runner early (a new spec, an abort).
    pub wake: Notify,
}

/// The state behind [`Shared`].
pub(crate) struct Control {
    /// The spec the engine converges to.
    pub fleet: Fleet,
    /// Bumped by every changed spec (the status' `observedGeneration`).
    pub generation: i64,
    /// `--naive-for-comparison`: the demo's Naive strategy replaces the file's.
    pub naive: bool,
    /// Every revision's fleet seen, so instances of an older one can be
    /// created again (an abort returns to it).
    pub fleets: HashMap<String, Fleet>,
    pub abort_requested: bool,
    pub status: Option<Status>,
    pub instances: Vec<InstanceView>,
    pub metrics: String,
    pub run_dir: PathBuf,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Control> {
        sluice_core::sync::lock(&self.state)
    }

    /// The control API's status; `None` until the engine decided once.
    pub(crate) fn status_view(&self) -> Option<UpStatus> {
        api::status_view(self)
    }
}

/// `[  12.345s]`: time since `sluice up` started.
pub(crate) fn stamp(started: Instant) -> String {
    format!("[{:>8.3}s]", started.elapsed().as_secs_f64())
}

/// Runs a fleet in the foreground until SIGINT or SIGTERM.
pub async fn run_up(args: UpArgs) -> Result<(), LocalError> {
    let started = Instant::now();
    let path = args
        .file
        .clone()
        .or(args.path.clone())
        .ok_or_else(|| LocalError::Up("sluice up: give the fleet file with -f FILE (see docs/fleet.md and examples/fleet.yaml)".to_owned()))?;
    // Everything is checked before anything starts.
    let fleet = Fleet::load(&path)?;
    let token = args.token.for_listener(args.admin, "--admin")?;
    fleet.check_listen_available()?;
    let front_listener = bind(fleet.listen, "listen (the fleet's front address)")?;
    let admin_listener =
        std::net::TcpListener::bind(args.admin).map_err(|source| LocalError::Admin {
            addr: args.admin,
            source,
        })?;
    let admin_listener = tokio_listener(admin_listener, "--admin")?;
    let mut term = signal(SignalKind::terminate()).map_err(LocalError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(LocalError::Runtime)?;
    let exe = std::env::current_exe()
        .map_err(|e| LocalError::Up(format!("cannot find the sluice binary: {e}")))?;
    let run_dir = args.run_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("sluice-up-{}-{}", fleet.name, std::process::id()))
    });
    std::fs::create_dir_all(&run_dir).map_err(|e| {
        LocalError::Up(format!(
            "cannot create the run folder {}: {e}",
            run_dir.display()
        ))
    })?;

    let revision = fleet.revision();
    println!(
        "{} sluice up: fleet {} ({} replicas, revision {revision}); front on {}, control API on \
         http://{}, logs in {}",
        stamp(started),
        fleet.name,
        fleet.replicas,
        fleet.listen,
        args.admin,
        run_dir.display()
    );
    let shared = Arc::new(Shared {
        state: Mutex::new(Control {
            fleets: HashMap::from([(revision, fleet.clone())]),
            fleet,
            generation: 1,
            naive: args.naive_for_comparison,
            abort_requested: false,
            status: None,
            instances: Vec::new(),
            metrics: String::new(),
            run_dir: run_dir.clone(),
        }),
        wake: Notify::new(),
    });
    let router = api::router(Arc::clone(&shared), token);
    let api_task = tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, router).await {
            tracing::error!(error = %e, "control API stopped");
        }
    });
    let table = front::Table::default();
    let (stop_front, stopped) = watch::channel(false);
    let front_task = tokio::spawn(front::run(
        tokio_listener(front_listener, "listen")?,
        table.clone(),
        stopped,
    ));

    let mut runner = runner::Runner::new(Arc::clone(&shared), table, run_dir, exe, started);
    let why = loop {
        let wait = runner.tick().await;
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.wake.notified() => {}
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
        }
    };

    let instances = runner.take_all();
    println!(
        "{} {why}: stopping: the front closes, {} instances drain (a second signal kills everything)",
        stamp(started),
        instances.len()
    );
    let _ = stop_front.send(true);
    let _ = front_task.await;
    let mut stopping = std::mem::take(&mut runner.stopping);
    for inst in instances {
        stopping.spawn(inst.stop(false));
    }
    let mut killed = false;
    loop {
        tokio::select! {
            next = stopping.join_next() => if next.is_none() { break },
            _ = term.recv() => killed = true,
            _ = int.recv() => killed = true,
        }
        if killed {
            // Dropping the tasks drops the processes' handles: SIGKILL to each group.
            stopping.abort_all();
            while stopping.join_next().await.is_some() {}
            break;
        }
    }
    api_task.abort();
    println!(
        "{} {}",
        stamp(started),
        if killed {
            "second signal: killed every instance"
        } else {
            "stopped: every instance drained and exited"
        }
    );
    Ok(())
}

fn bind(addr: SocketAddr, what: &str) -> Result<std::net::TcpListener, LocalError> {
    std::net::TcpListener::bind(addr)
        .map_err(|e| LocalError::Up(format!("{what}: cannot listen on {addr}: {e}")))
}

fn tokio_listener(
    listener: std::net::TcpListener,
    what: &str,
) -> Result<tokio::net::TcpListener, LocalError> {
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| LocalError::Up(format!("{what}: {e}")))
}
