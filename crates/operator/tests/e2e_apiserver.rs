//! Against the real kube-apiserver and kube-controller-manager of the test control
//! plane (`scripts/testcluster`, `docs/testcluster.md`): the CRD installs, the API
//! server refuses bad GracefulSets naming the field, and the operator creates a
//! set's pods, publishes its status and, on deletion, lets garbage collection
//! remove them. No kubelet runs here: pods stay Pending, which is all these
//! checks need.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use sluice_operator::crd::{GracefulSet, crd_json};
use sluice_operator::run::{RunArgs, client, run};

const DEADLINE: Duration = Duration::from_secs(60);

fn kubeconfig() -> PathBuf {
    match std::env::var_os("SLUICE_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "SLUICE_KUBECONFIG is not set: this test needs the test control plane. \
             Start it with `scripts/testcluster up` and `eval \"$(scripts/testcluster env)\"` \
             (scripts/test does both; docs/testcluster.md)"
        ),
    }
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`] with `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < end, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn valid_set(name: &str) -> Value {
    json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "GracefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "mosquitto", "image": "eclipse-mosquitto:2",
                                          "ports": [{"containerPort": 1884}]}]}
            },
            "updateStrategy": {"type": "Rolling",
                               "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "evacuator": {"sidecar": {"image": "sluice:dev", "port": 1883, "appPort": 1884}}
        }
    })
}

async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = crd_json().unwrap();
    let name = crd["metadata"]["name"].as_str().unwrap().to_owned();
    crds.patch(
        &name,
        &PatchParams::apply("sluice-e2e").force(),
        &Patch::Apply(crd),
    )
    .await
    .expect("the API server accepts the generated CRD");
    eventually("the CRD is Established", || async {
        let c = crds.get(&name).await.ok()?;
        let established = c
            .status?
            .conditions?
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

/// A fresh namespace for one test (deleted by [`drop_namespace`]).
async fn namespace(client: &Client, test: &str) -> String {
    let name = format!("sluice-e2e-{test}-{}", std::process::id());
    let ns: Api<Namespace> = Api::all(client.clone());
    let body: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match ns.create(&PostParams::default(), &body).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("cannot create namespace {name}: {e}"),
    }
    name
}

async fn drop_namespace(client: &Client, name: &str) {
    let ns: Api<Namespace> = Api::all(client.clone());
    ns.delete(name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_bad_sets_naming_the_field() {
    let client = client(Some(&kubeconfig())).await.unwrap();
    install_crd(&client).await;
    let ns = namespace(&client, "refuse").await;
    let sets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<GracefulSet>(&()));
    let cases: [(&str, Value, &[&str]); 5] = [
        (
            "negative-replicas",
            json!({"replicas": -1}),
            &["spec.replicas", "greater than or equal to 0"],
        ),
        (
            "both-zero",
            json!({"updateStrategy": {"type": "Rolling", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
            &[
                "spec.updateStrategy.rollingUpdate.maxSurge",
                "cannot both be 0",
            ],
        ),
        (
            "unknown-strategy",
            json!({"updateStrategy": {"type": "Canary"}}),
            &["spec.updateStrategy.type", "Unsupported value: \"Canary\""],
        ),
        (
            "naive",
            json!({"updateStrategy": {"type": "Naive"}}),
            &["spec.updateStrategy.type", "Unsupported value: \"Naive\""],
        ),
        (
            "two-evacuators",
            json!({"evacuator": {"sidecar": {"image": "s", "port": 1, "appPort": 2}, "emqx": {"secretName": "x"}}}),
            &[
                "spec.evacuator",
                "set exactly one of evacuator.sidecar or evacuator.emqx",
            ],
        ),
    ];
    for (name, change, expect) in cases {
        let mut body = valid_set(name);
        for (k, v) in change.as_object().unwrap() {
            body["spec"][k] = v.clone();
        }
        let object: DynamicObject = serde_json::from_value(body).unwrap();
        let err = sets
            .create(&PostParams::default(), &object)
            .await
            .expect_err(&format!("{name}: the API server must refuse it"));
        let text = err.to_string();
        for part in expect {
            assert!(text.contains(part), "{name}: {text:?} lacks {part:?}");
        }
    }
    let ok: DynamicObject = serde_json::from_value(valid_set("fine")).unwrap();
    sets.create(&PostParams::default(), &ok)
        .await
        .expect("a valid set is accepted");
    sets.delete("fine", &DeleteParams::default()).await.unwrap();
    drop_namespace(&client, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_creates_the_pods_and_garbage_collection_removes_them() {
    let path = kubeconfig();
    let client = client(Some(&path)).await.unwrap();
    install_crd(&client).await;
    let ns = namespace(&client, "pods").await;
    let operator = tokio::spawn(run(RunArgs {
        kubeconfig: Some(path),
        namespace: Some(ns.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        lease_namespace: None,
        identity: Some("e2e".into()),
        no_leader_election: true,
    }));

    let sets: Api<GracefulSet> = Api::namespaced(client.clone(), &ns);
    let set: GracefulSet = serde_json::from_value(valid_set("mqtt")).unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let listed = eventually("three pods exist", || async {
        let l = pods
            .list(&ListParams::default().labels("sluice.dev/set=mqtt"))
            .await
            .ok()?;
        (l.items.len() == 3).then_some(l.items)
    })
    .await;
    let set = sets.get("mqtt").await.unwrap();
    let uid = set.meta().uid.clone().unwrap();
    for p in &listed {
        let name = p.metadata.name.as_deref().unwrap();
        assert!(
            name.starts_with("mqtt-") && name.len() == "mqtt-".len() + 12,
            "{name}"
        );
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.uid.as_str(), owner.controller),
            (uid.as_str(), Some(true))
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(
            spec.readiness_gates.as_ref().unwrap()[0].condition_type,
            "sluice.dev/serving"
        );
        let sidecar = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    }
    assert_eq!(set.finalizers(), ["sluice.dev/evacuate"]);
    let status = eventually("the status is published", || async {
        let s = sets.get("mqtt").await.ok()?.status?;
        (s.replicas == 3).then_some(s)
    })
    .await;
    assert_eq!(status.selector, "app=mqtt");
    assert_eq!(status.observed_generation, 1);
    assert!(!status.update_revision.is_empty());
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let cr = revisions
        .get(&format!("mqtt-{}", status.update_revision))
        .await
        .expect("the revision's template is kept");
    assert_eq!(cr.revision, Some(1));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .get("mqtt-sluice-admin")
        .await
        .expect("the admin token Secret exists");

    // The scale subresource works: `kubectl scale gset mqtt --replicas 4`.
    sets.patch_scale(
        "mqtt",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 4}})),
    )
    .await
    .unwrap();
    eventually("a fourth pod", || async {
        let l = pods
            .list(&ListParams::default().labels("sluice.dev/set=mqtt"))
            .await
            .ok()?;
        (l.items.len() == 4).then_some(())
    })
    .await;

    sets.delete("mqtt", &DeleteParams::default()).await.unwrap();
    eventually("the set is gone (finalizer removed)", || async {
        sets.get_opt("mqtt").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("garbage collection removes the pods", || async {
        let l = pods
            .list(&ListParams::default().labels("sluice.dev/set=mqtt"))
            .await
            .ok()?;
        l.items
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    operator.abort();
    drop_namespace(&client, &ns).await;
}

/// A stand-in for kubelet, enough for the operator's loop: each new pod gets a
/// loopback IP of its own, its sidecar (the real `sluice proxy`, in this process)
/// runs there in front of an echo server, and its status says Running with ready
/// containers, merged by condition type so the operator's serving gate stays.
struct NodeDouble {
    pods: Api<Pod>,
    echo: std::net::SocketAddr,
    admin_port: u16,
    token: String,
    /// pod name → (IP, sidecar task)
    running: std::collections::BTreeMap<String, (std::net::Ipv4Addr, tokio::task::JoinHandle<()>)>,
    next_ip: u8,
}

#[derive(clap::Parser)]
struct ProxyCli {
    #[command(flatten)]
    args: sluice_proxy::ProxyArgs,
}

impl NodeDouble {
    async fn step(&mut self) {
        let Ok(list) = self
            .pods
            .list(&ListParams::default().labels("sluice.dev/set=mqtt"))
            .await
        else {
            return;
        };
        let live: Vec<String> = list
            .items
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        self.running.retain(|name, (_, task)| {
            let keep = live.contains(name);
            if !keep {
                task.abort();
            }
            keep
        });
        for p in &list.items {
            let name = p.metadata.name.clone().unwrap();
            if self.running.contains_key(&name) || p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let ip = std::net::Ipv4Addr::new(127, 0, 0, self.next_ip);
            self.next_ip += 1;
            use clap::Parser;
            let cli = ProxyCli::try_parse_from([
                "proxy".to_owned(),
                format!("--listen={ip}:1883"),
                format!("--upstream=app={}", self.echo),
                format!("--admin={ip}:{}", self.admin_port),
                format!("--admin-token={}", self.token),
                "--protocol=tcp".to_owned(),
            ])
            .unwrap();
            let task = tokio::spawn(async move {
                let _ = sluice_proxy::run(cli.args).await;
            });
            // Up before the pod reports a running sidecar, as its startup probe ensures.
            eventually("the sidecar's admin API answers", || async {
                tokio::net::TcpStream::connect((ip, self.admin_port))
                    .await
                    .ok()
                    .map(drop)
            })
            .await;
            let status = json!({"status": {
                "phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
                "conditions": [{"type": "ContainersReady", "status": "True"},
                               {"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{"name": "sluice-proxy", "ready": true, "restartCount": 0,
                    "image": "sluice:dev", "imageID": "", "started": true,
                    "state": {"running": {"startedAt": "2026-12-02T08:00:00Z"}}}],
            }});
            self.pods
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(status))
                .await
                .unwrap();
            self.running.insert(name, (ip, task));
        }
    }
}

/// An echo server: the app behind every sidecar.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A blue-green upgrade driven by the operator through the real API server:
/// new pods are created and switched in, every old pod is evacuated through its
/// sidecar's admin API (its clients are closed, cleanly, by the evacuation) and
/// only then deleted; the Events tell the story.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blue_green_upgrade_evacuates_old_pods_through_their_sidecars() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = kubeconfig();
    let client = client(Some(&path)).await.unwrap();
    install_crd(&client).await;
    let ns = namespace(&client, "upgrade").await;
    let operator = tokio::spawn(run(RunArgs {
        kubeconfig: Some(path),
        namespace: Some(ns.clone()),
        listen: "127.0.0.1:0".parse().unwrap(),
        lease_namespace: None,
        identity: Some("e2e".into()),
        no_leader_election: true,
    }));
    let admin_port = 19190 + u16::try_from(std::process::id() % 1000).unwrap();
    let mut body = valid_set("mqtt");
    body["spec"]["replicas"] = json!(2);
    body["spec"]["updateStrategy"] = json!({"type": "BlueGreen", "initialDelaySeconds": 0,
        "evacuationStrategy": {"connEvictRate": 20, "waitTakeover": 0}});
    body["spec"]["evacuator"]["sidecar"]["adminPort"] = json!(admin_port);
    let sets: Api<GracefulSet> = Api::namespaced(client.clone(), &ns);
    sets.create(
        &PostParams::default(),
        &serde_json::from_value(body).unwrap(),
    )
    .await
    .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let token = eventually("the admin token Secret", || async {
        let s = secrets.get_opt("mqtt-sluice-admin").await.ok()??;
        Some(String::from_utf8(s.data?.get("token")?.0.clone()).unwrap())
    })
    .await;
    let mut node = NodeDouble {
        pods: Api::namespaced(client.clone(), &ns),
        echo: echo_server().await,
        admin_port,
        token,
        running: Default::default(),
        next_ip: 2,
    };
    let stable = |n: i32| {
        let sets = sets.clone();
        move || {
            let sets = sets.clone();
            async move {
                let s = sets.get("mqtt").await.ok()?.status?;
                (s.phase == sluice_core::engine::Phase::Stable
                    && s.serving_replicas == n
                    && s.current_revision == s.update_revision)
                    .then_some(s)
            }
        }
    };
    let first = {
        let end = Instant::now() + DEADLINE;
        loop {
            node.step().await;
            if let Some(s) = stable(2)().await {
                break s;
            }
            assert!(
                Instant::now() < end,
                "the set never became Stable with 2 serving"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };

    // 10 clients on each old pod, through its sidecar.
    let mut clients = Vec::new();
    for (ip, _) in node.running.values() {
        for _ in 0..10 {
            let mut c = tokio::net::TcpStream::connect((*ip, 1883)).await.unwrap();
            c.write_all(b"hi").await.unwrap();
            let mut buf = [0u8; 2];
            c.read_exact(&mut buf).await.unwrap();
            clients.push(c);
        }
    }

    sets.patch(
        "mqtt",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"metadata": {"annotations": {"rev": "2"}}}}})),
    )
    .await
    .unwrap();
    let mut saw_evacuation = false;
    let end = Instant::now() + DEADLINE * 2;
    let last = loop {
        node.step().await;
        if let Some(s) = sets.get("mqtt").await.ok().and_then(|s| s.status) {
            saw_evacuation |= s
                .node_evacuations_status
                .iter()
                .any(|e| e.stats.initial_connected == 10);
            if s.phase == sluice_core::engine::Phase::Stable
                && s.current_revision != first.current_revision
                && s.serving_replicas == 2
            {
                break s;
            }
        }
        assert!(Instant::now() < end, "the upgrade did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        saw_evacuation,
        "status.nodeEvacuationsStatus never showed an old pod's evacuation"
    );

    // Every client was closed by its sidecar's evacuation, cleanly (FIN, not
    // reset). These clients do not reconnect: "once" is measured elsewhere.
    for c in &mut clients {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
            .await
            .expect("evicted")
            .expect("closed cleanly, not reset");
        assert_eq!(n, 0);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let now = pods
        .list(&ListParams::default().labels("sluice.dev/set=mqtt"))
        .await
        .unwrap();
    let names: Vec<String> = now
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    for p in &now.items {
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["sluice.dev/revision"], last.current_revision);
        let gate = p
            .status
            .as_ref()
            .unwrap()
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "sluice.dev/serving")
            .unwrap();
        assert_eq!(gate.status, "True");
    }
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &ns);
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    for reason in [
        "CreatedPod",
        "Serving",
        "NotServing",
        "NodeEvacuation",
        "DeletedPod",
        "PhaseChanged",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "no {reason} Event in {reasons:?}"
        );
    }
    assert_eq!(
        reasons.iter().filter(|r| *r == "NodeEvacuation").count(),
        2,
        "{reasons:?}"
    );
    // Deleted while the operator runs, so that it removes its finalizer (else
    // the namespace stays Terminating on the shared control plane).
    sets.delete("mqtt", &DeleteParams::default()).await.unwrap();
    eventually("the set is gone (finalizer removed)", || async {
        sets.get_opt("mqtt").await.ok()?.is_none().then_some(())
    })
    .await;
    operator.abort();
    for (_, task) in node.running.values() {
        task.abort();
    }
    drop_namespace(&client, &ns).await;
}
