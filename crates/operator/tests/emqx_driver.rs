//! The EMQX driver against a stub on 127.0.0.1 that answers as EMQX's REST API is
//! documented (`/api/v5/load_rebalance/…`, `/api/v5/nodes/{node}`), errors
//! included. EMQX itself cannot be installed on the build machine.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use sluice_core::engine::EvacuationState;
use sluice_core::spec::EvacuationStrategy;
use sluice_operator::evacuator::emqx::EmqxDriver;
use sluice_operator::evacuator::{DriverError, Evacuator, Target};

/// `Basic base64("key:secret")`.
const AUTH: &str = "Basic a2V5OnNlY3JldA==";

#[derive(Default)]
struct Stub {
    /// Every call: `METHOD path body`.
    calls: Vec<String>,
    /// Nodes whose evacuation runs.
    evacuating: Vec<String>,
    /// Answer 503 to everything (EMQX starting).
    unavailable: bool,
}

type Shared = Arc<Mutex<Stub>>;

const KNOWN: [&str; 2] = ["emqx@10.0.0.1", "emqx@10.0.0.2"];

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"code": code, "message": message}))).into_response()
}

/// Checks auth and availability; `Some` is the answer to give instead.
fn gate(stub: &mut Stub, headers: &HeaderMap, call: String) -> Option<Response> {
    stub.calls.push(call);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(AUTH) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "BAD_API_KEY_OR_SECRET",
            "Check api_key/api_secret",
        ));
    }
    stub.unavailable.then(|| {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            "node is starting",
        )
    })
}

async fn node(State(s): State<Shared>, headers: HeaderMap, Path(node): Path<String>) -> Response {
    let mut stub = s.lock().unwrap();
    if let Some(r) = gate(&mut stub, &headers, format!("GET nodes/{node}")) {
        return r;
    }
    if !KNOWN.contains(&node.as_str()) {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Node not found");
    }
    Json(
        json!({"node": node, "node_status": "running", "connections": 130,
                "live_connections": 120, "version": "5.8.6"}),
    )
    .into_response()
}

async fn global_status(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut stub = s.lock().unwrap();
    if let Some(r) = gate(&mut stub, &headers, "GET global_status".into()) {
        return r;
    }
    let evacuations: Vec<Value> = stub
        .evacuating
        .iter()
        .map(|n| {
            json!({"node": n, "state": "evicting_conns",
                   "connection_eviction_rate": 50, "session_eviction_rate": 40,
                   "connection_goal": 0, "session_goal": 0,
                   "session_recipients": ["emqx@10.0.0.2"],
                   "stats": {"initial_connected": 200, "current_connected": 120,
                             "initial_sessions": 210, "current_sessions": 130}})
        })
        .collect();
    Json(json!({"status": "enabled", "rebalances": [], "evacuations": evacuations})).into_response()
}

async fn start(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(node): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let mut stub = s.lock().unwrap();
    if let Some(r) = gate(&mut stub, &headers, format!("POST start/{node} {body}")) {
        return r;
    }
    if !KNOWN.contains(&node.as_str()) {
        return error(StatusCode::NOT_FOUND, "NOT_FOUND", "Node not found");
    }
    if body
        .get("conn_evict_rate")
        .and_then(Value::as_u64)
        .is_none()
    {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "conn_evict_rate is required",
        );
    }
    if stub.evacuating.contains(&node) {
        return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "already_started");
    }
    stub.evacuating.push(node);
    Json(json!({})).into_response()
}

async fn stop(State(s): State<Shared>, headers: HeaderMap, Path(node): Path<String>) -> Response {
    let mut stub = s.lock().unwrap();
    if let Some(r) = gate(&mut stub, &headers, format!("POST stop/{node}")) {
        return r;
    }
    if !stub.evacuating.contains(&node) {
        return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", "not_started");
    }
    stub.evacuating.retain(|n| *n != node);
    Json(json!({})).into_response()
}

async fn serve() -> (String, Shared) {
    let shared = Shared::default();
    let app = Router::new()
        .route("/api/v5/nodes/{node}", get(node))
        .route("/api/v5/load_rebalance/global_status", get(global_status))
        .route(
            "/api/v5/load_rebalance/{node}/evacuation/start",
            post(start),
        )
        .route("/api/v5/load_rebalance/{node}/evacuation/stop", post(stop))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), shared)
}

fn target(last: u8) -> Target {
    Target {
        pod: format!("emqx-abc-{last}"),
        namespace: "default".into(),
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
    }
}

fn driver(url: &str, password: &str) -> EmqxDriver {
    EmqxDriver::new(Some(url), 18083, "emqx@{podIP}", "key", password).unwrap()
}

fn strategy() -> EvacuationStrategy {
    EvacuationStrategy {
        conn_evict_rate: 50,
        sess_evict_rate: 40,
        wait_takeover: 7,
        wait_health_check: 0,
    }
}

#[tokio::test]
async fn evacuation_start_report_and_stop_speak_emqx() {
    let (url, stub) = serve().await;
    let d = driver(&url, "secret");
    let (old, new) = (target(1), target(2));

    let idle = d.report(&old).await.unwrap();
    assert_eq!(
        (idle.connections, idle.sessions, idle.evacuation),
        (120, 130, None)
    );

    d.start(&old, &strategy(), std::slice::from_ref(&new))
        .await
        .unwrap();
    let calls = stub.lock().unwrap().calls.clone();
    let start = calls.iter().find(|c| c.starts_with("POST start/")).unwrap();
    let body: Value =
        serde_json::from_str(start.split_once(' ').unwrap().1.split_once(' ').unwrap().1).unwrap();
    assert_eq!(
        body,
        json!({"conn_evict_rate": 50, "sess_evict_rate": 40, "wait_takeover": 7,
               "wait_health_check": 0, "migrate_to": ["emqx@10.0.0.2"]})
    );
    assert!(start.starts_with("POST start/emqx@10.0.0.1 "), "{start}");

    // A second start answers 400 already_started: it runs, which is what was asked.
    d.start(&old, &strategy(), &[new]).await.unwrap();

    let r = d.report(&old).await.unwrap();
    let e = r.evacuation.expect("the evacuation is reported");
    assert_eq!(e.state, EvacuationState::EvictingConns);
    assert_eq!(
        (e.stats.initial_connected, e.stats.current_connected),
        (200, 120)
    );
    assert_eq!(e.connection_eviction_rate, 50);
    assert_eq!(e.session_recipients, vec!["emqx@10.0.0.2".to_owned()]);

    d.stop(&old).await.unwrap();
    // Stopping again answers 400 not_started: stopped, as asked.
    d.stop(&old).await.unwrap();
    assert!(stub.lock().unwrap().evacuating.is_empty());
}

#[tokio::test]
async fn unknown_nodes_unavailability_and_bad_credentials_are_told_apart() {
    let (url, stub) = serve().await;
    let d = driver(&url, "secret");
    let gone = target(9);

    // A node not in the cluster holds nothing.
    let r = d.report(&gone).await.unwrap();
    assert_eq!((r.connections, r.sessions, r.evacuation), (0, 0, None));
    // …but cannot be evacuated.
    let e = d.start(&gone, &strategy(), &[]).await.unwrap_err();
    assert!(
        matches!(&e, DriverError::UnknownNode { node, .. } if node == "emqx@10.0.0.9"),
        "{e}"
    );

    // 503: unknown now, never read as zero.
    stub.lock().unwrap().unavailable = true;
    let e = d.report(&target(1)).await.unwrap_err();
    assert!(matches!(e, DriverError::Unavailable { .. }), "{e}");
    let e = d.start(&target(1), &strategy(), &[]).await.unwrap_err();
    assert!(matches!(e, DriverError::Unavailable { .. }), "{e}");
    stub.lock().unwrap().unavailable = false;

    // Wrong secret: refused with EMQX's answer in the message.
    let e = driver(&url, "wrong").report(&target(1)).await.unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("HTTP 401") && text.contains("BAD_API_KEY_OR_SECRET"),
        "{text}"
    );

    // Nothing listening: unreachable.
    let closed = driver("http://127.0.0.1:1", "secret");
    let e = closed.report(&target(1)).await.unwrap_err();
    assert!(matches!(e, DriverError::Unreachable { .. }), "{e}");

    // A bad apiUrl is refused naming the field.
    let e = EmqxDriver::new(Some("https://x/y"), 1, "n", "u", "p").unwrap_err();
    assert!(e.to_string().contains("evacuator.emqx.apiUrl"), "{e}");
}
