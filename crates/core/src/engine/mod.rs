//! The level-triggered, sans-IO upgrade engine: [`decide`]`(&Spec, &Observed, now)`.
//!
//! `decide` is a pure function. Everything it needs is in the [`Spec`], the observed
//! [`Instance`]s and the [`Status`] it published last time (the platform passes it
//! back in [`Observed::last_status`]), so a restarted supervisor or operator resumes
//! where it was. Both platforms — the local supervisor (`sluice up`) and the
//! Kubernetes operator — call it and apply the [`Action`]s it returns.
//!
//! # What platforms promise
//!
//! * Report every instance, failed ones included (`failed: true`), with its
//!   evacuator's report; reflect applied actions in the next observation.
//! * Apply a decision's actions in order. Each is idempotent (see [`Action`]).
//! * Send new connections only to instances that are `ready` and `serving`, and
//!   among those to instances of [`Status::target_revision`] first (a client moved
//!   off an old instance must not land on another old one: it would be moved
//!   twice). Created instances start not serving.
//! * Be able to create instances of the status' `currentRevision` (an abort returns
//!   to it): Kubernetes keeps the old ReplicaSet, the local supervisor the previous
//!   fleet entry.
//! * Call again after [`Decision::requeue_after`] at the latest.
//! * Validate the spec first ([`crate::spec::UpdateStrategy::validate`]); `decide`
//!   clamps out-of-range numbers and never panics.
//!
//! # Revisions
//!
//! The *update revision* is the spec's; the *current revision* is the one the
//! fleet was last entirely on (the status' `currentRevision`; without a status, the
//! revision most ready serving instances run). The engine converges the fleet to a
//! *target*: the update revision, or the current one while aborting. Every live
//! instance not on the target is *old*. Old instances are never created, never
//! replaced, and leave only through the shared step below.
//!
//! **A spec change in the middle of an update** starts a new update at once: the
//! newest revision becomes the update revision and everything not on it is old,
//! including the half-finished previous update's instances. A running evacuation is
//! stopped (BlueGreen: until the new set serves), so clients are not moved to a set
//! that is about to leave; clients already moved to the superseded set move a
//! second time. Changing the spec back to the current revision is the same: its
//! instances are re-created and the other ones leave.
//!
//! # Evacuate, then delete (both strategies)
//!
//! Old and extra instances are *retired* in this order: the one(s) evacuating, the
//! ones paused earlier (status `evacuations`), then the most connected. A retired
//! instance is first taken out of serving and its evacuator started
//! ([`Action::StartEvacuation`]; the evacuator paces evictions); it is deleted once
//! its evacuator reports `prohibiting` with no connection, or it holds no
//! connection and no session while not serving. No instance holding connections or
//! sessions is deleted unless it failed (or under the comparison-only `Naive`
//! strategy, below). Evacuations run only while at least the
//! strategy's *floor* of instances are ready and serving, and none is started that
//! would take the count below it; below the floor, running evacuations are stopped
//! ([`Action::StopEvacuation`]: a pause, the instance stays out of serving) and
//! resumed first once capacity is back.
//!
//! # BlueGreen (floor: `replicas`)
//!
//! 1. `Provisioning`: create a full new set; the old set serves untouched.
//! 2. When all `replicas` new instances are ready, switch: new ones serve, old ones
//!    stop serving (`trafficSwitch` records when). A switch is never undone for the
//!    same target; a new instance that fails afterwards is replaced.
//! 3. `WaitingInitialDelay` for `initialDelaySeconds` after the switch.
//! 4. `Evacuating`: old instances one at a time, most connected first.
//! 5. When no old instance is left and all `replicas` new ones are ready (both
//!    strategies): `Stable`, `currentRevision` = update revision,
//!    `Progressing=True` reason `UpdateComplete`.
//!
//! # Rolling (floor: `replicas − maxUnavailable`)
//!
//! Phase `Rolling`: create new instances while the surge allows (every live instance
//! counts, evacuating ones too); a new instance serves once ready; retire old ones
//! (several at once) while the floor holds. An evacuating old instance does not count
//! as serving. `initialDelaySeconds` does not apply.
//!
//! # Naive (comparison only; floor: `replicas − 1`)
//!
//! Not an upgrade strategy to use: the plain rolling restart Kubernetes does for a
//! StatefulSet, so that `sluice demo` can show what the two strategies above
//! prevent. It is the one exception to "evacuate, then delete": when every target
//! instance is ready and none is missing, the next old (or extra) instance — not
//! ready ones first, then the newest, highest name first — is **deleted outright**
//! ([`Action::Delete`] while it holds connections: its clients are cut) and its
//! replacement created in the same decision; the next one goes once the
//! replacement is ready. Nothing is evacuated, new instances serve once ready,
//! old ones serve until deleted, so capacity dips to `replicas − 1` at each step and
//! cut clients often land on an old instance that is cut next. Phase `Rolling`;
//! each deletion restarts the progress deadline's clock; aborts work as above.
//!
//!
//! Create missing instances, replace failed ones (delete, then create under the
//! lowest free name), retire extra ones (not ready first, then least connected),
//! make every ready instance serve.
//!
//! # Failure paths
//!
//! * **Progress deadline.** When an update waits for new instances to become ready
//!   with no evacuation running (`waitingSince`) for `progressDeadlineSeconds`, it is
//!   aborted: `Progressing=False` reason `ProgressDeadlineExceeded`. For BlueGreen
//!   before the switch that is "the new set is not all ready `progressDeadlineSeconds`
//!   after the update started": nobody is disconnected (the new set never served, so
//!   its instances are idle and deleted at once) and the old set keeps serving.
//! * **User abort** ([`Observed::abort_requested`], while old instances remain):
//!   `Progressing=False` reason `UserAborted`.
//! * **Either abort** makes the current revision the target, `Aborting`: running
//!   evacuations of current instances are stopped, missing current instances are
//!   re-created, and once `replicas` of them are ready new connections return to them
//!   (BlueGreen; Rolling replaces within its budget); the new revision's instances
//!   are then retired like any old ones, without an initial delay: evacuated at the
//!   configured pace if they hold connections, never dropped. Then `Aborted`:
//!   the fleet is kept on the current revision and the update revision is not tried
//!   again until the spec's revision changes.
//! * **A new instance fails or turns unready during the evacuation** (BlueGreen):
//!   capacity falls below `replicas`, so the running evacuation pauses
//!   (`Progressing=True` reason `EvacuationPaused`, `Available=False`) and the
//!   evacuating old instance stays out of serving; a failed instance is deleted and
//!   re-created under a new name; the paused evacuation resumes once `replicas` serve.
//!   If the replacement never becomes ready, the progress deadline applies.
//! * **An old instance fails** during an update: it is deleted, not replaced (its
//!   clients reconnect to whatever serves).
//! * **An instance of the target fails** (also while `Stable` or `Aborted`): deleted
//!   and replaced.
//!
//! # Capacity
//!
//! Let *serving* be the number of instances that are ready, serving and not failed.
//! Applying a decision never leaves serving below `min(floor, serving before)`: the
//! engine itself never takes capacity below the floor, and when failures already
//! did, it lowers it no further. After a decision taken with serving below the
//! floor, no evacuation runs. (BlueGreen before the switch keeps the old set as it
//! is: an old instance that fails then is not replaced, so capacity stays one short
//! until the new set takes over.)
//!
//! # Requeue
//!
//! 30 s when at rest (`Stable`/`Aborted`, nothing to do, everything ready and
//! serving); the exact time left of the initial delay while waiting for it; 1 s
//! otherwise.

mod blue_green;
mod fleet;
mod naive;
mod rolling;
mod types;

use std::time::Duration;

pub use fleet::instance_name;
pub use types::{
    AVAILABLE, Action, Condition, ConditionStatus, Decision, EvacuationState, EvacuationStats,
    EvictionPace, INSTANCES_KNOWN, Instance, Load, NodeEvacuationStatus, Observed, PROGRESSING,
    Phase, Spec, Status, TrafficSwitch, reason,
};

use crate::spec::StrategyType;
use crate::time::Timestamp;
use fleet::{Ctx, Outcome, converge};

/// How long to wait before looking again when nothing moves.
pub const REQUEUE_AT_REST: Duration = Duration::from_secs(30);
/// How long to wait before looking again while an update moves.
pub const REQUEUE_ACTIVE: Duration = Duration::from_secs(1);

/// Decides what to do now. Pure and deterministic: the same arguments give the same
/// decision, and the returned status is all it needs to continue next time.
pub fn decide(spec: &Spec, observed: &Observed, now: Timestamp) -> Decision {
    let last = observed.last_status.as_ref();
    let instances = observed.instances.as_slice();
    let current = last
        .map(|s| s.current_revision.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| infer_current(spec, instances));
    let same_update = last.is_some_and(|s| s.update_revision == spec.revision);
    // The update is as good as done: nothing left to return to, nothing to wait for.
    let live = || instances.iter().filter(|i| !i.failed);
    let complete = live().all(|i| i.revision == spec.revision)
        && live().filter(|i| i.ready).count() >= usize::try_from(spec.replicas).unwrap_or(0);

    let mut abort: Option<String> = None;
    if spec.revision != current {
        let prev = last.filter(|_| same_update);
        if let Some(s) = prev.filter(|s| matches!(s.phase, Phase::Aborting | Phase::Aborted)) {
            let why = s
                .condition(PROGRESSING)
                .map(|c| c.reason.clone())
                .filter(|r| r == reason::PROGRESS_DEADLINE_EXCEEDED)
                .unwrap_or_else(|| reason::USER_ABORTED.to_owned());
            abort = Some(why);
        } else if observed.abort_requested && !complete {
            abort = Some(reason::USER_ABORTED.to_owned());
        }
    }

    let ctx = |aborting: bool| Ctx {
        spec,
        instances,
        last,
        now,
        target: if aborting { &current } else { &spec.revision },
        current: &current,
        aborting,
        same_update,
    };
    let mut out = converge(&ctx(abort.is_some()));
    let mut waiting_since = None;
    if abort.is_none() && out.blocked {
        let since = last
            .filter(|_| same_update)
            .and_then(|s| s.waiting_since)
            .unwrap_or(now);
        let deadline = seconds(spec.strategy.progress_deadline_seconds);
        if spec.revision != current && now >= since + deadline {
            abort = Some(reason::PROGRESS_DEADLINE_EXCEEDED.to_owned());
            out = converge(&ctx(true));
        } else {
            waiting_since = Some(since);
        }
    }
    let aborting = abort.is_some();
    let target = if aborting { &current } else { &spec.revision };

    let phase = match (aborting, out.in_progress) {
        (true, true) => Phase::Aborting,
        (true, false) => Phase::Aborted,
        (false, _) => out.phase,
    };
    let current_revision = if phase == Phase::Stable {
        spec.revision.clone()
    } else {
        current.clone()
    };
    let update_started_at = (phase != Phase::Stable).then(|| {
        last.filter(|_| same_update)
            .and_then(|s| s.update_started_at)
            .unwrap_or(now)
    });

    let live: Vec<&Instance> = instances.iter().filter(|i| !i.failed).collect();
    let count = |f: &dyn Fn(&Instance) -> bool| {
        i32::try_from(live.iter().filter(|i| f(i)).count()).unwrap_or(i32::MAX)
    };
    let serving_replicas = count(&|i| i.ready && i.serving);
    let mut node_evacuations_status: Vec<_> = live
        .iter()
        .filter(|i| i.evacuating())
        .filter_map(|i| i.evacuation().cloned())
        .collect();
    node_evacuations_status.sort_by(|a, b| a.node.cmp(&b.node));

    let available = usize::try_from(serving_replicas).unwrap_or(0) >= out.floor;
    let conditions = vec![
        condition(
            last,
            AVAILABLE,
            available,
            if available {
                reason::MINIMUM_REPLICAS_SERVING
            } else {
                reason::MINIMUM_REPLICAS_UNAVAILABLE
            },
            format!(
                "{serving_replicas} instances ready and serving, {} needed",
                out.floor
            ),
            now,
        ),
        progressing(last, phase, abort.as_deref(), &out, target, spec, now),
        instances_known(last, &live, now),
    ];

    let at_rest = phase.at_rest()
        && out.actions.is_empty()
        && live.len() == usize::try_from(spec.replicas).unwrap_or(0)
        && live.iter().all(|i| i.ready && i.serving);
    let requeue_after = match out.timer {
        _ if at_rest => REQUEUE_AT_REST,
        Some(t) if out.actions.is_empty() => t.min(REQUEUE_AT_REST),
        Some(t) => t.min(REQUEUE_ACTIVE),
        None => REQUEUE_ACTIVE,
    };

    let status = Status {
        observed_generation: spec.generation,
        phase,
        current_revision,
        update_revision: spec.revision.clone(),
        replicas: count(&|_| true),
        ready_replicas: count(&|i| i.ready),
        serving_replicas,
        updated_replicas: count(&|i| i.revision == spec.revision),
        updated_ready_replicas: count(&|i| i.revision == spec.revision && i.ready),
        update_started_at,
        traffic_switch: out.traffic_switch.clone().filter(|_| out.in_progress),
        waiting_since,
        evacuations: out.evacuations.clone(),
        node_evacuations_status,
        conditions,
    };
    Decision {
        actions: out.actions,
        clear_abort_request: observed.abort_requested && phase.at_rest(),
        status,
        requeue_after,
    }
}

/// Seconds from the spec as a duration, negative ones as 0.
fn seconds(seconds: i32) -> Duration {
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Without a status: the revision most ready serving instances run (then most
/// instances, then the spec's, then the smallest), or the spec's if none exists.
fn infer_current(spec: &Spec, instances: &[Instance]) -> String {
    let live = || instances.iter().filter(|i| !i.failed);
    live()
        .map(|i| {
            let on = || live().filter(|j| j.revision == i.revision);
            let serving = on().filter(|j| j.ready && j.serving).count();
            (
                serving,
                on().count(),
                i.revision == spec.revision,
                &i.revision,
            )
        })
        .max_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)).then(b.3.cmp(a.3)))
        .map_or_else(|| spec.revision.clone(), |m| m.3.clone())
}

/// The `Progressing` condition for this round.
fn progressing(
    last: Option<&Status>,
    phase: Phase,
    abort: Option<&str>,
    out: &Outcome,
    target: &str,
    spec: &Spec,
    now: Timestamp,
) -> Condition {
    let (ok, why, message) = match (abort, phase) {
        (Some(why), Phase::Aborted) => (
            false,
            why,
            format!(
                "update to {} aborted; the fleet stays on {target} until the revision changes",
                spec.revision
            ),
        ),
        (Some(why), _) => (
            false,
            why,
            format!("update to {} aborted; returning to {target}", spec.revision),
        ),
        (None, _) if out.paused => (
            true,
            reason::EVACUATION_PAUSED,
            format!(
                "evacuation paused: {} instances serve, {} needed; waiting for new instances to be ready",
                out.serving, out.floor
            ),
        ),
        (None, Phase::Stable) => (
            true,
            reason::UPDATE_COMPLETE,
            format!(
                "{} of {} instances of {target} ready",
                out.ready, out.wanted
            ),
        ),
        (None, Phase::Provisioning) => (
            true,
            reason::PROVISIONING,
            format!(
                "{} of {} new instances of {target} ready; then replacing {}",
                out.ready,
                out.wanted,
                out.old_revisions.join(", ")
            ),
        ),
        (None, Phase::WaitingInitialDelay) => (
            true,
            reason::WAITING_INITIAL_DELAY,
            format!(
                "new connections go to {target}; first evacuation in {:.1} s",
                out.timer.unwrap_or_default().as_secs_f64()
            ),
        ),
        (None, Phase::Evacuating) => (
            true,
            reason::EVACUATING,
            format!("evacuating {}", running(out)),
        ),
        (None, _) if spec.strategy.kind == StrategyType::Naive => (
            true,
            reason::ROLLING,
            format!(
                "{} of {} instances of {target} ready; deleting old instances one at a \
                 time without evacuation (naive, for comparison only)",
                out.ready, out.wanted
            ),
        ),
        (None, _) => (
            true,
            reason::ROLLING,
            format!(
                "{} of {} instances of {target} ready; evacuating {}",
                out.ready,
                out.wanted,
                running(out)
            ),
        ),
    };
    condition(last, PROGRESSING, ok, why, message, now)
}

/// The `InstancesKnown` condition: `False` while some live instance's evacuator
/// could not be read, naming each and why.
fn instances_known(last: Option<&Status>, live: &[&Instance], now: Timestamp) -> Condition {
    let unknown: Vec<String> = live
        .iter()
        .filter_map(|i| Some(format!("{} ({})", i.name, i.unknown()?)))
        .collect();
    if unknown.is_empty() {
        return condition(
            last,
            INSTANCES_KNOWN,
            true,
            reason::ALL_INSTANCES_KNOWN,
            format!("{} instances observed", live.len()),
            now,
        );
    }
    condition(
        last,
        INSTANCES_KNOWN,
        false,
        reason::EVACUATOR_UNKNOWN,
        format!(
            "waiting: the evacuator of {} could not be read; such an instance is not \
             deleted and no evacuation starts on it until it answers",
            unknown.join(", ")
        ),
        now,
    )
}

fn running(out: &Outcome) -> String {
    if out.running.is_empty() {
        "nothing".to_owned()
    } else {
        out.running.join(", ")
    }
}

/// A condition, keeping the last transition time when its truth did not change.
fn condition(
    last: Option<&Status>,
    type_: &str,
    ok: bool,
    why: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let status = if ok {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    };
    let last_transition_time = last
        .and_then(|s| s.condition(type_))
        .filter(|c| c.status == status)
        .map_or(now, |c| c.last_transition_time);
    Condition {
        type_: type_.to_owned(),
        status,
        reason: why.to_owned(),
        message,
        last_transition_time,
    }
}
