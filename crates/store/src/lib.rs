//! The embedded SQLite store of the drainguard daemon.
//!
//! One file holds everything that must survive a restart: each chain's
//! checkpoint, the findings, the freezes and their lifecycle, the outbox
//! of actions, the append-only audit log, and the engine's learned state. See [`Store`].
//!
//! The core guarantee is [`Store::commit`]: the findings and freezes that
//! some blocks produced, their audit rows, and the checkpoints those blocks
//! allow are written in ONE transaction, checkpoints last. A checkpoint
//! therefore never advances past work that is not durable, and never moves
//! backwards except through [`Store::rewind_checkpoint`], which is audited.
//!
//! The database runs in WAL mode with `synchronous=FULL`: a committed freeze
//! survives a power loss. The audit table is append-only (SQLite triggers
//! abort any `UPDATE` or `DELETE`), freezes are never deleted or edited, and
//! a lifted freeze stays lifted. The schema is versioned with
//! `PRAGMA user_version` and migrated on open.
//!
//! Findings and freezes are stored as their serde JSON in a `body` column,
//! next to the columns used to query them.

mod error;
mod outbox;
mod schema;
mod store;
mod types;

pub use error::StoreError;
pub use outbox::{ActionStatus, Attempt, NewAction, OutboxAction, OutboxCounts, RedriveOutcome};
pub use store::Store;
pub use types::{
    AuditEntry, Batch, Checkpoint, CommitOutcome, FreezeFilter, FreezeStatus, LiftOutcome,
    StoredFreeze,
};

/// The `action` values the store writes to the audit log.
pub mod action {
    /// A finding was recorded by [`Store::commit`](crate::Store::commit).
    pub const FINDING: &str = "finding";
    /// The engine raised a new freeze through
    /// [`Store::commit`](crate::Store::commit).
    pub const FREEZE_RAISED: &str = "freeze.raised";
    /// An operator raised a freeze by hand.
    pub const FREEZE_MANUAL: &str = "freeze.manual";
    /// An operator lifted a freeze.
    pub const FREEZE_LIFTED: &str = "freeze.lifted";
    /// A chain's checkpoint was moved back after a reorg.
    pub const CHECKPOINT_REWIND: &str = "checkpoint.rewind";
    /// A receiver accepted an outbox action (a webhook, a page).
    pub const DELIVERED: &str = "delivery.succeeded";
    /// An outbox action failed for good (until re-driven).
    pub const DELIVERY_FAILED: &str = "delivery.failed";
    /// An operator put a failed outbox action back in the queue.
    pub const REDRIVE: &str = "outbox.redrive";
}

/// The `actor` values the store writes for the daemon's own actions.
pub mod actor {
    /// The rules engine (findings, automatic freezes).
    pub const ENGINE: &str = "engine";
    /// A chain watcher (checkpoint rewinds after a reorg).
    pub const WATCHER: &str = "watcher";
    /// The delivery worker (webhooks, pages).
    pub const RESPONDER: &str = "responder";
}
