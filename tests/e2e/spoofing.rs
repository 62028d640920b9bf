//! What a client cannot do: choose or spoof its variant, force one without the QA token, or
//! break anything with non-UTF-8 bytes.

use abmesh::Config;
use serde_json::Value;

use crate::harness::*;
use crate::http::Client;

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
    let envoy = Envoy::start(Some(&multi_logged()), 1);
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
    // Records for non-UTF-8 ids are still valid JSON in both pipelines (each is parsed).
    envoy.wait_for_logs("exposure records", 1, |e| exposure_records(e).len());
    let logged = |e: &Envoy| logged_exposure_records_in(&e.dir.join("envoy.log"));
    envoy.wait_for_logs("logged exposure records", 1, |e| logged(e).len());
    for first in [&exposure_records(&envoy)[0], &logged(&envoy)[0]] {
        assert_eq!(
            first["units"]["user"],
            "\u{fffd}\u{fffd}\u{fffd}user\u{fffd}("
        );
    }
}
