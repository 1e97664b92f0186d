//! sluice's sans-IO core: everything that decides, and nothing that does IO.
//!
//! * [`spec`]: the user-facing upgrade strategy types (`UpdateStrategy`, …), shared by
//!   the local fleet file and the Kubernetes `GracefulSet` resource, with validation.
//! * [`rolling`]: Kubernetes' rolling-update arithmetic (`maxSurge` / `maxUnavailable`).
//! * [`pacer`]: hands out eviction slots evenly in time, so connections leave at a set rate.
//! * [`plan`]: time estimates for an upgrade before anyone runs it.
//! * [`engine`]: the level-triggered upgrade engine `decide(&Spec, &Observed, now)`.
//! * [`balance`]: where a new connection goes (least connected, target revision first).
//! * [`sync`]: the poison-tolerant lock the IO crates share (no IO itself).
//! * [`time`]: [`time::Timestamp`], the absolute times the status publishes.
//!
//! Time is always passed in (a [`time::Timestamp`] for the engine, a
//! [`std::time::Duration`] since an origin the caller chooses for the pacer), so
//! tests drive a fake clock.

pub mod balance;
pub mod engine;
pub mod pacer;
pub mod plan;
pub mod rolling;
pub mod spec;
pub mod sync;
pub mod time;
