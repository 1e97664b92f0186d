//! The reconciler's API calls, checked request by request in kube-rs's style: a
//! `tower_test` mock service behind a real `kube::Client`, and a verifier task that
//! asserts each call's method, URI and body and answers it.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use sluice_operator::controller::cluster::Cluster;
use sluice_operator::controller::reconcile;
use sluice_operator::crd::{GracefulSet, GracefulSetStatus};
use sluice_operator::pod;
use sluice_operator::revision::PodShape;
use support::{answer, context, mock, next, not_found};

/// A set as the API server returns it (uid, generation, namespace filled in).
fn sample_set(finalizer: bool) -> GracefulSet {
    let mut set: GracefulSet = serde_json::from_value(json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "GracefulSet",
        "metadata": {"name": "mqtt", "namespace": "default", "uid": "uid-1", "generation": 2,
                     "resourceVersion": "7"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "mqtt"}},
            "template": {
                "metadata": {"labels": {"app": "mqtt"}},
                "spec": {"containers": [{"name": "mosquitto", "image": "eclipse-mosquitto:2",
                                          "ports": [{"containerPort": 1884}]}]}
            },
            "evacuator": {"sidecar": {"image": "sluice:dev", "port": 1883, "appPort": 1884}}
        }
    }))
    .unwrap();
    if finalizer {
        set.metadata.finalizers = Some(vec!["sluice.dev/evacuate".into()]);
    }
    set
}

#[tokio::test]
async fn a_new_set_gets_the_finalizer_first() {
    let (client, mut handle) = mock();
    let set = Arc::new(sample_set(false));
    let verifier = tokio::spawn(async move {
        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/apis/sluice.dev/v1alpha1/namespaces/default/gracefulsets/mqtt?"
        );
        assert_eq!(
            body,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["sluice.dev/evacuate"]}
            ])
        );
        answer(
            send,
            StatusCode::OK,
            &serde_json::to_value(sample_set(true)).unwrap(),
        );
    });
    reconcile(set, context(client)).await.unwrap();
    verifier.await.unwrap();
}

#[tokio::test]
async fn an_invalid_spec_is_reported_by_an_event_and_a_condition() {
    let (client, mut handle) = mock();
    let mut set = sample_set(true);
    // The template does not declare the port the sidecar fronts.
    set.spec.evacuator.sidecar.as_mut().unwrap().app_port = 1999;
    let verifier = tokio::spawn(async move {
        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::POST);
        assert_eq!(uri, "/apis/events.k8s.io/v1/namespaces/default/events?");
        assert_eq!(body["reason"], "InvalidSpec");
        assert_eq!(body["type"], "Warning");
        assert_eq!(body["regarding"]["kind"], "GracefulSet");
        assert_eq!(body["regarding"]["name"], "mqtt");
        let note = body["note"].as_str().unwrap();
        assert!(
            note.starts_with(
                "spec.template.spec.containers: no container declares containerPort 1999"
            ),
            "{note}"
        );
        answer(send, StatusCode::OK, &body);

        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/apis/sluice.dev/v1alpha1/namespaces/default/gracefulsets/mqtt/status?&force=true&fieldManager=sluice-operator"
        );
        assert_eq!(body["apiVersion"], "sluice.dev/v1alpha1");
        assert_eq!(body["kind"], "GracefulSet");
        assert_eq!(body["status"]["observedGeneration"], 2);
        assert_eq!(body["status"]["selector"], "app=mqtt");
        let c = &body["status"]["conditions"][0];
        assert_eq!(
            (&c["type"], &c["status"]),
            (&json!("InvalidSpec"), &json!("True"))
        );
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("evacuator.sidecar.appPort")
        );
        answer(
            send,
            StatusCode::OK,
            &serde_json::to_value(sample_set(true)).unwrap(),
        );
    });
    reconcile(Arc::new(set), context(client)).await.unwrap();
    verifier.await.unwrap();
}

#[tokio::test]
async fn a_create_action_posts_the_pod_with_gate_sidecar_and_owner() {
    let (client, mut handle) = mock();
    let set = sample_set(true);
    let shape = PodShape::of(&set);
    let rev = shape.revision();
    let name = format!("mqtt-{rev}-0");
    let p = pod::build(
        &set,
        &shape,
        &rev,
        &name,
        &set.spec.update_strategy.evacuation_strategy,
    )
    .unwrap();
    let expected_name = name.clone();
    let verifier = tokio::spawn(async move {
        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::POST);
        assert_eq!(uri, "/api/v1/namespaces/default/pods?");
        assert_eq!(body["metadata"]["name"], json!(expected_name));
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(body["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(
            body["metadata"]["annotations"]["sluice.dev/serving"],
            "false"
        );
        assert_eq!(
            body["spec"]["readinessGates"],
            json!([{"conditionType": "sluice.dev/serving"}])
        );
        let sidecar = &body["spec"]["initContainers"][0];
        assert_eq!(sidecar["name"], "sluice-proxy");
        assert_eq!(sidecar["restartPolicy"], "Always");
        // A second create of the same name (a retried reconcile) is fine.
        answer(
            send,
            StatusCode::CONFLICT,
            &json!({"kind": "Status", "apiVersion": "v1",
            "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"}),
        );
    });
    Cluster::new(client, "default", "mqtt")
        .create_pod(&p)
        .await
        .unwrap();
    verifier.await.unwrap();
}

#[tokio::test]
async fn serving_is_a_decision_annotation_and_a_gate_condition() {
    let (client, mut handle) = mock();
    let verifier = tokio::spawn(async move {
        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/api/v1/namespaces/default/pods/mqtt-a-0?&force=true&fieldManager=sluice-operator"
        );
        assert_eq!(
            body,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "mqtt-a-0", "annotations": {"sluice.dev/serving": "true"}}})
        );
        answer(
            send,
            StatusCode::OK,
            &serde_json::to_value(Pod::default()).unwrap(),
        );

        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/api/v1/namespaces/default/pods/mqtt-a-0/status?&force=true&fieldManager=sluice-operator"
        );
        assert_eq!(
            body["status"]["conditions"],
            json!([{"type": "sluice.dev/serving", "status": "False", "reason": "NotServing",
                    "lastTransitionTime": "2026-12-02T08:00:00Z"}])
        );
        // The pod is gone meanwhile: nothing to gate.
        answer(send, StatusCode::NOT_FOUND, &not_found());
    });
    let cluster = Cluster::new(client, "default", "mqtt");
    cluster.set_serving("mqtt-a-0", true).await.unwrap();
    cluster
        .set_gate("mqtt-a-0", false, "2026-12-02T08:00:00Z")
        .await
        .unwrap();
    verifier.await.unwrap();
}

#[tokio::test]
async fn status_is_published_by_server_side_apply_with_one_field_manager() {
    let (client, mut handle) = mock();
    let status: GracefulSetStatus = serde_json::from_value(json!({
        "observedGeneration": 3, "phase": "Evacuating", "currentRevision": "a",
        "updateRevision": "b", "replicas": 6, "readyReplicas": 6, "servingReplicas": 3,
        "updatedReplicas": 3, "updatedReadyReplicas": 3, "selector": "app=mqtt",
        "nodeEvacuationsStatus": [{"node": "mqtt-a-0", "state": "evicting_conns",
            "stats": {"initial_connected": 100, "current_connected": 40,
                      "initial_sessions": 0, "current_sessions": 0},
            "connection_eviction_rate": 50, "session_eviction_rate": 50}],
        "conditions": []
    }))
    .unwrap();
    let expected = serde_json::to_value(&status).unwrap();
    let verifier = tokio::spawn(async move {
        let (method, uri, body, send) = next(&mut handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            uri,
            "/apis/sluice.dev/v1alpha1/namespaces/default/gracefulsets/mqtt/status?&force=true&fieldManager=sluice-operator"
        );
        assert_eq!(body["status"], expected);
        assert_eq!(
            body["status"]["nodeEvacuationsStatus"][0]["stats"]["current_connected"],
            40
        );
        assert_eq!(body["metadata"], json!({"name": "mqtt"}));
        answer(
            send,
            StatusCode::OK,
            &serde_json::to_value(sample_set(true)).unwrap(),
        );
    });
    Cluster::new(client, "default", "mqtt")
        .publish_status(&status)
        .await
        .unwrap();
    verifier.await.unwrap();
}

/// The whole first reconcile of a new set: revision kept, token Secret created,
/// three pods created (each told by an Event), status published.
#[tokio::test]
async fn the_first_reconcile_creates_the_set_from_scratch() {
    let (client, mut handle) = mock();
    let set = sample_set(true);
    let rev = PodShape::of(&set).revision();
    let verifier = tokio::spawn(async move {
        let mut calls = Vec::new();
        loop {
            let (method, uri, body, send) = next(&mut handle).await;
            let path = uri.split('?').next().unwrap().to_owned();
            calls.push(format!("{method} {path}"));
            let list = json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": []});
            match (method.as_str(), path.as_str()) {
                ("GET", "/apis/apps/v1/namespaces/default/controllerrevisions")
                | ("GET", "/api/v1/namespaces/default/pods") => {
                    assert!(
                        uri.contains("labelSelector=sluice.dev%2Fset%3Dmqtt"),
                        "{uri}"
                    );
                    answer(send, StatusCode::OK, &list)
                }
                ("POST", "/apis/apps/v1/namespaces/default/controllerrevisions") => {
                    assert_eq!(body["revision"], 1);
                    assert_eq!(
                        body["data"]["template"]["metadata"]["labels"]["app"],
                        "mqtt"
                    );
                    answer(send, StatusCode::CREATED, &body)
                }
                ("GET", "/api/v1/namespaces/default/secrets/mqtt-sluice-admin") => {
                    answer(send, StatusCode::NOT_FOUND, &not_found())
                }
                ("POST", "/api/v1/namespaces/default/secrets") => {
                    assert_eq!(body["stringData"]["token"].as_str().unwrap().len(), 64);
                    answer(send, StatusCode::CREATED, &body)
                }
                ("POST", "/api/v1/namespaces/default/pods") => {
                    answer(send, StatusCode::CREATED, &body)
                }
                ("POST", "/apis/events.k8s.io/v1/namespaces/default/events") => {
                    let related = body["related"]["name"].as_str().unwrap_or("-");
                    calls.push(format!(
                        "event {} {related}",
                        body["reason"].as_str().unwrap()
                    ));
                    answer(send, StatusCode::CREATED, &body)
                }
                (
                    "PATCH",
                    "/apis/sluice.dev/v1alpha1/namespaces/default/gracefulsets/mqtt/status",
                ) => {
                    assert_eq!(body["status"]["phase"], "Stable");
                    assert_eq!(body["status"]["updateRevision"], json!(rev));
                    answer(
                        send,
                        StatusCode::OK,
                        &serde_json::to_value(sample_set(true)).unwrap(),
                    );
                    return calls;
                }
                other => panic!("unexpected call {other:?}"),
            }
        }
    });
    let action = reconcile(Arc::new(set), context(client)).await.unwrap();
    let calls = verifier.await.unwrap();
    let creates: Vec<&String> = calls
        .iter()
        .filter(|c| *c == "POST /api/v1/namespaces/default/pods")
        .collect();
    assert_eq!(creates.len(), 3, "{calls:#?}");
    // One Event per pod, each naming its pod (not folded into a series).
    let mut events: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("event CreatedPod"))
        .collect();
    events.sort();
    events.dedup();
    assert_eq!(events.len(), 3, "{calls:#?}");
    // New pods start out of the endpoints without a gate patch (a missing
    // condition keeps them out), and nothing else is touched.
    assert!(
        !calls.iter().any(|c| c.starts_with("PATCH /api/v1")),
        "{calls:#?}"
    );
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(1))
    );
}
