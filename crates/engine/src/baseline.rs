//! The learned seasonal baseline: per scope, the outflow volume of each
//! hour of the week over the last weeks, summarized by robust statistics
//! (median and median absolute deviation), so one heavy hour in the past
//! does not raise the bar and one quiet hour does not lower it.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Weeks of history kept per hour of the week.
pub(crate) const WEEKS: usize = 8;
/// Hours in a week.
pub(crate) const HOURS: usize = 168;

/// The median and the median absolute deviation of `values` (both 0 for
/// none). For an even count the median is the mean of the middle two,
/// rounded down.
pub fn robust(values: &[u64]) -> (u64, u64) {
    if values.is_empty() {
        return (0, 0);
    }
    // The rings hold at most a few weeks: sort on the stack, not the heap.
    let mut small = [0u64; 16];
    let mut large = Vec::new();
    let v: &mut [u64] = if values.len() <= small.len() {
        let v = &mut small[..values.len()];
        v.copy_from_slice(values);
        v
    } else {
        large.extend_from_slice(values);
        &mut large
    };
    let median = median_in_place(v);
    for (d, x) in v.iter_mut().zip(values) {
        *d = x.abs_diff(median);
    }
    (median, median_in_place(v))
}

fn median_in_place(v: &mut [u64]) -> u64 {
    v.sort_unstable();
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        let (a, b) = (v[n / 2 - 1], v[n / 2]);
        a / 2 + b / 2 + (a % 2 + b % 2) / 2
    }
}

/// What one scope has learned: for each hour of the week, the volumes of
/// that hour in the last weeks (whole dollars), newest last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    /// 168 rings, Monday 00:00 UTC first.
    pub hours: Vec<VecDeque<u64>>,
    /// The clock hour being filled (hours since the epoch) and its total
    /// so far (micro-dollars).
    pub current: Option<(i64, u128)>,
}

impl Default for Learned {
    fn default() -> Self {
        Learned {
            hours: vec![VecDeque::new(); HOURS],
            current: None,
        }
    }
}

impl Learned {
    /// Adds an outflow of `usd_micros` in clock hour `hour` (hours since the
    /// epoch), closing the hours that passed (an hour with no outflow
    /// counts as zero, once the scope has been seen).
    pub(crate) fn add(&mut self, hour: i64, usd_micros: u128) {
        match self.current {
            Some((h, total)) if h == hour => {
                self.current = Some((h, total.saturating_add(usd_micros)))
            }
            Some((h, total)) if h < hour => {
                self.close(h, total);
                // At most a week of empty hours matters.
                for gap in (h + 1).max(hour - HOURS as i64)..hour {
                    self.close(gap, 0);
                }
                self.current = Some((hour, usd_micros));
            }
            Some(_) => {} // an hour already closed: late data does not rewrite history
            None => self.current = Some((hour, usd_micros)),
        }
    }

    fn close(&mut self, hour: i64, total: u128) {
        let slot = hour_of_week(hour);
        let ring = &mut self.hours[slot];
        ring.push_back(u64::try_from(total / 1_000_000).unwrap_or(u64::MAX));
        if ring.len() > WEEKS {
            ring.pop_front();
        }
    }

    /// The baseline for a clock hour: (median, MAD, samples).
    pub(crate) fn baseline(&self, hour: i64) -> (u64, u64, usize) {
        let ring = &self.hours[hour_of_week(hour)];
        let mut values = [0u64; WEEKS];
        let n = ring.len().min(WEEKS);
        // The newest weeks, should a restored ring be longer.
        for (v, x) in values.iter_mut().zip(ring.iter().rev()) {
            *v = *x;
        }
        let (m, d) = robust(&values[..n]);
        (m, d, n)
    }
}

/// Hour of the week (0 = Monday 00:00 UTC) of an hour since the epoch.
pub(crate) fn hour_of_week(hour: i64) -> usize {
    // 1970-01-01 was a Thursday: 72 hours into a Monday-based week.
    usize::try_from((hour + 72).rem_euclid(HOURS as i64)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn direct_median(v: &[u64]) -> f64 {
        let mut s: Vec<f64> = v.iter().map(|&x| x as f64).collect();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        }
    }

    proptest! {
        /// Median and MAD against a direct computation in floating point.
        #[test]
        fn robust_matches_direct_computation(v in proptest::collection::vec(0u64..1_000_000_000_000, 1..40)) {
            let (m, d) = robust(&v);
            let dm = direct_median(&v);
            prop_assert!((m as f64 - dm).abs() <= 1.0, "median {m} vs {dm}");
            // The MAD is taken around the (integer) median.
            let devs: Vec<u64> = v.iter().map(|x| x.abs_diff(m)).collect();
            prop_assert!((d as f64 - direct_median(&devs)).abs() <= 1.0);
        }

        /// One outlier, however large, moves the median of five or more
        /// samples by at most one rank.
        #[test]
        fn one_outlier_barely_moves_the_median(v in proptest::collection::vec(100u64..200, 5..20), big in 1_000_000u64..u64::MAX / 2) {
            let (m, _) = robust(&v);
            let mut w = v.clone();
            w.push(big);
            let (m2, _) = robust(&w);
            prop_assert!(m2 < 200 && m2 + 100 >= m, "{m} -> {m2}");
        }
    }

    #[test]
    fn hours_roll_over_into_their_hour_of_the_week() {
        let mut l = Learned::default();
        let monday = 96 + 168 * 2800; // a Monday 00:00 (1970-01-05 was one), in hours since the epoch
        assert_eq!(hour_of_week(monday), 0);
        l.add(monday, 5_000_000);
        l.add(monday, 5_000_000);
        l.add(monday + 3, 1_000_000);
        assert_eq!(l.hours[0], [10]);
        assert_eq!(l.hours[1], [0], "an hour without outflow is a zero");
        assert_eq!(l.hours[2], [0]);
        assert_eq!(l.current, Some((monday + 3, 1_000_000)));
        l.add(monday + 1, 7_000_000);
        assert_eq!(l.hours[1], [0], "closed hours are not rewritten");
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Learned>(&json).unwrap(), l);
    }
}
