//! Catch-up speed of the EVM watcher from a local anvil: a chain of
//! `BLOCKS` blocks (default 6,000) of 2 to 6 native transfers each, a third
//! of them from the exchange's hot wallet, read by a daemon started with
//! no checkpoint at block 1; timed from the watcher's start until the
//! checkpoint reaches the last confirmed block (every event evaluated and
//! durable).
//!
//! `cargo bench -p drainguard-e2e --bench catchup` (`BLOCKS=600` for a
//! short run). Not run by CI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

use std::time::{Duration, Instant};

use drainguard_e2e::{Daemon, anvil::Anvil, metric_sum};
use serde_json::json;

/// A small deterministic generator (xorshift64*): the same chain each run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One planned transfer: the sending account (0 is the hot wallet), the
/// recipient and the value.
struct Planned {
    sender: usize,
    to: String,
    value: String,
}

/// The chain's transfers, block by block: 2 to 6 each, every third from
/// the hot wallet, to fresh addresses.
fn plan(blocks: u64) -> Vec<Vec<Planned>> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut n = 0u64;
    (0..blocks)
        .map(|_| {
            (0..2 + rng.next() % 5)
                .map(|_| {
                    let sender = if n.is_multiple_of(3) {
                        0
                    } else {
                        1 + (rng.next() % 9) as usize
                    };
                    n += 1;
                    Planned {
                        sender,
                        to: format!(
                            "0x{:016x}{:016x}{:08x}",
                            rng.next(),
                            rng.next(),
                            rng.next() as u32
                        ),
                        value: format!(
                            "{:#x}",
                            1_000_000_000_000_000u64 + rng.next() % 1_000_000_000_000
                        ),
                    }
                })
                .collect()
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let blocks: u64 = std::env::var("BLOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    // The chain is built once and kept (anvil's `--state`) under target/:
    // building 6,000 blocks takes anvil minutes.
    let cache = drainguard_e2e::repo_root()
        .join("target/bench")
        .join(format!("catchup-{blocks}.json"));
    std::fs::create_dir_all(cache.parent().unwrap_or(std::path::Path::new(".")))?;
    let cached = cache.exists();
    let mut anvil = Anvil::builder().no_mining().state(&cache).spawn()?;
    anvil.wait_ready()?;
    let accounts = anvil.accounts()?;
    let hot = accounts[0].clone();
    let plan = plan(blocks);
    let transfers: usize = plan.iter().map(Vec::len).sum();
    let from_hot = plan.iter().flatten().filter(|t| t.sender == 0).count() as u64;
    let built = Instant::now();
    if !cached {
        // Nonces given explicitly: anvil may run a batch's calls concurrently.
        let mut nonces = vec![0u64; accounts.len()];
        for block in &plan {
            let calls: Vec<_> = block
                .iter()
                .map(|t| {
                    let nonce = format!("{:#x}", nonces[t.sender]);
                    nonces[t.sender] += 1;
                    let tx = json!({"from": accounts[t.sender], "to": t.to, "value": t.value, "nonce": nonce});
                    ("eth_sendTransaction", json!([tx]))
                })
                .collect();
            anvil.rpc_batch(&calls)?;
            anvil.rpc("evm_mine", json!([]))?;
        }
        // Dumped on a graceful stop, loaded on start.
        anvil.restart()?;
        anvil.wait_ready()?;
    }
    let head = anvil.block_number()?;
    anyhow::ensure!(head == blocks, "the chain has {head} blocks, not {blocks}");
    println!(
        "chain: {head} blocks, {transfers} transfers ({from_hot} from the hot wallet), built in {:.1} s",
        built.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir()?;
    let cfg = drainguard_e2e::write_config(
        dir.path(),
        &format!(
            r#"
[source.sim]
enabled = false
[[source.evm]]
chain = "ethereum"
native = "ETH"
block_time = "12s"
confirmations = 1
poll_interval = "100ms"
rate_limit = 1000
start_block = 1
mempool = false
endpoints = [{{ name = "anvil", url = "{}" }}]
wallets = [{{ address = "{hot}", name = "eth-hot-1" }}]
prices = {{ ETH = 3000.0 }}
"#,
            anvil.http_url()
        ),
    )?;
    let target = (head - 1) as f64;
    let log = std::env::var("DRAINGUARD_LOG").unwrap_or_else(|_| "info".to_string());
    let mut d = Daemon::start_with_env(&cfg, &[("DRAINGUARD_LOG", &log)])?;
    d.wait_for_log("EVM watcher following", Duration::from_secs(60))?;
    let started = Instant::now();
    loop {
        let (_, text) = d.get("/metrics")?;
        if metric_sum(
            &text,
            "drainguard_chain_checkpoint_block{chain=\"ethereum\"}",
        ) >= target
        {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "no catch-up within 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let seconds = started.elapsed().as_secs_f64();
    let (_, text) = d.get("/metrics")?;
    let included = metric_sum(
        &text,
        "drainguard_events_total{chain=\"ethereum\",kind=\"transfer\",stage=\"included\"}",
    );
    println!(
        "catch-up: {} blocks in {seconds:.3} s = {:.0} blocks/s; {included} hot-wallet transfers evaluated ({from_hot} sent)",
        head - 1,
        (head - 1) as f64 / seconds
    );
    if let Some(line) = d.log().iter().find(|l| l.contains("EVM watcher caught up")) {
        println!("watcher: {line}");
    }
    anyhow::ensure!(
        included as u64 == from_hot,
        "{included} transfers evaluated, {from_hot} sent"
    );
    Ok(())
}
