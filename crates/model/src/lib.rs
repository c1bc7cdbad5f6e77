//! The normalized event model every other drainguard crate speaks.
//!
//! Watchers turn chain data into [`Event`]s; the engine turns events into
//! [`Finding`]s and [`Freeze`]s. Money is never a float here: an [`Amount`]
//! is an integer of the asset's base units, and a [`Usd`] value is an
//! integer of micro-dollars derived from a price, for thresholds and display.

mod amount;
mod event;
mod finding;
mod ids;
mod time;

pub use amount::{Amount, AmountError, Price, U256, Usd};
pub use event::{
    AdminAction, AdminChange, Approval, ApprovalStandard, BalanceObs, Event, EventKind, Head,
    Intent, PriceObs, Stage, Transfer, TransferKey, WalletDecl, WalletRole,
};
pub use finding::{Evidence, Finding, Freeze, FreezeId, Scope, ScopeError, Severity};
pub use ids::{ADDRESS_TEXT_MAX, Address, Asset, Chain, Raw, TxHash, key_hash};
pub use time::{Timestamp, TimestampError};
