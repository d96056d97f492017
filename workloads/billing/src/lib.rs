//! Billing: the billing consumer follows a Region's `appointment-events` and issues an
//! invoice per booked appointment and a credit note per cancellation, at the fee and tax
//! rate of the Country's `spec.billing`, in the Country's currency. Invoice numbers run per
//! country, consecutive and without gaps however many consumers write at once.

pub mod bench;
pub mod handler;
pub mod invoices;
pub mod rates;
pub mod serve;

pub use handler::BillingHandler;
pub use rates::{CountryRates, Rates};
