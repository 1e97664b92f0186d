//! The driver a platform evacuates instances through. `sluice up` (and the
//! planned operator) hold one per instance and never look at HTTP themselves:
//! `sluice proxy`'s admin API is the first implementation
//! (`sluice_http::evacuator::ProxyEvacuator`); EMQX's REST API
//! (`/api/v5/load_rebalance/…`) is planned as the second.

use std::future::Future;

use sluice_core::engine::NodeEvacuationStatus;

use crate::admin::EvacuationRequest;

/// Why an evacuator could not be driven or read. Whatever the variant, the
/// instance's state is *unknown* to the caller: it is never read as "empty".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvacuatorError {
    /// No answer: connection refused, reset or timed out.
    #[error("evacuator {evacuator}: no answer: {reason}")]
    Unreachable {
        /// Which evacuator (its address or node name).
        evacuator: String,
        /// What happened.
        reason: String,
    },
    /// An answer, but not a success (e.g. 500, 401).
    #[error("evacuator {evacuator}: {what} answered {status}: {message}")]
    Refused {
        /// Which evacuator.
        evacuator: String,
        /// The request, e.g. `GET /evacuation`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The body (shortened) or its error message.
        message: String,
    },
    /// A success whose body is not the contract's shape (a different version, a
    /// proxy in front, garbage).
    #[error("evacuator {evacuator}: {what}: the answer does not parse: {reason}")]
    Malformed {
        /// Which evacuator.
        evacuator: String,
        /// The request.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// Moves connections off one instance at a chosen rate and reports how far it
/// got (EMQX's node evacuation). Every method is idempotent from the caller's
/// side, as the engine's actions are.
pub trait Evacuator: Send + Sync {
    /// Starts evacuating at `request`'s rates towards `request.migrate_to`. An
    /// evacuation already running counts as started.
    fn start_evacuation(
        &self,
        request: &EvacuationRequest,
    ) -> impl Future<Output = Result<(), EvacuatorError>> + Send;

    /// Stops evacuating: the instance accepts again (a pause, for the engine).
    /// Stopping when nothing runs succeeds.
    fn stop_evacuation(&self) -> impl Future<Output = Result<(), EvacuatorError>> + Send;

    /// The evacuator's report: state, rates and connection and session counts
    /// (also when no evacuation runs: state `disabled`, current counts). An
    /// answer that does not parse is [`EvacuatorError::Malformed`], never a
    /// default.
    fn report(&self) -> impl Future<Output = Result<NodeEvacuationStatus, EvacuatorError>> + Send;
}
