#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Configuration errors: every problem is reported, each with its JSON path and the rule, in
//! exactly these words.

use abmesh::Config;

fn errors(json: &str) -> Vec<String> {
    Config::parse(json.as_bytes())
        .expect_err("the configuration should be refused")
        .errors
}

fn one_error(json: &str) -> String {
    let e = errors(json);
    assert_eq!(e.len(), 1, "expected exactly one error, got {e:#?}");
    e[0].clone()
}

/// A valid experiment list around one experiment body.
fn with_experiment(body: &str) -> String {
    format!(r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}}, "experiments": [{body}]}}"#)
}

const AB: &str = r#""variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]"#;

#[test]
fn malformed_json_names_line_and_column() {
    assert_eq!(
        one_error("{\n  \"units\": {\n    \"user\": [}\n}"),
        "config: invalid JSON at line 3, column 14: expected a value (string, number, object, list, true, false or null)"
    );
    assert_eq!(
        one_error("{\"units\": {}"),
        "config: invalid JSON at line 1, column 12: the document ends too early (unclosed object, list or string?)"
    );
    assert_eq!(
        one_error("{\"experiments\": [],}"),
        "config: invalid JSON at line 1, column 20: trailing comma"
    );
    assert_eq!(one_error("[]"), "config: must be an object, found a list");
}

#[test]
fn unknown_fields_are_named_wherever_they_are() {
    assert_eq!(
        one_error(&with_experiment(&format!(r#"{{"key": "k", "trafic_percent": 5, {AB}}}"#))),
        "experiments[0]: unknown field \"trafic_percent\"; expected one of: key, algorithm, hash_version, seed, coverage, \
         namespace, ranges, flag_key, bucket_by_seed, bucketing, unit, salt, status, traffic_percent, ramp, variants, layer, when, start, end, route_header, winner"
    );
    assert_eq!(
        one_error(&with_experiment(
            r#"{"key": "k", "variants": [{"name": "a", "weight": 1, "weigth": 2}]}"#
        )),
        "experiments[0].variants[0]: unknown field \"weigth\"; expected one of: name, weight, value"
    );
    assert_eq!(
        one_error(&with_experiment(&format!(r#"{{"key": "k", "when": {{"path": ["/"]}}, {AB}}}"#))),
        "experiments[0].when: unknown field \"path\"; expected one of: path_prefix, methods, hosts, headers, cookies, query, any"
    );
    assert_eq!(
        one_error(r#"{"units": {"user": [{"header": "x-user-id", "cookie": "uid"}]}}"#),
        "units.user[0]: must have exactly one of \"header\", \"cookie\" or \"query\""
    );
    assert_eq!(
        one_error(r#"{"output": {"headers": "x"}}"#),
        "output: unknown field \"headers\"; expected one of: header, route_header_prefix, response_header, baggage, \
         max_header_bytes"
    );
}

#[test]
fn keys_and_variant_names_must_follow_their_syntax() {
    assert_eq!(
        one_error(&with_experiment(&format!(r#"{{"key": "New_Checkout", {AB}}}"#))),
        "experiments[0].key: \"New_Checkout\" must start with a lower-case letter and have at most 64 characters \
         from a-z, 0-9, '_', '.', '-'"
    );
    assert_eq!(
        one_error(&with_experiment(r#"{"key": "k", "variants": [{"name": "1st", "weight": 1}]}"#)),
        "experiments[0].variants[0].name: \"1st\" must start with a letter and have at most 64 characters \
         from A-Z, a-z, 0-9, '_', '.', '-'"
    );
    let long = "k".repeat(65);
    assert!(
        one_error(&with_experiment(&format!(r#"{{"key": "{long}", {AB}}}"#)))
            .starts_with(&format!("experiments[0].key: \"{long}\" must start"))
    );
    assert!(Config::parse(
        with_experiment(&format!(r#"{{"key": "{}", {AB}}}"#, "k".repeat(64))).as_bytes()
    )
    .is_ok());
}

#[test]
fn duplicate_keys_and_variants_point_at_the_first_use() {
    let json = format!(
        r#"{{"units": {{"user": [{{"header": "u"}}]}}, "experiments": [{{"key": "a", {AB}}}, {{"key": "b", {AB}}}, {{"key": "a", {AB}}}]}}"#
    );
    assert_eq!(
        one_error(&json),
        "experiments[2].key: duplicate experiment key \"a\" (first used at experiments[0])"
    );
    assert_eq!(
        one_error(&with_experiment(r#"{"key": "k", "variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]}"#)),
        "experiments[0].variants[1].name: duplicate variant \"a\" (first used at experiments[0].variants[0])"
    );
}

#[test]
fn weights_must_be_non_negative_integers_not_all_zero() {
    assert_eq!(
        one_error(&with_experiment(
            r#"{"key": "k", "variants": [{"name": "a", "weight": -1}]}"#
        )),
        "experiments[0].variants[0].weight: must be a non-negative integer, found -1"
    );
    assert_eq!(
        one_error(&with_experiment(
            r#"{"key": "k", "variants": [{"name": "a", "weight": 0.5}]}"#
        )),
        "experiments[0].variants[0].weight: must be a non-negative integer, found 0.5"
    );
    assert_eq!(
        one_error(&with_experiment(
            r#"{"key": "k", "variants": [{"name": "a", "weight": "1"}]}"#
        )),
        "experiments[0].variants[0].weight: must be a non-negative integer, found \"1\""
    );
    assert_eq!(
        one_error(&with_experiment(
            r#"{"key": "k", "variants": [{"name": "a", "weight": 0}, {"name": "b", "weight": 0}]}"#
        )),
        "experiments[0].variants: weights must not all be zero"
    );
    assert_eq!(
        one_error(&with_experiment(r#"{"key": "k", "variants": []}"#)),
        "experiments[0].variants: must have at least one variant"
    );
}

#[test]
fn traffic_must_be_a_percentage_with_at_most_two_decimals() {
    for (t, msg) in [
        ("100.5", "must be a number from 0 to 100, found 100.5"),
        ("-1", "must be a number from 0 to 100, found -1"),
        ("33.333", "must have at most two decimals, found 33.333"),
        ("\"50\"", "must be a number from 0 to 100, found a string"),
    ] {
        assert_eq!(
            one_error(&with_experiment(&format!(
                r#"{{"key": "k", "traffic_percent": {t}, {AB}}}"#
            ))),
            format!("experiments[0].traffic_percent: {msg}")
        );
    }
    for ok in ["0", "100", "33.33", "0.01", "12.5"] {
        let c = Config::parse(
            with_experiment(&format!(r#"{{"key": "k", "traffic_percent": {ok}, {AB}}}"#))
                .as_bytes(),
        );
        assert!(c.is_ok(), "{ok}: {c:?}");
    }
    let c = Config::parse(
        with_experiment(&format!(
            r#"{{"key": "k", "traffic_percent": 33.33, {AB}}}"#
        ))
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(c.experiments[0].traffic_bp, 3333);
}

#[test]
fn units_must_be_defined_and_named_when_ambiguous() {
    let two = r#""units": {"user": [{"header": "x-user-id"}], "device": [{"cookie": "did"}]}"#;
    assert_eq!(
        one_error(&format!(
            r#"{{{two}, "experiments": [{{"key": "k", "unit": "usr", {AB}}}]}}"#
        )),
        "experiments[0].unit: unknown unit type \"usr\" (defined in units: device, user)"
    );
    assert_eq!(
        one_error(&format!(
            r#"{{{two}, "experiments": [{{"key": "k", {AB}}}]}}"#
        )),
        "experiments[0].unit: is required because units defines 2 unit types, not exactly one"
    );
    assert_eq!(
        one_error(r#"{"units": {"user": []}}"#),
        "units.user: must list at least one source ({\"header\": ...}, {\"cookie\": ...} or {\"query\": ...})"
    );
    assert_eq!(
        one_error(r#"{"units": {"user": [{"header": "x user"}]}}"#),
        "units.user[0].header: \"x user\" is not a valid header name"
    );
}

#[test]
fn layers_reject_overlaps_and_unit_mismatches() {
    let base = r#""units": {"user": [{"header": "u"}], "device": [{"cookie": "d"}]}, "layers": {"l": {"unit": "user"}}"#;
    let exp = |key: &str, extra: &str| format!(r#"{{"key": "{key}", {extra} {AB}}}"#);
    assert_eq!(
        one_error(&format!(
            r#"{{{base}, "experiments": [{}, {}]}}"#,
            exp("a", r#""layer": {"name": "l", "buckets": [0, 5000]},"#),
            exp("b", r#""layer": {"name": "l", "buckets": [4000, 6000]},"#)
        )),
        "experiments[1].layer.buckets: [4000, 6000) overlaps [0, 5000) of experiment \"a\" (experiments[0]) in layer \"l\""
    );
    assert_eq!(
        one_error(&format!(r#"{{{base}, "experiments": [{}]}}"#, exp("a", r#""unit": "device", "layer": {"name": "l", "buckets": [0, 5000]},"#))),
        "experiments[0].unit: must be omitted or equal to the unit of layer \"l\" (\"user\"), found \"device\""
    );
    assert_eq!(
        one_error(&format!(r#"{{{base}, "experiments": [{}]}}"#, exp("a", r#""layer": {"name": "l", "buckets": [5000, 5000]},"#))),
        "experiments[0].layer.buckets: must be [start, end] with 0 <= start < end <= 10000, found [5000,5000]"
    );
    assert_eq!(
        one_error(&format!(
            r#"{{{base}, "experiments": [{}]}}"#,
            exp("a", r#""layer": {"name": "nope", "buckets": [0, 1]},"#)
        )),
        "experiments[0].layer.name: unknown layer \"nope\" (define it under layers)"
    );
    // Adjacent ranges do not overlap, and a layer's unit is the experiment's default.
    let ok = format!(
        r#"{{{base}, "experiments": [{}, {}]}}"#,
        exp("a", r#""layer": {"name": "l", "buckets": [0, 5000]},"#),
        exp("b", r#""layer": {"name": "l", "buckets": [5000, 10000]},"#)
    );
    let c = Config::parse(ok.as_bytes()).unwrap();
    assert_eq!(c.units[c.experiments[1].unit].name, "user");
}

#[test]
fn rollouts_need_a_known_winner() {
    assert_eq!(
        one_error(&with_experiment(&format!(
            r#"{{"key": "k", "status": "rolled_out", {AB}}}"#
        ))),
        "experiments[0].winner: is required when status is \"rolled_out\""
    );
    assert_eq!(
        one_error(&with_experiment(&format!(
            r#"{{"key": "k", "status": "rolled_out", "winner": "c", {AB}}}"#
        ))),
        "experiments[0].winner: unknown variant \"c\" (variants: a, b)"
    );
    assert_eq!(
        one_error(&with_experiment(&format!(
            r#"{{"key": "k", "status": "done", {AB}}}"#
        ))),
        "experiments[0].status: must be \"running\", \"paused\" or \"rolled_out\", found \"done\""
    );
}

#[test]
fn schedules_need_rfc_3339_times_in_order() {
    assert_eq!(
        one_error(&with_experiment(&format!(r#"{{"key": "k", "start": "2026-11-01", {AB}}}"#))),
        "experiments[0].start: must be an RFC 3339 time such as 2026-11-01T00:00:00Z, found \"2026-11-01\""
    );
    assert_eq!(
        one_error(&with_experiment(&format!(
            r#"{{"key": "k", "start": "2026-12-01T00:00:00Z", "end": "2026-12-01T01:00:00+02:00", {AB}}}"#
        ))),
        "experiments[0].end: must be after start"
    );
}

#[test]
fn limits_are_enforced() {
    let many: Vec<String> = (0..1001)
        .map(|i| format!(r#"{{"key": "e{i}", {AB}}}"#))
        .collect();
    // Within every output limit, so the count is the one error.
    let roomy = r#""metrics": {"replicates": 0}, "output": {"max_header_bytes": 61440},
        "exposure": {"max_record_bytes": 131072}"#;
    assert_eq!(
        one_error(&format!(
            r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}}, {roomy}, "experiments": [{}]}}"#,
            many.join(",")
        )),
        "experiments: at most 1000 experiments are allowed, found 1001"
    );
    let variants: Vec<String> = (0..101)
        .map(|i| format!(r#"{{"name": "v{i}", "weight": 1}}"#))
        .collect();
    assert_eq!(
        one_error(&with_experiment(&format!(
            r#"{{"key": "k", "variants": [{}]}}"#,
            variants.join(",")
        ))),
        "experiments[0].variants: at most 100 variants are allowed, found 101"
    );
    let big = format!(r#"{{"units": {{}}, "pad": "{}"}}"#, "x".repeat(1024 * 1024));
    assert_eq!(
        one_error(&big),
        format!(
            "config: must be at most 1 MiB (1048576 bytes), found {} bytes",
            big.len()
        )
    );
}

#[test]
fn token_digests_must_be_sha256_hex() {
    assert_eq!(
        one_error(r#"{"overrides": {"token_sha256": ["abc"]}}"#),
        "overrides.token_sha256[0]: must be 64 hexadecimal characters (a SHA-256 digest), found \"abc\""
    );
    let upper = "A".repeat(64);
    assert!(Config::parse(
        format!(r#"{{"overrides": {{"token_sha256": ["{upper}"]}}}}"#).as_bytes()
    )
    .is_ok());
    let bad = format!("{}g", "a".repeat(63));
    assert_eq!(
        one_error(&format!(r#"{{"overrides": {{"token_sha256": ["{bad}"]}}}}"#)),
        format!("overrides.token_sha256[0]: must be 64 hexadecimal characters (a SHA-256 digest), found \"{bad}\"")
    );
}

#[test]
fn a_config_with_many_problems_reports_every_one() {
    let json = r#"{
      "units": {"user": [{"header": "x-user-id"}], "device": [{"cokie": "did"}]},
      "holdout": {"unit": "user", "salt": "h", "percent": 120},
      "layers": {"l": {"unit": "user"}},
      "experiments": [
        {"key": "Bad Key", "variants": [{"name": "a", "weight": 1}], "unit": "user"},
        {"key": "dup", "unit": "user", "variants": [{"name": "a", "weight": 0}]},
        {"key": "dup", "unit": "user", "traffic_percent": 12.345, "variants": [{"name": "a", "weight": 1}]},
        {"key": "r", "unit": "user", "status": "rolled_out", "variants": [{"name": "a", "weight": 1}]},
        {"key": "t", "unit": "user", "start": "yesterday", "variants": [{"name": "a", "weight": 1}]},
        {"key": "l1", "layer": {"name": "l", "buckets": [0, 6000]}, "variants": [{"name": "a", "weight": 1}]},
        {"key": "l2", "layer": {"name": "l", "buckets": [5000, 10000]}, "variants": [{"name": "a", "weight": 1}]}
      ],
      "exposure": {"unit_id": "md5"},
      "overrides": {"token_sha256": ["xyz"]}
    }"#;
    assert_eq!(
        errors(json),
        vec![
            "units.device[0]: unknown field \"cokie\"; expected one of: header, cookie, query",
            "units.device[0]: must have exactly one of \"header\", \"cookie\" or \"query\"",
            "holdout.percent: must be a number from 0 to 100, found 120",
            "experiments[0].key: \"Bad Key\" must start with a lower-case letter and have at most 64 characters from a-z, 0-9, '_', '.', '-'",
            "experiments[1].variants: weights must not all be zero",
            "experiments[2].key: duplicate experiment key \"dup\" (first used at experiments[1])",
            "experiments[2].traffic_percent: must have at most two decimals, found 12.345",
            "experiments[3].winner: is required when status is \"rolled_out\"",
            "experiments[4].start: must be an RFC 3339 time such as 2026-11-01T00:00:00Z, found \"yesterday\"",
            "experiments[6].layer.buckets: [5000, 10000) overlaps [0, 6000) of experiment \"l1\" (experiments[5]) in layer \"l\"",
            "exposure.unit_id: must be \"raw\", \"xxh3\" or \"omit\", found \"md5\"",
            "overrides.token_sha256[0]: must be 64 hexadecimal characters (a SHA-256 digest), found \"xyz\"",
        ]
    );
}

#[test]
fn keyword_fields_name_every_allowed_value() {
    let json = r#"{"units": {"user": [{"header": "x-user-id"}]},
      "experiments": [{"key": "e", "status": "stopped", "variants": [{"name": "a", "weight": 1}]}],
      "exposure": {"log_level": "loud"}}"#;
    assert_eq!(
        errors(json),
        vec![
            "experiments[0].status: must be \"running\", \"paused\" or \"rolled_out\", found \"stopped\"",
            "exposure.log_level: must be one of trace, debug, info, warn, error, critical, found \"loud\"",
        ]
    );
}
