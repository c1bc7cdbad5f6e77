//! The bus over Kafka, for running watchers and engines on different hosts.
//!
//! The watch side ([`Publisher`]) takes the events the sources put on an
//! in-process bus and produces them to one topic, keyed by the exchange
//! wallet they concern, so one wallet's events stay in order on one
//! partition and several engines in one consumer group share the wallets.
//! Events that every engine needs (wallet declarations, chain heads,
//! prices) go to every partition, and a move between two of the exchange's
//! wallets to both wallets' partitions; the copies of one event carry one
//! id, so an engine that reads several partitions evaluates it once.
//!
//! Nothing is acknowledged before it is durable, end to end:
//! - a block's checkpoint is handed back to the watcher only once the
//!   broker has acknowledged every message up to the block's last event
//!   (idempotent producer, `acks=all`);
//! - the engine side ([`Subscriber`]) puts each message on the engine's
//!   in-process bus with an [`Ack`]; the engine acknowledges once the
//!   event is evaluated and its findings and freezes are in the store, and
//!   only then is the message's offset stored for the next commit. A crash
//!   re-reads from the last committed offset (freezes are idempotent).
//!
//! A message is one scenario record, the JSON Lines format of DESIGN.md,
//! without its newline: readable with any Kafka tool, and decoded by the
//! same strict reader as a scenario file.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use drainguard_model::{Address, Chain, Event, EventKind};
use drainguard_sim::{ScenarioReader, event_to_json};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use rdkafka::{
    ClientConfig, ClientContext, Message as _, Statistics,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{Consumer, ConsumerContext, StreamConsumer},
    error::{KafkaError as RdError, RDKafkaErrorCode},
    message::{Header, Headers, OwnedHeaders},
    producer::{DeliveryFuture, FutureProducer, FutureRecord},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Ack, Acknowledge, BusReceiver, BusSender, Closed, Message, Position};

/// Metric names of the Kafka bus, in one place.
pub mod metric {
    /// Messages the broker acknowledged, by topic.
    pub const PRODUCED: &str = "drainguard_kafka_produced_total";
    /// Messages read, by topic.
    pub const CONSUMED: &str = "drainguard_kafka_consumed_total";
    /// Messages that are not a valid record, by topic (logged with their
    /// partition and offset, then passed over).
    pub const UNREADABLE: &str = "drainguard_kafka_unreadable_total";
    /// Messages on the broker past the group's committed offset, by topic
    /// and partition (partitions are few: a low-cardinality label).
    pub const CONSUMER_LAG: &str = "drainguard_kafka_consumer_lag_messages";
}

/// The header carrying the id of an event sent more than once (to every
/// partition, or to two wallets' partitions).
const COPY_HEADER: &str = "drainguard-copy";
/// How many copy ids an engine remembers to drop the other copies: far
/// more than can be in flight between partitions.
const COPY_MEMORY: usize = 65_536;
/// How often the client reports its statistics (the consumer lag).
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Messages produced but not yet acknowledged by the broker, at most: the
/// publisher waits beyond this, so a slow broker slows the sources down.
const IN_FLIGHT: usize = 10_000;
/// How long to wait for the broker when creating or describing the topic.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where and how the bus runs on Kafka (checked by the daemon's config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`: `host:port`, comma-separated.
    pub brokers: String,
    /// The events topic.
    pub topic: String,
    /// The engines' consumer group.
    pub group: String,
    /// Partitions of the topic when drainguard creates it.
    pub partitions: i32,
    /// Its replication factor when drainguard creates it.
    pub replication: i32,
    /// How long the producer keeps trying to deliver a message before the
    /// watcher stops (its checkpoint has not passed the message).
    pub delivery_timeout: Duration,
}

/// What went wrong on the Kafka bus.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The client could not be created or configured.
    #[error("kafka client for {brokers}: {source}")]
    Client {
        /// The brokers.
        brokers: String,
        /// The client's error.
        #[source]
        source: RdError,
    },
    /// The topic could not be created or described.
    #[error("kafka topic {topic}: {message}")]
    Topic {
        /// The topic.
        topic: String,
        /// What happened.
        message: String,
    },
    /// A message could not be delivered.
    #[error("kafka topic {topic}: delivery failed: {source}")]
    Delivery {
        /// The topic.
        topic: String,
        /// The client's error.
        #[source]
        source: RdError,
    },
    /// The broker acknowledged a block, and the watcher could not record
    /// it.
    #[error("recording the checkpoint of {chain} block {block}: {message}")]
    Checkpoint {
        /// The chain.
        chain: String,
        /// The block.
        block: u64,
        /// What happened.
        message: String,
    },
    /// Subscribing the consumer failed.
    #[error("kafka topic {topic}: subscribing group {group}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// The client's error.
        #[source]
        source: RdError,
    },
}

/// The Kafka bus's metrics.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    produced: IntCounterVec,
    consumed: IntCounterVec,
    unreadable: IntCounterVec,
    lag: IntGaugeVec,
}

impl KafkaMetrics {
    /// Registers the metrics.
    pub fn register(registry: &Registry) -> Result<KafkaMetrics, prometheus::Error> {
        let counter = |name: &str, help: &str| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), &["topic"])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let lag = IntGaugeVec::new(
            Opts::new(
                metric::CONSUMER_LAG,
                "Messages on the broker past the consumer group's committed offset",
            ),
            &["topic", "partition"],
        )?;
        registry.register(Box::new(lag.clone()))?;
        Ok(KafkaMetrics {
            produced: counter(metric::PRODUCED, "Messages the broker acknowledged")?,
            consumed: counter(metric::CONSUMED, "Messages read from the broker")?,
            unreadable: counter(
                metric::UNREADABLE,
                "Messages that are not a valid record (logged, passed over)",
            )?,
            lag,
        })
    }

    /// Shows the topic's counters at zero before the first message.
    fn init(&self, topic: &str) {
        for c in [&self.produced, &self.consumed, &self.unreadable] {
            c.with_label_values(&[topic]);
        }
    }
}

fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers)
        .set("client.id", "drainguard");
    c
}

fn client_error(settings: &KafkaSettings) -> impl FnOnce(RdError) -> KafkaError + '_ {
    move |source| KafkaError::Client {
        brokers: settings.brokers.clone(),
        source,
    }
}

/// Creates the topic if it does not exist and returns its partition count.
pub async fn ensure_topic(settings: &KafkaSettings) -> Result<i32, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings)
        .create()
        .map_err(client_error(settings))?;
    let topic_error = |message: String| KafkaError::Topic {
        topic: settings.topic.clone(),
        message,
    };
    let new = NewTopic::new(
        &settings.topic,
        settings.partitions,
        TopicReplication::Fixed(settings.replication),
    );
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin.create_topics([&new], &options).await.map_err(|e| {
        topic_error(format!(
            "creating it on {}: {e} (is a broker reachable there?)",
            settings.brokers
        ))
    })?;
    for r in results {
        match r {
            Ok(_) => {
                tracing::info!(message = "kafka topic created", topic = %settings.topic, partitions = settings.partitions)
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(topic_error(format!("creating: {code}"))),
        }
    }
    partitions_of(admin.inner(), settings).await
}

/// The topic's partition count, waiting (up to the admin timeout) for a
/// new topic to show in the metadata.
async fn partitions_of<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    settings: &KafkaSettings,
) -> Result<i32, KafkaError> {
    let started = std::time::Instant::now();
    loop {
        let md = client
            .fetch_metadata(Some(&settings.topic), Duration::from_secs(5))
            .map_err(|e| KafkaError::Topic {
                topic: settings.topic.clone(),
                message: format!(
                    "reading its metadata from {}: {e} (is a broker reachable there?)",
                    settings.brokers
                ),
            })?;
        let n = md
            .topics()
            .iter()
            .find(|t| t.name() == settings.topic && t.error().is_none())
            .map_or(0, |t| t.partitions().len());
        if n > 0 {
            return i32::try_from(n).map_err(|_| KafkaError::Topic {
                topic: settings.topic.clone(),
                message: format!("{n} partitions"),
            });
        }
        if started.elapsed() > ADMIN_TIMEOUT {
            return Err(KafkaError::Topic {
                topic: settings.topic.clone(),
                message: "has no partitions in the broker's metadata".to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Which partitions a message goes to.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The partition of this key (the wallet's address).
    Keyed(String),
    /// The partitions of both keys: a move between two of the exchange's
    /// wallets is an outflow of one and an inflow (a new balance) of the
    /// other, whichever engines hold them.
    Both(String, String),
    /// Every partition (a wallet declaration, a head, a price).
    Broadcast,
}

/// Decides where each event goes: by the exchange wallet it concerns.
/// Learns the exchange's wallets from their declarations, which the
/// sources send before any transfer of theirs.
#[derive(Debug, Default)]
struct Router {
    wallets: HashMap<Chain, HashSet<Address>>,
}

impl Router {
    fn route(&mut self, kind: &EventKind) -> Route {
        let key = |a: &Address| Route::Keyed(a.as_str().to_string());
        match kind {
            EventKind::Wallet(w) => {
                self.wallets
                    .entry(w.chain.clone())
                    .or_default()
                    .insert(w.address.clone());
                Route::Broadcast
            }
            EventKind::Head(_) | EventKind::Price(_) => Route::Broadcast,
            EventKind::Balance(b) => key(&b.wallet),
            EventKind::Intent(i) => key(&i.wallet),
            // An outflow goes with its sender, an inflow with its receiver,
            // a move between two of the exchange's wallets with both.
            EventKind::Transfer(t) => {
                let ours = |a: &Address| self.wallets.get(&t.chain).is_some_and(|w| w.contains(a));
                match (ours(&t.from), ours(&t.to)) {
                    (true, true) if t.from != t.to => {
                        Route::Both(t.from.as_str().to_string(), t.to.as_str().to_string())
                    }
                    (true, _) => key(&t.from),
                    (false, _) => key(&t.to),
                }
            }
            EventKind::Approval(a) => key(&a.owner),
            EventKind::Admin(a) => key(&a.wallet),
        }
    }
}

/// Encodes an event as one scenario record (no newline), plus the
/// asset's decimals, which a scenario leaves at 18: the record's amount
/// strings carry the exact base units either way, and `decimals` says
/// what a base unit is (an EVM watcher's USDT has 6).
pub fn encode(event: &Event) -> Result<Vec<u8>, serde_json::Error> {
    let mut map = event_to_json(event.t, &event.kind, None);
    match &event.kind {
        EventKind::Transfer(t) => {
            map.insert(DECIMALS.into(), t.decimals.into());
        }
        EventKind::Balance(b) => {
            map.insert(DECIMALS.into(), b.decimals.into());
        }
        EventKind::Intent(i) => {
            map.insert(DECIMALS.into(), i.decimals.into());
        }
        EventKind::Wallet(w) if !w.balances.is_empty() => {
            let per_asset = w
                .balances
                .iter()
                .map(|b| (b.asset.to_string(), b.decimals.into()))
                .collect();
            map.insert(DECIMALS.into(), serde_json::Value::Object(per_asset));
        }
        _ => {}
    }
    serde_json::to_vec(&map)
}

/// The field carrying the decimals of a message's amounts.
const DECIMALS: &str = "decimals";

/// Decodes one message: exactly one valid record, with `decimals` where
/// its kind has amounts (18, as in a scenario file, if it is left out).
pub fn decode(payload: &[u8]) -> Result<Event, String> {
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(payload).map_err(|e| format!("not one JSON object: {e}"))?;
    let decimals = map.remove(DECIMALS);
    let text = serde_json::to_vec(&map).map_err(|e| e.to_string())?;
    let mut reader = ScenarioReader::new(text.as_slice());
    let record = match reader.next() {
        Some(Ok(r)) => r,
        Some(Err(e)) => return Err(e.to_string()),
        None => return Err("no record in the message".to_string()),
    };
    let mut kind = record.kind;
    let one = |v: &serde_json::Value| {
        v.as_u64()
            .and_then(|d| u8::try_from(d).ok())
            .filter(|d| *d <= MAX_DECIMALS)
            .ok_or_else(|| {
                format!("field `{DECIMALS}`: {v} is not an integer in 0..={MAX_DECIMALS}")
            })
    };
    match (&mut kind, &decimals) {
        (_, None) => {}
        (EventKind::Transfer(t), Some(v)) => t.decimals = one(v)?,
        (EventKind::Balance(b), Some(v)) => b.decimals = one(v)?,
        (EventKind::Intent(i), Some(v)) => i.decimals = one(v)?,
        (EventKind::Wallet(w), Some(serde_json::Value::Object(per_asset))) => {
            for b in &mut w.balances {
                if let Some(v) = per_asset.get(b.asset.as_str()) {
                    b.decimals = one(v)?;
                }
            }
        }
        (_, Some(_)) => {
            return Err(format!(
                "field `{DECIMALS}`: not expected on a {} record",
                kind.name()
            ));
        }
    }
    Ok(Event { t: record.t, kind })
}

/// The most decimals an amount can have (2²⁵⁶ has 78 digits).
const MAX_DECIMALS: u8 = 77;

/// A block's events handed to the broker, and the checkpoint to record
/// once every one of them (and every earlier message) is acknowledged.
struct Sent {
    deliveries: Vec<DeliveryFuture>,
    completes: Option<Position>,
}

/// The watch side: produces the sources' events to the topic.
pub struct Publisher {
    settings: KafkaSettings,
    producer: FutureProducer,
    partitions: i32,
    router: Router,
    run_id: String,
    seq: u64,
    metrics: KafkaMetrics,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("settings", &self.settings)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects a producer (idempotent, `acks=all`) and makes sure the
    /// topic exists.
    pub async fn connect(
        settings: KafkaSettings,
        metrics: KafkaMetrics,
    ) -> Result<Publisher, KafkaError> {
        let partitions = ensure_topic(&settings).await?;
        let producer: FutureProducer = client_config(&settings)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                settings.delivery_timeout.as_millis().to_string(),
            )
            .create()
            .map_err(client_error(&settings))?;
        metrics.init(&settings.topic);
        tracing::info!(message = "kafka publisher connected", brokers = %settings.brokers, topic = %settings.topic, partitions);
        let run_id = format!(
            "{}-{}",
            std::process::id(),
            drainguard_model::Timestamp::now().0
        );
        Ok(Publisher {
            settings,
            producer,
            partitions,
            router: Router::default(),
            run_id,
            seq: 0,
            metrics,
        })
    }

    /// Produces every event from `bus` until it closes (the sources are
    /// done) and every message is acknowledged. `on_durable` is called with
    /// each completed block's position once the broker holds all of it, in
    /// order: that is when the watcher's checkpoint may move.
    pub async fn run<C>(
        mut self,
        mut bus: BusReceiver<C>,
        on_durable: impl FnMut(&Position) -> Result<(), String> + Send + 'static,
    ) -> Result<(), KafkaError> {
        let (tx, rx) = mpsc::channel::<Sent>(IN_FLIGHT);
        let confirm = tokio::spawn(confirm(
            rx,
            on_durable,
            self.settings.topic.clone(),
            self.metrics.clone(),
        ));
        let mut result = Ok(());
        while let Some(message) = bus.recv().await {
            let Message::Event(envelope) = message else {
                continue;
            };
            let deliveries = match self.produce(&envelope.event).await {
                Ok(d) => d,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            let sent = Sent {
                deliveries,
                completes: envelope.completes,
            };
            if tx.send(sent).await.is_err() {
                // The confirmer stopped on an error: it says which.
                break;
            }
        }
        drop(tx);
        let confirmed = confirm.await.map_err(|e| KafkaError::Topic {
            topic: self.settings.topic.clone(),
            message: format!("the delivery confirmer panicked: {e}"),
        });
        result.and(confirmed?)
    }

    /// Hands one event to the producer: once, or once per partition.
    async fn produce(&mut self, event: &Event) -> Result<Vec<DeliveryFuture>, KafkaError> {
        // Cannot fail for a map of strings and numbers; were it to, the
        // watcher stops short of the event rather than send it empty.
        let payload = encode(event).map_err(|e| KafkaError::Topic {
            topic: self.settings.topic.clone(),
            message: format!("encoding a {} event: {e}", event.kind.name()),
        })?;
        match self.router.route(&event.kind) {
            Route::Keyed(key) => {
                let record = FutureRecord::<str, [u8]>::to(&self.settings.topic)
                    .key(key.as_str())
                    .payload(payload.as_slice());
                Ok(vec![self.enqueue(record).await?])
            }
            Route::Both(from, to) => {
                let id = self.copy_id();
                let mut out = Vec::with_capacity(2);
                for key in [&from, &to] {
                    let record = FutureRecord::<str, [u8]>::to(&self.settings.topic)
                        .key(key.as_str())
                        .payload(payload.as_slice())
                        .headers(copy_header(&id));
                    out.push(self.enqueue(record).await?);
                }
                Ok(out)
            }
            Route::Broadcast => {
                let id = self.copy_id();
                let mut out = Vec::with_capacity(usize::try_from(self.partitions).unwrap_or(1));
                for p in 0..self.partitions {
                    let record = FutureRecord::<str, [u8]>::to(&self.settings.topic)
                        .partition(p)
                        .payload(payload.as_slice())
                        .headers(copy_header(&id));
                    out.push(self.enqueue(record).await?);
                }
                Ok(out)
            }
        }
    }

    /// A new id for the copies of one event.
    fn copy_id(&mut self) -> String {
        self.seq += 1;
        format!("{}:{}", self.run_id, self.seq)
    }

    /// Queues a record, waiting while the producer's queue is full.
    async fn enqueue<'a>(
        &self,
        mut record: FutureRecord<'a, str, [u8]>,
    ) -> Result<DeliveryFuture, KafkaError> {
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, _)) => {
                    return Err(KafkaError::Delivery {
                        topic: self.settings.topic.clone(),
                        source,
                    });
                }
            }
        }
    }
}

/// The header marking one copy of an event sent more than once.
fn copy_header(id: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: COPY_HEADER,
        value: Some(id),
    })
}

/// Waits for the broker's acknowledgements in the order the messages were
/// produced, and hands each completed block on.
async fn confirm(
    mut rx: mpsc::Receiver<Sent>,
    mut on_durable: impl FnMut(&Position) -> Result<(), String>,
    topic: String,
    metrics: KafkaMetrics,
) -> Result<(), KafkaError> {
    let produced = metrics.produced.with_label_values(&[topic.as_str()]);
    while let Some(sent) = rx.recv().await {
        for d in sent.deliveries {
            match d.await {
                Ok(Ok(_)) => produced.inc(),
                Ok(Err((source, _))) => {
                    return Err(KafkaError::Delivery {
                        topic: topic.clone(),
                        source,
                    });
                }
                Err(_) => {
                    return Err(KafkaError::Delivery {
                        topic: topic.clone(),
                        source: RdError::Canceled,
                    });
                }
            }
        }
        if let Some(p) = &sent.completes {
            on_durable(p).map_err(|message| KafkaError::Checkpoint {
                chain: p.chain.to_string(),
                block: p.block,
                message,
            })?;
        }
    }
    Ok(())
}

/// Receives the client's statistics: the consumer lag per partition.
struct LagContext {
    topic: String,
    lag: IntGaugeVec,
    shown: Mutex<HashSet<i32>>,
    /// The partitions this engine holds: only theirs is its lag to show
    /// (the client's statistics go on listing a partition handed away).
    assigned: Mutex<HashSet<i32>>,
    generations: Arc<Generations>,
}

/// Each partition's assignment generation, moved on every revoke. The
/// messages read before a revoke may still wait on the engine's bus; once
/// evaluated, their offsets must not be stored: the partition's next owner
/// (this engine again, most often) reads on from the last commit, and a
/// late store would move its offset back, or past messages it has not yet
/// evaluated.
#[derive(Debug, Default)]
struct Generations(Mutex<HashMap<i32, u64>>);

impl Generations {
    fn current(&self, partition: i32) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&partition)
            .copied()
            .unwrap_or(0)
    }

    fn revoked(&self, partition: i32) {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(partition)
            .or_default() += 1;
    }
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        let mut now = HashSet::new();
        if let Some(t) = statistics.topics.get(&self.topic) {
            // Partition -1 is the client's internal "unassigned" queue; a
            // lag of -1 means not known yet (no committed offset or no
            // high watermark).
            let assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
            for p in t.partitions.values() {
                if p.partition >= 0 && p.consumer_lag >= 0 && assigned.contains(&p.partition) {
                    self.lag
                        .with_label_values(&[self.topic.as_str(), &p.partition.to_string()])
                        .set(p.consumer_lag);
                    now.insert(p.partition);
                }
            }
        }
        // A partition handed to another engine is no longer ours to show.
        for gone in shown.difference(&now) {
            let _removed = self
                .lag
                .remove_label_values(&[self.topic.as_str(), &gone.to_string()]);
        }
        *shown = now;
    }
}

impl ConsumerContext for LagContext {
    // Before the partitions go: from here on, acknowledgements of what was
    // read from them are not stored.
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            for e in tpl.elements_for_topic(&self.topic) {
                self.generations.revoked(e.partition());
            }
        }
    }

    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        use rdkafka::consumer::Rebalance;
        let list = |tpl: &rdkafka::TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| e.partition().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        // Which wallets this engine evaluates changes with its partitions:
        // an operator reading the log should see it.
        let mut assigned = self.assigned.lock().unwrap_or_else(PoisonError::into_inner);
        match rebalance {
            Rebalance::Assign(tpl) => {
                assigned.extend(
                    tpl.elements_for_topic(&self.topic)
                        .iter()
                        .map(|e| e.partition()),
                );
                tracing::info!(message = "kafka partitions assigned", topic = %self.topic, partitions = %list(tpl));
            }
            Rebalance::Revoke(tpl) => {
                for e in tpl.elements_for_topic(&self.topic) {
                    assigned.remove(&e.partition());
                }
                tracing::info!(message = "kafka partitions revoked", topic = %self.topic, partitions = %list(tpl));
            }
            Rebalance::Error(e) => {
                tracing::warn!(message = "kafka rebalance failed", topic = %self.topic, error = %e);
            }
        }
    }
}

/// Stores an evaluated message's offset for the next commit, if it was
/// read in its partition's current assignment generation.
struct OffsetStore {
    consumer: Arc<StreamConsumer<LagContext>>,
    topic: String,
    generations: Arc<Generations>,
    /// The generation the messages acknowledged through this were read in.
    generation: u64,
}

impl Acknowledge for OffsetStore {
    fn acknowledge(&self, partition: i32, offset: i64) {
        // Read before a revoke: the partition is read again from its last
        // commit (by this engine or another), so the message is evaluated
        // again rather than lost, and no offset moves back.
        if self.generations.current(partition) != self.generation {
            tracing::debug!(
                message = "offset of a message read before a rebalance not stored",
                partition,
                offset
            );
            return;
        }
        if let Err(e) = self.consumer.store_offset(&self.topic, partition, offset) {
            tracing::info!(message = "offset not stored", topic = %self.topic, partition, offset, error = %e);
        }
    }
}

/// One acknowledgement target per generation in use, so a message's ack
/// costs no allocation.
struct AckTargets {
    consumer: Arc<StreamConsumer<LagContext>>,
    topic: String,
    generations: Arc<Generations>,
    by_generation: HashMap<u64, Arc<dyn Acknowledge>>,
}

impl AckTargets {
    fn ack(&mut self, partition: i32, offset: i64) -> Ack {
        let generation = self.generations.current(partition);
        if self.by_generation.len() > 64 {
            // Generations only grow: the old ones' targets live on in the
            // acks that hold them.
            self.by_generation.clear();
        }
        let to = self
            .by_generation
            .entry(generation)
            .or_insert_with(|| {
                Arc::new(OffsetStore {
                    consumer: self.consumer.clone(),
                    topic: self.topic.clone(),
                    generations: self.generations.clone(),
                    generation,
                })
            })
            .clone();
        Ack::new(to, partition, offset)
    }
}

/// The engine side: reads the topic in the consumer group and puts each
/// event on the engine's bus with its acknowledgement.
pub struct Subscriber {
    settings: KafkaSettings,
    consumer: Arc<StreamConsumer<LagContext>>,
    metrics: KafkaMetrics,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// Joins the consumer group on the topic (created if missing). Offsets
    /// are committed automatically, but only those the engine stored after
    /// its work was durable; a group with no commit starts at the earliest
    /// message, so nothing produced before the first engine is missed.
    pub async fn connect(
        settings: KafkaSettings,
        metrics: KafkaMetrics,
    ) -> Result<Subscriber, KafkaError> {
        ensure_topic(&settings).await?;
        let context = LagContext {
            topic: settings.topic.clone(),
            lag: metrics.lag.clone(),
            shown: Mutex::new(HashSet::new()),
            assigned: Mutex::new(HashSet::new()),
            generations: Arc::default(),
        };
        let consumer: StreamConsumer<LagContext> = client_config(&settings)
            .set("group.id", &settings.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "statistics.interval.ms",
                STATS_EVERY.as_millis().to_string(),
            )
            .create_with_context(context)
            .map_err(client_error(&settings))?;
        consumer
            .subscribe(&[&settings.topic])
            .map_err(|source| KafkaError::Subscribe {
                topic: settings.topic.clone(),
                group: settings.group.clone(),
                source,
            })?;
        metrics.init(&settings.topic);
        tracing::info!(message = "kafka subscriber joined", brokers = %settings.brokers, topic = %settings.topic, group = %settings.group);
        Ok(Subscriber {
            settings,
            consumer: Arc::new(consumer),
            metrics,
        })
    }

    /// Reads until cancelled or the engine stops. A message that is not a
    /// valid record is logged with its partition and offset, counted, and
    /// passed over: nothing could evaluate it, and stopping on it would
    /// stop every event behind it.
    pub async fn run<C>(self, bus: BusSender<C>, token: CancellationToken) -> Result<(), Closed> {
        let topic = self.settings.topic.clone();
        let mut acks = AckTargets {
            consumer: self.consumer.clone(),
            topic: topic.clone(),
            generations: self.consumer.context().generations.clone(),
            by_generation: HashMap::new(),
        };
        let consumed = self.metrics.consumed.with_label_values(&[topic.as_str()]);
        let unreadable = self.metrics.unreadable.with_label_values(&[topic.as_str()]);
        let mut seen = SeenCopies::default();
        loop {
            let m = tokio::select! {
                () = token.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    // The client reconnects by itself; a pause keeps a
                    // broker outage from flooding the log.
                    tracing::warn!(message = "kafka consumer error", topic = %topic, error = %e);
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            };
            consumed.inc();
            let ack = acks.ack(m.partition(), m.offset());
            let copy = m.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == COPY_HEADER)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            // Acknowledged in order with the events before it: an offset
            // stored early would let a crash skip those.
            if let Some(id) = copy
                && !seen.first(id)
            {
                bus.pass(ack).await?;
                continue;
            }
            match decode(m.payload().unwrap_or_default()) {
                Ok(event) => bus.send_acked(event, ack).await?,
                Err(e) => {
                    unreadable.inc();
                    tracing::error!(message = "kafka message is not a valid record; passed over", topic = %topic, partition = m.partition(), offset = m.offset(), error = %e);
                    bus.pass(ack).await?;
                }
            }
        }
        Ok(())
    }
}

/// The copy ids seen lately, oldest first out.
#[derive(Debug, Default)]
struct SeenCopies {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl SeenCopies {
    /// Whether this is the first copy seen.
    fn first(&mut self, id: String) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if self.order.len() >= COPY_MEMORY
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drainguard_model::{Amount, Asset, Head, Stage, Timestamp, Transfer, TxHash, WalletDecl};

    /// Event kinds per key, for tests of the routing.
    fn by_key(events: &[Event]) -> HashMap<String, Vec<&'static str>> {
        let mut router = Router::default();
        let mut out = HashMap::<String, Vec<&'static str>>::new();
        for e in events {
            let key = match router.route(&e.kind) {
                Route::Keyed(k) => k,
                Route::Both(a, b) => format!("{a}+{b}"),
                Route::Broadcast => "*".to_string(),
            };
            out.entry(key).or_default().push(e.kind.name());
        }
        out
    }

    fn wallet(a: &str) -> Event {
        Event {
            t: Timestamp(1),
            kind: EventKind::Wallet(WalletDecl {
                chain: Chain::new("ethereum"),
                address: Address::new(a),
                name: "hot".to_string(),
                role: drainguard_model::WalletRole::Hot,
                balances: Vec::new(),
            }),
        }
    }

    fn transfer(from: &str, to: &str) -> Event {
        Event {
            t: Timestamp(2),
            kind: EventKind::Transfer(Transfer {
                chain: Chain::new("ethereum"),
                tx_hash: TxHash::new("0xabc"),
                index: 0,
                stage: Stage::Included,
                block: Some(7),
                from: Address::new(from),
                to: Address::new(to),
                asset: Asset::new("ETH"),
                token: None,
                amount: Amount::from_base_units(123_456_789_000_000_000_000),
                decimals: 6,
            }),
        }
    }

    #[test]
    fn events_go_with_the_exchange_wallet_and_declarations_to_every_partition() {
        let head = Event {
            t: Timestamp(3),
            kind: EventKind::Head(Head {
                chain: Chain::new("ethereum"),
                block: 7,
                hash: "0x07".to_string(),
            }),
        };
        let events = [
            wallet("0xhot"),
            wallet("0xcold"),
            transfer("0xhot", "0xthief"),
            transfer("0xuser", "0xhot"),
            transfer("0xcold", "0xhot"),
            head,
        ];
        let got = by_key(&events);
        assert_eq!(got["*"], ["wallet", "wallet", "head"]);
        assert_eq!(
            got["0xhot"],
            ["transfer", "transfer"],
            "an outflow goes with its sender, an inflow with its receiver"
        );
        assert_eq!(
            got["0xcold+0xhot"],
            ["transfer"],
            "a top-up from cold to hot reaches both wallets' engines"
        );
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn a_message_is_one_record_and_decodes_to_the_same_event_decimals_and_all() {
        let e = transfer("0xhot", "0xthief");
        let bytes = encode(&e).unwrap();
        assert!(!bytes.contains(&b'\n'));
        assert_eq!(decode(&bytes), Ok(e), "a 6-decimal amount stays exact");
        let mut w = wallet("0xhot");
        if let EventKind::Wallet(d) = &mut w.kind {
            d.balances.push(drainguard_model::BalanceObs {
                chain: Chain::new("ethereum"),
                wallet: Address::new("0xhot"),
                asset: Asset::new("USDT"),
                amount: Amount::from_base_units(5_000_000_000_000),
                decimals: 6,
            });
        }
        assert_eq!(decode(&encode(&w).unwrap()), Ok(w));
    }

    #[test]
    fn a_scenario_line_is_a_valid_message_with_18_decimals() {
        let line = br#"{"t":"2023-09-12T00:00:00Z","kind":"transfer","chain":"ethereum","tx_hash":"0x1","index":0,"stage":"included","block":7,"from":"0xhot","to":"0xthief","asset":"ETH","amount":"1.5"}"#;
        let EventKind::Transfer(t) = decode(line).unwrap().kind else {
            panic!("a transfer")
        };
        assert_eq!(t.decimals, 18);
        assert_eq!(t.amount, Amount::from_base_units(1_500_000_000_000_000_000));
    }

    #[test]
    fn a_message_that_is_not_one_record_is_refused_with_its_cause() {
        let e = encode(&transfer("0xhot", "0xthief")).unwrap();
        let mut two = e.clone();
        two.push(b'\n');
        two.extend_from_slice(&e);
        assert!(decode(&two).unwrap_err().contains("not one JSON object"));
        assert!(decode(b"").unwrap_err().contains("not one JSON object"));
        let bad = decode(br#"{"t":"2023-09-12T00:00:00Z","kind":"transfer"}"#).unwrap_err();
        assert!(bad.contains("field"), "{bad}");
        assert!(decode(b"\xff\xfe").is_err());
        let mut six = serde_json::from_slice::<serde_json::Value>(&e).unwrap();
        six["decimals"] = 300.into();
        let bad = decode(&serde_json::to_vec(&six).unwrap()).unwrap_err();
        assert!(bad.contains("field `decimals`"), "{bad}");
        let head = br#"{"t":"2023-09-12T00:00:00Z","kind":"head","chain":"ethereum","block":7,"hash":"0x7","decimals":6}"#;
        assert!(decode(head).unwrap_err().contains("not expected on a head"));
    }

    #[test]
    fn an_event_sent_more_than_once_is_evaluated_once_however_many_copies_arrive() {
        let mut seen = SeenCopies::default();
        assert!(seen.first("r:1".into()));
        assert!(!seen.first("r:1".into()));
        assert!(seen.first("r:2".into()));
        for i in 3..(COPY_MEMORY as u64 + 3) {
            assert!(seen.first(format!("r:{i}")));
        }
        assert!(
            seen.first("r:1".into()),
            "the oldest ids are forgotten, so memory stays bounded"
        );
        assert!(seen.set.len() <= COPY_MEMORY);
    }
}
