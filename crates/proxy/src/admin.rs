//! The admin HTTP API: evacuation (EMQX's JSON), the serving set, probes and
//! metrics. See docs/admin-api.md.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sluice_api::admin::{ErrorBody, ErrorCode, Liveness, Readiness, UpstreamView, field, path};

use crate::Shared;
use crate::body::{BadRequest, Fields, MAX_BODY};
use crate::evacuation::{self, EvacParams};
use crate::registry::Upstream;

/// An error answer: a status and EMQX-like JSON `{code, message, field}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                field: None,
            },
        }
    }
}

impl From<BadRequest> for ApiError {
    fn from(e: BadRequest) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                code: ErrorCode::BadRequest,
                message: e.message,
                field: e.field,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

/// The routes, with bearer-token checking on everything but the probes.
pub fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route(path::METRICS, get(metrics))
        .route(path::UPSTREAMS, get(list_upstreams))
        .route(
            &path::upstream("{name}"),
            get(get_upstream).put(put_upstream),
        )
        .route(
            path::EVACUATION,
            get(status_only).post(start_only).delete(stop_only),
        )
        .route(
            &path::upstream_evacuation("{name}"),
            get(status_named).post(start_named).delete(stop_named),
        );
    let api = crate::auth::protect(api, shared.token.clone());
    Router::new()
        .route(
            path::HEALTHZ,
            get(|| async { Json(Liveness { alive: true }) }),
        )
        .route(path::READYZ, get(readyz))
        .merge(api)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such endpoint; see docs/admin-api.md",
            )
        })
        // One byte more than the limit, so that Fields::parse reports the size.
        .layer(DefaultBodyLimit::max(MAX_BODY + 1))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let r = &shared.registry;
    if r.ready() {
        let ready = Readiness {
            ready: true,
            reason: None,
        };
        return (StatusCode::OK, Json(ready)).into_response();
    }
    let why = if r.draining() {
        "draining after SIGTERM"
    } else {
        "no upstream is serving, healthy and free of evacuation"
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(Readiness {
            ready: false,
            reason: Some(why.to_owned()),
        }),
    )
        .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics().encode(),
    )
        .into_response()
}

fn upstream_view(u: &Upstream) -> UpstreamView {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    UpstreamView {
        name: u.name.clone(),
        address: u.addr.clone(),
        serving: u.serving(),
        healthy: u.healthy(),
        connections: count(u.live()),
        sessions: count(u.sessions()),
        evacuation: u.evacuation_state(),
    }
}

async fn list_upstreams(State(shared): State<Arc<Shared>>) -> Json<Vec<UpstreamView>> {
    Json(
        shared
            .registry
            .upstreams()
            .iter()
            .map(|u| upstream_view(u))
            .collect(),
    )
}

fn named<'a>(shared: &'a Shared, name: &str) -> Result<&'a Arc<Upstream>, ApiError> {
    shared.registry.get(name).ok_or_else(|| {
        let known: Vec<&str> = shared
            .registry
            .upstreams()
            .iter()
            .map(|u| u.name.as_str())
            .collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no upstream named {name:?}; known: {}", known.join(", ")),
        )
    })
}

fn only(shared: &Shared) -> Result<&Arc<Upstream>, ApiError> {
    shared.registry.only().ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "this proxy has {} upstreams; use /upstreams/{{name}}/evacuation",
                shared.registry.upstreams().len()
            ),
        )
    })
}

fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        BadRequest::body(format!(
            "request body could not be read ({e}); the limit is {MAX_BODY} bytes"
        ))
        .into()
    })
}

async fn get_upstream(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(upstream_view(named(&shared, &name)?)).into_response())
}

async fn put_upstream(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let u = named(&shared, &name)?;
    let raw = body(raw)?;
    let mut fields = Fields::parse(&raw, &[field::SERVING])?;
    let serving = fields.bool(field::SERVING)?.ok_or_else(|| {
        BadRequest::field(
            field::SERVING,
            format!("`{}` is required: true or false", field::SERVING),
        )
    })?;
    u.set_serving(serving);
    tracing::info!(upstream = %u.name, serving, "serving set changed");
    Ok(Json(upstream_view(u)).into_response())
}

fn start(shared: &Shared, u: &Arc<Upstream>, raw: Result<Bytes, BytesRejection>) -> ApiResult {
    let raw = body(raw)?;
    let params = EvacParams::from_body(
        &raw,
        shared.args.mqtt5_evict,
        shared.args.ws_evict,
        shared.args.server_reference.as_deref(),
    )?;
    evacuation::start(u, params, shared.clock, &shared.registry.metrics)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string()))?;
    Ok(Json(evacuation::status(u)).into_response())
}

fn stop(shared: &Shared, u: &Upstream) -> ApiResult {
    evacuation::stop(u, &shared.registry.metrics);
    Ok(Json(evacuation::status(u)).into_response())
}

async fn status_only(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(evacuation::status(only(&shared)?)).into_response())
}

async fn start_only(
    State(shared): State<Arc<Shared>>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    start(&shared, only(&shared)?, raw)
}

async fn stop_only(State(shared): State<Arc<Shared>>) -> ApiResult {
    stop(&shared, only(&shared)?)
}

async fn status_named(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(evacuation::status(named(&shared, &name)?)).into_response())
}

async fn start_named(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult {
    start(&shared, named(&shared, &name)?, raw)
}

async fn stop_named(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult {
    stop(&shared, named(&shared, &name)?)
}
