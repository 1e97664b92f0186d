//! The engine's [`Status`] in Kubernetes form and back: times as RFC 3339 (the
//! engine counts from the UNIX epoch on Kubernetes), conditions with
//! `observedGeneration`. The conversion is lossless for what the engine reads back,
//! so a restarted operator resumes from the published status alone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sluice_core::engine::{self, ConditionStatus, Status};
pub use sluice_core::time::Timestamp;

use crate::crd::{self, GracefulSetStatus};

/// Kubernetes' whole-second `Time` for an engine time.
pub fn kube_time(at: Timestamp) -> Time {
    let secs = i64::try_from(at.as_millis() / 1000).unwrap_or(0);
    Time(jiff::Timestamp::from_second(secs).unwrap_or_default())
}

fn engine_time(t: &Time) -> Timestamp {
    Timestamp::from_millis(u64::try_from(t.0.as_second()).unwrap_or(0) * 1000)
}

fn status_word(s: ConditionStatus) -> &'static str {
    match s {
        ConditionStatus::True => "True",
        ConditionStatus::False => "False",
        ConditionStatus::Unknown => "Unknown",
    }
}

/// The engine's status as published, for the set at `generation`.
pub fn to_kube(s: &Status, generation: i64, selector: &str) -> GracefulSetStatus {
    GracefulSetStatus {
        observed_generation: generation,
        phase: s.phase,
        current_revision: s.current_revision.clone(),
        update_revision: s.update_revision.clone(),
        replicas: s.replicas,
        ready_replicas: s.ready_replicas,
        serving_replicas: s.serving_replicas,
        updated_replicas: s.updated_replicas,
        updated_ready_replicas: s.updated_ready_replicas,
        selector: selector.to_owned(),
        update_started_at: s.update_started_at,
        traffic_switch: s.traffic_switch.as_ref().map(|t| crd::TrafficSwitch {
            revision: t.revision.clone(),
            at: t.at,
        }),
        waiting_since: s.waiting_since,
        evacuations: s.evacuations.clone(),
        node_evacuations_status: s.node_evacuations_status.clone(),
        conditions: s
            .conditions
            .iter()
            .map(|c| crd::Condition {
                type_: c.type_.clone(),
                status: status_word(c.status).to_owned(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: kube_time(c.last_transition_time),
                observed_generation: Some(generation),
            })
            .collect(),
    }
}

/// The engine's status from the published one; `None` before the first publication.
pub fn from_kube(s: &GracefulSetStatus) -> Option<Status> {
    if s.update_revision.is_empty() {
        return None;
    }
    Some(Status {
        observed_generation: s.observed_generation,
        phase: s.phase,
        current_revision: s.current_revision.clone(),
        update_revision: s.update_revision.clone(),
        replicas: s.replicas,
        ready_replicas: s.ready_replicas,
        serving_replicas: s.serving_replicas,
        updated_replicas: s.updated_replicas,
        updated_ready_replicas: s.updated_ready_replicas,
        update_started_at: s.update_started_at,
        traffic_switch: s.traffic_switch.as_ref().map(|t| engine::TrafficSwitch {
            revision: t.revision.clone(),
            at: t.at,
        }),
        waiting_since: s.waiting_since,
        evacuations: s.evacuations.clone(),
        node_evacuations_status: s.node_evacuations_status.clone(),
        conditions: s
            .conditions
            .iter()
            .filter_map(|c| {
                let status = match c.status.as_str() {
                    "True" => ConditionStatus::True,
                    "False" => ConditionStatus::False,
                    "Unknown" => ConditionStatus::Unknown,
                    _ => return None,
                };
                // Only the engine's own conditions go back to it.
                (c.type_ == engine::AVAILABLE || c.type_ == engine::PROGRESSING).then(|| {
                    engine::Condition {
                        type_: c.type_.clone(),
                        status,
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                        last_transition_time: engine_time(&c.last_transition_time),
                    }
                })
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::engine::{Phase, TrafficSwitch};

    #[test]
    fn the_engine_reads_back_what_it_published() {
        let s = Status {
            observed_generation: 7,
            phase: Phase::WaitingInitialDelay,
            current_revision: "a".into(),
            update_revision: "b".into(),
            replicas: 6,
            ready_replicas: 6,
            serving_replicas: 3,
            updated_replicas: 3,
            updated_ready_replicas: 3,
            update_started_at: Some(Timestamp::from_millis(1_790_000_000_123)),
            traffic_switch: Some(TrafficSwitch {
                revision: "b".into(),
                at: Timestamp::from_millis(1_790_000_010_456),
            }),
            waiting_since: None,
            evacuations: vec!["a-0".into()],
            node_evacuations_status: vec![],
            conditions: vec![engine::Condition {
                type_: engine::PROGRESSING.into(),
                status: ConditionStatus::True,
                reason: "WaitingInitialDelay".into(),
                message: "m".into(),
                last_transition_time: Timestamp::from_millis(1_790_000_010_000),
            }],
        };
        let published = to_kube(&s, 7, "app=x");
        let json = serde_json::to_value(&published).unwrap();
        assert_eq!(json["updateStartedAt"], "2026-09-21T14:13:20.123Z");
        assert_eq!(
            json["conditions"][0]["lastTransitionTime"],
            "2026-09-21T14:13:30Z"
        );
        assert_eq!(json["conditions"][0]["observedGeneration"], 7);
        let back: GracefulSetStatus = serde_json::from_value(json).unwrap();
        assert_eq!(from_kube(&back), Some(s));
        assert_eq!(from_kube(&GracefulSetStatus::default()), None);
    }
}
