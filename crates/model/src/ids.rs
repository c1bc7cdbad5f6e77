//! Chains, addresses, assets and transaction hashes.
//!
//! All are opaque strings behind an `Arc<str>`, so an event can be cloned
//! into many windows cheaply. `0x`-hex addresses and hashes are lowercased
//! on construction so they compare case-insensitively; no checksum is
//! verified (scenario files may hold synthetic ones). Addresses and hashes
//! also carry their bytes when they are lowercase hex of the usual length
//! ([`Raw`]), decoded once where they are made (a scenario reader, a
//! watcher) instead of by every consumer of every record.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

/// The bytes of an address or transaction hash spelled as lowercase hex
/// of the usual length, as decoded on construction; anything else is
/// [`Raw::Text`]. It follows from the string, so it takes no part in
/// comparing or hashing an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw {
    /// Not one of the shapes below.
    Text,
    /// `0x` and 40 lowercase hex digits (an EVM address).
    Hex20([u8; 20]),
    /// 64 lowercase hex digits, `0x`-prefixed (EVM) or bare (Bitcoin,
    /// TRON): a transaction hash.
    Hex32 {
        /// Whether the string starts with `0x`.
        prefixed: bool,
        /// The 32 bytes.
        bytes: [u8; 32],
    },
}

/// Decodes lowercase hex, eight characters a step (SWAR): the engine
/// decodes an address or a transaction hash for nearly every record.
/// `src` is twice as long as `out` and a multiple of eight; false for
/// anything but `0-9a-f`, and `out` is then unspecified.
fn decode_hex(src: &[u8], out: &mut [u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if src.len() != out.len() * 2 || !src.len().is_multiple_of(8) {
        return false;
    }
    let mut ok = true;
    for (chunk, o) in src.chunks_exact(8).zip(out.chunks_exact_mut(4)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let v = u64::from_le_bytes(b);
        let x = v | HIGH;
        // High bit of each byte set where that byte is at least `c`
        // (no borrow crosses bytes: each byte of `x` is at least 0x80).
        let at_least = |c: u8| x.wrapping_sub(ONES * u64::from(c)) & HIGH;
        let digit = at_least(b'0') & !at_least(b'9' + 1);
        let letter = at_least(b'a') & !at_least(b'f' + 1);
        ok &= v & HIGH == 0 && digit | letter == HIGH;
        let nibbles = (v & (ONES * 0x0f)) + (letter >> 7) * 9;
        // Pairs of nibbles into bytes, then the four bytes together.
        let lanes = 0x00ff_00ff_00ff_00ff;
        let p = ((nibbles & lanes) << 4) | ((nibbles >> 8) & lanes);
        let p = (p | (p >> 8)) & 0x0000_ffff_0000_ffff;
        let p = (p | (p >> 16)) & 0xffff_ffff;
        o.copy_from_slice(&(p as u32).to_le_bytes());
    }
    ok
}

impl Raw {
    /// The raw form of a normalized id string.
    pub fn of(s: &str) -> Raw {
        let b = s.as_bytes();
        let (prefixed, hex) = match b.strip_prefix(b"0x") {
            Some(rest) => (true, rest),
            None => (false, b),
        };
        match hex.len() {
            40 if prefixed => {
                let mut out = [0u8; 20];
                if decode_hex(hex, &mut out) {
                    return Raw::Hex20(out);
                }
            }
            64 => {
                let mut bytes = [0u8; 32];
                if decode_hex(hex, &mut bytes) {
                    return Raw::Hex32 { prefixed, bytes };
                }
            }
            _ => {}
        }
        Raw::Text
    }
}

/// The keyed 64-bit hash of an id's compact form: a tag byte and the
/// id's bytes (see [`Address::key_hash`], [`TxHash::key_hash`]). Keyed
/// with a random seed chosen once per process, so hash tables keyed on
/// ids cannot be flooded with chosen collisions; the same in every table
/// of the process, so an id's hash is computed once, where it is made,
/// and every table it is looked up in reuses it.
pub fn key_hash(tag: u8, bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static KEY: std::sync::OnceLock<foldhash::fast::FixedState> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| {
        let seed =
            std::collections::hash_map::RandomState::new().hash_one(0x6472_6169_6e67_7561u64);
        foldhash::fast::FixedState::with_seed(seed)
    });
    let mut h = key.build_hasher();
    h.write_u8(tag);
    // Whole words where the bytes allow: several times cheaper than
    // hashing them one by one, for the 20- and 32-byte forms that are
    // nearly every id.
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        h.write_u64(u64::from_le_bytes(a));
    }
    let rest = words.remainder();
    let mut a = [0u8; 8];
    a[..rest.len()].copy_from_slice(rest);
    h.write_u64(u64::from_le_bytes(a) ^ (rest.len() as u64) << 59);
    h.finish()
}

/// The longest address kept whole in its compact form: longer strings
/// keep this prefix (no real address comes near it).
pub const ADDRESS_TEXT_MAX: usize = 254;

/// Wraps [`Raw`] and the id's [`key_hash`] so an id's derived comparisons
/// and hash see only its string.
#[derive(Clone, Copy)]
struct Ignored(Raw, u64);

impl PartialEq for Ignored {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Ignored {}
impl PartialOrd for Ignored {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ignored {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $normalize:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Builds the identifier, normalizing its spelling.
            pub fn new(s: &str) -> Self {
                let f: fn(&str) -> Arc<str> = $normalize;
                $name(f(s))
            }

            /// The normalized string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok($name::new(&s))
            }
        }
    };
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $normalize:expr) => {
        $(#[$doc])*
        ///
        /// Its string and raw bytes share one reference-counted block, so
        /// it stays one pointer wide and events do not grow.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<HexRepr>);

        impl $name {
            /// Builds the identifier, normalizing its spelling.
            pub fn new(s: &str) -> Self {
                let f: fn(&str) -> Text = $normalize;
                let s = f(s);
                let bytes = Raw::of(s.as_str());
                let raw = Ignored(bytes, Self::compact_hash(bytes, s.as_str()));
                $name(Arc::new(HexRepr { s, raw }))
            }

            /// The normalized string.
            pub fn as_str(&self) -> &str {
                self.0.s.as_str()
            }

            /// Its bytes, when it is lowercase hex of the usual length.
            pub fn raw(&self) -> Raw {
                self.0.raw.0
            }

            /// The [`key_hash`] of its compact form, computed when it was
            /// made.
            pub fn key_hash(&self) -> u64 {
                self.0.raw.1
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.as_str()).finish()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok($name::new(&s))
            }
        }
    };
}

/// The shared block of an address or hash: compared and ordered by its
/// string alone, and hashed by the [`key_hash`] of its string, made once:
/// a map or set of addresses (a denylist, an allowlist) hashes one word
/// per lookup instead of the string.
///
/// The bytes and hash come first, in the block's first cache line with the
/// reference counts: the engine reads them for every record and the string
/// only for a finding.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
#[repr(C)]
struct HexRepr {
    raw: Ignored,
    s: Text,
}

impl std::hash::Hash for HexRepr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.raw.1);
    }
}

/// The longest id kept inline: `0x` and 64 hex digits.
const INLINE: usize = 66;

/// An id's string: inline up to [`INLINE`] bytes, so nearly every id is
/// one allocation (its shared block), as it was when it held only the
/// string; longer ones on the heap.
enum Text {
    Inline(arrayvec::ArrayString<INLINE>),
    Heap(Box<str>),
}

impl Text {
    fn new(s: &str) -> Text {
        match arrayvec::ArrayString::from(s) {
            Ok(a) => Text::Inline(a),
            Err(_) => Text::Heap(Box::from(s)),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Text::Inline(a) => a.as_str(),
            Text::Heap(b) => b,
        }
    }
}

// Compared and ordered as the string, whichever way it is held.
impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for Text {}
impl PartialOrd for Text {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Text {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

fn hex_case_insensitive(s: &str) -> Text {
    let is_hex = s.len() > 2
        && (s.starts_with("0x") || s.starts_with("0X"))
        && s[2..].bytes().all(|b| b.is_ascii_hexdigit());
    if is_hex && s.bytes().any(|b| b.is_ascii_uppercase()) {
        Text::new(&s.to_ascii_lowercase())
    } else {
        Text::new(s)
    }
}

fn verbatim(s: &str) -> Arc<str> {
    Arc::from(s)
}

string_id!(
    /// A chain's configured name (`ethereum`, `tron`, `bitcoin`, ...).
    Chain,
    verbatim
);
hex_id!(
    /// An address on some chain; `0x`-hex addresses are lowercased.
    Address,
    hex_case_insensitive
);
string_id!(
    /// An asset symbol (`ETH`, `USDT`, `BTC`).
    Asset,
    verbatim
);
hex_id!(
    /// A transaction hash; `0x`-hex hashes are lowercased.
    TxHash,
    hex_case_insensitive
);

impl Address {
    /// The hash of an address's compact form: tag 1 and the 20 bytes of a
    /// lowercase `0x` + 40-hex address; tag 0 and the string (its first
    /// [`ADDRESS_TEXT_MAX`] bytes) for any other.
    fn compact_hash(raw: Raw, s: &str) -> u64 {
        match raw {
            Raw::Hex20(b) => key_hash(1, &b),
            _ => key_hash(0, &s.as_bytes()[..s.len().min(ADDRESS_TEXT_MAX)]),
        }
    }
}

impl TxHash {
    /// The hash of a transaction hash's compact form: tag 0 (`0x`-prefixed)
    /// or 1 (bare) and the 32 bytes of a 64-hex hash; tag 2 and the string
    /// for any other.
    fn compact_hash(raw: Raw, s: &str) -> u64 {
        match raw {
            Raw::Hex32 {
                prefixed: true,
                bytes,
            } => key_hash(0, &bytes),
            Raw::Hex32 {
                prefixed: false,
                bytes,
            } => key_hash(1, &bytes),
            _ => key_hash(2, s.as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Lowercase hex digit values; 0xff marks anything else.
    const HEX: [u8; 256] = {
        let mut t = [0xffu8; 256];
        let mut i = 0;
        while i < 10 {
            t[b'0' as usize + i] = i as u8;
            i += 1;
        }
        let mut i = 0;
        while i < 6 {
            t[b'a' as usize + i] = 10 + i as u8;
            i += 1;
        }
        t
    };

    /// Decoding one digit at a time through the table: the reference.
    fn by_table(src: &[u8]) -> Option<Vec<u8>> {
        src.chunks_exact(2)
            .map(|p| {
                let (h, l) = (HEX[usize::from(p[0])], HEX[usize::from(p[1])]);
                (h | l < 16).then_some(h << 4 | l)
            })
            .collect()
    }

    proptest! {
        #[test]
        fn swar_hex_matches_the_table(
            src in prop_oneof![
                "[0-9a-f]{64}",
                "[0-9a-f]{40}",
                "[0-9a-fA-F]{40}",
                "[0-9a-f/:@`gG\\x00-\\x7f]{8}",
                proptest::collection::vec(any::<u8>(), 16).prop_map(|v| String::from_utf8_lossy(&v).chars().take(16).collect::<String>()),
            ]
        ) {
            let src = src.as_bytes();
            if src.len() % 8 != 0 {
                return Ok(());
            }
            let mut out = vec![0u8; src.len() / 2];
            let ok = decode_hex(src, &mut out);
            match by_table(src) {
                Some(want) => prop_assert!(ok && out == want),
                None => prop_assert!(!ok),
            }
        }
    }

    #[test]
    fn swar_hex_rejects_each_neighbour_of_the_ranges() {
        for bad in [b'/', b':', b'`', b'g', b'A', b'F', 0x80, 0xff] {
            let mut src = *b"0123456789abcdef";
            src[5] = bad;
            let mut out = [0u8; 8];
            assert!(!decode_hex(&src, &mut out), "{bad:#x}");
        }
        let mut out = [0u8; 8];
        assert!(decode_hex(b"0123456789abcdef", &mut out));
        assert_eq!(out, [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    }

    #[test]
    fn hex_addresses_compare_case_insensitively() {
        assert_eq!(Address::new("0xAbCd"), Address::new("0xabcd"));
        assert_eq!(TxHash::new("0xFF").as_str(), "0xff");
        // Base58 and bech32 strings are not hex: kept as they are.
        assert_ne!(Address::new("TXyZ"), Address::new("txyz"));
        assert_eq!(Address::new("0xnothex").as_str(), "0xnothex");
    }

    #[test]
    fn raw_bytes_follow_the_normalized_string() {
        let a = format!("0x{}", "Ab".repeat(20));
        assert_eq!(Address::new(&a).raw(), Raw::Hex20([0xab; 20]));
        let h = "cd".repeat(32);
        assert_eq!(
            TxHash::new(&h).raw(),
            Raw::Hex32 {
                prefixed: false,
                bytes: [0xcd; 32]
            }
        );
        assert_eq!(
            TxHash::new(&format!("0x{h}")).raw(),
            Raw::Hex32 {
                prefixed: true,
                bytes: [0xcd; 32]
            }
        );
        // Bare hex keeps its case, so upper case is not decoded.
        assert_eq!(TxHash::new(&h.to_uppercase()).raw(), Raw::Text);
        assert_eq!(Address::new("TXyZ").raw(), Raw::Text);
        assert_eq!(Address::new(&"ab".repeat(20)).raw(), Raw::Text);
        assert_eq!(Address::new("0xab").raw(), Raw::Text);
        // Longer than the inline limit: kept whole, compared as strings.
        let long = "x".repeat(100);
        assert_eq!(Address::new(&long).as_str(), long);
        assert_eq!(Address::new(&long), Address::new(&long));
        assert!(Address::new(&long) > Address::new("a"));
    }

    proptest! {
        #[test]
        fn raw_is_what_the_string_spells(s in "(0x|0X)?[0-9a-fA-Fg]{0,66}") {
            let n = Address::new(&s);
            let n = n.as_str();
            let lower_hex = |h: &str| h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            let want = match n.strip_prefix("0x") {
                Some(h) if h.len() == 40 && lower_hex(h) => {
                    Raw::Hex20(hex::decode(h).unwrap().try_into().unwrap())
                }
                Some(h) if h.len() == 64 && lower_hex(h) => Raw::Hex32 {
                    prefixed: true,
                    bytes: hex::decode(h).unwrap().try_into().unwrap(),
                },
                None if n.len() == 64 && lower_hex(n) => Raw::Hex32 {
                    prefixed: false,
                    bytes: hex::decode(n).unwrap().try_into().unwrap(),
                },
                _ => Raw::Text,
            };
            prop_assert_eq!(Address::new(&s).raw(), want);
            prop_assert_eq!(TxHash::new(&s).raw(), want);
        }
    }
}
