//! What a VM trap does under each of Envoy's failure policies, with a test-only build that
//! traps on `x-abmesh-trap` (`dist/test/abmesh-trap.wasm`, feature `trap-on-header`).

use std::time::{Duration, Instant};

use crate::harness::{direct_listener, free_port, repo, scratch_dir, spawn_envoy};
use crate::http::{get_text, Client};

const CONFIG: &str = r#"{"units": {"user": [{"header": "x-user-id"}]},
  "experiments": [{"key": "t", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]}],
  "output": {"response_header": "x-experiments"}}"#;

/// (status, whether abmesh assigned) of a normal request.
fn normal(client: &mut Client, i: usize) -> (u16, bool) {
    let id = format!("policy-user-{i}");
    let r = client.get(b"/", &[("x-user-id", id.as_bytes())]);
    (r.status, r.header("x-experiments").is_some())
}

#[test]
fn a_vm_trap_under_each_failure_policy() {
    let wasm = repo().join("dist/test/abmesh-trap.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: ./build.sh test builds it",
        wasm.display()
    );
    let dir = scratch_dir("failure");
    let admin = free_port();
    let policies: [(&str, Option<&str>); 4] = [
        ("default", None),
        ("fail_closed", Some("FAIL_CLOSED")),
        ("fail_open", Some("FAIL_OPEN")),
        ("fail_reload", Some("FAIL_RELOAD")),
    ];
    let ports: Vec<u16> = policies.iter().map(|_| free_port()).collect();
    let listeners: String = policies
        .iter()
        .zip(&ports)
        .map(|((name, p), port)| direct_listener(name, *port, *p, wasm.to_str().unwrap(), CONFIG))
        .collect();
    let yaml = format!(
        "admin:\n  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}\nstatic_resources:\n  listeners:{listeners}\n"
    );
    std::fs::write(dir.join("envoy.yaml"), yaml).unwrap();
    let log = dir.join("envoy.log");
    let mut envoy = spawn_envoy(&dir.join("envoy.yaml"), 1, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(get_text(admin, "/ready"), Ok((200, _))) {
        assert!(
            Instant::now() < deadline && envoy.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut observed = Vec::new();
    for ((name, _), port) in policies.iter().zip(&ports) {
        let mut client = Client::new(*port);
        let before = normal(&mut client, 0);
        let trap = client
            .get(b"/", &[("x-user-id", b"trapper"), ("x-abmesh-trap", b"1")])
            .status;
        let after: Vec<(u16, bool)> = (1..=3)
            .map(|i| normal(&mut Client::new(*port), i))
            .collect();
        // Two seconds later: a reload policy has had time to back off and replace the VM.
        std::thread::sleep(Duration::from_millis(2000));
        let later: Vec<(u16, bool)> = (4..=6)
            .map(|i| normal(&mut Client::new(*port), i))
            .collect();
        observed.push((name.to_string(), before, trap, after, later));
    }
    let _ = envoy.kill();
    let _ = envoy.wait();
    let table: Vec<String> = observed
        .iter()
        .map(|(n, b, t, a, l)| {
            format!("{n}: before {b:?}, trapping request {t}, right after {a:?}, 2 s later {l:?}")
        })
        .collect();
    println!("{}", table.join("\n"));
    let find = |n: &str| observed.iter().find(|o| o.0 == n).unwrap().clone();
    for (name, before, _, _, _) in &observed {
        assert_eq!(
            *before,
            (200, true),
            "{name}: a normal request before the trap"
        );
    }
    let t = table.join("\n");
    // Envoy's default is FAIL_CLOSED: the trapping request and every later one get 503.
    for n in ["default", "fail_closed"] {
        let (_, _, trap, after, later) = find(n);
        assert_eq!(trap, 503, "{n}\n{t}");
        assert!(after.iter().chain(&later).all(|a| a.0 == 503), "{n}\n{t}");
    }
    // FAIL_OPEN: the request in flight fails, later traffic flows unassigned.
    let (_, _, trap, after, later) = find("fail_open");
    assert_eq!(trap, 503, "{t}");
    assert!(
        after.iter().chain(&later).all(|a| *a == (200, false)),
        "{t}"
    );
    // FAIL_RELOAD: the request in flight fails, then a fresh VM assigns again.
    let (_, _, trap, _, later) = find("fail_reload");
    assert_eq!(trap, 503, "{t}");
    assert!(later.iter().all(|a| *a == (200, true)), "{t}");
}
