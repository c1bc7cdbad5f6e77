//! Rules as configured: parsed from TOML, validated once into a checked
//! [`RuleSet`] that the engine can trust.
//!
//! Validation collects every error, each naming the file, the rule and the
//! field, so an operator fixes a file in one pass. Files a rule refers to
//! (denylists) are read through a caller-supplied function: the engine
//! itself does no I/O.

use std::{collections::HashSet, fmt, time::Duration};

/// A set of addresses (a denylist, an allowlist), hashed with a fast
/// seeded hasher: it is probed for every outflow.
pub type AddressSet = HashSet<Address, foldhash::fast::RandomState>;

use drainguard_model::{Address, Asset, Chain, Severity};
use serde::Deserialize;

/// The default rules, shipped as `config/rules.toml` and compiled in.
pub const DEFAULT_RULES: &str = include_str!("../../../config/rules.toml");
/// The default denylist the default rules refer to.
pub const DEFAULT_DENYLIST: &str = include_str!("../../../config/denylist.txt");

/// One thing wrong with a rules file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The rule id (or `#n` for a rule without a usable id), if a rule is
    /// at fault.
    pub rule: Option<String>,
    /// The field at fault, if one is.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(r) = &self.rule {
            write!(f, ": rule {r}")?;
        }
        if let Some(fl) = &self.field {
            write!(f, ": field `{fl}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every error found in a rules file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s) in the rules:", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  - {e}")?;
        }
        Ok(())
    }
}

/// What a rule does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Record and page.
    Alert,
    /// Record, page and freeze withdrawals in the freeze scope.
    Freeze,
}

/// Whether a rule acts or only records what it would have done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Act.
    Enforce,
    /// Record only.
    Shadow,
}

/// A scope level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// One wallet on one chain.
    Wallet,
    /// One asset on one chain.
    Asset,
    /// One chain.
    Chain,
    /// Everything.
    Global,
}

impl Level {
    /// The level's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Wallet => "wallet",
            Level::Asset => "asset",
            Level::Chain => "chain",
            Level::Global => "global",
        }
    }
}

/// Whether `unmatched_outflow` applies to a wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentsMode {
    /// Only to wallets whose intents are seen to flow (at least one intent
    /// for the wallet): an exchange that has not connected its withdrawal
    /// system is not flooded.
    Auto,
    /// To every hot wallet, intents or not.
    Always,
}

/// How outflows are matched to withdrawal intents (the `[intents]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct IntentMatching {
    /// How long after an intent an outflow may match it.
    pub match_window: Duration,
    /// Amount tolerance in basis points of the intent's amount.
    pub tolerance_bps: u32,
}

impl Default for IntentMatching {
    fn default() -> Self {
        IntentMatching {
            match_window: Duration::from_secs(3600),
            tolerance_bps: 0,
        }
    }
}

/// `unmatched_outflow` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct UnmatchedParams {
    /// Which wallets the rule applies to.
    pub intents: IntentsMode,
}

/// `outflow_window` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct OutflowWindowParams {
    /// Window length.
    pub window: Duration,
    /// Keep one window per asset in the scope, summing exact amounts and
    /// comparing with that asset's balance; otherwise sum USD.
    pub per_asset: bool,
    /// Absolute limit in USD (micro-dollars).
    pub max_usd: Option<u128>,
    /// Limit as a share of the scope's balance at the window's start, in
    /// basis points.
    pub max_share_bps: Option<u32>,
    /// With it, the window fires only when its outflow is also
    /// concentrated on few new destinations (the joined signal).
    pub concentration: Option<Concentration>,
}

/// Concentration of a window's outflow on few new destinations: at most
/// `max_destinations` addresses, each first paid within the window and
/// paid at least `min_payments` times in it, received at least
/// `min_share_bps` of the window's outflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Concentration {
    /// How few destinations.
    pub max_destinations: u32,
    /// Payments each must have received in the window.
    pub min_payments: u32,
    /// Their share of the window's outflow (basis points).
    pub min_share_bps: u32,
}

/// `velocity` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct VelocityParams {
    /// Window length.
    pub window: Duration,
    /// Most outflows allowed in the window.
    pub max_count: u64,
}

/// `new_destination` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDestinationParams {
    /// How long after it is first paid an address still counts as fresh.
    pub fresh_for: Duration,
    /// The window for repeated and multi-source payments.
    pub window: Duration,
    /// A single outflow to a fresh address of at least this share of the
    /// wallet's balance of the asset (basis points) is large.
    pub large_share_bps: Option<u32>,
    /// ...and at least this multiple of the wallet's largest earlier
    /// outflow of the asset (once `history_min` outflows are known).
    pub large_multiple: f64,
    /// Outflows of a wallet and asset needed before the multiple applies.
    pub history_min: u64,
    /// A fresh address paid by this many distinct senders within the
    /// window, a sender being one wallet's one asset (another asset,
    /// another wallet or another chain)...
    pub min_sources: Option<u32>,
    /// A fresh address paid this many times within the window...
    pub repeat_count: Option<u32>,
    /// ...fires when the payments add up to this share (basis points, each
    /// payment measured against its wallet's balance).
    pub min_total_share_bps: u32,
    /// A sender counts towards `min_sources` only with a payment of at
    /// least this share of its balance (basis points; 0: any payment).
    pub min_source_share_bps: u32,
    /// An address first paid less than this long after the engine began
    /// watching outflows is never new: until then the engine cannot tell a
    /// new address from a regular one it has not yet seen paid.
    pub warm_up: Duration,
}

/// `denylist` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct DenylistParams {
    /// Every denied address, normalized.
    pub addresses: AddressSet,
}

/// `correlation` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrelationParams {
    /// Window length.
    pub window: Duration,
    /// Findings on this many distinct chains...
    pub min_chains: u32,
    /// ...or this many distinct wallets, escalate.
    pub min_wallets: u32,
    /// Only findings at least this severe count.
    pub min_severity: Severity,
}

/// `balance_drain` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BalanceDrainParams {
    /// One outflow taking more than this share of the wallet's balance of
    /// the asset (basis points) fires.
    pub max_tx_share_bps: Option<u32>,
    /// With it, `max_tx_share_bps` fires only on an outflow also at least
    /// this multiple of the wallet's largest earlier outflow of the asset,
    /// once `history_min` are known (and never before: the cold start).
    pub history_multiple: Option<f64>,
    /// Outflows of a wallet and asset needed before `history_multiple`
    /// can be judged.
    pub history_min: u64,
    /// A hot wallet's balance of an asset falling under its floor (whole
    /// units, exact decimal strings turned into amounts per decimals at
    /// check time) fires.
    pub floors: Vec<(Asset, String)>,
}

/// `approval` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalParams {
    /// Spenders, modules, guards, owners and implementations the exchange
    /// uses on purpose.
    pub allowlist: AddressSet,
    /// Watch token approvals, permits and approvals-for-all.
    pub approvals: bool,
    /// Watch contract-wallet control changes (owners, threshold, modules,
    /// guards, upgrades, delegatecalls).
    pub admin: bool,
}

/// The pre-signing verdict on withdrawal intents (the `[presign]` table).
#[derive(Debug, Clone, PartialEq)]
pub struct PresignParams {
    /// Give verdicts at all.
    pub enabled: bool,
    /// Hold an intent that takes at least this share of the wallet's
    /// balance (basis points): no hot-wallet policy pays that much in one
    /// withdrawal; it is reviewed and paid from cold storage. It applies
    /// from the first intent on, learned history or not.
    pub max_share_bps: u32,
    /// The learned limit: an intent of at least this multiple of the
    /// wallet's largest earlier outflow of the asset...
    pub history_multiple: f64,
    /// ...once this many outflows are known (before that, the cold start,
    /// only `max_share_bps` applies)...
    pub history_min: u64,
    /// ...when it is also at least this share of the wallet's balance
    /// (basis points) is allowed with a warning finding: a whale is
    /// many times a wallet's usual largest, so it alerts, never holds.
    pub min_share_bps: u32,
    /// Hold an intent that would push a freeze rule's window over its limit.
    pub window: bool,
    /// Hold an intent to a denylisted address.
    pub denylist: bool,
    /// Hold an intent to a new address already paid by several wallets.
    pub converging: bool,
    /// Hold an intent whose wallet is under an active freeze.
    pub frozen: bool,
}

impl Default for PresignParams {
    fn default() -> Self {
        PresignParams {
            enabled: true,
            max_share_bps: 5_000,
            history_multiple: 10.0,
            history_min: 20,
            min_share_bps: 500,
            window: true,
            denylist: true,
            converging: true,
            frozen: true,
        }
    }
}

/// `blind` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BlindParams {
    /// Blind after this many expected block times without a new head.
    pub k: f64,
    /// Expected block times by chain; other chains learn theirs from the
    /// heads they see (the median interval of the last heads).
    pub block_times: Vec<(Chain, Duration)>,
    /// Heads needed before a learned block time is trusted.
    pub warmup_heads: u32,
    /// Blind as soon as every endpoint of the chain has failed for this
    /// long, without waiting for k block times.
    pub endpoints_down_for: Duration,
}

/// `baseline` parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineParams {
    /// Fire when the last hour's outflow exceeds the median of this hour
    /// of the week by more than `k` robust deviations.
    pub k: f64,
    /// Weeks of samples of an hour of the week before it is trusted.
    pub warmup_weeks: u32,
    /// Volumes under this many USD never fire (a noise floor).
    pub min_usd: u128,
}

/// A rule kind with its checked parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    /// Outflow with no withdrawal intent.
    UnmatchedOutflow(UnmatchedParams),
    /// Outflow value over a sliding window.
    OutflowWindow(OutflowWindowParams),
    /// Outflow count over a sliding window.
    Velocity(VelocityParams),
    /// Large or converging payments to fresh addresses.
    NewDestination(NewDestinationParams),
    /// Payments to denied addresses.
    Denylist(DenylistParams),
    /// Findings on several chains or wallets.
    Correlation(CorrelationParams),
    /// One transaction or a balance floor.
    BalanceDrain(BalanceDrainParams),
    /// Approvals and contract-wallet control changes outside an allowlist.
    Approval(ApprovalParams),
    /// A chain whose head stopped moving.
    Blind(BlindParams),
    /// Outflow volume against the learned per-hour-of-week baseline.
    Baseline(BaselineParams),
    /// Any outflow or approval from a tripwire (decoy) wallet.
    Tripwire,
}

impl RuleKind {
    /// The kind's name as written in TOML.
    pub fn name(&self) -> &'static str {
        match self {
            RuleKind::UnmatchedOutflow(_) => "unmatched_outflow",
            RuleKind::OutflowWindow(_) => "outflow_window",
            RuleKind::Velocity(_) => "velocity",
            RuleKind::NewDestination(_) => "new_destination",
            RuleKind::Denylist(_) => "denylist",
            RuleKind::Correlation(_) => "correlation",
            RuleKind::BalanceDrain(_) => "balance_drain",
            RuleKind::Approval(_) => "approval",
            RuleKind::Blind(_) => "blind",
            RuleKind::Baseline(_) => "baseline",
            RuleKind::Tripwire => "tripwire",
        }
    }
}

/// One checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique id.
    pub id: String,
    /// What it says, for humans.
    pub description: String,
    /// Kind and parameters.
    pub kind: RuleKind,
    /// The level it aggregates at.
    pub scope: Level,
    /// The chains it applies to (all when empty).
    pub chains: Vec<Chain>,
    /// Severity of its findings.
    pub severity: Severity,
    /// Alert or freeze.
    pub action: Action,
    /// Enforce or shadow.
    pub mode: Mode,
    /// The level a freeze applies to.
    pub freeze_scope: Level,
}

impl Rule {
    /// Whether the rule looks at this chain.
    pub fn applies_to(&self, chain: &Chain) -> bool {
        self.chains.is_empty() || self.chains.contains(chain)
    }
}

/// A validated set of rules.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    /// How outflows match intents.
    pub intents: IntentMatching,
    /// The pre-signing verdict.
    pub presign: PresignParams,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    intents: Option<RawIntents>,
    #[serde(default)]
    presign: Option<RawPresign>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPresign {
    enabled: Option<bool>,
    max_share: Option<f64>,
    history_multiple: Option<f64>,
    history_min: Option<u64>,
    min_share: Option<f64>,
    window: Option<bool>,
    denylist: Option<bool>,
    converging: Option<bool>,
    frozen: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntents {
    match_window: Option<String>,
    tolerance: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Option<String>,
    kind: Option<String>,
    description: Option<String>,
    scope: Option<String>,
    #[serde(default)]
    chains: Vec<String>,
    severity: Option<String>,
    action: Option<String>,
    mode: Option<String>,
    freeze_scope: Option<String>,
    #[serde(default)]
    params: toml::Table,
}

/// Reads a file a rule refers to (path relative to the rules file).
pub type FileReader<'a> = &'a dyn Fn(&str) -> Result<String, String>;

/// Collects the errors of one rule.
struct Check<'a> {
    file: &'a str,
    rule: String,
    errors: &'a mut Vec<ConfigError>,
}

impl Check<'_> {
    fn err(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            rule: Some(self.rule.clone()),
            field: Some(field.to_string()),
            message: message.into(),
        });
    }

    fn choice<T: Copy>(
        &mut self,
        field: &str,
        value: Option<&str>,
        default: Option<T>,
        options: &[(&str, T)],
    ) -> Option<T> {
        match value {
            None => {
                if default.is_none() {
                    self.err(field, "missing required field");
                }
                default
            }
            Some(v) => match options.iter().find(|(n, _)| *n == v) {
                Some((_, x)) => Some(*x),
                None => {
                    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                    self.err(field, format!("{v:?} is not one of {}", names.join(", ")));
                    None
                }
            },
        }
    }
}

/// Typed access to a rule's `params` table; whatever is left unread at the
/// end is an unknown parameter.
struct Params<'c, 'a> {
    table: toml::Table,
    check: &'c mut Check<'a>,
    check_scope: Option<Level>,
}

impl Params<'_, '_> {
    fn field(name: &str) -> String {
        format!("params.{name}")
    }

    fn take(&mut self, name: &str) -> Option<toml::Value> {
        self.table.remove(name)
    }

    fn duration(&mut self, name: &str, default: Option<Duration>) -> Duration {
        match self.take(name) {
            None => default.unwrap_or_else(|| {
                self.check
                    .err(&Self::field(name), "missing required parameter");
                Duration::from_secs(1)
            }),
            Some(toml::Value::String(s)) => match humantime::parse_duration(&s) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    self.check
                        .err(&Self::field(name), "must be longer than zero");
                    Duration::from_secs(1)
                }
                Err(e) => {
                    self.check.err(
                        &Self::field(name),
                        format!("{s:?} is not a duration like \"10m\" or \"1h\": {e}"),
                    );
                    Duration::from_secs(1)
                }
            },
            Some(v) => {
                self.check.err(
                    &Self::field(name),
                    format!("expected a duration string like \"10m\", found {v}"),
                );
                Duration::from_secs(1)
            }
        }
    }

    fn float(&mut self, name: &str) -> Option<f64> {
        match self.take(name)? {
            toml::Value::Float(f) => Some(f),
            toml::Value::Integer(i) => Some(i as f64),
            v => {
                self.check
                    .err(&Self::field(name), format!("expected a number, found {v}"));
                None
            }
        }
    }

    /// A share in `(0, 1]`, returned in basis points.
    fn share(&mut self, name: &str) -> Option<u32> {
        let f = self.float(name)?;
        if !(f > 0.0 && f <= 1.0) {
            self.check
                .err(&Self::field(name), format!("{f} is not a share in (0, 1]"));
            return None;
        }
        Some((f * 10_000.0).round() as u32)
    }

    fn positive(&mut self, name: &str) -> Option<f64> {
        let f = self.float(name)?;
        if !(f.is_finite() && f > 0.0) {
            self.check
                .err(&Self::field(name), format!("{f} must be a positive number"));
            return None;
        }
        Some(f)
    }

    fn count(&mut self, name: &str) -> Option<u64> {
        match self.take(name)? {
            toml::Value::Integer(i) if i >= 1 => u64::try_from(i).ok(),
            v => {
                self.check.err(
                    &Self::field(name),
                    format!("expected a whole number of at least 1, found {v}"),
                );
                None
            }
        }
    }

    fn boolean(&mut self, name: &str, default: bool) -> bool {
        match self.take(name) {
            None => default,
            Some(toml::Value::Boolean(b)) => b,
            Some(v) => {
                self.check.err(
                    &Self::field(name),
                    format!("expected true or false, found {v}"),
                );
                default
            }
        }
    }

    fn string(&mut self, name: &str) -> Option<String> {
        match self.take(name)? {
            toml::Value::String(s) => Some(s),
            v => {
                self.check
                    .err(&Self::field(name), format!("expected a string, found {v}"));
                None
            }
        }
    }

    fn strings(&mut self, name: &str) -> Vec<String> {
        match self.take(name) {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => {
                let mut out = Vec::with_capacity(a.len());
                for (i, v) in a.into_iter().enumerate() {
                    match v {
                        toml::Value::String(s) => out.push(s),
                        v => self.check.err(
                            &format!("params.{name}[{i}]"),
                            format!("expected a string, found {v}"),
                        ),
                    }
                }
                out
            }
            Some(v) => {
                self.check.err(
                    &Self::field(name),
                    format!("expected an array of strings, found {v}"),
                );
                Vec::new()
            }
        }
    }

    fn finish(self) {
        for k in self.table.keys() {
            self.check
                .err(&Self::field(k), "unknown parameter for this kind");
        }
    }
}

/// Parses one denylist text: one address a line; `#` starts a comment.
pub fn parse_denylist(text: &str) -> AddressSet {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(Address::new)
        .collect()
}

const LEVELS: &[(&str, Level)] = &[
    ("wallet", Level::Wallet),
    ("asset", Level::Asset),
    ("chain", Level::Chain),
    ("global", Level::Global),
];
const SEVERITIES: &[(&str, Severity)] = &[
    ("info", Severity::Info),
    ("warning", Severity::Warning),
    ("critical", Severity::Critical),
];
const ACTIONS: &[(&str, Action)] = &[("alert", Action::Alert), ("freeze", Action::Freeze)];
const MODES: &[(&str, Mode)] = &[("enforce", Mode::Enforce), ("shadow", Mode::Shadow)];
const KINDS: &[&str] = &[
    "baseline",
    "blind",
    "balance_drain",
    "approval",
    "unmatched_outflow",
    "outflow_window",
    "velocity",
    "new_destination",
    "denylist",
    "correlation",
    "tripwire",
];

fn kind_params(kind: &str, p: &mut Params<'_, '_>, read: FileReader<'_>) -> Option<RuleKind> {
    Some(match kind {
        "unmatched_outflow" => {
            let intents = match p.string("intents").as_deref() {
                None | Some("auto") => IntentsMode::Auto,
                Some("always") => IntentsMode::Always,
                Some(other) => {
                    p.check.err(
                        "params.intents",
                        format!("{other:?} is not one of auto, always"),
                    );
                    IntentsMode::Auto
                }
            };
            RuleKind::UnmatchedOutflow(UnmatchedParams { intents })
        }
        "outflow_window" => {
            let window = p.duration("window", None);
            let per_asset = p.boolean("per_asset", false);
            // A limit given but invalid has its own error: this one is for
            // a rule with no limit at all.
            let given = p.table.contains_key("max_usd") || p.table.contains_key("max_share");
            let max_usd = p.positive("max_usd").map(|d| (d * 1e6) as u128);
            let max_share_bps = p.share("max_share");
            if !given {
                p.check.err("params", "give max_usd, max_share or both");
            }
            if per_asset && p.check_scope == Some(Level::Global) {
                p.check.err("params.per_asset", "a global window mixes chains whose tokens differ in decimals: use per_asset = false");
            }
            if per_asset && max_usd.is_some() {
                p.check.err(
                    "params.max_usd",
                    "per_asset windows sum exact amounts of one asset: use max_share",
                );
            }
            let concentration = match (
                p.count("concentration_destinations"),
                p.share("concentration_share"),
            ) {
                (None, None) => None,
                (Some(d), Some(share)) => Some(Concentration {
                    max_destinations: u32::try_from(d).unwrap_or(u32::MAX),
                    min_payments: p
                        .count("concentration_payments")
                        .map_or(2, |c| u32::try_from(c).unwrap_or(u32::MAX)),
                    min_share_bps: share,
                }),
                _ => {
                    p.check.err(
                        "params",
                        "give concentration_destinations and concentration_share together",
                    );
                    None
                }
            };
            RuleKind::OutflowWindow(OutflowWindowParams {
                window,
                per_asset,
                max_usd,
                max_share_bps,
                concentration,
            })
        }
        "velocity" => {
            let window = p.duration("window", None);
            if !p.table.contains_key("max_count") {
                p.check
                    .err("params.max_count", "missing required parameter");
            }
            let max_count = p.count("max_count").unwrap_or(1);
            RuleKind::Velocity(VelocityParams { window, max_count })
        }
        "new_destination" => {
            let fresh_for = p.duration("fresh_for", Some(Duration::from_secs(7 * 24 * 3600)));
            let window = p.duration("window", Some(Duration::from_secs(3600)));
            let large_share_bps = p.share("large_share");
            let large_multiple = p.positive("large_multiple").unwrap_or(1.0);
            let history_min = p.count("history_min").unwrap_or(20);
            let min_sources = p
                .count("min_sources")
                .map(|c| u32::try_from(c).unwrap_or(u32::MAX));
            let repeat_count = p
                .count("repeat_count")
                .map(|c| u32::try_from(c).unwrap_or(u32::MAX));
            if min_sources == Some(1) {
                p.check.err("params.min_sources", "must be at least 2");
            }
            let min_total_share_bps = p.share("min_total_share").unwrap_or(0);
            let min_source_share_bps = p.share("min_source_share").unwrap_or(0);
            let warm_up = p.duration("warm_up", Some(Duration::ZERO));
            if large_share_bps.is_none() && min_sources.is_none() && repeat_count.is_none() {
                p.check
                    .err("params", "give large_share, min_sources or repeat_count");
            }
            RuleKind::NewDestination(NewDestinationParams {
                fresh_for,
                window,
                large_share_bps,
                large_multiple,
                history_min,
                min_sources,
                repeat_count,
                min_total_share_bps,
                min_source_share_bps,
                warm_up,
            })
        }
        "denylist" => {
            let mut addresses: AddressSet = p
                .strings("addresses")
                .iter()
                .map(|a| Address::new(a))
                .collect();
            for (i, f) in p.strings("files").into_iter().enumerate() {
                match read(&f) {
                    Ok(text) => addresses.extend(parse_denylist(&text)),
                    Err(e) => p.check.err(
                        &format!("params.files[{i}]"),
                        format!("cannot read {f:?}: {e}"),
                    ),
                }
            }
            RuleKind::Denylist(DenylistParams { addresses })
        }
        "balance_drain" => {
            let max_tx_share_bps = p.share("max_tx_share");
            let floors = match p.take("floors") {
                None => Vec::new(),
                Some(toml::Value::Table(t)) => {
                    let mut out = Vec::new();
                    for (asset, v) in t {
                        match v {
                            toml::Value::String(amount)
                                if drainguard_model::Amount::parse_decimal(&amount, 36).is_ok() =>
                            {
                                out.push((Asset::new(&asset), amount));
                            }
                            v => p.check.err(&format!("params.floors.{asset}"), format!("expected a decimal string of whole units like \"100.5\", found {v}")),
                        }
                    }
                    out
                }
                Some(v) => {
                    p.check.err(
                        "params.floors",
                        format!("expected a table of asset = \"amount\", found {v}"),
                    );
                    Vec::new()
                }
            };
            if max_tx_share_bps.is_none() && floors.is_empty() {
                p.check.err("params", "give max_tx_share, floors or both");
            }
            let history_multiple = p.positive("history_multiple");
            let history_min = p.count("history_min").unwrap_or(20);
            if history_multiple.is_some() && max_tx_share_bps.is_none() {
                p.check.err(
                    "params.history_multiple",
                    "qualifies max_tx_share: give max_tx_share too",
                );
            }
            RuleKind::BalanceDrain(BalanceDrainParams {
                max_tx_share_bps,
                history_multiple,
                history_min,
                floors,
            })
        }
        "approval" => {
            let mut allowlist: AddressSet = p
                .strings("allowlist")
                .iter()
                .map(|a| Address::new(a))
                .collect();
            for (i, f) in p.strings("allowlist_files").into_iter().enumerate() {
                match read(&f) {
                    Ok(text) => allowlist.extend(parse_denylist(&text)),
                    Err(e) => p.check.err(
                        &format!("params.allowlist_files[{i}]"),
                        format!("cannot read {f:?}: {e}"),
                    ),
                }
            }
            let approvals = p.boolean("approvals", true);
            let admin = p.boolean("admin", true);
            RuleKind::Approval(ApprovalParams {
                allowlist,
                approvals,
                admin,
            })
        }
        "baseline" => {
            if p.check_scope == Some(Level::Wallet) {
                p.check.err(
                    "scope",
                    "a baseline learns 168 hours of weeks per scope: use asset, chain or global",
                );
            }
            let k = p.positive("k").unwrap_or(6.0);
            let warmup_weeks = p
                .count("warmup_weeks")
                .map_or(3, |c| u32::try_from(c).unwrap_or(u32::MAX));
            let min_usd = p
                .positive("min_usd")
                .map_or(1_000_000_000, |d| (d * 1e6) as u128);
            RuleKind::Baseline(BaselineParams {
                k,
                warmup_weeks,
                min_usd,
            })
        }
        "blind" => {
            let k = p.positive("k").unwrap_or(10.0);
            let warmup_heads = p
                .count("warmup_heads")
                .map_or(16, |c| u32::try_from(c).unwrap_or(u32::MAX));
            let block_times = match p.take("block_times") {
                None => Vec::new(),
                Some(toml::Value::Table(t)) => {
                    let mut out = Vec::new();
                    for (chain, v) in t {
                        match v {
                            toml::Value::String(d) => match humantime::parse_duration(&d) {
                                Ok(d) if !d.is_zero() => out.push((Chain::new(&chain), d)),
                                _ => p.check.err(
                                    &format!("params.block_times.{chain}"),
                                    format!("{d:?} is not a duration like \"12s\""),
                                ),
                            },
                            v => p.check.err(
                                &format!("params.block_times.{chain}"),
                                format!("expected a duration string, found {v}"),
                            ),
                        }
                    }
                    out
                }
                Some(v) => {
                    p.check.err(
                        "params.block_times",
                        format!("expected a table of chain = \"12s\", found {v}"),
                    );
                    Vec::new()
                }
            };
            let endpoints_down_for =
                p.duration("endpoints_down_for", Some(Duration::from_secs(30)));
            RuleKind::Blind(BlindParams {
                k,
                block_times,
                warmup_heads,
                endpoints_down_for,
            })
        }
        "correlation" => {
            let window = p.duration("window", Some(Duration::from_secs(1800)));
            let min_chains = p.count("min_chains").unwrap_or(2);
            let min_wallets = p.count("min_wallets").unwrap_or(3);
            let min_severity = match p.string("min_severity") {
                None => Severity::Critical,
                Some(s) => match SEVERITIES.iter().find(|(n, _)| *n == s) {
                    Some((_, v)) => *v,
                    None => {
                        p.check.err(
                            "params.min_severity",
                            format!("{s:?} is not one of info, warning, critical"),
                        );
                        Severity::Critical
                    }
                },
            };
            RuleKind::Correlation(CorrelationParams {
                window,
                min_chains: u32::try_from(min_chains).unwrap_or(u32::MAX),
                min_wallets: u32::try_from(min_wallets).unwrap_or(u32::MAX),
                min_severity,
            })
        }
        "tripwire" => RuleKind::Tripwire,
        _ => return None,
    })
}

impl RuleSet {
    /// Parses and validates a rules file. `file` names it in errors; `read`
    /// fetches the files its rules refer to.
    pub fn from_toml(
        file: &str,
        text: &str,
        read: FileReader<'_>,
    ) -> Result<RuleSet, ConfigErrors> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: file.to_string(),
                rule: None,
                field: None,
                message: e.to_string().trim().replace('\n', " "),
            }])
        })?;
        let mut errors = Vec::new();
        let mut intents = IntentMatching::default();
        if let Some(ri) = raw.intents {
            let mut err = |field: &str, message: String| {
                errors.push(ConfigError {
                    file: file.to_string(),
                    rule: None,
                    field: Some(format!("intents.{field}")),
                    message,
                })
            };
            if let Some(w) = ri.match_window {
                match humantime::parse_duration(&w) {
                    Ok(d) if !d.is_zero() => intents.match_window = d,
                    _ => err(
                        "match_window",
                        format!("{w:?} is not a duration like \"1h\""),
                    ),
                }
            }
            if let Some(t) = ri.tolerance {
                if (0.0..=0.5).contains(&t) {
                    intents.tolerance_bps = (t * 10_000.0).round() as u32;
                } else {
                    err("tolerance", format!("{t} is not a share in [0, 0.5]"));
                }
            }
        }
        let mut presign = PresignParams::default();
        if let Some(rp) = raw.presign {
            let mut err = |field: &str, message: String| {
                errors.push(ConfigError {
                    file: file.to_string(),
                    rule: None,
                    field: Some(format!("presign.{field}")),
                    message,
                })
            };
            if let Some(v) = rp.history_multiple {
                if v.is_finite() && v >= 1.0 {
                    presign.history_multiple = v;
                } else {
                    err("history_multiple", format!("{v} must be at least 1"));
                }
            }
            if let Some(v) = rp.min_share {
                if v > 0.0 && v <= 1.0 {
                    presign.min_share_bps = (v * 10_000.0).round() as u32;
                } else {
                    err("min_share", format!("{v} is not a share in (0, 1]"));
                }
            }
            if let Some(v) = rp.max_share {
                if v > 0.0 && v <= 1.0 {
                    presign.max_share_bps = (v * 10_000.0).round() as u32;
                } else {
                    err("max_share", format!("{v} is not a share in (0, 1]"));
                }
            }
            presign.history_min = rp.history_min.unwrap_or(presign.history_min);
            presign.enabled = rp.enabled.unwrap_or(true);
            presign.window = rp.window.unwrap_or(true);
            presign.denylist = rp.denylist.unwrap_or(true);
            presign.converging = rp.converging.unwrap_or(true);
            presign.frozen = rp.frozen.unwrap_or(true);
        }
        let mut rules = Vec::new();
        let mut ids = HashSet::new();
        for (i, r) in raw.rules.into_iter().enumerate() {
            let label =
                r.id.clone()
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| format!("#{}", i + 1));
            let mut check = Check {
                file,
                rule: label.clone(),
                errors: &mut errors,
            };
            match &r.id {
                None => check.err("id", "missing required field"),
                Some(id)
                    if id.is_empty()
                        || !id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
                {
                    check.err(
                        "id",
                        format!("{id:?} must be non-empty letters, digits, '-' or '_'"),
                    );
                }
                Some(id) if !ids.insert(id.clone()) => check.err("id", "duplicate rule id"),
                Some(_) => {}
            }
            let scope = check.choice("scope", r.scope.as_deref(), None, LEVELS);
            let severity = check.choice("severity", r.severity.as_deref(), None, SEVERITIES);
            let action = check.choice("action", r.action.as_deref(), None, ACTIONS);
            let mode = check.choice("mode", r.mode.as_deref(), Some(Mode::Enforce), MODES);
            let freeze_scope = match r.freeze_scope.as_deref() {
                None => scope,
                Some(v) => check.choice("freeze_scope", Some(v), None, LEVELS),
            };
            let mut params = Params {
                table: r.params,
                check: &mut check,
                check_scope: scope,
            };
            let kind = match r.kind.as_deref() {
                None => {
                    params.check.err("kind", "missing required field");
                    None
                }
                Some(k) => {
                    let parsed = kind_params(k, &mut params, read);
                    if parsed.is_none() {
                        params.check.err(
                            "kind",
                            format!("unknown kind {k:?} (known: {})", KINDS.join(", ")),
                        );
                    } else {
                        params.finish();
                    }
                    parsed
                }
            };
            if let (Some(RuleKind::Correlation(_)), Some(s)) = (&kind, scope)
                && s != Level::Global
            {
                check.err(
                    "scope",
                    "a correlation rule spans chains: its scope must be global",
                );
            }
            if let (
                Some(id),
                Some(kind),
                Some(scope),
                Some(severity),
                Some(action),
                Some(mode),
                Some(freeze_scope),
            ) = (r.id, kind, scope, severity, action, mode, freeze_scope)
            {
                rules.push(Rule {
                    id,
                    description: r.description.unwrap_or_default(),
                    kind,
                    scope,
                    chains: r.chains.iter().map(|c| Chain::new(c)).collect(),
                    severity,
                    action,
                    mode,
                    freeze_scope,
                });
            }
        }
        if errors.is_empty() {
            Ok(RuleSet {
                intents,
                presign,
                rules,
            })
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// The built-in default rules (those in `config/rules.toml`).
    pub fn builtin() -> Result<RuleSet, ConfigErrors> {
        RuleSet::from_toml("config/rules.toml (built-in)", DEFAULT_RULES, &|path| {
            if path == "denylist.txt" {
                Ok(DEFAULT_DENYLIST.to_string())
            } else {
                Err(format!(
                    "the built-in rules only know denylist.txt, not {path}"
                ))
            }
        })
    }
}
