//! The store's typed errors.

use std::path::PathBuf;

use drainguard_model::Chain;

/// Everything that can go wrong in the store.
///
/// [`StoreError::is_retriable`] tells a transient condition (the database
/// is locked by another writer) from a permanent one (a corrupt row, a
/// checkpoint that would move backwards).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or configured.
    #[error("cannot open store {path}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file refused write-ahead logging.
    #[error("store {path} refused journal_mode=WAL (it reports {mode:?})")]
    JournalMode {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },
    /// The database was written by a newer drainguard.
    #[error("store schema version {found} is newer than this binary supports ({supported})")]
    SchemaTooNew {
        /// The `user_version` found in the file.
        found: i64,
        /// The latest version this binary knows.
        supported: i64,
    },
    /// A schema migration failed (and was rolled back).
    #[error("store schema migration to version {version} failed")]
    Migrate {
        /// The version being migrated to.
        version: i64,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A statement failed.
    #[error("store query failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row could not be decoded.
    #[error("corrupt store row ({what}): {detail}")]
    Corrupt {
        /// Which row or column.
        what: String,
        /// Why it could not be decoded.
        detail: String,
    },
    /// A value could not be encoded to JSON.
    #[error("cannot encode {what} as JSON")]
    Encode {
        /// What was being encoded.
        what: String,
        /// What serde_json said.
        #[source]
        source: serde_json::Error,
    },
    /// A value does not fit the database's signed 64-bit integers.
    #[error("{what} {value} is out of range for the store")]
    OutOfRange {
        /// What the value is.
        what: &'static str,
        /// The value.
        value: u64,
    },
    /// A commit tried to move a chain's checkpoint to a lower block.
    #[error(
        "checkpoint of chain {chain} would move backwards from block {from} to {to}; use rewind_checkpoint for a reorg"
    )]
    CheckpointBackwards {
        /// The chain.
        chain: Chain,
        /// The stored block.
        from: u64,
        /// The block the batch carried.
        to: u64,
    },
    /// A commit gave the checkpoint's block with a different hash: the
    /// stored block was reorganized out and must be rewound explicitly.
    #[error(
        "checkpoint of chain {chain} at block {block} has hash {stored}, the batch says {given}; use rewind_checkpoint for a reorg"
    )]
    CheckpointForked {
        /// The chain.
        chain: Chain,
        /// The block height.
        block: u64,
        /// The stored hash.
        stored: String,
        /// The hash the batch carried.
        given: String,
    },
    /// `rewind_checkpoint` was asked to move a checkpoint forwards.
    #[error("cannot rewind checkpoint of chain {chain} forwards from block {from} to {to}")]
    RewindForward {
        /// The chain.
        chain: Chain,
        /// The stored block.
        from: u64,
        /// The requested block.
        to: u64,
    },
    /// A lift or a rewind was asked for without a reason.
    #[error("a reason is required")]
    EmptyReason,
    /// A human action was asked for without naming who.
    #[error("an actor is required")]
    EmptyActor,
}

impl StoreError {
    /// Whether trying again later may succeed: the database was busy or
    /// locked by another connection. Every other error is permanent.
    pub fn is_retriable(&self) -> bool {
        let sqlite = match self {
            StoreError::Sqlite(e)
            | StoreError::Open { source: e, .. }
            | StoreError::Migrate { source: e, .. } => e,
            _ => return false,
        };
        matches!(
            sqlite.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
        )
    }
}
