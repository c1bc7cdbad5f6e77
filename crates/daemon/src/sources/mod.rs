//! Chain sources: each turns some chain data into events on the bus.

pub(crate) mod sim;
