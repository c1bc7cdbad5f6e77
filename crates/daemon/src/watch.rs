//! `drainguard watch`: the chain sources alone, publishing to Kafka for
//! the engines on other hosts. It keeps the sources' checkpoints in its
//! own store, moving each only once the broker holds the whole block, and
//! serves `/metrics`, `/healthz` and `/readyz`.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use drainguard_bus::kafka::KafkaMetrics;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, Health, WatchState},
    config::Config,
    metrics::Metrics,
    pipeline,
};

pub(crate) async fn run_watch(config: Config) -> anyhow::Result<ExitCode> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // SIGHUP would otherwise end the process; a watcher has no rules.
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let kafka = config
        .kafka
        .as_ref()
        .context("`drainguard watch` needs bus.kind = \"kafka\"")?;
    let metrics = Metrics::new().context("registering metrics")?;
    let kafka_metrics =
        KafkaMetrics::register(metrics.registry()).context("registering the Kafka metrics")?;
    let health = Arc::new(Health::default());
    let mut store = crate::run::open_store(&config.store_path, &health)?;
    let prepared = pipeline::prepare(&config, &mut store).await?;
    drop(store);
    tracing::info!(
        message = "drainguard watch starting",
        version = env!("CARGO_PKG_VERSION"),
        brokers = %kafka.brokers,
        topic = %kafka.topic,
        listen = %config.listen,
    );

    let shutdown = CancellationToken::new();
    let mut sources = pipeline::Sources::new();
    let bus = pipeline::spawn_publisher(
        kafka,
        &kafka_metrics,
        config.bus_capacity,
        &config.store_path,
        &metrics,
        &health,
        &mut sources,
    )?;
    pipeline::spawn_sources(
        &config,
        prepared,
        &bus,
        &metrics,
        &health,
        &shutdown,
        &mut sources,
    )?;
    // The publisher stops once the sources' senders are all gone.
    drop(bus);

    let router = api::watch_router(WatchState {
        metrics: metrics.clone(),
        health: health.clone(),
    });
    let mut api = crate::run::serve(config.listen, router, &shutdown).await?;

    let mut failed = false;
    loop {
        tokio::select! {
            _ = hup.recv() => tracing::info!(message = "SIGHUP: a watch process has no rules to reload"),
            _ = term.recv() => { tracing::info!(message = "SIGTERM: shutting down"); break }
            _ = int.recv() => { tracing::info!(message = "SIGINT: shutting down"); break }
            Some(done) = sources.join_next() => {
                failed = crate::run::source_failed(done);
                break;
            }
        }
    }
    shutdown.cancel();
    // The publisher delivers what the sources sent before they stopped,
    // and records the checkpoints the broker has acknowledged.
    let drained = tokio::time::timeout(crate::run::SHUTDOWN_DEADLINE, async {
        while let Some(done) = sources.join_next().await {
            if let Ok(Err(e)) = done {
                failed = true;
                tracing::error!(
                    message = "source failed during shutdown",
                    error = format!("{e:#}")
                );
            }
        }
        while api.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::error!(
            message = "shutdown deadline passed; exiting",
            deadline_seconds = crate::run::SHUTDOWN_DEADLINE.as_secs()
        );
        return Ok(ExitCode::FAILURE);
    }
    tracing::info!(message = "drainguard watch stopped cleanly");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
