//! Detection-to-action latency on a local anvil, end to end through the
//! real binary: from `eth_sendRawTransaction` of a theft to the signed
//! freeze webhook arriving (verified) at a local receiver — the pending
//! path, over the node's WebSocket — and from the block that holds a theft
//! being mined to the webhook — the block path, the mempool not read.
//! Each trial's freeze is lifted by an operator call before the next theft.
//!
//! `cargo bench -p drainguard-e2e --bench latency` (`TRIALS=200` by
//! default). Not run by CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

use std::time::{Duration, Instant};

use drainguard_e2e::{
    Daemon,
    anvil::Anvil,
    receivers::{WebhookDelivery, WebhookReceiver},
};
use serde_json::{Value, json};

const SECRET: &str = "whsec-bench-0123456789abcdef";
const ADMIN: &str = "admin-token-for-bench";
const INTENTS: &str = "intents-token-for-bench";
const USER: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";

fn config(
    dir: &std::path::Path,
    anvil: &Anvil,
    webhook: &str,
    mempool: bool,
    hot: &str,
) -> std::path::PathBuf {
    drainguard_e2e::write_config(
        dir,
        &format!(
            r#"
[source.sim]
enabled = false
[webhook]
endpoints = [{{ name = "primary", url = "{webhook}" }}]
secret_env = "DG_BENCH_WEBHOOK_SECRET"
[[source.evm]]
chain = "ethereum"
native = "ETH"
block_time = "12s"
confirmations = 0
poll_interval = "1s"
rate_limit = 1000
mempool = {mempool}
endpoints = [{{ name = "anvil", url = "{}", ws = "{}" }}]
wallets = [{{ address = "{hot}", name = "eth-hot-1" }}]
prices = {{ ETH = 3000.0 }}
"#,
            anvil.http_url(),
            anvil.ws_url()
        ),
    )
    .unwrap()
}

/// The next freeze raised (not a lift) to arrive after `seen` deliveries.
fn next_freeze(receiver: &WebhookReceiver, seen: &mut usize) -> WebhookDelivery {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = receiver.accepted();
        for d in &all[*seen..] {
            if d.applied && !d.key.starts_with("lift:") {
                *seen = all.len();
                return d.clone();
            }
        }
        assert!(Instant::now() < deadline, "no freeze within 30 s");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn lift(d: &Daemon, id: &str) {
    let (status, body) = d
        .post_body(
            &format!("/v1/freezes/{id}/lift"),
            &[("authorization", &format!("Bearer {ADMIN}"))],
            br#"{"reason": "benchmark trial over", "by": "bench"}"#,
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(path: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{path}: {} trials, p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
}

fn run(trials: usize, mempool: bool) -> Vec<f64> {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::builder().no_mining().spawn().unwrap();
    anvil.wait_ready().unwrap();
    let hot = anvil.accounts().unwrap()[0].clone();
    let receiver = WebhookReceiver::start(SECRET.as_bytes()).unwrap();
    let cfg = config(dir.path(), &anvil, &receiver.freeze_url(), mempool, &hot);
    let log = std::env::var("DRAINGUARD_LOG").unwrap_or_else(|_| "info".to_string());
    let mut d = Daemon::start_with_env(
        &cfg,
        &[
            ("DG_BENCH_WEBHOOK_SECRET", SECRET),
            ("DRAINGUARD_ADMIN_TOKEN", ADMIN),
            ("DRAINGUARD_INTENTS_TOKEN", INTENTS),
            ("DRAINGUARD_LOG", &log),
        ],
    )
    .unwrap();
    d.wait_for_log("WebSocket subscriptions up", Duration::from_secs(30))
        .unwrap();
    // The withdrawal system is connected (so an outflow without an intent
    // is a theft).
    let body = format!(
        r#"{{"intents": [{{"id": "wd-0", "chain": "ethereum", "wallet": "{hot}", "to": "{USER}", "asset": "ETH", "amount": "1", "decimals": 18}}]}}"#
    );
    let (status, text) = d.post_intents(INTENTS, &body).unwrap();
    assert_eq!(status, 200, "{text}");
    let mut seen = 0;
    let mut ms = Vec::with_capacity(trials);
    for n in 0..trials {
        // Each theft to a fresh address, signed before the clock starts.
        let thief = format!("0x{:040x}", 0xdead_0000_u64 + n as u64);
        let tx = json!({"from": hot, "to": thief, "value": "0x8ac7230489e80000", "nonce": format!("{n:#x}"), "gas": "0x5208"});
        let started = if mempool {
            let raw: Value = anvil.rpc("eth_signTransaction", json!([tx])).unwrap();
            let started = Instant::now();
            anvil.rpc("eth_sendRawTransaction", json!([raw])).unwrap();
            if std::env::var_os("VERBOSE").is_some() {
                println!(
                    "send took {:?} at {:?}",
                    started.elapsed(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                );
            }
            started
        } else {
            anvil.rpc("eth_sendTransaction", json!([tx])).unwrap();
            let started = Instant::now();
            anvil.mine(1).unwrap();
            started
        };
        let freeze = next_freeze(&receiver, &mut seen);
        ms.push(freeze.received.duration_since(started).as_secs_f64() * 1e3);
        if mempool {
            anvil.mine(1).unwrap();
        }
        lift(&d, &freeze.key);
    }
    ms
}

fn main() {
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let pending = run(trials, true);
    let block = run(trials, false);
    report("pending path (eth_sendRawTransaction -> webhook)", pending);
    report("block path (block mined -> webhook)", block);
}
