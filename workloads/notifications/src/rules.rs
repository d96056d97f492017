//! What the notifications of each country served follow, from the Country objects (kept
//! current by whoever follows them: `meridian dev` or the service's watch) and the Region's
//! vault keys: a cheap, shared view, like billing's rates.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use chrono_tz::Tz;
use meridian_crds::Country;
use meridian_crds::serving::{Serving, bound_to, serving};
use meridian_records::keys::Keyring;

/// One country's rules for notices.
#[derive(Clone, Debug)]
pub struct CountryRules {
    pub code: String,
    /// Where appointment times are told in.
    pub timezone: Tz,
    /// `features.smsReminders`: notices go by SMS to patients with a phone.
    pub sms: bool,
    /// `regulatory.consent.reminders`: reminders need the patient's opt-in.
    pub reminders_need_opt_in: bool,
    /// Suspended: nothing is sent until it is resumed (notices wait).
    pub suspended: bool,
    /// The records service's rules, for reading the vault as it does.
    pub records: meridian_records::validate::Rules,
    /// The country's vault keys, or why they cannot be read.
    pub keys: Result<Keyring, String>,
}

impl CountryRules {
    /// The rules of `country`, with its keys from the Region's `vault-keys` entries.
    pub fn of(country: &Country, keys: &BTreeMap<String, String>) -> crate::Result<Self> {
        let spec = &country.spec;
        let timezone = spec.timezone.parse::<Tz>().map_err(|_| crate::Error::Country {
            country: spec.code.clone(),
            why: format!("timezone {:?} is not an IANA time zone", spec.timezone),
        })?;
        Ok(Self {
            code: spec.code.clone(),
            timezone,
            sms: spec.features.sms_reminders,
            reminders_need_opt_in: spec.regulatory.consent.reminders,
            suspended: serving(country) == Serving::Suspended,
            records: meridian_records::validate::Rules::of(spec),
            keys: Keyring::from_secret(keys, &spec.code).map_err(|e| e.to_string()),
        })
    }
}

/// The rules of every country served, shared between the consumer, the dispatcher and
/// whoever updates them.
#[derive(Clone, Default)]
pub struct Rules(Arc<RwLock<BTreeMap<String, Arc<CountryRules>>>>);

impl Rules {
    /// Replaces the rules of every country.
    pub fn set(&self, rules: impl IntoIterator<Item = CountryRules>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) =
            rules.into_iter().map(|r| (r.code.clone(), Arc::new(r))).collect();
    }

    pub fn get(&self, country: &str) -> Option<Arc<CountryRules>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(country).cloned()
    }

    /// The countries whose notices are sent now: served and not suspended.
    pub fn sending(&self) -> Vec<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| !r.suspended)
            .map(|r| r.code.clone())
            .collect()
    }
}

/// The rules of the Countries bound to `region` (see [`meridian_crds::serving::bound_to`]);
/// a Country whose rules cannot be read is left out and logged.
pub fn region_rules<'a>(
    countries: impl IntoIterator<Item = &'a Country>,
    region: &str,
    keys: &BTreeMap<String, String>,
) -> Vec<CountryRules> {
    bound_to(countries, region)
        .into_iter()
        .filter_map(|c| match CountryRules::of(c, keys) {
            Ok(rules) => Some(rules),
            Err(e) => {
                tracing::warn!(error = %e, "no notifications for this country");
                None
            }
        })
        .collect()
}
