//! OFREP answered by abmesh in a real Envoy: the variants it gives a targeting key are those
//! it puts in `x-experiments` for a request of the same unit; evaluations never reach the
//! upstream; bad requests get the spec's error responses and leave the VM serving; and a real
//! OpenFeature client (`@openfeature/server-sdk` with `@openfeature/ofrep-provider`, from the
//! npm registry, installed by `./build.sh test`) evaluates 1,000 targeting keys the same way,
//! every response validated against the OFREP OpenAPI document.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{demo_plugin_config, python, repo, scratch_dir, Envoy};
use crate::http::Client;

/// The demo configuration with OFREP on (targetingKey → the user unit's first source, the
/// `x-user-id` header) and values for checkout-v2's variants.
fn config() -> String {
    let demo = demo_plugin_config();
    let with = demo
        .replacen(
            r#""exposure": {"filter_state": true},"#,
            r#""exposure": {"filter_state": true}, "ofrep": {"path_prefix": "/ofrep/v1/"},"#,
            1,
        )
        .replacen(
            r#"{"name": "control", "weight": 50}, {"name": "treatment", "weight": 50}"#,
            r#"{"name": "control", "weight": 50, "value": false}, {"name": "treatment", "weight": 50, "value": true}"#,
            1,
        );
    assert_eq!(
        with.matches(r#""ofrep":"#).count(),
        1,
        "the demo configuration changed"
    );
    assert!(with.contains(r#""value": true"#));
    with
}

/// The assignments the mesh gives a request of `id`, from the response's echo.
fn dictionary(client: &mut Client, id: &str) -> BTreeMap<String, String> {
    let r = client.get(b"/product/1", &[("x-user-id", id.as_bytes())]);
    assert_eq!(r.status, 200);
    let echo = String::from_utf8_lossy(r.header("x-experiments").unwrap_or_default()).to_string();
    echo.split(", ")
        .filter_map(|m| m.split_once('='))
        .map(|(k, v)| (k.to_string(), v.split(';').next().unwrap_or(v).to_string()))
        .collect()
}

thread_local! {
    /// The responses of this test's POSTs to the spec's endpoints, for the OpenAPI check.
    static RECORDED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn evaluate(
    client: &mut Client,
    path: &str,
    body: &str,
    headers: &[(&str, &[u8])],
) -> crate::http::Response {
    let mut all = vec![("content-type", &b"application/json"[..])];
    all.extend_from_slice(headers);
    let r = client.post(path.as_bytes(), &all, body.as_bytes());
    if path.contains("/evaluate/flags") {
        let line =
            json!({"path": path, "status": r.status, "body": String::from_utf8_lossy(&r.body)});
        RECORDED.with(|r| r.borrow_mut().push(line.to_string()));
    }
    r
}

/// Runs tests/e2e/ofrep_openapi.py on `lines`; its summary.
fn validate_against_openapi(lines: &[String]) -> String {
    let dir = scratch_dir("ofrep-openapi");
    let file = dir.join("responses.jsonl");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let check = Command::new(python())
        .arg(repo().join("tests/e2e/ofrep_openapi.py"))
        .arg(repo().join("tests/openfeature/ofrep-openapi.yaml"))
        .arg(&file)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        check.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    out
}

#[test]
fn ofrep_evaluations_give_the_meshs_variants_never_reach_the_upstream_and_refuse_bad_requests() {
    let envoy = Envoy::start(Some(&config()), 1);
    let mut client = Client::new(envoy.ports.listener);
    for i in 0..200 {
        let id = format!("ofrep-user-{i}");
        let want = dictionary(&mut client, &id);
        let body = format!(r#"{{"context": {{"targetingKey": "{id}"}}}}"#);
        let single = evaluate(
            &mut client,
            "/ofrep/v1/evaluate/flags/checkout-v2",
            &body,
            &[],
        );
        assert_eq!(single.status, 200);
        assert_eq!(
            single.header("content-type"),
            Some(&b"application/json"[..])
        );
        let got = single.json();
        match want.get("checkout-v2") {
            Some(v) => assert_eq!(
                got,
                json!({"key": "checkout-v2", "value": v == "treatment", "reason": "SPLIT", "variant": v}),
                "{id}"
            ),
            // The holdout: no variant, the application's code default.
            None => assert_eq!(got["metadata"]["abmesh.not_assigned"], "holdout", "{id}"),
        }
        let bulk = evaluate(&mut client, "/ofrep/v1/evaluate/flags", &body, &[]);
        assert_eq!(bulk.status, 200);
        let etag = bulk.header("etag").unwrap().to_vec();
        let flags: BTreeMap<String, String> = bulk.json()["flags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| {
                Some((
                    f["key"].as_str()?.to_string(),
                    f.get("variant")?.as_str()?.to_string(),
                ))
            })
            .collect();
        assert_eq!(flags, want, "{id}");
        let again = evaluate(
            &mut client,
            "/ofrep/v1/evaluate/flags",
            &body,
            &[("if-none-match", &etag)],
        );
        assert_eq!((again.status, again.body.len()), (304, 0), "{id}");
    }
    // Bad requests: the spec's shapes, and the VM keeps serving.
    let cases: [(&str, &str, &str, u16, Value); 5] = [
        (
            "POST",
            "/ofrep/v1/evaluate/flags/checkout-v2",
            "{not json",
            400,
            json!({"key": "checkout-v2", "errorCode": "PARSE_ERROR", "errorDetails": "the request body is not JSON (line 1, column 2)"}),
        ),
        (
            "POST",
            "/ofrep/v1/evaluate/flags/checkout-v2",
            r#"{"context": {}}"#,
            400,
            json!({"key": "checkout-v2", "errorCode": "TARGETING_KEY_MISSING", "errorDetails": "the context has no targetingKey string"}),
        ),
        (
            "POST",
            "/ofrep/v1/evaluate/flags/nope",
            r#"{"context": {"targetingKey": "u"}}"#,
            404,
            json!({"key": "nope", "errorCode": "FLAG_NOT_FOUND", "errorDetails": "no experiment \"nope\" in the mesh's configuration"}),
        ),
        (
            "POST",
            "/ofrep/v1/evaluate/flags",
            "",
            400,
            json!({"errorCode": "PARSE_ERROR", "errorDetails": "the request body is not JSON (line 1, column 0)"}),
        ),
        (
            "POST",
            "/ofrep/v1/elsewhere",
            "{}",
            404,
            json!({"errorDetails": "no OFREP endpoint here: POST evaluate/flags or evaluate/flags/{key}"}),
        ),
    ];
    for (method, path, body, status, want) in cases {
        let r = if body.is_empty() {
            client.send(
                method.as_bytes(),
                path.as_bytes(),
                &[("content-length", b"0")],
            )
        } else {
            evaluate(&mut client, path, body, &[])
        };
        assert_eq!((r.status, r.json()), (status, want), "{method} {path}");
    }
    let get = client.get(b"/ofrep/v1/evaluate/flags", &[]);
    assert_eq!((get.status, get.header("allow")), (405, Some(&b"POST"[..])));
    let huge = format!(
        r#"{{"context": {{"targetingKey": "{}"}}}}"#,
        "x".repeat(100_000)
    );
    let r = evaluate(&mut client, "/ofrep/v1/evaluate/flags", &huge, &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errorCode"], "INVALID_CONTEXT");
    assert_eq!(
        client.get(b"/product/1", &[("x-user-id", b"after")]).status,
        200
    );
    // Evaluations were answered by the filter: the access log shows no upstream for them.
    envoy.wait_for_logs("access-log lines", 1, |e| e.access_log().lines().count());
    let lines: Vec<Value> = envoy
        .access_log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ofrep: Vec<&Value> = lines
        .iter()
        .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with("/ofrep/")))
        .collect();
    assert_eq!(ofrep.len(), 200 * 3 + 7);
    assert!(
        ofrep.iter().all(|l| l["upstream"].is_null()),
        "{:?}",
        ofrep.iter().find(|l| !l["upstream"].is_null())
    );
    assert!(ofrep
        .iter()
        .all(|l| l["exposure"].is_null() && l["assignments"].is_null()));
    assert!(!envoy.log().contains("panicked") && !envoy.log().contains("Function: proxy_on"));
    // 200 × (single, bulk, 304) and the spec endpoints' errors, against the OpenAPI document.
    let recorded = RECORDED.with(|r| r.borrow().clone());
    assert_eq!(recorded.len(), 200 * 3 + 4);
    let summary = validate_against_openapi(&recorded);
    assert!(summary.starts_with("604 responses valid"), "{summary}");
}

/// `tests/e2e/ofrep_client/` with its npm packages, installed once per run.
fn node_client() -> std::path::PathBuf {
    let dir = repo().join("tests/e2e/ofrep_client");
    assert!(
        dir.join("node_modules/@openfeature/ofrep-provider")
            .exists(),
        "run ./build.sh test, which installs tests/e2e/ofrep_client's npm packages"
    );
    dir
}

#[test]
fn an_openfeature_client_with_the_ofrep_provider_gets_the_meshs_variants_for_1000_keys() {
    let envoy = Envoy::start(Some(&config()), 2);
    let mut client = Client::new(envoy.ports.listener);
    let keys: Vec<String> = (0..1000).map(|i| format!("of-user-{i}")).collect();
    let mut want: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for k in &keys {
        want.insert(k.clone(), dictionary(&mut client, k));
    }
    let dir = scratch_dir("ofrep-client");
    let recorded = dir.join("responses.jsonl");
    let out = Command::new("node")
        .arg(node_client().join("evaluate.mjs"))
        .arg(format!("http://127.0.0.1:{}", envoy.ports.listener))
        .env("OFREP_KEYS", serde_json::to_string(&keys).unwrap())
        .env("OFREP_RECORD", &recorded)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: BTreeMap<String, BTreeMap<String, Value>> =
        serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got.len(), 1000);
    for k in &keys {
        let details = &got[k];
        // checkout-v2 through the boolean API (its values), search-ranker through the string
        // API (no values: the variant's name).
        for flag in ["checkout-v2", "search-ranker"] {
            let d = &details[flag];
            match want[k].get(flag) {
                Some(v) => {
                    assert_eq!(d["variant"], json!(v), "{k} {flag}: {d}");
                    assert_eq!(d["reason"], "SPLIT", "{k} {flag}");
                    let value = if flag == "checkout-v2" {
                        json!(v == "treatment")
                    } else {
                        json!(v)
                    };
                    assert_eq!(d["value"], value, "{k} {flag}");
                }
                // Not assigned (the holdout): no value from the mesh, the code default.
                None => {
                    assert_eq!(d["variant"], Value::Null, "{k} {flag}: {d}");
                    let default = if flag == "checkout-v2" {
                        json!(false)
                    } else {
                        json!("code-default")
                    };
                    assert_eq!(d["value"], default, "{k} {flag}: {d}");
                }
            }
        }
    }
    // Every response the client received validates against the OFREP OpenAPI document.
    let lines: Vec<String> = std::fs::read_to_string(&recorded)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let summary = validate_against_openapi(&lines);
    assert!(summary.starts_with("2000 responses valid"), "{summary}");
}

/// The test build that fails the host calls a request names in `x-abmesh-fault`.
fn faults_module() -> std::path::PathBuf {
    let wasm = repo().join("dist/test/abmesh-faults.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: ./build.sh test builds it",
        wasm.display()
    );
    wasm
}

#[test]
fn an_evaluation_whose_host_calls_fail_is_answered_by_the_route_never_hangs_and_is_counted() {
    let envoy = Envoy::start_module(Some(&config()), &faults_module());
    let mut client = Client::new(envoy.ports.listener);
    let body = r#"{"context": {"targetingKey": "u-1"}}"#;
    let errors = |e: &Envoy| {
        crate::harness::metric(&e.prometheus(), "abmesh_errors_total", r#"kind="host""#)
    };
    let before = errors(&envoy);
    // The body cannot be read: a 500 in the spec's general error shape.
    let r = evaluate(
        &mut client,
        "/ofrep/v1/evaluate/flags/checkout-v2",
        body,
        &[("x-abmesh-fault", b"get_body")],
    );
    assert_eq!(
        (r.status, r.json()),
        (
            500,
            json!({"errorDetails": "the request body could not be read"})
        )
    );
    // The answer cannot be sent: the request goes on to the route's own answer, at once.
    let started = std::time::Instant::now();
    let r = evaluate(
        &mut client,
        "/ofrep/v1/evaluate/flags/checkout-v2",
        body,
        &[("x-abmesh-fault", b"send_local_response")],
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json(),
        json!({"errorDetails": "OFREP is not answered here"})
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let r = client.send(
        b"GET",
        b"/ofrep/v1/evaluate/flags",
        &[("x-abmesh-fault", b"send_local_response")],
    );
    assert_eq!(r.status, 404);
    // Counted (published within a second or two), and the VM serves on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while errors(&envoy) < before + 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "abmesh_errors_total{{kind=\"host\"}} {} after {before}",
            errors(&envoy)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let ok = evaluate(
        &mut client,
        "/ofrep/v1/evaluate/flags/checkout-v2",
        body,
        &[],
    );
    assert_eq!(ok.status, 200);
}
