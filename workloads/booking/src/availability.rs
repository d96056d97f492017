//! A practitioner's availability as stored: weekly rules, extra windows on single dates,
//! and time off. Read back as [`slots::Availability`] for slot computation.

use chrono::{DateTime, NaiveDate, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::practitioners::{Actor, FieldError, PractitionerError};
use crate::slots::{self, ExtraWindow, Interval, WeeklyRule};

/// One entry as clients send and receive it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Entry {
    /// Every week on `weekday` (1 = Monday ... 7 = Sunday), local time.
    Weekly {
        weekday: u8,
        start: NaiveTime,
        end: NaiveTime,
        slot_minutes: u32,
        #[serde(default)]
        valid_from: Option<NaiveDate>,
        #[serde(default)]
        valid_until: Option<NaiveDate>,
    },
    /// Extra hours on one date, local time.
    Extra {
        date: NaiveDate,
        start: NaiveTime,
        end: NaiveTime,
        slot_minutes: u32,
    },
    /// Not available, in real time (holidays, sickness).
    TimeOff {
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    },
}

impl Entry {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut window = |start: &NaiveTime, end: &NaiveTime, minutes: u32| {
            if end <= start {
                errors.push(FieldError {
                    field: "end",
                    message: "must be after start".into(),
                });
            }
            if !(5..=480).contains(&minutes) {
                errors.push(FieldError {
                    field: "slotMinutes",
                    message: "must be between 5 and 480".into(),
                });
            }
        };
        match self {
            Entry::Weekly {
                weekday,
                start,
                end,
                slot_minutes,
                valid_from,
                valid_until,
            } => {
                window(start, end, *slot_minutes);
                if !(1..=7).contains(weekday) {
                    errors.push(FieldError {
                        field: "weekday",
                        message: "must be 1 (Monday) to 7 (Sunday)".into(),
                    });
                }
                if let (Some(from), Some(until)) = (valid_from, valid_until)
                    && until < from
                {
                    errors.push(FieldError {
                        field: "validUntil",
                        message: "must not be before validFrom".into(),
                    });
                }
            }
            Entry::Extra {
                start,
                end,
                slot_minutes,
                ..
            } => window(start, end, *slot_minutes),
            Entry::TimeOff { starts_at, ends_at } => {
                if ends_at <= starts_at {
                    errors.push(FieldError {
                        field: "endsAt",
                        message: "must be after startsAt".into(),
                    });
                }
            }
        }
        errors
    }
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Stored {
    pub id: Uuid,
    #[serde(flatten)]
    pub entry: Entry,
}

type Row = (
    Uuid,
    String,
    Option<i16>,
    Option<NaiveTime>,
    Option<NaiveTime>,
    Option<NaiveDate>,
    Option<NaiveDate>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<i32>,
);

/// Adds an entry for a practitioner of `country`.
pub async fn add(
    pool: &PgPool,
    country: &str,
    practitioner: Uuid,
    entry: &Entry,
    actor: Actor<'_>,
) -> Result<Stored, PractitionerError> {
    crate::practitioners::invalid(entry.validate())?;
    let mut tx = meridian_shared::pool::begin(pool).await?;
    // A new schedule version: bookings checked against the old one are refused (see
    // `schedules`). The row lock also orders concurrent changes of one schedule.
    let bumped = sqlx::query(
        "UPDATE practitioners SET schedule_version = schedule_version + 1 WHERE country_code = $1 AND id = $2",
    )
    .bind(country)
    .bind(practitioner)
    .execute(&mut *tx)
    .await?;
    if bumped.rows_affected() == 0 {
        return Err(PractitionerError::NotFound(practitioner));
    }
    let id = Uuid::new_v4();
    let (kind, weekday, start, end, from, until, starts_at, ends_at, minutes) = match entry {
        Entry::Weekly {
            weekday,
            start,
            end,
            slot_minutes,
            valid_from,
            valid_until,
        } => (
            "weekly",
            Some(i16::from(*weekday)),
            Some(*start),
            Some(*end),
            *valid_from,
            *valid_until,
            None,
            None,
            Some(*slot_minutes),
        ),
        Entry::Extra {
            date,
            start,
            end,
            slot_minutes,
        } => (
            "exception",
            None,
            Some(*start),
            Some(*end),
            Some(*date),
            Some(*date),
            None,
            None,
            Some(*slot_minutes),
        ),
        Entry::TimeOff { starts_at, ends_at } => (
            "time_off",
            None,
            None,
            None,
            None,
            None,
            Some(*starts_at),
            Some(*ends_at),
            None,
        ),
    };
    sqlx::query(
        "INSERT INTO availability (country_code, id, practitioner_id, kind, weekday, start_time, end_time,
                                   valid_from, valid_until, starts_at, ends_at, slot_minutes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(country)
    .bind(id)
    .bind(practitioner)
    .bind(kind)
    .bind(weekday)
    .bind(start)
    .bind(end)
    .bind(from)
    .bind(until)
    .bind(starts_at)
    .bind(ends_at)
    .bind(minutes.map(|m| m as i32))
    .execute(&mut *tx)
    .await?;
    let resource = format!("practitioner/{practitioner}/availability/{id}");
    actor.audit(&mut tx, country, "availability.add", &resource).await?;
    tx.commit().await?;
    Ok(Stored {
        id,
        entry: entry.clone(),
    })
}

/// Every entry of a practitioner.
pub async fn list(pool: &PgPool, country: &str, practitioner: Uuid) -> Result<Vec<Stored>, PractitionerError> {
    let mut conn = pool.acquire().await?;
    Ok(list_in(&mut conn, country, practitioner).await?)
}

/// [`list`] inside a transaction.
pub async fn list_in(
    conn: &mut sqlx::PgConnection,
    country: &str,
    practitioner: Uuid,
) -> Result<Vec<Stored>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, kind, weekday, start_time, end_time, valid_from, valid_until, starts_at, ends_at, slot_minutes
           FROM availability WHERE country_code = $1 AND practitioner_id = $2 ORDER BY created_at, id",
    )
    .bind(country)
    .bind(practitioner)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

fn from_row((id, kind, weekday, start, end, from, until, starts_at, ends_at, minutes): Row) -> Option<Stored> {
    let slot_minutes = minutes.map(|m| m as u32);
    let entry = match kind.as_str() {
        "weekly" => Entry::Weekly {
            weekday: weekday? as u8,
            start: start?,
            end: end?,
            slot_minutes: slot_minutes?,
            valid_from: from,
            valid_until: until,
        },
        "exception" => Entry::Extra {
            date: from?,
            start: start?,
            end: end?,
            slot_minutes: slot_minutes?,
        },
        "time_off" => Entry::TimeOff {
            starts_at: starts_at?,
            ends_at: ends_at?,
        },
        _ => return None,
    };
    Some(Stored { id, entry })
}

/// The entries in the shape slot computation takes.
pub fn for_slots(entries: &[Stored]) -> slots::Availability {
    let mut availability = slots::Availability::default();
    for stored in entries {
        match &stored.entry {
            Entry::Weekly {
                weekday,
                start,
                end,
                slot_minutes,
                valid_from,
                valid_until,
            } => availability.weekly.push(WeeklyRule {
                weekday: weekday_of(*weekday),
                start: *start,
                end: *end,
                slot_minutes: *slot_minutes,
                valid_from: *valid_from,
                valid_until: *valid_until,
            }),
            Entry::Extra {
                date,
                start,
                end,
                slot_minutes,
            } => availability.extra.push(ExtraWindow {
                date: *date,
                start: *start,
                end: *end,
                slot_minutes: *slot_minutes,
            }),
            Entry::TimeOff { starts_at, ends_at } => availability.time_off.push(Interval {
                start: *starts_at,
                end: *ends_at,
            }),
        }
    }
    availability
}

fn weekday_of(iso: u8) -> Weekday {
    Weekday::try_from(iso.saturating_sub(1)).unwrap_or(Weekday::Mon)
}
