-- Records: the Consent resource, kept with the other clinical resources (a patient's
-- choice on sharing their records across borders is read before every disclosure).
ALTER TABLE fhir_resources DROP CONSTRAINT fhir_resources_resource_type_check;
ALTER TABLE fhir_resources ADD CONSTRAINT fhir_resources_resource_type_check
    CHECK (resource_type IN ('Encounter', 'Observation', 'MedicationRequest', 'Consent'));
