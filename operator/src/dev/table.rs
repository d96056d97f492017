//! The live status table `meridian dev` prints.

use meridian_crds::condition_types::{
    DATABASE_READY, KEYS_READY, READY, RESIDENCY_COMPLIANT, ROUTES_READY, SEARCH_INDEX_READY,
};
use meridian_crds::{Country, PatientIndex, Region, Residency};

use crate::conditions;

/// One line per Region, then one per Country, then one per PatientIndex (if any).
pub fn render(regions: &[Region], countries: &[Country], indexes: &[PatientIndex]) -> String {
    let mut rows = vec![
        [
            "REGION",
            "PROVIDER",
            "ISOLATION",
            "DATABASE",
            "READY",
            "ENDPOINT / MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for region in regions {
        let conds = region
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let endpoint = region
            .status
            .as_ref()
            .and_then(|s| s.database_endpoint.clone())
            .unwrap_or_default();
        rows.push(vec![
            name(&region.metadata),
            json_name(&region.spec.provider),
            json_name(&region.spec.isolation),
            state(conds, DATABASE_READY),
            state(conds, READY),
            if conditions::is_true(conds, READY) {
                endpoint
            } else {
                message(conds)
            },
        ]);
    }
    let mut out = align(&rows);
    out.push('\n');
    let mut rows = vec![
        [
            "COUNTRY",
            "REGION",
            "RESIDENCY",
            "COMPLIANT",
            "DATABASE",
            "INDEX",
            "ROUTES",
            "READY",
            "MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for country in countries {
        let conds = country
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let deleting = if country.metadata.deletion_timestamp.is_some() {
            " (deleting)"
        } else {
            ""
        };
        rows.push(vec![
            format!("{}{deleting}", name(&country.metadata)),
            country.spec.region.clone(),
            match country.spec.residency {
                Residency::Strict => "strict".into(),
                Residency::Shared => "shared".into(),
            },
            state(conds, RESIDENCY_COMPLIANT),
            state(conds, DATABASE_READY),
            country
                .status
                .as_ref()
                .and_then(|s| s.index.clone())
                .unwrap_or_else(|| state(conds, SEARCH_INDEX_READY)),
            country
                .status
                .as_ref()
                .filter(|s| !s.routes.is_empty())
                .map_or_else(|| state(conds, ROUTES_READY), |s| s.routes.join(",")),
            state(conds, READY),
            if conditions::is_true(conds, READY) {
                String::new()
            } else {
                message(conds)
            },
        ]);
    }
    out.push_str(&align(&rows));
    if indexes.is_empty() {
        return out;
    }
    out.push('\n');
    let mut rows = vec![
        [
            "PATIENTINDEX",
            "REGION",
            "DATABASE",
            "KEYS",
            "KEY",
            "READY",
            "COUNTRIES / MESSAGE",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for index in indexes {
        let status = index.status.clone().unwrap_or_default();
        let conds = status.conditions.as_slice();
        rows.push(vec![
            name(&index.metadata),
            index.spec.region.clone(),
            state(conds, DATABASE_READY),
            state(conds, KEYS_READY),
            status.active_key_version.clone().unwrap_or_else(|| "-".into()),
            state(conds, READY),
            if conditions::is_true(conds, READY) {
                status.linked_countries.join(",")
            } else {
                message(conds)
            },
        ]);
    }
    out.push_str(&align(&rows));
    out
}

fn name(meta: &kube::api::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

fn json_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

fn state(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], type_: &str) -> String {
    conditions::find(conds, type_).map_or("-".into(), |c| c.status.clone())
}

/// The message of the Ready condition, which says why when it is not.
fn message(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    conditions::find(conds, READY).map_or("pending".into(), |c| format!("{}: {}", c.reason, c.message))
}

/// Rows as columns padded to their widest cell.
pub fn align(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            cells.join("  ").trim_end().to_string() + "\n"
        })
        .collect()
}
