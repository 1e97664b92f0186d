//! The engine in a simulated world: happy paths and failure paths, checked against
//! the promises (see `engine_world` for the model and the per-tick invariants).

mod engine_world;

use std::time::Duration;

use engine_world::{World, ready_after, strategy};
use sluice_core::engine::{Action, ConditionStatus, INSTANCES_KNOWN, Phase, reason};
use sluice_core::spec::{IntOrPercent, RollingUpdate, StrategyType};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn progressing(w: &World) -> (ConditionStatus, String) {
    let s = w.status();
    let c = s.condition("Progressing").unwrap();
    (c.status, c.reason.clone())
}

/// The end state every finished update must reach.
fn assert_done_on(w: &World, revision: &str) {
    assert!(w.violations.is_empty(), "{:#?}", w.violations);
    assert!(w.converged(), "not converged: {:?}", w.status());
    let s = w.status();
    assert_eq!(s.current_revision, revision);
    assert_eq!(
        w.on(revision).len(),
        usize::try_from(w.spec.replicas).unwrap()
    );
    assert_eq!(w.instances.len(), w.on(revision).len());
    assert_eq!(
        s.condition("Available").unwrap().status,
        ConditionStatus::True
    );
    assert!(
        w.clients.iter().all(|c| c.on.is_some()),
        "a client is left without a connection"
    );
}

#[test]
fn blue_green_happy_path() {
    let mut w = World::started(
        3,
        strategy(StrategyType::BlueGreen),
        ready_after(secs(2)),
        3000,
        40,
    );
    w.connect_to("w-blue-1", 300); // the most connected goes first
    w.mark();
    w.spec.revision = "green".into();
    // While waiting for the initial delay, the engine asks to be called back exactly
    // when it ends.
    assert!(w.run_until(secs(30), |w| w.status().phase == Phase::WaitingInitialDelay));
    w.step();
    assert_eq!(
        w.last.as_ref().unwrap().requeue_after,
        secs(5) - engine_world::TICK
    );
    assert!(w.run_until(secs(120), World::converged));
    assert_eq!(w.last.as_ref().unwrap().requeue_after, secs(30), "at rest");

    assert_done_on(&w, "green");
    assert_eq!(w.min_serving, 3, "full capacity throughout");
    assert_eq!(
        w.phases,
        [
            Phase::Stable,
            Phase::Provisioning,
            Phase::WaitingInitialDelay,
            Phase::Evacuating,
            Phase::Stable
        ]
    );
    assert_eq!(
        progressing(&w),
        (ConditionStatus::True, reason::UPDATE_COMPLETE.into())
    );
    assert_eq!(w.evacuation_order(), ["w-blue-1", "w-blue-0", "w-blue-2"]);
    // The first evacuation starts initialDelaySeconds (5 s) after the switch.
    let switched = w.actions.iter().find(|(_, a)| matches!(a, Action::SetServing { serving: true, name } if name.starts_with("w-green"))).unwrap().0;
    let first = w
        .actions
        .iter()
        .find(|(_, a)| matches!(a, Action::StartEvacuation { .. }))
        .unwrap()
        .0;
    assert_eq!(first - switched, secs(5));
    for i in w.all_instances() {
        let expected = u32::from(i.revision == "blue");
        assert_eq!(
            i.evac_starts, expected,
            "{} evacuated {} times",
            i.name, i.evac_starts
        );
    }
    // Once: every client moved exactly once, none twice.
    assert!(w.clients.iter().all(|c| c.evictions == 1 && c.drops == 0));
    // Balanced: the green instances end even.
    let loads: Vec<usize> = w.instances.values().map(|i| i.clients.len()).collect();
    assert!(
        loads.iter().max().unwrap() - loads.iter().min().unwrap() <= 1,
        "{loads:?}"
    );
    // Status while evacuating carried EMQX's shape (checked on the last one published).
    assert!(w.status().node_evacuations_status.is_empty());
}

fn rolling(surge: IntOrPercent, unavailable: IntOrPercent) -> sluice_core::spec::UpdateStrategy {
    let mut s = strategy(StrategyType::Rolling);
    s.rolling_update = RollingUpdate {
        max_surge: surge,
        max_unavailable: unavailable,
    };
    s
}

#[test]
fn rolling_ten_replicas_quarter_quarter() {
    let strategy = rolling(IntOrPercent::Percent(25), IntOrPercent::Percent(25));
    let mut w = World::started(10, strategy, ready_after(secs(2)), 3000, 10);
    w.mark();
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(300), World::converged));

    assert_done_on(&w, "green");
    // 10 − 25% (2) must serve; the world also checked ≤ 13 instances at every tick.
    assert!(w.min_serving >= 8, "{}", w.min_serving);
    assert_eq!(w.phases, [Phase::Stable, Phase::Rolling, Phase::Stable]);
    assert_eq!(
        progressing(&w),
        (ConditionStatus::True, reason::UPDATE_COMPLETE.into())
    );
    for i in w.all_instances() {
        let expected = u32::from(i.revision == "blue");
        assert_eq!(
            i.evac_starts, expected,
            "{} evacuated {} times",
            i.name, i.evac_starts
        );
    }
    // Several old instances evacuate at once, within the budget.
    let first = w
        .actions
        .iter()
        .find(|(_, a)| matches!(a, Action::StartEvacuation { .. }))
        .unwrap()
        .0;
    let together = w
        .actions
        .iter()
        .filter(|(t, a)| *t == first && matches!(a, Action::StartEvacuation { .. }))
        .count();
    assert_eq!(
        together, 2,
        "maxUnavailable 2 of 10: two old instances leave first"
    );
}

#[test]
fn rolling_one_replica_creates_before_it_evacuates() {
    let strategy = rolling(IntOrPercent::Count(1), IntOrPercent::Count(0));
    let mut w = World::started(1, strategy, ready_after(secs(3)), 500, 0);
    w.mark();
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(60), World::converged));

    assert_done_on(&w, "green");
    assert_eq!(
        w.min_serving, 1,
        "maxUnavailable 0: the one instance always serves"
    );
    assert!(w.clients.iter().all(|c| c.evictions == 1));
    // The old instance was evacuated only after the new one was ready (3 s).
    let start = w
        .actions
        .iter()
        .find(|(_, a)| matches!(a, Action::StartEvacuation { .. }))
        .unwrap();
    let created = w
        .actions
        .iter()
        .find(|(_, a)| matches!(a, Action::Create { revision, .. } if revision == "green"))
        .unwrap();
    assert!(start.0 >= created.0 + secs(3), "{start:?} vs {created:?}");
}

#[test]
fn progress_deadline_aborts_without_disconnecting_anyone() {
    let ready = Box::new(|rev: &str, _| (rev != "green").then_some(secs(1)));
    let mut w = World::started(3, strategy(StrategyType::BlueGreen), ready, 3000, 0);
    w.mark();
    let start = w.now;
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(60), |w| w.status().phase == Phase::Aborted));

    // Aborted 30 s (progressDeadlineSeconds) after the update started, not before.
    let waited = w.now - start;
    assert!(
        waited >= secs(30) && waited <= secs(30) + secs(1),
        "{waited:?}"
    );
    assert_eq!(
        progressing(&w),
        (
            ConditionStatus::False,
            reason::PROGRESS_DEADLINE_EXCEEDED.into()
        )
    );
    assert!(w.on("green").is_empty(), "green is deleted");
    assert!(
        w.clients.iter().all(|c| c.evictions == 0 && c.drops == 0),
        "nobody disconnected"
    );
    assert_eq!(
        w.count_actions(|a| matches!(a, Action::StartEvacuation { .. })),
        0
    );
    assert_eq!(w.min_serving, 3, "blue served throughout");
    assert_done_on(&w, "blue");

    // No retry loop: the same revision stays aborted.
    let creates = w.count_actions(|a| matches!(a, Action::Create { .. }));
    w.run_for(secs(120));
    assert_eq!(
        w.count_actions(|a| matches!(a, Action::Create { .. })),
        creates
    );
    assert_eq!(w.status().phase, Phase::Aborted);
    assert_eq!(w.status().update_revision, "green");

    // A new revision starts a new update.
    w.spec.revision = "cyan".into();
    w.mark();
    let ok = w.run_until(secs(120), |w| {
        w.converged() && w.status().current_revision == "cyan"
    });
    assert!(
        ok,
        "{:#?}\n{:#?}",
        w.status(),
        w.instances
            .values()
            .map(engine_world::report)
            .collect::<Vec<_>>()
    );
    assert_done_on(&w, "cyan");
    assert_eq!(w.min_serving, 3);
}

/// Three blue instances holding 3000 clients (and `sessions`) upgraded to
/// "green" with BlueGreen, run until the second blue instance is being evicted:
/// the starting point of every mid-evacuation failure scenario.
fn blue_green_mid_evacuation(sessions: u64, keep_observed: bool) -> World {
    let mut w = World::started(
        3,
        strategy(StrategyType::BlueGreen),
        ready_after(secs(2)),
        3000,
        sessions,
    );
    w.keep_observed = keep_observed;
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(60), |w| w.on("blue").len() == 2
        && w.evicting().is_some()));
    w
}

#[test]
fn an_evacuator_that_cannot_be_read_is_kept_and_the_update_waits_for_it() {
    let mut w = blue_green_mid_evacuation(0, false);
    let evacuating = w.evicting().unwrap();
    let order = w.evacuation_order();
    w.blind(&evacuating, true);
    // Long enough for its evacuator to empty it: a known instance would be
    // deleted by now and the next one started.
    w.run_for(secs(30));
    assert!(
        w.instances.contains_key(&evacuating),
        "deleted while unknown"
    );
    assert_eq!(w.evacuation_order(), order, "nothing started beside it");
    let s = w.status();
    let known = s.condition(INSTANCES_KNOWN).unwrap();
    assert_eq!(
        (known.status, known.reason.as_str()),
        (ConditionStatus::False, reason::EVACUATOR_UNKNOWN)
    );
    assert!(known.message.contains(&evacuating), "{}", known.message);
    assert!(known.message.contains("answered 500"), "{}", known.message);
    assert_eq!(s.phase, Phase::Evacuating, "waiting, not aborted");

    // Readable again: it is deleted (evacuated) and the update completes.
    w.blind(&evacuating, false);
    assert!(w.run_until(secs(120), World::converged));
    assert_done_on(&w, "green");
    assert!(w.clients.iter().all(|c| c.evictions <= 1), "once");
    let known = w.status().condition(INSTANCES_KNOWN).unwrap().clone();
    assert_eq!(known.status, ConditionStatus::True);
}

#[test]
fn green_failing_mid_evacuation_pauses_then_completes() {
    let mut w = blue_green_mid_evacuation(0, false);
    let paused = w.evicting().unwrap();
    w.run_for(secs(1));
    w.fail("w-green-1");
    w.mark();
    w.step();

    // Noticed at once: the evacuation is stopped, the failed instance deleted and
    // replaced, the blue instance stays out of serving.
    let now = w.now;
    let acts: Vec<&Action> = w
        .actions
        .iter()
        .filter(|(t, _)| *t == now)
        .map(|(_, a)| a)
        .collect();
    assert!(
        acts.contains(&&Action::StopEvacuation {
            name: paused.clone()
        }),
        "{acts:?}"
    );
    assert!(
        acts.contains(&&Action::Delete {
            name: "w-green-1".into()
        }),
        "{acts:?}"
    );
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Create { revision, .. } if revision == "green"))
    );
    assert!(!w.instances[&paused].serving);
    assert_eq!(
        progressing(&w),
        (ConditionStatus::True, reason::EVACUATION_PAUSED.into())
    );
    assert_eq!(
        w.status().condition("Available").unwrap().status,
        ConditionStatus::False
    );

    // The invariant while capacity is short: the engine itself never lowers the
    // serving count (checked at every tick by the world), and nothing is evicted
    // while fewer than `replicas` serve. Here: 2 serve until the replacement is ready
    // (2 s), then 3 again; evictions resume only then, with the paused instance.
    let evicted_before = w.clients.iter().map(|c| c.evictions).sum::<u32>();
    assert!(w.run_until(secs(10), |w| w.serving() == 3));
    assert_eq!(
        w.clients.iter().map(|c| c.evictions).sum::<u32>(),
        evicted_before
    );
    assert!(w.run_until(secs(120), World::converged));
    assert_done_on(&w, "green");
    assert_eq!(w.min_serving, 2);
    let order = w.evacuation_order();
    assert_eq!(
        order.iter().filter(|n| **n == paused).count(),
        2,
        "resumed: {order:?}"
    );
    assert_eq!(
        order.len(),
        4,
        "three blue instances, one of them resumed: {order:?}"
    );
    assert_eq!(order[2], paused, "the paused one resumes first: {order:?}");
    // Once, for evictions: a client was evicted at most once (those on green-1 were
    // dropped by the failure, which is not an eviction).
    assert!(w.clients.iter().all(|c| c.evictions <= 1));
    assert!(w.reasons.contains(&reason::EVACUATION_PAUSED.to_owned()));
}

#[test]
fn user_abort_mid_evacuation_returns_to_blue() {
    let mut w = blue_green_mid_evacuation(20, false);
    let interrupted = w.evicting().unwrap();
    w.run_for(secs(1));
    w.abort = true;
    w.mark();
    w.step();
    assert_eq!(w.status().phase, Phase::Aborting);
    assert_eq!(
        progressing(&w),
        (ConditionStatus::False, reason::USER_ABORTED.into())
    );
    assert!(w.actions.iter().any(|(t, a)| *t == w.now
        && *a
            == Action::StopEvacuation {
                name: interrupted.clone()
            }));

    assert!(w.run_until(secs(120), |w| w.status().phase == Phase::Aborted));
    assert_done_on(&w, "blue");
    assert!(w.on("green").is_empty());
    assert_eq!(w.min_serving, 3, "full capacity during the abort");
    assert_eq!(
        progressing(&w),
        (ConditionStatus::False, reason::USER_ABORTED.into())
    );
    // The green instances were evacuated (at the pace), never dropped with clients.
    assert!(
        w.deleted
            .iter()
            .filter(|i| i.revision == "green")
            .all(|i| i.evac_starts <= 1)
    );
    assert!(w.clients.iter().all(|c| c.evictions <= 2 && c.drops == 0));

    // Stays aborted even with the flag still set; no green is created again.
    let creates =
        w.count_actions(|a| matches!(a, Action::Create { revision, .. } if revision == "green"));
    w.run_for(secs(60));
    assert_eq!(
        w.count_actions(|a| matches!(a, Action::Create { revision, .. } if revision == "green")),
        creates
    );
    assert_eq!(w.status().phase, Phase::Aborted);
}

#[test]
fn spec_change_mid_upgrade_treats_the_half_finished_green_as_old() {
    let mut w = blue_green_mid_evacuation(0, false);
    let interrupted = w.evicting().unwrap();
    w.mark();
    w.spec.revision = "cyan".into();
    w.step();
    assert_eq!(w.status().phase, Phase::Provisioning);
    assert_eq!(w.status().update_revision, "cyan");
    assert_eq!(w.status().current_revision, "blue");
    assert!(w.actions.iter().any(|(t, a)| *t == w.now
        && *a
            == Action::StopEvacuation {
                name: interrupted.clone()
            }));

    assert!(w.run_until(secs(180), World::converged));
    assert_done_on(&w, "cyan");
    assert_eq!(w.min_serving, 3);
    assert!(w.on("green").is_empty() && w.on("blue").is_empty());
    // Every green and blue instance left through an evacuation, each started once
    // (the interrupted blue one twice: before and after the change).
    for i in w.deleted.iter().filter(|i| i.peak > 0) {
        let expected = if i.name == interrupted { 2 } else { 1 };
        assert_eq!(i.evac_starts, expected, "{}", i.name);
    }
    assert!(
        w.phases.ends_with(&[
            Phase::Provisioning,
            Phase::WaitingInitialDelay,
            Phase::Evacuating,
            Phase::Stable
        ]),
        "{:?}",
        w.phases
    );
}

#[test]
fn a_restarted_runner_resumes_from_the_published_status() {
    let mut w = blue_green_mid_evacuation(0, true);

    // A runner that lost everything but the world and the published status (JSON)
    // decides exactly as the one that kept running.
    let observed = w.observed.clone().unwrap();
    let published = w.status_json.clone().unwrap();
    let fresh = sluice_core::engine::Observed {
        instances: observed.instances.clone(),
        last_status: Some(serde_json::from_str(&published).unwrap()),
        abort_requested: false,
    };
    let again = sluice_core::engine::decide(&w.spec, &fresh, w.clock());
    assert_eq!(&again, w.last.as_ref().unwrap());
    // And a decision from one tick later is the same whether or not the runner
    // restarted in between: the world always feeds decide the status through JSON.
    assert!(w.run_until(secs(120), World::converged));
    assert_done_on(&w, "green");
    assert!(w.clients.iter().all(|c| c.evictions == 1));
}

#[test]
fn a_failed_instance_is_replaced_while_stable() {
    let mut w = World::started(
        3,
        strategy(StrategyType::BlueGreen),
        ready_after(secs(2)),
        300,
        0,
    );
    w.fail("w-blue-0");
    w.step();
    assert!(w.actions.iter().any(|(t, a)| *t == w.now
        && *a
            == Action::Delete {
                name: "w-blue-0".into()
            }));
    assert!(w.run_until(secs(10), World::converged));
    assert_done_on(&w, "blue");
    assert_eq!(w.status().phase, Phase::Stable);
}

#[test]
fn an_old_instance_failing_mid_update_is_deleted_not_replaced() {
    let mut w = World::started(
        3,
        strategy(StrategyType::BlueGreen),
        ready_after(secs(2)),
        3000,
        0,
    );
    w.spec.revision = "green".into();
    assert!(w.run_until(secs(60), |w| w.status().phase == Phase::WaitingInitialDelay));
    w.fail("w-blue-2");
    assert!(w.run_until(secs(120), World::converged));
    assert_done_on(&w, "green");
    assert_eq!(
        w.count_actions(|a| matches!(a, Action::Create { revision, .. } if revision == "blue")),
        3
    );
    // Its clients were dropped once and reconnected to green: never evicted after.
    assert!(w.clients.iter().all(|c| c.evictions + c.drops == 1));
}

#[test]
fn scaling_while_stable_evacuates_extra_instances() {
    let mut w = World::started(
        4,
        strategy(StrategyType::BlueGreen),
        ready_after(secs(2)),
        2000,
        0,
    );
    w.spec.replicas = 2;
    w.mark();
    assert!(w.run_until(secs(60), World::converged));
    assert_done_on(&w, "blue");
    assert_eq!(w.min_serving, 2);
    assert_eq!(
        w.count_actions(|a| matches!(a, Action::StartEvacuation { .. })),
        2
    );
    w.spec.replicas = 5;
    assert!(w.run_until(secs(60), World::converged));
    assert_done_on(&w, "blue");
}
