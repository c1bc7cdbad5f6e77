//! What the engine knows about the world, in compact form: interned
//! chains, assets and addresses; the exchange's wallets and their
//! balances; prices; open withdrawal intents; the transfers still being
//! tracked; and what each wallet has paid before.

use std::{collections::VecDeque, time::Duration};

use drainguard_model::{
    Address, Amount, Asset, BalanceObs, Chain, Evidence, Intent, Price, Raw, Stage, Timestamp,
    Transfer, TxHash, Usd, WalletRole,
};
use hashbrown::HashTable;
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::{
    config::IntentMatching,
    intern::{AddrId, AddrTable},
    window::Seq,
};

/// The origin of `first_paid` times: 2000-01-01T00:00:00Z.
pub(crate) const PAID_EPOCH: i64 = 946_684_800;

/// A time as stored in `first_paid`.
pub(crate) fn paid_at(t: Timestamp) -> u32 {
    let secs = t.0.div_euclid(1_000_000_000) - PAID_EPOCH;
    u32::try_from(secs.clamp(0, i64::from(u32::MAX - 1))).unwrap_or(0) + 1
}

/// Hours a retired transfer is still recognized.
const RETIRED_HOURS: i64 = 6;

/// A chain's dense id.
pub(crate) type ChainId = u16;
/// An asset's dense id.
pub(crate) type AssetId = u16;
/// A wallet's index in [`State::wallets`].
pub(crate) type WalletIdx = u32;

/// Which way a transfer moves money relative to the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// From a hot wallet to an address that is not the exchange's.
    Outflow,
    /// From outside to a wallet of the exchange.
    Inflow,
    /// Between the exchange's own wallets.
    Internal,
    /// Touches no wallet of the exchange.
    Unrelated,
}

/// The key of one window: integers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum WindowKey {
    Wallet(WalletIdx, Option<AssetId>),
    Asset(ChainId, AssetId),
    Chain(ChainId, Option<AssetId>),
    Global,
}

/// Where a transfer sits in one shared window, for retraction: eight
/// bytes, so a transfer's few refs live inline in its slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowRef {
    /// The window spec (see `Engine::specs`), or a destination rule.
    pub(crate) slot: u16,
    seq_hi: u16,
    seq_lo: u32,
}

impl WindowRef {
    /// A ref to entry `seq` of a window: 48 bits of sequence, a
    /// century of a million entries a second.
    pub(crate) fn new(slot: u16, seq: Seq) -> WindowRef {
        WindowRef {
            slot,
            seq_hi: (seq >> 32) as u16,
            seq_lo: seq as u32,
        }
    }

    pub(crate) fn seq(self) -> Seq {
        u64::from(self.seq_hi) << 32 | u64::from(self.seq_lo)
    }
}

/// A transfer's refs; the default rules make four.
pub(crate) type Refs = SmallVec<[WindowRef; 4]>;

/// What the engine keeps about a transfer while it can still change.
/// Ordered and sized so a tracked transfer takes 96 bytes: the engine may
/// hold hours of a busy exchange's transfers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransferState {
    pub(crate) first_seen: Timestamp,
    pub(crate) amount: Amount,
    /// Its USD value in micro-dollars, saturating at 2⁶⁴ − 1 (18
    /// trillion dollars).
    usd_micros: u64,
    /// The time of the intent this outflow consumed (when `matched`):
    /// a retraction re-opens it with its own time, so its match window
    /// does not move.
    pub(crate) intent_t: Timestamp,
    pub(crate) from: Option<WalletIdx>,
    pub(crate) to_wallet: Option<WalletIdx>,
    pub(crate) to: AddrId,
    /// Its share of the sender's balance when first judged (basis points).
    pub(crate) share_bps: u32,
    pub(crate) chain: ChainId,
    pub(crate) asset: AssetId,
    /// The asset's decimals, to spell the amount out as evidence.
    pub(crate) decimals: u8,
    pub(crate) direction: Direction,
    pub(crate) counted: bool,
    pub(crate) applied: bool,
    pub(crate) judged: bool,
    /// While counted: it holds an intent. While retracted: it held one
    /// before, which was re-opened and is taken again if it comes back.
    pub(crate) matched: bool,
    /// The intent it consumed was found by this transfer's tx hash.
    pub(crate) intent_by_hash: bool,
}

impl TransferState {
    /// Its USD value when first seen.
    pub(crate) fn usd(&self) -> Usd {
        Usd(u128::from(self.usd_micros))
    }
}

/// A wallet of the exchange.
#[derive(Debug, Clone)]
/// Small: an exchange may watch a hundred thousand deposit and hot
/// wallets. The address is spelled out from the table when a finding
/// needs it.
pub(crate) struct Wallet {
    pub(crate) chain: ChainId,
    pub(crate) addr: AddrId,
    pub(crate) role: WalletRole,
    /// Assets with a known balance.
    pub(crate) assets: SmallVec<[AssetId; 4]>,
}

/// What the engine knows of a chain's heads.
#[derive(Debug, Clone)]
pub(crate) struct HeadTrack {
    pub(crate) last_block: u64,
    pub(crate) last_t: Timestamp,
    /// Nanoseconds between the last heads (at most [`HEAD_INTERVALS`]), in
    /// a fixed ring: a head replaces the oldest in place, with no queue
    /// to grow or shift.
    ring: [i64; HEAD_INTERVALS],
    /// Where the oldest interval is in `ring`.
    ring_at: usize,
    /// The same intervals in order, kept so by insertion on each head: the
    /// blind check reads the median every second, and a head must not
    /// allocate or sort.
    sorted: [i64; HEAD_INTERVALS],
    sorted_len: usize,
}

impl Default for HeadTrack {
    fn default() -> Self {
        HeadTrack {
            last_block: 0,
            last_t: Timestamp::default(),
            ring: [0; HEAD_INTERVALS],
            ring_at: 0,
            sorted: [0; HEAD_INTERVALS],
            sorted_len: 0,
        }
    }
}

/// How many head intervals the median is taken over.
const HEAD_INTERVALS: usize = 31;

impl HeadTrack {
    /// The median interval: robust to a slow block or a burst.
    pub(crate) fn median_interval(&self) -> i64 {
        if self.sorted_len == 0 {
            return 0;
        }
        self.sorted[self.sorted_len / 2]
    }

    /// How many intervals are known (at most [`HEAD_INTERVALS`]).
    pub(crate) fn interval_count(&self) -> usize {
        self.sorted_len
    }

    /// Adds an interval, replacing the oldest once [`HEAD_INTERVALS`] are
    /// known; whether the count grew or the median fell.
    fn push_interval(&mut self, dt: i64) -> bool {
        let n = self.sorted_len;
        let sorted = &mut self.sorted;
        if n == HEAD_INTERVALS {
            let old = std::mem::replace(&mut self.ring[self.ring_at], dt);
            // A wrap, not a remainder: a division on every head.
            self.ring_at = if self.ring_at + 1 == HEAD_INTERVALS {
                0
            } else {
                self.ring_at + 1
            };
            // A steady chain's interval is the one it replaces: the order
            // stands as it is.
            if dt == old {
                return false;
            }
            let median = sorted[n / 2];
            // Replace the oldest value in place and bubble the new one to
            // its position: at most 31 moves, no call.
            let mut at = sorted[..n].partition_point(|&x| x < old);
            sorted[at] = dt;
            while at > 0 && sorted[at - 1] > sorted[at] {
                sorted.swap(at - 1, at);
                at -= 1;
            }
            while at + 1 < n && sorted[at + 1] < sorted[at] {
                sorted.swap(at, at + 1);
                at += 1;
            }
            sorted[n / 2] < median
        } else {
            // Filling: the oldest is still at 0, so this is slot n.
            self.ring[n] = dt;
            let mut at = n;
            sorted[at] = dt;
            while at > 0 && sorted[at - 1] > sorted[at] {
                sorted.swap(at - 1, at);
                at -= 1;
            }
            self.sorted_len = n + 1;
            true
        }
    }
}

/// The payment history of one wallet in one asset.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct History {
    pub(crate) count: u64,
    pub(crate) max: Amount,
}

/// An open intent. Its serial ties it to its tx-hash entry: the engine
/// only needs to know that an outflow matched, not which id it had, so the
/// book stores no strings.
#[derive(Debug, Clone)]
struct OpenIntent {
    serial: u64,
    t: Timestamp,
    amount: Amount,
    used: bool,
}

pub(crate) type IntentKey = (ChainId, AddrId, AddrId, AssetId);

/// The open intents of one (chain, wallet, destination, asset): nearly
/// always one, kept inline.
type IntentQueue = SmallVec<[OpenIntent; 1]>;

/// Open withdrawal intents, indexed for matching.
#[derive(Debug, Default)]
pub(crate) struct IntentBook {
    by_fields: FxHashMap<IntentKey, IntentQueue>,
    /// Keyed by the transaction hash's own keyed hash (see [`TxKey`]):
    /// the plain multiplicative hasher only mixes in the chain.
    by_hash: FxHashMap<(ChainId, TxKey), (IntentKey, u64)>,
    connected: FxHashSet<(ChainId, AddrId)>,
    next_serial: u64,
    pub(crate) open: usize,
}

impl IntentBook {
    fn add(&mut self, t: Timestamp, key: IntentKey, i: &Intent) {
        let serial = self.next_serial;
        self.next_serial += 1;
        if let Some(h) = &i.tx_hash {
            self.by_hash.insert((key.0, TxKey::of(h)), (key, serial));
        }
        self.connected.insert((key.0, key.1));
        self.by_fields.entry(key).or_default().push(OpenIntent {
            serial,
            t,
            amount: i.amount,
            used: false,
        });
        self.open += 1;
    }

    /// Whether intents have been seen for this wallet.
    pub(crate) fn connected(&self, chain: ChainId, wallet: AddrId) -> bool {
        self.connected.contains(&(chain, wallet))
    }

    /// Finds and consumes the intent an outflow first seen at `now`
    /// matches: by tx hash, else the earliest open intent with the same
    /// fields and an amount within tolerance. The intent's time and
    /// whether it was found by hash, if one matched.
    fn take_match(
        &mut self,
        now: Timestamp,
        key: IntentKey,
        tx: &TxHash,
        amount: Amount,
        m: &IntentMatching,
    ) -> Option<(Timestamp, bool)> {
        let live = |i: &OpenIntent| !i.used && i.t <= now && now <= i.t.plus(m.match_window);
        if !self.by_hash.is_empty()
            && let Some((hkey, serial)) = self.by_hash.remove(&(key.0, TxKey::of(tx)))
            && let Some(i) = self
                .by_fields
                .get_mut(&hkey)
                .and_then(|q| q.iter_mut().find(|i| i.serial == serial && live(i)))
        {
            i.used = true;
            self.open -= 1;
            return Some((i.t, true));
        }
        let q = self.by_fields.get_mut(&key)?;
        let stale = q
            .iter()
            .take_while(|i| i.used || i.t.plus(m.match_window) < now)
            .count();
        self.open -= q[..stale].iter().filter(|i| !i.used).count();
        q.drain(..stale);
        let within = |i: &OpenIntent| {
            let diff = if i.amount > amount {
                i.amount.saturating_sub(amount)
            } else {
                amount.saturating_sub(i.amount)
            };
            diff <= i.amount.share_bps(m.tolerance_bps)
        };
        let Some(found) = q.iter_mut().find(|i| live(i) && within(i)) else {
            if q.is_empty() {
                self.by_fields.remove(&key);
            }
            return None;
        };
        found.used = true;
        let t = found.t;
        self.open -= 1;
        if q.iter().all(|i| i.used) {
            self.by_fields.remove(&key);
        }
        Some((t, false))
    }

    /// Gives back the intent a retracted outflow had consumed: open again
    /// with its own time (its match window unchanged), for this outflow's
    /// fields and amount, and under its tx hash if that is how it was
    /// found, so the same withdrawal included again (same or new key, or
    /// re-signed) matches it, and nothing else can match it twice. The
    /// queue stays in time order, which its expiry scan relies on.
    fn reopen(&mut self, key: IntentKey, t: Timestamp, amount: Amount, tx: Option<&TxHash>) {
        let serial = self.next_serial;
        self.next_serial += 1;
        if let Some(tx) = tx {
            self.by_hash.insert((key.0, TxKey::of(tx)), (key, serial));
        }
        self.connected.insert((key.0, key.1));
        let q = self.by_fields.entry(key).or_default();
        let at = q.partition_point(|i| i.t <= t);
        q.insert(
            at,
            OpenIntent {
                serial,
                t,
                amount,
                used: false,
            },
        );
        self.open += 1;
    }

    /// Drops intents that can no longer match anything.
    fn prune(&mut self, now: Timestamp, m: &IntentMatching) {
        let mut expired = 0usize;
        self.by_fields.retain(|_, q| {
            q.retain(|i| {
                let keep = !i.used && now <= i.t.plus(m.match_window);
                expired += usize::from(!keep && !i.used);
                keep
            });
            !q.is_empty()
        });
        self.open -= expired;
        let fields = &self.by_fields;
        self.by_hash.retain(|_, (k, serial)| {
            fields
                .get(k)
                .is_some_and(|q| q.iter().any(|i| i.serial == *serial))
        });
    }
}

/// A transaction hash as a map key: the 32 bytes of a lowercase 64-hex
/// hash, `0x`-prefixed (EVM) or bare (Bitcoin, TRON), so tracking a
/// transfer allocates nothing; any other spelling as its string. The two
/// spellings stay apart, as the strings are. It carries the hash the
/// transaction hash was given when it was made, so the maps keyed on it
/// hash one word, not 32 bytes, and tell most keys apart by it alone.
#[derive(Debug, Clone)]
pub(crate) struct TxKey {
    bytes: TxBytes,
    hash: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TxBytes {
    Prefixed([u8; 32]),
    Bare([u8; 32]),
    Text(TxHash),
}

impl PartialEq for TxKey {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.bytes == other.bytes
    }
}
impl Eq for TxKey {}

impl std::hash::Hash for TxKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl TxKey {
    /// The key of a hash, from the bytes it was decoded to when it was
    /// made (the same shapes this engine once decoded itself).
    fn of(h: &TxHash) -> TxKey {
        let bytes = match h.raw() {
            Raw::Hex32 {
                prefixed: true,
                bytes,
            } => TxBytes::Prefixed(bytes),
            Raw::Hex32 {
                prefixed: false,
                bytes,
            } => TxBytes::Bare(bytes),
            Raw::Text | Raw::Hex20(_) => TxBytes::Text(h.clone()),
        };
        TxKey {
            bytes,
            hash: h.key_hash(),
        }
    }
}

impl TxKey {
    /// Whether this is the key of `h` ([`TxKey::of`]), compared in place.
    fn is(&self, h: &TxHash) -> bool {
        self.hash == h.key_hash()
            && match (&self.bytes, h.raw()) {
                (
                    TxBytes::Prefixed(a),
                    Raw::Hex32 {
                        prefixed: true,
                        bytes,
                    },
                )
                | (
                    TxBytes::Bare(a),
                    Raw::Hex32 {
                        prefixed: false,
                        bytes,
                    },
                ) => *a == bytes,
                (TxBytes::Text(a), Raw::Text | Raw::Hex20(_)) => a == h,
                _ => false,
            }
    }

    /// The hash spelled out again, as it was received.
    fn tx_hash(&self) -> TxHash {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let spell = |prefix: &str, b: &[u8; 32]| {
            let mut s = String::with_capacity(66);
            s.push_str(prefix);
            for x in b {
                s.push(char::from(DIGITS[usize::from(x >> 4)]));
                s.push(char::from(DIGITS[usize::from(x & 0x0f)]));
            }
            TxHash::new(&s)
        };
        match &self.bytes {
            TxBytes::Prefixed(b) => spell("0x", b),
            TxBytes::Bare(b) => spell("", b),
            TxBytes::Text(h) => h.clone(),
        }
    }
}

type TransferMapKey = (ChainId, TxKey, u32);

/// The hash of a transfer's key: its transaction hash's keyed hash (made
/// once, with the process's random seed) mixed with the chain and index
/// by one multiplication, not a hasher fed field by field. Distinct
/// (chain, index) pairs of one transaction stay apart: the mix is one to
/// one for a given transaction hash.
fn transfer_hash(key: &TransferMapKey) -> u64 {
    let (chain, tx, index) = key;
    mix_transfer_hash(*chain, tx.hash, *index)
}

/// [`transfer_hash`] from its parts: a record is looked up by them.
fn mix_transfer_hash(chain: ChainId, tx_hash: u64, index: u32) -> u64 {
    let low = u64::from(chain) << 32 | u64::from(index);
    (tx_hash ^ low)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .rotate_left(26)
}

/// How many chains or assets are told apart by scanning rather than
/// hashing their names.
const SCAN: usize = 16;

/// Dense ids of chains or assets by the address of the string the engine
/// holds for them: readers share one string per name, so an event's name
/// is nearly always that very string, found in one probe instead of a
/// scan of every name. Only addresses of strings the engine holds are
/// kept: they cannot be freed and reused for another name while it runs.
#[derive(Debug)]
struct ByAddress([(usize, u16); BY_ADDRESS]);

/// Slots of a [`ByAddress`]: room for a few dozen names, probed in turn.
const BY_ADDRESS: usize = 32;

impl Default for ByAddress {
    fn default() -> Self {
        ByAddress([(0, 0); BY_ADDRESS])
    }
}

impl ByAddress {
    fn home(p: usize) -> usize {
        (p.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59) % BY_ADDRESS
    }

    #[inline(always)]
    fn get(&self, s: &str) -> Option<u16> {
        // An address is never 0, an empty slot's: the probe stops there.
        let p = s.as_ptr() as usize;
        let mut at = Self::home(p);
        for _ in 0..BY_ADDRESS {
            let (q, id) = self.0[at];
            if q == p {
                return Some(id);
            }
            if q == 0 {
                return None;
            }
            at = (at + 1) % BY_ADDRESS;
        }
        None
    }

    /// Remembers `held`, the engine's own string for `id` (while there is
    /// room: past it, names are found by their text).
    fn put(&mut self, held: &str, id: u16) {
        let p = held.as_ptr() as usize;
        let mut at = Self::home(p);
        for _ in 0..BY_ADDRESS {
            let (q, _) = self.0[at];
            if q == p || q == 0 {
                self.0[at] = (p, id);
                return;
            }
            at = (at + 1) % BY_ADDRESS;
        }
    }
}

/// A chain's or asset's dense id by its text, adding the name if new (the
/// second value says so), and remembering the address of the string held
/// for it: among a handful of names a scan beats hashing the name; among
/// more, by hash.
///
/// Ids are 16 bits. Names past the first 65,535 all get the last id, held
/// for a stand-in name (`other()`), and are not remembered: a hot wallet
/// receiving airdrops of ever new tokens (each named by its contract) must
/// neither grow the engine without end nor have a spam token share an id
/// with a real asset.
fn id_by_name<T: Clone + Eq + std::hash::Hash>(
    (list, ids, at): (&mut Vec<T>, &mut FxHashMap<T, u16>, &mut ByAddress),
    name: &T,
    as_str: fn(&T) -> &str,
    other: fn() -> T,
) -> (u16, bool) {
    let found = if list.len() <= SCAN {
        list.iter().position(|y| y == name).map(|i| i as u16)
    } else {
        ids.get(name).copied()
    };
    let (id, new) = match found {
        Some(id) => (id, false),
        None if list.len() > usize::from(OTHER_ID) => (OTHER_ID, false),
        None if list.len() == usize::from(OTHER_ID) => {
            list.push(other());
            (OTHER_ID, true)
        }
        None => {
            let id = u16::try_from(list.len()).unwrap_or(u16::MAX);
            list.push(name.clone());
            ids.insert(name.clone(), id);
            (id, true)
        }
    };
    if let Some(held) = list.get(usize::from(id)) {
        at.put(as_str(held), id);
    }
    (id, new)
}

/// The id every chain or asset name past the first 65,535 shares.
const OTHER_ID: u16 = u16::MAX;

/// The world as the engine sees it.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) chains: Vec<Chain>,
    chain_ids: FxHashMap<Chain, ChainId>,
    chain_at: ByAddress,
    pub(crate) assets: Vec<Asset>,
    asset_ids: FxHashMap<Asset, AssetId>,
    asset_at: ByAddress,
    pub(crate) addrs: AddrTable,
    pub(crate) wallets: Vec<Wallet>,
    wallet_idx: FxHashMap<(ChainId, AddrId), WalletIdx>,
    /// Exact balances of (wallet, asset), with the asset's decimals.
    pub(crate) balances: FxHashMap<(WalletIdx, AssetId), (Amount, u8)>,
    /// The same, summed over the hot wallets of a chain.
    pub(crate) chain_balances: FxHashMap<(ChainId, AssetId), Amount>,
    pub(crate) prices: Vec<Price>,
    /// The same in nano-dollars, converted once per price rather than once
    /// per transfer.
    price_nanos: Vec<u128>,
    pub(crate) intents: IntentBook,
    /// Tracked transfers: key and index into `slab` and `refs`, found by a
    /// hash computed once per record (it is also the retired fingerprint).
    transfers: HashTable<(TransferMapKey, u32)>,
    /// Transfer states, addressed by index so the hot path hashes a key
    /// once per record.
    pub(crate) slab: Vec<TransferState>,
    /// Each tracked transfer's entries in the windows, for retraction.
    pub(crate) refs: Vec<Refs>,
    /// Each slab entry's key hash, to find its table entry when pruned.
    hashes: Vec<u64>,
    /// Tracked transfers by first sight, oldest first: pruning takes them
    /// off the front instead of scanning every tracked transfer.
    by_age: VecDeque<u32>,
    free: Vec<u32>,
    /// When each address was first paid by a hot wallet, in seconds since
    /// [`PAID_EPOCH`] plus one (0: never); four bytes an address.
    pub(crate) first_paid: Vec<u32>,
    /// When the engine first saw an outflow, as `first_paid` stores
    /// times (0: none yet): what it knows of who is "new" starts there.
    pub(crate) watching_since: u32,
    pub(crate) history: FxHashMap<(WalletIdx, AssetId), History>,
    /// Fingerprints of retired transfers: 8 bytes a transfer instead of
    /// its whole state. One set, so a new transfer costs one probe.
    retired: FxHashSet<u64>,
    /// The same fingerprints by the hour they were retired, to forget them
    /// after [`RETIRED_HOURS`].
    retired_by_hour: VecDeque<(i64, Vec<u64>)>,
    /// Heads by chain id (chains that never sent one have a default track).
    pub(crate) heads: Vec<HeadTrack>,
}

/// Room made up front in the tables that grow with traffic: about an hour
/// of a busy exchange (a few thousand transfers tracked, tens of thousands
/// of addresses), so the engine does not rehash them again and again
/// while it warms up. A few megabytes; they grow past it as needed.
const TRANSFERS_HINT: usize = 8_192;
const ADDRESSES_HINT: usize = 32_768;

impl State {
    /// An empty state with room for [`TRANSFERS_HINT`] tracked and
    /// retired transfers and [`ADDRESSES_HINT`] addresses.
    pub(crate) fn new() -> State {
        State {
            addrs: AddrTable::with_capacity(ADDRESSES_HINT),
            first_paid: Vec::with_capacity(ADDRESSES_HINT),
            transfers: HashTable::with_capacity(TRANSFERS_HINT),
            slab: Vec::with_capacity(TRANSFERS_HINT),
            refs: Vec::with_capacity(TRANSFERS_HINT),
            hashes: Vec::with_capacity(TRANSFERS_HINT),
            by_age: VecDeque::with_capacity(TRANSFERS_HINT),
            retired: FxHashSet::with_capacity_and_hasher(TRANSFERS_HINT, Default::default()),
            ..State::default()
        }
    }

    /// A chain's dense id, creating it on first sight.
    #[inline]
    pub(crate) fn chain_id(&mut self, c: &Chain) -> ChainId {
        match self.chain_at.get(c.as_str()) {
            Some(id) => id,
            None => self.chain_id_by_name(c),
        }
    }

    /// The same, for a chain whose string is not the one the engine holds.
    #[inline(never)]
    fn chain_id_by_name(&mut self, c: &Chain) -> ChainId {
        let names = (&mut self.chains, &mut self.chain_ids, &mut self.chain_at);
        id_by_name(names, c, Chain::as_str, || Chain::new("(other)")).0
    }

    /// An asset's dense id, creating it on first sight.
    #[inline]
    pub(crate) fn asset_id(&mut self, a: &Asset) -> AssetId {
        match self.asset_at.get(a.as_str()) {
            Some(id) => id,
            None => self.asset_id_by_name(a),
        }
    }

    /// The same, for an asset whose string is not the one the engine holds.
    #[inline(never)]
    fn asset_id_by_name(&mut self, a: &Asset) -> AssetId {
        let names = (&mut self.assets, &mut self.asset_ids, &mut self.asset_at);
        let (id, new) = id_by_name(names, a, Asset::as_str, || Asset::new("(other)"));
        if new {
            self.prices.push(Price::default());
            self.price_nanos.push(0);
        }
        id
    }

    /// Records a head; a higher block moves the chain on.
    ///
    /// Returns whether the chain could now be found blind earlier than
    /// before this head: its first head, a head while fewer intervals than
    /// the median takes are known, or a shorter median interval. Otherwise
    /// a later head only moves that time later, and the blind check, which
    /// works it out again whenever it runs, needs no telling.
    pub(crate) fn head(&mut self, c: ChainId, block: u64, t: Timestamp) -> bool {
        let c = usize::from(c);
        if self.heads.len() <= c {
            self.heads.resize(c + 1, HeadTrack::default());
        }
        let h = &mut self.heads[c];
        if h.last_t.0 != 0 && block <= h.last_block {
            return false;
        }
        let earlier = if h.last_t.0 != 0 {
            h.push_interval(t.0.saturating_sub(h.last_t.0))
        } else {
            true
        };
        h.last_block = block;
        h.last_t = t;
        earlier
    }

    /// An asset's id, if it has one (never creates it).
    pub(crate) fn asset_lookup(&self, a: &Asset) -> Option<AssetId> {
        self.assets
            .iter()
            .position(|x| x == a)
            .and_then(|i| AssetId::try_from(i).ok())
    }

    /// The wallet of an address on a chain, if it is the exchange's.
    pub(crate) fn wallet_of(&mut self, chain: &Chain, a: &Address) -> Option<WalletIdx> {
        let c = self.chain_id(chain);
        self.addrs.get(a).and_then(|id| self.wallet(c, id))
    }

    pub(crate) fn set_price(&mut self, a: &Asset, p: Price) {
        let id = self.asset_id(a);
        self.prices[usize::from(id)] = p;
        self.price_nanos[usize::from(id)] = p.nano_dollars();
    }

    pub(crate) fn price(&self, a: AssetId) -> Price {
        self.prices.get(usize::from(a)).copied().unwrap_or_default()
    }

    pub(crate) fn wallet(&self, chain: ChainId, addr: AddrId) -> Option<WalletIdx> {
        self.wallet_idx.get(&(chain, addr)).copied()
    }

    /// A wallet's address, spelled out.
    pub(crate) fn wallet_address(&self, w: &Wallet) -> Address {
        self.addrs
            .address(w.addr)
            .unwrap_or_else(|| Address::new(""))
    }

    pub(crate) fn is_hot(&self, w: WalletIdx) -> bool {
        self.wallets
            .get(w as usize)
            .is_some_and(|w| w.role == WalletRole::Hot)
    }

    /// Whether the wallet's outflows are judged: hot wallets and
    /// tripwires.
    pub(crate) fn is_watched(&self, w: WalletIdx) -> bool {
        self.wallets
            .get(w as usize)
            .is_some_and(|w| w.role.is_watched())
    }

    /// Whether `asset` is one the exchange knows a balance of, in wallet
    /// `w` or in the hot wallets of its chain: the native coin and the
    /// configured tokens, never a contract a stranger deployed to emit a
    /// `Transfer` or `Approval` naming the wallet.
    pub(crate) fn holds_known(&self, w: WalletIdx, asset: AssetId) -> bool {
        self.balances.contains_key(&(w, asset))
            || self
                .wallets
                .get(w as usize)
                .is_some_and(|x| self.chain_balances.contains_key(&(x.chain, asset)))
    }

    pub(crate) fn is_tripwire(&self, w: WalletIdx) -> bool {
        self.wallets
            .get(w as usize)
            .is_some_and(|w| w.role == WalletRole::Tripwire)
    }

    pub(crate) fn declare_wallet(
        &mut self,
        chain: &Chain,
        address: &Address,
        role: WalletRole,
    ) -> WalletIdx {
        let c = self.chain_id(chain);
        let (a, _) = self.addrs.intern(address);
        self.grow_first_paid();
        if let Some(w) = self.wallet(c, a) {
            // A role change moves the wallet's balances in or out of the
            // chain's hot total.
            let old = self.wallets[w as usize].role;
            if old != role {
                let assets = self.wallets[w as usize].assets.clone();
                for asset in assets {
                    if let Some((amount, _)) = self.balances.get(&(w, asset)).copied() {
                        let total = self.chain_balances.entry((c, asset)).or_default();
                        *total = if role == WalletRole::Hot {
                            total.saturating_add(amount)
                        } else {
                            total.saturating_sub(amount)
                        };
                    }
                }
                self.wallets[w as usize].role = role;
            }
            return w;
        }
        let w = WalletIdx::try_from(self.wallets.len()).unwrap_or(WalletIdx::MAX);
        self.wallets.push(Wallet {
            chain: c,
            addr: a,
            role,
            assets: SmallVec::new(),
        });
        self.wallet_idx.insert((c, a), w);
        w
    }

    fn grow_first_paid(&mut self) {
        if self.first_paid.len() < self.addrs.len() {
            self.first_paid.resize(self.addrs.len(), 0);
        }
    }

    /// Interns an address that is paid or named, keeping `first_paid` in
    /// step with the table.
    pub(crate) fn intern(&mut self, a: &Address) -> AddrId {
        let (id, new) = self.addrs.intern(a);
        if new {
            self.grow_first_paid();
        }
        id
    }

    fn put_balance(&mut self, w: WalletIdx, asset: AssetId, amount: Amount, decimals: u8) {
        let old = self.balances.insert((w, asset), (amount, decimals));
        if old.is_none()
            && let Some(wallet) = self.wallets.get_mut(w as usize)
        {
            wallet.assets.push(asset);
        }
        self.move_chain_total(w, asset, old.map(|(prev, _)| prev), amount);
    }

    /// Keeps a chain's hot-wallet total of an asset in step with one hot
    /// wallet's balance going from `old` (none: unknown until now) to
    /// `new`.
    fn move_chain_total(&mut self, w: WalletIdx, asset: AssetId, old: Option<Amount>, new: Amount) {
        let Some(wallet) = self.wallets.get(w as usize) else {
            return;
        };
        if wallet.role != WalletRole::Hot {
            return;
        }
        let total = self
            .chain_balances
            .entry((wallet.chain, asset))
            .or_default();
        if let Some(prev) = old {
            *total = total.saturating_sub(prev);
        }
        *total = total.saturating_add(new);
    }

    pub(crate) fn set_balance(&mut self, b: &BalanceObs) {
        let c = self.chain_id(&b.chain);
        let asset = self.asset_id(&b.asset);
        let a = self.intern(&b.wallet);
        if let Some(w) = self.wallet(c, a) {
            self.put_balance(w, asset, b.amount, b.decimals);
        }
    }

    pub(crate) fn balance(&self, w: WalletIdx, asset: AssetId) -> Option<Amount> {
        self.balances.get(&(w, asset)).map(|(a, _)| *a)
    }

    /// Moves the tracked balances of the exchange's wallets by a transfer
    /// (`undo` reverses it). Unknown balances stay unknown.
    pub(crate) fn apply_balance(&mut self, s: &TransferState, undo: bool) {
        for (w, outgoing) in [(s.from, true), (s.to_wallet, false)] {
            let Some(w) = w else { continue };
            // In place: one lookup per wallet, on every transfer in a block.
            let Some((bal, _)) = self.balances.get_mut(&(w, s.asset)) else {
                continue;
            };
            let old = *bal;
            let new = if outgoing != undo {
                old.saturating_sub(s.amount)
            } else {
                old.saturating_add(s.amount)
            };
            *bal = new;
            self.move_chain_total(w, s.asset, Some(old), new);
        }
    }

    /// The exact balance of an asset over the hot wallets of a scope.
    pub(crate) fn scope_balance(&self, key: &WindowKey) -> Option<Amount> {
        match *key {
            WindowKey::Wallet(w, Some(a)) => self.balance(w, a),
            WindowKey::Asset(c, a) | WindowKey::Chain(c, Some(a)) => {
                self.chain_balances.get(&(c, a)).copied()
            }
            _ => None,
        }
    }

    /// The asset of a per-asset window and its decimals, as the scope's
    /// wallets declared them.
    pub(crate) fn scope_asset_decimals(&self, key: &WindowKey) -> Option<(AssetId, u8)> {
        match *key {
            WindowKey::Wallet(w, Some(a)) => Some((a, self.balances.get(&(w, a))?.1)),
            WindowKey::Asset(c, a) | WindowKey::Chain(c, Some(a)) => {
                let decimals = self
                    .balances
                    .iter()
                    .find(|((w, wa), _)| {
                        *wa == a
                            && self
                                .wallets
                                .get(*w as usize)
                                .is_some_and(|wl| wl.chain == c)
                    })
                    .map(|(_, (_, d))| *d)?;
                Some((a, decimals))
            }
            _ => None,
        }
    }

    /// The USD value of the hot wallets' balances in a scope.
    pub(crate) fn scope_balance_usd(&self, key: &WindowKey) -> Option<Usd> {
        let usd = |(asset, amount): (AssetId, Amount), decimals: u8| {
            Usd::of(amount, decimals, self.price(asset))
        };
        let decimals_of = |c: ChainId, a: AssetId| {
            self.wallets
                .iter()
                .enumerate()
                .find(|(_, w)| w.chain == c)
                .and_then(|(i, _)| self.balances.get(&(i as WalletIdx, a)))
                .map_or(18, |(_, d)| *d)
        };
        let mut total = None::<Usd>;
        let mut add = |v: Usd| total = Some(total.unwrap_or_default().saturating_add(v));
        match *key {
            WindowKey::Wallet(w, _) => {
                for &a in &self.wallets.get(w as usize)?.assets {
                    if let Some((amount, d)) = self.balances.get(&(w, a)) {
                        add(usd((a, *amount), *d));
                    }
                }
            }
            WindowKey::Asset(c, a) => add(usd(
                (a, *self.chain_balances.get(&(c, a))?),
                decimals_of(c, a),
            )),
            WindowKey::Chain(kc, _) => {
                for (&(c, a), amount) in &self.chain_balances {
                    if c == kc {
                        add(usd((a, *amount), decimals_of(c, a)));
                    }
                }
            }
            WindowKey::Global => {
                for (&(c, a), amount) in &self.chain_balances {
                    add(usd((a, *amount), decimals_of(c, a)));
                }
            }
        }
        total
    }

    /// Looks a transfer record up, creating its state on first sight; the
    /// index of its state, or `None` for a retraction of something never
    /// seen. A record of a tracked transfer is compared with the stored
    /// key in place: its key is built only for a new transfer.
    pub(crate) fn track(&mut self, t: Timestamp, tr: &Transfer) -> Option<u32> {
        let chain = self.chain_id(&tr.chain);
        let h = mix_transfer_hash(chain, tr.tx_hash.key_hash(), tr.index);
        if let Some((_, i)) = self.transfers.find(h, |((c, k, index), _)| {
            *c == chain && *index == tr.index && k.is(&tr.tx_hash)
        }) {
            return Some(*i);
        }
        if tr.stage == Stage::Retracted || self.is_retired(h) {
            // A retraction of something never seen, or a late record of a
            // transfer already counted and retired: nothing to do.
            return None;
        }
        let asset = self.asset_id(&tr.asset);
        let from = self.addrs.get(&tr.from).and_then(|a| self.wallet(chain, a));
        // A hot wallet's destination is interned anyway (every destination
        // of an outflow is remembered): one lookup, not two.
        let to_known = if from.is_some_and(|w| self.is_watched(w)) {
            Some(self.intern(&tr.to))
        } else {
            self.addrs.get(&tr.to)
        };
        let to_wallet = to_known.and_then(|a| self.wallet(chain, a));
        let direction = match (from, to_wallet) {
            // Nothing leaves a tripwire on the exchange's behalf, not even
            // to its own wallets.
            (Some(w), _) if self.is_tripwire(w) => Direction::Outflow,
            (Some(_), Some(_)) => Direction::Internal,
            (Some(w), None) if self.is_hot(w) => Direction::Outflow,
            (None, Some(_)) => Direction::Inflow,
            _ => Direction::Unrelated,
        };
        let to = match (direction, to_known) {
            (_, Some(id)) => id,
            (Direction::Outflow, None) => self.intern(&tr.to),
            _ => AddrId(u32::MAX),
        };
        let state = TransferState {
            first_seen: t,
            chain,
            intent_t: Timestamp::default(),
            asset,
            from,
            to_wallet,
            to,
            direction,
            amount: tr.amount,
            decimals: tr.decimals,
            usd_micros: u64::try_from(
                Usd::of_nano(
                    tr.amount,
                    tr.decimals,
                    self.price_nanos
                        .get(usize::from(asset))
                        .copied()
                        .unwrap_or(0),
                )
                .0,
            )
            .unwrap_or(u64::MAX),
            counted: false,
            applied: false,
            judged: false,
            matched: false,
            intent_by_hash: false,
            share_bps: 0,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = state;
                self.hashes[i as usize] = h;
                // Refs of the slot's last transfer would point into windows
                // that are not this one's.
                self.refs[i as usize] = Refs::new();
                i
            }
            None => {
                self.slab.push(state);
                self.refs.push(Refs::new());
                self.hashes.push(h);
                u32::try_from(self.slab.len() - 1).unwrap_or(u32::MAX)
            }
        };
        // Records nearly always come in time order: then this appends,
        // found from the newest entry alone.
        let slab = &self.slab;
        if self
            .by_age
            .back()
            .is_none_or(|&j| slab[j as usize].first_seen <= t)
        {
            self.by_age.push_back(i);
        } else {
            let at = self.by_age.len()
                - self
                    .by_age
                    .iter()
                    .rev()
                    .take_while(|&&j| slab[j as usize].first_seen > t)
                    .count();
            self.by_age.insert(at, i);
        }
        let key = (chain, TxKey::of(&tr.tx_hash), tr.index);
        self.transfers
            .insert_unique(h, (key, i), |(k, _)| transfer_hash(k));
        Some(i)
    }

    /// The evidence of a tracked transfer, by its slot: what a window
    /// finding lists for every transaction in the window. `None` for a
    /// slot no longer tracking a counted transfer.
    pub(crate) fn evidence_of(&self, i: u32) -> Option<Evidence> {
        let s = self.slab.get(i as usize).filter(|s| s.counted)?;
        let h = *self.hashes.get(i as usize)?;
        let ((chain, tx, index), _) = self.transfers.find(h, |(_, j)| *j == i)?;
        let from = self.wallets.get(s.from? as usize)?;
        Some(Evidence {
            chain: self.chains.get(usize::from(*chain))?.clone(),
            tx_hash: tx.tx_hash(),
            index: *index,
            stage: if s.applied { "included" } else { "pending" }.to_string(),
            from: self.addrs.address(from.addr)?,
            to: self.addrs.address(s.to)?,
            asset: self.assets.get(usize::from(s.asset))?.clone(),
            amount: s.amount.to_decimal_string(s.decimals),
            usd: s.usd().to_f64(),
        })
    }

    /// The dense ids of an intent's chain, wallet, destination and asset,
    /// interning them: worked out once per intent, for the verdict and
    /// the book.
    pub(crate) fn intent_key(&mut self, i: &Intent) -> IntentKey {
        (
            self.chain_id(&i.chain),
            self.intern(&i.wallet),
            self.intern(&i.to),
            self.asset_id(&i.asset),
        )
    }

    pub(crate) fn add_intent(&mut self, t: Timestamp, key: IntentKey, i: &Intent) {
        self.intents.add(t, key, i);
    }

    /// The intent key of an outflow's fields: its wallet's address.
    fn outflow_intent_key(&self, s: &TransferState) -> Option<IntentKey> {
        let w = self.wallets.get(s.from? as usize)?;
        Some((s.chain, w.addr, s.to, s.asset))
    }

    /// Consumes the intent an outflow matches, if any: the intent's time
    /// and whether it was found by hash.
    pub(crate) fn take_intent(
        &mut self,
        now: Timestamp,
        s: &TransferState,
        tx: &TxHash,
        m: &IntentMatching,
    ) -> Option<(Timestamp, bool)> {
        let key = self.outflow_intent_key(s)?;
        self.intents.take_match(now, key, tx, s.amount, m)
    }

    /// Re-opens the intent a retracted outflow had consumed (see
    /// [`IntentBook::reopen`]).
    pub(crate) fn reopen_intent(&mut self, s: &TransferState, tx: &TxHash) {
        if let Some(key) = self.outflow_intent_key(s) {
            let by_hash = s.intent_by_hash.then_some(tx);
            self.intents.reopen(key, s.intent_t, s.amount, by_hash);
        }
    }

    pub(crate) fn wallet_connected(&self, w: WalletIdx) -> bool {
        self.wallets
            .get(w as usize)
            .is_some_and(|w| self.intents.connected(w.chain, w.addr))
    }

    /// Forgets transfers first seen longer ago than `retention` (long
    /// final, or dropped from the mempool) and intents that expired.
    pub(crate) fn prune(&mut self, now: Timestamp, retention: Duration, m: &IntentMatching) {
        let cutoff = now.minus(retention);
        let hour = now.0.div_euclid(3_600_000_000_000);
        if self.retired_by_hour.back().is_none_or(|(h, _)| *h != hour) {
            self.retired_by_hour.push_back((hour, Vec::new()));
        }
        while self
            .retired_by_hour
            .front()
            .is_some_and(|(h, _)| *h < hour - RETIRED_HOURS)
        {
            if let Some((_, gone)) = self.retired_by_hour.pop_front() {
                for h in gone {
                    self.retired.remove(&h);
                }
            }
        }
        while let Some(&i) = self.by_age.front() {
            if self.slab[i as usize].first_seen >= cutoff {
                break;
            }
            self.by_age.pop_front();
            let h = self.hashes[i as usize];
            if let Ok(entry) = self.transfers.find_entry(h, |(_, j)| *j == i) {
                entry.remove();
            }
            // A freed slot holds no transfer: marked so, whatever scans the
            // slab (a reload rebuilding the windows) passes it over.
            let freed = &mut self.slab[i as usize];
            freed.counted = false;
            freed.judged = false;
            self.refs[i as usize] = Refs::new();
            self.free.push(i);
            if self.retired.insert(h)
                && let Some((_, list)) = self.retired_by_hour.back_mut()
            {
                list.push(h);
            }
        }
        self.intents.prune(now, m);
    }

    /// Whether a transfer's state was retired (counted long ago; its late
    /// records, such as a slow chain's `confirmed`, change nothing).
    fn is_retired(&self, fingerprint: u64) -> bool {
        self.retired.contains(&fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_past_the_id_space_share_a_stand_in_and_no_real_asset_id() {
        let mut state = State::new();
        let eth = state.asset_id(&Asset::new("ETH"));
        let spam: Vec<u16> = (0..70_000)
            .map(|i| state.asset_id(&Asset::new(&format!("0xspam{i:06}"))))
            .collect();
        // Every id up to the last is one name's own.
        let mut own: Vec<u16> = spam[..65_534].to_vec();
        own.push(eth);
        own.sort_unstable();
        own.dedup();
        assert_eq!(own.len(), 65_535);
        assert!(spam[65_534..].iter().all(|id| *id == OTHER_ID));
        assert_eq!(state.assets[usize::from(OTHER_ID)].as_str(), "(other)");
        assert_eq!(state.assets.len(), 65_536, "no growth past the id space");
        assert_eq!(state.prices.len(), state.assets.len());
        // Names seen before keep their ids.
        assert_eq!(state.asset_id(&Asset::new("ETH")), eth);
        assert_eq!(state.asset_id(&Asset::new("0xspam000007")), spam[7]);
        assert_ne!(eth, OTHER_ID);
    }

    proptest! {
        #[test]
        fn head_median_matches_sorting_the_last_intervals(
            // Steady chains repeat one interval: a few values, often equal.
            dts in proptest::collection::vec(
                prop_oneof![0i64..20_000_000_000, (1i64..4).prop_map(|k| k * 3_000_000_000)],
                1..100,
            )
        ) {
            let mut h = HeadTrack::default();
            for (n, &dt) in dts.iter().enumerate() {
                let (count, median) = (h.interval_count(), h.median_interval());
                let earlier = h.push_interval(dt);
                let from = (n + 1).saturating_sub(HEAD_INTERVALS);
                let mut last: Vec<i64> = dts[from..=n].to_vec();
                last.sort_unstable();
                prop_assert_eq!(h.median_interval(), last[last.len() / 2]);
                prop_assert_eq!(
                    earlier,
                    h.interval_count() != count || h.median_interval() < median
                );
            }
        }
    }

    #[test]
    fn names_are_found_by_the_address_of_the_held_string() {
        let held: Vec<String> = (0..40).map(|i| format!("chain-{i}")).collect();
        let mut by = ByAddress::default();
        for (i, h) in held.iter().enumerate() {
            by.put(h, i as u16);
        }
        // The first 32 fit; the rest are found by their text instead.
        for (i, h) in held.iter().enumerate() {
            assert_eq!(by.get(h), (i < BY_ADDRESS).then_some(i as u16), "{h}");
        }
        // The same text in another string is not the held string.
        let copy = String::from("chain-1");
        assert_eq!(by.get(copy.as_str()), None);
        let mut state = State::default();
        let (a, b) = (Chain::new("ethereum"), Chain::new("ethereum"));
        let tron = Chain::new("tron");
        assert_eq!(state.chain_id(&a), 0);
        assert_eq!(state.chain_id(&tron), 1);
        assert_eq!(state.chain_id(&b), 0, "another string of the same name");
        assert_eq!(state.chain_id(&a), 0);
    }

    #[test]
    fn a_transaction_key_is_its_own_hash_and_no_other() {
        let hex = "ab".repeat(32);
        let hashes: Vec<TxHash> = [
            format!("0x{hex}"),
            hex.clone(),
            format!("0x{}", "cd".repeat(32)),
            "0x00000000000000000000000000000000000000aa".to_string(),
            "not-a-hash".to_string(),
            format!("0x{}", "ab".repeat(31)),
        ]
        .iter()
        .map(|s| TxHash::new(s))
        .collect();
        for (i, a) in hashes.iter().enumerate() {
            let key = TxKey::of(a);
            for (j, b) in hashes.iter().enumerate() {
                assert_eq!(key.is(b), i == j, "{a} against {b}");
                assert_eq!(key.is(b), key == TxKey::of(b), "{a} against {b}");
            }
        }
        // `0x` hashes are case-insensitive: the same key in capitals.
        let upper = TxHash::new(&format!("0x{}", hex.to_uppercase()));
        assert!(TxKey::of(&hashes[0]).is(&upper));
    }

    #[test]
    fn tracked_transfers_stay_small() {
        assert!(std::mem::size_of::<TransferState>() <= 96);
        assert!(std::mem::size_of::<Refs>() <= 40);
    }

    #[test]
    fn window_refs_keep_48_bits_of_sequence() {
        for seq in [0u64, 1, u64::from(u32::MAX) + 7, (1 << 48) - 1] {
            let r = WindowRef::new(0x8003, seq);
            assert_eq!((r.slot, r.seq()), (0x8003, seq));
        }
    }
}
