//! Load with exposure accounting: N requests (20,000 in `./build.sh test`, 200,000 in
//! `./build.sh soak` via ABMESH_LOAD_REQUESTS) at 64 connections through Envoy with
//! `--concurrency 2` and several experiments. Every response must be 2xx; every request the
//! core assigns must have exactly one exposure record, in the access log and in the log; no
//! other request may have one; Envoy's memory may grow by less than 10 MB.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abmesh::Config;
use serde_json::Value;

use crate::harness::Envoy;
use crate::harness::{core_plan, header, text, upstream, MULTI};
use crate::http::Client;

const CONNECTIONS: usize = 64;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn request_for(i: usize) -> (&'static [u8], String) {
    let path: &[u8] = [&b"/checkout"[..], b"/home", b"/search", b"/checkout/pay"][i % 4];
    (path, format!("load-user-{i}"))
}

/// Sends requests `next..total` from `CONNECTIONS` threads; returns the request ids the core
/// says must have an exposure, and the number of non-2xx answers.
fn send(
    envoy: &Envoy,
    config: &Arc<Config>,
    from: usize,
    total: usize,
) -> (HashSet<String>, usize, usize) {
    let next = Arc::new(AtomicUsize::new(from));
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (next, config, port) = (next.clone(), config.clone(), envoy.ports.listener);
            std::thread::spawn(move || {
                let mut client = Client::new(port);
                let (mut exposed, mut bad, mut sent) = (HashSet::new(), 0usize, 0usize);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let (path, user) = request_for(i);
                    let resp = client.get(path, &[("x-user-id", user.as_bytes())]);
                    sent += 1;
                    if !(200..300).contains(&resp.status) {
                        bad += 1;
                        continue;
                    }
                    let (_, seen) = upstream(&resp);
                    let want = core_plan(&config, b"GET", path, &[("x-user-id", user.as_bytes())]);
                    assert_eq!(
                        text(header(&seen, "x-experiments")),
                        want.assignments,
                        "{user}"
                    );
                    if want.exposure().is_some() {
                        exposed.insert(text(header(&seen, "x-request-id")).unwrap());
                    }
                }
                (exposed, bad, sent)
            })
        })
        .collect();
    let mut all = HashSet::new();
    let (mut bad, mut sent) = (0, 0);
    for t in threads {
        let (e, b, s) = t.join().unwrap();
        all.extend(e);
        bad += b;
        sent += s;
    }
    (all, bad, sent)
}

#[test]
fn under_load_every_assigned_request_has_exactly_one_exposure_record() {
    let total: usize = std::env::var("ABMESH_LOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let config = Arc::new(Config::parse(MULTI.as_bytes()).unwrap());
    // Both pipelines on: neither may lose a record under load.
    let envoy = Envoy::start(Some(&crate::harness::multi_logged()), 2);
    let pid = envoy.pid();

    // Warm up (V8 code, allocator, connection pools), then measure from here.
    let warm = 2_000;
    let (warm_exposed, warm_bad, _) = send(&envoy, &config, 0, warm);
    assert_eq!(warm_bad, 0);
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_kib(pid);

    let started = Instant::now();
    let (exposed, bad, sent) = send(&envoy, &config, warm, warm + total);
    let elapsed = started.elapsed();
    assert_eq!(sent, total);
    assert_eq!(bad, 0, "non-2xx responses under load");
    std::thread::sleep(Duration::from_millis(1500));
    let rss_after = rss_kib(pid);

    let all_requests = warm + total;
    let expected: HashSet<String> = exposed.union(&warm_exposed).cloned().collect();
    envoy.wait_for_logs("access-log lines", all_requests, |e| {
        e.access_log().lines().count()
    });
    envoy.wait_for_logs("exposure records", expected.len(), |e| {
        e.log().matches("abmesh.exposure ").count()
    });

    let access = envoy.access_log();
    let mut in_access_log = HashSet::new();
    let mut lines = 0;
    for line in access.lines() {
        lines += 1;
        let v: Value = serde_json::from_str(line).unwrap();
        if let Some(record) = v["exposure"].as_str() {
            let record: Value = serde_json::from_str(record).unwrap();
            let rid = record["request_id"].as_str().unwrap().to_string();
            assert_eq!(v["request_id"].as_str(), Some(rid.as_str()));
            assert!(
                in_access_log.insert(rid.clone()),
                "two access-log records for {rid}"
            );
        }
    }
    assert_eq!(lines, all_requests, "one access-log line per request");
    assert_eq!(
        in_access_log, expected,
        "access-log exposure records differ from the assigned requests"
    );

    let log = envoy.log();
    let mut in_log = HashSet::new();
    for line in log
        .lines()
        .filter_map(|l| l.split_once("abmesh.exposure ").map(|(_, j)| j))
    {
        let record: Value = serde_json::from_str(line).unwrap();
        let rid = record["request_id"].as_str().unwrap().to_string();
        assert!(in_log.insert(rid.clone()), "two logged records for {rid}");
    }
    assert_eq!(
        in_log, expected,
        "logged exposure records differ from the assigned requests"
    );

    let growth_mib = (rss_after as f64 - rss_before as f64) / 1024.0;
    let report = format!(
        "load: {total} requests (after {warm} to warm up) at {CONNECTIONS} connections, Envoy --concurrency 2: \
         {:.0} requests/s, 0 non-2xx; of all {all_requests} requests {} were exposed = {} access-log records \
         = {} logged records; \
         RSS {:.1} MiB -> {:.1} MiB ({growth_mib:+.1} MiB)",
        total as f64 / elapsed.as_secs_f64(),
        expected.len(),
        in_access_log.len(),
        in_log.len(),
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
    );
    println!("{report}");
    std::fs::write(
        crate::harness::repo().join("target/load-report.txt"),
        &report,
    )
    .unwrap();
    assert!(growth_mib < 10.0, "{report}");
}
