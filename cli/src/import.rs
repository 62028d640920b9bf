//! `abmesh import`: translate a GrowthBook SDK payload or a flagd flag file into an abmesh
//! configuration that assigns identically. Whatever cannot be expressed at the mesh is listed
//! with its reason; nothing is dropped silently.

use serde_json::{json, Map, Value};

use abmesh::config::is_valid_variant;

/// An imported configuration and what could not be carried over.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub config: Value,
    /// `where: why`, one per thing left out.
    pub unsupported: Vec<String>,
    /// How requests must carry the units: `unit type: header`.
    pub units: Vec<String>,
}

/// An abmesh key for a peer's key: lower-cased, other characters replaced by `-`.
fn key_for(raw: &str) -> String {
    let mut k: String = raw
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !k.starts_with(|c: char| c.is_ascii_lowercase()) {
        k.insert(0, 'x');
    }
    k.truncate(64);
    k
}

fn variant_name(raw: Option<&str>, index: usize) -> String {
    match raw {
        Some(n) if is_valid_variant(n) => n.to_string(),
        _ => format!("v{index}"),
    }
}

fn header_for(prefix: &str, attribute: &str) -> String {
    format!("x-{prefix}-{}", key_for(attribute))
}

/// A GrowthBook SDK payload (`{"features": {...}}`): every experiment rule becomes a
/// `"algorithm": "growthbook"` experiment; its hash attribute a unit type read from the header
/// `x-gb-<attribute>`.
pub fn growthbook(payload: &Value) -> Imported {
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
            let blocking: Vec<&str> = [
                "condition",
                "filters",
                "ranges",
                "parentConditions",
                "fallbackAttribute",
            ]
            .into_iter()
            .filter(|k| rule.get(*k).is_some())
            .collect();
            if !blocking.is_empty() {
                unsupported.push(format!(
                    "{at}: uses {} — GrowthBook's attribute conditions and newer bucketing are not translated; write `when` by hand",
                    blocking.join(", ")
                ));
                continue;
            }
            let attribute = rule
                .get("hashAttribute")
                .and_then(Value::as_str)
                .unwrap_or("id");
            let unit = key_for(attribute);
            units
                .entry(unit.clone())
                .or_insert_with(|| json!([{"header": header_for("gb", attribute)}]));
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
                "key": key_for(raw_key),
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
            experiments.push(exp);
        }
    }
    let units_list = units
        .iter()
        .map(|(u, s)| format!("{u}: header {}", s[0]["header"].as_str().unwrap_or("")))
        .collect();
    Imported {
        config: json!({"units": units, "experiments": experiments}),
        unsupported,
        units: units_list,
    }
}

/// A flagd flag file (`{"flags": {...}}`): every flag whose targeting is a `fractional`
/// becomes a `"algorithm": "flagd"` experiment; the targeting key is read from the header
/// `x-flagd-targeting-key`.
pub fn flagd(file: &Value) -> Imported {
    let mut experiments = Vec::new();
    let mut unsupported = Vec::new();
    let empty = Map::new();
    let flags = file
        .get("flags")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    if file.get("flags").is_none() {
        unsupported.push("file: no \"flags\" object".into());
    }
    for (flag, def) in flags {
        let at = format!("flags.{flag}");
        if def.get("state").and_then(Value::as_str) == Some("DISABLED") {
            unsupported.push(format!("{at}: disabled, nothing to assign"));
            continue;
        }
        let Some(fractional) = def
            .get("targeting")
            .and_then(|t| t.get("fractional"))
            .and_then(Value::as_array)
        else {
            unsupported.push(format!(
                "{at}: targeting is not a top-level \"fractional\" (conditions are not translated)"
            ));
            continue;
        };
        let mut buckets = fractional.as_slice();
        let mut prefix = flag.clone();
        if let Some(first) = buckets.first().filter(|f| !f.is_array()) {
            // A custom bucketing value: only `{"cat": [{"var": "$flagd.flagKey"}, ...]}`-free
            // forms that reduce to "<seed><targetingKey>" can be carried to the mesh.
            let seed_then_key = first
                .get("cat")
                .and_then(Value::as_array)
                .and_then(|parts| match parts.as_slice() {
                    [Value::String(s), k]
                        if k.get("var").and_then(Value::as_str) == Some("targetingKey") =>
                    {
                        Some(s.clone())
                    }
                    _ => None,
                });
            match seed_then_key {
                Some(seed) => prefix = seed,
                None => {
                    unsupported.push(format!("{at}: bucketing by {first} is not the flag key or a seed followed by the targeting key"));
                    continue;
                }
            }
            buckets = &buckets[1..];
        }
        let mut variants = Vec::new();
        let mut ok = true;
        for (i, b) in buckets.iter().enumerate() {
            let pair = b.as_array();
            let name = pair.and_then(|p| p.first()?.as_str());
            let weight = pair.map_or(Some(1), |p| p.get(1).map_or(Some(1), Value::as_u64));
            match (name, weight) {
                (Some(n), Some(w)) if is_valid_variant(n) => {
                    variants.push(json!({"name": n, "weight": w}))
                }
                _ => {
                    unsupported.push(format!("{at}: fractional[{i}] = {b} is not [\"variant\", integer weight] with a valid variant name"));
                    ok = false;
                }
            }
        }
        if !ok {
            continue;
        }
        let mut exp = json!({"key": key_for(flag), "unit": "targeting-key", "algorithm": "flagd", "flag_key": flag, "variants": variants});
        if prefix != *flag {
            exp["bucket_by_seed"] = json!(prefix);
        }
        experiments.push(exp);
    }
    let units = json!({"targeting-key": [{"header": "x-flagd-targeting-key"}]});
    Imported {
        config: json!({"units": units, "experiments": experiments}),
        unsupported,
        units: vec!["targeting-key: header x-flagd-targeting-key".into()],
    }
}
