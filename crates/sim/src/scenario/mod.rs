//! The scenario file format: a strict streaming reader and a writer.
//!
//! The reader decodes each line where it lies in the input's buffer when
//! the whole line is there (else from one reused line buffer), in a single
//! pass and without building a `serde_json::Value` ([`decode`]); the writer
//! goes through `serde_json`.

mod decode;
#[cfg(test)]
mod reference;

use std::io::{self, BufRead, Write};

use drainguard_model::{
    AdminAction, Amount, ApprovalStandard, Event, EventKind, Stage, Timestamp, WalletRole,
};
use serde_json::{Map, Value};

use decode::{FieldError, Names, parse_line};

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

impl Record {
    /// The event as the engine takes it (the label is never the engine's).
    pub fn to_event(&self) -> Event {
        Event {
            t: self.t,
            kind: self.kind.clone(),
        }
    }
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

const STAGES: &[(&str, Stage)] = &[
    ("pending", Stage::Pending),
    ("included", Stage::Included),
    ("confirmed", Stage::Confirmed),
    ("retracted", Stage::Retracted),
];
const ROLES: &[(&str, WalletRole)] = &[
    ("hot", WalletRole::Hot),
    ("cold", WalletRole::Cold),
    ("tripwire", WalletRole::Tripwire),
];
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

/// Reads a scenario one record at a time. Yields an error for the first bad
/// line and then stops: a scenario with a bad line is not half-replayed.
#[derive(Debug)]
pub struct ScenarioReader<R> {
    input: R,
    line_no: usize,
    buf: Vec<u8>,
    last_t: Option<Timestamp>,
    failed: bool,
    names: Names,
}

impl<R: BufRead> ScenarioReader<R> {
    /// Wraps a buffered reader. A line is decoded where it lies in the
    /// reader's buffer; one that straddles the buffer's end is copied
    /// first, which a larger buffer makes rarer.
    pub fn new(input: R) -> Self {
        ScenarioReader {
            input,
            line_no: 0,
            buf: Vec::with_capacity(1024),
            last_t: None,
            failed: false,
            names: Names::default(),
        }
    }

    fn next_record(&mut self) -> Option<Result<Record, ScenarioError>> {
        self.line_no += 1;
        let line = self.line_no;
        // The common case: the whole line is in the input's buffer, UTF-8
        // and not blank. It is decoded in place; anything else (an I/O
        // error, the end of the input, a line across the buffer's end, a
        // blank line, bytes that are not UTF-8) takes the general path,
        // which reads the line again and answers as it always has.
        let parsed = match self.input.fill_buf() {
            Ok(buf) => match buffered_line(buf) {
                Some((text, used)) => {
                    let parsed = parse_line(text, &mut self.names);
                    self.input.consume(used);
                    parsed
                }
                None => return self.next_record_copied(line),
            },
            // `read_line` retries an interrupted read and fails on any other.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                return self.next_record_copied(line);
            }
            Err(source) => return Some(Err(ScenarioError::Io { line, source })),
        };
        Some(self.in_order(parsed, line))
    }

    /// The general path of [`Self::next_record`].
    #[cold]
    fn next_record_copied(&mut self, line: usize) -> Option<Result<Record, ScenarioError>> {
        let parsed = match next_line_copied(&mut self.input, &mut self.buf, line) {
            Ok(Some(text)) => parse_line(text, &mut self.names),
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        Some(self.in_order(parsed, line))
    }

    /// Attaches the line number to a failure, and checks that a record
    /// comes no earlier than the one before.
    fn in_order(
        &mut self,
        parsed: Result<Record, FieldError>,
        line: usize,
    ) -> Result<Record, ScenarioError> {
        let record = parsed.map_err(|e| {
            let (field, message) = e.into_parts();
            ScenarioError::Invalid {
                line,
                field,
                message,
            }
        })?;
        if let Some(prev) = self.last_t.filter(|&prev| record.t < prev) {
            return Err(ScenarioError::Invalid {
                line,
                field: Some("t".to_string()),
                message: format!(
                    "{} is earlier than the previous record's {} (records must be in time order)",
                    record.t, prev
                ),
            });
        }
        self.last_t = Some(record.t);
        Ok(record)
    }
}

/// Reads one line, newline included, into `buf` (cleared first): the
/// number of bytes read, 0 at the end. Like `BufRead::read_line`, a line
/// that is not UTF-8 is an `InvalidData` error.
fn read_line<R: BufRead>(input: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.clear();
    let n = input.read_until(b'\n', buf)?;
    if std::str::from_utf8(buf).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ));
    }
    Ok(n)
}

/// The general path: reads the next line into `buf` and returns it without
/// its line ending; `None` at the end, and at a blank final line.
fn next_line_copied<'b, R: BufRead>(
    input: &mut R,
    buf: &'b mut Vec<u8>,
    line: usize,
) -> Result<Option<&'b str>, ScenarioError> {
    match read_line(input, buf) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(source) => return Err(ScenarioError::Io { line, source }),
    }
    // `read_line` checked it is UTF-8.
    let text = std::str::from_utf8(buf).unwrap_or_default();
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        // A blank final line is an editor's habit; a blank line in the
        // middle is still nothing to skip silently.
        let mut peek = Vec::new();
        return match read_line(input, &mut peek) {
            Ok(0) => Ok(None),
            Ok(_) => Err(ScenarioError::Invalid {
                line,
                field: None,
                message: "blank line".to_string(),
            }),
            Err(source) => Err(ScenarioError::Io { line, source }),
        };
    }
    Ok(Some(text))
}

/// The first line of `buf` without its line ending, and the bytes it takes
/// with its newline, when `buf` holds all of it, it is UTF-8 and it is not
/// blank.
fn buffered_line(buf: &[u8]) -> Option<(&str, usize)> {
    let newline = find_newline(buf)?;
    let text = std::str::from_utf8(&buf[..=newline]).ok()?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return None;
    }
    Some((text, newline + 1))
}

/// The index of the first `\n` in `buf`, eight bytes at a time.
fn find_newline(buf: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = buf.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?) ^ (ONES * u64::from(b'\n'));
        let hit = x.wrapping_sub(ONES) & !x & HIGH;
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    buf[i..].iter().position(|&c| c == b'\n').map(|p| i + p)
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
    event_to_json(r.t, &r.kind, r.label)
}

/// The JSON object of a record made of these parts (an event that is not
/// held in a [`Record`] need not be copied into one).
pub fn event_to_json(t: Timestamp, kind: &EventKind, label: Option<Label>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("t".into(), s(&t));
    m.insert("kind".into(), s(kind.name()));
    match kind {
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
    if let Some(l) = label {
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
