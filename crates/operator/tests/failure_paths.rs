//! The reconciler's failure paths, request by request: a `tower_test` mock
//! service behind a real `kube::Client` answers as the API server would from a
//! small in-memory cluster (and records every call), and each pod's sidecar is a
//! stub on 127.0.0.x answering as `sluice proxy`'s admin API documents
//! (`docs/admin-api.md`), recording every evacuation call. Each round is a fresh
//! client and context, as a restarted operator has: everything it knows comes
//! from the cluster.
//!
//! The same paths run end to end against the real control plane, node double
//! and sidecars in `crates/sluice/tests/kube_gracefulset_faults.rs`.

mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{Value, json};
use sluice_operator::controller::reconcile;
use sluice_operator::crd::GracefulSet;
use sluice_operator::pod;
use sluice_operator::revision::{self, PodShape};
use sluice_operator::run::{RunArgs, operate};
use sluice_operator::status::Timestamp;
use support::{ApiHandle, answer, context, failure, mock, not_found, read};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const RATE: i32 = 25;

// ---------------------------------------------------------------------------
// The sidecars: one stub admin API per pod IP.

/// What one pod's sidecar holds and has been asked.
#[derive(Debug, Clone)]
struct Sidecar {
    pod: String,
    state: &'static str,
    initial: u64,
    current: u64,
    rate: u64,
}

#[derive(Default)]
struct Sidecars {
    by_ip: BTreeMap<IpAddr, Sidecar>,
    /// Every evacuation call but the reports: `POST pod rate=N to=[…]`, `DELETE pod`.
    calls: Vec<String>,
}

type SharedSidecars = Arc<Mutex<Sidecars>>;

fn status_body(s: &Sidecar) -> Value {
    json!({"upstream": "app", "state": s.state,
           "connection_eviction_rate": s.rate, "session_eviction_rate": 0,
           "wait_takeover": 0, "wait_health_check": 0,
           "server_reference": null, "mqtt5_evict": null,
           "stats": {"initial_connected": s.initial, "current_connected": s.current,
                     "initial_sessions": 0, "current_sessions": 0}})
}

async fn evacuation(
    State((sidecars, ip)): State<(SharedSidecars, IpAddr)>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: String,
) -> AxumResponse {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        let body = json!({"code": "UNAUTHORIZED", "message": "token"});
        return (AxumStatus::UNAUTHORIZED, Json(body)).into_response();
    }
    let mut all = sidecars.lock().unwrap();
    let mut s = all.by_ip[&ip].clone();
    match method.as_str() {
        "POST" => {
            if s.state != "disabled" {
                let body = json!({"code": "CONFLICT", "message": "an evacuation runs"});
                return (AxumStatus::CONFLICT, Json(body)).into_response();
            }
            let req: Value = serde_json::from_str(&body).unwrap();
            s.state = "evicting_conns";
            s.rate = req["conn_evict_rate"].as_u64().unwrap();
            s.initial = s.current;
            all.calls.push(format!(
                "POST {} rate={} to={}",
                s.pod, s.rate, req["migrate_to"]
            ));
        }
        "DELETE" => {
            s.state = "disabled";
            s.rate = 0;
            s.initial = s.current;
            all.calls.push(format!("DELETE {}", s.pod));
        }
        _ => {}
    }
    let answer = status_body(&s);
    all.by_ip.insert(ip, s);
    Json(answer).into_response()
}

/// Starts a stub admin API on `ip:port` for `pod`.
async fn sidecar(sidecars: &SharedSidecars, ip: IpAddr, port: u16, s: Sidecar) {
    sidecars.lock().unwrap().by_ip.insert(ip, s);
    let app = Router::new()
        .route(
            "/evacuation",
            get(evacuation).post(evacuation).delete(evacuation),
        )
        .with_state((sidecars.clone(), ip));
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .unwrap_or_else(|e| panic!("bind the stub sidecar on {ip}:{port}: {e}"));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

// ---------------------------------------------------------------------------
// The API server: an in-memory cluster answering the operator's calls.

#[derive(Default)]
struct Cluster {
    set: Option<Value>,
    pods: BTreeMap<String, Value>,
    revisions: Vec<Value>,
    lease: Option<Value>,
    /// The Lease's holder is gone: writes to it succeed.
    lease_expired: bool,
    /// Every call that changes something or is not a plain read, in order.
    calls: Vec<String>,
    /// Reads, for the leader-election test.
    reads: Vec<String>,
}

type SharedCluster = Arc<Mutex<Cluster>>;

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Merges `patch` into `target` (JSON merge patch: `null` removes).
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

const NS: &str = "/namespaces/default";

/// Answers one request from the cluster's state.
fn handle(c: &mut Cluster, method: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
    let path = uri.split('?').next().unwrap_or(uri);
    let sets = format!("/apis/sluice.dev/v1alpha1{NS}/gracefulsets/mqtt");
    let pods = format!("/api/v1{NS}/pods");
    let revisions = format!("/apis/apps/v1{NS}/controllerrevisions");
    let lease = format!("/apis/coordination.k8s.io/v1{NS}/leases");
    let ok = StatusCode::OK;
    if method == "GET" {
        c.reads.push(path.to_owned());
    }
    match (method, path) {
        ("GET", p) if p == sets => (ok, c.set.clone().unwrap()),
        // The controller's lists of everything, when leading: nothing to do.
        ("GET", "/apis/sluice.dev/v1alpha1/gracefulsets") => (ok, list("GracefulSetList", vec![])),
        ("GET", "/api/v1/pods") => (ok, list("PodList", vec![])),
        ("GET", "/apis/apps/v1/controllerrevisions") => {
            (ok, list("ControllerRevisionList", vec![]))
        }
        ("PATCH", p) if p == sets => {
            let set = c.set.as_mut().unwrap();
            if let Some(ops) = body.as_array() {
                // The finalizer helper's JSON patch.
                for op in ops {
                    match op["op"].as_str() {
                        Some("add") => set["metadata"]["finalizers"] = op["value"].clone(),
                        Some("remove") => {
                            set["metadata"]
                                .as_object_mut()
                                .unwrap()
                                .remove("finalizers");
                            c.calls.push("finalizer removed".into());
                        }
                        _ => {}
                    }
                }
            } else {
                merge(set, body);
                c.calls.push(format!("PATCH set {}", body["metadata"]));
            }
            (ok, set.clone())
        }
        ("PATCH", p) if p == format!("{sets}/status") => {
            let set = c.set.as_mut().unwrap();
            set["status"] = body["status"].clone();
            c.calls.push(format!(
                "status {} {}",
                body["status"]["phase"].as_str().unwrap_or("-"),
                progressing(&body["status"])
            ));
            (ok, set.clone())
        }
        ("GET", p) if p == pods => (ok, list("PodList", c.pods.values().cloned().collect())),
        ("POST", p) if p == pods => {
            let name = body["metadata"]["name"].as_str().unwrap().to_owned();
            c.calls.push(format!("create {name}"));
            let mut created = body.clone();
            created["status"] = json!({"phase": "Pending"});
            c.pods.insert(name, created.clone());
            (StatusCode::CREATED, created)
        }
        ("GET", p) if p == revisions => (ok, list("ControllerRevisionList", c.revisions.clone())),
        ("POST", p) if p == revisions => {
            c.calls
                .push(format!("keep revision {}", body["metadata"]["name"]));
            c.revisions.push(body.clone());
            (StatusCode::CREATED, body.clone())
        }
        ("GET", p) if p == format!("/api/v1{NS}/secrets/mqtt-sluice-admin") => {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(TOKEN);
            (
                ok,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "mqtt-sluice-admin"}, "data": {"token": token}}),
            )
        }
        ("POST" | "PATCH", p) if p.starts_with(&format!("/apis/events.k8s.io/v1{NS}/events")) => {
            let related = body["related"]["name"].as_str().unwrap_or("-");
            let reason = body["reason"].as_str().unwrap_or("(series)");
            c.calls.push(format!("event {reason} {related}"));
            (StatusCode::CREATED, body.clone())
        }
        ("GET", p) if p.starts_with(&lease) => match &c.lease {
            Some(l) => (ok, l.clone()),
            None => (StatusCode::NOT_FOUND, not_found()),
        },
        (m, p) if p.starts_with(&lease) => {
            c.calls.push(format!(
                "{m} lease holder={}",
                body["spec"]["holderIdentity"]
            ));
            match c.lease.as_mut() {
                Some(l) if c.lease_expired => {
                    merge(l, body);
                    (ok, l.clone())
                }
                // Another replica holds it: every write of ours conflicts.
                _ => (StatusCode::CONFLICT, failure(409, "Conflict")),
            }
        }
        (m, p) if p.starts_with(&format!("{pods}/")) => {
            let rest = &p[pods.len() + 1..];
            let (name, status) = match rest.strip_suffix("/status") {
                Some(n) => (n, true),
                None => (rest, false),
            };
            let Some(pod) = c.pods.get_mut(name) else {
                return (StatusCode::NOT_FOUND, not_found());
            };
            match (m, status) {
                ("DELETE", _) => {
                    c.calls.push(format!("delete {name}"));
                    let pod = c.pods.remove(name).unwrap();
                    (ok, pod)
                }
                ("PATCH", false) => {
                    let serving = &body["metadata"]["annotations"]["sluice.dev/serving"];
                    c.calls
                        .push(format!("serving {name}={}", serving.as_str().unwrap()));
                    merge(&mut pod["metadata"], &body["metadata"]);
                    (ok, pod.clone())
                }
                ("PATCH", true) => {
                    let gate = body["status"]["conditions"][0].clone();
                    c.calls
                        .push(format!("gate {name}={}", gate["status"].as_str().unwrap()));
                    let conditions = pod["status"]["conditions"].as_array_mut().unwrap();
                    let ready = gate["status"] == "True"
                        && conditions
                            .iter()
                            .any(|x| x["type"] == "ContainersReady" && x["status"] == "True");
                    conditions.retain(|x| x["type"] != gate["type"] && x["type"] != "Ready");
                    conditions.push(gate);
                    // As the kubelet does: Ready once the containers and the gate are.
                    let word = if ready { "True" } else { "False" };
                    conditions.push(json!({"type": "Ready", "status": word}));
                    (ok, pod.clone())
                }
                _ => panic!("unexpected call {m} {uri}"),
            }
        }
        (m, _) => {
            c.calls.push(format!("UNEXPECTED {m} {uri}"));
            (StatusCode::NOT_FOUND, not_found())
        }
    }
}

/// The Progressing condition as `reason`.
fn progressing(status: &Value) -> String {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing")
        .map(|c| {
            format!(
                "{}={}",
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap()
            )
        })
        .unwrap_or_default()
}

/// Answers every request on `handle` from `cluster` until the client is dropped.
async fn serve(mut handle: ApiHandle, cluster: SharedCluster) {
    // Watches stay open without events until the client goes.
    let mut watches = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let (method, uri, body, send) = read(request, send).await;
        if uri.contains("watch=true") {
            cluster.lock().unwrap().reads.push(uri);
            watches.push(send);
            continue;
        }
        let (status, reply) = handle_locked(&cluster, method.as_str(), &uri, &body);
        answer(send, status, &reply);
    }
}

fn handle_locked(
    cluster: &SharedCluster,
    method: &str,
    uri: &str,
    body: &Value,
) -> (StatusCode, Value) {
    handle(&mut cluster.lock().unwrap(), method, uri, body)
}

// ---------------------------------------------------------------------------
// The scenario: a set of 3 pods updated from template A to template B.

/// The set with mosquitto `tag`, BlueGreen, `connEvictRate` [`RATE`].
fn set_with(tag: &str, admin_port: u16) -> GracefulSet {
    serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "GracefulSet",
        "metadata": {"name": "mqtt", "namespace": "default", "uid": "uid-1", "generation": 2,
                     "resourceVersion": "7", "finalizers": ["sluice.dev/evacuate"]},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "mqtt"}},
            "template": {
                "metadata": {"labels": {"app": "mqtt"}},
                "spec": {"containers": [{"name": "mosquitto", "image": format!("eclipse-mosquitto:{tag}"),
                                          "ports": [{"containerPort": 1884}]}]}
            },
            "updateStrategy": {"type": "BlueGreen", "initialDelaySeconds": 0,
                               "progressDeadlineSeconds": 60,
                               "evacuationStrategy": {"connEvictRate": RATE}},
            "evacuator": {"sidecar": {"image": "sluice:dev", "port": 1883, "appPort": 1884,
                                      "adminPort": admin_port}}
        }
    }))
    .unwrap()
}

/// RFC 3339 of `ago` before now.
fn ago(ago: Duration) -> Value {
    serde_json::to_value(Timestamp::from_system_time(SystemTime::now() - ago)).unwrap()
}

/// One pod as the API server shows it.
struct PodState {
    ready: bool,
    /// The engine's serving decision (annotation) and the gate.
    serving: bool,
    gate: bool,
    /// The sidecar's report.
    state: &'static str,
    connections: u64,
}

struct Scenario {
    cluster: SharedCluster,
    sidecars: SharedSidecars,
    old: GracefulSet,
    new: GracefulSet,
    /// Revisions A (old) and B (new).
    a: String,
    b: String,
    port: u16,
    next_ip: u8,
}

impl Scenario {
    async fn new() -> Scenario {
        // A port free on 127.0.0.1 is, in practice, free on 127.0.0.x too.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let old = set_with("2.0.18", port);
        let mut new = set_with("2.0.20", port);
        new.metadata.generation = Some(3);
        let (a, b) = (PodShape::of(&old).revision(), PodShape::of(&new).revision());
        let revisions = vec![
            serde_json::to_value(revision::controller_revision(&old, &PodShape::of(&old), 1))
                .unwrap(),
            serde_json::to_value(revision::controller_revision(&new, &PodShape::of(&new), 2))
                .unwrap(),
        ];
        let cluster = Cluster {
            set: Some(serde_json::to_value(&new).unwrap()),
            revisions,
            ..Cluster::default()
        };
        Scenario {
            cluster: Arc::new(Mutex::new(cluster)),
            sidecars: SharedSidecars::default(),
            old,
            new,
            a,
            b,
            port,
            next_ip: 10 + u8::try_from(port % 200).unwrap(),
        }
    }

    fn name(&self, rev: &str, i: usize) -> String {
        sluice_core::engine::instance_name("mqtt", rev, i)
    }

    /// Adds pod `i` of revision `rev` (A or B) with its sidecar.
    async fn pod(&mut self, rev: &str, i: usize, s: PodState) {
        let set = if rev == self.a { &self.old } else { &self.new };
        let name = self.name(rev, i);
        let shape = PodShape::of(set);
        let p = pod::build(
            set,
            &shape,
            rev,
            &name,
            &set.spec.update_strategy.evacuation_strategy,
        )
        .unwrap();
        let mut p = serde_json::to_value(p).unwrap();
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, self.next_ip));
        self.next_ip += 1;
        p["metadata"]["creationTimestamp"] = ago(Duration::from_secs(300));
        p["metadata"]["annotations"]["sluice.dev/serving"] = json!(s.serving.to_string());
        let word = |b: bool| if b { "True" } else { "False" };
        p["status"] = json!({
            "phase": "Running", "podIP": ip.to_string(),
            "conditions": [
                {"type": "ContainersReady", "status": word(s.ready)},
                {"type": "sluice.dev/serving", "status": word(s.gate)},
                {"type": "Ready", "status": word(s.ready && s.gate)},
            ],
            "initContainerStatuses": [{"name": "sluice-proxy", "ready": true, "restartCount": 0,
                "image": "sluice:dev", "imageID": "",
                "state": {"running": {"startedAt": "2026-12-02T08:00:00Z"}}}],
        });
        self.cluster.lock().unwrap().pods.insert(name.clone(), p);
        let sidecar_state = Sidecar {
            pod: name,
            state: s.state,
            initial: if s.state == "disabled" {
                s.connections
            } else {
                100
            },
            current: s.connections,
            rate: if s.state == "disabled" {
                0
            } else {
                RATE as u64
            },
        };
        sidecar(&self.sidecars, ip, self.port, sidecar_state).await;
    }

    /// Sets the published status.
    fn status(&self, status: Value) {
        let mut c = self.cluster.lock().unwrap();
        c.set.as_mut().unwrap()["status"] = status;
    }

    /// Changes what pod `name`'s sidecar reports.
    fn report(&self, name: &str, state: &'static str, connections: u64) {
        let mut s = self.sidecars.lock().unwrap();
        let entry = s.by_ip.values_mut().find(|s| s.pod == name).unwrap();
        entry.state = state;
        entry.current = connections;
    }

    /// One reconcile by a freshly started operator; returns the API and
    /// evacuator calls it made.
    async fn round(&self) -> (Vec<String>, Vec<String>) {
        let (client, handle) = mock();
        let server = tokio::spawn(serve(handle, self.cluster.clone()));
        let set: GracefulSet =
            serde_json::from_value(self.cluster.lock().unwrap().set.clone().unwrap()).unwrap();
        let ctx = context(client);
        reconcile(Arc::new(set), ctx).await.unwrap();
        server.abort();
        let api = std::mem::take(&mut self.cluster.lock().unwrap().calls);
        let evac = std::mem::take(&mut self.sidecars.lock().unwrap().calls);
        assert!(
            !api.iter().any(|c| c.starts_with("UNEXPECTED")),
            "unexpected calls: {api:#?}"
        );
        (api, evac)
    }

    /// The Evacuating status of the upgrade A → B, `a-0` evacuating.
    fn evacuating_status(&self) -> Value {
        json!({
            "observedGeneration": 3, "phase": "Evacuating",
            "currentRevision": self.a, "updateRevision": self.b,
            "replicas": 6, "readyReplicas": 6, "servingReplicas": 3,
            "updatedReplicas": 3, "updatedReadyReplicas": 3, "selector": "app=mqtt",
            "updateStartedAt": ago(Duration::from_secs(120)),
            "trafficSwitch": {"revision": self.b, "at": ago(Duration::from_secs(90))},
            "evacuations": [self.name(&self.a, 0)],
            "nodeEvacuationsStatus": [],
            "conditions": [],
        })
    }

    /// Old pods not serving, `a-0` evacuating (40 of 100 left), `a-1`/`a-2`
    /// untouched with 100 each; new pods serving with the 60 moved.
    async fn mid_evacuation(&mut self) {
        let (a, b) = (self.a.clone(), self.b.clone());
        for i in 0..3 {
            let (state, connections) = if i == 0 {
                ("evicting_conns", 40)
            } else {
                ("disabled", 100)
            };
            self.pod(
                &a,
                i,
                PodState {
                    ready: true,
                    serving: false,
                    gate: false,
                    state,
                    connections,
                },
            )
            .await;
        }
        for i in 0..3 {
            self.pod(
                &b,
                i,
                PodState {
                    ready: true,
                    serving: true,
                    gate: true,
                    state: "disabled",
                    connections: 20,
                },
            )
            .await;
        }
        self.status(self.evacuating_status());
    }
}

/// The evacuations started (`POST pod …`).
fn starts(evac: &[String]) -> Vec<String> {
    evac.iter()
        .filter(|c| c.starts_with("POST "))
        .cloned()
        .collect()
}

/// The pod an evacuator call was about.
fn pod_of(call: &str) -> String {
    call.split(' ').nth(1).unwrap_or_default().to_owned()
}

fn count(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|c| c.starts_with(prefix)).count()
}

// ---------------------------------------------------------------------------

/// A new template that never becomes ready: once `progressDeadlineSeconds` have
/// passed, the update aborts; the new (idle) pods are deleted, the old ones keep
/// serving, and no evacuator is ever asked to evict anyone.
#[tokio::test]
async fn the_progress_deadline_aborts_and_the_old_pods_keep_serving() {
    let mut s = Scenario::new().await;
    let (a, b) = (s.a.clone(), s.b.clone());
    for i in 0..3 {
        let old = PodState {
            ready: true,
            serving: true,
            gate: true,
            state: "disabled",
            connections: 100,
        };
        s.pod(&a, i, old).await;
        let never_ready = PodState {
            ready: false,
            serving: false,
            gate: false,
            state: "disabled",
            connections: 0,
        };
        s.pod(&b, i, never_ready).await;
    }
    // Provisioning since 61 s, waiting for the new pods all along (deadline 60 s).
    let since = ago(Duration::from_secs(61));
    s.status(json!({
        "observedGeneration": 3, "phase": "Provisioning",
        "currentRevision": a, "updateRevision": b,
        "replicas": 6, "readyReplicas": 3, "servingReplicas": 3,
        "updatedReplicas": 3, "updatedReadyReplicas": 0, "selector": "app=mqtt",
        "updateStartedAt": since, "waitingSince": since,
        "nodeEvacuationsStatus": [], "conditions": [],
    }));

    let (api, evac) = s.round().await;
    let new_pods: Vec<String> = (0..3)
        .map(|i| format!("delete {}", s.name(&b, i)))
        .collect();
    for d in &new_pods {
        assert!(api.contains(d), "{d}: {api:#?}");
    }
    assert_eq!(count(&api, "delete "), 3, "only the new pods: {api:#?}");
    assert!(
        api.contains(&"status Aborting False=ProgressDeadlineExceeded".to_owned())
            || api.contains(&"status Aborted False=ProgressDeadlineExceeded".to_owned()),
        "{api:#?}"
    );
    assert!(
        api.iter().any(|c| c.starts_with("event PhaseChanged")),
        "{api:#?}"
    );
    // The old pods' serving decision and gate are left as they are.
    assert_eq!(count(&api, "serving "), 0, "{api:#?}");
    assert_eq!(count(&api, "gate "), 0, "{api:#?}");
    assert!(evac.is_empty(), "nobody is evicted: {evac:#?}");

    // The next round: at rest on the old revision, still nothing evicted.
    let (api, evac) = s.round().await;
    assert!(
        api.contains(&"status Aborted False=ProgressDeadlineExceeded".to_owned())
            || !api.iter().any(|c| c.starts_with("status")),
        "{api:#?}"
    );
    assert_eq!(count(&api, "delete "), 0, "{api:#?}");
    assert!(evac.is_empty(), "{evac:#?}");
    let c = s.cluster.lock().unwrap();
    assert_eq!(c.set.as_ref().unwrap()["status"]["phase"], "Aborted");
    assert_eq!(c.pods.len(), 3);
    for i in 0..3 {
        let p = &c.pods[&s.name(&a, i)];
        assert_eq!(p["metadata"]["annotations"]["sluice.dev/serving"], "true");
    }
}

/// `kubectl sluice abort` while `a-0` is being evacuated: its evacuation is
/// stopped (its remaining clients stay), the old pods serve again, and the new
/// pods — which hold the clients already moved — are evacuated back one at a
/// time at the set's `connEvictRate`. `a-1` and `a-2` are never touched.
#[tokio::test]
async fn an_abort_mid_evacuation_moves_the_moved_clients_back_once() {
    let mut s = Scenario::new().await;
    s.mid_evacuation().await;
    let (a, b) = (s.a.clone(), s.b.clone());
    {
        let mut c = s.cluster.lock().unwrap();
        c.set.as_mut().unwrap()["metadata"]["annotations"] = json!({"sluice.dev/abort": "true"});
    }

    let (mut api, evac) = s.round().await;
    let a0 = s.name(&a, 0);
    assert_eq!(evac[0], format!("DELETE {a0}"), "{evac:#?}");
    for i in 0..3 {
        for call in [
            format!("serving {}=true", s.name(&a, i)),
            format!("serving {}=false", s.name(&b, i)),
            format!("gate {}=True", s.name(&a, i)),
        ] {
            assert!(api.contains(&call), "{call}: {api:#?}");
        }
    }
    assert!(
        api.contains(&"status Aborting False=UserAborted".to_owned()),
        "{api:#?}"
    );
    assert_eq!(count(&api, "delete "), 0, "{api:#?}");

    // The new pods go back one at a time, at the configured pace, to the old
    // pods: each round, the evacuation started last completes.
    let old_pods: Vec<String> = (0..3).map(|i| s.name(&a, i)).collect();
    let mut moved_back = starts(&evac);
    for round in 0.. {
        if moved_back.len() >= 3 {
            break;
        }
        assert!(round < 8, "the abort does not finish: {moved_back:#?}");
        if let Some(last) = moved_back.last() {
            s.report(&pod_of(last), "prohibiting", 0);
        }
        let (calls, evac) = s.round().await;
        api.extend(calls);
        assert!(
            evac.iter().all(|c| !old_pods.contains(&pod_of(c))),
            "the old pods are not touched again: {evac:#?}"
        );
        moved_back.extend(starts(&evac));
    }
    let recipients = json!([s.name(&a, 0), s.name(&a, 1), s.name(&a, 2)]);
    let mut pods: Vec<String> = moved_back.iter().map(|c| pod_of(c)).collect();
    pods.sort();
    assert_eq!(
        pods,
        [s.name(&b, 0), s.name(&b, 1), s.name(&b, 2)],
        "each new pod evacuated exactly once: {moved_back:#?}"
    );
    for c in &moved_back {
        assert!(c.contains(&format!("rate={RATE} to={recipients}")), "{c}");
    }
    // The new pods left the endpoints (in the round the old pods got theirs back).
    for i in 0..3 {
        let call = format!("gate {}=False", s.name(&b, i));
        assert!(api.contains(&call), "{call}: {api:#?}");
    }
    // The last one evacuated: the set is back on A, the request cleared.
    s.report(&pod_of(moved_back.last().unwrap()), "prohibiting", 0);
    for _ in 0..3 {
        s.round().await;
    }
    let c = s.cluster.lock().unwrap();
    let set = c.set.as_ref().unwrap();
    assert_eq!(set["status"]["phase"], "Aborted", "{}", set["status"]);
    assert_eq!(set["status"]["currentRevision"], json!(a));
    assert!(
        set["metadata"]["annotations"]
            .get("sluice.dev/abort")
            .is_none()
    );
    let left: Vec<&String> = c.pods.keys().collect();
    assert_eq!(left, [&s.name(&a, 0), &s.name(&a, 1), &s.name(&a, 2)]);
}

/// The GracefulSet deleted while `a-0` is evacuated: the finalizer stops that
/// evacuation (`DELETE /evacuation` on its sidecar) and no other, deletes no
/// pod itself (garbage collection does, once the finalizer is gone), and
/// removes the finalizer.
#[tokio::test]
async fn a_set_deleted_mid_upgrade_stops_its_evacuations_then_lets_go() {
    let mut s = Scenario::new().await;
    s.mid_evacuation().await;
    {
        let mut c = s.cluster.lock().unwrap();
        c.set.as_mut().unwrap()["metadata"]["deletionTimestamp"] = ago(Duration::from_secs(1));
    }
    let (api, evac) = s.round().await;
    let a0 = s.name(&s.a, 0);
    assert_eq!(
        evac,
        [format!("DELETE {a0}")],
        "only the running evacuation"
    );
    assert!(
        api.contains(&format!("event EvacuationStopped {a0}")),
        "{api:#?}"
    );
    assert_eq!(
        api.last().map(String::as_str),
        Some("finalizer removed"),
        "{api:#?}"
    );
    assert_eq!(count(&api, "delete "), 0, "{api:#?}");
    assert_eq!(count(&api, "create "), 0, "{api:#?}");
    assert_eq!(count(&api, "status "), 0, "{api:#?}");
}

/// A restarted operator resumes from what is in the cluster alone: the running
/// evacuation of `a-0` is left to run (no second start, no serving change, the
/// switch time kept); once it is done, `a-0` is deleted and the next old pod's
/// evacuation starts, once.
#[tokio::test]
async fn a_restarted_operator_resumes_the_evacuation_where_it_was() {
    let mut s = Scenario::new().await;
    s.mid_evacuation().await;
    // The switch time the cluster holds (building the status again would
    // read the clock again: a millisecond later, one run in a few).
    let switched_at =
        s.cluster.lock().unwrap().set.as_ref().unwrap()["status"]["trafficSwitch"]["at"].clone();
    let (api, evac) = s.round().await;
    assert!(evac.is_empty(), "a-0's evacuation runs on: {evac:#?}");
    for prefix in ["serving ", "gate ", "delete ", "create "] {
        assert_eq!(count(&api, prefix), 0, "{api:#?}");
    }
    {
        let c = s.cluster.lock().unwrap();
        let status = &c.set.as_ref().unwrap()["status"];
        assert_eq!(status["phase"], "Evacuating");
        assert_eq!(status["trafficSwitch"]["at"], switched_at);
        assert_eq!(status["evacuations"], json!([s.name(&s.a, 0)]));
        assert_eq!(
            status["nodeEvacuationsStatus"][0]["node"],
            json!(s.name(&s.a, 0))
        );
        assert_eq!(
            status["nodeEvacuationsStatus"][0]["stats"]["current_connected"],
            40
        );
    }

    // Another restart, and a-0 is done meanwhile.
    s.report(&s.name(&s.a, 0), "prohibiting", 0);
    let (api, evac) = s.round().await;
    assert!(
        api.contains(&format!("delete {}", s.name(&s.a, 0))),
        "{api:#?}"
    );
    let started = starts(&evac);
    assert_eq!(started.len(), 1, "one at a time: {evac:#?}");
    assert!(
        [s.name(&s.a, 1), s.name(&s.a, 2)].contains(&pod_of(&started[0])),
        "{evac:#?}"
    );
    // And again: nothing is started twice.
    let (_, evac) = s.round().await;
    assert!(evac.is_empty(), "{evac:#?}");
}

/// The Lease held by `holder`, renewed `renewed` ago, for an hour.
fn lease(holder: &str, renewed: Duration) -> Value {
    let at = ago(renewed);
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "sluice-operator", "namespace": "default", "resourceVersion": "5"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600,
                 "acquireTime": at, "renewTime": at, "leaseTransitions": 0},
    })
}

/// Runs `sluice operator run`'s loop as `the-standby` against `cluster` for
/// `seconds`, then shuts it down.
async fn run_replica(cluster: &SharedCluster, seconds: u64) {
    let (client, handle) = mock();
    let server = tokio::spawn(serve(handle, cluster.clone()));
    let args = RunArgs {
        kubeconfig: None,
        namespace: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        lease_namespace: Some("default".into()),
        identity: Some("the-standby".into()),
        no_leader_election: false,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let replica = tokio::spawn(async move {
        let shutdown = move || {
            let mut stopped = stopped.clone();
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            }
        };
        operate(client, &args, Default::default(), shutdown).await
    });
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(10), replica)
        .await
        .expect("the replica stops on shutdown")
        .unwrap();
    assert!(ended.is_ok(), "{ended:?}");
    server.abort();
}

/// A replica that is not the leader makes no call but the Lease's, however long
/// it waits: it reconciles nothing, publishes nothing, writes no Event. Once
/// the leader's Lease has expired, it takes the Lease and starts watching.
#[tokio::test]
async fn only_the_leader_acts_and_a_standby_takes_an_expired_lease() {
    let s = Scenario::new().await;
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/default/leases/sluice-operator";
    s.cluster.lock().unwrap().lease = Some(lease("the-leader", Duration::ZERO));
    run_replica(&s.cluster, 3).await;
    {
        let c = s.cluster.lock().unwrap();
        assert!(!c.reads.is_empty(), "it looked at the Lease");
        assert!(c.reads.iter().all(|r| r == lease_path), "{:#?}", c.reads);
        assert!(
            c.calls.iter().all(|c| c.contains(" lease ")),
            "{:#?}",
            c.calls
        );
        assert!(c.set.as_ref().unwrap().get("status").is_none());
    }

    // The leader stopped renewing two hours ago.
    {
        let mut c = s.cluster.lock().unwrap();
        c.lease = Some(lease("the-leader", Duration::from_secs(7200)));
        c.lease_expired = true;
        c.reads.clear();
        c.calls.clear();
    }
    run_replica(&s.cluster, 3).await;
    let c = s.cluster.lock().unwrap();
    assert!(
        c.calls
            .contains(&"PATCH lease holder=\"the-standby\"".to_owned()),
        "{:#?}",
        c.calls
    );
    assert!(
        c.reads
            .iter()
            .any(|r| r == "/apis/sluice.dev/v1alpha1/gracefulsets"),
        "leading, it watches the sets: {:#?}",
        c.reads
    );
}
