//! The daemon configuration: parsed with `deny_unknown_fields`, validated
//! once into [`Config`], collecting every error with its field. No
//! environment tricks in here: secrets come from the environment where
//! they are used, never from this file.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use drainguard_bus::kafka::KafkaSettings;
use drainguard_engine::RuleSet;
use drainguard_respond::{PagerConfig, Secret, WebhookConfig, webhook::Endpoint};
use drainguard_sim::{PRESETS, SimConfig, preset};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    api: RawApi,
    store: RawStore,
    #[serde(default)]
    rules: RawRules,
    #[serde(default)]
    bus: RawBus,
    #[serde(default)]
    source: RawSources,
    webhook: Option<RawWebhook>,
    pagerduty: Option<RawPagerDuty>,
    #[serde(default)]
    delivery: RawDelivery,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: String,
    url: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvmEndpoint {
    name: String,
    url: String,
    ws: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    #[serde(default = "yes")]
    enabled: bool,
    endpoints: Vec<RawEndpoint>,
    secret_env: Option<String>,
    secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagerDuty {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "pagerduty_url")]
    url: String,
    routing_key_env: Option<String>,
    routing_key_file: Option<String>,
    #[serde(default = "default_source")]
    source: String,
    #[serde(default = "default_console")]
    console_url: String,
    #[serde(default = "default_resolve_after")]
    resolve_after: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    #[serde(default = "default_initial_backoff")]
    initial_backoff: String,
    #[serde(default = "default_max_backoff")]
    max_backoff: String,
    #[serde(default = "default_timeout")]
    timeout: String,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            timeout: default_timeout(),
        }
    }
}

fn pagerduty_url() -> String {
    "https://events.pagerduty.com".to_string()
}
fn default_source() -> String {
    "drainguard".to_string()
}
fn default_console() -> String {
    "http://127.0.0.1:9464".to_string()
}
fn default_resolve_after() -> String {
    "30m".to_string()
}
fn default_initial_backoff() -> String {
    "1s".to_string()
}
fn default_max_backoff() -> String {
    "5m".to_string()
}
fn default_timeout() -> String {
    "10s".to_string()
}

/// How actions are delivered.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    /// Retry delays.
    pub(crate) backoff: drainguard_respond::Backoff,
    /// Per request.
    pub(crate) timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {
    #[serde(default = "default_capacity")]
    capacity: usize,
    #[serde(default = "default_bus_kind")]
    kind: String,
    kafka: Option<RawKafka>,
}

impl Default for RawBus {
    fn default() -> Self {
        RawBus {
            capacity: default_capacity(),
            kind: default_bus_kind(),
            kafka: None,
        }
    }
}

fn default_capacity() -> usize {
    10_000
}
fn default_bus_kind() -> String {
    "memory".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: String,
    #[serde(default = "default_topic")]
    topic: String,
    #[serde(default = "default_group")]
    group: String,
    #[serde(default = "default_partitions")]
    partitions: i32,
    #[serde(default = "default_replication")]
    replication: i32,
    #[serde(default = "default_delivery_timeout")]
    delivery_timeout: String,
}

fn default_topic() -> String {
    "drainguard.events".to_string()
}
fn default_group() -> String {
    "drainguard-engine".to_string()
}
fn default_partitions() -> i32 {
    6
}
fn default_replication() -> i32 {
    1
}
fn default_delivery_timeout() -> String {
    "5m".to_string()
}

/// Checks `[bus.kafka]`, reporting each bad field.
fn check_kafka(raw: RawKafka, mut err: impl FnMut(&str, String)) -> Option<KafkaSettings> {
    let mut ok = true;
    let mut bad = |field: &str, msg: String| {
        ok = false;
        err(field, msg);
    };
    if raw.brokers.split(',').any(|b| {
        let b = b.trim();
        b.rsplit_once(':')
            .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
    }) {
        bad(
            "bus.kafka.brokers",
            format!(
                "{:?} is not a comma-separated list of host:port",
                raw.brokers
            ),
        );
    }
    // Kafka's own rule for topic names.
    if raw.topic.is_empty()
        || raw.topic.len() > 249
        || raw.topic == "."
        || raw.topic == ".."
        || !raw
            .topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        bad(
            "bus.kafka.topic",
            format!(
                "{:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)",
                raw.topic
            ),
        );
    }
    if raw.group.trim().is_empty() {
        bad("bus.kafka.group", "must not be empty".to_string());
    }
    if !(1..=10_000).contains(&raw.partitions) {
        bad(
            "bus.kafka.partitions",
            format!("{} is not in 1..=10000", raw.partitions),
        );
    }
    if !(1..=32).contains(&raw.replication) {
        bad(
            "bus.kafka.replication",
            format!("{} is not in 1..=32", raw.replication),
        );
    }
    let delivery_timeout = match humantime::parse_duration(&raw.delivery_timeout) {
        Ok(d) if d >= Duration::from_secs(1) && d <= Duration::from_secs(24 * 3600) => d,
        Ok(_) => {
            bad(
                "bus.kafka.delivery_timeout",
                format!("{:?} is not between 1s and 24h", raw.delivery_timeout),
            );
            Duration::ZERO
        }
        Err(e) => {
            bad(
                "bus.kafka.delivery_timeout",
                format!("{:?} is not a duration: {e}", raw.delivery_timeout),
            );
            Duration::ZERO
        }
    };
    ok.then_some(KafkaSettings {
        brokers: raw.brokers,
        topic: raw.topic,
        group: raw.group,
        partitions: raw.partitions,
        replication: raw.replication,
        delivery_timeout,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSources {
    sim: Option<RawSim>,
    #[serde(default)]
    evm: Vec<RawEvm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvmWallet {
    address: String,
    name: String,
    #[serde(default = "hot")]
    role: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvmToken {
    address: String,
    symbol: String,
    decimals: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvm {
    #[serde(default = "yes")]
    enabled: bool,
    chain: String,
    native: String,
    #[serde(default = "eighteen")]
    native_decimals: u8,
    block_time: String,
    confirmations: u64,
    #[serde(default = "sixty_four")]
    max_reorg_depth: u64,
    poll_interval: Option<String>,
    #[serde(default = "default_rate")]
    rate_limit: u32,
    #[serde(default = "default_rpc_timeout")]
    timeout: String,
    start_block: Option<u64>,
    #[serde(default = "default_batch_blocks")]
    batch_blocks: u64,
    #[serde(default = "yes")]
    mempool: bool,
    endpoints: Vec<RawEvmEndpoint>,
    #[serde(default)]
    wallets: Vec<RawEvmWallet>,
    #[serde(default)]
    tokens: Vec<RawEvmToken>,
    #[serde(default)]
    prices: std::collections::BTreeMap<String, f64>,
}

fn hot() -> String {
    "hot".to_string()
}
fn eighteen() -> u8 {
    18
}
fn sixty_four() -> u64 {
    64
}
fn default_rate() -> u32 {
    25
}
fn default_batch_blocks() -> u64 {
    100
}
fn default_rpc_timeout() -> String {
    "10s".to_string()
}

/// One EVM chain to watch.
#[derive(Debug, Clone)]
pub(crate) struct EvmSource {
    pub(crate) chain: drainguard_evm::EvmChain,
    pub(crate) watched: drainguard_evm::Watched,
    pub(crate) timeout: Duration,
    /// Static USD prices (until a price feed exists), sent at start.
    pub(crate) prices: Vec<(String, f64)>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSim {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_preset")]
    preset: String,
    #[serde(default = "one")]
    seed: u64,
    incident_at: Option<String>,
    #[serde(default = "one_f")]
    speed: f64,
    #[serde(default = "one_f")]
    volume: f64,
    #[serde(default = "yes")]
    intents: bool,
    #[serde(default = "day")]
    hours: f64,
}

fn yes() -> bool {
    true
}
fn one() -> u64 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn day() -> f64 {
    24.0
}
fn default_preset() -> String {
    "normal".to_string()
}

/// The simulator as chain source.
#[derive(Debug, Clone)]
pub(crate) struct SimSource {
    /// What to generate (the start is set when the daemon starts).
    pub(crate) sim: SimConfig,
    /// Scenario seconds per wall-clock second.
    pub(crate) speed: f64,
}

/// The checked configuration.
#[derive(Debug)]
pub(crate) struct Config {
    /// Where the HTTP API listens.
    pub(crate) listen: SocketAddr,
    /// The SQLite store.
    pub(crate) store_path: PathBuf,
    /// The rules.
    pub(crate) rules: RuleSet,
    /// Where the rules came from.
    pub(crate) rules_source: String,
    /// The rules file (`[rules] path`, relative to the configuration
    /// file); `None` for the built-in rules. A reload reads it again.
    pub(crate) rules_path: Option<PathBuf>,
    /// Bus capacity in events.
    pub(crate) bus_capacity: usize,
    /// The Kafka bus, when `bus.kind = "kafka"`; `None` for the in-process
    /// bus.
    pub(crate) kafka: Option<KafkaSettings>,
    /// The simulator source, if enabled.
    pub(crate) sim: Option<SimSource>,
    /// The EVM chains watched.
    pub(crate) evm: Vec<EvmSource>,
    /// The freeze webhook, if configured.
    pub(crate) webhook: Option<WebhookConfig>,
    /// PagerDuty, if configured.
    pub(crate) pagerduty: Option<PagerConfig>,
    /// Delivery of both.
    pub(crate) delivery: Delivery,
}

/// How the built-in rules are named in logs, reports and the audit log.
pub(crate) const BUILTIN_RULES: &str = "the built-in rules";

/// Every error found in a configuration.
#[derive(Debug)]
pub(crate) struct LoadErrors(pub(crate) Vec<String>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Reads and validates a rules file; files it refers to are relative to it.
pub(crate) fn load_rules(path: &Path) -> Result<RuleSet, LoadErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let read = |rel: &str| std::fs::read_to_string(resolve(&dir, rel)).map_err(|e| e.to_string());
    RuleSet::from_toml(&path.display().to_string(), &text, &read)
        .map_err(|e| LoadErrors(e.0.iter().map(ToString::to_string).collect()))
}

/// `replay --config`: a rules file, or a daemon configuration whose
/// `[rules] path` names one.
pub(crate) fn load_rules_for_replay(path: &Path) -> anyhow::Result<RuleSet> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let is_daemon_config = text
        .parse::<toml::Table>()
        .is_ok_and(|t| t.contains_key("api") || t.contains_key("store"));
    if is_daemon_config {
        return load(path).map(|c| c.rules).map_err(anyhow::Error::new);
    }
    load_rules(path).map_err(anyhow::Error::new)
}

/// Only the store's path from a daemon configuration (relative to the
/// file): what `drainguard audit` needs, without the secrets `run` needs.
pub(crate) fn store_path(path: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(path)?;
    let table: toml::Table = text.parse()?;
    let p = table
        .get("store")
        .and_then(|s| s.get("path"))
        .and_then(toml::Value::as_str)
        .context("field `store.path` is missing")?;
    Ok(resolve(path.parent().unwrap_or(Path::new(".")), p))
}

/// Reads a secret from exactly one of an environment variable or a file;
/// an error names the field and where the secret was looked for, never its
/// value.
fn read_secret<'a>(
    base: &Path,
    (field_env, field_file): (&'a str, &'a str),
    (env, file): (&Option<String>, &Option<String>),
) -> Result<Secret, (&'a str, String)> {
    match (env, file) {
        (Some(var), None) => Secret::from_env(var).map_err(|e| (field_env, e.to_string())),
        (None, Some(f)) => {
            Secret::from_file(&resolve(base, f)).map_err(|e| (field_file, e.to_string()))
        }
        (Some(_), Some(_)) => Err((
            field_env,
            format!("give `{field_env}` or `{field_file}`, not both"),
        )),
        (None, None) => Err((
            field_env,
            format!(
                "missing: the secret comes from `{field_env}` (an environment variable) or `{field_file}` (a file)"
            ),
        )),
    }
}

/// The most decimals an asset may have (the intents API's limit too).
pub(crate) const MAX_DECIMALS: u8 = 36;

/// A TOML error by its line, column and message only: the parser's own
/// text quotes the offending line, which may hold an endpoint URL with its
/// API key.
fn parse_error(file: &str, text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{file}: line {line}, column {column}: {message}")
        }
        None => format!("{file}: {message}"),
    }
}

/// Reads and validates the daemon configuration and its rules.
pub(crate) fn load(path: &Path) -> Result<Config, LoadErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadErrors(vec![format!("{file}: cannot read: {e}")]))?;
    let raw: RawConfig =
        toml::from_str(&text).map_err(|e| LoadErrors(vec![parse_error(&file, &text, &e)]))?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut errors = Vec::new();
    let mut err = |field: &str, msg: String| errors.push(format!("{file}: field `{field}`: {msg}"));

    let listen = raw.api.listen.parse::<SocketAddr>().unwrap_or_else(|e| {
        err(
            "api.listen",
            format!(
                "{:?} is not an address like 127.0.0.1:9464: {e}",
                raw.api.listen
            ),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    if raw.store.path.trim().is_empty() {
        err("store.path", "must not be empty".to_string());
    }
    let store_path = resolve(&base, &raw.store.path);
    if raw.bus.capacity == 0 || raw.bus.capacity > 10_000_000 {
        err(
            "bus.capacity",
            format!("{} is not in 1..=10000000", raw.bus.capacity),
        );
    }
    let kafka = match (raw.bus.kind.as_str(), raw.bus.kafka) {
        ("memory", _) => None,
        ("kafka", Some(k)) => check_kafka(k, &mut err),
        ("kafka", None) => {
            err(
                "bus.kafka",
                "missing: bus.kind = \"kafka\" needs a [bus.kafka] table with brokers".to_string(),
            );
            None
        }
        (other, _) => {
            err(
                "bus.kind",
                format!("{other:?} is not one of \"memory\", \"kafka\""),
            );
            None
        }
    };
    let sim = match raw.source.sim {
        Some(s) if s.enabled => {
            let mut cfg = preset(&s.preset, s.seed);
            if cfg.is_none() {
                err(
                    "source.sim.preset",
                    format!("{:?} is not one of {}", s.preset, PRESETS.join(", ")),
                );
            }
            if !(s.speed.is_finite() && s.speed > 0.0 && s.speed <= 100_000.0) {
                err(
                    "source.sim.speed",
                    format!("{} is not in (0, 100000]", s.speed),
                );
            }
            if !(s.volume.is_finite() && s.volume > 0.0 && s.volume <= 1000.0) {
                err(
                    "source.sim.volume",
                    format!("{} is not in (0, 1000]", s.volume),
                );
            }
            if !(s.hours.is_finite() && s.hours > 0.0 && s.hours <= 744.0) {
                err(
                    "source.sim.hours",
                    format!("{} is not in (0, 744]", s.hours),
                );
            }
            let incident_at = match &s.incident_at {
                None => None,
                Some(v) => match humantime::parse_duration(v) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        err(
                            "source.sim.incident_at",
                            format!("{v:?} is not a duration like \"10m\": {e}"),
                        );
                        None
                    }
                },
            };
            if let Some(c) = cfg.as_mut() {
                c.volume = s.volume;
                c.intents = s.intents;
                // Checked above; a NaN (TOML has `nan`) must not reach
                // from_secs_f64, which panics on it, before the errors
                // are reported.
                let hours = if s.hours.is_finite() {
                    s.hours.clamp(0.001, 744.0)
                } else {
                    1.0
                };
                c.duration = Duration::from_secs_f64(hours * 3600.0);
                if let Some(at) = incident_at {
                    for (_, offset) in &mut c.incidents {
                        *offset = at;
                    }
                }
            }
            cfg.map(|sim| SimSource {
                sim,
                speed: s.speed,
            })
        }
        _ => None,
    };
    let mut duration = |field: &str, v: &str| match humantime::parse_duration(v) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            err(field, "must be more than zero".to_string());
            None
        }
        Err(e) => {
            err(field, format!("{v:?} is not a duration like \"30s\": {e}"));
            None
        }
    };
    let initial_backoff = duration("delivery.initial_backoff", &raw.delivery.initial_backoff);
    let max_backoff = duration("delivery.max_backoff", &raw.delivery.max_backoff);
    let timeout = duration("delivery.timeout", &raw.delivery.timeout);
    let resolve_after = raw
        .pagerduty
        .as_ref()
        .and_then(|p| duration("pagerduty.resolve_after", &p.resolve_after));
    let delivery = Delivery {
        backoff: drainguard_respond::Backoff {
            initial: initial_backoff.unwrap_or(Duration::from_secs(1)),
            max: max_backoff.unwrap_or(Duration::from_secs(300)),
        },
        timeout: timeout.unwrap_or(Duration::from_secs(10)),
    };
    if delivery.backoff.max < delivery.backoff.initial {
        err(
            "delivery.max_backoff",
            "must not be shorter than delivery.initial_backoff".to_string(),
        );
    }
    let webhook = match raw.webhook {
        Some(w) if w.enabled => {
            if w.endpoints.is_empty() {
                err(
                    "webhook.endpoints",
                    "needs at least one endpoint".to_string(),
                );
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, ep) in w.endpoints.iter().enumerate() {
                if ep.name.trim().is_empty() || !names.insert(ep.name.clone()) {
                    err(
                        &format!("webhook.endpoints[{i}].name"),
                        format!("{:?} must be non-empty and unique", ep.name),
                    );
                }
                if !(ep.url.starts_with("https://") || ep.url.starts_with("http://")) {
                    err(
                        &format!("webhook.endpoints[{i}].url"),
                        "must be an http:// or https:// URL".to_string(),
                    );
                }
            }
            let key = read_secret(
                &base,
                ("webhook.secret_env", "webhook.secret_file"),
                (&w.secret_env, &w.secret_file),
            )
            .map_err(|(field, msg)| err(field, msg))
            .ok();
            key.map(|secret| WebhookConfig {
                endpoints: w
                    .endpoints
                    .into_iter()
                    .map(|e| Endpoint {
                        name: e.name,
                        url: e.url,
                    })
                    .collect(),
                secret,
            })
        }
        _ => None,
    };
    let pagerduty = match raw.pagerduty {
        Some(p) if p.enabled => {
            if !(p.url.starts_with("https://") || p.url.starts_with("http://")) {
                err(
                    "pagerduty.url",
                    "must be an http:// or https:// URL".to_string(),
                );
            }
            if p.source.trim().is_empty() {
                err("pagerduty.source", "must not be empty".to_string());
            }
            let key = read_secret(
                &base,
                ("pagerduty.routing_key_env", "pagerduty.routing_key_file"),
                (&p.routing_key_env, &p.routing_key_file),
            )
            .map_err(|(field, msg)| err(field, msg))
            .ok();
            let key = key.filter(|k| {
                let ok = k.expose().len() == 32;
                if !ok {
                    err(
                        "pagerduty.routing_key_env",
                        format!(
                            "the routing key must be the 32-character integration key (it has {} characters)",
                            k.expose().len()
                        ),
                    );
                }
                ok
            });
            key.map(|routing_key| PagerConfig {
                routing_key,
                url: p.url,
                source: p.source,
                console_url: p.console_url,
                resolve_after: resolve_after.unwrap_or(Duration::from_secs(1800)),
            })
        }
        _ => None,
    };
    let mut evm = Vec::new();
    for (i, c) in raw.source.evm.into_iter().enumerate() {
        if !c.enabled {
            continue;
        }
        let f = |name: &str| format!("source.evm[{i}].{name}");
        let mut dur = |name: &str, v: &str| match humantime::parse_duration(v) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                err(&f(name), format!("{v:?} is not a duration like \"12s\""));
                None
            }
        };
        let block_time = dur("block_time", &c.block_time).unwrap_or(Duration::from_secs(12));
        let poll_interval = match &c.poll_interval {
            Some(v) => dur("poll_interval", v).unwrap_or(Duration::from_secs(1)),
            None => (block_time / 4).clamp(Duration::from_millis(100), Duration::from_secs(3)),
        };
        let timeout = dur("timeout", &c.timeout).unwrap_or(Duration::from_secs(10));
        if c.endpoints.is_empty() {
            err(&f("endpoints"), "needs at least one endpoint".to_string());
        }
        for (j, e) in c.endpoints.iter().enumerate() {
            if !(e.url.starts_with("http://") || e.url.starts_with("https://")) {
                err(
                    &f(&format!("endpoints[{j}].url")),
                    "must be an http:// or https:// URL".to_string(),
                );
            }
            if let Some(ws) = &e.ws
                && !(ws.starts_with("ws://") || ws.starts_with("wss://"))
            {
                err(
                    &f(&format!("endpoints[{j}].ws")),
                    "must be a ws:// or wss:// URL".to_string(),
                );
            }
        }
        if !(1..=1000).contains(&c.batch_blocks) {
            err(
                &f("batch_blocks"),
                format!("{} is not between 1 and 1000", c.batch_blocks),
            );
        }
        // Past 36 no real asset exists, and USD arithmetic on amounts
        // (10^decimals) would overflow: as the intents API refuses.
        if c.native_decimals > MAX_DECIMALS {
            err(
                &f("native_decimals"),
                format!("{} is more than {MAX_DECIMALS}", c.native_decimals),
            );
        }
        let mut watched = drainguard_evm::Watched::new(
            drainguard_model::Asset::new(&c.native),
            c.native_decimals,
        );
        for (j, w) in c.wallets.iter().enumerate() {
            let role = match w.role.as_str() {
                "hot" => drainguard_model::WalletRole::Hot,
                "cold" => drainguard_model::WalletRole::Cold,
                "tripwire" => drainguard_model::WalletRole::Tripwire,
                other => {
                    err(
                        &f(&format!("wallets[{j}].role")),
                        format!("{other:?} is not hot, cold or tripwire"),
                    );
                    continue;
                }
            };
            match w.address.parse() {
                Ok(a) => watched.wallet(a, &w.name, role),
                Err(e) => err(
                    &f(&format!("wallets[{j}].address")),
                    format!("{:?}: {e}", w.address),
                ),
            }
        }
        for (j, t) in c.tokens.iter().enumerate() {
            if t.decimals > MAX_DECIMALS {
                err(
                    &f(&format!("tokens[{j}].decimals")),
                    format!("{} is more than {MAX_DECIMALS}", t.decimals),
                );
            }
            match t.address.parse() {
                Ok(a) => watched.add_token(a, drainguard_model::Asset::new(&t.symbol), t.decimals),
                Err(e) => err(
                    &f(&format!("tokens[{j}].address")),
                    format!("{:?}: {e}", t.address),
                ),
            }
        }
        if c.rate_limit == 0 {
            err(&f("rate_limit"), "must be at least 1".to_string());
        }
        // Bounds far past any chain's, so block arithmetic stays small.
        if c.confirmations > 100_000 {
            err(
                &f("confirmations"),
                format!("{} is more than 100000", c.confirmations),
            );
        }
        if !(1..=100_000).contains(&c.max_reorg_depth) {
            err(
                &f("max_reorg_depth"),
                format!("{} is not between 1 and 100000", c.max_reorg_depth),
            );
        }
        evm.push(EvmSource {
            chain: drainguard_evm::EvmChain {
                name: drainguard_model::Chain::new(&c.chain),
                endpoints: c
                    .endpoints
                    .into_iter()
                    .map(|e| drainguard_evm::Endpoint {
                        name: e.name,
                        url: e.url,
                        ws: e.ws,
                    })
                    .collect(),
                block_time,
                confirmations: c.confirmations,
                max_reorg_depth: c.max_reorg_depth,
                poll_interval,
                rate_limit: c.rate_limit,
                start_block: c.start_block,
                batch_blocks: c.batch_blocks,
                mempool: c.mempool,
            },
            watched,
            timeout,
            prices: c.prices.into_iter().collect(),
        });
    }
    let rules_path = raw.rules.path.as_deref().map(|p| resolve(&base, p));
    let (rules, rules_source) = match &rules_path {
        None => match RuleSet::builtin() {
            Ok(r) => (Some(r), BUILTIN_RULES.to_string()),
            Err(e) => {
                errors.extend(e.0.iter().map(ToString::to_string));
                (None, String::new())
            }
        },
        Some(rp) => match load_rules(rp) {
            Ok(r) => (Some(r), rp.display().to_string()),
            Err(e) => {
                errors.extend(e.0);
                (None, String::new())
            }
        },
    };
    match rules {
        Some(rules) if errors.is_empty() => Ok(Config {
            listen,
            store_path,
            rules,
            rules_source,
            rules_path,
            bus_capacity: raw.bus.capacity,
            kafka,
            sim,
            evm,
            webhook,
            pagerduty,
            delivery,
        }),
        _ => Err(LoadErrors(errors)),
    }
}
