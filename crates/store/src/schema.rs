//! Schema migrations, tracked with `PRAGMA user_version`.
//!
//! Migration N (1-based) is `MIGRATIONS[N - 1]`. Each runs in its own
//! transaction together with the `user_version` bump, so a crash mid-way
//! leaves the previous version intact. Never edit a released migration:
//! append a new one.

use rusqlite::{Connection, TransactionBehavior};

use crate::StoreError;

/// Version 1: every table, the append-only audit triggers and the guards
/// that keep freezes from being deleted, edited or un-lifted.
const V1: &str = r#"
CREATE TABLE checkpoints (
    chain      TEXT    PRIMARY KEY NOT NULL,
    block      INTEGER NOT NULL CHECK (block >= 0),
    hash       TEXT    NOT NULL,
    updated_at TEXT    NOT NULL
) STRICT;

CREATE TABLE findings (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    t        TEXT    NOT NULL,
    t_ns     INTEGER NOT NULL,
    rule     TEXT    NOT NULL,
    severity TEXT    NOT NULL,
    scope    TEXT    NOT NULL,
    body     TEXT    NOT NULL CHECK (json_valid(body))
) STRICT;
CREATE INDEX findings_by_time ON findings (t_ns, seq);

CREATE TABLE freezes (
    id          TEXT    PRIMARY KEY NOT NULL,
    t           TEXT    NOT NULL,
    t_ns        INTEGER NOT NULL,
    scope       TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    rule        TEXT    NOT NULL,
    severity    TEXT    NOT NULL,
    body        TEXT    NOT NULL CHECK (json_valid(body)),
    status      TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'lifted')),
    lifted_at   TEXT,
    lifted_by   TEXT,
    lift_reason TEXT,
    CHECK (
        (status = 'active' AND lifted_at IS NULL AND lifted_by IS NULL AND lift_reason IS NULL)
        OR (status = 'lifted' AND lifted_at IS NOT NULL AND lifted_by IS NOT NULL
            AND lift_reason IS NOT NULL AND lift_reason <> '')
    )
) STRICT;
CREATE INDEX freezes_by_time ON freezes (t_ns, id);
CREATE INDEX freezes_by_status ON freezes (status, t_ns);

CREATE TRIGGER freezes_no_delete BEFORE DELETE ON freezes
BEGIN
    SELECT RAISE(ABORT, 'freezes are never deleted');
END;
CREATE TRIGGER freezes_immutable
BEFORE UPDATE OF id, t, t_ns, scope, reason, rule, severity, body ON freezes
BEGIN
    SELECT RAISE(ABORT, 'a freeze is immutable once raised');
END;
CREATE TRIGGER freezes_no_unlift BEFORE UPDATE ON freezes WHEN OLD.status = 'lifted'
BEGIN
    SELECT RAISE(ABORT, 'a lifted freeze stays lifted');
END;

CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    subject TEXT    NOT NULL,
    detail  TEXT    NOT NULL CHECK (json_valid(detail))
) STRICT;
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;

CREATE TABLE state (
    key        TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL CHECK (json_valid(value)),
    updated_at TEXT NOT NULL
) STRICT;
"#;

/// Version 2: the outbox of actions (webhook deliveries, pages), queued in
/// the same transaction as what caused them and never deleted.
const V2: &str = r#"
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel         TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    body            TEXT    NOT NULL CHECK (json_valid(body)),
    created_at      TEXT    NOT NULL,
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    delivered_at    TEXT,
    UNIQUE (channel, key)
) STRICT;
CREATE INDEX outbox_due ON outbox (status, next_attempt_ms);

CREATE TRIGGER outbox_no_delete BEFORE DELETE ON outbox
BEGIN
    SELECT RAISE(ABORT, 'outbox actions are never deleted');
END;
CREATE TRIGGER outbox_immutable
BEFORE UPDATE OF id, channel, key, kind, body, created_at ON outbox
BEGIN
    SELECT RAISE(ABORT, 'an outbox action is immutable once queued');
END;
CREATE TRIGGER outbox_delivered_stays BEFORE UPDATE ON outbox WHEN OLD.status = 'delivered'
BEGIN
    SELECT RAISE(ABORT, 'a delivered action stays delivered');
END;
"#;

/// Every migration, in order.
const MIGRATIONS: &[&str] = &[V1, V2];

/// The schema version this binary writes.
pub(crate) fn latest_version() -> i64 {
    // A handful of migrations always fits an i64.
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Brings the schema up to [`latest_version`], refusing a newer one.
///
/// The version is read again inside each migration's write transaction, so
/// two processes opening a new file at once do not both run migration 1.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let supported = latest_version();
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let found: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > supported {
            return Err(StoreError::SchemaTooNew { found, supported });
        }
        let index = usize::try_from(found).map_err(|_| StoreError::Corrupt {
            what: "PRAGMA user_version".to_string(),
            detail: format!("negative schema version {found}"),
        })?;
        let Some(sql) = MIGRATIONS.get(index) else {
            return Ok(()); // up to date
        };
        let version = found + 1;
        let step = || -> rusqlite::Result<()> {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)
        };
        step().map_err(|source| StoreError::Migrate { version, source })?;
        tx.commit()
            .map_err(|source| StoreError::Migrate { version, source })?;
    }
}
