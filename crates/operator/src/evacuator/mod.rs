//! The evacuator drivers: one interface over what evacuates a pod, the injected
//! `sluice proxy` sidecar ([`sidecar`], through the contract's
//! `sluice_api::evacuator::Evacuator`) or EMQX itself ([`emqx`]). Both take the
//! contract's `EvacuationRequest` (EMQX's node-evacuation field names).

pub mod emqx;
pub mod sidecar;

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use sluice_core::engine::NodeEvacuationStatus;
use sluice_core::spec::EvacuationStrategy;

/// How long one call to an evacuator may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The pod an evacuator call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The pod's name.
    pub pod: String,
    /// Its namespace.
    pub namespace: String,
    /// Its IP.
    pub ip: IpAddr,
}

/// What an evacuator reports about its pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Connections the pod holds.
    pub connections: u64,
    /// Sessions it holds.
    pub sessions: u64,
    /// Its evacuation, `None` when none runs.
    pub evacuation: Option<NodeEvacuationStatus>,
}

/// Why an evacuator call failed. Every failure leaves the pod's state unknown.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// No answer (connection refused, timeout, garbage).
    #[error("{pod}: evacuator unreachable: {detail}")]
    Unreachable {
        /// The pod.
        pod: String,
        /// What happened.
        detail: String,
    },
    /// The evacuator says it cannot answer now (EMQX's 503): try again later.
    #[error("{pod}: evacuator unavailable (HTTP 503): {detail}")]
    Unavailable {
        /// The pod.
        pod: String,
        /// The body.
        detail: String,
    },
    /// The evacuator does not know the node (EMQX's 404).
    #[error("{pod}: evacuator does not know node {node}")]
    UnknownNode {
        /// The pod.
        pod: String,
        /// The node name asked for.
        node: String,
    },
    /// Any other answer.
    #[error("{pod}: evacuator answered HTTP {status}: {body}")]
    Refused {
        /// The pod.
        pod: String,
        /// HTTP status.
        status: u16,
        /// The body.
        body: String,
    },
    /// Credentials missing (the Secret is absent or lacks a key).
    #[error("evacuator credentials: {0}")]
    Credentials(String),
}

/// What evacuates pods. Calls are idempotent: starting a running evacuation or
/// stopping a stopped one succeeds.
pub trait Evacuator: Send + Sync {
    /// The pod's connections, sessions and evacuation.
    fn report(&self, target: &Target) -> impl Future<Output = Result<Report, DriverError>> + Send;
    /// Starts evacuating the pod at `evacuation`'s rates towards `migrate_to`.
    fn start(
        &self,
        target: &Target,
        evacuation: &EvacuationStrategy,
        migrate_to: &[Target],
    ) -> impl Future<Output = Result<(), DriverError>> + Send;
    /// Stops the pod's evacuation.
    fn stop(&self, target: &Target) -> impl Future<Output = Result<(), DriverError>> + Send;
}

/// The set's evacuator, whichever it is.
#[derive(Debug, Clone)]
pub enum Driver {
    /// The injected sidecar.
    Sidecar(sidecar::SidecarDriver),
    /// EMQX's REST API.
    Emqx(emqx::EmqxDriver),
}

impl Evacuator for Driver {
    async fn report(&self, target: &Target) -> Result<Report, DriverError> {
        match self {
            Driver::Sidecar(d) => d.report(target).await,
            Driver::Emqx(d) => d.report(target).await,
        }
    }

    async fn start(
        &self,
        target: &Target,
        evacuation: &EvacuationStrategy,
        migrate_to: &[Target],
    ) -> Result<(), DriverError> {
        match self {
            Driver::Sidecar(d) => d.start(target, evacuation, migrate_to).await,
            Driver::Emqx(d) => d.start(target, evacuation, migrate_to).await,
        }
    }

    async fn stop(&self, target: &Target) -> Result<(), DriverError> {
        match self {
            Driver::Sidecar(d) => d.stop(target).await,
            Driver::Emqx(d) => d.stop(target).await,
        }
    }
}
