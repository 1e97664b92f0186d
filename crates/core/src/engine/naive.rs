//! Naive (comparison only): the plain rolling restart Kubernetes does for a
//! StatefulSet. One old instance at a time is deleted outright — no evacuation, its
//! clients are cut — and replaced; the next goes once the replacement is ready.
//! It exists so that `sluice demo` can show what sluice prevents.

use std::cmp::Reverse;

use super::fleet::{Ctx, Fleet, Plan};
use super::types::{Instance, Phase};

/// Deletes the next old (or extra) instance when every target instance is ready
/// and no instance is missing, then creates what is missing (the replacement takes
/// the lowest free name, as a StatefulSet re-creates the same ordinal). Ready
/// target instances serve; old ones serve until they are deleted. Nothing is ever
/// evacuated (`hold`), so capacity dips to `replicas − 1` (the floor) at each step.
pub(super) fn plan(ctx: &Ctx<'_>, fleet: &Fleet<'_>) -> Plan {
    let replicas = fleet.replicas;
    let mut candidates: Vec<&Instance> = fleet
        .old
        .iter()
        .chain(fleet.surplus.iter())
        .copied()
        // Even Naive does not delete what it cannot see.
        .filter(|i| i.unknown().is_none())
        .collect();
    // Not ready first (nobody is cut), then the newest, then the highest name
    // (StatefulSets go from the highest ordinal down).
    candidates.sort_by_key(|i| {
        (
            i.ready,
            Reverse(i.created_at),
            Reverse(index_of(&i.name)),
            Reverse(i.name.clone()),
        )
    });
    let may_kill = fleet.keep.iter().all(|i| i.ready) && fleet.live.len() >= replicas;
    let kill: Vec<String> = candidates
        .first()
        .filter(|_| may_kill)
        .map(|i| vec![i.name.clone()])
        .unwrap_or_default();
    let live_after = fleet.live.len() - kill.len();
    let create = replicas
        .saturating_sub(fleet.keep.len())
        .min(replicas.saturating_sub(live_after));
    Plan {
        create,
        serve_targets: true,
        unserve_old: false,
        hold: true,
        floor: replicas.saturating_sub(1),
        max_active: 0,
        phase: if fleet.in_progress(ctx) {
            Phase::Rolling
        } else {
            Phase::Stable
        },
        traffic_switch: None,
        timer: None,
        kill,
    }
}

/// The number after the last `-` of an instance name (its ordinal), 0 if none.
fn index_of(name: &str) -> u64 {
    name.rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}
