//! The bus over Kafka, against a real broker (tansu with its in-memory
//! storage, found or installed by the test support): `drainguard watch`
//! publishes, `drainguard engine` evaluates, and nothing is lost between
//! them — not while the engine is down, not across its restart, not past
//! a message that is not a valid record.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use drainguard_e2e::{Daemon, metric_sum, tansu::Broker};
use rdkafka::{
    ClientConfig,
    producer::{FutureProducer, FutureRecord},
};

fn bus(broker: &Broker, topic: &str, partitions: u32) -> String {
    format!(
        "[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"{}\"\ntopic = \"{topic}\"\npartitions = {partitions}\n",
        broker.bootstrap()
    )
}

fn watch_config(dir: &Path, bus: &str) -> PathBuf {
    drainguard_e2e::write_config(
        dir,
        &format!(
            r#"{bus}
[source.sim]
enabled = true
preset = "coinex"
seed = 5
incident_at = "10m"
speed = 600.0
hours = 0.5
"#
        ),
    )
    .unwrap()
}

/// A counter's total over its series (counts are whole numbers).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "counters are non-negative integers well below 2^52"
)]
fn count(text: &str, prefix: &str) -> u64 {
    metric_sum(text, prefix) as u64
}

fn metrics(d: &Daemon) -> String {
    let (status, text) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    text
}

/// Polls `f` every 200 ms until it returns `Some`, or fails with `what`.
fn wait<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_or(what, timeout, String::new, f)
}

/// The same, saying also what `seen` tells of the last poll on a timeout.
fn wait_or<T, F: FnMut() -> Option<T>>(
    what: &str,
    timeout: Duration,
    seen: impl Fn() -> String,
    mut f: F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} {}",
            seen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for a watcher's simulated day to play to its end and for the
/// broker to acknowledge every message: the day's events (`records=N` of
/// the simulator's start line) and the messages produced.
fn play_day(watch: &mut Daemon) -> (u64, u64) {
    let line = watch
        .wait_for_log("simulator playing", Duration::from_secs(30))
        .unwrap();
    let records: u64 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("records="))
        .unwrap()
        .parse()
        .unwrap();
    watch
        .wait_for_log("simulated traffic finished", Duration::from_secs(60))
        .unwrap();
    let produced = wait(
        "every message acknowledged",
        Duration::from_secs(30),
        || {
            let n = count(&metrics(watch), "drainguard_kafka_produced_total");
            (n >= records).then_some(n)
        },
    );
    (records, produced)
}

#[test]
fn e2e_tansu_events_wait_in_kafka_while_the_engine_is_down_and_none_is_lost_or_evaluated_twice() {
    let broker = Broker::start().unwrap();
    let bus = bus(&broker, "drainguard.restart", 3);
    let (watch_dir, engine_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let engine_cfg = drainguard_e2e::write_config(engine_dir.path(), &bus).unwrap();

    // The watcher publishes a whole simulated half-day (with its drain)
    // while no engine runs.
    let mut watch = Daemon::start_as("watch", &watch_config(watch_dir.path(), &bus), &[]).unwrap();
    let (records, produced) = play_day(&mut watch);
    assert!(
        produced > records,
        "declarations, heads and prices go to every partition: {produced} messages for {records} events"
    );
    // Each chain's checkpoint moved once the broker held its blocks.
    let checkpoints = metrics(&watch);
    for chain in ["ethereum", "tron", "bitcoin"] {
        assert!(
            metric_sum(
                &checkpoints,
                &format!("drainguard_chain_checkpoint_block{{chain=\"{chain}\"}}")
            ) > 0.0,
            "{chain} checkpoint: {checkpoints}"
        );
    }

    // The engine comes up late, reads everything once, and freezes.
    let mut engine = Daemon::start_as("engine", &engine_cfg, &[]).unwrap();
    let evaluated = wait("every event evaluated", Duration::from_secs(60), || {
        let m = metrics(&engine);
        let n = count(&m, "drainguard_events_total");
        (n >= records).then_some((n, m))
    });
    assert_eq!(
        evaluated.0, records,
        "each event evaluated exactly once, broadcast copies dropped"
    );
    assert_eq!(
        count(&evaluated.1, "drainguard_kafka_consumed_total"),
        produced,
        "every message read"
    );
    engine
        .wait_for_log("FREEZE raised", Duration::from_secs(10))
        .unwrap();
    let frozen = count(&metrics(&engine), "drainguard_freezes_active");
    assert!(frozen >= 1, "{frozen} freezes in force");
    // Its offsets are committed: the lag of every partition drains to 0.
    wait(
        "the consumer lag to reach 0",
        Duration::from_secs(30),
        || {
            let m = metrics(&engine);
            let lags: Vec<f64> = m
                .lines()
                .filter(|l| l.starts_with("drainguard_kafka_consumer_lag_messages{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            (lags.len() == 3 && lags.iter().all(|l| *l == 0.0)).then_some(())
        },
    );

    // A restart of the engine resumes after its committed offsets: no
    // message is read again, the freezes stand.
    let status = engine
        .signal_and_wait("TERM", Duration::from_secs(20))
        .unwrap();
    assert!(status.success(), "clean shutdown: {status}");
    let engine = Daemon::start_as("engine", &engine_cfg, &[]).unwrap();
    wait(
        "the consumer lag after the restart",
        Duration::from_secs(30),
        || {
            metrics(&engine)
                .contains("drainguard_kafka_consumer_lag_messages{")
                .then_some(())
        },
    );
    std::thread::sleep(Duration::from_secs(3));
    let after = metrics(&engine);
    assert_eq!(
        count(&after, "drainguard_kafka_consumed_total"),
        0,
        "nothing read twice after a clean restart"
    );
    assert_eq!(
        count(&after, "drainguard_freezes_active"),
        frozen,
        "the freezes stand (from the store)"
    );
}

/// A broker with `topic` of one partition, and an engine that has joined
/// its group (with its folder, to keep, and its configuration).
fn one_engine(topic: &str) -> (Broker, tempfile::TempDir, PathBuf, Daemon) {
    let broker = Broker::start().unwrap();
    broker.create_topic(topic, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = drainguard_e2e::write_config(dir.path(), &bus(&broker, topic, 1)).unwrap();
    let mut engine = Daemon::start_as("engine", &cfg, &[]).unwrap();
    engine
        .wait_for_log("kafka subscriber joined", Duration::from_secs(30))
        .unwrap();
    (broker, dir, cfg, engine)
}

/// Produces each payload, in order, to partition 0 of `topic`.
fn produce(broker: &Broker, topic: &str, payloads: &[&str]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for payload in payloads {
        rt.block_on(
            producer.send(
                FutureRecord::<str, str>::to(topic)
                    .payload(*payload)
                    .partition(0),
                Duration::from_secs(10),
            ),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
}

#[test]
fn e2e_tansu_a_restarted_engine_still_knows_the_wallets_their_balances_and_the_prices() {
    let topic = "drainguard.declarations";
    let (broker, _dir, cfg, engine) = one_engine(topic);
    // What a watcher says once, when it starts.
    produce(
        &broker,
        topic,
        &[
            r#"{"t":"2026-01-01T00:00:00Z","kind":"wallet","chain":"ethereum","address":"0xaa","name":"eth-hot-1","balances":{"ETH":"1000"}}"#,
            r#"{"t":"2026-01-01T00:00:01Z","kind":"price","asset":"ETH","usd":3000.0}"#,
            r#"{"t":"2026-01-01T00:00:05Z","kind":"balance","chain":"ethereum","wallet":"0xaa","asset":"ETH","amount":"100"}"#,
        ],
    );
    wait(
        "the declarations evaluated",
        Duration::from_secs(30),
        || (count(&metrics(&engine), "drainguard_events_total") >= 3).then_some(()),
    );
    let status = engine
        .signal_and_wait("TERM", Duration::from_secs(20))
        .unwrap();
    assert!(status.success(), "clean shutdown: {status}");

    // The watcher goes on; the engine comes back past those messages.
    let mut engine = Daemon::start_as("engine", &cfg, &[]).unwrap();
    let restored = engine
        .wait_for_log("declarations restored", Duration::from_secs(30))
        .unwrap();
    assert!(
        restored.contains("wallets=1")
            && restored.contains("balances=1")
            && restored.contains("prices=1"),
        "{restored}"
    );
    engine
        .wait_for_log("kafka subscriber joined", Duration::from_secs(30))
        .unwrap();
    // 90 of the 100 ETH last observed leave in one transaction.
    produce(
        &broker,
        topic,
        &[
            r#"{"t":"2026-01-01T00:01:00Z","kind":"transfer","chain":"ethereum","tx_hash":"0x1","index":0,"stage":"pending","from":"0xaa","to":"0xbb","asset":"ETH","amount":"90"}"#,
        ],
    );
    let frozen = engine
        .wait_for_log("FREEZE raised", Duration::from_secs(30))
        .unwrap();
    assert!(
        frozen.contains("wallet:ethereum:0xaa")
            && frozen.contains("takes 90.0% of 0xaa's ETH balance: 90 ETH ($270000.00)"),
        "frozen at the restored price and balance: {frozen}"
    );
    assert_eq!(
        count(&metrics(&engine), "drainguard_kafka_consumed_total"),
        1,
        "only the new message was read"
    );
}

#[test]
fn e2e_tansu_a_message_that_is_not_a_record_is_named_counted_and_passed_over() {
    let topic = "drainguard.unreadable";
    let (broker, _dir, _cfg, mut engine) = one_engine(topic);

    let price = r#"{"t":"2026-01-01T00:00:00Z","kind":"price","asset":"ETH","usd":3000.0}"#;
    let transfer = r#"{"t":"2026-01-01T00:00:01Z","kind":"transfer","chain":"ethereum","tx_hash":"0x1","index":0,"stage":"pending","from":"0xa","to":"0xb","asset":"ETH","amount":"1"}"#;
    produce(
        &broker,
        topic,
        &[
            "this is not json",
            transfer.replace("\"1\"", "\"-1\"").as_str(),
            price,
        ],
    );

    let m = wait(
        "the valid record after the bad ones",
        Duration::from_secs(30),
        || {
            let m = metrics(&engine);
            (metric_sum(&m, "drainguard_events_total{chain=\"\",kind=\"price\"") >= 1.0)
                .then_some(m)
        },
    );
    assert_eq!(count(&m, "drainguard_kafka_unreadable_total"), 2);
    assert_eq!(count(&m, "drainguard_kafka_consumed_total"), 3);
    let first = engine
        .wait_for_log("not a valid record", Duration::from_secs(5))
        .unwrap();
    assert!(
        first.contains("partition=0") && first.contains("offset=0") && first.contains("JSON"),
        "the log names where the message is and what is wrong: {first}"
    );
    let log = engine.log().join("\n");
    assert!(
        log.contains("offset=1") && log.contains("field `amount`"),
        "a record with a bad field is named by its field: {log}"
    );
    assert!(engine.is_running(), "the engine goes on");
}

#[test]
fn a_bad_kafka_bus_config_names_every_field_and_the_split_commands_need_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let check = |body: &str| {
        let path = drainguard_e2e::write_config(dir.path(), body).unwrap();
        let out = drainguard_e2e::drainguard(&["check-config", "--config", path.to_str().unwrap()])
            .unwrap();
        assert!(!out.status.success(), "refused: {body}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check(
        "[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"nohost\"\ntopic = \"bad topic!\"\ngroup = \" \"\npartitions = 0\nreplication = 0\ndelivery_timeout = \"soon\"\n",
    );
    for field in [
        "bus.kafka.brokers",
        "bus.kafka.topic",
        "bus.kafka.group",
        "bus.kafka.partitions",
        "bus.kafka.replication",
        "bus.kafka.delivery_timeout",
    ] {
        assert!(
            err.contains(&format!("field `{field}`")),
            "{field} not named in: {err}"
        );
    }
    assert!(check("[bus]\nkind = \"kafka\"\n").contains("field `bus.kafka`: missing"));
    assert!(check("[bus]\nkind = \"rabbit\"\n").contains("field `bus.kind`"));

    let memory = drainguard_e2e::write_config(dir.path(), "").unwrap();
    for command in ["watch", "engine"] {
        let out =
            drainguard_e2e::drainguard(&[command, "--config", memory.to_str().unwrap()]).unwrap();
        assert!(!out.status.success(), "{command} without Kafka");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("`drainguard {command}`"))
                && err.contains("bus.kind = \"kafka\""),
            "{err}"
        );
    }
}

/// The partitions of the last assignment `d` logged, if any.
fn assigned(d: &Daemon) -> Option<Vec<u32>> {
    let line = d
        .log()
        .into_iter()
        .rev()
        .find(|l| l.contains("kafka partitions assigned"))?;
    let list = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("partitions="))?;
    let mut parts: Vec<u32> = list
        .trim_matches('"')
        .split(',')
        .filter_map(|p| p.parse().ok())
        .collect();
    parts.sort_unstable();
    Some(parts)
}

/// Events of these kinds the engine evaluated.
fn evaluated(text: &str, kinds: &[&str]) -> u64 {
    kinds
        .iter()
        .map(|k| {
            text.lines()
                .filter(|l| {
                    l.starts_with("drainguard_events_total{")
                        && l.contains(&format!("kind=\"{k}\""))
                })
                .map(|l| count(l, "drainguard_events_total"))
                .sum::<u64>()
        })
        .sum()
}

#[test]
fn e2e_tansu_two_engines_in_one_group_share_the_wallets_and_each_event_is_evaluated_once() {
    const BROADCAST: &[&str] = &["wallet", "head", "price"];
    const KEYED: &[&str] = &["transfer", "intent", "balance", "approval", "admin"];
    let broker = Broker::start().unwrap();
    let partitions = 4;
    let bus = bus(&broker, "drainguard.group", partitions);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let engines: Vec<Daemon> = dirs[..2]
        .iter()
        .map(|d| {
            let cfg = drainguard_e2e::write_config(d.path(), &bus).unwrap();
            Daemon::start_as("engine", &cfg, &[]).unwrap()
        })
        .collect();
    // Both engines hold a share of the partitions before anything is
    // published: no rebalance in the middle, so no event read twice.
    let shares = wait("the group to settle", Duration::from_secs(60), || {
        let a = assigned(&engines[0])?;
        let b = assigned(&engines[1])?;
        let mut all: Vec<u32> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        (!a.is_empty() && !b.is_empty() && all == (0..partitions).collect::<Vec<_>>())
            .then_some((a, b))
    });

    let mut watch = Daemon::start_as("watch", &watch_config(dirs[2].path(), &bus), &[]).unwrap();
    let (records, produced) = play_day(&mut watch);
    // Every message read, and each acknowledged once its work was done.
    let last = std::cell::RefCell::new(String::new());
    let texts = wait_or(
        "both engines to read and evaluate every message",
        Duration::from_secs(60),
        || format!("{produced} produced; last seen: {}", last.borrow()),
        || {
            let texts: Vec<String> = engines.iter().map(metrics).collect();
            let consumed: u64 = texts
                .iter()
                .map(|t| count(t, "drainguard_kafka_consumed_total"))
                .sum();
            let lags: Vec<u64> = texts
                .iter()
                .flat_map(|t| t.lines())
                .filter(|l| l.starts_with("drainguard_kafka_consumer_lag_messages{"))
                .map(|l| count(l, "drainguard_kafka_consumer_lag_messages"))
                .collect();
            *last.borrow_mut() = format!("consumed {consumed}, lags {lags:?}");
            (consumed == produced && lags.len() == 4 && lags.iter().all(|l| *l == 0))
                .then_some(texts)
        },
    );
    // Declarations, heads and prices reach every engine, once each.
    let broadcast = evaluated(&texts[0], BROADCAST);
    assert_eq!(evaluated(&texts[1], BROADCAST), broadcast);
    // records = single + internal + broadcast, and produced = single +
    // 2 x internal + partitions x broadcast (a move between two of the
    // exchange's wallets goes to both wallets' partitions).
    let internal = produced - records - u64::from(partitions - 1) * broadcast;
    let keyed = records - broadcast;
    let shared: Vec<u64> = texts.iter().map(|t| evaluated(t, KEYED)).collect();
    let total: u64 = shared.iter().sum();
    assert!(
        (keyed..=keyed + internal).contains(&total),
        "each wallet's events evaluated by the one engine holding it, once; a move between wallets of both engines by both: {shared:?} for {keyed} events, {internal} internal"
    );
    assert!(
        shared.iter().all(|n| *n > 0),
        "both engines have wallets: {shared:?}"
    );
    let frozen: u64 = texts
        .iter()
        .map(|t| count(t, "drainguard_freezes_active"))
        .sum();
    assert!(
        frozen >= 1,
        "the engine holding the drained wallet froze it"
    );
    assert_eq!(
        (
            assigned(&engines[0]).unwrap(),
            assigned(&engines[1]).unwrap()
        ),
        shares,
        "no rebalance while the day played"
    );
}
