//! The HTTP API: `/metrics`, `/healthz`, `/readyz`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::metrics::Metrics;

/// What `/healthz` and `/readyz` report.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Every source has started streaming.
    pub(crate) sources_started: AtomicBool,
    /// The engine thread is running.
    pub(crate) engine_running: AtomicBool,
    /// The last store write succeeded.
    pub(crate) store_writable: AtomicBool,
}

#[derive(Debug, Clone)]
pub(crate) struct ApiState {
    pub(crate) metrics: Metrics,
    pub(crate) health: Arc<Health>,
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(s): State<ApiState>) -> Response {
    match s.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn healthz(State(s): State<ApiState>) -> Response {
    let engine = s.health.engine_running.load(Ordering::SeqCst);
    let code = if engine {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"status": if engine { "ok" } else { "engine stopped" }})),
    )
        .into_response()
}

async fn readyz(State(s): State<ApiState>) -> Response {
    let checks = [
        (
            "sources_started",
            s.health.sources_started.load(Ordering::SeqCst),
        ),
        (
            "engine_running",
            s.health.engine_running.load(Ordering::SeqCst),
        ),
        (
            "store_writable",
            s.health.store_writable.load(Ordering::SeqCst),
        ),
    ];
    let ready = checks.iter().all(|(_, ok)| *ok);
    let body: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"ready": ready, "checks": body}))).into_response()
}
