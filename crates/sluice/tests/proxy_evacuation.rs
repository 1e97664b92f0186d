//! The core scenario: a front proxy with upstreams `a` and `b`, 500 real MQTT
//! clients on `a`; `a` leaves the serving set, `b` joins it, and `a` is
//! evacuated at 100/s. Every client is disconnected exactly once and comes back
//! by itself through `b`, and the evictions are paced: never a burst, never
//! faster than the rate, measured from the disconnects the clients saw (how
//! long it takes on this machine is a figure for scripts/bench-evacuation.sh,
//! not a test bound: a loaded machine only makes it longer).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_api::admin::{EvacuationRequest, path};
use sluice_api::metrics::{
    EVICTIONS, REFUSED_CONNECTIONS, UPSTREAM_CONNECTIONS, UPSTREAM_CONNECTIONS_OPENED, label,
};
use sluice_core::engine::EvacuationState;
use support::proxy_extra::{ClientStats, Proxy, metric, rumqttc_client};
use support::{Mosquitto, wait_until};

const CLIENTS: usize = 500;
const RATE: u32 = 100;

#[test]
fn evacuating_a_moves_500_clients_to_b_once_each_at_the_given_rate() {
    let (a, b) = (Mosquitto::start(), Mosquitto::start());
    let proxy = Proxy::start(&[("a", a.addr()), ("b", b.addr())], &["--protocol", "mqtt"]);
    proxy.set_serving("b", false);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stats: Vec<Arc<ClientStats>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    for (i, s) in stats.iter().enumerate() {
        // Half MQTT 3.1.1, half MQTT 5. Started 4 ms apart (2 s for all), as a
        // fleet of real devices would, so that a loaded CI machine does not
        // overflow mosquitto's accept backlog of 100 with 500 SYNs at once.
        let client = rumqttc_client(
            proxy.listen.port(),
            format!("core-{i}"),
            i % 2 == 1,
            format!("core/{i}"),
            Arc::clone(s),
        );
        let start_after = Duration::from_millis(4 * i as u64);
        rt.spawn(async move {
            tokio::time::sleep(start_after).await;
            client.await
        });
    }
    wait_until(
        "500 clients connected through a",
        Duration::from_secs(60),
        || {
            stats
                .iter()
                .all(|s| s.connected.load(std::sync::atomic::Ordering::SeqCst))
                && proxy.connections("a") == CLIENTS as u64
        },
    );
    // What each client saw before the evacuation (normally 1 connect and 0
    // disconnects; the assertions below count only what the evacuation adds).
    let before: Vec<(u32, u32)> = stats
        .iter()
        .map(|s| (s.connacks(), s.disconnects()))
        .collect();
    assert_eq!(proxy.connections("b"), 0);

    proxy.set_serving("b", true);
    proxy.set_serving("a", false);
    let started = Instant::now();
    proxy.start_evacuation(
        &path::upstream_evacuation("a"),
        &EvacuationRequest {
            wait_takeover: Some(0),
            ..EvacuationRequest::at_rate(RATE)
        },
    );
    wait_until("a to hold no connection", Duration::from_secs(60), || {
        proxy.connections("a") == 0
    });
    let took = started.elapsed();

    wait_until(
        "all 500 clients back through b",
        Duration::from_secs(30),
        || {
            stats
                .iter()
                .zip(&before)
                .all(|(s, (c0, _))| s.connacks() == c0 + 1)
                && proxy.connections("b") == CLIENTS as u64
        },
    );
    for (i, (s, (c0, d0))) in stats.iter().zip(&before).enumerate() {
        assert_eq!(
            s.disconnects() - d0,
            1,
            "client {i} was disconnected {} times by the evacuation",
            s.disconnects() - d0
        );
        assert_eq!(
            s.connacks() - c0,
            1,
            "client {i} reconnected {} times after the evacuation",
            s.connacks() - c0
        );
        assert_eq!(
            s.refused.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "client {i} was refused"
        );
    }
    let m = proxy.metrics();
    let (a, b) = ((label::UPSTREAM, "a"), (label::UPSTREAM, "b"));
    assert_eq!(metric(&m, EVICTIONS, &[a]), CLIENTS as f64);
    assert_eq!(
        metric(&m, UPSTREAM_CONNECTIONS_OPENED, &[b]),
        CLIENTS as f64
    );
    assert_eq!(
        metric(&m, UPSTREAM_CONNECTIONS, &[b, (label::PROTOCOL, "mqtt")]),
        CLIENTS as f64
    );
    assert_eq!(metric(&m, REFUSED_CONNECTIONS, &[]), 0.0);
    let a_evacuation = path::upstream_evacuation("a");
    wait_until(
        "a's evacuation to reach prohibiting",
        Duration::from_secs(5),
        || proxy.evacuation(&a_evacuation).state == EvacuationState::Prohibiting,
    );
    let status = proxy.evacuation(&a_evacuation);
    assert_eq!(status.stats.initial_connected, CLIENTS as u64);
    assert_eq!(status.stats.current_connected, 0);
    assert_eq!(status.stats.evicted_connections, Some(CLIENTS as u64));
    // The pace by the evacuator's own clock: every eviction after the first
    // (of each run of pending connections) timed; the pacer never goes faster
    // than its rate (up to one slot per run), and slower only when starved.
    let pace = status
        .stats
        .eviction_pace
        .expect("the evacuator times its evictions");
    assert!(
        (1..CLIENTS as u64).contains(&pace.evictions),
        "timed evictions: {pace:?}"
    );
    let per_second = pace.per_second().expect("evictions timed apart");
    assert!(
        per_second <= f64::from(RATE) * 1.02 && per_second >= f64::from(RATE) * 0.5,
        "the evacuator's own pace {per_second:.1}/s vs {RATE}/s ({pace:?})"
    );

    // Pacing, from the disconnects as the clients saw them (each within
    // milliseconds of its eviction slot; a starved test process can see a few
    // late, together). The pacer hands out at most r·w + r/10 slots in any window
    // w (a late caller takes what it owes, up to a tenth of a second's worth),
    // so in any second at most 1.1 × RATE clients leave; the rest of the 50%
    // is left for late observations. And 500 slots at
    // 100/s span 4.99 s: a span shorter by over a second would be too fast.
    let mut lost: Vec<Duration> = stats
        .iter()
        .flat_map(|s| s.lost_at.lock().unwrap().clone())
        .filter_map(|t| t.checked_duration_since(started))
        .collect();
    lost.sort();
    assert_eq!(
        lost.len(),
        CLIENTS,
        "one disconnect per client after the POST"
    );
    let span = lost[CLIENTS - 1] - lost[0];
    let densest = densest(&lost, Duration::from_secs(1));
    println!(
        "evicted {CLIENTS} at {RATE}/s in {took:?} (clients saw them over {span:?}, \
         at most {densest} in one second)"
    );
    assert!(
        densest <= (RATE as usize) * 3 / 2,
        "{densest} clients left within one second at {RATE}/s: a burst"
    );
    let fastest = Duration::from_secs_f64((CLIENTS - 1) as f64 / f64::from(RATE));
    assert!(
        span + Duration::from_secs(1) >= fastest,
        "500 evictions over {span:?}: faster than {RATE}/s"
    );
    drop(rt);
}

/// The most of the sorted `times` that fall in one window of length `w`.
fn densest(times: &[Duration], w: Duration) -> usize {
    let mut first = 0;
    let mut most = 0;
    for (last, t) in times.iter().enumerate() {
        while *t - times[first] > w {
            first += 1;
        }
        most = most.max(last + 1 - first);
    }
    most
}
