-- Double booking is refused by the database itself: exclusion constraints over a
-- practitioner's (and a patient's) booked time ranges. PostgreSQL 15 cannot put an
-- exclusion constraint on a partitioned table, so the control plane adds it to each
-- country's appointments partition (see schema::partition_constraints); this migration
-- brings the operator class it needs for equality on uuid and text inside GiST.
CREATE EXTENSION IF NOT EXISTS btree_gist;
