//! What ships: an invalid configuration is refused with every error, every example and shipped
//! Envoy configuration is valid, and the demo runs and cleans up.

use crate::harness::*;

#[test]
fn an_invalid_configuration_fails_validation_and_the_log_names_every_error() {
    let bad = r#"{
      "units": {"user": [{"header": "x-user-id"}]},
      "experiments": [
        {"key": "Bad", "variants": [{"name": "a", "weight": -1}]},
        {"key": "t", "traffic_percent": 150, "variants": [{"name": "a", "weight": 1}], "colour": "red"}
      ]
    }"#;
    let dir = scratch_dir("validate");
    let ports = Ports {
        admin: 1,
        listener: 2,
        control: 3,
        treatment: 4,
    };
    let file = dir.join("bad.yaml");
    std::fs::write(&file, render(&ports, &dir.join("access.log"), Some(bad))).unwrap();
    let (ok, out) = validate(&file);
    assert!(
        !ok,
        "envoy --mode validate accepted an invalid configuration:\n{out}"
    );
    for error in [
        "abmesh: experiments[0].key: \"Bad\" must start with a lower-case letter",
        "abmesh: experiments[0].variants[0].weight: must be a non-negative integer, found -1",
        "abmesh: experiments[1]: unknown field \"colour\"",
        "abmesh: experiments[1].traffic_percent: must be a number from 0 to 100, found 150",
        "abmesh: configuration refused (4 errors)",
    ] {
        assert!(
            out.contains(error),
            "Envoy's log does not name {error:?}:\n{out}"
        );
    }
}

/// The `pluginConfig:` of a `WasmPlugin` manifest, written in JSON syntax (YAML's flow style).
fn plugin_config_of(manifest: &str) -> String {
    let lines: Vec<&str> = manifest.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("pluginConfig:"))
        .expect("no pluginConfig");
    let indent = lines[at].len() - lines[at].trim_start().len();
    let first = lines[at]
        .trim_start()
        .trim_start_matches("pluginConfig:")
        .trim()
        .to_string();
    let mut out = vec![first];
    for l in &lines[at + 1..] {
        if !l.trim().is_empty() && l.len() - l.trim_start().len() <= indent {
            break;
        }
        out.push(l.to_string());
    }
    out.join("\n")
}

#[test]
fn every_example_and_shipped_envoy_config_is_valid() {
    let cli = repo().join("dist/abmesh");
    let mut checked = Vec::new();
    let mut stack = vec![repo().join("examples")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            // Grafana's dashboards are JSON too; tests/e2e/dashboards.rs checks them.
            if path.ends_with("grafana") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.to_string_lossy().to_string();
            let mut body = std::fs::read_to_string(&path).unwrap();
            if name.contains(".template.") {
                // A deployment template: check what the CI script renders from it.
                let rendered =
                    std::process::Command::new(repo().join("examples/ci/abmesh-guard.sh"))
                        .arg("render")
                        .arg(repo().join("examples/ramp.json"))
                        .arg(&path)
                        .output()
                        .unwrap();
                assert!(
                    rendered.status.success(),
                    "{name}: {}",
                    String::from_utf8_lossy(&rendered.stderr)
                );
                body = String::from_utf8(rendered.stdout).unwrap();
            }
            let file = if name.ends_with(".json") {
                path.clone()
            } else if body.contains("kind: WasmPlugin") {
                let f = scratch_dir("plugin").join("config.json");
                std::fs::write(&f, plugin_config_of(&body)).unwrap();
                f
            } else {
                continue;
            };
            let out = std::process::Command::new(&cli)
                .arg("check")
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            checked.push(name);
        }
    }
    assert!(
        checked.iter().any(|n| n.contains("istio")),
        "no WasmPlugin checked: {checked:?}"
    );
    // The YAML examples: parse all, and check they agree with each other and with envoy.yaml.
    let manifest = std::fs::read_to_string(repo().join("examples/istio/wasmplugin.yaml")).unwrap();
    let mut py = std::process::Command::new(crate::harness::python())
        .arg(repo().join("tests/e2e/check_yaml.py"))
        .arg(repo())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    py.stdin
        .take()
        .unwrap()
        .write_all(plugin_config_of(&manifest).as_bytes())
        .unwrap();
    let out = py.wait_with_output().unwrap();
    let text = output_text(&out);
    assert!(out.status.success() && text.ends_with("ok\n"), "{text}");
    assert!(
        text.contains("parsed examples/istio/virtualservice.yaml"),
        "{text}"
    );
    assert!(text.contains("parsed envoy/docker-compose.yaml"), "{text}");
    let (ok, out) = validate(&repo().join("envoy/envoy.yaml"));
    assert!(ok, "envoy/envoy.yaml does not validate:\n{out}");
    // The compose file's config names the wasm where the container mounts it.
    let compose = std::fs::read_to_string(repo().join("envoy/envoy-compose.yaml")).unwrap();
    let local = scratch_dir("compose").join("envoy-compose.yaml");
    let wasm = crate::harness::wasm_path();
    std::fs::write(
        &local,
        compose.replace("/etc/envoy/abmesh.wasm", wasm.to_str().unwrap()),
    )
    .unwrap();
    let (ok, out) = validate(&local);
    assert!(ok, "envoy/envoy-compose.yaml does not validate:\n{out}");
    // The demo's own plugin configuration passes the CLI too.
    let f = scratch_dir("demo").join("demo.json");
    std::fs::write(&f, crate::harness::demo_plugin_config()).unwrap();
    assert!(std::process::Command::new(&cli)
        .arg("check")
        .arg(&f)
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn the_demo_prints_its_report_and_stops_everything_it_started() {
    let out = std::process::Command::new("python3")
        .arg(repo().join("envoy/demo.py"))
        .env("ENVOY_BIN", crate::harness::envoy_bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for section in [
        "Sample of users (300 users, 900 requests)",
        "Split per experiment",
        "Spoofing:",
        "Exposure records (",
        "Access log (900 lines, one per request)",
        "abmesh_assignments_total{experiment=\"checkout-v2\",variant=\"control\"}",
        "Done: stopped Envoy and the echo upstream.",
    ] {
        assert!(
            text.contains(section),
            "the demo did not print {section:?}:\n{text}"
        );
    }
    let routed = text.lines().find(|l| l.contains("route header:")).unwrap();
    let nums: Vec<&str> = routed
        .split_whitespace()
        .filter(|w| w.parse::<u32>().is_ok())
        .collect();
    assert_eq!(nums[0], nums[1], "{routed}");
    // Every port the demo opened is closed again.
    let first = text.lines().next().unwrap();
    // The work directory's random name may hold digits too.
    let first = first.split("; work dir").next().unwrap();
    let ports: Vec<u16> = first
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .filter(|&p| p > 1024)
        .collect();
    assert_eq!(ports.len(), 4, "{first}");
    for p in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still open after the demo"
        );
    }
}
