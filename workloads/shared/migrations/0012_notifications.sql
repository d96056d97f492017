-- Notifications: the notices the notifications consumer schedules from appointment events
-- (in the same transaction as its inbox row) and its dispatcher sends when due. A row names
-- the patient by client ID only: the address or phone a notice goes to is read from the
-- vault when it is sent and is never stored here, nor is any name or the appointment's
-- reason. `channel` is the one a notice went out on, decided when it is sent.
CREATE TABLE notifications (
    country_code   text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    id             uuid        NOT NULL,
    appointment_id uuid        NOT NULL,
    patient_id     text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('reassigned', 'needs_rebooking', 'reminder')),
    -- When the appointment starts (as the event said): what the notice tells.
    starts_at      timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    status         text        NOT NULL DEFAULT 'pending'
                               CHECK (status IN ('pending', 'sent', 'held', 'cancelled', 'failed')),
    channel        text        CHECK (channel IN ('email', 'sms')),
    attempts       integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the dispatcher tries next: `due_at`, later after a failed attempt.
    next_at        timestamptz NOT NULL,
    last_error     text,
    event_id       uuid        NOT NULL,
    correlation_id uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    sent_at        timestamptz,
    PRIMARY KEY (country_code, id),
    -- One notice of a kind per appointment and due time: an event delivered again, or
    -- replayed, schedules nothing twice.
    UNIQUE (country_code, appointment_id, kind, due_at),
    CHECK ((status IN ('sent', 'held')) = (sent_at IS NOT NULL))
) PARTITION BY LIST (country_code);
-- What the dispatcher looks for: pending notices by when they are next tried.
CREATE INDEX notifications_next ON notifications (next_at) WHERE status = 'pending';
