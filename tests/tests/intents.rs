//! `POST /v1/intents` on a running daemon: the pre-signing verdict for each
//! withdrawal, its token, its errors, and holds made durable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::time::Duration;

use drainguard_e2e::{Daemon, drainguard, metric_sum};
use drainguard_store::{FreezeFilter, Store};
use serde_json::{Value, json};

/// The simulator's first Ethereum hot wallet for a seed.
fn hot_wallet(seed: &str) -> String {
    let out = drainguard(&[
        "sim", "--preset", "normal", "--seed", seed, "--hours", "0.01",
    ])
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["kind"] == "wallet" && r["chain"] == "ethereum" && r["role"] == "hot")
        .map(|r| r["address"].as_str().unwrap().to_string())
        .unwrap()
}

#[test]
fn e2e_daemon_intents_get_verdicts_and_holds_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("drainguard.toml");
    std::fs::write(
        &cfg,
        "[api]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"state/dg.sqlite\"\n[source.sim]\npreset = \"normal\"\nseed = 3\nspeed = 60.0\nhours = 1.0\n",
    )
    .unwrap();
    let mut d =
        Daemon::start_with_env(&cfg, &[("DRAINGUARD_INTENTS_TOKEN", "wd-system-token")]).unwrap();
    d.wait_for_log("simulator playing", Duration::from_secs(30))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let hot = hot_wallet("3");
    let auth = [("authorization", "Bearer wd-system-token")];
    let batch = |intents: Value| serde_json::to_vec(&json!({ "intents": intents })).unwrap();
    let ok = json!({"id": "e2e-1", "chain": "ethereum", "wallet": hot, "to": "0x00000000000000000000000000000000000e2e01", "asset": "ETH", "amount": "0.5", "decimals": 18});
    let bad = json!({"id": "e2e-2", "chain": "ethereum", "wallet": hot, "to": "0x000000000000000000000000000000000000dEaD", "asset": "ETH", "amount": "0.5", "decimals": 18});

    // The token: missing, wrong.
    assert_eq!(
        d.post_body("/v1/intents", &[], &batch(json!([ok])))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        d.post_body(
            "/v1/intents",
            &[("authorization", "Bearer nope")],
            &batch(json!([ok]))
        )
        .unwrap()
        .0,
        403
    );
    // Malformed bodies: not JSON, unknown field, bad amount, too large.
    assert_eq!(d.post_body("/v1/intents", &auth, b"{nope").unwrap().0, 400);
    let (code, body) = d
        .post_body(
            "/v1/intents",
            &auth,
            &batch(json!([{"id": "x", "colour": "red"}])),
        )
        .unwrap();
    assert_eq!(code, 400, "{body}");
    let mut wrong = bad.clone();
    wrong["amount"] = json!("1,5");
    let (code, body) = d
        .post_body("/v1/intents", &auth, &batch(json!([ok, wrong])))
        .unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("intents[1].amount"), "{body}");
    assert_eq!(
        d.post_over_limit("/v1/intents", &auth, 1 << 20).unwrap(),
        413
    );

    // A plain withdrawal is allowed; one to a denylisted address is held.
    let (code, body) = d
        .post_body("/v1/intents", &auth, &batch(json!([ok, bad])))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["verdicts"][0]["decision"], "allow", "{v}");
    assert_eq!(v["verdicts"][1]["decision"], "hold", "{v}");
    assert!(
        v["verdicts"][1]["reasons"][0]
            .as_str()
            .unwrap()
            .contains("denylisted"),
        "{v}"
    );
    let (_, metrics) = d.get("/metrics").unwrap();
    assert_eq!(
        metric_sum(&metrics, "drainguard_freezes_total{scope=\"intent\"}"),
        1.0
    );
    assert!(
        d.signal_and_wait("TERM", Duration::from_secs(20))
            .unwrap()
            .success()
    );
    let store = Store::open(&dir.path().join("state/dg.sqlite")).unwrap();
    let held: Vec<String> = store
        .freezes(FreezeFilter::Active)
        .unwrap()
        .iter()
        .map(|f| f.freeze.scope.to_string())
        .collect();
    assert_eq!(
        held,
        vec!["intent:e2e-2".to_string()],
        "the hold was written before it was answered"
    );
}
