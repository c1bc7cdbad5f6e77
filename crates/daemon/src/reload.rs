//! Hot reload of the rules, on SIGHUP or `POST /v1/admin/reload`.
//!
//! The rules file the daemon started with is read again and validated with
//! the code `run` and `check-config` use. An invalid file changes nothing:
//! the running rules stay in force, the errors (each naming the file, the
//! rule and the field) are logged, audited and returned to the caller. A
//! valid rule set goes to the engine thread as a [`Control`] message on the
//! bus, behind the events already there: the engine puts it in force
//! between two events, keeping everything it knows, and answers through a
//! oneshot channel. The engine thread owns the store, so it writes the
//! audit rows of both outcomes: the store keeps one writer.

use std::{fmt, path::PathBuf, sync::Arc};

use drainguard_bus::{BusSender, ControlSender};
use drainguard_engine::RuleSet;
use tokio::sync::{Mutex, oneshot};

use crate::config::{self, BUILTIN_RULES};

/// The audit `action` of a reload that put new rules in force.
pub(crate) const RELOADED: &str = "rules.reloaded";
/// The audit `action` of a reload refused because the rules are invalid.
pub(crate) const RELOAD_FAILED: &str = "rules.reload_failed";

/// Who asked for a reload (the audit `actor`).
pub(crate) mod actor {
    /// SIGHUP.
    pub(crate) const SIGNAL: &str = "signal";
    /// `POST /v1/admin/reload` with the admin token.
    pub(crate) const ADMIN: &str = "admin";
}

/// What the engine thread is asked to do between two events.
#[derive(Debug)]
pub(crate) enum Control {
    /// Withdrawal intents for their pre-signing verdicts, answered in
    /// order once any hold is durable.
    Intents {
        intents: Vec<drainguard_model::Intent>,
        reply: oneshot::Sender<Vec<drainguard_engine::Verdict>>,
    },
    /// A second has passed: run the checks that need time to pass (a
    /// blind chain) and, now and then, save what the engine has learned.
    Tick,
    /// Put a validated rule set in force; answer with its rule count.
    Reload {
        rules: RuleSet,
        actor: &'static str,
        source: String,
        reply: oneshot::Sender<usize>,
    },
    /// Audit a reload refused because the rules are invalid; answer once
    /// it is written.
    ReloadFailed {
        actor: &'static str,
        source: String,
        errors: Vec<String>,
        reply: oneshot::Sender<()>,
    },
    /// An operator's freeze: answered once it and its webhook are durable.
    ManualFreeze {
        scope: drainguard_model::Scope,
        reason: String,
        actor: String,
        reply: oneshot::Sender<Result<drainguard_model::Freeze, String>>,
    },
    /// An operator's lift: answered once it and its webhook are durable.
    Lift {
        id: drainguard_model::FreezeId,
        actor: String,
        reason: String,
        reply: oneshot::Sender<Result<drainguard_store::LiftOutcome, String>>,
    },
}

/// The event bus of the daemon, with its control messages.
pub(crate) type EventSender = BusSender<Control>;

/// Where the running rules came from, and so where a reload reads them.
#[derive(Debug, Clone)]
pub(crate) enum RulesSource {
    /// No `[rules] path`: the rules compiled into the binary.
    Builtin,
    /// A rules file (resolved against the configuration file's folder).
    File(PathBuf),
}

impl fmt::Display for RulesSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RulesSource::Builtin => f.write_str(BUILTIN_RULES),
            RulesSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl RulesSource {
    /// Reads and validates the rules, as at startup: every error, each
    /// naming the file, the rule and the field.
    fn load(&self) -> Result<RuleSet, Vec<String>> {
        match self {
            RulesSource::Builtin => {
                RuleSet::builtin().map_err(|e| e.0.iter().map(ToString::to_string).collect())
            }
            RulesSource::File(p) => config::load_rules(p).map_err(|e| e.0),
        }
    }
}

/// Why a reload did not put new rules in force.
#[derive(Debug)]
pub(crate) enum ReloadError {
    /// The rules are invalid; the running rules stay in force.
    Invalid { source: String, errors: Vec<String> },
    /// The engine has stopped (the daemon is shutting down).
    EngineStopped,
}

/// Reloads the rules; cheap to clone, one reload at a time.
#[derive(Debug, Clone)]
pub(crate) struct Reloader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    source: RulesSource,
    control: ControlSender<Control>,
    /// Held through a whole reload, so two reloads never overtake each
    /// other between reading the file and reaching the engine.
    one_at_a_time: Mutex<()>,
}

impl Reloader {
    pub(crate) fn new(source: RulesSource, bus: &EventSender) -> Reloader {
        Reloader {
            inner: Arc::new(Inner {
                source,
                control: bus.control_sender(),
                one_at_a_time: Mutex::new(()),
            }),
        }
    }

    /// Reads and validates the rules again and, when they are valid, puts
    /// them in force; the rule count in force afterwards.
    pub(crate) async fn reload(&self, actor: &'static str) -> Result<usize, ReloadError> {
        let _turn = self.inner.one_at_a_time.lock().await;
        let source = self.inner.source.clone();
        let label = source.to_string();
        if matches!(source, RulesSource::Builtin) {
            tracing::info!(
                message = "no [rules] path in the configuration: the built-in rules are in force; re-validating them",
                actor
            );
        }
        let loaded = tokio::task::spawn_blocking(move || source.load())
            .await
            .unwrap_or_else(|e| Err(vec![format!("{label}: reading the rules failed: {e}")]));
        match loaded {
            Ok(rules) => {
                let (reply, answer) = oneshot::channel();
                let control = Control::Reload {
                    rules,
                    actor,
                    source: label,
                    reply,
                };
                let sent = self.inner.control.send(control).await;
                match (sent, answer.await) {
                    (Ok(()), Ok(n)) => Ok(n),
                    _ => {
                        tracing::warn!(
                            message = "rules not reloaded: the engine is not running",
                            actor
                        );
                        Err(ReloadError::EngineStopped)
                    }
                }
            }
            Err(errors) => {
                tracing::error!(
                    message = "rules reload failed; the running rules stay in force",
                    actor,
                    source = %label,
                    errors = %errors.join("; "),
                );
                let (reply, written) = oneshot::channel();
                let control = Control::ReloadFailed {
                    actor,
                    source: label.clone(),
                    errors: errors.clone(),
                    reply,
                };
                let sent = self.inner.control.send(control).await;
                if sent.is_err() || written.await.is_err() {
                    tracing::warn!(
                        message = "the failed reload is not audited: the engine is not running",
                        actor
                    );
                }
                Err(ReloadError::Invalid {
                    source: label,
                    errors,
                })
            }
        }
    }
}
