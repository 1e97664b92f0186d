//! The engine's published shapes: EMQX's evacuation status, the camelCase status a
//! CRD publishes, its JSON schema, and instance naming.

use std::time::Duration;

use serde_json::json;
use sluice_core::engine::{
    Action, EvacuationState, Instance, NodeEvacuationStatus, Observed, Phase, Spec, Status, decide,
    instance_name,
};
use sluice_core::spec::UpdateStrategy;

fn spec(replicas: i32, revision: &str) -> Spec {
    Spec {
        replicas,
        revision: revision.into(),
        strategy: UpdateStrategy::default(),
    }
}

#[test]
fn parses_the_emqx_operators_node_evacuation_status() {
    // From the EMQX Operator documentation (`.status.nodeEvacuationsStatus[0]`).
    let emqx = json!({
        "connection_eviction_rate": 200,
        "node": "emqx-ee@emqx-ee-54fc496fb4-2.emqx-ee-headless.default.svc.cluster.local",
        "session_eviction_rate": 200,
        "session_goal": 0,
        "connection_goal": 22,
        "session_recipients": ["emqx-ee@emqx-ee-5d87d4c6bd-2.emqx-ee-headless.default.svc.cluster.local"],
        "state": "waiting_takeover",
        "stats": { "current_connected": 0, "current_sessions": 0, "initial_connected": 33, "initial_sessions": 0 }
    });
    let s: NodeEvacuationStatus = serde_json::from_value(emqx.clone()).unwrap();
    assert_eq!(s.state, EvacuationState::WaitingTakeover);
    assert_eq!(s.stats.initial_connected, 33);
    assert_eq!(s.connection_goal, Some(22));
    assert_eq!(serde_json::to_value(&s).unwrap(), emqx);
    for (state, name) in [
        (EvacuationState::WaitingHealthCheck, "waiting_health_check"),
        (EvacuationState::EvictingConns, "evicting_conns"),
        (EvacuationState::EvictingSessions, "evicting_sessions"),
        (EvacuationState::Prohibiting, "prohibiting"),
        (EvacuationState::Disabled, "disabled"),
    ] {
        assert_eq!(serde_json::to_value(state).unwrap(), name);
    }
}

#[test]
fn status_is_camel_case_with_times_in_seconds() {
    let d = decide(
        &spec(2, "abc"),
        &Observed::default(),
        Duration::from_millis(12_345),
    );
    let v = serde_json::to_value(&d.status).unwrap();
    assert_eq!(v["phase"], "Stable");
    assert_eq!(v["currentRevision"], "abc");
    assert_eq!(v["updateRevision"], "abc");
    assert_eq!(v["readyReplicas"], 0);
    assert_eq!(v["servingReplicas"], 0);
    assert_eq!(v["nodeEvacuationsStatus"], json!([]));
    assert_eq!(v["conditions"][0]["type"], "Available");
    assert_eq!(v["conditions"][0]["status"], "False");
    assert_eq!(v["conditions"][1]["type"], "Progressing");
    assert_eq!(v["conditions"][1]["lastTransitionTime"], 12.345);
    let back: Status = serde_json::from_value(v).unwrap();
    assert_eq!(back, d.status);
    // Older or hand-written statuses with missing fields still load.
    let partial: Status = serde_json::from_value(json!({ "currentRevision": "abc" })).unwrap();
    assert_eq!(partial.phase, Phase::Stable);
}

#[test]
fn a_bad_time_is_an_error_not_a_panic() {
    let err = serde_json::from_value::<Status>(json!({ "updateStartedAt": -1 }))
        .unwrap_err()
        .to_string();
    assert!(err.contains("time in seconds"), "{err}");
}

#[test]
fn schema_names_every_published_field() {
    let schema = serde_json::to_string(&schemars::schema_for!(Status)).unwrap();
    for field in [
        "currentRevision",
        "updateRevision",
        "servingReplicas",
        "nodeEvacuationsStatus",
        "connection_eviction_rate",
        "initial_connected",
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
            "5f3a9c01de-1",
            "5F3A9C01DE77",
            Duration::ZERO,
        )],
        ..Observed::default()
    };
    let d = decide(&spec(3, "5F3A9C01DE77"), &observed, Duration::ZERO);
    let created: Vec<&str> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Create { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(created, ["5f3a9c01de-0", "5f3a9c01de-2"]);
    assert_eq!(d.status.phase, Phase::Stable);
    assert_eq!(d.requeue_after, Duration::from_secs(1));
    assert_eq!(instance_name("v1.2/beta", 3), "v1-2-beta-3");
    assert_eq!(instance_name("--", 0), "rev-0");
}

#[test]
fn negative_numbers_in_the_spec_do_not_panic() {
    let mut s = spec(-3, "abc");
    s.strategy.initial_delay_seconds = -1;
    s.strategy.progress_deadline_seconds = -1;
    let observed = Observed {
        instances: vec![Instance::new("old-0", "old", Duration::ZERO)],
        ..Observed::default()
    };
    let d = decide(&s, &observed, Duration::from_secs(1));
    assert!(
        d.actions
            .iter()
            .all(|a| !matches!(a, Action::Create { .. }))
    );
}
