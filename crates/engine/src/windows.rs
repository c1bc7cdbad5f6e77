//! The windows of one window spec, by key, in numbered slots.
//!
//! Every outflow finds one window per spec, and every transfer in a block
//! finds its share windows again: a wallet's windows are reached through a
//! dense per-wallet list, with no key hashed. Keys that are not a wallet's
//! (asset, chain, global: a handful) are found by hash. A window that
//! empties is dropped and its slot reused; the sequence numbers a new
//! window gives out start past every earlier one
//! ([`SlidingWindow::starting_at`]), so a transfer's reference into the
//! dropped window finds nothing in a later one for the same key.

use rustc_hash::FxHashMap;

use crate::{state::WindowKey, window::SlidingWindow};

/// No slot (in the per-wallet lists).
const NONE: u32 = u32::MAX;

#[derive(Debug)]
struct Slot {
    key: WindowKey,
    window: SlidingWindow,
    /// The next slot of the same wallet, or [`NONE`].
    next: u32,
    live: bool,
}

/// The windows of one spec.
#[derive(Debug, Default)]
pub(crate) struct WindowStore {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// By wallet index, its first slot, or [`NONE`].
    by_wallet: Vec<u32>,
    /// Slots of keys that are not a wallet's.
    by_key: FxHashMap<WindowKey, u32>,
}

impl WindowStore {
    /// The slot of a key's window, if it has one.
    #[inline]
    pub(crate) fn find(&self, key: &WindowKey) -> Option<u32> {
        match *key {
            WindowKey::Wallet(w, asset) => {
                let mut at = *self.by_wallet.get(w as usize)?;
                while at != NONE {
                    let slot = self.slots.get(at as usize)?;
                    // Every slot in the wallet's list is one of its own.
                    if matches!(slot.key, WindowKey::Wallet(_, a) if a == asset) {
                        return Some(at);
                    }
                    at = slot.next;
                }
                None
            }
            _ => self.by_key.get(key).copied(),
        }
    }

    /// A key's window, made with `make` if it has none.
    pub(crate) fn get_or_insert(
        &mut self,
        key: WindowKey,
        make: impl FnOnce() -> SlidingWindow,
    ) -> &mut SlidingWindow {
        let at = match self.find(&key) {
            Some(at) => at as usize,
            None => self.insert(key, make()),
        };
        &mut self.slots[at].window
    }

    /// Puts a window for a key that has none in a free slot; its index.
    fn insert(&mut self, key: WindowKey, window: SlidingWindow) -> usize {
        let next = match key {
            WindowKey::Wallet(w, _) => {
                let w = w as usize;
                if self.by_wallet.len() <= w {
                    self.by_wallet.resize(w + 1, NONE);
                }
                self.by_wallet[w]
            }
            _ => NONE,
        };
        let slot = Slot {
            key,
            window,
            next,
            live: true,
        };
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at as usize] = slot;
                at
            }
            None => {
                self.slots.push(slot);
                u32::try_from(self.slots.len() - 1).unwrap_or(NONE)
            }
        };
        match key {
            WindowKey::Wallet(w, _) => self.by_wallet[w as usize] = at,
            _ => {
                self.by_key.insert(key, at);
            }
        }
        at as usize
    }

    pub(crate) fn get(&self, key: &WindowKey) -> Option<&SlidingWindow> {
        let at = self.find(key)?;
        self.slots.get(at as usize).map(|s| &s.window)
    }

    pub(crate) fn get_mut(&mut self, key: &WindowKey) -> Option<&mut SlidingWindow> {
        let at = self.find(key)?;
        self.slots.get_mut(at as usize).map(|s| &mut s.window)
    }

    pub(crate) fn contains_key(&self, key: &WindowKey) -> bool {
        self.find(key).is_some()
    }

    /// Every window with its key, in no particular order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&WindowKey, &mut SlidingWindow)> {
        self.slots
            .iter_mut()
            .filter(|s| s.live)
            .map(|s| (&s.key, &mut s.window))
    }

    /// Keeps the windows for which `keep` is true and drops the rest,
    /// freeing their slots.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&WindowKey, &mut SlidingWindow) -> bool) {
        for at in 0..self.slots.len() {
            let slot = &mut self.slots[at];
            if !slot.live || keep(&slot.key, &mut slot.window) {
                continue;
            }
            let key = slot.key;
            self.unlink(key, at as u32);
            let slot = &mut self.slots[at];
            slot.live = false;
            slot.window = SlidingWindow::new(slot.window.length());
            slot.next = NONE;
            self.free.push(at as u32);
        }
    }

    /// Takes slot `at` (holding `key`) out of the index.
    fn unlink(&mut self, key: WindowKey, at: u32) {
        let WindowKey::Wallet(w, _) = key else {
            self.by_key.remove(&key);
            return;
        };
        let after = self.slots[at as usize].next;
        let Some(head) = self.by_wallet.get_mut(w as usize) else {
            return;
        };
        if *head == at {
            *head = after;
            return;
        }
        let mut prev = *head;
        while prev != NONE {
            let next = self.slots[prev as usize].next;
            if next == at {
                self.slots[prev as usize].next = after;
                return;
            }
            prev = next;
        }
    }

    /// How many windows it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.live).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn key(k: u8) -> WindowKey {
        // Wallets 0..3 with two assets or none, and two keys of other kinds.
        match k % 8 {
            6 => WindowKey::Asset(0, 1),
            7 => WindowKey::Global,
            n => WindowKey::Wallet(u32::from(n / 2), (n % 2 == 0).then_some(u16::from(k / 8))),
        }
    }

    proptest! {
        /// Inserting and dropping windows in any order, the store finds
        /// exactly the keys a map would hold, each at a slot holding it.
        #[test]
        fn finds_what_a_map_holds(ops in proptest::collection::vec((any::<bool>(), 0u8..24), 1..200)) {
            let mut store = WindowStore::default();
            let mut model: HashMap<WindowKey, ()> = HashMap::new();
            for (insert, k) in ops {
                let k = key(k);
                if insert {
                    store.get_or_insert(k, || SlidingWindow::new(Duration::from_secs(60)));
                    model.insert(k, ());
                } else {
                    store.retain(|key, _| *key != k);
                    model.remove(&k);
                }
                prop_assert_eq!(store.len(), model.len());
                for probe in 0..24 {
                    let p = key(probe);
                    prop_assert_eq!(store.contains_key(&p), model.contains_key(&p), "{:?}", p);
                    if let Some(at) = store.find(&p) {
                        prop_assert!(store.slots[at as usize].live);
                        prop_assert_eq!(store.slots[at as usize].key, p);
                    }
                }
                let mut keys: Vec<WindowKey> = store.iter_mut().map(|(k, _)| *k).collect();
                keys.sort();
                let mut want: Vec<WindowKey> = model.keys().copied().collect();
                want.sort();
                prop_assert_eq!(keys, want);
            }
        }
    }
}
