//! Per-rule state: the windows each rule keeps and the small structures
//! behind `new_destination` and `correlation`.

use std::collections::VecDeque;
use std::time::Duration;

use drainguard_model::{Address, Chain, Timestamp};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use crate::{
    intern::AddrId,
    state::{AssetId, WalletIdx, WindowKey},
    window::Seq,
};

/// Who paid: one wallet's one asset. A destination collecting another
/// asset, or from another wallet or chain, has another source.
pub(crate) type Source = (WalletIdx, AssetId);

/// The state one rule keeps between events.
#[derive(Debug)]
pub(crate) enum RuleState {
    /// Rules that judge each transaction alone.
    Stateless,
    /// `outflow_window` and `velocity`: the shared window spec they read,
    /// and the keys whose limit is crossed right now (one finding per
    /// crossing).
    Windows {
        spec: u16,
        fired: FxHashSet<WindowKey>,
    },
    /// `new_destination`: the recent payments to each fresh destination.
    Destinations {
        windows: FxHashMap<AddrId, DestWindow>,
        fired: FxHashSet<AddrId>,
    },
    /// `baseline`: the shared 1-hour USD window it reads, what each scope
    /// has learned, and the (scope, clock hour) pairs already reported.
    Baseline {
        spec: u16,
        learned: FxHashMap<WindowKey, crate::baseline::Learned>,
        fired: FxHashSet<(WindowKey, i64)>,
    },
    /// `balance_drain` floors: the (wallet, asset) pairs under their floor
    /// right now (one finding per fall).
    Floors {
        fired: FxHashSet<(WalletIdx, crate::state::AssetId)>,
    },
    /// `correlation`: recent qualifying findings.
    Correlation {
        recent: VecDeque<Correlated>,
        fired: bool,
    },
}

/// A qualifying finding seen by a correlation rule: when, on which chain,
/// from which wallet.
pub(crate) type Correlated = (Timestamp, Option<Chain>, Option<(Chain, Address)>);

/// One payment to a destination.
#[derive(Debug, Clone)]
pub(crate) struct Payment {
    pub(crate) t: Timestamp,
    pub(crate) source: Source,
    pub(crate) share_bps: u32,
    live: bool,
}

/// The recent payments to one destination, removable by sequence number.
/// Nearly every destination is paid once: that payment is kept inline, so
/// a new destination costs no allocation.
#[derive(Debug, Default)]
pub(crate) struct DestWindow {
    entries: SmallVec<[Payment; 1]>,
    base: Seq,
}

/// What a destination received within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DestSummary {
    pub(crate) sources: u32,
    pub(crate) payments: u32,
    pub(crate) total_share_bps: u64,
}

impl DestWindow {
    /// An empty window whose first payment will have sequence number
    /// `first` (see [`crate::window::SlidingWindow::starting_at`]).
    pub(crate) fn starting_at(first: Seq) -> Self {
        DestWindow {
            entries: SmallVec::new(),
            base: first,
        }
    }

    fn expire(&mut self, now: Timestamp, length: Duration) {
        let cutoff = now.minus(length);
        let gone = self.entries.iter().take_while(|p| p.t <= cutoff).count();
        if gone > 0 {
            self.entries.drain(..gone);
            self.base += gone as Seq;
        }
    }

    pub(crate) fn push(
        &mut self,
        t: Timestamp,
        source: Source,
        share_bps: u32,
        length: Duration,
    ) -> Seq {
        self.expire(t, length);
        self.entries.push(Payment {
            t,
            source,
            share_bps,
            live: true,
        });
        self.base + self.entries.len() as u64 - 1
    }

    pub(crate) fn remove(&mut self, seq: Seq) {
        if let Some(idx) = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
            && let Some(p) = self.entries.get_mut(idx)
        {
            p.live = false;
        }
    }

    /// The live payments within the window: how many, their total share,
    /// and how many distinct sources paid at least `source_share_bps` of
    /// their balance in one payment.
    pub(crate) fn summary(
        &mut self,
        now: Timestamp,
        length: Duration,
        source_share_bps: u32,
    ) -> DestSummary {
        self.expire(now, length);
        // Nearly every destination is paid once.
        if let [p] = self.entries.as_slice() {
            let live = u32::from(p.live);
            return DestSummary {
                sources: u32::from(p.live && p.share_bps >= source_share_bps),
                payments: live,
                total_share_bps: u64::from(live * p.share_bps),
            };
        }
        // Otherwise one or two payments: count distinct sources without
        // allocating.
        let mut sources: SmallVec<[Source; 8]> = SmallVec::new();
        let (mut payments, mut total) = (0u32, 0u64);
        for p in self.entries.iter().filter(|p| p.live) {
            payments += 1;
            total += u64::from(p.share_bps);
            if p.share_bps >= source_share_bps && !sources.contains(&p.source) {
                sources.push(p.source);
            }
        }
        DestSummary {
            sources: sources.len() as u32,
            payments,
            total_share_bps: total,
        }
    }

    pub(crate) fn last_t(&self) -> Option<Timestamp> {
        self.entries.last().map(|p| p.t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A destination's summary counts exactly the live payments within
        /// the window, and their distinct sources, whatever was paid and
        /// taken back (one payment, the common case, included).
        #[test]
        fn summary_counts_the_live_payments_in_the_window(
            ops in proptest::collection::vec((0u32..4, 0u16..2, 0u32..10_000, any::<bool>(), 0i64..30), 1..12),
            min_share in prop_oneof![Just(0u32), 0u32..10_000],
        ) {
            let length = Duration::from_secs(60);
            let mut w = DestWindow::starting_at(100);
            let mut model: Vec<(i64, (u32, u16), u32, bool)> = Vec::new();
            let mut t = 0i64;
            for (wallet, asset, share, take_back, dt) in ops {
                t += dt;
                let at = Timestamp::from_unix_secs(t);
                let source = (wallet, asset);
                let seq = w.push(at, source, share, length);
                model.push((t, source, share, true));
                if take_back {
                    w.remove(seq);
                    if let Some(last) = model.last_mut() {
                        last.3 = false;
                    }
                }
                let live: Vec<_> = model
                    .iter()
                    .filter(|(pt, _, _, l)| *l && *pt > t - 60)
                    .collect();
                let mut sources: Vec<(u32, u16)> =
                    live.iter().filter(|p| p.2 >= min_share).map(|p| p.1).collect();
                sources.sort_unstable();
                sources.dedup();
                let want = DestSummary {
                    sources: sources.len() as u32,
                    payments: live.len() as u32,
                    total_share_bps: live.iter().map(|p| u64::from(p.2)).sum(),
                };
                prop_assert_eq!(w.summary(at, length, min_share), want);
            }
        }
    }
}
