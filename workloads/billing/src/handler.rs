//! The billing consumer's effect of an appointment event, in the transaction that records
//! the event in the inbox.

use meridian_events::consumer::{Failure, Handler, Incoming};
use meridian_shared::outbox::APPOINTMENT_EVENTS;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::rates::Rates;

/// Issues invoices and credit notes from `appointment-events`.
#[derive(Clone)]
pub struct BillingHandler {
    pub rates: Rates,
}

/// The fields of an appointment event the consumer reads.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Appointment {
    id: Uuid,
    practitioner_id: Uuid,
    patient_id: String,
}

impl Handler for BillingHandler {
    fn name(&self) -> &str {
        "billing"
    }

    fn topic(&self) -> &'static str {
        APPOINTMENT_EVENTS
    }

    async fn handle(&self, tx: &mut PgConnection, event: &Incoming) -> Result<(), Failure> {
        let credit = match event.event_type.as_str() {
            "appointment.booked" => false,
            "appointment.cancelled" => true,
            // Moves and re-assignments change what nobody is billed for.
            _ => return Ok(()),
        };
        let country = event.country_code.as_str();
        // A country without billing terms issues no invoices (its events are still recorded
        // as handled: terms added later do not bill the past).
        let rates = self.rates.get(country);
        if !credit && rates.is_none() {
            return Ok(());
        }
        let appointment: Appointment = serde_json::from_value(event.payload.clone())
            .map_err(|e| Failure::Event(format!("{} payload: {e}", event.event_type)))?;
        // The country's numbering, locked until this transaction ends: writers take turns,
        // what they find issued stays so, and a number is used only by the invoice written
        // with it.
        sqlx::query("INSERT INTO invoice_numbers (country_code, last) VALUES ($1, 0) ON CONFLICT DO NOTHING")
            .bind(country)
            .execute(&mut *tx)
            .await?;
        let last: i64 = sqlx::query_scalar("SELECT last FROM invoice_numbers WHERE country_code = $1 FOR UPDATE")
            .bind(country)
            .fetch_one(&mut *tx)
            .await?;
        let issued: Vec<Issued> = sqlx::query_as(
            "SELECT kind, number, currency, minor_digits, net, tax_rate::text, tax FROM invoices
              WHERE country_code = $1 AND appointment_id = $2",
        )
        .bind(country)
        .bind(appointment.id)
        .fetch_all(&mut *tx)
        .await?;
        let invoice = issued.iter().find(|i| i.kind == "invoice");
        let written = match (credit, invoice, rates) {
            // Booked again (a replay): invoiced already.
            (false, Some(_), _) => return Ok(()),
            (false, None, Some(rates)) => Issued {
                kind: "invoice".into(),
                number: last + 1,
                currency: rates.currency.clone(),
                minor_digits: rates.minor_digits as i16,
                net: rates.fee,
                tax_rate: rates.tax_rate.clone(),
                tax: meridian_shared::money::tax(rates.fee, rates.tax_micros),
            },
            (false, None, None) => return Ok(()),
            // Nothing invoiced, nothing to credit; credited already, nothing more.
            (true, None, _) => return Ok(()),
            (true, Some(_), _) if issued.iter().any(|i| i.kind == "credit_note") => return Ok(()),
            // The invoice's own terms, whatever the country's are now.
            (true, Some(invoice), _) => Issued {
                kind: "credit_note".into(),
                number: last + 1,
                net: -invoice.net,
                tax: -invoice.tax,
                ..invoice.clone()
            },
        };
        let credits = credit.then(|| invoice.map(|i| i.number)).flatten();
        sqlx::query(
            "INSERT INTO invoices (country_code, number, kind, appointment_id, patient_id, practitioner_id,
                                   currency, minor_digits, net, tax_rate, tax, total, credits, event_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::numeric, $11, $12, $13, $14)",
        )
        .bind(country)
        .bind(written.number)
        .bind(&written.kind)
        .bind(appointment.id)
        .bind(&appointment.patient_id)
        .bind(appointment.practitioner_id)
        .bind(&written.currency)
        .bind(written.minor_digits)
        .bind(written.net)
        .bind(&written.tax_rate)
        .bind(written.tax)
        .bind(written.net + written.tax)
        .bind(credits)
        .bind(event.event_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE invoice_numbers SET last = $2 WHERE country_code = $1")
            .bind(country)
            .bind(written.number)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// An invoice or credit note of an appointment, as far as writing the next one needs.
#[derive(Clone, Debug, sqlx::FromRow)]
struct Issued {
    kind: String,
    number: i64,
    currency: String,
    minor_digits: i16,
    net: i64,
    tax_rate: String,
    tax: i64,
}
