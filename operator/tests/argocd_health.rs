//! The Argo CD health checks of `argocd/resource_customizations/<group>/<kind>/health.lua`,
//! run as Argo CD runs them, on the cases of each kind's `health_test.yaml` (the format of
//! Argo CD's own `resource_customizations/`, so the scripts can be proposed upstream).
//!
//! Argo CD runs a health script in gopher-lua, a Lua 5.1, with the object as the global
//! `obj`, and reads the table it returns as `{status, message}`. A script configured in
//! `argocd-cm` gets Lua's base, table, os and package libraries only (no `string`), so that
//! is what these scripts get here too. Besides the expected answers, these tests hold:
//! - every test object is one the API server would accept: the real CRD schema, unknown
//!   fields refused at every depth, status included (what `meridian dev` checks manifests
//!   with), so a case cannot invent a field or a shape the operator never writes;
//! - every file in a `testdata/` folder is a case, and each Meridian kind has a case of every
//!   health its script can answer;
//! - the reasons the scripts call "waiting" (Progressing, not Degraded) are exactly the
//!   reasons the operator's reconcilers treat as waits;
//! - `argocd/argocd-cm.yaml` holds each script byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use meridian_operator::{controller, schema};
use mlua::{Lua, LuaOptions, StdLib};
use serde::Deserialize;
use serde_json::{Value, json};

const MERIDIAN_GROUP: &str = "platform.meridian.dev";

/// The health statuses Argo CD accepts from a script.
const HEALTH_STATUSES: [&str; 6] = ["Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the operator crate is in the workspace")
        .to_path_buf()
}

fn customizations_dir() -> PathBuf {
    repo().join("argocd").join("resource_customizations")
}

/// A `health_test.yaml`, as Argo CD's test harness reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthTests {
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    health_status: Health,
    input_path: String,
}

/// What a health script answers; a missing message is an empty one, as in Argo CD.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Health {
    status: String,
    #[serde(default)]
    message: String,
}

/// One `<group>/<kind>/` folder: its script and its cases.
struct Customization {
    group: String,
    kind: String,
    dir: PathBuf,
    script: String,
    tests: Vec<Case>,
}

impl Customization {
    fn name(&self) -> String {
        format!("{}/{}", self.group, self.kind)
    }

    /// The object of a case, read as Argo CD reads it (YAML to JSON values).
    fn input(&self, case: &Case) -> Value {
        let path = self.dir.join(&case.input_path);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    entries
}

/// Every `<group>/<kind>/` folder under `argocd/resource_customizations/`; each must hold a
/// `health.lua` and a `health_test.yaml`.
fn customizations() -> Vec<Customization> {
    let mut out = Vec::new();
    for group in sorted_entries(&customizations_dir()).into_iter().filter(|p| p.is_dir()) {
        for dir in sorted_entries(&group).into_iter().filter(|p| p.is_dir()) {
            let read = |file: &str| {
                let path = dir.join(file);
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            };
            let tests: HealthTests = serde_yaml_ng::from_str(&read("health_test.yaml"))
                .unwrap_or_else(|e| panic!("{}/health_test.yaml: {e}", dir.display()));
            let file_name = |p: &Path| p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            out.push(Customization {
                group: file_name(&group),
                kind: file_name(&dir),
                script: read("health.lua"),
                tests: tests.tests,
                dir,
            });
        }
    }
    out
}

fn customization(group: &str, kind: &str) -> Customization {
    customizations()
        .into_iter()
        .find(|c| c.group == group && c.kind == kind)
        .unwrap_or_else(|| panic!("no health check for {group}/{kind}"))
}

/// A JSON value as Argo CD hands it to Lua: objects and arrays as tables (arrays from 1),
/// numbers as Lua numbers, `null` as nil.
fn to_lua(lua: &Lua, value: &Value) -> mlua::Result<mlua::Value> {
    Ok(match value {
        Value::Null => mlua::Value::Nil,
        Value::Bool(b) => mlua::Value::Boolean(*b),
        Value::Number(n) => mlua::Value::Number(n.as_f64().expect("a JSON number is a float")),
        Value::String(s) => mlua::Value::String(lua.create_string(s)?),
        Value::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for item in items {
                table.raw_push(to_lua(lua, item)?)?;
            }
            mlua::Value::Table(table)
        }
        Value::Object(fields) => {
            let table = lua.create_table_with_capacity(0, fields.len())?;
            for (key, item) in fields {
                table.raw_set(key.as_str(), to_lua(lua, item)?)?;
            }
            mlua::Value::Table(table)
        }
    })
}

/// A Lua 5.1 state with what Argo CD opens for an argocd-cm script: base, table, os and
/// package, not string (nor math, io, debug).
fn argocd_lua() -> Lua {
    Lua::new_with(StdLib::TABLE | StdLib::OS | StdLib::PACKAGE, LuaOptions::default()).expect("a Lua state")
}

/// Runs a health script on `object` as Argo CD does: `obj` set, the chunk's return value
/// read as `{status, message}`; a status Argo CD does not know is `Unknown`.
fn run(script: &str, object: &Value) -> Result<Health, String> {
    let lua = argocd_lua();
    let obj = to_lua(&lua, object).map_err(|e| e.to_string())?;
    lua.globals().set("obj", obj).map_err(|e| e.to_string())?;
    let answer: mlua::Value = lua
        .load(script)
        .set_name("health.lua")
        .eval()
        .map_err(|e| e.to_string())?;
    let mlua::Value::Table(table) = answer else {
        return Err(format!("expected a table from the script, got {}", answer.type_name()));
    };
    let text = |field: &str| -> Result<String, String> {
        match table.get::<mlua::Value>(field).map_err(|e| e.to_string())? {
            mlua::Value::Nil => Ok(String::new()),
            mlua::Value::String(s) => Ok(s.to_str().map_err(|e| e.to_string())?.to_string()),
            other => Err(format!("{field} is a {}, not a string", other.type_name())),
        }
    };
    let status = text("status")?;
    if !HEALTH_STATUSES.contains(&status.as_str()) {
        return Ok(Health {
            status: "Unknown".into(),
            message: "Lua returned an invalid health status".into(),
        });
    }
    Ok(Health {
        status,
        message: text("message")?,
    })
}

#[test]
fn the_lua_here_is_the_lua_argocd_gives_a_script() {
    let lua = argocd_lua();
    let probe: (String, String, String, String, String) = lua
        .load("return _VERSION, type(string), type(table), type(os), type(ipairs)")
        .eval()
        .expect("the probe runs");
    assert_eq!(
        probe,
        (
            "Lua 5.1".to_string(),
            "nil".to_string(),
            "table".to_string(),
            "table".to_string(),
            "function".to_string()
        )
    );
}

#[test]
fn every_case_gives_its_expected_health() {
    let mut failures = Vec::new();
    let mut counted = BTreeMap::new();
    for c in customizations() {
        for case in &c.tests {
            let got = run(&c.script, &c.input(case));
            if got.as_ref() != Ok(&case.health_status) {
                failures.push(format!(
                    "{}/{}:\n  expected {:?}\n  got      {:?}",
                    c.name(),
                    case.input_path,
                    case.health_status,
                    got
                ));
            }
        }
        counted.insert(c.name(), c.tests.len());
    }
    let total: usize = counted.values().sum();
    println!("argocd health checks: {total} cases ({counted:?})");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(total > 0, "no case found under {}", customizations_dir().display());
}

#[test]
fn every_test_file_is_a_case_and_every_case_has_its_file() {
    for c in customizations() {
        let referenced: BTreeSet<String> = c.tests.iter().map(|t| t.input_path.clone()).collect();
        assert_eq!(
            referenced.len(),
            c.tests.len(),
            "{}: a test file is used by two cases",
            c.name()
        );
        let present: BTreeSet<String> = sorted_entries(&c.dir.join("testdata"))
            .iter()
            .map(|p| {
                format!(
                    "testdata/{}",
                    p.file_name().and_then(|n| n.to_str()).unwrap_or_default()
                )
            })
            .collect();
        let unused: Vec<_> = present.difference(&referenced).collect();
        let missing: Vec<_> = referenced.difference(&present).collect();
        assert!(unused.is_empty(), "{}: files no case uses: {unused:?}", c.name());
        assert!(
            missing.is_empty(),
            "{}: cases without their file: {missing:?}",
            c.name()
        );
    }
}

#[test]
fn each_kind_has_a_case_of_every_health_its_script_answers() {
    // Only a Country can be paused (spec.suspend); a Region or a PatientIndex is reconciled
    // as long as it exists, so their scripts never answer Suspended.
    let wanted: [(&str, &str, &[&str]); 4] = [
        (
            MERIDIAN_GROUP,
            "Country",
            &["Healthy", "Progressing", "Degraded", "Suspended"],
        ),
        (MERIDIAN_GROUP, "Region", &["Healthy", "Progressing", "Degraded"]),
        (MERIDIAN_GROUP, "PatientIndex", &["Healthy", "Progressing", "Degraded"]),
        (
            "argoproj.io",
            "Application",
            &["Healthy", "Progressing", "Degraded", "Suspended"],
        ),
    ];
    let all = customizations();
    let names: BTreeSet<String> = all.iter().map(Customization::name).collect();
    let expected_names: BTreeSet<String> = wanted.iter().map(|(g, k, _)| format!("{g}/{k}")).collect();
    assert_eq!(
        names,
        expected_names,
        "the health checks in {}",
        customizations_dir().display()
    );
    for (group, kind, statuses) in wanted {
        let c = all
            .iter()
            .find(|c| c.group == group && c.kind == kind)
            .expect("listed above");
        let answered: BTreeSet<&str> = c.tests.iter().map(|t| t.health_status.status.as_str()).collect();
        let wanted: BTreeSet<&str> = statuses.iter().copied().collect();
        assert_eq!(answered, wanted, "{}: the health statuses of its cases", c.name());
    }
}

#[test]
fn every_test_object_is_one_the_api_server_would_accept() {
    // `schema::check` compiles the schemas of the Rust types; they are the CRDs in `crds/`
    // (which the crds crate's own test keeps so).
    for (name, generated) in meridian_crds::crd_files() {
        let committed = std::fs::read_to_string(repo().join("crds").join(name)).unwrap_or_default();
        assert!(committed == generated, "crds/{name} is stale");
    }
    for c in customizations() {
        for case in &c.tests {
            let object = c.input(case);
            let at = format!("{}/{}", c.name(), case.input_path);
            let api_version = object["apiVersion"].as_str().unwrap_or_default();
            assert!(
                api_version.starts_with(&format!("{}/", c.group)),
                "{at}: apiVersion {api_version} is not of group {}",
                c.group
            );
            assert_eq!(object["kind"], json!(c.kind), "{at}: kind");
            assert!(object["metadata"]["name"].is_string(), "{at}: metadata.name");
            assert!(object["metadata"]["generation"].is_i64(), "{at}: metadata.generation");
            if c.group == MERIDIAN_GROUP {
                let errors = schema::check(&object).unwrap_or_else(|e| panic!("{at}: {e}"));
                assert_eq!(errors, [], "{at}: not what the CRD allows");
            }
        }
    }
}

#[test]
fn the_schema_check_refuses_a_status_field_the_crd_does_not_have() {
    // What the test above relies on: status is checked too, field by field.
    let country = customization(MERIDIAN_GROUP, "Country");
    let case = country
        .tests
        .iter()
        .find(|t| t.health_status.status == "Healthy")
        .expect("a Healthy case");
    let mut object = country.input(case);
    assert_eq!(schema::check(&object).unwrap(), []);
    object["status"]["phase"] = json!("Ready");
    object["status"]["conditions"][0]["severity"] = json!("Info");
    let fields: Vec<String> = schema::check(&object).unwrap().into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["status.conditions[0].severity", "status.phase"]);
}

/// The names in the first `{ ... }` (Lua) or `[ ... ]` (Rust) after `start` in `text`.
fn names_after(text: &str, start: &str, close: char) -> BTreeSet<String> {
    let from = text.find(start).unwrap_or_else(|| panic!("{start:?} not found")) + start.len();
    let end = from + text[from..].find(close).expect("the list ends");
    text[from..end]
        .split([',', '\n'])
        .map(|item| {
            item.trim()
                .trim_end_matches("= true")
                .trim()
                .trim_matches('"')
                .to_string()
        })
        .filter(|item| !item.is_empty() && !item.starts_with("--") && !item.starts_with("//"))
        .collect()
}

#[test]
fn the_waiting_reasons_are_those_the_operator_waits_on() {
    let source_path = repo().join("operator/src/controller/mod.rs");
    let source = std::fs::read_to_string(&source_path).expect("the controller's source");
    let operator = names_after(&source, "const WAITING: &[&str] = &[", ']');
    assert!(operator.len() >= 5, "read {operator:?} from {}", source_path.display());
    for reason in &operator {
        assert!(controller::is_waiting(reason), "{reason} was misread from the source");
    }
    for kind in ["Country", "Region", "PatientIndex"] {
        let c = customization(MERIDIAN_GROUP, kind);
        let script = names_after(&c.script, "local waiting = {", '}');
        assert_eq!(script, operator, "{kind}: the waiting reasons of health.lua");
    }
}

/// The kind's Healthy case with its Ready condition turned to `status` and `reason`.
fn with_ready(c: &Customization, status: &str, reason: &str) -> Value {
    let case = c
        .tests
        .iter()
        .find(|t| t.health_status.status == "Healthy")
        .expect("a Healthy case");
    let mut object = c.input(case);
    let conditions = object["status"]["conditions"].as_array_mut().expect("conditions");
    let ready = conditions
        .iter_mut()
        .find(|c| c["type"] == "Ready")
        .expect("a Ready condition");
    ready["status"] = json!(status);
    ready["reason"] = json!(reason);
    ready["message"] = json!("what the operator says");
    object
}

#[test]
fn every_reason_of_a_false_ready_is_a_wait_or_a_failure_as_the_operator_sees_it() {
    let source = std::fs::read_to_string(repo().join("operator/src/controller/mod.rs")).expect("source");
    let waits = names_after(&source, "const WAITING: &[&str] = &[", ']');
    // Reasons the operator writes on a False Ready that are failures (it backs off and counts
    // them): a sample from every kind, the deletion blockers included (Argo CD itself reports
    // an object being deleted as Progressing, "Pending deletion", without asking the script).
    let failures = [
        "InvalidSpec",
        "DatabaseUnreachable",
        "InsecureDatabaseUrl",
        "MigrationFailed",
        "RolesFailed",
        "AwsError",
        "AdoptionRefused",
        "ClusterUnreachable",
        "StackApplyFailed",
        "CertificateFailed",
        "ProviderUnavailable",
        "CodeConflict",
        "RegionNotDedicated",
        "CloudRegionNotAllowed",
        "RegionAlreadyDedicated",
        "PartitionFailed",
        "DataKeysFailed",
        "SearchIndexFailed",
        "RoutesFailed",
        "AnotherIndexServes",
        "IndexStoreFailed",
        "InvalidKeySecret",
        "KeysNotHandedOver",
        "CountriesStillBound",
        "PatientIndexStillHere",
        "TopicsNotDeleted",
        "CleanupFailed",
    ];
    for kind in ["Country", "Region", "PatientIndex"] {
        let c = customization(MERIDIAN_GROUP, kind);
        for reason in &waits {
            let health = run(&c.script, &with_ready(&c, "False", reason)).expect("the script runs");
            assert_eq!(health.status, "Progressing", "{kind} with Ready=False {reason}");
            assert_eq!(health.message, format!("{reason}: what the operator says"));
        }
        for reason in failures {
            assert!(!controller::is_waiting(reason), "{reason} is a wait for the operator");
            let health = run(&c.script, &with_ready(&c, "False", reason)).expect("the script runs");
            assert_eq!(health.status, "Degraded", "{kind} with Ready=False {reason}");
            assert_eq!(health.message, format!("{reason}: what the operator says"));
        }
        // Only a Country is ever Suspended: the operator writes that reason for nothing else.
        let suspended = run(&c.script, &with_ready(&c, "False", "Suspended")).expect("the script runs");
        let expected = if kind == "Country" { "Suspended" } else { "Degraded" };
        assert_eq!(suspended.status, expected, "{kind} with Ready=False Suspended");
    }
}

#[test]
fn argocd_cm_holds_each_script_byte_for_byte() {
    let path = repo().join("argocd/argocd-cm.yaml");
    let text = std::fs::read_to_string(&path).expect("argocd/argocd-cm.yaml");
    let cm: Value = serde_yaml_ng::from_str(&text).expect("argocd-cm.yaml parses");
    assert_eq!(cm["apiVersion"], "v1");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["name"], "argocd-cm");
    let data = cm["data"].as_object().expect("data");
    let prefix = "resource.customizations.health.";
    let mut in_cm: BTreeSet<String> = data.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
    for c in customizations() {
        let key = format!("{prefix}{}_{}", c.group, c.kind);
        let held = data.get(&key).and_then(Value::as_str);
        assert!(
            held == Some(c.script.as_str()),
            "{}: {key} is not {}/health.lua byte for byte; copy the file into it (indented 4 spaces under `{key}: |`)",
            path.display(),
            c.dir.display()
        );
        in_cm.remove(&key);
    }
    assert!(
        in_cm.is_empty(),
        "health checks in argocd-cm.yaml without their folder: {in_cm:?}"
    );
}
