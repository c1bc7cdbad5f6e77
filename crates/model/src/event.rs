//! Normalized events, as watchers emit them and the engine consumes them.

use serde::{Deserialize, Serialize};

use crate::{Address, Amount, Asset, Chain, Price, Timestamp, TxHash};

/// Where a transaction is in its life on chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Seen in the mempool, not yet in a block.
    Pending,
    /// In block N.
    Included,
    /// N blocks deep, past the chain's confirmation depth.
    Confirmed,
    /// Its block was reorganized out.
    Retracted,
}

impl Stage {
    /// The lowercase name used in files and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::Included => "included",
            Stage::Confirmed => "confirmed",
            Stage::Retracted => "retracted",
        }
    }
}

/// What a wallet of the exchange is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletRole {
    /// A hot wallet: its outflows are withdrawals and are watched.
    #[default]
    Hot,
    /// The exchange's own cold storage: moves to it are internal.
    Cold,
    /// A decoy wallet whose keys are kept beside the real hot keys and
    /// which the exchange never spends from: any outflow from it is a
    /// certain compromise.
    Tripwire,
}

impl WalletRole {
    /// Its name in scenario files and the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            WalletRole::Hot => "hot",
            WalletRole::Cold => "cold",
            WalletRole::Tripwire => "tripwire",
        }
    }

    /// Whether the engine watches the wallet's outflows (hot wallets and
    /// tripwires; cold storage's keys are not on a hot server).
    pub fn is_watched(self) -> bool {
        matches!(self, WalletRole::Hot | WalletRole::Tripwire)
    }
}

/// Identifies one transfer across all its stages: (chain, tx hash, index).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferKey {
    /// The chain.
    pub chain: Chain,
    /// The transaction.
    pub tx_hash: TxHash,
    /// Log index, or output number on UTXO chains.
    pub index: u32,
}

/// A wallet of the exchange, declared by config or by a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct WalletDecl {
    /// Its chain.
    pub chain: Chain,
    /// Its address.
    pub address: Address,
    /// A human name (a low-cardinality label for metrics).
    pub name: String,
    /// Hot or cold.
    pub role: WalletRole,
    /// Known starting balances.
    pub balances: Vec<BalanceObs>,
}

/// An observed on-chain balance.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceObs {
    /// The chain.
    pub chain: Chain,
    /// The wallet.
    pub wallet: Address,
    /// The asset.
    pub asset: Asset,
    /// The balance in base units.
    pub amount: Amount,
    /// The asset's decimals.
    pub decimals: u8,
}

/// An asset's USD price from this event's time on.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceObs {
    /// The asset symbol.
    pub asset: Asset,
    /// USD per whole unit.
    pub usd: Price,
}

/// A withdrawal the exchange's withdrawal system is about to sign.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// The withdrawal system's id.
    pub id: String,
    /// The chain.
    pub chain: Chain,
    /// The sending hot wallet.
    pub wallet: Address,
    /// The destination.
    pub to: Address,
    /// The asset.
    pub asset: Asset,
    /// The amount in base units.
    pub amount: Amount,
    /// The asset's decimals.
    pub decimals: u8,
    /// The transaction hash, when the system knows it before broadcast.
    pub tx_hash: Option<TxHash>,
}

/// A movement of value: a native transfer, an ERC-20 `Transfer` log or a
/// Bitcoin output.
#[derive(Debug, Clone, PartialEq)]
pub struct Transfer {
    /// The chain.
    pub chain: Chain,
    /// The transaction.
    pub tx_hash: TxHash,
    /// Log index or output number.
    pub index: u32,
    /// Its stage.
    pub stage: Stage,
    /// The block, for every stage but `pending`.
    pub block: Option<u64>,
    /// The sender.
    pub from: Address,
    /// The recipient.
    pub to: Address,
    /// The asset symbol.
    pub asset: Asset,
    /// The token contract, where there is one.
    pub token: Option<Address>,
    /// The amount in base units.
    pub amount: Amount,
    /// The asset's decimals.
    pub decimals: u8,
}

impl Transfer {
    /// The key that is the same in every stage of this transfer.
    pub fn key(&self) -> TransferKey {
        TransferKey {
            chain: self.chain.clone(),
            tx_hash: self.tx_hash.clone(),
            index: self.index,
        }
    }
}

/// The kind of an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStandard {
    /// ERC-20 `approve`.
    #[default]
    Erc20,
    /// An EIP-2612 `permit` signature.
    Permit,
    /// ERC-721/1155 `setApprovalForAll`.
    Erc721All,
}

/// A hot wallet granting a spender the right to move its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    /// The chain.
    pub chain: Chain,
    /// The transaction.
    pub tx_hash: TxHash,
    /// The approving wallet.
    pub owner: Address,
    /// Who may spend.
    pub spender: Address,
    /// The asset symbol.
    pub asset: Asset,
    /// The allowance in raw base units (up to 2²⁵⁶ − 1).
    pub amount: Amount,
    /// Approve, permit or approval-for-all.
    pub standard: ApprovalStandard,
}

/// A change to the control of a contract wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAction {
    /// A new owner or signer.
    AddOwner,
    /// An owner removed.
    RemoveOwner,
    /// The signing threshold changed.
    ChangeThreshold,
    /// A module enabled (it can move funds without the owners).
    EnableModule,
    /// A transaction guard set.
    SetGuard,
    /// The implementation (master copy) changed.
    Upgrade,
    /// A delegatecall executed in the wallet's context.
    Delegatecall,
}

/// A contract wallet's control changed (the Bybit and WazirX takeovers).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminChange {
    /// The chain.
    pub chain: Chain,
    /// The transaction.
    pub tx_hash: TxHash,
    /// The exchange's contract wallet.
    pub wallet: Address,
    /// What changed.
    pub action: AdminAction,
    /// The new owner, module, guard, implementation or call target.
    pub target: Address,
}

/// A new chain head.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    /// The chain.
    pub chain: Chain,
    /// Its height.
    pub block: u64,
    /// Its hash.
    pub hash: String,
}

/// One normalized event with the time it was observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Observation time (scenario time in replay).
    pub t: Timestamp,
    /// What happened.
    pub kind: EventKind,
}

/// What an [`Event`] says.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// A wallet of the exchange.
    Wallet(WalletDecl),
    /// An observed balance.
    Balance(BalanceObs),
    /// A price.
    Price(PriceObs),
    /// A withdrawal intent.
    Intent(Intent),
    /// A transfer at some stage.
    Transfer(Transfer),
    /// A token approval.
    Approval(Approval),
    /// A contract-wallet control change.
    Admin(AdminChange),
    /// A chain head.
    Head(Head),
}

impl EventKind {
    /// The kind's name, as in scenario files and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Wallet(_) => "wallet",
            EventKind::Balance(_) => "balance",
            EventKind::Price(_) => "price",
            EventKind::Intent(_) => "intent",
            EventKind::Transfer(_) => "transfer",
            EventKind::Approval(_) => "approval",
            EventKind::Admin(_) => "admin",
            EventKind::Head(_) => "head",
        }
    }

    /// The chain the event belongs to, if any.
    pub fn chain(&self) -> Option<&Chain> {
        match self {
            EventKind::Wallet(w) => Some(&w.chain),
            EventKind::Balance(b) => Some(&b.chain),
            EventKind::Price(_) => None,
            EventKind::Intent(i) => Some(&i.chain),
            EventKind::Transfer(t) => Some(&t.chain),
            EventKind::Approval(a) => Some(&a.chain),
            EventKind::Admin(a) => Some(&a.chain),
            EventKind::Head(h) => Some(&h.chain),
        }
    }
}
