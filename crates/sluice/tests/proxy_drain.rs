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

fn wait_exit(proxy: &mut Proxy, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = proxy.child.0.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_fails_readiness_then_evicts_at_the_drain_rate_and_exits_0() {
    let broker = Mosquitto::start();
    let mut proxy = Proxy::start(
        &[("app", broker.addr())],
        &[
            "--drain-delay",
            "1",
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
    wait_until("readiness to fail", Duration::from_millis(500), || {
        proxy.call("GET", path::READYZ, None).0 == 503
    });
    // Still accepting during the drain delay: a new client gets in.
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
        Duration::from_millis(900),
        || late.connacks() == 1,
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
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
            t0.elapsed() < Duration::from_secs(20),
            "no exit within 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status}");
    assert!(seen_partial, "evictions were not spread over time");
    // 1 s delay + 41 evictions at 20/s (2 s) = 3 s; below 2.5 s would mean a
    // burst, above 7 s a stall.
    println!("drain took {took:?}");
    assert!(
        took >= Duration::from_millis(2500) && took <= Duration::from_secs(7),
        "drain took {took:?}"
    );
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
    wait_until("readiness to fail", Duration::from_millis(500), || {
        proxy.call("GET", path::READYZ, None).0 == 503
    });
    sigterm(proxy.pid());
    let status = wait_exit(&mut proxy, Duration::from_secs(3));
    assert!(status.success(), "exit status {status}");
}
