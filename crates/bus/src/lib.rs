//! The event bus between watchers and the engine.
//!
//! In one binary it is a bounded in-process channel: a sender waits when
//! the channel is full, so a slow engine makes the watchers slow down
//! instead of losing events ("data piles up at the edge"). Each envelope
//! carries the wall-clock instant it entered the bus, so the engine can
//! measure detection latency, and the position it comes from, so the
//! engine can advance checkpoints only after the work is durable.
//!
//! The same channel carries control messages for the engine (a new rule
//! set, for one), so the engine's loop stays single-threaded and ordered:
//! a control message is handled between two events, never in the middle
//! of one, and never reorders or drops an event. The bus does not know
//! what a control message is: the engine's owner picks the type `C`.
//!
//! Control messages cannot be starved: a sender waiting for room gets it
//! in the order it asked (the channel's permits are handed out first come,
//! first served), so a control message waits behind at most the events
//! already in the bus and the sends that were already waiting, however
//! fast the watchers keep sending. A [`ControlSender`] does not keep the
//! bus open: the engine stops once every [`BusSender`] is gone, whoever
//! still holds a control handle.
//!
//! Across hosts the same events go through Kafka ([`kafka`]): each event
//! read from the broker carries an [`Ack`], which the engine gives back
//! once the event is evaluated and its effects are durable.

pub mod kafka;

use std::{fmt, sync::Arc, time::Instant};

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
#[derive(Debug)]
pub struct Envelope {
    /// The event.
    pub event: Event,
    /// When it entered the bus.
    pub sent_at: Instant,
    /// Set on the last event of a block: the checkpoint it completes.
    pub completes: Option<Position>,
    /// Where the event came from, to be told once its work is durable
    /// (events read from Kafka); `None` for the in-process bus.
    pub ack: Option<Ack>,
}

/// Told that the work of an event is durable (its source may forget it).
pub trait Acknowledge: Send + Sync {
    /// The event at `offset` of `partition` is done.
    fn acknowledge(&self, partition: i32, offset: i64);
}

/// The acknowledgement an event carries back to its source, once (it is
/// not `Clone`). Dropping it unacknowledged leaves the event to be
/// delivered again.
pub struct Ack {
    to: Arc<dyn Acknowledge>,
    partition: i32,
    offset: i64,
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack")
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .finish()
    }
}

impl Ack {
    /// An acknowledgement of the event at `offset` of `partition`.
    pub fn new(to: Arc<dyn Acknowledge>, partition: i32, offset: i64) -> Ack {
        Ack {
            to,
            partition,
            offset,
        }
    }

    /// The event's work is durable.
    pub fn done(self) {
        self.to.acknowledge(self.partition, self.offset);
    }
}

/// What the engine receives: an event, or a control message for the
/// engine's owner to act on between two events.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "events are the common case: boxing them would cost an allocation each"
)]
pub enum Message<C> {
    /// An event from a watcher.
    Event(Envelope),
    /// A control message (its type is the engine owner's).
    Control(C),
    /// A message read from the source that needs no evaluation (another
    /// copy of a broadcast, or one that is not a valid record): the engine
    /// acknowledges it in its turn, so acknowledgements stay in order.
    Pass(Ack),
}

/// The bus was closed: the engine has stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event bus is closed (the engine stopped)")]
pub struct Closed;

/// The sending side of events; cheap to clone, one per watcher. The bus
/// stays open while one exists.
pub struct BusSender<C> {
    tx: mpsc::Sender<Message<C>>,
}

/// The sending side of control messages; cheap to clone. It does not keep
/// the bus open.
pub struct ControlSender<C> {
    tx: mpsc::WeakSender<Message<C>>,
}

/// The receiving side, owned by the engine.
pub struct BusReceiver<C> {
    rx: mpsc::Receiver<Message<C>>,
}

// Hand-written so that `C` need not be `Clone` or `Debug`.
impl<C> Clone for BusSender<C> {
    fn clone(&self) -> Self {
        BusSender {
            tx: self.tx.clone(),
        }
    }
}

impl<C> Clone for ControlSender<C> {
    fn clone(&self) -> Self {
        ControlSender {
            tx: self.tx.clone(),
        }
    }
}

impl<C> fmt::Debug for BusSender<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusSender")
            .field("capacity", &self.capacity())
            .field("depth", &self.depth())
            .finish()
    }
}

impl<C> fmt::Debug for ControlSender<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlSender")
            .field("open", &(self.tx.strong_count() > 0))
            .finish()
    }
}

impl<C> fmt::Debug for BusReceiver<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusReceiver")
            .field("depth", &self.depth())
            .finish()
    }
}

/// A bounded bus holding at most `capacity` messages in flight.
pub fn bounded<C>(capacity: usize) -> (BusSender<C>, BusReceiver<C>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (BusSender { tx }, BusReceiver { rx })
}

impl<C> BusSender<C> {
    /// Sends an event, waiting while the bus is full.
    pub async fn send(&self, event: Event, completes: Option<Position>) -> Result<(), Closed> {
        let env = Envelope {
            event,
            sent_at: Instant::now(),
            completes,
            ack: None,
        };
        self.tx.send(Message::Event(env)).await.map_err(|_| Closed)
    }

    /// Sends an event that its receiver acknowledges once its work is
    /// durable, waiting while the bus is full.
    pub async fn send_acked(&self, event: Event, ack: Ack) -> Result<(), Closed> {
        let env = Envelope {
            event,
            sent_at: Instant::now(),
            completes: None,
            ack: Some(ack),
        };
        self.tx.send(Message::Event(env)).await.map_err(|_| Closed)
    }

    /// Sends a message that needs only acknowledging, in order behind the
    /// events before it, waiting while the bus is full.
    pub async fn pass(&self, ack: Ack) -> Result<(), Closed> {
        self.tx.send(Message::Pass(ack)).await.map_err(|_| Closed)
    }

    /// A handle for control messages to the same engine.
    pub fn control_sender(&self) -> ControlSender<C> {
        ControlSender {
            tx: self.tx.downgrade(),
        }
    }

    /// Messages waiting in the bus.
    pub fn depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The bus's capacity.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

impl<C> ControlSender<C> {
    /// Sends a control message behind the events already in the bus,
    /// waiting while the bus is full. [`Closed`] once every [`BusSender`]
    /// is gone (the engine drains what is left and stops).
    pub async fn send(&self, control: C) -> Result<(), Closed> {
        let tx = self.tx.upgrade().ok_or(Closed)?;
        tx.send(Message::Control(control)).await.map_err(|_| Closed)
    }
}

impl<C> BusReceiver<C> {
    /// The next message, waiting for one; `None` once every [`BusSender`]
    /// is gone and the bus is drained.
    pub async fn recv(&mut self) -> Option<Message<C>> {
        self.rx.recv().await
    }

    /// The next message from a synchronous thread (the engine's).
    pub fn blocking_recv(&mut self) -> Option<Message<C>> {
        self.rx.blocking_recv()
    }

    /// Messages waiting in the bus.
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

    /// What arrived, as `Ok(block)` for an event and `Err(control)`.
    fn label(m: Message<&'static str>) -> Result<u64, &'static str> {
        match m {
            Message::Event(env) => match env.event.kind {
                EventKind::Head(h) => Ok(h.block),
                other => panic!("unexpected event {other:?}"),
            },
            Message::Control(c) => Err(c),
            Message::Pass(a) => panic!("unexpected pass {a:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_bus_makes_the_sender_wait_and_loses_nothing() {
        let (tx, mut rx) = bounded::<()>(2);
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
            if let Message::Event(env) = rx.recv().await.unwrap()
                && let EventKind::Head(h) = env.event.kind
            {
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

    #[tokio::test]
    async fn a_control_message_on_a_full_bus_waits_its_turn_and_is_not_starved() {
        let (tx, mut rx) = bounded::<&'static str>(2);
        let control = tx.control_sender();
        tx.send(head(1), None).await.unwrap();
        tx.send(head(2), None).await.unwrap();
        // The bus is full: the control message waits for room...
        let ctl = tokio::spawn(async move { control.send("reload").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !ctl.is_finished(),
            "a control send waits while the bus is full"
        );
        // ...and a flood of events asked for room after it did.
        let flood = tokio::spawn({
            let tx = tx.clone();
            async move {
                for n in 3..=50 {
                    tx.send(head(n), None).await.unwrap();
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut got = Vec::new();
        while got.len() < 51 {
            got.push(label(rx.recv().await.unwrap()));
        }
        ctl.await.unwrap().unwrap();
        flood.await.unwrap();
        let mut want = vec![Ok(1), Ok(2), Err("reload")];
        want.extend((3..=50).map(Ok));
        assert_eq!(
            got, want,
            "the control message comes after the events before it and before the ones after it; no event is lost"
        );
    }

    #[tokio::test]
    async fn control_messages_keep_their_order_among_events() {
        let (tx, mut rx) = bounded::<&'static str>(16);
        let control = tx.control_sender();
        tx.send(head(1), None).await.unwrap();
        control.send("a").await.unwrap();
        tx.send(head(2), None).await.unwrap();
        control.clone().send("b").await.unwrap();
        assert_eq!(rx.depth(), 4);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(label(rx.recv().await.unwrap()));
        }
        assert_eq!(got, vec![Ok(1), Err("a"), Ok(2), Err("b")]);
    }

    #[tokio::test]
    async fn a_control_sender_does_not_keep_the_bus_open() {
        let (tx, mut rx) = bounded::<&'static str>(4);
        let control = tx.control_sender();
        tx.send(head(1), None).await.unwrap();
        drop(tx);
        assert_eq!(
            control.send("late").await,
            Err(Closed),
            "no engine will read it once the event senders are gone"
        );
        assert_eq!(
            label(rx.recv().await.unwrap()),
            Ok(1),
            "the bus still drains"
        );
        assert!(rx.recv().await.is_none(), "then closes");
        assert!(format!("{control:?}").contains("open: false"));
    }
}
