#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! End-to-end tests: the built `dist/abmesh.wasm` in a real Envoy (V8), with the shipped
//! `envoy/envoy.yaml`. Run by `./build.sh test` (`cargo test --features e2e --test e2e`).

mod failure;
mod faults;
mod guardrails;
mod harness;
mod hostile;
mod http;
mod load;
mod progressive;
mod reload;
mod tiers;
mod units;

use std::collections::BTreeMap;

use abmesh::plan::Plan;
use abmesh::{Config, RequestView};
use harness::{render, repo, scratch_dir, validate, Envoy, Ports};
use http::{Client, Response};
use serde_json::Value;

/// A multi-experiment configuration: two unit types, a layer, a holdout, targeting, a
/// rollout, a route header and overrides.
const MULTI: &str = r#"{
  "units": {"user": [{"header": "x-user-id"}, {"cookie": "uid"}], "device": [{"query": "did"}, {"cookie": "did"}]},
  "holdout": {"unit": "user", "salt": "h-2026", "percent": 10},
  "layers": {"checkout": {"unit": "user", "salt": "layer-checkout"}},
  "experiments": [
    {"key": "checkout-v2", "unit": "user", "route_header": true,
     "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 1}]},
    {"key": "pay-button", "layer": {"name": "checkout", "buckets": [0, 5000]},
     "variants": [{"name": "blue", "weight": 1}, {"name": "green", "weight": 1}]},
    {"key": "one-page", "layer": {"name": "checkout", "buckets": [5000, 10000]}, "traffic_percent": 50,
     "variants": [{"name": "control", "weight": 1}, {"name": "treatment", "weight": 3}]},
    {"key": "us-only", "unit": "user", "when": {"headers": {"x-country": {"in": ["US"]}}, "path_prefix": ["/checkout"]},
     "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
    {"key": "device-theme", "unit": "device", "traffic_percent": 33.33,
     "variants": [{"name": "light", "weight": 1}, {"name": "dark", "weight": 1}, {"name": "auto", "weight": 1}]},
    {"key": "banner", "unit": "user", "status": "rolled_out", "winner": "on", "when": {"path_prefix": ["/home"]},
     "variants": [{"name": "off", "weight": 1}, {"name": "on", "weight": 1}]},
    {"key": "old-test", "unit": "user", "status": "paused", "variants": [{"name": "a", "weight": 1}]}
  ],
  "overrides": {"token_sha256": ["c83f048e00253c5f4fd6f298789ef4355b75f919ea9b16f86e0a83dcfa0c9697"]}
}"#;

const TOKEN: &[u8] = b"demo-qa-token";

/// What the upstream echo received: its cluster name and the request headers, as bytes.
fn upstream(resp: &Response) -> (String, Vec<(String, Vec<u8>)>) {
    assert_eq!(
        resp.status,
        200,
        "status {} body {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    let v = resp.json();
    let headers = v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            // The echo decodes bytes as Latin-1: every char is one original byte.
            let bytes = h[1]
                .as_str()
                .unwrap()
                .chars()
                .map(|c| c as u32 as u8)
                .collect();
            (h[0].as_str().unwrap().to_string(), bytes)
        })
        .collect();
    (v["upstream"].as_str().unwrap().to_string(), headers)
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

fn text(b: Option<&[u8]>) -> Option<String> {
    b.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// What the core decides for the same request.
fn core_plan<'c>(
    config: &'c Config,
    method: &[u8],
    path: &[u8],
    headers: &[(&str, &[u8])],
) -> Plan<'c> {
    let mut all: Vec<(&[u8], &[u8])> = vec![
        (b":method", method),
        (b":path", path),
        (b":authority", b"localhost"),
    ];
    all.extend(headers.iter().map(|(n, v)| (n.as_bytes(), *v)));
    Plan::new(config, &RequestView::new(&all), 0).0
}

/// A varied request for unit `i`: the unit comes from a header, a cookie or nowhere; some
/// carry a device id in the query; paths and countries vary.
fn varied_request(i: usize) -> (Vec<u8>, Vec<(&'static str, Vec<u8>)>) {
    let path = ["/checkout", "/home", "/search", "/checkout/pay"][i % 4];
    let mut path = path.as_bytes().to_vec();
    if i % 3 == 0 {
        path.extend_from_slice(format!("?did=dev-{i}&x=1").as_bytes());
    }
    let mut headers: Vec<(&str, Vec<u8>)> = Vec::new();
    match i % 5 {
        0..=2 => headers.push(("x-user-id", format!("user-{i}").into_bytes())),
        3 => headers.push((
            "cookie",
            format!("a=1; uid=cookie-user-{i}; did=dev-c{i}").into_bytes(),
        )),
        _ => {}
    }
    if i % 2 == 0 {
        headers.push((
            "x-country",
            if i % 4 == 0 {
                b"US".to_vec()
            } else {
                b"FR".to_vec()
            },
        ));
    }
    (path, headers)
}

fn borrow<'a>(h: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    h.iter().map(|(n, v)| (*n, v.as_slice())).collect()
}

#[test]
fn upstream_x_experiments_equals_what_the_core_computes_for_2000_units() {
    let config = Config::parse(MULTI.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(MULTI), 2);
    let mut client = Client::new(envoy.ports.listener);
    let mut assigned = 0;
    for i in 0..2000 {
        let (path, headers) = varied_request(i);
        let headers = borrow(&headers);
        let (_, seen) = upstream(&client.get(&path, &headers));
        let want = core_plan(&config, b"GET", &path, &headers);
        assert_eq!(
            text(header(&seen, "x-experiments")),
            want.assignments,
            "unit {i} {headers:?}"
        );
        for (name, value) in want.set() {
            assert_eq!(
                text(header(&seen, name)).as_deref(),
                Some(value),
                "unit {i}"
            );
        }
        assigned += usize::from(want.exposure().is_some());
    }
    assert!(
        assigned > 1000,
        "only {assigned} of 2000 requests had an exposure"
    );
}

#[test]
fn a_route_header_experiment_sends_each_variant_to_its_cluster() {
    let envoy = Envoy::start(None, 1);
    let mut client = Client::new(envoy.ports.listener);
    let mut per_variant: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..300 {
        let id = format!("route-user-{i}");
        let resp = client.get(b"/checkout", &[("x-user-id", id.as_bytes())]);
        let (cluster, seen) = upstream(&resp);
        // The demo configuration echoes the assignments on the response too.
        assert_eq!(
            resp.header("x-experiments"),
            header(&seen, "x-experiments"),
            "{id}"
        );
        let variant = text(header(&seen, "x-exp-checkout-v2"));
        match variant.as_deref() {
            Some("treatment") => assert_eq!(cluster, "checkout_treatment", "{id}"),
            Some("control") | None => assert_eq!(cluster, "checkout_control", "{id}"),
            other => panic!("unexpected variant {other:?}"),
        }
        *per_variant
            .entry(variant.unwrap_or_else(|| "none (holdout)".into()))
            .or_default() += 1;
    }
    assert!(
        per_variant["treatment"] > 100 && per_variant["control"] > 100,
        "{per_variant:?}"
    );
}

#[test]
fn client_sent_experiment_and_override_headers_never_reach_the_upstream() {
    let envoy = Envoy::start(Some(MULTI), 1);
    let mut client = Client::new(envoy.ports.listener);
    let spoof: Vec<(&str, &[u8])> = vec![
        ("x-experiments", b"checkout-v2=treatment"),
        ("X-Exp-Checkout-V2", b"treatment"),
        ("x-exp-anything", b"x"),
        ("x-abmesh-force", b"checkout-v2=treatment"),
        ("x-abmesh-token", b"not-the-token"),
    ];
    // With an assignment, without one (no unit, not on a rollout path), and paused only.
    for (path, unit) in [
        (&b"/checkout"[..], Some(&b"spoofer-1"[..])),
        (b"/search", None),
        (b"/home", None),
    ] {
        let mut headers = spoof.clone();
        if let Some(u) = unit {
            headers.push(("x-user-id", u));
        }
        let (cluster, seen) = upstream(&client.get(path, &headers));
        for (name, _) in &seen {
            assert!(
                !name.starts_with("x-exp-") || unit.is_some(),
                "{name} reached the upstream"
            );
            assert!(
                name != "x-abmesh-force" && name != "x-abmesh-token",
                "{name} reached the upstream"
            );
        }
        let exp = text(header(&seen, "x-experiments"));
        match unit {
            Some(_) => {
                assert_ne!(
                    exp.as_deref(),
                    Some("checkout-v2=treatment"),
                    "spoofed value kept"
                );
                let ours = text(header(&seen, "x-exp-checkout-v2"));
                assert!(exp
                    .unwrap()
                    .contains(&format!("checkout-v2={}", ours.clone().unwrap())));
                assert_eq!(
                    seen.iter().filter(|(n, _)| n.starts_with("x-exp-")).count(),
                    1,
                    "{seen:?}"
                );
                assert_eq!(
                    cluster == "checkout_treatment",
                    ours.as_deref() == Some("treatment")
                );
            }
            None if path == b"/home" => assert_eq!(exp.as_deref(), Some("banner=on")),
            None => assert_eq!(
                exp, None,
                "x-experiments reached the upstream without an assignment"
            ),
        }
    }
}

fn exposure_records(envoy: &Envoy) -> Vec<Value> {
    exposure_records_in(&envoy.dir.join("envoy.log"))
}

/// The exposure records logged to an Envoy log file, in order.
fn exposure_records_in(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("abmesh.exposure ")
                .map(|(_, json)| serde_json::from_str(json).unwrap())
        })
        .collect()
}

/// Prometheus text once `name{labels}` reaches `want` (counters are published every second).
fn wait_for_metric(envoy: &Envoy, name: &str, labels: &str, want: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let prom = envoy.prometheus();
        if metric(&prom, name, labels) >= want || std::time::Instant::now() > deadline {
            return prom;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Prometheus text once the series of `name` sum to `want` (or after 10 s).
fn wait_for_total(envoy: &Envoy, name: &str, want: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let prom = envoy.prometheus();
        let sum: u64 = prom
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        if sum >= want || std::time::Instant::now() > deadline {
            // One more period, so a late duplicate would show.
            std::thread::sleep(std::time::Duration::from_millis(1200));
            return envoy.prometheus();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `abmesh_errors_total{kind="host"}` once the last second's counts are published.
fn prometheus_error_count(envoy: &Envoy) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(1300));
    metric(&envoy.prometheus(), "abmesh_errors_total", "kind=\"host\"")
}

fn metric(prom: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{{{labels}}} ");
    prom.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[test]
fn a_valid_token_forces_the_variant_and_a_wrong_or_missing_one_is_ignored() {
    let config = Config::parse(MULTI.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(MULTI), 1);
    let mut client = Client::new(envoy.ports.listener);
    // A unit the hash puts in control; force it to treatment.
    let id = (0..).map(|i| format!("qa-{i}")).find(|id| {
        let p = core_plan(&config, b"GET", b"/search", &[("x-user-id", id.as_bytes())]);
        p.assignments
            .as_deref()
            .is_some_and(|a| a.starts_with("checkout-v2=control"))
    });
    let id = id.unwrap();
    let force: &[u8] = b"checkout-v2=treatment, old-test=a";
    let (cluster, seen) = upstream(&client.get(
        b"/search",
        &[
            ("x-user-id", id.as_bytes()),
            ("x-abmesh-token", TOKEN),
            ("x-abmesh-force", force),
        ],
    ));
    let exp = text(header(&seen, "x-experiments")).unwrap();
    assert!(exp.starts_with("checkout-v2=treatment;forced"), "{exp}");
    assert!(
        !exp.contains("old-test"),
        "a paused experiment cannot be forced: {exp}"
    );
    assert_eq!(
        text(header(&seen, "x-exp-checkout-v2")).as_deref(),
        Some("treatment")
    );
    assert_eq!(cluster, "checkout_treatment");
    for token in [
        None,
        Some(&b"wrong-token"[..]),
        Some(b"demo-qa-token2"),
        Some(b"DEMO-QA-TOKEN"),
    ] {
        let mut headers = vec![("x-user-id", id.as_bytes()), ("x-abmesh-force", force)];
        if let Some(t) = token {
            headers.push(("x-abmesh-token", t));
        }
        let (cluster, seen) = upstream(&client.get(b"/search", &headers));
        let exp = text(header(&seen, "x-experiments")).unwrap();
        assert!(
            exp.starts_with("checkout-v2=control") && !exp.contains("forced"),
            "{token:?}: {exp}"
        );
        assert_eq!(cluster, "checkout_control");
    }
    envoy.wait_for_logs("exposure records", 5, |e| exposure_records(e).len());
    let records = exposure_records(&envoy);
    assert_eq!(records.len(), 5);
    let forced: Vec<&Value> = records[0]["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["forced"] == true)
        .collect();
    assert_eq!(forced.len(), 1);
    assert_eq!(forced[0]["experiment"], "checkout-v2");
    assert_eq!(forced[0]["variant"], "treatment");
    assert!(records[1..].iter().all(|r| r["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["forced"] == false)));
    // Counters are published by each VM's 1 s timer.
    let prom = wait_for_metric(
        &envoy,
        "abmesh_forced_total",
        r#"experiment="checkout-v2",variant="treatment""#,
        1,
    );
    assert_eq!(
        metric(
            &prom,
            "abmesh_forced_total",
            r#"experiment="checkout-v2",variant="treatment""#
        ),
        1,
        "{prom}"
    );
    assert_eq!(
        metric(
            &prom,
            "abmesh_assignments_total",
            r#"experiment="checkout-v2",variant="control""#
        ),
        4
    );
}

#[test]
fn non_utf8_bytes_in_unit_cookie_query_and_override_are_ordinary_input() {
    let config = Config::parse(MULTI.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(MULTI), 1);
    let mut client = Client::new(envoy.ports.listener);
    type Case<'a> = (&'a [u8], Vec<(&'a str, &'a [u8])>);
    let cases: Vec<Case> = vec![
        (
            b"/checkout",
            vec![("x-user-id", b"\xff\xfe\x80user\xc3\x28")],
        ),
        (
            b"/checkout",
            vec![("cookie", b"uid=\xe2\x82; did=\xff\xff")],
        ),
        (
            b"/search?did=%FF%FE%zz&did=2",
            vec![("x-country", b"\xffUS")],
        ),
        (
            b"/checkout",
            vec![
                ("x-user-id", b"u-1"),
                ("x-abmesh-token", TOKEN),
                ("x-abmesh-force", b"checkout-v2=\xff\xfe, \x80=1"),
            ],
        ),
        (
            b"/checkout",
            vec![
                ("x-user-id", b"u-2"),
                ("x-abmesh-token", b"\xff\x00\x01"[..1].as_ref()),
                ("x-abmesh-force", b"\xff"),
            ],
        ),
    ];
    for (path, headers) in &cases {
        let resp = client.get(path, headers);
        let (_, seen) = upstream(&resp);
        let want = core_plan(&config, b"GET", path, headers);
        assert_eq!(
            text(header(&seen, "x-experiments")),
            want.assignments,
            "{headers:?}"
        );
    }
    for i in 0..100 {
        let id = format!("after-{i}");
        let resp = client.get(b"/home", &[("x-user-id", id.as_bytes())]);
        let (_, seen) = upstream(&resp);
        let exp = text(header(&seen, "x-experiments")).unwrap_or_default();
        assert!(
            exp.contains("banner=on"),
            "request {i} after hostile input: {exp:?}"
        );
    }
    // Records for non-UTF-8 ids are still valid JSON (exposure_records parses each one).
    envoy.wait_for_logs("exposure records", 1, |e| exposure_records(e).len());
    let first = &exposure_records(&envoy)[0];
    assert_eq!(
        first["units"]["user"],
        "\u{fffd}\u{fffd}\u{fffd}user\u{fffd}("
    );
}

#[test]
fn each_exposed_request_yields_one_log_record_and_one_matching_access_log_line() {
    let config = Config::parse(MULTI.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(MULTI), 1);
    let mut client = Client::new(envoy.ports.listener);
    let mut expected: BTreeMap<String, Option<String>> = BTreeMap::new(); // request id -> dictionary
    let mut exposed = 0;
    let n = 200;
    for i in 0..n {
        let (path, headers) = varied_request(i);
        let headers = borrow(&headers);
        let (_, seen) = upstream(&client.get(&path, &headers));
        let rid = text(header(&seen, "x-request-id")).unwrap();
        let want = core_plan(&config, b"GET", &path, &headers);
        exposed += usize::from(want.exposure().is_some());
        expected.insert(
            rid,
            want.exposure()
                .is_some()
                .then(|| want.assignments.clone().unwrap()),
        );
    }
    assert!(
        exposed > 50 && exposed < n,
        "{exposed} of {n} exposed: the mix needs rollouts and unassigned requests too"
    );
    envoy.wait_for_logs("access-log lines", n, |e| e.access_log().lines().count());
    envoy.wait_for_logs("exposure records", exposed, |e| exposure_records(e).len());

    let records = exposure_records(&envoy);
    assert_eq!(
        records.len(),
        exposed,
        "one record per exposed request, none for the rest"
    );
    let mut seen_ids = std::collections::BTreeSet::new();
    for r in &records {
        let rid = r["request_id"].as_str().unwrap().to_string();
        assert!(seen_ids.insert(rid.clone()), "two records for {rid}");
        assert!(
            expected[&rid].is_some(),
            "a record for a request without exposure: {r}"
        );
        assert!(r["ts_ms"].as_i64().unwrap() > 1_700_000_000_000);
    }
    let lines: Vec<Value> = envoy
        .access_log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), n);
    for line in &lines {
        let rid = line["request_id"].as_str().unwrap();
        match &expected[rid] {
            Some(dict) => {
                assert_eq!(line["assignments"].as_str(), Some(dict.as_str()), "{line}");
                let record: Value =
                    serde_json::from_str(line["exposure"].as_str().unwrap()).unwrap();
                assert_eq!(record["request_id"], rid);
                let names: Vec<String> = record["assignments"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        format!(
                            "{}={}",
                            a["experiment"].as_str().unwrap(),
                            a["variant"].as_str().unwrap()
                        )
                    })
                    .collect();
                for n in &names {
                    assert!(dict.split(", ").any(|d| d == n), "{n} not in {dict}");
                }
                let logged = records.iter().find(|r| r["request_id"] == rid).unwrap();
                assert_eq!(&record, logged, "filter state and log record differ");
            }
            None => assert_eq!(line["exposure"], Value::Null, "{line}"),
        }
    }
    // A rollout-only request has its dictionary in filter state but no exposure.
    assert!(lines
        .iter()
        .any(|l| l["assignments"] == "banner=on" && l["exposure"].is_null()));
}

#[test]
fn prometheus_counts_equal_the_requests_sent() {
    let config = Config::parse(MULTI.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(MULTI), 2);
    let mut client = Client::new(envoy.ports.listener);
    let mut assigned: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut not_assigned: BTreeMap<(String, String), u64> = BTreeMap::new();
    let n = 500;
    for i in 0..n {
        let (path, headers) = varied_request(i);
        let headers = borrow(&headers);
        client.get(&path, &headers);
        let mut all: Vec<(&[u8], &[u8])> = vec![(b":method", b"GET"), (b":path", &path)];
        all.extend(headers.iter().map(|(n, v)| (n.as_bytes(), *v)));
        let (_, eval) = Plan::new(&config, &RequestView::new(&all), 0);
        for a in &eval.assignments {
            let e = &config.experiments[a.experiment];
            *assigned
                .entry((e.key.clone(), e.variants[a.variant].name.clone()))
                .or_default() += 1;
        }
        for (e, r) in &eval.not_assigned {
            *not_assigned
                .entry((config.experiments[*e].key.clone(), r.as_str().into()))
                .or_default() += 1;
        }
    }
    let total: u64 = assigned.values().sum();
    let prom = wait_for_total(&envoy, "abmesh_assignments_total", total);
    for ((e, v), count) in &assigned {
        let labels = format!("experiment=\"{e}\",variant=\"{v}\"");
        assert_eq!(
            metric(&prom, "abmesh_assignments_total", &labels),
            *count,
            "{labels}\n{prom}"
        );
    }
    for ((e, r), count) in &not_assigned {
        let labels = format!("experiment=\"{e}\",reason=\"{r}\"");
        assert_eq!(
            metric(&prom, "abmesh_not_assigned_total", &labels),
            *count,
            "{labels}"
        );
    }
    // Every experiment accounts for every request.
    for e in &config.experiments {
        let a: u64 = assigned
            .iter()
            .filter(|((k, _), _)| *k == e.key)
            .map(|(_, c)| c)
            .sum();
        let na: u64 = not_assigned
            .iter()
            .filter(|((k, _), _)| *k == e.key)
            .map(|(_, c)| c)
            .sum();
        assert_eq!(a + na, n as u64, "{}", e.key);
    }
    assert!(
        not_assigned.keys().any(|(_, r)| r == "holdout")
            && not_assigned.keys().any(|(_, r)| r == "layer")
    );
    assert!(prom.contains("# TYPE abmesh_assignments_total counter"));
    assert_eq!(metric(&prom, "abmesh_errors_total", "kind=\"host\""), 0);
}

#[test]
fn an_invalid_configuration_fails_validation_and_the_log_names_every_error() {
    let bad = r#"{
      "units": {"user": [{"header": "x-user-id"}]},
      "experiments": [
        {"key": "Bad", "variants": [{"name": "a", "weight": -1}]},
        {"key": "t", "traffic_percent": 150, "variants": [{"name": "a", "weight": 1}], "colour": "red"}
      ]
    }"#;
    let dir = scratch_dir("validate");
    let ports = Ports {
        admin: 1,
        listener: 2,
        control: 3,
        treatment: 4,
    };
    let file = dir.join("bad.yaml");
    std::fs::write(&file, render(&ports, &dir.join("access.log"), Some(bad))).unwrap();
    let (ok, out) = validate(&file);
    assert!(
        !ok,
        "envoy --mode validate accepted an invalid configuration:\n{out}"
    );
    for error in [
        "abmesh: experiments[0].key: \"Bad\" must start with a lower-case letter",
        "abmesh: experiments[0].variants[0].weight: must be a non-negative integer, found -1",
        "abmesh: experiments[1]: unknown field \"colour\"",
        "abmesh: experiments[1].traffic_percent: must be a number from 0 to 100, found 150",
        "abmesh: configuration refused (4 errors)",
    ] {
        assert!(
            out.contains(error),
            "Envoy's log does not name {error:?}:\n{out}"
        );
    }
}

#[test]
fn two_envoys_with_different_concurrency_assign_1000_units_identically() {
    let a = Envoy::start(Some(MULTI), 1);
    let b = Envoy::start(Some(MULTI), 3);
    let (mut ca, mut cb) = (Client::new(a.ports.listener), Client::new(b.ports.listener));
    for i in 0..1000 {
        let (path, headers) = varied_request(i * 7 + 1);
        let headers = borrow(&headers);
        let (_, sa) = upstream(&ca.get(&path, &headers));
        let (_, sb) = upstream(&cb.get(&path, &headers));
        assert_eq!(
            header(&sa, "x-experiments"),
            header(&sb, "x-experiments"),
            "unit {i}"
        );
        assert_eq!(
            header(&sa, "x-exp-checkout-v2"),
            header(&sb, "x-exp-checkout-v2"),
            "unit {i}"
        );
    }
}

/// The `pluginConfig:` of a `WasmPlugin` manifest, written in JSON syntax (YAML's flow style).
fn plugin_config_of(manifest: &str) -> String {
    let lines: Vec<&str> = manifest.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("pluginConfig:"))
        .expect("no pluginConfig");
    let indent = lines[at].len() - lines[at].trim_start().len();
    let first = lines[at]
        .trim_start()
        .trim_start_matches("pluginConfig:")
        .trim()
        .to_string();
    let mut out = vec![first];
    for l in &lines[at + 1..] {
        if !l.trim().is_empty() && l.len() - l.trim_start().len() <= indent {
            break;
        }
        out.push(l.to_string());
    }
    out.join("\n")
}

#[test]
fn every_example_and_shipped_envoy_config_is_valid() {
    let cli = repo().join("dist/abmesh");
    let mut checked = Vec::new();
    let mut stack = vec![repo().join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.to_string_lossy().to_string();
            let mut body = std::fs::read_to_string(&path).unwrap();
            if name.contains(".template.") {
                // A deployment template: check what the CI script renders from it.
                let rendered =
                    std::process::Command::new(repo().join("examples/ci/abmesh-guard.sh"))
                        .arg("render")
                        .arg(repo().join("examples/ramp.json"))
                        .arg(&path)
                        .output()
                        .unwrap();
                assert!(
                    rendered.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&rendered.stderr)
                );
                body = String::from_utf8(rendered.stdout).unwrap();
            }
            let file = if name.ends_with(".json") {
                path.clone()
            } else if body.contains("kind: WasmPlugin") {
                let f = scratch_dir("plugin").join("config.json");
                std::fs::write(&f, plugin_config_of(&body)).unwrap();
                f
            } else {
                continue;
            };
            let out = std::process::Command::new(&cli)
                .arg("check")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            checked.push(name);
        }
    }
    assert!(
        checked.iter().any(|n| n.contains("istio")),
        "no WasmPlugin checked: {checked:?}"
    );
    // The YAML examples: parse all, and check they agree with each other and with envoy.yaml.
    let manifest = std::fs::read_to_string(repo().join("examples/istio/wasmplugin.yaml")).unwrap();
    let mut py = std::process::Command::new(harness::python())
        .arg(repo().join("tests/e2e/check_yaml.py"))
        .arg(repo())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin
        .take()
        .unwrap()
        .write_all(plugin_config_of(&manifest).as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.ends_with("ok\n"), "{text}");
    assert!(
        text.contains("parsed examples/istio/virtualservice.yaml"),
        "{text}"
    );
    assert!(text.contains("parsed envoy/docker-compose.yaml"), "{text}");
    let (ok, out) = validate(&repo().join("envoy/envoy.yaml"));
    assert!(ok, "envoy/envoy.yaml does not validate:\n{out}");
    // The compose file's config names the wasm where the container mounts it.
    let compose = std::fs::read_to_string(repo().join("envoy/envoy-compose.yaml")).unwrap();
    let local = scratch_dir("compose").join("envoy-compose.yaml");
    let wasm = harness::wasm_path();
    std::fs::write(
        &local,
        compose.replace("/etc/envoy/abmesh.wasm", wasm.to_str().unwrap()),
    )
    .unwrap();
    let (ok, out) = validate(&local);
    assert!(ok, "envoy/envoy-compose.yaml does not validate:\n{out}");
    // The demo's own plugin configuration passes the CLI too.
    let f = scratch_dir("demo").join("demo.json");
    std::fs::write(&f, harness::demo_plugin_config()).unwrap();
    assert!(std::process::Command::new(&cli)
        .arg("check")
        .arg(&f)
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn the_demo_prints_its_report_and_stops_everything_it_started() {
    let out = std::process::Command::new("python3")
        .arg(repo().join("envoy/demo.py"))
        .env("ENVOY_BIN", harness::envoy_bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for section in [
        "Sample of users (300 users, 900 requests)",
        "Split per experiment",
        "Spoofing:",
        "Exposure records (",
        "Access log (900 lines, one per request)",
        "abmesh_assignments_total{experiment=\"checkout-v2\",variant=\"control\"}",
        "Done: stopped Envoy and the echo upstream.",
    ] {
        assert!(
            text.contains(section),
            "the demo did not print {section:?}:\n{text}"
        );
    }
    let routed = text.lines().find(|l| l.contains("route header:")).unwrap();
    let nums: Vec<&str> = routed
        .split_whitespace()
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(nums[0], nums[1], "{routed}");
    // Every port the demo opened is closed again.
    let first = text.lines().next().unwrap();
    // The work directory's random name may hold digits too.
    let first = first.split("; work dir").next().unwrap();
    let ports: Vec<u16> = first
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .filter(|&p| p > 1024)
        .collect();
    assert_eq!(ports.len(), 4, "{first}");
    for p in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still open after the demo"
        );
    }
}

/// GrowthBook (hash v2, three variations, coverage 0.8, a namespace) and flagd experiments.
const PEERS: &str = r#"{
  "units": {"user": [{"header": "x-user-id"}]},
  "experiments": [
    {"key": "gb-checkout", "algorithm": "growthbook", "hash_version": 2, "seed": "gb-checkout",
     "coverage": 0.8, "namespace": ["checkout", 0.2, 1],
     "variants": [{"name": "control", "weight": 0.34}, {"name": "green", "weight": 0.33}, {"name": "blue", "weight": 0.33}]},
    {"key": "flagd-color", "algorithm": "flagd", "flag_key": "header-color",
     "variants": [{"name": "red", "weight": 25}, {"name": "blue", "weight": 25}, {"name": "green", "weight": 25}, {"name": "yellow", "weight": 25}]}
  ]
}"#;

#[test]
fn growthbook_and_flagd_experiments_assign_2000_units_as_the_core_and_the_reference_formulas() {
    use abmesh::growthbook;
    let config = Config::parse(PEERS.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(PEERS), 2);
    let mut client = Client::new(envoy.ports.listener);
    let ranges = growthbook::bucket_ranges(3, 0.8, Some(&[0.34, 0.33, 0.33]));
    let (gb_names, flagd_names) = (
        ["control", "green", "blue"],
        ["red", "blue", "green", "yellow"],
    );
    for i in 0..2000 {
        let id = format!("peer-user-{i}");
        let headers = [("x-user-id", id.as_bytes())];
        let (_, seen) = upstream(&client.get(b"/", &headers));
        let want = core_plan(&config, b"GET", b"/", &headers);
        let got = text(header(&seen, "x-experiments"));
        assert_eq!(got, want.assignments, "{id}");
        // The reference formulas, independently of the core's configuration path.
        let gb = growthbook::in_namespace(&id, "checkout", 0.2, 1.0)
            .then(|| {
                growthbook::choose_variation(
                    growthbook::hash("gb-checkout", &id, 2).unwrap(),
                    &ranges,
                )
            })
            .flatten()
            .map(|v| format!("gb-checkout={}", gb_names[v]));
        let flagd =
            abmesh::flagd::choose(format!("header-color{id}").as_bytes(), &[25, 25, 25, 25])
                .map(|v| format!("flagd-color={}", flagd_names[v]));
        let reference: Vec<String> = gb.into_iter().chain(flagd).collect();
        assert_eq!(got.unwrap_or_default(), reference.join(", "), "{id}");
    }
}
