//! The simulator as a chain source: a generated day of exchange traffic,
//! played in real time or sped up, onto the bus.
//!
//! Simulated chains start at genesis every time the daemon starts, so the
//! source rewinds their checkpoints (audited) before it plays; the engine
//! then advances them as usual, one completed block at a time.

use std::time::Duration;

use anyhow::Context;
use drainguard_bus::Position;
use drainguard_model::{Event, EventKind, Timestamp};
use drainguard_sim::{Record, generate};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{config::SimSource, reload::EventSender};

/// Generates the scenario (starting now) off the async threads.
pub(crate) async fn prepare(source: &SimSource) -> anyhow::Result<Vec<Record>> {
    let mut sim = source.sim.clone();
    // Whole seconds keep scenario times readable in logs and reports.
    sim.start = Timestamp::from_unix_secs(Timestamp::now().0 / 1_000_000_000);
    tokio::task::spawn_blocking(move || generate(&sim))
        .await
        .context("the simulator panicked")
}

/// Plays the records onto the bus until they run out or shutdown.
pub(crate) async fn play(
    records: Vec<Record>,
    speed: f64,
    bus: EventSender,
    on_started: impl FnOnce() + Send,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Some(first) = records.first().map(|r| r.t) else {
        return Ok(());
    };
    let origin = Instant::now();
    on_started();
    tracing::info!(message = "simulator playing", records = records.len(), speed, start = %first);
    for r in records {
        let offset = r.t.seconds_since(first).max(0.0) / speed;
        let due = origin + Duration::from_secs_f64(offset);
        if due > Instant::now() {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(due) => {}
            }
        }
        let completes = match &r.kind {
            EventKind::Head(h) => Some(Position {
                chain: h.chain.clone(),
                block: h.block,
                hash: h.hash.clone(),
            }),
            _ => None,
        };
        let event = Event {
            t: r.t,
            kind: r.kind,
        };
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            sent = bus.send(event, completes) => sent.context("sending to the engine")?,
        }
    }
    tracing::info!(message = "simulated traffic finished; idling until shutdown");
    shutdown.cancelled().await;
    Ok(())
}
