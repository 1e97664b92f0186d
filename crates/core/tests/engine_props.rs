//! Property tests: random failures, readiness delays, aborts and spec changes; the
//! world checks the invariants at every tick (see `engine_world`), and every update
//! must come to rest, `Stable` on the spec's revision or `Aborted` on the previous
//! one, within a bound.

mod engine_world;

use std::time::Duration;

use engine_world::{World, strategy};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sluice_core::engine::Phase;
use sluice_core::spec::{IntOrPercent, RollingUpdate, StrategyType};

#[derive(Debug, Clone)]
struct Case {
    /// `None`: BlueGreen; `Some((maxSurge, maxUnavailable))`: Rolling.
    rolling: Option<(i32, i32)>,
    replicas: i32,
    clients: usize,
    sessions: u64,
    /// How long green instances take to be ready; `None`: never.
    green_ready_ms: Option<u64>,
    /// Added to every instance's readiness delay, by creation order.
    jitter_ms: Vec<u64>,
    /// (ms after the update started, which instance, of the newest revision?)
    failures: Vec<(u64, usize, bool)>,
    abort_at_ms: Option<u64>,
    /// The spec moves on to "cyan" at this time.
    change_at_ms: Option<u64>,
    /// (ms after the update started, which instance, for how many ms): its
    /// evacuator cannot be read (its load is unknown).
    blinds: Vec<(u64, usize, u64)>,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just(None),
            (0i32..3, 0i32..3)
                .prop_filter("surge or unavailability", |(s, u)| s + u > 0)
                .prop_map(Some),
        ],
        1i32..5,
        0usize..400,
        0u64..30,
        prop_oneof![1 => Just(None), 6 => (0u64..5000).prop_map(Some)],
        vec(0u64..3000, 1..6),
        vec((0u64..60_000, any::<usize>(), any::<bool>()), 0..4),
        option::weighted(0.2, 0u64..60_000),
        option::weighted(0.2, 0u64..60_000),
        vec((0u64..60_000, any::<usize>(), 0u64..20_000), 0..3),
    )
        .prop_map(
            |(
                rolling,
                replicas,
                clients,
                sessions,
                green_ready_ms,
                jitter_ms,
                failures,
                abort_at_ms,
                change_at_ms,
                blinds,
            )| Case {
                rolling,
                replicas,
                clients,
                sessions,
                green_ready_ms,
                jitter_ms,
                failures,
                abort_at_ms,
                change_at_ms,
                blinds,
            },
        )
}

enum Event {
    Fail(usize, bool),
    /// Which instance, for how long.
    Blind(usize, Duration),
    Abort,
    Change,
}

/// Time allowed from the first spec change to rest, whatever happens.
const BOUND: Duration = Duration::from_secs(600);

fn run(case: &Case) -> Result<(), TestCaseError> {
    let mut s = strategy(if case.rolling.is_some() {
        StrategyType::Rolling
    } else {
        StrategyType::BlueGreen
    });
    s.evacuation_strategy.conn_evict_rate = 100;
    s.evacuation_strategy.sess_evict_rate = 50;
    if let Some((surge, unavailable)) = case.rolling {
        s.rolling_update = RollingUpdate {
            max_surge: IntOrPercent::Count(surge),
            max_unavailable: IntOrPercent::Count(unavailable),
        };
    }
    let (green, jitter) = (case.green_ready_ms, case.jitter_ms.clone());
    let ready = Box::new(move |rev: &str, serial: u64| {
        let j = jitter[usize::try_from(serial).unwrap() % jitter.len()];
        let base = match rev {
            "green" => green?,
            "cyan" => 1000,
            _ => 500,
        };
        Some(Duration::from_millis(base + j))
    });
    let mut w = World::started(case.replicas, s, ready, case.clients, case.sessions);
    w.mark();
    w.spec.revision = "green".into();
    let start = w.now;
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut events: Vec<(Duration, Event)> = case
        .failures
        .iter()
        .map(|(t, which, newest)| (at(*t), Event::Fail(*which, *newest)))
        .collect();
    events.extend(
        case.blinds
            .iter()
            .map(|(t, which, ms)| (at(*t), Event::Blind(*which, Duration::from_millis(*ms)))),
    );
    events.extend(case.abort_at_ms.map(|t| (at(t), Event::Abort)));
    events.extend(case.change_at_ms.map(|t| (at(t), Event::Change)));
    events.sort_by_key(|(t, _)| *t);
    let mut events = events.into_iter().peekable();

    let mut rested = false;
    let mut blind: Vec<(Duration, String)> = Vec::new();
    while w.now < start + BOUND {
        blind.retain(|(until, name)| {
            let over = *until <= w.now;
            if over {
                w.blind(name, false);
            }
            !over
        });
        while let Some((_, event)) = events.next_if(|(t, _)| *t <= w.now) {
            match event {
                Event::Fail(which, newest) => {
                    let names: Vec<String> = w
                        .instances
                        .values()
                        .filter(|i| !i.failed && (i.revision == w.spec.revision) == newest)
                        .map(|i| i.name.clone())
                        .collect();
                    if !names.is_empty() {
                        w.fail(&names[which % names.len()]);
                    }
                }
                Event::Blind(which, d) => {
                    let names: Vec<String> = w.instances.keys().cloned().collect();
                    let name = names[which % names.len()].clone();
                    w.blind(&name, true);
                    blind.push((w.now + d, name));
                }
                Event::Abort => w.abort = true,
                Event::Change => w.spec.revision = "cyan".into(),
            }
        }
        w.step();
        if events.peek().is_none() && blind.is_empty() && w.converged() {
            rested = true;
            break;
        }
    }
    prop_assert!(w.violations.is_empty(), "{:#?}", w.violations);
    prop_assert!(rested, "not at rest after {:?}: {:#?}", BOUND, w.status());

    let status = w.status();
    match status.phase {
        Phase::Stable => prop_assert_eq!(&status.current_revision, &w.spec.revision),
        Phase::Aborted => {
            prop_assert_ne!(&status.current_revision, &w.spec.revision);
            prop_assert!(
                case.abort_at_ms.is_some()
                    || case.green_ready_ms.is_none()
                    || !case.failures.is_empty()
            );
        }
        other => prop_assert!(false, "at rest in {other:?}"),
    }
    prop_assert!(
        w.clients.iter().all(|c| c.on.is_some()),
        "a client is left unconnected"
    );
    // Once: in BlueGreen without abort or spec change, no client is evicted twice.
    if case.rolling.is_none()
        && case.abort_at_ms.is_none()
        && case.change_at_ms.is_none()
        && status.phase == Phase::Stable
    {
        prop_assert!(w.clients.iter().all(|c| c.evictions <= 1));
    }
    // A green that never becomes ready cannot complete.
    if case.green_ready_ms.is_none() && status.current_revision == "green" {
        prop_assert!(false, "completed on a never-ready revision");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_and_every_update_comes_to_rest(case in cases()) {
        run(&case)?;
    }
}
