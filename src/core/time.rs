//! Time: where "now" comes from, and the one set of Unix-time conversions.
//!
//! Everything that needs the current time takes a [`Clock`], so expiry, back-off and
//! checkpoint timing can be tested by moving a [`ManualClock`] instead of sleeping. Only
//! [`SystemClock`] reads the system clock (clippy's `disallowed-methods` forbids
//! `SystemTime::now` everywhere else; see `clippy.toml`).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (the unit every stored timestamp uses).
pub type UnixMs = i64;

/// Where "now" comes from. Production reads the system clock; tests move a manual one.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // The one place the wall clock is read.
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to.
pub struct ManualClock(Mutex<SystemTime>);

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        Self(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *now = now.checked_add(by).unwrap_or(*now);
    }

    pub fn set(&self, to: SystemTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Milliseconds since the epoch; times before it read as 0, times past `i64` saturate.
pub fn unix_ms(time: SystemTime) -> UnixMs {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whole seconds since the epoch (rounded down).
pub fn unix_secs(time: SystemTime) -> i64 {
    unix_ms(time) / 1000
}

/// The instant `ms` after the epoch (negative values read as the epoch).
pub fn from_unix_ms(ms: UnixMs) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The instant `secs` after the epoch (negative values read as the epoch).
pub fn from_unix_secs(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// RFC 3339 (`2024-05-01T12:00:00Z`) for a Unix second; empty when out of range.
pub fn iso8601(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// RFC 3339 for a stored millisecond timestamp, or `N/A` when there is none.
pub fn iso8601_ms(ms: Option<UnixMs>) -> String {
    ms.map(|m| iso8601(m.div_euclid(1000)))
        .unwrap_or_else(|| "N/A".into())
}

/// `YYYYMMDD` (UTC) of a Unix second; empty when out of range.
pub fn ymd(unix_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_secs)
        .map(|t| format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day()))
        .unwrap_or_default()
}

/// `base + by`, or `None` when it would overflow.
pub fn checked_add_ms(base: UnixMs, by: Duration) -> Option<UnixMs> {
    base.checked_add(i64::try_from(by.as_millis()).ok()?)
}

/// `base - by`, or `None` when it would overflow.
pub fn checked_sub_ms(base: UnixMs, by: Duration) -> Option<UnixMs> {
    base.checked_sub(i64::try_from(by.as_millis()).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip_and_saturate() {
        let t = from_unix_ms(1_700_000_000_123);
        assert_eq!(unix_ms(t), 1_700_000_000_123);
        assert_eq!(unix_secs(t), 1_700_000_000);
        assert_eq!(
            from_unix_secs(1_700_000_000),
            from_unix_ms(1_700_000_000_000)
        );
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(from_unix_ms(-5), UNIX_EPOCH);
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_ms(Some(1_500)), "1970-01-01T00:00:01Z");
        assert_eq!(iso8601_ms(None), "N/A");
        assert_eq!(iso8601(i64::MAX), "");
        assert_eq!(ymd(86_400 * 365), "19710101");
        assert_eq!(checked_add_ms(i64::MAX, Duration::from_millis(1)), None);
        assert_eq!(checked_sub_ms(i64::MIN, Duration::from_millis(1)), None);
        assert_eq!(checked_sub_ms(0, Duration::from_secs(u64::MAX)), None);
        assert_eq!(checked_add_ms(1, Duration::from_millis(2)), Some(3));
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(from_unix_secs(100));
        assert_eq!(unix_secs(clock.now()), 100);
        clock.advance(Duration::from_secs(5));
        assert_eq!(unix_secs(clock.now()), 105);
        clock.set(from_unix_secs(7));
        assert_eq!(unix_secs(clock.now()), 7);
    }
}
