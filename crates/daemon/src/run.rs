//! `drainguard run`: wires sources, bus, engine, store, responders and the
//! HTTP API, and shuts them down in order on SIGTERM or SIGINT. SIGHUP
//! reloads the rules (see [`crate::reload`]).
//!
//! Order of work for every event: evaluate, write findings, freezes and the
//! completed checkpoint to the store in one transaction, then act. A crash
//! at any point leaves either nothing or everything durable, and the
//! checkpoint never passes work that is not.

use std::{
    path::Path,
    process::ExitCode,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow};
use drainguard_bus::{BusReceiver, Envelope, Message, kafka::KafkaMetrics};
use drainguard_engine::{Engine, Output, Recovery};
use drainguard_model::{EventKind, Freeze, FreezeId, Scope, Severity, Timestamp};
use drainguard_respond::{Deliverer, metrics::DeliveryMetrics, pagerduty::PagerState};
use drainguard_store::{Batch, Checkpoint, FreezeFilter, LiftOutcome, Store, StoreError};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    api::{self, ApiState, Health},
    auth::{ADMIN_TOKEN_ENV, Token},
    config::{self, Config},
    declarations::Declarations,
    metrics::Metrics,
    pipeline,
    reload::{self, Control, Reloader, RulesSource},
    responders::{PAGER_KEY, Responders},
    tasks,
};

/// Where the engine's learned state lives in the store.
const LEARNED_KEY: &str = "engine.learned";
/// How often the learned state is saved while running (and at shutdown).
const LEARNED_SAVE_EVERY: Duration = Duration::from_secs(600);
/// The window totals and limits in `/metrics` are refreshed at most this
/// often, and at least every [`WINDOW_METRICS_MAX`]: in between, as often
/// as keeps their cost under 1 % of the engine thread. A few hot wallets
/// cost microseconds (every second); 100,000 wallets about 30 ms (every
/// 3 s; `cargo bench -p drainguard-replay --bench memory`).
const WINDOW_METRICS_MIN: Duration = Duration::from_secs(1);
const WINDOW_METRICS_MAX: Duration = Duration::from_secs(30);

/// How long shutdown may take before the daemon exits anyway.
pub(crate) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);

/// Which part of the pipeline a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Everything (`drainguard run`): over the in-process bus, or through
    /// Kafka when `bus.kind = "kafka"`.
    All,
    /// The chain sources, publishing to Kafka (`drainguard watch`).
    Watch,
    /// The engine, store, responders and API, reading Kafka
    /// (`drainguard engine`).
    Engine,
}

impl Role {
    fn command(self) -> &'static str {
        match self {
            Role::All => "run",
            Role::Watch => "watch",
            Role::Engine => "engine",
        }
    }
}

pub(crate) fn run(path: &Path, role: Role) -> anyhow::Result<ExitCode> {
    let config = config::load(path)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("loading {}", path.display()))?;
    if role != Role::All && config.kafka.is_none() {
        anyhow::bail!(
            "{}: `drainguard {}` runs one side of the pipeline over Kafka: set bus.kind = \"kafka\" and a [bus.kafka] table (or use `drainguard run`)",
            path.display(),
            role.command()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("drainguard")
        .build()?;
    rt.block_on(async move {
        match role {
            Role::Watch => crate::watch::run_watch(config).await,
            Role::All | Role::Engine => run_async(config, role).await,
        }
    })
}

async fn run_async(config: Config, role: Role) -> anyhow::Result<ExitCode> {
    // First of all: SIGHUP's default action would end the process.
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    // Read once; never logged, never in the configuration file.
    let admin_token = Token::from_env(ADMIN_TOKEN_ENV);
    let intents_token = Token::from_env(crate::auth::INTENTS_TOKEN_ENV);
    let metrics = Metrics::new().context("registering metrics")?;
    metrics.declare_rules(&config.rules);
    metrics
        .bus_capacity
        .set(i64::try_from(config.bus_capacity).unwrap_or(i64::MAX));
    let health = Arc::new(Health::default());

    let mut store = open_store(&config.store_path, &health)?;
    let mut engine = Engine::new(config.rules.clone());
    // The blind rules go by each watched chain's configured block time, not
    // by one learned from a catch-up's heads.
    for src in &config.evm {
        engine.set_block_time(&src.chain.name, src.chain.block_time);
    }
    let active = store
        .freezes(FreezeFilter::Active)
        .context("reading active freezes")?;
    if let Some(saved) = store
        .get_state(LEARNED_KEY)
        .context("reading learned state")?
    {
        match serde_json::from_value(saved) {
            Ok(state) => {
                let n = engine.restore_learned(state);
                tracing::info!(message = "learned state restored", entries = n);
            }
            Err(e) => {
                tracing::warn!(message = "learned state unreadable; learning again", error = %e)
            }
        }
    }
    // An engine reading Kafka resumes past the messages that declared the
    // wallets: it keeps them in its store (a run without Kafka hears its
    // watchers declare them again at start).
    let declarations = match &config.kafka {
        Some(_) => {
            let saved = Declarations::load(&store)?;
            saved.restore(&mut engine);
            Some(saved)
        }
        None => None,
    };
    for f in active {
        tracing::warn!(message = "freeze still in force from before the restart", freeze_id = %f.freeze.id, scope = %f.freeze.scope);
        engine.restore_freeze(f.freeze);
    }
    update_freeze_gauges(&metrics, engine.active_freezes());
    let pager_state: PagerState = match store.get_state(PAGER_KEY).context("reading the pager state")? {
        Some(v) => serde_json::from_value(v).unwrap_or_else(|e| {
            tracing::warn!(message = "pager state unreadable; open incidents forgotten", error = %e);
            PagerState::default()
        }),
        None => PagerState::default(),
    };
    let wake = Arc::new(Notify::new());
    let responders = Responders::new(
        config.webhook.is_some(),
        config.pagerduty.clone(),
        pager_state,
        wake.clone(),
    );
    match &config.webhook {
        Some(w) => {
            tracing::info!(message = "freeze webhook enabled", endpoints = %w.endpoints.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(","))
        }
        None => tracing::warn!(
            message = "no freeze webhook configured: freezes are recorded, logged and paged, but the exchange is not told"
        ),
    }
    match &config.pagerduty {
        Some(p) => tracing::info!(message = "PagerDuty enabled", url = %p.url),
        None => tracing::warn!(message = "PagerDuty not configured: nobody is paged"),
    }
    let mut channels = Vec::new();
    if config.webhook.is_some() {
        channels.push(drainguard_respond::webhook::CHANNEL);
    }
    if config.pagerduty.is_some() {
        channels.push(drainguard_respond::pagerduty::CHANNEL);
    }
    let delivery_metrics = DeliveryMetrics::register(metrics.registry(), &channels)
        .context("registering delivery metrics")?;
    // The worker has its own connection: a slow receiver never holds up
    // the engine's commits.
    let deliverer = Deliverer::new(
        Store::open(&config.store_path).context("opening the store for delivery")?,
        config.webhook.clone(),
        config.pagerduty.clone(),
        config.delivery.backoff,
        config.delivery.timeout,
        delivery_metrics,
        wake.clone(),
    )
    .context("starting the delivery worker")?;
    let api_store = Arc::new(std::sync::Mutex::new(
        Store::open(&config.store_path).context("opening the store for the API")?,
    ));
    tracing::info!(
        message = "drainguard starting",
        version = env!("CARGO_PKG_VERSION"),
        rules = config.rules.rules.len(),
        rules_from = %config.rules_source,
        store = %config.store_path.display(),
        listen = %config.listen,
    );

    let shutdown = CancellationToken::new();
    let (bus_tx, bus_rx) = drainguard_bus::bounded::<Control>(config.bus_capacity);
    let reloader = Reloader::new(
        match &config.rules_path {
            Some(p) => RulesSource::File(p.clone()),
            None => RulesSource::Builtin,
        },
        &bus_tx,
    );

    // The sources resume from the store before the engine takes it.
    let prepared = match role {
        Role::All => Some(pipeline::prepare(&config, &mut store).await?),
        Role::Engine | Role::Watch => None,
    };
    let engine_thread = {
        let (metrics, health) = (metrics.clone(), health.clone());
        tasks::spawn_thread("engine", move || {
            health.engine_running.store(true, Ordering::SeqCst);
            let mut responders = responders;
            let result = engine_loop(
                engine,
                store,
                bus_rx,
                declarations,
                &metrics,
                &health,
                &mut responders,
            );
            health.engine_running.store(false, Ordering::SeqCst);
            result
        })
        .context("spawning the engine")?
    };
    // Delivery stops after the engine, so the last freezes get their
    // attempt; whatever is still pending goes out at the next start.
    let delivery_token = CancellationToken::new();
    let delivery_thread = {
        let token = delivery_token.clone();
        tasks::spawn_thread("deliver", move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the delivery runtime")?;
            rt.block_on(deliverer.run(token));
            anyhow::Ok(())
        })
        .context("spawning the delivery worker")?
    };

    let mut sources = pipeline::Sources::new();
    // The Kafka bus, when configured, with its metrics.
    let kafka = match &config.kafka {
        Some(k) => Some((
            k,
            KafkaMetrics::register(metrics.registry()).context("registering the Kafka metrics")?,
        )),
        None => None,
    };
    if let Some(prepared) = prepared {
        let source_bus = match &kafka {
            Some((k, km)) => pipeline::spawn_publisher(
                k,
                km,
                config.bus_capacity,
                &config.store_path,
                &metrics,
                &health,
                &mut sources,
            )?,
            None => bus_tx.clone(),
        };
        pipeline::spawn_sources(
            &config,
            prepared,
            &source_bus,
            &metrics,
            &health,
            &shutdown,
            &mut sources,
        )?;
    }
    if let Some((k, km)) = &kafka {
        pipeline::spawn_subscriber(k, km, &bus_tx, &health, &shutdown, &mut sources);
    }
    // The engine stops once every sender is gone: the sources hold theirs.
    let control = bus_tx.control_sender();
    // A tick a second lets time-based checks (a blind chain) run when no
    // event comes; it never keeps the bus open.
    let ticker = bus_tx.control_sender();
    let tick_token = shutdown.child_token();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = tick_token.cancelled() => break,
                _ = every.tick() => {
                    if ticker.send(Control::Tick).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    drop(bus_tx);

    if admin_token.is_some() {
        tracing::info!(message = "admin API enabled", token_from = ADMIN_TOKEN_ENV);
    } else {
        tracing::info!(
            message = "admin API disabled: no admin token in the environment",
            token_from = ADMIN_TOKEN_ENV
        );
    }
    let router = api::router(ApiState {
        metrics: metrics.clone(),
        health: health.clone(),
        reloader: reloader.clone(),
        admin_token,
        intents_token,
        control: control.clone(),
        store: api_store,
        wake: wake.clone(),
    });
    let mut api = serve(config.listen, router, &shutdown).await?;

    let mut failed = false;
    // Reloads run beside this loop, so a slow one never holds up SIGTERM;
    // the reloader takes them one at a time.
    let mut reloads = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!(message = "SIGHUP: reloading the rules");
                let reloader = reloader.clone();
                reloads.spawn(
                    async move {
                        // The outcome is logged and audited by the reload.
                        let _outcome = reloader.reload(reload::actor::SIGNAL).await;
                    }
                    .instrument(tracing::info_span!("task", name = "reload")),
                );
            }
            Some(done) = reloads.join_next(), if !reloads.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(message = "rules reload panicked; the running rules stay in force", error = %e);
                }
            }
            _ = term.recv() => { tracing::info!(message = "SIGTERM: shutting down"); break }
            _ = int.recv() => { tracing::info!(message = "SIGINT: shutting down"); break }
            Some(done) = sources.join_next() => {
                failed = source_failed(done);
                break;
            }
        }
    }
    shutdown.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_DEADLINE, async {
        while let Some(done) = sources.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::error!(
                    message = "source failed during shutdown",
                    error = format!("{e:#}")
                );
            }
        }
        let engine = engine_thread.await;
        delivery_token.cancel();
        if let Ok(Err(e)) = delivery_thread.await {
            tracing::error!(message = "delivery worker failed", error = format!("{e:#}"));
        }
        // A reload still waiting hears from the stopped engine and ends.
        while reloads.join_next().await.is_some() {}
        while api.join_next().await.is_some() {}
        engine
    })
    .await;
    match drained {
        Err(_) => {
            tracing::error!(
                message = "shutdown deadline passed; exiting",
                deadline_seconds = SHUTDOWN_DEADLINE.as_secs()
            );
            Ok(ExitCode::FAILURE)
        }
        Ok(Err(e)) => Err(anyhow!(
            "the engine panicked: {:?}",
            e.downcast_ref::<String>()
                .map(String::as_str)
                .or(e.downcast_ref::<&str>().copied())
        )),
        Ok(Ok(Err(e))) => Err(e.context("the engine stopped")),
        Ok(Ok(Ok(()))) => {
            tracing::info!(message = "drainguard stopped cleanly");
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// Binds the HTTP API and serves it until shutdown.
pub(crate) async fn serve(
    listen: std::net::SocketAddr,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> anyhow::Result<tokio::task::JoinSet<std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding api.listen {listen}"))?;
    tracing::info!(message = "HTTP API listening", addr = %listener.local_addr()?);
    let mut api = tokio::task::JoinSet::new();
    let token = shutdown.clone();
    tasks::spawn(&mut api, "api", async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    });
    Ok(api)
}

/// Opens the store, creating its folder on first start.
pub(crate) fn open_store(path: &Path, health: &Health) -> anyhow::Result<Store> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let store =
        Store::open(path).with_context(|| format!("opening the store {}", path.display()))?;
    health
        .store_writable
        .store(store.is_writable(), Ordering::SeqCst);
    Ok(store)
}

/// Logs how a source task ended; whether it failed.
pub(crate) fn source_failed(done: Result<anyhow::Result<()>, tokio::task::JoinError>) -> bool {
    match done {
        Ok(Ok(())) => {
            tracing::info!(message = "source finished");
            false
        }
        Ok(Err(e)) => {
            tracing::error!(message = "source failed", error = format!("{e:#}"));
            true
        }
        Err(e) => {
            tracing::error!(message = "source panicked", error = %e);
            true
        }
    }
}

fn update_freeze_gauges(metrics: &Metrics, freezes: &[Freeze]) {
    for level in ["wallet", "asset", "chain", "global", "intent"] {
        let n = freezes.iter().filter(|f| f.scope.level() == level).count();
        metrics
            .freezes_active
            .with_label_values(&[level])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

/// Runs a store write, retrying while the database is busy (up to a
/// minute); keeps `store_writable` up to date.
pub(crate) fn retrying<T>(
    health: &Health,
    mut write: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut delay = Duration::from_millis(10);
    let started = Instant::now();
    loop {
        match write() {
            Ok(v) => {
                health.store_writable.store(true, Ordering::SeqCst);
                return Ok(v);
            }
            Err(e) if e.is_retriable() && started.elapsed() < Duration::from_secs(60) => {
                health.store_writable.store(false, Ordering::SeqCst);
                tracing::warn!(message = "store busy; retrying", error = %e, retry_in_ms = delay.as_millis() as u64);
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                health.store_writable.store(false, Ordering::SeqCst);
                return Err(e);
            }
        }
    }
}

/// Writes a batch, retrying while the database is busy. A permanent error
/// stops the engine: nothing has been acted on and the checkpoint has not
/// moved, so a restart redoes the work.
fn commit(
    store: &mut Store,
    batch: &Batch,
    metrics: &Metrics,
    health: &Health,
) -> anyhow::Result<drainguard_store::CommitOutcome> {
    let started = Instant::now();
    let outcome = retrying(health, || store.commit(batch))
        .map_err(|e| anyhow::Error::new(e).context("writing findings and freezes to the store"))?;
    metrics
        .store_commit
        .observe(started.elapsed().as_secs_f64());
    Ok(outcome)
}

/// Appends an audit row for a reload. A failure is logged, not fatal: the
/// reload itself has been decided, and detection goes on (a store that
/// cannot write stops the engine at its next commit anyway).
fn audit(
    store: &mut Store,
    health: &Health,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) {
    if let Err(e) = retrying(health, || {
        store.append_audit(actor, action, subject, detail)
    }) {
        tracing::error!(message = "writing the audit log failed", action, subject, error = %e);
    }
}

/// Acts on a control message, between two events.
fn control(
    c: Control,
    engine: &mut Engine,
    store: &mut Store,
    metrics: &Metrics,
    health: &Health,
    responders: &mut Responders,
) {
    match c {
        Control::ManualFreeze {
            scope,
            reason,
            actor,
            reply,
        } => {
            let result = manual_freeze(
                engine, store, metrics, health, responders, scope, &reason, &actor,
            );
            let _answered = reply.send(result);
        }
        Control::Lift {
            id,
            actor,
            reason,
            reply,
        } => {
            let result = lift(
                engine, store, metrics, health, responders, &id, &actor, &reason,
            );
            let _answered = reply.send(result);
        }
        // Ticks and intents are handled by the engine loop itself.
        Control::Tick | Control::Intents { .. } => {}
        Control::Reload {
            rules,
            actor,
            source,
            reply,
        } => {
            let previous = engine.rules().rules.len();
            metrics.declare_rules(&rules);
            engine.reload(rules);
            let n = engine.rules().rules.len();
            audit(
                store,
                health,
                actor,
                reload::RELOADED,
                &source,
                &json!({"rules": n, "previous_rules": previous}),
            );
            tracing::info!(message = "rules reloaded", actor, rules = n, previous_rules = previous, source = %source);
            // The caller may have gone (a closed HTTP connection): the
            // reload stands either way.
            let _answered = reply.send(n);
        }
        Control::ReloadFailed {
            actor,
            source,
            errors,
            reply,
        } => {
            audit(
                store,
                health,
                actor,
                reload::RELOAD_FAILED,
                &source,
                &json!({"errors": errors}),
            );
            let _answered = reply.send(());
        }
    }
}

/// An operator's freeze: durable with its webhook and page, then in force
/// in the engine (intents in its scope are held).
#[allow(clippy::too_many_arguments)]
fn manual_freeze(
    engine: &mut Engine,
    store: &mut Store,
    metrics: &Metrics,
    health: &Health,
    responders: &mut Responders,
    scope: Scope,
    reason: &str,
    actor: &str,
) -> Result<Freeze, String> {
    let t = Timestamp::now();
    let freeze = Freeze {
        id: FreezeId::derive(&["manual", &scope.to_string(), reason, &t.to_rfc3339()]),
        t,
        scope,
        reason: format!("{reason} (raised by {actor})"),
        rule: "manual".to_string(),
        severity: Severity::Critical,
        findings: Vec::new(),
        supersedes: Vec::new(),
    };
    let (actions, state) = responders.plan_manual(&freeze);
    retrying(health, || {
        store.raise_manual_freeze(&freeze, actor, &actions)?;
        for (k, v) in &state.state {
            store.put_state(k, v)?;
        }
        Ok(())
    })
    .map_err(|e| format!("the freeze could not be written: {e}"))?;
    engine.restore_freeze(freeze.clone());
    metrics
        .freezes
        .with_label_values(&[freeze.scope.level()])
        .inc();
    update_freeze_gauges(metrics, engine.active_freezes());
    responders.committed(
        &Batch {
            freezes: vec![freeze.clone()],
            actions,
            ..Batch::default()
        },
        std::slice::from_ref(&freeze.id),
    );
    Ok(freeze)
}

/// An operator's lift: durable with its webhook, then out of the engine.
#[allow(clippy::too_many_arguments)]
fn lift(
    engine: &mut Engine,
    store: &mut Store,
    metrics: &Metrics,
    health: &Health,
    responders: &Responders,
    id: &FreezeId,
    actor: &str,
    reason: &str,
) -> Result<LiftOutcome, String> {
    let stored = retrying(health, || store.freeze(id))
        .map_err(|e| format!("reading the freeze failed: {e}"))?;
    let Some(stored) = stored else {
        return Ok(LiftOutcome::NotFound);
    };
    let actions = responders.plan_lift(&stored.freeze, actor, reason);
    let outcome = retrying(health, || store.lift_freeze(id, actor, reason, &actions))
        .map_err(|e| format!("the lift could not be written: {e}"))?;
    if outcome == LiftOutcome::Lifted {
        engine.lift_freeze(id);
        update_freeze_gauges(metrics, engine.active_freezes());
        tracing::warn!(message = "freeze lifted by a human", freeze_id = %id, actor, reason);
        responders.wake();
    }
    Ok(outcome)
}

fn engine_loop(
    mut engine: Engine,
    mut store: Store,
    mut bus: BusReceiver<Control>,
    mut declarations: Option<Declarations>,
    metrics: &Metrics,
    health: &Health,
    responders: &mut Responders,
) -> anyhow::Result<()> {
    let mut out = Vec::new();
    let mut meter = crate::metrics::OutflowMeter::default();
    let mut last_save = Instant::now();
    let mut last_windows: Option<Instant> = None;
    let mut windows_every = WINDOW_METRICS_MIN;
    let mut checkpoints: std::collections::HashMap<String, Checkpoint> = store
        .checkpoints()
        .context("reading the checkpoints")?
        .into_iter()
        .map(|(c, cp)| (c.to_string(), cp))
        .collect();
    while let Some(message) = bus.blocking_recv() {
        let Envelope {
            event,
            sent_at,
            completes,
            ack,
        } = match message {
            Message::Event(envelope) => envelope,
            Message::Control(Control::Tick) => {
                // Read when the tick comes out: what waits behind it.
                metrics
                    .bus_depth
                    .set(i64::try_from(bus.depth()).unwrap_or(i64::MAX));
                let now = Timestamp::now();
                for (chain, outage) in health.outages() {
                    engine.set_outage(now, &chain, outage, &mut out);
                }
                engine.tick(now, &mut out);
                if last_windows.is_none_or(|at| at.elapsed() >= windows_every) {
                    let started = Instant::now();
                    let nearest = engine.nearest_window_figures(crate::metrics::MAX_WINDOW_SERIES);
                    meter.windows(metrics, &nearest);
                    windows_every =
                        (started.elapsed() * 100).clamp(WINDOW_METRICS_MIN, WINDOW_METRICS_MAX);
                    last_windows = Some(Instant::now());
                }
                if last_save.elapsed() >= LEARNED_SAVE_EVERY {
                    save_learned(&engine, &mut store);
                    last_save = Instant::now();
                }
                let aged = responders.tick(now, engine.active_freezes());
                if out.is_empty() && aged.is_empty() {
                    continue;
                }
                let (mut batch, recoveries) = batch_of(&mut out, Instant::now(), None, metrics);
                batch.actions.extend(aged.actions);
                batch.state.extend(aged.state);
                act(
                    &mut engine,
                    &mut store,
                    batch,
                    &recoveries,
                    metrics,
                    health,
                    responders,
                )?;
                continue;
            }
            Message::Control(Control::Intents { intents, reply }) => {
                let now = Timestamp::now();
                let verdicts: Vec<_> = intents
                    .iter()
                    .map(|i| engine.process_intent(now, i, &mut out))
                    .collect();
                if !out.is_empty() {
                    let (batch, recoveries) = batch_of(&mut out, Instant::now(), None, metrics);
                    // Holds are durable before the withdrawal system hears
                    // of them.
                    act(
                        &mut engine,
                        &mut store,
                        batch,
                        &recoveries,
                        metrics,
                        health,
                        responders,
                    )?;
                }
                metrics
                    .open_intents
                    .set(i64::try_from(engine.open_intents()).unwrap_or(i64::MAX));
                let _answered = reply.send(verdicts);
                continue;
            }
            Message::Control(c) => {
                control(c, &mut engine, &mut store, metrics, health, responders);
                continue;
            }
            // Everything before it is evaluated and durable.
            Message::Pass(ack) => {
                ack.done();
                continue;
            }
        };
        engine.process(&event, &mut out);
        meter.observe(metrics, &event);
        let chain = event.kind.chain().map(|c| c.as_str()).unwrap_or("");
        let stage = match &event.kind {
            EventKind::Transfer(t) => t.stage.as_str(),
            _ => "",
        };
        metrics
            .events
            .with_label_values(&[chain, event.kind.name(), stage])
            .inc();
        if let EventKind::Head(h) = &event.kind {
            metrics
                .head_block
                .with_label_values(&[h.chain.as_str()])
                .set(i64::try_from(h.block).unwrap_or(i64::MAX));
        }
        let declared = declarations.as_mut().is_some_and(|d| d.note(&event));
        if out.is_empty() && completes.is_none() && !declared {
            // Evaluated, and nothing to write: its source may forget it.
            if let Some(ack) = ack {
                ack.done();
            }
            continue;
        }
        if let Some(p) = &completes {
            rewind_after_deep_reorg(&mut store, &checkpoints, p, health)?;
        }
        let (mut batch, recoveries) = batch_of(&mut out, sent_at, completes.as_ref(), metrics);
        if let Some(d) = declarations.as_ref().filter(|_| declared) {
            batch.state.push(d.state()?);
        }
        act(
            &mut engine,
            &mut store,
            batch,
            &recoveries,
            metrics,
            health,
            responders,
        )?;
        if let Some(p) = &completes {
            checkpoints.insert(
                p.chain.to_string(),
                Checkpoint {
                    block: p.block,
                    hash: p.hash.clone(),
                },
            );
            metrics
                .checkpoint_block
                .with_label_values(&[p.chain.as_str()])
                .set(i64::try_from(p.block).unwrap_or(i64::MAX));
        }
        // Its findings, freezes and checkpoint are in the store.
        if let Some(ack) = ack {
            ack.done();
        }
        metrics
            .open_intents
            .set(i64::try_from(engine.open_intents()).unwrap_or(i64::MAX));
    }
    save_learned(&engine, &mut store);
    tracing::info!(message = "engine drained the bus and stopped");
    Ok(())
}

/// A watcher marks a block lower than the stored checkpoint, or the same
/// height with another hash, only after a reorg deeper than its
/// confirmation depth took the checkpointed block away: the checkpoint is
/// moved back to the block now marked, and the audit log says why.
pub(crate) fn rewind_after_deep_reorg(
    store: &mut Store,
    checkpoints: &std::collections::HashMap<String, Checkpoint>,
    p: &drainguard_bus::Position,
    health: &Health,
) -> anyhow::Result<()> {
    let Some(stored) = checkpoints.get(p.chain.as_str()) else {
        return Ok(());
    };
    if p.block > stored.block || (p.block == stored.block && p.hash == stored.hash) {
        return Ok(());
    }
    let reason = format!(
        "reorg deeper than the confirmation depth: block {} ({}) was reorganized away; back to block {} ({})",
        stored.block, stored.hash, p.block, p.hash
    );
    tracing::error!(message = "checkpoint rewound after a deep reorg", chain = %p.chain, from = stored.block, to = p.block);
    let to = Checkpoint {
        block: p.block,
        hash: p.hash.clone(),
    };
    retrying(health, || store.rewind_checkpoint(&p.chain, &to, &reason))
        .context("rewinding the checkpoint after a deep reorg")?;
    Ok(())
}

/// Saves what the baseline rules have learned (restored at the next start).
fn save_learned(engine: &Engine, store: &mut Store) {
    let learned = engine.learned_state();
    match serde_json::to_value(&learned) {
        Ok(v) => {
            if let Err(e) = store.put_state(LEARNED_KEY, &v) {
                tracing::error!(message = "saving learned state failed", error = %e);
            }
        }
        Err(e) => tracing::error!(message = "encoding learned state failed", error = %e),
    }
}

/// Gathers the engine's outputs into one store batch, counting findings;
/// recoveries go to the responders.
fn batch_of(
    out: &mut Vec<Output>,
    sent_at: Instant,
    completes: Option<&drainguard_bus::Position>,
    metrics: &Metrics,
) -> (Batch, Vec<Recovery>) {
    let mut batch = Batch::default();
    let mut recoveries = Vec::new();
    for o in out.drain(..) {
        match o {
            Output::Finding(f) => {
                metrics
                    .detection_latency
                    .observe(sent_at.elapsed().as_secs_f64());
                metrics
                    .findings
                    .with_label_values(&[f.rule.as_str(), f.severity.as_str()])
                    .inc();
                if f.kind == "blind"
                    && !f.shadow
                    && let Some(chain) = &f.chain
                {
                    metrics
                        .chain_blind
                        .with_label_values(&[chain.as_str()])
                        .set(1);
                }
                batch.findings.push(f);
            }
            Output::Freeze(f) => batch.freezes.push(f),
            Output::Recovered(r) => {
                tracing::info!(message = "recovered", kind = %r.kind, chain = %r.chain, summary = %r.summary);
                if r.kind == "blind" {
                    metrics
                        .chain_blind
                        .with_label_values(&[r.chain.as_str()])
                        .set(0);
                }
                recoveries.push(r);
            }
        }
    }
    if let Some(p) = completes {
        batch.checkpoints.push((
            p.chain.clone(),
            Checkpoint {
                block: p.block,
                hash: p.hash.clone(),
            },
        ));
    }
    (batch, recoveries)
}

/// Plans the batch's actions, writes it all durably, then acts on it.
fn act(
    engine: &mut Engine,
    store: &mut Store,
    mut batch: Batch,
    recoveries: &[Recovery],
    metrics: &Metrics,
    health: &Health,
    responders: &mut Responders,
) -> anyhow::Result<()> {
    responders.plan(&mut batch, recoveries);
    let outcome = commit(store, &batch, metrics, health)?;
    // Durable: now act.
    responders.committed(&batch, &outcome.new_freezes);
    for f in batch
        .freezes
        .iter()
        .filter(|f| outcome.new_freezes.contains(&f.id))
    {
        metrics.freezes.with_label_values(&[f.scope.level()]).inc();
    }
    for f in batch
        .freezes
        .iter()
        .filter(|f| !outcome.new_freezes.contains(&f.id))
    {
        tracing::info!(message = "freeze already recorded (idempotent replay)", freeze_id = %f.id, scope = %f.scope);
    }
    if !batch.freezes.is_empty() {
        update_freeze_gauges(metrics, engine.active_freezes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use drainguard_bus::{Ack, Acknowledge};
    use drainguard_engine::RuleSet;
    use drainguard_model::{Chain, Event, Head};

    use super::*;

    /// Records what was acknowledged, in order.
    #[derive(Default)]
    struct Acks(Mutex<Vec<i64>>);

    impl Acknowledge for Acks {
        fn acknowledge(&self, _partition: i32, offset: i64) {
            self.0.lock().unwrap().push(offset);
        }
    }

    fn head(block: u64) -> Event {
        Event {
            t: Timestamp::from_unix_secs(1_700_000_000 + i64::try_from(block).unwrap()),
            kind: EventKind::Head(Head {
                chain: Chain::new("ethereum"),
                block,
                hash: format!("0x{block:x}"),
            }),
        }
    }

    /// Runs the engine loop over what `fill` puts on a bus of `capacity`.
    fn run_loop(
        capacity: usize,
        fill: impl AsyncFnOnce(&drainguard_bus::BusSender<Control>),
    ) -> Metrics {
        let store = Store::open_in_memory().unwrap();
        let metrics = Metrics::new().unwrap();
        let (tx, rx) = drainguard_bus::bounded::<Control>(capacity);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(fill(&tx));
        drop(tx);
        let mut responders =
            Responders::new(false, None, PagerState::default(), Arc::new(Notify::new()));
        engine_loop(
            Engine::new(RuleSet::builtin().unwrap()),
            store,
            rx,
            None,
            &metrics,
            &Health::default(),
            &mut responders,
        )
        .unwrap();
        metrics
    }

    #[test]
    fn the_bus_depth_is_what_waits_behind_a_tick() {
        let metrics = run_loop(64, async |tx| {
            tx.control_sender().send(Control::Tick).await.unwrap();
            for b in 1..=10 {
                tx.send(head(b), None).await.unwrap();
            }
        });
        assert_eq!(metrics.bus_depth.get(), 10);
    }

    #[test]
    fn events_and_passed_messages_are_acknowledged_in_order_once_evaluated() {
        let acks = Arc::new(Acks::default());
        let to: Arc<dyn Acknowledge> = acks.clone();
        run_loop(64, async |tx| {
            tx.send_acked(head(1), Ack::new(to.clone(), 0, 0))
                .await
                .unwrap();
            tx.pass(Ack::new(to.clone(), 0, 1)).await.unwrap();
            tx.send_acked(head(2), Ack::new(to.clone(), 0, 2))
                .await
                .unwrap();
        });
        assert_eq!(*acks.0.lock().unwrap(), [0, 1, 2]);
    }
}
