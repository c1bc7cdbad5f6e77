//! The one-shot subcommands.

pub(crate) mod audit;
pub(crate) mod bench;
pub(crate) mod check;
mod client;
pub(crate) mod eval;
pub(crate) mod freeze;
pub(crate) mod outbox;
pub(crate) mod replay;
pub(crate) mod sim;
