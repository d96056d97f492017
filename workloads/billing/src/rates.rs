//! What an appointment costs in each country the consumer serves, from the Countries'
//! `spec.billing` (kept current by whoever follows the Countries: `meridian dev` or the
//! service's watch).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use meridian_shared::money;

/// One country's billing terms, in minor units.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountryRates {
    pub currency: String,
    pub minor_digits: u32,
    pub fee: i64,
    pub tax_micros: i64,
    /// The rate as the manifest wrote it (`0.19`), stored with each invoice.
    pub tax_rate: String,
}

impl CountryRates {
    /// The terms of a Country, if it has `spec.billing` (and it is valid: the admission
    /// checks say the same).
    pub fn of(spec: &meridian_crds::CountrySpec) -> Option<Result<Self, String>> {
        let billing = spec.billing.as_ref()?;
        Some((|| {
            Ok(Self {
                currency: spec.currency.clone(),
                minor_digits: money::minor_digits(&spec.currency),
                fee: money::parse_amount(&billing.appointment_fee, &spec.currency).map_err(|e| e.to_string())?,
                tax_micros: money::parse_rate(&billing.tax_rate).map_err(|e| e.to_string())?,
                tax_rate: billing.tax_rate.clone(),
            })
        })())
    }
}

/// The terms of every country served, shared between the consumer and whoever updates them.
#[derive(Clone, Default)]
pub struct Rates(Arc<RwLock<BTreeMap<String, CountryRates>>>);

impl Rates {
    /// Replaces the terms of every country.
    pub fn set(&self, rates: impl IntoIterator<Item = (String, CountryRates)>) {
        *self.0.write().expect("rates lock") = rates.into_iter().collect();
    }

    pub fn get(&self, country: &str) -> Option<CountryRates> {
        self.0.read().expect("rates lock").get(country).cloned()
    }
}

/// The terms of the Countries a consumer in `region` bills for: those bound to it (see
/// [`meridian_crds::serving::bound_to`]) with valid `spec.billing`.
pub fn region_rates<'a>(
    countries: impl IntoIterator<Item = &'a meridian_crds::Country>,
    region: &str,
) -> Vec<(String, CountryRates)> {
    meridian_crds::serving::bound_to(countries, region)
        .into_iter()
        .filter_map(|c| Some((c.spec.code.clone(), CountryRates::of(&c.spec)?.ok()?)))
        .collect()
}
