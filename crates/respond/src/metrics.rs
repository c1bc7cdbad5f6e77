//! The responders' Prometheus metrics: names as constants, labels of low
//! cardinality (channel, outcome, status; never a key or a URL).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Delivery attempts by channel and outcome (`delivered`, `retry`,
/// `failed`).
pub const DELIVERY_ATTEMPTS: &str = "drainguard_delivery_attempts_total";
/// From an action entering the outbox to a receiver accepting it, by
/// channel.
pub const DELIVERY_LATENCY: &str = "drainguard_delivery_latency_seconds";
/// Outbox actions by status (`pending`, `failed`).
pub const OUTBOX_BACKLOG: &str = "drainguard_outbox_backlog";

/// The delivery metrics, registered in the daemon's registry.
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    /// See [`DELIVERY_ATTEMPTS`].
    pub attempts: IntCounterVec,
    /// See [`DELIVERY_LATENCY`].
    pub latency: HistogramVec,
    /// See [`OUTBOX_BACKLOG`].
    pub backlog: IntGaugeVec,
}

impl DeliveryMetrics {
    /// Registers the delivery metrics in `registry`, with every series of
    /// the configured channels present from the start.
    pub fn register(registry: &Registry, channels: &[&str]) -> prometheus::Result<Self> {
        let m = DeliveryMetrics {
            attempts: IntCounterVec::new(
                Opts::new(
                    DELIVERY_ATTEMPTS,
                    "Outbox delivery attempts by channel and outcome",
                ),
                &["channel", "outcome"],
            )?,
            latency: HistogramVec::new(
                HistogramOpts::new(
                    DELIVERY_LATENCY,
                    "From an action entering the outbox to a receiver accepting it, in seconds",
                )
                .buckets(vec![
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    300.0, 1800.0,
                ]),
                &["channel"],
            )?,
            backlog: IntGaugeVec::new(
                Opts::new(OUTBOX_BACKLOG, "Outbox actions not delivered, by status"),
                &["status"],
            )?,
        };
        registry.register(Box::new(m.attempts.clone()))?;
        registry.register(Box::new(m.latency.clone()))?;
        registry.register(Box::new(m.backlog.clone()))?;
        for c in channels {
            for outcome in ["delivered", "retry", "failed"] {
                m.attempts.with_label_values(&[c, outcome]);
            }
            m.latency.with_label_values(&[c]);
        }
        for s in ["pending", "failed"] {
            m.backlog.with_label_values(&[s]);
        }
        Ok(m)
    }
}
