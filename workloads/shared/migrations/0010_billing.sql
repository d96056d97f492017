-- Billing: an invoice per booked appointment and a credit note per cancellation, written by
-- the billing consumer from appointment events (in the same transaction as its inbox row).
-- Amounts are integers of the currency's minor unit (cents; yen), `minor_digits` saying how
-- many digits follow the point. The patient is named by client ID only.
CREATE TABLE invoices (
    country_code    text          NOT NULL CHECK (country_code ~ '^[A-Z]{2}$'),
    number          bigint        NOT NULL CHECK (number > 0),
    kind            text          NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    appointment_id  uuid          NOT NULL,
    patient_id      text          NOT NULL,
    practitioner_id uuid          NOT NULL,
    currency        text          NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    minor_digits    smallint      NOT NULL CHECK (minor_digits BETWEEN 0 AND 4),
    net             bigint        NOT NULL,
    tax_rate        numeric(7,6)  NOT NULL CHECK (tax_rate >= 0 AND tax_rate < 1),
    tax             bigint        NOT NULL,
    total           bigint        NOT NULL CHECK (total = net + tax),
    -- A credit note's invoice.
    credits         bigint,
    event_id        uuid          NOT NULL,
    issued_at       timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (country_code, number),
    -- One invoice and at most one credit note per appointment.
    UNIQUE (country_code, appointment_id, kind)
) PARTITION BY LIST (country_code);
CREATE INDEX invoices_by_patient ON invoices (country_code, patient_id, number);

-- The last invoice number of each country. Taken by row lock in the transaction that
-- writes the invoice: a rollback gives the number back, so numbers are consecutive with no
-- gaps however many consumers write at once.
CREATE TABLE invoice_numbers (
    country_code text   PRIMARY KEY CHECK (country_code ~ '^[A-Z]{2}$'),
    last         bigint NOT NULL
);
