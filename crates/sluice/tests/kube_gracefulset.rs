//! The GracefulSet operator end to end on real Kubernetes machinery: the real
//! API server and controllers of the test control plane, the node and service
//! proxy doubles (`sluice-testkube`), real mosquitto pods each with the
//! injected `sluice proxy` sidecar running as a real process, `sluice operator
//! run` as a real process in the node's network namespace, and 1000 real MQTT
//! clients (half 3.1.1, half 5) through the Service's ClusterIP.
//!
//! A template change is rolled out BlueGreen, then (another set) Rolling with
//! maxSurge 1 and maxUnavailable 0; beside them, the StatefulSet rolling update
//! of the same app and clients (the baseline). Each prints its figures and
//! writes them to `target/tmp/<namespace>/*.json` (docs/benchmarks.md). The
//! tests run one at a time (they share the machine's two cores).
//! Needs `scripts/testcluster up` and `SLUICE_KUBECONFIG` (scripts/test sets both),
//! root, iproute2 and mosquitto.

mod kube_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sluice_core::engine::Phase;

use kube_support::Env;
use kube_support::clients::Clients;
use kube_support::gset::{self, EvacuatorWatch};
use kube_support::rollout::{self, CLIENTS, Figures, LONG};

/// The configured `connEvictRate` (and `sessEvictRate`): ~333 connections per
/// old pod leave in ~7 s.
const RATE: u32 = 50;
/// How far above the configured eviction rate the measured one may be.
const RATE_TOLERANCE: f64 = 0.10;
/// Largest (max − min) / mean of the new pods' connections at the end. The
/// Service sends each reconnecting client to a ready endpoint at random, so the
/// end balance is a multinomial draw of 1000 clients over 3 pods: its imbalance
/// has a median of 0.087 and exceeds the promise's 0.10 in ~38% of draws, 0.30
/// in under 0.1%. So the test holds 0.30, and the figure (0.02–0.14 in the runs
/// of docs/benchmarks.md) is reported there.
const MAX_IMBALANCE: f64 = 0.30;

/// One test at a time: each runs 1000 clients and a fleet.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_moves_each_client_at_most_once_through_the_service() {
    let _one = SERIAL.lock().await;
    let env = Env::start("kube-gset-bg", 40).await;
    let _operator = gset::run_operator(&env).await;
    env.run(async |env| {
        let strategy = json!({"type": "BlueGreen", "initialDelaySeconds": 5,
                "progressDeadlineSeconds": 300, "evacuationStrategy": evacuation()});
        let (f, rates) = upgrade(env, "GracefulSet BlueGreen", strategy).await;
        assert!(
            f.min_ready_pods >= 3,
            "never fewer than 3 serving pods: {} (samples in {})",
            f.min_ready_pods,
            env.dir.display()
        );
        let imbalance = f.imbalance_at_end.expect("connections at the end");
        assert!(
            imbalance <= MAX_IMBALANCE,
            "new pods balanced within {MAX_IMBALANCE}: {imbalance} {:?}",
            f.connections_at_end
        );
        assert_paced(&rates);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_moves_each_client_at_most_once_through_the_service() {
    let _one = SERIAL.lock().await;
    let env = Env::start("kube-gset-roll", 41).await;
    let _operator = gset::run_operator(&env).await;
    env.run(async |env| {
        let strategy = json!({"type": "Rolling", "initialDelaySeconds": 0,
                "progressDeadlineSeconds": 300, "evacuationStrategy": evacuation(),
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        let (f, rates) = upgrade(env, "GracefulSet Rolling (maxSurge 1)", strategy).await;
        // New connections go to the new pods only, so the endpoints narrow,
        // but the Service never runs out of them.
        assert!(
            f.min_ready_pods >= 1,
            "the Service always has a ready endpoint (samples in {})",
            env.dir.display()
        );
        assert_paced(&rates);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_rolling_update_side_by_side() {
    let _one = SERIAL.lock().await;
    Env::start("kube-gset-sts", 42)
        .await
        .run(async |env| {
            rollout::statefulset_baseline(env).await;
        })
        .await;
}

fn evacuation() -> Value {
    json!({"connEvictRate": RATE, "sessEvictRate": RATE, "waitTakeover": 1, "waitHealthCheck": 2})
}

/// Each old pod was evacuated at a measured pace: the mean of their rates is
/// at most [`RATE_TOLERANCE`] above [`RATE`] (never a burst) and at least half
/// of it. Slower happens only on a starved machine (the sidecars are debug
/// builds here, and the pacer slows rather than bursts: at load 47 on 2 cores
/// the mean fell to ~35/s), so the ±10% figure is a benchmark's
/// (docs/benchmarks.md), as in `demo_promises`, not this test's lower bound.
fn assert_paced(rates: &BTreeMap<String, f64>) {
    assert_eq!(
        rates.len(),
        3,
        "an eviction rate for each old pod: {rates:?}"
    );
    let mean = rates.values().sum::<f64>() / rates.len() as f64;
    let rate = f64::from(RATE);
    assert!(
        mean <= rate * (1.0 + RATE_TOLERANCE) && mean >= rate * 0.5,
        "eviction rate {mean:.1}/s (per pod {rates:?}) vs connEvictRate {RATE}"
    );
}

/// A GracefulSet `mqtt` of 3 mosquitto pods behind the sidecar, [`CLIENTS`]
/// clients through its Service, then a template change rolled out with
/// `strategy` by the operator (already running: [`gset::run_operator`]). Asserts what both strategies promise: each old
/// pod replaced and evacuated (seen in `status.nodeEvacuationsStatus` while it
/// ran, told in Events), every client disconnected at most once and connected
/// at the end. Returns the figures and each old pod's measured eviction rate.
async fn upgrade(env: &Env, title: &str, strategy: Value) -> (Figures, BTreeMap<String, f64>) {
    let mut template = env.mosquitto_behind_sidecar_template("mqtt");
    template["metadata"]["annotations"] = json!({"version": "1"});
    let ip = env.create_service("mqtt", json!(1883)).await;
    gset::create(env, gset::sidecar_set("mqtt", 3, template, strategy)).await;
    let first = gset::wait_status(env, "mqtt", "3 pods serving", LONG, |s| {
        s.phase == Phase::Stable && s.serving_replicas == 3 && s.ready_replicas == 3
    })
    .await;
    rollout::wait_ready_endpoints(env, 3).await;

    let clients = Clients::start(env, &ip, CLIENTS);
    tokio::task::block_in_place(|| clients.wait_connected(LONG));
    rollout::wait_clients_on_pods(env, CLIENTS).await;
    let old: BTreeMap<String, String> = gset::pods(env, "mqtt")
        .await
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.status?.pod_ip?)))
        .collect();
    assert_eq!(old.len(), 3, "{old:?}");
    let old_names: BTreeSet<String> = old.keys().cloned().collect();
    let selector = "sluice.dev/set=mqtt";
    let before = rollout::sample(env, selector, "mqtt", 0.0).await;

    let start = tokio::time::Instant::now();
    let watch = EvacuatorWatch::start(env, "mqtt", old.clone(), start).await;
    gset::change_template(env, "mqtt", "2").await;
    let mut seen = BTreeSet::new();
    let done = async || {
        let s = gset::status(env, "mqtt").await?;
        gset::evacuations_seen(&s, &mut seen);
        let finished = s.phase == Phase::Stable
            && s.current_revision == s.update_revision
            && s.update_revision != first.current_revision
            && s.serving_replicas == 3
            && s.ready_replicas == 3;
        if finished {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    };
    let (mut samples, done_after) = rollout::follow(env, &clients, selector, start, done).await;
    samples.insert(0, before);
    let tally = tokio::task::block_in_place(|| clients.stop());
    let readings = watch.stop();
    let rates = gset::eviction_rates(&readings);
    let figures = Figures::new(title, done_after, tally, samples, &old_names);
    let file = format!("{}.json", title.split_whitespace().nth(1).unwrap_or("gset"));
    figures.report(env, &file);
    std::fs::write(
        env.dir.join("evacuators.json"),
        serde_json::to_string_pretty(&json!({"rates": rates, "readings": readings})).expect("json"),
    )
    .expect("write");
    eprintln!("  eviction rates (connEvictRate {RATE}): {rates:?}");
    let events = gset::events(env).await;

    let t = &figures.clients;
    assert_eq!(
        t.connected_at_end, CLIENTS,
        "every client connected at the end: {t:?}"
    );
    assert!(
        t.max_disconnects <= 1,
        "every client disconnected at most once: {t:?}"
    );
    assert!(
        t.histogram.get(1).copied().unwrap_or_default() > 0,
        "the old pods' clients moved: {t:?}"
    );
    assert_eq!(
        figures.connections_at_end.values().sum::<u64>(),
        CLIENTS,
        "all clients on the new pods at the end: {:?}",
        figures.connections_at_end
    );
    let now: BTreeSet<String> = gset::pods(env, "mqtt")
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    assert!(now.is_disjoint(&old_names), "old pods replaced: {now:?}");
    assert_eq!(now.len(), 3, "{now:?}");
    assert!(
        old_names.is_subset(&seen),
        "status.nodeEvacuationsStatus showed each old pod's evacuation: saw {seen:?} of {old_names:?}"
    );
    let reasons: BTreeSet<&str> = events.iter().map(|(r, _)| r.as_str()).collect();
    for reason in [
        "CreatedPod",
        "Serving",
        "NotServing",
        "NodeEvacuation",
        "DeletedPod",
        "PhaseChanged",
    ] {
        assert!(reasons.contains(reason), "no {reason} Event in {events:?}");
    }
    for pod in &old_names {
        assert!(
            events
                .iter()
                .any(|(r, note)| r == "NodeEvacuation" && note.contains(pod.as_str())),
            "no NodeEvacuation Event for {pod}: {events:?}"
        );
    }
    gset::delete(env, "mqtt").await;
    (figures, rates)
}
