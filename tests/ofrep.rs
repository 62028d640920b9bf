#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! OFREP answered from the configuration: routes, the answers' exact shapes, errors, ETags.

use abmesh::ofrep::{answer, route, Answer, Route};
use abmesh::{evaluate, Config, RequestView};
use serde_json::{json, Value};

const CONFIG: &str = r#"{
  "units": {"user": [{"header": "x-user-id"}, {"cookie": "uid"}]},
  "experiments": [
    {"key": "checkout", "variants": [{"name": "control", "weight": 1, "value": false},
                                     {"name": "treatment", "weight": 1, "value": true}]},
    {"key": "ranker", "traffic_percent": 50, "when": {"headers": {"x-country": {"in": ["CA"]}}},
     "variants": [{"name": "bm25", "weight": 1}, {"name": "neural", "weight": 1, "value": {"model": "n2"}}]},
    {"key": "banner", "status": "rolled_out", "winner": "on",
     "variants": [{"name": "off", "weight": 1, "value": 0}, {"name": "on", "weight": 1, "value": 1.5}]},
    {"key": "old", "status": "paused", "variants": [{"name": "a", "weight": 1}]}
  ],
  "ofrep": {"path_prefix": "/ofrep/v1/",
            "context": {"targetingKey": {"header": "x-user-id"}, "country": {"header": "x-country"}}}
}"#;

fn config() -> Config {
    Config::parse(CONFIG.as_bytes()).unwrap()
}

fn ask(
    config: &Config,
    path: &str,
    method: &str,
    body: &str,
    inm: Option<&str>,
) -> (u16, Value, Option<String>) {
    let ofrep = config.ofrep.as_ref().unwrap();
    let r = route(ofrep, path.as_bytes()).unwrap();
    let Answer { status, body, etag } = answer(
        config,
        ofrep,
        &r,
        method.as_bytes(),
        body.as_bytes(),
        inm.map(str::as_bytes),
        1_795_000_000_000,
    );
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap()
    };
    (status, json, etag)
}

#[test]
fn paths_under_the_prefix_are_routed_and_others_are_ordinary_requests() {
    let c = config();
    let o = c.ofrep.as_ref().unwrap();
    assert_eq!(route(o, b"/ofrep/v1/evaluate/flags"), Some(Route::Bulk));
    assert_eq!(route(o, b"/ofrep/v1/evaluate/flags?x=1"), Some(Route::Bulk));
    assert_eq!(
        route(o, b"/ofrep/v1/evaluate/flags/checkout"),
        Some(Route::Single("checkout".into()))
    );
    assert_eq!(
        route(o, b"/ofrep/v1/evaluate/flags/a/b"),
        Some(Route::Unknown)
    );
    assert_eq!(route(o, b"/ofrep/v1/other"), Some(Route::Unknown));
    assert_eq!(route(o, b"/ofrep/v2/evaluate/flags"), None);
    assert_eq!(route(o, b"/checkout"), None);
}

#[test]
fn a_single_flag_gets_the_variant_the_mesh_assigns_the_same_unit() {
    let c = config();
    for i in 0..200 {
        let id = format!("user-{i}");
        let headers = [("x-user-id", id.as_bytes())];
        let eval = evaluate(&c, &RequestView::new(&headers), 0);
        let variant = eval
            .assignments
            .iter()
            .find(|a| a.experiment == 0)
            .unwrap()
            .variant;
        let (status, body, _) = ask(
            &c,
            "/ofrep/v1/evaluate/flags/checkout",
            "POST",
            &format!(r#"{{"context": {{"targetingKey": "{id}"}}}}"#),
            None,
        );
        assert_eq!(status, 200);
        let name = ["control", "treatment"][variant];
        assert_eq!(
            body,
            json!({"key": "checkout", "value": variant == 1, "reason": "SPLIT", "variant": name})
        );
    }
}

#[test]
fn values_reasons_and_code_defaults_are_as_the_spec_shapes_them() {
    let c = config();
    let single = |key: &str, context: &str| {
        ask(
            &c,
            &format!("/ofrep/v1/evaluate/flags/{key}"),
            "POST",
            &format!(r#"{{"context": {context}}}"#),
            None,
        )
    };
    // A rollout with no `when` is static; a value may be any JSON but null or a list.
    assert_eq!(
        single("banner", r#"{"targetingKey": "u"}"#).1,
        json!({"key": "banner", "value": 1.5, "reason": "STATIC", "variant": "on"})
    );
    assert_eq!(
        single("old", r#"{"targetingKey": "u"}"#).1,
        json!({"key": "old", "reason": "DISABLED", "metadata": {"abmesh.not_assigned": "paused"}})
    );
    // Targeting reads the context's `country` as the header it maps to.
    assert_eq!(
        single("ranker", r#"{"targetingKey": "u", "country": "US"}"#).1,
        json!({"key": "ranker", "reason": "TARGETING_MATCH", "metadata": {"abmesh.not_assigned": "targeting"}})
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..100 {
        let (_, body, _) = single(
            "ranker",
            &format!(r#"{{"targetingKey": "u{i}", "country": "CA"}}"#),
        );
        seen.insert(
            body.get("variant")
                .map_or("-".to_string(), |v| v.to_string()),
        );
        if body["variant"] == "neural" {
            assert_eq!(body["value"], json!({"model": "n2"}));
        }
        if body.get("variant").is_none() {
            assert_eq!(
                body,
                json!({"key": "ranker", "reason": "SPLIT", "metadata": {"abmesh.not_assigned": "traffic"}})
            );
        }
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn bad_requests_get_the_specs_error_responses() {
    let c = config();
    let flag = "/ofrep/v1/evaluate/flags/checkout";
    assert_eq!(
        ask(&c, flag, "POST", "{not json", None),
        (
            400,
            json!({"key": "checkout", "errorCode": "PARSE_ERROR", "errorDetails": "the request body is not JSON (line 1, column 2)"}),
            None
        )
    );
    assert_eq!(
        ask(&c, flag, "POST", r#"{"ctx": {}}"#, None).1,
        json!({"key": "checkout", "errorCode": "INVALID_CONTEXT", "errorDetails": "the request body has no \"context\" object"})
    );
    assert_eq!(
        ask(
            &c,
            flag,
            "POST",
            r#"{"context": {"targetingKey": 7}}"#,
            None
        )
        .1,
        json!({"key": "checkout", "errorCode": "TARGETING_KEY_MISSING", "errorDetails": "the context has no targetingKey string"})
    );
    assert_eq!(
        ask(
            &c,
            "/ofrep/v1/evaluate/flags",
            "POST",
            r#"{"context": {}}"#,
            None
        ),
        (
            400,
            json!({"errorCode": "TARGETING_KEY_MISSING", "errorDetails": "the context has no targetingKey string"}),
            None
        )
    );
    assert_eq!(
        ask(
            &c,
            "/ofrep/v1/evaluate/flags/nope",
            "POST",
            r#"{"context": {"targetingKey": "u"}}"#,
            None
        ),
        (
            404,
            json!({"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "no experiment \"nope\" in the mesh's configuration"}),
            None
        )
    );
    assert_eq!(
        ask(&c, flag, "GET", "", None),
        (
            405,
            json!({"errorDetails": "OFREP evaluations are POST requests"}),
            None
        )
    );
    assert_eq!(
        ask(&c, "/ofrep/v1/evaluate", "POST", "{}", None),
        (
            404,
            json!({"errorDetails": "no OFREP endpoint here: POST evaluate/flags or evaluate/flags/{key}"}),
            None
        )
    );
    let big = format!(
        r#"{{"context": {{"targetingKey": "{}"}}}}"#,
        "x".repeat(70_000)
    );
    assert_eq!(
        ask(&c, flag, "POST", &big, None).1["errorDetails"],
        "the request body has 70033 bytes, more than 65536"
    );
}

#[test]
fn bulk_evaluation_lists_every_flag_with_an_etag_and_answers_304_when_it_matches() {
    let c = config();
    let body = r#"{"context": {"targetingKey": "user-7", "country": "CA"}}"#;
    let (status, json, etag) = ask(&c, "/ofrep/v1/evaluate/flags", "POST", body, None);
    assert_eq!(status, 200);
    let keys: Vec<&str> = json["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["checkout", "ranker", "banner", "old"]);
    let etag = etag.unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() == 18,
        "{etag}"
    );
    for inm in [
        etag.clone(),
        format!("W/{etag}"),
        format!("\"x\", {etag}"),
        "*".into(),
    ] {
        assert_eq!(
            ask(&c, "/ofrep/v1/evaluate/flags", "POST", body, Some(&inm)),
            (304, Value::Null, Some(etag.clone()))
        );
    }
    // Another unit's flags are another document.
    let (status, _, other) = ask(
        &c,
        "/ofrep/v1/evaluate/flags",
        "POST",
        r#"{"context": {"targetingKey": "user-8"}}"#,
        Some(&etag),
    );
    assert_eq!(status, 200);
    assert_ne!(other.unwrap(), etag);
}

#[test]
fn ofrep_settings_and_variant_values_are_validated_in_the_usual_words() {
    let errors = |json: &str| Config::parse(json.as_bytes()).unwrap_err().errors;
    assert_eq!(
        errors(r#"{"units": {"user": [{"header": "u"}]},
                  "experiments": [{"key": "k", "variants": [{"name": "a", "weight": 1, "value": null}, {"name": "b", "weight": 1, "value": [1]}]}],
                  "ofrep": {"path_prefix": "ofrep", "context": {"targetingKey": {"header": "bad header"}, "plan": {"cookie": "p", "query": "q"}}, "extra": 1}}"#),
        [
            "experiments[0].variants[1].value: must be a boolean, string, number or object (an OFREP flag value), found a list",
            "ofrep: unknown field \"extra\"; expected one of: path_prefix, context",
            "ofrep.path_prefix: must be a path that starts and ends with '/', such as \"/ofrep/v1/\", found \"ofrep\"",
            "ofrep.context.plan: must have exactly one of \"header\", \"cookie\" or \"query\"",
            "ofrep.context.targetingKey.header: \"bad header\" is not a valid header name",
        ]
    );
    // Without a context mapping, targetingKey is the first unit type's first source.
    let c = Config::parse(br#"{"units": {"user": [{"cookie": "uid"}]}, "experiments": [], "ofrep": {"path_prefix": "/of/"}}"#).unwrap();
    assert_eq!(
        c.ofrep.unwrap().context,
        [(
            "targetingKey".to_string(),
            abmesh::config::Source::Cookie("uid".into())
        )]
    );
}

#[test]
fn check_says_where_ofrep_is_answered_and_what_the_context_stands_for() {
    let summary = abmesh::summary::describe(&config());
    assert!(
        summary.contains(
            "ofrep: answered under /ofrep/v1/ (context: country as header x-country, targetingKey as header x-user-id)\n"
        ),
        "{summary}"
    );
}
