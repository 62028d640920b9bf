//! Guardrails end to end: per-variant SLIs in Envoy's stats, and `abmesh guard` against the
//! live `/stats/prometheus`.

use std::process::Command;

use crate::harness::{demo_plugin_config, repo, scratch_dir, Envoy};
use crate::harness::{metric, wait_for_total};
use crate::http::Client;

/// Sends 4,000 requests for distinct users to /checkout; returns the statuses seen.
fn traffic(envoy: &Envoy) -> (usize, usize) {
    let mut client = Client::new(envoy.ports.listener);
    let (mut ok, mut failed) = (0, 0);
    for i in 0..4000 {
        let id = format!("guard-user-{i}");
        match client
            .get(b"/checkout", &[("x-user-id", id.as_bytes())])
            .status
        {
            200 => ok += 1,
            _ => failed += 1,
        }
    }
    (ok, failed)
}

fn guard(envoy: &Envoy) -> (i32, String) {
    crate::harness::wait_until_published(envoy.ports.admin);
    let config = scratch_dir("guard").join("demo.json");
    std::fs::write(&config, demo_plugin_config()).unwrap();
    let url = format!("http://127.0.0.1:{}/stats/prometheus", envoy.ports.admin);
    let out = Command::new(repo().join("dist/abmesh"))
        .args([
            "guard",
            "--config",
            config.to_str().unwrap(),
            "--stats",
            &url,
        ])
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn a_failing_treatment_shows_in_the_series_and_guard_exits_3_naming_it() {
    let envoy = Envoy::start_failing(None, 2, 0.2);
    let (ok, failed) = traffic(&envoy);
    assert!(failed > 200, "{ok} ok, {failed} failed");
    let prom = wait_for_total(&envoy, "abmesh_request_duration_milliseconds_count", 4000);
    let series = |variant: &str, class: &str| {
        metric(
            &prom,
            "abmesh_responses_total",
            &format!("experiment=\"checkout-v2\",variant=\"{variant}\",class=\"{class}\""),
        )
    };
    let (t_ok, t_err, c_ok, c_err) = (
        series("treatment", "2xx"),
        series("treatment", "5xx"),
        series("control", "2xx"),
        series("control", "5xx"),
    );
    assert_eq!(c_err, 0, "{prom}");
    let ratio = t_err as f64 / (t_ok + t_err) as f64;
    assert!(
        (0.19..=0.21).contains(&ratio),
        "treatment 5xx ratio {ratio}: {t_err} of {}",
        t_ok + t_err
    );
    assert_eq!(
        t_err as usize, failed,
        "every failed request is a treatment 5xx"
    );
    assert!(c_ok > 1500 && t_ok > 1200);
    // Buckets are cumulative: non-decreasing in `le`, and `+Inf` equals `_count`.
    let labels = "experiment=\"checkout-v2\",variant=\"treatment\"";
    let les = [
        "1", "2", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
        "+Inf",
    ];
    let buckets: Vec<u64> = les
        .iter()
        .map(|le| {
            metric(
                &prom,
                "abmesh_request_duration_milliseconds_bucket",
                &format!("{labels},le=\"{le}\""),
            )
        })
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let count = metric(&prom, "abmesh_request_duration_milliseconds_count", labels);
    assert_eq!(buckets[13], count);
    assert_eq!(count, t_ok + t_err);

    let (code, out) = guard(&envoy);
    println!("{out}");
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("checkout-v2 [BREACH]"), "{out}");
    assert!(
        out.contains("breach: variant treatment: 5xx ratio"),
        "{out}"
    );
    assert!(out.contains("search-ranker [ok]"), "{out}");
}

#[test]
fn a_healthy_run_passes_guard() {
    let envoy = Envoy::start(None, 2);
    let (ok, failed) = traffic(&envoy);
    assert_eq!((ok, failed), (4000, 0));
    wait_for_total(&envoy, "abmesh_request_duration_milliseconds_count", 4000);
    let (code, out) = guard(&envoy);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("healthy\n"), "{out}");
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = repo().join("examples/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts.yaml"])
        .current_dir(&dir)
        .output();
    let check =
        check.expect("promtool is missing: ./build.sh test installs Debian's prometheus package");
    let text = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() && text.contains("SUCCESS: 8 rules found"),
        "{text}"
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&test.stdout).into_owned() + &String::from_utf8_lossy(&test.stderr);
    assert!(test.status.success() && text.contains("SUCCESS"), "{text}");
}
