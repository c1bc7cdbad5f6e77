//! The HTTP API: `/metrics`, `/healthz`, `/readyz`, and the admin call
//! `POST /v1/admin/reload` (bearer token from `DRAINGUARD_ADMIN_TOKEN`).
//! Every error answers JSON `{"error": "..."}`.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

use crate::{
    auth::{ADMIN_TOKEN_ENV, Access, Token, check_bearer},
    metrics::Metrics,
    reload::{ReloadError, Reloader, actor},
};

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

/// The largest request body accepted (413 above it).
pub(crate) const BODY_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone)]
pub(crate) struct ApiState {
    pub(crate) metrics: Metrics,
    pub(crate) health: Arc<Health>,
    /// Reloads the rules.
    pub(crate) reloader: Reloader,
    /// The admin token; `None` disables the admin API.
    pub(crate) admin_token: Option<Token>,
    /// The withdrawal system's token for `POST /v1/intents`.
    pub(crate) intents_token: Option<Token>,
    /// Control messages to the engine thread.
    pub(crate) control: drainguard_bus::ControlSender<crate::reload::Control>,
}

pub(crate) fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/admin/reload", post(admin_reload))
        .route("/v1/intents", post(crate::intents::post_intents))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

pub(crate) fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({"error": message.into()}))).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// The answer to a request that does not carry the admin token; `None`
/// when it does.
fn refuse_unless_admin(s: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match check_bearer(s.admin_token.as_ref(), presented) {
        Access::Granted => None,
        Access::Disabled => Some(error(
            StatusCode::FORBIDDEN,
            format!("the admin API is disabled: set {ADMIN_TOKEN_ENV} to enable it"),
        )),
        Access::Unauthenticated => {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "missing or malformed Authorization header: expected `Bearer <admin token>`",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"drainguard\""),
            );
            Some(resp)
        }
        Access::Denied => Some(error(StatusCode::FORBIDDEN, "wrong admin token")),
    }
}

/// `POST /v1/admin/reload`: reads the rules file again and puts it in
/// force; an invalid file keeps the running rules and lists its errors.
async fn admin_reload(State(s): State<ApiState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_unless_admin(&s, &headers) {
        return refused;
    }
    // On its own task: a client that hangs up does not cut a reload short
    // (between validating and auditing, say).
    let reloader = s.reloader.clone();
    let outcome = tokio::spawn(async move { reloader.reload(actor::ADMIN).await }).await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(message = "rules reload panicked; the running rules stay in force", error = %e);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the reload failed unexpectedly; the running rules stay in force",
            );
        }
    };
    match outcome {
        Ok(n) => (StatusCode::OK, Json(json!({"reloaded": true, "rules": n}))).into_response(),
        Err(ReloadError::Invalid { source, errors }) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({
                "error": format!(
                    "{source}: {} error(s) in the rules; the running rules stay in force",
                    errors.len()
                ),
                "errors": errors,
            })),
        )
            .into_response(),
        Err(ReloadError::EngineStopped) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine is not running; the rules were not reloaded",
        ),
    }
}

async fn metrics(State(s): State<ApiState>) -> Response {
    match s.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
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
