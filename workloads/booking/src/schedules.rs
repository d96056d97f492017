//! Practitioners' schedules, kept in the service's memory so that checking a booking's slot
//! costs no database round trip. Each schedule remembers the `schedule_version` it was read
//! at, and the booking statement books only while the practitioner is still active and at
//! that version: a replica holding a stale schedule is refused, reloads, and tries once
//! more. Correct with any number of replicas, without any invalidation message between them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{availability, slots};

/// Beyond this many cached schedules the cache starts again from empty: simple, and a
/// Region's working set of practitioners is far smaller.
const CAPACITY: usize = 100_000;

/// An active practitioner's availability, as of `version`.
pub struct Schedule {
    pub version: i64,
    pub availability: slots::Availability,
}

impl Schedule {
    /// The end of the slot that starts exactly at `start`, if the schedule offers one.
    /// Whether it is still free is the database's to decide (so that a lost race is a
    /// conflict, not a validation error).
    pub fn slot_end(&self, tz: Tz, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let day = start.with_timezone(&tz).date_naive();
        slots::free_slots(tz, &self.availability, &[], day, day)
            .iter()
            .find(|slot| slot.start == start)
            .map(|slot| slot.end)
    }
}

/// The cache, shared by every request of a service.
#[derive(Default)]
pub struct Schedules {
    cached: RwLock<HashMap<(String, Uuid), Arc<Schedule>>>,
}

impl Schedules {
    /// The schedule of `practitioner`, or `None` when it does not exist in `country` or
    /// takes no appointments.
    pub async fn get(
        &self,
        pool: &PgPool,
        country: &str,
        practitioner: Uuid,
    ) -> Result<Option<Arc<Schedule>>, sqlx::Error> {
        let key = (country.to_string(), practitioner);
        if let Some(found) = self.cached.read().expect("schedules lock").get(&key) {
            return Ok(Some(found.clone()));
        }
        // The version first, then the availability: a change in between leaves a newer
        // availability under an older version, which the booking statement refuses (safe);
        // the other order could pair an old availability with a new version.
        let version: Option<i64> = sqlx::query_scalar(
            "SELECT schedule_version FROM practitioners WHERE country_code = $1 AND id = $2 AND active",
        )
        .bind(country)
        .bind(practitioner)
        .fetch_optional(pool)
        .await?;
        let Some(version) = version else {
            return Ok(None);
        };
        let mut conn = pool.acquire().await?;
        let entries = availability::list_in(&mut conn, country, practitioner).await?;
        let schedule = Arc::new(Schedule {
            version,
            availability: availability::for_slots(&entries),
        });
        let mut cached = self.cached.write().expect("schedules lock");
        if cached.len() >= CAPACITY {
            cached.clear();
        }
        cached.insert(key, schedule.clone());
        Ok(Some(schedule))
    }

    /// Drops the cached schedule: this replica changed it, or the database refused it.
    pub fn forget(&self, country: &str, practitioner: Uuid) {
        self.cached
            .write()
            .expect("schedules lock")
            .remove(&(country.to_string(), practitioner));
    }
}
