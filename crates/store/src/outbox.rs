//! The outbox: every action drainguard takes on the outside world (a
//! freeze webhook, a page) is a row here before its first attempt.
//!
//! Rows are queued in the same transaction as what caused them (see
//! [`Batch::actions`](crate::Batch::actions)), idempotent by channel and
//! key, and never deleted. A delivery worker takes the due ones, and records
//! each outcome: delivered (final), a retry at a later time, or failed (a
//! permanent error, final until an operator re-drives it). Deliveries and
//! permanent failures are audited; a crash between the attempt and its
//! record means the action is attempted again, which the receiver's
//! idempotency key makes harmless.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    Store, StoreError, action,
    store::{decode_json, encode, insert_audit, now},
};

/// The wall clock in milliseconds since the epoch, as `next_attempt_ms`.
pub(crate) fn now_ms() -> i64 {
    drainguard_model::Timestamp::now().0.div_euclid(1_000_000)
}

/// An action to queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewAction {
    /// Where it goes: `webhook` or `pagerduty`.
    pub channel: String,
    /// Its idempotency key within the channel (a freeze id; a dedup key and
    /// what is done to it). Queuing the same key twice keeps the first.
    pub key: String,
    /// What it is: `freeze.raised`, `freeze.lifted`, `trigger`, `resolve`.
    pub kind: String,
    /// The body to send, exactly.
    pub body: Value,
}

/// Where an action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for its first or next attempt.
    Pending,
    /// A receiver accepted it.
    Delivered,
    /// A permanent error; waits for an operator to re-drive it.
    Failed,
}

impl ActionStatus {
    /// The name stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Delivered => "delivered",
            ActionStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<ActionStatus> {
        match s {
            "pending" => Some(ActionStatus::Pending),
            "delivered" => Some(ActionStatus::Delivered),
            "failed" => Some(ActionStatus::Failed),
            _ => None,
        }
    }
}

/// An action as stored, with its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxAction {
    /// Its row id (the handle for re-driving it).
    pub id: i64,
    /// See [`NewAction::channel`].
    pub channel: String,
    /// See [`NewAction::key`].
    pub key: String,
    /// See [`NewAction::kind`].
    pub kind: String,
    /// See [`NewAction::body`].
    pub body: Value,
    /// When it was queued (RFC 3339 UTC, wall clock).
    pub created_at: String,
    /// Pending, delivered or failed.
    pub status: ActionStatus,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (ms since the epoch).
    pub next_attempt_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When a receiver accepted it.
    pub delivered_at: Option<String>,
}

/// What one delivery attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Accepted (a 2xx) by `endpoint`.
    Delivered {
        /// Which endpoint took it (a name, never a secret).
        endpoint: String,
    },
    /// A temporary failure: try again at `next_attempt_ms`.
    Retry {
        /// What went wrong.
        error: String,
        /// When to try again (ms since the epoch).
        next_attempt_ms: i64,
    },
    /// A permanent failure (a 4xx other than 408 or 429): a human must look.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// Counts of the outbox by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    /// Waiting to be delivered.
    pub pending: u64,
    /// Delivered.
    pub delivered: u64,
    /// Failed for good until re-driven.
    pub failed: u64,
}

/// What [`Store::redrive`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RedriveOutcome {
    /// The failed action is pending again, due now.
    Requeued,
    /// No action has that id.
    NotFound,
    /// The action was not failed (pending or delivered); nothing changed.
    NotFailed,
}

/// Inserts an action unless its (channel, key) is queued already; whether
/// it was new.
pub(crate) fn insert_action(
    conn: &Connection,
    a: &NewAction,
    at: &str,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let body = encode("outbox body", &a.body)?;
    let n = conn.execute(
        "INSERT OR IGNORE INTO outbox (channel, key, kind, body, created_at, next_attempt_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![a.channel, a.key, a.kind, body, at, now_ms],
    )?;
    Ok(n == 1)
}

/// Queues actions inside an open transaction; how many were new.
pub(crate) fn insert_actions(
    conn: &Connection,
    actions: &[NewAction],
    at: &str,
) -> Result<usize, StoreError> {
    let now_ms = now_ms();
    let mut new = 0;
    for a in actions {
        new += usize::from(insert_action(conn, a, at, now_ms)?);
    }
    Ok(new)
}

const ACTION_SELECT: &str = "SELECT id, channel, key, kind, body, created_at, status, attempts, \
     next_attempt_ms, last_error, delivered_at FROM outbox";

type ActionRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<String>,
    Option<String>,
);

fn action_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ActionRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
        r.get(10)?,
    ))
}

fn decode_action(row: ActionRow) -> Result<OutboxAction, StoreError> {
    let (id, channel, key, kind, body, created_at, status, attempts, next, last_error, delivered) =
        row;
    let what = format!("outbox action {id}");
    let status = ActionStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
        what: what.clone(),
        detail: format!("unknown status {status:?}"),
    })?;
    Ok(OutboxAction {
        id,
        channel,
        key,
        kind,
        body: decode_json(&what, &body)?,
        created_at,
        status,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_ms: next,
        last_error,
        delivered_at: delivered,
    })
}

impl Store {
    /// Queues actions on their own (the pager's resolves, say), in one
    /// transaction; how many were new.
    pub fn queue_actions(&mut self, actions: &[NewAction]) -> Result<usize, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let new = insert_actions(&tx, actions, &now())?;
        tx.commit()?;
        Ok(new)
    }

    /// Up to `limit` pending actions due at `now_ms`, oldest first.
    pub fn due_actions(&self, now_ms: i64, limit: usize) -> Result<Vec<OutboxAction>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare(&format!(
            "{ACTION_SELECT} WHERE status = 'pending' AND next_attempt_ms <= ?1 \
             ORDER BY next_attempt_ms, id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![now_ms, limit], action_row)?;
        rows.map(|r| decode_action(r?)).collect()
    }

    /// When the earliest pending action is due (ms since the epoch).
    pub fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        Ok(self.conn.query_row(
            "SELECT MIN(next_attempt_ms) FROM outbox WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?)
    }

    /// Every action, or those of one status, oldest first.
    pub fn outbox(&self, status: Option<ActionStatus>) -> Result<Vec<OutboxAction>, StoreError> {
        let mut stmt = match status {
            Some(_) => self
                .conn
                .prepare(&format!("{ACTION_SELECT} WHERE status = ?1 ORDER BY id"))?,
            None => self.conn.prepare(&format!("{ACTION_SELECT} ORDER BY id"))?,
        };
        let rows = match status {
            Some(s) => stmt.query_map([s.as_str()], action_row)?,
            None => stmt.query_map([], action_row)?,
        };
        rows.map(|r| decode_action(r?)).collect()
    }

    /// The outbox counted by status.
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT status, COUNT(*) FROM outbox GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut c = OutboxCounts::default();
        for row in rows {
            let (status, n) = row?;
            let n = u64::try_from(n).unwrap_or(0);
            match ActionStatus::parse(&status) {
                Some(ActionStatus::Pending) => c.pending = n,
                Some(ActionStatus::Delivered) => c.delivered = n,
                Some(ActionStatus::Failed) => c.failed = n,
                None => {}
            }
        }
        Ok(c)
    }

    /// Records the outcome of one attempt at a pending action. A delivery
    /// and a permanent failure are audited (`delivery.succeeded`,
    /// `delivery.failed`) in the same transaction. An action that is no
    /// longer pending (delivered meanwhile by another worker) is left as it
    /// is; returns whether the row changed.
    pub fn record_attempt(&mut self, id: i64, attempt: &Attempt) -> Result<bool, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let at = now();
        let row: Option<(String, String, String)> = tx
            .query_row(
                "SELECT channel, key, kind FROM outbox WHERE id = ?1 AND status = 'pending'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((channel, key, kind)) = row else {
            return Ok(false);
        };
        match attempt {
            Attempt::Delivered { endpoint } => {
                tx.execute(
                    "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, \
                     delivered_at = ?2, last_error = NULL WHERE id = ?1",
                    params![id, at],
                )?;
                let detail = json!({"outbox_id": id, "channel": channel, "kind": kind, "endpoint": endpoint});
                insert_audit(
                    &tx,
                    &at,
                    crate::actor::RESPONDER,
                    action::DELIVERED,
                    &key,
                    &detail,
                )?;
            }
            Attempt::Retry {
                error,
                next_attempt_ms,
            } => {
                tx.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, \
                     next_attempt_ms = ?3 WHERE id = ?1",
                    params![id, error, next_attempt_ms],
                )?;
            }
            Attempt::Failed { error } => {
                tx.execute(
                    "UPDATE outbox SET status = 'failed', attempts = attempts + 1, \
                     last_error = ?2 WHERE id = ?1",
                    params![id, error],
                )?;
                let detail =
                    json!({"outbox_id": id, "channel": channel, "kind": kind, "error": error});
                insert_audit(
                    &tx,
                    &at,
                    crate::actor::RESPONDER,
                    action::DELIVERY_FAILED,
                    &key,
                    &detail,
                )?;
            }
        }
        tx.commit()?;
        Ok(true)
    }

    /// Puts a failed action back in the queue, due now, on an operator's
    /// word; audited as `outbox.redrive` with `actor` and `reason`.
    pub fn redrive(
        &mut self,
        id: i64,
        actor: &str,
        reason: &str,
    ) -> Result<RedriveOutcome, StoreError> {
        crate::store::who_and_why(actor, reason)?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, String)> = tx
            .query_row("SELECT status, key FROM outbox WHERE id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let Some((status, key)) = row else {
            return Ok(RedriveOutcome::NotFound);
        };
        if status != ActionStatus::Failed.as_str() {
            return Ok(RedriveOutcome::NotFailed);
        }
        let at = now();
        tx.execute(
            "UPDATE outbox SET status = 'pending', next_attempt_ms = ?2 WHERE id = ?1",
            params![id, now_ms()],
        )?;
        let detail = json!({"outbox_id": id, "reason": reason});
        insert_audit(&tx, &at, actor, action::REDRIVE, &key, &detail)?;
        tx.commit()?;
        Ok(RedriveOutcome::Requeued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;

    fn webhook(key: &str) -> NewAction {
        NewAction {
            channel: "webhook".into(),
            key: key.into(),
            kind: "freeze.raised".into(),
            body: json!({"freeze": {"id": key}}),
        }
    }

    #[test]
    fn actions_are_queued_once_and_never_deleted() {
        let mut store = Store::open_in_memory().unwrap();
        let batch = Batch {
            actions: vec![webhook("fz-1"), webhook("fz-1"), webhook("fz-2")],
            ..Batch::default()
        };
        assert_eq!(store.commit(&batch).unwrap().queued_actions, 2);
        assert_eq!(store.commit(&batch).unwrap().queued_actions, 0);
        assert_eq!(store.outbox(None).unwrap().len(), 2);
        assert!(store.raw().execute("DELETE FROM outbox", []).is_err());
        assert!(
            store
                .raw()
                .execute("UPDATE outbox SET body = '{}' WHERE id = 1", [])
                .is_err()
        );
    }

    #[test]
    fn attempts_retry_deliver_fail_and_redrive() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .queue_actions(&[webhook("fz-1"), webhook("fz-2")])
            .unwrap();
        let due = store.due_actions(now_ms() + 1, 10).unwrap();
        assert_eq!(due.len(), 2);
        let (a, b) = (due[0].id, due[1].id);

        let later = now_ms() + 60_000;
        let retry = Attempt::Retry {
            error: "connection refused".into(),
            next_attempt_ms: later,
        };
        assert!(store.record_attempt(a, &retry).unwrap());
        // Not due again before its time.
        let due: Vec<i64> = store
            .due_actions(now_ms() + 1, 10)
            .unwrap()
            .iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(due, vec![b]);
        assert_eq!(store.next_due_ms().unwrap().map(|t| t <= later), Some(true));

        let ok = Attempt::Delivered {
            endpoint: "primary".into(),
        };
        assert!(store.record_attempt(a, &ok).unwrap());
        // Delivered is final: a late record changes nothing.
        assert!(!store.record_attempt(a, &retry).unwrap());
        assert!(
            store
                .raw()
                .execute("UPDATE outbox SET status = 'pending' WHERE id = ?1", [a])
                .is_err()
        );

        let bad = Attempt::Failed {
            error: "HTTP 401: bad signature".into(),
        };
        assert!(store.record_attempt(b, &bad).unwrap());
        assert_eq!(
            store.outbox_counts().unwrap(),
            OutboxCounts {
                pending: 0,
                delivered: 1,
                failed: 1
            }
        );
        assert!(store.due_actions(i64::MAX, 10).unwrap().is_empty());
        assert_eq!(
            store.redrive(a, "alice", "again").unwrap(),
            RedriveOutcome::NotFailed
        );
        assert_eq!(
            store.redrive(99, "alice", "again").unwrap(),
            RedriveOutcome::NotFound
        );
        assert!(store.redrive(b, "alice", " ").is_err());
        assert_eq!(
            store.redrive(b, "alice", "secret rotated").unwrap(),
            RedriveOutcome::Requeued
        );
        let due = store.due_actions(now_ms() + 1, 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].id, due[0].attempts), (b, 1));

        let actions: Vec<String> = store
            .audit(None)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(
            actions,
            vec![action::DELIVERED, action::DELIVERY_FAILED, action::REDRIVE]
        );
    }
}
