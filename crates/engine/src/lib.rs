//! The drainguard rules engine: pure, synchronous logic with no I/O.
//!
//! Events go in through [`Engine::process`]; [`Output`]s — findings and
//! freezes — come out. The engine reads time only from the events, so the
//! daemon runs it on observation times and `replay` runs it on scenario
//! times, faster than real time and with the same results.
//!
//! What the engine guarantees:
//! - each transfer, keyed by (chain, tx hash, index), counts once in every
//!   window and count, however many stages it is seen in;
//! - a `retracted` transfer is taken back out of every window and count and
//!   its balance move is undone;
//! - moves between the exchange's own wallets are internal, never outflows;
//! - each withdrawal intent matches at most one outflow.

mod baseline;
mod config;
mod engine;
mod intern;
mod rules;
mod state;
mod window;
mod windows;

pub use baseline::{Learned, robust};
pub use config::{
    Action, AddressSet, ApprovalParams, BalanceDrainParams, ConfigError, ConfigErrors,
    CorrelationParams, DEFAULT_DENYLIST, DEFAULT_RULES, DenylistParams, FileReader, IntentMatching,
    IntentsMode, Level, Mode, NewDestinationParams, OutflowWindowParams, PresignParams, Rule,
    RuleKind, RuleSet, UnmatchedParams, VelocityParams, parse_denylist,
};
pub use engine::{
    Engine, EngineStats, LearnedEntry, LearnedState, MAX_WINDOW_EVIDENCE, Output, Recovery,
    Verdict, WindowFigure,
};
pub use window::{Seq, SlidingWindow};
