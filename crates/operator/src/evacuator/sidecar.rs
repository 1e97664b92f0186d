//! The driver for the injected `sluice proxy` sidecar: its admin API on the pod IP
//! (`docs/admin-api.md`), behind the set's bearer token.

use serde_json::Value;
use sluice_core::engine::{EvacuationState, EvacuationStats, NodeEvacuationStatus};
use sluice_core::spec::EvacuationStrategy;

use super::{DriverError, Evacuator, Report, Target, call, start_body};

/// Drives the sidecars of one set.
#[derive(Debug, Clone)]
pub struct SidecarDriver {
    /// The sidecars' admin port.
    pub admin_port: u16,
    /// The bearer token (from the set's token Secret).
    pub token: String,
}

impl SidecarDriver {
    fn addr(&self, target: &Target) -> String {
        std::net::SocketAddr::new(target.ip, self.admin_port).to_string()
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }
}

impl Evacuator for SidecarDriver {
    async fn report(&self, target: &Target) -> Result<Report, DriverError> {
        let a = call(
            &target.pod,
            &self.addr(target),
            "GET",
            "/evacuation",
            &self.auth(),
            None,
        )
        .await?;
        if a.status != 200 {
            return Err(refused(target, a.status, a.text));
        }
        parse_report(&target.pod, &a.json).ok_or_else(|| DriverError::Unreachable {
            pod: target.pod.clone(),
            detail: format!("GET /evacuation: unexpected body {}", a.text),
        })
    }

    async fn start(
        &self,
        target: &Target,
        evacuation: &EvacuationStrategy,
        _migrate_to: &[Target],
    ) -> Result<(), DriverError> {
        let body = Value::Object(start_body(evacuation));
        let a = call(
            &target.pod,
            &self.addr(target),
            "POST",
            "/evacuation",
            &self.auth(),
            Some(&body),
        )
        .await?;
        match a.status {
            // 409: one already runs, which is what was asked.
            200 | 409 => Ok(()),
            s => Err(refused(target, s, a.text)),
        }
    }

    async fn stop(&self, target: &Target) -> Result<(), DriverError> {
        let a = call(
            &target.pod,
            &self.addr(target),
            "DELETE",
            "/evacuation",
            &self.auth(),
            None,
        )
        .await?;
        match a.status {
            200 => Ok(()),
            s => Err(refused(target, s, a.text)),
        }
    }
}

fn refused(target: &Target, status: u16, body: String) -> DriverError {
    DriverError::Refused {
        pod: target.pod.clone(),
        status,
        body,
    }
}

/// Reads `GET /evacuation`'s body: the counts are the upstream's live ones.
fn parse_report(pod: &str, json: &Value) -> Option<Report> {
    let state: EvacuationState = serde_json::from_value(json.get("state")?.clone()).ok()?;
    let stats: EvacuationStats = serde_json::from_value(json.get("stats")?.clone()).ok()?;
    let rate = |k: &str| json.get(k).and_then(Value::as_u64).unwrap_or(0);
    let evacuation = (state != EvacuationState::Disabled).then(|| NodeEvacuationStatus {
        node: pod.to_owned(),
        state,
        stats,
        connection_eviction_rate: rate("connection_eviction_rate"),
        session_eviction_rate: rate("session_eviction_rate"),
        connection_goal: None,
        session_goal: None,
        session_recipients: Vec::new(),
    });
    Some(Report {
        connections: stats.current_connected,
        sessions: stats.current_sessions,
        evacuation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_admin_api_status() {
        let body = json!({
            "upstream": "app", "state": "evicting_conns",
            "connection_eviction_rate": 200, "session_eviction_rate": 100,
            "wait_takeover": 5, "wait_health_check": 0,
            "stats": {"initial_connected": 500, "current_connected": 312,
                      "initial_sessions": 20, "current_sessions": 20}
        });
        let r = parse_report("p", &body).unwrap();
        assert_eq!((r.connections, r.sessions), (312, 20));
        let e = r.evacuation.unwrap();
        assert_eq!(e.state, EvacuationState::EvictingConns);
        assert_eq!(e.connection_eviction_rate, 200);
        let idle = json!({"state": "disabled", "stats": {"initial_connected": 7,
            "current_connected": 7, "initial_sessions": 0, "current_sessions": 0}});
        let r = parse_report("p", &idle).unwrap();
        assert_eq!((r.connections, r.evacuation), (7, None));
        assert!(parse_report("p", &json!({"state": "weird"})).is_none());
    }
}
