-- Appointment analytics: how many appointments were booked, cancelled and re-assigned per
-- country and specialty in each minute of event time (when the booking committed, not when
-- the analytics consumer saw it). Written by the analytics consumer in the transaction of
-- its inbox row. Counts only: no patient, no practitioner.
CREATE TABLE appointment_minutes (
    country_code text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    minute       timestamptz NOT NULL,
    specialty    text        NOT NULL,
    booked       integer     NOT NULL DEFAULT 0 CHECK (booked >= 0),
    cancelled    integer     NOT NULL DEFAULT 0 CHECK (cancelled >= 0),
    reassigned   integer     NOT NULL DEFAULT 0 CHECK (reassigned >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (country_code, minute, specialty)
) PARTITION BY LIST (country_code);

-- The latest event time the analytics consumer has counted, per country. An event more than
-- the allowed lateness behind it is not counted (it goes to the dead letters): the minutes
-- before the watermark less the lateness are final.
CREATE TABLE analytics_watermarks (
    country_code text        PRIMARY KEY CHECK (country_code ~ '^[A-Z]{2}$'),
    watermark    timestamptz NOT NULL
);
