//! FHIR `date`, `dateTime` and `instant` values as the time ranges they stand for: `2024`
//! is all of 2024, `2024-03-05` that day (in UTC: a date has no zone), a full timestamp the
//! instant. Search compares ranges, as FHIR's search page says dates are compared.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// `[start, end)` of a FHIR date or dateTime, or None when the value is not one.
pub fn range(value: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let day = |y: i32, m: u32, d: u32| NaiveDate::from_ymd_opt(y, m, d);
    let midnight = |date: NaiveDate| Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match value.len() {
        4 if digits(value) => {
            let y = value.parse().ok()?;
            Some((midnight(day(y, 1, 1)?), midnight(day(y + 1, 1, 1)?)))
        }
        7 if digits(&value[..4]) && &value[4..5] == "-" && digits(&value[5..]) => {
            let (y, m): (i32, u32) = (value[..4].parse().ok()?, value[5..].parse().ok()?);
            let start = day(y, m, 1)?;
            let end = if m == 12 { day(y + 1, 1, 1)? } else { day(y, m + 1, 1)? };
            Some((midnight(start), midnight(end)))
        }
        10 => {
            let date = NaiveDate::parse_from_str(value, "%Y-%m-%d").ok()?;
            // chrono accepts a one-digit month or day; FHIR does not.
            (date.format("%Y-%m-%d").to_string() == value).then_some(())?;
            Some((midnight(date), midnight(date.succ_opt()?)))
        }
        _ => {
            let instant = DateTime::parse_from_rfc3339(value).ok()?.with_timezone(&Utc);
            // FHIR's dateTime needs the seconds and a zone, as RFC 3339 does.
            (value.len() >= 20).then_some(())?;
            Some((instant, instant + chrono::Duration::microseconds(1)))
        }
    }
}

/// Whether `value` is a valid FHIR `date` (year, year-month or full date, no time).
pub fn is_date(value: &str) -> bool {
    value.len() <= 10 && range(value).is_some()
}

/// Whether `value` is a valid FHIR `dateTime` (a date, or a full time with a zone).
pub fn is_date_time(value: &str) -> bool {
    range(value).is_some()
}

/// Whether `value` is a valid FHIR `instant` (a full time with a zone).
pub fn is_instant(value: &str) -> bool {
    value.len() > 10 && range(value).is_some()
}

/// Age in whole years on `today` of someone born on `birth` (a FHIR date of any precision:
/// the earliest day it allows, so a partial date never makes someone seem older).
pub fn age_on(birth: &str, today: NaiveDate) -> Option<u32> {
    let (start, _) = range(birth)?;
    let born = start.date_naive();
    let mut age = today.year() - born.year();
    if (today.month(), today.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    u32::try_from(age).ok()
}

/// An instant as FHIR writes it: UTC, milliseconds.
pub fn instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_ranges_at_their_precision() {
        let (s, e) = range("2024").unwrap();
        assert_eq!(
            (s.to_rfc3339(), e.to_rfc3339()),
            ("2024-01-01T00:00:00+00:00".into(), "2025-01-01T00:00:00+00:00".into())
        );
        let (s, e) = range("2024-02").unwrap();
        assert_eq!((s.day(), e.month()), (1, 3));
        assert!(range("2024-02-30").is_none());
        assert!(range("2024-13").is_none());
        assert!(range("2024-2-03").is_none());
        let (s, _) = range("2024-03-05T10:00:00+01:00").unwrap();
        assert_eq!(s.to_rfc3339(), "2024-03-05T09:00:00+00:00");
        assert!(range("2024-03-05T10:00").is_none());
        assert!(is_date("1980-04-12") && !is_date("1980-04-12T10:00:00Z"));
        assert!(is_instant("2024-03-05T10:00:00.123Z") && !is_instant("2024-03-05"));
    }

    #[test]
    fn age_counts_whole_years() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 29).unwrap();
        assert_eq!(age_on("2010-11-30", today), Some(15));
        assert_eq!(age_on("2010-11-29", today), Some(16));
        assert_eq!(age_on("2010", today), Some(16));
        assert_eq!(age_on("2030-01-01", today), None);
    }
}
