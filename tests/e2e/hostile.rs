//! Hostile input through the real Envoy (`--concurrency 1`). Each case is sent, its outcome
//! checked, and then normal requests must still be answered 200 and assigned. The cases and
//! their outcomes are the table in SECURITY.md, which `the_security_table_lists_every_case`
//! keeps in step with this file.

use abmesh::Config;

use crate::harness::{core_plan, header, text, upstream, MULTI, TOKEN};
use crate::harness::{repo, Envoy};
use crate::http::Client;

/// What a case expects.
#[derive(Clone, Copy)]
pub enum Expect {
    /// 200, and upstream `x-experiments` is exactly what the core computes for the request.
    SameAsCore,
    /// Envoy's own HTTP codec answers with this status before abmesh runs.
    EnvoyRejects(u16),
}

pub struct Case {
    pub name: &'static str,
    pub method: &'static [u8],
    pub outcome: &'static str,
    pub path: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub expect: Expect,
}

fn case(
    name: &'static str,
    outcome: &'static str,
    path: &[u8],
    headers: &[(&str, &[u8])],
    expect: Expect,
) -> Case {
    Case {
        name,
        method: b"GET",
        outcome,
        path: path.to_vec(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
        expect,
    }
}

pub fn cases() -> Vec<Case> {
    use Expect::*;
    let big = vec![b'u'; 60 * 1000];
    let id512 = vec![b'a'; 512];
    let id513 = vec![b'b'; 513];
    let thousand_members: Vec<u8> = (0..1000)
        .map(|i| format!("m{i}=v{i}"))
        .chain(std::iter::once(
            "abmesh=checkout-v2%3Dtreatment".to_string(),
        ))
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes();
    // 2,500 members (about 52 KB, within Envoy's 60 KiB of request headers): 2,499 that force
    // control and a last one that forces treatment.
    let long_override: Vec<u8> = std::iter::repeat("checkout-v2=control")
        .take(2_499)
        .chain(std::iter::once("checkout-v2=treatment"))
        .collect::<Vec<_>>()
        .join(", ")
        .into_bytes();
    let long_request_id = vec![b'r'; 200];
    let many_cookies: String =
        (0..200).map(|i| format!("c{i}=v{i}; ")).collect::<String>() + "uid=cookie-user";
    vec![
        case("non-UTF-8 unit header", "200; assigned from the raw bytes, exactly as the core computes; the record shows U+FFFD",
             b"/checkout", &[("x-user-id", b"\xff\xfe\x80id\xc3\x28")], SameAsCore),
        case("non-UTF-8 cookie header", "200; cookies parsed as bytes, the unit taken from `uid`",
             b"/checkout", &[("cookie", b"a=\xff; uid=\xe2\x82\xac\xff")], SameAsCore),
        case("non-UTF-8 targeting header", "200; compared as bytes, so it matches no `in` list",
             b"/checkout", &[("x-user-id", b"u-1"), ("x-country", b"U\xffS")], SameAsCore),
        case("non-UTF-8 override and token", "200; the token does not match, the override is ignored and both headers are removed",
             b"/checkout", &[("x-user-id", b"u-2"), ("x-abmesh-token", b"\xff\xfe"), ("x-abmesh-force", b"checkout-v2=\xff")], SameAsCore),
        case("non-UTF-8 override with a valid token", "200; the malformed member is skipped, nothing is forced",
             b"/checkout", &[("x-user-id", b"u-3"), ("x-abmesh-token", TOKEN), ("x-abmesh-force", b"checkout-v2=\xfftreatment")], SameAsCore),
        case("non-UTF-8 request id", "200; `request_id` in the record has U+FFFD, the record stays valid JSON",
             b"/checkout", &[("x-user-id", b"u-4"), ("x-request-id", b"\xff\xfe-rid")], SameAsCore),
        case("non-UTF-8 bytes in the query", "200; `%FF` decodes to a raw byte, used as the device id as is",
             b"/search?did=%FF%FE%80", &[], SameAsCore),
        case("non-UTF-8 host", "400 from Envoy's HTTP/1 codec before abmesh runs",
             b"/checkout", &[("host", b"sh\xffop.example.com"), ("x-user-id", b"u-9")], EnvoyRejects(400)),
        Case { method: b"G\xffT", ..case("non-UTF-8 method", "400 from Envoy's HTTP/1 codec before abmesh runs",
             b"/checkout", &[("x-user-id", b"u-10")], EnvoyRejects(400)) },
        case("non-UTF-8 in a header no rule reads", "200; ignored like any other header",
             b"/checkout", &[("x-user-id", b"u-11"), ("user-agent", b"\xff\xfe")], SameAsCore),
        case("raw non-ASCII bytes in the path", "400 from Envoy's HTTP/1 codec before abmesh runs",
             b"/che\xffckout", &[("x-user-id", b"u-5")], EnvoyRejects(400)),
        case("60 KB unit header", "200; over 512 bytes counts as absent, so the next source (cookie) or none is used",
             b"/checkout", &[("x-user-id", &big), ("cookie", b"uid=fallback-user")], SameAsCore),
        case("200 cookies", "200; the `uid` cookie after 200 others is found",
             b"/checkout", &[("cookie", many_cookies.as_bytes())], SameAsCore),
        case("malformed cookies", "200; pairs without `=` and empty names are skipped, quotes removed, the first `uid` wins",
             b"/checkout", &[("cookie", b"novalue; =empty; ;;; uid=\"quoted-user\"; uid=second; \"x")], SameAsCore),
        case("malformed query string", "200; `%zz` kept literally, repeated `&` and names without values skipped",
             b"/search?&&did&=x&did=%zz%4&&did=later", &[], SameAsCore),
        case("malformed override dictionaries", "200; with a valid token, malformed members are skipped one by one and unknown keys ignored",
             b"/checkout", &[("x-user-id", b"u-6"), ("x-abmesh-token", TOKEN),
                             ("x-abmesh-force", b"=, checkout-v2, nope=a, Bad=x, checkout-v2=\"treatment\";p=1, ,,")], SameAsCore),
        case("unit id of exactly 512 bytes", "200; a 512-byte id is used",
             b"/checkout", &[("x-user-id", &id512)], SameAsCore),
        case("unit id of 513 bytes", "200; a 513-byte id counts as absent (no_unit)",
             b"/checkout", &[("x-user-id", &id513)], SameAsCore),
        case("duplicate unit headers", "200; the first `x-user-id` is the unit",
             b"/checkout", &[("x-user-id", b"first-user"), ("x-user-id", b"second-user")], SameAsCore),
        case("unusual header-name case", "200; HTTP/1 names are case-insensitive: `X-USER-ID` is the unit, `X-Experiments` is removed",
             b"/checkout", &[("X-USER-ID", b"u-7"), ("X-Experiments", b"checkout-v2=treatment"), ("X-Exp-Checkout-V2", b"treatment")], SameAsCore),
        case("percent-encoded path", "200; `path_prefix` matches the path as received: `/%63heckout` is not `/checkout` (targeting)",
             b"/%63heckout", &[("x-user-id", b"u-8"), ("x-country", b"US")], SameAsCore),
        case("forged baggage member among 1,000", "200; the client's `abmesh` baggage member is removed, the 1,000 others pass in order",
             b"/checkout", &[("x-user-id", b"u-9"), ("baggage", &thousand_members)], SameAsCore),
        case("2,500-member override dictionary", "200; with a valid token, parsed in O(n log n); the last member for a key wins",
             b"/checkout", &[("x-user-id", b"u-11"), ("x-abmesh-token", TOKEN), ("x-abmesh-force", &long_override)], SameAsCore),
        case("repeated override lines", "200; the lines form one list (RFC 9110): a member of a later line wins",
             b"/checkout", &[("x-user-id", b"u-12"), ("x-abmesh-token", TOKEN), ("x-abmesh-force", b"checkout-v2=treatment, pay-button=green"),
                             ("x-abmesh-force", b"checkout-v2=control")], SameAsCore),
        case("200-byte request id", "200; longer than 128 bytes, the record's `request_id` is null",
             b"/checkout", &[("x-user-id", b"u-13"), ("x-request-id", &long_request_id)], SameAsCore),
        case("non-UTF-8 and malformed baggage", "200; members are split on commas as bytes; only a member keyed `abmesh` is removed",
             b"/checkout", &[("x-user-id", b"u-10"), ("baggage", b"k=\xff\xfe,,=x, abmesh = forged ;p, noequals")], SameAsCore),
    ]
}

/// The request headers as Envoy hands them to abmesh: HTTP/1 names lower-cased.
fn as_received(headers: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect()
}

#[test]
fn hostile_requests_are_ordinary_input_and_the_next_requests_are_assigned() {
    let config = Config::parse(MULTI.as_bytes()).unwrap();
    // Both exposure pipelines on: neither may be broken by hostile bytes.
    let envoy = Envoy::start(Some(&crate::harness::multi_logged()), 1);
    let mut client = Client::new(envoy.ports.listener);
    // Normal requests: 20 units the core assigns to at least one experiment.
    let normal: Vec<String> = (0..)
        .map(|i| format!("after-{i}"))
        .filter(|id| {
            core_plan(&config, b"GET", b"/home", &[("x-user-id", id.as_bytes())])
                .exposure()
                .is_some()
        })
        .take(20)
        .collect();
    for c in cases() {
        let sent: Vec<(&str, &[u8])> = c
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let resp = client.send(c.method, &c.path, &sent);
        match c.expect {
            Expect::SameAsCore => {
                let (_, seen) = upstream(&resp);
                let received = as_received(&c.headers);
                let received: Vec<(&str, &[u8])> = received
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                let want = core_plan(&config, b"GET", &c.path, &received);
                assert_eq!(
                    text(header(&seen, "x-experiments")),
                    want.assignments,
                    "case {:?}",
                    c.name
                );
                // An edge passes on what the core decides for the baggage header.
                let sent_baggage = received.iter().any(|(n, _)| *n == "baggage");
                let want_baggage = match &want.baggage {
                    abmesh::baggage::Rewrite::Set(v) => Some(v.clone()),
                    abmesh::baggage::Rewrite::Remove => None,
                    abmesh::baggage::Rewrite::Unchanged => received
                        .iter()
                        .find(|(n, _)| *n == "baggage")
                        .map(|(_, v)| v.to_vec()),
                };
                if sent_baggage {
                    assert_eq!(
                        header(&seen, "baggage").map(<[u8]>::to_vec),
                        want_baggage,
                        "case {:?}",
                        c.name
                    );
                    assert!(
                        !String::from_utf8_lossy(header(&seen, "baggage").unwrap_or_default())
                            .contains("abmesh"),
                        "case {:?}: a forged member passed",
                        c.name
                    );
                }
                for (name, _) in &seen {
                    assert!(
                        name != "x-abmesh-force" && name != "x-abmesh-token",
                        "case {:?}: {name} leaked",
                        c.name
                    );
                }
            }
            Expect::EnvoyRejects(status) => assert_eq!(resp.status, status, "case {:?}", c.name),
        }
        for id in &normal {
            let (_, seen) = upstream(&client.get(b"/home", &[("x-user-id", id.as_bytes())]));
            let want = core_plan(&config, b"GET", b"/home", &[("x-user-id", id.as_bytes())]);
            assert_eq!(
                text(header(&seen, "x-experiments")),
                want.assignments,
                "after {:?}",
                c.name
            );
        }
    }
    // Every exposure record is valid JSON in both pipelines, whatever the hostile bytes were.
    envoy.wait_for_logs("exposure records", 1, |e| {
        crate::harness::exposure_records(e).len()
    });
    envoy.wait_for_logs("logged exposure records", 1, |e| {
        crate::harness::logged_exposure_records_in(&e.dir.join("envoy.log")).len()
    });
    assert!(
        crate::harness::prometheus_error_count(&envoy) == 0,
        "a host call failed"
    );
}

#[test]
fn the_security_table_lists_every_case() {
    let doc = std::fs::read_to_string(repo().join("SECURITY.md")).unwrap();
    let table = doc
        .split("<!-- hostile-input-table -->")
        .nth(1)
        .expect("SECURITY.md has the hostile-input table");
    let rows: Vec<(String, String)> = table
        .lines()
        .skip_while(|l| !l.starts_with("| case"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].to_string(), cells[1].to_string())
        })
        .collect();
    let cases: Vec<(String, String)> = cases()
        .iter()
        .map(|c| (c.name.to_string(), c.outcome.to_string()))
        .collect();
    assert_eq!(
        rows, cases,
        "SECURITY.md's table and tests/e2e/hostile.rs disagree"
    );
}
