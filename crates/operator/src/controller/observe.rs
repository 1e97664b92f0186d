//! What the operator sees of a set's pods, and the engine's instances made from it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use sluice_core::engine::{Instance, Load};
use sluice_core::time::Timestamp;

use crate::evacuator::{DriverError, Report, Target};
use crate::pod::{SERVING_GATE, SIDECAR_NAME, serving_decision};
use crate::revision::REVISION_LABEL;

/// One pod of the set, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its revision label.
    pub revision: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// All containers ready (the `ContainersReady` condition: readiness without
    /// the serving gate).
    pub ready: bool,
    /// The engine's serving decision (the pod's annotation).
    pub serving: bool,
    /// The serving gate condition as set on the pod (`None`: not yet set).
    pub gate: Option<bool>,
    /// The pod's `Ready` condition (containers ready and every readiness gate
    /// `True`): it is among the Service's ready endpoints, or about to be.
    pub in_endpoints: bool,
    /// When the `Ready` condition last turned `True` (its `lastTransitionTime`,
    /// whole seconds), while it is `True`.
    pub ready_since: Option<Timestamp>,
    /// Deleted (a `deletionTimestamp`): draining, will never serve again.
    pub terminating: bool,
    /// Its phase is `Failed` or `Succeeded`, or it is terminating.
    pub failed: bool,
    /// The pod IP, once it has one.
    pub ip: Option<IpAddr>,
    /// Something in the pod can hold connections: for the sidecar, its container
    /// runs; without a sidecar, the pod runs.
    pub may_hold_connections: bool,
}

impl PodView {
    /// The pod as seen, or `None` if it is not one of the set's pods by name.
    pub fn of(set: &str, pod: &Pod, sidecar: bool) -> Option<PodView> {
        let meta = &pod.metadata;
        // The engine names instances `{set}-{revision}-{n}`: the pod's name.
        let name = meta
            .name
            .clone()
            .filter(|n| n.starts_with(&format!("{set}-")))?;
        let status = pod.status.clone().unwrap_or_default();
        let find = |type_: &str| {
            status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == type_)
        };
        let condition = |type_: &str| find(type_).map(|c| c.status == "True");
        let ready_since = find("Ready")
            .filter(|c| c.status == "True")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| Timestamp::from_millis(u64::try_from(t.0.as_millisecond()).unwrap_or(0)));
        let phase = status.phase.as_deref().unwrap_or("Pending");
        let terminating = meta.deletion_timestamp.is_some();
        let running = |c: &str, list: Option<&Vec<_>>| {
            list.into_iter()
                .flatten()
                .any(|s: &k8s_openapi::api::core::v1::ContainerStatus| {
                    s.name == c && s.state.as_ref().is_some_and(|st| st.running.is_some())
                })
        };
        let may_hold_connections = if sidecar {
            running(SIDECAR_NAME, status.init_container_statuses.as_ref())
        } else {
            phase == "Running"
        };
        Some(PodView {
            name,
            namespace: meta.namespace.clone().unwrap_or_default(),
            revision: meta
                .labels
                .as_ref()
                .and_then(|l| l.get(REVISION_LABEL).cloned())
                .unwrap_or_default(),
            created_at: meta
                .creation_timestamp
                .as_ref()
                .map(|t| Timestamp::from_millis(u64::try_from(t.0.as_millisecond()).unwrap_or(0)))
                .unwrap_or(Timestamp::EPOCH),
            ready: condition("ContainersReady").unwrap_or(false),
            serving: serving_decision(meta.annotations.as_ref()),
            gate: condition(SERVING_GATE),
            in_endpoints: condition("Ready").unwrap_or(false),
            ready_since,
            terminating,
            failed: terminating || matches!(phase, "Failed" | "Succeeded"),
            ip: status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()),
            may_hold_connections,
        })
    }

    /// The evacuator target, once the pod has an IP.
    pub fn target(&self) -> Option<Target> {
        Some(Target {
            pod: self.name.clone(),
            namespace: self.namespace.clone(),
            ip: self.ip?,
        })
    }

    /// Whether its evacuator must be asked: something may hold connections and
    /// can be reached.
    pub fn needs_report(&self) -> bool {
        self.may_hold_connections && self.ip.is_some()
    }

    /// The engine's instance, with the evacuator's report (`None` when none was
    /// needed: nothing in the pod can hold a connection). A failed call is
    /// unknown load, never read as empty.
    pub fn instance(&self, report: Option<&Result<Report, DriverError>>) -> Instance {
        let mut i = Instance::new(&self.name, &self.revision, self.created_at);
        i.ready = self.ready && !self.failed;
        i.serving = self.serving;
        i.failed = self.failed;
        i.load = match report {
            None => Load::EMPTY,
            Some(Ok(r)) => Load::Known {
                connections: r.connections,
                sessions: r.sessions,
                evacuation: r.evacuation.clone(),
            },
            Some(Err(e)) => Load::Unknown {
                reason: e.to_string(),
            },
        };
        i
    }
}

/// How long a pod's `Ready` must have held before it counts as in the
/// Service's endpoints: the EndpointSlice controller publishes it a moment after
/// the kubelet's condition (0.7 s measured on the test control plane, where
/// narrowing on the condition alone left 2 of 3 ready endpoints), and
/// `lastTransitionTime` has whole seconds.
pub const ENDPOINT_PROPAGATION: Duration = Duration::from_secs(3);

/// While a BlueGreen switch waits for its new pods to reach the endpoints: how
/// long until every serving, ready pod of `target` has been `Ready` for
/// [`ENDPOINT_PROPAGATION`] (zero while one is not `Ready` yet: its condition
/// changing wakes the controller). `None` once they all have. A `Ready` without
/// a transition time counts as settled (the kubelet always writes one).
pub fn switch_settling(pods: &[PodView], target: &str, now: Timestamp) -> Option<Duration> {
    pods.iter()
        .filter(|p| p.revision == target && p.serving && p.ready && !p.failed)
        .filter_map(|p| match (p.in_endpoints, p.ready_since) {
            (false, _) => Some(Duration::ZERO),
            (true, Some(t)) if now < t + ENDPOINT_PROPAGATION => {
                Some((t + ENDPOINT_PROPAGATION).since(now))
            }
            (true, _) => None,
        })
        .max()
}

/// Where new connections may go. A Kubernetes Service picks among ready
/// endpoints at random, so "instances of the target revision first" (the
/// engine's routing promise, which keeps a moved client from landing on another
/// old instance and moving twice) becomes "only the target revision's, once
/// they serve": an old pod the engine keeps serving gets its gate `False` once
/// **every** serving, ready pod of the target revision is `Ready` (its own gate
/// has taken effect, so it is in the endpoints). Narrowing earlier left the
/// Service with fewer endpoints than serving pods (none at all, for a moment,
/// when the first new pod's readiness had not reached the EndpointSlice yet).
/// Once narrowed, an old pod is not given its gate back while a target pod is
/// in the endpoints (a later target pod coming up does not reopen the old ones).
/// An old pod keeps its connections (a gate only takes a pod out of the
/// endpoints); only new connections are narrowed to the target revision.
/// Before any target pod is in the endpoints, the engine's decisions apply as
/// they are.
///
/// With `hold_old` (a BlueGreen switch whose new pods are still reaching the
/// endpoints, [`switch_settling`]), an old pod the engine stopped serving keeps
/// its gate: the EndpointSlice controller publishes a pod's readiness a moment
/// after the pod's condition, and dropping the old pods at once left the Service
/// 2 of 3 ready endpoints for 0.7 s. The evacuation that follows waits
/// `initialDelaySeconds`, which must cover this (docs/kubernetes.md). Rolling
/// and aborts start evacuating at once, so there nothing is held (a held gate
/// sent moved clients to an old pod again).
pub fn gates(pods: &[PodView], target: &str, hold_old: bool) -> BTreeMap<String, bool> {
    let serving_target = || {
        pods.iter()
            .filter(|p| p.revision == target && p.serving && p.ready && !p.failed)
    };
    let target_in = serving_target().any(|p| p.in_endpoints);
    let target_pending = serving_target().any(|p| !p.in_endpoints);
    pods.iter()
        .map(|p| {
            let open = !target_in || (target_pending && p.gate == Some(true));
            let held = hold_old && !p.serving && p.revision != target && p.gate == Some(true);
            let gate = !p.failed && ((p.serving && (p.revision == target || open)) || held);
            (p.name.clone(), gate)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, revision: &str, ready: bool, serving: bool) -> PodView {
        PodView {
            name: name.into(),
            namespace: "default".into(),
            revision: revision.into(),
            created_at: Timestamp::EPOCH,
            ready,
            serving,
            gate: None,
            in_endpoints: false,
            ready_since: None,
            terminating: false,
            failed: false,
            ip: None,
            may_hold_connections: true,
        }
    }

    #[test]
    fn once_the_target_pods_are_in_the_endpoints_only_they_take_new_connections() {
        let mut pods = vec![
            view("old-0", "a", true, true),
            view("old-1", "a", true, true),
            view("new-0", "b", false, false),
            view("new-1", "b", false, false),
        ];
        for p in &mut pods[..2] {
            p.gate = Some(true);
            p.in_endpoints = true;
        }
        let g = |pods: &[PodView], target| {
            let g = gates(pods, target, false);
            [g["old-0"], g["old-1"], g["new-0"], g["new-1"]]
        };
        // The new pods are not ready: the old ones keep serving.
        assert_eq!(g(&pods, "b"), [true, true, false, false]);
        // Ready and serving: they get the gate, the old ones keep theirs until
        // every one of them is in the endpoints (else the Service would have
        // fewer endpoints than serving pods for a while).
        for p in &mut pods[2..] {
            p.ready = true;
            p.serving = true;
        }
        assert_eq!(g(&pods, "b"), [true, true, true, true]);
        pods[2].in_endpoints = true;
        assert_eq!(g(&pods, "b"), [true, true, true, true]);
        pods[3].in_endpoints = true;
        assert_eq!(g(&pods, "b"), [false, false, true, true]);
        // Narrowed, the old pods stay out while a later target pod comes up.
        pods[0].gate = Some(false);
        pods[1].gate = Some(false);
        pods.push(view("new-2", "b", true, true));
        let all = gates(&pods, "b", false);
        assert_eq!(
            (all["old-0"], all["old-1"], all["new-2"]),
            (false, false, true)
        );
        pods.pop();
        // Aborting back to "a" (whose pods left the endpoints): every serving
        // pod takes connections until all of "a" are back in them, then only "a".
        pods[0].in_endpoints = false;
        pods[1].in_endpoints = false;
        assert_eq!(g(&pods, "a"), [true, true, true, true]);
        pods[0].in_endpoints = true;
        for p in &mut pods[2..] {
            p.gate = Some(true);
        }
        assert_eq!(g(&pods, "a"), [true, true, true, true]);
        pods[1].in_endpoints = true;
        assert_eq!(g(&pods, "a"), [true, true, false, false]);
        // A pod the engine took out of serving never gets the gate.
        pods[0].serving = false;
        assert!(!gates(&pods, "a", false)["old-0"]);
    }

    #[test]
    fn a_switch_settles_once_every_new_pod_was_ready_for_the_propagation() {
        let mut pods = vec![
            view("new-0", "b", true, true),
            view("new-1", "b", true, true),
        ];
        let at = Timestamp::from_millis(100_000);
        assert_eq!(
            switch_settling(&pods, "b", at),
            Some(Duration::ZERO),
            "not Ready yet"
        );
        for p in &mut pods {
            p.in_endpoints = true;
            p.ready_since = Some(at);
        }
        pods[1].ready_since = Some(at + Duration::from_secs(1));
        let now = at + ENDPOINT_PROPAGATION;
        assert_eq!(
            switch_settling(&pods, "b", now),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            switch_settling(&pods, "b", now + Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn held_old_pods_keep_their_gates_until_released() {
        let mut pods = vec![
            view("old-0", "a", true, false),
            view("new-0", "b", true, true),
        ];
        pods[0].gate = Some(true);
        pods[1].in_endpoints = true;
        assert!(gates(&pods, "b", true)["old-0"]);
        assert!(!gates(&pods, "b", false)["old-0"]);
        // One already out never comes back.
        pods[0].gate = Some(false);
        assert!(!gates(&pods, "b", true)["old-0"]);
    }
}
