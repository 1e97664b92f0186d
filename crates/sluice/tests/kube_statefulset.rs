//! The problem sluice exists to solve, on real Kubernetes machinery: a
//! StatefulSet of 3 mosquitto pods with 1000 MQTT clients through its Service,
//! rolling-updated by the real StatefulSet controller. It measures disconnects
//! per client, connections per pod over time, the fewest ready pods and the
//! imbalance at the end, prints them and writes them to
//! `target/tmp/<namespace>/baseline.json`: the baseline the operator must beat
//! (docs/benchmarks.md). It asserts only what is robustly true.
//! Needs `scripts/testcluster up` and `SLUICE_KUBECONFIG` (scripts/test sets both).

mod kube_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use kube_support::{Env, object, poll};
use support::bench_extra::{BenchRun, read_json};

const LONG: Duration = Duration::from_secs(180);
const CLIENTS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_rolling_update_baseline() {
    Env::start("kube-sts", 4).await.run(baseline).await;
}

/// One sample of the fleet during the update.
#[derive(Debug, Clone, serde::Serialize)]
struct Sample {
    /// Seconds since the update started.
    t: f64,
    /// Established connections per pod name.
    pods: BTreeMap<String, u64>,
    /// Ready endpoints in the Service's slices.
    ready: usize,
}

async fn baseline(env: &Env) {
    let conf = env.mosquitto_conf();
    let svc: Service = object(json!({
        "metadata": {"name": "mqtt"},
        "spec": {"selector": {"app": "mqtt"},
                 "ports": [{"name": "mqtt", "port": 1883, "targetPort": "mqtt"}]},
    }));
    let ip = Api::<Service>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create the service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP");
    let sts: StatefulSet = object(json!({
        "metadata": {"name": "mqtt"},
        "spec": {
            "replicas": 3,
            "serviceName": "mqtt",
            "selector": {"matchLabels": {"app": "mqtt"}},
            "template": {
                "metadata": {"labels": {"app": "mqtt"}},
                "spec": {
                    "terminationGracePeriodSeconds": 10,
                    "containers": [{
                        "name": "mosquitto",
                        "image": "eclipse-mosquitto:2.0",
                        "command": ["/usr/sbin/mosquitto"],
                        "args": ["-c", conf],
                        "env": [{"name": "VERSION", "value": "1"}],
                        "ports": [{"name": "mqtt", "containerPort": 1883}],
                        "readinessProbe": {"tcpSocket": {"port": "mqtt"}, "periodSeconds": 1},
                    }],
                },
            },
        },
    }));
    let sets = Api::<StatefulSet>::namespaced(env.client.clone(), &env.ns);
    sets.create(&PostParams::default(), &sts)
        .await
        .expect("create the statefulset");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let by_label = ListParams::default().labels("app=mqtt");
    poll("3 ready endpoints", LONG, async || {
        let eps = env.endpoints("mqtt").await;
        let ready = eps.values().filter(|r| **r).count();
        if ready == 3 {
            Ok(())
        } else {
            Err(format!("{eps:?}"))
        }
    })
    .await;
    let uids_before = uids(&pods, &by_label).await;

    let summary = env.dir.join("bench.json");
    let bench = BenchRun::start_command(
        env.sluice_in_node(),
        &[
            "-h",
            &ip,
            "-p",
            "1883",
            "-c",
            &CLIENTS.to_string(),
            "--json",
            &summary.display().to_string(),
        ],
    );
    tokio::task::block_in_place(|| bench.wait_connected(CLIENTS, LONG));
    poll("all clients on the pods", LONG, async || {
        let n: u64 = env.connections_per_ip(1883).await.values().sum();
        if n == CLIENTS {
            Ok(())
        } else {
            Err(format!("{n} connections"))
        }
    })
    .await;
    let before = sample(env, &pods, &by_label, 0.0).await;

    // The rolling update: a new env value in the template; the StatefulSet
    // controller replaces mqtt-2, then mqtt-1, then mqtt-0, each once the
    // previous one is Ready again.
    let start = tokio::time::Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "mosquitto", "env": [{"name": "VERSION", "value": "2"}]},
    ]}}}});
    sets.patch("mqtt", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch the template");
    let mut samples = vec![before];
    let rolled = async || {
        let s = sets.get("mqtt").await.map_err(|e| e.to_string())?;
        let st = s.status.clone().unwrap_or_default();
        let done = st.observed_generation >= s.metadata.generation
            && st.updated_replicas == Some(3)
            && st.ready_replicas == Some(3)
            && st.current_revision == st.update_revision;
        if done { Ok(()) } else { Err(format!("{st:?}")) }
    };
    let deadline = start + LONG;
    let mut rolled_after = None;
    // Sample every 250 ms until the rollout is done and every client is back.
    loop {
        let t = start.elapsed().as_secs_f64();
        let s = sample(env, &pods, &by_label, t).await;
        let back = s.pods.values().sum::<u64>() == CLIENTS;
        samples.push(s);
        if rolled_after.is_none() && rolled().await.is_ok() {
            rolled_after = Some(t);
        }
        if rolled_after.is_some() && back && bench.connected() == CLIENTS {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "rollout or reconnection not done after {LONG:?}: {:?}; last sample {:?}",
            rolled().await,
            samples.last()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let output = tokio::task::block_in_place(|| bench.stop());
    assert!(output.success, "bench failed: {}", output.stderr);
    let uids_after = uids(&pods, &by_label).await;
    let s = read_json(&summary);

    let end = samples.last().cloned().expect("samples");
    let counts: Vec<u64> = end.pods.values().copied().collect();
    let imbalance = sluice_demo::promises::imbalance(&counts);
    let min_ready = samples.iter().map(|s| s.ready).min().unwrap_or_default();
    let min_with_clients = samples
        .iter()
        .map(|s| s.pods.values().filter(|n| **n > 0).count())
        .min()
        .unwrap_or_default();
    let report = json!({
        "clients": CLIENTS,
        "rolloutSeconds": rolled_after,
        "disconnectHistogram": s["disconnectHistogram"],
        "maxDisconnectsPerClient": s["maxDisconnectsPerClient"],
        "disconnects": s["disconnects"],
        "reconnectMillis": s["reconnectMillis"],
        "minReadyPods": min_ready,
        "minPodsWithClients": min_with_clients,
        "connectionsAtEnd": end.pods,
        "imbalanceAtEnd": imbalance.map(|x| (x * 1000.0).round() / 1000.0),
        "samples": samples,
    });
    let path = env.dir.join("baseline.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).expect("json")).expect("write");
    eprintln!("StatefulSet rolling update baseline ({}):", path.display());
    eprintln!("  rollout done after {rolled_after:?} s");
    eprintln!(
        "  disconnects per client histogram {}",
        s["disconnectHistogram"]
    );
    eprintln!(
        "  max disconnects per client {}",
        s["maxDisconnectsPerClient"]
    );
    eprintln!("  fewest ready pods {min_ready} of 3, fewest pods with clients {min_with_clients}");
    eprintln!(
        "  connections at the end {:?}, imbalance {imbalance:?}",
        end.pods
    );
    for s in samples.iter().step_by(4) {
        eprintln!("  t={:6.2}s ready={} {:?}", s.t, s.ready, s.pods);
    }

    // What is robustly true of any rolling update that replaces every pod.
    for (name, uid) in &uids_before {
        assert_ne!(
            uids_after.get(name),
            Some(uid),
            "pod {name} was not replaced"
        );
    }
    assert_eq!(
        s["connectedAtEnd"], CLIENTS,
        "every client reconnected: {s}"
    );
    let histogram: Vec<u64> =
        serde_json::from_value(s["disconnectHistogram"].clone()).expect("histogram");
    assert_eq!(
        histogram.iter().sum::<u64>(),
        CLIENTS,
        "one histogram entry per client"
    );
    assert_eq!(
        histogram.first().copied().unwrap_or_default(),
        0,
        "every pod was replaced, so every client was cut at least once: {histogram:?}"
    );
    assert_eq!(
        end.pods.values().sum::<u64>(),
        CLIENTS,
        "all clients on the pods at the end"
    );
}

async fn uids(pods: &Api<Pod>, lp: &ListParams) -> BTreeMap<String, String> {
    pods.list(lp)
        .await
        .expect("list pods")
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.metadata.uid?)))
        .collect()
}

/// Connections per pod (by name, from the pods' IPs) and ready endpoints now.
async fn sample(env: &Env, pods: &Api<Pod>, lp: &ListParams, t: f64) -> Sample {
    let by_ip = env.connections_per_ip(1883).await;
    let names: BTreeMap<String, String> = pods
        .list(lp)
        .await
        .expect("list pods")
        .into_iter()
        .filter_map(|p| Some((p.status?.pod_ip?, p.metadata.name?)))
        .collect();
    let mut per_pod: BTreeMap<String, u64> = names.values().map(|n| (n.clone(), 0)).collect();
    for (ip, n) in by_ip {
        let name = names
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| format!("gone {ip}"));
        *per_pod.entry(name).or_default() += n;
    }
    let ready = env.endpoints("mqtt").await.values().filter(|r| **r).count();
    Sample {
        t: (t * 100.0).round() / 100.0,
        pods: per_pod,
        ready,
    }
}
