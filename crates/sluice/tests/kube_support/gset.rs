//! GracefulSets and the operator on the test control plane: the CRD, `sluice
//! operator run` as a real process in the node's network namespace (where pod
//! IPs, and through the node's service proxy the API server at its ClusterIP,
//! are reachable), the set's status, its Events, and the sidecars' own reports
//! read from their admin APIs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sluice_operator::crd::{GracefulSet, GracefulSetStatus, crd_json};

use super::{Env, object, poll};
use crate::support::ChildGuard;

/// The admin port of the injected sidecars in these tests.
pub const ADMIN_PORT: u16 = 9190;

/// Installs (server-side applies) the GracefulSet CRD and waits until it is Established.
pub async fn install_crd(env: &Env) {
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    let crd = crd_json().expect("the CRD");
    let name = crd["metadata"]["name"].as_str().expect("name").to_owned();
    crds.patch(
        &name,
        &PatchParams::apply("sluice-tests").force(),
        &Patch::Apply(crd),
    )
    .await
    .expect("the API server accepts the CRD");
    poll(
        "the CRD is Established",
        Duration::from_secs(60),
        async || {
            let c = crds.get(&name).await.map_err(|e| e.to_string())?;
            let established = c
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                Ok(())
            } else {
                Err("not yet".into())
            }
        },
    )
    .await;
}

/// A copy of the admin kubeconfig whose server is the API server's ClusterIP
/// (`https://10.96.0.1:443`, the `default/kubernetes` Service), which the node's
/// service proxy forwards, as a pod would reach it; returns its path.
pub async fn in_cluster_kubeconfig(env: &Env) -> PathBuf {
    let svc = Api::<Service>::namespaced(env.client.clone(), "default")
        .get("kubernetes")
        .await
        .expect("the default/kubernetes Service");
    let spec = svc.spec.expect("its spec");
    let ip = spec.cluster_ip.expect("its ClusterIP");
    let port = spec.ports.expect("its ports")[0].port;
    let source = sluice_testkube::kubeconfig_from_env().unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&source).expect("read the kubeconfig");
    let rewritten: Vec<String> = text
        .lines()
        .map(|l| match l.split_once("server:") {
            Some((indent, _)) if indent.trim().is_empty() => {
                format!("{indent}server: https://{ip}:{port}")
            }
            _ => l.to_owned(),
        })
        .collect();
    let path = env.dir.join("kubeconfig-in-cluster");
    std::fs::write(&path, rewritten.join("\n") + "\n").expect("write the kubeconfig");
    path
}

/// `sluice operator run` in the node's network namespace, for the test's
/// namespace; killed (SIGKILL) when dropped. Its log is `<dir>/operator-<id>.log`.
pub struct Operator {
    child: ChildGuard,
    /// Its leader-election identity.
    pub identity: String,
}

impl Operator {
    /// Starts replica `identity` with `kubeconfig`, its health port `port` (in
    /// the node's namespace), with leader election (Lease in the test's
    /// namespace) or without.
    pub fn start(
        env: &Env,
        kubeconfig: &std::path::Path,
        identity: &str,
        port: u16,
        leader_election: bool,
    ) -> Operator {
        let log = env.dir.join(format!("operator-{identity}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("open the operator log");
        let mut cmd = env.sluice_in_node();
        cmd.args(["operator", "run", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--namespace", &env.ns, "--identity", identity])
            .arg(format!("--listen=127.0.0.1:{port}"));
        if leader_election {
            cmd.args(["--lease-namespace", &env.ns]);
        } else {
            cmd.arg("--no-leader-election");
        }
        let child = cmd
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn sluice operator run");
        Operator {
            child: ChildGuard(child),
            identity: identity.to_owned(),
        }
    }

    /// Sends `signal` (`KILL`, `TERM`) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.0.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Sends `signal` and waits (up to 30 s) for the exit.
    pub fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        self.signal(signal);
        self.child.exit_within(Duration::from_secs(30)).0
    }
}

/// Installs the CRD and starts one operator replica (`operator-0`, leader
/// election on) with [`in_cluster_kubeconfig`]. Start it before [`Env::run`]
/// and drop it after: the namespace's deletion then still finds an operator
/// to remove the sets' finalizer, even when the test failed.
pub async fn run_operator(env: &Env) -> Operator {
    install_crd(env).await;
    let kubeconfig = in_cluster_kubeconfig(env).await;
    Operator::start(env, &kubeconfig, "operator-0", 8080, true)
}

/// A GracefulSet `name` of `replicas` pods of `template` with the injected
/// sidecar in front of the app's 1884 on the pod's 1883 (admin API on
/// [`ADMIN_PORT`]), MQTT, and `strategy` as its `updateStrategy`.
pub fn sidecar_set(name: &str, replicas: i32, template: Value, strategy: Value) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "GracefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": template,
            "protocol": "mqtt",
            "updateStrategy": strategy,
            "evacuator": {"sidecar": {
                "image": "sluice:dev", "port": 1883, "appPort": 1884, "adminPort": ADMIN_PORT,
                "drainDelaySeconds": 1, "maxConnectionsPerPod": 400,
            }},
        },
    })
}

/// The GracefulSets of the test's namespace.
pub fn sets(env: &Env) -> Api<GracefulSet> {
    Api::namespaced(env.client.clone(), &env.ns)
}

/// Creates the GracefulSet `body`.
pub async fn create(env: &Env, body: Value) -> GracefulSet {
    let set: GracefulSet = object(body);
    sets(env)
        .create(&PostParams::default(), &set)
        .await
        .expect("create the GracefulSet")
}

/// The set's status (`None` before the operator published one).
pub async fn status(env: &Env, name: &str) -> Result<GracefulSetStatus, String> {
    sets(env)
        .get(name)
        .await
        .map_err(|e| e.to_string())?
        .status
        .ok_or_else(|| "no status yet".to_owned())
}

/// Waits until the set's status satisfies `ok`.
pub async fn wait_status(
    env: &Env,
    name: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&GracefulSetStatus) -> bool,
) -> GracefulSetStatus {
    poll(what, timeout, async || {
        let s = status(env, name).await?;
        if ok(&s) { Ok(s) } else { Err(format!("{s:?}")) }
    })
    .await
}

/// Deletes the set and waits until it is gone: the operator must still run,
/// to remove its finalizer (else the namespace cannot be deleted).
pub async fn delete(env: &Env, name: &str) {
    sets(env)
        .delete(name, &kube::api::DeleteParams::default())
        .await
        .expect("delete the GracefulSet");
    poll(
        "the GracefulSet is gone (finalizer removed)",
        Duration::from_secs(60),
        async || match sets(env).get_opt(name).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(s) => Err(format!("still there: {:?}", s.metadata.finalizers)),
        },
    )
    .await;
}

/// The set's pods.
pub async fn pods(env: &Env, name: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default().labels(&format!("sluice.dev/set={name}")))
        .await
        .expect("list the set's pods")
        .items
}

/// Changes the set's template (an annotation `version`): a new revision.
pub async fn change_template(env: &Env, name: &str, version: &str) {
    let patch = json!({"spec": {"template": {"metadata": {"annotations": {"version": version}}}}});
    sets(env)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the template");
}

/// The Events in the test's namespace as `(reason, note)`, in no order.
pub async fn events(env: &Env) -> Vec<(String, String)> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter_map(|e| Some((e.reason?, e.note.unwrap_or_default())))
        .collect()
}

/// One reading of a sidecar's `GET /evacuation`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reading {
    /// Seconds since the watch started.
    pub t: f64,
    /// `stats.current_connected`.
    pub connections: u64,
    /// `state`.
    pub state: String,
}

/// Reads the admin API of some sidecars every 100 ms from inside the node's
/// network namespace, with the set's token, until stopped.
pub struct EvacuatorWatch {
    readings: Arc<Mutex<BTreeMap<String, Vec<Reading>>>>,
    task: tokio::task::JoinHandle<()>,
    _netns: sluice_testkube::netns::NetnsRuntime,
}

impl EvacuatorWatch {
    /// Starts reading `pods` (name → IP) of set `set`; times count from `start`.
    pub async fn start(
        env: &Env,
        set: &str,
        pods: BTreeMap<String, String>,
        start: tokio::time::Instant,
    ) -> EvacuatorWatch {
        let secret = Api::<Secret>::namespaced(env.client.clone(), &env.ns)
            .get(&format!("{set}-sluice-admin"))
            .await
            .expect("the set's admin token Secret");
        let token =
            String::from_utf8(secret.data.expect("data")["token"].0.clone()).expect("utf-8");
        let netns = sluice_testkube::netns::NetnsRuntime::new(env.node.netns())
            .unwrap_or_else(|e| panic!("{e}"));
        let readings: Arc<Mutex<BTreeMap<String, Vec<Reading>>>> = Arc::default();
        let r = readings.clone();
        let task = netns.handle().spawn(async move {
            loop {
                for (name, ip) in &pods {
                    let addr = format!("{ip}:{ADMIN_PORT}").parse().expect("addr");
                    let token = token.clone();
                    let got = tokio::task::spawn_blocking(move || {
                        crate::support::http(addr, "GET", "/evacuation", None, Some(&token))
                    })
                    .await;
                    let Ok(Ok((200, body))) = got else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(&body) else {
                        continue;
                    };
                    let reading = Reading {
                        t: start.elapsed().as_secs_f64(),
                        connections: v["stats"]["current_connected"].as_u64().unwrap_or(0),
                        state: v["state"].as_str().unwrap_or("").to_owned(),
                    };
                    r.lock()
                        .unwrap()
                        .entry(name.clone())
                        .or_default()
                        .push(reading);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        EvacuatorWatch {
            readings,
            task,
            _netns: netns,
        }
    }

    /// Stops reading; returns every pod's readings.
    pub fn stop(self) -> BTreeMap<String, Vec<Reading>> {
        self.task.abort();
        self.readings.lock().unwrap().clone()
    }
}

/// Each pod's eviction rate (connections/s) from its sidecar's readings: the
/// slope between 90 % and 10 % of its last peak (as `sluice demo` measures it).
pub fn eviction_rates(readings: &BTreeMap<String, Vec<Reading>>) -> BTreeMap<String, f64> {
    readings
        .iter()
        .filter_map(|(name, rs)| {
            let series: Vec<(f64, f64)> = rs.iter().map(|r| (r.t, r.connections as f64)).collect();
            Some((name.clone(), sluice_demo::promises::eviction_rate(&series)?))
        })
        .collect()
}

/// The pods seen in `status.nodeEvacuationsStatus` with an evacuation under way.
pub fn evacuations_seen(status: &GracefulSetStatus, seen: &mut BTreeSet<String>) {
    for e in &status.node_evacuations_status {
        if e.state != sluice_core::engine::EvacuationState::Disabled {
            seen.insert(e.node.clone());
        }
    }
}
