//! Free slots of one practitioner over a date range.
//!
//! Availability is written the way practices think about it: wall-clock hours in the
//! country's time zone ("Mondays 09:00–12:00, 30-minute slots"). Each day's window is
//! turned into real instants first, and slots are cut from that real span, so every slot
//! lasts exactly its length even on the days the clocks change: a 01:00–04:00 window is
//! two real hours on the spring-forward night and four on the fall-back night. A boundary
//! that falls into the skipped hour moves to the end of the gap; one that falls into the
//! repeated hour means its first occurrence.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday};
use chrono::{Datelike, LocalResult};
use chrono_tz::Tz;

/// A recurring weekly window, e.g. Mondays 09:00–12:00 in 30-minute slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeeklyRule {
    pub weekday: Weekday,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub slot_minutes: u32,
    /// First date the rule applies (inclusive).
    pub valid_from: Option<NaiveDate>,
    /// Last date the rule applies (inclusive).
    pub valid_until: Option<NaiveDate>,
}

/// A one-off window on one date, in addition to the weekly rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraWindow {
    pub date: NaiveDate,
    pub start: NaiveTime,
    pub end: NaiveTime,
    pub slot_minutes: u32,
}

/// A span of real time: time off, or an appointment already booked. Half-open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Interval {
    fn overlaps(&self, other: &Interval) -> bool {
        self.start < other.end && other.start < self.end
    }
}

/// A practitioner's availability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Availability {
    pub weekly: Vec<WeeklyRule>,
    pub extra: Vec<ExtraWindow>,
    pub time_off: Vec<Interval>,
}

/// One free slot, in UTC and in the country's local time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub local_start: DateTime<Tz>,
    pub local_end: DateTime<Tz>,
}

/// Free slots from `from` to `until` (both inclusive, local dates), excluding time off and
/// the `booked` intervals, in start order without duplicates.
pub fn free_slots(
    tz: Tz,
    availability: &Availability,
    booked: &[Interval],
    from: NaiveDate,
    until: NaiveDate,
) -> Vec<Slot> {
    let mut slots = Vec::new();
    for date in from.iter_days().take_while(|d| *d <= until) {
        let weekly = availability
            .weekly
            .iter()
            .filter(|r| applies(r, date))
            .map(|r| (r.start, r.end, r.slot_minutes));
        let extra = availability
            .extra
            .iter()
            .filter(|w| w.date == date)
            .map(|w| (w.start, w.end, w.slot_minutes));
        for (start, end, minutes) in weekly.chain(extra) {
            if minutes == 0 || end <= start {
                continue;
            }
            let span = Interval {
                start: instant(tz, date.and_time(start)),
                end: instant(tz, date.and_time(end)),
            };
            let length = Duration::minutes(i64::from(minutes));
            let mut at = span.start;
            while at + length <= span.end {
                let slot = Interval {
                    start: at,
                    end: at + length,
                };
                let blocked = availability.time_off.iter().chain(booked).any(|b| b.overlaps(&slot));
                if !blocked {
                    slots.push(Slot {
                        start: slot.start,
                        end: slot.end,
                        local_start: slot.start.with_timezone(&tz),
                        local_end: slot.end.with_timezone(&tz),
                    });
                }
                at += length;
            }
        }
    }
    slots.sort_by_key(|s| (s.start, s.end));
    slots.dedup_by_key(|s| (s.start, s.end));
    slots
}

fn applies(rule: &WeeklyRule, date: NaiveDate) -> bool {
    date.weekday() == rule.weekday
        && rule.valid_from.is_none_or(|from| date >= from)
        && rule.valid_until.is_none_or(|until| date <= until)
}

/// The real instant of a wall-clock time: the first occurrence when the clock shows it
/// twice, the end of the gap when the clock skips it.
pub fn instant(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Walk from a moment well before the gap to the first instant whose wall
            // clock has reached `local`: that is where the gap ends.
            let before = (1..=24)
                .find_map(|h| tz.from_local_datetime(&(local - Duration::hours(h))).earliest())
                .expect("a time-zone gap lasts less than a day")
                .with_timezone(&Utc);
            let mut at = before;
            while at.with_timezone(&tz).naive_local() < local {
                at += Duration::minutes(1);
            }
            at
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::{Berlin, London};

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn weekly(weekday: Weekday, start: NaiveTime, end: NaiveTime, slot_minutes: u32) -> Availability {
        Availability {
            weekly: vec![WeeklyRule {
                weekday,
                start,
                end,
                slot_minutes,
                valid_from: None,
                valid_until: None,
            }],
            ..Default::default()
        }
    }

    fn starts(slots: &[Slot]) -> Vec<String> {
        slots
            .iter()
            .map(|s| s.start.format("%Y-%m-%dT%H:%MZ").to_string())
            .collect()
    }

    #[test]
    fn weekly_hours_are_local_time_and_follow_the_seasons() {
        let monday_mornings = weekly(Weekday::Mon, t(9, 0), t(10, 0), 30);
        // 23 March: CET (UTC+1); 30 March: CEST (UTC+2), the day after the change.
        let slots = free_slots(Berlin, &monday_mornings, &[], d(2026, 3, 23), d(2026, 3, 30));
        assert_eq!(
            starts(&slots),
            [
                "2026-03-23T08:00Z",
                "2026-03-23T08:30Z",
                "2026-03-30T07:00Z",
                "2026-03-30T07:30Z"
            ]
        );
        assert_eq!(slots[2].local_start.format("%H:%M %:z").to_string(), "09:00 +02:00");
    }

    #[test]
    fn the_skipped_hour_yields_no_slots_and_slots_keep_their_length() {
        // 29 March 2026, 02:00 CET jumps to 03:00 CEST: a 01:00–04:00 window is 2 real hours.
        let night = weekly(Weekday::Sun, t(1, 0), t(4, 0), 30);
        let slots = free_slots(Berlin, &night, &[], d(2026, 3, 29), d(2026, 3, 29));
        assert_eq!(
            starts(&slots),
            [
                "2026-03-29T00:00Z",
                "2026-03-29T00:30Z",
                "2026-03-29T01:00Z",
                "2026-03-29T01:30Z"
            ]
        );
        let local: Vec<String> = slots
            .iter()
            .map(|s| s.local_start.format("%H:%M").to_string())
            .collect();
        assert_eq!(local, ["01:00", "01:30", "03:00", "03:30"]);
        assert!(slots.iter().all(|s| s.end - s.start == Duration::minutes(30)));
    }

    #[test]
    fn the_repeated_hour_is_worked_twice() {
        // 25 October 2026, 03:00 CEST falls back to 02:00 CET: 01:00–04:00 is 4 real hours.
        let night = weekly(Weekday::Sun, t(1, 0), t(4, 0), 60);
        let slots = free_slots(Berlin, &night, &[], d(2026, 10, 25), d(2026, 10, 25));
        assert_eq!(
            starts(&slots),
            [
                "2026-10-24T23:00Z",
                "2026-10-25T00:00Z",
                "2026-10-25T01:00Z",
                "2026-10-25T02:00Z"
            ]
        );
        let local: Vec<String> = slots
            .iter()
            .map(|s| s.local_start.format("%H:%M%:z").to_string())
            .collect();
        assert_eq!(local, ["01:00+02:00", "02:00+02:00", "02:00+01:00", "03:00+01:00"]);
    }

    #[test]
    fn a_boundary_inside_the_gap_moves_to_its_end() {
        // London, 29 March 2026: 01:00 GMT jumps to 02:00 BST. 01:30 does not exist.
        assert_eq!(
            instant(London, d(2026, 3, 29).and_time(t(1, 30))),
            utc("2026-03-29T01:00:00Z")
        );
        let slots = free_slots(
            London,
            &weekly(Weekday::Sun, t(1, 30), t(3, 0), 30),
            &[],
            d(2026, 3, 29),
            d(2026, 3, 29),
        );
        assert_eq!(starts(&slots), ["2026-03-29T01:00Z", "2026-03-29T01:30Z"]);
    }

    #[test]
    fn time_off_and_bookings_remove_overlapping_slots_only() {
        let mut availability = weekly(Weekday::Tue, t(9, 0), t(11, 0), 30);
        availability.time_off.push(Interval {
            start: utc("2026-06-02T07:00:00Z"),
            end: utc("2026-06-02T07:45:00Z"),
        });
        let booked = [Interval {
            start: utc("2026-06-02T08:30:00Z"),
            end: utc("2026-06-02T09:00:00Z"),
        }];
        let slots = free_slots(Berlin, &availability, &booked, d(2026, 6, 2), d(2026, 6, 2));
        // 09:00 and 09:30 local are off (07:00–07:45Z), 10:30 local is booked.
        assert_eq!(starts(&slots), ["2026-06-02T08:00Z"]);
    }

    #[test]
    fn extra_windows_and_validity_ranges_are_honoured_and_overlaps_deduplicated() {
        let mut availability = weekly(Weekday::Wed, t(9, 0), t(10, 0), 30);
        availability.weekly[0].valid_until = Some(d(2026, 6, 3));
        availability.weekly.push(availability.weekly[0].clone());
        availability.extra.push(ExtraWindow {
            date: d(2026, 6, 13),
            start: t(8, 0),
            end: t(8, 30),
            slot_minutes: 30,
        });
        let slots = free_slots(Berlin, &availability, &[], d(2026, 6, 3), d(2026, 6, 13));
        assert_eq!(
            starts(&slots),
            ["2026-06-03T07:00Z", "2026-06-03T07:30Z", "2026-06-13T06:00Z"]
        );
    }
}
