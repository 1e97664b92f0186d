//! The core scenario: a front proxy with upstreams `a` and `b`, 500 real MQTT
//! clients on `a`; `a` leaves the serving set, `b` joins it, and `a` is
//! evacuated at 100/s. Every client is disconnected exactly once and comes back
//! by itself through `b`, and the eviction takes C / rate = 5 s.

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
    // Poll the live count on a every 20 ms until it reaches 0.
    let deadline = started + Duration::from_secs(30);
    let mut halfway = None;
    loop {
        let left = proxy.connections("a");
        if left == 0 {
            break;
        }
        if halfway.is_none() && left <= CLIENTS as u64 / 2 {
            halfway = Some(started.elapsed());
        }
        assert!(
            Instant::now() < deadline,
            "a still has {left} connections after 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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

    // 500 slots at 100/s: the first at the POST, the last at 4.99 s (the pacer
    // keeps its schedule to within one 10 ms slot and never catches up in a
    // burst, so a slow machine can only make this longer). The last evicted
    // connection closes within milliseconds of its slot; the polling adds up to
    // 20 ms plus an HTTP round trip. Below 4 s would mean evictions came in
    // bursts; the 2 s above 5 s leave room for a loaded 2-core machine where 500
    // clients reconnect while the driver task runs.
    println!("evicted {CLIENTS} at {RATE}/s in {took:?} (half at {halfway:?})");
    assert!(
        took >= Duration::from_secs(4) && took <= Duration::from_secs(7),
        "eviction took {took:?}, expected 4.0–7.0 s"
    );
    // Paced, not a burst at the end: half the connections were gone around 2.5 s.
    let halfway = halfway.expect("passed halfway");
    assert!(
        halfway >= Duration::from_millis(1500) && halfway <= Duration::from_millis(4000),
        "half the connections left after {halfway:?}, expected about 2.5 s"
    );
    drop(rt);
}
