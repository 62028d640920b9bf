#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! GrowthBook's cross-SDK suite (tests/peers/growthbook-cases.json, spec 0.8.0): every case of
//! `hash`, `getBucketRange`, `chooseVariation`, `inNamespace` and `getEqualWeights` — natively
//! and compiled to wasm32 (`./build.sh test` runs this file under node too).

use abmesh::growthbook::{bucket_ranges, choose_variation, equal_weights, hash, in_namespace};
use serde_json::Value;

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;

const CASES: &str = include_str!("peers/growthbook-cases.json");

fn suite(name: &str) -> Vec<Value> {
    let doc: Value = serde_json::from_str(CASES).unwrap();
    assert_eq!(
        doc["specVersion"], "0.8.0",
        "the suite these tests were written for"
    );
    doc[name].as_array().unwrap().clone()
}

fn ranges(v: &Value) -> Vec<(f64, f64)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_f64().unwrap(), r[1].as_f64().unwrap()))
        .collect()
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_hash_case_passes() {
    let cases = suite("hash");
    assert_eq!(cases.len(), 15);
    for c in cases {
        let got = hash(
            c[0].as_str().unwrap(),
            c[1].as_str().unwrap(),
            c[2].as_u64().unwrap() as u32,
        );
        assert_eq!(got, c[3].as_f64(), "{c}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_bucket_range_case_passes() {
    for c in suite("getBucketRange") {
        let args = &c[1];
        let weights: Option<Vec<f64>> = args[2]
            .as_array()
            .map(|w| w.iter().map(|x| x.as_f64().unwrap()).collect());
        let got = bucket_ranges(
            args[0].as_i64().unwrap(),
            args[1].as_f64().unwrap(),
            weights.as_deref(),
        );
        let want = ranges(&c[2]);
        assert_eq!(got.len(), want.len(), "{c}");
        for (g, w) in got.iter().zip(&want) {
            // The suite writes ranges rounded to 6 decimals (the JS tests compare that way).
            assert!(
                (g.0 - w.0).abs() < 1e-6 && (g.1 - w.1).abs() < 1e-6,
                "{c}: {got:?}"
            );
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_choose_variation_case_passes() {
    for c in suite("chooseVariation") {
        let got = choose_variation(c[1].as_f64().unwrap(), &ranges(&c[2]));
        let want = c[3].as_i64().unwrap();
        assert_eq!(got.map_or(-1, |v| v as i64), want, "{c}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_in_namespace_case_passes() {
    for c in suite("inNamespace") {
        let ns = &c[2];
        let got = in_namespace(
            c[1].as_str().unwrap(),
            ns[0].as_str().unwrap(),
            ns[1].as_f64().unwrap(),
            ns[2].as_f64().unwrap(),
        );
        assert_eq!(got, c[3].as_bool().unwrap(), "{c}");
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn every_equal_weights_case_passes() {
    for c in suite("getEqualWeights") {
        let got = equal_weights(c[0].as_i64().unwrap());
        let want: Vec<f64> = c[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want.len(), "{c}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-8, "{c}: {got:?}");
        }
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn non_ascii_ids_hash_as_the_javascript_sdk_does() {
    // Values from the GrowthBook JavaScript SDK's hashFnv32a / hash, run in node 20:
    // hashFnv32a("é😀") = 1154239905 ("😀" is a surrogate pair: two UTF-16 code units);
    // hash("exp", "usér-😀", 1) = 0.331, hash("exp", "usér-😀", 2) = 0.7673, hash("", "José", 2) = 0.0217.
    assert_eq!(abmesh::growthbook::fnv1a32_utf16("é😀"), 1_154_239_905);
    assert_eq!(hash("exp", "usér-😀", 1), Some(0.331));
    assert_eq!(hash("exp", "usér-😀", 2), Some(0.7673));
    assert_eq!(hash("", "José", 2), Some(0.0217));
}
