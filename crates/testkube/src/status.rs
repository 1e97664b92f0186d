//! What the kubelet reports in a pod's status, computed from what the node knows:
//! container states, readiness, and the readiness gates' conditions written by
//! others. Pure functions, so the rules are tested without a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// One container as the node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    /// Its name.
    pub name: String,
    /// Its `image`, reported back as is (never pulled).
    pub image: String,
    /// `state`: `{"waiting": …}`, `{"running": …}` or `{"terminated": …}`.
    pub state: Value,
    /// `lastState`: the previous run's termination, or `{}`.
    pub last_state: Value,
    /// The readiness probe's verdict (false when not running).
    pub ready: bool,
    /// Whether the startup probe passed (or there is none) while running.
    pub started: bool,
    /// Restarts so far.
    pub restart_count: i32,
    /// `containerID` (`sluice://<pid>`), once it ran.
    pub container_id: Option<String>,
    /// A sidecar (init container with `restartPolicy: Always`).
    pub sidecar: bool,
}

impl ContainerView {
    /// A container that has not started yet.
    pub fn waiting(name: &str, image: &str, reason: &str, sidecar: bool) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: image.into(),
            state: json!({"waiting": {"reason": reason}}),
            last_state: json!({}),
            ready: false,
            started: false,
            restart_count: 0,
            container_id: None,
            sidecar,
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "state": self.state,
            "lastState": self.last_state,
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
        });
        if let Some(id) = &self.container_id {
            v["containerID"] = json!(id);
        }
        v
    }
}

/// The pod's phase as the node decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Not all app containers started yet.
    Pending,
    /// App containers started.
    Running,
    /// Every app container exited 0 and none will restart.
    Succeeded,
    /// A container failed and will not restart.
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// Everything the node reports for one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodView {
    /// The phase.
    pub phase: Phase,
    /// The pod IP.
    pub pod_ip: String,
    /// The node's IP.
    pub host_ip: String,
    /// When the node took the pod on (RFC 3339).
    pub start_time: String,
    /// Regular init containers done, sidecars started.
    pub initialized: bool,
    /// Init containers (sidecars included) in spec order.
    pub init: Vec<ContainerView>,
    /// App containers in spec order.
    pub app: Vec<ContainerView>,
    /// Why the pod cannot run, if it cannot (e.g. a config error).
    pub message: Option<String>,
}

/// `ContainersReady`: every app container and every sidecar is ready.
pub fn containers_ready(view: &PodView) -> bool {
    matches!(view.phase, Phase::Running)
        && view.app.iter().all(|c| c.ready)
        && view.init.iter().filter(|c| c.sidecar).all(|c| c.ready)
}

/// The readiness gates whose condition is not `True` in `pod`'s status.
pub fn unmet_gates(pod: &Pod) -> Vec<String> {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .into_iter()
        .flatten()
        .filter(|g| {
            !conditions
                .into_iter()
                .flatten()
                .any(|c| c.type_ == g.condition_type && c.status == "True")
        })
        .map(|g| g.condition_type.clone())
        .collect()
}

/// Remembers when each condition last changed, so `lastTransitionTime` only
/// moves on a change, as the kubelet reports it.
#[derive(Debug, Default)]
pub struct Transitions(BTreeMap<&'static str, (bool, String)>);

impl Transitions {
    fn condition(
        &mut self,
        kind: &'static str,
        status: bool,
        now: &str,
        reason: Option<Reason>,
    ) -> Value {
        let entry = self
            .0
            .entry(kind)
            .or_insert_with(|| (status, now.to_string()));
        if entry.0 != status {
            *entry = (status, now.to_string());
        }
        let mut c = json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": entry.1,
        });
        if let Some(reason) = reason.filter(|_| !status) {
            c["reason"] = json!(reason.0);
            c["message"] = json!(reason.1);
        }
        c
    }
}

/// `(reason, message)` of a False condition.
type Reason = (String, String);

/// The `status` the node patches onto the pod (a strategic merge: conditions
/// merge by type, so readiness gates set by others stay).
pub fn status_patch(view: &PodView, pod: &Pod, times: &mut Transitions, now: &str) -> Value {
    let ready_containers = containers_ready(view);
    let not_ready: Vec<&str> = view
        .app
        .iter()
        .chain(view.init.iter().filter(|c| c.sidecar))
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let containers_reason = (!not_ready.is_empty()).then(|| {
        (
            "ContainersNotReady".to_string(),
            format!("containers with unready status: [{}]", not_ready.join(" ")),
        )
    });
    let gates = unmet_gates(pod);
    let ready_reason = if !ready_containers {
        containers_reason.clone()
    } else {
        Some((
            "ReadinessGatesNotReady".to_string(),
            format!(
                "corresponding condition of pod readiness gate {:?} does not exist or is not True",
                gates.join(", ")
            ),
        ))
    };
    let terminal = matches!(view.phase, Phase::Succeeded | Phase::Failed);
    let conditions = vec![
        times.condition("PodScheduled", true, now, None),
        times.condition("PodReadyToStartContainers", !terminal, now, None),
        times.condition("Initialized", view.initialized, now, None),
        times.condition("ContainersReady", ready_containers, now, containers_reason),
        times.condition(
            "Ready",
            ready_containers && gates.is_empty(),
            now,
            ready_reason,
        ),
    ];
    let mut status = json!({
        "phase": view.phase.as_str(),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "podIP": view.pod_ip,
        "podIPs": [{"ip": view.pod_ip}],
        "startTime": view.start_time,
        "qosClass": "BestEffort",
        "conditions": conditions,
        "containerStatuses": view.app.iter().map(ContainerView::to_json).collect::<Vec<_>>(),
    });
    if !view.init.is_empty() {
        status["initContainerStatuses"] = json!(
            view.init
                .iter()
                .map(ContainerView::to_json)
                .collect::<Vec<_>>()
        );
    }
    if let Some(m) = &view.message {
        status["message"] = json!(m);
    }
    json!({ "status": status })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(name: &str, ready: bool, sidecar: bool) -> ContainerView {
        ContainerView {
            state: json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
            ready,
            started: true,
            ..ContainerView::waiting(name, "img", "", sidecar)
        }
    }

    fn view(app_ready: bool, sidecar_ready: bool) -> PodView {
        PodView {
            phase: Phase::Running,
            pod_ip: "10.244.0.2".into(),
            host_ip: "10.244.0.1".into(),
            start_time: "2026-01-01T00:00:00Z".into(),
            initialized: true,
            init: vec![
                running("proxy", sidecar_ready, true),
                ContainerView {
                    state: json!({"terminated": {"exitCode": 0}}),
                    ..ContainerView::waiting("setup", "img", "", false)
                },
            ],
            app: vec![running("app", app_ready, false)],
            message: None,
        }
    }

    fn pod(gate_status: Option<&str>) -> Pod {
        let mut conditions = vec![];
        if let Some(s) = gate_status {
            conditions.push(json!({"type": "sluice.dev/serving", "status": s}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "readinessGates": [{"conditionType": "sluice.dev/serving"}]},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn cond(patch: &Value, kind: &str) -> String {
        patch["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn ready_needs_containers_sidecars_and_gates() {
        let mut t = Transitions::default();
        for (app, sidecar, gate, containers, ready) in [
            (true, true, Some("True"), "True", "True"),
            (true, true, None, "True", "False"),
            (true, true, Some("False"), "True", "False"),
            (false, true, Some("True"), "False", "False"),
            (true, false, Some("True"), "False", "False"),
        ] {
            let p = status_patch(&view(app, sidecar), &pod(gate), &mut t, "now");
            assert_eq!(
                cond(&p, "ContainersReady"),
                containers,
                "{app} {sidecar} {gate:?}"
            );
            assert_eq!(cond(&p, "Ready"), ready, "{app} {sidecar} {gate:?}");
        }
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let mut t = Transitions::default();
        let at = |p: &Value| {
            p["status"]["conditions"][4]["lastTransitionTime"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let p1 = status_patch(&view(false, true), &pod(Some("True")), &mut t, "t1");
        let p2 = status_patch(&view(false, true), &pod(Some("True")), &mut t, "t2");
        let p3 = status_patch(&view(true, true), &pod(Some("True")), &mut t, "t3");
        assert_eq!(
            (at(&p1), at(&p2), at(&p3)),
            ("t1".into(), "t1".into(), "t3".into())
        );
    }
}
