//! The freeze webhook: tells the exchange's withdrawal system to halt
//! withdrawals in a scope (and, on a human's lift, that it may resume).
//!
//! The body is JSON: the freeze with its findings and evidence, and the
//! recommended actions. It is signed with HMAC-SHA256 over
//! `timestamp + "." + body`, in a `Drainguard-Signature: t=<unix
//! seconds>,v1=<hex>` header, and carries an `Idempotency-Key` (the freeze
//! id; `lift:<freeze id>` for a lift), so a receiver can check that it
//! comes from drainguard, is fresh, and is applied once however often it is
//! delivered. The timestamp is taken at each attempt: a freeze delivered
//! after an outage still passes the receiver's freshness window.

use std::collections::BTreeSet;

use drainguard_model::{Freeze, Scope};
use drainguard_store::NewAction;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::Secret;

/// The outbox channel of webhook deliveries.
pub const CHANNEL: &str = "webhook";
/// The signature header.
pub const SIGNATURE_HEADER: &str = "Drainguard-Signature";
/// The idempotency header.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Outbox kind and body `type` of a freeze.
pub const RAISED: &str = "freeze.raised";
/// Outbox kind and body `type` of a lift.
pub const LIFTED: &str = "freeze.lifted";

/// One receiving endpoint of the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A name for logs, metrics and the audit log (never the URL's
    /// credentials).
    pub name: String,
    /// Where to POST.
    pub url: String,
}

/// The checked webhook configuration: endpoints tried in order on every
/// attempt (a primary, then fallbacks), and the signing secret.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The endpoints, primary first.
    pub endpoints: Vec<Endpoint>,
    /// The signing secret.
    pub secret: Secret,
}

/// The signature header value for a body sent at unix time `t`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// The (chain, wallet) pairs a freeze concerns: its scope's wallet and
/// every wallet its findings name.
fn affected_wallets(freeze: &Freeze) -> Vec<Value> {
    let mut set = BTreeSet::new();
    if let Scope::Wallet(c, w) = &freeze.scope {
        set.insert((c.to_string(), w.to_string()));
    }
    for f in &freeze.findings {
        if let (Some(c), Some(w)) = (&f.chain, &f.wallet) {
            set.insert((c.to_string(), w.to_string()));
        }
    }
    set.into_iter()
        .map(|(chain, address)| json!({"chain": chain, "address": address}))
        .collect()
}

/// The outbox action that delivers a freeze.
pub fn raised(freeze: &Freeze) -> NewAction {
    let scope = freeze.scope.to_string();
    let body = json!({
        "type": RAISED,
        "id": freeze.id.0,
        "freeze": freeze,
        "recommended_actions": [
            {
                "action": "suspend_withdrawals",
                "scope": scope,
                "why": "a rule or an operator froze this scope; see the findings and their evidence",
            },
            {
                "action": "move_hot_wallet_funds_to_cold_storage",
                // Every hot wallet in the scope; those the evidence names
                // first.
                "scope": scope,
                "wallets": affected_wallets(freeze),
                "why": "what is left in an affected hot wallet is what a thief takes next",
            },
        ],
    });
    NewAction {
        channel: CHANNEL.to_string(),
        key: freeze.id.0.clone(),
        kind: RAISED.to_string(),
        body,
    }
}

/// The outbox action that tells the exchange a human lifted a freeze.
pub fn lifted(freeze: &Freeze, actor: &str, reason: &str) -> NewAction {
    let key = format!("lift:{}", freeze.id.0);
    let body = json!({
        "type": LIFTED,
        "id": key,
        "freeze": freeze,
        "lifted_by": actor,
        "reason": reason,
        "recommended_actions": [
            {
                "action": "resume_withdrawals",
                "scope": freeze.scope.to_string(),
                "why": "lifted by a human; other freezes in force still apply",
            },
        ],
    });
    NewAction {
        channel: CHANNEL.to_string(),
        key,
        kind: LIFTED.to_string(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_timestamp_and_body() {
        let a = sign(b"k", 1_700_000_000, b"{\"a\":1}");
        assert!(a.starts_with("t=1700000000,v1="), "{a}");
        assert_eq!(a.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(a, sign(b"k", 1_700_000_001, b"{\"a\":1}"));
        assert_ne!(a, sign(b"k", 1_700_000_000, b"{\"a\":2}"));
        assert_ne!(a, sign(b"other", 1_700_000_000, b"{\"a\":1}"));
        // RFC 4231 test case 2 shape: HMAC-SHA256("Jefe", ...) is stable.
        let known = sign(b"Jefe", 0, b"what do ya want for nothing?");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        assert_eq!(
            known,
            format!("t=0,v1={}", hex::encode(mac.finalize().into_bytes()))
        );
    }
}
