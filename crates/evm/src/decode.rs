//! From a block and its receipts (or a pending transaction) to the
//! normalized events of the watched wallets: native transfers, ERC-20
//! `Transfer` and `Approval` logs, `ApprovalForAll`, and the owner,
//! threshold, module, guard and implementation changes of watched contract
//! wallets. Pure functions: no I/O, so every rule of what counts is tested
//! here.
//!
//! A transfer counts only if its transaction succeeded: a reverted transfer
//! moved nothing. Its fee did move: [`fee_payers`] names the wallets whose
//! balance the watcher reads again after the block.

use std::{collections::HashMap, sync::LazyLock};

use alloy::{
    consensus::Transaction as _,
    primitives::{Address as EvmAddress, B256, Bytes, TxHash as TxHash256, U256, keccak256},
    rpc::types::{Block, Log, Transaction, TransactionReceipt},
};
use drainguard_model::{
    Address, AdminAction, AdminChange, Amount, Approval, ApprovalStandard, Asset, Chain, EventKind,
    Stage, Transfer, TxHash,
};

use crate::{EvmError, config::Watched};

fn topic(signature: &str) -> B256 {
    keccak256(signature.as_bytes())
}

static TRANSFER: LazyLock<B256> = LazyLock::new(|| topic("Transfer(address,address,uint256)"));
static APPROVAL: LazyLock<B256> = LazyLock::new(|| topic("Approval(address,address,uint256)"));
static APPROVAL_FOR_ALL: LazyLock<B256> =
    LazyLock::new(|| topic("ApprovalForAll(address,address,bool)"));
static ADDED_OWNER: LazyLock<B256> = LazyLock::new(|| topic("AddedOwner(address)"));
static REMOVED_OWNER: LazyLock<B256> = LazyLock::new(|| topic("RemovedOwner(address)"));
static CHANGED_THRESHOLD: LazyLock<B256> = LazyLock::new(|| topic("ChangedThreshold(uint256)"));
static ENABLED_MODULE: LazyLock<B256> = LazyLock::new(|| topic("EnabledModule(address)"));
static CHANGED_GUARD: LazyLock<B256> = LazyLock::new(|| topic("ChangedGuard(address)"));
static UPGRADED: LazyLock<B256> = LazyLock::new(|| topic("Upgraded(address)"));

/// `transfer(address,uint256)`.
const SEL_TRANSFER: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `transferFrom(address,address,uint256)`.
const SEL_TRANSFER_FROM: [u8; 4] = [0x23, 0xb8, 0x72, 0xdd];
/// `approve(address,uint256)`.
const SEL_APPROVE: [u8; 4] = [0x09, 0x5e, 0xa7, 0xb3];
/// Safe's `execTransaction(address,uint256,bytes,uint8,uint256,uint256,
/// uint256,address,address,bytes)`.
const SEL_EXEC_TRANSACTION: [u8; 4] = [0x6a, 0x76, 0x12, 0x02];

/// The model's spelling of an EVM address (lowercase `0x` hex).
pub fn address(a: &EvmAddress) -> Address {
    Address::new(&format!("{a:#x}"))
}

fn tx_hash(h: &B256) -> TxHash {
    TxHash::new(&format!("{h:#x}"))
}

fn amount(v: U256) -> Amount {
    Amount(v)
}

/// The address in a 32-byte topic or word (its last 20 bytes).
fn word_address(w: &[u8]) -> Option<EvmAddress> {
    (w.len() == 32).then(|| EvmAddress::from_slice(&w[12..]))
}

fn word_u256(w: &[u8]) -> Option<U256> {
    (w.len() >= 32).then(|| U256::from_be_slice(&w[..32]))
}

/// Whether a transaction concerns a watched wallet directly (sent by it,
/// or to it): its whole body is then needed, for the native value and the
/// calldata. Everything else a block says is in the receipts.
pub fn needs_body(watched: &Watched, receipt: &TransactionReceipt) -> bool {
    watched.is_wallet(&receipt.from) || receipt.to.is_some_and(|to| watched.is_wallet(&to))
}

/// Events of one block for the watched wallets, in transaction order:
/// each transfer, approval or admin change, stage `included`.
///
/// The block may carry its transactions whole or by hash; `bodies` has the
/// whole transactions the receipts say concern a watched wallet
/// ([`needs_body`]) when the block does not. Every transaction must have its
/// receipt, from this very block, and every body needed must be there: an
/// answer that lacks one (a node mid-reorg, a load balancer mixing two
/// nodes) is an error to retry, never a transaction silently skipped.
pub fn block_events(
    chain: &Chain,
    watched: &Watched,
    block: &Block,
    receipts: &[TransactionReceipt],
    bodies: &HashMap<TxHash256, Transaction>,
) -> Result<Vec<EventKind>, EvmError> {
    let number = block.header.number;
    let by_hash: HashMap<TxHash256, &TransactionReceipt> =
        receipts.iter().map(|r| (r.transaction_hash, r)).collect();
    let in_block: HashMap<TxHash256, &Transaction> = block
        .transactions
        .txns()
        .map(|t| (*t.inner.tx_hash(), t))
        .collect();
    let mut out = Vec::new();
    for hash in block.transactions.hashes() {
        let receipt = by_hash.get(&hash).ok_or_else(|| {
            EvmError::Malformed(format!(
                "block {number}: no receipt for transaction {hash:#x}"
            ))
        })?;
        if receipt.block_hash.is_some_and(|h| h != block.header.hash) {
            return Err(EvmError::Malformed(format!(
                "block {number}: the receipt of {hash:#x} is from another block"
            )));
        }
        if !receipt.status() {
            continue;
        }
        if needs_body(watched, receipt) {
            let tx = in_block
                .get(&hash)
                .copied()
                .or_else(|| bodies.get(&hash))
                .ok_or_else(|| {
                    EvmError::Malformed(format!(
                        "block {number}: transaction {hash:#x} of a watched wallet not read"
                    ))
                })?;
            out.extend(native_transfer(
                chain,
                watched,
                tx,
                Stage::Included,
                Some(number),
            ));
            out.extend(delegatecall(chain, watched, tx));
        }
        // Token transfers of a transaction are numbered 1, 2, ... in log
        // order, the way a pending transaction's decoded calldata is: the
        // pending and the included record of one transfer share a key.
        let mut ordinal = 0u32;
        for log in receipt.logs() {
            if let Some(e) = log_event(chain, watched, log, number, ordinal + 1) {
                ordinal += u32::from(matches!(e, EventKind::Transfer(_)));
                out.push(e);
            }
        }
    }
    Ok(out)
}

/// The watched wallets that sent a transaction in the block, and so paid
/// a fee (a reverted transaction too): their native balance after it is
/// read from the node, since the fee (with an L2's data fee) is not a
/// transfer.
pub fn fee_payers(watched: &Watched, receipts: &[TransactionReceipt]) -> Vec<EvmAddress> {
    let mut payers: Vec<EvmAddress> = receipts
        .iter()
        .map(|r| r.from)
        .filter(|from| watched.is_wallet(from))
        .collect();
    payers.sort_unstable();
    payers.dedup();
    payers
}

/// A Safe's `execTransaction` with `operation = 1`: the wallet runs
/// another contract's code in its own context, with its own storage and
/// funds (the Bybit takeover swapped the Safe's implementation this way).
fn delegatecall(chain: &Chain, watched: &Watched, tx: &Transaction) -> Option<EventKind> {
    let wallet = tx.to()?;
    if !watched.is_wallet(&wallet) {
        return None;
    }
    let (selector, args) = tx.input().split_first_chunk::<4>()?;
    if *selector != SEL_EXEC_TRANSACTION {
        return None;
    }
    let target = args.get(..32).and_then(word_address)?;
    let operation = args.get(3 * 32..4 * 32).and_then(word_u256)?;
    (operation == U256::from(1)).then(|| {
        EventKind::Admin(AdminChange {
            chain: chain.clone(),
            tx_hash: tx_hash(tx.inner.tx_hash()),
            wallet: address(&wallet),
            action: AdminAction::Delegatecall,
            target: address(&target),
        })
    })
}

fn native_transfer(
    chain: &Chain,
    watched: &Watched,
    tx: &Transaction,
    stage: Stage,
    block: Option<u64>,
) -> Option<EventKind> {
    let from = tx.inner.signer();
    let to = tx.to()?;
    let value = tx.value();
    if value.is_zero() || !(watched.is_wallet(&from) || watched.is_wallet(&to)) {
        return None;
    }
    Some(EventKind::Transfer(Transfer {
        chain: chain.clone(),
        tx_hash: tx_hash(tx.inner.tx_hash()),
        // The native value is index 0; a log's index is its log index + 1.
        index: 0,
        stage,
        block,
        from: address(&from),
        to: address(&to),
        asset: watched.native.clone(),
        token: None,
        amount: amount(value),
        decimals: watched.native_decimals,
    }))
}

fn log_event(
    chain: &Chain,
    watched: &Watched,
    log: &Log,
    block: u64,
    index: u32,
) -> Option<EventKind> {
    let topics = log.topics();
    let t0 = *topics.first()?;
    let emitter = log.address();
    let data = &log.data().data;
    let hash = tx_hash(&log.transaction_hash?);
    if t0 == *TRANSFER && topics.len() == 3 {
        let from = word_address(topics[1].as_slice())?;
        let to = word_address(topics[2].as_slice())?;
        if !(watched.is_wallet(&from) || watched.is_wallet(&to)) {
            return None;
        }
        let token = watched.token(&emitter);
        return Some(EventKind::Transfer(Transfer {
            chain: chain.clone(),
            tx_hash: hash,
            index,
            stage: Stage::Included,
            block: Some(block),
            from: address(&from),
            to: address(&to),
            asset: token.map_or_else(
                || Asset::new(&address(&emitter).to_string()),
                |t| t.0.clone(),
            ),
            token: Some(address(&emitter)),
            amount: amount(word_u256(data)?),
            decimals: token.map_or(0, |t| t.1),
        }));
    }
    if (t0 == *APPROVAL || t0 == *APPROVAL_FOR_ALL) && topics.len() == 3 {
        let owner = word_address(topics[1].as_slice())?;
        if !watched.is_wallet(&owner) {
            return None;
        }
        let spender = word_address(topics[2].as_slice())?;
        let all = t0 == *APPROVAL_FOR_ALL;
        let value = word_u256(data)?;
        if all && value.is_zero() {
            // A revocation takes a permission away: nothing to fear.
            return None;
        }
        let token = watched.token(&emitter);
        return Some(EventKind::Approval(Approval {
            chain: chain.clone(),
            tx_hash: hash,
            owner: address(&owner),
            spender: address(&spender),
            asset: token.map_or_else(
                || Asset::new(&address(&emitter).to_string()),
                |t| t.0.clone(),
            ),
            amount: if all {
                Amount(U256::MAX)
            } else {
                amount(value)
            },
            standard: if all {
                ApprovalStandard::Erc721All
            } else {
                ApprovalStandard::Erc20
            },
        }));
    }
    if !watched.is_wallet(&emitter) {
        return None;
    }
    // A watched contract wallet changed who controls it.
    let (action, target) = if t0 == *ADDED_OWNER {
        (AdminAction::AddOwner, arg_address(topics, data)?)
    } else if t0 == *REMOVED_OWNER {
        (AdminAction::RemoveOwner, arg_address(topics, data)?)
    } else if t0 == *CHANGED_THRESHOLD {
        (AdminAction::ChangeThreshold, emitter)
    } else if t0 == *ENABLED_MODULE {
        (AdminAction::EnableModule, arg_address(topics, data)?)
    } else if t0 == *CHANGED_GUARD {
        (AdminAction::SetGuard, arg_address(topics, data)?)
    } else if t0 == *UPGRADED {
        (AdminAction::Upgrade, arg_address(topics, data)?)
    } else {
        return None;
    };
    Some(EventKind::Admin(AdminChange {
        chain: chain.clone(),
        tx_hash: hash,
        wallet: address(&emitter),
        action,
        target: address(&target),
    }))
}

/// The one address argument of an event: indexed (a topic) or not (data).
fn arg_address(topics: &[B256], data: &Bytes) -> Option<EvmAddress> {
    match topics.get(1) {
        Some(t) => word_address(t.as_slice()),
        None => data.get(..32).and_then(word_address),
    }
}

/// Events of a pending transaction sent by a watched wallet: its native
/// value, and a token transfer or approval decoded from its calldata
/// (`transfer`, `transferFrom`, `approve`), stage `pending`.
pub fn pending_events(chain: &Chain, watched: &Watched, tx: &Transaction) -> Vec<EventKind> {
    let from = tx.inner.signer();
    if !watched.is_wallet(&from) {
        return Vec::new();
    }
    let mut out: Vec<EventKind> = native_transfer(chain, watched, tx, Stage::Pending, None)
        .into_iter()
        .collect();
    let (Some(contract), input) = (tx.to(), tx.input()) else {
        return out;
    };
    let Some((selector, args)) = input.split_first_chunk::<4>() else {
        return out;
    };
    let hash = tx_hash(tx.inner.tx_hash());
    let token = watched.token(&contract);
    let asset = token.map_or_else(
        || Asset::new(&address(&contract).to_string()),
        |t| t.0.clone(),
    );
    let decimals = token.map_or(0, |t| t.1);
    let word = |i: usize| args.get(i * 32..(i + 1) * 32);
    let transfer = |src: EvmAddress, to: EvmAddress, value: U256| {
        EventKind::Transfer(Transfer {
            chain: chain.clone(),
            tx_hash: hash.clone(),
            // The first token transfer of the transaction, as its
            // included record will number it.
            index: 1,
            stage: Stage::Pending,
            block: None,
            from: address(&src),
            to: address(&to),
            asset: asset.clone(),
            token: Some(address(&contract)),
            amount: amount(value),
            decimals,
        })
    };
    match *selector {
        SEL_TRANSFER => {
            if let (Some(to), Some(v)) =
                (word(0).and_then(word_address), word(1).and_then(word_u256))
            {
                out.push(transfer(from, to, v));
            }
        }
        SEL_TRANSFER_FROM => {
            if let (Some(src), Some(to), Some(v)) = (
                word(0).and_then(word_address),
                word(1).and_then(word_address),
                word(2).and_then(word_u256),
            ) && watched.is_wallet(&src)
            {
                out.push(transfer(src, to, v));
            }
        }
        SEL_APPROVE => {
            if let (Some(spender), Some(v)) =
                (word(0).and_then(word_address), word(1).and_then(word_u256))
            {
                out.push(EventKind::Approval(Approval {
                    chain: chain.clone(),
                    tx_hash: hash.clone(),
                    owner: address(&from),
                    spender: address(&spender),
                    asset: asset.clone(),
                    amount: amount(v),
                    standard: ApprovalStandard::Erc20,
                }));
            }
        }
        _ => {}
    }
    out
}
