//! SIGTERM drain, as a Kubernetes pod is stopped: readiness turns 503 at once,
//! the proxy keeps accepting for the drain delay, evicts at the drain rate and
//! exits 0 when no connection is left; a second SIGTERM exits at once.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_api::admin::path;
use sluice_api::metrics::EVICTIONS;
use support::proxy_extra::{ClientStats, Proxy, metric, rumqttc_client, sigterm};
use support::{Mosquitto, wait_until};

const CLIENTS: usize = 40;

#[test]
fn sigterm_fails_readiness_then_evicts_at_the_drain_rate_and_exits_0() {
    let broker = Mosquitto::start();
    let mut proxy = Proxy::start(
        &[("app", broker.addr())],
        &[
            "--drain-delay",
            "3",
            "--drain-rate",
            "20",
            "--drain-timeout",
            "30",
        ],
    );
    assert_eq!(proxy.call("GET", path::READYZ, None).0, 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let stats: Vec<Arc<ClientStats>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    for (i, s) in stats.iter().enumerate() {
        rt.spawn(rumqttc_client(
            proxy.listen.port(),
            format!("drain-{i}"),
            i % 2 == 0,
            "d".into(),
            Arc::clone(s),
        ));
    }
    wait_until("clients connected", Duration::from_secs(20), || {
        proxy.connections("app") == CLIENTS as u64
    });

    let t0 = Instant::now();
    sigterm(proxy.pid());
    wait_until("readiness to fail", Duration::from_secs(10), || {
        proxy.call("GET", path::READYZ, None).0 == 503
    });
    // Still accepting during the drain delay: a new client gets in before the
    // first eviction (the proxy's own counter, not the wall clock, says so).
    let late = Arc::new(ClientStats::default());
    rt.spawn(rumqttc_client(
        proxy.listen.port(),
        "late".into(),
        false,
        "d".into(),
        Arc::clone(&late),
    ));
    wait_until(
        "a late client accepted during the drain delay",
        Duration::from_secs(20),
        || late.connacks() == 1,
    );
    assert_eq!(
        metric(&proxy.metrics(), EVICTIONS, &[]),
        0.0,
        "the late client got in only after the delay"
    );

    // Evictions come at 20/s: watch the counter pass through intermediate values.
    let total = CLIENTS + 1;
    let mut seen_partial = false;
    let status = loop {
        if let Some(status) = proxy.child.0.try_wait().unwrap() {
            break status;
        }
        if let Ok((200, text)) =
            support::proxy_extra::http(proxy.admin, "GET", path::METRICS, None, None)
        {
            let evicted = metric(&text, EVICTIONS, &[]);
            seen_partial |= evicted > 0.0 && evicted < total as f64 - 5.0;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no exit within 60 s (--drain-timeout is 30)"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(seen_partial, "evictions were not spread over time");
    // 3 s delay + 41 evictions at 20/s (the last 2 s after the first) = 5 s at
    // the least: sooner would mean a burst. A loaded machine can only make it
    // longer, so there is no upper bound here (a stall is caught by the drain
    // timeout above).
    println!("drain took {took:?}");
    assert!(took >= Duration::from_millis(4900), "drain took {took:?}");
    for (i, s) in stats.iter().enumerate() {
        assert!(s.disconnects() >= 1, "client {i} was never evicted");
    }
    drop(rt);
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let broker = Mosquitto::start();
    let mut proxy = Proxy::start(&[("app", broker.addr())], &["--drain-delay", "60"]);
    sigterm(proxy.pid());
    wait_until("readiness to fail", Duration::from_secs(10), || {
        proxy.call("GET", path::READYZ, None).0 == 503
    });
    sigterm(proxy.pid());
    // Well before the 60 s drain delay is over.
    let (status, _) = proxy.child.exit_within(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
}
