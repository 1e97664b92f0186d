//! The control API of `sluice up` (axum): `GET /status`, `PUT /spec`,
//! `POST /abort`, `GET /metrics`, `GET /healthz`. See docs/up.md.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use sluice_api::admin::Liveness;
use sluice_api::control::{Aborting, Applied, ControlError, UpStatus, path};
use sluice_proxy::auth::Token;

use super::Shared;
use crate::fleet::{Fleet, FleetError};

/// The largest fleet file accepted.
const MAX_SPEC: usize = 1 << 20;

pub(crate) fn router(shared: Arc<Shared>, token: Option<Token>) -> Router {
    let api = Router::new()
        .route(path::STATUS, get(status))
        .route(path::SPEC, put(put_spec))
        .route(path::ABORT, post(abort))
        .route(path::METRICS, get(metrics));
    Router::new()
        .route(
            path::HEALTHZ,
            get(|| async { axum::Json(Liveness { alive: true }) }),
        )
        .merge(sluice_proxy::auth::protect(api, token))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint; see docs/up.md (GET /status, PUT /spec, POST /abort, GET /metrics, GET /healthz)",
                None,
            )
        })
        .layer(DefaultBodyLimit::max(MAX_SPEC))
        .with_state(shared)
}

fn error(status: StatusCode, message: &str, field: Option<&str>) -> Response {
    let body = ControlError {
        error: message.to_owned(),
        field: field.map(str::to_owned),
    };
    (status, axum::Json(body)).into_response()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    match shared.status_view() {
        Some(view) => axum::Json(view).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: the engine has not decided yet; ask again in a moment",
            None,
        ),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let text = shared.lock().metrics.clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// The field a fleet error is about: the path of an invalid field, or the one
/// the parser's message starts with.
pub(crate) fn error_field(e: &FleetError) -> Option<String> {
    if let Some(f) = e.field() {
        return Some(f.to_owned());
    }
    if let FleetError::Syntax { message, .. } = e {
        if let Some(rest) = message.split("unknown field `").nth(1) {
            return rest.split('`').next().map(str::to_owned);
        }
        if let Some(rest) = message.split("missing field `").nth(1) {
            return rest.split('`').next().map(str::to_owned);
        }
        let head = message.split(": ").next().unwrap_or("");
        if !head.is_empty() && !head.contains(' ') && head != message {
            return Some(head.to_owned());
        }
    }
    None
}

async fn put_spec(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "spec: the body is not UTF-8 text; send the fleet YAML",
            None,
        );
    };
    let fleet = match Fleet::from_yaml_str(text, "spec") {
        Ok(f) => f,
        Err(e) => {
            let field = error_field(&e);
            return error(StatusCode::BAD_REQUEST, &e.to_string(), field.as_deref());
        }
    };
    let mut c = shared.lock();
    for (field, old, new) in [
        ("name", c.fleet.name.clone(), fleet.name.clone()),
        (
            "listen",
            c.fleet.listen.to_string(),
            fleet.listen.to_string(),
        ),
    ] {
        if old != new {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "spec: {field}: cannot change from {old:?} to {new:?} while the fleet runs; \
                     stop `sluice up` and start it with the new file"
                ),
                Some(field),
            );
        }
    }
    let revision = fleet.revision();
    let upgrade = revision != c.fleet.revision();
    let same = serde_json::to_value(&fleet).ok() == serde_json::to_value(&c.fleet).ok();
    if !same {
        c.fleets.insert(revision.clone(), fleet.clone());
        c.fleet = fleet;
        c.generation += 1;
    }
    drop(c);
    shared.wake.notify_one();
    axum::Json(Applied {
        revision,
        changed: !same,
        upgrade,
    })
    .into_response()
}

async fn abort(State(shared): State<Arc<Shared>>) -> Response {
    let mut c = shared.lock();
    let phase = c.status.as_ref().map(|s| s.phase);
    let at_rest = phase.is_none_or(|p| p.at_rest());
    if at_rest {
        let phase = phase.map_or_else(|| "starting".to_owned(), |p| format!("{p:?}"));
        return error(
            StatusCode::CONFLICT,
            &format!("no upgrade in progress (phase {phase}); nothing to abort"),
            None,
        );
    }
    c.abort_requested = true;
    drop(c);
    shared.wake.notify_one();
    (
        StatusCode::ACCEPTED,
        axum::Json(Aborting { aborting: true }),
    )
        .into_response()
}

/// The `GET /status` body; `None` before the engine's first decision.
pub(crate) fn status_view(shared: &Shared) -> Option<UpStatus> {
    let c = shared.lock();
    Some(UpStatus {
        status: c.status.clone()?,
        fleet: c.fleet.name.clone(),
        listen: c.fleet.listen.to_string(),
        abort_requested: c.abort_requested,
        run_dir: c.run_dir.display().to_string(),
        instances: c.instances.clone(),
    })
}
