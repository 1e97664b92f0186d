//! Watching a fleet of mosquitto pods while it is updated, and the figures the
//! Kubernetes upgrade tests compare (docs/benchmarks.md): disconnects per
//! client, the fewest ready endpoints, connections per pod at the end. Also the
//! baseline they are compared with: the real StatefulSet controller's rolling
//! update of the same app and clients.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::clients::{Clients, Tally};
use super::{Env, object, poll};

/// Longest wait for a fleet to come up, roll, or reconnect.
pub const LONG: Duration = Duration::from_secs(180);
/// Clients of every upgrade test.
pub const CLIENTS: u64 = 1000;

/// One sample of the fleet during the update.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    /// Seconds since the update started.
    pub t: f64,
    /// Established connections per pod name (kernel counts in the node).
    pub pods: BTreeMap<String, u64>,
    /// Ready endpoints in the Service's slices.
    pub ready: usize,
}

/// What a test measured of one update.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// What was updated, and how.
    pub title: String,
    /// Seconds from the change until the controller reported it done.
    pub rollout_seconds: Option<f64>,
    /// What the clients saw.
    pub clients: Tally,
    /// The fewest ready endpoints of the Service in any sample.
    pub min_ready_pods: usize,
    /// The fewest pods holding clients in any sample.
    pub min_pods_with_clients: usize,
    /// Connections per pod at the end.
    pub connections_at_end: BTreeMap<String, u64>,
    /// (max − min) / mean of those.
    pub imbalance_at_end: Option<f64>,
    /// Every sample.
    pub samples: Vec<Sample>,
}

impl Figures {
    /// The figures of a finished update; the end figures leave out the pods
    /// in `replaced` (old pods still terminating when the last sample was taken).
    pub fn new(
        title: &str,
        rollout_seconds: Option<f64>,
        clients: Tally,
        samples: Vec<Sample>,
        replaced: &BTreeSet<String>,
    ) -> Figures {
        let mut end = samples.last().map(|s| s.pods.clone()).unwrap_or_default();
        end.retain(|name, _| !replaced.contains(name));
        let counts: Vec<u64> = end.values().copied().collect();
        Figures {
            title: title.to_string(),
            rollout_seconds,
            clients,
            min_ready_pods: samples.iter().map(|s| s.ready).min().unwrap_or_default(),
            min_pods_with_clients: samples
                .iter()
                .map(|s| s.pods.values().filter(|n| **n > 0).count())
                .min()
                .unwrap_or_default(),
            imbalance_at_end: sluice_demo::promises::imbalance(&counts)
                .map(|x| (x * 1000.0).round() / 1000.0),
            connections_at_end: end,
            samples,
        }
    }

    /// Prints them and writes them to `<test dir>/<file>`.
    pub fn report(&self, env: &Env, file: &str) {
        let path = env.dir.join(file);
        std::fs::write(&path, serde_json::to_string_pretty(self).expect("json")).expect("write");
        eprintln!("{} ({}):", self.title, path.display());
        eprintln!("  rollout done after {:?} s", self.rollout_seconds);
        eprintln!(
            "  clients by disconnects (0, 1, 2, …) {:?}, at most {} per client, {} connected at the end",
            self.clients.histogram, self.clients.max_disconnects, self.clients.connected_at_end
        );
        eprintln!(
            "  fewest ready pods {}, fewest pods with clients {}",
            self.min_ready_pods, self.min_pods_with_clients
        );
        eprintln!(
            "  connections at the end {:?}, imbalance {:?}",
            self.connections_at_end, self.imbalance_at_end
        );
        for s in self.samples.iter().step_by(4) {
            eprintln!("  t={:6.2}s ready={} {:?}", s.t, s.ready, s.pods);
        }
    }
}

/// Connections per pod (by name, from the pods' IPs) of the pods matching
/// `selector`, and the ready endpoints of Service `service`, now.
pub async fn sample(env: &Env, selector: &str, service: &str, t: f64) -> Sample {
    let by_ip = env.connections_per_ip(1883).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let names: BTreeMap<String, String> = pods
        .list(&ListParams::default().labels(selector))
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
    let ready = env
        .endpoints(service)
        .await
        .values()
        .filter(|r| **r)
        .count();
    Sample {
        t: (t * 100.0).round() / 100.0,
        pods: per_pod,
        ready,
    }
}

/// Samples every 250 ms from `start` until `done` says the controller finished
/// and every client is back on a pod; returns the samples and when `done` first
/// held (seconds after `start`).
pub async fn follow(
    env: &Env,
    clients: &Clients,
    selector: &str,
    start: tokio::time::Instant,
    mut done: impl AsyncFnMut() -> Result<(), String>,
) -> (Vec<Sample>, Option<f64>) {
    let deadline = start + LONG;
    let mut samples = Vec::new();
    let mut done_after = None;
    loop {
        let t = start.elapsed().as_secs_f64();
        let s = sample(env, selector, "mqtt", t).await;
        let back = s.pods.values().sum::<u64>() == CLIENTS;
        samples.push(s);
        if done_after.is_none() && done().await.is_ok() {
            done_after = Some(t);
        }
        if done_after.is_some() && back && clients.connected() == CLIENTS {
            return (samples, done_after);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "update or reconnection not done after {LONG:?}: {:?}; last sample {:?}",
            done().await,
            samples.last()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the Service `mqtt` has `n` ready endpoints.
pub async fn wait_ready_endpoints(env: &Env, n: usize) {
    poll(&format!("{n} ready endpoints"), LONG, async || {
        let eps = env.endpoints("mqtt").await;
        let ready = eps.values().filter(|r| **r).count();
        if ready == n {
            Ok(())
        } else {
            Err(format!("{eps:?}"))
        }
    })
    .await;
}

/// Waits until the kernel counts `n` connections from the node to the pods;
/// returns them per pod IP.
pub async fn wait_clients_on_pods(env: &Env, n: u64) -> BTreeMap<String, u64> {
    poll(&format!("{n} clients on the pods"), LONG, async || {
        let per_ip = env.connections_per_ip(1883).await;
        if per_ip.values().sum::<u64>() == n {
            Ok(per_ip)
        } else {
            Err(format!("{per_ip:?}"))
        }
    })
    .await
}

/// The problem sluice exists to solve: a StatefulSet `mqtt` of 3 mosquitto
/// pods with [`CLIENTS`] clients through its Service, rolling-updated by the
/// real StatefulSet controller (mqtt-2, then mqtt-1, then mqtt-0, each once the
/// previous one is Ready again). Asserts only what is robustly true of any
/// rolling update that replaces every pod; returns the figures.
pub async fn statefulset_baseline(env: &Env) -> Figures {
    // Version 1 of the app; the update below changes it to 2.
    let mut template = env.mosquitto_template("mqtt");
    template["spec"]["containers"][0]["env"] = json!([{"name": "VERSION", "value": "1"}]);
    let ip = env.create_mqtt_service("mqtt").await;
    let sts: StatefulSet = object(json!({
        "metadata": {"name": "mqtt"},
        "spec": {
            "replicas": 3,
            "serviceName": "mqtt",
            "selector": {"matchLabels": {"app": "mqtt"}},
            "template": template,
        },
    }));
    let sets = Api::<StatefulSet>::namespaced(env.client.clone(), &env.ns);
    sets.create(&PostParams::default(), &sts)
        .await
        .expect("create the statefulset");
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let by_label = ListParams::default().labels("app=mqtt");
    wait_ready_endpoints(env, 3).await;
    let uids_before = uids(&pods, &by_label).await;

    let clients = Clients::start(env, &ip, CLIENTS);
    tokio::task::block_in_place(|| clients.wait_connected(LONG));
    wait_clients_on_pods(env, CLIENTS).await;
    let before = sample(env, "app=mqtt", "mqtt", 0.0).await;

    let start = tokio::time::Instant::now();
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "mosquitto", "env": [{"name": "VERSION", "value": "2"}]},
    ]}}}});
    sets.patch("mqtt", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch the template");
    let rolled = async || {
        let s = sets.get("mqtt").await.map_err(|e| e.to_string())?;
        let st = s.status.clone().unwrap_or_default();
        let done = st.observed_generation >= s.metadata.generation
            && st.updated_replicas == Some(3)
            && st.ready_replicas == Some(3)
            && st.current_revision == st.update_revision;
        if done { Ok(()) } else { Err(format!("{st:?}")) }
    };
    let (mut samples, rolled_after) = follow(env, &clients, "app=mqtt", start, rolled).await;
    samples.insert(0, before);
    let tally = tokio::task::block_in_place(|| clients.stop());
    let uids_after = uids(&pods, &by_label).await;
    let figures = Figures::new(
        "StatefulSet rolling update",
        rolled_after,
        tally,
        samples,
        &BTreeSet::new(),
    );
    figures.report(env, "baseline.json");

    for (name, uid) in &uids_before {
        assert_ne!(
            uids_after.get(name),
            Some(uid),
            "pod {name} was not replaced"
        );
    }
    let t = &figures.clients;
    assert_eq!(
        t.connected_at_end, CLIENTS,
        "every client reconnected: {t:?}"
    );
    assert_eq!(
        t.histogram.iter().sum::<u64>(),
        CLIENTS,
        "one histogram entry per client"
    );
    assert_eq!(
        t.histogram.first().copied().unwrap_or_default(),
        0,
        "every pod was replaced, so every client was cut at least once: {t:?}"
    );
    assert_eq!(
        figures.connections_at_end.values().sum::<u64>(),
        CLIENTS,
        "all clients on the pods at the end"
    );
    figures
}

async fn uids(pods: &Api<Pod>, lp: &ListParams) -> BTreeMap<String, String> {
    pods.list(lp)
        .await
        .expect("list pods")
        .into_iter()
        .filter_map(|p| Some((p.metadata.name?, p.metadata.uid?)))
        .collect()
}
