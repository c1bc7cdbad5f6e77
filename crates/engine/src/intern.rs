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
    hasher: foldhash::fast::RandomState,
    scratch: Vec<u8>,
}

fn slice<'a>(chunks: &'a [Vec<u8>], starts: &[u32], lens: &[u8], id: u32) -> &'a [u8] {
    let (start, len) = (starts[id as usize] as usize, usize::from(lens[id as usize]));
    let (c, off) = (start / CHUNK, start % CHUNK);
    &chunks[c][off..off + len]
}

/// Lowercase hex digit values; 0xff marks anything else.
pub(crate) const HEX: [u8; 256] = {
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
    // Longer than any real address: keep a prefix, consistently, so the
    // length fits the table's one-byte field.
    out.extend_from_slice(&b[..b.len().min(254)]);
}

impl AddrTable {
    fn bytes(&self, id: u32) -> &[u8] {
        slice(&self.chunks, &self.starts, &self.lens, id)
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
        let id = u32::try_from(self.starts.len()).unwrap_or(u32::MAX);
        let stored = scratch.as_slice();
        if self
            .chunks
            .last()
            .is_none_or(|c| c.len() + stored.len() > CHUNK)
        {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        let c = self.chunks.len() - 1;
        let chunk = &mut self.chunks[c];
        let start = c * CHUNK + chunk.len();
        chunk.extend_from_slice(stored);
        self.starts.push(u32::try_from(start).unwrap_or(u32::MAX));
        self.lens
            .push(u8::try_from(stored.len()).unwrap_or(u8::MAX));
        let (chunks, starts, lens, hasher) = (&self.chunks, &self.starts, &self.lens, &self.hasher);
        self.table.insert_unique(h, id, |&other| {
            use std::hash::BuildHasher;
            hasher.hash_one(slice(chunks, starts, lens, other))
        });
        self.scratch = scratch;
        (AddrId(id), true)
    }

    /// How many distinct addresses are interned.
    pub(crate) fn len(&self) -> usize {
        self.starts.len()
    }
}
