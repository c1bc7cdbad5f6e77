//! The world around the exchange: prices, blocks and when users act.
//!
//! Times are nanoseconds since the epoch (`i64`, as in [`Timestamp`]).
//! Floats only choose values (a rate, a step, a dollar amount); every price
//! kept is an integer of 10⁻⁸ USD.
//!
//! [`Timestamp`]: drainguard_model::Timestamp

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::topology::{BlockClock, PRICES};

/// Nanoseconds in a second.
pub(crate) const SEC: i64 = 1_000_000_000;
/// Nanoseconds in a millisecond.
pub(crate) const MS: i64 = 1_000_000;
/// Prices move this often.
pub(crate) const PRICE_STEP: i64 = 600 * SEC;

/// A standard normal draw (Box–Muller).
pub(crate) fn std_normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.r#gen::<f64>(); // (0, 1]
    let u2 = rng.r#gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential draw with the given rate (events per second), in seconds.
fn exponential(rng: &mut ChaCha8Rng, rate: f64) -> f64 {
    let u = 1.0 - rng.r#gen::<f64>(); // (0, 1]
    -u.ln() / rate
}

/// A uniform time offset between `lo` and `hi` milliseconds, in nanoseconds.
pub(crate) fn millis(rng: &mut ChaCha8Rng, lo: i64, hi: i64) -> i64 {
    rng.gen_range(lo..=hi) * MS
}

/// Picks an index with probability proportional to its weight.
pub(crate) fn pick_weighted(
    rng: &mut ChaCha8Rng,
    weights: impl Iterator<Item = f64> + Clone,
) -> usize {
    let total: f64 = weights.clone().sum();
    let mut x = rng.r#gen::<f64>() * total;
    let mut last = 0;
    for (i, w) in weights.enumerate() {
        if x < w {
            return i;
        }
        x -= w;
        last = i;
    }
    last
}

/// Every asset's USD price, one value per 10-minute step, in 10⁻⁸ USD.
#[derive(Debug)]
pub(crate) struct PricePath {
    start: i64,
    /// Per price, per step.
    values: Vec<Vec<u64>>,
}

impl PricePath {
    /// Walks every price from its start value for the steps in
    /// `[start, end)`: volatile assets by up to ±0.3% a step, stablecoins
    /// by a small wobble pulled back to their peg.
    pub(crate) fn walk(rng: &mut ChaCha8Rng, start: i64, end: i64) -> PricePath {
        let steps = usize::try_from((end - start).max(0) / PRICE_STEP + 1).unwrap_or(1);
        let values = PRICES
            .iter()
            .map(|p| {
                let mut v = Vec::with_capacity(steps);
                let mut price = p.start_e8;
                v.push(price);
                for _ in 1..steps {
                    price = if p.stable {
                        let peg = i128::from(p.start_e8);
                        let dev = (i128::from(price) - peg) * 4 / 5
                            + i128::from(rng.gen_range(-200i64..=200)) * peg / 1_000_000;
                        u64::try_from(peg + dev).unwrap_or(p.start_e8)
                    } else {
                        let ppm = rng.gen_range(-3_000i64..=3_000);
                        let next = i128::from(price) * i128::from(1_000_000 + ppm) / 1_000_000;
                        u64::try_from(next.max(1)).unwrap_or(price)
                    };
                    v.push(price);
                }
                v
            })
            .collect();
        PricePath { start, values }
    }

    /// Number of steps.
    pub(crate) fn steps(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    /// Price `p` at step `k`, in 10⁻⁸ USD.
    pub(crate) fn at_step(&self, p: usize, k: usize) -> u64 {
        let series = &self.values[p];
        series[k.min(series.len() - 1)]
    }

    /// Price `p` in USD at time `t`.
    pub(crate) fn usd(&self, p: usize, t: i64) -> f64 {
        let k = usize::try_from((t - self.start).max(0) / PRICE_STEP).unwrap_or(usize::MAX);
        e8_to_usd(self.at_step(p, k))
    }
}

/// 10⁻⁸ USD to USD (one correctly rounded division, so the value survives
/// a JSON round trip exactly).
pub(crate) fn e8_to_usd(e8: u64) -> f64 {
    e8 as f64 / 1e8
}

/// Block times in `[start, end)`, the first at `start`.
pub(crate) fn block_times(
    rng: &mut ChaCha8Rng,
    clock: BlockClock,
    start: i64,
    end: i64,
) -> Vec<i64> {
    let mut times = Vec::new();
    let mut t = start;
    while t < end {
        times.push(t);
        t += match clock {
            BlockClock::Every(secs) => i64::from(secs) * SEC,
            BlockClock::Poisson(mean) => {
                let secs = exponential(rng, 1.0 / f64::from(mean)).max(1.0);
                (secs * 1000.0).round() as i64 * MS
            }
        };
    }
    times
}

/// A window in which withdrawals come `factor` times as often.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rush {
    /// First instant.
    pub(crate) from: i64,
    /// First instant after.
    pub(crate) until: i64,
    /// Rate multiplier.
    pub(crate) factor: f64,
}

/// Users are busiest at 15:00 UTC (1.5 × the mean) and quietest at 03:00
/// UTC (0.5 ×), smoothly.
pub(crate) fn diurnal(t: i64) -> f64 {
    let hour = t.rem_euclid(86_400 * SEC) as f64 / (3_600.0 * SEC as f64);
    1.0 + 0.5 * (std::f64::consts::TAU * (hour - 15.0) / 24.0).cos()
}

fn rush_factor(rushes: &[Rush], t: i64) -> f64 {
    rushes
        .iter()
        .filter(|r| r.from <= t && t < r.until)
        .map(|r| r.factor)
        .product()
}

/// Arrival times (millisecond resolution) of a Poisson process in
/// `[from, end)` with `per_day` mean events a day, shaped by the diurnal
/// curve and any rushes. Drawn by thinning a homogeneous process at the
/// peak rate, so the work is linear in the number of candidates.
pub(crate) fn arrivals(
    rng: &mut ChaCha8Rng,
    per_day: f64,
    from: i64,
    end: i64,
    rushes: &[Rush],
) -> Vec<i64> {
    let base = per_day / 86_400.0;
    let peak_rush: f64 = rushes.iter().map(|r| r.factor.max(1.0)).product();
    let peak = base * 1.5 * peak_rush;
    if !peak.is_finite() || peak <= 0.0 || from >= end {
        return Vec::new();
    }
    let span = (end - from) as f64 / SEC as f64;
    let mut out = Vec::with_capacity((base * span * 1.1) as usize + 16);
    let mut secs = 0.0;
    loop {
        secs += exponential(rng, peak);
        if secs >= span {
            break;
        }
        let t = from + ((secs * 1000.0) as i64) * MS;
        let rate = base * diurnal(t) * rush_factor(rushes, t);
        if rng.r#gen::<f64>() * peak < rate {
            out.push(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn diurnal_curve_peaks_at_three_pm() {
        let h = |x: i64| diurnal(x * 3_600 * SEC);
        assert!((h(15) - 1.5).abs() < 1e-9);
        assert!((h(3) - 0.5).abs() < 1e-9);
        assert!((h(9) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn arrivals_have_the_daily_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let day = 86_400 * SEC;
        let n = arrivals(&mut rng, 10_000.0, 0, day, &[]).len();
        assert!((9_500..10_500).contains(&n), "{n}");
        let rush = Rush {
            from: 12 * 3_600 * SEC,
            until: 16 * 3_600 * SEC,
            factor: 6.0,
        };
        let busy = arrivals(&mut rng, 10_000.0, 0, day, &[rush]);
        let in_rush = busy
            .iter()
            .filter(|&&t| rush.from <= t && t < rush.until)
            .count();
        assert!(in_rush > 5 * 2_000, "{in_rush}");
    }

    #[test]
    fn stable_prices_stay_near_the_peg() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let path = PricePath::walk(&mut rng, 0, 86_400 * SEC);
        assert_eq!(path.steps(), 145);
        for k in 0..path.steps() {
            let usdt = path.at_step(1, k);
            assert!((99_800_000..=100_200_000).contains(&usdt), "{usdt}");
        }
    }
}
