//! The operator API: freezes (list, raise by hand, lift), findings, and the
//! outbox (list, re-drive). Every call needs the admin token. A lift needs
//! a reason and a name, and is never automatic; a manual freeze and a lift
//! are durable, with the webhook that tells the exchange, before they are
//! answered.
#![allow(
    clippy::result_large_err,
    reason = "the error is the HTTP answer itself, returned once per request"
)]

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use drainguard_model::{FreezeId, Scope, Timestamp};
use drainguard_store::{ActionStatus, FreezeFilter, LiftOutcome, RedriveOutcome, StoreError};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::json;
use tokio::sync::oneshot;

use crate::{
    api::{ApiState, error, refuse_unless_admin},
    reload::Control,
};

/// Findings in one answer, at most.
pub(crate) const MAX_FINDINGS: usize = 10_000;

/// A query string of the expected shape, or a JSON 400 naming the fault.
fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, Response> {
    q.map(|Query(t)| t).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the query string is not valid: {}", e.body_text()),
        )
    })
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON of the expected shape: {e}"),
        )
    })
}

/// Sends the engine thread a request and waits for its answer; a 503
/// naming the cause when the engine is gone or could not write.
async fn ask_engine<T>(
    s: &ApiState,
    request: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Control,
) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    if s.control.send(request(reply)).await.is_err() {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine is not running",
        ));
    }
    match answer.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, e)),
        Err(_) => Err(error(StatusCode::SERVICE_UNAVAILABLE, "the engine stopped")),
    }
}

/// `by` and `reason` of an operator's call, both required.
fn who_and_why(by: &str, reason: &str) -> Result<(), Response> {
    let mut errors = Vec::new();
    if by.trim().is_empty() {
        errors.push("by: who is acting must be given");
    }
    if reason.trim().is_empty() {
        errors.push("reason: why must be given");
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": errors.join("; "), "errors": errors})),
        )
            .into_response())
    }
}

/// Runs a read on the API's store connection off the async threads.
async fn read<T: Send + 'static>(
    s: &ApiState,
    f: impl FnOnce(&mut drainguard_store::Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let store = s.store.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let mut guard = store.lock().map_err(|_| StoreError::Corrupt {
            what: "the API's store connection".into(),
            detail: "a previous request panicked while holding it".into(),
        })?;
        f(&mut guard)
    })
    .await;
    match joined {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.is_retriable() => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store is busy, try again: {e}"),
        )),
        Ok(Err(e)) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the store failed: {e}"),
        )),
        Err(e) => Err(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the request failed unexpectedly: {e}"),
        )),
    }
}

/// `?status=` of the list calls.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatusQuery {
    status: Option<String>,
}

/// The admin token checked, then the query string parsed.
fn admitted<T>(
    s: &ApiState,
    headers: &HeaderMap,
    q: Result<Query<T>, QueryRejection>,
) -> Result<T, Response> {
    if let Some(refused) = refuse_unless_admin(s, headers) {
        return Err(refused);
    }
    query(q)
}

/// `GET /v1/freezes?status=active|all`: stored freezes, oldest first.
pub(crate) async fn list(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Response {
    let q = match admitted(&s, &headers, q) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let filter = match q.status.as_deref() {
        None | Some("all") => FreezeFilter::All,
        Some("active") => FreezeFilter::Active,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("status must be `active` or `all`, not {other:?}"),
            );
        }
    };
    match read(&s, move |st| st.freezes(filter)).await {
        Ok(freezes) => Json(json!({ "freezes": freezes })).into_response(),
        Err(resp) => resp,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RaiseBody {
    scope: String,
    reason: String,
    by: String,
}

/// `POST /v1/freezes`: an operator freezes a scope by hand.
pub(crate) async fn raise(State(s): State<ApiState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = refuse_unless_admin(&s, &headers) {
        return refused;
    }
    let b: RaiseBody = match parse(&body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Err(resp) = who_and_why(&b.by, &b.reason) {
        return resp;
    }
    let scope = match Scope::parse(&b.scope) {
        Ok(scope) => scope,
        Err(e) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "scope: {e} (global, chain:<chain>, asset:<chain>:<asset>, wallet:<chain>:<address>)"
                ),
            );
        }
    };
    let asked = ask_engine(&s, |reply| Control::ManualFreeze {
        scope,
        reason: b.reason,
        actor: b.by,
        reply,
    })
    .await;
    match asked {
        Ok(freeze) => (StatusCode::CREATED, Json(json!({ "freeze": freeze }))).into_response(),
        Err(resp) => resp,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhyBody {
    reason: String,
    by: String,
}

/// `POST /v1/freezes/{id}/lift`: a human lifts a freeze, with a reason.
pub(crate) async fn lift(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_unless_admin(&s, &headers) {
        return refused;
    }
    let b: WhyBody = match parse(&body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Err(resp) = who_and_why(&b.by, &b.reason) {
        return resp;
    }
    let asked = ask_engine(&s, |reply| Control::Lift {
        id: FreezeId(id.clone()),
        actor: b.by,
        reason: b.reason,
        reply,
    })
    .await;
    match asked {
        Ok(LiftOutcome::Lifted) => {
            Json(json!({"id": id, "outcome": LiftOutcome::Lifted})).into_response()
        }
        Ok(LiftOutcome::NotFound) => {
            error(StatusCode::NOT_FOUND, format!("no freeze has id {id:?}"))
        }
        Ok(LiftOutcome::AlreadyLifted) => (
            StatusCode::CONFLICT,
            Json(json!({"error": format!("freeze {id} was already lifted"), "outcome": LiftOutcome::AlreadyLifted})),
        )
            .into_response(),
        Err(resp) => resp,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FindingsQuery {
    since: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/findings?since=<RFC 3339>&limit=<n>`: findings at or after a
/// time, oldest first.
pub(crate) async fn findings(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<FindingsQuery>, QueryRejection>,
) -> Response {
    let q = match admitted(&s, &headers, q) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let since = match q.since.as_deref() {
        None => Timestamp(i64::MIN),
        Some(t) => match Timestamp::parse_rfc3339(t) {
            Ok(t) => t,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("since: {t:?} is not an RFC 3339 time: {e}"),
                );
            }
        },
    };
    let limit = q.limit.unwrap_or(1000);
    if limit == 0 || limit > MAX_FINDINGS {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit must be in 1..={MAX_FINDINGS}"),
        );
    }
    match read(&s, move |st| st.findings_since(since, limit)).await {
        Ok(f) => Json(json!({ "findings": f })).into_response(),
        Err(resp) => resp,
    }
}

/// `GET /v1/outbox?status=pending|delivered|failed`: queued actions.
pub(crate) async fn outbox(
    State(s): State<ApiState>,
    headers: HeaderMap,
    q: Result<Query<StatusQuery>, QueryRejection>,
) -> Response {
    let q = match admitted(&s, &headers, q) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    let status = match q.status.as_deref() {
        None | Some("all") => None,
        Some("pending") => Some(ActionStatus::Pending),
        Some("delivered") => Some(ActionStatus::Delivered),
        Some("failed") => Some(ActionStatus::Failed),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("status must be pending, delivered, failed or all, not {other:?}"),
            );
        }
    };
    match read(&s, move |st| st.outbox(status)).await {
        Ok(a) => Json(json!({ "actions": a })).into_response(),
        Err(resp) => resp,
    }
}

/// `POST /v1/outbox/{id}/redrive`: an operator puts a failed action back
/// in the queue once its cause is fixed.
pub(crate) async fn redrive(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse_unless_admin(&s, &headers) {
        return refused;
    }
    let Ok(id) = id.parse::<i64>() else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no outbox action has id {id:?}"),
        );
    };
    let b: WhyBody = match parse(&body) {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    if let Err(resp) = who_and_why(&b.by, &b.reason) {
        return resp;
    }
    let outcome = read(&s, move |st| st.redrive(id, &b.by, &b.reason)).await;
    match outcome {
        Ok(RedriveOutcome::Requeued) => {
            s.wake.notify_one();
            Json(json!({"id": id, "outcome": RedriveOutcome::Requeued})).into_response()
        }
        Ok(RedriveOutcome::NotFound) => {
            error(StatusCode::NOT_FOUND, format!("no outbox action has id {id}"))
        }
        Ok(RedriveOutcome::NotFailed) => (
            StatusCode::CONFLICT,
            Json(json!({"error": format!("outbox action {id} has not failed; nothing to re-drive"), "outcome": RedriveOutcome::NotFailed})),
        )
            .into_response(),
        Err(resp) => resp,
    }
}
