//! Decoding against a real node's answers: a block, its receipts and its
//! pending transactions as anvil returned them (saved by hand in
//! `fixtures/`): a native withdrawal, an ERC-20 transfer, an approval, a
//! reverted token transfer, and a transfer between two outside addresses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use alloy::rpc::types::{Block, Transaction, TransactionReceipt};
use drainguard_evm::{Watched, decode};
use drainguard_model::{
    Amount, ApprovalStandard, Asset, Chain, EventKind, Stage, Transfer, WalletRole,
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
    let events = decode::block_events(&chain, &watched(true), &block, &receipts);
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
    let events = decode::block_events(&chain, &watched(false), &block, &receipts);
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
