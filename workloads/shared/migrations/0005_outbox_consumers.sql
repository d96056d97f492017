-- Where each outbox consumer (the search indexer, later the relay and others) has read up
-- to. No personal data: positions only.
CREATE TABLE outbox_consumers (
    consumer   text        PRIMARY KEY,
    position   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
