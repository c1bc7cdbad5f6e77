//! Compact, exact interning of the strings the engine sees millions of.
//!
//! Addresses become dense `u32` ids so windows, intents and histories key
//! on integers. The table stores each distinct address once, in one byte
//! arena (a `0x` + 40-hex address as its 20 bytes), so a million
//! destinations cost tens of megabytes, not hundreds. Lookups are exact:
//! ids are compared by their bytes, never by a hash alone.

use drainguard_model::Address;
use hashbrown::HashTable;

/// A dense id of an interned address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct AddrId(pub(crate) u32);

/// Interned addresses.
#[derive(Debug, Default)]
pub(crate) struct AddrTable {
    arena: Vec<u8>,
    /// End offset in `arena` of each id; its start is the previous end.
    ends: Vec<u32>,
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    scratch: Vec<u8>,
}

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

/// The compact encoding of an address: tag 1 and the 20 bytes of a
/// lowercase `0x` + 40-hex address, or tag 0 and the string's bytes.
fn encode(s: &str, out: &mut Vec<u8>) {
    out.clear();
    let b = s.as_bytes();
    if b.len() == 42 && b[0] == b'0' && b[1] == b'x' {
        out.push(1);
        let mut bad = 0u8;
        for pair in b[2..].chunks_exact(2) {
            let (h, l) = (HEX[usize::from(pair[0])], HEX[usize::from(pair[1])]);
            bad |= h | l;
            out.push(h << 4 | (l & 0x0f));
        }
        if bad & 0xf0 == 0 {
            return;
        }
    }
    out.clear();
    out.push(0);
    out.extend_from_slice(b);
}

impl AddrTable {
    fn bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.arena[start..self.ends[i] as usize]
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(bytes)
    }

    /// The id of an address, if it has been interned.
    pub(crate) fn get(&mut self, a: &Address) -> Option<AddrId> {
        let mut scratch = std::mem::take(&mut self.scratch);
        encode(a.as_str(), &mut scratch);
        let h = self.hash(&scratch);
        let found = self
            .table
            .find(h, |&id| self.bytes(id) == scratch.as_slice())
            .copied();
        self.scratch = scratch;
        found.map(AddrId)
    }

    /// The id of an address, interning it if new. The second value says
    /// whether it was new.
    pub(crate) fn intern(&mut self, a: &Address) -> (AddrId, bool) {
        let mut scratch = std::mem::take(&mut self.scratch);
        encode(a.as_str(), &mut scratch);
        let h = self.hash(&scratch);
        if let Some(&id) = self
            .table
            .find(h, |&id| self.bytes(id) == scratch.as_slice())
        {
            self.scratch = scratch;
            return (AddrId(id), false);
        }
        let id = u32::try_from(self.ends.len()).unwrap_or(u32::MAX);
        self.arena.extend_from_slice(&scratch);
        self.ends
            .push(u32::try_from(self.arena.len()).unwrap_or(u32::MAX));
        let (arena, ends, hasher) = (&self.arena, &self.ends, &self.hasher);
        self.table.insert_unique(h, id, |&other| {
            use std::hash::BuildHasher;
            let i = other as usize;
            let start = if i == 0 { 0 } else { ends[i - 1] as usize };
            hasher.hash_one(&arena[start..ends[i] as usize])
        });
        self.scratch = scratch;
        (AddrId(id), true)
    }

    /// How many distinct addresses are interned.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }
}
