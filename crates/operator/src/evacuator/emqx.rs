//! The driver for EMQX's own node evacuation, through its documented REST API:
//!
//! * `POST /api/v5/load_rebalance/{node}/evacuation/start` with `conn_evict_rate`,
//!   `sess_evict_rate`, `wait_takeover`, `wait_health_check`, `migrate_to`; a 400
//!   `already_started` means it runs, which is what was asked;
//! * `POST /api/v5/load_rebalance/{node}/evacuation/stop` (400 `not_started` is fine);
//! * `GET /api/v5/load_rebalance/global_status`: `.evacuations[]` in the shape the
//!   status publishes;
//! * `GET /api/v5/nodes/{node}`: `live_connections` (connected clients) and
//!   `connections` (sessions, connected or not); 404 means the node is not in the
//!   cluster (stopped, or not joined yet): it holds nothing.
//!
//! 503 means EMQX cannot answer now (e.g. the node is starting): the pod's state is
//! unknown and the call is retried at the next reconcile. Credentials are an API
//! key and secret, sent as HTTP basic auth.

use base64::Engine;
use serde_json::{Value, json};
use sluice_core::engine::NodeEvacuationStatus;
use sluice_core::spec::EvacuationStrategy;

use sluice_api::admin::EvacuationRequest;

use super::{CALL_TIMEOUT, DriverError, Evacuator, Report, Target};

/// Drives the EMQX nodes of one set.
#[derive(Debug, Clone)]
pub struct EmqxDriver {
    /// `HOST:PORT` of a fixed API endpoint; `None`: each pod's IP and `api_port`.
    pub api: Option<String>,
    /// The API port on each pod.
    pub api_port: u16,
    /// Node name template (`{podIP}`, `{pod}`, `{namespace}`).
    pub node_name: String,
    /// `Basic …` header value.
    auth: String,
}

impl EmqxDriver {
    /// A driver; `api_url` is `http://HOST:PORT` or `None`.
    pub fn new(
        api_url: Option<&str>,
        api_port: u16,
        node_name: &str,
        username: &str,
        password: &str,
    ) -> Result<EmqxDriver, DriverError> {
        let api = match api_url {
            None => None,
            Some(url) => Some(
                url.strip_prefix("http://")
                    .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                    .ok_or_else(|| {
                        DriverError::Credentials(format!(
                            "evacuator.emqx.apiUrl: expected http://HOST:PORT (got {url:?})"
                        ))
                    })?
                    .to_owned(),
            ),
        };
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        Ok(EmqxDriver {
            api,
            api_port,
            node_name: node_name.to_owned(),
            auth: format!("Basic {basic}"),
        })
    }

    /// The EMQX node name of a pod.
    pub fn node(&self, target: &Target) -> String {
        self.node_name
            .replace("{podIP}", &target.ip.to_string())
            .replace("{pod}", &target.pod)
            .replace("{namespace}", &target.namespace)
    }

    fn addr(&self, target: &Target) -> String {
        self.api
            .clone()
            .unwrap_or_else(|| std::net::SocketAddr::new(target.ip, self.api_port).to_string())
    }

    async fn call(
        &self,
        target: &Target,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, DriverError> {
        let a = call(
            &target.pod,
            &self.addr(target),
            method,
            path,
            &self.auth,
            body,
        )
        .await?;
        if a.status == 503 {
            return Err(DriverError::Unavailable {
                pod: target.pod.clone(),
                detail: a.text,
            });
        }
        Ok(a)
    }

    fn unknown_node(&self, target: &Target) -> DriverError {
        DriverError::UnknownNode {
            pod: target.pod.clone(),
            node: self.node(target),
        }
    }
}

/// EMQX's error `message` (or `code`), to recognise `already_started`.
fn message(a: &Answer) -> String {
    ["message", "code"]
        .iter()
        .filter_map(|k| a.json.get(*k).and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Evacuator for EmqxDriver {
    async fn report(&self, target: &Target) -> Result<Report, DriverError> {
        let node = self.node(target);
        let n = self
            .call(target, "GET", &format!("/api/v5/nodes/{node}"), None)
            .await?;
        if n.status == 404 {
            return Ok(Report {
                connections: 0,
                sessions: 0,
                evacuation: None,
            });
        }
        let count = |k: &str| n.json.get(k).and_then(Value::as_u64);
        let (Some(live), Some(sessions)) = (count("live_connections"), count("connections")) else {
            return Err(refused(target, n.status, n.text));
        };
        let g = self
            .call(target, "GET", "/api/v5/load_rebalance/global_status", None)
            .await?;
        let Some(evacuations) = g.json.get("evacuations").and_then(Value::as_array) else {
            return Err(refused(target, g.status, g.text));
        };
        let evacuation = evacuations
            .iter()
            .filter_map(|e| serde_json::from_value::<NodeEvacuationStatus>(e.clone()).ok())
            .find(|e| e.node == node);
        Ok(Report {
            connections: live,
            sessions,
            evacuation,
        })
    }

    async fn start(
        &self,
        target: &Target,
        evacuation: &EvacuationStrategy,
        migrate_to: &[Target],
    ) -> Result<(), DriverError> {
        let node = self.node(target);
        let to = migrate_to.iter().map(|t| self.node(t)).collect();
        // The contract's request has EMQX's field names (an empty `migrate_to`
        // is left out: EMQX then picks the recipients).
        let body = json!(EvacuationRequest::new(evacuation, to));
        let path = format!("/api/v5/load_rebalance/{node}/evacuation/start");
        let a = self.call(target, "POST", &path, Some(&body)).await?;
        match a.status {
            200 | 204 => Ok(()),
            400 if message(&a).contains("already_started") => Ok(()),
            404 => Err(self.unknown_node(target)),
            s => Err(refused(target, s, a.text)),
        }
    }

    async fn stop(&self, target: &Target) -> Result<(), DriverError> {
        let node = self.node(target);
        let path = format!("/api/v5/load_rebalance/{node}/evacuation/stop");
        let a = self.call(target, "POST", &path, None).await?;
        match a.status {
            200 | 204 => Ok(()),
            400 if message(&a).contains("not_started") => Ok(()),
            404 => Err(self.unknown_node(target)),
            s => Err(refused(target, s, a.text)),
        }
    }
}

/// An HTTP answer: status and JSON body (`Null` when not JSON).
struct Answer {
    status: u16,
    json: Value,
    text: String,
}

/// One HTTP call with a JSON body; any transport failure is `Unreachable`.
async fn call(
    pod: &str,
    addr: &str,
    method: &str,
    path: &str,
    auth: &str,
    body: Option<&Value>,
) -> Result<Answer, DriverError> {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth), ("Accept", "application/json")];
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let response = sluice_http::request(addr, method, path, &headers, &bytes, CALL_TIMEOUT)
        .await
        .map_err(|e| DriverError::Unreachable {
            pod: pod.to_owned(),
            detail: format!("{method} http://{addr}{path}: {e}"),
        })?;
    let text = response.body_text();
    Ok(Answer {
        status: response.status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    })
}

fn refused(target: &Target, status: u16, body: String) -> DriverError {
    DriverError::Refused {
        pod: target.pod.clone(),
        status,
        body,
    }
}
