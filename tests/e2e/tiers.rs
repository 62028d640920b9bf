//! Anonymous visitors and multi-tier meshes in a real Envoy: minted ids, an edge that strips
//! in front of an internal tier that trusts, and W3C baggage.

use std::collections::BTreeSet;

use abmesh::baggage;
use abmesh::plan::Plan;
use abmesh::{Config, RequestView};

use crate::harness::{exposure_records, header, metric, text, upstream, wait_for_metric};
use crate::harness::{repo, Envoy};
use crate::http::Client;

fn example(name: &str) -> String {
    std::fs::read_to_string(repo().join("examples").join(name)).unwrap()
}

/// The core's plan for a GET of `/` with these headers.
fn plan<'c>(config: &'c Config, headers: &[(&str, &[u8])]) -> Plan<'c> {
    let mut all: Vec<(&[u8], &[u8])> = vec![(b":method", b"GET"), (b":path", b"/")];
    all.extend(headers.iter().map(|(n, v)| (n.as_bytes(), *v)));
    Plan::new(config, &RequestView::new(&all), 0).0
}

/// `abid=<32 hex>; <attributes>` → the id, checking the attributes are exactly these.
fn minted_id(set_cookie: &[u8], attributes: &str) -> String {
    let s = std::str::from_utf8(set_cookie).unwrap();
    let (pair, rest) = s.split_once("; ").unwrap();
    assert_eq!(rest, attributes, "Set-Cookie attributes: {s}");
    let id = pair.strip_prefix("abid=").unwrap();
    assert!(
        id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        "minted id {id:?}"
    );
    id.to_string()
}

/// W3C Baggage syntax: `key=value` members (optionally with `;properties`), keys tokens,
/// values baggage-octets only.
fn assert_valid_baggage(b: &[u8]) {
    let s = std::str::from_utf8(b).unwrap();
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
    };
    let octets = |v: &str| {
        v.bytes()
            .all(|c| matches!(c, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E))
    };
    for member in s.split(',') {
        let mut parts = member.trim().split(';');
        let (k, v) = parts.next().unwrap().split_once('=').unwrap();
        assert!(
            token(k.trim()) && octets(v.trim()),
            "bad member {member:?} in {s}"
        );
        for p in parts {
            let k = p.split_once('=').map_or(p, |(k, _)| k);
            assert!(token(k.trim()), "bad property {p:?} in {s}");
        }
    }
}

fn baggage_member(b: &[u8], key: &str) -> Option<String> {
    let s = std::str::from_utf8(b).unwrap();
    s.split(',').find_map(|m| {
        let (k, v) = m.trim().split_once('=')?;
        (k == key).then(|| {
            let decoded = abmesh::baggage::decode_value(v.as_bytes());
            String::from_utf8(decoded).unwrap()
        })
    })
}

/// A valid baggage header of exactly `len` bytes: members of 100 bytes (`m000=vvv…`), the
/// last one longer to make up the length.
fn members_of_length(len: usize) -> String {
    let k = len / 101;
    let mut members: Vec<String> = (0..k)
        .map(|i| format!("m{i:03}={}", "v".repeat(95)))
        .collect();
    let short = len - (k * 101 - 1);
    members.last_mut().unwrap().push_str(&"v".repeat(short));
    let big = members.join(",");
    assert_eq!(big.len(), len);
    big
}

const ATTRIBUTES: &str = "Max-Age=31536000; Path=/; Secure; HttpOnly; SameSite=Lax";

#[test]
fn an_anonymous_visitor_gets_a_cookie_whose_replays_keep_the_first_requests_assignments() {
    let text_config = example("edge-anonymous.json");
    let config = Config::parse(text_config.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(&text_config), 2);
    let mut client = Client::new(envoy.ports.listener);
    let mut ids = BTreeSet::new();
    let mut first_request_ids = BTreeSet::new();
    let visitors = 10;
    for _ in 0..visitors {
        // The application sets a cookie of its own on the same response: both must arrive.
        let app_cookie: &[u8] = b"session=app-1; Path=/; HttpOnly";
        let first = client.get(b"/", &[("x-echo-set-cookie", app_cookie)]);
        let cookies = first.all("set-cookie");
        assert_eq!(cookies.len(), 2, "{cookies:?}");
        assert_eq!(cookies[0], app_cookie, "the application's cookie is kept");
        let id = minted_id(cookies[1], ATTRIBUTES);
        assert!(ids.insert(id.clone()), "two visitors got the same id {id}");
        let (_, seen) = upstream(&first);
        first_request_ids.insert(text(header(&seen, "x-request-id")).unwrap());
        // The upstream sees the id on the first request already, as on every later one.
        assert_eq!(
            text(header(&seen, "cookie")),
            Some(format!("abid={id}")),
            "cookie at the upstream"
        );
        let assigned = text(header(&seen, "x-experiments")).unwrap();
        let cookie = format!("abid={id}");
        assert_eq!(
            plan(&config, &[("cookie", cookie.as_bytes())]).assignments,
            Some(assigned.clone()),
            "the first request's assignments are the core's for the minted id"
        );
        for replay in 0..50 {
            let r = client.get(b"/", &[("cookie", cookie.as_bytes())]);
            assert_eq!(r.header("set-cookie"), None, "replay {replay} minted again");
            let (_, seen) = upstream(&r);
            assert_eq!(
                text(header(&seen, "x-experiments")).as_deref(),
                Some(assigned.as_str()),
                "replay {replay} of visitor {id}"
            );
        }
    }
    let n = visitors * 51;
    envoy.wait_for_logs("exposure records", n, |e| exposure_records(e).len());
    let records = exposure_records(&envoy);
    assert_eq!(records.len(), n);
    for r in &records {
        let first = first_request_ids.contains(r["request_id"].as_str().unwrap());
        assert_eq!(
            r.get("minted").cloned(),
            first.then(|| serde_json::json!(["visitor"])),
            "only a first request's record marks the unit as minted: {r}"
        );
        assert!(ids.contains(r["units"]["visitor"].as_str().unwrap()), "{r}");
    }
}

#[test]
fn an_edge_that_strips_in_front_of_a_tier_that_trusts_merges_their_assignments() {
    let edge_text = example("edge-anonymous.json");
    let internal_text = example("internal-tier.json");
    let edge_config = Config::parse(edge_text.as_bytes()).unwrap();
    let internal_config = Config::parse(internal_text.as_bytes()).unwrap();
    let internal = Envoy::start(Some(&internal_text), 1);
    let edge = Envoy::start_in_front_of(Some(&edge_text), internal.ports.listener);
    let mut client = Client::new(edge.ports.listener);
    let spoof: &[(&str, &[u8])] = &[
        (
            "x-experiments",
            b"landing-hero=control, pricing-page=control;forced, search-ranker=bm25, evil=yes",
        ),
        ("x-exp-pricing-page", b"control"),
        ("x-exp-search-ranker", b"bm25"),
        ("baggage", b"tenant=acme, abmesh=landing-hero%3Dcontrol"),
    ];
    let n = 200;
    for i in 0..n {
        let cookie = format!("abid=visitor-{i}");
        let mut headers: Vec<(&str, &[u8])> = vec![("cookie", cookie.as_bytes())];
        if i % 2 == 0 {
            headers.extend_from_slice(spoof);
        }
        let (_, seen) = upstream(&client.get(b"/", &headers));
        // What the edge decides, spoofed headers and all, is what it would decide without them.
        let clean = plan(&edge_config, &[("cookie", cookie.as_bytes())]);
        let edge_plan = plan(&edge_config, &headers);
        assert_eq!(edge_plan.assignments, clean.assignments);
        let edge_dict = edge_plan.assignments.clone().unwrap();
        // The internal tier's own experiment, from the same unit.
        let own = plan(&internal_config, &[("cookie", cookie.as_bytes())])
            .assignments
            .unwrap();
        assert!(own.starts_with("search-ranker="), "{own}");
        let merged = format!("{edge_dict}, {own}");
        assert_eq!(
            text(header(&seen, "x-experiments")).as_deref(),
            Some(merged.as_str()),
            "request {i}: the edge's assignments, unchanged, then the internal tier's"
        );
        assert!(!merged.contains("evil") && !merged.contains("forced"));
        // The edge's route header passes the trusting tier; a spoofed one of its own does not.
        let edge_route = edge_plan.route.first().map(|(_, v)| v.to_string());
        assert_eq!(text(header(&seen, "x-exp-pricing-page")), edge_route);
        assert_eq!(header(&seen, "x-exp-search-ranker"), None);
        let baggage = header(&seen, "baggage").unwrap();
        assert_valid_baggage(baggage);
        assert_eq!(baggage_member(baggage, "abmesh"), Some(merged.clone()));
        if i % 2 == 0 {
            assert_eq!(baggage_member(baggage, "tenant").as_deref(), Some("acme"));
        }
    }
    internal.wait_for_logs("internal exposure records", n, |e| {
        exposure_records(e).len()
    });
    edge.wait_for_logs("edge exposure records", n, |e| exposure_records(e).len());
    let experiments = |envoy: &Envoy| -> BTreeSet<String> {
        exposure_records(envoy)
            .iter()
            .flat_map(|r| r["assignments"].as_array().unwrap().clone())
            .map(|a| a["experiment"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(exposure_records(&internal).len(), n);
    assert_eq!(
        experiments(&internal),
        BTreeSet::from(["search-ranker".into()])
    );
    assert_eq!(
        experiments(&edge),
        BTreeSet::from(["landing-hero".into(), "pricing-page".into()])
    );
}

#[test]
fn baggage_carries_the_assignments_beside_every_existing_member_within_the_limit() {
    let text_config = example("edge-anonymous.json");
    let config = Config::parse(text_config.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(&text_config), 1);
    let mut client = Client::new(envoy.ports.listener);

    let sent: &[u8] = b"userId=alice,sampled=true;ttl=30,note=caf%C3%A9%2C%20ok";
    let (_, seen) = upstream(&client.get(b"/", &[("cookie", b"abid=v1"), ("baggage", sent)]));
    let baggage = header(&seen, "baggage").unwrap();
    assert_valid_baggage(baggage);
    let assigned = text(header(&seen, "x-experiments")).unwrap();
    let expected = plan(&config, &[("cookie", b"abid=v1")])
        .assignments
        .unwrap();
    assert_eq!(assigned, expected);
    let mut want = sent.to_vec();
    want.extend_from_slice(b",abmesh=");
    abmesh::baggage::encode_value(&expected, &mut want);
    assert_eq!(
        String::from_utf8_lossy(baggage),
        String::from_utf8_lossy(&want),
        "existing members first, byte for byte, then ours"
    );
    assert_eq!(baggage_member(baggage, "abmesh"), Some(expected.clone()));

    // Near, at and over the W3C limit of 8,192 bytes: ours would cross it, so it is left out
    // and every existing member passes untouched, byte for byte; the request is served, its
    // assignments travel in x-experiments, and each drop is counted.
    let sizes = [8_180, baggage::MAX_BYTES, 9_000];
    for size in sizes {
        let big = members_of_length(size);
        let (_, seen) =
            upstream(&client.get(b"/", &[("cookie", b"abid=v1"), ("baggage", big.as_bytes())]));
        assert_eq!(
            text(header(&seen, "baggage")),
            Some(big.clone()),
            "{size} bytes"
        );
        assert_eq!(
            text(header(&seen, "x-experiments")),
            Some(expected.clone()),
            "{size} bytes"
        );
    }
    let drops = sizes.len() as u64;
    let prom = wait_for_metric(
        &envoy,
        "abmesh_errors_total",
        "kind=\"baggage_full\"",
        drops,
    );
    assert_eq!(
        metric(&prom, "abmesh_errors_total", "kind=\"baggage_full\""),
        drops
    );
    assert_eq!(metric(&prom, "abmesh_errors_total", "kind=\"host\""), 0);

    // A client's own abmesh member never passes the edge.
    let (_, seen) = upstream(&client.get(
        b"/",
        &[
            ("cookie", b"abid=v1"),
            ("baggage", b"abmesh=landing-hero%3Dcontrol,k=v"),
        ],
    ));
    let baggage = header(&seen, "baggage").unwrap();
    assert_eq!(baggage_member(baggage, "abmesh"), Some(expected));
    assert_eq!(baggage_member(baggage, "k").as_deref(), Some("v"));
}
