//! The operator's failure paths end to end: the real API server and controllers
//! of the test control plane, the node and service proxy doubles
//! (`sluice-testkube`), real mosquitto pods behind the injected `sluice proxy`
//! sidecar, `sluice operator run` as real processes in the node's network
//! namespace, and real MQTT clients (`sluice bench conn`, half 3.1.1, half 5)
//! through the Service's ClusterIP.
//!
//! * the operator SIGKILLed mid-evacuation and started again finishes the
//!   upgrade; no client is disconnected twice;
//! * two operator replicas: only the Lease's holder acts (Events), and the
//!   standby takes over when the leader is SIGKILLed;
//! * a template that never becomes ready: aborted after
//!   `progressDeadlineSeconds`, nobody disconnected;
//! * `kubectl sluice abort` mid-evacuation: the clients already moved are moved
//!   back once, the others are untouched;
//! * the GracefulSet deleted mid-upgrade: the finalizer stops the evacuation,
//!   garbage collection removes the pods.
//!
//! The same paths, request by request, are in
//! `crates/operator/tests/failure_paths.rs`. Needs `scripts/testcluster up` and
//! `SLUICE_KUBECONFIG` (scripts/test sets both), root, iproute2 and mosquitto.

mod kube_support;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use sluice_core::engine::{EvacuationState, Phase};
use sluice_demo::promises::MIN_CONNECTIONS_FOR_PACE;
use sluice_operator::crd::GracefulSetStatus;

use kube_support::clients::{Clients, Tally};
use kube_support::gset::{self, EvacuatorWatch, Operator};
use kube_support::{Env, poll, rollout};

/// Clients of each test: enough for a few seconds of evacuation per pod.
const CLIENTS: u64 = 300;
/// `connEvictRate`: ~100 clients per old pod leave in ~10 s, long enough to
/// act in the middle of an evacuation on a loaded machine.
const RATE: u64 = 10;
/// The most connections a pod holds here (`maxConnectionsPerPod`).
const MAX_PER_POD: u64 = 150;
/// Longest wait for a fleet to come up, roll, abort or reconnect.
const LONG: Duration = Duration::from_secs(120);

/// One test at a time: each runs a fleet, clients and operators.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A GracefulSet `mqtt` of 3 pods up, serving, with [`CLIENTS`] clients on them.
struct Fleet {
    clients: Clients,
    /// The in-cluster kubeconfig the operators use.
    kubeconfig: std::path::PathBuf,
    /// The revision the set started on.
    first: String,
}

fn strategy(progress_deadline: u32) -> Value {
    json!({"type": "BlueGreen", "initialDelaySeconds": 5,
           "progressDeadlineSeconds": progress_deadline,
           "evacuationStrategy": {"connEvictRate": RATE, "sessEvictRate": RATE,
                                  "waitTakeover": 1, "waitHealthCheck": 1}})
}

/// The operator replicas of a test. Declared before [`Env::run`] and dropped
/// after it, so that the namespace's deletion still finds an operator to
/// remove the set's finalizer when the test failed.
#[derive(Default)]
struct Replicas(std::sync::Mutex<Vec<Operator>>);

impl Replicas {
    /// Starts replica `op-<i>` (health port 8080 + `i`), with leader election
    /// or without.
    fn start(&self, env: &Env, kubeconfig: &std::path::Path, i: usize, election: bool) {
        let port = 8080 + u16::try_from(i).expect("few replicas");
        let op = Operator::start(env, kubeconfig, &format!("op-{i}"), port, election);
        self.0.lock().expect("replicas").push(op);
    }

    /// SIGKILLs replica `identity` and waits for its exit.
    fn kill(&self, identity: &str) {
        let mut ops = self.0.lock().expect("replicas");
        let i = ops
            .iter()
            .position(|o| o.identity == identity)
            .unwrap_or_else(|| panic!("replica {identity} runs"));
        ops.remove(i).stop("KILL");
    }

    /// The identities of the replicas running.
    fn identities(&self) -> Vec<String> {
        let ops = self.0.lock().expect("replicas");
        ops.iter().map(|o| o.identity.clone()).collect()
    }
}

/// Installs the CRD, starts `operators` replicas (leader election when more
/// than one), creates the set and the Service, and connects the clients.
async fn fleet(env: &Env, replicas: &Replicas, operators: usize, progress_deadline: u32) -> Fleet {
    gset::install_crd(env).await;
    let kubeconfig = gset::in_cluster_kubeconfig(env).await;
    for i in 0..operators {
        replicas.start(env, &kubeconfig, i, operators > 1);
    }
    let mut template = env.mosquitto_behind_sidecar_template("mqtt");
    template["metadata"]["annotations"] = json!({"version": "1"});
    let ip = env.create_service("mqtt", json!(1883)).await;
    let mut set = gset::sidecar_set("mqtt", 3, template, strategy(progress_deadline));
    // Sizes the drain (preStop) of deleted pods: 150 at RATE is 15 s, not 40.
    set["spec"]["evacuator"]["sidecar"]["maxConnectionsPerPod"] = json!(MAX_PER_POD);
    gset::create(env, set).await;
    let first = gset::wait_status(env, "mqtt", "3 pods serving", LONG, |s| {
        s.phase == Phase::Stable && s.serving_replicas == 3 && s.ready_replicas == 3
    })
    .await;
    rollout::wait_ready_endpoints(env, 3).await;
    let clients = Clients::start(env, &ip, CLIENTS);
    tokio::task::block_in_place(|| clients.wait_connected(LONG));
    rollout::wait_clients_on_pods(env, CLIENTS).await;
    Fleet {
        clients,
        kubeconfig,
        first: first.current_revision,
    }
}

/// Waits until an old pod's evacuation has moved at least `moved` clients;
/// returns the status then.
async fn mid_evacuation(env: &Env, moved: u64) -> GracefulSetStatus {
    poll("an evacuation under way", LONG, async || {
        let s = gset::status(env, "mqtt").await?;
        let running = s.node_evacuations_status.iter().any(|e| {
            e.state == EvacuationState::EvictingConns
                && e.stats.initial_connected >= e.stats.current_connected + moved
                && e.stats.current_connected > 0
        });
        if running {
            Ok(s)
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await
}

/// Waits until the set is Stable on a revision other than `first`, with 3 pods
/// serving and every client back on them.
async fn wait_updated(env: &Env, first: &str) -> GracefulSetStatus {
    let s = gset::wait_status(env, "mqtt", "the update done", LONG, |s| {
        s.phase == Phase::Stable
            && s.current_revision == s.update_revision
            && s.update_revision != first
            && s.serving_replicas == 3
            && s.replicas == 3
    })
    .await;
    rollout::wait_clients_on_pods(env, CLIENTS).await;
    s
}

/// The Events of the set as `(reportingInstance, reason)`.
async fn events_by_instance(env: &Env) -> Vec<(String, String)> {
    Api::<Event>::namespaced(env.client.clone(), &env.ns)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("GracefulSet"))
        .map(|e| {
            (
                e.reporting_instance.unwrap_or_default(),
                e.reason.unwrap_or_default(),
            )
        })
        .collect()
}

/// The Lease's holder.
async fn lease_holder(env: &Env) -> Option<String> {
    Api::<Lease>::namespaced(env.client.clone(), &env.ns)
        .get_opt("sluice-operator")
        .await
        .expect("get the lease")
        .and_then(|l| l.spec?.holder_identity)
}

/// Stops the clients; asserts every one is connected at the end.
fn stop_clients(clients: Clients) -> Tally {
    let t = tokio::task::block_in_place(|| clients.stop());
    eprintln!("  clients: {t:?}");
    assert_eq!(
        t.connected_at_end, CLIENTS,
        "every client connected at the end: {t:?}"
    );
    t
}

fn histogram(t: &Tally, k: usize) -> u64 {
    t.histogram.get(k).copied().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_mid_evacuation_resumes_and_no_client_moves_twice() {
    let _one = SERIAL.lock().await;
    let replicas = Replicas::default();
    Env::start("kube-fault-kill", 50)
        .await
        .run(async |env| {
            let f = fleet(env, &replicas, 1, 300).await;
            gset::change_template(env, "mqtt", "2").await;
            let at_kill = mid_evacuation(env, 10).await;
            replicas.kill("op-0");
            // The sidecar keeps evicting at its pace with nobody watching.
            tokio::time::sleep(Duration::from_secs(3)).await;
            replicas.start(env, &f.kubeconfig, 0, false);
            let done = wait_updated(env, &f.first).await;
            let t = stop_clients(f.clients);
            eprintln!("  killed at {:?}", at_kill.node_evacuations_status);
            assert!(
                t.max_disconnects <= 1,
                "no client disconnected twice: {t:?}"
            );
            assert_eq!(
                histogram(&t, 0),
                0,
                "every client moved off the old pods once: {t:?} ({done:?})"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_acts_and_the_standby_takes_over() {
    let _one = SERIAL.lock().await;
    let replicas = Replicas::default();
    Env::start("kube-fault-lease", 51)
        .await
        .run(async |env| {
            let f = fleet(env, &replicas, 2, 300).await;
            let leader = lease_holder(env).await.expect("a leader");
            let events = events_by_instance(env).await;
            assert!(!events.is_empty());
            assert!(
                events.iter().all(|(who, _)| *who == leader),
                "only the leader {leader} tells: {events:?}"
            );
            gset::change_template(env, "mqtt", "2").await;
            mid_evacuation(env, 10).await;
            // Through the switch and into the evacuation, the standby said nothing.
            let events = events_by_instance(env).await;
            assert!(
                events.iter().all(|(who, _)| *who == leader),
                "only the leader {leader} tells during the upgrade: {events:?}"
            );
            replicas.kill(&leader);
            let standby = replicas.identities().pop().expect("the standby runs");
            // The Lease expires (15 s) and the standby takes it.
            poll("the standby leads", LONG, async || {
                match lease_holder(env).await {
                    Some(h) if h == standby => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await;
            wait_updated(env, &f.first).await;
            let t = stop_clients(f.clients);
            assert!(
                t.max_disconnects <= 1,
                "no client disconnected twice: {t:?}"
            );
            assert_eq!(histogram(&t, 0), 0, "every client moved once: {t:?}");
            let events = events_by_instance(env).await;
            assert!(
                events
                    .iter()
                    .any(|(who, r)| *who == standby && r == "PhaseChanged"),
                "the standby finished the update: {events:?}"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_never_becomes_ready_is_aborted_at_the_progress_deadline() {
    let _one = SERIAL.lock().await;
    let replicas = Replicas::default();
    Env::start("kube-fault-deadline", 52)
        .await
        .run(async |env| {
            const DEADLINE: u32 = 20;
            let f = fleet(env, &replicas, 1, DEADLINE).await;
            let old = pod_names(env).await;
            // The new template's readiness probe asks a port nobody listens on.
            let set = gset::sets(env).get("mqtt").await.expect("the set");
            let mut template = serde_json::to_value(&set.spec.template).expect("json");
            template["metadata"]["annotations"] = json!({"version": "never-ready"});
            template["spec"]["containers"][0]["readinessProbe"] =
                json!({"tcpSocket": {"port": 1999}, "periodSeconds": 1});
            let patch = json!({"spec": {"template": template}});
            gset::sets(env)
                .patch("mqtt", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .expect("patch the template");
            let started = tokio::time::Instant::now();
            let s = gset::wait_status(env, "mqtt", "the update aborted", LONG, |s| {
                s.phase == Phase::Aborted
            })
            .await;
            let took = started.elapsed();
            let progressing = s.conditions.iter().find(|c| c.type_ == "Progressing");
            assert_eq!(
                progressing.map(|c| (c.status.as_str(), c.reason.as_str())),
                Some(("False", "ProgressDeadlineExceeded")),
                "{s:?}"
            );
            assert!(
                took >= Duration::from_secs(u64::from(DEADLINE)),
                "not before the deadline: {took:?}"
            );
            poll("only the old pods left", LONG, async || {
                let now = pod_names(env).await;
                if now == old {
                    Ok(())
                } else {
                    Err(format!("{now:?} vs {old:?}"))
                }
            })
            .await;
            assert_eq!(s.current_revision, f.first);
            assert_eq!(s.serving_replicas, 3, "{s:?}");
            rollout::wait_clients_on_pods(env, CLIENTS).await;
            let t = stop_clients(f.clients);
            assert_eq!(t.max_disconnects, 0, "nobody disconnected: {t:?}");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sluice_abort_moves_the_moved_clients_back_once() {
    let _one = SERIAL.lock().await;
    let replicas = Replicas::default();
    Env::start("kube-fault-abort", 53)
        .await
        .run(async |env| {
            let f = fleet(env, &replicas, 1, 300).await;
            let old = pod_names(env).await;
            gset::change_template(env, "mqtt", "2").await;
            // Enough moved for each new pod to hold ~27 (the Service spreads
            // them at random): its pace can be read (3 × 20 left all three
            // below 20 in one run).
            let at_abort = mid_evacuation(env, 4 * MIN_CONNECTIONS_FOR_PACE).await;
            let new: BTreeMap<String, String> = gset::pods(env, "mqtt")
                .await
                .into_iter()
                .filter_map(|p| Some((p.metadata.name?, p.status?.pod_ip?)))
                .filter(|(name, _)| !old.contains(name))
                .collect();
            assert_eq!(new.len(), 3, "{new:?}");
            let watch = EvacuatorWatch::start(env, "mqtt", new, tokio::time::Instant::now()).await;
            let out = kubectl_sluice(env, &["abort", "mqtt"]);
            eprintln!("  aborted at {:?}", at_abort.node_evacuations_status);
            assert!(out.contains("abort requested"), "{out}");
            let s = gset::wait_status(env, "mqtt", "the update aborted", LONG, |s| {
                s.phase == Phase::Aborted && s.serving_replicas == 3 && s.replicas == 3
            })
            .await;
            assert_eq!(s.current_revision, f.first);
            let reason = s.conditions.iter().find(|c| c.type_ == "Progressing");
            assert_eq!(
                reason.map(|c| c.reason.as_str()),
                Some("UserAborted"),
                "{s:?}"
            );
            assert_eq!(pod_names(env).await, old, "back on the old pods");
            let rates = gset::eviction_rates(&watch.stop());
            eprintln!("  moved back at (connEvictRate {RATE}): {rates:?}");
            // The Service spreads the moved clients at random: a new pod with
            // fewer than MIN_CONNECTIONS_FOR_PACE has no readable pace.
            assert!(!rates.is_empty(), "a new pod's pace measured: {rates:?}");
            // Paced, not cut (a cut reads as ~10x the rate); loose, as ~20
            // clients per pod give a rough slope.
            for (pod, rate) in &rates {
                assert!(
                    (rate - RATE as f64).abs() <= RATE as f64 * 0.5,
                    "{pod} moved back at the configured pace: {rate:.1}/s"
                );
            }
            rollout::wait_clients_on_pods(env, CLIENTS).await;
            let set = gset::sets(env).get("mqtt").await.expect("the set");
            assert!(
                !set.metadata
                    .annotations
                    .unwrap_or_default()
                    .contains_key("sluice.dev/abort"),
                "the request is cleared"
            );
            let t = stop_clients(f.clients);
            // Moved once to a new pod, once back; everyone else untouched.
            assert!(
                t.max_disconnects <= 2,
                "nobody moved more than there and back: {t:?}"
            );
            let moved_back = histogram(&t, 2);
            assert!(moved_back > 0, "the moved clients came back: {t:?}");
            assert!(
                histogram(&t, 0) >= CLIENTS / 2,
                "the clients of the other old pods untouched: {t:?}"
            );
            // A client evicted as the abort lands may reconnect to an old
            // pod: moved once. At most ~3 s of evictions.
            assert!(
                histogram(&t, 1) <= 3 * RATE,
                "a client moved is moved back: {t:?}"
            );
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_deleted_mid_upgrade_stops_the_evacuation_and_its_pods_go() {
    let _one = SERIAL.lock().await;
    let replicas = Replicas::default();
    Env::start("kube-fault-delete", 54)
        .await
        .run(async |env| {
            let f = fleet(env, &replicas, 1, 300).await;
            gset::change_template(env, "mqtt", "2").await;
            let s = mid_evacuation(env, 10).await;
            let evacuating = s
                .node_evacuations_status
                .iter()
                .find(|e| e.state == EvacuationState::EvictingConns)
                .map(|e| e.node.clone())
                .expect("an evacuation");
            // Waits until the finalizer let the set go.
            gset::delete(env, "mqtt").await;
            poll("the finalizer stopped the evacuation", LONG, async || {
                let events = gset::events(env).await;
                let stopped = events.iter().any(|(r, note)| {
                    r == "EvacuationStopped"
                        && note.contains("set deleted")
                        && note.contains(&evacuating)
                });
                if stopped {
                    Ok(())
                } else {
                    Err(format!("{events:?}"))
                }
            })
            .await;
            poll("garbage collection removed the pods", LONG, async || {
                let left = pod_names(env).await;
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            })
            .await;
            let events = gset::events(env).await;
            assert!(
                !events.iter().any(|(r, _)| r == "CleanupIncomplete"),
                "{events:?}"
            );
            drop(f);
        })
        .await;
}

/// The names of the set's pods not being deleted, sorted.
async fn pod_names(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = gset::pods(env, "mqtt")
        .await
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    names
}

/// Runs the `sluice` binary as the kubectl plugin (`kubectl-sluice`, a
/// symlink) with the admin kubeconfig in the test's namespace; returns stdout.
fn kubectl_sluice(env: &Env, args: &[&str]) -> String {
    let plugin = env.dir.join("kubectl-sluice");
    if !plugin.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_sluice"), &plugin).expect("symlink");
    }
    let kubeconfig = sluice_testkube::kubeconfig_from_env().unwrap_or_else(|e| panic!("{e}"));
    let out = std::process::Command::new(&plugin)
        .args(args)
        .args(["-n", &env.ns, "--kubeconfig"])
        .arg(kubeconfig)
        .output()
        .expect("run kubectl-sluice");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kubectl sluice {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
