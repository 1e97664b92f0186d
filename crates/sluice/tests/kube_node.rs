//! The node double behaves like a kubelet where the operator relies on it:
//! init containers then sidecars (started first, stopped last), the downward API
//! and `$(VAR)` expansion, preStop before SIGTERM, app containers stopped before
//! sidecars, restarts counted per `restartPolicy`.
//! Needs `scripts/testcluster up` and `SLUICE_KUBECONFIG` (scripts/test sets both).

mod kube_support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use kube_support::{Env, object, poll};

const LONG: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_like_on_a_kubelet() {
    Env::start("kube-node", 5).await.run(lifecycle).await;
}

async fn lifecycle(env: &Env) {
    let dir = env.dir.display().to_string();
    let order = format!("{dir}/order");
    let log = |word: &str| format!("echo {word} >> {order}");
    let pod: Pod = object(json!({
        "metadata": {"name": "features"},
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "initContainers": [
                {"name": "setup", "image": "ignored", "command": ["sh", "-c", log("setup")]},
                {"name": "sidecar", "image": "ignored", "restartPolicy": "Always",
                 "command": ["sh", "-c", format!(
                     "trap '{}; exit 0' TERM; {}; while true; do sleep 0.1; done",
                     log("sidecar-stopped"), log("sidecar-started"))],
                 "startupProbe": {"exec": {"command": ["test", "-f", order.clone()]}, "periodSeconds": 1}},
            ],
            "containers": [{
                "name": "app", "image": "ignored",
                "command": ["sh", "-c"],
                "args": [format!(
                    "trap '{}; exit 0' TERM; {}; echo '$(POD_NAME) $(NS) $(IP) $$(LITERAL) $(MISSING)' > {dir}/env; \
                     while true; do sleep 0.1; done",
                    log("app-stopped"), log("app-started"))],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                ],
                "readinessProbe": {"exec": {"command": ["test", "-f", format!("{dir}/env")]}, "periodSeconds": 1},
                "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", log("app-prestop")]}}},
            }],
        },
    }));
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), &env.ns);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create the pod");
    let ip = poll("the pod to be Ready", LONG, async || {
        let p = pods.get("features").await.map_err(|e| e.to_string())?;
        let st = p.status.clone().unwrap_or_default();
        let ready = st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        match (ready, st.pod_ip.clone()) {
            (true, Some(ip)) => Ok(ip),
            _ => Err(format!("{st:?}")),
        }
    })
    .await;
    let env_line = std::fs::read_to_string(format!("{dir}/env")).expect("the app wrote env");
    assert_eq!(
        env_line.trim(),
        format!("features {} {ip} $(LITERAL) $(MISSING)", env.ns),
        "downward API and $(VAR) expansion"
    );
    pods.delete("features", &DeleteParams::default())
        .await
        .expect("delete");
    poll("the pod to be gone", LONG, async || {
        match pods.get_opt("features").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let order = std::fs::read_to_string(&order).expect("order file");
    let order: Vec<&str> = order.lines().collect();
    assert_eq!(
        order,
        [
            "setup",
            "sidecar-started",
            "app-started",
            "app-prestop",
            "app-stopped",
            "sidecar-stopped"
        ],
        "init, sidecar, app; preStop, SIGTERM to the app, then to the sidecar"
    );

    // restartPolicy OnFailure: exits 1 twice, then 0; two restarts counted.
    let count = format!("{dir}/count");
    let crasher: Pod = object(json!({
        "metadata": {"name": "crasher"},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [{"name": "c", "image": "ignored", "command": ["sh", "-c", format!(
                "echo x >> {count}; [ $$(wc -l < {count}) -ge 3 ] || exit 1")]}],
        },
    }));
    pods.create(&PostParams::default(), &crasher)
        .await
        .expect("create the crasher");
    let status = poll("the crasher to succeed", LONG, async || {
        let p = pods.get("crasher").await.map_err(|e| e.to_string())?;
        let st = p.status.clone().unwrap_or_default();
        if st.phase.as_deref() == Some("Succeeded") {
            Ok(st)
        } else {
            Err(format!("{st:?}"))
        }
    })
    .await;
    let c = &status.container_statuses.expect("container statuses")[0];
    assert_eq!(c.restart_count, 2, "{c:?}");
    let last = c
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("last state");
    assert_eq!(last.exit_code, 1, "{c:?}");
    let now = c
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated");
    assert_eq!(now.exit_code, 0, "{c:?}");
}
