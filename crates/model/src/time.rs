//! Timestamps in nanoseconds since the Unix epoch.
//!
//! Scenario time and wall-clock time share this type, so the engine never
//! asks which clock it runs on: replay feeds it scenario times, the daemon
//! feeds it observation times.

use std::{fmt, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

/// Why an RFC 3339 timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp {input:?}: {reason}")]
pub struct TimestampError {
    /// The string given.
    pub input: String,
    /// What was wrong with it.
    pub reason: String,
}

/// A point in time, nanoseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses RFC 3339 with optional fractional seconds and `Z` or an offset.
    ///
    /// Accepts exactly what chrono's `DateTime::parse_from_rfc3339` accepts;
    /// the common shape is decoded without chrono.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimestampError> {
        match parse_rfc3339_fast(s.as_bytes()) {
            Some(t) => Ok(t),
            None => Self::parse_rfc3339_chrono(s),
        }
    }

    /// The general path, through chrono.
    fn parse_rfc3339_chrono(s: &str) -> Result<Self, TimestampError> {
        let dt = DateTime::parse_from_rfc3339(s).map_err(|e| TimestampError {
            input: s.to_string(),
            reason: e.to_string(),
        })?;
        dt.timestamp_nanos_opt()
            .map(Timestamp)
            .ok_or_else(|| TimestampError {
                input: s.to_string(),
                reason: "outside the years 1677 to 2262".to_string(),
            })
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// Whole seconds since the epoch.
    pub fn from_unix_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000_000))
    }

    /// RFC 3339 in UTC with `Z`, with as many fractional digits as needed.
    pub fn to_rfc3339(&self) -> String {
        DateTime::<Utc>::from_timestamp_nanos(self.0).to_rfc3339_opts(SecondsFormat::AutoSi, true)
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        )
    }

    /// `self − d`, saturating.
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(
            self.0
                .saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        )
    }

    /// Seconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn seconds_since(self, earlier: Timestamp) -> f64 {
        (self.0.saturating_sub(earlier.0)) as f64 / 1e9
    }

    /// Hour of the week (0 = Monday 00:00 UTC), for seasonal baselines.
    pub fn hour_of_week(self) -> u32 {
        let secs = self.0.div_euclid(1_000_000_000);
        // 1970-01-01 was a Thursday: day 3 of a Monday-based week.
        let hours = secs.div_euclid(3600) + 3 * 24;
        u32::try_from(hours.rem_euclid(168)).unwrap_or(0)
    }
}

/// Two ASCII digits at `b[i..i + 2]` as a number.
fn two_digits(b: &[u8], i: usize) -> Option<i64> {
    let hi = b.get(i)?.wrapping_sub(b'0');
    let lo = b.get(i + 1)?.wrapping_sub(b'0');
    (hi < 10 && lo < 10).then(|| i64::from(hi * 10 + lo))
}

fn is_leap_year(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar
/// (Howard Hinnant's `days_from_civil`, for years ≥ 1).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The common RFC 3339 shape, `YYYY-MM-DDTHH:MM:SS[.f…](Z|±HH:MM)` (with
/// chrono's leniencies: `t` or a space for `T`, `z` for `Z`, any number of
/// fractional digits, the first nine kept), for years 1678 to 2261 whose
/// nanoseconds always fit an `i64`. `None` for anything else, valid or not:
/// chrono then decides, so the two paths never disagree.
fn parse_rfc3339_fast(b: &[u8]) -> Option<Timestamp> {
    let year = two_digits(b, 0)? * 100 + two_digits(b, 2)?;
    let month = two_digits(b, 5)?;
    let day = two_digits(b, 8)?;
    let hour = two_digits(b, 11)?;
    let minute = two_digits(b, 14)?;
    let second = two_digits(b, 17)?;
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => return None,
    };
    // A leap second (60) is left to chrono.
    if !(1678..=2261).contains(&year)
        || !(1..=month_days).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0i64;
    if let [b'.', frac @ ..] = rest {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (i, c) in frac[..digits].iter().enumerate().take(9) {
            nanos += i64::from(c - b'0') * 10i64.pow(8 - i as u32);
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (two_digits(rest, 1)?, two_digits(rest, 4)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = oh * 3600 + om * 60;
            if *sign == b'-' { -secs } else { secs }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(Timestamp(secs * 1_000_000_000 + nanos))
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_offsets_and_fractions() {
        let a = Timestamp::parse_rfc3339("2023-09-12T10:00:00Z").unwrap();
        let b = Timestamp::parse_rfc3339("2023-09-12T12:00:00.5+02:00").unwrap();
        assert_eq!(b.0 - a.0, 500_000_000);
        assert_eq!(b.to_rfc3339(), "2023-09-12T10:00:00.500Z");
        assert_eq!(a.to_rfc3339(), "2023-09-12T10:00:00Z");
        assert!(Timestamp::parse_rfc3339("2023-09-12 10:00:00").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn fast_path_agrees_with_chrono_on_examples() {
        for s in [
            "2023-09-12T10:00:00Z",
            "2023-09-12t10:00:00z",
            "2023-09-12 10:00:00.123456789123-05:30",
            "2024-02-29T23:59:59.9+23:59",
            "1970-01-01T00:00:00-00:00",
            "1678-01-01T00:00:00+23:59",
            "2261-12-31T23:59:59.999999999-23:59",
        ] {
            let fast = parse_rfc3339_fast(s.as_bytes());
            assert!(fast.is_some(), "{s}");
            assert_eq!(
                fast.map(Ok),
                Some(Timestamp::parse_rfc3339_chrono(s)),
                "{s}"
            );
        }
        for s in [
            "2023-02-29T00:00:00Z",
            "2023-09-12T10:00:60Z",
            "2023-09-12T10:00:00.Z",
            "2023-09-12T10:00:00+24:00",
            "2023-09-12T10:00:00+0100",
            "2023-09-12T10:00:00Zjunk",
            "1677-09-21T00:12:43.145224191Z",
            "2023-09-12T10:00:00",
            "",
        ] {
            assert_eq!(parse_rfc3339_fast(s.as_bytes()), None, "{s}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Wherever the fast path answers, chrono gives the same instant;
        /// and it answers for every well-formed string of its shape.
        #[test]
        fn fast_path_matches_chrono(
            year in prop_oneof![1600i64..2400, 1960i64..2040],
            month in 0i64..=13,
            day in 0i64..=32,
            hour in 0i64..=25,
            minute in 0i64..=61,
            second in 0i64..=61,
            frac in proptest::option::of("[0-9]{0,12}"),
            sep in proptest::sample::select(vec!['T', 't', ' ', 'x']),
            zone in prop_oneof![
                proptest::sample::select(vec!["Z", "z", "", "UTC", "+0100", "\u{2212}01:00"])
                    .prop_map(str::to_string),
                (proptest::sample::select(vec!['+', '-']), 0i64..=25, 0i64..=61)
                    .prop_map(|(s, h, m)| format!("{s}{h:02}:{m:02}")),
            ],
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let s = format!(
                "{year:04}-{month:02}-{day:02}{sep}{hour:02}:{minute:02}:{second:02}{frac}{zone}"
            );
            let chrono = Timestamp::parse_rfc3339_chrono(&s);
            match parse_rfc3339_fast(s.as_bytes()) {
                Some(t) => prop_assert_eq!(Ok(t), chrono, "{}", s),
                None => {
                    let days_ok = chrono::NaiveDate::from_ymd_opt(year as i32, month as u32, day as u32).is_some();
                    let common = (1678..=2261).contains(&year)
                        && days_ok
                        && sep != 'x'
                        && hour < 24 && minute < 60 && second < 60
                        && frac != "."
                        && (zone.eq_ignore_ascii_case("z")
                            || (zone.len() == 6
                                && zone[1..3].parse::<i64>().is_ok_and(|h| h < 24)
                                && zone[4..6].parse::<i64>().is_ok_and(|m| m < 60)));
                    prop_assert!(!common, "fast path refused {}", s);
                }
            }
        }
    }

    proptest! {
        /// The end of February, leap years or not (1900 and 2100 are not,
        /// 2000 is), in every offset.
        #[test]
        fn fast_path_matches_chrono_at_the_end_of_february(
            year in 1678i64..=2261,
            day in 27i64..=30,
            offset_minutes in -1439i64..=1439,
            nanos in 0u32..1_000_000_000,
        ) {
            let sign = if offset_minutes < 0 { '-' } else { '+' };
            let (h, m) = (offset_minutes.abs() / 60, offset_minutes.abs() % 60);
            for s in [
                format!("{year:04}-02-{day:02}T23:59:59.{nanos:09}{sign}{h:02}:{m:02}"),
                format!("{year:04}-03-01T00:00:00{sign}{h:02}:{m:02}"),
                format!("{year}-02-{day:02}T00:00:00Z"),
            ] {
                let chrono = Timestamp::parse_rfc3339_chrono(&s);
                let fast = parse_rfc3339_fast(s.as_bytes());
                prop_assert_eq!(fast.is_some(), chrono.is_ok(), "{}", s);
                if let Some(t) = fast {
                    prop_assert_eq!(Ok(t), chrono, "{}", s);
                }
            }
        }
    }

    #[test]
    fn hour_of_week_starts_monday() {
        // 2023-09-11 was a Monday.
        let mon = Timestamp::parse_rfc3339("2023-09-11T00:30:00Z").unwrap();
        assert_eq!(mon.hour_of_week(), 0);
        let sun = Timestamp::parse_rfc3339("2023-09-17T23:59:00Z").unwrap();
        assert_eq!(sun.hour_of_week(), 167);
    }
}
