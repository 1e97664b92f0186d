//! Rolling: new instances are created and old ones retired a few at a time, within
//! `maxSurge`/`maxUnavailable` (Kubernetes' arithmetic, [`crate::rolling::Budget`]).

use super::fleet::{Ctx, Fleet, Plan};
use super::types::Phase;
use crate::rolling::Budget;

/// Creates as many new instances as the surge allows (counting every live
/// instance, evacuating ones included, since they still run); new instances serve as
/// soon as they are ready; old ones keep serving until their evacuation starts,
/// which happens while `replicas − maxUnavailable` others serve.
pub(super) fn plan(ctx: &Ctx<'_>, fleet: &Fleet<'_>) -> Plan {
    let budget = Budget::new(ctx.spec.replicas.max(0), &ctx.spec.strategy.rolling_update);
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let create = budget.scale_up_allowance(
        count(fleet.live.len()),
        count(fleet.keep.len() + fleet.surplus.len()),
    );
    Plan {
        create: usize::try_from(create).unwrap_or(0),
        serve_targets: true,
        unserve_old: false,
        hold: false,
        floor: usize::try_from(budget.min_available()).unwrap_or(0),
        max_active: usize::MAX,
        phase: if fleet.in_progress(ctx) {
            Phase::Rolling
        } else {
            Phase::Stable
        },
        traffic_switch: None,
        timer: None,
        kill: Vec::new(),
    }
}
