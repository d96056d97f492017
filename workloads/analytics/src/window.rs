//! One-minute event-time windows and the lateness they accept.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// How far behind the latest event time counted an event may be and still update its
/// minute.
pub const ALLOWED_LATENESS: TimeDelta = TimeDelta::minutes(5);

/// The minute `at` falls in (its start).
pub fn minute_of(at: DateTime<Utc>) -> DateTime<Utc> {
    // Truncating a timestamp far inside chrono's range to a minute cannot fail.
    at.duration_trunc(TimeDelta::minutes(1)).unwrap_or(at)
}

/// Whether an event of time `at` comes too late to be counted, the latest event time
/// counted being `watermark`.
pub fn too_late(at: DateTime<Utc>, watermark: DateTime<Utc>) -> bool {
    at < watermark - ALLOWED_LATENESS
}

/// The minutes that no event can change any more: those starting before this.
pub fn final_before(watermark: DateTime<Utc>) -> DateTime<Utc> {
    minute_of(watermark - ALLOWED_LATENESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn an_event_belongs_to_the_minute_it_happened_in() {
        assert_eq!(minute_of(t("2026-11-30T10:41:59.999Z")), t("2026-11-30T10:41:00Z"));
        assert_eq!(minute_of(t("2026-11-30T10:42:00Z")), t("2026-11-30T10:42:00Z"));
    }

    #[test]
    fn five_minutes_behind_is_still_counted_and_a_moment_more_is_not() {
        let watermark = t("2026-11-30T10:42:30Z");
        assert!(!too_late(t("2026-11-30T10:37:30Z"), watermark));
        assert!(too_late(t("2026-11-30T10:37:29.999Z"), watermark));
        assert!(!too_late(t("2026-11-30T10:50:00Z"), watermark));
        // 10:37 still takes events of 10:37:30 onwards: it is not final yet.
        assert_eq!(final_before(watermark), t("2026-11-30T10:37:00Z"));
    }
}
