//! What the engine concludes: findings, their evidence, and freezes.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Address, Asset, Chain, Timestamp, TxHash};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Worth a page.
    Warning,
    /// Money is probably leaving: freeze-worthy.
    Critical,
}

impl Severity {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid scope {0:?}: expected global, chain:<chain>, asset:<chain>:<asset>, wallet:<chain>:<address> or intent:<id>"
)]
pub struct ScopeError(pub String);

/// What a finding or a freeze is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Every chain and wallet.
    Global,
    /// One chain.
    Chain(Chain),
    /// One asset on one chain.
    Asset(Chain, Asset),
    /// One wallet on one chain.
    Wallet(Chain, Address),
    /// One withdrawal intent (a pre-signing hold).
    Intent(String),
}

impl Scope {
    /// Parses the `global` / `chain:..` / `asset:..:..` / `wallet:..:..` /
    /// `intent:..` form.
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        let err = || ScopeError(s.to_string());
        if s == "global" {
            return Ok(Scope::Global);
        }
        let (kind, rest) = s.split_once(':').ok_or_else(err)?;
        let nonempty = |v: &str| if v.is_empty() { Err(err()) } else { Ok(()) };
        match kind {
            "chain" => {
                nonempty(rest)?;
                Ok(Scope::Chain(Chain::new(rest)))
            }
            "intent" => {
                nonempty(rest)?;
                Ok(Scope::Intent(rest.to_string()))
            }
            "asset" | "wallet" => {
                let (c, v) = rest.split_once(':').ok_or_else(err)?;
                nonempty(c)?;
                nonempty(v)?;
                Ok(if kind == "asset" {
                    Scope::Asset(Chain::new(c), Asset::new(v))
                } else {
                    Scope::Wallet(Chain::new(c), Address::new(v))
                })
            }
            _ => Err(err()),
        }
    }

    /// The scope's level: `global`, `chain`, `asset`, `wallet` or `intent`
    /// (a low-cardinality metric label).
    pub fn level(&self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Chain(_) => "chain",
            Scope::Asset(..) => "asset",
            Scope::Wallet(..) => "wallet",
            Scope::Intent(_) => "intent",
        }
    }

    /// The chain, for every scope but global and intent.
    pub fn chain(&self) -> Option<&Chain> {
        match self {
            Scope::Chain(c) | Scope::Asset(c, _) | Scope::Wallet(c, _) => Some(c),
            Scope::Global | Scope::Intent(_) => None,
        }
    }

    /// Whether a freeze of `self` already halts everything `other` would.
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Global, _) => true,
            (Scope::Chain(a), o) => o.chain() == Some(a),
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Chain(c) => write!(f, "chain:{c}"),
            Scope::Asset(c, a) => write!(f, "asset:{c}:{a}"),
            Scope::Wallet(c, w) => write!(f, "wallet:{c}:{w}"),
            Scope::Intent(id) => write!(f, "intent:{id}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One transaction behind a finding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The chain.
    pub chain: Chain,
    /// The transaction.
    pub tx_hash: TxHash,
    /// Log index or output number.
    pub index: u32,
    /// Stage when it was evaluated.
    pub stage: String,
    /// Sender.
    pub from: Address,
    /// Recipient (or spender, or admin target).
    pub to: Address,
    /// Asset symbol.
    pub asset: Asset,
    /// Amount in whole units, as an exact decimal string.
    pub amount: String,
    /// USD value at the time, for display.
    pub usd: f64,
}

/// A rule's conclusion about a scope at a time, with the figures and the
/// transactions that made it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// When (event time).
    pub t: Timestamp,
    /// The rule id.
    pub rule: String,
    /// The rule kind.
    pub kind: String,
    /// How bad.
    pub severity: Severity,
    /// What it is about.
    pub scope: Scope,
    /// The chain, where there is one.
    pub chain: Option<Chain>,
    /// The wallet, where there is one.
    pub wallet: Option<Address>,
    /// One line for a human: what crossed which limit.
    pub summary: String,
    /// Whether the rule runs in shadow mode (recorded, no action).
    pub shadow: bool,
    /// Whether the rule's action is a freeze.
    pub wants_freeze: bool,
    /// The figures, as name → value, that crossed the limit.
    pub figures: Vec<(String, String)>,
    /// The transactions behind it.
    pub evidence: Vec<Evidence>,
}

/// The idempotency key of a freeze: the same incident always yields the
/// same id, across restarts and replays.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FreezeId(pub String);

impl FreezeId {
    /// Derives the id from the things that identify the incident.
    pub fn derive(parts: &[&str]) -> FreezeId {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p.as_bytes());
            h.update([0u8]);
        }
        let digest = h.finalize();
        FreezeId(format!("fz-{}", hex::encode(&digest[..10])))
    }
}

impl fmt::Display for FreezeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A withdrawal freeze over a scope. Never lifted automatically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Freeze {
    /// Idempotency key.
    pub id: FreezeId,
    /// When it was raised.
    pub t: Timestamp,
    /// What it halts.
    pub scope: Scope,
    /// One line for a human.
    pub reason: String,
    /// The rule that raised it (`manual` for an operator).
    pub rule: String,
    /// Severity of the triggering finding.
    pub severity: Severity,
    /// The findings that raised it, with their evidence.
    pub findings: Vec<Finding>,
    /// Narrower freezes in force that this wider one covers (a chain or
    /// global freeze supersedes the wallet freezes inside it; they stay
    /// recorded, and each is lifted only by a human).
    #[serde(default)]
    pub supersedes: Vec<FreezeId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_nest() {
        for s in [
            "global",
            "chain:ethereum",
            "asset:tron:USDT",
            "wallet:ethereum:0xab",
            "intent:w-1",
        ] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        for bad in ["", "chain:", "wallet:eth", "planet:x", "asset::X"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
        let w = Scope::parse("wallet:ethereum:0xAB").unwrap();
        assert!(Scope::Global.covers(&w));
        assert!(Scope::Chain(Chain::new("ethereum")).covers(&w));
        assert!(!Scope::Chain(Chain::new("tron")).covers(&w));
        assert!(!w.covers(&Scope::Global));
    }

    #[test]
    fn freeze_ids_are_stable() {
        let a = FreezeId::derive(&["rule", "wallet:e:0x1", "0xaa:0"]);
        assert_eq!(a, FreezeId::derive(&["rule", "wallet:e:0x1", "0xaa:0"]));
        assert_ne!(a, FreezeId::derive(&["rule", "wallet:e:0x1", "0xaa:1"]));
        assert!(a.0.starts_with("fz-") && a.0.len() == 23);
    }
}
