//! The EVM watchers' metrics, named once here: per-endpoint requests,
//! errors and latency; per-chain head lag and reorgs. Labels are chain and
//! endpoint names only (an endpoint's URL may hold an API key).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, core::Collector,
};

/// RPC requests by chain and endpoint.
pub const RPC_REQUESTS: &str = "drainguard_rpc_requests_total";
/// RPC errors by chain and endpoint.
pub const RPC_ERRORS: &str = "drainguard_rpc_errors_total";
/// RPC latency by chain and endpoint.
pub const RPC_LATENCY: &str = "drainguard_rpc_latency_seconds";
/// The node's head height by chain.
pub const NODE_HEAD: &str = "drainguard_chain_node_head_block";
/// Blocks between the node's head and the last block processed.
pub const HEAD_LAG_BLOCKS: &str = "drainguard_chain_head_lag_blocks";
/// Seconds between now and the timestamp of the last block processed.
pub const HEAD_LAG_SECONDS: &str = "drainguard_chain_head_lag_seconds";
/// Reorgs followed, by chain.
pub const REORGS: &str = "drainguard_reorgs_total";
/// Depth of each reorg, by chain.
pub const REORG_DEPTH: &str = "drainguard_reorg_depth_blocks";
/// Reorgs deeper than the confirmation depth (checkpoint rewound).
pub const DEEP_REORGS: &str = "drainguard_deep_reorgs_total";

/// The metrics of every EVM chain's watcher and endpoint pool.
#[derive(Debug, Clone)]
pub struct EvmMetrics {
    pub(crate) requests: IntCounterVec,
    pub(crate) errors: IntCounterVec,
    pub(crate) latency: HistogramVec,
    pub(crate) node_head: IntGaugeVec,
    pub(crate) lag_blocks: IntGaugeVec,
    pub(crate) lag_seconds: IntGaugeVec,
    pub(crate) reorgs: IntCounterVec,
    pub(crate) reorg_depth: HistogramVec,
    pub(crate) deep_reorgs: IntCounterVec,
}

impl EvmMetrics {
    /// Registers the EVM metrics.
    pub fn register(registry: &Registry) -> prometheus::Result<EvmMetrics> {
        let endpoint = &["chain", "endpoint"];
        let chain = &["chain"];
        let m = EvmMetrics {
            requests: IntCounterVec::new(
                Opts::new(RPC_REQUESTS, "JSON-RPC requests by chain and endpoint"),
                endpoint,
            )?,
            errors: IntCounterVec::new(
                Opts::new(
                    RPC_ERRORS,
                    "JSON-RPC errors and timeouts by chain and endpoint",
                ),
                endpoint,
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(RPC_LATENCY, "JSON-RPC latency in seconds").buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                endpoint,
            )?,
            node_head: IntGaugeVec::new(
                Opts::new(NODE_HEAD, "The head height the chain's node reports"),
                chain,
            )?,
            lag_blocks: IntGaugeVec::new(
                Opts::new(
                    HEAD_LAG_BLOCKS,
                    "Blocks between the node's head and the last block processed",
                ),
                chain,
            )?,
            lag_seconds: IntGaugeVec::new(
                Opts::new(
                    HEAD_LAG_SECONDS,
                    "Seconds between now and the timestamp of the last block processed",
                ),
                chain,
            )?,
            reorgs: IntCounterVec::new(Opts::new(REORGS, "Reorgs followed, by chain"), chain)?,
            reorg_depth: HistogramVec::new(
                HistogramOpts::new(REORG_DEPTH, "Depth of each reorg in blocks")
                    .buckets(vec![1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 64.0, 128.0]),
                chain,
            )?,
            deep_reorgs: IntCounterVec::new(
                Opts::new(
                    DEEP_REORGS,
                    "Reorgs deeper than the confirmation depth, by chain",
                ),
                chain,
            )?,
        };
        let all: [Box<dyn Collector>; 9] = [
            Box::new(m.requests.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.latency.clone()),
            Box::new(m.node_head.clone()),
            Box::new(m.lag_blocks.clone()),
            Box::new(m.lag_seconds.clone()),
            Box::new(m.reorgs.clone()),
            Box::new(m.reorg_depth.clone()),
            Box::new(m.deep_reorgs.clone()),
        ];
        for c in all {
            registry.register(c)?;
        }
        Ok(m)
    }

    /// Makes a chain's series exist from the start (zero), so dashboards
    /// and alerts see them before the first reorg.
    pub(crate) fn init_chain(&self, chain: &str) {
        self.node_head.with_label_values(&[chain]);
        self.lag_blocks.with_label_values(&[chain]);
        self.lag_seconds.with_label_values(&[chain]);
        self.reorgs.with_label_values(&[chain]);
        self.reorg_depth.with_label_values(&[chain]);
        self.deep_reorgs.with_label_values(&[chain]);
    }
}
