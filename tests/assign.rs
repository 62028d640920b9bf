#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Assignment rules, one behaviour per test.

use abmesh::plan::Plan;
use abmesh::{Config, Reason, RequestView};

const TOKEN_SHA: &str = "c83f048e00253c5f4fd6f298789ef4355b75f919ea9b16f86e0a83dcfa0c9697"; // "demo-qa-token"

fn config(experiments: &str, extra: &str) -> Config {
    Config::parse(
        format!(
            r#"{{"units": {{"user": [{{"header": "x-user-id"}}, {{"cookie": "uid"}}, {{"query": "uid"}}]}},
                "overrides": {{"token_sha256": ["{TOKEN_SHA}"]}} {extra},
                "experiments": [{experiments}]}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn run<'c>(
    config: &'c Config,
    headers: &[(&str, &[u8])],
    now: i64,
) -> (Plan<'c>, Vec<(String, &'static str)>) {
    let (plan, eval) = Plan::new(config, &RequestView::new(headers), now);
    let reasons = eval
        .not_assigned
        .iter()
        .map(|(e, r)| (config.experiments[*e].key.clone(), r.as_str()))
        .collect();
    (plan, reasons)
}

const AB: &str =
    r#""variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]"#;

#[test]
fn the_first_source_with_a_usable_value_wins() {
    let c = config(&format!(r#"{{"key": "k", {AB}}}"#), "");
    let long = vec![b'x'; 513];
    let exact = vec![b'y'; 512];
    for (headers, expected) in [
        (
            vec![
                ("x-user-id", &b"h"[..]),
                ("cookie", b"uid=c"),
                (":path", b"/?uid=q"),
            ],
            "h",
        ),
        (vec![("x-user-id", &b""[..]), ("cookie", b"uid=c")], "c"),
        (
            vec![
                ("x-user-id", &long[..]),
                ("cookie", b"uid=; other=1"),
                (":path", b"/?uid=q%21"),
            ],
            "q!",
        ),
        (
            vec![("x-user-id", &exact[..])],
            std::str::from_utf8(&exact).unwrap(),
        ),
    ] {
        let (plan, _) = run(&c, &headers, 0);
        let record: serde_json::Value = serde_json::from_str(plan.exposure().unwrap()).unwrap();
        assert_eq!(record["units"]["user"], expected);
    }
    let (plan, reasons) = run(&c, &[("x-user-id", &long[..])], 0);
    assert_eq!(plan.exposure(), None);
    assert_eq!(reasons, vec![("k".to_string(), "no_unit")]);
}

#[test]
fn duplicate_unit_headers_use_the_first() {
    let c = config(&format!(r#"{{"key": "k", {AB}}}"#), "");
    let (a, _) = run(&c, &[("x-user-id", b"first"), ("x-user-id", b"second")], 0);
    let (b, _) = run(&c, &[("x-user-id", b"first")], 0);
    assert_eq!(a.exposure(), b.exposure());
}

#[test]
fn a_valid_token_forces_variants_past_traffic_targeting_and_schedule_but_not_pause() {
    let c = config(
        &format!(
            r#"{{"key": "zero", "traffic_percent": 0, "when": {{"path_prefix": ["/nowhere"]}}, "end": "2000-01-01T00:00:00Z", {AB}}},
               {{"key": "off", "status": "paused", {AB}}}"#
        ),
        "",
    );
    let force: &[u8] = b"zero=treatment, off=control";
    let (plan, reasons) = run(
        &c,
        &[
            ("x-abmesh-token", b"demo-qa-token"),
            ("x-abmesh-force", force),
        ],
        0,
    );
    assert_eq!(plan.assignments.as_deref(), Some("zero=treatment;forced"));
    assert_eq!(reasons, vec![("off".to_string(), "paused")]);
    let record: serde_json::Value = serde_json::from_str(plan.exposure().unwrap()).unwrap();
    assert_eq!(record["units"], serde_json::json!({}));
    assert_eq!(record["assignments"][0]["forced"], true);
    assert_eq!(
        plan.remove,
        vec![b"x-abmesh-token".to_vec(), b"x-abmesh-force".to_vec()]
    );

    for token in [&b"wrong"[..], b"DEMO-QA-TOKEN", b"demo-qa-token ", b""] {
        let (plan, _) = run(
            &c,
            &[
                ("x-abmesh-token", token),
                ("x-abmesh-force", force),
                ("x-user-id", b"u"),
            ],
            0,
        );
        assert_eq!(plan.assignments, None, "token {token:?}");
    }
}

#[test]
fn rollouts_apply_to_everyone_matching_without_a_unit_and_record_no_exposure() {
    let c = config(
        &format!(
            r#"{{"key": "r", "status": "rolled_out", "winner": "treatment", "when": {{"methods": ["GET"]}}, "route_header": true, {AB}}}"#
        ),
        "",
    );
    let (plan, _) = run(&c, &[(":method", b"GET")], 0);
    assert_eq!(
        plan.set(),
        vec![("x-experiments", "r=treatment"), ("x-exp-r", "treatment")]
    );
    assert_eq!(plan.exposure(), None);
    let (plan, reasons) = run(&c, &[(":method", b"POST")], 0);
    assert_eq!(plan.assignments, None);
    assert_eq!(reasons, vec![("r".to_string(), "targeting")]);
}

#[test]
fn the_schedule_is_start_inclusive_and_end_exclusive() {
    let c = config(
        &format!(
            r#"{{"key": "s", "start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z", {AB}}}"#
        ),
        "",
    );
    let start = abmesh::time::parse_rfc3339("2026-11-01T00:00:00Z").unwrap();
    let end = abmesh::time::parse_rfc3339("2026-11-02T00:00:00Z").unwrap();
    let user: &[(&str, &[u8])] = &[("x-user-id", b"u1")];
    assert_eq!(
        run(&c, user, start - 1).1,
        vec![("s".to_string(), "schedule")]
    );
    assert!(run(&c, user, start).0.assignments.is_some());
    assert!(run(&c, user, end - 1).0.assignments.is_some());
    assert_eq!(run(&c, user, end).1, vec![("s".to_string(), "schedule")]);
}

#[test]
fn the_holdout_keeps_units_out_of_every_experiment_of_its_unit_type() {
    let c = config(
        &format!(r#"{{"key": "a", {AB}}}, {{"key": "b", {AB}}}"#),
        r#", "holdout": {"salt": "h", "percent": 50}"#,
    );
    let mut held = 0;
    for i in 0..200 {
        let id = format!("user-{i}");
        let (_, reasons) = run(&c, &[("x-user-id", id.as_bytes())], 0);
        let in_holdout = abmesh::hash::bucket(b"h", id.as_bytes()) < 5000;
        if in_holdout {
            held += 1;
            assert_eq!(
                reasons,
                vec![("a".to_string(), "holdout"), ("b".to_string(), "holdout")]
            );
        } else {
            assert!(reasons.is_empty());
        }
    }
    assert!((70..130).contains(&held), "{held} of 200 held out at 50 %");
}

#[test]
fn exposure_unit_ids_can_be_hashed_or_omitted() {
    let user: &[(&str, &[u8])] = &[("x-user-id", b"alice"), ("x-request-id", b"r-1")];
    for (mode, expected) in [
        ("raw", serde_json::json!({"user": "alice"})),
        (
            "xxh3",
            serde_json::json!({"user": abmesh::hash::xxh3_hex(b"alice")}),
        ),
        ("omit", serde_json::json!({})),
    ] {
        let c = config(
            &format!(r#"{{"key": "k", {AB}}}"#),
            &format!(r#", "exposure": {{"unit_id": "{mode}"}}"#),
        );
        let (plan, _) = run(&c, user, 42);
        let record: serde_json::Value = serde_json::from_str(plan.exposure().unwrap()).unwrap();
        assert_eq!(record["units"], expected, "{mode}");
        assert_eq!(record["ts_ms"], 42);
        assert_eq!(record["request_id"], "r-1");
    }
    assert_eq!(abmesh::hash::xxh3_hex(b"alice").len(), 16);
}

#[test]
fn spoofable_headers_are_removed_whatever_their_case_and_whether_or_not_anything_is_assigned() {
    let c = config(&format!(r#"{{"key": "k", "status": "paused", {AB}}}"#), "");
    let headers: &[(&str, &[u8])] = &[
        ("X-Experiments", b"k=treatment"),
        ("x-exp-k", b"treatment"),
        ("x-exp-", b"x"),
        ("x-abmesh-force", b"k=control"),
        ("x-expx", b"kept"),
        ("x-experiments-other", b"kept"),
    ];
    let (plan, _) = run(&c, headers, 0);
    assert_eq!(
        plan.remove,
        vec![
            b"X-Experiments".to_vec(),
            b"x-exp-k".to_vec(),
            b"x-exp-".to_vec(),
            b"x-abmesh-force".to_vec()
        ]
    );
    assert!(plan.set().is_empty());
}

#[test]
fn every_not_assigned_reason_has_its_label() {
    let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "no_unit",
            "traffic",
            "targeting",
            "layer",
            "holdout",
            "paused",
            "schedule"
        ]
    );
}

#[test]
fn the_exposure_record_goes_to_filter_state_by_default_and_to_the_log_only_when_asked() {
    use abmesh::plan::Effect;
    let kinds = |c: &Config| -> Vec<String> {
        let (plan, _) = run(c, &[("x-user-id", b"alice")], 0);
        plan.effects()
            .iter()
            .map(|e| match e {
                Effect::RemoveRequestHeader(n) => format!("remove {n}"),
                Effect::SetRequestHeader(n, _) => format!("set {n}"),
                Effect::Log(level, line) => {
                    format!(
                        "log {} {}",
                        level.as_str(),
                        &line[..line.find(' ').unwrap()]
                    )
                }
                Effect::SetFilterState(n, _) => format!("filter state {n}"),
            })
            .collect()
    };
    let default = config(&format!(r#"{{"key": "k", {AB}}}"#), "");
    assert!(!default.exposure.log);
    assert_eq!(
        kinds(&default),
        [
            "set x-experiments",
            "filter state abmesh_exposure",
            "filter state abmesh_assignments",
            "filter state abmesh_units"
        ]
    );
    let logged = config(
        &format!(r#"{{"key": "k", {AB}}}"#),
        r#", "exposure": {"log": true, "log_level": "warn"}"#,
    );
    assert_eq!(
        kinds(&logged),
        [
            "set x-experiments",
            "log warn abmesh.exposure",
            "filter state abmesh_exposure",
            "filter state abmesh_assignments",
            "filter state abmesh_units"
        ]
    );
}

#[test]
fn every_request_with_a_unit_carries_its_units_for_the_access_log_assigned_or_not() {
    let c = config(
        &format!(r#"{{"key": "k", "when": {{"path_prefix": ["/checkout"]}}, {AB}}}"#),
        "",
    );
    let units = |path: &[u8], headers: &[(&str, &[u8])]| {
        let mut all = vec![(":path", path)];
        all.extend_from_slice(headers);
        Plan::new(&c, &RequestView::new(&all), 0).0.units
    };
    // Not assigned (targeting), yet attributed: a later goal request of an exposed unit.
    assert_eq!(
        units(b"/home", &[("x-user-id", b"alice")]).as_deref(),
        Some(r#"{"user":"alice"}"#)
    );
    let odd = units(b"/home", &[("x-user-id", b"a\"b\xff")]);
    assert_eq!(odd.as_deref(), Some("{\"user\":\"a\\\"b\u{fffd}\"}"));
    assert_eq!(units(b"/home", &[]), None);
    let hashed = config(
        &format!(r#"{{"key": "k", {AB}}}"#),
        r#", "exposure": {"unit_id": "xxh3"}"#,
    );
    let (plan, _) = Plan::new(
        &hashed,
        &RequestView::new(&[("x-user-id", &b"alice"[..])]),
        0,
    );
    assert_eq!(
        plan.units.as_deref(),
        Some(format!(r#"{{"user":"{}"}}"#, abmesh::hash::xxh3_hex(b"alice")).as_str())
    );
    let omitted = config(
        &format!(r#"{{"key": "k", {AB}}}"#),
        r#", "exposure": {"unit_id": "omit"}"#,
    );
    let (plan, _) = Plan::new(
        &omitted,
        &RequestView::new(&[("x-user-id", &b"alice"[..])]),
        0,
    );
    assert_eq!(plan.units, None);
}

#[test]
fn repeated_override_lines_are_one_list_and_a_later_member_wins() {
    let c = config(
        &format!(r#"{{"key": "a", {AB}}}, {{"key": "b", {AB}}}, {{"key": "c", {AB}}}"#),
        "",
    );
    let (plan, _) = run(
        &c,
        &[
            ("x-abmesh-token", b"demo-qa-token"),
            ("x-abmesh-force", b"a=treatment, b=treatment"),
            ("x-user-id", b"u"),
            ("x-abmesh-force", b"b=control, c=treatment"),
        ],
        0,
    );
    let dict = plan.assignments.unwrap();
    assert_eq!(
        dict,
        "a=treatment;forced, b=control;forced, c=treatment;forced"
    );
}

#[test]
fn an_override_of_thousands_of_members_forces_what_its_last_members_say() {
    let keys: Vec<String> = (0..100).map(|i| format!("e{i}")).collect();
    let exps: Vec<String> = keys
        .iter()
        .map(|k| format!(r#"{{"key": "{k}", {AB}}}"#))
        .collect();
    let c = config(&exps.join(","), "");
    // 6,000 members: 60 rounds over the 100 experiments and a few unknown keys; the last round
    // forces treatment everywhere.
    let mut members = Vec::new();
    for round in 0..60 {
        let v = if round == 59 { "treatment" } else { "control" };
        members.extend(keys.iter().map(|k| format!("{k}={v}")));
    }
    members.truncate(5_990);
    members.extend((0..10).map(|i| format!("unknown{i}=x")));
    let header = members.join(", ");
    let (plan, _) = run(
        &c,
        &[
            ("x-abmesh-token", b"demo-qa-token"),
            ("x-abmesh-force", header.as_bytes()),
        ],
        0,
    );
    let dict = plan.assignments.unwrap();
    let treatment = dict.matches("=treatment;forced").count();
    let control = dict.matches("=control;forced").count();
    // The last round lost its final 10 members to the truncation: those 10 keep control.
    assert_eq!((treatment, control), (90, 10));
}

#[test]
fn the_otel_format_records_one_map_of_feature_flag_attributes_per_exposure() {
    let two = format!(r#"{{"key": "k", {AB}}}, {{"key": "search", {AB}}}"#);
    let c = config(&two, r#", "exposure": {"format": "otel"}"#);
    let (plan, _) = run(
        &c,
        &[
            ("x-user-id", b"alice"),
            ("x-request-id", b"r-1"),
            ("x-abmesh-token", b"demo-qa-token"),
            ("x-abmesh-force", b"search=treatment"),
        ],
        1_795_000_000_123,
    );
    let record: serde_json::Value = serde_json::from_str(plan.exposure().unwrap()).unwrap();
    let variant = record["evaluations"][0]["feature_flag.result.variant"].clone();
    assert_eq!(
        record,
        serde_json::json!({
            "ts_ms": 1_795_000_000_123_i64,
            "request_id": "r-1",
            "evaluations": [
                {"feature_flag.key": "k", "feature_flag.result.variant": variant,
                 "feature_flag.result.reason": "split", "feature_flag.provider.name": "abmesh",
                 "abmesh.unit": "user", "feature_flag.context.id": "alice"},
                {"feature_flag.key": "search", "feature_flag.result.variant": "treatment",
                 "feature_flag.result.reason": "targeting_match",
                 "feature_flag.provider.name": "abmesh", "abmesh.unit": "user",
                 "feature_flag.context.id": "alice"}
            ]
        })
    );
    // The same bytes the filter writes: no whitespace, context id last.
    assert!(plan.exposure().unwrap().starts_with(
        r#"{"ts_ms":1795000000123,"request_id":"r-1","evaluations":[{"feature_flag.key":"k","#
    ));
    assert!(plan.exposure().unwrap().ends_with(
        r#""feature_flag.provider.name":"abmesh","abmesh.unit":"user","feature_flag.context.id":"alice"}]}"#
    ));
}

#[test]
fn the_otel_format_carries_the_unit_id_as_exposure_unit_id_says() {
    let one = format!(r#"{{"key": "k", {AB}}}"#);
    let context_id = |unit_id: &str| {
        let c = config(
            &one,
            &format!(r#", "exposure": {{"format": "otel", "unit_id": "{unit_id}"}}"#),
        );
        let (plan, _) = run(&c, &[("x-user-id", b"a\"b\xff")], 0);
        let record: serde_json::Value = serde_json::from_str(plan.exposure().unwrap()).unwrap();
        record["evaluations"][0]
            .get("feature_flag.context.id")
            .cloned()
    };
    assert_eq!(context_id("raw"), Some(serde_json::json!("a\"b\u{fffd}")));
    assert_eq!(
        context_id("xxh3"),
        Some(serde_json::json!(abmesh::hash::xxh3_hex(b"a\"b\xff")))
    );
    assert_eq!(context_id("omit"), None);
}

#[test]
fn an_unknown_exposure_format_is_refused_naming_both_formats() {
    let err = Config::parse(
        br#"{"units": {"user": [{"header": "x-user-id"}]}, "exposure": {"format": "otlp"},
             "experiments": []}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.errors,
        [
            "exposure.format: must be \"abmesh\" (one record of assignments) or \"otel\" \
          (OpenTelemetry feature-flag attributes per assignment), found \"otlp\""
        ]
    );
}

#[test]
fn header_conditions_hold_as_documented_for_present_and_absent_values() {
    let c = config(
        &format!(
            r#"{{"key": "p", "when": {{"headers": {{"x-email": {{"prefix": "admin@"}}}}}}, {AB}}},
               {{"key": "s", "when": {{"headers": {{"x-email": {{"suffix": "@example.com"}}}}}}, {AB}}},
               {{"key": "n", "when": {{"headers": {{"x-email": {{"not_in": ["a@b.c"]}}}}}}, {AB}}}"#
        ),
        "",
    );
    let assigned = |email: Option<&str>| {
        let mut headers: Vec<(&str, &[u8])> = vec![("x-user-id", b"u1")];
        if let Some(e) = email {
            headers.push(("x-email", e.as_bytes()));
        }
        let (plan, _) = run(&c, &headers, 0);
        let dict = plan.assignments.unwrap_or_default();
        ["p", "s", "n"]
            .into_iter()
            .filter(|k| dict.split(", ").any(|m| m.starts_with(&format!("{k}="))))
            .collect::<Vec<_>>()
    };
    assert_eq!(assigned(Some("admin@example.com")), ["p", "s", "n"]);
    assert_eq!(assigned(Some("bob@example.org")), ["n"]);
    assert_eq!(assigned(Some("a@b.c")), Vec::<&str>::new());
    // Absent: in no list, so `not_in` passes; no prefix or suffix.
    assert_eq!(assigned(None), ["n"]);
}

#[test]
fn any_needs_one_of_its_alternatives_beside_every_other_condition() {
    let c = config(
        &format!(
            r#"{{"key": "k", "when": {{"path_prefix": ["/shop"], "any": [
                 {{"headers": {{"x-country": {{"in": ["CA"]}}}}}},
                 {{"cookies": {{"plan": {{"in": ["pro"]}}}}, "headers": {{"x-beta": {{"present": true}}}}}}]}}, {AB}}}"#
        ),
        "",
    );
    let assigned = |path: &[u8], extra: &[(&str, &[u8])]| {
        let mut headers: Vec<(&str, &[u8])> = vec![("x-user-id", b"u1"), (":path", path)];
        headers.extend_from_slice(extra);
        run(&c, &headers, 0).0.assignments.is_some()
    };
    assert!(assigned(b"/shop", &[("x-country", b"CA")]));
    assert!(assigned(
        b"/shop",
        &[("cookie", b"plan=pro"), ("x-beta", b"1")]
    ));
    assert!(!assigned(b"/shop", &[("cookie", b"plan=pro")]));
    assert!(!assigned(b"/shop", &[("x-country", b"US")]));
    assert!(!assigned(b"/home", &[("x-country", b"CA")]));
    let errors = Config::parse(
        br#"{"units": {"user": [{"header": "u"}]}, "experiments": [
          {"key": "a", "when": {"any": []}, "variants": [{"name": "v", "weight": 1}]},
          {"key": "b", "when": {"any": [{"any": [{}]}]}, "variants": [{"name": "v", "weight": 1}]}]}"#,
    )
    .unwrap_err()
    .errors;
    assert_eq!(
        errors,
        [
            "experiments[0].when.any: must be a non-empty list of conditions like `when`'s, one of which must hold",
            "experiments[1].when.any[0]: unknown field \"any\"; expected one of: path_prefix, methods, hosts, headers, cookies, query",
        ]
    );
}
