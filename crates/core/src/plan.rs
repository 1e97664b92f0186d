//! Estimates made before anyone upgrades: how long a blue-green evacuation takes,
//! and how long a pod must wait and may take to stop gracefully.
//!
//! The rolling sequence lives in [`crate::rolling::steps`].

use serde::Serialize;

use crate::engine::EvacuationState;
use crate::spec::{EvacuationStrategy, InvalidField, check_range};

/// One phase of one old instance's evacuation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// The evacuation state this phase spends its time in (EMQX's names).
    pub state: &'static str,
    /// Seconds spent in it.
    pub seconds: f64,
}

/// The evacuation of one old (blue) instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    /// 1-based position in the evacuation order.
    pub node: u32,
    /// Connections it holds when its evacuation starts.
    pub connections: u64,
    /// Persistent sessions it holds when its evacuation starts.
    pub sessions: u64,
    /// Its phases in order.
    pub phases: Vec<Phase>,
    /// Sum of its phases.
    pub seconds: f64,
}

/// The time line of a whole blue-green upgrade's evacuation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlueGreenPlan {
    /// Seconds waited after the green set serves, before the first evacuation.
    pub initial_delay_seconds: f64,
    /// One entry per blue instance, evacuated one after the other.
    pub nodes: Vec<NodePlan>,
    /// `initialDelaySeconds` plus every node's seconds.
    pub total_seconds: f64,
}

/// Plans a blue-green evacuation of `replicas` instances holding `connections` and
/// `sessions` in total, spread evenly (the first instances take the remainder, as
/// the most-connected go first).
pub fn blue_green(
    replicas: i32,
    connections: u64,
    sessions: u64,
    initial_delay_seconds: i32,
    evacuation: &EvacuationStrategy,
) -> Result<BlueGreenPlan, InvalidField> {
    check_range("replicas", replicas.into(), 1, 100_000)?;
    check_range(
        "initialDelaySeconds",
        initial_delay_seconds.into(),
        0,
        crate::spec::MAX_SECONDS.into(),
    )?;
    evacuation.validate()?;
    let n = u64::try_from(replicas).unwrap_or(1);
    let share = |total: u64, i: u64| total / n + u64::from(i < total % n);
    let nodes: Vec<NodePlan> = (0..n)
        .map(|i| {
            let (c, s) = (share(connections, i), share(sessions, i));
            let phases = vec![
                Phase {
                    state: EvacuationState::WaitingHealthCheck.as_str(),
                    seconds: f64::from(evacuation.wait_health_check),
                },
                Phase {
                    state: EvacuationState::EvictingConns.as_str(),
                    seconds: c as f64 / f64::from(evacuation.conn_evict_rate),
                },
                Phase {
                    state: EvacuationState::WaitingTakeover.as_str(),
                    seconds: f64::from(evacuation.wait_takeover),
                },
                Phase {
                    state: EvacuationState::EvictingSessions.as_str(),
                    seconds: s as f64 / f64::from(evacuation.sess_evict_rate),
                },
            ];
            NodePlan {
                node: u32::try_from(i + 1).unwrap_or(u32::MAX),
                connections: c,
                sessions: s,
                seconds: phases.iter().map(|p| p.seconds).sum(),
                phases,
            }
        })
        .collect();
    let initial = f64::from(initial_delay_seconds);
    Ok(BlueGreenPlan {
        initial_delay_seconds: initial,
        total_seconds: initial + nodes.iter().map(|n| n.seconds).sum::<f64>(),
        nodes,
    })
}

/// What a pod needs to stop without cutting anyone.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainPlan {
    /// The propagation delays that were added up, in seconds.
    pub propagation_seconds: Vec<u32>,
    /// How long the preStop hook must wait before the process is signalled: until
    /// every cache between clients and the pod has forgotten it.
    pub pre_stop_seconds: u32,
    /// preStop wait plus the longest request's time: the grace period to set.
    pub termination_grace_period_seconds: u32,
}

/// Plans a drain: endpoints are forgotten through a chain of caches, each taking
/// up to its propagation delay (the Eureka/Ribbon example: 30 + 30 + 30 s), and the
/// last request admitted must still finish (`request_seconds`).
pub fn drain(propagation_seconds: &[u32], request_seconds: u32) -> Result<DrainPlan, InvalidField> {
    if propagation_seconds.is_empty() {
        return Err(InvalidField::new(
            "propagation",
            "give at least one delay in seconds, e.g. 30,30,30",
        ));
    }
    let pre_stop: u64 = propagation_seconds.iter().map(|s| u64::from(*s)).sum();
    let grace = pre_stop + u64::from(request_seconds);
    let too_long =
        |_| InvalidField::new("propagation", "the delays add up to more than u32 seconds");
    Ok(DrainPlan {
        propagation_seconds: propagation_seconds.to_vec(),
        pre_stop_seconds: u32::try_from(pre_stop).map_err(too_long)?,
        termination_grace_period_seconds: u32::try_from(grace).map_err(too_long)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blue_green_adds_up_each_node() {
        let evac = EvacuationStrategy {
            conn_evict_rate: 100,
            sess_evict_rate: 50,
            wait_takeover: 5,
            wait_health_check: 2,
        };
        let p = blue_green(3, 3001, 300, 10, &evac).unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(p.nodes[0].connections, 1001);
        assert_eq!(p.nodes[1].connections, 1000);
        // 2 + 1001/100 + 5 + 100/50
        assert!((p.nodes[0].seconds - 19.01).abs() < 1e-9);
        assert!((p.nodes[1].seconds - 19.0).abs() < 1e-9);
        assert!((p.total_seconds - (10.0 + 19.01 + 19.0 + 19.0)).abs() < 1e-9);
    }

    #[test]
    fn blue_green_rejects_bad_rates() {
        let evac = EvacuationStrategy {
            conn_evict_rate: -5,
            ..EvacuationStrategy::default()
        };
        let e = blue_green(3, 10, 0, 10, &evac).unwrap_err();
        assert_eq!(e.field, "connEvictRate");
    }

    #[test]
    fn eureka_ribbon_drain_is_95_seconds() {
        let d = drain(&[30, 30, 30], 5).unwrap();
        assert_eq!(d.pre_stop_seconds, 90);
        assert_eq!(d.termination_grace_period_seconds, 95);
        assert!(drain(&[], 5).is_err());
    }
}
