-- Platform tables. Every table that holds country data is LIST-partitioned by
-- country_code; the control plane creates one partition per Country bound to
-- this Region's database (practitioners_de, appointments_de, ...). There is no
-- DEFAULT partition on purpose: a row for a country that is not launched in
-- this Region has nowhere to go and is refused.
--
-- No foreign keys between partitioned tables: a partition referenced through its
-- parent cannot be detached while rows point at it, and a deleted Country with
-- deletionPolicy Retain must detach every partition and keep the rows. Integrity
-- between a country's partitions is the workloads' job (or per-partition keys).

CREATE TABLE practitioners (
    country_code  text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    id            uuid        NOT NULL,
    external_id   text,
    given_name    text        NOT NULL,
    family_name   text        NOT NULL,
    specialty     text        NOT NULL,
    city          text        NOT NULL,
    languages     text[]      NOT NULL DEFAULT '{}',
    active        boolean     NOT NULL DEFAULT true,
    version       bigint      NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (country_code, id),
    UNIQUE (country_code, external_id)
) PARTITION BY LIST (country_code);

-- Weekly rules, one-off exceptions and time off, in the country's time zone.
CREATE TABLE availability (
    country_code    text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    id              uuid        NOT NULL,
    practitioner_id uuid        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('weekly', 'exception', 'time_off')),
    weekday         smallint    CHECK (weekday BETWEEN 1 AND 7),
    start_time      time,
    end_time        time,
    valid_from      date,
    valid_until     date,
    starts_at       timestamptz,
    ends_at         timestamptz,
    slot_minutes    integer     CHECK (slot_minutes > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (country_code, id)
) PARTITION BY LIST (country_code);

-- Reason for visit only: clinical notes belong to the records service.
CREATE TABLE appointments (
    country_code     text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    id               uuid        NOT NULL,
    practitioner_id  uuid        NOT NULL,
    patient_id       text        NOT NULL,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    status           text        NOT NULL CHECK (status IN ('booked', 'cancelled', 'needs_rebooking', 'completed')),
    reason           text,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    PRIMARY KEY (country_code, id),
    UNIQUE (country_code, idempotency_key)
) PARTITION BY LIST (country_code);

-- Transactional outbox: written in the same transaction as the change it describes.
CREATE TABLE outbox (
    country_code  text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    id            bigint      GENERATED ALWAYS AS IDENTITY,
    topic         text        NOT NULL,
    event_type    text        NOT NULL,
    aggregate_id  uuid        NOT NULL,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    PRIMARY KEY (country_code, id)
) PARTITION BY LIST (country_code);

-- Append-only, hash-chained audit trail of every access to personal data.
CREATE TABLE audit (
    country_code    text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor           text        NOT NULL,
    action          text        NOT NULL,
    resource        text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    prev_hash       bytea,
    hash            bytea       NOT NULL,
    PRIMARY KEY (country_code, seq)
) PARTITION BY LIST (country_code);

CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only';
END
$$;

CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
