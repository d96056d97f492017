//! Which countries a Region's workloads serve, and how: read from the Country objects, the
//! same way in `meridian dev` (its reconciled state) and in a cluster (`meridian booking
//! --region`, watching the API server).

use meridian_crds::Country;
use meridian_crds::serving::{bound_to, serving};

use crate::http::CountryEntry;

/// The countries bound to `region`, except those being deleted and those refused because
/// an older Country holds their code (they must never answer for it).
pub fn entries<'a>(countries: impl IntoIterator<Item = &'a Country>, region: &str) -> Vec<CountryEntry> {
    bound_to(countries, region).into_iter().filter_map(entry).collect()
}

/// A country's entry in its Region's service table, served as [`serving`] says.
fn entry(country: &Country) -> Option<CountryEntry> {
    Some(CountryEntry {
        code: country.spec.code.clone(),
        timezone: country.spec.timezone.parse().ok()?,
        serving: serving(country),
        reassignment: country.spec.features.reassignment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Serving;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use meridian_crds::CountryStatus;
    use meridian_crds::condition_types::READY;

    fn example(code: &str) -> Country {
        let path = format!("{}/../../examples/countries/{code}.yaml", env!("CARGO_MANIFEST_DIR"));
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn with_ready(mut country: Country, ready: bool) -> Country {
        let (status, reason, message) = if ready {
            ("True", "Reconciled", "all steps done")
        } else {
            ("False", "DatabaseUnreachable", "eu-central-1 does not answer")
        };
        country.status = Some(CountryStatus {
            conditions: vec![Condition {
                type_: READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: message.into(),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
            }],
            ..Default::default()
        });
        country
    }

    #[test]
    fn a_region_serves_its_own_countries_as_their_status_says() {
        let de = with_ready(example("de"), true);
        let fr = with_ready(example("fr"), true);
        let mut gb = with_ready(example("gb"), false);
        gb.spec.region = de.spec.region.clone();
        let mut it = with_ready(example("it"), true);
        it.spec.region = de.spec.region.clone();
        it.spec.suspend = true;
        let mut es = with_ready(example("es"), true);
        es.spec.region = de.spec.region.clone();
        es.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        // A newer Country with Germany's code on the same Region is refused: never served.
        let mut dupe = with_ready(example("de"), false);
        dupe.metadata.name = Some("de-test".into());
        dupe.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let served = entries([&dupe, &de, &fr, &gb, &it, &es], "eu-central-1");
        let table: Vec<(&str, &Serving)> = served.iter().map(|e| (e.code.as_str(), &e.serving)).collect();
        assert_eq!(
            table,
            [
                ("DE", &Serving::Ready),
                ("GB", &Serving::Unavailable),
                ("IT", &Serving::Suspended),
            ]
        );
        assert_eq!(served[0].timezone, chrono_tz::Europe::Berlin);
        assert!(
            served[0].reassignment && !served[2].reassignment,
            "IT switches re-assignment off"
        );
    }

    #[test]
    fn a_country_whose_database_is_out_of_reach_is_unavailable_not_unknown() {
        let failed = |reason: &str| {
            let mut country = with_ready(example("de"), false);
            let ready = &mut country.status.as_mut().unwrap().conditions[0];
            ready.reason = reason.into();
            ready.message = "why".into();
            entries([&country], "eu-central-1").remove(0).serving
        };
        assert_eq!(failed("RegionNotReady"), Serving::Unavailable);
        assert_eq!(failed("DatabaseUnreachable"), Serving::Unavailable);
        assert_eq!(
            failed("ResidencyViolation"),
            Serving::NotReady("ResidencyViolation: why".into())
        );
    }
}
