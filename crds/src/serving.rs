//! Whether a Country's workloads answer requests, read from the Country object the same way
//! by every workload (booking, records) in `meridian dev` and in a cluster.

use crate::Country;
use crate::condition_types::READY;

/// Whether a country answers requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    Ready,
    /// Known but not Ready: the reason, as its `Ready` condition says.
    NotReady(String),
    /// Known, but its stores cannot be reached now (its Region's database is down or
    /// restarting): `503`, to be tried again shortly.
    Unavailable,
    Suspended,
}

/// `Ready=False` reasons that mean the country's database is out of reach for now (its
/// Region's server is down or restarting), not that the country cannot be served.
const STORE_DOWN: [&str; 2] = ["RegionNotReady", "DatabaseUnreachable"];

/// The Countries bound to `region` that a workload there serves: not being deleted, and
/// not refused because an older Country holds their code (they must never answer for it).
pub fn bound_to<'a>(countries: impl IntoIterator<Item = &'a Country>, region: &str) -> Vec<&'a Country> {
    let all: Vec<&Country> = countries.into_iter().collect();
    all.iter()
        .copied()
        .filter(|c| c.spec.region == region && c.metadata.deletion_timestamp.is_none())
        .filter(|c| std::ptr::eq(crate::code_holder(c, all.iter().copied()), *c))
        .collect()
}

/// How a Country is served: Ready ones serve; suspended ones, and those whose Region's
/// database is out of reach for now, answer 503; the others 404 with the reason their
/// `Ready` condition gives.
pub fn serving(country: &Country) -> Serving {
    let ready = country
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    if country.spec.suspend {
        Serving::Suspended
    } else if ready.is_some_and(|c| c.status == "True") {
        Serving::Ready
    } else if ready.is_some_and(|c| STORE_DOWN.contains(&c.reason.as_str())) {
        Serving::Unavailable
    } else {
        let why = ready.map_or("not reconciled yet".into(), |c| format!("{}: {}", c.reason, c.message));
        Serving::NotReady(why)
    }
}

/// Watches the cluster's Country objects and calls `changed` with all of them after every
/// change, until the watch ends (never, in practice: it retries with backoff). A workload
/// deployed in a Region follows its countries this way: one starts answering when it
/// becomes Ready and stops when it is suspended or deleted.
pub async fn follow_countries(client: kube::Client, mut changed: impl FnMut(&[&Country])) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (reader, writer) = reflector::store::<Country>();
    let stream = watcher(kube::Api::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(_) => {
                let state = reader.state();
                let countries: Vec<&Country> = state.iter().map(|c| &**c).collect();
                changed(&countries);
            }
            Err(e) => tracing::warn!(error = %e, "watching Country objects"),
        }
    }
}
