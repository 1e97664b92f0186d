//! The control API of `sluice up` (see `docs/up.md`): what `sluice apply|status|
//! abort`, `sluice demo` and the tests read and write.

use serde::{Deserialize, Serialize};
use sluice_core::engine::{NodeEvacuationStatus, Status};

/// The endpoints.
pub mod path {
    /// `GET`: the fleet's [`super::UpStatus`].
    pub const STATUS: &str = "/status";
    /// `PUT`: a new fleet file (YAML body); answers [`super::Applied`].
    pub const SPEC: &str = "/spec";
    /// `POST`: abort the upgrade in progress; answers [`super::Aborting`].
    pub const ABORT: &str = "/abort";
    /// `GET`: Prometheus text (see [`crate::metrics`]).
    pub const METRICS: &str = "/metrics";
    /// `GET`: liveness.
    pub const HEALTHZ: &str = "/healthz";
}

/// `GET /status`: the engine's status as last published (phase, revisions,
/// counts, conditions…, flattened in), plus the fleet and every instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpStatus {
    /// The engine's status.
    #[serde(flatten)]
    pub status: Status,
    /// The fleet's name.
    pub fleet: String,
    /// The front address.
    pub listen: String,
    /// An abort was asked for and the engine has not finished it yet.
    pub abort_requested: bool,
    /// Where instance logs and sockets are.
    pub run_dir: String,
    /// Every instance, failed ones included.
    pub instances: Vec<InstanceView>,
}

impl UpStatus {
    /// The instance called `name`.
    pub fn instance(&self, name: &str) -> Option<&InstanceView> {
        self.instances.iter().find(|i| i.name == name)
    }

    /// Connections over all instances; `None` when some instance's count is
    /// unknown.
    pub fn total_connections(&self) -> Option<u64> {
        self.instances.iter().map(|i| i.connections).sum()
    }
}

/// One instance in [`UpStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// Its name (the `upstream` label in the metrics).
    pub name: String,
    /// The revision it runs.
    pub revision: String,
    /// The app's process id, once started.
    pub app_pid: Option<u32>,
    /// Its evacuator's (`sluice proxy`) process id, once started.
    pub evacuator_pid: Option<u32>,
    /// The port the app listens on.
    pub port: u16,
    /// The evacuator's admin API address.
    pub admin_addr: String,
    /// Passes its readiness probe (and its evacuator answers).
    pub ready: bool,
    /// Receives new connections.
    pub serving: bool,
    /// A process exited by itself (or never started).
    pub failed: bool,
    /// Why it failed.
    pub failure: Option<String>,
    /// Connections it holds; `null` when its evacuator could not be read (see
    /// `unknown`), which is never read as 0.
    pub connections: Option<u64>,
    /// Persistent sessions it holds; `null` when unknown.
    pub sessions: Option<u64>,
    /// Its evacuator's report while an evacuation runs.
    pub evacuation: Option<NodeEvacuationStatus>,
    /// Why its evacuator could not be read at the last observation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// `PUT /spec`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The spec's revision now.
    pub revision: String,
    /// The spec differs from the one running.
    pub changed: bool,
    /// The change makes a new revision: an upgrade starts.
    pub upgrade: bool,
}

/// `POST /abort`'s answer (202).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Aborting {
    /// Always true.
    pub aborting: bool,
}

/// Every error answer of the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    /// What is wrong and how to fix it.
    pub error: String,
    /// The fleet file field to blame, when one is.
    pub field: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_status_is_flat_camel_case_and_unknown_is_null() {
        let s = UpStatus {
            status: Status::default(),
            fleet: "f".into(),
            listen: "127.0.0.1:1".into(),
            abort_requested: false,
            run_dir: "/tmp".into(),
            instances: vec![InstanceView {
                name: "f-a-0".into(),
                revision: "a".into(),
                app_pid: Some(1),
                evacuator_pid: None,
                port: 2,
                admin_addr: "127.0.0.1:3".into(),
                ready: false,
                serving: false,
                failed: false,
                failure: None,
                connections: None,
                sessions: Some(0),
                evacuation: None,
                unknown: Some("GET /evacuation answered 500".into()),
            }],
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["phase"], "Stable");
        assert_eq!(v["abortRequested"], false);
        assert_eq!(v["instances"][0]["connections"], json!(null));
        assert_eq!(v["instances"][0]["adminAddr"], "127.0.0.1:3");
        let back: UpStatus = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.total_connections(), None);
    }
}
