//! The log responder, which every deployment runs: one structured line
//! per finding and per freeze, with the figures and evidence an operator
//! needs and nothing secret.

use drainguard_model::{Finding, Freeze, Severity};

/// Writes findings and freezes to the log as structured events.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogResponder;

impl LogResponder {
    /// Logs a finding at a level that follows its severity.
    pub fn on_finding(&self, f: &Finding) {
        let evidence = f
            .evidence
            .first()
            .map(|e| format!("{}:{}:{}", e.chain, e.tx_hash, e.index))
            .unwrap_or_default();
        // tracing wants its level as a constant: one call per level, the
        // same fields in each.
        macro_rules! log_finding {
            ($level:ident) => {
                tracing::$level!(
                    message = "finding",
                    rule = %f.rule,
                    severity = f.severity.as_str(),
                    scope = %f.scope,
                    shadow = f.shadow,
                    %evidence,
                    summary = %f.summary,
                )
            };
        }
        match f.severity {
            Severity::Critical => log_finding!(warn),
            Severity::Warning | Severity::Info => log_finding!(info),
        }
    }

    /// Logs a freeze that is already durable in the store.
    pub fn on_freeze(&self, f: &Freeze) {
        let txs: Vec<String> = f
            .findings
            .iter()
            .flat_map(|x| x.evidence.iter())
            .map(|e| format!("{}:{}", e.chain, e.tx_hash))
            .collect();
        tracing::error!(
            message = "FREEZE raised: suspend withdrawals in scope",
            freeze_id = %f.id,
            scope = %f.scope,
            rule = %f.rule,
            evidence = %txs.join(","),
            reason = %f.reason,
        );
    }
}
