//! GrowthBook SDK payloads: every experiment rule becomes an experiment with `"algorithm":
//! "growthbook"`; its hash attribute a unit type read from the request ([`Sources`]); its
//! `condition` a `when` where `when` says the same thing ([`super::mongo`]).

use serde_json::{json, Map, Value};

use abmesh::config::is_valid_variant;

use super::mongo::condition;
use super::sources::slug;
use super::when::When;
use super::{Imported, Keys, Sources};

fn variant_name(raw: Option<&str>, index: usize) -> String {
    match raw {
        Some(n) if is_valid_variant(n) => n.to_string(),
        _ => format!("v{index}"),
    }
}

/// A GrowthBook SDK payload (`{"features": {...}, "savedGroups": {...}}`) as an abmesh
/// configuration; `Err` for a bad mapping.
pub fn growthbook(payload: &Value, mapping: Option<&Value>) -> Result<Imported, Vec<String>> {
    let mut sources = Sources::new("gb", mapping)?;
    let mut keys = Keys::default();
    let mut experiments = Vec::new();
    let mut units = Map::new();
    let mut unsupported = Vec::new();
    let empty = Map::new();
    let features = payload
        .get("features")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if payload.get("features").is_none() {
        unsupported.push("payload: no \"features\" object".into());
    }
    let groups = payload
        .get("savedGroups")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (feature, def) in features {
        let rules = def
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("features.{feature}.rules[{i}]");
            let Some(variations) = rule.get("variations").and_then(Value::as_array) else {
                let kind = if rule.get("force").is_some() {
                    "a force rule"
                } else {
                    "not an experiment rule"
                };
                unsupported.push(format!("{at}: {kind}, nothing to assign at the mesh"));
                continue;
            };
            if rule.get("force").is_some() {
                unsupported.push(format!(
                    "{at}: a forced value beside variations is an application setting (use abmesh overrides)"
                ));
                continue;
            }
            let blocking: Vec<&str> = ["filters", "parentConditions", "fallbackAttribute"]
                .into_iter()
                .filter(|k| rule.get(*k).is_some())
                .collect();
            if !blocking.is_empty() {
                unsupported.push(format!(
                    "{at}: uses {} — GrowthBook's filters and prerequisites are not translated",
                    blocking.join(", ")
                ));
                continue;
            }
            let mut when = When::default();
            if let Some(c) = rule.get("condition") {
                if let Err(why) = condition(c, &mut when, &mut sources, groups) {
                    unsupported.push(format!("{at}: condition {why}"));
                    continue;
                }
            }
            let attribute = rule
                .get("hashAttribute")
                .and_then(Value::as_str)
                .unwrap_or("id");
            let unit = slug(attribute);
            let source = sources.source(attribute);
            units.entry(unit.clone()).or_insert_with(|| json!([source]));
            let raw_key = rule.get("key").and_then(Value::as_str).unwrap_or(feature);
            let meta = rule.get("meta").and_then(Value::as_array);
            let weights = rule.get("weights").and_then(Value::as_array);
            let variants: Vec<Value> = variations
                .iter()
                .enumerate()
                .map(|(v, _)| {
                    let name = variant_name(meta.and_then(|m| m.get(v)?.get("key")?.as_str()), v);
                    match weights.and_then(|w| w.get(v)) {
                        Some(w) => json!({"name": name, "weight": w}),
                        None => json!({"name": name}),
                    }
                })
                .collect();
            let mut exp = json!({
                "key": keys.key_for(raw_key),
                "unit": unit,
                "algorithm": "growthbook",
                "seed": rule.get("seed").and_then(Value::as_str).unwrap_or(raw_key),
                "hash_version": rule.get("hashVersion").cloned().unwrap_or(json!(1)),
                "variants": variants,
            });
            for field in ["coverage", "namespace"] {
                if let Some(v) = rule.get(field) {
                    exp[field] = v.clone();
                }
            }
            // Explicit ranges replace weights and coverage, as in GrowthBook.
            if let Some(r) = rule.get("ranges") {
                exp["ranges"] = r.clone();
                if let Some(o) = exp.as_object_mut() {
                    o.remove("coverage");
                }
                for v in exp["variants"].as_array_mut().into_iter().flatten() {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("weight");
                    }
                }
            }
            if !when.is_empty() {
                exp["when"] = when.json();
            }
            // The SDK's `active: false` (an experiment switched off) assigns nobody.
            if rule.get("active") == Some(&Value::Bool(false)) {
                exp["status"] = json!("paused");
            }
            experiments.push(exp);
        }
    }
    Ok(Imported {
        config: json!({"units": units, "experiments": experiments}),
        unsupported,
        units: sources.lines(),
        notes: Vec::new(),
    })
}
