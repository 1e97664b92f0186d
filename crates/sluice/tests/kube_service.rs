//! The node and service proxy doubles on the real control plane (kube-apiserver,
//! kube-controller-manager): Deployments, Services, EndpointSlices, garbage
//! collection and readiness gates, with real mosquitto pods and real clients.
//! Needs `scripts/testcluster up` and `SLUICE_KUBECONFIG` (scripts/test sets both).

mod kube_support;
mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use kube_support::{Env, object, poll};
use support::bench_extra::{BenchRun, read_json};

const LONG: Duration = Duration::from_secs(120);

/// A mosquitto pod template labelled `app=<app>` (the image is not pulled:
/// the test node runs `command` on this machine).
fn mosquitto_template(app: &str, conf: &str) -> serde_json::Value {
    json!({
        "metadata": {"labels": {"app": app}},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [{
                "name": "mosquitto",
                "image": "eclipse-mosquitto:2.0",
                "command": ["/usr/sbin/mosquitto"],
                "args": ["-c", conf],
                "ports": [{"name": "mqtt", "containerPort": 1883}],
                "readinessProbe": {"tcpSocket": {"port": "mqtt"}, "periodSeconds": 1},
            }],
        },
    })
}

async fn create_service(env: &Env, app: &str) -> String {
    let svc: Service = object(json!({
        "metadata": {"name": app},
        "spec": {"selector": {"app": app},
                 "ports": [{"name": "mqtt", "port": 1883, "targetPort": "mqtt"}]},
    }));
    let svc = Api::<Service>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &svc)
        .await
        .expect("create the service");
    svc.spec.and_then(|s| s.cluster_ip).expect("a ClusterIP")
}

async fn create_deployment(env: &Env, app: &str, replicas: i32) {
    let conf = env.mosquitto_conf();
    let d: Deployment = object(json!({
        "metadata": {"name": app},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                 "template": mosquitto_template(app, &conf)},
    }));
    Api::<Deployment>::namespaced(env.client.clone(), &env.ns)
        .create(&PostParams::default(), &d)
        .await
        .expect("create the deployment");
}

async fn wait_ready_endpoints(env: &Env, service: &str, n: usize) -> Vec<String> {
    poll(
        &format!("{n} ready endpoints of {service}"),
        LONG,
        async || {
            let eps = env.endpoints(service).await;
            let ready: Vec<String> = eps.iter().filter(|e| *e.1).map(|e| e.0.clone()).collect();
            if ready.len() == n {
                Ok(ready)
            } else {
                Err(format!("endpoints {eps:?}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_behind_a_service_spreads_1000_clients_over_3_pods() {
    Env::start("kube-spread", 1).await.run(spread).await;
}

async fn spread(env: &Env) {
    create_deployment(env, "mqtt", 3).await;
    let ip = create_service(env, "mqtt").await;
    let pods = wait_ready_endpoints(env, "mqtt", 3).await;
    let summary = env.dir.join("bench.json");
    let bench = BenchRun::start_command(
        env.sluice_in_node(),
        &[
            "-h",
            &ip,
            "-p",
            "1883",
            "-c",
            "1000",
            "--json",
            &summary.display().to_string(),
        ],
    );
    tokio::task::block_in_place(|| bench.wait_connected(1000, LONG));
    // The brokers' side: established connections per pod IP, counted by the kernel.
    let counts = poll("1000 connections on the pods", LONG, async || {
        let c = env.connections_per_ip(1883).await;
        if c.values().sum::<u64>() == 1000 {
            Ok(c)
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    let output = tokio::task::block_in_place(|| bench.stop());
    assert!(output.success, "bench failed: {}", output.stderr);
    eprintln!("connections per pod: {counts:?}");
    let mut ips: Vec<&String> = counts.keys().collect();
    let mut want: Vec<&String> = pods.iter().collect();
    ips.sort();
    want.sort();
    assert_eq!(ips, want, "connections go to the Service's pods");
    // A uniform random choice puts 333 ± 15 on each pod (1 σ); 200 is 9 σ away.
    for (pod, n) in &counts {
        assert!(
            *n >= 200,
            "pod {pod} got only {n} of 1000 clients: {counts:?}"
        );
    }
    let s = read_json(&summary);
    assert_eq!(s["connectedAtEnd"], 1000, "{s}");
    assert_eq!(s["maxDisconnectsPerClient"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_deletes_its_pods_through_the_garbage_collector() {
    Env::start("kube-gc", 2).await.run(garbage_collection).await;
}

async fn garbage_collection(env: &Env) {
    create_deployment(env, "gc", 2).await;
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    let by_label = ListParams::default().labels("app=gc");
    poll("2 running pods", LONG, async || {
        let list = pods.list(&by_label).await.map_err(|e| e.to_string())?;
        let running = list
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if running == 2 {
            Ok(())
        } else {
            Err(format!("{running} running"))
        }
    })
    .await;
    // The pods belong to the ReplicaSet, which belongs to the Deployment.
    let rs = Api::<ReplicaSet>::namespaced(env.client.clone(), &env.ns);
    let owned = rs.list(&by_label).await.expect("list replicasets");
    assert_eq!(owned.items.len(), 1);
    Api::<Deployment>::namespaced(env.client.clone(), &env.ns)
        .delete("gc", &DeleteParams::background())
        .await
        .expect("delete the deployment");
    poll(
        "the garbage collector to delete the ReplicaSet and its pods",
        LONG,
        async || {
            let p = pods
                .list(&by_label)
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            let r = rs
                .list(&by_label)
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if p == 0 && r == 0 {
                Ok(())
            } else {
                Err(format!("{p} pods, {r} replicasets left"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stays_out_of_the_endpoints_until_its_readiness_gate_is_true() {
    Env::start("kube-gate", 3).await.run(readiness_gate).await;
}

async fn readiness_gate(env: &Env) {
    let conf = env.mosquitto_conf();
    let mut pod = mosquitto_template("gated", &conf);
    pod["metadata"]["name"] = json!("gated");
    pod["spec"]["readinessGates"] = json!([{"conditionType": "sluice.dev/serving"}]);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    pods.create(&PostParams::default(), &object(pod))
        .await
        .expect("create the pod");
    create_service(env, "gated").await;
    let condition = |p: &Pod, kind: &str| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
            .map(|c| c.status.clone())
    };
    // Its container is ready, yet the pod is not: the gate is not set.
    let ip = poll("the container to be ready", LONG, async || {
        let p = pods.get("gated").await.map_err(|e| e.to_string())?;
        match condition(&p, "ContainersReady").as_deref() {
            Some("True") => Ok(p.status.and_then(|s| s.pod_ip).expect("pod IP")),
            other => Err(format!("ContainersReady {other:?}")),
        }
    })
    .await;
    let p = pods.get("gated").await.expect("get the pod");
    assert_eq!(
        condition(&p, "Ready").as_deref(),
        Some("False"),
        "{:?}",
        p.status
    );
    let eps = poll("the endpoint in the slice", LONG, async || {
        let eps = env.endpoints("gated").await;
        if eps.contains_key(&ip) {
            Ok(eps)
        } else {
            Err(format!("{eps:?}"))
        }
    })
    .await;
    assert_eq!(
        eps.get(&ip),
        Some(&false),
        "the gated pod must not be ready in the slice"
    );
    // The controller's part: set the gate's condition through the status subresource.
    let patch = json!({"status": {"conditions": [
        {"type": "sluice.dev/serving", "status": "True", "lastTransitionTime": jiff_now()},
    ]}});
    pods.patch_status("gated", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch the gate condition");
    poll("the endpoint to become ready", LONG, async || {
        let eps = env.endpoints("gated").await;
        if eps.get(&ip) == Some(&true) {
            Ok(())
        } else {
            Err(format!("{eps:?}"))
        }
    })
    .await;
    let p = pods.get("gated").await.expect("get the pod");
    assert_eq!(
        condition(&p, "Ready").as_deref(),
        Some("True"),
        "{:?}",
        p.status
    );
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}
