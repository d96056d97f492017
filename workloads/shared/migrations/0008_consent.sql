-- Records: the Consent resource, kept with the other clinical resources (a patient's
-- choice on sharing their records across borders is read before every disclosure).
ALTER TABLE fhir_resources DROP CONSTRAINT fhir_resources_resource_type_check;
ALTER TABLE fhir_resources ADD CONSTRAINT fhir_resources_resource_type_check
    CHECK (resource_type IN ('Encounter', 'Observation', 'MedicationRequest', 'Consent'));

-- Partitions detached and kept (a Country deleted with Retain) get the same rule, so that
-- they can be attached again when the country returns (PostgreSQL attaches a table only
-- when its check constraints are the parent's).
DO $$
DECLARE
    detached regclass;
BEGIN
    FOR detached IN
        SELECT c.oid::regclass FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
           AND c.relname ~ '^fhir_resources_[a-z]{2}$'
           AND EXISTS (SELECT 1 FROM pg_constraint k
                        WHERE k.conrelid = c.oid AND k.conname = 'fhir_resources_resource_type_check')
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT fhir_resources_resource_type_check', detached);
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT fhir_resources_resource_type_check
            CHECK (resource_type IN (''Encounter'', ''Observation'', ''MedicationRequest'', ''Consent''))', detached);
    END LOOP;
END
$$;
