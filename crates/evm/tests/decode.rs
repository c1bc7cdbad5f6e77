//! Decoding against a real node's answers: a block, its receipts and its
//! pending transactions as anvil returned them (saved by hand in
//! `fixtures/`): a native withdrawal, an ERC-20 transfer, an approval, a
//! reverted token transfer, and a transfer between two outside addresses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use alloy::rpc::types::{Block, Transaction, TransactionReceipt};
use drainguard_evm::{Watched, decode};
use drainguard_model::{
    AdminAction, Amount, ApprovalStandard, Asset, Chain, EventKind, Stage, Transfer, WalletRole,
};

const HOT: &str = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266";
const USER: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
const THIEF: &str = "0x1111111111111111111111111111111111111111";
const TOKEN: &str = "0x5fbdb2315678afecb367f032d93f642f64180aa3";

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn watched(with_token: bool) -> Watched {
    let mut w = Watched::new(Asset::new("ETH"), 18);
    w.wallet(HOT.parse().unwrap(), "eth-hot-1", WalletRole::Hot);
    if with_token {
        w.add_token(TOKEN.parse().unwrap(), Asset::new("TT"), 6);
    }
    w
}

fn transfers(events: &[EventKind]) -> Vec<&Transfer> {
    events
        .iter()
        .filter_map(|e| match e {
            EventKind::Transfer(t) => Some(t),
            _ => None,
        })
        .collect()
}

#[test]
fn a_block_yields_the_watched_wallets_successful_moves_only() {
    let block: Block = fixture("anvil_block.json");
    let receipts: Vec<TransactionReceipt> = fixture("anvil_receipts.json");
    let chain = Chain::new("ethereum");
    let events =
        decode::block_events(&chain, &watched(true), &block, &receipts, &HashMap::new()).unwrap();
    let t = transfers(&events);
    // The withdrawal and the token transfer; not the reverted transfer,
    // not the outside addresses' transfer.
    assert_eq!(t.len(), 2, "{events:#?}");
    assert_eq!(
        (
            t[0].from.as_str(),
            t[0].to.as_str(),
            t[0].asset.as_str(),
            t[0].index
        ),
        (HOT, USER, "ETH", 0)
    );
    assert_eq!(t[0].amount, Amount::parse_decimal("1", 18).unwrap());
    assert_eq!((t[0].stage, t[0].block), (Stage::Included, Some(2)));
    assert_eq!(
        (
            t[1].from.as_str(),
            t[1].to.as_str(),
            t[1].asset.as_str(),
            t[1].index
        ),
        (HOT, THIEF, "TT", 1)
    );
    assert_eq!(t[1].amount, Amount::from_base_units(5_000_000));
    assert_eq!(t[1].decimals, 6);
    assert_eq!(t[1].token.as_ref().unwrap().as_str(), TOKEN);
    let approvals: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            EventKind::Approval(a) => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(approvals.len(), 1);
    assert_eq!(
        (approvals[0].owner.as_str(), approvals[0].spender.as_str()),
        (HOT, THIEF)
    );
    assert_eq!(approvals[0].amount, Amount::from_base_units(123));
    assert_eq!(approvals[0].standard, ApprovalStandard::Erc20);
    // An unknown token is still reported, under its contract address.
    let events =
        decode::block_events(&chain, &watched(false), &block, &receipts, &HashMap::new()).unwrap();
    assert_eq!(transfers(&events)[1].asset.as_str(), TOKEN);
}

#[test]
fn pending_transactions_of_a_watched_wallet_are_decoded_from_calldata() {
    let txs: Vec<Transaction> = fixture("anvil_pending_txs.json");
    let chain = Chain::new("ethereum");
    let w = watched(true);
    let events: Vec<EventKind> = txs
        .iter()
        .flat_map(|tx| decode::pending_events(&chain, &w, tx))
        .collect();
    let t = transfers(&events);
    // The withdrawal, the token transfer, and the transfer that will
    // revert (the mempool cannot know); nothing of the outside addresses.
    assert_eq!(t.len(), 3, "{events:#?}");
    assert!(
        t.iter()
            .all(|t| t.stage == Stage::Pending && t.block.is_none())
    );
    assert_eq!((t[0].asset.as_str(), t[0].index), ("ETH", 0));
    assert_eq!(
        (t[1].asset.as_str(), t[1].to.as_str(), t[1].index),
        ("TT", THIEF, 1),
        "the same key as its included record"
    );
    assert_eq!(t[1].amount, Amount::from_base_units(5_000_000));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, EventKind::Approval(_)))
            .count(),
        1
    );
}

#[test]
fn a_transaction_without_its_receipt_is_an_error_not_a_skip() {
    let block: Block = fixture("anvil_block.json");
    let mut receipts: Vec<TransactionReceipt> = fixture("anvil_receipts.json");
    let chain = Chain::new("ethereum");
    let dropped = receipts.remove(0).transaction_hash;
    let err = decode::block_events(&chain, &watched(true), &block, &receipts, &HashMap::new())
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("no receipt for transaction {dropped:#x}")),
        "{err}"
    );
    // A receipt of the same transaction from another block (a node that
    // answered from another branch) is refused too.
    let mut receipts: Vec<TransactionReceipt> = fixture("anvil_receipts.json");
    receipts[0].block_hash = Some(alloy::primitives::B256::repeat_byte(7));
    let err = decode::block_events(&chain, &watched(true), &block, &receipts, &HashMap::new())
        .unwrap_err();
    assert!(err.to_string().contains("from another block"), "{err}");
}

#[test]
fn every_watched_sender_pays_a_fee_even_when_reverted() {
    let receipts: Vec<TransactionReceipt> = fixture("anvil_receipts.json");
    let payers = decode::fee_payers(&watched(true), &receipts);
    assert_eq!(
        payers,
        vec![HOT.parse::<alloy::primitives::Address>().unwrap()]
    );
    let mut nobody = Watched::new(Asset::new("ETH"), 18);
    nobody.wallet(THIEF.parse().unwrap(), "x", WalletRole::Hot);
    assert!(decode::fee_payers(&nobody, &receipts).is_empty());
}

/// `execTransaction(to, 0, "", operation, 0, 0, 0, 0, 0, "")` calldata.
fn exec_transaction(to: &str, operation: u8) -> String {
    let word = |hex: &str| format!("{hex:0>64}");
    let mut s = String::from("0x6a761202");
    s += &word(to.trim_start_matches("0x"));
    s += &word("0");
    s += &word("140"); // offset of `data` (10 head words)
    s += &word(&format!("{operation:x}"));
    for _ in 0..5 {
        s += &word("0");
    }
    s += &word("160"); // offset of `signatures`
    s += &word("0"); // data: empty
    s += &word("0"); // signatures: empty
    s
}

#[test]
fn a_safe_delegatecall_is_an_admin_change_and_a_plain_call_is_not() {
    const SAFE: &str = "0x5afe5afe5afe5afe5afe5afe5afe5afe5afe5afe";
    const EVIL: &str = "0x96221423681a6d52e184d440a8efcebb105c7242";
    let chain = Chain::new("ethereum");
    let mut w = watched(true);
    w.wallet(SAFE.parse().unwrap(), "eth-safe", WalletRole::Hot);
    let receipts: Vec<TransactionReceipt> = fixture("anvil_receipts.json");
    for (operation, expected) in [(1u8, 1usize), (0, 0)] {
        // The block's first (successful) transaction, sent to the Safe.
        let mut json: serde_json::Value = fixture("anvil_block.json");
        let tx = &mut json["transactions"][0];
        tx["to"] = SAFE.into();
        tx["value"] = "0x0".into();
        tx["input"] = exec_transaction(EVIL, operation).into();
        let block: Block = serde_json::from_value(json).unwrap();
        let events = decode::block_events(&chain, &w, &block, &receipts, &HashMap::new()).unwrap();
        let admin: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                EventKind::Admin(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(admin.len(), expected, "operation {operation}: {events:#?}");
        if let Some(a) = admin.first() {
            assert_eq!(a.action, AdminAction::Delegatecall);
            assert_eq!(a.wallet.as_str(), SAFE);
            assert_eq!(a.target.as_str(), EVIL);
        }
    }
}

#[test]
fn a_block_by_hashes_with_the_watched_bodies_says_the_same_and_a_missing_body_is_an_error() {
    let full: Block = fixture("anvil_block.json");
    let receipts: Vec<TransactionReceipt> = fixture("anvil_receipts.json");
    let chain = Chain::new("ethereum");
    let w = watched(true);
    let expected = decode::block_events(&chain, &w, &full, &receipts, &HashMap::new()).unwrap();
    let mut json: serde_json::Value = fixture("anvil_block.json");
    let hashes: Vec<serde_json::Value> = json["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["hash"].clone())
        .collect();
    json["transactions"] = hashes.into();
    let by_hashes: Block = serde_json::from_value(json).unwrap();
    // Only the bodies the receipts ask for.
    let bodies: HashMap<_, _> = full
        .transactions
        .txns()
        .filter(|t| {
            receipts
                .iter()
                .any(|r| r.transaction_hash == *t.inner.tx_hash() && decode::needs_body(&w, r))
        })
        .map(|t| (*t.inner.tx_hash(), t.clone()))
        .collect();
    assert!(
        bodies.len() < full.transactions.len(),
        "outside transfers need no body"
    );
    let got = decode::block_events(&chain, &w, &by_hashes, &receipts, &bodies).unwrap();
    assert_eq!(got, expected);
    let err = decode::block_events(&chain, &w, &by_hashes, &receipts, &HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("not read"), "{err}");
}
