#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may fail loudly
//! Minted ids, inbound trust and baggage, decided by the core (the filter applies these plans;
//! tests/e2e/tiers.rs checks it does in Envoy).

use abmesh::baggage::Rewrite;
use abmesh::plan::Plan;
use abmesh::{Config, RequestView};

const TOKEN_SHA256: &str = "c83f048e00253c5f4fd6f298789ef4355b75f919ea9b16f86e0a83dcfa0c9697";

fn config(json: &str) -> Config {
    Config::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn plan<'c>(config: &'c Config, headers: &[(&str, &str)]) -> Plan<'c> {
    let mut all: Vec<(&str, &str)> = vec![(":method", "GET"), (":path", "/")];
    all.extend_from_slice(headers);
    Plan::new(config, &RequestView::new(&all), 1_764_079_200_000).0
}

fn removed(p: &Plan) -> Vec<String> {
    p.remove
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

fn internal() -> Config {
    config(&format!(
        r#"{{"inbound": "trust", "units": {{"user": [{{"header": "x-user-id"}}]}},
            "experiments": [{{"key": "ranker", "route_header": true,
              "variants": [{{"name": "a", "weight": 1}}, {{"name": "b", "weight": 1}}]}}],
            "overrides": {{"token_sha256": ["{TOKEN_SHA256}"]}}}}"#
    ))
}

#[test]
fn a_trusting_tier_keeps_foreign_assignments_and_recomputes_its_own() {
    let c = internal();
    let p = plan(
        &c,
        &[
            ("x-user-id", "alice"),
            (
                "x-experiments",
                "checkout=treatment, ranker=b, search=v2;forced, Bad=x, bad=\"with space\"",
            ),
            ("x-exp-checkout", "treatment"),
            ("x-exp-ranker", "b"),
        ],
    );
    let own = plan(&c, &[("x-user-id", "alice")]).assignments.unwrap();
    assert_eq!(own, "ranker=a");
    assert_eq!(
        p.assignments.as_deref(),
        Some("checkout=treatment, search=v2;forced, ranker=a")
    );
    // Its own route header is recomputed; the edge's passes.
    assert_eq!(removed(&p), ["x-exp-ranker"]);
    assert_eq!(p.route, [("x-exp-ranker", "a")]);
    // Exposure covers its own experiment only.
    assert_eq!(
        p.exposure().unwrap(),
        r#"{"ts_ms":1764079200000,"request_id":null,"units":{"user":"alice"},"assignments":[{"experiment":"ranker","variant":"a","unit":"user","forced":false}]}"#
    );
}

#[test]
fn a_trusting_tier_reads_the_baggage_member_when_the_header_is_absent() {
    let c = internal();
    let p = plan(
        &c,
        &[(
            "baggage",
            "k=v, abmesh=checkout=treatment%2C%20search=v2%3Bforced",
        )],
    );
    assert_eq!(
        p.assignments.as_deref(),
        Some("checkout=treatment, search=v2;forced")
    );
    // Without `output.baggage` it passes the edge's baggage on untouched.
    assert_eq!(p.baggage, Rewrite::Unchanged);
    // Nothing to keep and nothing assigned: a stale header is removed.
    let p = plan(&c, &[("x-experiments", "ranker=b")]);
    assert_eq!(p.assignments, None);
    assert_eq!(removed(&p), ["x-experiments"]);
}

#[test]
fn a_trusting_tier_passes_override_headers_on_only_with_a_valid_token() {
    let c = internal();
    let forced = [
        ("x-user-id", "alice"),
        ("x-abmesh-force", "ranker=b, checkout=control"),
        ("x-abmesh-token", "demo-qa-token"),
    ];
    let p = plan(&c, &forced);
    assert!(p.remove.is_empty(), "{:?}", removed(&p));
    assert_eq!(p.assignments.as_deref(), Some("ranker=b;forced"));
    let p = plan(
        &c,
        &[
            ("x-user-id", "alice"),
            ("x-abmesh-force", "ranker=b"),
            ("x-abmesh-token", "guess"),
        ],
    );
    assert_eq!(removed(&p), ["x-abmesh-force", "x-abmesh-token"]);
    assert_eq!(p.assignments.as_deref(), Some("ranker=a"));
}

#[test]
fn an_edge_strips_what_clients_send_including_their_baggage_member() {
    let c = config(
        r#"{"units": {"user": [{"header": "x-user-id"}]},
            "experiments": [{"key": "ranker", "variants": [{"name": "a", "weight": 1}]}]}"#,
    );
    let p = plan(
        &c,
        &[
            ("x-user-id", "alice"),
            ("x-experiments", "checkout=treatment"),
            ("baggage", "abmesh=checkout%3Dtreatment, k=v"),
        ],
    );
    assert_eq!(p.assignments.as_deref(), Some("ranker=a"));
    assert_eq!(removed(&p), ["x-experiments"]);
    assert_eq!(p.baggage, Rewrite::Set(b"k=v".to_vec()));
    let p = plan(&c, &[("baggage", "k=v")]);
    assert_eq!(p.baggage, Rewrite::Unchanged);
}

const MINTING: &str = r#"{"units": {"visitor": {"sources": [{"header": "x-visitor"}],
    "mint": {"cookie": "abid", "max_age_days": 30, "same_site": "Strict", "domain": "example.com"}}},
  "experiments": [{"key": "hero", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}]}"#;

#[test]
fn a_visitor_without_an_id_gets_a_minted_one_for_this_request_and_as_a_cookie() {
    let c = config(MINTING);
    let p = plan(&c, &[("x-request-id", "r-1"), ("cookie", "theme=dark")]);
    let id = abmesh::mint::mint_id(Some(b"r-1"), 1_764_079_200_000_000_000, "visitor", 0);
    assert_eq!(
        p.set_cookies,
        [format!(
            "abid={id}; Max-Age=2592000; Path=/; Domain=example.com; Secure; HttpOnly; SameSite=Strict"
        )]
    );
    assert_eq!(
        p.cookie.as_deref(),
        Some(format!("theme=dark; abid={id}").as_bytes())
    );
    // The mint cookie is a source: the replay is the same visitor, and nothing is minted.
    let cookie = format!("abid={id}");
    let replay = plan(&c, &[("cookie", &cookie)]);
    assert_eq!(replay.assignments, p.assignments);
    assert!(replay.set_cookies.is_empty() && replay.cookie.is_none());
    let record: serde_json::Value = serde_json::from_str(p.exposure().unwrap()).unwrap();
    assert_eq!(record["minted"], serde_json::json!(["visitor"]));
    assert_eq!(record["units"]["visitor"], id.as_str());
    let record: serde_json::Value = serde_json::from_str(replay.exposure().unwrap()).unwrap();
    assert_eq!(record.get("minted"), None);
    // A listed source still comes first.
    let p = plan(&c, &[("x-visitor", "known"), ("cookie", &cookie)]);
    assert!(p.set_cookies.is_empty());
    assert_eq!(
        p.assignments,
        plan(&c, &[("x-visitor", "known")]).assignments
    );
}

#[test]
fn minting_and_tier_settings_are_validated_with_their_paths() {
    let err = Config::parse(
        br#"{"inbound": "edge",
             "units": {"a": {"mint": {"cookie": "id"}, "source": []},
                       "b": {"sources": [{"cookie": "id"}], "mint": {"cookie": "id", "secure": false, "same_site": "None"}}},
             "experiments": [],
             "output": {"baggage": "yes"}}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.errors,
        [
            "units.a: unknown field \"source\"; expected one of: sources, mint",
            "units.b.mint.same_site: \"None\" requires \"secure\": true (browsers reject SameSite=None cookies that are not Secure)",
            "output.baggage: must be true or false, found a string",
            "inbound: must be \"strip\" (an edge) or \"trust\" (an internal tier), found \"edge\"",
        ]
    );
    let err = Config::parse(
        br#"{"units": {"a": {"sources": []}, "c": {"mint": {"cookie": "id"}},
                       "b": {"sources": [{"header": "x-b"}], "mint": {"cookie": "id"}}},
             "experiments": []}"#,
    )
    .unwrap_err();
    assert_eq!(
        err.errors,
        [
            "units.a.sources: must list at least one source ({\"header\": ...}, {\"cookie\": ...} or {\"query\": ...})",
            "units.c.mint.cookie: cookie \"id\" is already minted by unit type \"b\"",
        ]
    );
}

#[test]
fn a_unit_type_may_consist_of_its_mint_alone() {
    let c = config(
        r#"{"units": {"visitor": {"mint": {"cookie": "abid"}}},
            "experiments": [{"key": "hero", "variants": [{"name": "a", "weight": 1}]}]}"#,
    );
    assert_eq!(
        c.units[0].sources,
        [abmesh::config::Source::Cookie("abid".into())]
    );
    assert_eq!(plan(&c, &[("cookie", "abid=v")]).set_cookies.len(), 0);
    assert_eq!(plan(&c, &[]).set_cookies.len(), 1);
}
