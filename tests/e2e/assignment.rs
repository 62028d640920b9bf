//! Assignment through Envoy: what the upstream receives equals what the core decides, route
//! headers pick clusters, every worker and Envoy assigns alike, and the peer algorithms match.

use std::collections::BTreeMap;

use abmesh::Config;

use crate::harness::*;
use crate::http::Client;

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

/// GrowthBook (hash v2, three variations, coverage 0.8, a namespace) and flagd experiments
/// (bucketing v2 and v3).
const PEERS: &str = r#"{
  "units": {"user": [{"header": "x-user-id"}]},
  "experiments": [
    {"key": "gb-checkout", "algorithm": "growthbook", "hash_version": 2, "seed": "gb-checkout",
     "coverage": 0.8, "namespace": ["checkout", 0.2, 1],
     "variants": [{"name": "control", "weight": 0.34}, {"name": "green", "weight": 0.33}, {"name": "blue", "weight": 0.33}]},
    {"key": "flagd-color", "algorithm": "flagd", "flag_key": "header-color",
     "variants": [{"name": "red", "weight": 25}, {"name": "blue", "weight": 25}, {"name": "green", "weight": 25}, {"name": "yellow", "weight": 25}]},
    {"key": "flagd-v3", "algorithm": "flagd", "flag_key": "header-color", "bucketing": "v3",
     "variants": [{"name": "red", "weight": 25}, {"name": "blue", "weight": 25}, {"name": "green", "weight": 25}, {"name": "yellow", "weight": 25}]}
  ]
}"#;

#[test]
fn growthbook_and_flagd_v2_and_v3_experiments_assign_2000_units_as_the_core_and_the_reference_formulas(
) {
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
        // v3, the shorthand: CBOR [flag key, id] — array of 2, then two short text strings.
        let mut cbor = vec![0x82, 0x60 + 12];
        cbor.extend_from_slice(b"header-color");
        cbor.push(0x60 + id.len() as u8);
        cbor.extend_from_slice(id.as_bytes());
        let v3 = abmesh::flagd::choose(&cbor, &[25, 25, 25, 25])
            .map(|v| format!("flagd-v3={}", flagd_names[v]));
        let reference: Vec<String> = gb.into_iter().chain(flagd).chain(v3).collect();
        assert_eq!(got.unwrap_or_default(), reference.join(", "), "{id}");
    }
}
