//! Compact, exact interning of the strings the engine sees millions of.
//!
//! Addresses become dense `u32` ids so windows, intents and histories key
//! on integers. The table stores each distinct address once, in one byte
//! arena (a `0x` + 40-hex address as its 20 bytes), so a million
//! destinations cost tens of megabytes, not hundreds. Lookups are exact:
//! ids are compared by their bytes, never by a hash alone.

use drainguard_model::{ADDRESS_TEXT_MAX, Address, Raw, key_hash};
use hashbrown::HashTable;

/// A dense id of an interned address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AddrId(pub(crate) u32);

/// Bytes per arena chunk. Chunks never move once allocated, so the table
/// grows without the transient double copy of one big vector.
const CHUNK: usize = 1 << 20;

/// Interned addresses.
#[derive(Debug, Default)]
pub(crate) struct AddrTable {
    chunks: Vec<Vec<u8>>,
    /// Where each id's bytes start: chunk index × CHUNK + offset.
    starts: Vec<u32>,
    lens: Vec<u8>,
    table: HashTable<u32>,
}

fn slice<'a>(chunks: &'a [Vec<u8>], starts: &[u32], lens: &[u8], id: u32) -> &'a [u8] {
    let (start, len) = (starts[id as usize] as usize, usize::from(lens[id as usize]));
    let (c, off) = (start / CHUNK, start % CHUNK);
    &chunks[c][off..off + len]
}

/// An address's compact form, as a tag and the bytes after it: tag 1 and
/// the 20 bytes of a lowercase `0x` + 40-hex address (decoded when the
/// address was made), or tag 0 and the string, for any other (longer than
/// any real address: a prefix, consistently, so the length fits the
/// table's one-byte field). Borrowed from the address: a lookup copies
/// nothing.
fn compact<'a>(a: &'a Address, evm: &'a mut [u8; 20]) -> (u8, &'a [u8]) {
    if let Raw::Hex20(bytes) = a.raw() {
        *evm = bytes;
        (1, &evm[..])
    } else {
        let s = a.as_str().as_bytes();
        (0, &s[..s.len().min(ADDRESS_TEXT_MAX)])
    }
}

/// Hashes an encoded address as the address hashed itself when it was
/// made ([`Address::key_hash`]): needed only to rehash a growing table.
fn hash_encoded(bytes: &[u8]) -> u64 {
    match bytes.split_first() {
        Some((&tag, rest)) => key_hash(tag, rest),
        None => key_hash(0, &[]),
    }
}

impl AddrTable {
    /// An empty table with room for `n` addresses.
    pub(crate) fn with_capacity(n: usize) -> AddrTable {
        AddrTable {
            starts: Vec::with_capacity(n),
            lens: Vec::with_capacity(n),
            table: HashTable::with_capacity(n),
            ..AddrTable::default()
        }
    }

    fn bytes(&self, id: u32) -> &[u8] {
        slice(&self.chunks, &self.starts, &self.lens, id)
    }

    /// Looks a compact form up by the hash its address carries.
    fn find(&self, h: u64, tag: u8, body: &[u8]) -> Option<u32> {
        self.table
            .find(h, |&id| {
                self.bytes(id)
                    .split_first()
                    .is_some_and(|(&t, rest)| t == tag && rest == body)
            })
            .copied()
    }

    /// The id of an address, if it has been interned.
    pub(crate) fn get(&self, a: &Address) -> Option<AddrId> {
        let mut evm = [0u8; 20];
        let (tag, body) = compact(a, &mut evm);
        self.find(a.key_hash(), tag, body).map(AddrId)
    }

    /// The id of an address, interning it if new. The second value says
    /// whether it was new.
    pub(crate) fn intern(&mut self, a: &Address) -> (AddrId, bool) {
        let mut evm = [0u8; 20];
        let (tag, body) = compact(a, &mut evm);
        let h = a.key_hash();
        if let Some(id) = self.find(h, tag, body) {
            return (AddrId(id), false);
        }
        let id = u32::try_from(self.starts.len()).unwrap_or(u32::MAX);
        let stored = 1 + body.len();
        if self.chunks.last().is_none_or(|c| c.len() + stored > CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let c = self.chunks.len() - 1;
        let chunk = &mut self.chunks[c];
        let start = c * CHUNK + chunk.len();
        chunk.push(tag);
        chunk.extend_from_slice(body);
        self.starts.push(u32::try_from(start).unwrap_or(u32::MAX));
        self.lens.push(u8::try_from(stored).unwrap_or(u8::MAX));
        let (chunks, starts, lens) = (&self.chunks, &self.starts, &self.lens);
        self.table.insert_unique(h, id, |&other| {
            hash_encoded(slice(chunks, starts, lens, other))
        });
        (AddrId(id), true)
    }

    /// The address an id stands for, spelled as the engine received it
    /// (`0x`-hex lowercased): wallets keep only their id, and findings
    /// spell the address out when they need it.
    pub(crate) fn address(&self, id: AddrId) -> Option<Address> {
        if id.0 as usize >= self.starts.len() {
            return None;
        }
        let bytes = self.bytes(id.0);
        match bytes.split_first() {
            Some((1, evm)) => {
                const DIGITS: &[u8; 16] = b"0123456789abcdef";
                let mut s = String::with_capacity(2 + 2 * evm.len());
                s.push_str("0x");
                for b in evm {
                    s.push(char::from(DIGITS[usize::from(b >> 4)]));
                    s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
                }
                Some(Address::new(&s))
            }
            Some((_, text)) => Some(Address::new(&String::from_utf8_lossy(text))),
            None => None,
        }
    }

    /// How many distinct addresses are interned.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interned_addresses_are_spelled_back_exactly() {
        let mut t = AddrTable::default();
        for a in [
            "0x7D535A6A6C18988D64A878AF797E84C93539E776",
            "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
            "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf",
            "0xnothex",
        ] {
            let address = Address::new(a);
            let (id, new) = t.intern(&address);
            assert!(new);
            assert_eq!(t.address(id), Some(address.clone()));
            assert_eq!(t.get(&address), Some(id));
        }
        assert_eq!(t.address(AddrId(99)), None);
    }

    /// A growing table rehashes its entries from their stored bytes: that
    /// must give the hash each address carries, or entries get lost.
    #[test]
    fn stored_bytes_hash_as_their_address_does() {
        let long = format!("x{}", "y".repeat(300));
        for a in [
            "0x7d535a6a6c18988d64a878af797e84c93539e776",
            "bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh",
            "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf",
            "",
            long.as_str(),
        ] {
            let address = Address::new(a);
            let mut t = AddrTable::default();
            let (id, _) = t.intern(&address);
            assert_eq!(hash_encoded(t.bytes(id.0)), address.key_hash(), "{a}");
        }
        // Enough addresses to grow the table many times: all still found.
        let mut t = AddrTable::default();
        let all: Vec<Address> = (0..5000)
            .map(|i| Address::new(&format!("0x{i:040x}")))
            .chain((0..500).map(|i| Address::new(&format!("T{i}"))))
            .collect();
        let ids: Vec<AddrId> = all.iter().map(|a| t.intern(a).0).collect();
        for (a, id) in all.iter().zip(ids) {
            assert_eq!(t.get(a), Some(id));
        }
    }
}
