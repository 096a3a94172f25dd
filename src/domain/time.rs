//! Instants at microsecond precision, the resolution the service keeps end to
//! end. Finer digits a client sends are truncated, never rounded, so an event
//! never moves later than it happened.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};

/// Microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub i64);

impl Micros {
    pub const PER_SECOND: i64 = 1_000_000;

    /// From seconds and nanoseconds, truncating below the microsecond.
    /// `None` when the instant does not fit in an `i64` of microseconds.
    pub fn from_parts(seconds: i64, nanos: i32) -> Option<Self> {
        seconds
            .checked_mul(Self::PER_SECOND)?
            .checked_add(i64::from(nanos.div_euclid(1_000)))
            .map(Self)
    }

    /// Seconds and nanoseconds, as `google.protobuf.Timestamp` holds them.
    pub fn to_parts(self) -> (i64, i32) {
        let seconds = self.0.div_euclid(Self::PER_SECOND);
        // The remainder is below 1_000_000, so the nanos fit in an i32.
        let nanos = (self.0.rem_euclid(Self::PER_SECOND) * 1_000) as i32;
        (seconds, nanos)
    }

    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self(at.timestamp_micros())
    }

    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_micros(self.0)
    }

    pub fn saturating_sub_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_sub(micros))
    }

    pub fn saturating_add_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_add(micros))
    }
}

impl fmt::Display for Micros {
    /// RFC 3339 with exactly six fractional digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(at) => f.write_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true)),
            None => write!(f, "{}us", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_are_truncated_not_rounded() {
        assert_eq!(
            Micros::from_parts(10, 999_999_999),
            Some(Micros(10_999_999))
        );
        assert_eq!(Micros::from_parts(0, 1_999), Some(Micros(1)));
    }

    #[test]
    fn parts_round_trip_at_microsecond_precision() {
        let at = Micros(1_763_800_000_123_456);
        let (s, n) = at.to_parts();
        assert_eq!((s, n), (1_763_800_000, 123_456_000));
        assert_eq!(Micros::from_parts(s, n), Some(at));
    }

    #[test]
    fn negative_instants_split_with_positive_nanos() {
        assert_eq!(Micros(-1).to_parts(), (-1, 999_999_000));
    }

    #[test]
    fn overflow_is_none_not_a_panic() {
        assert_eq!(Micros::from_parts(i64::MAX, 0), None);
    }

    #[test]
    fn displays_six_fractional_digits() {
        assert_eq!(Micros(1_500_000).to_string(), "1970-01-01T00:00:01.500000Z");
    }
}
