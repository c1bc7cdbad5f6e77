//! What an engine reading Kafka must not forget across a restart: the
//! exchange's wallets, their last observed balances and the last price of
//! each asset.
//!
//! A watcher declares its wallets and prices once, when it starts. An
//! engine evaluates those messages and its offsets move past them, so an
//! engine restarted while the watchers keep running would resume with no
//! wallet known: every transfer unrelated, no rule able to fire. The
//! engine therefore keeps the latest declaration, balance and price it
//! evaluated in its store, written in the same transaction that lets the
//! message be acknowledged, and feeds them back to itself at start.
//!
//! Balances are as last observed: a transfer included after the wallet's
//! last balance reading and evaluated before the restart is not in it
//! (the watchers send each touched wallet's balance after every block, so
//! that is at most one block's worth, corrected by the next reading).

use std::collections::{BTreeMap, btree_map::Entry};

use anyhow::Context;
use drainguard_bus::kafka::{decode, encode};
use drainguard_engine::Engine;
use drainguard_model::{Event, EventKind};
use drainguard_store::Store;
use serde_json::Value;

/// Where they are kept in the store.
pub(crate) const KEY: &str = "bus.declarations";

/// The latest declaration, balance and price the engine evaluated, each
/// as the message that carried it.
#[derive(Debug, Default)]
pub(crate) struct Declarations {
    /// By chain and address.
    wallets: BTreeMap<(String, String), Event>,
    /// By chain, wallet address and asset.
    balances: BTreeMap<(String, String, String), Event>,
    /// By asset.
    prices: BTreeMap<String, Event>,
}

impl Declarations {
    /// Reads what the last run saved (nothing on a first start).
    pub(crate) fn load(store: &Store) -> anyhow::Result<Declarations> {
        let mut saved = Declarations::default();
        let Some(value) = store
            .get_state(KEY)
            .context("reading the saved declarations")?
        else {
            return Ok(saved);
        };
        let messages: Vec<String> = serde_json::from_value(value).with_context(|| {
            format!("the saved declarations ({KEY}) are not a list of messages")
        })?;
        for (i, m) in messages.iter().enumerate() {
            let event = decode(m.as_bytes())
                .map_err(|e| anyhow::anyhow!("saved declaration {i} ({KEY}): {e}"))?;
            saved.note(&event);
        }
        Ok(saved)
    }

    /// Wallets, then balances (newer than a declaration's), then prices:
    /// the order they are restored in.
    fn events(&self) -> impl Iterator<Item = &Event> {
        self.wallets
            .values()
            .chain(self.balances.values())
            .chain(self.prices.values())
    }

    /// Feeds them to a fresh engine: wallets, then their balances (newer
    /// than a declaration's), then prices. What they would raise was raised
    /// when they first came, so the engine's outputs are dropped.
    pub(crate) fn restore(&self, engine: &mut Engine) {
        let mut out = Vec::new();
        for e in self.events() {
            engine.process(e, &mut out);
        }
        tracing::info!(
            message = "declarations restored",
            wallets = self.wallets.len(),
            balances = self.balances.len(),
            prices = self.prices.len()
        );
    }

    /// Keeps `event` if it declares a wallet, observes a balance or prices
    /// an asset, and says whether what is saved changed.
    pub(crate) fn note(&mut self, event: &Event) -> bool {
        match &event.kind {
            EventKind::Wallet(w) => {
                let (chain, address) = (w.chain.to_string(), w.address.to_string());
                // The balances it carries are newer than those observed
                // before it (a watcher declares again when it restarts).
                let mut changed = false;
                for b in &w.balances {
                    changed |= self
                        .balances
                        .remove(&(chain.clone(), address.clone(), b.asset.to_string()))
                        .is_some();
                }
                replace(self.wallets.entry((chain, address)), event) || changed
            }
            EventKind::Balance(b) => replace(
                self.balances.entry((
                    b.chain.to_string(),
                    b.wallet.to_string(),
                    b.asset.to_string(),
                )),
                event,
            ),
            EventKind::Price(p) => replace(self.prices.entry(p.asset.to_string()), event),
            _ => false,
        }
    }

    /// The store entry holding them.
    pub(crate) fn state(&self) -> anyhow::Result<(String, Value)> {
        let mut messages = Vec::new();
        for e in self.events() {
            let bytes = encode(e).context("encoding a declaration")?;
            messages.push(String::from_utf8(bytes).context("encoding a declaration")?);
        }
        Ok((KEY.to_string(), Value::from(messages)))
    }
}

/// Puts `event` in its slot; true unless the slot held the same content
/// (a re-sent declaration or an unchanged price writes nothing).
fn replace<K: Ord>(entry: Entry<'_, K, Event>, event: &Event) -> bool {
    match entry {
        Entry::Occupied(mut o) if o.get().kind != event.kind => {
            o.insert(event.clone());
            true
        }
        Entry::Occupied(_) => false,
        Entry::Vacant(v) => {
            v.insert(event.clone());
            true
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use drainguard_engine::{Output, RuleSet};

    use super::*;

    fn event(line: &str) -> Event {
        decode(line.as_bytes()).unwrap()
    }

    const WALLET: &str = r#"{"t":"2026-01-01T00:00:00Z","kind":"wallet","chain":"ethereum","address":"0xaa","name":"eth-hot-1","balances":{"ETH":"1000"}}"#;
    const BALANCE: &str = r#"{"t":"2026-01-01T00:00:05Z","kind":"balance","chain":"ethereum","wallet":"0xaa","asset":"ETH","amount":"100"}"#;
    const PRICE: &str = r#"{"t":"2026-01-01T00:00:01Z","kind":"price","asset":"ETH","usd":3000.0}"#;
    const DRAIN: &str = r#"{"t":"2026-01-01T00:01:00Z","kind":"transfer","chain":"ethereum","tx_hash":"0x1","index":0,"stage":"pending","from":"0xaa","to":"0xbb","asset":"ETH","amount":"90"}"#;

    /// The rules the drain makes fire, and whether it is frozen.
    fn drain(engine: &mut Engine) -> (Vec<String>, bool) {
        let mut out = Vec::new();
        engine.process(&event(DRAIN), &mut out);
        let rules = out
            .iter()
            .filter_map(|o| match o {
                Output::Finding(f) => Some(f.rule.clone()),
                _ => None,
            })
            .collect();
        (rules, out.iter().any(|o| matches!(o, Output::Freeze(_))))
    }

    #[test]
    fn an_engine_restored_from_the_store_knows_the_wallet_its_balance_and_the_price() {
        let mut store = Store::open_in_memory().unwrap();
        let mut saved = Declarations::default();
        for line in [WALLET, PRICE, BALANCE] {
            assert!(saved.note(&event(line)), "{line} is new");
        }
        // The same content again changes nothing, so nothing is written.
        assert!(!saved.note(&event(PRICE)));
        assert!(
            !saved.note(&event(DRAIN)),
            "a transfer is not a declaration"
        );
        let (key, value) = saved.state().unwrap();
        store.put_state(&key, &value).unwrap();

        let loaded = Declarations::load(&store).unwrap();
        let mut engine = Engine::new(RuleSet::builtin().unwrap());
        loaded.restore(&mut engine);
        // 90 of the 100 ETH last observed (not 9 % of the 1000 declared)
        // in one transaction: the built-in single-transaction rule freezes.
        let (rules, frozen) = drain(&mut engine);
        assert!(frozen, "the restored engine freezes the drain");
        assert!(rules.iter().any(|r| r == "single-tx-drain"), "{rules:?}");
        // Without them, the same transfer is no one's outflow.
        let mut blank = Engine::new(RuleSet::builtin().unwrap());
        assert_eq!(drain(&mut blank), (Vec::new(), false));
    }

    #[test]
    fn a_wallet_declared_again_with_balances_outdates_the_balances_observed_before() {
        let mut saved = Declarations::default();
        saved.note(&event(WALLET));
        saved.note(&event(BALANCE));
        // A watcher restarts and declares the wallet with 95 ETH.
        assert!(saved.note(&event(&WALLET.replace("\"1000\"", "\"95\""))));
        let mut engine = Engine::new(RuleSet::builtin().unwrap());
        saved.restore(&mut engine);
        // 90 of 95 is still a drain, judged against 95, not the older 100.
        let mut out = Vec::new();
        engine.process(&event(DRAIN), &mut out);
        let summaries: Vec<String> = out
            .iter()
            .filter_map(|o| match o {
                Output::Finding(f) => Some(f.summary.clone()),
                _ => None,
            })
            .collect();
        assert!(
            summaries.iter().any(|s| s.contains("94.7%")),
            "{summaries:?}"
        );
    }

    #[test]
    fn a_changed_price_or_balance_replaces_the_saved_one() {
        let mut saved = Declarations::default();
        saved.note(&event(PRICE));
        assert!(saved.note(&event(&PRICE.replace("3000.0", "2500.0"))));
        saved.note(&event(BALANCE));
        assert!(saved.note(&event(&BALANCE.replace("\"100\"", "\"99\""))));
        let (_, value) = saved.state().unwrap();
        let text = value.to_string();
        assert!(text.contains("2500") && !text.contains("3000"), "{text}");
        assert_eq!(value.as_array().unwrap().len(), 2);
    }

    #[test]
    fn unreadable_saved_declarations_are_an_error_naming_the_key() {
        let mut store = Store::open_in_memory().unwrap();
        store
            .put_state(KEY, &serde_json::json!(["not a record"]))
            .unwrap();
        let e = Declarations::load(&store).unwrap_err().to_string();
        assert!(e.contains(KEY) && e.contains("saved declaration 0"), "{e}");
        store.put_state(KEY, &serde_json::json!({"a": 1})).unwrap();
        let e = format!("{:#}", Declarations::load(&store).unwrap_err());
        assert!(e.contains("not a list of messages"), "{e}");
    }
}
