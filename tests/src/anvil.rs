//! A real local Ethereum node for end-to-end tests of the EVM watcher:
//! anvil (Foundry's dev node), installed from the npm registry into a cache
//! shared by every test, run on a free loopback port, and driven over its
//! HTTP JSON-RPC API — transfers, mining on demand, reorgs, restarts that
//! keep state — plus a real ERC-20 token (`tests/contracts/TestToken.sol`,
//! compiled bytecode checked in) and the calldata to call it.
//!
//! Behaviour of anvil 1.7.1 that tests rely on, found by running it:
//! - with automine on (the default) each transaction gets a block of its
//!   own, but `eth_sendTransaction` returns once the transaction is in the
//!   pool and the block follows shortly after — under load, after the
//!   next call: wait for the receipt. With `--no-mining` it stays in the
//!   pool (`eth_getTransactionByHash` has `blockNumber: null`) until
//!   `anvil_mine`/`evm_mine`, which mine before they return;
//! - `eth_subscribe` over WebSocket supports `newHeads`, `logs` and
//!   `newPendingTransactions` (hashes, or full transactions with `true`);
//! - `anvil_reorg(depth, txs)` replaces the top `depth` blocks with as many
//!   new ones, so the height stays the same and every replaced block gets a
//!   new hash. Transactions of the replaced blocks are dropped, not put
//!   back in the pool. Subscribers get `newHeads` for the new blocks but no
//!   `removed: true` logs. The node must hold the state of the block the
//!   reorg starts from: after a restart from `--state` it holds only the
//!   loaded head's, so a reorg reaching further back fails ("Required data
//!   unavailable"). `--preserve-historical-states` makes such a reorg
//!   succeed, but the chain it builds has lost the code of contracts
//!   deployed before the restart, so [`AnvilBuilder::state`] does not add
//!   it: better a clear error than a wrong chain;
//! - `--state <file>` loads the file if it exists and dumps the state (with
//!   the blocks and their hashes) only when anvil exits on SIGTERM or
//!   SIGINT: a SIGKILL loses everything since the last start.

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The npm package that ships anvil's Linux x86-64 binary.
pub const ANVIL_NPM_PACKAGE: &str = "@foundry-rs/anvil-linux-amd64";

/// The anvil version the suite is pinned to, so a new release cannot
/// change the node's behaviour under the tests without a commit here.
pub const ANVIL_VERSION: &str = "1.7.1";

/// Environment variable naming an anvil binary to use instead of the
/// npm install.
pub const ANVIL_ENV: &str = "DRAINGUARD_ANVIL";

/// `keccak256("Transfer(address,address,uint256)")`: topic 0 of every
/// ERC-20 transfer log.
pub const TRANSFER_TOPIC: &str =
    "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";

/// `keccak256("Approval(address,address,uint256)")`: topic 0 of every
/// ERC-20 approval log.
pub const APPROVAL_TOPIC: &str =
    "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925";

/// The test token's total supply in base units (one billion tokens of six
/// decimals), all of it minted to the deployer.
pub const TEST_TOKEN_SUPPLY: u128 = 1_000_000_000 * 1_000_000;

/// Where anvil's npm package puts the binary, under the install prefix.
fn installed_binary(prefix: &Path) -> PathBuf {
    prefix
        .join("node_modules")
        .join(ANVIL_NPM_PACKAGE)
        .join("bin")
        .join("anvil")
}

/// The path to an anvil binary: `$DRAINGUARD_ANVIL` if set, else the pinned
/// npm package under `<tools_dir>/anvil/`, installed on first use.
/// Fails — never skips — when it cannot be had, so a machine without npm
/// shows up as a failing test rather than as a silently smaller suite.
pub fn anvil_bin() -> anyhow::Result<PathBuf> {
    // Resolved once per process: tests run in parallel and each would
    // otherwise queue on the file lock and log the version again.
    static RESOLVED: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut resolved = RESOLVED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(bin) = resolved.as_ref() {
        return Ok(bin.clone());
    }
    let bin = match std::env::var_os(ANVIL_ENV) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("{ANVIL_ENV}={} is not a file", path.display());
            }
            path
        }
        None => install_anvil()?,
    };
    let version = anvil_version(&bin)?;
    eprintln!(
        "anvil: {} ({})",
        bin.display(),
        version.lines().next().unwrap_or_default()
    );
    *resolved = Some(bin.clone());
    Ok(bin)
}

/// `anvil --version`, failing with its output when it does not run.
fn anvil_version(bin: &Path) -> anyhow::Result<String> {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} --version failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Installs the pinned package under `<tools_dir>/anvil/` unless that
/// version is already there, under a file lock so that test processes
/// running at once share one install instead of racing npm on one folder.
fn install_anvil() -> anyhow::Result<PathBuf> {
    let (prefix, lock) = crate::locked_tool_dir("anvil")?;
    let bin = installed_binary(&prefix);
    // Checked only now, under the lock: another process may have been
    // halfway through an install when this one looked.
    if installed_version(&prefix).as_deref() != Some(ANVIL_VERSION) || anvil_version(&bin).is_err()
    {
        let spec = format!("{ANVIL_NPM_PACKAGE}@{ANVIL_VERSION}");
        eprintln!("anvil: installing {spec} into {}", prefix.display());
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(&spec)
            .stdin(Stdio::null())
            .output()
            .context(
                "running npm (needed to install anvil; install Node.js and npm, \
                 or set DRAINGUARD_ANVIL to an anvil binary)",
            )?;
        if !out.status.success() {
            bail!(
                "npm install {spec} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if !bin.is_file() {
            bail!(
                "npm installed {spec} but {} is missing: has the package layout changed?",
                bin.display()
            );
        }
    }
    make_executable(&bin)?;
    drop(lock);
    Ok(bin)
}

/// The version in the installed package's `package.json`, if any.
fn installed_version(prefix: &Path) -> Option<String> {
    let manifest = prefix
        .join("node_modules")
        .join(ANVIL_NPM_PACKAGE)
        .join("package.json");
    let text = std::fs::read_to_string(manifest).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    json.get("version")?.as_str().map(str::to_string)
}

/// npm keeps the mode the tarball has (0755 today); this makes sure, in
/// case a repack or an umask ever drops the execute bits.
fn make_executable(bin: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(bin)
        .with_context(|| format!("reading {}", bin.display()))?
        .permissions();
    if perms.mode() & 0o111 != 0o111 {
        perms.set_mode(perms.mode() | 0o755);
        std::fs::set_permissions(bin, perms)
            .with_context(|| format!("making {} executable", bin.display()))?;
    }
    Ok(())
}

/// How to start an [`Anvil`]; every option is kept for [`Anvil::restart`].
#[derive(Debug, Clone, Default)]
pub struct AnvilBuilder {
    block_time: Option<u64>,
    no_mining: bool,
    chain_id: Option<u64>,
    state: Option<PathBuf>,
    extra: Vec<String>,
}

impl AnvilBuilder {
    /// Mines a block every `seconds` (`--block-time`) instead of one per
    /// transaction.
    pub fn block_time(mut self, seconds: u64) -> Self {
        self.block_time = Some(seconds);
        self
    }

    /// Mines only on request (`--no-mining`): sent transactions wait in the
    /// pool, as in a real mempool, until [`Anvil::mine`].
    pub fn no_mining(mut self) -> Self {
        self.no_mining = true;
        self
    }

    /// The chain id (`--chain-id`; anvil's default is 31337).
    pub fn chain_id(mut self, id: u64) -> Self {
        self.chain_id = Some(id);
        self
    }

    /// Loads the chain from this file at start if it exists and dumps it
    /// there on a graceful stop (`--state`), so [`Anvil::restart`] keeps
    /// blocks, balances and contracts. A reorg after a restart cannot reach
    /// blocks from before it (see the module's notes).
    pub fn state(mut self, path: impl Into<PathBuf>) -> Self {
        self.state = Some(path.into());
        self
    }

    /// Any other anvil argument, passed as it is.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// Starts anvil on a free loopback port and waits until it answers.
    pub fn spawn(self) -> anyhow::Result<Anvil> {
        let bin = anvil_bin()?;
        let args = self.args();
        // The port is chosen by binding port 0 and letting it go, so
        // another process may take it before anvil binds: try a few.
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut anvil = Anvil {
                bin: bin.clone(),
                args: args.clone(),
                port,
                interval_mining: self.block_time.is_some(),
                child: None,
                log: Arc::new(Mutex::new(Vec::new())),
                launched_at: 0,
                agent: agent(Duration::from_secs(30)),
                next_id: AtomicU64::new(1),
            };
            match anvil.launch() {
                Ok(()) => return Ok(anvil),
                Err(e) if anvil.lost_port() => last_err = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no attempt to start anvil")))
            .context("anvil found no free port in 5 tries")
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(secs) = self.block_time {
            args.extend(["--block-time".to_string(), secs.to_string()]);
        }
        if self.no_mining {
            args.push("--no-mining".into());
        }
        if let Some(id) = self.chain_id {
            args.extend(["--chain-id".to_string(), id.to_string()]);
        }
        if let Some(state) = &self.state {
            args.push("--state".into());
            args.push(state.display().to_string());
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A running anvil on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct Anvil {
    bin: PathBuf,
    args: Vec<String>,
    port: u16,
    interval_mining: bool,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// Where this start's lines begin in `log`.
    launched_at: usize,
    agent: ureq::Agent,
    next_id: AtomicU64,
}

impl Anvil {
    /// Options for a new node.
    pub fn builder() -> AnvilBuilder {
        AnvilBuilder::default()
    }

    /// A node with anvil's defaults: chain id 31337, automine, ten funded
    /// and unlocked accounts.
    pub fn start() -> anyhow::Result<Anvil> {
        AnvilBuilder::default().spawn()
    }

    /// The TCP port anvil listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP JSON-RPC endpoint.
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The WebSocket JSON-RPC endpoint (same port as HTTP).
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Every line anvil has written to stdout and stderr, across restarts.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether the anvil process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Starts the process and waits until it answers.
    fn launch(&mut self) -> anyhow::Result<()> {
        self.launched_at = self.log.lock().map(|l| l.len()).unwrap_or_default();
        let mut child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        // Both streams are drained so anvil never blocks on a full pipe;
        // it logs every RPC method it serves.
        if let Some(out) = child.stdout.take() {
            self.collect(out);
        }
        if let Some(err) = child.stderr.take() {
            self.collect(err);
        }
        self.child = Some(child);
        self.wait_ready()
    }

    fn collect(&self, stream: impl Read + Send + 'static) {
        let sink = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
    }

    /// Whether the current process (since the last launch) logged a line
    /// containing `needle`.
    fn logged(&self, needle: &str) -> bool {
        self.log()
            .iter()
            .skip(self.launched_at)
            .any(|l| l.contains(needle))
    }

    /// Whether anvil's last start failed because the port was taken.
    fn lost_port(&self) -> bool {
        self.logged("Address already in use")
    }

    /// The last lines of the log, for error messages.
    fn log_tail(&self) -> String {
        let log = self.log();
        let from = log.len().saturating_sub(20);
        log[from..].join("\n")
    }

    /// Waits up to 30 s until `eth_chainId` answers over HTTP.
    pub fn wait_ready(&mut self) -> anyhow::Result<()> {
        self.wait_ready_within(Duration::from_secs(30))
    }

    /// Waits until `eth_chainId` answers over HTTP, failing at once if
    /// anvil exits.
    pub fn wait_ready_within(&mut self, timeout: Duration) -> anyhow::Result<()> {
        // Short per-request timeout: a probe must not eat the whole budget.
        let probe = agent(Duration::from_secs(2));
        // An answer counts only once this process has said it listens:
        // if another process took the port first, that one would answer.
        let listening = format!("Listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().context("anvil is not running")?;
            let exited = child.try_wait()?;
            if exited.is_none()
                && self.logged(&listening)
                && self.post(&probe, "eth_chainId", json!([])).is_ok()
            {
                return Ok(());
            }
            if let Some(status) = exited {
                // Give the reader threads a moment to pick up the last
                // words, which say why.
                std::thread::sleep(Duration::from_millis(100));
                bail!(
                    "anvil exited ({status}) before answering on port {}:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "anvil did not answer eth_chainId on port {} within {timeout:?}:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops anvil gracefully (SIGTERM, which makes it dump `--state`),
    /// killing it if it has not exited within 10 s.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        // std has no portable SIGTERM and the workspace forbids unsafe,
        // so the shell's kill sends it.
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .context("running kill -TERM")?;
        if sent.success() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        } else if child.try_wait()?.is_some() {
            // kill found no process: it had just exited by itself.
            return Ok(());
        }
        child.kill().context("killing anvil")?;
        child.wait().context("waiting for anvil")?;
        bail!("anvil did not exit within 10 s of SIGTERM; killed it")
    }

    /// Kills anvil at once (SIGKILL) and waits for it: a crash, so nothing
    /// is dumped to `--state`.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if child.try_wait()?.is_none() {
                child.kill().context("killing anvil")?;
            }
            child.wait().context("waiting for anvil")?;
        }
        Ok(())
    }

    /// Stops anvil gracefully (if it runs) and starts it again with the
    /// same arguments on the same port, as a node operator's restart does;
    /// with `--state` the chain is dumped on stop and loaded on start.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        // The port is free once anvil has exited (listeners reuse the
        // address), unless another process took it meanwhile; a few short
        // waits cover a slow release.
        for _ in 0..10 {
            match self.launch() {
                Ok(()) => return Ok(()),
                Err(_) if self.lost_port() => std::thread::sleep(Duration::from_millis(200)),
                Err(e) => return Err(e).context("restarting anvil"),
            }
        }
        bail!("port {} stayed taken after anvil stopped", self.port)
    }

    fn post(&self, agent: &ureq::Agent, method: &str, params: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut body = json!({"jsonrpc": "2.0", "id": id, "method": method});
        body["params"] = params;
        let mut resp = agent
            .post(&self.http_url())
            .header("content-type", "application/json")
            .send(body.to_string())
            .with_context(|| format!("{method}: POST {}", self.http_url()))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{method}: reading the response"))?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method}: HTTP {status}, not JSON: {text}"))?;
        if let Some(err) = json.get("error") {
            let message = err.get("message").and_then(Value::as_str).unwrap_or("");
            bail!("{method} failed: {message} ({err})");
        }
        json.get("result")
            .cloned()
            .with_context(|| format!("{method}: HTTP {status}, no result: {text}"))
    }

    /// Several JSON-RPC calls in one batch request: each call's `result`,
    /// in order, or an error naming the first call that failed.
    pub fn rpc_batch(&self, calls: &[(&str, Value)]) -> anyhow::Result<Vec<Value>> {
        let first = self
            .next_id
            .fetch_add(calls.len() as u64, Ordering::Relaxed);
        let body: Vec<Value> = calls
            .iter()
            .zip(first..)
            .map(|((method, params), id)| {
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            })
            .collect();
        let mut resp = self
            .agent
            .post(&self.http_url())
            .header("content-type", "application/json")
            .send(Value::Array(body).to_string())
            .context("batch: POST")?;
        let text = resp.body_mut().read_to_string()?;
        let answers: Vec<Value> = serde_json::from_str(&text)
            .with_context(|| format!("batch: not a JSON array: {text}"))?;
        let mut by_id: std::collections::HashMap<u64, Value> = answers
            .into_iter()
            .filter_map(|a| Some((a.get("id")?.as_u64()?, a)))
            .collect();
        calls
            .iter()
            .zip(first..)
            .map(|((method, _), id)| {
                let a = by_id
                    .remove(&id)
                    .with_context(|| format!("batch: no answer to {method}"))?;
                if let Some(err) = a.get("error") {
                    bail!("{method} failed: {err}");
                }
                a.get("result")
                    .cloned()
                    .with_context(|| format!("batch: {method}: no result"))
            })
            .collect()
    }

    /// One JSON-RPC call over HTTP: its `result`, or an error carrying the
    /// node's message if the response has an `error` member.
    pub fn rpc(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        self.post(&self.agent, method, params)
    }

    /// `eth_chainId`.
    pub fn chain_id(&self) -> anyhow::Result<u64> {
        quantity_u64(&self.rpc("eth_chainId", json!([]))?)
    }

    /// `eth_accounts`: anvil's ten default accounts, funded with 10,000 ETH
    /// each and unlocked for `eth_sendTransaction`, lowercase.
    pub fn accounts(&self) -> anyhow::Result<Vec<String>> {
        let v = self.rpc("eth_accounts", json!([]))?;
        v.as_array()
            .context("eth_accounts: not an array")?
            .iter()
            .map(|a| {
                a.as_str()
                    .map(str::to_ascii_lowercase)
                    .context("eth_accounts: not a string")
            })
            .collect()
    }

    /// Sends a transaction from an unlocked account (`eth_sendTransaction`)
    /// and returns its hash. `value_wei_hex` is a quantity such as `"0x1"`;
    /// `data_hex` is calldata with or without `0x`. Even with automine on,
    /// anvil mines in a task of its own, so the receipt may come a moment
    /// after this returns: see [`Anvil::send_tx_and_wait`].
    pub fn send_tx(
        &self,
        from: &str,
        to: &str,
        value_wei_hex: &str,
        data_hex: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut tx = json!({"from": from, "to": to, "value": value_wei_hex});
        if let Some(data) = data_hex {
            tx["data"] = Value::String(prefixed(data));
        }
        let hash = self.rpc("eth_sendTransaction", json!([tx]))?;
        hash.as_str()
            .map(str::to_string)
            .context("eth_sendTransaction: no hash")
    }

    /// [`Anvil::send_tx`], then waits up to 30 s for the receipt (which
    /// has `status` `"0x1"`, or `"0x0"` if the transaction reverted). For
    /// a node that mines by itself (automine or a block time).
    pub fn send_tx_and_wait(
        &self,
        from: &str,
        to: &str,
        value_wei_hex: &str,
        data_hex: Option<&str>,
    ) -> anyhow::Result<Value> {
        let hash = self.send_tx(from, to, value_wei_hex, data_hex)?;
        self.wait_receipt(&hash, Duration::from_secs(30))
    }

    /// Mines `n` blocks at once (`anvil_mine`), whatever the mining mode.
    pub fn mine(&self, n: u64) -> anyhow::Result<()> {
        self.rpc("anvil_mine", json!([format!("{n:#x}")]))?;
        Ok(())
    }

    /// `eth_blockNumber`.
    pub fn block_number(&self) -> anyhow::Result<u64> {
        quantity_u64(&self.rpc("eth_blockNumber", json!([]))?)
    }

    /// `eth_getBlockByNumber(tag, false)`: the block with transaction
    /// hashes, for a number (`"0x5"`) or a tag (`"latest"`, `"pending"`).
    pub fn block(&self, number_or_tag: &str) -> anyhow::Result<Value> {
        let b = self.rpc("eth_getBlockByNumber", json!([number_or_tag, false]))?;
        if b.is_null() {
            bail!("no block {number_or_tag}");
        }
        Ok(b)
    }

    /// The hash of the head block.
    pub fn head_hash(&self) -> anyhow::Result<String> {
        self.block("latest")?
            .get("hash")
            .and_then(Value::as_str)
            .map(str::to_string)
            .context("head block without a hash")
    }

    /// Turns mining of each transaction as it arrives on or off
    /// (`evm_setAutomine`).
    pub fn set_automine(&self, on: bool) -> anyhow::Result<()> {
        self.rpc("evm_setAutomine", json!([on]))?;
        Ok(())
    }

    /// Replaces the top `depth` blocks with `depth` new ones (`anvil_reorg`):
    /// the height stays, the hashes change, and the replaced blocks'
    /// transactions are dropped. `txs` go into the new blocks: each is a
    /// transaction request (`{"from", "to", "value", ...}`) or a signed raw
    /// transaction hex string, with its block's offset from the first new
    /// block (`0..depth`).
    pub fn reorg(&self, depth: u64, txs: &[(Value, u64)]) -> anyhow::Result<()> {
        let txs: Vec<Value> = txs.iter().map(|(tx, at)| json!([tx, at])).collect();
        self.rpc("anvil_reorg", json!([depth, txs]))?;
        Ok(())
    }

    /// `evm_snapshot`: an id to [`Anvil::revert`] to.
    pub fn snapshot(&self) -> anyhow::Result<String> {
        self.rpc("evm_snapshot", json!([]))?
            .as_str()
            .map(str::to_string)
            .context("evm_snapshot: no id")
    }

    /// `evm_revert` to a snapshot; anvil forgets the snapshot (and later
    /// ones) once reverted to. Fails if the node did not revert.
    pub fn revert(&self, snapshot: &str) -> anyhow::Result<()> {
        match self.rpc("evm_revert", json!([snapshot]))? {
            Value::Bool(true) => Ok(()),
            other => bail!("evm_revert({snapshot}) returned {other}"),
        }
    }

    /// `eth_getTransactionReceipt`: `None` while the transaction is pending
    /// (or unknown).
    pub fn receipt(&self, hash: &str) -> anyhow::Result<Option<Value>> {
        let r = self.rpc("eth_getTransactionReceipt", json!([hash]))?;
        Ok((!r.is_null()).then_some(r))
    }

    /// Polls for a transaction's receipt until `timeout`.
    pub fn wait_receipt(&self, hash: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.receipt(hash)? {
                return Ok(r);
            }
            if Instant::now() > deadline {
                bail!("no receipt for {hash} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `eth_getTransactionByHash`: `None` if the node does not know it.
    pub fn transaction(&self, hash: &str) -> anyhow::Result<Option<Value>> {
        let t = self.rpc("eth_getTransactionByHash", json!([hash]))?;
        Ok((!t.is_null()).then_some(t))
    }

    /// Deploys a contract from an unlocked account and returns its address
    /// (lowercase). The bytecode may have `0x` or not (see
    /// [`test_token_bytecode`]). When nothing mines on its own (automine
    /// off and no block time) a block is mined for it.
    pub fn deploy(&self, from: &str, bytecode_hex: &str) -> anyhow::Result<String> {
        let tx = json!({"from": from, "data": prefixed(bytecode_hex)});
        let hash = self
            .rpc("eth_sendTransaction", json!([tx]))?
            .as_str()
            .map(str::to_string)
            .context("eth_sendTransaction: no hash")?;
        let receipt = match self.receipt(&hash)? {
            Some(r) => r,
            None => {
                let automine = self.rpc("anvil_getAutomine", json!([]))?;
                if automine != Value::Bool(true) && !self.interval_mining {
                    self.mine(1)?;
                }
                self.wait_receipt(&hash, Duration::from_secs(30))?
            }
        };
        if receipt.get("status").and_then(Value::as_str) != Some("0x1") {
            bail!("deployment {hash} failed: {receipt}");
        }
        receipt
            .get("contractAddress")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .context("deployment receipt without contractAddress")
    }

    /// `eth_call` at the latest block: the returned data as hex.
    pub fn call(&self, to: &str, data_hex: &str) -> anyhow::Result<String> {
        self.rpc(
            "eth_call",
            json!([{"to": to, "data": prefixed(data_hex)}, "latest"]),
        )?
        .as_str()
        .map(str::to_string)
        .context("eth_call: not a string")
    }

    /// `eth_getCode` at the latest block (`"0x"` where there is no
    /// contract).
    pub fn code(&self, address: &str) -> anyhow::Result<String> {
        self.rpc("eth_getCode", json!([address, "latest"]))?
            .as_str()
            .map(str::to_string)
            .context("eth_getCode: not a string")
    }

    /// `eth_getBalance` at the latest block, in wei.
    pub fn balance(&self, address: &str) -> anyhow::Result<u128> {
        quantity_u128(&self.rpc("eth_getBalance", json!([address, "latest"]))?)
    }

    /// An ERC-20 `balanceOf(owner)` read with `eth_call`, in base units.
    pub fn erc20_balance(&self, token: &str, owner: &str) -> anyhow::Result<u128> {
        word_u128(&self.call(token, &erc20_balance_of_calldata(owner))?)
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        // Graceful, so a `--state` file a test reads afterwards is whole;
        // stop() falls back to SIGKILL.
        if self.stop().is_err() {
            let _ = self.kill();
        }
    }
}

/// `0x` in front, once.
fn prefixed(hex: &str) -> String {
    format!("0x{}", hex.trim().trim_start_matches("0x"))
}

/// A JSON-RPC quantity (`"0x1a"`) as u64.
pub fn quantity_u64(v: &Value) -> anyhow::Result<u64> {
    let s = v
        .as_str()
        .with_context(|| format!("{v} is not a quantity"))?;
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .with_context(|| format!("{s} is not a u64 quantity"))
}

/// A JSON-RPC quantity (`"0x1a"`) as u128: wei amounts of test accounts fit.
pub fn quantity_u128(v: &Value) -> anyhow::Result<u128> {
    let s = v
        .as_str()
        .with_context(|| format!("{v} is not a quantity"))?;
    u128::from_str_radix(s.trim_start_matches("0x"), 16)
        .with_context(|| format!("{s} is not a u128 quantity"))
}

/// A 32-byte ABI word (`0x` + 64 hex digits, as `eth_call` returns a
/// `uint256` and logs carry amounts) as u128, failing if it does not fit.
pub fn word_u128(hex: &str) -> anyhow::Result<u128> {
    let digits = hex.trim_start_matches("0x");
    if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{hex} is not one 32-byte word");
    }
    let (high, low) = digits.split_at(32);
    if high.bytes().any(|b| b != b'0') {
        bail!("{hex} does not fit in u128");
    }
    u128::from_str_radix(low, 16).with_context(|| format!("{hex} is not hex"))
}

/// The checked-in creation bytecode of `tests/contracts/TestToken.sol`
/// (hex, no `0x`): an ERC-20 with 6 decimals whose constructor mints
/// [`TEST_TOKEN_SUPPLY`] to the deployer.
pub fn test_token_bytecode() -> &'static str {
    include_str!("../contracts/TestToken.bin").trim()
}

/// An address as a 32-byte ABI word (also how it appears as an indexed
/// log topic), lowercase, without `0x`.
///
/// # Panics
/// If `address` is not 20 bytes of hex: a mistake in the test itself.
pub fn address_word(address: &str) -> String {
    let digits = address.trim_start_matches("0x");
    assert!(
        digits.len() == 40 && digits.bytes().all(|b| b.is_ascii_hexdigit()),
        "not an address: {address:?}"
    );
    format!("{:0>64}", digits.to_ascii_lowercase())
}

/// An amount as a 32-byte ABI word, without `0x`.
pub fn amount_word(amount: u128) -> String {
    format!("{amount:064x}")
}

/// Calldata of ERC-20 `transfer(to, amount)`, `0x`-prefixed.
pub fn erc20_transfer_calldata(to: &str, amount: u128) -> String {
    format!("0xa9059cbb{}{}", address_word(to), amount_word(amount))
}

/// Calldata of ERC-20 `approve(spender, amount)`, `0x`-prefixed.
pub fn erc20_approve_calldata(spender: &str, amount: u128) -> String {
    format!("0x095ea7b3{}{}", address_word(spender), amount_word(amount))
}

/// Calldata of ERC-20 `transferFrom(from, to, amount)`, `0x`-prefixed.
pub fn erc20_transfer_from_calldata(from: &str, to: &str, amount: u128) -> String {
    format!(
        "0x23b872dd{}{}{}",
        address_word(from),
        address_word(to),
        amount_word(amount)
    )
}

/// Calldata of ERC-20 `balanceOf(owner)`, `0x`-prefixed.
pub fn erc20_balance_of_calldata(owner: &str) -> String {
    format!("0x70a08231{}", address_word(owner))
}

/// Calldata of ERC-20 `allowance(owner, spender)`, `0x`-prefixed.
pub fn erc20_allowance_calldata(owner: &str, spender: &str) -> String {
    format!("0xdd62ed3e{}{}", address_word(owner), address_word(spender))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_ETH: u128 = 1_000_000_000_000_000_000;

    fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no string {key} in {v}"))
    }

    #[test]
    fn calldata_is_selector_and_padded_words() {
        let to = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
        assert_eq!(
            erc20_transfer_calldata(to, 1_000_000),
            "0xa9059cbb\
             00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8\
             00000000000000000000000000000000000000000000000000000000000f4240"
        );
        assert_eq!(
            erc20_approve_calldata(to, u128::MAX),
            "0x095ea7b3\
             00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8\
             00000000000000000000000000000000ffffffffffffffffffffffffffffffff"
        );
        assert_eq!(
            erc20_balance_of_calldata(to),
            "0x70a08231\
             00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8"
        );
        assert_eq!(word_u128(&format!("0x{}", amount_word(42))).unwrap(), 42);
        assert!(word_u128(&format!("0x1{}", "0".repeat(63))).is_err());
    }

    #[test]
    fn bytecode_is_the_token_and_emits_transfer() {
        let code = test_token_bytecode();
        assert!(
            code.len() > 1000 && code.len().is_multiple_of(2),
            "{}",
            code.len()
        );
        assert!(hex::decode(code).is_ok());
        // The constructor's mint log is compiled in as a PUSH32 of the
        // Transfer topic: the bytecode is the token, not some other file.
        assert!(code.contains(TRANSFER_TOPIC.trim_start_matches("0x")));
        assert!(code.contains(APPROVAL_TOPIC.trim_start_matches("0x")));
    }

    #[test]
    fn eth_transfer_is_mined_with_status_1() {
        let node = Anvil::start().unwrap();
        assert_eq!(node.chain_id().unwrap(), 31337);
        let accounts = node.accounts().unwrap();
        assert_eq!(accounts.len(), 10);
        let (from, to) = (&accounts[0], &accounts[1]);
        let before_from = node.balance(from).unwrap();
        let before_to = node.balance(to).unwrap();
        assert_eq!(before_to, 10_000 * ONE_ETH);

        let receipt = node
            .send_tx_and_wait(from, to, &format!("{ONE_ETH:#x}"), None)
            .unwrap();
        assert_eq!(str_of(&receipt, "status"), "0x1");
        assert_eq!(str_of(&receipt, "blockNumber"), "0x1");
        assert_eq!(str_of(&receipt, "from"), from);
        assert_eq!(str_of(&receipt, "to"), to);
        assert_eq!(node.block_number().unwrap(), 1);

        let gas = quantity_u128(&receipt["gasUsed"]).unwrap()
            * quantity_u128(&receipt["effectiveGasPrice"]).unwrap();
        assert_eq!(node.balance(to).unwrap(), before_to + ONE_ETH);
        assert_eq!(node.balance(from).unwrap(), before_from - ONE_ETH - gas);
    }

    #[test]
    fn no_mining_keeps_a_transaction_pending_until_mined() {
        let mut node = Anvil::builder().no_mining().chain_id(1337).spawn().unwrap();
        assert_eq!(node.chain_id().unwrap(), 1337);
        let accounts = node.accounts().unwrap();
        let hash = node
            .send_tx(&accounts[2], &accounts[3], "0x1", None)
            .unwrap();

        assert_eq!(node.block_number().unwrap(), 0);
        assert_eq!(node.receipt(&hash).unwrap(), None);
        let pending = node.transaction(&hash).unwrap().expect("in the pool");
        assert_eq!(pending["blockNumber"], Value::Null);
        // Time alone does not mine it.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(node.block_number().unwrap(), 0);

        node.mine(1).unwrap();
        assert_eq!(node.block_number().unwrap(), 1);
        let receipt = node.receipt(&hash).unwrap().expect("mined");
        assert_eq!(str_of(&receipt, "status"), "0x1");
        assert_eq!(str_of(&receipt, "blockNumber"), "0x1");
        assert!(node.is_running());
    }

    #[test]
    fn block_time_mines_on_its_own_and_deploy_waits_for_it() {
        let node = Anvil::builder().block_time(1).spawn().unwrap();
        let accounts = node.accounts().unwrap();
        // No mine() here: the deployment lands in the next interval block.
        let token = node.deploy(&accounts[0], test_token_bytecode()).unwrap();
        assert_ne!(node.code(&token).unwrap(), "0x");
        let first = node.block_number().unwrap();
        assert!(first >= 1);
        std::thread::sleep(Duration::from_millis(3000));
        // Empty blocks keep coming, about one a second.
        let later = node.block_number().unwrap();
        assert!(
            (first + 2..=first + 5).contains(&later),
            "{first} -> {later}"
        );
    }

    #[test]
    fn token_transfer_moves_balances_and_logs_transfer() {
        let node = Anvil::start().unwrap();
        let accounts = node.accounts().unwrap();
        let (owner, alice, bob) = (&accounts[0], &accounts[1], &accounts[2]);
        let token = node.deploy(owner, test_token_bytecode()).unwrap();
        assert_ne!(node.code(&token).unwrap(), "0x");
        assert_eq!(
            node.erc20_balance(&token, owner).unwrap(),
            TEST_TOKEN_SUPPLY
        );
        // decimals() == 6
        assert_eq!(
            word_u128(&node.call(&token, "0x313ce567").unwrap()).unwrap(),
            6
        );

        let amount = 1_234_567;
        let receipt = node
            .send_tx_and_wait(
                owner,
                &token,
                "0x0",
                Some(&erc20_transfer_calldata(alice, amount)),
            )
            .unwrap();
        assert_eq!(str_of(&receipt, "status"), "0x1");
        let logs = receipt["logs"].as_array().unwrap();
        assert_eq!(logs.len(), 1);
        let log = &logs[0];
        assert_eq!(str_of(log, "address"), token);
        let topics: Vec<&str> = log["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(
            topics,
            [
                TRANSFER_TOPIC.to_string(),
                format!("0x{}", address_word(owner)),
                format!("0x{}", address_word(alice)),
            ]
        );
        assert_eq!(word_u128(str_of(log, "data")).unwrap(), amount);
        assert_eq!(
            node.erc20_balance(&token, owner).unwrap(),
            TEST_TOKEN_SUPPLY - amount
        );
        assert_eq!(node.erc20_balance(&token, alice).unwrap(), amount);

        // An approval and a transferFrom by the spender, as a drainer with
        // an unlimited allowance would do it.
        let receipt = node
            .send_tx_and_wait(
                alice,
                &token,
                "0x0",
                Some(&erc20_approve_calldata(bob, u128::MAX)),
            )
            .unwrap();
        assert_eq!(receipt["logs"][0]["topics"][0], APPROVAL_TOPIC);
        let receipt = node
            .send_tx_and_wait(
                bob,
                &token,
                "0x0",
                Some(&erc20_transfer_from_calldata(alice, bob, 1_000)),
            )
            .unwrap();
        assert_eq!(str_of(&receipt, "status"), "0x1");
        assert_eq!(receipt["logs"][0]["topics"][0], TRANSFER_TOPIC);
        assert_eq!(node.erc20_balance(&token, alice).unwrap(), amount - 1_000);
        assert_eq!(node.erc20_balance(&token, bob).unwrap(), 1_000);
        // u128::MAX is not the unlimited allowance (that is 2^256 - 1), so
        // this one was spent down.
        let allowance = node
            .call(&token, &erc20_allowance_calldata(alice, bob))
            .unwrap();
        assert_eq!(word_u128(&allowance).unwrap(), u128::MAX - 1_000);

        // Moving more than one holds reverts: anvil still mines the
        // transaction (it does not refuse it at send time), with status 0,
        // no log, and no balance moved.
        let receipt = node
            .send_tx_and_wait(
                bob,
                &token,
                "0x0",
                Some(&erc20_transfer_calldata(alice, 1_001)),
            )
            .unwrap();
        assert_eq!(str_of(&receipt, "status"), "0x0");
        assert_eq!(receipt["logs"], json!([]));
        assert_eq!(node.erc20_balance(&token, bob).unwrap(), 1_000);
        assert_eq!(node.erc20_balance(&token, alice).unwrap(), amount - 1_000);
    }

    #[test]
    fn reorg_replaces_the_head_block_and_drops_its_transactions() {
        let node = Anvil::start().unwrap();
        let accounts = node.accounts().unwrap();
        node.mine(3).unwrap();
        let receipt = node
            .send_tx_and_wait(&accounts[0], &accounts[1], "0x5", None)
            .unwrap();
        let hash = str_of(&receipt, "transactionHash");
        assert_eq!(str_of(&receipt, "blockNumber"), "0x4");
        assert_eq!(node.block_number().unwrap(), 4);
        let old_head = node.block("latest").unwrap();
        let parent = node.block("0x3").unwrap();
        assert_eq!(old_head["parentHash"], parent["hash"]);

        node.reorg(1, &[]).unwrap();

        assert_eq!(node.block_number().unwrap(), 4);
        let new_head = node.block("latest").unwrap();
        assert_ne!(new_head["hash"], old_head["hash"]);
        assert_eq!(new_head["parentHash"], parent["hash"]);
        assert_eq!(new_head["transactions"], json!([]));
        assert_eq!(node.receipt(hash).unwrap(), None);
        assert_eq!(node.transaction(hash).unwrap(), None);

        // A reorg can also put transactions in the new blocks.
        node.reorg(
            2,
            &[(
                json!({"from": accounts[0], "to": accounts[2], "value": "0x7"}),
                1,
            )],
        )
        .unwrap();
        assert_eq!(node.block_number().unwrap(), 4);
        assert_ne!(node.block("latest").unwrap()["hash"], new_head["hash"]);
        let txs = node.block("latest").unwrap()["transactions"].clone();
        assert_eq!(txs.as_array().map(Vec::len), Some(1));
        let receipt = node.receipt(txs[0].as_str().unwrap()).unwrap().unwrap();
        assert_eq!(str_of(&receipt, "to"), accounts[2]);
        assert_eq!(str_of(&receipt, "blockNumber"), "0x4");
    }

    #[test]
    fn automine_off_holds_transactions_until_a_block_is_mined() {
        let node = Anvil::start().unwrap();
        let accounts = node.accounts().unwrap();
        node.set_automine(false).unwrap();
        let held = node
            .send_tx(&accounts[4], &accounts[5], "0x1", None)
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(node.block_number().unwrap(), 0);
        assert_eq!(node.receipt(&held).unwrap(), None);

        // Deploying mines the block it needs, and the held transfer
        // goes into it as well.
        let token = node.deploy(&accounts[4], test_token_bytecode()).unwrap();
        assert_eq!(node.block_number().unwrap(), 1);
        assert_eq!(
            str_of(&node.receipt(&held).unwrap().unwrap(), "blockNumber"),
            "0x1"
        );
        assert_ne!(node.code(&token).unwrap(), "0x");

        node.set_automine(true).unwrap();
        let receipt = node
            .send_tx_and_wait(&accounts[4], &accounts[5], "0x1", None)
            .unwrap();
        assert_eq!(str_of(&receipt, "blockNumber"), "0x2");
    }

    #[test]
    fn snapshot_and_revert_undo_blocks() {
        let node = Anvil::start().unwrap();
        node.mine(2).unwrap();
        let id = node.snapshot().unwrap();
        node.mine(5).unwrap();
        assert_eq!(node.block_number().unwrap(), 7);
        node.revert(&id).unwrap();
        assert_eq!(node.block_number().unwrap(), 2);
        // A snapshot is used up by reverting to it.
        assert!(node.revert(&id).is_err());
    }

    #[test]
    fn restart_waits_while_another_process_holds_the_port() {
        let mut node = Anvil::start().unwrap();
        let port = node.port();
        node.stop().unwrap();
        assert!(!node.is_running());
        let holder = TcpListener::bind(("127.0.0.1", port)).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            drop(holder);
        });

        node.restart().unwrap();
        release.join().unwrap();
        assert_eq!(node.port(), port);
        assert!(node.is_running());
        assert_eq!(node.chain_id().unwrap(), 31337);
        // It did meet the taken port before it got it back.
        assert!(
            node.log()
                .iter()
                .any(|l| l.contains("Address already in use"))
        );
    }

    #[test]
    fn restart_with_state_keeps_the_chain_and_a_kill_loses_what_followed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("anvil-state.json");
        let mut node = Anvil::builder().state(&state).spawn().unwrap();
        let port = node.port();
        let accounts = node.accounts().unwrap();
        let token = node.deploy(&accounts[0], test_token_bytecode()).unwrap();
        let code = node.code(&token).unwrap();
        assert_ne!(code, "0x");
        node.mine(2).unwrap();
        let height = node.block_number().unwrap();
        assert_eq!(height, 3);
        let head = node.head_hash().unwrap();
        // Dumped on exit only: nothing yet.
        assert!(!state.exists());

        node.restart().unwrap();
        assert!(state.exists());
        assert_eq!(node.port(), port);
        assert_eq!(node.code(&token).unwrap(), code);
        assert_eq!(node.block_number().unwrap(), height);
        assert_eq!(node.head_hash().unwrap(), head);
        assert_eq!(
            node.erc20_balance(&token, &accounts[0]).unwrap(),
            TEST_TOKEN_SUPPLY
        );

        // A reorg cannot reach back past the restart, only as far as the
        // loaded head.
        let err = node.reorg(1, &[]).unwrap_err();
        assert!(
            format!("{err:#}").contains("Required data unavailable"),
            "{err:#}"
        );
        node.mine(1).unwrap();
        let mined = node.head_hash().unwrap();
        node.reorg(1, &[]).unwrap();
        assert_eq!(node.block_number().unwrap(), height + 1);
        assert_ne!(node.head_hash().unwrap(), mined);
        assert_eq!(node.block("latest").unwrap()["parentHash"], json!(head));
        assert_eq!(node.code(&token).unwrap(), code);

        // A crash dumps nothing: the blocks and the transfer after the
        // restart are gone.
        node.send_tx_and_wait(
            &accounts[0],
            &token,
            "0x0",
            Some(&erc20_transfer_calldata(&accounts[1], 5)),
        )
        .unwrap();
        assert_eq!(node.erc20_balance(&token, &accounts[1]).unwrap(), 5);
        node.kill().unwrap();
        assert!(!node.is_running());
        node.restart().unwrap();
        assert_eq!(node.block_number().unwrap(), height);
        assert_eq!(node.head_hash().unwrap(), head);
        assert_eq!(node.erc20_balance(&token, &accounts[1]).unwrap(), 0);
    }
}
