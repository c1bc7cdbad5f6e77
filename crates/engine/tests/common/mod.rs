//! A small driver for the engine: wallets, prices, intents and transfers in
//! a few words, at explicit scenario times.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::too_many_arguments
)]

use drainguard_engine::{Engine, Output, RuleSet, Verdict};
use drainguard_model::{
    Address, AdminAction, AdminChange, Amount, Approval, ApprovalStandard, Asset, BalanceObs,
    Chain, Event, EventKind, Finding, Freeze, Intent, Price, PriceObs, Stage, Timestamp, Transfer,
    TxHash, WalletDecl, WalletRole,
};

pub const T0: i64 = 1_694_476_800; // 2023-09-12T00:00:00Z

pub const HOT: &str = "0x00000000000000000000000000000000000000a1";
pub const HOT2: &str = "0x00000000000000000000000000000000000000a2";
pub const COLD: &str = "0x00000000000000000000000000000000000000c0";
pub const USER: &str = "0x00000000000000000000000000000000000000b1";
pub const THIEF: &str = "0x00000000000000000000000000000000000000ee";

/// An exchange on `ethereum`: two hot wallets of 1000 ETH and a cold one,
/// ETH at $2000, under the given rules.
pub fn exchange(rules: &str) -> Driver {
    let mut d = Driver::new(rules);
    d.price("ETH", 2000.0)
        .hot("ethereum", HOT, &[("ETH", "1000")])
        .hot("ethereum", HOT2, &[("ETH", "1000")])
        .wallet("ethereum", COLD, WalletRole::Cold, &[("ETH", "100000")]);
    d
}

pub fn units(s: &str) -> Amount {
    Amount::parse_decimal(s, 18).unwrap()
}

pub fn rules(toml: &str) -> RuleSet {
    RuleSet::from_toml("test.toml", toml, &|_| Err("no files in tests".into())).unwrap()
}

pub struct Driver {
    pub engine: Engine,
    pub now: i64,
    pub outputs: Vec<Output>,
}

impl Driver {
    pub fn new(toml: &str) -> Self {
        Driver {
            engine: Engine::new(rules(toml)),
            now: T0,
            outputs: Vec::new(),
        }
    }

    pub fn with_rules(rules: RuleSet) -> Self {
        Driver {
            engine: Engine::new(rules),
            now: T0,
            outputs: Vec::new(),
        }
    }

    pub fn at(&mut self, secs: i64) -> &mut Self {
        self.now = T0 + secs;
        self
    }

    pub fn send(&mut self, kind: EventKind) -> &mut Self {
        let ev = Event {
            t: Timestamp::from_unix_secs(self.now),
            kind,
        };
        self.engine.process(&ev, &mut self.outputs);
        self
    }

    pub fn wallet(
        &mut self,
        chain: &str,
        addr: &str,
        role: WalletRole,
        balances: &[(&str, &str)],
    ) -> &mut Self {
        let balances = balances
            .iter()
            .map(|(a, v)| BalanceObs {
                chain: Chain::new(chain),
                wallet: Address::new(addr),
                asset: Asset::new(a),
                amount: units(v),
                decimals: 18,
            })
            .collect();
        self.send(EventKind::Wallet(WalletDecl {
            chain: Chain::new(chain),
            address: Address::new(addr),
            name: addr.to_string(),
            role,
            balances,
        }))
    }

    pub fn hot(&mut self, chain: &str, addr: &str, balances: &[(&str, &str)]) -> &mut Self {
        self.wallet(chain, addr, WalletRole::Hot, balances)
    }

    pub fn price(&mut self, asset: &str, usd: f64) -> &mut Self {
        self.send(EventKind::Price(PriceObs {
            asset: Asset::new(asset),
            usd: Price(usd),
        }))
    }

    pub fn intent(
        &mut self,
        id: &str,
        chain: &str,
        wallet: &str,
        to: &str,
        asset: &str,
        amount: &str,
        tx: Option<&str>,
    ) -> &mut Self {
        self.send(EventKind::Intent(Intent {
            id: id.to_string(),
            chain: Chain::new(chain),
            wallet: Address::new(wallet),
            to: Address::new(to),
            asset: Asset::new(asset),
            amount: units(amount),
            decimals: 18,
            tx_hash: tx.map(TxHash::new),
        }))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn transfer(
        &mut self,
        chain: &str,
        tx: &str,
        index: u32,
        stage: Stage,
        from: &str,
        to: &str,
        asset: &str,
        amount: &str,
    ) -> &mut Self {
        self.send(EventKind::Transfer(Transfer {
            chain: Chain::new(chain),
            tx_hash: TxHash::new(tx),
            index,
            stage,
            block: (stage != Stage::Pending).then_some(100),
            from: Address::new(from),
            to: Address::new(to),
            asset: Asset::new(asset),
            token: None,
            amount: units(amount),
            decimals: 18,
        }))
    }

    /// Shorthand: an ETH transfer on `ethereum`.
    pub fn eth(&mut self, tx: &str, stage: Stage, from: &str, to: &str, amount: &str) -> &mut Self {
        self.transfer("ethereum", tx, 0, stage, from, to, "ETH", amount)
    }

    pub fn approval(&mut self, chain: &str, tx: &str, owner: &str, spender: &str) -> &mut Self {
        self.send(EventKind::Approval(Approval {
            chain: Chain::new(chain),
            tx_hash: TxHash::new(tx),
            owner: Address::new(owner),
            spender: Address::new(spender),
            asset: Asset::new("USDT"),
            amount: Amount::MAX,
            standard: ApprovalStandard::Erc20,
        }))
    }

    pub fn admin(
        &mut self,
        chain: &str,
        tx: &str,
        wallet: &str,
        action: AdminAction,
        target: &str,
    ) -> &mut Self {
        self.send(EventKind::Admin(AdminChange {
            chain: Chain::new(chain),
            tx_hash: TxHash::new(tx),
            wallet: Address::new(wallet),
            action,
            target: Address::new(target),
        }))
    }

    pub fn balance(&mut self, chain: &str, wallet: &str, asset: &str, amount: &str) -> &mut Self {
        self.send(EventKind::Balance(BalanceObs {
            chain: Chain::new(chain),
            wallet: Address::new(wallet),
            asset: Asset::new(asset),
            amount: units(amount),
            decimals: 18,
        }))
    }

    /// Sends an intent through the verdict API and returns the verdict.
    pub fn verdict(
        &mut self,
        id: &str,
        chain: &str,
        wallet: &str,
        to: &str,
        asset: &str,
        amount: &str,
    ) -> Verdict {
        let intent = Intent {
            id: id.to_string(),
            chain: Chain::new(chain),
            wallet: Address::new(wallet),
            to: Address::new(to),
            asset: Asset::new(asset),
            amount: units(amount),
            decimals: 18,
            tx_hash: None,
        };
        self.engine.process_intent(
            Timestamp::from_unix_secs(self.now),
            &intent,
            &mut self.outputs,
        )
    }

    pub fn findings(&self) -> Vec<&Finding> {
        self.outputs
            .iter()
            .filter_map(|o| {
                if let Output::Finding(f) = o {
                    Some(f)
                } else {
                    None
                }
            })
            .collect()
    }

    pub fn findings_of(&self, rule: &str) -> Vec<&Finding> {
        self.findings()
            .into_iter()
            .filter(|f| f.rule == rule)
            .collect()
    }

    pub fn freezes(&self) -> Vec<&Freeze> {
        self.outputs
            .iter()
            .filter_map(|o| {
                if let Output::Freeze(f) = o {
                    Some(f)
                } else {
                    None
                }
            })
            .collect()
    }
}
