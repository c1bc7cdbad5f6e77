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
    collections::{HashSet, VecDeque},
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use alloy::{
    eips::{BlockId, BlockNumberOrTag},
    network::TransactionResponse as _,
    primitives::{Address as EvmAddress, B256, U256},
    providers::Provider,
    rpc::{
        client::BatchRequest,
        json_rpc::RpcError,
        types::{Block, Transaction, TransactionReceipt},
    },
    transports::TransportErrorKind,
};
use drainguard_bus::{BusSender, Position};
use drainguard_model::{Amount, BalanceObs, Event, EventKind, Head, Stage, Timestamp, WalletDecl};
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
    balances: Vec<(EvmAddress, U256)>,
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
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Whether a JSON-RPC error says the node has no such method.
fn unsupported(e: &RpcError<TransportErrorKind>) -> bool {
    e.as_error_resp().is_some_and(|p| {
        let m = p.message.to_ascii_lowercase();
        p.code == -32601 || m.contains("not supported") || m.contains("not found")
    })
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
        }
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
    /// every later transfer exactly once.
    async fn declare<C>(&mut self, bus: &BusSender<C>, at: u64) -> Result<(), EvmError> {
        let wallets: Vec<_> = self
            .watched
            .wallets()
            .map(|(a, (n, r))| (*a, n.clone(), *r))
            .collect();
        for (address, name, role) in wallets {
            let balance = self
                .pool
                .call("eth_getBalance", |p| async move {
                    p.get_balance(address).number(at).await
                })
                .await?;
            let addr = decode::address(&address);
            let mut balances = vec![BalanceObs {
                chain: self.chain.name.clone(),
                wallet: addr.clone(),
                asset: self.watched.native.clone(),
                amount: Amount(balance),
                decimals: self.watched.native_decimals,
            }];
            // Each known token's balance too: the share rules measure a
            // token drain against it.
            let tokens: Vec<_> = self
                .watched
                .tokens()
                .map(|(a, (sym, d))| (*a, sym.clone(), *d))
                .collect();
            for (token, symbol, decimals) in tokens {
                let data = format!("0x70a08231{:0>64}", hex::encode(address.as_slice()));
                let params = serde_json::json!([
                    {"to": format!("{token:#x}"), "data": data},
                    format!("{at:#x}")
                ]);
                let answer: alloy::primitives::Bytes = self
                    .pool
                    .call("eth_call balanceOf", |p| {
                        let params = params.clone();
                        async move { p.raw_request("eth_call".into(), params).await }
                    })
                    .await?;
                let amount = (answer.len() == 32)
                    .then(|| U256::from_be_slice(&answer))
                    .ok_or_else(|| {
                        EvmError::Malformed(format!(
                            "balanceOf of token {token:#x} answered {} bytes, not 32",
                            answer.len()
                        ))
                    })?;
                balances.push(BalanceObs {
                    chain: self.chain.name.clone(),
                    wallet: addr.clone(),
                    asset: symbol,
                    amount: Amount(amount),
                    decimals,
                });
            }
            let decl = WalletDecl {
                chain: self.chain.name.clone(),
                address: addr,
                name,
                role,
                balances,
            };
            self.send(bus, EventKind::Wallet(decl), None).await?;
        }
        Ok(())
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
            (None, None) => head + 1,
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
            if let Some(head) = head {
                if let Some(m) = self.pool.metrics() {
                    let h = i64::try_from(head).unwrap_or(i64::MAX);
                    m.node_head.with_label_values(&[name.as_str()]).set(h);
                }
                match self.catch_up(&mut next, head, &bus, &token).await {
                    Err(EvmError::BusClosed) => return Ok(()),
                    Err(e) => {
                        tracing::error!(message = "blocks not processed; retrying", chain = %name, block = next, error = %e);
                    }
                    Ok(()) => {}
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
            let deadline = tokio::time::Instant::now() + self.chain.poll_interval;
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
        if *next > head {
            return Ok(());
        }
        let batch = self.chain.batch_blocks.max(1);
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
        let mut blocks = self.blocks(from, to).await?;
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
        let mut payers = Vec::new();
        let mut read = Vec::with_capacity(blocks.len());
        for (block, receipts) in blocks.iter().zip(&receipts) {
            let events = decode::block_events(&self.chain.name, &self.watched, block, receipts)?;
            for p in decode::fee_payers(&self.watched, block) {
                payers.push((block.header.hash, p));
            }
            read.push(Read {
                number: block.header.number,
                hash: block.header.hash,
                timestamp: block.header.timestamp,
                events,
                balances: Vec::new(),
            });
        }
        let balances = self.balances(&payers).await?;
        for ((hash, wallet), balance) in payers.into_iter().zip(balances) {
            if let Some(r) = read.iter_mut().find(|r| r.hash == hash) {
                r.balances.push((wallet, balance));
            }
        }
        for r in read {
            // The checkpoint moves once a batch: one durable write per
            // batch while catching up, one per block when following.
            let checkpoint = r.number == last;
            self.emit(r, head, checkpoint, bus).await?;
        }
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
        for (wallet, balance) in &r.balances {
            let obs = BalanceObs {
                chain: self.chain.name.clone(),
                wallet: decode::address(wallet),
                asset: self.watched.native.clone(),
                amount: Amount(*balance),
                decimals: self.watched.native_decimals,
            };
            self.send(bus, EventKind::Balance(obs), None).await?;
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

    /// Blocks `from..=to` with their transactions, in one batch; stops at
    /// the first the node does not have.
    async fn blocks(&mut self, from: u64, to: u64) -> Result<Vec<Block>, EvmError> {
        let got: Vec<Option<Block>> = self
            .pool
            .call("eth_getBlockByNumber", |p| async move {
                let mut batch = BatchRequest::new(p.client());
                let mut waiters = Vec::new();
                for n in from..=to {
                    waiters.push(batch.add_call::<_, Option<Block>>(
                        "eth_getBlockByNumber",
                        &(BlockNumberOrTag::Number(n), true),
                    )?);
                }
                batch.send().await?;
                let mut out = Vec::with_capacity(waiters.len());
                for w in waiters {
                    out.push(w.await?);
                }
                Ok::<_, RpcError<TransportErrorKind>>(out)
            })
            .await?;
        let mut blocks = Vec::with_capacity(got.len());
        for (n, b) in (from..=to).zip(got) {
            let Some(b) = b else { break };
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
        let with_txs: Vec<B256> = blocks
            .iter()
            .filter(|b| !b.transactions.is_empty())
            .map(|b| b.header.hash)
            .collect();
        let mut by_block: Option<Vec<Option<Vec<TransactionReceipt>>>> = None;
        if self.block_receipts && !with_txs.is_empty() {
            let hashes = with_txs.clone();
            by_block = self
                .pool
                .call("eth_getBlockReceipts", |p| {
                    let hashes = hashes.clone();
                    async move {
                        let mut batch = BatchRequest::new(p.client());
                        let mut waiters = Vec::new();
                        for h in &hashes {
                            waiters.push(batch.add_call::<_, Option<Vec<TransactionReceipt>>>(
                                "eth_getBlockReceipts",
                                &(BlockId::hash(*h),),
                            )?);
                        }
                        batch.send().await?;
                        let mut out = Vec::with_capacity(waiters.len());
                        for w in waiters {
                            match w.await {
                                Ok(r) => out.push(r),
                                Err(e) if unsupported(&e) => return Ok(None),
                                Err(e) => return Err(e),
                            }
                        }
                        Ok(Some(out))
                    }
                })
                .await?;
            if by_block.is_none() {
                tracing::warn!(message = "the node has no eth_getBlockReceipts; asking receipts one transaction at a time", chain = %self.chain.name);
                self.block_receipts = false;
            }
        }
        let mut by_block = by_block.map(Vec::into_iter);
        let mut out = Vec::with_capacity(blocks.len());
        for b in blocks {
            if b.transactions.is_empty() {
                out.push(Vec::new());
                continue;
            }
            let receipts = match by_block.as_mut() {
                Some(it) => it.next().flatten(),
                None => Some(self.tx_receipts(b).await?),
            };
            out.push(receipts.ok_or_else(|| {
                EvmError::Malformed(format!(
                    "no receipts for block {} {:#x} (reorganized away?)",
                    b.header.number, b.header.hash
                ))
            })?);
        }
        Ok(out)
    }

    /// The receipts of one block's transactions, one call each in a batch.
    async fn tx_receipts(&mut self, block: &Block) -> Result<Vec<TransactionReceipt>, EvmError> {
        let hashes: Vec<B256> = block.transactions.hashes().collect();
        let got: Vec<Option<TransactionReceipt>> = self
            .pool
            .call("eth_getTransactionReceipt", |p| {
                let hashes = hashes.clone();
                async move {
                    let mut batch = BatchRequest::new(p.client());
                    let mut waiters = Vec::new();
                    for h in &hashes {
                        waiters.push(batch.add_call::<_, Option<TransactionReceipt>>(
                            "eth_getTransactionReceipt",
                            &(*h,),
                        )?);
                    }
                    batch.send().await?;
                    let mut out = Vec::with_capacity(waiters.len());
                    for w in waiters {
                        out.push(w.await?);
                    }
                    Ok::<_, RpcError<TransportErrorKind>>(out)
                }
            })
            .await?;
        got.into_iter()
            .zip(&hashes)
            .map(|(r, h)| {
                r.ok_or_else(|| EvmError::Malformed(format!("no receipt for transaction {h:#x}")))
            })
            .collect()
    }

    /// Native balances of wallets as of blocks (by hash), in one batch.
    async fn balances(&mut self, at: &[(B256, EvmAddress)]) -> Result<Vec<U256>, EvmError> {
        if at.is_empty() {
            return Ok(Vec::new());
        }
        let at = at.to_vec();
        self.pool
            .call("eth_getBalance", |p| {
                let at = at.clone();
                async move {
                    let mut batch = BatchRequest::new(p.client());
                    let mut waiters = Vec::new();
                    for (block, wallet) in &at {
                        // EIP-1898: the balance as of that very block.
                        waiters.push(batch.add_call::<_, U256>(
                            "eth_getBalance",
                            &(*wallet, BlockId::from((*block, Some(false)))),
                        )?);
                    }
                    batch.send().await?;
                    let mut out = Vec::with_capacity(waiters.len());
                    for w in waiters {
                        out.push(w.await?);
                    }
                    Ok::<_, RpcError<TransportErrorKind>>(out)
                }
            })
            .await
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
