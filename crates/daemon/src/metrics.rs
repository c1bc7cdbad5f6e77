//! The daemon's Prometheus metrics: names as constants, labels of low
//! cardinality (chain, kind, stage, rule, severity, scope level, wallet
//! name, asset; never a tx hash or an address).

use std::collections::{HashMap, HashSet};

use drainguard_engine::WindowFigure;
use drainguard_model::{Address, Asset, Chain, Event, EventKind, Scope, Stage, WalletRole};
use prometheus::{
    CounterVec, Encoder, GaugeVec, Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Build info (always 1), labelled with the version.
pub(crate) const BUILD_INFO: &str = "drainguard_build_info";
/// Events processed by the engine, by chain, kind and stage.
pub(crate) const EVENTS: &str = "drainguard_events_total";
/// Findings by rule and severity.
pub(crate) const FINDINGS: &str = "drainguard_findings_total";
/// Freezes raised, by scope level.
pub(crate) const FREEZES: &str = "drainguard_freezes_total";
/// Freezes in force, by scope level.
pub(crate) const FREEZES_ACTIVE: &str = "drainguard_freezes_active";
/// Event entering the bus to finding, in seconds.
pub(crate) const DETECTION_LATENCY: &str = "drainguard_detection_latency_seconds";
/// Store commit duration.
pub(crate) const STORE_COMMIT: &str = "drainguard_store_commit_seconds";
/// Events waiting in the bus.
pub(crate) const BUS_DEPTH: &str = "drainguard_bus_queue_depth";
/// Bus capacity.
pub(crate) const BUS_CAPACITY: &str = "drainguard_bus_queue_capacity";
/// Latest head height per chain.
pub(crate) const HEAD_BLOCK: &str = "drainguard_chain_head_block";
/// Latest checkpoint per chain (fully processed and durable).
pub(crate) const CHECKPOINT_BLOCK: &str = "drainguard_chain_checkpoint_block";
/// Open withdrawal intents not yet matched.
pub(crate) const OPEN_INTENTS: &str = "drainguard_intents_open";
/// 1 while the engine holds a chain blind (no head for k block times).
pub(crate) const CHAIN_BLIND: &str = "drainguard_chain_blind";
/// USD value of outflows from hot wallets once in a block, by chain,
/// wallet name and asset (display only: amounts stay integers elsewhere).
pub(crate) const OUTFLOW_USD: &str = "drainguard_outflow_value_usd_total";
/// A volume window's current total in USD, by rule, chain, wallet name and
/// asset (wallet and asset empty where the window spans more).
pub(crate) const WINDOW_TOTAL_USD: &str = "drainguard_window_total_usd";
/// What the window's rule allows, in USD, with the same labels.
pub(crate) const WINDOW_LIMIT_USD: &str = "drainguard_window_limit_usd";
/// The window's total as a share of its limit (1 = at the limit); also for
/// velocity windows, which count outflows rather than dollars.
pub(crate) const WINDOW_USAGE: &str = "drainguard_window_usage_ratio";

/// Every metric, registered once.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) events: IntCounterVec,
    pub(crate) findings: IntCounterVec,
    pub(crate) freezes: IntCounterVec,
    pub(crate) freezes_active: IntGaugeVec,
    pub(crate) detection_latency: Histogram,
    pub(crate) store_commit: Histogram,
    pub(crate) bus_depth: IntGauge,
    pub(crate) bus_capacity: IntGauge,
    pub(crate) head_block: IntGaugeVec,
    pub(crate) checkpoint_block: IntGaugeVec,
    pub(crate) open_intents: IntGauge,
    pub(crate) chain_blind: IntGaugeVec,
    pub(crate) outflow_usd: CounterVec,
    pub(crate) window_total_usd: GaugeVec,
    pub(crate) window_limit_usd: GaugeVec,
    pub(crate) window_usage: GaugeVec,
}

/// The most window series shown at once.
pub(crate) const MAX_WINDOW_SERIES: usize = 1000;

const WINDOW_LABELS: &[&str] = &["rule", "chain", "wallet", "asset"];

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub(crate) fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new(BUILD_INFO, "drainguard build information"),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        let m = Metrics {
            events: IntCounterVec::new(
                Opts::new(EVENTS, "Events processed by the engine"),
                &["chain", "kind", "stage"],
            )?,
            findings: IntCounterVec::new(
                Opts::new(FINDINGS, "Findings by rule and severity"),
                &["rule", "severity"],
            )?,
            freezes: IntCounterVec::new(
                Opts::new(FREEZES, "Withdrawal freezes raised, by scope level"),
                &["scope"],
            )?,
            freezes_active: IntGaugeVec::new(
                Opts::new(
                    FREEZES_ACTIVE,
                    "Withdrawal freezes in force, by scope level",
                ),
                &["scope"],
            )?,
            detection_latency: Histogram::with_opts(
                HistogramOpts::new(
                    DETECTION_LATENCY,
                    "From an event entering the bus to its finding, in seconds",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            store_commit: Histogram::with_opts(
                HistogramOpts::new(STORE_COMMIT, "Durable store commit duration, in seconds")
                    .buckets(LATENCY_BUCKETS.to_vec()),
            )?,
            bus_depth: IntGauge::new(BUS_DEPTH, "Events waiting in the bus")?,
            bus_capacity: IntGauge::new(BUS_CAPACITY, "Capacity of the bus in events")?,
            head_block: IntGaugeVec::new(
                Opts::new(HEAD_BLOCK, "Latest head height seen per chain"),
                &["chain"],
            )?,
            checkpoint_block: IntGaugeVec::new(
                Opts::new(
                    CHECKPOINT_BLOCK,
                    "Latest block fully evaluated and durable, per chain",
                ),
                &["chain"],
            )?,
            open_intents: IntGauge::new(
                OPEN_INTENTS,
                "Withdrawal intents waiting for their outflow",
            )?,
            chain_blind: IntGaugeVec::new(
                Opts::new(
                    CHAIN_BLIND,
                    "1 while a chain is blind: no new head for the blind rule's k block times",
                ),
                &["chain"],
            )?,
            outflow_usd: CounterVec::new(
                Opts::new(
                    OUTFLOW_USD,
                    "USD value of hot-wallet outflows in a block, by chain, wallet name and asset",
                ),
                &["chain", "wallet", "asset"],
            )?,
            window_total_usd: GaugeVec::new(
                Opts::new(
                    WINDOW_TOTAL_USD,
                    "A volume window's current total in USD, by rule, chain, wallet name and asset",
                ),
                WINDOW_LABELS,
            )?,
            window_limit_usd: GaugeVec::new(
                Opts::new(
                    WINDOW_LIMIT_USD,
                    "What a volume window's rule allows in USD (its tightest limit)",
                ),
                WINDOW_LABELS,
            )?,
            window_usage: GaugeVec::new(
                Opts::new(
                    WINDOW_USAGE,
                    "A window's total as a share of its rule's limit (1 = at the limit)",
                ),
                WINDOW_LABELS,
            )?,
            registry,
        };
        m.registry.register(Box::new(m.events.clone()))?;
        m.registry.register(Box::new(m.findings.clone()))?;
        m.registry.register(Box::new(m.freezes.clone()))?;
        m.registry.register(Box::new(m.freezes_active.clone()))?;
        m.registry.register(Box::new(m.detection_latency.clone()))?;
        m.registry.register(Box::new(m.store_commit.clone()))?;
        m.registry.register(Box::new(m.bus_depth.clone()))?;
        m.registry.register(Box::new(m.bus_capacity.clone()))?;
        m.registry.register(Box::new(m.head_block.clone()))?;
        m.registry.register(Box::new(m.checkpoint_block.clone()))?;
        m.registry.register(Box::new(m.open_intents.clone()))?;
        m.registry.register(Box::new(m.chain_blind.clone()))?;
        m.registry.register(Box::new(m.outflow_usd.clone()))?;
        m.registry.register(Box::new(m.window_total_usd.clone()))?;
        m.registry.register(Box::new(m.window_limit_usd.clone()))?;
        m.registry.register(Box::new(m.window_usage.clone()))?;
        // Series that exist from the start, so dashboards and alerts have
        // data before the first finding.
        for level in ["wallet", "asset", "chain", "global", "intent"] {
            m.freezes.with_label_values(&[level]);
            m.freezes_active.with_label_values(&[level]);
        }
        Ok(m)
    }

    /// Pre-creates the finding series of every rule, so a rule that never
    /// fired shows 0 rather than no data.
    pub(crate) fn declare_rules(&self, rules: &drainguard_engine::RuleSet) {
        for r in &rules.rules {
            self.findings
                .with_label_values(&[r.id.as_str(), r.severity.as_str()]);
        }
    }

    /// The registry, for other crates' metrics (the responders').
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// Follows the wallets and prices the events declare, to put a USD value
/// and a wallet name (never an address) on each hot-wallet outflow.
#[derive(Debug, Default)]
pub(crate) struct OutflowMeter {
    wallets: HashMap<(Chain, Address), (String, WalletRole)>,
    prices: HashMap<Asset, f64>,
    /// The window series set last time, so a window that emptied loses
    /// its series instead of showing a stale total.
    windows_shown: HashSet<[String; 4]>,
}

impl OutflowMeter {
    /// Counts what the event says, if anything.
    pub(crate) fn observe(&mut self, metrics: &Metrics, event: &Event) {
        match &event.kind {
            EventKind::Wallet(w) => {
                self.wallets.insert(
                    (w.chain.clone(), w.address.clone()),
                    (w.name.clone(), w.role),
                );
            }
            EventKind::Price(p) => {
                self.prices.insert(p.asset.clone(), p.usd.0);
            }
            EventKind::Head(h) => {
                // The chain's blind series exists from its first head.
                metrics.chain_blind.with_label_values(&[h.chain.as_str()]);
            }
            EventKind::Transfer(t) if t.stage == Stage::Included => {
                // Ids are reference-counted: these keys allocate nothing.
                let from = (t.chain.clone(), t.from.clone());
                let Some((name, WalletRole::Hot)) = self.wallets.get(&from) else {
                    return;
                };
                // A move between the exchange's own wallets is not an outflow.
                if self.wallets.contains_key(&(t.chain.clone(), t.to.clone())) {
                    return;
                }
                let price = self.prices.get(&t.asset).copied().unwrap_or(0.0);
                let usd = t.amount.to_f64_units(t.decimals) * price;
                if usd.is_finite() && usd > 0.0 {
                    metrics
                        .outflow_usd
                        .with_label_values(&[t.chain.as_str(), name, t.asset.as_str()])
                        .inc_by(usd);
                }
            }
            _ => {}
        }
    }

    /// Shows each volume window's total next to its limit, by wallet name
    /// (never an address), and drops the series of windows that emptied.
    /// The engine loop passes at most [`MAX_WINDOW_SERIES`], those nearest
    /// their limits, so a busy exchange cannot flood Prometheus.
    pub(crate) fn windows(&mut self, metrics: &Metrics, figures: &[WindowFigure]) {
        let mut shown = HashSet::with_capacity(figures.len());
        for f in figures {
            let (chain, wallet) = match &f.scope {
                Scope::Wallet(c, a) => {
                    let name = self.wallets.get(&(c.clone(), a.clone()));
                    (
                        c.to_string(),
                        name.map_or_else(String::new, |(n, _)| n.clone()),
                    )
                }
                Scope::Asset(c, _) | Scope::Chain(c) => (c.to_string(), String::new()),
                Scope::Global | Scope::Intent(_) => (String::new(), String::new()),
            };
            let asset = f
                .asset
                .as_ref()
                .map_or_else(String::new, ToString::to_string);
            let labels = [f.rule.clone(), chain, wallet, asset];
            let values = labels.each_ref().map(String::as_str);
            if let Some(usd) = f.sum_usd {
                metrics
                    .window_total_usd
                    .with_label_values(&values)
                    .set(usd.to_f64());
            }
            if let Some(usd) = f.limit_usd {
                metrics
                    .window_limit_usd
                    .with_label_values(&values)
                    .set(usd.to_f64());
            }
            if let Some(ratio) = f.usage() {
                metrics.window_usage.with_label_values(&values).set(ratio);
            }
            shown.insert(labels);
        }
        for gone in self.windows_shown.difference(&shown) {
            let values = gone.each_ref().map(String::as_str);
            for g in [
                &metrics.window_total_usd,
                &metrics.window_limit_usd,
                &metrics.window_usage,
            ] {
                let _absent_is_fine = g.remove_label_values(&values);
            }
        }
        self.windows_shown = shown;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use drainguard_model::{Timestamp, Usd, WalletDecl};

    use super::*;

    const HOT: &str = "0x00000000000000000000000000000000000000a1";

    fn figure(rule: &str, wallet: &str, sum: u128, limit: u128) -> WindowFigure {
        WindowFigure {
            rule: rule.into(),
            scope: Scope::Wallet(Chain::new("ethereum"), Address::new(wallet)),
            asset: Some(Asset::new("ETH")),
            sum,
            count: 1,
            limit: Some(limit),
            sum_usd: Some(Usd::from_dollars(u64::try_from(sum).unwrap())),
            limit_usd: Some(Usd::from_dollars(u64::try_from(limit).unwrap())),
        }
    }

    #[test]
    fn windows_show_totals_by_wallet_name_and_drop_emptied_ones() {
        let metrics = Metrics::new().unwrap();
        let mut meter = OutflowMeter::default();
        meter.observe(
            &metrics,
            &Event {
                t: Timestamp::default(),
                kind: EventKind::Wallet(WalletDecl {
                    chain: Chain::new("ethereum"),
                    address: Address::new(HOT),
                    name: "hot-1".into(),
                    role: WalletRole::Hot,
                    balances: Vec::new(),
                }),
            },
        );
        meter.windows(&metrics, &[figure("share", HOT, 300, 1200)]);
        let text = metrics.render().unwrap();
        let labels = r#"{asset="ETH",chain="ethereum",rule="share",wallet="hot-1"}"#;
        assert!(
            text.contains(&format!("{WINDOW_TOTAL_USD}{labels} 300")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{WINDOW_LIMIT_USD}{labels} 1200")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{WINDOW_USAGE}{labels} 0.25")),
            "{text}"
        );
        assert!(!text.contains(HOT), "an address is never a label");

        meter.windows(&metrics, &[]);
        let text = metrics.render().unwrap();
        assert!(!text.contains("rule=\"share\""), "{text}");
    }
}
