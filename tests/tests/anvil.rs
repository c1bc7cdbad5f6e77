//! The EVM watcher end to end against a real local Ethereum node, anvil
//! (installed from the npm registry by the test support, and started
//! here on 127.0.0.1): a theft freezes before its block is mined, an
//! ERC-20 drain and an unknown-spender approval are caught, withdrawals
//! with intents raise nothing, a restart catches up with no gap and no
//! double, a reorg retracts, and a dead first endpoint fails over.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use drainguard_e2e::{
    Daemon,
    anvil::{
        Anvil, erc20_approve_calldata, erc20_transfer_calldata, quantity_u64, test_token_bytecode,
    },
    metric_sum,
    proxy::RpcProxy,
};
use drainguard_store::{FreezeFilter, Store};
use serde_json::json;

const INTENTS: &str = "intents-token-for-tests";

/// anvil's first default account: the exchange's hot wallet here.
const HOT: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
/// A user's withdrawal address, paid with intents.
const USER: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
/// The thief: an address never paid before.
const THIEF: &str = "0x1111111111111111111111111111111111111111";

fn config(dir: &Path, endpoints: &str, tokens: &str) -> PathBuf {
    config_with(dir, endpoints, tokens, "")
}

/// The configuration with `extra` keys in the chain's table.
fn config_with(dir: &Path, endpoints: &str, tokens: &str, extra: &str) -> PathBuf {
    drainguard_e2e::write_config(
        dir,
        &format!(
            r#"
[source.sim]
enabled = false
[[source.evm]]
chain = "ethereum"
native = "ETH"
block_time = "1s"
confirmations = 0
poll_interval = "100ms"
timeout = "2s"
endpoints = [{endpoints}]
wallets = [{{ address = "{HOT}", name = "eth-hot-1" }}]
tokens = [{tokens}]
prices = {{ ETH = 3000.0, TT = 1.0 }}
{extra}
"#
        ),
    )
    .unwrap()
}

fn one_endpoint(anvil: &Anvil) -> String {
    format!(r#"{{ name = "anvil", url = "{}" }}"#, anvil.http_url())
}

/// The daemon, once its watcher follows the chain.
fn start(cfg: &Path) -> Daemon {
    let mut d = Daemon::start_with_env(cfg, &[("DRAINGUARD_INTENTS_TOKEN", INTENTS)]).unwrap();
    d.wait_for_log("EVM watcher following", Duration::from_secs(30))
        .unwrap();
    d
}

fn intent(d: &Daemon, id: &str, to: &str, eth: &str) {
    let body = format!(
        r#"{{"intents": [{{"id": "{id}", "chain": "ethereum", "wallet": "{HOT}", "to": "{to}", "asset": "ETH", "amount": "{eth}", "decimals": 18}}]}}"#
    );
    let (status, text) = d.post_intents(INTENTS, &body).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"allow\""), "{text}");
}

fn metric(d: &Daemon, series: &str) -> f64 {
    let (status, text) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    metric_sum(&text, series)
}

fn wait_until(what: &str, timeout: Duration, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn checkpoint(d: &Daemon) -> f64 {
    metric(d, "drainguard_chain_checkpoint_block{chain=\"ethereum\"}")
}

const INCLUDED: &str =
    "drainguard_events_total{chain=\"ethereum\",kind=\"transfer\",stage=\"included\"}";

#[test]
fn e2e_anvil_theft_freezes_before_it_is_mined_through_a_dead_first_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::builder().no_mining().spawn().unwrap();
    anvil.wait_ready().unwrap();
    // The first endpoint is dead (nothing listens on port 1).
    let endpoints = format!(
        r#"{{ name = "dead", url = "http://127.0.0.1:1" }}, {}"#,
        one_endpoint(&anvil)
    );
    let cfg = config(dir.path(), &endpoints, "");
    let mut d = start(&cfg);
    // The withdrawal system is connected: it announces what it signs.
    intent(&d, "wd-1", USER, "1");
    // A stolen key signs a transfer no intent asked for.
    let hash = anvil
        .send_tx(HOT, THIEF, "0x56bc75e2d63100000", None)
        .unwrap();
    let line = d
        .wait_for_log("FREEZE raised", Duration::from_secs(30))
        .unwrap();
    assert!(
        line.contains(&format!("scope=wallet:ethereum:{HOT}")),
        "{line}"
    );
    assert!(line.contains(&hash), "the theft is the evidence: {line}");
    // Still not mined: the freeze came from the mempool.
    assert_eq!(anvil.block_number().unwrap(), 0);
    assert!(anvil.receipt(&hash).unwrap().is_none());
    // Every call went to the live second endpoint after the first failed.
    assert!(
        metric(
            &d,
            "drainguard_rpc_errors_total{chain=\"ethereum\",endpoint=\"dead\"}"
        ) >= 1.0
    );
    assert!(
        metric(
            &d,
            "drainguard_rpc_requests_total{chain=\"ethereum\",endpoint=\"anvil\"}"
        ) >= 3.0
    );
    assert!(d.log().iter().any(|l| l.contains("RPC failed over")));
    let store = Store::open(&dir.path().join("state/drainguard.sqlite")).unwrap();
    let frozen = store.freezes(FreezeFilter::Active).unwrap();
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    assert_eq!(frozen[0].freeze.rule, "unmatched-outflow");
}

#[test]
fn e2e_anvil_withdrawals_with_intents_raise_nothing_and_a_restart_has_no_gap_or_double() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::start().unwrap();
    anvil.wait_ready().unwrap();
    let cfg = config(dir.path(), &one_endpoint(&anvil), "");
    let d = start(&cfg);
    for i in 0..3 {
        intent(&d, &format!("wd-{i}"), USER, "1");
        anvil
            .send_tx_and_wait(HOT, USER, "0xde0b6b3a7640000", None)
            .unwrap();
    }
    let head = anvil.block_number().unwrap() as f64;
    wait_until(
        "the checkpoint at the head",
        Duration::from_secs(30),
        || checkpoint(&d) >= head,
    );
    assert_eq!(metric(&d, INCLUDED), 3.0);
    assert_eq!(
        metric(&d, "drainguard_findings_total"),
        0.0,
        "withdrawals the exchange announced are not findings"
    );
    let first_run = metric(&d, INCLUDED);
    let status = d.signal_and_wait("TERM", Duration::from_secs(30)).unwrap();
    assert!(status.success());

    // While it is down, four more withdrawals are mined.
    for _ in 0..4 {
        anvil
            .send_tx_and_wait(HOT, USER, "0xde0b6b3a7640000", None)
            .unwrap();
    }
    let head = anvil.block_number().unwrap() as f64;
    let d = start(&cfg);
    wait_until("the catch-up", Duration::from_secs(30), || {
        checkpoint(&d) >= head
    });
    let second_run = metric(&d, INCLUDED);
    assert_eq!(
        (first_run, second_run),
        (3.0, 4.0),
        "every transfer once: none missed while down, none read twice"
    );
}

#[test]
fn e2e_anvil_erc20_drain_and_unknown_approval_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::start().unwrap();
    anvil.wait_ready().unwrap();
    // A real ERC-20 (tests/contracts/TestToken.sol), its supply minted to
    // the hot wallet.
    let token = anvil.deploy(HOT, test_token_bytecode()).unwrap();
    let tokens = format!(r#"{{ address = "{token}", symbol = "TT", decimals = 6 }}"#);
    let cfg = config(dir.path(), &one_endpoint(&anvil), &tokens);
    let mut d = start(&cfg);
    intent(&d, "wd-1", USER, "1");
    // An unlimited approval to a spender nobody allowed.
    anvil
        .send_tx_and_wait(
            HOT,
            &token,
            "0x0",
            Some(&erc20_approve_calldata(THIEF, u128::MAX)),
        )
        .unwrap();
    d.wait_for_log("rule=unknown-approval", Duration::from_secs(30))
        .unwrap();
    // A token drain with no intent: 90% of the wallet's tokens at once.
    let receipt = anvil
        .send_tx_and_wait(
            HOT,
            &token,
            "0x0",
            Some(&erc20_transfer_calldata(THIEF, 900_000_000_000_000)),
        )
        .unwrap();
    assert_eq!(receipt["status"], "0x1");
    let hash = receipt["transactionHash"].as_str().unwrap().to_string();
    let line = d
        .wait_for_log_since(
            0,
            &format!("evidence=ethereum:{hash}"),
            Duration::from_secs(30),
        )
        .unwrap();
    assert!(line.contains("rule=unmatched-outflow"), "{line}");
    let store = Store::open(&dir.path().join("state/drainguard.sqlite")).unwrap();
    let findings = store
        .findings_since(drainguard_model::Timestamp(i64::MIN), 1000)
        .unwrap();
    let drain = findings
        .iter()
        .find(|f| f.rule == "unmatched-outflow" && f.evidence[0].tx_hash.as_str() == hash)
        .unwrap();
    assert_eq!(drain.evidence[0].asset.as_str(), "TT");
    assert_eq!(drain.evidence[0].to.as_str(), THIEF);
    assert_eq!(drain.evidence[0].amount, "900000000");
    // The watcher read the wallet's token balance, so the share rule
    // measures the drain against it.
    let share = findings
        .iter()
        .find(|f| f.rule == "single-tx-drain")
        .unwrap_or_else(|| panic!("no single-tx-drain in {findings:#?}"));
    assert!(
        share
            .figures
            .iter()
            .any(|(k, v)| k == "share" && v == "90.0%"),
        "{:?}",
        share.figures
    );
}

#[test]
fn e2e_anvil_reorg_retracts_recounts_and_rewinds_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::start().unwrap();
    anvil.wait_ready().unwrap();
    // One block a batch: the new branch is read block by block, so the
    // replaced block's height is checkpointed again, with its new hash.
    let cfg = config_with(dir.path(), &one_endpoint(&anvil), "", "batch_blocks = 1");
    let mut d = start(&cfg);
    intent(&d, "wd-1", USER, "1");
    let withdrawal = json!({"from": HOT, "to": USER, "value": "0xde0b6b3a7640000"});
    anvil
        .send_tx_and_wait(HOT, USER, "0xde0b6b3a7640000", None)
        .unwrap();
    wait_until("the transfer", Duration::from_secs(30), || {
        metric(&d, INCLUDED) >= 1.0
    });
    let replaced = anvil.head_hash().unwrap();
    wait_until("its checkpoint", Duration::from_secs(30), || {
        checkpoint(&d) >= anvil.block_number().unwrap() as f64
    });
    // The block holding it is replaced by one holding the same withdrawal
    // again, then the chain grows.
    anvil.reorg(1, &[(withdrawal, 0)]).unwrap();
    assert_ne!(anvil.head_hash().unwrap(), replaced);
    anvil.mine(1).unwrap();
    d.wait_for_log("reorg", Duration::from_secs(30)).unwrap();
    wait_until(
        "the retraction and the new inclusion",
        Duration::from_secs(30),
        || {
            metric(
                &d,
                "drainguard_events_total{chain=\"ethereum\",kind=\"transfer\",stage=\"retracted\"}",
            ) >= 1.0
                && metric(&d, INCLUDED) >= 2.0
        },
    );
    // The checkpoint named the replaced block (no confirmations here): it
    // is moved back, audited, and goes on with the new branch.
    let head = anvil.block_number().unwrap() as f64;
    wait_until(
        "the checkpoint on the new branch",
        Duration::from_secs(30),
        || checkpoint(&d) >= head,
    );
    assert_eq!(
        metric(&d, "drainguard_reorgs_total{chain=\"ethereum\"}"),
        1.0
    );
    assert!(d.is_running());
    d.signal_and_wait("TERM", Duration::from_secs(30)).unwrap();
    // Counted once: the withdrawal matched its intent again, no freeze.
    let store = Store::open(&dir.path().join("state/drainguard.sqlite")).unwrap();
    let frozen = store.freezes(FreezeFilter::All).unwrap();
    assert!(frozen.is_empty(), "no freeze expected: {frozen:#?}");
    drop(store);
    let audit = drainguard_e2e::drainguard(&["audit", "--config", cfg.to_str().unwrap(), "--json"])
        .unwrap();
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(
        text.contains("checkpoint.rewind") && text.contains("reorganized away"),
        "{text}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}

#[test]
fn e2e_anvil_node_restart_with_its_state_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::builder()
        .state(dir.path().join("anvil-state.json"))
        .spawn()
        .unwrap();
    anvil.wait_ready().unwrap();
    let cfg = config(dir.path(), &one_endpoint(&anvil), "");
    let mut d = start(&cfg);
    intent(&d, "wd-1", USER, "1");
    anvil
        .send_tx_and_wait(HOT, USER, "0xde0b6b3a7640000", None)
        .unwrap();
    wait_until("the first transfer", Duration::from_secs(30), || {
        metric(&d, INCLUDED) >= 1.0
    });
    // The node goes away (its state dumped) and comes back on its port.
    anvil.stop().unwrap();
    d.wait_for_log("no endpoint answers; retrying", Duration::from_secs(30))
        .unwrap();
    anvil.restart().unwrap();
    anvil.wait_ready().unwrap();
    intent(&d, "wd-2", USER, "1");
    anvil
        .send_tx_and_wait(HOT, USER, "0xde0b6b3a7640000", None)
        .unwrap();
    wait_until(
        "the transfer after the restart",
        Duration::from_secs(30),
        || metric(&d, INCLUDED) >= 2.0,
    );
    assert_eq!(metric(&d, INCLUDED), 2.0);
    assert_eq!(metric(&d, "drainguard_findings_total"), 0.0);
    let (status, _) = d.get("/healthz").unwrap();
    assert_eq!(status, 200);
}

#[test]
fn e2e_anvil_every_endpoint_down_makes_the_chain_blind_until_one_answers() {
    let dir = tempfile::tempdir().unwrap();
    // The shipped rules, with the outage limit at 2 s instead of 30 s.
    let root = drainguard_e2e::repo_root();
    let rules = std::fs::read_to_string(root.join("config/rules.toml")).unwrap();
    let shipped = r#"endpoints_down_for = "30s""#;
    assert!(
        rules.contains(shipped),
        "the shipped blind rule sets its limit"
    );
    let rules = rules.replace(shipped, r#"endpoints_down_for = "2s""#);
    std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
    std::fs::copy(
        root.join("config/denylist.txt"),
        dir.path().join("denylist.txt"),
    )
    .unwrap();
    let mut anvil = Anvil::builder()
        .state(dir.path().join("anvil-state.json"))
        .spawn()
        .unwrap();
    anvil.wait_ready().unwrap();
    let cfg = config_with(
        dir.path(),
        &one_endpoint(&anvil),
        "",
        "[rules]\npath = \"rules.toml\"",
    );
    let d = start(&cfg);
    const BLIND: &str = "drainguard_chain_blind{chain=\"ethereum\"}";
    assert_eq!(metric(&d, BLIND), 0.0);
    // The only endpoint goes away: blind about 2 s later, long before 10
    // expected block times pass without a head.
    anvil.stop().unwrap();
    let stopped = Instant::now();
    wait_until(
        "the outage to make the chain blind",
        Duration::from_secs(15),
        || metric(&d, BLIND) == 1.0,
    );
    assert!(
        stopped.elapsed() >= Duration::from_secs(2),
        "not before its limit"
    );
    assert!(
        d.log()
            .iter()
            .any(|l| l.contains("ethereum is blind: every endpoint has failed for")),
        "the finding says why: {:?}",
        d.log()
    );
    assert_eq!(
        metric(&d, "drainguard_findings_total{rule=\"blind-chain\""),
        1.0,
        "one finding for the outage"
    );
    // The node comes back: the chain is seen again.
    anvil.restart().unwrap();
    anvil.wait_ready().unwrap();
    wait_until(
        "the chain to be seen again",
        Duration::from_secs(15),
        || metric(&d, BLIND) == 0.0,
    );
    assert_eq!(
        metric(&d, "drainguard_findings_total{rule=\"blind-chain\""),
        1.0
    );
}

/// A theft mined at once, seen only in its block (the mempool is not read
/// here): its block number and hash.
fn mined_theft(anvil: &Anvil) -> (u64, String) {
    let hash = anvil
        .send_tx(HOT, THIEF, "0x56bc75e2d63100000", None)
        .unwrap();
    let receipt = anvil.wait_receipt(&hash, Duration::from_secs(10)).unwrap();
    (quantity_u64(&receipt["blockNumber"]).unwrap(), hash)
}

const FREEZES: &str = "drainguard_freezes_total";

#[test]
fn e2e_anvil_a_failed_receipts_request_loses_nothing_and_holds_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::start().unwrap();
    anvil.wait_ready().unwrap();
    let proxy = RpcProxy::start(&anvil.http_url()).unwrap();
    let endpoints = format!(r#"{{ name = "proxied", url = "{}" }}"#, proxy.url());
    let cfg = config_with(dir.path(), &endpoints, "", "mempool = false");
    let d = start(&cfg);
    intent(&d, "wd-1", USER, "1");
    // The node (through the proxy) fails the receipts of the next block.
    proxy.fail_next("eth_getBlockReceipts", 1);
    let (block, hash) = mined_theft(&anvil);
    // Until the block's events are in, the checkpoint stays below it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, text) = d.get("/metrics").unwrap();
        assert_eq!(status, 200);
        let cp = metric_sum(
            &text,
            "drainguard_chain_checkpoint_block{chain=\"ethereum\"}",
        );
        let included = metric_sum(&text, INCLUDED);
        assert!(
            cp < block as f64 || included >= 1.0,
            "checkpoint {cp} passed block {block} before its transfer was evaluated"
        );
        if cp >= block as f64 && metric_sum(&text, FREEZES) >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the block was never processed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(proxy.failed(), 1, "the fault was injected");
    assert!(
        d.log()
            .iter()
            .any(|l| l.contains("blocks not processed; retrying")),
        "the failure was retried"
    );
    // Exactly once, and the theft is the freeze's evidence.
    assert_eq!(metric(&d, INCLUDED), 1.0);
    let store = Store::open(&dir.path().join("state/drainguard.sqlite")).unwrap();
    let frozen = store.freezes(FreezeFilter::Active).unwrap();
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    assert!(format!("{frozen:?}").contains(&hash));
}

#[test]
fn e2e_anvil_a_node_without_block_receipts_is_read_per_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::start().unwrap();
    anvil.wait_ready().unwrap();
    let proxy = RpcProxy::start(&anvil.http_url()).unwrap();
    proxy.remove_method("eth_getBlockReceipts");
    let endpoints = format!(r#"{{ name = "proxied", url = "{}" }}"#, proxy.url());
    let cfg = config_with(dir.path(), &endpoints, "", "mempool = false");
    let d = start(&cfg);
    intent(&d, "wd-1", USER, "1");
    let (block, _) = mined_theft(&anvil);
    wait_until("the freeze", Duration::from_secs(30), || {
        metric(&d, FREEZES) >= 1.0 && checkpoint(&d) >= block as f64
    });
    assert_eq!(metric(&d, INCLUDED), 1.0);
    assert_eq!(proxy.forwarded("eth_getBlockReceipts"), 0);
    assert!(proxy.forwarded("eth_getTransactionReceipt") >= 1);
    assert!(
        d.log()
            .iter()
            .any(|l| l.contains("no eth_getBlockReceipts"))
    );
}

#[test]
fn e2e_anvil_websocket_pushes_the_pending_theft_and_the_new_head() {
    let dir = tempfile::tempdir().unwrap();
    let mut anvil = Anvil::builder().no_mining().spawn().unwrap();
    anvil.wait_ready().unwrap();
    let endpoints = format!(
        r#"{{ name = "anvil", url = "{}", ws = "{}" }}"#,
        anvil.http_url(),
        anvil.ws_url()
    );
    // Polling so slow that only what the socket pushes can be in time.
    let cfg = config_with(dir.path(), &endpoints, "", "")
        .to_string_lossy()
        .into_owned();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("poll_interval = \"100ms\"", "poll_interval = \"60s\"");
    std::fs::write(&cfg, text).unwrap();
    let mut d = start(Path::new(&cfg));
    d.wait_for_log("WebSocket subscriptions up", Duration::from_secs(30))
        .unwrap();
    intent(&d, "wd-1", USER, "1");
    let sent = Instant::now();
    let hash = anvil
        .send_tx(HOT, THIEF, "0x56bc75e2d63100000", None)
        .unwrap();
    let line = d
        .wait_for_log("FREEZE raised", Duration::from_secs(10))
        .unwrap();
    assert!(line.contains(&hash), "{line}");
    assert!(sent.elapsed() < Duration::from_secs(10));
    assert_eq!(anvil.block_number().unwrap(), 0, "frozen while pending");
    // The block is pushed too: included well before the next poll.
    anvil.mine(1).unwrap();
    wait_until("the pushed block", Duration::from_secs(10), || {
        metric(&d, INCLUDED) >= 1.0
    });
}
