//! The scenario file format: a strict streaming reader and a writer.

use std::io::{self, BufRead, Write};

use drainguard_model::{
    Address, AdminAction, AdminChange, Amount, Approval, ApprovalStandard, Asset, BalanceObs,
    Chain, EventKind, Head, Intent, Price, PriceObs, Stage, Timestamp, Transfer, TxHash,
    WalletDecl, WalletRole,
};
use serde_json::{Map, Value};

/// Scenario amounts are kept as integers of 10⁻¹⁸ units.
pub const SCENARIO_DECIMALS: u8 = 18;

/// Ground truth for scoring; the engine never reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// Part of an attack.
    Attack,
    /// Legitimate traffic.
    Normal,
}

/// One scenario record: a time, an event and an optional label.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Scenario time.
    pub t: Timestamp,
    /// The event.
    pub kind: EventKind,
    /// Ground truth, where given.
    pub label: Option<Label>,
}

/// A scenario line that could not be read. Names the line (1-based) and,
/// where one is to blame, the field.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("line {line}: read error: {source}")]
    Io {
        /// The line being read.
        line: usize,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A line is not a valid record.
    #[error("line {line}: {}{message}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
    Invalid {
        /// The 1-based line number.
        line: usize,
        /// The field at fault, if one is.
        field: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl ScenarioError {
    /// The 1-based line number of the error.
    pub fn line(&self) -> usize {
        match self {
            ScenarioError::Io { line, .. } | ScenarioError::Invalid { line, .. } => *line,
        }
    }

    /// The field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ScenarioError::Invalid { field, .. } => field.as_deref(),
            ScenarioError::Io { .. } => None,
        }
    }
}

/// Field-level failure before the line number is attached.
struct FieldError {
    field: Option<String>,
    message: String,
}

fn field_err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: Some(field.to_string()),
        message: message.into(),
    }
}

/// The fields of one record, consumed one by one so that whatever is left
/// at the end is an unknown field.
struct Fields(Map<String, Value>);

impl Fields {
    fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name)
    }

    fn req(&mut self, name: &str) -> Result<Value, FieldError> {
        match self.take(name) {
            Some(Value::Null) | None => Err(field_err(name, "missing required field")),
            Some(v) => Ok(v),
        }
    }

    fn str_value(name: &str, v: Value) -> Result<String, FieldError> {
        match v {
            Value::String(s) if !s.is_empty() => Ok(s),
            Value::String(_) => Err(field_err(name, "must not be empty")),
            other => Err(field_err(
                name,
                format!("expected a string, found {}", type_name(&other)),
            )),
        }
    }

    fn string(&mut self, name: &str) -> Result<String, FieldError> {
        let v = self.req(name)?;
        Self::str_value(name, v)
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, FieldError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Self::str_value(name, v).map(Some),
        }
    }

    fn chain(&mut self) -> Result<Chain, FieldError> {
        Ok(Chain::new(&self.string("chain")?))
    }

    fn address(&mut self, name: &str) -> Result<Address, FieldError> {
        Ok(Address::new(&self.string(name)?))
    }

    fn asset(&mut self) -> Result<Asset, FieldError> {
        Ok(Asset::new(&self.string("asset")?))
    }

    fn tx_hash(&mut self) -> Result<TxHash, FieldError> {
        Ok(TxHash::new(&self.string("tx_hash")?))
    }

    fn amount(&mut self, name: &str) -> Result<Amount, FieldError> {
        let s = self.string(name)?;
        parse_units(name, &s)
    }

    fn u64(&mut self, name: &str) -> Result<u64, FieldError> {
        let v = self.req(name)?;
        v.as_u64()
            .ok_or_else(|| field_err(name, format!("expected a non-negative integer, found {v}")))
    }

    fn opt_u64(&mut self, name: &str) -> Result<Option<u64>, FieldError> {
        match self.take(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                field_err(name, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    fn finish(self) -> Result<(), FieldError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(field_err(k, "unknown field")),
        }
    }
}

fn parse_units(name: &str, s: &str) -> Result<Amount, FieldError> {
    Amount::parse_decimal(s, SCENARIO_DECIMALS).map_err(|e| field_err(name, format!("{s:?}: {e}")))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn one_of<T: Copy>(name: &str, s: &str, options: &[(&str, T)]) -> Result<T, FieldError> {
    options
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            field_err(name, format!("{s:?} is not one of {}", names.join(", ")))
        })
}

const STAGES: &[(&str, Stage)] = &[
    ("pending", Stage::Pending),
    ("included", Stage::Included),
    ("confirmed", Stage::Confirmed),
    ("retracted", Stage::Retracted),
];
const ROLES: &[(&str, WalletRole)] = &[("hot", WalletRole::Hot), ("cold", WalletRole::Cold)];
const LABELS: &[(&str, Label)] = &[("attack", Label::Attack), ("normal", Label::Normal)];
const STANDARDS: &[(&str, ApprovalStandard)] = &[
    ("erc20", ApprovalStandard::Erc20),
    ("permit", ApprovalStandard::Permit),
    ("erc721_all", ApprovalStandard::Erc721All),
];
const ACTIONS: &[(&str, AdminAction)] = &[
    ("add_owner", AdminAction::AddOwner),
    ("remove_owner", AdminAction::RemoveOwner),
    ("change_threshold", AdminAction::ChangeThreshold),
    ("enable_module", AdminAction::EnableModule),
    ("set_guard", AdminAction::SetGuard),
    ("upgrade", AdminAction::Upgrade),
    ("delegatecall", AdminAction::Delegatecall),
];

fn name_of<T: PartialEq + Copy>(options: &[(&'static str, T)], v: T) -> &'static str {
    options
        .iter()
        .find(|(_, x)| *x == v)
        .map(|(n, _)| *n)
        .unwrap_or("")
}

/// Parses one line (without its newline) into a record.
fn parse_line(line: &str) -> Result<Record, FieldError> {
    let value: Value = serde_json::from_str(line).map_err(|e| FieldError {
        field: None,
        message: format!("not valid JSON: {e}"),
    })?;
    let Value::Object(map) = value else {
        return Err(FieldError {
            field: None,
            message: format!("expected a JSON object, found {}", type_name(&value)),
        });
    };
    let mut f = Fields(map);
    let kind_name = f.string("kind")?;
    let t_str = f.string("t")?;
    let t = Timestamp::parse_rfc3339(&t_str).map_err(|e| field_err("t", e.to_string()))?;
    let labelled = matches!(
        kind_name.as_str(),
        "intent" | "transfer" | "approval" | "admin"
    );
    let label = if labelled {
        match f.opt_string("label")? {
            Some(s) => Some(one_of("label", &s, LABELS)?),
            None => None,
        }
    } else {
        None
    };
    let kind = match kind_name.as_str() {
        "wallet" => {
            let chain = f.chain()?;
            let address = f.address("address")?;
            let name = f.string("name")?;
            let role = match f.opt_string("role")? {
                Some(s) => one_of("role", &s, ROLES)?,
                None => WalletRole::Hot,
            };
            let balances = match f.take("balances") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Object(m)) => {
                    let mut out = Vec::with_capacity(m.len());
                    for (asset, v) in m {
                        let field = format!("balances.{asset}");
                        let s = Fields::str_value(&field, v)?;
                        out.push(BalanceObs {
                            chain: chain.clone(),
                            wallet: address.clone(),
                            asset: Asset::new(&asset),
                            amount: parse_units(&field, &s)?,
                            decimals: SCENARIO_DECIMALS,
                        });
                    }
                    out
                }
                Some(other) => {
                    return Err(field_err(
                        "balances",
                        format!(
                            "expected an object of asset to amount, found {}",
                            type_name(&other)
                        ),
                    ));
                }
            };
            EventKind::Wallet(WalletDecl {
                chain,
                address,
                name,
                role,
                balances,
            })
        }
        "balance" => EventKind::Balance(BalanceObs {
            chain: f.chain()?,
            wallet: f.address("wallet")?,
            asset: f.asset()?,
            amount: f.amount("amount")?,
            decimals: SCENARIO_DECIMALS,
        }),
        "price" => {
            let asset = f.asset()?;
            let v = f.req("usd")?;
            let usd = v
                .as_f64()
                .filter(|p| p.is_finite() && *p >= 0.0)
                .ok_or_else(|| {
                    field_err("usd", format!("expected a non-negative number, found {v}"))
                })?;
            EventKind::Price(PriceObs {
                asset,
                usd: Price(usd),
            })
        }
        "intent" => EventKind::Intent(Intent {
            id: f.string("id")?,
            chain: f.chain()?,
            wallet: f.address("wallet")?,
            to: f.address("to")?,
            asset: f.asset()?,
            amount: f.amount("amount")?,
            decimals: SCENARIO_DECIMALS,
            tx_hash: f.opt_string("tx_hash")?.map(|s| TxHash::new(&s)),
        }),
        "transfer" => {
            let chain = f.chain()?;
            let tx_hash = f.tx_hash()?;
            let index = f.u64("index")?;
            let index =
                u32::try_from(index).map_err(|_| field_err("index", "larger than 2³²−1"))?;
            let stage_s = f.string("stage")?;
            let stage = one_of("stage", &stage_s, STAGES)?;
            let block = f.opt_u64("block")?;
            if block.is_none() && stage != Stage::Pending {
                return Err(field_err("block", format!("required for stage {stage_s}")));
            }
            EventKind::Transfer(Transfer {
                chain,
                tx_hash,
                index,
                stage,
                block,
                from: f.address("from")?,
                to: f.address("to")?,
                asset: f.asset()?,
                token: f.opt_string("token")?.map(|s| Address::new(&s)),
                amount: f.amount("amount")?,
                decimals: SCENARIO_DECIMALS,
            })
        }
        "approval" => {
            let chain = f.chain()?;
            let tx_hash = f.tx_hash()?;
            let owner = f.address("owner")?;
            let spender = f.address("spender")?;
            let asset = f.asset()?;
            let raw = f.string("amount")?;
            let amount = Amount::parse_base_units(&raw).map_err(|e| {
                field_err(
                    "amount",
                    format!("{raw:?}: {e} (raw base units, an integer)"),
                )
            })?;
            let standard = match f.opt_string("standard")? {
                Some(s) => one_of("standard", &s, STANDARDS)?,
                None => ApprovalStandard::Erc20,
            };
            EventKind::Approval(Approval {
                chain,
                tx_hash,
                owner,
                spender,
                asset,
                amount,
                standard,
            })
        }
        "admin" => {
            let chain = f.chain()?;
            let tx_hash = f.tx_hash()?;
            let wallet = f.address("wallet")?;
            let action_s = f.string("action")?;
            let action = one_of("action", &action_s, ACTIONS)?;
            EventKind::Admin(AdminChange {
                chain,
                tx_hash,
                wallet,
                action,
                target: f.address("target")?,
            })
        }
        "head" => EventKind::Head(Head {
            chain: f.chain()?,
            block: f.u64("block")?,
            hash: f.string("hash")?,
        }),
        other => {
            return Err(field_err(
                "kind",
                format!(
                    "unknown kind {other:?} (expected wallet, balance, price, intent, transfer, approval, admin or head)"
                ),
            ));
        }
    };
    f.finish()?;
    Ok(Record { t, kind, label })
}

/// Reads a scenario one record at a time. Yields an error for the first bad
/// line and then stops: a scenario with a bad line is not half-replayed.
#[derive(Debug)]
pub struct ScenarioReader<R> {
    input: R,
    line_no: usize,
    buf: String,
    last_t: Option<Timestamp>,
    failed: bool,
}

impl<R: BufRead> ScenarioReader<R> {
    /// Wraps a buffered reader.
    pub fn new(input: R) -> Self {
        ScenarioReader {
            input,
            line_no: 0,
            buf: String::new(),
            last_t: None,
            failed: false,
        }
    }

    fn next_record(&mut self) -> Option<Result<Record, ScenarioError>> {
        self.buf.clear();
        self.line_no += 1;
        let line = self.line_no;
        match self.input.read_line(&mut self.buf) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(source) => return Some(Err(ScenarioError::Io { line, source })),
        }
        let text = self.buf.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            // A blank final line is an editor's habit; a blank line in the
            // middle is still nothing to skip silently.
            let mut peek = String::new();
            match self.input.read_line(&mut peek) {
                Ok(0) => return None,
                Ok(_) => {
                    return Some(Err(ScenarioError::Invalid {
                        line,
                        field: None,
                        message: "blank line".to_string(),
                    }));
                }
                Err(source) => return Some(Err(ScenarioError::Io { line, source })),
            }
        }
        let record = match parse_line(text) {
            Ok(r) => r,
            Err(FieldError { field, message }) => {
                return Some(Err(ScenarioError::Invalid {
                    line,
                    field,
                    message,
                }));
            }
        };
        if let Some(prev) = self.last_t.filter(|&prev| record.t < prev) {
            return Some(Err(ScenarioError::Invalid {
                line,
                field: Some("t".to_string()),
                message: format!(
                    "{} is earlier than the previous record's {} (records must be in time order)",
                    record.t, prev
                ),
            }));
        }
        self.last_t = Some(record.t);
        Some(Ok(record))
    }
}

impl<R: BufRead> Iterator for ScenarioReader<R> {
    type Item = Result<Record, ScenarioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_record();
        if matches!(next, Some(Err(_))) {
            self.failed = true;
        }
        next
    }
}

fn units(a: &Amount) -> Value {
    Value::String(a.to_decimal_string(SCENARIO_DECIMALS))
}

fn s<T: ToString + ?Sized>(v: &T) -> Value {
    Value::String(v.to_string())
}

/// The JSON object of a record, fields in the order DESIGN.md lists them.
pub fn record_to_json(r: &Record) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("t".into(), s(&r.t));
    m.insert("kind".into(), s(r.kind.name()));
    match &r.kind {
        EventKind::Wallet(w) => {
            m.insert("chain".into(), s(&w.chain));
            m.insert("address".into(), s(&w.address));
            m.insert("name".into(), s(&w.name));
            m.insert("role".into(), s(name_of(ROLES, w.role)));
            if !w.balances.is_empty() {
                let b = w
                    .balances
                    .iter()
                    .map(|b| (b.asset.to_string(), units(&b.amount)))
                    .collect();
                m.insert("balances".into(), Value::Object(b));
            }
        }
        EventKind::Balance(b) => {
            m.insert("chain".into(), s(&b.chain));
            m.insert("wallet".into(), s(&b.wallet));
            m.insert("asset".into(), s(&b.asset));
            m.insert("amount".into(), units(&b.amount));
        }
        EventKind::Price(p) => {
            m.insert("asset".into(), s(&p.asset));
            m.insert(
                "usd".into(),
                serde_json::Number::from_f64(p.usd.0).map_or(Value::Null, Value::Number),
            );
        }
        EventKind::Intent(i) => {
            m.insert("id".into(), s(&i.id));
            m.insert("chain".into(), s(&i.chain));
            m.insert("wallet".into(), s(&i.wallet));
            m.insert("to".into(), s(&i.to));
            m.insert("asset".into(), s(&i.asset));
            m.insert("amount".into(), units(&i.amount));
            if let Some(h) = &i.tx_hash {
                m.insert("tx_hash".into(), s(h));
            }
        }
        EventKind::Transfer(t) => {
            m.insert("chain".into(), s(&t.chain));
            m.insert("tx_hash".into(), s(&t.tx_hash));
            m.insert("index".into(), Value::from(t.index));
            m.insert("stage".into(), s(t.stage.as_str()));
            if let Some(b) = t.block {
                m.insert("block".into(), Value::from(b));
            }
            m.insert("from".into(), s(&t.from));
            m.insert("to".into(), s(&t.to));
            m.insert("asset".into(), s(&t.asset));
            if let Some(tok) = &t.token {
                m.insert("token".into(), s(tok));
            }
            m.insert("amount".into(), units(&t.amount));
        }
        EventKind::Approval(a) => {
            m.insert("chain".into(), s(&a.chain));
            m.insert("tx_hash".into(), s(&a.tx_hash));
            m.insert("owner".into(), s(&a.owner));
            m.insert("spender".into(), s(&a.spender));
            m.insert("asset".into(), s(&a.asset));
            m.insert("amount".into(), s(&a.amount));
            m.insert("standard".into(), s(name_of(STANDARDS, a.standard)));
        }
        EventKind::Admin(a) => {
            m.insert("chain".into(), s(&a.chain));
            m.insert("tx_hash".into(), s(&a.tx_hash));
            m.insert("wallet".into(), s(&a.wallet));
            m.insert("action".into(), s(name_of(ACTIONS, a.action)));
            m.insert("target".into(), s(&a.target));
        }
        EventKind::Head(h) => {
            m.insert("chain".into(), s(&h.chain));
            m.insert("block".into(), Value::from(h.block));
            m.insert("hash".into(), s(&h.hash));
        }
    }
    if let Some(l) = r.label {
        m.insert("label".into(), s(name_of(LABELS, l)));
    }
    m
}

/// Writes records as JSON Lines.
#[derive(Debug)]
pub struct ScenarioWriter<W> {
    out: W,
}

impl<W: Write> ScenarioWriter<W> {
    /// Wraps a writer (buffer it: one write per record).
    pub fn new(out: W) -> Self {
        ScenarioWriter { out }
    }

    /// Writes one record and its newline.
    pub fn write(&mut self, r: &Record) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &record_to_json(r))?;
        self.out.write_all(b"\n")
    }

    /// Flushes and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}
