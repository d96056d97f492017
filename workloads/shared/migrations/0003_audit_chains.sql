-- The audit trail is hash-chained: every record carries the hash of the one before it in
-- its chain, so a changed or removed record breaks every hash after it. One chain per
-- country would make every write in a country wait for the previous one to commit; a
-- country's records are spread over a few chains (picked from the resource), each
-- verifiable on its own. audit_heads holds the latest hash of each chain, and its row lock
-- is what orders appends within a chain.
ALTER TABLE audit ADD COLUMN chain smallint NOT NULL DEFAULT 0;

CREATE TABLE audit_heads (
    country_code  text     NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    chain         smallint NOT NULL,
    prev_hash     bytea,
    hash          bytea    NOT NULL,
    PRIMARY KEY (country_code, chain)
) PARTITION BY LIST (country_code);
