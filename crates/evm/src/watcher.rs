//! The watcher of one EVM chain: follows the head block by block (the
//! block with its transactions and the receipts), checks every parent
//! hash, walks back a reorg and retracts what the removed blocks said,
//! confirms events `confirmations` blocks later, reads the mempool for
//! transactions sent from a watched wallet, and marks each confirmed block
//! as the one a checkpoint may reach once its events are evaluated and
//! durable.

use std::collections::{HashSet, VecDeque};

use alloy::{
    eips::{BlockId, BlockNumberOrTag},
    network::TransactionResponse as _,
    primitives::{B256, U256},
    providers::Provider,
    rpc::types::{Block, Transaction},
};
use drainguard_bus::{BusSender, Position};
use drainguard_model::{Amount, BalanceObs, Event, EventKind, Head, Stage, Timestamp, WalletDecl};
use tokio_util::sync::CancellationToken;

use crate::{
    EvmError,
    config::{EvmChain, Watched},
    decode,
    rpc::Pool,
};

/// A block processed and still within reorg depth.
#[derive(Debug, Clone)]
struct Seen {
    number: u64,
    hash: B256,
    events: Vec<EventKind>,
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
}

fn now() -> Timestamp {
    Timestamp::now()
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

    async fn block(&mut self, number: u64) -> Result<Option<Block>, EvmError> {
        self.pool
            .call("eth_getBlockByNumber", |p| async move {
                p.get_block_by_number(BlockNumberOrTag::Number(number))
                    .full()
                    .await
            })
            .await
    }

    /// Follows the chain from `resume` (the checkpoint; `None`: the start
    /// block or the current head) until cancelled.
    pub async fn run<C>(
        mut self,
        resume: Option<u64>,
        bus: BusSender<C>,
        token: CancellationToken,
    ) -> Result<(), EvmError> {
        let name = self.chain.name.clone();
        let head = self.head().await?;
        let mut next = match (resume, self.chain.start_block) {
            (Some(cp), _) => cp + 1,
            (None, Some(b)) => b,
            // No history: from the next block on, with balances as of now.
            (None, None) => head + 1,
        };
        self.declare(&bus, next.saturating_sub(1)).await?;
        // The mempool filter first: a transaction sent from now on is seen.
        if let Err(e) = self.pending_filter_id().await {
            tracing::warn!(message = "no mempool filter: pending transactions will not be seen until one is made", chain = %name, error = %e);
        }
        tracing::info!(message = "EVM watcher following", chain = %name, from_block = next, head, endpoint = %self.pool.active());
        loop {
            if token.is_cancelled() {
                return Ok(());
            }
            let head = match self.head().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::error!(message = "no endpoint answers; retrying", chain = %name, error = %e);
                    self.pause(&token).await;
                    continue;
                }
            };
            while next <= head && !token.is_cancelled() {
                match self.step(next, &bus).await {
                    Ok(n) => next = n,
                    Err(EvmError::BusClosed) => return Ok(()),
                    Err(e) => {
                        tracing::error!(message = "block not processed; retrying", chain = %name, block = next, error = %e);
                        break;
                    }
                }
            }
            if let Err(e) = self.mempool(&bus).await {
                if matches!(e, EvmError::BusClosed) {
                    return Ok(());
                }
                tracing::warn!(message = "mempool not read", chain = %name, error = %e);
                self.pending_filter = None;
            }
            self.pause(&token).await;
        }
    }

    async fn pause(&self, token: &CancellationToken) {
        tokio::select! {
            () = token.cancelled() => {}
            () = tokio::time::sleep(self.chain.poll_interval) => {}
        }
    }

    async fn head(&mut self) -> Result<u64, EvmError> {
        self.pool
            .call(
                "eth_blockNumber",
                |p| async move { p.get_block_number().await },
            )
            .await
    }

    /// Processes block `number`; the next block to read (lower after a
    /// reorg).
    async fn step<C>(&mut self, number: u64, bus: &BusSender<C>) -> Result<u64, EvmError> {
        let Some(block) = self.block(number).await? else {
            return Ok(number);
        };
        let hash = block.header.hash;
        if let Some(last) = self.recent.back()
            && last.number + 1 == number
            && block.header.parent_hash != last.hash
        {
            return self.reorg(bus).await;
        }
        let receipts = self
            .pool
            .call("eth_getBlockReceipts", |p| async move {
                p.get_block_receipts(BlockId::number(number)).await
            })
            .await?
            .ok_or_else(|| EvmError::Malformed(format!("no receipts for block {number}")))?;
        let events = decode::block_events(&self.chain.name, &self.watched, &block, &receipts);
        for e in &events {
            self.send(bus, e.clone(), None).await?;
        }
        self.recent.push_back(Seen {
            number,
            hash,
            events,
        });
        while self.recent.len() as u64
            > self.chain.max_reorg_depth.max(self.chain.confirmations) + 1
        {
            self.recent.pop_front();
        }
        // Events `confirmations` deep are confirmed, and that block is the
        // checkpoint once they are evaluated and durable.
        let completes = match number.checked_sub(self.chain.confirmations) {
            Some(c) => {
                let seen = self.recent.iter().find(|s| s.number == c).cloned();
                if let Some(s) = &seen
                    && self.chain.confirmations > 0
                {
                    for e in &s.events {
                        if let EventKind::Transfer(t) = e {
                            let mut t = t.clone();
                            t.stage = Stage::Confirmed;
                            self.send(bus, EventKind::Transfer(t), None).await?;
                        }
                    }
                }
                seen.map(|s| Position {
                    chain: self.chain.name.clone(),
                    block: s.number,
                    hash: format!("{:#x}", s.hash),
                })
            }
            None => None,
        };
        let head = Head {
            chain: self.chain.name.clone(),
            block: number,
            hash: format!("{hash:#x}"),
        };
        self.send(bus, EventKind::Head(head), completes).await?;
        Ok(number + 1)
    }

    /// Walks back to the common ancestor, retracting the events of every
    /// removed block; the next block to read.
    async fn reorg<C>(&mut self, bus: &BusSender<C>) -> Result<u64, EvmError> {
        let mut depth = 0u64;
        while let Some(last) = self.recent.back().cloned() {
            let canonical = self.block(last.number).await?;
            if canonical
                .as_ref()
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
            if depth > self.chain.max_reorg_depth {
                tracing::error!(message = "REORG deeper than the maximum followed: events of older removed blocks stay counted", chain = %self.chain.name, depth, max = self.chain.max_reorg_depth);
                break;
            }
        }
        if depth > self.chain.confirmations {
            tracing::error!(message = "reorg deeper than the confirmation depth: a checkpoint may name a removed block", chain = %self.chain.name, depth);
        }
        tracing::warn!(message = "reorg", chain = %self.chain.name, depth);
        Ok(self.recent.back().map_or(0, |s| s.number + 1))
    }

    /// Reads new pending transactions and emits those sent from a watched
    /// wallet.
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

    async fn mempool<C>(&mut self, bus: &BusSender<C>) -> Result<(), EvmError> {
        let id = self.pending_filter_id().await?;
        let hashes: Vec<B256> = self
            .pool
            .call("eth_getFilterChanges", |p| async move {
                p.get_filter_changes::<B256>(id).await
            })
            .await?;
        for h in hashes {
            if !self.pending_seen.insert(h) {
                continue;
            }
            let tx: Option<Transaction> = self
                .pool
                .call("eth_getTransactionByHash", |p| async move {
                    p.get_transaction_by_hash(h).await
                })
                .await?;
            let Some(tx) = tx else { continue };
            if tx.block_number().is_some() {
                continue;
            }
            for e in decode::pending_events(&self.chain.name, &self.watched, &tx) {
                self.send(bus, e, None).await?;
            }
        }
        if self.pending_seen.len() > 100_000 {
            self.pending_seen.clear();
        }
        Ok(())
    }
}
