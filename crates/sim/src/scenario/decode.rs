//! Decoding one scenario line into a [`Record`].
//!
//! First the line's fields are collected, each known one in its slot as a
//! [`Raw`] value whose string borrows from the line (no `serde_json::Value`
//! map, no copy of the strings that are only checked): a line of the
//! common shape (`{"key":value,...}` without whitespace or escapes, as the
//! writer makes them) by a byte scanner, any other by a serde visitor over
//! `serde_json`, which also words every JSON error. Both fill the slots
//! exactly as `serde_json::Map` would be filled (a repeated key keeps its
//! last value).
//!
//! Then the record is built field by field, in the order the checks have
//! always run, so that a line with several faults reports the same one. A
//! field left over is named as the old `Map` (with `preserve_order`, whose
//! removal swaps the last key in) would name it: that order is rebuilt from
//! the line, on that error path only.

use std::borrow::Cow;
use std::fmt;

use drainguard_model::{
    Address, AdminChange, Amount, Approval, ApprovalStandard, Asset, BalanceObs, Chain, EventKind,
    Head, Intent, Price, PriceObs, Stage, Timestamp, Transfer, TxHash, WalletDecl, WalletRole,
};
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{ACTIONS, LABELS, ROLES, Record, SCENARIO_DECIMALS, STAGES, STANDARDS};

/// Field-level failure before the line number is attached (boxed: the
/// results that carry it stay small on the path where nothing fails).
#[derive(Debug)]
pub(super) struct FieldError(Box<Fault>);

#[derive(Debug)]
struct Fault {
    field: Option<String>,
    message: String,
}

impl FieldError {
    fn new(field: Option<&str>, message: String) -> Self {
        FieldError(Box::new(Fault {
            field: field.map(str::to_string),
            message,
        }))
    }

    /// The field at fault, if one is, and what is wrong.
    pub(super) fn into_parts(self) -> (Option<String>, String) {
        let Fault { field, message } = *self.0;
        (field, message)
    }
}

fn field_err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError::new(Some(field), message.into())
}

/// The chains and assets seen last, so that a day of records shares a few
/// `Arc<str>` instead of allocating one per record. Addresses and hashes,
/// of high cardinality, are never cached.
#[derive(Debug, Default)]
pub(super) struct Names {
    chains: Vec<Chain>,
    assets: Vec<Asset>,
    next_chain: usize,
    next_asset: usize,
}

/// How many chains and how many assets [`Names`] keeps.
const NAMES_CACHED: usize = 16;

fn cached<T: Clone>(
    cache: &mut Vec<T>,
    next: &mut usize,
    s: &str,
    as_str: impl Fn(&T) -> &str,
    new: impl FnOnce(&str) -> T,
) -> T {
    if let Some(hit) = cache.iter().find(|c| as_str(c) == s) {
        return hit.clone();
    }
    let v = new(s);
    if cache.len() < NAMES_CACHED {
        cache.push(v.clone());
    } else {
        // Full: replace in turn, so a file whose names change over time
        // still hits.
        let slot = *next % NAMES_CACHED;
        cache[slot] = v.clone();
        *next = slot + 1;
    }
    v
}

impl Names {
    fn chain(&mut self, s: &str) -> Chain {
        cached(
            &mut self.chains,
            &mut self.next_chain,
            s,
            Chain::as_str,
            Chain::new,
        )
    }

    fn asset(&mut self, s: &str) -> Asset {
        cached(
            &mut self.assets,
            &mut self.next_asset,
            s,
            Asset::as_str,
            Asset::new,
        )
    }
}

/// The field names of every kind; anything else is an unknown field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum F {
    T,
    Kind,
    Label,
    Chain,
    Address,
    Name,
    Role,
    Balances,
    Wallet,
    Asset,
    Amount,
    Usd,
    Id,
    To,
    TxHash,
    Index,
    Stage,
    Block,
    From,
    Token,
    Owner,
    Spender,
    Standard,
    Action,
    Target,
    Hash,
}

impl F {
    /// How many known field names there are.
    const COUNT: usize = F::Hash as usize + 1;

    fn of(s: &str) -> Option<F> {
        Some(match s {
            "t" => F::T,
            "kind" => F::Kind,
            "label" => F::Label,
            "chain" => F::Chain,
            "address" => F::Address,
            "name" => F::Name,
            "role" => F::Role,
            "balances" => F::Balances,
            "wallet" => F::Wallet,
            "asset" => F::Asset,
            "amount" => F::Amount,
            "usd" => F::Usd,
            "id" => F::Id,
            "to" => F::To,
            "tx_hash" => F::TxHash,
            "index" => F::Index,
            "stage" => F::Stage,
            "block" => F::Block,
            "from" => F::From,
            "token" => F::Token,
            "owner" => F::Owner,
            "spender" => F::Spender,
            "standard" => F::Standard,
            "action" => F::Action,
            "target" => F::Target,
            "hash" => F::Hash,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            F::T => "t",
            F::Kind => "kind",
            F::Label => "label",
            F::Chain => "chain",
            F::Address => "address",
            F::Name => "name",
            F::Role => "role",
            F::Balances => "balances",
            F::Wallet => "wallet",
            F::Asset => "asset",
            F::Amount => "amount",
            F::Usd => "usd",
            F::Id => "id",
            F::To => "to",
            F::TxHash => "tx_hash",
            F::Index => "index",
            F::Stage => "stage",
            F::Block => "block",
            F::From => "from",
            F::Token => "token",
            F::Owner => "owner",
            F::Spender => "spender",
            F::Standard => "standard",
            F::Action => "action",
            F::Target => "target",
            F::Hash => "hash",
        }
    }
}

/// A JSON value as the parser gave it, as `serde_json::Value` would hold
/// it: strings borrowed from the line where they have no escapes, arrays
/// and objects (never valid in a record field but for `balances`) as a
/// `Value`.
#[derive(Debug)]
enum Raw<'de> {
    Null,
    Bool(bool),
    /// A non-negative integer.
    U64(u64),
    /// A negative integer.
    I64(i64),
    F64(f64),
    Str(Cow<'de, str>),
    /// An array or an object, boxed to keep the common variants small.
    Other(Box<Value>),
}

impl Raw<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool(_) => "a boolean",
            Raw::U64(_) | Raw::I64(_) | Raw::F64(_) => "a number",
            Raw::Str(_) => "a string",
            Raw::Other(v) => type_name(v),
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            Raw::U64(n) => Some(*n),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Raw::U64(n) => Some(*n as f64),
            Raw::I64(n) => Some(*n as f64),
            Raw::F64(f) => Some(*f),
            _ => None,
        }
    }

    /// The `Value` this is, for error messages that print it.
    fn into_value(self) -> Value {
        match self {
            Raw::Null => Value::Null,
            Raw::Bool(b) => Value::Bool(b),
            Raw::U64(n) => Value::from(n),
            Raw::I64(n) => Value::from(n),
            Raw::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Raw::Str(s) => Value::String(s.into_owned()),
            Raw::Other(v) => *v,
        }
    }
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

/// Builds a [`Raw`] from any JSON value, calling back exactly as
/// `serde_json::Value`'s own visitor is called, so that the parser accepts
/// and refuses exactly the same lines.
struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw<'de>, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw<'de>, E> {
        Ok(match u64::try_from(v) {
            Ok(n) => Raw::U64(n),
            Err(_) => Raw::I64(v),
        })
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw<'de>, E> {
        Ok(Raw::U64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw<'de>, E> {
        // As `Value` does: a non-finite float (never parsed from JSON) is null.
        Ok(if v.is_finite() {
            Raw::F64(v)
        } else {
            Raw::Null
        })
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw<'de>, E> {
        Ok(Raw::Str(Cow::Owned(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw<'de>, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Raw<'de>, A::Error> {
        serde::Deserialize::deserialize(SeqAccessDeserializer::new(seq))
            .map(|v| Raw::Other(Box::new(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Raw<'de>, A::Error> {
        serde::Deserialize::deserialize(MapAccessDeserializer::new(map))
            .map(|v| Raw::Other(Box::new(v)))
    }
}

impl<'de> DeserializeSeed<'de> for RawVisitor {
    type Value = Raw<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Raw<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

/// Reads an object key: a known field name, or `None` for any other.
struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Option<F>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<F>, E> {
        Ok(F::of(v))
    }
}

impl<'de> DeserializeSeed<'de> for KeyVisitor {
    type Value = Option<F>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<F>, D::Error> {
        d.deserialize_str(self)
    }
}

/// Reads every key of an object, in the order and with the deduplication
/// of `serde_json::Map` with `preserve_order`, skipping the values.
struct KeyOrder;

impl<'de> Visitor<'de> for KeyOrder {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
        let mut keys: Vec<String> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<de::IgnoredAny>()?;
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }
}

/// A line's top-level value: an object, whose fields it fills in, or
/// anything else.
enum Top<'de> {
    Object,
    Other(Raw<'de>),
}

/// Reads a line's top-level value, filling in the fields of an object in
/// place (the fields are large: they are not moved).
struct TopVisitor<'a, 'de>(&'a mut Fields<'de>);

impl<'de> Visitor<'de> for TopVisitor<'_, 'de> {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Top<'de>, E> {
        RawVisitor.visit_bool(v).map(Top::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Top<'de>, E> {
        RawVisitor.visit_i64(v).map(Top::Other)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Top<'de>, E> {
        RawVisitor.visit_u64(v).map(Top::Other)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Top<'de>, E> {
        RawVisitor.visit_f64(v).map(Top::Other)
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Top<'de>, E> {
        RawVisitor.visit_borrowed_str(v).map(Top::Other)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Top<'de>, E> {
        RawVisitor.visit_str(v).map(Top::Other)
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Top<'de>, E> {
        RawVisitor.visit_string(v).map(Top::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Top<'de>, E> {
        Ok(Top::Other(Raw::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<Top<'de>, E> {
        Ok(Top::Other(Raw::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Top<'de>, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Top<'de>, A::Error> {
        RawVisitor.visit_seq(seq).map(Top::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Top<'de>, A::Error> {
        while let Some(key) = map.next_key_seed(KeyVisitor)? {
            let value = map.next_value_seed(RawVisitor)?;
            match key {
                Some(f) => self.0.values[f as usize] = Some(value),
                None => self.0.unknown = true,
            }
        }
        Ok(Top::Object)
    }
}

/// The fields of one record, consumed one by one so that whatever is left
/// at the end is an unknown field. A repeated key keeps its last value, as
/// in `serde_json::Map`.
#[derive(Debug)]
struct Fields<'de> {
    /// The value of each known field present.
    values: [Option<Raw<'de>>; F::COUNT],
    /// Whether any other field is present.
    unknown: bool,
    /// The fields taken, in order (each at most once).
    taken: [Option<F>; F::COUNT],
    taken_len: usize,
}

impl<'de> Fields<'de> {
    fn new() -> Self {
        // Built in place (an array repeat expression is built aside and
        // copied, which showed in profiles).
        Fields {
            values: std::array::from_fn(|_| None),
            unknown: false,
            taken: [None; F::COUNT],
            taken_len: 0,
        }
    }

    /// Notes that a present field was consumed.
    fn note_taken(&mut self, name: F) {
        if let Some(slot) = self.taken.get_mut(self.taken_len) {
            *slot = Some(name);
            self.taken_len += 1;
        }
    }

    fn take(&mut self, name: F) -> Option<Raw<'de>> {
        let value = self.values[name as usize].take()?;
        self.note_taken(name);
        Some(value)
    }

    fn req(&mut self, name: F) -> Result<Raw<'de>, FieldError> {
        match self.take(name) {
            Some(Raw::Null) | None => Err(field_err(name.name(), "missing required field")),
            Some(v) => Ok(v),
        }
    }

    fn str_value(name: &str, v: Raw<'de>) -> Result<Cow<'de, str>, FieldError> {
        match v {
            Raw::Str(s) if !s.is_empty() => Ok(s),
            Raw::Str(_) => Err(field_err(name, "must not be empty")),
            other => Err(field_err(
                name,
                format!("expected a string, found {}", other.type_name()),
            )),
        }
    }

    /// Consumes a required string field and gives it to `f`. A good
    /// string is read where it lies (moving the value out is what the
    /// error path does).
    fn with_str<T>(
        &mut self,
        name: F,
        f: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Result<T, FieldError> {
        if let Some(Raw::Str(s)) = &self.values[name as usize]
            && !s.is_empty()
        {
            let out = f(s);
            self.values[name as usize] = None;
            self.note_taken(name);
            return out;
        }
        let v = self.req(name)?;
        f(&Self::str_value(name.name(), v)?)
    }

    /// Consumes an optional string field and gives it to `f`; `None` when
    /// it is absent or null.
    fn with_opt_str<T>(
        &mut self,
        name: F,
        f: impl FnOnce(&str) -> Result<T, FieldError>,
    ) -> Result<Option<T>, FieldError> {
        match &self.values[name as usize] {
            None => Ok(None),
            Some(Raw::Str(s)) if !s.is_empty() => {
                let out = f(s);
                self.values[name as usize] = None;
                self.note_taken(name);
                out.map(Some)
            }
            Some(_) => match self.take(name) {
                None | Some(Raw::Null) => Ok(None),
                Some(v) => f(&Self::str_value(name.name(), v)?).map(Some),
            },
        }
    }

    fn string(&mut self, name: F) -> Result<String, FieldError> {
        self.with_str(name, |s| Ok(s.to_string()))
    }

    fn chain(&mut self, names: &mut Names) -> Result<Chain, FieldError> {
        self.with_str(F::Chain, |s| Ok(names.chain(s)))
    }

    fn address(&mut self, name: F) -> Result<Address, FieldError> {
        self.with_str(name, |s| Ok(Address::new(s)))
    }

    fn asset(&mut self, names: &mut Names) -> Result<Asset, FieldError> {
        self.with_str(F::Asset, |s| Ok(names.asset(s)))
    }

    fn tx_hash(&mut self) -> Result<TxHash, FieldError> {
        self.with_str(F::TxHash, |s| Ok(TxHash::new(s)))
    }

    fn amount(&mut self, name: F) -> Result<Amount, FieldError> {
        self.with_str(name, |s| parse_units(name.name(), s))
    }

    fn one_of<T: Copy>(&mut self, name: F, options: &[(&str, T)]) -> Result<T, FieldError> {
        self.with_str(name, |s| one_of(name, s, options))
    }

    fn opt_one_of<T: Copy>(
        &mut self,
        name: F,
        options: &[(&str, T)],
    ) -> Result<Option<T>, FieldError> {
        self.with_opt_str(name, |s| one_of(name, s, options))
    }

    fn u64(&mut self, name: F) -> Result<u64, FieldError> {
        if let Some(Raw::U64(n)) = self.values[name as usize] {
            self.values[name as usize] = None;
            self.note_taken(name);
            return Ok(n);
        }
        let v = self.req(name)?;
        match v.as_u64() {
            Some(n) => Ok(n),
            None => Err(not_an_index(name, v)),
        }
    }

    fn opt_u64(&mut self, name: F) -> Result<Option<u64>, FieldError> {
        match self.take(name) {
            None | Some(Raw::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) => Ok(Some(n)),
                None => Err(not_an_index(name, v)),
            },
        }
    }

    /// Fails on the first field left, in the order `serde_json::Map` with
    /// `preserve_order` would list it after the same removals (each one
    /// swaps the last key into the place of the removed one). That order
    /// is rebuilt from the line only when there is such a field.
    fn finish(&self, line: &str) -> Result<(), FieldError> {
        if !self.unknown && self.values.iter().all(Option::is_none) {
            return Ok(());
        }
        let mut keys = serde_json::Deserializer::from_str(line)
            .deserialize_map(KeyOrder)
            .unwrap_or_default();
        for name in self.taken[..self.taken_len].iter().flatten() {
            if let Some(at) = keys.iter().position(|k| k == name.name()) {
                keys.swap_remove(at);
            }
        }
        match keys.first() {
            Some(k) => Err(field_err(k, "unknown field")),
            // Not reached: a field is left, so the line has its key.
            None => Err(FieldError::new(None, "unknown field".to_string())),
        }
    }
}

fn not_an_index(name: F, v: Raw<'_>) -> FieldError {
    field_err(
        name.name(),
        format!("expected a non-negative integer, found {}", v.into_value()),
    )
}

fn parse_units(name: &str, s: &str) -> Result<Amount, FieldError> {
    Amount::parse_decimal(s, SCENARIO_DECIMALS).map_err(|e| field_err(name, format!("{s:?}: {e}")))
}

fn one_of<T: Copy>(name: F, s: &str, options: &[(&str, T)]) -> Result<T, FieldError> {
    options
        .iter()
        .find(|(n, _)| *n == s)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            field_err(
                name.name(),
                format!("{s:?} is not one of {}", names.join(", ")),
            )
        })
}

/// Parses the line's JSON into `fields`, or says why not. Any JSON error
/// comes first, whatever else is wrong with the line.
fn parse_json<'de>(line: &'de str, fields: &mut Fields<'de>) -> Result<(), FieldError> {
    let mut de = serde_json::Deserializer::from_str(line);
    let top = de
        .deserialize_any(TopVisitor(fields))
        .and_then(|top| de.end().map(|()| top))
        .map_err(|e| FieldError::new(None, format!("not valid JSON: {e}")))?;
    match top {
        Top::Object => Ok(()),
        Top::Other(v) => Err(FieldError::new(
            None,
            format!("expected a JSON object, found {}", v.type_name()),
        )),
    }
}

/// Where the string whose contents start at `i` ends (the index of its
/// closing quote), if it has no escape and no control character; `None`
/// otherwise, or when it does not end. Eight bytes at a time.
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        // The lowest byte flagged is the first quote, backslash or byte
        // below 0x20 (bytes above it may be flagged falsely).
        let hit = ((quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x))
            & HIGH;
        if hit != 0 {
            let at = i + (hit.trailing_zeros() / 8) as usize;
            return (b[at] == b'"').then_some(at);
        }
        i += 8;
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// Fills `fields` from a line of the common shape, `{"key":value,...}`
/// without whitespace, whose strings have no escapes and whose numbers
/// are non-negative integers of at most 19 digits, exactly as the JSON
/// parser would, and says whether it did. A line of any other shape
/// (valid JSON or not) is left to the parser; `fields` must then be reset.
fn scan_common<'de>(line: &'de str, fields: &mut Fields<'de>) -> bool {
    let b = line.as_bytes();
    if b.first() != Some(&b'{') {
        return false;
    }
    let mut i = 1;
    loop {
        if b.get(i) != Some(&b'"') {
            return false;
        }
        let Some(end) = string_end(b, i + 1) else {
            return false;
        };
        // Quotes are ASCII: both ends are character boundaries.
        let key = &line[i + 1..end];
        i = end + 1;
        if b.get(i) != Some(&b':') {
            return false;
        }
        i += 1;
        let value = match b.get(i) {
            Some(b'"') => {
                let Some(end) = string_end(b, i + 1) else {
                    return false;
                };
                let s = &line[i + 1..end];
                i = end + 1;
                Raw::Str(Cow::Borrowed(s))
            }
            Some(b'0') => {
                i += 1;
                Raw::U64(0)
            }
            Some(b'1'..=b'9') => {
                let start = i;
                let mut n = 0u64;
                while let Some(&d @ b'0'..=b'9') = b.get(i) {
                    if i - start == 19 {
                        // Could pass u64::MAX: the parser decides.
                        return false;
                    }
                    n = n * 10 + u64::from(d - b'0');
                    i += 1;
                }
                Raw::U64(n)
            }
            _ => return false,
        };
        match F::of(key) {
            Some(f) => fields.values[f as usize] = Some(value),
            None => fields.unknown = true,
        }
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return i + 1 == b.len(),
            // A fraction, an exponent, whitespace, or not JSON.
            _ => return false,
        }
    }
}

/// The kinds of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wallet,
    Balance,
    Price,
    Intent,
    Transfer,
    Approval,
    Admin,
    Head,
}

impl Kind {
    fn of(s: &str) -> Option<Kind> {
        Some(match s {
            "wallet" => Kind::Wallet,
            "balance" => Kind::Balance,
            "price" => Kind::Price,
            "intent" => Kind::Intent,
            "transfer" => Kind::Transfer,
            "approval" => Kind::Approval,
            "admin" => Kind::Admin,
            "head" => Kind::Head,
            _ => return None,
        })
    }
}

/// The balances of a wallet record: an object of asset to amount.
fn balances(
    value: Raw<'_>,
    chain: &Chain,
    address: &Address,
    names: &mut Names,
) -> Result<Vec<BalanceObs>, FieldError> {
    let not_an_object = |found: &str| {
        field_err(
            "balances",
            format!("expected an object of asset to amount, found {found}"),
        )
    };
    let m = match value {
        Raw::Null => return Ok(Vec::new()),
        Raw::Other(v) => match *v {
            Value::Object(m) => m,
            other => return Err(not_an_object(type_name(&other))),
        },
        other => return Err(not_an_object(other.type_name())),
    };
    let mut out = Vec::with_capacity(m.len());
    for (asset, v) in m {
        let field = format!("balances.{asset}");
        let s = match v {
            Value::String(s) if !s.is_empty() => s,
            Value::String(_) => return Err(field_err(&field, "must not be empty")),
            other => {
                return Err(field_err(
                    &field,
                    format!("expected a string, found {}", type_name(&other)),
                ));
            }
        };
        out.push(BalanceObs {
            chain: chain.clone(),
            wallet: address.clone(),
            asset: names.asset(&asset),
            amount: parse_units(&field, &s)?,
            decimals: SCENARIO_DECIMALS,
        });
    }
    Ok(out)
}

/// Parses one line (without its newline) into a record.
pub(super) fn parse_line(line: &str, names: &mut Names) -> Result<Record, FieldError> {
    let mut f = Fields::new();
    if !scan_common(line, &mut f) {
        f = Fields::new();
        parse_json(line, &mut f)?;
    }
    // An unknown kind is refused once `t` is checked.
    let kind = f.with_str(F::Kind, |s| Ok(Kind::of(s).ok_or_else(|| s.to_string())))?;
    let t = f.with_str(F::T, |s| {
        Timestamp::parse_rfc3339(s).map_err(|e| field_err("t", e.to_string()))
    })?;
    let labelled = matches!(
        kind,
        Ok(Kind::Intent | Kind::Transfer | Kind::Approval | Kind::Admin)
    );
    let label = if labelled {
        f.opt_one_of(F::Label, LABELS)?
    } else {
        None
    };
    let kind = match kind {
        Ok(Kind::Wallet) => {
            let chain = f.chain(names)?;
            let address = f.address(F::Address)?;
            let name = f.string(F::Name)?;
            let role = f.opt_one_of(F::Role, ROLES)?.unwrap_or(WalletRole::Hot);
            let balances = match f.take(F::Balances) {
                None => Vec::new(),
                Some(v) => balances(v, &chain, &address, names)?,
            };
            EventKind::Wallet(WalletDecl {
                chain,
                address,
                name,
                role,
                balances,
            })
        }
        Ok(Kind::Balance) => EventKind::Balance(BalanceObs {
            chain: f.chain(names)?,
            wallet: f.address(F::Wallet)?,
            asset: f.asset(names)?,
            amount: f.amount(F::Amount)?,
            decimals: SCENARIO_DECIMALS,
        }),
        Ok(Kind::Price) => {
            let asset = f.asset(names)?;
            let v = f.req(F::Usd)?;
            let usd = match v.as_f64().filter(|p| p.is_finite() && *p >= 0.0) {
                Some(usd) => usd,
                None => {
                    return Err(field_err(
                        "usd",
                        format!("expected a non-negative number, found {}", v.into_value()),
                    ));
                }
            };
            EventKind::Price(PriceObs {
                asset,
                usd: Price(usd),
            })
        }
        Ok(Kind::Intent) => EventKind::Intent(Intent {
            id: f.string(F::Id)?,
            chain: f.chain(names)?,
            wallet: f.address(F::Wallet)?,
            to: f.address(F::To)?,
            asset: f.asset(names)?,
            amount: f.amount(F::Amount)?,
            decimals: SCENARIO_DECIMALS,
            tx_hash: f.with_opt_str(F::TxHash, |s| Ok(TxHash::new(s)))?,
        }),
        Ok(Kind::Transfer) => {
            let chain = f.chain(names)?;
            let tx_hash = f.tx_hash()?;
            let index = f.u64(F::Index)?;
            let index =
                u32::try_from(index).map_err(|_| field_err("index", "larger than 2³²−1"))?;
            let stage = f.one_of(F::Stage, STAGES)?;
            let block = f.opt_u64(F::Block)?;
            if block.is_none() && stage != Stage::Pending {
                return Err(field_err(
                    "block",
                    format!("required for stage {}", stage.as_str()),
                ));
            }
            EventKind::Transfer(Transfer {
                chain,
                tx_hash,
                index,
                stage,
                block,
                from: f.address(F::From)?,
                to: f.address(F::To)?,
                asset: f.asset(names)?,
                token: f.with_opt_str(F::Token, |s| Ok(Address::new(s)))?,
                amount: f.amount(F::Amount)?,
                decimals: SCENARIO_DECIMALS,
            })
        }
        Ok(Kind::Approval) => {
            let chain = f.chain(names)?;
            let tx_hash = f.tx_hash()?;
            let owner = f.address(F::Owner)?;
            let spender = f.address(F::Spender)?;
            let asset = f.asset(names)?;
            let amount = f.with_str(F::Amount, |raw| {
                Amount::parse_base_units(raw).map_err(|e| {
                    field_err(
                        "amount",
                        format!("{raw:?}: {e} (raw base units, an integer)"),
                    )
                })
            })?;
            let standard = f
                .opt_one_of(F::Standard, STANDARDS)?
                .unwrap_or(ApprovalStandard::Erc20);
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
        Ok(Kind::Admin) => {
            let chain = f.chain(names)?;
            let tx_hash = f.tx_hash()?;
            let wallet = f.address(F::Wallet)?;
            let action = f.one_of(F::Action, ACTIONS)?;
            EventKind::Admin(AdminChange {
                chain,
                tx_hash,
                wallet,
                action,
                target: f.address(F::Target)?,
            })
        }
        Ok(Kind::Head) => EventKind::Head(Head {
            chain: f.chain(names)?,
            block: f.u64(F::Block)?,
            hash: f.string(F::Hash)?,
        }),
        Err(other) => {
            return Err(field_err(
                "kind",
                format!(
                    "unknown kind {other:?} (expected wallet, balance, price, intent, transfer, approval, admin or head)"
                ),
            ));
        }
    };
    f.finish(line)?;
    Ok(Record { t, kind, label })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn names_are_shared_and_bounded() {
        let mut names = Names::default();
        let a = names.chain("ethereum");
        let b = names.chain("ethereum");
        assert_eq!(a, b);
        for i in 0..100 {
            assert_eq!(names.asset(&format!("A{i}")).as_str(), format!("A{i}"));
        }
        assert_eq!(names.assets.len(), NAMES_CACHED);
        assert_eq!(names.asset("A99").as_str(), "A99");
    }

    #[test]
    fn field_names_round_trip() {
        for f in [F::T, F::Kind, F::Balances, F::TxHash, F::Hash, F::Target] {
            assert_eq!(F::of(f.name()), Some(f));
        }
        assert_eq!(F::of("extra"), None);
    }
}
