//! `sluice-local`: the local platform's building blocks.
//!
//! * [`fleet`]: the fleet file (`fleet.yaml`) that says what `sluice up` runs,
//!   parsed and validated with errors that name the field and its line.
//! * [`process`]: supervising instance processes (spawn, log file, die with
//!   sluice, graceful stop, readiness probes, free ports).
//! * [`broker`]: `sluice broker`, the built-in sample MQTT broker the demo runs.
//! * [`up`]: `sluice up` (the runner that ties them to the upgrade engine, the
//!   front and the control API) and `sluice apply|status|abort`.

// Not `forbid` (and so this crate's Cargo.toml spells out the workspace lints
// instead of inheriting them): `process::pdeathsig` needs one `unsafe` block,
// because the parent-death signal can only be set between fork and exec
// (`pre_exec`), and `forbid` cannot be relaxed for a module. It is the only
// unsafe code in sluice; every other module is still refused it.
#![deny(unsafe_code)]

pub mod broker;
pub mod fleet;
pub mod http_server;
pub mod process;
pub mod up;

use std::net::SocketAddr;

pub use broker::{BrokerArgs, run_broker, serve_broker};
pub use fleet::{Fleet, FleetError};
pub use http_server::{HttpServerArgs, serve_http};
pub use up::{
    AbortArgs, ApplyArgs, DEFAULT_ADMIN, StatusArgs, UpArgs, run_abort, run_apply, run_status,
    run_up,
};

/// Errors of the local platform's commands.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The broker stopped (e.g. its port was in use).
    #[error("MQTT broker on {listen}: {message}")]
    Broker {
        /// The address it listened on.
        listen: SocketAddr,
        /// What rumqttd reported.
        message: String,
    },
    /// `sluice serve-http` cannot listen.
    #[error("serve-http: cannot listen on {listen}: {source}; choose another --port")]
    HttpServer {
        /// The address.
        listen: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The fleet file is wrong.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// An instance process failed.
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    /// `sluice up` cannot start (the message says why and what to do).
    #[error("{0}")]
    Up(String),
    /// The control API's address cannot be listened on.
    #[error(
        "--admin {addr}: cannot listen: {source}; is another `sluice up` running? choose another address with --admin"
    )]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// `sluice apply|status|abort` found no fleet.
    #[error("no fleet answers on {addr}: is `sluice up` running?")]
    NoFleet {
        /// The control API address tried.
        addr: SocketAddr,
    },
    /// The control API's token is missing where needed, or unusable.
    #[error(transparent)]
    Token(#[from] sluice_proxy::auth::TokenError),
    /// The running fleet refused the request.
    #[error("{0}")]
    Control(String),
}
