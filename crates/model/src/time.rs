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
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimestampError> {
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
    fn hour_of_week_starts_monday() {
        // 2023-09-11 was a Monday.
        let mon = Timestamp::parse_rfc3339("2023-09-11T00:30:00Z").unwrap();
        assert_eq!(mon.hour_of_week(), 0);
        let sun = Timestamp::parse_rfc3339("2023-09-17T23:59:00Z").unwrap();
        assert_eq!(sun.hour_of_week(), 167);
    }
}
