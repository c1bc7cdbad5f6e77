//! The simulated exchange: its chains, assets and wallets, and the shape of
//! every identifier (addresses, transaction and block hashes).
//!
//! The topology is fixed; only the addresses depend on the seed. Indices
//! into the static tables are named by constants so that incidents can say
//! "eth-hot-1's USDT" without a lookup that could fail.

use std::collections::HashSet;

use drainguard_model::{Address, Asset, Chain, TxHash, WalletRole};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;

/// Base units in one whole unit of every scenario asset (18 decimals).
pub(crate) const WHOLE: u128 = 1_000_000_000_000_000_000;

/// How a chain's addresses, hashes and transfers look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `0x` + 40 hex addresses, `0x` + 64 hex hashes, ERC-20 logs.
    Evm,
    /// `T` + 33 base58 addresses, 64 hex hashes, TRC-20 logs.
    Tron,
    /// `bc1q` addresses, 64 hex hashes, outputs with change.
    Bitcoin,
}

impl Family {
    /// Its column in [`Topology::counterparties`].
    pub(crate) fn index(self) -> usize {
        match self {
            Family::Evm => 0,
            Family::Tron => 1,
            Family::Bitcoin => 2,
        }
    }
}

/// How blocks arrive.
#[derive(Debug, Clone, Copy)]
pub(crate) enum BlockClock {
    /// Exactly every this many seconds.
    Every(u32),
    /// Exponential intervals with this mean, in seconds.
    Poisson(u32),
}

/// A price series: one per symbol, shared by every chain holding it.
#[derive(Debug)]
pub(crate) struct PriceDef {
    /// The symbol.
    pub(crate) symbol: &'static str,
    /// The start price in 10⁻⁸ USD.
    pub(crate) start_e8: u64,
    /// A stablecoin: wobbles around its peg instead of walking.
    pub(crate) stable: bool,
}

/// Index of ETH in [`PRICES`].
const P_ETH: usize = 0;
/// Index of USDT in [`PRICES`].
const P_USDT: usize = 1;
/// Index of USDC in [`PRICES`].
const P_USDC: usize = 2;
/// Index of TRX in [`PRICES`].
const P_TRX: usize = 3;
/// Index of BTC in [`PRICES`].
const P_BTC: usize = 4;
/// Index of MATIC in [`PRICES`].
const P_MATIC: usize = 5;

/// Every priced asset.
pub(crate) const PRICES: &[PriceDef] = &[
    PriceDef {
        symbol: "ETH",
        start_e8: 1_600 * 100_000_000,
        stable: false,
    },
    PriceDef {
        symbol: "USDT",
        start_e8: 100_000_000,
        stable: true,
    },
    PriceDef {
        symbol: "USDC",
        start_e8: 100_000_000,
        stable: true,
    },
    PriceDef {
        symbol: "TRX",
        start_e8: 7_000_000,
        stable: false,
    },
    PriceDef {
        symbol: "BTC",
        start_e8: 26_000 * 100_000_000,
        stable: false,
    },
    // Polygon's coin on 12 Sept 2023.
    PriceDef {
        symbol: "MATIC",
        start_e8: 52_000_000,
        stable: false,
    },
];

/// An asset as one chain holds it.
#[derive(Debug)]
pub(crate) struct AssetDef {
    /// The symbol (also the key into [`PRICES`] through `price`).
    pub(crate) symbol: &'static str,
    /// The token contract, for token assets.
    pub(crate) token: Option<&'static str>,
    /// Decimals user amounts are rounded to.
    pub(crate) quantum_decimals: u8,
    /// Users like round numbers: this many quanta make a round amount.
    pub(crate) round_step: u128,
    /// Share of the chain's withdrawals and deposits.
    pub(crate) weight: f64,
    /// Index into [`PRICES`].
    pub(crate) price: usize,
}

impl AssetDef {
    /// Base units in one quantum (the smallest amount users move).
    pub(crate) fn unit(&self) -> u128 {
        10u128.pow(u32::from(18 - self.quantum_decimals.min(18)))
    }
}

/// A chain of the exchange.
#[derive(Debug)]
pub(crate) struct ChainDef {
    /// Its name in scenario files.
    pub(crate) name: &'static str,
    /// Address and transfer shapes.
    pub(crate) family: Family,
    /// Block timing.
    pub(crate) clock: BlockClock,
    /// Blocks after inclusion until a transfer is confirmed.
    pub(crate) depth: usize,
    /// Height of the block at the scenario's start.
    pub(crate) first_height: u64,
    /// Mean withdrawals a day at volume 1.0.
    pub(crate) withdrawals_per_day: f64,
    /// Native coin (base units) sent to a deposit address so that it can
    /// pay the fee of its token sweep: a few dollars (0 where deposits are
    /// not swept: bitcoin's UTXOs are spent directly).
    pub(crate) gas_topup: u128,
    /// Assets, indexed by the per-chain asset constants.
    pub(crate) assets: &'static [AssetDef],
}

/// Index of the ethereum chain.
pub(crate) const ETHEREUM: usize = 0;
/// Index of the tron chain.
pub(crate) const TRON: usize = 1;
/// Index of the bitcoin chain.
pub(crate) const BITCOIN: usize = 2;
/// Index of the polygon chain.
pub(crate) const POLYGON: usize = 3;

/// ETH on ethereum.
pub(crate) const ETH: usize = 0;
/// USDT on ethereum.
pub(crate) const ETH_USDT: usize = 1;
/// USDC on ethereum.
pub(crate) const ETH_USDC: usize = 2;
/// TRX on tron.
pub(crate) const TRX: usize = 0;
/// USDT on tron.
pub(crate) const TRON_USDT: usize = 1;
/// BTC on bitcoin.
pub(crate) const BTC: usize = 0;
/// MATIC on polygon.
pub(crate) const MATIC: usize = 0;
/// USDT on polygon.
pub(crate) const POLYGON_USDT: usize = 1;

/// The exchange's chains.
pub(crate) const CHAINS: &[ChainDef] = &[
    ChainDef {
        name: "ethereum",
        family: Family::Evm,
        clock: BlockClock::Every(12),
        depth: 12,
        first_height: 18_119_000,
        withdrawals_per_day: 6_000.0,
        gas_topup: 4_000_000_000_000_000,
        assets: &[
            AssetDef {
                symbol: "ETH",
                token: None,
                quantum_decimals: 6,
                round_step: 10_000,
                weight: 0.40,
                price: P_ETH,
            },
            AssetDef {
                symbol: "USDT",
                token: Some("0xdac17f958d2ee523a2206206994597c13d831ec7"),
                quantum_decimals: 2,
                round_step: 1_000,
                weight: 0.45,
                price: P_USDT,
            },
            AssetDef {
                symbol: "USDC",
                token: Some("0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"),
                quantum_decimals: 2,
                round_step: 1_000,
                weight: 0.15,
                price: P_USDC,
            },
        ],
    },
    ChainDef {
        name: "tron",
        family: Family::Tron,
        clock: BlockClock::Every(3),
        depth: 19,
        first_height: 54_850_000,
        withdrawals_per_day: 8_000.0,
        gas_topup: 30_000_000_000_000_000_000,
        assets: &[
            AssetDef {
                symbol: "TRX",
                token: None,
                quantum_decimals: 0,
                round_step: 100,
                weight: 0.30,
                price: P_TRX,
            },
            AssetDef {
                symbol: "USDT",
                token: Some("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"),
                quantum_decimals: 2,
                round_step: 1_000,
                weight: 0.70,
                price: P_USDT,
            },
        ],
    },
    ChainDef {
        name: "bitcoin",
        family: Family::Bitcoin,
        clock: BlockClock::Poisson(600),
        depth: 3,
        first_height: 807_550,
        withdrawals_per_day: 1_500.0,
        gas_topup: 0,
        assets: &[AssetDef {
            symbol: "BTC",
            token: None,
            quantum_decimals: 8,
            round_step: 100_000,
            weight: 1.0,
            price: P_BTC,
        }],
    },
    // A minor chain: a twelfth of ethereum's withdrawals (on Polygon PoS,
    // exchanges mostly serve USDT and the chain's coin), 2 s blocks, and a
    // hot wallet of a few hundred thousand dollars, a few times its
    // largest usual withdrawal (REALISM.md).
    ChainDef {
        name: "polygon",
        family: Family::Evm,
        clock: BlockClock::Every(2),
        depth: 64,
        first_height: 47_500_000,
        withdrawals_per_day: 1_200.0,
        gas_topup: 200_000_000_000_000_000,
        assets: &[
            AssetDef {
                symbol: "MATIC",
                token: None,
                quantum_decimals: 4,
                round_step: 1_000_000,
                weight: 0.45,
                price: P_MATIC,
            },
            AssetDef {
                symbol: "USDT",
                token: Some("0xc2132d05d31c914a87c6611c10748aeb04b58e8f"),
                quantum_decimals: 2,
                round_step: 1_000,
                weight: 0.55,
                price: P_USDT,
            },
        ],
    },
];

/// A wallet of the exchange.
#[derive(Debug)]
pub(crate) struct WalletDef {
    /// Its name in scenario files.
    pub(crate) name: &'static str,
    /// Index into [`CHAINS`].
    pub(crate) chain: usize,
    /// Hot, cold or tripwire.
    pub(crate) role: WalletRole,
    /// The wallet whose address (and key) this one shares: one EOA serves
    /// every EVM chain (Phemex's hot wallet served about 16).
    pub(crate) same_key_as: Option<usize>,
    /// Share of its chain's withdrawals and deposits (hot wallets).
    pub(crate) weight: f64,
    /// Start balances in whole units, per chain asset.
    pub(crate) balances: &'static [u64],
}

/// eth-hot-1.
pub(crate) const ETH_HOT_1: usize = 0;
/// eth-hot-2.
pub(crate) const ETH_HOT_2: usize = 1;
/// tron-hot.
pub(crate) const TRON_HOT: usize = 3;
/// btc-hot.
pub(crate) const BTC_HOT: usize = 5;
/// eth-cold.
const ETH_COLD: usize = 2;
/// polygon-hot.
pub(crate) const POLYGON_HOT: usize = 7;
/// eth-tripwire.
pub(crate) const ETH_TRIPWIRE: usize = 9;

/// The exchange's wallets.
pub(crate) const WALLETS: &[WalletDef] = &[
    WalletDef {
        name: "eth-hot-1",
        chain: ETHEREUM,
        role: WalletRole::Hot,
        same_key_as: None,
        weight: 0.7,
        balances: &[4_000, 10_000_000, 4_000_000],
    },
    WalletDef {
        name: "eth-hot-2",
        chain: ETHEREUM,
        role: WalletRole::Hot,
        same_key_as: None,
        weight: 0.3,
        balances: &[1_500, 3_000_000, 1_000_000],
    },
    WalletDef {
        name: "eth-cold",
        chain: ETHEREUM,
        role: WalletRole::Cold,
        same_key_as: None,
        weight: 0.0,
        balances: &[250_000, 400_000_000, 150_000_000],
    },
    WalletDef {
        name: "tron-hot",
        chain: TRON,
        role: WalletRole::Hot,
        same_key_as: None,
        weight: 1.0,
        balances: &[60_000_000, 8_000_000],
    },
    WalletDef {
        name: "tron-cold",
        chain: TRON,
        role: WalletRole::Cold,
        same_key_as: None,
        weight: 0.0,
        balances: &[2_000_000_000, 300_000_000],
    },
    WalletDef {
        name: "btc-hot",
        chain: BITCOIN,
        role: WalletRole::Hot,
        same_key_as: None,
        weight: 1.0,
        balances: &[150],
    },
    WalletDef {
        name: "btc-cold",
        chain: BITCOIN,
        role: WalletRole::Cold,
        same_key_as: None,
        weight: 0.0,
        balances: &[12_000],
    },
    // eth-hot-1's key on polygon: about $310k of MATIC and $300k of USDT.
    WalletDef {
        name: "polygon-hot",
        chain: POLYGON,
        role: WalletRole::Hot,
        same_key_as: Some(ETH_HOT_1),
        weight: 1.0,
        balances: &[600_000, 300_000],
    },
    WalletDef {
        name: "polygon-cold",
        chain: POLYGON,
        role: WalletRole::Cold,
        same_key_as: Some(ETH_COLD),
        weight: 0.0,
        balances: &[40_000_000, 20_000_000],
    },
    // A decoy funded like a small hot wallet, its key kept beside the hot
    // keys and never used by the exchange.
    WalletDef {
        name: "eth-tripwire",
        chain: ETHEREUM,
        role: WalletRole::Tripwire,
        same_key_as: None,
        weight: 0.0,
        balances: &[30, 0, 0],
    },
];

/// Regular counterparties (market makers, other exchanges, OTC desks,
/// custodians) the exchange pays again and again, each with one address
/// per chain family: the same EVM address on ethereum and polygon. Paid
/// by every hot wallet of every chain, as a market maker withdraws
/// wherever it trades.
pub(crate) const COUNTERPARTIES: usize = 60;

/// A chain with its identifiers built.
#[derive(Debug)]
pub(crate) struct ChainRt {
    /// The static definition.
    pub(crate) def: &'static ChainDef,
    /// Its name as a [`Chain`].
    pub(crate) id: Chain,
    /// Asset symbols, per chain asset.
    pub(crate) assets: Vec<Asset>,
    /// Token contracts, per chain asset.
    pub(crate) tokens: Vec<Option<Address>>,
    /// Its hot wallets (indices into [`WALLETS`]).
    pub(crate) hot: Vec<usize>,
    /// Its cold wallet.
    pub(crate) cold: usize,
    /// What the exchange holds of each asset on the chain at the start
    /// (hot and cold wallets), in base units.
    pub(crate) holdings: Vec<u128>,
}

/// A wallet with its address.
#[derive(Debug)]
pub(crate) struct WalletRt {
    /// The static definition.
    pub(crate) def: &'static WalletDef,
    /// Its address.
    pub(crate) address: Address,
    /// Start balances in base units, per chain asset: also its target, the
    /// level refills and sweeps bring it back to.
    pub(crate) start: Vec<u128>,
}

/// The exchange with its addresses.
#[derive(Debug)]
pub(crate) struct Topology {
    /// Chains, indexed like [`CHAINS`].
    pub(crate) chains: Vec<ChainRt>,
    /// Wallets, indexed like [`WALLETS`].
    pub(crate) wallets: Vec<WalletRt>,
    /// Price symbols, indexed like [`PRICES`].
    pub(crate) price_assets: Vec<Asset>,
    /// The regular counterparties' addresses, by family (EVM, TRON,
    /// bitcoin), most active first.
    pub(crate) counterparties: Vec<[Address; 3]>,
}

impl Topology {
    /// Builds the exchange, drawing every address from `ids`.
    pub(crate) fn build(ids: &mut Ids) -> Topology {
        let mut wallets: Vec<WalletRt> = Vec::with_capacity(WALLETS.len());
        for def in WALLETS {
            let family = CHAINS[def.chain].family;
            let address = match def.same_key_as.and_then(|w| wallets.get(w)) {
                Some(shared) => shared.address.clone(),
                None => ids.address(family),
            };
            let start = def
                .balances
                .iter()
                .map(|&units| u128::from(units) * WHOLE)
                .collect();
            wallets.push(WalletRt {
                def,
                address,
                start,
            });
        }
        let counterparties = (0..COUNTERPARTIES)
            .map(|_| {
                [
                    ids.address(Family::Evm),
                    ids.address(Family::Tron),
                    ids.address(Family::Bitcoin),
                ]
            })
            .collect();
        // One shared string per asset name, for chains and prices alike,
        // as the scenario reader gives them.
        let price_assets: Vec<Asset> = PRICES.iter().map(|p| Asset::new(p.symbol)).collect();
        let asset = |symbol: &str| {
            price_assets
                .iter()
                .find(|a| a.as_str() == symbol)
                .cloned()
                .unwrap_or_else(|| Asset::new(symbol))
        };
        let chains = CHAINS
            .iter()
            .enumerate()
            .map(|(c, def)| {
                let of_chain = |role: WalletRole| {
                    WALLETS
                        .iter()
                        .enumerate()
                        .filter(move |(_, w)| w.chain == c && w.role == role)
                        .map(|(i, _)| i)
                };
                ChainRt {
                    def,
                    id: Chain::new(def.name),
                    assets: def.assets.iter().map(|a| asset(a.symbol)).collect(),
                    tokens: def
                        .assets
                        .iter()
                        .map(|a| a.token.map(Address::new))
                        .collect(),
                    hot: of_chain(WalletRole::Hot).collect(),
                    cold: of_chain(WalletRole::Cold).next().unwrap_or(0),
                    holdings: (0..def.assets.len())
                        .map(|a| {
                            of_chain(WalletRole::Hot)
                                .chain(of_chain(WalletRole::Cold))
                                .map(|w| u128::from(WALLETS[w].balances[a]) * WHOLE)
                                .sum()
                        })
                        .collect(),
                }
            })
            .collect();
        Topology {
            chains,
            wallets,
            price_assets,
            counterparties,
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";
const BASE58: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const BECH32: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// Appends `n` characters drawn uniformly from `alphabet` (at most 256
/// characters), a byte of randomness at a time.
fn push_chars(rng: &mut ChaCha8Rng, out: &mut String, alphabet: &[u8], n: usize) {
    let len = alphabet.len().clamp(1, 256);
    // Bytes at or above the largest multiple of `len` are rejected, so
    // every character is equally likely.
    let limit = 256 - 256 % len;
    let mut word = 0u64;
    let mut left = 0;
    let mut pushed = 0;
    while pushed < n {
        if left == 0 {
            word = rng.next_u64();
            left = 8;
        }
        let byte = usize::from(word.to_le_bytes()[8 - left]);
        left -= 1;
        if byte < limit {
            out.push(char::from(alphabet[byte % len]));
            pushed += 1;
        }
    }
}

/// FNV-1a: a fingerprint of an identifier. Equal strings have equal
/// fingerprints, so a set of fingerprints never lets a duplicate through;
/// a rare collision of different strings only costs a redraw.
fn fingerprint(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Draws identifiers, each one never drawn before in this scenario.
#[derive(Debug)]
pub(crate) struct Ids {
    rng: ChaCha8Rng,
    /// Fingerprints of everything drawn. Membership only: the set is never
    /// iterated, so its hash order cannot leak into the output.
    used: HashSet<u64>,
}

impl Ids {
    /// Draws from `rng`.
    pub(crate) fn new(rng: ChaCha8Rng) -> Ids {
        Ids {
            rng,
            used: HashSet::new(),
        }
    }

    fn fresh(&mut self, prefix: &str, alphabet: &[u8], n: usize) -> String {
        loop {
            let mut s = String::with_capacity(prefix.len() + n);
            s.push_str(prefix);
            push_chars(&mut self.rng, &mut s, alphabet, n);
            if self.used.insert(fingerprint(&s)) {
                return s;
            }
        }
    }

    /// A fresh address of the family.
    pub(crate) fn address(&mut self, family: Family) -> Address {
        let s = match family {
            Family::Evm => self.fresh("0x", HEX, 40),
            Family::Tron => self.fresh("T", BASE58, 33),
            Family::Bitcoin => self.fresh("bc1q", BECH32, 38),
        };
        Address::new(&s)
    }

    /// A fresh transaction hash of the family.
    pub(crate) fn tx_hash(&mut self, family: Family) -> TxHash {
        let s = match family {
            Family::Evm => self.fresh("0x", HEX, 64),
            Family::Tron | Family::Bitcoin => self.fresh("", HEX, 64),
        };
        TxHash::new(&s)
    }

    /// A fresh block hash of the family at `height`.
    pub(crate) fn block_hash(&mut self, family: Family, height: u64) -> String {
        match family {
            Family::Evm => self.fresh("0x", HEX, 64),
            // TRON block ids start with the height.
            Family::Tron => self.fresh(&format!("{height:016x}"), HEX, 48),
            // Bitcoin block hashes start with the proof of work's zeros.
            Family::Bitcoin => self.fresh("0000000000000000000", HEX, 45),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_constants_match_the_tables() {
        assert_eq!(CHAINS[ETHEREUM].name, "ethereum");
        assert_eq!(CHAINS[TRON].name, "tron");
        assert_eq!(CHAINS[BITCOIN].name, "bitcoin");
        assert_eq!(CHAINS[ETHEREUM].assets[ETH].symbol, "ETH");
        assert_eq!(CHAINS[ETHEREUM].assets[ETH_USDT].symbol, "USDT");
        assert_eq!(CHAINS[ETHEREUM].assets[ETH_USDC].symbol, "USDC");
        assert_eq!(CHAINS[TRON].assets[TRX].symbol, "TRX");
        assert_eq!(CHAINS[TRON].assets[TRON_USDT].symbol, "USDT");
        assert_eq!(CHAINS[BITCOIN].assets[BTC].symbol, "BTC");
        assert_eq!(WALLETS[ETH_HOT_1].name, "eth-hot-1");
        assert_eq!(WALLETS[ETH_HOT_2].name, "eth-hot-2");
        assert_eq!(WALLETS[TRON_HOT].name, "tron-hot");
        assert_eq!(WALLETS[BTC_HOT].name, "btc-hot");
        assert_eq!(WALLETS[ETH_COLD].name, "eth-cold");
        assert_eq!(WALLETS[POLYGON_HOT].name, "polygon-hot");
        assert_eq!(WALLETS[ETH_TRIPWIRE].role, WalletRole::Tripwire);
        assert_eq!(CHAINS[POLYGON].name, "polygon");
        assert_eq!(CHAINS[POLYGON].assets[MATIC].symbol, "MATIC");
        assert_eq!(CHAINS[POLYGON].assets[POLYGON_USDT].symbol, "USDT");
        for w in WALLETS {
            if let Some(k) = w.same_key_as {
                assert_eq!(CHAINS[WALLETS[k].chain].family, CHAINS[w.chain].family);
                assert!(k < WALLETS.len());
            }
        }
        for (i, w) in WALLETS.iter().enumerate() {
            assert_eq!(w.balances.len(), CHAINS[w.chain].assets.len(), "{i}");
        }
        for c in CHAINS {
            for a in c.assets {
                assert_eq!(PRICES[a.price].symbol, a.symbol);
            }
            let total: f64 = c.assets.iter().map(|a| a.weight).sum();
            assert!((total - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn identifiers_have_their_chain_shapes() {
        use rand::SeedableRng;
        let mut ids = Ids::new(ChaCha8Rng::seed_from_u64(7));
        let evm = ids.address(Family::Evm);
        assert_eq!(evm.as_str().len(), 42);
        assert!(evm.as_str().starts_with("0x"));
        let tron = ids.address(Family::Tron);
        assert_eq!(tron.as_str().len(), 34);
        assert!(tron.as_str().starts_with('T'));
        let btc = ids.address(Family::Bitcoin);
        assert_eq!(btc.as_str().len(), 42);
        assert!(btc.as_str().starts_with("bc1q"));
        assert_eq!(ids.tx_hash(Family::Evm).as_str().len(), 66);
        assert_eq!(ids.tx_hash(Family::Tron).as_str().len(), 64);
        assert_eq!(ids.block_hash(Family::Tron, 1).len(), 64);
        assert_eq!(ids.block_hash(Family::Bitcoin, 1).len(), 64);
    }
}
