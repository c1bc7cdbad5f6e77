//! [`Store`]: the SQLite connection and every operation on it.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use drainguard_model::{Chain, Finding, Freeze, FreezeId, Timestamp};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    AuditEntry, Batch, Checkpoint, CommitOutcome, FreezeFilter, FreezeStatus, LiftOutcome,
    StoreError, StoredFreeze, action, actor, schema,
};

/// How long a statement waits for another connection's write lock before
/// failing with a retriable error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The embedded SQLite store of the daemon: chain checkpoints, findings,
/// freezes, the append-only audit log and learned engine state.
///
/// It owns one connection and is meant to be used from one task (it is
/// `Send`, not `Sync`). Every write is one transaction, and every
/// transaction is synced to disk before it returns (`synchronous=FULL` in
/// WAL mode): a freeze that [`commit`](Store::commit) reported survives a
/// crash or a power loss.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    path: Option<PathBuf>,
}

impl Store {
    /// Opens the database at `path`, creating it if needed, configures it
    /// (WAL, `synchronous=FULL`, busy timeout, foreign keys) and migrates its
    /// schema to the latest version.
    ///
    /// Fails with [`StoreError::JournalMode`] when the file system refuses
    /// write-ahead logging, and with [`StoreError::SchemaTooNew`] when a newer
    /// drainguard wrote the file.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::JournalMode {
                path: path.to_path_buf(),
                mode,
            });
        }
        configure(&conn).map_err(open_err)?;
        schema::migrate(&mut conn)?;
        Ok(Store {
            conn,
            path: Some(path.to_path_buf()),
        })
    }

    /// Opens a fresh private in-memory database (for tests and `replay`):
    /// the same schema, nothing durable.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let open_err = |source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        };
        let mut conn = Connection::open_in_memory().map_err(open_err)?;
        configure(&conn).map_err(open_err)?;
        schema::migrate(&mut conn)?;
        Ok(Store { conn, path: None })
    }

    /// The database file, or `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Changes how long a statement waits for another connection's write
    /// lock before failing with a retriable error (5 s by default).
    pub fn set_busy_timeout(&self, timeout: Duration) -> Result<(), StoreError> {
        Ok(self.conn.busy_timeout(timeout)?)
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// The checkpoint of `chain`, if one was ever written.
    pub fn checkpoint(&self, chain: &Chain) -> Result<Option<Checkpoint>, StoreError> {
        read_checkpoint(&self.conn, chain)
    }

    /// Every chain's checkpoint, ordered by chain name.
    pub fn checkpoints(&self) -> Result<Vec<(Chain, Checkpoint)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT chain, block, hash FROM checkpoints ORDER BY chain")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (chain, block, hash) = row?;
            let chain = Chain::new(&chain);
            let block = block_from_sql(&chain, block)?;
            out.push((chain, Checkpoint { block, hash }));
        }
        Ok(out)
    }

    /// Makes a batch durable in ONE transaction: inserts its findings, its
    /// freezes (idempotent by id: a stored id is left untouched and reported
    /// in [`CommitOutcome::existing_freezes`]), one audit row per finding
    /// (`finding`) and per new freeze (`freeze.raised`), and last advances
    /// its checkpoints.
    ///
    /// A checkpoint only moves forward here: a lower block than the stored
    /// one fails with [`StoreError::CheckpointBackwards`], the stored block
    /// with another hash with [`StoreError::CheckpointForked`] (a reorg goes
    /// through [`rewind_checkpoint`](Store::rewind_checkpoint)). On any error
    /// nothing of the batch is written, so a checkpoint never advances past
    /// work that is not durable.
    pub fn commit(&mut self, batch: &Batch) -> Result<CommitOutcome, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        let mut outcome = CommitOutcome::default();
        for finding in &batch.findings {
            let seq = insert_finding(&tx, finding)?;
            let detail = json!({
                "seq": seq,
                "t": finding.t,
                "rule": finding.rule,
                "kind": finding.kind,
                "severity": finding.severity,
                "shadow": finding.shadow,
                "summary": finding.summary,
            });
            insert_audit(
                &tx,
                &at,
                actor::ENGINE,
                action::FINDING,
                &finding.scope.to_string(),
                &detail,
            )?;
            outcome.finding_seqs.push(seq);
        }
        for freeze in &batch.freezes {
            if insert_freeze(&tx, freeze)? {
                insert_audit(
                    &tx,
                    &at,
                    actor::ENGINE,
                    action::FREEZE_RAISED,
                    &freeze.id.0,
                    &freeze_detail(freeze),
                )?;
                outcome.new_freezes.push(freeze.id.clone());
            } else {
                outcome.existing_freezes.push(freeze.id.clone());
            }
        }
        outcome.queued_actions = crate::outbox::insert_actions(&tx, &batch.actions, &at)?;
        for (key, value) in &batch.state {
            write_state(&tx, key, value, &at)?;
        }
        for (chain, next) in &batch.checkpoints {
            if let Some(stored) = read_checkpoint(&tx, chain)? {
                if next.block < stored.block {
                    return Err(StoreError::CheckpointBackwards {
                        chain: chain.clone(),
                        from: stored.block,
                        to: next.block,
                    });
                }
                if next.block == stored.block && next.hash != stored.hash {
                    return Err(StoreError::CheckpointForked {
                        chain: chain.clone(),
                        block: stored.block,
                        stored: stored.hash,
                        given: next.hash.clone(),
                    });
                }
            }
            write_checkpoint(&tx, chain, next, &at)?;
        }
        tx.commit()?;
        Ok(outcome)
    }

    /// Moves `chain`'s checkpoint back to `to` after a reorg, and audits it
    /// as `checkpoint.rewind` with the reason. Returns the checkpoint it
    /// replaced (`None` when the chain had none: then `to` is simply set).
    ///
    /// `to` may equal the stored block (a same-height reorg changes only the
    /// hash) but may not be above it ([`StoreError::RewindForward`]); the
    /// reason must not be blank ([`StoreError::EmptyReason`]).
    pub fn rewind_checkpoint(
        &mut self,
        chain: &Chain,
        to: &Checkpoint,
        reason: &str,
    ) -> Result<Option<Checkpoint>, StoreError> {
        if reason.trim().is_empty() {
            return Err(StoreError::EmptyReason);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        let stored = read_checkpoint(&tx, chain)?;
        if let Some(from) = stored.as_ref().map(|s| s.block).filter(|&b| to.block > b) {
            return Err(StoreError::RewindForward {
                chain: chain.clone(),
                from,
                to: to.block,
            });
        }
        write_checkpoint(&tx, chain, to, &at)?;
        let detail = json!({ "from": stored, "to": to, "reason": reason });
        insert_audit(
            &tx,
            &at,
            actor::WATCHER,
            action::CHECKPOINT_REWIND,
            chain.as_str(),
            &detail,
        )?;
        tx.commit()?;
        Ok(stored)
    }

    /// Records a freeze an operator raised by hand and audits the request as
    /// `freeze.manual` under `actor`. Returns whether the id was new; an id
    /// already stored (active or lifted) is left as it is, and the request
    /// is still audited (with `"new": false`).
    ///
    /// `actions` (the webhook delivery of the freeze) are queued in the same
    /// transaction, so the freeze is never recorded without them.
    pub fn raise_manual_freeze(
        &mut self,
        freeze: &Freeze,
        actor: &str,
        actions: &[crate::NewAction],
    ) -> Result<bool, StoreError> {
        if actor.trim().is_empty() {
            return Err(StoreError::EmptyActor);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        let new = insert_freeze(&tx, freeze)?;
        let mut detail = freeze_detail(freeze);
        if let Value::Object(map) = &mut detail {
            map.insert("new".to_string(), Value::Bool(new));
        }
        insert_audit(
            &tx,
            &at,
            actor,
            action::FREEZE_MANUAL,
            &freeze.id.0,
            &detail,
        )?;
        crate::outbox::insert_actions(&tx, actions, &at)?;
        tx.commit()?;
        Ok(new)
    }

    /// Lifts an active freeze on a human's word and audits it as
    /// `freeze.lifted` with `actor` and `reason`. A blank reason is refused
    /// ([`StoreError::EmptyReason`]), as is a blank actor. Nothing is written
    /// when the freeze does not exist or is already lifted.
    ///
    /// `actions` (telling the exchange the freeze is lifted) are queued in
    /// the same transaction, only when the freeze is actually lifted.
    pub fn lift_freeze(
        &mut self,
        id: &FreezeId,
        actor: &str,
        reason: &str,
        actions: &[crate::NewAction],
    ) -> Result<LiftOutcome, StoreError> {
        who_and_why(actor, reason)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let status: Option<String> = tx
            .query_row("SELECT status FROM freezes WHERE id = ?1", [&id.0], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(status) = status else {
            return Ok(LiftOutcome::NotFound);
        };
        match parse_status(&id.0, &status)? {
            FreezeStatus::Lifted => return Ok(LiftOutcome::AlreadyLifted),
            FreezeStatus::Active => {}
        }
        let at = now();
        tx.execute(
            "UPDATE freezes SET status = 'lifted', lifted_at = ?2, lifted_by = ?3, lift_reason = ?4 \
             WHERE id = ?1 AND status = 'active'",
            params![id.0, at, actor, reason],
        )?;
        let detail = json!({ "reason": reason });
        insert_audit(&tx, &at, actor, action::FREEZE_LIFTED, &id.0, &detail)?;
        crate::outbox::insert_actions(&tx, actions, &at)?;
        tx.commit()?;
        Ok(LiftOutcome::Lifted)
    }

    /// One stored freeze by id.
    pub fn freeze(&self, id: &FreezeId) -> Result<Option<StoredFreeze>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(&format!("{FREEZE_SELECT} WHERE id = ?1"))?;
        let mut rows = stmt.query_map([&id.0], freeze_row)?;
        rows.next().transpose()?.map(decode_freeze).transpose()
    }

    /// The stored freezes, oldest first (by freeze time, then id).
    pub fn freezes(&self, filter: FreezeFilter) -> Result<Vec<StoredFreeze>, StoreError> {
        let sql = match filter {
            FreezeFilter::All => format!("{FREEZE_SELECT} ORDER BY t_ns, id"),
            FreezeFilter::Active => {
                format!("{FREEZE_SELECT} WHERE status = 'active' ORDER BY t_ns, id")
            }
        };
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([], freeze_row)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(decode_freeze(row?)?);
        }
        Ok(out)
    }

    /// Up to `limit` findings whose time is at or after `since`, oldest
    /// first (by finding time, then insertion order).
    pub fn findings_since(
        &self,
        since: Timestamp,
        limit: usize,
    ) -> Result<Vec<Finding>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(
            "SELECT seq, body FROM findings WHERE t_ns >= ?1 ORDER BY t_ns, seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since.0, limit], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, body) = row?;
            out.push(decode_json(&format!("findings seq {seq}"), &body)?);
        }
        Ok(out)
    }

    /// Appends one row to the audit log and returns its `seq`.
    pub fn append_audit(
        &mut self,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &Value,
    ) -> Result<i64, StoreError> {
        insert_audit(&self.conn, &now(), actor, action, subject, detail)
    }

    /// The audit log in order. With `Some(n)`, only the `n` most recent
    /// entries (still oldest first).
    pub fn audit(&self, limit: Option<usize>) -> Result<Vec<AuditEntry>, StoreError> {
        let limit = limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        let mut stmt = self.conn.prepare(
            "SELECT seq, at, actor, action, subject, detail FROM \
             (SELECT * FROM audit ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, at, actor, action, subject, detail) = row?;
            let detail = decode_json(&format!("audit seq {seq}"), &detail)?;
            out.push(AuditEntry {
                seq,
                at,
                actor,
                action,
                subject,
                detail,
            });
        }
        Ok(out)
    }

    /// Stores learned engine state under `key`, replacing what was there.
    pub fn put_state(&mut self, key: &str, value: &Value) -> Result<(), StoreError> {
        write_state(&self.conn, key, value, &now())
    }

    /// The learned engine state under `key`, if any.
    pub fn get_state(&self, key: &str) -> Result<Option<Value>, StoreError> {
        let body: Option<String> = self
            .conn
            .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?;
        body.map(|b| decode_json(&format!("state {key:?}"), &b))
            .transpose()
    }

    /// A cheap readiness probe: whether a write transaction can start right
    /// now (`BEGIN IMMEDIATE; ROLLBACK`). It waits at most the busy timeout
    /// for another writer.
    pub fn is_writable(&self) -> bool {
        if !self.conn.is_autocommit() {
            return false;
        }
        let began = self.conn.execute_batch("BEGIN IMMEDIATE").is_ok();
        let rolled_back = self.conn.is_autocommit() || self.conn.execute_batch("ROLLBACK").is_ok();
        began && rolled_back
    }

    /// Raw access for tests inside this crate.
    #[cfg(test)]
    pub(crate) fn raw(&self) -> &Connection {
        &self.conn
    }
}

/// A human's action needs a name and a reason, both non-blank.
pub(crate) fn who_and_why(actor: &str, reason: &str) -> Result<(), StoreError> {
    if reason.trim().is_empty() {
        return Err(StoreError::EmptyReason);
    }
    if actor.trim().is_empty() {
        return Err(StoreError::EmptyActor);
    }
    Ok(())
}

/// The pragmas every connection gets (journal mode aside).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

/// The wall clock as stored in `at`-style columns.
pub(crate) fn now() -> String {
    Timestamp::now().to_rfc3339()
}

pub(crate) fn encode<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|source| StoreError::Encode {
        what: what.to_string(),
        source,
    })
}

pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    what: &str,
    body: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

fn block_to_sql(block: u64) -> Result<i64, StoreError> {
    i64::try_from(block).map_err(|_| StoreError::OutOfRange {
        what: "block",
        value: block,
    })
}

fn block_from_sql(chain: &Chain, block: i64) -> Result<u64, StoreError> {
    u64::try_from(block).map_err(|_| StoreError::Corrupt {
        what: format!("checkpoint of chain {chain}"),
        detail: format!("negative block {block}"),
    })
}

fn read_checkpoint(conn: &Connection, chain: &Chain) -> Result<Option<Checkpoint>, StoreError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT block, hash FROM checkpoints WHERE chain = ?1",
            [chain.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(block, hash)| {
        Ok(Checkpoint {
            block: block_from_sql(chain, block)?,
            hash,
        })
    })
    .transpose()
}

fn write_checkpoint(
    conn: &Connection,
    chain: &Chain,
    cp: &Checkpoint,
    at: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO checkpoints (chain, block, hash, updated_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT(chain) DO UPDATE SET block = excluded.block, hash = excluded.hash, \
         updated_at = excluded.updated_at",
        params![chain.as_str(), block_to_sql(cp.block)?, cp.hash, at],
    )?;
    Ok(())
}

pub(crate) fn insert_audit(
    conn: &Connection,
    at: &str,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &Value,
) -> Result<i64, StoreError> {
    let detail = encode("audit detail", detail)?;
    conn.execute(
        "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, actor, action, subject, detail],
    )?;
    Ok(conn.last_insert_rowid())
}

fn write_state(conn: &Connection, key: &str, value: &Value, at: &str) -> Result<(), StoreError> {
    let body = encode(&format!("state {key:?}"), value)?;
    conn.execute(
        "INSERT INTO state (key, value, updated_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        params![key, body, at],
    )?;
    Ok(())
}

fn insert_finding(conn: &Connection, finding: &Finding) -> Result<i64, StoreError> {
    let body = encode("finding", finding)?;
    conn.execute(
        "INSERT INTO findings (t, t_ns, rule, severity, scope, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            finding.t.to_rfc3339(),
            finding.t.0,
            finding.rule,
            finding.severity.as_str(),
            finding.scope.to_string(),
            body
        ],
    )?;
    Ok(conn.last_insert_rowid())
}

/// Inserts a freeze unless its id is stored; returns whether it was new.
fn insert_freeze(conn: &Connection, freeze: &Freeze) -> Result<bool, StoreError> {
    let body = encode(&format!("freeze {}", freeze.id), freeze)?;
    let inserted = conn.execute(
        "INSERT INTO freezes (id, t, t_ns, scope, reason, rule, severity, body, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'active') ON CONFLICT(id) DO NOTHING",
        params![
            freeze.id.0,
            freeze.t.to_rfc3339(),
            freeze.t.0,
            freeze.scope.to_string(),
            freeze.reason,
            freeze.rule,
            freeze.severity.as_str(),
            body
        ],
    )?;
    Ok(inserted == 1)
}

/// The audit detail of a raised freeze (its evidence stays in `freezes`).
fn freeze_detail(freeze: &Freeze) -> Value {
    json!({
        "t": freeze.t,
        "scope": freeze.scope,
        "rule": freeze.rule,
        "severity": freeze.severity,
        "reason": freeze.reason,
        "findings": freeze.findings.len(),
    })
}

const FREEZE_SELECT: &str =
    "SELECT id, body, status, lifted_at, lifted_by, lift_reason FROM freezes";

/// A `freezes` row before decoding.
struct FreezeRow {
    id: String,
    body: String,
    status: String,
    lifted_at: Option<String>,
    lifted_by: Option<String>,
    lift_reason: Option<String>,
}

fn freeze_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FreezeRow> {
    Ok(FreezeRow {
        id: r.get(0)?,
        body: r.get(1)?,
        status: r.get(2)?,
        lifted_at: r.get(3)?,
        lifted_by: r.get(4)?,
        lift_reason: r.get(5)?,
    })
}

fn parse_status(id: &str, status: &str) -> Result<FreezeStatus, StoreError> {
    FreezeStatus::parse(status).ok_or_else(|| StoreError::Corrupt {
        what: format!("freeze {id} status"),
        detail: format!("unknown status {status:?}"),
    })
}

fn decode_freeze(row: FreezeRow) -> Result<StoredFreeze, StoreError> {
    let what = format!("freeze {}", row.id);
    let freeze: Freeze = decode_json(&what, &row.body)?;
    if freeze.id.0 != row.id {
        return Err(StoreError::Corrupt {
            what,
            detail: format!("body carries id {}", freeze.id),
        });
    }
    Ok(StoredFreeze {
        freeze,
        status: parse_status(&row.id, &row.status)?,
        lifted_at: row.lifted_at,
        lifted_by: row.lifted_by,
        lift_reason: row.lift_reason,
    })
}

#[cfg(test)]
mod tests {
    use drainguard_model::{Scope, Severity};

    use super::*;

    fn freeze(id: &str) -> Freeze {
        Freeze {
            id: FreezeId(id.to_string()),
            t: Timestamp::from_unix_secs(1_694_512_800),
            scope: Scope::Global,
            reason: "test".to_string(),
            rule: "manual".to_string(),
            severity: Severity::Critical,
            findings: Vec::new(),
            supersedes: Vec::new(),
        }
    }

    fn assert_aborts(store: &Store, sql: &str, message: &str) {
        let err = store.raw().execute(sql, []).unwrap_err();
        assert!(err.to_string().contains(message), "{sql}: {err}");
    }

    #[test]
    fn store_is_send() {
        fn send<T: Send>() {}
        send::<Store>();
    }

    #[test]
    fn connection_is_configured_and_migrated() {
        let store = Store::open_in_memory().unwrap();
        let get = |p: &str| -> i64 {
            store
                .raw()
                .pragma_query_value(None, p, |r| r.get(0))
                .unwrap()
        };
        assert_eq!(get("synchronous"), 2, "FULL");
        assert_eq!(get("foreign_keys"), 1);
        assert_eq!(get("busy_timeout"), 5000);
        assert_eq!(get("user_version"), schema::latest_version());
        assert_eq!(store.schema_version().unwrap(), 2);
    }

    #[test]
    fn migrating_again_is_a_no_op() {
        let mut store = Store::open_in_memory().unwrap();
        store.append_audit("a", "b", "c", &json!({})).unwrap();
        schema::migrate(&mut store.conn).unwrap();
        assert_eq!(store.audit(None).unwrap().len(), 1);
    }

    #[test]
    fn audit_rows_cannot_be_updated_or_deleted() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .append_audit("alice", "test", "x", &json!({"k": 1}))
            .unwrap();
        assert_aborts(&store, "UPDATE audit SET actor = 'mallory'", "append-only");
        assert_aborts(&store, "DELETE FROM audit", "append-only");
        let log = store.audit(None).unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].actor, "alice");
    }

    #[test]
    fn freezes_cannot_be_deleted_edited_or_unlifted() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .raise_manual_freeze(&freeze("fz-1"), "alice", &[])
            .unwrap();
        assert_aborts(&store, "DELETE FROM freezes", "never deleted");
        assert_aborts(&store, "UPDATE freezes SET scope = 'chain:x'", "immutable");
        // A lift without a reason breaks the table's CHECK.
        let err = store
            .raw()
            .execute(
                "UPDATE freezes SET status = 'lifted', lifted_at = 'now', lifted_by = 'bob'",
                [],
            )
            .unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{err}");
        store
            .lift_freeze(&FreezeId("fz-1".into()), "bob", "false positive", &[])
            .unwrap();
        assert_aborts(
            &store,
            "UPDATE freezes SET status = 'active', lifted_at = NULL, lifted_by = NULL, lift_reason = NULL",
            "stays lifted",
        );
        let all = store.freezes(FreezeFilter::All).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].status, FreezeStatus::Lifted);
    }

    #[test]
    fn undecodable_rows_are_reported_as_corrupt() {
        let store = Store::open_in_memory().unwrap();
        store
            .raw()
            .execute(
                "INSERT INTO findings (t, t_ns, rule, severity, scope, body) \
                 VALUES ('1970-01-01T00:00:00Z', 0, 'r', 'info', 'global', '{\"rule\": 1}')",
                [],
            )
            .unwrap();
        let err = store.findings_since(Timestamp(0), 10).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { what, .. } if what == "findings seq 1"),
            "{err:?}"
        );
        assert!(!err.is_retriable());

        store
            .raw()
            .execute(
                "INSERT INTO freezes (id, t, t_ns, scope, reason, rule, severity, body) \
                 VALUES ('fz-x', 't', 0, 'global', 'r', 'r', 'critical', '[]')",
                [],
            )
            .unwrap();
        let err = store.freezes(FreezeFilter::All).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn freeze_body_must_match_its_id() {
        let store = Store::open_in_memory().unwrap();
        let body = serde_json::to_string(&freeze("fz-other")).unwrap();
        store
            .raw()
            .execute(
                "INSERT INTO freezes (id, t, t_ns, scope, reason, rule, severity, body) \
                 VALUES ('fz-1', 't', 0, 'global', 'r', 'r', 'critical', ?1)",
                [body],
            )
            .unwrap();
        let err = store.freeze(&FreezeId("fz-1".into())).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    }

    #[test]
    fn is_writable_leaves_no_transaction_open() {
        let store = Store::open_in_memory().unwrap();
        assert!(store.is_writable());
        assert!(store.raw().is_autocommit());
        assert!(store.is_writable());
    }

    #[test]
    fn blocks_beyond_i64_are_refused_not_wrapped() {
        let mut store = Store::open_in_memory().unwrap();
        let batch = Batch {
            checkpoints: vec![(
                Chain::new("x"),
                Checkpoint {
                    block: u64::MAX,
                    hash: "h".into(),
                },
            )],
            ..Batch::default()
        };
        let err = store.commit(&batch).unwrap_err();
        assert!(matches!(err, StoreError::OutOfRange { .. }), "{err:?}");
        assert_eq!(store.checkpoint(&Chain::new("x")).unwrap(), None);
    }
}
