//! A sliding time window of values that supports taking an entry back out.
//!
//! Entries are appended in time order and expire from the front; an entry
//! can also be removed from the middle by its sequence number (a retracted
//! transfer), in O(1), by marking it dead. Sums are exact integers.

use std::{collections::VecDeque, time::Duration};

use drainguard_model::Timestamp;

#[derive(Debug, Clone, Copy)]
struct Entry {
    t: Timestamp,
    value: u128,
    /// Whose value it is (the engine's transfer slot), so a finding can
    /// name every transaction in the window; it fits in the padding.
    tag: u32,
    live: bool,
    applied: bool,
}

/// The sum and count of the live entries whose time lies in
/// `(now − length, now]`.
#[derive(Debug, Clone)]
pub struct SlidingWindow {
    length: Duration,
    entries: VecDeque<Entry>,
    /// Sequence number of `entries[0]`.
    base: u64,
    sum: u128,
    sum_applied: u128,
    count: u64,
}

/// Identifies an entry of one window for later removal.
pub type Seq = u64;

impl SlidingWindow {
    /// An empty window of the given length.
    pub fn new(length: Duration) -> Self {
        Self::starting_at(length, 0)
    }

    /// An empty window whose first entry will have sequence number
    /// `first`: an owner that drops empty windows starts a later one for
    /// the same key past every number the dropped one gave out.
    pub fn starting_at(length: Duration, first: Seq) -> Self {
        SlidingWindow {
            length,
            entries: VecDeque::new(),
            base: first,
            sum: 0,
            sum_applied: 0,
            count: 0,
        }
    }

    /// Drops the entries that are `length` or more older than `now`.
    pub fn advance(&mut self, now: Timestamp) {
        let cutoff = now.minus(self.length);
        while let Some(front) = self.entries.front() {
            if front.t > cutoff {
                break;
            }
            if front.live {
                self.sum -= front.value;
                self.count -= 1;
                if front.applied {
                    self.sum_applied -= front.value;
                }
            }
            self.entries.pop_front();
            self.base += 1;
        }
    }

    /// Adds a value at time `t` (not earlier than the last one added) and
    /// returns its sequence number.
    pub fn push(&mut self, t: Timestamp, value: u128, tag: u32) -> Seq {
        self.advance(t);
        self.entries.push_back(Entry {
            t,
            value,
            tag,
            live: true,
            applied: false,
        });
        self.sum = self.sum.saturating_add(value);
        self.count += 1;
        self.base + self.entries.len() as u64 - 1
    }

    fn entry_mut(&mut self, seq: Seq) -> Option<&mut Entry> {
        let idx = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.entries.get_mut(idx).filter(|e| e.live)
    }

    /// Takes an entry back out (if it has not expired). Returns whether it
    /// was still in the window.
    pub fn remove(&mut self, seq: Seq) -> bool {
        let Some(e) = self.entry_mut(seq) else {
            return false;
        };
        e.live = false;
        let (value, applied) = (e.value, e.applied);
        self.sum -= value;
        self.count -= 1;
        if applied {
            self.sum_applied -= value;
        }
        true
    }

    /// Marks an entry as already reflected in the observed balance (its
    /// transfer is in a block), or not. Used to reconstruct the balance at
    /// the window's start: `balance + sum_applied`.
    pub fn set_applied(&mut self, seq: Seq, applied: bool) {
        let Some(e) = self.entry_mut(seq) else { return };
        if e.applied == applied {
            return;
        }
        e.applied = applied;
        let v = e.value;
        if applied {
            self.sum_applied += v;
        } else {
            self.sum_applied -= v;
        }
    }

    /// The sum of live values.
    pub fn sum(&self) -> u128 {
        self.sum
    }

    /// The sum of live values already reflected in the balance.
    pub fn sum_applied(&self) -> u128 {
        self.sum_applied
    }

    /// The number of live entries.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The window's length.
    pub fn length(&self) -> Duration {
        self.length
    }

    /// The tags and values of the live entries, oldest first.
    pub fn live(&self) -> impl DoubleEndedIterator<Item = (u32, u128)> + '_ {
        self.entries
            .iter()
            .filter(|e| e.live)
            .map(|e| (e.tag, e.value))
    }

    /// Whether nothing is stored (live or dead).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_unix_secs(s)
    }

    #[test]
    fn expires_and_removes() {
        let mut w = SlidingWindow::new(Duration::from_secs(10));
        let a = w.push(ts(0), 5, 1);
        let b = w.push(ts(5), 7, 2);
        assert_eq!((w.sum(), w.count()), (12, 2));
        assert!(w.remove(b));
        assert!(!w.remove(b), "removing twice has no effect");
        assert_eq!((w.sum(), w.count()), (5, 1));
        assert_eq!(
            w.live().collect::<Vec<_>>(),
            vec![(1, 5)],
            "tags follow values"
        );
        w.advance(ts(10));
        assert_eq!(
            (w.sum(), w.count()),
            (0, 0),
            "an entry exactly one length old is out"
        );
        assert!(!w.remove(a));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push { dt: u16, value: u32 },
        Remove(usize),
        Apply(usize, bool),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..50, 0u32..1_000_000).prop_map(|(dt, value)| Op::Push { dt, value }),
            2 => (0usize..64).prop_map(Op::Remove),
            2 => (0usize..64, any::<bool>()).prop_map(|(i, a)| Op::Apply(i, a)),
            1 => (0u16..200).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// The window agrees with a brute-force recount of every entry ever
        /// pushed, removed or marked, after every operation.
        #[test]
        fn matches_brute_force(len in 1u64..300, ops in proptest::collection::vec(op(), 1..200)) {
            let mut w = SlidingWindow::new(Duration::from_secs(len));
            // (t, value, removed, applied, seq)
            let mut model: Vec<(i64, u128, bool, bool, Seq)> = Vec::new();
            let mut now = 0i64;
            for op in ops {
                match op {
                    Op::Push { dt, value } => {
                        now += i64::from(dt);
                        let seq = w.push(ts(now), u128::from(value), 0);
                        model.push((now, u128::from(value), false, false, seq));
                    }
                    Op::Remove(i) if !model.is_empty() => {
                        let i = i % model.len();
                        let in_window = model[i].0 > now - len as i64;
                        let was_live = in_window && !model[i].2;
                        prop_assert_eq!(w.remove(model[i].4), was_live);
                        if in_window { model[i].2 = true; }
                    }
                    Op::Apply(i, a) if !model.is_empty() => {
                        let i = i % model.len();
                        w.set_applied(model[i].4, a);
                        if model[i].0 > now - len as i64 && !model[i].2 { model[i].3 = a; }
                    }
                    Op::Advance(dt) => {
                        now += i64::from(dt);
                        w.advance(ts(now));
                    }
                    _ => {}
                }
                let live = model.iter().filter(|e| e.0 > now - len as i64 && !e.2);
                let (sum, count, applied) = live.fold((0u128, 0u64, 0u128), |(s, c, a), e| {
                    (s + e.1, c + 1, a + if e.3 { e.1 } else { 0 })
                });
                prop_assert_eq!(w.sum(), sum);
                prop_assert_eq!(w.count(), count);
                prop_assert_eq!(w.sum_applied(), applied);
            }
        }
    }
}
