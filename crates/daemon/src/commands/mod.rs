//! The one-shot subcommands.

pub(crate) mod check;
pub(crate) mod replay;
pub(crate) mod sim;
