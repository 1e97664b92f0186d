//! The comparison-only `Naive` strategy (a StatefulSet-style rolling restart) in the
//! simulated world: it finishes, but breaks the promises sluice keeps.

mod engine_world;

use std::time::Duration;

use engine_world::{ReadyFn, World, ready_after, strategy};
use sluice_core::engine::{Action, ConditionStatus, Phase, reason};
use sluice_core::spec::StrategyType;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn naive_cuts_clients_repeatedly_and_dips_capacity_but_ends_stable() {
    let mut w = World::started(
        3,
        strategy(StrategyType::Naive),
        ready_after(secs(2)),
        3000,
        0,
    );
    w.mark();
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(120), World::converged));

    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    let s = w.status();
    assert_eq!(s.phase, Phase::Stable);
    assert_eq!(s.current_revision, "green");
    assert_eq!(w.on("green").len(), 3);
    assert_eq!(w.instances.len(), 3);
    assert_eq!(w.phases, [Phase::Stable, Phase::Rolling, Phase::Stable]);
    let progressing = s.condition("Progressing").unwrap();
    assert_eq!(
        (progressing.status, progressing.reason.as_str()),
        (ConditionStatus::True, reason::UPDATE_COMPLETE)
    );

    // No evacuation ever: old instances are deleted with their clients.
    assert_eq!(
        w.count_actions(|a| matches!(a, Action::StartEvacuation { .. })),
        0
    );
    assert!(w.deleted.iter().all(|i| i.evac_starts == 0));
    // Capacity dips below replicas (to replicas − 1, never lower).
    assert_eq!(w.min_serving, 2, "capacity dips to replicas − 1");
    // Clients of the first killed instance land on the next old one and are cut
    // again: some clients are disconnected more than once.
    let max_cuts = w.clients.iter().map(|c| c.cuts).max().unwrap();
    assert!(max_cuts >= 2, "max cuts {max_cuts}");
    assert!(w.clients.iter().all(|c| c.evictions == 0 && c.drops == 0));
    let twice = w.clients.iter().filter(|c| c.cuts >= 2).count();
    assert!(twice > 100, "only {twice} clients cut twice or more");
    // Nothing lost in the end: every client reconnected.
    assert!(w.clients.iter().all(|c| c.on.is_some()));
}

#[test]
fn naive_goes_one_instance_at_a_time_in_statefulset_order() {
    let mut w = World::started(
        3,
        strategy(StrategyType::Naive),
        ready_after(secs(2)),
        300,
        0,
    );
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(120), World::converged));
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    // Each deletion comes with its replacement, in the same decision; the next
    // deletion waits until the replacement is ready (2 s).
    let deletes: Vec<(Duration, String)> = w
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::Delete { .. }))
        .map(|(t, a)| (*t, a.name().to_owned()))
        .collect();
    let names: Vec<&str> = deletes.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(
        names,
        ["w-blue-2", "w-blue-1", "w-blue-0"],
        "highest ordinal first"
    );
    for pair in deletes.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= secs(2), "{deletes:?}");
    }
    let creates: Vec<(Duration, String)> = w
        .actions
        .iter()
        .filter(|(_, a)| matches!(a, Action::Create { revision, .. } if revision == "green"))
        .map(|(t, a)| (*t, a.name().to_owned()))
        .collect();
    assert_eq!(
        creates.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        deletes.iter().map(|(t, _)| *t).collect::<Vec<_>>()
    );
    assert_eq!(
        creates.iter().map(|(_, n)| n.as_str()).collect::<Vec<_>>(),
        ["w-green-0", "w-green-1", "w-green-2"]
    );
}

#[test]
fn naive_progress_deadline_counts_from_the_last_deletion() {
    // Every green instance takes 20 s to become ready, the deadline is 30 s: the
    // whole update takes 60 s, but no single wait exceeds the deadline.
    let slow: ReadyFn = Box::new(|rev, _| Some(if rev == "green" { secs(20) } else { secs(1) }));
    let mut w = World::started(3, strategy(StrategyType::Naive), slow, 300, 0);
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(200), World::converged));
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    assert_eq!(w.status().phase, Phase::Stable);
    assert_eq!(w.status().current_revision, "green");
}

#[test]
fn naive_green_that_never_gets_ready_is_aborted_back_to_blue() {
    let never: ReadyFn = Box::new(|rev, _| (rev == "blue").then_some(secs(1)));
    let mut w = World::started(3, strategy(StrategyType::Naive), never, 300, 0);
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(200), World::converged));
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    let s = w.status();
    assert_eq!(s.phase, Phase::Aborted);
    assert_eq!(s.current_revision, "blue");
    assert_eq!(
        s.condition("Progressing").unwrap().reason,
        reason::PROGRESS_DEADLINE_EXCEEDED
    );
    assert_eq!(w.on("blue").len(), 3);
    // Only the first blue instance was cut before the abort.
    assert_eq!(
        w.deleted
            .iter()
            .filter(|i| i.revision == "blue")
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["w-blue-2"]
    );
}
