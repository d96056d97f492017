-- The booking service keeps each practitioner's schedule (availability) in memory so that
-- a booking is one round trip. schedule_version says which schedule a replica read: every
-- availability change bumps it, and the booking statement books only while the
-- practitioner is still at the version the replica checked the slot against.
ALTER TABLE practitioners ADD COLUMN schedule_version bigint NOT NULL DEFAULT 1;

-- Loading a schedule, and re-assignment scanning colleagues, read by practitioner.
CREATE INDEX availability_by_practitioner ON availability (country_code, practitioner_id);
