//! The part both strategies share: sorting the observed instances, emitting actions
//! without duplicates, picking names, and the one "evacuate, then delete" step.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::types::{Action, Instance, Load, Phase, Spec, Status, TrafficSwitch};
use crate::spec::{EvacuationStrategy, StrategyType};
use crate::time::Timestamp;

/// Everything one convergence round looks at.
pub(super) struct Ctx<'a> {
    pub spec: &'a Spec,
    pub instances: &'a [Instance],
    pub last: Option<&'a Status>,
    pub now: Timestamp,
    /// The revision the fleet converges to: the spec's, or during an abort the
    /// status' `currentRevision`.
    pub target: &'a str,
    /// The revision the fleet was last entirely on.
    pub current: &'a str,
    pub aborting: bool,
    /// The last status is about the same update (same `updateRevision`), so its
    /// times and evacuation order still apply.
    pub same_update: bool,
}

impl<'a> Ctx<'a> {
    /// The last status, if it is about this update.
    pub fn prev(&self) -> Option<&'a Status> {
        self.last.filter(|_| self.same_update)
    }

    pub fn replicas(&self) -> usize {
        usize::try_from(self.spec.replicas).unwrap_or(0)
    }
}

/// The observed instances, sorted out.
pub(super) struct Fleet<'a> {
    /// Not failed.
    pub live: Vec<&'a Instance>,
    pub failed: Vec<&'a Instance>,
    /// Live instances of the target revision, at most `replicas`.
    pub keep: Vec<&'a Instance>,
    /// Live target instances beyond `replicas`: retired like old ones.
    pub surplus: Vec<&'a Instance>,
    /// Live instances of any other revision.
    pub old: Vec<&'a Instance>,
    pub replicas: usize,
}

impl<'a> Fleet<'a> {
    pub fn new(ctx: &Ctx<'a>) -> Fleet<'a> {
        let (failed, live): (Vec<_>, Vec<_>) = ctx.instances.iter().partition(|i| i.failed);
        let (mut keep, old): (Vec<&Instance>, Vec<&Instance>) =
            live.iter().copied().partition(|i| i.revision == ctx.target);
        let replicas = ctx.replicas();
        // Which target instances are extra: those already leaving, then unready,
        // then the least connected, then the newest.
        let prev = prev_evacuations(ctx);
        keep.sort_by_key(|i| {
            (
                Reverse(i.evacuating() || prev.contains(&i.name.as_str())),
                Reverse(!i.ready),
                // Unknown counts as most connected: kept, never picked as extra.
                i.connections().unwrap_or(u64::MAX),
                Reverse(i.created_at),
                Reverse(i.name.as_str()),
            )
        });
        let rest = keep.split_off(keep.len().saturating_sub(replicas));
        let (surplus, keep) = (keep, rest);
        Fleet {
            live,
            failed,
            keep,
            surplus,
            old,
            replicas,
        }
    }

    /// Target instances that are ready.
    pub fn ready(&self) -> usize {
        self.keep.iter().filter(|i| i.ready).count()
    }

    /// An update (or abort) is in progress: old instances remain, or the fleet is
    /// moving to a new revision whose `replicas` instances are not all ready yet
    /// (possible once every old instance failed).
    pub fn in_progress(&self, ctx: &Ctx<'_>) -> bool {
        !self.old.is_empty() || (ctx.target != ctx.current && self.ready() < self.replicas)
    }
}

fn prev_evacuations<'s>(ctx: &Ctx<'s>) -> Vec<&'s str> {
    ctx.prev()
        .map(|s| s.evacuations.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

/// What a strategy wants this round.
pub(super) struct Plan {
    /// Target instances to create.
    pub create: usize,
    /// Ready target instances join the serving set (otherwise their flag is left as is).
    pub serve_targets: bool,
    /// Old instances leave the serving set (BlueGreen after the switch).
    pub unserve_old: bool,
    /// No evacuation may run now (before the switch, during the initial delay).
    pub hold: bool,
    /// Evacuations run only while at least this many instances serve, and none is
    /// started that would take the count below it.
    pub floor: usize,
    /// Most evacuations at once.
    pub max_active: usize,
    /// Phase, unless aborting.
    pub phase: Phase,
    pub traffic_switch: Option<TrafficSwitch>,
    /// Time until a timer fires (the initial delay's end).
    pub timer: Option<Duration>,
    /// Instances to delete outright, connections and all (`Naive` only; empty for
    /// the real strategies, which only ever delete what is evacuated or idle).
    pub kill: Vec<String>,
}

/// The result of one convergence round.
pub(super) struct Outcome {
    pub actions: Vec<Action>,
    pub phase: Phase,
    pub traffic_switch: Option<TrafficSwitch>,
    pub evacuations: Vec<String>,
    pub timer: Option<Duration>,
    pub floor: usize,
    /// An update (or abort) is in progress ([`Fleet::in_progress`]).
    pub in_progress: bool,
    /// Evacuations are held back because fewer than `floor` instances serve.
    pub paused: bool,
    /// Waiting for target instances to become ready with no evacuation running.
    pub blocked: bool,
    /// Target instances wanted and ready, for messages.
    pub wanted: usize,
    pub ready: usize,
    pub serving: usize,
    /// The instance(s) evacuating after this round.
    pub running: Vec<String>,
    /// The revisions of the old instances, sorted.
    pub old_revisions: Vec<String>,
}

/// One round: delete failed instances, create missing ones, set the serving set,
/// retire old and extra instances, within the strategy's plan.
pub(super) fn converge(ctx: &Ctx<'_>) -> Outcome {
    let fleet = Fleet::new(ctx);
    let plan = match ctx.spec.strategy.kind {
        StrategyType::BlueGreen => super::blue_green::plan(ctx, &fleet),
        StrategyType::Rolling => super::rolling::plan(ctx, &fleet),
        StrategyType::Naive => super::naive::plan(ctx, &fleet),
    };
    let mut acts = Actions::new(ctx.instances);
    for f in &fleet.failed {
        acts.delete(f);
    }
    let killed = |i: &Instance| plan.kill.contains(&i.name);
    for k in fleet.live.iter().filter(|i| killed(i)) {
        acts.delete(k);
    }
    for _ in 0..plan.create {
        acts.create(&ctx.spec.name, ctx.target);
    }
    // Targets first, so that at the switch the serving set never runs empty.
    for t in &fleet.keep {
        if t.evacuating() {
            acts.stop(t);
        }
        if plan.serve_targets && t.ready {
            acts.set_serving(t, true);
        }
    }
    if plan.unserve_old {
        for o in &fleet.old {
            acts.set_serving(o, false);
        }
    }
    let serving = fleet
        .live
        .iter()
        .filter(|i| i.ready && acts.serving(i) && !killed(i))
        .count();
    let mut candidates: Vec<(&Instance, bool)> = fleet.old.iter().map(|i| (*i, false)).collect();
    candidates.extend(fleet.surplus.iter().map(|i| (*i, true)));
    candidates.retain(|(i, _)| !killed(i));
    let policy = Policy {
        budget: serving.saturating_sub(plan.floor),
        max_active: plan.max_active,
        pause: plan.hold || serving < plan.floor,
    };
    let mut recipients: Vec<String> = fleet
        .keep
        .iter()
        .filter(|i| i.ready && acts.serving(i))
        .map(|i| i.name.clone())
        .collect();
    recipients.sort();
    let retired = retire(
        &mut acts,
        candidates,
        &policy,
        &prev_evacuations(ctx),
        &Evacuation {
            strategy: &ctx.spec.strategy.evacuation_strategy,
            migrate_to: &recipients,
        },
    );
    let wanted = fleet.keep.len() + plan.create;
    let ready = fleet.ready();
    let in_progress = fleet.in_progress(ctx);
    Outcome {
        actions: acts.list,
        phase: plan.phase,
        traffic_switch: plan.traffic_switch,
        evacuations: retired.evacuations,
        timer: plan.timer,
        floor: plan.floor,
        in_progress,
        paused: !plan.hold && serving < plan.floor && retired.remaining > 0,
        // A kill is progress too (Naive): the progress deadline counts from the
        // last one.
        blocked: in_progress
            && ready < wanted
            && retired.running.is_empty()
            && plan.kill.is_empty(),
        wanted,
        ready,
        serving,
        running: retired.running,
        old_revisions: fleet
            .old
            .iter()
            .map(|i| i.revision.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect(),
    }
}

/// How [`retire`] evacuates: the pace, and who receives the clients.
struct Evacuation<'a> {
    strategy: &'a EvacuationStrategy,
    migrate_to: &'a [String],
}

/// Limits for [`retire`].
struct Policy {
    /// How many ready, serving instances may still be taken out of serving.
    budget: usize,
    max_active: usize,
    /// Start nothing and stop what runs.
    pause: bool,
}

struct Retired {
    evacuations: Vec<String>,
    running: Vec<String>,
    /// Candidates left (not deleted this round).
    remaining: usize,
}

/// The one "evacuate, then delete" step, for old instances and extra ones alike.
///
/// Candidates go in this order: evacuating now, paused earlier (in the last status'
/// `evacuations`), then old before extra, most connections first, then by name.
/// A candidate that is done (evacuation `prohibiting` with no connection) or idle
/// (not serving, nothing held) is deleted, whatever the limits. One whose load is
/// unknown is left alone (see [`Load::Unknown`]). Otherwise, unless
/// paused, up to `max_active` evacuate: a running one keeps running, the next one is
/// taken out of serving and its evacuation started, as long as taking it out keeps
/// `floor` instances serving. When paused, running evacuations are stopped and the
/// instances stay out of serving.
fn retire(
    acts: &mut Actions,
    mut candidates: Vec<(&Instance, bool)>,
    policy: &Policy,
    prev: &[&str],
    evacuation: &Evacuation<'_>,
) -> Retired {
    let started_before = |i: &Instance| i.evacuating() || prev.contains(&i.name.as_str());
    candidates.sort_by_key(|(i, extra)| {
        (
            Reverse(i.evacuating()),
            Reverse(started_before(i)),
            *extra,
            Reverse(i.connections().unwrap_or(u64::MAX)),
            i.name.as_str(),
        )
    });
    let mut out = Retired {
        evacuations: Vec::new(),
        running: Vec::new(),
        remaining: 0,
    };
    let mut budget = policy.budget;
    for (inst, _) in candidates {
        if inst.evacuated() || inst.idle() {
            acts.delete(inst);
            continue;
        }
        out.remaining += 1;
        if inst.unknown().is_some() {
            // Nobody knows what it holds: never deleted, nothing started on it.
            // One whose evacuation was started keeps its slot, so no second one
            // starts beside it; a pause still stops it (stopping is harmless).
            if started_before(inst) {
                if policy.pause {
                    acts.stop(inst);
                } else {
                    out.running.push(inst.name.clone());
                }
                out.evacuations.push(inst.name.clone());
            }
            continue;
        }
        let held = policy.pause || out.running.len() >= policy.max_active;
        if held {
            if inst.evacuating() {
                acts.stop(inst);
            }
        } else if inst.evacuating() {
            out.running.push(inst.name.clone());
        } else {
            let cost = usize::from(inst.ready && acts.serving(inst));
            if cost <= budget {
                budget -= cost;
                if inst.load == Load::EMPTY {
                    // Nothing to evict: out of serving now, deleted once idle.
                    acts.set_serving(inst, false);
                } else {
                    acts.start(inst, evacuation);
                    out.running.push(inst.name.clone());
                    out.evacuations.push(inst.name.clone());
                    continue;
                }
            }
        }
        if started_before(inst) {
            out.evacuations.push(inst.name.clone());
        }
    }
    out.evacuations.sort();
    out
}

/// Actions in the making: no duplicates, and the serving flags as they will be.
struct Actions {
    list: Vec<Action>,
    names: BTreeSet<String>,
    serving: BTreeMap<String, bool>,
}

impl Actions {
    fn new(instances: &[Instance]) -> Actions {
        Actions {
            list: Vec::new(),
            names: instances.iter().map(|i| i.name.clone()).collect(),
            serving: BTreeMap::new(),
        }
    }

    fn serving(&self, i: &Instance) -> bool {
        self.serving.get(&i.name).copied().unwrap_or(i.serving)
    }

    fn set_serving(&mut self, i: &Instance, serving: bool) {
        if self.serving(i) != serving {
            self.serving.insert(i.name.clone(), serving);
            self.list.push(Action::SetServing {
                name: i.name.clone(),
                serving,
            });
        }
    }

    fn create(&mut self, set: &str, revision: &str) {
        let name = (0..)
            .map(|index| instance_name(set, revision, index))
            .find(|n| !self.names.contains(n))
            .unwrap_or_default();
        self.names.insert(name.clone());
        self.list.push(Action::Create {
            name,
            revision: revision.to_owned(),
        });
    }

    fn start(&mut self, i: &Instance, evacuation: &Evacuation<'_>) {
        self.set_serving(i, false);
        self.list.push(Action::StartEvacuation {
            name: i.name.clone(),
            evacuation: evacuation.strategy.clone(),
            migrate_to: evacuation.migrate_to.to_vec(),
        });
    }

    fn stop(&mut self, i: &Instance) {
        self.list.push(Action::StopEvacuation {
            name: i.name.clone(),
        });
    }

    fn delete(&mut self, i: &Instance) {
        self.list.push(Action::Delete {
            name: i.name.clone(),
        });
    }
}

/// The name the engine gives instance `index` of `revision` in the set `set`:
/// `{set}-{revision prefix}-{index}`, each part turned into DNS label characters
/// (lowercase letters, digits, `-`): the revision prefix is its first 10
/// characters (`rev` if none is left), the set's name is cut so that the whole
/// fits in 63 characters (a DNS label, as a pod's hostname must). Two sets with
/// the same template never collide; new instances take the lowest free index.
pub fn instance_name(set: &str, revision: &str, index: usize) -> String {
    let label = |s: &str, max: usize| -> String {
        let cleaned: String = s
            .chars()
            .map(|c| c.to_ascii_lowercase())
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(max)
            .collect();
        cleaned.trim_matches('-').to_owned()
    };
    let revision = label(revision, 10);
    let revision = if revision.is_empty() {
        "rev".to_owned()
    } else {
        revision
    };
    let tail = format!("{revision}-{index}");
    let set = label(set, 63usize.saturating_sub(tail.len() + 1));
    if set.is_empty() {
        tail
    } else {
        format!("{set}-{tail}")
    }
}
