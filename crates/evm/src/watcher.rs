//! The watcher of one EVM chain: follows the head in batches of blocks
//! (each with its transactions and receipts, in JSON-RPC batches), checks
//! every parent hash, walks back a reorg and retracts what the removed
//! blocks said, confirms events `confirmations` blocks later, reads the
//! mempool for transactions sent from a watched wallet, and marks each
//! confirmed block as the one a checkpoint may reach once its events are
//! evaluated and durable.
//!
//! A node's WebSocket (where an endpoint has one) pushes new heads and
//! pending transactions as they happen ([`crate::push`]); HTTP polling
//! carries on underneath as the fallback.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    io::IsTerminal as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use alloy::{
    eips::{BlockId, BlockNumberOrTag},
    network::TransactionResponse as _,
    primitives::{Address as EvmAddress, B256, Bytes, U256},
    providers::Provider,
    rpc::{
        client::BatchRequest,
        json_rpc::{ErrorPayload, RpcError, RpcRecv, RpcSend},
        types::{Block, Transaction, TransactionReceipt},
    },
    transports::TransportErrorKind,
};
use drainguard_bus::{BusSender, Position};
use drainguard_model::{
    Amount, Asset, BalanceObs, Event, EventKind, Head, Stage, Timestamp, WalletDecl,
};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{
    EvmError,
    config::{EvmChain, Watched},
    decode,
    push::{self, Live, Push},
    rpc::Pool,
};

/// A block processed and still within reorg depth.
#[derive(Debug, Clone)]
struct Seen {
    number: u64,
    hash: B256,
    events: Vec<EventKind>,
}

/// A block read whole: its events decoded, and the native balances of the
/// watched wallets that paid a fee in it.
struct Read {
    number: u64,
    hash: B256,
    timestamp: u64,
    events: Vec<EventKind>,
    balances: Vec<BalanceObs>,
}

/// The watcher of one chain.
#[derive(Debug)]
pub struct EvmWatcher {
    chain: EvmChain,
    watched: Watched,
    pool: Pool,
    recent: VecDeque<Seen>,
    pending_filter: Option<U256>,
    pending_seen: HashSet<B256>,
    /// Whether the node answers `eth_getBlockReceipts`; when it does not,
    /// receipts are asked one transaction at a time (in one batch).
    block_receipts: bool,
    /// Wallets whose balances the node could not say at the start.
    unknown: Vec<EvmAddress>,
    /// Set while the watcher is within a batch of its node's head (for
    /// `/readyz`).
    synced: Arc<AtomicBool>,
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Calls sent in one JSON-RPC batch request; larger sets go as several
/// requests at once.
const BATCH_CALLS: usize = 50;

/// Whether a JSON-RPC error says the node has no such method.
fn unsupported(p: &ErrorPayload) -> bool {
    let m = p.message.to_ascii_lowercase();
    p.code == -32601 || m.contains("not supported") || m.contains("does not exist")
}

impl EvmWatcher {
    /// A watcher over a pool of endpoints.
    pub fn new(chain: EvmChain, watched: Watched, pool: Pool) -> EvmWatcher {
        EvmWatcher {
            chain,
            watched,
            pool,
            recent: VecDeque::new(),
            pending_filter: None,
            pending_seen: HashSet::new(),
            block_receipts: true,
            unknown: Vec::new(),
            synced: Arc::default(),
        }
    }

    /// Shares the watcher's "caught up" flag.
    #[must_use]
    pub fn with_synced(mut self, synced: Arc<AtomicBool>) -> EvmWatcher {
        self.synced = synced;
        self
    }

    async fn send<C>(
        &self,
        bus: &BusSender<C>,
        kind: EventKind,
        completes: Option<Position>,
    ) -> Result<(), EvmError> {
        bus.send(Event { t: now(), kind }, completes)
            .await
            .map_err(|_| EvmError::BusClosed)
    }

    /// Declares the watched wallets with their balances as of block `at`,
    /// the last block before the first one read: the engine then applies
    /// every later transfer exactly once. A node that no longer has that
    /// block's state (a pruned node, a checkpoint far behind) cannot say
    /// them: those wallets are declared without, and their balances are
    /// read after the first batch of blocks, as of its last block.
    async fn declare<C>(&mut self, bus: &BusSender<C>, at: u64) -> Result<(), EvmError> {
        let wallets: Vec<_> = self
            .watched
            .wallets()
            .map(|(a, (n, r))| (*a, n.clone(), *r))
            .collect();
        let addresses: Vec<EvmAddress> = wallets.iter().map(|(a, _, _)| *a).collect();
        let mut held = self.holdings(&addresses, BlockId::number(at)).await?;
        self.unknown.clear();
        for (address, name, role) in wallets {
            let (balances, unknown): (Vec<_>, Vec<_>) = held
                .remove(&address)
                .unwrap_or_default()
                .into_iter()
                .partition(Option::is_some);
            if !unknown.is_empty() {
                self.unknown.push(address);
            }
            let decl = WalletDecl {
                chain: self.chain.name.clone(),
                address: decode::address(&address),
                name,
                role,
                balances: balances.into_iter().flatten().collect(),
            };
            self.send(bus, EventKind::Wallet(decl), None).await?;
        }
        if !self.unknown.is_empty() {
            tracing::warn!(message = "the node has no state at the block before the first one read (a pruned node?): balances are read after the first batch", chain = %self.chain.name, block = at, wallets = self.unknown.len());
        }
        Ok(())
    }

    /// Each wallet's balance of the native asset and of every known token
    /// as of `at`; `None` where the node does not have that block's state.
    async fn holdings(
        &mut self,
        wallets: &[EvmAddress],
        at: BlockId,
    ) -> Result<HashMap<EvmAddress, Vec<Option<BalanceObs>>>, EvmError> {
        let at_each: Vec<(BlockId, EvmAddress)> = wallets.iter().map(|w| (at, *w)).collect();
        let native = self.balances(&at_each).await?;
        let tokens: Vec<(EvmAddress, Asset, u8)> = self
            .watched
            .tokens()
            .map(|(a, (sym, d))| (*a, sym.clone(), *d))
            .collect();
        let mut calls = Vec::new();
        for w in wallets {
            for (token, _, _) in &tokens {
                // balanceOf(address)
                let data = format!("0x70a08231{:0>64}", hex::encode(w.as_slice()));
                calls.push((serde_json::json!({"to": token, "data": data}), at));
            }
        }
        let answers: Vec<Result<Bytes, _>> = self.batch("eth_call", calls, |_| true).await?;
        let mut answers = answers.into_iter();
        let mut out = HashMap::new();
        for (w, n) in wallets.iter().zip(native) {
            let obs = |asset: Asset, decimals: u8, amount: U256| BalanceObs {
                chain: self.chain.name.clone(),
                wallet: decode::address(w),
                asset,
                amount: Amount(amount),
                decimals,
            };
            let mut held =
                vec![n.map(|n| obs(self.watched.native.clone(), self.watched.native_decimals, n))];
            for (token, symbol, decimals) in &tokens {
                let answer = answers.next().and_then(Result::ok);
                held.push(match answer {
                    Some(b) if b.len() == 32 => {
                        Some(obs(symbol.clone(), *decimals, U256::from_be_slice(&b)))
                    }
                    Some(b) => {
                        return Err(EvmError::Malformed(format!(
                            "balanceOf of token {token:#x} answered {} bytes, not 32",
                            b.len()
                        )));
                    }
                    None => None,
                });
            }
            out.insert(*w, held);
        }
        Ok(out)
    }

    /// Waits before retrying a call every endpoint failed; `false` when
    /// cancelled meanwhile.
    async fn retry_later(&self, token: &CancellationToken, what: &str, e: &EvmError) -> bool {
        tracing::error!(message = "no endpoint answers; retrying", chain = %self.chain.name, what, error = %e);
        tokio::select! {
            () = token.cancelled() => false,
            () = tokio::time::sleep(self.chain.poll_interval.max(Duration::from_millis(500))) => true,
        }
    }

    /// Follows the chain from `resume` (the checkpoint's block and hash;
    /// `None`: the start block or the current head) until cancelled.
    pub async fn run<C>(
        mut self,
        resume: Option<(u64, String)>,
        bus: BusSender<C>,
        token: CancellationToken,
    ) -> Result<(), EvmError> {
        let name = self.chain.name.clone();
        if let Some(m) = self.pool.metrics() {
            m.init_chain(name.as_str());
        }
        // A node down at start is waited for, not a reason to stop.
        let head = loop {
            match self.head().await {
                Ok(h) => break h,
                Err(e) => {
                    if !self.retry_later(&token, "eth_blockNumber", &e).await {
                        return Ok(());
                    }
                }
            }
        };
        let mut next = match (&resume, self.chain.start_block) {
            (Some((cp, hash)), _) => {
                // The first block read must extend the checkpointed one: a
                // reorg while the daemon was down is followed too.
                if let Ok(hash) = hash.parse() {
                    self.recent.push_back(Seen {
                        number: *cp,
                        hash,
                        events: Vec::new(),
                    });
                }
                cp + 1
            }
            (None, Some(b)) => b,
            // No history: from the next block on, with balances as of now.
            (None, None) => head.saturating_add(1),
        };
        loop {
            match self.declare(&bus, next.saturating_sub(1)).await {
                Ok(()) => break,
                Err(EvmError::BusClosed) => return Ok(()),
                Err(e) => {
                    if !self.retry_later(&token, "the wallets' balances", &e).await {
                        return Ok(());
                    }
                }
            }
        }

        // What the nodes push, when they have a WebSocket.
        let sockets: Vec<(String, String)> = self
            .chain
            .endpoints
            .iter()
            .filter_map(|e| e.ws.clone().map(|ws| (e.name.clone(), ws)))
            .collect();
        let live = Live::default();
        let (push_tx, mut push_rx) = mpsc::channel::<Push>(1024);
        let mut pushing = !sockets.is_empty();
        if pushing {
            tokio::spawn(push::follow(
                name.to_string(),
                sockets,
                self.chain.mempool,
                push_tx,
                live.clone(),
                token.child_token(),
            ));
        } else {
            drop(push_tx);
        }
        // The mempool filter first: a transaction sent from now on is seen.
        if self.chain.mempool
            && let Err(e) = self.pending_filter_id().await
        {
            tracing::warn!(message = "no mempool filter: pending transactions will not be seen until one is made", chain = %name, error = %e);
        }
        tracing::info!(message = "EVM watcher following", chain = %name, from_block = next, head, endpoint = %self.pool.active());

        let mut known_head = Some(head);
        let mut failures = 0u32;
        loop {
            if token.is_cancelled() {
                return Ok(());
            }
            let head = match known_head.take() {
                Some(h) => Some(h),
                None => match self.head().await {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::error!(message = "no endpoint answers; retrying", chain = %name, error = %e);
                        None
                    }
                },
            };
            let mut behind = false;
            if let Some(head) = head {
                if let Some(m) = self.pool.metrics() {
                    let h = i64::try_from(head).unwrap_or(i64::MAX);
                    m.node_head.with_label_values(&[name.as_str()]).set(h);
                }
                match self.catch_up(&mut next, head, &bus, &token).await {
                    Err(EvmError::BusClosed) => return Ok(()),
                    Err(e) => {
                        failures += 1;
                        behind = true;
                        tracing::error!(message = "blocks not processed; retrying", chain = %name, block = next, failures, error = %e);
                    }
                    Ok(()) => {
                        failures = 0;
                        behind = next <= head;
                    }
                }
            }
            if self.chain.mempool
                && !live.mempool()
                && let Err(e) = self.mempool(&bus).await
            {
                if matches!(e, EvmError::BusClosed) {
                    return Ok(());
                }
                tracing::warn!(message = "mempool not read", chain = %name, error = %e);
                self.pending_filter = None;
            }
            // Wait for the next poll, a pushed head, or pushed pending
            // transactions (judged at once).
            // A head pushed before the node serves its block, or an answer
            // caught mid-update (a transaction not yet shown in its block),
            // is asked again soon rather than a poll interval later; failing
            // again, less and less soon.
            let wait = if behind {
                let soon = Duration::from_millis(20) * 2u32.pow(failures.saturating_sub(1).min(8));
                self.chain.poll_interval.min(soon)
            } else {
                self.chain.poll_interval
            };
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep_until(deadline) => break,
                    p = push_rx.recv(), if pushing => {
                        let done = match p {
                            Some(Push::Head(n)) => {
                                known_head = Some(n);
                                true
                            }
                            Some(Push::Tx(tx)) => {
                                self.pending(&tx, &bus).await?;
                                false
                            }
                            Some(Push::Hash(h)) => {
                                if let Err(e) = self.pending_hash(h, &bus).await {
                                    if matches!(e, EvmError::BusClosed) {
                                        return Ok(());
                                    }
                                    tracing::warn!(message = "pending transaction not read", chain = %name, error = %e);
                                }
                                false
                            }
                            None => {
                                pushing = false;
                                false
                            }
                        };
                        if done {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Reads and evaluates every block from `next` to `head`, in batches;
    /// `next` is moved past each batch fully sent.
    async fn catch_up<C>(
        &mut self,
        next: &mut u64,
        head: u64,
        bus: &BusSender<C>,
        token: &CancellationToken,
    ) -> Result<(), EvmError> {
        let batch = self.chain.batch_blocks.max(1);
        // Ready means within a batch of the head: a live chain is always a
        // block or so behind between two heads.
        self.synced
            .store(head.saturating_sub(*next) < batch, Ordering::SeqCst);
        if *next > head {
            return Ok(());
        }
        let from = *next;
        let behind = head - from + 1;
        let started = Instant::now();
        // A bar only for a person watching a long catch-up.
        let bar = (behind > batch && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(behind);
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix} catching up {wide_bar} {pos}/{len} blocks {per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar.set_prefix(self.chain.name.to_string());
            bar
        });
        let mut result = Ok(());
        while *next <= head && !token.is_cancelled() {
            let to = head.min(*next + batch - 1);
            match self.range(*next, to, head, bus).await {
                Ok(n) if n == *next => break,
                Ok(n) => {
                    *next = n;
                    if let Some(b) = &bar {
                        b.set_position(n.saturating_sub(from));
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        self.synced
            .store(head.saturating_sub(*next) < batch, Ordering::SeqCst);
        let done = next.saturating_sub(from);
        if done > batch {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(message = "EVM watcher caught up", chain = %self.chain.name, blocks = done, seconds, blocks_per_second = done as f64 / seconds.max(1e-9), next = *next);
        }
        result
    }

    /// Processes blocks `from..=to` (fewer if the node has not got them
    /// all, or a parent hash breaks); the next block to read (lower after
    /// a reorg). Everything is read and decoded before the first event is
    /// sent, so an error leaves nothing half sent.
    async fn range<C>(
        &mut self,
        from: u64,
        to: u64,
        head: u64,
        bus: &BusSender<C>,
    ) -> Result<u64, EvmError> {
        let t0 = Instant::now();
        let mut blocks = self.blocks(from, to).await?;
        let t_blocks = t0.elapsed();
        // Keep the run of blocks that extend what was processed.
        let mut parent = self
            .recent
            .back()
            .filter(|s| s.number + 1 == from)
            .map(|s| s.hash);
        let mut keep = 0;
        for b in &blocks {
            if parent.is_some_and(|p| p != b.header.parent_hash) {
                break;
            }
            parent = Some(b.header.hash);
            keep += 1;
        }
        if keep == 0 && !blocks.is_empty() {
            return self.reorg(bus).await;
        }
        blocks.truncate(keep);
        let Some(last) = blocks.last().map(|b| b.header.number) else {
            return Ok(from);
        };
        let receipts = self.receipts(&blocks).await?;
        let t_receipts = t0.elapsed();
        let bodies = self.bodies(&blocks, &receipts).await?;
        let t_bodies = t0.elapsed();
        // Each fee payer's balance after the last block of the range it
        // paid in: one read per wallet and range.
        let mut last_paid: HashMap<EvmAddress, B256> = HashMap::new();
        let mut read = Vec::with_capacity(blocks.len());
        for (block, receipts) in blocks.iter().zip(&receipts) {
            let events =
                decode::block_events(&self.chain.name, &self.watched, block, receipts, &bodies)?;
            for p in decode::fee_payers(&self.watched, receipts) {
                last_paid.insert(p, block.header.hash);
            }
            read.push(Read {
                number: block.header.number,
                hash: block.header.hash,
                timestamp: block.header.timestamp,
                events,
                balances: Vec::new(),
            });
        }
        let t_decode = t0.elapsed();
        let payers: Vec<(B256, EvmAddress)> = last_paid.into_iter().map(|(w, b)| (b, w)).collect();
        // EIP-1898: each balance as of that very block.
        let at: Vec<_> = payers
            .iter()
            .map(|(hash, w)| (BlockId::from((*hash, Some(false))), *w))
            .collect();
        let balances = self.balances(&at).await?;
        for ((hash, wallet), balance) in payers.into_iter().zip(balances) {
            if let (Some(r), Some(balance)) = (read.iter_mut().find(|r| r.hash == hash), balance) {
                r.balances.push(BalanceObs {
                    chain: self.chain.name.clone(),
                    wallet: decode::address(&wallet),
                    asset: self.watched.native.clone(),
                    amount: Amount(balance),
                    decimals: self.watched.native_decimals,
                });
            }
        }
        // Balances the node could not say at the start, as of this batch's
        // last block (recent, so its state is there).
        if !self.unknown.is_empty()
            && let Some(r) = read.last_mut()
        {
            let wallets = std::mem::take(&mut self.unknown);
            let held = self.holdings(&wallets, BlockId::hash(r.hash)).await?;
            for (wallet, held) in held {
                if held.iter().any(Option::is_none) {
                    self.unknown.push(wallet);
                }
                r.balances.extend(held.into_iter().flatten());
            }
        }
        let t_balances = t0.elapsed();
        for r in read {
            // The checkpoint moves once a batch: one durable write per
            // batch while catching up, one per block when following.
            let checkpoint = r.number == last;
            self.emit(r, head, checkpoint, bus).await?;
        }
        tracing::debug!(
            message = "range",
            from,
            last,
            blocks_ms = t_blocks.as_secs_f64() * 1e3,
            receipts_ms = t_receipts.as_secs_f64() * 1e3,
            bodies_ms = t_bodies.as_secs_f64() * 1e3,
            decode_ms = t_decode.as_secs_f64() * 1e3,
            balances_ms = t_balances.as_secs_f64() * 1e3,
            emit_ms = t0.elapsed().as_secs_f64() * 1e3
        );
        Ok(last + 1)
    }

    /// Sends one read block's events, its confirmations and its head.
    async fn emit<C>(
        &mut self,
        r: Read,
        head: u64,
        checkpoint: bool,
        bus: &BusSender<C>,
    ) -> Result<(), EvmError> {
        for e in &r.events {
            self.send(bus, e.clone(), None).await?;
        }
        // A fee is not a transfer: the node's balance after the block says
        // what the wallet holds.
        for obs in &r.balances {
            self.send(bus, EventKind::Balance(obs.clone()), None)
                .await?;
        }
        let number = r.number;
        self.recent.push_back(Seen {
            number,
            hash: r.hash,
            events: r.events,
        });
        while self.recent.len() as u64
            > self.chain.max_reorg_depth.max(self.chain.confirmations) + 1
        {
            self.recent.pop_front();
        }
        // Events `confirmations` deep are confirmed, and that block is the
        // checkpoint once they are evaluated and durable.
        let mut completes = None;
        if let Some(c) = number.checked_sub(self.chain.confirmations)
            && let Some(s) = self.recent.iter().find(|s| s.number == c)
        {
            if self.chain.confirmations > 0 {
                let confirmed: Vec<EventKind> = s
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        EventKind::Transfer(t) => {
                            let mut t = t.clone();
                            t.stage = Stage::Confirmed;
                            Some(EventKind::Transfer(t))
                        }
                        _ => None,
                    })
                    .collect();
                for e in confirmed {
                    self.send(bus, e, None).await?;
                }
            }
            if checkpoint {
                completes = Some(Position {
                    chain: self.chain.name.clone(),
                    block: s.number,
                    hash: format!("{:#x}", s.hash),
                });
            }
        }
        if let Some(m) = self.pool.metrics() {
            let chain = [self.chain.name.as_str()];
            let lag = head.saturating_sub(number);
            m.lag_blocks
                .with_label_values(&chain)
                .set(i64::try_from(lag).unwrap_or(i64::MAX));
            let age = u64::try_from(now().0 / 1_000_000_000)
                .unwrap_or(0)
                .saturating_sub(r.timestamp);
            m.lag_seconds
                .with_label_values(&chain)
                .set(i64::try_from(age).unwrap_or(i64::MAX));
        }
        let head = Head {
            chain: self.chain.name.clone(),
            block: number,
            hash: format!("{:#x}", r.hash),
        };
        self.send(bus, EventKind::Head(head), completes).await
    }

    async fn head(&mut self) -> Result<u64, EvmError> {
        self.pool
            .call(
                "eth_blockNumber",
                |p| async move { p.get_block_number().await },
            )
            .await
    }

    /// One JSON-RPC method called with each of `params`, in batches of
    /// [`BATCH_CALLS`] sent at once (a node serves them on several cores):
    /// each call's result, or its error where `tolerated` accepts it. Any
    /// other error fails the whole call, which then goes to the next
    /// endpoint.
    async fn batch<P, R>(
        &mut self,
        method: &'static str,
        params: Vec<P>,
        tolerated: fn(&ErrorPayload) -> bool,
    ) -> Result<Vec<Result<R, ErrorPayload>>, EvmError>
    where
        P: RpcSend + Clone + 'static,
        R: RpcRecv,
    {
        if params.is_empty() {
            return Ok(Vec::new());
        }
        self.pool
            .call(method, |p| {
                let params = params.clone();
                async move {
                    let chunks = params.chunks(BATCH_CALLS).map(|chunk| {
                        let p = p.clone();
                        async move {
                            let mut batch = BatchRequest::new(p.client());
                            let mut waiters = Vec::with_capacity(chunk.len());
                            for one in chunk {
                                waiters.push(batch.add_call::<_, R>(method, one)?);
                            }
                            batch.send().await?;
                            let mut out = Vec::with_capacity(waiters.len());
                            for w in waiters {
                                out.push(match w.await {
                                    Ok(r) => Ok(r),
                                    Err(RpcError::ErrorResp(e)) if tolerated(&e) => Err(e),
                                    Err(e) => return Err(e),
                                });
                            }
                            Ok::<_, RpcError<TransportErrorKind>>(out)
                        }
                    });
                    let done = futures_util::future::try_join_all(chunks).await?;
                    Ok::<_, RpcError<TransportErrorKind>>(done.into_iter().flatten().collect())
                }
            })
            .await
    }

    /// Blocks `from..=to` with their transaction hashes; stops at the
    /// first the node does not have. (Whole transactions are read only
    /// where a receipt says a watched wallet is in them: a node's full
    /// blocks cost several times more.)
    async fn blocks(&mut self, from: u64, to: u64) -> Result<Vec<Block>, EvmError> {
        let params: Vec<_> = (from..=to)
            .map(|n| (BlockNumberOrTag::Number(n), false))
            .collect();
        let got: Vec<Result<Option<Block>, _>> = self
            .batch("eth_getBlockByNumber", params, |_| false)
            .await?;
        let mut blocks = Vec::with_capacity(got.len());
        for (n, b) in (from..=to).zip(got) {
            let Ok(Some(b)) = b else { break };
            if b.header.number != n {
                return Err(EvmError::Malformed(format!(
                    "asked for block {n}, got block {}",
                    b.header.number
                )));
            }
            blocks.push(b);
        }
        Ok(blocks)
    }

    /// The receipts of each block, asked by block hash (so they are of
    /// that very block): `eth_getBlockReceipts` where the node has it,
    /// otherwise `eth_getTransactionReceipt` for each transaction.
    async fn receipts(
        &mut self,
        blocks: &[Block],
    ) -> Result<Vec<Vec<TransactionReceipt>>, EvmError> {
        let with_txs: Vec<&Block> = blocks
            .iter()
            .filter(|b| !b.transactions.is_empty())
            .collect();
        let mut got: HashMap<B256, Vec<TransactionReceipt>> = HashMap::new();
        if self.block_receipts && !with_txs.is_empty() {
            let params: Vec<_> = with_txs
                .iter()
                .map(|b| (BlockId::hash(b.header.hash),))
                .collect();
            let answers: Vec<Result<Option<Vec<TransactionReceipt>>, _>> = self
                .batch("eth_getBlockReceipts", params, unsupported)
                .await?;
            if answers.iter().any(Result::is_err) {
                tracing::warn!(message = "the node has no eth_getBlockReceipts; asking receipts one transaction at a time", chain = %self.chain.name);
                self.block_receipts = false;
            } else {
                for (b, r) in with_txs.iter().zip(answers) {
                    if let Ok(Some(r)) = r {
                        got.insert(b.header.hash, r);
                    }
                }
            }
        }
        if !self.block_receipts {
            let hashes: Vec<(B256, B256)> = with_txs
                .iter()
                .flat_map(|b| b.transactions.hashes().map(|h| (b.header.hash, h)))
                .collect();
            let params: Vec<_> = hashes.iter().map(|(_, h)| (*h,)).collect();
            let answers: Vec<Result<Option<TransactionReceipt>, _>> = self
                .batch("eth_getTransactionReceipt", params, |_| false)
                .await?;
            for ((block, tx), r) in hashes.into_iter().zip(answers) {
                let r = r.ok().flatten().ok_or_else(|| {
                    EvmError::Malformed(format!("no receipt for transaction {tx:#x}"))
                })?;
                got.entry(block).or_default().push(r);
            }
        }
        blocks
            .iter()
            .map(|b| {
                if b.transactions.is_empty() {
                    return Ok(Vec::new());
                }
                got.remove(&b.header.hash).ok_or_else(|| {
                    EvmError::Malformed(format!(
                        "no receipts for block {} {:#x} (reorganized away?)",
                        b.header.number, b.header.hash
                    ))
                })
            })
            .collect()
    }

    /// The whole transactions that the receipts say concern a watched
    /// wallet; each must be of its block.
    async fn bodies(
        &mut self,
        blocks: &[Block],
        receipts: &[Vec<TransactionReceipt>],
    ) -> Result<HashMap<B256, Transaction>, EvmError> {
        let wanted: Vec<(B256, B256)> = blocks
            .iter()
            .zip(receipts)
            .flat_map(|(b, rs)| {
                rs.iter()
                    .filter(|r| decode::needs_body(&self.watched, r))
                    .map(|r| (r.transaction_hash, b.header.hash))
            })
            .collect();
        let params: Vec<_> = wanted.iter().map(|(h, _)| (*h,)).collect();
        let got: Vec<Result<Option<Transaction>, _>> = self
            .batch("eth_getTransactionByHash", params, |_| false)
            .await?;
        let mut bodies = HashMap::with_capacity(got.len());
        for ((hash, block), tx) in wanted.into_iter().zip(got) {
            let tx = tx
                .ok()
                .flatten()
                .filter(|t| t.block_hash == Some(block))
                .ok_or_else(|| {
                    EvmError::Malformed(format!(
                        "transaction {hash:#x} is not in block {block:#x} any more (reorganized?)"
                    ))
                })?;
            bodies.insert(hash, tx);
        }
        Ok(bodies)
    }

    /// Native balances of wallets as of blocks. A node that no longer has
    /// a block's state (a pruned full node, far behind) says so for that
    /// balance: `None`, and the engine keeps its own count.
    async fn balances(
        &mut self,
        at: &[(BlockId, EvmAddress)],
    ) -> Result<Vec<Option<U256>>, EvmError> {
        let params: Vec<_> = at.iter().map(|(block, wallet)| (*wallet, *block)).collect();
        let got: Vec<Result<U256, _>> = self.batch("eth_getBalance", params, |_| true).await?;
        Ok(got.into_iter().map(Result::ok).collect())
    }

    /// Walks back to the common ancestor, retracting the events of every
    /// removed block; the next block to read.
    async fn reorg<C>(&mut self, bus: &BusSender<C>) -> Result<u64, EvmError> {
        let mut depth = 0u64;
        let mut lowest_removed = None;
        while let Some(last) = self.recent.back().cloned() {
            let canonical = self.blocks(last.number, last.number).await?;
            if canonical
                .first()
                .is_some_and(|b| b.header.hash == last.hash)
            {
                break;
            }
            depth += 1;
            for e in last.events.iter().rev() {
                let retracted = match e {
                    EventKind::Transfer(t) => {
                        let mut t = t.clone();
                        t.stage = Stage::Retracted;
                        EventKind::Transfer(t)
                    }
                    _ => continue,
                };
                self.send(bus, retracted, None).await?;
            }
            self.recent.pop_back();
            lowest_removed = Some(last.number);
            if depth > self.chain.max_reorg_depth {
                tracing::error!(message = "REORG deeper than the maximum followed: events of older removed blocks stay counted", chain = %self.chain.name, depth, max = self.chain.max_reorg_depth);
                break;
            }
        }
        let chain = [self.chain.name.as_str()];
        if let Some(m) = self.pool.metrics() {
            m.reorgs.with_label_values(&chain).inc();
            #[allow(clippy::cast_precision_loss)]
            m.reorg_depth
                .with_label_values(&chain)
                .observe(depth as f64);
        }
        if depth > self.chain.confirmations {
            // The checkpoint may name a removed block: the next one written
            // is lower, and the daemon rewinds it (audited).
            if let Some(m) = self.pool.metrics() {
                m.deep_reorgs.with_label_values(&chain).inc();
            }
            tracing::error!(message = "deep reorg: deeper than the confirmation depth, so confirmed events were retracted and the checkpoint is rewound", chain = %self.chain.name, depth, confirmations = self.chain.confirmations);
        }
        tracing::warn!(message = "reorg", chain = %self.chain.name, depth);
        // With nothing older kept, reading starts again at the lowest
        // block removed.
        Ok(self
            .recent
            .back()
            .map(|s| s.number + 1)
            .or(lowest_removed)
            .unwrap_or(0))
    }

    /// The node's filter of new pending transactions (made once).
    async fn pending_filter_id(&mut self) -> Result<U256, EvmError> {
        if let Some(id) = self.pending_filter {
            return Ok(id);
        }
        let id = self
            .pool
            .call("eth_newPendingTransactionFilter", |p| async move {
                p.new_pending_transactions_filter(false).await
            })
            .await?;
        self.pending_filter = Some(id);
        Ok(id)
    }

    /// Reads new pending transactions through the HTTP filter.
    async fn mempool<C>(&mut self, bus: &BusSender<C>) -> Result<(), EvmError> {
        let id = self.pending_filter_id().await?;
        let hashes: Vec<B256> = self
            .pool
            .call("eth_getFilterChanges", |p| async move {
                p.get_filter_changes::<B256>(id).await
            })
            .await?;
        for h in hashes {
            self.pending_hash(h, bus).await?;
        }
        Ok(())
    }

    /// A pending transaction known by its hash: read it, then judge it.
    async fn pending_hash<C>(&mut self, h: B256, bus: &BusSender<C>) -> Result<(), EvmError> {
        if !self.first_sight(h) {
            return Ok(());
        }
        let tx: Option<Transaction> = self
            .pool
            .call("eth_getTransactionByHash", |p| async move {
                p.get_transaction_by_hash(h).await
            })
            .await?;
        match tx {
            Some(tx) => self.judge(&tx, bus).await,
            None => Ok(()),
        }
    }

    /// A pending transaction pushed whole: judged once per hash.
    async fn pending<C>(&mut self, tx: &Transaction, bus: &BusSender<C>) -> Result<(), EvmError> {
        if !self.first_sight(tx.tx_hash()) {
            return Ok(());
        }
        self.judge(tx, bus).await
    }

    /// Whether a pending hash is new (the socket and the HTTP filter may
    /// both report it).
    fn first_sight(&mut self, h: B256) -> bool {
        // A bound on memory; a hash seen again after this only repeats a
        // pending record, which the engine keys by transfer.
        if self.pending_seen.len() >= 100_000 {
            self.pending_seen.clear();
        }
        self.pending_seen.insert(h)
    }

    /// Emits a pending transaction's events if a watched wallet sent it.
    async fn judge<C>(&mut self, tx: &Transaction, bus: &BusSender<C>) -> Result<(), EvmError> {
        if tx.block_number().is_some() {
            return Ok(());
        }
        for e in decode::pending_events(&self.chain.name, &self.watched, tx) {
            self.send(bus, e, None).await?;
        }
        Ok(())
    }
}
