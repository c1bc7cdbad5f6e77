//! What one EVM chain's watcher needs: its endpoints and timing, and the
//! wallets and tokens it watches. Built by the daemon from its checked
//! configuration.

use std::{collections::HashMap, time::Duration};

use alloy::primitives::Address as EvmAddress;
use drainguard_model::{Asset, Chain, WalletRole};

/// One JSON-RPC endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// A name for logs and metrics (the URL may hold an API key).
    pub name: String,
    /// The HTTP(S) URL.
    pub url: String,
    /// Its WebSocket URL, where it has one: new heads and pending
    /// transactions are then pushed as they happen instead of polled.
    pub ws: Option<String>,
}

/// One EVM chain.
#[derive(Debug, Clone)]
pub struct EvmChain {
    /// Its name in events and rules (`ethereum`, `bsc`, ...).
    pub name: Chain,
    /// Endpoints, tried in order; a failing one is skipped until it
    /// answers again.
    pub endpoints: Vec<Endpoint>,
    /// The expected time between blocks.
    pub block_time: Duration,
    /// Blocks on top of a block before its events are `confirmed` and its
    /// checkpoint is written.
    pub confirmations: u64,
    /// The deepest reorg followed; a deeper one is an alert.
    pub max_reorg_depth: u64,
    /// How often to ask for a new head and the mempool.
    pub poll_interval: Duration,
    /// Requests per second per endpoint, at most.
    pub rate_limit: u32,
    /// The first block to read when there is no checkpoint (`None`: the
    /// current head).
    pub start_block: Option<u64>,
    /// Blocks asked for in one JSON-RPC batch when behind the head.
    pub batch_blocks: u64,
    /// Whether to read the mempool (some chains' nodes have none).
    pub mempool: bool,
}

/// The wallets and tokens watched on one chain.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The chain's native asset (`ETH`, `BNB`, ...) and its decimals.
    pub native: Asset,
    /// See `native`.
    pub native_decimals: u8,
    wallets: HashMap<EvmAddress, (String, WalletRole)>,
    tokens: HashMap<EvmAddress, (Asset, u8)>,
}

impl Watched {
    /// Nothing watched yet, with the native asset.
    pub fn new(native: Asset, native_decimals: u8) -> Watched {
        Watched {
            native,
            native_decimals,
            wallets: HashMap::new(),
            tokens: HashMap::new(),
        }
    }

    /// Watches a wallet (an EOA or a contract wallet such as a Safe).
    pub fn wallet(&mut self, address: EvmAddress, name: &str, role: WalletRole) {
        self.wallets.insert(address, (name.to_string(), role));
    }

    /// Knows a token: its symbol and decimals.
    pub fn token(&self, address: &EvmAddress) -> Option<&(Asset, u8)> {
        self.tokens.get(address)
    }

    /// Adds a token.
    pub fn add_token(&mut self, address: EvmAddress, symbol: Asset, decimals: u8) {
        self.tokens.insert(address, (symbol, decimals));
    }

    /// Whether an address is a watched wallet.
    pub fn is_wallet(&self, address: &EvmAddress) -> bool {
        self.wallets.contains_key(address)
    }

    /// The watched wallets.
    pub fn wallets(&self) -> impl Iterator<Item = (&EvmAddress, &(String, WalletRole))> {
        self.wallets.iter()
    }

    /// The known tokens.
    pub fn tokens(&self) -> impl Iterator<Item = (&EvmAddress, &(Asset, u8))> {
        self.tokens.iter()
    }
}
