//! `POST /v1/intents`: the exchange's withdrawal system registers the
//! withdrawals it is about to sign and gets the engine's pre-signing
//! verdict for each, `allow` or `hold` with its reasons.
//!
//! Body: `{"intents": [{"id", "chain", "wallet", "to", "asset", "amount",
//! "decimals", "tx_hash"?}]}`, `amount` a decimal string of whole units
//! with at most `decimals` fractional digits. A hold is written to the
//! store (a freeze of scope `intent:<id>`) before it is answered.

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use drainguard_engine::Verdict;
use drainguard_model::{Address, Amount, Asset, Chain, Intent, TxHash};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use crate::{
    api::{ApiState, error},
    auth::{Access, INTENTS_TOKEN_ENV, check_bearer},
    reload::Control,
};

/// Intents in one request, at most.
pub(crate) const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    intents: Vec<RawIntent>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntent {
    id: String,
    chain: String,
    wallet: String,
    to: String,
    asset: String,
    amount: String,
    decimals: u8,
    tx_hash: Option<String>,
}

/// Checks one intent, naming the field at fault.
fn check(i: usize, r: RawIntent) -> Result<Intent, String> {
    let field = |f: &str, m: &str| format!("intents[{i}].{f}: {m}");
    for (name, v) in [
        ("id", &r.id),
        ("chain", &r.chain),
        ("wallet", &r.wallet),
        ("to", &r.to),
        ("asset", &r.asset),
    ] {
        if v.trim().is_empty() {
            return Err(field(name, "must not be empty"));
        }
    }
    if r.decimals > crate::config::MAX_DECIMALS {
        return Err(field("decimals", "at most 36"));
    }
    let amount = Amount::parse_decimal(&r.amount, r.decimals)
        .map_err(|e| field("amount", &format!("{:?}: {e}", r.amount)))?;
    Ok(Intent {
        id: r.id,
        chain: Chain::new(&r.chain),
        wallet: Address::new(&r.wallet),
        to: Address::new(&r.to),
        asset: Asset::new(&r.asset),
        amount,
        decimals: r.decimals,
        tx_hash: r.tx_hash.as_deref().map(TxHash::new),
    })
}

fn refuse(s: &ApiState, headers: &HeaderMap) -> Option<Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match check_bearer(s.intents_token.as_ref(), presented) {
        Access::Granted => None,
        Access::Disabled => Some(error(
            StatusCode::FORBIDDEN,
            format!("the intents API is disabled: set {INTENTS_TOKEN_ENV} to enable it"),
        )),
        Access::Unauthenticated => Some(error(
            StatusCode::UNAUTHORIZED,
            "missing or malformed Authorization header: expected `Bearer <intents token>`",
        )),
        Access::Denied => Some(error(StatusCode::FORBIDDEN, "wrong intents token")),
    }
}

pub(crate) async fn post_intents(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse(&s, &headers) {
        return refused;
    }
    let parsed: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body is not a valid intents batch: {e}"),
            );
        }
    };
    if parsed.intents.is_empty() || parsed.intents.len() > MAX_BATCH {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "a batch holds 1 to {MAX_BATCH} intents, not {}",
                parsed.intents.len()
            ),
        );
    }
    let mut intents = Vec::with_capacity(parsed.intents.len());
    let mut errors = Vec::new();
    for (i, r) in parsed.intents.into_iter().enumerate() {
        match check(i, r) {
            Ok(intent) => intents.push(intent),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"error": format!("{} invalid intent field(s); nothing was registered", errors.len()), "errors": errors})),
        )
            .into_response();
    }
    let ids: Vec<String> = intents.iter().map(|i| i.id.clone()).collect();
    let (reply, answer) = oneshot::channel();
    if s.control
        .send(Control::Intents { intents, reply })
        .await
        .is_err()
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the engine is not running");
    }
    let Ok(verdicts) = answer.await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine stopped before answering; ask again",
        );
    };
    let verdicts: Vec<_> = ids
        .iter()
        .zip(verdicts)
        .map(|(id, v)| match v {
            Verdict::Allow => json!({"id": id, "decision": "allow", "reasons": []}),
            Verdict::Hold { reasons } => json!({"id": id, "decision": "hold", "reasons": reasons}),
        })
        .collect();
    (StatusCode::OK, Json(json!({"verdicts": verdicts}))).into_response()
}
