#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! flagd `fractional` vectors (tests/vectors/flagd.json, from an independent Python
//! implementation with the reference murmur3), through a real abmesh configuration with
//! `"algorithm": "flagd"` — natively and on wasm32. Boundary ids are included.

use abmesh::{evaluate, Config, RequestView};
use serde_json::Value;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;

const VECTORS: &str = include_str!("vectors/flagd.json");

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_flagd_vector_assigns_the_same_variant() {
    let doc: Value = serde_json::from_str(VECTORS).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 200 && cases.iter().filter(|c| c["boundary"] == true).count() >= 10);
    for c in cases {
        let unit = c["unit"].as_str().unwrap();
        assert_eq!(
            u64::from(abmesh::flagd::murmur3_32(
                format!(
                    "{}{unit}",
                    c["bucket_by_seed"]
                        .as_str()
                        .unwrap_or(c["flag_key"].as_str().unwrap())
                )
                .as_bytes(),
                0
            )),
            c["hash"].as_u64().unwrap(),
            "{c}"
        );
        let weights: Vec<u64> = c["weights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_u64().unwrap())
            .collect();
        let variants: Vec<String> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| format!(r#"{{"name": "v{i}", "weight": {w}}}"#))
            .collect();
        let seed = match c["bucket_by_seed"].as_str() {
            Some(s) => format!(r#", "bucket_by_seed": "{s}""#),
            None => String::new(),
        };
        let config = format!(
            r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}}, "experiments": [{{"key": "exp", "algorithm": "flagd",
                "flag_key": "{}"{seed}, "variants": [{}]}}]}}"#,
            c["flag_key"].as_str().unwrap(),
            variants.join(", ")
        );
        let config = Config::parse(config.as_bytes()).unwrap();
        let headers = [("x-user-id", unit)];
        let eval = evaluate(&config, &RequestView::new(&headers), 0);
        assert_eq!(
            eval.assignments[0].variant as u64,
            c["variant"].as_u64().unwrap(),
            "{c}"
        );
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn flagd_settings_are_validated_in_the_usual_words() {
    let errors = Config::parse(
        br#"{"units": {"user": [{"header": "u"}]}, "experiments": [
          {"key": "f", "algorithm": "flagd", "traffic_percent": 50, "salt": "s", "coverage": 0.5,
           "variants": [{"name": "a", "weight": 1.5}]},
          {"key": "g", "flag_key": "x", "variants": [{"name": "a", "weight": 1}]}]}"#,
    )
    .unwrap_err()
    .errors;
    assert_eq!(
        errors,
        vec![
            "experiments[0].traffic_percent: is not used by algorithm \"flagd\" (flagd assigns every unit)",
            "experiments[0].salt: is not used by algorithm \"flagd\" (use bucket_by_seed)",
            "experiments[0].coverage: is only used with \"algorithm\": \"growthbook\"",
            "experiments[0].variants[0].weight: must be a non-negative integer, found 1.5",
            "experiments[1].flag_key: is only used with \"algorithm\": \"flagd\"",
        ]
    );
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn flagd_bucketing_must_be_v2_or_v3() {
    let errors = Config::parse(
        br#"{"units": {"user": [{"header": "u"}]}, "experiments": [
          {"key": "f", "algorithm": "flagd", "bucketing": "v1",
           "variants": [{"name": "a", "weight": 1}]},
          {"key": "g", "bucketing": "v3", "variants": [{"name": "a", "weight": 1}]}]}"#,
    )
    .unwrap_err()
    .errors;
    assert_eq!(
        errors,
        vec![
            "experiments[0].bucketing: must be \"v2\" (the string's bytes, flagd 0.15 and later) \
             or \"v3\" (its CBOR encoding, flagd's hashing-consistency ADR), found \"v1\"",
            "experiments[1].bucketing: is only used with \"algorithm\": \"flagd\"",
        ]
    );
}

/// One experiment of `algorithm` flagd with `extra` settings, the unit read from `x-id`.
#[cfg(not(target_arch = "wasm32"))]
fn flagd_variant(extra: &str, weights: &[u64], id: &str) -> usize {
    let variants: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!(r#"{{"name": "v{i}", "weight": {w}}}"#))
        .collect();
    let config = format!(
        r#"{{"units": {{"u": [{{"header": "x-id"}}]}}, "experiments": [{{"key": "exp",
            "algorithm": "flagd"{extra}, "variants": [{}]}}]}}"#,
        variants.join(", ")
    );
    let config = Config::parse(config.as_bytes()).unwrap();
    let headers = [("x-id", id)];
    evaluate(&config, &RequestView::new(&headers), 0).assignments[0].variant
}

/// flagd-testbed `gherkin/targeting.feature`, `@fractional-v3` examples with string inputs
/// (tests/peers/flagd-testbed): the CBOR text of the bucket-by string, or for the shorthand
/// the CBOR pair of flag key and targeting key.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn v3_bucketing_gives_the_testbeds_v3_variants() {
    let suits = ["clubs", "diamonds", "hearts", "spades"];
    let v3 = r#", "bucketing": "v3""#;
    let cat_flag_key =
        format!(r#"{v3}, "flag_key": "fractional-flag", "bucket_by_seed": "fractional-flag""#);
    for (name, want) in [
        ("jack", "diamonds"),
        ("queen", "diamonds"),
        ("ten", "clubs"),
        ("nine", "clubs"),
        ("3", "spades"),
    ] {
        assert_eq!(
            suits[flagd_variant(&cat_flag_key, &[25; 4], name)],
            want,
            "{name}"
        );
    }
    let shared = format!(r#"{v3}, "bucket_by_seed": "shared-seed""#);
    for (name, want) in [
        ("seven", "hearts"),
        ("eight", "hearts"),
        ("nine", "diamonds"),
        ("two", "diamonds"),
    ] {
        assert_eq!(
            suits[flagd_variant(&shared, &[25; 4], name)],
            want,
            "{name}"
        );
    }
    let shorthand = format!(r#"{v3}, "flag_key": "fractional-flag-shorthand""#);
    for key in ["jon@company.com", "jane@company.com"] {
        assert_eq!(flagd_variant(&shorthand, &[1, 1], key), 1, "{key}: tails");
    }
    // `{"var": "hashing_input"}` alone, string values: the CBOR text of the value.
    let var_only = format!(r#"{v3}, "bucket_by_seed": """#);
    for (input, bucket) in [
        ("user1", 22),
        ("user2", 16),
        ("123", 22),
        ("true", 24),
        ("false", 1),
        ("null", 8),
        ("1.23", 4),
    ] {
        assert_eq!(
            flagd_variant(&var_only, &[4; 25], input) + 1,
            bucket,
            "{input}"
        );
    }
    // The same flags in v2 (the default) give the testbed's v2 variants.
    for (name, want) in [
        ("jack", "hearts"),
        ("queen", "spades"),
        ("ten", "clubs"),
        ("nine", "diamonds"),
        ("3", "clubs"),
    ] {
        let v2 = r#", "flag_key": "fractional-flag", "bucket_by_seed": "fractional-flag""#;
        assert_eq!(suits[flagd_variant(v2, &[25; 4], name)], want, "{name}");
    }
}
