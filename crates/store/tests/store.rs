//! Behaviour of the store through its public API, on in-memory and on file
//! databases.

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used, reason = "an integration test binary")]

use std::{path::Path, time::Duration};

use drainguard_model::{
    Address, Asset, Chain, Evidence, Finding, Freeze, FreezeId, Scope, Severity, Timestamp, TxHash,
};
use drainguard_store::{
    Batch, Checkpoint, FreezeFilter, FreezeStatus, LiftOutcome, Store, StoreError, action, actor,
};
use serde_json::json;

fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

fn eth() -> Chain {
    Chain::new("ethereum")
}

fn cp(block: u64, hash: &str) -> Checkpoint {
    Checkpoint {
        block,
        hash: hash.to_string(),
    }
}

fn finding(t: &str, rule: &str) -> Finding {
    Finding {
        t: ts(t),
        rule: rule.to_string(),
        kind: "unmatched_outflow".to_string(),
        severity: Severity::Critical,
        scope: Scope::Wallet(eth(), Address::new("0xAbC1")),
        chain: Some(eth()),
        wallet: Some(Address::new("0xabc1")),
        summary: format!("{rule}: 4950.5 ETH left with no intent"),
        shadow: false,
        wants_freeze: true,
        figures: vec![("usd".to_string(), "12000000".to_string())],
        evidence: vec![Evidence {
            chain: eth(),
            tx_hash: TxHash::new("0xDEAD"),
            index: 3,
            stage: "pending".to_string(),
            from: Address::new("0xabc1"),
            to: Address::new("0xbad"),
            asset: Asset::new("ETH"),
            amount: "4950.5".to_string(),
            usd: 12_000_000.25,
        }],
    }
}

fn freeze(id: &str, t: &str) -> Freeze {
    Freeze {
        id: FreezeId(id.to_string()),
        t: ts(t),
        scope: Scope::Chain(eth()),
        reason: "unmatched outflow of 4950.5 ETH".to_string(),
        rule: "unmatched".to_string(),
        severity: Severity::Critical,
        findings: vec![finding(t, "unmatched")],
        supersedes: Vec::new(),
    }
}

fn count(store: &Store, action: &str) -> usize {
    store
        .audit(None)
        .unwrap()
        .iter()
        .filter(|e| e.action == action)
        .count()
}

fn all_findings(store: &Store) -> Vec<Finding> {
    store
        .findings_since(Timestamp(i64::MIN), usize::MAX)
        .unwrap()
}

/// A second, raw connection to a file database.
fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[test]
fn findings_round_trip_in_time_order() {
    let mut store = Store::open_in_memory().unwrap();
    let late = finding("2023-09-12T10:05:00Z", "late");
    let early = finding("2023-09-12T10:00:00.123456789Z", "early");
    let same_a = finding("2023-09-12T10:02:00Z", "same-a");
    let same_b = finding("2023-09-12T10:02:00Z", "same-b");
    let batch = Batch {
        findings: vec![late.clone(), early.clone(), same_a.clone(), same_b.clone()],
        ..Batch::default()
    };
    let outcome = store.commit(&batch).unwrap();
    assert_eq!(outcome.finding_seqs, vec![1, 2, 3, 4]);

    assert_eq!(
        all_findings(&store),
        vec![early, same_a.clone(), same_b.clone(), late.clone()]
    );
    // `since` is inclusive, `limit` caps.
    let since = ts("2023-09-12T10:02:00Z");
    assert_eq!(
        store.findings_since(since, 10).unwrap(),
        vec![same_a.clone(), same_b, late]
    );
    assert_eq!(store.findings_since(since, 1).unwrap(), vec![same_a]);
    assert!(
        store
            .findings_since(ts("2024-01-01T00:00:00Z"), 10)
            .unwrap()
            .is_empty()
    );

    let audit = store.audit(None).unwrap();
    assert_eq!(audit.len(), 4);
    assert!(
        audit
            .iter()
            .all(|e| e.action == action::FINDING && e.actor == actor::ENGINE)
    );
    assert_eq!(audit[0].subject, "wallet:ethereum:0xabc1");
    assert_eq!(audit[0].detail["rule"], "late");
    assert_eq!(audit[0].detail["seq"], 1);
}

#[test]
fn freezes_round_trip_in_time_order() {
    let mut store = Store::open_in_memory().unwrap();
    let b = freeze("fz-b", "2023-09-12T10:05:00Z");
    let a = freeze("fz-a", "2023-09-12T10:01:00Z");
    let outcome = store
        .commit(&Batch {
            freezes: vec![b.clone(), a.clone()],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(outcome.new_freezes, vec![b.id.clone(), a.id.clone()]);
    assert!(outcome.existing_freezes.is_empty());

    let stored = store.freezes(FreezeFilter::All).unwrap();
    let got: Vec<Freeze> = stored.iter().map(|s| s.freeze.clone()).collect();
    assert_eq!(got, vec![a.clone(), b]);
    assert!(stored.iter().all(|s| s.status == FreezeStatus::Active
        && s.lifted_at.is_none()
        && s.lifted_by.is_none()
        && s.lift_reason.is_none()));
    assert_eq!(store.freeze(&a.id).unwrap().unwrap().freeze, a);
    assert!(store.freeze(&FreezeId("fz-none".into())).unwrap().is_none());

    let raised: Vec<_> = store
        .audit(None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action::FREEZE_RAISED)
        .collect();
    assert_eq!(raised.len(), 2);
    assert_eq!(raised[0].subject, "fz-b");
    assert_eq!(raised[0].detail["scope"], "chain:ethereum");
}

#[test]
fn freeze_insert_is_idempotent_by_id() {
    let mut store = Store::open_in_memory().unwrap();
    let first = freeze("fz-1", "2023-09-12T10:00:00Z");
    let mut again = first.clone();
    again.reason = "a different text for the same incident".to_string();

    let o1 = store
        .commit(&Batch {
            freezes: vec![first.clone(), again.clone()],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(o1.new_freezes, vec![first.id.clone()]);
    assert_eq!(o1.existing_freezes, vec![first.id.clone()]);

    let o2 = store
        .commit(&Batch {
            freezes: vec![again],
            ..Batch::default()
        })
        .unwrap();
    assert!(o2.new_freezes.is_empty());
    assert_eq!(o2.existing_freezes, vec![first.id.clone()]);

    let stored = store.freezes(FreezeFilter::All).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].freeze, first, "the first write wins");
    assert_eq!(count(&store, action::FREEZE_RAISED), 1);
}

#[test]
fn checkpoints_advance_with_the_batch() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.checkpoint(&eth()).unwrap(), None);
    store
        .commit(&Batch {
            findings: vec![finding("2023-09-12T10:00:00Z", "r")],
            checkpoints: vec![(eth(), cp(100, "0x100"))],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.checkpoint(&eth()).unwrap(), Some(cp(100, "0x100")));
    // The same block again (same hash) and a higher one are fine.
    store
        .commit(&Batch {
            checkpoints: vec![(eth(), cp(100, "0x100")), (eth(), cp(105, "0x105"))],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.checkpoint(&eth()).unwrap(), Some(cp(105, "0x105")));
    assert_eq!(
        store.checkpoints().unwrap(),
        vec![(eth(), cp(105, "0x105"))]
    );
}

#[test]
fn a_backwards_checkpoint_rolls_back_the_whole_batch() {
    let mut store = Store::open_in_memory().unwrap();
    let btc = Chain::new("bitcoin");
    store
        .commit(&Batch {
            checkpoints: vec![
                (eth(), cp(100, "0x100")),
                (btc.clone(), cp(800_000, "00ab")),
            ],
            ..Batch::default()
        })
        .unwrap();
    let audit_before = store.audit(None).unwrap();

    let bad = Batch {
        findings: vec![finding("2023-09-12T10:00:00Z", "r")],
        freezes: vec![freeze("fz-1", "2023-09-12T10:00:00Z")],
        // Bitcoin moves forward first, then ethereum moves back.
        checkpoints: vec![(btc.clone(), cp(800_001, "00cd")), (eth(), cp(99, "0x99"))],
        actions: vec![drainguard_store::NewAction {
            channel: "webhook".into(),
            key: "fz-1".into(),
            kind: "freeze.raised".into(),
            body: json!({"freeze": {"id": "fz-1"}}),
        }],
        state: vec![("pager".to_string(), json!({"open": {}}))],
    };
    let err = store.commit(&bad).unwrap_err();
    match &err {
        StoreError::CheckpointBackwards { chain, from, to } => {
            assert_eq!((chain, *from, *to), (&eth(), 100, 99));
        }
        other => panic!("expected CheckpointBackwards, got {other:?}"),
    }
    assert!(!err.is_retriable());

    // Nothing of the batch was written.
    assert!(all_findings(&store).is_empty());
    assert!(store.freezes(FreezeFilter::All).unwrap().is_empty());
    assert!(store.outbox(None).unwrap().is_empty());
    assert_eq!(store.get_state("pager").unwrap(), None);
    assert_eq!(store.audit(None).unwrap(), audit_before);
    assert_eq!(store.checkpoint(&eth()).unwrap(), Some(cp(100, "0x100")));
    assert_eq!(store.checkpoint(&btc).unwrap(), Some(cp(800_000, "00ab")));

    // The store is still usable afterwards.
    store
        .commit(&Batch {
            checkpoints: vec![(eth(), cp(101, "0x101"))],
            ..bad
        })
        .unwrap();
    assert_eq!(all_findings(&store).len(), 1);
    assert_eq!(store.outbox(None).unwrap().len(), 1);
    assert_eq!(store.get_state("pager").unwrap(), Some(json!({"open": {}})));
}

#[test]
fn a_forked_checkpoint_is_refused() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .commit(&Batch {
            checkpoints: vec![(eth(), cp(100, "0xaaa"))],
            ..Batch::default()
        })
        .unwrap();
    let err = store
        .commit(&Batch {
            findings: vec![finding("2023-09-12T10:00:00Z", "r")],
            checkpoints: vec![(eth(), cp(100, "0xbbb"))],
            ..Batch::default()
        })
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::CheckpointForked { block: 100, stored, given, .. }
            if stored == "0xaaa" && given == "0xbbb"),
        "{err:?}"
    );
    assert!(all_findings(&store).is_empty());
    assert_eq!(store.checkpoint(&eth()).unwrap(), Some(cp(100, "0xaaa")));
}

#[test]
fn rewind_moves_back_and_is_audited() {
    let mut store = Store::open_in_memory().unwrap();
    store
        .commit(&Batch {
            checkpoints: vec![(eth(), cp(100, "0x100"))],
            ..Batch::default()
        })
        .unwrap();

    assert!(matches!(
        store.rewind_checkpoint(&eth(), &cp(98, "0x98"), "  "),
        Err(StoreError::EmptyReason)
    ));
    assert!(matches!(
        store.rewind_checkpoint(&eth(), &cp(101, "0x101"), "reorg"),
        Err(StoreError::RewindForward {
            from: 100,
            to: 101,
            ..
        })
    ));
    assert_eq!(count(&store, action::CHECKPOINT_REWIND), 0);
    assert_eq!(store.checkpoint(&eth()).unwrap(), Some(cp(100, "0x100")));

    let previous = store
        .rewind_checkpoint(&eth(), &cp(98, "0x98"), "reorg of depth 2 at 99")
        .unwrap();
    assert_eq!(previous, Some(cp(100, "0x100")));
    assert_eq!(store.checkpoint(&eth()).unwrap(), Some(cp(98, "0x98")));

    let log = store.audit(None).unwrap();
    let entry = log.last().unwrap();
    assert_eq!(entry.action, action::CHECKPOINT_REWIND);
    assert_eq!(entry.actor, actor::WATCHER);
    assert_eq!(entry.subject, "ethereum");
    assert_eq!(
        entry.detail,
        json!({
            "from": {"block": 100, "hash": "0x100"},
            "to": {"block": 98, "hash": "0x98"},
            "reason": "reorg of depth 2 at 99",
        })
    );

    // After the rewind, commits advance from the new point.
    store
        .commit(&Batch {
            checkpoints: vec![(eth(), cp(99, "0x99b"))],
            ..Batch::default()
        })
        .unwrap();
    assert_eq!(store.checkpoint(&eth()).unwrap(), Some(cp(99, "0x99b")));
}

#[test]
fn lifting_needs_a_reason_and_is_audited_once() {
    let mut store = Store::open_in_memory().unwrap();
    let fz = freeze("fz-1", "2023-09-12T10:00:00Z");
    store
        .commit(&Batch {
            freezes: vec![fz.clone(), freeze("fz-2", "2023-09-12T10:01:00Z")],
            ..Batch::default()
        })
        .unwrap();
    let audit_before = store.audit(None).unwrap().len();

    for reason in ["", " \n\t"] {
        assert!(matches!(
            store.lift_freeze(&fz.id, "alice", reason, &[]),
            Err(StoreError::EmptyReason)
        ));
    }
    assert!(matches!(
        store.lift_freeze(&fz.id, "", "ok", &[]),
        Err(StoreError::EmptyActor)
    ));
    assert_eq!(
        store
            .lift_freeze(&FreezeId("fz-none".into()), "alice", "ok", &[])
            .unwrap(),
        LiftOutcome::NotFound
    );
    assert_eq!(store.audit(None).unwrap().len(), audit_before);
    assert_eq!(store.freezes(FreezeFilter::Active).unwrap().len(), 2);

    assert_eq!(
        store
            .lift_freeze(
                &fz.id,
                "alice",
                "intents were late; confirmed with ops",
                &[]
            )
            .unwrap(),
        LiftOutcome::Lifted
    );
    assert_eq!(
        store.lift_freeze(&fz.id, "bob", "again", &[]).unwrap(),
        LiftOutcome::AlreadyLifted
    );

    let stored = store.freeze(&fz.id).unwrap().unwrap();
    assert_eq!(stored.status, FreezeStatus::Lifted);
    assert_eq!(stored.lifted_by.as_deref(), Some("alice"));
    assert_eq!(
        stored.lift_reason.as_deref(),
        Some("intents were late; confirmed with ops")
    );
    let lifted_at = stored.lifted_at.unwrap();
    assert!(Timestamp::parse_rfc3339(&lifted_at).is_ok(), "{lifted_at}");

    let active = store.freezes(FreezeFilter::Active).unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].freeze.id.0, "fz-2");
    assert_eq!(store.freezes(FreezeFilter::All).unwrap().len(), 2);

    let lifts: Vec<_> = store
        .audit(None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action::FREEZE_LIFTED)
        .collect();
    assert_eq!(lifts.len(), 1);
    assert_eq!(lifts[0].actor, "alice");
    assert_eq!(lifts[0].subject, "fz-1");
    assert_eq!(
        lifts[0].detail["reason"],
        "intents were late; confirmed with ops"
    );
    assert_eq!(lifts[0].at, lifted_at);
}

#[test]
fn manual_freezes_are_audited_with_their_actor() {
    let mut store = Store::open_in_memory().unwrap();
    let mut fz = freeze("fz-m", "2023-09-12T10:00:00Z");
    fz.rule = "manual".to_string();
    fz.findings.clear();
    assert!(matches!(
        store.raise_manual_freeze(&fz, " ", &[]),
        Err(StoreError::EmptyActor)
    ));
    assert!(store.raise_manual_freeze(&fz, "carol", &[]).unwrap());
    assert!(!store.raise_manual_freeze(&fz, "dave", &[]).unwrap());
    assert_eq!(store.freezes(FreezeFilter::Active).unwrap().len(), 1);

    let manual: Vec<_> = store
        .audit(None)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == action::FREEZE_MANUAL)
        .collect();
    assert_eq!(manual.len(), 2);
    assert_eq!(
        (manual[0].actor.as_str(), &manual[0].detail["new"]),
        ("carol", &json!(true))
    );
    assert_eq!(
        (manual[1].actor.as_str(), &manual[1].detail["new"]),
        ("dave", &json!(false))
    );
    assert_eq!(count(&store, action::FREEZE_RAISED), 0);
}

#[test]
fn audit_appends_and_limits_to_the_latest() {
    let mut store = Store::open_in_memory().unwrap();
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(
            store
                .append_audit("ops", "config.reload", "rules.toml", &json!({"n": i}))
                .unwrap(),
        );
    }
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let all = store.audit(None).unwrap();
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs);
    let last2 = store.audit(Some(2)).unwrap();
    assert_eq!(
        last2
            .iter()
            .map(|e| e.detail["n"].clone())
            .collect::<Vec<_>>(),
        vec![json!(3), json!(4)]
    );
    assert!(store.audit(Some(0)).unwrap().is_empty());
    assert!(Timestamp::parse_rfc3339(&all[0].at).is_ok());
    // AuditEntry serializes for the HTTP API and the CLI.
    let v = serde_json::to_value(&all[0]).unwrap();
    assert_eq!(v["action"], "config.reload");
    assert_eq!(v["detail"], json!({"n": 0}));
}

#[test]
fn state_is_put_replaced_and_read() {
    let mut store = Store::open_in_memory().unwrap();
    assert_eq!(store.get_state("baseline").unwrap(), None);
    store
        .put_state("baseline", &json!({"hours": [1, 2, 3]}))
        .unwrap();
    store.put_state("baseline", &json!({"hours": [4]})).unwrap();
    store.put_state("other", &json!("x")).unwrap();
    assert_eq!(
        store.get_state("baseline").unwrap(),
        Some(json!({"hours": [4]}))
    );
    assert_eq!(store.get_state("other").unwrap(), Some(json!("x")));
}

#[test]
fn file_database_runs_in_wal_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drainguard.db");
    let fz = freeze("fz-1", "2023-09-12T10:00:00Z");
    let f = finding("2023-09-12T10:00:00Z", "r");
    {
        let mut store = Store::open(&path).unwrap();
        assert_eq!(store.path(), Some(path.as_path()));
        assert!(store.is_writable());
        store
            .commit(&Batch {
                findings: vec![f.clone()],
                freezes: vec![fz.clone()],
                checkpoints: vec![(eth(), cp(7, "0x7"))],
                actions: Vec::new(),
                state: Vec::new(),
            })
            .unwrap();
        store.put_state("k", &json!(1)).unwrap();
        // WAL really active: a second connection sees it, and the -wal file exists.
        let mode: String = raw(&path)
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        assert!(dir.path().join("drainguard.db-wal").exists());
    }
    let mut store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    assert_eq!(all_findings(&store), vec![f]);
    assert_eq!(store.freezes(FreezeFilter::All).unwrap()[0].freeze, fz);
    assert_eq!(store.checkpoint(&eth()).unwrap(), Some(cp(7, "0x7")));
    assert_eq!(store.get_state("k").unwrap(), Some(json!(1)));
    assert_eq!(store.audit(None).unwrap().len(), 2);
    // The idempotency survives the restart too.
    let o = store
        .commit(&Batch {
            freezes: vec![fz],
            ..Batch::default()
        })
        .unwrap();
    assert!(o.new_freezes.is_empty());
}

#[test]
fn audit_is_append_only_for_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drainguard.db");
    let mut store = Store::open(&path).unwrap();
    store
        .append_audit("alice", "freeze.lifted", "fz-1", &json!({"reason": "ok"}))
        .unwrap();

    let other = raw(&path);
    for sql in [
        "UPDATE audit SET actor = 'mallory'",
        "UPDATE audit SET detail = '{}' WHERE seq = 1",
        "DELETE FROM audit",
        "DELETE FROM audit WHERE seq = 1",
    ] {
        let err = other.execute(sql, []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // Appending through another connection is still allowed.
    other
        .execute(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES ('t', 'b', 'a', 's', '{}')",
            [],
        )
        .unwrap();
    let log = store.audit(None).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].actor, "alice");
    assert_eq!(log[0].detail, json!({"reason": "ok"}));
}

#[test]
fn a_locked_database_is_a_retriable_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drainguard.db");
    let mut store = Store::open(&path).unwrap();
    store.set_busy_timeout(Duration::from_millis(50)).unwrap();

    let other = raw(&path);
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(!store.is_writable());
    let err = store
        .commit(&Batch {
            checkpoints: vec![(eth(), cp(1, "0x1"))],
            ..Batch::default()
        })
        .unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    // Readers are not blocked by the writer in WAL mode.
    assert_eq!(store.checkpoint(&eth()).unwrap(), None);

    other.execute_batch("ROLLBACK").unwrap();
    assert!(store.is_writable());
    store
        .commit(&Batch {
            checkpoints: vec![(eth(), cp(1, "0x1"))],
            ..Batch::default()
        })
        .unwrap();
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drainguard.db");
    drop(Store::open(&path).unwrap());
    raw(&path).pragma_update(None, "user_version", 99).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 2
            }
        ),
        "{err:?}"
    );
}

#[test]
fn open_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(&err, StoreError::Open { path: p, .. } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("not-a-db"), "{err}");

    let missing = dir.path().join("no/such/dir/db");
    assert!(matches!(
        Store::open(&missing),
        Err(StoreError::Open { .. })
    ));
}
