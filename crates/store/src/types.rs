//! Plain data going in and out of the store.

use drainguard_model::{Chain, Finding, Freeze, FreezeId};
use serde::{Deserialize, Serialize};

/// The last block of a chain whose events are fully processed and whose
/// resulting work is durable.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Block height.
    pub block: u64,
    /// Block hash (kept to notice a reorg of the checkpointed block).
    pub hash: String,
}

/// One unit of work made durable by [`Store::commit`](crate::Store::commit):
/// what the engine concluded from some blocks, and the checkpoints those
/// blocks allow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// Findings to record (each audited as `finding`).
    pub findings: Vec<Finding>,
    /// Freezes to record, idempotent by id (each new one audited as
    /// `freeze.raised`).
    pub freezes: Vec<Freeze>,
    /// Checkpoints to advance, applied last and in order.
    pub checkpoints: Vec<(Chain, Checkpoint)>,
    /// Actions to queue in the outbox (idempotent by channel and key),
    /// durable with the freezes and findings that caused them.
    pub actions: Vec<crate::NewAction>,
    /// State to save with them (key, value), as
    /// [`Store::put_state`](crate::Store::put_state) does: what the pager
    /// knows of open incidents moves with the pages it queued.
    pub state: Vec<(String, serde_json::Value)>,
}

impl Batch {
    /// Whether the batch carries nothing at all.
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty()
            && self.freezes.is_empty()
            && self.checkpoints.is_empty()
            && self.actions.is_empty()
            && self.state.is_empty()
    }
}

/// What [`Store::commit`](crate::Store::commit) did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitOutcome {
    /// The `seq` given to each finding, in batch order.
    pub finding_seqs: Vec<i64>,
    /// Freeze ids recorded for the first time, in batch order: the ones to
    /// act on.
    pub new_freezes: Vec<FreezeId>,
    /// Freeze ids that were already stored (left untouched), in batch order.
    pub existing_freezes: Vec<FreezeId>,
    /// How many of the batch's actions were new to the outbox.
    pub queued_actions: usize,
}

/// What [`Store::lift_freeze`](crate::Store::lift_freeze) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LiftOutcome {
    /// The freeze was active and is now lifted.
    Lifted,
    /// No freeze has that id.
    NotFound,
    /// The freeze was lifted before; nothing changed.
    AlreadyLifted,
}

/// Which freezes [`Store::freezes`](crate::Store::freezes) returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FreezeFilter {
    /// Active and lifted.
    #[default]
    All,
    /// Active only.
    Active,
}

/// Whether a freeze still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreezeStatus {
    /// Withdrawals in its scope are halted.
    Active,
    /// A human lifted it.
    Lifted,
}

impl FreezeStatus {
    /// The name stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            FreezeStatus::Active => "active",
            FreezeStatus::Lifted => "lifted",
        }
    }

    /// Parses a `status` column value.
    pub fn parse(s: &str) -> Option<FreezeStatus> {
        match s {
            "active" => Some(FreezeStatus::Active),
            "lifted" => Some(FreezeStatus::Lifted),
            _ => None,
        }
    }
}

/// A freeze as stored, with its lifecycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredFreeze {
    /// The freeze as raised.
    pub freeze: Freeze,
    /// Active or lifted.
    pub status: FreezeStatus,
    /// When it was lifted (RFC 3339 UTC, wall clock).
    pub lifted_at: Option<String>,
    /// Who lifted it.
    pub lifted_by: Option<String>,
    /// Why it was lifted.
    pub lift_reason: Option<String>,
}

/// One row of the append-only audit log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Position in the log (strictly increasing, never reused).
    pub seq: i64,
    /// When it was written (RFC 3339 UTC, wall clock).
    pub at: String,
    /// Who acted: a person, or `engine` / `watcher` for the daemon itself.
    pub actor: String,
    /// What was done, such as `freeze.lifted` (see [`action`](crate::action)).
    pub action: String,
    /// What it was done to: a freeze id, a scope, a chain.
    pub subject: String,
    /// The particulars.
    pub detail: serde_json::Value,
}
