#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
#![cfg(not(target_arch = "wasm32"))]
//! flagd's own testbed (tests/peers/flagd-testbed, unchanged): its flag files imported by
//! `abmesh import flagd`, every `fractional` flag imported or listed with a reason, and the
//! scenarios' expected variants reproduced by the imported configuration — the evaluator
//! suite (`evaluator/gherkin/fractional.feature` on `testkit-flags.json`) and the provider
//! suite (`gherkin/targeting.feature` on `custom-ops.json` and `edge-case-flags.json`), v2
//! with the default import and v3 with `--bucketing v3`.
//!
//! A context attribute is a request header (`x-flagd-<attribute>`), so only string values can
//! be sent: scenarios with a context value of another type are counted and left out.

use std::collections::BTreeMap;
use std::process::Command;

use abmesh::{evaluate, Config, RequestView};
use serde_json::Value;

fn testbed(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../tests/peers/flagd-testbed/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// `abmesh import flagd` of a testbed flag file: exit code, configuration, standard error.
fn import(path: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_abmesh"))
        .args(["import", "flagd"])
        .arg(format!(
            "{}/../tests/peers/flagd-testbed/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// One row of a scenario: the flag, the context (attribute, type, value), the expected value.
#[derive(Debug, Clone)]
struct Case {
    scenario: String,
    tags: Vec<String>,
    flag: String,
    context: Vec<(String, String, String)>,
    expected: String,
}

/// The text between the first pair of double quotes after `after`.
fn quoted<'a>(line: &'a str, after: &str) -> Option<&'a str> {
    let rest = &line[line.find(after)? + after.len()..];
    let start = rest.find('"')? + 1;
    let end = start + rest[start..].find('"')?;
    Some(&rest[start..end])
}

/// The scenarios of a feature file, outlines expanded with their examples' tags.
fn cases(feature: &str) -> Vec<Case> {
    let mut out = Vec::new();
    let mut pending_tags: Vec<String> = Vec::new();
    let mut feature_tags: Vec<String> = Vec::new();
    let mut scenario: Option<(String, Vec<String>)> = None;
    let mut steps: Vec<String> = Vec::new();
    let mut example_tags: Vec<String> = Vec::new();
    let mut header: Option<Vec<String>> = None;
    let lines: Vec<&str> = feature.lines().map(str::trim).collect();
    let flush = |scenario: &Option<(String, Vec<String>)>,
                 steps: &[String],
                 tags: &[String],
                 row: &BTreeMap<String, String>,
                 out: &mut Vec<Case>| {
        let Some((name, scenario_tags)) = scenario else {
            return;
        };
        let fill = |s: &str| {
            let mut s = s.to_string();
            for (k, v) in row {
                s = s.replace(&format!("<{k}>"), v);
            }
            s
        };
        let mut case = Case {
            scenario: name.clone(),
            tags: scenario_tags.iter().chain(tags).cloned().collect(),
            flag: String::new(),
            context: Vec::new(),
            expected: String::new(),
        };
        for step in steps.iter().map(|s| fill(s)) {
            if step.contains("-flag with key") {
                case.flag = quoted(&step, "with key").unwrap().to_string();
            } else if step.contains("a nested property with outer key") {
                let outer = quoted(&step, "outer key").unwrap();
                let inner = quoted(&step, "inner key").unwrap();
                let value = quoted(&step, "with value").unwrap();
                case.context
                    .push((format!("{outer}.{inner}"), "String".into(), value.into()));
            } else if step.contains("a targeting key with value") {
                let value = quoted(&step, "with value").unwrap();
                case.context
                    .push(("targetingKey".into(), "String".into(), value.into()));
            } else if step.contains("a context containing a key") {
                let key = quoted(&step, "containing a key").unwrap();
                let ty = quoted(&step, "with type").unwrap();
                let value = quoted(&step, "with value").unwrap();
                case.context.push((key.into(), ty.into(), value.into()));
            } else if step.contains("resolved details value should be") {
                case.expected = quoted(&step, "should be").unwrap().to_string();
            }
        }
        if !case.flag.is_empty() {
            out.push(case);
        }
    };
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with('@') {
            pending_tags.extend(line.split_whitespace().map(str::to_string));
            continue;
        }
        if line.starts_with("Feature:") {
            feature_tags = std::mem::take(&mut pending_tags);
            continue;
        }
        if let Some(name) = line
            .strip_prefix("Scenario Outline:")
            .or_else(|| line.strip_prefix("Scenario:"))
        {
            let mut tags = feature_tags.clone();
            tags.append(&mut pending_tags);
            scenario = Some((name.trim().to_string(), tags));
            steps.clear();
            header = None;
            let is_outline = line.starts_with("Scenario Outline:");
            if !is_outline {
                // Its steps follow; it is flushed when they end.
                let end = lines[i + 1..]
                    .iter()
                    .position(|l| l.is_empty() || l.starts_with('@') || l.starts_with("Scenario"))
                    .map_or(lines.len(), |p| i + 1 + p);
                let own: Vec<String> = lines[i + 1..end].iter().map(|s| s.to_string()).collect();
                flush(&scenario, &own, &[], &BTreeMap::new(), &mut out);
                scenario = None;
            }
            continue;
        }
        if line.starts_with("Examples") {
            example_tags = std::mem::take(&mut pending_tags);
            header = None;
            continue;
        }
        if line.starts_with('|') && scenario.is_some() {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect();
            match &header {
                None => header = Some(cells),
                Some(h) => {
                    let row = h.iter().cloned().zip(cells).collect();
                    flush(&scenario, &steps, &example_tags, &row, &mut out);
                }
            }
            continue;
        }
        if scenario.is_some()
            && ["Given", "And", "When", "Then"]
                .iter()
                .any(|k| line.starts_with(k))
        {
            steps.push(line.to_string());
        }
    }
    out
}

/// The header a context attribute travels in (the importer's documented rule).
fn header_of(attribute: &str) -> String {
    match attribute {
        "targetingKey" => "x-flagd-targeting-key".into(),
        other => format!("x-flagd-{}", other.to_lowercase()),
    }
}

/// The value flagd resolves for `case` through the imported `config`: the assigned variant's
/// value, or the flag's default variant's when abmesh assigns nothing (the importer's note).
fn resolved(config: &Config, flags: &Value, case: &Case) -> Option<String> {
    let owned: Vec<(String, String)> = case
        .context
        .iter()
        .map(|(a, _, v)| (header_of(a), v.clone()))
        .collect();
    let headers: Vec<(&str, &[u8])> = owned
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    let eval = evaluate(config, &RequestView::new(&headers), 0);
    let def = &flags["flags"][&case.flag];
    let variant = eval
        .assignments
        .iter()
        .find(|a| config.experiments[a.experiment].key == case.flag.to_lowercase())
        .map(|a| {
            let e = &config.experiments[a.experiment];
            e.variants[a.variant].name.clone()
        })
        .or_else(|| def["defaultVariant"].as_str().map(str::to_string))?;
    def["variants"][&variant].as_str().map(str::to_string)
}

/// Runs every case of `feature` tagged with one of `versions` (or with no version tag) whose
/// flag `config` imported; returns (checked, left out for a context value that is not a
/// non-empty string, failures).
fn check(
    feature: &str,
    flags: &Value,
    config: &Config,
    versions: &[&str],
) -> (usize, usize, Vec<String>) {
    let (mut checked, mut non_string, mut failures) = (0, 0, Vec::new());
    // Every testbed flag key is its abmesh key lower-cased.
    let imported = |flag: &str| {
        config
            .experiments
            .iter()
            .any(|e| e.key == flag.to_lowercase())
    };
    for case in cases(feature) {
        let version_tags: Vec<&String> = case
            .tags
            .iter()
            .filter(|t| t.starts_with("@fractional-v"))
            .collect();
        let wanted =
            version_tags.is_empty() || version_tags.iter().any(|t| versions.contains(&t.as_str()));
        let fractional = case
            .tags
            .iter()
            .any(|t| t == "@fractional" || t == "@operator-errors")
            || case.flag.starts_with("fractional");
        if !wanted || !fractional || !imported(&case.flag) {
            continue;
        }
        // A header carries a string, and an empty one is no value at the mesh (design.md:
        // the first source with a non-empty value wins), where flagd hashes "".
        if case
            .context
            .iter()
            .any(|(_, ty, v)| ty != "String" || v.is_empty())
        {
            non_string += 1;
            continue;
        }
        checked += 1;
        let got = resolved(config, flags, &case);
        if got.as_deref() != Some(case.expected.as_str()) {
            failures.push(format!(
                "{} ({}): {:?} -> {got:?}, want {}",
                case.scenario, case.flag, case.context, case.expected
            ));
        }
    }
    (checked, non_string, failures)
}

#[test]
fn every_fractional_flag_of_the_testbed_is_imported_or_listed_with_a_reason_naming_its_feature() {
    let (code, stdout, stderr) = import("evaluator/flags/testkit-flags.json", &["--allow-partial"]);
    assert_eq!(code, 0, "{stderr}");
    let config: Value = serde_json::from_str(&stdout).unwrap();
    let flags: Value =
        serde_json::from_str(&testbed("evaluator/flags/testkit-flags.json")).unwrap();
    let fractional: Vec<&String> = flags["flags"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, d)| d["targeting"].to_string().contains("\"fractional\""))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(fractional.len(), 14);
    let imported: Vec<&str> = config["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["flag_key"].as_str().or(e["key"].as_str()))
        .collect();
    let listed: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("abmesh: not imported: flags."))
        .collect();
    for flag in &fractional {
        let in_config = imported.contains(&flag.as_str());
        let reason = listed.iter().find(|l| l.starts_with(&format!("{flag}: ")));
        assert!(
            in_config != reason.is_some(),
            "{flag}: imported {in_config}, listed {reason:?}"
        );
    }
    let reasons: Vec<&str> = listed
        .iter()
        .filter(|l| fractional.iter().any(|f| l.starts_with(&format!("{f}: "))))
        .copied()
        .collect();
    assert_eq!(
        reasons,
        [
            "fractional-nested-if-flag: fractional[0] = [{\"if\":[{\"==\":[{\"var\":\"tier\"},\"premium\"]},\"premium\",\"standard\"]},50]: a computed variant (nested JSONLogic)",
            "fractional-nested-var-flag: fractional[0] = [{\"var\":\"color\"},50]: a computed variant (nested JSONLogic)",
            "fractional-nested-weight-flag: fractional[0] = [\"red\",{\"if\":[{\"==\":[{\"var\":\"tier\"},\"premium\"]},100,0]}]: a computed weight (nested JSONLogic)",
        ]
    );
    assert_eq!(fractional.len() - reasons.len(), 11, "imported");
}

#[test]
fn imported_flags_reproduce_the_evaluator_suites_v2_and_operator_error_scenarios() {
    let (_, stdout, stderr) = import("evaluator/flags/testkit-flags.json", &["--allow-partial"]);
    let config = Config::parse(stdout.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{stderr}"));
    let flags: Value =
        serde_json::from_str(&testbed("evaluator/flags/testkit-flags.json")).unwrap();
    let feature = testbed("evaluator/gherkin/fractional.feature");
    let (checked, non_string, failures) = check(&feature, &flags, &config, &["@fractional-v2"]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!((checked, non_string), (26, 0));
}

#[test]
fn imported_flags_reproduce_the_provider_suites_v2_and_v3_scenarios() {
    // (versions, import options, file, cases checked, cases with a value a header cannot carry)
    for (versions, extra, file, want) in [
        (
            &["@fractional-v2"][..],
            &[][..],
            "flags/custom-ops.json",
            (23, 0),
        ),
        (
            &["@fractional-v2"],
            &[],
            "flags/edge-case-flags.json",
            (3, 0),
        ),
        (
            &["@fractional-v3"],
            &["--bucketing", "v3"],
            "flags/custom-ops.json",
            (41, 93),
        ),
        (
            &["@fractional-v3"],
            &["--bucketing", "v3"],
            "flags/edge-case-flags.json",
            (3, 0),
        ),
    ] {
        let mut args = vec!["--allow-partial"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = import(file, &args);
        assert_eq!(code, 0, "{stderr}");
        let config = Config::parse(stdout.as_bytes()).unwrap();
        let flags: Value = serde_json::from_str(&testbed(file)).unwrap();
        let feature = testbed("gherkin/targeting.feature");
        let (checked, non_string, failures) = check(&feature, &flags, &config, versions);
        assert!(
            failures.is_empty(),
            "{file} {versions:?}:\n{}",
            failures.join("\n")
        );
        assert_eq!((checked, non_string), want, "{file} {versions:?}");
    }
}
