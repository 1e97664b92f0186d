//! sluice's contracts between processes, in one place: what goes over the wire
//! between `sluice proxy`, `sluice up`, `sluice demo`, `sluice bench` and (planned)
//! the Kubernetes operator. No IO and no async runtime: serde types, names and one
//! driver trait.
//!
//! * [`admin`]: the evacuator's admin API (`sluice proxy --admin`), in EMQX's
//!   node-evacuation JSON shape.
//! * [`control`]: the control API of `sluice up` (`GET /status`, `PUT /spec`, …).
//! * [`metrics`]: the Prometheus metric and label names sluice exports and scrapes.
//! * [`evacuator`]: the [`evacuator::Evacuator`] driver trait a platform moves
//!   connections with (`sluice proxy`'s client in `sluice-http` is the first
//!   implementation; EMQX's REST API is planned as the second).
//!
//! # Why this crate depends on `sluice-core` (and not the reverse)
//!
//! The engine's published shapes — [`sluice_core::engine::Status`], EMQX's
//! [`sluice_core::engine::NodeEvacuationStatus`] and
//! [`sluice_core::engine::EvacuationState`] — are *inputs and outputs of the
//! engine*: `decide` reads and writes them, so they belong to the sans-IO core. The
//! contracts here wrap them for transport (an HTTP body, a control API view) and add
//! what only processes exchange (request bodies, error bodies, metric names). So
//! dependencies point down: platforms → `sluice-api` → `sluice-core`, and the
//! engine never learns how its status travels.

pub mod admin;
pub mod control;
pub mod evacuator;
pub mod metrics;
