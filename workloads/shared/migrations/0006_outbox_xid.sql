-- Consumers read the outbox in commit order and never step over an event, however late its
-- transaction commits. IDs come from a sequence and say nothing about when a row became
-- visible; the writing transaction's ID does: a consumer keeps the snapshot (pg_snapshot) up
-- to which it has read, and reads next the rows whose transaction is visible in a newer
-- snapshot and was not in the old one (see meridian_shared::outbox::Follower).
--
-- Rows written before this migration have no xid: every transaction that wrote them has
-- ended (ALTER TABLE waits for them), so they count as visible in every snapshot.
ALTER TABLE outbox ADD COLUMN xid xid8;
ALTER TABLE outbox ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX outbox_by_xid ON outbox (xid);

-- A country's outbox partition detached by a Retain deletion gets the column too, so that
-- it can be attached again when the Country comes back.
DO $$
DECLARE detached regclass;
BEGIN
    FOR detached IN
        SELECT c.oid::regclass FROM pg_class c
         WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ '^outbox_[a-z]{2}$'
           AND c.relnamespace = current_schema()::regnamespace
           AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'aggregate_id')
    LOOP
        EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS xid xid8', detached);
    END LOOP;
END $$;

-- Where each consumer stands: every event whose transaction is visible in `snapshot` has
-- been handled. `position` (the highest outbox ID handled) is kept for people to read, and
-- for a consumer that has no snapshot yet: the pre-xid rows above it are still to be read.
ALTER TABLE outbox_consumers ADD COLUMN snapshot pg_snapshot;
