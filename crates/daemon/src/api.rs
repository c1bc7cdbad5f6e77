//! The HTTP API: `/metrics`, `/healthz`, `/readyz`, the withdrawal
//! system's `POST /v1/intents` (its own token), and the operator calls
//! (freezes, findings, outbox, rules reload; the admin token from
//! `DRAINGUARD_ADMIN_TOKEN`). Every error answers JSON `{"error": "..."}`.
//! `docs/openapi.json` documents it, and a test holds the two together.

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
use drainguard_model::{Chain, Timestamp};
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
    /// Each chain watcher's state, shared with it.
    pub(crate) watchers: std::sync::Mutex<Vec<WatcherHealth>>,
}

/// What one chain watcher shares with the daemon.
#[derive(Debug)]
pub(crate) struct WatcherHealth {
    pub(crate) chain: Chain,
    /// Caught up with its node's head (for `/readyz`).
    pub(crate) synced: Arc<AtomicBool>,
    /// Every endpoint failing, since when (for the blind rules).
    pub(crate) outage: Arc<drainguard_evm::Outage>,
}

impl Health {
    fn watchers(&self) -> std::sync::MutexGuard<'_, Vec<WatcherHealth>> {
        self.watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What `/readyz` checks; a process without an engine (`watch`)
    /// leaves the engine out.
    fn checks(&self, engine: bool) -> Vec<(&'static str, bool)> {
        let mut checks = vec![(
            "sources_started",
            self.sources_started.load(Ordering::SeqCst),
        )];
        if engine {
            checks.push(("engine_running", self.engine_running.load(Ordering::SeqCst)));
        }
        checks.push(("store_writable", self.store_writable.load(Ordering::SeqCst)));
        checks.push(("watchers_synced", self.watchers_synced()));
        checks
    }

    /// Whether every chain watcher has caught up (true with none).
    fn watchers_synced(&self) -> bool {
        self.watchers()
            .iter()
            .all(|w| w.synced.load(Ordering::SeqCst))
    }

    /// Each chain watcher's current outage, if every endpoint is failing.
    pub(crate) fn outages(&self) -> Vec<(Chain, Option<(Timestamp, String)>)> {
        self.watchers()
            .iter()
            .map(|w| (w.chain.clone(), w.outage.current()))
            .collect()
    }

    /// Shares a new chain watcher's state.
    pub(crate) fn add_watcher(&self, w: WatcherHealth) {
        self.watchers().push(w);
    }
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
    /// A connection for reads and re-drives (the engine thread owns the
    /// writes of findings and freezes).
    pub(crate) store: Arc<std::sync::Mutex<drainguard_store::Store>>,
    /// Wakes the delivery worker after a re-drive.
    pub(crate) wake: Arc<tokio::sync::Notify>,
}

/// Every route of the router, as (method, path): the OpenAPI document
/// (`docs/openapi.json`) must list exactly these, and a test holds the
/// router to them.
pub(crate) const ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/v1/admin/reload"),
    ("POST", "/v1/intents"),
    ("GET", "/v1/freezes"),
    ("POST", "/v1/freezes"),
    ("POST", "/v1/freezes/{id}/lift"),
    ("GET", "/v1/findings"),
    ("GET", "/v1/outbox"),
    ("POST", "/v1/outbox/{id}/redrive"),
];

pub(crate) fn router(state: ApiState) -> Router {
    use crate::freezes;
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/admin/reload", post(admin_reload))
        .route("/v1/intents", post(crate::intents::post_intents))
        .route("/v1/freezes", get(freezes::list).post(freezes::raise))
        .route("/v1/freezes/{id}/lift", post(freezes::lift))
        .route("/v1/findings", get(freezes::findings))
        .route("/v1/outbox", get(freezes::outbox))
        .route("/v1/outbox/{id}/redrive", post(freezes::redrive))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

/// What a `drainguard watch` process serves: it has no engine, so only
/// its metrics and health.
#[derive(Clone, Debug)]
pub(crate) struct WatchState {
    pub(crate) metrics: Metrics,
    pub(crate) health: Arc<Health>,
}

/// The router of a `drainguard watch` process.
pub(crate) fn watch_router(state: WatchState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<WatchState>| async move { render(&s.metrics) }),
        )
        .route(
            "/healthz",
            get(|| async { Json(json!({"status": "ok"})).into_response() }),
        )
        .route("/readyz", get(watch_readyz))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such endpoint: a watch process serves GET /metrics, /healthz and /readyz (the engine serves the rest)",
            )
        })
        .with_state(state)
}

async fn watch_readyz(State(s): State<WatchState>) -> Response {
    ready_response(&s.health.checks(false))
}

pub(crate) fn error(code: StatusCode, message: impl Into<String>) -> Response {
    (code, Json(json!({"error": message.into()}))).into_response()
}

async fn not_found() -> Response {
    let endpoints: Vec<String> = ROUTES.iter().map(|(m, p)| format!("{m} {p}")).collect();
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "no such endpoint (see docs/openapi.json)", "endpoints": endpoints})),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// The answer to a request that does not carry the admin token; `None`
/// when it does.
pub(crate) fn refuse_unless_admin(s: &ApiState, headers: &HeaderMap) -> Option<Response> {
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
    render(&s.metrics)
}

fn render(metrics: &Metrics) -> Response {
    match metrics.render() {
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
    ready_response(&s.health.checks(true))
}

fn ready_response(checks: &[(&str, bool)]) -> Response {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::reload::RulesSource;

    fn state() -> ApiState {
        let (bus, _rx) = drainguard_bus::bounded::<crate::reload::Control>(4);
        ApiState {
            metrics: Metrics::new().unwrap(),
            health: Arc::new(Health::default()),
            reloader: Reloader::new(RulesSource::Builtin, &bus),
            admin_token: None,
            intents_token: None,
            control: bus.control_sender(),
            store: Arc::new(std::sync::Mutex::new(
                drainguard_store::Store::open_in_memory().unwrap(),
            )),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// (method, path) of every operation in docs/openapi.json.
    fn documented() -> BTreeSet<(String, String)> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut out = BTreeSet::new();
        for (p, ops) in doc["paths"].as_object().unwrap() {
            for m in ops.as_object().unwrap().keys() {
                out.insert((m.to_uppercase(), p.clone()));
            }
        }
        out
    }

    async fn status(method: &str, path: &str) -> StatusCode {
        let uri = path.replace("{id}", "1");
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        router(state()).oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn the_openapi_document_and_the_router_agree() {
        let routes: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented(), routes, "docs/openapi.json vs api::ROUTES");
        for (m, p) in &routes {
            let s = status(m, p).await;
            assert!(
                s != StatusCode::NOT_FOUND && s != StatusCode::METHOD_NOT_ALLOWED,
                "{m} {p} answered {s}"
            );
        }
        // No undocumented method on a documented path.
        let paths: BTreeSet<&String> = routes.iter().map(|(_, p)| p).collect();
        for p in paths {
            for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
                if !routes.contains(&(m.to_string(), p.clone())) {
                    assert_eq!(
                        status(m, p).await,
                        StatusCode::METHOD_NOT_ALLOWED,
                        "{m} {p} is routed but not documented"
                    );
                }
            }
        }
        assert_eq!(status("GET", "/v1/nothing").await, StatusCode::NOT_FOUND);
    }
}
