//! The event bus between watchers and the engine.
//!
//! In one binary it is a bounded in-process channel: a sender waits when
//! the channel is full, so a slow engine makes the watchers slow down
//! instead of losing events ("data piles up at the edge"). Each envelope
//! carries the wall-clock instant it entered the bus, so the engine can
//! measure detection latency, and the position it comes from, so the
//! engine can advance checkpoints only after the work is durable.

use std::time::Instant;

use drainguard_model::{Chain, Event};
use tokio::sync::mpsc;

/// Where an event comes from on its chain, for checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The chain.
    pub chain: Chain,
    /// The block that is complete once this event is processed.
    pub block: u64,
    /// Its hash.
    pub hash: String,
}

/// One event on the bus.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The event.
    pub event: Event,
    /// When it entered the bus.
    pub sent_at: Instant,
    /// Set on the last event of a block: the checkpoint it completes.
    pub completes: Option<Position>,
}

/// The bus was closed: the engine has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event bus is closed (the engine stopped)")]
pub struct Closed;

/// The sending side; cheap to clone, one per watcher.
#[derive(Debug, Clone)]
pub struct BusSender {
    tx: mpsc::Sender<Envelope>,
}

/// The receiving side, owned by the engine.
#[derive(Debug)]
pub struct BusReceiver {
    rx: mpsc::Receiver<Envelope>,
}

/// A bounded bus holding at most `capacity` events in flight.
pub fn bounded(capacity: usize) -> (BusSender, BusReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (BusSender { tx }, BusReceiver { rx })
}

impl BusSender {
    /// Sends an event, waiting while the bus is full.
    pub async fn send(&self, event: Event, completes: Option<Position>) -> Result<(), Closed> {
        let env = Envelope {
            event,
            sent_at: Instant::now(),
            completes,
        };
        self.tx.send(env).await.map_err(|_| Closed)
    }

    /// Events waiting in the bus.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The bus's capacity.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

impl BusReceiver {
    /// The next event, waiting for one; `None` once every sender is gone
    /// and the bus is drained.
    pub async fn recv(&mut self) -> Option<Envelope> {
        self.rx.recv().await
    }

    /// The next event from a synchronous thread (the engine's).
    pub fn blocking_recv(&mut self) -> Option<Envelope> {
        self.rx.blocking_recv()
    }

    /// Events waiting in the bus.
    pub fn depth(&self) -> usize {
        self.rx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drainguard_model::{EventKind, Head, Timestamp};
    use std::time::Duration;

    fn head(n: u64) -> Event {
        Event {
            t: Timestamp(0),
            kind: EventKind::Head(Head {
                chain: Chain::new("c"),
                block: n,
                hash: String::new(),
            }),
        }
    }

    #[tokio::test]
    async fn a_full_bus_makes_the_sender_wait_and_loses_nothing() {
        let (tx, mut rx) = bounded(2);
        tx.send(head(1), None).await.unwrap();
        tx.send(head(2), None).await.unwrap();
        assert_eq!(tx.depth(), 2);
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(head(3), None)).await;
        assert!(
            blocked.is_err(),
            "the third send waits while the bus is full"
        );
        let sender = tokio::spawn({
            let tx = tx.clone();
            async move {
                for n in 3..=10 {
                    tx.send(head(n), None).await.unwrap();
                }
            }
        });
        let mut got = Vec::new();
        while got.len() < 10 {
            let env = rx.recv().await.unwrap();
            if let EventKind::Head(h) = env.event.kind {
                got.push(h.block);
            }
        }
        sender.await.unwrap();
        assert_eq!(got, (1..=10).collect::<Vec<_>>(), "every event, in order");
        drop(tx);
        assert!(
            rx.recv().await.is_none(),
            "closed once every sender is gone"
        );
    }
}
