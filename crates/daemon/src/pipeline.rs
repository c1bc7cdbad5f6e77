//! Where the engine's events come from in each role: the chain sources
//! straight onto the engine's bus (`run`, the embedded default), or
//! through Kafka (`run` and `watch` publish, `run` and `engine` subscribe).

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use anyhow::Context;
use drainguard_bus::{
    Position,
    kafka::{KafkaMetrics, KafkaSettings, Publisher, Subscriber},
};
use drainguard_model::{EventKind, Timestamp};
use drainguard_sim::Record;
use drainguard_store::{Batch, Checkpoint, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{api::Health, config::Config, metrics::Metrics, reload::EventSender, tasks};

/// The tasks feeding the engine (or the broker); the daemon stops when one
/// ends.
pub(crate) type Sources = JoinSet<anyhow::Result<()>>;

/// What the sources resume from, read from the store before they start.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The simulator's generated day, if it is enabled.
    sim_records: Option<Vec<Record>>,
    /// Each EVM chain's last durable block.
    evm_resume: HashMap<String, (u64, String)>,
}

/// Generates the simulator's day (rewinding its chains' checkpoints) and
/// reads where each EVM watcher resumes.
pub(crate) async fn prepare(config: &Config, store: &mut Store) -> anyhow::Result<Prepared> {
    // The simulator's chains start at genesis on every start.
    let sim_records = match &config.sim {
        Some(sim) => {
            let records = crate::sources::sim::prepare(sim).await?;
            let chains: std::collections::BTreeSet<_> = records
                .iter()
                .filter_map(|r| {
                    if let EventKind::Wallet(w) = &r.kind {
                        Some(w.chain.clone())
                    } else {
                        None
                    }
                })
                .collect();
            for chain in chains {
                if store.checkpoint(&chain)?.is_some() {
                    store.rewind_checkpoint(
                        &chain,
                        &Checkpoint {
                            block: 0,
                            hash: String::new(),
                        },
                        "the simulator restarts its chains at genesis",
                    )?;
                }
            }
            Some(records)
        }
        None => None,
    };

    // A checkpoint that cannot be read stops the start: resuming from the
    // chain's head instead would pass over the blocks since the last one.
    let mut evm_resume = HashMap::new();
    for src in &config.evm {
        let checkpoint = store
            .checkpoint(&src.chain.name)
            .with_context(|| format!("reading the checkpoint of chain {}", src.chain.name))?;
        if let Some(cp) = checkpoint {
            evm_resume.insert(src.chain.name.to_string(), (cp.block, cp.hash));
        }
    }
    Ok(Prepared {
        sim_records,
        evm_resume,
    })
}

/// Starts the chain sources, each sending to `bus`.
pub(crate) fn spawn_sources(
    config: &Config,
    prepared: Prepared,
    bus: &EventSender,
    metrics: &Metrics,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
    sources: &mut Sources,
) -> anyhow::Result<()> {
    let rpc_metrics = if config.evm.is_empty() {
        None
    } else {
        Some(
            drainguard_evm::EvmMetrics::register(metrics.registry())
                .context("registering the EVM metrics")?,
        )
    };
    for src in &config.evm {
        let pool = drainguard_evm::Pool::new(
            src.chain.name.as_str(),
            &src.chain.endpoints,
            src.chain.rate_limit,
            src.timeout,
            rpc_metrics.clone(),
        )
        .with_context(|| format!("source.evm {}", src.chain.name))?;
        // Resume after the last block whose events are evaluated and durable.
        let resume = prepared.evm_resume.get(src.chain.name.as_str()).cloned();
        let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        health.add_watcher(crate::api::WatcherHealth {
            chain: src.chain.name.clone(),
            synced: synced.clone(),
            outage: pool.outage(),
        });
        let watcher = drainguard_evm::EvmWatcher::new(src.chain.clone(), src.watched.clone(), pool)
            .with_synced(synced);
        let (bus, token) = (bus.clone(), shutdown.child_token());
        let prices = src.prices.clone();
        tasks::spawn(sources, "source.evm", async move {
            for (asset, usd) in prices {
                let kind = EventKind::Price(drainguard_model::PriceObs {
                    asset: drainguard_model::Asset::new(&asset),
                    usd: drainguard_model::Price(usd),
                });
                if bus
                    .send(
                        drainguard_model::Event {
                            t: Timestamp::now(),
                            kind,
                        },
                        None,
                    )
                    .await
                    .is_err()
                {
                    return Ok(());
                }
            }
            watcher
                .run(resume, bus, token)
                .await
                .map_err(anyhow::Error::new)
        });
    }
    if !config.evm.is_empty() {
        health.sources_started.store(true, Ordering::SeqCst);
    }
    match (prepared.sim_records, &config.sim) {
        (Some(records), Some(sim)) => {
            let h = health.clone();
            let started = move || h.sources_started.store(true, Ordering::SeqCst);
            let (bus, token, speed) = (bus.clone(), shutdown.child_token(), sim.speed);
            tasks::spawn(
                sources,
                "source.sim",
                crate::sources::sim::play(records, speed, bus, started, token),
            );
        }
        _ if !config.evm.is_empty() => {}
        _ => {
            tracing::warn!(message = "no chain source is enabled: nothing will be watched");
            health.sources_started.store(true, Ordering::SeqCst);
            // The engine still serves intents and operators until shutdown:
            // this sender keeps the bus open that long.
            let (keep, token) = (bus.clone(), shutdown.child_token());
            tokio::spawn(async move {
                token.cancelled().await;
                drop(keep);
            });
        }
    }
    Ok(())
}

/// The watch side over Kafka: returns the bus the sources send to; a task
/// publishes what arrives on it, and records each block's checkpoint in
/// the store once the broker holds every event of it.
pub(crate) fn spawn_publisher(
    settings: &KafkaSettings,
    kafka_metrics: &KafkaMetrics,
    capacity: usize,
    store_path: &std::path::Path,
    metrics: &Metrics,
    health: &Arc<Health>,
    sources: &mut Sources,
) -> anyhow::Result<EventSender> {
    let (tx, rx) = drainguard_bus::bounded(capacity);
    let mut store = Store::open(store_path)
        .with_context(|| format!("opening the store {} for checkpoints", store_path.display()))?;
    let mut checkpoints: HashMap<String, Checkpoint> = store
        .checkpoints()
        .context("reading the checkpoints")?
        .into_iter()
        .map(|(c, cp)| (c.to_string(), cp))
        .collect();
    let (settings, kafka_metrics) = (settings.clone(), kafka_metrics.clone());
    let (metrics, health) = (metrics.clone(), health.clone());
    tasks::spawn(sources, "bus.kafka.publish", async move {
        let publisher = Publisher::connect(settings, kafka_metrics)
            .await
            .context("connecting the Kafka publisher")?;
        // A store write (fsync) per block: off the async workers' hands.
        let mut record = move |p: &Position| {
            crate::run::rewind_after_deep_reorg(&mut store, &checkpoints, p, &health)
                .map_err(|e| format!("{e:#}"))?;
            let cp = Checkpoint {
                block: p.block,
                hash: p.hash.clone(),
            };
            let batch = Batch {
                checkpoints: vec![(p.chain.clone(), cp.clone())],
                ..Batch::default()
            };
            crate::run::retrying(&health, || store.commit(&batch)).map_err(|e| e.to_string())?;
            checkpoints.insert(p.chain.to_string(), cp);
            metrics
                .checkpoint_block
                .with_label_values(&[p.chain.as_str()])
                .set(i64::try_from(p.block).unwrap_or(i64::MAX));
            Ok(())
        };
        let on_durable = move |p: &Position| tokio::task::block_in_place(|| record(p));
        publisher
            .run(rx, on_durable)
            .await
            .context("publishing events to Kafka")
    });
    Ok(tx)
}

/// The engine side over Kafka: a task reads the topic in the consumer
/// group onto the engine's bus until shutdown.
pub(crate) fn spawn_subscriber(
    settings: &KafkaSettings,
    kafka_metrics: &KafkaMetrics,
    bus: &EventSender,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
    sources: &mut Sources,
) {
    let (settings, kafka_metrics) = (settings.clone(), kafka_metrics.clone());
    let (bus, health, token) = (bus.clone(), health.clone(), shutdown.child_token());
    tasks::spawn(sources, "bus.kafka.subscribe", async move {
        let subscriber = Subscriber::connect(settings, kafka_metrics)
            .await
            .context("connecting the Kafka subscriber")?;
        health.sources_started.store(true, Ordering::SeqCst);
        // A closed bus means the engine stopped: its error says why.
        let _closed = subscriber.run(bus, token).await;
        Ok(())
    });
}
