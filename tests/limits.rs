#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! The configuration limits: a configuration at each limit is accepted, one step over it is
//! refused with the count and the limit, and each computed worst case is one a request can
//! actually reach.

use abmesh::config::limits::{bounds, MAX_SERIES};
use abmesh::plan::Plan;
use abmesh::{Config, RequestView};

const TOKEN: &str = "demo-qa-token";
const TOKEN_SHA: &str = "c83f048e00253c5f4fd6f298789ef4355b75f919ea9b16f86e0a83dcfa0c9697";

/// An experiment `key` with `variants` variants named `name(j)`.
fn experiment(key: &str, variants: usize, name: impl Fn(usize) -> String, extra: &str) -> String {
    let v: Vec<String> = (0..variants)
        .map(|j| format!(r#"{{"name": "{}", "weight": 1}}"#, name(j)))
        .collect();
    format!(
        r#"{{"key": "{key}", "variants": [{}]{extra}}}"#,
        v.join(",")
    )
}

fn config_json(top: &str, experiments: &[String]) -> String {
    format!(
        r#"{{"units": {{"user": [{{"header": "x-user-id"}}]}},
            "overrides": {{"token_sha256": ["{TOKEN_SHA}"]}}{top},
            "experiments": [{}]}}"#,
        experiments.join(",")
    )
}

/// A 64-character name starting with `p` and `i`.
fn long(p: &str, i: usize) -> String {
    format!("{p}{i:03}")
        .chars()
        .chain(std::iter::repeat('x'))
        .take(64)
        .collect()
}

fn errors(json: &str) -> Vec<String> {
    Config::parse(json.as_bytes())
        .expect_err("the configuration should be refused")
        .errors
}

fn short(j: usize) -> String {
    format!("v{j}")
}

/// 64 experiments of 3,982 variants in all, no replicates: 2 + 64 × 7 + 3,982 × 25 series.
fn series_experiments(extra_variant: bool) -> Vec<String> {
    let mut sizes = vec![100; 39];
    sizes.push(58 + usize::from(extra_variant));
    sizes.extend([1; 24]);
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| experiment(&format!("e{i}"), n, short, ""))
        .collect()
}

#[test]
fn a_configuration_with_exactly_the_most_series_is_accepted() {
    let c = Config::parse(
        config_json(
            r#", "metrics": {"replicates": 0}"#,
            &series_experiments(false),
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(bounds(&c).series, MAX_SERIES);
}

#[test]
fn one_variant_more_than_the_series_budget_is_refused_with_the_count_and_the_limit() {
    let json = config_json(
        r#", "metrics": {"replicates": 0}"#,
        &series_experiments(true),
    );
    assert_eq!(
        errors(&json),
        ["metrics: the experiments can create 100,025 Envoy stats series, more than the limit of \
          100,000 (per experiment 7, per variant 25 + 4 per replicate with metrics.replicates 0, \
          and 2): use fewer experiments or variants, or fewer replicates"]
    );
}

#[test]
fn replicates_count_four_series_per_variant_each() {
    // One experiment of 100 variants: 2 + 7 + 100 × (25 + 4 × 256).
    let json = config_json(
        r#", "metrics": {"replicates": 256}"#,
        &[experiment("wide", 100, short, "")],
    );
    assert_eq!(
        errors(&json),
        ["metrics: the experiments can create 104,909 Envoy stats series, more than the limit of \
          100,000 (per experiment 7, per variant 25 + 4 per replicate with metrics.replicates \
          256, and 2): use fewer experiments or variants, or fewer replicates"]
    );
}

/// 59 experiments with 64-character keys and variant names, and one whose key and variant add
/// up to `tail` characters: `x-experiments` plus the dictionary is 11 + 138 × 59 + tail + 10.
fn header_experiments(tail: usize) -> Vec<String> {
    let mut out: Vec<String> = (0..59)
        .map(|i| experiment(&long("e", i), 2, |j| long("V", j), ""))
        .collect();
    let key: String = "tail"
        .chars()
        .chain(std::iter::repeat('k'))
        .take(20)
        .collect();
    out.push(experiment(&key, 1, |_| "V".repeat(tail - 20), ""));
    out
}

#[test]
fn headers_of_exactly_output_max_header_bytes_are_accepted() {
    let c = Config::parse(config_json("", &header_experiments(29)).as_bytes()).unwrap();
    assert_eq!(bounds(&c).header_bytes, 8192);
}

#[test]
fn one_byte_of_headers_more_than_output_max_header_bytes_is_refused() {
    assert_eq!(
        errors(&config_json("", &header_experiments(30))),
        [
            "output: the headers abmesh adds to a request can reach 8,193 bytes (the assignments \
          dictionary and the route headers with every experiment assigned), more than \
          output.max_header_bytes (8,192): use fewer or shorter experiment keys and variant \
          names, fewer route headers, or raise output.max_header_bytes"
        ]
    );
    let raised = config_json(
        r#", "output": {"max_header_bytes": 8193}"#,
        &header_experiments(30),
    );
    assert!(Config::parse(raised.as_bytes()).is_ok());
}

#[test]
fn route_headers_count_against_the_same_budget() {
    // 31 experiments: 13 + (31 × 138 − 2) bytes of dictionary, and without route headers that
    // is all; with them, 31 × (x-exp-<64> and a 64-byte value) more.
    let exps = |extra: &str| -> Vec<String> {
        (0..31)
            .map(|i| experiment(&long("e", i), 2, |j| long("V", j), extra))
            .collect()
    };
    assert!(Config::parse(config_json("", &exps("")).as_bytes()).is_ok());
    assert_eq!(
        errors(&config_json("", &exps(r#", "route_header": true"#))),
        [
            "output: the headers abmesh adds to a request can reach 8,443 bytes (the assignments \
          dictionary and the route headers with every experiment assigned), more than \
          output.max_header_bytes (8,192): use fewer or shorter experiment keys and variant \
          names, fewer route headers, or raise output.max_header_bytes"
        ]
    );
}

#[test]
fn output_max_header_bytes_must_be_within_envoys_own_limit() {
    assert_eq!(
        errors(&config_json(r#", "output": {"max_header_bytes": 61441}"#, &[experiment("k", 2, short, "")])),
        ["output.max_header_bytes: must be an integer from 256 to 61440 (Envoy's default limit on \
          request headers), found 61441"]
    );
    assert_eq!(
        errors(&config_json(
            r#", "exposure": {"max_record_bytes": 100}"#,
            &[experiment("k", 2, short, "")]
        )),
        ["exposure.max_record_bytes: must be an integer from 1024 to 1048576, found 100"]
    );
}

/// A request that forces every experiment to its longest variant, with the longest unit id
/// made of control characters (each a 6-byte JSON escape) and the longest request id.
fn worst_request(c: &Config) -> (Plan<'_>, usize) {
    let forced: Vec<String> = c
        .experiments
        .iter()
        .map(|e| {
            let v = e.variants.iter().max_by_key(|v| v.name.len()).unwrap();
            format!("{}={}", e.key, v.name)
        })
        .collect();
    let forced = forced.join(", ");
    let unit = vec![1u8; 512];
    let request_id = vec![2u8; 128];
    let headers: Vec<(&str, &[u8])> = vec![
        (":path", b"/"),
        ("x-user-id", &unit),
        ("x-request-id", &request_id),
        ("x-abmesh-token", TOKEN.as_bytes()),
        ("x-abmesh-force", forced.as_bytes()),
    ];
    let (plan, _) = Plan::new(c, &RequestView::new(&headers), 1_795_000_000_000);
    let added = plan
        .assignments
        .as_ref()
        .map_or(0, |d| c.output.header.len() + d.len())
        + plan
            .route
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>();
    (plan, added)
}

#[test]
fn the_worst_case_headers_and_record_are_reached_by_a_real_request() {
    let mut exps: Vec<String> = (0..20)
        .map(|i| {
            experiment(
                &long("e", i),
                3,
                |j| long("V", j),
                r#", "route_header": true"#,
            )
        })
        .collect();
    exps.push(experiment("short", 2, short, ""));
    let c = Config::parse(config_json("", &exps).as_bytes()).unwrap();
    let b = bounds(&c);
    let (plan, added) = worst_request(&c);
    assert_eq!(plan.assignments.as_ref().unwrap().len(), b.dictionary_bytes);
    assert_eq!(added, b.header_bytes);
    // The bound also reserves room for a 20-character time (this one has 13) and for `false`
    // where these 21 forced entries say `true`.
    let record = plan.exposure().unwrap();
    let slack = (20 - 13) + 21;
    assert_eq!(
        record.len() + slack,
        b.record_bytes,
        "record {} slack {slack}",
        record.len()
    );
}

#[test]
fn the_worst_case_otel_record_is_reached_by_a_real_request() {
    let mut exps: Vec<String> = (0..20)
        .map(|i| experiment(&long("e", i), 3, |j| long("V", j), ""))
        .collect();
    exps.push(experiment("short", 2, short, ""));
    let top = r#", "exposure": {"format": "otel", "max_record_bytes": 1048576}"#;
    let c = Config::parse(config_json(top, &exps).as_bytes()).unwrap();
    let b = bounds(&c);
    let (plan, _) = worst_request(&c);
    let record = plan.exposure().unwrap();
    let parsed: serde_json::Value = serde_json::from_str(record).unwrap();
    assert_eq!(parsed["evaluations"].as_array().unwrap().len(), 21);
    // Forced maps (`targeting_match`) are the longest: the bound only reserves a 20-character
    // time (this one has 13).
    assert_eq!(record.len() + (20 - 13), b.record_bytes);
    // Each evaluation repeats its unit id: at the default limit, raw ids allow 4 experiments.
    let at_default = |n: usize, unit_id: &str| {
        let exps: Vec<String> = (0..n)
            .map(|i| experiment(&format!("e{i}"), 2, short, ""))
            .collect();
        let top = format!(r#", "exposure": {{"format": "otel", "unit_id": "{unit_id}"}}"#);
        Config::parse(config_json(&top, &exps).as_bytes()).map(|_| ())
    };
    assert!(at_default(4, "raw").is_ok());
    assert_eq!(
        at_default(5, "raw").unwrap_err().errors,
        [
            "exposure: an exposure record can reach 17,170 bytes (every experiment exposed, every \
          unit id at 512 bytes), more than exposure.max_record_bytes (16,384): use fewer or \
          shorter experiment keys and variant names, exposure.unit_id \"xxh3\", or raise \
          exposure.max_record_bytes"
        ]
    );
    assert!(at_default(70, "xxh3").is_ok());
}

#[test]
fn a_request_id_longer_than_128_bytes_is_recorded_as_null() {
    let c = Config::parse(config_json("", &[experiment("k", 2, short, "")]).as_bytes()).unwrap();
    for (id, expected) in [
        (129, "null".to_string()),
        (128, format!("\"{}\"", "r".repeat(128))),
    ] {
        let rid = "r".repeat(id);
        let headers: Vec<(&str, &[u8])> = vec![
            (":path", b"/"),
            ("x-user-id", b"alice"),
            ("x-request-id", rid.as_bytes()),
        ];
        let (plan, _) = Plan::new(&c, &RequestView::new(&headers), 1_795_000_000_000);
        let record: serde_json::Value = serde_json::from_str(plan.exposure().unwrap()).unwrap();
        assert_eq!(record["request_id"].to_string(), expected);
    }
}

#[test]
fn an_exposure_record_one_byte_over_exposure_max_record_bytes_is_refused() {
    let c = Config::parse(config_json("", &[experiment("k", 2, short, "")]).as_bytes()).unwrap();
    let at = bounds(&c).record_bytes;
    let json = |cap: usize| {
        config_json(
            &format!(r#", "exposure": {{"max_record_bytes": {cap}}}"#),
            &[experiment("k", 2, short, "")],
        )
    };
    assert!(Config::parse(json(at).as_bytes()).is_ok());
    assert_eq!(
        errors(&json(at - 1)),
        [format!(
            "exposure: an exposure record can reach {} bytes (every experiment exposed, every unit \
             id at 512 bytes), more than exposure.max_record_bytes ({}): use fewer or shorter \
             experiment keys and variant names, exposure.unit_id \"xxh3\", or raise \
             exposure.max_record_bytes",
            group(at),
            group(at - 1)
        )]
    );
}

fn group(n: usize) -> String {
    let s = n.to_string();
    if s.len() <= 3 {
        return s;
    }
    format!("{},{}", &s[..s.len() - 3], &s[s.len() - 3..])
}
