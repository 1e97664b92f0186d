//! BlueGreen: a full new (green) set, one switch of new connections, then the old
//! (blue) instances evacuated one at a time.

use std::time::Duration;

use super::fleet::{Ctx, Fleet, Plan};
use super::types::{Phase, TrafficSwitch};

/// Creates the missing green instances; once all `replicas` of them are ready,
/// switches the serving set (recorded in `trafficSwitch`, never undone for this
/// target); after `initialDelaySeconds` (0 when aborting) lets one evacuation run at a
/// time while `replicas` instances serve.
pub(super) fn plan(ctx: &Ctx<'_>, fleet: &Fleet<'_>) -> Plan {
    let mut plan = Plan {
        create: fleet.replicas.saturating_sub(fleet.keep.len()),
        serve_targets: true,
        unserve_old: false,
        hold: false,
        floor: fleet.replicas,
        max_active: 1,
        phase: Phase::Stable,
        traffic_switch: None,
        timer: None,
        kill: Vec::new(),
    };
    if !fleet.in_progress(ctx) {
        return plan;
    }
    let ready = fleet.ready();
    let switched_at = ctx
        .prev()
        .and_then(|s| s.traffic_switch.as_ref())
        .filter(|t| t.revision == ctx.target)
        .map(|t| t.at)
        .or_else(|| (ready >= fleet.replicas).then_some(ctx.now));
    let Some(at) = switched_at else {
        plan.serve_targets = false;
        plan.hold = true;
        plan.phase = Phase::Provisioning;
        return plan;
    };
    plan.traffic_switch = Some(TrafficSwitch {
        revision: ctx.target.to_owned(),
        at,
    });
    plan.unserve_old = true;
    let delay = if ctx.aborting {
        Duration::ZERO
    } else {
        super::seconds(ctx.spec.strategy.initial_delay_seconds)
    };
    let end = at + delay;
    if ctx.now < end {
        plan.hold = true;
        plan.phase = Phase::WaitingInitialDelay;
        plan.timer = Some(end - ctx.now);
    } else {
        plan.phase = Phase::Evacuating;
    }
    plan
}
