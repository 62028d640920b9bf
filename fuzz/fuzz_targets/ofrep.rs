//! Arbitrary OFREP requests — path under and around the prefix, method, body bytes (JSON or
//! not), If-None-Match — against a configuration with OFREP on and context attributes read as
//! a header, a cookie and a query parameter: the answer never panics, its body is valid JSON
//! (or empty for 304), and its status is one the protocol or the filter gives.
#![no_main]

use std::sync::OnceLock;

use abmesh::ofrep::{answer, route};
use abmesh::Config;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{
  "units": {"user": [{"header": "x-user-id"}, {"cookie": "uid"}, {"query": "uid"}]},
  "experiments": [
    {"key": "checkout", "variants": [{"name": "a", "weight": 1, "value": {"k": [1, "x"]}}, {"name": "b", "weight": 1, "value": 2.5}]},
    {"key": "plan", "when": {"cookies": {"plan": {"in": ["pro"]}}, "query": {"q": {"prefix": "x"}}},
     "variants": [{"name": "on", "weight": 1, "value": true}, {"name": "off", "weight": 1}]},
    {"key": "flagd", "algorithm": "flagd", "bucketing": "v3", "variants": [{"name": "x", "weight": 3}, {"name": "y", "weight": 1}]},
    {"key": "done", "status": "rolled_out", "winner": "w", "variants": [{"name": "w", "weight": 1}]}
  ],
  "ofrep": {"path_prefix": "/ofrep/v1/", "context": {"targetingKey": {"header": "x-user-id"},
            "plan": {"cookie": "plan"}, "q": {"query": "q"}}}
}"#;

#[derive(Arbitrary, Debug)]
struct Input {
    path: Vec<u8>,
    method: Vec<u8>,
    body: Vec<u8>,
    /// A body built as JSON from these, when set: reaches evaluation more often.
    context: Option<Vec<(String, String)>>,
    if_none_match: Option<Vec<u8>>,
    now_ms: i64,
}

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| Config::parse(CONFIG.as_bytes()).expect("the configuration is valid"))
}

fuzz_target!(|input: Input| {
    let config = config();
    let ofrep = config.ofrep.as_ref().expect("ofrep is on");
    let mut path = b"/ofrep/v1/".to_vec();
    path.extend_from_slice(&input.path);
    let Some(r) = route(ofrep, &path) else {
        return;
    };
    let body = match &input.context {
        Some(pairs) => {
            let map: serde_json::Map<String, serde_json::Value> =
                pairs.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))).collect();
            serde_json::json!({"context": map}).to_string().into_bytes()
        }
        None => input.body.clone(),
    };
    let a = answer(config, ofrep, &r, &input.method, &body, input.if_none_match.as_deref(), input.now_ms);
    assert!([200, 304, 400, 404, 405].contains(&a.status), "status {}", a.status);
    if a.status == 304 {
        assert!(a.body.is_empty());
    } else {
        serde_json::from_str::<serde_json::Value>(&a.body).expect("the answer is JSON");
    }
});
