//! Scenario files and the exchange traffic simulator.
//!
//! A scenario is JSON Lines, one record a line, in non-decreasing time
//! order (the format is fixed in DESIGN.md). [`ScenarioReader`] is strict:
//! every unknown kind or field, missing field or bad value is an error that
//! names the line and the field, and nothing is skipped. [`ScenarioWriter`]
//! writes the same format. [`generate`] makes realistic, labelled days of
//! exchange traffic, deterministic for a seed.

mod generate;
mod scenario;

pub use generate::{Incident, PRESETS, SimConfig, generate, preset};
pub use scenario::{
    Label, Record, SCENARIO_DECIMALS, ScenarioError, ScenarioReader, ScenarioWriter, event_to_json,
    record_to_json,
};
