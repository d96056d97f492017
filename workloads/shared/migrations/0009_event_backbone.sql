-- The event backbone: the relay publishes every outbox row to the Region's Kafka with an
-- event ID (a header that consumers deduplicate on, stable however often the row is
-- published) and the correlation ID of the request that caused it.
--
-- A volatile default rewrites the table once, giving every existing row its own ID.
ALTER TABLE outbox ADD COLUMN event_id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE outbox ADD COLUMN correlation_id uuid;

-- Partitions detached by a Retain deletion get the columns too (see 0006).
DO $$
DECLARE detached regclass;
BEGIN
    FOR detached IN
        SELECT c.oid::regclass FROM pg_class c
         WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ '^outbox_[a-z]{2}$'
           AND c.relnamespace = current_schema()::regnamespace
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'aggregate_id')
    LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS event_id uuid NOT NULL DEFAULT gen_random_uuid()', detached);
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS correlation_id uuid', detached);
    END LOOP;
END $$;

-- What each consumer of the Region's topics has handled, written in the same transaction as
-- the consumer's effect: an event delivered again (the relay and Kafka deliver at least
-- once) finds its row and changes nothing. Event metadata only, no personal data.
CREATE TABLE inbox (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    topic       text        NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Events a consumer gave up on (and sent to `<topic>.dlq`): the same event delivered again
-- is passed over instead of failing and being dead-lettered twice; a replay (`meridian
-- events dlq replay`) is applied, and its row goes when it succeeds.
CREATE TABLE dead_letters (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    topic       text        NOT NULL,
    error       text        NOT NULL,
    attempts    integer     NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
