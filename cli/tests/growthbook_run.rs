#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! GrowthBook's cross-SDK `run` cases (tests/peers/growthbook-cases.json, 73 of them) through
//! `abmesh import growthbook`: each case's experiment becomes a rule of a payload (with the
//! context's saved groups), the importer translates it — conditions included — and the
//! imported configuration assigns the case's attributes, sent as headers. Cases the importer
//! refuses, and those whose context holds an application setting, are listed with the reason.

use abmesh::{evaluate, Config, RequestView};
use abmesh_cli::import::{growthbook, Sources};
use serde_json::{json, Value};

/// Why a case's context cannot be carried to the mesh: settings of the application's SDK.
fn application_setting(context: &Value) -> Option<String> {
    for (key, reason) in [
        ("qaMode", "SDK QA mode is an application setting"),
        ("url", "URL-based forcing is an application setting"),
        (
            "forcedVariations",
            "forced variations come from the application (use abmesh overrides)",
        ),
        (
            "enabled",
            "the SDK's global switch is an application setting",
        ),
        (
            "features",
            "prerequisite features are evaluated by the application",
        ),
    ] {
        if context.get(key).is_some() {
            return Some(format!("context.{key}: {reason}"));
        }
    }
    None
}

/// The cases not carried to the mesh, with their reasons: the test fails if one passes, or if
/// another case fails.
const LISTED: &[(&str, &str)] = &[
    ("negative forced variation", "features.x.rules[0]: a forced value beside variations is an application setting (use abmesh overrides)"),
    ("high forced variation", "features.x.rules[0]: a forced value beside variations is an application setting (use abmesh overrides)"),
    ("globally disabled", "context.enabled: the SDK's global switch is an application setting"),
    ("querystring force", "context.url: URL-based forcing is an application setting"),
    ("querystring force with inactive", "context.url: URL-based forcing is an application setting"),
    ("coverage take precendence over forced", "features.x.rules[0]: a forced value beside variations is an application setting (use abmesh overrides)"),
    ("Force variation from context", "context.forcedVariations: forced variations come from the application (use abmesh overrides)"),
    ("Skips experiments in QA mode", "context.qaMode: SDK QA mode is an application setting"),
    ("Works in QA mode if forced in context", "context.qaMode: SDK QA mode is an application setting"),
    ("Works in QA mode if forced in experiment", "context.qaMode: SDK QA mode is an application setting"),
    ("Filtered, included", "features.x.rules[0]: uses filters — GrowthBook's filters and prerequisites are not translated"),
    ("Filtered, excluded", "features.x.rules[0]: uses filters — GrowthBook's filters and prerequisites are not translated"),
    ("Filtered, ignore namespace", "features.x.rules[0]: uses filters — GrowthBook's filters and prerequisites are not translated"),
    ("Prerequisite condition passes", "context.features: prerequisite features are evaluated by the application"),
    ("Prerequisite condition fails", "context.features: prerequisite features are evaluated by the application"),
];

/// A GrowthBook attribute as the header value an application would send.
fn header_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[test]
fn growthbook_run_cases_pass_through_the_importer_or_are_listed_with_their_reason() {
    let doc: Value =
        serde_json::from_str(include_str!("../../tests/peers/growthbook-cases.json")).unwrap();
    let cases = doc["run"].as_array().unwrap();
    assert_eq!(cases.len(), 73);
    let (mut passed, mut failures, mut listed_seen) = (0, Vec::new(), Vec::new());
    for c in cases {
        let name = c[0].as_str().unwrap();
        let (context, experiment) = (&c[1], &c[2]);
        let listed = LISTED.iter().find(|(n, _)| *n == name).map(|(_, r)| *r);
        let reason = application_setting(context);
        let outcome: Result<Option<usize>, String> = match reason {
            Some(r) => Err(r),
            None => {
                let payload = json!({
                    "features": {"x": {"rules": [experiment]}},
                    "savedGroups": context.get("savedGroups").cloned().unwrap_or(json!({})),
                });
                let imported = growthbook(&payload, None).unwrap();
                match imported.unsupported.first() {
                    Some(r) => Err(r.clone()),
                    None => {
                        let config = Config::parse(imported.config.to_string().as_bytes()).unwrap();
                        let mut sources = Sources::new("gb", None).unwrap();
                        let owned: Vec<(String, String)> = context["attributes"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .filter_map(|(a, v)| {
                                let header = sources.source(a)["header"].as_str()?.to_string();
                                Some((header, header_value(v)?))
                            })
                            .collect();
                        let headers: Vec<(&str, &str)> = owned
                            .iter()
                            .map(|(h, v)| (h.as_str(), v.as_str()))
                            .collect();
                        let eval = evaluate(&config, &RequestView::new(&headers), 0);
                        Ok(eval.assignments.first().map(|a| a.variant))
                    }
                }
            }
        };
        let variations = experiment["variations"].as_array().unwrap();
        let (want_value, want_in) = (&c[3], c[4].as_bool().unwrap());
        match (&outcome, listed) {
            (Err(r), Some(l)) if r == l => listed_seen.push(name),
            (Err(r), _) => failures.push(format!("{name}: not imported ({r}), not listed so")),
            (Ok(_), Some(_)) => failures.push(format!("{name}: imported but listed")),
            (Ok(v), None) => {
                let ok = match v {
                    Some(v) => want_in && &variations[*v] == want_value,
                    None => !want_in && &variations[0] == want_value,
                };
                if ok {
                    passed += 1;
                } else {
                    failures.push(format!(
                        "{name}: got {v:?}, want {want_value} (in experiment: {want_in})"
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{passed} passed; failures:\n{}",
        failures.join("\n")
    );
    assert_eq!(listed_seen.len(), LISTED.len());
    assert_eq!(
        passed, 58,
        "run cases imported and passing (52 before conditions and ranges were translated)"
    );
}
