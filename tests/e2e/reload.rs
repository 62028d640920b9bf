//! Live reload: Envoy reads its listener from a watched file (LDS from a path config source).
//! Adding an experiment must not move anyone in the others; an invalid push must be rejected,
//! with the previous configuration still serving and every error logged with its path.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{header, text, upstream, MULTI};
use crate::harness::{render, scratch_dir, spawn_echo, spawn_envoy, KillOnDrop, Ports};
use crate::http::{get_text, Client};

/// `envoy/envoy.yaml` split into a bootstrap (admin, stats, clusters, LDS from `lds`) and the
/// listener as an LDS resource file.
pub(crate) fn split(yaml: &str, lds: &Path) -> (String, String) {
    let start = yaml.find("  listeners:\n").unwrap();
    let end = yaml.find("\n  clusters:\n").unwrap();
    let listener: Vec<String> = yaml[start + "  listeners:\n".len()..end]
        .lines()
        .map(|l| l.get(2..).unwrap_or("").to_string())
        .collect();
    let mut resource = String::from("resources:\n");
    for (i, l) in listener.iter().enumerate() {
        if i == 0 {
            resource
                .push_str("- \"@type\": type.googleapis.com/envoy.config.listener.v3.Listener\n");
            resource.push_str(&format!("  {}\n", l.trim_start_matches("- ")));
        } else {
            resource.push_str(l);
            resource.push('\n');
        }
    }
    let bootstrap = format!(
        "node: {{id: abmesh-e2e, cluster: abmesh-e2e}}\n{}{}\ndynamic_resources:\n  lds_config:\n    resource_api_version: V3\n    path_config_source:\n      path: {}\n",
        &yaml[..start],
        &yaml[end + 1..],
        lds.display()
    );
    (bootstrap, resource)
}

/// Replaces the LDS file atomically (Envoy watches for the file being moved into place).
fn push(dir: &Path, lds: &Path, resource: &str) {
    let tmp = dir.join("lds.yaml.tmp");
    std::fs::write(&tmp, resource).unwrap();
    std::fs::rename(&tmp, lds).unwrap();
}

pub(crate) fn stat(admin: u16, name: &str) -> u64 {
    let (_, body) =
        get_text(admin, &format!("/stats?filter=^{name}$")).unwrap_or((0, String::new()));
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn wait_stat(admin: u16, name: &str, at_least: u64, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat(admin, name) < at_least {
        assert!(
            Instant::now() < deadline,
            "{name} did not reach {at_least}\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the listener from the LDS file is loaded and active.
pub(crate) fn wait_first_listener(admin: u16, log: &Path) {
    wait_stat(admin, "listener_manager.lds.update_success", 1, log);
    wait_stat(admin, "listener_manager.total_listeners_active", 1, log);
}

/// The assignments dictionary for 1,000 units, as the upstream sees it.
fn assignments(port: u16) -> Vec<Option<String>> {
    let mut client = Client::new(port);
    (0..1000)
        .map(|i| {
            let id = format!("reload-user-{i}");
            let (_, seen) = upstream(&client.get(b"/checkout", &[("x-user-id", id.as_bytes())]));
            text(header(&seen, "x-experiments"))
        })
        .collect()
}

fn without(dict: &Option<String>, key: &str) -> Option<String> {
    let kept: Vec<&str> = dict
        .as_deref()
        .unwrap_or("")
        .split(", ")
        .filter(|m| !m.is_empty() && !m.starts_with(&format!("{key}=")))
        .collect();
    (!kept.is_empty()).then(|| kept.join(", "))
}

#[test]
fn pushing_configurations_to_a_watched_file_keeps_assignments_and_refuses_bad_ones() {
    let dir = scratch_dir("reload");
    let ports = Ports::free();
    let lds = dir.join("lds.yaml");
    let log = dir.join("envoy.log");
    let mut echo = spawn_echo(&ports, 0.0);
    let (bootstrap, first) = split(&render(&ports, &dir.join("access.log"), Some(MULTI)), &lds);
    std::fs::write(&lds, &first).unwrap();
    std::fs::write(dir.join("bootstrap.yaml"), bootstrap).unwrap();
    let mut envoy = spawn_envoy(&dir.join("bootstrap.yaml"), 2, &log);
    let _guard = KillOnDrop {
        envoy: &mut envoy,
        upstream: &mut echo,
        log: &log,
    };
    wait_first_listener(ports.admin, &log);
    std::thread::sleep(Duration::from_millis(300));
    let before = assignments(ports.listener);
    assert!(before.iter().filter(|a| a.is_some()).count() > 500);

    // Add an experiment at the front: every other experiment keeps every unit.
    let added = MULTI.replacen(
        "\"experiments\": [",
        "\"experiments\": [\n    {\"key\": \"added-exp\", \"unit\": \"user\", \"variants\": [{\"name\": \"a\", \"weight\": 1}, {\"name\": \"b\", \"weight\": 1}]},",
        1,
    );
    let (_, second) = split(&render(&ports, &dir.join("access.log"), Some(&added)), &lds);
    push(&dir, &lds, &second);
    wait_stat(ports.admin, "listener_manager.lds.update_success", 2, &log);
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        // The new listener takes over once the old one drains: wait until the new experiment shows.
        let a = assignments(ports.listener);
        if a.iter()
            .filter(|d| d.as_deref().is_some_and(|d| d.contains("added-exp=")))
            .count()
            > 100
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the new configuration never served"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(&without(a, "added-exp"), b, "unit reload-user-{i} moved");
    }

    // An invalid push is rejected; the second configuration keeps serving.
    let invalid = added.replacen(
        "\"key\": \"added-exp\"",
        "\"key\": \"Added Exp\", \"colour\": 1",
        1,
    );
    let (_, third) = split(
        &render(&ports, &dir.join("access.log"), Some(&invalid)),
        &lds,
    );
    let rejected = stat(ports.admin, "listener_manager.lds.update_rejected");
    push(&dir, &lds, &third);
    wait_stat(
        ports.admin,
        "listener_manager.lds.update_rejected",
        rejected + 1,
        &log,
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        assignments(ports.listener),
        after,
        "a rejected push changed assignments"
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    for error in [
        "abmesh: experiments[0]: unknown field \"colour\"",
        "abmesh: experiments[0].key: \"Added Exp\" must start with a lower-case letter",
    ] {
        assert!(
            log_text.contains(error),
            "Envoy's log does not name {error:?}"
        );
    }
}
