//! Every host call abmesh makes can fail without harm: a test-only build
//! (`dist/test/abmesh-faults.wasm`, feature `fault-injection`) makes the calls a request names
//! in `x-abmesh-fault` fail. For each call, in a real Envoy under FAIL_CLOSED (where a crashed VM
//! would answer 503 to everything after): that request and the next 100 are answered 200, the
//! later ones are assigned as before, `abmesh_errors_total{kind="host"}` counts the failure,
//! and the VM never restarts.

use std::time::{Duration, Instant};

use crate::harness::{direct_listener, free_port, repo, scratch_dir, spawn_envoy};
use crate::http::{get_text, Client};

/// Reads every call's path: a minted cookie (add_header), the response echo, the exposure
/// log and filter state, a route header. Only the request that breaks `define_metric` is in
/// `fresh`, so its series are new, and defined, in the publication that fails.
const CONFIG: &str = r#"{"units": {"user": [{"header": "x-user-id"}], "visitor": {"sources": [{"cookie": "abid"}], "mint": {"cookie": "abid"}}},
  "experiments": [{"key": "t", "unit": "user", "route_header": true, "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
                  {"key": "v", "unit": "visitor", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]},
                  {"key": "fresh", "unit": "user", "when": {"headers": {"x-abmesh-fault": {"in": ["define_metric"]}}}, "variants": [{"name": "only", "weight": 1}]}],
  "output": {"response_header": "x-experiments"},
  "exposure": {"log": true, "log_level": "info"}}"#;

const CALLS: [&str; 10] = [
    "log",
    "current_time",
    "get_headers",
    "get_response_status",
    "set_header",
    "remove_header",
    "add_header",
    "set_property",
    "define_metric",
    "increment_metric",
];

fn yaml(admin: u16, port: u16, wasm: &str) -> String {
    format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}\n\
         stats_config:\n  stats_tags:\n  - {{tag_name: kind, regex: '(kind=\\.=(.+?);\\.;)'}}\n\
         static_resources:\n  listeners:{}\n",
        direct_listener("faults", port, Some("FAIL_CLOSED"), wasm, CONFIG)
    )
}

/// abmesh_errors_total{kind="host"} as Envoy shows it now.
fn host_errors_now(admin: u16) -> u64 {
    let (_, text) = get_text(admin, "/stats/prometheus").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("abmesh_errors_total{kind=\"host\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The counter once it exceeds `above`, or after 5 s (counts are published every second; a
/// failed publication is retried at the next).
fn host_errors(admin: u16, above: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = host_errors_now(admin);
        if n > above || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stat(admin: u16, name: &str) -> u64 {
    let (_, text) = get_text(admin, "/stats").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

#[test]
fn every_failing_host_call_is_counted_and_no_request_fails_or_vm_crashes() {
    let wasm = repo().join("dist/test/abmesh-faults.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: ./build.sh test builds it",
        wasm.display()
    );
    let dir = scratch_dir("faults");
    let (admin, port) = (free_port(), free_port());
    std::fs::write(
        dir.join("envoy.yaml"),
        yaml(admin, port, wasm.to_str().unwrap()),
    )
    .unwrap();
    let log = dir.join("envoy.log");
    let mut envoy = spawn_envoy(&dir.join("envoy.yaml"), 1, &log);
    let envoy_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(get_text(admin, "/ready"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline && envoy.try_wait().unwrap().is_none(),
            "{}",
            envoy_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let vms_created = stat(admin, "wasm.envoy.wasm.runtime.v8.created");
    assert!(vms_created > 0, "no V8 VM in the stats");
    let mut client = Client::new(port);
    std::thread::sleep(Duration::from_millis(1300));
    // Counted after the pause: a worker's VM can log its configuration just after /ready.
    let configured = envoy_log().matches("configured:").count();
    let mut errors = host_errors_now(admin);
    let mut n = 0;
    for call in CALLS {
        n += 1;
        // A client-sent x-experiments makes abmesh remove it (remove_header); no abid cookie
        // makes it mint one (add_header on the response).
        let id = format!("fault-user-{n}");
        let faulty = client.get(
            b"/",
            &[
                ("x-user-id", id.as_bytes()),
                ("x-experiments", b"t=b"),
                ("x-abmesh-fault", call.as_bytes()),
            ],
        );
        assert_eq!(
            faulty.status,
            200,
            "{call}: the faulty request\n{}",
            envoy_log()
        );
        for i in 0..100 {
            let id = format!("after-{call}-{i}");
            let r = client.get(b"/", &[("x-user-id", id.as_bytes())]);
            assert_eq!(
                r.status,
                200,
                "{call}: request {i} after the fault\n{}",
                envoy_log()
            );
            if i > 0 {
                assert!(
                    r.header("x-experiments").is_some(),
                    "{call}: request {i} unassigned"
                );
            }
        }
        let now = host_errors(admin, errors);
        assert!(
            now > errors,
            "{call}: abmesh_errors_total{{kind=\"host\"}} stayed at {errors}\n{}",
            envoy_log()
        );
        errors = now;
    }
    assert_eq!(
        envoy_log().matches("configured:").count(),
        configured,
        "a VM was started again\n{}",
        envoy_log()
    );
    assert_eq!(
        stat(admin, "wasm.envoy.wasm.runtime.v8.created"),
        vms_created,
        "a VM was created again"
    );
    assert!(!envoy_log().contains("panicked"), "{}", envoy_log());
    let _ = envoy.kill();
    let _ = envoy.wait();
}
