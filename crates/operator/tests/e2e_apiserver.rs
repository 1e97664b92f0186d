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
use kube::{Client, Resource};
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
    crds.patch(&name, &PatchParams::apply("sluice-e2e").force(), &Patch::Apply(crd))
        .await
        .expect("the API server accepts the generated CRD");
    eventually("the CRD is Established", || async {
        let c = crds.get(&name).await.ok()?;
        let established = c.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
}

async fn namespace(client: &Client) -> String {
    let name = format!("sluice-e2e-{}", std::process::id());
    let ns: Api<Namespace> = Api::all(client.clone());
    let body: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match ns.create(&PostParams::default(), &body).await {
        Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 409, .. })) => {}
        Err(e) => panic!("cannot create namespace {name}: {e}"),
    }
    name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_bad_sets_naming_the_field() {
    let client = client(Some(&kubeconfig())).await.unwrap();
    install_crd(&client).await;
    let ns = namespace(&client).await;
    let sets: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<GracefulSet>(&()));
    let cases: [(&str, Value, &[&str]); 5] = [
        ("negative-replicas", json!({"replicas": -1}), &["spec.replicas", "greater than or equal to 0"]),
        (
            "both-zero",
            json!({"updateStrategy": {"type": "Rolling", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}}),
            &["spec.updateStrategy.rollingUpdate.maxSurge", "cannot both be 0"],
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
            &["spec.evacuator", "set exactly one of evacuator.sidecar or evacuator.emqx"],
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
    sets.create(&PostParams::default(), &ok).await.expect("a valid set is accepted");
    sets.delete("fine", &DeleteParams::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_creates_the_pods_and_garbage_collection_removes_them() {
    let path = kubeconfig();
    let client = client(Some(&path)).await.unwrap();
    install_crd(&client).await;
    let ns = namespace(&client).await;
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
        let l = pods.list(&ListParams::default().labels("sluice.dev/set=mqtt")).await.ok()?;
        (l.items.len() == 3).then_some(l.items)
    })
    .await;
    let set = sets.get("mqtt").await.unwrap();
    let uid = set.meta().uid.clone().unwrap();
    for p in &listed {
        let name = p.metadata.name.as_deref().unwrap();
        assert!(name.starts_with("mqtt-") && name.len() == "mqtt-".len() + 12, "{name}");
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), (uid.as_str(), Some(true)));
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.readiness_gates.as_ref().unwrap()[0].condition_type, "sluice.dev/serving");
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
    secrets.get("mqtt-sluice-admin").await.expect("the admin token Secret exists");

    // The scale subresource works: `kubectl scale gset mqtt --replicas 4`.
    sets.patch_scale("mqtt", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 4}})))
        .await
        .unwrap();
    eventually("a fourth pod", || async {
        let l = pods.list(&ListParams::default().labels("sluice.dev/set=mqtt")).await.ok()?;
        (l.items.len() == 4).then_some(())
    })
    .await;

    sets.delete("mqtt", &DeleteParams::default()).await.unwrap();
    eventually("the set is gone (finalizer removed)", || async {
        sets.get_opt("mqtt").await.ok()?.is_none().then_some(())
    })
    .await;
    eventually("garbage collection removes the pods", || async {
        let l = pods.list(&ListParams::default().labels("sluice.dev/set=mqtt")).await.ok()?;
        l.items.iter().all(|p| p.metadata.deletion_timestamp.is_some()).then_some(())
    })
    .await;
    operator.abort();
}
