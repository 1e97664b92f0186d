//! The engine's published shapes: the camelCase status a CRD publishes, its JSON
//! schema, and instance naming. (EMQX's evacuation status shape is tested with the
//! other contracts, in `sluice-api`.)

use serde_json::json;
use sluice_core::engine::{Action, Instance, Observed, Phase, Spec, Status, decide, instance_name};
use sluice_core::spec::UpdateStrategy;
use sluice_core::time::Timestamp;

fn spec(replicas: i32, revision: &str) -> Spec {
    Spec {
        name: "s".into(),
        generation: 7,
        replicas,
        revision: revision.into(),
        strategy: UpdateStrategy::default(),
    }
}

#[test]
fn status_is_camel_case_with_rfc3339_times() {
    let d = decide(
        &spec(2, "abc"),
        &Observed::default(),
        Timestamp::from_millis(1_796_200_336_123),
    );
    let v = serde_json::to_value(&d.status).unwrap();
    assert_eq!(v["observedGeneration"], 7);
    assert_eq!(v["phase"], "Stable");
    assert_eq!(v["currentRevision"], "abc");
    assert_eq!(v["updateRevision"], "abc");
    assert_eq!(v["readyReplicas"], 0);
    assert_eq!(v["servingReplicas"], 0);
    assert_eq!(v["nodeEvacuationsStatus"], json!([]));
    assert_eq!(v["conditions"][0]["type"], "Available");
    assert_eq!(v["conditions"][0]["status"], "False");
    assert_eq!(v["conditions"][1]["type"], "Progressing");
    assert_eq!(
        v["conditions"][1]["lastTransitionTime"], "2026-12-02T08:32:16.123Z",
        "RFC 3339, as Kubernetes conditions"
    );
    assert_eq!(v["conditions"][2]["type"], "InstancesKnown");
    assert_eq!(v["conditions"][2]["status"], "True");
    let back: Status = serde_json::from_value(v).unwrap();
    assert_eq!(back, d.status);
    // Older or hand-written statuses with missing fields still load.
    let partial: Status = serde_json::from_value(json!({ "currentRevision": "abc" })).unwrap();
    assert_eq!(partial.phase, Phase::Stable);
}

#[test]
fn a_bad_time_is_an_error_not_a_panic() {
    let err = serde_json::from_value::<Status>(json!({ "updateStartedAt": "yesterday" }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("RFC 3339"), "{err}");
}

#[test]
fn schema_names_every_published_field() {
    let schema = serde_json::to_string(&schemars::schema_for!(Status)).unwrap();
    for field in [
        "currentRevision",
        "updateRevision",
        "servingReplicas",
        "nodeEvacuationsStatus",
        "evicting_conns",
        "lastTransitionTime",
        "trafficSwitch",
        "Aborted",
    ] {
        assert!(schema.contains(field), "schema lacks {field}: {schema}");
    }
}

#[test]
fn actions_serialize_tagged() {
    let a = Action::SetServing {
        name: "abc-0".into(),
        serving: true,
    };
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        json!({ "action": "setServing", "name": "abc-0", "serving": true })
    );
}

#[test]
fn a_fresh_fleet_is_created_under_the_lowest_free_names() {
    let observed = Observed {
        instances: vec![Instance::new(
            "s-5f3a9c01de-1",
            "5F3A9C01DE77",
            Timestamp::EPOCH,
        )],
        ..Observed::default()
    };
    let d = decide(&spec(3, "5F3A9C01DE77"), &observed, Timestamp::EPOCH);
    let created: Vec<&str> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(created, ["s-5f3a9c01de-0", "s-5f3a9c01de-2"]);
    assert_eq!(d.status.phase, Phase::Stable);
    assert_eq!(d.requeue_after, std::time::Duration::from_secs(1));
    assert_eq!(instance_name("api", "v1.2/beta", 3), "api-v1-2-beta-3");
    assert_eq!(instance_name("api", "--", 0), "api-rev-0");
    let long = "a".repeat(63);
    let name = instance_name(&long, "5f3a9c01de", 12);
    assert_eq!(name.len(), 63, "a DNS label: {name}");
    assert!(name.ends_with("-5f3a9c01de-12"), "{name}");
}

#[test]
fn two_sets_with_the_same_template_do_not_collide() {
    let (a, b) = (
        Spec {
            name: "mqtt-a".into(),
            ..spec(2, "abc")
        },
        Spec {
            name: "mqtt-b".into(),
            ..spec(2, "abc")
        },
    );
    let names = |s: &Spec| -> Vec<String> {
        decide(s, &Observed::default(), Timestamp::EPOCH)
            .actions
            .iter()
            .map(|a| a.name().to_owned())
            .collect()
    };
    assert_eq!(names(&a), ["mqtt-a-abc-0", "mqtt-a-abc-1"]);
    assert!(names(&a).iter().all(|n| !names(&b).contains(n)));
}

#[test]
fn the_engine_says_when_to_clear_an_abort_request() {
    let s = spec(1, "abc");
    let ready = |name: &str, revision: &str| Instance {
        ready: true,
        serving: true,
        ..Instance::new(name, revision, Timestamp::EPOCH)
    };
    let at_rest = Observed {
        instances: vec![ready("s-abc-0", "abc")],
        abort_requested: true,
        ..Observed::default()
    };
    let d = decide(&s, &at_rest, Timestamp::EPOCH);
    assert!(d.status.phase.at_rest());
    assert!(d.clear_abort_request, "nothing to abort: cleared");
    let mid_update = Observed {
        instances: vec![
            ready("s-old-0", "old"),
            Instance::new("s-abc-0", "abc", Timestamp::EPOCH),
        ],
        abort_requested: true,
        last_status: Some(Status {
            current_revision: "old".into(),
            update_revision: "abc".into(),
            phase: Phase::Provisioning,
            ..Status::default()
        }),
    };
    let d = decide(&s, &mid_update, Timestamp::EPOCH);
    assert_eq!(d.status.phase, Phase::Aborting);
    assert!(!d.clear_abort_request, "kept until the abort is done");
}

#[test]
fn negative_numbers_in_the_spec_do_not_panic() {
    let mut s = spec(-3, "abc");
    s.strategy.initial_delay_seconds = -1;
    s.strategy.progress_deadline_seconds = -1;
    let observed = Observed {
        instances: vec![Instance::new("old-0", "old", Timestamp::EPOCH)],
        ..Observed::default()
    };
    let d = decide(&s, &observed, Timestamp::from_millis(1000));
    assert!(
        d.actions
            .iter()
            .all(|a| !matches!(a, Action::Create { .. }))
    );
}
