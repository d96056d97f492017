//! Every metric the Grafana dashboard (`charts/meridian-operator/dashboards/meridian.json`)
//! and the chart's PrometheusRule query is one the code exports: the names are read out of
//! each PromQL expression and looked up in the real expositions of every registry — the
//! operator's ([`Metrics`]) and the workloads' ([`meridian_shared::metrics`]) — after each
//! family has been given a series. Renaming a metric fails here, not on a dark dashboard.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use meridian_operator::metrics::Metrics;
use meridian_shared::metrics::{BookingOutcome, ConsumerError, tracked, workload};
use serde_json::Value;
use tower::ServiceExt;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/meridian-operator");

/// Words of PromQL that are not metric names: operators, modifiers, literals, and the
/// aggregations (followed by `by (...)` rather than `(` in `sum by (kind) (...)`).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names `expr` reads: identifiers that are not functions (followed by `(`),
/// keywords, label names (inside `{...}` or a `by (...)` list), range durations (`[...]`),
/// strings or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut label_list_next) = (0, false);
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    // Label values are strings; a `}` inside one does not close.
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            i += if chars[i] == '\\' { 2 } else { 1 };
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if label_list_next => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                label_list_next = false;
                i += 1;
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number (or a duration after `offset`): digits, letters, dots, signs.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if LABEL_LISTS.contains(&word.as_str()) {
                    // `group_left` may come without a list.
                    label_list_next = next == Some(&'(');
                } else if next == Some(&'(') || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    // A function or an aggregation (`sum (...)`), or a keyword.
                } else {
                    names.insert(word);
                }
            }
            '$' => {
                // A Grafana variable outside a range: `$__interval`, `${var}`.
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_{}".contains(chars[i])) {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The sample names the code exposes (`meridian_reconciles_total`, `..._bucket`, ...),
/// read from every registry after each family has a series.
async fn exported() -> BTreeSet<String> {
    let operator = Metrics::default();
    operator.observe("Country", Duration::from_millis(2), Some("DatabaseUnreachable"));
    operator.set_ready("Country", "de", true);
    operator.leader().set(1);

    let workloads = workload();
    let app = tracked(
        axum::Router::new().route("/{cc}/v1/x", axum::routing::get(|| async { "x" })),
        "dashboard-test",
    );
    let request = axum::http::Request::get("/DE/v1/x")
        .body(axum::body::Body::empty())
        .unwrap();
    app.oneshot(request).await.unwrap();
    workloads.booking("DE", BookingOutcome::Booked);
    workloads.fhir("DE", "Patient", "read", 200);
    workloads.relay_published("appointment-events", 1);
    workloads.relay_backlog(0.5, 1);
    let consumer = workloads.consumer("dashboard-test", "appointment-events");
    consumer.processed();
    consumer.error(ConsumerError::Retry);
    consumer.dead_lettered();

    let mut names = BTreeSet::new();
    for text in [operator.render(), workloads.render()] {
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// The metric names of `exprs` (each named by where it comes from) the code does not export.
async fn unexported(exprs: &[(String, String)]) -> Vec<String> {
    let exported = exported().await;
    let mut missing = Vec::new();
    for (place, expr) in exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr:?}");
        for name in names {
            if !exported.contains(&name) {
                missing.push(format!("{place}: {name} (in {expr:?})"));
            }
        }
    }
    missing
}

/// Every `expr` of the dashboard's panels (rows' nested panels too), with the panel's title.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((format!("panel {:?}", panel["title"]), expr.to_string()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Every `expr` of a PrometheusRule template: plain (`expr: ...`) or a block (`expr: |`),
/// with Helm's `{{ ... }}` replaced by a plain word (they only fill label values here).
fn rule_exprs(template: &str) -> Vec<(String, String)> {
    let helm = regex::Regex::new(r"\{\{.*?\}\}").unwrap();
    let lines: Vec<&str> = template.lines().collect();
    let mut out = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(at) = line.find("expr:") else { continue };
        let value = line[at + 5..].trim();
        let expr = if value.starts_with('|') || value.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            value.trim_matches(|c| c == '"' || c == '\'').to_string()
        };
        out.push((
            format!("prometheusrule.yaml line {}", n + 1),
            helm.replace_all(&expr, "helm").into_owned(),
        ));
    }
    out
}

#[test]
fn the_tokenizer_finds_metrics_and_nothing_else() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (service, le) (rate(meridian_http_request_duration_seconds_bucket{route=~"/{cc}.*"}[$__rate_interval])))"#
        ),
        ["meridian_http_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names(r#"sum(meridian_leader{namespace="x"}) < 1 or absent(meridian_leader{namespace="x"})"#),
        ["meridian_leader"]
    );
    assert_eq!(
        names("sum by (service) (rate(a_total[5m])) / on (service) group_left sum(b offset 1h)"),
        ["a_total", "b"]
    );
    assert_eq!(
        names("max by (name) (meridian_ready{kind=\"Country\"}) == 0"),
        ["meridian_ready"]
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let path = Path::new(CHART).join("dashboards/meridian.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // The data source is the `${datasource}` variable, of type prometheus, everywhere.
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus")
    );
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let missing = unexported(&exprs).await;
    assert!(missing.is_empty(), "queried but not exported:\n{}", missing.join("\n"));
}

#[tokio::test]
async fn every_metric_the_alerts_query_is_exported() {
    let rule = Path::new(CHART).join("templates/prometheusrule.yaml");
    let exprs = rule_exprs(&std::fs::read_to_string(&rule).unwrap());
    assert_eq!(exprs.len(), 3, "the three alerts: {exprs:?}");
    let missing = unexported(&exprs).await;
    assert!(
        missing.is_empty(),
        "alerted on but not exported:\n{}",
        missing.join("\n")
    );
}

#[tokio::test]
async fn a_renamed_metric_is_caught() {
    let exprs = [("test".to_string(), "rate(meridian_reconcile_total[5m])".to_string())];
    assert_eq!(unexported(&exprs).await.len(), 1);
}
