//! The evacuator's admin API, served by `sluice proxy --admin` (see
//! `docs/admin-api.md`): EMQX's node-evacuation JSON for the evacuation
//! endpoints, so that one driver speaks to EMQX and to `sluice proxy` alike.
//!
//! The proxy serves these types, and every client (`sluice up`, the tests, the
//! planned operator) reads them; a body that does not parse as these types is an
//! error for the reader, never a default.

use serde::{Deserialize, Serialize};
use sluice_core::engine::{EvacuationState, EvacuationStats, NodeEvacuationStatus};
use sluice_core::spec::EvacuationStrategy;

/// The endpoints.
pub mod path {
    /// `GET`/`POST`/`DELETE`: the evacuation of the only upstream.
    pub const EVACUATION: &str = "/evacuation";
    /// `GET`: every upstream ([`super::UpstreamView`]s).
    pub const UPSTREAMS: &str = "/upstreams";
    /// `GET`: liveness ([`super::Liveness`]), no token needed.
    pub const HEALTHZ: &str = "/healthz";
    /// `GET`: readiness ([`super::Readiness`]), no token needed.
    pub const READYZ: &str = "/readyz";
    /// `GET`: Prometheus text (see [`crate::metrics`]).
    pub const METRICS: &str = "/metrics";

    /// `GET`/`PUT`: one upstream.
    pub fn upstream(name: &str) -> String {
        format!("{UPSTREAMS}/{name}")
    }

    /// `GET`/`POST`/`DELETE`: the evacuation of one named upstream.
    pub fn upstream_evacuation(name: &str) -> String {
        format!("{UPSTREAMS}/{name}{EVACUATION}")
    }
}

/// The JSON field names of the request bodies, for servers that read bodies
/// field by field (to name the offending field in an error) and for tests that
/// write deliberately wrong bodies.
pub mod field {
    /// Connections evicted per second (required).
    pub const CONN_EVICT_RATE: &str = "conn_evict_rate";
    /// Sessions evicted per second.
    pub const SESS_EVICT_RATE: &str = "sess_evict_rate";
    /// Seconds between the last connection gone and session eviction.
    pub const WAIT_TAKEOVER: &str = "wait_takeover";
    /// Seconds of still accepting before evicting.
    pub const WAIT_HEALTH_CHECK: &str = "wait_health_check";
    /// MQTT 5 Server Reference (`HOST:PORT`).
    pub const SERVER_REFERENCE: &str = "server_reference";
    /// EMQX's name for [`SERVER_REFERENCE`].
    pub const REDIRECT_TO: &str = "redirect_to";
    /// What MQTT 5 clients are sent.
    pub const MQTT5_EVICT: &str = "mqtt5_evict";
    /// How WebSocket connections are closed.
    pub const WS_EVICT: &str = "ws_evict";
    /// EMQX: the nodes (instances) that receive the evicted clients.
    pub const MIGRATE_TO: &str = "migrate_to";
    /// Seconds after which connections still open (idle HTTP keep-alive ones)
    /// are closed.
    pub const DEADLINE: &str = "deadline";
    /// Every field of [`super::EvacuationRequest`].
    pub const EVACUATION_REQUEST: &[&str] = &[
        CONN_EVICT_RATE,
        SESS_EVICT_RATE,
        WAIT_TAKEOVER,
        WAIT_HEALTH_CHECK,
        SERVER_REFERENCE,
        REDIRECT_TO,
        MQTT5_EVICT,
        WS_EVICT,
        MIGRATE_TO,
        DEADLINE,
    ];
    /// The only field of [`super::ServingRequest`].
    pub const SERVING: &str = "serving";
}

/// The spellings of `mqtt5_evict` (and of `sluice proxy --mqtt5-evict`).
pub mod mqtt5_evict {
    /// DISCONNECT 0x9C "use another server", with the Server Reference.
    pub const DISCONNECT_9C: &str = "disconnect-9c";
    /// DISCONNECT 0x8B "server shutting down".
    pub const DISCONNECT_8B: &str = "disconnect-8b";
    /// A plain close at a packet boundary (the default).
    pub const CLOSE: &str = "close";
}

/// The spellings of `ws_evict` (and of `sluice proxy --ws-evict`).
pub mod ws_evict {
    /// The proxy sends the client a Close between two server messages and
    /// drops what the app sends after it (the default).
    pub const INJECT: &str = "inject";
    /// The proxy sends the app a masked Close between two client messages and
    /// forwards until the app's own Close has reached the client: nothing the
    /// app sent is dropped.
    pub const LOSSLESS: &str = "lossless";
}

/// `POST …/evacuation`: start evacuating (EMQX's
/// `/api/v5/load_rebalance/{node}/evacuation/start` body, plus sluice's
/// `server_reference` and `mqtt5_evict`). Only `conn_evict_rate` is required;
/// absent fields take the server's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvacuationRequest {
    /// Connections evicted per second (1–1000000).
    pub conn_evict_rate: u32,
    /// Sessions evicted per second (1–1000000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sess_evict_rate: Option<u32>,
    /// Seconds between the last connection gone and session eviction (0–86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_takeover: Option<u32>,
    /// Seconds of still accepting before evicting (0–86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_health_check: Option<u32>,
    /// `HOST:PORT` sent to MQTT 5 clients as Server Reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_reference: Option<String>,
    /// EMQX's name for `server_reference`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// One of [`mqtt5_evict`]'s spellings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt5_evict: Option<String>,
    /// One of [`ws_evict`]'s spellings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_evict: Option<String>,
    /// The instances that receive the evicted clients (EMQX: where sessions
    /// migrate). `sluice proxy` records them in its status; clients reconnect
    /// through the front, which sends them to these instances first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrate_to: Vec<String>,
    /// Seconds from the start of `evicting_conns` after which connections still
    /// open (idle HTTP keep-alive ones waiting for a request) are closed
    /// (0–86400; the server's default is generous).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u32>,
}

impl EvacuationRequest {
    /// The request for an engine's `StartEvacuation`: the strategy's rates and
    /// waits (validated, so never negative; a negative one would be sent as 0
    /// and refused by the server with the field named), and the recipients.
    pub fn new(strategy: &EvacuationStrategy, migrate_to: Vec<String>) -> EvacuationRequest {
        let n = |v: i32| u32::try_from(v).unwrap_or(0);
        EvacuationRequest {
            conn_evict_rate: n(strategy.conn_evict_rate),
            sess_evict_rate: Some(n(strategy.sess_evict_rate)),
            wait_takeover: Some(n(strategy.wait_takeover)),
            wait_health_check: Some(n(strategy.wait_health_check)),
            server_reference: None,
            redirect_to: None,
            mqtt5_evict: None,
            ws_evict: None,
            migrate_to,
            deadline: None,
        }
    }

    /// Only a connection rate; everything else defaulted by the server.
    pub fn at_rate(conn_evict_rate: u32) -> EvacuationRequest {
        EvacuationRequest {
            conn_evict_rate,
            sess_evict_rate: None,
            wait_takeover: None,
            wait_health_check: None,
            server_reference: None,
            redirect_to: None,
            mqtt5_evict: None,
            ws_evict: None,
            migrate_to: Vec::new(),
            deadline: None,
        }
    }
}

/// The answer of `GET`/`POST`/`DELETE …/evacuation`: where an upstream's
/// evacuation is, EMQX's field names. When `disabled`, the rates are 0 and the
/// initial stats equal the current ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuationStatus {
    /// The upstream (the instance, for `sluice up`'s evacuators).
    pub upstream: String,
    /// Where the evacuation is.
    pub state: EvacuationState,
    /// Connections evicted per second (0 when disabled).
    pub connection_eviction_rate: u64,
    /// Sessions evicted per second (0 when disabled).
    pub session_eviction_rate: u64,
    /// Seconds of `waiting_takeover` (0 when disabled).
    pub wait_takeover: u64,
    /// Seconds of `waiting_health_check` (0 when disabled).
    pub wait_health_check: u64,
    /// The Server Reference MQTT 5 clients get, if any.
    pub server_reference: Option<String>,
    /// What MQTT 5 clients are sent ([`mqtt5_evict`]), while evacuating.
    pub mqtt5_evict: Option<String>,
    /// How WebSocket connections are closed ([`ws_evict`]), while evacuating
    /// (not in EMQX's shape, so `None` when the evacuator does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws_evict: Option<String>,
    /// The recipients the evacuation was started with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrate_to: Vec<String>,
    /// Seconds after which still-open connections are closed, while an
    /// evacuation runs (not in EMQX's shape, so `None` when the evacuator does
    /// not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<u64>,
    /// Connection and session counts.
    pub stats: EvacuationStats,
}

impl EvacuationStatus {
    /// The engine's (and EMQX Operator's) form of this report, named `node`.
    pub fn node_status(&self, node: &str) -> NodeEvacuationStatus {
        NodeEvacuationStatus {
            node: node.to_owned(),
            state: self.state,
            stats: self.stats,
            connection_eviction_rate: self.connection_eviction_rate,
            session_eviction_rate: self.session_eviction_rate,
            connection_goal: None,
            session_goal: None,
            session_recipients: self.migrate_to.clone(),
        }
    }
}

/// `GET /upstreams` (a list) and `GET`/`PUT /upstreams/{name}`: one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamView {
    /// Its name.
    pub name: String,
    /// `HOST:PORT`.
    pub address: String,
    /// In the set that receives new connections.
    pub serving: bool,
    /// Its last connect (or probe) succeeded.
    pub healthy: bool,
    /// Current connections.
    pub connections: u64,
    /// Persistent sessions believed to live there.
    pub sessions: u64,
    /// Its evacuation state.
    pub evacuation: EvacuationState,
}

/// `PUT /upstreams/{name}`: in or out of the serving set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingRequest {
    /// Whether it receives new connections.
    pub serving: bool,
}

/// The machine-readable part of an [`ErrorBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: the body or path is wrong (see `field`).
    BadRequest,
    /// 401: the admin token is missing or wrong.
    Unauthorized,
    /// 404: no such upstream or endpoint.
    NotFound,
    /// 409: an evacuation already runs.
    Conflict,
}

/// Every error answer: `{"code", "message", "field"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What kind of error.
    pub code: ErrorCode,
    /// What is wrong and what is allowed.
    pub message: String,
    /// The field to blame, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Liveness {
    /// Always true: the process answers.
    pub alive: bool,
}

/// `GET /readyz` (200 when ready, 503 otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Ready for new connections.
    pub ready: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn the_field_names_are_the_request_types_names() {
        let full = EvacuationRequest {
            conn_evict_rate: 1,
            sess_evict_rate: Some(2),
            wait_takeover: Some(3),
            wait_health_check: Some(4),
            server_reference: Some("h:1".into()),
            redirect_to: Some("h:2".into()),
            mqtt5_evict: Some(mqtt5_evict::CLOSE.into()),
            ws_evict: Some(ws_evict::LOSSLESS.into()),
            migrate_to: vec!["b".into()],
            deadline: Some(5),
        };
        let Value::Object(map) = serde_json::to_value(&full).unwrap() else {
            panic!("not an object")
        };
        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        let mut expected = field::EVACUATION_REQUEST.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let serving = serde_json::to_value(ServingRequest { serving: true }).unwrap();
        assert_eq!(serving, json!({ field::SERVING: true }));
        // Only the rate is required; unknown fields are refused.
        let r: EvacuationRequest =
            serde_json::from_value(json!({ field::CONN_EVICT_RATE: 5 })).unwrap();
        assert_eq!(r, EvacuationRequest::at_rate(5));
        assert!(serde_json::from_value::<EvacuationRequest>(json!({"conn_evict_rat": 5})).is_err());
    }

    #[test]
    fn a_status_missing_a_field_does_not_parse() {
        let good = json!({
            "upstream": "a", "state": "evicting_conns",
            "connection_eviction_rate": 200, "session_eviction_rate": 200,
            "wait_takeover": 5, "wait_health_check": 0,
            "server_reference": null, "mqtt5_evict": "close",
            "stats": {"initial_connected": 500, "current_connected": 312,
                      "initial_sessions": 20, "current_sessions": 20}
        });
        let s: EvacuationStatus = serde_json::from_value(good.clone()).unwrap();
        assert_eq!(s.state, EvacuationState::EvictingConns);
        assert_eq!(serde_json::to_value(&s).unwrap(), good);
        let n = s.node_status("a");
        assert_eq!((n.node.as_str(), n.stats.current_connected), ("a", 312));
        let mut no_stats = good.clone();
        no_stats.as_object_mut().unwrap().remove("stats");
        assert!(serde_json::from_value::<EvacuationStatus>(no_stats).is_err());
        let mut half_stats = good.clone();
        half_stats["stats"]
            .as_object_mut()
            .unwrap()
            .remove("current_connected");
        assert!(serde_json::from_value::<EvacuationStatus>(half_stats).is_err());
        let mut bad_state = good;
        bad_state["state"] = json!("evacuating");
        assert!(serde_json::from_value::<EvacuationStatus>(bad_state).is_err());
    }

    #[test]
    fn the_engine_reads_the_emqx_operators_node_evacuation_status() {
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
            assert_eq!(state.as_str(), name, "the metric label is the serde name");
        }
    }

    #[test]
    fn error_codes_are_screaming() {
        let e = ErrorBody {
            code: ErrorCode::BadRequest,
            message: "m".into(),
            field: None,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"code": "BAD_REQUEST", "message": "m"})
        );
    }
}
