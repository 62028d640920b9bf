//! Exposure records and metrics: one record and one access-log line per exposed request, and
//! Prometheus counts equal to the requests sent.

use std::collections::BTreeMap;

use abmesh::plan::Plan;
use abmesh::{Config, RequestView};
use serde_json::Value;

use crate::harness::*;
use crate::http::Client;

#[test]
fn each_exposed_request_yields_one_log_record_and_one_matching_access_log_line() {
    let config = Config::parse(MULTI.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(&multi_logged()), 1);
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
    let logged = |e: &Envoy| logged_exposure_records_in(&e.dir.join("envoy.log"));
    envoy.wait_for_logs("exposure records", exposed, |e| logged(e).len());

    let records = logged(&envoy);
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
fn by_default_the_access_log_carries_every_exposure_and_the_application_log_none() {
    let config = Config::parse(MULTI.as_bytes()).unwrap();
    let envoy = Envoy::start(Some(MULTI), 1);
    let mut client = Client::new(envoy.ports.listener);
    let mut exposed = std::collections::BTreeSet::new();
    let n = 100;
    for i in 0..n {
        let (path, headers) = varied_request(i);
        let headers = borrow(&headers);
        let (_, seen) = upstream(&client.get(&path, &headers));
        if core_plan(&config, b"GET", &path, &headers)
            .exposure()
            .is_some()
        {
            exposed.insert(text(header(&seen, "x-request-id")).unwrap());
        }
    }
    envoy.wait_for_logs("access-log lines", n, |e| e.access_log().lines().count());
    let in_access_log: std::collections::BTreeSet<String> = exposure_records(&envoy)
        .iter()
        .map(|r| r["request_id"].as_str().unwrap().to_string())
        .collect();
    assert!(exposed.len() > 20, "{} exposed", exposed.len());
    assert_eq!(in_access_log, exposed);
    let log = envoy.log();
    assert!(log.contains("abmesh 0.1.0 configured"), "{log}");
    assert!(!log.contains("abmesh.exposure"), "{log}");
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
