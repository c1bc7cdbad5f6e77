//! The traffic generator (placeholder until it lands).
use crate::Record;

/// An incident to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incident {
    /// A CoinEx-style drain.
    StolenKeyDrain,
}

/// Generator settings.
#[derive(Debug, Clone, Default)]
pub struct SimConfig;

/// Generates a scenario.
pub fn generate(_c: &SimConfig) -> Vec<Record> {
    Vec::new()
}
