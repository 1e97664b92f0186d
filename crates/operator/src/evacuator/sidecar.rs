//! The driver for the injected `sluice proxy` sidecar: the contract's
//! [`ProxyEvacuator`] (`sluice_api::evacuator::Evacuator`) on each pod's admin API
//! (`docs/admin-api.md`), behind the set's bearer token. No HTTP of its own.

use std::net::SocketAddr;

use sluice_api::admin::EvacuationRequest;
use sluice_api::evacuator::{Evacuator as _, EvacuatorError};
use sluice_core::engine::{EvacuationState, NodeEvacuationStatus};
use sluice_core::spec::EvacuationStrategy;
use sluice_http::evacuator::ProxyEvacuator;

use super::{CALL_TIMEOUT, DriverError, Evacuator, Report, Target};

/// Drives the sidecars of one set.
#[derive(Debug, Clone)]
pub struct SidecarDriver {
    /// The sidecars' admin port.
    pub admin_port: u16,
    /// The bearer token (from the set's token Secret).
    pub token: String,
}

impl SidecarDriver {
    /// The contract's evacuator for the sidecar of `target`.
    fn at(&self, target: &Target) -> ProxyEvacuator {
        ProxyEvacuator::new(SocketAddr::new(target.ip, self.admin_port), CALL_TIMEOUT)
            .token(&self.token)
    }
}

impl Evacuator for SidecarDriver {
    async fn report(&self, target: &Target) -> Result<Report, DriverError> {
        let status = self
            .at(target)
            .report()
            .await
            .map_err(|e| driver_error(target, e))?;
        Ok(report(&target.pod, status))
    }

    async fn start(
        &self,
        target: &Target,
        evacuation: &EvacuationStrategy,
        migrate_to: &[Target],
    ) -> Result<(), DriverError> {
        // The sidecar records the recipients in its status (clients reconnect
        // through the Service, whose endpoints the gates narrow to them).
        let to = migrate_to.iter().map(|t| t.pod.clone()).collect();
        self.at(target)
            .start_evacuation(&EvacuationRequest::new(evacuation, to))
            .await
            .map_err(|e| driver_error(target, e))
    }

    async fn stop(&self, target: &Target) -> Result<(), DriverError> {
        self.at(target)
            .stop_evacuation()
            .await
            .map_err(|e| driver_error(target, e))
    }
}

/// The contract's error about `target`'s sidecar as the operator's.
fn driver_error(target: &Target, e: EvacuatorError) -> DriverError {
    let pod = target.pod.clone();
    match e {
        EvacuatorError::Unreachable { reason, .. } => DriverError::Unreachable {
            pod,
            detail: reason,
        },
        EvacuatorError::Refused {
            what,
            status,
            message,
            ..
        } => DriverError::Refused {
            pod,
            status,
            body: format!("{what}: {message}"),
        },
        EvacuatorError::Malformed { what, reason, .. } => DriverError::Unreachable {
            pod,
            detail: format!("{what}: the answer does not parse: {reason}"),
        },
    }
}

/// The sidecar's report as the engine reads it, its evacuation named after the
/// pod: the counts are the upstream's live ones; no evacuation while `disabled`.
fn report(pod: &str, status: NodeEvacuationStatus) -> Report {
    Report {
        connections: status.stats.current_connected,
        sessions: status.stats.current_sessions,
        evacuation: (status.state != EvacuationState::Disabled).then(|| NodeEvacuationStatus {
            node: pod.to_owned(),
            ..status
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_api::admin::EvacuationStatus;

    /// The admin API's status body, as `report` reads it.
    fn status(state: &str, rate: u64, initial: u64, current: u64) -> NodeEvacuationStatus {
        let s: EvacuationStatus = serde_json::from_value(json!({
            "upstream": "app", "state": state,
            "connection_eviction_rate": rate, "session_eviction_rate": rate / 2,
            "wait_takeover": 5, "wait_health_check": 0,
            "server_reference": null, "mqtt5_evict": null,
            "stats": {"initial_connected": initial, "current_connected": current,
                      "initial_sessions": 20, "current_sessions": 20}
        }))
        .unwrap();
        s.node_status(&s.upstream)
    }

    #[test]
    fn reads_the_admin_api_status_under_the_pod_name() {
        let r = report("p", status("evicting_conns", 200, 500, 312));
        assert_eq!((r.connections, r.sessions), (312, 20));
        let e = r.evacuation.unwrap();
        assert_eq!(
            (e.node.as_str(), e.state),
            ("p", EvacuationState::EvictingConns)
        );
        assert_eq!(e.connection_eviction_rate, 200);
        let r = report("p", status("disabled", 0, 7, 7));
        assert_eq!((r.connections, r.evacuation), (7, None));
    }

    #[test]
    fn contract_errors_name_the_pod() {
        let t = Target {
            pod: "mqtt-a-0".into(),
            namespace: "default".into(),
            ip: "10.0.0.1".parse().unwrap(),
        };
        let e = driver_error(
            &t,
            EvacuatorError::Refused {
                evacuator: "10.0.0.1:9190".into(),
                what: "POST /evacuation".into(),
                status: 401,
                message: "send the admin token".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "mqtt-a-0: evacuator answered HTTP 401: POST /evacuation: send the admin token"
        );
        let e = driver_error(
            &t,
            EvacuatorError::Malformed {
                evacuator: "10.0.0.1:9190".into(),
                what: "GET /evacuation".into(),
                reason: "eof".into(),
            },
        );
        assert!(matches!(e, DriverError::Unreachable { .. }), "{e}");
    }
}
