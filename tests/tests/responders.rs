//! The responders end to end: `drainguard run` (simulator source, a CoinEx
//! drain) delivering its freezes to a local stand-in for the exchange's
//! freeze endpoint that checks the HMAC signature and freshness window as
//! an exchange would, and paging a local stand-in for PagerDuty's Events
//! API v2 that validates events as PagerDuty documents them. Also: the
//! endpoint down for a while, a kill -9 between the store and the wire,
//! and the operator API and CLI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use drainguard_e2e::{
    Daemon, drainguard_bin,
    receivers::{PagerDutyReceiver, WebhookReceiver},
};
use drainguard_store::{FreezeFilter, Store};
use serde_json::Value;

const SECRET: &str = "whsec-test-0123456789abcdef";
const ROUTING_KEY: &str = "R0UT1NGKEYR0UT1NGKEYR0UT1NGKEY32";
const ADMIN: &str = "admin-token-for-tests";

fn env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("DG_TEST_WEBHOOK_SECRET", SECRET),
        ("DG_TEST_PD_KEY", ROUTING_KEY),
        ("DRAINGUARD_ADMIN_TOKEN", ADMIN),
    ]
}

/// A daemon configuration: a short CoinEx day at 300x (the drain 10
/// simulated minutes in, 2 s after start), the webhook and PagerDuty
/// pointed at the local receivers, fast retries.
fn config(dir: &Path, webhook_url: &str, pd_url: Option<&str>, sim: bool) -> PathBuf {
    let path = dir.join("drainguard.toml");
    let pagerduty = pd_url.map_or(String::new(), |url| {
        format!(
            r#"
[pagerduty]
url = "{url}"
routing_key_env = "DG_TEST_PD_KEY"
source = "drainguard-e2e"
resolve_after = "2s"
"#
        )
    });
    std::fs::write(
        &path,
        format!(
            r#"
[api]
listen = "127.0.0.1:0"
[store]
path = "state/drainguard.sqlite"
[source.sim]
enabled = {sim}
preset = "coinex"
seed = 3
incident_at = "10m"
speed = 300.0
hours = 0.5
[webhook]
endpoints = [{{ name = "primary", url = "{webhook_url}" }}]
secret_env = "DG_TEST_WEBHOOK_SECRET"
[delivery]
initial_backoff = "200ms"
max_backoff = "1s"
timeout = "2s"
{pagerduty}
"#
        ),
    )
    .unwrap();
    path
}

fn store_of(dir: &Path) -> Store {
    Store::open(&dir.join("state/drainguard.sqlite")).unwrap()
}

fn freeze_ids(dir: &Path) -> BTreeSet<String> {
    store_of(dir)
        .freezes(FreezeFilter::All)
        .unwrap()
        .into_iter()
        .map(|f| f.freeze.id.0)
        .collect()
}

/// Waits until `probe` holds.
fn wait_until(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every stored freeze has reached the receiver's effect, once.
fn wait_all_delivered(dir: &Path, rx: &WebhookReceiver) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    wait_until(
        "every freeze at the receiver",
        Duration::from_secs(60),
        || {
            ids = freeze_ids(dir);
            let applied: BTreeSet<String> = rx.applied_keys().into_iter().collect();
            !ids.is_empty() && ids.iter().all(|id| applied.contains(id))
        },
    );
    ids
}

#[test]
fn e2e_webhook_freezes_arrive_signed_and_pagerduty_pages_once_per_incident() {
    let dir = tempfile::tempdir().unwrap();
    let rx = WebhookReceiver::start(SECRET.as_bytes()).unwrap();
    let pd = PagerDutyReceiver::start(ROUTING_KEY).unwrap();
    // PagerDuty sheds the first event (its documented ~120/min limit): the
    // daemon must retry it.
    pd.rate_limit_next(1);
    let cfg = config(dir.path(), &rx.freeze_url(), Some(&pd.url()), true);
    let mut d = Daemon::start_with_env(&cfg, &env()).unwrap();
    d.wait_for_log("scope=global", Duration::from_secs(60))
        .unwrap();
    let ids = wait_all_delivered(dir.path(), &rx);
    assert!(ids.len() >= 2, "{ids:?}");

    // As the exchange saw them: signed (nothing was rejected), fresh, one
    // effect per freeze id, with the evidence and the recommended actions.
    assert!(rx.rejected().is_empty(), "{:?}", rx.rejected());
    let applied = rx.applied_keys();
    assert_eq!(
        applied.len(),
        applied.iter().collect::<BTreeSet<_>>().len(),
        "a key applied twice: {applied:?}"
    );
    for delivery in rx.accepted().iter().filter(|a| ids.contains(&a.key)) {
        let b = &delivery.body;
        assert_eq!(b["type"], "freeze.raised");
        assert_eq!(b["freeze"]["id"], delivery.key.as_str());
        let actions: Vec<&str> = b["recommended_actions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        assert_eq!(
            actions,
            [
                "suspend_withdrawals",
                "move_hot_wallet_funds_to_cold_storage"
            ]
        );
        let findings = b["freeze"]["findings"].as_array().unwrap();
        assert!(!findings.is_empty(), "{b}");
        let evidence = &findings[0]["evidence"][0];
        for field in ["chain", "tx_hash", "amount", "to"] {
            assert!(evidence[field].is_string(), "{field} missing in {evidence}");
        }
        let sweep = &b["recommended_actions"][1];
        assert_eq!(sweep["scope"], b["freeze"]["scope"]);
        let wallets = sweep["wallets"].as_array().unwrap();
        if b["freeze"]["scope"]
            .as_str()
            .unwrap()
            .starts_with("wallet:")
        {
            let scope = format!(
                "wallet:{}:{}",
                wallets[0]["chain"].as_str().unwrap(),
                wallets[0]["address"].as_str().unwrap()
            );
            assert!(
                wallets.len() == 1 && b["freeze"]["scope"] == scope.as_str(),
                "{sweep}"
            );
        }
    }

    // One incident, one page: every trigger carries the same dedup key
    // (the first finding opens it, the first freeze re-triggers it).
    wait_until("the freeze page", Duration::from_secs(30), || {
        pd.triggers().len() >= 2
    });
    assert!(pd.rejected().is_empty(), "{:?}", pd.rejected());
    assert_eq!(pd.rate_limited(), 1, "the 429 was seen and retried");
    assert_eq!(pd.dedup_keys().len(), 1, "{:?}", pd.triggers());
    let dedup = pd.dedup_keys()[0].clone();
    let findings = store_of(dir.path())
        .findings_since(drainguard_model::Timestamp(i64::MIN), 100_000)
        .unwrap();
    assert!(
        findings.len() > pd.triggers().len() * 5,
        "{} findings, {} pages",
        findings.len(),
        pd.triggers().len()
    );

    // The sim's day ends; a human lifts every freeze (never automatic):
    // the exchange is told, and the quiet incident resolves.
    d.wait_for_log("simulated traffic finished", Duration::from_secs(60))
        .unwrap();
    for id in &ids {
        let (status, body) = d
            .post_body(
                &format!("/v1/freezes/{id}/lift"),
                &[("authorization", &format!("Bearer {ADMIN}"))],
                br#"{"reason": "keys rotated, funds swept; resuming", "by": "alice"}"#,
            )
            .unwrap();
        assert_eq!(status, 200, "{body}");
    }
    wait_until("the resolve", Duration::from_secs(30), || {
        !pd.resolves().is_empty()
    });
    assert_eq!(pd.resolves()[0]["dedup_key"], dedup.as_str());
    let lifts: BTreeSet<String> = ids.iter().map(|id| format!("lift:{id}")).collect();
    wait_until("the lift webhooks", Duration::from_secs(30), || {
        let applied: BTreeSet<String> = rx.applied_keys().into_iter().collect();
        lifts.iter().all(|k| applied.contains(k))
    });
    let status = d.signal_and_wait("TERM", Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{status}");

    // The audit log holds it all, with who and why.
    let out = std::process::Command::new(drainguard_bin().unwrap())
        .args(["audit", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |action: &str| entries.iter().filter(|e| e["action"] == action).count();
    assert_eq!(count("freeze.raised"), ids.len());
    assert_eq!(count("freeze.lifted"), ids.len());
    assert!(count("finding") >= findings.len());
    // Every freeze, lift and page delivered, each audited once.
    assert_eq!(
        count("delivery.succeeded"),
        ids.len() * 2 + pd.accepted().len()
    );
    let lift = entries
        .iter()
        .find(|e| e["action"] == "freeze.lifted")
        .unwrap();
    assert_eq!(lift["actor"], "alice");
    assert_eq!(
        lift["detail"]["reason"],
        "keys rotated, funds swept; resuming"
    );
}

#[test]
fn e2e_webhook_endpoint_down_then_up_gets_every_freeze() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = WebhookReceiver::start(SECRET.as_bytes()).unwrap();
    rx.stop();
    let cfg = config(dir.path(), &rx.freeze_url(), None, true);
    let mut d = Daemon::start_with_env(&cfg, &env()).unwrap();
    d.wait_for_log("FREEZE raised", Duration::from_secs(60))
        .unwrap();
    d.wait_for_log("delivery failed; will retry", Duration::from_secs(30))
        .unwrap();
    // Down for a while: still retrying, nothing lost.
    std::thread::sleep(Duration::from_secs(3));
    let pending = store_of(dir.path())
        .outbox(Some(drainguard_store::ActionStatus::Pending))
        .unwrap();
    assert!(!pending.is_empty());
    assert!(pending.iter().all(|a| a.attempts >= 1), "{pending:?}");
    rx.restart().unwrap();
    let ids = wait_all_delivered(dir.path(), &rx);
    assert!(rx.rejected().is_empty(), "{:?}", rx.rejected());
    // The receiver records a freeze before it answers, and the daemon
    // observes the latency once the answer is in: wait for that too.
    let mut metrics = String::new();
    wait_until(
        "a delivery latency for every freeze",
        Duration::from_secs(10),
        || {
            let (status, text) = d.get("/metrics").unwrap();
            assert_eq!(status, 200);
            metrics = text;
            drainguard_e2e::metric_sum(
                &metrics,
                "drainguard_delivery_latency_seconds_count{channel=\"webhook\"}",
            ) >= ids.len() as f64
        },
    );
    assert!(
        drainguard_e2e::metric_sum(
            &metrics,
            "drainguard_delivery_attempts_total{channel=\"webhook\",outcome=\"retry\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

#[test]
fn e2e_webhook_kill_9_between_store_and_wire_delivers_each_freeze_once() {
    let dir = tempfile::tempdir().unwrap();
    let rx = WebhookReceiver::start(SECRET.as_bytes()).unwrap();
    let cfg = config(dir.path(), &rx.freeze_url(), None, true);
    let mut held_env = env();
    held_env.push(("DRAINGUARD_FAILPOINT_HOLD_DELIVERY", "1"));
    let mut d = Daemon::start_with_env(&cfg, &held_env).unwrap();
    d.wait_for_log("failpoint: holding deliveries", Duration::from_secs(30))
        .unwrap();
    d.wait_for_log("scope=global", Duration::from_secs(60))
        .unwrap();
    let before = freeze_ids(dir.path());
    assert!(before.len() >= 2);
    // The freezes are durable and queued; nothing has gone out.
    let status = d.signal_and_wait("KILL", Duration::from_secs(10)).unwrap();
    assert!(!status.success());
    assert!(rx.accepted().is_empty());
    let queued: BTreeSet<String> = store_of(dir.path())
        .outbox(None)
        .unwrap()
        .into_iter()
        .map(|a| a.key)
        .collect();
    assert!(before.is_subset(&queued), "{before:?} vs {queued:?}");

    // Restart (the simulator off: nothing new happens) and the held
    // freezes go out, each applied exactly once.
    let cfg = config(dir.path(), &rx.freeze_url(), None, false);
    let d = Daemon::start_with_env(&cfg, &env()).unwrap();
    let after = wait_all_delivered(dir.path(), &rx);
    assert_eq!(after, before);
    let applied: BTreeSet<String> = rx.applied_keys().into_iter().collect();
    assert_eq!(applied, before, "distinct idempotency keys at the receiver");
    assert_eq!(rx.applied_keys().len(), before.len());
    drop(d);
}

#[test]
fn e2e_api_freezes_raise_list_lift_by_cli_with_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rx = WebhookReceiver::start(SECRET.as_bytes()).unwrap();
    let cfg = config(dir.path(), &rx.freeze_url(), None, false);
    let d = Daemon::start_with_env(&cfg, &env()).unwrap();
    let cli = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(drainguard_bin().unwrap());
        cmd.args(args).env("DRAINGUARD_API", &d.base_url);
        match token {
            Some(t) => cmd.env("DRAINGUARD_ADMIN_TOKEN", t),
            None => cmd.env_remove("DRAINGUARD_ADMIN_TOKEN"),
        };
        cmd.output().unwrap()
    };
    let out = cli(
        &[
            "freeze",
            "raise",
            "chain:tron",
            "--reason",
            "suspicious signer activity",
            "--by",
            "bob",
        ],
        Some(ADMIN),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let id = stdout.split_whitespace().nth(1).unwrap().to_string();
    assert!(id.starts_with("fz-"), "{stdout}");
    // The exchange hears of it: durable first, then delivered.
    rx.wait_for_applied(1, Duration::from_secs(30)).unwrap();
    assert_eq!(rx.applied_keys(), vec![id.clone()]);

    let list = cli(&["freeze", "list"], Some(ADMIN));
    let listed = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(
        listed.contains(&id) && listed.contains("chain:tron"),
        "{listed}"
    );

    let wrong = cli(&["freeze", "list"], Some("nope"));
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("HTTP 403"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );

    let lift = |by: &str| {
        cli(
            &[
                "freeze",
                "lift",
                &id,
                "--reason",
                "false alarm, checked with ops",
                "--by",
                by,
            ],
            Some(ADMIN),
        )
    };
    assert!(lift("carol").status.success());
    let again = lift("dave");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("HTTP 409"));
    rx.wait_for_applied(2, Duration::from_secs(30)).unwrap();
    assert_eq!(rx.applied_keys()[1], format!("lift:{id}"));

    // JSON errors with the status that fits.
    let auth = format!("Bearer {ADMIN}");
    let with_token = [("authorization", auth.as_str())];
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<u8>, u16);
    let cases: Vec<Case<'_>> = vec![
        ("/v1/freezes", vec![], b"{}".to_vec(), 401),
        (
            "/v1/freezes",
            vec![("authorization", "Bearer wrong")],
            b"{}".to_vec(),
            403,
        ),
        (
            "/v1/freezes",
            with_token.to_vec(),
            b"{not json".to_vec(),
            400,
        ),
        (
            "/v1/freezes",
            with_token.to_vec(),
            br#"{"scope": "chain:x", "reason": " ", "by": "eve"}"#.to_vec(),
            422,
        ),
        (
            "/v1/freezes",
            with_token.to_vec(),
            br#"{"scope": "planet:mars", "reason": "r", "by": "eve"}"#.to_vec(),
            422,
        ),
        (
            "/v1/freezes/fz-nope/lift",
            with_token.to_vec(),
            br#"{"reason": "r", "by": "eve"}"#.to_vec(),
            404,
        ),
    ];
    for (path, headers, body, want) in cases {
        let (status, text) = d.post_body(path, &headers, &body).unwrap();
        assert_eq!(status, want, "{path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["error"].is_string(), "{text}");
    }
    assert_eq!(
        d.post_over_limit("/v1/freezes", &with_token, 1 << 20)
            .unwrap(),
        413
    );

    // Every operation of docs/openapi.json answers on the live daemon.
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(drainguard_e2e::repo_root().join("docs/openapi.json")).unwrap(),
    )
    .unwrap();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let path = path.replace("{id}", "1");
        for method in ops.as_object().unwrap().keys() {
            let (status, text) = match method.as_str() {
                "get" => d.get(&path).unwrap(),
                _ => d.post_body(&path, &[], b"{}").unwrap(),
            };
            assert!(
                status != 404 && status != 405,
                "{method} {path}: {status} {text}"
            );
        }
    }
}

#[test]
fn e2e_webhook_permanent_refusal_pages_a_human_and_is_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let rx = WebhookReceiver::start(SECRET.as_bytes()).unwrap();
    let pd = PagerDutyReceiver::start(ROUTING_KEY).unwrap();
    // The exchange's endpoint refuses (a rotated secret, say): 400 is not
    // retried.
    rx.set_failing(Some(400));
    let cfg = config(dir.path(), &rx.freeze_url(), Some(&pd.url()), false);
    let d = Daemon::start_with_env(&cfg, &env()).unwrap();
    let raised = d
        .post_body(
            "/v1/freezes",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            br#"{"scope": "wallet:ethereum:0x7d535a6a6c18988d64a878af797e84c93539e776", "reason": "key leak suspected", "by": "bob"}"#,
        )
        .unwrap();
    assert_eq!(raised.0, 201, "{}", raised.1);
    let id: Value = serde_json::from_str(&raised.1).unwrap();
    let id = id["freeze"]["id"].as_str().unwrap().to_string();
    let mut failed = Vec::new();
    wait_until("the failed delivery", Duration::from_secs(30), || {
        failed = store_of(dir.path())
            .outbox(Some(drainguard_store::ActionStatus::Failed))
            .unwrap();
        !failed.is_empty()
    });
    assert_eq!(failed[0].key, id);
    assert_eq!(failed[0].attempts, 1, "a 400 is not retried");
    assert!(
        failed[0]
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("400")
    );
    // A human is paged about it.
    wait_until("the page about it", Duration::from_secs(30), || {
        pd.triggers()
            .iter()
            .any(|t| t["payload"]["class"] == "delivery_failed")
    });
    assert!(rx.applied_keys().is_empty());

    // Fixed; an operator re-drives it and it goes out.
    rx.set_failing(None);
    let out = std::process::Command::new(drainguard_bin().unwrap())
        .args([
            "outbox",
            "redrive",
            &failed[0].id.to_string(),
            "--reason",
            "secret re-synced with the exchange",
            "--by",
            "carol",
        ])
        .env("DRAINGUARD_API", &d.base_url)
        .env("DRAINGUARD_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rx.wait_for_applied(1, Duration::from_secs(30)).unwrap();
    assert_eq!(rx.applied_keys(), vec![id]);
    let audit = store_of(dir.path()).audit(None).unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    for a in [
        "freeze.manual",
        "delivery.failed",
        "outbox.redrive",
        "delivery.succeeded",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
}
