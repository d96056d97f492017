-- Records: FHIR R4 resources of the records service, and the PII vault.
--
-- Clinical resources (Encounter, Observation, MedicationRequest) refer to patients only by
-- a random client ID, which is also the Patient's FHIR id. A Patient's identifying
-- elements live only in schema `vault`, sealed (AES-256-GCM) under the country's data key;
-- the clinical (workload) role has no privilege there at all. Everything is LIST-partitioned
-- by country like the rest of the platform schema.

-- One row per patient known in a country: the client ID and, when the patient has an
-- account, the account's token subject (the identity provider's opaque user ID), which the
-- workloads map to the client ID. No identifying element of the person.
CREATE TABLE patients (
    country_code  text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    client_id     uuid        NOT NULL,
    subject       text,
    -- The Patient resource's version in the vault, NULL while there is none (a patient
    -- who booked before a clinic recorded them); deleted_at once it was deleted.
    version       bigint,
    deleted_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (country_code, client_id),
    UNIQUE (country_code, subject)
) PARTITION BY LIST (country_code);

-- The current version of each clinical resource, with the values its search parameters
-- match on pulled out of `content` when it is written.
CREATE TABLE fhir_resources (
    country_code   text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    resource_type  text        NOT NULL CHECK (resource_type IN ('Encounter', 'Observation', 'MedicationRequest')),
    id             uuid        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    last_updated   timestamptz NOT NULL,
    -- A deleted resource answers 410 and is kept until retain_until (the Country's
    -- regulatory.retentionYears after its deletion).
    deleted_at     timestamptz,
    retain_until   timestamptz,
    patient        uuid,
    identifiers    text[]      NOT NULL DEFAULT '{}',
    status         text,
    class          text,
    intent         text,
    codes          text[]      NOT NULL DEFAULT '{}',
    categories     text[]      NOT NULL DEFAULT '{}',
    date_start     timestamptz,
    date_end       timestamptz,
    quantity       numeric,
    content        jsonb       NOT NULL,
    PRIMARY KEY (country_code, resource_type, id)
) PARTITION BY LIST (country_code);

CREATE INDEX fhir_resources_by_patient ON fhir_resources (country_code, patient, resource_type);
CREATE INDEX fhir_resources_by_date ON fhir_resources (country_code, resource_type, date_start);
CREATE INDEX fhir_resources_by_update ON fhir_resources (country_code, resource_type, last_updated, id);
CREATE INDEX fhir_resources_codes ON fhir_resources USING gin (codes);
CREATE INDEX fhir_resources_identifiers ON fhir_resources USING gin (identifiers);

-- Every version of every clinical resource (vread, _history); a deletion is a version
-- without content.
CREATE TABLE fhir_history (
    country_code   text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    resource_type  text        NOT NULL,
    id             uuid        NOT NULL,
    version        bigint      NOT NULL,
    last_updated   timestamptz NOT NULL,
    method         text        NOT NULL CHECK (method IN ('POST', 'PUT', 'DELETE')),
    content        jsonb,
    PRIMARY KEY (country_code, resource_type, id, version)
) PARTITION BY LIST (country_code);

CREATE SCHEMA vault;

-- The current version of each Patient, sealed whole: `sealed` is the AES-256-GCM nonce
-- followed by the ciphertext of the resource's JSON, under the country's data key `key_id`.
-- `search` holds keyed hashes (HMAC-SHA-256 under a key derived from the data key) of the
-- values Patient search matches on, so that search needs no decryption and the table no
-- plaintext.
CREATE TABLE vault.patients (
    country_code   text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    client_id      uuid        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    last_updated   timestamptz NOT NULL,
    deleted_at     timestamptz,
    retain_until   timestamptz,
    key_id         text        NOT NULL,
    sealed         bytea       NOT NULL,
    search         text[]      NOT NULL DEFAULT '{}',
    PRIMARY KEY (country_code, client_id)
) PARTITION BY LIST (country_code);

CREATE INDEX patients_search ON vault.patients USING gin (search);

CREATE TABLE vault.patient_history (
    country_code   text        NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    client_id      uuid        NOT NULL,
    version        bigint      NOT NULL,
    last_updated   timestamptz NOT NULL,
    method         text        NOT NULL CHECK (method IN ('POST', 'PUT', 'DELETE')),
    key_id         text,
    sealed         bytea,
    PRIMARY KEY (country_code, client_id, version)
) PARTITION BY LIST (country_code);
