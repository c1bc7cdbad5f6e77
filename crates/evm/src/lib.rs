//! The EVM chain watcher, on alloy: it sees a CoinEx-style theft on
//! Ethereum, BNB Chain, Polygon and every other EVM chain.
//!
//! [`watcher::EvmWatcher`] follows one chain block by block through a
//! [`rpc::Pool`] of endpoints that fails over for real, turns blocks,
//! receipts and pending transactions into the normalized events of the
//! watched wallets ([`decode`], pure and tested), follows reorgs with
//! retractions, and marks confirmed blocks for the checkpoint.

pub mod config;
pub mod decode;
pub mod metrics;
mod push;
pub mod rpc;
pub mod watcher;

pub use config::{Endpoint, EvmChain, Watched};
pub use metrics::EvmMetrics;
pub use rpc::{Outage, Pool};
pub use watcher::EvmWatcher;

/// Why the watcher stopped or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum EvmError {
    /// The configuration cannot work.
    #[error("configuration: {0}")]
    Config(String),
    /// Every endpoint of the chain failed this call.
    #[error("{chain}: every endpoint failed {what}: {}", errors.join("; "))]
    AllEndpointsFailed {
        /// The chain.
        chain: String,
        /// The call.
        what: String,
        /// Each endpoint's error.
        errors: Vec<String>,
    },
    /// An answer that does not hold what the JSON-RPC spec says it must.
    #[error("malformed answer: {0}")]
    Malformed(String),
    /// The engine is gone (shutdown).
    #[error("the event bus is closed")]
    BusClosed,
}
