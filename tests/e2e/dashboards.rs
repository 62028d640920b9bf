//! The Grafana dashboards and the alert rules against a real Prometheus (Debian's
//! `prometheus`): it scrapes the shipped Envoy while users browse and the treatment upstream
//! fails 30% of its requests, and `abmesh guard --serve` beside it. Every panel's query
//! (examples/grafana/*.json) is evaluated through Prometheus' HTTP API and must return the
//! series the panel shows, with the labels its legend names and the values the traffic
//! implies; the error-ratio alert of examples/prometheus/alerts.yaml goes pending, then firing,
//! with its runbook. The panels' values are printed (examples/grafana/README.md lists them).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{demo_plugin_config, free_port, repo, scratch_dir, Envoy, Prometheus, TOKEN};
use crate::http::Client;

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Users browse until `stop`: a new user now and then, every user coming back, some forced.
fn browse(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut client = Client::new(port);
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let user = format!("user-{}", sent % 400);
            let mut headers: Vec<(&str, &[u8])> = vec![("x-user-id", user.as_bytes())];
            if sent % 50 == 7 {
                headers.push(("x-abmesh-token", TOKEN));
                headers.push(("x-abmesh-force", b"checkout-v2=treatment"));
            }
            let path: &[u8] = if sent % 3 == 0 {
                b"/home"
            } else {
                b"/checkout"
            };
            client.get(path, &headers);
            sent += 1;
            std::thread::sleep(Duration::from_millis(15));
        }
        sent
    })
}

/// A panel's query as Grafana sends it for "All" of `experiments` over the last five minutes
/// (a multi-value variable without allValue becomes a regex of its values, escaped).
fn as_grafana_sends(expr: &str, experiments: &[String]) -> String {
    let escaped: Vec<String> = experiments
        .iter()
        .map(|e| e.replace('-', "\\\\-"))
        .collect();
    expr.replace("$experiment", &format!("({})", escaped.join("|")))
        .replace("$__rate_interval", "30s")
        .replace("$__range", "5m")
}

fn label<'a>(series: &'a Value, name: &str) -> &'a str {
    series["metric"][name].as_str().unwrap_or("")
}

fn value(series: &Value) -> f64 {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The labels a legend names: `{{experiment}} {{variant}}` → experiment, variant.
fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_string()))
        .collect()
}

#[test]
fn every_dashboard_query_returns_what_its_panel_shows_and_the_error_alert_fires() {
    let envoy = Envoy::start_failing(None, 1, 0.3);
    // guard reads the configuration without home-banner, as if it had been removed while the
    // proxies still export its series (Envoy never expires a stat): the stale case.
    let dir = scratch_dir("dashboards");
    let mut config: Value = serde_json::from_str(&demo_plugin_config()).unwrap();
    config["experiments"]
        .as_array_mut()
        .unwrap()
        .retain(|e| e["key"] != "home-banner");
    let config_path = dir.join("guard-config.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let guard_port = free_port();
    let _guard = Guard(
        Command::new(repo().join("dist/abmesh"))
            .args(["guard", "--config", config_path.to_str().unwrap()])
            .args([
                "--stats",
                &format!("http://127.0.0.1:{}/stats/prometheus", envoy.ports.admin),
            ])
            .args(["--serve", &format!("127.0.0.1:{guard_port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The shipped rules, with `for:` shortened so that pending turns firing within the test.
    let rules = std::fs::read_to_string(repo().join("examples/prometheus/alerts.yaml"))
        .unwrap()
        .replace("for: 10m", "for: 5s")
        .replace("for: 15m", "for: 5s");
    let rules_path = dir.join("alerts.yaml");
    std::fs::write(&rules_path, rules).unwrap();
    let prometheus = Prometheus::start(
        &[
            ("envoy", envoy.ports.admin, "/stats/prometheus"),
            ("abmesh-guard", guard_port, "/metrics"),
        ],
        Some(&rules_path),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = browse(envoy.ports.listener, stop.clone());

    // The error-ratio alert: pending first, then firing, with its runbook.
    let started = Instant::now();
    let mut states: Vec<String> = Vec::new();
    let mut firing = None;
    while started.elapsed() < Duration::from_secs(120) && firing.is_none() {
        let (_, body) =
            crate::http::get_text(prometheus.port, "/api/v1/alerts").unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        for a in v["data"]["alerts"].as_array().into_iter().flatten() {
            if a["labels"]["alertname"] == "AbmeshVariantErrorRegression"
                && a["labels"]["experiment"] == "checkout-v2"
            {
                let state = a["state"].as_str().unwrap_or("").to_string();
                if states.last() != Some(&state) {
                    states.push(state.clone());
                }
                if state == "firing" {
                    firing = Some(a.clone());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let firing = firing.unwrap_or_else(|| {
        panic!(
            "AbmeshVariantErrorRegression never fired; states {states:?}\n{}",
            envoy.logs()
        )
    });
    assert_eq!(
        states,
        ["pending", "firing"],
        "the alert goes pending, then firing"
    );
    assert_eq!(firing["labels"]["variant"], "treatment");
    assert_eq!(
        firing["annotations"]["runbook_url"],
        "README.md#runbook-abmeshvarianterrorregression"
    );
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("<a id=\"runbook-abmeshvarianterrorregression\"></a>"),
        "the README has the runbook the alert points at"
    );

    // The experiment variable lists the configuration's running experiments, never a stale one.
    let (_, body) = crate::http::get_text(
        prometheus.port,
        &format!(
            "/api/v1/label/experiment/values?match[]={}",
            crate::harness::url_encode("abmesh_guard_experiment{status=\"running\"}")
        ),
    )
    .unwrap();
    let listed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["data"],
        serde_json::json!(["checkout-v2", "search-ranker"])
    );
    let experiments: Vec<String> = serde_json::from_value(listed["data"].clone()).unwrap();

    // Traffic stops, the last counts reach Prometheus, and every panel is evaluated at one
    // instant, so that panels computing the same figure show the same value.
    stop.store(true, Ordering::Relaxed);
    let sent = traffic.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // Every panel of every dashboard.
    let mut shown: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut report = String::new();
    for board in ["abmesh-oncall", "abmesh-debug", "abmesh-executive"] {
        let text =
            std::fs::read_to_string(repo().join(format!("examples/grafana/{board}.json"))).unwrap();
        let dashboard: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap();
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{board}/{title}"
            );
            for target in panel["targets"].as_array().unwrap() {
                let expr = as_grafana_sends(target["expr"].as_str().unwrap(), &experiments);
                let legend = target["legendFormat"].as_str().unwrap_or("");
                let result = prometheus
                    .query_at(&expr, at)
                    .unwrap_or_else(|e| panic!("{board}/{title}: {e}\n{expr}"));
                for series in &result {
                    for l in legend_labels(legend) {
                        assert!(
                            !label(series, &l).is_empty(),
                            "{board}/{title}: a series without {l}: {series}"
                        );
                    }
                    assert!(value(series).is_finite(), "{board}/{title}: {series}");
                }
                let values: Vec<String> = result
                    .iter()
                    .map(|s| {
                        let name: Vec<&str> = legend_labels(legend)
                            .iter()
                            .map(|l| label(s, l))
                            .collect::<Vec<_>>();
                        format!("{} {:.4}", name.join(" "), value(s))
                            .trim()
                            .to_string()
                    })
                    .collect();
                report += &format!(
                    "| {board} | {title} | {} | {} |\n",
                    legend,
                    if values.is_empty() {
                        "(no series)".to_string()
                    } else {
                        values.join("; ")
                    }
                );
                shown
                    .entry(format!("{board}/{title}"))
                    .or_default()
                    .extend(result);
            }
        }
    }
    println!("panel values after {sent} requests:\n{report}");

    let get = |panel: &str, labels: &[(&str, &str)]| -> Vec<f64> {
        shown[panel]
            .iter()
            .filter(|s| labels.iter().all(|(k, v)| label(s, k) == *v))
            .map(value)
            .collect()
    };
    let one = |panel: &str, labels: &[(&str, &str)]| -> f64 {
        let v = get(panel, labels);
        assert_eq!(v.len(), 1, "{panel} {labels:?}: {v:?}");
        v[0]
    };
    // Every panel shows something, except the errors of a healthy filter.
    for (panel, series) in &shown {
        if panel != "abmesh-debug/Filter errors, by kind" {
            assert!(!series.is_empty(), "{panel} shows nothing");
        }
    }
    assert!(
        shown["abmesh-debug/Filter errors, by kind"].is_empty(),
        "the filter had no error"
    );
    let ckv = ("experiment", "checkout-v2");
    let treatment = one(
        "abmesh-oncall/5xx ratio by variant",
        &[ckv, ("variant", "treatment")],
    );
    assert!(
        (0.15..=0.45).contains(&treatment),
        "treatment 5xx ratio {treatment}, upstream fails 30%"
    );
    assert_eq!(
        one(
            "abmesh-oncall/5xx ratio by variant",
            &[ckv, ("variant", "control")]
        ),
        0.0
    );
    let increase = one(
        "abmesh-oncall/5xx ratio increase over control",
        &[ckv, ("variant", "treatment")],
    );
    assert!(
        (increase - treatment).abs() < 1e-9,
        "{increase} vs {treatment}"
    );
    for q in [
        "abmesh-oncall/Latency p50 by variant",
        "abmesh-oncall/Latency p95 by variant",
    ] {
        let ms = get(q, &[ckv]);
        assert_eq!(ms.len(), 2, "{q}: a latency per variant of checkout-v2");
        assert!(ms.iter().all(|ms| *ms > 0.0), "{q}: {ms:?}");
    }
    // Shares: observed near configured (50/50), each experiment's observed shares sum to 1.
    let observed: f64 = get(
        "abmesh-oncall/Traffic share: observed against configured",
        &[ckv, ("variant", "control")],
    )
    .iter()
    .sum::<f64>();
    let all: f64 = get(
        "abmesh-oncall/Traffic share: observed against configured",
        &[ckv],
    )
    .iter()
    .sum();
    assert!(
        (all - 2.0).abs() < 1e-9,
        "observed and configured shares each sum to 1: {all}"
    );
    // The panel's two queries: control's observed share (near 0.5) and its configured 0.5.
    assert!(
        (0.9..=1.1).contains(&observed),
        "observed + configured share of control: {observed}"
    );
    assert_eq!(
        one("abmesh-oncall/Guard's verdict", &[ckv]),
        0.0,
        "guard breaches the failing treatment"
    );
    assert!(
        one(
            "abmesh-debug/Forced (QA) assignments per second",
            &[ckv, ("variant", "treatment")]
        ) > 0.0
    );
    // search-ranker takes 60% of traffic: the rest is not assigned, reason traffic.
    assert!(
        one(
            "abmesh-debug/Not assigned, by reason",
            &[("experiment", "search-ranker"), ("reason", "traffic")]
        ) > 0.0
    );
    let counted = one("abmesh-debug/Responses counted against assignments", &[ckv]);
    assert!(
        (0.95..=1.05).contains(&counted),
        "responses over assignments {counted}"
    );
    let stale: Vec<&str> = shown["abmesh-debug/Stale series"]
        .iter()
        .map(|s| label(s, "experiment"))
        .collect();
    assert_eq!(
        stale,
        ["home-banner"],
        "the experiment guard's configuration no longer has"
    );
    for (panel, series) in &shown {
        if panel != "abmesh-debug/Stale series" {
            assert!(
                series
                    .iter()
                    .all(|s| label(s, "experiment") != "home-banner"),
                "{panel} shows the stale experiment"
            );
        }
    }
    assert_eq!(
        one(
            "abmesh-executive/Experiments by status",
            &[("status", "running")]
        ),
        2.0
    );
    assert!(get(
        "abmesh-executive/Where each experiment stands",
        &[ckv, ("variant", "treatment")]
    )
    .iter()
    .any(|v| (v - treatment).abs() < 0.15));
}
